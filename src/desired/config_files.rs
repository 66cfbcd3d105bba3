//! Config files: the files and directories from the desired-state directory that
//! services mount. Their *content* is hashed into the service's spec, so an edit is a
//! change the reconciler acts on (`onChange`). A source must stay inside the directory:
//! the engine would mount whatever a link points to.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

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
        for f in files {
            let rel = f.strip_prefix(&path).unwrap_or(&f);
            h.update(rel.to_string_lossy().as_bytes());
            h.update([0]);
            h.update(std::fs::read(&f).map_err(|e| format!("cannot read {}: {e}", f.display()))?);
            h.update([0]);
        }
    } else {
        h.update(std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?);
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
        }
        if out.len() > 10_000 {
            return Err(format!("{} holds more than 10000 files", dir.display()));
        }
    }
    Ok(())
}
