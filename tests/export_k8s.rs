//! `obsctl export k8s`: the shipped desired state, the compose-imported stacks (the
//! legacy compose file and the benchmark's) and a small stack are exported and every
//! manifest is checked offline against the Kubernetes schemas (`kubernetes-validate`,
//! pinned version, strict) and against the rules the API server adds (references
//! resolve, names are valid, selectors match). Golden files pin the small stack's output
//! (`OBSD_UPDATE_GOLDEN=1` rewrites them); a round trip compares names, labels, probes,
//! mounts, config contents and secret references field by field; a canary proves no
//! env-file value, private file or shell variable reaches any output.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PersistentVolumeClaim, PodSpec, PodTemplateSpec, Service,
};
use obsd::desired::model::service::ServiceSpec;
use obsd::export::k8s::{self, Options};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const OBSCTL: &str = env!("CARGO_BIN_EXE_obsctl");
/// The Kubernetes version the manifests are checked against (`kubernetes-validate -k`).
const K8S_VERSION: &str = "1.33.0";

const CANARY_DB: &str = "canary-db-pw-7f3a9c";
const CANARY_STRIPE: &str = "rk_live_canary_51x";
const CANARY_REGION: &str = "canary-region-q8";
const CANARY_FILE: &str = "canary-admin-token-d41d8";
const CANARY_SHELL: &str = "canary-from-shell-env-0b";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The small stack in `<tmp>/small`, with its env file and a private config file
/// holding canaries.
fn stage_small(tmp: &Path) -> PathBuf {
    let dir = tmp.join("small");
    copy_dir(&repo().join("tests/export_k8s_support/small"), &dir);
    write_private(
        &dir.join("secrets.env"),
        &format!(
            "# test env file\nDB_PASSWORD={CANARY_DB}\nSTRIPE_KEY={CANARY_STRIPE}\nREGION={CANARY_REGION}\nLOG_LEVEL=\nUNUSED=canary-unused-zz\n"
        ),
    );
    write_private(&dir.join("config/web/admin.token"), CANARY_FILE);
    dir
}

/// Every `NAME=` of `.env.example` with a recognisable dummy value, in a 0600 file.
fn dummy_env(dir: &Path) -> PathBuf {
    let example = std::fs::read_to_string(repo().join("desired-state/.env.example")).unwrap();
    let mut out = String::new();
    for line in example.lines() {
        if let Some((k, _)) = line.split_once('=') {
            if !k.starts_with('#') && !k.trim().is_empty() {
                out.push_str(&format!("{k}=canary-{}\n", k.to_lowercase()));
            }
        }
    }
    let path = dir.join("test.env");
    write_private(&path, &out);
    path
}

fn obsctl(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(OBSCTL);
    c.current_dir(cwd).args(args).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(out: &Output, what: &str) -> (String, String) {
    let so = String::from_utf8_lossy(&out.stdout).into_owned();
    let se = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{what}:\n{se}\n{so}");
    (so, se)
}

/// The manifest files of a directory: name → content.
fn files(dir: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        m.insert(
            p.file_name().unwrap().to_string_lossy().into_owned(),
            std::fs::read_to_string(&p).unwrap(),
        );
    }
    m
}

// ------------------------------------------------------------------ typed manifests

#[derive(Default)]
struct Manifests {
    namespaces: Vec<Namespace>,
    configmaps: BTreeMap<String, ConfigMap>,
    claims: BTreeMap<String, PersistentVolumeClaim>,
    services: BTreeMap<String, Service>,
    deployments: BTreeMap<String, Deployment>,
    statefulsets: BTreeMap<String, StatefulSet>,
    daemonsets: BTreeMap<String, DaemonSet>,
}

fn kind_of(yaml: &str) -> String {
    yaml.lines()
        .find_map(|l| l.strip_prefix("kind: "))
        .unwrap_or_default()
        .to_string()
}

fn de<T: serde::de::DeserializeOwned>(file: &str, yaml: &str) -> T {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{file} does not parse back: {e}"))
}

fn parse(files: &BTreeMap<String, String>) -> Manifests {
    let mut m = Manifests::default();
    for (f, y) in files {
        let name = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            meta.name.clone().unwrap()
        };
        match kind_of(y).as_str() {
            "Namespace" => m.namespaces.push(de(f, y)),
            "ConfigMap" => {
                let o: ConfigMap = de(f, y);
                m.configmaps.insert(name(&o.metadata), o);
            }
            "PersistentVolumeClaim" => {
                let o: PersistentVolumeClaim = de(f, y);
                m.claims.insert(name(&o.metadata), o);
            }
            "Service" => {
                let o: Service = de(f, y);
                m.services.insert(name(&o.metadata), o);
            }
            "Deployment" => {
                let o: Deployment = de(f, y);
                m.deployments.insert(name(&o.metadata), o);
            }
            "StatefulSet" => {
                let o: StatefulSet = de(f, y);
                m.statefulsets.insert(name(&o.metadata), o);
            }
            "DaemonSet" => {
                let o: DaemonSet = de(f, y);
                m.daemonsets.insert(name(&o.metadata), o);
            }
            k => panic!("{f}: unexpected kind `{k}`"),
        }
    }
    m
}

impl Manifests {
    /// `(kind, pod template, claim templates)` of a workload.
    fn workload(
        &self,
        name: &str,
    ) -> Option<(&'static str, &PodTemplateSpec, Vec<&PersistentVolumeClaim>)> {
        if let Some(d) = self.deployments.get(name) {
            return Some(("Deployment", &d.spec.as_ref()?.template, vec![]));
        }
        if let Some(s) = self.statefulsets.get(name) {
            let spec = s.spec.as_ref()?;
            return Some((
                "StatefulSet",
                &spec.template,
                spec.volume_claim_templates.iter().flatten().collect(),
            ));
        }
        if let Some(d) = self.daemonsets.get(name) {
            return Some(("DaemonSet", &d.spec.as_ref()?.template, vec![]));
        }
        None
    }

    fn workloads(&self) -> Vec<Workload<'_>> {
        let mut v = Vec::new();
        for (n, d) in &self.deployments {
            let s = d.spec.as_ref().unwrap();
            v.push(Workload {
                name: n.clone(),
                kind: "Deployment",
                tpl: &s.template,
                claims: vec![],
                selector: s.selector.match_labels.clone().unwrap_or_default(),
            });
        }
        for (n, d) in &self.statefulsets {
            let s = d.spec.as_ref().unwrap();
            v.push(Workload {
                name: n.clone(),
                kind: "StatefulSet",
                tpl: &s.template,
                claims: s.volume_claim_templates.iter().flatten().collect(),
                selector: s.selector.match_labels.clone().unwrap_or_default(),
            });
        }
        for (n, d) in &self.daemonsets {
            let s = d.spec.as_ref().unwrap();
            v.push(Workload {
                name: n.clone(),
                kind: "DaemonSet",
                tpl: &s.template,
                claims: vec![],
                selector: s.selector.match_labels.clone().unwrap_or_default(),
            });
        }
        v
    }
}

