//! The Jobs → obsd itself as a Deployment in `--jobs-only` mode.
//!
//! obsd runs the job runner without a Docker engine and serves the jobs' metrics — the
//! `obsd_job_*` families and the LLD series its jobs write (`cf_*`, `stripe_*`, …) — on
//! its own `/metrics`, instead of node-exporter textfiles. Its pod sees the same
//! desired-state directory: the documents come from ConfigMap `obsd-desired-state`, the
//! config files from the Services' ConfigMaps, projected into one tree; the env file's
//! values arrive as environment variables from the Secret (`envFrom`), which jobs-only
//! mode reads where the env file lacks a value. Job history and cooldowns live on a
//! claim, so a restart keeps them (one replica, `Recreate`: one obsd per state).

use super::{mounts, names, refs, services, Cx, ExportError, Object, OBSD_PORT};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapProjection, Container, ContainerPort, EnvFromSource,
    HTTPGetAction, KeyToPath, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource, SecretEnvSource,
    SecretProjection, SecurityContext, ServicePort, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, BTreeSet};

/// Name of the Deployment, its Service and its objects.
pub const NAME: &str = "obsd";
/// Where the pod sees the desired-state directory.
pub const DESIRED_DIR: &str = "/etc/obsd/desired-state";
/// obsd's state directory in the pod (on the claim `obsd-state`).
pub const STATE_DIR: &str = "/var/lib/obsd";
/// The non-root user obsd runs as.
const UID: i64 = 65532;

/// Values of the job bodies' `…Env` fields (`tokenEnv`, `keyEnv`, `deadManUrlEnv`, …):
/// the env-file names a job reads its credentials from.
fn credential_names(v: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match v {
                    serde_json::Value::String(s) if k.ends_with("Env") => out.push(s.clone()),
                    _ => out.extend(credential_names(v)),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| out.extend(credential_names(v))),
        _ => {}
    }
    out
}

