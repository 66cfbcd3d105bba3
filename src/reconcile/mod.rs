//! One reconcile pass — observe, plan, (optionally) execute, record — shared by the
//! daemon, `obsctl apply` and `obsctl diff`, so all three make the same decisions.

pub mod exec;
pub mod plan;
pub mod render;

use crate::desired::model::Kind;
use crate::desired::DesiredState;
use crate::docker::Docker;
use crate::secret::HostKey;
use crate::state::{now_ms, Persisted, ResourceRecord};
use exec::{ExecOptions, Report, ServiceResult};
use plan::{Plan, ResourceStatus};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Outcome of one pass.
#[derive(Debug, Clone)]
pub struct Pass {
    pub plan: Plan,
    pub report: Option<Report>,
    /// Errors from pulling `Always` images (image → error).
    pub pull_errors: BTreeMap<String, String>,
    /// IP of each running service container on its first network, as observed at the
    /// start of the pass (how host-side jobs reach `http://<service>:port`).
    pub service_ips: BTreeMap<String, String>,
}

impl Pass {
    pub fn failed(&self) -> bool {
        self.report.as_ref().is_some_and(Report::failed)
    }

    /// The rule for "this generation is applied": an executed pass that failed nothing,
    /// found nothing to do and skipped nothing. The daemon, `--once` and `obsctl apply`
    /// all mark a generation applied by it. A held spec (`rolled_back`,
    /// `preflight_failed`, `crash_loop`) is, like a name conflict, nothing to do: it is
    /// reported as drift (so `obsctl status` is not 0) and by its own alerts.
    pub fn converged(&self) -> bool {
        self.report
            .as_ref()
            .is_some_and(|r| !r.failed() && !r.needs_requeue())
            && self.plan.is_noop()
    }
}

/// Runs one pass. With `apply == false` nothing is written anywhere.
pub async fn pass<D: Docker>(
    docker: &D,
    desired: &DesiredState,
    key: &HostKey,
    persisted: &mut Persisted,
    apply: bool,
    pull_always: bool,
) -> Result<Pass, crate::docker::DockerError> {
    let pull_errors = if apply && pull_always {
        exec::pull_always(docker, desired).await
    } else {
        BTreeMap::new()
    };
    let observed = exec::observe(docker, desired, persisted).await?;
    let plan = plan::plan(desired, &observed, key);
    let service_ips = service_ips(desired, &observed);
    if !apply {
        return Ok(Pass {
            plan,
            report: None,
            pull_errors,
            service_ips,
        });
    }
    let now = now_ms();
    for name in &plan.stale_rollbacks {
        persisted.rollout.rollbacks.remove(name);
    }
    for name in &plan.stale_preflight {
        persisted.rollout.preflight_failures.remove(name);
    }
    for name in &plan.stale_crash_loops {
        persisted.rollout.crash_loops.remove(name);
    }
    let report = if plan.is_noop() {
        Report::default()
    } else {
        exec::execute(
            docker,
            desired,
            &plan,
            &observed,
            persisted,
            &ExecOptions {
                concurrency: desired.stack.spec.concurrency as usize,
                backoff_cap_ms: 300_000,
                now_ms: now,
            },
        )
        .await
    };
    record(persisted, &plan, &report, now);
    Ok(Pass {
        plan,
        report: Some(report),
        pull_errors,
        service_ips,
    })
}

fn service_ips(desired: &DesiredState, observed: &plan::Observed) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, svc) in &desired.services {
        let cname = desired.container_name(name);
        let Some(c) = observed.containers.iter().find(|c| c.name == cname) else {
            continue;
        };
        let nets = desired.service_networks(&svc.spec);
        let ip = nets
            .iter()
            .find_map(|n| c.ips.get(&desired.network_docker_name(n)))
            .or_else(|| c.ips.values().next());
        if let Some(ip) = ip {
            out.insert(name.clone(), ip.clone());
        }
    }
    out
}

/// Rewrites job URLs whose host is a Service name (`http://prometheus:9090`) to that
/// service's container address: obsd runs on the host, where service names do not
/// resolve. URLs naming no known service are left as written.
pub fn resolve_job_urls(
    jobs: &BTreeMap<String, crate::desired::model::JobSpec>,
    ips: &BTreeMap<String, String>,
) -> BTreeMap<String, crate::desired::model::JobSpec> {
    let rewrite = |url: &str| -> String {
        let Ok(mut u) = reqwest::Url::parse(url) else {
            return url.to_string();
        };
        match u.host_str().and_then(|h| ips.get(h)) {
            Some(ip) if u.set_host(Some(ip)).is_ok() => {
                u.to_string().trim_end_matches('/').to_string()
            }
            _ => url.to_string(),
        }
    };
    jobs.iter()
        .map(|(name, spec)| {
            let mut spec = spec.clone();
            if let Some(sp) = spec.status_page.as_mut() {
                sp.prometheus_url = rewrite(&sp.prometheus_url);
            }
            if let Some(ls) = spec.logs_shipper.as_mut() {
                ls.loki_url = rewrite(&ls.loki_url);
            }
            (name.clone(), spec)
        })
        .collect()
}