/// One workload of any kind.
struct Workload<'a> {
    name: String,
    kind: &'static str,
    tpl: &'a PodTemplateSpec,
    claims: Vec<&'a PersistentVolumeClaim>,
    selector: BTreeMap<String, String>,
}

fn is_label(s: &str) -> bool {
    k8s::names::is_label(s)
}

/// What the API server would refuse or a pod would trip on, beyond the JSON schemas.
fn semantic_problems(m: &Manifests, secrets: &BTreeSet<String>) -> Vec<String> {
    let mut p = Vec::new();
    let ns: BTreeSet<String> = m
        .namespaces
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    if ns.len() != 1 {
        p.push(format!("expected one namespace, got {ns:?}"));
    }
    let all_meta = m
        .configmaps
        .values()
        .map(|o| &o.metadata)
        .chain(m.claims.values().map(|o| &o.metadata))
        .chain(m.services.values().map(|o| &o.metadata))
        .chain(m.deployments.values().map(|o| &o.metadata))
        .chain(m.statefulsets.values().map(|o| &o.metadata))
        .chain(m.daemonsets.values().map(|o| &o.metadata));
    for meta in all_meta {
        let n = meta.name.clone().unwrap_or_default();
        if !is_label(&n) {
            p.push(format!("name `{n}` is not a DNS label"));
        }
        if meta.namespace.as_ref().is_none_or(|x| !ns.contains(x)) {
            p.push(format!(
                "{n}: namespace {:?} is not the exported one",
                meta.namespace
            ));
        }
        for (k, v) in meta.labels.iter().flatten() {
            if !k8s::names::is_qualified_key(k) || !k8s::names::is_label_value(v) {
                p.push(format!("{n}: invalid label {k}={v}"));
            }
        }
    }
    for (name, cm) in &m.configmaps {
        let mut size = 0;
        for (k, v) in cm.data.iter().flatten() {
            size += k.len() + v.len();
            if !k8s::names::is_config_key(k) {
                p.push(format!("ConfigMap {name}: invalid key `{k}`"));
            }
        }
        for (k, v) in cm.binary_data.iter().flatten() {
            size += k.len() + v.0.len();
        }
        if size > 1024 * 1024 {
            p.push(format!("ConfigMap {name} is {size} bytes"));
        }
    }
    let has_key = |cm: &str, key: &str| {
        m.configmaps.get(cm).is_some_and(|c| {
            c.data.as_ref().is_some_and(|d| d.contains_key(key))
                || c.binary_data.as_ref().is_some_and(|d| d.contains_key(key))
        })
    };
    for Workload {
        name,
        kind,
        tpl,
        claims,
        selector,
    } in m.workloads()
    {
        let what = format!("{kind} {name}");
        let labels = tpl
            .metadata
            .as_ref()
            .and_then(|x| x.labels.clone())
            .unwrap_or_default();
        if selector.is_empty() || selector.iter().any(|(k, v)| labels.get(k) != Some(v)) {
            p.push(format!(
                "{what}: selector {selector:?} does not match template labels {labels:?}"
            ));
        }
        let pod: &PodSpec = tpl.spec.as_ref().unwrap();
        let mut vols: BTreeSet<String> = claims
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        for v in pod.volumes.iter().flatten() {
            if !is_label(&v.name) || !vols.insert(v.name.clone()) {
                p.push(format!(
                    "{what}: volume name `{}` invalid or repeated",
                    v.name
                ));
            }
            let mut cm_refs = Vec::new();
            if let Some(c) = &v.config_map {
                cm_refs.push((c.name.clone(), c.items.clone().unwrap_or_default()));
            }
            for src in v.projected.iter().flat_map(|x| x.sources.iter().flatten()) {
                if let Some(c) = &src.config_map {
                    cm_refs.push((c.name.clone(), c.items.clone().unwrap_or_default()));
                }
                if let Some(s) = &src.secret {
                    if !secrets.contains(&s.name) {
                        p.push(format!(
                            "{what}: Secret `{}` is not one the user is told to create",
                            s.name
                        ));
                    }
                }
            }
            if let Some(s) = &v.secret {
                let sn = s.secret_name.clone().unwrap_or_default();
                if !secrets.contains(&sn) {
                    p.push(format!(
                        "{what}: Secret `{sn}` is not one the user is told to create"
                    ));
                }
            }
            for (cm, items) in cm_refs {
                if !m.configmaps.contains_key(&cm) {
                    p.push(format!("{what}: ConfigMap `{cm}` is not exported"));
                }
                let mut paths = BTreeSet::new();
                for i in items {
                    if !has_key(&cm, &i.key) {
                        p.push(format!("{what}: ConfigMap `{cm}` has no key `{}`", i.key));
                    }
                    if !paths.insert(i.path.clone())
                        || i.path.starts_with('/')
                        || i.path.contains("..")
                    {
                        p.push(format!("{what}: bad item path `{}`", i.path));
                    }
                }
            }
            if let Some(c) = &v.persistent_volume_claim {
                if !m.claims.contains_key(&c.claim_name) {
                    p.push(format!("{what}: claim `{}` is not exported", c.claim_name));
                }
            }
        }
        let containers: Vec<&Container> = pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
            .collect();
        let mut cnames = BTreeSet::new();
        for c in containers {
            if !is_label(&c.name) || !cnames.insert(c.name.clone()) {
                p.push(format!(
                    "{what}: container name `{}` invalid or repeated",
                    c.name
                ));
            }
            if c.image
                .as_deref()
                .is_none_or(|i| i.is_empty() || i.contains("${"))
            {
                p.push(format!(
                    "{what}: container {} has image {:?}",
                    c.name, c.image
                ));
            }
            for vm in c.volume_mounts.iter().flatten() {
                if !vols.contains(&vm.name) {
                    p.push(format!("{what}: mount of unknown volume `{}`", vm.name));
                }
                if !vm.mount_path.starts_with('/') {
                    p.push(format!(
                        "{what}: mount path `{}` is not absolute",
                        vm.mount_path
                    ));
                }
            }
            let mut mount_paths = BTreeSet::new();
            for vm in c.volume_mounts.iter().flatten() {
                if !mount_paths.insert(vm.mount_path.clone()) {
                    p.push(format!("{what}: two mounts at `{}`", vm.mount_path));
                }
            }
            for port in c.ports.iter().flatten() {
                if port.name.as_ref().is_some_and(|n| n.len() > 15) {
                    p.push(format!("{what}: port name {:?} longer than 15", port.name));
                }
            }
            // `$(X)` must name a variable defined earlier in the same list.
            let mut defined: BTreeSet<String> = BTreeSet::new();
            for e in c.env.iter().flatten() {
                if let Some(v) = &e.value {
                    for r in refs_in(v) {
                        if !defined.contains(&r) {
                            p.push(format!(
                                "{what}: env {} refers to $({r}) before it is defined",
                                e.name
                            ));
                        }
                    }
                }
                if let Some(s) = e
                    .value_from
                    .as_ref()
                    .and_then(|f| f.secret_key_ref.as_ref())
                {
                    if !secrets.contains(&s.name) {
                        p.push(format!(
                            "{what}: env {} refers to Secret `{}`",
                            e.name, s.name
                        ));
                    }
                }
                defined.insert(e.name.clone());
            }
            for a in c.command.iter().flatten().chain(c.args.iter().flatten()) {
                for r in refs_in(a) {
                    if !defined.contains(&r) {
                        p.push(format!("{what}: argument `{a}` refers to undefined $({r})"));
                    }
                }
            }
        }
    }
    for (name, s) in &m.services {
        let spec = s.spec.as_ref().unwrap();
        let sel = spec.selector.clone().unwrap_or_default();
        let matched = m.workloads().into_iter().any(|w| {
            let tpl = w.tpl;
            let l = tpl
                .metadata
                .as_ref()
                .and_then(|x| x.labels.clone())
                .unwrap_or_default();
            !sel.is_empty() && sel.iter().all(|(k, v)| l.get(k) == Some(v))
        });
        if !matched {
            p.push(format!(
                "Service {name}: selector {sel:?} matches no workload"
            ));
        }
        for port in spec.ports.iter().flatten() {
            if port
                .name
                .as_ref()
                .is_none_or(|n| n.len() > 15 || !is_label(n))
            {
                p.push(format!("Service {name}: port name {:?}", port.name));
            }
        }
    }
    for (name, s) in &m.statefulsets {
        if let Some(svc) = s.spec.as_ref().and_then(|x| x.service_name.as_ref()) {
            if !m.services.contains_key(svc) {
                p.push(format!(
                    "StatefulSet {name}: serviceName `{svc}` is not exported"
                ));
            }
        }
    }
    p
}

