//! `Job`: a scheduled reconciler that replaces one of the stack's Python sidecars.
//!
//! The common fields (schedule, timeout, jitter, concurrency, catch-up) are shared by
//! every job; exactly one typed body says what the job does.

use super::Duration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A scheduled job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JobSpec {
    /// `@every 5m`, `@hourly`, `@daily`, or a five-field cron line (`30 3 * * *`),
    /// evaluated in UTC.
    pub schedule: String,
    /// A run still going after this long is cancelled and counted as `timeout`.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Random delay added to each scheduled start, spreading load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Duration>,
    /// What happens when a run is due while the previous one is still going.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// A run missed while obsd was down is started at startup if it is at most this
    /// late; without it, missed runs are skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline: Option<Duration>,
    /// Stop scheduling (manual `obsctl jobs run` still works).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// Runs kept in the job's history.
    #[serde(default = "default_history")]
    pub history_limit: u32,
    /// Cloudflare / Stripe / Plausible business metrics → textfile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_poller: Option<CloudPollerJob>,
    /// Off-box backup to R2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupJob>,
    /// App Runner self-heal on `/api/ready` 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_heal: Option<SelfHealJob>,
    /// `container_name_info{short_id,name}` for the cAdvisor join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_names: Option<DockerNamesJob>,
    /// Public status page `status.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_page: Option<StatusPageJob>,
    /// CloudWatch Logs (`FilterLogEvents` per log group) and CloudTrail
    /// (`LookupEvents`) → Loki (`/loki/api/v1/push`). Streams are labelled `source`
    /// (`cloudwatch` | `cloudtrail`), `source_app` (the group's `app`; `cloudtrail`),
    /// `log_group` (CloudWatch only), `security` (`auth` | `none`) and the job's
    /// `labels`. A CloudTrail line is the event's JSON record (`CloudTrailEvent`), a
    /// CloudWatch line the event's message.
    ///
    /// `security="auth"`: CloudTrail events from `signin.amazonaws.com` (console
    /// logins, failed ones included, MFA checks, role switches), the STS calls that
    /// mint credentials (`AssumeRole*`, `GetSessionToken`, `GetFederationToken`), and
    /// any call refused for authentication or authorisation (`errorCode` AccessDenied,
    /// UnauthorizedOperation, InvalidClientTokenId, SignatureDoesNotMatch, AuthFailure,
    /// ExpiredToken …); CloudWatch messages that Vector would tag too (login, sign-in,
    /// password, MFA, OAuth, SSO, credential, unauthorized, forbidden, access denied,
    /// or a JSON line with `category` auth/security or `status` 401/403).
    ///
    /// Delivery is at-least-once, de-duplicated by event ID. Each source has a
    /// checkpoint (time watermark plus the IDs of events shipped near it) in
    /// `<state_dir>/jobs/<job>.logs-shipper.json`, replaced atomically after every
    /// accepted push. An event is pushed again only when obsd dies after Loki accepted
    /// a push and before that write: at most one batch (`batchBytes`) per source, sent
    /// byte-identical (same labels, nanosecond timestamp and line), which Loki drops as
    /// a duplicate of the entry it holds, so queries show it once. A Loki outage (refused, 5xx, 429 after
    /// retries) leaves the checkpoint where it was; the next run ships the backlog.
    /// Entries Loki refuses for good (HTTP 400: too old, too far behind) are counted
    /// in `logs_shipper_events_rejected_total` and not retried. Events that reach AWS
    /// more than `overlap` after their timestamp are not seen.
    ///
    /// Entry timestamps are the event's (milliseconds for CloudWatch, seconds for
    /// CloudTrail) plus a sub-millisecond offset derived from the event ID, so two
    /// events of the same instant never collapse into one in Loki, and a re-push lands
    /// on the same nanosecond. Metrics (textfile, labels `source`, `log_group`):
    /// `logs_shipper_events_shipped_total`, `logs_shipper_events_rejected_total`,
    /// `logs_shipper_auth_events_total`, `logs_shipper_lag_seconds` (now − checkpoint),
    /// `logs_shipper_last_success_timestamp_seconds`, `logs_shipper_scrape_up`,
    /// `logs_shipper_skipped_seconds_total`; heartbeat
    /// `logs_shipper_last_run_timestamp_seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_shipper: Option<super::aws_job::LogsShipperJob>,
    /// The cron Lambdas' CloudWatch metrics → one healthchecks.io ping per expected run.
    /// For each function: `GetMetricData` sums `AWS/Lambda` `Invocations` and `Errors`
    /// since its latest expected run (the latest time of `schedule` at least `settle`
    /// ago, up to the next one); ran without errors → the check URL is pinged, erred →
    /// `<url>/fail`, not run → nothing (healthchecks' own period and grace raise the
    /// alarm; a run that shows up late is still pinged when it appears). Each expected
    /// run is pinged at most once, persisted in `<state_dir>/jobs/<job>.aws-cron.json`.
    /// Metrics (textfile, label `function`): `aws_cron_invocations`, `aws_cron_errors`,
    /// `aws_cron_ran` (0/1), `aws_cron_expected_run_timestamp_seconds`,
    /// `aws_cron_last_ping_timestamp_seconds`, `aws_cron_pings_total{result}`,
    /// `aws_cron_scrape_up`; heartbeat `aws_cron_monitor_last_run_timestamp_seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_cron_monitor: Option<super::aws_job::AwsCronMonitorJob>,
}

