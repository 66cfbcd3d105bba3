//! Quiesce around a volume read: the containers mounting the volume are paused or
//! stopped for the read only, and put back on every path — on success and error by
//! [`Quiesced::release`], on timeout or cancellation by `Drop` (a spawned task), and
//! after an obsd crash by the next reconcile pass (a paused owned container is `stopped`
//! drift, repaired by an unpause). Meanwhile each container is held in
//! [`crate::jobs::quiesced`], so the daemon's own passes leave it alone mid-read.

use crate::desired::model::job::Quiesce;
use crate::docker::{ContainerInfo, Docker, RunState};
use crate::jobs::quiesced;
use tracing::warn;

/// Containers paused or stopped for a read; undone by [`Quiesced::release`], or by
/// `Drop` (a spawned task) when the run is cancelled or times out.
pub(super) struct Quiesced<D: Docker + Clone> {
    docker: D,
    paused: Vec<String>,
    stopped: Vec<String>,
}

impl<D: Docker + Clone> Quiesced<D> {
    pub(super) async fn apply(
        docker: &D,
        users: &[ContainerInfo],
        q: Quiesce,
    ) -> Result<Self, String> {
        let mut g = Quiesced {
            docker: docker.clone(),
            paused: Vec::new(),
            stopped: Vec::new(),
        };
        for c in users.iter().filter(|c| c.state == RunState::Running) {
            match q {
                Quiesce::None => {}
                Quiesce::Pause => {
                    // Held before the pause: the daemon's pass must not unpause it.
                    quiesced::hold(&c.id);
                    if let Err(e) = docker.pause_container(&c.id).await {
                        quiesced::release(&c.id);
                        return Err(format!("pausing {}: {e}", c.name));
                    }
                    g.paused.push(c.id.clone());
                }
                Quiesce::Stop => {
                    // Recorded first: a stop that fails half-way is still started again.
                    quiesced::hold(&c.id);
                    g.stopped.push(c.id.clone());
                    docker
                        .stop_container(&c.id, None)
                        .await
                        .map_err(|e| format!("stopping {}: {e}", c.name))?;
                }
            }
        }
        Ok(g)
    }

    pub(super) async fn release(mut self) -> Result<(), String> {
        let paused = std::mem::take(&mut self.paused);
        let stopped = std::mem::take(&mut self.stopped);
        undo(&self.docker, paused, stopped).await
    }
}

async fn undo<D: Docker>(
    docker: &D,
    paused: Vec<String>,
    stopped: Vec<String>,
) -> Result<(), String> {
    let mut errors = Vec::new();
    for id in paused {
        let mut last = None;
        for attempt in 0..5u64 {
            match docker.unpause_container(&id).await {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(200 * (attempt + 1))).await;
        }
        quiesced::release(&id);
        if let Some(e) = last {
            errors.push(format!("unpausing {id}: {e}"));
        }
    }
    for id in stopped {
        let r = docker.start_container(&id).await;
        quiesced::release(&id);
        if let Err(e) = r {
            errors.push(format!("starting {id} again: {e}"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

impl<D: Docker + Clone> Drop for Quiesced<D> {
    fn drop(&mut self) {
        if self.paused.is_empty() && self.stopped.is_empty() {
            return;
        }
        let paused = std::mem::take(&mut self.paused);
        let stopped = std::mem::take(&mut self.stopped);
        let docker = self.docker.clone();
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                if let Err(e) = undo(&docker, paused, stopped).await {
                    warn!(error = %e, "undoing the backup's quiesce after cancellation");
                }
            });
        } else {
            // Nothing can undo it here: the next pass repairs it.
            paused
                .iter()
                .chain(&stopped)
                .for_each(|id| quiesced::release(id));
        }
    }
}
