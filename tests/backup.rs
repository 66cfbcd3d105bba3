//! The backup job and restore against real peers: moto's S3 server on 127.0.0.1 (the
//! bucket) and the real Docker engine (volumes, pause, the archive endpoints).
//!
//! Every Docker object is named `obsdt-<pid>-bk…` (swept by `common` if a run dies) and
//! removed by the test's guard.

mod common;
mod jobs_support;
mod moto_support;

use chrono::{TimeZone, Utc};
use common::*;
use jobs_support::{context, read_textfile, serve, FixedClock, Reply};
use moto_support::Moto;
use obsd::desired::model::job::BackupJob;
use obsd::docker::engine::Engine;
use obsd::jobs::backup::{self, manifest::Manifest, s3::S3, RestoreTarget};
use obsd::jobs::{JobContext, JobError};
use serde_json::json;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const AKID: &str = "AKIDBACKUPTEST";
const SECRET: &str = "backupSecretKeyCANARY0123456789";

async fn moto(bucket: &str) -> Moto {
    Moto::with_bucket(bucket).await
}

/// Removes the test's containers and volumes, whatever happens.
struct Cleanup {
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        for v in &self.volumes {
            let _ = docker(&["volume", "rm", "-f", v]);
        }
    }
}

fn prefix(tag: &str) -> String {
    format!("obsdt-{}-bk{tag}", std::process::id())
}

/// A volume filled by a shell script, and a running container mounting it.
fn volume_with(name: &str, user: &str, script: &str) {
    docker_ok(&["volume", "create", name]);
    docker_ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{name}:/data"),
        IMAGE,
        "sh",
        "-c",
        script,
    ]);
    docker_ok(&[
        "run",
        "-d",
        "--name",
        user,
        "-v",
        &format!("{name}:/data"),
        IMAGE,
        "sh",
        "-c",
        LOOP,
    ]);
}

