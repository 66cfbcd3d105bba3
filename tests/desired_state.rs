//! The shipped desired state: it loads, it matches the legacy compose file it replaces
//! for every container-level field, and the crds-docs reference is up to date.

use obsd::desired::load::{load_dir, LoadOptions};
use obsd::desired::DesiredState;
use obsd::docker::CreateContainer;
use obsd::reconcile::render::render_service;
use obsd::secret::HostKey;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `NAME=` of `.env.example`, given a recognisable dummy value, in a 0600 file.
fn dummy_env(dir: &Path) -> PathBuf {
    let example = std::fs::read_to_string(repo().join("desired-state/.env.example")).unwrap();
    let mut out = String::new();
    for line in example.lines() {
        if let Some((k, _)) = line.split_once('=') {
            if !k.starts_with('#') && !k.trim().is_empty() {
                out.push_str(&format!("{k}=dummy-{}\n", k.to_lowercase()));
            }
        }
    }
    let path = dir.join("test.env");
    std::fs::write(&path, out).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn load_with_env(dir: &Path, env: &Path) -> DesiredState {
    let opts = LoadOptions {
        process_env: Some(BTreeMap::new()),
        env_file: Some(env.to_path_buf()),
        ..Default::default()
    };
    match load_dir(dir, &opts) {
        Ok(s) => s,
        Err(e) => panic!("{} does not load:\n{e}", dir.display()),
    }
}

#[test]
fn shipped_desired_state_is_valid() {
    let opts = LoadOptions {
        process_env: Some(BTreeMap::new()),
        ..Default::default()
    };
    let s = load_dir(&repo().join("desired-state"), &opts).unwrap_or_else(|e| panic!("{e}"));
    // The LLD inventory minus the sidecars that became jobs.
    for svc in [
        "caddy",
        "grafana",
        "prometheus",
        "loki",
        "tempo",
        "vector",
        "blackbox",
        "node-exporter",
        "cadvisor",
        "alertmanager",
        "pyroscope",
        "alloy",
        "pushgateway",
        "k6-journey",
    ] {
        assert!(s.services.contains_key(svc), "service {svc} missing");
    }
    assert_eq!(
        s.volumes.len(),
        10,
        "the twelve named volumes of the LLD, less logs_ckpt and pip_cache (only the sidecars that became Jobs used them)"
    );
    for gone in ["logs_ckpt", "pip_cache"] {
        assert!(!s.volumes.contains_key(gone), "{gone} is still declared");
    }
    // Only caddy publishes host ports, and exactly 80 and 443.
    for (name, r) in &s.services {
        let ports: Vec<u16> = r.spec.ports.iter().map(|p| p.host).collect();
        if name == "caddy" {
            assert_eq!(ports, vec![80, 443]);
        } else {
            assert!(ports.is_empty(), "{name} publishes {ports:?}");
        }
    }
}

/// The container obsd would create, minus what legitimately differs between the two
/// sources: obsd's own labels.
fn comparable(mut c: CreateContainer) -> CreateContainer {
    c.labels.retain(|k, _| !k.starts_with("obs.tlsstress.art/"));
    c
}

#[test]
fn compose_import_matches_desired_state_for_every_container_field() {
    let tmp = tempfile::tempdir().unwrap();
    let env = dummy_env(tmp.path());
    let desired = load_with_env(&repo().join("desired-state"), &env);

    let compose = repo().join("compose-legacy/docker-compose.yml");
    let yaml = obsd::desired::compose::import_file(&compose).unwrap();
    // The legacy project name is given on the docker-compose command line (v1 has no
    // top-level `name:`); the import names it after the directory.
    assert!(yaml.contains("project: compose-legacy"), "{yaml}");
    let yaml = yaml.replace("project: compose-legacy", "project: tlsstress-obs");
    let imported_dir = tmp.path().join("imported");
    std::fs::create_dir(&imported_dir).unwrap();
    std::fs::write(imported_dir.join("stack.yaml"), yaml).unwrap();
    let imported = load_with_env(&imported_dir, &env);

    let key = HostKey([7; 32]);
    let sidecars: BTreeMap<&str, &str> = [
        ("cloud-poller", "cloudPoller"),
        ("docker-names", "dockerNames"),
        ("status-gen", "statusPage"),
        ("backup-r2", "backup"),
        ("logs-shipper", "logsShipper"),
        ("aws-cron-monitor", "awsCronMonitor"),
    ]
    .into_iter()
    .collect();
    let mut compared = 0;
    for name in imported.services.keys() {
        if let Some(body) = sidecars.get(name.as_str()) {
            assert!(
                !desired.services.contains_key(name),
                "{name} should be a Job, not a container"
            );
            assert!(
                desired
                    .jobs
                    .values()
                    .any(|j| j.spec.bodies() == vec![*body]),
                "no Job with a {body} body replaces {name}"
            );
            continue;
        }
        assert!(
            desired.services.contains_key(name),
            "compose service {name} missing from desired-state"
        );
        let a = comparable(render_service(&imported, name, &key).unwrap().create);
        let b = comparable(render_service(&desired, name, &key).unwrap().create);
        assert_eq!(
            a, b,
            "service {name}: container differs between compose and desired-state"
        );
        compared += 1;
    }
    assert_eq!(
        compared,
        desired.services.len(),
        "every desired service has a compose counterpart"
    );
    // Every desired volume is the compose volume of the same name; the compose volumes
    // obsd no longer declares were used only by sidecars that became Jobs.
    for v in desired.volumes.keys() {
        assert!(
            imported.volumes.contains_key(v),
            "volume {v} is not in compose"
        );
    }
    for v in imported
        .volumes
        .keys()
        .filter(|v| !desired.volumes.contains_key(*v))
    {
        let users: Vec<&String> = imported
            .services
            .iter()
            .filter(|(_, r)| r.spec.volumes.iter().any(|m| &m.volume == v))
            .map(|(n, _)| n)
            .collect();
        assert!(
            !users.is_empty() && users.iter().all(|u| sidecars.contains_key(u.as_str())),
            "compose volume {v} is dropped but used by {users:?}"
        );
    }
}

#[test]
fn crds_docs_are_up_to_date() {
    let dir = repo().join("crds-docs");
    let mut stale = Vec::new();
    for (name, content) in obsd::desired::schema::render_docs() {
        let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        if on_disk != content {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "crds-docs is stale ({stale:?}); regenerate with `cargo run --bin obsctl -- gen-docs crds-docs`"
    );
}

#[test]
fn crds_docs_examples_load() {
    let tmp = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(repo().join("crds-docs/examples")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, tmp.path().join(f.file_name().unwrap())).unwrap();
    }
    std::fs::create_dir_all(tmp.path().join("config/prometheus")).unwrap();
    std::fs::write(
        tmp.path().join("config/prometheus/prometheus.yml"),
        "global: {}\n",
    )
    .unwrap();
    let env = tmp.path().join(".env");
    std::fs::write(&env, "HEALTHCHECKS_OBSD_URL=x\n").unwrap();
    std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o600)).unwrap();
    let opts = LoadOptions {
        process_env: Some(BTreeMap::new()),
        ..Default::default()
    };
    let s = load_dir(tmp.path(), &opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.services.len(), 1);
    assert_eq!(s.jobs.len(), 1);
}

#[test]
fn desired_state_files_carry_the_schema_modeline() {
    for f in std::fs::read_dir(repo().join("desired-state")).unwrap() {
        let p = f.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) == Some("yaml") {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(
                text.starts_with("# yaml-language-server: $schema=../crds-docs/obsd.schema.json"),
                "{} lacks the modeline",
                p.display()
            );
        }
    }
}
