//! The job runner: when each job runs, what happens when runs collide, and what is
//! remembered about them.
//!
//! Semantics (the contract `obsctl jobs` documents):
//! - **Schedule**: `@every` / cron in UTC ([`Schedule`]). A run starts at its slot plus a
//!   random delay of at most `jitter`. A job seen for the first time (no state file)
//!   first runs at the first slot after now; `obsctl jobs run` runs it immediately.
//! - **Timeout**: a run still going after `timeout` is cancelled; result `timeout`.
//! - **Concurrency**: a slot that comes due while a run is in flight is skipped under
//!   `Forbid` (counted in `skippedRuns`) and cancels the running one under `Replace`.
//! - **Catch-up**: the state file remembers the last handled slot. When a job appears
//!   (at startup, or when added) and slots were missed meanwhile, the most recent missed
//!   slot is run immediately if it is at most `startingDeadline` late; otherwise it is
//!   skipped. Only one run is made up, however many slots were missed.
//! - **Manual trigger** ([`JobRunner::trigger`]): starts now if idle. While a run is in
//!   flight, `Forbid` queues one manual run to start when it finishes (further triggers
//!   join that queued run: at most one in flight and one pending); `Replace` cancels the
//!   running one. `suspend` stops scheduling only; triggers still work.
//! - **Changes** ([`JobRunner::set_jobs`], the one code path for startup and reloads):
//!   new jobs are added as above; removed jobs have their run cancelled, their pending
//!   trigger dropped and their metric series removed (the state file stays, so re-adding
//!   restores history); a changed job keeps its history and in-flight run (which finishes
//!   with the spec it started with) and is re-planned from now if its schedule, jitter or
//!   `suspend` changed.
//! - **Isolation**: each run is its own task and its body another (a panic is caught as
//!   a failed run); nothing here waits for a body while holding the state lock, so
//!   callers are never blocked by a job.
//! - **Shutdown**: cancelling the root token cancels every run (recorded as `cancelled`)
//!   and stops the driver; [`JobRunner::shutdown`] also waits for them.
//!
//! Time: timers use tokio's clock; calendar time comes from the injected [`Clock`]. The
//! driver never sleeps more than a minute, so a wall-clock jump is noticed promptly.

use super::clock::{unix_seconds, Clock};
use super::history::{self, JobState, RunRecord, RunResult, RunTrigger};
use super::metrics::JobMetrics;
use super::{error_chain, Executor, JobRun};
use crate::desired::model::job::ConcurrencyPolicy;
use crate::desired::model::JobSpec;
use crate::desired::schedule::Schedule;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Longest the driver sleeps before re-reading the wall clock.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Where the runner keeps state and how it tells the time.
#[derive(Clone)]
pub struct RunnerConfig {
    /// obsd's state directory; job state goes to `<state_dir>/jobs/<name>.json`.
    pub state_dir: PathBuf,
    pub clock: Arc<dyn Clock>,
}

/// Handle to the job runner. Cheap to clone; all clones drive the same jobs.
#[derive(Clone)]
pub struct JobRunner {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the driver after anything that may move the next due time.
    wake: Notify,
    clock: Arc<dyn Clock>,
    executor: Arc<dyn Executor>,
    metrics: JobMetrics,
    state_dir: PathBuf,
    /// Root of every run's cancellation token.
    shutdown: CancellationToken,
    /// The driver and every run task, for a graceful shutdown.
    tracker: TaskTracker,
}

#[derive(Default)]
struct State {
    jobs: BTreeMap<String, Entry>,
    /// Identifies runs so a replaced run's completion is not mistaken for the current one.
    next_id: u64,
}

struct Entry {
    spec: Arc<JobSpec>,
    schedule: Result<Schedule, String>,
    /// The next slot (nominal time) and when it actually starts (slot + jitter).
    next_due: Option<DateTime<Utc>>,
    next_start: Option<DateTime<Utc>>,
    last_scheduled: Option<DateTime<Utc>>,
    last_success: Option<DateTime<Utc>>,
    /// Oldest first, at most `historyLimit` (at least 1).
    history: VecDeque<RunRecord>,
    running: Option<Running>,
    /// A manual run queued behind the running one (Forbid); its result goes here.
    pending: Option<watch::Sender<Option<RunRecord>>>,
    /// Slots skipped under Forbid since obsd started.
    skipped: u64,
}

struct Running {
    id: u64,
    cancel: CancellationToken,
    /// Why it was cancelled, for the history record.
    reason: Arc<OnceLock<&'static str>>,
    started_at: DateTime<Utc>,
    trigger: RunTrigger,
}

