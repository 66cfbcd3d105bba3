//! Scheduled reconcilers: the `Job` resources that replace the stack's Python sidecars.
//!
//! Code map:
//! - [`scheduler`]: the [`JobRunner`] — schedules, jitter, timeouts, concurrency policy,
//!   catch-up after downtime, manual triggers, persisted run history, `status()`.
//! - [`metrics`]: the `obsd_job_*` families of the contract.
//! - [`history`]: the per-job state file `<state_dir>/jobs/<name>.json`.
//! - [`textfile`]: the node-exporter textfile writer every body uses.
//! - bodies: [`cloud_poller`], [`docker_names`], [`status_page`], [`self_heal`],
//!   [`logs_shipper`] (with the Loki client [`loki`]), [`aws_cron_monitor`], [`backup`]
//!   (volumes → S3/R2, restore).
//! - [`http`] (retry/backoff, error shapes) and [`aws`] (SigV4-signed AWS JSON calls,
//!   through the `aws-sigv4` crate) serve the bodies.
//!
//! Invariants:
//! - A body never blocks the caller of the runner: every run is its own task, and a panic
//!   or error in one job is recorded as that job's failed run and nothing else.
//! - Credentials come only from the Stack's env file ([`EnvFile`]); they are exposed only
//!   to build auth headers and never appear in errors, logs, status or files.
//! - Every file a job writes (textfiles, `status.json`, state) is written to a temporary
//!   file in the same directory and renamed over the target.

pub(crate) mod aws;
pub mod aws_cron_monitor;
pub mod backup;
pub(crate) mod clock;
pub mod cloud_poller;
pub(crate) mod docker_names;
pub mod history;
pub(crate) mod http;
pub mod logs_shipper;
pub(crate) mod loki;
pub(crate) mod metrics;
pub mod quiesced;
pub(crate) mod scheduler;
pub mod self_heal;
pub mod status_page;
pub mod textfile;

pub use clock::{Clock, SystemClock, TokioClock};
pub use history::{RunRecord, RunResult, RunTrigger};
pub use http::RetryPolicy;
pub use metrics::JobMetrics;
pub use scheduler::{JobRunner, JobStatus, RunHandle, RunnerConfig, TriggerError};

use crate::desired::model::JobSpec;
use crate::desired::EnvFile;
use crate::secret::Secret;
use futures_util::future::BoxFuture;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The containers of the Docker host, for `container_name_info`.
///
/// The daemon implements it on its Docker adapter (running containers, `docker ps`);
/// tests use a fake. Implementations should be cheap: the daemon re-runs the
/// docker-names job on container events.
pub trait ContainerNames: Send + Sync {
    /// `(full container id, name)` of every running container. A leading `/` on the name
    /// (as the Docker API reports it) is stripped by the job.
    fn list(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, ContainerNamesError>>;
}

/// Whatever went wrong listing containers (the Docker adapter's own error, boxed).
pub type ContainerNamesError = Box<dyn std::error::Error + Send + Sync>;

/// What every job body gets: where to write, how to talk HTTP, and the credentials.
#[derive(Clone)]
pub struct JobContext {
    /// Values of the Stack's env file; the only source of credentials.
    pub env: Arc<EnvFile>,
    /// The Stack's `textfileDir` (node-exporter's textfile directory). Jobs whose output
    /// is a textfile fail when it is unset; others skip their heartbeat file.
    pub textfile_dir: Option<PathBuf>,
    /// obsd's state directory (job history, self-heal cooldowns). Relative
    /// `statusPage.outputDir` values are resolved against it.
    pub state_dir: PathBuf,
    /// Shared HTTP client (connection pool); per-request timeouts are set by the bodies.
    pub http: reqwest::Client,
    /// Timeout of one API request (probes use `selfHeal.probeTimeout`).
    pub request_timeout: Duration,
    /// Backoff for 429 and 5xx answers.
    pub retry: RetryPolicy,
    /// The containers on the host (docker-names).
    pub containers: Arc<dyn ContainerNames>,
    /// Wall-clock time: "today" for Stripe and Cloudflare, cooldowns, timestamps.
    pub clock: Arc<dyn Clock>,
}

impl JobContext {
    /// A context with the production defaults: system clock, 30 s request timeout,
    /// [`RetryPolicy::default`], and a fresh HTTP client.
    pub fn new(
        env: Arc<EnvFile>,
        state_dir: PathBuf,
        textfile_dir: Option<PathBuf>,
        containers: Arc<dyn ContainerNames>,
    ) -> JobContext {
        JobContext {
            env,
            textfile_dir,
            state_dir,
            http: default_http_client(),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            containers,
            clock: Arc::new(SystemClock),
        }
    }

