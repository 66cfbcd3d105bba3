//! The reconciler against the real Docker engine (issue 3, item 6).
//!
//! Every test has its own project (`obsdt-<pid>-<tag>`), desired-state directory and
//! state directory, so they run in parallel; the `Stack` guard removes every container,
//! volume and network of the project even when the test panics. Run one with
//! `cargo test --test reconciler NAME -- --nocapture` to see the measured numbers.

mod common;

use common::recording::{load, with_rig, Recording, WRITES};
use common::*;
use obsd::docker::engine::Engine;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Generous: the box is shared and has 2 cores. Measured times are printed.
const DEADLINE: Duration = Duration::from_secs(30);

fn has_label(c: &Ctr, key: &str, value: &str) -> bool {
    c.label(key) == Some(value)
}

/// Polls `obsctl status` until it exits 0 (everything in sync), returns the status.
fn wait_in_sync(s: &Stack, what: &str) -> Value {
    poll(DEADLINE, what, || {
        let (code, v) = s.status_json();
        (code == 0 && v["resources"].as_array().is_some_and(|r| !r.is_empty())).then_some(v)
    })
}

fn logs(name: &str) -> String {
    let out = docker(&["logs", name]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn exec_cat(name: &str, path: &str) -> String {
    docker_ok(&["exec", name, "cat", path])
}

// ---------------------------------------------------------------------- converge

#[test]
fn converge_from_empty() {
    let mut s = Stack::new("converge");
    s.volume("data")
        .service(
            "web",
            service(json!({
                "env": {"A": "1"},
                "volumes": [{"volume": "data", "target": "/data"}],
                "healthcheck": {"test": ["CMD", "true"], "interval": "1s"},
            })),
        )
        .service("worker", service(json!({})));
    s.write();

    let d = s.diff().expect(2, "obsctl diff on an empty engine");
    assert!(d.stdout.contains("+ service web"), "{}", d.stdout);
    assert!(d.stdout.contains("+ volume data"), "{}", d.stdout);
    assert!(s.owned().is_empty(), "diff must not create anything");

    let t0 = Instant::now();
    s.apply().expect(0, "obsctl apply from empty");
    println!("cold converge of 2 services: {:?}", t0.elapsed());

    let owned = s.owned();
    let names: Vec<&str> = owned.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, [s.cname("web"), s.cname("worker")]);
    for (c, svc) in owned.iter().zip(["web", "worker"]) {
        assert!(c.running, "{} is not running", c.name);
        assert!(has_label(c, STACK_LABEL, &s.project), "{c:?}");
        assert!(has_label(c, "obs.tlsstress.art/kind", "Service"), "{c:?}");
        assert!(has_label(c, "obs.tlsstress.art/name", svc), "{c:?}");
        let hash = c.label("obs.tlsstress.art/spec-hash").unwrap_or_default();
        assert!(
            hash.len() >= 16 && hash.chars().all(|ch| ch.is_ascii_hexdigit()),
            "spec-hash label {hash:?}"
        );
    }
    assert!(
        owned[0].env.iter().any(|e| e == "A=1"),
        "{:?}",
        owned[0].env
    );

    let vol = volume_labels(&s.dname("data")).expect("volume created");
    assert_eq!(vol.get(STACK_LABEL), Some(&json!(s.project)));
    assert_eq!(vol.get("obs.tlsstress.art/kind"), Some(&json!("Volume")));
    let net = network_labels(&s.dname("default")).expect("network created");
    assert_eq!(net.get(STACK_LABEL), Some(&json!(s.project)));
    assert_eq!(net.get("obs.tlsstress.art/kind"), Some(&json!("Network")));
    let web = inspect(&s.cname("web")).expect("web");
    assert!(
        web["Mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .any(|m| m["Name"] == json!(s.dname("data")) && m["Destination"] == "/data"),
        "volume not mounted: {}",
        web["Mounts"]
    );
    assert!(
        web["NetworkSettings"]["Networks"]
            .get(s.dname("default"))
            .is_some(),
        "not on the stack network"
    );

    let d = s.diff().expect(0, "obsctl diff after converging");
    assert!(d.stdout.contains("nothing to do"), "{}", d.stdout);
}

// ---------------------------------------------------------------------- steady state

#[test]
fn steady_state_makes_no_write_calls() {
    let mut s = Stack::new("steady");
    s.volume("data")
        .service(
            "web",
            service(json!({
                "env": {"A": "1"},
                "volumes": [{"volume": "data", "target": "/data"}],
                "configFiles": [{"source": "config/web.conf", "target": "/etc/web.conf", "onChange": "restart"}],
                "healthcheck": {"test": ["CMD", "true"], "interval": "1s"},
            })),
        )
        .service("worker", service(json!({"env": {"B": "2"}})));
    s.file("config/web.conf", "v1\n");
    s.write();

    let desired =
        obsd::desired::load::load_dir(&s.dir, &obsd::desired::load::LoadOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
    let key = obsd::state::host_key(&s.state_dir).expect("host key");
    let mut persisted = obsd::state::Persisted::load(&s.state_dir).expect("state");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let inner = Engine::connect()
            .expect("engine")
            .negotiate()
            .await
            .expect("negotiate");
        let rec = Recording::new(inner);

        // Converge (the recorder must see the writes, or it proves nothing below).
        let first = obsd::reconcile::pass(&rec, &desired, &key, &mut persisted, true, true)
            .await
            .expect("first pass");
        assert!(!first.failed(), "first pass failed: {:?}", first.report);
        let calls = rec.take();
        for w in [
            "create_network",
            "create_volume",
            "create_container",
            "start_container",
        ] {
            assert!(calls.contains(&w), "first pass made no {w}: {calls:?}");
        }
        let mut converged = false;
        for _ in 0..5 {
            let p = obsd::reconcile::pass(&rec, &desired, &key, &mut persisted, true, true)
                .await
                .expect("pass");
            rec.take();
            if p.plan.is_noop() && !p.failed() {
                converged = true;
                break;
            }
        }
        assert!(converged, "did not converge in 5 passes");

        // Steady state: one more full pass (with the daemon's resync pull flag).
        let p = obsd::reconcile::pass(&rec, &desired, &key, &mut persisted, true, true)
            .await
            .expect("steady pass");
        let calls = rec.take();
        println!("steady-state pass calls: {calls:?}");
        assert!(
            p.plan.is_noop(),
            "steady-state plan is not empty: {:?}",
            p.plan
        );
        assert!(p.plan.in_sync(), "not in sync: {:?}", p.plan.resources);
        let writes: Vec<&&str> = calls.iter().filter(|c| WRITES.contains(c)).collect();
        assert!(
            writes.is_empty(),
            "steady state made write calls: {writes:?}"
        );
        assert!(
            calls.contains(&"list_all_containers"),
            "the pass did not even look: {calls:?}"
        );
    });
}

// ---------------------------------------------------------------------- repair

#[test]
fn daemon_repairs_docker_rm_f() {
    let mut s = Stack::new("rmf");
    s.service("web", service(json!({})))
        .service("other", service(json!({})));
    s.write();
    let d = s.spawn_daemon();
    wait_in_sync(&s, "initial converge by obsd");
    let before = s.must("web");
    let other = s.must("other");

    docker_ok(&["rm", "-f", &s.cname("web")]);
    let t0 = Instant::now();
    let after = poll(
        DEADLINE,
        "web recreated and running after docker rm -f",
        || s.ctr("web").filter(|c| c.running && c.id != before.id),
    );
    let took = t0.elapsed();
    println!("repair after `docker rm -f`: {took:?} (target < 2 s, event driven)");
    assert!(has_label(&after, STACK_LABEL, &s.project));
    assert_eq!(s.owned().len(), 2, "exactly one container per service");
    assert_eq!(s.must("other").id, other.id, "other service untouched");
    assert!(
        took < Duration::from_secs(10),
        "repair took {took:?}: not event driven (resync is 5 min)"
    );
    drop(d);
}

#[test]
fn daemon_repairs_docker_stop() {
    let mut s = Stack::new("stop");
    s.service("web", service(json!({})));
    s.write();
    let mut d = s.spawn_daemon();
    wait_in_sync(&s, "initial converge by obsd");
    let before = s.must("web");

    docker_ok(&["stop", "-t", "5", &s.cname("web")]);
    let t0 = Instant::now();
    let after = poll(DEADLINE, "web running again after docker stop", || {
        s.ctr("web")
            .filter(|c| c.running && c.started_at != before.started_at)
    });
    let took = t0.elapsed();
    println!("repair after `docker stop`: {took:?} (target < 2 s, event driven)");
    assert_eq!(
        after.id, before.id,
        "a stopped container is started, not replaced"
    );
    assert_eq!(s.owned().len(), 1);
    assert!(
        took < Duration::from_secs(10),
        "repair took {took:?}: not event driven (resync is 5 min)"
    );

    // Graceful shutdown: exit 0, socket removed, the stack keeps running.
    let st = d.term(Duration::from_secs(15));
    assert!(
        st.success(),
        "obsd exited with {st} on SIGTERM:\n{}",
        d.log()
    );
    assert!(!s.socket().exists(), "socket left behind");
    let still = s.must("web");
    assert!(
        still.running && still.id == after.id,
        "SIGTERM of obsd touched web"
    );
}

fn reconciles(d: &Daemon) -> f64 {
    ["success", "error"]
        .iter()
        .filter_map(|r| d.metric(&format!("obsd_reconcile_total{{result=\"{r}\"}}")))
        .sum()
}

/// Steady state of the daemon itself: a healthchecked service produces exec events
/// every interval; they are not drift and must not each trigger a full pass (with 100
/// services that is a pass every few ms — the idle CPU target is < 1 % of a core).
#[test]
fn idle_daemon_does_not_reconcile_on_healthcheck_probes() {
    let mut s = Stack::new("idle");
    s.service(
        "web",
        service(json!({"healthcheck": {"test": ["CMD", "true"], "interval": "1s"}})),
    );
    s.write();
    let d = s.spawn_daemon();
    poll(DEADLINE, "web healthy", || {
        s.ctr("web")
            .filter(|c| c.health.as_deref() == Some("healthy"))
    });
    wait_in_sync(&s, "in sync");
    std::thread::sleep(Duration::from_millis(500));
    let before = reconciles(&d);
    // Measuring an absence needs a window: 4 healthcheck intervals.
    std::thread::sleep(Duration::from_secs(4));
    let passes = reconciles(&d) - before;
    println!("reconcile passes in 4 s of steady state: {passes}");
    assert!(
        passes <= 1.0,
        "{passes} passes in 4 s of steady state (healthcheck every 1 s)"
    );
}

// ---------------------------------------------------------------------- name conflict

#[test]
fn name_conflict_is_reported_and_left_alone() {
    let mut s = Stack::new("conflict");
    s.service("web", service(json!({})))
        .service("api", service(json!({})));
    s.write();
    // Somebody's own container holding the name, without obsd's labels.
    let id = docker_ok(&[
        "run",
        "-d",
        "--name",
        &s.cname("web"),
        IMAGE,
        "sh",
        "-c",
        LOOP,
    ]);
    let before = ctr(&id).expect("hand-made container");
    assert!(before.running);

    let d = s.diff().expect(2, "diff: api is missing");
    assert!(
        d.stdout.contains("web") && d.stdout.contains("name_conflict"),
        "diff does not report the conflict:\n{}",
        d.stdout
    );
    let a = s.apply().expect(1, "apply cannot converge web");
    assert!(
        a.stderr.contains("web") && a.stderr.contains("not managed by obsd"),
        "apply does not say why:\n{}",
        a.stderr
    );
    assert!(s.must("api").running, "the other service converges anyway");

    let daemon = s.spawn_daemon();
    let (code, st) = poll(DEADLINE, "obsctl status reports name_conflict", || {
        let (code, v) = s.status_json();
        status_drift(&v, "Service", "web")
            .iter()
            .any(|r| r == "name_conflict")
            .then_some((code, v))
    });
    assert_eq!(code, 2, "status exit code with a name conflict");
    assert!(
        status_row(&st, "Service", "web").expect("web row")["message"]
            .as_str()
            .is_some_and(|m| m.contains("not managed by obsd")),
        "{st}"
    );
    let table = s.obsctl(&["status"]).expect(2, "obsctl status (table)");
    assert!(table.stdout.contains("name_conflict"), "{}", table.stdout);

    // Give the daemon reasons to act, then check it did not touch the container.
    docker_ok(&["restart", "-t", "1", &s.cname("api")]);
    poll(DEADLINE, "api running again", || {
        s.ctr("api").filter(|c| c.running)
    });
    let (_, st) = s.status_json();
    assert!(status_drift(&st, "Service", "web").contains(&"name_conflict".to_string()));

    let after = ctr(&id).expect("the hand-made container still exists");
    assert_eq!(after.id, before.id);
    assert!(after.running, "the hand-made container was stopped");
    assert_eq!(after.started_at, before.started_at, "it was restarted");
    assert_eq!(after.restart_count, before.restart_count);
    assert_eq!(after.label(STACK_LABEL), None);
    assert_eq!(
        container_names_with_prefix(&s.cname("web")),
        [s.cname("web")],
        "no replacement or temp container for web"
    );
    drop(daemon);
}

/// Resolving a name conflict the way the status message says ("rename or remove it by
/// hand") must let obsd create the service promptly, not at the next full resync.
#[test]
fn name_conflict_removed_by_hand_converges_promptly() {
    let mut s = Stack::new("conflictfix");
    s.service("web", service(json!({})));
    s.write();
    let id = docker_ok(&[
        "run",
        "-d",
        "--name",
        &s.cname("web"),
        IMAGE,
        "sh",
        "-c",
        LOOP,
    ]);
    let d = s.spawn_daemon();
    poll(DEADLINE, "obsctl status reports name_conflict", || {
        let (_, v) = s.status_json();
        status_drift(&v, "Service", "web")
            .iter()
            .any(|r| r == "name_conflict")
            .then_some(())
    });

    docker_ok(&["rm", "-f", &id]);
    let t0 = Instant::now();
    let web = poll(
        Duration::from_secs(15),
        "obsd to create web after the conflicting container was removed",
        || s.ctr("web").filter(|c| c.running && c.id != id),
    );
    println!(
        "created after the conflict was removed by hand: {:?}",
        t0.elapsed()
    );
    assert!(has_label(&web, STACK_LABEL, &s.project));
    drop(d);
}

// ---------------------------------------------------------------------- env change

#[test]
fn env_change_recreates_only_that_service() {
    let mut s = Stack::new("env");
    s.service("a", service(json!({"env": {"X": "1"}})))
        .service("b", service(json!({"env": {"X": "1"}})));
    s.write();
    s.apply().expect(0, "first apply");
    let a0 = s.must("a");
    let b0 = s.must("b");

    s.svc("a")["env"]["X"] = json!("2");
    s.write();
    let d = s.diff().expect(2, "diff after env change");
    assert!(
        d.stdout.contains("~ service a: recreate (spec_changed)"),
        "{}",
        d.stdout
    );
    assert!(d.stdout.contains("env.X: 1 → 2"), "{}", d.stdout);
    assert!(
        !d.stdout.contains("service b"),
        "b must not change:\n{}",
        d.stdout
    );

    s.apply().expect(0, "apply env change");
    let a1 = s.must("a");
    let b1 = s.must("b");
    assert_ne!(a1.id, a0.id, "a was not recreated");
    assert!(a1.running);
    assert!(a1.env.iter().any(|e| e == "X=2"), "{:?}", a1.env);
    assert_eq!(b1.id, b0.id, "b was recreated");
    assert_eq!(b1.started_at, b0.started_at, "b was restarted");
    let names: Vec<String> = s.owned().into_iter().map(|c| c.name).collect();
    assert_eq!(names, [s.cname("a"), s.cname("b")], "no leftovers");
    s.diff().expect(0, "diff after the change");
}

/// Removes a test's own image tag, also when the test panics.
struct TagGuard(String);

impl Drop for TagGuard {
    fn drop(&mut self) {
        let _ = docker(&["rmi", "-f", &self.0]);
    }
}

fn image_id(reference: &str) -> String {
    docker_ok(&["image", "inspect", "-f", "{{.Id}}", reference])
}

/// The tag now resolves to another image ID: `image_changed`, and the container is
/// recreated on the new image; the other service is left alone.
#[test]
fn moved_tag_is_image_changed() {
    // Declared before the stack, so dropped after its containers are gone (an image
    // still in use would only be untagged and left dangling).
    let mut guard = TagGuard(String::new());
    let mut s = Stack::new("imgmove");
    let tag = format!("obsd-test/busybox:{}", s.project);
    guard.0 = tag.clone();
    docker_ok(&["tag", IMAGE, &tag]);
    s.service("web", service(json!({"image": tag})))
        .service("other", service(json!({})));
    s.write();
    s.apply().expect(0, "first apply");
    let web = s.must("web");
    let other = s.must("other");

    // Move the tag to a new image (same content plus a label: another ID).
    let ctx = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {IMAGE}\nLABEL obsd-test.rev={}\n", s.project),
    )
    .expect("Dockerfile");
    docker_ok(&["build", "-q", "-t", &tag, &ctx.path().to_string_lossy()]);
    let new_id = image_id(&tag);
    assert_ne!(new_id, image_id(IMAGE));

    let d = s.diff().expect(2, "diff after the tag moved");
    assert!(
        d.stdout.contains("~ service web: recreate (image_changed)"),
        "{}",
        d.stdout
    );
    assert!(!d.stdout.contains("service other"), "{}", d.stdout);
    s.apply().expect(0, "apply after the tag moved");
    let web2 = s.must("web");
    assert_ne!(web2.id, web.id, "not recreated");
    let running_image = inspect(&s.cname("web")).expect("web")["Image"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(running_image, new_id, "recreated on the old image");
    assert_eq!(s.must("other").id, other.id);
    s.diff().expect(0, "diff after recreating");
}

// ---------------------------------------------------------------------- config files

/// Where the test's config for `svc` lives: a file, or a file in a directory for the
/// directory-mounted services.
fn conf_path(svc: &str) -> String {
    match svc {
        "sig" | "non" | "dsig" => format!("config/{svc}/app.conf"),
        _ => format!("config/{svc}.conf"),
    }
}

fn conf_target(svc: &str) -> &'static str {
    match svc {
        "sig" | "non" | "dsig" => "/etc/app/app.conf",
        _ => "/etc/app.conf",
    }
}