/// The `$(NAME)` references Kubernetes would expand in `s` (`$$` escapes).
fn refs_in(s: &str) -> Vec<String> {
    let b: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == '$' && b[i + 1] == '$' {
            i += 2;
        } else if b[i] == '$' && b[i + 1] == '(' {
            if let Some(end) = b[i + 2..].iter().position(|c| *c == ')') {
                out.push(b[i + 2..i + 2 + end].iter().collect());
                i += end + 3;
            } else {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The Secrets a user is told to create (from the export's printed steps).
fn secrets_of(e: &k8s::Export) -> BTreeSet<String> {
    std::iter::once(e.secret_name.clone())
        .chain(e.file_secrets.iter().map(|f| f.name.clone()))
        .collect()
}

/// `kubernetes-validate` (strict, pinned version) over every file of `dir`.
fn schema_check(dir: &Path) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", K8S_VERSION])
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("kubernetes-validate not runnable ({e}); run tests/setup.sh"));
    assert!(
        out.status.success(),
        "kubernetes-validate rejects manifests in {}:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every ConfigMap's data as PyYAML (an independent YAML 1.1 reader, like kubectl's)
/// reads it: name → key → SHA-256 of the value.
fn pyyaml_configmaps(dir: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let script = r#"
import hashlib, json, os, sys, yaml
out = {}
d = sys.argv[1]
for f in sorted(os.listdir(d)):
    doc = yaml.safe_load(open(os.path.join(d, f), encoding="utf-8"))
    if doc.get("kind") == "ConfigMap":
        out[doc["metadata"]["name"]] = {k: hashlib.sha256(v.encode("utf-8")).hexdigest() for k, v in (doc.get("data") or {}).items()}
print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sha(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// Export `dir` with the CLI into `<tmp>/<tag>` and run every check.
fn export_and_check(
    dir: &Path,
    tmp: &Path,
    tag: &str,
    env_file: Option<&Path>,
) -> (Manifests, k8s::Export) {
    let out_dir = tmp.join(tag);
    let mut args = vec![
        "export".to_string(),
        "k8s".into(),
        "--desired-state".into(),
        dir.display().to_string(),
        "-o".into(),
        out_dir.display().to_string(),
    ];
    if let Some(e) = env_file {
        args.push("--env-file".into());
        args.push(e.display().to_string());
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&obsctl(tmp, &argv, &[]), &format!("export {tag}"));
    schema_check(&out_dir);
    let files = files(&out_dir);
    let m = parse(&files);
    let input = k8s::read_input(dir, env_file).unwrap();
    let export = k8s::export(&input, &Options::default()).unwrap();
    let problems = semantic_problems(&m, &secrets_of(&export));
    assert!(problems.is_empty(), "{tag}:\n{}", problems.join("\n"));
    // The YAML says what the exporter meant, to an independent reader too.
    let py = pyyaml_configmaps(&out_dir);
    for (name, cm) in &m.configmaps {
        let ours: BTreeMap<String, String> = cm
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), sha(v.as_bytes())))
            .collect();
        assert_eq!(
            py.get(name),
            Some(&ours),
            "{tag}: PyYAML reads ConfigMap {name} differently"
        );
    }
    (m, export)
}

// ------------------------------------------------------------------ tests

#[test]
fn shipped_desired_state_exports_to_valid_manifests_and_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let env = dummy_env(tmp.path());
    let dir = repo().join("desired-state");
    let (m, export) = export_and_check(&dir, tmp.path(), "shipped", Some(&env));
    let input = k8s::read_input(&dir, Some(&env)).unwrap();
    let st = &input.state;

    for (name, r) in &st.services {
        let svc: &ServiceSpec = &r.spec;
        let (kind, tpl, claims) = m
            .workload(name)
            .unwrap_or_else(|| panic!("no workload for {name}"));
        let node = svc.pid.as_deref() == Some("host") || svc.binds.iter().any(|b| b.source == "/");
        let want = if node {
            "DaemonSet"
        } else if svc.volumes.is_empty() {
            "Deployment"
        } else {
            "StatefulSet"
        };
        assert_eq!(kind, want, "{name}");
        let labels = tpl.metadata.as_ref().unwrap().labels.clone().unwrap();
        assert_eq!(
            labels.get("app.kubernetes.io/name").map(String::as_str),
            Some(name.as_str())
        );
        assert_eq!(
            labels.get("app.kubernetes.io/part-of").map(String::as_str),
            Some(st.project())
        );
        let pod = tpl.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.name, *name);
        assert_eq!(c.image.as_deref(), Some(svc.image.as_str()));
        assert_eq!(pod.enable_service_links, Some(false));

        // Probes: the healthcheck's command, interval, timeout, retries.
        match &svc.healthcheck {
            Some(hc) => {
                let r = c
                    .readiness_probe
                    .as_ref()
                    .unwrap_or_else(|| panic!("{name}: no readiness probe"));
                let want: Vec<String> = match hc.test[0].as_str() {
                    "CMD" => hc.test[1..].to_vec(),
                    "CMD-SHELL" => vec!["/bin/sh".into(), "-c".into(), hc.test[1..].join(" ")],
                    _ => unreachable!(),
                };
                assert_eq!(
                    r.exec.as_ref().unwrap().command.as_ref(),
                    Some(&want),
                    "{name}"
                );
                assert_eq!(
                    r.period_seconds,
                    hc.interval.map(|d| d.0.as_secs() as i32),
                    "{name}"
                );
                assert_eq!(
                    r.timeout_seconds,
                    hc.timeout.map(|d| d.0.as_secs() as i32),
                    "{name}"
                );
                assert_eq!(r.failure_threshold, hc.retries.map(|n| n as i32), "{name}");
                let ready_path = hc.test.iter().any(|t| t.contains("/ready"));
                match &c.liveness_probe {
                    Some(l) => {
                        assert!(!ready_path, "{name}: liveness on a readiness check");
                        assert_eq!(l.exec, r.exec);
                        assert_eq!(
                            l.initial_delay_seconds,
                            hc.start_period.map(|d| d.0.as_secs() as i32)
                        );
                    }
                    None => assert!(
                        export
                            .warnings
                            .iter()
                            .any(|w| w.subject == format!("Service/{name}")
                                && w.message.contains("no liveness probe")),
                        "{name}: liveness left out silently"
                    ),
                }
            }
            None => assert!(c.readiness_probe.is_none() && c.liveness_probe.is_none()),
        }

        // Mounts: volumes → claim templates, config files → ConfigMaps with the same bytes.
        let mounts = c.volume_mounts.clone().unwrap_or_default();
        let mount_at = |target: &str| mounts.iter().find(|m| m.mount_path == target);
        let volume = |vname: &str| pod.volumes.iter().flatten().find(|v| v.name == vname);
        for v in &svc.volumes {
            let m =
                mount_at(&v.target).unwrap_or_else(|| panic!("{name}: no mount at {}", v.target));
            assert_eq!(
                m.read_only.unwrap_or(false),
                v.read_only,
                "{name} {}",
                v.target
            );
            if kind == "StatefulSet" {
                let t = claims
                    .iter()
                    .find(|c| c.metadata.name.as_deref() == Some(m.name.as_str()))
                    .unwrap_or_else(|| panic!("{name}: mount {} has no claim template", m.name));
                assert_eq!(m.name, k8s::names::label(&v.volume));
                let sz = &t
                    .spec
                    .as_ref()
                    .unwrap()
                    .resources
                    .as_ref()
                    .unwrap()
                    .requests
                    .as_ref()
                    .unwrap()["storage"];
                assert_eq!(sz.0, "10Gi");
                assert!(export.claims.iter().any(|c| c.volume == v.volume
                    && c.statefulset == *name
                    && c.pvc == format!("{}-{name}-0", m.name)));
            }
        }
        for cf in &svc.config_files {
            let mnt =
                mount_at(&cf.target).unwrap_or_else(|| panic!("{name}: no mount at {}", cf.target));
            assert_eq!(mnt.read_only, Some(true));
            let vol = volume(&mnt.name).unwrap();
            let cm_src = vol
                .config_map
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: {} is not a ConfigMap volume", cf.target));
            let cm = &m.configmaps[&cm_src.name];
            let data = cm.data.clone().unwrap_or_default();
            let source = st.dir.join(&cf.source);
            if source.is_file() {
                let item = &cm_src.items.as_ref().unwrap()[0];
                assert_eq!(mnt.sub_path.as_deref(), Some(item.key.as_str()));
                assert_eq!(
                    data[&item.key].as_bytes(),
                    std::fs::read(&source).unwrap(),
                    "{name}: {}",
                    cf.source
                );
            } else {
                let mut seen = 0;
                for item in cm_src.items.iter().flatten() {
                    let file = source.join(&item.path);
                    assert_eq!(
                        data[&item.key].as_bytes(),
                        std::fs::read(&file).unwrap(),
                        "{name}: {}",
                        file.display()
                    );
                    seen += 1;
                }
                let on_disk = walk_count(&source);
                assert_eq!(
                    seen, on_disk,
                    "{name}: every file of {} is mounted",
                    cf.source
                );
                assert!(mnt.sub_path.is_none());
            }
        }
        // Host binds: hostPath only on node-level services, never the Docker socket.
        let host_paths: Vec<String> = pod
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.host_path.as_ref().map(|h| h.path.clone()))
            .collect();
        if node {
            for b in &svc.binds {
                let socket = ["/var/run", "/run", "/var/run/docker.sock"]
                    .contains(&b.source.trim_end_matches('/'));
                assert_eq!(
                    host_paths.contains(&b.source),
                    !socket,
                    "{name}: {}",
                    b.source
                );
            }
        } else {
            assert!(
                host_paths.is_empty(),
                "{name}: hostPath on a service that is not node-level"
            );
        }
        assert!(!host_paths
            .iter()
            .any(|p| p.contains("docker.sock") || p == "/var/run" || p == "/run"));

        // Secret references: each secretEnv variable from the one Secret, by its env-file name.
        let env: BTreeMap<String, &k8s_openapi::api::core::v1::EnvVar> = c
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e))
            .collect();
        for (var, key) in &svc.secret_env {
            let r = env[var]
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap();
            assert_eq!(
                (r.name.as_str(), r.key.as_str()),
                (export.secret_name.as_str(), key.as_str()),
                "{name} {var}"
            );
            assert!(export.secret_keys.contains(key));
            assert!(env[var].value.is_none());
        }
        for (var, value) in &svc.env {
            let e = env[var];
            if let Some(v) = &e.value {
                // Kubernetes' expansion of what we wrote gives obsd's value, with each
                // env-file value standing for itself.
                let lookup = |n: &str| {
                    let key = n.strip_prefix(k8s::HELPER_PREFIX)?;
                    Some(k8s::refs::marker(key))
                };
                assert_eq!(
                    &k8s::refs::kubernetes_expand(v, lookup),
                    value,
                    "{name} {var}"
                );
            } else {
                let r = e
                    .value_from
                    .as_ref()
                    .unwrap()
                    .secret_key_ref
                    .as_ref()
                    .unwrap();
                assert_eq!(&k8s::refs::marker(&r.key), value, "{name} {var}");
            }
        }
        // Services: exposed ports on the ClusterIP Service, published ones on -public.
        if !svc.expose.is_empty() {
            let s = &m.services[name.as_str()];
            let ports: BTreeSet<i32> = s
                .spec
                .as_ref()
                .unwrap()
                .ports
                .iter()
                .flatten()
                .map(|p| p.port)
                .collect();
            for p in &svc.expose {
                assert!(
                    ports.contains(&(*p as i32)),
                    "{name}: {p} not on its Service"
                );
            }
            assert_eq!(s.spec.as_ref().unwrap().type_.as_deref(), Some("ClusterIP"));
        }
        let public = m.services.get(&format!("{name}-public"));
        assert_eq!(public.is_some(), !svc.ports.is_empty(), "{name}");
        if let Some(p) = public {
            let spec = p.spec.as_ref().unwrap();
            assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
            let got: BTreeSet<(i32, i32)> = spec
                .ports
                .iter()
                .flatten()
                .map(|p| {
                    (
                        p.port,
                        match p.target_port {
                            Some(
                                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i),
                            ) => i,
                            _ => 0,
                        },
                    )
                })
                .collect();
            let want: BTreeSet<(i32, i32)> = svc
                .ports
                .iter()
                .map(|p| (p.host as i32, p.container as i32))
                .collect();
            assert_eq!(got, want);
        }
    }
    // Only the edge proxy is published.
    let public: Vec<&String> = m
        .services
        .keys()
        .filter(|k| k.ends_with("-public"))
        .collect();
    assert_eq!(public, vec!["caddy-public"]);
    // The jobs: obsd in jobs-only mode, with the documents and config files projected.
    let (kind, tpl, _) = m.workload("obsd").unwrap();
    assert_eq!(kind, "Deployment");
    let pod = tpl.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    assert_eq!(c.args.as_ref().unwrap()[0], "--jobs-only");
    assert!(c.env_from.as_ref().unwrap()[0]
        .secret_ref
        .as_ref()
        .is_some_and(|s| s.name == export.secret_name));
    assert!(
        pod.volumes.iter().flatten().all(|v| v.host_path.is_none()),
        "obsd gets no host path (no Docker socket)"
    );
    let projected: BTreeSet<String> = pod
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .flat_map(|s| {
            s.config_map
                .iter()
                .flat_map(|c| c.items.iter().flatten().map(|i| i.path.clone()))
        })
        .collect();
    for d in &input.documents {
        assert!(
            projected.contains(d),
            "{d} not in obsd's desired-state tree"
        );
    }
    for (rel, _) in input.files.iter().filter(|(k, _)| k.starts_with("config/")) {
        assert!(
            projected.contains(rel),
            "{rel} not in obsd's desired-state tree"
        );
    }
    let docs = &m.configmaps["obsd-desired-state"];
    for d in &input.documents {
        assert_eq!(
            docs.data.as_ref().unwrap()[d].as_bytes(),
            std::fs::read(st.dir.join(d)).unwrap()
        );
    }
    // Volumes: the data-holding ones each got a claim, named predictably.
    for v in st.volumes.keys() {
        let users = st
            .services
            .values()
            .filter(|s| s.spec.volumes.iter().any(|m| &m.volume == v))
            .count();
        let claims = export.claims.iter().filter(|c| &c.volume == v).count();
        let on_daemonset = st.services.values().any(|s| {
            (s.spec.pid.as_deref() == Some("host")) && s.spec.volumes.iter().any(|m| &m.volume == v)
        });
        if !on_daemonset {
            assert_eq!(claims, users, "{v}");
        }
    }
}

