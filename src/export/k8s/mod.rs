//! `obsctl export k8s`: the desired state as Kubernetes manifests a real cluster accepts.
//!
//! [`export`] is pure — values in, manifests and warnings out, like the planner — and
//! deterministic: the same input gives byte-identical output. It maps:
//!
//! * a Service with named volumes → a StatefulSet (1 replica) whose
//!   `volumeClaimTemplates` hold the data (no separate PVCs to duplicate), retained on
//!   delete like obsd's `reclaimPolicy: Retain`; without volumes → a Deployment; a
//!   node-level Service (host PID namespace, or the host's `/` mounted) → a DaemonSet;
//! * `expose` → a ClusterIP Service; published ports → a LoadBalancer (or NodePort)
//!   Service `<name>-public`, so only the edge proxy is reachable from outside;
//! * config files → one ConfigMap per config source (directories flattened with a key
//!   map), their content hash on the pod template so a change rolls the pods; files not
//!   readable by others are never copied — they come from a Secret the user creates;
//! * `secretEnv` and every `${VAR}` from the env file → `secretKeyRef`s into one Secret,
//!   created with `kubectl create secret generic … --from-env-file` (no value is ever
//!   written: see [`refs`]);
//! * healthchecks → exec readiness probes, and liveness probes only where a failing
//!   check means the process itself is broken; `dependsOn: healthy` → an init container
//!   that waits for the dependency's Service to answer its health URL;
//! * the Jobs → obsd itself as a Deployment in `--jobs-only` mode, with the
//!   desired-state directory projected from ConfigMaps.
//!
//! What Kubernetes cannot express is never dropped silently: every lossy mapping is a
//! [`Warning`]. The full table is generated into `crds-docs/kubernetes.md` ([`docs`]).

mod config;
mod container;
pub mod docs;
mod input;
mod mounts;
pub mod names;
mod obsd;
mod output;
mod probes;
pub mod refs;
mod services;
mod stack;
mod workload;

pub use input::{read_input, EnvFacts, FileEntry, Input, InputError};

use k8s_openapi::api::core::v1::{
    Namespace, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use output::Object;
use std::collections::{BTreeMap, BTreeSet};

/// The label every generated object carries with the Service (or `obsd`) it came from.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// The label every generated object carries with the Stack's project.
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
/// Pod-template annotation: hash of the config files whose change should roll the pods.
pub const ANNOTATION_CONFIG_HASH: &str = "obs.tlsstress.art/config-hash";
/// Prefix of the helper variables that carry env-file values into `$(…)` expansions.
pub const HELPER_PREFIX: &str = "OBSD_ENV_";
/// The Kubernetes version the manifests are written and checked for.
pub const KUBERNETES_VERSION: &str = "1.33";
/// Port of obsd's `/metrics` and `/healthz` in jobs-only mode.
pub const OBSD_PORT: u16 = 9850;

/// How published ports reach the outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EdgeServiceType {
    #[default]
    LoadBalancer,
    NodePort,
}

impl EdgeServiceType {
    /// The Service `type` it stands for (also named in warnings about published ports).
    fn service_type(self) -> &'static str {
        match self {
            EdgeServiceType::LoadBalancer => "LoadBalancer",
            EdgeServiceType::NodePort => "NodePort",
        }
    }
}

/// Export settings (the CLI's flags).
#[derive(Debug, Clone)]
pub struct Options {
    /// Namespace of every object; default: the Stack's project as a DNS label.
    pub namespace: Option<String>,
    pub edge_service_type: EdgeServiceType,
    /// Storage requested by every volume claim (obsd volumes have no size).
    pub volume_size: String,
    /// Storage class of the claims; default: the cluster's default class.
    pub storage_class: Option<String>,
    /// obsd's own image, for the jobs-only Deployment.
    pub obsd_image: String,
    /// Image of the init containers that wait for `healthy` dependencies (needs `sh`
    /// and `wget`).
    pub wait_image: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            namespace: None,
            edge_service_type: EdgeServiceType::LoadBalancer,
            volume_size: "10Gi".into(),
            storage_class: None,
            obsd_image: format!("obsd:{}", env!("CARGO_PKG_VERSION")),
            wait_image: "busybox:1.36".into(),
        }
    }
}

/// A lossy mapping: something of the desired state Kubernetes gets differently or not
/// at all.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Warning {
    /// `Service/caddy`, `Volume/pip_cache`, `Job/backup`, `Stack/…`, `env file`.
    pub subject: String,
    /// Field path in the document, e.g. `spec.binds[0]`; may be empty.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.subject, self.message)
        } else {
            write!(f, "{} {}: {}", self.subject, self.field, self.message)
        }
    }
}

/// One manifest file.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// File name, e.g. `40-statefulset-grafana.yaml` (the prefix orders `kubectl apply`).
    pub file: String,
    pub kind: &'static str,
    pub name: String,
    /// The document, starting with a comment naming its source.
    pub yaml: String,
}

/// A named volume and the claim that holds its data on Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Claim {
    /// The obsd `Volume` resource name.
    pub volume: String,
    /// The PVC the StatefulSet creates, `<template>-<statefulset>-0`.
    pub pvc: String,
    pub statefulset: String,
}

