//! Talking to registries as a client (ours or anyone's): pushing a Wasm
//! binary as a CNCF artifact, and pulling any shape of Wasm image down to
//! its binary, with oci-client.
//!
//! Plain HTTP is used for loopback registries and for those named
//! insecure; everything else is HTTPS. Blob digests are verified by
//! oci-client as they stream; manifest digests here.

use crate::artifact::{self, RunConfig, WasmSource};
use crate::digest::Digest;
use crate::manifest::{self, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use std::pin::Pin;
use std::task::{Context, Poll};

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// Registries (`host[:port]`) spoken to over plain HTTP, besides the
    /// loopback ones, which always are.
    pub insecure_registries: Vec<String>,
    /// Credentials per registry (`host[:port]` → user, password).
    pub credentials: Vec<(String, Credentials)>,
    /// How long connecting to a registry may take. Default: 30 s.
    pub connect_timeout: std::time::Duration,
    /// How long a registry may send nothing while a request is answered
    /// (ECS's `ECS_IMAGE_PULL_INACTIVITY_TIMEOUT`). Default: 1 minute.
    pub read_timeout: std::time::Duration,
    /// The user agent requests carry (None: oci-client's).
    pub user_agent: Option<&'static str>,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            insecure_registries: Vec::new(),
            credentials: Vec::new(),
            connect_timeout: std::time::Duration::from_secs(30),
            read_timeout: std::time::Duration::from_secs(60),
            user_agent: None,
        }
    }
}

/// A username and password (or `AWS` and a token).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credentials {
    /// The user.
    pub username: String,
    /// The secret.
    pub password: String,
}

/// Pulling or pushing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// The reference does not parse.
    #[error("{reference:?} is not an image reference: {reason}")]
    BadReference {
        /// What was given.
        reference: String,
        /// Why it is not a reference.
        reason: String,
    },
    /// The image is something skiff cannot run.
    #[error("{reference} cannot run on skiff: it is {what}")]
    Unrunnable {
        /// The image.
        reference: String,
        /// What it is and why skiff refuses it.
        what: String,
    },
    /// Content did not match its digest.
    #[error("{reference}: {detail}")]
    Corrupt {
        /// The image.
        reference: String,
        /// What did not match.
        detail: String,
    },
    /// The registry or the network failed, or refused.
    #[error("{reference}: {detail}")]
    Registry {
        /// The image.
        reference: String,
        /// What the registry said.
        detail: String,
    },
}

/// A pulled image: its Wasm binary and how its config says to run it.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The reference, normalised (`registry/repository:tag`).
    pub reference: String,
    /// The digest of the manifest that was resolved.
    pub manifest_digest: Digest,
    /// The digest the reference named: the manifest's, or the index's it
    /// was picked from. A tag that still names it names the same image.
    pub reference_digest: Digest,
    /// The Wasm binary.
    pub wasm: Vec<u8>,
    /// The binary's sha256: its layer's digest when the layer is the
    /// binary (checked as it arrived), else computed.
    pub wasm_digest: Digest,
    /// The file the binary was read from, when it is a layer of a
    /// registry in this process, whole (see [`crate::images::BlobFiles`]):
    /// the store links it rather than writing the binary again.
    pub layer_file: Option<std::path::PathBuf>,
    /// Arguments and environment from an image config, if any.
    pub run: RunConfig,
    /// How long resolving took: the manifest (and an index's entry) and
    /// the image config, each checked against its digest.
    pub resolve: std::time::Duration,
    /// How long the layer took to arrive. Its digest is checked as its
    /// bytes arrive (oci-client hashes the stream), so the check is in
    /// this time, not after it.
    pub download: std::time::Duration,
}

/// Parses an image reference (`[registry/]repository[:tag][@digest]`).
pub fn parse_reference(reference: &str) -> Result<Reference, RemoteError> {
    let parts =
        crate::names::parse_reference(reference).map_err(|reason| RemoteError::BadReference {
            reference: reference.to_string(),
            reason,
        })?;
    Ok(match (parts.tag, parts.digest) {
        (Some(tag), Some(digest)) => {
            Reference::with_tag_and_digest(parts.registry, parts.repository, tag, digest)
        }
        (None, Some(digest)) => Reference::with_digest(parts.registry, parts.repository, digest),
        (tag, None) => Reference::with_tag(
            parts.registry,
            parts.repository,
            tag.unwrap_or_else(|| "latest".into()),
        ),
    })
}

