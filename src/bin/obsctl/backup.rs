//! `obsctl backup list` and `obsctl restore volume`: read the bucket of the desired
//! state's backup Job (credentials from its env file) and restore through the engine.

use crate::Output;
use anyhow::{anyhow, bail, Context};
use obsd::desired::load::{load_dir, LoadOptions};
use obsd::desired::model::job::BackupJob;
use obsd::desired::DesiredState;
use obsd::docker::engine::Engine;
use obsd::docker::Docker;
use obsd::jobs::backup::{self, RestoreTarget};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

fn rt() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn load(dir: &Path) -> anyhow::Result<DesiredState> {
    load_dir(dir, &LoadOptions::default())
        .map_err(|e| anyhow!("desired state {} is invalid:\n{e}", dir.display()))
}

/// The backup Job: the one named `job`, or the only one.
fn backup_job<'a>(d: &'a DesiredState, job: Option<&str>) -> anyhow::Result<&'a BackupJob> {
    let jobs: Vec<(&String, &BackupJob)> = d
        .jobs
        .iter()
        .filter_map(|(n, r)| r.spec.backup.as_ref().map(|b| (n, b)))
        .filter(|(n, _)| job.is_none_or(|j| j == n.as_str()))
        .collect();
    match jobs.as_slice() {
        [(_, b)] => Ok(b),
        [] => bail!(
            "the desired state has no backup Job{}",
            job.map(|j| format!(" named {j}")).unwrap_or_default()
        ),
        _ => bail!("several backup Jobs: choose one with --job"),
    }
}

fn bucket(d: &DesiredState, b: &BackupJob) -> anyhow::Result<backup::s3::S3> {
    backup::open_bucket(obsd::jobs::default_http_client(), b, &d.env).map_err(|e| anyhow!(e))
}

