//! The per-day manifest (`daily/<YYYY-MM-DD>/manifest.json`), written last: its
//! presence is what makes a day complete.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const FORMAT: u32 = 1;

/// One complete day.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: u32,
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    pub obsd_version: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Objects are age-encrypted (not supported yet: always false).
    pub encrypted: bool,
    /// What was backed up, one entry per source (`kind: volume` today; other kinds
    /// add entries of their own).
    pub sources: Vec<Source>,
    /// Sources of the job that failed that day (name and error), so a restore knows the
    /// day is partial.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<FailedSource>,
    /// Non-volume sources (Cloudflare, Stripe, Auth0 exports), one entry each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<super::sources::Export>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedSource {
    pub kind: String,
    pub name: String,
    pub error: String,
}

/// One backed-up source.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// `volume`.
    pub kind: String,
    /// The `Volume` resource name.
    pub name: String,
    /// The Docker volume that was read.
    pub docker_name: String,
    /// `none`, `pause` or `stop`.
    pub quiesce: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Sum of the regular files' sizes.
    pub bytes: u64,
    /// Compressed size of every object this source references.
    pub stored_bytes: u64,
    /// SHA-256 over the file list (path, type, mode, owner, size, content hash, target):
    /// one checksum per volume and day.
    pub sha256: String,
    /// Objects holding the archive of everything but large files' content, in order:
    /// their concatenated plain content is one tar stream.
    pub archive: Vec<String>,
    pub files: Vec<FileEntry>,
}

/// One file, directory or link of a volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// Relative to the volume root (`.` is the root itself).
    pub path: String,
    /// `file`, `dir`, `symlink`, `hardlink` or `other` (device, fifo).
    #[serde(rename = "type")]
    pub kind: String,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: u64,
    /// Content hash of a regular file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Link target (symlinks as stored; hardlinks relative to the volume root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Content-addressed chunk objects of a large file, in order; empty: the file is
    /// in the source's archive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<String>,
}

impl Source {
    /// Every object the source references.
    pub fn objects(&self) -> impl Iterator<Item = &String> {
        self.archive
            .iter()
            .chain(self.files.iter().flat_map(|f| f.chunks.iter()))
    }
}

impl Manifest {
    pub fn objects(&self) -> impl Iterator<Item = &String> {
        self.sources
            .iter()
            .flat_map(|s| s.objects())
            .chain(self.exports.iter().flat_map(|e| e.objects()))
    }
}

/// The source checksum over its file list.
pub fn list_digest(files: &[FileEntry]) -> String {
    let mut h = Sha256::new();
    for f in files {
        h.update(
            format!(
                "{}\0{}\0{:o}\0{}\0{}\0{}\0{}\0{}\n",
                f.path,
                f.kind,
                f.mode,
                f.uid,
                f.gid,
                f.size,
                f.sha256.as_deref().unwrap_or(""),
                f.target.as_deref().unwrap_or("")
            )
            .as_bytes(),
        );
    }
    hex::encode(h.finalize())
}

pub fn manifest_key(date: &str) -> String {
    format!("daily/{date}/manifest.json")
}

/// The date of a `daily/<date>/manifest.json` key.
pub fn date_of_manifest_key(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("daily/")?;
    let (date, file) = rest.split_once('/')?;
    (file == "manifest.json" && chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok())
        .then_some(date)
}

/// `objects/<sha256>-<YYYYMMDD>` → the SHA-256 of the plain content.
pub fn sha_of_object_key(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("objects/")?;
    let (sha, day) = rest.split_once('-')?;
    (sha.len() == 64
        && sha.bytes().all(|b| b.is_ascii_hexdigit())
        && day.len() == 8
        && day.bytes().all(|b| b.is_ascii_digit()))
    .then_some(sha)
}