#[test]
fn config_change_follows_on_change() {
    const HUP_LOOP: &str =
        "trap 'exit 0' TERM; trap 'echo got-SIGHUP' HUP; while true; do sleep 1; done";
    let mut s = Stack::new("config");
    // recreate/restart mount a single file; signal/none mount a directory (a file
    // mount pins its inode, so obsd restarts instead of signalling for those).
    for (svc, on_change) in [
        ("rec", json!("recreate")),
        ("rst", json!("restart")),
        ("sig", json!({"signal": "SIGHUP"})),
        ("non", json!("none")),
    ] {
        s.file(&conf_path(svc), &format!("{svc} v1\n"));
        let (source, target) = if matches!(svc, "sig" | "non") {
            (format!("config/{svc}"), "/etc/app")
        } else {
            (format!("config/{svc}.conf"), "/etc/app.conf")
        };
        s.service(
            svc,
            service(json!({
                "command": ["sh", "-c", HUP_LOOP],
                "configFiles": [{"source": source, "target": target, "onChange": on_change}],
            })),
        );
    }
    s.write();
    s.apply().expect(0, "first apply");
    let before: BTreeMap<&str, Ctr> = ["rec", "rst", "sig", "non"]
        .into_iter()
        .map(|n| (n, s.must(n)))
        .collect();
    for n in ["rec", "rst", "sig", "non"] {
        assert_eq!(exec_cat(&s.cname(n), conf_target(n)), format!("{n} v1"));
    }

    for n in ["rec", "rst", "sig", "non"] {
        s.file(&conf_path(n), &format!("{n} v2\n"));
    }
    let d = s.diff().expect(2, "diff after config change");
    for (n, step) in [
        ("rec", "recreate"),
        ("rst", "restart"),
        ("sig", "signal"),
        ("non", "record config"),
    ] {
        assert!(
            d.stdout
                .contains(&format!("~ service {n}: {step} (config_changed)")),
            "{n}: want `{step}`:\n{}",
            d.stdout
        );
    }
    s.apply().expect(0, "apply config change");

    // recreate → new container with the new content.
    let rec = s.must("rec");
    assert_ne!(rec.id, before["rec"].id, "recreate: same container");
    assert!(rec.running);
    assert_eq!(exec_cat(&s.cname("rec"), "/etc/app.conf"), "rec v2");

    // restart → same container, restarted.
    let rst = s.must("rst");
    assert_eq!(rst.id, before["rst"].id, "restart: container was replaced");
    assert_ne!(
        rst.started_at, before["rst"].started_at,
        "restart: not restarted"
    );
    assert!(rst.running);
    assert_eq!(exec_cat(&s.cname("rst"), "/etc/app.conf"), "rst v2");

    // signal → same container, not restarted, the process got SIGHUP.
    let sig = s.must("sig");
    assert_eq!(sig.id, before["sig"].id, "signal: container was replaced");
    assert_eq!(
        sig.started_at, before["sig"].started_at,
        "signal: restarted"
    );
    assert!(sig.running, "SIGHUP killed the process");
    poll(
        Duration::from_secs(10),
        "sig's process to log got-SIGHUP",
        || logs(&s.cname("sig")).contains("got-SIGHUP").then_some(()),
    );
    assert_eq!(exec_cat(&s.cname("sig"), conf_target("sig")), "sig v2");

    // none → nothing at all (and by now a HUP would have been logged).
    let non = s.must("non");
    assert_eq!(non.id, before["non"].id, "none: container was replaced");
    assert_eq!(non.started_at, before["non"].started_at, "none: restarted");
    assert!(
        !logs(&s.cname("non")).contains("got-SIGHUP"),
        "none: the process was signalled"
    );

    // The in-place changes are recorded: nothing left to do, and no second signal.
    let d = s.diff().expect(0, "diff after applying config changes");
    assert!(d.stdout.contains("nothing to do"), "{}", d.stdout);
    let names: Vec<String> = s.owned().into_iter().map(|c| c.name).collect();
    assert_eq!(names.len(), 4, "leftovers: {names:?}");
}

