//! Safe rollouts against the real Docker engine (issue 10): the health-gated replace,
//! its automatic rollback, and crash safety at every step of both.
//!
//! Every test has its own project (`obsdt-<pid>-<tag>`) and state directory; the
//! `Stack` guard removes what the test created, also when it panics. Run one with
//! `cargo test --test rollout NAME -- --nocapture` to see what it measured.

mod common;
mod rollout_support;

use common::recording::{load, with_rig};
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Generous: the box is shared and has 2 cores.
const DEADLINE: Duration = Duration::from_secs(40);

/// A web server on the test image answering `GET /` with `body` (busybox httpd).
fn web(body: &str) -> Value {
    service(json!({
        "command": ["sh", "-c", format!(
            "mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 8080 -h /www"
        )],
        "env": {"BODY": body},
    }))
}

/// A replacement that dies at once, saying why on stderr (as Caddy does on a bad file).
fn broken(body: &str) -> Value {
    service(json!({
        "command": ["sh", "-c", "echo 'Error: adapting config: line 3: unknown directive' >&2; exit 1"],
        "env": {"BODY": body},
    }))
}

/// The container's address on its (first) network.
fn ip_of(name: &str) -> Option<String> {
    let v = inspect(name)?;
    v["NetworkSettings"]["Networks"]
        .as_object()?
        .values()
        .find_map(|n| n["IPAddress"].as_str().filter(|s| !s.is_empty()))
        .map(str::to_string)
}

fn serves(s: &Stack, svc: &str) -> Option<String> {
    let ip = ip_of(&s.cname(svc))?;
    http_get(&format!("http://{ip}:8080/")).map(|b| b.trim().to_string())
}

fn row<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status_row(status, "Service", name)
}

fn drift(status: &Value, name: &str) -> Vec<String> {
    status_drift(status, "Service", name)
}

/// Polls `obsctl status` until the Service shows drift `reason`; returns its row.
fn wait_drift(s: &Stack, svc: &str, reason: &str) -> Value {
    poll(
        DEADLINE,
        &format!("{svc}: {reason} in obsctl status"),
        || {
            let (_, st) = s.status_json();
            drift(&st, svc)
                .iter()
                .any(|d| d == reason)
                .then(|| row(&st, svc).cloned())
                .flatten()
        },
    )
}

/// Containers of the service: its name, `--next`, `--prev`.
fn copies(s: &Stack, svc: &str) -> Vec<String> {
    container_names_with_prefix(&s.cname(svc))
}

#[test]
fn failing_replacement_rolls_back_and_the_old_container_keeps_serving() {
    let mut s = Stack::new("rbexit");
    s.service("web", web("v1"));
    s.write();
    let d = s.spawn_daemon();
    let v1 = poll(DEADLINE, "v1 serving", || {
        (serves(&s, "web").as_deref() == Some("v1")).then(|| s.must("web"))
    });
    assert_eq!(
        d.metric("obsd_rollbacks_total{service=\"web\"}"),
        Some(0.0),
        "the counter exists at 0 before any rollback"
    );

    s.remove("Service", "web");
    s.service("web", broken("v2"));
    s.write();
    let t0 = Instant::now();
    let r = wait_drift(&s, "web", "rolled_back");
    println!("rolled back {:?} after the edit", t0.elapsed());
    let msg = r["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("rolled back: the new container"),
        "reason: {msg}"
    );
    assert!(msg.contains("exit"), "reason: {msg}");
    assert!(
        msg.contains("unknown directive"),
        "last log line in the message: {msg}"
    );
    assert!(
        r["log_tail"]
            .as_str()
            .is_some_and(|l| l.contains("Error: adapting config: line 3")),
        "log tail: {r}"
    );
    // The old container — the very same one — serves again; nothing else is left.
    let now = poll(DEADLINE, "v1 serving again", || {
        (serves(&s, "web").as_deref() == Some("v1")).then(|| s.must("web"))
    });
    assert_eq!(
        now.id, v1.id,
        "the old container was restored, not recreated"
    );
    assert_eq!(copies(&s, "web"), [s.cname("web")], "leftovers");
    assert_eq!(d.metric("obsd_rollbacks_total{service=\"web\"}"), Some(1.0));
    let (code, _) = s.status_json();
    assert_ne!(code, 0, "a rolled-back service is not in sync");

    // Not retried in a loop: later passes (a resync, a reload) leave it alone.
    // SAFETY: signalling the obsd child this test spawned.
    unsafe {
        libc::kill(d.pid() as libc::pid_t, libc::SIGHUP);
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(s.must("web").id, v1.id, "the failed spec was tried again");
    assert_eq!(
        d.metric("obsd_rollbacks_total{service=\"web\"}"),
        Some(1.0),
        "a second rollback happened"
    );

    // `obsctl rollout status` says why, as a script reads it.
    let r = s
        .obsctl(&["rollout", "status", "web", "-o", "json"])
        .expect(0, "rollout status");
    let v: Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["rolled_back"], true, "{v}");
    assert_eq!(v["held"], true, "{v}");
    assert!(
        v["status"]["log_tail"]
            .as_str()
            .is_some_and(|l| l.contains("line 3")),
        "{v}"
    );
    let r = s
        .obsctl(&["rollout", "status", "web"])
        .expect(0, "rollout status (text)");
    assert!(
        r.stdout.contains("obsctl rollout retry web"),
        "{}",
        r.stdout
    );
    // The history keeps the create and the rollback, newest last.
    let r = s
        .obsctl(&["rollout", "history", "web", "-o", "json"])
        .expect(0, "rollout history");
    let h: Value = serde_json::from_str(&r.stdout).expect("json");
    let outcomes: Vec<&str> = h
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["outcome"].as_str())
        .collect();
    assert_eq!(outcomes, ["applied", "rolled_back"], "{h}");
    let r = s
        .obsctl(&["rollout", "history", "web"])
        .expect(0, "history table");
    assert!(
        r.stdout.contains("rolled_back") && r.stdout.contains("OUTCOME"),
        "{}",
        r.stdout
    );
    s.obsctl(&["rollout", "status", "nosuch"])
        .expect(1, "unknown service");

    // An operator retries: the same spec is tried once more, and rolls back again.
    let r = s
        .obsctl(&["rollout", "retry", "web"])
        .expect(0, "rollout retry");
    assert!(r.stdout.contains("tried again"), "{}", r.stdout);
    poll(
        DEADLINE,
        "the retried spec rolled back a second time",
        || (d.metric("obsd_rollbacks_total{service=\"web\"}") == Some(2.0)).then_some(()),
    );
    poll(DEADLINE, "v1 serving after the retry", || {
        (serves(&s, "web").as_deref() == Some("v1")).then_some(())
    });
    assert_eq!(s.must("web").id, v1.id);
    assert_eq!(copies(&s, "web"), [s.cname("web")]);

    // A new spec is tried: it passes the gate and the old container goes.
    s.remove("Service", "web");
    s.service("web", web("v3"));
    s.write();
    poll(DEADLINE, "v3 serving", || {
        (serves(&s, "web").as_deref() == Some("v3")).then_some(())
    });
    let st = poll(DEADLINE, "in sync after the fix", || {
        let (code, st) = s.status_json();
        (code == 0).then_some(st)
    });
    assert!(drift(&st, "web").is_empty(), "{st}");
    assert_eq!(copies(&s, "web"), [s.cname("web")]);
    assert_ne!(s.must("web").id, v1.id);
    drop(d);
}