fn default_timeout() -> Duration {
    Duration::secs(300)
}
fn default_history() -> u32 {
    20
}

impl JobSpec {
    /// Names of the bodies that are set (validation wants exactly one).
    pub fn bodies(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.cloud_poller.is_some() {
            v.push("cloudPoller");
        }
        if self.backup.is_some() {
            v.push("backup");
        }
        if self.self_heal.is_some() {
            v.push("selfHeal");
        }
        if self.docker_names.is_some() {
            v.push("dockerNames");
        }
        if self.status_page.is_some() {
            v.push("statusPage");
        }
        if self.logs_shipper.is_some() {
            v.push("logsShipper");
        }
        if self.aws_cron_monitor.is_some() {
            v.push("awsCronMonitor");
        }
        v
    }

    /// The textfile each body writes, with the body's field name (for error paths):
    /// each textfile may have one writer only.
    pub fn textfiles(&self) -> Vec<(&'static str, &str)> {
        [
            self.cloud_poller
                .as_ref()
                .map(|c| ("cloudPoller", c.textfile.as_str())),
            self.docker_names
                .as_ref()
                .map(|c| ("dockerNames", c.textfile.as_str())),
            self.self_heal
                .as_ref()
                .map(|c| ("selfHeal", c.textfile.as_str())),
            self.status_page
                .as_ref()
                .map(|c| ("statusPage", c.textfile.as_str())),
            self.logs_shipper
                .as_ref()
                .map(|c| ("logsShipper", c.textfile.as_str())),
            self.aws_cron_monitor
                .as_ref()
                .map(|c| ("awsCronMonitor", c.textfile.as_str())),
            self.backup
                .as_ref()
                .and_then(|c| c.textfile.as_deref())
                .map(|t| ("backup", t)),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Skip the new run while one is in flight (default).
    #[default]
    Forbid,
    /// Cancel the running one and start the new run.
    Replace,
}

/// cloud-poller (LLD section 6): business metrics into one textfile. Each configured
/// source fails soft: its metrics are left out and its `*_scrape_up` is 0; the run then
/// ends as an error naming the failed sources, after the textfile has been written.
/// Heartbeat: `cloud_poller_last_run_timestamp_seconds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CloudPollerJob {
    /// Textfile name written in the Stack's `textfileDir`.
    #[serde(default = "cloud_textfile")]
    pub textfile: String,
    /// Cloudflare zone analytics (`cf_*`, `cf_scrape_up`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudflare: Option<CloudflareSource>,
    /// Stripe revenue metrics (`stripe_*`, `stripe_scrape_up`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe: Option<StripeSource>,
    /// Off unless configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plausible: Option<PlausibleSource>,
}

fn cloud_textfile() -> String {
    "cloud.prom".into()
}

/// Cloudflare: per zone, the current UTC day's totals from the GraphQL Analytics API
/// (`httpRequests1dGroups`, pinned with `filter: {date: $since}` and `limit: 1`). They
/// grow during the day and restart at 00:00 UTC, like Stripe's `*_today` metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CloudflareSource {
    /// API base URL (REST and `/graphql`).
    #[serde(default = "cf_base")]
    pub api_base: String,
    /// Env-file variable holding the Analytics:Read API token.
    #[serde(default = "cf_token_env")]
    pub token_env: String,
    /// Explicit zone IDs; when empty, every zone the token can read is discovered
    /// (`GET /zones`, paginated). The `zone` label is the zone name either way (a listed
    /// zone's name is read with `GET /zones/{id}`; its ID if that fails).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zone_tags: Vec<String>,
}

