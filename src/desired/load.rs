//! Loading a desired-state directory: files → positioned YAML → `${VAR}` interpolation →
//! typed documents → semantic validation → [`DesiredState`].
//!
//! Loading is all-or-nothing: it returns either a complete, valid `DesiredState` or every
//! error found (not only the first), each located at `file:line:column` + field path.
//! Nothing here talks to Docker, so a bad edit can never disturb what is running.

use crate::desired::diag::{did_you_mean, Diagnostic};
use crate::desired::model::{self, Document, Kind, NetworkSpec, StackSpec, VolumeSpec};
use crate::desired::model::{JobSpec, ServiceSpec};
use crate::desired::yaml::{self, Limits, Node, PathSeg, Pos};
use crate::secret::Secret;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Most documents files accepted in one directory (hostile-input bound).
const MAX_FILES: usize = 1000;

/// Most bytes of YAML read from one directory (hostile-input bound; the real stack is
/// well under 100 KiB).
const MAX_TOTAL_BYTES: usize = 16 * 1024 * 1024;

/// Most diagnostics reported from one load; the rest are summarised in one line.
const MAX_DIAGNOSTICS: usize = 500;

/// Where a resource was declared; used to locate errors found after loading.
#[derive(Debug, Clone)]
pub struct Source {
    pub file: PathBuf,
    /// The document's tree, for looking up positions of fields by path.
    pub root: Node,
    /// `${VAR}`s left unexpanded because the env file is missing.
    pub unresolved: Vec<String>,
}

impl Source {
    pub fn pos(&self, path: &[PathSeg]) -> Pos {
        self.root.locate(path)
    }
}

/// A resource with its metadata and where it came from.
#[derive(Debug, Clone)]
pub struct Resource<S> {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub spec: S,
    pub source: Source,
}

/// Values from the env file (secret by default: any of them may be a credential).
#[derive(Debug, Clone, Default)]
pub struct EnvFile {
    pub path: Option<PathBuf>,
    /// False when the configured file does not exist (a warning at load; every secret
    /// lookup then fails for the service that needs it).
    pub present: bool,
    pub values: BTreeMap<String, Secret>,
}

impl EnvFile {
    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.values.get(name)
    }
}

/// A complete, validated desired state.
#[derive(Debug, Clone)]
pub struct DesiredState {
    pub dir: PathBuf,
    pub stack: Resource<StackSpec>,
    pub services: BTreeMap<String, Resource<ServiceSpec>>,
    pub volumes: BTreeMap<String, Resource<VolumeSpec>>,
    pub networks: BTreeMap<String, Resource<NetworkSpec>>,
    pub jobs: BTreeMap<String, Resource<JobSpec>>,
    pub env: EnvFile,
    /// Per service, the content hash of each `configFiles` entry (same order).
    pub config_hashes: BTreeMap<String, Vec<String>>,
    /// Per service, whether each `configFiles` source is a single file (not a directory).
    pub config_single_file: BTreeMap<String, Vec<bool>>,
    /// Non-fatal findings (e.g. env file missing).
    pub warnings: Vec<Diagnostic>,
    /// SHA-256 over every loaded byte (documents, config files, env file); changes
    /// whenever anything that could change the plan changes.
    pub digest: String,
}

impl DesiredState {
    pub fn project(&self) -> &str {
        &self.stack.spec.project
    }

    /// Docker name of a `Volume` resource.
    pub fn volume_docker_name(&self, name: &str) -> String {
        self.volumes
            .get(name)
            .and_then(|v| v.spec.name.clone())
            .unwrap_or_else(|| format!("{}_{}", self.project(), name))
    }

    /// Docker name of a `Network` resource.
    pub fn network_docker_name(&self, name: &str) -> String {
        self.networks
            .get(name)
            .and_then(|v| v.spec.name.clone())
            .unwrap_or_else(|| format!("{}_{}", self.project(), name))
    }

    /// Container name of a `Service`.
    pub fn container_name(&self, service: &str) -> String {
        format!("{}-{}", self.project(), service)
    }

    /// Networks a service joins, after applying the Stack default.
    pub fn service_networks(&self, svc: &ServiceSpec) -> Vec<String> {
        if svc.networks.is_empty() {
            self.stack.spec.default_network.iter().cloned().collect()
        } else {
            svc.networks.clone()
        }
    }
}

