//! Auth0 export: a Management API token by the client-credentials grant, then clients,
//! connections, actions (paged with `page`/`per_page`) and the tenant settings, one
//! document each. Every secret-bearing field is removed from the parsed JSON before it
//! is serialised ([`super::redact`]); the removed paths go into the manifest.

use super::{get_json, secret, Collected};
use crate::desired::model::backup_sources::Auth0Export;
use crate::jobs::http;
use crate::jobs::JobContext;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const PER_PAGE: u32 = 100;
const MAX_PAGES: u32 = 100;

pub async fn collect(
    ctx: &JobContext,
    c: &Auth0Export,
    cancel: &CancellationToken,
) -> Result<Collected, String> {
    let domain = secret(ctx, &c.domain_env)?.trim_end_matches('/');
    let base = if domain.contains("://") {
        domain.to_string()
    } else {
        format!("https://{domain}")
    };
    let host = base.split_once("://").map_or(domain, |(_, h)| h);
    let audience = c
        .audience
        .clone()
        .unwrap_or_else(|| format!("https://{host}/api/v2/"));
    let body = json!({
        "grant_type": "client_credentials",
        "client_id": secret(ctx, &c.client_id_env)?,
        "client_secret": secret(ctx, &c.client_secret_env)?,
        "audience": audience,
    });
    let what = "POST /oauth/token";
    let url = format!("{base}/oauth/token");
    let resp = http::send(&ctx.retry, cancel, what, || {
        ctx.http.post(&url).json(&body).timeout(ctx.request_timeout)
    })
    .await
    .map_err(|e| e.to_string())?;
    let tok: Value = http::json(what, resp).await.map_err(|e| e.to_string())?;
    let token = tok
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("POST /oauth/token: no access_token in the answer")?
        .to_string();
    let mut out = Collected::default();
    for (name, path, field) in [
        ("clients", "/api/v2/clients", "clients"),
        ("connections", "/api/v2/connections", "connections"),
        ("actions", "/api/v2/actions/actions", "actions"),
    ] {
        let url = format!("{base}{path}");
        let mut items = Vec::new();
        let mut complete = false;
        for page in 0..MAX_PAGES {
            let v = get_json(
                ctx,
                cancel,
                &url,
                &[
                    ("page", page.to_string()),
                    ("per_page", PER_PAGE.to_string()),
                ],
                &token,
            )
            .await?;
            // A bare array, or `{<field>: [...], total, …}` (actions always).
            let list = match v {
                Value::Array(a) => a,
                Value::Object(mut m) => match m.remove(field) {
                    Some(Value::Array(a)) => a,
                    _ => return Err(format!("GET {path}: no `{field}` list in the answer")),
                },
                _ => return Err(format!("GET {path}: not a list")),
            };
            let n = list.len();
            items.extend(list);
            if n < PER_PAGE as usize {
                complete = true;
                break;
            }
        }
        if !complete {
            return Err(format!("GET {path}: more than {MAX_PAGES} pages"));
        }
        out.add(format!("{name}.json"), Value::Array(items));
    }
    let settings = get_json(
        ctx,
        cancel,
        &format!("{base}/api/v2/tenants/settings"),
        &[],
        &token,
    )
    .await?;
    out.add("tenant_settings.json", settings);
    Ok(out)
}
