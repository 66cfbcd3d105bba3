//! Content-addressed, write-once objects: `objects/<sha256>-<YYYYMMDD>`, each the zstd
//! of one plain segment (at most [`SEGMENT`] bytes), named by the SHA-256 of the plain
//! content and the UTC day of its upload.
//!
//! Called from the blocking thread that reads a tar stream, which hashes and compresses
//! each object and hands it to one of [`PUT_SLOTS`] upload tasks on the runtime: the
//! read of the next segment overlaps the PUTs of the previous ones. A slot is taken
//! before the object is handed over and freed when its PUT has finished, so memory is the
//! segment being filled plus at most [`PUT_SLOTS`] compressed objects. [`Store::flush`]
//! waits for every PUT handed over and reports the first that failed; a source is
//! complete (and may enter the manifest) only after it.

use super::manifest::sha_of_object_key;
use super::s3::{Put, S3};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Plain bytes per object (large-file chunk or archive segment).
pub const SEGMENT: usize = 8 << 20;
/// Files above this size are stored as their own content-addressed chunks (shared by
/// every day that contains them); smaller ones go into the day's archive.
pub const LARGE_FILE: u64 = 4 << 20;
/// zstd level (the floor in `bench/backup.sh` uses `zstd -3` too).
pub const ZSTD_LEVEL: i32 = 3;
/// Objects between the reader and the bucket: each is compressed on a blocking thread
/// (one at a time) and PUT; a slot is held from hand-over until the PUT has finished.
/// Memory: at most this many plain segments waiting or compressed objects in flight,
/// plus the one compression's output.
pub const PUT_SLOTS: usize = 2;

/// Where one source's time went. `read`, `hash`, `compress` and `slot_wait` are spent on
/// the reading thread one after another; `upload` is the sum of every PUT's duration
/// (several run at once, so it can exceed the wall time); `slot_wait` is the reader
/// waiting for a free upload slot, i.e. the part of the uploads that did not overlap.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// The source's whole backup (helper container, quiesce, read, last PUT).
    pub wall: Duration,
    /// Waiting on the input stream (the engine's archive endpoint for a volume).
    pub read: Duration,
    /// SHA-256 of files and objects.
    pub hash: Duration,
    /// zstd, and age when the job encrypts.
    pub compress: Duration,
    /// Sum of the PUTs' durations (waiting on the server).
    pub upload: Duration,
    /// The reader blocked because every upload slot was busy.
    pub slot_wait: Duration,
}

