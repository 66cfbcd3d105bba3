//! The per-job state file `<state_dir>/jobs/<name>.json`: the last scheduled slot (for
//! catch-up after downtime), the last success (for the freshness gauge) and a bounded run
//! history (newest last). Written atomically after every run and every scheduled slot.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunResult {
    Success,
    Error,
    /// Still going at `timeout`; it was cancelled.
    Timeout,
    /// Stopped by `Replace`, job removal or shutdown (not counted in the metrics).
    Cancelled,
}

impl RunResult {
    /// The `result` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Success => "success",
            RunResult::Error => "error",
            RunResult::Timeout => "timeout",
            RunResult::Cancelled => "cancelled",
        }
    }
}

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunTrigger {
    Scheduled,
    /// `obsctl jobs run`, or the daemon (e.g. docker-names on a container event).
    Manual,
    /// A slot missed while obsd was down, started at startup within `startingDeadline`.
    CatchUp,
}

/// One finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub trigger: RunTrigger,
    /// The schedule slot this run belongs to (scheduled and catch-up runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_seconds: f64,
    pub result: RunResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The persisted state of one job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    #[serde(default)]
    pub version: u32,
    /// The latest schedule slot handled (run, skipped, or missed beyond the deadline).
    #[serde(default)]
    pub last_scheduled: Option<DateTime<Utc>>,
    /// Kept apart from the history so it survives a history full of failures.
    #[serde(default)]
    pub last_success: Option<DateTime<Utc>>,
    #[serde(default)]
    pub history: Vec<RunRecord>,
}

const VERSION: u32 = 1;

pub fn path(state_dir: &Path, job: &str) -> PathBuf {
    state_dir.join("jobs").join(format!("{job}.json"))
}

/// The persisted state, or an empty one when the file is missing or unreadable (a
/// corrupt file is logged and replaced on the next write: history is not worth stopping
/// a job for).
pub fn load(state_dir: &Path, job: &str) -> JobState {
    let p = path(state_dir, job);
    match std::fs::read(&p) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(job, file = %p.display(), error = %e, "ignoring unreadable job state");
                JobState::default()
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => JobState::default(),
        Err(e) => {
            tracing::warn!(job, file = %p.display(), error = %e, "cannot read job state");
            JobState::default()
        }
    }
}

pub fn save(state_dir: &Path, job: &str, state: &JobState) -> std::io::Result<()> {
    let mut s = state.clone();
    s.version = VERSION;
    let bytes = serde_json::to_vec_pretty(&s).map_err(std::io::Error::other)?;
    crate::fsutil::atomic_write(&path(state_dir, job), &bytes, 0o600)
}
