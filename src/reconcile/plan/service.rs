//! One Service: what its container looks like against what it should be (drift), and
//! the steps that repair it. Owned containers of services no longer desired are
//! orphans.
//!
//! The decision is made in three parts, each a function: who holds the name
//! ([`plan_service`]: a name conflict, duplicates, a leftover `--next`), the container
//! is missing ([`missing`]: adopt a finished replacement or create), or it exists
//! ([`present`]: spec, image and config drift, then run state and health).

use super::{finish, short_id, status, InfraAction, Observed, Plan, Reason, ResourceStatus};
use super::{Reload, ServicePlan, Step, CRASH_LOOP_RESTARTS, NEXT_SUFFIX, PREV_SUFFIX};
use crate::desired::model::service::{OnChange, PullPolicy, RestartPolicy, ServiceSpec};
use crate::desired::model::Kind;
use crate::desired::DesiredState;
use crate::docker::{labels, ContainerInfo, Health, RunState};
use crate::reconcile::render::{diff_fields, render_service, Rendered};
use crate::secret::HostKey;
use std::collections::BTreeMap;

/// Held records (rollback, failed preflight) that are for another spec than the one the
/// service has now.
#[derive(Default)]
pub(super) struct Stale {
    pub rollback: bool,
    pub preflight: bool,
    pub crash_loop: bool,
}

/// The service's status, its plan when it has steps, and which of its held records are
/// stale.
pub(super) fn plan_service(
    desired: &DesiredState,
    observed: &Observed,
    key: &HostKey,
    name: &str,
    by_service: &BTreeMap<&str, Vec<&ContainerInfo>>,
) -> (ResourceStatus, Option<ServicePlan>, Stale) {
    let svc = &desired.services[name].spec;
    let project = desired.project();
    let cname = desired.container_name(name);
    let temp_name = format!("{cname}{NEXT_SUFFIX}");
    let mut st = status(Kind::Service, name);
    st.desired_image = Some(svc.image.clone());

    // An unowned container holding our name: report, never touch.
    if let Some(c) = observed
        .containers
        .iter()
        .find(|c| c.name == cname && !labels::owned(&c.labels, project))
    {
        st.drift.push(Reason::NameConflict);
        st.container = Some(short_id(&c.id).to_string());
        st.message = Some(format!(
            "container `{cname}` exists but is not managed by obsd (no `{}={project}` label); rename or remove it by hand",
            labels::STACK
        ));
        return (st, None, Stale::default());
    }

    let rendered = match render_service(desired, name, key) {
        Ok(r) => r,
        Err(e) => {
            st.drift.push(Reason::Failed);
            st.message = Some(e.to_string());
            return (st, None, Stale::default());
        }
    };

    let mine: &[&ContainerInfo] = by_service.get(name).map(Vec::as_slice).unwrap_or(&[]);
    let current = mine.iter().find(|c| c.name == cname).copied();
    let temp = mine.iter().find(|c| c.name == temp_name).copied();
    let prev_name = format!("{cname}{PREV_SUFFIX}");
    let prev = mine.iter().find(|c| c.name == prev_name).copied();
    let stale = Stale {
        rollback: observed
            .rollbacks
            .get(name)
            .is_some_and(|rb| !is_for(rb, &rendered)),
        preflight: observed
            .preflight_failures
            .get(name)
            .is_some_and(|rb| !is_for(rb, &rendered)),
        crash_loop: observed
            .crash_loops
            .get(name)
            .is_some_and(|rb| !is_for(rb, &rendered)),
    };
    let mut steps: Vec<Step> = mine
        .iter()
        .filter(|c| c.name != cname && c.name != temp_name && c.name != prev_name)
        .map(|extra| Step::RemoveDuplicate {
            id: extra.id.clone(),
        })
        .collect();

    let image = ImageState::of(svc, observed);
    if image.unobtainable {
        st.drift.push(Reason::Failed);
        st.message = Some(format!(
            "image {} is not present and pullPolicy is Never",
            svc.image
        ));
    }

    match (current, prev) {
        (_, Some(p)) => interrupted(&mut st, &mut steps, current, temp, p, &rendered, observed),
        (None, None) => missing(&mut st, &mut steps, temp, &rendered, observed, svc, &image),
        (Some(c), None) => {
            if let Some(t) = temp {
                steps.push(Step::CleanupTemp { id: t.id.clone() });
            }
            present(&mut st, &mut steps, c, &rendered, observed, svc, &image);
        }
    }
    if current.is_some_and(|c| observed.quiesced.contains(&c.id)) && !steps.is_empty() {
        // A backup of this process is reading the container's volume with the container
        // paused or stopped: no replace, restart or reload under its feet. The drift
        // stays visible; the pass its unpause (or start) wakes does the work.
        steps.clear();
        st.message.get_or_insert_with(|| {
            "a backup is reading its volume (quiesced): changes wait until the read ends"
                .to_string()
        });
    }
    let sp = (!steps.is_empty()).then(|| ServicePlan {
        service: name.to_string(),
        steps,
        depends_on: svc.depends_on.clone(),
        rendered: Some(rendered),
    });
    (finish(st), sp, stale)
}