impl Timings {
    /// `(stage, seconds)` in a fixed order, for logs and metrics.
    pub fn stages(&self) -> [(&'static str, f64); 5] {
        [
            ("read", self.read.as_secs_f64()),
            ("hash", self.hash.as_secs_f64()),
            ("compress", self.compress.as_secs_f64()),
            ("upload", self.upload.as_secs_f64()),
            ("upload_wait", self.slot_wait.as_secs_f64()),
        ]
    }
}

/// Nanosecond counters behind [`Timings`] (added to from several threads).
#[derive(Default)]
struct Clocks {
    read: AtomicU64,
    hash: AtomicU64,
    compress: AtomicU64,
    upload: AtomicU64,
    slot_wait: AtomicU64,
}

fn add(c: &AtomicU64, d: Duration) {
    c.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
}

fn take(c: &AtomicU64) -> Duration {
    Duration::from_nanos(c.swap(0, Ordering::Relaxed))
}

#[derive(Debug, Clone)]
struct Known {
    key: String,
    /// Stored (compressed) size; set by the upload task for an object of this run.
    size: Arc<AtomicU64>,
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
    known: Arc<Mutex<HashMap<String, Known>>>,
    /// Objects uploaded on or before this day are not reused (lock window).
    reuse_after: DateTime<Utc>,
    /// `YYYYMMDD` of this run.
    day: String,
    today: DateTime<Utc>,
    stats: Arc<Mutex<Stats>>,
    cancel: tokio_util::sync::CancellationToken,
    /// Objects are age-encrypted to it after compression.
    recipient: Option<Arc<age::x25519::Recipient>>,
    slots: Arc<Semaphore>,
    /// One compression at a time (its output is the only extra copy in memory).
    compressing: Arc<Semaphore>,
    /// The stored size of every object referenced since the last flush.
    window: Mutex<Vec<Arc<AtomicU64>>>,
    /// PUTs handed over since the last [`Store::flush`].
    pending: Mutex<Vec<JoinHandle<()>>>,
    /// The first PUT that failed since the last [`Store::flush`].
    failed: Arc<Mutex<Option<String>>>,
    clocks: Arc<Clocks>,
}

/// Segment-sized buffers are allocated and freed on several threads (the reader,
/// compression, uploads, a restore's fetches). glibc raises its mmap threshold after the
/// first such buffer is freed and from then on keeps freed buffers in per-thread arenas,
/// so a run's RSS grew with the number of threads that had touched one. A fixed
/// threshold makes every allocation from 1 MiB up a mapping of its own, returned to the
/// kernel when freed: RSS follows what is live. Process-wide, set once.
pub fn return_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: `mallopt` only tunes the allocator and takes its own locks.
        ONCE.call_once(|| unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        });
    }
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
        return_freed_buffers();
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
                size: Arc::new(AtomicU64::new(o.size)),
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
            known: Arc::new(Mutex::new(known)),
            reuse_after,
            day: now.format("%Y%m%d").to_string(),
            today: start_of_day(now),
            stats: Arc::new(Mutex::new(Stats::default())),
            cancel,
            recipient: None,
            slots: Arc::new(Semaphore::new(PUT_SLOTS)),
            compressing: Arc::new(Semaphore::new(1)),
            window: Mutex::new(Vec::new()),
            pending: Mutex::new(Vec::new()),
            failed: Arc::new(Mutex::new(None)),
            clocks: Arc::new(Clocks::default()),
        }
    }

    /// Encrypt every object stored from now on to `r`.
    pub fn with_recipient(mut self, r: Option<age::x25519::Recipient>) -> Store {
        self.recipient = r.map(Arc::new);
        self
    }

    pub fn stats(&self) -> Stats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds time spent waiting on the input stream (see [`Timings::read`]).
    pub fn note_read(&self, d: Duration) {
        add(&self.clocks.read, d);
    }

    /// Adds time spent hashing outside [`Store::put`] (the files' own SHA-256).
    pub fn note_hash(&self, d: Duration) {
        add(&self.clocks.hash, d);
    }

    /// The time split since the last call (one source's), and resets it.
    pub fn take_timings(&self) -> Timings {
        let c = &self.clocks;
        Timings {
            wall: Duration::ZERO,
            read: take(&c.read),
            hash: take(&c.hash),
            compress: take(&c.compress),
            upload: take(&c.upload),
            slot_wait: take(&c.slot_wait),
        }
    }

    /// Stores `plain` (or finds it stored recently enough); returns its key. Hashing is
    /// done here; compression and the PUT run behind (the reader goes on), so the object
    /// counts as stored, and its size is known, only after [`Store::flush`] returned.
    /// Blocks while every upload slot is busy; fails at once when a PUT since the last
    /// flush failed.
    pub fn put(&self, plain: Vec<u8>) -> Result<String, String> {
        if self.cancel.is_cancelled() {
            return Err("cancelled".into());
        }
        self.check_failed()?;
        let t = Instant::now();
        let sha = hex::encode(Sha256::digest(&plain));
        add(&self.clocks.hash, t.elapsed());
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
                self.window
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(k.size.clone());
                return Ok(k.key.clone());
            }
        }
        let key = format!("objects/{sha}-{}", self.day);
        let t = Instant::now();
        let slot = self
            .rt
            .block_on(self.slots.clone().acquire_owned())
            .map_err(|_| "the upload slots are closed".to_string())?;
        add(&self.clocks.slot_wait, t.elapsed());
        self.check_failed()?;
        // Known from now on, so a repeat within the run is not uploaded twice; removed
        // again if the PUT fails (the flush that reports it fails the source).
        let size = Arc::new(AtomicU64::new(0));
        self.known.lock().unwrap_or_else(|e| e.into_inner()).insert(
            sha.clone(),
            Known {
                key: key.clone(),
                size: size.clone(),
                at: self.today,
            },
        );
        self.window
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(size.clone());
        let (s3, stats, failed, clocks, known) = (
            self.s3.clone(),
            self.stats.clone(),
            self.failed.clone(),
            self.clocks.clone(),
            self.known.clone(),
        );
        let (compressing, recipient, k) = (
            self.compressing.clone(),
            self.recipient.clone(),
            key.clone(),
        );
        let task = self.rt.spawn(async move {
            let r = async {
                let turn = compressing
                    .acquire_owned()
                    .await
                    .map_err(|_| "the compression slot is closed".to_string())?;
                let (c, k2) = (clocks.clone(), k.clone());
                let packed = tokio::task::spawn_blocking(move || {
                    let t = Instant::now();
                    let r = pack(plain, recipient.as_deref(), &k2);
                    add(&c.compress, t.elapsed());
                    drop(turn);
                    r
                })
                .await
                .map_err(|e| format!("compression task: {e}"))??;
                let n = packed.len() as u64;
                let t = Instant::now();
                let put = s3.put_once(&k, bytes::Bytes::from(packed)).await;
                add(&clocks.upload, t.elapsed());
                let put = put.map_err(|e| e.to_string())?;
                size.store(n, Ordering::Relaxed);
                let mut st = stats.lock().unwrap_or_else(|e| e.into_inner());
                match put {
                    Put::Created => {
                        st.uploaded_objects += 1;
                        st.uploaded_bytes += n;
                    }
                    // Uploaded by an earlier (interrupted) run of the same day: same
                    // name, same content.
                    Put::AlreadyThere => st.reused_objects += 1,
                }
                Ok::<(), String>(())
            }
            .await;
            if let Err(e) = r {
                let mut kn = known.lock().unwrap_or_else(|e| e.into_inner());
                if kn.get(&sha).is_some_and(|x| x.key == k) {
                    kn.remove(&sha);
                }
                drop(kn);
                failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(e);
            }
            // Freed only now, so a reader waiting for this slot sees a failure.
            drop(slot);
        });
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
        Ok(key)
    }

    fn check_failed(&self) -> Result<(), String> {
        match self
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Waits for every PUT handed over since the last flush (blocking: call it from the
    /// thread that called [`Store::put`]). Returns the stored (compressed) bytes of every
    /// object referenced since the last flush, or the first failure; starts a new window
    /// either way.
    pub fn flush(&self) -> Result<u64, String> {
        let tasks = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let mut panicked = None;
        for t in tasks {
            if let Err(e) = self.rt.block_on(t) {
                panicked.get_or_insert(format!("upload task: {e}"));
            }
        }
        let window = std::mem::take(&mut *self.window.lock().unwrap_or_else(|e| e.into_inner()));
        let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner()).take();
        match failed.or(panicked) {
            Some(e) => Err(e),
            None => Ok(window.iter().map(|s| s.load(Ordering::Relaxed)).sum()),
        }
    }
}

