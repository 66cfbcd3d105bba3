//! One Service → its workload (StatefulSet, Deployment or DaemonSet) and its Services.
//!
//! The choice of workload:
//! * node-level — the Service shares the host's PID namespace or mounts the host's `/`
//!   (node-exporter, cAdvisor): a DaemonSet, the only kind that gets `hostPath` mounts;
//! * with named volumes: a StatefulSet with one replica and a claim template per volume;
//! * otherwise a Deployment with one replica.

use super::{config, names, refs, Claim, Cx, EdgeServiceType, Object};
use crate::desired::model::service::{
    parse_memory, DependencyCondition, Healthcheck, OnChange, PullPolicy, RestartPolicy,
    ServiceSpec,
};
use crate::desired::Resource;
use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec, StatefulSet,
    StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapProjection, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, HostAlias, HostPathVolumeSource,
    KeyToPath, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe,
    ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecretProjection, SecretVolumeSource, SecurityContext, Service, ServicePort,
    ServiceSpec as K8sServiceSpec, Volume, VolumeMount, VolumeProjection,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// Bind sources that are, or hold, the Docker socket: never mounted.
const DOCKER_SOCKET_PATHS: &[&str] = &[
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/var/run",
    "/run",
];

/// Which workload a Service becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// Whether a Service needs the node itself: the host's PID namespace or its `/`.
pub fn node_level(svc: &ServiceSpec) -> bool {
    svc.pid.as_deref() == Some("host") || svc.binds.iter().any(|b| host_path(&b.source) == "/")
}

pub fn workload_kind(svc: &ServiceSpec) -> WorkloadKind {
    if node_level(svc) {
        WorkloadKind::DaemonSet
    } else if !svc.volumes.is_empty() {
        WorkloadKind::StatefulSet
    } else {
        WorkloadKind::Deployment
    }
}

/// `/var/lib/docker/` → `/var/lib/docker`; `/` stays.
fn host_path(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        "/".into()
    } else {
        t.to_string()
    }
}

/// Whole seconds of a Docker duration, at least 1; `rounded` is set when it was not
/// whole.
fn secs(d: Option<crate::desired::model::Duration>, default: u64, rounded: &mut bool) -> i32 {
    match d {
        None => default as i32,
        Some(d) => {
            let s = d.0.as_secs_f64();
            if s.fract() != 0.0 {
                *rounded = true;
            }
            (s.ceil() as i64).clamp(1, i32::MAX as i64) as i32
        }
    }
}

/// What a healthcheck fetches, when it is an HTTP fetch by wget or curl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthUrl {
    pub loopback: bool,
    pub port: u16,
    /// Path and query.
    pub path: String,
}

/// The exec command of a healthcheck (`None` for `NONE` or an empty test).
pub fn probe_command(hc: &Healthcheck) -> Option<Vec<String>> {
    match hc.test.first().map(String::as_str) {
        Some("NONE") | None => None,
        Some("CMD") => Some(hc.test[1..].to_vec()),
        Some("CMD-SHELL") => Some(vec!["/bin/sh".into(), "-c".into(), hc.test[1..].join(" ")]),
        Some(_) => Some(hc.test.clone()),
    }
}

/// The URL a `wget`/`curl` healthcheck fetches.
pub fn health_url(hc: &Healthcheck) -> Option<HealthUrl> {
    let tokens: Vec<String> = match hc.test.first().map(String::as_str) {
        Some("CMD") => hc.test[1..].to_vec(),
        Some("CMD-SHELL") => hc.test[1..]
            .join(" ")
            .split_whitespace()
            .map(|t| t.trim_matches(|c| c == '"' || c == '\'').to_string())
            .collect(),
        _ => return None,
    };
    let prog = tokens.first()?.rsplit('/').next()?.to_string();
    if prog != "wget" && prog != "curl" {
        return None;
    }
    let url = tokens
        .iter()
        .find(|t| t.starts_with("http://") || t.starts_with("https://"))?;
    let u = reqwest::Url::parse(url).ok()?;
    let host = u
        .host_str()?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let mut path = u.path().to_string();
    if let Some(q) = u.query() {
        path.push('?');
        path.push_str(q);
    }
    Some(HealthUrl {
        loopback: matches!(host.as_str(), "localhost" | "127.0.0.1" | "::1"),
        port: u.port_or_known_default()?,
        path,
    })
}

