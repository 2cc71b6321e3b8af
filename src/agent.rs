//! `skiff agent`: this machine as a container instance of a cluster whose
//! control plane (`skiff serve`) runs elsewhere. It registers, holds its
//! channel, runs the tasks it is sent, and stops them on SIGINT/SIGTERM.

use clap::Args;
use skiff_agent::join::{self, JoinConfig};
use skiff_agent::{Agent, AgentConfig};
use skiff_registry::images::{PullBehavior, Puller};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The control plane's API (`skiff serve --api-addr`), as this machine
    /// reaches it.
    #[arg(long, env = "SKIFF_ENDPOINT", value_name = "URL")]
    endpoint: String,

    /// The cluster to join (default: ECS_CLUSTER of --ecs-config, else
    /// `default`), by name or ARN.
    #[arg(long, env = "ECS_CLUSTER", value_name = "NAME")]
    cluster: Option<String>,

    /// CPU units offered (default: cores × 1024).
    #[arg(long, value_name = "UNITS", value_parser = clap::value_parser!(u32).range(128..))]
    cpu: Option<u32>,

    /// Memory offered in MiB (default: what the machine has available,
    /// less ECS_RESERVED_MEMORY).
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(64..))]
    memory: Option<u32>,

    /// An attribute to register with (NAME or NAME=VALUE); repeatable. Adds
    /// to ECS_INSTANCE_ATTRIBUTES.
    #[arg(long = "attribute", value_name = "NAME[=VALUE]", value_parser = parse_attribute)]
    attributes: Vec<(String, Option<String>)>,

    /// The availability zone this machine is in (its
    /// `ecs.availability-zone` attribute; default REGIONa).
    #[arg(long, value_name = "ZONE")]
    availability_zone: Option<String>,

    /// The region requests are signed for (default: AWS_REGION, else
    /// us-east-1).
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,

    /// Where images named without a registry host (`hello:v1`) are pulled
    /// from (default: the cluster's registry, as the control plane says).
    /// Spoken to over plain HTTP.
    #[arg(long, value_name = "HOST:PORT")]
    registry: Option<String>,

    /// An ECS agent configuration file (/etc/ecs/ecs.config's KEY=VALUE
    /// lines): ECS_CLUSTER, ECS_INSTANCE_ATTRIBUTES, ECS_RESERVED_MEMORY,
    /// ECS_RESERVED_PORTS, ECS_CONTAINER_STOP_TIMEOUT,
    /// ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION, ECS_IMAGE_PULL_TIMEOUT,
    /// ECS_IMAGE_PULL_INACTIVITY_TIMEOUT, ECS_IMAGE_PULL_BEHAVIOR (default,
    /// always, once, prefer-cached). Any other key is an error. The same
    /// names as environment variables apply too, over the file; flags win.
    #[arg(long, value_name = "FILE")]
    ecs_config: Option<PathBuf>,

    /// Wasm instances the runtime may hold at once (see `skiff serve`).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(32..=100_000))]
    max_instances: u32,

    /// The most memory one container may have (see `skiff serve`).
    #[arg(long, value_name = "SIZE", value_parser = crate::serve::parse_container_memory)]
    max_container_memory: Option<u64>,

    /// Also run FARGATE tasks of any cluster (they show no container
    /// instance, as on ECS, and use this machine's cpu and memory). The
    /// instance says so with its `skiff.fargate` attribute.
    #[arg(long)]
    fargate: bool,

    /// Where other machines' agents connect to this one's tasks (task
    /// connections between machines). Port 0 turns it off: tasks here then
    /// reach only this machine's tasks.
    #[arg(long, value_name = "IP:PORT", default_value = "0.0.0.0:7701")]
    mesh_addr: std::net::SocketAddr,

    /// The address other machines reach this one at: its mesh listener,
    /// and bridge tasks' published host ports (default: the address this
    /// machine reaches the control plane from, and the mesh port).
    #[arg(long, value_name = "IP:PORT")]
    mesh_advertise: Option<std::net::SocketAddr>,

    #[command(flatten)]
    pub(crate) compile_cache: crate::CompileCacheArgs,
}

/// The ECS agent settings `skiff agent` honours.
const ECS_CONFIG_KEYS: &[&str] = &[
    "ECS_CLUSTER",
    "ECS_INSTANCE_ATTRIBUTES",
    "ECS_RESERVED_MEMORY",
    "ECS_RESERVED_PORTS",
    "ECS_CONTAINER_STOP_TIMEOUT",
    "ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION",
    "ECS_IMAGE_PULL_TIMEOUT",
    "ECS_IMAGE_PULL_INACTIVITY_TIMEOUT",
    "ECS_IMAGE_PULL_BEHAVIOR",
];

