//! A task's images: pulled with the registry crate's [`Puller`] (one
//! download per reference at a time), compiled once per binary digest into
//! the runtime's cache, and the most recently started ones kept compiled
//! in memory, so the next task of the same image only instantiates.
//!
//! Tasks of one image that start together wait for one pull and one
//! compile (they would otherwise each compile it, each holding a thread of
//! tokio's blocking pool), and at most as many images compile at once as
//! there are cores: compiling is CPU work, more at once only queues.

use skiff_channel::task::ContainerPhases;
use skiff_channel::taskdef::{ContainerDefinition, TaskDefinition};
use skiff_registry::images::{Checked, ImageRecord, PullBehavior, Puller};
use skiff_runtime::{Artifact, ArtifactKind, Runtime};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How many compiled images the agent keeps warm.
const WARM_IMAGES: usize = 64;

/// The agent's images.
pub(crate) struct Images {
    runtime: Runtime,
    puller: Arc<Puller>,
    /// Where `hello:v1` (no registry host) is pulled from.
    default_registry: String,
    /// When a stored image is pulled again (ECS_IMAGE_PULL_BEHAVIOR).
    pull_behavior: PullBehavior,
    /// Compiled images recently started here, by image reference and
    /// binary digest.
    warm: Mutex<Warm>,
    /// One load at a time per reference: the others wait for it, then find
    /// it warm.
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Compiles (or loads from the compile cache) at once.
    compiles: tokio::sync::Semaphore,
}

/// The warm images, each with when it was last started (a counter): the
/// least recently started one goes when there are too many.
#[derive(Default)]
struct Warm {
    images: HashMap<(String, String), (Arc<Artifact>, u64)>,
    clock: u64,
}

impl Warm {
    fn get(&mut self, key: &(String, String)) -> Option<Arc<Artifact>> {
        self.clock += 1;
        let clock = self.clock;
        self.images.get_mut(key).map(|(a, used)| {
            *used = clock;
            Arc::clone(a)
        })
    }

    fn insert(&mut self, key: (String, String), artifact: Arc<Artifact>) {
        // Another binary under the same reference replaces the old one.
        self.images.retain(|k, _| k.0 != key.0);
        if self.images.len() >= WARM_IMAGES
            && let Some(oldest) = self
                .images
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            self.images.remove(&oldest);
        }
        self.clock += 1;
        self.images.insert(key, (artifact, self.clock));
    }
}

