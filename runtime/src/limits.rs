//! Per-instance resource limits and usage accounting.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Limits on one instance. `Default` is unlimited except for CPU share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Hard limit on the instance's linear memory, all memories together,
    /// in bytes. `memory.grow` past it fails inside the guest.
    pub memory: Option<u64>,
    /// CPU share in ECS units (1024 = one vCPU). Under contention tasks get
    /// CPU in proportion to their units. Default 1024.
    pub cpu_units: u32,
    /// A hard limit on CPU time, shared by every instance given the same
    /// [`CpuCap`] (a task's containers, a server's requests): past it they
    /// pause until their share has refilled, as a Fargate task stays
    /// within its size. Without it, `cpu_units` is only a share.
    pub cpu_cap: Option<CpuCap>,
    /// Total instruction budget. Requires a runtime built with fuel on.
    pub fuel: Option<u64>,
    /// Wall-clock limit from the start of the instance.
    pub timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: None,
            cpu_units: 1024,
            cpu_cap: None,
            fuel: None,
            timeout: None,
        }
    }
}

/// A hard CPU limit: a bucket of CPU time that fills at `cpu_units` /
/// 1024 of a core and holds at most [`CPU_BURST`] of it. Instances sharing
/// it are charged the CPU time of every poll; one whose bucket is empty
/// pauses at its next CPU slice (and a server's next request waits) until
/// it is no longer in debt.
#[derive(Clone)]
pub struct CpuCap(Arc<std::sync::Mutex<Bucket>>);

struct Bucket {
    /// CPU nanoseconds per wall nanosecond.
    rate: f64,
    /// CPU nanoseconds at hand (negative: owed).
    tokens: f64,
    last: std::time::Instant,
}

/// How much CPU time a capped instance may use at once after being idle:
/// this long at its rate.
pub const CPU_BURST: Duration = Duration::from_millis(100);

impl CpuCap {
    /// A cap of `cpu_units` (1024 = one core), full.
    pub fn new(cpu_units: u32) -> CpuCap {
        let rate = f64::from(cpu_units.max(1)) / 1024.0;
        CpuCap(Arc::new(std::sync::Mutex::new(Bucket {
            rate,
            tokens: CPU_BURST.as_nanos() as f64 * rate,
            last: std::time::Instant::now(),
        })))
    }

    /// Takes `nanos` of CPU time from the bucket.
    pub(crate) fn charge(&self, nanos: u64) {
        if let Ok(mut b) = self.0.lock() {
            b.refill();
            b.tokens -= nanos as f64;
        }
    }

    /// How long to pause before running again: none unless in debt.
    pub(crate) fn debt(&self) -> Option<Duration> {
        let mut b = self.0.lock().ok()?;
        b.refill();
        (b.tokens < 0.0).then(|| Duration::from_nanos((-b.tokens / b.rate) as u64))
    }
}

impl Bucket {
    fn refill(&mut self) {
        let now = std::time::Instant::now();
        let elapsed = now.duration_since(self.last).as_nanos() as f64;
        self.last = now;
        let full = CPU_BURST.as_nanos() as f64 * self.rate;
        self.tokens = (self.tokens + elapsed * self.rate).min(full);
    }
}

impl std::fmt::Debug for CpuCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = self.0.lock().map(|b| b.rate).unwrap_or_default();
        write!(f, "CpuCap({} units)", (rate * 1024.0).round())
    }
}

/// Two caps are the same when they are one bucket.
impl PartialEq for CpuCap {
    fn eq(&self, other: &CpuCap) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for CpuCap {}

/// What an instance has used so far. Cheap to read at any time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// CPU time spent running this instance (guest code and the host calls
    /// it makes on its own thread).
    pub cpu_time: Duration,
    /// Current linear memory, in bytes.
    pub memory_bytes: u64,
    /// Largest linear memory reached, in bytes.
    pub peak_memory_bytes: u64,
}

/// A live view of what one instance, or a server's instances together, have
/// used: clone it to read [`Usage`] while they run (what the agent reports
/// as the task's CPU and memory utilization). A wasi:http server's meter
/// ([`crate::http::ServeOptions::usage`]) adds up every request's CPU time,
/// and its memory is that of the requests' instances alive at the moment.
#[derive(Debug, Clone, Default)]
pub struct UsageMeter(pub(crate) Arc<UsageCounters>);

impl UsageMeter {
    /// A meter at zero.
    pub fn new() -> UsageMeter {
        UsageMeter::default()
    }

    /// What has been used so far.
    pub fn usage(&self) -> Usage {
        self.0.snapshot()
    }
}

#[derive(Debug, Default)]
pub(crate) struct UsageCounters {
    pub(crate) cpu_nanos: AtomicU64,
    pub(crate) memory_bytes: AtomicU64,
    pub(crate) peak_memory_bytes: AtomicU64,
    /// Set once a `memory.grow` was refused because of the limit.
    pub(crate) memory_denied: AtomicBool,
}

impl UsageCounters {
    pub(crate) fn snapshot(&self) -> Usage {
        Usage {
            cpu_time: Duration::from_nanos(self.cpu_nanos.load(Ordering::Relaxed)),
            memory_bytes: self.memory_bytes.load(Ordering::Relaxed),
            peak_memory_bytes: self.peak_memory_bytes.load(Ordering::Relaxed),
        }
    }
}

/// Most elements any one table may have: tables hold function references,
/// and a guest growing one without end would eat host memory. (Debug builds
/// of some language runtimes need tens of thousands.)
pub(crate) const MAX_TABLE_ELEMENTS: usize = 100_000;

