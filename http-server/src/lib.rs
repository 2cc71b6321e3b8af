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
//! use hyper::{Response, body::Bytes};
//! use skiff_http_server::{Request, ServerConfig, serve};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let config = ServerConfig::new("demo");
//! serve(listener, &config, std::future::pending(), |_peer| {
//!     hyper::service::service_fn(|_req: Request| async {
//!         Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("hi\n"))))
//!     })
//! })
//! .await;
//! # Ok(()) }
//! ```

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Sleep;

/// How a server accepts and serves. [`ServerConfig::new`] gives the
/// defaults.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// What the server is, for its log lines ("API", "registry"...).
    pub name: &'static str,
    /// How long a client may take to send a request's headers, on a new
    /// connection and between requests of a kept-alive one. Default: 30 s.
    pub header_read_timeout: Duration,
    /// How a request's body must keep coming. Default: [`BodyLimits`]'s.
    pub body: BodyLimits,
    /// Connections served at once; more wait in the listen backlog.
    /// Default: no limit.
    pub max_connections: Option<usize>,
    /// Connections one peer address may hold at once; one more is answered
    /// 503 and closed, so one client cannot take every connection from the
    /// others. Default: no limit.
    pub max_connections_per_peer: Option<usize>,
    /// How long [`serve`] lets connections finish their requests once
    /// asked to stop, before it drops them. Default: 30 s.
    pub drain_timeout: Duration,
    /// What a connection over its peer's limit is told before it is
    /// closed: a 503 with this content type and body, so a client reads
    /// its protocol's own error. Default: plain text.
    pub busy: (&'static str, &'static str),
}

impl ServerConfig {
    /// The defaults, for a server called `name` in log lines.
    pub fn new(name: &'static str) -> Self {
        ServerConfig {
            name,
            header_read_timeout: Duration::from_secs(30),
            body: BodyLimits::default(),
            max_connections: None,
            max_connections_per_peer: None,
            drain_timeout: Duration::from_secs(30),
            busy: (
                "text/plain",
                "too many connections from this address; retry\n",
            ),
        }
    }

    /// The defaults, bounded for a server anyone on its network can reach:
    /// at most `total` connections, and a quarter of them per peer.
    pub fn public(name: &'static str, total: usize) -> Self {
        ServerConfig {
            max_connections: Some(total),
            max_connections_per_peer: Some((total / 4).max(1)),
            ..ServerConfig::new(name)
        }
    }
}

/// How a request's body must keep coming once its headers are in: a client
/// that stops sending (a `Content-Length` promised and not kept) or sends
/// slower than the minimum rate has its request failed with a
/// [`BodyError`] and its connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// The longest wait for the body's next bytes. Default: 30 s.
    pub idle_timeout: Duration,
    /// The slowest average a body may arrive at, in bytes per second,
    /// judged once it has been arriving for [`BodyLimits::rate_grace`].
    /// Default: 1024.
    pub min_bytes_per_second: u64,
    /// How long a body may take before its rate is judged. Default: 10 s.
    pub rate_grace: Duration,
}

impl Default for BodyLimits {
    fn default() -> Self {
        BodyLimits {
            idle_timeout: Duration::from_secs(30),
            min_bytes_per_second: 1024,
            rate_grace: Duration::from_secs(10),
        }
    }
}

/// A request as a server's service receives it.
pub type Request = http::Request<RequestBody>;

/// A request's body, as the client sends it, within [`BodyLimits`].
pub struct RequestBody {
    inner: Incoming,
    limits: BodyLimits,
    /// When the body began to be read.
    started: Option<Instant>,
    received: u64,
    /// When the client's next bytes are due, while they are awaited.
    due: Option<Pin<Box<Sleep>>>,
}

impl RequestBody {
    fn new(inner: Incoming, limits: BodyLimits) -> RequestBody {
        RequestBody {
            inner,
            limits,
            started: None,
            received: 0,
            due: None,
        }
    }
}

