//! Kubernetes names and labels from obsd names.
//!
//! obsd's Service names are already DNS labels; Volume names may hold `_` (the compose
//! names `grafana_data` are kept so data carries over), config sources are paths. Each
//! becomes a DNS-1123 label the same way every time, so the output is deterministic and
//! a person can predict a PVC's name from the Volume's.

/// A DNS-1123 label (lowercase alphanumerics and `-`, at most 63 characters, starting
/// and ending with an alphanumeric) derived from `s`: other characters become `-`, runs
/// of `-` collapse, the result is cut to 63.
pub fn label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut out = out.trim_matches('-').to_string();
    out.truncate(63);
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        "x".into()
    } else {
        out
    }
}

/// A DNS-1035 label (what a Kubernetes Service name must be): a DNS-1123 label that
/// starts with a letter.
pub fn service_name(s: &str) -> String {
    let l = label(s);
    if l.starts_with(|c: char| c.is_ascii_lowercase()) {
        l
    } else {
        label(&format!("s-{l}"))
    }
}

/// Whether `s` is a valid DNS-1123 label (the rule obsd's own names follow).
pub fn is_label(s: &str) -> bool {
    crate::desired::names::valid_name(s)
}

/// A valid ConfigMap / Secret key (`[-._a-zA-Z0-9]+`, not `.`/`..`, not starting with
/// `..`) derived from a relative path: `/` becomes `__`, other characters `_`.
pub fn config_key(rel: &str) -> String {
    let mut out = String::with_capacity(rel.len());
    for c in rel.chars() {
        match c {
            '/' => out.push_str("__"),
            c if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') => out.push(c),
            _ => out.push('_'),
        }
    }
    if out.is_empty() || out == "." || out.starts_with("..") {
        out.insert(0, '_');
    }
    out
}

/// Whether `s` is a valid ConfigMap key.
pub fn is_config_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && s != "."
        && !s.starts_with("..")
}

/// Whether `s` is a valid label value (empty, or at most 63 of `[A-Za-z0-9._-]`
/// starting and ending with an alphanumeric).
pub fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// Whether `s` is a valid label or annotation key: `[prefix/]name`, the prefix a DNS
/// subdomain, the name at most 63 of `[A-Za-z0-9._-]` starting and ending with an
/// alphanumeric.
pub fn is_qualified_key(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let prefix_ok =
        prefix.is_none_or(|p| !p.is_empty() && p.len() <= 253 && p.split('.').all(is_label));
    prefix_ok && !name.is_empty() && is_label_value(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(label("grafana_data"), "grafana-data");
        assert_eq!(
            label("config/loki/loki-config.yml"),
            "config-loki-loki-config-yml"
        );
        assert_eq!(label("__A__b__"), "a-b");
        assert_eq!(label(&"x".repeat(80)).len(), 63);
        assert_eq!(label("!!!"), "x");
        assert_eq!(service_name("3d"), "s-3d");
        assert_eq!(service_name("grafana"), "grafana");
        assert!(is_label(&label("Some.Thing_With-Stuff--")));
    }

    #[test]
    fn keys() {
        assert_eq!(
            config_key("datasources/datasources.yml"),
            "datasources__datasources.yml"
        );
        assert_eq!(config_key("a b+c"), "a_b_c");
        assert_eq!(config_key(".gitignore"), ".gitignore");
        assert_eq!(config_key("../x"), "_..__x");
        for k in ["a", ".gitignore", "x__y.json"] {
            assert!(is_config_key(k));
        }
        assert!(!is_config_key(".."));
        assert!(is_qualified_key("obs.tlsstress.art/config-hash"));
        assert!(is_qualified_key("team"));
        assert!(!is_qualified_key("a/b/c"));
        assert!(!is_qualified_key("-x"));
        assert!(is_label_value("tlsstress-obs"));
        assert!(!is_label_value("a b"));
    }
}