fn job(moto: &Moto, bucket: &str, volumes: &[&str], extra: serde_json::Value) -> BackupJob {
    let mut v = json!({
        "bucket": bucket,
        "endpoint": moto.url,
        "region": "us-east-1",
        "volumes": volumes,
        "textfile": "backup.prom",
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    serde_json::from_value(v).unwrap()
}

fn ctx_at(dir: &std::path::Path, day: u32, env: &[(&str, &str)]) -> JobContext {
    let mut values = vec![("R2_ACCESS_KEY_ID", AKID), ("R2_SECRET_ACCESS_KEY", SECRET)];
    values.extend_from_slice(env);
    let mut ctx = context(
        dir,
        &values,
        FixedClock::at(Utc.with_ymd_and_hms(2026, 12, day, 3, 30, 0).unwrap()),
    );
    ctx.request_timeout = Duration::from_secs(30);
    ctx
}

fn bucket(moto: &Moto, b: &str) -> S3 {
    S3::new(
        reqwest::Client::new(),
        &moto.url,
        b,
        "us-east-1",
        AKID,
        SECRET,
    )
    .unwrap()
}

async fn keys(s3: &S3) -> Vec<String> {
    let mut k: Vec<String> = s3
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    k.sort();
    k
}

/// Replaces an object behind obsd's back (boto3, signed: moto refuses anonymous writes
/// over an existing key).
fn overwrite_object(moto: &Moto, bucket: &str, key: &str, content: &[u8]) {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys, boto3; s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id='a', aws_secret_access_key='b'); s3.put_object(Bucket=sys.argv[2], Key=sys.argv[3], Body=sys.stdin.buffer.read())",
            &moto.url,
            bucket,
            key,
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(content).unwrap();
    assert!(child.wait().unwrap().success(), "boto3 put_object");
}

async fn run(ctx: &JobContext, job: &BackupJob) -> Result<(), JobError> {
    let engine = Engine::connect().unwrap();
    backup::run_with(ctx, "backup", job, &engine, &CancellationToken::new()).await
}

fn state(name: &str) -> String {
    docker_ok(&["inspect", "-f", "{{.State.Status}}", name])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_backup_restores_byte_identical_and_a_rerun_uploads_nothing() {
    ensure_image();
    let p = prefix("full");
    let (vol, user, restored) = (
        format!("{p}-data"),
        format!("{p}-user"),
        format!("{p}-restored"),
    );
    let _c = Cleanup {
        containers: vec![user.clone()],
        volumes: vec![vol.clone(), restored.clone()],
    };
    // Modes, owners, a symlink, a hardlink, an empty dir, a long path, an empty file,
    // small files and one file of ~200 MB (several chunks, not compressible).
    volume_with(
        &vol,
        &user,
        "set -e; cd /data; mkdir -p empty deep/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z/aaaaaaaaaaaaaaaaaaaa/bbbbbbbbbbbbbbbbbbbbbbbbbbbbb;\
         echo hello > deep/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z/aaaaaaaaaaaaaaaaaaaa/bbbbbbbbbbbbbbbbbbbbbbbbbbbbb/long-named-file-in-a-long-path.txt;\
         for i in $(seq 1 200); do echo \"row $i $(date)\" > small-$i.txt; done;\
         chmod 600 small-1.txt; chmod 4755 small-2.txt; chown 1234:5678 small-3.txt; chown -R 472:0 deep;\
         chmod 0750 empty; chown 99:99 empty; : > zero; ln -s small-1.txt link; ln -s /nowhere dangling;\
         ln small-4.txt hard; head -c 6000000 /dev/urandom > medium.bin;\
         head -c 200000000 /dev/urandom > big.bin; chmod 640 big.bin; chown 1000:1000 big.bin",
    );
    let before = volume_listing(&vol);
    let moto = moto("bk-full").await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx_at(dir.path(), 6, &[]);
    let j = job(
        &moto,
        "bk-full",
        &[&vol],
        json!({"quiesce": {&vol: "pause"}}),
    );
    run(&ctx, &j).await.unwrap();
    assert_eq!(state(&user), "running", "the paused container is unpaused");

    let s3 = bucket(&moto, "bk-full");
    let all = keys(&s3).await;
    assert!(
        all.contains(&"daily/2026-12-06/manifest.json".to_string()),
        "{all:?}"
    );
    let m: Manifest = backup::load_manifest(&s3, "2026-12-06").await.unwrap();
    assert_eq!(m.sources.len(), 1);
    let src = &m.sources[0];
    assert_eq!(src.quiesce, "pause");
    let big = src.files.iter().find(|f| f.path == "big.bin").unwrap();
    assert_eq!(
        (big.size, big.mode, big.uid, big.gid),
        (200_000_000, 0o640, 1000, 1000)
    );
    assert_eq!(big.chunks.len(), 24, "200 MB in 8 MiB chunks");
    assert!(src
        .files
        .iter()
        .any(|f| f.path == "empty" && f.kind == "dir"));
    assert!(src.files.iter().any(|f| f.path == "link"
        && f.kind == "symlink"
        && f.target.as_deref() == Some("small-1.txt")));
    let tf = read_textfile(&ctx, "backup.prom");
    assert_eq!(
        tf.value("backup_r2_source_success", &[("source", &vol)]),
        Some(1.0)
    );
    assert_eq!(tf.value("backup_r2_run_success", &[]), Some(1.0));
    assert!(tf
        .value("backup_r2_last_success_timestamp_seconds", &[])
        .is_some());
    assert!(tf.value("backup_r2_objects_uploaded", &[]).unwrap() >= 25.0);
    assert!(tf.value("backup_r2_bucket_usage_bytes", &[]).unwrap() > 200e6);
    // Where the volume's time went: every stage measured; the reader's own stages
    // (read, hash, waiting for an upload slot) happen one after another inside the
    // volume's wall time, and so do the compressions (one at a time).
    let stage = |s: &str| {
        tf.value(
            "backup_r2_source_stage_seconds",
            &[("source", &vol), ("stage", s)],
        )
        .unwrap_or_else(|| panic!("stage {s}"))
    };
    let wall = tf
        .value("backup_r2_source_duration_seconds", &[("source", &vol)])
        .unwrap();
    for s in ["read", "hash", "compress", "upload"] {
        assert!(stage(s) > 0.0, "stage {s}: {}", stage(s));
    }
    let serial = stage("read") + stage("hash") + stage("upload_wait");
    assert!(serial <= wall, "{serial} s of serial stages in {wall} s");
    assert!(stage("compress") <= wall, "{} s", stage("compress"));

    // Same day again: nothing uploaded, the bucket unchanged.
    run(&ctx, &j).await.unwrap();
    assert_eq!(keys(&s3).await, all);
    let tf = read_textfile(&ctx, "backup.prom");
    assert_eq!(tf.value("backup_r2_objects_uploaded", &[]), Some(0.0));

    // Restore into a new volume: byte-identical.
    let engine = Engine::connect().unwrap();
    let n = backup::restore_volume(
        &engine,
        Arc::new(s3),
        None,
        src,
        &RestoreTarget {
            volume: &restored,
            image: IMAGE,
            labels: BTreeMap::new(),
        },
        true,
    )
    .await
    .unwrap();
    assert!(n > 200_000_000);
    let after = volume_listing(&restored);
    assert_eq!(before, after);
}

/// A stack applied by `obsctl apply`: three volumes, two mounted by services; the
/// third has no container, so nothing can read it: it fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_volume_failing_alone_then_list_and_restore_through_obsctl() {
    let mut st = Stack::new("bkcli");
    let hc = serve(|_| Reply::text(200, "OK")).await;
    let moto = moto("bk-cli").await;
    st.env_file(format!(
        "R2_ACCESS_KEY_ID={AKID}\nR2_SECRET_ACCESS_KEY={SECRET}\nHC_URL={}/ping/abc\n",
        hc.base
    ));
    let tfdir = tempfile::tempdir().unwrap();
    st.stack_spec()["textfileDir"] = json!(tfdir.path().to_string_lossy());
    st.volume("bka").volume("bkb").volume("bkc");
    st.service(
        "sa",
        service(json!({"volumes": [{"volume": "bka", "target": "/data"}]})),
    );
    st.service(
        "sb",
        service(json!({"volumes": [{"volume": "bkb", "target": "/data"}]})),
    );
    let spec = json!({
        "bucket": "bk-cli",
        "endpoint": moto.url,
        "region": "us-east-1",
        "volumes": ["bka", "bkb", "bkc"],
        "quiesce": {"bka": "pause", "bkb": "stop"},
        "deadManUrlEnv": "HC_URL",
        "textfile": "backup.prom",
        "drill": true,
    });
    st.write();
    st.file(
        "job.yaml",
        &json!({
            "apiVersion": API,
            "kind": "Job",
            "metadata": {"name": "backup"},
            "spec": {"schedule": "30 3 * * *", "backup": spec},
        })
        .to_string(),
    );
    st.apply().expect(0, "apply");
    let (va, vb) = (st.dname("bka"), st.dname("bkb"));
    for v in [&va, &vb] {
        docker_ok(&[
            "run", "--rm", "-v", &format!("{v}:/data"), IMAGE, "sh", "-c",
            "set -e; cd /data; mkdir -p sub/empty; echo one > sub/one; head -c 9000000 /dev/urandom > big; ln -s sub/one l; chown 7:8 sub/one",
        ]);
    }
    let restored: Vec<String> = ["bka", "bkb"]
        .iter()
        .map(|n| format!("{n}-restored-2026-12-07"))
        .collect();
    let _c = Cleanup {
        containers: vec![],
        volumes: restored.clone(),
    };

    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx_at(
        dir.path(),
        7,
        &[("HC_URL", &format!("{}/ping/abc", hc.base))],
    );
    let j: BackupJob = serde_json::from_value(spec.clone()).unwrap();
    let err = run(&ctx, &j).await.unwrap_err();
    assert!(matches!(err, JobError::Partial(_)), "{err}");
    assert!(err.to_string().contains("bkc"), "{err}");
    assert_eq!(state(&st.cname("sa")), "running", "unpaused after the read");
    assert_eq!(
        state(&st.cname("sb")),
        "running",
        "started again after the read"
    );
    let tf = read_textfile(&ctx, "backup.prom");
    for (v, want) in [("bka", 1.0), ("bkb", 1.0), ("bkc", 0.0)] {
        assert_eq!(
            tf.value("backup_r2_source_success", &[("source", v)]),
            Some(want),
            "{v}"
        );
    }
    assert_eq!(tf.value("backup_r2_run_success", &[]), Some(0.0));
    assert_eq!(
        tf.value("backup_r2_last_success_timestamp_seconds", &[]),
        None
    );
    // The drill restored bka and bkb into scratch volumes, matched, removed them.
    assert_eq!(tf.value("backup_r2_drill_success", &[]), Some(1.0));
    assert!(tf.value("backup_r2_drill_bytes", &[]).unwrap() >= 18_000_000.0);
    assert!(tf
        .value("backup_r2_drill_last_success_timestamp_seconds", &[])
        .is_some());
    let scratch = |v: &str| format!("obsd-drill-{v}");
    for v in [&va, &vb] {
        assert!(docker(&["volume", "inspect", &scratch(v)]).status.code() != Some(0));
    }
    // Dead-man: /start then /fail, one rid.
    let pings = hc.requests();
    let paths: Vec<&str> = pings.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/ping/abc/start", "/ping/abc/fail"]);
    let rid = pings[0].q("rid").unwrap();
    assert_eq!(rid.len(), 36);
    assert_eq!(pings[1].q("rid"), Some(rid));
    // No secret value in any object.
    let s3 = bucket(&moto, "bk-cli");
    for k in keys(&s3).await {
        let raw = s3.get(&k).await.unwrap().unwrap();
        let plain = if k.starts_with("objects/") {
            zstd::bulk::decompress(&raw, 16 << 20).unwrap()
        } else {
            raw.to_vec()
        };
        let text = String::from_utf8_lossy(&plain);
        assert!(
            !text.contains(SECRET) && !text.contains(AKID),
            "{k} holds a credential"
        );
    }

    // obsctl backup list -o json: the day, two volumes, the failed one named.
    let dirs = st.dir.to_string_lossy().into_owned();
    let r = st
        .obsctl(&["backup", "list", "--desired-state", &dirs, "-o", "json"])
        .expect(0, "backup list");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["date"], "2026-12-07");
    let names: Vec<&str> = v[0]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bka", "bkb"]);
    assert_eq!(v[0]["failed"][0]["name"], "bkc");
    assert_eq!(v[0]["sources"][0]["sha256"].as_str().unwrap().len(), 64);

    // Corrupt one object of bka: the restore fails before anything is written.
    let m = backup::load_manifest(&s3, "2026-12-07").await.unwrap();
    let a = m.sources.iter().find(|s| s.name == "bka").unwrap();
    let victim = a.files.iter().find(|f| f.path == "big").unwrap().chunks[0].clone();
    overwrite_object(&moto, "bk-cli", &victim, b"not even zstd");
    let r = st
        .obsctl(&["restore", "volume", "bka", "--desired-state", &dirs])
        .expect(1, "restore of a corrupted backup");
    assert!(r.stderr.contains("corrupt"), "{}", r.stderr);
    assert!(
        docker(&["volume", "inspect", &restored[0]]).status.code() != Some(0),
        "nothing was written"
    );
    // The drill fails on it too, before writing, and leaves no scratch volume.
    let engine = Engine::connect().unwrap();
    let e = backup::drill(&engine, Arc::new(bucket(&moto, "bk-cli")))
        .await
        .unwrap_err();
    assert!(e.contains("corrupt"), "{e}");
    assert!(docker(&["volume", "inspect", &scratch(&va)]).status.code() != Some(0));

    // bkb restores into a new volume, identical.
    st.obsctl(&["restore", "volume", "bkb", "--desired-state", &dirs])
        .expect(0, "restore bkb");
    assert_eq!(volume_listing(&restored[1]), volume_listing(&vb));
    // A second restore never writes into the existing volume.
    let r = st
        .obsctl(&["restore", "volume", "bkb", "--desired-state", &dirs])
        .expect(1, "restore into an existing volume");
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
}

