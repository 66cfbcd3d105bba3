//! logsShipper and awsCronMonitor against real peers on 127.0.0.1: moto's server for
//! CloudWatch Logs and CloudWatch metrics (behind a proxy that checks every SigV4
//! signature independently and injects throttling), a CloudTrail `LookupEvents` fake,
//! a Loki push fake that enforces Loki's rules, and a healthchecks fake.
//!
//! Needs moto's server and boto3 (`tests/setup.sh` installs `moto[server]` and boto3).

mod jobs_aws_support;
mod jobs_support;
mod moto_support;

use chrono::{DateTime, TimeZone, Utc};
use jobs_aws_support::*;
use jobs_support::*;
use obsd::desired::model::aws_job::{
    AwsCronMonitorJob, CloudTrailSource, CloudWatchLogsSource, CronFunction, LogGroup,
    LogsShipperJob,
};
use obsd::desired::model::Duration as ModelDuration;
use obsd::jobs::logs_shipper::{self, ShipperState};
use obsd::jobs::{aws_cron_monitor, BodyExecutor, Clock, Executor, JobContext, JobError, JobRun};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Real time (moto refuses log events older than 14 days), whole seconds.
fn base_now() -> DateTime<Utc> {
    Utc.timestamp_opt(Utc::now().timestamp(), 0).unwrap()
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn aws_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_RO_ACCESS_KEY_ID", AKID),
        ("AWS_RO_SECRET_ACCESS_KEY", SECRET),
    ]
}

fn group(name: &str, app: &str) -> LogGroup {
    LogGroup {
        name: name.into(),
        app: app.into(),
        filter_pattern: None,
    }
}

fn shipper(loki: &str) -> LogsShipperJob {
    LogsShipperJob {
        region: REGION.into(),
        access_key_id_env: "AWS_RO_ACCESS_KEY_ID".into(),
        secret_access_key_env: "AWS_RO_SECRET_ACCESS_KEY".into(),
        loki_url: loki.into(),
        labels: [("stack".to_string(), "tlsstress-cloud-obs".to_string())].into(),
        cloud_watch_logs: None,
        cloud_trail: None,
        initial_lookback: ModelDuration::secs(3600),
        max_window: ModelDuration::secs(15 * 60),
        max_catch_up: ModelDuration::secs(6 * 24 * 3600),
        batch_bytes: 1 << 20,
        max_line_bytes: 256 << 10,
        textfile: "logs_shipper.prom".into(),
    }
}

fn cloudwatch(api_base: &str, page_size: u32, groups: Vec<LogGroup>) -> CloudWatchLogsSource {
    CloudWatchLogsSource {
        api_base: Some(api_base.into()),
        overlap: ModelDuration::secs(300),
        page_size,
        log_groups: groups,
    }
}

fn cloudtrail(api_base: &str) -> CloudTrailSource {
    CloudTrailSource {
        api_base: Some(api_base.into()),
        overlap: ModelDuration::secs(20 * 60),
        page_interval: ModelDuration(Duration::from_millis(0)),
        page_size: 50,
    }
}

async fn ship(ctx: &JobContext, job: &LogsShipperJob) -> Result<(), JobError> {
    logs_shipper::run(ctx, "logs-shipper", job, &CancellationToken::new(), None).await
}

fn checkpoint(dir: &Path) -> Option<ShipperState> {
    let p = dir.join("state/jobs/logs-shipper.logs-shipper.json");
    std::fs::read(p)
        .ok()
        .map(|b| serde_json::from_slice(&b).unwrap())
}

fn stream_events(
    start: DateTime<Utc>,
    n: usize,
    step_s: i64,
    f: impl Fn(usize) -> String,
) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| json!([ms(start) + i as i64 * step_s * 1000, f(i)]))
        .collect()
}

/// Messages of a Lambda: every fifth one an auth failure.
fn lambda_message(stream: &str, i: usize) -> String {
    if i.is_multiple_of(5) {
        format!("{stream}: Login failed for user u{i}: invalid password")
    } else {
        format!("{stream}: request {i} done in {}ms", 10 + i)
    }
}

