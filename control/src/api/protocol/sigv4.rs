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
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

type HmacSha256 = Hmac<Sha256>;

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

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length: this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn uri_encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if !encode_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (uri_encode(&k, true), uri_encode(&v, true)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
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

/// The hex signature of a canonical request.
fn signature(
    secret: &str,
    date: &str,
    region: &str,
    service: &str,
    amz_date: &str,
    canonical_request: &str,
) -> String {
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    hex::encode(hmac(&k_signing, string_to_sign.as_bytes()))
}

/// Formats seconds since the epoch as `X-Amz-Date` (`20261122T101500Z`).
pub fn amz_date(epoch_secs: i64) -> String {
    let days = epoch_secs.div_euclid(86_400);
    let secs = epoch_secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Signs a `POST /` AWS JSON request: the headers to send with it
/// (`x-amz-date`, `x-amz-content-sha256`, `authorization`). `headers`
/// are the other headers to sign (`host`, `content-type`,
/// `x-amz-target`), names lowercase.
#[allow(clippy::too_many_arguments)]
pub fn sign_post(
    headers: &[(&str, &str)],
    body: &[u8],
    access_key: &str,
    secret: &str,
    region: &str,
    service: &str,
    epoch_secs: i64,
) -> Vec<(String, String)> {
    let amz_date = amz_date(epoch_secs);
    let body_hash = hex::encode(Sha256::digest(body));
    let mut signed: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    signed.push(("x-amz-date".into(), amz_date.clone()));
    signed.push(("x-amz-content-sha256".into(), body_hash.clone()));
    signed.sort();
    let canonical_headers: String = signed.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let names = signed
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request = format!("POST\n/\n\n{canonical_headers}\n{names}\n{body_hash}");
    let date = &amz_date[..8];
    let sig = signature(secret, date, region, service, &amz_date, &canonical_request);
    vec![
        ("x-amz-date".into(), amz_date.clone()),
        ("x-amz-content-sha256".into(), body_hash),
        (
            "authorization".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential={access_key}/{date}/{region}/{service}/aws4_request, SignedHeaders={names}, Signature={sig}"
            ),
        ),
    ]
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
