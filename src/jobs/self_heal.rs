//! self-heal (LLD section 10): redeploy an App Runner service whose deep readiness probe
//! says "app up, database down" (HTTP 503), so it re-reads its database secret.
//!
//! Per app, each run:
//! 1. `GET readyUrl` (timeout `probeTimeout`, no retries). Anything but 503 — 2xx, 404,
//!    403, a timeout, a refused connection — ends here: only 503 means the app itself is
//!    up and asking for help.
//! 2. In cooldown (a deployment started less than `cooldown` ago, persisted in
//!    `<state_dir>/jobs/<job>.self-heal.json`, so a restart does not reset it) → skip.
//! 3. `AppRunner.ListOperations`: one PENDING or IN_PROGRESS → skip.
//! 4. `AppRunner.StartDeployment` (sent once, never retried: a second deployment is
//!    never what we want), and the cooldown starts.
//!
//! The run fails when a heal was needed and could not be started (missing credentials,
//! an AWS error); probe results are observations, not failures. Counters are kept in the
//! state file so the textfile's `*_total` series never go backwards across restarts.

use super::clock::unix_seconds;
use super::http::RetryPolicy;
use super::textfile::Textfile;
use super::{aws, JobContext, JobError};
use crate::desired::model::job::{SelfHealApp, SelfHealJob};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// Persisted per-app state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppState {
    #[serde(default)]
    pub last_heal_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub heals_triggered: u64,
    #[serde(default)]
    pub heal_errors: u64,
    #[serde(default)]
    pub cooldown_skips: u64,
    #[serde(default)]
    pub in_progress_skips: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealState {
    #[serde(default)]
    pub apps: BTreeMap<String, AppState>,
}

pub fn state_path(ctx: &JobContext, job_name: &str) -> PathBuf {
    ctx.state_dir
        .join("jobs")
        .join(format!("{job_name}.self-heal.json"))
}

fn load_state(ctx: &JobContext, job_name: &str) -> HealState {
    let p = state_path(ctx, job_name);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!(file = %p.display(), error = %e, "ignoring unreadable self-heal state");
            HealState::default()
        }),
        Err(_) => HealState::default(),
    }
}

fn save_state(ctx: &JobContext, job_name: &str, st: &HealState) -> Result<(), JobError> {
    let p = state_path(ctx, job_name);
    let bytes = serde_json::to_vec_pretty(st).map_err(|e| JobError::Failed(e.to_string()))?;
    crate::fsutil::atomic_write(&p, &bytes, 0o600).map_err(|source| JobError::Io {
        what: format!("writing {}", p.display()),
        source,
    })
}

/// What a readiness probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Status(u16),
    Timeout,
    /// Refused, reset, DNS, TLS …
    Unreachable(String),
}

impl Probe {
    fn status_code(&self) -> f64 {
        match self {
            Probe::Status(s) => f64::from(*s),
            _ => 0.0,
        }
    }
}

async fn probe(ctx: &JobContext, job: &SelfHealJob, app: &SelfHealApp) -> Probe {
    match ctx
        .http
        .get(&app.ready_url)
        .timeout(job.probe_timeout.0)
        .send()
        .await
    {
        Ok(r) => Probe::Status(r.status().as_u16()),
        Err(e) if e.is_timeout() => Probe::Timeout,
        Err(e) => Probe::Unreachable(super::error_chain(&e)),
    }
}

pub async fn run(
    ctx: &JobContext,
    job_name: &str,
    job: &SelfHealJob,
    cancel: &CancellationToken,
) -> Result<(), JobError> {
    let mut state = load_state(ctx, job_name);
    let mut probes: BTreeMap<String, Probe> = BTreeMap::new();
    let mut errors = Vec::new();

    for app in &job.apps {
        let p = probe(ctx, job, app).await;
        tracing::debug!(app = %app.name, probe = ?p, "readiness probe");
        probes.insert(app.name.clone(), p.clone());
        if p != Probe::Status(503) {
            continue;
        }
        let now = ctx.clock.now();
        let st = state.apps.entry(app.name.clone()).or_default();
        if let Some(last) = st.last_heal_at {
            let since = (now - last).to_std().unwrap_or_default();
            if since < job.cooldown.0 {
                st.cooldown_skips += 1;
                tracing::info!(app = %app.name, last_heal = %last, "503 but in cooldown; not redeploying");
                continue;
            }
        }
        match heal(ctx, job, app, cancel).await {
            Ok(Heal::Started(op)) => {
                st.heals_triggered += 1;
                st.last_heal_at = Some(now);
                tracing::warn!(app = %app.name, operation = %op, "readiness 503: App Runner deployment started");
            }
            Ok(Heal::InProgress) => {
                st.in_progress_skips += 1;
                tracing::info!(app = %app.name, "503 but a deployment is already pending or in progress");
            }
            Err(e) => {
                st.heal_errors += 1;
                tracing::warn!(app = %app.name, error = %e, "readiness 503 but the deployment could not be started");
                errors.push(format!("{}: {e}", app.name));
            }
        }
        // Durable before anything else happens: the cooldown must survive a crash.
        save_state(ctx, job_name, &state)?;
    }
    save_state(ctx, job_name, &state)?;

    if let Some(dir) = &ctx.textfile_dir {
        render(job, &probes, &state, ctx.clock.now()).write(dir, &job.textfile)?;
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(JobError::Partial(errors.join("; ")))
    }
}

