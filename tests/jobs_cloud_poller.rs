//! cloud-poller against fake Cloudflare, Stripe and Plausible servers that check what the
//! real client sends and answer with the documented shapes, error paths included.

mod jobs_support;

use jobs_support::*;
use obsd::desired::model::job::{CloudPollerJob, CloudflareSource, PlausibleSource, StripeSource};
use obsd::jobs::cloud_poller;
use obsd::jobs::JobError;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const CF_TOKEN: &str = "cf-token-canary-123";
const STRIPE_KEY: &str = "rk_live_canary_456";
const PLAUSIBLE_KEY: &str = "plausible-canary-789";

fn creds() -> Vec<(&'static str, &'static str)> {
    vec![
        ("CF_API_TOKEN", CF_TOKEN),
        ("STRIPE_API_KEY", STRIPE_KEY),
        ("PLAUSIBLE_API_KEY", PLAUSIBLE_KEY),
    ]
}

fn cf_source(base: &str, zone_tags: &[&str]) -> CloudflareSource {
    CloudflareSource {
        api_base: format!("{base}/client/v4"),
        token_env: "CF_API_TOKEN".into(),
        zone_tags: zone_tags.iter().map(|s| s.to_string()).collect(),
    }
}

fn stripe_source(base: &str) -> StripeSource {
    StripeSource {
        api_base: base.into(),
        key_env: "STRIPE_API_KEY".into(),
        currency: "brl".into(),
    }
}

fn job(
    cf: Option<CloudflareSource>,
    stripe: Option<StripeSource>,
    plausible: Option<PlausibleSource>,
) -> CloudPollerJob {
    CloudPollerJob {
        textfile: "cloud.prom".into(),
        cloudflare: cf,
        stripe,
        plausible,
    }
}

/// The request checks every Cloudflare call must pass; a violation answers 400 so the
/// test fails loudly through `cf_scrape_up`, and is recorded for the assertion message.
fn cf_check(r: &Recorded) -> Result<(), String> {
    if r.header("authorization") != Some(&format!("Bearer {CF_TOKEN}")) {
        return Err(format!("bad auth header {:?}", r.header("authorization")));
    }
    Ok(())
}

fn gql_check(r: &Recorded) -> Result<(String, String), String> {
    cf_check(r)?;
    if r.method != "POST" {
        return Err(format!("GraphQL must be POST, got {}", r.method));
    }
    let body = r.json();
    let q = body["query"].as_str().ok_or("no query")?;
    for needle in [
        "$since: Date!",
        "filter: {date: $since}",
        "limit: 1",
        "httpRequests1dGroups",
        "zoneTag: $zoneTag",
    ] {
        if !q.contains(needle) {
            return Err(format!("query lacks `{needle}`: {q}"));
        }
    }
    if q.contains("orderBy") || q.contains("String!") {
        return Err(format!("query uses a rejected form: {q}"));
    }
    let since = body["variables"]["since"]
        .as_str()
        .ok_or("no $since")?
        .to_string();
    let tag = body["variables"]["zoneTag"]
        .as_str()
        .ok_or("no $zoneTag")?
        .to_string();
    Ok((tag, since))
}

fn gql_day(
    requests: u64,
    bytes: u64,
    cached: u64,
    threats: u64,
    enc: u64,
    uniques: u64,
) -> serde_json::Value {
    json!({"data": {"viewer": {"zones": [{"httpRequests1dGroups": [{
        "dimensions": {"date": "2026-03-15"},
        "sum": {"requests": requests, "bytes": bytes, "cachedRequests": cached, "threats": threats, "encryptedRequests": enc},
        "uniq": {"uniques": uniques}
    }]}]}}, "errors": null})
}