fn walk_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk_count(&p)
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn shipped_desired_state_exports_without_an_env_file() {
    // A checkout has no .env: every `${VAR}` becomes a Secret reference, and it is said.
    let tmp = tempfile::tempdir().unwrap();
    let (_, export) = export_and_check(&repo().join("desired-state"), tmp.path(), "no-env", None);
    assert!(export
        .warnings
        .iter()
        .any(|w| w.subject == "env file" && w.message.contains("does not exist")));
    for k in [
        "OBS_DOMAIN",
        "AUTH0_DOMAIN",
        "AWS_REGION",
        "GRAFANA_ADMIN_PASSWORD",
    ] {
        assert!(export.secret_keys.contains(k), "{k}");
    }
}

#[test]
fn compose_imported_stacks_export_to_valid_manifests() {
    let tmp = tempfile::tempdir().unwrap();
    // The legacy compose file, through `obsctl import-compose`.
    let legacy = tmp.path().join("legacy");
    std::fs::create_dir_all(&legacy).unwrap();
    let (docs, _) = ok(
        &obsctl(
            tmp.path(),
            &[
                "import-compose",
                &repo()
                    .join("compose-legacy/docker-compose.yml")
                    .display()
                    .to_string(),
            ],
            &[],
        ),
        "import legacy",
    );
    std::fs::write(legacy.join("all.yaml"), docs).unwrap();
    let (m, _) = export_and_check(&legacy, tmp.path(), "legacy-out", None);
    assert!(m.statefulsets.contains_key("grafana") && m.daemonsets.contains_key("node-exporter"));

    // The benchmark's generated stack (bench/helper.py gen), through import-compose.
    let gen = Command::new("python3")
        .arg(repo().join("bench/helper.py"))
        .args(["gen", "50", "benchk8s"])
        .arg(tmp.path().join("bench-obsd"))
        .arg(tmp.path().join("bench-compose"))
        .arg(tmp.path().join("bench-state"))
        .arg("obsd-bench/busybox:1")
        .output()
        .unwrap();
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let bench = tmp.path().join("bench");
    std::fs::create_dir_all(&bench).unwrap();
    let (docs, _) = ok(
        &obsctl(
            tmp.path(),
            &[
                "import-compose",
                &tmp.path()
                    .join("bench-compose/docker-compose.yml")
                    .display()
                    .to_string(),
            ],
            &[],
        ),
        "import bench",
    );
    std::fs::write(bench.join("all.yaml"), docs).unwrap();
    let (m, export) = export_and_check(&bench, tmp.path(), "bench-out", None);
    assert_eq!(m.statefulsets.len(), 50);
    assert_eq!(export.claims.len(), 50);
    // And the benchmark's own desired state (not imported) exports the same workloads.
    let (m2, _) = export_and_check(
        &tmp.path().join("bench-obsd"),
        tmp.path(),
        "bench-obsd-out",
        None,
    );
    assert_eq!(
        m.statefulsets.keys().collect::<Vec<_>>(),
        m2.statefulsets.keys().collect::<Vec<_>>()
    );
}

