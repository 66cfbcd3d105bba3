//! AWS JSON-protocol calls for the jobs: App Runner (self-heal), CloudWatch Logs and
//! CloudTrail (logs-shipper), CloudWatch metrics (aws-cron-monitor).
//!
//! Every request is signed with SigV4 by the `aws-sigv4` crate (AWS's own signer, the
//! one the Rust SDK uses) instead of hand-written code: canonicalisation details (header
//! value folding, default ports in `Host`, URI encoding) are where signers go wrong,
//! and that crate is tested against AWS's published test suite. The whole SDK is not
//! pulled in: four JSON calls do not justify its runtime, and its credential chain
//! (instance metadata, profiles) is exactly what obsd must not do — credentials come
//! only from the env file.
//!
//! Retries: throttling (`ThrottlingException` and its siblings, which AWS answers with
//! HTTP 400, or a 429) and 5xx answers are retried with capped exponential backoff and
//! jitter, but never past the run's deadline: a job that would sleep beyond its
//! timeout gives up with the throttling error instead, so the runner records an error
//! rather than a timeout and the caller keeps whatever it already finished.

use super::http::{self, HttpError, RetryPolicy};
use super::{JobContext, JobError};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use serde::de::DeserializeOwned;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One AWS JSON-protocol service: how it is addressed, targeted and signed.
#[derive(Debug)]
pub struct Service {
    /// Name in errors and logs (`AppRunner`, `Logs`, …): `<name>.<Operation>`.
    pub name: &'static str,
    /// Host prefix of the regional endpoint: `https://<prefix>.<region>.amazonaws.com/`.
    pub endpoint_prefix: &'static str,
    /// SigV4 service name of the credential scope.
    pub signing_name: &'static str,
    /// `X-Amz-Target: <prefix>.<Operation>`.
    pub target_prefix: &'static str,
    /// `application/x-amz-json-<version>`.
    pub content_type: &'static str,
}

/// App Runner (`AWS JSON 1.0`, botocore `apprunner/2020-05-15`).
pub const APP_RUNNER: Service = Service {
    name: "AppRunner",
    endpoint_prefix: "apprunner",
    signing_name: "apprunner",
    target_prefix: "AppRunner",
    content_type: "application/x-amz-json-1.0",
};

/// CloudWatch Logs (`AWS JSON 1.1`, botocore `logs/2014-03-28`).
pub const CLOUDWATCH_LOGS: Service = Service {
    name: "Logs",
    endpoint_prefix: "logs",
    signing_name: "logs",
    target_prefix: "Logs_20140328",
    content_type: "application/x-amz-json-1.1",
};

/// CloudTrail (`AWS JSON 1.1`, botocore `cloudtrail/2013-11-01`).
pub const CLOUDTRAIL: Service = Service {
    name: "CloudTrail",
    endpoint_prefix: "cloudtrail",
    signing_name: "cloudtrail",
    target_prefix: "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101",
    content_type: "application/x-amz-json-1.1",
};

/// CloudWatch metrics in its `AWS JSON 1.0` form (botocore `cloudwatch/2010-08-01`
/// lists `json` beside the older query protocol; JSON keeps one client for all four).
pub const CLOUDWATCH: Service = Service {
    name: "CloudWatch",
    endpoint_prefix: "monitoring",
    signing_name: "monitoring",
    target_prefix: "GraniteServiceVersion20100801",
    content_type: "application/x-amz-json-1.0",
};

/// AWS error codes that mean "slow down" (the SDKs' throttling list, minus codes of
/// services obsd does not call). AWS sends most of them with HTTP 400.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "SlowDown",
];

/// Most attempts on throttling when a deadline bounds the waiting anyway.
const THROTTLE_MAX_ATTEMPTS: usize = 10;

/// Where to call and with which credentials.
pub struct ClientConfig<'a> {
    pub region: &'a str,
    /// Endpoint override (tests, VPC endpoints); default the regional AWS endpoint.
    pub api_base: Option<&'a str>,
    /// Env-file variables holding the access key ID and the secret access key.
    pub access_key_id_env: &'a str,
    pub secret_access_key_env: &'a str,
}

