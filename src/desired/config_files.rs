//! Config files: the files and directories from the desired-state directory that
//! services mount. Their *content* is hashed into the service's spec, so an edit is a
//! change the reconciler acts on (`onChange`). A source must stay inside the directory:
//! the engine would mount whatever a link points to.
//!
//! Reading never blocks and never balloons: every file the loader reads (documents,
//! config files, the env file) is opened by [`open_regular`], which refuses FIFOs,
//! sockets and devices without waiting on them, and config files are hashed in 64 KiB
//! chunks, each at most [`MAX_CONFIG_FILE_BYTES`].

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest config file hashed (and mounted). Config files are configuration; data
/// belongs in a volume. Hashing streams, so memory stays bounded whatever the size.
pub const MAX_CONFIG_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Largest config directory, all files together.
pub const MAX_CONFIG_DIR_BYTES: u64 = 256 * 1024 * 1024;

/// What a non-regular file is, for messages.
fn file_kind(ft: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symlink"
    } else {
        "not a regular file"
    }
}

/// Opens a regular file for reading without ever blocking: the type is checked before
/// opening, the open itself is non-blocking (a FIFO swapped in between cannot wedge
/// it), and the type is checked again on the open descriptor. FIFOs, sockets and
/// devices are refused with a message naming what they are. Errors are one line,
/// without the path (callers name the file).
pub(crate) fn open_regular(path: &Path) -> Result<(std::fs::File, std::fs::Metadata), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "is {}; only regular files are read",
            file_kind(&meta.file_type())
        ));
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot read: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "is {}; only regular files are read",
            file_kind(&meta.file_type())
        ));
    }
    Ok((f, meta))
}

/// Reads a regular file of at most `max` bytes (also when it grows while read).
pub(crate) fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let (f, meta) = open_regular(path)?;
    if meta.len() > max {
        return Err(format!(
            "file is {} bytes; the limit is {max} bytes",
            meta.len()
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!(
            "file grew past the limit of {max} bytes while reading"
        ));
    }
    Ok(bytes)
}

/// Feeds one config file into `h` in chunks; returns its size.
fn hash_file(h: &mut Sha256, path: &Path, shown: &str) -> Result<u64, String> {
    let (mut f, meta) = open_regular(path).map_err(|e| format!("config file `{shown}` {e}"))?;
    if meta.len() > MAX_CONFIG_FILE_BYTES {
        return Err(format!(
            "config file `{shown}` is {} bytes; the limit is {} MiB (config files are hashed and mounted; put data in a volume)",
            meta.len(),
            MAX_CONFIG_FILE_BYTES / (1024 * 1024)
        ));
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("cannot read config file `{shown}`: {e}"))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_CONFIG_FILE_BYTES {
            return Err(format!(
                "config file `{shown}` grew past the limit of {} MiB while it was read",
                MAX_CONFIG_FILE_BYTES / (1024 * 1024)
            ));
        }
        h.update(&buf[..n]);
    }
    Ok(total)
}

/// Content hash of a config file or directory, refusing paths outside `dir`.
pub fn hash_config_source(dir: &Path, source: &str) -> Result<String, String> {
    let rel = Path::new(source);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "config file `{source}` must be a relative path inside the desired-state directory (use `binds` for host paths)"
        ));
    }
    let path = dir.join(rel);
    let meta = std::fs::metadata(&path)
        .map_err(|_| format!("config file `{source}` does not exist ({})", path.display()))?;
    // A symlink must not lead out of the directory: the engine would mount its target.
    if let (Ok(real), Ok(root)) = (path.canonicalize(), dir.canonicalize()) {
        if !real.starts_with(&root) {
            return Err(format!(
                "config file `{source}` resolves to {}, outside the desired-state directory",
                real.display()
            ));
        }
    }
    let mut h = Sha256::new();
    if meta.is_dir() {
        let mut files = Vec::new();
        walk(&path, &mut files, 0)?;
        files.sort();
        let mut total = 0u64;
        for f in files {
            let rel = f.strip_prefix(&path).unwrap_or(&f);
            h.update(rel.to_string_lossy().as_bytes());
            h.update([0]);
            let shown = Path::new(source).join(rel);
            total += hash_file(&mut h, &f, &shown.to_string_lossy())?;
            if total > MAX_CONFIG_DIR_BYTES {
                return Err(format!(
                    "config directory `{source}` holds more than {} MiB; the limit is {} MiB",
                    MAX_CONFIG_DIR_BYTES / (1024 * 1024),
                    MAX_CONFIG_DIR_BYTES / (1024 * 1024)
                ));
            }
            h.update([0]);
        }
    } else {
        hash_file(&mut h, &path, source)?;
    }
    Ok(hex::encode(h.finalize()))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> Result<(), String> {
    if depth > 16 {
        return Err(format!(
            "{} nests deeper than 16 directories",
            dir.display()
        ));
    }
    let rd = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for e in rd.flatten() {
        let p = e.path();
        let ft = e.file_type().map_err(|e| e.to_string())?;
        if ft.is_symlink() {
            return Err(format!(
                "{} is a symlink; config directories are mounted as they are, so they may not hold links",
                p.display()
            ));
        } else if ft.is_dir() {
            walk(&p, out, depth + 1)?;
        } else if ft.is_file() {
            out.push(p);
        } else {
            return Err(format!(
                "{} is {}; config directories may hold only regular files and directories",
                p.display(),
                file_kind(&ft)
            ));
        }
        if out.len() > 10_000 {
            return Err(format!("{} holds more than 10000 files", dir.display()));
        }
    }
    Ok(())
}
