//! GitHub bundles: per listed repository a dated `git bundle` of all refs,
//! `github/<owner>/<repo>/<YYYY-MM-DD>-<head>.bundle`, write-once.
//!
//! `git ls-remote` reads HEAD first: when that day's bundle for that HEAD exists (an
//! interrupted run of the same day), nothing is cloned. Otherwise a `--mirror` clone
//! into a temporary directory, `git bundle create --all`, one PUT. The token reaches git
//! only through a credential helper that reads it from the child's environment: it is
//! never part of a URL, an argument or a log line.

use super::{secret, Document, Export};
use crate::desired::model::backup_sources::GithubBundles;
use crate::jobs::backup::s3::{Put, S3};
use crate::jobs::JobContext;
use sha2::{Digest, Sha256};
use std::path::Path;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// The credential helper: answers `get` with the token from `OBSD_GIT_TOKEN`.
const HELPER: &str =
    "!f() { test \"$1\" = get && echo username=x-access-token && echo \"password=$OBSD_GIT_TOKEN\"; }; f";

fn git(token: Option<&str>, home: &Path) -> Command {
    let mut c = Command::new("git");
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(t) = token {
        c.env("OBSD_GIT_TOKEN", t)
            .env("GIT_CONFIG_COUNT", "2")
            .env("GIT_CONFIG_KEY_0", "credential.helper")
            .env("GIT_CONFIG_VALUE_0", "")
            .env("GIT_CONFIG_KEY_1", "credential.helper")
            .env("GIT_CONFIG_VALUE_1", HELPER);
    }
    c
}

async fn output(mut c: Command, what: &str) -> Result<Vec<u8>, String> {
    let out = c
        .output()
        .await
        .map_err(|e| format!("{what}: running git: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let err: String = err.split_whitespace().collect::<Vec<_>>().join(" ");
        return Err(format!(
            "{what}: {}: {}",
            out.status,
            err.chars().take(300).collect::<String>()
        ));
    }
    Ok(out.stdout)
}

/// Bundles every repository; `(export, bundles uploaded, bytes uploaded)`.
pub async fn bundle(
    ctx: &JobContext,
    c: &GithubBundles,
    dest: &S3,
    today: &str,
    recipient: Option<&age::x25519::Recipient>,
    cancel: &CancellationToken,
) -> Result<(Export, u64, u64), String> {
    let started = ctx.clock.now();
    let token = match &c.token_env {
        Some(env) => Some(secret(ctx, env)?),
        None => None,
    };
    let tmp = TempDir::new()?;
    let (mut uploaded, mut uploaded_bytes, mut total) = (0u64, 0u64, 0u64);
    let mut docs = Vec::new();
    let mut list = Sha256::new();
    let repos: Vec<String> = c
        .repos
        .iter()
        .flat_map(|r| r.split(','))
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect();
    if repos.is_empty() {
        return Err("no repository listed".into());
    }
    for repo in &repos {
        if cancel.is_cancelled() {
            return Err("cancelled".into());
        }
        if !valid_repo(repo) {
            return Err(format!("`{repo}` is not an owner/name repository"));
        }
        let url = format!("{}/{repo}.git", c.url_base.trim_end_matches('/'));
        let mut ls = git(token, tmp.path());
        ls.args(["ls-remote", &url, "HEAD"]);
        let heads = output(ls, &format!("{repo}: git ls-remote")).await?;
        let head = String::from_utf8_lossy(&heads)
            .split_whitespace()
            .next()
            .filter(|h| h.len() >= 12 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_string)
            .ok_or_else(|| format!("{repo}: no HEAD (empty repository?)"))?;
        let key = format!("github/{repo}/{today}-{}.bundle", &head[..12]);
        let existing = dest.get(&key).await.map_err(|e| e.to_string())?;
        let (sha, size) = match existing {
            // Bundled earlier today at the same HEAD: skipped (the plain hash of an
            // encrypted bundle is not known without the identity).
            Some(b) if recipient.is_some() => (String::new(), b.len() as u64),
            Some(b) => (hex::encode(Sha256::digest(&b)), b.len() as u64),
            None => {
                let dir = tmp.path().join(super::safe(repo));
                let mirror = dir.join("repo.git");
                let mut clone = git(token, tmp.path());
                clone
                    .args(["clone", "--mirror", "--quiet", &url])
                    .arg(&mirror);
                output(clone, &format!("{repo}: git clone")).await?;
                let file = dir.join("all.bundle");
                let mut b = git(token, tmp.path());
                b.arg("-C")
                    .arg(&mirror)
                    .args(["bundle", "create", "--quiet"])
                    .arg(&file)
                    .arg("--all");
                output(b, &format!("{repo}: git bundle")).await?;
                let data = tokio::fs::read(&file)
                    .await
                    .map_err(|e| format!("{repo}: reading the bundle: {e}"))?;
                let _ = tokio::fs::remove_dir_all(&dir).await;
                let sha = hex::encode(Sha256::digest(&data));
                let size = data.len() as u64;
                let data = match recipient {
                    Some(r) => age::encrypt(r, &data)
                        .map_err(|e| format!("{repo}: encrypting the bundle: {e}"))?,
                    None => data,
                };
                let data = bytes::Bytes::from(data);
                if let Put::Created = dest
                    .put_once(&key, data.clone())
                    .await
                    .map_err(|e| e.to_string())?
                {
                    uploaded += 1;
                    uploaded_bytes += data.len() as u64;
                }
                (sha, size)
            }
        };
        total += size;
        list.update(format!("{repo}\0{size}\0{sha}\n").as_bytes());
        docs.push(Document {
            path: repo.clone(),
            size,
            sha256: sha,
            object: key,
        });
    }
    Ok((
        Export::of_copies("github", started, ctx.clock.now(), total, list, docs),
        uploaded,
        uploaded_bytes,
    ))
}

/// `owner/name`, each part of letters, digits, `.`, `-`, `_`, not starting with `.`.
pub fn valid_repo(repo: &str) -> bool {
    let parts: Vec<&str> = repo.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        })
}

/// A private scratch directory (mode 700), removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, String> {
        let r: u64 = rand::random();
        let p = std::env::temp_dir().join(format!("obsd-bundle-{}-{r:016x}", std::process::id()));
        std::fs::create_dir(&p).map_err(|e| format!("creating {}: {e}", p.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("chmod {}: {e}", p.display()))?;
        Ok(TempDir(p))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn the_token_reaches_git_through_the_credential_helper_only() {
        let tmp = TempDir::new().unwrap();
        let mut c = git(Some("tok-123"), tmp.path());
        c.args(["credential", "fill"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"protocol=https\nhost=github.com\npath=acme/site.git\n\n")
            .await
            .unwrap();
        drop(stdin);
        let out = child.wait_with_output().await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success());
        assert!(text.contains("username=x-access-token"), "{text}");
        assert!(text.contains("password=tok-123"), "{text}");
    }

    #[test]
    fn repository_names() {
        assert!(valid_repo("acme/site.web"));
        for bad in ["acme", "../x", "acme/..", "a/b/c", "acme/x y", "acme/"] {
            assert!(!valid_repo(bad), "{bad}");
        }
    }
}
