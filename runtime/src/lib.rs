//! skiff's data plane: compile Wasm once, start it many times, each instance
//! sandboxed and limited.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use skiff_runtime::{InstanceSpec, Output, Runtime, RuntimeConfig};
//!
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let hello = runtime.load_file("hello.wasm".as_ref())?;
//! let mut instance = runtime.spawn(&hello, InstanceSpec {
//!     args: vec!["hello".into()],
//!     stdout: Output::Inherit,
//!     ..InstanceSpec::default()
//! })?;
//! let outcome = instance.wait().await;
//! println!("exit code {}", outcome.exit_code());
//! # Ok(()) }
//! ```
//!
//! One [`Runtime`] per process owns the wasmtime engine (pooling allocator,
//! copy-on-write memory images, epoch preemption), the linkers, the compile
//! cache and the artifacts loaded so far. [`Runtime::spawn`] starts an
//! instance of an [`Artifact`] from an [`InstanceSpec`]; [`Instance`] waits
//! for its [`Outcome`], stops it, and reports its [`Usage`].
//! [`http::serve`] serves a `wasi:http/proxy` component, one instance per
//! request.

pub mod addresses;
mod artifact;
mod cache;
mod config;
mod engine;
pub mod http;
mod instance;
mod limits;
pub mod mesh;
pub mod net;
pub mod ports;
mod posix_fs;
pub mod proxy;
mod sandbox;
mod sockets;
mod stdio;
pub mod units;

pub use artifact::{Artifact, ArtifactKind, LoadSource, inspect};
pub use config::{DEFAULT_COMPILE_CACHE_LIMIT, RuntimeConfig, default_data_dir};
pub use instance::{Instance, Limit, Outcome, StartPhases};
pub use limits::{CPU_BURST, CpuCap, Limits, Usage, UsageMeter};
pub use net::NetworkMode;
pub use sandbox::{InstanceSpec, Mount};
pub use stdio::{CaptureSink, Output, OutputSink, Stdin};
pub use units::{format_bytes, format_duration};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, Weak};
use wasmtime::Engine;

/// The runtime could not be created.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// wasmtime refused the engine configuration.
    #[error("cannot create the Wasm engine: {0}")]
    Engine(String),
    /// A setting is out of range.
    #[error("invalid runtime configuration: {0}")]
    Config(String),
    /// The epoch thread could not be started.
    #[error("cannot start the epoch thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// An artifact could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a Wasm binary at all.
    #[error("{name} is not a WebAssembly binary: {reason}")]
    NotWasm {
        /// The artifact's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A Wasm binary that does not validate.
    #[error("{name} is not valid WebAssembly: {reason}")]
    Invalid {
        /// The artifact's name.
        name: String,
        /// The validator's message.
        reason: String,
    },
    /// Valid Wasm that skiff cannot run: an import no skiff world provides,
    /// or no entry point.
    #[error("{name} cannot run on skiff: {reason}")]
    Unsupported {
        /// The artifact's name.
        name: String,
        /// What is missing.
        reason: String,
    },
}

/// An instance could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// A mount's host directory could not be opened.
    #[error("cannot mount {}: {reason}", host.display())]
    Mount {
        /// The host directory.
        host: PathBuf,
        /// Why.
        reason: String,
    },
    /// Two mounts share one guest path.
    #[error("two mounts use the guest path {0}")]
    DuplicateMount(String),
    /// HTTP components are served, not run.
    #[error("{0} is a wasi:http/proxy component: serve it (`skiff run -p`) instead")]
    NotACommand(String),
    /// A fuel limit was asked of a runtime without fuel metering.
    #[error("a fuel limit needs a runtime created with fuel metering on")]
    FuelDisabled,
    /// The store could not be set up.
    #[error("cannot set up the instance: {0}")]
    Store(String),
    /// Every instance slot of the pool is in use.
    #[error("all {0} instance slots are in use")]
    AtCapacity(u32),
    /// `spawn` was called outside a tokio runtime.
    #[error("instances must be spawned from within a tokio runtime")]
    NoExecutor,
}

/// The data plane of one process. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) engine: Engine,
    pub(crate) config: RuntimeConfig,
    linkers: artifact::Linkers,
    cache: Option<cache::CompileCache>,
    /// Artifacts in use, by (sha256, name): loading one again while it is
    /// held anywhere returns it without touching the disk.
    loaded: Mutex<HashMap<(String, String), Weak<Artifact>>>,
    /// One compile at a time per binary (by sha256): a second load of a
    /// binary being compiled waits, then finds it in the compile cache.
    compiling: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// One permit per instance the pool can hold, taken by every running
    /// task and in-flight HTTP request.
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
    pub(crate) next_id: AtomicU64,
    pub(crate) ticker: engine::EpochTicker,
}

