//! One Service → its workload (StatefulSet, Deployment or DaemonSet) and its Services.
//!
//! The choice of workload:
//! * node-level — the Service shares the host's PID namespace or mounts the host's `/`
//!   (node-exporter, cAdvisor): a DaemonSet, the only kind that gets `hostPath` mounts;
//! * with named volumes: a StatefulSet with one replica and a claim template per volume;
//! * otherwise a Deployment with one replica.
//!
//! [`build`] runs the stages in the order a reader meets them in the pod: the container's
//! command and environment ([`super::container`]), its ports and the Services
//! ([`super::services`]), its storage ([`super::mounts`]), its probes and the init
//! containers that wait for dependencies ([`super::probes`]), its security context and
//! limits; then this file puts the pod together and wraps it in the workload of its kind.

use super::{container, mounts, names, probes, refs, services, Cx, Object};
use crate::desired::model::service::{PullPolicy, RestartPolicy, ServiceSpec};
use crate::desired::Resource;
use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec, StatefulSet,
    StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, HostAlias, PersistentVolumeClaim, PodSpec, PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use std::collections::BTreeMap;

/// Which workload a Service becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl WorkloadKind {
    /// The Kubernetes kind, as warnings name it.
    fn name(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }
}

/// Whether a Service needs the node itself: the host's PID namespace or its `/`.
fn node_level(svc: &ServiceSpec) -> bool {
    svc.pid.as_deref() == Some("host")
        || svc
            .binds
            .iter()
            .any(|b| mounts::host_path(&b.source) == "/")
}

fn workload_kind(svc: &ServiceSpec) -> WorkloadKind {
    if node_level(svc) {
        WorkloadKind::DaemonSet
    } else if !svc.volumes.is_empty() {
        WorkloadKind::StatefulSet
    } else {
        WorkloadKind::Deployment
    }
}

/// One Service being mapped: what every stage reads, and the warnings they collect.
///
/// The stages take it by `&mut` only to warn; they add objects, claims and Secret keys
/// to the run's [`Cx`].
pub(super) struct Svc<'a> {
    pub name: &'a str,
    pub spec: &'a ServiceSpec,
    pub kind: WorkloadKind,
    /// The labels its pods are selected by ([`Cx::labels`]).
    pub selector: BTreeMap<String, String>,
    /// The selector and the Service's own valid labels: on every object and its pods.
    pub labels: BTreeMap<String, String>,
    /// `(field, message)`, warned under `Service/<name>` when the mapping is done.
    warnings: Vec<(String, String)>,
}

impl<'a> Svc<'a> {
    /// Chooses the workload and the labels, warning about what Kubernetes would refuse.
    fn new(cx: &Cx, name: &'a str, r: &'a Resource<ServiceSpec>) -> Self {
        let selector = cx.labels(name);
        let mut s = Svc {
            name,
            spec: &r.spec,
            kind: workload_kind(&r.spec),
            labels: selector.clone(),
            selector,
            warnings: Vec::new(),
        };
        if s.kind == WorkloadKind::StatefulSet && name.len() > 52 {
            s.warn("metadata.name", "longer than 52 characters: a StatefulSet's pods carry the label `controller-revision-hash: <name>-<hash>`, which must fit in 63; Kubernetes will not create its pods — shorten the name");
        }
        if r.spec.image_updates().is_some() {
            s.warn("spec.update.image", "not mapped: Kubernetes does not watch registries for a moved tag; use an image automation tool (e.g. Flux image automation) or bump the tag in the manifests");
        }
        for (k, v) in &r.labels {
            if names::is_qualified_key(k) && names::is_label_value(v) && !s.labels.contains_key(k) {
                s.labels.insert(k.clone(), v.clone());
            } else {
                s.warn(
                    format!("metadata.labels.{k}"),
                    "not a valid Kubernetes label (or one the exporter sets); left out",
                );
            }
        }
        s
    }