/// Is `registry` (`host[:port]`) on this machine's loopback?
pub fn is_loopback(registry: &str) -> bool {
    let host = registry
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map(|(h, _)| h)
        .unwrap_or(registry)
        .trim_start_matches('[')
        .trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Makes ring the process's TLS provider, once (reqwest is built without
/// one of its own). Anything that builds an HTTP client calls it first.
pub fn ensure_tls_provider() {
    static TLS: std::sync::Once = std::sync::Once::new();
    TLS.call_once(|| {
        // Another part of the process may have chosen already; either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

pub(crate) fn client_for(reference: &Reference, options: &RemoteOptions) -> (Client, RegistryAuth) {
    ensure_tls_provider();
    let registry = reference.resolve_registry().to_string();
    let credentials = options
        .credentials
        .iter()
        .find(|(r, _)| *r == registry)
        .map(|(_, c)| c.clone());
    let auth = credentials
        .as_ref()
        .map(|c| RegistryAuth::Basic(c.username.clone(), c.password.clone()))
        .unwrap_or(RegistryAuth::Anonymous);
    // One client per registry and settings, kept: making one (a TLS
    // configuration with its root certificates) took longer than pulling
    // a small image from a loopback registry, and a kept one reuses its
    // connections and tokens. The credentials are part of the key, so a
    // token got with one identity never serves another.
    let key = ClientKey {
        registry: registry.clone(),
        plain: is_loopback(&registry) || options.insecure_registries.contains(&registry),
        connect_timeout: options.connect_timeout,
        read_timeout: options.read_timeout,
        user_agent: options.user_agent,
        credentials: credentials.map(|c| (c.username, c.password)),
    };
    if let Ok(clients) = CLIENTS.lock()
        && let Some(client) = clients.get(&key)
    {
        return (client.clone(), auth);
    }
    let defaults = ClientConfig::default();
    let plain = if key.plain {
        vec![registry.clone()]
    } else {
        Vec::new()
    };
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(plain),
        connect_timeout: Some(options.connect_timeout),
        read_timeout: Some(options.read_timeout),
        user_agent: options.user_agent.unwrap_or(defaults.user_agent),
        ..defaults
    });
    if let Ok(mut clients) = CLIENTS.lock() {
        // Bounded: registries and identities a process talks to are few.
        if clients.len() >= 256 {
            clients.clear();
        }
        clients.insert(key, client.clone());
    }
    (client, auth)
}

/// Makes (and keeps) the client for `registry` now, so the first pull from
/// it does not wait for that: its TLS configuration reads the system's
/// root certificates, about 10 ms of a first start.
pub fn prepare_client(registry: &str, options: &RemoteOptions) -> Result<(), RemoteError> {
    let image = parse_reference(&format!("{registry}/skiff/prepare:latest"))?;
    client_for(&image, options);
    Ok(())
}

/// What a kept client was made for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    registry: String,
    plain: bool,
    connect_timeout: std::time::Duration,
    read_timeout: std::time::Duration,
    user_agent: Option<&'static str>,
    credentials: Option<(String, String)>,
}

/// The kept clients.
static CLIENTS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<ClientKey, Client>>,
> = std::sync::LazyLock::new(Default::default);

/// Pushes `wasm` to `reference` as a CNCF Wasm OCI artifact and returns the
/// manifest's digest. The artifact records now as its creation time.
pub async fn push(
    reference: &str,
    wasm: &[u8],
    options: &RemoteOptions,
) -> Result<Digest, RemoteError> {
    push_as_of(reference, wasm, std::time::SystemTime::now(), options).await
}

/// `push`, with the artifact's creation time given: the same binary pushed
/// as of the same time is the same manifest, whenever it is pushed (what
/// reproducible builds ask for with `SOURCE_DATE_EPOCH`).
pub async fn push_as_of(
    reference: &str,
    wasm: &[u8],
    created: std::time::SystemTime,
    options: &RemoteOptions,
) -> Result<Digest, RemoteError> {
    let image = parse_reference(reference)?;
    let registry_error = |e: oci_client::errors::OciDistributionError| RemoteError::Registry {
        reference: image.whole(),
        detail: describe(&e, options),
    };
    let packaged = artifact::package(wasm, created).map_err(|what| RemoteError::Unrunnable {
        reference: image.whole(),
        what: format!("not a Wasm binary ({what})"),
    })?;
    let (client, auth) = client_for(&image, options);
    client
        .auth(&image, &auth, oci_client::RegistryOperation::Push)
        .await
        .map_err(registry_error)?;
    client
        .push_blob(&image, wasm.to_vec(), &packaged.layer_digest.to_string())
        .await
        .map_err(registry_error)?;
    let config_digest = Digest::sha256_of(&packaged.config);
    client
        .push_blob(&image, packaged.config.clone(), &config_digest.to_string())
        .await
        .map_err(registry_error)?;
    client
        .push_manifest_raw(
            &image,
            packaged.manifest.clone(),
            http::HeaderValue::from_static(OCI_MANIFEST),
        )
        .await
        .map_err(registry_error)?;
    Ok(Digest::sha256_of(&packaged.manifest))
}

/// Pulls `reference` and returns its Wasm binary. `progress` is told how
/// many bytes of the binary's layer arrived, and of how many.
pub async fn pull(
    reference: &str,
    options: &RemoteOptions,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<Pulled, RemoteError> {
    pull_from(reference, options, progress, None).await
}

/// [`pull`], reading the binary's layer from the file `local` names for
/// it, if it names one whose content is that layer's, instead of
/// downloading it.
pub(crate) async fn pull_from(
    reference: &str,
    options: &RemoteOptions,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
    local: Option<&crate::images::BlobFiles>,
) -> Result<Pulled, RemoteError> {
    let image = parse_reference(reference)?;
    let whole = image.whole();
    let registry_error = |e: oci_client::errors::OciDistributionError| RemoteError::Registry {
        reference: whole.clone(),
        detail: describe(&e, options),
    };
    let unrunnable = |what: String| RemoteError::Unrunnable {
        reference: whole.clone(),
        what,
    };
    // Resolving counts from here: the client (made, or kept), then the
    // manifests and config.
    let started = std::time::Instant::now();
    let (client, auth) = client_for(&image, options);

    let (bytes, _) = client
        .pull_manifest_raw(&image, &auth, &ACCEPT)
        .await
        .map_err(registry_error)?;
    let mut manifest_digest = verified_digest(&whole, image.digest(), &bytes)?;
    let reference_digest = manifest_digest.clone();
    let mut parsed =
        manifest::parse(&bytes, "").map_err(|e| unrunnable(format!("not an image ({e})")))?;
    if parsed.is_index() {
        let entry = artifact::pick_wasm_platform(&parsed).map_err(&unrunnable)?;
        let child = image.clone_with_digest(entry.digest.clone());
        let (bytes, _) = client
            .pull_manifest_raw(&child, &auth, &ACCEPT)
            .await
            .map_err(registry_error)?;
        manifest_digest = verified_digest(&whole, Some(&entry.digest), &bytes)?;
        parsed =
            manifest::parse(&bytes, "").map_err(|e| unrunnable(format!("not an image ({e})")))?;
        if parsed.is_index() {
            return Err(unrunnable(
                "an index whose wasm entry is another index".into(),
            ));
        }
    }
    // An image config says os/architecture and how to run the binary.
    let config_bytes = match &parsed.config {
        Some(config)
            if config.media_type.contains("image.config")
                || config.media_type.contains("container.image") =>
        {
            let mut buf = Vec::new();
            client
                .pull_blob(&image, config.digest.as_str(), &mut buf)
                .await
                .map_err(registry_error)?;
            Some(buf)
        }
        _ => None,
    };
    let source = artifact::locate_wasm(&parsed, config_bytes.as_deref()).map_err(&unrunnable)?;
    let run = config_bytes
        .as_deref()
        .map(artifact::run_config)
        .unwrap_or_default();
    let (digest, tar) = match &source {
        WasmSource::Layer(d) => (d.clone(), None),
        WasmSource::TarLayer { digest, gzip } => (digest.clone(), Some(*gzip)),
    };
    let total = parsed
        .layers
        .iter()
        .find(|l| l.digest == digest)
        .map(|l| u64::try_from(l.size).unwrap_or(0))
        .unwrap_or(0);
    let resolved = std::time::Instant::now();
    let layer_digest = digest.parse::<Digest>().ok();
    let local_file = local.and_then(|files| files(image.repository(), digest.as_str()));
    let read = match (local_file, &layer_digest) {
        (Some(file), Some(expected)) => read_blob_file(file, expected.clone()).await,
        _ => None,
    };
    let (layer, layer_file) = match read {
        Some((bytes, file)) => {
            progress(bytes.len() as u64, total);
            (bytes, Some(file))
        }
        None => {
            let mut sink = Progress {
                bytes: Vec::new(),
                total,
                report: progress,
            };
            client
                .pull_blob(&image, digest.as_str(), &mut sink)
                .await
                .map_err(registry_error)?;
            (sink.bytes, None)
        }
    };
    let download = resolved.elapsed();
    // Linked into the store only if the file is the binary itself.
    let layer_file = layer_file.filter(|_| tar.is_none());
    let wasm = match tar {
        None => layer,
        Some(gzip) => {
            artifact::wasm_from_tar(&layer, gzip, run.wasm_path.as_deref()).map_err(&unrunnable)?
        }
    };
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err(unrunnable(
            "an image whose layer is not a Wasm binary".into(),
        ));
    }
    // Hashing 8 MB takes milliseconds: not again when the layer's digest,
    // checked, is the binary's.
    let wasm_digest = match layer_digest {
        Some(d) if tar.is_none() && d.algorithm() == crate::digest::Algorithm::Sha256 => d,
        _ => Digest::sha256_of(&wasm),
    };
    Ok(Pulled {
        reference: whole.clone(),
        manifest_digest,
        reference_digest,
        wasm,
        wasm_digest,
        layer_file,
        run,
        resolve: resolved.duration_since(started),
        download,
    })
}

/// The content of a local blob file, if it is the blob `expected`
/// (checked: a damaged file is downloaded instead, and the registry's
/// answer then says what is wrong), with the file.
async fn read_blob_file(
    file: std::path::PathBuf,
    expected: Digest,
) -> Option<(Vec<u8>, std::path::PathBuf)> {
    tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&file).ok()?;
        (Digest::of(expected.algorithm(), &bytes) == expected).then_some((bytes, file))
    })
    .await
    .ok()
    .flatten()
}

