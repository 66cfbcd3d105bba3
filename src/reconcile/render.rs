//! Rendering a `Service` into the exact container the engine should run, plus the keyed
//! hashes that let the planner decide "in sync" from labels alone.
//!
//! Pure: takes the loaded desired state and the host key; no IO.
//!
//! The spec hash is an HMAC (key: 32 random bytes in the state directory) over the
//! *masked* spec, in which each secret value is replaced by its own keyed fingerprint.
//! A rotated secret therefore changes the hash (the container is recreated), but no
//! label lets anyone confirm a guessed secret without the host key.

use crate::desired::model::service::{parse_memory, OnChange};
use crate::desired::DesiredState;
use crate::docker::{
    labels, CreateContainer, HealthConfig, LogConfig, Mount, NetworkAttachment, PortBinding,
};
use crate::secret::{HostKey, MASK};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// A service ready to compare and create.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub service: String,
    pub create: CreateContainer,
    /// Keyed hash of everything but config file contents.
    pub spec_hash: String,
    /// Keyed hash per config file (order of `configFiles`).
    pub config_hashes: Vec<String>,
    pub on_change: Vec<OnChange>,
    /// The spec with secrets replaced by `***<fingerprint>` (what `diff` compares).
    pub masked: Value,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RenderError {
    #[error("variables {} are not set (the env file is missing)", .0.join(", "))]
    Unresolved(Vec<String>),
    #[error("secretEnv {key}: `{var}` is not set in the env file{}", .file.as_ref().map(|f| format!(" {f}")).unwrap_or_default())]
    MissingSecret {
        key: String,
        var: String,
        file: Option<String>,
    },
}

pub const SECRET_PREFIX: &str = "***";

