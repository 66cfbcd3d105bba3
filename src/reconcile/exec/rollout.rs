//! The health-gated replacement (stop-first and start-first) and its rollback.
//!
//! Stop-first: the new container is created under `<name>--next`, the old one stopped
//! and renamed `<name>--prev`, the new one renamed into place, started and watched
//! ([`gate`]); then the old one is removed, or — when the new one exits, restarts, turns
//! unhealthy or misses its deadline — the new one is removed and the old one renamed back
//! and started ([`roll_back`]). Start-first gates `--next` beside the running old
//! container and swaps names only after it passed. Whatever step a crash interrupts, the
//! next plan sees a leftover temp, a `--prev` or the old container — never two live
//! copies under the service's name.

use super::stop_and_remove;
use crate::desired::model::service::{RestartPolicy, ServiceSpec, DEFAULT_SETTLE};
use crate::docker::{Docker, DockerError, Health, RunState};
use crate::reconcile::plan::{NEXT_SUFFIX, PREV_SUFFIX};
use crate::reconcile::render::Rendered;
use crate::state::{now_ms, HeldSpec};
use std::time::{Duration, Instant};

/// The health-gated replace (see the module doc). `Ok(Some(_))`: rolled back.
pub(super) async fn replace<D: Docker>(
    docker: &D,
    spec: &ServiceSpec,
    rendered: &Rendered,
    cname: &str,
    old_id: &str,
) -> Result<Option<HeldSpec>, DockerError> {
    let mut next = rendered.create.clone();
    next.name = format!("{cname}{NEXT_SUFFIX}");
    let new_id = docker.create_container(&next).await?;
    let stop_timeout = rendered.create.stop_timeout;
    let prev_name = format!("{cname}{PREV_SUFFIX}");
    // Put the old container aside: stopped, kept under a name that says what it is.
    if let Err(e) = async {
        docker.stop_container(old_id, stop_timeout).await?;
        docker.rename_container(old_id, &prev_name).await
    }
    .await
    {
        let _ = docker.remove_container(&new_id).await;
        let _ = docker.start_container(old_id).await;
        return Err(e);
    }
    if let Err(e) = docker.rename_container(&new_id, cname).await {
        let _ = docker.remove_container(&new_id).await;
        let _ = docker.rename_container(old_id, cname).await;
        let _ = docker.start_container(old_id).await;
        return Err(e);
    }
    if let Err(e) = docker.start_container(&new_id).await {
        let reason = format!("the new container did not start: {}", e.detail());
        return roll_back(docker, rendered, cname, &new_id, old_id, reason)
            .await
            .map(Some);
    }
    finish_gate(docker, spec, rendered, cname, &new_id, old_id).await
}

/// The start-first replace: the new container is created as `<name>--next` and started
/// beside the old one; only once it passed the gate is the old one renamed `--prev`,
/// the new one renamed into place and the old one stopped and removed. A failing new
/// container is removed; the old one was never stopped. `Ok(Some(_))`: rolled back.
pub(super) async fn replace_start_first<D: Docker>(
    docker: &D,
    spec: &ServiceSpec,
    rendered: &Rendered,
    cname: &str,
    old_id: &str,
) -> Result<Option<HeldSpec>, DockerError> {
    let mut next = rendered.create.clone();
    next.name = format!("{cname}{NEXT_SUFFIX}");
    let new_id = docker.create_container(&next).await?;
    let verdict = match docker.start_container(&new_id).await {
        Err(e) => Err(format!("the new container did not start: {}", e.detail())),
        Ok(()) => gate(docker, spec, &new_id).await?,
    };
    if let Err(reason) = verdict {
        tracing::warn!(container = cname, %reason, "start-first: removing the new container");
        let log_tail = docker
            .container_logs(&new_id, LOG_TAIL_LINES)
            .await
            .map(|l| bounded_tail(&l, LOG_TAIL_BYTES))
            .unwrap_or_else(|e| format!("(logs unavailable: {e})"));
        stop_and_remove(docker, &new_id).await?;
        return Ok(Some(HeldSpec {
            spec_hash: rendered.spec_hash.clone(),
            config_hashes: rendered.config_hashes.clone(),
            reason,
            log_tail,
            at_ms: now_ms(),
        }));
    }
    // The name always points at a running copy: old aside, new in place, then old gone.
    docker
        .rename_container(old_id, &format!("{cname}{PREV_SUFFIX}"))
        .await?;
    docker.rename_container(&new_id, cname).await?;
    // Off the networks first: the engine's DNS stops naming the old container while it
    // still answers what it was sent (it drains on its stop signal), so no client is
    // sent to an address that is about to close.
    for n in &rendered.create.networks {
        // Best effort: the old container may not be on a network the new spec names.
        if let Err(e) = docker.disconnect_network(&n.network, old_id).await {
            tracing::debug!(container = cname, network = %n.network, %e, "disconnect");
        }
    }
    docker
        .stop_container(old_id, rendered.create.stop_timeout)
        .await?;
    docker.remove_container(old_id).await?;
    Ok(None)
}

