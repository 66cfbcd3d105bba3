//! Loading a desired-state directory, in stages:
//!
//! 1. **read** every `*.yaml`/`*.yml` file into positioned YAML documents and check each
//!    envelope (`apiVersion`, `kind`);
//! 2. **env**: find the one Stack, read the env file it names;
//! 3. **type**: interpolate `${VAR}` in every document and deserialize it into its kind;
//! 4. **config files**: hash the content of every file a service mounts;
//! 5. **validate** across resources ([`crate::desired::validate`]).
//!
//! Loading is all-or-nothing: it returns either a complete, valid [`DesiredState`] or
//! every error found (not only the first), each located at `file:line:column` + field
//! path. Nothing here talks to Docker, so a bad edit can never disturb what is running.

use crate::desired::diag::{err_at, k, keys, Diagnostic};
use crate::desired::documents::{check_envelope, typed, unique};
use crate::desired::env::{interpolate, read_env_file};
use crate::desired::model::{self, Kind, StackSpec};
use crate::desired::validate::{self, FailedDocs};
use crate::desired::yaml::{self, Limits, Node, PathSeg, Pos};
use crate::desired::{DesiredState, EnvFile, Resource, Source};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Most documents files accepted in one directory (hostile-input bound).
const MAX_FILES: usize = 1000;

/// Most bytes of YAML read from one directory (hostile-input bound; the real stack is
/// well under 100 KiB).
const MAX_TOTAL_BYTES: usize = 16 * 1024 * 1024;

/// Most diagnostics reported from one load; the rest are summarised in one line.
const MAX_DIAGNOSTICS: usize = 500;

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

/// A parsed document whose envelope is usable, before interpolation and typing.
struct RawDoc {
    file: PathBuf,
    doc_pos: Pos,
    root: Node,
    kind: Kind,
}

/// What stage 3 produced: the typed resources, and what later stages must know about
/// the documents that did not make it.
#[derive(Default)]
struct Typed {
    stack: Option<Resource<StackSpec>>,
    services: Vec<Resource<model::ServiceSpec>>,
    volumes: Vec<Resource<model::VolumeSpec>>,
    networks: Vec<Resource<model::NetworkSpec>>,
    jobs: Vec<Resource<model::JobSpec>>,
    /// Documents that failed to type: reported once, so references to them are not
    /// also "undeclared" (that would bury the real error under follow-on ones).
    failed: FailedDocs,
    /// Interpolation errors, kept apart: a field whose `${VAR}` failed is reported once,
    /// not again as, say, an invalid image reference `x:${TAG}`.
    interp_diags: Vec<Diagnostic>,
    /// Fields left unresolved (env file missing): not checked either, they cannot be yet.
    unchecked: Vec<(PathBuf, String)>,
}

/// One load in progress: the directory, every finding so far, and the digest of every
/// byte read (the desired state's generation changes exactly when it does).
struct Loader<'a> {
    dir: &'a Path,
    opts: &'a LoadOptions,
    limits: Limits,
    diags: Vec<Diagnostic>,
    hasher: Sha256,
    /// Files and documents that could not be read far enough to know their kind: one
    /// of them may be the Stack, so "no Stack" is not claimed.
    unreadable: usize,
}

