//! The daemon: one closed event loop that keeps the host converged.
//!
//! Everything that can wake the loop is an [`Event`]: desired-state file changes
//! (debounced), Docker events (hints only — the reconcile re-reads everything), the
//! periodic resync, SIGHUP, API requests, and the completion of a reconcile. At most one
//! reconcile is in flight and at most one is pending; a burst of events collapses into
//! a single pass. Start-up is just "desired state changed" from nothing.

pub mod alerting;
pub mod jobs_only;
pub mod metrics;

use crate::daemon::alerting::{AlertConfig, Alerter};
use crate::daemon::metrics::{Metrics, ResultLabel};
use crate::desired::load::{load_dir, LoadOptions};
use crate::desired::DesiredState;
use crate::docker::engine::Engine;
use crate::docker::{labels, Docker, EngineEvent};
use crate::jobs::{
    BodyExecutor, ContainerNames, ContainerNamesError, JobContext, JobMetrics, JobRunner,
    JobStatus, RunResult, RunnerConfig, SystemClock, TriggerError,
};
use crate::reconcile::exec::ServiceResult;
use crate::reconcile::{self, StatusRow};
use crate::state::{self, Persisted};
use futures_util::StreamExt;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, info_span, warn, Instrument};

/// Daemon settings from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    pub desired_dir: PathBuf,
    pub state_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub socket: Option<PathBuf>,
    /// Run one converge pass and exit.
    pub once: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("desired state in {dir} is invalid:\n{errors}")]
    Invalid { dir: PathBuf, errors: String },
    #[error("{0}")]
    Io(String),
    #[error("reconcile failed: {0}")]
    Failed(String),
}

/// What the API and `obsctl status` read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub desired_generation: u64,
    pub applied_generation: u64,
    pub docker_up: bool,
    pub desired_state_error: Option<String>,
    pub last_reconcile_ms: Option<i64>,
    pub last_success_ms: Option<i64>,
    pub resources: Vec<StatusRow>,
    pub jobs: Vec<serde_json::Value>,
}

enum Event {
    FilesChanged,
    Docker(EngineEvent),
    DockerDown(String),
    DockerUp(Engine),
    Resync,
    Reload,
    Requeue,
    ApiReconcile,
    Done(Box<Finished>),
}

struct Finished {
    persisted: Persisted,
    result: Result<reconcile::Pass, String>,
    elapsed: Duration,
    generation: u64,
}

/// Shared state of a running daemon.
struct Shared {
    snapshot: RwLock<Snapshot>,
    registry: Registry,
    metrics: Metrics,
    jobs: JobRunner,
}

/// `ContainerNames` for the docker-names job, on the daemon's current engine.
struct EngineNames(Arc<RwLock<Option<Engine>>>);

impl ContainerNames for EngineNames {
    fn list(
        &self,
    ) -> futures_util::future::BoxFuture<'_, Result<Vec<(String, String)>, ContainerNamesError>>
    {
        let engine = self.0.read().expect("engine slot").clone();
        Box::pin(async move {
            let engine = engine.ok_or("the Docker engine is not reachable")?;
            let all = engine.list_all_containers().await?;
            Ok(all
                .into_iter()
                .filter(|c| c.state == crate::docker::RunState::Running)
                .map(|c| (c.id, c.name))
                .collect())
        })
    }
}

/// Feeds the job runner a desired state: its env file and textfile directory, and the
/// jobs (with service URLs resolved). Jobs whose `${VAR}`s could not be expanded are
/// not scheduled.
struct JobsFeed {
    exec: Arc<BodyExecutor>,
    names: Arc<dyn ContainerNames>,
    state_dir: PathBuf,
    last: Option<BTreeMap<String, crate::desired::model::JobSpec>>,
}