/// Every problem found; loading failed.
#[derive(Debug, Clone)]
pub struct LoadErrors(pub Vec<Diagnostic>);

impl std::fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.iter().filter(|d| d.is_error()).count();
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        write!(f, "{n} error(s)")
    }
}

impl std::error::Error for LoadErrors {}

/// Options for [`load_dir`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Variables that take precedence over the env file (normally the process
    /// environment); `None` means use `std::env::vars()`.
    pub process_env: Option<BTreeMap<String, String>>,
    pub limits: Option<Limits>,
    /// Use this env file instead of the Stack's `envFile`.
    pub env_file: Option<PathBuf>,
}

struct RawDoc {
    file: PathBuf,
    doc_pos: Pos,
    root: Node,
    kind: Kind,
}

/// Loads and validates a desired-state directory.
pub fn load_dir(dir: &Path, opts: &LoadOptions) -> Result<DesiredState, LoadErrors> {
    let limits = opts.limits.unwrap_or_default();
    // Absolute, so config-file bind mounts name the same host path from anywhere.
    let canonical = dir.canonicalize();
    let dir = canonical.as_deref().unwrap_or(dir);
    let mut diags: Vec<Diagnostic> = Vec::new();
    let mut hasher = Sha256::new();

    let files = match list_files(dir) {
        Ok(f) => f,
        Err(e) => {
            return Err(LoadErrors(vec![Diagnostic::error(
                dir,
                Pos { line: 0, col: 0 },
                "",
                e,
            )]))
        }
    };

    // 1. Parse every file into positioned documents.
    let mut raw: Vec<RawDoc> = Vec::new();
    let mut total = 0usize;
    for file in &files {
        let text = match read_bounded(file, limits.max_bytes) {
            Ok(t) => t,
            Err(msg) => {
                diags.push(Diagnostic::error(file, Pos { line: 1, col: 1 }, "", msg));
                continue;
            }
        };
        total += text.len();
        if total > MAX_TOTAL_BYTES {
            diags.push(Diagnostic::error(
                file,
                Pos { line: 1, col: 1 },
                "",
                format!("the directory holds more than {MAX_TOTAL_BYTES} bytes of YAML; refusing to read further"),
            ));
            break;
        }
        hasher.update(file.to_string_lossy().as_bytes());
        hasher.update(text.as_bytes());
        let docs = match yaml::parse(&text, limits) {
            Ok(d) => d,
            Err(e) => {
                diags.push(Diagnostic::error(file, e.pos, "", e.message));
                continue;
            }
        };
        for d in docs {
            if let Some(kind) = check_envelope(file, &d.root, &mut diags) {
                raw.push(RawDoc {
                    file: file.clone(),
                    doc_pos: d.pos,
                    root: d.root,
                    kind,
                });
            }
        }
    }

    // 2. The Stack first: it names the env file used for interpolation.
    let stacks: Vec<usize> = (0..raw.len())
        .filter(|i| raw[*i].kind == Kind::Stack)
        .collect();
    if stacks.is_empty() && diags.iter().all(|d| !d.is_error()) {
        diags.push(Diagnostic::error(
            dir,
            Pos { line: 0, col: 0 },
            "",
            "no `kind: Stack` document found; exactly one is required",
        ));
    }
    for extra in stacks.iter().skip(1) {
        let r = &raw[*extra];
        diags.push(Diagnostic::error(
            &r.file,
            r.root.locate(&keys(&["kind"])),
            "kind",
            format!(
                "a second Stack document; exactly one is allowed (first in {})",
                raw[stacks[0]].file.display()
            ),
        ));
    }
    let process_env: BTreeMap<String, String> = match &opts.process_env {
        Some(m) => m.clone(),
        None => std::env::vars().collect(),
    };
    let mut env = EnvFile::default();
    if let Some(&si) = stacks.first() {
        let r = &raw[si];
        let configured = r
            .root
            .get("spec")
            .and_then(|s| s.get("envFile"))
            .and_then(Node::as_str);
        let chosen = opts
            .env_file
            .clone()
            .or_else(|| configured.map(|ef| resolve_path(dir, ef)));
        if let Some(path) = chosen {
            let pos = r.root.locate(&keys(&["spec", "envFile"]));
            match read_env_file(&path) {
                Ok(Some(values)) => {
                    for (k, v) in &values {
                        hasher.update(k.as_bytes());
                        hasher.update(v.expose().as_bytes());
                    }
                    env = EnvFile {
                        path: Some(path),
                        present: true,
                        values,
                    };
                }
                Ok(None) => {
                    diags.push(Diagnostic::warning(
                        &r.file,
                        pos,
                        "spec.envFile",
                        format!(
                            "env file {} does not exist; services needing its secrets will fail to converge",
                            path.display()
                        ),
                    ));
                    env.path = Some(path);
                }
                Err(msg) => diags.push(Diagnostic::error(&r.file, pos, "spec.envFile", msg)),
            }
        }
    }

    // 3. Interpolate and deserialize every document.
    let mut stack: Option<Resource<StackSpec>> = None;
    // Documents that failed to load were reported once; references to them are not
    // also "undeclared" (that would bury the real error under follow-on ones).
    let mut failed: std::collections::BTreeSet<(Kind, String)> = std::collections::BTreeSet::new();
    let mut services = Vec::new();
    let mut volumes = Vec::new();
    let mut networks = Vec::new();
    let mut jobs = Vec::new();
    // Interpolation errors are kept apart: a field whose `${VAR}` failed is reported
    // once, not again as, say, an invalid image reference `x:${TAG}`. Fields left
    // unresolved (env file missing) are not checked either: they cannot be yet.
    let mut interp_diags = Vec::new();
    let mut unchecked = Vec::new();
    for mut r in raw {
        let unresolved = interpolate(
            &r.file,
            &mut r.root,
            &env,
            &process_env,
            &mut interp_diags,
            &mut unchecked,
        );
        if !unresolved.is_empty() {
            diags.push(Diagnostic::warning(
                &r.file,
                r.doc_pos,
                "",
                format!(
                    "{} not set and the env file is missing; this resource will not be applied until they are",
                    unresolved.join(", ")
                ),
            ));
        }
        let source = Source {
            file: r.file.clone(),
            root: r.root,
            unresolved,
        };
        let doc_name = source
            .root
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Node::as_str)
            .map(str::to_string);
        let ok = match r.kind {
            Kind::Stack => match typed::<StackSpec>(&source, &mut diags) {
                Some(res) => {
                    stack.get_or_insert(res);
                    true
                }
                None => false,
            },
            Kind::Service => typed::<ServiceSpec>(&source, &mut diags)
                .map(|x| services.push(x))
                .is_some(),
            Kind::Volume => typed::<VolumeSpec>(&source, &mut diags)
                .map(|x| volumes.push(x))
                .is_some(),
            Kind::Network => typed::<NetworkSpec>(&source, &mut diags)
                .map(|x| networks.push(x))
                .is_some(),
            Kind::Job => typed::<JobSpec>(&source, &mut diags)
                .map(|x| jobs.push(x))
                .is_some(),
        };
        if !ok {
            failed.extend(doc_name.map(|n| (r.kind, n)));
        }
    }

    let services = unique(Kind::Service, services, &mut diags);
    let volumes = unique(Kind::Volume, volumes, &mut diags);
    let networks = unique(Kind::Network, networks, &mut diags);
    let jobs = unique(Kind::Job, jobs, &mut diags);

    let Some(stack) = stack else {
        merge_interpolation_errors(&mut diags, interp_diags, &unchecked);
        return Err(finish(diags));
    };
    let mut state = DesiredState {
        dir: dir.to_path_buf(),
        stack,
        services,
        volumes,
        networks,
        jobs,
        env,
        config_hashes: BTreeMap::new(),
        config_single_file: BTreeMap::new(),
        warnings: Vec::new(),
        digest: String::new(),
    };

    // 4. Config files: must exist inside the directory; their content is hashed.
    for (name, svc) in &state.services {
        let mut hashes = Vec::new();
        let mut single = Vec::new();
        for (i, cf) in svc.spec.config_files.iter().enumerate() {
            let path = [k("spec"), k("configFiles"), PathSeg::Index(i), k("source")];
            let is_file = dir.join(&cf.source).is_file();
            single.push(is_file);
            if is_file
                && matches!(
                    cf.on_change,
                    model::service::OnChange::Signal(_) | model::service::OnChange::None
                )
            {
                diags.push(Diagnostic::warning(
                    &svc.source.file,
                    svc.source.pos(&[k("spec"), k("configFiles"), PathSeg::Index(i), k("onChange")]),
                    yaml::path_string(&[k("spec"), k("configFiles"), PathSeg::Index(i), k("onChange")]),
                    "a single-file mount keeps the old file when an editor saves by rename, so a change restarts the container instead; mount the directory to reload by signal",
                ));
            }
            match hash_config_source(dir, &cf.source) {
                Ok(h) => {
                    hasher.update(h.as_bytes());
                    hashes.push(h);
                }
                Err(msg) => {
                    diags.push(err_at(&svc.source, &path, msg));
                    hashes.push(String::new());
                }
            }
        }
        state.config_hashes.insert(name.clone(), hashes);
        state.config_single_file.insert(name.clone(), single);
    }

    // 5. Cross-resource validation.
    let before = diags.len();
    crate::desired::validate::validate(&state, &mut diags);
    let follow_on: Vec<String> = failed
        .iter()
        .map(|(kind, name)| format!("refers to {kind} `{name}`, which is not declared"))
        .collect();
    let mut i = before;
    while i < diags.len() {
        if follow_on
            .iter()
            .any(|f| diags[i].message.starts_with(f.as_str()))
        {
            diags.remove(i);
        } else {
            i += 1;
        }
    }
    merge_interpolation_errors(&mut diags, interp_diags, &unchecked);

    if diags.iter().any(Diagnostic::is_error) {
        return Err(finish(diags));
    }
    diags.sort();
    state.warnings = diags;
    state.digest = hex::encode(hasher.finalize());
    Ok(state)
}

