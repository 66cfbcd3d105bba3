//! logs-shipper (LLD section 2): CloudWatch Logs (`FilterLogEvents` per log group) and
//! CloudTrail (`LookupEvents`) → Loki, at $0 (pull, no Firehose).
//!
//! Per source (each log group, and CloudTrail), each run:
//! 1. The window starts `overlap` before the source's watermark (events that reached AWS
//!    late) and spans at most `maxWindow`, ending now at the latest. A watermark older
//!    than `maxCatchUp` is moved up first (Loki would refuse what lies before).
//! 2. Every page of the window is read (`nextToken` / `NextToken`); throttling is backed
//!    off within the run's deadline ([`super::aws`]).
//! 3. Events whose ID is among the ones already shipped near the watermark are dropped;
//!    the rest become Loki entries, sorted per stream and packed into requests of at
//!    most `batchBytes` ([`super::loki`]).
//! 4. After each request Loki accepted, the shipped IDs are added to the checkpoint and
//!    the checkpoint file is replaced atomically; after the last one the watermark moves
//!    to the window's end. Then the next window, until caught up or out of time.
//!
//! So a crash loses nothing (the watermark only moves after Loki has everything before
//! it) and repeats at most the one request that was in flight; a Loki outage stops the
//! source where it was. The checkpoint file `<state_dir>/jobs/<job>.logs-shipper.json`
//! takes over the legacy `logs_ckpt` volume's role.

mod cloudtrail;
mod cloudwatch;

use cloudtrail::lookup_events;
use cloudwatch::filter_log_events;
pub use cloudwatch::message_is_auth;

use super::aws::{self, ClientConfig};
use super::clock::unix_seconds;
use super::http::HttpError;
use super::loki::{self, Pushed};
use super::textfile::Textfile;
use super::{JobContext, JobError};
use crate::desired::model::aws_job::{
    CloudTrailSource, CloudWatchLogsSource, LogGroup, LogsShipperJob,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Runaway guard: pages read for one window (lower `maxWindow` if a window needs more).
pub const MAX_PAGES_PER_WINDOW: usize = 2_000;

/// Persisted per source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceState {
    /// Every event stamped before this instant (ms since the epoch) is in Loki, or was
    /// refused by it for good.
    pub watermark_ms: i64,
    /// De-duplication keys of the events shipped at or after `watermark − overlap`
    /// (what the next window re-reads), with their timestamps (ms) for pruning.
    #[serde(default)]
    pub shipped_ids: BTreeMap<String, i64>,
    #[serde(default)]
    pub shipped_total: u64,
    #[serde(default)]
    pub rejected_total: u64,
    #[serde(default)]
    pub auth_total: u64,
    /// Time skipped because the watermark was older than `maxCatchUp`, in ms.
    #[serde(default)]
    pub skipped_ms_total: u64,
    #[serde(default)]
    pub last_success: Option<DateTime<Utc>>,
}

/// The job's checkpoint file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShipperState {
    /// `cloudtrail`, or `cloudwatch:<log group>`.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceState>,
}

pub fn state_path(ctx: &JobContext, job_name: &str) -> PathBuf {
    ctx.state_dir
        .join("jobs")
        .join(format!("{job_name}.logs-shipper.json"))
}

/// The checkpoint, or an empty one when there is none. An unreadable file is an error,
/// not a fresh start: starting over would re-ship (or skip) whole windows.
pub fn load_state(ctx: &JobContext, job_name: &str) -> Result<ShipperState, JobError> {
    let p = state_path(ctx, job_name);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            JobError::Failed(format!(
                "checkpoint {} is unreadable ({e}); move it away to start over from initialLookback",
                p.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ShipperState::default()),
        Err(source) => Err(JobError::Io {
            what: format!("reading {}", p.display()),
            source,
        }),
    }
}