fn parse_attribute(s: &str) -> Result<(String, Option<String>), String> {
    let (name, value) = match s.split_once('=') {
        Some((n, v)) => (n, Some(v.to_string())),
        None => (s, None),
    };
    if name.is_empty() || name.len() > 128 {
        return Err(format!("{s:?}: an attribute's name is 1 to 128 characters"));
    }
    Ok((name.to_string(), value))
}

/// The settings: the file's, overridden by the environment's.
fn settings(file: Option<&Path>) -> Result<HashMap<String, String>, String> {
    let mut settings = match file {
        Some(p) => crate::serve::read_ecs_config(p, ECS_CONFIG_KEYS, "skiff agent")?,
        None => HashMap::new(),
    };
    for key in ECS_CONFIG_KEYS {
        if let Ok(v) = std::env::var(key)
            && !v.is_empty()
        {
            settings.insert((*key).to_string(), v);
        }
    }
    Ok(settings)
}

/// ECS_INSTANCE_ATTRIBUTES: a JSON object of names to string values.
fn instance_attributes(
    settings: &HashMap<String, String>,
) -> Result<Vec<(String, Option<String>)>, String> {
    let Some(text) = settings.get("ECS_INSTANCE_ATTRIBUTES") else {
        return Ok(Vec::new());
    };
    let map: HashMap<String, String> = serde_json::from_str(text).map_err(|e| {
        format!(
            "ECS_INSTANCE_ATTRIBUTES is not a JSON object of strings ({{\"name\": \"value\"}}): {e}"
        )
    })?;
    let mut attrs: Vec<(String, Option<String>)> =
        map.into_iter().map(|(k, v)| (k, Some(v))).collect();
    attrs.sort();
    Ok(attrs)
}

/// ECS_RESERVED_PORTS: a JSON array of ports.
fn reserved_ports(settings: &HashMap<String, String>) -> Result<Vec<u16>, String> {
    match settings.get("ECS_RESERVED_PORTS") {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(text).map_err(|e| {
            format!("ECS_RESERVED_PORTS is not a JSON array of ports ([22, 2375]): {e}")
        }),
    }
}

/// ECS_RESERVED_MEMORY: MiB.
fn reserved_memory(settings: &HashMap<String, String>) -> Result<u32, String> {
    match settings.get("ECS_RESERVED_MEMORY") {
        None => Ok(0),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("ECS_RESERVED_MEMORY is {v:?}, not a number of MiB")),
    }
}

/// Runs the agent until SIGINT/SIGTERM; returns the exit status.
pub fn run(args: AgentArgs, data_dir: &Path) -> i32 {
    crate::raise_open_files_limit();
    match agent(args, data_dir) {
        Ok(()) => 0,
        Err(e) => {
            say!("error: {e}");
            1
        }
    }
}

