//! Retention: keep `keepDaily` complete days, then drop the oldest while the bucket is
//! over `maxBucketGb`; never the newest complete day, never a day (or an object) inside
//! `lockRetentionDays`. A dropped day loses its manifest first (so it is incomplete, never
//! listed or restored, from that moment), then every object no kept day references.

use super::manifest::{date_of_manifest_key, Manifest};
use super::s3::S3;
use super::store::upload_day;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use std::collections::{BTreeMap, BTreeSet};
use tracing::warn;

/// What one pass did.
#[derive(Debug, Default, Clone)]
pub struct Pruned {
    pub dropped_days: Vec<String>,
    pub deleted_objects: u64,
    pub deleted_bytes: u64,
    /// Deletes the bucket lock refused this run (each reported once).
    pub refused: u64,
    /// Bucket bytes after the pass.
    pub usage: u64,
}

/// `refused`: keys whose delete the lock refused, with the day of the refusal; a key is
/// not tried again until `lock_days` after that (then the lock may have expired).
pub async fn prune(
    s3: &S3,
    keep_daily: u32,
    lock_days: u32,
    max_bytes: f64,
    now: DateTime<Utc>,
    refused: &mut BTreeMap<String, String>,
) -> Result<Pruned, String> {
    let all = s3.list("").await.map_err(|e| e.to_string())?;
    let today = now.date_naive();
    let lock_cut = today - Duration::days(i64::from(lock_days));
    let mut days: Vec<String> = all
        .iter()
        .filter_map(|o| date_of_manifest_key(&o.key).map(str::to_string))
        .collect();
    days.sort();
    let mut manifests: BTreeMap<String, Manifest> = BTreeMap::new();
    for d in &days {
        let raw = s3
            .get(&super::manifest::manifest_key(d))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("manifest of {d} vanished"))?;
        let m: Manifest =
            serde_json::from_slice(&raw).map_err(|e| format!("manifest of {d}: {e}"))?;
        manifests.insert(d.clone(), m);
    }
    let size: BTreeMap<&str, u64> = all.iter().map(|o| (o.key.as_str(), o.size)).collect();
    let in_lock = |d: &str| NaiveDate::parse_from_str(d, "%Y-%m-%d").map_or(true, |d| d > lock_cut);
    let mut kept: Vec<String> = days.clone();
    // By count.
    while kept.len() > keep_daily as usize && kept.len() > 1 && !in_lock(&kept[0]) {
        kept.remove(0);
    }
    // By size: the bytes that would remain with these days kept.
    let usage_with = |kept: &[String]| -> u64 {
        let refs: BTreeSet<&str> = kept
            .iter()
            .flat_map(|d| manifests[d].objects().map(String::as_str))
            .collect();
        all.iter()
            .filter(|o| match date_of_manifest_key(&o.key) {
                Some(d) => kept.iter().any(|k| k == d),
                None => {
                    !(o.key.starts_with("objects/")
                        && !refs.contains(o.key.as_str())
                        && old_enough(&o.key, lock_cut))
                }
            })
            .map(|o| o.size)
            .sum()
    };
    while kept.len() > 1 && !in_lock(&kept[0]) && (usage_with(&kept) as f64) > max_bytes {
        kept.remove(0);
    }
    let kept_set: BTreeSet<&String> = kept.iter().collect();
    let referenced: BTreeSet<&str> = kept
        .iter()
        .flat_map(|d| manifests[d].objects().map(String::as_str))
        .collect();
    let mut out = Pruned::default();
    let today_s = today.format("%Y-%m-%d").to_string();
    let mut plan: Vec<String> = Vec::new();
    for d in days.iter().filter(|d| !kept_set.contains(d)) {
        out.dropped_days.push(d.clone());
        // The manifest first: from here on the day is incomplete.
        plan.push(super::manifest::manifest_key(d));
    }
    for o in &all {
        if o.key.starts_with("objects/")
            && !referenced.contains(o.key.as_str())
            && old_enough(&o.key, lock_cut)
        {
            plan.push(o.key.clone());
        }
    }
    for key in plan {
        // Refused before, within the lock window: the lock still holds it.
        let skip = refused
            .get(&key)
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            .is_some_and(|d| d > lock_cut);
        if skip {
            continue;
        }
        match s3.delete(&key).await {
            Ok(()) => {
                out.deleted_objects += 1;
                out.deleted_bytes += size.get(key.as_str()).copied().unwrap_or(0);
                refused.remove(&key);
            }
            Err(e) if e.status == Some(403) => {
                warn!(key = %key, code = e.code.as_deref().unwrap_or(""), "delete refused by the bucket lock; not retried before the lock can have expired");
                out.refused += 1;
                refused.insert(key, today_s.clone());
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    // Forget refusals of keys that no longer exist.
    let present: BTreeSet<&str> = all.iter().map(|o| o.key.as_str()).collect();
    refused.retain(|k, _| present.contains(k.as_str()));
    out.usage = s3
        .list("")
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|o| o.size)
        .sum();
    Ok(out)
}

/// Uploaded on or before the last day outside the lock window.
fn old_enough(key: &str, lock_cut: NaiveDate) -> bool {
    upload_day(key).is_some_and(|t| t.date_naive() <= lock_cut)
}