pub(super) fn build(cx: &mut Cx) -> Result<(), ExportError> {
    let input = cx.input;
    let st = &input.state;
    let labels = cx.labels(NAME);

    // The documents, verbatim: obsd interpolates them itself, from its environment.
    let mut data = BTreeMap::new();
    let mut doc_items = Vec::new();
    for rel in &input.documents {
        let entry = &input.files[rel];
        if entry.private {
            return Err(ExportError::PrivateDocument(rel.clone()));
        }
        let key = names::config_key(rel);
        data.insert(
            key.clone(),
            String::from_utf8_lossy(&entry.bytes).into_owned(),
        );
        doc_items.push(KeyToPath {
            key,
            path: rel.clone(),
            mode: None,
        });
    }
    let cm_name = format!("{NAME}-desired-state");
    cx.push(
        Object::ConfigMap(ConfigMap {
            metadata: cx.meta(&cm_name, labels.clone()),
            data: Some(data),
            ..Default::default()
        }),
        "the desired-state documents",
    );

    // One tree: documents, then every config source at its path.
    let mut paths: BTreeSet<String> = doc_items.iter().map(|i| i.path.clone()).collect();
    let mut sources = vec![VolumeProjection {
        config_map: Some(ConfigMapProjection {
            name: cm_name,
            items: Some(doc_items),
            optional: None,
        }),
        ..Default::default()
    }];
    for (source, cs) in &cx.configs {
        let place = |p: &str| {
            if cs.single_file {
                source.clone()
            } else {
                format!("{source}/{p}")
            }
        };
        // A path the tree already has keeps its first file.
        let mut placed = |files: &[(String, String)]| -> Vec<KeyToPath> {
            files
                .iter()
                .filter(|(_, p)| paths.insert(place(p)))
                .map(|(k, p)| KeyToPath {
                    key: k.clone(),
                    path: place(p),
                    mode: None,
                })
                .collect()
        };
        sources.push(VolumeProjection {
            config_map: Some(ConfigMapProjection {
                name: cs.name.clone(),
                items: Some(placed(&cs.items)),
                optional: None,
            }),
            ..Default::default()
        });
        if let Some(secret) = &cs.secret {
            sources.push(VolumeProjection {
                secret: Some(SecretProjection {
                    name: secret.clone(),
                    items: Some(placed(&cs.private)),
                    optional: None,
                }),
                ..Default::default()
            });
        }
    }
    let mut volumes = vec![
        Volume {
            name: "desired-state".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(sources),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "state".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: format!("{NAME}-state"),
                read_only: None,
            }),
            ..Default::default()
        },
    ];
    let mut mounts = vec![
        VolumeMount {
            name: "desired-state".into(),
            mount_path: DESIRED_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: "state".into(),
            mount_path: STATE_DIR.into(),
            ..Default::default()
        },
    ];

    // What the jobs need that a pod does not have.
    let mut w = Vec::new();
    let binds: BTreeMap<String, Vec<&str>> =
        st.services.iter().fold(BTreeMap::new(), |mut m, (s, r)| {
            for b in &r.spec.binds {
                m.entry(b.source.trim_end_matches('/').to_string())
                    .or_default()
                    .push(s.as_str());
            }
            m
        });
    for (i, (name, j)) in st.jobs.iter().enumerate() {
        let subject = format!("Job/{name}");
        // The Secret keys the jobs read: credentials by name, and `${VAR}`s obsd
        // expands in the pod from its environment.
        let body = serde_json::to_value(&j.spec).unwrap_or_default();
        cx.secret_keys.extend(credential_names(&body));
        cx.secret_keys.extend(
            refs::vars(&body.to_string())
                .into_iter()
                .map(str::to_string),
        );
        if j.spec.docker_names.is_some() {
            w.push((subject.clone(), "spec.dockerNames".to_string(), "lists the Docker host's containers: jobs-only obsd has no Docker engine and does not run it (on Kubernetes the kubelet's cAdvisor labels container metrics with pod and container names)".to_string()));
        }
        if let Some(b) = &j.spec.backup {
            if !b.volumes.is_empty() {
                w.push((subject.clone(), "spec.backup".to_string(), "archives Docker volumes, which do not exist on Kubernetes: jobs-only obsd does not run it; back up the claims with the cluster's tools (volume snapshots)".to_string()));
            }
        }
        if let Some(sp) = &j.spec.status_page {
            let out = &sp.output_dir;
            if out.starts_with('/') && !out.starts_with(STATE_DIR) {
                let vname = names::label(&format!("output-{i}"));
                volumes.push(mounts::empty_dir(&vname));
                mounts.push(VolumeMount {
                    name: vname,
                    mount_path: out.clone(),
                    ..Default::default()
                });
                let readers = binds
                    .get(out.trim_end_matches('/'))
                    .map(|v| {
                        format!(
                            "; {} read it through a host bind, which is not mounted on Kubernetes",
                            v.join(", ")
                        )
                    })
                    .unwrap_or_default();
                w.push((subject.clone(), "spec.statusPage.outputDir".to_string(), format!("`{out}` becomes an empty directory of the obsd pod{readers}: to serve status.json, share it through storage both pods mount (ReadWriteMany) or publish it elsewhere")));
            }
        }
    }
    for (s, f, m) in w {
        cx.warn(s, f, m);
    }

    let claim = PersistentVolumeClaim {
        metadata: cx.meta(&format!("{NAME}-state"), labels.clone()),
        spec: Some(cx.claim_spec("1Gi")),
        ..Default::default()
    };
    cx.push(
        Object::Claim(claim),
        "obsd's state directory (job history, cooldowns)",
    );

    let service = services::service(
        cx,
        NAME,
        labels.clone(),
        labels.clone(),
        "ClusterIP",
        vec![ServicePort {
            name: Some("metrics".into()),
            port: OBSD_PORT as i32,
            target_port: Some(IntOrString::String("metrics".into())),
            protocol: Some("TCP".into()),
            ..Default::default()
        }],
    );
    cx.push(Object::Service(service), "obsd's /metrics");

    let http = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("metrics".into()),
            ..Default::default()
        }),
        period_seconds: Some(30),
        timeout_seconds: Some(5),
        failure_threshold: Some(3),
        ..Default::default()
    };
    let container = Container {
        name: NAME.into(),
        image: Some(cx.opts.obsd_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec![
            "--jobs-only".into(),
            "--desired-state".into(),
            DESIRED_DIR.into(),
            "--state-dir".into(),
            STATE_DIR.into(),
            "--listen".into(),
            format!("0.0.0.0:{OBSD_PORT}"),
            "--log-format".into(),
            "json".into(),
        ]),
        env_from: Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: cx.secret_name.clone(),
                optional: None,
            }),
            ..Default::default()
        }]),
        ports: Some(vec![ContainerPort {
            container_port: OBSD_PORT as i32,
            name: Some("metrics".into()),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(http("/healthz")),
        // /healthz answers from obsd's own HTTP server: a failure means obsd is stuck.
        liveness_probe: Some(http("/healthz")),
        volume_mounts: Some(mounts),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let deployment = Deployment {
        metadata: cx.meta(NAME, labels.clone()),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            // One obsd per state directory (it holds a lock): never two pods at once.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            }),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    enable_service_links: Some(false),
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_user: Some(UID),
                        run_as_group: Some(UID),
                        fs_group: Some(UID),
                        run_as_non_root: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    cx.push(
        Object::Deployment(deployment),
        format!("the {} Job(s), run by obsd --jobs-only", st.jobs.len()),
    );
    Ok(())
}
