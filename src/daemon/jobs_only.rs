//! `obsd --jobs-only`: the job runner without a Docker engine — how obsd runs on
//! Kubernetes (`obsctl export k8s` makes it a Deployment).
//!
//! No reconcile loop, no Docker socket, no obsctl API socket: the desired state is
//! loaded (and reloaded on SIGHUP and when its content changes, checked every
//! [`RELOAD_EVERY`]), its Jobs are scheduled, and `/metrics` serves the `obsd_job_*`
//! families together with every series the jobs write. Those go to a private textfile
//! directory (`<state-dir>/textfiles`, whatever the Stack's `textfileDir` says) and are
//! read back at each scrape, so the LLD's names (`cf_*`, `stripe_*`, …) reach Prometheus
//! without node-exporter.
//!
//! Credentials: from the env file, and from the process environment where the env file
//! lacks a value (on Kubernetes the Secret arrives through `envFrom`). Jobs that need
//! the Docker engine (`dockerNames`, `backup` of volumes) are not scheduled; each is
//! logged once per load.

use crate::daemon::DaemonError;
use crate::desired::load::{load_dir, LoadOptions};
use crate::desired::model::JobSpec;
use crate::desired::{DesiredState, EnvFile};
use crate::jobs::textfile;
use crate::jobs::{
    BodyExecutor, ContainerNames, ContainerNamesError, JobContext, JobMetrics, JobRunner,
    RunnerConfig, SystemClock,
};
use crate::secret::Secret;
use crate::state;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// How often the desired state is re-read to notice a changed ConfigMap.
pub const RELOAD_EVERY: Duration = Duration::from_secs(60);

/// Settings from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    pub desired_dir: PathBuf,
    pub state_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
}

/// Why a job is not run without a Docker engine, if it is not.
pub fn needs_docker(spec: &JobSpec) -> Option<&'static str> {
    if spec.docker_names.is_some() {
        Some("dockerNames lists the Docker engine's containers")
    } else if spec.backup.as_ref().is_some_and(|b| !b.volumes.is_empty()) {
        Some("backup archives Docker volumes")
    } else {
        None
    }
}

/// The env file's values, with the process environment filling names the env file does
/// not have or leaves empty.
pub fn env_with_process(
    file: &EnvFile,
    process: impl IntoIterator<Item = (String, String)>,
) -> EnvFile {
    let mut env = file.clone();
    for (k, v) in process {
        let missing = env.values.get(&k).is_none_or(|s| s.expose().is_empty());
        if missing && !v.is_empty() {
            env.values.insert(k, Secret::new(v));
        }
    }
    env
}

/// The jobs to schedule: resolved and runnable without Docker. Logs the others.
fn runnable(d: &DesiredState) -> BTreeMap<String, JobSpec> {
    let mut out = BTreeMap::new();
    for (name, r) in &d.jobs {
        if let Some(why) = needs_docker(&r.spec) {
            warn!(job = %name, reason = why, "job not scheduled in jobs-only mode: it needs the Docker engine");
        } else if !r.source.unresolved.is_empty() {
            warn!(job = %name, missing = %r.source.unresolved.join(","), "job not scheduled: variables not set");
        } else {
            out.insert(name.clone(), r.spec.clone());
        }
    }
    out
}

/// The containers of a host without Docker: none, and an error that says why.
struct NoEngine;

impl ContainerNames for NoEngine {
    fn list(
        &self,
    ) -> futures_util::future::BoxFuture<'_, Result<Vec<(String, String)>, ContainerNamesError>>
    {
        Box::pin(async { Err("jobs-only mode has no Docker engine".into()) })
    }
}

/// Serves the textfiles the jobs write as metric families at each scrape.
#[derive(Debug)]
struct Textfiles {
    dir: PathBuf,
    /// Families already served by the registry itself; a textfile may not shadow them.
    reserved: BTreeSet<String>,
}

