//! Config files → ConfigMaps: one per config source (a file, or a directory flattened
//! into keys with a key → path map), shared by every Service that mounts it.
//!
//! Files not readable by others are private: their bytes never enter a ConfigMap. They
//! are mounted from a Secret `<configmap>-private` that the user creates from the files
//! (the command is printed), next to the public files in one projected volume.

use super::{names, Cx, ExportError, FileSecret, Object};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::ByteString;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// Kubernetes' limit on the data of one ConfigMap.
pub const MAX_CONFIGMAP_BYTES: usize = 1024 * 1024;

/// One config source as Kubernetes sees it.
#[derive(Debug, Clone)]
pub struct Source {
    /// ConfigMap name.
    pub name: String,
    /// A single file (mounted with `subPath`), not a directory.
    pub single_file: bool,
    /// Public files: `(key, path relative to the mount)`; for a single file the path is
    /// the key.
    pub items: Vec<(String, String)>,
    /// Private files, same shape; they are keys of [`Source::secret`].
    pub private: Vec<(String, String)>,
    /// The Secret holding the private files, when there are any.
    pub secret: Option<String>,
    /// SHA-256 over the public keys and contents (private contents stay out: an
    /// unkeyed hash of a secret would let anyone confirm a guess).
    pub hash: String,
}

/// `config/x/` and `./config/x` → `config/x`: a path in the desired-state directory as
/// [`super::input`] names files and the Services' `source` fields are looked up.
pub fn norm(source: impl AsRef<std::path::Path>) -> String {
    source
        .as_ref()
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

pub(super) fn build_all(cx: &mut Cx) -> Result<(), ExportError> {
    let input = cx.input;
    let st = &input.state;
    let mut sources: BTreeMap<String, bool> = BTreeMap::new();
    for (svc, r) in &st.services {
        let single = st.config_single_file.get(svc);
        for (i, cf) in r.spec.config_files.iter().enumerate() {
            let is_single = single.and_then(|v| v.get(i)).copied().unwrap_or(false);
            sources.insert(norm(&cf.source), is_single);
        }
    }
    let mut used_names = BTreeSet::new();
    for (source, single_file) in sources {
        let mut name = names::label(&source);
        let mut n = 2;
        while !used_names.insert(name.clone()) {
            name = names::label(&format!("{source}-{n}"));
            n += 1;
        }
        let files: Vec<(String, &super::FileEntry)> = if single_file {
            input
                .files
                .get(&source)
                .map(|e| {
                    let base = source.rsplit('/').next().unwrap_or(&source).to_string();
                    vec![(base, e)]
                })
                .into_iter()
                .flatten()
                .collect()
        } else {
            let prefix = format!("{source}/");
            input
                .files
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, e)| (k[prefix.len()..].to_string(), e))
                .collect()
        };
        let mut keys = BTreeSet::new();
        let mut items = Vec::new();
        let mut private = Vec::new();
        let mut data = BTreeMap::new();
        let mut binary = BTreeMap::new();
        let mut bytes = 0usize;
        let mut h = Sha256::new();
        for (rel, entry) in files {
            let mut key = names::config_key(&rel);
            let mut n = 2;
            while !keys.insert(key.clone()) {
                key = format!("{}-{n}", names::config_key(&rel));
                n += 1;
            }
            let path = if single_file {
                key.clone()
            } else {
                rel.clone()
            };
            if entry.private {
                private.push((key, path));
                continue;
            }
            bytes += key.len() + entry.bytes.len();
            h.update(key.as_bytes());
            h.update([0]);
            h.update(Sha256::digest(&entry.bytes));
            match std::str::from_utf8(&entry.bytes) {
                Ok(text) => {
                    data.insert(key.clone(), text.to_string());
                }
                Err(_) => {
                    binary.insert(key.clone(), ByteString(entry.bytes.clone()));
                }
            }
            items.push((key, path));
        }
        if bytes > MAX_CONFIGMAP_BYTES {
            return Err(ExportError::ConfigTooLarge {
                name,
                source_path: source,
                bytes,
            });
        }
        let secret = if private.is_empty() {
            None
        } else {
            let sname = format!("{name}-private");
            let files = private
                .iter()
                .map(|(k, p)| {
                    let rel = if single_file {
                        source.clone()
                    } else {
                        format!("{source}/{p}")
                    };
                    (k.clone(), format!("{}/{rel}", input.dir_display))
                })
                .collect::<Vec<_>>();
            let example = private.first().map(|(_, p)| p.clone()).unwrap_or_default();
            cx.warn(
                format!("config {source}"),
                "",
                format!(
                    "{} file(s) not readable by others (e.g. `{example}`) may hold secrets and are not copied into ConfigMap `{name}`; they are mounted from Secret `{sname}`, which you create (the command is printed)",
                    private.len()
                ),
            );
            cx.file_secrets.push(FileSecret {
                name: sname.clone(),
                files,
            });
            Some(sname)
        };
        let cm = ConfigMap {
            metadata: {
                let mut m = cx.meta(&name, cx.stack_labels());
                m.annotations = Some(BTreeMap::from([(
                    "obs.tlsstress.art/config-source".to_string(),
                    source.clone(),
                )]));
                m
            },
            data: (!data.is_empty()).then_some(data),
            binary_data: (!binary.is_empty()).then_some(binary),
            ..Default::default()
        };
        cx.push(Object::ConfigMap(cm), format!("config files {source}"));
        cx.configs.insert(
            source,
            Source {
                name,
                single_file,
                items,
                private,
                secret,
                hash: hex::encode(h.finalize()),
            },
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_normalised() {
        assert_eq!(norm("./config/x/"), "config/x");
        assert_eq!(norm("config/a.yml"), "config/a.yml");
    }
}