/// Renders one service.
pub fn render_service(
    state: &DesiredState,
    name: &str,
    key: &HostKey,
) -> Result<Rendered, RenderError> {
    let res = &state.services[name];
    if !res.source.unresolved.is_empty() {
        return Err(RenderError::Unresolved(res.source.unresolved.clone()));
    }
    let s = &res.spec;
    let project = state.project();

    let mut env: Vec<String> = s.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut masked_env = Map::new();
    for (k, v) in &s.env {
        masked_env.insert(k.clone(), json!(v));
    }
    for (k, var) in &s.secret_env {
        let secret = state
            .env
            .get(var)
            .ok_or_else(|| RenderError::MissingSecret {
                key: k.clone(),
                var: var.clone(),
                file: state.env.path.as_ref().map(|p| p.display().to_string()),
            })?;
        env.push(format!("{k}={}", secret.expose()));
        let fp = key.mac(&[b"secret", k.as_bytes(), secret.expose().as_bytes()]);
        masked_env.insert(k.clone(), json!(format!("{SECRET_PREFIX}{}", &fp[..16])));
    }

    let mut mounts = Vec::new();
    for v in &s.volumes {
        mounts.push(Mount {
            kind: "volume",
            source: state.volume_docker_name(&v.volume),
            target: v.target.clone(),
            read_only: v.read_only,
            propagation: None,
        });
    }
    for b in &s.binds {
        mounts.push(Mount {
            kind: "bind",
            source: b.source.clone(),
            target: b.target.clone(),
            read_only: b.read_only,
            propagation: b.propagation.clone(),
        });
    }
    for c in &s.config_files {
        mounts.push(Mount {
            kind: "bind",
            source: state.dir.join(&c.source).to_string_lossy().into_owned(),
            target: c.target.clone(),
            read_only: true,
            propagation: None,
        });
    }

    // Canonical order (the engine orders mounts by path itself), so the hash does not
    // depend on whether a mount is written as a volume, bind or config file first.
    mounts.sort_by(|a, b| a.target.cmp(&b.target));

    let networks: Vec<NetworkAttachment> = state
        .service_networks(s)
        .iter()
        .map(|n| NetworkAttachment {
            network: state.network_docker_name(n),
            aliases: vec![name.to_string()],
        })
        .collect();
    let mut exposed: Vec<String> = s.expose.iter().map(|p| format!("{p}/tcp")).collect();
    let mut port_bindings = Vec::new();
    for p in &s.ports {
        let cport = format!("{}/{}", p.container, p.protocol.as_str());
        if !exposed.contains(&cport) {
            exposed.push(cport.clone());
        }
        port_bindings.push(PortBinding {
            container_port: cport,
            host_ip: p.host_ip.clone(),
            host_port: p.host,
        });
    }
    exposed.sort();
    exposed.dedup();

    let tmpfs: BTreeMap<String, String> = s
        .tmpfs
        .iter()
        .map(|t| match t.split_once(':') {
            Some((p, o)) => (p.to_string(), o.to_string()),
            None => (t.clone(), String::new()),
        })
        .collect();
    let ns =
        |d: &Option<crate::desired::model::Duration>| d.map(|d| d.0.as_nanos() as i64).unwrap_or(0);
    let healthcheck = s.healthcheck.as_ref().map(|h| HealthConfig {
        test: h.test.clone(),
        interval_ns: ns(&h.interval),
        timeout_ns: ns(&h.timeout),
        retries: h.retries.unwrap_or(0) as i64,
        start_period_ns: ns(&h.start_period),
    });

    let mut create = CreateContainer {
        name: state.container_name(name),
        image: s.image.clone(),
        cmd: s.command.clone(),
        entrypoint: s.entrypoint.clone(),
        working_dir: s.working_dir.clone(),
        env,
        labels: s.labels.clone(),
        exposed_ports: exposed,
        port_bindings,
        mounts,
        networks,
        restart: s.restart.docker_name().to_string(),
        user: s.user.clone(),
        cap_add: s.cap_add.clone(),
        cap_drop: s.cap_drop.clone(),
        privileged: s.privileged,
        devices: s.devices.clone(),
        security_opt: s.security_opt.clone(),
        read_only: s.read_only,
        tmpfs,
        pid: s.pid.clone(),
        memory: s
            .resources
            .as_ref()
            .and_then(|r| r.memory.as_deref())
            .and_then(parse_memory),
        nano_cpus: s
            .resources
            .as_ref()
            .and_then(|r| r.cpus)
            .map(|c| (c * 1e9) as i64),
        pids_limit: s.resources.as_ref().and_then(|r| r.pids_limit),
        log_driver: s.logging.as_ref().map(|l| LogConfig {
            driver: l.driver.clone(),
            options: l.options.clone(),
        }),
        extra_hosts: s.extra_hosts.clone(),
        healthcheck,
        stop_signal: s.stop_signal.clone(),
        stop_timeout: s.stop_grace_period.map(|d| d.0.as_secs() as i64),
    };

    let masked = masked_spec(&create, masked_env);
    let canonical = serde_json::to_string(&masked).expect("json");
    let spec_hash = key.mac(&[b"spec", canonical.as_bytes()])[..32].to_string();
    let config_hashes: Vec<String> = state
        .config_hashes
        .get(name)
        .map(|v| {
            v.iter()
                .map(|h| key.mac(&[b"config", h.as_bytes()])[..16].to_string())
                .collect()
        })
        .unwrap_or_default();

    create
        .labels
        .insert(labels::STACK.into(), project.to_string());
    create.labels.insert(labels::KIND.into(), "Service".into());
    create.labels.insert(labels::NAME.into(), name.to_string());
    create
        .labels
        .insert(labels::SPEC_HASH.into(), spec_hash.clone());
    create
        .labels
        .insert(labels::CONFIG_HASH.into(), config_hashes.join(","));
    create.labels.insert(labels::APPLIED.into(), canonical);

    Ok(Rendered {
        service: name.to_string(),
        create,
        spec_hash,
        config_hashes,
        on_change: s
            .config_files
            .iter()
            .enumerate()
            .map(|(i, c)| {
                // A file bind mount pins the inode it was created with; after a save by
                // rename only a restart (which re-binds the path) shows the new content.
                let single = state
                    .config_single_file
                    .get(name)
                    .and_then(|v| v.get(i))
                    .copied()
                    .unwrap_or(false);
                match &c.on_change {
                    OnChange::Signal(_)
                    | OnChange::Exec(_)
                    | OnChange::Http(_)
                    | OnChange::None
                        if single =>
                    {
                        OnChange::Restart
                    }
                    other => other.clone(),
                }
            })
            .collect(),
        masked,
    })
}

