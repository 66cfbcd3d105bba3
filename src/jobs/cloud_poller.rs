//! cloud-poller (LLD section 6): Cloudflare, Stripe and Plausible business metrics into
//! one node-exporter textfile (`cloud.prom` by default).
//!
//! Each source fails soft: what it could not read is left out, its `*_scrape_up` is 0,
//! the other sources and the heartbeat are still written, and the run ends as an error
//! naming the failed sources (so `obsctl jobs` and `ObsdJobFailing` show it).
//!
//! Days are UTC: Cloudflare's daily group for today (it grows during the day, restarts
//! at 00:00 UTC) and Stripe's "today" lists (`created[gte]` = today 00:00 UTC) cover the
//! same day.

use super::clock::unix_seconds;
use super::http::{self, HttpError};
use super::textfile::Textfile;
use super::{JobContext, JobError};
use crate::desired::model::job::{CloudPollerJob, CloudflareSource, PlausibleSource, StripeSource};
use crate::secret::Secret;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;

/// Runaway guard for Stripe cursor pagination (contract: flag truncation beyond it).
pub const STRIPE_MAX_PAGES: usize = 20;
/// Stripe's largest page.
const STRIPE_PAGE_SIZE: &str = "100";
/// Runaway guard for Cloudflare zone discovery (50 zones a page).
const CF_MAX_ZONE_PAGES: u32 = 100;

/// The daily-totals query. `$since` must be typed `Date!` (a `String!` is rejected) and
/// the day is pinned by the filter (`orderBy: [date_DESC]` is rejected).
pub const CF_DAILY_QUERY: &str =
    "query($zoneTag: string!, $since: Date!) { viewer { zones(filter: {zoneTag: $zoneTag}) { \
httpRequests1dGroups(limit: 1, filter: {date: $since}) { dimensions { date } \
sum { requests bytes cachedRequests threats encryptedRequests } uniq { uniques } } } } }";

pub async fn run(
    ctx: &JobContext,
    job: &CloudPollerJob,
    cancel: &CancellationToken,
) -> Result<(), JobError> {
    let dir = ctx.textfile_dir()?.to_path_buf();
    let now = ctx.clock.now();
    let mut tf = Textfile::new();
    declare_families(&mut tf);
    let mut failed = Vec::new();

    if let Some(cf) = &job.cloudflare {
        let up = match cloudflare(ctx, cf, now, cancel, &mut tf).await {
            Ok(()) => 1.0,
            Err(e) => {
                failed.push(format!("cloudflare: {e}"));
                0.0
            }
        };
        tf.gauge("cf_scrape_up", "").set(up);
    }
    if let Some(s) = &job.stripe {
        let up = match stripe(ctx, s, now, cancel, &mut tf).await {
            Ok(()) => 1.0,
            Err(e) => {
                failed.push(format!("stripe: {e}"));
                0.0
            }
        };
        tf.gauge("stripe_scrape_up", "").set(up);
    }
    if let Some(p) = &job.plausible {
        if let Err(e) = plausible(ctx, p, cancel, &mut tf).await {
            failed.push(format!("plausible: {e}"));
        }
    }
    tf.gauge("cloud_poller_last_run_timestamp_seconds", "")
        .set(unix_seconds(now));
    tf.write(&dir, &job.textfile)?;

    if failed.is_empty() {
        Ok(())
    } else {
        Err(JobError::Partial(failed.join("; ")))
    }
}

