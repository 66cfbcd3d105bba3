//! The planner as the pure function it is: a desired state loaded from inline YAML, an
//! `Observed` built by hand, and the drift reasons and steps it must produce. One row
//! per situation; together they cover every drift reason.

use super::*;
use crate::desired::load::{load_dir, LoadOptions};
use crate::docker::{ContainerInfo, NetworkInfo, RunState, VolumeInfo};
use crate::reconcile::render::render_service;
use std::collections::BTreeMap;

const STACK: &str = r#"
apiVersion: obs.tlsstress.art/v1alpha1
kind: Stack
metadata: {name: t}
spec: {project: t, defaultNetwork: default, envFile: .env}
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
metadata: {name: web}
spec:
  image: img:1
  restart: unless-stopped
  configFiles: [{source: web.conf, target: /etc/web.conf, onChange: restart}]
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Service
metadata: {name: sig}
spec:
  image: img:1
  restart: unless-stopped
  configFiles: [{source: sigdir, target: /etc/sig, onChange: {signal: SIGHUP}}]
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Service
metadata: {name: rec}
spec:
  image: img:1
  restart: unless-stopped
  configFiles: [{source: recdir, target: /etc/rec, onChange: recreate}]
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Service
metadata: {name: rel}
spec:
  image: img:1
  restart: unless-stopped
  configFiles: [{source: sigdir, target: /etc/sig, onChange: {exec: [app, reload]}}]
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Service
metadata: {name: relfile}
spec:
  image: img:1
  restart: unless-stopped
  configFiles: [{source: web.conf, target: /etc/web.conf, onChange: {http: {port: 9090, path: /-/reload}}}]
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Service
metadata: {name: chk}
spec:
  image: img:1
  restart: unless-stopped
  configFiles: [{source: web.conf, target: /etc/web.conf, onChange: restart}]
  configCheck: {command: [web, --check, /etc/web.conf]}
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Service
metadata: {name: oneshot}
spec: {image: img:1, restart: "no"}
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Service
metadata: {name: never}
spec: {image: "absent:1", pullPolicy: Never}
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Service
metadata: {name: pulled}
spec: {image: "remote:1"}
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Service
metadata: {name: sec}
spec:
  image: img:1
  secretEnv: {PASSWORD: DB_PASSWORD}
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Service
metadata: {name: watched}
spec:
  image: remote:1
  update: {image: {policy: notify, checkInterval: 1h}}
"#;

const KEY: HostKey = HostKey([7; 32]);
const IMAGE_ID: &str = "sha256:aaaa";

struct Fixture {
    _dir: tempfile::TempDir,
    desired: DesiredState,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("s.yaml"), STACK).unwrap();
    std::fs::write(p.join("web.conf"), "a\n").unwrap();
    for d in ["sigdir", "recdir"] {
        std::fs::create_dir(p.join(d)).unwrap();
        std::fs::write(p.join(d).join("f"), "a\n").unwrap();
    }
    // The env file is configured but absent: `sec` cannot render its secret.
    let opts = LoadOptions {
        process_env: Some(BTreeMap::new()),
        ..Default::default()
    };
    let desired = load_dir(p, &opts).unwrap_or_else(|e| panic!("{e}"));
    Fixture { _dir: dir, desired }
}

impl Fixture {
    /// The container obsd would have created for `svc`, running and in sync.
    fn ctr(&self, svc: &str) -> ContainerInfo {
        let r = render_service(&self.desired, svc, &KEY).unwrap();
        ContainerInfo {
            id: format!("{svc}-id-0123456789"),
            name: r.create.name.clone(),
            image: r.create.image.clone(),
            image_id: IMAGE_ID.into(),
            labels: r.create.labels.clone(),
            state: RunState::Running,
            health: None,
            status: "Up 1 minute".into(),
            ips: BTreeMap::new(),
        }
    }

