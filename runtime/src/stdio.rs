//! Where a guest's stdin comes from and where its stdout/stderr go.
//!
//! Output is streamed: each guest write is handed to its sink as it happens,
//! nothing is collected on the host side unless the sink itself collects.

use bytes::Bytes;
use std::io;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::PollSemaphore;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// A guest's stdin.
#[derive(Debug, Clone, Default)]
pub enum Stdin {
    /// Closed: reads see end-of-file at once.
    #[default]
    Null,
    /// The host process's stdin (one task per process should use this).
    Inherit,
    /// These bytes, then end-of-file.
    Bytes(Vec<u8>),
    /// Open and empty until the task is asked to stop, then end-of-file.
    /// This is skiff's graceful-stop signal: WASI has no signals, so a guest
    /// that wants to clean up on stop reads stdin until it closes.
    UntilStopped,
}

/// A guest's stdout or stderr.
#[derive(Clone, Default)]
pub enum Output {
    /// Discarded.
    #[default]
    Null,
    /// The host process's own stdout (for a guest's stdout) or stderr.
    Inherit,
    /// Every write is passed to this sink as it happens.
    Sink(Arc<dyn OutputSink>),
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Null => f.write_str("Null"),
            Output::Inherit => f.write_str("Inherit"),
            Output::Sink(_) => f.write_str("Sink(..)"),
        }
    }
}

/// Receives a guest's output. `write` runs on tokio's blocking pool and may
/// block: that is the backpressure a guest feels when its reader is slow.
pub trait OutputSink: Send + Sync + 'static {
    /// Accepts one write of the guest.
    fn write(&self, bytes: &[u8]) -> io::Result<()>;
}

/// A sink that keeps what it is given in memory, up to a cap (16 MiB by
/// default); what comes after the cap is counted but not kept. For tests and
/// small captures.
#[derive(Debug, Clone)]
pub struct CaptureSink(Arc<Mutex<Captured>>);

#[derive(Debug)]
struct Captured {
    bytes: Vec<u8>,
    cap: usize,
    dropped: u64,
}

impl Default for CaptureSink {
    fn default() -> Self {
        Self::with_cap(16 << 20)
    }
}

impl CaptureSink {
    /// An empty capture keeping at most 16 MiB.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty capture keeping at most `cap` bytes.
    pub fn with_cap(cap: usize) -> Self {
        CaptureSink(Arc::new(Mutex::new(Captured {
            bytes: Vec::new(),
            cap,
            dropped: 0,
        })))
    }

    /// Everything kept so far.
    pub fn contents(&self) -> Vec<u8> {
        self.0.lock().map(|c| c.bytes.clone()).unwrap_or_default()
    }

    /// Everything kept so far, as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.contents()).into_owned()
    }

    /// How many bytes arrived after the cap was reached.
    pub fn dropped(&self) -> u64 {
        self.0.lock().map(|c| c.dropped).unwrap_or(0)
    }
}

impl OutputSink for CaptureSink {
    fn write(&self, bytes: &[u8]) -> io::Result<()> {
        let mut c = self
            .0
            .lock()
            .map_err(|_| io::Error::other("capture sink poisoned"))?;
        let room = c.cap.saturating_sub(c.bytes.len());
        let keep = room.min(bytes.len());
        c.bytes.extend_from_slice(&bytes[..keep]);
        c.dropped += (bytes.len() - keep) as u64;
        Ok(())
    }
}

/// Bytes a guest may have written to one stream that the host has not yet
/// delivered; past this, the guest's next write waits. This is the only
/// buffering between a guest and its reader.
const OUTPUT_BUDGET: usize = 64 * 1024;

/// A guest's stdout or stderr as WASI sees it: a pipe to whoever delivers
/// its bytes.
///
/// A write is queued at once (and `flush` is immediate) while less than
/// [`OUTPUT_BUDGET`] bytes await delivery; past that the guest waits,
/// asynchronously, for its reader. So a slow reader slows its own guest and
/// never blocks the thread the guest shares with other tasks and the
/// runtime's timers, and printing costs a guest no trip through the
/// scheduler.
///
/// The host's own stdout and stderr are each written by one thread for the
/// whole process (see [`host_writer`]); a sink gets a delivery task, started
/// at the first write: most instances (every HTTP request) never print.
#[derive(Clone)]
pub(crate) struct GuestOutput(Arc<Pipe>);

