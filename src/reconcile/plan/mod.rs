//! The planner: `plan(desired, observed) -> Plan`. Pure — no IO, no clock — and shared
//! by the daemon, `obsctl diff` and `obsctl apply`, so what `diff` shows is exactly what
//! the daemon would do.
//!
//! For every desired resource it decides the drift reasons (contract names) and the
//! steps that repair them; for owned objects that are no longer desired it decides
//! removal (containers, networks) or reporting only (volumes: never removed here).
//!
//! This file holds the plan's types and [`plan`]; the per-kind decisions are in
//! `infra.rs` (networks, volumes) and `service.rs`; `tests.rs` is the table of
//! (observed container → drift reasons, steps).

mod infra;
mod service;

use crate::desired::model::service::Dependency;
use crate::desired::model::Kind;
use crate::desired::DesiredState;
use crate::docker::{labels, ContainerInfo, Health, NetworkInfo, RunState, VolumeInfo};
pub use crate::reconcile::render::FieldChange;
use crate::reconcile::render::Rendered;
use crate::secret::HostKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Suffix of the temporary name a replacement container is created under.
pub const NEXT_SUFFIX: &str = "--next";
/// Engine restarts after which a crash-looping container is stopped and held.
pub const CRASH_LOOP_RESTARTS: i64 = 5;
/// Suffix of the name the old container is kept under (stopped) while its replacement
/// passes the health gate; it is started again if the replacement fails.
pub const PREV_SUFFIX: &str = "--prev";

/// Drift reasons (contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Missing,
    Stopped,
    Unhealthy,
    SpecChanged,
    ConfigChanged,
    ImageChanged,
    Orphan,
    NameConflict,
    Failed,
    RolledBack,
    PreflightFailed,
    CrashLoop,
    ImageOutdated,
}

impl Reason {
    pub const ALL: [Reason; 13] = [
        Reason::Missing,
        Reason::Stopped,
        Reason::Unhealthy,
        Reason::SpecChanged,
        Reason::ConfigChanged,
        Reason::ImageChanged,
        Reason::Orphan,
        Reason::NameConflict,
        Reason::Failed,
        Reason::RolledBack,
        Reason::PreflightFailed,
        Reason::CrashLoop,
        Reason::ImageOutdated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Stopped => "stopped",
            Reason::Unhealthy => "unhealthy",
            Reason::SpecChanged => "spec_changed",
            Reason::ConfigChanged => "config_changed",
            Reason::ImageChanged => "image_changed",
            Reason::Orphan => "orphan",
            Reason::NameConflict => "name_conflict",
            Reason::Failed => "failed",
            Reason::RolledBack => "rolled_back",
            Reason::PreflightFailed => "preflight_failed",
            Reason::CrashLoop => "crash_loop",
            Reason::ImageOutdated => "image_outdated",
        }
    }
}

/// What the engine looks like now (read by the caller; the planner only looks).
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Every container on the engine (owned and not).
    pub containers: Vec<ContainerInfo>,
    /// Local image ID per image reference used by the desired state (`None`: absent).
    pub images: BTreeMap<String, Option<String>>,
    pub volumes: Vec<VolumeInfo>,
    pub networks: Vec<NetworkInfo>,
    /// Config hashes applied in place (restart/signal) after creation, per container ID;
    /// labels are immutable, so these live in the state directory.
    pub applied_config: BTreeMap<String, Vec<String>>,
    /// Rolled-back replacements per service (from the state directory).
    pub rollbacks: BTreeMap<String, crate::state::HeldSpec>,
    /// Failed preflight checks per service (from the state directory).
    pub preflight_failures: BTreeMap<String, crate::state::HeldSpec>,
    /// Services held after a crash loop (from the state directory).
    pub crash_loops: BTreeMap<String, crate::state::HeldSpec>,
    /// Engine restart count of each crash-looping (`restarting`) container, by ID.
    pub restart_counts: BTreeMap<String, i64>,
    /// The latest registry check per image reference (`update.image`; from the state
    /// directory, or the daemon's checker).
    pub image_checks: BTreeMap<String, crate::state::ImageCheck>,
    /// Containers a backup of this process has paused or stopped for a read, by ID
    /// ([`crate::jobs::quiesced`]): not `stopped` drift while held.
    pub quiesced: std::collections::BTreeSet<String>,
}

