//! Cross-resource validation of a loaded desired state: names, references, cycles,
//! port clashes, schedules. Pure: it only reads the state and appends diagnostics.

use crate::desired::diag::{did_you_mean, Diagnostic};
use crate::desired::load::{err_at, k, keys, valid_env_name, DesiredState};
use crate::desired::model::service::{parse_memory, DependencyCondition, OnChange};
use crate::desired::yaml::PathSeg;
use std::collections::{BTreeMap, HashMap};

/// A DNS label: what Kubernetes accepts as a name, and safe in container names.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Most per-key errors reported for one Service's `env` and `secretEnv`.
const MAX_KEY_ERRORS: usize = 20;

/// Most declared names searched for a "did you mean" hint on a dangling reference.
const MAX_HINT_CANDIDATES: usize = 500;

const SIGNALS: &[&str] = &[
    "SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGTERM", "SIGKILL", "SIGWINCH",
];

pub fn validate(s: &DesiredState, d: &mut Vec<Diagnostic>) {
    let name_path = keys(&["metadata", "name"]);
    let bad_name = |n: &str| {
        format!("invalid name `{n}`: use a DNS label (lowercase letters, digits, `-`; at most 63 characters)")
    };
    let stack = &s.stack;
    if !valid_name(&stack.name) {
        d.push(err_at(&stack.source, &name_path, bad_name(&stack.name)));
    }
    let p = &stack.spec.project;
    if p.is_empty()
        || !p
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        || !p.as_bytes()[0].is_ascii_alphanumeric()
    {
        d.push(err_at(
            &stack.source,
            &keys(&["spec", "project"]),
            format!("invalid project `{p}`: lowercase letters, digits, `-` and `_`, starting with a letter or digit"),
        ));
    }
    if stack.spec.concurrency == 0 || stack.spec.concurrency > 64 {
        d.push(err_at(
            &stack.source,
            &keys(&["spec", "concurrency"]),
            "concurrency must be between 1 and 64",
        ));
    }
    if let Some(net) = &stack.spec.default_network {
        if !s.networks.contains_key(net) {
            d.push(dangling(
                &stack.source,
                &keys(&["spec", "defaultNetwork"]),
                "Network",
                net,
                s.networks.keys(),
            ));
        }
    }
    if let Some(a) = &stack.spec.alerting {
        for (field, v) in [
            ("alertmanagerUrlEnv", &a.alertmanager_url_env),
            ("deadManUrlEnv", &a.dead_man_url_env),
        ] {
            if let Some(v) = v {
                if !valid_env_name(v) {
                    d.push(err_at(
                        &stack.source,
                        &keys(&["spec", "alerting", field]),
                        format!("`{v}` is not a valid variable name"),
                    ));
                }
            }
        }
    }
    for (name, r) in s
        .volumes
        .iter()
        .map(|(n, r)| (n, &r.source))
        .chain(s.networks.iter().map(|(n, r)| (n, &r.source)))
    {
        if !valid_name(name) && !valid_docker_object_name(name) {
            d.push(err_at(r, &name_path, bad_name(name)));
        }
    }
    for (name, r) in &s.jobs {
        if !valid_name(name) {
            d.push(err_at(&r.source, &name_path, bad_name(name)));
        }
    }

    // Services.
    let mut host_ports: HashMap<
        (u16, &'static str, String),
        (String, std::path::PathBuf, crate::desired::yaml::Pos),
    > = HashMap::new();
    for (name, r) in &s.services {
        let src = &r.source;
        let spec = &r.spec;
        if !valid_name(name) {
            d.push(err_at(src, &name_path, bad_name(name)));
        }
        if let Err(msg) = check_image(&spec.image) {
            d.push(err_at(src, &keys(&["spec", "image"]), msg));
        }
        for (i, v) in spec.volumes.iter().enumerate() {
            let base = [k("spec"), k("volumes"), PathSeg::Index(i)];
            if !s.volumes.contains_key(&v.volume) {
                d.push(dangling(
                    src,
                    &[&base[..], &[k("volume")]].concat(),
                    "Volume",
                    &v.volume,
                    s.volumes.keys(),
                ));
            }
            abs(src, &[&base[..], &[k("target")]].concat(), &v.target, d);
        }
        for (i, b) in spec.binds.iter().enumerate() {
            let base = [k("spec"), k("binds"), PathSeg::Index(i)];
            abs(src, &[&base[..], &[k("source")]].concat(), &b.source, d);
            abs(src, &[&base[..], &[k("target")]].concat(), &b.target, d);
            if let Some(p) = &b.propagation {
                if ![
                    "private", "rprivate", "shared", "rshared", "slave", "rslave",
                ]
                .contains(&p.as_str())
                {
                    d.push(err_at(
                        src,
                        &[&base[..], &[k("propagation")]].concat(),
                        format!("invalid propagation `{p}`"),
                    ));
                }
            }
        }
        for (i, c) in spec.config_files.iter().enumerate() {
            let base = [k("spec"), k("configFiles"), PathSeg::Index(i)];
            abs(src, &[&base[..], &[k("target")]].concat(), &c.target, d);
            if let OnChange::Signal(sig) = &c.on_change {
                if !SIGNALS.contains(&sig.as_str()) {
                    d.push(err_at(
                        src,
                        &[&base[..], &[k("onChange"), k("signal")]].concat(),
                        format!("unknown signal `{sig}`; one of {}", SIGNALS.join(", ")),
                    ));
                }
            }
        }
        let nets = s.service_networks(spec);
        if nets.is_empty() {
            d.push(err_at(
                src,
                &keys(&["spec", "networks"]),
                "no network: list one here or set the Stack's defaultNetwork",
            ));
        }
        for (i, n) in spec.networks.iter().enumerate() {
            if !s.networks.contains_key(n) {
                d.push(dangling(
                    src,
                    &[k("spec"), k("networks"), PathSeg::Index(i)],
                    "Network",
                    n,
                    s.networks.keys(),
                ));
            }
        }
        for (i, dep) in spec.depends_on.iter().enumerate() {
            let path = [k("spec"), k("dependsOn"), PathSeg::Index(i), k("service")];
            match s.services.get(&dep.service) {
                None => d.push(dangling(
                    src,
                    &path,
                    "Service",
                    &dep.service,
                    s.services.keys(),
                )),
                Some(_) if dep.service == *name => {
                    d.push(err_at(src, &path, "a service cannot depend on itself"))
                }
                Some(other) => {
                    if dep.condition == DependencyCondition::Healthy
                        && other.spec.healthcheck.is_none()
                    {
                        d.push(err_at(
                            src,
                            &[k("spec"), k("dependsOn"), PathSeg::Index(i), k("condition")],
                            format!(
                                "waits for `{}` to be healthy, but `{}` has no healthcheck",
                                dep.service, dep.service
                            ),
                        ));
                    }
                }
            }
        }
        for (i, p) in spec.ports.iter().enumerate() {
            let path = [k("spec"), k("ports"), PathSeg::Index(i), k("host")];
            if p.host == 0 || p.container == 0 {
                d.push(err_at(src, &path, "ports must be between 1 and 65535"));
                continue;
            }
            let key = (
                p.host,
                p.protocol.as_str(),
                p.host_ip.clone().unwrap_or_default(),
            );
            let pos = src.pos(&path);
            if let Some((other, f, op)) = host_ports.get(&key) {
                d.push(err_at(
                    src,
                    &path,
                    format!(
                        "host port {}/{} is already published by service `{other}` ({}:{})",
                        p.host,
                        p.protocol.as_str(),
                        f.display(),
                        op
                    ),
                ));
            } else {
                host_ports.insert(key, (name.clone(), src.file.clone(), pos));
            }
        }
        // Per-key errors are capped: each one costs a lookup in the (possibly huge)
        // mapping, and a thousand copies of one mistake help nobody.
        let mut key_errors = 0usize;
        for key in spec.env.keys() {
            if !valid_env_name(key) {
                key_errors += 1;
                if key_errors <= MAX_KEY_ERRORS {
                    d.push(err_at(
                        src,
                        &[k("spec"), k("env"), k(key)],
                        format!("`{key}` is not a valid environment variable name"),
                    ));
                }
            }
        }
        for (key, var) in &spec.secret_env {
            let path = [k("spec"), k("secretEnv"), k(key)];
            let mut msgs = Vec::new();
            if !valid_env_name(key) || !valid_env_name(var) {
                msgs.push(format!("`{key}: {var}`: both must be valid variable names"));
            }
            if spec.env.contains_key(key) {
                msgs.push(format!("`{key}` is set in both env and secretEnv"));
            }
            if s.env.present && s.env.get(var).is_none() {
                msgs.push(format!(
                    "`{var}` is not set in the env file {}",
                    s.env
                        .path
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ));
            }
            for msg in msgs {
                key_errors += 1;
                if key_errors <= MAX_KEY_ERRORS {
                    d.push(err_at(src, &path, msg));
                }
            }
        }
        if key_errors > MAX_KEY_ERRORS {
            d.push(err_at(
                src,
                &keys(&["spec"]),
                format!(
                    "{} more errors in env and secretEnv not shown",
                    key_errors - MAX_KEY_ERRORS
                ),
            ));
        }
        if let Some(res) = &spec.resources {
            if let Some(m) = &res.memory {
                if parse_memory(m).is_none() {
                    d.push(err_at(
                        src,
                        &keys(&["spec", "resources", "memory"]),
                        format!("invalid memory `{m}`; write e.g. `512m` or `2g`"),
                    ));
                }
            }
            if let Some(c) = res.cpus {
                if !(c > 0.0 && c <= 1024.0) {
                    d.push(err_at(
                        src,
                        &keys(&["spec", "resources", "cpus"]),
                        "cpus must be a positive number of cores",
                    ));
                }
            }
        }
        if let Some(pid) = &spec.pid {
            if pid != "host" && !pid.starts_with("container:") {
                d.push(err_at(
                    src,
                    &keys(&["spec", "pid"]),
                    format!("invalid pid mode `{pid}`; use `host`"),
                ));
            }
        }
        if let Some(sig) = &spec.stop_signal {
            if !SIGNALS.contains(&sig.as_str()) {
                d.push(err_at(
                    src,
                    &keys(&["spec", "stopSignal"]),
                    format!("unknown signal `{sig}`"),
                ));
            }
        }
        for (i, h) in spec.extra_hosts.iter().enumerate() {
            if h.split_once(':')
                .is_none_or(|(a, b)| a.is_empty() || b.is_empty())
            {
                d.push(err_at(
                    src,
                    &[k("spec"), k("extraHosts"), PathSeg::Index(i)],
                    format!("`{h}` must be `name:ip`"),
                ));
            }
        }
        if let Some(hc) = &spec.healthcheck {
            let ok = matches!(
                hc.test.first().map(String::as_str),
                Some("CMD" | "CMD-SHELL" | "NONE")
            );
            if !ok {
                d.push(err_at(
                    src,
                    &keys(&["spec", "healthcheck", "test"]),
                    "test must start with CMD, CMD-SHELL or NONE",
                ));
            }
        }
    }
    cycles(s, d);

    // Jobs.
    // Each textfile has one writer: node-exporter rejects a series found in two files.
    let mut textfile_owner: HashMap<String, String> = HashMap::new();
    let mut cloud_pollers = 0;
    for (job_name, r) in &s.jobs {
        let src = &r.source;
        if let Err(msg) = crate::desired::schedule::Schedule::parse(&r.spec.schedule) {
            d.push(err_at(src, &keys(&["spec", "schedule"]), msg));
        }
        if r.spec.timeout.0.is_zero() {
            d.push(err_at(
                src,
                &keys(&["spec", "timeout"]),
                "timeout must be longer than 0s",
            ));
        }
        if r.spec.cloud_poller.is_some() {
            cloud_pollers += 1;
            if cloud_pollers > 1 {
                d.push(err_at(
                    src,
                    &keys(&["spec", "cloudPoller"]),
                    "only one cloudPoller job is allowed (its unlabelled cf_scrape_up/stripe_scrape_up series would clash)",
                ));
            }
        }
        let bodies = r.spec.bodies();
        if bodies.len() != 1 {
            d.push(err_at(
                src,
                &keys(&["spec"]),
                format!(
                    "a Job needs exactly one body (cloudPoller, backup, selfHeal, dockerNames, statusPage, logsShipper, awsCronMonitor); found {}",
                    if bodies.is_empty() { "none".to_string() } else { bodies.join(", ") }
                ),
            ));
        }
        if let Some(b) = &r.spec.backup {
            for (i, v) in b.volumes.iter().enumerate() {
                if !s.volumes.contains_key(v) {
                    d.push(dangling(
                        src,
                        &[k("spec"), k("backup"), k("volumes"), PathSeg::Index(i)],
                        "Volume",
                        v,
                        s.volumes.keys(),
                    ));
                }
            }
            if b.lock_retention_days >= b.keep_daily {
                d.push(err_at(
                    src,
                    &keys(&["spec", "backup", "lockRetentionDays"]),
                    "must be below keepDaily, or pruning could never delete anything",
                ));
            }
        }
        let textfiles = [
            r.spec
                .cloud_poller
                .as_ref()
                .map(|c| ("cloudPoller", &c.textfile)),
            r.spec
                .docker_names
                .as_ref()
                .map(|c| ("dockerNames", &c.textfile)),
            r.spec.self_heal.as_ref().map(|c| ("selfHeal", &c.textfile)),
            r.spec
                .status_page
                .as_ref()
                .map(|c| ("statusPage", &c.textfile)),
            r.spec
                .logs_shipper
                .as_ref()
                .map(|c| ("logsShipper", &c.textfile)),
            r.spec
                .aws_cron_monitor
                .as_ref()
                .map(|c| ("awsCronMonitor", &c.textfile)),
        ];
        for (body, tf) in textfiles.into_iter().flatten() {
            if let Some(other) = textfile_owner.insert(tf.clone(), job_name.clone()) {
                d.push(err_at(
                    src,
                    &keys(&["spec", body, "textfile"]),
                    format!(
                        "`{tf}` is also written by job `{other}`; each job needs its own textfile"
                    ),
                ));
            }
            if !tf.ends_with(".prom") || tf.contains('/') {
                d.push(err_at(
                    src,
                    &keys(&["spec", body, "textfile"]),
                    format!("`{tf}` must be a plain file name ending in `.prom`"),
                ));
            } else if s.stack.spec.textfile_dir.is_none() {
                d.push(err_at(
                    src,
                    &keys(&["spec", body, "textfile"]),
                    "the Stack sets no textfileDir to write it to",
                ));
            }
        }
        crate::desired::validate_aws::validate_job(r, d);
        if let Some(sp) = &r.spec.status_page {
            if !(sp.slo_target > 0.0 && sp.slo_target < 1.0) {
                d.push(err_at(
                    src,
                    &keys(&["spec", "statusPage", "sloTarget"]),
                    "sloTarget is a fraction between 0 and 1, e.g. 0.999",
                ));
            }
        }
    }
}

fn valid_docker_object_name(s: &str) -> bool {
    s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn abs(src: &crate::desired::load::Source, path: &[PathSeg], p: &str, d: &mut Vec<Diagnostic>) {
    if !p.starts_with('/') {
        d.push(err_at(src, path, format!("`{p}` must be an absolute path")));
    }
}

fn dangling<'a>(
    src: &crate::desired::load::Source,
    path: &[PathSeg],
    kind: &str,
    name: &str,
    known: impl ExactSizeIterator<Item = &'a String>,
) -> Diagnostic {
    // A hint costs one string comparison per declared name; past a few hundred names
    // (far beyond one host's stack) thousands of dangling references would make
    // loading quadratic, so the hint is skipped.
    let hint = if known.len() <= MAX_HINT_CANDIDATES {
        did_you_mean(name, known.map(String::as_str))
            .map(|h| format!(" (did you mean `{h}`?)"))
            .unwrap_or_default()
    } else {
        String::new()
    };
    err_at(
        src,
        path,
        format!("refers to {kind} `{name}`, which is not declared{hint}"),
    )
}

/// Checks an image reference: `name[:tag][@sha256:<64 hex>]`.
pub fn check_image(image: &str) -> Result<(), String> {
    if image.is_empty() || image.chars().any(|c| c.is_whitespace()) {
        return Err(format!("invalid image reference `{image}`"));
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let ok = d
            .strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ok {
            return Err(format!(
                "invalid digest in `{image}`: expected `@sha256:` and 64 hex digits"
            ));
        }
    }
    // The tag is what follows the last `:` after the last `/` (a `:` before a `/` is
    // a registry port). Only the tag may hold capitals; repository paths are lowercase.
    let (repo, tag) = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => (&name[..i], Some(&name[i + 1..])),
        _ => (name, None),
    };
    let bad = || Err(format!("invalid image reference `{image}`"));
    if let Some(tag) = tag {
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && !tag.starts_with(['.', '-'])
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return bad();
        }
    }
    let mut parts: Vec<&str> = repo.split('/').collect();
    let first = parts[0];
    if parts.len() > 1 && (first.contains(['.', ':']) || first == "localhost") {
        // Registry host[:port].
        let (host, port) = first.split_once(':').unwrap_or((first, "1"));
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
            || port.is_empty()
            || !port.bytes().all(|b| b.is_ascii_digit())
        {
            return bad();
        }
        parts.remove(0);
    }
    for part in parts {
        let ok = part
            .as_bytes()
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && part.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            });
        if !ok {
            return bad();
        }
    }
    Ok(())
}

