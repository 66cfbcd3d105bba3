//! The state directory: the single-instance lock, the per-host HMAC key, and the small
//! amount of state that must survive a restart (generations, in-place config records,
//! per-resource backoff). Every write is atomic (temp file in the same directory,
//! fsync, rename), so a crash leaves either the old or the new file, never half of one.

use crate::secret::HostKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another obsd already holds {0} (one daemon per state directory)")]
    Locked(PathBuf),
    #[error("state file {path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
}

/// Default state directory when neither a flag, `OBSD_STATE_DIR` nor the Stack says
/// otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/obsd";

/// The state directory, by precedence: an explicit `--state-dir`, a non-empty
/// `OBSD_STATE_DIR`, the Stack's `stateDir`, [`DEFAULT_STATE_DIR`]. The one rule obsd,
/// `obsctl apply/diff` and `obsctl status` share, so they meet in the same directory.
pub fn resolve_dir(explicit: Option<&Path>, stack_state_dir: Option<&str>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    match std::env::var_os("OBSD_STATE_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(stack_state_dir.unwrap_or(DEFAULT_STATE_DIR)),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically with `mode` ([`crate::fsutil::atomic_write`]).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StateError> {
    crate::fsutil::atomic_write(path, bytes, mode).map_err(io(path))
}

/// An exclusive `flock` on `<state>/obsd.lock`, released when dropped (or when the
/// process dies, including by SIGKILL).
pub struct Lock {
    _file: File,
}

impl Lock {
    pub fn acquire(state_dir: &Path) -> Result<Lock, StateError> {
        let path = state_dir.join("obsd.lock");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        // SAFETY: flock on a valid open descriptor owned by `file`.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(StateError::Locked(path));
        }
        let _ = file.set_len(0);
        let _ = (&file).write_all(format!("{}\n", std::process::id()).as_bytes());
        Ok(Lock { _file: file })
    }
}

/// Creates the state directory (0700) if needed.
pub fn ensure_dir(state_dir: &Path) -> Result<(), StateError> {
    std::fs::create_dir_all(state_dir).map_err(io(state_dir))?;
    let meta = std::fs::metadata(state_dir).map_err(io(state_dir))?;
    if meta.permissions().mode() & 0o077 != 0 {
        let _ = std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

/// The host key, if one exists (`obsctl diff` reads it without creating one: with no
/// key on disk nothing was deployed with it).
pub fn read_host_key(state_dir: &Path) -> Result<Option<HostKey>, StateError> {
    let path = state_dir.join("host.key");
    match std::fs::read(&path) {
        Ok(b) => match <[u8; 32]>::try_from(b.as_slice()) {
            Ok(k) => Ok(Some(HostKey(k))),
            Err(_) => Err(StateError::Corrupt {
                path,
                message: "expected 32 bytes".into(),
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::Io { path, source: e }),
    }
}

/// Loads the host key, creating it (32 random bytes, mode 0600) on first use.
pub fn host_key(state_dir: &Path) -> Result<HostKey, StateError> {
    if let Some(k) = read_host_key(state_dir)? {
        return Ok(k);
    }
    ensure_dir(state_dir)?;
    let k: [u8; 32] = rand::random();
    write_atomic(&state_dir.join("host.key"), &k, 0o600)?;
    Ok(HostKey(k))
}

/// Backoff of one resource.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Backoff {
    pub failures: u32,
    /// Unix milliseconds before which the resource is not retried.
    pub retry_at_ms: i64,
    pub last_error: Option<String>,
}

/// A spec obsd will not roll out again (issue 10): it was rolled back, or its preflight
/// check failed. The spec and config hashes it was for, why, and the last lines of the
/// failed container's log (or the check's output). While the service's rendered spec is
/// this one, the planner holds it (`rolled_back`/`preflight_failed` drift) until it
/// changes or `obsctl rollout retry`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HeldSpec {
    pub spec_hash: String,
    pub config_hashes: Vec<String>,
    pub reason: String,
    pub log_tail: String,
    pub at_ms: i64,
}

/// One rollout of a service (`obsctl rollout history`): when, which spec, what happened.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RolloutEntry {
    pub at_ms: i64,
    /// The rendered spec hash (short) and the image it ran.
    pub spec_hash: String,
    pub image: String,
    /// `applied`, `rolled_back`, `preflight_failed`, `crash_loop`, `failed`.
    pub outcome: String,
    /// The actions taken, or why it failed.
    pub detail: String,
    /// The rendered spec with secrets masked (keyed fingerprints, as in `obsctl diff`),
    /// so `obsctl rollout undo` can name the fields that differ from an earlier
    /// revision. Served by the rollout API only, not in `obsctl status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<serde_json::Value>,
}

/// How many rollouts per service the state directory keeps.
pub const ROLLOUT_HISTORY: usize = 10;

/// What the rollout machinery keeps per service (issue 10).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RolloutState {
    /// Rolled-back replacements per service name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rollbacks: BTreeMap<String, HeldSpec>,
    /// Failed preflight checks per service name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub preflight_failures: BTreeMap<String, HeldSpec>,
    /// The last [`ROLLOUT_HISTORY`] rollouts per service name, oldest first.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rollout_history: BTreeMap<String, Vec<RolloutEntry>>,
    /// Containers held stopped after a crash loop, per service name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub crash_loops: BTreeMap<String, HeldSpec>,
}

