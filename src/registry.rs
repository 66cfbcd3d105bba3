//! The registry client of image update checks (`update.image`): which manifest digest
//! does a tag name now? One `HEAD /v2/<repository>/manifests/<tag>` (plus, when the
//! registry asks for it, the anonymous Bearer token flow that Docker Hub and GHCR use).
//!
//! Parsing (image references, `WWW-Authenticate`, `Retry-After`) is pure and tested
//! here; [`Client::head_digest`] is the only IO. Plain HTTP is used only for loopback
//! registries, as the engine allows by default; every other registry is HTTPS. A
//! `429` (or `503`) answer becomes [`RegistryError::RateLimited`] with the time before
//! which the caller must not ask that registry again.

use std::time::Duration;

/// Docker Hub's API host (the engine's `docker.io`).
pub const DOCKER_HUB: &str = "registry-1.docker.io";

/// Media types a tag may name: multi-platform indexes first (their digest is what the
/// engine records in `RepoDigests` for a multi-platform pull), then single manifests.
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.oci.image.manifest.v1+json";

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// The wait after a `429`/`503` without a usable `Retry-After`.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(300);
/// The longest `Retry-After` honoured as given (a larger one is clamped to this).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// An image reference split the way the engine resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `host[:port]` of the registry's API (`registry-1.docker.io` for Docker Hub).
    pub registry: String,
    /// The repository path (`library/busybox`, `grafana/grafana`, `obsdt/app`).
    pub repository: String,
    pub tag: String,
}

impl ImageRef {
    /// Parses `[registry/]repository[:tag]` (Docker Hub names get `library/` when they
    /// have one path component; the tag defaults to `latest`). Digest references are
    /// refused: they cannot move.
    pub fn parse(reference: &str) -> Result<ImageRef, String> {
        if reference.contains('@') {
            return Err(format!("`{reference}` is pinned by digest"));
        }
        let (first, rest) = match reference.split_once('/') {
            Some((h, r)) if h.contains('.') || h.contains(':') || h == "localhost" => (Some(h), r),
            _ => (None, reference),
        };
        // The tag is after the last `:` of the last path component.
        let last = rest.rsplit('/').next().unwrap_or(rest);
        let (repo, tag) = match last.rsplit_once(':') {
            Some((_, t)) => (&rest[..rest.len() - t.len() - 1], t),
            None => (rest, "latest"),
        };
        if repo.is_empty() || tag.is_empty() {
            return Err(format!("`{reference}` is not an image reference"));
        }
        let (registry, repository) = match first {
            Some("docker.io" | "index.docker.io" | "registry-1.docker.io") | None => {
                let repo = if repo.contains('/') {
                    repo.to_string()
                } else {
                    format!("library/{repo}")
                };
                (DOCKER_HUB.to_string(), repo)
            }
            Some(h) => (h.to_string(), repo.to_string()),
        };
        Ok(ImageRef {
            registry,
            repository,
            tag: tag.to_string(),
        })
    }

    /// `http` for a loopback registry (`127.0.0.0/8`, `::1`, `localhost`), else `https`.
    pub fn scheme(&self) -> &'static str {
        if is_loopback_host(&self.registry) {
            "http"
        } else {
            "https"
        }
    }

    pub fn manifest_url(&self) -> String {
        format!(
            "{}://{}/v2/{}/manifests/{}",
            self.scheme(),
            self.registry,
            self.repository,
            self.tag
        )
    }
}

/// Whether `host[:port]` names the loopback interface.
fn is_loopback_host(host_port: &str) -> bool {
    let host = if let Some(rest) = host_port.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A `WWW-Authenticate: Bearer realm=…,service=…,scope=…` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
}

/// Parses a Bearer challenge; `None` for other schemes (Basic: credentials needed,
/// which anonymous checks do not have).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut scope = None;
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            // A quoted string; `\"` escapes a quote.
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => v.push(c),
                }
            }
            (v, &quoted[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        match key.as_str() {
            "realm" => realm = Some(value),
            "service" => service = Some(value),
            "scope" => scope = Some(value),
            _ => {}
        }
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge {
        realm: realm?,
        service,
        scope,
    })
}

/// `Retry-After` (delta seconds or an HTTP date) as the Unix ms before which no request
/// may be made; clamped to a day, and never in the past.
pub fn parse_retry_after(value: Option<&str>, now_ms: i64) -> i64 {
    let now = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
    let wait = value
        .and_then(|v| crate::jobs::http::parse_retry_after_at(v, now))
        .unwrap_or(DEFAULT_RETRY_AFTER)
        .min(MAX_RETRY_AFTER);
    now_ms + wait.as_millis() as i64
}

