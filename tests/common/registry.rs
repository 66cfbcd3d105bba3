//! A real registry for the pull and image-update tests: Debian's `docker-registry` on
//! 127.0.0.1 (the engine trusts loopback registries over plain HTTP), and versioned
//! busybox images to push to it.

use super::{docker, poll};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Debian's `docker-registry` on 127.0.0.1, killed on drop with the images listed in
/// `images`.
pub struct Registry {
    child: Option<Child>,
    pub port: u16,
    _dir: tempfile::TempDir,
    /// Images removed from the engine when the registry is dropped.
    pub images: Vec<String>,
}

impl Registry {
    pub fn start() -> Registry {
        assert!(
            std::path::Path::new("/usr/bin/docker-registry").exists(),
            "apt-get install docker-registry (tests/setup.sh does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let cfg = dir.path().join("registry.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        poll(Duration::from_secs(20), "the registry to listen", || {
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
        Registry {
            child: Some(child),
            port,
            _dir: dir,
            images: Vec::new(),
        }
    }

    /// Stops the registry (an unreachable registry, for the failure cases).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
        for i in &self.images {
            let _ = docker(&["rmi", "-f", i]);
        }
    }
}

/// Builds a busybox image tagged `tag` whose `/version` says `version` (and that has
/// `/broken` when `broken`); returns its ID.
pub fn build(tag: &str, version: &str, broken: bool) -> String {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/busybox", ctx.path().join("busybox")).expect("busybox-static");
    std::fs::write(ctx.path().join("version"), version).unwrap();
    let mut df = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCOPY version /version\n".to_string();
    if broken {
        df.push_str("COPY version /broken\n");
    }
    std::fs::write(ctx.path().join("Dockerfile"), df).unwrap();
    let out = Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .arg(ctx.path())
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("sha256:"))
        .expect("image id")
        .to_string()
}
