//! What wakes the daemon: Docker events are filtered by ownership before they reach the
//! loop, so a bystander that merely shares the project's name prefix, however noisy,
//! never triggers a pass. (The debounce's maximum wait is tested with a paused clock in
//! `src/daemon/watch.rs`.) Runs against the real Docker engine.

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