#[test]
fn small_stack_matches_the_golden_files() {
    let tmp = tempfile::tempdir().unwrap();
    stage_small(tmp.path());
    let out = obsctl(
        tmp.path(),
        &["export", "k8s", "--desired-state", "small", "-o", "out"],
        &[],
    );
    let (stdout, stderr) = ok(&out, "export small");
    let mut got = files(&tmp.path().join("out"));
    got.insert("stdout.txt".into(), stdout);
    got.insert("stderr.txt".into(), stderr);
    let golden = repo().join("tests/export_k8s_support/golden");
    if std::env::var_os("OBSD_UPDATE_GOLDEN").is_some() {
        let _ = std::fs::remove_dir_all(&golden);
        std::fs::create_dir_all(&golden).unwrap();
        for (f, c) in &got {
            std::fs::write(golden.join(f), c).unwrap();
        }
    }
    let want = files(&golden);
    let names = |m: &BTreeMap<String, String>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&got),
        names(&want),
        "files differ; regenerate with OBSD_UPDATE_GOLDEN=1 after checking the change"
    );
    for (f, c) in &want {
        assert_eq!(&got[f], c, "{f} differs from the golden file; regenerate with OBSD_UPDATE_GOLDEN=1 after checking the change");
    }
    schema_check(&tmp.path().join("out"));
}