/// A config change whose `onChange` is a signal, on a container someone stopped: there
/// is no process to signal (the engine answers 409), so the change is recorded and the
/// start reads the new content — the pass does not fail on the signal.
#[test]
fn signal_on_change_for_a_stopped_container_starts_it() {
    const HUP_LOOP: &str =
        "trap 'exit 0' TERM; trap 'echo got-SIGHUP' HUP; while true; do sleep 1; done";
    let mut s = Stack::new("sigstop");
    s.file("config/sig/app.conf", "sig v1\n");
    s.service(
        "sig",
        service(json!({
            "command": ["sh", "-c", HUP_LOOP],
            "configFiles": [{"source": "config/sig", "target": "/etc/app", "onChange": {"signal": "SIGHUP"}}],
        })),
    );
    s.write();
    s.apply().expect(0, "first apply");
    let before = s.must("sig");
    docker_ok(&["stop", "-t", "1", &s.cname("sig")]);

    s.file("config/sig/app.conf", "sig v2\n");
    let d = s.diff().expect(2, "diff: stopped and config changed");
    assert!(
        d.stdout
            .contains("~ service sig: start (stopped,config_changed)"),
        "{}",
        d.stdout
    );
    s.apply().expect(0, "apply to a stopped container");
    let now = s.must("sig");
    assert_eq!(now.id, before.id, "the container was replaced");
    assert!(now.running, "not started");
    assert_eq!(exec_cat(&s.cname("sig"), "/etc/app/app.conf"), "sig v2");
    assert!(!logs(&s.cname("sig")).contains("got-SIGHUP"));
    s.diff().expect(0, "nothing left to do");
}