fn render(
    job: &SelfHealJob,
    probes: &BTreeMap<String, Probe>,
    state: &HealState,
    now: DateTime<Utc>,
) -> Textfile {
    let mut tf = Textfile::new();
    tf.gauge(
        "self_heal_probe_status_code",
        "HTTP status of the last readiness probe (0: no HTTP answer).",
    );
    tf.gauge(
        "self_heal_probe_up",
        "1 if the last readiness probe answered 2xx.",
    );
    tf.counter(
        "self_heal_heals_triggered_total",
        "App Runner deployments started by self-heal.",
    );
    tf.counter(
        "self_heal_heal_errors_total",
        "Heals needed (503) that could not be started.",
    );
    tf.counter(
        "self_heal_skips_total",
        "Heals needed (503) but skipped, by reason.",
    );
    tf.gauge(
        "self_heal_last_heal_timestamp_seconds",
        "Unix time of the last deployment started (0: none).",
    );
    for app in &job.apps {
        let l: &[(&str, &str)] = &[("app", &app.name)];
        if let Some(p) = probes.get(&app.name) {
            tf.gauge("self_heal_probe_status_code", "")
                .sample(l, p.status_code());
            let up = matches!(p, Probe::Status(s) if (200..300).contains(s));
            tf.gauge("self_heal_probe_up", "")
                .sample(l, if up { 1.0 } else { 0.0 });
        }
        let st = state.apps.get(&app.name).cloned().unwrap_or_default();
        tf.counter("self_heal_heals_triggered_total", "")
            .sample(l, st.heals_triggered as f64);
        tf.counter("self_heal_heal_errors_total", "")
            .sample(l, st.heal_errors as f64);
        tf.counter("self_heal_skips_total", "")
            .sample(
                &[("app", &app.name), ("reason", "cooldown")],
                st.cooldown_skips as f64,
            )
            .sample(
                &[("app", &app.name), ("reason", "operation_in_progress")],
                st.in_progress_skips as f64,
            );
        tf.gauge("self_heal_last_heal_timestamp_seconds", "")
            .sample(l, st.last_heal_at.map(unix_seconds).unwrap_or(0.0));
    }
    tf.gauge(
        "self_heal_last_run_timestamp_seconds",
        "Unix time the self-heal job last wrote this file.",
    )
    .set(unix_seconds(now));
    tf
}

enum Heal {
    Started(String),
    InProgress,
}

#[derive(Deserialize)]
struct ListOperationsOutput {
    #[serde(rename = "OperationSummaryList", default)]
    operations: Vec<OperationSummary>,
}

#[derive(Deserialize)]
struct OperationSummary {
    #[serde(rename = "Status", default)]
    status: String,
}

#[derive(Deserialize)]
struct StartDeploymentOutput {
    #[serde(rename = "OperationId")]
    operation_id: String,
}

async fn heal(
    ctx: &JobContext,
    job: &SelfHealJob,
    app: &SelfHealApp,
    cancel: &CancellationToken,
) -> Result<Heal, JobError> {
    let aws = aws::Client::new(
        ctx,
        &aws::APP_RUNNER,
        &aws::ClientConfig {
            region: &job.region,
            api_base: job.api_base.as_deref(),
            access_key_id_env: &job.access_key_id_env,
            secret_access_key_env: &job.secret_access_key_env,
        },
        cancel,
        None,
    )?;
    let ops: ListOperationsOutput = aws
        .call(
            "ListOperations",
            &serde_json::json!({"ServiceArn": app.service_arn, "MaxResults": 10}),
            &ctx.retry,
        )
        .await?;
    if ops
        .operations
        .iter()
        .any(|o| o.status == "PENDING" || o.status == "IN_PROGRESS")
    {
        return Ok(Heal::InProgress);
    }
    let once = RetryPolicy {
        attempts: 1,
        ..ctx.retry.clone()
    };
    let out: StartDeploymentOutput = aws
        .call(
            "StartDeployment",
            &serde_json::json!({"ServiceArn": app.service_arn}),
            &once,
        )
        .await?;
    Ok(Heal::Started(out.operation_id))
}
