//! `skiff serve`: the API, the registry, the control plane and one local
//! container instance (an agent, joined to the control plane by an
//! in-process channel), in one foreground process.

use clap::Args;
use skiff_agent::{Agent, AgentConfig};
use skiff_control::{ControlConfig, ControlPlane};
use skiff_registry::images::{PullBehavior, Puller};
use skiff_registry::{Registry, RegistryConfig};
use skiff_runtime::{Runtime, RuntimeConfig};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Where the ECS (and CloudWatch Logs) API listens.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:7700")]
    api_addr: SocketAddr,

    /// Where the registry listens. Beyond loopback (for agents on other
    /// machines) it needs credentials, and every pull and push a registry
    /// token (`aws ecr get-login-password`; agents are handed theirs).
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:5050")]
    registry_addr: SocketAddr,

    /// The region this endpoint is: every ARN names it, and a request
    /// signed for another region is refused (run one skiff serve per
    /// region, as AWS has one endpoint per region).
    #[arg(long, default_value = "us-east-1")]
    region: String,

    /// The account id in ARNs and owner fields (twelve digits).
    #[arg(long, value_name = "ID", default_value = "000000000000")]
    account_id: String,

    /// Require SigV4 signatures made with the keys in this file (the AWS
    /// CLI's INI format: aws_access_key_id / aws_secret_access_key in any
    /// profile). Without credentials skiff accepts any signature and
    /// listens on loopback only.
    #[arg(long, value_name = "FILE")]
    credentials_file: Option<PathBuf>,

    /// An access key to require signatures with (with --secret-access-key).
    #[arg(long, env = "SKIFF_ACCESS_KEY_ID", requires = "secret_access_key")]
    access_key_id: Option<String>,

    /// Its secret.
    #[arg(
        long,
        env = "SKIFF_SECRET_ACCESS_KEY",
        requires = "access_key_id",
        hide_env_values = true
    )]
    secret_access_key: Option<String>,

    /// The cluster the local container instance joins, made if it does not
    /// exist (default: `default`, or ECS_CLUSTER of --ecs-config). FARGATE
    /// tasks of every cluster run on it whichever it joins.
    #[arg(long, env = "ECS_CLUSTER", value_name = "NAME")]
    cluster: Option<String>,

    /// An ECS agent configuration file (the KEY=VALUE lines of
    /// /etc/ecs/ecs.config) for the local instance: ECS_CLUSTER,
    /// ECS_IMAGE_PULL_TIMEOUT, ECS_IMAGE_PULL_INACTIVITY_TIMEOUT,
    /// ECS_IMAGE_PULL_BEHAVIOR; a key skiff serve cannot honour is an
    /// error. The flags, and the same names as environment variables, win.
    #[arg(long, value_name = "FILE")]
    ecs_config: Option<PathBuf>,

    /// How long pulling one container's image may take before its task
    /// fails with CannotPullContainerError (default 10m; or the ECS
    /// agent's ECS_IMAGE_PULL_TIMEOUT).
    #[arg(long, env = "ECS_IMAGE_PULL_TIMEOUT", value_name = "DURATION", value_parser = parse_timeout)]
    image_pull_timeout: Option<std::time::Duration>,

    /// How long a registry may send nothing while an image is pulled
    /// (default 1m; or the ECS agent's ECS_IMAGE_PULL_INACTIVITY_TIMEOUT).
    #[arg(long, env = "ECS_IMAGE_PULL_INACTIVITY_TIMEOUT", value_name = "DURATION", value_parser = parse_timeout)]
    image_pull_inactivity_timeout: Option<std::time::Duration>,

    /// Whether a task's image is pulled again when this machine holds it,
    /// as the ECS agent's ECS_IMAGE_PULL_BEHAVIOR: default (ask the
    /// registry what the tag names at every start, use the held image if
    /// it cannot answer), always (the same, but failing the task), once or
    /// prefer-cached (use the held image). Default: default.
    /// Or ECS_IMAGE_PULL_BEHAVIOR, or that line of --ecs-config.
    #[arg(long, value_name = "BEHAVIOR")]
    image_pull_behavior: Option<PullBehavior>,

    /// The most memory one container may have (e.g. 256m; default 4g, a
    /// Wasm memory's most). Below 4g each instance reserves that much
    /// address space instead of 4 GiB (its memory accesses are then
    /// bounds-checked), so many more fit: with 64m, 10,000 containers. The
    /// instance says so in its `skiff.max-container-memory` attribute, and
    /// a task with a container limited higher is not placed on it
    /// (RESOURCE:MEMORY).
    #[arg(long, value_name = "SIZE", value_parser = parse_container_memory)]
    max_container_memory: Option<u64>,

    /// How long DescribeTasks shows a STOPPED task before skiff forgets it
    /// (its record, memory and store space): ECS keeps them about an hour.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_timeout)]
    stopped_task_retention: std::time::Duration,

    /// Wasm instances the runtime may hold at once: the pool's size.
    /// Containers of tasks get all but a tenth (at least 16), which HTTP
    /// requests and health checks take; the local instance registers
    /// those as its WASM_SLOTS resource, and a task that would not fit is
    /// not placed (RESOURCE:WASM_SLOTS). Each reserves about 16 GiB of
    /// address space (not memory): a typical Linux host allows about 5,400,
    /// and many more with --max-container-memory.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(32..=100_000))]
    max_instances: u32,

    /// CPU units of the local container instance (default: cores × 1024).
    #[arg(long, value_name = "UNITS", value_parser = clap::value_parser!(u32).range(128..))]
    cpu: Option<u32>,

    /// Memory of the local container instance in MiB (default: what the
    /// machine has available).
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(64..))]
    memory: Option<u32>,

    /// The loopback block awsvpc and bridge tasks get their addresses from.
    #[arg(long, value_name = "CIDR", default_value = "127.18.0.0/16")]
    task_addresses: skiff_runtime::addresses::AddressBlock,

    /// Put this machine's tasks in the cluster's mesh: agents on other
    /// machines then carry their tasks' connections to this machine's
    /// tasks here (and theirs are reached from here). An IP other
    /// machines reach (or 0.0.0.0, announced as --api-addr's IP) and a
    /// port. Default: off (tasks elsewhere cannot call tasks here).
    #[arg(long, value_name = "IP:PORT")]
    mesh_addr: Option<SocketAddr>,

    /// How long an agent on another machine (`skiff agent`) may be silent
    /// before its instance is taken for lost: its tasks are recorded
    /// STOPPED and services replace them on other instances. Agents send a
    /// heartbeat every second.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_agent_timeout)]
    agent_timeout: std::time::Duration,

    /// The loopback address load balancers listen on. Tasks cannot reach
    /// 127.0.0.1 (theirs is themselves): give another, such as 127.17.0.1,
    /// for tasks to call load balancers by their DNS names.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1", value_parser = parse_lb_address)]
    lb_address: std::net::Ipv4Addr,

    /// The registry of the skiff serving another region or account, as an
    /// ECR replication destination: `REGION/ACCOUNT=HOST:PORT` (repeat for
    /// more). PutReplicationConfiguration may name these destinations;
    /// images are pushed there in plain HTTP, anonymously.
    #[arg(long, value_name = "REGION/ACCOUNT=HOST:PORT", value_parser = parse_replication_peer)]
    replication_peer: Vec<(String, String)>,

    /// Do not compile images as they are pushed. By default the local
    /// instance compiles each pushed Wasm image into its compile cache in
    /// the background (one at a time), so the image's first task here
    /// starts from compiled code instead of compiling it; a task started
    /// while its image compiles waits for that compile rather than doing
    /// it twice. Agents on other machines compile on their first start.
    #[arg(long)]
    no_compile_on_push: bool,

    #[command(flatten)]
    pub(crate) compile_cache: crate::CompileCacheArgs,
}