fn key_of(r: &ResourceStatus) -> String {
    format!("{}/{}", r.kind, r.name)
}

/// Updates per-resource history (last action, last error, since when).
fn record(persisted: &mut Persisted, plan: &Plan, report: &Report, now: i64) {
    let mut seen = std::collections::BTreeSet::new();
    for r in &plan.resources {
        let k = key_of(r);
        seen.insert(k.clone());
        let rec = persisted
            .resources
            .entry(k)
            .or_insert_with(|| ResourceRecord {
                since_ms: Some(now),
                ..Default::default()
            });
        let ok_now = r.in_sync;
        if rec.in_sync != ok_now || rec.since_ms.is_none() {
            rec.since_ms = Some(now);
            rec.in_sync = ok_now;
        }
        if r.kind == Kind::Service {
            match report.services.get(&r.name) {
                Some(ServiceResult::Done { actions }) if !actions.is_empty() => {
                    rec.last_action = Some(actions.join("+"));
                    rec.last_action_at_ms = Some(now);
                    rec.last_error = None;
                }
                Some(ServiceResult::Failed { action, error }) => {
                    rec.last_action = Some(format!("{action} (failed)"));
                    rec.last_action_at_ms = Some(now);
                    rec.last_error = Some(error.clone());
                }
                Some(ServiceResult::RolledBack { rollback }) => {
                    rec.last_action = Some("recreate (rolled back)".into());
                    rec.last_action_at_ms = Some(now);
                    rec.last_error = Some(rollback.reason.clone());
                }
                Some(ServiceResult::CrashLoop { hold }) => {
                    rec.last_action = Some("hold (crash loop)".into());
                    rec.last_action_at_ms = Some(now);
                    rec.last_error = Some(hold.reason.clone());
                }
                Some(ServiceResult::PreflightFailed { check }) => {
                    rec.last_action = Some("preflight (failed)".into());
                    rec.last_action_at_ms = Some(now);
                    rec.last_error = Some(check.reason.clone());
                }
                _ => {}
            }
        }
    }
    persisted.resources.retain(|k, _| seen.contains(k));
    let desired_service = |name: &String| seen.contains(&format!("{}/{name}", Kind::Service));
    persisted
        .rollout
        .rollbacks
        .retain(|name, _| desired_service(name));
    persisted
        .rollout
        .preflight_failures
        .retain(|name, _| desired_service(name));
    persisted
        .rollout
        .crash_loops
        .retain(|name, _| desired_service(name));
    if !report.failed() {
        persisted.last_success_ms = Some(now);
    }
}

/// One row of `obsctl status` (a wire type: see [`crate::api::wire`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRow {
    #[serde(flatten)]
    pub resource: ResourceStatus,
    pub last_action: Option<String>,
    pub last_action_at_ms: Option<i64>,
    pub last_error: Option<String>,
    pub since_ms: Option<i64>,
    pub retry_at_ms: Option<i64>,
    /// A Service's last rollouts, oldest first (`obsctl rollout history`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<crate::state::RolloutEntry>,
}

/// Joins a plan's resources with their recorded history.
pub fn status_rows(plan: &Plan, persisted: &Persisted) -> Vec<StatusRow> {
    plan.resources
        .iter()
        .map(|r| {
            let rec = persisted
                .resources
                .get(&key_of(r))
                .cloned()
                .unwrap_or_default();
            let backoff = (r.kind == Kind::Service)
                .then(|| persisted.backoff.get(&r.name))
                .flatten();
            let mut resource = r.clone();
            if let Some(b) = backoff {
                if !resource.drift.contains(&plan::Reason::Failed) {
                    resource.drift.push(plan::Reason::Failed);
                    resource.in_sync = false;
                }
                if resource.message.is_none() {
                    resource.message = b.last_error.clone();
                }
            }
            StatusRow {
                resource,
                last_action: rec.last_action,
                last_action_at_ms: rec.last_action_at_ms,
                last_error: rec
                    .last_error
                    .or_else(|| backoff.and_then(|b| b.last_error.clone())),
                since_ms: rec.since_ms,
                retry_at_ms: backoff.map(|b| b.retry_at_ms),
                rollouts: (r.kind == Kind::Service)
                    .then(|| persisted.rollout.rollout_history.get(&r.name).cloned())
                    .flatten()
                    .unwrap_or_default(),
            }
        })
        .collect()
}
