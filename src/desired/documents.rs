//! One document at a time: the envelope (`apiVersion`, `kind`) and the typed
//! deserialization of its `metadata` and `spec`, with serde's errors turned into located
//! diagnostics ("did you mean" for unknown fields and values), and the one-name-per-kind
//! rule across documents.

use crate::desired::diag::{did_you_mean, err_at, keys, Diagnostic};
use crate::desired::model::{self, Document, Kind};
use crate::desired::yaml::{self, Node, PathSeg, Pos};
use crate::desired::{Resource, Source};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Checks `apiVersion` and `kind`; returns the kind when the envelope is usable.
pub(crate) fn check_envelope(
    file: &Path,
    root: &Node,
    diags: &mut Vec<Diagnostic>,
) -> Option<Kind> {
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

/// Deserializes one document into its typed form, converting serde errors into
/// located diagnostics with "did you mean" hints for unknown fields.
pub(crate) fn typed<S: serde::de::DeserializeOwned>(
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
pub(crate) fn unique<S>(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_message_is_split() {
        let (f, e) =
            parse_unknown_field("unknown field `imgae`, expected one of `image`, `env`").unwrap();
        assert_eq!(f, "imgae");
        assert_eq!(e, vec!["image", "env"]);
    }
}