impl RequestBody {
    /// The whole body, if it is at most `limit` bytes.
    ///
    /// A larger body is read on and discarded, up to three times `limit`
    /// more (within the [`BodyLimits`]), so that a client still sending
    /// finishes and reads the answer — a 413 — rather than a reset
    /// connection; the connection also stays usable. A body declared
    /// larger than that is refused at once.
    pub async fn collect_within(mut self, limit: usize) -> Result<Bytes, CollectError> {
        use http_body_util::BodyExt;
        let drain_to = limit.saturating_mul(4);
        if self.size_hint().lower() > drain_to as u64 {
            return Err(CollectError::TooLarge { limit });
        }
        let mut out = Vec::new();
        let mut seen = 0usize;
        while let Some(frame) = self.frame().await {
            let Ok(data) = frame.map_err(CollectError::Body)?.into_data() else {
                continue;
            };
            seen = seen.saturating_add(data.len());
            if seen <= limit {
                out.extend_from_slice(&data);
            } else if seen > drain_to {
                break;
            } else {
                out = Vec::new();
            }
        }
        if seen > limit {
            return Err(CollectError::TooLarge { limit });
        }
        Ok(Bytes::from(out))
    }
}

/// Why [`RequestBody::collect_within`] returned no body.
#[derive(Debug)]
pub enum CollectError {
    /// The body is larger than this many bytes.
    TooLarge {
        /// The most the caller takes.
        limit: usize,
    },
    /// The body could not be read.
    Body(BodyError),
}

impl std::fmt::Display for CollectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CollectError::TooLarge { limit } => {
                write!(f, "the body is larger than {limit} bytes")
            }
            CollectError::Body(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CollectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CollectError::Body(e) => Some(e),
            CollectError::TooLarge { .. } => None,
        }
    }
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody")
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

/// Why a request's body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// The connection failed, or the client sent something that is not
    /// HTTP.
    Hyper(hyper::Error),
    /// The client sent nothing more for this long, the body unfinished.
    Stalled(Duration),
    /// The body arrived slower than the server takes.
    TooSlow {
        /// Bytes per second it arrived at.
        bytes_per_second: u64,
        /// The least the server takes.
        minimum: u64,
    },
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Hyper(e) => write!(f, "{e}"),
            BodyError::Stalled(d) => {
                write!(f, "the client sent nothing more of the body for {d:?}")
            }
            BodyError::TooSlow {
                bytes_per_second,
                minimum,
            } => write!(
                f,
                "the body arrived at {bytes_per_second} bytes/s, slower than the {minimum} bytes/s this server takes"
            ),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::Hyper(e) => Some(e),
            _ => None,
        }
    }
}

impl From<hyper::Error> for BodyError {
    fn from(e: hyper::Error) -> Self {
        BodyError::Hyper(e)
    }
}

impl BodyError {
    /// Whether the client was too slow (not a broken connection).
    pub fn is_timeout(&self) -> bool {
        !matches!(self, BodyError::Hyper(_))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let started = *this.started.get_or_insert_with(Instant::now);
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.due = None;
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
                let elapsed = started.elapsed();
                if elapsed > this.limits.rate_grace && !this.inner.is_end_stream() {
                    let rate = (this.received as f64 / elapsed.as_secs_f64()) as u64;
                    if rate < this.limits.min_bytes_per_second {
                        return Poll::Ready(Some(Err(BodyError::TooSlow {
                            bytes_per_second: rate,
                            minimum: this.limits.min_bytes_per_second,
                        })));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Hyper(e)))),
            Poll::Ready(None) => {
                this.due = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let idle = this.limits.idle_timeout;
                let due = this
                    .due
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match due.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::Stalled(idle)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The caller's service, handed requests with their bodies guarded, and
/// counting its connection's requests in flight.
struct Guarded<S> {
    service: S,
    limits: BodyLimits,
    activity: Arc<Activity>,
}

impl<S, B> Service<http::Request<Incoming>> for Guarded<S>
where
    S: Service<Request, Response = http::Response<B>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    B: 'static,
{
    type Response = http::Response<Tracked<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let busy = InFlight::new(&self.activity);
        let answer = self
            .service
            .call(req.map(|b| RequestBody::new(b, self.limits)));
        Box::pin(async move {
            // The request is in flight until its response body is sent
            // (or dropped): the body carries the count.
            let response = answer.await?;
            Ok(response.map(|body| Tracked {
                body: Box::pin(body),
                _busy: busy,
            }))
        })
    }
}

/// What one connection is doing, as the server's eviction of idle
/// connections sees it.
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    idle_since: Mutex<Instant>,
    close: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            close: tokio::sync::Notify::new(),
        })
    }

    fn idle(&self) -> bool {
        self.in_flight.load(std::sync::atomic::Ordering::SeqCst) == 0
    }
}