impl JobsFeed {
    fn update(
        &mut self,
        runner: &JobRunner,
        d: &DesiredState,
        ips: &BTreeMap<String, String>,
        new_state: bool,
    ) {
        if new_state {
            self.exec.set_context(JobContext::new(
                Arc::new(d.env.clone()),
                self.state_dir.clone(),
                d.stack.spec.textfile_dir.as_ref().map(PathBuf::from),
                self.names.clone(),
            ));
        }
        let ready: BTreeMap<String, crate::desired::model::JobSpec> = d
            .jobs
            .iter()
            .filter(|(name, r)| {
                if r.source.unresolved.is_empty() {
                    true
                } else {
                    if new_state {
                        warn!(job = %name, missing = %r.source.unresolved.join(","), "job not scheduled: variables not set");
                    }
                    false
                }
            })
            .map(|(n, r)| (n.clone(), r.spec.clone()))
            .collect();
        let jobs = reconcile::resolve_job_urls(&ready, ips);
        if self.last.as_ref() != Some(&jobs) {
            runner.set_jobs(jobs.clone());
            self.last = Some(jobs);
        }
    }
}

/// Runs the daemon until `shutdown` is cancelled (or one pass with `--once`).
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let first = load(&cfg.desired_dir).await;
    let state_dir = state::resolve_dir(
        cfg.state_dir.as_deref(),
        first.as_ref().ok().map(|d| d.stack.spec.state_dir.as_str()),
    );
    state::ensure_dir(&state_dir)?;
    let _lock = state::Lock::acquire(&state_dir)?;
    let key = state::host_key(&state_dir)?;
    let mut persisted = Persisted::load(&state_dir)?;

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let job_metrics = JobMetrics::register(&mut registry);

    if cfg.once {
        let desired = first.map_err(|e| DaemonError::Invalid {
            dir: cfg.desired_dir.clone(),
            errors: e,
        })?;
        let engine = connect_engine().await.map_err(DaemonError::Io)?;
        let generation = persisted.observe_desired(&desired.digest);
        let pass = reconcile::pass(&engine, &desired, &key, &mut persisted, true, true)
            .await
            .map_err(|e| DaemonError::Failed(e.to_string()))?;
        if !pass.failed() && pass.plan.is_noop() {
            persisted.applied_generation = generation;
        }
        persisted.save(&state_dir)?;
        if pass.failed() {
            return Err(DaemonError::Failed(
                "one or more services failed; see the log".into(),
            ));
        }
        return Ok(());
    }

    let engine_slot: Arc<RwLock<Option<Engine>>> = Arc::new(RwLock::new(None));
    let names: Arc<dyn ContainerNames> = Arc::new(EngineNames(engine_slot.clone()));
    let exec = Arc::new(BodyExecutor::new(JobContext::new(
        Arc::new(crate::desired::EnvFile::default()),
        state_dir.clone(),
        None,
        names.clone(),
    )));
    let runner = JobRunner::start(
        RunnerConfig {
            state_dir: state_dir.clone(),
            clock: Arc::new(SystemClock),
        },
        exec.clone(),
        job_metrics,
        shutdown.child_token(),
    );
    let mut feed = JobsFeed {
        exec,
        names,
        state_dir: state_dir.clone(),
        last: None,
    };
    let shared = Arc::new(Shared {
        snapshot: RwLock::new(Snapshot::default()),
        registry,
        metrics,
        jobs: runner.clone(),
    });
    let mut service_ips: BTreeMap<String, String> = BTreeMap::new();

    let (tx, mut rx) = mpsc::channel::<Event>(1024);
    let tracker = tokio_util::task::TaskTracker::new();

    // Servers.
    let socket = cfg
        .socket
        .clone()
        .unwrap_or_else(|| crate::api::socket_in(&state_dir));
    let api_task = serve_api(&socket, shared.clone(), tx.clone(), shutdown.clone())
        .await
        .map_err(DaemonError::Io)?;
    tracker.spawn(api_task);
    if let Some(addr) = cfg.listen {
        let t = serve_metrics(addr, shared.clone(), shutdown.clone())
            .await
            .map_err(DaemonError::Io)?;
        tracker.spawn(t);
    }
    tracker.spawn(watch_files(
        cfg.desired_dir.clone(),
        tx.clone(),
        shutdown.clone(),
    ));
    let project: Arc<RwLock<String>> = Arc::new(RwLock::new(
        first
            .as_ref()
            .map(|d| d.project().to_string())
            .unwrap_or_default(),
    ));
    tracker.spawn(watch_docker(tx.clone(), project.clone(), shutdown.clone()));
    tracker.spawn(signals(tx.clone(), shutdown.clone()));

    let mut desired: Option<Arc<DesiredState>> = None;
    let mut engine: Option<Engine> = None;
    let mut down_logged = false;
    let mut in_flight = false;
    let mut pending;
    let mut pull_next = true;
    let mut persisted_slot: Option<Persisted> = None;
    let mut resync = tokio::time::interval(Duration::from_secs(300));
    resync.tick().await;
    let mut requeue_at: Option<tokio::time::Instant> = None;
    let mut docker_hint_at: Option<tokio::time::Instant> = None;

    let mut alerter = Alerter::new(AlertConfig::default());
    apply_load(first, &cfg.desired_dir, &mut desired, &shared);
    if let Some(d) = &desired {
        note_generation(&mut persisted, d, &shared);
        alerter.set_config(AlertConfig::from_desired(d));
        feed.update(&runner, d, &service_ips, true);
    }
    if let Some(d) = &desired {
        resync = tokio::time::interval(d.stack.spec.resync_period.0.max(Duration::from_secs(5)));
        resync.tick().await;
    }
    persisted_slot.get_or_insert(persisted);
    pending = true;

    loop {
        // Start a pass when one is wanted and none is running.
        if pending && !in_flight {
            if let (Some(d), Some(e), true) =
                (desired.clone(), engine.clone(), persisted_slot.is_some())
            {
                let mut p = persisted_slot.take().expect("checked");
                pending = false;
                in_flight = true;
                let key = key.clone();
                let tx = tx.clone();
                let pull = std::mem::replace(&mut pull_next, false);
                let generation = note_generation(&mut p, &d, &shared);
                let span = info_span!("reconcile", generation);
                tracker.spawn(
                    async move {
                        let mut p = p;
                        let started = Instant::now();
                        let result = reconcile::pass(&e, &d, &key, &mut p, true, pull)
                            .await
                            .map_err(|e| e.to_string());
                        let _ = tx
                            .send(Event::Done(Box::new(Finished {
                                persisted: p,
                                result,
                                elapsed: started.elapsed(),
                                generation,
                            })))
                            .await;
                    }
                    .instrument(span),
                );
            }
        }

        let sleep_until = [requeue_at, docker_hint_at].into_iter().flatten().min();
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            ev = rx.recv() => match ev { Some(e) => e, None => break },
            _ = resync.tick() => Event::Resync,
            _ = async { match sleep_until { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                let now = tokio::time::Instant::now();
                if docker_hint_at.is_some_and(|t| t <= now) { docker_hint_at = None; }
                if requeue_at.is_some_and(|t| t <= now) { requeue_at = None; }
                Event::Requeue
            }
        };
        match event {
            Event::FilesChanged | Event::Reload => {
                let loaded = load(&cfg.desired_dir).await;
                if apply_load(loaded, &cfg.desired_dir, &mut desired, &shared) {
                    if let Some(d) = &desired {
                        alerter.set_config(AlertConfig::from_desired(d));
                        feed.update(&runner, d, &service_ips, true);
                        *project.write().expect("project") = d.project().to_string();
                    }
                    if let (Some(p), Some(d)) = (persisted_slot.as_mut(), desired.as_ref()) {
                        note_generation(p, d, &shared);
                    }
                    pending = true;
                    pull_next = true;
                }
            }
            Event::Docker(ev) => {
                debug!(kind = %ev.kind, action = %ev.action, "docker event");
                // Container names changed: refresh container_name_info right away.
                if ev.kind == "container"
                    && matches!(ev.action.as_str(), "start" | "die" | "destroy" | "rename")
                {
                    if let Some(d) = &desired {
                        for (name, j) in &d.jobs {
                            if j.spec.docker_names.is_some()
                                && feed.last.as_ref().is_some_and(|l| l.contains_key(name))
                            {
                                let _ = runner.trigger(name);
                            }
                        }
                    }
                }
                // Coalesce bursts (a replace emits many events) into one pass.
                if docker_hint_at.is_none() {
                    docker_hint_at = Some(tokio::time::Instant::now() + Duration::from_millis(150));
                }
            }
            Event::DockerDown(msg) => {
                // Once per outage (at start-up too), not on every retry.
                if engine.take().is_some() || !down_logged {
                    warn!(error = %msg, "docker engine unreachable; retrying with backoff");
                    down_logged = true;
                }
                *engine_slot.write().expect("engine slot") = None;
                shared.metrics.docker_up.set(0);
                shared.snapshot.write().expect("snapshot").docker_up = false;
            }
            Event::DockerUp(e) => {
                info!("docker engine connected");
                down_logged = false;
                *engine_slot.write().expect("engine slot") = Some(e.clone());
                engine = Some(e);
                shared.metrics.docker_up.set(1);
                shared.snapshot.write().expect("snapshot").docker_up = true;
                pending = true;
            }
            Event::Resync => {
                pending = true;
                pull_next = true;
            }
            Event::Requeue | Event::ApiReconcile => pending = true,
            Event::Done(f) => {
                in_flight = false;
                let Finished {
                    mut persisted,
                    result,
                    elapsed,
                    generation,
                } = *f;
                let ips = result.as_ref().ok().map(|p| p.service_ips.clone());
                let (failed, message) = finish_pass(
                    &shared,
                    &mut persisted,
                    result,
                    elapsed,
                    generation,
                    &state_dir,
                    &mut requeue_at,
                );
                alerter.observe(failed, &message);
                persisted_slot = Some(persisted);
                if let (Some(ips), Some(d)) = (ips, &desired) {
                    service_ips = ips;
                    feed.update(&runner, d, &service_ips, false);
                }
            }
        }
    }

    info!("shutting down");
    shutdown.cancel();
    runner.shutdown().await;
    tracker.close();
    // An in-flight pass finishes its current Docker call and reports; wait briefly.
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while in_flight {
            match rx.recv().await {
                Some(Event::Done(f)) => {
                    in_flight = false;
                    persisted_slot = Some(f.persisted);
                }
                Some(_) => {}
                None => break,
            }
        }
    })
    .await;
    if let Some(p) = &persisted_slot {
        p.save(&state_dir)?;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// One line per job for `obsctl status`: failing when its last finished run did not succeed.
fn job_summary(j: JobStatus) -> serde_json::Value {
    let failing = j
        .last_run
        .as_ref()
        .is_some_and(|r| !matches!(r.result, RunResult::Success | RunResult::Cancelled));
    serde_json::json!({
        "name": j.name,
        "kind": j.kind,
        "failing": failing,
        "last_success": j.last_success,
        "next_run": j.next_run,
        "last_error": j.last_error,
    })
}

#[derive(serde::Deserialize)]
struct RunQuery {
    #[serde(default)]
    wait: bool,
}

/// `POST /v1/jobs/{name}/run[?wait=true]`.
async fn run_job(
    axum::extract::State((s, _)): axum::extract::State<(Arc<Shared>, mpsc::Sender<Event>)>,
    axum::extract::Path(name): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<RunQuery>,
) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    use axum::http::StatusCode;
    let handle = match s.jobs.trigger(&name) {
        Ok(h) => h,
        Err(e @ TriggerError::UnknownJob(_)) => {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(serde_json::json!({"error": e.to_string()})),
            )
        }
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"error": e.to_string()})),
            )
        }
    };
    if !q.wait {
        return (
            StatusCode::OK,
            axum::Json(serde_json::json!({"job": name, "queued": handle.queued})),
        );
    }
    match handle.wait().await {
        Ok(r) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({
                "job": name,
                "result": r.result,
                "duration_seconds": r.duration_seconds,
                "error": r.error,
            })),
        ),
        Err(e) => (
            StatusCode::CONFLICT,
            axum::Json(serde_json::json!({"error": e.to_string()})),
        ),
    }
}

