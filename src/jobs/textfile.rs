//! node-exporter textfiles: a small builder, a validator, and the atomic writer.
//!
//! node-exporter's textfile collector skips a whole file on one bad line
//! (`node_textfile_scrape_error 1`), rejects client-side timestamps, and breaks the scrape
//! when two files hold the same series. So every file is rendered from a [`Textfile`]
//! builder, then parsed back by an independent validator ([`parse`]) before it is
//! written: a bug in rendering or escaping fails the job run instead of silently blanking
//! its metrics. Each job owns one file.
//!
//! Heartbeats: every job that writes a textfile adds `<body>_last_run_timestamp_seconds`
//! (no labels), e.g. `cloud_poller_last_run_timestamp_seconds` (the LLD's name),
//! `docker_names_last_run_timestamp_seconds`, `self_heal_last_run_timestamp_seconds`,
//! `status_page_last_run_timestamp_seconds`. One name per body keeps the families of
//! different files apart (node-exporter merges families across files).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The exposition types the jobs write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Gauge,
    Counter,
}

impl MetricType {
    fn as_str(self) -> &'static str {
        match self {
            MetricType::Gauge => "gauge",
            MetricType::Counter => "counter",
        }
    }
}

/// A textfile being built: families in insertion order, samples grouped per family.
#[derive(Debug, Default, Clone)]
pub struct Textfile {
    families: Vec<Family>,
    /// Builder misuse found while adding (e.g. one name declared with two types); reported
    /// by [`Textfile::render`].
    conflicts: Vec<String>,
}

/// One metric family: name, help, type and its samples.
#[derive(Debug, Clone)]
pub struct Family {
    name: String,
    help: String,
    kind: MetricType,
    samples: Vec<(Vec<(String, String)>, f64)>,
}

impl Family {
    /// Add a sample with labels (in the order given).
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Family {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples.push((labels, value));
        self
    }

    /// Add the sample without labels.
    pub fn set(&mut self, value: f64) -> &mut Family {
        self.sample(&[], value)
    }
}

impl Textfile {
    pub fn new() -> Textfile {
        Textfile::default()
    }

    /// The gauge family `name`, created on first use.
    pub fn gauge(&mut self, name: &str, help: &str) -> &mut Family {
        self.family(name, help, MetricType::Gauge)
    }

    /// The counter family `name` (the full name, normally ending in `_total`).
    pub fn counter(&mut self, name: &str, help: &str) -> &mut Family {
        self.family(name, help, MetricType::Counter)
    }

    pub fn family(&mut self, name: &str, help: &str, kind: MetricType) -> &mut Family {
        if let Some(i) = self.families.iter().position(|f| f.name == name) {
            if self.families[i].kind != kind {
                self.conflicts.push(format!(
                    "metric `{name}` declared as both {} and {}",
                    self.families[i].kind.as_str(),
                    kind.as_str()
                ));
            }
            return &mut self.families[i];
        }
        self.families.push(Family {
            name: name.to_string(),
            help: help.to_string(),
            kind,
            samples: Vec::new(),
        });
        self.families.last_mut().expect("just pushed")
    }

    /// Moves every family of `other` into this one (samples of a family both hold are
    /// appended), keeping the order families were first declared in.
    pub fn append(&mut self, other: Textfile) {
        self.conflicts.extend(other.conflicts);
        for f in other.families {
            self.family(&f.name, &f.help, f.kind)
                .samples
                .extend(f.samples);
        }
    }

    /// The exposition text, validated by [`parse`]. Families without samples are left
    /// out (a HELP/TYPE pair with no sample is legal but useless).
    pub fn render(&self) -> Result<String, TextfileError> {
        if let Some(c) = self.conflicts.first() {
            return Err(TextfileError::Invalid {
                line: 0,
                msg: c.clone(),
            });
        }
        let mut out = String::new();
        for f in self.families.iter().filter(|f| !f.samples.is_empty()) {
            let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
            for (labels, value) in &f.samples {
                out.push_str(&f.name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape_label_value(v));
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {}", format_value(*value));
            }
        }
        parse(&out)?;
        Ok(out)
    }

