//! Job runner semantics with a paused tokio clock: overlap (Forbid skips, Replace
//! cancels), timeout, catch-up within/outside `startingDeadline`, bounded persisted
//! history, manual triggers while running, isolation of failing and panicking jobs,
//! desired-state changes, shutdown.

use chrono::{DateTime, TimeZone, Utc};
use futures_util::future::BoxFuture;
use obsd::desired::model::job::{ConcurrencyPolicy, DockerNamesJob};
use obsd::desired::model::{Duration as ModelDuration, JobSpec};
use obsd::jobs::history::{self, JobState};
use obsd::jobs::{
    Executor, JobError, JobMetrics, JobRun, JobRunner, RunResult, RunTrigger, RunnerConfig,
    TokioClock, TriggerError,
};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;

/// What a fake body does.
#[derive(Clone, Copy, Debug)]
enum Act {
    Ok,
    Sleep(u64),
    Fail,
    Panic,
}

/// A scripted executor: behaviour per job name; records every start and the number of
/// bodies alive at once.
#[derive(Default)]
struct Fake {
    acts: Mutex<BTreeMap<String, Act>>,
    starts: Mutex<Vec<(String, Duration)>>,
    alive: Arc<AtomicUsize>,
    max_alive: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
    origin: Mutex<Option<Instant>>,
}

struct AliveGuard(Arc<AtomicUsize>, Arc<AtomicUsize>);
impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        self.1.fetch_add(1, Ordering::SeqCst);
    }
}

impl Fake {
    fn new(acts: &[(&str, Act)]) -> Arc<Fake> {
        let f = Fake::default();
        *f.acts.lock().unwrap() = acts.iter().map(|(n, a)| (n.to_string(), *a)).collect();
        *f.origin.lock().unwrap() = Some(Instant::now());
        Arc::new(f)
    }
    fn starts(&self, name: &str) -> Vec<u64> {
        self.starts
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, t)| t.as_secs())
            .collect()
    }
}

impl Executor for Fake {
    fn run(&self, run: JobRun) -> BoxFuture<'static, Result<(), JobError>> {
        let act = *self.acts.lock().unwrap().get(&run.name).unwrap_or(&Act::Ok);
        let origin = self.origin.lock().unwrap().unwrap();
        self.starts
            .lock()
            .unwrap()
            .push((run.name.clone(), origin.elapsed()));
        let n = self.alive.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_alive.fetch_max(n, Ordering::SeqCst);
        let guard = AliveGuard(self.alive.clone(), self.dropped.clone());
        Box::pin(async move {
            let _guard = guard;
            match act {
                Act::Ok => Ok(()),
                Act::Sleep(s) => {
                    sleep(Duration::from_secs(s)).await;
                    Ok(())
                }
                Act::Fail => Err(JobError::Failed("boom".into())),
                Act::Panic => panic!("body exploded"),
            }
        })
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 10, 5, 0).unwrap()
}

fn spec(schedule: &str) -> JobSpec {
    JobSpec {
        schedule: schedule.into(),
        timeout: ModelDuration::secs(3600),
        jitter: None,
        concurrency_policy: ConcurrencyPolicy::Forbid,
        starting_deadline: None,
        suspend: false,
        history_limit: 20,
        cloud_poller: None,
        backup: None,
        self_heal: None,
        docker_names: Some(DockerNamesJob {
            textfile: "docker_names.prom".into(),
        }),
        status_page: None,
        logs_shipper: None,
        aws_cron_monitor: None,
    }
}

struct Harness {
    runner: JobRunner,
    registry: Registry,
    shutdown: CancellationToken,
}

fn start(state_dir: &Path, exec: Arc<Fake>) -> Harness {
    let mut registry = Registry::default();
    let metrics = JobMetrics::register(&mut registry);
    let shutdown = CancellationToken::new();
    let runner = JobRunner::start(
        RunnerConfig {
            state_dir: state_dir.to_path_buf(),
            clock: Arc::new(TokioClock::starting_at(t0())),
        },
        exec,
        metrics,
        shutdown.clone(),
    );
    Harness {
        runner,
        registry,
        shutdown,
    }
}