/// Loads the desired state off the async threads.
async fn load(dir: &Path) -> Result<DesiredState, String> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        load_dir(&dir, &LoadOptions::default()).map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(format!("loader panicked: {e}")))
}

/// Takes a load result: a valid state replaces the current one (returns true); an
/// invalid one is reported and the last good state is kept (returns false).
fn apply_load(
    loaded: Result<DesiredState, String>,
    dir: &Path,
    desired: &mut Option<Arc<DesiredState>>,
    shared: &Shared,
) -> bool {
    match loaded {
        Ok(d) => {
            for w in &d.warnings {
                warn!(warning = %w, "desired state");
            }
            info!(
                services = d.services.len(),
                jobs = d.jobs.len(),
                "desired state loaded"
            );
            shared.metrics.desired_state_valid.set(1);
            shared
                .snapshot
                .write()
                .expect("snapshot")
                .desired_state_error = None;
            *desired = Some(Arc::new(d));
            true
        }
        Err(e) => {
            error!(dir = %dir.display(), errors = %e, "desired state invalid; keeping the last good one");
            shared.metrics.desired_state_valid.set(0);
            shared
                .snapshot
                .write()
                .expect("snapshot")
                .desired_state_error = Some(e);
            false
        }
    }
}

/// Bumps the generation when the desired state's content changed; publishes it.
fn note_generation(p: &mut Persisted, d: &DesiredState, shared: &Shared) -> u64 {
    let generation = p.observe_desired(&d.digest);
    shared.metrics.desired_generation.set(generation as i64);
    shared
        .metrics
        .applied_generation
        .set(p.applied_generation as i64);
    let mut snap = shared.snapshot.write().expect("snapshot");
    snap.desired_generation = generation;
    snap.applied_generation = p.applied_generation;
    generation
}

