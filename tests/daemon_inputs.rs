//! What wakes the daemon: Docker events are filtered by ownership before they reach the
//! loop, so a bystander that merely shares the project's name prefix, however noisy,
//! never triggers a pass; file saves faster than the debounce still reload (its maximum
//! wait, also tested with a paused clock in `src/daemon/watch.rs`); `/metrics` is bound
//! where the stack's Prometheus needs it and nowhere else. Runs against the real Docker
//! engine.

mod common;

use common::{docker, docker_ok, poll, service, Daemon, Stack, IMAGE, LOOP};
use serde_json::json;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(90);

fn passes(d: &Daemon) -> f64 {
    ["success", "error"]
        .iter()
        .filter_map(|r| d.metric(&format!("obsd_reconcile_total{{result=\"{r}\"}}")))
        .sum()
}

/// Removes the bystander even when the test fails (never left paused: `rm -f` takes a
/// paused container too).
struct Bystander(String);

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

#[test]
fn noisy_unowned_container_with_the_prefix_triggers_no_pass() {
    let mut s = Stack::new("noisy");
    s.service("web", service(json!({})));
    s.write();
    let d = s.spawn_daemon();
    poll(DEADLINE, "in sync", || {
        (s.obsctl(&["status"]).code == 0).then_some(())
    });
    // Same prefix as the stack's containers (`<project>-`), no ownership label.
    let name = format!("{}-noisy", s.project);
    let _guard = Bystander(name.clone());
    docker_ok(&["run", "-d", "--name", &name, IMAGE, "sh", "-c", LOOP]);
    // Its create and start are not ours either; let anything in flight settle.
    std::thread::sleep(Duration::from_secs(1));
    let before = passes(&d);
    // 60 events: pause, unpause, signal.
    for _ in 0..20 {
        docker_ok(&["pause", &name]);
        docker_ok(&["unpause", &name]);
        docker_ok(&["kill", "-s", "USR1", &name]);
    }
    // Hints are coalesced for 150 ms; give any pass they caused time to be counted.
    std::thread::sleep(Duration::from_secs(2));
    let caused = passes(&d) - before;
    println!("passes during 60 events of an unowned same-prefix container: {caused}");
    assert_eq!(caused, 0.0, "a bystander's events woke the loop");
    assert!(s.must("web").running);

    // Control: the same watcher does see our own containers' events.
    let before = passes(&d);
    docker_ok(&["kill", "-s", "USR1", &s.cname("web")]);
    poll(DEADLINE, "an owned container's event causes a pass", || {
        (passes(&d) > before).then_some(())
    });
}

/// A network of this test's own, removed on drop.
struct TestNetwork(String);

impl Drop for TestNetwork {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.0]);
    }
}

/// An HTTP GET from a container on `net`, with `host.docker.internal` mapped as the
/// stack's Prometheus maps it (busybox `nc`: the static busybox's `wget` is unreliable);
/// the body of a 200 answer, or `None` when nothing answers.
fn fetch_from_container(net: &str, host: &str, port: u16, path: &str) -> Option<String> {
    let script =
        // stdin stays open a while: busybox nc may stop at its EOF before the answer.
        format!("{{ printf 'GET {path} HTTP/1.0\\r\\nHost: obsd\\r\\n\\r\\n'; sleep 2; }} | nc -w 5 {host} {port}");
    let out = docker(&[
        "run",
        "--rm",
        "--network",
        net,
        "--add-host",
        "host.docker.internal:host-gateway",
        IMAGE,
        "sh",
        "-c",
        &script,
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.contains(" 200 ").then(|| body.to_string())
}

/// The shipped unit's binding: loopback plus the Docker bridge's gateway. The stack's
/// Prometheus (a container on a user network, `host.docker.internal` → host-gateway)
/// scrapes it; the same port on the user network's own gateway address, i.e. any other
/// host address, is closed.
#[test]
fn metrics_on_loopback_and_the_bridge_gateway_only() {
    let mut s = Stack::new("listen");
    s.service("web", service(json!({})));
    s.write();
    // What host-gateway resolves to here (172.17.0.1 unless the engine says otherwise).
    let hosts = docker_ok(&[
        "run",
        "--rm",
        "--add-host",
        "gw:host-gateway",
        IMAGE,
        "cat",
        "/etc/hosts",
    ]);
    let gw = hosts
        .lines()
        .find_map(|l| l.strip_suffix("\tgw").or_else(|| l.strip_suffix(" gw")))
        .map(|ip| ip.trim().to_string())
        .unwrap_or_else(|| panic!("no host-gateway entry in {hosts}"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lo = format!("127.0.0.1:{port}");
    let bridge = format!("{gw}:{port}");
    let d = s.spawn_daemon_with(&[], &["--listen", &lo, "--listen", &bridge]);
    assert!(d.metrics().contains("obsd_build_info"));
    let by_loopback = std::net::TcpStream::connect(&lo);
    assert!(by_loopback.is_ok(), "loopback: {by_loopback:?}");

    let net = TestNetwork(format!("{}-probe", s.project));
    docker_ok(&["network", "create", &net.0]);
    let body = fetch_from_container(&net.0, "host.docker.internal", port, "/metrics")
        .expect("Prometheus' way to obsd (host.docker.internal) works");
    assert!(body.contains("obsd_build_info"), "{body}");
    // The user network's gateway is the host too, on another address: closed there.
    let other_gw = docker_ok(&[
        "network",
        "inspect",
        &net.0,
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
    ]);
    let other_gw = other_gw.trim();
    assert!(!other_gw.is_empty() && other_gw != gw, "{other_gw}");
    assert_eq!(
        fetch_from_container(&net.0, other_gw, port, "/metrics"),
        None,
        "obsd answers on {other_gw}, an address it was not told to bind"
    );
}

/// Saves more often than the debounce's quiet period (every 100 ms, the quiet period is
/// 300 ms) still reload: the debounce has a maximum wait. The saves go on until the
/// daemon's desired generation moves (or a minute passes), so the test does not depend
/// on how fast this machine is — without the maximum wait it never moves while saving.
#[test]
fn saves_more_often_than_the_debounce_still_reload() {
    let mut s = Stack::new("saves");
    s.service("web", service(json!({})));
    s.write();
    let _d = s.spawn_daemon();
    let generation = |s: &Stack| s.status_json().1["desired_generation"].as_u64().unwrap();
    poll(DEADLINE, "in sync", || {
        (s.obsctl(&["status"]).code == 0).then_some(())
    });
    let before = generation(&s);
    let rendered = s.render();
    let started = std::time::Instant::now();
    let mut saves = 0u32;
    loop {
        // A comment changes the bytes (so the generation), not the containers.
        saves += 1;
        s.write_raw(&format!("# save {saves}\n{rendered}"));
        std::thread::sleep(Duration::from_millis(100));
        if saves.is_multiple_of(5) && generation(&s) > before {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no reload in a minute of saves every 100 ms ({saves} saves)"
        );
    }
    println!(
        "reloaded after {saves} saves ({:?}) while saving every 100 ms",
        started.elapsed()
    );
    assert!(s.must("web").running);
}
