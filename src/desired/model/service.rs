//! `Service`: one container, with compose-level expressiveness.

use super::{de, Duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One long-running container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Image reference: `repo:tag`, `repo@sha256:<digest>` or `repo:tag@sha256:<digest>`.
    /// A tag that moves to another image ID is `image_changed` drift.
    pub image: String,
    /// When to pull the image.
    #[serde(default)]
    pub pull_policy: PullPolicy,
    /// Overrides the image's `CMD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "de::opt_string_vec")]
    pub command: Option<Vec<String>>,
    /// Overrides the image's `ENTRYPOINT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "de::opt_string_vec")]
    pub entrypoint: Option<Vec<String>>,
    /// Working directory inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Plain environment variables (shown in `obsctl diff`). Values may use `${VAR}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[serde(deserialize_with = "de::string_map")]
    pub env: BTreeMap<String, String>,
    /// Secret environment variables: container variable → name of the env-file variable
    /// holding the value. Values come only from the Stack's env file and are masked
    /// (`***`) in every output.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
    /// Host ports to publish. Only the edge proxy should need any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// Container ports other services reach on the stack network (documentation and
    /// image metadata; never published on the host).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<u16>,
    /// Named volumes (each a `Volume` resource) mounted into the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
    /// Host paths bind-mounted into the container (e.g. `/` for node-exporter, the
    /// Docker socket). Not checked for existence: they live on the target host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binds: Vec<BindMount>,
    /// Files or directories from the desired-state directory, bind-mounted read-only.
    /// Their *content* is part of the spec hash; `onChange` says what a change does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_files: Vec<ConfigFile>,
    /// Networks to join (`Network` resource names); default: the Stack's `defaultNetwork`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// Services that must be up first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Dependency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    /// Docker restart policy; obsd repairs on top of it.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// `uid[:gid]` or a user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Capabilities to add (e.g. `NET_ADMIN`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Capabilities to drop (e.g. `ALL`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Run privileged (cAdvisor needs it). Avoid elsewhere.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    /// Host devices, `host[:container[:perms]]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Security options (e.g. `no-new-privileges:true`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    /// Read-only root filesystem.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// tmpfs mounts, `path[:options]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    /// PID namespace: `host` to share the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    /// Extra `/etc/hosts` entries, `name:ip` (`host-gateway` allowed as ip).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    /// Container labels (obsd adds its own `obs.tlsstress.art/*` labels).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[serde(deserialize_with = "de::string_map")]
    pub labels: BTreeMap<String, String>,
    /// Signal that stops the container (default: the image's, usually SIGTERM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Grace period between the stop signal and SIGKILL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<Duration>,
    /// How a replacement rolls out (the health gate and its rollback). Not part of the
    /// spec hash: changing it never recreates the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdatePolicy>,
    /// A check of the new config with the service's own tool, run before any rollout
    /// that changes the container or applies changed config files. Not part of the
    /// spec hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_check: Option<ConfigCheck>,
}

/// Preflight: before a replace or an in-place config change, obsd runs `command` in a
/// throwaway container of the *new* image with the *new* mounts (all read-only), no
/// network and no published ports. A non-zero exit (or running past `timeout`) leaves
/// the running container untouched and shows `preflight_failed` drift with the tool's
/// output in `obsctl status` and `obsctl diff`; the same config is not checked again
/// until it changes or an operator runs `obsctl rollout retry NAME`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigCheck {
    /// The check, run as the container's entrypoint (the image's `ENTRYPOINT` and
    /// `CMD` are replaced), e.g. `[caddy, validate, --config, /etc/caddy/Caddyfile]`.
    #[serde(deserialize_with = "de::string_vec")]
    pub command: Vec<String>,
    /// How long the check may run (default `30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// A replacement (`spec_changed`, `image_changed`, a config file with