    /// Everything in sync: networks, volumes, and every renderable service running.
    fn converged(&self) -> Observed {
        let mut o = Observed {
            images: BTreeMap::from([
                ("img:1".to_string(), Some(IMAGE_ID.to_string())),
                ("absent:1".to_string(), None),
                ("remote:1".to_string(), Some(IMAGE_ID.to_string())),
            ]),
            networks: vec![NetworkInfo {
                id: "n".into(),
                name: "t_default".into(),
                labels: owned_labels(),
            }],
            volumes: vec![VolumeInfo {
                name: "t_data".into(),
                labels: owned_labels(),
                mountpoint: "/v".into(),
            }],
            ..Default::default()
        };
        for svc in [
            "web", "sig", "rec", "rel", "relfile", "chk", "oneshot", "pulled", "watched",
        ] {
            o.containers.push(self.ctr(svc));
        }
        o
    }
}

/// A recorded rollback of the rendered spec `r`.
fn rolled_back(r: &crate::reconcile::render::Rendered) -> crate::state::HeldSpec {
    crate::state::HeldSpec {
        spec_hash: r.spec_hash.clone(),
        config_hashes: r.config_hashes.clone(),
        reason: "the new container exited (code 1, state exited) within 0.3s".into(),
        log_tail: "starting\nError: bad config line 3\n".into(),
        at_ms: 1,
    }
}

/// A registry check that compared against the local image `local_id`.
fn check(local_id: &str, outdated: bool, error: Option<&str>) -> crate::state::ImageCheck {
    crate::state::ImageCheck {
        checked_at_ms: 1,
        remote_digest: Some("sha256:bbbb".into()),
        local_id: Some(local_id.into()),
        outdated,
        error: error.map(str::to_string),
        retry_at_ms: None,
    }
}

fn owned_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(labels::STACK.to_string(), "t".to_string())])
}

fn with(o: &mut Observed, name: &str, f: impl FnOnce(&mut ContainerInfo)) {
    let c = o
        .containers
        .iter_mut()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"));
    f(c);
}