    /// A credential from the env file, or an error naming the variable (never its value).
    pub(crate) fn secret(&self, env_name: &str) -> Result<&Secret, JobError> {
        self.env
            .get(env_name)
            .filter(|s| !s.expose().is_empty())
            .ok_or_else(|| JobError::Config(format!("`{env_name}` is not set in the env file")))
    }

    pub(crate) fn textfile_dir(&self) -> Result<&Path, JobError> {
        self.textfile_dir.as_deref().ok_or_else(|| {
            JobError::Config("the Stack sets no textfileDir to write metrics to".into())
        })
    }
}

/// The HTTP client obsd's jobs use (rustls, no proxy surprises, a clear user agent).
pub fn default_http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("obsd/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("the HTTP client configuration is static and valid")
}

/// Why a job run failed. The text is what `obsctl jobs` shows as the last error.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Something missing in the desired state or env file.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Http(#[from] http::HttpError),
    #[error(transparent)]
    Textfile(#[from] textfile::TextfileError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Some sources or targets failed; the others did their work (the textfile was
    /// still written, with `*_scrape_up 0` for the failed ones).
    #[error("{0}")]
    Partial(String),
    #[error("{0}")]
    Failed(String),
}

/// One run to execute: what the runner hands to an [`Executor`].
#[derive(Debug, Clone)]
pub struct JobRun {
    pub name: String,
    pub spec: Arc<JobSpec>,
    /// Cancelled on timeout, `Replace`, job removal and shutdown. The runner also drops
    /// the body's future then, so honouring it is a courtesy (e.g. stop retrying).
    pub cancel: CancellationToken,
}

/// Runs job bodies. [`BodyExecutor`] runs the real ones; scheduler tests inject fakes.
pub trait Executor: Send + Sync + 'static {
    fn run(&self, run: JobRun) -> BoxFuture<'static, Result<(), JobError>>;
}

/// The production [`Executor`]: dispatches on the job's body.
pub struct BodyExecutor {
    /// Swapped as a whole when the desired state (env file, textfile dir) changes; a run
    /// keeps the context it started with.
    ctx: RwLock<Arc<JobContext>>,
}

impl BodyExecutor {
    pub fn new(ctx: JobContext) -> BodyExecutor {
        BodyExecutor {
            ctx: RwLock::new(Arc::new(ctx)),
        }
    }

    /// Replace the context used by runs started from now on (e.g. after the env file
    /// changed).
    pub fn set_context(&self, ctx: JobContext) {
        *self.ctx.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ctx);
    }

    pub fn context(&self) -> Arc<JobContext> {
        self.ctx.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Executor for BodyExecutor {
    fn run(&self, run: JobRun) -> BoxFuture<'static, Result<(), JobError>> {
        let ctx = self.context();
        Box::pin(async move {
            let spec = &run.spec;
            let cancel = &run.cancel;
            // The runner cancels the run at its timeout; bodies that back off (AWS
            // throttling, HTTP 429/5xx through `http::send`) never sleep past it.
            let deadline = tokio::time::Instant::now() + spec.timeout.0;
            let ctx = JobContext {
                retry: ctx.retry.within(Some(deadline)),
                ..(*ctx).clone()
            };
            if let Some(b) = &spec.cloud_poller {
                cloud_poller::run(&ctx, b, cancel, Some(deadline)).await
            } else if let Some(b) = &spec.docker_names {
                docker_names::run(&ctx, b, cancel).await
            } else if let Some(b) = &spec.status_page {
                status_page::run(&ctx, b, cancel).await
            } else if let Some(b) = &spec.self_heal {
                self_heal::run(&ctx, &run.name, b, cancel).await
            } else if let Some(b) = &spec.backup {
                backup::run(&ctx, &run.name, b, cancel).await
            } else if let Some(b) = &spec.logs_shipper {
                logs_shipper::run(&ctx, &run.name, b, cancel, Some(deadline)).await
            } else if let Some(b) = &spec.aws_cron_monitor {
                aws_cron_monitor::run(&ctx, &run.name, b, cancel, Some(deadline)).await
            } else {
                Err(JobError::Config("the job has no body".into()))
            }
        })
    }
}

/// `error: cause: cause` — the whole chain on one line, for status and logs.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
