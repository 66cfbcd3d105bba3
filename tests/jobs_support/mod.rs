//! Shared fixtures of the job tests: a recording fake HTTP server on 127.0.0.1, a
//! settable clock, a fake container list, a job context pointing at temp dirs, and the
//! independent SigV4 check ([`sigv4`]).
#![allow(dead_code)]

pub mod sigv4;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use chrono::{DateTime, TimeZone, Utc};
use futures_util::future::BoxFuture;
use obsd::desired::EnvFile;
use obsd::jobs::{Clock, ContainerNames, ContainerNamesError, JobContext, RetryPolicy};
use obsd::secret::Secret;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the fake server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub at: std::time::Instant,
}

impl Recorded {
    pub fn q(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the fake answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Option<Duration>,
}

impl Reply {
    pub fn json(v: serde_json::Value) -> Reply {
        Reply::status(200, v)
    }
    pub fn status(status: u16, v: serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: v.to_string(),
            delay: None,
        }
    }
    pub fn text(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: body.into(),
            delay: None,
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn delayed(mut self, d: Duration) -> Reply {
        self.delay = Some(d);
        self
    }
}

type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync;

struct Inner {
    handler: Box<Handler>,
    requests: Mutex<Vec<Recorded>>,
}

/// A fake HTTP server on an ephemeral 127.0.0.1 port.
pub struct FakeServer {
    pub base: String,
    inner: Arc<Inner>,
}

impl FakeServer {
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.requests.lock().unwrap().clone()
    }
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

pub async fn serve(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> FakeServer {
    let inner = Arc::new(Inner {
        handler: Box::new(handler),
        requests: Mutex::new(Vec::new()),
    });
    let app = Router::new().fallback(handle).with_state(inner.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    FakeServer {
        base: format!("http://{addr}"),
        inner,
    }
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let rec = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(parse_query).unwrap_or_default(),
        headers: parts.headers.clone(),
        body: body.to_vec(),
        at: std::time::Instant::now(),
    };
    let reply = (inner.handler)(&rec);
    inner.requests.lock().unwrap().push(rec);
    if let Some(d) = reply.delay {
        tokio::time::sleep(d).await;
    }
    let mut resp = Response::new(Body::from(reply.body));
    *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap();
    for (k, v) in reply.headers {
        resp.headers_mut().insert(
            HeaderName::try_from(k).unwrap(),
            HeaderValue::try_from(v).unwrap(),
        );
    }
    resp
}

/// `a=1&b=x%5By%5D` → pairs, percent- and `+`-decoded.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(h, 16).unwrap());
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// A clock the test sets.
pub struct FixedClock(Mutex<DateTime<Utc>>);

impl FixedClock {
    pub fn at(t: DateTime<Utc>) -> Arc<FixedClock> {
        Arc::new(FixedClock(Mutex::new(t)))
    }
    pub fn advance(&self, d: chrono::Duration) {
        let mut t = self.0.lock().unwrap();
        *t += d;
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// 2026-03-15 12:00:00 UTC: "today" of every test.
pub fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap()
}

/// A fixed container list.
pub struct FakeContainers(pub Mutex<Result<Vec<(String, String)>, String>>);

impl ContainerNames for FakeContainers {
    fn list(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, ContainerNamesError>> {
        let r = self.0.lock().unwrap().clone();
        Box::pin(async move { r.map_err(|e| e.into()) })
    }
}

pub fn env(values: &[(&str, &str)]) -> Arc<EnvFile> {
    Arc::new(EnvFile {
        path: None,
        present: true,
        values: values
            .iter()
            .map(|(k, v)| (k.to_string(), Secret::new(*v)))
            .collect::<BTreeMap<_, _>>(),
    })
}

/// A context writing under `dir` (`textfiles/`, `state/`), with fast retries and a
/// short request timeout.
pub fn context(dir: &Path, env_values: &[(&str, &str)], clock: Arc<dyn Clock>) -> JobContext {
    let mut ctx = JobContext::new(
        env(env_values),
        dir.join("state"),
        Some(dir.join("textfiles")),
        Arc::new(FakeContainers(Mutex::new(Ok(vec![])))),
    );
    ctx.clock = clock;
    ctx.request_timeout = Duration::from_millis(1500);
    ctx.retry = RetryPolicy {
        attempts: 3,
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_secs(2),
        ..Default::default()
    };
    ctx
}

/// The textfile `name` in the context's textfile dir, parsed (and thereby validated).
pub fn read_textfile(ctx: &JobContext, name: &str) -> obsd::jobs::textfile::Parsed {
    let text = std::fs::read_to_string(ctx.textfile_dir.as_ref().unwrap().join(name)).unwrap();
    obsd::jobs::textfile::parse(&text).unwrap()
}

/// A job with no body yet: tests set the one body they exercise.
pub fn job_spec(schedule: &str, timeout_secs: u64) -> obsd::desired::model::JobSpec {
    obsd::desired::model::JobSpec {
        schedule: schedule.into(),
        timeout: obsd::desired::model::Duration::secs(timeout_secs),
        jitter: None,
        concurrency_policy: obsd::desired::model::job::ConcurrencyPolicy::Forbid,
        starting_deadline: None,
        suspend: false,
        history_limit: 5,
        cloud_poller: None,
        backup: None,
        self_heal: None,
        docker_names: None,
        status_page: None,
        logs_shipper: None,
        aws_cron_monitor: None,
    }
}