    /// Validate, then atomically replace `<dir>/<file>` ([`crate::fsutil::atomic_write`]).
    pub fn write(&self, dir: &Path, file: &str) -> Result<PathBuf, TextfileError> {
        check_file_name(file)?;
        let text = self.render()?;
        let path = dir.join(file);
        crate::fsutil::atomic_write(&path, text.as_bytes(), 0o644).map_err(|source| {
            TextfileError::Io {
                path: path.clone(),
                source,
            }
        })?;
        Ok(path)
    }
}

/// Why a textfile was not written.
#[derive(Debug, thiserror::Error)]
pub enum TextfileError {
    #[error("invalid exposition text (line {line}): {msg}")]
    Invalid { line: usize, msg: String },
    #[error("textfile name `{0}` must be a plain file name ending in `.prom`")]
    BadFileName(String),
    #[error("writing {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn check_file_name(file: &str) -> Result<(), TextfileError> {
    let ok = file.len() > ".prom".len()
        && file.ends_with(".prom")
        && !file.contains('/')
        && !file.contains('\\')
        && !file.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(TextfileError::BadFileName(file.to_string()))
    }
}

/// Label values escape `\`, `"` and newline.
pub fn escape_label_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// HELP text escapes `\` and newline.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Go's `strconv.ParseFloat` reads all of these; Rust's `Display` never uses exponents
/// for finite values, so it is exact and parseable.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// A sample read back from exposition text.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedSample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed textfile: HELP and TYPE per family, and every sample.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub help: BTreeMap<String, String>,
    pub types: BTreeMap<String, String>,
    pub samples: Vec<ParsedSample>,
}

impl Parsed {
    /// The value of the sample `name` whose labels include all of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.find(name, labels).map(|s| s.value)
    }

    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<&ParsedSample> {
        self.samples.iter().find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// Every sample of `name`.
    pub fn all(&self, name: &str) -> Vec<&ParsedSample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }
}

fn valid_metric_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !n.starts_with("__")
}

/// The family a sample name belongs to, given the declared types (histogram and summary
/// samples carry suffixes).
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            ) {
                return base;
            }
        }
    }
    name
}