/// A Secret made from private config files, created by the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSecret {
    pub name: String,
    /// `(key, path as the user would name it)`.
    pub files: Vec<(String, String)>,
}

/// The result of an export.
#[derive(Debug, Clone)]
pub struct Export {
    pub namespace: String,
    pub manifests: Vec<Manifest>,
    pub warnings: Vec<Warning>,
    /// The one Secret every env-file reference points into.
    pub secret_name: String,
    /// The keys the manifests reference in it.
    pub secret_keys: BTreeSet<String>,
    /// `--from-env-file` argument, when the Stack names an env file.
    pub env_file: Option<String>,
    pub file_secrets: Vec<FileSecret>,
    pub claims: Vec<Claim>,
    /// Set when the stack has Jobs: the image the obsd Deployment runs.
    pub obsd_image: Option<String>,
}

/// Why nothing was exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("ConfigMap `{name}` for `{source_path}` would hold {bytes} bytes; Kubernetes allows at most 1 MiB (1048576 bytes): mount smaller directories")]
    ConfigTooLarge {
        name: String,
        source_path: String,
        bytes: usize,
    },
    #[error("{first} and {second} would both be the {kind} `{name}` in Kubernetes; rename one")]
    NameClash {
        kind: &'static str,
        name: String,
        first: String,
        second: String,
    },
    #[error("desired-state document {0} is not readable by others, so it may hold a secret and is never copied into a ConfigMap; make it readable (chmod 644) if it holds none")]
    PrivateDocument(String),
    #[error("cannot write the YAML of {what}: {message}")]
    Yaml { what: String, message: String },
}

/// The state of one export run, shared by the mapping functions.
struct Cx<'a> {
    input: &'a Input,
    opts: &'a Options,
    namespace: String,
    /// The project as a label value.
    part_of: String,
    secret_name: String,
    secret_keys: BTreeSet<String>,
    warnings: Vec<Warning>,
    /// `(object, where it came from)`.
    objects: Vec<(Object, String)>,
    claims: Vec<Claim>,
    file_secrets: Vec<FileSecret>,
    configs: BTreeMap<String, config::Source>,
}

impl Cx<'_> {
    fn warn(
        &mut self,
        subject: impl Into<String>,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) {
        self.warnings.push(Warning {
            subject: subject.into(),
            field: field.into(),
            message: msg.into(),
        });
    }

    /// Labels of an object generated for `name` (a Service, or `obsd`).
    fn labels(&self, name: &str) -> BTreeMap<String, String> {
        let mut labels = self.stack_labels();
        labels.insert(LABEL_NAME.to_string(), name.to_string());
        labels
    }

    /// Labels of an object that belongs to the whole Stack (the Namespace, a ConfigMap
    /// Services share).
    fn stack_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(LABEL_PART_OF.to_string(), self.part_of.clone())])
    }

    fn meta(&self, name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            ..Default::default()
        }
    }

    /// A desired-state file as the user names it (relative to the directory).
    fn source_file(&self, file: &std::path::Path) -> String {
        file.strip_prefix(&self.input.state.dir)
            .unwrap_or(file)
            .display()
            .to_string()
    }

    fn push(&mut self, o: Object, source: impl Into<String>) {
        self.objects.push((o, source.into()));
    }

    /// A claim on `size` of storage: every claim is one node's (`ReadWriteOnce`, as a
    /// Docker volume is one host's) in the storage class the user chose.
    fn claim_spec(&self, size: &str) -> PersistentVolumeClaimSpec {
        PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: self.opts.storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(size.to_string()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// Maps a desired state to Kubernetes manifests.
pub fn export(input: &Input, opts: &Options) -> Result<Export, ExportError> {
    let st = &input.state;
    let project = st.project().to_string();
    let namespace = opts
        .namespace
        .clone()
        .unwrap_or_else(|| names::label(&project));
    let part_of = if names::is_label_value(&project) {
        project.clone()
    } else {
        names::label(&project)
    };
    let mut cx = Cx {
        input,
        opts,
        namespace: namespace.clone(),
        part_of,
        secret_name: names::label(&format!("{project}-env")),
        secret_keys: BTreeSet::new(),
        warnings: Vec::new(),
        objects: Vec::new(),
        claims: Vec::new(),
        file_secrets: Vec::new(),
        configs: BTreeMap::new(),
    };

    stack::warnings(&mut cx);

    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(namespace.clone()),
            labels: Some(cx.stack_labels()),
            ..Default::default()
        },
        ..Default::default()
    };
    let stack_file = cx.source_file(&st.stack.source.file);
    cx.push(
        Object::Namespace(ns),
        format!("Stack {} ({stack_file})", st.stack.name),
    );

    config::build_all(&mut cx)?;
    for name in st.services.keys() {
        workload::build(&mut cx, name);
    }
    stack::volume_warnings(&mut cx);
    if !st.jobs.is_empty() {
        obsd::build(&mut cx)?;
    }

    output::finish(cx)
}