/// The daemon notices a config file change by itself (recursive, debounced watch) and
/// applies its `onChange` (restart) without touching the other service.
#[test]
fn daemon_applies_config_change_by_itself() {
    let mut s = Stack::new("cfgd");
    s.file("config/web.conf", "v1\n");
    s.service(
        "web",
        service(json!({
            "configFiles": [{"source": "config/web.conf", "target": "/etc/web.conf", "onChange": "restart"}],
        })),
    )
    .service("other", service(json!({})));
    s.write();
    let d = s.spawn_daemon();
    wait_in_sync(&s, "initial converge by obsd");
    let web = s.must("web");
    let other = s.must("other");

    s.file("config/web.conf", "v2\n");
    let t0 = Instant::now();
    let after = poll(DEADLINE, "web restarted after its config changed", || {
        s.ctr("web")
            .filter(|c| c.running && c.started_at != web.started_at)
    });
    println!("config change applied by obsd in {:?}", t0.elapsed());
    assert_eq!(after.id, web.id, "restart, not recreate");
    assert_eq!(exec_cat(&s.cname("web"), "/etc/web.conf"), "v2");
    wait_in_sync(&s, "in sync after the config change");
    let o = s.must("other");
    assert_eq!((o.id, o.started_at), (other.id, other.started_at));
    drop(d);
}

