//! A bounded YAML reader that keeps the source position of every node.
//!
//! Desired-state errors must name `file:line:column` for *any* field, including errors
//! found after deserialization (a dangling volume reference, a duplicate port). So files
//! are first read into a small tree of [`Node`]s that remember where they came from; the
//! typed model is deserialized from that tree (via JSON values) and every later error is
//! located by looking its field path up in the tree.
//!
//! The reader enforces hard limits so hostile input is rejected in bounded time and
//! memory: input size, nesting depth, total node count *after* alias expansion (alias
//! bombs), and it refuses duplicate mapping keys (YAML says they are an error; most
//! parsers silently keep the last one).

use granit_parser::{Event, Parser, ScalarStyle};
use std::collections::HashMap;
use std::fmt;

/// Limits for one file. The defaults are generous for hand-written desired state and
/// far below anything that would hurt the daemon.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted file, in bytes.
    pub max_bytes: usize,
    /// Deepest accepted nesting of mappings and sequences.
    pub max_depth: usize,
    /// Most nodes in one file, counting every alias expansion.
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 1024 * 1024,
            max_depth: 64,
            max_nodes: 200_000,
        }
    }
}

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One YAML node with its position.
#[derive(Debug, Clone)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Debug, Clone)]
pub enum Value {
    /// A scalar; `plain` is true when it was written without quotes (so `true`, `8080`
    /// and `~` take their YAML types).
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Keys keep their own positions so "unknown field" can point at the key.
    Map(Vec<(String, Pos, Node)>),
}

/// A reader error: always positioned.
#[derive(Debug, Clone)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

/// One `---` document of a file.
#[derive(Debug, Clone)]
pub struct Document {
    pub pos: Pos,
    pub root: Node,
}

/// Callback of [`Node::for_each_scalar_mut`]: scalar text, written unquoted, position,
/// field path.
pub type ScalarVisitor<'a> = dyn FnMut(&mut String, bool, Pos, &[PathSeg]) + 'a;

/// One step of a field path, e.g. `spec.ports[1].host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSeg {
    Key(String),
    Index(usize),
}

/// Renders a field path the way errors print it: `spec.ports[1].host`.
pub fn path_string(path: &[PathSeg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            PathSeg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            PathSeg::Index(i) => {
                s.push_str(&format!("[{i}]"));
            }
        }
    }
    s
}

impl Node {
    /// The map entry `key`, if this node is a map holding it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _, _)| k == key).map(|(_, _, n)| n),
            _ => None,
        }
    }

    /// The scalar text, if this node is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// Position of the deepest node on `path` that exists; for the last step of a
    /// map path, the position of the key itself (where a person looks for a field).
    pub fn locate(&self, path: &[PathSeg]) -> Pos {
        let mut node = self;
        let mut pos = self.pos;
        for seg in path {
            match (seg, &node.value) {
                (PathSeg::Key(k), Value::Map(entries)) => {
                    match entries.iter().find(|(key, _, _)| key == k) {
                        Some((_, kpos, child)) => {
                            pos = *kpos;
                            node = child;
                        }
                        None => return pos,
                    }
                }
                (PathSeg::Index(i), Value::Seq(items)) => match items.get(*i) {
                    Some(child) => {
                        pos = child.pos;
                        node = child;
                    }
                    None => return pos,
                },
                _ => return pos,
            }
        }
        pos
    }

    /// Converts to a JSON value for typed deserialization, resolving plain scalars with
    /// the YAML 1.2 core schema (null, booleans, integers, floats).
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Scalar { text, plain } => {
                if *plain {
                    resolve_plain(text)
                } else {
                    serde_json::Value::String(text.clone())
                }
            }
            Value::Seq(items) => {
                serde_json::Value::Array(items.iter().map(Node::to_json).collect())
            }
            Value::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, _, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// Visits every scalar mutably with its field path (used for `${VAR}`
    /// interpolation, whose errors must name the field). Recursion depth is bounded by
    /// the reader's `max_depth`.
    pub fn for_each_scalar_mut(&mut self, f: &mut ScalarVisitor<'_>) {
        self.scalars_mut_at(&mut Vec::new(), f);
    }

    fn scalars_mut_at(&mut self, path: &mut Vec<PathSeg>, f: &mut ScalarVisitor<'_>) {
        let pos = self.pos;
        match &mut self.value {
            Value::Scalar { text, plain } => f(text, *plain, pos, path),
            Value::Seq(items) => {
                for (i, n) in items.iter_mut().enumerate() {
                    path.push(PathSeg::Index(i));
                    n.scalars_mut_at(path, f);
                    path.pop();
                }
            }
            Value::Map(entries) => {
                for (k, _, n) in entries.iter_mut() {
                    path.push(PathSeg::Key(k.clone()));
                    n.scalars_mut_at(path, f);
                    path.pop();
                }
            }
        }
    }
}

