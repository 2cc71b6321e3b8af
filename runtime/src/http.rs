//! Serving a `wasi:http/proxy` component with hyper: a fresh instance per
//! request, instantiated from the artifact's pre-linked image in the pooling
//! allocator, with the same sandbox and limits as any task.
//!
//! A server is also reachable without a socket by whoever else in this
//! process holds an HTTP request for its address ([`Local`]): a load
//! balancer in front of tasks of the same process hands requests over
//! directly instead of writing them to loopback TCP and parsing them back,
//! also when it reaches the server through a published port.

use crate::artifact::{Artifact, Prepared};
use crate::limits::UsageCounters;
use crate::sandbox::{Host, InstanceSpec};
use crate::{Runtime, SpawnError};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use skiff_http_server::ServerConfig;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock, Weak};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// How a component is served. [`ServeOptions::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Each request gets a new instance built from this: args, env, mounts,
    /// limits, network and stdout/stderr (stdin is always closed). Its
    /// `limits.timeout` bounds each request, from arrival to the guest's end.
    pub spec: InstanceSpec,
    /// After shutdown is asked, how long requests in flight may take to
    /// finish before they are abandoned. Default: 30 s.
    pub drain_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    /// Default: 4096.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers. Default: 30 s.
    pub header_timeout: Duration,
    /// How long a request may wait for a free instance slot before it is
    /// answered 503. Default: 30 s.
    pub queue_timeout: Duration,
    /// Counts the CPU time of every request's guest, and the memory of
    /// those running (a fresh meter by default; keep a clone to read it).
    pub usage: crate::UsageMeter,
    /// Where the first request's start went, once its guest runs (see
    /// [`ServeOptions::first_request`]).
    pub first_request: watch::Sender<Option<crate::StartPhases>>,
}

impl ServeOptions {
    /// The defaults, serving instances built from `spec`.
    pub fn new(spec: InstanceSpec) -> Self {
        ServeOptions {
            spec,
            drain_timeout: Duration::from_secs(30),
            max_connections: 4096,
            header_timeout: Duration::from_secs(30),
            queue_timeout: Duration::from_secs(30),
            usage: crate::UsageMeter::new(),
            first_request: watch::Sender::new(None),
        }
    }

    /// Turns to the start phases of the first request's instance (its
    /// sandbox, its instantiation, when its handler was called), once
    /// there has been a request.
    pub fn first_request(&self) -> watch::Receiver<Option<crate::StartPhases>> {
        self.first_request.subscribe()
    }
}

/// What a server did before it shut down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeReport {
    /// Requests whose guest ran to completion.
    pub requests: u64,
    /// Requests that failed on the server's side: the guest trapped, hit a
    /// limit, or answered nothing (500, 504, or a response cut short), or no
    /// instance slot freed up in time (503).
    pub failed: u64,
    /// Guests still running when the drain timeout ran out; they were
    /// stopped.
    pub abandoned: u64,
}

/// Serving could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The artifact is not a `wasi:http/proxy` component.
    #[error("{0} is not a wasi:http/proxy component, so it cannot be served")]
    NotHttp(String),
    /// The spec asks for something the runtime cannot honour.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

struct State {
    runtime: Runtime,
    pre: ProxyPre<Host>,
    options: ServeOptions,
    guests: TaskTracker,
    /// Flips to true when the drain timeout runs out: guests still running
    /// stop at their next yield.
    abandon: watch::Receiver<bool>,
    requests: AtomicU64,
    failed: AtomicU64,
    /// Its listener is closed: no new requests, in-process ones included.
    closed: AtomicBool,
    /// The first request's start has been recorded.
    first_recorded: AtomicBool,
}

impl State {
    /// Records the first request's start phases (later ones are not).
    fn first_start(&self, sandbox: Duration, instantiate: Duration) {
        if !self.first_recorded.swap(true, Ordering::Relaxed) {
            self.options
                .first_request
                .send_replace(Some(crate::StartPhases::entering(sandbox, instantiate)));
        }
    }
}

/// The servers of this process by the address their listener is bound to.
/// The kernel lets one socket listen on an address, so the address names
/// one server, as it would for a connection.
static LOCAL: LazyLock<RwLock<HashMap<SocketAddr, Weak<State>>>> = LazyLock::new(Default::default);