/// Starts a container unless it runs already (a start-first `--next` or `--prev` is
/// running when a crash interrupted its rollout).
pub(super) async fn ensure_started<D: Docker>(docker: &D, id: &str) -> Result<(), DockerError> {
    match docker.inspect_state(id).await?.state {
        RunState::Running | RunState::Restarting => Ok(()),
        _ => docker.start_container(id).await,
    }
}

/// Resumes the gate of an interrupted replace: starts the new container if the crash
/// came before its start, then watches it like [`replace`] does.
pub(super) async fn verify<D: Docker>(
    docker: &D,
    spec: &ServiceSpec,
    rendered: &Rendered,
    cname: &str,
    id: &str,
    prev_id: &str,
) -> Result<Option<HeldSpec>, DockerError> {
    if docker.inspect_state(id).await?.state == RunState::Created {
        if let Err(e) = docker.start_container(id).await {
            let reason = format!("the new container did not start: {}", e.detail());
            return roll_back(docker, rendered, cname, id, prev_id, reason)
                .await
                .map(Some);
        }
    }
    finish_gate(docker, spec, rendered, cname, id, prev_id).await
}

pub(super) async fn finish_gate<D: Docker>(
    docker: &D,
    spec: &ServiceSpec,
    rendered: &Rendered,
    cname: &str,
    new_id: &str,
    prev_id: &str,
) -> Result<Option<HeldSpec>, DockerError> {
    match gate(docker, spec, new_id).await? {
        Ok(()) => {
            // A start-first `--prev` still runs: stopped gracefully, not killed.
            if docker.inspect_state(prev_id).await?.state == RunState::Running {
                docker
                    .stop_container(prev_id, rendered.create.stop_timeout)
                    .await?;
            }
            docker.remove_container(prev_id).await?;
            Ok(None)
        }
        Err(reason) => roll_back(docker, rendered, cname, new_id, prev_id, reason)
            .await
            .map(Some),
    }
}

/// How many log lines of a failed container are kept for `obsctl status`.
pub(super) const LOG_TAIL_LINES: usize = 20;
/// … and at most this many bytes of them.
pub(super) const LOG_TAIL_BYTES: usize = 2048;
/// How often the gate looks at the new container.
pub(super) const GATE_POLL: Duration = Duration::from_millis(200);

/// The settle period and the deadline of a service's health gate.
pub fn gate_times(spec: &ServiceSpec) -> (Duration, Duration) {
    let u = spec.update.as_ref();
    let settle = u.and_then(|u| u.settle).map_or(DEFAULT_SETTLE, |d| d.0);
    let derived = {
        // The engine's defaults: interval 30 s, timeout 30 s, 3 retries.
        let h = spec.healthcheck.as_ref();
        let secs = |d: Option<crate::desired::model::Duration>, dflt: u64| {
            d.map_or(Duration::from_secs(dflt), |d| d.0)
        };
        let interval = secs(h.and_then(|h| h.interval), 30);
        let timeout = secs(h.and_then(|h| h.timeout), 30);
        let start = secs(h.and_then(|h| h.start_period), 0);
        let retries = h.and_then(|h| h.retries).unwrap_or(3);
        start + (interval + timeout) * (retries + 1)
    };
    let deadline = u
        .and_then(|u| u.timeout)
        .map_or(derived.max(Duration::from_secs(30)), |d| d.0)
        .max(settle);
    (settle, deadline)
}

