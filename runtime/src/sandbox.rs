//! A task's sandbox: the per-instance store state, built from an
//! [`InstanceSpec`]. Each capability (arguments and environment, mounts,
//! stdio, network, memory) is one small piece; nothing reaches the guest
//! that the spec did not grant.

use crate::limits::{Limits, MemoryLimiter, UsageCounters};
use crate::net::{NetworkMode, NetworkPolicy, SocketUse};
use crate::sockets::TaskSocketsView;
use crate::stdio::{GuestOutput, Output, Stdin};
use crate::{RuntimeConfig, SpawnError};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::sockets::{SocketAddrUse, WasiSocketsCtxView};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// A host directory made visible to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The directory on the host.
    pub host: PathBuf,
    /// The name the guest opens it by: an absolute path (`/data`) or a
    /// relative name (`fixtures.dir`), exactly as `wasmtime run --dir`.
    pub guest: String,
    /// Refuse every write-like operation: create, write, append, truncate,
    /// remove, rename, mkdir, symlink.
    pub read_only: bool,
}

/// Everything that makes one instance of an artifact: the container of an
/// ECS task, or one `skiff run`.
#[derive(Clone)]
pub struct InstanceSpec {
    /// `argv`, including `argv[0]` (the program name).
    pub args: Vec<String>,
    /// The guest's entire environment: nothing of the host's leaks in.
    pub env: Vec<(String, String)>,
    /// The only parts of the host filesystem the guest can reach.
    pub mounts: Vec<Mount>,
    /// Memory, CPU, fuel and time limits.
    pub limits: Limits,
    /// The network policy every socket operation is checked against.
    pub network: Arc<dyn NetworkPolicy>,
    /// Where stdin comes from.
    pub stdin: Stdin,
    /// Where stdout goes.
    pub stdout: Output,
    /// Where stderr goes.
    pub stderr: Output,
}

impl Default for InstanceSpec {
    fn default() -> Self {
        InstanceSpec {
            args: Vec::new(),
            env: Vec::new(),
            mounts: Vec::new(),
            limits: Limits::default(),
            network: NetworkMode::None.policy(None),
            stdin: Stdin::Null,
            stdout: Output::Null,
            stderr: Output::Null,
        }
    }
}

impl std::fmt::Debug for InstanceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceSpec")
            .field("args", &self.args)
            .field("env", &self.env)
            .field("mounts", &self.mounts)
            .field("limits", &self.limits)
            .field("stdin", &self.stdin)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .finish_non_exhaustive()
    }
}

/// The `T` of every `Store<T>` skiff creates.
pub(crate) struct Host {
    wasi: WasiP1Ctx,
    http: WasiHttpCtx,
    hooks: HttpPolicy,
    network: Arc<dyn NetworkPolicy>,
    pub(crate) limiter: MemoryLimiter,
    /// The guest's stdout and stderr pipes, to flush when it ends.
    pub(crate) outputs: Vec<GuestOutput>,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.wasi.ctx()
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: self.wasi.ctx().table,
            hooks: &mut self.hooks,
        }
    }
}

impl Host {
    pub(crate) fn p1(&mut self) -> &mut WasiP1Ctx {
        &mut self.wasi
    }

