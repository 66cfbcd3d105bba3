//! The JSON Schema of the desired state and the `crds-docs/` reference generated from it.
//!
//! One source of truth: the serde/schemars model in `crate::desired::model`. `obsctl schema`
//! prints [`json_schema`]; [`render_docs`] turns the same schema into one Markdown page
//! per kind, and a test fails when the committed `crds-docs/` differ from it.

use crate::desired::model::{
    Document, JobSpec, Kind, NetworkSpec, ServiceSpec, StackSpec, VolumeSpec,
};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// File name of the schema inside `crds-docs/` (what the modelines point at).
pub const SCHEMA_FILE: &str = "obsd.schema.json";

fn kind_schema<S: JsonSchema>(kind: Kind, defs: &mut Map<String, Value>) -> Value {
    let mut schema = schemars::schema_for!(Document<S>).to_value();
    if let Some(Value::Object(d)) = schema.as_object_mut().and_then(|o| o.remove("$defs")) {
        defs.extend(d);
    }
    let obj = schema.as_object_mut().expect("object schema");
    obj.remove("$schema");
    obj.insert("title".into(), json!(kind.as_str()));
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        props.insert(
            "kind".into(),
            json!({"const": kind.as_str(), "description": "The resource kind."}),
        );
        props.insert(
            "apiVersion".into(),
            json!({"const": crate::desired::model::API_VERSION, "description": "Always `obs.tlsstress.art/v1alpha1`."}),
        );
    }
    schema
}

/// Per-kind schemas plus shared definitions.
pub fn kind_schemas() -> (BTreeMap<Kind, Value>, Map<String, Value>) {
    let mut defs = Map::new();
    let mut kinds = BTreeMap::new();
    kinds.insert(
        Kind::Stack,
        kind_schema::<StackSpec>(Kind::Stack, &mut defs),
    );
    kinds.insert(
        Kind::Service,
        kind_schema::<ServiceSpec>(Kind::Service, &mut defs),
    );
    kinds.insert(
        Kind::Volume,
        kind_schema::<VolumeSpec>(Kind::Volume, &mut defs),
    );
    kinds.insert(
        Kind::Network,
        kind_schema::<NetworkSpec>(Kind::Network, &mut defs),
    );
    kinds.insert(Kind::Job, kind_schema::<JobSpec>(Kind::Job, &mut defs));
    (kinds, defs)
}

/// The whole desired-state schema: any one document of any kind.
pub fn json_schema() -> Value {
    let (kinds, defs) = kind_schemas();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://obs.tlsstress.art/schemas/v1alpha1/obsd.schema.json",
        "title": "obsd desired-state document",
        "description": "One YAML document of an obsd desired-state directory.",
        "oneOf": kinds.values().cloned().collect::<Vec<_>>(),
        "$defs": defs,
    })
}

fn resolve<'a>(v: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    let mut v = v;
    for _ in 0..8 {
        let Some(r) = v.get("$ref").and_then(Value::as_str) else {
            break;
        };
        match r.strip_prefix("#/$defs/").and_then(|n| defs.get(n)) {
            Some(t) => v = t,
            None => break,
        }
    }
    v
}

fn type_name(v: &Value, defs: &Map<String, Value>) -> String {
    if let Some(r) = v.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/$defs/");
        let target = resolve(v, defs);
        if let Some(e) = enum_values(target) {
            return format!("enum: {}", e.join(" \\| "));
        }
        return format!("object (`{name}`)");
    }
    if let Some(c) = v.get("const") {
        return format!("`{c}`");
    }
    if let Some(e) = enum_values(v) {
        return format!("enum: {}", e.join(" \\| "));
    }
    if let Some(any) = v.get("anyOf").and_then(Value::as_array) {
        let parts: Vec<String> = any
            .iter()
            .filter(|x| x.get("type").and_then(Value::as_str) != Some("null"))
            .map(|x| type_name(x, defs))
            .collect();
        return parts.join(" or ");
    }
    match v.get("type") {
        Some(Value::String(t)) if t == "array" => {
            let item = v
                .get("items")
                .map(|i| type_name(i, defs))
                .unwrap_or_default();
            format!("list of {item}")
        }
        Some(Value::String(t)) if t == "object" => match v.get("additionalProperties") {
            Some(ap) if ap.is_object() => format!("map of string → {}", type_name(ap, defs)),
            _ => "object".into(),
        },
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".into(),
    }
}

