//! Plausible (off by default): today's visitors, pageviews and bounce rate per site.

use super::super::http::{self, HttpError};
use super::super::textfile::Textfile;
use super::super::JobContext;
use crate::desired::model::job::PlausibleSource;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

#[derive(Deserialize)]
struct PlausibleResponse {
    #[serde(default)]
    results: Vec<PlausibleRow>,
}

#[derive(Deserialize)]
struct PlausibleRow {
    #[serde(default)]
    metrics: Vec<Option<f64>>,
}

/// Per site: visitors, pageviews and bounce rate for today, and `plausible_scrape_up`.
pub(super) async fn plausible(
    ctx: &JobContext,
    p: &PlausibleSource,
    cancel: &CancellationToken,
    tf: &mut Textfile,
) -> Result<(), String> {
    let key = match ctx.secret(&p.key_env) {
        Ok(k) => k,
        Err(e) => {
            for site in &p.site_ids {
                tf.gauge("plausible_scrape_up", "")
                    .sample(&[("site", site)], 0.0);
            }
            return Err(e.to_string());
        }
    };
    let url = format!("{}/api/v2/query", p.api_base.trim_end_matches('/'));
    let mut errors = Vec::new();
    for site in &p.site_ids {
        let what = "POST /api/v2/query";
        let body = serde_json::json!({
            "site_id": site,
            "metrics": ["visitors", "pageviews", "bounce_rate"],
            "date_range": "day",
        });
        let result = async {
            let resp = http::send(&ctx.retry, cancel, what, || {
                ctx.http
                    .post(&url)
                    .json(&body)
                    .bearer_auth(key.expose())
                    .timeout(ctx.request_timeout)
            })
            .await?;
            let r: PlausibleResponse = http::json(what, resp).await?;
            let m = r
                .results
                .into_iter()
                .next()
                .map(|row| row.metrics)
                .unwrap_or_default();
            Ok::<_, HttpError>([0, 1, 2].map(|i| m.get(i).copied().flatten().unwrap_or(0.0)))
        }
        .await;
        let l: &[(&str, &str)] = &[("site", site)];
        match result {
            Ok([visitors, pageviews, bounce]) => {
                tf.gauge("plausible_visitors", "").sample(l, visitors);
                tf.gauge("plausible_pageviews", "").sample(l, pageviews);
                tf.gauge("plausible_bounce_rate", "").sample(l, bounce);
                tf.gauge("plausible_scrape_up", "").sample(l, 1.0);
            }
            Err(e) => {
                tf.gauge("plausible_scrape_up", "").sample(l, 0.0);
                errors.push(format!("site {site}: {e}"));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}
