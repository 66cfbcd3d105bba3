//! A Service's health: its healthcheck as probes, and its `dependsOn: healthy` as init
//! containers.
//!
//! Docker restarts an unhealthy container; Kubernetes' readiness probe only stops
//! traffic, its liveness probe restarts. So every healthcheck becomes a readiness
//! probe, and a liveness probe only where a failure means the process itself is broken
//! (an HTTP fetch of its own address that is not a readiness endpoint): a check that
//! fails while a dependency is down would otherwise restart a healthy process in a loop.

use super::workload::Svc;
use super::{names, Cx};
use crate::desired::model::service::{DependencyCondition, Healthcheck};
use k8s_openapi::api::core::v1::{Container, ExecAction, Probe};

/// What a healthcheck fetches, when it is an HTTP fetch by wget or curl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HealthUrl {
    pub loopback: bool,
    pub port: u16,
    /// Path and query.
    pub path: String,
}

/// The exec command of a healthcheck (`None` for `NONE` or an empty test).
fn probe_command(hc: &Healthcheck) -> Option<Vec<String>> {
    match hc.test.first().map(String::as_str) {
        Some("NONE") | None => None,
        Some("CMD") => Some(hc.test[1..].to_vec()),
        Some("CMD-SHELL") => Some(vec!["/bin/sh".into(), "-c".into(), hc.test[1..].join(" ")]),
        Some(_) => Some(hc.test.clone()),
    }
}

/// The URL a `wget`/`curl` healthcheck fetches.
fn health_url(hc: &Healthcheck) -> Option<HealthUrl> {
    let tokens: Vec<String> = match hc.test.first().map(String::as_str) {
        Some("CMD") => hc.test[1..].to_vec(),
        Some("CMD-SHELL") => hc.test[1..]
            .join(" ")
            .split_whitespace()
            .map(|t| t.trim_matches(|c| c == '"' || c == '\'').to_string())
            .collect(),
        _ => return None,
    };
    let prog = tokens.first()?.rsplit('/').next()?.to_string();
    if prog != "wget" && prog != "curl" {
        return None;
    }
    let url = tokens
        .iter()
        .find(|t| t.starts_with("http://") || t.starts_with("https://"))?;
    let u = reqwest::Url::parse(url).ok()?;
    let host = u
        .host_str()?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let mut path = u.path().to_string();
    if let Some(q) = u.query() {
        path.push('?');
        path.push_str(q);
    }
    Some(HealthUrl {
        loopback: matches!(host.as_str(), "localhost" | "127.0.0.1" | "::1"),
        port: u.port_or_known_default()?,
        path,
    })
}

/// Why a liveness probe would not be safe for this healthcheck, or `None` when it is.
fn liveness_unsafe(hc: &Healthcheck) -> Option<String> {
    match health_url(hc) {
        None => Some("the check is not an HTTP fetch of the process's own address, so a failure may mean a dependency or the network is down".into()),
        Some(u) if !u.loopback => Some("the check fetches another address, so a failure may mean the network or another service is down".into()),
        Some(u) if u.path.to_ascii_lowercase().contains("ready") => Some(format!(
            "the check asks for readiness (`{}`), which fails while the process is alive but not ready (e.g. waiting for its dependencies)",
            u.path
        )),
        Some(_) => None,
    }
}

/// Whole seconds of a Docker duration, at least 1; `rounded` is set when it was not
/// whole.
fn secs(d: Option<crate::desired::model::Duration>, default: u64, rounded: &mut bool) -> i32 {
    match d {
        None => default as i32,
        Some(d) => {
            let s = d.0.as_secs_f64();
            if s.fract() != 0.0 {
                *rounded = true;
            }
            (s.ceil() as i64).clamp(1, i32::MAX as i64) as i32
        }
    }
}

/// The container's probes.
#[derive(Default)]
pub(super) struct Probes {
    pub readiness: Option<Probe>,
    pub liveness: Option<Probe>,
}

