//! Backup sources besides volumes (LLD backup-r2): Cloudflare, Stripe and Auth0
//! configuration exported as JSON documents.
//!
//! Each source collects its documents in memory (configuration is small), removes every
//! secret-bearing field from the parsed JSON ([`redact`]) *before* anything is
//! serialised, and stores each document as a content-addressed, write-once object
//! through the volume backup's [`Store`] (so unchanged documents are shared between days
//! and retention handles them like any other object). The day's manifest gets one
//! [`Export`] per source, failures go into its `failed` list; each source has its own
//! `backup_r2_source_*` series ([`metrics`]).

pub mod auth0;
pub mod cloudflare;
pub mod github;
pub mod s3_mirror;
pub mod stripe;

use super::store::Store;
use crate::desired::model::job::BackupJob;
use crate::jobs::http::{self, HttpError};
use crate::jobs::textfile::Textfile;
use crate::jobs::JobContext;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// One exported source in the day's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Export {
    /// `cloudflare`, `stripe` or `auth0`.
    pub kind: String,
    /// The source's name (its kind, one source of each kind per job).
    pub name: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Sum of the documents' plain sizes.
    pub bytes: u64,
    /// Compressed size of the objects the documents are stored in.
    pub stored_bytes: u64,
    /// SHA-256 over the document list (path, size, content hash).
    pub sha256: String,
    pub documents: Vec<Document>,
    /// Lists exported cut at the page cap.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub truncated: Vec<String>,
    /// Secret-bearing fields removed before serialising (`<document>:<json path>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
}

/// One exported JSON document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    /// e.g. `zones/example.com/dns_records.json`.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// The `objects/<sha256>-<YYYYMMDD>` object holding it (zstd).
    pub object: String,
}

impl Export {
    pub fn objects(&self) -> impl Iterator<Item = &String> {
        self.documents.iter().map(|d| &d.object)
    }

    /// An export of stored copies (the mirror's objects, the bundles): nothing redacted
    /// or cut, stored as they are (`stored_bytes` = `bytes`).
    pub(super) fn of_copies(
        kind: &str,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        bytes: u64,
        list: sha2::Sha256,
        documents: Vec<Document>,
    ) -> Export {
        use sha2::Digest;
        Export {
            kind: kind.into(),
            name: kind.into(),
            started_at,
            finished_at,
            bytes,
            stored_bytes: bytes,
            sha256: hex::encode(list.finalize()),
            documents,
            truncated: Vec::new(),
            removed: Vec::new(),
        }
    }
}

/// What a source collected: documents already redacted.
#[derive(Debug, Default)]
pub struct Collected {
    docs: Vec<(String, Value)>,
    truncated: Vec<String>,
    removed: Vec<String>,
}

impl Collected {
    /// Adds a document, removing its secret-bearing fields first.
    pub fn add(&mut self, path: impl Into<String>, mut value: Value) {
        let path = path.into();
        let mut removed = Vec::new();
        redact(&mut value, "$", &mut removed);
        self.removed
            .extend(removed.into_iter().map(|r| format!("{path}:{r}")));
        self.docs.push((path, value));
    }

    pub fn truncated(&mut self, what: impl Into<String>) {
        self.truncated.push(what.into());
    }
}

/// Whether a JSON key names a secret: `client_secret`, `signing_keys`,
/// `encryption_key`, and anything whose key says secret, password, private or
/// credential.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["secret", "password", "private", "credential", "signing_key"]
        .iter()
        .any(|w| k.contains(w))
        || k == "encryption_key"
        || k == "signing_keys"
}

/// Removes every secret-bearing field of `v` (at any depth), recording the JSON paths.
pub fn redact(v: &mut Value, at: &str, removed: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            let gone: Vec<String> = map.keys().filter(|k| is_secret_key(k)).cloned().collect();
            for k in gone {
                map.remove(&k);
                removed.push(format!("{at}.{k}"));
            }
            for (k, x) in map.iter_mut() {
                redact(x, &format!("{at}.{k}"), removed);
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter_mut().enumerate() {
                redact(x, &format!("{at}[{i}]"), removed);
            }
        }
        _ => {}
    }
}

/// One source's result, for the metrics.
#[derive(Debug, Clone)]
pub struct Report {
    pub kind: String,
    pub name: String,
    /// `(bytes, objects, truncated)` or the error.
    pub result: Result<(u64, u64, bool), String>,
}

/// The sources a job lists, as `(kind, name)`.
pub fn configured(job: &BackupJob) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(s) = &job.sources {
        if s.cloudflare.is_some() {
            out.push(("cloudflare", "cloudflare".to_string()));
        }
        if s.stripe.is_some() {
            out.push(("stripe", "stripe".to_string()));
        }
        if s.auth0.is_some() {
            out.push(("auth0", "auth0".to_string()));
        }
        if s.s3_mirror.is_some() {
            out.push(("s3-mirror", "s3-mirror".to_string()));
        }
        if s.github.is_some() {
            out.push(("github", "github".to_string()));
        }
    }
    out
}

