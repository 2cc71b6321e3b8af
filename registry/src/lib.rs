//! skiff's registry: an OCI distribution (v1.1) registry for Wasm
//! artifacts, with ECR's repository behaviour on top.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use skiff_registry::{Registry, RegistryConfig};
//! let registry = Registry::open(RegistryConfig::new("/var/lib/skiff/registry"))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5050").await?;
//! registry.serve(listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```

mod admin;
pub mod artifact;
pub mod auth;
mod blobs;
pub mod cache;
mod db;
pub mod digest;
pub mod error;
mod gc;
pub mod images;
pub mod lifecycle;
pub mod manifest;
pub mod names;
pub mod remote;
pub mod replicate;
pub mod repos;
pub mod scan;
mod server;
pub mod templates;

pub use admin::{AdminError, ImageDeletion};
pub use auth::{AuthMode, ChallengeKind, IssuedToken};
pub use digest::{Algorithm, Digest};
pub use gc::GcReport;
pub use server::RegistryConfig;

use hyper::service::service_fn;
use skiff_http_server::ServerConfig;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Counters of what a registry served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistryStats {
    /// Manifest GETs answered.
    pub manifests_served: u64,
    /// Blob GETs answered.
    pub blobs_served: u64,
    /// Manifests stored by this process (pushes, pull-through fills).
    pub manifests_stored: u64,
}

/// An image a push has just stored, with its Wasm binary.
#[derive(Debug, Clone)]
pub struct PushedImage {
    /// The repository pushed to.
    pub repository: String,
    /// The image manifest's digest.
    pub digest: String,
    /// The binary the image runs.
    pub wasm: Vec<u8>,
    /// Handed over again: the process ended (a stop or a crash) before
    /// the hook was done with this image the last time.
    pub resumed: bool,
}

/// Told of each pushed image manifest that holds a Wasm binary skiff
/// runs (not of indexes, whose entries are pushed as manifests of their
/// own, nor of referrers such as signatures and scan reports), off the
/// push's path: the push is answered without waiting for it. Images are
/// handed over one at a time, each read from storage once the future of
/// the one before has finished (so it must finish), so a burst of pushes
/// holds one binary in memory, not all of them. The queue is kept with the
/// manifests: an image whose hook had not finished when the process ended
/// (a crash, a restart) is handed over again when the registry next serves
/// with a hook, so the hook may see an image twice.
pub type PushHook =
    Arc<dyn Fn(PushedImage) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The registry could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the registry: {0}")]
pub struct OpenError(#[from] error::Internal);

/// A registry over one data directory. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<server::Inner>,
}

impl Registry {
    /// Opens (creating if needed) the registry stored under `config.root`.
    pub fn open(config: RegistryConfig) -> Result<Registry, OpenError> {
        Ok(Registry {
            inner: Arc::new(server::Inner::open(config)?),
        })
    }

