//! aws-cron-monitor (LLD section 2): did each cron Lambda run, and did it run cleanly?
//! CloudWatch `GetMetricData` (`AWS/Lambda` `Invocations` and `Errors`, sum) →
//! healthchecks.io, one ping per expected run.
//!
//! For each function, each run:
//! 1. The expected run is the latest time of its `schedule` at least `settle` ago; its
//!    window ends at the next expected run, or now.
//! 2. `GetMetricData` sums `Invocations` and `Errors` over the window.
//! 3. Not run yet (no invocation): nothing is sent, so healthchecks' own period and
//!    grace raise the alarm — and the job looks again on its next run, so a late run
//!    is still reported. Ran: the check URL is pinged (`/fail` if any invocation
//!    erred), once per expected run; the expected run pinged is persisted in
//!    `<state_dir>/jobs/<job>.aws-cron.json` before the next function is looked at.
//!
//! A ping URL is a credential (anyone holding it can report success): it comes from
//! the env file and never appears in errors or logs.

use super::aws::{self, ClientConfig};
use super::clock::unix_seconds;
use super::http::{self, HttpError};
use super::textfile::Textfile;
use super::{JobContext, JobError};
use crate::desired::model::aws_job::{AwsCronMonitorJob, CronFunction};
use crate::desired::schedule::Schedule;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Persisted per function.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionState {
    /// The expected run last reported to healthchecks (never pinged twice).
    #[serde(default)]
    pub reported_run: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_ping: Option<DateTime<Utc>>,
    #[serde(default)]
    pub pings_success: u64,
    #[serde(default)]
    pub pings_fail: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MonitorState {
    #[serde(default)]
    pub functions: BTreeMap<String, FunctionState>,
}

pub fn state_path(ctx: &JobContext, job_name: &str) -> PathBuf {
    ctx.state_dir
        .join("jobs")
        .join(format!("{job_name}.aws-cron.json"))
}

/// A lost or unreadable state costs at most one repeated ping per function: start empty.
fn load_state(ctx: &JobContext, job_name: &str) -> MonitorState {
    let p = state_path(ctx, job_name);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!(file = %p.display(), error = %e, "ignoring unreadable aws-cron-monitor state");
            MonitorState::default()
        }),
        Err(_) => MonitorState::default(),
    }
}

fn save_state(ctx: &JobContext, job_name: &str, st: &MonitorState) -> Result<(), JobError> {
    let p = state_path(ctx, job_name);
    let bytes = serde_json::to_vec_pretty(st).map_err(|e| JobError::Failed(e.to_string()))?;
    crate::fsutil::atomic_write(&p, &bytes, 0o600).map_err(|source| JobError::Io {
        what: format!("writing {}", p.display()),
        source,
    })
}

/// What a run saw for one function.
#[derive(Debug, Clone, Default)]
struct Seen {
    expected: Option<DateTime<Utc>>,
    invocations: f64,
    errors: f64,
    up: bool,
}

pub async fn run(
    ctx: &JobContext,
    job_name: &str,
    job: &AwsCronMonitorJob,
    cancel: &CancellationToken,
    deadline: Option<Instant>,
) -> Result<(), JobError> {
    let dir = ctx.textfile_dir()?.to_path_buf();
    if job.region.is_empty() || job.region.contains("${") {
        return Err(JobError::Config("awsCronMonitor.region is not set".into()));
    }
    let mut state = load_state(ctx, job_name);
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let mut errors = Vec::new();
    let client = aws::Client::new(
        ctx,
        &aws::CLOUDWATCH,
        &ClientConfig {
            region: &job.region,
            api_base: job.api_base.as_deref(),
            access_key_id_env: &job.access_key_id_env,
            secret_access_key_env: &job.secret_access_key_env,
        },
        cancel,
        deadline,
    );
    match client {
        Err(e) => errors.push(e.to_string()),
        Ok(client) => {
            for f in &job.functions {
                let mut s = Seen::default();
                match check(ctx, job, f, &client, &mut state, &mut s, cancel).await {
                    Ok(()) => s.up = true,
                    Err(e) => {
                        tracing::warn!(job = %job_name, function = %f.function_name, error = %e, "cron Lambda not checked");
                        errors.push(format!("{}: {e}", f.function_name));
                    }
                }
                seen.insert(f.function_name.clone(), s);
                save_state(ctx, job_name, &state)?;
            }
        }
    }
    render(job, &seen, &state, ctx.clock.now()).write(&dir, &job.textfile)?;
    if errors.is_empty() {
        Ok(())
    } else {
        Err(JobError::Partial(errors.join("; ")))
    }
}