/// Adds the interpolation errors, dropping other errors on the same fields and on
/// the `unchecked` (file, field path) pairs.
fn merge_interpolation_errors(
    diags: &mut Vec<Diagnostic>,
    interp: Vec<Diagnostic>,
    unchecked: &[(PathBuf, String)],
) {
    let fields: std::collections::HashSet<(&Path, &str)> = interp
        .iter()
        .map(|d| (d.file.as_path(), d.path.as_str()))
        .chain(unchecked.iter().map(|(f, p)| (f.as_path(), p.as_str())))
        .collect();
    if !fields.is_empty() {
        diags.retain(|d| !(d.is_error() && fields.contains(&(d.file.as_path(), d.path.as_str()))));
    }
    diags.extend(interp);
}

fn finish(mut diags: Vec<Diagnostic>) -> LoadErrors {
    diags.sort();
    diags.dedup();
    if diags.len() > MAX_DIAGNOSTICS {
        let more = diags.len() - MAX_DIAGNOSTICS;
        let last = diags[MAX_DIAGNOSTICS - 1].clone();
        diags.truncate(MAX_DIAGNOSTICS);
        diags.push(Diagnostic::error(
            last.file,
            Pos {
                line: last.line,
                col: last.column,
            },
            "",
            format!("… and {more} more problems (only the first {MAX_DIAGNOSTICS} are shown)"),
        ));
    }
    LoadErrors(diags)
}