/// `onChange: recreate`) is health-gated: the old container is stopped and kept as
/// `<container>--prev` while the new one starts; the new one must keep running for
/// `settle` and, when it has a healthcheck, report healthy within `timeout`. If it exits,
/// restarts, turns unhealthy or misses the deadline, obsd removes it and starts the old
/// container again (`rolled_back` drift, with the reason and the last log lines in
/// `obsctl status`). That spec is not tried again until it changes or an operator runs
/// `obsctl rollout retry NAME`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdatePolicy {
    /// How long the new container must run before the old one is removed
    /// (default `1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle: Option<Duration>,
    /// Deadline for the new container to report healthy (with a healthcheck). Default:
    /// the healthcheck's `startPeriod + (interval + timeout) × (retries + 1)`, at least
    /// `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// `stop-first` (default): the old container is stopped before the new one starts.
    /// `start-first`: the new one starts beside the old one (as `<container>--next`, on
    /// the same networks) and the old one is stopped only once the new one passed the
    /// gate; a failing new one is removed and the old one was never stopped. Refused
    /// with published host ports or a writable named volume (two copies at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<UpdateOrder>,
    /// Watch the registry for a new image under the service's tag (off by default).
    /// Not for digest-pinned images (`@sha256:`), which cannot move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageUpdates>,
}

/// Registry checks for a moved tag: obsd asks the image's registry (one `HEAD` of the
/// tag's manifest, at most every `checkInterval`, honouring `429` and `Retry-After`)
/// whether the tag now names another manifest than the local image. The last check
/// of each image is kept in the state directory, so a restart does not ask again early.
/// A check that fails (registry unreachable, 5xx, rate-limited) is not drift: it is
/// reported in the service's status message and in `obsd_image_check_errors_total`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageUpdates {
    /// `notify`: report `image_outdated` drift and `obsd_image_update_available`, change
    /// nothing. `auto`: pull the tag; the moved local tag is then `image_changed` and
    /// rolls out through the health gate like any replacement (a failing new image is
    /// rolled back and held; the same image is not pulled and tried again).
    pub policy: ImageUpdatePolicy,
    /// How often the registry is asked (default `6h`, at least `1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_interval: Option<Duration>,
}

/// What a moved tag does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ImageUpdatePolicy {
    /// Report it (`image_outdated` drift); change nothing.
    Notify,
    /// Pull it and roll it out through the health gate.
    Auto,
}

/// `update.image.checkInterval` when not set.
pub const DEFAULT_IMAGE_CHECK_INTERVAL: std::time::Duration =
    std::time::Duration::from_secs(6 * 3600);
/// The shortest `update.image.checkInterval` accepted: registries rate-limit.
pub const MIN_IMAGE_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

impl ImageUpdates {
    /// The interval between two checks of the image.
    pub fn interval(&self) -> std::time::Duration {
        self.check_interval
            .as_ref()
            .map_or(DEFAULT_IMAGE_CHECK_INTERVAL, |d| d.0)
    }
}

/// Which copy a replacement stops first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// Stop the old container, then start the new one (a gap; no two copies at once).
    #[default]
    StopFirst,
    /// Start the new container beside the old one; stop the old one once the new one
    /// passed the gate (no gap).
    StartFirst,
}

impl ServiceSpec {
    /// The service's registry-check settings (`update.image`), if it opted in.
    pub fn image_updates(&self) -> Option<&ImageUpdates> {
        self.update.as_ref().and_then(|u| u.image.as_ref())
    }

    /// Whether a replacement starts the new container before stopping the old one.
    pub fn start_first(&self) -> bool {
        self.update
            .as_ref()
            .and_then(|u| u.order)
            .is_some_and(|o| o == UpdateOrder::StartFirst)
    }
}

/// The health gate's settle period when `update.settle` is not set.
pub const DEFAULT_SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    /// Pull only when the image is not present locally (default).
    #[default]
    IfNotPresent,
    /// Pull on every reconcile that creates or checks the container; a moved tag is
    /// `image_changed` drift.
    Always,
    /// Never pull; a missing image is an error for this service.
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    No,
    Always,
    #[default]
    UnlessStopped,
    OnFailure,
}

