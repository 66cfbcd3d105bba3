//! The wire types of the obsd ↔ obsctl API, written once: the daemon serializes them,
//! obsctl deserializes them, so renaming a field fails to compile on both sides instead
//! of silently breaking `obsctl status`.
//!
//! They are also the JSON that `obsctl status -o json` and `obsctl jobs -o json` print,
//! which users' scripts read: change a field only with a CHANGELOG entry.

use crate::jobs::{JobStatus, RunResult};
use crate::reconcile::StatusRow;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `GET /v1/status`.
pub const STATUS: &str = "/v1/status";
/// `GET /v1/jobs`.
pub const JOBS: &str = "/v1/jobs";
/// `POST /v1/reconcile`: run a pass now.
pub const RECONCILE: &str = "/v1/reconcile";

/// `POST /v1/jobs/{name}/run[?wait=true]`.
pub fn job_run_path(name: &str, wait: bool) -> String {
    format!(
        "/v1/jobs/{name}/run{}",
        if wait { "?wait=true" } else { "" }
    )
}

/// `GET /v1/rollout/{name}`: one Service's rollout state.
pub fn rollout_path(name: &str) -> String {
    format!("/v1/rollout/{name}")
}

/// `POST /v1/rollout/{name}/retry`: forget a rollback, so the spec is tried again.
pub fn rollout_retry_path(name: &str) -> String {
    format!("/v1/rollout/{name}/retry")
}

/// The answer to `GET /v1/rollout/{name}` (`obsctl rollout status NAME -o json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutStatus {
    pub service: String,
    /// The spec that failed its health gate is held (`rolled_back` drift).
    pub rolled_back: bool,
    /// A spec is held: `rolled_back`, `preflight_failed` or `crash_loop`; `obsctl rollout
    /// retry` tries it again.
    pub held: bool,
    /// The Service's row of `obsctl status` (drift, message, `log_tail`).
    pub status: StatusRow,
}

/// The answer to `POST /v1/rollout/{name}/retry`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutRetry {
    pub service: String,
    /// It had a held spec (rolled back, refused by its check, or stopped after a crash
    /// loop), which the next pass (queued now) tries again.
    pub held: bool,
    pub queued: bool,
}

/// The answer to `GET /v1/status`: the daemon's view of the host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Generation of the desired state on disk (bumped when its content changes).
    pub desired_generation: u64,
    /// Last generation a pass converged completely.
    pub applied_generation: u64,
    pub docker_up: bool,
    /// Why the desired state on disk is invalid (the last good one is kept running).
    pub desired_state_error: Option<String>,
    pub last_reconcile_ms: Option<i64>,
    pub last_success_ms: Option<i64>,
    /// One row per resource, from the latest pass.
    pub resources: Vec<StatusRow>,
    pub jobs: Vec<JobSummary>,
}

/// One job in `obsctl status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    pub name: String,
    pub kind: String,
    /// Its last finished run did not succeed.
    pub failing: bool,
    pub last_success: Option<DateTime<Utc>>,
    pub next_run: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

impl JobSummary {
    /// A job is failing when its last finished run did not succeed (a cancelled run
    /// says nothing about the job).
    pub fn of(j: JobStatus) -> JobSummary {
        let failing = j
            .last_run
            .as_ref()
            .is_some_and(|r| !matches!(r.result, RunResult::Success | RunResult::Cancelled));
        JobSummary {
            name: j.name,
            kind: j.kind,
            failing,
            last_success: j.last_success,
            next_run: j.next_run,
            last_error: j.last_error,
        }
    }
}

/// The answer to `GET /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobList {
    pub jobs: Vec<JobStatus>,
}

/// The answer to `POST /v1/jobs/{name}/run` (without `wait`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunQueued {
    pub job: String,
    /// The job was running: this run waits behind it.
    pub queued: bool,
}

/// The answer to `POST /v1/jobs/{name}/run?wait=true`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFinished {
    pub job: String,
    pub result: RunResult,
    pub duration_seconds: f64,
    pub error: Option<String>,
}

/// The answer to `POST /v1/reconcile`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queued {
    pub queued: bool,
}

/// The body of every non-200 answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}
