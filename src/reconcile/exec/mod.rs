//! The executor: observes the engine, and carries out a [`Plan`] in dependency order with
//! bounded concurrency and per-service backoff. One broken service never blocks the
//! others: its failure is recorded and the rest of the plan goes on.
//!
//! Replacement is crash-safe and health-gated ([`rollout`]): whatever step a crash
//! interrupts, the next plan sees a leftover temp (removed, or adopted when it is
//! complete), a `--prev` (the gate resumed, or the old container put back) or the old
//! container — never two live copies. Changes the service itself is asked about — the
//! `configCheck` preflight and exec/HTTP reloads — are in [`check`].

use crate::desired::model::service::{DependencyCondition, PullPolicy};
use crate::desired::DesiredState;
use crate::docker::{Docker, DockerError, RunState};
use crate::reconcile::plan::{InfraAction, Observed, Plan, ServicePlan, Step};
use crate::state::{backoff_delay_ms, now_ms, HeldSpec, Persisted};
use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use tracing::Instrument;

mod check;
mod rollout;

pub use check::CHECK_SUFFIX;
use check::{preflight, reload};
pub use rollout::gate_times;
use rollout::{
    bounded_tail, ensure_started, replace, replace_start_first, verify, LOG_TAIL_BYTES,
    LOG_TAIL_LINES,
};