#[test]
fn small_stack_round_trip_and_lossy_mappings_are_warned() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = stage_small(tmp.path());
    let (m, export) = export_and_check(&dir, tmp.path(), "small-out", None);
    let warned = |subject: &str, field: &str, text: &str| {
        export
            .warnings
            .iter()
            .any(|w| w.subject == subject && w.field == field && w.message.contains(text))
    };
    // api: the database URL is built by Kubernetes from the Secret, the rest literal.
    let (_, tpl, _) = m.workload("api").unwrap();
    let pod = tpl.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    let env: BTreeMap<String, _> = c
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.clone()))
        .collect();
    assert_eq!(
        env["DATABASE_URL"].value.as_deref(),
        Some("postgres://app:$(OBSD_ENV_DB_PASSWORD)@db:5432/app")
    );
    let helper = env["OBSD_ENV_DB_PASSWORD"]
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (helper.name.as_str(), helper.key.as_str()),
        ("shop-env", "DB_PASSWORD")
    );
    // Empty in the env file: obsd's default, written as a value (no reference).
    assert_eq!(env["LOG_LEVEL"].value.as_deref(), Some("info"));
    assert_eq!(env["GREETING"].value.as_deref(), Some("hello"));
    // `$$` in the desired state is a literal `$`; Kubernetes must not expand it.
    assert_eq!(
        c.args.as_ref().unwrap(),
        &vec![
            "--listen".to_string(),
            ":8080".into(),
            "--banner".into(),
            "costs $5 (see $$(docs))".into(),
            "--region".into(),
            "$(OBSD_ENV_REGION)".into()
        ]
    );
    let pos_helper = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .position(|e| e.name == "OBSD_ENV_REGION")
        .unwrap();
    let pos_db = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .position(|e| e.name == "DATABASE_URL")
        .unwrap();
    assert!(pos_helper < pos_db, "helpers come first");
    // dependsOn db healthy: db's check is not HTTP → reported, no init container.
    assert!(pod.init_containers.is_none());
    assert!(warned("Service/api", "spec.dependsOn[0]", "not mapped"));
    // web waits for api (an HTTP check on an exposed port).
    let (_, tpl, _) = m.workload("web").unwrap();
    let web = tpl.spec.as_ref().unwrap();
    let init = &web.init_containers.as_ref().unwrap()[0];
    assert_eq!(init.name, "wait-for-api");
    assert!(init.command.as_ref().unwrap()[2].contains("http://api:8080/healthz"));
    // Private config file: not in the ConfigMap, mounted from a Secret the user creates.
    let cm = &m.configmaps["config-web"];
    assert!(!cm.data.as_ref().unwrap().contains_key("admin.token"));
    assert_eq!(export.file_secrets.len(), 1);
    assert_eq!(
        export.file_secrets[0].files,
        vec![(
            "admin.token".to_string(),
            format!("{}/config/web/admin.token", dir.display())
        )]
    );
    let v = web
        .volumes
        .iter()
        .flatten()
        .find(|v| v.projected.is_some())
        .unwrap();
    let srcs = v.projected.as_ref().unwrap().sources.as_ref().unwrap();
    assert_eq!(srcs[1].secret.as_ref().unwrap().name, "config-web-private");
    // Published: 80 and 443 public, the loopback-bound admin port not.
    let public = &m.services["web-public"];
    let ports: Vec<i32> = public
        .spec
        .as_ref()
        .unwrap()
        .ports
        .iter()
        .flatten()
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, vec![80, 443]);
    assert!(warned("Service/web", "spec.ports[2]", "127.0.0.1 only"));
    assert!(warned("Service/web", "spec.binds[0]", "not mounted"));
    assert!(warned(
        "Service/web",
        "spec.configFiles[1].onChange",
        "never updated"
    ));
    assert!(warned("Service/web", "spec.logging", "per node"));
    assert!(warned(
        "Service/db",
        "spec.healthcheck",
        "no liveness probe"
    ));
    assert!(warned("Network/default", "", "NetworkPolicies"));
    // db: StatefulSet, user, limits, grace period, retained claims.
    let db = &m.statefulsets["db"];
    let spec = db.spec.as_ref().unwrap();
    let pol = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .unwrap();
    assert_eq!(
        (pol.when_deleted.as_deref(), pol.when_scaled.as_deref()),
        (Some("Retain"), Some("Retain"))
    );
    let pod = spec.template.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!((sc.run_as_user, sc.run_as_group), (Some(999), Some(999)));
    let lim = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(
        (lim["memory"].0.as_str(), lim["cpu"].0.as_str()),
        ("512Mi", "500m")
    );
    assert_eq!(pod.termination_grace_period_seconds, Some(30));
    assert_eq!(
        db.metadata
            .labels
            .as_ref()
            .unwrap()
            .get("tier")
            .map(String::as_str),
        Some("data")
    );
    assert_eq!(
        export.claims,
        vec![k8s::Claim {
            volume: "db_data".into(),
            pvc: "db-data-db-0".into(),
            statefulset: "db".into()
        }]
    );
    // api: read-only root, no-new-privileges, caps, tmpfs.
    let (_, tpl, _) = m.workload("api").unwrap();
    let c = &tpl.spec.as_ref().unwrap().containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_string()][..])
    );
    let tmpfs = tpl
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .flatten()
        .find(|v| v.empty_dir.is_some())
        .unwrap();
    assert_eq!(
        tmpfs
            .empty_dir
            .as_ref()
            .unwrap()
            .size_limit
            .as_ref()
            .unwrap()
            .0,
        "64Mi"
    );
    // The keys the user's Secret must hold: exactly the referenced names.
    assert_eq!(
        export.secret_keys,
        ["DB_PASSWORD", "REGION", "STRIPE_KEY"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}

#[test]
fn config_change_rolls_pods_only_for_hashed_mounts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = stage_small(tmp.path());
    let hash = |dir: &Path| {
        let e = k8s::export(&k8s::read_input(dir, None).unwrap(), &Options::default()).unwrap();
        let m = parse(
            &e.manifests
                .iter()
                .map(|m| (m.file.clone(), m.yaml.clone()))
                .collect(),
        );
        let (_, tpl, _) = m.workload("web").unwrap();
        tpl.metadata.as_ref().unwrap().annotations.as_ref().unwrap()[k8s::ANNOTATION_CONFIG_HASH]
            .clone()
    };
    let before = hash(&dir);
    // onChange none (web.conf): no roll.
    std::fs::write(dir.join("config/web.conf"), "listen = \":8080\"\n").unwrap();
    assert_eq!(hash(&dir), before);
    // The private file is not hashed either (an unkeyed hash of a secret is confirmable).
    write_private(&dir.join("config/web/admin.token"), "another-secret");
    assert_eq!(hash(&dir), before);
    // onChange restart (config/web): rolls.
    std::fs::write(dir.join("config/web/Caddyfile"), ":80 { respond ok }\n").unwrap();
    assert_ne!(hash(&dir), before);
}

