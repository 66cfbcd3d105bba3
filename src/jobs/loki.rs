//! Loki's push API (`POST /loki/api/v1/push`, JSON) within Loki's limits.
//!
//! - Streams are label sets; entries are `[<unix nanoseconds as a string>, <line>]`,
//!   sorted by time within each stream (older Loki configurations and strict
//!   `unordered_writes: false` reject anything else; sorting costs nothing here).
//! - A request body stays under a byte budget ([`batches`]); a stream too big for one
//!   request is split into several, in time order.
//! - Answers: 2xx accepted. 429 (rate limit) and 5xx are retried with backoff, never
//!   past the run's deadline. 400 means Loki refused some entries for good (too old,
//!   too far behind the stream, line too long): the valid ones of the request were
//!   stored, so retrying is useless; the count comes from Loki's `total ignored: N out
//!   of M`. Anything that exhausts the retries is an outage: the caller keeps its
//!   checkpoint.

use super::http::{self, HttpError, RetryPolicy};
use super::JobContext;
use serde::Serialize;
use std::collections::BTreeMap;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One log entry of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Unix time in nanoseconds.
    pub ts_ns: i128,
    pub line: String,
    /// The caller's handle on the entry (its de-duplication key), returned per batch.
    pub key: String,
}

/// Entries of one label set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    pub labels: BTreeMap<String, String>,
    pub entries: Vec<Entry>,
}

/// One push request: streams, each sorted, under the byte budget.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    pub streams: Vec<Stream>,
    /// Size of the JSON body (exact).
    pub bytes: usize,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.streams.iter().map(|s| s.entries.len()).sum()
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.streams
            .iter()
            .flat_map(|s| s.entries.iter().map(|e| e.key.as_str()))
    }

    /// The JSON body Loki expects.
    pub fn body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body<'a> {
            streams: Vec<StreamOut<'a>>,
        }
        #[derive(Serialize)]
        struct StreamOut<'a> {
            stream: &'a BTreeMap<String, String>,
            values: Vec<(String, &'a str)>,
        }
        let body = Body {
            streams: self
                .streams
                .iter()
                .map(|s| StreamOut {
                    stream: &s.labels,
                    values: s
                        .entries
                        .iter()
                        .map(|e| (e.ts_ns.to_string(), e.line.as_str()))
                        .collect(),
                })
                .collect(),
        };
        serde_json::to_vec(&body).expect("strings and maps always serialize")
    }
}

/// JSON length of a string value, quotes included.
fn json_len(s: &str) -> usize {
    serde_json::to_string(s)
        .map(|j| j.len())
        .unwrap_or(s.len() + 2)
}

/// Sorts every stream by time and packs the streams into push requests of at most
/// `max_bytes` of JSON each (an entry bigger than the budget on its own still gets a
/// request of its own: Loki, not the shipper, decides about it).
pub fn batches(mut streams: Vec<Stream>, max_bytes: usize) -> Vec<Batch> {
    const BODY: usize = r#"{"streams":[]}"#.len();
    let mut out = Vec::new();
    let mut cur = Batch {
        streams: Vec::new(),
        bytes: BODY,
    };
    for s in &mut streams {
        s.entries
            .sort_by(|a, b| a.ts_ns.cmp(&b.ts_ns).then(a.key.cmp(&b.key)));
    }
    for s in streams.into_iter().filter(|s| !s.entries.is_empty()) {
        let labels_json = serde_json::to_string(&s.labels).expect("a map of strings");
        // `{"stream":<labels>,"values":[]}` plus a separating comma.
        let stream_overhead = labels_json.len() + r#"{"stream":,"values":[]},"#.len();
        let mut open: Option<Stream> = None;
        for e in s.entries {
            // `["<ts>",<line>],`
            let entry_bytes = e.ts_ns.to_string().len() + 2 + json_len(&e.line) + 4;
            let needed = entry_bytes + if open.is_none() { stream_overhead } else { 0 };
            if cur.bytes + needed > max_bytes && (open.is_some() || !cur.streams.is_empty()) {
                if let Some(st) = open.take() {
                    cur.streams.push(st);
                }
                out.push(std::mem::replace(
                    &mut cur,
                    Batch {
                        streams: Vec::new(),
                        bytes: BODY,
                    },
                ));
            }
            let st = open.get_or_insert_with(|| {
                cur.bytes += stream_overhead;
                Stream {
                    labels: s.labels.clone(),
                    entries: Vec::new(),
                }
            });
            st.entries.push(e);
            cur.bytes += entry_bytes;
        }
        if let Some(st) = open.take() {
            cur.streams.push(st);
        }
    }
    if !cur.streams.is_empty() {
        out.push(cur);
    }
    for b in &mut out {
        b.bytes = b.body().len();
    }
    out
}

/// What Loki did with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// Every entry stored.
    Accepted,
    /// HTTP 400: `ignored` entries refused for good (the others were stored).
    Rejected { ignored: usize, detail: String },
}

/// A push client for one run.
pub struct Client<'a> {
    ctx: &'a JobContext,
    url: reqwest::Url,
    cancel: &'a CancellationToken,
    deadline: Option<Instant>,
}

