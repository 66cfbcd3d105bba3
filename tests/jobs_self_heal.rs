//! self-heal against fake readiness endpoints and a fake App Runner (AWS JSON 1.0) that
//! re-derives every request's SigV4 signature with an independent implementation.

mod jobs_support;

use jobs_support::sigv4::check_signature;
use jobs_support::*;
use obsd::desired::model::job::{SelfHealApp, SelfHealJob};
use obsd::desired::model::Duration as ModelDuration;
use obsd::jobs::{self_heal, JobContext};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const AKID: &str = "AKIDSELFHEALTEST";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYSECRETCANARY";
const REGION: &str = "eu-west-1";

/// Headers an App Runner call must sign.
const APPRUNNER_SIGNED: [&str; 4] = ["content-type", "host", "x-amz-date", "x-amz-target"];

fn verify_sigv4(
    r: &Recorded,
    akid: &str,
    secret: &str,
    region: &str,
    service: &str,
) -> Result<(), String> {
    check_signature(r, akid, secret, region, service, &APPRUNNER_SIGNED)
}

#[test]
fn independent_verifier_accepts_the_aws_test_vector() {
    // get-vanilla from the AWS SigV4 test suite: the verifier's math is right …
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("host", "example.amazonaws.com".parse().unwrap());
    headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
    headers.insert(
        "authorization",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            .parse()
            .unwrap(),
    );
    let r = Recorded {
        method: "GET".into(),
        path: "/".into(),
        query: vec![],
        headers,
        body: vec![],
        at: std::time::Instant::now(),
    };
    let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    let vanilla = ["host", "x-amz-date"];
    assert_eq!(
        check_signature(&r, "AKIDEXAMPLE", secret, "us-east-1", "service", &vanilla),
        Ok(())
    );
    // … and it rejects a wrong secret, a wrong scope, and missing App Runner headers.
    assert!(
        check_signature(&r, "AKIDEXAMPLE", "wrong", "us-east-1", "service", &vanilla)
            .unwrap_err()
            .starts_with("signature mismatch")
    );
    assert!(check_signature(&r, "AKIDEXAMPLE", secret, "eu-west-1", "service", &vanilla).is_err());
    assert_eq!(
        verify_sigv4(&r, "AKIDEXAMPLE", secret, "us-east-1", "service"),
        Err("content-type is not signed".to_string())
    );
}

// ----------------------------------------------------------------------- fakes

struct AppRunnerFake {
    server: FakeServer,
    /// Status of the operation ListOperations reports.
    op_status: Arc<Mutex<&'static str>>,
    /// Replies StartDeployment gives first (then success).
    start_failures: Arc<Mutex<Vec<Reply>>>,
    list_failures: Arc<Mutex<Vec<Reply>>>,
    deployments: Arc<AtomicUsize>,
}

async fn app_runner() -> AppRunnerFake {
    let op_status = Arc::new(Mutex::new("SUCCEEDED"));
    let start_failures: Arc<Mutex<Vec<Reply>>> = Arc::default();
    let list_failures: Arc<Mutex<Vec<Reply>>> = Arc::default();
    let deployments = Arc::new(AtomicUsize::new(0));
    let (s, sf, lf, d) = (
        op_status.clone(),
        start_failures.clone(),
        list_failures.clone(),
        deployments.clone(),
    );
    let server = serve(move |r| {
        let problem = if r.method != "POST" || r.path != "/" {
            Some(format!("{} {}", r.method, r.path))
        } else if r.header("content-type") != Some("application/x-amz-json-1.0") {
            Some(format!("content-type {:?}", r.header("content-type")))
        } else {
            verify_sigv4(r, AKID, SECRET, REGION, "apprunner").err()
        };
        if let Some(p) = problem {
            return Reply::status(403, json!({"__type": "com.amazon.coral.service#InvalidSignatureException", "message": p}));
        }
        let body = r.json();
        match r.header("x-amz-target") {
            Some("AppRunner.ListOperations") => {
                if let Some(reply) = lf.lock().unwrap().pop() {
                    return reply;
                }
                Reply::json(json!({"OperationSummaryList": [
                    {"Id": "op-2", "Type": "START_DEPLOYMENT", "Status": *s.lock().unwrap(), "TargetArn": body["ServiceArn"]},
                    {"Id": "op-1", "Type": "CREATE_SERVICE", "Status": "SUCCEEDED"}
                ]}))
            }
            Some("AppRunner.StartDeployment") => {
                if let Some(reply) = sf.lock().unwrap().pop() {
                    return reply;
                }
                let n = d.fetch_add(1, Ordering::SeqCst) + 1;
                Reply::json(json!({"OperationId": format!("deploy-{n}")}))
            }
            other => Reply::status(400, json!({"__type": "UnknownOperationException", "message": format!("{other:?}")})),
        }
    })
    .await;
    AppRunnerFake {
        server,
        op_status,
        start_failures,
        list_failures,
        deployments,
    }
}

