//! The one wasmtime `Engine` of a process, and the thread that drives its
//! epoch clock.

use crate::config::RuntimeConfig;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use tokio::sync::Semaphore;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Core module instances one instance may be made of: a component built by
/// Rust's wasip2 target has a handful, language runtimes a dozen or two.
pub(crate) const CORE_INSTANCES_PER_INSTANCE: u32 = 32;
/// Linear memories one instance may have (multi-memory modules, components
/// of several modules).
pub(crate) const MEMORIES_PER_INSTANCE: u32 = 4;
/// Tables one instance may have.
pub(crate) const TABLES_PER_INSTANCE: u32 = 16;

/// Builds the engine: pooling allocator, copy-on-write memory images, epoch
/// interruption (preemption) and, if asked, fuel metering.
pub(crate) fn build_engine(cfg: &RuntimeConfig) -> wasmtime::Result<Engine> {
    let n = cfg.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    // A component is one component instance made of several core instances
    // (Rust's wasip2 output has a handful); a task may be either kind.
    // Every instance, module or component, gets at most the same share of
    // the pool, and the pool holds `n` such shares: so the runtime's count
    // of free slots (one per instance) is exact, and an artifact needing
    // more than a share is refused when it is loaded, not when it starts.
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_INSTANCE))
        .total_memories(n.saturating_mul(MEMORIES_PER_INSTANCE))
        .total_tables(n.saturating_mul(TABLES_PER_INSTANCE))
        .total_stacks(n)
        .max_core_instances_per_component(CORE_INSTANCES_PER_INSTANCE)
        .max_memories_per_component(MEMORIES_PER_INSTANCE)
        .max_tables_per_component(TABLES_PER_INSTANCE)
        .max_memories_per_module(MEMORIES_PER_INSTANCE)
        .max_tables_per_module(TABLES_PER_INSTANCE)
        .table_elements(crate::limits::MAX_TABLE_ELEMENTS)
        .max_memory_size(usize::try_from(cfg.max_memory_per_instance).unwrap_or(usize::MAX))
        .linear_memory_keep_resident(cfg.memory_keep_resident)
        .table_keep_resident(cfg.memory_keep_resident)
        // Reset just the pages an instance wrote (Linux 6.7+; elsewhere
        // the low `keep_resident` bytes are reset, the rest decommitted).
        .pagemap_scan(wasmtime::Enabled::Auto);

    let strategy = if cfg.pooling {
        InstanceAllocationStrategy::Pooling(pool)
    } else {
        InstanceAllocationStrategy::OnDemand
    };
    let mut config = Config::new();
    // Below a Wasm memory's 4 GiB, each memory reserves only its most, and
    // its accesses are bounds-checked: a pool of many more instances fits
    // the address space.
    if cfg.max_memory_per_instance < FULL_RESERVATION {
        config.memory_reservation(cfg.max_memory_per_instance);
    }
    config
        .allocation_strategy(strategy)
        .memory_init_cow(true)
        .epoch_interruption(true)
        .consume_fuel(cfg.fuel)
        .wasm_component_model(true);
    Engine::new(&config)
}

/// What wasmtime reserves for a linear memory on 64-bit hosts by default,
/// so that bounds checks are free: all 4 GiB a 32-bit memory may reach.
const FULL_RESERVATION: u64 = 4 << 30;

/// The guard region after each linear memory (wasmtime's default).
const GUARD: u64 = 32 << 20;

/// Why a pool of `n` instances of memories up to `max_memory` may not fit:
/// what it reserves.
pub(crate) fn pool_hint(n: u32, max_memory: u64) -> String {
    let per_memory = max_memory.min(FULL_RESERVATION) + GUARD;
    let per_instance = per_memory * u64::from(MEMORIES_PER_INSTANCE);
    let total = per_instance * u64::from(n);
    format!(
        " (a pool of {n} instances reserves {:.1} TiB of address space, {:.1} GiB each for up to {MEMORIES_PER_INSTANCE} linear memories; a 47-bit address space holds fewer than {}, about two thirds of that on a typical Linux host: allow fewer instances, or less memory per instance)",
        total as f64 / (1u64 << 40) as f64,
        per_instance as f64 / (1u64 << 30) as f64,
        (1u64 << 47) / per_instance
    )
}

/// Advances the engine's epoch every `tick` on a dedicated thread. Guests
/// check the epoch at function entries and loop headers; this is what lets a
/// spinning guest be preempted, timed out or stopped.
///
/// While no instance holds a pool slot there is nothing to preempt, so the
/// thread sleeps until [`wake`](EpochTicker::wake) is called: an idle agent
/// costs no wakeups.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    /// True while the thread sleeps for want of instances.
    idle: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(
        engine: Engine,
        tick: std::time::Duration,
        slots: Arc<Semaphore>,
        total_slots: usize,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let idle = Arc::new(AtomicBool::new(false));
        let sleeping = Arc::clone(&idle);
        let thread = std::thread::Builder::new()
            .name("skiff-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    if slots.available_permits() == total_slots {
                        // Idle: sleep until an instance starts (or the
                        // ticker is dropped). `wake` clears the flag before
                        // unparking, so a start between the check and the
                        // park is not missed (its unpark token stays).
                        sleeping.store(true, Ordering::SeqCst);
                        if slots.available_permits() == total_slots {
                            std::thread::park();
                        }
                        sleeping.store(false, Ordering::SeqCst);
                        continue;
                    }
                    // Parked rather than asleep, so dropping the ticker
                    // wakes it at once instead of waiting out a tick.
                    std::thread::park_timeout(tick);
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker {
            stop,
            idle,
            thread: Some(thread),
        })
    }

    /// Resumes ticking; call after an instance takes a pool slot. Costs a
    /// syscall only when the ticker was idle.
    pub(crate) fn wake(&self) {
        if self.idle.swap(false, Ordering::SeqCst)
            && let Some(thread) = &self.thread
        {
            thread.thread().unpark();
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}