fn cf_base() -> String {
    "https://api.cloudflare.com/client/v4".into()
}
fn cf_token_env() -> String {
    "CF_API_TOKEN".into()
}

/// Stripe: balance, active subscriptions and MRR, today's charges (UTC day) and new
/// customers, open disputes. Lists are read at most 20 pages deep; a list cut short sets
/// its `stripe_<list>_truncated` gauge to 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StripeSource {
    /// API base URL.
    #[serde(default = "stripe_base")]
    pub api_base: String,
    /// Env-file variable holding the restricted read-only key.
    #[serde(default = "stripe_key_env")]
    pub key_env: String,
    /// Currency (lowercase ISO code) of the explicit zero series emitted before there is
    /// any revenue (`stripe_mrr_cents{currency="brl"} 0`), so panels show 0, not "No data".
    #[serde(default = "stripe_currency")]
    pub currency: String,
}

fn stripe_base() -> String {
    "https://api.stripe.com".into()
}
fn stripe_key_env() -> String {
    "STRIPE_API_KEY".into()
}
fn stripe_currency() -> String {
    "brl".into()
}

/// Plausible: today's visitors, pageviews and bounce rate per site (`plausible_*{site}`,
/// `plausible_scrape_up{site}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlausibleSource {
    /// API base URL.
    #[serde(default = "plausible_base")]
    pub api_base: String,
    /// Env-file variable holding the Stats API key.
    #[serde(default = "plausible_key_env")]
    pub key_env: String,
    /// Sites (domains as registered in Plausible).
    pub site_ids: Vec<String>,
}

fn plausible_base() -> String {
    "https://plausible.io".into()
}
fn plausible_key_env() -> String {
    "PLAUSIBLE_API_KEY".into()
}