fn resolve_plain(text: &str) -> serde_json::Value {
    use serde_json::Value as J;
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return J::Null,
        "true" | "True" | "TRUE" => return J::Bool(true),
        "false" | "False" | "FALSE" => return J::Bool(false),
        _ => {}
    }
    let looks_int = {
        let t = text.strip_prefix(['-', '+']).unwrap_or(text);
        !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())
    };
    if looks_int {
        if let Ok(i) = text.parse::<i64>() {
            return J::from(i);
        }
        if let Ok(u) = text.parse::<u64>() {
            return J::from(u);
        }
    }
    let looks_float = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
        && text.bytes().any(|b| b.is_ascii_digit());
    if looks_float {
        if let Ok(f) = text.parse::<f64>() {
            if let Some(n) = serde_json::Number::from_f64(f) {
                return J::Number(n);
            }
        }
    }
    J::String(text.to_string())
}

fn pos_of(m: &granit_parser::Marker) -> Pos {
    Pos {
        line: m.line(),
        col: m.col() + 1,
    }
}

/// Parses every document of `src` within `limits`.
pub fn parse(src: &str, limits: Limits) -> Result<Vec<Document>, YamlError> {
    if src.len() > limits.max_bytes {
        return Err(YamlError {
            pos: Pos { line: 1, col: 1 },
            message: format!(
                "file is {} bytes; the limit is {} bytes",
                src.len(),
                limits.max_bytes
            ),
        });
    }
    Builder::new(limits).run(src)
}

/// Builds nodes from parser events with an explicit stack (no recursion, so depth is
/// only limited by `max_depth`, never by the thread's stack).
struct Builder {
    limits: Limits,
    nodes: usize,
    anchors: HashMap<usize, Node>,
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(String, Pos, Node)>,
        pending_key: Option<(String, Pos)>,
        /// Keys seen so far with their positions: a linear scan of `entries` per
        /// key would make a large mapping quadratic to read.
        seen: HashMap<String, Pos>,
    },
}

impl Builder {
    fn new(limits: Limits) -> Self {
        Builder {
            limits,
            nodes: 0,
            anchors: HashMap::new(),
        }
    }

    fn count(&mut self, n: usize, pos: Pos) -> Result<(), YamlError> {
        self.nodes += n;
        if self.nodes > self.limits.max_nodes {
            return Err(YamlError {
                pos,
                message: format!(
                    "more than {} nodes (after alias expansion); refusing to expand further",
                    self.limits.max_nodes
                ),
            });
        }
        Ok(())
    }

    fn run(mut self, src: &str) -> Result<Vec<Document>, YamlError> {
        let mut parser = Parser::new_from_str(src);
        let mut docs = Vec::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut doc_pos = Pos { line: 1, col: 1 };
        let mut root: Option<Node> = None;
        while let Some(ev) = parser.next_event() {
            let (event, span) = ev.map_err(|e| YamlError {
                pos: pos_of(e.marker()),
                message: e.info().to_string(),
            })?;
            let pos = pos_of(&span.start);
            let finished: Option<Node> = match event {
                Event::StreamStart | Event::StreamEnd => None,
                Event::DocumentStart(..) => {
                    doc_pos = pos;
                    self.anchors.clear();
                    None
                }
                Event::DocumentEnd => {
                    if let Some(r) = root.take() {
                        docs.push(Document {
                            pos: doc_pos,
                            root: r,
                        });
                    }
                    None
                }
                Event::Alias(id) => {
                    let node = self.anchors.get(&id).cloned().ok_or_else(|| YamlError {
                        pos,
                        message: "alias refers to an unknown anchor".into(),
                    })?;
                    let n = count_nodes(&node);
                    self.count(n, pos)?;
                    Some(node)
                }
                Event::Scalar(text, style, anchor, _tag) => {
                    self.count(1, pos)?;
                    let node = Node {
                        pos,
                        value: Value::Scalar {
                            text: text.into_owned(),
                            plain: matches!(style, ScalarStyle::Plain),
                        },
                    };
                    if anchor != 0 {
                        self.anchors.insert(anchor, node.clone());
                    }
                    Some(node)
                }
                Event::SequenceStart(_, anchor, _) => {
                    self.count(1, pos)?;
                    self.push(&mut stack, pos)?;
                    stack.push(Frame::Seq {
                        pos,
                        anchor,
                        items: Vec::new(),
                    });
                    None
                }
                Event::MappingStart(_, anchor, _) => {
                    self.count(1, pos)?;
                    self.push(&mut stack, pos)?;
                    stack.push(Frame::Map {
                        pos,
                        anchor,
                        entries: Vec::new(),
                        pending_key: None,
                        seen: HashMap::new(),
                    });
                    None
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    let (node, anchor) = match stack.pop() {
                        Some(Frame::Seq { pos, anchor, items }) => (
                            Node {
                                pos,
                                value: Value::Seq(items),
                            },
                            anchor,
                        ),
                        Some(Frame::Map {
                            pos,
                            anchor,
                            entries,
                            ..
                        }) => (
                            Node {
                                pos,
                                value: Value::Map(entries),
                            },
                            anchor,
                        ),
                        None => {
                            return Err(YamlError {
                                pos,
                                message: "unbalanced collection end".into(),
                            })
                        }
                    };
                    if anchor != 0 {
                        self.anchors.insert(anchor, node.clone());
                    }
                    Some(node)
                }
                _ => None,
            };
            if let Some(node) = finished {
                match stack.last_mut() {
                    None => root = Some(node),
                    Some(Frame::Seq { items, .. }) => items.push(node),
                    Some(Frame::Map {
                        entries,
                        pending_key,
                        seen,
                        ..
                    }) => match pending_key.take() {
                        None => {
                            let key = match &node.value {
                                Value::Scalar { text, .. } => text.clone(),
                                _ => {
                                    return Err(YamlError {
                                        pos: node.pos,
                                        message: "mapping keys must be plain strings".into(),
                                    })
                                }
                            };
                            if let Some(first) = seen.get(&key) {
                                return Err(YamlError {
                                    pos: node.pos,
                                    message: format!(
                                        "duplicate key `{key}` (first defined at line {})",
                                        first.line
                                    ),
                                });
                            }
                            seen.insert(key.clone(), node.pos);
                            *pending_key = Some((key, node.pos));
                        }
                        Some((key, kpos)) => entries.push((key, kpos, node)),
                    },
                }
            }
        }
        Ok(docs)
    }