fn parse_replication_peer(s: &str) -> Result<(String, String), String> {
    let usage = || {
        format!(
            "{s:?} is not REGION/ACCOUNT=HOST:PORT (for example us-west-2/000000000000=127.0.0.1:5051)"
        )
    };
    let (dest, addr) = s.split_once('=').ok_or_else(usage)?;
    let (region, account) = dest.split_once('/').ok_or_else(usage)?;
    let region_ok = !region.is_empty()
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !region_ok || account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
        return Err(usage());
    }
    addr.parse::<SocketAddr>().map_err(|_| usage())?;
    Ok((dest.to_string(), addr.to_string()))
}

fn parse_lb_address(s: &str) -> Result<std::net::Ipv4Addr, String> {
    let ip: std::net::Ipv4Addr = s
        .parse()
        .map_err(|_| format!("{s:?} is not an IPv4 address"))?;
    if !ip.is_loopback() {
        return Err(format!(
            "{ip} is not a loopback address: load balancers only ever listen on 127.0.0.0/8"
        ));
    }
    Ok(ip)
}

/// Where other machines reach this one's mesh listener (`--mesh-addr`):
/// its own IP, or the API's when it listens on every address.
fn mesh_advertised(at: SocketAddr, api: SocketAddr) -> Result<SocketAddr, String> {
    if at.port() == 0 {
        return Err("--mesh-addr needs a port other machines can be told".into());
    }
    if at.ip().is_loopback() {
        return Err(format!(
            "--mesh-addr {at} is a loopback address: other machines cannot reach it"
        ));
    }
    if !at.ip().is_unspecified() {
        return Ok(at);
    }
    if api.ip().is_unspecified() || api.ip().is_loopback() {
        return Err(format!(
            "--mesh-addr {at} listens everywhere, but which address do other machines reach? Give --mesh-addr IP:PORT"
        ));
    }
    Ok(SocketAddr::new(api.ip(), at.port()))
}