/// Every family with its help text, in file order (families left empty are not written).
fn declare_families(tf: &mut Textfile) {
    let gauges: &[(&str, &str)] = &[
        (
            "cf_requests_total",
            "Cloudflare requests for the zone on the current UTC day.",
        ),
        (
            "cf_bytes_total",
            "Cloudflare bytes served for the zone on the current UTC day.",
        ),
        (
            "cf_cached_requests_total",
            "Cloudflare requests served from cache on the current UTC day.",
        ),
        (
            "cf_threats_total",
            "Cloudflare threats for the zone on the current UTC day.",
        ),
        (
            "cf_encrypted_requests_total",
            "Cloudflare requests over TLS on the current UTC day.",
        ),
        (
            "cf_unique_visitors",
            "Cloudflare unique visitors of the zone on the current UTC day.",
        ),
        (
            "cf_scrape_up",
            "1 if every Cloudflare query of the last poll succeeded.",
        ),
        (
            "stripe_balance_available_cents",
            "Stripe available balance in minor units.",
        ),
        (
            "stripe_balance_pending_cents",
            "Stripe pending balance in minor units.",
        ),
        (
            "stripe_active_subscriptions",
            "Stripe subscriptions with status active.",
        ),
        (
            "stripe_mrr_cents",
            "Monthly recurring revenue of active subscriptions, in minor units.",
        ),
        (
            "stripe_charges_today",
            "Stripe charges created today (UTC) by status.",
        ),
        (
            "stripe_charge_volume_today_cents",
            "Amount of succeeded charges created today (UTC), in minor units.",
        ),
        (
            "stripe_new_customers_today",
            "Stripe customers created today (UTC).",
        ),
        (
            "stripe_open_disputes",
            "Stripe disputes needing response or under review.",
        ),
        (
            "stripe_subscriptions_truncated",
            "1 if the subscription list was cut at the page cap.",
        ),
        (
            "stripe_charges_truncated",
            "1 if today's charge list was cut at the page cap.",
        ),
        (
            "stripe_customers_truncated",
            "1 if today's customer list was cut at the page cap.",
        ),
        (
            "stripe_disputes_truncated",
            "1 if the dispute list was cut at the page cap.",
        ),
        (
            "stripe_scrape_up",
            "1 if every Stripe query of the last poll succeeded.",
        ),
        ("plausible_visitors", "Plausible visitors today."),
        ("plausible_pageviews", "Plausible pageviews today."),
        (
            "plausible_bounce_rate",
            "Plausible bounce rate today (percent).",
        ),
        (
            "plausible_scrape_up",
            "1 if the last Plausible query for the site succeeded.",
        ),
        (
            "cloud_poller_last_run_timestamp_seconds",
            "Unix time the cloud-poller job last wrote this file.",
        ),
    ];
    for (name, help) in gauges {
        tf.gauge(name, help);
    }
}

fn today_start(now: DateTime<Utc>) -> DateTime<Utc> {
    now.date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
}

// ------------------------------------------------------------------------ Cloudflare

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

