//! backup-r2 (LLD section 2): the stack's volumes → an S3-compatible bucket (R2),
//! streamed, write-once, checked on restore.
//!
//! Per volume: a helper container is *created, never started*, from the image of a
//! container that mounts the volume (already present: nothing is pulled), with the
//! volume mounted read-only at `/data`; the engine's archive endpoint
//! (`GET /containers/{id}/archive`) is the tar stream, read on a blocking thread
//! ([`volume::read_volume`]) and cut into content-addressed, zstd-compressed objects
//! ([`store`]), each one PUT with `If-None-Match: *` ([`s3`]); reading, compression and
//! PUTs overlap. Nothing touches the disk; memory is a few segments
//! ([`store::SEGMENT`], [`store::PUT_SLOTS`]) whatever the volume size. The day's
//! manifest ([`manifest`]) is written last; a day without one is incomplete and the next
//! run finishes it.
//!
//! Quiesce (`none | pause | stop`) wraps only the read, and is undone on every path: on
//! success and error here, on timeout or cancellation by the guard's `Drop` (a task is
//! spawned to unpause/start), and after a crash by the next reconcile pass (a paused
//! owned container is `stopped` drift repaired by an unpause).

pub mod cloudflare;
pub mod manifest;
mod quiesce;
mod restore;
pub mod retention;
pub mod s3;
pub mod sources;
pub mod store;
pub mod volume;

use super::textfile::Textfile;
use super::{JobContext, JobError};
use crate::desired::model::job::{BackupJob, Quiesce};
use crate::desired::EnvFile;
use crate::docker::{ContainerInfo, CreateContainer, Docker, Mount};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use futures_util::TryStreamExt;
use manifest::{date_of_manifest_key, manifest_key, FailedSource, Manifest, Source};
use quiesce::Quiesced;
pub use restore::{drill, restore_volume, RestoreTarget};
use s3::S3;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use store::Store;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Label on the helper containers (never the stack label: the planner ignores them).
pub const HELPER_LABEL: &str = "obs.tlsstress.art/backup-helper";

/// The bucket of a backup job, with the credentials from the env file.
pub fn open_bucket(http: reqwest::Client, job: &BackupJob, env: &EnvFile) -> Result<S3, String> {
    let endpoint = job
        .endpoint
        .as_deref()
        .ok_or("spec.backup.endpoint is not set (the bucket's S3 API URL)")?;
    let secret = |name: &str| {
        env.get(name)
            .filter(|s| !s.expose().is_empty())
            .ok_or_else(|| format!("`{name}` is not set in the env file"))
    };
    let akid = secret(&job.access_key_id_env)?;
    let key = secret(&job.secret_access_key_env)?;
    S3::new(
        http,
        endpoint,
        &job.bucket,
        &job.region,
        akid.expose(),
        key.expose(),
    )
}

/// The Docker volume of a `Volume` resource: a volume with exactly that name, else the
/// one volume obsd created for the resource (label `obs.tlsstress.art/name`).
pub async fn docker_volume<D: Docker>(docker: &D, resource: &str) -> Result<String, String> {
    let vols = docker
        .list_volumes()
        .await
        .map_err(|e| format!("listing volumes: {e}"))?;
    if vols.iter().any(|v| v.name == resource) {
        return Ok(resource.to_string());
    }
    let labelled: Vec<&str> = vols
        .iter()
        .filter(|v| {
            v.labels
                .get(crate::docker::labels::NAME)
                .map(String::as_str)
                == Some(resource)
                && v.labels.contains_key(crate::docker::labels::STACK)
        })
        .map(|v| v.name.as_str())
        .collect();
    match labelled.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(format!("volume {resource} does not exist")),
        many => Err(format!(
            "volume {resource} is ambiguous: {}",
            many.join(", ")
        )),
    }
}

/// Complete days in the bucket (dates with a manifest), oldest first.
pub async fn complete_days(s3: &S3) -> Result<Vec<String>, String> {
    let mut days: Vec<String> = s3
        .list("daily/")
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .filter_map(|o| date_of_manifest_key(&o.key).map(str::to_string))
        .collect();
    days.sort();
    days.dedup();
    Ok(days)
}

pub async fn load_manifest(s3: &S3, date: &str) -> Result<Manifest, String> {
    let key = manifest_key(date);
    let raw = s3
        .get(&key)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no complete backup for {date} ({key} is missing)"))?;
    serde_json::from_slice(&raw).map_err(|e| format!("{key}: {e}"))
}