    pub fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.warnings.push((field.into(), message.into()));
    }

    /// Whether the Service runs on every node (a DaemonSet): only then may it see the
    /// node's files and devices.
    pub fn node(&self) -> bool {
        self.kind == WorkloadKind::DaemonSet
    }

    /// `s` for a field Kubernetes cannot fill from a Secret: an env-file `${VAR}` in it
    /// becomes a placeholder the user must replace, and is warned — its value is never
    /// written.
    pub fn placeholder(&mut self, field: &str, s: &str) -> String {
        if refs::has_vars(s) {
            self.warn(field, format!("uses {} from the env file, which Kubernetes cannot take from a Secret here; written as a placeholder you must replace", refs::vars(s).iter().map(|v| format!("`${{{v}}}`")).collect::<Vec<_>>().join(", ")));
            refs::placeholders(s)
        } else {
            s.to_string()
        }
    }
}

/// Builds the objects of Service `name`.
pub(super) fn build(cx: &mut Cx, name: &str) {
    let input = cx.input;
    let r: &Resource<ServiceSpec> = &input.state.services[name];
    let mut s = Svc::new(cx, name, r);
    let source = format!("Service {name} ({})", cx.source_file(&r.source.file));

    let env = container::env(cx, s.spec);
    let ports = services::build(cx, &mut s, &source);
    let storage = mounts::build(cx, &mut s);
    let health = probes::probes(&mut s);
    let init = probes::init_containers(cx, &mut s);
    let security_context = container::security_context(&mut s);
    let resources = container::resources(&mut s);
    unmapped(&mut s);

    let svc = s.spec;
    let image = s.placeholder("spec.image", &svc.image);
    let working_dir = svc
        .working_dir
        .as_ref()
        .map(|d| s.placeholder("spec.workingDir", d));
    let container = Container {
        name: name.to_string(),
        image: Some(image),
        image_pull_policy: Some(match svc.pull_policy {
            PullPolicy::IfNotPresent => "IfNotPresent".into(),
            PullPolicy::Always => "Always".into(),
            PullPolicy::Never => "Never".into(),
        }),
        command: env.command,
        args: env.args,
        working_dir,
        env: (!env.vars.is_empty()).then_some(env.vars),
        ports: (!ports.container.is_empty()).then_some(ports.container),
        volume_mounts: (!storage.mounts.is_empty()).then_some(storage.mounts),
        readiness_probe: health.readiness,
        liveness_probe: health.liveness,
        security_context,
        resources,
        ..Default::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        init_containers: (!init.is_empty()).then_some(init),
        volumes: (!storage.volumes.is_empty()).then_some(storage.volumes),
        host_pid: host_pid(&mut s),
        host_aliases: host_aliases(&mut s),
        // Docker injects no variables per Service and mounts no API token: the same here.
        enable_service_links: Some(false),
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: svc
            .stop_grace_period
            .map(|d| d.0.as_secs().max(1) as i64),
        ..Default::default()
    };
    let annotations = annotations(&mut s, storage.config_hash);
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(s.labels.clone()),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..Default::default()
        }),
        spec: Some(pod),
    };
    let object = workload(cx, &s, template, ports.cluster_service, storage.claims);
    cx.push(object, source);
    let subject = format!("Service/{name}");
    for (f, m) in s.warnings {
        cx.warn(&subject, f, m);
    }
}

