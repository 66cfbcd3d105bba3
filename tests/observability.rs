//! End to end: obsd's alert path through Debian's real Prometheus and Alertmanager (and
//! obsd's own Prometheus-independent path), and a canary secret that must never show up
//! in any output.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod common;

use common::{ensure_image as test_image, http_get, poll, remove_project, IMAGE};

const LOOP: &str = r#"["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]"#;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll(timeout, what, f)
}

/// Kills and reaps a child when dropped; removes the project's Docker objects.
struct Guard {
    children: Vec<Child>,
    project: String,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        remove_project(&self.project);
    }
}

fn write_env(dir: &Path, content: &str) {
    let p = dir.join(".env");
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn stack(project: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: obs.tlsstress.art/v1alpha1\nkind: Stack\nmetadata: {{name: t}}\nspec:\n  project: {project}\n  envFile: .env\n  defaultNetwork: default\n{extra_spec}---\napiVersion: obs.tlsstress.art/v1alpha1\nkind: Network\nmetadata: {{name: default}}\nspec: {{}}\n"
    )
}

fn service(name: &str, image: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: obs.tlsstress.art/v1alpha1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  image: {image}\n  command: {LOOP}\n  stopGracePeriod: 1s\n{extra}"
    )
}

fn spawn_obsd(ds: &Path, state: &Path, listen: u16, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_obsd"))
        .arg("--desired-state")
        .arg(ds)
        .arg("--state-dir")
        .arg(state)
        .arg("--listen")
        .arg(format!("127.0.0.1:{listen}"))
        .env("OBSD_LOG", "debug,hyper=info,bollard=info,h2=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start obsd")
}

fn active_alerts(am: u16) -> Vec<serde_json::Value> {
    http_get(&format!(
        "http://127.0.0.1:{am}/api/v2/alerts?active=true&silenced=false&inhibited=false"
    ))
    .and_then(|b| serde_json::from_str::<Vec<serde_json::Value>>(&b).ok())
    .unwrap_or_default()
    .into_iter()
    .filter(|a| a["labels"]["alertname"] == "ObsdReconcileFailing")
    .collect()
}

