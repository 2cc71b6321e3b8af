//! Where a guest's stdin comes from and where its stdout/stderr go.
//!
//! Output is streamed: each guest write is handed to its sink as it happens,
//! nothing is collected on the host side unless the sink itself collects.

use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
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

/// Receives a guest's output. Writes may block: that is the backpressure a
/// guest feels when its reader is slow.
pub trait OutputSink: Send + Sync + 'static {
    /// Accepts one write of the guest.
    fn write(&self, bytes: &[u8]) -> io::Result<()>;
}

/// A sink that keeps everything in memory, for tests and small captures.
#[derive(Debug, Default, Clone)]
pub struct CaptureSink(Arc<Mutex<Vec<u8>>>);

impl CaptureSink {
    /// An empty capture.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything written so far.
    pub fn contents(&self) -> Vec<u8> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Everything written so far, as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.contents()).into_owned()
    }
}

impl OutputSink for CaptureSink {
    fn write(&self, bytes: &[u8]) -> io::Result<()> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("capture sink poisoned"))?
            .extend_from_slice(bytes);
        Ok(())
    }
}

/// Adapts an [`OutputSink`] to WASI's stdout/stderr stream traits.
#[derive(Clone)]
pub(crate) struct SinkStream(pub(crate) Arc<dyn OutputSink>);

impl IsTerminal for SinkStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for SinkStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for SinkStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.0.write(&bytes).map_err(|e| {
            if e.kind() == io::ErrorKind::BrokenPipe {
                StreamError::Closed
            } else {
                StreamError::LastOperationFailed(e.into())
            }
        })
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for SinkStream {
    async fn ready(&mut self) {}
}

impl AsyncWrite for SinkStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.0.write(buf).map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
