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
pub mod docs;
mod input;
pub mod names;
mod obsd;
pub mod refs;
mod workload;

pub use input::{read_input, EnvFacts, FileEntry, Input, InputError};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
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

/// One generated object, before serialization.
enum Object {
    Namespace(Namespace),
    ConfigMap(ConfigMap),
    Claim(PersistentVolumeClaim),
    Service(Service),
    Deployment(Deployment),
    StatefulSet(StatefulSet),
    DaemonSet(DaemonSet),
}

impl Object {
    fn kind(&self) -> &'static str {
        match self {
            Object::Namespace(_) => "Namespace",
            Object::ConfigMap(_) => "ConfigMap",
            Object::Claim(_) => "PersistentVolumeClaim",
            Object::Service(_) => "Service",
            Object::Deployment(_) => "Deployment",
            Object::StatefulSet(_) => "StatefulSet",
            Object::DaemonSet(_) => "DaemonSet",
        }
    }

    /// Apply order: namespace, configuration, storage, networking, workloads.
    fn order(&self) -> u8 {
        match self {
            Object::Namespace(_) => 0,
            Object::ConfigMap(_) => 10,
            Object::Claim(_) => 20,
            Object::Service(_) => 30,
            Object::Deployment(_) | Object::StatefulSet(_) | Object::DaemonSet(_) => 40,
        }
    }

    fn meta(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::Claim(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::Deployment(o) => &o.metadata,
            Object::StatefulSet(o) => &o.metadata,
            Object::DaemonSet(o) => &o.metadata,
        }
    }

    fn to_yaml(&self) -> Result<String, String> {
        match self {
            Object::Namespace(o) => yaml(o),
            Object::ConfigMap(o) => yaml(o),
            Object::Claim(o) => yaml(o),
            Object::Service(o) => yaml(o),
            Object::Deployment(o) => yaml(o),
            Object::StatefulSet(o) => yaml(o),
            Object::DaemonSet(o) => yaml(o),
        }
    }
}

/// YAML as kubectl reads it: YAML 1.1-ambiguous strings (`on`, `yes`, `0755`) quoted,
/// multi-line strings as literal blocks, no folding of long lines.
fn yaml<T: serde::Serialize>(v: &T) -> Result<String, String> {
    let mut o = serde_saphyr::SerializerOptions::default();
    o.folded_wrap_chars = usize::MAX / 4;
    serde_saphyr::to_string_with_options(v, o).map_err(|e| e.to_string())
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
        BTreeMap::from([
            (LABEL_NAME.to_string(), name.to_string()),
            (LABEL_PART_OF.to_string(), self.part_of.clone()),
        ])
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

    stack_warnings(&mut cx);

    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(namespace.clone()),
            labels: Some(BTreeMap::from([(
                LABEL_PART_OF.to_string(),
                cx.part_of.clone(),
            )])),
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
    volume_warnings(&mut cx);
    if !st.jobs.is_empty() {
        obsd::build(&mut cx)?;
    }

    finish(cx)
}

/// Warnings about the env file, networks and Stack settings.
fn stack_warnings(cx: &mut Cx) {
    let input = cx.input;
    let st = &input.state;
    let env = &input.env;
    if let Some(p) = &env.path_display {
        if !env.present {
            cx.warn(
                "env file",
                "",
                format!("{p} does not exist: each `${{VAR}}` it should provide became a Secret reference, and each `${{VAR:-default}}` took its default; export where the env file is for an exact result"),
            );
        }
        if !env.kubectl_incompatible_lines.is_empty() {
            let lines: Vec<String> = env
                .kubectl_incompatible_lines
                .iter()
                .map(|l| l.to_string())
                .collect();
            cx.warn(
                "env file",
                "",
                format!("{p} lines {} quote their value or start with `export`; `kubectl create secret generic --from-env-file` keeps quotes in the value and rejects `export`: remove them before creating the Secret", lines.join(", ")),
            );
        }
    }
    let mut nets = Vec::new();
    for (name, n) in &st.networks {
        let what = if n.spec.internal {
            "an internal network (no route out)"
        } else {
            "a network"
        };
        nets.push((
            format!("Network/{name}"),
            format!("{what} has no Kubernetes equivalent: every pod of the namespace reaches every Service; write NetworkPolicies to isolate or to block egress"),
        ));
    }
    for (s, m) in nets {
        cx.warn(s, "", m);
    }
    if st.stack.spec.alerting.is_some() {
        cx.warn(
            format!("Stack/{}", st.stack.name),
            "spec.alerting",
            "obsd's own alerting is about reconcile passes, which do not exist on Kubernetes (jobs-only mode does not send it); the shipped rules ObsdJobFailing and ObsdJobStale cover the jobs",
        );
    }
}

/// Volumes that are shared, unused, or use a driver.
fn volume_warnings(cx: &mut Cx) {
    let input = cx.input;
    let st = &input.state;
    let mut users: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (svc, r) in &st.services {
        for v in &r.spec.volumes {
            let e = users.entry(v.volume.as_str()).or_default();
            if !e.contains(&svc.as_str()) {
                e.push(svc);
            }
        }
    }
    let mut out = Vec::new();
    for (name, v) in &st.volumes {
        let subject = format!("Volume/{name}");
        match users.get(name.as_str()) {
            None => out.push((subject.clone(), String::new(), "not mounted by any Service: no claim is generated for it; if it holds data, create a PVC and restore it there".to_string())),
            Some(u) if u.len() > 1 => out.push((subject.clone(), String::new(), format!(
                "mounted by {}: each StatefulSet gets its own claim (the data is no longer shared; sharing needs ReadWriteMany storage)",
                u.join(", ")
            ))),
            _ => {}
        }
        if let Some(d) = &v.spec.driver {
            if d != "local" {
                out.push((subject.clone(), "spec.driver".into(), format!("driver `{d}` has no Kubernetes equivalent; the claim uses the storage class")));
            }
        }
    }
    for (s, f, m) in out {
        cx.warn(s, f, m);
    }
}