/// Step names, as `obsctl diff` would show them (`record` included).
fn steps(p: &Plan, svc: &str) -> Vec<String> {
    p.services
        .iter()
        .find(|s| s.service == svc)
        .map(|s| {
            s.steps
                .iter()
                .map(|st| match st {
                    Step::Signal { signal, .. } => format!("signal {signal}"),
                    other => other.action_name().to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn drift(p: &Plan, kind: Kind, name: &str) -> Vec<Reason> {
    p.resources
        .iter()
        .find(|r| r.kind == kind && r.name == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:#?}", p.resources))
        .drift
        .clone()
}

type Edit = fn(&Fixture, &mut Observed);

/// (what, service, how the converged host differs, expected drift, expected steps).
type Row = (
    &'static str,
    &'static str,
    Edit,
    Vec<Reason>,
    Vec<&'static str>,
);

#[test]
fn drift_and_steps_per_situation() {
    service_rows();
}

#[test]
fn infrastructure_and_orphans() {
    infra_rows();
}

#[test]
fn every_drift_reason_is_covered() {
    // The rows above, between them, must produce every contract reason: adding a reason
    // without a row fails here.
    let mut seen = service_rows();
    seen.extend(infra_rows());
    for r in Reason::ALL {
        assert!(
            seen.contains(&r),
            "drift reason {r:?} has no row in the planner tables"
        );
    }
}

/// Runs the service table; returns every reason it checked.
fn service_rows() -> std::collections::BTreeSet<Reason> {
    use Reason::*;
    let mut seen = std::collections::BTreeSet::new();
    let f = fixture();
    let cases: Vec<Row> =
        vec![
        ("in sync", "web", |_, _| {}, vec![], vec![]),
        (
            "missing: created",
            "web",
            |_, o| o.containers.retain(|c| c.name != "t-web"),
            vec![Missing],
            vec!["create"],
        ),
        (
            "missing and the image is absent: pulled first",
            "pulled",
            |_, o| {
                o.containers.retain(|c| c.name != "t-pulled");
                o.images.insert("remote:1".into(), None);
            },
            vec![Missing],
            vec!["pull", "create"],
        ),
        (
            "stopped: started",
            "web",
            |_, o| with(o, "t-web", |c| c.state = RunState::Exited),
            vec![Stopped],
            vec!["start"],
        ),
        (
            "paused (a backup's quiesce cut short by a crash): unpaused",
            "web",
            |_, o| with(o, "t-web", |c| c.state = RunState::Paused),
            vec![Stopped],
            vec!["unpause"],
        ),
        (
            "paused by a backup of this process mid-read: left alone",
            "web",
            |_, o| {
                with(o, "t-web", |c| c.state = RunState::Paused);
                let id = o.containers.iter().find(|c| c.name == "t-web").unwrap().id.clone();
                o.quiesced.insert(id);
            },
            vec![],
            vec![],
        ),
        (
            "stopped by a backup of this process mid-read: not started",
            "web",
            |_, o| {
                with(o, "t-web", |c| c.state = RunState::Exited);
                let id = o.containers.iter().find(|c| c.name == "t-web").unwrap().id.clone();
                o.quiesced.insert(id);
            },
            vec![],
            vec![],
        ),
        (
            "spec changed while a backup holds it for a read: the replace waits",
            "web",
            |_, o| {
                with(o, "t-web", |c| {
                    c.state = RunState::Paused;
                    c.labels.insert(labels::SPEC_HASH.into(), "old".into());
                });
                let id = o.containers.iter().find(|c| c.name == "t-web").unwrap().id.clone();
                o.quiesced.insert(id);
            },
            vec![SpecChanged],
            vec![],
        ),
        (
            "paused one-shot: unpaused too",
            "oneshot",
            |_, o| with(o, "t-oneshot", |c| c.state = RunState::Paused),
            vec![Stopped],
            vec!["unpause"],
        ),
        (
            "a one-shot that exited is left alone",
            "oneshot",
            |_, o| with(o, "t-oneshot", |c| c.state = RunState::Exited),
            vec![],
            vec![],
        ),
        (
            "created but never started: started whatever the policy",
            "oneshot",
            |_, o| with(o, "t-oneshot", |c| c.state = RunState::Created),
            vec![Stopped],
            vec!["start"],
        ),
        (
            "unhealthy: restarted",
            "web",
            |_, o| with(o, "t-web", |c| c.health = Some(Health::Unhealthy)),
            vec![Unhealthy],
            vec!["restart"],
        ),
        (
            "crash-looping: failed, nothing to do",
            "web",
            |_, o| with(o, "t-web", |c| c.state = RunState::Restarting),
            vec![Failed],
            vec![],
        ),
        (
            "crash-looping past the limit: stopped and held",
            "web",
            |f, o| {
                with(o, "t-web", |c| c.state = RunState::Restarting);
                o.restart_counts.insert(f.ctr("web").id, CRASH_LOOP_RESTARTS);
            },
            vec![CrashLoop],
            vec!["hold"],
        ),
        (
            "held after a crash loop: not started again",
            "web",
            |f, o| {
                let r = render_service(&f.desired, "web", &KEY).unwrap();
                with(o, "t-web", |c| c.state = RunState::Exited);
                o.crash_loops.insert("web".into(), rolled_back(&r));
            },
            vec![Stopped, CrashLoop],
            vec![],
        ),
        (
            "held, but the spec changed since: replaced",
            "web",
            |f, o| {
                let mut r = render_service(&f.desired, "web", &KEY).unwrap();
                r.spec_hash = "the-looping-one".into();
                with(o, "t-web", |c| {
                    c.state = RunState::Exited;
                    c.labels.insert(labels::SPEC_HASH.into(), "the-looping-one".into());
                });
                o.crash_loops.insert("web".into(), rolled_back(&r));
            },
            vec![Stopped, SpecChanged],
            vec!["recreate"],
        ),
        (
            "spec changed: replaced",
            "web",
            |_, o| {
                with(o, "t-web", |c| {
                    c.labels.insert(labels::SPEC_HASH.into(), "old".into());
                })
            },
            vec![SpecChanged],
            vec!["recreate"],
        ),
        (
            "the tag moved: replaced",
            "web",
            |_, o| with(o, "t-web", |c| c.image_id = "sha256:old".into()),
            vec![ImageChanged],
            vec!["recreate"],
        ),
        (
            "the registry has a newer image (notify): reported, nothing done",
            "watched",
            |_, o| {
                o.image_checks.insert("remote:1".into(), check(IMAGE_ID, true, None));
            },
            vec![ImageOutdated],
            vec![],
        ),
        (
            "the registry check is for an image no longer local: not outdated",
            "watched",
            |_, o| {
                o.image_checks.insert("remote:1".into(), check("sha256:old", true, None));
            },
            vec![],
            vec![],
        ),
        (
            "the registry check failed: not drift",
            "watched",
            |_, o| {
                let failed = check(IMAGE_ID, false, Some("registry unreachable"));
                o.image_checks.insert("remote:1".into(), failed);
            },
            vec![],
            vec![],
        ),
        (
            "a service without update.image ignores the check",
            "pulled",
            |_, o| {
                o.image_checks.insert("remote:1".into(), check(IMAGE_ID, true, None));
            },
            vec![],
            vec![],
        ),
        (
            "the tag moved and must be pulled first",
            "pulled",
            |_, o| {
                with(o, "t-pulled", |c| {
                    c.labels.insert(labels::SPEC_HASH.into(), "old".into());
                });
                o.images.insert("remote:1".into(), None);
            },
            vec![SpecChanged],
            vec!["pull", "recreate"],
        ),
        (
            "config changed, onChange restart",
            "web",
            |_, o| {
                with(o, "t-web", |c| {
                    c.labels.insert(labels::CONFIG_HASH.into(), "old".into());
                })
            },
            vec![ConfigChanged],
            vec!["restart", "record"],
        ),
        (
            "config changed on a stopped container: the restart starts it",
            "web",
            |_, o| {
                with(o, "t-web", |c| {
                    c.labels.insert(labels::CONFIG_HASH.into(), "old".into());
                    c.state = RunState::Exited;
                })
            },
            vec![Stopped, ConfigChanged],
            vec!["restart", "record"],
        ),
        (
            "config changed, onChange signal",
            "sig",
            |_, o| {
                with(o, "t-sig", |c| {
                    c.labels.insert(labels::CONFIG_HASH.into(), "old".into());
                })
            },
            vec![ConfigChanged],
            vec!["signal SIGHUP", "record"],
        ),
        (
            "config changed on a stopped container, onChange signal: the start reads it",
            "sig",
            |_, o| {
                with(o, "t-sig", |c| {
                    c.labels.insert(labels::CONFIG_HASH.into(), "old".into());
                    c.state = RunState::Exited;
                })
            },
            vec![Stopped, ConfigChanged],
            vec!["record", "start"],
        ),
        (
            "config changed on a stopped container, onChange exec: no reload, a start",
            "rel",
            |_, o| {
                with(o, "t-rel", |c| {
                    c.labels.insert(labels::CONFIG_HASH.into(), "old".into());
                    c.state = RunState::Exited;
                })
            },
            vec![Stopped, ConfigChanged],
            vec!["record", "start"],
        ),
        (
            "config changed, onChange recreate",
            "rec",
            |_, o| {
                with(o, "t-rec", |c| {
                    c.labels.insert(labels::CONFIG_HASH.into(), "old".into());
                })
            },
            vec![ConfigChanged],
            vec!["recreate"],
        ),
        (
            "the in-place record wins over the creation label",
            "web",
            |f, o| {
                let id = f.ctr("web").id;
                let hashes = render_service(&f.desired, "web", &KEY)
                    .unwrap()
                    .config_hashes;
                with(o, "t-web", |c| {
                    c.labels.insert(labels::CONFIG_HASH.into(), "old".into());
                });
                o.applied_config.insert(id, hashes);
            },
            vec![],
            vec![],
        ),
        (
            "an unowned container holds the name: reported, untouched",
            "web",
            |_, o| {
                with(o, "t-web", |c| {
                    c.labels.clear();
                })
            },
            vec![NameConflict],
            vec![],
        ),
        (
            "an interrupted replace left a complete --next: adopted",
            "web",
            |_, o| with(o, "t-web", |c| c.name = "t-web--next".into()),
            vec![Missing],
            vec!["adopt"],
        ),
        (
            "an interrupted replace left a stale --next: removed, then created",
            "web",
            |_, o| {
                with(o, "t-web", |c| {
                    c.name = "t-web--next".into();
                    c.labels.insert(labels::SPEC_HASH.into(), "old".into());
                })
            },
            vec![Missing],
            vec!["cleanup", "create"],
        ),
        (
            "a --next beside the original: removed",
            "web",
            |f, o| {
                let mut t = f.ctr("web");
                t.id = "temp-id".into();
                t.name = "t-web--next".into();
                o.containers.push(t);
            },
            vec![],
            vec!["cleanup"],
        ),
        (
            "a duplicate owned container: removed",
            "web",
            |f, o| {
                let mut d = f.ctr("web");
                d.id = "dup-id".into();
                d.name = "t-web-copy".into();
                o.containers.push(d);
            },
            vec![],
            vec!["remove"],
        ),
        (
            "this very spec was rolled back: held, not replaced again",
            "web",
            |f, o| {
                let r = render_service(&f.desired, "web", &KEY).unwrap();
                with(o, "t-web", |c| {
                    c.labels.insert(labels::SPEC_HASH.into(), "old".into());
                });
                o.rollbacks.insert("web".into(), rolled_back(&r));
            },
            vec![SpecChanged, RolledBack],
            vec![],
        ),
        (
            "rolled back, and the kept old container was stopped by hand: started",
            "web",
            |f, o| {
                let r = render_service(&f.desired, "web", &KEY).unwrap();
                with(o, "t-web", |c| {
                    c.labels.insert(labels::SPEC_HASH.into(), "old".into());
                    c.state = RunState::Exited;
                });
                o.rollbacks.insert("web".into(), rolled_back(&r));
            },
            vec![Stopped, SpecChanged, RolledBack],
            vec!["start"],
        ),
        (
            "a rollback of another spec does not hold this one",
            "web",
            |f, o| {
                let mut r = render_service(&f.desired, "web", &KEY).unwrap();
                r.spec_hash = "an-earlier-attempt".into();
                with(o, "t-web", |c| {
                    c.labels.insert(labels::SPEC_HASH.into(), "old".into());
                });
                o.rollbacks.insert("web".into(), rolled_back(&r));
            },
            vec![SpecChanged],
            vec!["recreate"],
        ),
        (
            "a crash after the new container took the name: the gate is resumed",
            "web",
            |f, o| {
                let mut old = f.ctr("web");
                old.id = "old-id".into();
                old.name = "t-web--prev".into();
                old.state = RunState::Exited;
                o.containers.push(old);
            },
            vec![SpecChanged],
            vec!["verify"],
        ),
        (
            "a crash with the old one aside and a complete --next: adopted, then gated",
            "web",
            |f, o| {
                let mut old = f.ctr("web");
                old.id = "old-id".into();
                old.name = "t-web--prev".into();
                old.state = RunState::Exited;
                o.containers.push(old);
                with(o, "t-web", |c| {
                    c.name = "t-web--next".into();
                    c.state = RunState::Created;
                });
            },
            vec![Missing, SpecChanged],
            vec!["adopt", "verify"],
        ),
        (
            "a crash mid-rollback (the new one removed): the old one is put back",
            "web",
            |_, o| {
                with(o, "t-web", |c| {
                    c.name = "t-web--prev".into();
                    c.labels.insert(labels::SPEC_HASH.into(), "old".into());
                    c.state = RunState::Exited;
                });
            },
            vec![Missing, SpecChanged],
            vec!["restore"],
        ),
        (
            "config changed, onChange exec: reloaded in place",
            "rel",
            |_, o| {
                with(o, "t-rel", |c| {
                    c.labels.insert(labels::CONFIG_HASH.into(), "old".into());
                })
            },
            vec![ConfigChanged],
            vec!["reload", "record"],
        ),
        (
            "config changed, onChange http on a single file: restarted (the mount pins the inode)",
            "relfile",
            |_, o| {
                with(o, "t-relfile", |c| {
                    c.labels.insert(labels::CONFIG_HASH.into(), "old".into());
                })
            },
            vec![ConfigChanged],
            vec!["restart", "record"],
        ),
        (
            "config changed, with a configCheck: checked before the restart",
            "chk",
            |_, o| {
                with(o, "t-chk", |c| {
                    c.labels.insert(labels::CONFIG_HASH.into(), "old".into());
                })
            },
            vec![ConfigChanged],
            vec!["preflight", "restart", "record"],
        ),
        (
            "spec changed, with a configCheck: checked before the replace",
            "chk",
            |_, o| {
                with(o, "t-chk", |c| {
                    c.labels.insert(labels::SPEC_HASH.into(), "old".into());
                })
            },
            vec![SpecChanged],
            vec!["preflight", "recreate"],
        ),
        (
            "this very config failed its check: held, nothing touched",
            "chk",
            |f, o| {
                let r = render_service(&f.desired, "chk", &KEY).unwrap();
                with(o, "t-chk", |c| {
                    c.labels.insert(labels::CONFIG_HASH.into(), "old".into());
                });
                o.preflight_failures.insert("chk".into(), rolled_back(&r));
            },
            vec![ConfigChanged, PreflightFailed],
            vec![],
        ),
        (
            "a failed check of another config does not hold this one",
            "chk",
            |f, o| {
                let mut r = render_service(&f.desired, "chk", &KEY).unwrap();
                r.config_hashes = vec!["an-earlier-edit".into()];
                with(o, "t-chk", |c| {
                    c.labels.insert(labels::CONFIG_HASH.into(), "old".into());
                });
                o.preflight_failures.insert("chk".into(), rolled_back(&r));
            },
            vec![ConfigChanged],
            vec!["preflight", "restart", "record"],
        ),
        (
            "the image is absent and pullPolicy is Never: failed, nothing to do",
            "never",
            |_, _| {},
            vec![Missing, Failed],
            vec![],
        ),
        (
            "a secret cannot be rendered: failed",
            "sec",
            |_, _| {},
            vec![Failed],
            vec![],
        ),
    ];
    for (what, svc, edit, want_drift, want_steps) in cases {
        let mut o = f.converged();
        edit(&f, &mut o);
        let p = plan(&f.desired, &o, &KEY);
        assert_eq!(drift(&p, Kind::Service, svc), want_drift, "{what}: drift");
        assert_eq!(steps(&p, svc), want_steps, "{what}: steps");
        let r = p
            .resources
            .iter()
            .find(|r| r.kind == Kind::Service && r.name == svc)
            .unwrap();
        assert_eq!(r.in_sync, want_drift.is_empty(), "{what}: in_sync");
        seen.extend(want_drift);
    }
    seen
}

/// Networks, volumes and orphans; returns every reason it checked.
fn infra_rows() -> std::collections::BTreeSet<Reason> {
    use Reason::*;
    let f = fixture();

    // Nothing exists: network and volume created first.
    let p = plan(&f.desired, &Observed::default(), &KEY);
    assert_eq!(drift(&p, Kind::Network, "default"), vec![Missing]);
    assert_eq!(drift(&p, Kind::Volume, "data"), vec![Missing]);
    assert!(matches!(
        p.infra.as_slice(),
        [
            InfraAction::CreateNetwork { docker_name: n, .. },
            InfraAction::CreateVolume { docker_name: v, .. }
        ] if n == "t_default" && v == "t_data"
    ));

    // Owned objects no longer desired.
    let mut o = f.converged();
    let mut gone = f.ctr("web");
    gone.id = "gone-id".into();
    gone.name = "t-gone".into();
    gone.labels.insert(labels::NAME.into(), "gone".into());
    o.containers.push(gone);
    o.networks.push(NetworkInfo {
        id: "x".into(),
        name: "t_old".into(),
        labels: owned_labels(),
    });
    o.volumes.push(VolumeInfo {
        name: "t_olddata".into(),
        labels: owned_labels(),
        mountpoint: "/v2".into(),
    });
    // Unowned objects are not ours to report.
    o.volumes.push(VolumeInfo {
        name: "someone_else".into(),
        labels: BTreeMap::new(),
        mountpoint: "/v3".into(),
    });
    let p = plan(&f.desired, &o, &KEY);
    assert_eq!(drift(&p, Kind::Service, "gone"), vec![Orphan]);
    assert_eq!(drift(&p, Kind::Network, "t_old"), vec![Orphan]);
    assert_eq!(drift(&p, Kind::Volume, "t_olddata"), vec![Orphan]);
    assert!(!p.resources.iter().any(|r| r.name == "someone_else"));
    assert!(p.cleanup.iter().any(|a| matches!(
        a,
        InfraAction::RemoveOrphanContainer { id, .. } if id == "gone-id"
    )));
    assert!(p.cleanup.iter().any(|a| matches!(
        a,
        InfraAction::RemoveNetwork { docker_name } if docker_name == "t_old"
    )));
    // Volumes are never removed by the planner.
    let text = serde_json::to_string(&p).unwrap();
    assert!(!text.contains("remove_volume"), "{text}");
    [Missing, Orphan].into()
}

#[test]
fn a_converged_host_needs_nothing() {
    let f = fixture();
    let p = plan(&f.desired, &f.converged(), &KEY);
    assert!(p.stale_rollbacks.is_empty());
    // `never` and `sec` cannot converge; everything else is in sync.
    let out: Vec<&str> = p
        .resources
        .iter()
        .filter(|r| !r.in_sync)
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(out, vec!["never", "sec"]);
    assert!(p.is_noop(), "{:#?}", p.services);
}

#[test]
fn a_rollback_shows_reason_and_log_and_is_forgotten_when_the_spec_moves_on() {
    let f = fixture();
    let r = render_service(&f.desired, "web", &KEY).unwrap();
    let mut o = f.converged();
    with(&mut o, "t-web", |c| {
        c.labels.insert(labels::SPEC_HASH.into(), "old".into());
    });
    o.rollbacks.insert("web".into(), rolled_back(&r));
    let p = plan(&f.desired, &o, &KEY);
    let st = p.resources.iter().find(|r| r.name == "web").unwrap();
    let msg = st.message.as_deref().unwrap();
    assert!(
        msg.starts_with("rolled back: the new container exited"),
        "{msg}"
    );
    assert!(
        msg.ends_with("last log line: Error: bad config line 3"),
        "{msg}"
    );
    assert!(st.log_tail.as_deref().unwrap().contains("bad config"));
    assert!(p.stale_rollbacks.is_empty());

    // The desired spec moved on (another attempt): the record is stale.
    let mut other = rolled_back(&r);
    other.spec_hash = "an-earlier-attempt".into();
    o.rollbacks.insert("web".into(), other);
    let p = plan(&f.desired, &o, &KEY);
    assert_eq!(p.stale_rollbacks, vec!["web".to_string()]);
}