fn cf_fake_ok(r: &Recorded) -> Reply {
    match r.path.as_str() {
        "/client/v4/zones" => {
            if let Err(e) = cf_check(r) {
                return Reply::status(
                    400,
                    json!({"success": false, "errors": [{"code": 1, "message": e}]}),
                );
            }
            if r.q("per_page") != Some("50") {
                return Reply::status(
                    400,
                    json!({"success": false, "errors": [{"code": 2, "message": "per_page"}]}),
                );
            }
            let page: u32 = r.q("page").and_then(|p| p.parse().ok()).unwrap_or(0);
            let zones = match page {
                1 => json!([{"id": "z1", "name": "tlsstress.art"}]),
                2 => json!([{"id": "z2", "name": "quiet.example"}]),
                _ => {
                    return Reply::status(
                        400,
                        json!({"success": false, "errors": [{"code": 3, "message": "page"}]}),
                    )
                }
            };
            Reply::json(
                json!({"success": true, "errors": [], "messages": [], "result": zones,
                "result_info": {"page": page, "per_page": 50, "count": 1, "total_count": 2, "total_pages": 2}}),
            )
        }
        "/client/v4/graphql" => match gql_check(r) {
            Err(e) => Reply::status(400, json!({"errors": [{"message": e}]})),
            Ok((_, since)) if since != "2026-03-15" => Reply::json(
                json!({"data": null, "errors": [{"message": format!("wrong day {since}")}]}),
            ),
            Ok((tag, _)) if tag == "z1" => Reply::json(gql_day(1000, 5_000_000, 600, 3, 990, 250)),
            // A day without data is an empty list, not an error.
            Ok(_) => Reply::json(
                json!({"data": {"viewer": {"zones": [{"httpRequests1dGroups": []}]}}, "errors": null}),
            ),
        },
        // Zone details, for zones listed by ID.
        p if p.starts_with("/client/v4/zones/") && r.method == "GET" => {
            if let Err(e) = cf_check(r) {
                return Reply::status(400, json!({"success": false, "errors": [{"message": e}]}));
            }
            let name = match &p["/client/v4/zones/".len()..] {
                "z1" => "tlsstress.art",
                "z2" => "quiet.example",
                other => {
                    return Reply::status(
                        404,
                        json!({"success": false, "errors": [{"code": 1001, "message": format!("no zone {other}")}]}),
                    )
                }
            };
            Reply::json(json!({"success": true, "errors": [], "messages": [],
                "result": {"id": &p["/client/v4/zones/".len()..], "name": name, "status": "active"}}))
        }
        other => Reply::status(
            404,
            json!({"success": false, "errors": [{"message": format!("no route {other}")}]}),
        ),
    }
}

fn midnight_unix() -> String {
    noon()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp()
        .to_string()
}

fn stripe_check(r: &Recorded) -> Result<(), String> {
    if r.method != "GET" {
        return Err(format!("method {}", r.method));
    }
    if r.header("authorization") != Some(&format!("Bearer {STRIPE_KEY}")) {
        return Err("bad auth".into());
    }
    if r.path != "/v1/balance" && r.q("limit") != Some("100") {
        return Err(format!("limit {:?}", r.q("limit")));
    }
    if (r.path == "/v1/charges" || r.path == "/v1/customers")
        && r.q("created[gte]") != Some(&midnight_unix())
    {
        return Err(format!("created[gte] {:?}", r.q("created[gte]")));
    }
    if r.path == "/v1/subscriptions" && r.q("status") != Some("active") {
        return Err("status=active missing".into());
    }
    if r.path == "/v1/disputes" && r.q("status").is_some() {
        return Err("disputes have no status filter".into());
    }
    Ok(())
}

fn list(data: serde_json::Value, has_more: bool) -> Reply {
    Reply::json(json!({"object": "list", "url": "/v1/x", "has_more": has_more, "data": data}))
}

fn stripe_err(status: u16, kind: &str, msg: &str) -> Reply {
    Reply::status(status, json!({"error": {"type": kind, "message": msg}}))
}

fn sub(id: &str, items: serde_json::Value) -> serde_json::Value {
    json!({"id": id, "object": "subscription", "status": "active", "items": {"object": "list", "data": items, "has_more": false}})
}

fn item(unit_amount: Option<i64>, quantity: u64, interval: &str, count: u64) -> serde_json::Value {
    json!({"object": "subscription_item", "quantity": quantity,
           "price": {"unit_amount": unit_amount, "currency": "brl", "recurring": {"interval": interval, "interval_count": count}}})
}