/// Reports each dependency cycle once, at the service that closes it.
fn cycles(s: &DesiredState, d: &mut Vec<Diagnostic>) {
    let graph: BTreeMap<&str, Vec<&str>> = s
        .services
        .iter()
        .map(|(n, r)| {
            (
                n.as_str(),
                r.spec
                    .depends_on
                    .iter()
                    .map(|x| x.service.as_str())
                    .filter(|x| s.services.contains_key(*x) && *x != n.as_str())
                    .collect(),
            )
        })
        .collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut mark: BTreeMap<&str, Mark> = graph.keys().map(|k| (*k, Mark::New)).collect();
    for start in graph.keys() {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative DFS with an explicit path.
        let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
        mark.insert(start, Mark::Active);
        while let Some((node, idx)) = stack.pop() {
            let deps = &graph[node];
            if idx < deps.len() {
                stack.push((node, idx + 1));
                let next = deps[idx];
                match mark[next] {
                    Mark::New => {
                        mark.insert(next, Mark::Active);
                        stack.push((next, 0));
                    }
                    Mark::Active => {
                        let mut cycle: Vec<&str> = stack.iter().map(|(n, _)| *n).collect();
                        let from = cycle.iter().position(|n| *n == next).unwrap_or(0);
                        cycle = cycle[from..].to_vec();
                        cycle.push(next);
                        let r = &s.services[node];
                        let i = r
                            .spec
                            .depends_on
                            .iter()
                            .position(|x| x.service == next)
                            .unwrap_or(0);
                        d.push(err_at(
                            &r.source,
                            &[k("spec"), k("dependsOn"), PathSeg::Index(i), k("service")],
                            format!("dependency cycle: {}", cycle.join(" → ")),
                        ));
                    }
                    Mark::Done => {}
                }
            } else {
                mark.insert(node, Mark::Done);
            }
        }
    }
}