impl Harness {
    fn metrics(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).unwrap();
        s
    }
    fn status(&self, name: &str) -> obsd::jobs::JobStatus {
        self.runner
            .status()
            .into_iter()
            .find(|s| s.name == name)
            .expect("job in status")
    }
}

fn jobs(list: &[(&str, JobSpec)]) -> BTreeMap<String, JobSpec> {
    list.iter()
        .map(|(n, s)| (n.to_string(), s.clone()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn forbid_skips_slots_while_a_run_is_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(&[("slow", Act::Sleep(25))]);
    let h = start(dir.path(), fake.clone());
    h.runner.set_jobs(jobs(&[("slow", spec("@every 10s"))]));
    sleep(Duration::from_secs(45)).await;
    // Runs at 10 s (until 35 s); the 20 s and 30 s slots are skipped; 40 s runs.
    assert_eq!(fake.starts("slow"), vec![10, 40]);
    assert_eq!(fake.max_alive.load(Ordering::SeqCst), 1);
    let st = h.status("slow");
    assert_eq!(st.skipped_runs, 2);
    assert!(st.running);
    assert_eq!(st.last_run.as_ref().unwrap().result, RunResult::Success);
    assert_eq!(st.next_run, Some(t0() + chrono::Duration::seconds(50)));
    assert!(h
        .metrics()
        .contains("obsd_job_runs_total{job=\"slow\",result=\"success\"} 1"));
}

#[tokio::test(start_paused = true)]
async fn replace_cancels_the_run_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(&[("slow", Act::Sleep(25))]);
    let h = start(dir.path(), fake.clone());
    let mut s = spec("@every 10s");
    s.concurrency_policy = ConcurrencyPolicy::Replace;
    h.runner.set_jobs(jobs(&[("slow", s)]));
    sleep(Duration::from_secs(35)).await;
    assert_eq!(fake.starts("slow"), vec![10, 20, 30]);
    let st = h.status("slow");
    assert_eq!(st.skipped_runs, 0);
    let results: Vec<_> = st
        .history
        .iter()
        .map(|r| (r.result, r.error.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        results,
        vec![
            (
                RunResult::Cancelled,
                "replaced by the next scheduled run".to_string()
            ),
            (
                RunResult::Cancelled,
                "replaced by the next scheduled run".to_string()
            ),
        ]
    );
    // The replaced bodies were dropped, the third is alive.
    assert_eq!(fake.dropped.load(Ordering::SeqCst), 2);
    assert_eq!(fake.alive.load(Ordering::SeqCst), 1);
    // Cancelled runs are neither successes nor failures.
    let m = h.metrics();
    assert!(
        m.contains("obsd_job_runs_total{job=\"slow\",result=\"success\"} 0"),
        "{m}"
    );
    assert!(
        m.contains("obsd_job_runs_total{job=\"slow\",result=\"error\"} 0"),
        "{m}"
    );
}

#[tokio::test(start_paused = true)]
async fn timeout_cancels_the_body_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(&[("hang", Act::Sleep(600))]);
    let h = start(dir.path(), fake.clone());
    let mut s = spec("@daily");
    s.timeout = ModelDuration::secs(5);
    h.runner.set_jobs(jobs(&[("hang", s)]));
    let started = Instant::now();
    let rec = h.runner.trigger("hang").unwrap().wait().await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(rec.result, RunResult::Timeout);
    assert_eq!(rec.trigger, RunTrigger::Manual);
    assert_eq!(rec.error.as_deref(), Some("timed out after 5s"));
    assert!((rec.duration_seconds - 5.0).abs() < 0.01);
    assert_eq!(
        fake.dropped.load(Ordering::SeqCst),
        1,
        "the body was dropped"
    );
    let m = h.metrics();
    assert!(
        m.contains("obsd_job_runs_total{job=\"hang\",result=\"timeout\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("obsd_job_duration_seconds_count{job=\"hang\"} 1"),
        "{m}"
    );
    let st = h.status("hang");
    assert_eq!(st.last_error.as_deref(), Some("timed out after 5s"));
    assert!(!st.running);
}

fn persist_last_scheduled(dir: &Path, job: &str, t: DateTime<Utc>) {
    history::save(
        dir,
        job,
        &JobState {
            last_scheduled: Some(t),
            ..JobState::default()
        },
    )
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn catch_up_within_the_starting_deadline() {
    let dir = tempfile::tempdir().unwrap();
    // Last handled slot 09:00; obsd comes back at 10:05, the 10:00 slot is 5 min late.
    persist_last_scheduled(
        dir.path(),
        "hourly",
        Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap(),
    );
    let fake = Fake::new(&[]);
    let h = start(dir.path(), fake.clone());
    let mut s = spec("@hourly");
    s.starting_deadline = Some(ModelDuration::secs(600));
    h.runner.set_jobs(jobs(&[("hourly", s)]));
    sleep(Duration::from_secs(1)).await;
    assert_eq!(fake.starts("hourly"), vec![0]);
    let st = h.status("hourly");
    let last = st.last_run.unwrap();
    assert_eq!(last.trigger, RunTrigger::CatchUp);
    assert_eq!(
        last.scheduled_for,
        Some(Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 0).unwrap())
    );
    assert_eq!(
        st.next_run,
        Some(Utc.with_ymd_and_hms(2026, 1, 1, 11, 0, 0).unwrap())
    );
    let saved = history::load(dir.path(), "hourly");
    assert_eq!(
        saved.last_scheduled,
        Some(Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 0).unwrap())
    );
    assert_eq!(saved.history.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn no_catch_up_beyond_the_deadline_or_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let nine = Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap();
    persist_last_scheduled(dir.path(), "late", nine);
    persist_last_scheduled(dir.path(), "nodeadline", nine);
    let fake = Fake::new(&[]);
    let h = start(dir.path(), fake.clone());
    let mut late = spec("@hourly");
    late.starting_deadline = Some(ModelDuration::secs(120)); // 10:00 is 5 min late
    h.runner
        .set_jobs(jobs(&[("late", late), ("nodeadline", spec("@hourly"))]));
    sleep(Duration::from_secs(60)).await;
    assert!(fake.starts.lock().unwrap().is_empty());
    for name in ["late", "nodeadline"] {
        let st = h.status(name);
        assert!(st.last_run.is_none());
        assert_eq!(
            st.next_run,
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 11, 0, 0).unwrap())
        );
        // The missed slot is recorded as handled, so it is not reconsidered.
        assert_eq!(
            history::load(dir.path(), name).last_scheduled,
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 0).unwrap())
        );
    }
    // Nothing was missed: the cadence of `@every` continues from the persisted slot.
    let dir2 = tempfile::tempdir().unwrap();
    persist_last_scheduled(dir2.path(), "every", t0() - chrono::Duration::seconds(100));
    let fake2 = Fake::new(&[]);
    let h2 = start(dir2.path(), fake2.clone());
    let mut every = spec("@every 5m");
    every.starting_deadline = Some(ModelDuration::secs(3600));
    h2.runner.set_jobs(jobs(&[("every", every)]));
    assert_eq!(
        h2.status("every").next_run,
        Some(t0() + chrono::Duration::seconds(200))
    );
}