fn save_state(ctx: &JobContext, job_name: &str, st: &ShipperState) -> Result<(), JobError> {
    let p = state_path(ctx, job_name);
    let bytes = serde_json::to_vec(st).map_err(|e| JobError::Failed(e.to_string()))?;
    crate::fsutil::atomic_write(&p, &bytes, 0o600).map_err(|source| JobError::Io {
        what: format!("writing {}", p.display()),
        source,
    })
}

/// One source of the job.
#[derive(Debug, Clone, Copy)]
enum Source<'a> {
    LogGroup(&'a CloudWatchLogsSource, &'a LogGroup),
    Trail(&'a CloudTrailSource),
}

impl Source<'_> {
    fn key(&self) -> String {
        match self {
            Source::LogGroup(_, g) => format!("cloudwatch:{}", g.name),
            Source::Trail(_) => "cloudtrail".into(),
        }
    }

    fn overlap_ms(&self) -> i64 {
        let d = match self {
            Source::LogGroup(cw, _) => cw.overlap.0,
            Source::Trail(ct) => ct.overlap.0,
        };
        d.as_millis() as i64
    }

    /// Metric labels.
    fn metric_labels(&self) -> Vec<(&str, &str)> {
        match self {
            Source::LogGroup(_, g) => {
                vec![("source", "cloudwatch"), ("log_group", g.name.as_str())]
            }
            Source::Trail(_) => vec![("source", "cloudtrail")],
        }
    }

    fn describe(&self) -> String {
        match self {
            Source::LogGroup(_, g) => format!("cloudwatch {}", g.name),
            Source::Trail(_) => "cloudtrail".into(),
        }
    }

    /// Stream labels of an event (`security` is per event).
    fn stream_labels(&self, job: &LogsShipperJob, auth: bool) -> BTreeMap<String, String> {
        let mut l = job.labels.clone();
        let (source, app) = match self {
            Source::LogGroup(_, g) => {
                l.insert("log_group".into(), g.name.clone());
                ("cloudwatch", g.app.as_str())
            }
            Source::Trail(_) => ("cloudtrail", "cloudtrail"),
        };
        l.insert("source".into(), source.into());
        l.insert("source_app".into(), app.into());
        l.insert("security".into(), if auth { "auth" } else { "none" }.into());
        l
    }
}

/// An event read from AWS.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    /// De-duplication key: 16 hex digits of SHA-256 over the source's event identity.
    key: String,
    ts_ms: i64,
    line: String,
    auth: bool,
}

impl Event {
    /// Loki timestamp: the event's millisecond plus a sub-millisecond offset from the
    /// key, so equal-instant events stay distinct and a re-push is identical.
    fn ts_ns(&self) -> i128 {
        let offset = u64::from_str_radix(&self.key[..8], 16).unwrap_or(0) % 1_000_000;
        i128::from(self.ts_ms) * 1_000_000 + i128::from(offset)
    }
}

fn event_key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

/// What one run did for a source (for the textfile and the run's result).
#[derive(Debug, Default)]
struct Outcome {
    up: bool,
    error: Option<String>,
}

