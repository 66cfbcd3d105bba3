//! Cloudflare export: zones (paged to the end), then per zone its DNS records (paged),
//! rulesets with their rules (WAF, redirects, cache…) and page rules; with an account,
//! the R2 buckets and each one's lock, lifecycle, CORS and domain settings. One JSON
//! document per zone and kind: `zones/<zone>/<kind>.json`, `r2/<bucket>.json`.

use super::{get_json, safe, secret, Collected};
use crate::desired::model::backup_sources::CloudflareExport;
use crate::jobs::JobContext;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const PER_PAGE: u32 = 50;
/// Pages read per list at most (50 × 200 = 10 000 items); more is an error, not a cut.
const MAX_PAGES: u32 = 200;

struct Cf<'a> {
    ctx: &'a JobContext,
    cancel: &'a CancellationToken,
    base: &'a str,
    token: &'a str,
}

impl Cf<'_> {
    /// `result` of one call; `success: false` is an error with Cloudflare's messages.
    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, String> {
        let url = format!("{}{path}", self.base.trim_end_matches('/'));
        let v = get_json(self.ctx, self.cancel, &url, query, self.token).await?;
        envelope(path, v).map(|(r, _)| r)
    }

    /// Every item of a paged list (`page`/`per_page` until `result_info.total_pages`).
    async fn list(&self, path: &str) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        for page in 1..=MAX_PAGES {
            let url = format!("{}{path}", self.base.trim_end_matches('/'));
            let v = get_json(
                self.ctx,
                self.cancel,
                &url,
                &[
                    ("page", page.to_string()),
                    ("per_page", PER_PAGE.to_string()),
                ],
                self.token,
            )
            .await?;
            let (result, info) = envelope(path, v)?;
            let items = match result {
                Value::Array(a) => a,
                Value::Null => Vec::new(),
                other => {
                    return Err(format!(
                        "GET {path}: result is not a list: {}",
                        kind(&other)
                    ))
                }
            };
            let n = items.len();
            out.extend(items);
            let total = info
                .as_ref()
                .and_then(|i| i.get("total_pages"))
                .and_then(Value::as_u64);
            let done = match total {
                Some(t) => u64::from(page) >= t,
                None => n < PER_PAGE as usize,
            };
            if done {
                return Ok(out);
            }
        }
        Err(format!("GET {path}: more than {MAX_PAGES} pages"))
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "an object",
        Value::String(_) => "a string",
        _ => "a scalar",
    }
}

/// `(result, result_info)` of a Cloudflare envelope.
fn envelope(path: &str, mut v: Value) -> Result<(Value, Option<Value>), String> {
    if v.get("success").and_then(Value::as_bool) != Some(true) {
        let msgs: Vec<String> = v
            .get("errors")
            .and_then(Value::as_array)
            .map(|es| {
                es.iter()
                    .filter_map(|e| e.get("message").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        return Err(format!("GET {path}: success=false: {}", msgs.join("; ")));
    }
    let result = v.get_mut("result").map(Value::take).unwrap_or(Value::Null);
    let info = v.get_mut("result_info").map(Value::take);
    Ok((result, info))
}

pub async fn collect(
    ctx: &JobContext,
    c: &CloudflareExport,
    cancel: &CancellationToken,
) -> Result<Collected, String> {
    let token = secret(ctx, &c.token_env)?;
    let cf = Cf {
        ctx,
        cancel,
        base: &c.api_base,
        token,
    };
    let mut out = Collected::default();
    let zones = cf.list("/zones").await?;
    let mut seen = Vec::new();
    for z in &zones {
        let (Some(id), Some(name)) = (
            z.get("id").and_then(Value::as_str),
            z.get("name").and_then(Value::as_str),
        ) else {
            return Err("GET /zones: a zone without id or name".into());
        };
        if !c.zones.is_empty() && !c.zones.iter().any(|w| w == name) {
            continue;
        }
        seen.push(name.to_string());
        let dir = format!("zones/{}", safe(name));
        out.add(format!("{dir}/zone.json"), z.clone());
        let records = cf.list(&format!("/zones/{id}/dns_records")).await?;
        out.add(format!("{dir}/dns_records.json"), Value::Array(records));
        let rulesets = cf.get(&format!("/zones/{id}/rulesets"), &[]).await?;
        let mut full = Vec::new();
        for rs in rulesets.as_array().map(Vec::as_slice).unwrap_or_default() {
            let Some(rid) = rs.get("id").and_then(Value::as_str) else {
                continue;
            };
            full.push(cf.get(&format!("/zones/{id}/rulesets/{rid}"), &[]).await?);
        }
        out.add(format!("{dir}/rulesets.json"), Value::Array(full));
        let pagerules = cf.get(&format!("/zones/{id}/pagerules"), &[]).await?;
        out.add(format!("{dir}/pagerules.json"), pagerules);
    }
    if let Some(w) = c.zones.iter().find(|w| !seen.contains(w)) {
        return Err(format!("zone {w} is not visible to the token"));
    }
    if let Some(env) = &c.account_id_env {
        let account = secret(ctx, env)?;
        let base = format!("/accounts/{account}/r2/buckets");
        let listed = cf.get(&base, &[]).await?;
        let buckets = listed
            .get("buckets")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for b in &buckets {
            let Some(name) = b.get("name").and_then(Value::as_str) else {
                continue;
            };
            let mut doc = json!({ "bucket": b });
            for part in [
                "lock",
                "lifecycle",
                "cors",
                "domains/managed",
                "domains/custom",
            ] {
                let v = match cf.get(&format!("{base}/{name}/{part}"), &[]).await {
                    Ok(v) => v,
                    // Not configured (CORS, custom domains answer 404 when unset).
                    Err(e) if e.contains("HTTP 404") || e.contains(" 404") => Value::Null,
                    Err(e) => return Err(e),
                };
                doc[part] = v;
            }
            out.add(format!("r2/{}.json", safe(name)), doc);
        }
    }
    Ok(out)
}