#[test]
fn unhealthy_replacement_rolls_back_and_a_healthy_one_is_kept() {
    let mut s = Stack::new("rbhealth");
    let hc = |test: &str| json!({"test": ["CMD-SHELL", test], "interval": "1s", "timeout": "1s", "retries": 2});
    let mut spec = web("v1");
    spec["healthcheck"] = hc("wget -qO- http://127.0.0.1:8080/ >/dev/null");
    s.service("web", spec);
    s.write();
    let d = s.spawn_daemon();
    let v1 = poll(DEADLINE, "v1 healthy", || {
        s.ctr("web")
            .filter(|c| c.health.as_deref() == Some("healthy"))
    });

    // Runs fine but its healthcheck fails: rolled back once it is unhealthy.
    let mut spec = web("v2");
    spec["healthcheck"] = hc("exit 1");
    s.remove("Service", "web");
    s.service("web", spec);
    s.write();
    let msg = wait_drift(&s, "web", "rolled_back")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(msg.contains("unhealthy"), "{msg}");
    assert_eq!(s.must("web").id, v1.id);
    poll(DEADLINE, "v1 serving again", || {
        (serves(&s, "web").as_deref() == Some("v1")).then_some(())
    });

    // A healthy replacement: the old container is removed only after it is healthy.
    let mut spec = web("v3");
    spec["healthcheck"] = hc("wget -qO- http://127.0.0.1:8080/ >/dev/null");
    s.remove("Service", "web");
    s.service("web", spec);
    s.write();
    // While the gate runs, the old container is kept, stopped, as `--prev`.
    let kept = poll(DEADLINE, "the old container kept as --prev", || {
        ctr(&format!("{}--prev", s.cname("web")))
    });
    assert_eq!(kept.id, v1.id);
    assert!(!kept.running, "the kept container is stopped");
    poll(DEADLINE, "in sync with v3", || {
        let (code, _) = s.status_json();
        (code == 0 && serves(&s, "web").as_deref() == Some("v3")).then_some(())
    });
    let now = s.must("web");
    assert_eq!(now.health.as_deref(), Some("healthy"));
    assert_eq!(copies(&s, "web"), [s.cname("web")]);
    assert_eq!(d.metric("obsd_rollbacks_total{service=\"web\"}"), Some(1.0));
}

// ---------------------------------------------------------------------- crashes

/// A replace is cut after each of its writes — on the path that keeps the new
/// container and on the path that rolls back — and a fresh pass, with the state as it
/// was on disk before the cut pass, must leave exactly one running copy: the new one
/// when it is good, the old one when it is not.
#[test]
fn crash_after_each_rollout_step_leaves_one_running_copy() {
    // create, stop, rename old, rename new, start, then remove old (good) or stop new,
    // remove new, rename old back, start old (rolled back).
    crash_cuts("rbcrash", None, 6, 9);
}

/// The start-first replace cut after each of its writes: create and start the new
/// container, then rename old aside, rename new in place, take old off its network,
/// stop old, remove old (good)
/// or stop new, remove new (failing). Whatever the cut, one running copy is left, and
/// on the failing path it is the old one.
#[test]
fn start_first_crash_after_each_step_leaves_one_running_copy() {
    crash_cuts("sfcrash", Some(json!({"order": "start-first"})), 7, 4);
}

/// `web(body)` (or `broken`) with the `update` policy under test.
fn with_update(mut spec: Value, update: &Option<Value>) -> Value {
    if let Some(u) = update {
        spec["update"] = u.clone();
    }
    spec
}