fn finish_pass(
    shared: &Shared,
    persisted: &mut Persisted,
    result: Result<reconcile::Pass, String>,
    elapsed: Duration,
    generation: u64,
    state_dir: &Path,
    requeue_at: &mut Option<tokio::time::Instant>,
) -> (bool, String) {
    let m = &shared.metrics;
    let mut outcome = (false, String::new());
    m.reconcile_duration.observe(elapsed.as_secs_f64());
    let now = state::now_ms();
    let mut snap = shared.snapshot.write().expect("snapshot");
    snap.last_reconcile_ms = Some(now);
    match result {
        Err(e) => {
            warn!(error = %e, "reconcile failed");
            m.reconcile_total
                .get_or_create(&ResultLabel {
                    result: "error".into(),
                })
                .inc();
            *requeue_at = Some(tokio::time::Instant::now() + Duration::from_secs(5));
        }
        Ok(pass) => {
            let report = pass.report.clone().unwrap_or_default();
            for (action, ok) in &report.actions {
                m.action(action, *ok);
            }
            for (svc, r) in &report.services {
                match r {
                    ServiceResult::Done { actions } if !actions.is_empty() => {
                        info!(service = %svc, actions = %actions.join("+"), "converged")
                    }
                    ServiceResult::Failed { action, error } => {
                        warn!(service = %svc, action, error = %error, "action failed")
                    }
                    ServiceResult::Waiting { on } => debug!(service = %svc, on = %on, "waiting"),
                    _ => {}
                }
            }
            for e in &report.infra_errors {
                warn!(error = %e, "infrastructure action failed");
            }
            for (image, e) in &pass.pull_errors {
                warn!(image = %image, error = %e, "pull failed; using the local image if present");
            }
            let failed = pass.failed();
            if failed {
                let first = report
                    .services
                    .iter()
                    .find_map(|(svc, r)| match r {
                        ServiceResult::Failed { error, .. } => Some(format!("{svc}: {error}")),
                        ServiceResult::BackingOff { .. } => persisted
                            .backoff
                            .get(svc)
                            .and_then(|b| b.last_error.as_ref())
                            .map(|e| format!("{svc}: {e}")),
                        _ => None,
                    })
                    .or_else(|| report.infra_errors.first().cloned())
                    .unwrap_or_default();
                outcome = (true, first);
            }
            m.reconcile_total
                .get_or_create(&ResultLabel {
                    result: if failed { "error" } else { "success" }.into(),
                })
                .inc();
            if !failed {
                m.last_success.set(now as f64 / 1000.0);
                snap.last_success_ms = Some(now);
                if pass.plan.is_noop() && !report.needs_requeue() {
                    persisted.applied_generation = generation;
                }
            }
            m.applied_generation
                .set(persisted.applied_generation as i64);
            snap.applied_generation = persisted.applied_generation;
            m.set_resources(&pass.plan.resources);
            snap.resources = reconcile::status_rows(&pass.plan, persisted);
            // Something changed or waits: look again soon. Backoff entries decide when.
            let again = !pass.plan.is_noop() || report.needs_requeue();
            if again {
                let soonest_retry = persisted
                    .backoff
                    .values()
                    .map(|b| b.retry_at_ms)
                    .filter(|t| *t > now)
                    .min()
                    .map(|t| (t - now) as u64);
                let delay = match (report.needs_requeue(), soonest_retry) {
                    (_, Some(ms)) if failed => Duration::from_millis(ms.max(100)),
                    (true, _) => Duration::from_millis(500),
                    _ => Duration::from_millis(50),
                };
                *requeue_at = Some(tokio::time::Instant::now() + delay);
            }
        }
    }
    if let Err(e) = persisted.save(state_dir) {
        error!(error = %e, "cannot save state");
    }
    outcome
}