/// Most editors, `sed -i`, `git checkout` and config management save a file by writing
/// a new one and renaming it over the old. A single-file bind mount keeps showing the
/// old inode, so obsd restarts a file-mounted service even when it asks for a signal;
/// a directory mount sees the rename and is signalled.
#[test]
fn config_change_saved_by_rename_reaches_the_container() {
    const HUP_LOOP: &str =
        "trap 'exit 0' TERM; trap 'echo got-SIGHUP' HUP; while true; do sleep 1; done";
    let mut s = Stack::new("cfgrename");
    // A single-file mount asking for a signal (obsd restarts it instead), and a
    // directory mount that really is signalled.
    s.file("config/fsig.conf", "fsig v1\n");
    s.service(
        "fsig",
        service(json!({
            "command": ["sh", "-c", HUP_LOOP],
            "configFiles": [{"source": "config/fsig.conf", "target": "/etc/app.conf", "onChange": {"signal": "SIGHUP"}}],
        })),
    );
    s.file(&conf_path("dsig"), "dsig v1\n");
    s.service(
        "dsig",
        service(json!({
            "command": ["sh", "-c", HUP_LOOP],
            "configFiles": [{"source": "config/dsig", "target": "/etc/app", "onChange": {"signal": "SIGHUP"}}],
        })),
    );
    s.write();
    s.apply().expect(0, "first apply");
    let fsig = s.must("fsig");
    let dsig = s.must("dsig");
    for (svc, rel) in [
        ("fsig", "config/fsig.conf".to_string()),
        ("dsig", conf_path("dsig")),
    ] {
        // Save the way an editor does: new file, rename over the old.
        let p = s.dir.join(&rel);
        let tmp = p.with_extension("swp");
        std::fs::write(&tmp, format!("{svc} v2\n")).expect("write");
        std::fs::rename(&tmp, &p).expect("rename");
    }
    s.apply().expect(0, "apply after the rename-save");
    // The file mount was restarted (same container), so it sees the new inode.
    let fsig2 = s.must("fsig");
    assert_eq!(fsig2.id, fsig.id);
    assert_ne!(fsig2.started_at, fsig.started_at, "fsig: not restarted");
    assert_eq!(exec_cat(&s.cname("fsig"), "/etc/app.conf"), "fsig v2");
    // The directory mount sees the renamed file and got its signal, no restart.
    let dsig2 = s.must("dsig");
    assert_eq!(dsig2.started_at, dsig.started_at, "dsig: restarted");
    poll(
        Duration::from_secs(10),
        "dsig's process to log got-SIGHUP",
        || logs(&s.cname("dsig")).contains("got-SIGHUP").then_some(()),
    );
    assert_eq!(exec_cat(&s.cname("dsig"), conf_target("dsig")), "dsig v2");
}

