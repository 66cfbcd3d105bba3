//! A Service's storage: named volumes, config files, host binds and devices, tmpfs —
//! the pod's volumes, the container's mounts, and a StatefulSet's claim templates.
//!
//! Only node-level Services (DaemonSets) see the node's files: every other bind and
//! device is left out with a warning, and the Docker socket is never mounted.

use super::workload::{Svc, WorkloadKind};
use super::{config, container, names, Claim, Cx};
use crate::desired::model::service::{parse_memory, OnChange};
use k8s_openapi::api::core::v1::{
    ConfigMapProjection, ConfigMapVolumeSource, EmptyDirVolumeSource, HostPathVolumeSource,
    KeyToPath, PersistentVolumeClaim, ProjectedVolumeSource, SecretProjection, SecretVolumeSource,
    Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// Bind sources that are, or hold, the Docker socket: never mounted.
const DOCKER_SOCKET_PATHS: &[&str] = &[
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/var/run",
    "/run",
];

/// `/var/lib/docker/` → `/var/lib/docker`; `/` stays.
pub(super) fn host_path(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        "/".into()
    } else {
        t.to_string()
    }
}

/// What the pod mounts.
#[derive(Default)]
pub(super) struct Mounts {
    pub volumes: Vec<Volume>,
    /// By mount path.
    pub mounts: Vec<VolumeMount>,
    /// A StatefulSet's claim templates, one per named volume.
    pub claims: Vec<PersistentVolumeClaim>,
    /// The config-hash annotation, when a config file's change should roll the pods.
    pub config_hash: Option<String>,
}

/// The storage of `s`, in the order Docker lists it; the volumes a StatefulSet claims
/// are recorded for the next steps (restoring their data).
pub(super) fn build(cx: &mut Cx, s: &mut Svc) -> Mounts {
    let mut m = Mounts::default();
    named_volumes(cx, s, &mut m);
    config_files(cx, s, &mut m);
    binds(s, &mut m);
    devices(s, &mut m);
    tmpfs(s, &mut m);
    m.mounts.sort_by(|a, b| a.mount_path.cmp(&b.mount_path));
    m
}

/// Named volumes: a claim template each on a StatefulSet (the data lives on); on a
/// DaemonSet, which has no claims, an empty directory per node, warned.
fn named_volumes(cx: &mut Cx, s: &mut Svc, m: &mut Mounts) {
    let mut seen_claims = BTreeSet::new();
    for (i, v) in s.spec.volumes.iter().enumerate() {
        let vname = names::label(&v.volume);
        match s.kind {
            WorkloadKind::StatefulSet => {
                if seen_claims.insert(vname.clone()) {
                    m.claims.push(PersistentVolumeClaim {
                        metadata: ObjectMeta {
                            name: Some(vname.clone()),
                            labels: Some(s.selector.clone()),
                            ..Default::default()
                        },
                        spec: Some(cx.claim_spec(&cx.opts.volume_size)),
                        ..Default::default()
                    });
                    cx.claims.push(Claim {
                        volume: v.volume.clone(),
                        pvc: format!("{vname}-{}-0", s.name),
                        statefulset: s.name.to_string(),
                    });
                }
            }
            _ => {
                s.warn(format!("spec.volumes[{i}]"), format!("Volume `{}` on a node-level service becomes an empty directory per node (a DaemonSet has no claims); on Kubernetes obsd's jobs serve their metrics on obsd's own /metrics, so node-exporter's textfile directory may stay empty", v.volume));
                if !m.volumes.iter().any(|x| x.name == vname) {
                    m.volumes.push(empty_dir(&vname));
                }
            }
        }
        let mount_path = s.placeholder(&format!("spec.volumes[{i}].target"), &v.target);
        m.mounts.push(VolumeMount {
            name: vname,
            mount_path,
            read_only: v.read_only.then_some(true),
            ..Default::default()
        });
    }
}