impl RestartPolicy {
    pub fn docker_name(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
            RestartPolicy::OnFailure => "on-failure",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortSpec {
    /// Port on the host.
    pub host: u16,
    /// Port in the container.
    pub container: u16,
    #[serde(default)]
    pub protocol: Protocol,
    /// Host address to bind (default all addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

/// A named volume mount.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeMount {
    /// Name of a `Volume` resource.
    pub volume: String,
    /// Absolute path in the container.
    pub target: String,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// A host path bind mount.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BindMount {
    /// Absolute path on the host.
    pub source: String,
    /// Absolute path in the container.
    pub target: String,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Mount propagation (`rslave` for node-exporter's `/:/host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<String>,
}

/// A config file or directory from the desired-state directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigFile {
    /// Path relative to the desired-state directory (must stay inside it). A directory
    /// is hashed recursively.
    pub source: String,
    /// Absolute path in the container (mounted read-only).
    pub target: String,
    /// What a content change does to the running container.
    #[serde(default)]
    pub on_change: OnChange,
}

/// Reaction to a config content change.
///
/// Written as `recreate`, `restart`, `none`, `{signal: SIGHUP}`, `{exec: [...]}` or
/// `{http: {method, port, path}}`. On a single-file mount (not a directory) a signal,
/// exec or http reload is applied as a restart: the file mount keeps the old inode when an
/// editor saves by rename.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnChange {
    /// Replace the container (default).
    #[default]
    Recreate,
    /// Restart the container in place.
    Restart,
    /// Send a signal (e.g. `SIGHUP`) so the process reloads.
    Signal(String),
    /// Run a command inside the container so the process reloads (e.g.
    /// `[caddy, reload, --config, /etc/caddy/Caddyfile]`); a non-zero exit falls back to a
    /// restart.
    Exec(#[serde(deserialize_with = "de::string_vec")] Vec<String>),
    /// Ask the process over HTTP to reload (e.g. Prometheus, Alertmanager:
    /// `{method: POST, port: 9090, path: /-/reload}`); obsd calls the container's address
    /// from the host; an answer other than 2xx falls back to a restart.
    Http(HttpReload),
    /// Do nothing; the process watches the file itself.
    None,
}

/// An HTTP reload endpoint of the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpReload {
    /// Default `POST`.
    #[serde(default = "default_reload_method")]
    pub method: String,
    /// The container port.
    pub port: u16,
    /// e.g. `/-/reload`.
    pub path: String,
}

fn default_reload_method() -> String {
    "POST".into()
}

/// A start-order dependency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Dependency {
    /// Name of another `Service`.
    pub service: String,
    /// `started`: its container runs; `healthy`: its healthcheck passes.
    #[serde(default)]
    pub condition: DependencyCondition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DependencyCondition {
    /// The dependency's container is running (default).
    #[default]
    Started,
    /// The dependency reports healthy (it must have a healthcheck).
    Healthy,
}

/// Container healthcheck.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Healthcheck {
    /// `["CMD", "wget", "-qO-", "http://localhost:9090/-/ready"]`, `["CMD-SHELL", "…"]`,
    /// or `["NONE"]` to disable the image's healthcheck.
    #[serde(deserialize_with = "de::string_vec")]
    pub test: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<Duration>,
}

/// Resource limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    /// Memory limit: bytes, or with a suffix `k`, `m`, `g` (e.g. `512m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// CPU limit in cores (e.g. `0.5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Maximum number of processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
}

/// Container log driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Logging {
    /// Log driver (default `json-file`).
    #[serde(default = "json_file")]
    pub driver: String,
    /// Driver options, e.g. `max-size: 10m`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[serde(deserialize_with = "de::string_map")]
    pub options: BTreeMap<String, String>,
}

fn json_file() -> String {
    "json-file".into()
}

/// Parses `512m`, `1g`, `1024` into bytes.
pub fn parse_memory(s: &str) -> Option<i64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let s = s.strip_suffix('i').unwrap_or(s);
    let (num, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1024i64),
        'm' => (&s[..s.len() - 1], 1024 * 1024),
        'g' => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        _ => (s, 1),
    };
    let n: f64 = num.trim().parse().ok()?;
    if n < 0.0 {
        return None;
    }
    Some((n * mult as f64) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_suffixes() {
        assert_eq!(parse_memory("512m"), Some(512 * 1024 * 1024));
        assert_eq!(parse_memory("1Gi"), Some(1024 * 1024 * 1024));
        assert_eq!(parse_memory("1024"), Some(1024));
        assert_eq!(parse_memory("lots"), None);
    }
}
