//! Peers of the AWS job tests (`tests/jobs_aws.rs`), all on 127.0.0.1:
//!
//! - [`Moto`]: moto's server (`python3 -m moto.server`, the real implementation of CloudWatch Logs
//!   `FilterLogEvents` with `nextToken` and CloudWatch `GetMetricData`), started per test
//!   on a free port and seeded with boto3 (`seed.py`).
//! - [`AwsProxy`]: in front of moto, which does not check signatures: every request must
//!   carry a valid SigV4 signature (the independent check of `jobs_support::sigv4`) and
//!   the right JSON-protocol target and content type; it can answer
//!   `ThrottlingException` on demand, which moto never does.
//! - [`CloudTrailFake`]: `LookupEvents` (not implemented by moto), JSON 1.1, signed,
//!   newest first, `MaxResults` ≤ 50, `NextToken` bound to its query.
//! - [`LokiFake`]: `/loki/api/v1/push` decoded and held to Loki's rules (valid labels,
//!   sorted per stream, not too far behind the stream, not too old); it drops exact
//!   duplicates like Loki, answers 429/503 on demand, and can `kill -9` a process the
//!   moment it has stored a push.
#![allow(dead_code)]

use crate::jobs_support::sigv4::{check_signature, JSON_SIGNED};
use crate::jobs_support::{parse_query, serve, FakeServer, Recorded, Reply};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

pub const AKID: &str = "AKIDLOGSSHIPPERTEST";
pub const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYAWSJOBCANARY";
pub const REGION: &str = "eu-west-1";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ----------------------------------------------------------------------------- moto

pub use crate::moto_support::Moto;

impl Moto {
    /// Runs `seed.py` (boto3) against this server.
    pub fn seed(&self, spec: Value) {
        use std::io::Write;
        let mut child = Command::new("python3")
            .arg(repo().join("tests/jobs_aws_support/seed.py"))
            .arg(&self.url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(spec.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "seeding moto failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ------------------------------------------------------------------ signature proxy

/// `(target prefix, content type, SigV4 service)` of the services behind the proxy.
const PROXIED: &[(&str, &str, &str)] = &[
    ("Logs_20140328.", "application/x-amz-json-1.1", "logs"),
    (
        "GraniteServiceVersion20100801.",
        "application/x-amz-json-1.0",
        "monitoring",
    ),
];

struct ProxyInner {
    upstream: String,
    http: reqwest::Client,
    requests: Mutex<Vec<Recorded>>,
    /// Per operation: replies given instead of forwarding, first in first out.
    faults: Mutex<BTreeMap<String, VecDeque<Reply>>>,
    /// Per operation: a reply given every time (persistent throttling).
    always: Mutex<BTreeMap<String, Reply>>,
    rejected: Mutex<Vec<String>>,
}

/// Checks and forwards AWS JSON-protocol requests to moto.
pub struct AwsProxy {
    pub base: String,
    inner: Arc<ProxyInner>,
}

impl AwsProxy {
    pub async fn start(upstream: &str) -> AwsProxy {
        let inner = Arc::new(ProxyInner {
            upstream: upstream.to_string(),
            http: reqwest::Client::new(),
            requests: Mutex::default(),
            faults: Mutex::default(),
            always: Mutex::default(),
            rejected: Mutex::default(),
        });
        let app = Router::new()
            .fallback(proxy_handle)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        AwsProxy {
            base: format!("http://{addr}/"),
            inner,
        }
    }

    /// The next `n` calls of `op` get `reply` instead of moto's answer.
    pub fn fail_next(&self, op: &str, n: usize, reply: Reply) {
        let mut f = self.inner.faults.lock().unwrap();
        let q = f.entry(op.to_string()).or_default();
        for _ in 0..n {
            q.push_back(reply.clone());
        }
    }

    /// Every call of `op` gets `reply` (until [`AwsProxy::heal`]).
    pub fn fail_always(&self, op: &str, reply: Reply) {
        self.inner
            .always
            .lock()
            .unwrap()
            .insert(op.to_string(), reply);
    }

    pub fn heal(&self) {
        self.inner.always.lock().unwrap().clear();
        self.inner.faults.lock().unwrap().clear();
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// Requests of operation `op`, as sent.
    pub fn calls(&self, op: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| {
                r.header("x-amz-target")
                    .is_some_and(|t| t.ends_with(&format!(".{op}")))
            })
            .collect()
    }

    /// Requests refused for a bad signature, target or content type (must stay empty).
    pub fn rejected(&self) -> Vec<String> {
        self.inner.rejected.lock().unwrap().clone()
    }
}

pub fn throttling() -> Reply {
    Reply::status(
        400,
        json!({"__type": "ThrottlingException", "message": "Rate exceeded"}),
    )
}

async fn proxy_handle(State(inner): State<Arc<ProxyInner>>, req: Request) -> Response {
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
    inner.requests.lock().unwrap().push(rec.clone());
    let target = rec.header("x-amz-target").unwrap_or("").to_string();
    let problem = match PROXIED.iter().find(|(p, _, _)| target.starts_with(p)) {
        None => Some(format!("unknown target {target:?}")),
        Some(_) if rec.method != "POST" || rec.path != "/" || !rec.query.is_empty() => {
            Some(format!("{} {}", rec.method, rec.path))
        }
        Some((_, ct, _)) if rec.header("content-type") != Some(*ct) => Some(format!(
            "content-type {:?} for {target}",
            rec.header("content-type")
        )),
        Some((_, _, service)) => {
            check_signature(&rec, AKID, SECRET, REGION, service, &JSON_SIGNED).err()
        }
    };
    if let Some(p) = problem {
        inner.rejected.lock().unwrap().push(p.clone());
        return reply_response(Reply::status(
            403,
            json!({"__type": "InvalidSignatureException", "message": p}),
        ));
    }
    let op = target.rsplit('.').next().unwrap_or("").to_string();
    if let Some(r) = inner.always.lock().unwrap().get(&op).cloned() {
        return reply_response(r);
    }
    if let Some(r) = inner
        .faults
        .lock()
        .unwrap()
        .get_mut(&op)
        .and_then(VecDeque::pop_front)
    {
        return reply_response(r);
    }
    let mut fwd = inner
        .http
        .post(format!("{}/", inner.upstream))
        .body(rec.body.clone());
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" {
            fwd = fwd.header(k, v);
        }
    }
    match fwd.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let ct = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/x-amz-json-1.1")
                .to_string();
            let text = r.text().await.unwrap_or_default();
            reply_response(Reply {
                status,
                headers: vec![("content-type".into(), ct)],
                body: text,
                delay: None,
            })
        }
        Err(e) => reply_response(Reply::text(502, &format!("moto unreachable: {e}"))),
    }
}