/// The comparable, printable form of a container spec (secrets already masked).
fn masked_spec(c: &CreateContainer, env: Map<String, Value>) -> Value {
    json!({
        "image": c.image,
        "command": c.cmd,
        "entrypoint": c.entrypoint,
        "workingDir": c.working_dir,
        "env": env,
        "labels": c.labels,
        "expose": c.exposed_ports,
        "ports": c.port_bindings.iter().map(|p| format!("{}{}->{}", p.host_ip.as_ref().map(|i| format!("{i}:")).unwrap_or_default(), p.host_port, p.container_port)).collect::<Vec<_>>(),
        "mounts": c.mounts.iter().map(|m| format!("{}:{}:{}{}{}", m.kind, m.source, m.target, if m.read_only { ":ro" } else { "" }, m.propagation.as_ref().map(|p| format!(":{p}")).unwrap_or_default())).collect::<Vec<_>>(),
        "networks": c.networks.iter().map(|n| format!("{} as {}", n.network, n.aliases.join(","))).collect::<Vec<_>>(),
        "restart": c.restart,
        "user": c.user,
        "capAdd": c.cap_add,
        "capDrop": c.cap_drop,
        "privileged": c.privileged,
        "devices": c.devices,
        "securityOpt": c.security_opt,
        "readOnly": c.read_only,
        "tmpfs": c.tmpfs,
        "pid": c.pid,
        "memory": c.memory,
        "nanoCpus": c.nano_cpus,
        "pidsLimit": c.pids_limit,
        "logging": c.log_driver.as_ref().map(|l| json!({"driver": l.driver, "options": l.options})),
        "extraHosts": c.extra_hosts,
        "healthcheck": c.healthcheck.as_ref().map(|h| json!({"test": h.test, "interval": h.interval_ns, "timeout": h.timeout_ns, "retries": h.retries, "startPeriod": h.start_period_ns})),
        "stopSignal": c.stop_signal,
        "stopTimeout": c.stop_timeout,
    })
}

/// One field that differs between the applied and the desired spec. On the wire it is
/// the array `[path, applied, desired]`, as it always was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    /// Dotted path, e.g. `env.LOG_LEVEL`.
    pub path: String,
    pub applied: String,
    pub desired: String,
}

impl Serialize for FieldChange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.path, &self.applied, &self.desired).serialize(s)
    }
}

impl<'de> Deserialize<'de> for FieldChange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (path, applied, desired) = <(String, String, String)>::deserialize(d)?;
        Ok(FieldChange {
            path,
            applied,
            desired,
        })
    }
}

/// Field-level differences between an applied masked spec and the desired one; secret
/// values are shown only as `***` / `*** (changed)`.
pub fn diff_fields(old: &Value, new: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    diff_rec("", old, new, &mut out);
    out
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) if s.starts_with(SECRET_PREFIX) => MASK.to_string(),
        Value::String(s) => s.clone(),
        Value::Null => "—".into(),
        other => other.to_string(),
    }
}

fn diff_rec(path: &str, old: &Value, new: &Value, out: &mut Vec<FieldChange>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff_rec(
                    &p,
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::String(a), Value::String(b))
            if a.starts_with(SECRET_PREFIX) && b.starts_with(SECRET_PREFIX) =>
        {
            out.push(FieldChange {
                path: path.to_string(),
                applied: MASK.into(),
                desired: format!("{MASK} (changed)"),
            });
        }
        _ => out.push(FieldChange {
            path: path.to_string(),
            applied: show(old),
            desired: show(new),
        }),
    }
}