impl<'a> Client<'a> {
    pub fn new(
        ctx: &'a JobContext,
        loki_url: &str,
        cancel: &'a CancellationToken,
        deadline: Option<Instant>,
    ) -> Result<Client<'a>, String> {
        let base = loki_url.trim_end_matches('/');
        let url = reqwest::Url::parse(&format!("{base}/loki/api/v1/push"))
            .map_err(|e| format!("invalid Loki URL `{loki_url}`: {e}"))?;
        Ok(Client {
            ctx,
            url,
            cancel,
            deadline,
        })
    }

    /// Sends one batch; retries 429, 5xx and connection failures per `retry` (never
    /// sleeping past the deadline).
    pub async fn push(&self, batch: &Batch, retry: &RetryPolicy) -> Result<Pushed, HttpError> {
        let what = "Loki push".to_string();
        let body = batch.body();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = self
                .ctx
                .http
                .post(self.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .timeout(self.ctx.request_timeout)
                .send();
            let resp = tokio::select! {
                r = sent => r,
                _ = self.cancel.cancelled() => return Err(HttpError::Cancelled { what }),
            };
            let (err, retry_after) = match resp {
                Ok(r) if r.status().is_success() => return Ok(Pushed::Accepted),
                Ok(r) if r.status().as_u16() == 400 => {
                    let text = r.text().await.unwrap_or_default();
                    let ignored = ignored_count(&text).unwrap_or(batch.len());
                    return Ok(Pushed::Rejected {
                        ignored: ignored.min(batch.len()),
                        detail: http::truncate(&one_line(&text), 300),
                    });
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    let retry_after = r
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(http::parse_retry_after);
                    let text = r.text().await.unwrap_or_default();
                    let err = HttpError::Status {
                        what: what.clone(),
                        status,
                        detail: http::truncate(&one_line(&text), 300),
                        retry_after,
                    };
                    if status != 429 && status < 500 {
                        return Err(err);
                    }
                    (err, retry_after)
                }
                Err(source) => {
                    let connect = source.is_connect();
                    let err = HttpError::Transport {
                        what: what.clone(),
                        source,
                    };
                    if !connect {
                        return Err(err);
                    }
                    (err, None)
                }
            };
            if attempt >= retry.attempts {
                return Err(err);
            }
            let wait = http::backoff_delay(retry, attempt, retry_after);
            if self.deadline.is_some_and(|d| Instant::now() + wait >= d) {
                return Err(err);
            }
            tracing::debug!(error = %err, wait_ms = wait.as_millis() as u64, "retrying Loki push");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.cancel.cancelled() => return Err(HttpError::Cancelled { what }),
            }
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `… total ignored: 3 out of 10` (Loki's summary of a partial rejection).
fn ignored_count(text: &str) -> Option<usize> {
    let rest = &text[text.rfind("total ignored:")? + "total ignored:".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ts: i128, line: &str) -> Entry {
        Entry {
            ts_ns: ts,
            line: line.into(),
            key: format!("k{ts}"),
        }
    }

    fn stream(app: &str, entries: Vec<Entry>) -> Stream {
        Stream {
            labels: [("source_app".to_string(), app.to_string())].into(),
            entries,
        }
    }

    #[test]
    fn batches_sort_split_and_respect_the_budget() {
        let a = stream(
            "a",
            (0..50)
                .rev()
                .map(|i| entry(1_000 + i, &"x".repeat(100)))
                .collect(),
        );
        let b = stream("b", vec![entry(5, "one \"quoted\" line\n")]);
        let out = batches(vec![a, b], 2_000);
        assert!(out.len() > 2, "{}", out.len());
        let mut all = Vec::new();
        for batch in &out {
            assert!(batch.bytes <= 2_000, "{}", batch.bytes);
            assert_eq!(batch.bytes, batch.body().len());
            for s in &batch.streams {
                assert!(s.entries.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
                all.extend(
                    s.entries
                        .iter()
                        .map(|e| (s.labels["source_app"].clone(), e.ts_ns)),
                );
            }
        }
        // Every entry once, each stream in time order across batches.
        assert_eq!(all.len(), 51);
        let a_ts: Vec<i128> = all.iter().filter(|(l, _)| l == "a").map(|x| x.1).collect();
        assert_eq!(a_ts, (1_000..1_050).collect::<Vec<_>>());
        let body: serde_json::Value = serde_json::from_slice(&out.last().unwrap().body()).unwrap();
        let last = body["streams"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["stream"], serde_json::json!({"source_app": "b"}));
        assert_eq!(
            last["values"][0],
            serde_json::json!(["5", "one \"quoted\" line\n"])
        );
    }

    #[test]
    fn an_oversized_entry_gets_its_own_batch() {
        let s = stream(
            "a",
            vec![
                entry(1, "small"),
                entry(2, &"y".repeat(5_000)),
                entry(3, "small"),
            ],
        );
        let out = batches(vec![s], 1_000);
        assert_eq!(out.iter().map(Batch::len).collect::<Vec<_>>(), [1, 1, 1]);
    }

    #[test]
    fn loki_partial_rejection_count() {
        let t = "entry with timestamp 2026-01-01 ignored, reason: 'entry too far behind' for stream: {a=\"b\"},\nuser 'fake', total ignored: 3 out of 10";
        assert_eq!(ignored_count(t), Some(3));
        assert_eq!(ignored_count("error at least"), None);
    }
}
