//! `skiff run`: one task, from a Wasm file, in the foreground.

use clap::Args;
use skiff_runtime::http::ServeOptions;
use skiff_runtime::net::NetworkMode;
use skiff_runtime::units::{parse_duration, parse_size};
use skiff_runtime::{
    ArtifactKind, InstanceSpec, Limit, Limits, LoadSource, Mount, Outcome, Output, Runtime,
    RuntimeConfig, Stdin,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
#[command(
    override_usage = "skiff run [OPTIONS] <WASM_FILE | IMAGE_REF> [ARGS]...",
    after_help = "Options go before the Wasm file; everything after it is passed to the guest."
)]
pub struct RunArgs {
    /// Set an environment variable (KEY alone takes the host's value). The
    /// guest sees only the variables given here.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<EnvVar>,

    /// Preopen HOST at GUEST, read-write (as `wasmtime run --dir`). GUEST may
    /// be relative (`fixtures.dir`); HOST alone is mounted at its own path.
    #[arg(long = "dir", value_name = "HOST[::GUEST]", value_parser = parse_dir)]
    dirs: Vec<DirArg>,

    /// Mount a host directory or a named volume (as `docker run -v`). GUEST
    /// must be absolute; `:ro` makes it read-only.
    #[arg(short = 'v', long = "volume", value_name = "HOST:GUEST[:ro|:rw]", value_parser = parse_volume)]
    volumes: Vec<VolumeArg>,

    /// Hard limit on the instance's linear memory: bytes, or with a unit
    /// (64m, 1g, 65536).
    #[arg(short = 'm', long, value_name = "SIZE", value_parser = parse_memory)]
    memory: Option<u64>,

    /// CPU share in ECS units, 1024 = one core.
    #[arg(long, value_name = "UNITS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(2..=262_144))]
    cpu: u32,

    /// Total instruction budget.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    fuel: Option<u64>,

    /// Wall-clock limit (500ms, 2s, 1m).
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    timeout: Option<Duration>,

    /// none (default): no network at all. host: the host's loopback only.
    /// awsvpc, bridge: a loopback address of the task's own (from
    /// --task-addresses), where its servers listen; `-p` publishes ports on
    /// the host.
    #[arg(long, value_name = "MODE", default_value = "none", value_parser = parse_network)]
    network: NetworkMode,

    /// Publish CONTAINERPORT of an awsvpc/bridge task on the host at
    /// [IP:]HOSTPORT (IP defaults to 127.0.0.1; HOSTPORT 0 picks a free
    /// port). Repeatable. For a wasi:http component under none or host it
    /// is where the component is served (default 127.0.0.1:8080).
    #[arg(short = 'p', long = "publish", value_name = "[IP:]HOSTPORT:CONTAINERPORT", value_parser = parse_publish)]
    publish: Vec<Publish>,

    /// The loopback block task addresses come from (awsvpc, bridge).
    #[arg(long, value_name = "CIDR", default_value = "127.18.0.0/16")]
    task_addresses: skiff_runtime::addresses::AddressBlock,

    #[command(flatten)]
    pub(crate) compile_cache: crate::CompileCacheArgs,

    #[command(flatten)]
    registry: crate::images::RegistryOptions,

    /// The Wasm file or image reference (pulled once, then run from the
    /// image store), then the guest's arguments.
    #[arg(
        value_name = "WASM_FILE | IMAGE_REF",
        required = true,
        trailing_var_arg = true,
        num_args = 1..
    )]
    target_and_args: Vec<String>,
}

#[derive(Debug, Clone)]
struct EnvVar(String, Option<String>);

#[derive(Debug, Clone)]
struct DirArg {
    host: String,
    guest: String,
}

#[derive(Debug, Clone)]
struct VolumeArg {
    source: VolumeSource,
    guest: String,
    read_only: bool,
}

#[derive(Debug, Clone)]
enum VolumeSource {
    Path(PathBuf),
    Named(String),
}

#[derive(Debug, Clone, Copy)]
struct Publish {
    host: SocketAddr,
    container_port: u16,
}

fn parse_env(s: &str) -> Result<EnvVar, String> {
    let (key, value) = match s.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (s, None),
    };
    if key.is_empty() {
        return Err(format!("`{s}` has no variable name (expected KEY=VALUE)"));
    }
    Ok(EnvVar(key.to_string(), value))
}

