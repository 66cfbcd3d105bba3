//! cloud-poller (LLD section 6): Cloudflare, Stripe and Plausible business metrics into
//! one node-exporter textfile (`cloud.prom` by default).
//!
//! Each source fails soft: what it could not read is left out, its `*_scrape_up` is 0,
//! the other sources and the heartbeat are still written, and the run ends as an error
//! naming the failed sources (so `obsctl jobs` and `ObsdJobFailing` show it).
//!
//! The run keeps within its budget: the sources are polled side by side, every retry
//! and wait is bounded by the time left ([`http::RetryPolicy::deadline`]), and a source
//! still busy when the file must be written (a little before the run's timeout) is
//! abandoned: its partial values are dropped and its `*_scrape_up` is 0, so the others
//! are written on time and nothing stale is left looking fresh.
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
use std::time::Duration;
use stripe::stripe;
use tokio::time::Instant;
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

/// Time kept back from the run's deadline to write the textfile.
const WRITE_MARGIN: Duration = Duration::from_secs(2);

/// When the sources must be done: `WRITE_MARGIN` before the deadline, or a quarter of
/// the time left when that is shorter.
fn write_by(deadline: Option<Instant>) -> Option<Instant> {
    deadline.map(|d| {
        let left = d.saturating_duration_since(Instant::now());
        d - WRITE_MARGIN.min(left / 4)
    })
}

/// `source` within `by`: `Err` naming the budget when it was abandoned.
async fn bounded(
    by: Option<Instant>,
    source: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), Abandoned> {
    match by {
        Some(by) => match tokio::time::timeout_at(by, source).await {
            Ok(r) => r.map_err(Abandoned::Failed),
            Err(_) => Err(Abandoned::OutOfTime),
        },
        None => source.await.map_err(Abandoned::Failed),
    }
}

/// Why a source has no values in this run.
enum Abandoned {
    Failed(String),
    OutOfTime,
}

impl std::fmt::Display for Abandoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Abandoned::Failed(e) => f.write_str(e),
            Abandoned::OutOfTime => f.write_str(
                "abandoned: not finished within the run's time budget (values left out)",
            ),
        }
    }
}

/// One poll. `deadline` is the end of the run's budget (the runner cancels the run
/// then); the textfile is written before it.
pub async fn run(
    ctx: &JobContext,
    job: &CloudPollerJob,
    cancel: &CancellationToken,
    deadline: Option<Instant>,
) -> Result<(), JobError> {
    let dir = ctx.textfile_dir()?.to_path_buf();
    let now = ctx.clock.now();
    let by = write_by(deadline);
    let ctx = &JobContext {
        retry: ctx.retry.within(by),
        ..ctx.clone()
    };
    let mut tf = Textfile::new();
    declare_families(&mut tf);
    let mut failed = Vec::new();

    // Side by side, each into its own file part: one slow source cannot starve the
    // others of the budget.
    let (mut cf_tf, mut st_tf, mut pl_tf) = (Textfile::new(), Textfile::new(), Textfile::new());
    let (cf_r, st_r, pl_r) = tokio::join!(
        async {
            match &job.cloudflare {
                Some(cf) => Some(bounded(by, cloudflare(ctx, cf, now, cancel, &mut cf_tf)).await),
                None => None,
            }
        },
        async {
            match &job.stripe {
                Some(s) => Some(bounded(by, stripe(ctx, s, now, cancel, &mut st_tf)).await),
                None => None,
            }
        },
        async {
            match &job.plausible {
                Some(p) => Some(bounded(by, plausible(ctx, p, cancel, &mut pl_tf)).await),
                None => None,
            }
        },
    );
    for (name, result, mut part, up) in [
        ("cloudflare", cf_r, cf_tf, "cf_scrape_up"),
        ("stripe", st_r, st_tf, "stripe_scrape_up"),
    ] {
        let Some(result) = result else { continue };
        let value = match result {
            Ok(()) => 1.0,
            Err(e) => {
                if matches!(e, Abandoned::OutOfTime) {
                    part = Textfile::new();
                }
                failed.push(format!("{name}: {e}"));
                0.0
            }
        };
        tf.append(part);
        tf.gauge(up, "").set(value);
    }
    if let (Some(result), Some(p)) = (pl_r, &job.plausible) {
        match result {
            Ok(()) => tf.append(pl_tf),
            // Per site: its values and `plausible_scrape_up` were written as it went.
            Err(e @ Abandoned::Failed(_)) => {
                tf.append(pl_tf);
                failed.push(format!("plausible: {e}"));
            }
            // Unfinished: every site down, nothing half-written.
            Err(e @ Abandoned::OutOfTime) => {
                for site in &p.site_ids {
                    tf.gauge("plausible_scrape_up", "")
                        .sample(&[("site", site)], 0.0);
                }
                failed.push(format!("plausible: {e}"));
            }
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