/// Per-resource history for status.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ResourceRecord {
    pub last_action: Option<String>,
    pub last_action_at_ms: Option<i64>,
    pub last_error: Option<String>,
    /// When the current drift (or sync) began.
    pub since_ms: Option<i64>,
    pub in_sync: bool,
}

/// Everything persisted across restarts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Persisted {
    pub desired_generation: u64,
    pub applied_generation: u64,
    /// Digest of the desired state `desired_generation` refers to.
    pub desired_digest: String,
    /// Config hashes applied in place, per container ID.
    pub applied_config: BTreeMap<String, Vec<String>>,
    /// Backoff per service name.
    pub backoff: BTreeMap<String, Backoff>,
    /// Held specs and rollout history (issue 10), boxed: `Persisted` travels by value
    /// in the daemon's pass slot.
    #[serde(default)]
    pub rollout: Box<RolloutState>,
    pub resources: BTreeMap<String, ResourceRecord>,
    pub last_success_ms: Option<i64>,
    /// The latest registry checks (`update.image`), for the planner's `image_outdated`.
    /// Not in `state.json`: the daemon's checker owns its own file ([`ImageChecks`]),
    /// and [`Persisted::load`] reads it so `obsctl diff` sees the same.
    #[serde(skip)]
    pub image_checks: BTreeMap<String, ImageCheck>,
}

/// The last registry check of one image reference (`update.image`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageCheck {
    /// When the registry was last asked (Unix ms), successfully or not.
    pub checked_at_ms: i64,
    /// The manifest digest the tag named at the last successful check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_digest: Option<String>,
    /// The local image ID the check compared against: the result holds while the local
    /// tag still names this image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<String>,
    /// The registry has another manifest under the tag than the local image.
    #[serde(default)]
    pub outdated: bool,
    /// Why the last check failed (not drift: a status message and a metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// After a failed (or postponed) check: when the next one is due (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at_ms: Option<i64>,
}

/// The checker's file: per image reference its last check, per registry host the time
/// before which it must not be asked again (`429`/`503` with `Retry-After`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageChecks {
    #[serde(default)]
    pub images: BTreeMap<String, ImageCheck>,
    #[serde(default)]
    pub not_before_ms: BTreeMap<String, i64>,
}

impl ImageChecks {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("image-checks.json")
    }

    /// The file, or nothing recorded when it is absent; a corrupt file is an error.
    pub fn load(state_dir: &Path) -> Result<ImageChecks, StateError> {
        let path = Self::path(state_dir);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| StateError::Corrupt {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ImageChecks::default()),
            Err(e) => Err(StateError::Io { path, source: e }),
        }
    }

    pub fn save(&self, state_dir: &Path) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(self).expect("serializable");
        write_atomic(&Self::path(state_dir), &bytes, 0o600)
    }
}

impl Persisted {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("state.json")
    }

    pub fn load(state_dir: &Path) -> Result<Persisted, StateError> {
        let path = Self::path(state_dir);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice::<Persisted>(&b)
                .map_err(|e| StateError::Corrupt {
                    path,
                    message: e.to_string(),
                })
                .map(|p| p.with_image_checks(state_dir)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Persisted::default().with_image_checks(state_dir))
            }
            Err(e) => Err(StateError::Io { path, source: e }),
        }
    }

    /// Adds the registry checks; an unreadable checker file only loses them (the
    /// checker asks again).
    fn with_image_checks(mut self, state_dir: &Path) -> Persisted {
        self.image_checks = ImageChecks::load(state_dir)
            .map(|c| c.images)
            .unwrap_or_default();
        self
    }

    pub fn save(&self, state_dir: &Path) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(self).expect("serializable");
        write_atomic(&Self::path(state_dir), &bytes, 0o600)
    }

    /// Bumps the generation when the desired state's digest changed.
    pub fn observe_desired(&mut self, digest: &str) -> u64 {
        if self.desired_digest != digest {
            self.desired_digest = digest.to_string();
            self.desired_generation += 1;
        }
        self.desired_generation
    }
}

/// Exponential backoff: 2 s, 4 s, 8 s … capped.
pub fn backoff_delay_ms(failures: u32, cap_ms: i64) -> i64 {
    let base: i64 = 2_000;
    let exp = failures.saturating_sub(1).min(20);
    (base.saturating_mul(1i64 << exp)).min(cap_ms)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_released_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let a = Lock::acquire(d.path()).unwrap();
        assert!(matches!(
            Lock::acquire(d.path()),
            Err(StateError::Locked(_))
        ));
        drop(a);
        Lock::acquire(d.path()).unwrap();
    }

    #[test]
    fn host_key_is_stable_and_private() {
        let d = tempfile::tempdir().unwrap();
        let k1 = host_key(d.path()).unwrap();
        let k2 = host_key(d.path()).unwrap();
        assert_eq!(k1.0, k2.0);
        let mode = std::fs::metadata(d.path().join("host.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn persisted_roundtrip_and_generation() {
        let d = tempfile::tempdir().unwrap();
        let mut p = Persisted::load(d.path()).unwrap();
        assert_eq!(p.observe_desired("a"), 1);
        assert_eq!(p.observe_desired("a"), 1);
        assert_eq!(p.observe_desired("b"), 2);
        p.save(d.path()).unwrap();
        assert_eq!(Persisted::load(d.path()).unwrap(), p);
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff_delay_ms(1, 300_000), 2_000);
        assert_eq!(backoff_delay_ms(2, 300_000), 4_000);
        assert_eq!(backoff_delay_ms(30, 300_000), 300_000);
    }
}
