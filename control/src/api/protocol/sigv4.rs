//! AWS Signature Version 4: verifying, as AWS services do, and signing, for
//! skiff's own clients of its API (`skiff ps`, `skiff deploy`...).
//!
//! The server rebuilds the canonical request from what it received — the
//! method, path, query, the headers the client chose to sign, and the hash
//! of the body it actually read — and checks the client's HMAC over it.
//! (The `aws-sigv4` crate signs; verifying needs only these steps, so they
//! are written here rather than pulling in the smithy runtime, and signing
//! is the same steps run forward.)

use crate::error::ApiError;
use sha2::{Digest, Sha256};
pub use skiff_channel::sigv4::{amz_date, sign_post};
use skiff_channel::sigv4::{canonical_query, signature, uri_encode};
use std::collections::HashMap;

/// How far a request's `X-Amz-Date` may be from the server's clock.
const MAX_SKEW_SECS: i64 = 15 * 60;

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

impl Authorization {
    /// Parses the header; `None` if it is not SigV4.
    pub fn parse(header: &str) -> Option<Authorization> {
        let rest = header.strip_prefix("AWS4-HMAC-SHA256")?.trim_start();
        let mut credential = None;
        let mut signed = None;
        let mut signature = None;
        for part in rest.split(',') {
            let (k, v) = part.trim().split_once('=')?;
            match k {
                "Credential" => credential = Some(v),
                "SignedHeaders" => signed = Some(v),
                "Signature" => signature = Some(v),
                _ => {}
            }
        }
        let mut scope = credential?.split('/');
        let access_key = scope.next()?.to_string();
        let date = scope.next()?.to_string();
        let region = scope.next()?.to_string();
        let service = scope.next()?.to_string();
        if scope.next()? != "aws4_request" {
            return None;
        }
        Some(Authorization {
            access_key,
            date,
            region,
            service,
            signed_headers: signed?.split(';').map(str::to_ascii_lowercase).collect(),
            signature: signature?.to_ascii_lowercase(),
        })
    }
}

