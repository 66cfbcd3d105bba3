//! The Docker boundary: a small trait the planner's callers depend on, with the bollard
//! implementation ([`engine::Engine`]) and a recording fake ([`fake::FakeDocker`]).
//!
//! Invariant: only `docker/engine.rs` imports bollard. Everything above this module
//! speaks these plain types, so the executor is unit-tested against the fake and
//! integration-tested against a real engine with the same code.

pub mod engine;
pub mod fake;

use std::collections::BTreeMap;
use std::future::Future;

/// Label keys (contract: prefix `obs.tlsstress.art/`).
pub mod labels {
    pub const STACK: &str = "obs.tlsstress.art/stack";
    pub const KIND: &str = "obs.tlsstress.art/kind";
    pub const NAME: &str = "obs.tlsstress.art/name";
    pub const SPEC_HASH: &str = "obs.tlsstress.art/spec-hash";
    /// Per config file content hashes, comma separated, in `configFiles` order.
    pub const CONFIG_HASH: &str = "obs.tlsstress.art/config-hash";
    /// The applied spec with secrets masked, for field-level `obsctl diff`.
    pub const APPLIED: &str = "obs.tlsstress.art/applied-spec";

    /// Whether an object with these labels belongs to `project`: the one test that
    /// decides what obsd may stop, replace or remove.
    pub fn owned(labels: &std::collections::BTreeMap<String, String>, project: &str) -> bool {
        labels.get(STACK).map(String::as_str) == Some(project)
    }
}

/// Docker-level failure, with enough context for a status line and a bounded metric label.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("docker engine unreachable: {0}")]
    Unreachable(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("image {image}: {message}")]
    Image { image: String, message: String },
    #[error("{0}")]
    Api(String),
}

impl DockerError {
    /// The error without the "unreachable" prefix, for callers that say it themselves.
    pub fn detail(&self) -> String {
        match self {
            DockerError::Unreachable(m) => m.clone(),
            other => other.to_string(),
        }
    }

    /// Low-cardinality label for metrics.
    pub fn class(&self) -> &'static str {
        match self {
            DockerError::Unreachable(_) => "unreachable",
            DockerError::NotFound(_) => "not_found",
            DockerError::Conflict(_) => "conflict",
            DockerError::Image { .. } => "image",
            DockerError::Api(_) => "api",
        }
    }
}

pub type Result<T> = std::result::Result<T, DockerError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

/// A container as listed by the engine.
#[derive(Debug, Clone)]
pub struct ContainerInfo {
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Image reference the container was created with.
    pub image: String,
    /// Image ID (`sha256:…`) the container runs.
    pub image_id: String,
    pub labels: BTreeMap<String, String>,
    pub state: RunState,
    pub health: Option<Health>,
    /// Engine's human status line (`Up 3 minutes (healthy)`, `Exited (1) 2 seconds ago`).
    pub status: String,
    /// IP address per network name (how obsd reaches a service from the host).
    pub ips: BTreeMap<String, String>,
}

impl ContainerInfo {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

#[derive(Debug, Clone)]
pub struct VolumeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub mountpoint: String,
}

#[derive(Debug, Clone)]
pub struct NetworkInfo {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// Everything needed to create a container; produced by `render`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateContainer {
    pub name: String,
    pub image: String,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: Option<String>,
    /// `KEY=value`, secrets in clear (only the engine sees this).
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub exposed_ports: Vec<String>,
    pub port_bindings: Vec<PortBinding>,
    pub mounts: Vec<Mount>,
    /// Networks to join (the first one at create time, the rest right after).
    pub networks: Vec<NetworkAttachment>,
    pub restart: String,
    pub user: Option<String>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub devices: Vec<String>,
    pub security_opt: Vec<String>,
    pub read_only: bool,
    pub tmpfs: BTreeMap<String, String>,
    pub pid: Option<String>,
    pub memory: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub pids_limit: Option<i64>,
    pub log_driver: Option<LogConfig>,
    pub extra_hosts: Vec<String>,
    pub healthcheck: Option<HealthConfig>,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<i64>,
}

/// A published port: container port (`9090/tcp`) on a host port, optionally one address.
#[derive(Debug, Clone, PartialEq)]
pub struct PortBinding {
    pub container_port: String,
    pub host_ip: Option<String>,
    pub host_port: u16,
}

/// A network the container joins, with the DNS aliases it answers to there.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkAttachment {
    pub network: String,
    pub aliases: Vec<String>,
}

/// The container's healthcheck; durations in nanoseconds, 0 = the engine's default.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    pub test: Vec<String>,
    pub interval_ns: i64,
    pub timeout_ns: i64,
    /// 0 = the engine's default.
    pub retries: i64,
    pub start_period_ns: i64,
}

/// The logging driver and its options.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub driver: String,
    pub options: BTreeMap<String, String>,
}

/// A mount: a named volume, a bind mount of a host path, or a tmpfs.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    /// `volume`, `bind` or `tmpfs`.
    pub kind: &'static str,
    pub source: String,
    pub target: String,
    pub read_only: bool,
    pub propagation: Option<String>,
}