async fn cloudflare(
    ctx: &JobContext,
    cf: &CloudflareSource,
    now: DateTime<Utc>,
    cancel: &CancellationToken,
    tf: &mut Textfile,
) -> Result<(), String> {
    let token = ctx.secret(&cf.token_env).map_err(|e| e.to_string())?;
    let base = cf.api_base.trim_end_matches('/');
    let zones = if cf.zone_tags.is_empty() {
        discover_zones(ctx, base, token, cancel)
            .await
            .map_err(|e| e.to_string())?
    } else {
        cf.zone_tags
            .iter()
            .map(|t| (t.clone(), t.clone()))
            .collect()
    };
    let day = now.format("%Y-%m-%d").to_string();
    let mut errors = Vec::new();
    for (i, (tag, label)) in zones.iter().enumerate() {
        match zone_day(ctx, base, token, tag, &day, cancel).await {
            Ok(g) => {
                let l: &[(&str, &str)] = &[("zone", label)];
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

// ------------------------------------------------------------------------ Stripe

#[derive(Deserialize)]
struct StripeList<T> {
    data: Vec<T>,
    #[serde(default)]
    has_more: bool,
}

trait StripeObject: DeserializeOwned {
    fn id(&self) -> &str;
}

#[derive(Deserialize)]
struct Balance {
    #[serde(default)]
    available: Vec<Money>,
    #[serde(default)]
    pending: Vec<Money>,
}

#[derive(Deserialize)]
struct Money {
    amount: i64,
    currency: String,
}

#[derive(Deserialize)]
struct Subscription {
    id: String,
    #[serde(default)]
    items: SubscriptionItems,
}

#[derive(Deserialize, Default)]
struct SubscriptionItems {
    #[serde(default)]
    data: Vec<SubscriptionItem>,
}

#[derive(Deserialize)]
struct SubscriptionItem {
    price: Option<Price>,
    quantity: Option<u64>,
}

#[derive(Deserialize)]
struct Price {
    unit_amount: Option<i64>,
    currency: String,
    recurring: Option<Recurring>,
}

#[derive(Deserialize)]
struct Recurring {
    interval: String,
    #[serde(default)]
    interval_count: Option<u64>,
}

#[derive(Deserialize)]
struct Charge {
    id: String,
    amount: i64,
    currency: String,
    status: String,
}

#[derive(Deserialize)]
struct Customer {
    id: String,
}

#[derive(Deserialize)]
struct Dispute {
    id: String,
    status: String,
}

impl StripeObject for Subscription {
    fn id(&self) -> &str {
        &self.id
    }
}
impl StripeObject for Charge {
    fn id(&self) -> &str {
        &self.id
    }
}
impl StripeObject for Customer {
    fn id(&self) -> &str {
        &self.id
    }
}
impl StripeObject for Dispute {
    fn id(&self) -> &str {
        &self.id
    }
}

/// Dispute statuses that still need the merchant (the API has no status filter).
const OPEN_DISPUTE_STATUSES: [&str; 4] = [
    "warning_needs_response",
    "warning_under_review",
    "needs_response",
    "under_review",
];

/// Monthly-normalised amount of one subscription item in minor units:
/// `unit_amount × quantity` (a null `unit_amount` counts 0, a missing quantity 1), then
/// day ×365/12, week ×52/12, month ×1, year ÷12, and ÷`interval_count`. `None` for an
/// interval Stripe does not define.
pub fn monthly_amount(
    unit_amount: Option<i64>,
    quantity: Option<u64>,
    interval: &str,
    interval_count: Option<u64>,
) -> Option<f64> {
    let base = unit_amount.unwrap_or(0) as f64 * quantity.unwrap_or(1) as f64;
    let per_month = match interval {
        "day" => base * 365.0 / 12.0,
        "week" => base * 52.0 / 12.0,
        "month" => base,
        "year" => base / 12.0,
        _ => return None,
    };
    Some(per_month / interval_count.unwrap_or(1).max(1) as f64)
}

struct StripeClient<'a> {
    ctx: &'a JobContext,
    base: &'a str,
    key: &'a Secret,
    cancel: &'a CancellationToken,
}

impl StripeClient<'_> {
    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, HttpError> {
        let what = format!("GET {path}");
        let url = format!("{}{path}", self.base);
        let resp = http::send(&self.ctx.retry, self.cancel, &what, || {
            self.ctx
                .http
                .get(&url)
                .query(query)
                .bearer_auth(self.key.expose())
                .timeout(self.ctx.request_timeout)
        })
        .await?;
        http::json(&what, resp).await
    }

    /// Every item of a list (newest first), following `starting_after` for at most
    /// [`STRIPE_MAX_PAGES`] pages; the flag says the list was cut.
    async fn list<T: StripeObject>(
        &self,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<(Vec<T>, bool), HttpError> {
        let mut items: Vec<T> = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..STRIPE_MAX_PAGES {
            let mut q: Vec<(&str, String)> = params.to_vec();
            q.push(("limit", STRIPE_PAGE_SIZE.to_string()));
            if let Some(a) = &after {
                q.push(("starting_after", a.clone()));
            }
            let page: StripeList<T> = self.get(path, &q).await?;
            let last = page.data.last().map(|o| o.id().to_string());
            items.extend(page.data);
            match (page.has_more, last) {
                (true, Some(id)) => after = Some(id),
                _ => return Ok((items, false)),
            }
        }
        Ok((items, true))
    }
}

async fn stripe(
    ctx: &JobContext,
    s: &StripeSource,
    now: DateTime<Utc>,
    cancel: &CancellationToken,
    tf: &mut Textfile,
) -> Result<(), String> {
    let key = ctx.secret(&s.key_env).map_err(|e| e.to_string())?;
    let c = StripeClient {
        ctx,
        base: s.api_base.trim_end_matches('/'),
        key,
        cancel,
    };
    let zero_currency = s.currency.to_ascii_lowercase();
    let since = today_start(now).timestamp().to_string();
    let mut errors: Vec<String> = Vec::new();

    match c.get::<Balance>("/v1/balance", &[]).await {
        Ok(b) => {
            for (family, entries) in [
                ("stripe_balance_available_cents", &b.available),
                ("stripe_balance_pending_cents", &b.pending),
            ] {
                let mut by_cur: BTreeMap<String, i64> = BTreeMap::new();
                for m in entries {
                    *by_cur.entry(m.currency.to_ascii_lowercase()).or_default() += m.amount;
                }
                if by_cur.is_empty() {
                    by_cur.insert(zero_currency.clone(), 0);
                }
                for (cur, amount) in by_cur {
                    tf.gauge(family, "")
                        .sample(&[("currency", &cur)], amount as f64);
                }
            }
        }
        Err(e) => errors.push(e.to_string()),
    }

    match c
        .list::<Subscription>("/v1/subscriptions", &[("status", "active".into())])
        .await
    {
        Ok((subs, truncated)) => {
            let mut mrr: BTreeMap<String, f64> = BTreeMap::from([(zero_currency.clone(), 0.0)]);
            for item in subs.iter().flat_map(|s| &s.items.data) {
                let Some(price) = &item.price else { continue };
                let Some(rec) = &price.recurring else {
                    continue;
                };
                match monthly_amount(
                    price.unit_amount,
                    item.quantity,
                    &rec.interval,
                    rec.interval_count,
                ) {
                    Some(m) => *mrr.entry(price.currency.to_ascii_lowercase()).or_default() += m,
                    None => {
                        tracing::warn!(interval = %rec.interval, "ignoring a subscription item with an unknown interval")
                    }
                }
            }
            tf.gauge("stripe_active_subscriptions", "")
                .set(subs.len() as f64);
            for (cur, cents) in mrr {
                tf.gauge("stripe_mrr_cents", "")
                    .sample(&[("currency", &cur)], cents.round());
            }
            tf.gauge("stripe_subscriptions_truncated", "")
                .set(flag(truncated));
        }
        Err(e) => errors.push(e.to_string()),
    }

    match c
        .list::<Charge>("/v1/charges", &[("created[gte]", since.clone())])
        .await
    {
        Ok((charges, truncated)) => {
            let mut by_status: BTreeMap<String, u64> = ["succeeded", "pending", "failed"]
                .iter()
                .map(|s| (s.to_string(), 0))
                .collect();
            let mut volume: BTreeMap<String, i64> = BTreeMap::from([(zero_currency.clone(), 0)]);
            for ch in &charges {
                *by_status.entry(ch.status.clone()).or_default() += 1;
                if ch.status == "succeeded" {
                    *volume.entry(ch.currency.to_ascii_lowercase()).or_default() += ch.amount;
                }
            }
            for (status, n) in by_status {
                tf.gauge("stripe_charges_today", "")
                    .sample(&[("status", &status)], n as f64);
            }
            for (cur, amount) in volume {
                tf.gauge("stripe_charge_volume_today_cents", "")
                    .sample(&[("currency", &cur)], amount as f64);
            }
            tf.gauge("stripe_charges_truncated", "")
                .set(flag(truncated));
        }
        Err(e) => errors.push(e.to_string()),
    }

    match c
        .list::<Customer>("/v1/customers", &[("created[gte]", since.clone())])
        .await
    {
        Ok((customers, truncated)) => {
            tf.gauge("stripe_new_customers_today", "")
                .set(customers.len() as f64);
            tf.gauge("stripe_customers_truncated", "")
                .set(flag(truncated));
        }
        Err(e) => errors.push(e.to_string()),
    }

    match c.list::<Dispute>("/v1/disputes", &[]).await {
        Ok((disputes, truncated)) => {
            let open = disputes
                .iter()
                .filter(|d| OPEN_DISPUTE_STATUSES.contains(&d.status.as_str()))
                .count();
            tf.gauge("stripe_open_disputes", "").set(open as f64);
            tf.gauge("stripe_disputes_truncated", "")
                .set(flag(truncated));
        }
        Err(e) => errors.push(e.to_string()),
    }

    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

// ------------------------------------------------------------------------ Plausible

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
async fn plausible(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mrr_normalisation() {
        let m = |a, q, i, c| monthly_amount(a, q, i, c).unwrap();
        assert_eq!(m(Some(1200), Some(1), "month", Some(1)), 1200.0);
        assert_eq!(m(Some(1200), Some(3), "month", Some(1)), 3600.0);
        assert_eq!(m(Some(12000), Some(1), "year", Some(1)), 1000.0);
        assert_eq!(m(Some(1200), Some(1), "year", Some(2)), 50.0);
        assert_eq!(m(Some(100), Some(1), "week", Some(1)), 100.0 * 52.0 / 12.0);
        assert_eq!(m(Some(12), Some(1), "day", Some(1)), 365.0);
        assert_eq!(m(Some(3000), Some(1), "month", Some(3)), 1000.0);
        assert_eq!(m(None, Some(5), "month", Some(1)), 0.0);
        assert_eq!(m(Some(500), None, "month", None), 500.0);
        assert_eq!(m(Some(500), Some(1), "month", Some(0)), 500.0);
        assert_eq!(monthly_amount(Some(1), Some(1), "fortnight", Some(1)), None);
    }

    #[test]
    fn query_pins_the_day() {
        assert!(CF_DAILY_QUERY.contains("$since: Date!"));
        assert!(CF_DAILY_QUERY.contains("filter: {date: $since}"));
        assert!(CF_DAILY_QUERY.contains("limit: 1"));
        assert!(!CF_DAILY_QUERY.contains("orderBy"));
    }
}