/// The pod wrapped in the workload of its kind, one replica (a DaemonSet one per node).
///
/// A StatefulSet names its ClusterIP Service as the governing one, when there is one,
/// and keeps its claims when it is deleted or scaled down, as obsd's volumes are
/// `reclaimPolicy: Retain`.
fn workload(
    cx: &Cx,
    s: &Svc,
    template: PodTemplateSpec,
    cluster_service: Option<String>,
    claims: Vec<PersistentVolumeClaim>,
) -> Object {
    let selector = LabelSelector {
        match_labels: Some(s.selector.clone()),
        ..Default::default()
    };
    let metadata = cx.meta(s.name, s.labels.clone());
    match s.kind {
        WorkloadKind::Deployment => Object::Deployment(Deployment {
            metadata,
            spec: Some(DeploymentSpec {
                replicas: Some(1),
                selector,
                template,
                ..Default::default()
            }),
            ..Default::default()
        }),
        WorkloadKind::StatefulSet => Object::StatefulSet(StatefulSet {
            metadata,
            spec: Some(StatefulSetSpec {
                replicas: Some(1),
                selector,
                service_name: cluster_service,
                template,
                volume_claim_templates: Some(claims),
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
            metadata,
            spec: Some(DaemonSetSpec {
                selector,
                template,
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// Docker settings that Kubernetes sets per node, or always the same way: nothing to
/// write, but the user must hear that the behaviour changes.
fn unmapped(s: &mut Svc) {
    let svc = s.spec;
    if let Some(l) = &svc.logging {
        let opts: Vec<String> = l.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
        s.warn("spec.logging", format!("log driver `{}`{} is per node on Kubernetes (kubelet containerLogMaxSize / containerLogMaxFiles); not mapped", l.driver, if opts.is_empty() { String::new() } else { format!(" ({})", opts.join(", ")) }));
    }
    if let Some(sig) = &svc.stop_signal {
        if sig != "SIGTERM" && sig != "TERM" && sig != "15" {
            s.warn("spec.stopSignal", format!("Kubernetes stops containers with SIGTERM (the image's STOPSIGNAL aside); `{sig}` is not mapped"));
        }
    }
    match svc.restart {
        RestartPolicy::No | RestartPolicy::OnFailure => s.warn(
            "spec.restart",
            format!(
                "`{}`: a {}'s pod restarts its container always",
                svc.restart.docker_name(),
                s.kind.name()
            ),
        ),
        _ => {}
    }
}

/// `pid: host` → `hostPID`; any other PID namespace has no pod equivalent.
fn host_pid(s: &mut Svc) -> Option<bool> {
    match s.spec.pid.as_deref() {
        None => None,
        Some("host") => Some(true),
        Some(other) => {
            s.warn("spec.pid", format!("pid `{other}` has no Kubernetes equivalent (only the host's, or shareProcessNamespace within a pod); dropped"));
            None
        }
    }
}

/// `extraHosts` → `hostAliases`, one per address; `host-gateway` (the Docker host)
/// means nothing in a cluster and is dropped with a warning.
fn host_aliases(s: &mut Svc) -> Option<Vec<HostAlias>> {
    let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, h) in s.spec.extra_hosts.iter().enumerate() {
        let Some((host, ip)) = h.split_once(':') else {
            continue;
        };
        if ip == "host-gateway" {
            s.warn(format!("spec.extraHosts[{i}]"), format!("`{host}` → host-gateway (the Docker host) has no Kubernetes equivalent; dropped — a pod reaches the node through its Service or the downward API (status.hostIP). obsd itself is the Service `obsd:{}` there", super::OBSD_PORT));
            continue;
        }
        aliases
            .entry(ip.to_string())
            .or_default()
            .push(host.to_string());
    }
    (!aliases.is_empty()).then(|| {
        aliases
            .into_iter()
            .map(|(ip, hostnames)| HostAlias {
                ip,
                hostnames: Some(hostnames),
            })
            .collect()
    })
}

/// The pod template's annotations: the container's Docker labels (free text, which a
/// Kubernetes label value could not hold) and the config hash that rolls the pods.
fn annotations(s: &mut Svc, config_hash: Option<String>) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::new();
    for (k, v) in &s.spec.labels {
        let field = format!("spec.labels.{k}");
        if names::is_qualified_key(k) {
            annotations.insert(k.clone(), s.placeholder(&field, v));
        } else {
            s.warn(field, "not a valid Kubernetes annotation key; dropped");
        }
    }
    if let Some(hash) = config_hash {
        annotations.insert(super::ANNOTATION_CONFIG_HASH.to_string(), hash);
    }
    annotations
}