pub(crate) fn k(s: &str) -> PathSeg {
    PathSeg::Key(s.to_string())
}

pub(crate) fn keys(parts: &[&str]) -> Vec<PathSeg> {
    parts.iter().map(|p| k(p)).collect()
}

/// An error located at `path` of a resource's document.
pub(crate) fn err_at(src: &Source, path: &[PathSeg], msg: impl Into<String>) -> Diagnostic {
    Diagnostic::error(&src.file, src.pos(path), yaml::path_string(path), msg)
}

fn list_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read desired-state directory {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                && !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    if files.len() > MAX_FILES {
        return Err(format!(
            "{} YAML files in {}; the limit is {MAX_FILES}",
            files.len(),
            dir.display()
        ));
    }
    files.sort();
    Ok(files)
}

fn read_bounded(path: &Path, max: usize) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if meta.len() as usize > max {
        return Err(format!(
            "file is {} bytes; the limit is {max} bytes",
            meta.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() > max {
        return Err(format!(
            "file grew past the limit of {max} bytes while reading"
        ));
    }
    String::from_utf8(bytes)
        .map_err(|e| format!("not valid UTF-8 (byte {})", e.utf8_error().valid_up_to()))
}

fn resolve_path(dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// Checks `apiVersion` and `kind`; returns the kind when the envelope is usable.
fn check_envelope(file: &Path, root: &Node, diags: &mut Vec<Diagnostic>) -> Option<Kind> {
    if !matches!(root.value, yaml::Value::Map(_)) {
        diags.push(Diagnostic::error(
            file,
            root.pos,
            "",
            "a document must be a mapping with apiVersion, kind, metadata and spec",
        ));
        return None;
    }
    let mut ok = true;
    match root.get("apiVersion").and_then(Node::as_str) {
        Some(model::API_VERSION) => {}
        Some(other) => {
            ok = false;
            diags.push(Diagnostic::error(
                file,
                root.locate(&keys(&["apiVersion"])),
                "apiVersion",
                format!(
                    "unsupported apiVersion `{other}`; expected `{}`",
                    model::API_VERSION
                ),
            ));
        }
        None => {
            ok = false;
            diags.push(Diagnostic::error(
                file,
                root.pos,
                "apiVersion",
                format!(
                    "missing field `apiVersion` (expected `{}`)",
                    model::API_VERSION
                ),
            ));
        }
    }
    let kind = match root.get("kind").and_then(Node::as_str) {
        Some(s) => match Kind::parse(s) {
            Some(kind) => Some(kind),
            None => {
                let hint = did_you_mean(s, Kind::ALL.iter().map(|k| k.as_str()))
                    .map(|h| format!(" (did you mean `{h}`?)"))
                    .unwrap_or_default();
                diags.push(Diagnostic::error(
                    file,
                    root.locate(&keys(&["kind"])),
                    "kind",
                    format!(
                        "unknown kind `{s}`{hint}; expected one of Stack, Service, Volume, Network, Job"
                    ),
                ));
                None
            }
        },
        None => {
            diags.push(Diagnostic::error(
                file,
                root.pos,
                "kind",
                "missing field `kind`",
            ));
            None
        }
    };
    if ok {
        kind
    } else {
        None
    }
}

/// Reads `KEY=VALUE` lines. `Ok(None)` when the file does not exist.
fn read_env_file(path: &Path) -> Result<Option<BTreeMap<String, Secret>>, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read env file {}: {e}", path.display())),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "env file {} is readable by group or others (mode {mode:04o}); it holds secrets: run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    if meta.len() > 1024 * 1024 {
        return Err(format!("env file {} is larger than 1 MiB", path.display()));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read env file {}: {e}", path.display()))?;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "env file {} line {}: expected NAME=value",
                path.display(),
                i + 1
            ));
        };
        let key = key.trim();
        if !valid_env_name(key) {
            return Err(format!(
                "env file {} line {}: `{key}` is not a valid variable name",
                path.display(),
                i + 1
            ));
        }
        let value = value.trim();
        let value = if value.len() >= 2
            && ((value.starts_with('"') && value.ends_with('"'))
                || (value.starts_with('\'') && value.ends_with('\'')))
        {
            &value[1..value.len() - 1]
        } else {
            value
        };
        out.insert(key.to_string(), Secret::new(value));
    }
    Ok(Some(out))
}