/// A server of this process, reached without a socket: see [`Local::find`].
#[derive(Clone)]
pub struct Local(Arc<State>);

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local").finish_non_exhaustive()
    }
}

/// A response body of a server reached through [`Local`].
pub type LocalBody = http_body_util::combinators::UnsyncBoxBody<
    Bytes,
    Box<dyn std::error::Error + Send + Sync + 'static>,
>;

/// The server stopped accepting requests before this one was handed over.
#[derive(Debug, thiserror::Error)]
#[error("the server has stopped accepting requests")]
pub struct Closed;

impl Local {
    /// The server of this process whose listener is bound to `addr` (the
    /// host's address, as `local_addr` gives it), while it accepts; or, if
    /// `addr` is a published port of this process, the server of the task
    /// address it leads to.
    pub fn find(addr: SocketAddr) -> Option<Local> {
        let table = LOCAL.read().ok()?;
        let listed = match table.get(&addr) {
            Some(listed) => listed,
            None => table.get(&crate::ports::host(crate::proxy::leads_to(addr)?))?,
        };
        let state = listed.upgrade()?;
        (!state.closed.load(Ordering::Acquire)).then_some(Local(state))
    }

    /// Serves `req` as if it had come on a connection: the same instance
    /// pool, limits, timeouts, counting and drain as a request from a
    /// socket. `req` has what a server would have parsed: an origin-form
    /// URI and a `Host` header (or an absolute URI).
    pub async fn call<B>(
        &self,
        req: hyper::Request<B>,
    ) -> Result<hyper::Response<LocalBody>, Closed>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<skiff_http_server::BodyError>,
    {
        // Counted among the server's guests from here, so its drain waits
        // for this request as it does for a connection's; taken before
        // `closed` is read, so a drain that has begun sees either the
        // token or a refusal.
        let _in_flight = self.0.guests.token();
        if self.0.closed.load(Ordering::SeqCst) {
            return Err(Closed);
        }
        let req = req.map(|b| b.map_err(|e| wasi_body_error(e.into())));
        let response = handle(Arc::clone(&self.0), req).await;
        Ok(response.map(|b| b.map_err(Into::into).boxed_unsync()))
    }
}

/// Lists a server in [`LOCAL`] while it lives.
struct Listed(SocketAddr);

impl Listed {
    fn new(addr: SocketAddr, state: &Arc<State>) -> Listed {
        if let Ok(mut table) = LOCAL.write() {
            table.insert(addr, Arc::downgrade(state));
        }
        Listed(addr)
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        if let Ok(mut table) = LOCAL.write() {
            table.remove(&self.0);
        }
    }
}

/// A request body that could not be read, as wasi:http tells the guest: a
/// client too slow to send it is a read timeout.
fn wasi_body_error(e: skiff_http_server::BodyError) -> wasmtime_wasi_http::Error {
    match e {
        skiff_http_server::BodyError::Hyper(e) => wasmtime_wasi_http::Error::Hyper(e),
        _ => wasmtime_wasi_http::Error::ConnectionReadTimeout,
    }
}

