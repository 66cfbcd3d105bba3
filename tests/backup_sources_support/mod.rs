//! Fakes for the backup sources: Cloudflare, Stripe and Auth0 on 127.0.0.1, each
//! checking the auth header and the paging parameters the real client sends, each
//! planting recognisable secret values ([`CANARIES`]) in every answer; and moto's S3
//! server for the bucket.

use crate::jobs_support::{serve, FakeServer, Recorded, Reply};
use serde_json::{json, Value};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub const CF_TOKEN: &str = "CANARYcfTokenQ9x81";
pub const CF_ACCOUNT: &str = "acct0123";
pub const STRIPE_KEY: &str = "rk_live_CANARYstripeKeyZ72";
pub const AUTH0_ID: &str = "m2mClientId01";
pub const AUTH0_SECRET: &str = "CANARYauth0M2mSecretP44";
pub const AUTH0_ACCESS: &str = "CANARYauth0AccessTokenJ3";

/// Every secret value the fakes hand out or the env file holds: none may reach the
/// bucket, the logs, the status or the metrics.
pub const CANARIES: [&str; 14] = [
    CF_TOKEN,
    STRIPE_KEY,
    AUTH0_SECRET,
    AUTH0_ACCESS,
    "CANARYcfDnsPrivKey",
    "CANARYcfRulePassword",
    "CANARYcfR2Credential",
    "whsec_CANARYwebhookSecret",
    "CANARYstripeProductSecret",
    "CANARYauth0ClientSecret",
    "CANARYauth0SigningKey",
    "CANARYauth0ConnSecret",
    "CANARYauth0ActionSecret",
    "CANARYauth0TenantPassword",
];

/// A fake that answers 403 for everything while `broken` is set.
pub struct Fake {
    pub server: FakeServer,
    pub broken: Arc<AtomicBool>,
}

impl Fake {
    pub fn base(&self) -> String {
        self.server.base.clone()
    }
    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }
}

fn bearer_is(r: &Recorded, token: &str) -> bool {
    r.header("authorization") == Some(format!("Bearer {token}").as_str())
}

fn cf_env(result: Value, page: Option<(u64, u64)>) -> Reply {
    let mut v = json!({"success": true, "errors": [], "messages": [], "result": result});
    if let Some((p, total)) = page {
        v["result_info"] = json!({"page": p, "per_page": 50, "total_pages": total});
    }
    Reply::json(v)
}

/// Cloudflare: two pages of zones (three zones), two pages of DNS records per zone,
/// one ruleset per zone, page rules, one R2 bucket.
pub async fn cloudflare() -> Fake {
    let broken = Arc::new(AtomicBool::new(false));
    let b = broken.clone();
    let server = serve(move |r| {
        if b.load(Ordering::SeqCst) {
            return Reply::status(403, json!({"success": false, "errors": [{"code": 9109, "message": "Unauthorized to access requested resource"}]}));
        }
        if !bearer_is(r, CF_TOKEN) {
            return Reply::status(401, json!({"success": false, "errors": [{"code": 10000, "message": "Authentication error"}]}));
        }
        let page: u64 = r.q("page").and_then(|p| p.parse().ok()).unwrap_or(0);
        let p = r.path.as_str();
        let parts: Vec<&str> = p.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["zones"] => {
                assert_eq!(r.q("per_page"), Some("50"), "zones per_page");
                let zones = match page {
                    1 => json!([{"id": "z1", "name": "example.com", "status": "active"}, {"id": "z2", "name": "example.org", "status": "active"}]),
                    2 => json!([{"id": "z3", "name": "example.net", "status": "active"}]),
                    _ => panic!("zones page {page}"),
                };
                cf_env(zones, Some((page, 2)))
            }
            ["zones", z, "dns_records"] => {
                let recs = match page {
                    1 => json!([{"id": format!("{z}-r1"), "type": "A", "name": "www", "content": "192.0.2.1", "meta": {"private_key": "CANARYcfDnsPrivKey"}}]),
                    2 => json!([{"id": format!("{z}-r2"), "type": "TXT", "name": "_dmarc", "content": "v=DMARC1"}]),
                    _ => panic!("dns page {page}"),
                };
                cf_env(recs, Some((page, 2)))
            }
            ["zones", _, "rulesets"] => cf_env(json!([{"id": "rs1", "phase": "http_request_firewall_custom"}]), None),
            ["zones", z, "rulesets", "rs1"] => cf_env(json!({"id": "rs1", "zone": z, "rules": [{"id": "rule1", "expression": "ip.src eq 192.0.2.9", "action": "block", "action_parameters": {"origin_password": "CANARYcfRulePassword"}}]}), None),
            ["zones", _, "pagerules"] => cf_env(json!([{"id": "pr1", "targets": [], "actions": [{"id": "always_use_https"}]}]), None),
            ["accounts", a, "r2", "buckets"] => {
                assert_eq!(*a, CF_ACCOUNT);
                cf_env(json!({"buckets": [{"name": "obs-backup", "location": "WEUR"}]}), None)
            }
            ["accounts", _, "r2", "buckets", "obs-backup", "cors"] => Reply::status(404, json!({"success": false, "errors": [{"code": 10059, "message": "The CORS configuration does not exist."}]})),
            ["accounts", _, "r2", "buckets", "obs-backup", rest @ ..] => cf_env(json!({"rules": [{"id": "keep7", "enabled": true}], "part": rest.join("/"), "s3_credentials": "CANARYcfR2Credential"}), None),
            _ => Reply::status(404, json!({"success": false, "errors": [{"code": 7003, "message": format!("no route {p}")}]})),
        }
    })
    .await;
    Fake { server, broken }
}