fn crash_cuts(tag: &str, update: Option<Value>, good_writes: usize, bad_writes: usize) {
    let mut s = Stack::new(tag);
    s.service("web", with_update(web("g0"), &update));
    s.write();
    // A rollback holds its spec, so a failing rollout converges too (not strict).
    with_rig(&s.state_dir.clone(), async |rig| {
        rig.converge(&load(&s), 6, false).await;

        let mut generation = 0;
        for good in [true, false] {
            let writes = if good { good_writes } else { bad_writes };
            for cut in 1..writes {
                generation += 1;
                let body = format!("g{generation}");
                s.remove("Service", "web");
                let spec = if good { web(&body) } else { broken(&body) };
                s.service("web", with_update(spec, &update));
                s.write();
                let desired = load(&s);
                let old = s.must("web");
                let on_disk = rig.persisted.clone();

                let before = rig.cut_pass(&desired, cut).await;
                let left = copies(&s, "web");
                if update.is_some() {
                    // Start-first: a copy runs at every cut, the crash included.
                    assert!(
                        left.iter().any(|n| ctr(n).is_some_and(|c| c.running)),
                        "start-first, crash after {before:?}: nothing running in {left:?}"
                    );
                }

                // The restarted daemon sees the state as it was on disk.
                rig.persisted = on_disk;
                let repair = rig.converge(&desired, 6, false).await;
                println!(
                    "{} rollout, crash after {before:?}: left {left:?}; repaired with {repair:?}",
                    if good { "good" } else { "failing" }
                );

                assert_eq!(
                    copies(&s, "web"),
                    [s.cname("web")],
                    "crash after {before:?}: duplicate or leftover"
                );
                let now = s.must("web");
                assert!(now.running, "crash after {before:?}: not running");
                let env = format!("BODY={body}");
                if good {
                    assert!(
                        now.env.contains(&env),
                        "crash after {before:?}: stale spec {:?}",
                        now.env
                    );
                } else {
                    assert_eq!(
                        now.id, old.id,
                        "crash after {before:?}: the old one is gone"
                    );
                    if update.is_some() {
                        assert_eq!(
                            now.started_at, old.started_at,
                            "start-first, crash after {before:?}: the old one was stopped"
                        );
                    }
                    assert!(
                        rig.persisted.rollout.rollbacks.contains_key("web"),
                        "crash after {before:?}: no rollback recorded"
                    );
                    // Back to a good spec for the next round.
                    s.remove("Service", "web");
                    generation += 1;
                    s.service("web", with_update(web(&format!("g{generation}")), &update));
                    s.write();
                    rig.converge(&load(&s), 6, false).await;
                    assert!(!rig.persisted.rollout.rollbacks.contains_key("web"));
                }
            }
        }
    });
}

/// kill -9 of the daemon while the gate watches the new container (the old one kept as
/// `--prev`): the restarted daemon finishes the rollout with one running copy.
#[test]
fn kill9_during_the_gate_then_restart() {
    let mut s = Stack::new("rbkill");
    s.service("web", web("v1"));
    s.write();
    let mut d = s.spawn_daemon();
    poll(DEADLINE, "v1 serving", || {
        (serves(&s, "web").as_deref() == Some("v1")).then_some(())
    });
    let mut spec = web("v2");
    spec["update"] = json!({"settle": "3s"});
    s.remove("Service", "web");
    s.service("web", spec);
    s.write();
    poll(DEADLINE, "a --prev (gate in progress)", || {
        ctr(&format!("{}--prev", s.cname("web")))
    });
    d.kill9();
    let left = copies(&s, "web");
    println!("killed obsd during the gate; containers then: {left:?}");
    assert!(left.iter().any(|n| n.ends_with("--prev")), "{left:?}");

    let d2 = s.spawn_daemon();
    poll(DEADLINE, "in sync with v2 after the restart", || {
        let (code, st) = s.status_json();
        (code == 0
            && row(&st, "web").is_some()
            && copies(&s, "web").len() == 1
            && serves(&s, "web").as_deref() == Some("v2"))
        .then_some(())
    });
    assert_eq!(copies(&s, "web"), [s.cname("web")]);
    drop(d2);
}

// ---------------------------------------------------------------------- preflight

/// A web server whose content lives in a config directory, checked by `configCheck`.
fn checked_web() -> Value {
    service(json!({
        "command": ["sh", "-c", "exec httpd -f -p 8080 -h /etc/web"],
        "configFiles": [{"source": "config/web", "target": "/etc/web", "onChange": "restart"}],
        "configCheck": {
            "command": ["sh", "-c",
                "grep -q '^ok' /etc/web/index.html || { echo 'checking /etc/web/index.html' >&2; echo 'Error: /etc/web/index.html:1: must start with ok' >&2; exit 3; }"],
            "timeout": "10s",
        },
    }))
}

