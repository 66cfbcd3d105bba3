//! The daemon: one closed event loop that keeps the host converged.
//!
//! Everything that can wake the loop is an [`Event`]: desired-state file changes
//! (debounced), a finished load, Docker events (hints only — the reconcile re-reads
//! everything), the periodic resync, SIGHUP, API requests, and the completion of a
//! reconcile. The loop's state is one [`Daemon`]; [`Daemon::handle`] advances it by one
//! event and never blocks: loads and passes run as tasks and report back as events. At
//! most one pass is in flight and at most one is pending, so a burst of events collapses
//! into a single pass. Start-up is just "desired state changed" from nothing.
//!
//! `--once` is [`once`]: one pass, no loop.

pub(crate) mod alerting;
mod image_updates;
mod jobs_feed;
pub mod jobs_only;
pub(crate) mod metrics;
mod pacing;
mod server;
mod watch;

use crate::api::wire;
use crate::daemon::alerting::{AlertConfig, Alerter};
use crate::daemon::metrics::{Metrics, ResultLabel};
use crate::desired::load::{load_dir, LoadOptions};
use crate::desired::DesiredState;
use crate::docker::engine::Engine;
use crate::docker::EngineEvent;
use crate::jobs::{
    BodyExecutor, ContainerNames, JobContext, JobMetrics, JobRunner, RunnerConfig, SystemClock,
};
use crate::reconcile::exec::ServiceResult;
use crate::reconcile::{self, Pass};
use crate::secret::HostKey;
use crate::state::{self, Persisted};
use jobs_feed::{EngineNames, EngineSlot, JobsFeed};
use pacing::{next_look, PassOutcome};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, info_span, warn, Instrument};

/// Daemon settings from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    pub desired_dir: PathBuf,
    pub state_dir: Option<PathBuf>,
    /// Addresses for `/metrics` and `/healthz` (none: not served).
    pub listen: Vec<SocketAddr>,
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

/// Everything that wakes the loop.
enum Event {
    /// The desired-state directory changed (debounced).
    FilesChanged,
    /// SIGHUP.
    Reload,
    /// A load finished.
    Loaded(Box<Result<DesiredState, String>>),
    Docker(EngineEvent),
    DockerDown(String),
    DockerUp(Engine),
    Resync,
    /// A requeue or Docker-hint deadline passed.
    Timer,
    /// `POST /v1/reconcile`.
    ApiReconcile,
    /// A pass finished.
    Done(Box<Finished>),
    /// The image update checker made checks (`update.image`).
    ImageChecks(Box<image_updates::Checked>),
}

/// A finished pass, with the persisted state it carried.
struct Finished {
    persisted: Persisted,
    result: Result<Pass, String>,
    elapsed: Duration,
    generation: u64,
}

