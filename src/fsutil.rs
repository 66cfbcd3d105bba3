//! Atomic file replacement, the one way obsd writes a file that something else reads
//! (its own state after a crash, node-exporter, Caddy): write a hidden temporary file in
//! the same directory, fsync it, rename it over the target, fsync the directory.
//! Readers see the old or the new content, never a torn file.
//!
//! The temporary name is unique per process and call (`.<name>.tmp.<pid>.<n>`), so two
//! writers of one file never interleave in one temporary file, and it never ends in
//! `.prom`, so node-exporter never reads a half-written one. It is removed on error.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Replaces `path` with `bytes` atomically, creating its directory if missing; a new
/// file gets `mode` (an existing one is replaced by a new inode with `mode` too).
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = tmp_path(path);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
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

/// A fresh temporary name beside `path` (a rename never crosses filesystems).
fn tmp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("x.prom");
        atomic_write(&p, b"one\n", 0o644).unwrap();
        atomic_write(&p, b"two\n", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two\n");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["x.prom"]);
        let t = tmp_path(&p);
        let t = t.file_name().unwrap().to_string_lossy();
        assert!(
            t.starts_with(".x.prom.tmp.") && !t.ends_with(".prom"),
            "{t}"
        );
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        atomic_write(&p, b"old", 0o644).unwrap();
        // A directory where the target is: the rename fails.
        let q = dir.path().join("d");
        std::fs::create_dir(&q).unwrap();
        std::fs::write(q.join("keep"), b"").unwrap();
        assert!(atomic_write(&q, b"new", 0o644).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        let leftovers = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp.")
            })
            .count();
        assert_eq!(leftovers, 0);
    }
}