/// A signed JSON-protocol client for one service, for the length of one job run.
pub struct Client<'a> {
    ctx: &'a JobContext,
    service: &'static Service,
    url: reqwest::Url,
    region: String,
    identity: Identity,
    cancel: &'a CancellationToken,
    /// The run's deadline: no backoff sleeps past it.
    deadline: Option<Instant>,
}

impl<'a> Client<'a> {
    /// Fails (naming the variable, never a value) when a credential is not in the env
    /// file, or when the endpoint is not a URL.
    pub fn new(
        ctx: &'a JobContext,
        service: &'static Service,
        cfg: &ClientConfig<'_>,
        cancel: &'a CancellationToken,
        deadline: Option<Instant>,
    ) -> Result<Client<'a>, JobError> {
        let akid = ctx.secret(cfg.access_key_id_env)?;
        let secret = ctx.secret(cfg.secret_access_key_env)?;
        let endpoint = cfg.api_base.map(str::to_string).unwrap_or_else(|| {
            format!(
                "https://{}.{}.amazonaws.com/",
                service.endpoint_prefix, cfg.region
            )
        });
        let url = reqwest::Url::parse(&endpoint).map_err(|e| {
            JobError::Config(format!(
                "invalid {} endpoint `{endpoint}`: {e}",
                service.name
            ))
        })?;
        if url.host_str().is_none() {
            return Err(JobError::Config(format!(
                "{} endpoint `{endpoint}` has no host",
                service.name
            )));
        }
        let identity =
            Credentials::new(akid.expose(), secret.expose(), None, None, "obsd-env-file").into();
        Ok(Client {
            ctx,
            service,
            url,
            region: cfg.region.to_string(),
            identity,
            cancel,
            deadline,
        })
    }

    /// [`Client::call`] with the context's retry policy (reads that may repeat).
    pub async fn call_default<T: DeserializeOwned>(
        &self,
        op: &str,
        body: &serde_json::Value,
    ) -> Result<T, JobError> {
        self.call(op, body, &self.ctx.retry).await
    }

    /// `POST /` with `X-Amz-Target: <prefix>.<op>`; the 2xx JSON body decoded as `T`.
    /// `retry.attempts == 1` sends exactly once (a call that must never repeat).
    pub async fn call<T: DeserializeOwned>(
        &self,
        op: &str,
        body: &serde_json::Value,
        retry: &RetryPolicy,
    ) -> Result<T, JobError> {
        let what = format!("{}.{op}", self.service.name);
        let target = format!("{}.{op}", self.service.target_prefix);
        let payload = serde_json::to_vec(body).map_err(|e| JobError::Failed(e.to_string()))?;
        let mut attempt = 0usize;
        loop {
            attempt += 1;
            let outcome = tokio::select! {
                r = self.send_once(&what, &target, &payload) => r,
                _ = self.cancel.cancelled() => return Err(HttpError::Cancelled { what }.into()),
            };
            let failure = match outcome {
                Ok(bytes) => {
                    return serde_json::from_slice(&bytes)
                        .map_err(|e| HttpError::decode(&what, e.to_string()).into());
                }
                Err(f) => f,
            };
            let max = if failure.throttled && self.deadline.is_some() {
                retry.attempts.max(THROTTLE_MAX_ATTEMPTS)
            } else {
                retry.attempts
            };
            if !failure.retryable() || attempt >= max {
                return Err(failure.error.into());
            }
            let wait = http::backoff_delay(retry, attempt, failure.retry_after);
            if let Some(deadline) = self.deadline {
                if Instant::now() + wait >= deadline {
                    tracing::warn!(call = %what, attempts = attempt, "giving up: the run's time budget is spent");
                    return Err(failure.error.into());
                }
            }
            tracing::debug!(call = %what, error = %failure.error, wait_ms = wait.as_millis() as u64, "retrying");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.cancel.cancelled() => return Err(HttpError::Cancelled { what }.into()),
            }
        }
    }

    async fn send_once(
        &self,
        what: &str,
        target: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, Failure> {
        // Signed per attempt: the signature covers x-amz-date.
        let signed = self.sign(target, payload).map_err(|e| Failure {
            error: HttpError::decode(what, format!("signing failed: {e}")),
            throttled: false,
            transient: false,
            retry_after: None,
        })?;
        let mut rb = self
            .ctx
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, self.service.content_type)
            .header("x-amz-target", target)
            .body(payload.to_vec())
            .timeout(self.ctx.request_timeout);
        for (k, v) in signed {
            rb = rb.header(k, v);
        }
        let resp = rb.send().await.map_err(|source| Failure {
            error: HttpError::Transport {
                what: what.to_string(),
                source,
            },
            throttled: false,
            transient: false,
            retry_after: None,
        })?;
        let status = resp.status();
        let header_type = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(http::parse_retry_after);
        let bytes = resp.bytes().await.map_err(|source| Failure {
            error: HttpError::Transport {
                what: what.to_string(),
                source,
            },
            throttled: false,
            transient: false,
            retry_after: None,
        })?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        let text = String::from_utf8_lossy(&bytes);
        let code = error_code(header_type.as_deref(), &text);
        let throttled = status.as_u16() == 429
            || code
                .as_deref()
                .is_some_and(|c| THROTTLING_CODES.contains(&c));
        Err(Failure {
            error: HttpError::Status {
                what: what.to_string(),
                status: status.as_u16(),
                detail: http::body_detail(header_type.as_deref(), &text),
                retry_after,
            },
            throttled,
            transient: status.is_server_error(),
            retry_after,
        })
    }

    /// The `x-amz-date` and `authorization` headers for this request.
    fn sign(&self, target: &str, payload: &[u8]) -> Result<Vec<(String, String)>, String> {
        let headers = [
            ("content-type", self.service.content_type),
            ("x-amz-target", target),
        ];
        sigv4_headers(
            &self.identity,
            &self.region,
            self.service.signing_name,
            SigningSettings::default(),
            self.ctx.clock.now().into(),
            ("POST", self.url.as_str()),
            &headers,
            payload,
        )
    }
}

