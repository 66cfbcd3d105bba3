//! Name syntax: resource names (DNS labels), Docker object names and image references.
//! Pure string checks, used by validation.

/// A DNS label: what Kubernetes accepts as a name, and safe in container names.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A Docker-style object name (`a_b` allowed): what compose-era volumes and networks use.
pub fn valid_docker_object_name(s: &str) -> bool {
    s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Checks an image reference: `name[:tag][@sha256:<64 hex>]`.
pub fn check_image(image: &str) -> Result<(), String> {
    if image.is_empty() || image.chars().any(|c| c.is_whitespace()) {
        return Err(format!("invalid image reference `{image}`"));
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let ok = d
            .strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ok {
            return Err(format!(
                "invalid digest in `{image}`: expected `@sha256:` and 64 hex digits"
            ));
        }
    }
    // The tag is what follows the last `:` after the last `/` (a `:` before a `/` is
    // a registry port). Only the tag may hold capitals; repository paths are lowercase.
    let (repo, tag) = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => (&name[..i], Some(&name[i + 1..])),
        _ => (name, None),
    };
    let bad = || Err(format!("invalid image reference `{image}`"));
    if let Some(tag) = tag {
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && !tag.starts_with(['.', '-'])
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return bad();
        }
    }
    let mut parts: Vec<&str> = repo.split('/').collect();
    let first = parts[0];
    if parts.len() > 1 && (first.contains(['.', ':']) || first == "localhost") {
        // Registry host[:port].
        let (host, port) = first.split_once(':').unwrap_or((first, "1"));
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
            || port.is_empty()
            || !port.bytes().all(|b| b.is_ascii_digit())
        {
            return bad();
        }
        parts.remove(0);
    }
    for part in parts {
        let ok = part
            .as_bytes()
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && part.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            });
        if !ok {
            return bad();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("node-exporter"));
        assert!(!valid_name("Node"));
        assert!(!valid_name("-a"));
        assert!(!valid_name(&"a".repeat(64)));
    }

    #[test]
    fn images() {
        assert!(check_image("caddy:2.8-alpine").is_ok());
        assert!(check_image("gcr.io/cadvisor/cadvisor:v0.49.1").is_ok());
        assert!(check_image("127.0.0.1:5000/x:1").is_ok());
        assert!(check_image(&format!("prom/prometheus@sha256:{}", "a".repeat(64))).is_ok());
        assert!(check_image("prom/prometheus@sha256:abc").is_err());
        assert!(check_image("bad image").is_err());
        assert!(check_image("x:").is_err());
        assert!(check_image("grafana/grafana:11.2.0-RC1").is_ok());
        assert!(check_image("localhost:5000/obs/tool").is_ok());
        assert!(check_image("Grafana/Grafana:11.2.0").is_err());
        assert!(check_image("Grafana").is_err());
        assert!(check_image(":latest").is_err());
        assert!(check_image("grafana//grafana").is_err());
        assert!(check_image("/grafana").is_err());
        assert!(check_image("grafana:1:2").is_err());
    }
}
