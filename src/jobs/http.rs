//! HTTP plumbing shared by the job bodies: bounded retries with backoff for 429 and 5xx
//! (honouring `retry-after`, capped at [`RetryPolicy::max_delay`]), and errors that say
//! which call failed without ever carrying a credential.
//!
//! Retries keep within the run's time: with [`RetryPolicy::deadline`] set, a wait that
//! would end at or past it is not taken (the last answer is the error), and an attempt
//! still in flight at the deadline is abandoned ([`HttpError::OutOfTime`]).

use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use reqwest::{RequestBuilder, Response, StatusCode};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Backoff for 429 and 5xx answers. Other statuses, timeouts and connection errors are
/// not retried (a timeout retried would only make the run slower).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in total, the first included.
    pub attempts: usize,
    /// First backoff delay; it doubles per attempt (with jitter).
    pub min_delay: Duration,
    /// Cap of any single wait, including a server's `retry-after` (Cloudflare asks for
    /// ~5 minutes after a 429; waiting that long would outlive the run's timeout).
    pub max_delay: Duration,
    /// The end of the run's time budget: no wait is started that would end past it,
    /// and no attempt runs past it. `None`: attempts and `max_delay` are the only bound.
    pub deadline: Option<tokio::time::Instant>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            deadline: None,
        }
    }
}

impl RetryPolicy {
    /// This policy, bounded by `deadline` too (the earlier of the two if one is set).
    pub fn within(&self, deadline: Option<tokio::time::Instant>) -> RetryPolicy {
        let deadline = match (self.deadline, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        RetryPolicy {
            deadline,
            ..self.clone()
        }
    }

    /// Whether a wait of `d` starting now would end before the deadline.
    pub fn can_wait(&self, d: Duration) -> bool {
        self.deadline
            .is_none_or(|dl| tokio::time::Instant::now() + d < dl)
    }
}

/// A failed HTTP call. `what` names the call (`GET /v1/balance`), never a secret.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{what}: {}", describe_transport(source))]
    Transport {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what}: HTTP {status}{}", if detail.is_empty() { String::new() } else { format!(": {detail}") })]
    Status {
        what: String,
        status: u16,
        detail: String,
        /// The server's `retry-after`, if any (used by the retry loop).
        retry_after: Option<Duration>,
    },
    #[error("{what}: unexpected response: {detail}")]
    Decode { what: String, detail: String },
    #[error("{what}: cancelled")]
    Cancelled { what: String },
    /// The run's time budget ended before the call finished.
    #[error("{what}: abandoned, the run's time budget ran out")]
    OutOfTime { what: String },
}

impl HttpError {
    fn retryable(&self) -> bool {
        matches!(self, HttpError::Status { status, .. } if *status == 429 || *status >= 500)
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            HttpError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn decode(what: &str, detail: impl Into<String>) -> HttpError {
        HttpError::Decode {
            what: what.to_string(),
            detail: detail.into(),
        }
    }
}

fn describe_transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        format!("connection failed ({})", root_cause(e))
    } else {
        format!("request failed ({})", root_cause(e))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// `retry-after`: delta-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    parse_retry_after_at(v, Utc::now())
}

/// `retry-after` as seen at `now`: delta-seconds, or an HTTP date (a date before `now`
/// is no wait at all). `None` when it is neither.
pub fn parse_retry_after_at(v: &str, now: chrono::DateTime<Utc>) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let t = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    Some((t.with_timezone(&Utc) - now).to_std().unwrap_or_default())
}

/// Exponential backoff with "equal jitter" (half fixed, half random), capped; a
/// server's `retry-after` wins when given (still capped). `attempt` counts from 1 (the
/// attempt that just failed).
pub(crate) fn backoff_delay(
    retry: &RetryPolicy,
    attempt: usize,
    retry_after: Option<Duration>,
) -> Duration {
    use rand::Rng;
    if let Some(ra) = retry_after {
        return ra.min(retry.max_delay);
    }
    let exp = 1u32 << attempt.saturating_sub(1).min(16);
    let d = retry.min_delay.saturating_mul(exp).min(retry.max_delay);
    let half = d / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

/// Send the request built by `build` (called once per attempt), retrying 429 and 5xx
/// per `policy`. Returns the response of any other status unchecked; a 429/5xx that
/// outlasts the attempts is an error.
pub async fn send(
    policy: &RetryPolicy,
    cancel: &CancellationToken,
    what: &str,
    build: impl Fn() -> RequestBuilder,
) -> Result<Response, HttpError> {
    let attempt = || async {
        let resp = build()
            .send()
            .await
            .map_err(|source| HttpError::Transport {
                what: what.to_string(),
                source,
            })?;
        let status = resp.status();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let detail = error_detail(resp).await;
            return Err(HttpError::Status {
                what: what.to_string(),
                status: status.as_u16(),
                detail,
                retry_after,
            });
        }
        Ok(resp)
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_max_times(policy.attempts.saturating_sub(1))
        .with_jitter();
    let max = policy.max_delay;
    let retrying = attempt
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(HttpError::retryable)
        // Keep the attempt budget (None = exhausted), but wait what the server asked for
        // — and never past the run's deadline (None: give up now with this answer).
        .adjust(move |e, next| {
            next.map(|d| e.retry_after().map_or(d, |ra| ra.min(max)))
                .filter(|d| policy.can_wait(*d))
        })
        .notify(
            |e, wait| tracing::debug!(error = %e, wait_ms = wait.as_millis() as u64, "retrying"),
        );
    let out_of_time = async {
        match policy.deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = retrying => r,
        _ = cancel.cancelled() => Err(HttpError::Cancelled { what: what.to_string() }),
        _ = out_of_time => Err(HttpError::OutOfTime { what: what.to_string() }),
    }
}

/// `Ok(resp)` for 2xx, otherwise a [`HttpError::Status`] with the provider's message.
pub async fn check(what: &str, resp: Response) -> Result<Response, HttpError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    Err(HttpError::Status {
        what: what.to_string(),
        status: status.as_u16(),
        detail: error_detail(resp).await,
        retry_after: None,
    })
}