impl Running {
    fn cancel(&self, reason: &'static str) {
        let _ = self.reason.set(reason);
        self.cancel.cancel();
    }
}

impl Entry {
    fn history_limit(&self) -> usize {
        self.spec.history_limit.max(1) as usize
    }

    fn push_history(&mut self, r: RunRecord) {
        self.history.push_back(r);
        self.trim_history();
    }

    fn trim_history(&mut self) {
        while self.history.len() > self.history_limit() {
            self.history.pop_front();
        }
    }

    fn persisted(&self) -> JobState {
        JobState {
            version: 0,
            last_scheduled: self.last_scheduled,
            last_success: self.last_success,
            history: self.history.iter().cloned().collect(),
        }
    }

    /// Plan the first slot after `after` that is also after `now` (none when suspended
    /// or the schedule is invalid).
    fn plan_next(&mut self, after: DateTime<Utc>, now: DateTime<Utc>) {
        self.next_due = None;
        self.next_start = None;
        if self.spec.suspend {
            return;
        }
        let Ok(s) = &self.schedule else { return };
        let next = match s.next_after(after) {
            Some(n) if n <= now => s.next_after(now),
            other => other,
        };
        self.next_due = next;
        self.next_start = next.map(|t| t + jitter(self.spec.jitter.map(|d| d.0)));
    }
}

fn jitter(max: Option<Duration>) -> chrono::Duration {
    let ms = max
        .map(|d| d.as_millis().min(u64::MAX as u128) as u64)
        .unwrap_or(0);
    if ms == 0 {
        return chrono::Duration::zero();
    }
    chrono::Duration::milliseconds(rand::rng().random_range(0..=ms) as i64)
}

/// A triggered run; [`RunHandle::wait`] yields its record.
pub struct RunHandle {
    rx: watch::Receiver<Option<RunRecord>>,
    /// True when the run was queued behind one in flight (Forbid) rather than started.
    pub queued: bool,
}

impl RunHandle {
    /// Wait for the run to finish. Fails when the queued run was dropped (job removed or
    /// shutdown) before it started.
    pub async fn wait(mut self) -> Result<RunRecord, TriggerError> {
        match self.rx.wait_for(Option::is_some).await {
            Ok(r) => Ok(r.clone().expect("waited for Some")),
            Err(_) => Err(TriggerError::Abandoned),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    #[error("no job named `{0}`")]
    UnknownJob(String),
    #[error("obsd is shutting down")]
    ShuttingDown,
    #[error("the queued run was dropped before it started (job removed or obsd shutting down)")]
    Abandoned,
}

/// One job as `obsctl jobs` shows it (serialized by the daemon, deserialized by obsctl).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub name: String,
    /// The body: `cloudPoller`, `backup`, `selfHeal`, `dockerNames` or `statusPage`.
    pub kind: String,
    pub schedule: String,
    /// Set when the schedule does not parse (the job then only runs when triggered).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default)]
    pub schedule_error: Option<String>,
    pub suspended: bool,
    pub concurrency_policy: ConcurrencyPolicy,
    pub running: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default)]
    pub running_since: Option<DateTime<Utc>>,
    /// A manual run is queued behind the running one.
    pub run_queued: bool,
    /// When the next scheduled run starts (jitter included).
    pub next_run: Option<DateTime<Utc>>,
    /// The most recent finished run: start, result, duration, error.
    pub last_run: Option<RunRecord>,
    pub last_success: Option<DateTime<Utc>>,
    /// The most recent run that did not succeed, and its error.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default)]
    pub last_error_at: Option<DateTime<Utc>>,
    /// Scheduled slots skipped under `Forbid` since obsd started.
    pub skipped_runs: u64,
    /// Finished runs kept (newest last), up to `historyLimit`.
    pub history: Vec<RunRecord>,
}