/// backup-r2 (LLD section 2): the listed volumes, read through the Docker engine's archive
/// endpoint (a helper container created, never started, from an image already present,
/// the volume mounted read-only), stored in an S3-compatible bucket (R2), write-once
/// (`If-None-Match: *` on every PUT).
///
/// Bucket layout: `objects/<sha256>-<YYYYMMDD>` holds zstd-compressed content (chunks
/// of large files, shared by every day that contains them, and the segments of each
/// volume's archive of small files), named by the SHA-256 of the plain content and the
/// day it was uploaded; `daily/<YYYY-MM-DD>/manifest.json` (written last) lists, per
/// volume and file, path, type, mode, owner, size, SHA-256 and the objects holding it.
/// A day without a manifest is incomplete: never listed or restored, finished by the next
/// run. An object uploaded `lockRetentionDays − 1` days ago or earlier is never reused: the
/// content is stored afresh, so the newest complete day and everything it references stay
/// inside the bucket-lock window.
///
/// Metrics (`textfile`): `backup_r2_last_run_timestamp_seconds`,
/// `backup_r2_last_success_timestamp_seconds`, `backup_r2_run_success`, per volume (label
/// `source`, `volume/<name>`) `backup_r2_source_success`,
/// `backup_r2_source_last_success_timestamp_seconds`, `backup_r2_source_bytes`,
/// `backup_r2_source_objects`, `backup_r2_source_uploaded_bytes`,
/// `backup_r2_source_duration_seconds`, `backup_r2_source_stage_seconds` (label `stage`:
/// `read` waiting on the engine, `hash`, `compress`, `upload` the PUTs' summed time,
/// `upload_wait` reading held up by the uploads); and
/// `backup_r2_bucket_usage_bytes`, `backup_r2_days_complete`,
/// `backup_r2_objects_uploaded`, `backup_r2_retention_refused_deletes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackupJob {
    /// R2 bucket.
    pub bucket: String,
    /// S3 API endpoint, e.g. `https://${CF_ACCOUNT_ID}.r2.cloudflarestorage.com`
    /// (path-style requests: `<endpoint>/<bucket>/<key>`). Required to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// SigV4 region (`auto` for R2).
    #[serde(default = "backup_region")]
    pub region: String,
    /// Env-file variables holding the S3 access key ID and secret access key.
    #[serde(default = "r2_akid_env")]
    pub access_key_id_env: String,
    #[serde(default = "r2_secret_env")]
    pub secret_access_key_env: String,
    /// `Volume` resources to archive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// Per volume, what happens to the containers mounting it during the read:
    /// `none` (default: read while they run), `pause` (frozen for the read, then
    /// unpaused, also on error or timeout; a container left paused by a crash is
    /// unpaused by the next reconcile pass) or `stop` (stopped, then started again).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub quiesce: std::collections::BTreeMap<String, Quiesce>,
    /// Complete days to keep; older ones are deleted (their manifest first, then every
    /// object no kept day references). A delete the bucket lock refuses (R2: 403
    /// `ObjectLockedByBucketPolicy`) is reported once and not retried before the lock
    /// could have expired.
    #[serde(default = "keep_daily")]
    pub keep_daily: u32,
    /// Bucket-lock retention (must be below `keepDaily`).
    #[serde(default = "lock_days")]
    pub lock_retention_days: u32,
    /// Size budget for the bucket, in GB (10⁹ bytes; fractions allowed). After
    /// keeping `keepDaily` days, the oldest complete days are dropped while the bucket is
    /// over it, never the newest complete day nor a day inside `lockRetentionDays`.
    #[serde(default = "max_gb")]
    pub max_bucket_gb: f64,
    /// Env-file variable holding the healthchecks.io ping URL (`/start`, success,
    /// `/fail`, one `rid` per run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_man_url_env: Option<String>,
    /// Encrypt every object to this `age` X25519 recipient (`age1…`): the identity (the
    /// private key) never lives on the host, so only `obsctl restore volume … --identity
    /// FILE` run with it can read the backup. Manifests stay readable (paths, sizes,
    /// owners, content hashes) so `backup list` and retention work without it; object
    /// names carry the content's SHA-256. Not combinable with `drill`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_recipient: Option<String>,
    /// Cloudflare API access for the bucket's lock rule and public-access check: every
    /// run makes sure a bucket-lock rule (`obsd-backup-lock`, whole bucket, age
    /// `lockRetentionDays`) exists and is enabled (read-modify-write: other rules are
    /// kept), and reports `backup_r2_bucket_lock_enabled` and `backup_r2_bucket_public`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudflare: Option<BackupCloudflare>,
    /// Restore drill after every run: the newest complete day is downloaded, every
    /// checksum checked, each volume restored into a scratch volume
    /// (`obsd-drill-<volume>`), read back and compared with the manifest, and the scratch
    /// volumes removed. Metrics `backup_r2_drill_success`,
    /// `backup_r2_drill_last_success_timestamp_seconds`, `backup_r2_drill_bytes`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drill: bool,
    /// Metrics file in the Stack's `textfileDir` (e.g. `backup.prom`); without it no
    /// metrics are written (and the `backup_dr` alerts see no backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub textfile: Option<String>,
    /// Exports besides volumes (Cloudflare, Stripe, Auth0): each its own manifest entry
    /// and `backup_r2_source_*` series; one failing source fails the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<super::backup_sources::BackupSources>,
}

/// The Cloudflare account of the backup bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackupCloudflare {
    /// Env-file variable holding the account ID.
    #[serde(default = "cf_account_env")]
    pub account_id_env: String,
    /// Env-file variable holding an API token allowed to edit R2 bucket locks.
    #[serde(default = "backup_cf_token_env")]
    pub api_token_env: String,
    /// API base (tests point it at a fake).
    #[serde(default = "cf_api_base")]
    pub api_base: String,
}