impl Inner {
    /// Epoch ticks a guest with `cpu_units` runs before it yields.
    pub(crate) fn slice_ticks(&self, cpu_units: u32) -> u64 {
        let tick = self.config.epoch_tick.as_nanos().max(1);
        let slice = (self.config.cpu_slice.as_nanos() * u128::from(cpu_units.max(1)) / 1024)
            .min(self.config.max_cpu_slice.as_nanos());
        u64::try_from(slice / tick).unwrap_or(u64::MAX).max(1)
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// The threads [`Runtime::precompile`] compiles on (wasmtime's parallel
/// compiler runs on the rayon pool it is called from), beside rayon's
/// global pool, where task starts compile: as many as that one has (one
/// per core, or `RAYON_NUM_THREADS`), so a compile alone is as fast on
/// either. `None` if no thread could be made: it compiles on the global
/// pool then.
fn background_compiles() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("skiff-precompile-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

impl Runtime {
    /// Creates the engine and the epoch thread. Linkers are built when the
    /// first artifact needing one is loaded.
    pub fn new(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        config.validate().map_err(RuntimeError::Config)?;
        let engine = engine::build_engine(&config).map_err(|e| {
            let mut why = format!("{e:#}");
            if config.pooling && why.contains("pool") {
                why.push_str(&engine::pool_hint(
                    config.max_instances,
                    config.max_memory_per_instance,
                ));
            }
            RuntimeError::Engine(why)
        })?;
        let linkers = artifact::Linkers::default();
        let total_slots = usize::try_from(config.max_instances).unwrap_or(usize::MAX);
        let cache = config.compile_cache.then(|| {
            cache::CompileCache::new(
                config.compiled_cache_dir(),
                &engine,
                config.compile_cache_limit,
            )
        });
        let slots = Arc::new(tokio::sync::Semaphore::new(total_slots));
        let ticker = engine::EpochTicker::start(
            engine.clone(),
            config.epoch_tick,
            Arc::clone(&slots),
            total_slots,
        )?;
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                config,
                linkers,
                cache,
                loaded: Mutex::new(HashMap::new()),
                compiling: Mutex::new(HashMap::new()),
                slots,
                next_id: AtomicU64::new(1),
                ticker,
            }),
        })
    }

    /// The configuration this runtime was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Loads a Wasm file: compiles it, or takes its compiled code from the
    /// cache, and pre-links it. Loading the same bytes under the same name
    /// while the artifact is still held returns it as it is.
    pub fn load_file(&self, path: &Path) -> Result<Arc<Artifact>, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path.display().to_string();
        self.load_bytes(&name, &bytes)
    }

    /// Loads a Wasm binary held in memory. `name` is used in messages.
    pub fn load_bytes(&self, name: &str, bytes: &[u8]) -> Result<Arc<Artifact>, LoadError> {
        self.load_keyed((artifact::sha256_hex(bytes), name.to_string()), bytes)
    }

    /// Compiles a Wasm binary into the compile cache, so that loading it
    /// later only maps the compiled code: whether it compiled it (not if
    /// the cache held it already, or there is no cache to keep it in).
    /// A load of the same binary meanwhile waits for it rather than
    /// compiling it a second time.
    ///
    /// It compiles on threads of its own (as many as the global pool has),
    /// one binary at a time, not on the pool that the compiles of starting
    /// tasks use: there a task's compile would wait until this one, queued
    /// first, had all but finished. Beside it, the two share the cores.
    pub fn precompile(&self, name: &str, bytes: &[u8]) -> Result<bool, LoadError> {
        let sha = artifact::sha256_hex(bytes);
        if self.inner.cache.is_none() || self.is_compiled(&sha) {
            return Ok(false);
        }
        let load = || self.load_keyed((sha, name.to_string()), bytes);
        let loaded = match background_compiles() {
            Some(pool) => {
                // One job in the pool at a time: a worker waiting inside a
                // compile may take up the pool's next job, and that one
                // must not wait on a compile gate the first holds.
                static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
                let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
                pool.install(load)
            }
            None => load(),
        }?;
        Ok(loaded.source() == LoadSource::Compiled)
    }

    fn load_keyed(&self, key: (String, String), bytes: &[u8]) -> Result<Arc<Artifact>, LoadError> {
        if let Some(found) = self.loaded_artifact(&key) {
            return Ok(found);
        }
        let gate = self
            .inner
            .compiling
            .lock()
            .map(|mut c| Arc::clone(c.entry(key.0.clone()).or_default()))
            .unwrap_or_default();
        let loaded = {
            let _compiling = gate.lock().unwrap_or_else(|p| p.into_inner());
            self.load_gated(&key, bytes)
        };
        if let Ok(mut c) = self.inner.compiling.lock()
            && c.get(&key.0).is_some_and(|g| Arc::ptr_eq(g, &gate))
            && Arc::strong_count(&gate) <= 2
        {
            // Nobody else waits on it: forget the gate.
            c.remove(&key.0);
        }
        loaded
    }

    /// [`Runtime::load_keyed`] holding the binary's compile gate.
    fn load_gated(&self, key: &(String, String), bytes: &[u8]) -> Result<Arc<Artifact>, LoadError> {
        if let Some(found) = self.loaded_artifact(key) {
            return Ok(found);
        }
        let loaded = Arc::new(artifact::load(
            &self.inner.engine,
            &self.inner.linkers,
            self.inner.cache.as_ref(),
            &key.1,
            bytes,
            key.0.clone(),
        )?);
        if let Ok(mut map) = self.inner.loaded.lock() {
            // Forget artifacts nobody holds any more.
            map.retain(|_, a| a.strong_count() > 0);
            map.insert(key.clone(), Arc::downgrade(&loaded));
        }
        if loaded.source() == LoadSource::Compiled {
            // New code in the cache: keep it within its limit.
            self.prune_compile_cache();
        }
        Ok(loaded)
    }

    /// Keeps the compile cache within [`RuntimeConfig::compile_cache_limit`]:
    /// the least recently used code goes, never that of an artifact this
    /// runtime has loaded and someone still holds. Done after every
    /// compile; a server also calls it as it starts, for a limit lowered
    /// since. Returns how many entries and bytes went.
    pub fn prune_compile_cache(&self) -> (u64, u64) {
        let Some(cache) = &self.inner.cache else {
            return (0, 0);
        };
        let live: std::collections::HashSet<String> = self
            .inner
            .loaded
            .lock()
            .map(|map| {
                map.iter()
                    .filter(|(_, a)| a.strong_count() > 0)
                    .map(|((sha, _), _)| sha.clone())
                    .collect()
            })
            .unwrap_or_default();
        match cache.prune(&|sha| live.contains(sha)) {
            Ok(p) => {
                if p.entries > 0 {
                    tracing::info!(
                        entries = p.entries,
                        bytes = p.bytes,
                        limit = self.inner.config.compile_cache_limit,
                        "compile cache pruned: least recently used code removed"
                    );
                }
                (p.entries, p.bytes)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, 0),
            Err(e) => {
                tracing::warn!("cannot prune the compile cache: {e}");
                (0, 0)
            }
        }
    }

    fn loaded_artifact(&self, key: &(String, String)) -> Option<Arc<Artifact>> {
        self.inner.loaded.lock().ok()?.get(key)?.upgrade()
    }

    /// Whether the compile cache holds valid compiled code, for this
    /// runtime's engine, of a binary with this sha256 (hex).
    pub fn is_compiled(&self, sha256_hex: &str) -> bool {
        self.inner
            .cache
            .as_ref()
            .is_some_and(|c| matches!(c.lookup(sha256_hex), cache::Lookup::Hit(_)))
    }

    /// Builds a sandbox from `spec` and instantiates `artifact` in it without
    /// running anything: exactly the work of starting a task. Benchmarks use
    /// it to time the start path alone.
    pub async fn instantiate_only(
        &self,
        artifact: &Artifact,
        spec: &InstanceSpec,
    ) -> Result<(), SpawnError> {
        instance::instantiate_only(&self.inner, artifact, spec).await
    }

    /// Starts an instance. Must be called within a tokio runtime; the
    /// instance runs as a task on it, preempted every CPU slice.
    pub fn spawn(
        &self,
        artifact: &Arc<Artifact>,
        spec: InstanceSpec,
    ) -> Result<Instance, SpawnError> {
        instance::spawn(&self.inner, artifact, spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_settings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = RuntimeConfig::default().with_data_dir(dir.path());
        for bad in [
            RuntimeConfig {
                max_instances: 0,
                ..base.clone()
            },
            RuntimeConfig {
                epoch_tick: std::time::Duration::ZERO,
                ..base.clone()
            },
            RuntimeConfig {
                cpu_slice: std::time::Duration::ZERO,
                ..base.clone()
            },
            RuntimeConfig {
                max_memory_per_instance: 1024,
                ..base.clone()
            },
            RuntimeConfig {
                max_memory_per_instance: 8 << 30,
                ..base.clone()
            },
        ] {
            assert!(matches!(Runtime::new(bad), Err(RuntimeError::Config(_))));
        }
    }

    #[test]
    fn a_pool_larger_than_the_address_space_says_how_large_it_is() {
        let dir = tempfile::tempdir().unwrap();
        // 10 million instances: more than even a 57-bit address space.
        let config = RuntimeConfig {
            max_instances: 10_000_000,
            ..RuntimeConfig::default().with_data_dir(dir.path())
        };
        let Err(RuntimeError::Engine(why)) = Runtime::new(config) else {
            panic!("a pool of 10 million instances was made");
        };
        assert!(
            why.contains("a pool of 10000000 instances reserves"),
            "{why}"
        );
        assert!(why.contains("allow fewer instances"), "{why}");
    }

    #[test]
    fn cpu_slices_follow_units_within_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let rt = Runtime::new(RuntimeConfig::default().with_data_dir(dir.path())).unwrap();
        let ticks = |units| rt.inner.slice_ticks(units);
        // 500 µs ticks, 4 ms per vCPU, capped at 50 ms, at least one tick.
        assert_eq!(ticks(1024), 8);
        assert_eq!(ticks(3072), 24);
        assert_eq!(ticks(256), 2);
        assert_eq!(ticks(128), 1);
        assert_eq!(ticks(2), 1);
        assert_eq!(ticks(262_144), 100);
    }
}
