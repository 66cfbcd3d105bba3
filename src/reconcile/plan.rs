//! The planner: `plan(desired, observed) -> Plan`. Pure — no IO, no clock — and shared
//! by the daemon, `obsctl diff` and `obsctl apply`, so what `diff` shows is exactly what
//! the daemon would do.
//!
//! For every desired resource it decides the drift reasons (contract names) and the
//! steps that repair them; for owned objects that are no longer desired it decides
//! removal (containers, networks) or reporting only (volumes: never removed here).

use crate::desired::model::service::{DependencyCondition, OnChange, PullPolicy, RestartPolicy};
use crate::desired::DesiredState;
use crate::docker::{labels, ContainerInfo, Health, NetworkInfo, RunState, VolumeInfo};
use crate::reconcile::render::{render_service, Rendered};
use crate::secret::HostKey;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Suffix of the temporary name a replacement container is created under.
pub const NEXT_SUFFIX: &str = "--next";

/// Drift reasons (contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
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
    pub depends_on: Vec<(String, DependencyCondition)>,
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
#[derive(Debug, Clone, Serialize)]
pub struct ResourceStatus {
    pub kind: String,
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
    /// Field-level differences (path, applied, desired), secrets masked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<(String, String, String)>,
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

/// True for objects carrying this stack's ownership label.
fn owned(object_labels: &BTreeMap<String, String>, project: &str) -> bool {
    object_labels.get(labels::STACK).map(String::as_str) == Some(project)
}

fn owned_by(c: &ContainerInfo, project: &str) -> bool {
    owned(&c.labels, project)
}

/// Applied config hashes of a container: the in-place record wins over the label.
fn applied_config(c: &ContainerInfo, obs: &Observed) -> Vec<String> {
    if let Some(h) = obs.applied_config.get(&c.id) {
        return h.clone();
    }
    match c.label(labels::CONFIG_HASH) {
        Some("") | None => Vec::new(),
        Some(s) => s.split(',').map(str::to_string).collect(),
    }
}

/// Computes the plan.
pub fn plan(desired: &DesiredState, observed: &Observed, key: &HostKey) -> Plan {
    let project = desired.project();
    let mut p = Plan::default();

    // Networks.
    let mut owned_nets: BTreeSet<&str> = observed
        .networks
        .iter()
        .filter(|n| owned(&n.labels, project))
        .map(|n| n.name.as_str())
        .collect();
    for name in desired.networks.keys() {
        let dn = desired.network_docker_name(name);
        let exists = observed.networks.iter().any(|n| n.name == dn);
        owned_nets.remove(dn.as_str());
        let mut st = status("Network", name);
        if !exists {
            st.drift.push(Reason::Missing);
            p.infra.push(InfraAction::CreateNetwork {
                name: name.clone(),
                docker_name: dn,
            });
        }
        st.in_sync = st.drift.is_empty();
        p.resources.push(st);
    }
    for n in owned_nets {
        let mut st = status("Network", n);
        st.drift.push(Reason::Orphan);
        if desired.stack.spec.prune.networks {
            p.cleanup.push(InfraAction::RemoveNetwork {
                docker_name: n.to_string(),
            });
        }
        p.resources.push(st);
    }

    // Volumes: created when missing, never removed.
    let mut owned_vols: BTreeSet<&str> = observed
        .volumes
        .iter()
        .filter(|v| owned(&v.labels, project))
        .map(|v| v.name.as_str())
        .collect();
    for name in desired.volumes.keys() {
        let dn = desired.volume_docker_name(name);
        owned_vols.remove(dn.as_str());
        let mut st = status("Volume", name);
        if !observed.volumes.iter().any(|v| v.name == dn) {
            st.drift.push(Reason::Missing);
            p.infra.push(InfraAction::CreateVolume {
                name: name.clone(),
                docker_name: dn,
            });
        }
        st.in_sync = st.drift.is_empty();
        p.resources.push(st);
    }
    for v in owned_vols {
        let mut st = status("Volume", v);
        st.drift.push(Reason::Orphan);
        st.message = Some(format!(
            "no longer desired; kept with its data (delete only with `obsctl volume rm {v} --yes-delete-data`)"
        ));
        p.resources.push(st);
    }

    // Services.
    let by_service: BTreeMap<&str, Vec<&ContainerInfo>> = {
        let mut m: BTreeMap<&str, Vec<&ContainerInfo>> = BTreeMap::new();
        for c in observed.containers.iter().filter(|c| owned_by(c, project)) {
            if c.label(labels::KIND) == Some("Service") {
                if let Some(n) = c.label(labels::NAME) {
                    m.entry(n).or_default().push(c);
                }
            }
        }
        m
    };
    for name in desired.services.keys() {
        let svc = &desired.services[name].spec;
        let cname = desired.container_name(name);
        let temp_name = format!("{cname}{NEXT_SUFFIX}");
        let mut st = status("Service", name);
        st.desired_image = Some(svc.image.clone());
        let mut sp = ServicePlan {
            service: name.clone(),
            steps: Vec::new(),
            rendered: None,
            depends_on: svc
                .depends_on
                .iter()
                .map(|d| (d.service.clone(), d.condition))
                .collect(),
        };

        // An unowned container holding our name: report, never touch.
        if let Some(c) = observed
            .containers
            .iter()
            .find(|c| c.name == cname && !owned_by(c, project))
        {
            st.drift.push(Reason::NameConflict);
            st.container = Some(c.id[..c.id.len().min(12)].to_string());
            st.message = Some(format!(
                "container `{cname}` exists but is not managed by obsd (no `{}={project}` label); rename or remove it by hand",
                labels::STACK
            ));
            p.resources.push(st);
            continue;
        }

        let rendered = match render_service(desired, name, key) {
            Ok(r) => r,
            Err(e) => {
                st.drift.push(Reason::Failed);
                st.message = Some(e.to_string());
                p.resources.push(st);
                continue;
            }
        };

        let mine: Vec<&ContainerInfo> = by_service.get(name.as_str()).cloned().unwrap_or_default();
        let current = mine.iter().find(|c| c.name == cname).copied();
        let temp = mine.iter().find(|c| c.name == temp_name).copied();
        for extra in mine
            .iter()
            .filter(|c| c.name != cname && c.name != temp_name)
        {
            sp.steps.push(Step::RemoveDuplicate {
                id: extra.id.clone(),
            });
        }

        let want_image_id = observed.images.get(&svc.image).cloned().flatten();
        let needs_pull = want_image_id.is_none();
        if needs_pull && svc.pull_policy == PullPolicy::Never {
            st.drift.push(Reason::Failed);
            st.message = Some(format!(
                "image {} is not present and pullPolicy is Never",
                svc.image
            ));
        }

        match current {
            None => {
                st.drift.push(Reason::Missing);
                let adoptable = temp.filter(|t| {
                    t.label(labels::SPEC_HASH) == Some(rendered.spec_hash.as_str())
                        && applied_config(t, observed) == rendered.config_hashes
                });
                if let Some(t) = adoptable {
                    sp.steps.push(Step::Adopt { id: t.id.clone() });
                } else {
                    if let Some(t) = temp {
                        sp.steps.push(Step::CleanupTemp { id: t.id.clone() });
                    }
                    if !st.drift.contains(&Reason::Failed) {
                        if needs_pull {
                            sp.steps.push(Step::Pull {
                                image: svc.image.clone(),
                            });
                        }
                        sp.steps.push(Step::Create);
                    }
                }
            }
            Some(c) => {
                if let Some(t) = temp {
                    sp.steps.push(Step::CleanupTemp { id: t.id.clone() });
                }
                st.container = Some(c.id[..c.id.len().min(12)].to_string());
                st.observed_image = Some(c.image.clone());
                st.state = Some(c.state);
                st.health = c.health;
                let spec_changed = c.label(labels::SPEC_HASH) != Some(rendered.spec_hash.as_str());
                let image_changed = !spec_changed
                    && want_image_id
                        .as_ref()
                        .is_some_and(|want| *want != c.image_id);
                if spec_changed {
                    st.drift.push(Reason::SpecChanged);
                    if let Some(old) = c
                        .label(labels::APPLIED)
                        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                    {
                        st.changes = crate::reconcile::render::diff_fields(&old, &rendered.masked);
                    }
                }
                if image_changed {
                    st.drift.push(Reason::ImageChanged);
                    st.message = Some(format!(
                        "{} now resolves to {}, container runs {}",
                        svc.image,
                        short_id(want_image_id.as_deref().unwrap_or("")),
                        short_id(&c.image_id)
                    ));
                }
                let applied = applied_config(c, observed);
                let mut config_step: Option<Step> = None;
                let mut config_recreate = false;
                if applied != rendered.config_hashes {
                    st.drift.push(Reason::ConfigChanged);
                    let mut restart = false;
                    let mut signals: Vec<String> = Vec::new();
                    for (i, h) in rendered.config_hashes.iter().enumerate() {
                        if applied.get(i) == Some(h)
                            && applied.len() == rendered.config_hashes.len()
                        {
                            continue;
                        }
                        match &rendered.on_change[i] {
                            OnChange::Recreate => config_recreate = true,
                            OnChange::Restart => restart = true,
                            OnChange::Signal(s) => signals.push(s.clone()),
                            OnChange::None => {}
                        }
                    }
                    // A changed number of config files changes the mounts: spec_changed covers it.
                    if applied.len() != rendered.config_hashes.len() {
                        config_recreate = true;
                    }
                    if !config_recreate {
                        config_step = Some(if restart {
                            Step::Restart { id: c.id.clone() }
                        } else if let Some(sig) = signals.first() {
                            Step::Signal {
                                id: c.id.clone(),
                                signal: sig.clone(),
                            }
                        } else {
                            Step::RecordConfig {
                                id: c.id.clone(),
                                hashes: rendered.config_hashes.clone(),
                            }
                        });
                    }
                }
                let running = c.state == RunState::Running;
                let replace = spec_changed || image_changed || config_recreate;
                if c.state == RunState::Restarting {
                    st.drift.push(Reason::Failed);
                    st.message = Some(format!("container is crash-looping: {}", c.status));
                }
                // Exited containers are restarted only when their restart policy says
                // they should keep running: `restart: no` and `on-failure` are one-shot
                // or failure-only, and Docker already restarts on failure itself. A
                // container that never started (crash between create and start) is
                // started whatever the policy.
                let keep_running = matches!(
                    svc.restart,
                    RestartPolicy::Always | RestartPolicy::UnlessStopped
                ) || c.state == RunState::Created;
                let stopped = !running
                    && c.state != RunState::Restarting
                    && c.state != RunState::Removing
                    && keep_running;
                if stopped {
                    st.drift.push(Reason::Stopped);
                }
                if c.health == Some(Health::Unhealthy) {
                    st.drift.push(Reason::Unhealthy);
                }
                if st.drift.contains(&Reason::Failed)
                    && needs_pull
                    && svc.pull_policy == PullPolicy::Never
                {
                    // Nothing can be done until the image exists.
                } else if replace {
                    if needs_pull {
                        sp.steps.push(Step::Pull {
                            image: svc.image.clone(),
                        });
                    }
                    sp.steps.push(Step::Replace {
                        old_id: c.id.clone(),
                    });
                } else {
                    if let Some(step) = config_step {
                        let restarts = matches!(step, Step::Restart { .. });
                        sp.steps.push(step);
                        if !matches!(sp.steps.last(), Some(Step::RecordConfig { .. })) {
                            sp.steps.push(Step::RecordConfig {
                                id: c.id.clone(),
                                hashes: rendered.config_hashes.clone(),
                            });
                        }
                        if restarts {
                            // A restart also starts a stopped container.
                            p.resources.push(finish(st));
                            sp.rendered = Some(rendered);
                            p.services.push(sp);
                            continue;
                        }
                    }
                    if stopped {
                        sp.steps.push(Step::Start { id: c.id.clone() });
                    } else if c.health == Some(Health::Unhealthy) {
                        sp.steps.push(Step::Restart { id: c.id.clone() });
                    }
                }
            }
        }
        sp.rendered = Some(rendered);
        p.resources.push(finish(st));
        if !sp.steps.is_empty() {
            p.services.push(sp);
        }
    }

    // Owned containers of services that are no longer desired.
    for (svc, cs) in &by_service {
        if desired.services.contains_key(*svc) {
            continue;
        }
        let mut st = status("Service", svc);
        st.drift.push(Reason::Orphan);
        for c in cs {
            st.container = Some(c.id[..c.id.len().min(12)].to_string());
            if desired.stack.spec.prune.containers {
                p.cleanup.push(InfraAction::RemoveOrphanContainer {
                    service: svc.to_string(),
                    id: c.id.clone(),
                    container: c.name.clone(),
                });
            }
        }
        p.resources.push(st);
    }
    p
}

fn status(kind: &str, name: &str) -> ResourceStatus {
    ResourceStatus {
        kind: kind.into(),
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