pub async fn run(
    ctx: &JobContext,
    job_name: &str,
    job: &LogsShipperJob,
    cancel: &CancellationToken,
    deadline: Option<Instant>,
) -> Result<(), JobError> {
    let dir = ctx.textfile_dir()?.to_path_buf();
    if job.region.is_empty() || job.region.contains("${") {
        return Err(JobError::Config("logsShipper.region is not set".into()));
    }
    let mut state = load_state(ctx, job_name)?;
    let loki = loki::Client::new(ctx, &job.loki_url, cancel, deadline).map_err(JobError::Config)?;

    let mut sources: Vec<Source<'_>> = Vec::new();
    if let Some(cw) = &job.cloud_watch_logs {
        sources.extend(cw.log_groups.iter().map(|g| Source::LogGroup(cw, g)));
    }
    if let Some(ct) = &job.cloud_trail {
        sources.push(Source::Trail(ct));
    }

    let mut outcomes: Vec<(Source<'_>, Outcome)> = Vec::new();
    let mut loki_down: Option<String> = None;
    for src in sources {
        let outcome = if let Some(why) = &loki_down {
            Outcome {
                up: false,
                error: Some(format!("not shipped: {why}")),
            }
        } else {
            let mut sh = Shipper {
                ctx,
                job_name,
                job,
                src,
                loki: &loki,
                cancel,
                deadline,
            };
            match sh.ship(&mut state).await {
                Ok(()) => Outcome {
                    up: true,
                    error: None,
                },
                Err(ShipError::Loki(e)) => {
                    let msg = super::error_chain(&e);
                    loki_down = Some(format!("Loki unavailable ({msg})"));
                    Outcome {
                        up: false,
                        error: Some(msg),
                    }
                }
                Err(ShipError::Aws(e)) => Outcome {
                    up: false,
                    error: Some(e.to_string()),
                },
                Err(ShipError::Fatal(e)) => return Err(e),
            }
        };
        if let Some(e) = &outcome.error {
            tracing::warn!(job = %job_name, source = %src.describe(), error = %e, "logs not shipped");
        }
        outcomes.push((src, outcome));
    }

    render(&state, &outcomes, ctx.clock.now()).write(&dir, &job.textfile)?;
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|(s, o)| o.error.as_ref().map(|e| format!("{}: {e}", s.describe())))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(JobError::Partial(failed.join("; ")))
    }
}

enum ShipError {
    /// Reading AWS failed: this source stops, the others go on.
    Aws(JobError),
    /// Loki is unreachable or refusing: no source can ship this run.
    Loki(HttpError),
    /// The checkpoint could not be written: stop everything.
    Fatal(JobError),
}

struct Shipper<'a> {
    ctx: &'a JobContext,
    job_name: &'a str,
    job: &'a LogsShipperJob,
    src: Source<'a>,
    loki: &'a loki::Client<'a>,
    cancel: &'a CancellationToken,
    deadline: Option<Instant>,
}

