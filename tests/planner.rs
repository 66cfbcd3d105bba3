//! Planner + executor against the recording fake engine: which calls each scenario
//! makes, and that a converged state makes none that write.

use obsd::desired::load::{load_dir, LoadOptions};
use obsd::desired::DesiredState;
use obsd::docker::fake::FakeDocker;
use obsd::docker::{ContainerInfo, RunState};
use obsd::reconcile::pass;
use obsd::reconcile::plan::Reason;
use obsd::secret::HostKey;
use obsd::state::Persisted;
use std::collections::BTreeMap;

const STACK: &str = r#"
apiVersion: obs.tlsstress.art/v1alpha1
kind: Stack
metadata: {name: t}
spec: {project: p, defaultNetwork: default}
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Network
metadata: {name: default}
spec: {}
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Volume
metadata: {name: data}
spec: {}
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Service
metadata: {name: db}
spec:
  image: img:1
  volumes: [{volume: data, target: /data}]
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Service
metadata: {name: web}
spec:
  image: img:1
  env: {A: "1"}
  dependsOn: [{service: db}]
"#;

fn desired(extra: &str, replace: Option<(&str, &str)>) -> (tempfile::TempDir, DesiredState) {
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!("{STACK}{extra}");
    if let Some((a, b)) = replace {
        text = text.replace(a, b);
    }
    std::fs::write(dir.path().join("s.yaml"), text).unwrap();
    let opts = LoadOptions {
        process_env: Some(BTreeMap::new()),
        ..Default::default()
    };
    let s = load_dir(dir.path(), &opts).unwrap_or_else(|e| panic!("{e}"));
    (dir, s)
}

fn engine() -> FakeDocker {
    let f = FakeDocker::new();
    f.add_image("img:1", "sha256:one");
    f
}

async fn converge(f: &FakeDocker, d: &DesiredState, p: &mut Persisted) -> obsd::reconcile::Pass {
    pass(f, d, &HostKey([1; 32]), p, true, false).await.unwrap()
}

#[tokio::test]
async fn converges_then_makes_no_write_calls() {
    let f = engine();
    let (_d, s) = desired("", None);
    let mut p = Persisted::default();
    let first = converge(&f, &s, &mut p).await;
    assert!(!first.failed());
    let w = f.writes();
    // Network and volume first, then db before web (dependency order).
    assert_eq!(w[0], "create_network p_default");
    assert_eq!(w[1], "create_volume p_data");
    let db = w.iter().position(|c| c == "create_container p-db").unwrap();
    let web = w
        .iter()
        .position(|c| c == "create_container p-web")
        .unwrap();
    assert!(db < web, "{w:?}");

    f.clear_calls();
    let second = converge(&f, &s, &mut p).await;
    assert!(second.plan.in_sync(), "{:?}", second.plan.resources);
    assert_eq!(
        f.writes(),
        Vec::<String>::new(),
        "steady state must not write"
    );
}

#[tokio::test]
async fn repairs_missing_and_stopped() {
    let f = engine();
    let (_d, s) = desired("", None);
    let mut p = Persisted::default();
    converge(&f, &s, &mut p).await;
    f.remove_by_name("p-web");
    f.with_container("p-db", |c| c.state = RunState::Exited);
    f.clear_calls();
    let r = converge(&f, &s, &mut p).await;
    let reasons = |n: &str| {
        r.plan
            .resources
            .iter()
            .find(|x| x.name == n)
            .unwrap()
            .drift
            .clone()
    };
    assert_eq!(reasons("web"), vec![Reason::Missing]);
    assert_eq!(reasons("db"), vec![Reason::Stopped]);
    let w = f.writes();
    assert!(w.contains(&"create_container p-web".to_string()), "{w:?}");
    assert!(w.iter().any(|c| c.starts_with("start_container")), "{w:?}");
    assert!(!w.iter().any(|c| c.starts_with("remove")), "{w:?}");
}

#[tokio::test]
async fn env_change_replaces_only_that_service_safely() {
    let f = engine();
    let (_d, s) = desired("", None);
    let mut p = Persisted::default();
    converge(&f, &s, &mut p).await;
    let db_id = f
        .containers()
        .iter()
        .find(|c| c.name == "p-db")
        .unwrap()
        .id
        .clone();
    let (_d2, s2) = desired("", Some(("A: \"1\"", "A: \"2\"")));
    f.clear_calls();
    let r = converge(&f, &s2, &mut p).await;
    let web = r.plan.resources.iter().find(|x| x.name == "web").unwrap();
    assert_eq!(web.drift, vec![Reason::SpecChanged]);
    assert!(web
        .changes
        .iter()
        .any(|c| c.path == "env.A" && c.applied == "1" && c.desired == "2"));
    let w = f.writes();
    assert_eq!(w[0], "create_container p-web--next", "{w:?}");
    assert!(
        w.iter()
            .any(|c| c.starts_with("rename_container") && c.ends_with(" p-web")),
        "{w:?}"
    );
    let cs = f.containers();
    assert_eq!(cs.iter().filter(|c| c.name.starts_with("p-web")).count(), 1);
    assert_eq!(
        cs.iter().find(|c| c.name == "p-db").unwrap().id,
        db_id,
        "db untouched"
    );
}

