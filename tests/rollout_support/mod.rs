//! Real peers for the rollout tests: a `FROM scratch` Caddy image built from Debian's
//! `caddy` binary (plus the libraries `ldd` names and static busybox), and a load loop
//! that counts failed requests.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub const CADDY_IMAGE: &str = "obsd-test/caddy:1";

pub const PROMETHEUS_IMAGE: &str = "obsd-test/prometheus:1";

/// Builds [`CADDY_IMAGE`] once per test binary: Debian's `/usr/bin/caddy`, the shared
/// libraries `ldd` names (libc, libzstd), busybox for `sh`/`wget`.
pub fn ensure_caddy_image() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| scratch_image(CADDY_IMAGE, &["/usr/bin/caddy"], "caddy"));
}

/// Builds [`PROMETHEUS_IMAGE`]: Debian's `prometheus` and `promtool`, their libraries,
/// busybox.
pub fn ensure_prometheus_image() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        scratch_image(
            PROMETHEUS_IMAGE,
            &["/usr/bin/prometheus", "/usr/bin/promtool"],
            "prometheus",
        )
    });
}

pub const ALERTMANAGER_IMAGE: &str = "obsd-test/alertmanager:1";

/// Builds [`ALERTMANAGER_IMAGE`]: Debian's `prometheus-alertmanager` and `amtool`, their
/// libraries, the default templates, busybox.
pub fn ensure_alertmanager_image() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        scratch_image(
            ALERTMANAGER_IMAGE,
            &[
                "/usr/bin/prometheus-alertmanager",
                "/usr/bin/amtool",
                // Debian's build reads its default notification templates from here.
                "/usr/share/prometheus/alertmanager/default.tmpl",
                "/usr/share/prometheus/alertmanager/email.tmpl",
            ],
            "prometheus-alertmanager",
        )
    });
}

/// `FROM scratch` + the binaries (and data files) at their paths + the libraries `ldd`
/// names + static busybox (installed as `/bin/sh`, `wget`, …).
fn scratch_image(tag: &str, binaries: &[&str], package: &str) {
    let ctx = tempfile::tempdir().expect("tempdir");
    let root = ctx.path().join("root");
    let copy = |src: &Path| {
        let dst = root.join(src.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
        std::fs::copy(src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
    };
    copy(Path::new("/bin/busybox"));
    for b in binaries {
        let bin = Path::new(b);
        assert!(
            bin.exists(),
            "{b} is missing: run `apt-get install {package}` (tests/setup.sh does)"
        );
        copy(bin);
        let ldd = Command::new("ldd").arg(bin).output().expect("run ldd");
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            // `libzstd.so.1 => /lib/x86_64-linux-gnu/libzstd.so.1 (0x…)` or
            // `/lib64/ld-linux-x86-64.so.2 (0x…)`.
            let path = line
                .split("=>")
                .last()
                .and_then(|r| r.split_whitespace().next())
                .filter(|p| p.starts_with('/'));
            if let Some(p) = path {
                copy(Path::new(p));
            }
        }
    }
    std::fs::create_dir_all(root.join("tmp")).expect("mkdir tmp");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY root/ /\n\
         RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         ENV XDG_DATA_HOME=/tmp/data XDG_CONFIG_HOME=/tmp/config HOME=/tmp\n\
         CMD [\"/bin/sh\"]\n",
    )
    .expect("Dockerfile");
    let out = Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .arg(ctx.path())
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("docker build");
    assert!(
        out.status.success(),
        "building {tag} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One HTTP/1.0 GET; true on a 2xx answer within 2 s.
pub fn get_ok(addr: &str, path: &str) -> bool {
    get(addr, path).is_some()
}

/// One HTTP/1.0 GET; the body of a 2xx answer within 2 s.
pub fn get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let sa: std::net::SocketAddr = addr.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?;
    code.starts_with('2').then(|| body.to_string())
}

/// Requests in a loop against an address on its own thread until stopped; counts answers that
/// were not a 2xx (or did not come).
pub struct Load {
    stop: Arc<AtomicBool>,
    pub ok: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    /// Loads `http://addr/path`.
    pub fn start(addr: String, path: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if get_ok(&addr, &path) {
                    o.fetch_add(1, Ordering::SeqCst);
                } else {
                    f.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Load {
            stop,
            ok,
            failed,
            handle: Some(handle),
        }
    }

    /// Stops the loop; (ok, failed).
    pub fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