/// `"<what>: <reason>; last log line: <line>"`.
fn held_message(what: &str, h: &crate::state::HeldSpec) -> String {
    match h.log_tail.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(l) => format!("{what}: {}; last log line: {}", h.reason, l.trim()),
        None => format!("{what}: {}", h.reason),
    }
}

/// Whether a recorded rollback is for exactly this rendered spec.
fn is_for(rb: &crate::state::HeldSpec, rendered: &Rendered) -> bool {
    rb.spec_hash == rendered.spec_hash && rb.config_hashes == rendered.config_hashes
}

/// A `--prev` container exists: a replace was interrupted after the old container was
/// put aside. With the new container in place (or a complete `--next` to adopt), the
/// health gate is resumed; without one, the old container is put back.
fn interrupted(
    st: &mut ResourceStatus,
    steps: &mut Vec<Step>,
    current: Option<&ContainerInfo>,
    temp: Option<&ContainerInfo>,
    prev: &ContainerInfo,
    rendered: &Rendered,
    observed: &Observed,
) {
    let prev_id = prev.id.clone();
    st.drift.push(Reason::SpecChanged);
    if let Some(c) = current {
        st.container = Some(short_id(&c.id).to_string());
        st.observed_image = Some(c.image.clone());
        st.state = Some(c.state);
        st.health = c.health;
        if let Some(t) = temp {
            steps.push(Step::CleanupTemp { id: t.id.clone() });
        }
        if prev.state == RunState::Running
            && c.label(labels::SPEC_HASH) == Some(rendered.spec_hash.as_str())
        {
            // Only a start-first rollout leaves a running `--prev` beside the new
            // container in place, and only after the new one passed its gate (the old
            // one may already be off its networks): it is finished, not re-gated.
            st.message = Some(format!(
                "rollout finishing: removing the old container {}",
                prev.name
            ));
            steps.push(Step::RemoveDuplicate { id: prev_id });
            return;
        }
        st.message = Some(format!(
            "rollout in progress: verifying the new container; the old one is kept as {}",
            prev.name
        ));
        steps.push(Step::Verify {
            id: c.id.clone(),
            prev_id,
        });
        return;
    }
    st.drift.push(Reason::Missing);
    let adoptable = temp.filter(|t| {
        t.label(labels::SPEC_HASH) == Some(rendered.spec_hash.as_str())
            && applied_config(t, observed) == rendered.config_hashes
    });
    if let Some(t) = adoptable {
        st.message = Some(format!(
            "rollout interrupted: adopting the new container; the old one is kept as {}",
            prev.name
        ));
        steps.push(Step::Adopt { id: t.id.clone() });
        steps.push(Step::Verify {
            id: t.id.clone(),
            prev_id,
        });
        return;
    }
    if let Some(t) = temp {
        steps.push(Step::CleanupTemp { id: t.id.clone() });
    }
    st.message = Some(format!(
        "rollout interrupted: putting the old container {} back",
        prev.name
    ));
    steps.push(Step::Restore { prev_id });
}