/// The request as received, for verification.
pub struct Received<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    /// Every header, names lowercase; repeated headers in order.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// Parses `X-Amz-Date` (`20261122T101500Z`) into seconds since the epoch.
fn parse_amz_date(s: &str) -> Option<i64> {
    if s.len() != 16 || !s.ends_with('Z') || s.as_bytes().get(8) != Some(&b'T') {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (hh, mm, ss) = (n(9..11)?, n(11..13)?, n(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Checks a request's signature against the secret of its access key.
/// `now` is seconds since the epoch.
pub fn verify(
    req: &Received<'_>,
    credentials: &HashMap<String, String>,
    now: i64,
) -> Result<Authorization, ApiError> {
    let header = |name: &str| {
        req.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    let Some(raw) = header("authorization").first().copied() else {
        return Err(ApiError {
            kind: "MissingAuthenticationTokenException",
            message: "Missing Authentication Token".into(),
            status: 403,
        });
    };
    let auth = Authorization::parse(raw).ok_or_else(|| {
        ApiError::invalid_signature(
            "The Authorization header is not a valid AWS4-HMAC-SHA256 signature.",
        )
    })?;
    let Some(secret) = credentials.get(&auth.access_key) else {
        return Err(ApiError::unrecognized_client(
            "The security token included in the request is invalid.",
        ));
    };
    let amz_date = header("x-amz-date").first().copied().unwrap_or("");
    let Some(signed_at) = parse_amz_date(amz_date) else {
        return Err(ApiError::invalid_signature(
            "The request must carry a valid X-Amz-Date header.",
        ));
    };
    if (now - signed_at).abs() > MAX_SKEW_SECS {
        return Err(ApiError::invalid_signature(format!(
            "Signature expired: {amz_date} is more than 15 minutes from the server's time."
        )));
    }
    if !amz_date.starts_with(&auth.date) {
        return Err(ApiError::invalid_signature(
            "The credential scope's date does not match X-Amz-Date.",
        ));
    }
    if !auth.signed_headers.iter().any(|h| h == "host") {
        return Err(ApiError::invalid_signature(
            "The signed headers must include host.",
        ));
    }
    let mut body_hash = hex::encode(Sha256::digest(req.body));
    if let Some(claimed) = header("x-amz-content-sha256").first() {
        if *claimed == "UNSIGNED-PAYLOAD" {
            // The client signed without the body; so does the check.
            body_hash = (*claimed).to_string();
        } else if *claimed != body_hash {
            return Err(ApiError::invalid_signature(
                "The provided x-amz-content-sha256 header does not match what was computed.",
            ));
        }
    }
    let mut canonical_headers = String::new();
    for name in &auth.signed_headers {
        let values = header(name);
        if values.is_empty() {
            return Err(ApiError::invalid_signature(format!(
                "The signed header {name} is not in the request."
            )));
        }
        let joined = values
            .iter()
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join(",");
        canonical_headers.push_str(&format!("{name}:{joined}\n"));
    }
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        uri_encode(if req.path.is_empty() { "/" } else { req.path }, false),
        canonical_query(req.query),
        canonical_headers,
        auth.signed_headers.join(";"),
        body_hash
    );
    let expected = signature(
        secret,
        &auth.date,
        &auth.region,
        &auth.service,
        amz_date,
        &canonical_request,
    );
    // Constant-time comparison: the signature is a secret-derived MAC.
    let matches = expected.len() == auth.signature.len()
        && expected
            .bytes()
            .zip(auth.signature.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !matches {
        return Err(ApiError::invalid_signature(
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
        ));
    }
    Ok(auth)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example from AWS's SigV4 documentation ("GET with query string",
    // the IAM ListUsers request).
    #[test]
    fn the_documented_example_verifies() {
        let headers = vec![
            ("host".to_string(), "iam.amazonaws.com".to_string()),
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            ),
            ("x-amz-date".to_string(), "20150830T123600Z".to_string()),
            (
                "authorization".to_string(),
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7".to_string(),
            ),
        ];
        let req = Received {
            method: "GET",
            path: "/",
            query: "Action=ListUsers&Version=2010-05-08",
            headers: &headers,
            body: b"",
        };
        let creds = HashMap::from([(
            "AKIDEXAMPLE".to_string(),
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_string(),
        )]);
        let now = parse_amz_date("20150830T123600Z").unwrap();
        let auth = verify(&req, &creds, now).unwrap();
        assert_eq!(auth.region, "us-east-1");

        let wrong = HashMap::from([("AKIDEXAMPLE".to_string(), "other".to_string())]);
        assert_eq!(
            verify(&req, &wrong, now).unwrap_err().kind,
            "InvalidSignatureException"
        );
        assert_eq!(
            verify(&req, &HashMap::new(), now).unwrap_err().kind,
            "UnrecognizedClientException"
        );
        assert!(
            verify(&req, &creds, now + 3600)
                .unwrap_err()
                .message
                .contains("expired")
        );
        let tampered = Received {
            query: "Action=DeleteUser&Version=2010-05-08",
            ..req
        };
        assert_eq!(
            verify(&tampered, &creds, now).unwrap_err().kind,
            "InvalidSignatureException"
        );
    }

    #[test]
    fn amz_dates() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20000301T000000Z"), Some(951_868_800));
        assert_eq!(parse_amz_date("2000-03-01"), None);
        for t in [0, 951_868_800, 1_795_394_878, 4_107_542_399] {
            assert_eq!(parse_amz_date(&amz_date(t)), Some(t));
        }
        assert_eq!(amz_date(1_795_394_878), "20261123T004758Z");
    }

    #[test]
    fn what_sign_post_signs_verifies_and_a_changed_body_does_not() {
        let body = br#"{"cluster":"default"}"#;
        let now = 1_795_394_878;
        let base = [
            ("host", "127.0.0.1:7700"),
            ("content-type", "application/x-amz-json-1.1"),
            (
                "x-amz-target",
                "AmazonEC2ContainerServiceV20141113.ListTasks",
            ),
        ];
        let added = sign_post(&base, body, "AKID", "s3cret", "eu-west-1", "ecs", now);
        let mut headers: Vec<(String, String)> = base
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        headers.extend(added);
        let creds = HashMap::from([("AKID".to_string(), "s3cret".to_string())]);
        let received = |body: &'static [u8]| Received {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body,
        };
        let auth = verify(&received(body), &creds, now).unwrap();
        assert_eq!(
            (auth.region.as_str(), auth.service.as_str()),
            ("eu-west-1", "ecs")
        );
        assert!(verify(&received(b"{}"), &creds, now).is_err());
    }
}