impl Shipper<'_> {
    /// Time left for another window: two request timeouts (a page and a push).
    fn time_left(&self) -> bool {
        self.deadline
            .is_none_or(|d| Instant::now() + self.ctx.request_timeout * 2 < d)
    }

    async fn ship(&mut self, state: &mut ShipperState) -> Result<(), ShipError> {
        let key = self.src.key();
        let overlap = self.src.overlap_ms();
        let lookback = self.job.initial_lookback.0.as_millis() as i64;
        let max_window = self.job.max_window.0.as_millis() as i64;
        let max_catch_up = self.job.max_catch_up.0.as_millis() as i64;
        let start_now = self.ctx.clock.now().timestamp_millis();
        state
            .sources
            .entry(key.clone())
            .or_insert_with(|| SourceState {
                watermark_ms: start_now - lookback,
                ..Default::default()
            });
        let client = self.aws_client().map_err(ShipError::Aws)?;
        let mut last_call: Option<Instant> = None;
        loop {
            let now = self.ctx.clock.now().timestamp_millis();
            let st = state.sources.get_mut(&key).expect("inserted above");
            let floor = now - max_catch_up;
            if st.watermark_ms < floor {
                tracing::warn!(source = %self.src.describe(), skipped_s = (floor - st.watermark_ms) / 1000, "checkpoint older than maxCatchUp: skipping ahead");
                st.skipped_ms_total += (floor - st.watermark_ms) as u64;
                st.watermark_ms = floor;
                st.shipped_ids.clear();
            }
            let watermark = st.watermark_ms;
            let start = watermark - overlap;
            let end = (watermark + max_window).min(now);
            if end < watermark {
                // The clock went back; nothing to read until it passes the watermark.
                st.last_success = Some(self.ctx.clock.now());
                return Ok(());
            }
            let events = match self.src {
                Source::LogGroup(cw, g) => filter_log_events(&client, cw, g, start, end).await,
                Source::Trail(ct) => {
                    lookup_events(&client, ct, start, end, self.cancel, &mut last_call).await
                }
            }
            .map_err(ShipError::Aws)?;
            // APIs of second precision (CloudTrail) may answer a little outside the
            // window asked for; what lies outside belongs to another window.
            let events: Vec<Event> = events
                .into_iter()
                .filter(|e| e.ts_ms >= start && e.ts_ms <= end)
                .collect();
            let fresh: Vec<Event> = {
                let mut keys: HashSet<&str> = st.shipped_ids.keys().map(String::as_str).collect();
                let mut v = Vec::new();
                for e in &events {
                    if keys.insert(e.key.as_str()) {
                        v.push(e.clone());
                    }
                }
                v
            };
            tracing::debug!(source = %self.src.describe(), read = events.len(), fresh = fresh.len(), start, end, "window read");
            self.push_all(state, &key, fresh).await?;
            let st = state.sources.get_mut(&key).expect("inserted above");
            st.watermark_ms = end + 1;
            let keep_from = st.watermark_ms - overlap;
            st.shipped_ids.retain(|_, ts| *ts >= keep_from);
            st.last_success = Some(self.ctx.clock.now());
            save_state(self.ctx, self.job_name, state).map_err(ShipError::Fatal)?;
            if end >= now || !self.time_left() {
                return Ok(());
            }
        }
    }

    async fn push_all(
        &self,
        state: &mut ShipperState,
        key: &str,
        fresh: Vec<Event>,
    ) -> Result<(), ShipError> {
        if fresh.is_empty() {
            return Ok(());
        }
        let ts_of: BTreeMap<String, (i64, bool)> = fresh
            .iter()
            .map(|e| (e.key.clone(), (e.ts_ms, e.auth)))
            .collect();
        let mut streams: BTreeMap<BTreeMap<String, String>, Vec<loki::Entry>> = BTreeMap::new();
        for e in &fresh {
            let labels = self.src.stream_labels(self.job, e.auth);
            streams.entry(labels).or_default().push(loki::Entry {
                ts_ns: e.ts_ns(),
                line: truncate_line(&e.line, self.job.max_line_bytes as usize),
                key: e.key.clone(),
            });
        }
        let streams = streams
            .into_iter()
            .map(|(labels, entries)| loki::Stream { labels, entries })
            .collect();
        for batch in loki::batches(streams, self.job.batch_bytes as usize) {
            let pushed = self
                .loki
                .push(&batch, &self.ctx.retry)
                .await
                .map_err(ShipError::Loki)?;
            let st = state.sources.get_mut(key).expect("inserted by ship");
            let n = batch.len() as u64;
            match pushed {
                Pushed::Accepted => st.shipped_total += n,
                Pushed::Rejected { ignored, detail } => {
                    tracing::warn!(source = %self.src.describe(), ignored, detail = %detail, "Loki refused entries for good");
                    st.rejected_total += ignored as u64;
                    st.shipped_total += n - ignored as u64;
                }
            }
            for k in batch.keys() {
                let (ts, auth) = ts_of[k];
                st.shipped_ids.insert(k.to_string(), ts);
                if auth {
                    st.auth_total += 1;
                }
            }
            // Durable before the next push: a crash repeats at most this one request.
            save_state(self.ctx, self.job_name, state).map_err(ShipError::Fatal)?;
        }
        Ok(())
    }

    fn aws_client(&self) -> Result<aws::Client<'_>, JobError> {
        let (service, api_base) = match self.src {
            Source::LogGroup(cw, _) => (&aws::CLOUDWATCH_LOGS, cw.api_base.as_deref()),
            Source::Trail(ct) => (&aws::CLOUDTRAIL, ct.api_base.as_deref()),
        };
        aws::Client::new(
            self.ctx,
            service,
            &ClientConfig {
                region: &self.job.region,
                api_base,
                access_key_id_env: &self.job.access_key_id_env,
                secret_access_key_env: &self.job.secret_access_key_env,
            },
            self.cancel,
            self.deadline,
        )
    }
}