// ---------------------------------------------------------------------- invalid edit

#[test]
fn invalid_edit_keeps_containers() {
    let mut s = Stack::new("invalid");
    s.service("web", service(json!({"env": {"V": "1"}})))
        .service("api", service(json!({})));
    s.write();
    let d = s.spawn_daemon();
    wait_in_sync(&s, "initial converge by obsd");
    assert_eq!(d.metric("obsd_desired_state_valid"), Some(1.0));
    let web = s.must("web");
    let api = s.must("api");

    // An edit that would recreate web (env) *and* has a typo: nothing may happen.
    s.svc("web")["env"]["V"] = json!("2");
    s.svc("web")["imagePolicy"] = json!("x");
    s.write();
    poll(DEADLINE, "obsd_desired_state_valid 0", || {
        (d.metric("obsd_desired_state_valid") == Some(0.0)).then_some(())
    });
    let (_, st) = s.status_json();
    let err = st["desired_state_error"].as_str().unwrap_or_default();
    assert!(err.contains("imagePolicy"), "status error: {st}");
    let table = s.obsctl(&["status"]);
    assert!(
        table.stdout.contains("INVALID") && table.stdout.contains("imagePolicy"),
        "obsctl status does not show the error:\n{}",
        table.stdout
    );
    // Ask for a pass explicitly (SIGHUP reloads; still invalid) and look again.
    // SAFETY: signalling the obsd child this test spawned.
    unsafe {
        libc::kill(d.pid() as libc::pid_t, libc::SIGHUP);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.metric("obsd_desired_state_valid"), Some(0.0));
    assert_eq!(
        s.must("web").id,
        web.id,
        "web was touched by an invalid edit"
    );
    assert_eq!(s.must("api").id, api.id);
    assert!(s.must("web").running && s.must("api").running);

    // Fix it (back to the original): valid again, still nothing to do.
    s.svc("web")["env"]["V"] = json!("1");
    s.svc("web")
        .as_object_mut()
        .expect("spec")
        .remove("imagePolicy");
    s.write();
    poll(DEADLINE, "obsd_desired_state_valid 1", || {
        (d.metric("obsd_desired_state_valid") == Some(1.0)).then_some(())
    });
    let st = wait_in_sync(&s, "in sync after the fix");
    assert!(st["desired_state_error"].is_null(), "{st}");
    assert_eq!(s.must("web").id, web.id);
    assert_eq!(s.must("api").id, api.id);
}

// ---------------------------------------------------------------------- orphans

#[test]
fn orphan_removal_keeps_volume_and_data() {
    let mut s = Stack::new("orphan");
    s.volume("store")
        .service("keep", service(json!({})))
        .service(
            "writer",
            service(json!({
                // Like a database: flushes on SIGTERM (here: writes a marker).
                "command": ["sh", "-c", "echo payload-42 > /d/file; trap 'echo clean > /d/shutdown; exit 0' TERM; while true; do sleep 1; done"],
                "stopGracePeriod": "5s",
                "volumes": [{"volume": "store", "target": "/d"}],
            })),
        );
    s.write();
    s.apply().expect(0, "first apply");
    let keep = s.must("keep");
    poll(DEADLINE, "writer wrote its file", || {
        let o = docker(&["exec", &s.cname("writer"), "cat", "/d/file"]);
        (o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "payload-42")
            .then_some(())
    });

    s.remove("Service", "writer").remove("Volume", "store");
    s.write();
    let d = s.diff().expect(2, "diff: writer is an orphan");
    assert!(
        d.stdout.contains("- service writer") && d.stdout.contains("orphan"),
        "{}",
        d.stdout
    );
    s.apply().expect(0, "apply removes the orphan container");

    assert!(s.ctr("writer").is_none(), "orphan container still exists");
    assert!(container_names_with_prefix(&s.cname("writer")).is_empty());
    assert_eq!(s.must("keep").id, keep.id, "keep was touched");
    let vol = s.dname("store");
    let labels = volume_labels(&vol).expect("the orphaned volume was deleted");
    assert_eq!(labels.get(STACK_LABEL), Some(&json!(s.project)));
    let data = docker_ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{vol}:/d"),
        IMAGE,
        "cat",
        "/d/file",
    ]);
    assert_eq!(data, "payload-42", "the data in the volume is gone");
    let out = docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{vol}:/d"),
        IMAGE,
        "cat",
        "/d/shutdown",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "clean",
        "the orphan was not stopped gracefully (SIGTERM + grace) before removal: \
         a force-remove is a SIGKILL"
    );

    // Reported, with how to delete it.
    let d = s.diff().expect(0, "diff after pruning");
    assert!(
        d.stdout.contains(&format!("volume {vol}: orphan")) && d.stdout.contains("kept"),
        "the orphaned volume is not reported:\n{}",
        d.stdout
    );
    let ls = s.obsctl(&["volume", "ls", "--desired-state", &s.dir.to_string_lossy()]);
    assert!(
        ls.stdout
            .lines()
            .any(|l| l.contains(&vol) && l.contains("ORPHAN")),
        "{}",
        ls.stdout
    );
}

