//! Atomic file replacement: write `<file>.tmp` in the same directory, fsync, rename.
//!
//! Readers (node-exporter, Caddy, a restarting obsd) see either the old or the new file,
//! never a torn one. Only `*.prom` files are read by node-exporter, so a `.prom.tmp` left
//! by a crash is harmless and overwritten by the next write.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Serialises atomic writes in this process: two runs of one job (a `Replace` overlap)
/// must not interleave on the same temporary file. Writes are tiny, so one lock is enough.
static WRITE_LOCK: Mutex<()> = Mutex::new(());

/// Replace `path` with `bytes` atomically. The directory is created if missing.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let _guard = WRITE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = tmp_path(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    // Make the rename itself durable; best effort (not every filesystem allows it).
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `<path>.tmp`, in the same directory as `path` (a rename never crosses filesystems).
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("x.prom");
        atomic_write(&p, b"one\n").unwrap();
        atomic_write(&p, b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two\n");
        assert!(!tmp_path(&p).exists());
        assert_eq!(tmp_path(&p).file_name().unwrap(), "x.prom.tmp");
    }
}