fn stripe_fake_ok(r: &Recorded) -> Reply {
    if let Err(e) = stripe_check(r) {
        return stripe_err(400, "invalid_request_error", &e);
    }
    match (r.path.as_str(), r.q("starting_after")) {
        ("/v1/balance", _) => Reply::json(json!({"object": "balance",
            "available": [{"amount": 12345, "currency": "brl", "source_types": {"card": 12345}}, {"amount": -50, "currency": "usd"}],
            "pending": [{"amount": 500, "currency": "brl"}, {"amount": 100, "currency": "brl"}]})),
        ("/v1/subscriptions", None) => list(
            json!([
                sub("sub_1", json!([item(Some(1000), 2, "month", 1)])),
                sub(
                    "sub_2",
                    json!([item(Some(12000), 1, "year", 1), item(None, 4, "month", 1)])
                ),
            ]),
            true,
        ),
        ("/v1/subscriptions", Some("sub_2")) => list(
            json!([sub("sub_3", json!([item(Some(100), 3, "week", 2)]))]),
            false,
        ),
        ("/v1/charges", None) => list(
            json!([
                {"id": "ch_1", "amount": 1000, "currency": "brl", "status": "succeeded"},
                {"id": "ch_2", "amount": 500, "currency": "brl", "status": "succeeded"},
                {"id": "ch_3", "amount": 700, "currency": "brl", "status": "failed"},
                {"id": "ch_4", "amount": 300, "currency": "brl", "status": "pending"},
            ]),
            false,
        ),
        ("/v1/customers", None) => list(
            json!([{"id": "cus_1"}, {"id": "cus_2"}, {"id": "cus_3"}]),
            false,
        ),
        ("/v1/disputes", None) => list(
            json!([
                {"id": "dp_1", "status": "needs_response"},
                {"id": "dp_2", "status": "won"},
                {"id": "dp_3", "status": "under_review"},
                {"id": "dp_4", "status": "warning_needs_response"},
                {"id": "dp_5", "status": "lost"},
            ]),
            false,
        ),
        (p, a) => stripe_err(
            404,
            "invalid_request_error",
            &format!("unexpected {p} starting_after={a:?}"),
        ),
    }
}

async fn run(ctx: &obsd::jobs::JobContext, job: &CloudPollerJob) -> Result<(), JobError> {
    cloud_poller::run(ctx, job, &CancellationToken::new(), None).await
}

#[tokio::test]
async fn full_poll_writes_every_lld_metric() {
    let cf = serve(cf_fake_ok).await;
    let stripe = serve(stripe_fake_ok).await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), &creds(), FixedClock::at(noon()));
    let job = job(
        Some(cf_source(&cf.base, &[])),
        Some(stripe_source(&stripe.base)),
        None,
    );
    run(&ctx, &job).await.unwrap();

    // Discovery walked both pages.
    let pages: Vec<_> = cf
        .requests_to("/client/v4/zones")
        .iter()
        .map(|r| r.q("page").unwrap().to_string())
        .collect();
    assert_eq!(pages, ["1", "2"]);
    assert_eq!(cf.requests_to("/client/v4/graphql").len(), 2);

    let t = read_textfile(&ctx, "cloud.prom");
    assert_eq!(t.value("cf_scrape_up", &[]), Some(1.0));
    let z: &[(&str, &str)] = &[("zone", "tlsstress.art")];
    assert_eq!(t.value("cf_requests_total", z), Some(1000.0));
    assert_eq!(t.value("cf_bytes_total", z), Some(5_000_000.0));
    assert_eq!(t.value("cf_cached_requests_total", z), Some(600.0));
    assert_eq!(t.value("cf_threats_total", z), Some(3.0));
    assert_eq!(t.value("cf_encrypted_requests_total", z), Some(990.0));
    assert_eq!(t.value("cf_unique_visitors", z), Some(250.0));
    assert_eq!(
        t.value("cf_requests_total", &[("zone", "quiet.example")]),
        Some(0.0)
    );
    assert_eq!(
        t.value("cf_unique_visitors", &[("zone", "quiet.example")]),
        Some(0.0)
    );

    assert_eq!(t.value("stripe_scrape_up", &[]), Some(1.0));
    assert_eq!(
        t.value("stripe_balance_available_cents", &[("currency", "brl")]),
        Some(12345.0)
    );
    assert_eq!(
        t.value("stripe_balance_available_cents", &[("currency", "usd")]),
        Some(-50.0)
    );
    assert_eq!(
        t.value("stripe_balance_pending_cents", &[("currency", "brl")]),
        Some(600.0)
    );
    assert_eq!(t.value("stripe_active_subscriptions", &[]), Some(3.0));
    // 1000×2 (month) + 12000/12 (year) + 0 (null unit_amount) + 100×3×52/12/2 (2-weekly) = 3650
    assert_eq!(
        t.value("stripe_mrr_cents", &[("currency", "brl")]),
        Some(3650.0)
    );
    assert_eq!(
        t.value("stripe_charges_today", &[("status", "succeeded")]),
        Some(2.0)
    );
    assert_eq!(
        t.value("stripe_charges_today", &[("status", "failed")]),
        Some(1.0)
    );
    assert_eq!(
        t.value("stripe_charges_today", &[("status", "pending")]),
        Some(1.0)
    );
    assert_eq!(
        t.value("stripe_charge_volume_today_cents", &[("currency", "brl")]),
        Some(1500.0)
    );
    assert_eq!(t.value("stripe_new_customers_today", &[]), Some(3.0));
    assert_eq!(t.value("stripe_open_disputes", &[]), Some(3.0));
    for l in ["subscriptions", "charges", "customers", "disputes"] {
        assert_eq!(
            t.value(&format!("stripe_{l}_truncated"), &[]),
            Some(0.0),
            "{l}"
        );
    }
    // Subscriptions were paged with the cursor of the last item.
    let subs = stripe.requests_to("/v1/subscriptions");
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[0].q("starting_after"), None);
    assert_eq!(subs[1].q("starting_after"), Some("sub_2"));
    assert_eq!(
        t.value("cloud_poller_last_run_timestamp_seconds", &[]),
        Some(noon().timestamp() as f64)
    );
    // No Plausible unless configured.
    assert!(t.all("plausible_scrape_up").is_empty());
    assert_eq!(
        t.types.get("cf_requests_total").map(String::as_str),
        Some("gauge")
    );
}