/// An agent timeout: at least 2 s (two missed heartbeats).
fn parse_agent_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_timeout(s)?;
    if d < std::time::Duration::from_secs(2) {
        return Err(format!(
            "{s:?}: agents heartbeat every second; the timeout is at least 2s"
        ));
    }
    Ok(d)
}

/// The access keys of an AWS credentials file.
pub(crate) fn read_credentials(path: &Path) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut keys = HashMap::new();
    let mut id: Option<String> = None;
    let mut secret: Option<String> = None;
    let mut flush = |id: &mut Option<String>, secret: &mut Option<String>| {
        if let (Some(i), Some(s)) = (id.take(), secret.take()) {
            keys.insert(i, s);
        }
    };
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            flush(&mut id, &mut secret);
        } else if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "aws_access_key_id" => id = Some(v.trim().to_string()),
                "aws_secret_access_key" => secret = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    flush(&mut id, &mut secret);
    if keys.is_empty() {
        return Err(format!(
            "{} holds no aws_access_key_id / aws_secret_access_key pair",
            path.display()
        ));
    }
    Ok(keys)
}

/// The ECS agent settings `skiff serve` honours.
const ECS_CONFIG_KEYS: &[&str] = &[
    "ECS_CLUSTER",
    "ECS_IMAGE_PULL_TIMEOUT",
    "ECS_IMAGE_PULL_INACTIVITY_TIMEOUT",
    "ECS_IMAGE_PULL_BEHAVIOR",
];

/// A container memory cap: whole MiB, from 1 MiB to 4 GiB.
pub(crate) fn parse_container_memory(s: &str) -> Result<u64, String> {
    let bytes = skiff_runtime::units::parse_size(s)?;
    if bytes % (1 << 20) != 0 || !(1 << 20..=4 << 30).contains(&bytes) {
        return Err(format!(
            "{s:?}: a container memory cap is whole MiB from 1m to 4g"
        ));
    }
    Ok(bytes)
}

/// A timeout as the ECS agent's settings write them (`90s`, `10m`,
/// `1h30m`): more than nothing.
pub(crate) fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration (such as 90s, 10m or 1h30m): {e}"))?;
    if d.is_zero() {
        return Err(format!("{s:?}: a timeout must be longer than nothing"));
    }
    Ok(d)
}

/// A timeout given by flag (or its variable), else by the ECS agent config
/// file.
pub(crate) fn timeout_setting(
    flag: Option<std::time::Duration>,
    ecs_config: &HashMap<String, String>,
    key: &str,
) -> Result<Option<std::time::Duration>, String> {
    match (flag, ecs_config.get(key)) {
        (Some(d), _) => Ok(Some(d)),
        (None, Some(v)) => parse_timeout(v)
            .map(Some)
            .map_err(|e| format!("{key}: {e}")),
        (None, None) => Ok(None),
    }
}

