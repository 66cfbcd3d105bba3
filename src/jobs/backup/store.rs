//! Content-addressed, write-once objects: `objects/<sha256>-<YYYYMMDD>`, each the zstd
//! of one plain segment (at most [`SEGMENT`] bytes), named by the SHA-256 of the plain
//! content and the UTC day of its upload.
//!
//! Called from the blocking thread that reads a tar stream: every S3 call is
//! `block_on` on the runtime handle, so memory is one segment plus its compressed copy.

use super::manifest::sha_of_object_key;
use super::s3::{Put, S3};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::runtime::Handle;

/// Plain bytes per object (large-file chunk or archive segment).
pub const SEGMENT: usize = 8 << 20;
/// Files above this size are stored as their own content-addressed chunks (shared by
/// every day that contains them); smaller ones go into the day's archive.
pub const LARGE_FILE: u64 = 4 << 20;
/// zstd level (the floor in `bench/backup.sh` uses `zstd -3` too).
pub const ZSTD_LEVEL: i32 = 3;

#[derive(Debug, Clone)]
struct Known {
    key: String,
    size: u64,
    at: DateTime<Utc>,
}

/// Upload counters of one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub uploaded_objects: u64,
    pub uploaded_bytes: u64,
    pub reused_objects: u64,
}

pub struct Store {
    pub s3: Arc<S3>,
    rt: Handle,
    known: Mutex<HashMap<String, Known>>,
    /// Objects uploaded on or before this day are not reused (lock window).
    reuse_after: DateTime<Utc>,
    /// `YYYYMMDD` of this run.
    day: String,
    today: DateTime<Utc>,
    stats: Mutex<Stats>,
    cancel: tokio_util::sync::CancellationToken,
    /// Objects are age-encrypted to it after compression.
    recipient: Option<age::x25519::Recipient>,
}

impl Store {
    /// `existing`: the listing of `objects/`; `reuse_after`: objects older than this are
    /// stored afresh.
    pub fn new(
        s3: Arc<S3>,
        rt: Handle,
        existing: &[super::s3::ObjectMeta],
        now: DateTime<Utc>,
        reuse_after: DateTime<Utc>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Store {
        let mut known: HashMap<String, Known> = HashMap::new();
        for o in existing {
            let Some(sha) = sha_of_object_key(&o.key) else {
                continue;
            };
            // The upload day is in the name: the key is only ever written on that day.
            let Some(at) = upload_day(&o.key) else {
                continue;
            };
            let k = Known {
                key: o.key.clone(),
                size: o.size,
                at,
            };
            match known.get(sha) {
                Some(old) if old.at >= k.at => {}
                _ => {
                    known.insert(sha.to_string(), k);
                }
            }
        }
        Store {
            s3,
            rt,
            known: Mutex::new(known),
            reuse_after,
            day: now.format("%Y%m%d").to_string(),
            today: start_of_day(now),
            stats: Mutex::new(Stats::default()),
            cancel,
            recipient: None,
        }
    }

    /// Encrypt every object stored from now on to `r`.
    pub fn with_recipient(mut self, r: Option<age::x25519::Recipient>) -> Store {
        self.recipient = r;
        self
    }

    pub fn stats(&self) -> Stats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `plain` (or finds it stored recently enough); returns the key and the
    /// stored (compressed) size.
    pub fn put(&self, plain: &[u8]) -> Result<(String, u64), String> {
        if self.cancel.is_cancelled() {
            return Err("cancelled".into());
        }
        let sha = hex::encode(Sha256::digest(plain));
        if let Some(k) = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&sha)
        {
            if k.at > self.reuse_after {
                self.stats
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .reused_objects += 1;
                return Ok((k.key.clone(), k.size));
            }
        }
        let key = format!("objects/{sha}-{}", self.day);
        let mut packed = zstd::bulk::compress(plain, ZSTD_LEVEL)
            .map_err(|e| format!("compressing {key}: {e}"))?;
        if let Some(r) = &self.recipient {
            packed = age::encrypt(r, &packed).map_err(|e| format!("encrypting {key}: {e}"))?;
        }
        let size = packed.len() as u64;
        let put = self
            .rt
            .block_on(self.s3.put_once(&key, bytes::Bytes::from(packed)))
            .map_err(|e| e.to_string())?;
        {
            let mut st = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            match put {
                Put::Created => {
                    st.uploaded_objects += 1;
                    st.uploaded_bytes += size;
                }
                // Uploaded by an earlier (interrupted) run of the same day: same name,
                // same content.
                Put::AlreadyThere => st.reused_objects += 1,
            }
        }
        self.known.lock().unwrap_or_else(|e| e.into_inner()).insert(
            sha,
            Known {
                key: key.clone(),
                size,
                at: self.today,
            },
        );
        Ok((key, size))
    }
}

const AGE_MAGIC: &[u8] = b"age-encryption.org/v1";

/// Reads the first X25519 identity (`AGE-SECRET-KEY-1…`) of an age identity file.
pub fn parse_identity(text: &str) -> Result<age::x25519::Identity, String> {
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .ok_or("no AGE-SECRET-KEY- line in the identity file")?
        .parse::<age::x25519::Identity>()
        .map_err(|e| format!("invalid age identity: {e}"))
}

/// Downloads an object, decompresses it and checks its content against the SHA-256 in
/// its name. Nothing from an object is used before this check passes.
pub fn fetch(
    s3: &S3,
    rt: &Handle,
    key: &str,
    identity: Option<&age::x25519::Identity>,
) -> Result<Vec<u8>, String> {
    let Some(sha) = sha_of_object_key(key) else {
        return Err(format!("`{key}` is not an object key"));
    };
    let raw = rt
        .block_on(s3.get(key))
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("object {key} is missing from the bucket"))?;
    let encrypted = raw.starts_with(AGE_MAGIC);
    let raw = match (encrypted, identity) {
        (true, Some(id)) => bytes::Bytes::from(
            age::decrypt(id, &raw)
                .map_err(|e| format!("object {key} cannot be decrypted with this identity: {e}"))?,
        ),
        (true, None) => {
            return Err(format!(
                "object {key} is encrypted: the restore needs the age identity (--identity FILE)"
            ))
        }
        (false, _) => raw,
    };
    let plain = zstd::bulk::decompress(&raw, SEGMENT)
        .map_err(|e| format!("object {key} is corrupt (cannot decompress: {e})"))?;
    let got = hex::encode(Sha256::digest(&plain));
    if got != sha {
        return Err(format!(
            "object {key} is corrupt (content SHA-256 {got}, expected {sha})"
        ));
    }
    Ok(plain)
}

fn start_of_day(t: DateTime<Utc>) -> DateTime<Utc> {
    t.date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
}

/// Midnight (UTC) of the day in an object key's name.
pub fn upload_day(key: &str) -> Option<DateTime<Utc>> {
    let day = key.rsplit_once('-')?.1;
    chrono::NaiveDate::parse_from_str(day, "%Y%m%d")
        .ok()?
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
}