fn finish(cx: Cx) -> Result<Export, ExportError> {
    let mut seen: BTreeMap<(&'static str, String), String> = BTreeMap::new();
    for (o, source) in &cx.objects {
        let name = o.meta().name.clone().unwrap_or_default();
        if let Some(first) = seen.insert((o.kind(), name.clone()), source.clone()) {
            return Err(ExportError::NameClash {
                kind: o.kind(),
                name,
                first,
                second: source.clone(),
            });
        }
    }
    let mut manifests = Vec::new();
    for (o, source) in &cx.objects {
        let name = o.meta().name.clone().unwrap_or_default();
        let body = o.to_yaml().map_err(|message| ExportError::Yaml {
            what: format!("{} {name}", o.kind()),
            message,
        })?;
        manifests.push(Manifest {
            file: format!(
                "{:02}-{}-{}.yaml",
                o.order(),
                o.kind().to_ascii_lowercase(),
                name
            ),
            kind: o.kind(),
            name,
            yaml: format!(
                "# Generated by `obsctl export k8s` from {source}.\n# Edit the desired state and export again rather than editing this file.\n{body}"
            ),
        });
    }
    manifests.sort_by(|a, b| a.file.cmp(&b.file));
    let mut warnings = cx.warnings;
    warnings.sort();
    warnings.dedup();
    let mut claims = cx.claims;
    claims.sort();
    Ok(Export {
        namespace: cx.namespace,
        manifests,
        warnings,
        secret_name: cx.secret_name,
        secret_keys: cx.secret_keys,
        env_file: cx.input.env.path_display.clone(),
        file_secrets: cx.file_secrets,
        claims,
        obsd_image: (!cx.input.state.jobs.is_empty()).then(|| cx.opts.obsd_image.clone()),
    })
}

impl Export {
    /// The warnings as printed: one line per message, the subjects that share a field
    /// and message on one line (`Service/a, Service/b spec.logging: …`).
    pub fn warning_lines(&self) -> Vec<String> {
        let mut groups: Vec<((&str, &str), Vec<&str>)> = Vec::new();
        for w in &self.warnings {
            let key = (w.field.as_str(), w.message.as_str());
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, subjects)) => subjects.push(&w.subject),
                None => groups.push((key, vec![&w.subject])),
            }
        }
        groups
            .into_iter()
            .map(|((field, message), subjects)| {
                let who = subjects.join(", ");
                if field.is_empty() {
                    format!("{who}: {message}")
                } else {
                    format!("{who} {field}: {message}")
                }
            })
            .collect()
    }

    /// Every manifest as one multi-document YAML stream (for `kubectl apply -f -`).
    pub fn stream(&self) -> String {
        let mut s = String::new();
        for (i, m) in self.manifests.iter().enumerate() {
            if i > 0 {
                s.push_str("---\n");
            }
            s.push_str(&m.yaml);
        }
        s
    }

    /// The steps that move the stack, as shell commands with comments. `out` is the
    /// output directory as the user named it (`None`: the manifests went to stdout).
    pub fn next_steps(&self, out: Option<&str>) -> String {
        let ns = &self.namespace;
        let mut s = String::new();
        let files = out.unwrap_or("<manifests>");
        s.push_str("# 1. the namespace first (the Secrets live in it)\n");
        match out {
            Some(o) => s.push_str(&format!(
                "kubectl apply -f {}\n",
                shell_quote(&format!("{o}/00-namespace-{ns}.yaml"))
            )),
            None => s.push_str(&format!("kubectl create namespace {ns}\n")),
        }
        s.push_str(&format!(
            "# 2. the Secret every env-file reference points into ({} keys used: {})\n",
            self.secret_keys.len(),
            if self.secret_keys.is_empty() {
                "none".to_string()
            } else {
                self.secret_keys
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        ));
        let env = self.env_file.as_deref().unwrap_or("<env file>");
        s.push_str(&format!(
            "kubectl create secret generic {} --namespace {ns} --from-env-file={}\n",
            self.secret_name,
            shell_quote(env)
        ));
        for fs in &self.file_secrets {
            s.push_str(&format!(
                "kubectl create secret generic {} --namespace {ns}",
                fs.name
            ));
            for (k, p) in &fs.files {
                s.push_str(&format!(
                    " --from-file={}",
                    shell_quote(&format!("{k}={p}"))
                ));
            }
            s.push('\n');
        }
        if let Some(img) = &self.obsd_image {
            s.push_str(&format!(
                "# 3. obsd runs the jobs: push its image (deploy/Dockerfile) where the cluster pulls from, as {img} (or export with --obsd-image)\n"
            ));
        }
        s.push_str("# 4. everything else\n");
        s.push_str(&format!("kubectl apply -f {}\n", shell_quote(files)));
        if !self.claims.is_empty() {
            s.push_str("# 5. restore each volume's data into its claim (see README: Moving to Kubernetes)\n");
            for c in &self.claims {
                s.push_str(&format!(
                    "#    {} -> PersistentVolumeClaim {} (StatefulSet {})\n",
                    c.volume, c.pvc, c.statefulset
                ));
            }
        }
        s
    }
}

/// Single-quotes `s` for a POSIX shell when it holds anything but safe characters.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@+%".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