#[test]
fn no_secret_value_reaches_any_output() {
    let tmp = tempfile::tempdir().unwrap();
    stage_small(tmp.path());
    let shell = [
        ("DB_PASSWORD", CANARY_SHELL),
        ("STRIPE_KEY", CANARY_SHELL),
        ("GREETING", CANARY_SHELL),
    ];
    let to_dir = obsctl(
        tmp.path(),
        &["export", "k8s", "--desired-state", "small", "-o", "out"],
        &shell,
    );
    let to_stdout = obsctl(
        tmp.path(),
        &[
            "export",
            "k8s",
            "--desired-state",
            "small",
            "--namespace",
            "canary",
        ],
        &shell,
    );
    let mut outputs: Vec<(String, Vec<u8>)> = vec![
        ("stdout (-o)".into(), to_dir.stdout.clone()),
        ("stderr (-o)".into(), to_dir.stderr.clone()),
        ("stdout (stream)".into(), to_stdout.stdout.clone()),
        ("stderr (stream)".into(), to_stdout.stderr.clone()),
    ];
    ok(&to_dir, "export -o");
    ok(&to_stdout, "export to stdout");
    for (f, c) in files(&tmp.path().join("out")) {
        outputs.push((f, c.into_bytes()));
    }
    assert!(outputs.len() > 10);
    let canaries = [
        CANARY_DB,
        CANARY_STRIPE,
        CANARY_REGION,
        CANARY_FILE,
        CANARY_SHELL,
        "canary-unused-zz",
    ];
    for (name, bytes) in &outputs {
        let text = String::from_utf8_lossy(bytes);
        for c in canaries {
            assert!(!text.contains(c), "{name} contains the secret value `{c}`");
        }
    }
    // The same with the shipped stack and an env file full of canaries.
    let env = dummy_env(tmp.path());
    let out = obsctl(
        tmp.path(),
        &[
            "export",
            "k8s",
            "--desired-state",
            &repo().join("desired-state").display().to_string(),
            "--env-file",
            &env.display().to_string(),
            "-o",
            "shipped",
        ],
        &[],
    );
    let (so, se) = ok(&out, "export shipped");
    let mut all = format!("{so}{se}");
    for (_, c) in files(&tmp.path().join("shipped")) {
        all.push_str(&c);
    }
    assert!(
        !all.contains("canary-"),
        "a value of the env file reached the output"
    );
}