/// Serves `artifact` on `listener` until `shutdown` completes, then stops
/// accepting, lets the requests in flight finish (for at most
/// `drain_timeout`), and returns what it did.
pub async fn serve(
    runtime: &Runtime,
    artifact: &Arc<Artifact>,
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<ServeReport, ServeError> {
    let Prepared::Proxy(pre) = &artifact.pre else {
        return Err(ServeError::NotHttp(artifact.name().to_string()));
    };
    if options.spec.limits.fuel.is_some() && !runtime.inner.config.fuel {
        return Err(SpawnError::FuelDisabled.into());
    }
    let mut options = options;
    options.spec.stdin = crate::Stdin::Null;
    let (abandon_tx, abandon_rx) = watch::channel(false);
    let state = Arc::new(State {
        runtime: runtime.clone(),
        pre: pre.clone(),
        guests: TaskTracker::new(),
        abandon: abandon_rx,
        requests: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        closed: AtomicBool::new(false),
        first_recorded: AtomicBool::new(false),
        options,
    });
    let listed = listener.local_addr().ok().map(|a| Listed::new(a, &state));

    let mut config = ServerConfig::new("wasi:http");
    config.header_read_timeout = state.options.header_timeout;
    config.max_connections = Some(state.options.max_connections);
    let mut connections = skiff_http_server::accept(&listener, &config, shutdown, |_peer| {
        let state = Arc::clone(&state);
        service_fn(move |req: skiff_http_server::Request| {
            let state = Arc::clone(&state);
            let req = req.map(|b| b.map_err(wasi_body_error));
            async move { Ok::<_, Infallible>(handle(state, req).await) }
        })
    })
    .await;
    state.closed.store(true, Ordering::SeqCst);
    drop(listed);
    drop(listener);

    // Finish what is in flight: idle connections close now, busy ones after
    // their request; then every guest must end. Past the deadline, stop
    // waiting and stop the guests.
    state.guests.close();
    let drained = tokio::time::timeout(state.options.drain_timeout, async {
        connections.drain().await;
        state.guests.wait().await;
    })
    .await;
    let abandoned = if drained.is_err() {
        let left = state.guests.len() as u64;
        tracing::warn!(
            guests = left,
            "drain timeout: stopping the requests still running"
        );
        // Guests stop at their next yield; let their clients have the 503,
        // then drop whatever connection is still open.
        let _ = abandon_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            state.guests.wait().await;
            connections.wait().await;
        })
        .await;
        connections.close().await;
        state.guests.wait().await;
        left
    } else {
        0
    };
    Ok(ServeReport {
        requests: state.requests.load(Ordering::Relaxed),
        failed: state.failed.load(Ordering::Relaxed),
        abandoned,
    })
}

async fn handle<B>(state: Arc<State>, req: hyper::Request<B>) -> hyper::Response<HyperOutgoingBody>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    match instantiate_and_call(&state, req).await {
        Ok(response) => response,
        Err(Failure::Client(message)) => text_response(StatusCode::BAD_REQUEST, &message),
        Err(Failure::Server(status, message)) => {
            state.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("request failed: {message}");
            text_response(status, public_reason(status))
        }
        // Counted and logged by the guest's task.
        Err(Failure::Guest(status)) => text_response(status, public_reason(status)),
    }
}

/// What the client is told: the details (trap, backtrace) are for the
/// operator's log.
fn public_reason(status: StatusCode) -> &'static str {
    match status {
        StatusCode::SERVICE_UNAVAILABLE => "the service is busy; try again",
        StatusCode::GATEWAY_TIMEOUT => "the service did not answer in time",
        _ => "the service failed to answer this request",
    }
}

enum Failure {
    /// The request itself is wrong: 400 with the reason.
    Client(String),
    /// The server could not start the guest: this status, and a reason for
    /// the log.
    Server(StatusCode, String),
    /// The guest did not answer; its task has counted and logged why.
    Guest(StatusCode),
}

/// How a guest's run ended.
enum GuestEnd {
    Done,
    Failed(String),
    TimedOut(Duration),
    Abandoned,
}