/// Loads and validates a desired-state directory.
pub fn load_dir(dir: &Path, opts: &LoadOptions) -> Result<DesiredState, LoadErrors> {
    // Absolute, so config-file bind mounts name the same host path from anywhere.
    let canonical = dir.canonicalize();
    let dir = canonical.as_deref().unwrap_or(dir);
    let mut l = Loader {
        dir,
        opts,
        limits: opts.limits.unwrap_or_default(),
        diags: Vec::new(),
        hasher: Sha256::new(),
        unreadable: 0,
    };
    let (files, refused) = scan_files(dir)
        .map_err(|e| LoadErrors(vec![Diagnostic::error(dir, Pos { line: 0, col: 0 }, "", e)]))?;
    for (file, msg) in refused {
        l.unreadable += 1;
        l.diags
            .push(Diagnostic::error(&file, Pos { line: 0, col: 0 }, "", msg));
    }
    let raw = l.read(&files);
    let env = l.env(&raw);
    let mut typed = l.type_documents(raw, &env);
    // Without a Stack (an error already) the other documents are still checked against
    // a placeholder, so one load reports every error.
    let stackless = typed.stack.is_none();
    let stack = typed.stack.take().unwrap_or_else(|| Resource {
        name: String::new(),
        labels: BTreeMap::new(),
        spec: StackSpec::new(""),
        source: Source {
            file: dir.to_path_buf(),
            root: Node {
                pos: Pos { line: 0, col: 0 },
                value: yaml::Value::Map(Vec::new()),
            },
            unresolved: Vec::new(),
        },
    });
    let mut state = DesiredState {
        dir: dir.to_path_buf(),
        stack,
        services: unique(Kind::Service, typed.services, &mut l.diags),
        volumes: unique(Kind::Volume, typed.volumes, &mut l.diags),
        networks: unique(Kind::Network, typed.networks, &mut l.diags),
        jobs: unique(Kind::Job, typed.jobs, &mut l.diags),
        env,
        config_hashes: BTreeMap::new(),
        config_single_file: BTreeMap::new(),
        warnings: Vec::new(),
        digest: String::new(),
    };
    l.hash_config_files(&mut state);
    if stackless {
        validate::validate_without_stack(&state, &typed.failed, &mut l.diags);
    } else {
        validate::validate(&state, &typed.failed, &mut l.diags);
    }
    l.merge_interpolation_errors(typed.interp_diags, &typed.unchecked);

    if stackless || l.diags.iter().any(Diagnostic::is_error) {
        return Err(finish(l.diags));
    }
    l.diags.sort();
    state.warnings = l.diags;
    state.digest = hex::encode(l.hasher.finalize());
    Ok(state)
}

