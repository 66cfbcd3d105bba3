//! A minimal S3 client for the backup bucket (R2, moto in tests): path-style requests
//! signed by `aws-sigv4` (service `s3`, `x-amz-content-sha256` sent), through the jobs'
//! shared `reqwest` client.
//!
//! Only what the backup needs: a write-once PUT (`If-None-Match: *`), GET, a paged
//! `ListObjectsV2`, DELETE. Each object is at most one segment (a few MiB), so a single
//! PUT per object keeps write-once exact (no multipart completion to guard) and memory
//! bounded by the segment size.

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{PayloadChecksumKind, SigningSettings};
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use reqwest::Method;
use std::time::{Duration, SystemTime};

/// An S3 error: HTTP status and the XML `<Code>` when the server sent one.
#[derive(Debug, thiserror::Error)]
#[error("S3 {op} {key}: {detail}")]
pub struct S3Error {
    pub op: &'static str,
    pub key: String,
    pub status: Option<u16>,
    pub code: Option<String>,
    pub detail: String,
}

/// What a write-once PUT found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Created,
    /// `412 PreconditionFailed`: the key exists; nothing was written.
    AlreadyThere,
}

/// One listed object.
#[derive(Debug, Clone)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
    /// The listed ETag, quotes removed (the S3 mirror compares it).
    pub etag: Option<String>,
}

/// The bucket, for the length of one run or command.
pub struct S3 {
    http: reqwest::Client,
    /// `<endpoint>/<bucket>`, no trailing slash.
    base: String,
    region: String,
    identity: Identity,
    timeout: Duration,
}