#[tokio::test(start_paused = true)]
async fn history_is_bounded_persisted_and_restores_last_success() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(&[("often", Act::Ok)]);
    let h = start(dir.path(), fake.clone());
    let mut s = spec("@every 1s");
    s.history_limit = 3;
    h.runner.set_jobs(jobs(&[("often", s.clone())]));
    sleep(Duration::from_millis(10_500)).await;
    assert_eq!(fake.starts("often").len(), 10);
    assert_eq!(h.status("often").history.len(), 3);
    let saved = history::load(dir.path(), "often");
    assert_eq!(saved.history.len(), 3);
    let last_success = saved.last_success.unwrap();
    assert_eq!(last_success, t0() + chrono::Duration::seconds(10));
    assert!(h
        .metrics()
        .contains("obsd_job_runs_total{job=\"often\",result=\"success\"} 10"));
    h.runner.shutdown().await;

    // A restart: the freshness gauge comes from the state file, not 0.
    let h2 = start(dir.path(), Fake::new(&[("often", Act::Fail)]));
    h2.runner.set_jobs(jobs(&[("often", s)]));
    let want = format!(
        "obsd_job_last_success_timestamp_seconds{{job=\"often\"}} {}.0",
        last_success.timestamp()
    );
    let m = h2.metrics();
    assert!(m.contains(&want), "{m}");
    assert!(
        m.contains("obsd_job_runs_total{job=\"often\",result=\"error\"} 0"),
        "{m}"
    );
    assert_eq!(h2.status("often").history.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn trigger_while_running_queues_one_run_under_forbid() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(&[("slow", Act::Sleep(10))]);
    let h = start(dir.path(), fake.clone());
    h.runner.set_jobs(jobs(&[("slow", spec("@daily"))]));
    let first = h.runner.trigger("slow").unwrap();
    assert!(!first.queued);
    sleep(Duration::from_secs(1)).await;
    let second = h.runner.trigger("slow").unwrap();
    let third = h.runner.trigger("slow").unwrap();
    assert!(second.queued && third.queued);
    assert!(h.status("slow").run_queued);

    let r1 = first.wait().await.unwrap();
    assert_eq!(r1.result, RunResult::Success);
    let (r2, r3) = tokio::join!(second.wait(), third.wait());
    let (r2, r3) = (r2.unwrap(), r3.unwrap());
    assert_eq!(r2, r3, "both triggers joined the one queued run");
    assert_eq!(r2.started_at, t0() + chrono::Duration::seconds(10));
    assert_eq!(fake.starts("slow"), vec![0, 10]);
    assert_eq!(fake.max_alive.load(Ordering::SeqCst), 1);
    assert!(matches!(
        h.runner.trigger("nope"),
        Err(TriggerError::UnknownJob(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn trigger_under_replace_cancels_the_running_run() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(&[("slow", Act::Sleep(10))]);
    let h = start(dir.path(), fake.clone());
    let mut s = spec("@daily");
    s.concurrency_policy = ConcurrencyPolicy::Replace;
    h.runner.set_jobs(jobs(&[("slow", s)]));
    let first = h.runner.trigger("slow").unwrap();
    sleep(Duration::from_secs(2)).await;
    let second = h.runner.trigger("slow").unwrap();
    assert!(!second.queued);
    let r1 = first.wait().await.unwrap();
    assert_eq!(r1.result, RunResult::Cancelled);
    assert_eq!(r1.error.as_deref(), Some("replaced by a manual run"));
    let r2 = second.wait().await.unwrap();
    assert_eq!(r2.result, RunResult::Success);
    assert_eq!(r2.finished_at, t0() + chrono::Duration::seconds(12));
}

#[tokio::test(start_paused = true)]
async fn failing_and_panicking_jobs_do_not_stop_others() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(&[("boom", Act::Panic), ("bad", Act::Fail), ("good", Act::Ok)]);
    let h = start(dir.path(), fake.clone());
    h.runner.set_jobs(jobs(&[
        ("boom", spec("@every 5s")),
        ("bad", spec("@every 5s")),
        ("good", spec("@every 5s")),
    ]));
    sleep(Duration::from_millis(15_500)).await;
    for name in ["boom", "bad", "good"] {
        assert_eq!(fake.starts(name), vec![5, 10, 15], "{name}");
    }
    let boom = h.status("boom");
    assert_eq!(boom.last_run.as_ref().unwrap().result, RunResult::Error);
    assert_eq!(
        boom.last_error.as_deref(),
        Some("the job panicked: body exploded")
    );
    assert_eq!(h.status("bad").last_error.as_deref(), Some("boom"));
    assert_eq!(
        h.status("good").last_run.unwrap().result,
        RunResult::Success
    );
    let m = h.metrics();
    assert!(
        m.contains("obsd_job_runs_total{job=\"boom\",result=\"error\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("obsd_job_runs_total{job=\"good\",result=\"success\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("obsd_job_last_success_timestamp_seconds{job=\"bad\"} 0"),
        "{m}"
    );
    // Still serving triggers.
    assert_eq!(
        h.runner
            .trigger("good")
            .unwrap()
            .wait()
            .await
            .unwrap()
            .result,
        RunResult::Success
    );
}

#[tokio::test(start_paused = true)]
async fn set_jobs_adds_changes_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(&[("a", Act::Sleep(100)), ("b", Act::Ok)]);
    let h = start(dir.path(), fake.clone());
    h.runner
        .set_jobs(jobs(&[("a", spec("@every 10s")), ("b", spec("@every 1h"))]));
    sleep(Duration::from_secs(11)).await;
    assert!(h.status("a").running);

    // b's schedule changes: re-planned from now (11 s). a is removed: its run is cancelled
    // and its series disappear.
    h.runner.set_jobs(jobs(&[("b", spec("@every 30s"))]));
    sleep(Duration::from_millis(1)).await;
    assert_eq!(fake.alive.load(Ordering::SeqCst), 0);
    assert_eq!(h.runner.status().len(), 1);
    assert_eq!(
        h.status("b").next_run,
        Some(t0() + chrono::Duration::seconds(41))
    );
    let m = h.metrics();
    assert!(!m.contains("job=\"a\""), "{m}");
    assert_eq!(
        fake.dropped.load(Ordering::SeqCst),
        1,
        "a's body was dropped"
    );

    // Same spec again: nothing changes.
    h.runner.set_jobs(jobs(&[("b", spec("@every 30s"))]));
    assert_eq!(
        h.status("b").next_run,
        Some(t0() + chrono::Duration::seconds(41))
    );

    // Suspended: no next run, but a trigger works.
    let mut s = spec("@every 30s");
    s.suspend = true;
    h.runner.set_jobs(jobs(&[("b", s)]));
    assert_eq!(h.status("b").next_run, None);
    sleep(Duration::from_secs(60)).await;
    assert!(fake.starts("b").is_empty());
    assert_eq!(
        h.runner.trigger("b").unwrap().wait().await.unwrap().result,
        RunResult::Success
    );
}

#[tokio::test(start_paused = true)]
async fn jitter_delays_within_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(&[]);
    let h = start(dir.path(), fake.clone());
    let mut s = spec("@every 60s");
    s.jitter = Some(ModelDuration::secs(20));
    h.runner.set_jobs(jobs(&[("j", s)]));
    let next = h.status("j").next_run.unwrap();
    let slot = t0() + chrono::Duration::seconds(60);
    assert!(
        next >= slot && next <= slot + chrono::Duration::seconds(20),
        "{next}"
    );
    sleep(Duration::from_secs(81)).await;
    let starts = fake.starts("j");
    assert_eq!(starts.len(), 1);
    assert!((60..=80).contains(&starts[0]));
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_runs_and_queued_triggers() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(&[("slow", Act::Sleep(100))]);
    let h = start(dir.path(), fake.clone());
    h.runner.set_jobs(jobs(&[("slow", spec("@daily"))]));
    let running = h.runner.trigger("slow").unwrap();
    let queued = h.runner.trigger("slow").unwrap();
    sleep(Duration::from_secs(1)).await;
    h.shutdown.cancel();
    h.runner.shutdown().await;
    let r = running.wait().await.unwrap();
    assert_eq!(r.result, RunResult::Cancelled);
    assert_eq!(r.error.as_deref(), Some("obsd is shutting down"));
    assert_eq!(queued.wait().await, Err(TriggerError::Abandoned));
    assert_eq!(fake.alive.load(Ordering::SeqCst), 0);
    assert!(matches!(
        h.runner.trigger("slow"),
        Err(TriggerError::ShuttingDown)
    ));
    assert_eq!(history::load(dir.path(), "slow").history.len(), 1);
}
