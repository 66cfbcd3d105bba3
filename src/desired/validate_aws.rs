//! Validation of the AWS job bodies (`logsShipper`, `awsCronMonitor`), located at
//! `file:line:column` and field path like every other check. Called once per Job from
//! [`super::validate::validate`]; pure, like it.

use crate::desired::diag::Diagnostic;
use crate::desired::diag::{err_at, k};
use crate::desired::env::valid_env_name;
use crate::desired::model::aws_job::{AwsCronMonitorJob, LogsShipperJob};
use crate::desired::model::JobSpec;
use crate::desired::schedule::Schedule;
use crate::desired::yaml::PathSeg;
use crate::desired::{Resource, Source};
use std::collections::BTreeSet;
use std::time::Duration;

/// Labels the shipper sets itself; `labels` may not override them.
pub const SHIPPER_LABELS: [&str; 4] = ["source", "source_app", "security", "log_group"];

/// Loki's out-of-order window: an entry further behind its stream's newest is refused,
/// so no overlap may reach further back.
const MAX_OVERLAP: Duration = Duration::from_secs(3600);

/// Loki's default `reject_old_samples_max_age` (and the stack's): a week.
const MAX_CATCH_UP: Duration = Duration::from_secs(7 * 24 * 3600);

pub fn validate_job(r: &Resource<JobSpec>, d: &mut Vec<Diagnostic>) {
    if let Some(j) = &r.spec.logs_shipper {
        logs_shipper(&r.source, j, d);
    }
    if let Some(j) = &r.spec.aws_cron_monitor {
        cron_monitor(&r.source, j, d);
    }
}

fn path(body: &str, rest: &[PathSeg]) -> Vec<PathSeg> {
    let mut p = vec![k("spec"), k(body)];
    p.extend_from_slice(rest);
    p
}

/// A Loki label name: `[a-zA-Z_][a-zA-Z0-9_]*`, and `__` is reserved for Loki itself.
pub fn valid_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && !s.starts_with("__")
}

/// The `source_app` values Vector allows (bounded label cardinality).
fn valid_app(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 40
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(c))
}

/// CloudWatch Logs group names: 1–512 of `[.\-_/#A-Za-z0-9]`.
fn valid_log_group(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 512
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-/#".contains(&c))
}

/// Lambda function names: 1–64 of `[A-Za-z0-9_-]`.
fn valid_function_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// AWS region names (`sa-east-1`): lowercase letters, digits, `-` (and `_`, harmless);
/// catches spaces and capitals. A value still holding `${…}` (env file absent) is left
/// to the run.
fn region(src: &Source, body: &str, region: &str, d: &mut Vec<Diagnostic>) {
    if region.contains("${") {
        return;
    }
    let ok = !region.is_empty()
        && region
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_');
    if !ok {
        d.push(err_at(
            src,
            &path(body, &[k("region")]),
            format!("`{region}` is not an AWS region (e.g. `sa-east-1`)"),
        ));
    }
}

fn env_name(src: &Source, p: Vec<PathSeg>, v: &str, d: &mut Vec<Diagnostic>) {
    if !valid_env_name(v) {
        d.push(err_at(
            src,
            &p,
            format!("`{v}` is not a valid variable name"),
        ));
    }
}

fn url(src: &Source, p: Vec<PathSeg>, v: &str, d: &mut Vec<Diagnostic>) {
    if v.contains("${") {
        return;
    }
    match reqwest::Url::parse(v) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host_str().is_some() => {}
        _ => d.push(err_at(
            src,
            &p,
            format!("`{v}` is not an http(s) URL with a host"),
        )),
    }
}