fn cf_account_env() -> String {
    "CF_ACCOUNT_ID".into()
}
fn backup_cf_token_env() -> String {
    "R2_API_TOKEN".into()
}
fn cf_api_base() -> String {
    "https://api.cloudflare.com/client/v4".into()
}

/// How a volume's containers are quiesced while it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Quiesce {
    /// Read while the containers run (crash-consistent at best).
    #[default]
    None,
    /// Freeze the containers (cgroup freezer) for the read.
    Pause,
    /// Stop the containers for the read and start them again.
    Stop,
}

impl Quiesce {
    pub fn as_str(self) -> &'static str {
        match self {
            Quiesce::None => "none",
            Quiesce::Pause => "pause",
            Quiesce::Stop => "stop",
        }
    }
}

fn backup_region() -> String {
    "auto".into()
}
fn r2_akid_env() -> String {
    "R2_ACCESS_KEY_ID".into()
}
fn r2_secret_env() -> String {
    "R2_SECRET_ACCESS_KEY".into()
}

fn keep_daily() -> u32 {
    14
}
fn lock_days() -> u32 {
    7
}
fn max_gb() -> f64 {
    9.0
}

/// self-heal (LLD section 10): probe each app's deep readiness URL; on HTTP 503 only (app
/// up, database down) start an App Runner deployment, unless one is already pending or in
/// progress or the app is in its cooldown. 404, 403, timeouts and refused connections
/// never trigger anything. Metrics go to `textfile` (when the Stack sets `textfileDir`):
/// `self_heal_probe_status_code{app}` (0: no HTTP answer), `self_heal_probe_up{app}`,
/// `self_heal_heals_triggered_total{app}`, `self_heal_heal_errors_total{app}`,
/// `self_heal_skips_total{app,reason="cooldown|operation_in_progress"}`,
/// `self_heal_last_heal_timestamp_seconds{app}`, `self_heal_last_run_timestamp_seconds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SelfHealJob {
    /// AWS region of the App Runner services.
    pub region: String,
    /// Override of `https://apprunner.<region>.amazonaws.com` (tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base: Option<String>,
    /// Env-file variable holding the access key ID of the IAM user allowed
    /// `apprunner:ListOperations` and `apprunner:StartDeployment`.
    #[serde(default = "aws_key_env")]
    pub access_key_id_env: String,
    /// Env-file variable holding that user's secret access key.
    #[serde(default = "aws_secret_env")]
    pub secret_access_key_env: String,
    /// Minimum time between two deployments of the same app (survives restarts).
    #[serde(default = "cooldown")]
    pub cooldown: Duration,
    /// Per-probe timeout.
    #[serde(default = "probe_timeout")]
    pub probe_timeout: Duration,
    /// Textfile name written in the Stack's `textfileDir`.
    #[serde(default = "heal_textfile")]
    pub textfile: String,
    pub apps: Vec<SelfHealApp>,
}

fn heal_textfile() -> String {
    "self_heal.prom".into()
}

fn aws_key_env() -> String {
    "SELFHEAL_AWS_ACCESS_KEY_ID".into()
}
fn aws_secret_env() -> String {
    "SELFHEAL_AWS_SECRET_ACCESS_KEY".into()
}
fn cooldown() -> Duration {
    Duration::secs(1800)
}
fn probe_timeout() -> Duration {
    Duration::secs(10)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SelfHealApp {
    /// The `app` label of the metrics and the key of the persisted cooldown.
    pub name: String,
    /// Deep readiness URL; only HTTP 503 triggers a deployment.
    pub ready_url: String,
    /// ARN of the App Runner service to redeploy.
    pub service_arn: String,
}

/// docker-names (LLD section 7): `container_name_info{short_id,name} 1` per running
/// container (short ID = the first 12 characters), for the cAdvisor join. Heartbeat:
/// `docker_names_last_run_timestamp_seconds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DockerNamesJob {
    /// Textfile name written in the Stack's `textfileDir`.
    #[serde(default = "names_textfile")]
    pub textfile: String,
}

