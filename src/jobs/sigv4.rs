//! AWS Signature Version 4 for the few JSON-protocol calls self-heal makes.
//!
//! Written out (it is short) rather than pulling the AWS SDK's signer and its runtime:
//! canonical request → string to sign → derived key → signature, per the AWS
//! "Create a signed AWS API request" documentation. Only what the App Runner JSON 1.0
//! calls need: no query string, no session token, the payload hash in the canonical
//! request (not sent as a header, which only S3 requires).

use crate::secret::Secret;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Long-term credentials of an IAM user.
pub struct Credentials<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a Secret,
}

/// What to sign. `headers` are the headers sent besides `host` and `x-amz-date` (which
/// the signer adds); all of them are signed.
pub struct Request<'a> {
    pub method: &'a str,
    /// `host[:port]` exactly as sent in the `Host` header.
    pub host: &'a str,
    /// Absolute path, already URI-encoded (`/` for the JSON protocol).
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub payload: &'a [u8],
}

/// Headers to add to the request: `x-amz-date` and `authorization`.
pub fn sign(
    req: &Request<'_>,
    region: &str,
    service: &str,
    now: DateTime<Utc>,
    creds: &Credentials<'_>,
) -> Vec<(&'static str, String)> {
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let date = &amz_date[..8];

    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), normalize_value(v)))
        .collect();
    headers.push(("host".into(), normalize_value(req.host)));
    headers.push(("x-amz-date".into(), amz_date.clone()));
    headers.sort();
    let signed_headers = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();

    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        req.path,
        "", // no query string
        canonical_headers,
        signed_headers,
        hex::encode(Sha256::digest(req.payload)),
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let k_date = hmac(
        format!("AWS4{}", creds.secret_access_key.expose()).as_bytes(),
        date.as_bytes(),
    );
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    let signature = hex::encode(hmac(&k_signing, string_to_sign.as_bytes()));

    vec![
        ("x-amz-date", amz_date),
        (
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
                creds.access_key_id
            ),
        ),
    ]
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// Trim and collapse runs of spaces, as the canonical form requires.
fn normalize_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// The "get-vanilla" case of the AWS SigV4 test suite (published credentials and
    /// expected signature).
    #[test]
    fn aws_test_suite_get_vanilla() {
        let secret = Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE",
            secret_access_key: &secret,
        };
        let now = Utc.with_ymd_and_hms(2015, 8, 30, 12, 36, 0).unwrap();
        let req = Request {
            method: "GET",
            host: "example.amazonaws.com",
            path: "/",
            headers: &[],
            payload: b"",
        };
        let h = sign(&req, "us-east-1", "service", now, &creds);
        assert_eq!(h[0], ("x-amz-date", "20150830T123600Z".to_string()));
        assert_eq!(
            h[1].1,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }
}
