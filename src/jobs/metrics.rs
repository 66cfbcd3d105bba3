//! The job metrics of the contract, served on obsd's own `/metrics`:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `obsd_job_runs_total` | counter | `job`, `result` = success\|error\|timeout |
//! | `obsd_job_last_success_timestamp_seconds` | gauge | `job` |
//! | `obsd_job_duration_seconds` | histogram | `job` |
//!
//! `job` is the Job's `metadata.name`. The `success` and `error` series start at 0 when a
//! job appears (alert rules use `increase()`, which cannot see a series born at 1) and
//! every series of a job is removed when it leaves the desired state. The last-success
//! gauge is restored from the persisted history, so a restart does not look stale; it is
//! 0 when no success is on record. Runs cancelled by `Replace`, removal or shutdown are
//! not counted: they are neither a success nor a failure of the job.

use super::history::RunResult;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobResultLabels {
    job: String,
    result: String,
}

/// Buckets from 100 ms (docker-names) to an hour (a backup).
const DURATION_BUCKETS: [f64; 14] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

fn new_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Handles to the job metric families (cheap to clone; clones share the series).
#[derive(Clone)]
pub struct JobMetrics {
    runs: Family<JobResultLabels, Counter>,
    last_success: Family<JobLabels, Gauge<f64, AtomicU64>>,
    duration: Family<JobLabels, Histogram, fn() -> Histogram>,
}

impl Default for JobMetrics {
    fn default() -> Self {
        JobMetrics::new()
    }
}

impl JobMetrics {
    /// Unregistered metrics (tests; or register later with [`JobMetrics::register_into`]).
    pub fn new() -> JobMetrics {
        JobMetrics {
            runs: Family::default(),
            last_success: Family::default(),
            duration: Family::new_with_constructor(new_histogram as fn() -> Histogram),
        }
    }

    /// Create the families and register them in `registry` under their full contract
    /// names. The registry must not add a prefix (`Registry::default()`).
    pub fn register(registry: &mut Registry) -> JobMetrics {
        let m = JobMetrics::new();
        m.register_into(registry);
        m
    }

    pub fn register_into(&self, registry: &mut Registry) {
        // prometheus-client appends `_total` to counters.
        registry.register(
            "obsd_job_runs",
            "Job runs by result (success, error, timeout).",
            self.runs.clone(),
        );
        registry.register(
            "obsd_job_last_success_timestamp_seconds",
            "Unix time the job last finished successfully (0: none on record).",
            self.last_success.clone(),
        );
        registry.register(
            "obsd_job_duration_seconds",
            "Duration of job runs.",
            self.duration.clone(),
        );
    }

    /// A job appeared: zero its counters and set its last success (restored from
    /// history; 0 when none).
    pub(crate) fn job_added(&self, job: &str, last_success_unix: Option<f64>) {
        for result in [RunResult::Success, RunResult::Error] {
            let _ = self.runs.get_or_create(&labels(job, result));
        }
        self.last_success
            .get_or_create(&JobLabels { job: job.into() })
            .set(last_success_unix.unwrap_or(0.0));
    }

    /// A job left the desired state: drop all of its series.
    pub(crate) fn job_removed(&self, job: &str) {
        for result in [RunResult::Success, RunResult::Error, RunResult::Timeout] {
            self.runs.remove(&labels(job, result));
        }
        let l = JobLabels { job: job.into() };
        self.last_success.remove(&l);
        self.duration.remove(&l);
    }

    /// A run finished. Cancelled runs are ignored (see the module doc).
    pub(crate) fn record(
        &self,
        job: &str,
        result: RunResult,
        duration_seconds: f64,
        finished_unix: f64,
    ) {
        if result == RunResult::Cancelled {
            return;
        }
        self.runs.get_or_create(&labels(job, result)).inc();
        let l = JobLabels { job: job.into() };
        self.duration.get_or_create(&l).observe(duration_seconds);
        if result == RunResult::Success {
            self.last_success.get_or_create(&l).set(finished_unix);
        }
    }
}

fn labels(job: &str, result: RunResult) -> JobResultLabels {
    JobResultLabels {
        job: job.into(),
        result: result.as_str().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    fn text(reg: &Registry) -> String {
        let mut s = String::new();
        encode(&mut s, reg).unwrap();
        s
    }

    #[test]
    fn lifecycle_of_a_jobs_series() {
        let mut reg = Registry::default();
        let m = JobMetrics::register(&mut reg);
        m.job_added("poller", Some(1700000000.5));
        let t = text(&reg);
        assert!(
            t.contains("obsd_job_runs_total{job=\"poller\",result=\"success\"} 0"),
            "{t}"
        );
        assert!(
            t.contains("obsd_job_runs_total{job=\"poller\",result=\"error\"} 0"),
            "{t}"
        );
        assert!(
            t.contains("obsd_job_last_success_timestamp_seconds{job=\"poller\"} 1700000000.5"),
            "{t}"
        );

        m.record("poller", RunResult::Timeout, 3.0, 1.0);
        m.record("poller", RunResult::Success, 0.2, 1700000300.0);
        m.record("poller", RunResult::Cancelled, 0.2, 1800000000.0);
        let t = text(&reg);
        assert!(
            t.contains("obsd_job_runs_total{job=\"poller\",result=\"timeout\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("obsd_job_runs_total{job=\"poller\",result=\"success\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("obsd_job_last_success_timestamp_seconds{job=\"poller\"} 1700000300.0"),
            "{t}"
        );
        assert!(
            t.contains("obsd_job_duration_seconds_count{job=\"poller\"} 2"),
            "{t}"
        );

        m.job_removed("poller");
        assert!(!text(&reg).contains("poller"));
    }
}
