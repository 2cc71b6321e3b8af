//! Application listeners: each an HTTP/1.1 server (the shared
//! `skiff-http-server` loop) that routes a request by the listener's rules
//! and hands it to a healthy target — to a wasi:http server of this process
//! without a socket (`skiff_runtime::http::Local`), to anything else over a
//! per-target pool of keep-alive connections driven by the client's own
//! connection task — counting it while it is outstanding.

use super::{Body, Group, Plane, Reply, RouteAction, TargetLive};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

impl Plane {
    async fn forward_http(
        &self,
        listener_arn: &str,
        port: u16,
        peer: SocketAddr,
        req: skiff_http_server::Request,
    ) -> Response<Reply> {
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().host())
            .unwrap_or_default()
            .to_string();
        let Some(route) = self.route(listener_arn) else {
            return plain(StatusCode::SERVICE_UNAVAILABLE, "the listener is gone");
        };
        let group = match route.action(&host, req.uri().path()) {
            RouteAction::Missing => {
                return plain(StatusCode::SERVICE_UNAVAILABLE, "no such target group");
            }
            RouteAction::Fixed {
                status,
                content_type,
                body,
            } => {
                let mut r = Response::new(reply(body.clone().unwrap_or_default()));
                *r.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
                if let Some(ct) = content_type
                    .as_deref()
                    .and_then(|c| http::HeaderValue::from_str(c).ok())
                {
                    r.headers_mut().insert(http::header::CONTENT_TYPE, ct);
                }
                return r;
            }
            RouteAction::Forward(g) => Arc::clone(g),
            RouteAction::Weighted(list, total) => Arc::clone(weighted_pick(list, *total)),
        };
        let lor = group.least_outstanding.load(Ordering::Relaxed);
        let Some(target) = group.pick(lor) else {
            return plain(StatusCode::SERVICE_UNAVAILABLE, "no registered targets");
        };
        if !route.admits(&self.fabric, target.addr) {
            return plain(
                StatusCode::GATEWAY_TIMEOUT,
                "the target's security groups do not let the load balancer in",
            );
        }
        target.requests.fetch_add(1, Ordering::Relaxed);
        group.requests.fetch_add(1, Ordering::Relaxed);
        let guard = Outstanding::new(Arc::clone(&target));
        let (mut parts, body) = req.into_parts();
        // Origin form (the path), as a client sends to a server; `Host`
        // stays the client's.
        parts.uri = http::Uri::from(
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        parts.version = http::Version::HTTP_11;
        // Hop-by-hop headers are the client's connection's, not the
        // target's: each side has its own (RFC 9110 §7.6.1).
        strip_hop_by_hop(&mut parts.headers);
        let forwarded = match parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prior) => format!("{prior}, {}", peer.ip()),
            None => peer.ip().to_string(),
        };
        for (name, value) in [
            ("x-forwarded-for", forwarded),
            ("x-forwarded-proto", "http".to_string()),
            ("x-forwarded-port", port.to_string()),
        ] {
            if let Ok(v) = http::HeaderValue::from_str(&value) {
                parts.headers.insert(name, v);
            }
        }
        let upstream = Request::from_parts(parts, body.boxed());
        // A target served by this process takes the request directly: the
        // same request, after the same checks, without the loopback hop.
        let exchange = async {
            match skiff_runtime::http::Local::find(skiff_runtime::ports::host(target.addr)) {
                Some(local) => local
                    .call(upstream)
                    .await
                    .map(|resp| {
                        resp.map(|b| {
                            Counted {
                                inner: b,
                                upstream: None,
                                guard,
                            }
                            .boxed_unsync()
                        })
                    })
                    .map_err(|e| e.to_string()),
                None => send(&target, upstream).await.map(|(resp, up)| {
                    resp.map(|b| {
                        Counted {
                            inner: b,
                            upstream: Some(up),
                            guard,
                        }
                        .map_err(Into::into)
                        .boxed_unsync()
                    })
                }),
            }
        };
        match tokio::time::timeout(Duration::from_secs(60), exchange).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                tracing::debug!(target = %target.addr, "forwarding failed: {e}");
                plain(StatusCode::BAD_GATEWAY, "the target did not answer")
            }
            Err(_) => plain(
                StatusCode::GATEWAY_TIMEOUT,
                "the target did not answer in time",
            ),
        }
    }
}