#[tokio::test]
async fn name_conflict_is_reported_and_left_alone() {
    let f = engine();
    f.add_container(ContainerInfo {
        id: "f".repeat(64),
        name: "p-web".into(),
        image: "other".into(),
        image_id: "sha256:x".into(),
        labels: BTreeMap::new(),
        state: RunState::Running,
        health: None,
        status: "Up".into(),
        ips: BTreeMap::new(),
    });
    let (_d, s) = desired("", None);
    let mut p = Persisted::default();
    let r = converge(&f, &s, &mut p).await;
    let web = r.plan.resources.iter().find(|x| x.name == "web").unwrap();
    assert_eq!(web.drift, vec![Reason::NameConflict]);
    assert!(
        !f.writes().iter().any(|c| c.contains("ffffffffffff")),
        "{:?}",
        f.writes()
    );
}

#[tokio::test]
async fn orphan_container_removed_volume_kept() {
    let f = engine();
    let (_d, s) = desired("", None);
    let mut p = Persisted::default();
    converge(&f, &s, &mut p).await;
    // Drop the db service and the volume from the desired state.
    let text = STACK
        .replace(
            "---\napiVersion: obs.tlsstress.art/v1alpha1\nkind: Service\nmetadata: {name: db}\nspec:\n  image: img:1\n  volumes: [{volume: data, target: /data}]\n",
            "",
        )
        .replace("---\napiVersion: obs.tlsstress.art/v1alpha1\nkind: Volume\nmetadata: {name: data}\nspec: {}\n", "")
        .replace("  dependsOn: [{service: db}]\n", "");
    assert!(!text.contains("name: db") && !text.contains("kind: Volume"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.yaml"), text).unwrap();
    let opts = LoadOptions {
        process_env: Some(BTreeMap::new()),
        ..Default::default()
    };
    let s3 = load_dir(dir.path(), &opts).unwrap_or_else(|e| panic!("{e}"));
    f.clear_calls();
    let r = converge(&f, &s3, &mut p).await;
    assert!(f.containers().iter().all(|c| c.name != "p-db"));
    assert_eq!(f.volumes().len(), 1, "the volume is never removed");
    assert!(!f.writes().iter().any(|c| c.starts_with("remove_volume")));
    let vol = r
        .plan
        .resources
        .iter()
        .find(|x| x.kind == obsd::desired::model::Kind::Volume)
        .unwrap();
    assert_eq!(vol.drift, vec![Reason::Orphan]);
}

#[tokio::test]
async fn a_failing_service_does_not_block_the_others() {
    let f = engine();
    f.break_pull("missing:1");
    let extra = "---\napiVersion: obs.tlsstress.art/v1alpha1\nkind: Service\nmetadata: {name: broken}\nspec: {image: \"missing:1\"}\n";
    let (_d, s) = desired(extra, None);
    let mut p = Persisted::default();
    let r = converge(&f, &s, &mut p).await;
    assert!(r.failed());
    let names: Vec<String> = f.containers().into_iter().map(|c| c.name).collect();
    assert!(
        names.contains(&"p-web".to_string()) && names.contains(&"p-db".to_string()),
        "{names:?}"
    );
    let b = p.backoff.get("broken").expect("backoff recorded");
    assert_eq!(b.failures, 1);
    assert!(b.last_error.as_deref().unwrap().contains("missing:1"));
    // Backing off: the next immediate pass does not retry the pull.
    f.clear_calls();
    converge(&f, &s, &mut p).await;
    assert!(
        !f.writes().iter().any(|c| c.contains("pull_image")),
        "{:?}",
        f.writes()
    );
}

#[tokio::test]
async fn interrupted_replace_is_cleaned_up() {
    let f = engine();
    let (_d, s) = desired("", None);
    let mut p = Persisted::default();
    converge(&f, &s, &mut p).await;
    // A crash left a half-made temp container next to the original.
    let web = f
        .containers()
        .into_iter()
        .find(|c| c.name == "p-web")
        .unwrap();
    let mut temp = web.clone();
    temp.id = "e".repeat(64);
    temp.name = "p-web--next".into();
    temp.labels
        .insert("obs.tlsstress.art/spec-hash".into(), "stale".into());
    temp.state = RunState::Created;
    f.add_container(temp);
    converge(&f, &s, &mut p).await;
    let names: Vec<String> = f
        .containers()
        .into_iter()
        .map(|c| c.name)
        .filter(|n| n.starts_with("p-web"))
        .collect();
    assert_eq!(names, vec!["p-web".to_string()]);
    // A crash after removing the original: the complete temp is adopted.
    let mut web = f
        .containers()
        .into_iter()
        .find(|c| c.name == "p-web")
        .unwrap();
    f.remove_by_name("p-web");
    web.name = "p-web--next".into();
    web.state = RunState::Created;
    f.add_container(web.clone());
    f.clear_calls();
    converge(&f, &s, &mut p).await;
    let w = f.writes();
    assert!(
        w.iter()
            .any(|c| c.starts_with("rename_container") && c.ends_with(" p-web")),
        "{w:?}"
    );
    assert!(
        !w.iter().any(|c| c.starts_with("create_container")),
        "adopted, not recreated: {w:?}"
    );
}
