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
    /// Passes finished since the daemon started (0: nothing observed yet).
    #[serde(default)]
    pub passes_since_start: u64,
    /// A load of the desired-state directory is in progress.
    #[serde(default)]
    pub loading: bool,
    /// A new valid desired state was loaded while a pass was running; the pass that
    /// applies it has not started yet.
    #[serde(default)]
    pub new_desired_pending: bool,
    /// The last pass could not run (e.g. listing containers failed).
    #[serde(default)]
    pub last_pass_error: Option<String>,
    /// `in_sync` exactly when `obsctl status` exits 0 (product.md); computed by
    /// [`Status::judge`] from the fields above.
    #[serde(default)]
    pub verdict: Verdict,
    /// Why the verdict is `not_in_sync` (empty when in sync).
    #[serde(default)]
    pub reasons: Vec<StatusReason>,
}

/// The one-word answer of `obsctl status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    InSync,
    #[default]
    NotInSync,
}

/// One reason the host is not (known to be) in sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReason {
    /// Stable code for scripts: `no_desired_state`, `desired_state_invalid`, `loading`,
    /// `docker_down`, `no_pass_yet`, `generation_not_applied`, `pass_error`,
    /// `resource_not_in_sync`, `job_failing`.
    pub code: String,
    /// One line for people.
    pub message: String,
}

impl Status {
    /// Fills [`Status::verdict`] and [`Status::reasons`]: in sync exactly when the
    /// daemon has finished a pass of the current generation (applied = desired), the
    /// desired state on disk is valid and loaded, the engine is up, every resource is in
    /// sync and no job is failing (product.md, `obsctl status`).
    pub fn judge(&mut self) {
        let mut reasons = Vec::new();
        let mut add = |code: &str, message: String| {
            reasons.push(StatusReason {
                code: code.into(),
                message,
            })
        };
        if self.desired_generation == 0 {
            add(
                "no_desired_state",
                "no valid desired state has been loaded yet".into(),
            );
        }
        if let Some(e) = &self.desired_state_error {
            let first = e.lines().next().unwrap_or_default();
            add(
                "desired_state_invalid",
                format!("the desired state on disk is invalid (last good kept): {first}"),
            );
        }
        if self.loading {
            add(
                "loading",
                "the desired-state directory is being loaded".into(),
            );
        }
        if !self.docker_up {
            add("docker_down", "the Docker engine is unreachable".into());
        }
        if self.passes_since_start == 0 {
            add(
                "no_pass_yet",
                "no reconcile pass has finished since obsd started".into(),
            );
        }
        if self.new_desired_pending || self.applied_generation != self.desired_generation {
            add(
                "generation_not_applied",
                format!(
                    "desired generation {}{} is not applied (applied: {})",
                    self.desired_generation,
                    if self.new_desired_pending {
                        " (and a newer one)"
                    } else {
                        ""
                    },
                    self.applied_generation
                ),
            );
        }
        if let Some(e) = &self.last_pass_error {
            add("pass_error", format!("the last pass failed: {e}"));
        }
        for row in &self.resources {
            let r = &row.resource;
            if !r.in_sync {
                let drift: Vec<&str> = r.drift.iter().map(|d| d.as_str()).collect();
                add(
                    "resource_not_in_sync",
                    format!("{} {}: {}", r.kind.as_str(), r.name, drift.join(",")),
                );
            }
        }
        for j in &self.jobs {
            if j.failing {
                add(
                    "job_failing",
                    format!(
                        "job {} is failing{}",
                        j.name,
                        j.last_error
                            .as_deref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    ),
                );
            }
        }
        self.verdict = if reasons.is_empty() {
            Verdict::InSync
        } else {
            Verdict::NotInSync
        };
        self.reasons = reasons;
    }
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
    /// `suspend: true`: not scheduled (it still runs when triggered).
    #[serde(default)]
    pub suspended: bool,
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
            suspended: j.suspended,
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