    /// Serves the distribution API on `listener` until `shutdown`
    /// completes, then finishes the requests in flight and returns.
    ///
    /// Only one process serves a directory at a time (an error otherwise).
    /// Uploads a crash interrupted are discarded, scans it interrupted run
    /// again, and while serving the registry applies lifecycle policies
    /// and collects garbage every
    /// [`RegistryConfig::maintenance_interval`] and after every delete.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        self.inner.start_serving()?;
        let background = self.start_background();
        let served = self.accept_loop(listener, shutdown).await;
        background.abort();
        self.inner.stop_serving();
        served
    }

    /// Resumes interrupted scans and the push hook's queue, and runs the
    /// maintenance loop.
    fn start_background(&self) -> tokio::task::JoinHandle<()> {
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            // One task: aborted as a whole when serving ends.
            tokio::join!(inner.announce_pending(), resume_scans_and_maintain(&inner));
        })
    }

    async fn accept_loop(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        // Anyone who can reach the registry may hold connections: bound
        // them, in all and per peer.
        let config = ServerConfig {
            // The distribution spec's error document.
            busy: (
                "application/json",
                r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"too many connections from this address; retry"}]}"#,
            ),
            ..ServerConfig::public("registry", 1024)
        };
        skiff_http_server::serve(listener, &config, shutdown, |_peer| {
            let inner = Arc::clone(&self.inner);
            service_fn(move |req| {
                let inner = Arc::clone(&inner);
                async move { Ok::<_, Infallible>(inner.handle(req).await) }
            })
        })
        .await;
        Ok(())
    }

    /// Calls `hook` after each push of an image (see [`PushHook`]),
    /// replacing any hook set before. Set before [`Registry::serve`], it is
    /// also handed the images a previous process did not finish with. `skiff serve` compiles pushed images
    /// with it, so a new image's first task starts from compiled code.
    pub fn on_push(&self, hook: PushHook) {
        if let Ok(mut h) = self.inner.on_push.write() {
            *h = Some(hook);
        }
    }

    /// What `tag` of `repository` names now (its manifest's digest), read
    /// from the registry's database without HTTP: how an agent in the same
    /// process asks at every task start whether a tag moved. `None` if the
    /// tag names nothing here, or if a pull would do more than read it (a
    /// pull-through cache's repository, whose tags a pull refreshes from
    /// upstream): then the question goes over HTTP.
    pub fn tag_digest(&self, repository: &str, tag: &str) -> Option<String> {
        let db = &self.inner.db;
        let rules = db.cache_rules().ok()?;
        if rules
            .iter()
            .any(|r| r.upstream_repository(repository).is_some())
        {
            return None;
        }
        db.tag_digest(repository, tag).ok().flatten()
    }

    /// The file holding blob `digest` of `repository`, for a puller in the
    /// same process to read (or link) instead of downloading it: `None`
    /// if the repository does not hold it (a pull-through cache's
    /// repository, before its first pull, or a bad digest), and the pull
    /// asks over HTTP as usual. The file is never written again, and a
    /// garbage collection only unlinks it.
    pub fn blob_file(&self, repository: &str, digest: &str) -> Option<std::path::PathBuf> {
        let digest: Digest = digest.parse().ok()?;
        self.inner
            .db
            .linked_blob(repository, &digest)
            .ok()
            .flatten()?;
        let path = self.inner.blobs.path(&digest);
        path.is_file().then_some(path)
    }

    /// How many manifests and blobs the registry has served (GET).
    pub fn stats(&self) -> RegistryStats {
        use std::sync::atomic::Ordering::Relaxed;
        RegistryStats {
            manifests_served: self.inner.manifests_served.load(Relaxed),
            blobs_served: self.inner.blobs_served.load(Relaxed),
            manifests_stored: self.inner.db.manifests_stored.load(Relaxed),
        }
    }

    /// Deletes blobs nothing references any more (see [`GcReport`]). In
    /// a process that does not serve the directory while another does,
    /// nothing is collected ([`GcReport::deferred`]): the server does it.
    pub async fn collect_garbage(&self) -> Result<GcReport, error::Internal> {
        self.inner.collect_garbage().await
    }
}

/// Resumes interrupted scans, then applies lifecycle policies and collects
/// garbage every [`RegistryConfig::maintenance_interval`] and when told to.
async fn resume_scans_and_maintain(inner: &Arc<server::Inner>) {
    match inner.off_thread(|i| i.db.scans_in_progress()).await {
        Ok(pending) => {
            for (repo, digest) in pending {
                if let Err(e) = inner.start_scan(&repo, &digest).await {
                    tracing::warn!(%repo, %digest, "cannot resume a scan: {e}");
                }
            }
        }
        Err(e) => tracing::warn!("cannot list interrupted scans: {e}"),
    }
    loop {
        tokio::select! {
            () = tokio::time::sleep(inner.config.maintenance_interval) => {}
            () = inner.maintenance.notified() => {}
        }
        match inner.maintain().await {
            Ok(gc) if gc.blobs_removed > 0 => tracing::info!(
                blobs = gc.blobs_removed,
                bytes = gc.bytes_freed,
                "garbage collected"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("registry maintenance failed: {e}"),
        }
    }
}