/// The digest `reference`'s tag names now (a manifest HEAD, as `docker
/// pull` asks before it downloads anything), without pulling it.
pub async fn resolve(reference: &str, options: &RemoteOptions) -> Result<Digest, RemoteError> {
    let image = parse_reference(reference)?;
    let whole = image.whole();
    let (client, auth) = client_for(&image, options);
    let named = client
        .fetch_manifest_digest(&image, &auth)
        .await
        .map_err(|e| RemoteError::Registry {
            reference: whole.clone(),
            detail: describe(&e, options),
        })?;
    named.parse::<Digest>().map_err(|e| RemoteError::Registry {
        reference: whole,
        detail: format!("the registry named the manifest {named:?}: {e}"),
    })
}

/// The manifest types asked of a registry.
pub(crate) const ACCEPT: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// The digest of manifest bytes, checked against the one asked for.
pub(crate) fn verified_digest(
    reference: &str,
    expected: Option<&str>,
    bytes: &[u8],
) -> Result<Digest, RemoteError> {
    let corrupt = |detail: String| RemoteError::Corrupt {
        reference: reference.to_string(),
        detail,
    };
    match expected {
        Some(expected) => {
            let expected: Digest = expected.parse().map_err(|e| corrupt(format!("{e}")))?;
            let actual = Digest::of(expected.algorithm(), bytes);
            if actual != expected {
                return Err(corrupt(format!(
                    "the manifest's digest is {actual}, not {expected}"
                )));
            }
            Ok(actual)
        }
        None => Ok(Digest::sha256_of(bytes)),
    }
}