async fn readiness() -> FakeServer {
    serve(|r| match r.path.as_str() {
        "/a/api/ready" => Reply::status(503, json!({"db": "down"})),
        "/b/api/ready" => Reply::json(json!({"db": "ok"})),
        "/c/api/ready" => Reply::text(404, "not found"),
        "/d/api/ready" => Reply::text(403, "challenge"),
        "/e/api/ready" => Reply::json(json!({})).delayed(Duration::from_secs(3)),
        _ => Reply::text(500, "?"),
    })
    .await
}

fn refused_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/api/ready")
}

fn arn(app: &str) -> String {
    format!("arn:aws:apprunner:{REGION}:123456789012:service/{app}/0123456789abcdef")
}

fn job(ar: &AppRunnerFake, ready: &FakeServer, apps: &[&str]) -> SelfHealJob {
    SelfHealJob {
        region: REGION.into(),
        api_base: Some(format!("{}/", ar.server.base)),
        access_key_id_env: "SELFHEAL_AWS_ACCESS_KEY_ID".into(),
        secret_access_key_env: "SELFHEAL_AWS_SECRET_ACCESS_KEY".into(),
        cooldown: ModelDuration::secs(1800),
        probe_timeout: ModelDuration(Duration::from_millis(300)),
        textfile: "self_heal.prom".into(),
        apps: apps
            .iter()
            .map(|a| SelfHealApp {
                name: a.to_string(),
                ready_url: if *a == "f" {
                    refused_url()
                } else {
                    format!("{}/{a}/api/ready", ready.base)
                },
                service_arn: arn(a),
            })
            .collect(),
    }
}

fn aws_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("SELFHEAL_AWS_ACCESS_KEY_ID", AKID),
        ("SELFHEAL_AWS_SECRET_ACCESS_KEY", SECRET),
    ]
}

async fn run(ctx: &JobContext, job: &SelfHealJob) -> Result<(), obsd::jobs::JobError> {
    self_heal::run(ctx, "selfheal", job, &CancellationToken::new()).await
}

fn targets(ar: &AppRunnerFake) -> Vec<String> {
    ar.server
        .requests()
        .iter()
        .map(|r| r.header("x-amz-target").unwrap_or("").to_string())
        .collect()
}

// ----------------------------------------------------------------------- tests