/// The child of [`kill_9_mid_upload_then_the_next_run_completes_the_day`]: one backup
/// run, killed with SIGKILL by the parent. Does nothing when run on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn child_backup_process() {
    let (Ok(spec), Ok(dir), Ok(env)) = (
        std::env::var("BK_CHILD_SPEC"),
        std::env::var("BK_CHILD_DIR"),
        std::env::var("BK_CHILD_ENV"),
    ) else {
        return;
    };
    let env: Vec<(String, String)> = serde_json::from_str(&env).unwrap();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let ctx = ctx_at(std::path::Path::new(&dir), 8, &env);
    let j: BackupJob = serde_json::from_str(&spec).unwrap();
    let r = run(&ctx, &j).await;
    // For the memory test: the run's result and this process's peak RSS.
    if let Ok(out) = std::env::var("BK_CHILD_HWM") {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .unwrap()
            .trim()
            .to_string();
        std::fs::write(out, format!("{}\n{hwm}\n", r.is_ok())).unwrap();
    }
}

/// Peak memory of a whole run stays under 64 MiB whatever the volume holds: here
/// ~190 MB of incompressible data (large files in chunks and small files in segments),
/// so every object in flight is as large as it gets. Measured in a child process (the
/// test harness's own threads stay out of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_memory_of_a_run_stays_under_64_mib() {
    ensure_image();
    let p = prefix("rss");
    let (vol, user) = (format!("{p}-data"), format!("{p}-user"));
    let _c = Cleanup {
        containers: vec![user.clone()],
        volumes: vec![vol.clone()],
    };
    volume_with(
        &vol,
        &user,
        "set -e; cd /data; for i in 1 2 3 4 5 6; do head -c 24000000 /dev/urandom > blob-$i; done;\
         mkdir s; for i in $(seq 1 1200); do head -c 40000 /dev/urandom > s/f-$i; done",
    );
    let moto = moto("bk-rss").await;
    let spec = job(&moto, "bk-rss", &[&vol], json!({}));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hwm");
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_backup_process",
            "--ignored",
            "--nocapture",
        ])
        .env("BK_CHILD_SPEC", serde_json::to_string(&spec).unwrap())
        .env("BK_CHILD_DIR", dir.path())
        .env("BK_CHILD_ENV", "[]")
        .env("BK_CHILD_HWM", &out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let report = std::fs::read_to_string(&out).unwrap();
    let mut lines = report.lines();
    assert_eq!(lines.next(), Some("true"), "the child's run succeeded");
    let kib: u64 = lines
        .next()
        .unwrap()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    let s3 = bucket(&moto, "bk-rss");
    assert_eq!(backup::complete_days(&s3).await.unwrap(), ["2026-12-08"]);
    let stored: u64 = s3
        .list("objects/")
        .await
        .unwrap()
        .iter()
        .map(|o| o.size)
        .sum();
    assert!(
        stored > 180_000_000,
        "incompressible: {stored} bytes stored"
    );
    assert!(kib < 64 * 1024, "peak RSS {} MiB", kib / 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_upload_then_the_next_run_completes_the_day() {
    let mut st = Stack::new("bkkill");
    let moto = moto("bk-kill").await;
    st.env_file(format!(
        "R2_ACCESS_KEY_ID={AKID}\nR2_SECRET_ACCESS_KEY={SECRET}\n"
    ));
    st.volume("bkk");
    st.service(
        "sk",
        service(json!({"volumes": [{"volume": "bkk", "target": "/data"}]})),
    );
    let spec = json!({
        "bucket": "bk-kill",
        "endpoint": moto.url,
        "region": "us-east-1",
        "volumes": ["bkk"],
        "quiesce": {"bkk": "pause"},
    });
    st.write();
    st.file(
        "job.yaml",
        &json!({
            "apiVersion": API,
            "kind": "Job",
            "metadata": {"name": "backup"},
            "spec": {"schedule": "30 3 * * *", "backup": spec},
        })
        .to_string(),
    );
    st.apply().expect(0, "apply");
    let vk = st.dname("bkk");
    let restored = "bkk-restored-2026-12-08".to_string();
    let _c = Cleanup {
        containers: vec![format!("obsd-backup-{vk}")],
        volumes: vec![restored.clone()],
    };
    docker_ok(&[
        "run", "--rm", "-v", &format!("{vk}:/data"), IMAGE, "sh", "-c",
        "set -e; cd /data; for i in 1 2 3 4 5; do head -c 24000000 /dev/urandom > blob-$i; done; echo small > s",
    ]);

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_backup_process",
            "--ignored",
            "--nocapture",
        ])
        .env("BK_CHILD_SPEC", spec.to_string())
        .env("BK_CHILD_DIR", dir.path())
        .env("BK_CHILD_ENV", "[]")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let s3 = bucket(&moto, "bk-kill");
    let mut seen = 0;
    for _ in 0..1200 {
        seen = s3.list("objects/").await.unwrap().len();
        if seen >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen >= 3, "the child uploaded objects");
    // SIGKILL: no destructor, no unpause.
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        state(&st.cname("sk")),
        "paused",
        "killed mid-read: left paused"
    );
    assert!(backup::complete_days(&s3).await.unwrap().is_empty());
    let dirs = st.dir.to_string_lossy().into_owned();
    let r = st
        .obsctl(&["backup", "list", "--desired-state", &dirs, "-o", "json"])
        .expect(0, "backup list");
    assert_eq!(r.stdout.trim(), "[]", "an incomplete day is never listed");
    st.obsctl(&["restore", "volume", "bkk", "--desired-state", &dirs])
        .expect(1, "nothing complete to restore");

    // The next reconcile pass unpauses the owned container.
    st.apply().expect(0, "apply after the crash");
    assert_eq!(state(&st.cname("sk")), "running");

    // The next run finishes the day, reusing what the killed run stored.
    let ctx = ctx_at(dir.path(), 8, &[]);
    let j: BackupJob = serde_json::from_value(spec.clone()).unwrap();
    run(&ctx, &j).await.unwrap();
    assert_eq!(backup::complete_days(&s3).await.unwrap(), ["2026-12-08"]);
    let m = backup::load_manifest(&s3, "2026-12-08").await.unwrap();
    let total: std::collections::BTreeSet<&String> = m.objects().collect();
    assert!(
        total.len() > seen,
        "{} objects, {seen} before the kill",
        total.len()
    );
    assert_eq!(state(&st.cname("sk")), "running");
    st.obsctl(&["restore", "volume", "bkk", "--desired-state", &dirs])
        .expect(0, "restore");
    assert_eq!(volume_listing(&restored), volume_listing(&vk));
}

