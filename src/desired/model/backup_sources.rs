//! `Job.spec.backup.sources`: what the backup job exports besides volumes (LLD
//! backup-r2): provider configuration as secret-free JSON documents, one manifest entry
//! per source. Credentials are always env-file variable names, never values.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Non-volume sources of a backup job; each one is its own manifest entry with its own
/// `backup_r2_source_*` series (label `kind` = the source kind, `source` = its name).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackupSources {
    /// Cloudflare export: zones, DNS records, rulesets (WAF), page rules and, with an
    /// account, the R2 buckets' settings; one JSON document per zone and kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudflare: Option<CloudflareExport>,
    /// Stripe export (restricted read-only key): products, prices, webhook endpoints
    /// (secret stripped), tax rates, coupons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe: Option<StripeExport>,
    /// Auth0 export (M2M client credentials): clients, connections, actions, tenant
    /// settings; every secret-bearing field removed before anything is serialised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth0: Option<Auth0Export>,
}

/// Cloudflare REST export (`Authorization: Bearer`, read-only token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CloudflareExport {
    /// REST base URL.
    #[serde(default = "cf_base")]
    pub api_base: String,
    /// Env-file variable holding the API token (Zone:Read, DNS:Read, Zone WAF:Read,
    /// Page Rules:Read, R2:Read).
    #[serde(default = "cf_token_env")]
    pub token_env: String,
    /// Env-file variable holding the account ID; when set, the account's R2 buckets and
    /// their lock, lifecycle, CORS and domain settings are exported too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id_env: Option<String>,
    /// Zone names to export; empty: every zone the token sees.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
}

/// Stripe REST export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StripeExport {
    /// API base URL.
    #[serde(default = "stripe_base")]
    pub api_base: String,
    /// Env-file variable holding the restricted read-only key (`rk_live_…`).
    #[serde(default = "stripe_key_env")]
    pub key_env: String,
    /// Pages (of 100) read per list at most; a longer list is exported cut and flagged
    /// (`truncated` in the manifest, `backup_r2_source_truncated 1`).
    #[serde(default = "stripe_pages")]
    pub max_pages: u32,
}

/// Auth0 Management API export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Auth0Export {
    /// Env-file variable holding the tenant domain (`tenant.eu.auth0.com`, or a full
    /// `https://…` base URL).
    #[serde(default = "auth0_domain_env")]
    pub domain_env: String,
    /// Env-file variables holding the M2M application's client ID and secret
    /// (scopes `read:clients read:connections read:actions read:tenant_settings`).
    #[serde(default = "auth0_id_env")]
    pub client_id_env: String,
    #[serde(default = "auth0_secret_env")]
    pub client_secret_env: String,
    /// Token audience; default `https://<domain>/api/v2/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

fn cf_base() -> String {
    "https://api.cloudflare.com/client/v4".into()
}
fn cf_token_env() -> String {
    "CF_BACKUP_API_TOKEN".into()
}
fn stripe_base() -> String {
    "https://api.stripe.com".into()
}
fn stripe_key_env() -> String {
    "STRIPE_BACKUP_KEY".into()
}
fn stripe_pages() -> u32 {
    20
}
fn auth0_domain_env() -> String {
    "AUTH0_DOMAIN".into()
}
fn auth0_id_env() -> String {
    "AUTH0_BACKUP_CLIENT_ID".into()
}
fn auth0_secret_env() -> String {
    "AUTH0_BACKUP_CLIENT_SECRET".into()
}