/// Parse and validate Prometheus text exposition format as node-exporter's textfile
/// collector would accept it: metric and label name charsets, HELP and TYPE at most once
/// per family and before its samples, families contiguous, known types, no timestamps,
/// no duplicate series, parseable values.
pub fn parse(text: &str) -> Result<Parsed, TextfileError> {
    let mut p = Parsed::default();
    let mut seen_series: HashSet<(String, Vec<(String, String)>)> = HashSet::new();
    // Families whose block has started; and the one currently open.
    let mut started: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut with_samples: HashSet<String> = HashSet::new();

    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let err = |msg: String| TextfileError::Invalid { line: line_no, msg };
        let line = raw.trim_start();
        if line.trim().is_empty() {
            continue;
        }
        let mut enter = |fam: &str, current: &mut Option<String>| -> Result<(), TextfileError> {
            if current.as_deref() != Some(fam) {
                if started.contains(fam) {
                    return Err(err(format!(
                        "family `{fam}` is not contiguous (its lines are split by another family)"
                    )));
                }
                started.insert(fam.to_string());
                *current = Some(fam.to_string());
            }
            Ok(())
        };
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start();
            let (kw, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            if kw != "HELP" && kw != "TYPE" {
                continue; // a plain comment
            }
            let rest = rest.trim_start();
            let (name, arg) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            if !valid_metric_name(name) {
                return Err(err(format!("invalid metric name `{name}` in {kw} line")));
            }
            enter(name, &mut current)?;
            if with_samples.contains(name) {
                return Err(err(format!("{kw} for `{name}` after its samples")));
            }
            if kw == "HELP" {
                if p.help.insert(name.to_string(), arg.to_string()).is_some() {
                    return Err(err(format!("second HELP line for `{name}`")));
                }
            } else {
                let t = arg.trim();
                if !matches!(t, "counter" | "gauge" | "histogram" | "summary" | "untyped") {
                    return Err(err(format!("unknown type `{t}` for `{name}`")));
                }
                if p.types.insert(name.to_string(), t.to_string()).is_some() {
                    return Err(err(format!("second TYPE line for `{name}`")));
                }
            }
            continue;
        }

        // A sample: name [{labels}] value
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .unwrap_or(line.len());
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(err(format!("invalid metric name `{name}`")));
        }
        let mut rest = &line[name_end..];
        let mut labels: Vec<(String, String)> = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            let (ls, after) = parse_labels(r).map_err(&err)?;
            labels = ls;
            rest = after;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let value = match fields.as_slice() {
            [v] => {
                parse_value(v).ok_or_else(|| err(format!("invalid value `{v}` for `{name}`")))?
            }
            [] => return Err(err(format!("sample `{name}` has no value"))),
            [_, _] => {
                return Err(err(format!(
                    "sample `{name}` carries a timestamp; textfiles must not"
                )))
            }
            _ => return Err(err(format!("trailing text after the value of `{name}`"))),
        };
        let fam = family_of(name, &p.types).to_string();
        enter(&fam, &mut current)?;
        with_samples.insert(fam.clone());
        if let Some(t) = p.types.get(&fam) {
            if (t == "counter" || t == "gauge" || t == "untyped") && name != fam {
                return Err(err(format!(
                    "sample `{name}` does not match its family `{fam}`"
                )));
            }
        }
        let mut names = HashSet::new();
        for (k, _) in &labels {
            if !names.insert(k.as_str()) {
                return Err(err(format!("label `{k}` repeated in a sample of `{name}`")));
            }
        }
        let mut key = labels.clone();
        key.sort();
        if !seen_series.insert((name.to_string(), key)) {
            return Err(err(format!(
                "duplicate series `{name}` with the same labels"
            )));
        }
        p.samples.push(ParsedSample {
            name: name.to_string(),
            labels: labels.into_iter().collect(),
            value,
        });
    }
    if let Some(name) = p
        .types
        .keys()
        .chain(p.help.keys())
        .find(|n| !with_samples.contains(*n))
    {
        return Err(TextfileError::Invalid {
            line: 0,
            msg: format!("family `{name}` is declared without samples"),
        });
    }
    Ok(p)
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => v.parse::<f64>().ok().filter(|f| f.is_finite()),
    }
}

/// Parse `name="value",...}`; returns the labels and the text after `}`.
/// Label pairs in the order written.
type Labels = Vec<(String, String)>;

fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((out, rest));
        }
        let eq = s.find('=').ok_or("label without `=`")?;
        let name = s[..eq].trim();
        if !valid_label_name(name) {
            return Err(format!("invalid label name `{name}`"));
        }
        s = s[eq + 1..].trim_start();
        let mut chars = s.char_indices();
        if !matches!(chars.next(), Some((_, '"'))) {
            return Err(format!("label `{name}`: value must be quoted"));
        }
        let mut value = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => {
                        return Err(format!(
                            "label `{name}`: invalid escape `\\{}`",
                            other.map(|(_, c)| c).unwrap_or(' ')
                        ))
                    }
                },
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                '\n' => return Err(format!("label `{name}`: raw newline in value")),
                c => value.push(c),
            }
        }
        let end = end.ok_or_else(|| format!("label `{name}`: unterminated value"))?;
        out.push((name.to_string(), value));
        s = s[end..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err("expected `,` or `}` after a label".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_groups_and_escapes() {
        let mut t = Textfile::new();
        t.gauge("a_info", "A with \\ and\nnewline")
            .sample(&[("name", "x\"y\\z\nw")], 1.0);
        t.counter("b_total", "B").set(3.0);
        t.gauge("a_info", "ignored second help")
            .sample(&[("name", "other")], 1.0);
        t.gauge("empty", "no samples");
        let text = t.render().unwrap();
        assert_eq!(
            text,
            "# HELP a_info A with \\\\ and\\nnewline\n# TYPE a_info gauge\n\
             a_info{name=\"x\\\"y\\\\z\\nw\"} 1\na_info{name=\"other\"} 1\n\
             # HELP b_total B\n# TYPE b_total counter\nb_total 3\n"
        );
        let p = parse(&text).unwrap();
        assert_eq!(p.value("a_info", &[("name", "x\"y\\z\nw")]), Some(1.0));
        assert_eq!(p.value("b_total", &[]), Some(3.0));
    }

    #[test]
    fn values_round_trip() {
        let mut t = Textfile::new();
        let f = t.gauge("v", "values");
        for (i, v) in [0.0, -1.5, 1e21, 0.1, 1234567890123.0, f64::INFINITY]
            .iter()
            .enumerate()
        {
            f.sample(&[("i", &i.to_string())], *v);
        }
        f.sample(&[("i", "nan")], f64::NAN);
        let p = parse(&t.render().unwrap()).unwrap();
        assert_eq!(p.value("v", &[("i", "2")]), Some(1e21));
        assert_eq!(p.value("v", &[("i", "3")]), Some(0.1));
        assert!(p.value("v", &[("i", "nan")]).unwrap().is_nan());
    }

    #[test]
    fn rejects_what_node_exporter_rejects() {
        let bad = [
            ("x 1 1700000000\n", "timestamp"),
            ("x 1\nx 2\n", "duplicate"),
            ("x{a=\"1\"} 1\nx{a=\"1\"} 2\n", "duplicate"),
            ("# TYPE x gauge\n# TYPE x gauge\nx 1\n", "second TYPE"),
            ("# HELP x a\n# HELP x b\nx 1\n", "second HELP"),
            ("x 1\n# TYPE x gauge\n", "after its samples"),
            ("x 1\ny 1\nx{a=\"b\"} 1\n", "not contiguous"),
            ("1x 1\n", "invalid metric name"),
            ("x{1a=\"b\"} 1\n", "invalid label name"),
            ("x{__a=\"b\"} 1\n", "invalid label name"),
            ("x{a=b} 1\n", "quoted"),
            ("x{a=\"b\\t\"} 1\n", "escape"),
            ("x{a=\"b 1\n", "unterminated"),
            ("x{a=\"b\" 1\n", "expected `,` or `}`"),
            ("x abc\n", "invalid value"),
            ("x\n", "no value"),
            ("# TYPE x info\nx 1\n", "unknown type"),
            ("# TYPE x counter\nx_total 1\n", "without samples"),
            ("x{a=\"1\",a=\"2\"} 1\n", "repeated"),
        ];
        for (text, want) in bad {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        // Accepted: comments, blank lines, histogram suffixes, trailing comma.
        parse("# a comment\n\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\nx{a=\"1\",} 2\n").unwrap();
    }

    #[test]
    fn conflicting_types_fail_render() {
        let mut t = Textfile::new();
        t.gauge("x", "x").set(1.0);
        t.counter("x", "x").set(1.0);
        assert!(t.render().is_err());
    }

    #[test]
    fn writes_atomically_with_checked_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Textfile::new();
        t.gauge("x", "x").set(1.0);
        for bad in ["x.txt", "../x.prom", ".prom", "a/b.prom"] {
            assert!(
                matches!(t.write(dir.path(), bad), Err(TextfileError::BadFileName(_))),
                "{bad}"
            );
        }
        let p = t.write(dir.path(), "x.prom").unwrap();
        assert_eq!(
            std::fs::read_to_string(p).unwrap(),
            "# HELP x x\n# TYPE x gauge\nx 1\n"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.prom")]);
    }
}