/// zstd, then age when there is a recipient.
fn pack(
    plain: Vec<u8>,
    recipient: Option<&age::x25519::Recipient>,
    key: &str,
) -> Result<Vec<u8>, String> {
    let mut packed =
        zstd::bulk::compress(&plain, ZSTD_LEVEL).map_err(|e| format!("compressing {key}: {e}"))?;
    drop(plain);
    if let Some(r) = recipient {
        packed = age::encrypt(r, &packed).map_err(|e| format!("encrypting {key}: {e}"))?;
    }
    packed.shrink_to_fit();
    Ok(packed)
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
/// its name (on a blocking thread). Nothing from an object is used before this check
/// passes.
pub async fn fetch(
    s3: &S3,
    key: &str,
    identity: Option<&age::x25519::Identity>,
) -> Result<Vec<u8>, String> {
    let Some(sha) = sha_of_object_key(key) else {
        return Err(format!("`{key}` is not an object key"));
    };
    let raw = s3
        .get(key)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("object {key} is missing from the bucket"))?;
    let (key, sha, identity) = (key.to_string(), sha.to_string(), identity.cloned());
    tokio::task::spawn_blocking(move || decode(&key, &sha, raw, identity.as_ref()))
        .await
        .map_err(|e| format!("decoding task: {e}"))?
}

fn decode(
    key: &str,
    sha: &str,
    raw: bytes::Bytes,
    identity: Option<&age::x25519::Identity>,
) -> Result<Vec<u8>, String> {
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
    drop(raw);
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