/// Removes the headers that describe one connection: `Connection`, those it
/// names, and the hop-by-hop headers of RFC 9110 §7.6.1.
pub(super) fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let named: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    for n in named {
        headers.remove(n.as_str());
    }
    for h in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
        "proxy-authorization",
    ] {
        headers.remove(h);
    }
}

pub(super) fn full(s: String) -> Body {
    Full::new(Bytes::from(s))
        .map_err(|never| match never {})
        .boxed()
}

pub(super) fn reply(s: String) -> Reply {
    Full::new(Bytes::from(s))
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(super) fn plain(status: StatusCode, message: &str) -> Response<Reply> {
    let mut r = Response::new(reply(format!("{message}\n")));
    *r.status_mut() = status;
    r
}

pub(super) type Sender = hyper::client::conn::http1::SendRequest<Body>;
pub(super) type Connection =
    hyper::client::conn::http1::Connection<TokioIo<tokio::net::TcpStream>, Body>;

/// A keep-alive HTTP/1.1 connection to a target: the handle requests go
/// through and the connection itself. No task of its own drives it: the
/// task using it does (the client's connection, for a request and its
/// response body), so a request through the load balancer costs no wakeup
/// of another task, or of another thread.
pub(super) struct Upstream {
    pub(super) sender: Sender,
    conn: Pin<Box<Connection>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").finish_non_exhaustive()
    }
}

impl Upstream {
    /// Drives the connection while `f` runs; `f`'s result, or an error if
    /// the connection ended first.
    pub(super) async fn drive<T>(&mut self, f: impl Future<Output = T>) -> Result<T, String> {
        drive(&mut self.conn, f).await
    }

    /// Sends `req` and waits for the response's head: the response and
    /// the connection, or the error, with the request if it was never
    /// written (a connection that had closed while idle in the pool).
    async fn exchange(
        mut self,
        req: Request<Body>,
    ) -> Result<(Response<Incoming>, Upstream), (Option<Request<Body>>, String)> {
        let mut sent = std::pin::pin!(self.sender.try_send_request(req));
        let mut failed = match drive(&mut self.conn, sent.as_mut()).await {
            Ok(Ok(resp)) => return Ok((resp, self)),
            Ok(Err(e)) => e,
            Err(ended) => {
                // The connection ended first. Ending it for good hands an
                // unwritten request back (hyper's dispatch gives back
                // what it never took), or fails the one it took.
                drop(self.conn);
                match sent.await {
                    Ok(_) => return Err((None, ended)),
                    Err(e) => e,
                }
            }
        };
        let req = failed.take_message();
        Err((req, failed.into_error().to_string()))
    }

    /// Is it ready for a request (open, nothing in flight)?
    async fn ready(&mut self) -> bool {
        let sender = &mut self.sender;
        let ready = std::future::poll_fn(|cx| sender.poll_ready(cx));
        matches!(drive(&mut self.conn, ready).await, Ok(Ok(())))
    }
}

/// Drives `conn` while `f` runs: see [`Upstream::drive`].
pub(super) async fn drive<T>(
    conn: &mut Pin<Box<Connection>>,
    f: impl Future<Output = T>,
) -> Result<T, String> {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = f.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        let ended = match conn.as_mut().poll(cx) {
            Poll::Ready(Ok(())) => Some("the connection closed".to_string()),
            Poll::Ready(Err(e)) => Some(e.to_string()),
            Poll::Pending => None,
        };
        // What the connection just did (a response read, perhaps before
        // it closed) may have finished `f`: see now, not after a wakeup.
        match (f.as_mut().poll(cx), ended) {
            (Poll::Ready(v), _) => Poll::Ready(Ok(v)),
            (Poll::Pending, Some(e)) => Poll::Ready(Err(e)),
            (Poll::Pending, None) => Poll::Pending,
        }
    })
    .await
}

