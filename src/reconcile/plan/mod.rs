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
}

impl Reason {
    pub const ALL: [Reason; 9] = [
        Reason::Missing,
        Reason::Stopped,
        Reason::Unhealthy,
        Reason::SpecChanged,
        Reason::ConfigChanged,
        Reason::ImageChanged,
        Reason::Orphan,
        Reason::NameConflict,
        Reason::Failed,
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
    /// Safe replace: create under a temporary name, stop+remove old, rename, start.
    Replace {
        old_id: String,
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
            Step::Start { .. } => "start",
            Step::Unpause { .. } => "unpause",
            Step::Restart { .. } => "restart",
            Step::Signal { .. } => "signal",
            Step::RecordConfig { .. } => "record",
        }
    }
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
        let (status, steps) = service::plan_service(desired, observed, key, name, &by_service);
        p.resources.push(status);
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
