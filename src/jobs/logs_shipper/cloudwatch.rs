//! CloudWatch Logs `FilterLogEvents`, paged by `nextToken`, and which log lines are
//! authentication events (the rule Vector's config uses).

use super::{event_key, Event, MAX_PAGES_PER_WINDOW};
use crate::desired::model::aws_job::{CloudWatchLogsSource, LogGroup};
use crate::jobs::aws;
use crate::jobs::JobError;
use regex::Regex;
use serde::Deserialize;
use std::sync::LazyLock;

#[derive(Deserialize)]
struct FilterLogEventsOutput {
    #[serde(default)]
    events: Vec<FilteredLogEvent>,
    #[serde(rename = "nextToken", default)]
    next_token: Option<String>,
}

#[derive(Deserialize)]
struct FilteredLogEvent {
    #[serde(rename = "logStreamName", default)]
    log_stream_name: String,
    timestamp: i64,
    #[serde(default)]
    message: String,
    #[serde(rename = "eventId", default)]
    event_id: String,
}

pub(super) async fn filter_log_events(
    client: &aws::Client<'_>,
    cw: &CloudWatchLogsSource,
    group: &LogGroup,
    start: i64,
    end: i64,
) -> Result<Vec<Event>, JobError> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    for page in 0.. {
        if page >= MAX_PAGES_PER_WINDOW {
            return Err(JobError::Failed(format!(
                "FilterLogEvents on {}: more than {MAX_PAGES_PER_WINDOW} pages in one window; lower maxWindow",
                group.name
            )));
        }
        let mut body = serde_json::json!({
            "logGroupName": group.name,
            "startTime": start,
            "endTime": end,
            "limit": cw.page_size,
        });
        if let Some(p) = &group.filter_pattern {
            body["filterPattern"] = p.clone().into();
        }
        if let Some(t) = &token {
            body["nextToken"] = t.clone().into();
        }
        let resp: FilterLogEventsOutput = client.call_default("FilterLogEvents", &body).await?;
        for e in resp.events {
            // Event IDs are unique per group in AWS; the stream name keeps keys apart
            // where an implementation numbers events per stream.
            let key = event_key(&[&e.log_stream_name, &e.event_id, &e.timestamp.to_string()]);
            let auth = message_is_auth(&e.message);
            out.push(Event {
                key,
                ts_ms: e.timestamp,
                line: e.message.trim_end_matches(['\n', '\r']).to_string(),
                auth,
            });
        }
        match resp.next_token {
            Some(t) if !t.is_empty() && Some(&t) != token.as_ref() => token = Some(t),
            _ => break,
        }
    }
    Ok(out)
}

/// Vector's `security="auth"` rule (desired-state/config/vector/vector.yaml), so a line
/// is tagged the same whichever way it reached Loki.
pub fn message_is_auth(line: &str) -> bool {
    static WORDS: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?i)\b(login|logout|log in|sign[ _-]?in|sign[ _-]?out|authenticat\w*|authori[sz]\w*|unauthori[sz]ed|password|passwd|mfa|2fa|otp|oauth|oidc|sso|credential\w*|access denied|forbidden|brute[ -]?force)\b")
            .expect("a valid pattern")
    });
    if WORDS.is_match(line) {
        return true;
    }
    let Ok(serde_json::Value::Object(v)) = serde_json::from_str::<serde_json::Value>(line) else {
        return false;
    };
    let category = v
        .get("category")
        .or_else(|| v.get("event_category"))
        .and_then(|c| c.as_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if ["auth", "authentication", "security"].contains(&category.as_str()) {
        return true;
    }
    ["EdgeResponseStatus", "status", "status_code"]
        .iter()
        .find_map(|k| v.get(*k))
        .and_then(|s| {
            s.as_i64()
                .or_else(|| s.as_str().and_then(|s| s.parse().ok()))
        })
        .is_some_and(|s| s == 401 || s == 403)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_messages_follow_vectors_rule() {
        for yes in [
            "POST /api/login 200",
            "Sign-in failed for bob",
            "invalid password",
            "MFA challenge sent",
            "Unauthorized: token expired",
            "403 Forbidden",
            r#"{"category":"Auth","msg":"x"}"#,
            r#"{"status":401,"path":"/x"}"#,
            r#"{"EdgeResponseStatus":"403"}"#,
        ] {
            assert!(message_is_auth(yes), "{yes}");
        }
        for no in [
            "GET /health 200",
            "signing key rotated",
            "User alice logged the order", // `logged` is not `login`
            r#"{"status":200}"#,
        ] {
            assert!(!message_is_auth(no), "{no}");
        }
    }
}