/// Watches a just-started container: `Ok(Ok(()))` once it has run for the settle
/// period and (with a healthcheck) reported healthy; `Ok(Err(reason))` when it exits,
/// is restarted by the engine, turns unhealthy or misses the deadline. A one-shot
/// service (`restart: no`/`on-failure`) that exits 0 has succeeded.
pub(super) async fn gate<D: Docker>(
    docker: &D,
    spec: &ServiceSpec,
    id: &str,
) -> Result<Result<(), String>, DockerError> {
    let (settle, deadline) = gate_times(spec);
    let t0 = Instant::now();
    loop {
        let s = docker.inspect_state(id).await?;
        let ran = format!("{:.1}s", t0.elapsed().as_secs_f64());
        let one_shot = matches!(spec.restart, RestartPolicy::No | RestartPolicy::OnFailure);
        match s.state {
            RunState::Running if s.restart_count == 0 => {}
            RunState::Exited if s.exit_code == 0 && one_shot && s.restart_count == 0 => {
                return Ok(Ok(()));
            }
            RunState::Running | RunState::Restarting => {
                let code = match s.exit_code {
                    0 => String::new(),
                    c => format!(", last code {c}"),
                };
                return Ok(Err(format!(
                    "the new container exited and was restarted by the engine ({} restart(s){code}) within {ran}",
                    s.restart_count.max(1)
                )));
            }
            other => {
                let why = s.error.map(|e| format!(": {e}")).unwrap_or_default();
                return Ok(Err(format!(
                    "the new container exited (code {}, state {}) within {ran}{why}",
                    s.exit_code,
                    format!("{other:?}").to_lowercase()
                )));
            }
        }
        if s.health == Some(Health::Unhealthy) {
            return Ok(Err(format!(
                "the new container turned unhealthy within {ran}"
            )));
        }
        let settled = t0.elapsed() >= settle;
        if settled && matches!(s.health, None | Some(Health::Healthy)) {
            return Ok(Ok(()));
        }
        if t0.elapsed() >= deadline {
            return Ok(Err(format!(
                "the new container was not healthy within {}s",
                deadline.as_secs()
            )));
        }
        tokio::time::sleep(GATE_POLL).await;
    }
}

/// Removes the failed new container and starts the old one again under its name.
pub(super) async fn roll_back<D: Docker>(
    docker: &D,
    rendered: &Rendered,
    cname: &str,
    new_id: &str,
    prev_id: &str,
    reason: String,
) -> Result<HeldSpec, DockerError> {
    tracing::warn!(container = cname, %reason, "rolling back");
    let log_tail = docker
        .container_logs(new_id, LOG_TAIL_LINES)
        .await
        .map(|l| bounded_tail(&l, LOG_TAIL_BYTES))
        .unwrap_or_else(|e| format!("(logs unavailable: {e})"));
    stop_and_remove(docker, new_id).await?;
    docker.rename_container(prev_id, cname).await?;
    ensure_started(docker, prev_id).await?;
    Ok(HeldSpec {
        spec_hash: rendered.spec_hash.clone(),
        config_hashes: rendered.config_hashes.clone(),
        reason,
        log_tail,
        at_ms: now_ms(),
    })
}

/// The last `max` bytes of `s`, cut at a line start when possible.
pub(super) fn bounded_tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    let tail = &s[start..];
    match tail.find('\n') {
        Some(i) if i + 1 < tail.len() => tail[i + 1..].to_string(),
        _ => tail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::model::service::DEFAULT_SETTLE;

    fn spec(yaml: &str) -> ServiceSpec {
        serde_json::from_value(serde_saphyr::from_str::<serde_json::Value>(yaml).unwrap()).unwrap()
    }

    #[test]
    fn gate_times_follow_update_and_healthcheck() {
        let s = |secs| Duration::from_secs(secs);
        // No healthcheck: the engine's defaults give 4 × 60 s.
        assert_eq!(gate_times(&spec("image: a")), (DEFAULT_SETTLE, s(240)));
        // start 10 s + (1 s + 1 s) × (2 + 1) = 16 s → at least 30 s.
        let hc = "image: a\nhealthcheck: {test: [CMD, x], interval: 1s, timeout: 1s, retries: 2, startPeriod: 10s}";
        assert_eq!(gate_times(&spec(hc)), (DEFAULT_SETTLE, s(30)));
        let both = format!("{hc}\nupdate: {{settle: 5s, timeout: 12s}}");
        assert_eq!(gate_times(&spec(&both)), (s(5), s(12)));
        // The deadline is never shorter than the settle period.
        let short = "image: a\nupdate: {settle: 20s, timeout: 3s}";
        assert_eq!(gate_times(&spec(short)), (s(20), s(20)));
    }

    #[test]
    fn log_tails_are_bounded_at_a_line_start() {
        assert_eq!(bounded_tail("a\nb\n", 100), "a\nb\n");
        let long = format!("{}\nlast line\n", "x".repeat(5000));
        assert_eq!(bounded_tail(&long, 20), "last line\n");
        // Multi-byte characters are never split.
        let t = bounded_tail(&"é".repeat(100), 11);
        assert!(t.len() <= 11 && t.chars().all(|c| c == 'é'));
    }
}
