//! The daemon survives the Docker engine going away and coming back.
//!
//! Restarting the real dockerd under CI is not safe, so the test puts a unix-socket proxy
//! between obsd and the engine and cuts it: every connection (the event stream too)
//! drops, new ones are refused, exactly as when dockerd restarts.

mod common;

use common::{ensure_image, http_get as get, poll, remove_project, IMAGE, LOOP};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::{UnixListener, UnixStream};

/// A proxy to /var/run/docker.sock that can be cut and restored.
struct Proxy {
    rt: tokio::runtime::Runtime,
    path: PathBuf,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    fn new(path: &Path) -> Proxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut p = Proxy {
            rt,
            path: path.to_path_buf(),
            task: None,
        };
        p.up();
        p
    }

    fn up(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let path = self.path.clone();
        let listener = self
            .rt
            .block_on(async move { UnixListener::bind(&path).unwrap() });
        self.task = Some(self.rt.spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                conns.spawn(async move {
                    if let Ok(mut engine) = UnixStream::connect("/var/run/docker.sock").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
            }
            // Dropping the JoinSet (when this task is aborted) aborts every connection.
        }));
    }

    /// Drops every connection and refuses new ones.
    fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = self.rt.block_on(t);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn running(name: &str) -> bool {
    Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", name])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
        .unwrap_or(false)
}

#[test]
fn daemon_reconnects_after_the_engine_goes_away() {
    ensure_image();
    let tmp = tempfile::tempdir().unwrap();
    let project = format!("obsdt-{}-reconnect", std::process::id());
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            remove_project(&self.0);
        }
    }
    let _cleanup = Cleanup(project.clone());
    let sock = tmp.path().join("engine.sock");
    let mut proxy = Proxy::new(&sock);

    let ds = tmp.path().join("ds");
    std::fs::create_dir(&ds).unwrap();
    std::fs::write(
        ds.join("stack.yaml"),
        format!(
            "apiVersion: obs.tlsstress.art/v1alpha1\nkind: Stack\nmetadata: {{name: t}}\nspec: {{project: {project}, defaultNetwork: default}}\n---\napiVersion: obs.tlsstress.art/v1alpha1\nkind: Network\nmetadata: {{name: default}}\nspec: {{}}\n---\napiVersion: obs.tlsstress.art/v1alpha1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  image: {IMAGE}\n  command: [\"sh\", \"-c\", \"{LOOP}\"]\n  stopGracePeriod: 1s\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        ds.join("stack.yaml"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut obsd = Command::new(env!("CARGO_BIN_EXE_obsd"))
        .arg("--desired-state")
        .arg(&ds)
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let metrics = || get(&format!("http://127.0.0.1:{port}/metrics")).unwrap_or_default();
    let web = format!("{project}-web");
    poll(Duration::from_secs(60), "web running via the proxy", || {
        running(&web).then_some(())
    });

    // The engine "restarts": every connection drops, new ones fail.
    proxy.cut();
    poll(Duration::from_secs(30), "obsd_docker_up 0", || {
        metrics().contains("obsd_docker_up 0").then_some(())
    });
    // Meanwhile someone removes the container.
    assert!(Command::new("docker")
        .args(["rm", "-f", &web])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !running(&web),
        "nothing can repair it while the engine is away"
    );

    // The engine is back: obsd reconnects by itself and repairs from a fresh look.
    proxy.up();
    let back = Instant::now();
    poll(Duration::from_secs(60), "obsd_docker_up 1", || {
        metrics().contains("obsd_docker_up 1").then_some(())
    });
    poll(Duration::from_secs(60), "web running again", || {
        running(&web).then_some(())
    });
    println!(
        "reconnected and repaired {:?} after the engine came back",
        back.elapsed()
    );

    // And the event stream is live again: an out-of-band removal is repaired promptly.
    assert!(Command::new("docker")
        .args(["rm", "-f", &web])
        .status()
        .unwrap()
        .success());
    let t = Instant::now();
    poll(
        Duration::from_secs(20),
        "web repaired after the reconnect",
        || running(&web).then_some(()),
    );
    println!(
        "repair through the re-established event stream: {:?}",
        t.elapsed()
    );
    let _ = obsd.kill();
    let _ = obsd.wait();
}