#[tokio::test]
async fn stripe_pagination_stops_at_twenty_pages_and_flags_truncation() {
    let stripe = serve(|r| {
        if let Err(e) = stripe_check(r) {
            return stripe_err(400, "invalid_request_error", &e);
        }
        match r.path.as_str() {
            "/v1/balance" => Reply::json(json!({"available": [], "pending": []})),
            "/v1/disputes" => {
                // An endless list: page n holds dp_n and says there is more.
                let n = match r.q("starting_after") {
                    None => 1,
                    Some(prev) => prev.trim_start_matches("dp_").parse::<u32>().unwrap() + 1,
                };
                list(
                    json!([{"id": format!("dp_{n}"), "status": "needs_response"}]),
                    true,
                )
            }
            _ => list(json!([]), false),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), &creds(), FixedClock::at(noon()));
    run(&ctx, &job(None, Some(stripe_source(&stripe.base)), None))
        .await
        .unwrap();

    let pages = stripe.requests_to("/v1/disputes");
    assert_eq!(pages.len(), 20);
    for (i, r) in pages.iter().enumerate().skip(1) {
        assert_eq!(r.q("starting_after"), Some(format!("dp_{i}").as_str()));
    }
    let t = read_textfile(&ctx, "cloud.prom");
    assert_eq!(t.value("stripe_disputes_truncated", &[]), Some(1.0));
    assert_eq!(t.value("stripe_open_disputes", &[]), Some(20.0));
    assert_eq!(
        t.value("stripe_scrape_up", &[]),
        Some(1.0),
        "truncation is not a failure"
    );
}

#[tokio::test]
async fn pre_revenue_emits_explicit_zeros() {
    let stripe = serve(|r| {
        if let Err(e) = stripe_check(r) {
            return stripe_err(400, "invalid_request_error", &e);
        }
        match r.path.as_str() {
            "/v1/balance" => Reply::json(json!({"available": [{"amount": 0, "currency": "brl"}], "pending": [{"amount": 0, "currency": "brl"}]})),
            _ => list(json!([]), false),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), &creds(), FixedClock::at(noon()));
    run(&ctx, &job(None, Some(stripe_source(&stripe.base)), None))
        .await
        .unwrap();
    let t = read_textfile(&ctx, "cloud.prom");
    let brl: &[(&str, &str)] = &[("currency", "brl")];
    assert_eq!(t.value("stripe_mrr_cents", brl), Some(0.0));
    assert_eq!(t.value("stripe_charge_volume_today_cents", brl), Some(0.0));
    assert_eq!(t.value("stripe_balance_available_cents", brl), Some(0.0));
    for s in ["succeeded", "pending", "failed"] {
        assert_eq!(t.value("stripe_charges_today", &[("status", s)]), Some(0.0));
    }
    for m in [
        "stripe_active_subscriptions",
        "stripe_new_customers_today",
        "stripe_open_disputes",
    ] {
        assert_eq!(t.value(m, &[]), Some(0.0), "{m}");
    }
    assert_eq!(t.value("stripe_scrape_up", &[]), Some(1.0));
}

#[tokio::test]
async fn graphql_errors_with_http_200_mark_cloudflare_down() {
    let cf = serve(|r| match gql_check(r) {
        Ok(_) => Reply::json(json!({"data": null, "errors": [{"message": "unknown field", "path": ["viewer"], "extensions": {"code": "x"}}]})),
        Err(e) => Reply::status(400, json!({"errors": [{"message": e}]})),
    })
    .await;
    let stripe = serve(stripe_fake_ok).await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), &creds(), FixedClock::at(noon()));
    let err = run(
        &ctx,
        &job(
            Some(cf_source(&cf.base, &["tag-1"])),
            Some(stripe_source(&stripe.base)),
            None,
        ),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("cloudflare: zone tag-1: POST /graphql"),
        "{msg}"
    );
    assert!(msg.contains("GraphQL errors: unknown field"), "{msg}");
    // Explicit tags: no discovery.
    assert!(cf.requests_to("/client/v4/zones").is_empty());
    assert_eq!(
        cf.requests_to("/client/v4/graphql").len(),
        1,
        "a GraphQL error is not retried"
    );
    let t = read_textfile(&ctx, "cloud.prom");
    assert_eq!(t.value("cf_scrape_up", &[]), Some(0.0));
    assert!(t.all("cf_requests_total").is_empty());
    // The other source is unaffected.
    assert_eq!(t.value("stripe_scrape_up", &[]), Some(1.0));
    assert!(t
        .value("cloud_poller_last_run_timestamp_seconds", &[])
        .is_some());
}

