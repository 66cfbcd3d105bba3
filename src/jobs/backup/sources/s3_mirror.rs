//! S3 mirror: the objects of a source bucket (read-only key) copied into
//! `mirror/<key>@<etag>` of the backup bucket, write-once.
//!
//! Incremental by key, size and ETag: an object whose `mirror/<key>@<etag>` copy exists
//! with the same size is not read again, so a run moves only what changed; a changed
//! object gets a new copy next to the old one (nothing is overwritten) and a deletion at
//! the source deletes nothing (retention never touches `mirror/`). Each copied object is
//! held in memory once (GET, then PUT `If-None-Match: *`), one object at a time; with
//! `ageRecipient` the copy is age-encrypted (not compressed: images are).

use super::{secret, Document, Export};
use crate::desired::model::backup_sources::S3Mirror;
use crate::jobs::backup::s3::{Put, S3};
use crate::jobs::backup::{complete_days, load_manifest};
use crate::jobs::JobContext;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;

pub const PREFIX: &str = "mirror/";

/// The copy's key of a source object.
pub fn mirror_key(key: &str, etag: &str) -> String {
    format!("{PREFIX}{key}@{etag}")
}

/// Copies what changed; `(export, objects copied, bytes copied)`.
pub async fn mirror(
    ctx: &JobContext,
    c: &S3Mirror,
    dest: &S3,
    today: &str,
    recipient: Option<&age::x25519::Recipient>,
    cancel: &CancellationToken,
) -> Result<(Export, u64, u64), String> {
    let started = ctx.clock.now();
    let src = S3::new(
        ctx.http.clone(),
        &c.endpoint,
        &c.bucket,
        &c.region,
        secret(ctx, &c.access_key_id_env)?,
        secret(ctx, &c.secret_access_key_env)?,
    )?;
    let listed = src
        .list(&c.prefix)
        .await
        .map_err(|e| format!("source bucket: {e}"))?;
    let have: BTreeMap<String, u64> = dest
        .list(PREFIX)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    // Content hashes of copies made on earlier days (the newest complete day before
    // today records them).
    let mut known: BTreeMap<String, String> = BTreeMap::new();
    if let Some(prev) = complete_days(dest)
        .await?
        .into_iter()
        .rfind(|d| d.as_str() < today)
    {
        let m = load_manifest(dest, &prev).await?;
        for e in m.exports.iter().filter(|e| e.kind == "s3-mirror") {
            for d in &e.documents {
                known.insert(d.object.clone(), d.sha256.clone());
            }
        }
    }
    let (mut copied, mut copied_bytes, mut total) = (0u64, 0u64, 0u64);
    let mut docs = Vec::new();
    let mut list = Sha256::new();
    for o in listed.iter().filter(|o| !o.key.ends_with('/')) {
        if cancel.is_cancelled() {
            return Err("cancelled".into());
        }
        let etag = o
            .etag
            .as_deref()
            .filter(|e| !e.is_empty())
            .ok_or_else(|| format!("source object {} has no ETag in the listing", o.key))?;
        let to = mirror_key(&o.key, etag);
        // Encrypted copies are larger than the source: their size is not compared.
        let present = have
            .get(&to)
            .is_some_and(|s| recipient.is_some() || *s == o.size);
        let sha = if present {
            known.get(&to).cloned().unwrap_or_default()
        } else {
            let body = src
                .get(&o.key)
                .await
                .map_err(|e| format!("source bucket: {e}"))?
                .ok_or_else(|| format!("source object {} vanished", o.key))?;
            if body.len() as u64 != o.size {
                return Err(format!(
                    "source object {}: listed {} bytes, read {}",
                    o.key,
                    o.size,
                    body.len()
                ));
            }
            let sha = hex::encode(Sha256::digest(&body));
            let body = match recipient {
                Some(r) => age::encrypt(r, &body)
                    .map_err(|e| format!("encrypting {to}: {e}"))?
                    .into(),
                None => body,
            };
            let n = body.len() as u64;
            match dest.put_once(&to, body).await.map_err(|e| e.to_string())? {
                Put::Created => {
                    copied += 1;
                    copied_bytes += n;
                }
                Put::AlreadyThere => {}
            }
            sha
        };
        total += o.size;
        list.update(format!("{}\0{}\0{etag}\n", o.key, o.size).as_bytes());
        docs.push(Document {
            path: o.key.clone(),
            size: o.size,
            sha256: sha,
            object: to,
        });
    }
    Ok((
        Export::of_copies("s3-mirror", started, ctx.clock.now(), total, list, docs),
        copied,
        copied_bytes,
    ))
}
