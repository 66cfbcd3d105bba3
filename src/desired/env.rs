//! The env file and `${VAR}` interpolation.
//!
//! The env file (named by the Stack) holds `KEY=VALUE` lines; every value is a
//! [`Secret`]. Interpolation expands `${VAR}` and `${VAR:-default}` in every scalar of a
//! document before it is typed, so a field's type is checked after expansion. The
//! process environment wins over the env file (as with docker compose).

use crate::desired::diag::Diagnostic;
use crate::desired::yaml::{self, Node};
use crate::desired::EnvFile;
use crate::secret::Secret;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Reads `KEY=VALUE` lines. `Ok(None)` when the file does not exist.
pub(crate) fn read_env_file(path: &Path) -> Result<Option<BTreeMap<String, Secret>>, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read env file {}: {e}", path.display())),
    };
    if !meta.is_file() {
        // The same refusal `read_regular` gives, before the mode check.
        crate::desired::config_files::open_regular(path)
            .map_err(|e| format!("env file {}: {e}", path.display()))?;
    }
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
    let bytes = crate::desired::config_files::read_regular(path, 1024 * 1024)
        .map_err(|e| format!("env file {}: {e}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("env file {} is not valid UTF-8", path.display()))?;
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
pub(crate) fn interpolate(
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

/// Expands one string; errors name the variable. `unset` may supply a stand-in for a variable that has neither a
/// value nor a default (instead of an error).
pub(crate) fn expand_with(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
        expand_with(s, lookup, &|_| None)
    }

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
}
