//! Located diagnostics: every problem in the desired state names file, line, column and
//! field path, so a person can act on it without guessing.

use crate::desired::yaml::{self, PathSeg, Pos};
use crate::desired::Source;
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about the desired state.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Field path inside the document, e.g. `spec.ports[0].host`; empty for the file.
    pub path: String,
    pub message: String,
}

impl Diagnostic {
    pub fn error(
        file: impl Into<PathBuf>,
        pos: Pos,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: file.into(),
            line: pos.line,
            column: pos.col,
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn warning(
        file: impl Into<PathBuf>,
        pos: Pos,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, pos, path, message)
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {sev}: ",
            self.file.display(),
            self.line,
            self.column
        )?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// The closest candidate to `word`, if it is close enough to be a plausible typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::jaro_winkler(&word.to_ascii_lowercase(), &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// One key of a field path (`k("spec")`).
pub fn k(s: &str) -> PathSeg {
    PathSeg::Key(s.to_string())
}

/// A field path of keys only (`keys(&["spec", "image"])`).
pub fn keys(parts: &[&str]) -> Vec<PathSeg> {
    parts.iter().map(|p| k(p)).collect()
}

/// An error located at `path` of a resource's document.
pub fn err_at(src: &Source, path: &[PathSeg], msg: impl Into<String>) -> Diagnostic {
    Diagnostic::error(&src.file, src.pos(path), yaml::path_string(path), msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("imgae", ["image", "command", "env"]),
            Some("image")
        );
        assert_eq!(
            did_you_mean("dependson", ["dependsOn", "env"]),
            Some("dependsOn")
        );
        assert_eq!(did_you_mean("zzz", ["image", "command"]), None);
    }
}