impl S3 {
    /// Fails when the endpoint is not an http(s) URL with a host.
    pub fn new(
        http: reqwest::Client,
        endpoint: &str,
        bucket: &str,
        region: &str,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> Result<S3, String> {
        let url = reqwest::Url::parse(endpoint)
            .map_err(|e| format!("invalid S3 endpoint `{endpoint}`: {e}"))?;
        if url.host_str().is_none() || !matches!(url.scheme(), "http" | "https") {
            return Err(format!("S3 endpoint `{endpoint}` is not an http(s) URL"));
        }
        if bucket.is_empty() || bucket.contains('/') {
            return Err(format!("invalid bucket name `{bucket}`"));
        }
        let identity = Credentials::new(
            access_key_id,
            secret_access_key,
            None,
            None,
            "obsd-env-file",
        )
        .into();
        Ok(S3 {
            http,
            base: format!("{}/{bucket}", endpoint.trim_end_matches('/')),
            region: region.to_string(),
            identity,
            timeout: Duration::from_secs(120),
        })
    }

    fn sign(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, String> {
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        crate::jobs::aws::sigv4_headers(
            &self.identity,
            &self.region,
            "s3",
            settings,
            SystemTime::now(),
            (method, url),
            headers,
            body,
        )
    }

    /// One signed request, retried (3 attempts) on transport errors and 5xx.
    async fn send(
        &self,
        op: &'static str,
        method: Method,
        key: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<reqwest::Response, S3Error> {
        let mut url = format!("{}/{key}", self.base);
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        let err = |status: Option<u16>, code: Option<String>, detail: String| S3Error {
            op,
            key: key.to_string(),
            status,
            code,
            detail,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let signed = self
                .sign(method.as_str(), &url, headers, &body)
                .map_err(|e| err(None, None, format!("signing: {e}")))?;
            let mut req = self
                .http
                .request(method.clone(), &url)
                .timeout(self.timeout)
                .body(body.clone());
            for (k, v) in headers.iter().copied() {
                req = req.header(k, v);
            }
            for (k, v) in signed {
                req = req.header(k, v);
            }
            let transient = match req.send().await {
                Ok(resp) if resp.status().is_server_error() => {
                    let status = resp.status().as_u16();
                    let text = resp.text().await.unwrap_or_default();
                    err(
                        Some(status),
                        xml_tag(&text, "Code"),
                        format!("HTTP {status}"),
                    )
                }
                Ok(resp) => return Ok(resp),
                Err(e) => err(None, None, crate::jobs::error_chain(&e.without_url())),
            };
            if attempt >= 3 {
                return Err(transient);
            }
            tokio::time::sleep(Duration::from_millis(200 * (1 << attempt))).await;
        }
    }

    async fn failed(op: &'static str, key: &str, resp: reqwest::Response) -> S3Error {
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let code = xml_tag(&text, "Code");
        let message = xml_tag(&text, "Message").unwrap_or_default();
        S3Error {
            op,
            key: key.to_string(),
            status: Some(status),
            detail: format!(
                "HTTP {status} {} {}",
                code.as_deref().unwrap_or(""),
                message
            )
            .trim_end()
            .to_string(),
            code,
        }
    }

    /// PUT with `If-None-Match: *`: never overwrites.
    pub async fn put_once(&self, key: &str, body: Bytes) -> Result<Put, S3Error> {
        let resp = self
            .send(
                "PUT",
                Method::PUT,
                key,
                "",
                &[
                    ("if-none-match", "*"),
                    ("content-type", "application/octet-stream"),
                ],
                body,
            )
            .await?;
        match resp.status().as_u16() {
            200..=299 => Ok(Put::Created),
            412 => Ok(Put::AlreadyThere),
            _ => Err(Self::failed("PUT", key, resp).await),
        }
    }

    /// The object's bytes, `None` when it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, S3Error> {
        let resp = self
            .send("GET", Method::GET, key, "", &[], Bytes::new())
            .await?;
        match resp.status().as_u16() {
            200..=299 => resp.bytes().await.map(Some).map_err(|e| S3Error {
                op: "GET",
                key: key.to_string(),
                status: None,
                code: None,
                detail: crate::jobs::error_chain(&e.without_url()),
            }),
            404 => Ok(None),
            _ => Err(Self::failed("GET", key, resp).await),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), S3Error> {
        let resp = self
            .send("DELETE", Method::DELETE, key, "", &[], Bytes::new())
            .await?;
        match resp.status().as_u16() {
            200..=299 | 404 => Ok(()),
            _ => Err(Self::failed("DELETE", key, resp).await),
        }
    }

    /// Every object under `prefix` (`ListObjectsV2`, all pages).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, S3Error> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q = form_urlencoded_pairs(&[("list-type", "2"), ("prefix", prefix)]);
            if let Some(t) = &token {
                q.push_str("&continuation-token=");
                q.push_str(&percent(t));
            }
            let resp = self
                .send("LIST", Method::GET, "", &q, &[], Bytes::new())
                .await?;
            if !resp.status().is_success() {
                return Err(Self::failed("LIST", prefix, resp).await);
            }
            let text = resp.text().await.map_err(|e| S3Error {
                op: "LIST",
                key: prefix.to_string(),
                status: None,
                code: None,
                detail: crate::jobs::error_chain(&e.without_url()),
            })?;
            for c in xml_blocks(&text, "Contents") {
                let key = xml_tag(c, "Key").map(|k| xml_unescape(&k));
                let size = xml_tag(c, "Size").and_then(|s| s.parse().ok());
                let lm = xml_tag(c, "LastModified")
                    .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
                    .map(|d| d.with_timezone(&Utc));
                if let (Some(key), Some(size), Some(last_modified)) = (key, size, lm) {
                    let etag =
                        xml_tag(c, "ETag").map(|e| xml_unescape(&e).trim_matches('"').to_string());
                    out.push(ObjectMeta {
                        key,
                        size,
                        last_modified,
                        etag,
                    });
                }
            }
            let truncated = xml_tag(&text, "IsTruncated").as_deref() == Some("true");
            token = xml_tag(&text, "NextContinuationToken").map(|t| xml_unescape(&t));
            if !truncated || token.is_none() {
                return Ok(out);
            }
        }
    }
}

/// RFC 3986 percent-encoding of a query value (what SigV4 canonicalises to).
fn percent(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

fn form_urlencoded_pairs(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent(k), percent(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The text of the first `<tag>…</tag>` in `xml`.
pub(crate) fn xml_tag(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(xml[start..end].to_string())
}

fn xml_blocks<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_xml() {
        let x = "<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>a&amp;b</Key><LastModified>2026-12-06T10:00:00.000Z</LastModified><Size>5</Size></Contents><Contents><Key>c</Key><Size>7</Size></Contents><NextContinuationToken>t=1</NextContinuationToken></ListBucketResult>";
        let b = xml_blocks(x, "Contents");
        assert_eq!(b.len(), 2);
        assert_eq!(xml_unescape(&xml_tag(b[0], "Key").unwrap()), "a&b");
        assert_eq!(xml_tag(x, "NextContinuationToken").unwrap(), "t=1");
        assert_eq!(percent("a b/=+"), "a%20b%2F%3D%2B");
    }
}