/// Why a check found no digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// `429`/`503`: nothing more to this registry before `until_ms`.
    #[error("rate-limited by {registry} (HTTP {status}); next request after {}", fmt_ms(.until_ms))]
    RateLimited {
        registry: String,
        status: u16,
        until_ms: i64,
    },
    #[error("{registry} unreachable: {message}")]
    Unreachable { registry: String, message: String },
    #[error("{registry} answered HTTP {status} for {what}")]
    Status {
        registry: String,
        status: u16,
        what: String,
    },
    #[error("{registry}: {message}")]
    Protocol { registry: String, message: String },
}

impl RegistryError {
    /// A low-cardinality label for `obsd_image_check_errors_total`.
    pub fn class(&self) -> &'static str {
        match self {
            RegistryError::RateLimited { .. } => "rate_limited",
            RegistryError::Unreachable { .. } => "unreachable",
            RegistryError::Status { .. } => "status",
            RegistryError::Protocol { .. } => "protocol",
        }
    }
}

/// Every [`RegistryError::class`], plus `pull` (an `auto` pull that failed).
pub const ERROR_CLASSES: [&str; 5] = ["rate_limited", "unreachable", "status", "protocol", "pull"];

fn fmt_ms(ms: &i64) -> String {
    let ms = *ms;
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

/// The anonymous registry client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    pub fn new() -> Client {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("obsd/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .expect("reqwest client");
        Client { http }
    }

    /// The digest the tag names now (`Docker-Content-Digest` of a manifest `HEAD`),
    /// following one anonymous Bearer challenge. `now_ms` dates a `Retry-After`.
    pub async fn head_digest(&self, r: &ImageRef, now_ms: i64) -> Result<String, RegistryError> {
        let url = r.manifest_url();
        let resp = self.head(r, &url, None, now_ms).await?;
        let resp = if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
            let challenge = resp
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_challenge)
                .ok_or_else(|| RegistryError::Protocol {
                    registry: r.registry.clone(),
                    message: "HTTP 401 without a Bearer challenge (credentials are not supported for image checks)".into(),
                })?;
            let token = self.token(r, &challenge, now_ms).await?;
            self.head(r, &url, Some(&token), now_ms).await?
        } else {
            resp
        };
        let status = resp.status();
        if !status.is_success() {
            return Err(RegistryError::Status {
                registry: r.registry.clone(),
                status: status.as_u16(),
                what: format!("{}:{}", r.repository, r.tag),
            });
        }
        let digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|d| d.starts_with("sha256:") && d.len() == 71)
            .ok_or_else(|| RegistryError::Protocol {
                registry: r.registry.clone(),
                message: "no Docker-Content-Digest in the manifest answer".into(),
            })?;
        Ok(digest.to_string())
    }

    /// One `HEAD`; `429`/`503` become [`RegistryError::RateLimited`].
    async fn head(
        &self,
        r: &ImageRef,
        url: &str,
        token: Option<&str>,
        now_ms: i64,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut req = self
            .http
            .head(url)
            .header(reqwest::header::ACCEPT, MANIFEST_TYPES);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| unreachable(r, &e))?;
        rate_limited(r, &resp, now_ms)?;
        Ok(resp)
    }

    /// The anonymous token for `challenge` (`GET realm?service=…&scope=…`).
    async fn token(
        &self,
        r: &ImageRef,
        challenge: &Challenge,
        now_ms: i64,
    ) -> Result<String, RegistryError> {
        let protocol = |message: String| RegistryError::Protocol {
            registry: r.registry.clone(),
            message,
        };
        let mut url = reqwest::Url::parse(&challenge.realm)
            .map_err(|e| protocol(format!("token realm `{}`: {e}", challenge.realm)))?;
        let plain_ok = url.host_str().is_some_and(is_loopback_host);
        if url.scheme() != "https" && !(url.scheme() == "http" && plain_ok) {
            return Err(protocol(format!(
                "token realm `{}` is not HTTPS",
                challenge.realm
            )));
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = &challenge.service {
                q.append_pair("service", s);
            }
            let scope = challenge
                .scope
                .clone()
                .unwrap_or_else(|| format!("repository:{}:pull", r.repository));
            q.append_pair("scope", &scope);
        }
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| unreachable(r, &e))?;
        rate_limited(r, &resp, now_ms)?;
        if !resp.status().is_success() {
            return Err(RegistryError::Status {
                registry: r.registry.clone(),
                status: resp.status().as_u16(),
                what: "the anonymous token".into(),
            });
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = resp
            .json()
            .await
            .map_err(|e| protocol(format!("token answer: {e}")))?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| protocol("token answer without a token".into()))
    }
}

fn unreachable(r: &ImageRef, e: &reqwest::Error) -> RegistryError {
    // The kind and the cause chain, without the URL (the registry name says it).
    let mut message = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        message.push_str(": ");
        message.push_str(&s.to_string());
        src = s.source();
    }
    RegistryError::Unreachable {
        registry: r.registry.clone(),
        message,
    }
}