fn parse_dir(s: &str) -> Result<DirArg, String> {
    let (host, guest) = match s.split_once("::") {
        Some((h, g)) => (h, g),
        None => (s, s),
    };
    if host.is_empty() || guest.is_empty() {
        return Err(format!("`{s}` is not HOST[::GUEST]"));
    }
    Ok(DirArg {
        host: host.to_string(),
        guest: guest.to_string(),
    })
}

fn parse_volume(s: &str) -> Result<VolumeArg, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (host, guest, mode) = match parts.as_slice() {
        [h, g] => (*h, *g, "rw"),
        [h, g, m] => (*h, *g, *m),
        _ => return Err(format!("`{s}` is not HOST:GUEST[:ro|:rw]")),
    };
    let read_only = match mode {
        "ro" => true,
        "rw" => false,
        other => {
            return Err(format!(
                "`{s}` has an unknown mode `{other}` (expected ro or rw)"
            ));
        }
    };
    if host.is_empty() {
        return Err(format!("`{s}` has no host path or volume name"));
    }
    if !guest.starts_with('/') {
        return Err(format!("`{s}`: the guest path `{guest}` must be absolute"));
    }
    let source = if host.starts_with('/') || host.starts_with('.') {
        VolumeSource::Path(PathBuf::from(host))
    } else if host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && host.starts_with(|c: char| c.is_ascii_alphanumeric())
    {
        VolumeSource::Named(host.to_string())
    } else {
        return Err(format!(
            "`{s}`: `{host}` is neither a path (start it with / or ./) nor a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)"
        ));
    };
    Ok(VolumeArg {
        source,
        guest: guest.to_string(),
        read_only,
    })
}

/// One Wasm page: no memory is smaller.
const WASM_PAGE: u64 = 64 << 10;

fn parse_memory(s: &str) -> Result<u64, String> {
    match parse_size(s)? {
        0 => Err("the memory limit must be greater than zero".to_string()),
        // ECS counts memory in MiB; a bare number here is bytes.
        n if n < WASM_PAGE => Err(format!(
            "{n} bytes is less than one Wasm page (64 KiB): a bare number is bytes (did you mean {n}m?)"
        )),
        n => Ok(n),
    }
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("the timeout must be greater than zero".to_string()),
        d => Ok(d),
    }
}

fn parse_network(s: &str) -> Result<NetworkMode, String> {
    s.parse()
}

fn parse_publish(s: &str) -> Result<Publish, String> {
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("`{s}`: `{p}` is not a port number"))
    };
    // [IP:]HOSTPORT:CONTAINERPORT, where IP may be a bracketed IPv6 address.
    let (ip, rest) = if let Some(stripped) = s.strip_prefix('[') {
        let (ip, rest) = stripped
            .split_once("]:")
            .ok_or_else(|| format!("`{s}` is not [IP:]HOSTPORT:CONTAINERPORT"))?;
        (Some(ip), rest)
    } else {
        match s.matches(':').count() {
            1 => (None, s),
            2 => {
                let (ip, rest) = s.split_once(':').unwrap_or_default();
                (Some(ip), rest)
            }
            _ => return Err(format!("`{s}` is not [IP:]HOSTPORT:CONTAINERPORT")),
        }
    };
    let (host_port, container_port) = rest
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not [IP:]HOSTPORT:CONTAINERPORT"))?;
    let ip: IpAddr = match ip {
        Some(ip) => ip
            .parse()
            .map_err(|_| format!("`{s}`: `{ip}` is not an IP address"))?,
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    Ok(Publish {
        host: SocketAddr::new(ip, port(host_port)?),
        container_port: port(container_port)?,
    })
}

/// Runs the command and returns the process exit status.
pub fn run(args: RunArgs, data_dir: PathBuf) -> i32 {
    match execute(args, data_dir) {
        Ok(code) => code,
        Err(message) => {
            say!("error: {message}");
            125
        }
    }
}