/// What [`run_all`] did.
#[derive(Debug, Default)]
pub struct Ran {
    pub exports: Vec<Export>,
    /// `(kind, name, error)`.
    pub failed: Vec<(String, String, String)>,
    /// Objects and bytes the mirror and the bundles uploaded (the documents' uploads
    /// are in the store's counters).
    pub uploaded_objects: u64,
    pub uploaded_bytes: u64,
}

/// Runs every configured source: documents into `store`, the mirror and the bundles
/// into the store's bucket.
pub async fn run_all(
    ctx: &JobContext,
    job: &BackupJob,
    store: Arc<Store>,
    today: &str,
    cancel: &CancellationToken,
) -> Ran {
    let mut ran = Ran::default();
    let Some(cfg) = &job.sources else {
        return ran;
    };
    // Copies (mirror, bundles) are encrypted like every other object.
    let recipient = match job
        .age_recipient
        .as_deref()
        .map(str::parse::<age::x25519::Recipient>)
        .transpose()
    {
        Ok(r) => r,
        Err(e) => {
            for (kind, name) in configured(job) {
                ran.failed
                    .push((kind.into(), name, format!("ageRecipient: {e}")));
            }
            return ran;
        }
    };
    for (kind, name) in configured(job) {
        let started = ctx.clock.now();
        let collected = match (kind, &cfg.cloudflare, &cfg.stripe, &cfg.auth0) {
            ("cloudflare", Some(c), _, _) => Some(cloudflare::collect(ctx, c, cancel).await),
            ("stripe", _, Some(c), _) => Some(stripe::collect(ctx, c, cancel).await),
            ("auth0", _, _, Some(c)) => Some(auth0::collect(ctx, c, cancel).await),
            _ => None,
        };
        let r = match collected {
            Some(Ok(c)) => store_docs(store.clone(), kind, &name, started, c)
                .await
                .map(|mut e| {
                    e.finished_at = ctx.clock.now();
                    e
                }),
            Some(Err(e)) => Err(e),
            None => {
                let copied = match (kind, &cfg.s3_mirror, &cfg.github) {
                    ("s3-mirror", Some(c), _) => {
                        s3_mirror::mirror(ctx, c, &store.s3, today, recipient.as_ref(), cancel)
                            .await
                    }
                    ("github", _, Some(c)) => {
                        github::bundle(ctx, c, &store.s3, today, recipient.as_ref(), cancel).await
                    }
                    _ => continue,
                };
                copied.map(|(e, n, b)| {
                    ran.uploaded_objects += n;
                    ran.uploaded_bytes += b;
                    e
                })
            }
        };
        match r {
            Ok(e) => {
                info!(source = %name, kind, bytes = e.bytes, documents = e.documents.len(), removed = e.removed.len(), "source exported");
                ran.exports.push(e);
            }
            Err(e) => {
                warn!(source = %name, kind, error = %e, "source export failed");
                ran.failed.push((kind.to_string(), name, e));
            }
        }
    }
    ran
}

/// Serialises and stores every document (on a blocking thread: the store blocks).
async fn store_docs(
    store: Arc<Store>,
    kind: &str,
    name: &str,
    started: DateTime<Utc>,
    c: Collected,
) -> Result<Export, String> {
    let (kind, name) = (kind.to_string(), name.to_string());
    tokio::task::spawn_blocking(move || {
        let mut docs = Vec::new();
        let mut bytes = 0u64;
        let mut list = Sha256::new();
        for (path, value) in &c.docs {
            let plain = serde_json::to_vec_pretty(value).expect("JSON values serialise");
            let sha = hex::encode(Sha256::digest(&plain));
            let size = plain.len() as u64;
            let object = match store.put(plain) {
                Ok(x) => x,
                Err(e) => {
                    let _ = store.flush();
                    return Err(format!("{path}: {e}"));
                }
            };
            list.update(format!("{path}\0{size}\0{sha}\n").as_bytes());
            bytes += size;
            docs.push(Document {
                path: path.clone(),
                size,
                sha256: sha,
                object,
            });
        }
        // Every document's PUT has finished before the export enters the manifest.
        let stored = store.flush()?;
        Ok(Export {
            kind,
            name,
            started_at: started,
            finished_at: started,
            bytes,
            stored_bytes: stored,
            sha256: hex::encode(list.finalize()),
            documents: docs,
            truncated: c.truncated,
            removed: c.removed,
        })
    })
    .await
    .map_err(|e| format!("export task: {e}"))?
}

/// The reports of a day already complete (same-day re-run): from its manifest.
pub fn reports_from(
    job: &BackupJob,
    exports: &[Export],
    failed: &[super::manifest::FailedSource],
) -> Vec<Report> {
    configured(job)
        .into_iter()
        .map(|(kind, name)| {
            let result = match exports.iter().find(|e| e.kind == kind && e.name == name) {
                Some(e) => Ok((e.bytes, e.documents.len() as u64, !e.truncated.is_empty())),
                None => Err(failed
                    .iter()
                    .find(|f| f.kind == kind && f.name == name)
                    .map_or_else(
                        || "not in the day's manifest".to_string(),
                        |f| f.error.clone(),
                    )),
            };
            Report {
                kind: kind.to_string(),
                name,
                result,
            }
        })
        .collect()
}

