//! The desired-state resource model (`apiVersion: obs.tlsstress.art/v1alpha1`).
//!
//! These structs are the contract users write in YAML. Every struct denies unknown
//! fields (typos are errors, never silently ignored) and derives `JsonSchema`, which
//! drives `obsctl schema`, the editor modeline schema and `crds-docs/`. Doc comments on
//! fields become the reference documentation, so they are written for operators.

pub mod aws_job;
pub mod backup_sources;
pub mod de;
pub mod job;
pub mod service;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use job::JobSpec;
pub use service::ServiceSpec;

/// The only accepted `apiVersion`.
pub const API_VERSION: &str = "obs.tlsstress.art/v1alpha1";

/// The resource kinds, in the order documentation lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Stack,
    Service,
    Volume,
    Network,
    Job,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Stack,
        Kind::Service,
        Kind::Volume,
        Kind::Network,
        Kind::Job,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Stack => "Stack",
            Kind::Service => "Service",
            Kind::Volume => "Volume",
            Kind::Network => "Network",
            Kind::Job => "Job",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity of a resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// DNS label (lowercase letters, digits and `-`, at most 63 characters), unique per kind.
    /// For a Service it is also the container's network alias and the suffix of its
    /// container name `<project>-<name>`.
    pub name: String,
    /// Free-form labels; not copied to Docker objects.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[serde(deserialize_with = "de::string_map")]
    pub labels: BTreeMap<String, String>,
}

/// A desired-state document of one kind: the envelope every file uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Document<S> {
    /// Always `obs.tlsstress.art/v1alpha1`.
    pub api_version: String,
    /// One of `Stack`, `Service`, `Volume`, `Network`, `Job`.
    pub kind: String,
    pub metadata: Metadata,
    pub spec: S,
}

/// A duration written as `30s`, `5m`, `1h30m`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = de::scalar_string(d)?;
        humantime::parse_duration(s.trim())
            .map(Duration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration `{s}` ({e}); write e.g. `30s`, `5m`, `1h30m`"
                ))
            })
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration such as `30s`, `5m`, `1h30m` or `7d`.",
            "pattern": "^\\s*([0-9]+\\s*(ns|us|ms|s|m|h|d|w)\\s*)+$"
        })
    }
}

// ---------------------------------------------------------------------------- Stack

/// The one Stack document: project-wide settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StackSpec {
    /// Project name: containers are named `<project>-<service>`, volumes and networks
    /// `<project>_<name>` (the names docker compose uses, so a migrated stack keeps its
    /// data). Every Docker object obsd creates carries the label
    /// `obs.tlsstress.art/stack=<project>`.
    pub project: String,
    /// Env file (relative to the desired-state directory, or absolute) providing
    /// `${VAR}` values and every `secretEnv` value. Must not be readable by group or
    /// others (chmod 600). When absent, only the process environment is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_file: Option<String>,
    /// Where obsd keeps its state (lock, host key, generations, job history).
    #[serde(default = "default_state_dir")]
    pub state_dir: String,
    /// Network every Service joins when it lists none (a `Network` resource name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_network: Option<String>,
    /// How many Docker operations run at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Full resync period: the backstop when a Docker event was missed.
    #[serde(default = "default_resync")]
    pub resync_period: Duration,
    /// What to do with owned resources that are no longer desired.
    #[serde(default)]
    pub prune: PrunePolicy,
    /// Alerting that does not depend on the stack's own Prometheus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerting: Option<AlertingSpec>,
    /// Directory where jobs write node-exporter textfiles (`*.prom`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub textfile_dir: Option<String>,
}

fn default_state_dir() -> String {
    crate::state::DEFAULT_STATE_DIR.into()
}

impl StackSpec {
    /// A Stack with every field at its documented default.
    pub fn new(project: impl Into<String>) -> StackSpec {
        StackSpec {
            project: project.into(),
            env_file: None,
            state_dir: default_state_dir(),
            default_network: None,
            concurrency: default_concurrency(),
            resync_period: default_resync(),
            prune: PrunePolicy::default(),
            alerting: None,
            textfile_dir: None,
        }
    }
}
fn default_concurrency() -> u32 {
    8
}
fn default_resync() -> Duration {
    Duration::secs(300)
}

/// Prune policy for owned objects that left the desired state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrunePolicy {
    /// Remove owned containers whose Service was deleted from the desired state.
    /// Named volumes are never removed by pruning (see `obsctl volume rm`).
    #[serde(default = "yes")]
    pub containers: bool,
    /// Remove owned networks that are no longer desired and have no containers.
    #[serde(default = "yes")]
    pub networks: bool,
}

impl Default for PrunePolicy {
    fn default() -> Self {
        PrunePolicy {
            containers: true,
            networks: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// Out-of-band alerting configured on the Stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AlertingSpec {
    /// Env-file variable holding the Alertmanager base URL (e.g. `http://127.0.0.1:9093`)
    /// obsd posts `ObsdReconcileFailing` to directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertmanager_url_env: Option<String>,
    /// Env-file variable holding a healthchecks.io-style ping URL: pinged after each
    /// successful reconcile, `<url>/fail` after a failed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_man_url_env: Option<String>,
    /// How long reconciling must keep failing before obsd raises the alert itself.
    #[serde(default = "default_failing_after")]
    pub failing_after: Duration,
}

fn default_failing_after() -> Duration {
    Duration::secs(600)
}

// ---------------------------------------------------------------------------- Volume

/// A named Docker volume.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeSpec {
    /// Docker name of the volume; defaults to `<project>_<metadata.name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Volume driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// `Retain` (the default and only policy): obsd never deletes the volume; an
    /// orphaned volume is reported and removed only by `obsctl volume rm NAME`.
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub enum ReclaimPolicy {
    #[default]
    Retain,
}

// ---------------------------------------------------------------------------- Network

/// A Docker network.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkSpec {
    /// Docker name of the network; defaults to `<project>_<metadata.name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Network driver (default `bridge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// No route to the outside world.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
}