fn execute(args: RunArgs, data_dir: PathBuf) -> Result<i32, String> {
    let (target, guest_args) = args
        .target_and_args
        .split_first()
        .ok_or("no Wasm file given")?;
    // A file, or an image pulled (once) into the image store.
    let (name, bytes, argv0, image_args, image_env) = match resolve_target(target)? {
        Target::File(path) => {
            let name = path.display().to_string();
            let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {name}: {e}"))?;
            let bytes = from_text(&name, &path, bytes)?;
            // argv[0] is the file's name without its directories, as
            // wasmtime does.
            let argv0 = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| target.clone());
            (name, bytes, argv0, Vec::new(), Vec::new())
        }
        Target::Image(reference) => {
            let (record, bytes) =
                crate::images::pull_and_compile(&reference, &data_dir, &args.registry, false)?;
            // argv[0] is the repository's last component ("hello" for
            // registry/team/hello:v1).
            let argv0 = record
                .reference
                .split(['@'])
                .next()
                .and_then(|r| r.rsplit('/').next())
                .map(|r| r.split(':').next().unwrap_or(r).to_string())
                .unwrap_or_else(|| record.reference.clone());
            (record.reference, bytes, argv0, record.args, record.env)
        }
    };
    let kind = skiff_runtime::inspect(&name, &bytes).map_err(|e| e.to_string())?;
    check_publish(&args, kind, &name)?;

    // A server needs a pool with room for every request in flight. One
    // command is one instance: reserving a pool for it (wasmtime sizes its
    // pieces, reads the CPU count from cgroups, maps and unmaps it) cost
    // more of `skiff run`'s whole process than instantiating; its memory
    // is mapped when it starts instead, limits enforced the same way.
    let server = kind == ArtifactKind::HttpProxy;
    let config = RuntimeConfig {
        fuel: args.fuel.is_some(),
        pooling: server,
        max_instances: if server { 1000 } else { 1 },
        ..crate::runtime_config(data_dir)
    };
    let mounts = mounts(&args, &config)?;
    // The image's environment, then the user's (which wins).
    let mut env = image_env;
    for (key, value) in guest_env(&args.env)? {
        env.retain(|(k, _)| *k != key);
        env.push((key, value));
    }
    // The user's arguments replace the image's, as `docker run` does.
    let guest_args: Vec<String> = if guest_args.is_empty() {
        image_args
    } else {
        guest_args.to_vec()
    };
    // An address of the task's own, held until skiff exits.
    skiff_runtime::ports::PortMap::detect(args.task_addresses).install();
    let lease = if args.network.has_own_address() {
        let pool = skiff_runtime::addresses::AddressPool::new(args.task_addresses)
            .map_err(|e| format!("cannot lease a task address: {e}"))?;
        let lease = pool
            .acquire(&format!("skiff run {}", std::process::id()))
            .map_err(|e| format!("cannot lease a task address: {e}"))?;
        say!("skiff: task address {}", lease.ip());
        Some(lease)
    } else {
        None
    };
    let address = lease.as_ref().map(|l| l.ip());
    let runtime = Runtime::new(config).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let artifact = runtime
        .load_bytes(&name, &bytes)
        .map_err(|e| e.to_string())?;
    tracing::debug!(
        artifact = %artifact.name(),
        kind = %artifact.kind(),
        digest = %artifact.digest(),
        cached = artifact.source() == LoadSource::DiskCache,
        elapsed = ?started.elapsed(),
        "loaded"
    );

    let spec = InstanceSpec {
        args: std::iter::once(argv0)
            .chain(guest_args.iter().cloned())
            .collect(),
        env,
        mounts,
        limits: Limits {
            memory: args.memory,
            cpu_units: args.cpu,
            cpu_cap: None,
            fuel: args.fuel,
            timeout: args.timeout,
        },
        network: args.network.policy(address),
        stdin: Stdin::Inherit,
        stdout: Output::Inherit,
        stderr: Output::Inherit,
    };

    let tokio = match artifact.kind() {
        ArtifactKind::HttpProxy => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
    .map_err(|e| format!("cannot start the async runtime: {e}"))?;

    let code = tokio.block_on(async {
        match (artifact.kind(), address) {
            // The component listens on its own address, at the first
            // published container port (8080 by default); every -p is
            // carried there.
            (ArtifactKind::HttpProxy, Some(ip)) => {
                let port = args.publish.first().map_or(8080, |p| p.container_port);
                let at = SocketAddr::from((ip, port));
                publish(&args.publish, ip).await?;
                serve(&runtime, &artifact, spec, at, port).await
            }
            (ArtifactKind::HttpProxy, None) => {
                let at = args
                    .publish
                    .first()
                    .map_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)), |p| p.host);
                let port = args.publish.first().map_or(8080, |p| p.container_port);
                serve(&runtime, &artifact, spec, at, port).await
            }
            (_, Some(ip)) => {
                publish(&args.publish, ip).await?;
                run_command(&runtime, &artifact, spec).await
            }
            (_, None) => run_command(&runtime, &artifact, spec).await,
        }
    });
    // process::exit skips destructors: give the address back first.
    if let Some(lease) = lease
        && let Err(e) = lease.release()
    {
        tracing::warn!("could not release the task address: {e}");
    }
    exit_now(code?)
}