/// What the servers read: the API's status and the metrics.
struct Shared {
    /// What `GET /v1/status` answers (jobs are filled in per request).
    status: RwLock<wire::Status>,
    registry: Registry,
    metrics: Metrics,
    jobs: JobRunner,
    /// Services whose rolled-back spec an operator asked to retry
    /// (`obsctl rollout retry`); the next pass forgets their rollback first.
    rollout_retries: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

/// The reconcile slot. The persisted state travels with the pass, so exactly one
/// writer holds it at any time.
enum PassSlot {
    Idle(Persisted),
    Running,
}

/// The load slot: at most one load runs; changes during a load ask for another.
enum LoadSlot {
    Idle,
    Running { again: bool },
}

/// The loop's whole state.
struct Daemon {
    /// Where the desired state is read from.
    desired_dir: PathBuf,
    /// Where state is persisted (locked by us for our lifetime).
    state_dir: PathBuf,
    /// Keys the spec hashes.
    key: HostKey,
    /// Read by the servers.
    shared: Arc<Shared>,
    /// Tasks send their results back to the loop through this.
    tx: mpsc::Sender<Event>,
    /// Every task the daemon spawned, awaited at shutdown.
    tracker: TaskTracker,
    runner: JobRunner,
    feed: JobsFeed,
    alerter: Alerter,
    /// The last good desired state; `None` until one loads.
    desired: Option<Arc<DesiredState>>,
    /// What the Docker watcher lets through (project, wanted names).
    filter: Arc<RwLock<watch::EventFilter>>,
    /// The engine while it is reachable (shared with the docker-names job).
    engine: EngineSlot,
    /// The current engine outage was logged already.
    down_logged: bool,
    pass: PassSlot,
    load: LoadSlot,
    /// A pass is wanted.
    pending: bool,
    /// The next pass pulls `pullPolicy: Always` images first (start, reload, resync —
    /// not every requeue).
    pull_next: bool,
    /// The periodic full resync, at the current Stack's `resyncPeriod`.
    resync: tokio::time::Interval,
    resync_period: Duration,
    /// Look again at this time (decided by [`next_look`] after each pass).
    requeue_at: Option<tokio::time::Instant>,
    /// Docker events are coalesced: a replace emits many; one pass follows them.
    docker_hint_at: Option<tokio::time::Instant>,
    /// Container address per service, from the latest pass (job URL resolution).
    service_ips: BTreeMap<String, String>,
    /// The images the checker watches (`update.image`), from the last good load.
    image_targets: tokio::sync::watch::Sender<Option<image_updates::Targets>>,
    /// The checker's latest results, handed to every pass.
    image_checks: BTreeMap<String, state::ImageCheck>,
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
    let persisted = Persisted::load(&state_dir)?;
    if cfg.once {
        return once(&cfg.desired_dir, first, &state_dir, &key, persisted).await;
    }
    let (mut daemon, rx) = Daemon::start(&cfg, state_dir, key, persisted, &shutdown).await?;
    daemon.loaded(first);
    daemon.pending = true;
    daemon.run(rx, &shutdown).await
}

/// `--once`: one pass over a valid desired state, then exit.
async fn once(
    dir: &Path,
    first: Result<DesiredState, String>,
    state_dir: &Path,
    key: &HostKey,
    mut persisted: Persisted,
) -> Result<(), DaemonError> {
    let desired = first.map_err(|errors| DaemonError::Invalid {
        dir: dir.to_path_buf(),
        errors,
    })?;
    let engine = watch::connect_engine().await.map_err(DaemonError::Io)?;
    let generation = persisted.observe_desired(&desired.digest);
    let pass = reconcile::pass(&engine, &desired, key, &mut persisted, true, true)
        .await
        .map_err(|e| DaemonError::Failed(e.to_string()))?;
    if pass.converged() {
        persisted.applied_generation = generation;
    }
    persisted.save(state_dir)?;
    if pass.failed() {
        return Err(DaemonError::Failed(
            "one or more services failed; see the log".into(),
        ));
    }
    Ok(())
}

impl Daemon {
    /// Registers the metrics, starts the job runner, the servers and the watchers.
    async fn start(
        cfg: &Config,
        state_dir: PathBuf,
        key: HostKey,
        persisted: Persisted,
        shutdown: &CancellationToken,
    ) -> Result<(Daemon, mpsc::Receiver<Event>), DaemonError> {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let job_metrics = JobMetrics::register(&mut registry);

        let engine: EngineSlot = Arc::new(RwLock::new(None));
        let names: Arc<dyn ContainerNames> = Arc::new(EngineNames(engine.clone()));
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
        let shared = Arc::new(Shared {
            status: RwLock::new(wire::Status::default()),
            registry,
            metrics,
            jobs: runner.clone(),
            rollout_retries: Default::default(),
        });
        let (tx, rx) = mpsc::channel::<Event>(1024);
        let tracker = TaskTracker::new();

        let socket = cfg
            .socket
            .clone()
            .unwrap_or_else(|| crate::api::socket_in(&state_dir));
        let api = server::serve_api(&socket, shared.clone(), tx.clone(), shutdown.clone())
            .await
            .map_err(DaemonError::Io)?;
        tracker.spawn(api);
        for &addr in &cfg.listen {
            let t = server::serve_metrics(addr, shared.clone(), shutdown.clone())
                .await
                .map_err(DaemonError::Io)?;
            tracker.spawn(t);
        }
        let filter = Arc::new(RwLock::new(watch::EventFilter::default()));
        tracker.spawn(watch::watch_files(
            cfg.desired_dir.clone(),
            tx.clone(),
            shutdown.clone(),
        ));
        tracker.spawn(watch::watch_docker(
            tx.clone(),
            filter.clone(),
            shutdown.clone(),
        ));
        tracker.spawn(watch::signals(tx.clone(), shutdown.clone()));
        let (image_targets, targets_rx) = tokio::sync::watch::channel(None);
        tracker.spawn(image_updates::run(
            state_dir.clone(),
            engine.clone(),
            targets_rx,
            tx.clone(),
            shutdown.clone(),
        ));

        let resync_period = Duration::from_secs(300);
        let daemon = Daemon {
            desired_dir: cfg.desired_dir.clone(),
            feed: JobsFeed {
                exec,
                names,
                state_dir: state_dir.clone(),
                last: None,
            },
            state_dir,
            key,
            shared,
            tx,
            tracker,
            runner,
            alerter: Alerter::new(AlertConfig::default()),
            desired: None,
            image_targets,
            image_checks: persisted.image_checks.clone(),
            filter,
            engine,
            down_logged: false,
            pass: PassSlot::Idle(persisted),
            load: LoadSlot::Idle,
            pending: false,
            pull_next: true,
            resync: resync_interval(resync_period),
            resync_period,
            requeue_at: None,
            docker_hint_at: None,
            service_ips: BTreeMap::new(),
        };
        Ok((daemon, rx))
    }