/// How many idle connections to one target are kept.
pub(super) const IDLE_PER_TARGET: usize = 64;

/// A TCP connection to target `addr` (where it is on the host: see
/// `skiff_runtime::ports`), no-delay, within `within`. Every connection
/// to a target, health checks included, is made here.
///
/// A task address of another machine is reached through that machine's
/// agent (`skiff_channel::mesh`), as the load balancer (`reach`: its
/// address and security groups), which the agent there judges.
pub(super) async fn dial(
    reach: &Reach,
    addr: SocketAddr,
    within: Duration,
) -> Result<std::io::Result<tokio::net::TcpStream>, tokio::time::error::Elapsed> {
    if let Some((via, header)) = reach.through_mesh(addr) {
        // (The outer timeout is the one that counts.)
        let through = skiff_channel::mesh::dial(&via, &header, within + Duration::from_secs(1));
        return tokio::time::timeout(within, through)
            .await
            .map(|r| r.map_err(|e| std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e)));
    }
    let at = skiff_runtime::ports::host(addr);
    tokio::time::timeout(within, tokio::net::TcpStream::connect(at))
        .await
        .map(|r| {
            r.inspect(|s| {
                let _ = s.set_nodelay(true);
            })
        })
}

/// How the load balancers reach targets: the fabric's routes to other
/// machines' task addresses and the mesh token, and who is calling.
#[derive(Debug, Clone)]
pub(super) struct Reach {
    pub mesh: Arc<MeshDial>,
    /// The load balancer's address and security groups (network load
    /// balancers have none).
    pub from: std::net::Ipv4Addr,
    pub groups: Option<Vec<String>>,
}

/// The fabric (its routes) and the mesh token, shared by every target.
#[derive(Debug)]
pub(super) struct MeshDial {
    pub fabric: Arc<skiff_channel::fabric::Fabric>,
    pub token: std::sync::RwLock<String>,
}

impl Reach {
    /// The mesh listener and header for `addr`, if it is another
    /// machine's task address.
    fn through_mesh(&self, addr: SocketAddr) -> Option<(String, skiff_channel::mesh::Header)> {
        let std::net::IpAddr::V4(ip) = addr.ip() else {
            return None;
        };
        let via = self
            .mesh
            .fabric
            .routes()
            .into_iter()
            .find(|r| {
                r.block
                    .parse::<skiff_runtime::addresses::AddressBlock>()
                    .is_ok_and(|b| b.contains(ip))
            })?
            .via;
        let header = skiff_channel::mesh::Header {
            token: self
                .mesh
                .token
                .read()
                .map(|t| t.clone())
                .unwrap_or_default(),
            src: self.from,
            dst: addr,
            groups: self.groups.clone(),
            proto: skiff_channel::fabric::Proto::Tcp,
        };
        Some((via, header))
    }
}

/// Opens a keep-alive HTTP/1.1 connection to `addr`.
pub(super) async fn connect(reach: &Reach, addr: SocketAddr) -> Result<Upstream, String> {
    let stream = dial(reach, addr, Duration::from_secs(10))
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))?
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {addr} failed: {e}"))?;
    Ok(Upstream {
        sender,
        conn: Box::pin(conn),
    })
}