pub fn list(dir: &Path, job: Option<&str>, output: Output) -> anyhow::Result<ExitCode> {
    let d = load(dir)?;
    let b = backup_job(&d, job)?;
    let s3 = bucket(&d, b)?;
    rt()?.block_on(async {
        let days = backup::complete_days(&s3).await.map_err(|e| anyhow!(e))?;
        let mut rows = Vec::new();
        for day in days.iter().rev() {
            let m = backup::load_manifest(&s3, day)
                .await
                .map_err(|e| anyhow!(e))?;
            rows.push(m);
        }
        if output == Output::Json {
            let v: Vec<_> = rows
                .iter()
                .map(|m| {
                    json!({
                        "date": m.date,
                        "complete": true,
                        // Complete (a manifest) but some source failed that day.
                        "partial": !m.failed.is_empty(),
                        "obsdVersion": m.obsd_version,
                        "startedAt": m.started_at,
                        "finishedAt": m.finished_at,
                        "encrypted": m.encrypted,
                        "sources": m.sources.iter().map(|s| json!({
                            "kind": s.kind,
                            "name": s.name,
                            "quiesce": s.quiesce,
                            "bytes": s.bytes,
                            "storedBytes": s.stored_bytes,
                            "files": s.files.len(),
                            "sha256": s.sha256,
                        })).collect::<Vec<_>>(),
                        "exports": m.exports.iter().map(|e| json!({
                            "kind": e.kind,
                            "name": e.name,
                            "bytes": e.bytes,
                            "storedBytes": e.stored_bytes,
                            "documents": e.documents.len(),
                            "truncated": e.truncated,
                            "sha256": e.sha256,
                        })).collect::<Vec<_>>(),
                        "failed": m.failed.iter().map(|f| json!({"kind": f.kind, "name": f.name, "error": f.error})).collect::<Vec<_>>(),
                    })
                })
                .collect();
            out!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            out!(
                "{:<12} {:<8} {:<24} {:>14} {:>14} {:>7}  SHA256",
                "DATE", "KIND", "SOURCE", "BYTES", "STORED", "ITEMS"
            );
            for m in &rows {
                for s in &m.sources {
                    out!(
                        "{:<12} {:<8} {:<24} {:>14} {:>14} {:>7}  {}",
                        m.date,
                        s.kind,
                        s.name,
                        s.bytes,
                        s.stored_bytes,
                        s.files.len(),
                        &s.sha256[..16.min(s.sha256.len())]
                    );
                }
                for e in &m.exports {
                    let cut = if e.truncated.is_empty() {
                        String::new()
                    } else {
                        format!("  TRUNCATED: {}", e.truncated.join(", "))
                    };
                    out!(
                        "{:<12} {:<8} {:<24} {:>14} {:>14} {:>7}  {}{cut}",
                        m.date,
                        e.kind,
                        e.name,
                        e.bytes,
                        e.stored_bytes,
                        e.documents.len(),
                        &e.sha256[..16.min(e.sha256.len())]
                    );
                }
                for f in &m.failed {
                    out!(
                        "{:<12} {:<8} {:<24} FAILED (the day is partial): {}",
                        m.date, f.kind, f.name, f.error
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub struct RestoreArgs<'a> {
    pub dir: &'a Path,
    pub job: Option<&'a str>,
    pub name: &'a str,
    pub date: Option<&'a str>,
    pub into: Option<&'a str>,
    pub identity: Option<&'a Path>,
    pub overwrite: bool,
    /// `--state-dir` (or `OBSD_STATE_DIR`): whose lock an overwrite holds.
    pub state_dir: Option<&'a Path>,
}

pub fn restore_volume(a: RestoreArgs<'_>) -> anyhow::Result<ExitCode> {
    let d = load(a.dir)?;
    let b = backup_job(&d, a.job)?;
    let s3 = Arc::new(bucket(&d, b)?);
    rt()?.block_on(async {
        let days = backup::complete_days(&s3).await.map_err(|e| anyhow!(e))?;
        // Only complete days (a manifest) are candidates; the newest holding the volume.
        let mut chosen = None;
        for day in days.iter().rev() {
            if a.date.is_some_and(|want| want != day) {
                continue;
            }
            let m = backup::load_manifest(&s3, day)
                .await
                .map_err(|e| anyhow!(e))?;
            if let Some(s) = m.sources.iter().find(|s| s.kind == "volume" && s.name == a.name) {
                chosen = Some((day.clone(), s.clone(), m.encrypted));
                break;
            }
        }
        let Some((day, src, encrypted)) = chosen else {
            bail!(
                "no complete backup of volume {}{}",
                a.name,
                a.date.map(|d| format!(" on {d}")).unwrap_or_default()
            );
        };
        let identity = match a.identity {
            Some(p) => Some(
                backup::store::parse_identity(
                    &std::fs::read_to_string(p)
                        .with_context(|| format!("reading {}", p.display()))?,
                )
                .map_err(|e| anyhow!("{}: {e}", p.display()))?,
            ),
            None => None,
        };
        if encrypted && identity.is_none() {
            bail!("the backup of {} on {day} is encrypted: pass --identity FILE (the age identity kept off the host)", a.name);
        }
        let docker = Engine::open()
            .await
            .map_err(|e| anyhow!("cannot reach the Docker engine: {}", e.detail()))?;
        let live = if d.volumes.contains_key(a.name) {
            d.volume_docker_name(a.name)
        } else {
            a.name.to_string()
        };
        let users = docker.containers_using_volume(&live).await?;
        let users: Vec<_> = users
            .into_iter()
            .filter(|c| c.label(backup::HELPER_LABEL).is_none())
            .collect();
        // The helper's image (never started, never pulled): a container's that mounts the
        // volume, else a local image of a Service declared with it (a new VM where the
        // first containers were removed again), else any container's.
        let mut image = users
            .iter()
            .find(|c| !c.image_id.is_empty())
            .map(|c| c.image_id.clone());
        if image.is_none() {
            for r in d.services.values() {
                if r.spec.volumes.iter().any(|m| m.volume == a.name) {
                    if let Some(id) = docker.image_id(&r.spec.image).await? {
                        image = Some(id);
                        break;
                    }
                }
            }
        }
        if image.is_none() {
            image = docker
                .list_all_containers()
                .await?
                .into_iter()
                .map(|c| c.image_id)
                .find(|i| !i.is_empty());
        }
        let image = image.ok_or_else(|| {
            anyhow!("no image is present locally for the restore helper (apply the desired state first)")
        })?;
        let vols = docker.list_volumes().await?;
        if a.overwrite {
            if a.into.is_some() {
                bail!("--overwrite restores into the live volume; it does not combine with --into");
            }
            if !vols.iter().any(|v| v.name == live) {
                bail!("volume {live} does not exist; restore without --overwrite");
            }
            // obsd's reconcile starts a stopped service (restart policy `always` or
            // `unless-stopped`): it would start it again mid-restore. The state
            // directory's lock is held for the whole restore: refused while obsd runs,
            // and obsd cannot start until the services run again.
            let state_dir = obsd::state::resolve_dir(a.state_dir, Some(&d.stack.spec.state_dir));
            obsd::state::ensure_dir(&state_dir)?;
            let _lock = obsd::state::Lock::acquire(&state_dir).context(
                "obsd is running on this state directory and would start the stopped services \
                 mid-restore: stop obsd, run the restore, then start obsd again",
            )?;
            let running: Vec<_> = users
                .iter()
                .filter(|c| c.state == obsd::docker::RunState::Running)
                .collect();
            let r = overwrite(&docker, &running, async {
                backup::restore_volume(
                    &docker,
                    s3.clone(),
                    identity.as_ref(),
                    &src,
                    &RestoreTarget {
                        volume: &live,
                        image: &image,
                        labels: BTreeMap::new(),
                    },
                    false,
                )
                .await
                .map_err(|e| anyhow!(e))
            })
            .await
            .with_context(|| format!("restoring {} ({day}) into {live}", a.name))?;
            out!("restored {} ({day}, {r} bytes checked) into {live}", a.name);
            return Ok(ExitCode::SUCCESS);
        }
        let target = a
            .into
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}-restored-{day}", a.name));
        if vols.iter().any(|v| v.name == target) {
            bail!("volume {target} already exists: choose another with --into (a restore never writes into an existing volume without --overwrite)");
        }
        // Into the stack's own name for the volume (a new VM, before obsd starts): the
        // volume gets the labels obsd gives the volumes it creates, so it is the stack's.
        let mut labels = BTreeMap::new();
        if d.volumes.contains_key(a.name) && target == live {
            labels.insert(
                obsd::docker::labels::STACK.to_string(),
                d.stack.spec.project.clone(),
            );
            labels.insert(obsd::docker::labels::KIND.into(), "Volume".into());
            labels.insert(obsd::docker::labels::NAME.into(), a.name.to_string());
        }
        let n = backup::restore_volume(
            &docker,
            s3.clone(),
            identity.as_ref(),
            &src,
            &RestoreTarget {
                volume: &target,
                image: &image,
                labels,
            },
            true,
        )
        .await
        .map_err(|e| anyhow!(e))
        .with_context(|| format!("restoring {} ({day})", a.name))?;
        out!("restored {} ({day}, {n} bytes checked) into new volume {target}", a.name);
        Ok(ExitCode::SUCCESS)
    })
}

/// Stops `running`, runs `restore`, and starts every container it stopped again
/// whatever happened (a failed stop, a failed restore): none is left stopped.
async fn overwrite<F>(
    docker: &Engine,
    running: &[&obsd::docker::ContainerInfo],
    restore: F,
) -> anyhow::Result<u64>
where
    F: std::future::Future<Output = anyhow::Result<u64>>,
{
    let mut stopped = Vec::new();
    let mut result = Ok(());
    for c in running {
        eprintln!("stopping {}", c.name);
        // Recorded first: a stop that fails half-way is still started again.
        stopped.push(*c);
        if let Err(e) = docker.stop_container(&c.id, None).await {
            result = Err(anyhow!("stopping {}: {e}", c.name));
            break;
        }
    }
    let restored = match result {
        Ok(()) => restore.await,
        Err(e) => Err(e),
    };
    let mut start_errors = Vec::new();
    for c in &stopped {
        eprintln!("starting {}", c.name);
        if let Err(e) = docker.start_container(&c.id).await {
            start_errors.push(format!("starting {}: {e}", c.name));
        }
    }
    match (restored, start_errors.is_empty()) {
        (Ok(n), true) => Ok(n),
        (Ok(_), false) => bail!("restored, but {}", start_errors.join("; ")),
        (Err(e), true) => Err(e),
        (Err(e), false) => Err(e.context(start_errors.join("; "))),
    }
}

/// No container names: the backup body does not use them.
struct NoNames;

impl obsd::jobs::ContainerNames for NoNames {
    fn list(
        &self,
    ) -> futures_util::future::BoxFuture<
        '_,
        Result<Vec<(String, String)>, obsd::jobs::ContainerNamesError>,
    > {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// `obsctl backup run`: one run of the backup Job's body in this process (no daemon):
/// the same code, metrics and dead-man pings as the scheduled run. `as_of` (hidden,
/// for the benchmark's simulated days) runs it as if it were 03:30 UTC that day.
pub fn run_now(
    dir: &Path,
    job: Option<&str>,
    as_of: Option<&str>,
    state_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let d = load(dir)?;
    let b = backup_job(&d, job)?.clone();
    let name = d
        .jobs
        .iter()
        .find(|(n, r)| r.spec.backup.is_some() && job.is_none_or(|j| j == n.as_str()))
        .map(|(n, _)| n.clone())
        .unwrap_or_else(|| "backup".into());
    let state_dir = obsd::state::resolve_dir(state_dir, Some(&d.stack.spec.state_dir));
    // A running obsd would undo the quiesce mid-read (its passes unpause and start the
    // containers a backup of *another* process holds) and writes the same job state:
    // with obsd up, the backup runs inside it. The lock is held for the whole run.
    obsd::state::ensure_dir(&state_dir)?;
    let _lock = obsd::state::Lock::acquire(&state_dir).with_context(|| {
        format!(
            "obsd is running on {}: run the backup through it, `obsctl jobs run {name} --wait`",
            state_dir.display()
        )
    })?;
    rt()?.block_on(async {
        let mut ctx = obsd::jobs::JobContext::new(
            Arc::new(d.env.clone()),
            state_dir,
            d.stack
                .spec
                .textfile_dir
                .as_ref()
                .map(std::path::PathBuf::from),
            Arc::new(NoNames),
        );
        if let Some(day) = as_of {
            let t = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
                .with_context(|| format!("--as-of {day}"))?
                .and_hms_opt(3, 30, 0)
                .expect("valid time")
                .and_utc();
            ctx.clock = Arc::new(obsd::jobs::TokioClock::starting_at(t));
        }
        let docker = Engine::open()
            .await
            .map_err(|e| anyhow!("cannot reach the Docker engine: {}", e.detail()))?;
        match backup::run_with(
            &ctx,
            &name,
            &b,
            &docker,
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        {
            Ok(()) => {
                out!("backup complete");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("obsctl: backup: {e}");
                Ok(ExitCode::from(1))
            }
        }
    })
}