/// Collects a blob in memory and reports progress.
struct Progress<'a> {
    bytes: Vec<u8>,
    total: u64,
    report: &'a (dyn Fn(u64, u64) + Send + Sync),
}

impl tokio::io::AsyncWrite for Progress<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.bytes.extend_from_slice(buf);
        (self.report)(self.bytes.len() as u64, self.total);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Checks that `registry` accepts the credentials `options` hold for it.
pub async fn check_login(registry: &str, options: &RemoteOptions) -> Result<(), RemoteError> {
    // Any repository will do: the registry answers the challenge the same.
    let probe = parse_reference(&format!("{registry}/skiff/login:probe"))?;
    let (client, auth) = client_for(&probe, options);
    let failed = |e: OciDistributionError| RemoteError::Registry {
        reference: registry.to_string(),
        detail: format!("login failed: {}", describe(&e, options)),
    };
    // Fetches a bearer token if the registry asks for one...
    client
        .auth(&probe, &auth, oci_client::RegistryOperation::Pull)
        .await
        .map_err(failed)?;
    // ...but Basic credentials are only checked by a request that uses
    // them: anything but "unauthorized" means they were accepted.
    match client.list_tags(&probe, &auth, Some(1), None).await {
        Ok(_) => Ok(()),
        Err(e) if refused(&e) => Err(failed(e)),
        Err(_) => Ok(()),
    }
}