/// What `-p` can mean for this artifact under this network.
fn check_publish(args: &RunArgs, kind: ArtifactKind, name: &str) -> Result<(), String> {
    let Some(p) = args.publish.first() else {
        return Ok(());
    };
    let flag = format!("-p {}:{}", p.host, p.container_port);
    if kind == ArtifactKind::HttpProxy {
        if !args.network.has_own_address() && args.publish.len() > 1 {
            return Err(format!(
                "{flag}: a wasi:http component is served on one address under --network {}; \
                 publish several ports with --network bridge or awsvpc",
                args.network
            ));
        }
        return Ok(());
    }
    match args.network {
        NetworkMode::Bridge | NetworkMode::Awsvpc => {
            if kind == ArtifactKind::Module {
                return Err(format!(
                    "{flag}: {name} is a wasip1 module, which has no sockets to listen with; \
                     build it for wasm32-wasip2"
                ));
            }
            Ok(())
        }
        NetworkMode::Host => Err(format!(
            "{flag}: under --network host the guest listens on the host's ports itself; \
             drop -p, or use --network bridge or awsvpc"
        )),
        NetworkMode::None => Err(format!(
            "{flag}: --network none gives the task no network to publish; \
             use --network bridge or awsvpc"
        )),
    }
}

/// Starts carrying each published port to the task's address.
async fn publish(ports: &[Publish], ip: Ipv4Addr) -> Result<(), String> {
    for p in ports {
        let listener = tokio::net::TcpListener::bind(p.host)
            .await
            .map_err(|e| format!("cannot publish on {}: {e}", p.host))?;
        let local = listener
            .local_addr()
            .map_err(|e| format!("cannot read the published address: {e}"))?;
        let target = SocketAddr::from((ip, p.container_port));
        say!("skiff: publishing {local} -> {target}");
        tokio::spawn(skiff_runtime::proxy::forward_tcp(
            listener,
            target,
            std::future::pending(),
        ));
    }
    Ok(())
}

/// Exits at once, without tearing down the engine: the kernel releases its
/// address-space reservations and threads faster than unmapping them one
/// by one would, and a one-shot command should not pay for that.
///
/// The guest's output is already delivered when it ended by itself (see
/// `Instance::wait`). After a limit or a signal it may be stuck on a reader
/// that never reads, holding stdout's lock: so no explicit flush here, which
/// would wait for that lock (`process::exit` only tries it).
fn exit_now(code: i32) -> ! {
    std::process::exit(code)
}

/// The binary of a WebAssembly text file (`.wat`, or text that opens
/// with `(` or a `;;` comment), as `wasmtime run` takes them; anything
/// else as it is.
fn from_text(name: &str, path: &Path, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    let text_like = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'(' || b == b';');
    if bytes.starts_with(b"\0asm") || !(text_like || path.extension().is_some_and(|e| e == "wat")) {
        return Ok(bytes);
    }
    wat::parse_bytes(&bytes)
        .map(std::borrow::Cow::into_owned)
        .map_err(|mut e| {
            e.set_path(path);
            // The message and where (`--> file:line:col`), without the
            // snippet wat draws under them.
            let text = e.to_string();
            let said: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| {
                    !l.is_empty() && !l.starts_with('|') && !l.starts_with(char::is_numeric)
                })
                .take(2)
                .collect();
            format!("cannot read {name} as WebAssembly text: {}", said.join(" "))
        })
}