    /// The guest's sockets, seen through its network's addressing.
    pub(crate) fn task_sockets(&mut self) -> TaskSocketsView<'_> {
        let WasiCtxView { ctx, table } = self.wasi.ctx();
        TaskSocketsView {
            inner: WasiSocketsCtxView {
                ctx: ctx.sockets(),
                table,
            },
            policy: &*self.network,
        }
    }

    /// Builds the sandbox for one instance. `stdin` overrides the spec's
    /// stdin with an already-made stream (used for [`Stdin::UntilStopped`]).
    pub(crate) fn new(
        config: &RuntimeConfig,
        spec: &InstanceSpec,
        stdin: Option<tokio::io::DuplexStream>,
        counters: Arc<UsageCounters>,
    ) -> Result<Host, SpawnError> {
        let mut b = WasiCtxBuilder::new();
        b.args(&spec.args);
        for (k, v) in &spec.env {
            b.env(k, v);
        }
        let mut guest_paths = HashSet::new();
        for m in &spec.mounts {
            // Two preopens under one name would let the guest pick either,
            // read-write over read-only.
            if !guest_paths.insert(m.guest.as_str()) {
                return Err(SpawnError::DuplicateMount(m.guest.clone()));
            }
            let perms = if m.read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            b.preopened_dir(&m.host, &m.guest, perms)
                .map_err(|e| SpawnError::Mount {
                    host: m.host.clone(),
                    reason: format!("{e:#}"),
                })?;
        }
        match (&spec.stdin, stdin) {
            (_, Some(pipe)) => {
                b.stdin(wasmtime_wasi::cli::AsyncStdinStream::new(pipe));
            }
            (Stdin::Null | Stdin::UntilStopped, None) => {}
            (Stdin::Inherit, None) => {
                b.inherit_stdin();
            }
            (Stdin::Bytes(bytes), None) => {
                b.stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(bytes.clone()));
            }
        }
        let mut outputs = Vec::new();
        let stdout = match &spec.stdout {
            Output::Null => None,
            Output::Inherit => Some(GuestOutput::stdout()),
            Output::Sink(s) => Some(GuestOutput::sink(Arc::clone(s))),
        };
        if let Some(out) = stdout {
            b.stdout(out.clone());
            outputs.push(out);
        }
        let stderr = match &spec.stderr {
            Output::Null => None,
            Output::Inherit => Some(GuestOutput::stderr()),
            Output::Sink(s) => Some(GuestOutput::sink(Arc::clone(s))),
        };
        if let Some(err) = stderr {
            b.stderr(err.clone());
            outputs.push(err);
        }
        let policy = Arc::clone(&spec.network);
        b.allow_tcp(policy.sockets_enabled())
            .allow_udp(policy.sockets_enabled())
            .allow_ip_name_lookup(policy.name_lookup_enabled())
            .socket_addr_check(move |addr, usage| {
                // Judged as the guest knows the address (see `ports`).
                let allowed = policy.allows(crate::ports::guest(addr), socket_use(usage));
                Box::pin(async move { allowed })
            });
        let mut wasi = b.build_p1();
        // Host-side state a guest creates (files, streams, sockets, HTTP
        // fields) lives outside its linear memory, so `Limits::memory`
        // cannot see it: bound it here instead.
        wasi.ctx().table.set_max_capacity(MAX_RESOURCES);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(MAX_HTTP_FIELDS_BYTES);
        Ok(Host {
            wasi,
            http,
            hooks: HttpPolicy {
                policy: Arc::clone(&spec.network),
            },
            network: Arc::clone(&spec.network),
            limiter: MemoryLimiter::new(
                spec.limits.memory,
                config.max_memory_per_instance,
                counters,
            ),
            outputs,
        })
    }
}

/// Most handles (files, streams, sockets, HTTP objects...) one instance may
/// hold at once.
const MAX_RESOURCES: usize = 4096;

/// Largest total size of one set of HTTP headers or trailers an instance may
/// build. With [`MAX_RESOURCES`] this bounds the host memory a guest can pin
/// through `wasi:http` to 4096 × 64 KiB = 256 MiB in the worst case.
const MAX_HTTP_FIELDS_BYTES: usize = 64 * 1024;

fn socket_use(usage: SocketAddrUse) -> SocketUse {
    match usage {
        SocketAddrUse::TcpBind => SocketUse::TcpBind,
        SocketAddrUse::TcpListen => SocketUse::TcpListen,
        SocketAddrUse::TcpAccept => SocketUse::TcpAccept,
        SocketAddrUse::TcpConnect => SocketUse::TcpConnect,
        SocketAddrUse::UdpBind => SocketUse::UdpBind,
        SocketAddrUse::UdpSend => SocketUse::UdpSend,
        SocketAddrUse::UdpReceive => SocketUse::UdpReceive,
    }
}

/// Outgoing `wasi:http` requests pass the same network policy as sockets.
struct HttpPolicy {
    policy: Arc<dyn NetworkPolicy>,
}

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<wasmtime_wasi_http::WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl wasmtime_wasi_http::WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let uri = request.uri();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let host = uri.host().unwrap_or_default().to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let mut request = request;
        if let Some(own) = self.policy.task_address() {
            // Resolve as the task's sockets do, check the address as a
            // connection, and send to the address itself so nothing is
            // resolved again on the way out. (The `Host` header keeps the
            // name.) No certificate names a loopback address, so https has
            // nowhere to go.
            let target = if https {
                None
            } else {
                task_http_target(&*self.policy, own, &host, port)
            };
            let Some(target) = target else {
                return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
            };
            let mut parts = request.uri().clone().into_parts();
            match crate::ports::host(target).to_string().parse() {
                Ok(authority) => parts.authority = Some(authority),
                Err(_) => {
                    return Box::new(async {
                        Err(wasmtime_wasi_http::Error::HttpRequestUriInvalid)
                    });
                }
            }
            match http::Uri::from_parts(parts) {
                Ok(uri) => *request.uri_mut() = uri,
                Err(_) => {
                    return Box::new(async {
                        Err(wasmtime_wasi_http::Error::HttpRequestUriInvalid)
                    });
                }
            }
        } else if !self.policy.allows_http(&host, port) {
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// Where a task with its own address may send an HTTP request for
/// `host:port`: the first of the name's addresses its policy lets it
/// connect to. `127.0.0.1` and `localhost` are the task itself.
fn task_http_target(
    policy: &dyn NetworkPolicy,
    own: std::net::Ipv4Addr,
    host: &str,
    port: u16,
) -> Option<std::net::SocketAddr> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    crate::net::resolve_for_task(policy, own, bare)?
        .into_iter()
        .map(|ip| std::net::SocketAddr::new(crate::net::task_destination(own, ip), port))
        .find(|addr| policy.allows(*addr, SocketUse::TcpConnect))
}
