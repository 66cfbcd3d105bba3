//! `obsctl import-compose`: a docker-compose file → desired-state documents.
//!
//! The compose file is read with serde-saphyr into a JSON value (anchors and merge
//! keys resolved, alias expansion budgeted), then each service is mapped field by field
//! onto [`ServiceSpec`]. What has no equivalent is reported as a warning comment in
//! the output instead of being dropped silently. Bind mounts become `binds` with
//! absolute host paths (relative ones are resolved against the compose file's
//! directory); environment values that are exactly `${VAR}` with a credential-like
//! name become `secretEnv`, so they are masked everywhere.

use crate::desired::model::service::*;
use crate::desired::model::{Document, Metadata, NetworkSpec, StackSpec, VolumeSpec, API_VERSION};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("{file}: {message}")]
    Read { file: PathBuf, message: String },
    #[error("{file}: service `{service}`: {message}")]
    Service {
        file: PathBuf,
        service: String,
        message: String,
    },
}

/// Result of an import: typed documents plus warnings.
#[derive(Debug, Clone)]
pub struct Imported {
    pub project: String,
    pub stack: StackSpec,
    pub networks: BTreeMap<String, NetworkSpec>,
    pub volumes: BTreeMap<String, VolumeSpec>,
    pub services: BTreeMap<String, ServiceSpec>,
    pub warnings: Vec<String>,
}

/// Reads and converts a compose file; returns the YAML text of the documents.
pub fn import_file(path: &Path) -> Result<String, ComposeError> {
    let imp = import(path)?;
    Ok(to_yaml(&imp))
}

fn secret_like(var: &str) -> bool {
    let v = var.to_ascii_uppercase();
    [
        "PASSWORD",
        "SECRET",
        "TOKEN",
        "KEY",
        "CREDENTIAL",
        "PRIVATE",
        "DSN",
    ]
    .iter()
    .any(|w| v.contains(w))
}

fn normalize(p: &Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn as_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn str_list(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().filter_map(as_str).collect(),
        other => as_str(other).into_iter().collect(),
    }
}

/// Compose's string command form, split like a shell would for simple cases.
fn command(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(_) => Some(str_list(v)),
        Value::String(s) => Some(shell_words(s)),
        Value::Null => None,
        _ => None,
    }
}

fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for ch in s.chars() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(ch);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() || any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if !cur.is_empty() || any {
        out.push(cur);
    }
    out
}

fn duration(v: &Value) -> Option<crate::desired::model::Duration> {
    as_str(v)
        .and_then(|s| humantime::parse_duration(s.trim()).ok())
        .map(crate::desired::model::Duration)
}

fn dns_name(s: &str) -> String {
    s.to_ascii_lowercase().replace('_', "-")
}

/// Imports a compose file: read, then networks, volumes and services in turn.
pub fn import(path: &Path) -> Result<Imported, ComposeError> {
    let root = read(path)?;
    let base = normalize(
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    );
    let project = root
        .get("name")
        .and_then(as_str)
        .unwrap_or_else(|| {
            base.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("stack")
                .to_string()
        })
        .to_ascii_lowercase();
    let mut imp = Imported {
        stack: StackSpec {
            env_file: Some(".env".into()),
            default_network: Some("default".into()),
            ..StackSpec::new(project.clone())
        },
        project,
        networks: networks(&root),
        volumes: volumes(&root),
        services: BTreeMap::new(),
        warnings: Vec::new(),
    };
    let Some(Value::Object(svcs)) = root.get("services") else {
        return Err(ComposeError::Read {
            file: path.to_path_buf(),
            message: "no `services:` mapping".into(),
        });
    };
    for (cname, s) in svcs {
        let name = dns_name(cname);
        if name != *cname {
            imp.warnings.push(format!(
                "service `{cname}` renamed to `{name}` (names are DNS labels)"
            ));
        }
        let spec = service(&name, s, &base, &mut imp).map_err(|message| ComposeError::Service {
            file: path.to_path_buf(),
            service: cname.clone(),
            message,
        })?;
        imp.services.insert(name, spec);
    }
    Ok(imp)
}