/// The image the service wants, as the engine has it.
struct ImageState {
    /// Local image ID of the wanted reference (`None`: not present).
    id: Option<String>,
    /// Not present: it must be pulled first.
    needs_pull: bool,
    /// Not present and `pullPolicy: Never`: nothing can be done until it is.
    unobtainable: bool,
}

impl ImageState {
    fn of(svc: &ServiceSpec, observed: &Observed) -> ImageState {
        let id = observed.images.get(&svc.image).cloned().flatten();
        let needs_pull = id.is_none();
        ImageState {
            id,
            needs_pull,
            unobtainable: needs_pull && svc.pull_policy == PullPolicy::Never,
        }
    }

    fn pull_step(&self, svc: &ServiceSpec) -> Option<Step> {
        self.needs_pull.then(|| Step::Pull {
            image: svc.image.clone(),
        })
    }
}

/// No container under the service's name: adopt a complete `--next` left by an
/// interrupted replace, or create one.
fn missing(
    st: &mut ResourceStatus,
    steps: &mut Vec<Step>,
    temp: Option<&ContainerInfo>,
    rendered: &Rendered,
    observed: &Observed,
    svc: &ServiceSpec,
    image: &ImageState,
) {
    st.drift.push(Reason::Missing);
    let adoptable = temp.filter(|t| {
        t.label(labels::SPEC_HASH) == Some(rendered.spec_hash.as_str())
            && applied_config(t, observed) == rendered.config_hashes
    });
    if let Some(t) = adoptable {
        steps.push(Step::Adopt { id: t.id.clone() });
        return;
    }
    if let Some(t) = temp {
        steps.push(Step::CleanupTemp { id: t.id.clone() });
    }
    if !st.drift.contains(&Reason::Failed) {
        steps.extend(image.pull_step(svc));
        steps.push(Step::Create);
    }
}

