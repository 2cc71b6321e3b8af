//! The one HTTP/1.1 server loop behind every listener skiff has: the
//! control plane's API, the registry, the load balancers' listeners and
//! the runtime's `wasi:http` servers. It accepts connections, serves each
//! with hyper (keep-alive, a header-read timeout) on a task of its own,
//! and, once asked to stop, closes them gracefully: idle ones at once,
//! busy ones after the request in flight. Each caller brings only what
//! differs — its service, its limits, what else it waits for when it
//! drains.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use http_body_util::Full;
//! use hyper::{Request, Response, body::{Bytes, Incoming}};
//! use skiff_http_server::{ServerConfig, serve};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let config = ServerConfig::new("demo");
//! serve(listener, &config, std::future::pending(), |_peer| {
//!     hyper::service::service_fn(|_req: Request<Incoming>| async {
//!         Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("hi\n"))))
//!     })
//! })
//! .await;
//! # Ok(()) }
//! ```

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How a server accepts and serves. [`ServerConfig::new`] gives the
/// defaults.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// What the server is, for its log lines ("API", "registry"...).
    pub name: &'static str,
    /// How long a client may take to send a request's headers, on a new
    /// connection and between requests of a kept-alive one. Default: 30 s.
    pub header_read_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    /// Default: no limit.
    pub max_connections: Option<usize>,
    /// How long [`serve`] lets connections finish their requests once
    /// asked to stop, before it drops them. Default: 30 s.
    pub drain_timeout: Duration,
}

impl ServerConfig {
    /// The defaults, for a server called `name` in log lines.
    pub fn new(name: &'static str) -> Self {
        ServerConfig {
            name,
            header_read_timeout: Duration::from_secs(30),
            max_connections: None,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// The connections a server still has open once it stopped accepting.
pub struct Connections {
    name: &'static str,
    graceful: Option<GracefulShutdown>,
    tasks: JoinSet<()>,
}

impl Connections {
    /// Asks every connection to close (idle ones now, busy ones after
    /// their response) and waits until all have.
    pub async fn drain(&mut self) {
        if let Some(graceful) = self.graceful.take() {
            graceful.shutdown().await;
        }
        self.wait().await;
    }

    /// Waits until every connection has ended, asking none to.
    pub async fn wait(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }

    /// Drops every connection still open, whatever it is doing.
    pub async fn close(&mut self) {
        self.tasks.shutdown().await;
        tracing::trace!(server = self.name, "connections closed");
    }
}

/// Accepts connections on `listener` until `shutdown` resolves, serving
/// each with the service `service_for(peer)` makes; returns the
/// connections still open, for the caller to [`drain`](Connections::drain)
/// or [`close`](Connections::close). The listener stays open (and
/// connections queue in its backlog) until the caller drops it.
///
/// A failed accept (out of file descriptors, say) is logged and retried
/// after 10 ms: the server keeps serving the connections it has.
pub async fn accept<S, M>(
    listener: &TcpListener,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()>,
    mut service_for: M,
) -> Connections
where
    M: FnMut(SocketAddr) -> S,
    S: HttpService<Incoming> + Send + 'static,
    S::Future: Send + 'static,
    S::ResBody: Body + Send + 'static,
    <S::ResBody as Body>::Data: Send,
    <S::ResBody as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut http = http1::Builder::new();
    http.keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let slots = config
        .max_connections
        .map(|n| Arc::new(Semaphore::new(n.max(1))));
    let mut tasks = JoinSet::new();
    let name = config.name;
    tokio::pin!(shutdown);
    loop {
        // A connection slot first (if connections are limited): until one
        // frees, new connections wait in the backlog.
        let permit = match &slots {
            Some(slots) => tokio::select! {
                () = &mut shutdown => break,
                permit = Arc::clone(slots).acquire_owned() => match permit {
                    Ok(p) => Some(p),
                    Err(_) => break,
                },
            },
            None => None,
        };
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = graceful.watch(
                        http.serve_connection(TokioIo::new(stream), service_for(peer)),
                    );
                    tasks.spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(server = name, "connection ended: {e}");
                        }
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(server = name, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    Connections {
        name,
        graceful: Some(graceful),
        tasks,
    }
}

/// [`accept`], then closes the listener and drains the connections for at
/// most [`ServerConfig::drain_timeout`]; what is still open after it is
/// dropped.
pub async fn serve<S, M>(
    listener: TcpListener,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()>,
    service_for: M,
) where
    M: FnMut(SocketAddr) -> S,
    S: HttpService<Incoming> + Send + 'static,
    S::Future: Send + 'static,
    S::ResBody: Body + Send + 'static,
    <S::ResBody as Body>::Data: Send,
    <S::ResBody as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connections = accept(&listener, config, shutdown, service_for).await;
    drop(listener);
    if tokio::time::timeout(config.drain_timeout, connections.drain())
        .await
        .is_err()
    {
        tracing::warn!(
            server = config.name,
            "connections still busy after {:?}: closing them",
            config.drain_timeout
        );
        connections.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::{Request, Response};
    use std::convert::Infallible;
    use std::io::{Read, Write};
    use tokio::sync::{Notify, mpsc, oneshot};

    /// What the test service shares: `/slow` says it has arrived on
    /// `arrived`, then waits for `release`.
    #[derive(Clone)]
    struct Gate {
        release: Arc<Notify>,
        arrived: mpsc::UnboundedSender<()>,
    }

    fn gate() -> (Gate, mpsc::UnboundedReceiver<()>) {
        let (arrived, rx) = mpsc::unbounded_channel();
        let gate = Gate {
            release: Arc::new(Notify::new()),
            arrived,
        };
        (gate, rx)
    }

    /// Answers `peer PATH`; `/slow` passes the gate first.
    fn echo_peer(
        peer: SocketAddr,
        gate: Gate,
    ) -> impl HttpService<
        Incoming,
        ResBody = Full<Bytes>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
    > + Send {
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let gate = gate.clone();
            async move {
                if req.uri().path() == "/slow" {
                    let released = gate.release.notified();
                    let _ = gate.arrived.send(());
                    released.await;
                }
                let body = format!("{} {}", peer.ip(), req.uri().path());
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
            }
        })
    }

    /// One HTTP/1.1 request on a fresh blocking connection; the whole
    /// response as text.
    fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    async fn listener() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        (l, addr)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_until_shutdown_then_finishes_the_request_in_flight() {
        let (l, addr) = listener().await;
        let (gate, mut arrived) = gate();
        let release = Arc::clone(&gate.release);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let config = ServerConfig::new("test");
            serve(l, &config, async { drop(stop_rx.await) }, move |peer| {
                echo_peer(peer, gate.clone())
            })
            .await;
        });
        let quick = tokio::task::spawn_blocking(move || get(addr, "/a"))
            .await
            .unwrap()
            .unwrap();
        assert!(quick.starts_with("HTTP/1.1 200"), "{quick}");
        assert!(quick.ends_with("127.0.0.1 /a"), "{quick}");