/// Sends `req` to `target` on an idle connection of its pool if one is
/// still open, else on a new one; a pooled connection the target closed
/// hands the request back, and it goes on a new connection.
pub(super) async fn send(
    target: &TargetLive,
    mut req: Request<Body>,
) -> Result<(Response<Incoming>, Upstream), String> {
    loop {
        let pooled = target.idle.lock().ok().and_then(|mut v| v.pop());
        let fresh = pooled.is_none();
        let mut up = match pooled {
            Some(u) => u,
            None => connect(&target.reach(), target.addr).await?,
        };
        if !up.ready().await {
            if fresh {
                return Err(format!("the connection to {} closed", target.addr));
            }
            continue;
        }
        match up.exchange(req).await {
            Ok(done) => return Ok(done),
            Err((Some(r), _)) if !fresh => req = r,
            Err((_, e)) => return Err(e),
        }
    }
}

impl TargetLive {
    /// A connection whose exchange is complete, for the next request.
    fn give_back(&self, up: Upstream) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < IDLE_PER_TARGET
        {
            idle.push(up);
        }
    }
}

/// Counts a request in flight on a target until its response is done.
pub(super) struct Outstanding(Arc<TargetLive>);

impl Outstanding {
    pub(super) fn new(t: Arc<TargetLive>) -> Outstanding {
        t.outstanding.fetch_add(1, Ordering::Relaxed);
        Outstanding(t)
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that holds its request's [`Outstanding`] until it ends.
/// When the body has been read to its end, its connection (if it came on
/// one) goes back to the target's idle pool.
pub(super) struct Counted<B: hyper::body::Body> {
    inner: B,
    /// The connection it comes on, driven as the body is read.
    upstream: Option<Upstream>,
    guard: Outstanding,
}

impl<B: hyper::body::Body> Drop for Counted<B> {
    fn drop(&mut self) {
        // hyper stops polling a body of known length once it has it all,
        // without waiting for the end: a body read to its end has its
        // connection back in the pool either way.
        if hyper::body::Body::is_end_stream(&self.inner)
            && let Some(up) = self.upstream.take()
        {
            self.guard.0.give_back(up);
        }
    }
}

impl<B: hyper::body::Body<Data = Bytes> + Unpin> hyper::body::Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, B::Error>>> {
        // The connection reads the body off the socket into `inner`.
        let ended = match self.upstream.as_mut() {
            Some(up) => up.conn.as_mut().poll(cx).is_ready(),
            None => false,
        };
        if ended {
            // Closed or failed: `inner` ends or errs with it, and it is
            // not pooled.
            self.upstream = None;
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled
            && let Some(up) = self.upstream.take()
        {
            self.guard.0.give_back(up);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

pub(super) async fn serve_http(
    plane: Weak<Plane>,
    listener_arn: String,
    port: u16,
    socket: tokio::net::TcpListener,
) {
    // A listener faces clients: bound their connections, in all and per
    // peer.
    let mut config = skiff_http_server::ServerConfig::public("load balancer", 4096);
    config.header_read_timeout = Duration::from_secs(60);
    let listener_arn: Arc<str> = listener_arn.into();
    // Runs until the listener is removed (its task aborted), which drops
    // its connections too.
    skiff_http_server::accept(&socket, &config, std::future::pending(), |peer| {
        let plane = plane.clone();
        let arn = Arc::clone(&listener_arn);
        hyper::service::service_fn(move |req| {
            let plane = plane.clone();
            let arn = Arc::clone(&arn);
            async move {
                Ok::<_, std::convert::Infallible>(match plane.upgrade() {
                    Some(p) => p.forward_http(&arn, port, peer, req).await,
                    None => plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
                })
            }
        })
    })
    .await;
}

/// One of `list`'s groups, each as often as its weight says: requests are
/// numbered, and each number's well-mixed hash picks a point in the total
/// weight, so the split holds over any run of requests.
fn weighted_pick(list: &[(Arc<Group>, u32)], total: u32) -> &Arc<Group> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    // splitmix64 of the request's number.
    let mut z = NEXT
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let mut point = (z % u64::from(total)) as u32;
    for (g, w) in list {
        if point < *w {
            return g;
        }
        point -= w;
    }
    &list[list.len() - 1].0
}