/// Services in dependency order (dependencies first); ties broken by name.
pub fn topo_order(s: &DesiredState) -> Vec<String> {
    let mut out = Vec::new();
    let mut done = std::collections::BTreeSet::new();
    let mut remaining: Vec<&String> = s.services.keys().collect();
    while !remaining.is_empty() {
        let before = remaining.len();
        remaining.retain(|n| {
            let ready =
                s.services[*n].spec.depends_on.iter().all(|dep| {
                    done.contains(&dep.service) || !s.services.contains_key(&dep.service)
                });
            if ready {
                out.push((*n).clone());
                done.insert((*n).clone());
            }
            !ready
        });
        if remaining.len() == before {
            // Cycle (validation rejects it); keep the rest in name order.
            out.extend(remaining.drain(..).cloned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("node-exporter"));
        assert!(!valid_name("Node"));
        assert!(!valid_name("-a"));
        assert!(!valid_name(&"a".repeat(64)));
    }

    #[test]
    fn images() {
        assert!(check_image("caddy:2.8-alpine").is_ok());
        assert!(check_image("gcr.io/cadvisor/cadvisor:v0.49.1").is_ok());
        assert!(check_image("127.0.0.1:5000/x:1").is_ok());
        assert!(check_image(&format!("prom/prometheus@sha256:{}", "a".repeat(64))).is_ok());
        assert!(check_image("prom/prometheus@sha256:abc").is_err());
        assert!(check_image("bad image").is_err());
        assert!(check_image("x:").is_err());
        assert!(check_image("grafana/grafana:11.2.0-RC1").is_ok());
        assert!(check_image("localhost:5000/obs/tool").is_ok());
        assert!(check_image("Grafana/Grafana:11.2.0").is_err());
        assert!(check_image("Grafana").is_err());
        assert!(check_image(":latest").is_err());
        assert!(check_image("grafana//grafana").is_err());
        assert!(check_image("/grafana").is_err());
        assert!(check_image("grafana:1:2").is_err());
    }
}