struct Pipe {
    target: Target,
    /// One permit per byte that may be queued; all of them are free again
    /// once everything written has been delivered.
    budget: Arc<Semaphore>,
    /// Set when the reader went away: later writes fail as a closed pipe.
    broken: Arc<AtomicBool>,
    state: Mutex<PipeState>,
}

#[derive(Default)]
struct PipeState {
    /// The sink's delivery queue, once started.
    queue: Option<mpsc::UnboundedSender<Chunk>>,
    closed: bool,
}

/// Bytes on their way, holding their share of the budget until delivered.
type Chunk = (Bytes, OwnedSemaphorePermit);

#[derive(Clone)]
enum Target {
    Stdout,
    Stderr,
    Sink(Arc<dyn OutputSink>),
}

impl GuestOutput {
    pub(crate) fn stdout() -> Self {
        Self::new(Target::Stdout)
    }

    pub(crate) fn stderr() -> Self {
        Self::new(Target::Stderr)
    }

    pub(crate) fn sink(sink: Arc<dyn OutputSink>) -> Self {
        Self::new(Target::Sink(sink))
    }

    fn new(target: Target) -> Self {
        GuestOutput(Arc::new(Pipe {
            target,
            budget: Arc::new(Semaphore::new(OUTPUT_BUDGET)),
            broken: Arc::new(AtomicBool::new(false)),
            state: Mutex::new(PipeState::default()),
        }))
    }

    fn queue(&self, bytes: Bytes, permit: OwnedSemaphorePermit) -> StreamResult<()> {
        let pipe = &self.0;
        if pipe.broken.load(Ordering::Relaxed) {
            return Err(StreamError::Closed);
        }
        let mut state = pipe
            .state
            .lock()
            .map_err(|_| StreamError::trap("output pipe poisoned"))?;
        if state.closed {
            return Err(StreamError::Closed);
        }
        let sent = match &pipe.target {
            Target::Stdout => host_writer(Fd::Stdout)
                .send((bytes, permit, Arc::clone(&pipe.broken)))
                .is_ok(),
            Target::Stderr => host_writer(Fd::Stderr)
                .send((bytes, permit, Arc::clone(&pipe.broken)))
                .is_ok(),
            Target::Sink(sink) => {
                let queue = state.queue.get_or_insert_with(|| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(deliver(rx, SinkWriter::new(sink), Arc::clone(&pipe.broken)));
                    tx
                });
                queue.send((bytes, permit)).is_ok()
            }
        };
        if sent {
            Ok(())
        } else {
            Err(StreamError::Closed)
        }
    }

    /// Takes no more writes. If `wait`, resolves once everything written so
    /// far has reached the reader (or the reader has gone).
    pub(crate) async fn finish(&self, wait: bool) {
        if let Ok(mut state) = self.0.state.lock() {
            state.closed = true;
            // The sink's delivery task ends once its queue is drained.
            state.queue = None;
        }
        if wait {
            // Every permit is back once the last chunk was delivered.
            let all = u32::try_from(OUTPUT_BUDGET).unwrap_or(u32::MAX);
            let _ = self.0.budget.acquire_many(all).await;
        }
    }
}

/// Delivers a sink's chunks in order; each chunk's budget is released once
/// the sink has it.
async fn deliver(
    mut queue: mpsc::UnboundedReceiver<Chunk>,
    mut writer: SinkWriter,
    broken: Arc<AtomicBool>,
) {
    while let Some((bytes, permit)) = queue.recv().await {
        let delivered = async {
            writer.write_all(&bytes).await?;
            writer.flush().await
        };
        if delivered.await.is_err() {
            broken.store(true, Ordering::Relaxed);
        }
        drop(permit);
    }
}

#[derive(Clone, Copy)]
enum Fd {
    Stdout,
    Stderr,
}

/// Bytes for the host's stdout or stderr, the permit that releases their
/// share of the writer's budget, and the writer's pipe to mark if the host
/// stream is gone.
type HostChunk = (Bytes, OwnedSemaphorePermit, Arc<AtomicBool>);