fn reply_response(reply: Reply) -> Response {
    let mut resp = Response::new(Body::from(reply.body));
    *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap();
    for (k, v) in reply.headers {
        resp.headers_mut().insert(
            axum::http::HeaderName::try_from(k).unwrap(),
            axum::http::HeaderValue::try_from(v).unwrap(),
        );
    }
    resp
}

// ------------------------------------------------------------------------ CloudTrail

pub const CLOUDTRAIL_TARGET: &str =
    "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents";

/// A `LookupEvents` item as AWS returns it, with its CloudTrail record.
pub fn trail_event(id: &str, name: &str, source: &str, t_secs: i64, error: Option<&str>) -> Value {
    let mut record = json!({
        "eventVersion": "1.09",
        "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/dev", "userName": "dev"},
        "eventTime": chrono::DateTime::from_timestamp(t_secs, 0).unwrap().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "eventSource": source,
        "eventName": name,
        "awsRegion": REGION,
        "sourceIPAddress": "203.0.113.7",
        "eventID": id,
        "eventType": "AwsApiCall",
    });
    if let Some(e) = error {
        record["errorCode"] = e.into();
        record["errorMessage"] = "denied".into();
    }
    json!({
        "EventId": id,
        "EventName": name,
        "ReadOnly": "false",
        "EventTime": t_secs as f64,
        "EventSource": source,
        "Username": "dev",
        "Resources": [],
        "CloudTrailEvent": record.to_string(),
    })
}

pub struct CloudTrailFake {
    pub server: FakeServer,
    pub events: Arc<Mutex<Vec<Value>>>,
    pub faults: Arc<Mutex<VecDeque<Reply>>>,
    pub rejected: Arc<Mutex<Vec<String>>>,
}

impl CloudTrailFake {
    pub async fn start() -> CloudTrailFake {
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let faults: Arc<Mutex<VecDeque<Reply>>> = Arc::default();
        let rejected: Arc<Mutex<Vec<String>>> = Arc::default();
        let (ev, fl, rj) = (events.clone(), faults.clone(), rejected.clone());
        let server = serve(move |r| {
            let problem = if r.method != "POST" || r.path != "/" {
                Some(format!("{} {}", r.method, r.path))
            } else if r.header("content-type") != Some("application/x-amz-json-1.1") {
                Some(format!("content-type {:?}", r.header("content-type")))
            } else if r.header("x-amz-target") != Some(CLOUDTRAIL_TARGET) {
                Some(format!("target {:?}", r.header("x-amz-target")))
            } else {
                check_signature(r, AKID, SECRET, REGION, "cloudtrail", &JSON_SIGNED).err()
            };
            if let Some(p) = problem {
                rj.lock().unwrap().push(p.clone());
                return Reply::status(
                    403,
                    json!({"__type": "InvalidSignatureException", "message": p}),
                );
            }
            if let Some(f) = fl.lock().unwrap().pop_front() {
                return f;
            }
            lookup(&ev.lock().unwrap(), &r.json())
        })
        .await;
        CloudTrailFake {
            server,
            events,
            faults,
            rejected,
        }
    }

