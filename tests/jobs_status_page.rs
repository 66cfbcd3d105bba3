//! status-page against a fake Prometheus query API: the queries sent, `status.json`'s
//! shape, "no data" as null (never 100 %), and Prometheus errors leaving the previous
//! document in place.

mod jobs_support;

use jobs_support::*;
use obsd::desired::model::job::{StatusPageJob, StatusSurface};
use obsd::jobs::status_page::{self, Health, StatusDoc};
use serde_json::json;
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;

const APP: &str = "https://app.tlsstress.art/";
const ADMIN: &str = "https://admin.tlsstress.art/login";
const NEW: &str = "https://new.tlsstress.art/";

/// The series the fake Prometheus holds: query → value (absent = empty vector).
fn series() -> BTreeMap<String, &'static str> {
    let up = |url: &str, range: &str| {
        format!("min(avg_over_time(probe_success{{instance=\"{url}\"}}[{range}]))")
    };
    let lat =
        |url: &str| format!("avg(avg_over_time(probe_duration_seconds{{instance=\"{url}\"}}[1h]))");
    BTreeMap::from([
        (up(APP, "5m"), "1"),
        (up(APP, "24h"), "1"),
        (up(APP, "7d"), "0.9999"),
        (up(APP, "30d"), "1"),
        (lat(APP), "0.08123"),
        (up(ADMIN, "5m"), "0.5"),
        (up(ADMIN, "24h"), "0.99"),
        (up(ADMIN, "7d"), "0.995"),
        (up(ADMIN, "30d"), "0.9985"),
        (lat(ADMIN), "0.2345"),
    ])
}

fn prometheus_ok(r: &Recorded) -> Reply {
    if r.method != "GET" || r.path != "/api/v1/query" {
        return Reply::status(
            404,
            json!({"status": "error", "errorType": "not_found", "error": r.path}),
        );
    }
    if r.q("time") != Some(&format!("{}.000", noon().timestamp())) {
        return Reply::status(
            400,
            json!({"status": "error", "errorType": "bad_data", "error": format!("time {:?}", r.q("time"))}),
        );
    }
    let q = r.q("query").unwrap_or("");
    let result = match series().get(q) {
        Some(v) => json!([{"metric": {}, "value": [noon().timestamp(), v]}]),
        None => json!([]),
    };
    Reply::json(json!({"status": "success", "data": {"resultType": "vector", "result": result}}))
}

fn job(prom: &str, out: &std::path::Path) -> StatusPageJob {
    StatusPageJob {
        prometheus_url: prom.into(),
        output_dir: out.to_string_lossy().into_owned(),
        slo_target: 0.999,
        textfile: "status_page.prom".into(),
        surfaces: [("App", APP), ("Admin", ADMIN), ("New", NEW)]
            .iter()
            .map(|(n, u)| StatusSurface {
                name: n.to_string(),
                url: u.to_string(),
            })
            .collect(),
    }
}

#[tokio::test]
async fn writes_status_json_from_prometheus() {
    let prom = serve(prometheus_ok).await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), &[], FixedClock::at(noon()));
    let out = dir.path().join("status");
    status_page::run(&ctx, &job(&prom.base, &out), &CancellationToken::new())
        .await
        .unwrap();

    // Five queries per surface, all instant queries at the same time.
    let queries: Vec<String> = prom
        .requests()
        .iter()
        .map(|r| r.q("query").unwrap().to_string())
        .collect();
    assert_eq!(queries.len(), 15);
    assert!(queries.contains(&format!(
        "min(avg_over_time(probe_success{{instance=\"{APP}\"}}[24h]))"
    )));

    let raw = std::fs::read_to_string(out.join("status.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v["generated_at"], "2026-03-15T12:00:00Z");
    assert_eq!(v["overall"], "degraded");
    assert_eq!(
        v["surfaces"][0],
        json!({"name": "App", "url": APP, "status": "operational", "uptime_24h": 1.0, "uptime_7d": 0.9999, "uptime_30d": 1.0, "latency_ms": 81.2})
    );
    assert_eq!(
        v["surfaces"][1],
        json!({"name": "Admin", "url": ADMIN, "status": "degraded", "uptime_24h": 0.99, "uptime_7d": 0.995, "uptime_30d": 0.9985, "latency_ms": 234.5})
    );
    // Missing series: null, never 100 %.
    assert_eq!(
        v["surfaces"][2],
        json!({"name": "New", "url": NEW, "status": "no_data", "uptime_24h": null, "uptime_7d": null, "uptime_30d": null, "latency_ms": null})
    );
    // SLO: mean 30-day uptime of the surfaces with data; budget 1 - 0.00075/0.001.
    assert_eq!(
        v["slo"],
        json!({"target": 0.999, "uptime_30d": 0.99925, "error_budget_remaining": 0.25})
    );
    let doc: StatusDoc = serde_json::from_str(&raw).unwrap();
    assert_eq!(doc.overall, Health::Degraded);
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    let t = read_textfile(&ctx, "status_page.prom");
    assert_eq!(
        t.value("status_page_last_run_timestamp_seconds", &[]),
        Some(noon().timestamp() as f64)
    );
}

#[tokio::test]
async fn nothing_probed_yet_is_no_data() {
    let prom = serve(|_| {
        Reply::json(json!({"status": "success", "data": {"resultType": "vector", "result": []}}))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), &[], FixedClock::at(noon()));
    // A relative outputDir lands under the state directory.
    let mut j = job(&prom.base, std::path::Path::new("x"));
    j.output_dir = "status".into();
    status_page::run(&ctx, &j, &CancellationToken::new())
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("state/status/status.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(v["overall"], "no_data");
    assert_eq!(v["slo"]["uptime_30d"], serde_json::Value::Null);
    assert_eq!(v["slo"]["error_budget_remaining"], serde_json::Value::Null);
}

#[tokio::test]
async fn prometheus_errors_fail_the_run_and_keep_the_previous_document() {
    for reply in [
        Reply::status(
            503,
            json!({"status": "error", "errorType": "unavailable", "error": "TSDB not ready"}),
        ),
        Reply::status(
            422,
            json!({"status": "error", "errorType": "execution", "error": "query timed out"}),
        ),
    ] {
        let r2 = reply.clone();
        let prom = serve(move |_| r2.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path(), &[], FixedClock::at(noon()));
        let out = dir.path().join("status");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("status.json"), "previous").unwrap();
        let err = status_page::run(&ctx, &job(&prom.base, &out), &CancellationToken::new())
            .await
            .unwrap_err()
            .to_string();
        let expect = if reply.status == 503 {
            "HTTP 503: TSDB not ready"
        } else {
            "HTTP 422: query timed out"
        };
        assert!(
            err.starts_with("GET /api/v1/query: ") && err.ends_with(expect),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("status.json")).unwrap(),
            "previous"
        );
        // 503 is retried per the policy; 422 is not.
        let want = if reply.status == 503 { 3 } else { 1 };
        assert_eq!(prom.requests().len(), want);
    }
}
