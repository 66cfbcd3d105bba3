//! The two AWS job bodies that replace the last Python sidecars of the LLD:
//! `logsShipper` (CloudWatch Logs + CloudTrail → Loki) and `awsCronMonitor` (the cron
//! Lambdas' CloudWatch metrics → healthchecks.io pings).
//!
//! Both read AWS with the stack's read-only IAM user (`obs-cloudwatch-ro`:
//! CloudWatchReadOnlyAccess + AWSCloudTrail_ReadOnlyAccess), whose keys come from the
//! env file by variable name, like every other credential.

use super::Duration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// logs-shipper (LLD section 2): pulls CloudWatch Logs `FilterLogEvents` for each
/// configured log group and CloudTrail `LookupEvents`, and pushes them to Loki's push
/// API (`/loki/api/v1/push`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LogsShipperJob {
    /// AWS region of the log groups and the trail, e.g. `sa-east-1`.
    pub region: String,
    /// Env-file variable holding the access key ID of the read-only IAM user
    /// (`logs:FilterLogEvents`, `cloudtrail:LookupEvents`).
    #[serde(default = "ro_key_env")]
    pub access_key_id_env: String,
    /// Env-file variable holding that user's secret access key.
    #[serde(default = "ro_secret_env")]
    pub secret_access_key_env: String,
    /// Loki base URL, e.g. `http://loki:3100` (a Service name as host is resolved to
    /// its container's address).
    pub loki_url: String,
    /// Labels added to every stream, e.g. `stack: tlsstress-cloud-obs` (the label
    /// Vector sets). `source`, `source_app`, `security` and `log_group` are set by the
    /// shipper and cannot be overridden.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// CloudWatch Logs groups to ship.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_watch_logs: Option<CloudWatchLogsSource>,
    /// CloudTrail management events (`LookupEvents`) to ship.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_trail: Option<CloudTrailSource>,
    /// Where a source without a checkpoint (first run, new log group) starts: this
    /// long before now.
    #[serde(default = "initial_lookback")]
    pub initial_lookback: Duration,
    /// Longest time span one query covers. A backlog (after an outage) is shipped
    /// window by window, oldest first, each checkpointed when Loki has accepted it.
    #[serde(default = "max_window")]
    pub max_window: Duration,
    /// Never reach further back than this, however old the checkpoint: Loki rejects
    /// entries older than its `reject_old_samples_max_age` (168h here). Events before
    /// it are skipped and counted in `logs_shipper_skipped_seconds_total`.
    #[serde(default = "max_catch_up")]
    pub max_catch_up: Duration,
    /// Largest push request body, in bytes (Loki's gRPC limit is 4 MiB; Promtail
    /// batches 1 MiB).
    #[serde(default = "batch_bytes")]
    pub batch_bytes: u32,
    /// Lines longer than this (bytes) are cut and marked with `…[truncated]`, rather
    /// than rejected by Loki's `max_line_size` (256 KiB by default).
    #[serde(default = "max_line_bytes")]
    pub max_line_bytes: u32,
    /// Textfile name written in the Stack's `textfileDir`.
    #[serde(default = "shipper_textfile")]
    pub textfile: String,
}

fn ro_key_env() -> String {
    "AWS_RO_ACCESS_KEY_ID".into()
}
fn ro_secret_env() -> String {
    "AWS_RO_SECRET_ACCESS_KEY".into()
}
fn initial_lookback() -> Duration {
    Duration::secs(3600)
}
fn max_window() -> Duration {
    Duration::secs(15 * 60)
}
fn max_catch_up() -> Duration {
    Duration::secs(6 * 24 * 3600)
}
fn batch_bytes() -> u32 {
    1 << 20
}
fn max_line_bytes() -> u32 {
    256 << 10
}
fn shipper_textfile() -> String {
    "logs_shipper.prom".into()
}

/// CloudWatch Logs: `FilterLogEvents` per group, every page (`nextToken`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CloudWatchLogsSource {
    /// Override of `https://logs.<region>.amazonaws.com/` (tests, VPC endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base: Option<String>,
    /// Each query re-reads this much before the checkpoint, for events that reach
    /// CloudWatch late; what was already shipped is recognised by event ID and skipped.
    /// At most 1h (Loki rejects entries further behind a stream's newest).
    #[serde(default = "cw_overlap")]
    pub overlap: Duration,
    /// Events per `FilterLogEvents` page (`limit`, 1–10000).
    #[serde(default = "cw_page_size")]
    pub page_size: u32,
    /// The groups; each has its own checkpoint.
    pub log_groups: Vec<LogGroup>,
}

fn cw_overlap() -> Duration {
    Duration::secs(5 * 60)
}
fn cw_page_size() -> u32 {
    10_000
}

/// One log group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LogGroup {
    /// Log group name, e.g. `/aws/lambda/obs-rds-backup-r2`; also the `log_group`
    /// label and the key of its checkpoint.
    pub name: String,
    /// The `source_app` label of its streams (lowercase, like Vector's), e.g.
    /// `customer-app`.
    pub app: String,
    /// CloudWatch Logs filter pattern; all events when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_pattern: Option<String>,
}