    pub fn api_base(&self) -> String {
        format!("{}/", self.server.base)
    }

    pub fn add(&self, events: impl IntoIterator<Item = Value>) {
        self.events.lock().unwrap().extend(events);
    }
}

/// `LookupEvents`: `[StartTime, EndTime]` (seconds, inclusive), newest first, paged.
fn lookup(events: &[Value], q: &Value) -> Reply {
    let bad = |m: &str| {
        Reply::status(
            400,
            json!({"__type": "InvalidParameterException", "message": m}),
        )
    };
    let (Some(start), Some(end)) = (q["StartTime"].as_f64(), q["EndTime"].as_f64()) else {
        return bad("StartTime and EndTime are required here");
    };
    let max = q["MaxResults"].as_u64().unwrap_or(50);
    if !(1..=50).contains(&max) {
        return Reply::status(
            400,
            json!({"__type": "InvalidMaxResultsException", "message": "MaxResults must be 1-50"}),
        );
    }
    let query_id = format!("{start}-{end}-{max}");
    let offset = match q["NextToken"].as_str() {
        None => 0,
        Some(t) => match t.split_once('|') {
            Some((qid, off)) if qid == query_id => off.parse::<usize>().unwrap_or(usize::MAX),
            _ => {
                return Reply::status(
                    400,
                    json!({"__type": "InvalidNextTokenException", "message": "token does not belong to this query"}),
                )
            }
        },
    };
    let mut matching: Vec<&Value> = events
        .iter()
        .filter(|e| {
            let t = e["EventTime"].as_f64().unwrap();
            t >= start.floor() && t <= end
        })
        .collect();
    matching.sort_by(|a, b| {
        b["EventTime"]
            .as_f64()
            .partial_cmp(&a["EventTime"].as_f64())
            .unwrap()
    });
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(max as usize)
        .map(|v| (*v).clone())
        .collect();
    let next = offset + page.len();
    let mut out = json!({"Events": page});
    if next < matching.len() {
        out["NextToken"] = format!("{query_id}|{next}").into();
    }
    Reply {
        status: 200,
        headers: vec![("content-type".into(), "application/x-amz-json-1.1".into())],
        body: out.to_string(),
        delay: None,
    }
}

// ----------------------------------------------------------------------------- Loki

/// A stream's labels.
pub type LabelSet = BTreeMap<String, String>;

/// One entry as received.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LokiEntry {
    pub labels: BTreeMap<String, String>,
    pub ts_ns: i128,
    pub line: String,
}

#[derive(Default)]
pub struct LokiState {
    /// Stored entries per stream (label set), in arrival order.
    pub streams: BTreeMap<BTreeMap<String, String>, Vec<(i128, String)>>,
    /// Every entry received in an accepted request, duplicates included.
    pub received: Vec<LokiEntry>,
    /// Exact duplicates dropped (same stream, timestamp and line).
    pub duplicates: usize,
    /// Entries refused (too far behind, too old).
    pub refused: usize,
    /// Requests by outcome.
    pub pushes_ok: usize,
    pub pushes_failed: usize,
    /// Problems that a real Loki would answer with 400 for the whole request (unsorted,
    /// bad labels, bad JSON): a correct client never causes one.
    pub violations: Vec<String>,
    /// Status answered to the next requests instead of storing (429, 503 …).
    pub fail_next: VecDeque<u16>,
    /// `(pid, n)`: SIGKILL `pid` right after storing the `n`-th accepted push.
    pub kill_after: Option<(u32, usize)>,
    /// Entries further behind their stream's newest than this are refused (Loki 3's
    /// out-of-order window, `max_chunk_age / 2`).
    pub max_behind_ns: i128,
    /// Entries older than this are refused (`reject_old_samples_max_age`).
    pub reject_before_ns: i128,
}

pub struct LokiFake {
    pub url: String,
    pub addr: SocketAddr,
    pub state: Arc<Mutex<LokiState>>,
}

impl LokiFake {
    pub async fn start() -> LokiFake {
        LokiFake::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// On a given address (a Loki that comes back on the port obsd was told).
    pub async fn start_on(addr: SocketAddr) -> LokiFake {
        let state = Arc::new(Mutex::new(LokiState {
            max_behind_ns: 3600 * 1_000_000_000,
            ..Default::default()
        }));
        let app = Router::new()
            .fallback(loki_handle)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        LokiFake {
            url: format!("http://{addr}"),
            addr,
            state,
        }
    }

    /// Every stored entry, sorted.
    pub fn stored(&self) -> Vec<LokiEntry> {
        let st = self.state.lock().unwrap();
        let mut v: Vec<LokiEntry> = st
            .streams
            .iter()
            .flat_map(|(labels, es)| {
                es.iter().map(|(ts, line)| LokiEntry {
                    labels: labels.clone(),
                    ts_ns: *ts,
                    line: line.clone(),
                })
            })
            .collect();
        v.sort();
        v
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut LokiState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }
}

fn valid_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && !s.starts_with("__")
}

