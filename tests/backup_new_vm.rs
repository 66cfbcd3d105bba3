//! README "Backups (R2) and restoring the whole stack on a new VM", walked literally
//! with the real `obsd` and `obsctl` binaries, the real Docker engine and moto's S3
//! server on 127.0.0.1 as the R2 bucket:
//!
//! 1. the old VM: a desired state (Stack, two Volumes, three Services, the `backup`
//!    Job, credentials in `.env`) converged by `obsctl apply`, data written by the
//!    services, then `obsctl jobs run backup --wait` against the running daemon;
//! 2. the VM dies: the daemon stopped, the project's containers, volumes and networks
//!    removed with the docker CLI, the state directory gone — only the desired-state
//!    directory and its `.env` are kept (git and the password manager);
//! 3. the README's steps 2–5 as written: `obsctl apply --desired-state DIR` (whose
//!    first starts write into the fresh volumes), `docker rm -f` of the containers and
//!    `docker volume rm` of those volumes, `obsctl backup list`, `obsctl restore volume
//!    NAME --into <project>_NAME` per volume, the daemon started, `obsctl status`
//!    waited for;
//! 4. every file back byte for byte with its mode, owner and link target, the services
//!    running, and no value of `.env` in any object of the bucket.
//!
//! Every Docker object is named `obsdt-<pid>-nvm…` and removed by the test's guard.

mod common;
mod jobs_support;
mod moto_support;

use common::*;
use jobs_support::{serve, Reply};
use moto_support::Moto;
use obsd::jobs::backup::s3::S3;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BUCKET: &str = "obs-new-vm";
const AKID: &str = "AKIDNEWVMCANARY77";
const SECRET: &str = "newVmR2SecretCANARY9876543210";
const CF_ACCOUNT: &str = "cfaccountCANARY31337";
const APP_PASSWORD: &str = "appPasswordCANARY-5150";
const HC_TOKEN: &str = "hcTokenCANARY4242";

