//! obsctl subcommands. Each returns the process exit code (contract: product.md).

use crate::Output;
use anyhow::{bail, Context};
use obsd::api::wire;
use obsd::desired::load::{load_dir, LoadOptions};
use obsd::desired::model::Kind;
use obsd::desired::DesiredState;
use obsd::docker::engine::Engine;
use obsd::docker::{labels, Docker};
use obsd::reconcile::plan::{InfraAction, Plan, Reason, Step};
use obsd::state::{self, Persisted};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

const DRIFT: u8 = 2;

fn rt() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub fn validate(dir: &Path, output: Output) -> anyhow::Result<ExitCode> {
    match load_dir(dir, &LoadOptions::default()) {
        Ok(s) => {
            if output == Output::Json {
                out!("{}", serde_json::to_string_pretty(&s.warnings)?);
            } else {
                for w in &s.warnings {
                    eprintln!("{w}");
                }
                out!(
                    "{}: valid ({} services, {} volumes, {} networks, {} jobs)",
                    dir.display(),
                    s.services.len(),
                    s.volumes.len(),
                    s.networks.len(),
                    s.jobs.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if output == Output::Json {
                out!("{}", serde_json::to_string_pretty(&e.0)?);
            } else {
                eprintln!("{e}");
            }
            Ok(ExitCode::from(1))
        }
    }
}

fn load(dir: &Path) -> anyhow::Result<DesiredState> {
    match load_dir(dir, &LoadOptions::default()) {
        Ok(s) => {
            for w in &s.warnings {
                eprintln!("{w}");
            }
            Ok(s)
        }
        Err(e) => bail!("desired state {} is invalid:\n{e}", dir.display()),
    }
}

async fn engine() -> anyhow::Result<Engine> {
    Engine::open().await.map_err(|err| {
        let host =
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        anyhow::anyhow!("cannot reach the Docker engine at {host}: {}", err.detail())
    })
}

pub fn diff(dir: &Path, output: Output) -> anyhow::Result<ExitCode> {
    let desired = load(dir)?;
    let state_dir = state::resolve_dir(None, Some(&desired.stack.spec.state_dir));
    // With no key on disk nothing was deployed with one: any key shows the same plan.
    let key =
        state::read_host_key(&state_dir)?.unwrap_or_else(|| obsd::secret::HostKey(rand::random()));
    let mut persisted = Persisted::load(&state_dir).unwrap_or_default();
    let pass = rt()?.block_on(async {
        let docker = engine().await?;
        obsd::reconcile::pass(&docker, &desired, &key, &mut persisted, false, false)
            .await
            .map_err(anyhow::Error::from)
    })?;
    print_plan(&pass.plan, output)?;
    Ok(if pass.plan.is_noop() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(DRIFT)
    })
}

fn print_plan(plan: &Plan, output: Output) -> anyhow::Result<()> {
    if output == Output::Json {
        out!("{}", serde_json::to_string_pretty(plan)?);
        return Ok(());
    }
    for a in &plan.infra {
        match a {
            InfraAction::CreateNetwork { name, docker_name } => {
                out!("+ network {name} ({docker_name})")
            }
            InfraAction::CreateVolume { name, docker_name } => {
                out!("+ volume {name} ({docker_name})")
            }
            _ => {}
        }
    }
    for sp in &plan.services {
        let r = plan
            .resources
            .iter()
            .find(|r| r.kind == Kind::Service && r.name == sp.service);
        let reasons = r
            .map(|r| {
                r.drift
                    .iter()
                    .map(|d| d.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let steps: Vec<&str> = sp
            .steps
            .iter()
            .filter(|s| s.is_write())
            .map(Step::action_name)
            .collect();
        let sym = if sp.steps.iter().any(|s| matches!(s, Step::Create)) {
            "+"
        } else {
            "~"
        };
        out!(
            "{sym} service {}: {} ({reasons})",
            sp.service,
            if steps.is_empty() {
                "record config".to_string()
            } else {
                steps.join(" + ")
            }
        );
        if let Some(r) = r {
            for c in &r.changes {
                out!("    {}: {} → {}", c.path, c.applied, c.desired);
            }
            if let Some(m) = &r.message {
                out!("    {m}");
            }
        }
    }
    for a in &plan.cleanup {
        match a {
            InfraAction::RemoveOrphanContainer {
                service, container, ..
            } => {
                out!("- service {service}: remove orphan container {container} (orphan)")
            }
            InfraAction::RemoveNetwork { docker_name } => {
                out!("- network {docker_name} (orphan)")
            }
            _ => {}
        }
    }
    for r in &plan.resources {
        let acted = plan
            .services
            .iter()
            .any(|s| s.service == r.name && r.kind == Kind::Service);
        // A network or volume about to be created is listed above already; any other
        // drift (a name conflict, an orphaned volume, a failure) is shown even when
        // something else is pending.
        let created = plan.infra.iter().any(|a| match a {
            InfraAction::CreateNetwork { name, .. } => r.kind == Kind::Network && *name == r.name,
            InfraAction::CreateVolume { name, .. } => r.kind == Kind::Volume && *name == r.name,
            _ => false,
        });
        if !r.in_sync && !acted && !created && !r.drift.is_empty() {
            let reasons = r
                .drift
                .iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(",");
            if !(r.kind == Kind::Service && r.drift == [Reason::Orphan]) {
                out!(
                    "! {} {}: {reasons}{}",
                    r.kind.as_str().to_lowercase(),
                    r.name,
                    r.message
                        .as_ref()
                        .map(|m| format!(" — {m}"))
                        .unwrap_or_default()
                );
            }
        }
    }
    if plan.is_noop() {
        out!("nothing to do");
    }
    Ok(())
}

pub fn apply(dir: &Path, dry_run: bool) -> anyhow::Result<ExitCode> {
    if dry_run {
        let code = diff(dir, Output::Table)?;
        return Ok(if code == ExitCode::from(1) {
            code
        } else {
            ExitCode::SUCCESS
        });
    }
    let desired = load(dir)?;
    let state_dir = state::resolve_dir(None, Some(&desired.stack.spec.state_dir));
    state::ensure_dir(&state_dir)?;
    let _lock = state::Lock::acquire(&state_dir).context(
        "obsd is running on this state directory and converges by itself; use `obsctl status`",
    )?;
    let key = state::host_key(&state_dir)?;
    let mut persisted = Persisted::load(&state_dir)?;
    let generation = persisted.observe_desired(&desired.digest);
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    rt()?.block_on(async {
        let docker = engine().await?;
        let mut first = true;
        loop {
            let pass = obsd::reconcile::pass(&docker, &desired, &key, &mut persisted, true, first).await?;
            first = false;
            persisted.save(&state_dir)?;
            let report = pass.report.as_ref().expect("apply pass has a report");
            for (svc, r) in &report.services {
                match r {
                    obsd::reconcile::exec::ServiceResult::Done { actions } if !actions.is_empty() => out!("{svc}: {}", actions.join(" + ")),
                    obsd::reconcile::exec::ServiceResult::Failed { action, error } => eprintln!("{svc}: {action} failed: {error}"),
                    obsd::reconcile::exec::ServiceResult::RolledBack { rollback: h } => eprintln!("{svc}: rolled back: {}", h.reason),
                    obsd::reconcile::exec::ServiceResult::PreflightFailed { check: h } => eprintln!("{svc}: preflight failed: {}", h.reason),
                    obsd::reconcile::exec::ServiceResult::CrashLoop { hold: h } => eprintln!("{svc}: crash loop: {}", h.reason),
                    _ => {}
                }
            }
            for e in &report.infra_errors {
                eprintln!("error: {e}");
            }
            if pass.failed() {
                let failing = report.services.iter().filter(|(_, r)| !matches!(r, obsd::reconcile::exec::ServiceResult::Done { .. } | obsd::reconcile::exec::ServiceResult::Waiting { .. })).count();
                bail!("{failing} service(s) failed to converge (see above); `obsctl diff` shows what remains");
            }
            if pass.converged() {
                persisted.applied_generation = generation;
                persisted.save(&state_dir)?;
                let unresolved: Vec<String> = pass
                    .plan
                    .resources
                    .iter()
                    .filter(|r| !r.in_sync && r.drift.iter().any(|d| matches!(d, Reason::NameConflict | Reason::Failed | Reason::RolledBack | Reason::PreflightFailed | Reason::CrashLoop)))
                    .map(|r| format!("{} {}: {}", r.kind, r.name, r.message.clone().unwrap_or_default()))
                    .collect();
                if !unresolved.is_empty() {
                    bail!("not converged:\n  {}", unresolved.join("\n  "));
                }
                out!("converged (generation {generation})");
                return Ok(ExitCode::SUCCESS);
            }
            if std::time::Instant::now() > deadline {
                bail!("not converged after 5 minutes; `obsctl diff` shows what remains");
            }
            if report.needs_requeue() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    })
}

/// Where the daemon's API socket is: `--socket`/`OBSD_SOCKET`, else `obsd.sock` in
/// `--state-dir`/`OBSD_STATE_DIR`, else in the default state directory.
pub struct Socket {
    path: PathBuf,
    /// How it was found, for the error when nothing answers there.
    from: &'static str,
}

impl Socket {
    pub fn new(socket: Option<PathBuf>, state_dir: Option<PathBuf>) -> Socket {
        match (socket, state_dir) {
            (Some(path), _) => Socket {
                path,
                from: "--socket/OBSD_SOCKET",
            },
            (None, Some(dir)) => Socket {
                path: obsd::api::socket_in(&dir),
                from: "--state-dir/OBSD_STATE_DIR",
            },
            (None, None) => Socket {
                path: obsd::api::socket_in(&state::resolve_dir(None, None)),
                from: "the default state directory",
            },
        }
    }
}

/// One API call, its answer typed.
pub(crate) fn call<T: serde::de::DeserializeOwned>(
    socket: &Socket,
    method: &str,
    path: &str,
) -> anyhow::Result<T> {
    let r = rt()?.block_on(obsd::api::call(&socket.path, method, path));
    match r {
        Err(e @ obsd::api::ClientError::Connect { .. }) => Err(anyhow::anyhow!(
            "{e}\n(socket from {}; a daemon started with --state-dir DIR is reached with `obsctl --state-dir DIR` or OBSD_STATE_DIR=DIR)",
            socket.from
        )),
        r => Ok(r?),
    }
}

fn ago(ms: Option<i64>) -> String {
    let Some(ms) = ms else { return "—".into() };
    let secs = (state::now_ms() - ms).max(0) / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

fn or_dash(v: Option<impl ToString>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "—".into())
}

pub fn status(socket: &Socket, output: Output) -> anyhow::Result<ExitCode> {
    let mut v: wire::Status = call(socket, "GET", wire::STATUS)?;
    // The daemon judges too; judging here as well keeps the exit code right against a
    // daemon that predates the verdict.
    v.judge();
    let drift = v.verdict != wire::Verdict::InSync;
    if output == Output::Json {
        out!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        out!(
            "generation {} desired, {} applied; docker {}; last reconcile {}",
            v.desired_generation,
            v.applied_generation,
            if v.docker_up { "up" } else { "DOWN" },
            ago(v.last_reconcile_ms)
        );
        if let Some(err) = &v.desired_state_error {
            out!("desired state INVALID (last good kept): {err}");
        }
        if v.verdict == wire::Verdict::InSync {
            out!("verdict: in sync");
        } else {
            out!("verdict: NOT IN SYNC");
            for r in &v.reasons {
                out!("  - {} ({})", r.message, r.code);
            }
        }
        out!(
            "{:<8} {:<22} {:<7} {:<34} {:<34} {:<10} {:<24} {:<18} {:<10}",
            "KIND",
            "NAME",
            "SYNC",
            "DESIRED IMAGE",
            "OBSERVED IMAGE",
            "HEALTH",
            "DRIFT",
            "LAST ACTION",
            "SINCE"
        );
        for row in &v.resources {
            let r = &row.resource;
            let drift = r
                .drift
                .iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(",");
            let health = r
                .health
                .map(|h| format!("{h:?}").to_lowercase())
                .or_else(|| r.state.map(|s| format!("{s:?}").to_lowercase()));
            out!(
                "{:<8} {:<22} {:<7} {:<34} {:<34} {:<10} {:<24} {:<18} {:<10}",
                r.kind.as_str(),
                r.name,
                if r.in_sync { "ok" } else { "DRIFT" },
                or_dash(r.desired_image.as_ref()),
                or_dash(r.observed_image.as_ref()),
                or_dash(health),
                if drift.is_empty() {
                    "—".into()
                } else {
                    drift
                },
                or_dash(row.last_action.as_ref()),
                ago(row.since_ms),
            );
            if let Some(e) = row.last_error.as_ref().or(r.message.as_ref()) {
                out!("{:<8} └ {e}", "");
            }
        }
        if !v.jobs.is_empty() {
            let suspended = v.jobs.iter().filter(|j| j.suspended).count();
            out!(
                "\njobs: {} ({} failing{}) — `obsctl jobs` for details",
                v.jobs.len(),
                v.jobs.iter().filter(|j| j.failing).count(),
                if suspended > 0 {
                    format!(", {suspended} suspended")
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(if drift {
        ExitCode::from(DRIFT)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn jobs_list(socket: &Socket, output: Output) -> anyhow::Result<ExitCode> {
    let v: wire::JobList = call(socket, "GET", wire::JOBS)?;
    if output == Output::Json {
        out!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let until = |t: Option<chrono::DateTime<chrono::Utc>>| match t {
        None => "—".to_string(),
        Some(t) => {
            let s = (t.timestamp_millis() - state::now_ms()) / 1000;
            if s <= 0 {
                "due".into()
            } else if s < 120 {
                format!("in {s}s")
            } else {
                format!("in {}m", s / 60)
            }
        }
    };
    out!(
        "{:<16} {:<12} {:<14} {:<10} {:<10} {:<9} {:<10} LAST ERROR",
        "JOB",
        "KIND",
        "SCHEDULE",
        "LAST RUN",
        "RESULT",
        "DURATION",
        "NEXT RUN"
    );
    for j in &v.jobs {
        let last = j.last_run.as_ref();
        out!(
            "{:<16} {:<12} {:<14} {:<10} {:<10} {:<9} {:<10} {}",
            j.name,
            j.kind,
            j.schedule,
            if j.running {
                "running".to_string()
            } else {
                ago(last.map(|r| r.started_at.timestamp_millis()))
            },
            or_dash(last.map(|r| r.result.as_str())),
            or_dash(last.map(|r| format!("{:.2}s", r.duration_seconds))),
            if j.suspended {
                "suspended".to_string()
            } else {
                until(j.next_run)
            },
            j.last_error.as_deref().unwrap_or(""),
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn jobs_run(
    socket: &Socket,
    name: &str,
    wait: bool,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let path = wire::job_run_path(name, wait);
    if !wait {
        let v: wire::RunQueued = call(socket, "POST", &path)?;
        if output == Output::Json {
            out!("{}", serde_json::to_string_pretty(&v)?);
        } else if v.queued {
            out!("job {name}: queued behind the running one");
        } else {
            out!("job {name}: started");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let v: wire::RunFinished = call(socket, "POST", &path)?;
    if output == Output::Json {
        out!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        out!(
            "job {}: {} in {:.2}s{}",
            v.job,
            v.result.as_str(),
            v.duration_seconds,
            v.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    }
    Ok(if v.result == obsd::jobs::RunResult::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn volume_ls(dir: &Path) -> anyhow::Result<ExitCode> {
    let desired = load(dir)?;
    rt()?.block_on(async {
        let docker = engine().await?;
        let vols = docker.list_volumes().await?;
        out!("{:<40} {:<10} MOUNTPOINT", "VOLUME", "DESIRED");
        for v in vols
            .iter()
            .filter(|v| labels::owned(&v.labels, desired.project()))
        {
            let wanted = desired
                .volumes
                .keys()
                .any(|n| desired.volume_docker_name(n) == v.name);
            out!(
                "{:<40} {:<10} {}",
                v.name,
                if wanted { "yes" } else { "ORPHAN" },
                v.mountpoint
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn volume_rm(dir: &Path, name: &str, confirmed: bool) -> anyhow::Result<ExitCode> {
    let desired = load(dir)?;
    if desired
        .volumes
        .keys()
        .any(|n| desired.volume_docker_name(n) == name || n == name)
    {
        bail!("volume {name} is still declared in the desired state; remove its Volume document first");
    }
    if !confirmed {
        bail!("deleting volume {name} destroys the data in it; repeat with --yes-delete-data to confirm");
    }
    rt()?.block_on(async {
        let docker = engine().await?;
        let vols = docker.list_volumes().await?;
        let Some(v) = vols.iter().find(|v| v.name == name) else {
            bail!("no volume named {name}");
        };
        if !labels::owned(&v.labels, desired.project()) {
            bail!(
                "volume {name} is not owned by stack {} (no {} label); obsd does not touch it",
                desired.project(),
                labels::STACK
            );
        }
        docker
            .remove_volume(name)
            .await
            .with_context(|| format!("removing volume {name}"))?;
        out!("deleted volume {name}");
        Ok(ExitCode::SUCCESS)
    })
}

pub fn import_compose(file: &Path) -> anyhow::Result<ExitCode> {
    let out = obsd::desired::compose::import_file(file)?;
    out_raw!("{out}");
    Ok(ExitCode::SUCCESS)
}