fn enum_values(v: &Value) -> Option<Vec<String>> {
    if let Some(e) = v.get("enum").and_then(Value::as_array) {
        return Some(
            e.iter()
                .map(|x| format!("`{}`", x.as_str().unwrap_or("")))
                .collect(),
        );
    }
    let one = v.get("oneOf").and_then(Value::as_array)?;
    let mut out = Vec::new();
    for alt in one {
        if let Some(c) = alt.get("const") {
            out.push(format!("`{}`", c.as_str().unwrap_or("")));
        } else if let Some(e) = alt.get("enum").and_then(Value::as_array) {
            out.extend(e.iter().map(|x| format!("`{}`", x.as_str().unwrap_or(""))));
        } else if let Some(props) = alt.get("properties").and_then(Value::as_object) {
            for k in props.keys() {
                out.push(format!("`{{{k}: …}}`"));
            }
        } else {
            return None;
        }
    }
    Some(out)
}

fn one_line(s: &str) -> String {
    s.split("\n\n")
        .map(|p| p.replace('\n', " "))
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// Writes the field table of an object schema, recursing into nested objects.
fn fields(out: &mut String, prefix: &str, v: &Value, defs: &Map<String, Value>, depth: usize) {
    let v = resolve(v, defs);
    let Some(props) = v.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = v
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, p) in props {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let target = resolve(p, defs);
        let desc = p
            .get("description")
            .or_else(|| target.get("description"))
            .and_then(Value::as_str)
            .map(one_line)
            .unwrap_or_default();
        let default = p
            .get("default")
            .map(|d| format!("`{d}`"))
            .unwrap_or_else(|| {
                if required.contains(&name.as_str()) {
                    "required".into()
                } else {
                    "—".into()
                }
            });
        out.push_str(&format!(
            "| `{path}` | {} | {default} | {desc} |\n",
            type_name(p, defs)
        ));
        if depth < 6 {
            // Recurse into objects and lists of objects so every field is listed.
            let nested = if target.get("properties").is_some() {
                Some((target, path.clone()))
            } else if let Some(items) = target.get("items") {
                let it = resolve(items, defs);
                it.get("properties")
                    .is_some()
                    .then(|| (it, format!("{path}[]")))
            } else if let Some(any) = p.get("anyOf").and_then(Value::as_array) {
                any.iter()
                    .map(|a| resolve(a, defs))
                    .find(|a| a.get("properties").is_some())
                    .map(|a| (a, path.clone()))
            } else {
                None
            };
            if let Some((n, np)) = nested {
                fields(out, &np, n, defs, depth + 1);
            }
        }
    }
}

/// Example document per kind; also loaded by a test so the docs never show invalid YAML.
pub fn example(kind: Kind) -> &'static str {
    match kind {
        Kind::Stack => include_str!("../../crds-docs/examples/stack.yaml"),
        Kind::Service => include_str!("../../crds-docs/examples/service.yaml"),
        Kind::Volume => include_str!("../../crds-docs/examples/volume.yaml"),
        Kind::Network => include_str!("../../crds-docs/examples/network.yaml"),
        Kind::Job => include_str!("../../crds-docs/examples/job.yaml"),
    }
}

/// Renders `crds-docs/`: file name → content.
pub fn render_docs() -> BTreeMap<String, String> {
    let (kinds, defs) = kind_schemas();
    let mut files = BTreeMap::new();
    let mut index = String::from(
        "# obsd resource reference (`obs.tlsstress.art/v1alpha1`)\n\n\
         Generated from the schema by `obsctl gen-docs crds-docs`; a test fails when these pages are stale.\n\
         Desired-state files may start with the modeline\n\
         `# yaml-language-server: $schema=../crds-docs/obsd.schema.json` so editors complete and check fields.\n\n\
         How each field maps to Kubernetes (`obsctl export k8s`): [kubernetes.md](kubernetes.md).\n\n\
         | kind | page |\n|---|---|\n",
    );
    for (kind, schema) in &kinds {
        let file = format!("{}.md", kind.as_str().to_ascii_lowercase());
        index.push_str(&format!("| `{kind}` | [{file}]({file}) |\n"));
        let spec = schema
            .get("properties")
            .and_then(|p| p.get("spec"))
            .cloned()
            .unwrap_or(Value::Null);
        let spec_t = resolve(&spec, &defs);
        let mut md = format!("# {kind}\n\n");
        if let Some(d) = spec_t.get("description").and_then(Value::as_str) {
            md.push_str(&format!("{}\n\n", d.trim()));
        }
        md.push_str("## Example\n\n```yaml\n");
        md.push_str(example(*kind).trim_end());
        md.push_str(
            "\n```\n\n## Fields\n\n| field | type | default | description |\n|---|---|---|---|\n",
        );
        fields(&mut md, "", schema, &defs, 0);
        files.insert(file, md);
    }
    files.insert("README.md".into(), index);
    let mut schema = serde_json::to_string_pretty(&json_schema()).expect("serializable");
    schema.push('\n');
    files.insert(SCHEMA_FILE.into(), schema);
    files
}