async fn connect_engine() -> Result<Engine, String> {
    Engine::open().await.map_err(|e| e.detail())
}

/// Connects to the engine, follows its event stream, and reconnects with capped
/// exponential backoff whenever the engine goes away.
/// Whether an engine event concerns this stack. Healthcheck probes (`exec_*`) and other
/// projects' objects are noise: at 100 services they would keep the loop busy.
fn relevant(ev: &EngineEvent, project: &str) -> bool {
    if ev.action.starts_with("exec_") {
        return false;
    }
    if ev.labels.get(labels::STACK).map(String::as_str) == Some(project) {
        return true;
    }
    // Unowned objects matter when they hold (or free) one of our names: a name
    // conflict removed by hand, a network deleted by hand.
    let prefix = match ev.kind.as_str() {
        "container" => format!("{project}-"),
        "network" | "volume" => format!("{project}_"),
        _ => return false,
    };
    ev.labels
        .get("name")
        .is_some_and(|n| n.starts_with(&prefix))
}

async fn watch_docker(
    tx: mpsc::Sender<Event>,
    project: Arc<RwLock<String>>,
    shutdown: CancellationToken,
) {
    use backon::{BackoffBuilder, ExponentialBuilder};
    let builder = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times();
    let mut backoff = builder.build();
    loop {
        let engine = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = connect_engine() => r,
        };
        match engine {
            Ok(e) => {
                backoff = builder.build();
                // Subscribe first, then announce: no event between the two is lost.
                let mut events = Box::pin(e.events());
                if tx.send(Event::DockerUp(e)).await.is_err() {
                    return;
                }
                loop {
                    let next = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        n = events.next() => n,
                    };
                    match next {
                        Some(Ok(ev)) => {
                            let ours = relevant(&ev, &project.read().expect("project"));
                            if ours && tx.send(Event::Docker(ev)).await.is_err() {
                                return;
                            }
                        }
                        Some(Err(err)) => {
                            let _ = tx.send(Event::DockerDown(err.to_string())).await;
                            break;
                        }
                        None => {
                            let _ = tx
                                .send(Event::DockerDown("event stream ended".into()))
                                .await;
                            break;
                        }
                    }
                }
            }
            Err(err) => {
                if tx.send(Event::DockerDown(err)).await.is_err() {
                    return;
                }
            }
        }
        let delay = backoff.next().unwrap_or(Duration::from_secs(30));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Watches the desired-state directory (recursively: config files count) and sends a