#[tokio::test]
async fn only_503_heals_with_cooldown_and_in_progress_guard() {
    let ar = app_runner().await;
    let ready = readiness().await;
    let dir = tempfile::tempdir().unwrap();
    let clock = FixedClock::at(noon());
    let ctx = context(dir.path(), &aws_env(), clock.clone());
    let job = job(&ar, &ready, &["a", "b", "c", "d", "e", "f"]);

    run(&ctx, &job).await.unwrap();
    assert_eq!(
        targets(&ar),
        ["AppRunner.ListOperations", "AppRunner.StartDeployment"]
    );
    let reqs = ar.server.requests();
    for r in &reqs {
        verify_sigv4(r, AKID, SECRET, REGION, "apprunner").unwrap();
        assert!(r.header("authorization").unwrap().starts_with("AWS4-HMAC-SHA256 Credential=AKIDSELFHEALTEST/20260315/eu-west-1/apprunner/aws4_request"));
        assert_eq!(r.header("x-amz-date"), Some("20260315T120000Z"));
    }
    assert_eq!(
        reqs[0].json(),
        json!({"ServiceArn": arn("a"), "MaxResults": 10})
    );
    assert_eq!(reqs[1].json(), json!({"ServiceArn": arn("a")}));

    let t = read_textfile(&ctx, "self_heal.prom");
    for (app, code) in [
        ("a", 503.0),
        ("b", 200.0),
        ("c", 404.0),
        ("d", 403.0),
        ("e", 0.0),
        ("f", 0.0),
    ] {
        assert_eq!(
            t.value("self_heal_probe_status_code", &[("app", app)]),
            Some(code),
            "{app}"
        );
        let up = if app == "b" { 1.0 } else { 0.0 };
        assert_eq!(
            t.value("self_heal_probe_up", &[("app", app)]),
            Some(up),
            "{app}"
        );
        let heals = if app == "a" { 1.0 } else { 0.0 };
        assert_eq!(
            t.value("self_heal_heals_triggered_total", &[("app", app)]),
            Some(heals),
            "{app}"
        );
    }
    assert_eq!(
        t.value("self_heal_last_heal_timestamp_seconds", &[("app", "a")]),
        Some(noon().timestamp() as f64)
    );
    assert_eq!(
        t.types
            .get("self_heal_heals_triggered_total")
            .map(String::as_str),
        Some("counter")
    );
    assert_eq!(
        t.value("self_heal_last_run_timestamp_seconds", &[]),
        Some(noon().timestamp() as f64)
    );

    // Five minutes later: still 503, but in cooldown — no AWS call.
    clock.advance(chrono::Duration::minutes(5));
    run(&ctx, &job).await.unwrap();
    assert_eq!(ar.server.requests().len(), 2);
    let t = read_textfile(&ctx, "self_heal.prom");
    assert_eq!(
        t.value(
            "self_heal_skips_total",
            &[("app", "a"), ("reason", "cooldown")]
        ),
        Some(1.0)
    );

    // A restart (fresh context, same state dir) keeps the cooldown and the counters.
    let ctx2 = context(dir.path(), &aws_env(), clock.clone());
    run(&ctx2, &job).await.unwrap();
    assert_eq!(ar.server.requests().len(), 2);
    let t = read_textfile(&ctx2, "self_heal.prom");
    assert_eq!(
        t.value(
            "self_heal_skips_total",
            &[("app", "a"), ("reason", "cooldown")]
        ),
        Some(2.0)
    );
    assert_eq!(
        t.value("self_heal_heals_triggered_total", &[("app", "a")]),
        Some(1.0)
    );

    // After the cooldown, a deployment already in progress blocks a new one.
    clock.advance(chrono::Duration::minutes(30));
    *ar.op_status.lock().unwrap() = "IN_PROGRESS";
    run(&ctx2, &job).await.unwrap();
    assert_eq!(targets(&ar)[2..], ["AppRunner.ListOperations"]);
    let t = read_textfile(&ctx2, "self_heal.prom");
    assert_eq!(
        t.value(
            "self_heal_skips_total",
            &[("app", "a"), ("reason", "operation_in_progress")]
        ),
        Some(1.0)
    );
    *ar.op_status.lock().unwrap() = "PENDING";
    run(&ctx2, &job).await.unwrap();
    assert_eq!(ar.deployments.load(Ordering::SeqCst), 1);

    // Once it finished, the next 503 heals again.
    *ar.op_status.lock().unwrap() = "FAILED";
    run(&ctx2, &job).await.unwrap();
    assert_eq!(ar.deployments.load(Ordering::SeqCst), 2);
    let t = read_textfile(&ctx2, "self_heal.prom");
    assert_eq!(
        t.value("self_heal_heals_triggered_total", &[("app", "a")]),
        Some(2.0)
    );
    for r in ar.server.requests() {
        verify_sigv4(&r, AKID, SECRET, REGION, "apprunner").unwrap();
    }
}

