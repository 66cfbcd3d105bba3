//! The production executor under the runner: dispatch on the body, docker-names with a
//! fake container list, the backup body's explicit configuration error, context swaps.

mod jobs_support;

use jobs_support::*;
use obsd::desired::model::job::{BackupJob, DockerNamesJob};
use obsd::desired::model::JobSpec;
use obsd::jobs::{BodyExecutor, JobMetrics, JobRunner, RunResult, RunnerConfig, SystemClock};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

fn spec() -> JobSpec {
    job_spec("@daily", 30)
}

#[tokio::test]
async fn docker_names_and_backup_through_the_runner() {
    let dir = tempfile::tempdir().unwrap();
    let containers = Arc::new(FakeContainers(Mutex::new(Ok(vec![
        (
            "4f2a9c1b7d3e0a1b2c3d4e5f".into(),
            "/tlsstress-obs-grafana".into(),
        ),
        (
            "9e8d7c6b5a4f3e2d1c0b".into(),
            "/tlsstress-obs-prometheus".into(),
        ),
    ]))));
    let mut ctx = context(dir.path(), &[], Arc::new(SystemClock));
    ctx.containers = containers.clone();
    let exec = Arc::new(BodyExecutor::new(ctx.clone()));
    let shutdown = CancellationToken::new();
    let runner = JobRunner::start(
        RunnerConfig {
            state_dir: dir.path().join("state"),
            clock: Arc::new(SystemClock),
        },
        exec.clone(),
        JobMetrics::new(),
        shutdown.clone(),
    );
    let mut names = spec();
    names.docker_names = Some(DockerNamesJob {
        textfile: "docker_names.prom".into(),
    });
    let mut backup = spec();
    backup.backup = Some(
        serde_json::from_value::<BackupJob>(serde_json::json!({"bucket": "tlsstress-obs-backups"}))
            .unwrap(),
    );
    runner.set_jobs(BTreeMap::from([
        ("docker-names".to_string(), names),
        ("backup".to_string(), backup),
    ]));

    let rec = runner
        .trigger("docker-names")
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(rec.result, RunResult::Success, "{:?}", rec.error);
    let t = read_textfile(&ctx, "docker_names.prom");
    assert_eq!(
        t.value(
            "container_name_info",
            &[
                ("short_id", "4f2a9c1b7d3e"),
                ("name", "tlsstress-obs-grafana")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        t.value(
            "container_name_info",
            &[
                ("short_id", "9e8d7c6b5a4f"),
                ("name", "tlsstress-obs-prometheus")
            ]
        ),
        Some(1.0)
    );
    assert!(t
        .value("docker_names_last_run_timestamp_seconds", &[])
        .is_some());

    // The Docker adapter failing: the run fails and the last good file stays.
    *containers.0.lock().unwrap() = Err("docker daemon unreachable".into());
    let rec = runner
        .trigger("docker-names")
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(rec.result, RunResult::Error);
    assert_eq!(
        rec.error.as_deref(),
        Some("listing containers: docker daemon unreachable")
    );
    assert_eq!(
        read_textfile(&ctx, "docker_names.prom")
            .all("container_name_info")
            .len(),
        2
    );

    // A context swap (e.g. textfile dir changed) applies to the next run.
    *containers.0.lock().unwrap() = Ok(vec![("abcdefabcdef0000".into(), "x".into())]);
    let mut moved = ctx.clone();
    moved.textfile_dir = Some(dir.path().join("elsewhere"));
    exec.set_context(moved.clone());
    assert_eq!(
        runner
            .trigger("docker-names")
            .unwrap()
            .wait()
            .await
            .unwrap()
            .result,
        RunResult::Success
    );
    assert_eq!(
        read_textfile(&moved, "docker_names.prom")
            .all("container_name_info")
            .len(),
        1
    );

    // A backup job without an endpoint fails loudly, never fakes success.
    let rec = runner.trigger("backup").unwrap().wait().await.unwrap();
    assert_eq!(rec.result, RunResult::Error);
    assert_eq!(
        rec.error.as_deref(),
        Some("spec.backup.endpoint is not set (the bucket's S3 API URL)")
    );
    let st = runner.status();
    let b = st.iter().find(|s| s.name == "backup").unwrap();
    assert_eq!(b.kind, "backup");
    assert_eq!(
        b.last_error.as_deref(),
        Some("spec.backup.endpoint is not set (the bucket's S3 API URL)")
    );
    assert!(b.last_success.is_none());
    // status() is what `obsctl jobs -o json` prints.
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json[1]["name"], "docker-names");
    assert_eq!(json[1]["kind"], "dockerNames");
    assert_eq!(json[1]["last_run"]["result"], "success");
    let back: Vec<obsd::jobs::JobStatus> = serde_json::from_value(json).unwrap();
    assert_eq!(back, st, "obsctl can read what the daemon serves");
    runner.shutdown().await;
}
