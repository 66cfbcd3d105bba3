//! Image updates (`update.image`) against the real engine and real registries on
//! 127.0.0.1: Debian's `docker-registry` for the rollouts, and a small fake registry
//! (the anonymous token flow, a `429` with `Retry-After`, request counting) for the
//! pacing rules.
//!
//! The daemon checks a watched image at start-up when it has no recorded check; the
//! tests push the new image *before* starting it, so nothing waits a `checkInterval`.

mod common;

use common::registry::{build, Registry};
use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);

fn push(tag: &str) {
    docker_ok(&["push", tag]);
}

fn running_image(container: &str) -> String {
    inspect(container).expect("container")["Image"]
        .as_str()
        .unwrap()
        .to_string()
}

fn version_in(container: &str) -> String {
    String::from_utf8_lossy(&docker(&["exec", container, "cat", "/version"]).stdout)
        .trim()
        .to_string()
}

fn row<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status_row(status, "Service", name)
}

fn drift(status: &Value, name: &str) -> Vec<String> {
    status_drift(status, "Service", name)
}

fn message(status: &Value, name: &str) -> String {
    row(status, name)
        .and_then(|r| r["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// A service on `image` that exits at once when the image has `/broken`.
fn app(image: &str, policy: &str) -> Value {
    json!({
        "image": image,
        "command": ["sh", "-c", format!("[ -e /broken ] && {{ echo 'Error: broken image' >&2; exit 1; }}; {LOOP}")],
        "stopGracePeriod": "1s",
        "update": {"settle": "2s", "image": {"policy": policy, "checkInterval": "1m"}},
    })
}

/// v1 pushed as `<registry>/obsdt/app-<tag>:stable` and running under obsd; then `v2`
/// (broken or not) pushed to the same tag while the host keeps v1 under it.
fn moved_tag(
    s: &mut Stack,
    reg: &mut Registry,
    tag: &str,
    policy: &str,
    broken: bool,
) -> (String, String, String) {
    let image = format!(
        "127.0.0.1:{}/obsdt/app-{tag}-{}:stable",
        reg.port,
        std::process::id()
    );
    reg.images.push(image.clone());
    let v1 = build(&image, "v1", false);
    push(&image);
    s.service("app", app(&image, policy));
    s.write();
    s.apply().expect(0, "apply v1");
    assert_eq!(running_image(&s.cname("app")), v1);
    let v2 = build(&image, "v2", broken);
    assert_ne!(v1, v2);
    push(&image);
    reg.images.extend([v1.clone(), v2.clone()]);
    // The host has not pulled: its tag names v1 (which carries v1's registry digest).
    docker_ok(&["tag", &v1, &image]);
    (image, v1, v2)
}

#[test]
fn notify_reports_a_moved_tag_and_changes_nothing() {
    let mut reg = Registry::start();
    let mut s = Stack::new("imgnotify");
    let (image, v1, _v2) = moved_tag(&mut s, &mut reg, "notify", "notify", false);
    let before = s.must("app").id.clone();
    let d = s.spawn_daemon();
    let status = poll(DEADLINE, "image_outdated in obsctl status", || {
        let (code, st) = s.status_json();
        drift(&st, "app")
            .contains(&"image_outdated".to_string())
            .then_some((code, st))
    });
    assert_eq!(status.0, 2, "drift: not in sync: {:#}", status.1);
    assert!(
        message(&status.1, "app").contains("newer"),
        "{:#}",
        status.1
    );
    let series = format!("obsd_image_update_available{{service=\"app\",image=\"{image}\"}}");
    assert_eq!(d.metric(&series), Some(1.0), "{}", d.metrics());
    assert_eq!(
        d.metric("obsd_resource_drift{kind=\"Service\",name=\"app\",reason=\"image_outdated\"}"),
        Some(1.0)
    );
    assert_eq!(
        d.metric("obsd_image_checks_total{result=\"outdated\"}"),
        Some(1.0)
    );
    // Nothing was pulled or replaced.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(s.must("app").id, before, "the container is untouched");
    assert_eq!(running_image(&s.cname("app")), v1);
    assert_eq!(
        docker_ok(&["image", "inspect", "-f", "{{.Id}}", &image]).trim(),
        v1,
        "not pulled"
    );
    // `obsctl diff` sees the recorded check too; it has nothing to do (exit 0).
    let r = s.diff().expect(0, "diff: notify changes nothing");
    assert!(r.stdout.contains("image_outdated"), "{}", r.stdout);
    // Pulling by hand resolves it: the check was about the image no longer local.
    docker_ok(&["pull", &image]);
    drop(d);
    let r = s.diff();
    assert!(!r.stdout.contains("image_outdated"), "{}", r.stdout);
}

#[test]
fn auto_pulls_the_moved_tag_and_rolls_it_out() {
    let mut reg = Registry::start();
    let mut s = Stack::new("imgauto");
    let (_image, _v1, v2) = moved_tag(&mut s, &mut reg, "auto", "auto", false);
    let d = s.spawn_daemon();
    poll(DEADLINE, "the container to run v2", || {
        inspect(&s.cname("app"))
            .filter(|c| c["Image"] == v2.as_str() && c["State"]["Running"] == true)
            .map(|_| ())
    });
    assert_eq!(version_in(&s.cname("app")), "v2");
    // The gate passes: one copy, in sync.
    poll(DEADLINE, "the old container removed", || {
        (copies(&s, "app") == vec![s.cname("app")]).then_some(())
    });
    let (code, st) = poll(DEADLINE, "in sync after the rollout", || {
        let (code, st) = s.status_json();
        (code == 0).then_some((code, st))
    });
    assert_eq!(code, 0, "{st:#}");
    assert_eq!(
        d.metric("obsd_image_checks_total{result=\"pulled\"}"),
        Some(1.0)
    );
    assert_eq!(inspect(&s.cname("app")).unwrap()["Image"], v2.as_str());
    assert_eq!(version_in(&s.cname("app")), "v2");
}

#[test]
fn auto_rolls_back_a_failing_image_and_does_not_retry_it() {
    let mut reg = Registry::start();
    let mut s = Stack::new("imgautorb");
    let (image, v1, v2) = moved_tag(&mut s, &mut reg, "autorb", "auto", true);
    let before = s.must("app").id.clone();
    let mut d = s.spawn_daemon();
    let st = poll(DEADLINE, "rolled_back", || {
        let (_, st) = s.status_json();
        drift(&st, "app")
            .contains(&"rolled_back".to_string())
            .then_some(st)
    });
    assert!(message(&st, "app").contains("broken image"), "{st:#}");
    assert_eq!(s.must("app").id, before, "the old container is back");
    assert_eq!(version_in(&s.cname("app")), "v1");
    assert_eq!(running_image(&s.cname("app")), v1);
    // The next check (forced: the daemon restarts without its recorded check) finds the
    // registry's image already local: nothing is pulled or tried again.
    d.term(Duration::from_secs(20));
    std::fs::remove_file(s.state_dir.join("image-checks.json")).unwrap();
    let d = s.spawn_daemon();
    poll(DEADLINE, "the next check", || {
        (d.metric("obsd_image_checks_total{result=\"current\"}") == Some(1.0)).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        d.metric("obsd_image_checks_total{result=\"pulled\"}"),
        Some(0.0)
    );
    assert_eq!(
        d.metric("obsd_rollbacks_total{service=\"app\"}"),
        Some(0.0),
        "not tried again"
    );
    assert_eq!(s.must("app").id, before);
    assert_eq!(version_in(&s.cname("app")), "v1");
    assert_eq!(
        docker_ok(&["image", "inspect", "-f", "{{.Id}}", &image]).trim(),
        v2
    );
    let (code, st) = s.status_json();
    assert_eq!(code, 2, "{st:#}");
    assert!(
        drift(&st, "app").contains(&"rolled_back".to_string()),
        "{st:#}"
    );

    // A newer, good image under the tag is pulled and gets its rollout: the pull clears
    // the hold of the image that failed.
    let mut d = d;
    let v3 = build(&image, "v3", false);
    reg.images.push(v3.clone());
    push(&image);
    docker_ok(&["tag", &v2, &image]);
    d.term(Duration::from_secs(20));
    std::fs::remove_file(s.state_dir.join("image-checks.json")).unwrap();
    let _d = s.spawn_daemon();
    poll(DEADLINE, "v3 rolled out", || {
        inspect(&s.cname("app"))
            .filter(|c| c["Image"] == v3.as_str() && c["State"]["Running"] == true)
            .map(|_| ())
    });
    poll(DEADLINE, "in sync on v3", || {
        let (code, _) = s.status_json();
        (code == 0 && copies(&s, "app").len() == 1).then_some(())
    });
    assert_eq!(version_in(&s.cname("app")), "v3");
}

/// Containers of the service: its name, `--next`, `--prev`.
fn copies(s: &Stack, svc: &str) -> Vec<String> {
    container_names_with_prefix(&s.cname(svc))
}

// ------------------------------------------------------------------------ fake registry

/// What the fake registry saw.
#[derive(Default)]
struct Seen {
    /// Arrival of every authorised manifest `HEAD`.
    heads: Vec<Instant>,
    /// Manifest `HEAD`s without the token (answered 401 with a challenge).
    unauthorised: usize,
    /// Token requests, by query string.
    tokens: Vec<String>,
}

/// A registry on 127.0.0.1 that wants an anonymous Bearer token, answers the first
/// authorised `HEAD` with `429 Retry-After: 3` and every later one with a digest.
fn fake_registry() -> (u16, Arc<Mutex<Seen>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            let mut auth = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("authorization") {
                        auth = Some(v.trim().to_string());
                    }
                }
            }
            let mut parts = first.split_whitespace();
            let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let mut seen = s2.lock().unwrap();
            let reply = if method == "GET" && target.starts_with("/token") {
                seen.tokens.push(target.to_string());
                let body = r#"{"token":"tok-123"}"#;
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
            } else if method == "HEAD" && target.contains("/manifests/") {
                if auth.as_deref() != Some("Bearer tok-123") {
                    seen.unauthorised += 1;
                    format!("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake-registry\",scope=\"repository:obsdt/fake:pull\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                } else {
                    seen.heads.push(Instant::now());
                    if seen.heads.len() == 1 {
                        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                    } else {
                        format!("HTTP/1.1 200 OK\r\nDocker-Content-Digest: sha256:{}\r\nContent-Type: application/vnd.oci.image.index.v1+json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", "b".repeat(64))
                    }
                }
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            drop(seen);
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    (port, seen)
}

#[test]
fn rate_limits_tokens_and_the_check_interval_are_honoured() {
    let (port, seen) = fake_registry();
    let mut s = Stack::new("imgpace");
    // The test image under the fake registry's name: present locally, never pulled, so
    // it has no digest from that registry (the check finds it outdated).
    let image = format!("127.0.0.1:{port}/obsdt/fake:stable");
    docker_ok(&["tag", IMAGE, &image]);
    struct Untag(String);
    impl Drop for Untag {
        fn drop(&mut self) {
            let _ = docker(&["rmi", &self.0]);
        }
    }
    let _untag = Untag(image.clone());
    s.service("app", app(&image, "notify"));
    s.write();
    let mut d = s.spawn_daemon();

    // The first check: token, then 429 → a check error, not drift.
    let st = poll(DEADLINE, "the rate-limited check in the status", || {
        let (_, st) = s.status_json();
        message(&st, "app").contains("rate-limited").then_some(st)
    });
    assert!(
        !drift(&st, "app").contains(&"image_outdated".to_string()),
        "{st:#}"
    );
    assert_eq!(
        d.metric("obsd_image_check_errors_total{error=\"rate_limited\"}"),
        Some(1.0)
    );
    // Then, after Retry-After, the second check.
    poll(DEADLINE, "image_outdated after Retry-After", || {
        let (_, st) = s.status_json();
        drift(&st, "app")
            .contains(&"image_outdated".to_string())
            .then_some(())
    });
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.heads.len(), 2);
        let waited = seen.heads[1] - seen.heads[0];
        eprintln!(
            "measured: second authorised HEAD {waited:?} after the 429 (Retry-After: 3); {} token request(s), {} unauthorised HEAD(s)",
            seen.tokens.len(),
            seen.unauthorised
        );
        assert!(
            waited >= Duration::from_millis(2900),
            "asked again after {waited:?}, before Retry-After (3 s)"
        );
        assert!(!seen.tokens.is_empty() && seen.unauthorised >= 1);
        assert!(
            seen.tokens[0].contains("service=fake-registry")
                && seen.tokens[0].contains("scope=repository%3Aobsdt%2Ffake%3Apull"),
            "{:?}",
            seen.tokens
        );
    }
    // checkInterval (1m): nothing more, also across a restart (the check is recorded).
    std::thread::sleep(Duration::from_secs(4));
    d.term(Duration::from_secs(20));
    let d = s.spawn_daemon();
    let (code, st) = poll(DEADLINE, "the recorded check after a restart", || {
        let (code, st) = s.status_json();
        drift(&st, "app")
            .contains(&"image_outdated".to_string())
            .then_some((code, st))
    });
    assert_eq!(code, 2, "{st:#}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        seen.lock().unwrap().heads.len(),
        2,
        "no check before checkInterval"
    );
    assert_eq!(
        d.metric("obsd_image_checks_total{result=\"outdated\"}"),
        Some(0.0)
    );
}
