//! Running instances: spawn, preempt, limit, stop, and report how they ended.

use crate::artifact::{Artifact, ArtifactKind, Prepared};
use crate::limits::{Usage, UsageCounters, thread_cpu_time};
use crate::sandbox::{Host, InstanceSpec};
use crate::stdio::Stdin;
use crate::{Inner, SpawnError};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wasmtime::{Store, Trap, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::I32Exit;

/// Which limit ended an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `memory.grow` was refused at this many bytes and the guest trapped
    /// (or could not even be instantiated within the limit).
    Memory(u64),
    /// The instruction budget ran out.
    Fuel(u64),
    /// The wall-clock limit passed.
    Timeout(Duration),
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Memory(bytes) => write!(f, "memory limit of {}", crate::format_bytes(*bytes)),
            Limit::Fuel(fuel) => write!(f, "fuel limit of {fuel}"),
            Limit::Timeout(d) => write!(f, "time limit of {}", crate::format_duration(*d)),
        }
    }
}

/// How an instance ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The guest exited with this code (`proc_exit`, `wasi:cli/exit`, or
    /// returning from `main`).
    Exited(i32),
    /// The guest trapped. The message includes the wasm backtrace.
    Trapped(String),
    /// A limit stopped the guest. `detail` says what happened (for memory,
    /// the trap that followed the refused growth).
    LimitExceeded {
        /// The limit that was hit.
        limit: Limit,
        /// What the guest was doing.
        detail: String,
    },
    /// Stopped on request, after the grace period ran out.
    Stopped,
    /// The instance could not be started.
    Failed(String),
}

impl Outcome {
    /// The exit status a shell would see, following container conventions:
    /// the guest's own code; 134 (SIGABRT) for a trap; 137 (SIGKILL) for the
    /// memory limit or a forced stop; 124 (as `timeout(1)`) for the time and
    /// fuel limits; 125 when skiff could not start the guest.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Exited(code) => *code,
            Outcome::Trapped(_) => 134,
            Outcome::LimitExceeded {
                limit: Limit::Memory(_),
                ..
            } => 137,
            Outcome::LimitExceeded { .. } => 124,
            Outcome::Stopped => 137,
            Outcome::Failed(_) => 125,
        }
    }
}

/// Where an instance's start went, recorded as it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartPhases {
    /// Building its sandbox: the WASI context (arguments, environment,
    /// mounts, stdio, network policy), the store and its limits.
    pub sandbox: Duration,
    /// Instantiating the pre-linked image in it: a pool slot, memories and
    /// tables initialised, imports bound.
    pub instantiate: Duration,
    /// When the guest's first instruction ran: its entry point
    /// (`_initialize`, `_start` or `wasi:cli/run`) was called.
    pub entered_at: std::time::SystemTime,
}

impl StartPhases {
    /// A guest built in `sandbox` and instantiated in `instantiate` is
    /// about to run its first instruction, now.
    pub(crate) fn entering(sandbox: Duration, instantiate: Duration) -> StartPhases {
        StartPhases {
            sandbox,
            instantiate,
            entered_at: std::time::SystemTime::now(),
        }
    }
}

/// A running (or finished) instance. Dropping it kills the instance.
pub struct Instance {
    id: u64,
    task: Option<JoinHandle<Outcome>>,
    outcome: Option<Outcome>,
    stop: watch::Sender<Option<Duration>>,
    counters: Arc<UsageCounters>,
    phases: watch::Receiver<Option<StartPhases>>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("id", &self.id)
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// A process-unique id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// CPU time and memory used so far.
    pub fn usage(&self) -> Usage {
        self.counters.snapshot()
    }

    /// A handle that reads [`usage`](Self::usage) after the instance is
    /// handed elsewhere.
    pub fn meter(&self) -> crate::UsageMeter {
        crate::UsageMeter(Arc::clone(&self.counters))
    }

