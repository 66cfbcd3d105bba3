//! End to end: the job runner runs cloud-poller (against fake Cloudflare and Stripe),
//! docker-names (fake container list) and self-heal (a healthy fake app) on their
//! schedules; Debian's real `prometheus-node-exporter` reads the textfile directory and
//! must parse every file (`node_textfile_scrape_error 0`).
//!
//! Needs `/usr/bin/prometheus-node-exporter` (`apt-get install prometheus-node-exporter`);
//! without it the test prints why it is skipped.

mod jobs_support;

use jobs_support::*;
use obsd::desired::model::job::{
    CloudPollerJob, CloudflareSource, DockerNamesJob, SelfHealApp, SelfHealJob, StripeSource,
};
use obsd::desired::model::{Duration as ModelDuration, JobSpec};
use obsd::jobs::{BodyExecutor, JobMetrics, JobRunner, RunnerConfig, SystemClock};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

/// Kills the node-exporter this test started (by its own handle) when dropped.
struct Exporter(Child);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn start_exporter(textfile_dir: &Path, port: u16) -> Exporter {
    let child = Command::new(NODE_EXPORTER)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--collector.disable-defaults")
        .arg("--collector.textfile")
        .arg(format!(
            "--collector.textfile.directory={}",
            textfile_dir.display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus-node-exporter");
    Exporter(child)
}

fn spec(schedule: &str) -> JobSpec {
    job_spec(schedule, 20)
}

async fn fakes() -> (FakeServer, FakeServer, FakeServer) {
    let cf = serve(|r| match r.path.as_str() {
        "/client/v4/zones" => Reply::json(json!({"success": true, "errors": [], "messages": [],
            "result": [{"id": "z1", "name": "tlsstress.art"}],
            "result_info": {"page": 1, "per_page": 50, "count": 1, "total_count": 1, "total_pages": 1}})),
        "/client/v4/graphql" => Reply::json(json!({"data": {"viewer": {"zones": [{"httpRequests1dGroups": [{
            "dimensions": {"date": "2026-03-15"},
            "sum": {"requests": 1000, "bytes": 123456, "cachedRequests": 10, "threats": 0, "encryptedRequests": 999},
            "uniq": {"uniques": 77}}]}]}}, "errors": null})),
        _ => Reply::status(404, json!({})),
    })
    .await;
    let stripe = serve(|r| match r.path.as_str() {
        "/v1/balance" => Reply::json(json!({"available": [{"amount": 100, "currency": "brl"}], "pending": []})),
        "/v1/subscriptions" => Reply::json(json!({"object": "list", "has_more": false, "data": [
            {"id": "sub_1", "items": {"data": [{"quantity": 1, "price": {"unit_amount": 4990, "currency": "brl",
                "recurring": {"interval": "month", "interval_count": 1}}}]}}]})),
        _ => Reply::json(json!({"object": "list", "has_more": false, "data": []})),
    })
    .await;
    let app = serve(|_| Reply::json(json!({"ok": true}))).await;
    (cf, stripe, app)
}

async fn scrape(port: u16) -> Option<String> {
    let url = format!("http://127.0.0.1:{port}/metrics");
    reqwest::get(&url).await.ok()?.text().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_exporter_parses_every_job_textfile() {
    if !Path::new(NODE_EXPORTER).exists() {
        eprintln!("SKIPPED node_exporter_parses_every_job_textfile: {NODE_EXPORTER} is absent (apt-get install prometheus-node-exporter)");
        return;
    }
    let (cf, stripe, app) = fakes().await;
    let dir = tempfile::tempdir().unwrap();
    let textfiles = dir.path().join("textfiles");
    std::fs::create_dir_all(&textfiles).unwrap();

    let mut ctx = context(
        dir.path(),
        &[
            ("CF_API_TOKEN", "cf-e2e"),
            ("STRIPE_API_KEY", "rk_live_e2e"),
            ("SELFHEAL_AWS_ACCESS_KEY_ID", "AKID"),
            ("SELFHEAL_AWS_SECRET_ACCESS_KEY", "secret"),
        ],
        Arc::new(SystemClock),
    );
    ctx.containers = Arc::new(FakeContainers(Mutex::new(Ok(vec![
        (
            "4f2a9c1b7d3e0a1b2c3d".into(),
            "/tlsstress-obs-grafana".into(),
        ),
        ("0011223344556677".into(), "/tlsstress-obs-cadvisor".into()),
    ]))));

    let mut poller = spec("@every 1s");
    poller.cloud_poller = Some(CloudPollerJob {
        textfile: "cloud.prom".into(),
        cloudflare: Some(CloudflareSource {
            api_base: format!("{}/client/v4", cf.base),
            token_env: "CF_API_TOKEN".into(),
            zone_tags: vec![],
        }),
        stripe: Some(StripeSource {
            api_base: stripe.base.clone(),
            key_env: "STRIPE_API_KEY".into(),
            currency: "brl".into(),
        }),
        plausible: None,
    });
    let mut names = spec("@every 1s");
    names.docker_names = Some(DockerNamesJob {
        textfile: "docker_names.prom".into(),
    });
    let mut heal = spec("@every 1s");
    heal.self_heal = Some(SelfHealJob {
        region: "eu-west-1".into(),
        api_base: Some("http://127.0.0.1:9/".into()),
        access_key_id_env: "SELFHEAL_AWS_ACCESS_KEY_ID".into(),
        secret_access_key_env: "SELFHEAL_AWS_SECRET_ACCESS_KEY".into(),
        cooldown: ModelDuration::secs(1800),
        probe_timeout: ModelDuration::secs(2),
        textfile: "self_heal.prom".into(),
        apps: vec![SelfHealApp {
            name: "customer-app".into(),
            ready_url: format!("{}/api/ready", app.base),
            service_arn: "arn:aws:apprunner:eu-west-1:1:service/customer-app/1".into(),
        }],
    });

    let shutdown = CancellationToken::new();
    let runner = JobRunner::start(
        RunnerConfig {
            state_dir: dir.path().join("state"),
            clock: Arc::new(SystemClock),
        },
        Arc::new(BodyExecutor::new(ctx)),
        JobMetrics::new(),
        shutdown.clone(),
    );
    runner.set_jobs(BTreeMap::from([
        ("cloud-poller".to_string(), poller),
        ("docker-names".to_string(), names),
        ("self-heal".to_string(), heal),
    ]));

    // The scheduler (not a manual trigger) writes the files.
    let deadline = Instant::now() + Duration::from_secs(15);
    let want = ["cloud.prom", "docker_names.prom", "self_heal.prom"];
    // A run writes its file before its record is stored: wait for both.
    while !(want.iter().all(|f| textfiles.join(f).exists())
        && runner.status().iter().all(|s| s.last_run.is_some()))
    {
        assert!(
            Instant::now() < deadline,
            "jobs did not write their textfiles: {:?}",
            runner.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for st in runner.status() {
        let last = st.last_run.as_ref().expect("ran");
        assert_eq!(
            last.result,
            obsd::jobs::RunResult::Success,
            "{}: {:?}",
            st.name,
            last.error
        );
    }

    let port = free_port();
    let _exporter = start_exporter(&textfiles, port);
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        if let Some(m) = scrape(port).await {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "node-exporter did not answer on 127.0.0.1:{port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    runner.shutdown().await;

    let lines: Vec<&str> = metrics.lines().filter(|l| !l.starts_with('#')).collect();
    let has = |prefix: &str| lines.iter().any(|l| l.starts_with(prefix));
    assert!(
        lines.contains(&"node_textfile_scrape_error 0"),
        "node-exporter rejected a textfile:\n{metrics}"
    );
    for f in want {
        let mtime = format!(
            "node_textfile_mtime_seconds{{file=\"{}\"}}",
            textfiles.join(f).display()
        );
        assert!(has(&mtime), "{f} not read:\n{metrics}");
    }
    assert!(
        has("cf_requests_total{zone=\"tlsstress.art\"} 1000"),
        "{metrics}"
    );
    assert!(has("cf_scrape_up 1"), "{metrics}");
    assert!(has("stripe_mrr_cents{currency=\"brl\"} 4990"), "{metrics}");
    assert!(has("stripe_scrape_up 1"), "{metrics}");
    assert!(has("cloud_poller_last_run_timestamp_seconds "), "{metrics}");
    // node-exporter prints labels sorted by name.
    assert!(
        has("container_name_info{name=\"tlsstress-obs-grafana\",short_id=\"4f2a9c1b7d3e\"} 1"),
        "{metrics}"
    );
    assert!(
        has("container_name_info{name=\"tlsstress-obs-cadvisor\",short_id=\"001122334455\"} 1"),
        "{metrics}"
    );
    assert!(
        has("self_heal_probe_status_code{app=\"customer-app\"} 200"),
        "{metrics}"
    );
    assert!(
        has("self_heal_heals_triggered_total{app=\"customer-app\"} 0"),
        "{metrics}"
    );
    assert!(!metrics.contains("rk_live_e2e") && !metrics.contains("cf-e2e"));
}

/// The same chain through the real daemon: `obsd` loads Job documents, runs them, and
/// node-exporter parses what they wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_obsd_writes_textfiles_that_node_exporter_parses() {
    use std::os::unix::fs::PermissionsExt;
    if !Path::new(NODE_EXPORTER).exists() {
        eprintln!("SKIPPED running_obsd_writes_textfiles_that_node_exporter_parses: {NODE_EXPORTER} is absent (apt-get install prometheus-node-exporter)");
        return;
    }
    let (cf, stripe, _app) = fakes().await;
    let dir = tempfile::tempdir().unwrap();
    let textfiles = dir.path().join("textfiles");
    let ds = dir.path().join("ds");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&textfiles).unwrap();
    std::fs::create_dir_all(&ds).unwrap();
    let env = ds.join(".env");
    std::fs::write(
        &env,
        "CF_API_TOKEN=cf-obsd-e2e\nSTRIPE_API_KEY=rk_live_obsd_e2e\n",
    )
    .unwrap();
    std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o600)).unwrap();
    let project = format!("obsdt-{}-jobs", std::process::id());
    std::fs::write(
        ds.join("stack.yaml"),
        format!(
            "apiVersion: obs.tlsstress.art/v1alpha1\nkind: Stack\nmetadata: {{name: t}}\nspec:\n  project: {project}\n  envFile: .env\n  textfileDir: {tf}\n---\napiVersion: obs.tlsstress.art/v1alpha1\nkind: Job\nmetadata: {{name: cloud-poller}}\nspec:\n  schedule: \"@every 1h\"\n  cloudPoller:\n    cloudflare: {{apiBase: \"{cf}/client/v4\"}}\n    stripe: {{apiBase: \"{st}\"}}\n---\napiVersion: obs.tlsstress.art/v1alpha1\nkind: Job\nmetadata: {{name: docker-names}}\nspec:\n  schedule: \"@every 1h\"\n  dockerNames: {{}}\n",
            tf = textfiles.display(),
            cf = cf.base,
            st = stripe.base,
        ),
    )
    .unwrap();
    let mut obsd = Command::new(env!("CARGO_BIN_EXE_obsd"))
        .arg("--desired-state")
        .arg(&ds)
        .arg("--state-dir")
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start obsd");
    let socket = state.join("obsd.sock");
    let run = |job: &str| {
        Command::new(env!("CARGO_BIN_EXE_obsctl"))
            .arg("--socket")
            .arg(&socket)
            .args(["jobs", "run", job, "--wait"])
            .output()
            .expect("obsctl")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    for job in ["cloud-poller", "docker-names"] {
        loop {
            let out = run(job);
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "obsctl jobs run {job}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // The client really talked to the fakes with the env file's credentials.
    assert!(cf.requests().iter().any(|r| r
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some("Bearer cf-obsd-e2e")));

    let port = free_port();
    let _exporter = start_exporter(&textfiles, port);
    let mut body = None;
    let deadline = Instant::now() + Duration::from_secs(15);
    while body.is_none() {
        assert!(Instant::now() < deadline, "node-exporter did not answer");
        body = scrape(port).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = body.unwrap();
    let _ = obsd.kill();
    let _ = obsd.wait();
    assert!(body.contains("node_textfile_scrape_error 0"), "{body}");
    assert!(
        body.contains("cf_requests_total{zone=\"tlsstress.art\"} 1000"),
        "{body}"
    );
    assert!(body.contains("cf_scrape_up 1"), "{body}");
    assert!(body.contains("stripe_scrape_up 1"), "{body}");
    assert!(
        body.contains("docker_names_last_run_timestamp_seconds"),
        "{body}"
    );
}
