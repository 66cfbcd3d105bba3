//! In-place changes that ask the service itself: the `configCheck` preflight (a
//! throwaway container of the new spec, nothing running touched) and the exec/HTTP
//! reload of `onChange` (checked; the caller falls back to a restart).

use super::rollout::{bounded_tail, GATE_POLL, LOG_TAIL_BYTES, LOG_TAIL_LINES};
use crate::desired::model::service::ServiceSpec;
use crate::docker::{Docker, DockerError, RunState};
use crate::reconcile::plan::Reload;
use crate::reconcile::render::Rendered;
use crate::state::{now_ms, HeldSpec};
use std::time::{Duration, Instant};

/// How long an exec or HTTP reload may take.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(15);

/// Asks the process to reload: `Err(why)` when it did not (then the caller restarts).
pub(super) async fn reload<D: Docker>(docker: &D, id: &str, how: &Reload) -> Result<(), String> {
    match how {
        Reload::Exec(cmd) => {
            match tokio::time::timeout(RELOAD_TIMEOUT, docker.exec(id, cmd)).await {
                Err(_) => Err(format!("`{}` did not finish in time", cmd.join(" "))),
                Ok(Err(e)) => Err(e.to_string()),
                Ok(Ok((0, _))) => Ok(()),
                Ok(Ok((code, out))) => Err(format!(
                    "`{}` exited with code {code}: {}",
                    cmd.join(" "),
                    bounded_tail(out.trim(), 300)
                )),
            }
        }
        Reload::Http { method, url } => {
            let Some(url) = url else {
                return Err("the container has no address to send the reload to".into());
            };
            let method = reqwest::Method::from_bytes(method.as_bytes())
                .map_err(|e| format!("method {method}: {e}"))?;
            let client = reqwest::Client::builder()
                .timeout(RELOAD_TIMEOUT)
                .build()
                .map_err(|e| e.to_string())?;
            let r = client
                .request(method.clone(), url.as_str())
                .send()
                .await
                .map_err(|e| format!("{method} {url}: {e}"))?;
            if r.status().is_success() {
                Ok(())
            } else {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                Err(format!(
                    "{method} {url} answered {status}: {}",
                    bounded_tail(body.trim(), 300)
                ))
            }
        }
    }
}

/// Suffix of the throwaway container a preflight check runs in.
pub const CHECK_SUFFIX: &str = "--check";
/// How long a check may run when `configCheck.timeout` is not set.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the service's `configCheck` in a throwaway container of the new spec: the new
/// image and mounts (all read-only), the check as entrypoint, no network, no published
/// ports, no restart, no healthcheck. `Ok(None)`: it exited 0. `Ok(Some(_))`: it failed
/// (non-zero exit, or still running at the timeout), with its output.
pub(super) async fn preflight<D: Docker>(
    docker: &D,
    spec: &ServiceSpec,
    rendered: &Rendered,
    cname: &str,
) -> Result<Option<HeldSpec>, DockerError> {
    let Some(check) = &spec.config_check else {
        return Ok(None);
    };
    let timeout = check.timeout.map_or(CHECK_TIMEOUT, |d| d.0);
    let base = &rendered.create;
    let labels = [
        crate::docker::labels::STACK,
        crate::docker::labels::KIND,
        crate::docker::labels::NAME,
    ]
    .iter()
    .filter_map(|k| base.labels.get(*k).map(|v| (k.to_string(), v.clone())))
    .collect();
    let spec_c = crate::docker::CreateContainer {
        name: format!("{cname}{CHECK_SUFFIX}"),
        image: base.image.clone(),
        entrypoint: Some(check.command.clone()),
        cmd: None,
        working_dir: base.working_dir.clone(),
        env: base.env.clone(),
        labels,
        mounts: base
            .mounts
            .iter()
            .map(|m| crate::docker::Mount {
                read_only: true,
                ..m.clone()
            })
            .collect(),
        networks: vec![crate::docker::NetworkAttachment {
            network: "none".into(),
            aliases: Vec::new(),
        }],
        restart: "no".into(),
        user: base.user.clone(),
        read_only: base.read_only,
        tmpfs: base.tmpfs.clone(),
        ..Default::default()
    };
    // A check left over by a crash carries the service's labels: the planner removed
    // it as a duplicate before this step.
    let id = docker.create_container(&spec_c).await?;
    let outcome = async {
        docker.start_container(&id).await?;
        let t0 = Instant::now();
        loop {
            let s = docker.inspect_state(&id).await?;
            if !matches!(s.state, RunState::Running | RunState::Created) {
                return Ok::<_, DockerError>(
                    (s.exit_code != 0)
                        .then(|| format!("configCheck exited with code {}", s.exit_code)),
                );
            }
            if t0.elapsed() >= timeout {
                return Ok(Some(format!(
                    "configCheck did not finish within {}s",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(GATE_POLL).await;
        }
    }
    .await;
    let output = match &outcome {
        Ok(Some(_)) => docker
            .container_logs(&id, LOG_TAIL_LINES)
            .await
            .map(|l| bounded_tail(&l, LOG_TAIL_BYTES))
            .unwrap_or_else(|e| format!("(output unavailable: {e})")),
        _ => String::new(),
    };
    let removed = docker.remove_container(&id).await;
    let failed = outcome?;
    removed?;
    Ok(failed.map(|reason| {
        tracing::warn!(container = cname, %reason, "preflight check failed");
        HeldSpec {
            spec_hash: rendered.spec_hash.clone(),
            config_hashes: rendered.config_hashes.clone(),
            reason,
            log_tail: output,
            at_ms: now_ms(),
        }
    }))
}