/// The container exists: what differs from the rendered spec, then what its state
/// asks for.
fn present(
    st: &mut ResourceStatus,
    steps: &mut Vec<Step>,
    c: &ContainerInfo,
    rendered: &Rendered,
    observed: &Observed,
    svc: &ServiceSpec,
    image: &ImageState,
) {
    st.container = Some(short_id(&c.id).to_string());
    st.observed_image = Some(c.image.clone());
    st.state = Some(c.state);
    st.health = c.health;

    let spec_changed = c.label(labels::SPEC_HASH) != Some(rendered.spec_hash.as_str());
    if spec_changed {
        st.drift.push(Reason::SpecChanged);
        if let Some(old) = c
            .label(labels::APPLIED)
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        {
            st.changes = diff_fields(&old, &rendered.masked);
        }
    }
    // A moved tag matters only when the spec itself is unchanged (a replace follows
    // either way).
    let image_changed = !spec_changed && image.id.as_ref().is_some_and(|want| *want != c.image_id);
    if image_changed {
        st.drift.push(Reason::ImageChanged);
        st.message = Some(format!(
            "{} now resolves to {}, container runs {}",
            svc.image,
            short_id(image.id.as_deref().unwrap_or("")),
            short_id(&c.image_id)
        ));
    }
    registry_check(st, svc, observed, image);
    let config = config_change(&applied_config(c, observed), rendered, c);
    if !matches!(config, ConfigChange::None) {
        st.drift.push(Reason::ConfigChanged);
    }

    let held_loop = observed
        .crash_loops
        .get(&st.name)
        .filter(|h| is_for(h, rendered));
    let restarts = observed.restart_counts.get(&c.id).copied().unwrap_or(0);
    let looping = c.state == RunState::Restarting && restarts >= CRASH_LOOP_RESTARTS;
    if let Some(h) = held_loop {
        st.drift.push(Reason::CrashLoop);
        st.message = Some(held_message("held after a crash loop", h));
        st.log_tail = Some(h.log_tail.clone());
    } else if looping {
        st.drift.push(Reason::CrashLoop);
        st.message = Some(format!(
            "container is crash-looping ({restarts} restarts): {}",
            c.status
        ));
    } else if c.state == RunState::Restarting {
        st.drift.push(Reason::Failed);
        st.message = Some(format!("container is crash-looping: {}", c.status));
    }
    // Exited containers are restarted only when their restart policy says they should
    // keep running: `restart: no` and `on-failure` are one-shot or failure-only, and
    // Docker already restarts on failure itself. A container that never started (crash
    // between create and start) is started whatever the policy.
    let keep_running = matches!(
        svc.restart,
        RestartPolicy::Always | RestartPolicy::UnlessStopped
    ) || c.state == RunState::Created;
    // A paused container is never wanted (only a backup's quiesce pauses, and it
    // unpauses): whatever the policy, it is unpaused — except while a backup of this
    // process holds it paused or stopped for a read (it puts it back itself).
    let quiesced = observed.quiesced.contains(&c.id);
    let stopped = !quiesced
        && (c.state == RunState::Paused
            || (!matches!(
                c.state,
                RunState::Running | RunState::Restarting | RunState::Removing
            ) && keep_running));
    if stopped {
        st.drift.push(Reason::Stopped);
    }
    let unhealthy = c.health == Some(Health::Unhealthy);
    if unhealthy {
        st.drift.push(Reason::Unhealthy);
    }

    if image.unobtainable {
        // Nothing can be done until the image exists.
        return;
    }
    let check = svc.config_check.is_some();
    let rolls_out = spec_changed
        || image_changed
        || matches!(
            config,
            ConfigChange::Recreate
                | ConfigChange::InPlace(
                    Step::Restart { .. } | Step::Signal { .. } | Step::Reload { .. }
                )
        );
    let failed_check = observed
        .preflight_failures
        .get(&st.name)
        .filter(|h| check && rolls_out && is_for(h, rendered));
    let rolled_back = observed
        .rollbacks
        .get(&st.name)
        .filter(|h| is_for(h, rendered));
    if let Some(h) = failed_check {
        // The new config failed its check: nothing is rolled out until it changes or
        // an operator retries. The running container is looked after below.
        st.drift.push(Reason::PreflightFailed);
        st.message = Some(held_message("preflight failed", h));
        st.log_tail = Some(h.log_tail.clone());
    } else if spec_changed || image_changed || matches!(config, ConfigChange::Recreate) {
        match rolled_back {
            // This very spec failed its health gate: not tried again until it changes
            // or an operator retries. The old container is looked after below.
            Some(h) => {
                st.drift.push(Reason::RolledBack);
                st.message = Some(held_message("rolled back", h));
                st.log_tail = Some(h.log_tail.clone());
            }
            None => {
                steps.extend(image.pull_step(svc));
                if check {
                    steps.push(Step::Preflight);
                }
                steps.push(Step::Replace {
                    old_id: c.id.clone(),
                });
                return;
            }
        }
    }
    let held =
        st.drift.contains(&Reason::RolledBack) || st.drift.contains(&Reason::PreflightFailed);
    if let (false, ConfigChange::InPlace(mut step)) = (held, config) {
        // The start of a container that is not running applies changed files as a
        // reload would: checked first all the same.
        let mut applied_by_start = false;
        if !matches!(c.state, RunState::Running | RunState::Paused)
            && matches!(step, Step::Signal { .. } | Step::Reload { .. })
        {
            // Nothing runs to signal or reload (the engine refuses both): the next
            // start (below, or the container's own) reads the new content; only the
            // record is needed.
            step = Step::RecordConfig {
                id: c.id.clone(),
                hashes: rendered.config_hashes.clone(),
            };
            applied_by_start = true;
        }
        let restarts = matches!(step, Step::Restart { .. });
        let records = matches!(step, Step::RecordConfig { .. });
        if check && (!records || applied_by_start) {
            steps.push(Step::Preflight);
        }
        steps.push(step);
        if !records {
            steps.push(Step::RecordConfig {
                id: c.id.clone(),
                hashes: rendered.config_hashes.clone(),
            });
        }
        if restarts {
            // A restart also starts a stopped container and renews an unhealthy one.
            return;
        }
    }
    if held_loop.is_some() {
        // Held: not started again until the spec changes or an operator retries; a
        // container someone started by hand is stopped again only if it loops again.
        if looping {
            steps.push(Step::Hold { id: c.id.clone() });
        }
        return;
    }
    if looping {
        steps.push(Step::Hold { id: c.id.clone() });
    } else if stopped && c.state == RunState::Paused {
        // Paused by a backup that never finished (obsd crashed mid-read).
        steps.push(Step::Unpause { id: c.id.clone() });
    } else if stopped {
        steps.push(Step::Start { id: c.id.clone() });
    } else if unhealthy {
        steps.push(Step::Restart { id: c.id.clone() });
    }
}