    /// Asks the instance to stop: its stdin closes at once (if it was
    /// [`Stdin::UntilStopped`]) and, if it has not exited after `grace`, it
    /// is killed. Returns immediately; [`wait`](Self::wait) for the outcome.
    pub fn stop(&self, grace: Duration) {
        self.stop.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(grace);
                true
            } else {
                false
            }
        });
    }

    /// Waits for the instance to end. Returns the same outcome every time.
    pub async fn wait(&mut self) -> Outcome {
        if let Some(task) = self.task.as_mut() {
            let outcome = match task.await {
                Ok(outcome) => outcome,
                Err(e) => Outcome::Failed(format!("the instance's task failed: {e}")),
            };
            self.task = None;
            self.outcome = Some(outcome);
        }
        self.outcome
            .clone()
            .unwrap_or_else(|| Outcome::Failed("no outcome recorded".into()))
    }

    /// Where its start went, once its guest has begun to run.
    pub fn phases(&self) -> Option<StartPhases> {
        *self.phases.borrow()
    }

    /// Turns to where its start went when its guest begins to run; closes
    /// with `None` if it ended without running (it could not be
    /// instantiated, or was stopped first).
    pub fn start_phases(&self) -> watch::Receiver<Option<StartPhases>> {
        self.phases.clone()
    }

    /// Whether the instance has ended.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Starts an instance of `artifact` on the current tokio runtime.
pub(crate) fn spawn(
    inner: &Arc<Inner>,
    artifact: &Arc<Artifact>,
    spec: InstanceSpec,
) -> Result<Instance, SpawnError> {
    if artifact.kind() == ArtifactKind::HttpProxy {
        return Err(SpawnError::NotACommand(artifact.name().to_string()));
    }
    if spec.limits.fuel.is_some() && !inner.config.fuel {
        return Err(SpawnError::FuelDisabled);
    }
    let handle = tokio::runtime::Handle::try_current().map_err(|_| SpawnError::NoExecutor)?;
    let slot = Arc::clone(&inner.slots)
        .try_acquire_owned()
        .map_err(|_| SpawnError::AtCapacity(inner.config.max_instances))?;
    inner.ticker.wake();

    let counters = Arc::new(UsageCounters::default());
    let (stdin_writer, stdin_reader) = match spec.stdin {
        Stdin::UntilStopped => {
            let (w, r) = tokio::io::duplex(64);
            (Some(w), Some(r))
        }
        _ => (None, None),
    };
    let building = std::time::Instant::now();
    let host = Host::new(&inner.config, &spec, stdin_reader, Arc::clone(&counters))?;
    let store = new_store(inner, host, &spec)?;
    let sandbox = building.elapsed();

    let (stop_tx, stop_rx) = watch::channel(None);
    let (phases_tx, phases) = watch::channel(None);
    let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
    let supervised = supervise(
        slot,
        store,
        Arc::clone(artifact),
        spec.limits.clone(),
        Arc::clone(&counters),
        stop_rx,
        stdin_writer,
        Entry {
            sandbox,
            phases: phases_tx,
        },
    );
    let task = handle.spawn(CpuMeter {
        inner: Box::pin(supervised),
        counters: Arc::clone(&counters),
        cap: spec.limits.cpu_cap.clone(),
    });
    Ok(Instance {
        id,
        task: Some(task),
        outcome: None,
        stop: stop_tx,
        counters,
        phases,
    })
}

/// Records the moment a guest begins to run, with how long its sandbox
/// took to build.
struct Entry {
    sandbox: Duration,
    phases: watch::Sender<Option<StartPhases>>,
}

impl Entry {
    /// The guest was instantiated in `instantiate` and runs now.
    fn enter(&self, instantiate: Duration) {
        self.phases
            .send_replace(Some(StartPhases::entering(self.sandbox, instantiate)));
    }
}