#[test]
fn reconcile_failure_alert_fires_and_resolves_through_prometheus_and_alertmanager() {
    for bin in ["/usr/bin/prometheus", "/usr/bin/prometheus-alertmanager"] {
        assert!(
            Path::new(bin).exists(),
            "{bin} missing: apt-get install prometheus prometheus-alertmanager (.ci/run does)"
        );
    }
    test_image();
    let tmp = tempfile::tempdir().unwrap();
    let project = format!("obsdt-{}-alert", std::process::id());
    let mut guard = Guard {
        children: Vec::new(),
        project: project.clone(),
    };
    let (am_port, prom_port, obsd_port) = (free_port(), free_port(), free_port());

    // Alertmanager.
    let am_dir = tmp.path().join("am");
    std::fs::create_dir(&am_dir).unwrap();
    std::fs::write(
        am_dir.join("am.yml"),
        "route:\n  receiver: blackhole\n  group_wait: 1s\n  group_interval: 1s\nreceivers:\n  - name: blackhole\n",
    )
    .unwrap();
    guard.children.push(
        Command::new("/usr/bin/prometheus-alertmanager")
            .arg(format!("--config.file={}", am_dir.join("am.yml").display()))
            .arg(format!("--storage.path={}", am_dir.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // obsd with one good and one broken service (its image exists nowhere).
    let ds = tmp.path().join("ds");
    std::fs::create_dir(&ds).unwrap();
    write_env(&ds, &format!("AM_URL=http://127.0.0.1:{am_port}\n"));
    let alerting = "  alerting:\n    alertmanagerUrlEnv: AM_URL\n    failingAfter: 1s\n";
    let good = service("good", IMAGE, "");
    let broken = service("broken", "obsd-test/does-not-exist:1", "");
    std::fs::write(
        ds.join("stack.yaml"),
        format!("{}{good}{broken}", stack(&project, alerting)),
    )
    .unwrap();
    let state = tmp.path().join("state");
    let log = tmp.path().join("obsd.log");
    guard
        .children
        .push(spawn_obsd(&ds, &state, obsd_port, &log));

    // Prometheus scraping obsd with the shipped rules, `for:` shortened for the test.
    let prom_dir = tmp.path().join("prom");
    std::fs::create_dir(&prom_dir).unwrap();
    let rules =
        std::fs::read_to_string(repo().join("desired-state/config/prometheus/obsd-alerts.yml"))
            .unwrap();
    let short: String = rules
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("for:") {
                format!("{}for: 2s", &l[..l.len() - l.trim_start().len()])
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(prom_dir.join("rules.yml"), short).unwrap();
    std::fs::write(
        prom_dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [rules.yml]\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\nscrape_configs:\n  - job_name: obsd\n    honor_labels: true\n    static_configs:\n      - targets: ['127.0.0.1:{obsd_port}']\n"
        ),
    )
    .unwrap();
    guard.children.push(
        Command::new("/usr/bin/prometheus")
            .arg(format!(
                "--config.file={}",
                prom_dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Both paths raise ObsdReconcileFailing: Prometheus' rule, and obsd directly.
    let alerts = wait_for(
        "ObsdReconcileFailing from Prometheus and from obsd",
        Duration::from_secs(90),
        || {
            let a = active_alerts(am_port);
            let via_prom = a.iter().any(|x| x["labels"]["job"] == "obsd");
            let direct = a.iter().any(|x| x["labels"]["source"] == "obsd");
            (via_prom && direct).then_some(a)
        },
    );
    let direct = alerts
        .iter()
        .find(|x| x["labels"]["source"] == "obsd")
        .unwrap();
    assert!(
        direct["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("broken"),
        "the alert names the failing service: {direct}"
    );
    // The healthy service converged regardless.
    let running = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.State.Running}}",
            &format!("{project}-good"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&running.stdout).trim(), "true");

    // Fix the desired state: both alerts resolve.
    std::fs::write(
        ds.join("stack.yaml"),
        format!("{}{good}", stack(&project, alerting)),
    )
    .unwrap();
    wait_for(
        "ObsdReconcileFailing to resolve",
        Duration::from_secs(90),
        || active_alerts(am_port).is_empty().then_some(()),
    );
    drop(guard);
}

#[test]
fn canary_secret_never_appears_in_any_output() {
    test_image();
    let tmp = tempfile::tempdir().unwrap();
    let project = format!("obsdt-{}-canary", std::process::id());
    let mut guard = Guard {
        children: Vec::new(),
        project: project.clone(),
    };
    let canary = "CANARY-7f3a9c1e-do-not-print";
    let ds = tmp.path().join("ds");
    std::fs::create_dir(&ds).unwrap();
    write_env(&ds, &format!("CANARY={canary}\n"));
    let svc = service(
        "app",
        IMAGE,
        "  secretEnv: {APP_TOKEN: CANARY}\n  env: {PLAIN: visible}\n",
    );
    std::fs::write(
        ds.join("stack.yaml"),
        format!("{}{svc}", stack(&project, "")),
    )
    .unwrap();
    let state = tmp.path().join("state");
    let port = free_port();
    let log = tmp.path().join("obsd.log");
    guard.children.push(spawn_obsd(&ds, &state, port, &log));
    let socket = state.join("obsd.sock");
    let obsctl = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_obsctl"))
            .args(args)
            .env("OBSD_STATE_DIR", &state)
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    wait_for("the service to run", Duration::from_secs(60), || {
        let s = obsctl(&["--socket", socket.to_str().unwrap(), "status", "-o", "json"]);
        s.contains("\"in_sync\": true").then_some(())
    });
    // The container really has the secret (that is its purpose)...
    let env = Command::new("docker")
        .args([
            "exec",
            &format!("{project}-app"),
            "sh",
            "-c",
            "echo $APP_TOKEN",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&env.stdout).trim(), canary);

    // ...and rotating it recreates the container and shows as masked in diff.
    write_env(&ds, "CANARY=rotated-value-also-secret\n");
    let diff = obsctl(&["diff", "--desired-state", ds.to_str().unwrap()]);
    assert!(
        diff.contains("env.APP_TOKEN: *** → *** (changed)"),
        "{diff}"
    );

    let mut outputs = vec![
        (
            "status json",
            obsctl(&["--socket", socket.to_str().unwrap(), "status", "-o", "json"]),
        ),
        (
            "status table",
            obsctl(&["--socket", socket.to_str().unwrap(), "status"]),
        ),
        ("diff", diff.clone()),
        (
            "diff json",
            obsctl(&[
                "diff",
                "--desired-state",
                ds.to_str().unwrap(),
                "-o",
                "json",
            ]),
        ),
        (
            "metrics",
            http_get(&format!("http://127.0.0.1:{port}/metrics")).unwrap_or_default(),
        ),
    ];
    let labels = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{json .Config.Labels}}",
            &format!("{project}-app"),
        ])
        .output()
        .unwrap();
    outputs.push((
        "container labels",
        String::from_utf8_lossy(&labels.stdout).into_owned(),
    ));
    // Let the daemon pick up the rotation too, then read its whole log.
    wait_for(
        "the rotated secret to be applied",
        Duration::from_secs(60),
        || {
            let s = obsctl(&["diff", "--desired-state", ds.to_str().unwrap()]);
            s.contains("nothing to do").then_some(())
        },
    );
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(guard.children[0].id().to_string())
        .status();
    let _ = guard.children[0].wait();
    let mut log_text = String::new();
    std::fs::File::open(&log)
        .unwrap()
        .read_to_string(&mut log_text)
        .unwrap();
    outputs.push(("obsd log", log_text));
    let state_files: String = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| String::from_utf8_lossy(&std::fs::read(e.path()).unwrap_or_default()).into_owned())
        .collect();
    outputs.push(("state directory", state_files));

    for (what, text) in &outputs {
        assert!(!text.is_empty(), "{what}: no output captured");
        for secret in [canary, "rotated-value-also-secret"] {
            assert!(!text.contains(secret), "{what} leaks the secret:\n{text}");
        }
    }
    assert!(outputs[0].1.contains("app"), "status lists the service");
    drop(guard);
}

