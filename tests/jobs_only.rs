//! `obsd --jobs-only`: the job runner without a Docker engine, as obsd runs on
//! Kubernetes. A real obsd process against a fake Stripe on 127.0.0.1: the credential
//! comes from the process environment (the Secret's `envFrom`), the job's series are
//! served on obsd's own `/metrics` (not left in a node-exporter textfile), jobs that
//! need Docker are not scheduled, and no Docker socket is ever needed.

mod jobs_support;

use jobs_support::{serve, Reply};
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const OBSD: &str = env!("CARGO_BIN_EXE_obsd");
const STRIPE_KEY: &str = "rk_live_jobsonly_canary";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_state(dir: &Path, stripe_base: &str) {
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::write(dir.join("config/app.conf"), "x = 1\n").unwrap();
    let docs = format!(
        r#"apiVersion: obs.tlsstress.art/v1alpha1
kind: Stack
metadata: {{name: t}}
spec:
  project: obsdt-{pid}-jobsonly
  envFile: .env
  defaultNetwork: default
  textfileDir: /nonexistent/obsd-jobs-only/textfile
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Network
metadata: {{name: default}}
spec: {{}}
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Service
metadata: {{name: app}}
spec:
  image: example/app:1
  configFiles: [{{source: config/app.conf, target: /etc/app.conf}}]
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Job
metadata: {{name: cloud-poller}}
spec:
  schedule: "@every 2s"
  timeout: 10s
  cloudPoller:
    stripe: {{apiBase: "{stripe_base}", keyEnv: STRIPE_API_KEY}}
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Job
metadata: {{name: docker-names}}
spec:
  schedule: "@every 2s"
  dockerNames: {{}}
"#,
        pid = std::process::id()
    );
    std::fs::write(dir.join("stack.yaml"), docs).unwrap();
}

struct Obsd(Child);

impl Drop for Obsd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(dir: &Path, state: &Path, port: u16, log: &Path) -> Obsd {
    let logf = std::fs::File::create(log).unwrap();
    Obsd(
        Command::new(OBSD)
            .args(["--jobs-only", "--desired-state"])
            .arg(dir)
            .arg("--state-dir")
            .arg(state)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("STRIPE_API_KEY", STRIPE_KEY)
            // No engine anywhere: jobs-only mode must not need one.
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .env_remove("OBSD_STATE_DIR")
            .env("OBSD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .unwrap(),
    )
}

/// The value of the sample whose name and labels are exactly `series`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == series).then(|| v.parse().ok()).flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_without_docker_and_serve_their_series_on_metrics() {
    let stripe = serve(|r| {
        if r.header("authorization") != Some(&format!("Bearer {STRIPE_KEY}")) {
            return Reply::status(
                401,
                json!({"error": {"type": "invalid_request_error", "message": "bad key"}}),
            );
        }
        match r.path.as_str() {
            "/v1/balance" => Reply::json(json!({"object": "balance",
                "available": [{"amount": 4200, "currency": "brl"}], "pending": []})),
            _ => Reply::json(json!({"object": "list", "has_more": false, "data": []})),
        }
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("desired-state");
    let state = tmp.path().join("state");
    write_state(&dir, &stripe.base);
    let port = free_port();
    let log = tmp.path().join("obsd.log");
    let mut obsd = spawn(&dir, &state, port, &log);
    let url = format!("http://127.0.0.1:{port}/metrics");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        if let Some(st) = obsd.0.try_wait().unwrap() {
            panic!(
                "obsd exited ({st}):\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        if let Ok(r) = client.get(&url).send().await {
            let ct = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = r.text().await.unwrap_or_default();
            if sample(
                &body,
                r#"obsd_job_runs_total{job="cloud-poller",result="success"}"#,
            )
            .is_some_and(|v| v >= 1.0)
            {
                assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
                break body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no successful cloud-poller run within 30 s:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // The job's own series, read back from its textfile, on obsd's /metrics.
    assert_eq!(sample(&metrics, "stripe_scrape_up"), Some(1.0), "{metrics}");
    assert!(!metrics.contains("{}"), "no empty label sets:\n{metrics}");
    assert_eq!(
        sample(
            &metrics,
            r#"stripe_balance_available_cents{currency="brl"}"#
        ),
        Some(4200.0),
        "{metrics}"
    );
    assert!(sample(&metrics, "cloud_poller_last_run_timestamp_seconds").is_some_and(|t| t > 1.0e9));
    assert!(
        metrics.contains("# TYPE stripe_scrape_up gauge"),
        "{metrics}"
    );
    assert!(
        metrics.trim_end().ends_with("# EOF"),
        "one OpenMetrics document"
    );
    assert_eq!(
        sample(&metrics, r#"obsd_build_info{version="0.1.0"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&metrics, "obsd_desired_state_valid"), Some(1.0));
    // The Docker-bound job is not scheduled at all: no series for it.
    assert!(!metrics.contains(r#"job="docker-names""#), "{metrics}");
    // The credential came from the environment and reached the API; it is in no output.
    assert!(stripe
        .requests()
        .iter()
        .all(|r| r.header("authorization") == Some(&format!("Bearer {STRIPE_KEY}"))));
    assert!(!metrics.contains(STRIPE_KEY));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains(STRIPE_KEY));
    assert!(
        logged.contains("docker-names"),
        "the skipped job is logged:\n{logged}"
    );
    // Textfiles are private to obsd (not the Stack's host textfileDir); no API socket.
    assert!(state.join("textfiles/cloud.prom").is_file());
    assert!(!Path::new("/nonexistent/obsd-jobs-only").exists());
    assert!(!state.join("obsd.sock").exists());

    // SIGTERM: a clean exit.
    // SAFETY: signalling the child we spawned and have not reaped.
    unsafe {
        libc::kill(obsd.0.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = obsd.0.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "no exit within 15 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
}

#[test]
fn invalid_desired_state_exits_1_naming_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("stack.yaml"),
        "apiVersion: obs.tlsstress.art/v1alpha1\nkind: Stack\nmetadata: {name: t}\nspec: {project: p, bogus: 1}\n",
    )
    .unwrap();
    let out = Command::new(OBSD)
        .args(["--jobs-only", "--desired-state"])
        .arg(tmp.path())
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stack.yaml:4") && err.contains("bogus"),
        "{err}"
    );
}
