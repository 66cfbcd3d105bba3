//! obsctl subcommands. Each returns the process exit code (contract: product.md).

use crate::Output;
use anyhow::{bail, Context};
use obsd::desired::load::{load_dir, LoadOptions};
use obsd::desired::DesiredState;
use obsd::docker::engine::Engine;
use obsd::docker::{labels, Docker};
use obsd::reconcile::plan::{InfraAction, Plan, Step};
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
                println!("{}", serde_json::to_string_pretty(&s.warnings)?);
            } else {
                for w in &s.warnings {
                    eprintln!("{w}");
                }
                println!(
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
                println!("{}", serde_json::to_string_pretty(&e.0)?);
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
        println!("{}", serde_json::to_string_pretty(plan)?);
        return Ok(());
    }
    for a in &plan.infra {
        match a {
            InfraAction::CreateNetwork { name, docker_name } => {
                println!("+ network {name} ({docker_name})")
            }
            InfraAction::CreateVolume { name, docker_name } => {
                println!("+ volume {name} ({docker_name})")
            }
            _ => {}
        }
    }
    for sp in &plan.services {
        let r = plan
            .resources
            .iter()
            .find(|r| r.kind == "Service" && r.name == sp.service);
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
        println!(
            "{sym} service {}: {} ({reasons})",
            sp.service,
            if steps.is_empty() {
                "record config".to_string()
            } else {
                steps.join(" + ")
            }
        );
        if let Some(r) = r {
            for (path, old, new) in &r.changes {
                println!("    {path}: {old} → {new}");
            }
            if let Some(m) = &r.message {
                println!("    {m}");
            }
        }
    }
    for a in &plan.cleanup {
        match a {
            InfraAction::RemoveOrphanContainer {
                service, container, ..
            } => {
                println!("- service {service}: remove orphan container {container} (orphan)")
            }
            InfraAction::RemoveNetwork { docker_name } => {
                println!("- network {docker_name} (orphan)")
            }
            _ => {}
        }
    }
    for r in &plan.resources {
        let acted = plan
            .services
            .iter()
            .any(|s| s.service == r.name && r.kind == "Service");
        // A network or volume about to be created is listed above already; any other
        // drift (a name conflict, an orphaned volume, a failure) is shown even when
        // something else is pending.
        let created = plan.infra.iter().any(|a| match a {
            InfraAction::CreateNetwork { name, .. } => r.kind == "Network" && *name == r.name,
            InfraAction::CreateVolume { name, .. } => r.kind == "Volume" && *name == r.name,
            _ => false,
        });
        if !r.in_sync && !acted && !created && !r.drift.is_empty() {
            let reasons = r
                .drift
                .iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(",");
            if !(r.kind == "Service" && r.drift == [obsd::reconcile::plan::Reason::Orphan]) {
                println!(
                    "! {} {}: {reasons}{}",
                    r.kind.to_lowercase(),
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
        println!("nothing to do");
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
                    obsd::reconcile::exec::ServiceResult::Done { actions } if !actions.is_empty() => println!("{svc}: {}", actions.join(" + ")),
                    obsd::reconcile::exec::ServiceResult::Failed { action, error } => eprintln!("{svc}: {action} failed: {error}"),
                    _ => {}
                }
            }
            for e in &report.infra_errors {
                eprintln!("error: {e}");
            }
            if pass.failed() {
                let failing = report.services.iter().filter(|(_, r)| matches!(r, obsd::reconcile::exec::ServiceResult::Failed { .. })).count();
                bail!("{failing} service(s) failed to converge (see above); `obsctl diff` shows what remains");
            }
            if pass.plan.is_noop() && !report.needs_requeue() {
                persisted.applied_generation = generation;
                persisted.save(&state_dir)?;
                let unresolved: Vec<String> = pass
                    .plan
                    .resources
                    .iter()
                    .filter(|r| !r.in_sync && r.drift.iter().any(|d| matches!(d, obsd::reconcile::plan::Reason::NameConflict | obsd::reconcile::plan::Reason::Failed)))
                    .map(|r| format!("{} {}: {}", r.kind, r.name, r.message.clone().unwrap_or_default()))
                    .collect();
                if !unresolved.is_empty() {
                    bail!("not converged:\n  {}", unresolved.join("\n  "));
                }
                println!("converged (generation {generation})");
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

fn socket_path(socket: Option<PathBuf>) -> PathBuf {
    socket.unwrap_or_else(|| obsd::api::socket_in(&state::resolve_dir(None, None)))
}

fn get_json(socket: &Path, method: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let (code, body) = rt()?.block_on(obsd::api::request(socket, method, path))?;
    if code != 200 {
        bail!("obsd answered {code}: {}", body.trim());
    }
    Ok(serde_json::from_str(&body)?)
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

pub fn status(socket: Option<PathBuf>, output: Output) -> anyhow::Result<ExitCode> {
    let socket = socket_path(socket);
    let v = get_json(&socket, "GET", "/v1/status")?;
    let resources = v["resources"].as_array().cloned().unwrap_or_default();
    let drift = resources
        .iter()
        .any(|r| r["in_sync"] == serde_json::Value::Bool(false))
        || v["jobs"].as_array().is_some_and(|j| {
            j.iter()
                .any(|j| j["failing"] == serde_json::Value::Bool(true))
        });
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "generation {} desired, {} applied; docker {}; last reconcile {}",
            v["desired_generation"],
            v["applied_generation"],
            if v["docker_up"] == serde_json::Value::Bool(true) {
                "up"
            } else {
                "DOWN"
            },
            ago(v["last_reconcile_ms"].as_i64())
        );
        if let Some(err) = v["desired_state_error"].as_str() {
            println!("desired state INVALID (last good kept): {err}");
        }
        println!(
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
        for r in &resources {
            let s = |k: &str| r[k].as_str().unwrap_or("—").to_string();
            let drift = r["drift"]
                .as_array()
                .map(|d| {
                    d.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            println!(
                "{:<8} {:<22} {:<7} {:<34} {:<34} {:<10} {:<24} {:<18} {:<10}",
                s("kind"),
                s("name"),
                if r["in_sync"] == serde_json::Value::Bool(true) {
                    "ok"
                } else {
                    "DRIFT"
                },
                s("desired_image"),
                s("observed_image"),
                r["health"].as_str().or(r["state"].as_str()).unwrap_or("—"),
                if drift.is_empty() {
                    "—".into()
                } else {
                    drift
                },
                s("last_action"),
                ago(r["since_ms"].as_i64()),
            );
            if let Some(e) = r["last_error"].as_str().or(r["message"].as_str()) {
                println!("{:<8} └ {e}", "");
            }
        }
        if let Some(jobs) = v["jobs"].as_array() {
            if !jobs.is_empty() {
                println!(
                    "\njobs: {} ({} failing) — `obsctl jobs` for details",
                    jobs.len(),
                    jobs.iter()
                        .filter(|j| j["failing"] == serde_json::Value::Bool(true))
                        .count()
                );
            }
        }
    }
    Ok(if drift {
        ExitCode::from(DRIFT)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn jobs_list(socket: Option<PathBuf>, output: Output) -> anyhow::Result<ExitCode> {
    let v = get_json(&socket_path(socket), "GET", "/v1/jobs")?;
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let ts = |x: &serde_json::Value| {
        x.as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis())
    };
    let until = |ms: Option<i64>| match ms {
        None => "—".to_string(),
        Some(ms) => {
            let s = (ms - state::now_ms()) / 1000;
            if s <= 0 {
                "due".into()
            } else if s < 120 {
                format!("in {s}s")
            } else {
                format!("in {}m", s / 60)
            }
        }
    };
    println!(
        "{:<16} {:<12} {:<14} {:<10} {:<10} {:<9} {:<10} LAST ERROR",
        "JOB", "KIND", "SCHEDULE", "LAST RUN", "RESULT", "DURATION", "NEXT RUN"
    );
    for j in v["jobs"].as_array().cloned().unwrap_or_default() {
        let last = &j["last_run"];
        println!(
            "{:<16} {:<12} {:<14} {:<10} {:<10} {:<9} {:<10} {}",
            j["name"].as_str().unwrap_or("?"),
            j["kind"].as_str().unwrap_or("?"),
            j["schedule"].as_str().unwrap_or("?"),
            if j["running"] == serde_json::Value::Bool(true) {
                "running".to_string()
            } else {
                ago(ts(&last["started_at"]))
            },
            last["result"].as_str().unwrap_or("—"),
            last["duration_seconds"]
                .as_f64()
                .map(|d| format!("{d:.2}s"))
                .unwrap_or_else(|| "—".into()),
            until(ts(&j["next_run"])),
            j["last_error"].as_str().unwrap_or(""),
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn jobs_run(socket: Option<PathBuf>, name: &str, wait: bool) -> anyhow::Result<ExitCode> {
    let path = format!(
        "/v1/jobs/{name}/run{}",
        if wait { "?wait=true" } else { "" }
    );
    let v = get_json(&socket_path(socket), "POST", &path)?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    let ok = !wait || v["result"].as_str() == Some("success");
    Ok(if ok {
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
        println!("{:<40} {:<10} MOUNTPOINT", "VOLUME", "DESIRED");
        for v in vols
            .iter()
            .filter(|v| v.labels.get(labels::STACK).map(String::as_str) == Some(desired.project()))
        {
            let wanted = desired
                .volumes
                .keys()
                .any(|n| desired.volume_docker_name(n) == v.name);
            println!(
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
        if v.labels.get(labels::STACK).map(String::as_str) != Some(desired.project()) {
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
        println!("deleted volume {name}");
        Ok(ExitCode::SUCCESS)
    })
}

pub fn import_compose(file: &Path) -> anyhow::Result<ExitCode> {
    let out = obsd::desired::compose::import_file(file)?;
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}