#[test]
fn failing_preflight_touches_nothing_and_says_why() {
    let mut s = Stack::new("preflight");
    s.file("config/web/index.html", "ok v1\n");
    s.service("web", checked_web());
    s.write();
    let d = s.spawn_daemon();
    let v1 = poll(DEADLINE, "v1 serving", || {
        (serves(&s, "web").as_deref() == Some("ok v1")).then(|| s.must("web"))
    });
    assert_eq!(
        d.metric("obsd_preflight_failures_total{service=\"web\"}"),
        Some(0.0)
    );

    // An invalid edit: the check fails, the container is not restarted.
    s.file("config/web/index.html", "bad v2\n");
    let r = wait_drift(&s, "web", "preflight_failed");
    let msg = r["message"].as_str().unwrap_or_default();
    assert!(msg.contains("configCheck exited with code 3"), "{msg}");
    assert!(
        msg.ends_with("last log line: Error: /etc/web/index.html:1: must start with ok"),
        "{msg}"
    );
    assert!(
        r["log_tail"]
            .as_str()
            .is_some_and(|l| l.contains("checking /etc/web/index.html")),
        "{r}"
    );
    let now = s.must("web");
    assert_eq!(now.id, v1.id);
    assert_eq!(now.started_at, v1.started_at, "the container was restarted");
    assert_eq!(
        d.metric("obsd_preflight_failures_total{service=\"web\"}"),
        Some(1.0)
    );
    assert_eq!(
        copies(&s, "web"),
        [s.cname("web")],
        "the check container is gone"
    );
    // `obsctl diff` says the same, from the state directory.
    // Its exit code stays "nothing to do": nothing will be done until the file changes.
    let diff = s.diff();
    assert_eq!(diff.code, 0, "{}{}", diff.stdout, diff.stderr);
    assert!(diff.stdout.contains("preflight_failed"), "{}", diff.stdout);
    // Held: later passes do not run the check again.
    // SAFETY: signalling the obsd child this test spawned.
    unsafe {
        libc::kill(d.pid() as libc::pid_t, libc::SIGHUP);
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        d.metric("obsd_preflight_failures_total{service=\"web\"}"),
        Some(1.0)
    );
    assert_eq!(s.must("web").started_at, v1.started_at);

    // Fixed: checked, then restarted.
    s.file("config/web/index.html", "ok v3\n");
    poll(DEADLINE, "in sync after the fix", || {
        let (code, st) = s.status_json();
        (code == 0 && drift(&st, "web").is_empty()).then_some(())
    });
    let now = s.must("web");
    assert_ne!(now.started_at, v1.started_at, "not restarted after the fix");
    assert_eq!(serves(&s, "web").as_deref(), Some("ok v3"));
    assert_eq!(copies(&s, "web"), [s.cname("web")]);
}

// ---------------------------------------------------------------------- real Caddy

const CADDYFILE_V1: &str =
    "{\n\tauto_https off\n}\n\n:8080 {\n\trespond /gen \"1\"\n\treverse_proxy backend:8080\n}\n";
const CADDYFILE_V2: &str =
    "{\n\tauto_https off\n}\n\n:8080 {\n\trespond /gen \"2\"\n\treverse_proxy backend:8080\n}\n";
/// A typo Caddy refuses (`reverse_proxi`).
const CADDYFILE_BAD: &str = "{\n\tauto_https off\n}\n\n:8080 {\n\treverse_proxi backend:8080\n}\n";

/// Caddy in front of a busybox backend; the Caddyfile is checked with `caddy validate`
/// and a change applied with `on_change` (`restart` or an exec reload).
fn caddy_stack(tag: &str) -> Stack {
    caddy_stack_with(tag, json!("restart"))
}

fn caddy_reload() -> Value {
    json!({"exec": ["/usr/bin/caddy", "reload", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]})
}

fn caddy_stack_with(tag: &str, on_change: Value) -> Stack {
    rollout_support::ensure_caddy_image();
    let mut s = Stack::new(tag);
    s.file("config/caddy/Caddyfile", CADDYFILE_V1);
    s.service("backend", web("hello"));
    s.service(
        "caddy",
        json!({
            "image": rollout_support::CADDY_IMAGE,
            "command": ["/usr/bin/caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"],
            "stopGracePeriod": "2s",
            "configFiles": [{"source": "config/caddy", "target": "/etc/caddy", "onChange": on_change}],
            "configCheck": {"command": ["/usr/bin/caddy", "validate", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]},
            "dependsOn": [{"service": "backend"}],
        }),
    );
    s.write();
    s
}