/// Why a liveness probe would not be safe for this healthcheck, or `None` when it is.
pub fn liveness_unsafe(hc: &Healthcheck) -> Option<String> {
    match health_url(hc) {
        None => Some("the check is not an HTTP fetch of the process's own address, so a failure may mean a dependency or the network is down".into()),
        Some(u) if !u.loopback => Some("the check fetches another address, so a failure may mean the network or another service is down".into()),
        Some(u) if u.path.to_ascii_lowercase().contains("ready") => Some(format!(
            "the check asks for readiness (`{}`), which fails while the process is alive but not ready (e.g. waiting for its dependencies)",
            u.path
        )),
        Some(_) => None,
    }
}

/// `512m` → `512Mi`, other byte counts as plain numbers.
fn memory_quantity(bytes: i64) -> String {
    const GI: i64 = 1024 * 1024 * 1024;
    const MI: i64 = 1024 * 1024;
    const KI: i64 = 1024;
    if bytes > 0 && bytes % GI == 0 {
        format!("{}Gi", bytes / GI)
    } else if bytes > 0 && bytes % MI == 0 {
        format!("{}Mi", bytes / MI)
    } else if bytes > 0 && bytes % KI == 0 {
        format!("{}Ki", bytes / KI)
    } else {
        bytes.to_string()
    }
}

fn port_name(proto: &str, port: u16) -> String {
    format!("{proto}-{port}")
}