/// `update.image`: the registry's tag names another manifest than the local image
/// (`image_outdated`, while the local tag still names the image the check compared
/// against). A failed check is not drift: only the status message says so.
fn registry_check(
    st: &mut ResourceStatus,
    svc: &ServiceSpec,
    observed: &Observed,
    image: &ImageState,
) {
    if svc.image_updates().is_none() {
        return;
    }
    let Some(check) = observed.image_checks.get(&svc.image) else {
        return;
    };
    let current = image.id.is_some() && check.local_id == image.id;
    if current && check.outdated {
        st.drift.push(Reason::ImageOutdated);
        st.message = Some(format!(
            "the registry has a newer {} ({}); the local image is {}",
            svc.image,
            short_id(check.remote_digest.as_deref().unwrap_or("")),
            short_id(image.id.as_deref().unwrap_or(""))
        ));
    }
    if let (Some(e), None) = (&check.error, &st.message) {
        st.message = Some(format!("image update check failed: {e}"));
    }
}

/// How changed config files are applied.
enum ConfigChange {
    /// The applied hashes are the rendered ones.
    None,
    /// A file whose `onChange` is `recreate` changed, or the number of files did (the
    /// mounts change: `spec_changed` covers that too).
    Recreate,
    /// Applied in place: restart, signal, or only recorded (`onChange: none`).
    InPlace(Step),
}

/// Compares the applied config hashes with the rendered ones, file by file, and picks
/// the strongest `onChange` among the files that changed (recreate > restart > reload
/// (exec, http) > signal > record).
fn config_change(applied: &[String], rendered: &Rendered, c: &ContainerInfo) -> ConfigChange {
    if applied == rendered.config_hashes.as_slice() {
        return ConfigChange::None;
    }
    if applied.len() != rendered.config_hashes.len() {
        return ConfigChange::Recreate;
    }
    let mut restart = false;
    let mut reload: Option<Reload> = None;
    let mut signal: Option<&String> = None;
    for (i, h) in rendered.config_hashes.iter().enumerate() {
        if applied[i] == *h {
            continue;
        }
        match &rendered.on_change[i] {
            OnChange::Recreate => return ConfigChange::Recreate,
            OnChange::Restart => restart = true,
            OnChange::Exec(cmd) => {
                reload.get_or_insert_with(|| Reload::Exec(cmd.clone()));
            }
            OnChange::Http(h) => {
                reload.get_or_insert_with(|| Reload::Http {
                    method: h.method.clone(),
                    url: c
                        .ips
                        .values()
                        .next()
                        .map(|ip| format!("http://{ip}:{}{}", h.port, h.path)),
                });
            }
            OnChange::Signal(s) => {
                signal.get_or_insert(s);
            }
            OnChange::None => {}
        }
    }
    let id = c.id.clone();
    ConfigChange::InPlace(if restart {
        Step::Restart { id }
    } else if let Some(how) = reload {
        Step::Reload { id, how }
    } else if let Some(sig) = signal {
        Step::Signal {
            id,
            signal: sig.clone(),
        }
    } else {
        Step::RecordConfig {
            id,
            hashes: rendered.config_hashes.clone(),
        }
    })
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

/// Owned containers of services that are no longer desired: removed when pruning.
pub(super) fn orphans(
    desired: &DesiredState,
    by_service: &BTreeMap<&str, Vec<&ContainerInfo>>,
    p: &mut Plan,
) {
    for (svc, cs) in by_service {
        if desired.services.contains_key(*svc) {
            continue;
        }
        let mut st = status(Kind::Service, svc);
        st.drift.push(Reason::Orphan);
        for c in cs {
            st.container = Some(short_id(&c.id).to_string());
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
}