#[test]
fn caddy_invalid_caddyfile_is_refused_by_preflight_and_caddy_keeps_serving() {
    let s = caddy_stack("caddypf");
    let _d = s.spawn_daemon();
    let caddy_addr = poll(DEADLINE, "Caddy proxying to the backend", || {
        let ip = ip_of(&s.cname("caddy"))?;
        let addr = format!("{ip}:8080");
        (rollout_support::get(&addr, "/")?.trim() == "hello").then_some(addr)
    });
    let before = s.must("caddy");
    let load = rollout_support::Load::start(caddy_addr.clone(), "/".into());

    s.file("config/caddy/Caddyfile", CADDYFILE_BAD);
    let r = wait_drift(&s, "caddy", "preflight_failed");
    let tail = r["log_tail"].as_str().unwrap_or_default();
    println!("caddy validate said: {tail}");
    assert!(
        tail.contains("reverse_proxi"),
        "the error names the directive: {r}"
    );
    assert!(
        r["message"]
            .as_str()
            .unwrap_or_default()
            .contains("configCheck exited with code 1"),
        "{r}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let (ok, failed) = load.stop();
    println!("through Caddy while the bad Caddyfile was refused: {ok} ok, {failed} failed");
    let now = s.must("caddy");
    assert_eq!(now.id, before.id);
    assert_eq!(now.started_at, before.started_at, "Caddy was restarted");
    assert_eq!(
        failed, 0,
        "requests failed while nothing should have been touched"
    );
    assert!(ok > 0);

    // The fix is checked and applied.
    let load = rollout_support::Load::start(caddy_addr, "/".into());
    s.file("config/caddy/Caddyfile", CADDYFILE_V2);
    poll(DEADLINE, "Caddy restarted with the fixed Caddyfile", || {
        let (code, st) = s.status_json();
        (code == 0
            && drift(&st, "caddy").is_empty()
            && s.must("caddy").started_at != before.started_at)
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failed) = load.stop();
    println!("through Caddy during the restart with the fixed Caddyfile (onChange: restart): {ok} ok, {failed} failed");
    let ip = ip_of(&s.cname("caddy")).unwrap();
    assert_eq!(
        rollout_support::get(&format!("{ip}:8080"), "/gen").as_deref(),
        Some("2")
    );
}

#[test]
fn caddy_exec_reload_under_load_fails_no_request() {
    let s = caddy_stack_with("caddyrl", caddy_reload());
    let _d = s.spawn_daemon();
    let addr = poll(DEADLINE, "Caddy proxying to the backend", || {
        let ip = ip_of(&s.cname("caddy"))?;
        let addr = format!("{ip}:8080");
        (rollout_support::get(&addr, "/")?.trim() == "hello").then_some(addr)
    });
    let before = s.must("caddy");
    let load = rollout_support::Load::start(addr.clone(), "/".into());
    std::thread::sleep(Duration::from_millis(300));
    s.file("config/caddy/Caddyfile", CADDYFILE_V2);
    poll(DEADLINE, "the new Caddyfile in effect", || {
        (rollout_support::get(&addr, "/gen").as_deref() == Some("2")).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let (ok, failed) = load.stop();
    println!("through Caddy during an exec reload: {ok} ok, {failed} failed");
    let now = s.must("caddy");
    assert_eq!(
        now.started_at, before.started_at,
        "Caddy was restarted, not reloaded"
    );
    assert_eq!(failed, 0, "requests failed during the reload");
    assert!(ok > 0);
    let st = poll(DEADLINE, "in sync", || {
        let (code, st) = s.status_json();
        (code == 0).then_some(st)
    });
    let last = row(&st, "caddy").unwrap()["last_action"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        last.contains("reload") && !last.contains("reload_failed"),
        "{last}"
    );
}

#[test]
fn failed_exec_reload_falls_back_to_restart_and_says_so() {
    let mut s = Stack::new("reloadfb");
    s.file("config/app/app.conf", "a\n");
    s.service(
        "app",
        service(json!({
            "configFiles": [{"source": "config/app", "target": "/etc/app",
                             "onChange": {"exec": ["sh", "-c", "echo cannot reload >&2; exit 4"]}}],
        })),
    );
    s.write();
    let d = s.spawn_daemon();
    let before = poll(DEADLINE, "running", || s.ctr("app").filter(|c| c.running));
    s.file("config/app/app.conf", "b\n");
    let st = poll(DEADLINE, "restarted after the failed reload", || {
        let (code, st) = s.status_json();
        let c = s.ctr("app")?;
        let acted = row(&st, "app")?["last_action"]
            .as_str()?
            .starts_with("reload");
        (code == 0 && acted && c.running && c.started_at != before.started_at).then_some(st)
    });
    let last = row(&st, "app").unwrap()["last_action"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(last, "reload+reload_failed+restart");
    assert_eq!(
        s.must("app").id,
        before.id,
        "restarted in place, not replaced"
    );
    assert_eq!(
        d.metric("obsd_actions_total{action=\"reload\",result=\"error\"}"),
        Some(1.0)
    );
    assert!(
        d.log().contains("reload failed; restarting"),
        "the log says so"
    );
}

// ---------------------------------------------------------------------- real Prometheus

const PROM_YML: &str =
    "global: {evaluation_interval: 1s}\nrule_files: [/etc/prometheus/rules.yml]\n";

fn rules(record: &str, expr: &str) -> String {
    format!("groups:\n  - name: g\n    rules:\n      - record: {record}\n        expr: {expr}\n")
}

#[test]
fn prometheus_rules_edit_is_reloaded_over_http_and_a_broken_one_is_refused() {
    rollout_support::ensure_prometheus_image();
    let mut s = Stack::new("promrl");
    s.file("config/prometheus/prometheus.yml", PROM_YML);
    s.file(
        "config/prometheus/rules.yml",
        &rules("job:one:v1", "vector(1)"),
    );
    s.service(
        "prometheus",
        json!({
            "image": rollout_support::PROMETHEUS_IMAGE,
            "command": ["/usr/bin/prometheus", "--config.file=/etc/prometheus/prometheus.yml",
                        "--storage.tsdb.path=/tmp/data", "--web.enable-lifecycle",
                        "--web.listen-address=:9090"],
            "stopGracePeriod": "2s",
            "configFiles": [{"source": "config/prometheus", "target": "/etc/prometheus",
                             "onChange": {"http": {"method": "POST", "port": 9090, "path": "/-/reload"}}}],
            "configCheck": {"command": ["/usr/bin/promtool", "check", "config", "/etc/prometheus/prometheus.yml"]},
        }),
    );
    s.write();
    let _d = s.spawn_daemon();
    let rules_api = |s: &Stack| {
        let ip = ip_of(&s.cname("prometheus"))?;
        rollout_support::get(&format!("{ip}:9090"), "/api/v1/rules")
    };
    poll(DEADLINE, "Prometheus serving rule v1", || {
        rules_api(&s).filter(|b| b.contains("job:one:v1"))
    });
    let before = s.must("prometheus");

    s.file(
        "config/prometheus/rules.yml",
        &rules("job:one:v2", "vector(2)"),
    );
    poll(DEADLINE, "rule v2 loaded by the HTTP reload", || {
        rules_api(&s).filter(|b| b.contains("job:one:v2") && !b.contains("job:one:v1"))
    });
    let st = poll(DEADLINE, "in sync after the reload", || {
        let (code, st) = s.status_json();
        let last = row(&st, "prometheus")?["last_action"].as_str()?.to_string();
        (code == 0 && last.starts_with("preflight+reload")).then_some(last)
    });
    assert!(!st.contains("reload_failed"), "{st}");
    assert_eq!(
        s.must("prometheus").started_at,
        before.started_at,
        "restarted, not reloaded"
    );

    // A rule promtool refuses: nothing is sent to Prometheus.
    s.file("config/prometheus/rules.yml", &rules("job:one:v3", "sum(("));
    let tail = wait_drift(&s, "prometheus", "preflight_failed")["log_tail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!("promtool said: {tail}");
    assert!(
        tail.contains("rules.yml"),
        "the output names the file: {tail}"
    );
    let b = rules_api(&s).expect("still serving");
    assert!(b.contains("job:one:v2"), "{b}");
    assert_eq!(s.must("prometheus").started_at, before.started_at);
}

// ---------------------------------------------------------------------- real Alertmanager

/// The shipped Alertmanager Service as the desired state declares it: its `onChange`,
/// its `configCheck` and its container arguments.
fn shipped_alertmanager() -> obsd::desired::model::ServiceSpec {
    let opts = obsd::desired::load::LoadOptions {
        process_env: Some(Default::default()),
        ..Default::default()
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("desired-state");
    let mut d = obsd::desired::load::load_dir(&dir, &opts).unwrap_or_else(|e| panic!("{e}"));
    d.services
        .remove("alertmanager")
        .expect("shipped alertmanager")
        .spec
}

/// The shipped config, check and `onChange` of Alertmanager against the real binaries
/// (Debian's `prometheus-alertmanager` and `amtool`): the shipped `alertmanager.yml`
/// passes the shipped check and starts; an edit is checked and applied by the shipped
/// signal without a restart; an edit `amtool` refuses is never signalled, and the
/// running Alertmanager keeps the last good config.
#[test]
fn shipped_alertmanager_config_check_and_reload_against_the_real_binaries() {
    rollout_support::ensure_alertmanager_image();
    let shipped = shipped_alertmanager();
    let check = shipped.config_check.as_ref().expect("shipped configCheck");
    let cfg = &shipped.config_files[0];
    let shipped_yml = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("desired-state")
            .join(&cfg.source)
            .join("alertmanager.yml"),
    )
    .expect("shipped alertmanager.yml");
    assert!(
        shipped_yml.contains("repeat_interval: 4h"),
        "the edit below needs it"
    );
    // The shipped image is Alertmanager v0.27; Debian's is 0.25, which predates the
    // webhook's `url_file` (its amtool refuses the field): the one line it cannot read
    // becomes a plain URL, everything else is the shipped file.
    let deadman = "url_file: /etc/alertmanager/secrets/deadman_url";
    assert!(
        shipped_yml.contains(deadman),
        "shipped config changed: adapt"
    );
    let shipped_yml = shipped_yml.replacen(deadman, "url: http://127.0.0.1:9/deadman", 1);

    let mut s = Stack::new("amreal");
    s.file("config/alertmanager/alertmanager.yml", &shipped_yml);
    // The image here has no entrypoint: the binary, then the shipped arguments.
    let mut command = vec!["/usr/bin/prometheus-alertmanager".to_string()];
    command.extend(shipped.command.clone().unwrap_or_default());
    command.push("--web.listen-address=:9093".into());
    s.service(
        "alertmanager",
        json!({
            "image": rollout_support::ALERTMANAGER_IMAGE,
            "command": command,
            "stopGracePeriod": "2s",
            "configFiles": [{"source": "config/alertmanager", "target": cfg.target,
                             "onChange": serde_json::to_value(&cfg.on_change).unwrap()}],
            "configCheck": serde_json::to_value(check).unwrap(),
            "volumes": [{"volume": "amdata", "target": "/alertmanager"}],
        }),
    );
    s.volume("amdata");
    s.write();
    let _d = s.spawn_daemon();
    let config = |s: &Stack| {
        let ip = ip_of(&s.cname("alertmanager"))?;
        let body = rollout_support::get(&format!("{ip}:9093"), "/api/v2/status")?;
        let v: Value = serde_json::from_str(&body).ok()?;
        v["config"]["original"].as_str().map(str::to_string)
    };
    poll(DEADLINE, "Alertmanager serving the shipped config", || {
        config(&s).filter(|c| c.contains("repeat_interval: 4h"))
    });
    poll(DEADLINE, "in sync", || {
        (s.status_json().0 == 0).then_some(())
    });
    let before = s.must("alertmanager");

    s.file(
        "config/alertmanager/alertmanager.yml",
        &shipped_yml.replacen("repeat_interval: 4h", "repeat_interval: 3h", 1),
    );
    poll(DEADLINE, "the edit applied by the shipped onChange", || {
        config(&s).filter(|c| c.contains("repeat_interval: 3h"))
    });
    let last = poll(DEADLINE, "in sync after the edit", || {
        let (code, st) = s.status_json();
        let last = row(&st, "alertmanager")?["last_action"]
            .as_str()?
            .to_string();
        (code == 0 && last.starts_with("preflight+")).then_some(last)
    });
    println!("applied with {last}");
    assert_eq!(
        s.must("alertmanager").started_at,
        before.started_at,
        "restarted, not reloaded"
    );

    // A route to a receiver that does not exist: amtool refuses it.
    s.file(
        "config/alertmanager/alertmanager.yml",
        &shipped_yml.replacen("receiver: slack", "receiver: nowhere", 1),
    );
    let tail = wait_drift(&s, "alertmanager", "preflight_failed")["log_tail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!("amtool said: {tail}");
    assert!(
        tail.contains("nowhere"),
        "the output names the receiver: {tail}"
    );
    let now = config(&s).expect("still serving");
    assert!(now.contains("repeat_interval: 3h") && !now.contains("nowhere"));
    assert_eq!(s.must("alertmanager").started_at, before.started_at);
}

// ---------------------------------------------------------------------- crash loop

#[test]
fn crash_loop_is_stopped_and_held_until_retried() {
    let mut s = Stack::new("crashloop");
    // Dies one second after every start; the engine keeps restarting it (unless-stopped).
    s.service(
        "app",
        service(json!({"command": ["sh", "-c", "echo 'fatal: cannot open /data/db' >&2; sleep 1; exit 2"]})),
    );
    s.write();
    let d = s.spawn_daemon();
    let st = poll(
        Duration::from_secs(120),
        "crash_loop in obsctl status",
        || {
            let (_, st) = s.status_json();
            (drift(&st, "app").contains(&"crash_loop".to_string())
                && row(&st, "app")?["message"]
                    .as_str()?
                    .starts_with("held after a crash loop"))
            .then_some(st)
        },
    );
    let r = row(&st, "app").unwrap();
    assert!(
        r["log_tail"]
            .as_str()
            .is_some_and(|l| l.contains("cannot open /data/db")),
        "{r}"
    );
    let held = s.must("app");
    assert!(!held.running, "held containers are stopped");
    assert!(held.restart_count >= 5, "{}", held.restart_count);
    assert_eq!(
        d.metric("obsd_resource_drift{kind=\"Service\",name=\"app\",reason=\"crash_loop\"}"),
        Some(1.0)
    );
    // Held: later passes do not start it.
    // SAFETY: signalling the obsd child this test spawned.
    unsafe {
        libc::kill(d.pid() as libc::pid_t, libc::SIGHUP);
    }
    std::thread::sleep(Duration::from_secs(3));
    let still = s.must("app");
    assert!(
        !still.running && still.started_at == held.started_at,
        "started again"
    );

    // An operator retries: started again (and, still broken, held again later).
    let r = s.obsctl(&["rollout", "retry", "app"]).expect(0, "retry");
    assert!(
        r.stdout.contains("held spec is tried again"),
        "{}",
        r.stdout
    );
    poll(DEADLINE, "started again after the retry", || {
        let c = s.ctr("app")?;
        (c.started_at != held.started_at).then_some(())
    });

    // A new spec replaces it; no longer held.
    s.svc("app")["command"] = json!(["sh", "-c", LOOP]);
    s.write();
    poll(
        Duration::from_secs(90),
        "in sync with the fixed spec",
        || {
            let (code, st) = s.status_json();
            (code == 0 && drift(&st, "app").is_empty() && s.ctr("app")?.running).then_some(())
        },
    );
}

// ---------------------------------------------------------------------- obsctl apply

#[test]
fn apply_reports_a_rollback_and_does_not_retry_it() {
    let mut s = Stack::new("applyrb");
    s.service("web", web("v1"));
    s.write();
    s.apply().expect(0, "first apply");
    let v1 = s.must("web");
    s.remove("Service", "web");
    s.service("web", broken("v2"));
    s.write();
    let r = s.apply().expect(1, "apply of a failing replacement");
    assert!(
        r.stderr.contains("web: rolled back: the new container"),
        "{}",
        r.stderr
    );
    assert_eq!(s.must("web").id, v1.id);
    assert!(s.must("web").running);
    // Again: held, so nothing is tried, and apply says why at once.
    let t0 = Instant::now();
    let r = s.apply().expect(1, "apply of a held spec");
    assert!(
        r.stderr.contains("not converged") && r.stderr.contains("rolled back"),
        "{}",
        r.stderr
    );
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "apply looped: {:?}",
        t0.elapsed()
    );
    assert_eq!(s.must("web").id, v1.id);
    assert_eq!(copies(&s, "web"), [s.cname("web")]);
}

// ---------------------------------------------------------------------- start-first

/// [`web`] that drains like a real server: on SIGTERM it keeps answering for 2 s,
/// then exits.
fn draining_web(body: &str, order: &str) -> Value {
    service(json!({
        "command": ["sh", "-c", format!(
            "mkdir -p /www && echo {body} > /www/index.html && httpd -f -p 8080 -h /www & \
             pid=$!; trap 'sleep 2; kill $pid; exit 0' TERM; wait $pid"
        )],
        "env": {"BODY": body},
        "stopGracePeriod": "5s",
        "update": {"order": order},
    }))
}

/// A client on the stack network: `GET /` to `web:8080` (the service's DNS name, as
/// every other service reaches it; resolved by the engine's DNS for each request)
/// every ~20 ms, one `OK`/`FAIL` line per request. (The static busybox's `wget`
/// crashes in its resolver; `nc` does not.)
fn load_client() -> Value {
    service(json!({
        "command": ["sh", "-c",
            "while true; do \
               if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 web 8080 | head -1 | grep -q ' 200 '; \
               then echo OK; else echo \"FAIL $(date +%T)\"; fi; usleep 20000; done"],
    }))
}

/// (ok, failed) requests the client has logged so far.
fn client_counts(s: &Stack) -> (usize, usize) {
    let out = std::process::Command::new("docker")
        .args(["logs", &s.cname("client")])
        .output()
        .expect("docker logs");
    let text = String::from_utf8_lossy(&out.stdout);
    let ok = text.lines().filter(|l| *l == "OK").count();
    let failed = text.lines().filter(|l| l.starts_with("FAIL")).count();
    for l in text.lines().filter(|l| l.starts_with("FAIL")) {
        println!("client: {l}");
    }
    (ok, failed)
}

/// One image/env change under load, in the given order: requests (ok, failed) from the
/// edit until the new body is served and one copy is left, plus 1 s.
fn change_under_load(s: &mut Stack, body: &str, order: &str) -> (usize, usize) {
    let (ok0, failed0) = client_counts(s);
    s.remove("Service", "web");
    s.service("web", draining_web(body, order));
    s.write();
    poll(DEADLINE, &format!("{body} served by one copy"), || {
        (serves(s, "web").as_deref() == Some(body) && copies(s, "web").len() == 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let (ok1, failed1) = client_counts(s);
    (ok1 - ok0, failed1 - failed0)
}

/// Start-first under load: the client never sees a failed request while the new
/// container starts beside the old one and takes over; the same change stop-first
/// (the default) is measured beside it.
#[test]
fn start_first_replace_under_load_fails_no_request() {
    let mut s = Stack::new("sfload");
    s.service("web", draining_web("v1", "start-first"));
    s.service("client", load_client());
    s.write();
    let _d = s.spawn_daemon();
    poll(DEADLINE, "v1 serving and the client answered", || {
        (serves(&s, "web").as_deref() == Some("v1") && client_counts(&s).0 > 5).then_some(())
    });
    let v1 = s.must("web");
    println!("v1 at {:?}", ip_of(&s.cname("web")));
    let (ok, failed) = change_under_load(&mut s, "v2", "start-first");
    println!("v2 at {:?}", ip_of(&s.cname("web")));
    println!("start-first env change under load: {ok} ok, {failed} failed");
    assert_ne!(s.must("web").id, v1.id, "not replaced");
    assert!(ok > 0, "the client made no request during the rollout");
    // Not 0: while the engine takes the old container off the network (~70 ms here) its
    // DNS can still name the old address, and a request sent there in that window hangs
    // until nc's 2 s timeout (seen in 3 of 6 runs, never more than 1 request; the runs
    // with a failure also made half the requests). Stop-first loses the whole gap (2-5
    // requests, printed below).
    assert!(
        failed <= 1,
        "requests failed during a start-first rollout: {failed}"
    );
    let (ok, failed) = change_under_load(&mut s, "v3", "stop-first");
    println!("stop-first env change under load (for comparison): {ok} ok, {failed} failed");
    assert_eq!(copies(&s, "web"), [s.cname("web")]);
}

/// Start-first with a new container that dies: it is removed, and the old container —
/// same ID, same StartedAt, never stopped — serves on.
#[test]
fn start_first_failing_new_container_leaves_the_old_one_untouched() {
    let mut s = Stack::new("sffail");
    let mut good = web("v1");
    good["update"] = json!({"order": "start-first"});
    s.service("web", good);
    s.write();
    let d = s.spawn_daemon();
    let v1 = poll(DEADLINE, "v1 serving", || {
        (serves(&s, "web").as_deref() == Some("v1")).then(|| s.must("web"))
    });
    let mut bad = broken("v2");
    bad["update"] = json!({"order": "start-first"});
    s.remove("Service", "web");
    s.service("web", bad);
    s.write();
    let msg = wait_drift(&s, "web", "rolled_back")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(msg.contains("unknown directive"), "{msg}");
    let now = s.must("web");
    assert_eq!(now.id, v1.id, "the old container was replaced");
    assert_eq!(
        now.started_at, v1.started_at,
        "the old container was stopped or restarted"
    );
    assert!(now.running);
    assert_eq!(now.restart_count, 0);
    assert_eq!(serves(&s, "web").as_deref(), Some("v1"));
    assert_eq!(copies(&s, "web"), [s.cname("web")], "leftovers");
    assert_eq!(d.metric("obsd_rollbacks_total{service=\"web\"}"), Some(1.0));

    // `rollout undo` names the desired-state change to revert and changes nothing.
    let r = s
        .obsctl(&["rollout", "undo", "web"])
        .expect(0, "rollout undo");
    println!("{}", r.stdout);
    assert!(r.stdout.contains("never edits"), "{}", r.stdout);
    let body = r
        .stdout
        .lines()
        .find(|l| l.contains("BODY"))
        .unwrap_or_else(|| panic!("no env.BODY line: {}", r.stdout));
    assert!(body.contains("v1 <- v2"), "{body}");
    assert_eq!(s.must("web").id, v1.id, "undo touched the container");

    // A good v3 rolls out; undo now names the way back to v1, the revision before it,
    // from the masked spec the history keeps.
    let mut good = web("v3");
    good["update"] = json!({"order": "start-first"});
    s.remove("Service", "web");
    s.service("web", good);
    s.write();
    poll(DEADLINE, "v3 serving, in sync", || {
        let (code, _) = s.status_json();
        (code == 0 && serves(&s, "web").as_deref() == Some("v3")).then_some(())
    });
    let r = s
        .obsctl(&["rollout", "undo", "web", "-o", "json"])
        .expect(0, "rollout undo -o json");
    let plan: Value = serde_json::from_str(&r.stdout).expect("undo json");
    assert_eq!(plan["changed"], json!(false));
    let fields = plan["fields"].as_array().expect("fields");
    assert!(
        fields.contains(&json!(["env.BODY", "v1", "v3"])),
        "{}",
        r.stdout
    );
    let history = s
        .obsctl(&["rollout", "history", "web", "-o", "json"])
        .expect(0, "rollout history");
    let h: Value = serde_json::from_str(&history.stdout).expect("history json");
    let first = h[0]["spec_hash"].as_str().expect("spec hash").to_string();
    assert_eq!(plan["to"]["spec_hash"], json!(first), "{}", history.stdout);
    // `obsctl status` does not carry the specs.
    let (_, st) = s.status_json();
    assert!(row(&st, "web").unwrap()["rollouts"][0]
        .get("spec")
        .is_none());
    s.obsctl(&["rollout", "undo", "web", "--to", "ffffffffffff"])
        .expect(1, "undo to an unknown revision");
    assert_eq!(
        serves(&s, "web").as_deref(),
        Some("v3"),
        "undo changed something"
    );
}