/// CloudTrail: `LookupEvents` (management events of the region, 90 days kept by AWS),
/// newest first, 50 a page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CloudTrailSource {
    /// Override of `https://cloudtrail.<region>.amazonaws.com/` (tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base: Option<String>,
    /// Re-read before the checkpoint: CloudTrail makes an event visible minutes after
    /// the call (about 5 on average, up to 15). At most 1h.
    #[serde(default = "ct_overlap")]
    pub overlap: Duration,
    /// Pause between two `LookupEvents` pages: the API allows 2 requests per second
    /// per account and region.
    #[serde(default = "ct_page_interval")]
    pub page_interval: Duration,
    /// Events per `LookupEvents` page (`MaxResults`, 1–50).
    #[serde(default = "ct_page_size")]
    pub page_size: u32,
}

fn ct_page_size() -> u32 {
    50
}

fn ct_overlap() -> Duration {
    Duration::secs(20 * 60)
}
fn ct_page_interval() -> Duration {
    Duration(std::time::Duration::from_millis(500))
}

/// aws-cron-monitor (LLD section 2): for each cron Lambda, the CloudWatch metrics
/// `AWS/Lambda` `Invocations` and `Errors` (`GetMetricData`, sum) since its latest
/// expected run, then one healthchecks.io ping per expected run: the check URL when it
/// ran without errors, `<url>/fail` when it erred, nothing while it has not run (so
/// healthchecks' own period and grace raise the alarm).
///
/// The expected run is the latest time of `schedule` at least `settle` ago; the window
/// ends at the next expected run (or now). A run that shows up late is still pinged
/// once it appears. Each expected run is pinged at most once (persisted in
/// `<state_dir>/jobs/<job>.aws-cron.json`). Metrics (textfile): `aws_cron_invocations`,
/// `aws_cron_errors`, `aws_cron_ran` (0/1), `aws_cron_expected_run_timestamp_seconds`,
/// `aws_cron_last_ping_timestamp_seconds`, `aws_cron_pings_total{result}`,
/// `aws_cron_scrape_up` (all with `function`), and the heartbeat
/// `aws_cron_monitor_last_run_timestamp_seconds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AwsCronMonitorJob {
    /// AWS region of the functions.
    pub region: String,
    /// Override of `https://monitoring.<region>.amazonaws.com/` (tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base: Option<String>,
    /// Env-file variable holding the access key ID of the read-only IAM user
    /// (`cloudwatch:GetMetricData`).
    #[serde(default = "ro_key_env")]
    pub access_key_id_env: String,
    /// Env-file variable holding that user's secret access key.
    #[serde(default = "ro_secret_env")]
    pub secret_access_key_env: String,
    /// How long after an expected run its metrics are first judged (Lambda metrics
    /// reach CloudWatch a minute or two after the invocation ends).
    #[serde(default = "settle")]
    pub settle: Duration,
    /// Textfile name written in the Stack's `textfileDir`.
    #[serde(default = "cron_textfile")]
    pub textfile: String,
    /// The cron Lambdas (the legacy `aws-cron-checks.json`).
    pub functions: Vec<CronFunction>,
}

fn settle() -> Duration {
    Duration::secs(5 * 60)
}
fn cron_textfile() -> String {
    "aws_cron_monitor.prom".into()
}

/// One scheduled Lambda.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CronFunction {
    /// Lambda function name (the `FunctionName` dimension); the `function` label.
    pub function_name: String,
    /// Its EventBridge schedule in obsd's syntax (UTC): a five-field cron line, or
    /// `@every <duration>` for `rate(...)` schedules (whose phase AWS does not expose:
    /// windows are then aligned to the Unix epoch). Whole minutes only.
    pub schedule: String,
    /// Env-file variable holding the healthchecks.io ping URL of this function.
    pub ping_url_env: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults() {
        let j: LogsShipperJob = serde_json::from_value(json!({
            "region": "sa-east-1",
            "lokiUrl": "http://loki:3100",
            "cloudWatchLogs": {"logGroups": [{"name": "/aws/lambda/x", "app": "x"}]},
            "cloudTrail": {}
        }))
        .unwrap();
        assert_eq!(j.access_key_id_env, "AWS_RO_ACCESS_KEY_ID");
        assert_eq!(j.textfile, "logs_shipper.prom");
        assert_eq!(j.batch_bytes, 1 << 20);
        assert_eq!(j.cloud_watch_logs.unwrap().overlap, Duration::secs(300));
        let ct = j.cloud_trail.unwrap();
        assert_eq!(
            (ct.overlap, ct.page_interval.0.as_millis()),
            (Duration::secs(1200), 500)
        );
        let m: AwsCronMonitorJob = serde_json::from_value(json!({
            "region": "sa-east-1",
            "functions": [{"functionName": "f", "schedule": "0 3 * * *", "pingUrlEnv": "HC"}]
        }))
        .unwrap();
        assert_eq!(
            (m.settle, m.textfile.as_str()),
            (Duration::secs(300), "aws_cron_monitor.prom")
        );
    }
}