/// debounced `FilesChanged`. Watching the directory, not the files, keeps working when
/// editors save by writing a new file and renaming it over the old one.
async fn watch_files(dir: PathBuf, tx: mpsc::Sender<Event>, shutdown: CancellationToken) {
    use notify::{RecursiveMode, Watcher};
    let (ntx, mut nrx) = mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if !matches!(ev.kind, notify::EventKind::Access(_)) {
                let _ = ntx.send(());
            }
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            error!(error = %e, "cannot watch the desired-state directory; relying on resync and SIGHUP");
            return;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::Recursive) {
        error!(error = %e, dir = %dir.display(), "cannot watch the desired-state directory; relying on resync and SIGHUP");
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            got = nrx.recv() => if got.is_none() { return },
        }
        // Debounce: wait until the burst of writes is over.
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                more = tokio::time::timeout(Duration::from_millis(300), nrx.recv()) => match more {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                },
            }
        }
        if tx.send(Event::FilesChanged).await.is_err() {
            return;
        }
    }
}

async fn signals(tx: mpsc::Sender<Event>, shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup.recv() => { info!("SIGHUP: reloading desired state"); let _ = tx.send(Event::Reload).await; }
            _ = term.recv() => { shutdown.cancel(); return; }
            _ = int.recv() => { shutdown.cancel(); return; }
        }
    }
}