/// One request in flight on a connection, until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: &Arc<Activity>) -> InFlight {
        a.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlight(Arc::clone(a))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut since) = self.0.idle_since.lock() {
            *since = Instant::now();
        }
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted in flight until it is
/// sent.
struct Tracked<B> {
    body: Pin<Box<B>>,
    _busy: InFlight,
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.body.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connections a server has open, for closing the one idle longest
/// when a new one arrives and every slot is taken.
#[derive(Default)]
struct Open(Mutex<HashMap<u64, Arc<Activity>>>);

impl Open {
    fn longest_idle(&self) -> Option<Arc<Activity>> {
        let open = self.0.lock().ok()?;
        open.values()
            .filter(|a| a.idle())
            .min_by_key(|a| {
                a.idle_since
                    .lock()
                    .map(|t| *t)
                    .unwrap_or_else(|_| Instant::now())
            })
            .cloned()
    }
}

/// How many connections each peer address holds.
#[derive(Default)]
struct Peers(Mutex<HashMap<IpAddr, usize>>);

impl Peers {
    /// Counts one more connection of `ip`, unless it holds `limit`.
    fn enter(self: &Arc<Self>, ip: IpAddr, limit: Option<usize>) -> Option<PeerGuard> {
        let mut counts = self.0.lock().ok()?;
        let n = counts.entry(ip).or_insert(0);
        if limit.is_some_and(|l| *n >= l) {
            return None;
        }
        *n += 1;
        Some(PeerGuard(Arc::clone(self), ip))
    }
}

/// One connection of a peer, counted until dropped.
struct PeerGuard(Arc<Peers>, IpAddr);

impl Drop for PeerGuard {
    fn drop(&mut self) {
        if let Ok(mut counts) = (self.0).0.lock()
            && let Some(n) = counts.get_mut(&self.1)
        {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.1);
            }
        }
    }
}