async fn loki_handle(State(state): State<Arc<Mutex<LokiState>>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let (status, text) = loki_push(&state, &parts, &body);
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    resp
}

fn loki_push(
    state: &Mutex<LokiState>,
    parts: &axum::http::request::Parts,
    body: &[u8],
) -> (u16, String) {
    let mut st = state.lock().unwrap();
    if parts.method != "POST" || parts.uri.path() != "/loki/api/v1/push" {
        return (404, "404 page not found\n".into());
    }
    if let Some(code) = st.fail_next.pop_front() {
        st.pushes_failed += 1;
        let msg = if code == 429 {
            "Ingestion rate limit exceeded for user fake"
        } else {
            "ingester unavailable"
        };
        return (code, msg.into());
    }
    let ct = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let violation = |st: &mut LokiState, m: String| {
        st.violations.push(m.clone());
        st.pushes_failed += 1;
        (400, m)
    };
    if ct != "application/json" {
        return violation(
            &mut st,
            format!("unsupported content type {ct:?} (JSON push expected)"),
        );
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return violation(&mut st, "body is not JSON".into());
    };
    let Some(streams) = v["streams"].as_array() else {
        return violation(&mut st, "no `streams` array".into());
    };
    // Validate the whole request first, as Loki does.
    let mut parsed: Vec<(LabelSet, Vec<(i128, String)>)> = Vec::new();
    for s in streams {
        let Some(labels) = s["stream"].as_object() else {
            return violation(&mut st, "stream without labels".into());
        };
        if labels.is_empty() {
            return violation(
                &mut st,
                "error at least one label pair is required per stream".into(),
            );
        }
        let mut ls = BTreeMap::new();
        for (k, val) in labels {
            let Some(val) = val.as_str().filter(|v| !v.is_empty()) else {
                return violation(&mut st, format!("label {k} has no string value"));
            };
            if !valid_label_name(k) {
                return violation(&mut st, format!("invalid label name {k:?}"));
            }
            ls.insert(k.clone(), val.to_string());
        }
        let Some(values) = s["values"].as_array() else {
            return violation(&mut st, "stream without values".into());
        };
        let mut es = Vec::new();
        for e in values {
            let (Some(ts), Some(line)) = (
                e[0].as_str().and_then(|t| t.parse::<i128>().ok()),
                e[1].as_str(),
            ) else {
                return violation(&mut st, format!("bad entry {e}"));
            };
            if let Some((prev, _)) = es.last() {
                if ts < *prev {
                    return violation(
                        &mut st,
                        format!("entry out of order for stream {ls:?}: {ts} after {prev}"),
                    );
                }
            }
            es.push((ts, line.to_string()));
        }
        parsed.push((ls, es));
    }
    let total: usize = parsed.iter().map(|(_, e)| e.len()).sum();
    let mut ignored = Vec::new();
    for (labels, es) in parsed {
        for (ts, line) in es {
            let stored = st.streams.entry(labels.clone()).or_default();
            let newest = stored.iter().map(|(t, _)| *t).max();
            if ts < st.reject_before_ns {
                ignored.push(format!("entry with timestamp {ts} ignored, reason: 'entry too old' for stream: {labels:?}"));
                continue;
            }
            if newest.is_some_and(|n| ts < n - st.max_behind_ns) {
                ignored.push(format!("entry with timestamp {ts} ignored, reason: 'entry too far behind' for stream: {labels:?}"));
                continue;
            }
            st.received.push(LokiEntry {
                labels: labels.clone(),
                ts_ns: ts,
                line: line.clone(),
            });
            let stored = st.streams.get_mut(&labels).unwrap();
            if stored.iter().any(|(t, l)| *t == ts && *l == line) {
                st.duplicates += 1;
            } else {
                stored.push((ts, line));
            }
        }
    }
    st.pushes_ok += 1;
    if let Some((pid, n)) = st.kill_after {
        if st.pushes_ok == n {
            // Stored; now the pusher dies before it can write its checkpoint.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            st.kill_after = None;
        }
    }
    if ignored.is_empty() {
        (204, String::new())
    } else {
        st.refused += ignored.len();
        let n = ignored.len();
        (
            400,
            format!(
                "{},\nuser 'fake', total ignored: {n} out of {total}",
                ignored.join(",\n")
            ),
        )
    }
}