/// The reports of a run that exported `exports` and saw `failed`.
pub fn reports(exports: &[Export], failed: &[(String, String, String)]) -> Vec<Report> {
    let mut out: Vec<Report> = exports
        .iter()
        .map(|e| Report {
            kind: e.kind.clone(),
            name: e.name.clone(),
            result: Ok((e.bytes, e.documents.len() as u64, !e.truncated.is_empty())),
        })
        .collect();
    out.extend(failed.iter().map(|(k, n, e)| Report {
        kind: k.clone(),
        name: n.clone(),
        result: Err(e.clone()),
    }));
    out
}

/// Per source: `backup_r2_source_success`, `_bytes`, `_objects`, `_truncated`,
/// `_last_success_timestamp_seconds` (labels `source`, `kind`). `reports`: `None` when
/// the run failed before the sources ran (every configured source is then 0).
/// `last_success` is keyed `<kind>:<name>`.
pub fn metrics(
    tf: &mut Textfile,
    job: &BackupJob,
    reports: Option<&[Report]>,
    last_success: &mut BTreeMap<String, f64>,
    now: f64,
) {
    for (kind, name) in configured(job) {
        let r = reports.and_then(|rs| rs.iter().find(|r| r.kind == kind && r.name == name));
        let labels = [("source", name.as_str()), ("kind", kind)];
        let key = format!("{kind}:{name}");
        let ok = matches!(r, Some(Report { result: Ok(_), .. }));
        tf.gauge(
            "backup_r2_source_success",
            "1 if the source was backed up by the last run.",
        )
        .sample(&labels, f64::from(u8::from(ok)));
        if let Some(Report {
            result: Ok((bytes, objects, truncated)),
            ..
        }) = r
        {
            last_success.insert(key.clone(), now);
            tf.gauge(
                "backup_r2_source_bytes",
                "Size of the source's files in the last backup.",
            )
            .sample(&labels, *bytes as f64);
            tf.gauge(
                "backup_r2_source_objects",
                "Objects the source's last backup references.",
            )
            .sample(&labels, *objects as f64);
            tf.gauge(
                "backup_r2_source_truncated",
                "1 if a list of the source was cut at the page cap in the last backup.",
            )
            .sample(&labels, f64::from(u8::from(*truncated)));
        }
        if let Some(t) = last_success.get(&key) {
            tf.gauge(
                "backup_r2_source_last_success_timestamp_seconds",
                "Last time the source was backed up.",
            )
            .sample(&labels, *t);
        }
    }
}

/// A secret from the env file, named in the error when missing.
pub(crate) fn secret<'a>(ctx: &'a JobContext, env: &str) -> Result<&'a str, String> {
    ctx.env
        .get(env)
        .map(|s| s.expose())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("`{env}` is not set in the env file"))
}

/// GET a JSON body with a bearer token, retrying 429/5xx per the job's policy.
pub(crate) async fn get_json(
    ctx: &JobContext,
    cancel: &CancellationToken,
    url: &str,
    query: &[(&str, String)],
    token: &str,
) -> Result<Value, String> {
    let path = url.split('?').next().unwrap_or(url);
    let what = format!("GET {}", path_of(path));
    let resp = http::send(&ctx.retry, cancel, &what, || {
        ctx.http
            .get(url)
            .query(query)
            .bearer_auth(token)
            .timeout(ctx.request_timeout)
    })
    .await
    .map_err(|e| err(&e))?;
    http::json::<Value>(&what, resp).await.map_err(|e| err(&e))
}

fn err(e: &HttpError) -> String {
    e.to_string()
}

/// The path of a URL (no host: the errors name the call, not the tenant).
fn path_of(url: &str) -> &str {
    url.split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or(url)
}

/// A file-name-safe form of an identifier.
pub(crate) fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redaction_removes_secret_keys_at_any_depth_and_records_paths() {
        let mut v = json!({
            "name": "app",
            "client_secret": "s1",
            "signing_keys": [{"cert": "c"}],
            "encryption_key": {"pub": "p"},
            "options": {"client_secret": "s2", "scope": ["email"], "db_Password": "x"},
            "list": [{"privateKey": "k", "ok": 1}, {"aws_credentials": "c"}],
            "token_endpoint_auth_method": "client_secret_post"
        });
        let mut removed = Vec::new();
        redact(&mut v, "$", &mut removed);
        removed.sort();
        assert_eq!(
            removed,
            vec![
                "$.client_secret",
                "$.encryption_key",
                "$.list[0].privateKey",
                "$.list[1].aws_credentials",
                "$.options.client_secret",
                "$.options.db_Password",
                "$.signing_keys",
            ]
        );
        assert_eq!(
            v,
            json!({"name": "app", "options": {"scope": ["email"]}, "list": [{"ok": 1}, {}],
                   "token_endpoint_auth_method": "client_secret_post"})
        );
    }
}
