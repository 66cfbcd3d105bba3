//! Pull policies and moved tags against a real registry: Debian's `docker-registry`
//! started on 127.0.0.1 (the engine trusts loopback registries over plain HTTP).

mod common;

use common::registry::{build, Registry};

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

struct Cleanup {
    project: String,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        common::remove_project(&self.project);
        for i in &self.images {
            docker(&["rmi", "-f", i]);
        }
    }
}

fn obsctl(args: &[&str], state: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_obsctl"))
        .args(args)
        .env("OBSD_STATE_DIR", state)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn running_image(container: &str) -> String {
    docker(&["inspect", "-f", "{{.Image}}", container])
        .1
        .trim()
        .to_string()
}

#[test]
fn pull_policies_and_moved_tags() {
    let tmp = tempfile::tempdir().unwrap();
    let mut registry = Registry::start();
    let port = registry.port;
    let project = format!("obsdt-{}-pull", std::process::id());
    let image = format!("127.0.0.1:{port}/obsdt/app:1");
    let local = format!("obsdt-pull-local-{}:1", std::process::id());
    let _guard = Cleanup {
        project: project.clone(),
        images: vec![image.clone(), local.clone()],
    };

    // v1 in the registry only (removed locally, so the first apply must pull).
    let v1 = build(&image, "v1", false);
    let (ok, out) = docker(&["push", &image]);
    assert!(ok, "{out}");
    docker(&["rmi", "-f", &image]);

    let ds = tmp.path().join("ds");
    std::fs::create_dir(&ds).unwrap();
    let state = tmp.path().join("state");
    let svc = |name: &str, img: &str, policy: &str| {
        format!(
            "---\napiVersion: obs.tlsstress.art/v1alpha1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  image: {img}\n  pullPolicy: {policy}\n  command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 1; done\"]\n  stopGracePeriod: 1s\n"
        )
    };
    let head = format!(
        "apiVersion: obs.tlsstress.art/v1alpha1\nkind: Stack\nmetadata: {{name: t}}\nspec: {{project: {project}, defaultNetwork: default}}\n---\napiVersion: obs.tlsstress.art/v1alpha1\nkind: Network\nmetadata: {{name: default}}\nspec: {{}}\n"
    );
    let write = |body: String| {
        std::fs::write(ds.join("s.yaml"), format!("{head}{body}")).unwrap();
        std::fs::set_permissions(ds.join("s.yaml"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
    };
    let dsp = ds.to_str().unwrap();

    // Always: pulled on apply.
    write(svc("remote", &image, "Always"));
    let (code, out) = obsctl(&["apply", "--desired-state", dsp], &state);
    assert_eq!(code, 0, "{out}");
    let c_remote = format!("{project}-remote");
    assert_eq!(running_image(&c_remote), v1);

    // The tag moves in the registry: the next apply pulls it and replaces the container.
    let v2 = build(&image, "v2", false);
    assert_ne!(v1, v2);
    let (ok, out) = docker(&["push", &image]);
    assert!(ok, "{out}");
    // Make the local tag point back at v1, as on a host that has not pulled yet.
    docker(&["tag", &v1, &image]);
    let (code, out) = obsctl(&["diff", "--desired-state", dsp], &state);
    assert_eq!(code, 0, "diff never pulls, so it sees nothing yet: {out}");
    let (code, out) = obsctl(&["apply", "--desired-state", dsp], &state);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("remote: recreate"), "{out}");
    assert_eq!(
        running_image(&c_remote),
        v2,
        "moved tag → image_changed → replaced"
    );

    // IfNotPresent: a local tag moved by hand is image_changed drift.
    build(&local, "local-a", false);
    write(svc("local", &local, "IfNotPresent"));
    let (code, out) = obsctl(&["apply", "--desired-state", dsp], &state);
    assert_eq!(code, 0, "{out}");
    let moved = build(&local, "local-b", false);
    let (code, out) = obsctl(&["diff", "--desired-state", dsp], &state);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("image_changed"), "{out}");
    let (code, out) = obsctl(&["apply", "--desired-state", dsp], &state);
    assert_eq!(code, 0, "{out}");
    assert_eq!(running_image(&format!("{project}-local")), moved);

    // Registry unreachable: a service whose image is nowhere fails with a clear error;
    // the one whose image is already present keeps running.
    registry.stop();
    let missing = format!("127.0.0.1:{port}/obsdt/never-pushed:1");
    write(format!(
        "{}{}",
        svc("local", &local, "IfNotPresent"),
        svc("ghost", &missing, "IfNotPresent")
    ));
    let (code, out) = obsctl(&["apply", "--desired-state", dsp], &state);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("ghost") && out.contains("pull failed"),
        "{out}"
    );
    assert_eq!(
        running_image(&format!("{project}-local")),
        moved,
        "the healthy service is untouched"
    );
}