fn rate_limited(r: &ImageRef, resp: &reqwest::Response, now_ms: i64) -> Result<(), RegistryError> {
    let status = resp.status().as_u16();
    if status != 429 && status != 503 {
        return Ok(());
    }
    let retry = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok());
    // Dated from the answer, not the request: the wait is the registry's.
    let now_ms = now_ms.max(crate::state::now_ms());
    Err(RegistryError::RateLimited {
        registry: r.registry.clone(),
        status,
        until_ms: parse_retry_after(retry, now_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(reg: &str, repo: &str, tag: &str) -> ImageRef {
        ImageRef {
            registry: reg.into(),
            repository: repo.into(),
            tag: tag.into(),
        }
    }

    #[test]
    fn references_resolve_like_the_engine() {
        let cases = [
            ("busybox", r(DOCKER_HUB, "library/busybox", "latest")),
            ("busybox:1.36", r(DOCKER_HUB, "library/busybox", "1.36")),
            ("grafana/grafana:11", r(DOCKER_HUB, "grafana/grafana", "11")),
            (
                "docker.io/grafana/grafana:11",
                r(DOCKER_HUB, "grafana/grafana", "11"),
            ),
            ("docker.io/nginx", r(DOCKER_HUB, "library/nginx", "latest")),
            ("ghcr.io/org/app:v2", r("ghcr.io", "org/app", "v2")),
            (
                "127.0.0.1:5000/app:stable",
                r("127.0.0.1:5000", "app", "stable"),
            ),
            ("127.0.0.1:5000/a/b", r("127.0.0.1:5000", "a/b", "latest")),
            ("localhost/app:1", r("localhost", "app", "1")),
            (
                "quay.io/prometheus/node-exporter:v1.8.2",
                r("quay.io", "prometheus/node-exporter", "v1.8.2"),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(ImageRef::parse(input).as_ref(), Ok(&want), "{input}");
        }
        assert!(ImageRef::parse("app@sha256:abcd").is_err());
        assert!(ImageRef::parse("app:1@sha256:abcd").is_err());
        assert!(ImageRef::parse("host:5000/:x").is_err());
    }

    #[test]
    fn plain_http_only_for_loopback() {
        let url = |s: &str| ImageRef::parse(s).unwrap().manifest_url();
        assert_eq!(
            url("127.0.0.1:5000/app:stable"),
            "http://127.0.0.1:5000/v2/app/manifests/stable"
        );
        assert_eq!(
            url("localhost:5000/app"),
            "http://localhost:5000/v2/app/manifests/latest"
        );
        assert_eq!(
            url("[::1]:5000/app:1"),
            "http://[::1]:5000/v2/app/manifests/1"
        );
        assert_eq!(
            url("grafana/grafana:11"),
            "https://registry-1.docker.io/v2/grafana/grafana/manifests/11"
        );
        assert_eq!(
            url("10.0.0.1:5000/app:1"),
            "https://10.0.0.1:5000/v2/app/manifests/1"
        );
        assert_eq!(
            url("127.evil.com/app:1"),
            "https://127.evil.com/v2/app/manifests/1"
        );
    }

    #[test]
    fn bearer_challenges() {
        let hub = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#;
        assert_eq!(
            parse_challenge(hub),
            Some(Challenge {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
        // GHCR's form, unquoted values, spaces after commas, a scope with commas.
        let ghcr = r#"bearer realm="https://ghcr.io/token", service=ghcr.io,scope="repository:org/app:pull,push""#;
        assert_eq!(
            parse_challenge(ghcr),
            Some(Challenge {
                realm: "https://ghcr.io/token".into(),
                service: Some("ghcr.io".into()),
                scope: Some("repository:org/app:pull,push".into()),
            })
        );
        let escaped = r#"Bearer realm="https://x/t\"q",error="insufficient_scope""#;
        assert_eq!(parse_challenge(escaped).unwrap().realm, "https://x/t\"q");
        assert_eq!(parse_challenge(r#"Basic realm="Registry""#), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None, "no realm");
        assert_eq!(parse_challenge(r#"Bearer realm="unterminated"#), None);
    }

    #[test]
    fn retry_after_seconds_or_date() {
        let now = 1_700_000_000_000;
        assert_eq!(parse_retry_after(Some("120"), now), now + 120_000);
        assert_eq!(parse_retry_after(Some(" 0 "), now), now);
        // An HTTP date 90 s after `now` (2023-11-14T22:13:20Z).
        assert_eq!(
            parse_retry_after(Some("Tue, 14 Nov 2023 22:14:50 GMT"), now),
            now + 90_000
        );
        // A date in the past: no wait; garbage or absent: the default.
        assert_eq!(
            parse_retry_after(Some("Tue, 14 Nov 2023 22:00:00 GMT"), now),
            now
        );
        let default = now + DEFAULT_RETRY_AFTER.as_millis() as i64;
        assert_eq!(parse_retry_after(Some("soon"), now), default);
        assert_eq!(parse_retry_after(None, now), default);
        // Clamped to a day.
        assert_eq!(parse_retry_after(Some("99999999"), now), now + 86_400_000);
    }
}