/// The compose file as a JSON value (anchors and merge keys resolved), size-bounded.
fn read(path: &Path) -> Result<Value, ComposeError> {
    let err = |m: String| ComposeError::Read {
        file: path.to_path_buf(),
        message: m,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.len() > 4 * 1024 * 1024 {
        return Err(err("compose file larger than 4 MiB".into()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    serde_saphyr::from_str(&text).map_err(|e| err(e.to_string()))
}

/// Top-level `networks:`, plus compose's implicit `default`.
fn networks(root: &Value) -> BTreeMap<String, NetworkSpec> {
    let mut networks = BTreeMap::new();
    networks.insert("default".to_string(), NetworkSpec::default());
    if let Some(Value::Object(nets)) = root.get("networks") {
        for (name, spec) in nets {
            let n = NetworkSpec {
                driver: spec.get("driver").and_then(as_str),
                internal: spec
                    .get("internal")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                name: spec.get("name").and_then(as_str),
            };
            networks.insert(name.clone(), n);
        }
    }
    networks
}

/// Top-level `volumes:`; an `external` volume keeps its own name.
fn volumes(root: &Value) -> BTreeMap<String, VolumeSpec> {
    let mut volumes = BTreeMap::new();
    if let Some(Value::Object(vols)) = root.get("volumes") {
        for (name, spec) in vols {
            let mut v = VolumeSpec {
                driver: spec.get("driver").and_then(as_str),
                name: spec.get("name").and_then(as_str),
                ..Default::default()
            };
            if spec.get("external").and_then(Value::as_bool) == Some(true) {
                v.name.get_or_insert_with(|| name.clone());
            }
            volumes.insert(name.clone(), v);
        }
    }
    volumes
}

/// One compose service → `ServiceSpec`. Mounts may add volumes to `imp.volumes`; what
/// has no equivalent becomes a warning.
fn service(name: &str, s: &Value, base: &Path, imp: &mut Imported) -> Result<ServiceSpec, String> {
    let image = s
        .get("image")
        .and_then(as_str)
        .ok_or("no `image` (build: is not supported; build and tag the image first)")?;
    let mut spec = ServiceSpec {
        image,
        pull_policy: match s.get("pull_policy").and_then(as_str).as_deref() {
            Some("always") => PullPolicy::Always,
            Some("never") => PullPolicy::Never,
            _ => PullPolicy::IfNotPresent,
        },
        command: s.get("command").and_then(command),
        entrypoint: s.get("entrypoint").and_then(command),
        working_dir: s.get("working_dir").and_then(as_str),
        env: BTreeMap::new(),
        secret_env: BTreeMap::new(),
        ports: Vec::new(),
        expose: Vec::new(),
        volumes: Vec::new(),
        binds: Vec::new(),
        config_files: Vec::new(),
        networks: Vec::new(),
        depends_on: Vec::new(),
        healthcheck: s.get("healthcheck").and_then(healthcheck),
        restart: match s.get("restart").and_then(as_str).as_deref() {
            Some("always") => RestartPolicy::Always,
            Some("unless-stopped") => RestartPolicy::UnlessStopped,
            Some(r) if r.starts_with("on-failure") => RestartPolicy::OnFailure,
            _ => RestartPolicy::No,
        },
        user: s.get("user").and_then(as_str),
        cap_add: s.get("cap_add").map(str_list).unwrap_or_default(),
        cap_drop: s.get("cap_drop").map(str_list).unwrap_or_default(),
        privileged: s
            .get("privileged")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        devices: s.get("devices").map(str_list).unwrap_or_default(),
        security_opt: s.get("security_opt").map(str_list).unwrap_or_default(),
        read_only: s.get("read_only").and_then(Value::as_bool).unwrap_or(false),
        tmpfs: s.get("tmpfs").map(str_list).unwrap_or_default(),
        pid: s.get("pid").and_then(as_str),
        resources: resources(s),
        logging: s.get("logging").map(logging),
        extra_hosts: match s.get("extra_hosts") {
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| format!("{k}:{}", as_str(v).unwrap_or_default()))
                .collect(),
            Some(v) => str_list(v),
            None => Vec::new(),
        },
        labels: labels(s),
        stop_signal: s.get("stop_signal").and_then(as_str),
        stop_grace_period: s.get("stop_grace_period").and_then(duration),
        update: None,
        config_check: None,
    };
    environment(s, &mut spec);
    if s.get("env_file").is_some() {
        imp.warnings.push(format!(
            "service `{name}`: env_file is not imported; list the variables under env/secretEnv"
        ));
    }
    for p in array(s.get("ports")) {
        spec.ports.push(port(&p)?);
    }
    for e in s.get("expose").map(str_list).unwrap_or_default() {
        let e = e.split('/').next().unwrap_or("").to_string();
        spec.expose
            .push(e.parse().map_err(|_| format!("invalid expose `{e}`"))?);
    }
    for v in array(s.get("volumes")) {
        mount(&v, base, &mut spec, &mut imp.volumes)?;
    }
    match s.get("networks") {
        Some(Value::Array(a)) => spec.networks = a.iter().filter_map(as_str).collect(),
        Some(Value::Object(m)) => spec.networks = m.keys().cloned().collect(),
        _ => {}
    }
    if spec.networks == ["default"] {
        spec.networks.clear();
    }
    spec.depends_on = depends_on(name, s, &mut imp.warnings);
    for unsupported in [
        "build",
        "container_name",
        "hostname",
        "network_mode",
        "sysctls",
        "ulimits",
        "secrets",
        "configs",
        "profiles",
        "links",
        "init",
    ] {
        if s.get(unsupported).is_some() {
            imp.warnings
                .push(format!("service `{name}`: `{unsupported}` is not imported"));
        }
    }
    Ok(spec)
}

fn array(v: Option<&Value>) -> Vec<Value> {
    match v {
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    }
}

/// `environment:` (a map or a list of `KEY=VALUE`). A value that is exactly `${VAR}`
/// with a credential-like name becomes `secretEnv`, so it is masked everywhere.
fn environment(s: &Value, spec: &mut ServiceSpec) {
    let mut env_pairs: Vec<(String, String)> = Vec::new();
    match s.get("environment") {
        Some(Value::Object(m)) => {
            for (k, v) in m {
                env_pairs.push((k.clone(), as_str(v).unwrap_or_default()));
            }
        }
        Some(Value::Array(a)) => {
            for item in a.iter().filter_map(as_str) {
                match item.split_once('=') {
                    Some((k, v)) => env_pairs.push((k.to_string(), v.to_string())),
                    None => env_pairs.push((item.clone(), format!("${{{item}}}"))),
                }
            }
        }
        _ => {}
    }
    for (k, v) in env_pairs {
        let whole_var = v
            .strip_prefix("${")
            .and_then(|r| r.strip_suffix('}'))
            .filter(|n| crate::desired::env::valid_env_name(n));
        match whole_var {
            Some(var) if secret_like(var) || secret_like(&k) => {
                spec.secret_env.insert(k, var.to_string());
            }
            _ => {
                spec.env.insert(k, v);
            }
        }
    }
}

/// `depends_on:` as a list (started) or a map with conditions.
fn depends_on(name: &str, s: &Value, warnings: &mut Vec<String>) -> Vec<Dependency> {
    let mut out = Vec::new();
    match s.get("depends_on") {
        Some(Value::Array(a)) => {
            for d in a.iter().filter_map(as_str) {
                out.push(Dependency {
                    service: dns_name(&d),
                    condition: DependencyCondition::Started,
                });
            }
        }
        Some(Value::Object(m)) => {
            for (d, c) in m {
                let condition = match c.get("condition").and_then(as_str).as_deref() {
                    Some("service_healthy") => DependencyCondition::Healthy,
                    Some("service_completed_successfully") => {
                        warnings.push(format!("service `{name}`: depends_on {d}: service_completed_successfully imported as started"));
                        DependencyCondition::Started
                    }
                    _ => DependencyCondition::Started,
                };
                out.push(Dependency {
                    service: dns_name(d),
                    condition,
                });
            }
        }
        _ => {}
    }
    out
}

fn healthcheck(h: &Value) -> Option<Healthcheck> {
    if h.get("disable").and_then(Value::as_bool) == Some(true) {
        return Some(Healthcheck {
            test: vec!["NONE".into()],
            interval: None,
            timeout: None,
            retries: None,
            start_period: None,
        });
    }
    let test = match h.get("test")? {
        Value::String(s) => vec!["CMD-SHELL".to_string(), s.clone()],
        other => str_list(other),
    };
    Some(Healthcheck {
        test,
        interval: h.get("interval").and_then(duration),
        timeout: h.get("timeout").and_then(duration),
        retries: h.get("retries").and_then(Value::as_u64).map(|r| r as u32),
        start_period: h.get("start_period").and_then(duration),
    })
}

/// `mem_limit`/`cpus`/`pids_limit`, or `deploy.resources.limits`.
fn resources(s: &Value) -> Option<Resources> {
    let limits = s
        .get("deploy")
        .and_then(|d| d.get("resources"))
        .and_then(|r| r.get("limits"));
    let memory = s
        .get("mem_limit")
        .and_then(as_str)
        .or_else(|| limits.and_then(|l| l.get("memory")).and_then(as_str));
    let cpus = s
        .get("cpus")
        .and_then(as_str)
        .or_else(|| limits.and_then(|l| l.get("cpus")).and_then(as_str))
        .and_then(|c| c.parse::<f64>().ok());
    let pids_limit = s.get("pids_limit").and_then(Value::as_i64);
    (memory.is_some() || cpus.is_some() || pids_limit.is_some()).then_some(Resources {
        memory,
        cpus,
        pids_limit,
    })
}

fn logging(l: &Value) -> Logging {
    Logging {
        driver: l
            .get("driver")
            .and_then(as_str)
            .unwrap_or_else(|| "json-file".into()),
        options: match l.get("options") {
            Some(Value::Object(o)) => o
                .iter()
                .map(|(k, v)| (k.clone(), as_str(v).unwrap_or_default()))
                .collect(),
            _ => BTreeMap::new(),
        },
    }
}

/// `labels:` as a map or a list of `key=value`.
fn labels(s: &Value) -> BTreeMap<String, String> {
    match s.get("labels") {
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| (k.clone(), as_str(v).unwrap_or_default()))
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(as_str)
            .map(|l| match l.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (l, String::new()),
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn port(v: &Value) -> Result<PortSpec, String> {
    if let Value::Object(m) = v {
        let container = m
            .get("target")
            .and_then(Value::as_u64)
            .ok_or("port without target")? as u16;
        let host = m
            .get("published")
            .and_then(as_str)
            .and_then(|p| p.parse().ok())
            .ok_or("port without published")?;
        return Ok(PortSpec {
            host,
            container,
            protocol: if m.get("protocol").and_then(as_str).as_deref() == Some("udp") {
                Protocol::Udp
            } else {
                Protocol::Tcp
            },
            host_ip: m.get("host_ip").and_then(as_str),
        });
    }
    let s = as_str(v).ok_or("invalid port")?;
    let (s, proto) = match s.split_once('/') {
        Some((a, "udp")) => (a.to_string(), Protocol::Udp),
        Some((a, _)) => (a.to_string(), Protocol::Tcp),
        None => (s, Protocol::Tcp),
    };
    let parts: Vec<&str> = s.rsplitn(3, ':').collect();
    let parse = |x: &str| {
        x.parse::<u16>()
            .map_err(|_| format!("invalid port `{s}` (ranges are not supported)"))
    };
    match parts.as_slice() {
        [c, h, ip] => Ok(PortSpec {
            host: parse(h)?,
            container: parse(c)?,
            protocol: proto,
            host_ip: Some(ip.to_string()),
        }),
        [c, h] => Ok(PortSpec {
            host: parse(h)?,
            container: parse(c)?,
            protocol: proto,
            host_ip: None,
        }),
        [c] => Err(format!(
            "port `{c}` publishes on a random host port; give an explicit host port"
        )),
        _ => Err(format!("invalid port `{s}`")),
    }
}

fn mount(
    v: &Value,
    base: &Path,
    spec: &mut ServiceSpec,
    volumes: &mut BTreeMap<String, VolumeSpec>,
) -> Result<(), String> {
    let (source, target, read_only, propagation, kind) = match v {
        Value::Object(m) => (
            m.get("source").and_then(as_str).unwrap_or_default(),
            m.get("target")
                .and_then(as_str)
                .ok_or("volume without target")?,
            m.get("read_only").and_then(Value::as_bool).unwrap_or(false),
            m.get("bind")
                .and_then(|b| b.get("propagation"))
                .and_then(as_str),
            m.get("type")
                .and_then(as_str)
                .unwrap_or_else(|| "volume".into()),
        ),
        other => {
            let s = as_str(other).ok_or("invalid volume entry")?;
            let parts: Vec<&str> = s.split(':').collect();
            let (src, tgt, opts) = match parts.as_slice() {
                [t] => (String::new(), t.to_string(), ""),
                [a, b] => (a.to_string(), b.to_string(), ""),
                [a, b, o] => (a.to_string(), b.to_string(), *o),
                _ => return Err(format!("invalid volume `{s}`")),
            };
            let opts: Vec<&str> = opts.split(',').filter(|o| !o.is_empty()).collect();
            let kind = if src.starts_with('/') || src.starts_with('.') || src.starts_with('~') {
                "bind"
            } else {
                "volume"
            };
            (
                src,
                tgt,
                opts.contains(&"ro"),
                opts.iter()
                    .find(|o| {
                        [
                            "rslave", "slave", "rshared", "shared", "rprivate", "private",
                        ]
                        .contains(o)
                    })
                    .map(|s| s.to_string()),
                kind.to_string(),
            )
        }
    };
    match kind.as_str() {
        "bind" => {
            let p = Path::new(&source);
            let abs = if p.is_absolute() {
                p.to_path_buf()
            } else {
                normalize(&base.join(p))
            };
            spec.binds.push(BindMount {
                source: abs.to_string_lossy().into_owned(),
                target,
                read_only,
                propagation,
            });
        }
        "tmpfs" => spec.tmpfs.push(target),
        _ => {
            if source.is_empty() {
                return Err(format!(
                    "anonymous volume at {target} is not supported; give it a name"
                ));
            }
            volumes.entry(source.clone()).or_default();
            spec.volumes.push(VolumeMount {
                volume: source,
                target,
                read_only,
            });
        }
    }
    Ok(())
}

fn doc<S: Serialize>(kind: &str, name: &str, spec: S) -> Document<S> {
    Document {
        api_version: API_VERSION.into(),
        kind: kind.into(),
        metadata: Metadata {
            name: name.into(),
            labels: BTreeMap::new(),
        },
        spec,
    }
}

/// Renders the documents as one multi-document YAML stream.
pub fn to_yaml(imp: &Imported) -> String {
    let mut out = String::from("# yaml-language-server: $schema=../crds-docs/obsd.schema.json\n# Generated by `obsctl import-compose`.\n");
    for w in &imp.warnings {
        out.push_str(&format!("# warning: {w}\n"));
    }
    let mut push = |y: String| {
        out.push_str("---\n");
        out.push_str(&y);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    };
    push(yaml(&doc(
        "Stack",
        &imp.project.replace('_', "-"),
        imp.stack.clone(),
    )));
    for (n, s) in &imp.networks {
        push(yaml(&doc("Network", n, s.clone())));
    }
    for (n, s) in &imp.volumes {
        push(yaml(&doc("Volume", n, s.clone())));
    }
    for (n, s) in &imp.services {
        push(yaml(&doc("Service", n, s.clone())));
    }
    out
}

fn yaml<T: Serialize>(v: &T) -> String {
    serde_saphyr::to_string(v).unwrap_or_else(|e| format!("# serialization error: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_words() {
        let p = port(&Value::String("127.0.0.1:8080:80/udp".into())).unwrap();
        assert_eq!(
            (p.host, p.container, p.protocol, p.host_ip.as_deref()),
            (8080, 80, Protocol::Udp, Some("127.0.0.1"))
        );
        assert!(port(&Value::String("80".into())).is_err());
        assert_eq!(
            shell_words("sh -c 'echo hi; sleep 1'"),
            vec!["sh", "-c", "echo hi; sleep 1"]
        );
    }
}