pub(crate) fn valid_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Expands `${VAR}` and `${VAR:-default}` in every scalar; `$$` is a literal `$`.
/// The process environment wins over the env file (as with docker compose).
fn interpolate(
    file: &Path,
    root: &mut Node,
    env: &EnvFile,
    process: &BTreeMap<String, String>,
    diags: &mut Vec<Diagnostic>,
    unchecked: &mut Vec<(PathBuf, String)>,
) -> Vec<String> {
    // With the env file configured but absent (e.g. validating a checkout), a variable
    // that only it could provide is "unresolved": a warning here, and the resources
    // using it refuse to render, so nothing ever runs with a literal `${VAR}`.
    let deferred = env.path.is_some() && !env.present;
    let unresolved = std::cell::RefCell::new(Vec::<String>::new());
    root.for_each_scalar_mut(&mut |text, _plain, pos, path| {
        if !text.contains('$') {
            return;
        }
        let lookup = |name: &str| {
            process
                .get(name)
                .cloned()
                .or_else(|| env.get(name).map(|s| s.expose().to_string()))
        };
        let unset = |name: &str| {
            deferred.then(|| {
                unresolved.borrow_mut().push(name.to_string());
                format!("${{{name}}}")
            })
        };
        let before = unresolved.borrow().len();
        match expand_with(text, &lookup, &unset) {
            Ok(s) => {
                if unresolved.borrow().len() > before {
                    unchecked.push((file.to_path_buf(), yaml::path_string(path)));
                }
                *text = s
            }
            Err(msg) => diags.push(Diagnostic::error(file, pos, yaml::path_string(path), msg)),
        }
    });
    let mut u = unresolved.into_inner();
    u.sort();
    u.dedup();
    u
}