fn logs_shipper(src: &Source, j: &LogsShipperJob, d: &mut Vec<Diagnostic>) {
    const B: &str = "logsShipper";
    region(src, B, &j.region, d);
    env_name(
        src,
        path(B, &[k("accessKeyIdEnv")]),
        &j.access_key_id_env,
        d,
    );
    env_name(
        src,
        path(B, &[k("secretAccessKeyEnv")]),
        &j.secret_access_key_env,
        d,
    );
    url(src, path(B, &[k("lokiUrl")]), &j.loki_url, d);
    for (name, value) in &j.labels {
        let p = path(B, &[k("labels"), k(name)]);
        if !valid_label_name(name) {
            d.push(err_at(
                src,
                &p,
                format!("`{name}` is not a Loki label name (letters, digits and `_`, not starting with a digit or `__`)"),
            ));
        } else if SHIPPER_LABELS.contains(&name.as_str()) {
            d.push(err_at(
                src,
                &p,
                format!("`{name}` is set by the shipper itself"),
            ));
        }
        if value.is_empty() {
            d.push(err_at(src, &p, "a label value must not be empty"));
        }
    }
    if j.cloud_watch_logs.is_none() && j.cloud_trail.is_none() {
        d.push(err_at(
            src,
            &path(B, &[]),
            "nothing to ship: set cloudWatchLogs, cloudTrail or both",
        ));
    }
    if let Some(cw) = &j.cloud_watch_logs {
        if let Some(b) = &cw.api_base {
            url(src, path(B, &[k("cloudWatchLogs"), k("apiBase")]), b, d);
        }
        if cw.overlap.0 > MAX_OVERLAP {
            d.push(err_at(
                src,
                &path(B, &[k("cloudWatchLogs"), k("overlap")]),
                "overlap must be at most 1h (Loki refuses entries further behind a stream's newest)",
            ));
        }
        if !(1..=10_000).contains(&cw.page_size) {
            d.push(err_at(
                src,
                &path(B, &[k("cloudWatchLogs"), k("pageSize")]),
                "pageSize must be between 1 and 10000",
            ));
        }
        if cw.log_groups.is_empty() {
            d.push(err_at(
                src,
                &path(B, &[k("cloudWatchLogs"), k("logGroups")]),
                "list at least one log group",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, g) in cw.log_groups.iter().enumerate() {
            let base = [k("cloudWatchLogs"), k("logGroups"), PathSeg::Index(i)];
            let at = |f: &str| path(B, &[&base[..], &[k(f)]].concat());
            if g.name.contains("${") {
                // Left unexpanded (no env file): checked when the run uses it.
            } else if !valid_log_group(&g.name) {
                d.push(err_at(
                    src,
                    &at("name"),
                    format!(
                        "`{}` is not a log group name (1–512 of letters, digits, `._-/#`)",
                        g.name
                    ),
                ));
            } else if !seen.insert(g.name.as_str()) {
                d.push(err_at(
                    src,
                    &at("name"),
                    format!("log group `{}` is listed twice", g.name),
                ));
            }
            if !valid_app(&g.app) {
                d.push(err_at(
                    src,
                    &at("app"),
                    format!("`{}` is not a valid source_app (lowercase letters, digits, `_.-`, at most 40, starting with a letter or digit)", g.app),
                ));
            }
            if g.filter_pattern.as_deref().is_some_and(|f| f.len() > 1024) {
                d.push(err_at(
                    src,
                    &at("filterPattern"),
                    "a filter pattern has at most 1024 characters",
                ));
            }
        }
    }
    if let Some(ct) = &j.cloud_trail {
        if let Some(b) = &ct.api_base {
            url(src, path(B, &[k("cloudTrail"), k("apiBase")]), b, d);
        }
        if ct.overlap.0 > MAX_OVERLAP {
            d.push(err_at(
                src,
                &path(B, &[k("cloudTrail"), k("overlap")]),
                "overlap must be at most 1h (Loki refuses entries further behind a stream's newest)",
            ));
        }
        if !(1..=50).contains(&ct.page_size) {
            d.push(err_at(
                src,
                &path(B, &[k("cloudTrail"), k("pageSize")]),
                "pageSize must be between 1 and 50",
            ));
        }
        if ct.page_interval.0 > Duration::from_secs(10) {
            d.push(err_at(
                src,
                &path(B, &[k("cloudTrail"), k("pageInterval")]),
                "pageInterval must be at most 10s",
            ));
        }
    }
    if j.max_window.0 < Duration::from_secs(60) {
        d.push(err_at(
            src,
            &path(B, &[k("maxWindow")]),
            "maxWindow must be at least 1m",
        ));
    }
    if j.max_catch_up.0 > MAX_CATCH_UP {
        d.push(err_at(
            src,
            &path(B, &[k("maxCatchUp")]),
            "maxCatchUp must be at most 7d (Loki rejects older entries)",
        ));
    }
    if j.initial_lookback.0 > j.max_catch_up.0 {
        d.push(err_at(
            src,
            &path(B, &[k("initialLookback")]),
            "initialLookback must not exceed maxCatchUp",
        ));
    }
    if !(1024..=(16 << 20)).contains(&j.batch_bytes) {
        d.push(err_at(
            src,
            &path(B, &[k("batchBytes")]),
            "batchBytes must be between 1024 and 16777216",
        ));
    } else if j.max_line_bytes < 256 || j.max_line_bytes > j.batch_bytes / 2 {
        d.push(err_at(
            src,
            &path(B, &[k("maxLineBytes")]),
            "maxLineBytes must be at least 256 and at most half of batchBytes",
        ));
    }
}

fn cron_monitor(src: &Source, j: &AwsCronMonitorJob, d: &mut Vec<Diagnostic>) {
    const B: &str = "awsCronMonitor";
    region(src, B, &j.region, d);
    if let Some(b) = &j.api_base {
        url(src, path(B, &[k("apiBase")]), b, d);
    }
    env_name(
        src,
        path(B, &[k("accessKeyIdEnv")]),
        &j.access_key_id_env,
        d,
    );
    env_name(
        src,
        path(B, &[k("secretAccessKeyEnv")]),
        &j.secret_access_key_env,
        d,
    );
    if j.functions.is_empty() {
        d.push(err_at(
            src,
            &path(B, &[k("functions")]),
            "list at least one function",
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, f) in j.functions.iter().enumerate() {
        let base = [k("functions"), PathSeg::Index(i)];
        let at = |field: &str| path(B, &[&base[..], &[k(field)]].concat());
        if !valid_function_name(&f.function_name) {
            d.push(err_at(
                src,
                &at("functionName"),
                format!(
                    "`{}` is not a Lambda function name (1–64 of letters, digits, `-`, `_`)",
                    f.function_name
                ),
            ));
        } else if !seen.insert(f.function_name.as_str()) {
            d.push(err_at(
                src,
                &at("functionName"),
                format!("function `{}` is listed twice", f.function_name),
            ));
        }
        match Schedule::parse(&f.schedule) {
            Err(msg) => d.push(err_at(src, &at("schedule"), msg)),
            Ok(Schedule::Every(step)) if step.as_secs() % 60 != 0 || step.subsec_nanos() != 0 => d
                .push(err_at(
                    src,
                    &at("schedule"),
                    "Lambda schedules run in whole minutes: use a multiple of 1m",
                )),
            Ok(_) => {}
        }
        env_name(src, at("pingUrlEnv"), &f.ping_url_env, d);
    }
}