/// Persisted between runs: last successes (for the metrics) and deletes the lock refused.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunState2 {
    #[serde(default)]
    last_success: Option<f64>,
    #[serde(default)]
    source_last_success: BTreeMap<String, f64>,
    /// Keys whose delete the bucket lock refused, with the day of the refusal.
    #[serde(default)]
    refused_deletes: BTreeMap<String, String>,
    #[serde(default)]
    drill_last_success: Option<f64>,
}

fn state_path(state_dir: &Path, job: &str) -> std::path::PathBuf {
    state_dir.join("jobs").join(format!("{job}.backup.json"))
}

fn load_state(state_dir: &Path, job: &str) -> RunState2 {
    std::fs::read(state_path(state_dir, job))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_state(state_dir: &Path, job: &str, s: &RunState2) -> Result<(), JobError> {
    let path = state_path(state_dir, job);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| JobError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
    }
    let bytes = serde_json::to_vec_pretty(s).expect("plain data serialises");
    crate::fsutil::atomic_write(&path, &bytes, 0o600).map_err(|source| JobError::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

/// A random request ID for the dead-man pings of one run (UUID v4 form).
fn new_rid() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// healthchecks.io ping (`suffix`: "", "/start", "/fail"); failures are logged only.
async fn ping(ctx: &JobContext, url: Option<&str>, suffix: &str, rid: &str, body: String) {
    let Some(url) = url else { return };
    let target = format!("{}{suffix}?rid={rid}", url.trim_end_matches('/'));
    let r = ctx
        .http
        .post(&target)
        .timeout(ctx.request_timeout)
        .body(body)
        .send()
        .await;
    match r {
        Ok(resp) if resp.status().is_success() => {}
        Ok(resp) => warn!(status = %resp.status(), "dead-man ping{suffix} refused"),
        // Without the URL: the check's address is a secret from the env file.
        Err(e) => {
            warn!(error = %super::error_chain(&e.without_url()), "dead-man ping{suffix} failed")
        }
    }
}

/// The job body: connects to the Docker engine and runs [`run_with`].
pub async fn run(
    ctx: &JobContext,
    name: &str,
    job: &BackupJob,
    cancel: &CancellationToken,
) -> Result<(), JobError> {
    let engine = crate::docker::engine::Engine::connect()
        .map_err(|e| JobError::Failed(format!("Docker engine: {e}")))?;
    run_with(ctx, name, job, &engine, cancel).await
}

/// What one run did (for the caller's tests and logs).
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub date: String,
    pub pruned: retention::Pruned,
    pub already_complete: bool,
    pub uploaded_objects: u64,
    pub uploaded_bytes: u64,
    pub reused_objects: u64,
    pub failed: Vec<String>,
    /// Non-volume sources ([`sources`]).
    pub exports: Vec<sources::Report>,
    /// Where each volume's time went, volumes backed up by this run only.
    pub timings: Vec<(String, store::Timings)>,
}

/// One run against `docker` (the engine, or a test's).
pub async fn run_with<D: Docker + Clone>(
    ctx: &JobContext,
    name: &str,
    job: &BackupJob,
    docker: &D,
    cancel: &CancellationToken,
) -> Result<(), JobError> {
    let rid = new_rid();
    let dead_man = match &job.dead_man_url_env {
        Some(env) => Some(ctx.secret(env)?.expose().to_string()),
        None => None,
    };
    ping(ctx, dead_man.as_deref(), "/start", &rid, String::new()).await;
    let mut state = load_state(&ctx.state_dir, name);
    let started = ctx.clock.now();
    let result = backup_day(
        ctx,
        job,
        docker,
        cancel,
        started,
        &mut state.refused_deletes,
    )
    .await;
    let drilled = if job.drill {
        let r = match open_bucket(ctx.http.clone(), job, &ctx.env) {
            Ok(s3) => drill(docker, Arc::new(s3)).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &r {
            warn!(error = %e, "restore drill failed");
        }
        Some(r)
    } else {
        None
    };
    let guard = match &job.cloudflare {
        Some(cf) => {
            let r = cloudflare::ensure(ctx, cf, &job.bucket, job.lock_retention_days).await;
            if let Err(e) = &r {
                warn!(error = %e, "bucket lock / public access check failed");
            }
            Some(r)
        }
        None => None,
    };
    let now = ctx.clock.now().timestamp() as f64;
    let mut tf = Textfile::new();
    if let Some(Ok(g)) = &guard {
        tf.gauge(
            "backup_r2_bucket_lock_enabled",
            "1 if a whole-bucket lock rule of at least lockRetentionDays is enabled.",
        )
        .set(f64::from(u8::from(g.lock_enabled)));
        tf.gauge(
            "backup_r2_bucket_public",
            "1 if the bucket is reachable publicly (r2.dev or a custom domain).",
        )
        .set(f64::from(u8::from(g.public)));
    }
    if let Some(r) = &drilled {
        tf.gauge(
            "backup_r2_drill_success",
            "1 if the last restore drill restored and matched every volume of the newest complete day.",
        )
        .set(f64::from(u8::from(r.is_ok())));
        if let Ok((_, bytes)) = r {
            state.drill_last_success = Some(now);
            tf.gauge(
                "backup_r2_drill_bytes",
                "Bytes the last restore drill compared.",
            )
            .set(*bytes as f64);
        }
        tf.gauge(
            "backup_r2_drill_last_run_timestamp_seconds",
            "End of the last restore drill.",
        )
        .set(now);
    }
    if let Some(t) = state.drill_last_success {
        tf.gauge(
            "backup_r2_drill_last_success_timestamp_seconds",
            "Last restore drill that matched every volume.",
        )
        .set(t);
    }
    tf.gauge(
        "backup_r2_last_run_timestamp_seconds",
        "End of the last backup run.",
    )
    .set(now);
    let (sources, usage, run_ok, error) = match &result {
        Ok((o, sources, usage)) => (sources.clone(), Some(*usage), o.failed.is_empty(), None),
        Err(e) => (
            job.volumes
                .iter()
                .map(|v| (v.clone(), None))
                .collect::<Vec<_>>(),
            None,
            false,
            Some(e.clone()),
        ),
    };
    for (src, ok) in &sources {
        let success = ok.is_some();
        tf.gauge(
            "backup_r2_source_success",
            "1 if the source was backed up by the last run.",
        )
        .sample(
            &[("source", src), ("kind", "volume")],
            f64::from(u8::from(success)),
        );
        if let Some(s) = ok {
            state.source_last_success.insert(src.clone(), now);
            tf.gauge(
                "backup_r2_source_bytes",
                "Size of the source's files in the last backup.",
            )
            .sample(&[("source", src), ("kind", "volume")], s.bytes as f64);
            tf.gauge(
                "backup_r2_source_stored_bytes",
                "Compressed bytes of every object the source's last backup references.",
            )
            .sample(
                &[("source", src), ("kind", "volume")],
                s.stored_bytes as f64,
            );
            tf.gauge(
                "backup_r2_source_objects",
                "Objects the source's last backup references.",
            )
            .sample(
                &[("source", src), ("kind", "volume")],
                s.objects().collect::<BTreeSet<_>>().len() as f64,
            );
        }
        let timings = result.as_ref().ok().and_then(|(o, _, _)| {
            o.timings
                .iter()
                .find(|(name, _)| name == src)
                .map(|(_, t)| t)
        });
        if let Some(t) = timings {
            tf.gauge(
                "backup_r2_source_duration_seconds",
                "Wall time of the source's backup in the last run.",
            )
            .sample(&[("source", src), ("kind", "volume")], t.wall.as_secs_f64());
            for (stage, secs) in t.stages() {
                tf.gauge(
                    "backup_r2_source_stage_seconds",
                    "Time of the source's last backup by stage: read (waiting on the engine's archive stream), hash, compress (zstd and age), upload (sum of the PUTs, which overlap), upload_wait (reading stopped for a free upload slot).",
                )
                .sample(&[("source", src), ("kind", "volume"), ("stage", stage)], secs);
            }
        }
        if let Some(t) = state.source_last_success.get(src) {
            tf.gauge(
                "backup_r2_source_last_success_timestamp_seconds",
                "Last time the source was backed up.",
            )
            .sample(&[("source", src), ("kind", "volume")], *t);
        }
    }
    sources::metrics(
        &mut tf,
        job,
        result.as_ref().ok().map(|(o, _, _)| o.exports.as_slice()),
        &mut state.source_last_success,
        now,
    );
    if run_ok {
        state.last_success = Some(now);
    }
    if let Some(t) = state.last_success {
        tf.gauge(
            "backup_r2_last_success_timestamp_seconds",
            "Last run that backed up every source.",
        )
        .set(t);
    }
    tf.gauge(
        "backup_r2_run_success",
        "1 if the last run backed up every source.",
    )
    .set(f64::from(u8::from(run_ok)));
    if let Some(u) = usage {
        tf.gauge(
            "backup_r2_bucket_usage_bytes",
            "Bytes stored in the backup bucket.",
        )
        .set(u as f64);
    }
    if let Ok((o, _, _)) = &result {
        tf.gauge(
            "backup_r2_objects_uploaded",
            "Objects the last run uploaded (0: everything was already there).",
        )
        .set(o.uploaded_objects as f64);
        tf.gauge(
            "backup_r2_uploaded_bytes",
            "Compressed bytes the last run uploaded.",
        )
        .set(o.uploaded_bytes as f64);
        tf.gauge(
            "backup_r2_retention_dropped_days",
            "Complete days the last run's retention deleted.",
        )
        .set(o.pruned.dropped_days.len() as f64);
        tf.gauge(
            "backup_r2_retention_deleted_objects",
            "Objects the last run's retention deleted.",
        )
        .set(o.pruned.deleted_objects as f64);
        tf.gauge(
            "backup_r2_retention_refused_deletes",
            "Deletes the bucket lock refused in the last run (each key reported once).",
        )
        .set(o.pruned.refused as f64);
    }
    save_state(&ctx.state_dir, name, &state)?;
    if let Some(file) = &job.textfile {
        tf.write(ctx.textfile_dir()?, file)?;
    }
    let drill_error = match (drilled, guard) {
        (Some(Err(e)), _) => Some(format!("restore drill: {e}")),
        (_, Some(Err(e))) => Some(format!("bucket lock: {e}")),
        (_, Some(Ok(g))) if !g.lock_enabled => {
            Some("bucket lock: no enabled lock rule after ensuring it".to_string())
        }
        _ => None,
    };
    match (result, error) {
        (Ok((o, _, _)), _) if o.failed.is_empty() && drill_error.is_some() => {
            let msg = drill_error.unwrap_or_default();
            ping(ctx, dead_man.as_deref(), "/fail", &rid, msg.clone()).await;
            Err(JobError::Failed(msg))
        }
        (Ok((o, _, _)), _) if o.failed.is_empty() => {
            info!(date = %o.date, uploaded = o.uploaded_objects, reused = o.reused_objects, "backup complete");
            ping(
                ctx,
                dead_man.as_deref(),
                "",
                &rid,
                format!("backup {} complete", o.date),
            )
            .await;
            Ok(())
        }
        (Ok((o, _, _)), _) => {
            let msg = format!("backup {}: failed: {}", o.date, o.failed.join("; "));
            ping(ctx, dead_man.as_deref(), "/fail", &rid, msg.clone()).await;
            Err(JobError::Partial(msg))
        }
        (Err(_), Some(e)) | (Err(e), None) => {
            ping(ctx, dead_man.as_deref(), "/fail", &rid, e.clone()).await;
            Err(JobError::Failed(e))
        }
    }
}

type DayResult = (Outcome, Vec<(String, Option<Source>)>, u64);

async fn backup_day<D: Docker + Clone>(
    ctx: &JobContext,
    job: &BackupJob,
    docker: &D,
    cancel: &CancellationToken,
    started: DateTime<Utc>,
    refused: &mut BTreeMap<String, String>,
) -> Result<DayResult, String> {
    let s3 = Arc::new(open_bucket(ctx.http.clone(), job, &ctx.env)?);
    let date = started.format("%Y-%m-%d").to_string();
    let mut outcome = Outcome {
        date: date.clone(),
        ..Outcome::default()
    };
    let days = complete_days(&s3).await?;
    if days.contains(&date) {
        // Same-day re-run: the day is complete, nothing is uploaded.
        let m = load_manifest(&s3, &date).await?;
        outcome.already_complete = true;
        let mut sources: Vec<(String, Option<Source>)> = Vec::new();
        for v in &job.volumes {
            let s = m
                .sources
                .iter()
                .find(|s| s.kind == "volume" && &s.name == v)
                .cloned();
            if s.is_none() {
                outcome
                    .failed
                    .push(format!("{v}: not in the day's manifest"));
            }
            sources.push((v.clone(), s));
        }
        outcome.exports = sources::reports_from(job, &m.exports, &m.failed);
        outcome.failed.extend(
            outcome
                .exports
                .iter()
                .filter_map(|r| r.result.as_ref().err().map(|e| format!("{}: {e}", r.name))),
        );
        outcome.pruned = prune(&s3, job, started, refused).await?;
        let usage = outcome.pruned.usage;
        return Ok((outcome, sources, usage));
    }
    let existing = s3.list("objects/").await.map_err(|e| e.to_string())?;
    // Reuse only what stays locked for at least one more day.
    let reuse_window = i64::from(job.lock_retention_days.saturating_sub(1));
    let recipient = job
        .age_recipient
        .as_deref()
        .map(|r| {
            r.parse::<age::x25519::Recipient>()
                .map_err(|e| format!("spec.backup.ageRecipient: {e}"))
        })
        .transpose()?;
    let store = Arc::new(
        Store::new(
            s3.clone(),
            tokio::runtime::Handle::current(),
            &existing,
            started,
            started - ChronoDuration::days(reuse_window.max(1)),
            cancel.clone(),
        )
        .with_recipient(recipient),
    );
    let mut sources = Vec::new();
    let mut failed = Vec::new();
    for v in &job.volumes {
        if cancel.is_cancelled() {
            return Err("cancelled".into());
        }
        let q = job.quiesce.get(v).copied().unwrap_or_default();
        let t0 = ctx.clock.now();
        let wall = std::time::Instant::now();
        let r = match docker_volume(docker, v).await {
            Ok(dv) => backup_volume(docker, store.clone(), &dv, q)
                .await
                .map(|mut s| {
                    s.name = v.clone();
                    s.docker_name = dv;
                    s
                }),
            Err(e) => Err(e),
        };
        let mut t = store.take_timings();
        t.wall = wall.elapsed();
        match r {
            Ok(mut s) => {
                s.quiesce = q.as_str().into();
                s.started_at = t0;
                s.finished_at = ctx.clock.now();
                let [read, hash, compress, upload, upload_wait] = t.stages().map(|(_, x)| x);
                info!(
                    volume = %v,
                    bytes = s.bytes,
                    stored = s.stored_bytes,
                    seconds = t.wall.as_secs_f64(),
                    read,
                    hash,
                    compress,
                    upload,
                    upload_wait,
                    "volume backed up"
                );
                outcome.timings.push((v.clone(), t));
                sources.push((v.clone(), Some(s)));
            }
            Err(e) => {
                warn!(volume = %v, error = %e, "volume backup failed");
                outcome.failed.push(format!("{v}: {e}"));
                failed.push(FailedSource {
                    kind: "volume".into(),
                    name: v.clone(),
                    error: e,
                });
                sources.push((v.clone(), None));
            }
        }
    }
    let ran = sources::run_all(ctx, job, store.clone(), &date, cancel).await;
    for (kind, name, e) in &ran.failed {
        outcome.failed.push(format!("{name}: {e}"));
        failed.push(FailedSource {
            kind: kind.clone(),
            name: name.clone(),
            error: e.clone(),
        });
    }
    outcome.exports = sources::reports(&ran.exports, &ran.failed);
    let manifest = Manifest {
        format: manifest::FORMAT,
        date: date.clone(),
        obsd_version: env!("CARGO_PKG_VERSION").into(),
        started_at: started,
        finished_at: ctx.clock.now(),
        encrypted: job.age_recipient.is_some(),
        sources: sources.iter().filter_map(|(_, s)| s.clone()).collect(),
        failed,
        exports: ran.exports,
    };
    if !manifest.sources.is_empty() || !manifest.exports.is_empty() {
        let body = serde_json::to_vec_pretty(&manifest).expect("plain data serialises");
        s3.put_once(&manifest_key(&date), body.into())
            .await
            .map_err(|e| e.to_string())?;
    }
    let st = store.stats();
    outcome.uploaded_objects = st.uploaded_objects + ran.uploaded_objects;
    outcome.uploaded_bytes = st.uploaded_bytes + ran.uploaded_bytes;
    outcome.reused_objects = st.reused_objects;
    outcome.pruned = prune(&s3, job, started, refused).await?;
    let usage = outcome.pruned.usage;
    Ok((outcome, sources, usage))
}

async fn prune(
    s3: &S3,
    job: &BackupJob,
    now: DateTime<Utc>,
    refused: &mut BTreeMap<String, String>,
) -> Result<retention::Pruned, String> {
    retention::prune(
        s3,
        job.keep_daily,
        job.lock_retention_days,
        job.max_bucket_gb * 1e9,
        now,
        refused,
    )
    .await
}

/// Reads one Docker volume into the store: the helper container, quiesce, the
/// archive stream, cleanup.
async fn backup_volume<D: Docker + Clone>(
    docker: &D,
    store: Arc<Store>,
    docker_vol: &str,
    q: Quiesce,
) -> Result<Source, String> {
    let all = docker
        .containers_using_volume(docker_vol)
        .await
        .map_err(|e| format!("listing containers: {e}"))?;
    let (helpers, users): (Vec<ContainerInfo>, Vec<ContainerInfo>) = all
        .into_iter()
        .partition(|c| c.label(HELPER_LABEL).is_some());
    for h in helpers {
        // Left by an interrupted run.
        let _ = docker.remove_container(&h.id).await;
    }
    let image = users
        .iter()
        .map(|c| c.image_id.clone())
        .find(|i| !i.is_empty())
        .ok_or_else(|| {
            "no container mounts it, so there is no local image to read it with (obsd pulls nothing for a backup)".to_string()
        })?;
    let helper = docker
        .create_container(&helper_container(
            "backup",
            format!("obsd-backup-{docker_vol}"),
            image,
            docker_vol.to_string(),
            true,
        ))
        .await
        .map_err(|e| format!("creating the helper container: {e}"))?;
    let result = async {
        let guard = Quiesced::apply(docker, &users, q).await;
        let guard = match guard {
            Ok(g) => g,
            Err(e) => return Err(e),
        };
        let reader = archive_reader(docker, &helper);
        let st = store.clone();
        let read = tokio::task::spawn_blocking(move || volume::read_volume(reader, &st))
            .await
            .map_err(|e| format!("reader task: {e}"))
            .and_then(|r| r);
        let released = guard.release().await;
        let src = read?;
        released?;
        Ok(src)
    }
    .await;
    let _ = docker.remove_container(&helper).await;
    result
}

/// A helper container that is created and never started (`/never-started` need not
/// exist): the engine reads and writes its mounts through the archive endpoints, so the
/// image needs no shell or tar, and nothing runs beside the service. Labelled
/// [`HELPER_LABEL`] (never the stack label), so the planner ignores it and the next run
/// removes one an interrupted run left behind.
fn helper_container(
    purpose: &str,
    name: String,
    image: impl Into<String>,
    volume_name: impl Into<String>,
    read_only: bool,
) -> CreateContainer {
    let mut labels = BTreeMap::new();
    labels.insert(HELPER_LABEL.to_string(), purpose.to_string());
    CreateContainer {
        name,
        image: image.into(),
        cmd: Some(vec!["/never-started".into()]),
        labels,
        mounts: vec![Mount {
            kind: "volume",
            source: volume_name.into(),
            target: format!("/{}", volume::ROOT),
            read_only,
            propagation: None,
        }],
        restart: "no".into(),
        ..CreateContainer::default()
    }
}

type ArchiveStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static>,
>;

/// Bytes of the archive stream read ahead of the tar reader: [`PUMP_DEPTH`] buffers of
/// up to [`PUMP_BUF`] bytes.
const PUMP_BUF: usize = 256 << 10;
const PUMP_DEPTH: usize = 4;

/// The volume under a helper container as a blocking tar reader (for the
/// `spawn_blocking` readers of [`volume`]). A task on the runtime keeps reading the
/// engine's stream into a few buffers while the reader hashes and compresses, so the
/// engine is never left waiting on obsd's CPU work.
fn archive_reader<D: Docker>(docker: &D, helper: &str) -> ArchiveReader {
    let mut stream: ArchiveStream = Box::pin(
        docker
            .download_archive(helper, &format!("/{}", volume::ROOT))
            .map_err(|e| std::io::Error::other(e.to_string())),
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(PUMP_DEPTH);
    tokio::spawn(async move {
        let mut buf = bytes::BytesMut::new();
        loop {
            match stream.try_next().await {
                Ok(Some(b)) => {
                    if buf.is_empty() && b.len() >= PUMP_BUF {
                        if tx.send(Ok(b)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    buf.extend_from_slice(&b);
                    if buf.len() >= PUMP_BUF && tx.send(Ok(buf.split().freeze())).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    if !buf.is_empty() {
                        let _ = tx.send(Ok(buf.split().freeze())).await;
                    }
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    ArchiveReader {
        rx,
        cur: bytes::Bytes::new(),
        done: false,
    }
}

/// The blocking end of [`archive_reader`].
struct ArchiveReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    cur: bytes::Bytes,
    done: bool,
}

impl std::io::Read for ArchiveReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => self.done = true,
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur[..n]);
        bytes::Buf::advance(&mut self.cur, n);
        Ok(n)
    }
}
