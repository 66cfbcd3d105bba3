//! Stripe export (restricted read-only key): products, prices, webhook endpoints, tax
//! rates and coupons, each one document (`<list>.json`), paged with `starting_after`
//! and cut at `maxPages` like the cloud-poller (the cut is flagged). A webhook
//! endpoint's `secret` goes with every other secret-bearing field ([`super::redact`]).

use super::{get_json, secret, Collected};
use crate::desired::model::backup_sources::StripeExport;
use crate::jobs::JobContext;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const PAGE: u32 = 100;
const LISTS: [(&str, &str); 5] = [
    ("products", "/v1/products"),
    ("prices", "/v1/prices"),
    ("webhook_endpoints", "/v1/webhook_endpoints"),
    ("tax_rates", "/v1/tax_rates"),
    ("coupons", "/v1/coupons"),
];

pub async fn collect(
    ctx: &JobContext,
    c: &StripeExport,
    cancel: &CancellationToken,
) -> Result<Collected, String> {
    let key = secret(ctx, &c.key_env)?;
    let mut out = Collected::default();
    for (name, path) in LISTS {
        let url = format!("{}{path}", c.api_base.trim_end_matches('/'));
        let mut items: Vec<Value> = Vec::new();
        let mut after: Option<String> = None;
        let mut cut = true;
        for _ in 0..c.max_pages.max(1) {
            let mut q = vec![("limit", PAGE.to_string())];
            if let Some(a) = &after {
                q.push(("starting_after", a.clone()));
            }
            let page = get_json(ctx, cancel, &url, &q, key).await?;
            if page.get("object").and_then(Value::as_str) != Some("list") {
                return Err(format!("GET {path}: not a list object"));
            }
            let data = page
                .get("data")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let last = data
                .last()
                .and_then(|o| o.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string);
            items.extend(data);
            match (page.get("has_more").and_then(Value::as_bool), last) {
                (Some(true), Some(id)) => after = Some(id),
                _ => {
                    cut = false;
                    break;
                }
            }
        }
        if cut {
            out.truncated(format!("{name}: more than {} pages", c.max_pages.max(1)));
        }
        out.add(format!("{name}.json"), Value::Array(items));
    }
    Ok(out)
}
