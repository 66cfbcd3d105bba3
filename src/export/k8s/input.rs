//! Reading what the Kubernetes exporter needs — the exporter's only IO.
//!
//! 1. The desired state is loaded once as obsd would (strictly; the process environment
//!    is ignored, so nothing from the exporting shell leaks into manifests) to learn the
//!    env file's *names*.
//! 2. Its documents are interpolated again with every name that has a value replaced by
//!    a marker ([`super::refs`]) and read into the typed model, so the state the
//!    exporter maps holds references, not values (validation already passed in step 1;
//!    a marker would fail it, e.g. as an AWS region). A name with an empty value keeps
//!    what obsd does with it (empty, or the `${VAR:-default}` default). With the env
//!    file missing, the names obsd could not resolve become references.
//! 3. Every config file a Service mounts and every desired-state document is read with
//!    its mode: a file not readable by others is private and never goes into a
//!    ConfigMap.

use super::{config, refs};
use crate::desired::load::{load_dir, LoadErrors, LoadOptions};
use crate::desired::DesiredState;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Everything [`super::export`] maps.
#[derive(Debug, Clone)]
pub struct Input {
    /// The desired state, with env-file values as markers.
    pub state: DesiredState,
    pub env: EnvFacts,
    /// Config files and desired-state documents by path relative to the desired-state
    /// directory (`/`-separated).
    pub files: BTreeMap<String, FileEntry>,
    /// The desired-state documents (relative paths), in load order.
    pub documents: Vec<String>,
    /// The desired-state directory as the user named it, for printed commands.
    pub dir_display: String,
}

/// What is known about the env file — never its values.
#[derive(Debug, Clone, Default)]
pub struct EnvFacts {
    /// The env file as the user would name it in a command, when one is configured.
    pub path_display: Option<String>,
    pub present: bool,
    /// Names that became Secret references.
    pub referenced: BTreeSet<String>,
    /// Lines that quote their value or start with `export `: `kubectl create secret
    /// --from-env-file` keeps quotes as part of the value and rejects `export`.
    pub kubectl_incompatible_lines: Vec<usize>,
}

/// One file's bytes and whether it is private (not readable by others).
#[derive(Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub bytes: Vec<u8>,
    pub private: bool,
}

impl std::fmt::Debug for FileEntry {
    // A private file may hold a secret: its bytes are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileEntry")
            .field("len", &self.bytes.len())
            .field("private", &self.private)
            .finish()
    }
}

/// Why the input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("the desired state in {dir} is invalid:\n{errors}")]
    Invalid { dir: String, errors: LoadErrors },
    #[error("the desired state in {dir} does not load with Secret references (a variable from the env file is used where Kubernetes cannot take it from a Secret):\n{errors}")]
    References { dir: String, errors: String },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads the desired state in `dir` for export. `env_file` overrides the Stack's.