/// A container's run state as one inspect reports it (what a rollout's health gate
/// watches).
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerState {
    pub state: RunState,
    /// Last exit code (0 while it never exited).
    pub exit_code: i64,
    /// `None`: the container has no healthcheck (neither its own nor the image's).
    pub health: Option<Health>,
    /// How often the engine restarted it under its restart policy.
    pub restart_count: i64,
    /// The engine's error for a container that could not start.
    pub error: Option<String>,
}

/// A Docker event reduced to what the daemon uses as a hint.
#[derive(Debug, Clone)]
pub struct EngineEvent {
    /// `container`, `network`, `volume`, `image`.
    pub kind: String,
    pub action: String,
    pub id: String,
    pub labels: BTreeMap<String, String>,
}

/// The operations obsd performs on the engine. Every method is one API call (or a
/// stream), so a recording fake can assert exactly which calls a scenario makes.
/// A local image: its ID and the `repo@sha256:…` digests it was pulled or pushed as.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LocalImage {
    pub id: String,
    pub repo_digests: Vec<String>,
}

pub trait Docker: Send + Sync + 'static {
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;
    /// All containers (for docker-names and name-conflict checks).
    fn list_all_containers(&self) -> impl Future<Output = Result<Vec<ContainerInfo>>> + Send;
    /// Image ID a reference resolves to locally, `None` when absent.
    fn image_id(&self, reference: &str) -> impl Future<Output = Result<Option<String>>> + Send;
    /// The local image a reference names with its registry digests (`RepoDigests`),
    /// `None` when absent: what a registry check (`update.image`) compares against.
    fn inspect_image(
        &self,
        reference: &str,
    ) -> impl Future<Output = Result<Option<LocalImage>>> + Send;
    fn pull_image(&self, reference: &str) -> impl Future<Output = Result<()>> + Send;
    fn list_volumes(&self) -> impl Future<Output = Result<Vec<VolumeInfo>>> + Send;
    fn create_volume(
        &self,
        name: &str,
        driver: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<()>> + Send;
    fn remove_volume(&self, name: &str) -> impl Future<Output = Result<()>> + Send;
    fn list_networks(&self) -> impl Future<Output = Result<Vec<NetworkInfo>>> + Send;
    fn create_network(
        &self,
        name: &str,
        driver: Option<&str>,
        internal: bool,
        labels: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<()>> + Send;
    fn remove_network(&self, name: &str) -> impl Future<Output = Result<()>> + Send;
    /// Creates (not starts) a container and connects its extra networks; returns its ID.
    fn create_container(
        &self,
        spec: &CreateContainer,
    ) -> impl Future<Output = Result<String>> + Send;
    fn start_container(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    fn stop_container(
        &self,
        id: &str,
        timeout_secs: Option<i64>,
    ) -> impl Future<Output = Result<()>> + Send;
    fn restart_container(
        &self,
        id: &str,
        timeout_secs: Option<i64>,
    ) -> impl Future<Output = Result<()>> + Send;
    fn kill_container(&self, id: &str, signal: &str) -> impl Future<Output = Result<()>> + Send;
    fn remove_container(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    fn rename_container(&self, id: &str, new_name: &str)
        -> impl Future<Output = Result<()>> + Send;
    /// Takes a container off a network (its DNS names there go with it); it keeps
    /// running.
    fn disconnect_network(
        &self,
        network: &str,
        id: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    /// One inspect of a container's run state.
    fn inspect_state(&self, id: &str) -> impl Future<Output = Result<ContainerState>> + Send;
    /// The last `tail` lines of a container's stdout and stderr, interleaved as logged.
    fn container_logs(&self, id: &str, tail: usize) -> impl Future<Output = Result<String>> + Send;
    /// Runs `cmd` inside a running container and waits for it: (exit code, output).
    fn exec(&self, id: &str, cmd: &[String]) -> impl Future<Output = Result<(i64, String)>> + Send;
    /// Containers (any state) that mount the named volume (`filters={"volume":[name]}`).
    fn containers_using_volume(
        &self,
        volume: &str,
    ) -> impl Future<Output = Result<Vec<ContainerInfo>>> + Send;
    fn pause_container(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    fn unpause_container(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// `GET /containers/{id}/archive?path=…`: the path as a tar stream (the container
    /// need not run: its mounts are read through the engine).
    fn download_archive(
        &self,
        id: &str,
        path: &str,
    ) -> impl futures_util::Stream<Item = Result<bytes::Bytes>> + Send + 'static;
    /// `PUT /containers/{id}/archive?path=…`: extracts a tar stream under `path`
    /// (ownership and modes as in the tar headers).
    fn upload_archive(
        &self,
        id: &str,
        path: &str,
        tar: impl futures_util::Stream<Item = bytes::Bytes> + Send + 'static,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Engine events from now on; the stream ends when the connection drops.
    fn events(&self) -> impl futures_util::Stream<Item = Result<EngineEvent>> + Send + 'static;
}

/// Parses the health suffix of an engine status line.
pub fn health_from_status(status: &str) -> Option<Health> {
    if status.contains("(healthy)") {
        Some(Health::Healthy)
    } else if status.contains("(unhealthy)") {
        Some(Health::Unhealthy)
    } else if status.contains("(health: starting)") {
        Some(Health::Starting)
    } else {
        None
    }
}