    /// The loop: start a pass when one is due, wait for the next event, handle it.
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Event>,
        shutdown: &CancellationToken,
    ) -> Result<(), DaemonError> {
        loop {
            self.start_pass_if_due();
            let wake = [self.requeue_at, self.docker_hint_at]
                .into_iter()
                .flatten()
                .min();
            let event = tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = rx.recv() => match ev { Some(e) => e, None => break },
                _ = self.resync.tick() => Event::Resync,
                _ = sleep_until(wake) => Event::Timer,
            };
            self.handle(event);
        }
        self.shut_down(rx, shutdown).await
    }

    /// Advances the state by one event. Never blocks: loads and passes are tasks.
    fn handle(&mut self, event: Event) {
        match event {
            Event::FilesChanged | Event::Reload => self.start_load(),
            Event::Loaded(result) => {
                if let LoadSlot::Running { again: true } = self.load {
                    self.load = LoadSlot::Idle;
                    self.start_load();
                } else {
                    self.load = LoadSlot::Idle;
                    self.shared.status.write().expect("status").loading = false;
                }
                self.loaded(*result);
            }
            Event::Docker(ev) => {
                debug!(kind = %ev.kind, action = %ev.action, "docker event");
                if ev.kind == "container"
                    && matches!(ev.action.as_str(), "start" | "die" | "destroy" | "rename")
                {
                    self.refresh_container_names();
                }
                self.docker_hint_at
                    .get_or_insert_with(|| tokio::time::Instant::now() + DOCKER_HINT_DELAY);
            }
            Event::DockerDown(msg) => {
                // Once per outage (at start-up too), not on every retry.
                let had = self.engine.write().expect("engine slot").take().is_some();
                if had || !self.down_logged {
                    warn!(error = %msg, "docker engine unreachable; retrying with backoff");
                    self.down_logged = true;
                }
                self.shared.metrics.docker_up.set(0);
                self.shared.status.write().expect("status").docker_up = false;
            }
            Event::DockerUp(e) => {
                info!("docker engine connected");
                self.down_logged = false;
                *self.engine.write().expect("engine slot") = Some(e);
                self.shared.metrics.docker_up.set(1);
                self.shared.status.write().expect("status").docker_up = true;
                self.pending = true;
            }
            Event::Resync => {
                self.pending = true;
                self.pull_next = true;
            }
            Event::Timer => {
                let now = tokio::time::Instant::now();
                if self.docker_hint_at.is_some_and(|t| t <= now) {
                    self.docker_hint_at = None;
                }
                if self.requeue_at.is_some_and(|t| t <= now) {
                    self.requeue_at = None;
                }
                self.pending = true;
            }
            Event::ApiReconcile => self.pending = true,
            Event::Done(f) => self.finished(*f),
            Event::ImageChecks(c) => self.image_checked(*c),
        }
    }

    /// Loads the desired state in a task; a change during a load asks for one more.
    fn start_load(&mut self) {
        match &mut self.load {
            LoadSlot::Running { again } => *again = true,
            LoadSlot::Idle => {
                self.load = LoadSlot::Running { again: false };
                self.shared.status.write().expect("status").loading = true;
                let dir = self.desired_dir.clone();
                let tx = self.tx.clone();
                self.tracker.spawn(async move {
                    let _ = tx.send(Event::Loaded(Box::new(load(&dir).await))).await;
                });
            }
        }
    }

    /// Takes a load result: a valid state replaces the current one and asks for a pass;
    /// an invalid one is reported and the last good state is kept.
    fn loaded(&mut self, result: Result<DesiredState, String>) {
        let d = match result {
            Ok(d) => d,
            Err(e) => {
                error!(dir = %self.desired_dir.display(), errors = %e, "desired state invalid; keeping the last good one");
                self.shared.metrics.desired_state_valid.set(0);
                self.shared
                    .status
                    .write()
                    .expect("status")
                    .desired_state_error = Some(e);
                return;
            }
        };
        for w in &d.warnings {
            warn!(warning = %w, "desired state");
        }
        info!(
            services = d.services.len(),
            jobs = d.jobs.len(),
            "desired state loaded"
        );
        self.shared.metrics.desired_state_valid.set(1);
        self.shared
            .status
            .write()
            .expect("status")
            .desired_state_error = None;
        self.alerter.set_config(AlertConfig::from_desired(&d));
        self.feed.update(&self.runner, &d, &self.service_ips, true);
        *self.filter.write().expect("event filter") = watch::EventFilter::of(&d);
        let period = d.stack.spec.resync_period.0.max(Duration::from_secs(5));
        if period != self.resync_period {
            self.resync_period = period;
            self.resync = resync_interval(period);
        }
        match &mut self.pass {
            PassSlot::Idle(p) => {
                note_generation(p, &d, &self.shared);
            }
            // The running pass applies the previous state: until the next pass starts
            // (and bumps the generation), this one is not applied.
            PassSlot::Running => {
                if self
                    .desired
                    .as_ref()
                    .is_none_or(|old| old.digest != d.digest)
                {
                    self.shared
                        .status
                        .write()
                        .expect("status")
                        .new_desired_pending = true;
                }
            }
        }
        self.shared.metrics.seed_resources(&d);
        self.shared.metrics.seed_image_updates(&d);
        self.image_targets
            .send_replace(Some(image_updates::targets(&d)));
        self.desired = Some(Arc::new(d));
        self.pending = true;
        self.pull_next = true;
    }

    /// Takes a round of registry checks: metrics, the next pass's input, and for images
    /// `auto` pulled, the services' holds cleared (a new image gets its one rollout).
    fn image_checked(&mut self, c: image_updates::Checked) {
        let m = &self.shared.metrics;
        for r in &c.results {
            m.image_check(r);
        }
        for e in &c.errors {
            m.image_check_error(e);
        }
        self.image_checks = c.checks;
        if !c.pulled.is_empty() {
            let mut retries = self.shared.rollout_retries.lock().expect("retries");
            retries.extend(c.pulled);
        }
        self.pending = true;
    }

    /// Re-runs the docker-names jobs now: container names changed.
    fn refresh_container_names(&self) {
        let Some(d) = &self.desired else { return };
        for (name, j) in &d.jobs {
            if j.spec.docker_names.is_some() && self.feed.scheduled(name) {
                let _ = self.runner.trigger(name);
            }
        }
    }

    /// Starts a pass when one is wanted, none is running, and there is a desired state
    /// and an engine to converge.
    fn start_pass_if_due(&mut self) {
        if !self.pending || matches!(self.pass, PassSlot::Running) {
            return;
        }
        let engine = self.engine.read().expect("engine slot").clone();
        let (Some(d), Some(e)) = (self.desired.clone(), engine) else {
            return;
        };
        let PassSlot::Idle(mut p) = std::mem::replace(&mut self.pass, PassSlot::Running) else {
            unreachable!("checked above");
        };
        self.pending = false;
        for name in std::mem::take(&mut *self.shared.rollout_retries.lock().expect("retries")) {
            p.rollout.rollbacks.remove(&name);
            p.rollout.preflight_failures.remove(&name);
            p.rollout.crash_loops.remove(&name);
        }
        p.image_checks = self.image_checks.clone();
        let pull = std::mem::replace(&mut self.pull_next, false);
        let generation = note_generation(&mut p, &d, &self.shared);
        let key = self.key.clone();
        let tx = self.tx.clone();
        let span = info_span!("reconcile", generation);
        self.tracker.spawn(
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

    /// Records a finished pass: metrics, status, the generation rule, persisted state,
    /// alerting, job addresses, and when to look again.
    fn finished(&mut self, f: Finished) {
        let Finished {
            mut persisted,
            result,
            elapsed,
            generation,
        } = f;
        let now = state::now_ms();
        let m = &self.shared.metrics;
        m.reconcile_duration.observe(elapsed.as_secs_f64());
        let mut alert = (false, String::new());
        let outcome = match &result {
            Err(e) => {
                warn!(error = %e, "reconcile failed");
                m.reconcile_total
                    .get_or_create(&ResultLabel {
                        result: "error".into(),
                    })
                    .inc();
                let mut st = self.shared.status.write().expect("status");
                st.last_reconcile_ms = Some(now);
                st.passes_since_start += 1;
                st.last_pass_error = Some(e.clone());
                PassOutcome::errored()
            }
            Ok(pass) => {
                log_pass(pass);
                let failed = pass.failed();
                if failed {
                    alert = (true, first_failure(pass, &persisted));
                }
                m.reconcile_total
                    .get_or_create(&ResultLabel {
                        result: if failed { "error" } else { "success" }.into(),
                    })
                    .inc();
                for (action, ok) in pass.report.iter().flat_map(|r| &r.actions) {
                    m.action(action, *ok);
                }
                for service in pass.report.iter().flat_map(|r| &r.rollbacks) {
                    m.rollback(service);
                }
                for service in pass.report.iter().flat_map(|r| &r.preflight_failures) {
                    m.preflight_failure(service);
                }
                if !failed {
                    m.last_success.set(now as f64 / 1000.0);
                }
                if pass.converged() {
                    persisted.applied_generation = generation;
                }
                m.applied_generation
                    .set(persisted.applied_generation as i64);
                m.set_resources(&pass.plan.resources);
                m.set_image_updates(&pass.plan.resources);
                let mut st = self.shared.status.write().expect("status");
                st.last_reconcile_ms = Some(now);
                st.passes_since_start += 1;
                st.last_pass_error = None;
                if !failed {
                    st.last_success_ms = Some(now);
                }
                st.applied_generation = persisted.applied_generation;
                st.resources = reconcile::status_rows(&pass.plan, &persisted);
                PassOutcome::of(pass, &persisted, now)
            }
        };
        if let Err(e) = persisted.save(&self.state_dir) {
            error!(error = %e, "cannot save state");
        }
        self.requeue_at = next_look(&outcome).map(|d| tokio::time::Instant::now() + d);
        self.alerter.observe(alert.0, &alert.1);
        self.pass = PassSlot::Idle(persisted);
        if let (Ok(pass), Some(d)) = (result, &self.desired) {
            self.service_ips = pass.service_ips;
            self.feed.update(&self.runner, d, &self.service_ips, false);
        }
    }

    /// Stops the runner and the tasks; waits briefly for an in-flight pass so the
    /// persisted state it carries is saved.
    async fn shut_down(
        mut self,
        mut rx: mpsc::Receiver<Event>,
        shutdown: &CancellationToken,
    ) -> Result<(), DaemonError> {
        info!("shutting down");
        shutdown.cancel();
        self.runner.shutdown().await;
        self.tracker.close();
        // An in-flight pass finishes its current Docker call and reports; wait briefly.
        let _ = tokio::time::timeout(Duration::from_secs(30), async {
            while matches!(self.pass, PassSlot::Running) {
                match rx.recv().await {
                    Some(Event::Done(f)) => self.pass = PassSlot::Idle(f.persisted),
                    Some(_) => {}
                    None => break,
                }
            }
        })
        .await;
        if let PassSlot::Idle(p) = &self.pass {
            p.save(&self.state_dir)?;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
        let _ = std::fs::remove_file(crate::api::socket_in(&self.state_dir));
        Ok(())
    }
}

/// How long Docker events are coalesced before a pass.
const DOCKER_HINT_DELAY: Duration = Duration::from_millis(150);

fn resync_interval(period: Duration) -> tokio::time::Interval {
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

async fn sleep_until(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// A load that takes longer is given up (reported as invalid, the last good state
/// kept): the loader never blocks on what it reads, so only a pathologically slow disk
/// gets here, and repair goes on meanwhile either way.
const LOAD_DEADLINE: Duration = Duration::from_secs(60);

/// Loads the desired state off the async threads, within [`LOAD_DEADLINE`].
async fn load(dir: &Path) -> Result<DesiredState, String> {
    let dir = dir.to_path_buf();
    let task = tokio::task::spawn_blocking(move || {
        load_dir(&dir, &LoadOptions::default()).map_err(|e| e.to_string())
    });
    match tokio::time::timeout(LOAD_DEADLINE, task).await {
        Ok(r) => r.unwrap_or_else(|e| Err(format!("loader panicked: {e}"))),
        Err(_) => Err(format!(
            "loading took longer than {}s; gave up (the last good desired state is kept)",
            LOAD_DEADLINE.as_secs()
        )),
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
    let mut st = shared.status.write().expect("status");
    st.desired_generation = generation;
    st.applied_generation = p.applied_generation;
    st.new_desired_pending = false;
    generation
}

fn log_pass(pass: &Pass) {
    let report = pass.report.clone().unwrap_or_default();
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
}

/// The first failure of a failed pass, in one line, for the alert.
fn first_failure(pass: &Pass, persisted: &Persisted) -> String {
    let Some(report) = &pass.report else {
        return String::new();
    };
    report
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
        .unwrap_or_default()
}