/// A store with the spec's limits applied: memory limiter, fuel, and the
/// epoch deadline that makes the guest yield after its CPU slice.
pub(crate) fn new_store(
    inner: &Inner,
    host: Host,
    spec: &InstanceSpec,
) -> Result<Store<Host>, SpawnError> {
    let mut store = Store::new(&inner.engine, host);
    store.limiter(|h| &mut h.limiter);
    if inner.config.fuel {
        store
            .set_fuel(spec.limits.fuel.unwrap_or(u64::MAX))
            .map_err(|e| SpawnError::Store(format!("{e:#}")))?;
    }
    let slice = inner.slice_ticks(spec.limits.cpu_units);
    store.set_epoch_deadline(slice);
    let cap = spec.limits.cpu_cap.clone();
    store.epoch_deadline_callback(move |_| {
        // Past its cap, it pauses until it owes nothing; else it lets the
        // other tasks of this thread run.
        let pause: Pin<Box<dyn Future<Output = ()> + Send>> =
            match cap.as_ref().and_then(crate::CpuCap::debt) {
                Some(owed) => Box::pin(tokio::time::sleep(owed)),
                None => Box::pin(tokio::task::yield_now()),
            };
        Ok(UpdateDeadline::YieldCustom(slice, pause))
    });
    Ok(store)
}

#[allow(clippy::too_many_arguments)]
async fn supervise(
    // Held until the instance ends, freeing its slot in the pool.
    _slot: tokio::sync::OwnedSemaphorePermit,
    mut store: Store<Host>,
    artifact: Arc<Artifact>,
    limits: crate::Limits,
    counters: Arc<UsageCounters>,
    mut stop: watch::Receiver<Option<Duration>>,
    stdin_writer: Option<tokio::io::DuplexStream>,
    entry: Entry,
) -> Outcome {
    let outputs = store.data().outputs.clone();
    let run = run_guest(&mut store, &artifact, &entry);
    tokio::pin!(run);
    let deadline = async {
        match limits.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);

    let timeout = limits.timeout.unwrap_or_default();
    let timed_out = || Outcome::LimitExceeded {
        limit: crate::Limit::Timeout(timeout),
        detail: format!("still running after {}", crate::format_duration(timeout)),
    };
    // `Ok`: the guest ended by itself; `Err`: it was ended.
    let ended = tokio::select! {
        result = &mut run => Ok(result),
        () = &mut deadline => Err(timed_out()),
        grace = stop_requested(&mut stop) => {
            drop(stdin_writer);
            // The grace period does not extend the time limit.
            tokio::select! {
                result = tokio::time::timeout(grace, &mut run) => {
                    result.map_err(|_| Outcome::Stopped)
                }
                () = &mut deadline => Err(timed_out()),
            }
        }
    };
    // A guest that ended by itself has its output delivered before its
    // outcome is known, as a process's output is before its exit status.
    // One that was ended may have been stuck on a reader: do not wait.
    for output in &outputs {
        output.finish(ended.is_ok()).await;
    }
    match ended {
        Ok(result) => classify(result, &limits, &counters),
        Err(outcome) => outcome,
    }
}

async fn stop_requested(stop: &mut watch::Receiver<Option<Duration>>) -> Duration {
    loop {
        if let Some(grace) = *stop.borrow_and_update() {
            return grace;
        }
        if stop.changed().await.is_err() {
            // The `Instance` is gone; its task is being aborted anyway.
            std::future::pending::<()>().await;
        }
    }
}

async fn run_guest(
    store: &mut Store<Host>,
    artifact: &Artifact,
    entry: &Entry,
) -> wasmtime::Result<()> {
    let instantiating = std::time::Instant::now();
    match &artifact.pre {
        Prepared::Module(pre) => {
            let instance = pre.instantiate_async(&mut *store).await?;
            entry.enter(instantiating.elapsed());
            // Exports are looked up as options, not as typed functions
            // that may fail: a failed lookup builds an error, which with
            // RUST_BACKTRACE set captures a backtrace — for every start of
            // a command, which has no `_initialize` (`perf` of `skiff run
            // hello` found it there).
            let init = instance
                .get_func(&mut *store, "_initialize")
                .and_then(|f| f.typed::<(), ()>(&*store).ok());
            if let Some(init) = init {
                init.call_async(&mut *store, ()).await?;
            }
            let start = match instance.get_func(&mut *store, "_start") {
                Some(f) => f.typed::<(), ()>(&*store)?,
                None => instance.get_typed_func::<(), ()>(&mut *store, "")?,
            };
            start.call_async(&mut *store, ()).await
        }
        Prepared::Command(pre) => {
            let command = pre.instantiate_async(&mut *store).await?;
            entry.enter(instantiating.elapsed());
            match command.wasi_cli_run().call_run(&mut *store).await? {
                Ok(()) => Ok(()),
                Err(()) => Err(I32Exit(1).into()),
            }
        }
        Prepared::Proxy(_) => wasmtime::bail!("an HTTP component cannot be run as a command"),
    }
}

