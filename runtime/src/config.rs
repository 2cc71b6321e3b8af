//! Runtime settings. Every knob has a documented default and the reason for it.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How a [`Runtime`](crate::Runtime) is built. `Default` is right for an agent
/// that runs many tasks; `skiff run` shrinks the pool to what one task needs.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Root of skiff's on-disk state. Compiled code lives in
    /// `DATA_DIR/cache/compiled`. Default: `$SKIFF_DATA_DIR`, else `~/.skiff`.
    pub data_dir: PathBuf,
    /// Keep compiled code on disk so a second start never compiles.
    /// Default: on. Off only for measurements of the cold path.
    pub compile_cache: bool,
    /// How many bytes of compiled code the compile cache keeps: past it,
    /// the least recently used entries (not those of loaded artifacts)
    /// are removed, down to 70% of it, after every compile
    /// ([`Runtime::prune_compile_cache`](crate::Runtime::prune_compile_cache)). Default: 1 GiB, wasmtime's own
    /// cache's soft limit — about 250 compiled 100 KiB components, or
    /// 30 large (5 MB) modules. Without a limit, compiling every pushed
    /// image would let anyone who may push fill the disk.
    pub compile_cache_limit: u64,
    /// Allocate instances from a pre-reserved pool (fast, the default) or
    /// with fresh mmaps each time (`false`: `skiff run` of one command,
    /// and a baseline for benchmarks).
    pub pooling: bool,
    /// How many instances may exist at once (tasks' containers plus in-flight
    /// HTTP requests). Sizes the pooling allocator. Default: 1000, the same as
    /// wasmtime's own default pool.
    pub max_instances: u32,
    /// Largest linear memory any instance may have (the pool's slot size;
    /// enforced by the memory limiter when pooling is off). Per-instance
    /// limits (`--memory`) apply below this. Default: 4 GiB, the wasm32
    /// maximum.
    pub max_memory_per_instance: u64,
    /// (Pooling only.) Bytes of each freed memory (and table) slot kept
    /// resident and reset in place instead of returned to the kernel with
    /// `madvise`, so the next instance in the slot takes no page faults
    /// there. On Linux 6.7+ the `PAGEMAP_SCAN` ioctl finds the pages an
    /// instance actually wrote, wherever they are in its memory, and only
    /// those are reset (up to this many bytes): a Rust guest's stack sits
    /// near 1 MiB, far above a low-addresses-only window. `madvise` on a
    /// 2-core machine costs more than its own syscall: every call flushes
    /// the other core's TLB with an interrupt. Default: 256 KiB (HTTP
    /// hello went from about 7.5k to about 14k req/s, with 64 KiB and no
    /// scan before); each warm slot keeps at most this much resident.
    pub memory_keep_resident: usize,
    /// Meter instructions so `fuel` limits can be enforced. It costs a few
    /// percent of guest speed and changes the compiled code (and so the cache
    /// key), so it is off unless a task asks for a fuel limit.
    pub fuel: bool,
    /// The period of the engine's epoch, the clock that preempts guests.
    /// A guest's slice is a whole number of ticks counted from a tick already
    /// under way, so the tick bounds how finely CPU is shared. The ticker
    /// sleeps while no instance runs. Default: 500 µs.
    pub epoch_tick: Duration,
    /// The time slice one vCPU (1024 CPU units) gets before a guest yields
    /// to the scheduler; a task with `cpu` units runs for
    /// `cpu_slice × cpu / 1024` before yielding, at least one epoch tick and
    /// at most `max_cpu_slice`. Under contention tasks therefore get CPU in
    /// proportion to their units, from 128 units (one tick) up to 12.5 vCPU
    /// (the cap). Default: 4 ms.
    pub cpu_slice: Duration,
    /// The longest a guest runs before yielding, however many units it has:
    /// the worst delay it can impose on the others. Default: 50 ms.
    pub max_cpu_slice: Duration,
}

/// [`RuntimeConfig::compile_cache_limit`]'s default: 1 GiB.
pub const DEFAULT_COMPILE_CACHE_LIMIT: u64 = 1 << 30;

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            data_dir: default_data_dir(),
            compile_cache: true,
            compile_cache_limit: DEFAULT_COMPILE_CACHE_LIMIT,
            pooling: true,

            max_instances: 1000,
            max_memory_per_instance: 4 << 30,
            memory_keep_resident: 256 << 10,

            fuel: false,
            epoch_tick: Duration::from_micros(500),
            cpu_slice: Duration::from_millis(4),
            max_cpu_slice: Duration::from_millis(50),
        }
    }
}

impl RuntimeConfig {
    /// Sets the data directory.
    pub fn with_data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = dir.into();
        self
    }

    /// Where compiled code is cached.
    pub fn compiled_cache_dir(&self) -> PathBuf {
        self.data_dir.join("cache").join("compiled")
    }

    /// Checks that every setting is in range.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_instances == 0 {
            return Err("max_instances must be at least 1".into());
        }
        if !(64 << 10..=4 << 30).contains(&self.max_memory_per_instance) {
            return Err(format!(
                "max_memory_per_instance must be between 64 KiB and 4 GiB, not {}",
                crate::format_bytes(self.max_memory_per_instance)
            ));
        }
        if self.epoch_tick < Duration::from_micros(100) {
            return Err("epoch_tick must be at least 100 µs".into());
        }
        if self.cpu_slice.is_zero() || self.max_cpu_slice.is_zero() {
            return Err("cpu_slice and max_cpu_slice must be greater than zero".into());
        }
        Ok(())
    }

    /// Where named volumes (`-v name:/path`) live.
    pub fn volumes_dir(&self) -> PathBuf {
        self.data_dir.join("volumes")
    }
}

/// `$SKIFF_DATA_DIR`, else `$HOME/.skiff`, else `./.skiff`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SKIFF_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Path::new(&home).join(".skiff"),
        None => PathBuf::from(".skiff"),
    }
}