/// Write-once against the real server: a second PUT of a key is refused with 412 and
/// leaves the first content.
#[tokio::test]
async fn a_second_put_of_a_key_is_refused_and_changes_nothing() {
    let moto = moto("bk-once").await;
    let s3 = bucket(&moto, "bk-once");
    use obsd::jobs::backup::s3::Put;
    assert_eq!(
        s3.put_once("k", "first".into()).await.unwrap(),
        Put::Created
    );
    assert_eq!(
        s3.put_once("k", "second".into()).await.unwrap(),
        Put::AlreadyThere
    );
    assert_eq!(&s3.get("k").await.unwrap().unwrap()[..], b"first");
}

/// A proxy in front of `upstream` (moto): `intercept(method, path)` may answer a request
/// itself; everything else is forwarded as it came and answered as moto answered.
async fn proxy<F>(upstream: String, intercept: F) -> String
where
    F: Fn(&axum::http::Method, &str) -> Option<axum::response::Response>
        + Clone
        + Send
        + Sync
        + 'static,
{
    use axum::body::{to_bytes, Body};
    use axum::extract::Request;
    use axum::response::Response;
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |req: Request| {
        let (http, upstream, intercept) = (http.clone(), upstream.clone(), intercept.clone());
        async move {
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let (parts, body) = req.into_parts();
            // The whole body first, also when the answer is made here: an answer sent
            // while the client still sends can reach it as a broken connection, which
            // it retries (a transient error) instead of reading the answer.
            let body = to_bytes(body, usize::MAX).await.unwrap();
            if let Some(r) = intercept(&parts.method, &path) {
                return r;
            }
            let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap();
            let mut fwd = http.request(method, format!("{upstream}{path}"));
            for (k, v) in &parts.headers {
                if k != "host" {
                    fwd = fwd.header(k.as_str(), v.as_bytes());
                }
            }
            let r = fwd.body(body).send().await.unwrap();
            let mut out = Response::builder().status(r.status().as_u16());
            for (k, v) in r.headers() {
                out = out.header(k.as_str(), v.as_bytes());
            }
            out.body(Body::from(r.bytes().await.unwrap())).unwrap()
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    url
}

/// An S3 error answer: `status` with the XML body S3 and R2 send.
fn s3_error(status: u16, code: &str, message: &str) -> axum::response::Response {
    axum::response::Response::builder()
        .status(status)
        .body(axum::body::Body::from(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
        )))
        .unwrap()
}

/// In front of moto: answers every DELETE with R2's lock refusal (403
/// `ObjectLockedByBucketPolicy`) and records its key; forwards everything else.
async fn locking_proxy(upstream: String) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let refused = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = refused.clone();
    let url = proxy(upstream, move |method, path| {
        (method == axum::http::Method::DELETE).then(|| {
            seen.lock().unwrap().push(path.to_string());
            s3_error(
                403,
                "ObjectLockedByBucketPolicy",
                "Object is locked by a bucket lock rule",
            )
        })
    })
    .await;
    (url, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_count_then_size_never_inside_the_lock_and_refusals_reported_once() {
    ensure_image();
    let p = prefix("ret");
    let (vol, user) = (format!("{p}-data"), format!("{p}-user"));
    let _c = Cleanup {
        containers: vec![user.clone()],
        volumes: vec![vol.clone()],
    };
    volume_with(&vol, &user, "echo start > /data/wal");
    let moto = moto("bk-ret").await;
    let s3 = bucket(&moto, "bk-ret");
    let dir = tempfile::tempdir().unwrap();
    let day_run = |day: u32, endpoint: String, max_gb: f64| {
        let vol = vol.clone();
        let dir = dir.path().to_path_buf();
        async move {
            // Each day: a new immutable 5 MB block, a rewritten WAL.
            docker_ok(&[
                "run",
                "--rm",
                "-v",
                &format!("{vol}:/data"),
                IMAGE,
                "sh",
                "-c",
                &format!(
                    "head -c 5000000 /dev/urandom > /data/block-{day}; echo day {day} >> /data/wal"
                ),
            ]);
            let mut j = job_at(&endpoint, "bk-ret", &[&vol]);
            j.keep_daily = 4;
            j.lock_retention_days = 3;
            j.max_bucket_gb = max_gb;
            let ctx = ctx_at(&dir, day, &[]);
            run(&ctx, &j).await.unwrap();
            read_textfile(&ctx, "backup.prom")
        }
    };
    for day in 1..=6 {
        day_run(day, moto.url.clone(), 100.0).await;
    }
    let days = backup::complete_days(&s3).await.unwrap();
    assert_eq!(
        days,
        ["2026-12-03", "2026-12-04", "2026-12-05", "2026-12-06"]
    );
    // Sharing: a block uploaded on day 5 is referenced by day 6 (inside the reuse window).
    let m6 = backup::load_manifest(&s3, "2026-12-06").await.unwrap();
    let b5 = m6.sources[0]
        .files
        .iter()
        .find(|f| f.path == "block-5")
        .unwrap();
    assert!(b5.chunks[0].ends_with("-20261205"), "{:?}", b5.chunks);
    // Day 6 stores block-3 afresh: its day-3 copy leaves the lock window too soon.
    let b3 = m6.sources[0]
        .files
        .iter()
        .find(|f| f.path == "block-3")
        .unwrap();
    assert!(b3.chunks[0].ends_with("-20261205"), "{:?}", b3.chunks);
    assert_referenced_objects_exist(&s3).await;

    // Size: a tiny budget drops old days, but never one inside the lock window.
    let tf = day_run(7, moto.url.clone(), 1e-9).await;
    let days = backup::complete_days(&s3).await.unwrap();
    assert_eq!(days, ["2026-12-05", "2026-12-06", "2026-12-07"]);
    assert_eq!(tf.value("backup_r2_retention_dropped_days", &[]), Some(2.0));
    assert_referenced_objects_exist(&s3).await;

    // Deletes refused by the lock: reported, the run succeeds, not retried next run.
    let (proxy, refused) = locking_proxy(moto.url.clone()).await;
    let tf = day_run(8, proxy.clone(), 1e-9).await;
    let first: Vec<String> = refused.lock().unwrap().clone();
    assert!(!first.is_empty());
    assert_eq!(
        tf.value("backup_r2_retention_refused_deletes", &[]),
        Some(first.len() as f64)
    );
    assert!(backup::complete_days(&s3)
        .await
        .unwrap()
        .contains(&"2026-12-05".to_string()));
    day_run(9, proxy, 1e-9).await;
    let second: Vec<String> = refused.lock().unwrap()[first.len()..].to_vec();
    for k in &first {
        assert!(!second.contains(k), "{k} retried");
    }
}

/// In front of moto: answers the `fail_at`-th PUT of an object (1-based) with 403
/// `AccessDenied` (not retried) while `failing` is set; forwards everything else.
/// Counts the object PUTs it saw.
async fn failing_put_proxy(
    upstream: String,
    fail_at: usize,
    failing: Arc<std::sync::atomic::AtomicBool>,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    let puts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = puts.clone();
    let url = proxy(upstream, move |method, path| {
        if method != axum::http::Method::PUT || !path.contains("/objects/") {
            return None;
        }
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        (n == fail_at && failing.load(Ordering::SeqCst))
            .then(|| s3_error(403, "AccessDenied", "Access Denied"))
    })
    .await;
    (url, puts)
}

/// Several PUTs run at once; one refused in the middle fails the volume (no manifest,
/// no success), the PUTs already handed over are waited for, and the next run completes
/// the day with every referenced object present, the refused one uploaded afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_failing_mid_volume_fails_it_and_the_next_run_completes_the_day() {
    use std::sync::atomic::{AtomicBool, Ordering};
    ensure_image();
    let p = prefix("putfail");
    let (vol, user, restored) = (
        format!("{p}-data"),
        format!("{p}-user"),
        format!("{p}-restored"),
    );
    let _c = Cleanup {
        containers: vec![user.clone()],
        volumes: vec![vol.clone(), restored.clone()],
    };
    // 12 chunks of large files and a segment of small ones.
    volume_with(
        &vol,
        &user,
        "set -e; cd /data; for i in 1 2 3 4 5 6; do head -c 12000000 /dev/urandom > blob-$i; done;\
         for i in $(seq 1 50); do echo row $i > s-$i; done",
    );
    let moto = moto("bk-putfail").await;
    let failing = Arc::new(AtomicBool::new(true));
    let (proxy, puts) = failing_put_proxy(moto.url.clone(), 4, failing.clone()).await;
    let s3 = bucket(&moto, "bk-putfail");
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx_at(dir.path(), 10, &[]);
    let j = job_at(&proxy, "bk-putfail", &[&vol]);

    let e = run(&ctx, &j).await.unwrap_err().to_string();
    assert!(e.contains(&vol) && e.contains("403"), "{e}");
    assert!(backup::complete_days(&s3).await.unwrap().is_empty());
    assert!(!keys(&s3).await.iter().any(|k| k.starts_with("daily/")));
    let tf = read_textfile(&ctx, "backup.prom");
    assert_eq!(
        tf.value("backup_r2_source_success", &[("source", &vol)]),
        Some(0.0)
    );
    assert_eq!(tf.value("backup_r2_run_success", &[]), Some(0.0));
    let first = puts.load(Ordering::SeqCst);
    // The reader stops at the failure: at most the slots' worth of PUTs after it.
    assert!(
        (4..13).contains(&first),
        "{first} object PUTs in the failed run"
    );
    let stored_before = s3.list("objects/").await.unwrap().len();
    assert_eq!(
        stored_before,
        first - 1,
        "every PUT but the refused one landed"
    );

    failing.store(false, Ordering::SeqCst);
    run(&ctx, &j).await.unwrap();
    assert_eq!(backup::complete_days(&s3).await.unwrap(), ["2026-12-10"]);
    assert_referenced_objects_exist(&s3).await;
    let tf = read_textfile(&ctx, "backup.prom");
    assert_eq!(tf.value("backup_r2_run_success", &[]), Some(1.0));
    let m = backup::load_manifest(&s3, "2026-12-10").await.unwrap();
    let engine = Engine::connect().unwrap();
    backup::restore_volume(
        &engine,
        Arc::new(s3),
        None,
        &m.sources[0],
        &RestoreTarget {
            volume: &restored,
            image: IMAGE,
            labels: BTreeMap::new(),
        },
        true,
    )
    .await
    .unwrap();
    assert_eq!(volume_listing(&restored), volume_listing(&vol));
}

fn job_at(endpoint: &str, bucket: &str, volumes: &[&str]) -> BackupJob {
    serde_json::from_value(json!({
        "bucket": bucket,
        "endpoint": endpoint,
        "region": "us-east-1",
        "volumes": volumes,
        "textfile": "backup.prom",
    }))
    .unwrap()
}

/// Every object a complete day references is in the bucket.
async fn assert_referenced_objects_exist(s3: &S3) {
    let present: std::collections::BTreeSet<String> = keys(s3).await.into_iter().collect();
    for d in backup::complete_days(s3).await.unwrap() {
        let m = backup::load_manifest(s3, &d).await.unwrap();
        for k in m.objects() {
            assert!(present.contains(k), "{d} references {k}, which is gone");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_backup_restores_only_with_its_identity() {
    ensure_image();
    let p = prefix("age");
    let (vol, user, restored) = (
        format!("{p}-data"),
        format!("{p}-user"),
        format!("{p}-restored"),
    );
    let _c = Cleanup {
        containers: vec![user.clone()],
        volumes: vec![vol.clone(), restored.clone()],
    };
    volume_with(
        &vol,
        &user,
        "set -e; cd /data; mkdir d; for i in $(seq 1 50); do echo PLAINTEXT-CANARY-$i > d/f$i; done; \
         (for i in $(seq 1 400000); do echo PLAINTEXT-CANARY-big-$i; done) > big.txt",
    );
    let identity = age::x25519::Identity::generate();
    let other = age::x25519::Identity::generate();
    let moto = moto("bk-age").await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx_at(dir.path(), 6, &[]);
    let j = job(
        &moto,
        "bk-age",
        &[&vol],
        json!({"ageRecipient": identity.to_public().to_string()}),
    );
    run(&ctx, &j).await.unwrap();
    let s3 = bucket(&moto, "bk-age");
    let m = backup::load_manifest(&s3, "2026-12-06").await.unwrap();
    assert!(m.encrypted);
    let src = &m.sources[0];
    assert!(
        src.files.iter().any(|f| !f.chunks.is_empty()),
        "big.txt is chunked"
    );
    // Nothing readable in any object (compressed or not).
    for k in m.objects() {
        let raw = s3.get(k).await.unwrap().unwrap();
        assert!(raw.starts_with(b"age-encryption.org/v1"), "{k}");
        assert!(zstd::bulk::decompress(&raw, 16 << 20).is_err(), "{k}");
    }
    let engine = Engine::connect().unwrap();
    let s3 = Arc::new(s3);
    let target = RestoreTarget {
        volume: &restored,
        image: IMAGE,
        labels: BTreeMap::new(),
    };
    for (id, want) in [(None, "encrypted"), (Some(&other), "cannot be decrypted")] {
        let e = backup::restore_volume(&engine, s3.clone(), id, src, &target, true)
            .await
            .unwrap_err();
        assert!(e.contains(want), "{e}");
        assert!(
            docker(&["volume", "inspect", &restored]).status.code() != Some(0),
            "nothing written"
        );
    }
    backup::restore_volume(&engine, s3.clone(), Some(&identity), src, &target, true)
        .await
        .unwrap();
    assert_eq!(volume_listing(&restored), volume_listing(&vol));
}

/// The bucket lock through a fake Cloudflare API on 127.0.0.1: read-modify-write keeps
/// the other rules, a second run writes nothing, public access is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bucket_lock_rule_is_ensured_and_other_rules_kept() {
    let rules = Arc::new(std::sync::Mutex::new(json!([
        {"id": "keep-me", "enabled": true, "prefix": "legal/", "condition": {"type": "Indefinite"}}
    ])));
    let custom_enabled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (r2, ce) = (rules.clone(), custom_enabled.clone());
    let cf = serve(move |req| {
        if req.header("authorization") != Some("Bearer cf-token-123") {
            return Reply::status(403, json!({"success": false, "errors": [{"code": 10000, "message": "Authentication error"}]}));
        }
        let base = "/client/v4/accounts/acc1/r2/buckets/bk-lock";
        match (req.method.as_str(), req.path.strip_prefix(base)) {
            ("GET", Some("/lock")) => Reply::json(json!({"success": true, "errors": [], "messages": [], "result": {"rules": r2.lock().unwrap().clone()}})),
            ("PUT", Some("/lock")) => {
                *r2.lock().unwrap() = req.json()["rules"].clone();
                Reply::json(json!({"success": true, "errors": [], "messages": [], "result": {}}))
            }
            ("GET", Some("/domains/managed")) => Reply::json(json!({"success": true, "errors": [], "messages": [], "result": {"bucketId": "x", "domain": "pub-x.r2.dev", "enabled": false}})),
            ("GET", Some("/domains/custom")) => Reply::json(json!({"success": true, "errors": [], "messages": [], "result": {"domains": [{"domain": "b.example.com", "enabled": ce.load(std::sync::atomic::Ordering::SeqCst)}]}})),
            _ => Reply::status(404, json!({"success": false, "errors": [{"code": 7003, "message": "no route"}]})),
        }
    })
    .await;
    let moto = moto("bk-lock").await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx_at(
        dir.path(),
        6,
        &[("CF_ACCOUNT_ID", "acc1"), ("R2_API_TOKEN", "cf-token-123")],
    );
    let j = job(
        &moto,
        "bk-lock",
        &[],
        json!({"lockRetentionDays": 7, "cloudflare": {"apiBase": format!("{}/client/v4", cf.base)}}),
    );
    run(&ctx, &j).await.unwrap();
    let now = rules.lock().unwrap().clone();
    assert_eq!(now.as_array().unwrap().len(), 2, "{now}");
    assert_eq!(now[0]["id"], "keep-me", "other rules kept as they were");
    assert_eq!(now[0]["prefix"], "legal/");
    assert_eq!(
        now[1],
        json!({"id": "obsd-backup-lock", "enabled": true, "condition": {"type": "Age", "maxAgeSeconds": 604800}})
    );
    let tf = read_textfile(&ctx, "backup.prom");
    assert_eq!(tf.value("backup_r2_bucket_lock_enabled", &[]), Some(1.0));
    assert_eq!(tf.value("backup_r2_bucket_public", &[]), Some(0.0));

    // Second run: nothing to write. A custom domain turned on: public.
    custom_enabled.store(true, std::sync::atomic::Ordering::SeqCst);
    let puts = || cf.requests().iter().filter(|r| r.method == "PUT").count();
    assert_eq!(puts(), 1);
    run(&ctx, &j).await.unwrap();
    assert_eq!(puts(), 1, "the rule is in place: no PUT");
    let tf = read_textfile(&ctx, "backup.prom");
    assert_eq!(tf.value("backup_r2_bucket_public", &[]), Some(1.0));

    // Someone disables the rule: the next run re-enables it.
    rules.lock().unwrap()[1]["enabled"] = json!(false);
    run(&ctx, &j).await.unwrap();
    assert_eq!(rules.lock().unwrap()[1]["enabled"], json!(true));
    assert_eq!(puts(), 2);
}

fn started_at(name: &str) -> String {
    docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", name])
}

/// `obsctl restore volume NAME --overwrite` into the live volume of a running owned
/// service: refused while obsd runs (it would start the service mid-restore); then
/// the service is stopped, the volume restored, the service started again; a failed
/// restore (corrupted object) writes nothing and starts it again too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_overwrite_stops_restores_and_starts_the_live_service() {
    let mut st = Stack::new("bkow");
    let moto = moto("bk-ow").await;
    st.env_file(format!(
        "R2_ACCESS_KEY_ID={AKID}\nR2_SECRET_ACCESS_KEY={SECRET}\n"
    ));
    st.volume("bko");
    st.service(
        "so",
        service(
            json!({"volumes": [{"volume": "bko", "target": "/data"}], "restart": "unless-stopped"}),
        ),
    );
    let spec = json!({
        "bucket": "bk-ow",
        "endpoint": moto.url,
        "region": "us-east-1",
        "volumes": ["bko"],
        "quiesce": {"bko": "none"},
    });
    st.write();
    st.file(
        "job.yaml",
        &json!({
            "apiVersion": API,
            "kind": "Job",
            "metadata": {"name": "backup"},
            "spec": {"schedule": "30 3 * * *", "backup": spec},
        })
        .to_string(),
    );
    st.apply().expect(0, "apply");
    let vol = st.dname("bko");
    let svc = st.cname("so");
    docker_ok(&[
        "run", "--rm", "-v", &format!("{vol}:/data"), IMAGE, "sh", "-c",
        "set -e; cd /data; mkdir -p sub/empty; echo one > sub/one; echo keep > keep; head -c 9000000 /dev/urandom > big; ln -s sub/one l; chown 7:8 sub/one; chmod 640 keep",
    ]);
    let backed_up = volume_listing(&vol);
    let dir = tempfile::tempdir().unwrap();
    let j: BackupJob = serde_json::from_value(spec).unwrap();
    run(&ctx_at(dir.path(), 7, &[]), &j).await.unwrap();

    // The live volume drifts: a file modified, one deleted, one added, a mode changed.
    let drift = |extra: &str| {
        docker_ok(&[
            "run", "--rm", "-v", &format!("{vol}:/data"), IMAGE, "sh", "-c",
            &format!("set -e; cd /data; echo changed > sub/one; rm keep big; chmod 700 sub; echo new > {extra}"),
        ]);
    };
    drift("added");
    assert_ne!(volume_listing(&vol), backed_up);
    let dirs = st.dir.to_string_lossy().into_owned();
    let restore = [
        "restore",
        "volume",
        "bko",
        "--overwrite",
        "--desired-state",
        &dirs,
    ];

    // With obsd running on the state directory: refused, nothing stopped or written.
    {
        let _d = st.spawn_daemon();
        let before = started_at(&svc);
        let drifted = volume_listing(&vol);
        let r = st.obsctl(&restore).expect(1, "overwrite while obsd runs");
        assert!(r.stderr.contains("stop obsd"), "{}", r.stderr);
        assert_eq!(state(&svc), "running");
        assert_eq!(started_at(&svc), before, "not stopped");
        assert_eq!(volume_listing(&vol), drifted, "nothing written");
    }

    // obsd stopped: the service is stopped, the volume restored, the service started.
    let before = started_at(&svc);
    let r = st.obsctl(&restore).expect(0, "overwrite");
    assert!(
        r.stderr.contains(&format!("stopping {svc}")),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!("starting {svc}")),
        "{}",
        r.stderr
    );
    assert!(r.stdout.contains(&format!("into {vol}")), "{}", r.stdout);
    assert_eq!(state(&svc), "running", "started again");
    assert_ne!(started_at(&svc), before, "it was stopped and started");
    // Every backed-up entry is back, byte for byte. A file the backup does not hold
    // stays (documented: the overwrite writes the backup over the volume, it removes
    // nothing); once it is gone the volume equals the backup.
    let restored = volume_listing(&vol);
    assert!(restored.contains("./added "), "{restored}");
    docker_ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{vol}:/data"),
        IMAGE,
        "rm",
        "/data/added",
    ]);
    assert_eq!(volume_listing(&vol), backed_up);

    // A corrupted object: the restore fails before writing anything, and the stopped
    // service runs again.
    drift("added-2");
    let drifted = volume_listing(&vol);
    let s3 = bucket(&moto, "bk-ow");
    let m = backup::load_manifest(&s3, "2026-12-07").await.unwrap();
    let victim = m.sources[0]
        .files
        .iter()
        .find(|f| f.path == "big")
        .unwrap()
        .chunks[0]
        .clone();
    overwrite_object(&moto, "bk-ow", &victim, b"not even zstd");
    let before = started_at(&svc);
    let r = st
        .obsctl(&restore)
        .expect(1, "overwrite from a corrupted backup");
    assert!(r.stderr.contains("corrupt"), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("starting {svc}")),
        "{}",
        r.stderr
    );
    assert_eq!(state(&svc), "running", "started again after the failure");
    assert_ne!(started_at(&svc), before, "it was stopped and started");
    assert_eq!(volume_listing(&vol), drifted, "nothing written");
}