#[tokio::test]
async fn unauthorized_and_forbidden_fail_soft_without_retries() {
    let cf = serve(|_| {
        Reply::status(403, json!({"success": false, "errors": [{"code": 9109, "message": "Unauthorized to access requested resource"}], "result": null}))
    })
    .await;
    let stripe = serve(|_| {
        stripe_err(
            401,
            "invalid_request_error",
            "Invalid API Key provided: rk_live_****_456",
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), &creds(), FixedClock::at(noon()));
    let err = run(
        &ctx,
        &job(
            Some(cf_source(&cf.base, &[])),
            Some(stripe_source(&stripe.base)),
            None,
        ),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(
            "cloudflare: GET /zones?page=1: HTTP 403: Unauthorized to access requested resource"
        ),
        "{msg}"
    );
    assert!(
        msg.contains("stripe: GET /v1/balance: HTTP 401: invalid_request_error: Invalid API Key"),
        "{msg}"
    );
    assert_eq!(cf.requests().len(), 1);
    // One call per Stripe endpoint, none retried.
    assert_eq!(stripe.requests().len(), 5);
    let t = read_textfile(&ctx, "cloud.prom");
    assert_eq!(t.value("cf_scrape_up", &[]), Some(0.0));
    assert_eq!(t.value("stripe_scrape_up", &[]), Some(0.0));
    // A failed list never turns into a misleading zero.
    assert!(t.all("stripe_mrr_cents").is_empty());
    assert!(t.all("stripe_open_disputes").is_empty());
    let text = std::fs::read_to_string(dir.path().join("textfiles/cloud.prom")).unwrap();
    for secret in [CF_TOKEN, STRIPE_KEY] {
        assert!(!msg.contains(secret) && !text.contains(secret));
    }
}

#[tokio::test]
async fn rate_limit_honours_retry_after_then_succeeds() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let cf = serve(move |r| {
        if r.path == "/client/v4/graphql" && c.fetch_add(1, Ordering::SeqCst) == 0 {
            return Reply::status(429, json!({"errors": [{"message": "rate limited"}]}))
                .header("retry-after", "1");
        }
        cf_fake_ok(r)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), &creds(), FixedClock::at(noon()));
    run(&ctx, &job(Some(cf_source(&cf.base, &["z1"])), None, None))
        .await
        .unwrap();
    let gql = cf.requests_to("/client/v4/graphql");
    assert_eq!(gql.len(), 2);
    let waited = gql[1].at.duration_since(gql[0].at);
    assert!(
        waited >= Duration::from_millis(950),
        "waited only {waited:?}"
    );
    let t = read_textfile(&ctx, "cloud.prom");
    assert_eq!(t.value("cf_scrape_up", &[]), Some(1.0));
    // Listed by ID, labelled by name.
    assert_eq!(
        t.value("cf_requests_total", &[("zone", "tlsstress.art")]),
        Some(1000.0)
    );
}