        // A request in flight when shutdown is asked still gets its answer.
        let slow = tokio::task::spawn_blocking(move || get(addr, "/slow"));
        arrived.recv().await.unwrap();
        stop_tx.send(()).unwrap();
        // Once shutdown was asked, the listener is closed.
        tokio::task::spawn_blocking(move || {
            loop {
                match std::net::TcpStream::connect(addr) {
                    Err(_) => break,
                    Ok(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })
        .await
        .unwrap();
        assert!(
            !server.is_finished(),
            "the server waits for the slow request"
        );
        release.notify_one();
        let slow = slow.await.unwrap().unwrap();
        assert!(slow.ends_with("127.0.0.1 /slow"), "{slow}");
        server.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_sends_no_headers_is_dropped_after_the_timeout() {
        let (l, addr) = listener().await;
        let mut config = ServerConfig::new("test");
        config.header_read_timeout = Duration::from_millis(200);
        let (gate, _arrived) = gate();
        tokio::spawn(async move {
            serve(l, &config, std::future::pending(), move |peer| {
                echo_peer(peer, gate.clone())
            })
            .await;
        });
        let ended = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let started = std::time::Instant::now();
            let mut buf = Vec::new();
            // EOF (or a 408) comes from the server, not from our timeout.
            let read = s.read_to_end(&mut buf);
            (read.is_ok(), started.elapsed())
        })
        .await
        .unwrap();
        assert!(ended.0, "the server closed the connection");
        assert!(ended.1 < Duration::from_secs(20), "{:?}", ended.1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_beyond_the_limit_wait_for_a_free_slot() {
        let (l, addr) = listener().await;
        let mut config = ServerConfig::new("test");
        config.max_connections = Some(1);
        let (gate, mut arrived) = gate();
        let release = Arc::clone(&gate.release);
        tokio::spawn(async move {
            serve(l, &config, std::future::pending(), move |peer| {
                echo_peer(peer, gate.clone())
            })
            .await;
        });
        let slow = tokio::task::spawn_blocking(move || get(addr, "/slow"));
        arrived.recv().await.unwrap();
        // The second connection is accepted by the kernel, but not served
        // while the only slot is taken.
        let second = tokio::task::spawn_blocking(move || get(addr, "/b"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!second.is_finished(), "served beyond the limit");
        release.notify_one();
        assert!(slow.await.unwrap().unwrap().ends_with("/slow"));
        assert!(second.await.unwrap().unwrap().ends_with("/b"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_outliving_the_drain_timeout_is_dropped() {
        let (l, addr) = listener().await;
        let mut config = ServerConfig::new("test");
        config.drain_timeout = Duration::from_millis(100);
        let (gate, mut arrived) = gate();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            serve(l, &config, async { drop(stop_rx.await) }, move |peer| {
                echo_peer(peer, gate.clone())
            })
            .await;
        });
        let slow = tokio::task::spawn_blocking(move || get(addr, "/slow"));
        arrived.recv().await.unwrap();
        stop_tx.send(()).unwrap();
        server.await.unwrap();
        // Never released: the client saw its connection end with no answer.
        let answer = slow.await.unwrap().unwrap_or_default();
        assert_eq!(answer, "");
    }
}
