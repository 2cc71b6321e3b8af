//! Serving a `wasi:http/proxy` component with hyper: a fresh instance per
//! request, instantiated from the artifact's pre-linked image in the pooling
//! allocator, with the same sandbox and limits as any task.

use crate::artifact::{Artifact, Prepared};
use crate::limits::UsageCounters;
use crate::sandbox::{Host, InstanceSpec};
use crate::{Runtime, SpawnError};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// What a server did before it shut down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeReport {
    /// Requests answered by the guest.
    pub requests: u64,
    /// Requests the guest failed to answer (trap, limit, no response): each
    /// got a 500.
    pub failed: u64,
}

/// Serving could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The artifact is not a `wasi:http/proxy` component.
    #[error("{0} is not a wasi:http/proxy component, so it cannot be served")]
    NotHttp(String),
    /// A fuel limit was asked of a runtime without fuel metering.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

struct State {
    runtime: Runtime,
    pre: ProxyPre<Host>,
    spec: InstanceSpec,
    requests: AtomicU64,
    failed: AtomicU64,
}

/// Serves `artifact` on `listener` until `shutdown` completes, then stops
/// accepting, lets every in-flight request finish, and returns.
///
/// Each request gets a new instance built from `spec` (its args, env,
/// mounts, limits, network and stdout/stderr; stdin is always closed). A
/// `limits.timeout` bounds each request.
pub async fn serve(
    runtime: &Runtime,
    artifact: &Arc<Artifact>,
    listener: TcpListener,
    spec: InstanceSpec,
    shutdown: impl Future<Output = ()>,
) -> Result<ServeReport, ServeError> {
    let Prepared::Proxy(pre) = &artifact.pre else {
        return Err(ServeError::NotHttp(artifact.name().to_string()));
    };
    if spec.limits.fuel.is_some() && !runtime.inner.config.fuel {
        return Err(SpawnError::FuelDisabled.into());
    }
    let state = Arc::new(State {
        runtime: runtime.clone(),
        pre: pre.clone(),
        spec: InstanceSpec {
            stdin: crate::Stdin::Null,
            ..spec
        },
        requests: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });

    let (drain_tx, drain_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(stream, Arc::clone(&state), drain_rx.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: keep serving.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = drain_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(ServeReport {
        requests: state.requests.load(Ordering::Relaxed),
        failed: state.failed.load(Ordering::Relaxed),
    })
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    state: Arc<State>,
    mut drain: watch::Receiver<bool>,
) {
    let service = service_fn(move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(handle(state, req).await) }
    });
    let conn = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!("connection ended with an error: {e}");
            }
        }
        () = draining(&mut drain) => {
            // Finish the request in flight (if any), then close.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn draining(drain: &mut watch::Receiver<bool>) {
    if drain.wait_for(|draining| *draining).await.is_err() {
        // The server is gone without draining: nothing to wait for.
        std::future::pending::<()>().await;
    }
}

async fn handle(
    state: Arc<State>,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<HyperOutgoingBody> {
    match instantiate_and_call(&state, req).await {
        Ok(response) => {
            state.requests.fetch_add(1, Ordering::Relaxed);
            response
        }
        Err((status, message)) => {
            if status.is_server_error() {
                // The details (trap, backtrace) are for the operator's log,
                // not for the client.
                state.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("request failed: {message}");
                text_response(status, "the service failed to answer this request")
            } else {
                text_response(status, &message)
            }
        }
    }
}

type Failure = (http::StatusCode, String);

async fn instantiate_and_call(
    state: &State,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<HyperOutgoingBody>, Failure> {
    let internal = |what: &str, e: &dyn std::fmt::Display| {
        (
            http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("{what}: {e}"),
        )
    };
    let inner = &state.runtime.inner;
    // A request beyond the pool's capacity waits for a slot rather than
    // failing.
    let slot = Arc::clone(&inner.slots)
        .acquire_owned()
        .await
        .map_err(|e| internal("instance pool", &e))?;
    let counters = Arc::new(UsageCounters::default());
    let host = Host::new(&state.spec, None, counters).map_err(|e| internal("sandbox", &e))?;
    let mut store =
        crate::instance::new_store(inner, host, &state.spec).map_err(|e| internal("store", &e))?;
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let req = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)
        .map_err(|e| (http::StatusCode::BAD_REQUEST, format!("bad request: {e:#}")))?;
    let out = store
        .data_mut()
        .http()
        .new_response_outparam(sender)
        .map_err(|e| internal("response", &format!("{e:#}")))?;
    let pre = state.pre.clone();
    let timeout = state.spec.limits.timeout;

    // The guest keeps running after it has sent the response head, to write
    // the body, so it runs in its own task.
    let guest = tokio::spawn(async move {
        // The pool slot is held until the guest is done with it.
        let _slot = slot;
        let call = async {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        };
        match timeout {
            Some(limit) => match tokio::time::timeout(limit, call).await {
                Ok(result) => result,
                Err(_) => Err(wasmtime::format_err!(
                    "request exceeded its time limit of {}",
                    crate::format_duration(limit)
                )),
            },
            None => call.await,
        }
    });

    match receiver.await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(code)) => Err(internal(
            "the guest answered with an error",
            &format!("{code:?}"),
        )),
        Err(_) => {
            let why = match guest.await {
                Ok(Ok(())) => "the guest returned without setting a response".to_string(),
                Ok(Err(e)) => format!("{e:#}"),
                Err(e) => format!("the guest's task failed: {e}"),
            };
            Err(internal("no response", &why))
        }
    }
}

fn text_response(status: http::StatusCode, message: &str) -> hyper::Response<HyperOutgoingBody> {
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
