//! CloudTrail `LookupEvents` (JSON 1.1), paged by `NextToken` and paced under its
//! request rate, and which trail events are authentication events.

use super::{event_key, Event, MAX_PAGES_PER_WINDOW};
use crate::desired::model::aws_job::CloudTrailSource;
use crate::jobs::aws;
use crate::jobs::JobError;
use serde::Deserialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Deserialize)]
struct LookupEventsOutput {
    #[serde(rename = "Events", default)]
    events: Vec<TrailEvent>,
    #[serde(rename = "NextToken", default)]
    next_token: Option<String>,
}

#[derive(Deserialize)]
struct TrailEvent {
    #[serde(rename = "EventId")]
    event_id: String,
    #[serde(rename = "EventName", default)]
    event_name: String,
    #[serde(rename = "EventSource", default)]
    event_source: String,
    /// Seconds since the epoch.
    #[serde(rename = "EventTime")]
    event_time: f64,
    #[serde(rename = "CloudTrailEvent", default)]
    cloud_trail_event: Option<String>,
}

pub(super) async fn lookup_events(
    client: &aws::Client<'_>,
    ct: &CloudTrailSource,
    start: i64,
    end: i64,
    cancel: &CancellationToken,
    last_call: &mut Option<Instant>,
) -> Result<Vec<Event>, JobError> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    for page in 0.. {
        if page >= MAX_PAGES_PER_WINDOW {
            return Err(JobError::Failed(format!(
                "LookupEvents: more than {MAX_PAGES_PER_WINDOW} pages in one window; lower maxWindow"
            )));
        }
        // Paced across pages and windows alike: a catch-up reads many windows.
        if let Some(prev) = *last_call {
            let wait = ct.page_interval.0.saturating_sub(prev.elapsed());
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cancel.cancelled() => return Err(JobError::Failed("cancelled".into())),
                }
            }
        }
        *last_call = Some(Instant::now());
        let mut body = serde_json::json!({
            "StartTime": start as f64 / 1000.0,
            "EndTime": end as f64 / 1000.0,
            "MaxResults": ct.page_size,
        });
        if let Some(t) = &token {
            body["NextToken"] = t.clone().into();
        }
        let resp: LookupEventsOutput = client.call_default("LookupEvents", &body).await?;
        for e in resp.events {
            let record = e.cloud_trail_event.clone().unwrap_or_else(|| {
                serde_json::json!({"eventID": e.event_id, "eventName": e.event_name, "eventSource": e.event_source})
                    .to_string()
            });
            let auth = trail_event_is_auth(&e, &record);
            out.push(Event {
                key: event_key(&[&e.event_id]),
                ts_ms: (e.event_time * 1000.0).round() as i64,
                line: record,
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

/// STS calls that mint credentials.
const STS_AUTH: &[&str] = &[
    "AssumeRole",
    "AssumeRoleWithSAML",
    "AssumeRoleWithWebIdentity",
    "AssumeRoot",
    "GetSessionToken",
    "GetFederationToken",
];

/// Error codes of a call refused for authentication or authorisation.
const AUTH_ERRORS: &[&str] = &[
    "accessdenied",
    "unauthorized",
    "notauthorized",
    "invalidclienttokenid",
    "signaturedoesnotmatch",
    "authfailure",
    "expiredtoken",
    "invalidaccesskeyid",
    "incompletesignature",
];

fn trail_event_is_auth(e: &TrailEvent, record: &str) -> bool {
    let rec: serde_json::Value = serde_json::from_str(record).unwrap_or_default();
    let field = |k: &str| rec.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let source = field("eventSource").unwrap_or_else(|| e.event_source.clone());
    let name = field("eventName").unwrap_or_else(|| e.event_name.clone());
    if source == "signin.amazonaws.com" {
        return true;
    }
    if source == "sts.amazonaws.com" && STS_AUTH.contains(&name.as_str()) {
        return true;
    }
    field("errorCode").is_some_and(|code| {
        let c = code.to_ascii_lowercase();
        AUTH_ERRORS.iter().any(|a| c.contains(a))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trail(source: &str, name: &str, error: Option<&str>) -> (TrailEvent, String) {
        let mut rec = serde_json::json!({"eventSource": source, "eventName": name});
        if let Some(e) = error {
            rec["errorCode"] = e.into();
        }
        (
            TrailEvent {
                event_id: "id".into(),
                event_name: name.into(),
                event_source: source.into(),
                event_time: 0.0,
                cloud_trail_event: Some(rec.to_string()),
            },
            rec.to_string(),
        )
    }

    #[test]
    fn auth_trail_events() {
        for (src, name, err, want) in [
            ("signin.amazonaws.com", "ConsoleLogin", None, true),
            ("signin.amazonaws.com", "CheckMfa", None, true),
            ("sts.amazonaws.com", "AssumeRole", None, true),
            ("sts.amazonaws.com", "GetCallerIdentity", None, false),
            ("s3.amazonaws.com", "GetObject", Some("AccessDenied"), true),
            (
                "ec2.amazonaws.com",
                "RunInstances",
                Some("Client.UnauthorizedOperation"),
                true,
            ),
            ("ec2.amazonaws.com", "DescribeInstances", None, false),
            (
                "rds.amazonaws.com",
                "ModifyDBInstance",
                Some("InvalidParameterValue"),
                false,
            ),
        ] {
            let (e, rec) = trail(src, name, err);
            assert_eq!(trail_event_is_auth(&e, &rec), want, "{src} {name} {err:?}");
        }
    }
}