// ---------------------------------------------------------------------- kill -9

const N_SERVICES: usize = 10;

fn many_services(s: &mut Stack, generation: &str) {
    s.stack_spec()["concurrency"] = json!(2);
    for i in 0..N_SERVICES {
        s.service(
            &format!("s{i}"),
            service(json!({"env": {"GEN": generation}})),
        );
    }
}

/// Exactly one container per service, named exactly, all running with `GEN=gen`.
fn all_converged(s: &Stack, generation: &str) -> bool {
    let owned = s.owned();
    let want: Vec<String> = (0..N_SERVICES).map(|i| s.cname(&format!("s{i}"))).collect();
    let mut names: Vec<String> = owned.iter().map(|c| c.name.clone()).collect();
    names.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    names == want_sorted
        && owned
            .iter()
            .all(|c| c.running && c.env.iter().any(|e| *e == format!("GEN={generation}")))
}

fn assert_clean(s: &Stack) {
    let names = container_names_with_prefix(&format!("{}-", s.project));
    assert_eq!(
        names.len(),
        N_SERVICES,
        "duplicates or leftovers: {names:?}"
    );
    assert!(
        names.iter().all(|n| !n.ends_with("--next")),
        "--next leftover: {names:?}"
    );
    for i in 0..N_SERVICES {
        let c = s.must(&format!("s{i}"));
        assert!(c.running, "{} not running", c.name);
    }
}

#[test]
fn kill9_during_converge_then_restart() {
    let mut s = Stack::new("kill9c");
    many_services(&mut s, "1");
    s.write();
    let mut d = s.spawn_daemon();
    let prefix = format!("{}-", s.project);
    let at_kill = poll(DEADLINE, "the first container to appear", || {
        let names = container_names_with_prefix(&prefix);
        (!names.is_empty()).then_some(names)
    });
    d.kill9();
    let after_kill = container_names_with_prefix(&prefix);
    println!(
        "killed obsd with {} container(s) seen, {} present after the kill",
        at_kill.len(),
        after_kill.len()
    );
    assert!(
        after_kill.len() < N_SERVICES || !all_converged(&s, "1"),
        "the converge finished before the kill; the test proves nothing"
    );

    let d2 = s.spawn_daemon();
    poll(DEADLINE, "all services converged after the restart", || {
        all_converged(&s, "1").then_some(())
    });
    wait_in_sync(&s, "status in sync after the restart");
    assert_clean(&s);
    drop(d2);
}

#[test]
fn kill9_during_replace_then_restart() {
    let mut s = Stack::new("kill9r");
    many_services(&mut s, "1");
    s.write();
    let mut d = s.spawn_daemon();
    poll(DEADLINE, "initial converge", || {
        all_converged(&s, "1").then_some(())
    });
    wait_in_sync(&s, "status in sync");
    let old: Vec<String> = s.owned().into_iter().map(|c| c.id).collect();

    for i in 0..N_SERVICES {
        s.svc(&format!("s{i}"))["env"]["GEN"] = json!("2");
    }
    s.write();
    let prefix = format!("{}-", s.project);
    let at_kill = poll(DEADLINE, "a --next container (replace in progress)", || {
        let names = container_names_with_prefix(&prefix);
        names.iter().any(|n| n.ends_with("--next")).then_some(names)
    });
    d.kill9();
    let after_kill = container_names_with_prefix(&prefix);
    println!("killed obsd mid-replace; containers then: {after_kill:?}");
    assert!(at_kill.iter().any(|n| n.ends_with("--next")), "{at_kill:?}");

    let d2 = s.spawn_daemon();
    poll(DEADLINE, "all services replaced after the restart", || {
        all_converged(&s, "2").then_some(())
    });
    wait_in_sync(&s, "status in sync after the restart");
    assert_clean(&s);
    let new: Vec<String> = s.owned().into_iter().map(|c| c.id).collect();
    assert!(
        new.iter().all(|id| !old.contains(id)),
        "an old container survived"
    );
    drop(d2);
}

/// SIGTERM in the middle of a replace: obsd exits 0 within its shutdown budget and
/// leaves every service with exactly one running container and no `--next`.
#[test]
fn sigterm_during_replace_is_graceful() {
    let mut s = Stack::new("termr");
    many_services(&mut s, "1");
    s.write();
    let mut d = s.spawn_daemon();
    poll(DEADLINE, "initial converge", || {
        all_converged(&s, "1").then_some(())
    });
    wait_in_sync(&s, "status in sync");

    for i in 0..N_SERVICES {
        s.svc(&format!("s{i}"))["env"]["GEN"] = json!("2");
    }
    s.write();
    let prefix = format!("{}-", s.project);
    poll(DEADLINE, "a --next container (replace in progress)", || {
        container_names_with_prefix(&prefix)
            .iter()
            .any(|n| n.ends_with("--next"))
            .then_some(())
    });
    let t0 = Instant::now();
    let st = d.term(Duration::from_secs(40));
    println!("obsd exited {:?} after SIGTERM mid-replace", t0.elapsed());
    assert!(st.success(), "exit status {st}:\n{}", d.log());
    assert_clean(&s);

    let d2 = s.spawn_daemon();
    poll(DEADLINE, "all services replaced after the restart", || {
        all_converged(&s, "2").then_some(())
    });
    assert_clean(&s);
    drop(d2);
}