/// What `skiff run` was given.
enum Target {
    File(PathBuf),
    Image(String),
}

/// A file path if it exists (or looks like one), else an image reference.
fn resolve_target(target: &str) -> Result<Target, String> {
    let path = PathBuf::from(target);
    if path.exists() {
        return Ok(Target::File(path));
    }
    let looks_like_path = target.starts_with(['/', '.'])
        || [".wasm", ".wat", ".cwasm"]
            .iter()
            .any(|ext| target.ends_with(ext));
    if !looks_like_path && looks_like_reference(target) {
        return Ok(Target::Image(target.to_string()));
    }
    Err(format!("cannot read {target}: no such file"))
}

/// `[registry[:port]/]name[/name...][:tag][@sha256:...]` in the OCI shape.
fn looks_like_reference(s: &str) -> bool {
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    if digest.is_some_and(|d| !d.starts_with("sha256:") && !d.starts_with("sha512:")) {
        return false;
    }
    !rest.is_empty()
        && rest.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '/' | ':' | '.' | '_' | '-')
        })
}

/// The guest's environment: `KEY=VALUE` as given, `KEY` alone from the
/// host (left out when the host has none).
fn guest_env(vars: &[EnvVar]) -> Result<Vec<(String, String)>, String> {
    let mut env = Vec::new();
    for EnvVar(key, value) in vars {
        match value {
            Some(v) => env.push((key.clone(), v.clone())),
            None => match std::env::var(key) {
                Ok(v) => env.push((key.clone(), v)),
                Err(std::env::VarError::NotPresent) => {}
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(format!(
                        "-e {key}: the host's value is not UTF-8, and WASI environment variables are text"
                    ));
                }
            },
        }
    }
    Ok(env)
}

/// The mounts of `--dir` and `-v`, checked before anything is compiled:
/// every host side must be a directory (WASI preopens are directories).
fn mounts(args: &RunArgs, config: &RuntimeConfig) -> Result<Vec<Mount>, String> {
    let host_dir = |p: &Path, flag: &str| {
        if p.is_dir() {
            Ok(p.to_path_buf())
        } else {
            Err(format!(
                "{flag} {} is not a directory on this host",
                p.display()
            ))
        }
    };
    let mut mounts = Vec::new();
    for d in &args.dirs {
        mounts.push(Mount {
            host: host_dir(Path::new(&d.host), "--dir")?,
            guest: d.guest.clone(),
            read_only: false,
        });
    }
    for v in &args.volumes {
        let host = match &v.source {
            VolumeSource::Path(p) => host_dir(p, "volume source")?,
            VolumeSource::Named(name) => {
                let dir = config.volumes_dir().join(name);
                std::fs::create_dir_all(&dir).map_err(|e| {
                    format!("cannot create volume {name} at {}: {e}", dir.display())
                })?;
                dir
            }
        };
        mounts.push(Mount {
            host,
            guest: v.guest.clone(),
            read_only: v.read_only,
        });
    }
    // Two preopens under one name would let the guest pick the read-write
    // one over a read-only one; docker refuses duplicate mount points too.
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = mounts.iter().find(|m| !seen.insert(m.guest.as_str())) {
        return Err(format!("two mounts use the guest path {}", dup.guest));
    }
    Ok(mounts)
}

async fn run_command(
    runtime: &Runtime,
    artifact: &std::sync::Arc<skiff_runtime::Artifact>,
    spec: InstanceSpec,
) -> Result<i32, String> {
    let stop = crate::signals::shutdown_signal();
    let mut instance = runtime.spawn(artifact, spec).map_err(|e| e.to_string())?;
    let signal = tokio::select! {
        outcome = instance.wait() => return Ok(report(artifact.name(), &outcome)),
        signal = stop => signal,
    };
    instance.stop(Duration::ZERO);
    let outcome = instance.wait().await;
    Ok(match outcome {
        Outcome::Stopped => 128 + signal,
        other => report(artifact.name(), &other),
    })
}