/// What a registry said, for people: its OCI error codes and messages
/// rather than the raw body oci-client quotes.
fn describe(e: &OciDistributionError, options: &RemoteOptions) -> String {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: String,
        #[serde(default)]
        message: String,
    }
    let said = |body: &str| {
        serde_json::from_str::<Envelope>(body).ok().map(|env| {
            env.errors
                .iter()
                .map(|e| format!("{}: {}", e.code, e.message))
                .collect::<Vec<_>>()
                .join("; ")
        })
    };
    match e {
        OciDistributionError::ServerError { code, message, .. } => match said(message) {
            Some(said) => format!("the registry answered {code}: {said}"),
            None => e.to_string(),
        },
        OciDistributionError::RegistryError { envelope, .. } => {
            // oci-client's text is the URL and "envelope: OCI API errors:
            // [OCI API error: …]"; the codes and messages are what matter.
            let said = envelope
                .errors
                .iter()
                .map(|e| match serde_json::to_value(&e.code) {
                    Ok(serde_json::Value::String(code)) if e.message.is_empty() => code,
                    Ok(serde_json::Value::String(code)) => format!("{code}: {}", e.message),
                    _ => e.message.clone(),
                })
                .collect::<Vec<_>>()
                .join("; ");
            format!("the registry answered {said}")
        }
        OciDistributionError::RequestError(r) => {
            // reqwest says only that sending failed: the causes say why.
            let mut out = r.to_string();
            let mut cause = std::error::Error::source(r);
            while let Some(c) = cause {
                out.push_str(": ");
                out.push_str(&c.to_string());
                cause = c.source();
            }
            if r.is_timeout() && r.is_connect() {
                out.push_str(&format!(
                    " (no connection within {:?})",
                    options.connect_timeout
                ));
            } else if r.is_timeout() {
                out.push_str(&format!(
                    " (the registry sent nothing for {:?}, the image pull inactivity timeout)",
                    options.read_timeout
                ));
            }
            out
        }
        _ => e.to_string(),
    }
}

/// Did the registry refuse the credentials (rather than the request)?
fn refused(e: &OciDistributionError) -> bool {
    use oci_client::errors::OciErrorCode;
    match e {
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => true,
        OciDistributionError::ServerError { code, .. } => *code == 401 || *code == 403,
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_plain_http() {
        for r in [
            "localhost:5050",
            "127.0.0.1:5050",
            "127.18.0.3",
            "[::1]:5000",
            "LOCALHOST",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "ghcr.io",
            "10.0.0.1:5000",
            "registry.example.com:443",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
    }
}