impl JobRunner {
    /// Start the runner's driver task (call inside a tokio runtime). No jobs run until
    /// [`JobRunner::set_jobs`]. Cancelling `shutdown` stops everything.
    pub fn start(
        config: RunnerConfig,
        executor: Arc<dyn Executor>,
        metrics: JobMetrics,
        shutdown: CancellationToken,
    ) -> JobRunner {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            clock: config.clock,
            executor,
            metrics,
            state_dir: config.state_dir,
            shutdown,
            tracker: TaskTracker::new(),
        });
        shared.tracker.spawn(shared.clone().drive());
        JobRunner { shared }
    }

    /// Apply the desired set of jobs (name → spec): add, change and remove, as described
    /// in the module documentation. Never waits for a run.
    pub fn set_jobs(&self, jobs: BTreeMap<String, JobSpec>) {
        let sh = &self.shared;
        if sh.shutdown.is_cancelled() {
            return;
        }
        let now = sh.clock.now();
        let mut st = sh.lock();
        let gone: Vec<String> = st
            .jobs
            .keys()
            .filter(|n| !jobs.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(entry) = st.jobs.remove(&name) {
                if let Some(r) = &entry.running {
                    r.cancel("job removed from the desired state");
                }
                sh.metrics.job_removed(&name);
                tracing::info!(job = %name, "job removed");
            }
        }
        for (name, spec) in jobs {
            // The name becomes a file name under the state directory; the loader only
            // accepts DNS labels, and the runner does not trust that from afar.
            let safe = !name.is_empty()
                && name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !safe {
                tracing::error!(job = %name, "ignoring a job whose name is not a DNS label");
                continue;
            }
            match st.jobs.get_mut(&name) {
                None => sh.add_job(&mut st, &name, spec, now),
                Some(e) if *e.spec == spec => {}
                Some(e) => {
                    let old = std::mem::replace(&mut e.spec, Arc::new(spec));
                    if old.schedule != e.spec.schedule
                        || old.suspend != e.spec.suspend
                        || old.jitter != e.spec.jitter
                    {
                        e.schedule = Schedule::parse(&e.spec.schedule);
                        e.plan_next(now, now);
                    }
                    e.trim_history();
                    tracing::info!(job = %name, "job changed");
                }
            }
        }
        drop(st);
        sh.wake.notify_one();
    }

    /// Run `name` now (see the module documentation for runs in flight).
    pub fn trigger(&self, name: &str) -> Result<RunHandle, TriggerError> {
        let sh = &self.shared;
        if sh.shutdown.is_cancelled() {
            return Err(TriggerError::ShuttingDown);
        }
        let mut st = sh.lock();
        let entry = st
            .jobs
            .get_mut(name)
            .ok_or_else(|| TriggerError::UnknownJob(name.to_string()))?;
        if let Some(r) = &entry.running {
            match entry.spec.concurrency_policy {
                ConcurrencyPolicy::Forbid => {
                    let rx = match &entry.pending {
                        Some(tx) => tx.subscribe(),
                        None => {
                            let (tx, rx) = watch::channel(None);
                            entry.pending = Some(tx);
                            rx
                        }
                    };
                    tracing::info!(job = %name, "run in flight; manual run queued");
                    return Ok(RunHandle { rx, queued: true });
                }
                ConcurrencyPolicy::Replace => r.cancel("replaced by a manual run"),
            }
        }
        let (tx, rx) = watch::channel(None);
        sh.start_run(&mut st, name, RunTrigger::Manual, None, tx);
        drop(st);
        sh.wake.notify_one();
        Ok(RunHandle { rx, queued: false })
    }

    /// Every job's status, by name.
    pub fn status(&self) -> Vec<JobStatus> {
        let st = self.shared.lock();
        st.jobs
            .iter()
            .map(|(name, e)| {
                let failed =
                    e.history.iter().rev().find(|r| {
                        r.result != RunResult::Success && r.result != RunResult::Cancelled
                    });
                JobStatus {
                    name: name.clone(),
                    kind: e
                        .spec
                        .bodies()
                        .first()
                        .copied()
                        .unwrap_or("none")
                        .to_string(),
                    schedule: e.spec.schedule.clone(),
                    schedule_error: e.schedule.as_ref().err().cloned(),
                    suspended: e.spec.suspend,
                    concurrency_policy: e.spec.concurrency_policy,
                    running: e.running.is_some(),
                    running_since: e.running.as_ref().map(|r| r.started_at),
                    run_queued: e.pending.is_some(),
                    next_run: e.next_start,
                    last_run: e.history.back().cloned(),
                    last_success: e.last_success,
                    last_error: failed.and_then(|r| r.error.clone()),
                    last_error_at: failed.map(|r| r.finished_at),
                    skipped_runs: e.skipped,
                    history: e.history.iter().cloned().collect(),
                }
            })
            .collect()
    }

    /// The trigger of the run in flight, if any (for the daemon's own logic and tests).
    pub fn running(&self, name: &str) -> Option<RunTrigger> {
        self.shared
            .lock()
            .jobs
            .get(name)
            .and_then(|e| e.running.as_ref().map(|r| r.trigger))
    }

    /// Cancel every run, stop scheduling, and wait until all run tasks have recorded
    /// their result.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn persist(&self, name: &str, entry: &Entry) {
        if let Err(e) = history::save(&self.state_dir, name, &entry.persisted()) {
            tracing::warn!(job = %name, error = %e, "cannot write job state");
        }
    }

    fn add_job(self: &Arc<Self>, st: &mut State, name: &str, spec: JobSpec, now: DateTime<Utc>) {
        let saved = history::load(&self.state_dir, name);
        let last_success = saved.last_success.or_else(|| {
            saved
                .history
                .iter()
                .rev()
                .find(|r| r.result == RunResult::Success)
                .map(|r| r.finished_at)
        });
        let mut entry = Entry {
            schedule: Schedule::parse(&spec.schedule),
            spec: Arc::new(spec),
            next_due: None,
            next_start: None,
            last_scheduled: saved.last_scheduled,
            last_success,
            history: saved.history.into(),
            running: None,
            pending: None,
            skipped: 0,
        };
        entry.trim_history();
        self.metrics
            .job_added(name, entry.last_success.map(unix_seconds));

        let mut catch_up = None;
        match (&entry.schedule, entry.last_scheduled) {
            (Err(e), _) => {
                tracing::warn!(job = %name, error = %e, "invalid schedule; the job runs only when triggered")
            }
            (Ok(_), _) if entry.spec.suspend => {}
            (Ok(_), None) => entry.plan_next(now, now),
            (Ok(s), Some(anchor)) => match s.latest_between(anchor, now) {
                None => entry.plan_next(anchor, now),
                Some(missed) => {
                    let late = (now - missed).to_std().unwrap_or_default();
                    match entry.spec.starting_deadline {
                        Some(d) if late <= d.0 => {
                            tracing::info!(job = %name, slot = %missed, "catching up a run missed while obsd was down");
                            catch_up = Some(missed);
                        }
                        _ => tracing::info!(
                            job = %name, slot = %missed, late = %humantime::format_duration(Duration::from_secs(late.as_secs())),
                            "skipping a run missed while obsd was down (beyond startingDeadline)"
                        ),
                    }
                    entry.last_scheduled = Some(missed);
                    entry.plan_next(missed, now);
                    self.persist(name, &entry);
                }
            },
        }
        tracing::info!(job = %name, next_run = ?entry.next_start, "job added");
        st.jobs.insert(name.to_string(), entry);
        if let Some(slot) = catch_up {
            self.start_run(
                st,
                name,
                RunTrigger::CatchUp,
                Some(slot),
                watch::channel(None).0,
            );
        }
    }

    /// A slot of `name` is due: advance the schedule and apply the concurrency policy.
    fn fire(self: &Arc<Self>, st: &mut State, name: &str, now: DateTime<Utc>) {
        let Some(entry) = st.jobs.get_mut(name) else {
            return;
        };
        let Some(slot) = entry.next_due else { return };
        entry.last_scheduled = Some(slot);
        entry.plan_next(slot, now);
        let start = match (&entry.running, entry.spec.concurrency_policy) {
            (None, _) => true,
            (Some(_), ConcurrencyPolicy::Forbid) => {
                entry.skipped += 1;
                tracing::info!(job = %name, slot = %slot, "previous run still in flight; slot skipped (Forbid)");
                false
            }
            (Some(r), ConcurrencyPolicy::Replace) => {
                r.cancel("replaced by the next scheduled run");
                true
            }
        };
        self.persist(name, entry);
        if start {
            self.start_run(
                st,
                name,
                RunTrigger::Scheduled,
                Some(slot),
                watch::channel(None).0,
            );
        }
    }

    fn start_run(
        self: &Arc<Self>,
        st: &mut State,
        name: &str,
        trigger: RunTrigger,
        scheduled_for: Option<DateTime<Utc>>,
        tx: watch::Sender<Option<RunRecord>>,
    ) {
        if self.shutdown.is_cancelled() {
            return; // dropping `tx` tells a waiter the run was abandoned
        }
        let id = st.next_id;
        st.next_id += 1;
        let Some(entry) = st.jobs.get_mut(name) else {
            return;
        };
        let cancel = self.shutdown.child_token();
        let reason = Arc::new(OnceLock::new());
        let started_at = self.clock.now();
        entry.running = Some(Running {
            id,
            cancel: cancel.clone(),
            reason: reason.clone(),
            started_at,
            trigger,
        });
        let run = RunTask {
            name: name.to_string(),
            id,
            spec: entry.spec.clone(),
            trigger,
            scheduled_for,
            started_at,
            cancel,
            reason,
            tx,
        };
        self.tracker.spawn(self.clone().run(run));
    }

    async fn run(self: Arc<Self>, t: RunTask) {
        let t0 = tokio::time::Instant::now();
        let span = tracing::info_span!("job_run", job = %t.name, trigger = ?t.trigger);
        let body = self.executor.run(JobRun {
            name: t.name.clone(),
            spec: t.spec.clone(),
            cancel: t.cancel.clone(),
        });
        // Its own task, so a panic is contained and reported as this run's error.
        let mut body = tokio::spawn(body.instrument(span));
        let timeout = t.spec.timeout.0;
        let mut joined = false;
        let (result, error) = tokio::select! {
            biased;
            r = &mut body => {
                joined = true;
                match r {
                    Ok(Ok(())) => (RunResult::Success, None),
                    Ok(Err(e)) => (RunResult::Error, Some(error_chain(&e))),
                    Err(e) if e.is_panic() => (RunResult::Error, Some(format!("the job panicked: {}", panic_message(e.into_panic())))),
                    Err(_) => (RunResult::Cancelled, Some("aborted".to_string())),
                }
            }
            _ = t.cancel.cancelled() => {
                (RunResult::Cancelled, Some(t.reason.get().copied().unwrap_or("obsd is shutting down").to_string()))
            }
            _ = tokio::time::sleep(timeout) => {
                (RunResult::Timeout, Some(format!("timed out after {}", humantime::format_duration(timeout))))
            }
        };
        if !joined {
            t.cancel.cancel();
            body.abort();
            let _ = body.await; // the body is gone before the run is recorded
        }
        let record = RunRecord {
            trigger: t.trigger,
            scheduled_for: t.scheduled_for,
            started_at: t.started_at,
            finished_at: self.clock.now(),
            duration_seconds: t0.elapsed().as_secs_f64(),
            result,
            error,
        };
        match result {
            RunResult::Success => {
                tracing::info!(job = %t.name, duration_s = record.duration_seconds, "job run succeeded")
            }
            RunResult::Cancelled => {
                tracing::info!(job = %t.name, reason = ?record.error, "job run cancelled")
            }
            _ => {
                tracing::warn!(job = %t.name, result = result.as_str(), error = ?record.error, "job run failed")
            }
        }
        self.finish(&t.name, t.id, record, t.tx);
    }

    fn finish(
        self: &Arc<Self>,
        name: &str,
        id: u64,
        record: RunRecord,
        tx: watch::Sender<Option<RunRecord>>,
    ) {
        {
            let mut st = self.lock();
            let mut pending = None;
            if let Some(entry) = st.jobs.get_mut(name) {
                let current = entry.running.as_ref().is_some_and(|r| r.id == id);
                if current {
                    entry.running = None;
                    pending = entry.pending.take();
                }
                if record.result == RunResult::Success {
                    entry.last_success = Some(record.finished_at);
                }
                self.metrics.record(
                    name,
                    record.result,
                    record.duration_seconds,
                    unix_seconds(record.finished_at),
                );
                entry.push_history(record.clone());
                self.persist(name, entry);
            }
            if let Some(p) = pending {
                self.start_run(&mut st, name, RunTrigger::Manual, None, p);
            }
        }
        tx.send_replace(Some(record));
        self.wake.notify_one();
    }

    async fn drive(self: Arc<Self>) {
        loop {
            let next = self.tick();
            let now = self.clock.now();
            let wait = next
                .map(|t| (t - now).to_std().unwrap_or_default())
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Fire every due job; returns the earliest next start.
    fn tick(self: &Arc<Self>) -> Option<DateTime<Utc>> {
        let now = self.clock.now();
        let mut st = self.lock();
        let due: Vec<String> = st
            .jobs
            .iter()
            .filter(|(_, e)| e.next_start.is_some_and(|t| t <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.fire(&mut st, &name, now);
        }
        st.jobs.values().filter_map(|e| e.next_start).min()
    }
}

struct RunTask {
    name: String,
    id: u64,
    spec: Arc<JobSpec>,
    trigger: RunTrigger,
    scheduled_for: Option<DateTime<Utc>>,
    started_at: DateTime<Utc>,
    cancel: CancellationToken,
    reason: Arc<OnceLock<&'static str>>,
    tx: watch::Sender<Option<RunRecord>>,
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}