async fn serve_metrics(
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> Result<impl std::future::Future<Output = ()>, String> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    info!(%addr, "serving /metrics and /healthz");
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(
                |axum::extract::State(s): axum::extract::State<Arc<Shared>>| async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        crate::daemon::metrics::encode(&s.registry),
                    )
                },
            ),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(shared);
    Ok(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    })
}

async fn serve_api(
    socket: &Path,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Event>,
    shutdown: CancellationToken,
) -> Result<impl std::future::Future<Output = ()>, String> {
    use axum::routing::{get, post};
    use std::os::unix::fs::PermissionsExt;
    // We hold the state-directory lock, so a socket file left here is stale.
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket)
        .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot chmod {}: {e}", socket.display()))?;
    info!(socket = %socket.display(), "serving the obsctl API");
    let app = axum::Router::new()
        .route(
            "/v1/status",
            get(
                |axum::extract::State((s, _)): axum::extract::State<(
                    Arc<Shared>,
                    mpsc::Sender<Event>,
                )>| async move {
                    let mut snap = s.snapshot.read().expect("snapshot").clone();
                    snap.jobs = s.jobs.status().into_iter().map(job_summary).collect();
                    axum::Json(snap)
                },
            ),
        )
        .route(
            "/v1/jobs",
            get(
                |axum::extract::State((s, _)): axum::extract::State<(
                    Arc<Shared>,
                    mpsc::Sender<Event>,
                )>| async move {
                    axum::Json(serde_json::json!({"jobs": s.jobs.status()}))
                },
            ),
        )
        .route("/v1/jobs/{name}/run", post(run_job))
        .route(
            "/v1/reconcile",
            post(
                |axum::extract::State((_, tx)): axum::extract::State<(
                    Arc<Shared>,
                    mpsc::Sender<Event>,
                )>| async move {
                    let _ = tx.send(Event::ApiReconcile).await;
                    axum::Json(serde_json::json!({"queued": true}))
                },
            ),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state((shared, tx));
    Ok(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    })
}