/// The `zone` label is the zone's name whether the zones are discovered or listed by ID;
/// a zone whose name cannot be read keeps its ID.
#[tokio::test]
async fn listed_zones_are_labelled_by_name() {
    let cf = serve(cf_fake_ok).await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), &creds(), FixedClock::at(noon()));
    run(
        &ctx,
        &job(Some(cf_source(&cf.base, &["z1", "z2", "z9"])), None, None),
    )
    .await
    .unwrap();
    assert!(
        cf.requests_to("/client/v4/zones").is_empty(),
        "no discovery"
    );
    assert_eq!(cf.requests_to("/client/v4/zones/z1").len(), 1);
    let t = read_textfile(&ctx, "cloud.prom");
    assert_eq!(
        t.value("cf_requests_total", &[("zone", "tlsstress.art")]),
        Some(1000.0)
    );
    assert_eq!(
        t.value("cf_requests_total", &[("zone", "quiet.example")]),
        Some(0.0)
    );
    assert_eq!(t.value("cf_requests_total", &[("zone", "z9")]), Some(0.0));
    assert!(t.value("cf_requests_total", &[("zone", "z1")]).is_none());
}

#[tokio::test]
async fn a_long_retry_after_is_capped_and_attempts_are_bounded() {
    let cf = serve(|_| {
        Reply::status(429, json!({"errors": [{"message": "slow down"}]}))
            .header("retry-after", "300")
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut ctx = context(dir.path(), &creds(), FixedClock::at(noon()));
    ctx.retry.max_delay = Duration::from_millis(100);
    let started = std::time::Instant::now();
    let zones = ["z1", "z2", "z3"];
    let err = run(&ctx, &job(Some(cf_source(&cf.base, &zones)), None, None))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        cf.requests().len(),
        3,
        "attempts are bounded; other zones not tried"
    );
    assert_eq!(
        err.to_string(),
        "cloudflare: zone z1: POST /graphql: HTTP 429: slow down; \
         2 more zone(s) skipped while rate limited"
    );
    assert_eq!(
        read_textfile(&ctx, "cloud.prom").value("cf_scrape_up", &[]),
        Some(0.0)
    );
}

#[tokio::test]
async fn server_errors_back_off_then_succeed() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let stripe = serve(move |r| {
        if r.path == "/v1/balance" && c.fetch_add(1, Ordering::SeqCst) < 2 {
            return Reply::status(
                503,
                json!({"error": {"type": "api_error", "message": "try again"}}),
            );
        }
        stripe_fake_ok(r)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), &creds(), FixedClock::at(noon()));
    run(&ctx, &job(None, Some(stripe_source(&stripe.base)), None))
        .await
        .unwrap();
    assert_eq!(stripe.requests_to("/v1/balance").len(), 3);
    let t = read_textfile(&ctx, "cloud.prom");
    assert_eq!(t.value("stripe_scrape_up", &[]), Some(1.0));
    assert_eq!(
        t.value("stripe_balance_available_cents", &[("currency", "brl")]),
        Some(12345.0)
    );
}

#[tokio::test]
async fn plausible_per_site_with_a_timeout() {
    let p = serve(|r| {
        let body = r.json();
        let ok = r.method == "POST"
            && r.path == "/api/v2/query"
            && r.header("authorization") == Some(&format!("Bearer {PLAUSIBLE_KEY}"))
            && body["metrics"] == json!(["visitors", "pageviews", "bounce_rate"])
            && body["date_range"] == "day";
        if !ok {
            return Reply::status(400, json!({"error": format!("bad request {}", r.body_str())}));
        }
        match body["site_id"].as_str() {
            Some("slow.example") => Reply::json(json!({"results": []})).delayed(Duration::from_secs(5)),
            Some(_) => Reply::json(json!({"results": [{"metrics": [42, 99, 37.5], "dimensions": []}], "meta": {}, "query": {}})),
            None => Reply::status(400, json!({"error": "no site"})),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut ctx = context(dir.path(), &creds(), FixedClock::at(noon()));
    ctx.request_timeout = Duration::from_millis(300);
    let source = PlausibleSource {
        api_base: p.base.clone(),
        key_env: "PLAUSIBLE_API_KEY".into(),
        site_ids: vec!["tlsstress.art".into(), "slow.example".into()],
    };
    let err = run(&ctx, &job(None, None, Some(source))).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("plausible: site slow.example: POST /api/v2/query: timed out"),
        "{err}"
    );
    let t = read_textfile(&ctx, "cloud.prom");
    let s: &[(&str, &str)] = &[("site", "tlsstress.art")];
    assert_eq!(t.value("plausible_visitors", s), Some(42.0));
    assert_eq!(t.value("plausible_pageviews", s), Some(99.0));
    assert_eq!(t.value("plausible_bounce_rate", s), Some(37.5));
    assert_eq!(t.value("plausible_scrape_up", s), Some(1.0));
    assert_eq!(
        t.value("plausible_scrape_up", &[("site", "slow.example")]),
        Some(0.0)
    );
    assert!(t.all("plausible_visitors").len() == 1);
}

#[tokio::test]
async fn missing_credentials_fail_soft_without_calling_out() {
    let cf = serve(cf_fake_ok).await;
    let stripe = serve(stripe_fake_ok).await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), &[], FixedClock::at(noon()));
    let err = run(
        &ctx,
        &job(
            Some(cf_source(&cf.base, &[])),
            Some(stripe_source(&stripe.base)),
            None,
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cloudflare: `CF_API_TOKEN` is not set in the env file; stripe: `STRIPE_API_KEY` is not set in the env file"
    );
    assert!(cf.requests().is_empty() && stripe.requests().is_empty());
    let t = read_textfile(&ctx, "cloud.prom");
    assert_eq!(t.value("cf_scrape_up", &[]), Some(0.0));
    assert_eq!(t.value("stripe_scrape_up", &[]), Some(0.0));
}

#[tokio::test]
async fn no_textfile_dir_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut ctx = context(dir.path(), &creds(), FixedClock::at(noon()));
    ctx.textfile_dir = None;
    let err = run(&ctx, &job(None, None, None)).await.unwrap_err();
    assert!(matches!(err, JobError::Config(_)), "{err}");
}