fn labels_of(e: &LokiEntry) -> Vec<(&str, &str)> {
    e.labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

// --------------------------------------------------------------- CloudWatch Logs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_paging_labels_and_checkpoint() {
    let moto = Moto::start().await;
    let proxy = AwsProxy::start(&moto.url).await;
    let loki = LokiFake::start().await;
    let now = base_now();
    let t0 = now - chrono::Duration::minutes(30);
    moto.seed(json!({"region": REGION, "log_groups": [
        {"name": "/aws/lambda/obs-paging", "streams": {
            "2026/03/15/[$LATEST]aaa": stream_events(t0, 25, 2, |i| lambda_message("a", i)),
            "2026/03/15/[$LATEST]bbb": stream_events(t0 + chrono::Duration::seconds(1), 25, 2, |i| lambda_message("b", i)),
        }},
        {"name": "/aws/apprunner/customer-app/0123/application", "streams": {
            "instance/1": stream_events(t0, 3, 60, |i| format!("GET /api/ready 200 #{i}")),
        }},
    ]}));

    let dir = tempfile::tempdir().unwrap();
    let clock = FixedClock::at(now);
    let ctx = context(dir.path(), &aws_env(), clock.clone());
    let mut job = shipper(&loki.url);
    job.cloud_watch_logs = Some(cloudwatch(
        &proxy.base,
        10,
        vec![
            group("/aws/lambda/obs-paging", "obs-paging"),
            group(
                "/aws/apprunner/customer-app/0123/application",
                "customer-app",
            ),
        ],
    ));

    ship(&ctx, &job).await.unwrap();

    assert_eq!(
        proxy.rejected(),
        Vec::<String>::new(),
        "every request signed"
    );
    let calls = proxy.calls("FilterLogEvents");
    let paged: Vec<&Recorded> = calls
        .iter()
        .filter(|r| {
            r.json()["logGroupName"] == "/aws/lambda/obs-paging"
                && r.json().get("nextToken").is_some()
        })
        .collect();
    assert!(
        paged.len() >= 4,
        "50 events at 10 a page need nextToken pages: {}",
        paged.len()
    );
    let tokens: BTreeSet<String> = paged
        .iter()
        .map(|r| r.json()["nextToken"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tokens.len(), paged.len(), "each page asked once");
    for r in &calls {
        let b = r.json();
        assert_eq!(b["limit"], 10);
        assert!(b["startTime"].as_i64().unwrap() < b["endTime"].as_i64().unwrap());
        assert!(b["endTime"].as_i64().unwrap() <= ms(now));
    }

    let stored = loki.stored();
    assert_eq!(stored.len(), 53, "every event once");
    assert!(loki.with(|s| s.violations.is_empty() && s.duplicates == 0));
    let paging: Vec<&LokiEntry> = stored
        .iter()
        .filter(|e| e.labels.get("log_group").map(String::as_str) == Some("/aws/lambda/obs-paging"))
        .collect();
    assert_eq!(paging.len(), 50);
    for e in &paging {
        let auth = e.line.contains("Login failed");
        let l = labels_of(e);
        assert_eq!(
            l,
            vec![
                ("log_group", "/aws/lambda/obs-paging"),
                ("security", if auth { "auth" } else { "none" }),
                ("source", "cloudwatch"),
                ("source_app", "obs-paging"),
                ("stack", "tlsstress-cloud-obs"),
            ]
        );
    }
    // The entry's millisecond is the event's.
    let first = stored
        .iter()
        .find(|e| e.line == "a: Login failed for user u0: invalid password")
        .unwrap();
    assert_eq!(first.ts_ns / 1_000_000, i128::from(ms(t0)));

    let t = read_textfile(&ctx, "logs_shipper.prom");
    let g = [
        ("source", "cloudwatch"),
        ("log_group", "/aws/lambda/obs-paging"),
    ];
    assert_eq!(t.value("logs_shipper_events_shipped_total", &g), Some(50.0));
    assert_eq!(t.value("logs_shipper_auth_events_total", &g), Some(10.0));
    assert_eq!(t.value("logs_shipper_scrape_up", &g), Some(1.0));
    assert_eq!(t.value("logs_shipper_lag_seconds", &g), Some(0.0));
    assert_eq!(
        t.value("logs_shipper_last_success_timestamp_seconds", &g),
        Some(now.timestamp() as f64)
    );
    assert_eq!(
        t.value(
            "logs_shipper_events_shipped_total",
            &[("log_group", "/aws/apprunner/customer-app/0123/application")]
        ),
        Some(3.0)
    );
    let cp = checkpoint(dir.path()).unwrap();
    assert_eq!(
        cp.sources["cloudwatch:/aws/lambda/obs-paging"].watermark_ms,
        ms(now) + 1
    );

    // A minute later: five new events and one that reached CloudWatch late (stamped
    // before the checkpoint, within the overlap). Only those six are shipped.
    clock.advance(chrono::Duration::minutes(1));
    moto.seed(json!({"region": REGION, "log_groups": [
        {"name": "/aws/lambda/obs-paging", "streams": {
            "2026/03/15/[$LATEST]ccc": stream_events(now + chrono::Duration::seconds(10), 5, 1, |i| lambda_message("c", i)),
            "2026/03/15/[$LATEST]late": stream_events(now - chrono::Duration::minutes(2), 1, 1, |_| "late: arrived after its checkpoint".to_string()),
        }},
    ]}));
    ship(&ctx, &job).await.unwrap();
    let stored = loki.stored();
    assert_eq!(stored.len(), 59);
    assert!(stored
        .iter()
        .any(|e| e.line == "late: arrived after its checkpoint"));
    assert_eq!(
        loki.with(|s| (s.duplicates, s.received.len())),
        (0, 59),
        "nothing re-sent"
    );
    let t = read_textfile(&ctx, "logs_shipper.prom");
    assert_eq!(t.value("logs_shipper_events_shipped_total", &g), Some(56.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_backed_off_within_the_deadline() {
    let moto = Moto::start().await;
    let proxy = AwsProxy::start(&moto.url).await;
    let loki = LokiFake::start().await;
    let now = base_now();
    let name = "/aws/lambda/obs-throttled";
    moto.seed(json!({"region": REGION, "log_groups": [{"name": name, "streams": {
        "s": stream_events(now - chrono::Duration::minutes(10), 20, 1, |i| format!("event {i}")),
    }}]}));
    let dir = tempfile::tempdir().unwrap();
    let clock = FixedClock::at(now);
    let ctx = context(dir.path(), &aws_env(), clock.clone());
    let mut job = shipper(&loki.url);
    job.max_window = ModelDuration::secs(3 * 3600);
    job.cloud_watch_logs = Some(cloudwatch(
        &proxy.base,
        10_000,
        vec![group(name, "throttled")],
    ));

    // Two throttled answers, then moto: backed off and retried.
    proxy.fail_next("FilterLogEvents", 2, throttling());
    ship(&ctx, &job).await.unwrap();
    assert_eq!(proxy.calls("FilterLogEvents").len(), 3);
    // Backoffs of at least 10 ms and 20 ms (equal jitter over 20 ms, 40 ms).
    let calls = proxy.calls("FilterLogEvents");
    let span = calls[2].at - calls[0].at;
    assert!(span >= Duration::from_millis(25), "backed off: {span:?}");
    assert_eq!(loki.stored().len(), 20);

    // Throttled for good: the run gives up before its deadline, with the AWS error,
    // and the checkpoint stays where it was.
    moto.seed(json!({"region": REGION, "log_groups": [{"name": name, "streams": {
        "s2": stream_events(now + chrono::Duration::seconds(30), 4, 1, |i| format!("later {i}")),
    }}]}));
    clock.advance(chrono::Duration::minutes(1));
    let before =
        std::fs::read(dir.path().join("state/jobs/logs-shipper.logs-shipper.json")).unwrap();
    proxy.fail_always("FilterLogEvents", throttling());
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_millis(800);
    let err = logs_shipper::run(
        &ctx,
        "logs-shipper",
        &job,
        &CancellationToken::new(),
        Some(deadline),
    )
    .await
    .unwrap_err()
    .to_string();
    // No backoff sleeps past the deadline (a request in flight may end just after it).
    assert!(
        tokio::time::Instant::now() < deadline + Duration::from_millis(300),
        "gave up within the run's time"
    );
    assert_eq!(
        err,
        format!(
            "cloudwatch {name}: Logs.FilterLogEvents: HTTP 400: ThrottlingException: Rate exceeded"
        )
    );
    assert!(
        proxy.calls("FilterLogEvents").len() > 4,
        "retried while time was left"
    );
    let after =
        std::fs::read(dir.path().join("state/jobs/logs-shipper.logs-shipper.json")).unwrap();
    assert_eq!(before, after, "checkpoint untouched");
    let t = read_textfile(&ctx, "logs_shipper.prom");
    let g = [("log_group", name)];
    assert_eq!(t.value("logs_shipper_scrape_up", &g), Some(0.0));
    assert_eq!(t.value("logs_shipper_lag_seconds", &g), Some(60.0));

    proxy.heal();
    ship(&ctx, &job).await.unwrap();
    assert_eq!(loki.stored().len(), 24);
    assert_eq!(loki.with(|s| s.duplicates), 0);
    assert!(proxy.rejected().is_empty());
}

// -------------------------------------------------------------------- CloudTrail

/// What the shipper must label `security="auth"`, decided here independently.
fn expect_auth(name: &str, source: &str, error: Option<&str>) -> bool {
    source == "signin.amazonaws.com"
        || (source == "sts.amazonaws.com" && name.starts_with("AssumeRole"))
        || error.is_some_and(|e| e.contains("AccessDenied") || e.contains("UnauthorizedOperation"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudtrail_pages_signature_and_auth_labels() {
    let ct = CloudTrailFake::start().await;
    let loki = LokiFake::start().await;
    let now = base_now();
    let t0 = now.timestamp() - 50 * 60;
    let mut expected_auth = 0;
    let mut events = Vec::new();
    for i in 0..120i64 {
        let (name, source, error) = match i {
            i if i % 10 == 0 => ("ConsoleLogin", "signin.amazonaws.com", None),
            i if i % 15 == 1 => ("AssumeRole", "sts.amazonaws.com", None),
            i if i % 7 == 2 => ("GetObject", "s3.amazonaws.com", Some("AccessDenied")),
            i if i % 11 == 3 => (
                "RunInstances",
                "ec2.amazonaws.com",
                Some("Client.UnauthorizedOperation"),
            ),
            _ => ("DescribeInstances", "ec2.amazonaws.com", None),
        };
        if expect_auth(name, source, error) {
            expected_auth += 1;
        }
        events.push(trail_event(
            &format!("evt-{i:04}"),
            name,
            source,
            t0 + i * 20,
            error,
        ));
    }
    ct.add(events);

    let dir = tempfile::tempdir().unwrap();
    let clock = FixedClock::at(now);
    let ctx = context(dir.path(), &aws_env(), clock.clone());
    let mut job = shipper(&loki.url);
    job.max_window = ModelDuration::secs(3600 * 2);
    job.cloud_trail = Some(cloudtrail(&ct.api_base()));
    // One throttled answer on the way.
    ct.faults.lock().unwrap().push_back(throttling());

    ship(&ctx, &job).await.unwrap();
    assert!(
        ct.rejected.lock().unwrap().is_empty(),
        "{:?}",
        ct.rejected.lock().unwrap()
    );
    let reqs = ct.server.requests();
    assert_eq!(reqs.len(), 4, "a throttled call, then 50 + 50 + 20");
    assert!(reqs[1].json().get("NextToken").is_none());
    assert!(reqs[2].json()["NextToken"].is_string() && reqs[3].json()["NextToken"].is_string());
    assert_eq!(reqs[1].json()["MaxResults"], 50);

    let stored = loki.stored();
    assert_eq!(stored.len(), 120);
    let auth = stored
        .iter()
        .filter(|e| e.labels["security"] == "auth")
        .count();
    assert_eq!(auth, expected_auth);
    for e in &stored {
        assert_eq!(e.labels["source"], "cloudtrail");
        assert_eq!(e.labels["source_app"], "cloudtrail");
        assert!(!e.labels.contains_key("log_group"));
        // The line is the CloudTrail record, as the Loki rules (`| json`) read it.
        let rec: serde_json::Value = serde_json::from_str(&e.line).unwrap();
        assert_eq!(rec["userIdentity"]["type"], "IAMUser");
        let t = chrono::DateTime::parse_from_rfc3339(rec["eventTime"].as_str().unwrap()).unwrap();
        assert_eq!(e.ts_ns / 1_000_000_000, i128::from(t.timestamp()));
    }
    let t = read_textfile(&ctx, "logs_shipper.prom");
    let s = [("source", "cloudtrail")];
    assert_eq!(
        t.value("logs_shipper_events_shipped_total", &s),
        Some(120.0)
    );
    assert_eq!(
        t.value("logs_shipper_auth_events_total", &s),
        Some(expected_auth as f64)
    );

    // CloudTrail makes an event visible minutes late: stamped before the checkpoint,
    // within the overlap, it is shipped on the next run; nothing else is re-sent.
    clock.advance(chrono::Duration::minutes(2));
    ct.add([trail_event(
        "evt-late",
        "ConsoleLogin",
        "signin.amazonaws.com",
        now.timestamp() - 300,
        None,
    )]);
    ship(&ctx, &job).await.unwrap();
    assert_eq!(loki.stored().len(), 121);
    assert_eq!(loki.with(|s| (s.duplicates, s.received.len())), (0, 121));
    assert!(loki.with(|s| s.violations.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudtrail_calls_are_paced_across_pages_and_windows() {
    let ct = CloudTrailFake::start().await;
    let loki = LokiFake::start().await;
    let now = base_now();
    // Ten events over 50 minutes: several windows of 15 minutes, pages of 2.
    ct.add((0..10).map(|i| {
        trail_event(
            &format!("p-{i}"),
            "DescribeInstances",
            "ec2.amazonaws.com",
            now.timestamp() - 3000 + i * 300,
            None,
        )
    }));
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), &aws_env(), FixedClock::at(now));
    let mut job = shipper(&loki.url);
    let mut src = cloudtrail(&ct.api_base());
    src.page_size = 2;
    src.page_interval = ModelDuration(Duration::from_millis(150));
    job.cloud_trail = Some(src);
    ship(&ctx, &job).await.unwrap();
    assert_eq!(loki.stored().len(), 10);
    let reqs = ct.server.requests();
    assert!(reqs.len() >= 8, "{}", reqs.len());
    // Calls start 150 ms apart at the client; on a loaded machine single arrivals
    // jitter, so the whole span is what is checked.
    let span = reqs.last().unwrap().at - reqs[0].at;
    let least = Duration::from_millis(150) * (reqs.len() as u32 - 1);
    assert!(
        span + Duration::from_millis(100) >= least,
        "{} calls within {span:?}",
        reqs.len()
    );
}

// ------------------------------------------------------------------ Loki failures

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_down_then_back_loses_nothing() {
    let moto = Moto::start().await;
    let proxy = AwsProxy::start(&moto.url).await;
    let ct = CloudTrailFake::start().await;
    let now = base_now();
    let name = "/aws/lambda/obs-outage";
    moto.seed(json!({"region": REGION, "log_groups": [{"name": name, "streams": {
        "s": stream_events(now - chrono::Duration::minutes(20), 30, 1, |i| format!("event {i}")),
    }}]}));
    ct.add((0..5).map(|i| {
        trail_event(
            &format!("o-{i}"),
            "ConsoleLogin",
            "signin.amazonaws.com",
            now.timestamp() - 600 + i,
            None,
        )
    }));

    // Loki's port answers nothing yet.
    let port = free_port();
    let loki_url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let clock = FixedClock::at(now);
    let ctx = context(dir.path(), &aws_env(), clock.clone());
    let mut job = shipper(&loki_url);
    job.cloud_watch_logs = Some(cloudwatch(&proxy.base, 10_000, vec![group(name, "outage")]));
    job.cloud_trail = Some(cloudtrail(&ct.api_base()));

    let err = ship(&ctx, &job).await.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("cloudwatch {name}: Loki push: connection failed")),
        "{err}"
    );
    assert!(
        err.contains("cloudtrail: not shipped: Loki unavailable"),
        "{err}"
    );
    assert!(
        ct.server.requests().is_empty(),
        "no AWS reads for a Loki that is down"
    );
    let cp = checkpoint(dir.path()).unwrap();
    let st = &cp.sources[&format!("cloudwatch:{name}")];
    // Empty windows before the first event may pass; none holding an event does.
    let first_event = ms(now - chrono::Duration::minutes(20));
    assert!(
        st.watermark_ms <= first_event,
        "checkpoint before the first unshipped event"
    );
    assert!(st.shipped_ids.is_empty());
    let t = read_textfile(&ctx, "logs_shipper.prom");
    assert_eq!(
        t.value("logs_shipper_scrape_up", &[("log_group", name)]),
        Some(0.0)
    );
    assert_eq!(
        t.value("logs_shipper_scrape_up", &[("source", "cloudtrail")]),
        Some(0.0)
    );
    assert_eq!(
        t.value("logs_shipper_events_shipped_total", &[("log_group", name)]),
        Some(0.0)
    );

    // Loki comes back on that port, rate limiting at first (429 twice: retried).
    let loki = LokiFake::start_on(format!("127.0.0.1:{port}").parse().unwrap()).await;
    loki.with(|s| s.fail_next.extend([429, 429]));
    clock.advance(chrono::Duration::minutes(5));
    ship(&ctx, &job).await.unwrap();
    assert_eq!(loki.stored().len(), 35);
    assert_eq!(loki.with(|s| (s.duplicates, s.pushes_failed)), (0, 2));

    // A 5xx outage that outlasts the retries: the checkpoint holds; then all arrives.
    moto.seed(
        json!({"region": REGION, "log_groups": [{"name": name, "streams": {
            "s2": stream_events(now + chrono::Duration::minutes(1), 6, 1, |i| format!("more {i}")),
        }}]}),
    );
    clock.advance(chrono::Duration::minutes(5));
    let before = checkpoint(dir.path()).unwrap();
    loki.with(|s| s.fail_next.extend([503; 6]));
    let err = ship(&ctx, &job).await.unwrap_err().to_string();
    assert!(err.contains("Loki push: HTTP 503"), "{err}");
    assert_eq!(checkpoint(dir.path()).unwrap(), before);
    loki.with(|s| s.fail_next.clear());
    ship(&ctx, &job).await.unwrap();
    assert_eq!(loki.stored().len(), 41);
    assert_eq!(loki.with(|s| s.duplicates), 0, "nothing shipped twice");
    assert!(loki.with(|s| s.violations.is_empty()));
    assert!(proxy.rejected().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_refusals_are_counted_and_not_retried() {
    let moto = Moto::start().await;
    let proxy = AwsProxy::start(&moto.url).await;
    let loki = LokiFake::start().await;
    let now = base_now();
    let name = "/aws/lambda/obs-refused";
    let t0 = now - chrono::Duration::minutes(40);
    moto.seed(
        json!({"region": REGION, "log_groups": [{"name": name, "streams": {
            "s": stream_events(t0, 10, 60, |i| format!("event {i}")),
        }}]}),
    );
    // Loki refuses the first four as too old.
    loki.with(|s| s.reject_before_ns = i128::from(ms(t0) + 3 * 60_000 + 1) * 1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), &aws_env(), FixedClock::at(now));
    let mut job = shipper(&loki.url);
    job.max_window = ModelDuration::secs(3 * 3600);
    job.cloud_watch_logs = Some(cloudwatch(
        &proxy.base,
        10_000,
        vec![group(name, "refused")],
    ));
    ship(&ctx, &job).await.unwrap();
    assert_eq!(loki.stored().len(), 6);
    let t = read_textfile(&ctx, "logs_shipper.prom");
    let g = [("log_group", name)];
    assert_eq!(t.value("logs_shipper_events_rejected_total", &g), Some(4.0));
    assert_eq!(t.value("logs_shipper_events_shipped_total", &g), Some(6.0));
    // The checkpoint moved on: the refused entries are not pushed again.
    let pushes = loki.with(|s| s.pushes_ok);
    ship(&ctx, &job).await.unwrap();
    assert_eq!(loki.with(|s| s.pushes_ok), pushes);
}

// ------------------------------------------------------------ kill -9 mid-window

const CHILD_ENV: &str = "OBSD_JOBS_AWS_CHILD";

#[derive(serde::Serialize, serde::Deserialize)]
struct ChildConfig {
    dir: std::path::PathBuf,
    now: DateTime<Utc>,
    spec: obsd::desired::model::JobSpec,
}

/// The shipper as its own process, run by `kill_9_between_push_and_checkpoint` (which
/// kills it); does nothing in a normal test run.
#[test]
#[ignore = "run as a child process by kill_9_between_push_and_checkpoint"]
fn child_ships_once() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let cfg: ChildConfig = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ctx = context(&cfg.dir, &aws_env(), FixedClock::at(cfg.now));
        let exec = BodyExecutor::new(ctx);
        let r = exec
            .run(JobRun {
                name: "logs-shipper".into(),
                spec: Arc::new(cfg.spec),
                cancel: CancellationToken::new(),
            })
            .await;
        eprintln!("child finished: {r:?}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_push_and_checkpoint() {
    use std::os::unix::process::ExitStatusExt;
    let moto = Moto::start().await;
    let proxy = AwsProxy::start(&moto.url).await;
    let loki = LokiFake::start().await;
    let now = base_now();
    let name = "/aws/lambda/obs-killed";
    let pad = "x".repeat(120);
    moto.seed(json!({"region": REGION, "log_groups": [{"name": name, "streams": {
        "s": stream_events(now - chrono::Duration::minutes(30), 60, 10, |i| format!("event {i:02} {pad}")),
    }}]}));
    let dir = tempfile::tempdir().unwrap();
    let mut job = shipper(&loki.url);
    job.max_window = ModelDuration::secs(3 * 3600);
    job.batch_bytes = 2048;
    job.max_line_bytes = 1024;
    job.cloud_watch_logs = Some(cloudwatch(&proxy.base, 10_000, vec![group(name, "killed")]));
    let mut spec = job_spec("@every 1m", 60);
    spec.logs_shipper = Some(job.clone());
    let cfg_path = dir.path().join("child.json");
    std::fs::write(
        &cfg_path,
        serde_json::to_vec(&ChildConfig {
            dir: dir.path().to_path_buf(),
            now,
            spec,
        })
        .unwrap(),
    )
    .unwrap();

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_ships_once",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &cfg_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed the moment Loki has stored its second push.
    loki.with(|s| s.kill_after = Some((child.id(), 2)));
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let first_push: usize = loki.with(|s| s.received.len());
    let cp = checkpoint(dir.path()).unwrap();
    let st = &cp.sources[&format!("cloudwatch:{name}")];
    assert_eq!(st.watermark_ms, ms(now) - 3_600_000, "window not finished");
    let checkpointed = st.shipped_ids.len();
    assert!(
        checkpointed > 0 && checkpointed < first_push,
        "push 1 checkpointed, push 2 not: {checkpointed} of {first_push}"
    );
    let in_flight = first_push - checkpointed;

    // obsd restarts (here: the same body in this process) and finishes the window.
    let ctx = context(dir.path(), &aws_env(), FixedClock::at(now));
    ship(&ctx, &job).await.unwrap();
    let stored = loki.stored();
    assert_eq!(stored.len(), 60, "nothing lost");
    let (duplicates, received) = loki.with(|s| (s.duplicates, s.received.len()));
    assert_eq!(
        duplicates, in_flight,
        "exactly the request in flight was sent again"
    );
    assert_eq!(received, 60 + in_flight);
    // Sent again byte-identical: Loki dropped every copy as a duplicate of what it held.
    let unique: BTreeSet<(i128, String)> = loki.with(|s| {
        s.received
            .iter()
            .map(|e| (e.ts_ns, e.line.clone()))
            .collect()
    });
    assert_eq!(unique.len(), 60);
    let t = read_textfile(&ctx, "logs_shipper.prom");
    assert_eq!(
        t.value("logs_shipper_events_shipped_total", &[("log_group", name)]),
        Some(60.0)
    );
    assert!(proxy.rejected().is_empty());
}

// --------------------------------------------------------------- aws-cron-monitor

fn cron_job(api_base: &str, functions: &[(&str, &str)]) -> AwsCronMonitorJob {
    AwsCronMonitorJob {
        region: REGION.into(),
        api_base: Some(api_base.into()),
        access_key_id_env: "AWS_RO_ACCESS_KEY_ID".into(),
        secret_access_key_env: "AWS_RO_SECRET_ACCESS_KEY".into(),
        settle: ModelDuration::secs(60),
        textfile: "aws_cron_monitor.prom".into(),
        functions: functions
            .iter()
            .map(|(f, env)| CronFunction {
                function_name: f.to_string(),
                schedule: "@every 1h".into(),
                ping_url_env: env.to_string(),
            })
            .collect(),
    }
}

fn metric(function: &str, name: &str, t: DateTime<Utc>, v: f64) -> serde_json::Value {
    json!({"function": function, "metric": name, "ts": t.timestamp(), "value": v})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_monitor_pings_once_per_expected_run() {
    let moto = Moto::start().await;
    let proxy = AwsProxy::start(&moto.url).await;
    let hc = serve(|_| Reply::text(200, "OK")).await;
    // The expected run judged is the latest full hour at least `settle` (1m) ago: with
    // the clock at ten past, that hour.
    let hour = (base_now().timestamp() - 2 * 3600) / 3600 * 3600;
    let slot = Utc.timestamp_opt(hour, 0).unwrap();
    let now = slot + chrono::Duration::minutes(10);
    let ran_at = slot + chrono::Duration::minutes(1);
    moto.seed(json!({"region": REGION, "metrics": [
        metric("obs-ok", "Invocations", ran_at, 1.0),
        metric("obs-ok", "Errors", ran_at, 0.0),
        metric("obs-erred", "Invocations", ran_at, 1.0),
        metric("obs-erred", "Errors", ran_at, 1.0),
        // obs-idle did not run; an invocation before the window does not count.
        metric("obs-idle", "Invocations", slot - chrono::Duration::minutes(5), 1.0),
    ]}));
    let dir = tempfile::tempdir().unwrap();
    let clock = FixedClock::at(now);
    let ok_url = format!("{}/ping/ok-uuid", hc.base);
    let err_url = format!("{}/ping/erred-uuid", hc.base);
    let idle_url = format!("{}/ping/idle-uuid", hc.base);
    let mut env = aws_env();
    env.extend([
        ("HC_OK", ok_url.as_str()),
        ("HC_ERRED", err_url.as_str()),
        ("HC_IDLE", idle_url.as_str()),
    ]);
    let ctx = context(dir.path(), &env, clock.clone());
    let job = cron_job(
        &proxy.base,
        &[
            ("obs-ok", "HC_OK"),
            ("obs-erred", "HC_ERRED"),
            ("obs-idle", "HC_IDLE"),
        ],
    );

    // Through the production executor (dispatch and deadline included).
    let mut spec = job_spec("@every 5m", 60);
    spec.aws_cron_monitor = Some(job.clone());
    let exec = BodyExecutor::new(ctx.clone());
    exec.run(JobRun {
        name: "aws-cron-monitor".into(),
        spec: Arc::new(spec),
        cancel: CancellationToken::new(),
    })
    .await
    .unwrap();
    let paths = |hc: &FakeServer| {
        hc.requests()
            .iter()
            .map(|r| r.path.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(paths(&hc), ["/ping/ok-uuid", "/ping/erred-uuid/fail"]);
    assert!(proxy.rejected().is_empty(), "{:?}", proxy.rejected());
    let q = proxy.calls("GetMetricData")[0].json();
    assert_eq!(q["StartTime"], hour);
    let stat = &q["MetricDataQueries"][0]["MetricStat"];
    assert_eq!(stat["Metric"]["Namespace"], "AWS/Lambda");
    assert_eq!(stat["Stat"], "Sum");
    assert_eq!(stat["Period"].as_i64().unwrap() % 60, 0);

    let t = read_textfile(&ctx, "aws_cron_monitor.prom");
    let f = |n: &'static str| [("function", n)];
    assert_eq!(t.value("aws_cron_invocations", &f("obs-ok")), Some(1.0));
    assert_eq!(t.value("aws_cron_errors", &f("obs-erred")), Some(1.0));
    assert_eq!(t.value("aws_cron_ran", &f("obs-idle")), Some(0.0));
    assert_eq!(t.value("aws_cron_ran", &f("obs-ok")), Some(1.0));
    assert_eq!(
        t.value("aws_cron_expected_run_timestamp_seconds", &f("obs-ok")),
        Some(hour as f64)
    );
    assert_eq!(
        t.value(
            "aws_cron_pings_total",
            &[("function", "obs-ok"), ("result", "success")]
        ),
        Some(1.0)
    );
    assert_eq!(
        t.value(
            "aws_cron_pings_total",
            &[("function", "obs-erred"), ("result", "fail")]
        ),
        Some(1.0)
    );
    assert_eq!(
        t.value(
            "aws_cron_pings_total",
            &[("function", "obs-idle"), ("result", "success")]
        ),
        Some(0.0)
    );
    for n in ["obs-ok", "obs-erred", "obs-idle"] {
        assert_eq!(t.value("aws_cron_scrape_up", &f(n)), Some(1.0), "{n}");
    }

    // Five minutes later: the same expected run is not reported twice …
    clock.advance(chrono::Duration::minutes(5));
    aws_cron_monitor::run(
        &ctx,
        "aws-cron-monitor",
        &job,
        &CancellationToken::new(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(hc.requests().len(), 2);
    // … and a run that shows up late is reported once it appears.
    moto.seed(json!({"region": REGION, "metrics": [
        metric("obs-idle", "Invocations", slot + chrono::Duration::minutes(12), 1.0),
        metric("obs-idle", "Errors", slot + chrono::Duration::minutes(12), 0.0),
    ]}));
    aws_cron_monitor::run(
        &ctx,
        "aws-cron-monitor",
        &job,
        &CancellationToken::new(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(paths(&hc)[2..], ["/ping/idle-uuid"]);

    // A restart keeps what was reported.
    let ctx2 = context(dir.path(), &env, clock.clone());
    aws_cron_monitor::run(
        &ctx2,
        "aws-cron-monitor",
        &job,
        &CancellationToken::new(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(hc.requests().len(), 3);

    // The next hour: nothing ran in the new window, so nothing is sent.
    clock.advance(chrono::Duration::hours(1));
    assert_eq!(clock.now(), slot + chrono::Duration::minutes(75));
    aws_cron_monitor::run(
        &ctx2,
        "aws-cron-monitor",
        &job,
        &CancellationToken::new(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(hc.requests().len(), 3);
    let t = read_textfile(&ctx2, "aws_cron_monitor.prom");
    assert_eq!(t.value("aws_cron_ran", &f("obs-ok")), Some(0.0));
    assert_eq!(
        t.value("aws_cron_expected_run_timestamp_seconds", &f("obs-ok")),
        Some((hour + 3600) as f64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_monitor_never_prints_a_ping_url() {
    let moto = Moto::start().await;
    let proxy = AwsProxy::start(&moto.url).await;
    let slot = Utc
        .timestamp_opt((base_now().timestamp() - 2 * 3600) / 3600 * 3600, 0)
        .unwrap();
    let now = slot + chrono::Duration::minutes(10);
    moto.seed(json!({"region": REGION, "metrics": [
        metric("obs-erred", "Invocations", slot + chrono::Duration::minutes(1), 1.0),
        metric("obs-erred", "Errors", slot + chrono::Duration::minutes(1), 1.0),
    ]}));
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: the ping fails.
    let url = format!("http://127.0.0.1:{}/ping/secret-check-token", free_port());
    let mut env = aws_env();
    env.push(("HC_ERRED", url.as_str()));
    let ctx = context(dir.path(), &env, FixedClock::at(now));
    let job = cron_job(&proxy.base, &[("obs-erred", "HC_ERRED")]);
    let err = aws_cron_monitor::run(
        &ctx,
        "aws-cron-monitor",
        &job,
        &CancellationToken::new(),
        None,
    )
    .await
    .unwrap_err();
    let chain = format!("{err} {err:?}");
    assert!(!chain.contains("secret-check-token"), "{chain}");
    assert!(
        err.to_string()
            .starts_with("obs-erred: healthchecks ping (fail): connection failed"),
        "{err}"
    );
    let t = read_textfile(&ctx, "aws_cron_monitor.prom");
    assert_eq!(
        t.value("aws_cron_scrape_up", &[("function", "obs-erred")]),
        Some(0.0)
    );
    // Not reported: the next run tries again.
    let state =
        std::fs::read_to_string(dir.path().join("state/jobs/aws-cron-monitor.aws-cron.json"))
            .unwrap();
    assert!(state.contains("\"reported_run\": null"), "{state}");
}

// ---------------------------------------------------------------- service address

/// obsd runs on the host, where `loki` does not resolve: the daemon rewrites the
/// shipper's Loki URL to the container's address, as it does for the status page.
#[test]
fn loki_url_naming_a_service_is_resolved_to_its_container() {
    let mut spec = job_spec("@every 1m", 60);
    spec.logs_shipper = Some(shipper("http://loki:3100"));
    let jobs = [("logs-shipper".to_string(), spec)].into();
    let ips = [("loki".to_string(), "172.18.0.5".to_string())].into();
    let out = obsd::reconcile::resolve_job_urls(&jobs, &ips);
    assert_eq!(
        out["logs-shipper"].logs_shipper.as_ref().unwrap().loki_url,
        "http://172.18.0.5:3100"
    );
    // A URL naming no Service is left as written.
    let mut spec = job_spec("@every 1m", 60);
    spec.logs_shipper = Some(shipper("http://127.0.0.1:3100"));
    let jobs = [("logs-shipper".to_string(), spec)].into();
    let out = obsd::reconcile::resolve_job_urls(&jobs, &ips);
    assert_eq!(
        out["logs-shipper"].logs_shipper.as_ref().unwrap().loki_url,
        "http://127.0.0.1:3100"
    );
}
