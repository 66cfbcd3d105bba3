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
    /// S3 mirror (the TBI images): new or changed objects of a source bucket (read-only
    /// key) copied into `mirror/<key>@<etag>`; incremental by key, size and ETag; a
    /// deletion at the source never deletes the copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_mirror: Option<S3Mirror>,
    /// GitHub bundles: per repository a dated `git bundle` of all refs,
    /// `github/<owner>/<repo>/<YYYY-MM-DD>-<head>.bundle`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GithubBundles>,
}

/// The source bucket of the S3 mirror.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct S3Mirror {
    /// S3 API endpoint of the source, e.g. `https://s3.eu-central-1.amazonaws.com`
    /// (path-style requests).
    pub endpoint: String,
    pub bucket: String,
    /// SigV4 region of the source bucket.
    #[serde(default = "mirror_region")]
    pub region: String,
    /// Only keys under this prefix.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// Env-file variables holding the read-only key of the source bucket.
    #[serde(default = "mirror_akid_env")]
    pub access_key_id_env: String,
    #[serde(default = "mirror_secret_env")]
    pub secret_access_key_env: String,
}

/// The repositories bundled by the backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GithubBundles {
    /// `owner/name` of each repository; an entry may list several, comma-separated
    /// (e.g. `"${BACKUP_GITHUB_REPOS}"`).
    pub repos: Vec<String>,
    /// Clone URL base: `<urlBase>/<owner>/<name>.git`.
    #[serde(default = "github_base")]
    pub url_base: String,
    /// Env-file variable holding a read-only token; it reaches git only through a
    /// credential helper reading the child's environment, never in a URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
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
fn mirror_region() -> String {
    "us-east-1".into()
}
fn mirror_akid_env() -> String {
    "BACKUP_AWS_ACCESS_KEY_ID".into()
}
fn mirror_secret_env() -> String {
    "BACKUP_AWS_SECRET_ACCESS_KEY".into()
}
fn github_base() -> String {
    "https://github.com".into()
}

impl BackupSources {
    /// Field errors: `(path under spec.backup.sources, message)`.
    pub fn problems(&self) -> Vec<(Vec<String>, String)> {
        let mut out = Vec::new();
        let at = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let url_ok = |u: &str| {
            reqwest::Url::parse(u)
                .is_ok_and(|x| matches!(x.scheme(), "http" | "https") && x.host_str().is_some())
        };
        if let Some(c) = &self.cloudflare {
            if !url_ok(&c.api_base) {
                out.push((at(&["cloudflare", "apiBase"]), "not an http(s) URL".into()));
            }
        }
        if let Some(s) = &self.stripe {
            if !url_ok(&s.api_base) {
                out.push((at(&["stripe", "apiBase"]), "not an http(s) URL".into()));
            }
            if !(1..=1000).contains(&s.max_pages) {
                out.push((at(&["stripe", "maxPages"]), "between 1 and 1000".into()));
            }
        }
        if let Some(m) = &self.s3_mirror {
            if !url_ok(&m.endpoint) {
                out.push((at(&["s3Mirror", "endpoint"]), "not an http(s) URL".into()));
            }
        }
        // Repository names usually come from the env file (`${BACKUP_GITHUB_REPOS}`):
        // a bad one fails the github source at run time (named in its error and
        // metric), not the whole desired state.
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_field_problems() {
        let s: BackupSources = serde_json::from_value(serde_json::json!({
            "cloudflare": {"apiBase": "ftp://x"},
            "stripe": {"maxPages": 0},
            "auth0": {},
            "s3Mirror": {"endpoint": "not a url", "bucket": "b"},
            "github": {"repos": ["a/b"]}
        }))
        .unwrap();
        assert_eq!(
            s.auth0.as_ref().unwrap().client_secret_env,
            "AUTH0_BACKUP_CLIENT_SECRET"
        );
        assert_eq!(s.stripe.as_ref().unwrap().key_env, "STRIPE_BACKUP_KEY");
        let p: Vec<String> = s.problems().into_iter().map(|(p, _)| p.join(".")).collect();
        assert_eq!(
            p,
            ["cloudflare.apiBase", "stripe.maxPages", "s3Mirror.endpoint"]
        );
        let unknown = serde_json::from_value::<BackupSources>(serde_json::json!({"dropbox": {}}));
        assert!(unknown.is_err());
    }
}
