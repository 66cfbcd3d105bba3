//! The bucket's immutability through the Cloudflare API: the R2 bucket-lock rule
//! (`GET|PUT /accounts/{a}/r2/buckets/{b}/lock`, PUT replaces the whole rule set, so
//! read-modify-write keeping every other rule) and public access (managed `r2.dev`
//! domain, custom domains).

use crate::desired::model::job::BackupCloudflare;
use crate::jobs::JobContext;
use serde_json::{json, Value};

pub const RULE_ID: &str = "obsd-backup-lock";

/// What the checks found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketGuard {
    /// A whole-bucket lock of at least the wanted age is enabled (after ensuring it).
    pub lock_enabled: bool,
    /// The rule set was written by this run.
    pub lock_written: bool,
    pub public: bool,
}

/// `what` names the call in errors (the URL holds the account ID, from the env file).
async fn call(
    ctx: &JobContext,
    token: &str,
    method: reqwest::Method,
    url: &str,
    what: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let mut req = ctx
        .http
        .request(method, url)
        .bearer_auth(token)
        .timeout(ctx.request_timeout);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.map_err(|e| {
        format!(
            "Cloudflare {what}: {}",
            crate::jobs::error_chain(&e.without_url())
        )
    })?;
    let status = resp.status();
    let v: Value = resp.json().await.map_err(|e| {
        format!(
            "Cloudflare {what}: HTTP {status}, unreadable answer: {}",
            e.without_url()
        )
    })?;
    if !status.is_success() || v["success"] != json!(true) {
        let msg = v["errors"]
            .as_array()
            .and_then(|e| e.first())
            .and_then(|e| e["message"].as_str())
            .unwrap_or("no message");
        return Err(format!("Cloudflare {what}: HTTP {status}: {msg}"));
    }
    Ok(v)
}

/// A rule that locks the whole bucket for at least `secs`.
fn covers(rule: &Value, secs: u64) -> bool {
    rule["enabled"] == json!(true)
        && rule["prefix"].as_str().unwrap_or("").is_empty()
        && match rule["condition"]["type"].as_str() {
            Some("Age") => rule["condition"]["maxAgeSeconds"].as_u64().unwrap_or(0) >= secs,
            Some("Indefinite") => true,
            _ => false,
        }
}

pub async fn ensure(
    ctx: &JobContext,
    cf: &BackupCloudflare,
    bucket: &str,
    lock_days: u32,
) -> Result<BucketGuard, String> {
    let account = ctx.secret(&cf.account_id_env).map_err(|e| e.to_string())?;
    let token = ctx.secret(&cf.api_token_env).map_err(|e| e.to_string())?;
    let base = format!(
        "{}/accounts/{}/r2/buckets/{bucket}",
        cf.api_base.trim_end_matches('/'),
        account.expose()
    );
    let token = token.expose();
    let secs = u64::from(lock_days) * 86_400;
    let lock_url = format!("{base}/lock");
    let cur = call(
        ctx,
        token,
        reqwest::Method::GET,
        &lock_url,
        "GET bucket lock",
        None,
    )
    .await?;
    let mut rules: Vec<Value> = cur["result"]["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let wanted = json!({
        "id": RULE_ID,
        "enabled": true,
        "condition": {"type": "Age", "maxAgeSeconds": secs},
    });
    let ours = rules.iter().position(|r| r["id"] == json!(RULE_ID));
    let ok = ours.is_some_and(|i| {
        covers(&rules[i], secs) && rules[i]["condition"]["maxAgeSeconds"] == json!(secs)
    });
    let mut written = false;
    if !ok {
        match ours {
            Some(i) => rules[i] = wanted,
            None => rules.push(wanted),
        }
        call(
            ctx,
            token,
            reqwest::Method::PUT,
            &lock_url,
            "PUT bucket lock",
            Some(json!({"rules": rules})),
        )
        .await?;
        written = true;
    }
    // Read back: what the bucket holds now.
    let now = call(
        ctx,
        token,
        reqwest::Method::GET,
        &lock_url,
        "GET bucket lock",
        None,
    )
    .await?;
    let lock_enabled = now["result"]["rules"]
        .as_array()
        .is_some_and(|rs| rs.iter().any(|r| covers(r, secs)));
    let managed = call(
        ctx,
        token,
        reqwest::Method::GET,
        &format!("{base}/domains/managed"),
        "GET managed domain",
        None,
    )
    .await?;
    let custom = call(
        ctx,
        token,
        reqwest::Method::GET,
        &format!("{base}/domains/custom"),
        "GET custom domains",
        None,
    )
    .await?;
    let public = managed["result"]["enabled"] == json!(true)
        || custom["result"]["domains"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["enabled"] == json!(true)));
    Ok(BucketGuard {
        lock_enabled,
        lock_written: written,
        public,
    })
}
