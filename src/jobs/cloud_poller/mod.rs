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

mod cloudflare;
mod plausible;
mod stripe;

pub use stripe::monthly_amount;

use super::clock::unix_seconds;
use super::textfile::Textfile;
use super::{JobContext, JobError};
use crate::desired::model::job::CloudPollerJob;
use chrono::{DateTime, Utc};
use cloudflare::cloudflare;
use plausible::plausible;
use stripe::stripe;
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