/// An empty directory, for what Kubernetes keeps no data of.
pub(super) fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_string(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

/// Config files from their ConfigMap (and private files from their Secret), read-only.
/// A change of the public files changes the config hash and so rolls the pods, where
/// Docker would recreate, restart or signal the container; `onChange: none` does not.
fn config_files(cx: &Cx, s: &mut Svc, m: &mut Mounts) {
    let mut rolling: Option<Sha256> = None;
    for (i, cf) in s.spec.config_files.iter().enumerate() {
        let field = format!("spec.configFiles[{i}]");
        let Some(cs) = cx.configs.get(&config::norm(&cf.source)) else {
            continue;
        };
        let vname = format!("config-{i}");
        m.volumes.push(config_volume(&vname, cs));
        let sub_path = cs.single_file.then(|| {
            cs.items
                .first()
                .or(cs.private.first())
                .map(|(k, _)| k.clone())
                .unwrap_or_default()
        });
        let mount_path = s.placeholder(&format!("{field}.target"), &cf.target);
        m.mounts.push(VolumeMount {
            name: vname,
            mount_path,
            read_only: Some(true),
            sub_path,
            ..Default::default()
        });
        if let OnChange::Signal(sig) = &cf.on_change {
            s.warn(format!("{field}.onChange"), format!("Kubernetes cannot send {sig} when a ConfigMap changes: a change rolls the pod instead (a restart, not a reload)"));
        }
        if matches!(cf.on_change, OnChange::None) {
            if cs.single_file {
                s.warn(format!("{field}.onChange"), "`none` on a single file: a file mounted with subPath is never updated in a running pod, so a change shows only after the pod is replaced (`kubectl rollout restart`); mount the directory to get updates in place");
            }
        } else {
            let h = rolling.get_or_insert_with(Sha256::new);
            h.update(cs.name.as_bytes());
            h.update([0]);
            h.update(cs.hash.as_bytes());
        }
        if let Some(secret) = &cs.secret {
            s.warn(field, format!("files from Secret `{secret}` are not in the config hash: after changing them run `kubectl rollout restart`"));
        }
    }
    m.config_hash = rolling.map(|h| hex::encode(h.finalize()));
}

/// The volume of one config source: its ConfigMap; a single private file, its Secret
/// alone; a directory with private files, both projected side by side.
fn config_volume(name: &str, cs: &config::Source) -> Volume {
    let volume = Volume {
        name: name.to_string(),
        ..Default::default()
    };
    match (&cs.secret, cs.single_file) {
        (Some(secret), true) => Volume {
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                items: Some(key_paths(&cs.private)),
                ..Default::default()
            }),
            ..volume
        },
        (Some(secret), false) => Volume {
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![
                    VolumeProjection {
                        config_map: Some(ConfigMapProjection {
                            name: cs.name.clone(),
                            items: Some(key_paths(&cs.items)),
                            optional: None,
                        }),
                        ..Default::default()
                    },
                    VolumeProjection {
                        secret: Some(SecretProjection {
                            name: secret.clone(),
                            items: Some(key_paths(&cs.private)),
                            optional: None,
                        }),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..volume
        },
        (None, _) => Volume {
            config_map: Some(ConfigMapVolumeSource {
                name: cs.name.clone(),
                items: Some(key_paths(&cs.items)),
                ..Default::default()
            }),
            ..volume
        },
    }
}

/// `(key, path)` pairs as a volume's items.
fn key_paths(v: &[(String, String)]) -> Vec<KeyToPath> {
    v.iter()
        .map(|(k, p)| KeyToPath {
            key: k.clone(),
            path: p.clone(),
            mode: None,
        })
        .collect()
}

/// A `hostPath` volume: the node's file or device at `path`.
fn host_volume(name: &str, path: String, type_: Option<String>) -> Volume {
    Volume {
        name: name.to_string(),
        host_path: Some(HostPathVolumeSource { path, type_ }),
        ..Default::default()
    }
}

/// Host binds → `hostPath` mounts, on node-level Services only (everywhere else a pod
/// must not depend on one node's files), each warned; the Docker socket never.
fn binds(s: &mut Svc, m: &mut Mounts) {
    for (i, b) in s.spec.binds.iter().enumerate() {
        let field = format!("spec.binds[{i}]");
        let src = host_path(&b.source);
        if DOCKER_SOCKET_PATHS.contains(&src.as_str()) {
            s.warn(
                field,
                format!(
                    "`{}` is or holds the Docker socket, which is never mounted on Kubernetes",
                    b.source
                ),
            );
            continue;
        }
        if !s.node() {
            s.warn(field, format!("host path `{}` is not mounted: hostPath is used only for node-level services; put the file in the desired-state directory and list it under configFiles (it becomes a ConfigMap), or give the data a Volume", b.source));
            continue;
        }
        let propagation = match b.propagation.as_deref() {
            None | Some("private") | Some("rprivate") => None,
            Some("slave") | Some("rslave") => Some("HostToContainer".to_string()),
            // Kubernetes allows Bidirectional only in privileged containers.
            Some("shared") | Some("rshared") if s.spec.privileged => {
                Some("Bidirectional".to_string())
            }
            Some(p @ ("shared" | "rshared")) => {
                s.warn(format!("{field}.propagation"), format!("`{p}` needs a privileged container on Kubernetes (Bidirectional); mounted HostToContainer instead"));
                Some("HostToContainer".to_string())
            }
            Some(other) => {
                s.warn(
                    format!("{field}.propagation"),
                    format!(
                        "propagation `{other}` has no Kubernetes equivalent; left at the default"
                    ),
                );
                None
            }
        };
        let all = if src == "/" {
            " — the whole node, including its container runtime's socket"
        } else {
            ""
        };
        s.warn(field.clone(), format!("hostPath `{}` → `{}`: the pod reads the node's files{all}; allowed here because the service is node-level (the namespace needs the `privileged` Pod Security level)", b.source, b.target));
        let vname = format!("host-{i}");
        let path = s.placeholder(&format!("{field}.source"), &b.source);
        m.volumes.push(host_volume(&vname, path, None));
        let mount_path = s.placeholder(&format!("{field}.target"), &b.target);
        m.mounts.push(VolumeMount {
            name: vname,
            mount_path,
            read_only: b.read_only.then_some(true),
            mount_propagation: propagation,
            ..Default::default()
        });
    }
}

/// Devices → `hostPath` mounts of the device node, on node-level Services only
/// (Kubernetes gives devices to other pods through device plugins).
fn devices(s: &mut Svc, m: &mut Mounts) {
    for (i, d) in s.spec.devices.iter().enumerate() {
        let field = format!("spec.devices[{i}]");
        let mut parts = d.splitn(3, ':');
        let host = parts.next().unwrap_or_default().to_string();
        let target = parts
            .next()
            .map(str::to_string)
            .unwrap_or_else(|| host.clone());
        if !s.node() {
            s.warn(field, format!("device `{d}` is not mapped: Kubernetes gives devices through device plugins, and hostPath only to node-level services"));
            continue;
        }
        s.warn(field, format!("device `{d}` becomes a hostPath mount of `{host}` (a device node; needs a privileged container to be usable)"));
        let vname = format!("device-{i}");
        m.volumes
            .push(host_volume(&vname, host, Some("CharDevice".into())));
        m.mounts.push(VolumeMount {
            name: vname,
            mount_path: target,
            ..Default::default()
        });
    }
}

/// tmpfs → an in-memory `emptyDir`, its `size` as the limit; other options are warned.
fn tmpfs(s: &mut Svc, m: &mut Mounts) {
    for (i, t) in s.spec.tmpfs.iter().enumerate() {
        let field = format!("spec.tmpfs[{i}]");
        let (path, options) = t.split_once(':').unwrap_or((t.as_str(), ""));
        let mut size = None;
        for o in options.split(',').filter(|o| !o.is_empty()) {
            match o.split_once('=') {
                Some(("size", v)) => size = Some(v.to_string()),
                _ => s.warn(field.clone(), format!("tmpfs option `{o}` has no Kubernetes equivalent (an in-memory emptyDir); dropped")),
            }
        }
        let vname = format!("tmpfs-{i}");
        let size_limit = size.map(|s| {
            Quantity(match parse_memory(&s) {
                Some(b) => container::memory_quantity(b),
                None => s,
            })
        });
        m.volumes.push(Volume {
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit,
            }),
            ..empty_dir(&vname)
        });
        m.mounts.push(VolumeMount {
            name: vname,
            mount_path: path.to_string(),
            ..Default::default()
        });
    }
}