#[tokio::test]
async fn aws_errors_fail_the_run_without_starting_a_cooldown() {
    let ar = app_runner().await;
    let ready = readiness().await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), &aws_env(), FixedClock::at(noon()));
    let job = job(&ar, &ready, &["a"]);

    // StartDeployment is refused: the run fails with the AWS error code.
    ar.start_failures.lock().unwrap().push(Reply::status(
        400,
        json!({"__type": "com.amazonaws.apprunner#InvalidStateException", "message": "Service is not in a deployable state"}),
    ));
    let err = run(&ctx, &job).await.unwrap_err().to_string();
    assert_eq!(err, "a: AppRunner.StartDeployment: HTTP 400: InvalidStateException: Service is not in a deployable state");
    let t = read_textfile(&ctx, "self_heal.prom");
    assert_eq!(
        t.value("self_heal_heal_errors_total", &[("app", "a")]),
        Some(1.0)
    );
    assert_eq!(
        t.value("self_heal_last_heal_timestamp_seconds", &[("app", "a")]),
        Some(0.0)
    );

    // A 5xx on StartDeployment is not retried (a second deployment is never wanted).
    ar.start_failures.lock().unwrap().push(Reply::status(
        500,
        json!({"__type": "InternalServiceErrorException"}),
    ));
    let before = ar.server.requests().len();
    assert!(run(&ctx, &job).await.is_err());
    assert_eq!(
        targets(&ar)[before..],
        ["AppRunner.ListOperations", "AppRunner.StartDeployment"]
    );

    // ListOperations throttled, then fine: retried; the error type from the header.
    ar.list_failures
        .lock()
        .unwrap()
        .push(Reply::text(429, "").header(
            "x-amzn-errortype",
            "ThrottlingException:http://internal.amazon.com/",
        ));
    let before = ar.server.requests().len();
    run(&ctx, &job).await.unwrap();
    assert_eq!(
        targets(&ar)[before..],
        [
            "AppRunner.ListOperations",
            "AppRunner.ListOperations",
            "AppRunner.StartDeployment"
        ]
    );
    ar.list_failures
        .lock()
        .unwrap()
        .push(Reply::text(403, "").header(
            "x-amzn-errortype",
            "AccessDeniedException:http://internal.amazon.com/",
        ));
    let dir2 = tempfile::tempdir().unwrap();
    let ctx2 = context(dir2.path(), &aws_env(), FixedClock::at(noon()));
    let err = run(&ctx2, &job).await.unwrap_err().to_string();
    assert_eq!(
        err,
        "a: AppRunner.ListOperations: HTTP 403: AccessDeniedException"
    );
}

#[tokio::test]
async fn missing_credentials_are_an_error_only_when_a_heal_is_needed() {
    let ar = app_runner().await;
    let ready = readiness().await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), &[], FixedClock::at(noon()));
    run(&ctx, &job(&ar, &ready, &["b", "c"])).await.unwrap();
    let err = run(&ctx, &job(&ar, &ready, &["a", "b"]))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "a: `SELFHEAL_AWS_ACCESS_KEY_ID` is not set in the env file"
    );
    assert!(ar.server.requests().is_empty());
    let t = read_textfile(&ctx, "self_heal.prom");
    assert_eq!(
        t.value("self_heal_heal_errors_total", &[("app", "a")]),
        Some(1.0)
    );
    let text =
        std::fs::read_to_string(dir.path().join("state/jobs/selfheal.self-heal.json")).unwrap();
    assert!(!text.contains(SECRET));
}