/// Cut a line to at most `max` bytes (on a character boundary), marked as cut.
fn truncate_line(line: &str, max: usize) -> String {
    const MARK: &str = "…[truncated]";
    if line.len() <= max {
        return line.to_string();
    }
    let mut cut = max.saturating_sub(MARK.len());
    while cut > 0 && !line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{MARK}", &line[..cut])
}

// ------------------------------------------------------------------------- metrics

fn render(
    state: &ShipperState,
    outcomes: &[(Source<'_>, Outcome)],
    now: DateTime<Utc>,
) -> Textfile {
    let mut tf = Textfile::new();
    tf.counter(
        "logs_shipper_events_shipped_total",
        "Events Loki accepted, per source (each event counted once).",
    );
    tf.counter(
        "logs_shipper_events_rejected_total",
        "Events Loki refused for good (HTTP 400: too old, too far behind, too long).",
    );
    tf.counter(
        "logs_shipper_auth_events_total",
        "Shipped events labelled security=\"auth\".",
    );
    tf.gauge(
        "logs_shipper_lag_seconds",
        "Now minus the source's checkpoint: how far behind Loki is.",
    );
    tf.gauge(
        "logs_shipper_last_success_timestamp_seconds",
        "Unix time of the source's last fully shipped window (0: none yet).",
    );
    tf.gauge(
        "logs_shipper_scrape_up",
        "1 if the last run read the source and Loki accepted everything.",
    );
    tf.counter(
        "logs_shipper_skipped_seconds_total",
        "Time skipped because the checkpoint was older than maxCatchUp.",
    );
    for (src, outcome) in outcomes {
        let l = src.metric_labels();
        let st = state.sources.get(&src.key()).cloned().unwrap_or_default();
        tf.counter("logs_shipper_events_shipped_total", "")
            .sample(&l, st.shipped_total as f64);
        tf.counter("logs_shipper_events_rejected_total", "")
            .sample(&l, st.rejected_total as f64);
        tf.counter("logs_shipper_auth_events_total", "")
            .sample(&l, st.auth_total as f64);
        let lag = if st.watermark_ms == 0 {
            0.0
        } else {
            ((now.timestamp_millis() - (st.watermark_ms - 1)).max(0)) as f64 / 1000.0
        };
        tf.gauge("logs_shipper_lag_seconds", "").sample(&l, lag);
        tf.gauge("logs_shipper_last_success_timestamp_seconds", "")
            .sample(&l, st.last_success.map(unix_seconds).unwrap_or(0.0));
        tf.gauge("logs_shipper_scrape_up", "")
            .sample(&l, if outcome.up { 1.0 } else { 0.0 });
        tf.counter("logs_shipper_skipped_seconds_total", "")
            .sample(&l, st.skipped_ms_total as f64 / 1000.0);
    }
    tf.gauge(
        "logs_shipper_last_run_timestamp_seconds",
        "Unix time the logs-shipper job last wrote this file.",
    )
    .set(unix_seconds(now));
    tf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_distinct_and_stable() {
        let a = Event {
            key: event_key(&["s", "1"]),
            ts_ms: 1_700_000_000_123,
            line: "x".into(),
            auth: false,
        };
        let b = Event {
            key: event_key(&["s", "2"]),
            ..a.clone()
        };
        assert_ne!(a.ts_ns(), b.ts_ns());
        assert_eq!(a.ts_ns() / 1_000_000, 1_700_000_000_123);
        assert_eq!(a.ts_ns(), a.clone().ts_ns());
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        let l = "é".repeat(100);
        let t = truncate_line(&l, 50);
        assert!(t.len() <= 50 && t.ends_with("…[truncated]"), "{t}");
        assert_eq!(truncate_line("short", 50), "short");
    }
}