/// The one thread that writes the process's stdout (or stderr) for every
/// guest: writes block only it, and guests wait for it asynchronously
/// through their budgets.
fn host_writer(fd: Fd) -> &'static std::sync::mpsc::Sender<HostChunk> {
    static STDOUT: OnceLock<std::sync::mpsc::Sender<HostChunk>> = OnceLock::new();
    static STDERR: OnceLock<std::sync::mpsc::Sender<HostChunk>> = OnceLock::new();
    let (cell, name) = match fd {
        Fd::Stdout => (&STDOUT, "skiff-stdout"),
        Fd::Stderr => (&STDERR, "skiff-stderr"),
    };
    cell.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<HostChunk>();
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                for (bytes, permit, broken) in rx {
                    let written = match fd {
                        Fd::Stdout => {
                            let mut out = std::io::stdout().lock();
                            out.write_all(&bytes).and_then(|()| out.flush())
                        }
                        Fd::Stderr => std::io::stderr().lock().write_all(&bytes),
                    };
                    if written.is_err() {
                        broken.store(true, Ordering::Relaxed);
                    }
                    drop(permit);
                }
            });
        if let Err(e) = spawned {
            // Without the thread the receiver is gone: writes fail as a
            // closed pipe, which the guest sees.
            tracing::error!("cannot start the {name} writer thread: {e}");
        }
        tx
    })
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(GuestOutputWriter {
            output: self.clone(),
            budget: PollSemaphore::new(Arc::clone(&self.0.budget)),
        })
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let n = u32::try_from(bytes.len()).map_err(|_| StreamError::trap("write too large"))?;
        let permit = Arc::clone(&self.0.budget)
            .try_acquire_many_owned(n)
            .map_err(|_| StreamError::trap("write larger than check-write allowed"))?;
        self.queue(bytes, permit)
    }

    /// Everything written is already on its way: nothing to wait for.
    fn flush(&mut self) -> StreamResult<()> {
        if self.0.broken.load(Ordering::Relaxed) {
            return Err(StreamError::Closed);
        }
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        if self.0.broken.load(Ordering::Relaxed) {
            return Err(StreamError::Closed);
        }
        Ok(self.0.budget.available_permits())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {
        if self.0.budget.available_permits() > 0 || self.0.broken.load(Ordering::Relaxed) {
            return;
        }
        // Room frees as the reader catches up; take none of it.
        if let Ok(permit) = self.0.budget.acquire().await {
            drop(permit);
        }
    }
}

/// The same pipe as an `AsyncWrite` (how WASI 0.3 would write to it).
struct GuestOutputWriter {
    output: GuestOutput,
    budget: PollSemaphore,
}

impl AsyncWrite for GuestOutputWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(OUTPUT_BUDGET);
        let permits = u32::try_from(n).unwrap_or(u32::MAX);
        let Some(permit) = ready!(self.budget.poll_acquire_many(cx, permits)) else {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        };
        match self.output.queue(Bytes::copy_from_slice(&buf[..n]), permit) {
            Ok(()) => Poll::Ready(Ok(n)),
            Err(_) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Hands each write to an [`OutputSink`] on tokio's blocking pool, one at a
/// time, as tokio's own stdout does: a sink that blocks holds up only its
/// guest. A failed write is reported on the next write or flush.
struct SinkWriter {
    sink: Arc<dyn OutputSink>,
    in_flight: Option<JoinHandle<io::Result<()>>>,
}

impl SinkWriter {
    fn new(sink: &Arc<dyn OutputSink>) -> Self {
        SinkWriter {
            sink: Arc::clone(sink),
            in_flight: None,
        }
    }

    /// Waits for the write in flight, if any, and returns its result.
    fn poll_in_flight(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(handle) = self.in_flight.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let result = match Pin::new(handle).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(result)) => result,
            Poll::Ready(Err(e)) => Err(io::Error::other(e)),
        };
        self.in_flight = None;
        Poll::Ready(result)
    }
}

impl AsyncWrite for SinkWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = ready!(self.poll_in_flight(cx)) {
            return Poll::Ready(Err(e));
        }
        let sink = Arc::clone(&self.sink);
        let bytes = buf.to_vec();
        self.in_flight = Some(tokio::task::spawn_blocking(move || sink.write(&bytes)));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_in_flight(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_in_flight(cx)
    }
}