impl Images {
    pub(crate) fn new(
        runtime: Runtime,
        puller: Arc<Puller>,
        default_registry: &str,
        pull_behavior: PullBehavior,
    ) -> Images {
        Images {
            runtime,
            puller,
            default_registry: default_registry.to_string(),
            pull_behavior,
            warm: Mutex::new(Warm::default()),
            loading: Mutex::new(HashMap::new()),
            compiles: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            ),
        }
    }

    /// The compiled image of container `c`, checked against what the
    /// container asks of it, with where it came from and how long that
    /// took; the reason (ECS's error first) if there is none.
    pub(crate) async fn container(
        &self,
        c: &ContainerDefinition,
        td: &TaskDefinition,
    ) -> Result<(ImageRecord, Arc<Artifact>, ContainerPhases), String> {
        let reference = self.qualify(&c.image);
        let (record, artifact, phases) = self.image(&reference).await?;
        servable(c, td, artifact.kind(), &record.reference)?;
        Ok((record, artifact, phases))
    }

    /// The compiled image for `reference`: warm if the pull behaviour lets
    /// the start use the stored image and that is the binary compiled last
    /// time, else pulled (or read from the store) and compiled (or loaded
    /// from the compile cache).
    async fn image(
        &self,
        reference: &str,
    ) -> Result<(ImageRecord, Arc<Artifact>, ContainerPhases), String> {
        let mut checked = self
            .puller
            .check(reference, self.pull_behavior)
            .await
            .map_err(|e| format!("CannotPullContainerError: {e}"))?;
        let warm = |(record, artifact), checked: &Checked| {
            let phases = ContainerPhases {
                image: Some("warm".into()),
                compile: Some("warm".into()),
                resolve_micros: (!checked.resolve.is_zero())
                    .then(|| ContainerPhases::micros(checked.resolve)),
                ..ContainerPhases::default()
            };
            (record, artifact, phases)
        };
        if let Some(found) = self.warm(&checked) {
            return Ok(warm(found, &checked));
        }
        // One load per reference at a time; whoever waited finds it warm.
        let gate = self
            .loading
            .lock()
            .map(|mut l| Arc::clone(l.entry(reference.to_string()).or_default()))
            .map_err(|_| {
                "CannotPullContainerError: the agent's image lock is poisoned".to_string()
            })?;
        let _loading = gate.lock().await;
        self.puller.recheck(&mut checked);
        if let Some(found) = self.warm(&checked) {
            return Ok(warm(found, &checked));
        }
        let loaded = self.load(checked).await;
        if let Ok(mut l) = self.loading.lock()
            && l.get(reference).is_some_and(|g| Arc::ptr_eq(g, &gate))
            && Arc::strong_count(&gate) <= 2
        {
            // Nobody else waits on it: forget the gate.
            l.remove(reference);
        }
        loaded
    }

    /// The compiled image `checked` lets the start use, if it is the
    /// binary compiled last time.
    fn warm(&self, checked: &Checked) -> Option<(ImageRecord, Arc<Artifact>)> {
        let record = checked.current.as_ref()?;
        let key = (record.reference.clone(), record.wasm_digest.clone());
        let artifact = self.warm.lock().ok().and_then(|mut w| w.get(&key))?;
        Some((record.clone(), artifact))
    }

    /// Pulls (or reads from the store) and compiles (or loads from the
    /// compile cache) the image `checked` found, and keeps it warm.
    async fn load(
        &self,
        checked: Checked,
    ) -> Result<(ImageRecord, Arc<Artifact>, ContainerPhases), String> {
        let (record, bytes, pull) = self
            .puller
            .ensure_checked(checked, &|_, _| {})
            .await
            .map_err(|e| format!("CannotPullContainerError: {e}"))?;
        let runtime = self.runtime.clone();
        let name = record.reference.clone();
        let _compiling = self
            .compiles
            .acquire()
            .await
            .map_err(|_| "CannotPullContainerError: the agent is shutting down".to_string())?;
        let compiling = std::time::Instant::now();
        let artifact = tokio::task::spawn_blocking(move || runtime.load_bytes(&name, &bytes))
            .await
            .map_err(|e| format!("CannotPullContainerError: compiling failed: {e}"))?
            .map_err(|e| format!("CannotPullContainerError: {e}"))?;
        let micros = ContainerPhases::micros;
        let phases = ContainerPhases {
            image: Some(if pull.pulled { "registry" } else { "store" }.into()),
            pull_bytes: Some(pull.bytes),
            resolve_micros: Some(micros(pull.resolve)),
            download_micros: Some(micros(pull.download)),
            store_micros: Some(micros(pull.store)),
            compile: Some(
                match artifact.source() {
                    skiff_runtime::LoadSource::Compiled => "compiled",
                    skiff_runtime::LoadSource::DiskCache => "cache",
                }
                .into(),
            ),
            compile_micros: Some(micros(compiling.elapsed())),
            ..ContainerPhases::default()
        };
        if let Ok(mut w) = self.warm.lock() {
            w.insert(
                (record.reference.clone(), record.wasm_digest.clone()),
                Arc::clone(&artifact),
            );
        }
        Ok((record, artifact, phases))
    }

    /// A reference with no registry host names an image in skiff's own
    /// registry.
    fn qualify(&self, image: &str) -> String {
        let first = image.split('/').next().unwrap_or("");
        let has_host = image.contains('/')
            && (first.contains('.') || first.contains(':') || first == "localhost");
        if has_host {
            image.to_string()
        } else {
            format!("{}/{image}", self.default_registry)
        }
    }
}

/// Can this container run from this image in this network? wasip1 modules
/// have no sockets, so nothing of theirs can be published; a wasi:http
/// component needs a network and a port to be served on.
fn servable(
    c: &ContainerDefinition,
    td: &TaskDefinition,
    kind: ArtifactKind,
    reference: &str,
) -> Result<(), String> {
    match kind {
        ArtifactKind::Module if !c.port_mappings.is_empty() => Err(format!(
            "CannotStartContainerError: {reference} is a wasip1 module, which has no sockets: container {} cannot serve its portMappings (build it for wasm32-wasip2)",
            c.name
        )),
        ArtifactKind::HttpProxy if td.network_mode.as_deref() == Some("none") => Err(format!(
            "CannotStartContainerError: {reference} is a wasi:http component, and networkMode none gives container {} no network to serve on",
            c.name
        )),
        ArtifactKind::HttpProxy if c.port_mappings.is_empty() => Err(format!(
            "CannotStartContainerError: {reference} is a wasi:http component: give container {} a portMappings entry for the port it serves on",
            c.name
        )),
        // A wasi:http component is not a command: its health check can
        // only be a request of it.
        ArtifactKind::HttpProxy
            if c.health_check
                .as_ref()
                .is_some_and(|h| matches!(h.http_probe(), Ok(None))) =>
        {
            let port = c.port_mappings.first().map_or(80, |p| p.container_port);
            Err(format!(
                "CannotStartContainerError: {reference} is a wasi:http component, which runs no commands: container {}'s healthCheck can request it instead, [\"CMD\", \"curl\", \"-f\", \"http://localhost:{port}/\"]",
                c.name
            ))
        }
        _ => Ok(()),
    }
}
