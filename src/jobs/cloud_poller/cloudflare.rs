//! Cloudflare: zones (discovered, or listed) and each zone's daily totals from the
//! GraphQL analytics API. GraphQL errors arrive with HTTP 200 and mark the source down.

use super::super::http::{self, HttpError};
use super::super::textfile::Textfile;
use super::super::JobContext;
use super::{CF_DAILY_QUERY, CF_MAX_ZONE_PAGES};
use crate::desired::model::job::CloudflareSource;
use crate::secret::Secret;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

#[derive(Deserialize)]
struct CfEnvelope<T> {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    errors: Vec<CfMessage>,
    result: Option<T>,
    result_info: Option<CfResultInfo>,
}

#[derive(Deserialize)]
struct CfMessage {
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct CfResultInfo {
    #[serde(default)]
    total_pages: u32,
}

#[derive(Deserialize)]
struct CfZone {
    id: String,
    name: String,
}

#[derive(Deserialize)]
struct GqlResponse {
    data: Option<GqlData>,
    errors: Option<Vec<CfMessage>>,
}

#[derive(Deserialize)]
struct GqlData {
    viewer: GqlViewer,
}

#[derive(Deserialize)]
struct GqlViewer {
    zones: Vec<GqlZone>,
}

#[derive(Deserialize)]
struct GqlZone {
    #[serde(rename = "httpRequests1dGroups")]
    groups: Vec<GqlGroup>,
}

#[derive(Deserialize)]
struct GqlGroup {
    #[serde(default)]
    sum: GqlSum,
    #[serde(default)]
    uniq: GqlUniq,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct GqlSum {
    requests: f64,
    bytes: f64,
    cached_requests: f64,
    threats: f64,
    encrypted_requests: f64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GqlUniq {
    uniques: f64,
}

pub(super) async fn cloudflare(
    ctx: &JobContext,
    cf: &CloudflareSource,
    now: DateTime<Utc>,
    cancel: &CancellationToken,
    tf: &mut Textfile,
) -> Result<(), String> {
    let token = ctx.secret(&cf.token_env).map_err(|e| e.to_string())?;
    let base = cf.api_base.trim_end_matches('/');
    let listed = !cf.zone_tags.is_empty();
    let zones = if listed {
        cf.zone_tags
            .iter()
            .map(|t| (t.clone(), t.clone()))
            .collect()
    } else {
        discover_zones(ctx, base, token, cancel)
            .await
            .map_err(|e| e.to_string())?
    };
    let day = now.format("%Y-%m-%d").to_string();
    let mut errors = Vec::new();
    for (i, (tag, label)) in zones.iter().enumerate() {
        match zone_day(ctx, base, token, tag, &day, cancel).await {
            Ok(g) => {
                // Listed by ID: the label is still the zone's name, as when discovered.
                let name = if listed {
                    zone_name(ctx, base, token, tag, cancel).await
                } else {
                    label.clone()
                };
                let l: &[(&str, &str)] = &[("zone", &name)];
                tf.gauge("cf_requests_total", "").sample(l, g.sum.requests);
                tf.gauge("cf_bytes_total", "").sample(l, g.sum.bytes);
                tf.gauge("cf_cached_requests_total", "")
                    .sample(l, g.sum.cached_requests);
                tf.gauge("cf_threats_total", "").sample(l, g.sum.threats);
                tf.gauge("cf_encrypted_requests_total", "")
                    .sample(l, g.sum.encrypted_requests);
                tf.gauge("cf_unique_visitors", "").sample(l, g.uniq.uniques);
            }
            // Still rate limited after the retries: the limit is per token, so the
            // remaining zones would only burn the run's time budget on the same answer.
            Err(e) if e.status() == Some(429) => {
                errors.push(format!("zone {label}: {e}"));
                let left = zones.len() - i - 1;
                if left > 0 {
                    errors.push(format!("{left} more zone(s) skipped while rate limited"));
                }
                break;
            }
            Err(e) => errors.push(format!("zone {label}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// `(zone id, zone name)` of every zone the token can read.
async fn discover_zones(
    ctx: &JobContext,
    base: &str,
    token: &Secret,
    cancel: &CancellationToken,
) -> Result<Vec<(String, String)>, HttpError> {
    let mut zones = Vec::new();
    let mut page: u32 = 1;
    loop {
        let what = format!("GET /zones?page={page}");
        let url = format!("{base}/zones");
        let query = [("page", page.to_string()), ("per_page", "50".to_string())];
        let resp = http::send(&ctx.retry, cancel, &what, || {
            ctx.http
                .get(&url)
                .query(&query)
                .bearer_auth(token.expose())
                .timeout(ctx.request_timeout)
        })
        .await?;
        let env: CfEnvelope<Vec<CfZone>> = http::json(&what, resp).await?;
        if !env.success {
            let msgs: Vec<_> = env.errors.into_iter().map(|m| m.message).collect();
            return Err(HttpError::decode(
                &what,
                format!("success=false: {}", msgs.join("; ")),
            ));
        }
        zones.extend(
            env.result
                .unwrap_or_default()
                .into_iter()
                .map(|z| (z.id, z.name)),
        );
        let total = env.result_info.map(|i| i.total_pages).unwrap_or(1);
        if page >= total || page >= CF_MAX_ZONE_PAGES {
            break;
        }
        page += 1;
    }
    Ok(zones)
}

/// The name of zone `tag` (`GET /zones/{id}`, one attempt), so a listed zone is labelled
/// like a discovered one; the ID when the name cannot be read (logged).
async fn zone_name(
    ctx: &JobContext,
    base: &str,
    token: &Secret,
    tag: &str,
    cancel: &CancellationToken,
) -> String {
    let what = "GET /zones/{id}";
    let url = format!("{base}/zones/{tag}");
    let once = http::RetryPolicy {
        attempts: 1,
        ..ctx.retry.clone()
    };
    let r = async {
        let resp = http::send(&once, cancel, what, || {
            ctx.http
                .get(&url)
                .bearer_auth(token.expose())
                .timeout(ctx.request_timeout)
        })
        .await?;
        let env: CfEnvelope<CfZone> = http::json(what, resp).await?;
        env.result
            .filter(|z| env.success && !z.name.is_empty())
            .map(|z| z.name)
            .ok_or_else(|| HttpError::decode(what, "no zone name in the answer"))
    }
    .await;
    r.unwrap_or_else(|e| {
        tracing::warn!(zone = tag, error = %e, "cannot read the zone's name; labelling it by ID");
        tag.to_string()
    })
}

/// The zone's daily group for `day`; an empty day (`[]`) is all zeros, not an error.
async fn zone_day(
    ctx: &JobContext,
    base: &str,
    token: &Secret,
    tag: &str,
    day: &str,
    cancel: &CancellationToken,
) -> Result<GqlGroup, HttpError> {
    let what = "POST /graphql";
    let url = format!("{base}/graphql");
    let body = serde_json::json!({
        "query": CF_DAILY_QUERY,
        "variables": { "zoneTag": tag, "since": day },
    });
    let resp = http::send(&ctx.retry, cancel, what, || {
        ctx.http
            .post(&url)
            .json(&body)
            .bearer_auth(token.expose())
            .timeout(ctx.request_timeout)
    })
    .await?;
    let r: GqlResponse = http::json(what, resp).await?;
    // Errors arrive with HTTP 200.
    if let Some(errs) = r.errors.filter(|e| !e.is_empty()) {
        let msgs: Vec<_> = errs.into_iter().map(|m| m.message).collect();
        return Err(HttpError::decode(
            what,
            format!("GraphQL errors: {}", msgs.join("; ")),
        ));
    }
    let zone = r
        .data
        .and_then(|d| d.viewer.zones.into_iter().next())
        .ok_or_else(|| {
            HttpError::decode(what, "no data for the zone (is it visible to the token?)")
        })?;
    Ok(zone.groups.into_iter().next().unwrap_or(GqlGroup {
        sum: GqlSum::default(),
        uniq: GqlUniq::default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pins_the_day() {
        assert!(CF_DAILY_QUERY.contains("$since: Date!"));
        assert!(CF_DAILY_QUERY.contains("filter: {date: $since}"));
        assert!(CF_DAILY_QUERY.contains("limit: 1"));
        assert!(!CF_DAILY_QUERY.contains("orderBy"));
    }
}
