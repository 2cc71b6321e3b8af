//! AWS Signature Version 4 signing, shared by every skiff client of the
//! control plane's API: the people's commands (`skiff ps`, `deploy`) and
//! agents, which sign their registration and their channel's opening
//! request with the credentials the cluster gave them. The control plane
//! verifies with the same steps (`skiff_control::sigv4`).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length: this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// SigV4's URI encoding (RFC 3986 unreserved characters kept).
pub fn uri_encode(s: &str, encode_slash: bool) -> String {
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

/// A query string in SigV4's canonical form: pairs encoded, then sorted.
pub fn canonical_query(query: &str) -> String {
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

/// The hex signature of a canonical request.
pub fn signature(
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

/// Who signs, and for which region and service.
#[derive(Debug, Clone, Copy)]
pub struct Signer<'a> {
    pub access_key: &'a str,
    pub secret: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

/// Signs a request: the headers to send with it (`x-amz-date`,
/// `x-amz-content-sha256`, `authorization`). `headers` are the other
/// headers to sign (at least `host`); `query` is the raw query string.
pub fn sign(
    signer: Signer<'_>,
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
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
    let canonical_request = format!(
        "{method}\n{}\n{}\n{canonical_headers}\n{names}\n{body_hash}",
        uri_encode(if path.is_empty() { "/" } else { path }, false),
        canonical_query(query),
    );
    let date = &amz_date[..8];
    let Signer {
        access_key,
        secret,
        region,
        service,
    } = signer;
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

/// Signs a `POST /` AWS JSON request (see [`sign`]).
pub fn sign_post(
    headers: &[(&str, &str)],
    body: &[u8],
    access_key: &str,
    secret: &str,
    region: &str,
    service: &str,
    epoch_secs: i64,
) -> Vec<(String, String)> {
    let signer = Signer {
        access_key,
        secret,
        region,
        service,
    };
    sign(signer, "POST", "/", "", headers, body, epoch_secs)
}