// ------------------------------------------------------------------ the run's time budget

fn plausible_source(base: &str) -> PlausibleSource {
    PlausibleSource {
        api_base: base.into(),
        key_env: "PLAUSIBLE_API_KEY".into(),
        site_ids: vec!["tlsstress.art".into(), "shop.example".into()],
    }
}

fn plausible_ok() -> Reply {
    Reply::json(
        json!({"results": [{"metrics": [42, 99, 37.5], "dimensions": []}], "meta": {}, "query": {}}),
    )
}

/// The values every written file must carry from the two healthy sources.
fn assert_cf_and_stripe_fresh(t: &obsd::jobs::textfile::Parsed) {
    assert_eq!(t.value("cf_scrape_up", &[]), Some(1.0));
    assert_eq!(
        t.value("cf_requests_total", &[("zone", "tlsstress.art")]),
        Some(1000.0)
    );
    assert_eq!(t.value("stripe_scrape_up", &[]), Some(1.0));
    assert_eq!(
        t.value("stripe_balance_available_cents", &[("currency", "brl")]),
        Some(12345.0)
    );
}

/// Plausible answers 429 with `Retry-After: 300` (production retry policy: up to 30 s
/// a wait, 4 attempts). The run has 10 s: no wait that ends past its budget is started,
/// so the file is written in time, Plausible marked down, the others fresh — and the
/// previous run's Plausible values are gone, not left looking current.
#[tokio::test]
async fn rate_limited_plausible_does_not_blank_the_others() {
    let limited = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let l = limited.clone();
    let p = serve(move |_| {
        if l.load(Ordering::SeqCst) {
            Reply::status(429, json!({"error": "too many requests"})).header("retry-after", "300")
        } else {
            plausible_ok()
        }
    })
    .await;
    let cf = serve(cf_fake_ok).await;
    let stripe = serve(stripe_fake_ok).await;
    let dir = tempfile::tempdir().unwrap();
    let mut ctx = context(dir.path(), &creds(), FixedClock::at(noon()));
    ctx.retry = obsd::jobs::RetryPolicy::default();
    let job = job(
        Some(cf_source(&cf.base, &[])),
        Some(stripe_source(&stripe.base)),
        Some(plausible_source(&p.base)),
    );
    let budget = Duration::from_secs(10);

    // A good poll first.
    let deadline = tokio::time::Instant::now() + budget;
    cloud_poller::run(&ctx, &job, &CancellationToken::new(), Some(deadline))
        .await
        .unwrap();
    let t = read_textfile(&ctx, "cloud.prom");
    assert_eq!(
        t.value("plausible_visitors", &[("site", "tlsstress.art")]),
        Some(42.0)
    );

    // Now rate limited for five minutes.
    limited.store(true, Ordering::SeqCst);
    let before = p.requests().len();
    let started = tokio::time::Instant::now();
    let deadline = started + budget;
    let err = cloud_poller::run(&ctx, &job, &CancellationToken::new(), Some(deadline))
        .await
        .unwrap_err();
    let took = started.elapsed();
    println!("rate-limited poll finished in {took:?} of a {budget:?} budget");
    assert!(
        tokio::time::Instant::now() < deadline,
        "the run outlived its budget ({took:?})"
    );
    assert!(matches!(err, JobError::Partial(_)), "{err}");
    assert!(err.to_string().contains("HTTP 429"), "{err}");
    // One attempt per site: a 30 s wait does not fit in the budget.
    assert_eq!(p.requests().len() - before, 2);
    let t = read_textfile(&ctx, "cloud.prom");
    assert_cf_and_stripe_fresh(&t);
    for site in ["tlsstress.art", "shop.example"] {
        assert_eq!(t.value("plausible_scrape_up", &[("site", site)]), Some(0.0));
    }
    assert!(
        t.all("plausible_visitors").is_empty(),
        "stale Plausible values left in the file"
    );
}