fn names_textfile() -> String {
    "docker_names.prom".into()
}

/// status-gen (LLD section 9): queries Prometheus and writes `status.json`:
/// `{"generated_at", "overall": "operational|degraded|down|no_data", "surfaces": [{"name",
/// "url", "status", "uptime_24h", "uptime_7d", "uptime_30d", "latency_ms"}], "slo":
/// {"target", "uptime_30d", "error_budget_remaining"}}`. Uptimes are fractions
/// (`avg_over_time(probe_success{instance="<url>"}[…])`); a surface without samples
/// reports `null` ("no data"), never 100 %. A surface's `status` comes from the last 5
/// minutes of probes: all up `operational`, all down `down`, mixed `degraded`. When
/// Prometheus cannot be queried the run fails and the previous `status.json` stays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StatusPageJob {
    /// Prometheus base URL, e.g. `http://127.0.0.1:9090`.
    pub prometheus_url: String,
    /// Directory `status.json` is written to (served by Caddy at `/status`); a relative
    /// path is resolved against the Stack's `stateDir`.
    pub output_dir: String,
    /// SLO target as a fraction.
    #[serde(default = "slo")]
    pub slo_target: f64,
    /// Textfile for the job's heartbeat `status_page_last_run_timestamp_seconds`, written
    /// when the Stack sets `textfileDir`.
    #[serde(default = "status_textfile")]
    pub textfile: String,
    pub surfaces: Vec<StatusSurface>,
}

fn status_textfile() -> String {
    "status_page.prom".into()
}

fn slo() -> f64 {
    0.999
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StatusSurface {
    /// Display name.
    pub name: String,
    /// The probed URL (`instance` label of the blackbox probe).
    pub url: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_of_the_bodies() {
        let s: JobSpec = serde_json::from_value(json!({
            "schedule": "@every 5m",
            "cloudPoller": {"stripe": {}, "cloudflare": {"zoneTags": ["z1"]}}
        }))
        .unwrap();
        assert_eq!(s.timeout, Duration::secs(300));
        assert_eq!(s.history_limit, 20);
        assert_eq!(s.concurrency_policy, ConcurrencyPolicy::Forbid);
        let cp = s.cloud_poller.unwrap();
        assert_eq!(cp.textfile, "cloud.prom");
        let stripe = cp.stripe.unwrap();
        assert_eq!(
            (
                stripe.api_base.as_str(),
                stripe.key_env.as_str(),
                stripe.currency.as_str()
            ),
            ("https://api.stripe.com", "STRIPE_API_KEY", "brl")
        );
        assert_eq!(
            cp.cloudflare.unwrap().api_base,
            "https://api.cloudflare.com/client/v4"
        );

        let s: JobSpec = serde_json::from_value(json!({
            "schedule": "*/5 * * * *",
            "selfHeal": {"region": "eu-west-1", "apps": [{"name": "a", "readyUrl": "https://a/api/ready", "serviceArn": "arn"}]}
        }))
        .unwrap();
        let h = s.self_heal.unwrap();
        assert_eq!(
            (h.textfile.as_str(), h.cooldown, h.probe_timeout),
            ("self_heal.prom", Duration::secs(1800), Duration::secs(10))
        );

        let s: JobSpec = serde_json::from_value(json!({
            "schedule": "@every 1m",
            "statusPage": {"prometheusUrl": "http://prometheus:9090", "outputDir": "/srv/status", "surfaces": []}
        }))
        .unwrap();
        let p = s.status_page.unwrap();
        assert_eq!(
            (p.textfile.as_str(), p.slo_target),
            ("status_page.prom", 0.999)
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = serde_json::from_value::<JobSpec>(
            json!({"schedule": "@daily", "stripe": {"currency": "usd", "keyEnv": "K", "bogus": 1}}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = serde_json::from_value::<StripeSource>(json!({"bogus": 1})).unwrap_err();
        assert!(e.to_string().contains("unknown field `bogus`"), "{e}");
    }
}