pub fn read_input(dir: &Path, env_file: Option<&Path>) -> Result<Input, InputError> {
    let dir_display = dir.display().to_string();
    let opts = LoadOptions {
        process_env: Some(BTreeMap::new()),
        env_file: env_file.map(Path::to_path_buf),
        ..Default::default()
    };
    let plain = load_dir(dir, &opts).map_err(|errors| InputError::Invalid {
        dir: dir_display.clone(),
        errors,
    })?;

    let mut env = EnvFacts {
        present: plain.env.present,
        ..Default::default()
    };
    if let Some(p) = &plain.env.path {
        env.path_display = Some(display_path(dir, &dir_display, p, env_file));
    }
    if plain.env.present {
        // Emptiness is the one fact read from a value; the value itself is dropped here.
        env.referenced = plain
            .env
            .values
            .iter()
            .filter(|(_, v)| !v.expose().is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        if let Some(p) = &plain.env.path {
            env.kubectl_incompatible_lines = kubectl_incompatible(p)?;
        }
    } else {
        let all = plain
            .services
            .values()
            .map(|r| &r.source)
            .chain(plain.jobs.values().map(|r| &r.source))
            .chain(plain.volumes.values().map(|r| &r.source))
            .chain(plain.networks.values().map(|r| &r.source))
            .chain(std::iter::once(&plain.stack.source));
        env.referenced = all.flat_map(|s| s.unresolved.iter().cloned()).collect();
    }
    // Names the env file holds without a value: obsd expands them to "" (or the
    // default), and so does the exporter.
    let empty: BTreeSet<String> = plain
        .env
        .values
        .iter()
        .filter(|(_, v)| v.expose().is_empty())
        .map(|(k, _)| k.clone())
        .collect();
    let markers: BTreeMap<String, String> = env
        .referenced
        .iter()
        .map(|n| (n.clone(), refs::marker(n)))
        .collect();
    let state = with_references(plain, &markers, &empty, &dir_display)?;

    let mut files = BTreeMap::new();
    let mut documents = Vec::new();
    let docs = crate::desired::load::list_files(&state.dir).map_err(|e| InputError::Io {
        path: state.dir.clone(),
        source: std::io::Error::other(e),
    })?;
    for f in docs {
        let rel = rel_of(&state.dir, &f);
        files.insert(rel.clone(), read_entry(&f)?);
        documents.push(rel);
    }
    let sources: BTreeSet<&str> = state
        .services
        .values()
        .flat_map(|r| r.spec.config_files.iter().map(|c| c.source.as_str()))
        .collect();
    for source in sources {
        let path = state.dir.join(source);
        let mut found = Vec::new();
        if path.is_dir() {
            walk(&path, &mut found)?;
        } else {
            found.push(path);
        }
        for f in found {
            let rel = rel_of(&state.dir, &f);
            if let std::collections::btree_map::Entry::Vacant(e) = files.entry(rel) {
                e.insert(read_entry(&f)?);
            }
        }
    }
    Ok(Input {
        state,
        env,
        files,
        documents,
        dir_display,
    })
}

/// The validated state `plain` with its documents interpolated again, every env-file
/// value replaced by its marker (names in `empty` expand to ""), and the env file's
/// values dropped. Validation already passed on `plain`; the markers only go through the
/// typed model (a marker is no valid AWS region, so validating again would fail).
fn with_references(
    mut st: DesiredState,
    markers: &BTreeMap<String, String>,
    empty: &BTreeSet<String>,
    dir_display: &str,
) -> Result<DesiredState, InputError> {
    use crate::desired::yaml;
    let lookup = |n: &str| {
        markers
            .get(n)
            .cloned()
            .or_else(|| empty.contains(n).then(String::new))
    };
    let refs_error = |errors: String| InputError::References {
        dir: dir_display.to_string(),
        errors: refs::placeholders(&errors),
    };
    let files = crate::desired::load::list_files(&st.dir).map_err(|e| refs_error(e.to_string()))?;
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| InputError::Io {
            path: file.clone(),
            source,
        })?;
        let docs = yaml::parse(&text, yaml::Limits::default())
            .map_err(|e| refs_error(format!("{}: {}", file.display(), e.message)))?;
        for doc in docs {
            let mut root = doc.root;
            let mut failed = None;
            root.for_each_scalar_mut(&mut |t, _, pos, path| {
                if t.contains('$') {
                    match crate::desired::env::expand_with(t, &lookup, &|_| None) {
                        Ok(x) => *t = x,
                        Err(m) => {
                            failed.get_or_insert(format!(
                                "{}:{pos}: {}: {m}",
                                file.display(),
                                yaml::path_string(path)
                            ));
                        }
                    }
                }
            });
            if let Some(e) = failed {
                return Err(refs_error(e));
            }
            let kind = root
                .get("kind")
                .and_then(yaml::Node::as_str)
                .unwrap_or_default()
                .to_string();
            let name = root
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(yaml::Node::as_str)
                .unwrap_or_default()
                .to_string();
            let json = root.to_json();
            let typed_err = |e: serde_json::Error| {
                refs_error(format!("{}: {kind} {name}: {e}", file.display()))
            };
            match kind.as_str() {
                "Service" => retype(st.services.get_mut(&name), json, root),
                "Volume" => retype(st.volumes.get_mut(&name), json, root),
                "Network" => retype(st.networks.get_mut(&name), json, root),
                "Stack" => retype(Some(&mut st.stack), json, root),
                "Job" => retype(st.jobs.get_mut(&name), json, root),
                _ => Ok(()),
            }
            .map_err(typed_err)?;
        }
    }
    // The exporter needs no value; none stays in memory past this point.
    st.env.values.clear();
    Ok(st)
}

/// Resource `r` (when the plain load has it) as its document `json` reads with markers:
/// its spec, labels and tree.
fn retype<S: serde::de::DeserializeOwned>(
    r: Option<&mut crate::desired::Resource<S>>,
    json: serde_json::Value,
    root: crate::desired::yaml::Node,
) -> Result<(), serde_json::Error> {
    let d: crate::desired::model::Document<S> = serde_json::from_value(json)?;
    if let Some(r) = r {
        (r.spec, r.labels, r.source.root) = (d.spec, d.metadata.labels, root);
    }
    Ok(())
}

/// The env file as the user would type it: under the directory as they named it when
/// it lies inside, else as given.
fn display_path(dir: &Path, dir_display: &str, p: &Path, given: Option<&Path>) -> String {
    if let Some(g) = given {
        return g.display().to_string();
    }
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    match p.strip_prefix(&canon) {
        Ok(rel) => Path::new(dir_display).join(rel).display().to_string(),
        Err(_) => p.display().to_string(),
    }
}

/// Line numbers (1-based) that `kubectl create secret --from-env-file` reads differently
/// from obsd: quoted values, `export` prefixes. Only the syntax is looked at.
fn kubectl_incompatible(path: &Path) -> Result<Vec<usize>, InputError> {
    let text = std::fs::read_to_string(path).map_err(|source| InputError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                return false;
            }
            let quoted = l.split_once('=').is_some_and(|(_, v)| {
                let v = v.trim();
                v.len() >= 2
                    && ((v.starts_with('"') && v.ends_with('"'))
                        || (v.starts_with('\'') && v.ends_with('\'')))
            });
            quoted || l.starts_with("export ")
        })
        .map(|(i, _)| i + 1)
        .collect())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let rd = std::fs::read_dir(dir).map_err(|source| InputError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.is_file() {
            out.push(p);
        }
    }
    Ok(())
}

fn rel_of(dir: &Path, f: &Path) -> String {
    config::norm(f.strip_prefix(dir).unwrap_or(f))
}

fn read_entry(path: &Path) -> Result<FileEntry, InputError> {
    let io = |source| InputError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let bytes = std::fs::read(path).map_err(io)?;
    Ok(FileEntry {
        bytes,
        private: meta.permissions().mode() & 0o004 == 0,
    })
}
