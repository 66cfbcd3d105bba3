//! `obsctl status` as a script uses it (`obsctl status && next-step`): exit 0 only when
//! the daemon finished a pass of the current generation, the desired state on disk is
//! valid, the engine is up, every resource is in sync and no job fails (product.md);
//! `-o json` carries `verdict` and `reasons`. The contract metric series exist from
//! start-up, and no obsctl output piped into a closed reader ends in a panic.
//!
//! Runs against the real Docker engine (see tests/common).

mod common;

use common::{poll, service, Stack, OBSCTL};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(90);

fn codes(v: &Value) -> Vec<String> {
    v["reasons"]
        .as_array()
        .unwrap_or_else(|| panic!("no reasons array in {v}"))
        .iter()
        .map(|r| r["code"].as_str().expect("reason code").to_string())
        .collect()
}

/// What a 0 must imply, checked on every status read.
fn check_zero_means_in_sync(code: i32, v: &Value) {
    assert!(code == 0 || code == 2, "status exit {code}: {v}");
    let in_sync = v["verdict"] == "in_sync";
    assert_eq!(code == 0, in_sync, "exit code and verdict disagree: {v}");
    if code == 0 {
        assert_eq!(v["desired_generation"], v["applied_generation"], "{v}");
        assert!(v["desired_state_error"].is_null(), "{v}");
        assert_eq!(v["docker_up"], true, "{v}");
        assert!(v["reasons"].as_array().unwrap().is_empty(), "{v}");
        for r in v["resources"].as_array().unwrap() {
            assert_eq!(
                r["in_sync"], true,
                "exit 0 with a resource out of sync: {v}"
            );
        }
    } else {
        assert!(!codes(v).is_empty(), "exit 2 without a reason: {v}");
    }
}

/// Polls status until it exits 0, checking the contract on every read.
fn wait_in_sync(s: &Stack, what: &str) -> Value {
    poll(DEADLINE, what, || {
        let (code, v) = s.status_json();
        check_zero_means_in_sync(code, &v);
        (code == 0).then_some(v)
    })
}

