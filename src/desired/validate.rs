//! Cross-resource validation of a loaded desired state: names, references, cycles,
//! port clashes, schedules. Pure: it only reads the state and appends diagnostics.

use crate::desired::diag::{did_you_mean, Diagnostic};
use crate::desired::diag::{err_at, k, keys};
use crate::desired::env::valid_env_name;
use crate::desired::model::service::{
    parse_memory, DependencyCondition, OnChange, MIN_IMAGE_CHECK_INTERVAL,
};
use crate::desired::model::Kind;
use crate::desired::model::ServiceSpec;
use crate::desired::names::{check_image, valid_docker_object_name, valid_name};
use crate::desired::yaml::PathSeg;
use crate::desired::yaml::Pos;
use crate::desired::{DesiredState, Resource, Source};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

/// Documents that failed to load (kind, name): already reported, so a reference to one
/// is not also an "undeclared" error.
pub type FailedDocs = BTreeSet<(Kind, String)>;

/// Docker's smallest memory limit.
const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// Most per-key errors reported for one Service's `env` and `secretEnv`.
const MAX_KEY_ERRORS: usize = 20;

/// Most declared names searched for a "did you mean" hint on a dangling reference.
const MAX_HINT_CANDIDATES: usize = 500;

const SIGNALS: &[&str] = &[
    "SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGTERM", "SIGKILL", "SIGWINCH",
];

/// Checks everything one document cannot check alone, appending every finding to `d`.
/// `failed` lists the documents that did not load: references to them are not reported
/// again.
pub fn validate(s: &DesiredState, failed: &FailedDocs, d: &mut Vec<Diagnostic>) {
    run(s, failed, false, d);
}

/// [`validate`] for a directory without a Stack document (already an error): `s.stack`
/// is a placeholder, so the Stack's own checks and every check that depends on a Stack
/// field (default network, textfile directory) are skipped; everything else is still
/// reported, so one load shows every error.
pub fn validate_without_stack(s: &DesiredState, failed: &FailedDocs, d: &mut Vec<Diagnostic>) {
    run(s, failed, true, d);
}

fn run(s: &DesiredState, failed: &FailedDocs, stackless: bool, d: &mut Vec<Diagnostic>) {
    let mut v = Validator {
        s,
        failed,
        stackless,
        d,
    };
    if !stackless {
        v.stack();
    }
    v.names();
    let mut ports = HostPorts::new();
    for (name, r) in &s.services {
        v.service(name, r, &mut ports);
    }
    v.cycles();
    v.jobs();
}

/// Published host ports so far: (port, protocol, host ip) → (service, file, position).
type HostPorts = HashMap<(u16, &'static str, String), (String, PathBuf, Pos)>;

/// One validation run: the state it reads and the findings it appends.
struct Validator<'a> {
    s: &'a DesiredState,
    failed: &'a FailedDocs,
    /// `s.stack` is a placeholder (no Stack document): skip what depends on it.
    stackless: bool,
    d: &'a mut Vec<Diagnostic>,
}

fn bad_name(n: &str) -> String {
    format!("invalid name `{n}`: use a DNS label (lowercase letters, digits, `-`; at most 63 characters)")
}

fn path(base: &[PathSeg], rest: &[&str]) -> Vec<PathSeg> {
    base.iter()
        .cloned()
        .chain(rest.iter().map(|r| k(r)))
        .collect()
}