/// The latest expected run at or before `t`, and the one after it. `@every` schedules
/// are aligned to the Unix epoch (AWS does not expose a `rate()` schedule's phase).
pub fn expected_run(
    sched: &Schedule,
    t: DateTime<Utc>,
) -> Option<(DateTime<Utc>, Option<DateTime<Utc>>)> {
    let slot = sched.latest_between(DateTime::UNIX_EPOCH, t)?;
    Some((slot, sched.next_after(slot)))
}

async fn check(
    ctx: &JobContext,
    job: &AwsCronMonitorJob,
    f: &CronFunction,
    client: &aws::Client<'_>,
    state: &mut MonitorState,
    seen: &mut Seen,
    cancel: &CancellationToken,
) -> Result<(), JobError> {
    let sched = Schedule::parse(&f.schedule).map_err(JobError::Config)?;
    let now = ctx.clock.now();
    let settle = chrono::Duration::from_std(job.settle.0).unwrap_or_default();
    let Some((expected, next)) = expected_run(&sched, now - settle) else {
        return Ok(()); // the schedule has not fired yet
    };
    seen.expected = Some(expected);
    let end = next.map_or(now, |n| n.min(now));
    let (invocations, errors) = lambda_sums(client, &f.function_name, expected, end).await?;
    seen.invocations = invocations;
    seen.errors = errors;
    let st = state.functions.entry(f.function_name.clone()).or_default();
    if invocations <= 0.0 && errors <= 0.0 {
        tracing::debug!(function = %f.function_name, expected = %expected, "not run yet: no ping");
        return Ok(());
    }
    if st.reported_run == Some(expected) {
        return Ok(());
    }
    let failed = errors > 0.0;
    ping(ctx, f, failed, cancel).await?;
    st.reported_run = Some(expected);
    st.last_ping = Some(now);
    if failed {
        st.pings_fail += 1;
    } else {
        st.pings_success += 1;
    }
    tracing::info!(function = %f.function_name, expected = %expected, invocations, errors, "cron Lambda reported to healthchecks");
    Ok(())
}

#[derive(Deserialize)]
struct GetMetricDataOutput {
    #[serde(rename = "MetricDataResults", default)]
    results: Vec<MetricDataResult>,
    #[serde(rename = "NextToken", default)]
    next_token: Option<String>,
}

#[derive(Deserialize)]
struct MetricDataResult {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Values", default)]
    values: Vec<f64>,
}