/// One step of a service's repair, executed in order.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Remove a leftover temporary container from an interrupted replace.
    CleanupTemp {
        id: String,
    },
    /// Rename a finished temporary container into place and start it.
    Adopt {
        id: String,
    },
    /// Remove extra owned containers for the same service.
    RemoveDuplicate {
        id: String,
    },
    Pull {
        image: String,
    },
    Create,
    /// Health-gated replace: create under a temporary name, stop the old one and keep it
    /// as `--prev`, rename the new one into place, start it, watch it; then remove the
    /// old one, or roll back to it.
    Replace {
        old_id: String,
    },
    /// Resume an interrupted replace: (start and) watch the new container `id`, then
    /// remove `prev_id` or roll back to it.
    Verify {
        id: String,
        prev_id: String,
    },
    /// Put a kept old container back in place (its replacement is gone): rename, start.
    Restore {
        prev_id: String,
    },
    /// Run the service's `configCheck` in a throwaway container of the new spec; on
    /// failure nothing after it runs.
    Preflight,
    /// Stop a crash-looping container and hold it (`crash_loop`) until the spec changes
    /// or an operator retries.
    Hold {
        id: String,
    },
    Start {
        id: String,
    },
    /// Unpause a container left paused (e.g. by a backup's quiesce interrupted by a crash).
    Unpause {
        id: String,
    },
    Restart {
        id: String,
    },
    Signal {
        id: String,
        signal: String,
    },
    /// Ask the process to reload (exec or HTTP); on failure the container is restarted.
    Reload {
        id: String,
        how: Reload,
    },
    /// Record config hashes as applied (after restart/signal/none).
    RecordConfig {
        id: String,
        hashes: Vec<String>,
    },
}

impl Step {
    /// True for steps that change the engine.
    pub fn is_write(&self) -> bool {
        !matches!(self, Step::RecordConfig { .. })
    }

    pub fn action_name(&self) -> &'static str {
        match self {
            Step::CleanupTemp { .. } => "cleanup",
            Step::Adopt { .. } => "adopt",
            Step::RemoveDuplicate { .. } => "remove",
            Step::Pull { .. } => "pull",
            Step::Create => "create",
            Step::Replace { .. } => "recreate",
            Step::Verify { .. } => "verify",
            Step::Restore { .. } => "restore",
            Step::Preflight => "preflight",
            Step::Hold { .. } => "hold",
            Step::Start { .. } => "start",
            Step::Unpause { .. } => "unpause",
            Step::Restart { .. } => "restart",
            Step::Signal { .. } => "signal",
            Step::Reload { .. } => "reload",
            Step::RecordConfig { .. } => "record",
        }
    }
}

/// How a process is asked to reload its config.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reload {
    /// A command run inside the container (exit 0 = reloaded).
    Exec(Vec<String>),
    /// An HTTP request from the host to the container's address (2xx = reloaded).
    /// `url` is `None` when the container had no address at planning time.
    Http { method: String, url: Option<String> },
}

/// The plan for one service.
#[derive(Debug, Clone, Serialize)]
pub struct ServicePlan {
    pub service: String,
    pub steps: Vec<Step>,
    #[serde(skip)]
    pub rendered: Option<Rendered>,
    /// Dependencies the executor must see satisfied before running `steps`.
    pub depends_on: Vec<Dependency>,
}

/// Cluster-level actions.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum InfraAction {
    CreateNetwork {
        name: String,
        docker_name: String,
    },
    CreateVolume {
        name: String,
        docker_name: String,
    },
    RemoveOrphanContainer {
        service: String,
        id: String,
        container: String,
    },
    RemoveNetwork {
        docker_name: String,
    },
}

