//! Env-file values as references, never as values.
//!
//! The exporter loads the desired state with every env-file variable that has a value
//! replaced by a *marker* (`U+E000 NAME U+E001`, private-use characters no real text
//! holds). After loading, a marker in a string says "here obsd would have put the value
//! of `NAME`". Kubernetes can take such a value from the Secret in env values, `command`
//! and `args` (`$(VAR)` references to variables defined earlier in the container's
//! `env`); everywhere else the marker is written back as the placeholder `${NAME}` and a
//! warning says so. So no env-file value can reach a manifest.

const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

/// The marker that stands for env-file variable `name`.
pub fn marker(name: &str) -> String {
    format!("{OPEN}{name}{CLOSE}")
}

/// A piece of a loaded string: literal text, or a reference to an env-file variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

/// Splits `s` at its markers.
pub fn pieces(s: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find(OPEN) {
        let after = &rest[i + OPEN.len_utf8()..];
        let Some(j) = after.find(CLOSE) else { break };
        if i > 0 {
            out.push(Piece::Text(&rest[..i]));
        }
        out.push(Piece::Var(&after[..j]));
        rest = &after[j + CLOSE.len_utf8()..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    out
}

/// The env-file variables `s` refers to, in order of appearance.
pub fn vars(s: &str) -> Vec<&str> {
    pieces(s)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Var(v) => Some(v),
            Piece::Text(_) => None,
        })
        .collect()
}

/// Whether `s` holds a marker.
pub fn has_vars(s: &str) -> bool {
    s.contains(OPEN)
}

/// `s` with each marker written as `${NAME}`: for fields Kubernetes cannot fill from a
/// Secret, and for messages.
pub fn placeholders(s: &str) -> String {
    pieces(s)
        .into_iter()
        .map(|p| match p {
            Piece::Text(t) => t.to_string(),
            Piece::Var(v) => format!("${{{v}}}"),
        })
        .collect()
}

/// `s` in Kubernetes' expansion syntax for `env[].value`, `command` and `args`: each
/// marker becomes `$(helper(NAME))` and every literal `$` that Kubernetes would
/// otherwise read as the start of `$$` or `$(…)` is escaped as `$$`.
pub fn expansion(s: &str, helper: impl Fn(&str) -> String) -> String {
    enum Tok<'a> {
        Char(char),
        Ref(&'a str),
    }
    let mut toks = Vec::new();
    for p in pieces(s) {
        match p {
            Piece::Text(t) => toks.extend(t.chars().map(Tok::Char)),
            Piece::Var(v) => toks.push(Tok::Ref(v)),
        }
    }
    let mut out = String::with_capacity(s.len());
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Char('$') => {
                let escape = matches!(
                    toks.get(i + 1),
                    Some(Tok::Char('$')) | Some(Tok::Char('(')) | Some(Tok::Ref(_))
                );
                out.push_str(if escape { "$$" } else { "$" });
            }
            Tok::Char(c) => out.push(*c),
            Tok::Ref(v) => {
                out.push_str("$(");
                out.push_str(&helper(v));
                out.push(')');
            }
        }
    }
    out
}

/// What Kubernetes makes of an expansion string, given the variables it defines: the
/// inverse of [`expansion`], used by tests to prove the round trip.
pub fn kubernetes_expand(s: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let b: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == '$' && i + 1 < b.len() {
            if b[i + 1] == '$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == '(' {
                if let Some(end) = b[i + 2..].iter().position(|c| *c == ')') {
                    let name: String = b[i + 2..i + 2 + end].iter().collect();
                    match lookup(&name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(&name);
                            out.push(')');
                        }
                    }
                    i += end + 3;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_split_and_print() {
        let s = format!("https://{}/x?id={}&y", marker("DOMAIN"), marker("ID"));
        assert_eq!(vars(&s), vec!["DOMAIN", "ID"]);
        assert_eq!(placeholders(&s), "https://${DOMAIN}/x?id=${ID}&y");
        assert_eq!(pieces(&marker("A")), vec![Piece::Var("A")]);
        assert!(!has_vars("plain $x"));
    }

    #[test]
    fn expansion_round_trips_through_kubernetes_rules() {
        let helper = |n: &str| format!("OBSD_ENV_{n}");
        let values = |n: &str| match n {
            "OBSD_ENV_A" => Some("alpha".to_string()),
            "date" => Some("NOPE".to_string()),
            _ => None,
        };
        for (input, want) in [
            ("plain".to_string(), "plain".to_string()),
            (
                "echo $$ $(date) $".to_string(),
                "echo $$ $(date) $".to_string(),
            ),
            ("$$$(".to_string(), "$$$(".to_string()),
            (format!("x${}y", marker("A")), "x$alphay".to_string()),
            (format!("{}$", marker("A")), "alpha$".to_string()),
            (
                "${JOURNEY:-300} (exit $?)".to_string(),
                "${JOURNEY:-300} (exit $?)".to_string(),
            ),
        ] {
            let k = expansion(&input, helper);
            assert_eq!(kubernetes_expand(&k, values), want, "{input:?} → {k:?}");
        }
        assert_eq!(expansion("echo $(date)", helper), "echo $$(date)");
        assert_eq!(expansion(&marker("A"), helper), "$(OBSD_ENV_A)");
    }
}