#[test]
fn invalid_desired_state_and_new_generations_are_not_in_sync() {
    let mut s = Stack::new("st-inval");
    s.service("app", service(json!({})));
    s.write();
    let d = s.spawn_daemon();
    wait_in_sync(&s, "status in sync after the first pass");
    // The contract series, counters included, are there.
    let m = d.metrics();
    assert!(
        m.contains("obsd_actions_total{action=\"create\",result=\"success\"}"),
        "{m}"
    );
    assert!(
        m.contains("obsd_resource_in_sync{kind=\"Service\",name=\"app\"} 1"),
        "{m}"
    );

    // An invalid edit: the containers keep running, the table says INVALID, and the
    // exit code says 2.
    s.write_raw("apiVersion: obs.tlsstress.art/v1alpha1\nkind: Stack\nmetadata: {name: [\n");
    let (code, v) = poll(DEADLINE, "status shows the invalid desired state", || {
        let (code, v) = s.status_json();
        check_zero_means_in_sync(code, &v);
        (!v["desired_state_error"].is_null()).then_some((code, v))
    });
    assert_eq!(code, 2, "invalid desired state kept as last good: {v}");
    assert!(
        codes(&v).contains(&"desired_state_invalid".to_string()),
        "{v}"
    );
    let table = s.obsctl(&["status"]).expect(2, "obsctl status (table)");
    assert!(table.stdout.contains("NOT IN SYNC"), "{}", table.stdout);
    assert!(
        table.stdout.contains("desired_state_invalid"),
        "{}",
        table.stdout
    );
    assert!(s.must("app").running, "the running container is untouched");

    // Back to valid: in sync again.
    s.write();
    wait_in_sync(&s, "status in sync after the fix");

    // A new generation whose service never gets healthy: never applied, never 0.
    s.service(
        "gate",
        service(json!({
            "healthcheck": {"test": ["CMD", "false"], "interval": "1s", "retries": 1}
        })),
    );
    s.service(
        "after",
        service(json!({"dependsOn": [{"service": "gate", "condition": "healthy"}]})),
    );
    s.write();
    let v = poll(DEADLINE, "status sees the new generation", || {
        let (code, v) = s.status_json();
        check_zero_means_in_sync(code, &v);
        v["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "gate")
            .then_some(v)
    });
    let before = v["applied_generation"].as_u64().unwrap();
    assert!(v["desired_generation"].as_u64().unwrap() > before, "{v}");
    // Keep reading for a while: every read is 2 with a reason.
    for _ in 0..10 {
        let (code, v) = s.status_json();
        check_zero_means_in_sync(code, &v);
        assert_eq!(code, 2, "a generation that cannot be applied: {v}");
        assert!(
            codes(&v).contains(&"generation_not_applied".to_string()),
            "{v}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(d);
}

#[test]
fn engine_down_before_the_first_pass_is_2_and_series_exist() {
    let s = {
        let mut s = Stack::new("st-noeng");
        s.service("app", service(json!({})));
        s.write();
        s
    };
    let tmp = tempfile::tempdir().unwrap();
    let host = format!("unix://{}/no-engine.sock", tmp.path().display());
    let d = s.spawn_daemon_env(&[("DOCKER_HOST", &host)]);
    let (code, v) = s.status_json();
    check_zero_means_in_sync(code, &v);
    assert_eq!(code, 2, "no engine, no pass: {v}");
    let c = codes(&v);
    assert!(c.contains(&"docker_down".to_string()), "{v}");
    assert!(c.contains(&"no_pass_yet".to_string()), "{v}");
    // Table too, as a script would see it.
    s.obsctl(&["status"])
        .expect(2, "obsctl status without engine");

    // Every contract series exists before any pass: counters at 0, the declared
    // resources not (yet) in sync.
    let m = d.metrics();
    for series in [
        "obsd_actions_total{action=\"create\",result=\"success\"} 0",
        "obsd_actions_total{action=\"recreate\",result=\"error\"} 0",
        "obsd_reconcile_total{result=\"success\"} 0",
        "obsd_resource_in_sync{kind=\"Service\",name=\"app\"} 0",
        "obsd_resource_in_sync{kind=\"Network\",name=\"default\"} 0",
        "obsd_resource_drift{kind=\"Service\",name=\"app\",reason=\"missing\"} 0",
        "obsd_docker_up 0",
        "obsd_desired_state_valid 1",
    ] {
        assert!(m.contains(series), "{series} missing:\n{m}");
    }
}

#[test]
fn failing_job_is_not_in_sync() {
    let mut s = Stack::new("st-job");
    let tf = s.state_dir.join("textfiles");
    s.stack_spec()["textfileDir"] = json!(tf.to_string_lossy());
    s.stack_spec()["envFile"] = json!(".env");
    s.service("app", service(json!({})));
    std::fs::write(s.dir.join(".env"), "STRIPE_API_KEY=sk_test_x\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(s.dir.join(".env"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
    }
    // Stripe on a closed loopback port: every run fails.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let job = json!({
        "apiVersion": common::API, "kind": "Job", "metadata": {"name": "poller"},
        "spec": {"schedule": "@every 1h", "timeout": "20s",
                 "cloudPoller": {"stripe": {"apiBase": format!("http://127.0.0.1:{closed}"),
                                            "keyEnv": "STRIPE_API_KEY"}}}
    });
    s.write_raw(&format!("{}---\n{}\n", s.render(), job));
    let _d = s.spawn_daemon();
    // The job has not failed yet; everything else converges.
    wait_in_sync(&s, "in sync before the job ran");
    let run = s.obsctl(&["jobs", "run", "poller", "--wait"]);
    assert_eq!(run.code, 1, "the run fails: {run:?}");
    let (code, v) = s.status_json();
    check_zero_means_in_sync(code, &v);
    assert_eq!(code, 2, "a failing job: {v}");
    assert!(codes(&v).contains(&"job_failing".to_string()), "{v}");
}

/// Runs obsctl with stdout a pipe whose reader is already gone.
fn into_closed_pipe(s: Option<&Stack>, args: &[&str]) -> std::process::Output {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two descriptors we own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: closing the read end we own; writes now fail with EPIPE.
    unsafe { libc::close(fds[0]) };
    // SAFETY: the write end is ours and handed over exactly once.
    let stdout = unsafe { <Stdio as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
    let mut cmd = Command::new(OBSCTL);
    cmd.args(args).stdin(Stdio::null()).stdout(stdout);
    if let Some(s) = s {
        cmd.env("OBSD_SOCKET", s.socket());
    }
    cmd.output().expect("run obsctl")
}

#[test]
fn closed_pipe_ends_quietly() {
    let mut s = Stack::new("st-pipe");
    s.service("app", service(json!({})));
    s.write();
    let _d = s.spawn_daemon();
    poll(DEADLINE, "in sync", || {
        (s.obsctl(&["status"]).code == 0).then_some(())
    });
    let dir = s.dir.to_string_lossy().into_owned();
    // (args, the exit code it has with a reader)
    for (args, want) in [
        (vec!["status"], 0),
        (vec!["status", "-o", "json"], 0),
        (vec!["jobs"], 0),
        (vec!["schema"], 0),
        (vec!["completions", "bash"], 0),
        (vec!["validate", dir.as_str()], 0),
        (vec!["diff", dir.as_str()], 0),
        (vec!["diff", "--desired-state", "/nonexistent"], 1),
    ] {
        let out = into_closed_pipe(Some(&s), &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked"),
            "obsctl {args:?} on a closed pipe: {:?}\n{stderr}",
            out.status
        );
        // Its own exit code, as with a reader: `set -o pipefail; obsctl status | head`
        // still tells in sync from not.
        assert_eq!(
            out.status.code(),
            Some(want),
            "{args:?}: {:?}\n{stderr}",
            out.status
        );
    }
    // Not in sync stays 2 into a closed pipe.
    s.write_raw("kind: [\n");
    poll(DEADLINE, "invalid desired state seen", || {
        (s.obsctl(&["status"]).code == 2).then_some(())
    });
    let out = into_closed_pipe(Some(&s), &["status"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // Through a shell, as a user types it.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -o pipefail; '{OBSCTL}' schema | head -1"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).is_empty(), "{out:?}");
}

#[test]
fn fifo_config_file_does_not_wedge_the_daemon() {
    let mut s = Stack::new("st-fifo");
    s.file("config/app.conf", "a = 1\n");
    s.service(
        "app",
        service(json!({"configFiles": [{"source": "config/app.conf", "target": "/etc/app.conf"}]})),
    );
    s.write();
    let _d = s.spawn_daemon();
    wait_in_sync(&s, "in sync with a regular config file");
    let before = s.must("app").id;

    // The config file becomes a FIFO nobody writes to.
    let conf = s.dir.join("config/app.conf");
    std::fs::remove_file(&conf).unwrap();
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(conf.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }
    let v = poll(DEADLINE, "status reports the FIFO", || {
        let (code, v) = s.status_json();
        check_zero_means_in_sync(code, &v);
        v["desired_state_error"]
            .as_str()
            .is_some_and(|e| e.contains("FIFO"))
            .then_some(v)
    });
    assert!(
        v["desired_state_error"]
            .as_str()
            .unwrap()
            .contains("config/app.conf"),
        "{v}"
    );
    // Repair goes on with the last good state.
    common::docker_ok(&["rm", "-f", &s.cname("app")]);
    s.obsctl(&["status"]); // any read; the loop is alive
    let after = poll(DEADLINE, "the removed container is recreated", || {
        s.ctr("app").filter(|c| c.running && c.id != before)
    });
    assert_ne!(after.id, before);
    let (code, _) = s.status_json();
    assert_eq!(code, 2, "still invalid on disk");
}

/// `obsctl` run the way a user types it: no OBSD_SOCKET, no OBSD_STATE_DIR unless given.
fn obsctl_plain(args: &[&str], env: &[(&str, &std::path::Path)]) -> common::Run {
    let mut cmd = Command::new(OBSCTL);
    cmd.args(args)
        .env_remove("OBSD_SOCKET")
        .env_remove("OBSD_STATE_DIR")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("run obsctl");
    common::Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[test]
fn cli_takes_the_directory_and_finds_the_daemon_the_same_way_everywhere() {
    let mut s = Stack::new("st-cli");
    let tf = s.state_dir.join("textfiles");
    s.stack_spec()["textfileDir"] = json!(tf.to_string_lossy());
    s.service("app", service(json!({})));
    let jobs = [
        json!({"apiVersion": common::API, "kind": "Job", "metadata": {"name": "names"},
               "spec": {"schedule": "@every 1h", "dockerNames": {}}}),
        json!({"apiVersion": common::API, "kind": "Job", "metadata": {"name": "paused"},
               "spec": {"schedule": "@every 1h", "suspend": true,
                        "dockerNames": {"textfile": "paused.prom"}}}),
    ];
    s.write_raw(&format!(
        "{}---\n{}\n---\n{}\n",
        s.render(),
        jobs[0],
        jobs[1]
    ));
    let dir = s.dir.to_string_lossy().into_owned();

    // validate, diff and apply: DIR or --desired-state DIR, not both.
    for args in [
        vec!["validate", dir.as_str()],
        vec!["validate", "--desired-state", dir.as_str()],
    ] {
        obsctl_plain(&args, &[]).expect(0, &format!("{args:?}"));
    }
    for args in [
        vec!["diff", dir.as_str()],
        vec!["diff", "--desired-state", dir.as_str()],
    ] {
        obsctl_plain(&args, &[]).expect(2, &format!("{args:?} (changes pending)"));
    }
    for args in [
        vec!["apply", "--dry-run", dir.as_str()],
        vec!["apply", "--dry-run", "--desired-state", dir.as_str()],
    ] {
        let r = obsctl_plain(&args, &[]).expect(0, &format!("{args:?}"));
        assert!(r.stdout.contains("service app: create"), "{}", r.stdout);
    }
    let both = obsctl_plain(
        &["diff", dir.as_str(), "--desired-state", dir.as_str()],
        &[],
    );
    assert_eq!(both.code, 2, "clap usage error: {both:?}");
    assert!(
        both.stderr.contains("cannot be used with"),
        "{}",
        both.stderr
    );

    // A daemon with a custom state directory: found by --state-dir or OBSD_STATE_DIR.
    let _d = s.spawn_daemon();
    let state = s.state_dir.clone();
    let st = state.to_string_lossy().into_owned();
    poll(DEADLINE, "status via --state-dir", || {
        let r = obsctl_plain(&["--state-dir", &st, "status", "-o", "json"], &[]);
        (r.code == 0).then_some(())
    });
    obsctl_plain(&["status"], &[("OBSD_STATE_DIR", &state)]).expect(0, "OBSD_STATE_DIR");
    let lost = obsctl_plain(&["--state-dir", &format!("{st}/nowhere"), "status"], &[]);
    assert_eq!(lost.code, 1);
    assert!(lost.stderr.contains("--state-dir"), "{}", lost.stderr);

    // jobs run NAME --wait -o json: the run as JSON.
    let r = obsctl_plain(
        &[
            "--state-dir",
            &st,
            "jobs",
            "run",
            "names",
            "--wait",
            "-o",
            "json",
        ],
        &[],
    )
    .expect(0, "jobs run --wait -o json");
    let v: Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(v["job"], "names");
    assert_eq!(v["result"], "success");
    let r = obsctl_plain(&["--state-dir", &st, "jobs", "run", "names", "--wait"], &[])
        .expect(0, "jobs run --wait");
    assert!(
        r.stdout.starts_with("job names: success in "),
        "{}",
        r.stdout
    );

    // A suspended job is shown as such.
    let table = obsctl_plain(&["--state-dir", &st, "jobs"], &[]).expect(0, "jobs");
    let line = table
        .stdout
        .lines()
        .find(|l| l.starts_with("paused"))
        .unwrap_or_else(|| panic!("{}", table.stdout));
    assert!(line.contains("suspended"), "{line}");
    let (_, v) = s.status_json();
    let paused = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "paused")
        .unwrap();
    assert_eq!(paused["suspended"], true, "{v}");
}