/// The store's resource limiter: enforces [`Limits::memory`] across all of
/// an instance's memories and records usage.
pub(crate) struct MemoryLimiter {
    limit: Option<usize>,
    /// The runtime's largest single memory (`max_memory_per_instance`).
    ceiling: usize,
    total: usize,
    counters: Arc<UsageCounters>,
    /// A server's meter, which counts this instance's memory while it lives.
    shared: Option<Arc<UsageCounters>>,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: Option<u64>, ceiling: u64, counters: Arc<UsageCounters>) -> Self {
        let bytes = |b: u64| usize::try_from(b).unwrap_or(usize::MAX);
        MemoryLimiter {
            limit: limit.map(bytes),
            ceiling: bytes(ceiling),
            total: 0,
            counters,
            shared: None,
        }
    }

    /// Also counts this instance's memory in `meter` until it is dropped.
    pub(crate) fn share_with(&mut self, meter: &UsageMeter) {
        self.shared = Some(Arc::clone(&meter.0));
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared
                .memory_bytes
                .fetch_sub(self.total as u64, Ordering::Relaxed);
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // wasmtime asks before its own checks. Growth past the memory's
        // declared maximum or the runtime's largest memory would fail there
        // anyway: refuse it here without charging it, so it is neither
        // counted as usage nor taken for hitting the task's limit.
        if maximum.is_some_and(|max| desired > max) || desired > self.ceiling {
            return Ok(false);
        }
        let total = self.total.saturating_sub(current).saturating_add(desired);
        if self.limit.is_some_and(|limit| total > limit) {
            self.counters.memory_denied.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        if let Some(shared) = &self.shared {
            let live = if total >= self.total {
                shared
                    .memory_bytes
                    .fetch_add((total - self.total) as u64, Ordering::Relaxed)
                    + (total - self.total) as u64
            } else {
                shared
                    .memory_bytes
                    .fetch_sub((self.total - total) as u64, Ordering::Relaxed)
                    - (self.total - total) as u64
            };
            shared.peak_memory_bytes.fetch_max(live, Ordering::Relaxed);
        }
        self.total = total;
        let bytes = total as u64;
        self.counters.memory_bytes.store(bytes, Ordering::Relaxed);
        self.counters
            .peak_memory_bytes
            .fetch_max(bytes, Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Thread CPU time of the calling thread.
pub(crate) fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; the clock id is a constant the
    // kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn a_cpu_cap_owes_what_was_used_past_its_burst_and_repays_at_its_rate() {
        let cap = CpuCap::new(512); // half a core
        assert_eq!(cap.debt(), None, "it starts full");
        // 50 ms of CPU is its whole burst at half a core; 60 ms more is
        // owed, repaid in about 120 ms at half a core.
        cap.charge(50_000_000 + 60_000_000);
        let owed = cap.debt().expect("in debt");
        assert!(
            owed > Duration::from_millis(100) && owed <= Duration::from_millis(120),
            "{owed:?}"
        );
        // A clone is the same bucket.
        let same = cap.clone();
        assert_eq!(same, cap);
        assert_ne!(CpuCap::new(512), cap);
        assert!(same.debt().is_some());
    }

    #[test]
    fn a_shared_meter_counts_the_memory_of_live_instances() {
        let meter = UsageMeter::new();
        let own = || Arc::new(UsageCounters::default());
        let mut a = MemoryLimiter::new(None, 1000, own());
        a.share_with(&meter);
        let mut b = MemoryLimiter::new(None, 1000, own());
        b.share_with(&meter);
        assert!(a.memory_growing(0, 64, None).unwrap());
        assert!(b.memory_growing(0, 32, None).unwrap());
        assert!(a.memory_growing(64, 128, None).unwrap());
        assert_eq!(meter.usage().memory_bytes, 160);
        drop(a);
        assert_eq!(meter.usage().memory_bytes, 32);
        assert_eq!(meter.usage().peak_memory_bytes, 160);
        drop(b);
        assert_eq!(meter.usage().memory_bytes, 0);
    }

    #[test]
    fn limit_applies_to_all_memories_together() {
        let counters = Arc::new(UsageCounters::default());
        let mut l = MemoryLimiter::new(Some(100), 1000, Arc::clone(&counters));
        assert!(l.memory_growing(0, 60, None).unwrap());
        assert!(l.memory_growing(0, 30, None).unwrap()); // a second memory
        assert!(!l.memory_growing(30, 50, None).unwrap()); // 60 + 50 > 100
        assert!(counters.memory_denied.load(Ordering::Relaxed));
        assert!(l.memory_growing(60, 70, None).unwrap()); // 70 + 30 = 100
        let usage = counters.snapshot();
        assert_eq!(usage.memory_bytes, 100);
        assert_eq!(usage.peak_memory_bytes, 100);
    }

    #[test]
    fn growth_that_would_fail_anyway_is_not_charged() {
        let counters = Arc::new(UsageCounters::default());
        let mut l = MemoryLimiter::new(Some(100), 80, Arc::clone(&counters));
        assert!(l.memory_growing(0, 10, Some(20)).unwrap());
        // Past the memory's own maximum, and past the runtime's ceiling.
        assert!(!l.memory_growing(10, 30, Some(20)).unwrap());
        assert!(!l.memory_growing(10, 90, None).unwrap());
        assert!(!counters.memory_denied.load(Ordering::Relaxed));
        assert_eq!(counters.snapshot().memory_bytes, 10);
        // Legitimate growth still fits the limit afterwards.
        assert!(l.memory_growing(10, 20, Some(20)).unwrap());
        assert_eq!(counters.snapshot().memory_bytes, 20);
    }
}