/// `(Invocations, Errors)` summed over `[start, end]`, one period spanning the window.
async fn lambda_sums(
    client: &aws::Client<'_>,
    function: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<(f64, f64), JobError> {
    let span = (end - start).num_seconds().max(1);
    let period = ((span + 59) / 60) * 60;
    let query = |id: &str, metric: &str| {
        serde_json::json!({
            "Id": id,
            "MetricStat": {
                "Metric": {
                    "Namespace": "AWS/Lambda",
                    "MetricName": metric,
                    "Dimensions": [{"Name": "FunctionName", "Value": function}],
                },
                "Period": period,
                "Stat": "Sum",
            },
            "ReturnData": true,
        })
    };
    let mut body = serde_json::json!({
        "MetricDataQueries": [query("invocations", "Invocations"), query("errors", "Errors")],
        "StartTime": start.timestamp(),
        "EndTime": end.timestamp().max(start.timestamp() + 1),
    });
    let (mut inv, mut err) = (0.0, 0.0);
    let mut token: Option<String> = None;
    for _ in 0..100 {
        if let Some(t) = &token {
            body["NextToken"] = t.clone().into();
        }
        let out: GetMetricDataOutput = client.call_default("GetMetricData", &body).await?;
        for r in out.results {
            let sum: f64 = r.values.iter().sum();
            match r.id.as_str() {
                "invocations" => inv += sum,
                "errors" => err += sum,
                _ => {}
            }
        }
        match out.next_token {
            Some(t) if !t.is_empty() && Some(&t) != token.as_ref() => token = Some(t),
            _ => break,
        }
    }
    Ok((inv, err))
}

/// GET the check URL, or `<url>/fail`. Errors name the function, never the URL.
async fn ping(
    ctx: &JobContext,
    f: &CronFunction,
    failed: bool,
    cancel: &CancellationToken,
) -> Result<(), JobError> {
    let secret = ctx.secret(&f.ping_url_env)?;
    let base = secret.expose().trim_end_matches('/');
    let target = if failed {
        format!("{base}/fail")
    } else {
        base.to_string()
    };
    let url = reqwest::Url::parse(&target).map_err(|_| {
        JobError::Config(format!("`{}` in the env file is not a URL", f.ping_url_env))
    })?;
    let what = format!(
        "healthchecks ping ({})",
        if failed { "fail" } else { "success" }
    );
    let resp = http::send(&ctx.retry, cancel, &what, || {
        ctx.http.get(url.clone()).timeout(ctx.request_timeout)
    })
    .await
    .map_err(strip_url)?;
    http::check(&what, resp).await.map_err(strip_url)?;
    Ok(())
}

/// reqwest's errors print the request URL, here a credential: drop it.
fn strip_url(e: HttpError) -> JobError {
    match e {
        HttpError::Transport { what, source } => JobError::Http(HttpError::Transport {
            what,
            source: source.without_url(),
        }),
        other => JobError::Http(other),
    }
}

fn render(
    job: &AwsCronMonitorJob,
    seen: &BTreeMap<String, Seen>,
    state: &MonitorState,
    now: DateTime<Utc>,
) -> Textfile {
    let mut tf = Textfile::new();
    tf.gauge(
        "aws_cron_invocations",
        "Invocations (sum) since the latest expected run.",
    );
    tf.gauge(
        "aws_cron_errors",
        "Errors (sum) since the latest expected run.",
    );
    tf.gauge(
        "aws_cron_ran",
        "1 if the function has run since its latest expected run.",
    );
    tf.gauge(
        "aws_cron_expected_run_timestamp_seconds",
        "Unix time of the latest expected run judged (0: none yet).",
    );
    tf.gauge(
        "aws_cron_last_ping_timestamp_seconds",
        "Unix time of the last healthchecks ping (0: none).",
    );
    tf.counter(
        "aws_cron_pings_total",
        "healthchecks pings sent, by result (success | fail).",
    );
    tf.gauge(
        "aws_cron_scrape_up",
        "1 if the last run read the function's metrics (and pinged when due).",
    );
    for f in &job.functions {
        let l: &[(&str, &str)] = &[("function", &f.function_name)];
        let s = seen.get(&f.function_name).cloned().unwrap_or_default();
        let st = state
            .functions
            .get(&f.function_name)
            .cloned()
            .unwrap_or_default();
        tf.gauge("aws_cron_scrape_up", "")
            .sample(l, if s.up { 1.0 } else { 0.0 });
        if s.up {
            tf.gauge("aws_cron_invocations", "")
                .sample(l, s.invocations);
            tf.gauge("aws_cron_errors", "").sample(l, s.errors);
            let ran = s.invocations > 0.0 || s.errors > 0.0;
            tf.gauge("aws_cron_ran", "")
                .sample(l, if ran { 1.0 } else { 0.0 });
            tf.gauge("aws_cron_expected_run_timestamp_seconds", "")
                .sample(l, s.expected.map(unix_seconds).unwrap_or(0.0));
        }
        tf.gauge("aws_cron_last_ping_timestamp_seconds", "")
            .sample(l, st.last_ping.map(unix_seconds).unwrap_or(0.0));
        tf.counter("aws_cron_pings_total", "")
            .sample(
                &[("function", &f.function_name), ("result", "success")],
                st.pings_success as f64,
            )
            .sample(
                &[("function", &f.function_name), ("result", "fail")],
                st.pings_fail as f64,
            );
    }
    tf.gauge(
        "aws_cron_monitor_last_run_timestamp_seconds",
        "Unix time the aws-cron-monitor job last wrote this file.",
    )
    .set(unix_seconds(now));
    tf
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn expected_runs() {
        let t = Utc.with_ymd_and_hms(2026, 3, 15, 10, 7, 0).unwrap();
        let daily = Schedule::parse("0 3 * * *").unwrap();
        let (e, n) = expected_run(&daily, t).unwrap();
        assert_eq!(e, Utc.with_ymd_and_hms(2026, 3, 15, 3, 0, 0).unwrap());
        assert_eq!(n, Some(Utc.with_ymd_and_hms(2026, 3, 16, 3, 0, 0).unwrap()));
        let hourly = Schedule::parse("@every 1h").unwrap();
        let (e, n) = expected_run(&hourly, t).unwrap();
        assert_eq!(e, Utc.with_ymd_and_hms(2026, 3, 15, 10, 0, 0).unwrap());
        assert_eq!(
            n,
            Some(Utc.with_ymd_and_hms(2026, 3, 15, 11, 0, 0).unwrap())
        );
        // On the boundary the slot itself counts.
        let (e, _) = expected_run(&hourly, e).unwrap();
        assert_eq!(e, Utc.with_ymd_and_hms(2026, 3, 15, 10, 0, 0).unwrap());
    }
}