impl prometheus_client::collector::Collector for Textfiles {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "prom"));
        files.sort();
        let mut seen = self.reserved.clone();
        for f in files {
            let Ok(text) = std::fs::read_to_string(&f) else {
                continue;
            };
            // Jobs validate before writing; a file that still fails is skipped whole,
            // as node-exporter would.
            let Ok(parsed) = textfile::parse(&text) else {
                continue;
            };
            let mut families: Vec<&str> = Vec::new();
            for s in &parsed.samples {
                if !families.contains(&s.name.as_str()) {
                    families.push(&s.name);
                }
            }
            for fam in families {
                if !seen.insert(fam.to_string()) {
                    continue;
                }
                let help = parsed.help.get(fam).map(String::as_str).unwrap_or("");
                let kind = parsed
                    .types
                    .get(fam)
                    .map(String::as_str)
                    .unwrap_or("untyped");
                let (name, mtype) = match (kind, fam.strip_suffix("_total")) {
                    ("counter", Some(base)) => (base, MetricType::Counter),
                    ("gauge", _) => (fam, MetricType::Gauge),
                    _ => (fam, MetricType::Unknown),
                };
                let mut e = encoder.encode_descriptor(name, help, None, mtype)?;
                let samples: Vec<_> = parsed.samples.iter().filter(|s| s.name == fam).collect();
                let put = |v: f64, m: prometheus_client::encoding::MetricEncoder| match mtype {
                    MetricType::Counter => ConstCounter::new(v).encode(m),
                    _ => ConstGauge::new(v).encode(m),
                };
                if let [one] = samples.as_slice() {
                    if one.labels.is_empty() {
                        // No `{}` on an unlabelled series.
                        put(one.value, e)?;
                        continue;
                    }
                }
                for s in samples {
                    let labels: Vec<(String, String)> = s
                        .labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    put(s.value, e.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

/// Loads the desired state off the async threads.
async fn load(dir: &Path) -> Result<DesiredState, String> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        load_dir(&dir, &LoadOptions::default()).map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(format!("loader panicked: {e}")))
}

/// Runs the jobs until `shutdown` is cancelled (or SIGTERM/SIGINT).
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let first = load(&cfg.desired_dir)
        .await
        .map_err(|errors| DaemonError::Invalid {
            dir: cfg.desired_dir.clone(),
            errors,
        })?;
    let state_dir = state::resolve_dir(cfg.state_dir.as_deref(), Some(&first.stack.spec.state_dir));
    state::ensure_dir(&state_dir)?;
    let _lock = state::Lock::acquire(&state_dir)?;
    let textfiles = state_dir.join("textfiles");
    std::fs::create_dir_all(&textfiles)
        .map_err(|e| DaemonError::Io(format!("cannot create {}: {e}", textfiles.display())))?;

    let mut registry = Registry::default();
    let build_info = Family::<VersionLabel, Gauge>::default();
    registry.register("obsd_build_info", "obsd version", build_info.clone());
    build_info
        .get_or_create(&VersionLabel {
            version: env!("CARGO_PKG_VERSION").into(),
        })
        .set(1);
    let valid = Gauge::<i64>::default();
    registry.register(
        "obsd_desired_state_valid",
        "Whether the desired state on disk is valid (1) or the last good one is kept (0)",
        valid.clone(),
    );
    valid.set(1);
    let job_metrics = JobMetrics::register(&mut registry);
    let reserved = [
        "obsd_build_info",
        "obsd_desired_state_valid",
        "obsd_job_runs",
        "obsd_job_runs_total",
        "obsd_job_last_success_timestamp_seconds",
        "obsd_job_duration_seconds",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    registry.register_collector(Box::new(Textfiles {
        dir: textfiles.clone(),
        reserved,
    }));
    let registry = Arc::new(registry);

    let context = |d: &DesiredState| {
        JobContext::new(
            Arc::new(env_with_process(&d.env, std::env::vars())),
            state_dir.clone(),
            Some(textfiles.clone()),
            Arc::new(NoEngine),
        )
    };
    let exec = Arc::new(BodyExecutor::new(context(&first)));
    let runner = JobRunner::start(
        RunnerConfig {
            state_dir: state_dir.clone(),
            clock: Arc::new(SystemClock),
        },
        exec.clone(),
        job_metrics,
        shutdown.child_token(),
    );
    runner.set_jobs(runnable(&first));
    info!(
        jobs = first.jobs.len(),
        "jobs-only mode: desired state loaded"
    );
    let mut digest = first.digest.clone();

    let server = match cfg.listen {
        Some(addr) => Some(tokio::spawn(
            serve(addr, registry.clone(), shutdown.clone()).await?,
        )),
        None => None,
    };

    use tokio::signal::unix::{signal, SignalKind};
    let io = |e: std::io::Error| DaemonError::Io(format!("cannot install signal handlers: {e}"));
    let mut hup = signal(SignalKind::hangup()).map_err(io)?;
    let mut term = signal(SignalKind::terminate()).map_err(io)?;
    let mut int = signal(SignalKind::interrupt()).map_err(io)?;
    let mut tick = tokio::time::interval(RELOAD_EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {}
            _ = tick.tick() => {}
        }
        match load(&cfg.desired_dir).await {
            Ok(d) => {
                valid.set(1);
                if d.digest != digest {
                    info!(jobs = d.jobs.len(), "desired state changed: jobs reloaded");
                    exec.set_context(context(&d));
                    runner.set_jobs(runnable(&d));
                    digest = d.digest.clone();
                }
            }
            Err(e) => {
                valid.set(0);
                error!(errors = %e, "desired state invalid; keeping the last good one");
            }
        }
    }
    info!("shutting down");
    shutdown.cancel();
    runner.shutdown().await;
    if let Some(s) = server {
        let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
    }
    Ok(())
}

async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> Result<impl std::future::Future<Output = ()>, DaemonError> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| DaemonError::Io(format!("cannot listen on {addr}: {e}")))?;
    info!(%addr, "serving /metrics and /healthz");
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(
                |axum::extract::State(r): axum::extract::State<Arc<Registry>>| async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        crate::daemon::metrics::encode(&r),
                    )
                },
            ),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(registry);
    Ok(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_environment_fills_what_the_env_file_lacks() {
        let mut file = EnvFile::default();
        file.values.insert("A".into(), Secret::new("from-file"));
        file.values.insert("EMPTY".into(), Secret::new(""));
        let env = env_with_process(
            &file,
            [
                ("A".to_string(), "from-process".to_string()),
                ("EMPTY".to_string(), "filled".to_string()),
                ("B".to_string(), "b".to_string()),
            ],
        );
        assert_eq!(env.get("A").map(Secret::expose), Some("from-file"));
        assert_eq!(env.get("EMPTY").map(Secret::expose), Some("filled"));
        assert_eq!(env.get("B").map(Secret::expose), Some("b"));
    }

    #[test]
    fn docker_jobs_are_named() {
        let spec: JobSpec =
            serde_json::from_value(serde_json::json!({"schedule": "@every 1m", "dockerNames": {}}))
                .unwrap();
        assert!(needs_docker(&spec).is_some());
        let spec: JobSpec =
            serde_json::from_value(serde_json::json!({"schedule": "@every 1m", "cloudPoller": {}}))
                .unwrap();
        assert!(needs_docker(&spec).is_none());
    }
}