/// ECS_IMAGE_PULL_BEHAVIOR, given by flag, else by the variable (when not
/// empty), else by the ECS agent config file `file` (empty: the default).
/// A wrong value's error says where it came from.
pub(crate) fn pull_behavior_setting(
    flag: Option<PullBehavior>,
    ecs_config: &HashMap<String, String>,
    file: Option<&Path>,
) -> Result<PullBehavior, String> {
    const KEY: &str = "ECS_IMAGE_PULL_BEHAVIOR";
    if let Some(b) = flag {
        return Ok(b);
    }
    if let Some(v) = std::env::var(KEY).ok().filter(|v| !v.is_empty()) {
        return v
            .parse()
            .map_err(|e| format!("{KEY} in the environment: {e}"));
    }
    match ecs_config.get(KEY).filter(|v| !v.is_empty()) {
        Some(v) => v.parse().map_err(|e| {
            let from = file.map_or("the ECS agent config".into(), |f| f.display().to_string());
            format!("{KEY} in {from}: {e}")
        }),
        None => Ok(PullBehavior::default()),
    }
}

/// An ECS agent configuration file: `KEY=VALUE` lines (values may be
/// quoted, as systemd's EnvironmentFile allows), `#` comments.
pub(crate) fn read_ecs_config(
    path: &Path,
    honoured: &[&str],
    command: &str,
) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut settings = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "{} line {}: {line:?} is not KEY=VALUE",
                path.display(),
                n + 1
            ));
        };
        let key = key.trim();
        if !honoured.contains(&key) {
            return Err(format!(
                "{} line {}: {key} is not an ECS agent setting {command} honours (it takes {})",
                path.display(),
                n + 1,
                honoured.join(", ")
            ));
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        settings.insert(key.to_string(), value.to_string());
    }
    Ok(settings)
}

/// The instance slots of a runtime of `max_instances` that containers of
/// tasks may take: all but a tenth (at least 16), kept for HTTP requests
/// (a wasi:http container takes a slot per request in flight) and health
/// checks.
pub(crate) fn task_slots(max_instances: u32) -> u32 {
    max_instances.saturating_sub((max_instances / 10).max(16))
}

/// The cluster the local instance joins, if one is named: by `--cluster`
/// (or `ECS_CLUSTER`), else by the ECS agent config file, by name or ARN
/// (the ECS agent takes either).
pub(crate) fn local_cluster(
    flag: Option<String>,
    ecs_config: &HashMap<String, String>,
) -> Option<String> {
    let given = flag
        .or_else(|| ecs_config.get("ECS_CLUSTER").cloned())
        .filter(|c| !c.is_empty())?;
    Some(match given.strip_prefix("arn:") {
        Some(_) => given.rsplit('/').next().unwrap_or_default().to_string(),
        None => given,
    })
}

/// The runtime a container instance runs its tasks on (`skiff serve`'s
/// own, `skiff agent`'s): `max_instances` pool slots, each container's
/// memory capped at `max_container_memory` bytes if given.
pub(crate) fn task_runtime(
    data_dir: &Path,
    max_instances: u32,
    max_container_memory: Option<u64>,
) -> Result<Runtime, String> {
    let defaults = crate::runtime_config(data_dir);
    let runtime = Runtime::new(RuntimeConfig {
        max_instances,
        max_memory_per_instance: max_container_memory.unwrap_or(defaults.max_memory_per_instance),
        ..defaults
    })
    .map_err(|e| e.to_string())?;
    // Within its limit now if it was lowered (it is kept so after every
    // compile), off the start's path.
    let pruning = runtime.clone();
    std::thread::spawn(move || pruning.prune_compile_cache());
    Ok(runtime)
}

/// The push hook that compiles each pushed image into `runtime`'s compile
/// cache (one at a time, as the registry hands them over: compiling is CPU
/// work tasks also need).
fn compile_on_push(runtime: Runtime) -> skiff_registry::PushHook {
    Arc::new(move |image: skiff_registry::PushedImage| {
        let runtime = runtime.clone();
        Box::pin(async move {
            let name = format!("{}@{}", image.repository, image.digest);
            let resumed = image.resumed;
            let started = std::time::Instant::now();
            let n = name.clone();
            let compiled =
                tokio::task::spawn_blocking(move || runtime.precompile(&n, &image.wasm)).await;
            match compiled {
                Ok(Ok(true)) if resumed => {
                    tracing::info!(image = %name, elapsed = ?started.elapsed(), "compiled on push, after the stop that had interrupted it");
                }
                Ok(Ok(true)) => {
                    tracing::info!(image = %name, elapsed = ?started.elapsed(), "compiled on push");
                }
                Ok(Ok(false)) => tracing::debug!(image = %name, "already compiled"),
                // Its tasks fail with this error when they start.
                Ok(Err(e)) => tracing::info!(image = %name, "pushed, does not compile: {e}"),
                Err(e) => tracing::warn!(image = %name, "compiling on push failed: {e}"),
            }
        })
    })
}

