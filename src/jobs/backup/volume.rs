//! One volume as a tar stream ↔ objects and manifest entries (blocking code: it runs
//! on a blocking thread fed by the engine's archive stream).
//!
//! Backup: every entry of the engine's tar is recorded in the manifest; regular files
//! above [`LARGE_FILE`] are cut into [`SEGMENT`]-sized content-addressed chunks; all other
//! entries are re-serialised into one tar stream cut into segments (the day's archive).
//! Restore replays the same objects: pass one (`sink: None`) checks every object and every
//! file against the manifest, pass two writes the tar the engine extracts.

use super::manifest::{list_digest, FileEntry, Source};
use super::s3::S3;
use super::store::{fetch, Store, LARGE_FILE, SEGMENT};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// The first path component of the engine's archive (the helper's mount point).
pub const ROOT: &str = "data";

/// Cuts a byte stream into stored segments.
struct Segments<'a> {
    store: &'a Store,
    buf: Vec<u8>,
    keys: Vec<String>,
}

impl Segments<'_> {
    /// Hands the buffer over as one object (compressed and PUT behind) and starts a new
    /// one.
    fn flush_segment(&mut self) -> io::Result<()> {
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(SEGMENT));
        let key = self.store.put(full).map_err(io::Error::other)?;
        self.keys.push(key);
        Ok(())
    }
}

impl Write for Segments<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            let n = (SEGMENT - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.buf.len() == SEGMENT {
                self.flush_segment()?;
            }
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Counts the time spent inside `read` (waiting on the engine's archive stream).
struct TimedRead<'a, R> {
    inner: R,
    store: &'a Store,
}

impl<R: Read> Read for TimedRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let t = Instant::now();
        let r = self.inner.read(buf);
        self.store.note_read(t.elapsed());
        r
    }
}

/// `data/a/b` → `a/b`; `data` → `.`.
fn relative(p: &Path) -> Result<String, String> {
    let mut comps = p.components().filter(|c| !matches!(c, Component::CurDir));
    match comps.next() {
        Some(Component::Normal(r)) if r == ROOT => {}
        _ => return Err(format!("unexpected path `{}` in the archive", p.display())),
    }
    let rest: PathBuf = comps.collect();
    if rest.as_os_str().is_empty() {
        return Ok(".".into());
    }
    rest.to_str()
        .map(str::to_string)
        .ok_or_else(|| format!("path `{}` is not UTF-8", rest.display()))
}

/// A link entry's target as stored in the tar header, and as the manifest records it
/// (hardlinks relative to the volume root, symlinks as written). `None`: no target.
fn link_target<R: Read>(
    e: &tar::Entry<'_, R>,
    kind: &str,
) -> Result<Option<(PathBuf, String)>, String> {
    let Some(target) = e.link_name().map_err(io_err("link target"))? else {
        return Ok(None);
    };
    let target = target.into_owned();
    let shown = if kind == "hardlink" {
        relative(&target)?
    } else {
        target.to_string_lossy().into_owned()
    };
    Ok(Some((target, shown)))
}

fn in_archive(rel: &str) -> String {
    if rel == "." {
        ROOT.to_string()
    } else {
        format!("{ROOT}/{rel}")
    }
}

fn kind_of(t: tar::EntryType) -> &'static str {
    match t {
        tar::EntryType::Regular | tar::EntryType::Continuous => "file",
        tar::EntryType::Directory => "dir",
        tar::EntryType::Symlink => "symlink",
        tar::EntryType::Link => "hardlink",
        _ => "other",
    }
}

