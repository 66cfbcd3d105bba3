//! What the daemon hands the job runner: each desired state's jobs (with service URLs
//! resolved to container addresses) and their context, and the engine's containers for
//! the docker-names job.

use crate::desired::model::JobSpec;
use crate::desired::DesiredState;
use crate::docker::engine::Engine;
use crate::docker::Docker;
use crate::jobs::{BodyExecutor, ContainerNames, ContainerNamesError, JobContext, JobRunner};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use tracing::warn;

/// The daemon's current engine, shared with the docker-names job (`None` while the
/// engine is unreachable).
pub(super) type EngineSlot = Arc<RwLock<Option<Engine>>>;

/// `ContainerNames` for the docker-names job, on the daemon's current engine.
pub(super) struct EngineNames(pub(super) EngineSlot);

impl ContainerNames for EngineNames {
    fn list(
        &self,
    ) -> futures_util::future::BoxFuture<'_, Result<Vec<(String, String)>, ContainerNamesError>>
    {
        let engine = self.0.read().expect("engine slot").clone();
        Box::pin(async move {
            let engine = engine.ok_or("the Docker engine is not reachable")?;
            let all = engine.list_all_containers().await?;
            Ok(all
                .into_iter()
                .filter(|c| c.state == crate::docker::RunState::Running)
                .map(|c| (c.id, c.name))
                .collect())
        })
    }
}

/// Feeds the job runner a desired state: its env file and textfile directory, and the
/// jobs (with service URLs resolved). Jobs whose `${VAR}`s could not be expanded are
/// not scheduled.
pub(super) struct JobsFeed {
    pub(super) exec: Arc<BodyExecutor>,
    pub(super) names: Arc<dyn ContainerNames>,
    pub(super) state_dir: PathBuf,
    /// The jobs last handed to the runner (what is actually scheduled).
    pub(super) last: Option<BTreeMap<String, JobSpec>>,
}

impl JobsFeed {
    /// `new_state`: the desired state itself changed (not only the service addresses),
    /// so the context is rebuilt and unscheduled jobs are warned about once.
    pub(super) fn update(
        &mut self,
        runner: &JobRunner,
        d: &DesiredState,
        ips: &BTreeMap<String, String>,
        new_state: bool,
    ) {
        if new_state {
            self.exec.set_context(JobContext::new(
                Arc::new(d.env.clone()),
                self.state_dir.clone(),
                d.stack.spec.textfile_dir.as_ref().map(PathBuf::from),
                self.names.clone(),
            ));
        }
        let ready: BTreeMap<String, JobSpec> = d
            .jobs
            .iter()
            .filter(|(name, r)| {
                if r.source.unresolved.is_empty() {
                    true
                } else {
                    if new_state {
                        warn!(job = %name, missing = %r.source.unresolved.join(","), "job not scheduled: variables not set");
                    }
                    false
                }
            })
            .map(|(n, r)| (n.clone(), r.spec.clone()))
            .collect();
        let jobs = crate::reconcile::resolve_job_urls(&ready, ips);
        if self.last.as_ref() != Some(&jobs) {
            runner.set_jobs(jobs.clone());
            self.last = Some(jobs);
        }
    }

    /// Whether `name` is scheduled now.
    pub(super) fn scheduled(&self, name: &str) -> bool {
        self.last.as_ref().is_some_and(|l| l.contains_key(name))
    }
}
