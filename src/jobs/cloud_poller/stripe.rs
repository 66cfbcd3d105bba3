//! Stripe: balance, subscriptions (MRR), today's charges and customers, open disputes;
//! cursor pagination capped and flagged as truncated.

use super::super::http::{self, HttpError};
use super::super::textfile::Textfile;
use super::super::JobContext;
use super::{today_start, STRIPE_MAX_PAGES, STRIPE_PAGE_SIZE};
use crate::desired::model::job::StripeSource;
use crate::secret::Secret;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;

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

pub(super) async fn stripe(
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
}