/// Stripe: products over three pages of at most `limit` (checks `starting_after`), one
/// page for the other lists.
pub async fn stripe() -> Fake {
    let broken = Arc::new(AtomicBool::new(false));
    let b = broken.clone();
    let server = serve(move |r| {
        if b.load(Ordering::SeqCst) {
            return Reply::status(403, json!({"error": {"type": "invalid_request_error", "message": "The provided key does not have access to this resource"}}));
        }
        if !bearer_is(r, STRIPE_KEY) {
            return Reply::status(401, json!({"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}}));
        }
        assert_eq!(r.q("limit"), Some("100"), "Stripe lists ask for 100 per page");
        let after = r.q("starting_after");
        let list = |data: Value, more: bool| Reply::json(json!({"object": "list", "has_more": more, "data": data, "url": r.path}));
        match r.path.as_str() {
            "/v1/products" => match after {
                None => list(json!([{"id": "prod_3", "name": "Pro", "metadata": {"client_secret": "CANARYstripeProductSecret"}}]), true),
                Some("prod_3") => list(json!([{"id": "prod_2", "name": "Team"}]), true),
                Some("prod_2") => list(json!([{"id": "prod_1", "name": "Free"}]), false),
                Some(x) => panic!("products after {x}"),
            },
            "/v1/prices" => list(json!([{"id": "price_1", "unit_amount": 900, "currency": "eur"}]), false),
            "/v1/webhook_endpoints" => list(json!([{"id": "we_1", "url": "https://example.com/hook", "secret": "whsec_CANARYwebhookSecret", "enabled_events": ["*"]}]), false),
            "/v1/tax_rates" => list(json!([{"id": "txr_1", "percentage": 19.0}]), false),
            "/v1/coupons" => list(json!([{"id": "SPRING", "percent_off": 10}]), false),
            p => Reply::status(404, json!({"error": {"type": "invalid_request_error", "message": format!("Unrecognized request URL ({p})")}})),
        }
    })
    .await;
    Fake { server, broken }
}

/// Auth0: the client-credentials token, then the Management API with that token;
/// clients over two pages of `per_page` (the first one full).
pub async fn auth0() -> Fake {
    let broken = Arc::new(AtomicBool::new(false));
    let b = broken.clone();
    let server = serve(move |r| {
        if b.load(Ordering::SeqCst) {
            return Reply::status(403, json!({"error": "access_denied", "error_description": "Unauthorized"}));
        }
        if r.path == "/oauth/token" {
            let body = r.json();
            let ok = r.method == "POST"
                && body["grant_type"] == "client_credentials"
                && body["client_id"] == AUTH0_ID
                && body["client_secret"] == AUTH0_SECRET
                && body["audience"].as_str().is_some_and(|a| a.ends_with("/api/v2/"));
            return if ok {
                Reply::json(json!({"access_token": AUTH0_ACCESS, "token_type": "Bearer", "expires_in": 86400}))
            } else {
                Reply::status(401, json!({"error": "access_denied", "error_description": "Unauthorized"}))
            };
        }
        if !bearer_is(r, AUTH0_ACCESS) {
            return Reply::status(401, json!({"statusCode": 401, "error": "Unauthorized", "message": "Invalid token"}));
        }
        if r.path == "/api/v2/tenants/settings" {
            return Reply::json(json!({"friendly_name": "obs", "flags": {"enable_client_connections": false}, "smtp_password": "CANARYauth0TenantPassword"}));
        }
        let page: usize = r.q("page").and_then(|p| p.parse().ok()).expect("page");
        let per_page: usize = r.q("per_page").and_then(|p| p.parse().ok()).expect("per_page");
        assert_eq!(per_page, 100, "Auth0 per_page is at most 100");
        match r.path.as_str() {
            "/api/v2/clients" => {
                let n = if page == 0 { per_page } else if page == 1 { 2 } else { 0 };
                let clients: Vec<Value> = (0..n)
                    .map(|i| json!({
                        "client_id": format!("c{page}-{i}"),
                        "name": format!("app {page}-{i}"),
                        "client_secret": "CANARYauth0ClientSecret",
                        "signing_keys": [{"cert": "CANARYauth0SigningKey", "pkcs7": "CANARYauth0SigningKey"}],
                        "encryption_key": {"pub": "CANARYauth0SigningKey"},
                        "token_endpoint_auth_method": "client_secret_post"
                    }))
                    .collect();
                Reply::json(Value::Array(clients))
            }
            "/api/v2/connections" => Reply::json(json!([{"id": "con_1", "name": "google-oauth2", "strategy": "google-oauth2", "options": {"client_id": "goog", "client_secret": "CANARYauth0ConnSecret", "scope": ["email"]}}])),
            "/api/v2/actions/actions" => Reply::json(json!({"actions": [{"id": "act_1", "name": "enrich", "code": "exports.onExecutePostLogin = async () => {}", "secrets": [{"name": "API_KEY", "value": "CANARYauth0ActionSecret"}]}], "total": 1, "page": page, "per_page": per_page})),
            p => Reply::status(404, json!({"statusCode": 404, "error": "Not Found", "message": p})),
        }
    })
    .await;
    Fake { server, broken }
}

pub use crate::moto_support::Moto;

/// moto's S3 server on a free port, with `bucket` created.
pub async fn moto(bucket: &str) -> Moto {
    Moto::with_bucket(bucket).await
}