/// Builds the objects of Service `name`.
pub(super) fn build(cx: &mut Cx, name: &str) {
    let input = cx.input;
    let st = &input.state;
    let r: &Resource<ServiceSpec> = &st.services[name];
    let svc = &r.spec;
    let subject = format!("Service/{name}");
    let kind = workload_kind(svc);
    let kind_name = match kind {
        WorkloadKind::Deployment => "Deployment",
        WorkloadKind::StatefulSet => "StatefulSet",
        WorkloadKind::DaemonSet => "DaemonSet",
    };
    let source = format!("Service {name} ({})", cx.source_file(&r.source.file));
    let selector = cx.labels(name);
    if kind == WorkloadKind::StatefulSet && name.len() > 52 {
        cx.warn(&subject, "metadata.name", "longer than 52 characters: a StatefulSet's pods carry the label `controller-revision-hash: <name>-<hash>`, which must fit in 63; Kubernetes will not create its pods — shorten the name");
    }
    let mut labels = selector.clone();
    for (k, v) in &r.labels {
        if names::is_qualified_key(k) && names::is_label_value(v) && !labels.contains_key(k) {
            labels.insert(k.clone(), v.clone());
        } else {
            cx.warn(
                &subject,
                format!("metadata.labels.{k}"),
                "not a valid Kubernetes label (or one the exporter sets); left out",
            );
        }
    }
    let mut w = Vec::new(); // (field, message) warnings, pushed at the end
    let secret_name = cx.secret_name.clone();
    let mut secret_keys = BTreeSet::new();

    // ---------------------------------------------------------------- environment
    let helper = |n: &str| format!("{}{n}", super::HELPER_PREFIX);
    let mut helpers: BTreeSet<String> = BTreeSet::new();
    let mut env: Vec<EnvVar> = Vec::new();
    let secret_ref = |key: &str| EnvVarSource {
        secret_key_ref: Some(SecretKeySelector {
            name: secret_name.clone(),
            key: key.to_string(),
            optional: None,
        }),
        ..Default::default()
    };
    let vars_of = |s: &str, helpers: &mut BTreeSet<String>| {
        for v in refs::vars(s) {
            helpers.insert(v.to_string());
        }
    };
    for (k, v) in &svc.env {
        match refs::pieces(v).as_slice() {
            [refs::Piece::Var(one)] => {
                secret_keys.insert(one.to_string());
                env.push(EnvVar {
                    name: k.clone(),
                    value_from: Some(secret_ref(one)),
                    ..Default::default()
                });
            }
            _ => {
                vars_of(v, &mut helpers);
                env.push(EnvVar {
                    name: k.clone(),
                    value: Some(refs::expansion(v, helper)),
                    ..Default::default()
                });
            }
        }
    }
    for (k, key) in &svc.secret_env {
        secret_keys.insert(key.clone());
        env.push(EnvVar {
            name: k.clone(),
            value_from: Some(secret_ref(key)),
            ..Default::default()
        });
    }
    env.sort_by(|a, b| a.name.cmp(&b.name));
    let args = svc.command.as_ref().map(|c| {
        c.iter()
            .map(|a| {
                vars_of(a, &mut helpers);
                refs::expansion(a, helper)
            })
            .collect::<Vec<_>>()
    });
    let command = svc.entrypoint.as_ref().map(|c| {
        c.iter()
            .map(|a| {
                vars_of(a, &mut helpers);
                refs::expansion(a, helper)
            })
            .collect::<Vec<_>>()
    });
    // Helpers first: `$(X)` only resolves to variables defined earlier in the list.
    let mut full_env: Vec<EnvVar> = helpers
        .iter()
        .map(|n| {
            secret_keys.insert(n.clone());
            EnvVar {
                name: helper(n),
                value_from: Some(secret_ref(n)),
                ..Default::default()
            }
        })
        .collect();
    full_env.extend(env);
    let placeholder = |field: &str, s: &str, w: &mut Vec<(String, String)>| -> String {
        if refs::has_vars(s) {
            w.push((field.to_string(), format!("uses {} from the env file, which Kubernetes cannot take from a Secret here; written as a placeholder you must replace", refs::vars(s).iter().map(|v| format!("`${{{v}}}`")).collect::<Vec<_>>().join(", "))));
            refs::placeholders(s)
        } else {
            s.to_string()
        }
    };

    // ---------------------------------------------------------------- ports, Services
    let mut cports: Vec<(u16, &'static str)> = svc.expose.iter().map(|p| (*p, "TCP")).collect();
    for p in &svc.ports {
        let proto = if p.protocol.as_str() == "udp" {
            "UDP"
        } else {
            "TCP"
        };
        cports.push((p.container, proto));
    }
    cports.sort();
    cports.dedup();
    let container_ports: Vec<ContainerPort> = cports
        .iter()
        .map(|(p, proto)| ContainerPort {
            container_port: *p as i32,
            name: Some(port_name(&proto.to_ascii_lowercase(), *p)),
            protocol: Some(proto.to_string()),
            ..Default::default()
        })
        .collect();
    let k8s_service = names::service_name(name);
    if k8s_service != name {
        w.push(("metadata.name".into(), format!("a Kubernetes Service name must start with a letter: it is `{k8s_service}`, so other services reach it by that name")));
    }
    let has_cluster_service = !cports.is_empty();
    if has_cluster_service && kind == WorkloadKind::DaemonSet {
        w.push(("spec.expose".into(), format!("the ClusterIP Service `{k8s_service}` reaches one node's pod per connection: on a cluster of several nodes, scrape the pods through Kubernetes service discovery (role: pod or endpoints) to see every node")));
    }
    if has_cluster_service {
        let ports = cports
            .iter()
            .map(|(p, proto)| ServicePort {
                name: Some(port_name(&proto.to_ascii_lowercase(), *p)),
                port: *p as i32,
                target_port: Some(IntOrString::Int(*p as i32)),
                protocol: Some(proto.to_string()),
                ..Default::default()
            })
            .collect();
        let s = Service {
            metadata: cx.meta(&k8s_service, labels.clone()),
            spec: Some(K8sServiceSpec {
                type_: Some("ClusterIP".into()),
                selector: Some(selector.clone()),
                ports: Some(ports),
                ..Default::default()
            }),
            ..Default::default()
        };
        cx.push(Object::Service(s), source.clone());
    }
    let mut public = Vec::new();
    for (i, p) in svc.ports.iter().enumerate() {
        let field = format!("spec.ports[{i}]");
        let proto = if p.protocol.as_str() == "udp" {
            "UDP"
        } else {
            "TCP"
        };
        match p.host_ip.as_deref() {
            Some(ip) if ip.starts_with("127.") || ip == "::1" || ip == "localhost" => {
                w.push((field, format!("published on {ip} only: no public Service; reach it with `kubectl port-forward`")));
                continue;
            }
            Some(ip) if ip != "0.0.0.0" && ip != "::" && !ip.is_empty() => {
                w.push((field.clone(), format!("bound to host address {ip}: the {} Service does not pin an address (set your provider's load-balancer IP annotation)", match cx.opts.edge_service_type { EdgeServiceType::LoadBalancer => "LoadBalancer", EdgeServiceType::NodePort => "NodePort" })));
            }
            _ => {}
        }
        if cx.opts.edge_service_type == EdgeServiceType::NodePort {
            w.push((field, format!("host port {} becomes a node port Kubernetes assigns from 30000-32767 (read it with `kubectl get service`), not {}", p.host, p.host)));
        }
        public.push(ServicePort {
            name: Some(port_name(&proto.to_ascii_lowercase(), p.host)),
            port: p.host as i32,
            target_port: Some(IntOrString::Int(p.container as i32)),
            protocol: Some(proto.to_string()),
            ..Default::default()
        });
    }
    if !public.is_empty() {
        public.sort_by(|a, b| (a.port, &a.protocol).cmp(&(b.port, &b.protocol)));
        public.dedup_by(|a, b| a.port == b.port && a.protocol == b.protocol);
        let s = Service {
            metadata: cx.meta(&format!("{k8s_service}-public"), labels.clone()),
            spec: Some(K8sServiceSpec {
                type_: Some(match cx.opts.edge_service_type {
                    EdgeServiceType::LoadBalancer => "LoadBalancer".into(),
                    EdgeServiceType::NodePort => "NodePort".into(),
                }),
                selector: Some(selector.clone()),
                ports: Some(public),
                ..Default::default()
            }),
            ..Default::default()
        };
        cx.push(Object::Service(s), source.clone());
    }

    // ---------------------------------------------------------------- volumes, mounts
    let mut volumes: Vec<Volume> = Vec::new();
    let mut mounts: Vec<VolumeMount> = Vec::new();
    let mut templates: Vec<PersistentVolumeClaim> = Vec::new();
    let mut seen_templates = BTreeSet::new();
    for (i, v) in svc.volumes.iter().enumerate() {
        let vname = names::label(&v.volume);
        match kind {
            WorkloadKind::StatefulSet => {
                if seen_templates.insert(vname.clone()) {
                    templates.push(PersistentVolumeClaim {
                        metadata: ObjectMeta {
                            name: Some(vname.clone()),
                            labels: Some(selector.clone()),
                            ..Default::default()
                        },
                        spec: Some(PersistentVolumeClaimSpec {
                            access_modes: Some(vec!["ReadWriteOnce".into()]),
                            storage_class_name: cx.opts.storage_class.clone(),
                            resources: Some(VolumeResourceRequirements {
                                requests: Some(BTreeMap::from([(
                                    "storage".to_string(),
                                    Quantity(cx.opts.volume_size.clone()),
                                )])),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                    cx.claims.push(Claim {
                        volume: v.volume.clone(),
                        pvc: format!("{vname}-{name}-0"),
                        statefulset: name.to_string(),
                    });
                }
            }
            _ => {
                w.push((format!("spec.volumes[{i}]"), format!("Volume `{}` on a node-level service becomes an empty directory per node (a DaemonSet has no claims); on Kubernetes obsd's jobs serve their metrics on obsd's own /metrics, so node-exporter's textfile directory may stay empty", v.volume)));
                if !volumes.iter().any(|x| x.name == vname) {
                    volumes.push(Volume {
                        name: vname.clone(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Default::default()
                    });
                }
            }
        }
        mounts.push(VolumeMount {
            name: vname,
            mount_path: placeholder(&format!("spec.volumes[{i}].target"), &v.target, &mut w),
            read_only: v.read_only.then_some(true),
            ..Default::default()
        });
    }

    let mut rolling = Sha256::new();
    let mut rolling_any = false;
    for (i, cf) in svc.config_files.iter().enumerate() {
        let field = format!("spec.configFiles[{i}]");
        let Some(cs) = cx.configs.get(&config::norm(&cf.source)) else {
            continue;
        };
        let vname = format!("config-{i}");
        let items = |v: &[(String, String)]| {
            v.iter()
                .map(|(k, p)| KeyToPath {
                    key: k.clone(),
                    path: p.clone(),
                    mode: None,
                })
                .collect::<Vec<_>>()
        };
        let volume = match (&cs.secret, cs.single_file) {
            // A single private file: the Secret alone.
            (Some(secret), true) => Volume {
                name: vname.clone(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret.clone()),
                    items: Some(items(&cs.private)),
                    ..Default::default()
                }),
                ..Default::default()
            },
            // A directory with private files: public and private side by side.
            (Some(secret), false) => Volume {
                name: vname.clone(),
                projected: Some(ProjectedVolumeSource {
                    sources: Some(vec![
                        VolumeProjection {
                            config_map: Some(ConfigMapProjection {
                                name: cs.name.clone(),
                                items: Some(items(&cs.items)),
                                optional: None,
                            }),
                            ..Default::default()
                        },
                        VolumeProjection {
                            secret: Some(SecretProjection {
                                name: secret.clone(),
                                items: Some(items(&cs.private)),
                                optional: None,
                            }),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            (None, _) => Volume {
                name: vname.clone(),
                config_map: Some(ConfigMapVolumeSource {
                    name: cs.name.clone(),
                    items: Some(items(&cs.items)),
                    ..Default::default()
                }),
                ..Default::default()
            },
        };
        volumes.push(volume);
        let sub_path = cs.single_file.then(|| {
            cs.items
                .first()
                .or(cs.private.first())
                .map(|(k, _)| k.clone())
                .unwrap_or_default()
        });
        mounts.push(VolumeMount {
            name: vname,
            mount_path: placeholder(&format!("{field}.target"), &cf.target, &mut w),
            read_only: Some(true),
            sub_path,
            ..Default::default()
        });
        match &cf.on_change {
            OnChange::Recreate | OnChange::Restart => {
                rolling_any = true;
                rolling.update(cs.name.as_bytes());
                rolling.update([0]);
                rolling.update(cs.hash.as_bytes());
            }
            OnChange::Signal(sig) => {
                rolling_any = true;
                rolling.update(cs.name.as_bytes());
                rolling.update([0]);
                rolling.update(cs.hash.as_bytes());
                w.push((format!("{field}.onChange"), format!("Kubernetes cannot send {sig} when a ConfigMap changes: a change rolls the pod instead (a restart, not a reload)")));
            }
            OnChange::None => {
                if cs.single_file {
                    w.push((format!("{field}.onChange"), "`none` on a single file: a file mounted with subPath is never updated in a running pod, so a change shows only after the pod is replaced (`kubectl rollout restart`); mount the directory to get updates in place".into()));
                }
            }
        }
        if cs.secret.is_some() {
            w.push((field.clone(), format!("files from Secret `{}` are not in the config hash: after changing them run `kubectl rollout restart`", cs.secret.as_deref().unwrap_or_default())));
        }
    }

    let node = kind == WorkloadKind::DaemonSet;
    for (i, b) in svc.binds.iter().enumerate() {
        let field = format!("spec.binds[{i}]");
        let src = host_path(&b.source);
        if DOCKER_SOCKET_PATHS.contains(&src.as_str()) {
            w.push((
                field,
                format!(
                    "`{}` is or holds the Docker socket, which is never mounted on Kubernetes",
                    b.source
                ),
            ));
            continue;
        }
        if !node {
            w.push((field, format!("host path `{}` is not mounted: hostPath is used only for node-level services; put the file in the desired-state directory and list it under configFiles (it becomes a ConfigMap), or give the data a Volume", b.source)));
            continue;
        }
        let propagation = match b.propagation.as_deref() {
            None | Some("private") | Some("rprivate") => None,
            Some("slave") | Some("rslave") => Some("HostToContainer".to_string()),
            // Kubernetes allows Bidirectional only in privileged containers.
            Some("shared") | Some("rshared") if svc.privileged => Some("Bidirectional".to_string()),
            Some(p @ ("shared" | "rshared")) => {
                w.push((format!("{field}.propagation"), format!("`{p}` needs a privileged container on Kubernetes (Bidirectional); mounted HostToContainer instead")));
                Some("HostToContainer".to_string())
            }
            Some(other) => {
                w.push((
                    format!("{field}.propagation"),
                    format!(
                        "propagation `{other}` has no Kubernetes equivalent; left at the default"
                    ),
                ));
                None
            }
        };
        let all = if src == "/" {
            " — the whole node, including its container runtime's socket"
        } else {
            ""
        };
        w.push((field.clone(), format!("hostPath `{}` → `{}`: the pod reads the node's files{all}; allowed here because the service is node-level (the namespace needs the `privileged` Pod Security level)", b.source, b.target)));
        let vname = format!("host-{i}");
        volumes.push(Volume {
            name: vname.clone(),
            host_path: Some(HostPathVolumeSource {
                path: placeholder(&format!("{field}.source"), &b.source, &mut w),
                type_: None,
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: vname,
            mount_path: placeholder(&format!("{field}.target"), &b.target, &mut w),
            read_only: b.read_only.then_some(true),
            mount_propagation: propagation,
            ..Default::default()
        });
    }

    for (i, d) in svc.devices.iter().enumerate() {
        let field = format!("spec.devices[{i}]");
        let mut parts = d.splitn(3, ':');
        let host = parts.next().unwrap_or_default().to_string();
        let target = parts
            .next()
            .map(str::to_string)
            .unwrap_or_else(|| host.clone());
        if !node {
            w.push((field, format!("device `{d}` is not mapped: Kubernetes gives devices through device plugins, and hostPath only to node-level services")));
            continue;
        }
        w.push((field, format!("device `{d}` becomes a hostPath mount of `{host}` (a device node; needs a privileged container to be usable)")));
        let vname = format!("device-{i}");
        volumes.push(Volume {
            name: vname.clone(),
            host_path: Some(HostPathVolumeSource {
                path: host,
                type_: Some("CharDevice".into()),
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: vname,
            mount_path: target,
            ..Default::default()
        });
    }

    for (i, t) in svc.tmpfs.iter().enumerate() {
        let field = format!("spec.tmpfs[{i}]");
        let (path, options) = t.split_once(':').unwrap_or((t.as_str(), ""));
        let mut size = None;
        for o in options.split(',').filter(|o| !o.is_empty()) {
            match o.split_once('=') {
                Some(("size", v)) => size = Some(v.to_string()),
                _ => w.push((field.clone(), format!("tmpfs option `{o}` has no Kubernetes equivalent (an in-memory emptyDir); dropped"))),
            }
        }
        let vname = format!("tmpfs-{i}");
        let size_limit = size.map(|s| {
            Quantity(match parse_memory(&s) {
                Some(b) => memory_quantity(b),
                None => s,
            })
        });
        volumes.push(Volume {
            name: vname.clone(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit,
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: vname,
            mount_path: path.to_string(),
            ..Default::default()
        });
    }
    mounts.sort_by(|a, b| a.mount_path.cmp(&b.mount_path));

    // ---------------------------------------------------------------- probes
    let mut readiness = None;
    let mut liveness = None;
    if let Some(hc) = &svc.healthcheck {
        if let Some(cmd) = probe_command(hc) {
            let cmd: Vec<String> = cmd
                .iter()
                .map(|c| placeholder("spec.healthcheck.test", c, &mut w))
                .collect();
            let mut rounded = false;
            let period = secs(hc.interval, 30, &mut rounded);
            let timeout = secs(hc.timeout, 30, &mut rounded);
            let start = hc.start_period.map(|d| secs(Some(d), 0, &mut rounded));
            if rounded {
                w.push((
                    "spec.healthcheck".into(),
                    "sub-second durations rounded up to whole seconds".into(),
                ));
            }
            let failure = hc.retries.unwrap_or(3).max(1) as i32;
            let probe = Probe {
                exec: Some(ExecAction { command: Some(cmd) }),
                period_seconds: Some(period),
                timeout_seconds: Some(timeout),
                failure_threshold: Some(failure),
                success_threshold: Some(1),
                ..Default::default()
            };
            match liveness_unsafe(hc) {
                None => {
                    liveness = Some(Probe {
                        initial_delay_seconds: start,
                        ..probe.clone()
                    });
                }
                Some(why) => w.push(("spec.healthcheck".into(), format!("readiness probe only, no liveness probe: {why}; obsd restarted an unhealthy container, Kubernetes only stops sending it traffic"))),
            }
            readiness = Some(probe);
        }
    }

    // ---------------------------------------------------------------- dependencies
    let mut init = Vec::new();
    for (i, d) in svc.depends_on.iter().enumerate() {
        let field = format!("spec.dependsOn[{i}]");
        match d.condition {
            DependencyCondition::Started => w.push((field, format!("`started` on `{}`: Kubernetes has no start order, the pod starts at once (a container that needs `{}` restarts until it answers)", d.service, d.service))),
            DependencyCondition::Healthy => {
                let dep = st.services.get(&d.service);
                let url = dep.and_then(|r| r.spec.healthcheck.as_ref()).and_then(health_url);
                match (dep, url) {
                    (Some(dep), Some(u)) if u.loopback && dep.spec.expose.contains(&u.port) => {
                        let target = format!("http://{}:{}{}", names::service_name(&d.service), u.port, u.path);
                        init.push(Container {
                            name: names::label(&format!("wait-for-{}", d.service)),
                            image: Some(cx.opts.wait_image.clone()),
                            command: Some(vec![
                                "sh".into(),
                                "-c".into(),
                                format!("until wget -q -T 5 -O /dev/null {target}; do echo 'waiting for {} to be ready'; sleep 2; done", d.service),
                            ]),
                            ..Default::default()
                        });
                    }
                    _ => w.push((field, format!("`healthy` on `{}` is not mapped: its healthcheck is not an HTTP fetch of a port it exposes, so no init container can ask its Service; the pod starts without waiting", d.service))),
                }
            }
        }
    }

    // ---------------------------------------------------------------- security, resources
    let mut sc = SecurityContext::default();
    let mut sc_set = false;
    if let Some(u) = &svc.user {
        let (uid, gid) = u
            .split_once(':')
            .map(|(a, b)| (a, Some(b)))
            .unwrap_or((u.as_str(), None));
        match (uid.parse::<i64>(), gid.map(|g| g.parse::<i64>())) {
            (Ok(uid), None) => {
                sc.run_as_user = Some(uid);
                sc_set = true;
            }
            (Ok(uid), Some(Ok(gid))) => {
                sc.run_as_user = Some(uid);
                sc.run_as_group = Some(gid);
                sc_set = true;
            }
            _ => w.push(("spec.user".into(), format!("user `{u}` is a name; Kubernetes needs numeric IDs (runAsUser/runAsGroup): left to the image's default"))),
        }
    }
    let caps = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|c| {
                c.trim()
                    .to_ascii_uppercase()
                    .trim_start_matches("CAP_")
                    .to_string()
            })
            .collect()
    };
    if !svc.cap_add.is_empty() || !svc.cap_drop.is_empty() {
        sc.capabilities = Some(Capabilities {
            add: (!svc.cap_add.is_empty()).then(|| caps(&svc.cap_add)),
            drop: (!svc.cap_drop.is_empty()).then(|| caps(&svc.cap_drop)),
        });
        sc_set = true;
    }
    if svc.privileged {
        sc.privileged = Some(true);
        sc_set = true;
        if !node {
            w.push(("spec.privileged".into(), "privileged container on a service that is not node-level: most clusters' Pod Security admission rejects it".into()));
        }
    }
    if svc.read_only {
        sc.read_only_root_filesystem = Some(true);
        sc_set = true;
    }
    for (i, o) in svc.security_opt.iter().enumerate() {
        let norm = o.replace('=', ":");
        match norm.as_str() {
            "no-new-privileges" | "no-new-privileges:true" => {
                sc.allow_privilege_escalation = Some(false);
                sc_set = true;
            }
            "seccomp:unconfined" => {
                sc.seccomp_profile = Some(SeccompProfile {
                    type_: "Unconfined".into(),
                    localhost_profile: None,
                });
                sc_set = true;
            }
            _ => w.push((format!("spec.securityOpt[{i}]"), format!("`{o}` has no direct Kubernetes equivalent (use the pod's securityContext: seccompProfile, appArmorProfile, seLinuxOptions); dropped"))),
        }
    }
    let mut resources = None;
    if let Some(res) = &svc.resources {
        let mut limits = BTreeMap::new();
        if let Some(m) = res.memory.as_deref().and_then(parse_memory) {
            limits.insert("memory".to_string(), Quantity(memory_quantity(m)));
        }
        if let Some(c) = res.cpus {
            limits.insert(
                "cpu".to_string(),
                Quantity(format!("{}m", (c * 1000.0).round() as i64)),
            );
        }
        if res.pids_limit.is_some() {
            w.push(("spec.resources.pidsLimit".into(), "Kubernetes limits processes per node (kubelet podPidsLimit), not per container; dropped".into()));
        }
        if !limits.is_empty() {
            resources = Some(ResourceRequirements {
                limits: Some(limits),
                ..Default::default()
            });
        }
    }
    if let Some(l) = &svc.logging {
        let opts: Vec<String> = l.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
        w.push(("spec.logging".into(), format!("log driver `{}`{} is per node on Kubernetes (kubelet containerLogMaxSize / containerLogMaxFiles); not mapped", l.driver, if opts.is_empty() { String::new() } else { format!(" ({})", opts.join(", ")) })));
    }
    if let Some(sig) = &svc.stop_signal {
        if sig != "SIGTERM" && sig != "TERM" && sig != "15" {
            w.push(("spec.stopSignal".into(), format!("Kubernetes stops containers with SIGTERM (the image's STOPSIGNAL aside); `{sig}` is not mapped")));
        }
    }
    match svc.restart {
        RestartPolicy::No | RestartPolicy::OnFailure => w.push((
            "spec.restart".into(),
            format!(
                "`{}`: a {kind_name}'s pod restarts its container always",
                svc.restart.docker_name()
            ),
        )),
        _ => {}
    }
    let mut host_pid = None;
    match svc.pid.as_deref() {
        None => {}
        Some("host") => host_pid = Some(true),
        Some(other) => w.push(("spec.pid".into(), format!("pid `{other}` has no Kubernetes equivalent (only the host's, or shareProcessNamespace within a pod); dropped"))),
    }
    let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, h) in svc.extra_hosts.iter().enumerate() {
        let Some((host, ip)) = h.split_once(':') else {
            continue;
        };
        if ip == "host-gateway" {
            w.push((format!("spec.extraHosts[{i}]"), format!("`{host}` → host-gateway (the Docker host) has no Kubernetes equivalent; dropped — a pod reaches the node through its Service or the downward API (status.hostIP). obsd itself is the Service `obsd:{}` there", super::OBSD_PORT)));
            continue;
        }
        aliases
            .entry(ip.to_string())
            .or_default()
            .push(host.to_string());
    }
    let host_aliases = (!aliases.is_empty()).then(|| {
        aliases
            .into_iter()
            .map(|(ip, hostnames)| HostAlias {
                ip,
                hostnames: Some(hostnames),
            })
            .collect::<Vec<_>>()
    });
    let mut annotations = BTreeMap::new();
    for (k, v) in &svc.labels {
        if names::is_qualified_key(k) {
            annotations.insert(
                k.clone(),
                placeholder(&format!("spec.labels.{k}"), v, &mut w),
            );
        } else {
            w.push((
                format!("spec.labels.{k}"),
                "not a valid Kubernetes annotation key; dropped".into(),
            ));
        }
    }
    if rolling_any {
        annotations.insert(
            super::ANNOTATION_CONFIG_HASH.to_string(),
            hex::encode(rolling.finalize()),
        );
    }

    let image = placeholder("spec.image", &svc.image, &mut w);
    let working_dir = svc
        .working_dir
        .as_ref()
        .map(|d| placeholder("spec.workingDir", d, &mut w));
    let container = Container {
        name: name.to_string(),
        image: Some(image),
        image_pull_policy: Some(match svc.pull_policy {
            PullPolicy::IfNotPresent => "IfNotPresent".into(),
            PullPolicy::Always => "Always".into(),
            PullPolicy::Never => "Never".into(),
        }),
        command,
        args,
        working_dir,
        env: (!full_env.is_empty()).then_some(full_env),
        ports: (!container_ports.is_empty()).then_some(container_ports),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        readiness_probe: readiness,
        liveness_probe: liveness,
        security_context: sc_set.then_some(sc),
        resources,
        ..Default::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        init_containers: (!init.is_empty()).then_some(init),
        volumes: (!volumes.is_empty()).then_some(volumes),
        host_pid,
        host_aliases,
        // Docker injects no variables per Service and mounts no API token: the same here.
        enable_service_links: Some(false),
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: svc
            .stop_grace_period
            .map(|d| d.0.as_secs().max(1) as i64),
        ..Default::default()
    };
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels.clone()),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..Default::default()
        }),
        spec: Some(pod),
    };
    let label_selector = LabelSelector {
        match_labels: Some(selector.clone()),
        ..Default::default()
    };
    let meta = cx.meta(name, labels);
    let object = match kind {
        WorkloadKind::Deployment => Object::Deployment(Deployment {
            metadata: meta,
            spec: Some(DeploymentSpec {
                replicas: Some(1),
                selector: label_selector,
                template,
                ..Default::default()
            }),
            ..Default::default()
        }),
        WorkloadKind::StatefulSet => Object::StatefulSet(StatefulSet {
            metadata: meta,
            spec: Some(StatefulSetSpec {
                replicas: Some(1),
                selector: label_selector,
                service_name: has_cluster_service.then(|| k8s_service.clone()),
                template,
                volume_claim_templates: Some(templates),
                // obsd's reclaimPolicy: Retain — deleting the StatefulSet keeps the data.
                persistent_volume_claim_retention_policy: Some(
                    StatefulSetPersistentVolumeClaimRetentionPolicy {
                        when_deleted: Some("Retain".into()),
                        when_scaled: Some("Retain".into()),
                    },
                ),
                ..Default::default()
            }),
            ..Default::default()
        }),
        WorkloadKind::DaemonSet => Object::DaemonSet(DaemonSet {
            metadata: meta,
            spec: Some(DaemonSetSpec {
                selector: label_selector,
                template,
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    cx.push(object, source);
    cx.secret_keys.extend(secret_keys);
    for (f, m) in w {
        cx.warn(&subject, f, m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hc(test: &[&str]) -> Healthcheck {
        Healthcheck {
            test: test.iter().map(|s| s.to_string()).collect(),
            interval: None,
            timeout: None,
            retries: None,
            start_period: None,
        }
    }

    #[test]
    fn health_urls_and_liveness_safety() {
        let h = hc(&[
            "CMD",
            "wget",
            "-q",
            "-O",
            "/dev/null",
            "http://localhost:9090/-/healthy",
        ]);
        assert_eq!(
            health_url(&h),
            Some(HealthUrl {
                loopback: true,
                port: 9090,
                path: "/-/healthy".into()
            })
        );
        assert_eq!(liveness_unsafe(&h), None);
        let h = hc(&[
            "CMD-SHELL",
            "wget -q -O /dev/null http://localhost:3100/ready || exit 1",
        ]);
        assert_eq!(health_url(&h).map(|u| u.port), Some(3100));
        assert!(liveness_unsafe(&h).unwrap().contains("readiness"));
        let h = hc(&["CMD", "pg_isready"]);
        assert!(health_url(&h).is_none());
        assert!(liveness_unsafe(&h).is_some());
        let h = hc(&["CMD", "curl", "-f", "http://db:5432/"]);
        assert!(liveness_unsafe(&h).unwrap().contains("another address"));
        assert_eq!(probe_command(&hc(&["NONE"])), None);
        assert_eq!(
            probe_command(&hc(&["CMD-SHELL", "true"])),
            Some(vec!["/bin/sh".into(), "-c".into(), "true".into()])
        );
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(memory_quantity(512 * 1024 * 1024), "512Mi");
        assert_eq!(memory_quantity(2 * 1024 * 1024 * 1024), "2Gi");
        assert_eq!(memory_quantity(1000), "1000");
    }
}