fn io_err(what: &str) -> impl Fn(io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Reads one volume's tar stream (as the engine's archive endpoint sends it, rooted at
/// `data/`) into stored objects; returns the manifest entry (times set by the caller)
/// once every object's PUT has finished. The time split is left in the store
/// ([`Store::take_timings`]).
pub fn read_volume<R: Read>(tar_stream: R, store: &Store) -> Result<Source, String> {
    let read = read_entries(tar_stream, store);
    // Whatever happened, no PUT of this volume is left running behind the caller.
    let flushed = store.flush();
    let mut src = read?;
    src.stored_bytes = flushed.map_err(|e| format!("storing the volume: {e}"))?;
    Ok(src)
}

fn read_entries<R: Read>(tar_stream: R, store: &Store) -> Result<Source, String> {
    let mut input = tar::Archive::new(TimedRead {
        inner: tar_stream,
        store,
    });
    let mut out = tar::Builder::new(Segments {
        store,
        buf: Vec::with_capacity(SEGMENT),
        keys: Vec::new(),
    });
    out.mode(tar::HeaderMode::Complete);
    let mut files = Vec::new();
    let mut bytes = 0u64;
    for entry in input.entries().map_err(io_err("reading the archive"))? {
        let mut e = entry.map_err(io_err("reading the archive"))?;
        let raw = e.path().map_err(io_err("entry path"))?.into_owned();
        let rel = relative(&raw)?;
        let mut h = e.header().clone();
        let kind = kind_of(h.entry_type());
        let mut fe = FileEntry {
            path: rel.clone(),
            kind: kind.to_string(),
            mode: h.mode().map_err(io_err("entry mode"))? & 0o7777,
            uid: h.uid().map_err(io_err("entry uid"))?,
            gid: h.gid().map_err(io_err("entry gid"))?,
            size: 0,
            mtime: h.mtime().unwrap_or(0),
            sha256: None,
            target: None,
            chunks: Vec::new(),
        };
        let name = in_archive(&rel);
        match kind {
            "file" => {
                let size = e.size();
                fe.size = size;
                bytes += size;
                let mut hasher = Sha256::new();
                if size > LARGE_FILE {
                    loop {
                        // A new buffer per chunk: the store owns it until compressed.
                        let mut chunk = vec![0u8; SEGMENT];
                        let n = read_full(&mut e, &mut chunk)
                            .map_err(io_err(&format!("reading {rel}")))?;
                        if n == 0 {
                            break;
                        }
                        chunk.truncate(n);
                        let t = Instant::now();
                        hasher.update(&chunk);
                        store.note_hash(t.elapsed());
                        fe.chunks.push(store.put(chunk)?);
                    }
                } else {
                    let mut data = Vec::with_capacity(size as usize);
                    e.read_to_end(&mut data)
                        .map_err(io_err(&format!("reading {rel}")))?;
                    let t = Instant::now();
                    hasher.update(&data);
                    store.note_hash(t.elapsed());
                    out.append_data(&mut h, &name, data.as_slice())
                        .map_err(io_err("writing the archive"))?;
                }
                fe.sha256 = Some(hex::encode(hasher.finalize()));
            }
            "symlink" | "hardlink" => {
                let (target, shown) =
                    link_target(&e, kind)?.ok_or_else(|| format!("link {rel} has no target"))?;
                fe.target = Some(shown);
                out.append_link(&mut h, &name, &target)
                    .map_err(io_err("writing the archive"))?;
            }
            _ => {
                h.set_size(0);
                out.append_data(&mut h, &name, io::empty())
                    .map_err(io_err("writing the archive"))?;
            }
        }
        files.push(fe);
    }
    let mut seg = out.into_inner().map_err(io_err("writing the archive"))?;
    if !seg.buf.is_empty() {
        seg.flush_segment().map_err(io_err("storing the archive"))?;
    }
    let now = chrono::Utc::now();
    Ok(Source {
        kind: "volume".into(),
        name: String::new(),
        docker_name: String::new(),
        quiesce: String::new(),
        started_at: now,
        finished_at: now,
        bytes,
        stored_bytes: 0,
        sha256: list_digest(&files),
        archive: seg.keys,
        files,
    })
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Objects fetched (downloaded, decompressed, verified) ahead of the one being read.
pub const FETCH_AHEAD: usize = 2;

/// Concatenated, verified plain content of a list of objects, the next
/// [`FETCH_AHEAD`] fetched while the current one is read.
struct Objects<'a> {
    s3: &'a Arc<S3>,
    rt: &'a Handle,
    identity: Option<&'a age::x25519::Identity>,
    keys: std::slice::Iter<'a, String>,
    ahead: VecDeque<JoinHandle<Result<Vec<u8>, String>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl<'a> Objects<'a> {
    fn new(
        s3: &'a Arc<S3>,
        rt: &'a Handle,
        identity: Option<&'a age::x25519::Identity>,
        keys: &'a [String],
    ) -> Objects<'a> {
        Objects {
            s3,
            rt,
            identity,
            keys: keys.iter(),
            ahead: VecDeque::new(),
            cur: Vec::new(),
            pos: 0,
        }
    }

    fn fetch_ahead(&mut self) {
        while self.ahead.len() < FETCH_AHEAD {
            let Some(key) = self.keys.next() else { return };
            let (s3, key, id) = (self.s3.clone(), key.clone(), self.identity.cloned());
            self.ahead.push_back(
                self.rt
                    .spawn(async move { fetch(&s3, &key, id.as_ref()).await }),
            );
        }
    }
}

impl Drop for Objects<'_> {
    fn drop(&mut self) {
        for t in &self.ahead {
            t.abort();
        }
    }
}