#[test]
fn output_directory_is_deterministic_and_only_ours() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = stage_small(tmp.path());
    let run = |args: &[&str]| obsctl(tmp.path(), args, &[]);
    ok(
        &run(&["export", "k8s", "--desired-state", "small", "-o", "a"]),
        "a",
    );
    ok(
        &run(&["export", "k8s", "--desired-state", "small", "-o", "b"]),
        "b",
    );
    assert_eq!(files(&tmp.path().join("a")), files(&tmp.path().join("b")));
    // The stream is the files, in order.
    let (stream, _) = ok(
        &run(&["export", "k8s", "--desired-state", "small"]),
        "stream",
    );
    let joined: Vec<String> = files(&tmp.path().join("a")).into_values().collect();
    assert_eq!(stream, joined.join("---\n"));
    // Re-export after a Service is removed: its files go, the rest stay identical.
    let services = std::fs::read_to_string(dir.join("services.yaml")).unwrap();
    let without_web = services
        .split("---\n")
        .filter(|d| !d.contains("name: web"))
        .collect::<Vec<_>>()
        .join("---\n");
    std::fs::write(dir.join("services.yaml"), without_web).unwrap();
    let (so, _) = ok(
        &run(&["export", "k8s", "--desired-state", "small", "-o", "a"]),
        "re-export",
    );
    assert!(
        so.contains("removed") && so.contains("40-deployment-web.yaml"),
        "{so}"
    );
    assert!(!tmp.path().join("a/40-deployment-web.yaml").exists());
    assert!(!tmp.path().join("a/30-service-web-public.yaml").exists());
    // A file we did not write stops the export, and nothing is changed.
    std::fs::write(tmp.path().join("a/mine.yaml"), "kind: ConfigMap\n").unwrap();
    let before = files(&tmp.path().join("a"));
    let out = run(&["export", "k8s", "--desired-state", "small", "-o", "a"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mine.yaml"));
    assert_eq!(files(&tmp.path().join("a")), before);
}

#[test]
fn bad_input_exits_1_with_a_located_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = stage_small(tmp.path());
    let s = std::fs::read_to_string(dir.join("services.yaml")).unwrap();
    std::fs::write(
        dir.join("services.yaml"),
        s.replace("image: postgres:16.4", "imgae: postgres:16.4"),
    )
    .unwrap();
    let out = obsctl(
        tmp.path(),
        &["export", "k8s", "--desired-state", "small", "-o", "out"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("services.yaml:") && err.contains("imgae"),
        "{err}"
    );
    assert!(
        !tmp.path().join("out").exists(),
        "nothing written for a bad desired state"
    );
    // A bad flag is refused before anything is read.
    let out = obsctl(
        tmp.path(),
        &[
            "export",
            "k8s",
            "--desired-state",
            "small",
            "--volume-size",
            "lots",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn closed_stdout_ends_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    stage_small(tmp.path());
    let mut child = Command::new(OBSCTL)
        .current_dir(tmp.path())
        .args(["export", "k8s", "--desired-state", "small"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // like `| head -0`
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn kubernetes_mapping_page_is_up_to_date() {
    let on_disk =
        std::fs::read_to_string(repo().join("crds-docs/kubernetes.md")).unwrap_or_default();
    assert!(
        on_disk == k8s::docs::render(),
        "crds-docs/kubernetes.md is stale; regenerate with `cargo run --bin obsctl -- gen-docs crds-docs`"
    );
}

#[test]
fn obsd_pod_sees_a_desired_state_that_loads_in_jobs_only_mode() {
    // Materialise the obsd Deployment's projected volume from the exported ConfigMaps,
    // as the kubelet would, and load it the way `obsd --jobs-only` does in the pod: no
    // env file, the Secret's keys in the environment.
    let tmp = tempfile::tempdir().unwrap();
    let env = dummy_env(tmp.path());
    let dir = repo().join("desired-state");
    let input = k8s::read_input(&dir, Some(&env)).unwrap();
    let export = k8s::export(&input, &Options::default()).unwrap();
    let m = parse(
        &export
            .manifests
            .iter()
            .map(|m| (m.file.clone(), m.yaml.clone()))
            .collect(),
    );
    let (_, tpl, _) = m.workload("obsd").unwrap();
    let pod = tpl.spec.as_ref().unwrap();
    let mount = pod.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|v| v.name == "desired-state")
        .unwrap();
    assert_eq!(mount.mount_path, "/etc/obsd/desired-state");
    let vol = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "desired-state")
        .unwrap();
    let tree = tmp.path().join("pod/etc/obsd/desired-state");
    let mut n = 0;
    for src in vol.projected.as_ref().unwrap().sources.iter().flatten() {
        let cm = src
            .config_map
            .as_ref()
            .expect("only ConfigMaps in the shipped stack");
        let data = m.configmaps[&cm.name].data.clone().unwrap_or_default();
        for item in cm.items.iter().flatten() {
            let path = tree.join(&item.path);
            assert!(!path.exists(), "{} projected twice", item.path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &data[&item.key]).unwrap();
            n += 1;
        }
    }
    assert!(n > 30, "{n} files");
    let process: BTreeMap<String, String> = std::fs::read_to_string(&env)
        .unwrap()
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let opts = obsd::desired::load::LoadOptions {
        process_env: Some(process),
        ..Default::default()
    };
    let loaded = obsd::desired::load::load_dir(&tree, &opts)
        .unwrap_or_else(|e| panic!("the pod's desired state does not load:\n{e}"));
    assert!(!loaded.env.present, "no env file in the pod");
    let original = obsd::desired::load::load_dir(
        &dir,
        &obsd::desired::load::LoadOptions {
            process_env: Some(BTreeMap::new()),
            env_file: Some(env.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        loaded
            .jobs
            .iter()
            .map(|(k, r)| (k.clone(), r.spec.clone()))
            .collect::<BTreeMap<_, _>>(),
        original
            .jobs
            .iter()
            .map(|(k, r)| (k.clone(), r.spec.clone()))
            .collect::<BTreeMap<_, _>>(),
        "the jobs in the pod are the jobs of the desired state, variables expanded"
    );
    assert!(loaded.jobs.values().all(|r| r.source.unresolved.is_empty()));
}

#[test]
fn options_and_env_file_syntax_kubectl_reads_differently() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = stage_small(tmp.path());
    // kubectl --from-env-file keeps quotes and rejects `export`: said, with line numbers.
    write_private(
        &dir.join("secrets.env"),
        "DB_PASSWORD=\"quoted-canary\"\nexport STRIPE_KEY=exported-canary\nREGION=eu\n",
    );
    let out = obsctl(
        tmp.path(),
        &[
            "export",
            "k8s",
            "--desired-state",
            "small",
            "-o",
            "out",
            "--edge-service-type",
            "node-port",
            "--namespace",
            "shop-prod",
            "--volume-size",
            "50Gi",
            "--storage-class",
            "fast",
        ],
        &[],
    );
    let (stdout, stderr) = ok(&out, "export with options");
    assert!(
        stderr.contains("lines 1, 2 quote their value or start with `export`"),
        "{stderr}"
    );
    assert!(!format!("{stdout}{stderr}").contains("canary"));
    assert!(stdout.contains("--namespace shop-prod"), "{stdout}");
    schema_check(&tmp.path().join("out"));
    let m = parse(&files(&tmp.path().join("out")));
    let public = m.services["web-public"].spec.as_ref().unwrap();
    assert_eq!(public.type_.as_deref(), Some("NodePort"));
    assert!(stderr.contains("node port"), "{stderr}");
    assert!(m
        .services
        .values()
        .all(|s| s.metadata.namespace.as_deref() == Some("shop-prod")));
    let db = m.statefulsets["db"].spec.as_ref().unwrap();
    let claim = db.volume_claim_templates.as_ref().unwrap()[0]
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(claim.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        claim.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
        "50Gi"
    );
    // A namespace that is not a DNS label is refused.
    let out = obsctl(
        tmp.path(),
        &[
            "export",
            "k8s",
            "--desired-state",
            "small",
            "--namespace",
            "Shop",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn what_the_api_server_would_refuse_is_adjusted_and_said() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("edge");
    std::fs::create_dir_all(&dir).unwrap();
    let long = "a".repeat(60);
    std::fs::write(
        dir.join("stack.yaml"),
        format!(
            r#"apiVersion: obs.tlsstress.art/v1alpha1
kind: Stack
metadata: {{name: edge}}
spec: {{project: edge_case, defaultNetwork: default}}
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Network
metadata: {{name: default}}
spec: {{internal: true}}
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Volume
metadata: {{name: data}}
spec: {{}}
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Service
metadata: {{name: agent}}
spec:
  image: example/agent:1
  pid: host
  binds: [{{source: /, target: /host, readOnly: true, propagation: rshared}}, {{source: /var/run/docker.sock, target: /var/run/docker.sock}}]
  user: nobody
  restart: on-failure
  stopSignal: SIGINT
  update: {{image: {{policy: notify}}}}
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Service
metadata: {{name: {long}}}
spec:
  image: example/store:1
  volumes: [{{volume: data, target: /data}}]
  resources: {{pidsLimit: 100}}
  configFiles: [{{source: ./conf/app.yml, target: /etc/app.yml}}, {{source: conf/, target: /etc/conf}}]
  labels: {{team: "${{TEAM:-core}}"}}
"#
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("conf")).unwrap();
    std::fs::write(dir.join("conf/app.yml"), "a: 1\n").unwrap();
    let (m, export) = export_and_check(&dir, tmp.path(), "edge-out", None);
    // `./conf/app.yml` and `conf/` name the file and the directory as the loader does.
    assert_eq!(
        m.configmaps["conf-app-yml"].data.as_ref().unwrap()["app.yml"],
        "a: 1\n"
    );
    assert_eq!(
        m.configmaps["conf"].data.as_ref().unwrap()["app.yml"],
        "a: 1\n"
    );
    let store = m.statefulsets[&long].spec.as_ref().unwrap();
    let ann = store
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap();
    assert_eq!(ann["team"], "core");
    let warned = |subject: &str, field: &str, text: &str| {
        export
            .warnings
            .iter()
            .any(|w| w.subject == subject && w.field == field && w.message.contains(text))
    };
    let ds = m.daemonsets["agent"].spec.as_ref().unwrap();
    let pod = ds.template.spec.as_ref().unwrap();
    assert_eq!(pod.host_pid, Some(true));
    let mounts = pod.containers[0].volume_mounts.clone().unwrap();
    assert_eq!(mounts.len(), 1, "the Docker socket is not mounted");
    assert_eq!(
        mounts[0].mount_propagation.as_deref(),
        Some("HostToContainer")
    );
    assert!(warned(
        "Service/agent",
        "spec.binds[0].propagation",
        "privileged"
    ));
    assert!(warned("Service/agent", "spec.binds[1]", "Docker socket"));
    assert!(warned("Service/agent", "spec.user", "numeric"));
    assert!(warned("Service/agent", "spec.restart", "on-failure"));
    assert!(warned("Service/agent", "spec.stopSignal", "SIGINT"));
    assert!(warned("Service/agent", "spec.update.image", "registries"));
    assert!(warned(&format!("Service/{long}"), "metadata.name", "52"));
    assert!(warned(
        &format!("Service/{long}"),
        "spec.resources.pidsLimit",
        "per node"
    ));
    assert!(warned("Network/default", "", "internal"));
    // `edge_case` is a valid label value but not a DNS label: the namespace is derived.
    assert_eq!(export.namespace, "edge-case");
    assert_eq!(export.claims[0].pvc, format!("data-{long}-0"));
}
