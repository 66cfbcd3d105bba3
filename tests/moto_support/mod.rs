//! moto's server (a real S3, CloudWatch Logs and CloudWatch implementation not written
//! here) as a child process on a free loopback port, killed on drop. Shared by the
//! backup and AWS-job test binaries; `tests/setup.sh` installs `moto[server]`.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Moto {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    child: Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts the server and waits until it answers.
    pub async fn start() -> Moto {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        // `python3 -m moto.server` is `moto_server` without depending on the console
        // script being on PATH (a pyenv shim appears only after a rehash).
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs (tests/setup.sh installs moto[server])");
        let moto = Moto {
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = http.get(format!("{}/moto-api/", moto.url)).send().await {
                if r.status().is_success() {
                    return moto;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("moto's server did not answer on port {port} within 10s (is moto[server] installed? tests/setup.sh installs it)");
    }

    /// Starts the server with one S3 bucket created.
    pub async fn with_bucket(bucket: &str) -> Moto {
        let m = Moto::start().await;
        let r = reqwest::Client::new()
            .put(format!("{}/{bucket}", m.url))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "create bucket: {}", r.status());
        m
    }
}