/// The deterministic complement of the kill -9 test: a replace is cut after each of its
/// steps (create `--next`, stop old, remove old, rename), and a fresh pass — with the
/// state as it was on disk before the cut pass — must end with exactly one running,
/// up-to-date container and no `--next`.
#[test]
fn crash_after_each_replace_step_is_repaired() {
    let mut s = Stack::new("crashstep");
    s.service("web", service(json!({"env": {"GEN": "0"}})));
    s.write();
    with_rig(&s.state_dir.clone(), async |rig| {
        rig.converge(&load(&s), 5, true).await;

        for cut in 1..=4usize {
            let generation = cut.to_string();
            s.svc("web")["env"]["GEN"] = json!(generation);
            s.write();
            let desired = load(&s);
            let old = s.must("web");
            let on_disk = rig.persisted.clone();

            let before_crash = rig.cut_pass(&desired, cut).await;
            let left = container_names_with_prefix(&s.cname("web"));

            // The restarted daemon sees the state as it was on disk.
            rig.persisted = on_disk;
            let repair = rig.converge(&desired, 5, true).await;
            println!("crash after {before_crash:?}: left {left:?}; repaired with {repair:?}");

            assert_eq!(
                container_names_with_prefix(&s.cname("web")),
                [s.cname("web")],
                "crash after {before_crash:?}: duplicate or leftover"
            );
            let now = s.must("web");
            assert!(now.running, "crash after {before_crash:?}: not running");
            assert_ne!(now.id, old.id, "crash after {before_crash:?}: old survived");
            assert!(
                now.env.iter().any(|e| *e == format!("GEN={generation}")),
                "crash after {before_crash:?}: stale spec {:?}",
                now.env
            );
            if left == [format!("{}--next", s.cname("web"))] {
                // The finished temp is adopted, not thrown away and made again.
                assert_eq!(
                    repair,
                    ["rename_container", "start_container"],
                    "only the temp was left: adopt it"
                );
            }
        }
    });
}

// ---------------------------------------------------------------------- failures

#[test]
fn obsctl_without_engine_prints_one_line() {
    let mut s = Stack::new("noengine");
    s.service("web", service(json!({})));
    s.write();
    let dir = s.dir.to_string_lossy().into_owned();
    for args in [
        vec!["diff", "--desired-state", dir.as_str()],
        vec!["apply", "--desired-state", dir.as_str()],
    ] {
        let r = s
            .obsctl_env(&args, &[("DOCKER_HOST", "unix:///nonexistent.sock")])
            .expect(1, &format!("obsctl {} without an engine", args[0]));
        let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "obsctl {}: want ONE line on stderr, got:\n{}",
            args[0],
            r.stderr
        );
        assert!(
            lines[0].to_lowercase().contains("docker engine")
                && lines[0].contains("/nonexistent.sock"),
            "unclear: {}",
            lines[0]
        );
        assert!(r.stdout.trim().is_empty(), "stdout: {}", r.stdout);
    }
}

#[test]
fn missing_image_fails_only_that_service() {
    let mut s = Stack::new("missing");
    s.service("good", service(json!({}))).service(
        "bad",
        service(json!({"image": "obsd-test/missing:1", "pullPolicy": "IfNotPresent"})),
    );
    s.write();
    let t0 = Instant::now();
    let r = s.apply().expect(1, "apply with an unpullable image");
    println!("apply with a missing image took {:?}", t0.elapsed());
    let bad_line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("bad:"))
        .unwrap_or_else(|| panic!("no per-service error for bad:\n{}", r.stderr));
    assert!(
        bad_line.contains("obsd-test/missing:1") && bad_line.contains("pull"),
        "unclear: {bad_line}"
    );
    assert!(
        !r.stderr.lines().any(|l| l.starts_with("good:")),
        "{}",
        r.stderr
    );
    assert!(s.must("good").running, "the good service did not converge");
    assert!(s.ctr("bad").is_none());
    assert!(
        container_names_with_prefix(&s.cname("bad")).is_empty(),
        "half-made container for bad"
    );

    // The daemon reports it per service too, and keeps the good one in sync.
    let d = s.spawn_daemon();
    let (code, st) = poll(DEADLINE, "obsctl status reports bad as failed", || {
        let (code, v) = s.status_json();
        status_drift(&v, "Service", "bad")
            .iter()
            .any(|r| r == "failed")
            .then_some((code, v))
    });
    assert_eq!(code, 2, "status exit code with a failing service");
    let bad = status_row(&st, "Service", "bad").expect("bad row");
    let said = format!("{} {}", bad["last_error"], bad["message"]);
    assert!(said.contains("obsd-test/missing:1"), "unclear: {bad}");
    assert_eq!(
        status_row(&st, "Service", "good").expect("good row")["in_sync"],
        json!(true),
        "{st}"
    );
    drop(d);
}
