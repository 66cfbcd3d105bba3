//! Alerting that does not depend on the stack's own Prometheus.
//!
//! obsd manages Prometheus, so "Prometheus alerts when obsd fails" is not enough: a
//! broken Prometheus, or a dead host, would be silent. Two independent paths:
//! * **Alertmanager v2**: when reconciling keeps failing for `failingAfter`, obsd posts
//!   `ObsdReconcileFailing` itself (re-sent while failing, so Alertmanager keeps it
//!   active) and posts it resolved when a pass succeeds again.
//! * **Dead-man's switch** (healthchecks.io style): a ping after a successful pass,
//!   `<url>/fail` after a failed one, at most once a minute unless the outcome changed,
//!   so a host that stops pinging is noticed from outside.
//!
//! URLs come from the env file (they hold tokens) and are never logged.

use crate::secret::Secret;
use serde_json::json;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Alerting configuration, resolved from the Stack and the env file.
#[derive(Debug, Clone, Default)]
pub struct AlertConfig {
    pub alertmanager_url: Option<Secret>,
    pub dead_man_url: Option<Secret>,
    pub failing_after: Duration,
    pub project: String,
}

impl AlertConfig {
    pub fn from_desired(d: &crate::desired::DesiredState) -> AlertConfig {
        let a = d.stack.spec.alerting.as_ref();
        let get = |name: Option<&String>| {
            name.and_then(|n| d.env.get(n))
                .filter(|s| !s.expose().is_empty())
                .cloned()
        };
        AlertConfig {
            alertmanager_url: get(a.and_then(|a| a.alertmanager_url_env.as_ref())),
            dead_man_url: get(a.and_then(|a| a.dead_man_url_env.as_ref())),
            failing_after: a
                .map(|a| a.failing_after.0)
                .unwrap_or(Duration::from_secs(600)),
            project: d.project().to_string(),
        }
    }
}

/// Tracks reconcile outcomes and decides what to send.
pub struct Alerter {
    cfg: AlertConfig,
    http: reqwest::Client,
    failing_since: Option<Instant>,
    firing: bool,
    last_fire_sent: Option<Instant>,
    last_ping: Option<(Instant, bool)>,
    started_at: chrono::DateTime<chrono::Utc>,
}

/// What one observation asks to send (pure decision, see [`Alerter::decide`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sends {
    pub fire: bool,
    pub resolve: bool,
    pub ping: Option<bool>,
}

impl Alerter {
    pub fn new(cfg: AlertConfig) -> Alerter {
        Alerter {
            cfg,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("http client"),
            failing_since: None,
            firing: false,
            last_fire_sent: None,
            last_ping: None,
            started_at: chrono::Utc::now(),
        }
    }

    pub fn set_config(&mut self, cfg: AlertConfig) {
        self.cfg = cfg;
    }

