//! status-gen (LLD section 9): the public status page's `status.json`, from Prometheus.
//!
//! Per surface (a blackbox-probed URL, the `instance` label):
//! - `uptime_24h|7d|30d` = `min(avg_over_time(probe_success{instance="<url>"}[<range>]))`
//!   (fractions cut — never rounded up — to six decimals; `min` so two probes of one URL
//!   cannot hide each other);
//! - `status` from the last 5 minutes of the same series: all up `operational`, all down
//!   `down`, mixed `degraded`, none `no_data`;
//! - `latency_ms` = `avg(avg_over_time(probe_duration_seconds{…}[1h]))` × 1000.
//!
//! A series without samples is `null` — "no data", never 100 %. `overall` ignores
//! surfaces without data (all without data: `no_data`): all down `down`, any down or
//! degraded `degraded`, else `operational`. The SLO block averages the surfaces' 30-day
//! uptime; `error_budget_remaining` = 1 − (1 − uptime) / (1 − target), negative once the
//! budget is overspent. If Prometheus cannot answer, the run fails and the previous
//! `status.json` stays in place (its `generated_at` shows its age).

use super::clock::unix_seconds;
use super::http::{self, HttpError};
use super::textfile::Textfile;
use super::{JobContext, JobError};
use crate::desired::model::job::StatusPageJob;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// The `status.json` document (contract with `desired-state/config/status/index.html`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    /// RFC 3339, UTC.
    pub generated_at: String,
    pub overall: Health,
    pub surfaces: Vec<SurfaceDoc>,
    pub slo: SloDoc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Operational,
    Degraded,
    Down,
    NoData,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurfaceDoc {
    pub name: String,
    pub url: String,
    pub status: Health,
    pub uptime_24h: Option<f64>,
    pub uptime_7d: Option<f64>,
    pub uptime_30d: Option<f64>,
    pub latency_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloDoc {
    pub target: f64,
    pub uptime_30d: Option<f64>,
    pub error_budget_remaining: Option<f64>,
}

pub async fn run(
    ctx: &JobContext,
    job: &StatusPageJob,
    cancel: &CancellationToken,
) -> Result<(), JobError> {
    let now = ctx.clock.now();
    let prom = Prometheus {
        ctx,
        base: job.prometheus_url.trim_end_matches('/'),
        cancel,
        time: now,
    };
    let mut surfaces = Vec::new();
    for s in &job.surfaces {
        let sel = format!("{{instance=\"{}\"}}", promql_string(&s.url));
        let uptime = |range: &str| format!("min(avg_over_time(probe_success{sel}[{range}]))");
        let recent = prom.value(&uptime("5m")).await?;
        surfaces.push(SurfaceDoc {
            name: s.name.clone(),
            url: s.url.clone(),
            status: health_of(recent),
            uptime_24h: prom.value(&uptime("24h")).await?.map(floor6),
            uptime_7d: prom.value(&uptime("7d")).await?.map(floor6),
            uptime_30d: prom.value(&uptime("30d")).await?.map(floor6),
            latency_ms: prom
                .value(&format!(
                    "avg(avg_over_time(probe_duration_seconds{sel}[1h]))"
                ))
                .await?
                .map(|s| (s * 10_000.0).round() / 10.0),
        });
    }
    let doc = build_doc(now, job.slo_target, surfaces);

    let dir = output_dir(ctx, job);
    let mut bytes = serde_json::to_vec_pretty(&doc)
        .map_err(|e| JobError::Failed(format!("encoding status.json: {e}")))?;
    bytes.push(b'\n');
    let path = dir.join("status.json");
    crate::fsutil::atomic_write(&path, &bytes, 0o644).map_err(|source| JobError::Io {
        what: format!("writing {}", path.display()),
        source,
    })?;

    if let Some(tdir) = &ctx.textfile_dir {
        let mut tf = Textfile::new();
        tf.gauge(
            "status_page_last_run_timestamp_seconds",
            "Unix time the status-page job last wrote status.json.",
        )
        .set(unix_seconds(now));
        tf.write(tdir, &job.textfile)?;
    }
    Ok(())
}

fn output_dir(ctx: &JobContext, job: &StatusPageJob) -> PathBuf {
    let p = PathBuf::from(&job.output_dir);
    if p.is_absolute() {
        p
    } else {
        ctx.state_dir.join(p)
    }
}

/// Assemble the document from per-surface results (pure; the rules of the module doc).
pub fn build_doc(now: DateTime<Utc>, target: f64, surfaces: Vec<SurfaceDoc>) -> StatusDoc {
    let with_data: Vec<Health> = surfaces
        .iter()
        .map(|s| s.status)
        .filter(|h| *h != Health::NoData)
        .collect();
    let overall = if with_data.is_empty() {
        Health::NoData
    } else if with_data.iter().all(|h| *h == Health::Down) {
        Health::Down
    } else if with_data
        .iter()
        .any(|h| matches!(h, Health::Down | Health::Degraded))
    {
        Health::Degraded
    } else {
        Health::Operational
    };
    let ups: Vec<f64> = surfaces.iter().filter_map(|s| s.uptime_30d).collect();
    let uptime_30d = (!ups.is_empty()).then(|| floor6(ups.iter().sum::<f64>() / ups.len() as f64));
    let budget = 1.0 - target;
    let error_budget_remaining = uptime_30d
        .filter(|_| budget > 0.0)
        .map(|u| round6(1.0 - (1.0 - u) / budget));
    StatusDoc {
        generated_at: now.to_rfc3339_opts(SecondsFormat::Secs, true),
        overall,
        surfaces,
        slo: SloDoc {
            target,
            uptime_30d,
            error_budget_remaining,
        },
    }
}

fn health_of(recent: Option<f64>) -> Health {
    match recent {
        None => Health::NoData,
        Some(v) if v >= 1.0 - 1e-9 => Health::Operational,
        Some(v) if v <= 1e-9 => Health::Down,
        Some(_) => Health::Degraded,
    }
}

/// Uptimes keep six decimals and are cut, never rounded up: only a true 1 reads as
/// 100 % (0.9999996 must not become 1). The epsilon absorbs binary representation
/// error (0.9999 × 10⁶ is 999899.99…).
fn floor6(v: f64) -> f64 {
    ((v * 1e6) + 1e-6).floor() / 1e6
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// A PromQL double-quoted string body.
fn promql_string(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Prometheus<'a> {
    ctx: &'a JobContext,
    base: &'a str,
    cancel: &'a CancellationToken,
    /// Every query is evaluated at the same instant.
    time: DateTime<Utc>,
}

#[derive(Deserialize)]
struct PromResponse {
    status: String,
    #[serde(default)]
    data: Option<PromData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct PromData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

impl Prometheus<'_> {
    /// The single value of an instant query, `None` when the result is empty or NaN.
    async fn value(&self, query: &str) -> Result<Option<f64>, HttpError> {
        let what = "GET /api/v1/query";
        let url = format!("{}/api/v1/query", self.base);
        let time = format!("{:.3}", unix_seconds(self.time));
        let resp = http::send(&self.ctx.retry, self.cancel, what, || {
            self.ctx
                .http
                .get(&url)
                .query(&[("query", query), ("time", time.as_str())])
                .timeout(self.ctx.request_timeout)
        })
        .await?;
        let r: PromResponse = http::json(what, resp).await?;
        if r.status != "success" {
            return Err(HttpError::decode(
                what,
                r.error.unwrap_or_else(|| format!("status {}", r.status)),
            ));
        }
        let data = r.data.ok_or_else(|| HttpError::decode(what, "no data"))?;
        let sample = match data.result_type.as_str() {
            "vector" => data
                .result
                .as_array()
                .and_then(|a| a.first())
                .and_then(|s| s.get("value"))
                .cloned(),
            "scalar" => Some(data.result),
            other => {
                return Err(HttpError::decode(
                    what,
                    format!("unexpected result type {other}"),
                ))
            }
        };
        let Some(sample) = sample else {
            return Ok(None);
        };
        let v = sample
            .get(1)
            .and_then(|v| v.as_str())
            .ok_or_else(|| HttpError::decode(what, "sample without a value"))?;
        match v.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Some(f)),
            Ok(_) => Ok(None),
            Err(_) => Err(HttpError::decode(
                what,
                format!("invalid sample value {v:?}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn surface(status: Health, up30: Option<f64>) -> SurfaceDoc {
        SurfaceDoc {
            name: "x".into(),
            url: "https://x".into(),
            status,
            uptime_24h: None,
            uptime_7d: None,
            uptime_30d: up30,
            latency_ms: None,
        }
    }

    #[test]
    fn overall_and_slo() {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        let d = build_doc(now, 0.999, vec![]);
        assert_eq!(
            (d.overall, d.slo.uptime_30d, d.slo.error_budget_remaining),
            (Health::NoData, None, None)
        );
        assert_eq!(d.generated_at, "2026-03-01T12:00:00Z");

        let d = build_doc(
            now,
            0.999,
            vec![
                surface(Health::Operational, Some(0.9995)),
                surface(Health::NoData, None),
            ],
        );
        assert_eq!(d.overall, Health::Operational);
        assert_eq!(d.slo.uptime_30d, Some(0.9995));
        assert_eq!(d.slo.error_budget_remaining, Some(0.5));

        let d = build_doc(
            now,
            0.999,
            vec![
                surface(Health::Operational, Some(1.0)),
                surface(Health::Down, Some(0.997)),
            ],
        );
        assert_eq!(d.overall, Health::Degraded);
        assert_eq!(d.slo.uptime_30d, Some(0.9985));
        assert_eq!(d.slo.error_budget_remaining, Some(-0.5));

        let d = build_doc(
            now,
            0.999,
            vec![surface(Health::Down, None), surface(Health::NoData, None)],
        );
        assert_eq!(d.overall, Health::Down);
    }

    #[test]
    fn health_thresholds() {
        assert_eq!(health_of(None), Health::NoData);
        assert_eq!(health_of(Some(1.0)), Health::Operational);
        assert_eq!(health_of(Some(0.0)), Health::Down);
        assert_eq!(health_of(Some(0.9)), Health::Degraded);
    }

    #[test]
    fn uptimes_never_round_up_to_one() {
        assert_eq!(floor6(0.9999996), 0.999999);
        assert_eq!(floor6(0.9999), 0.9999);
        assert_eq!(floor6(1.0), 1.0);
        assert_eq!(floor6(0.0), 0.0);
    }

    #[test]
    fn promql_escaping() {
        assert_eq!(promql_string(r#"https://a/"b"\c"#), r#"https://a/\"b\"\\c"#);
    }
}
