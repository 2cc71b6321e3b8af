//! The test harness: a registry on a loopback socket, and helpers to talk
//! to it as a plain HTTP client.

#![allow(dead_code)]

use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};
use skiff_registry::{Digest, Registry, RegistryConfig};
use std::time::Duration;

pub struct Server {
    pub base: String,
    pub client: Client,
    pub registry: Registry,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub dir: tempfile::TempDir,
}

impl Server {
    pub fn start() -> Server {
        Self::start_in(tempfile::tempdir().unwrap(), |_| {})
    }

    pub fn start_in(dir: tempfile::TempDir, configure: impl FnOnce(&mut RegistryConfig)) -> Server {
        Self::start_full(dir, configure, None)
    }

    /// A server whose push hook is set before it serves.
    pub fn start_hooked(dir: tempfile::TempDir, hook: skiff_registry::PushHook) -> Server {
        Self::start_full(dir, |_| {}, Some(hook))
    }

    fn start_full(
        dir: tempfile::TempDir,
        configure: impl FnOnce(&mut RegistryConfig),
        hook: Option<skiff_registry::PushHook>,
    ) -> Server {
        let mut config = RegistryConfig::new(dir.path().join("registry"));
        configure(&mut config);
        let registry = Registry::open(config).unwrap();
        if let Some(hook) = hook {
            registry.on_push(hook);
        }
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", std_listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = registry.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                serving
                    .serve(listener, async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        skiff_registry::remote::ensure_tls_provider();
        let client = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Server {
            base,
            client,
            registry,
            stop: Some(stop),
            thread: Some(thread),
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().unwrap()
    }

    /// Pushes a blob monolithically (POST then PUT) and returns its digest.
    /// Starts an upload session in `repo`; its location.
    pub fn start_upload(&self, repo: &str) -> String {
        let r = self
            .client
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/")))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        location(&r)
    }

    /// How many upload files are on disk.
    pub fn uploads_on_disk(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("registry/uploads"))
            .unwrap()
            .count()
    }

    pub fn push_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let digest = Digest::sha256_of(bytes);
        let location = self.start_upload(repo);
        let r = self
            .client
            .put(self.url(&format!("{location}?digest={digest}")))
            .body(bytes.to_vec())
            .send()
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().unwrap_or_default()
        );
        digest
    }

    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Response {
        self.client
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .unwrap()
    }

    /// Stops the server and opens the same data again in a new one.
    pub fn restart(mut self) -> Server {
        self.shutdown();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Server::start_in(dir, |_| {})
    }

    /// Stops the server (its runtime, and whatever its push hook was
    /// doing, end with it) and serves the same data again with `hook`.
    pub fn restart_hooked(mut self, hook: skiff_registry::PushHook) -> Server {
        self.shutdown();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Server::start_hooked(dir, hook)
    }

    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub fn location(r: &Response) -> String {
    r.headers()
        .get("location")
        .expect("a Location header")
        .to_str()
        .unwrap()
        .to_string()
}

pub fn header(r: &Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// The single error code of an OCI error body.
pub fn error_code(r: Response) -> String {
    let body: Value = r.json().expect("an OCI error body");
    body["errors"][0]["code"]
        .as_str()
        .expect("errors[0].code")
        .to_string()
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub fn image_manifest(config: &Digest, config_len: usize, layers: &[(&Digest, usize)]) -> Vec<u8> {
    let layers: Vec<Value> = layers
        .iter()
        .map(|(d, n)| json!({"mediaType": "application/wasm", "digest": d.to_string(), "size": n}))
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": config.to_string(), "size": config_len},
        "layers": layers,
    }))
    .unwrap()
}

/// Pushes `wasm` as a CNCF Wasm artifact (`config` as its config) to
/// `repo:tag` (or untagged, by digest, if `tag` is None); returns the
/// manifest's digest.
pub fn push_wasm(s: &Server, repo: &str, tag: Option<&str>, wasm: &[u8], config: &[u8]) -> Digest {
    let layer = s.push_blob(repo, wasm);
    let c = s.push_blob(repo, config);
    let body = image_manifest(&c, config.len(), &[(&layer, wasm.len())]);
    let digest = Digest::sha256_of(&body);
    let reference = tag.map_or_else(|| digest.to_string(), str::to_string);
    let r = s.push_manifest(repo, &reference, OCI_MANIFEST, &body);
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().unwrap_or_default()
    );
    digest
}

/// Waits (up to 20 s) until `done` holds, polling; panics naming `what`
/// otherwise.
pub fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a future to completion on a runtime of its own.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