/// The headers `aws-sigv4` adds to sign one request (`x-amz-date`, `authorization`,
/// and `x-amz-content-sha256` when the settings ask for it). Shared by the AWS JSON
/// calls here and the backup's S3 client.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sigv4_headers(
    identity: &Identity,
    region: &str,
    service: &str,
    settings: SigningSettings,
    time: SystemTime,
    (method, url): (&str, &str),
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Vec<(String, String)>, String> {
    let params = v4::SigningParams::builder()
        .identity(identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let request = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// One failed attempt and whether it may be retried.
struct Failure {
    error: HttpError,
    throttled: bool,
    transient: bool,
    retry_after: Option<Duration>,
}

impl Failure {
    fn retryable(&self) -> bool {
        self.throttled || self.transient
    }
}

/// The AWS error code of an error answer: the JSON body's `__type` (or `code`), else the
/// `x-amzn-errortype` header, with any `ns#` prefix and `:…` suffix stripped.
pub fn error_code(header: Option<&str>, body: &str) -> Option<String> {
    let from_body = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("__type")
                .or_else(|| v.get("code"))
                .and_then(|t| t.as_str())
                .map(str::to_string)
        });
    from_body
        .or_else(|| header.map(str::to_string))
        .map(|t| http::aws_error_type(&t))
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes() {
        assert_eq!(
            error_code(
                None,
                r#"{"__type":"com.amazonaws.logs#ThrottlingException","message":"Rate exceeded"}"#
            )
            .as_deref(),
            Some("ThrottlingException")
        );
        assert_eq!(
            error_code(Some("ThrottlingException:http://internal.amazon.com/"), "").as_deref(),
            Some("ThrottlingException")
        );
        assert_eq!(error_code(None, "<html>").as_deref(), None);
    }
}