fn agent(args: AgentArgs, data_dir: &Path) -> Result<(), String> {
    let settings = settings(args.ecs_config.as_deref())?;
    let cluster = crate::serve::local_cluster(args.cluster.clone(), &settings)
        .unwrap_or_else(|| "default".into());
    let mut attributes = instance_attributes(&settings)?;
    attributes.extend(args.attributes.iter().cloned());
    let zone = args.availability_zone.clone().or_else(|| {
        attributes
            .iter()
            .find(|(n, _)| n == "ecs.availability-zone")
            .and_then(|(_, v)| v.clone())
    });
    attributes.retain(|(n, _)| n != "ecs.availability-zone");
    attributes.push((
        "ecs.availability-zone".into(),
        Some(zone.unwrap_or_else(|| format!("{}a", args.region))),
    ));
    attributes.push(("ecs.os-type".into(), Some("wasi".into())));
    attributes.push(("ecs.cpu-architecture".into(), Some("wasm32".into())));
    attributes.push(("ecs.instance-type".into(), Some("skiff.agent".into())));
    for capability in [
        "com.amazonaws.ecs.capability.logging-driver.awslogs",
        "ecs.capability.container-health-check",
        "ecs.capability.container-ordering",
    ] {
        attributes.push((capability.into(), None));
    }
    if args.fargate {
        attributes.push(("skiff.fargate".into(), None));
    }
    let cap = args.max_container_memory.filter(|b| *b < 4 << 30);
    if let Some(cap) = cap {
        attributes.push((
            "skiff.max-container-memory".into(),
            Some((cap >> 20).to_string()),
        ));
    }
    let (cores, available) = skiff_control::machine_size();
    let memory = args
        .memory
        .unwrap_or(available)
        .checked_sub(reserved_memory(&settings)?)
        .filter(|m| *m > 0)
        .ok_or("ECS_RESERVED_MEMORY reserves all of the instance's memory")?;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let credentials = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (Some(k), Some(s)) => Some((k, s)),
        _ => None,
    };
    let join_config = JoinConfig {
        endpoint: args.endpoint.clone(),
        cluster: cluster.clone(),
        region: args.region.clone(),
        credentials,
        cpu: args.cpu.unwrap_or(cores * 1024),
        memory,
        reserved_ports: reserved_ports(&settings)?,
        slots: Some(crate::serve::task_slots(args.max_instances)),
        attributes,
        state_file: data_dir.join("agent").join("instance.json"),
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    // The mesh port is checked before registering: an agent that cannot
    // serve should not leave an instance behind.
    if args.mesh_addr.port() != 0 {
        std::net::TcpListener::bind(args.mesh_addr)
            .map_err(|e| format!("cannot listen on --mesh-addr {}: {e}", args.mesh_addr))?;
    }
    // Registered first: the control plane says where the cluster's
    // registry is.
    let joined = rt
        .block_on(join::register(&join_config))
        .map_err(|e| e.to_string())?;
    let registry = args
        .registry
        .clone()
        .or_else(|| joined.registry.clone())
        .unwrap_or_else(|| "127.0.0.1:5050".into());
    let runtime =
        crate::serve::task_runtime(data_dir, args.max_instances, args.max_container_memory)?;
    let mut remote = crate::images::remote_options(
        data_dir,
        &crate::images::RegistryOptions {
            insecure_registries: vec![registry.clone()],
        },
    );
    if let Some(d) =
        crate::serve::timeout_setting(None, &settings, "ECS_IMAGE_PULL_INACTIVITY_TIMEOUT")?
    {
        remote.read_timeout = d;
    }
    let puller = Arc::new(Puller::new(crate::images::image_store(data_dir), remote));
    // Every task address in the cluster is unique: the control plane gives
    // each instance its block.
    let block: skiff_runtime::addresses::AddressBlock = joined
        .task_addresses
        .as_deref()
        .ok_or("the control plane gave this instance no task address block (skiff.task-addresses)")?
        .parse()
        .map_err(|e| format!("the instance's task address block: {e}"))?;
    let mut agent_config = AgentConfig::new(data_dir.join("agent"));
    agent_config.default_registry = registry.clone();
    agent_config.task_addresses = block;
    if let Some(d) = crate::serve::timeout_setting(None, &settings, "ECS_IMAGE_PULL_TIMEOUT")? {
        agent_config.image_pull_timeout = d;
    }
    let pull_behavior =
        crate::serve::pull_behavior_setting(None, &settings, args.ecs_config.as_deref())?;
    agent_config.image_pull_behavior = pull_behavior;
    if let Some(d) = crate::serve::timeout_setting(None, &settings, "ECS_CONTAINER_STOP_TIMEOUT")? {
        agent_config.default_stop_timeout = d;
    }
    if let Some(d) =
        crate::serve::timeout_setting(None, &settings, "ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION")?
    {
        agent_config.task_cleanup_wait = d;
    }
    // This machine's own address, as others reach it: bridge tasks' host
    // ports are published there, and the mesh is announced there.
    let host_ip = match args.mesh_advertise {
        Some(a) => a.ip(),
        None => local_ip_towards(&args.endpoint)?,
    };
    if let std::net::IpAddr::V4(ip) = host_ip {
        agent_config.publish_address = ip;
    }
    skiff_runtime::ports::PortMap::detect(block).install();

    rt.block_on(async move {
        let fabric = Arc::new(skiff_channel::fabric::Fabric::default());
        let logs = Arc::new(join::ApiLogs::new(&join_config).map_err(|e| e.to_string())?);
        let (control_end, agent_end) = skiff_channel::link::in_process();
        let agent = Agent::start(
            agent_config,
            runtime,
            Arc::clone(&puller),
            Arc::clone(&fabric),
            logs,
            agent_end,
        )
        .map_err(|e| e.to_string())?;
        let mesh = if args.mesh_addr.port() == 0 {
            None
        } else {
            let node = skiff_agent::mesh::MeshNode::new(Arc::clone(&fabric), block);
            let bound = node
                .start(args.mesh_addr)
                .await
                .map_err(|e| format!("cannot listen on --mesh-addr {}: {e}", args.mesh_addr))?;
            let advertised = match args.mesh_advertise {
                Some(a) => a,
                None if bound.ip().is_unspecified() => std::net::SocketAddr::new(host_ip, bound.port()),
                None => bound,
            };
            Some((node, advertised))
        };
        let held = join::Held {
            fabric,
            puller,
            mesh,
        };
        let stop = crate::signals::shutdown_signal();
        say!(
            "skiff agent: instance {} ({}) in cluster {cluster}, control plane {}, images from {registry}{}, data in {}",
            joined.container_instance_arn,
            joined.ec2_instance_id,
            args.endpoint,
            match pull_behavior {
                PullBehavior::Default => String::new(),
                b => format!(" (image pull behavior {b})"),
            },
            data_dir.display()
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let served = tokio::spawn({
            let config = join_config.clone();
            async move { join::serve(&config, joined, agent, held, control_end, stop_rx).await }
        });
        stop.await;
        say!("skiff agent: shutting down, stopping tasks (signal again to stop now)");
        tokio::spawn(async {
            let signal = crate::signals::shutdown_signal().await;
            std::process::exit(128 + signal);
        });
        let _ = stop_tx.send(true);
        match tokio::time::timeout(Duration::from_secs(40), served).await {
            Ok(Ok(result)) => result.map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(format!("the channel failed: {e}")),
            Err(_) => Err("tasks were still stopping after 40s".into()),
        }
    })
}

/// The address this machine sends from to reach `endpoint`'s host (a UDP
/// socket "connected" there: the kernel picks the route; nothing is sent).
fn local_ip_towards(endpoint: &str) -> Result<std::net::IpAddr, String> {
    let url = reqwest::Url::parse(endpoint).map_err(|e| format!("--endpoint {endpoint:?}: {e}"))?;
    let host = url.host_str().unwrap_or("127.0.0.1");
    let port = url.port_or_known_default().unwrap_or(80);
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    socket
        .connect((host, port))
        .and_then(|()| socket.local_addr())
        .map(|a| a.ip())
        .map_err(|e| {
            format!(
                "cannot tell this machine's address towards {host}: {e} (give --mesh-advertise)"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecs_agent_settings_carry_over() {
        let s = HashMap::from([
            (
                "ECS_INSTANCE_ATTRIBUTES".to_string(),
                r#"{"stack": "prod", "tier": "edge"}"#.to_string(),
            ),
            ("ECS_RESERVED_PORTS".to_string(), "[22, 2375]".to_string()),
            ("ECS_RESERVED_MEMORY".to_string(), "256".to_string()),
        ]);
        assert_eq!(
            instance_attributes(&s).unwrap(),
            [
                ("stack".to_string(), Some("prod".to_string())),
                ("tier".to_string(), Some("edge".to_string()))
            ]
        );
        assert_eq!(reserved_ports(&s).unwrap(), [22, 2375]);
        assert_eq!(reserved_memory(&s).unwrap(), 256);
        let bad = HashMap::from([
            (
                "ECS_INSTANCE_ATTRIBUTES".to_string(),
                "stack=prod".to_string(),
            ),
            ("ECS_RESERVED_PORTS".to_string(), "22,80".to_string()),
            ("ECS_RESERVED_MEMORY".to_string(), "lots".to_string()),
        ]);
        assert!(
            instance_attributes(&bad)
                .unwrap_err()
                .starts_with("ECS_INSTANCE_ATTRIBUTES")
        );
        assert!(
            reserved_ports(&bad)
                .unwrap_err()
                .starts_with("ECS_RESERVED_PORTS")
        );
        assert!(
            reserved_memory(&bad)
                .unwrap_err()
                .starts_with("ECS_RESERVED_MEMORY")
        );
        assert_eq!(parse_attribute("gpu").unwrap(), ("gpu".to_string(), None));
        assert_eq!(
            parse_attribute("zone=a=b").unwrap(),
            ("zone".to_string(), Some("a=b".to_string()))
        );
        assert!(parse_attribute("=x").is_err());
    }
}
