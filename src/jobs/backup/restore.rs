//! Reading a backup back: [`restore_volume`] (verify every object and file first,
//! then write through a created-not-started helper and the engine's archive PUT) and
//! the restore [`drill`] (the newest complete day into scratch volumes, read back and
//! compared with the manifest, the scratch volumes removed whatever happens).

use super::manifest::Source;
use super::s3::S3;
use super::{archive_reader, complete_days, helper_container, load_manifest, volume, HELPER_LABEL};
use crate::docker::Docker;
use std::collections::BTreeMap;
use std::sync::Arc;
use tracing::warn;

/// Restore target for [`restore_volume`].
pub struct RestoreTarget<'a> {
    /// Docker volume to write into; created when missing (an existing one must be
    /// empty unless `overwrite`).
    pub volume: &'a str,
    /// Image for the helper container (any image present locally).
    pub image: &'a str,
    pub labels: BTreeMap<String, String>,
}

/// Checks every object and file of `src` (nothing written), then writes it into the
/// target volume through a created-not-started helper and the engine's archive PUT.
/// Returns the bytes restored.
pub async fn restore_volume<D: Docker + Clone>(
    docker: &D,
    s3: Arc<S3>,
    identity: Option<&age::x25519::Identity>,
    src: &Source,
    target: &RestoreTarget<'_>,
    create_volume: bool,
) -> Result<u64, String> {
    super::store::return_freed_buffers();
    let rt = tokio::runtime::Handle::current();
    let (s3c, srcc, rtc, idc) = (s3.clone(), src.clone(), rt.clone(), identity.cloned());
    tokio::task::spawn_blocking(move || {
        volume::replay::<std::io::Sink>(&s3c, &rtc, idc.as_ref(), &srcc, None)
    })
    .await
    .map_err(|e| format!("verify task: {e}"))??;
    if create_volume {
        docker
            .create_volume(target.volume, None, &target.labels)
            .await
            .map_err(|e| format!("creating volume {}: {e}", target.volume))?;
    }
    let helper = docker
        .create_container(&helper_container(
            "restore",
            format!("obsd-restore-{}", target.volume),
            target.image.to_string(),
            target.volume.to_string(),
            false,
        ))
        .await
        .map_err(|e| format!("creating the restore helper: {e}"))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let (srcc, s3c, idc) = (src.clone(), s3.clone(), identity.cloned());
    let writer = tokio::task::spawn_blocking(move || {
        let mut b = tar::Builder::new(ChannelWriter {
            tx,
            buf: Vec::new(),
        });
        b.mode(tar::HeaderMode::Complete);
        let n = volume::replay(&s3c, &rt, idc.as_ref(), &srcc, Some(&mut b))?;
        let mut w = b
            .into_inner()
            .map_err(|e| format!("finishing the stream: {e}"))?;
        std::io::Write::flush(&mut w).map_err(|e| e.to_string())?;
        Ok::<u64, String>(n)
    });
    let body =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    let up = docker.upload_archive(&helper, "/", body).await;
    let written = writer.await.map_err(|e| format!("writer task: {e}"));
    let _ = docker.remove_container(&helper).await;
    up.map_err(|e| format!("writing into {}: {e}", target.volume))?;
    written?
}

struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
    buf: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 1 << 20 {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let b = bytes::Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(b)
            .map_err(|_| std::io::Error::other("the engine closed the upload"))
    }
}

/// The restore drill: every source of the newest complete day restored into a scratch
/// volume (checked before writing), read back through the engine and compared with the
/// manifest; the scratch volumes are removed whatever happens. Returns the day and the
/// bytes compared.
pub async fn drill<D: Docker + Clone>(docker: &D, s3: Arc<S3>) -> Result<(String, u64), String> {
    let days = complete_days(&s3).await?;
    let day = days.last().ok_or("no complete day in the bucket")?.clone();
    let m = load_manifest(&s3, &day).await?;
    if m.encrypted {
        return Err(format!(
            "{day} is encrypted: the drill needs the age identity, which never lives on the host"
        ));
    }
    let mut total = 0;
    for src in &m.sources {
        let scratch = format!("obsd-drill-{}", src.docker_name);
        let users = docker
            .containers_using_volume(&src.docker_name)
            .await
            .map_err(|e| format!("listing containers: {e}"))?;
        let image = users
            .iter()
            .filter(|c| c.label(HELPER_LABEL).is_none())
            .map(|c| c.image_id.clone())
            .find(|i| !i.is_empty())
            .ok_or_else(|| format!("{}: no local image for the drill's helper", src.name))?;
        // A scratch volume left by a crash (ours: labelled) goes first.
        if let Ok(vols) = docker.list_volumes().await {
            if vols
                .iter()
                .any(|v| v.name == scratch && v.labels.contains_key(HELPER_LABEL))
            {
                remove_scratch(docker, &scratch).await;
            }
        }
        let mut labels = BTreeMap::new();
        labels.insert(HELPER_LABEL.to_string(), "drill".to_string());
        let r = async {
            let n = restore_volume(
                docker,
                s3.clone(),
                None,
                src,
                &RestoreTarget {
                    volume: &scratch,
                    image: &image,
                    labels,
                },
                true,
            )
            .await?;
            let cmp = compare_volume(docker, &scratch, &image, src).await?;
            Ok::<u64, String>(n.max(cmp))
        }
        .await;
        remove_scratch(docker, &scratch).await;
        total += r.map_err(|e| format!("{}: {e}", src.name))?;
    }
    Ok((day, total))
}

async fn remove_scratch<D: Docker>(docker: &D, scratch: &str) {
    if let Ok(cs) = docker.containers_using_volume(scratch).await {
        for c in cs.iter().filter(|c| c.label(HELPER_LABEL).is_some()) {
            let _ = docker.remove_container(&c.id).await;
        }
    }
    if let Err(e) = docker.remove_volume(scratch).await {
        warn!(volume = %scratch, error = %e, "removing the drill's scratch volume");
    }
}

/// Reads a volume back through a created-not-started helper and compares it with `src`.
async fn compare_volume<D: Docker + Clone>(
    docker: &D,
    vol: &str,
    image: &str,
    src: &Source,
) -> Result<u64, String> {
    let helper = docker
        .create_container(&helper_container(
            "drill",
            format!("obsd-drill-read-{vol}"),
            image.to_string(),
            vol.to_string(),
            true,
        ))
        .await
        .map_err(|e| format!("creating the drill's reader: {e}"))?;
    let reader = archive_reader(docker, &helper);
    let srcc = src.clone();
    let r = tokio::task::spawn_blocking(move || volume::compare(reader, &srcc))
        .await
        .map_err(|e| format!("compare task: {e}"))
        .and_then(|r| r);
    let _ = docker.remove_container(&helper).await;
    r
}