async fn instantiate_and_call<B>(
    state: &Arc<State>,
    req: hyper::Request<B>,
) -> Result<hyper::Response<HyperOutgoingBody>, Failure>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let internal = |what: &str, e: &dyn std::fmt::Display| {
        Failure::Server(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {e}"))
    };
    let inner = &state.runtime.inner;
    let spec = &state.options.spec;
    let started = tokio::time::Instant::now();
    // A server past its CPU cap starts its next guest once it owes nothing.
    if let Some(owed) = spec.limits.cpu_cap.as_ref().and_then(crate::CpuCap::debt) {
        tokio::time::sleep(owed).await;
    }
    // A request beyond the pool's capacity waits for a slot, for a while,
    // and not past the drain timeout.
    let mut abandoned = state.abandon.clone();
    let slot = tokio::select! {
        slot = tokio::time::timeout(
            state.options.queue_timeout,
            Arc::clone(&inner.slots).acquire_owned(),
        ) => slot,
        _ = abandoned.wait_for(|gone| *gone) => {
            return Err(Failure::Server(
                StatusCode::SERVICE_UNAVAILABLE,
                "stopped waiting for an instance slot: the server shut down".into(),
            ));
        }
    }
    .map_err(|_| {
        Failure::Server(
            StatusCode::SERVICE_UNAVAILABLE,
            "no instance slot freed up in time".into(),
        )
    })?
    .map_err(|e| internal("instance pool", &e))?;
    inner.ticker.wake();

    let counters = Arc::new(UsageCounters::default());
    let building = std::time::Instant::now();
    let mut host =
        Host::new(&inner.config, spec, None, counters).map_err(|e| internal("sandbox", &e))?;
    let meter = &state.options.usage;
    host.limiter.share_with(meter);
    let cpu = Arc::clone(&meter.0);
    let cap = spec.limits.cpu_cap.clone();
    let mut store =
        crate::instance::new_store(inner, host, spec).map_err(|e| internal("store", &e))?;
    let sandbox = building.elapsed();
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let req = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)
        .map_err(|e| Failure::Client(format!("bad request: {e:#}")))?;
    let responded = Arc::new(AtomicBool::new(false));
    let out = store
        .data_mut()
        .http()
        .new_response_outparam_from_callback({
            let responded = Arc::clone(&responded);
            move |response| {
                responded.store(true, Ordering::Relaxed);
                // The client may be gone; the guest need not know.
                let _ = sender.send(response);
            }
        })
        .map_err(|e| internal("response", &format!("{e:#}")))?;
    let pre = state.pre.clone();
    // The time limit counts from the request's arrival, queueing included.
    let deadline = spec.limits.timeout.map(|t| (started + t, t));
    let mut abandon = state.abandon.clone();
    let counting = Arc::clone(state);

    // The guest keeps running after it has sent the response head, to write
    // the body, so it runs in its own (tracked) task.
    let guest = state.guests.spawn(async move {
        let end = {
            // Pinned here, and dropped with this block, before the store
            // is used again.
            let call = std::pin::pin!(async {
                let instantiating = std::time::Instant::now();
                let proxy = pre.instantiate_async(&mut store).await?;
                counting.first_start(sandbox, instantiating.elapsed());
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            });
            let call = crate::instance::CpuMeter {
                inner: call,
                counters: cpu,
                cap,
            };
            let limit = async {
                match deadline {
                    Some((at, _)) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                result = call => match result {
                    Ok(()) => GuestEnd::Done,
                    Err(e) => GuestEnd::Failed(format!("{e:#}")),
                },
                () = limit => GuestEnd::TimedOut(deadline.map(|(_, t)| t).unwrap_or_default()),
                _ = abandon.wait_for(|gone| *gone) => GuestEnd::Abandoned,
            }
        };
        // Its output, to deliver before the request counts as done (as an
        // instance's is before its outcome): a server that returned has
        // delivered everything its guests wrote.
        let outputs = std::mem::take(&mut store.data_mut().outputs);
        // Free the instance before its slot, so the next request finds the
        // pool's memory free.
        drop(store);
        drop(slot);
        // One that was ended may have been stuck on a reader: no waiting.
        let ended_by_itself = matches!(end, GuestEnd::Done | GuestEnd::Failed(_));
        for output in &outputs {
            output.finish(ended_by_itself).await;
        }
        let failure = match &end {
            GuestEnd::Done if !responded.load(Ordering::Relaxed) => {
                Some("the guest returned without setting a response".to_string())
            }
            GuestEnd::Done => None,
            GuestEnd::Failed(why) => Some(why.clone()),
            GuestEnd::TimedOut(t) => Some(format!(
                "exceeded its time limit of {}",
                crate::format_duration(*t)
            )),
            GuestEnd::Abandoned => Some("stopped: the server shut down".into()),
        };
        match failure {
            None => counting.requests.fetch_add(1, Ordering::Relaxed),
            Some(why) => {
                tracing::warn!("request failed: {why}");
                counting.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
        end
    });

    match receiver.await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(code)) => Err(internal(
            "the guest answered with an error",
            &format!("{code:?}"),
        )),
        Err(_) => Err(match guest.await {
            Ok(GuestEnd::Done) | Ok(GuestEnd::Failed(_)) => {
                Failure::Guest(StatusCode::INTERNAL_SERVER_ERROR)
            }
            Ok(GuestEnd::TimedOut(_)) => Failure::Guest(StatusCode::GATEWAY_TIMEOUT),
            Ok(GuestEnd::Abandoned) => Failure::Guest(StatusCode::SERVICE_UNAVAILABLE),
            Err(e) => internal("the guest's task failed", &e),
        }),
    }
}

fn text_response(status: StatusCode, message: &str) -> hyper::Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(format!("{message}\n")))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    let mut response = hyper::Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