impl Read for Objects<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.cur.len() {
            self.fetch_ahead();
            let Some(next) = self.ahead.pop_front() else {
                return Ok(0);
            };
            self.cur = Vec::new();
            self.fetch_ahead();
            self.cur = self
                .rt
                .block_on(next)
                .map_err(|e| io::Error::other(format!("fetch task: {e}")))?
                .map_err(io::Error::other)?;
            self.pos = 0;
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads a source's objects back and checks everything against the manifest: every
/// object's content hash, every entry's type, mode, owner, size, link target and content
/// hash, and that nothing is missing or extra. With `sink`, also writes the volume as a
/// tar stream rooted at `data/` (the restore). Returns the number of bytes checked.
pub fn replay<W: Write>(
    s3: &Arc<S3>,
    rt: &Handle,
    identity: Option<&age::x25519::Identity>,
    src: &Source,
    sink: Option<&mut tar::Builder<W>>,
) -> Result<u64, String> {
    let mut want: BTreeMap<&str, &FileEntry> =
        src.files.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut sink = sink;
    let mut checked = 0u64;
    let archive = Objects::new(s3, rt, identity, &src.archive);
    let mut input = tar::Archive::new(archive);
    for entry in input.entries().map_err(io_err("reading the archive"))? {
        let mut e = entry.map_err(io_err("reading the archive"))?;
        let raw = e.path().map_err(io_err("entry path"))?.into_owned();
        let rel = relative(&raw)?;
        let Some(f) = want.remove(rel.as_str()) else {
            return Err(format!(
                "{}: `{rel}` is in the archive but not in the manifest",
                src.name
            ));
        };
        let h = e.header().clone();
        let kind = kind_of(h.entry_type());
        let mismatch =
            |what: &str| format!("{}: `{rel}`: {what} differs from the manifest", src.name);
        if kind != f.kind {
            return Err(mismatch("type"));
        }
        if h.mode().ok().map(|m| m & 0o7777) != Some(f.mode) {
            return Err(mismatch("mode"));
        }
        if h.uid().ok() != Some(f.uid) || h.gid().ok() != Some(f.gid) {
            return Err(mismatch("owner"));
        }
        match kind {
            "file" => {
                let mut data = Vec::with_capacity(e.size() as usize);
                e.read_to_end(&mut data)
                    .map_err(io_err(&format!("reading {rel}")))?;
                if data.len() as u64 != f.size {
                    return Err(mismatch("size"));
                }
                if Some(hex::encode(Sha256::digest(&data))) != f.sha256 {
                    return Err(mismatch("content (SHA-256)"));
                }
                checked += f.size;
                if let Some(b) = sink.as_deref_mut() {
                    let mut h = h.clone();
                    b.append_data(&mut h, &raw, data.as_slice())
                        .map_err(io_err("writing the restore stream"))?;
                }
            }
            "symlink" | "hardlink" => {
                let Some((target, shown)) = link_target(&e, kind)? else {
                    return Err(mismatch("link target"));
                };
                if Some(shown) != f.target {
                    return Err(mismatch("link target"));
                }
                if let Some(b) = sink.as_deref_mut() {
                    let mut h = h.clone();
                    b.append_link(&mut h, &raw, &target)
                        .map_err(io_err("writing the restore stream"))?;
                }
            }
            _ => {
                if let Some(b) = sink.as_deref_mut() {
                    let mut h = h.clone();
                    b.append_data(&mut h, &raw, io::empty())
                        .map_err(io_err("writing the restore stream"))?;
                }
            }
        }
    }
    // What is left must be the large files, held in chunks.
    for (rel, f) in want {
        if f.kind != "file" || f.chunks.is_empty() {
            return Err(format!(
                "{}: `{rel}` is in the manifest but not in the archive",
                src.name
            ));
        }
        let mut reader = HashingReader {
            inner: Objects::new(s3, rt, identity, &f.chunks),
            hasher: Sha256::new(),
            n: 0,
        };
        match sink.as_deref_mut() {
            Some(b) => {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(f.mode);
                h.set_uid(f.uid);
                h.set_gid(f.gid);
                h.set_mtime(f.mtime);
                h.set_size(f.size);
                b.append_data(&mut h, in_archive(rel), &mut reader)
                    .map_err(|e| format!("{}: `{rel}`: {e}", src.name))?;
            }
            None => {
                io::copy(&mut reader, &mut io::sink())
                    .map_err(|e| format!("{}: `{rel}`: {e}", src.name))?;
            }
        }
        if reader.n != f.size || Some(hex::encode(reader.hasher.finalize())) != f.sha256 {
            return Err(format!(
                "{}: `{rel}`: content differs from the manifest",
                src.name
            ));
        }
        checked += f.size;
    }
    Ok(checked)
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    n: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

/// Compares a volume's tar stream (rooted at `data/`, as the engine sends it) with a
/// manifest entry: the same entries with the same type, mode, owner, size, content hash
/// and link target. The restore drill reads its scratch volume back through this.
pub fn compare<R: Read>(tar_stream: R, src: &Source) -> Result<u64, String> {
    let mut want: BTreeMap<&str, &FileEntry> =
        src.files.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut input = tar::Archive::new(tar_stream);
    let mut checked = 0u64;
    for entry in input.entries().map_err(io_err("reading the volume"))? {
        let mut e = entry.map_err(io_err("reading the volume"))?;
        let raw = e.path().map_err(io_err("entry path"))?.into_owned();
        let rel = relative(&raw)?;
        let Some(f) = want.remove(rel.as_str()) else {
            return Err(format!("{}: `{rel}` is not in the manifest", src.name));
        };
        let h = e.header().clone();
        let kind = kind_of(h.entry_type());
        let bad = |what: &str| format!("{}: `{rel}`: {what} differs from the manifest", src.name);
        if kind != f.kind {
            return Err(bad("type"));
        }
        if h.mode().ok().map(|m| m & 0o7777) != Some(f.mode) {
            return Err(bad("mode"));
        }
        if h.uid().ok() != Some(f.uid) || h.gid().ok() != Some(f.gid) {
            return Err(bad("owner"));
        }
        match kind {
            "file" => {
                let mut hasher = Sha256::new();
                let n = io::copy(&mut e, &mut HashWrite(&mut hasher))
                    .map_err(io_err(&format!("reading {rel}")))?;
                if n != f.size || Some(hex::encode(hasher.finalize())) != f.sha256 {
                    return Err(bad("content"));
                }
                checked += n;
            }
            "symlink" | "hardlink" => {
                let shown = link_target(&e, kind)?.map(|(_, shown)| shown);
                if shown != f.target {
                    return Err(bad("link target"));
                }
            }
            _ => {}
        }
    }
    if let Some((rel, _)) = want.into_iter().next() {
        return Err(format!("{}: `{rel}` is missing", src.name));
    }
    Ok(checked)
}

struct HashWrite<'a>(&'a mut Sha256);

impl Write for HashWrite<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