/// Prints how the guest ended (if it did not simply exit) and returns the
/// exit status.
fn report(name: &str, outcome: &Outcome) -> i32 {
    match outcome {
        Outcome::Exited(_) | Outcome::Stopped => {}
        Outcome::Trapped(trap) => say!("skiff: {name} trapped: {trap}"),
        Outcome::LimitExceeded {
            limit: limit @ Limit::Memory(_),
            detail,
        } => {
            say!("skiff: {name} exceeded its {limit}: {detail}");
        }
        Outcome::LimitExceeded { limit, .. } => {
            say!("skiff: {name} was stopped: it exceeded its {limit}");
        }
        Outcome::Failed(why) => say!("error: {name} could not run: {why}"),
    }
    outcome.exit_code()
}

async fn serve(
    runtime: &Runtime,
    artifact: &std::sync::Arc<skiff_runtime::Artifact>,
    spec: InstanceSpec,
    at: SocketAddr,
    container_port: u16,
) -> Result<i32, String> {
    let listener = tokio::net::TcpListener::bind(skiff_runtime::ports::host(at))
        .await
        .map_err(|e| format!("cannot listen on {at}: {e}"))?;
    let local = listener
        .local_addr()
        .map(skiff_runtime::ports::guest)
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    // Signals are caught from here, before the banner says we serve.
    let stop = crate::signals::shutdown_signal();
    say!("Serving HTTP on http://{local}/ (container port {container_port})");
    let options = ServeOptions::new(spec);
    let report = skiff_runtime::http::serve(runtime, artifact, listener, options, async {
        stop.await;
        say!("skiff: shutting down, finishing requests in flight (signal again to stop now)");
        // A second signal means now.
        tokio::spawn(async {
            let signal = crate::signals::shutdown_signal().await;
            exit_now(128 + signal)
        });
    })
    .await
    .map_err(|e| e.to_string())?;
    tracing::info!(
        requests = report.requests,
        failed = report.failed,
        abandoned = report.abandoned,
        "stopped serving"
    );
    // Drained: a server asked to stop that finished its requests exits
    // 0, as a drained container does.
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_follows_wasmtime() {
        let d = parse_dir("some/host/path::fixtures.dir").unwrap();
        assert_eq!(
            (d.host.as_str(), d.guest.as_str()),
            ("some/host/path", "fixtures.dir")
        );
        let d = parse_dir("/tmp/x").unwrap();
        assert_eq!((d.host.as_str(), d.guest.as_str()), ("/tmp/x", "/tmp/x"));
        assert!(parse_dir("::x").is_err());
    }

    #[test]
    fn volume_follows_docker() {
        let v = parse_volume("/srv/data:/data:ro").unwrap();
        assert!(v.read_only);
        assert!(matches!(v.source, VolumeSource::Path(ref p) if p == Path::new("/srv/data")));
        let v = parse_volume("cache:/cache").unwrap();
        assert!(!v.read_only);
        assert!(matches!(v.source, VolumeSource::Named(ref n) if n == "cache"));
        assert!(
            parse_volume("/a:relative")
                .unwrap_err()
                .contains("must be absolute")
        );
        assert!(
            parse_volume("/a:/b:rx")
                .unwrap_err()
                .contains("unknown mode")
        );
        assert!(parse_volume("/a").is_err());
        assert!(parse_volume("/a:/b:ro:x").is_err());
        assert!(parse_volume("bad name:/b").is_err());
    }

    #[test]
    fn publish_forms() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!(p.host, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(p.container_port, 80);
        let p = parse_publish("127.0.0.2:9000:80").unwrap();
        assert_eq!(p.host, "127.0.0.2:9000".parse().unwrap());
        let p = parse_publish("[::1]:9000:80").unwrap();
        assert_eq!(p.host, "[::1]:9000".parse().unwrap());
        assert!(parse_publish("8080").is_err());
        assert!(parse_publish("host:1:2").is_err());
        assert!(parse_publish("1:99999").is_err());
    }

    #[test]
    fn references_are_told_from_files() {
        assert!(looks_like_reference("localhost:5050/hello:latest"));
        assert!(looks_like_reference("hello"));
        assert!(looks_like_reference("ghcr.io/a/b@sha256:abc"));
        assert!(!looks_like_reference("Hello World"));
        assert!(matches!(
            resolve_target("localhost:5050/hello:v1"),
            Ok(Target::Image(r)) if r == "localhost:5050/hello:v1"
        ));
        assert!(matches!(resolve_target("missing.wasm"), Err(e) if e.contains("cannot read")));
    }
}