/// Serves until SIGINT/SIGTERM; returns the exit status.
pub fn run(args: ServeArgs, data_dir: &Path) -> i32 {
    crate::raise_open_files_limit();
    match serve(args, data_dir) {
        Ok(()) => 0,
        Err(e) => {
            say!("error: {e}");
            1
        }
    }
}

fn serve(args: ServeArgs, data_dir: &Path) -> Result<(), String> {
    let mut credentials = match &args.credentials_file {
        Some(p) => read_credentials(p)?,
        None => HashMap::new(),
    };
    if let (Some(id), Some(secret)) = (&args.access_key_id, &args.secret_access_key) {
        credentials.insert(id.clone(), secret.clone());
    }
    if credentials.is_empty() && !args.api_addr.ip().is_loopback() {
        return Err(format!(
            "refusing to serve the API on {} without credentials: anyone who can reach it could run tasks. \
             Give --credentials-file or --access-key-id/--secret-access-key, or listen on a loopback address",
            args.api_addr
        ));
    }
    let shared_registry = !args.registry_addr.ip().is_loopback();
    if shared_registry && credentials.is_empty() {
        // Beyond loopback the registry requires registry tokens, which
        // come from the API's GetAuthorizationToken, which needs the API's
        // credentials.
        return Err(format!(
            "refusing to serve the registry on {} without credentials: give --credentials-file or --access-key-id/--secret-access-key (pushes and pulls then need a registry token: `aws ecr get-login-password`), or keep --registry-addr on a loopback address",
            args.registry_addr
        ));
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let mut registry_config = RegistryConfig::new(data_dir.join("registry"));
    // With credentials the registry is protected too, wherever it listens;
    // beyond loopback it always is.
    let protected_registry = shared_registry || !credentials.is_empty();
    if protected_registry {
        // Every pull and push needs a registry token (`aws ecr
        // get-login-password`; agents are handed theirs on their channel),
        // asked for the way ECR does (Basic).
        registry_config.auth = skiff_registry::AuthMode::All;
        registry_config.challenge = skiff_registry::ChallengeKind::Basic;
    }
    let registry = Registry::open(registry_config).map_err(|e| e.to_string())?;
    let runtime = task_runtime(data_dir, args.max_instances, args.max_container_memory)?;
    if !args.no_compile_on_push {
        registry.on_push(compile_on_push(runtime.clone()));
    }
    let ecs_config = match &args.ecs_config {
        Some(p) => read_ecs_config(p, ECS_CONFIG_KEYS, "skiff serve")?,
        None => HashMap::new(),
    };
    let mut remote =
        crate::images::remote_options(data_dir, &crate::images::RegistryOptions::default());
    if let Some(d) = timeout_setting(
        args.image_pull_inactivity_timeout,
        &ecs_config,
        "ECS_IMAGE_PULL_INACTIVITY_TIMEOUT",
    )? {
        remote.read_timeout = d;
    }
    let puller = Arc::new(Puller::new(crate::images::image_store(data_dir), remote));
    let mut config = ControlConfig::new(data_dir.join("control"));
    config.region = args.region.clone();
    config.account_id = args.account_id.clone();
    config.replication_peers = args.replication_peer.iter().cloned().collect();
    if let Some(cluster) = local_cluster(args.cluster.clone(), &ecs_config) {
        config.cluster = cluster;
    }
    config.credentials = credentials;
    config.default_registry = args.registry_addr.to_string();
    config.agent_cpu = args.cpu;
    config.agent_memory = args.memory;
    config.agent_slots = Some(task_slots(args.max_instances));
    config.stopped_task_retention = args.stopped_task_retention;
    config.agent_timeout = args.agent_timeout;
    if let Some(at) = args.mesh_addr {
        config.local_mesh = Some((
            args.task_addresses.to_string(),
            mesh_advertised(at, args.api_addr)?.to_string(),
        ));
    }
    config.agent_max_container_memory = args
        .max_container_memory
        .filter(|b| *b < 4 << 30)
        .map(|b| (b >> 20) as u32);
    let agents_blocks: skiff_runtime::addresses::AddressBlock =
        "127.64.0.0/10".parse().map_err(|e: String| e)?;
    if args.mesh_addr.is_some() && args.task_addresses.overlaps(&agents_blocks) {
        return Err(format!(
            "--task-addresses {} overlaps 127.64.0.0/10, where agents' task addresses are: pick another block",
            args.task_addresses
        ));
    }
    if args.lb_address == std::net::Ipv4Addr::LOCALHOST
        && args.task_addresses.contains(skiff_control::TASK_FRONT)
    {
        return Err(format!(
            "--task-addresses {} holds {}, where load balancers on 127.0.0.1 listen for tasks: pick another block",
            args.task_addresses,
            skiff_control::TASK_FRONT
        ));
    }
    if args.task_addresses.contains(args.lb_address) {
        return Err(format!(
            "--lb-address {} is inside --task-addresses {}: tasks would be given it",
            args.lb_address, args.task_addresses
        ));
    }
    let mut agent_config = AgentConfig::new(data_dir.join("agent"));
    agent_config.task_addresses = args.task_addresses;
    if let Some(d) = timeout_setting(
        args.image_pull_timeout,
        &ecs_config,
        "ECS_IMAGE_PULL_TIMEOUT",
    )? {
        agent_config.image_pull_timeout = d;
    }
    let pull_behavior = pull_behavior_setting(
        args.image_pull_behavior,
        &ecs_config,
        args.ecs_config.as_deref(),
    )?;
    agent_config.image_pull_behavior = pull_behavior;
    let ports = skiff_runtime::ports::PortMap::detect(args.task_addresses);
    if ports.shifts() {
        tracing::info!(
            "no CAP_NET_BIND_SERVICE: ports below 1024 of task addresses are at PORT+{} on the host",
            skiff_runtime::ports::SHIFT
        );
    }
    ports.install();
    config.lb_address = args.lb_address;
    config.reserved_ports = vec![args.api_addr.port(), args.registry_addr.port()];

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    rt.block_on(async move {
        let api = tokio::net::TcpListener::bind(args.api_addr)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.api_addr))?;
        let reg = tokio::net::TcpListener::bind(args.registry_addr)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.registry_addr))?;
        let api_local = api.local_addr().map_err(|e| e.to_string())?;
        let reg_local = reg.local_addr().map_err(|e| e.to_string())?;
        // Port 0 picks a port: unqualified images must name the real one.
        config.default_registry = reg_local.to_string();
        agent_config.default_registry = reg_local.to_string();
        // The agent asks its own registry what a tag names in-process, at
        // every start, rather than by a request to itself.
        let local = registry.clone();
        puller.set_tag_resolver(
            &reg_local.to_string(),
            Arc::new(move |repository, tag| local.tag_digest(repository, tag)),
        );
        // And reads the binaries pushed to it from the registry's files,
        // linking them into its image store: no download, no second copy.
        let local = registry.clone();
        puller.set_blob_files(
            &reg_local.to_string(),
            Arc::new(move |repository, digest| local.blob_file(repository, digest)),
        );
        if !protected_registry {
            // The first task's pull then finds its client made (with a
            // token, once the token is set, below).
            let (puller, at) = (Arc::clone(&puller), reg_local.to_string());
            tokio::task::spawn_blocking(move || puller.prepare(&at));
        }
        config.reserved_ports = vec![api_local.port(), reg_local.port()];
        let signed = !config.credentials.is_empty();
        let cluster = config.cluster.clone();
        // The control plane first (it registers the local instance and
        // sends it the tasks to resume), then the agent that serves it.
        let (control_end, agent_end) = skiff_channel::link::in_process();
        let control = ControlPlane::start(config, control_end)
            .await
            .map_err(|e| e.to_string())?;
        if protected_registry {
            // The registry wants a token from everyone, this machine's own
            // agent included: a fresh one before the last expires.
            let (registry, puller, at) = (registry.clone(), Arc::clone(&puller), reg_local.to_string());
            puller.allow_plain_http(&at);
            tokio::spawn(async move {
                loop {
                    match registry.issue_token(Duration::from_secs(12 * 3600)) {
                        Ok(t) => {
                            puller.set_credentials(
                                &at,
                                skiff_registry::remote::Credentials {
                                    username: "AWS".into(),
                                    password: t.token,
                                },
                            );
                            let (puller, at) = (Arc::clone(&puller), at.clone());
                            tokio::task::spawn_blocking(move || puller.prepare(&at));
                        }
                        Err(e) => tracing::error!("cannot issue the local agent a registry token: {e}"),
                    }
                    tokio::time::sleep(Duration::from_secs(6 * 3600)).await;
                }
            });
        }
        let agent = Agent::start(
            agent_config,
            runtime,
            puller,
            control.fabric(),
            control.log_destination(),
            agent_end,
        )
        .map_err(|e| e.to_string())?;
        {
            // What the local tasks use, as a remote agent sends it.
            let control = control.clone();
            tokio::spawn(async move {
                let mut every =
                    tokio::time::interval(skiff_channel::messages::USAGE_EVERY);
                loop {
                    every.tick().await;
                    control.record_local_usage(agent.usage()).await;
                }
            });
        }
        if let Some(at) = args.mesh_addr {
            // Other machines' tasks reach this one's through here.
            let node = skiff_agent::mesh::MeshNode::new(control.fabric(), args.task_addresses);
            node.set_token(&control.mesh_token());
            node.start(at)
                .await
                .map_err(|e| format!("cannot listen on --mesh-addr {at}: {e}"))?;
        }
        // `aws ecr ...` on the API endpoint manages this registry.
        control.attach_registry(registry.clone());
        // Signals are caught from here, before the banner says we serve.
        let stop = crate::signals::shutdown_signal();
        say!(
            "skiff serve: API on http://{api_local}/ ({}), registry on {reg_local}{}, instance in cluster {cluster}{}, data in {}",
            if signed {
                "SigV4 required"
            } else {
                "any signature accepted"
            },
            match (protected_registry, !args.no_compile_on_push) {
                (true, true) => " (tokens required: aws ecr get-login-password; pushed images compiled for this instance)",
                (true, false) => " (tokens required: aws ecr get-login-password)",
                (false, true) => " (pushed images compiled for this instance)",
                (false, false) => "",
            },
            match pull_behavior {
                PullBehavior::Default => String::new(),
                b => format!(", image pull behavior {b}"),
            },
            data_dir.display()
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let registry_task = {
            let mut rx = stop_rx.clone();
            tokio::spawn(async move {
                registry
                    .serve(reg, async move {
                        let _ = rx.wait_for(|s| *s).await.map(|_| ());
                    })
                    .await
            })
        };
        let api_task = {
            let control = control.clone();
            let mut rx = stop_rx.clone();
            tokio::spawn(async move {
                control
                    .serve(api, async move {
                        let _ = rx.wait_for(|s| *s).await.map(|_| ());
                    })
                    .await
            })
        };
        stop.await;
        say!("skiff serve: shutting down, stopping tasks (signal again to stop now)");
        tokio::spawn(async {
            let signal = crate::signals::shutdown_signal().await;
            std::process::exit(128 + signal);
        });
        // Tasks first (they record their end through the store), then the
        // listeners.
        control.shutdown(Duration::from_secs(35)).await;
        let _ = stop_tx.send(true);
        let _ = api_task.await;
        let _ = registry_task.await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_files_in_the_aws_cli_format() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("credentials");
        std::fs::write(
            &p,
            "[default]\naws_access_key_id = AKIA1\naws_secret_access_key = s1\n\n[other]\naws_access_key_id=AKIA2\naws_secret_access_key=s2\nregion=x\n",
        )
        .unwrap();
        let keys = read_credentials(&p).unwrap();
        assert_eq!(keys.get("AKIA1").map(String::as_str), Some("s1"));
        assert_eq!(keys.get("AKIA2").map(String::as_str), Some("s2"));
        std::fs::write(&p, "[default]\nregion=x\n").unwrap();
        assert!(read_credentials(&p).is_err());
    }

    #[test]
    fn the_image_pull_behavior_is_ecs_agents() {
        let file =
            |v: &str| HashMap::from([("ECS_IMAGE_PULL_BEHAVIOR".to_string(), v.to_string())]);
        assert_eq!(
            pull_behavior_setting(None, &HashMap::new(), None),
            Ok(PullBehavior::Default)
        );
        for (v, b) in PullBehavior::VALUES.iter().zip([
            PullBehavior::Default,
            PullBehavior::Always,
            PullBehavior::Once,
            PullBehavior::PreferCached,
        ]) {
            assert_eq!(pull_behavior_setting(None, &file(v), None), Ok(b));
            assert_eq!(b.to_string(), *v);
        }
        // The flag (or its variable) wins; a wrong value is named, with
        // the ones there are.
        assert_eq!(
            pull_behavior_setting(Some(PullBehavior::Once), &file("always"), None),
            Ok(PullBehavior::Once)
        );
        let e = pull_behavior_setting(
            None,
            &file("sometimes"),
            Some(Path::new("/etc/ecs/ecs.config")),
        )
        .unwrap_err();
        assert!(
            e.starts_with("ECS_IMAGE_PULL_BEHAVIOR in /etc/ecs/ecs.config: \"sometimes\""),
            "{e}"
        );
        // Empty in the file, as ECS_CLUSTER= may be: the default.
        assert_eq!(
            pull_behavior_setting(None, &file(""), None),
            Ok(PullBehavior::Default)
        );
        assert!(e.contains("default, always, once, prefer-cached"), "{e}");
    }

    #[test]
    fn ecs_agent_config_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ecs.config");
        std::fs::write(&p, "# written by user data\n\nECS_CLUSTER=\"edge\"\n").unwrap();
        let settings = read_ecs_config(&p, ECS_CONFIG_KEYS, "skiff serve").unwrap();
        assert_eq!(
            settings.get("ECS_CLUSTER").map(String::as_str),
            Some("edge")
        );
        // What skiff serve cannot honour is named, not dropped.
        std::fs::write(
            &p,
            "ECS_CLUSTER=edge\nECS_ENABLE_SPOT_INSTANCE_DRAINING=true\n",
        )
        .unwrap();
        let e = read_ecs_config(&p, ECS_CONFIG_KEYS, "skiff serve").unwrap_err();
        assert!(
            e.contains("line 2: ECS_ENABLE_SPOT_INSTANCE_DRAINING"),
            "{e}"
        );
        std::fs::write(&p, "ECS_CLUSTER\n").unwrap();
        assert!(
            read_ecs_config(&p, ECS_CONFIG_KEYS, "skiff serve")
                .unwrap_err()
                .contains("not KEY=VALUE")
        );
        // The flag wins over the file; an ARN names its cluster.
        let file = HashMap::from([("ECS_CLUSTER".to_string(), "edge".to_string())]);
        assert_eq!(local_cluster(None, &file).as_deref(), Some("edge"));
        assert_eq!(
            local_cluster(Some("lab".into()), &file).as_deref(),
            Some("lab")
        );
        assert_eq!(
            local_cluster(
                Some("arn:aws:ecs:eu-west-1:000000000000:cluster/lab".into()),
                &file
            )
            .as_deref(),
            Some("lab")
        );
        assert_eq!(local_cluster(Some(String::new()), &HashMap::new()), None);
        assert_eq!(task_slots(1000), 900);
        assert_eq!(task_slots(40), 24);
        // Timeouts as the ECS agent writes them; the flag wins.
        let file = HashMap::from([("ECS_IMAGE_PULL_TIMEOUT".to_string(), "1h30m".to_string())]);
        assert_eq!(
            timeout_setting(None, &file, "ECS_IMAGE_PULL_TIMEOUT").unwrap(),
            Some(std::time::Duration::from_secs(5400))
        );
        assert_eq!(
            timeout_setting(
                Some(std::time::Duration::from_secs(5)),
                &file,
                "ECS_IMAGE_PULL_TIMEOUT"
            )
            .unwrap(),
            Some(std::time::Duration::from_secs(5))
        );
        let bad = HashMap::from([("ECS_IMAGE_PULL_TIMEOUT".to_string(), "soon".to_string())]);
        let e = timeout_setting(None, &bad, "ECS_IMAGE_PULL_TIMEOUT").unwrap_err();
        assert!(
            e.starts_with("ECS_IMAGE_PULL_TIMEOUT: \"soon\" is not a duration"),
            "{e}"
        );
        assert!(parse_timeout("0s").is_err());
    }
}