#[test]
fn daemon_without_engine_keeps_running_and_reports_docker_down() {
    let tmp = tempfile::tempdir().unwrap();
    let project = format!("obsdt-{}-noengine", std::process::id());
    let ds = tmp.path().join("ds");
    std::fs::create_dir(&ds).unwrap();
    write_env(&ds, "X=1\n");
    std::fs::write(ds.join("stack.yaml"), stack(&project, "")).unwrap();
    let port = free_port();
    let log = tmp.path().join("obsd.log");
    let child = Command::new(env!("CARGO_BIN_EXE_obsd"))
        .arg("--desired-state")
        .arg(&ds)
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env(
            "DOCKER_HOST",
            format!("unix://{}/no-engine.sock", tmp.path().display()),
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut guard = Guard {
        children: vec![child],
        project,
    };
    let metrics = wait_for(
        "metrics with obsd_docker_up 0",
        Duration::from_secs(20),
        || {
            http_get(&format!("http://127.0.0.1:{port}/metrics"))
                .filter(|m| m.contains("obsd_docker_up 0"))
        },
    );
    assert!(metrics.contains("obsd_desired_state_valid 1"), "{metrics}");
    // Still serving (retrying with backoff), not exited.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        guard.children[0].try_wait().unwrap().is_none(),
        "obsd exited without an engine"
    );
    assert_eq!(
        http_get(&format!("http://127.0.0.1:{port}/healthz")).as_deref(),
        Some("ok\n")
    );
    let mut text = String::new();
    std::fs::File::open(&log)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.contains("unreachable"), "the log says why: {text}");
    let _ = guard.children[0].kill();
}