/// `obsctl ARGS` as an operator types it: no OBSD_* variables, run from a directory
/// that holds no `desired-state/` (every path is given).
fn obsctl(cwd: &Path, args: &[&str]) -> Run {
    let o = Command::new(OBSCTL)
        .args(args)
        .current_dir(cwd)
        .env_remove("OBSD_STATE_DIR")
        .env_remove("OBSD_SOCKET")
        .stdin(Stdio::null())
        .output()
        .expect("run obsctl");
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn doc(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_restores_the_whole_stack_on_a_new_vm() {
    let started = Instant::now();
    let mut st = Stack::new("nvm");
    let project = st.project.clone();
    let moto = Moto::with_bucket(BUCKET).await;
    let hc = serve(|_| Reply::text(200, "OK")).await;
    let cwd = tempfile::tempdir().unwrap();
    let textfiles = tempfile::tempdir().unwrap();
    let ds = st.dir.to_string_lossy().into_owned();
    let state_dir = st.state_dir.to_string_lossy().into_owned();

    // ---------------------------------------------------------------- the old VM
    // `.env` as a user writes it (mode 0600), named relatively like the shipped Stack.
    st.env_file(format!(
        "R2_ACCESS_KEY_ID={AKID}\nR2_SECRET_ACCESS_KEY={SECRET}\nCF_ACCOUNT_ID={CF_ACCOUNT}\n\
         HEALTHCHECKS_BACKUP_URL={}/ping/{HC_TOKEN}\nAPP_PASSWORD={APP_PASSWORD}\n",
        hc.base
    ));
    st.stack_spec()["textfileDir"] = json!(textfiles.path().to_string_lossy());
    st.volume("files").volume("blob");
    st.service(
        "app",
        service(json!({
            // Like a real service, its first start on an empty volume writes there (a
            // new database, a new WAL): a marker named after the container.
            "command": ["sh", "-c", format!("ls /data/.started-* >/dev/null 2>&1 || hostname > /data/.started-$(hostname); {LOOP}")],
            "volumes": [{"volume": "files", "target": "/data"}],
            "secretEnv": {"APP_PASSWORD": "APP_PASSWORD"},
        })),
    );
    st.service(
        "db",
        service(json!({"volumes": [{"volume": "blob", "target": "/data"}]})),
    );
    st.service("web", service(json!({})));
    st.write();
    // The shipped Job's shape; the endpoint is moto instead of R2 (a URL the test
    // cannot give as `https://${CF_ACCOUNT_ID}.r2.cloudflarestorage.com`).
    st.file(
        "20-jobs.yaml",
        &doc(
            "Job",
            "backup",
            json!({
                "schedule": "30 3 * * *",
                "timeout": "30m",
                "startingDeadline": "12h",
                "backup": {
                    "bucket": BUCKET,
                    "endpoint": moto.url,
                    "region": "us-east-1",
                    "volumes": ["files", "blob"],
                    "quiesce": {"files": "pause"},
                    "keepDaily": 14,
                    "lockRetentionDays": 7,
                    "deadManUrlEnv": "HEALTHCHECKS_BACKUP_URL",
                    "textfile": "backup.prom",
                    "drill": true,
                },
            }),
        )
        .to_string(),
    );
    obsctl(cwd.path(), &["apply", "--desired-state", &ds]).expect(0, "old VM: apply");
    let (vfiles, vblob) = (st.dname("files"), st.dname("blob"));
    // The services write their data: small files, modes, owners, symlinks (relative,
    // absolute, dangling, to a directory), an empty directory and an empty file; and
    // one incompressible file of 40 MB (several content-addressed chunks).
    docker_ok(&[
        "exec",
        &st.cname("app"),
        "sh",
        "-c",
        "set -e; cd /data; mkdir -p empty conf/deep/er lib;\
         for i in $(seq 1 400); do echo \"row $i\" > lib/f-$i.txt; done;\
         chmod 600 lib/f-1.txt; chmod 4755 lib/f-2.txt; chmod 0750 empty; chmod 0711 conf/deep;\
         chown -R 472:0 conf; chown 99:98 empty; chown 1234:5678 lib/f-3.txt;\
         ln -s lib/f-1.txt current; ln -s /nowhere dangling; ln -s ../../lib conf/deep/up;\
         : > zero; printf x > conf/deep/er/one; echo sqlite > grafana.db; chmod 640 grafana.db",
    ]);
    docker_ok(&[
        "exec",
        &st.cname("db"),
        "sh",
        "-c",
        "set -e; cd /data; mkdir -p chunks/01; head -c 40000000 /dev/urandom > chunks/01/block;\
         chmod 444 chunks/01/block; chown -R 65534:65534 chunks; echo wal-1 > wal",
    ]);
    let before_files = volume_listing(&vfiles);
    let before_blob = volume_listing(&vblob);
    assert!(before_files.contains("./empty 750 99 98"), "{before_files}");
    assert!(
        before_files.contains("'./current' -> 'lib/f-1.txt'"),
        "{before_files}"
    );

    // The daemon runs; a backup now, as the README says.
    let mut daemon = st.spawn_daemon();
    poll(Duration::from_secs(120), "old VM: obsctl status 0", || {
        (obsctl(cwd.path(), &["--state-dir", &state_dir, "status"]).code == 0).then_some(())
    });
    // A backup in another process would have its quiesce undone by the daemon's passes:
    // refused while obsd runs, pointing at the way that works.
    let r = obsctl(
        cwd.path(),
        &[
            "--state-dir",
            &state_dir,
            "backup",
            "run",
            "--desired-state",
            &ds,
        ],
    )
    .expect(1, "obsctl backup run while obsd runs");
    assert!(
        r.stderr.contains("obsctl jobs run backup --wait"),
        "{}",
        r.stderr
    );
    let t = Instant::now();
    obsctl(
        cwd.path(),
        &["--state-dir", &state_dir, "jobs", "run", "backup", "--wait"],
    )
    .expect(0, "old VM: obsctl jobs run backup --wait");
    let backup_secs = t.elapsed().as_secs_f64();
    let prom = std::fs::read_to_string(textfiles.path().join("backup.prom")).unwrap();
    let tf = obsd::jobs::textfile::parse(&prom).unwrap();
    assert_eq!(tf.value("backup_r2_run_success", &[]), Some(1.0), "{prom}");
    assert_eq!(
        tf.value("backup_r2_drill_success", &[]),
        Some(1.0),
        "{prom}"
    );
    for v in ["files", "blob"] {
        assert_eq!(
            tf.value(
                "backup_r2_source_success",
                &[("source", v), ("kind", "volume")]
            ),
            Some(1.0),
            "{v}: {prom}"
        );
    }
    let pings: Vec<String> = hc.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        pings,
        [
            format!("/ping/{HC_TOKEN}/start"),
            format!("/ping/{HC_TOKEN}")
        ]
    );
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.Status}}", &st.cname("app")]),
        "running",
        "unpaused after the read"
    );

    // ---------------------------------------------------------------- the VM dies
    daemon.term(Duration::from_secs(30));
    drop(daemon);
    remove_project(&project);
    assert!(st.owned().is_empty());
    for v in [&vfiles, &vblob] {
        assert!(volume_labels(v).is_none(), "{v} is gone");
    }
    // A new VM has no state directory and no textfiles; the desired state and its
    // `.env` come back from git and the password manager.
    std::fs::remove_dir_all(&st.state_dir).unwrap();
    std::fs::remove_dir_all(textfiles.path()).unwrap();
    std::fs::create_dir(textfiles.path()).unwrap();

    // ---------------------------------------------------------------- the new VM
    // Step 2: converge without the daemon (it pulls the images), then remove the
    // containers and the fresh volumes their first start wrote into.
    obsctl(cwd.path(), &["apply", "--desired-state", &ds]).expect(0, "new VM: apply");
    assert!(st.state_dir.is_dir(), "apply creates the state directory");
    poll(
        Duration::from_secs(20),
        "the app's first-start marker",
        || (volume_listing(&vfiles).lines().count() == 3).then_some(()),
    );
    assert_eq!(
        volume_listing(&vblob).lines().count(),
        1,
        "blob is new and empty"
    );
    let out = Command::new("sh")
        .args([
            "-c",
            &format!(
                "docker rm -f $(docker ps -aq --filter label={STACK_LABEL}={project}) && docker volume rm {vfiles} {vblob}"
            ),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker rm / volume rm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(st.owned().is_empty(), "{:?}", st.owned());

    // Step 3: the complete day. Without `--desired-state` (run from anywhere but the
    // repository) it has no bucket to read: the README gives the flag.
    let r = obsctl(cwd.path(), &["backup", "list"]).expect(1, "backup list without the flag");
    assert!(r.stderr.contains("desired-state"), "{}", r.stderr);
    let r = obsctl(cwd.path(), &["backup", "list", "--desired-state", &ds])
        .expect(0, "new VM: backup list");
    let list = obsctl(
        cwd.path(),
        &["backup", "list", "--desired-state", &ds, "-o", "json"],
    )
    .expect(0, "new VM: backup list -o json");
    let days: Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(days.as_array().unwrap().len(), 1, "{days}");
    let day = days[0]["date"].as_str().unwrap().to_string();
    let today = chrono::Utc::now().date_naive();
    assert!(
        [today, today.pred_opt().unwrap()]
            .iter()
            .any(|d| d.to_string() == day),
        "{day}"
    );
    assert_eq!(days[0]["complete"], true);
    assert_eq!(days[0]["partial"], false);
    let names: Vec<&str> = days[0]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["files", "blob"]);
    for n in ["files", "blob"] {
        assert!(
            r.stdout
                .lines()
                .any(|l| l.starts_with(&day) && l.contains(&format!(" {n} "))),
            "{n} on {day} in\n{}",
            r.stdout
        );
    }

    // Step 4: each volume of the Job into the stack's own name for it.
    for (n, v) in [("files", &vfiles), ("blob", &vblob)] {
        let r = obsctl(
            cwd.path(),
            &["restore", "volume", n, "--into", v, "--desired-state", &ds],
        )
        .expect(0, &format!("new VM: restore volume {n} --into {v}"));
        assert!(
            r.stdout.contains(&format!("restored {n} ({day}, ")) && r.stdout.contains(v.as_str()),
            "{}",
            r.stdout
        );
        let labels = volume_labels(v).expect("restored volume");
        assert_eq!(labels.get(STACK_LABEL), Some(&json!(project)), "{labels:?}");
    }

    // Step 5: the daemon creates the containers again on the restored volumes.
    let daemon = st.spawn_daemon();
    poll(Duration::from_secs(120), "new VM: obsctl status 0", || {
        (obsctl(cwd.path(), &["--state-dir", &state_dir, "status"]).code == 0).then_some(())
    });

    // ---------------------------------------------------------------- the checks
    assert_eq!(
        volume_listing(&vfiles),
        before_files,
        "files: byte for byte"
    );
    assert_eq!(volume_listing(&vblob), before_blob, "blob: byte for byte");
    let owned = st.owned();
    assert_eq!(owned.len(), 3, "{owned:?}");
    assert!(owned.iter().all(|c| c.running), "{owned:?}");
    assert_eq!(
        docker_ok(&["exec", &st.cname("app"), "cat", "/data/lib/f-400.txt"]),
        "row 400",
        "the service sees its data"
    );
    drop(daemon);

    // No value of `.env` in any key or object of the bucket (objects are zstd).
    let s3 = S3::new(
        reqwest::Client::new(),
        &moto.url,
        BUCKET,
        "us-east-1",
        AKID,
        SECRET,
    )
    .unwrap();
    let objects = s3.list("").await.unwrap();
    assert!(objects.len() >= 5, "{} objects", objects.len());
    let canaries = [AKID, SECRET, CF_ACCOUNT, APP_PASSWORD, HC_TOKEN];
    for o in objects {
        let raw = s3.get(&o.key).await.unwrap().unwrap();
        let plain = if o.key.starts_with("objects/") {
            zstd::stream::decode_all(&raw[..]).unwrap()
        } else {
            raw.to_vec()
        };
        for c in canaries {
            assert!(!o.key.contains(c), "{} names a secret", o.key);
            assert!(
                !plain.windows(c.len()).any(|w| w == c.as_bytes()),
                "{} holds a secret value from .env",
                o.key
            );
        }
    }
    eprintln!(
        "new-VM restore: whole test {:.1}s, backup run {backup_secs:.1}s",
        started.elapsed().as_secs_f64()
    );
}
