//! How the control plane is set up.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// How the control plane is set up.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Where `state.db` and `logs.db` live.
    pub data_dir: PathBuf,
    /// The region of objects made before any request named one (the
    /// default cluster, the local instance). Default: `us-east-1`.
    pub region: String,
    /// The cluster the local container instance joins (made if it does
    /// not exist). Default: `default`.
    pub cluster: String,
    /// Access key → secret. Empty: any signature is accepted (and the API
    /// must listen on loopback only).
    pub credentials: HashMap<String, String>,
    /// Where images named without a registry host are pulled from (skiff's
    /// own registry). Default: `127.0.0.1:5050`.
    pub default_registry: String,
    /// The local container instance's CPU units. Default: cores × 1024.
    pub agent_cpu: Option<u32>,
    /// The local container instance's memory in MiB. Default: what the
    /// machine has available at start.
    pub agent_memory: Option<u32>,
    /// The containers the local instance may run at once (the `WASM_SLOTS`
    /// it registers): its runtime's instance slots, less those kept for
    /// HTTP requests and health checks. Default: not counted.
    pub agent_slots: Option<u32>,
    /// The most memory (MiB) the local agent's runtime gives one container,
    /// if less than 4 GiB: placed tasks must fit it.
    pub agent_max_container_memory: Option<u32>,
    /// Host ports the local instance reserves (the API's, the registry's).
    pub reserved_ports: Vec<u16>,
    /// How long a STOPPED task stays describable. Default: 1 hour (ECS
    /// keeps them at least that long).
    pub stopped_task_retention: Duration,
    /// Where load balancers' listeners bind. Default: 127.0.0.1, which a
    /// task cannot reach (its 127.0.0.1 is itself): give another loopback
    /// address for tasks to call load balancers.
    pub lb_address: std::net::Ipv4Addr,
    /// How long an agent on another machine may be silent (no frame, not
    /// even a heartbeat, which it sends every second) before its instance
    /// is taken for lost: disconnected, its tasks recorded STOPPED and a
    /// service's replaced elsewhere. Default: 5 s.
    pub agent_timeout: Duration,
    /// The local instance in the mesh, when other machines' tasks are to
    /// reach this machine's: its task address block (`127.18.0.0/16`) and
    /// where its mesh listener is reached (`IP:PORT`). Default: neither.
    pub local_mesh: Option<(String, String)>,
    /// The account id in every ARN and owner field (twelve digits).
    /// Default: `000000000000`.
    pub account_id: String,
    /// Where ECR replication destinations are: `REGION/ACCOUNT` → the
    /// registry (`HOST:PORT`) of the skiff serving that region and
    /// account. A replication rule may only name destinations here.
    /// Default: none.
    pub replication_peers: std::collections::BTreeMap<String, String>,
}

impl ControlConfig {
    /// Defaults, with state under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ControlConfig {
            data_dir: data_dir.into(),
            region: "us-east-1".into(),
            cluster: "default".into(),
            credentials: HashMap::new(),
            default_registry: "127.0.0.1:5050".into(),
            agent_cpu: None,
            agent_memory: None,
            agent_slots: None,
            agent_max_container_memory: None,
            reserved_ports: Vec::new(),
            stopped_task_retention: Duration::from_secs(3600),
            lb_address: std::net::Ipv4Addr::LOCALHOST,
            agent_timeout: Duration::from_secs(5),
            local_mesh: None,
            account_id: crate::core::model::DEFAULT_ACCOUNT.into(),
            replication_peers: Default::default(),
        }
    }
}