impl Validator<'_> {
    fn err(&mut self, src: &Source, path: &[PathSeg], msg: impl Into<String>) {
        self.d.push(err_at(src, path, msg));
    }

    /// A reference to a `kind` resource named `name`: an error unless it is declared
    /// (or its document failed to load, which was reported already).
    fn reference(&mut self, src: &Source, path: &[PathSeg], kind: Kind, name: &str) {
        let s = self.s;
        let declared = match kind {
            Kind::Service => s.services.contains_key(name),
            Kind::Volume => s.volumes.contains_key(name),
            Kind::Network => s.networks.contains_key(name),
            Kind::Job => s.jobs.contains_key(name),
            Kind::Stack => true,
        };
        if declared || self.failed.contains(&(kind, name.to_string())) {
            return;
        }
        let hint = match kind {
            Kind::Service => hint(name, s.services.keys()),
            Kind::Volume => hint(name, s.volumes.keys()),
            Kind::Network => hint(name, s.networks.keys()),
            Kind::Job => hint(name, s.jobs.keys()),
            Kind::Stack => String::new(),
        };
        self.err(
            src,
            path,
            format!("refers to {kind} `{name}`, which is not declared{hint}"),
        );
    }

    fn absolute(&mut self, src: &Source, path: &[PathSeg], p: &str) {
        if !p.starts_with('/') {
            self.err(src, path, format!("`{p}` must be an absolute path"));
        }
    }

    fn stack(&mut self) {
        let stack = &self.s.stack;
        let src = &stack.source;
        if !valid_name(&stack.name) {
            self.err(src, &keys(&["metadata", "name"]), bad_name(&stack.name));
        }
        let p = &stack.spec.project;
        if p.is_empty()
            || !p
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            || !p.as_bytes()[0].is_ascii_alphanumeric()
        {
            self.err(
                src,
                &keys(&["spec", "project"]),
                format!("invalid project `{p}`: lowercase letters, digits, `-` and `_`, starting with a letter or digit"),
            );
        }
        if stack.spec.concurrency == 0 || stack.spec.concurrency > 64 {
            self.err(
                src,
                &keys(&["spec", "concurrency"]),
                "concurrency must be between 1 and 64",
            );
        }
        if let Some(net) = &stack.spec.default_network {
            self.reference(src, &keys(&["spec", "defaultNetwork"]), Kind::Network, net);
        }
        if let Some(a) = &stack.spec.alerting {
            for (field, v) in [
                ("alertmanagerUrlEnv", &a.alertmanager_url_env),
                ("deadManUrlEnv", &a.dead_man_url_env),
            ] {
                if let Some(v) = v.as_ref().filter(|v| !valid_env_name(v)) {
                    self.err(
                        src,
                        &keys(&["spec", "alerting", field]),
                        format!("`{v}` is not a valid variable name"),
                    );
                }
            }
        }
    }

    /// Names of volumes, networks and jobs (services are checked with the rest of
    /// their spec). Volumes and networks may also carry Docker-style names (`a_b`).
    fn names(&mut self) {
        let s = self.s;
        let name_path = keys(&["metadata", "name"]);
        let infra = s
            .volumes
            .iter()
            .map(|(n, r)| (n, &r.source))
            .chain(s.networks.iter().map(|(n, r)| (n, &r.source)));
        for (name, src) in infra {
            if !valid_name(name) && !valid_docker_object_name(name) {
                self.err(src, &name_path, bad_name(name));
            }
        }
        for (name, r) in &s.jobs {
            if !valid_name(name) {
                self.err(&r.source, &name_path, bad_name(name));
            }
        }
    }

    fn service(&mut self, name: &str, r: &Resource<ServiceSpec>, ports: &mut HostPorts) {
        let src = &r.source;
        let spec = &r.spec;
        if !valid_name(name) {
            self.err(src, &keys(&["metadata", "name"]), bad_name(name));
        }
        if let Err(msg) = check_image(&spec.image) {
            self.err(src, &keys(&["spec", "image"]), msg);
        }
        self.service_mounts(src, spec);
        self.service_references(name, src, spec);
        self.service_ports(name, src, spec, ports);
        self.service_env(src, spec);
        self.service_runtime(src, spec);
        self.service_update(src, spec);
    }

    /// `update.order: start-first` runs two copies at once: not with a published host
    /// port (the second cannot bind it) nor a writable named volume (two writers).
    fn service_update(&mut self, src: &Source, spec: &ServiceSpec) {
        self.service_image_updates(src, spec);
        if !spec.start_first() {
            return;
        }
        let at = keys(&["spec", "update", "order"]);
        if !spec.ports.is_empty() {
            self.err(
                src,
                &at,
                format!(
                    "start-first runs the new container beside the old one, which cannot bind the published host port {} twice; use stop-first (the default) or drop `ports`",
                    spec.ports[0].host
                ),
            );
        }
        if let Some(v) = spec.volumes.iter().find(|v| !v.read_only) {
            self.err(
                src,
                &at,
                format!(
                    "start-first would run two copies writing to volume `{}` at once; mount it `readOnly: true` or use stop-first (the default)",
                    v.volume
                ),
            );
        }
    }

    /// `update.image`: only a tag can move, and the registry is asked at most every
    /// minute.
    fn service_image_updates(&mut self, src: &Source, spec: &ServiceSpec) {
        let Some(iu) = spec.image_updates() else {
            return;
        };
        if spec.image.contains('@') {
            self.err(
                src,
                &keys(&["spec", "update", "image"]),
                format!(
                    "image `{}` is pinned by digest and can never move; drop the `@sha256:` part to follow its tag, or drop `update.image`",
                    spec.image
                ),
            );
        }
        if let Some(d) = &iu.check_interval {
            if d.0 < MIN_IMAGE_CHECK_INTERVAL {
                self.err(
                    src,
                    &keys(&["spec", "update", "image", "checkInterval"]),
                    format!(
                        "checkInterval {} is too short: registries rate-limit; use at least {}s",
                        humantime::format_duration(d.0),
                        MIN_IMAGE_CHECK_INTERVAL.as_secs()
                    ),
                );
            }
        }
    }

    /// Volumes, bind mounts and config files: declared, absolute, valid options.
    fn service_mounts(&mut self, src: &Source, spec: &ServiceSpec) {
        for (i, v) in spec.volumes.iter().enumerate() {
            let base = [k("spec"), k("volumes"), PathSeg::Index(i)];
            self.reference(src, &path(&base, &["volume"]), Kind::Volume, &v.volume);
            self.absolute(src, &path(&base, &["target"]), &v.target);
        }
        for (i, b) in spec.binds.iter().enumerate() {
            let base = [k("spec"), k("binds"), PathSeg::Index(i)];
            self.absolute(src, &path(&base, &["source"]), &b.source);
            self.absolute(src, &path(&base, &["target"]), &b.target);
            if let Some(p) = &b.propagation {
                const PROPAGATION: [&str; 6] = [
                    "private", "rprivate", "shared", "rshared", "slave", "rslave",
                ];
                if !PROPAGATION.contains(&p.as_str()) {
                    self.err(
                        src,
                        &path(&base, &["propagation"]),
                        format!("invalid propagation `{p}`"),
                    );
                }
            }
        }
        for (i, c) in spec.config_files.iter().enumerate() {
            let base = [k("spec"), k("configFiles"), PathSeg::Index(i)];
            self.absolute(src, &path(&base, &["target"]), &c.target);
            if let OnChange::Signal(sig) = &c.on_change {
                if !SIGNALS.contains(&sig.as_str()) {
                    self.err(
                        src,
                        &path(&base, &["onChange", "signal"]),
                        format!("unknown signal `{sig}`; one of {}", SIGNALS.join(", ")),
                    );
                }
            }
            match &c.on_change {
                OnChange::Exec(cmd) if cmd.is_empty() => self.err(
                    src,
                    &path(&base, &["onChange", "exec"]),
                    "an exec reload needs a command".to_string(),
                ),
                OnChange::Http(h) if !h.path.starts_with('/') => self.err(
                    src,
                    &path(&base, &["onChange", "http", "path"]),
                    format!("`{}` must start with `/`", h.path),
                ),
                OnChange::Http(h) if !["GET", "POST", "PUT"].contains(&h.method.as_str()) => self
                    .err(
                        src,
                        &path(&base, &["onChange", "http", "method"]),
                        format!("method `{}`: one of GET, POST, PUT", h.method),
                    ),
                _ => {}
            }
        }
    }

    /// Networks and dependencies: declared, no self-dependency, `healthy` only on a
    /// service that has a healthcheck.
    fn service_references(&mut self, name: &str, src: &Source, spec: &ServiceSpec) {
        let s = self.s;
        if !self.stackless && s.service_networks(spec).is_empty() {
            self.err(
                src,
                &keys(&["spec", "networks"]),
                "no network: list one here or set the Stack's defaultNetwork",
            );
        }
        for (i, n) in spec.networks.iter().enumerate() {
            self.reference(
                src,
                &[k("spec"), k("networks"), PathSeg::Index(i)],
                Kind::Network,
                n,
            );
        }
        for (i, dep) in spec.depends_on.iter().enumerate() {
            let base = [k("spec"), k("dependsOn"), PathSeg::Index(i)];
            match s.services.get(&dep.service) {
                None => {
                    self.reference(src, &path(&base, &["service"]), Kind::Service, &dep.service)
                }
                Some(_) if dep.service == name => self.err(
                    src,
                    &path(&base, &["service"]),
                    "a service cannot depend on itself",
                ),
                Some(other)
                    if dep.condition == DependencyCondition::Healthy
                        && other.spec.healthcheck.is_none() =>
                {
                    self.err(
                        src,
                        &path(&base, &["condition"]),
                        format!(
                            "waits for `{}` to be healthy, but `{}` has no healthcheck",
                            dep.service, dep.service
                        ),
                    )
                }
                Some(_) => {}
            }
        }
    }

    /// Published ports: in range, and each host port published once.
    fn service_ports(
        &mut self,
        name: &str,
        src: &Source,
        spec: &ServiceSpec,
        ports: &mut HostPorts,
    ) {
        for (i, p) in spec.ports.iter().enumerate() {
            let path = [k("spec"), k("ports"), PathSeg::Index(i), k("host")];
            if p.host == 0 || p.container == 0 {
                self.err(src, &path, "ports must be between 1 and 65535");
                continue;
            }
            let key = (
                p.host,
                p.protocol.as_str(),
                p.host_ip.clone().unwrap_or_default(),
            );
            if let Some((other, f, op)) = ports.get(&key) {
                let msg = format!(
                    "host port {}/{} is already published by service `{other}` ({}:{})",
                    p.host,
                    p.protocol.as_str(),
                    f.display(),
                    op
                );
                self.err(src, &path, msg);
            } else {
                ports.insert(key, (name.to_string(), src.file.clone(), src.pos(&path)));
            }
        }
    }

    /// `env` and `secretEnv` keys. Per-key errors are capped: each one costs a lookup in
    /// the (possibly huge) mapping, and a thousand copies of one mistake help nobody.
    fn service_env(&mut self, src: &Source, spec: &ServiceSpec) {
        let s = self.s;
        let mut total = 0usize;
        let mut found: Vec<(Vec<PathSeg>, String)> = Vec::new();
        let mut note = |path: Vec<PathSeg>, msg: String| {
            total += 1;
            if found.len() < MAX_KEY_ERRORS {
                found.push((path, msg));
            }
        };
        for key in spec.env.keys().filter(|k| !valid_env_name(k)) {
            note(
                vec![k("spec"), k("env"), k(key)],
                format!("`{key}` is not a valid environment variable name"),
            );
        }
        for (key, var) in &spec.secret_env {
            let path = || vec![k("spec"), k("secretEnv"), k(key)];
            if !valid_env_name(key) || !valid_env_name(var) {
                note(
                    path(),
                    format!("`{key}: {var}`: both must be valid variable names"),
                );
            }
            if spec.env.contains_key(key) {
                note(path(), format!("`{key}` is set in both env and secretEnv"));
            }
            if s.env.present && s.env.get(var).is_none() {
                let file = s
                    .env
                    .path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                note(path(), format!("`{var}` is not set in the env file {file}"));
            }
        }
        for (path, msg) in found {
            self.err(src, &path, msg);
        }
        if total > MAX_KEY_ERRORS {
            self.err(
                src,
                &keys(&["spec"]),
                format!(
                    "{} more errors in env and secretEnv not shown",
                    total - MAX_KEY_ERRORS
                ),
            );
        }
    }

    /// Resources, pid mode, stop signal, extra hosts, healthcheck.
    fn service_runtime(&mut self, src: &Source, spec: &ServiceSpec) {
        if let Some(res) = &spec.resources {
            match res.memory.as_ref().map(|m| (m, parse_memory(m))) {
                Some((m, None)) => self.err(
                    src,
                    &keys(&["spec", "resources", "memory"]),
                    format!("invalid memory `{m}`; write e.g. `512m` or `2g`"),
                ),
                // Docker reads 0 as "no limit" and refuses less than 6 MiB.
                Some((m, Some(bytes))) if bytes < MIN_MEMORY => self.err(
                    src,
                    &keys(&["spec", "resources", "memory"]),
                    if bytes == 0 {
                        format!("memory `{m}` would mean no limit at all to Docker; omit the field for that, or give at least 6m")
                    } else {
                        format!("memory `{m}` is below Docker's minimum of 6m")
                    },
                ),
                _ => {}
            }
            // Docker's range is 0.01 cores up; less becomes 0 nano-CPUs, i.e. no limit.
            if res
                .cpus
                .is_some_and(|c| !(c.is_finite() && (0.01..=1024.0).contains(&c)))
            {
                self.err(
                    src,
                    &keys(&["spec", "resources", "cpus"]),
                    "cpus must be a number of cores between 0.01 and 1024",
                );
            }
            // Docker stores 0 and negative limits as "no limit".
            if let Some(n) = res.pids_limit.filter(|n| *n < 1) {
                self.err(
                    src,
                    &keys(&["spec", "resources", "pidsLimit"]),
                    format!("pidsLimit must be at least 1 (Docker would store {n} as no limit at all; omit the field for that)"),
                );
            }
        }
        for (i, port) in spec.expose.iter().enumerate() {
            if *port == 0 {
                self.err(
                    src,
                    &[k("spec"), k("expose"), PathSeg::Index(i)],
                    "ports must be between 1 and 65535",
                );
            }
        }
        if let Some(g) = spec.stop_grace_period {
            if g.0.subsec_nanos() != 0 {
                self.err(
                    src,
                    &keys(&["spec", "stopGracePeriod"]),
                    format!(
                        "Docker counts the stop timeout in whole seconds; `{}` would be cut to {}s",
                        humantime::format_duration(g.0),
                        g.0.as_secs()
                    ),
                );
            }
        }
        if let Some(pid) = &spec.pid {
            if pid != "host" && !pid.starts_with("container:") {
                self.err(
                    src,
                    &keys(&["spec", "pid"]),
                    format!("invalid pid mode `{pid}`; use `host`"),
                );
            }
        }
        if let Some(sig) = spec
            .stop_signal
            .as_ref()
            .filter(|s| !SIGNALS.contains(&s.as_str()))
        {
            self.err(
                src,
                &keys(&["spec", "stopSignal"]),
                format!("unknown signal `{sig}`"),
            );
        }
        for (i, h) in spec.extra_hosts.iter().enumerate() {
            if h.split_once(':')
                .is_none_or(|(a, b)| a.is_empty() || b.is_empty())
            {
                self.err(
                    src,
                    &[k("spec"), k("extraHosts"), PathSeg::Index(i)],
                    format!("`{h}` must be `name:ip`"),
                );
            }
        }
        if let Some(hc) = &spec.healthcheck {
            let ok = matches!(
                hc.test.first().map(String::as_str),
                Some("CMD" | "CMD-SHELL" | "NONE")
            );
            if !ok {
                self.err(
                    src,
                    &keys(&["spec", "healthcheck", "test"]),
                    "test must start with CMD, CMD-SHELL or NONE",
                );
            }
            // Docker reads 0 as "use the default" (30s, 30s, 3 retries) and refuses
            // durations under 1ms.
            for (field, d) in [("interval", hc.interval), ("timeout", hc.timeout)] {
                if d.is_some_and(|d| d.0 < std::time::Duration::from_millis(1)) {
                    self.err(
                        src,
                        &keys(&["spec", "healthcheck", field]),
                        format!("{field} must be at least 1ms (Docker would read 0 as its default of 30s)"),
                    );
                }
            }
            if hc
                .start_period
                .is_some_and(|d| !d.0.is_zero() && d.0 < std::time::Duration::from_millis(1))
            {
                self.err(
                    src,
                    &keys(&["spec", "healthcheck", "startPeriod"]),
                    "startPeriod must be 0 or at least 1ms",
                );
            }
            if hc.retries == Some(0) {
                self.err(
                    src,
                    &keys(&["spec", "healthcheck", "retries"]),
                    "retries must be at least 1 (Docker would read 0 as its default of 3)",
                );
            }
        }
    }

    /// Every job: schedule, timeout, exactly one body, the body's own rules, and one
    /// writer per textfile (node-exporter rejects a series found in two files).
    fn jobs(&mut self) {
        let s = self.s;
        let mut textfile_owner: HashMap<&str, &str> = HashMap::new();
        let mut cloud_pollers = 0;
        for (job_name, r) in &s.jobs {
            let src = &r.source;
            let spec = &r.spec;
            if let Err(msg) = crate::desired::schedule::Schedule::parse(&spec.schedule) {
                self.err(src, &keys(&["spec", "schedule"]), msg);
            }
            if spec.timeout.0.is_zero() {
                self.err(
                    src,
                    &keys(&["spec", "timeout"]),
                    "timeout must be longer than 0s",
                );
            }
            let bodies = spec.bodies();
            if bodies.len() != 1 {
                self.err(
                    src,
                    &keys(&["spec"]),
                    format!(
                        "a Job needs exactly one body (cloudPoller, backup, selfHeal, dockerNames, statusPage, logsShipper, awsCronMonitor); found {}",
                        if bodies.is_empty() { "none".to_string() } else { bodies.join(", ") }
                    ),
                );
            }
            if spec.cloud_poller.is_some() {
                cloud_pollers += 1;
                if cloud_pollers > 1 {
                    self.err(
                        src,
                        &keys(&["spec", "cloudPoller"]),
                        "only one cloudPoller job is allowed (its unlabelled cf_scrape_up/stripe_scrape_up series would clash)",
                    );
                }
            }
            if let Some(b) = &spec.backup {
                for (i, v) in b.volumes.iter().enumerate() {
                    self.reference(
                        src,
                        &[k("spec"), k("backup"), k("volumes"), PathSeg::Index(i)],
                        Kind::Volume,
                        v,
                    );
                }
                if let Some(r) = &b.age_recipient {
                    if let Err(e) = r.parse::<age::x25519::Recipient>() {
                        self.err(
                            src,
                            &keys(&["spec", "backup", "ageRecipient"]),
                            format!("not an age X25519 recipient (`age1…`): {e}"),
                        );
                    } else if b.drill {
                        self.err(
                            src,
                            &keys(&["spec", "backup", "drill"]),
                            "the drill cannot read encrypted backups: the age identity never lives on the host",
                        );
                    }
                }
                for v in b.quiesce.keys() {
                    if !b.volumes.contains(v) {
                        self.err(
                            src,
                            &[k("spec"), k("backup"), k("quiesce"), k(v)],
                            format!("`{v}` is not one of spec.backup.volumes"),
                        );
                    }
                }
                for (path, msg) in b.sources.iter().flat_map(|s| s.problems()) {
                    let mut at = keys(&["spec", "backup", "sources"]);
                    at.extend(path.iter().map(|p| k(p)));
                    self.err(src, &at, msg);
                }
                if b.lock_retention_days >= b.keep_daily {
                    self.err(
                        src,
                        &keys(&["spec", "backup", "lockRetentionDays"]),
                        "must be below keepDaily, or pruning could never delete anything",
                    );
                }
            }
            crate::desired::validate_aws::validate_job(r, self.d);
            if let Some(sp) = &spec.status_page {
                if !(sp.slo_target > 0.0 && sp.slo_target < 1.0) {
                    self.err(
                        src,
                        &keys(&["spec", "statusPage", "sloTarget"]),
                        "sloTarget is a fraction between 0 and 1, e.g. 0.999",
                    );
                }
            }
            for (body, tf) in spec.textfiles() {
                let at = keys(&["spec", body, "textfile"]);
                if let Some(other) = textfile_owner.insert(tf, job_name) {
                    self.err(
                        src,
                        &at,
                        format!("`{tf}` is also written by job `{other}`; each job needs its own textfile"),
                    );
                }
                if !tf.ends_with(".prom") || tf.contains('/') {
                    self.err(
                        src,
                        &at,
                        format!("`{tf}` must be a plain file name ending in `.prom`"),
                    );
                } else if !self.stackless && s.stack.spec.textfile_dir.is_none() {
                    self.err(src, &at, "the Stack sets no textfileDir to write it to");
                }
            }
        }
    }

    /// Reports each dependency cycle once, at the service that closes it.
    fn cycles(&mut self) {
        let s = self.s;
        for (node, next, cycle) in dependency_cycles(s) {
            let r = &s.services[node];
            let i = r
                .spec
                .depends_on
                .iter()
                .position(|x| x.service == next)
                .unwrap_or(0);
            self.err(
                &r.source,
                &[k("spec"), k("dependsOn"), PathSeg::Index(i), k("service")],
                format!("dependency cycle: {}", cycle.join(" → ")),
            );
        }
    }
}

/// " (did you mean `x`?)" when a declared name is close. A hint costs one string
/// comparison per declared name; past a few hundred names (far beyond one host's stack)
/// thousands of dangling references would make loading quadratic, so it is skipped.
fn hint<'a>(name: &str, known: impl ExactSizeIterator<Item = &'a String>) -> String {
    if known.len() > MAX_HINT_CANDIDATES {
        return String::new();
    }
    did_you_mean(name, known.map(String::as_str))
        .map(|h| format!(" (did you mean `{h}`?)"))
        .unwrap_or_default()
}

/// Every dependency cycle once, as (the service that closes it, the service it
/// depends on there, the cycle's path).
fn dependency_cycles(s: &DesiredState) -> Vec<(&str, &str, Vec<&str>)> {
    let mut found = Vec::new();
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
                        found.push((node, next, cycle));
                    }
                    Mark::Done => {}
                }
            } else {
                mark.insert(node, Mark::Done);
            }
        }
    }
    found
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