/// Expands one string. Errors name the variable.
pub fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    expand_with(s, lookup, &|_| None)
}

/// Like [`expand`]; `unset` may supply a stand-in for a variable that has neither a
/// value nor a default (instead of an error).
fn expand_with(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err(format!("unterminated `${{` in `{s}`"));
            };
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if !valid_env_name(name) {
                return Err(format!(
                    "`${{{expr}}}`: `{name}` is not a valid variable name"
                ));
            }
            match (lookup(name).filter(|v| !v.is_empty() || default.is_none()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => match unset(name) {
                    Some(stand_in) => out.push_str(&stand_in),
                    None => {
                        return Err(format!(
                            "variable `{name}` is not set (not in the env file nor the environment); set it or write `${{{name}:-default}}`"
                        ))
                    }
                },
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Deserializes one document into its typed form, converting serde errors into
/// located diagnostics with "did you mean" hints for unknown fields.
fn typed<S: serde::de::DeserializeOwned>(
    src: &Source,
    diags: &mut Vec<Diagnostic>,
) -> Option<Resource<S>> {
    let json = src.root.to_json();
    match serde_path_to_error::deserialize::<_, Document<S>>(json) {
        Ok(doc) => Some(Resource {
            name: doc.metadata.name,
            labels: doc.metadata.labels,
            spec: doc.spec,
            source: src.clone(),
        }),
        Err(e) => {
            let mut path: Vec<PathSeg> = e
                .path()
                .iter()
                .filter_map(|seg| match seg {
                    serde_path_to_error::Segment::Seq { index } => Some(PathSeg::Index(*index)),
                    serde_path_to_error::Segment::Map { key } => Some(PathSeg::Key(key.clone())),
                    serde_path_to_error::Segment::Enum { variant } => {
                        Some(PathSeg::Key(variant.clone()))
                    }
                    serde_path_to_error::Segment::Unknown => None,
                })
                .collect();
            let raw = e.inner().to_string();
            let message = match parse_unknown_field(&raw) {
                Some((field, expected)) => {
                    if path.last() != Some(&PathSeg::Key(field.clone())) {
                        path.push(PathSeg::Key(field.clone()));
                    }
                    match did_you_mean(&field, expected.iter().map(String::as_str)) {
                        Some(h) => format!("unknown field `{field}` (did you mean `{h}`?)"),
                        None => format!(
                            "unknown field `{field}`; valid fields here: {}",
                            expected.join(", ")
                        ),
                    }
                }
                None => match parse_unknown_variant(&raw) {
                    Some((value, expected)) => {
                        let hint = did_you_mean(&value, expected.iter().map(String::as_str))
                            .map(|h| format!(" (did you mean `{h}`?)"))
                            .unwrap_or_default();
                        format!(
                            "unknown value `{value}`{hint}; expected one of {}",
                            expected.join(", ")
                        )
                    }
                    None => raw,
                },
            };
            diags.push(err_at(src, &path, message));
            None
        }
    }
}

/// Splits serde's "unknown field `x`, expected one of `a`, `b`" message.
fn parse_unknown_field(msg: &str) -> Option<(String, Vec<String>)> {
    split_unknown(msg, "unknown field `")
}

/// Splits serde's "unknown variant `x`, expected one of `a`, `b`" message.
fn parse_unknown_variant(msg: &str) -> Option<(String, Vec<String>)> {
    split_unknown(msg, "unknown variant `")
}

fn split_unknown(msg: &str, prefix: &str) -> Option<(String, Vec<String>)> {
    let rest = msg.strip_prefix(prefix)?;
    let (name, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_string())
        .collect();
    Some((name.to_string(), expected))
}

/// Keeps the first resource of each name; later ones are duplicate-name errors.
fn unique<S>(
    kind: Kind,
    items: Vec<Resource<S>>,
    diags: &mut Vec<Diagnostic>,
) -> BTreeMap<String, Resource<S>> {
    let mut out: BTreeMap<String, Resource<S>> = BTreeMap::new();
    let mut first: HashMap<String, (PathBuf, Pos)> = HashMap::new();
    for r in items {
        let pos = r.source.pos(&keys(&["metadata", "name"]));
        if let Some((f, p)) = first.get(&r.name) {
            diags.push(err_at(
                &r.source,
                &keys(&["metadata", "name"]),
                format!(
                    "duplicate {kind} name `{}` (first declared at {}:{})",
                    r.name,
                    f.display(),
                    p
                ),
            ));
            continue;
        }
        first.insert(r.name.clone(), (r.source.file.clone(), pos));
        out.insert(r.name.clone(), r);
    }
    out
}

/// Content hash of a config file or directory, refusing paths outside `dir`.
pub fn hash_config_source(dir: &Path, source: &str) -> Result<String, String> {
    let rel = Path::new(source);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "config file `{source}` must be a relative path inside the desired-state directory (use `binds` for host paths)"
        ));
    }
    let path = dir.join(rel);
    let meta = std::fs::metadata(&path)
        .map_err(|_| format!("config file `{source}` does not exist ({})", path.display()))?;
    // A symlink must not lead out of the directory: the engine would mount its target.
    if let (Ok(real), Ok(root)) = (path.canonicalize(), dir.canonicalize()) {
        if !real.starts_with(&root) {
            return Err(format!(
                "config file `{source}` resolves to {}, outside the desired-state directory",
                real.display()
            ));
        }
    }
    let mut h = Sha256::new();
    if meta.is_dir() {
        let mut files = Vec::new();
        walk(&path, &mut files, 0)?;
        files.sort();
        for f in files {
            let rel = f.strip_prefix(&path).unwrap_or(&f);
            h.update(rel.to_string_lossy().as_bytes());
            h.update([0]);
            h.update(std::fs::read(&f).map_err(|e| format!("cannot read {}: {e}", f.display()))?);
            h.update([0]);
        }
    } else {
        h.update(std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?);
    }
    Ok(hex::encode(h.finalize()))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> Result<(), String> {
    if depth > 16 {
        return Err(format!(
            "{} nests deeper than 16 directories",
            dir.display()
        ));
    }
    let rd = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for e in rd.flatten() {
        let p = e.path();
        let ft = e.file_type().map_err(|e| e.to_string())?;
        if ft.is_symlink() {
            return Err(format!(
                "{} is a symlink; config directories are mounted as they are, so they may not hold links",
                p.display()
            ));
        } else if ft.is_dir() {
            walk(&p, out, depth + 1)?;
        } else if ft.is_file() {
            out.push(p);
        }
        if out.len() > 10_000 {
            return Err(format!("{} holds more than 10000 files", dir.display()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_variables() {
        let look = |n: &str| match n {
            "A" => Some("x".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(expand("a${A}b", &look).unwrap(), "axb");
        assert_eq!(expand("${B:-30d}", &look).unwrap(), "30d");
        assert_eq!(expand("${EMPTY:-d}", &look).unwrap(), "d");
        assert_eq!(expand("$$HOME $x", &look).unwrap(), "$HOME $x");
        assert!(expand("${B}", &look)
            .unwrap_err()
            .contains("`B` is not set"));
        assert!(expand("${A", &look).unwrap_err().contains("unterminated"));
    }

    #[test]
    fn diagnostics_are_capped_with_a_summary() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::from("apiVersion: obs.tlsstress.art/v1alpha1\nkind: Stack\nmetadata: {name: t}\nspec: {project: p}\n");
        for i in 0..600 {
            text.push_str(&format!("---\napiVersion: obs.tlsstress.art/v1alpha1\nkind: Volume\nmetadata: {{name: v{i}}}\nspec: {{bogus: 1}}\n"));
        }
        std::fs::write(dir.path().join("s.yaml"), text).unwrap();
        let opts = LoadOptions {
            process_env: Some(BTreeMap::new()),
            ..Default::default()
        };
        let e = load_dir(dir.path(), &opts).unwrap_err();
        assert_eq!(e.0.len(), MAX_DIAGNOSTICS + 1);
        assert!(
            e.0.last().unwrap().message.contains("100 more problems"),
            "{}",
            e.0.last().unwrap()
        );
    }

    #[test]
    fn unknown_field_message_is_split() {
        let (f, e) =
            parse_unknown_field("unknown field `imgae`, expected one of `image`, `env`").unwrap();
        assert_eq!(f, "imgae");
        assert_eq!(e, vec!["image", "env"]);
    }
}
