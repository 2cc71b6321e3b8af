//! Signals every long-running command stops on.

use std::future::Future;

/// Starts catching SIGINT and SIGTERM now, and returns what waits for the
/// first of them (its number). Call it before saying the command is
/// ready: a signal sent between the two is then not the default's
/// immediate death.
pub fn shutdown_signal() -> impl Future<Output = i32> {
    use tokio::signal::unix::{SignalKind, signal};
    let streams = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    async move {
        let (mut int, mut term) = match streams {
            (Ok(i), Ok(t)) => (i, t),
            _ => return std::future::pending().await,
        };
        tokio::select! {
            _ = int.recv() => libc::SIGINT,
            _ = term.recv() => libc::SIGTERM,
        }
    }
}