/// A source that never answers (request timeout longer than the run) is abandoned when
/// the file must be written: marked down, its partial values dropped, the others kept.
#[tokio::test]
async fn a_source_that_cannot_finish_is_abandoned_and_the_rest_written() {
    let p = serve(|_| plausible_ok().delayed(Duration::from_secs(120))).await;
    let cf = serve(cf_fake_ok).await;
    let stripe = serve(stripe_fake_ok).await;
    let dir = tempfile::tempdir().unwrap();
    let mut ctx = context(dir.path(), &creds(), FixedClock::at(noon()));
    ctx.request_timeout = Duration::from_secs(60);
    let job = job(
        Some(cf_source(&cf.base, &[])),
        Some(stripe_source(&stripe.base)),
        Some(plausible_source(&p.base)),
    );
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(8);
    let err = cloud_poller::run(&ctx, &job, &CancellationToken::new(), Some(deadline))
        .await
        .unwrap_err();
    assert!(
        tokio::time::Instant::now() < deadline,
        "outlived the budget"
    );
    // Abandoned at the write-by time, by the HTTP call or around the source, whichever
    // notices first.
    let msg = err.to_string();
    assert!(
        msg.starts_with("plausible: ") && msg.contains("time budget"),
        "{msg}"
    );
    let t = read_textfile(&ctx, "cloud.prom");
    assert_cf_and_stripe_fresh(&t);
    for site in ["tlsstress.art", "shop.example"] {
        assert_eq!(t.value("plausible_scrape_up", &[("site", site)]), Some(0.0));
    }
    assert!(t.all("plausible_visitors").is_empty());
    assert!(t
        .value("cloud_poller_last_run_timestamp_seconds", &[])
        .is_some());
}

/// The same through the job executor, as the daemon runs it: the budget comes from the
/// Job's `timeout` (4 s here), with the production retry policy (waits up to 30 s).
/// Plausible rate limited for 5 minutes → the file is written within the timeout,
/// Plausible down, Cloudflare and Stripe fresh.
#[tokio::test]
async fn executor_bounds_the_run_by_the_jobs_timeout() {
    use obsd::jobs::{BodyExecutor, Executor, JobRun};
    let p = serve(|_| {
        Reply::status(429, json!({"error": "too many requests"})).header("retry-after", "300")
    })
    .await;
    let cf = serve(cf_fake_ok).await;
    let stripe = serve(stripe_fake_ok).await;
    let dir = tempfile::tempdir().unwrap();
    let mut ctx = context(dir.path(), &creds(), FixedClock::at(noon()));
    ctx.retry = obsd::jobs::RetryPolicy::default();
    let tf = ctx.textfile_dir.clone().unwrap();
    let spec: obsd::desired::model::JobSpec = serde_json::from_value(json!({
        "schedule": "@every 5m",
        "timeout": "4s",
        "cloudPoller": {
            "cloudflare": {"apiBase": format!("{}/client/v4", cf.base), "tokenEnv": "CF_API_TOKEN"},
            "stripe": {"apiBase": stripe.base, "keyEnv": "STRIPE_API_KEY", "currency": "brl"},
            "plausible": {"apiBase": p.base, "keyEnv": "PLAUSIBLE_API_KEY",
                          "siteIds": ["tlsstress.art"]}
        }
    }))
    .unwrap();
    let exec = BodyExecutor::new(ctx);
    let started = tokio::time::Instant::now();
    let r = exec
        .run(JobRun {
            name: "cloud-poller".into(),
            spec: Arc::new(spec),
            cancel: CancellationToken::new(),
        })
        .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(matches!(r, Err(JobError::Partial(_))), "{r:?}");
    let text = std::fs::read_to_string(tf.join("cloud.prom")).unwrap();
    let t = obsd::jobs::textfile::parse(&text).unwrap();
    assert_cf_and_stripe_fresh(&t);
    assert_eq!(
        t.value("plausible_scrape_up", &[("site", "tlsstress.art")]),
        Some(0.0)
    );
}