/// What a peer over its limit is told before its connection closes.
/// The 503 a connection over its peer's limit is sent.
fn busy_response((content_type, body): (&str, &str)) -> Vec<u8> {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The connections a server still has open once it stopped accepting.
pub struct Connections {
    name: &'static str,
    /// Set to ask every connection to finish gracefully.
    drain: tokio::sync::watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Connections {
    /// Asks every connection to close (idle ones now, busy ones after
    /// their response) and waits until all have.
    pub async fn drain(&mut self) {
        self.drain.send_replace(true);
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
pub async fn accept<S, M, B>(
    listener: &TcpListener,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()>,
    mut service_for: M,
) -> Connections
where
    M: FnMut(SocketAddr) -> S,
    S: Service<Request, Response = http::Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut http = http1::Builder::new();
    // A client may shut its side down once its request is sent (curl
    // --data @- does, and so do many scripts): it still gets its answer.
    http.keep_alive(true)
        .half_close(true)
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    // hyper-util's GracefulShutdown cannot watch a connection that may be
    // upgraded, so each connection watches this instead.
    let (drain, draining) = tokio::sync::watch::channel(false);
    let slots = config
        .max_connections
        .map(|n| Arc::new(Semaphore::new(n.max(1))));
    let peers = Arc::new(Peers::default());
    let busy = busy_response(config.busy);
    let mut tasks = JoinSet::new();
    let name = config.name;
    tokio::pin!(shutdown);
    let open = Arc::new(Open::default());
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Some(counted) = peers.enter(peer.ip(), config.max_connections_per_peer) else {
                        tracing::debug!(server = name, %peer, "over its connection limit: refused");
                        // Best effort: a client reading gets told why.
                        let _ = stream.try_write(&busy);
                        continue;
                    };
                    // A connection slot (if connections are limited). With
                    // every slot taken, the connection idle longest (no
                    // request in flight: waiting for headers, or kept
                    // alive) is closed to make room, so clients that hold
                    // connections open without using them cannot keep a
                    // new one out; if every one is busy, the new one waits.
                    let permit = match &slots {
                        None => None,
                        Some(slots) => match Arc::clone(slots).try_acquire_owned() {
                            Ok(p) => Some(p),
                            Err(_) => {
                                if let Some(idle) = open.longest_idle() {
                                    tracing::debug!(server = name, "every connection slot taken: closing the one idle longest");
                                    idle.close.notify_one();
                                }
                                tokio::select! {
                                    () = &mut shutdown => break,
                                    permit = Arc::clone(slots).acquire_owned() => match permit {
                                        Ok(p) => Some(p),
                                        Err(_) => break,
                                    },
                                }
                            }
                        },
                    };
                    let _ = stream.set_nodelay(true);
                    let activity = Activity::new();
                    let id = next_id;
                    next_id += 1;
                    if let Ok(mut o) = open.0.lock() {
                        o.insert(id, Arc::clone(&activity));
                    }
                    let service = Guarded {
                        service: service_for(peer),
                        limits: config.body,
                        activity: Arc::clone(&activity),
                    };
                    // Upgrades (a WebSocket: an agent's channel) leave
                    // the server: the connection's slot is freed and the
                    // service that took it over owns the stream.
                    let conn = http
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades();
                    let open = Arc::clone(&open);
                    let mut draining = draining.clone();
                    tasks.spawn(async move {
                        tokio::pin!(conn);
                        let mut asked = false;
                        loop {
                            tokio::select! {
                                ended = &mut conn => {
                                    if let Err(e) = ended {
                                        tracing::debug!(server = name, "connection ended: {e}");
                                    }
                                    break;
                                }
                                // Finish gracefully: idle now, busy after
                                // its response.
                                Ok(()) = draining.changed(), if !asked => {
                                    asked = true;
                                    conn.as_mut().graceful_shutdown();
                                }
                                // Closed to make room, unless a request
                                // began meanwhile.
                                () = activity.close.notified() => if activity.idle() {
                                    break;
                                },
                            }
                        }
                        if let Ok(mut o) = open.0.lock() {
                            o.remove(&id);
                        }
                        drop(counted);
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
    Connections { name, drain, tasks }
}

/// [`accept`], then closes the listener and drains the connections for at
/// most [`ServerConfig::drain_timeout`]; what is still open after it is
/// dropped.
pub async fn serve<S, M, B>(
    listener: TcpListener,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()>,
    service_for: M,
) where
    M: FnMut(SocketAddr) -> S,
    S: Service<Request, Response = http::Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
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
    use hyper::Response;
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

    /// Answers `peer PATH BYTES` (the body's length); `/slow` passes the
    /// gate first; a body that cannot be read is answered 408 with why.
    fn echo_peer(
        peer: SocketAddr,
        gate: Gate,
    ) -> impl Service<
        super::Request,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
    > + Send {
        hyper::service::service_fn(move |req: super::Request| {
            let gate = gate.clone();
            async move {
                if req.uri().path() == "/slow" {
                    let released = gate.release.notified();
                    let _ = gate.arrived.send(());
                    released.await;
                }
                let path = req.uri().path().to_string();
                let body = match http_body_util::BodyExt::collect(req.into_body()).await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => {
                        let mut r = Response::new(Full::new(Bytes::from(e.to_string())));
                        *r.status_mut() = http::StatusCode::REQUEST_TIMEOUT;
                        return Ok(r);
                    }
                };
                let text = format!("{} {path} {}", peer.ip(), body.len());
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
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
        assert!(quick.ends_with("127.0.0.1 /a 0"), "{quick}");

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
        assert!(slow.ends_with("127.0.0.1 /slow 0"), "{slow}");
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
        assert!(slow.await.unwrap().unwrap().ends_with("/slow 0"));
        assert!(second.await.unwrap().unwrap().ends_with("/b 0"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_connection_takes_the_slot_of_the_one_idle_longest() {
        let mut config = ServerConfig::new("test");
        config.max_connections = Some(2);
        let addr = start(config).await;
        let answers = tokio::task::spawn_blocking(move || {
            // Two connections that never send a request take both slots.
            let mut first = std::net::TcpStream::connect(addr).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            let mut second = std::net::TcpStream::connect(addr).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            // A client with a request is served all the same...
            let served = get(addr, "/new").unwrap();
            // ...in the slot of the first, which was closed; the second
            // still holds its own.
            first
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut buf = [0u8; 16];
            let first_read = first.read(&mut buf).map_err(|e| e.kind());
            second
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let second_read = second.read(&mut buf).map_err(|e| e.kind());
            (served, first_read, second_read)
        })
        .await
        .unwrap();
        let (served, first_read, second_read) = answers;
        assert!(served.ends_with("127.0.0.1 /new 0"), "{served}");
        assert_eq!(first_read, Ok(0), "the idle first connection was closed");
        assert!(
            matches!(
                second_read,
                Err(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
            ),
            "{second_read:?}"
        );
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

    /// A server with `config` answering [`echo_peer`], until the test ends.
    async fn start(config: ServerConfig) -> SocketAddr {
        let (l, addr) = listener().await;
        let (gate, _arrived) = gate();
        tokio::spawn(async move {
            let _keep = _arrived;
            serve(l, &config, std::future::pending(), move |peer| {
                echo_peer(peer, gate.clone())
            })
            .await;
        });
        addr
    }

    /// Sends `head` then `body` in pieces `every` apart, then reads; what
    /// the server answered before closing, and how long that took.
    fn trickle(addr: SocketAddr, head: &str, body: &[&str], every: Duration) -> (String, Duration) {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let started = std::time::Instant::now();
        s.write_all(head.as_bytes()).unwrap();
        for (i, piece) in body.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(every);
            }
            // The server may have given up already.
            if s.write_all(piece.as_bytes()).is_err() {
                break;
            }
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        (
            String::from_utf8_lossy(&out).into_owned(),
            started.elapsed(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_oversized_body_is_read_on_so_its_sender_sees_the_413() {
        let (l, addr) = listener().await;
        tokio::spawn(async move {
            serve(
                l,
                &ServerConfig::new("test"),
                std::future::pending(),
                |_| {
                    hyper::service::service_fn(|req: super::Request| async move {
                        let (status, text) = match req.into_body().collect_within(1000).await {
                            Ok(b) => (200, format!("took {}", b.len())),
                            Err(e) => (413, e.to_string()),
                        };
                        let mut r = Response::new(Full::new(Bytes::from(text)));
                        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(r)
                    })
                },
            )
            .await;
        });
        let answers = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            // Twice the limit, in pieces: every write succeeds, the answer
            // is the 413, and the connection serves the next request.
            let body = vec![b'x'; 2000];
            s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n")
                .unwrap();
            for piece in body.chunks(100) {
                s.write_all(piece).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
            s.write_all(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
            )
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            // Declared far beyond what is worth reading: refused at once.
            let mut big = std::net::TcpStream::connect(addr).unwrap();
            big.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            big.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
                .unwrap();
            let mut refused = String::new();
            let _ = big.read_to_string(&mut refused);
            (out, refused)
        })
        .await
        .unwrap();
        let (out, refused) = answers;
        assert!(out.starts_with("HTTP/1.1 413"), "{out}");
        assert!(out.contains("the body is larger than 1000 bytes"), "{out}");
        assert!(out.ends_with("took 3"), "{out}");
        assert!(refused.starts_with("HTTP/1.1 413"), "{refused}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_half_closes_after_its_request_is_answered() {
        let addr = start(ServerConfig::new("test")).await;
        let answers = tokio::task::spawn_blocking(move || {
            (0..300)
                .map(|_| {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    s.write_all(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
                        .unwrap();
                    s.shutdown(std::net::Shutdown::Write).unwrap();
                    let mut out = String::new();
                    let _ = s.read_to_string(&mut out);
                    out
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
        let unanswered = answers
            .iter()
            .filter(|a| !a.ends_with("127.0.0.1 /x 5"))
            .count();
        assert_eq!(
            unanswered,
            0,
            "of {}, e.g. {:?}",
            answers.len(),
            answers.iter().find(|a| !a.ends_with("5"))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_that_stops_coming_fails_its_request_and_frees_the_connection() {
        let mut config = ServerConfig::new("test");
        config.body.idle_timeout = Duration::from_millis(300);
        let addr = start(config).await;
        // Content-Length 1000, one byte, then silence (held open).
        let (answer, took) = tokio::task::spawn_blocking(move || {
            trickle(
                addr,
                "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
                &["a"],
                Duration::ZERO,
            )
        })
        .await
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("sent nothing more of the body"), "{answer}");
        assert!(took < Duration::from_secs(20), "closed after {took:?}");
        assert!(took >= Duration::from_millis(300), "closed after {took:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_slower_than_the_minimum_rate_fails_its_request() {
        let mut config = ServerConfig::new("test");
        config.body.rate_grace = Duration::from_millis(300);
        config.body.min_bytes_per_second = 1000;
        let addr = start(config).await;
        // A byte every 50 ms: about 20 bytes/s, under 1000.
        let drip: Vec<&str> = vec!["a"; 200];
        let (answer, _) = tokio::task::spawn_blocking(move || {
            trickle(
                addr,
                "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n",
                &drip,
                Duration::from_millis(50),
            )
        })
        .await
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("slower than the 1000 bytes/s"), "{answer}");
        // A body that keeps pace is read whole.
        let (answer, _) = tokio::task::spawn_blocking(move || {
            trickle(
                addr,
                "POST /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 10\r\n\r\n",
                &["0123456789"],
                Duration::ZERO,
            )
        })
        .await
        .unwrap();
        assert!(answer.ends_with("127.0.0.1 /ok 10"), "{answer}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_peer_cannot_take_every_connection() {
        let mut config = ServerConfig::new("test");
        config.max_connections_per_peer = Some(3);
        let addr = start(config).await;
        // A peer of its own on loopback holds three connections open...
        let hog: std::net::IpAddr = "127.0.0.77".parse().unwrap();
        let open = |from: std::net::IpAddr| {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::from((from, 0))).unwrap();
            socket
        };
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut s = open(hog).connect(addr).await.unwrap();
            // A request in flight keeps the connection the peer's.
            tokio::io::AsyncWriteExt::write_all(
                &mut s,
                b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
            )
            .await
            .unwrap();
            held.push(s);
        }
        // ...so its fourth is told it has too many, and closed.
        let mut fourth = open(hog).connect(addr).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_to_end(&mut fourth, &mut answer),
        )
        .await
        .unwrap()
        .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        // Everyone else is served meanwhile.
        let other = tokio::task::spawn_blocking(move || get(addr, "/other"))
            .await
            .unwrap()
            .unwrap();
        assert!(other.ends_with("127.0.0.1 /other 0"), "{other}");
        // A connection given back is the peer's again.
        held.pop();
        let again = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                match get_from(hog, addr) {
                    Some(text) if text.ends_with("127.0.0.77 /again 0") => return text,
                    _ if std::time::Instant::now() > deadline => return String::new(),
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
        .await
        .unwrap();
        assert!(again.ends_with("127.0.0.77 /again 0"), "{again:?}");
    }

    /// A GET of `/again` from source address `from`, answered or not.
    fn get_from(from: std::net::IpAddr, to: SocketAddr) -> Option<String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().ok()?;
            socket.bind(SocketAddr::from((from, 0))).ok()?;
            let mut s = socket.connect(to).await.ok()?;
            tokio::io::AsyncWriteExt::write_all(
                &mut s,
                b"GET /again HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await
            .ok()?;
            let mut out = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out)
                .await
                .ok()?;
            Some(String::from_utf8_lossy(&out).into_owned())
        })
    }
}