fn classify(
    result: wasmtime::Result<()>,
    limits: &crate::Limits,
    counters: &UsageCounters,
) -> Outcome {
    let error = match result {
        Ok(()) => return Outcome::Exited(0),
        Err(e) => e,
    };
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return Outcome::Exited(exit.0);
    }
    let trap = error.downcast_ref::<Trap>().copied();
    if trap == Some(Trap::OutOfFuel) {
        return Outcome::LimitExceeded {
            limit: crate::Limit::Fuel(limits.fuel.unwrap_or_default()),
            detail: "ran out of fuel".into(),
        };
    }
    // A refused `memory.grow` explains a trap that follows it (Rust aborts
    // on allocation failure) or a failure to instantiate at all. Anything
    // else (a clean exit, a host error) is reported as what it is.
    let backtrace = error.downcast_ref::<WasmBacktrace>();
    if counters.memory_denied.load(Ordering::Relaxed)
        && let Some(limit) = limits.memory
    {
        let detail = match trap {
            Some(trap) => Some(format!(
                "memory.grow was refused, then the guest trapped ({trap})"
            )),
            None if backtrace.is_none() => Some(format!(
                "it could not be instantiated within the limit ({})",
                error.root_cause()
            )),
            None => None,
        };
        if let Some(detail) = detail {
            return Outcome::LimitExceeded {
                limit: crate::Limit::Memory(limit),
                detail,
            };
        }
    }
    // A trap, or a host call that failed fatally while the guest ran (such
    // as a WASI preview 1 `proc_exit` outside 0..126): the reason first,
    // then where in the guest it happened.
    if trap.is_some() || backtrace.is_some() {
        let mut message = match trap {
            Some(trap) => trap.to_string(),
            None => error.root_cause().to_string(),
        };
        if let Some(backtrace) = backtrace {
            message.push('\n');
            message.push_str(&backtrace.to_string());
        }
        return Outcome::Trapped(message);
    }
    Outcome::Failed(format!("{error:#}"))
}

/// Adds the thread CPU time of every poll of the inner future to the
/// instance's usage. Guest code runs inside these polls (on a fiber, on the
/// polling thread), so this is the instance's CPU time.
pub(crate) struct CpuMeter<F> {
    /// The future measured, pinned by the caller (boxed, or on its stack).
    pub(crate) inner: F,
    pub(crate) counters: Arc<UsageCounters>,
    /// Charged the same CPU time, if the instance is capped.
    pub(crate) cap: Option<crate::CpuCap>,
}

impl<F: Future + Unpin> Future for CpuMeter<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let start = thread_cpu_time();
        let result = Pin::new(&mut self.inner).poll(cx);
        let spent = thread_cpu_time().saturating_sub(start);
        let nanos = u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX);
        self.counters.cpu_nanos.fetch_add(nanos, Ordering::Relaxed);
        if let Some(cap) = &self.cap {
            cap.charge(nanos);
        }
        result
    }
}

/// Instantiates `artifact` in a fresh sandbox built from `spec`, without
/// running it: the whole start path of a task, for benchmarks.
pub(crate) async fn instantiate_only(
    inner: &Inner,
    artifact: &Artifact,
    spec: &InstanceSpec,
) -> Result<(), SpawnError> {
    let counters = Arc::new(UsageCounters::default());
    let host = Host::new(&inner.config, spec, None, counters)?;
    let mut store = new_store(inner, host, spec)?;
    let result = match &artifact.pre {
        Prepared::Module(pre) => pre.instantiate_async(&mut store).await.map(drop),
        Prepared::Command(pre) => pre.instantiate_async(&mut store).await.map(drop),
        Prepared::Proxy(pre) => pre.instantiate_async(&mut store).await.map(drop),
    };
    result.map_err(|e| SpawnError::Store(format!("{e:#}")))
}