/// The JSON body of a 2xx response.
pub async fn json<T: serde::de::DeserializeOwned>(
    what: &str,
    resp: Response,
) -> Result<T, HttpError> {
    let resp = check(what, resp).await?;
    let bytes = resp.bytes().await.map_err(|source| HttpError::Transport {
        what: what.to_string(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| HttpError::decode(what, e.to_string()))
}

/// A short, single-line description of an error body: the provider's message when the
/// body has a known shape (Stripe `error.message`, Cloudflare `errors[].message`, AWS
/// `__type`/`message`, Prometheus `error`), else the start of the text.
async fn error_detail(resp: Response) -> String {
    let aws_type = resp
        .headers()
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp.text().await.unwrap_or_default();
    body_detail(aws_type.as_deref(), &text)
}

/// [`error_detail`] on a body already read (`aws_type`: the `x-amzn-errortype` header).
pub(crate) fn body_detail(aws_type: Option<&str>, text: &str) -> String {
    let mut detail = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => json_message(&v).unwrap_or_default(),
        Err(_) => String::new(),
    };
    if detail.is_empty() {
        if let Some(t) = aws_type {
            detail = aws_error_type(t);
        }
    }
    if detail.is_empty() {
        detail = text.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    truncate(&detail, 300)
}

fn json_message(v: &serde_json::Value) -> Option<String> {
    if let Some(e) = v.get("error") {
        if let Some(m) = e.get("message").and_then(|m| m.as_str()) {
            let kind = e
                .get("code")
                .or_else(|| e.get("type"))
                .and_then(|c| c.as_str());
            return Some(match kind {
                Some(k) => format!("{k}: {m}"),
                None => m.to_string(),
            });
        }
        if let Some(m) = e.as_str() {
            return Some(m.to_string());
        }
    }
    if let Some(errs) = v.get("errors").and_then(|e| e.as_array()) {
        let msgs: Vec<&str> = errs
            .iter()
            .filter_map(|e| e.get("message").and_then(|m| m.as_str()))
            .collect();
        if !msgs.is_empty() {
            return Some(msgs.join("; "));
        }
    }
    if let Some(t) = v.get("__type").and_then(|t| t.as_str()) {
        let msg = v
            .get("message")
            .or_else(|| v.get("Message"))
            .and_then(|m| m.as_str());
        let t = aws_error_type(t);
        return Some(match msg {
            Some(m) => format!("{t}: {m}"),
            None => t,
        });
    }
    None
}

/// AWS error codes arrive as `ns#Code:extra`; the code is the middle part.
pub fn aws_error_type(raw: &str) -> String {
    let s = raw.rsplit('#').next().unwrap_or(raw);
    s.split(':').next().unwrap_or(s).to_string()
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_error_types() {
        assert_eq!(
            aws_error_type("com.amazonaws.apprunner#InvalidRequestException"),
            "InvalidRequestException"
        );
        assert_eq!(
            aws_error_type("ThrottlingException:http://internal"),
            "ThrottlingException"
        );
        assert_eq!(aws_error_type("ns#AccessDenied:x"), "AccessDenied");
    }

    #[test]
    fn backoff_is_capped_and_honours_retry_after() {
        let p = RetryPolicy {
            attempts: 4,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            deadline: None,
        };
        for attempt in 1..20 {
            let d = backoff_delay(&p, attempt, None);
            assert!(d <= Duration::from_secs(1), "{attempt}: {d:?}");
        }
        let first = backoff_delay(&p, 1, None);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        assert_eq!(
            backoff_delay(&p, 1, Some(Duration::from_secs(60))),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn provider_messages() {
        let stripe = serde_json::json!({"error": {"type": "invalid_request_error", "message": "Invalid API Key provided: rk_live_****1234"}});
        assert_eq!(
            json_message(&stripe).unwrap(),
            "invalid_request_error: Invalid API Key provided: rk_live_****1234"
        );
        let cf = serde_json::json!({"success": false, "errors": [{"code": 9109, "message": "Invalid access token"}]});
        assert_eq!(json_message(&cf).unwrap(), "Invalid access token");
        let aws =
            serde_json::json!({"__type": "com.amazonaws#AccessDeniedException", "message": "no"});
        assert_eq!(json_message(&aws).unwrap(), "AccessDeniedException: no");
        let prom =
            serde_json::json!({"status": "error", "errorType": "bad_data", "error": "parse error"});
        assert_eq!(json_message(&prom).unwrap(), "parse error");
    }

    #[tokio::test(start_paused = true)]
    async fn waits_never_end_past_the_deadline() {
        let p = RetryPolicy::default()
            .within(Some(tokio::time::Instant::now() + Duration::from_secs(10)));
        assert!(p.can_wait(Duration::from_secs(9)));
        assert!(!p.can_wait(Duration::from_secs(10)));
        assert!(!p.can_wait(Duration::from_secs(30)));
        // The earlier deadline wins.
        let q = p.within(Some(tokio::time::Instant::now() + Duration::from_secs(1)));
        assert!(!q.can_wait(Duration::from_secs(2)));
        assert!(RetryPolicy::default().can_wait(Duration::from_secs(3600)));
    }
}