impl Loader<'_> {
    /// Stage 1: every file into positioned documents with a usable envelope.
    fn read(&mut self, files: &[PathBuf]) -> Vec<RawDoc> {
        let mut raw = Vec::new();
        let mut total = 0usize;
        for file in files {
            let text = match read_bounded(file, self.limits.max_bytes) {
                Ok(t) => t,
                Err((pos, msg)) => {
                    self.unreadable += 1;
                    self.diags.push(Diagnostic::error(file, pos, "", msg));
                    continue;
                }
            };
            total += text.len();
            if total > MAX_TOTAL_BYTES {
                self.diags.push(Diagnostic::error(
                    file,
                    Pos { line: 1, col: 1 },
                    "",
                    format!("the directory holds more than {MAX_TOTAL_BYTES} bytes of YAML; refusing to read further"),
                ));
                break;
            }
            self.hasher.update(file.to_string_lossy().as_bytes());
            self.hasher.update(text.as_bytes());
            let docs = match yaml::parse(&text, self.limits) {
                Ok(d) => d,
                Err(e) => {
                    self.unreadable += 1;
                    self.diags
                        .push(Diagnostic::error(file, e.pos, "", e.message));
                    continue;
                }
            };
            for d in docs {
                // An empty document (a trailing `---`, or one holding only comments;
                // the parser gives it as a plain null) declares nothing, as with kubectl.
                if matches!(&d.root.value, yaml::Value::Scalar { text, plain: true }
                    if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
                {
                    continue;
                }
                match check_envelope(file, &d.root, &mut self.diags) {
                    Some(kind) => raw.push(RawDoc {
                        file: file.clone(),
                        doc_pos: d.pos,
                        root: d.root,
                        kind,
                    }),
                    // A document that says `kind: Stack` is a Stack, whatever else is
                    // wrong with its envelope.
                    None if d.root.get("kind").and_then(Node::as_str) == Some("Stack") => {
                        self.unreadable += 1
                    }
                    None if d.root.get("kind").and_then(Node::as_str).is_none() => {
                        self.unreadable += 1
                    }
                    None => {}
                }
            }
        }
        raw
    }

    /// Stage 2: exactly one Stack, and the env file it names (or the one given in the
    /// options), read before any document is interpolated.
    fn env(&mut self, raw: &[RawDoc]) -> EnvFile {
        let stacks: Vec<&RawDoc> = raw.iter().filter(|r| r.kind == Kind::Stack).collect();
        if stacks.is_empty() && self.unreadable == 0 {
            self.diags.push(Diagnostic::error(
                self.dir,
                Pos { line: 0, col: 0 },
                "",
                "no `kind: Stack` document found; exactly one is required",
            ));
        }
        for extra in stacks.iter().skip(1) {
            self.diags.push(Diagnostic::error(
                &extra.file,
                extra.root.locate(&keys(&["kind"])),
                "kind",
                format!(
                    "a second Stack document; exactly one is allowed (first in {})",
                    stacks[0].file.display()
                ),
            ));
        }
        let mut env = EnvFile::default();
        let Some(r) = stacks.first() else {
            return env;
        };
        let configured = r
            .root
            .get("spec")
            .and_then(|s| s.get("envFile"))
            .and_then(Node::as_str);
        let chosen = self
            .opts
            .env_file
            .clone()
            .or_else(|| configured.map(|ef| resolve_path(self.dir, ef)));
        let Some(path) = chosen else {
            return env;
        };
        let pos = r.root.locate(&keys(&["spec", "envFile"]));
        match read_env_file(&path) {
            Ok(Some(values)) => {
                for (k, v) in &values {
                    self.hasher.update(k.as_bytes());
                    self.hasher.update(v.expose().as_bytes());
                }
                env = EnvFile {
                    path: Some(path),
                    present: true,
                    values,
                };
            }
            Ok(None) => {
                self.diags.push(Diagnostic::warning(
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
            Err(msg) => self
                .diags
                .push(Diagnostic::error(&r.file, pos, "spec.envFile", msg)),
        }
        env
    }

    /// Stage 3: interpolate and deserialize every document into its kind.
    fn type_documents(&mut self, raw: Vec<RawDoc>, env: &EnvFile) -> Typed {
        let process_env: BTreeMap<String, String> = match &self.opts.process_env {
            Some(m) => m.clone(),
            None => std::env::vars().collect(),
        };
        let mut t = Typed::default();
        for mut r in raw {
            let unresolved = interpolate(
                &r.file,
                &mut r.root,
                env,
                &process_env,
                &mut t.interp_diags,
                &mut t.unchecked,
            );
            if !unresolved.is_empty() {
                self.diags.push(Diagnostic::warning(
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
            let d = &mut self.diags;
            let ok = match r.kind {
                Kind::Stack => typed(&source, d).map(|x| {
                    t.stack.get_or_insert(x);
                }),
                Kind::Service => typed(&source, d).map(|x| t.services.push(x)),
                Kind::Volume => typed(&source, d).map(|x| t.volumes.push(x)),
                Kind::Network => typed(&source, d).map(|x| t.networks.push(x)),
                Kind::Job => typed(&source, d).map(|x| t.jobs.push(x)),
            }
            .is_some();
            if !ok {
                t.failed.extend(doc_name.map(|n| (r.kind, n)));
            }
        }
        t
    }

    /// Stage 4: config files must exist inside the directory; their content is hashed.
    fn hash_config_files(&mut self, state: &mut DesiredState) {
        for (name, svc) in &state.services {
            let mut hashes = Vec::new();
            let mut single = Vec::new();
            for (i, cf) in svc.spec.config_files.iter().enumerate() {
                let field = |leaf: &str| [k("spec"), k("configFiles"), PathSeg::Index(i), k(leaf)];
                let is_file = self.dir.join(&cf.source).is_file();
                single.push(is_file);
                if is_file
                    && matches!(
                        cf.on_change,
                        model::service::OnChange::Signal(_)
                            | model::service::OnChange::Exec(_)
                            | model::service::OnChange::Http(_)
                            | model::service::OnChange::None
                    )
                {
                    self.diags.push(Diagnostic::warning(
                        &svc.source.file,
                        svc.source.pos(&field("onChange")),
                        yaml::path_string(&field("onChange")),
                        "a single-file mount keeps the old file when an editor saves by rename, so a change restarts the container instead; mount the directory to reload in place",
                    ));
                }
                match crate::desired::config_files::hash_config_source(self.dir, &cf.source) {
                    Ok(h) => {
                        self.hasher.update(h.as_bytes());
                        hashes.push(h);
                    }
                    Err(msg) => {
                        self.diags.push(err_at(&svc.source, &field("source"), msg));
                        hashes.push(String::new());
                    }
                }
            }
            state.config_hashes.insert(name.clone(), hashes);
            state.config_single_file.insert(name.clone(), single);
        }
    }

    /// Adds the interpolation errors, dropping other errors on the same fields and on
    /// the `unchecked` (file, field path) pairs.
    fn merge_interpolation_errors(
        &mut self,
        interp: Vec<Diagnostic>,
        unchecked: &[(PathBuf, String)],
    ) {
        let fields: std::collections::HashSet<(&Path, &str)> = interp
            .iter()
            .map(|d| (d.file.as_path(), d.path.as_str()))
            .chain(unchecked.iter().map(|(f, p)| (f.as_path(), p.as_str())))
            .collect();
        if !fields.is_empty() {
            self.diags.retain(|d| {
                !(d.is_error() && fields.contains(&(d.file.as_path(), d.path.as_str())))
            });
        }
        self.diags.extend(interp);
    }
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

/// The desired-state documents of `dir`, sorted (also what `obsctl export k8s` copies).
pub(crate) fn list_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    scan_files(dir).map(|(files, _)| files)
}

/// Entries named like documents that cannot be read as one, with the reason.
pub(crate) type Refused = Vec<(PathBuf, String)>;

/// Whether a directory entry is a desired-state document by its name: `*.yaml` or
/// `*.yml`, not hidden. So editors' swap, backup and lock files are ignored
/// (`.stack.yaml.swp`, `stack.yaml~`, `.#stack.yaml`, `#stack.yaml#`, `stack.yaml.bak`,
/// `.stack.yaml.tmp`), as is anything else not ending in `.yaml`/`.yml`.
pub(crate) fn is_document_name(name: &str) -> bool {
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// The documents of `dir` (sorted), and the entries named like documents that cannot
/// be read as one, each with the reason: a dangling symlink, a symlink loop, a link
/// leading out of the directory, a directory, a FIFO, socket or device.
pub(crate) fn scan_files(dir: &Path) -> Result<(Vec<PathBuf>, Refused), String> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read desired-state directory {}: {e}", dir.display()))?;
    let root = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut files = Vec::new();
    let mut refused = Vec::new();
    for e in rd.filter_map(|e| e.ok()) {
        let p = e.path();
        if !is_document_name(&e.file_name().to_string_lossy()) {
            continue;
        }
        if files.len() + refused.len() >= MAX_FILES {
            return Err(format!(
                "more than {MAX_FILES} YAML files in {}; the limit is {MAX_FILES}",
                dir.display()
            ));
        }
        match document_entry(&p, &root) {
            Ok(()) => files.push(p),
            Err(msg) => refused.push((p, msg)),
        }
    }
    files.sort();
    refused.sort();
    Ok((files, refused))
}

/// Why the entry at `p` cannot be read as a document, if it cannot.
fn document_entry(p: &Path, root: &Path) -> Result<(), String> {
    let lmeta = std::fs::symlink_metadata(p).map_err(|e| format!("cannot read: {e}"))?;
    if lmeta.file_type().is_symlink() {
        let target = std::fs::read_link(p)
            .map(|t| t.display().to_string())
            .unwrap_or_else(|_| "?".into());
        match std::fs::metadata(p) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(format!("is a symlink loop (-> {target})"));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "is a dangling symlink: its target {target} does not exist"
                ));
            }
            Err(e) => {
                return Err(format!(
                    "is a symlink (-> {target}) that cannot be followed: {e}"
                ))
            }
        }
        let real = p
            .canonicalize()
            .map_err(|e| format!("is a symlink (-> {target}) that cannot be resolved: {e}"))?;
        if !real.starts_with(root) {
            return Err(format!(
                "is a symlink to {}, outside the desired-state directory; documents must stay inside it",
                real.display()
            ));
        }
    }
    let meta = std::fs::metadata(p).map_err(|e| format!("cannot read: {e}"))?;
    if meta.is_dir() {
        return Err("is a directory named like a document; documents must be files".into());
    }
    if !meta.is_file() {
        // The same words the reader uses.
        crate::desired::config_files::open_regular(p)?;
    }
    Ok(())
}

/// Reads a document file: regular, at most `max` bytes, UTF-8 (an encoding error is
/// located at its line and column).
fn read_bounded(path: &Path, max: usize) -> Result<String, (Pos, String)> {
    let at_start = |m: String| (Pos { line: 1, col: 1 }, m);
    let bytes = crate::desired::config_files::read_regular(path, max as u64).map_err(at_start)?;
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let upto = e.utf8_error().valid_up_to();
        let valid = &bytes[..upto];
        let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        let col = String::from_utf8_lossy(&valid[line_start..])
            .chars()
            .count()
            + 1;
        (
            Pos { line, col },
            format!(
                "not valid UTF-8 (byte 0x{:02x} at offset {upto})",
                bytes[upto]
            ),
        )
    })
}

fn resolve_path(dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
