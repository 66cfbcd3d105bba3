//! A string that must never reach a log line, a status document, a diff or a label.
//!
//! `Secret` has no `Display`, prints `***` through `Debug` and serializes as `"***"`, so
//! the compiler — not reviewer vigilance — keeps values out of every output path. The
//! only way to read the clear text is [`Secret::expose`], which is easy to grep for.
//!
//! [`HostKey`] lives here too: it is what turns a secret into a label-safe fingerprint.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

/// The mask printed wherever a secret value would otherwise appear (contract).
pub const MASK: &str = "***";

/// A secret value loaded from the Stack's env file.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The clear text. Call sites are the Docker adapter (container env), HTTP clients
    /// (auth headers) and the keyed spec hash — nothing that prints.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASK)
    }
}

/// The per-host HMAC key (32 random bytes in the state directory). Labels carry
/// keyed fingerprints made with it, so a label never confirms a guessed secret.
#[derive(Clone)]
pub struct HostKey(pub [u8; 32]);

impl std::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostKey(***)")
    }
}

impl HostKey {
    pub fn mac(&self, parts: &[&[u8]]) -> String {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        for p in parts {
            m.update(&(p.len() as u64).to_be_bytes());
            m.update(p);
        }
        hex::encode(m.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_clear_text() {
        let s = Secret::new("hunter2-canary");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(s.expose(), "hunter2-canary");
    }
}