/// Reads everything the planner needs: 3 list calls plus one image inspect per distinct
/// image reference.
pub async fn observe<D: Docker>(
    docker: &D,
    desired: &DesiredState,
    persisted: &Persisted,
) -> Result<Observed, DockerError> {
    let (containers, volumes, networks) = tokio::try_join!(
        docker.list_all_containers(),
        docker.list_volumes(),
        docker.list_networks()
    )?;
    let refs: BTreeSet<&str> = desired
        .services
        .values()
        .map(|s| s.spec.image.as_str())
        .collect();
    let lookups = futures_util::future::try_join_all(
        refs.iter()
            .map(|r| async move { docker.image_id(r).await.map(|id| (r.to_string(), id)) }),
    )
    .await?;
    // The restart count is not in the list: one inspect per crash-looping container.
    let mut restart_counts = BTreeMap::new();
    for c in containers.iter().filter(|c| {
        c.state == RunState::Restarting
            && crate::docker::labels::owned(&c.labels, desired.project())
    }) {
        if let Ok(s) = docker.inspect_state(&c.id).await {
            restart_counts.insert(c.id.clone(), s.restart_count);
        }
    }
    let live: BTreeSet<&str> = containers.iter().map(|c| c.id.as_str()).collect();
    Ok(Observed {
        restart_counts,
        crash_loops: persisted.rollout.crash_loops.clone(),
        images: lookups.into_iter().collect(),
        applied_config: persisted
            .applied_config
            .iter()
            .filter(|(id, _)| live.contains(id.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        rollbacks: persisted.rollout.rollbacks.clone(),
        image_checks: persisted.image_checks.clone(),
        preflight_failures: persisted.rollout.preflight_failures.clone(),
        quiesced: crate::jobs::quiesced::snapshot(),
        containers,
        volumes,
        networks,
    })
}

/// Pulls every `pullPolicy: Always` image. Failures are returned per image; a service
/// whose image is then still absent fails on its own Pull step.
pub async fn pull_always<D: Docker>(
    docker: &D,
    desired: &DesiredState,
) -> BTreeMap<String, String> {
    let refs: BTreeSet<&str> = desired
        .services
        .values()
        .filter(|s| s.spec.pull_policy == PullPolicy::Always)
        .map(|s| s.spec.image.as_str())
        .collect();
    let mut errors = BTreeMap::new();
    for r in refs {
        if let Err(e) = docker.pull_image(r).await {
            errors.insert(r.to_string(), e.to_string());
        }
    }
    errors
}

/// What happened to one service in one pass.
#[derive(Debug, Clone)]
pub enum ServiceResult {
    Done {
        actions: Vec<&'static str>,
    },
    Failed {
        action: &'static str,
        error: String,
    },
    /// Skipped: a dependency is not ready yet.
    Waiting {
        on: String,
    },
    /// Skipped: backing off after earlier failures.
    BackingOff {
        retry_at_ms: i64,
    },
    /// The replacement failed its health gate; the old container runs again.
    RolledBack {
        rollback: HeldSpec,
    },
    /// The new config failed its `configCheck`; nothing running was touched.
    PreflightFailed {
        check: HeldSpec,
    },
    /// A crash-looping container was stopped and is held.
    CrashLoop {
        hold: HeldSpec,
    },
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub services: BTreeMap<String, ServiceResult>,
    pub infra_errors: Vec<String>,
    /// Every action with its result, for metrics: (action, ok).
    pub actions: Vec<(&'static str, bool)>,
    /// Services rolled back in this pass (`obsd_rollbacks_total`).
    pub rollbacks: Vec<String>,
    /// Services whose preflight check failed in this pass
    /// (`obsd_preflight_failures_total`).
    pub preflight_failures: Vec<String>,
}

impl Report {
    /// A pass fails when an action failed or a service is still backing off from an
    /// earlier failure (it is not converged either way).
    pub fn failed(&self) -> bool {
        !self.infra_errors.is_empty()
            || self.services.values().any(|r| {
                matches!(
                    r,
                    ServiceResult::Failed { .. }
                        | ServiceResult::BackingOff { .. }
                        | ServiceResult::RolledBack { .. }
                        | ServiceResult::PreflightFailed { .. }
                        | ServiceResult::CrashLoop { .. }
                )
            })
    }

    /// Something was skipped and another pass is needed soon.
    pub fn needs_requeue(&self) -> bool {
        self.services.values().any(|r| {
            matches!(
                r,
                ServiceResult::Waiting { .. } | ServiceResult::BackingOff { .. }
            )
        })
    }
}

pub struct ExecOptions {
    pub concurrency: usize,
    pub backoff_cap_ms: i64,
    pub now_ms: i64,
}

/// Executes `plan`. `persisted` receives in-place config records and backoff updates.
pub async fn execute<D: Docker>(
    docker: &D,
    desired: &DesiredState,
    plan: &Plan,
    observed: &Observed,
    persisted: &mut Persisted,
    opts: &ExecOptions,
) -> Report {
    let mut report = Report::default();

    // 1. Networks and volumes, before any container needs them.
    // Futures are collected with loops, not closures: closure types inside a spawned
    // future defeat the compiler's `Send` proof for generic trait futures.
    let mut infra_futs = Vec::new();
    for a in &plan.infra {
        infra_futs.push(run_infra(docker, desired, a));
    }
    let infra = futures_util::stream::iter(infra_futs)
        .buffer_unordered(opts.concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    for (action, r) in infra {
        report.actions.push((action, r.is_ok()));
        if let Err(e) = r {
            report.infra_errors.push(e);
        }
    }

    // 2. Services in waves: each wave runs those whose dependencies are satisfied.
    let planned: BTreeMap<&str, &ServicePlan> = plan
        .services
        .iter()
        .map(|s| (s.service.as_str(), s))
        .collect();
    let mut pending: BTreeSet<&str> = planned.keys().copied().collect();
    let mut done_ok: BTreeSet<String> = BTreeSet::new();
    let mut failed: BTreeSet<String> = BTreeSet::new();

    // Back off services that failed recently.
    for name in pending.clone() {
        if let Some(b) = persisted.backoff.get(name) {
            if b.retry_at_ms > opts.now_ms {
                report.services.insert(
                    name.to_string(),
                    ServiceResult::BackingOff {
                        retry_at_ms: b.retry_at_ms,
                    },
                );
                pending.remove(name);
                failed.insert(name.to_string());
            }
        }
    }

    let infra_failed = !report.infra_errors.is_empty();
    loop {
        let mut wave = Vec::new();
        let mut blocked = Vec::new();
        for name in &pending {
            let sp = planned[name];
            match readiness(desired, observed, sp, &pending, &done_ok, &failed) {
                Ready::Yes => wave.push(*name),
                Ready::Later(on) => blocked.push((*name, on, false)),
                Ready::Never(on) => blocked.push((*name, on, true)),
            }
        }
        if wave.is_empty() {
            for (name, on, _) in blocked {
                report
                    .services
                    .insert(name.to_string(), ServiceResult::Waiting { on });
            }
            break;
        }
        let mut futs = Vec::new();
        for name in &wave {
            futs.push(run_named(docker, desired, planned[name], infra_failed));
        }
        let results = futures_util::stream::iter(futs)
            .buffer_unordered(opts.concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        for (name, (res, records, actions)) in results {
            pending.remove(name.as_str());
            report.actions.extend(actions);
            for (id, hashes) in records {
                persisted.applied_config.insert(id, hashes);
            }
            match &res {
                ServiceResult::Done { .. } => {
                    persisted.backoff.remove(&name);
                    done_ok.insert(name.clone());
                }
                ServiceResult::Failed { error, .. } => {
                    let b = persisted.backoff.entry(name.clone()).or_default();
                    b.failures += 1;
                    b.retry_at_ms = opts.now_ms + backoff_delay_ms(b.failures, opts.backoff_cap_ms);
                    b.last_error = Some(error.clone());
                    failed.insert(name.clone());
                }
                ServiceResult::RolledBack { rollback } => {
                    // Not a backoff: the planner holds this spec until it changes.
                    persisted.backoff.remove(&name);
                    persisted
                        .rollout
                        .rollbacks
                        .insert(name.clone(), rollback.clone());
                    report.rollbacks.push(name.clone());
                    failed.insert(name.clone());
                }
                ServiceResult::PreflightFailed { check } => {
                    persisted.backoff.remove(&name);
                    persisted
                        .rollout
                        .preflight_failures
                        .insert(name.clone(), check.clone());
                    report.preflight_failures.push(name.clone());
                    failed.insert(name.clone());
                }
                ServiceResult::CrashLoop { hold } => {
                    persisted.backoff.remove(&name);
                    persisted
                        .rollout
                        .crash_loops
                        .insert(name.clone(), hold.clone());
                    failed.insert(name.clone());
                }
                _ => {}
            }
            note_rollout(persisted, planned[name.as_str()], &res, opts.now_ms);
            report.services.insert(name, res);
        }
    }

    // 3. Removals of what is no longer desired.
    for a in &plan.cleanup {
        let (action, r) = run_infra(docker, desired, a).await;
        report.actions.push((action, r.is_ok()));
        if let Err(e) = r {
            report.infra_errors.push(e);
        }
    }
    // Forget records of containers that no longer exist.
    let live: BTreeSet<&str> = observed.containers.iter().map(|c| c.id.as_str()).collect();
    persisted
        .applied_config
        .retain(|id, _| live.contains(id.as_str()));
    report
}

enum Ready {
    Yes,
    Later(String),
    Never(String),
}

fn readiness(
    desired: &DesiredState,
    observed: &Observed,
    sp: &ServicePlan,
    pending: &BTreeSet<&str>,
    done_ok: &BTreeSet<String>,
    failed: &BTreeSet<String>,
) -> Ready {
    for d in &sp.depends_on {
        let (dep, cond) = (&d.service, &d.condition);
        if failed.contains(dep) {
            return Ready::Never(format!("{dep} (failed)"));
        }
        if pending.contains(dep.as_str()) {
            return Ready::Later(dep.clone());
        }
        let cname = desired.container_name(dep);
        let c = observed.containers.iter().find(|c| c.name == cname);
        match cond {
            DependencyCondition::Started => {
                let running =
                    done_ok.contains(dep) || c.is_some_and(|c| c.state == RunState::Running);
                if !running {
                    return Ready::Never(format!("{dep} to start"));
                }
            }
            DependencyCondition::Healthy => {
                // Just (re)created in this pass → health unknown yet: wait for a later pass.
                let healthy = !done_ok.contains(dep)
                    && c.is_some_and(|c| {
                        c.state == RunState::Running
                            && c.health == Some(crate::docker::Health::Healthy)
                    });
                if !healthy {
                    return Ready::Never(format!("{dep} to be healthy"));
                }
            }
        }
    }
    Ready::Yes
}

type Records = Vec<(String, Vec<String>)>;

async fn run_named<D: Docker>(
    docker: &D,
    desired: &DesiredState,
    sp: &ServicePlan,
    infra_failed: bool,
) -> (String, (ServiceResult, Records, Vec<(&'static str, bool)>)) {
    (
        sp.service.clone(),
        run_service(docker, desired, sp, infra_failed).await,
    )
}

async fn run_service<D: Docker>(
    docker: &D,
    desired: &DesiredState,
    sp: &ServicePlan,
    infra_failed: bool,
) -> (ServiceResult, Records, Vec<(&'static str, bool)>) {
    let mut records = Vec::new();
    let mut actions = Vec::new();
    let mut done = Vec::new();
    let Some(rendered) = &sp.rendered else {
        return (
            ServiceResult::Failed {
                action: "render",
                error: "service could not be rendered".into(),
            },
            records,
            actions,
        );
    };
    let cname = desired.container_name(&sp.service);
    let spec = &desired.services[&sp.service].spec;
    let mut rolled_back: Option<HeldSpec> = None;
    let mut check_failed: Option<HeldSpec> = None;
    let mut fell_back: Option<String> = None;
    let mut held: Option<HeldSpec> = None;
    for step in &sp.steps {
        let name = step.action_name();
        let span = tracing::info_span!("action", service = %sp.service, action = name);
        let r: Result<(), DockerError> = async {
            match step {
                Step::CleanupTemp { id } => docker.remove_container(id).await,
                Step::RemoveDuplicate { id } => stop_and_remove(docker, id).await,
                Step::Adopt { id } => {
                    docker.rename_container(id, &cname).await?;
                    ensure_started(docker, id).await
                }
                Step::Pull { image } => docker.pull_image(image).await,
                Step::Create => {
                    let id = docker.create_container(&rendered.create).await?;
                    if let Err(e) = docker.start_container(&id).await {
                        // Leave no half-made container behind; the next pass starts over.
                        let _ = docker.remove_container(&id).await;
                        return Err(e);
                    }
                    Ok(())
                }
                Step::Replace { old_id } if spec.start_first() => {
                    rolled_back =
                        replace_start_first(docker, spec, rendered, &cname, old_id).await?;
                    Ok(())
                }
                Step::Replace { old_id } => {
                    rolled_back = replace(docker, spec, rendered, &cname, old_id).await?;
                    Ok(())
                }
                Step::Verify { id, prev_id } => {
                    rolled_back = verify(docker, spec, rendered, &cname, id, prev_id).await?;
                    Ok(())
                }
                Step::Preflight => {
                    check_failed = preflight(docker, spec, rendered, &cname).await?;
                    Ok(())
                }
                Step::Hold { id } => {
                    docker
                        .stop_container(id, rendered.create.stop_timeout)
                        .await?;
                    let log_tail = docker
                        .container_logs(id, LOG_TAIL_LINES)
                        .await
                        .map(|l| bounded_tail(&l, LOG_TAIL_BYTES))
                        .unwrap_or_else(|e| format!("(logs unavailable: {e})"));
                    tracing::warn!(service = %sp.service, "crash loop: container stopped and held");
                    held = Some(HeldSpec {
                        spec_hash: rendered.spec_hash.clone(),
                        config_hashes: rendered.config_hashes.clone(),
                        reason: format!(
                            "stopped after {} engine restarts",
                            crate::reconcile::plan::CRASH_LOOP_RESTARTS
                        ),
                        log_tail,
                        at_ms: now_ms(),
                    });
                    Ok(())
                }
                Step::Restore { prev_id } => {
                    docker.rename_container(prev_id, &cname).await?;
                    docker.start_container(prev_id).await
                }
                Step::Start { id } => docker.start_container(id).await,
                Step::Unpause { id } => docker.unpause_container(id).await,
                Step::Restart { id } => {
                    docker
                        .restart_container(id, rendered.create.stop_timeout)
                        .await
                }
                Step::Signal { id, signal } => docker.kill_container(id, signal).await,
                Step::Reload { id, how } => match reload(docker, id, how).await {
                    Ok(()) => Ok(()),
                    Err(why) => {
                        tracing::warn!(service = %sp.service, %why, "reload failed; restarting");
                        fell_back = Some(why);
                        docker
                            .restart_container(id, rendered.create.stop_timeout)
                            .await
                    }
                },
                Step::RecordConfig { id, hashes } => {
                    records.push((id.clone(), hashes.clone()));
                    Ok(())
                }
            }
        }
        .instrument(span)
        .await;
        if step.is_write() {
            actions.push((name, r.is_ok()));
        }
        if let Err(e) = r {
            let mut error = e.to_string();
            if infra_failed {
                error.push_str(" (a network or volume could not be created in this pass)");
            }
            return (
                ServiceResult::Failed {
                    action: name,
                    error,
                },
                records,
                actions,
            );
        }
        if let Some(hold) = held.take() {
            actions.push(("hold", true));
            return (ServiceResult::CrashLoop { hold }, records, actions);
        }
        if let Some(check) = check_failed.take() {
            actions.push(("preflight", false));
            return (ServiceResult::PreflightFailed { check }, records, actions);
        }
        if let Some(rollback) = rolled_back.take() {
            actions.push(("rollback", true));
            return (ServiceResult::RolledBack { rollback }, records, actions);
        }
        if step.is_write() {
            done.push(name);
        }
        if fell_back.take().is_some() {
            // Said in the service's last action (`reload+reload_failed+restart`), the
            // metrics (`obsd_actions_total{action="reload",result="error"}`) and the log.
            if let Some(last) = actions.iter_mut().rev().find(|(a, _)| *a == "reload") {
                last.1 = false;
            }
            actions.push(("restart", true));
            done.push("reload_failed");
            done.push("restart");
        }
    }
    (ServiceResult::Done { actions: done }, records, actions)
}

async fn run_infra<D: Docker>(
    docker: &D,
    desired: &DesiredState,
    a: &InfraAction,
) -> (&'static str, Result<(), String>) {
    let project = desired.project();
    let mut labels = BTreeMap::new();
    labels.insert(
        crate::docker::labels::STACK.to_string(),
        project.to_string(),
    );
    match a {
        InfraAction::CreateNetwork { name, docker_name } => {
            let spec = &desired.networks[name].spec;
            labels.insert(crate::docker::labels::KIND.into(), "Network".into());
            labels.insert(crate::docker::labels::NAME.into(), name.clone());
            (
                "create_network",
                docker
                    .create_network(docker_name, spec.driver.as_deref(), spec.internal, &labels)
                    .await
                    .map_err(|e| format!("network {name}: {e}")),
            )
        }
        InfraAction::CreateVolume { name, docker_name } => {
            let spec = &desired.volumes[name].spec;
            labels.insert(crate::docker::labels::KIND.into(), "Volume".into());
            labels.insert(crate::docker::labels::NAME.into(), name.clone());
            (
                "create_volume",
                docker
                    .create_volume(docker_name, spec.driver.as_deref(), &labels)
                    .await
                    .map_err(|e| format!("volume {name}: {e}")),
            )
        }
        InfraAction::RemoveOrphanContainer { service, id, .. } => (
            "remove",
            stop_and_remove(docker, id)
                .await
                .map_err(|e| format!("orphan {service}: {e}")),
        ),
        InfraAction::RemoveNetwork { docker_name } => (
            "remove_network",
            docker
                .remove_network(docker_name)
                .await
                .map_err(|e| format!("network {docker_name}: {e}")),
        ),
    }
}

/// Appends a rollout (a replace, a create, an in-place config change) or its failure to
/// the service's history in the state directory.
fn note_rollout(persisted: &mut Persisted, sp: &ServicePlan, res: &ServiceResult, now: i64) {
    let rolls = |a: &str| {
        matches!(
            a,
            "create" | "recreate" | "adopt" | "verify" | "reload" | "signal"
        )
    };
    let (outcome, detail) = match res {
        ServiceResult::Done { actions } if actions.iter().any(|a| rolls(a)) => {
            ("applied", actions.join("+"))
        }
        ServiceResult::RolledBack { rollback } => ("rolled_back", rollback.reason.clone()),
        ServiceResult::PreflightFailed { check } => ("preflight_failed", check.reason.clone()),
        ServiceResult::CrashLoop { hold } => ("crash_loop", hold.reason.clone()),
        ServiceResult::Failed { action, error } if rolls(action) => {
            ("failed", format!("{action}: {error}"))
        }
        _ => return,
    };
    let Some(r) = &sp.rendered else { return };
    let h = persisted
        .rollout
        .rollout_history
        .entry(sp.service.clone())
        .or_default();
    h.push(crate::state::RolloutEntry {
        at_ms: now,
        spec_hash: r.spec_hash.chars().take(12).collect(),
        image: r.create.image.clone(),
        outcome: outcome.into(),
        detail,
        spec: Some(r.masked.clone()),
    });
    let excess = h.len().saturating_sub(crate::state::ROLLOUT_HISTORY);
    h.drain(..excess);
}

/// Removes a container that may be running: stopped first with its own stop signal and
/// grace period (`None`: the container's configured `StopTimeout`), because the engine's
/// force-remove is a SIGKILL — a removed Service may be a database with a volume.
async fn stop_and_remove<D: Docker>(docker: &D, id: &str) -> Result<(), DockerError> {
    match docker.stop_container(id, None).await {
        Ok(()) | Err(DockerError::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    docker.remove_container(id).await
}
