//! The one wasmtime `Engine` of a process, and the thread that drives its
//! epoch clock.

use crate::config::RuntimeConfig;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Builds the engine: pooling allocator, copy-on-write memory images, epoch
/// interruption (preemption) and, if asked, fuel metering.
pub(crate) fn build_engine(cfg: &RuntimeConfig) -> wasmtime::Result<Engine> {
    let n = cfg.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    // A component is one component instance made of several core instances
    // (Rust's wasip2 output has a handful); a task may be either kind.
    // Memories and stacks reserve address space (and a stack's guard page
    // costs a syscall at startup), so they scale with `n` exactly; the small
    // floors let one component with a few inner modules fit a pool of one.
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(4).max(32))
        .total_memories(n.saturating_mul(2).max(4))
        .total_tables(n.saturating_mul(4).max(16))
        .total_stacks(n)
        .max_memory_size(usize::try_from(cfg.max_memory_per_instance).unwrap_or(usize::MAX))
        .linear_memory_keep_resident(cfg.memory_keep_resident)
        .table_keep_resident(cfg.memory_keep_resident);

    let strategy = if cfg.pooling {
        InstanceAllocationStrategy::Pooling(pool)
    } else {
        InstanceAllocationStrategy::OnDemand
    };
    let mut config = Config::new();
    config
        .allocation_strategy(strategy)
        .memory_init_cow(true)
        .epoch_interruption(true)
        .consume_fuel(cfg.fuel)
        .wasm_component_model(true);
    Engine::new(&config)
}

/// Advances the engine's epoch every `tick` on a dedicated thread. Guests
/// check the epoch at function entries and loop headers; this is what lets a
/// spinning guest be preempted, timed out or stopped.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine, tick: std::time::Duration) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("skiff-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    // Parked rather than asleep, so dropping the ticker
                    // wakes it at once instead of waiting out a tick.
                    std::thread::park_timeout(tick);
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
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