/// The healthcheck as an exec readiness probe with Docker's timing, and as a liveness
/// probe too where [`liveness_unsafe`] finds none of its reasons; otherwise that is
/// warned, since a pod that fails its check is no longer restarted.
pub(super) fn probes(s: &mut Svc) -> Probes {
    let Some(hc) = &s.spec.healthcheck else {
        return Probes::default();
    };
    let Some(cmd) = probe_command(hc) else {
        return Probes::default();
    };
    let cmd: Vec<String> = cmd
        .iter()
        .map(|c| s.placeholder("spec.healthcheck.test", c))
        .collect();
    let mut rounded = false;
    let period = secs(hc.interval, 30, &mut rounded);
    let timeout = secs(hc.timeout, 30, &mut rounded);
    let start = hc.start_period.map(|d| secs(Some(d), 0, &mut rounded));
    if rounded {
        s.warn(
            "spec.healthcheck",
            "sub-second durations rounded up to whole seconds",
        );
    }
    let failure = hc.retries.unwrap_or(3).max(1) as i32;
    let probe = Probe {
        exec: Some(ExecAction { command: Some(cmd) }),
        period_seconds: Some(period),
        timeout_seconds: Some(timeout),
        failure_threshold: Some(failure),
        success_threshold: Some(1),
        ..Default::default()
    };
    let liveness = match liveness_unsafe(hc) {
        None => Some(Probe {
            initial_delay_seconds: start,
            ..probe.clone()
        }),
        Some(why) => {
            s.warn("spec.healthcheck", format!("readiness probe only, no liveness probe: {why}; obsd restarted an unhealthy container, Kubernetes only stops sending it traffic"));
            None
        }
    };
    Probes {
        readiness: Some(probe),
        liveness,
    }
}

/// `dependsOn` → init containers. Kubernetes has no start order, so `healthy` becomes
/// an init container that polls the dependency's Service at its health URL — possible
/// when that check is an HTTP fetch of a port it exposes; anything else is warned and
/// the pod starts at once.
pub(super) fn init_containers(cx: &Cx, s: &mut Svc) -> Vec<Container> {
    let mut init = Vec::new();
    for (i, d) in s.spec.depends_on.iter().enumerate() {
        let field = format!("spec.dependsOn[{i}]");
        match d.condition {
            DependencyCondition::Started => s.warn(field, format!("`started` on `{}`: Kubernetes has no start order, the pod starts at once (a container that needs `{}` restarts until it answers)", d.service, d.service)),
            DependencyCondition::Healthy => {
                let dep = cx.input.state.services.get(&d.service);
                let url = dep.and_then(|r| r.spec.healthcheck.as_ref()).and_then(health_url);
                match (dep, url) {
                    (Some(dep), Some(u)) if u.loopback && dep.spec.expose.contains(&u.port) => {
                        let target = format!("http://{}:{}{}", names::service_name(&d.service), u.port, u.path);
                        init.push(Container {
                            name: names::label(&format!("wait-for-{}", d.service)),
                            image: Some(cx.opts.wait_image.clone()),
                            command: Some(vec![
                                "sh".into(),
                                "-c".into(),
                                format!("until wget -q -T 5 -O /dev/null {target}; do echo 'waiting for {} to be ready'; sleep 2; done", d.service),
                            ]),
                            ..Default::default()
                        });
                    }
                    _ => s.warn(field, format!("`healthy` on `{}` is not mapped: its healthcheck is not an HTTP fetch of a port it exposes, so no init container can ask its Service; the pod starts without waiting", d.service)),
                }
            }
        }
    }
    init
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hc(test: &[&str]) -> Healthcheck {
        Healthcheck {
            test: test.iter().map(|s| s.to_string()).collect(),
            interval: None,
            timeout: None,
            retries: None,
            start_period: None,
        }
    }

    #[test]
    fn health_urls_and_liveness_safety() {
        let h = hc(&[
            "CMD",
            "wget",
            "-q",
            "-O",
            "/dev/null",
            "http://localhost:9090/-/healthy",
        ]);
        assert_eq!(
            health_url(&h),
            Some(HealthUrl {
                loopback: true,
                port: 9090,
                path: "/-/healthy".into()
            })
        );
        assert_eq!(liveness_unsafe(&h), None);
        let h = hc(&[
            "CMD-SHELL",
            "wget -q -O /dev/null http://localhost:3100/ready || exit 1",
        ]);
        assert_eq!(health_url(&h).map(|u| u.port), Some(3100));
        assert!(liveness_unsafe(&h).unwrap().contains("readiness"));
        let h = hc(&["CMD", "pg_isready"]);
        assert!(health_url(&h).is_none());
        assert!(liveness_unsafe(&h).is_some());
        let h = hc(&["CMD", "curl", "-f", "http://db:5432/"]);
        assert!(liveness_unsafe(&h).unwrap().contains("another address"));
        assert_eq!(probe_command(&hc(&["NONE"])), None);
        assert_eq!(
            probe_command(&hc(&["CMD-SHELL", "true"])),
            Some(vec!["/bin/sh".into(), "-c".into(), "true".into()])
        );
    }
}