    fn push(&self, stack: &mut [Frame], pos: Pos) -> Result<(), YamlError> {
        if stack.len() >= self.limits.max_depth {
            return Err(YamlError {
                pos,
                message: format!("nesting deeper than {} levels", self.limits.max_depth),
            });
        }
        Ok(())
    }
}

fn count_nodes(node: &Node) -> usize {
    // Iterative so a deep (but within max_depth) tree costs no recursion risk.
    let mut n = 0;
    let mut todo = vec![node];
    while let Some(x) = todo.pop() {
        n += 1;
        match &x.value {
            Value::Scalar { .. } => {}
            Value::Seq(items) => todo.extend(items.iter()),
            Value::Map(entries) => todo.extend(entries.iter().map(|(_, _, v)| v)),
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let docs = parse("a: 1\nb:\n  c: [x, y]\n", Limits::default()).unwrap();
        let root = &docs[0].root;
        let p = root.locate(&[PathSeg::Key("b".into()), PathSeg::Key("c".into())]);
        assert_eq!(p, Pos { line: 3, col: 3 });
        let p = root.locate(&[
            PathSeg::Key("b".into()),
            PathSeg::Key("c".into()),
            PathSeg::Index(1),
        ]);
        assert_eq!(p, Pos { line: 3, col: 10 });
    }

    #[test]
    fn multi_document() {
        let docs = parse("a: 1\n---\nb: 2\n", Limits::default()).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].pos.line, 2);
    }

    #[test]
    fn plain_scalars_are_typed_quoted_are_strings() {
        let docs = parse(
            "a: 8080\nb: '8080'\nc: true\nd: ~\ne: 1.5\nf: 1.2.3\n",
            Limits::default(),
        )
        .unwrap();
        let j = docs[0].root.to_json();
        assert_eq!(j["a"], serde_json::json!(8080));
        assert_eq!(j["b"], serde_json::json!("8080"));
        assert_eq!(j["c"], serde_json::json!(true));
        assert_eq!(j["d"], serde_json::Value::Null);
        assert_eq!(j["e"], serde_json::json!(1.5));
        assert_eq!(j["f"], serde_json::json!("1.2.3"));
    }

    #[test]
    fn duplicate_keys_are_rejected_with_position() {
        let e = parse("a: 1\nb: 2\na: 3\n", Limits::default()).unwrap_err();
        assert_eq!(e.pos.line, 3);
        assert!(e.message.contains("duplicate key `a`"), "{}", e.message);
    }

    #[test]
    fn alias_bomb_is_bounded() {
        let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            src.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n",
                p = i - 1
            ));
        }
        let e = parse(&src, Limits::default()).unwrap_err();
        assert!(e.message.contains("alias expansion"), "{}", e.message);
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let src = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let e = parse(&src, Limits::default()).unwrap_err();
        assert!(
            e.message.contains("nesting deeper") || e.message.contains("recursion limit"),
            "{}",
            e.message
        );
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let src = "a: b\n".repeat(3_000_000);
        let e = parse(&src, Limits::default()).unwrap_err();
        assert!(e.message.contains("limit"), "{}", e.message);
    }
}