/// Status of one resource, as `obsctl status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceStatus {
    pub kind: Kind,
    pub name: String,
    pub in_sync: bool,
    pub drift: Vec<Reason>,
    pub desired_image: Option<String>,
    pub observed_image: Option<String>,
    pub state: Option<RunState>,
    pub health: Option<Health>,
    pub container: Option<String>,
    /// Why it is failing or waiting, in one line.
    pub message: Option<String>,
    /// Field-level differences, secrets masked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
    /// With `rolled_back`: the last log lines of the container that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    /// Networks and volumes to create first.
    pub infra: Vec<InfraAction>,
    /// Services with steps (only those that need something).
    pub services: Vec<ServicePlan>,
    /// Removals of no-longer-desired owned objects (after services).
    pub cleanup: Vec<InfraAction>,
    pub resources: Vec<ResourceStatus>,
    /// Services whose recorded rollback is for a spec they no longer have: forgotten, so
    /// the spec that failed is tried again if it ever comes back.
    #[serde(skip)]
    pub stale_rollbacks: Vec<String>,
    /// The same for failed preflight checks.
    #[serde(skip)]
    pub stale_preflight: Vec<String>,
    /// The same for crash-loop holds.
    #[serde(skip)]
    pub stale_crash_loops: Vec<String>,
}

impl Plan {
    pub fn is_noop(&self) -> bool {
        self.infra.is_empty()
            && self.cleanup.is_empty()
            && self.services.iter().all(|s| s.steps.is_empty())
    }

    pub fn in_sync(&self) -> bool {
        self.is_noop() && self.resources.iter().all(|r| r.in_sync)
    }
}

/// Computes the plan: infrastructure first, then every desired service, then what is
/// owned but no longer desired.
pub fn plan(desired: &DesiredState, observed: &Observed, key: &HostKey) -> Plan {
    let mut p = Plan::default();
    infra::networks(desired, observed, &mut p);
    infra::volumes(desired, observed, &mut p);
    let by_service = owned_services(desired.project(), observed);
    for name in desired.services.keys() {
        let (status, steps, stale) =
            service::plan_service(desired, observed, key, name, &by_service);
        p.resources.push(status);
        if stale.rollback {
            p.stale_rollbacks.push(name.clone());
        }
        if stale.preflight {
            p.stale_preflight.push(name.clone());
        }
        if stale.crash_loop {
            p.stale_crash_loops.push(name.clone());
        }
        if let Some(sp) = steps {
            p.services.push(sp);
        }
    }
    service::orphans(desired, &by_service, &mut p);
    p
}

/// Owned service containers, by the service name in their label.
fn owned_services<'o>(
    project: &str,
    observed: &'o Observed,
) -> BTreeMap<&'o str, Vec<&'o ContainerInfo>> {
    let mut m: BTreeMap<&str, Vec<&ContainerInfo>> = BTreeMap::new();
    for c in observed
        .containers
        .iter()
        .filter(|c| labels::owned(&c.labels, project))
    {
        if c.label(labels::KIND) == Some("Service") {
            if let Some(n) = c.label(labels::NAME) {
                m.entry(n).or_default().push(c);
            }
        }
    }
    m
}

/// A fresh status: not yet in sync, no drift found yet.
fn status(kind: Kind, name: &str) -> ResourceStatus {
    ResourceStatus {
        kind,
        name: name.into(),
        in_sync: false,
        drift: Vec::new(),
        desired_image: None,
        observed_image: None,
        state: None,
        health: None,
        container: None,
        message: None,
        changes: Vec::new(),
        log_tail: None,
    }
}

/// Drift sorted and deduplicated; in sync exactly when there is none.
fn finish(mut st: ResourceStatus) -> ResourceStatus {
    st.drift.sort();
    st.drift.dedup();
    st.in_sync = st.drift.is_empty();
    st
}

fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests;