    /// Decides what to send after a pass that `failed` (or not) at `now`.
    pub fn decide(&mut self, failed: bool, now: Instant) -> Sends {
        let mut s = Sends {
            fire: false,
            resolve: false,
            ping: None,
        };
        if failed {
            let since = *self.failing_since.get_or_insert(now);
            if now.duration_since(since) >= self.cfg.failing_after {
                // (Re-)send at most once a minute while failing.
                let due = self
                    .last_fire_sent
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60));
                if !self.firing || due {
                    s.fire = true;
                    self.firing = true;
                    self.last_fire_sent = Some(now);
                }
            }
        } else {
            self.failing_since = None;
            if self.firing {
                s.resolve = true;
                self.firing = false;
                self.last_fire_sent = None;
            }
        }
        let ok = !failed;
        let ping_due = match self.last_ping {
            None => true,
            Some((t, last_ok)) => last_ok != ok || now.duration_since(t) >= Duration::from_secs(60),
        };
        if ping_due {
            s.ping = Some(ok);
            self.last_ping = Some((now, ok));
        }
        s
    }

    /// Records a pass outcome and sends what is due, in the background.
    pub fn observe(&mut self, failed: bool, message: &str) {
        let s = self.decide(failed, Instant::now());
        if let (Some(url), true) = (self.cfg.alertmanager_url.clone(), s.fire || s.resolve) {
            let body = self.alert_body(s.fire, message);
            let http = self.http.clone();
            tokio::spawn(async move {
                let target = format!("{}/api/v2/alerts", url.expose().trim_end_matches('/'));
                match http.post(&target).json(&body).send().await {
                    Ok(r) if r.status().is_success() => debug!("alert sent to alertmanager"),
                    Ok(r) => warn!(
                        status = r.status().as_u16(),
                        "alertmanager rejected the alert"
                    ),
                    Err(e) => warn!(error = %redact(&e), "cannot reach alertmanager"),
                }
            });
        }
        if let (Some(url), Some(ok)) = (self.cfg.dead_man_url.clone(), s.ping) {
            let http = self.http.clone();
            tokio::spawn(async move {
                let base = url.expose().trim_end_matches('/').to_string();
                let target = if ok { base } else { format!("{base}/fail") };
                match http.get(&target).send().await {
                    Ok(r) if r.status().is_success() => debug!(ok, "dead-man ping sent"),
                    Ok(r) => warn!(status = r.status().as_u16(), "dead-man ping rejected"),
                    Err(e) => warn!(error = %redact(&e), "cannot reach the dead-man URL"),
                }
            });
        }
    }

    fn alert_body(&self, firing: bool, message: &str) -> serde_json::Value {
        let now = chrono::Utc::now();
        // While firing, endsAt lies in the future and is pushed forward by each re-send;
        // resolving sets it to now.
        let ends = if firing {
            now + chrono::Duration::minutes(5)
        } else {
            now
        };
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        json!([{
            "labels": {
                "alertname": "ObsdReconcileFailing",
                "severity": "critical",
                "source": "obsd",
                "stack": self.cfg.project,
                "instance": host,
            },
            "annotations": {
                "summary": "obsd cannot converge the host",
                "description": format!("Reconciling has failed for at least {}. Last error: {message}. Run `obsctl status` and `journalctl -u obsd` on the host.", humantime::format_duration(self.cfg.failing_after)),
            },
            "startsAt": self.started_at.max(now - chrono::Duration::hours(24)).to_rfc3339(),
            "endsAt": ends.to_rfc3339(),
        }])
    }
}

/// reqwest errors print the URL, which holds a token: keep only the kind.
fn redact(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    kind.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alerter(after: u64) -> Alerter {
        Alerter::new(AlertConfig {
            failing_after: Duration::from_secs(after),
            ..Default::default()
        })
    }

    #[test]
    fn fires_only_after_failing_for_the_threshold_and_resolves_once() {
        let mut a = alerter(60);
        let t0 = Instant::now();
        assert!(!a.decide(true, t0).fire);
        assert!(!a.decide(true, t0 + Duration::from_secs(30)).fire);
        assert!(a.decide(true, t0 + Duration::from_secs(61)).fire);
        // Not re-sent every pass...
        assert!(!a.decide(true, t0 + Duration::from_secs(62)).fire);
        // ...but re-sent a minute later so Alertmanager keeps it active.
        assert!(a.decide(true, t0 + Duration::from_secs(122)).fire);
        let s = a.decide(false, t0 + Duration::from_secs(130));
        assert!(s.resolve && !s.fire);
        assert!(!a.decide(false, t0 + Duration::from_secs(131)).resolve);
    }

    #[test]
    fn pings_on_change_or_once_a_minute() {
        let mut a = alerter(60);
        let t0 = Instant::now();
        assert_eq!(a.decide(false, t0).ping, Some(true));
        assert_eq!(a.decide(false, t0 + Duration::from_secs(10)).ping, None);
        assert_eq!(
            a.decide(true, t0 + Duration::from_secs(11)).ping,
            Some(false)
        );
        assert_eq!(a.decide(true, t0 + Duration::from_secs(12)).ping, None);
        assert_eq!(
            a.decide(true, t0 + Duration::from_secs(72)).ping,
            Some(false)
        );
    }
}
