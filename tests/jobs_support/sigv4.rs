//! The judge of every signed AWS request in the tests: an independent SigV4 check,
//! written from AWS's "Signature Version 4 signing process" documentation and sharing
//! no code with the signer obsd uses (the `aws-sigv4` crate). A fake AWS endpoint
//! rebuilds the canonical request from what arrived on the wire and recomputes the
//! signature; a mismatch is answered like AWS does (403 `InvalidSignatureException`).

use super::Recorded;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

fn hmac_sha256(key: &[u8], msg: &str) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    m.update(msg.as_bytes());
    m.finalize().into_bytes().to_vec()
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Headers every AWS JSON-protocol call must sign.
pub const JSON_SIGNED: [&str; 4] = ["content-type", "host", "x-amz-date", "x-amz-target"];

/// Recompute the signature of a received request (POST to a path without a query
/// string, as the JSON protocols send): the canonical request is rebuilt using the
/// header list the client claims to have signed, which must include `required`.
pub fn check_signature(
    r: &Recorded,
    akid: &str,
    secret: &str,
    region: &str,
    service: &str,
    required: &[&str],
) -> Result<(), String> {
    let auth = r.header("authorization").ok_or("no Authorization header")?;
    let fields = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not AWS4-HMAC-SHA256")?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for f in fields.split(',').map(str::trim) {
        match f.split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed_headers = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => return Err(format!("unexpected field {f}")),
        }
    }
    let (credential, signed_headers, signature) = (
        credential.ok_or("no Credential")?,
        signed_headers.ok_or("no SignedHeaders")?,
        signature.ok_or("no Signature")?,
    );
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5
        || scope[0] != akid
        || scope[2] != region
        || scope[3] != service
        || scope[4] != "aws4_request"
    {
        return Err(format!("bad credential scope {credential}"));
    }
    let amz_date = r.header("x-amz-date").ok_or("no X-Amz-Date")?;
    if amz_date.len() != 16 || amz_date[..8] != *scope[1] {
        return Err(format!(
            "x-amz-date {amz_date} does not match scope date {}",
            scope[1]
        ));
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    if names != sorted {
        return Err("SignedHeaders not sorted".into());
    }
    for must in required {
        if !names.contains(must) {
            return Err(format!("{must} is not signed"));
        }
    }
    let mut canonical = String::new();
    canonical += &r.method;
    canonical += "\n";
    canonical += &r.path;
    canonical += "\n\n"; // empty query string
    for n in &names {
        let v = r.header(n).ok_or(format!("signed header {n} not sent"))?;
        canonical += &format!(
            "{n}:{}\n",
            v.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
    canonical += "\n";
    canonical += signed_headers;
    canonical += "\n";
    canonical += &sha256_hex(&r.body);
    let to_sign = [
        "AWS4-HMAC-SHA256",
        amz_date,
        &scope[1..].join("/"),
        &sha256_hex(canonical.as_bytes()),
    ]
    .join("\n");
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in &scope[1..] {
        key = hmac_sha256(&key, part);
    }
    let expected = hex::encode(hmac_sha256(&key, &to_sign));
    if expected != signature {
        return Err(format!(
            "signature mismatch: client {signature}, recomputed {expected}"
        ));
    }
    Ok(())
}
