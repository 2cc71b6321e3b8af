//! skiff's control plane: the ECS objects (clusters, container instances,
//! task definitions, tasks), their durable state, task placement, the
//! services' scheduler, and the AWS-shaped API that the AWS CLI and SDKs
//! speak to (ECS and CloudWatch Logs, AWS JSON 1.1, SigV4). Tasks run on
//! agents (`skiff-agent`), reached only through their channel
//! (`skiff_channel`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use skiff_control::{ControlConfig, ControlPlane};
//! let (control_end, agent_end) = skiff_channel::link::in_process();
//! let control = ControlPlane::start(ControlConfig::new("/var/lib/skiff"), control_end).await?;
//! // ... start an agent (`skiff_agent::Agent::start`) on `agent_end`, with
//! // `control.fabric()` and `control.log_destination()`.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7700").await?;
//! control.serve(listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```

mod agents;
pub mod api;
pub mod discovery;
pub mod ec2;
mod ecr;
mod ecs;
pub mod elb;
pub mod error;
pub mod logs;
pub mod metrics;
pub mod model;
pub mod placement;
pub mod query;
pub mod services;
pub mod sigv4;
mod state;
pub mod store;
pub mod taskdef;

pub use error::ApiError;

use crate::agents::Agents;
use crate::logs::LogStore;
use crate::model::{Task, now};
use crate::state::{State, Write};
use crate::store::{SqliteStore, StateStore};
use skiff_channel::fabric::Fabric;
use skiff_channel::link::ControlEnd;
use skiff_channel::messages::FromAgent;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

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
    /// Host ports the local instance reserves (the API's, the registry's).
    pub reserved_ports: Vec<u16>,
    /// How long a STOPPED task stays describable. Default: 1 hour (ECS
    /// keeps them at least that long).
    pub stopped_task_retention: Duration,
    /// Where load balancers' listeners bind. Default: 127.0.0.1, which a
    /// task cannot reach (its 127.0.0.1 is itself): give another loopback
    /// address for tasks to call load balancers.
    pub lb_address: std::net::Ipv4Addr,
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
            reserved_ports: Vec::new(),
            stopped_task_retention: Duration::from_secs(3600),
            lb_address: std::net::Ipv4Addr::LOCALHOST,
        }
    }
}

/// The services answered in the Query protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryService {
    Ec2,
    Elbv2,
}

impl QueryService {
    /// Which service a request is for: by its signature's scope, else by
    /// the API version it names.
    pub fn of(signed_for: Option<&str>, version: Option<&str>) -> Option<QueryService> {
        match (signed_for, version) {
            (Some("ec2"), _) | (None, Some("2016-11-15")) => Some(QueryService::Ec2),
            (Some("elasticloadbalancing"), _) | (None, Some("2015-12-01")) => {
                Some(QueryService::Elbv2)
            }
            _ => None,
        }
    }

    /// How its errors look.
    pub fn flavor(self) -> query::Flavor {
        match self {
            QueryService::Ec2 => query::Flavor::Ec2,
            QueryService::Elbv2 => query::Flavor::Query,
        }
    }
}

/// The control plane. Cheap to clone.
#[derive(Clone)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: ControlConfig,
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) state: tokio::sync::Mutex<State>,
    pub(crate) logs: LogStore,
    /// The agents, each reached through its channel.
    pub(crate) agents: Arc<Agents>,
    pub(crate) rng: Mutex<placement::Rng>,
    /// Set by `shutdown`: no new tasks start.
    pub(crate) shutting_down: std::sync::atomic::AtomicBool,
    /// The registry `skiff serve` runs beside the API, for the ECR
    /// operations (set once, by `attach_registry`).
    pub(crate) registry: std::sync::OnceLock<skiff_registry::Registry>,
    /// ECR lifecycle policy previews started, by repository.
    pub(crate) ecr_previews: ecr::Previews,
    /// Wakes the service scheduler: a task, service or instance changed.
    pub(crate) wake: Arc<tokio::sync::Notify>,
    /// Security groups and task memberships, as task sockets see them.
    pub(crate) fabric: Arc<Fabric>,
    /// The load balancers, running.
    pub(crate) elb: Arc<elb::plane::Plane>,
    /// What CloudWatch's API reads: the load balancers' metrics.
    pub(crate) metrics: metrics::Metrics,
    /// Held while this process uses the data dir.
    _lock: std::fs::File,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// CPU cores and available memory (MiB) of this machine.
fn machine_size() -> (u32, u32) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let available_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .unwrap_or(1 << 20);
    (
        cores,
        (available_kib / 1024).min(u64::from(u32::MAX)) as u32,
    )
}

impl ControlPlane {
    /// Opens the state store, rebuilds the state, registers the local
    /// container instance in its cluster (`config.cluster`), and resumes: tasks placed
    /// here that had not started start now, tasks that were running when
    /// skiff last stopped are recorded as stopped.
    ///
    /// `local` is the channel to this process's agent, which the local
    /// instance is: task payloads sent before the agent starts wait in it.
    pub async fn start(config: ControlConfig, local: ControlEnd) -> Result<ControlPlane, ApiError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            ApiError::server(format!("cannot create {}: {e}", config.data_dir.display()))
        })?;
        // One control plane per data dir: a second would fight over the
        // store's revisions and run every task twice.
        let lock_path = config.data_dir.join("serve.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| ApiError::server(format!("cannot open {}: {e}", lock_path.display())))?;
        if lock.try_lock().is_err() {
            return Err(ApiError::server(format!(
                "another skiff serve is using {}",
                config.data_dir.display()
            )));
        }
        ecs::check_cluster_name(&config.cluster).map_err(|e| {
            ApiError::client(format!("the local instance's cluster: {}", e.message))
        })?;
        let store: Arc<dyn StateStore> =
            Arc::new(SqliteStore::open(&config.data_dir.join("state.db"))?);
        let logs = LogStore::open(&config.data_dir.join("logs.db"))?;
        let mut state = State::load(store.as_ref()).await?;

        // The default cluster, the local instance's, and the instance.
        let region = config.region.clone();
        let mut writes = Vec::new();
        let mut clusters = vec!["default"];
        if config.cluster != "default" {
            clusters.push(&config.cluster);
        }
        for name in clusters {
            if state
                .clusters
                .get(name)
                .is_none_or(|c| c.value.status != "ACTIVE")
            {
                writes.push(Write::Cluster(ecs::new_cluster(name, &region, Vec::new())));
            }
        }
        let (cores, memory) = machine_size();
        let cpu = config.agent_cpu.unwrap_or(cores * 1024);
        let memory = config.agent_memory.unwrap_or(memory);
        let mut existing = state
            .instances
            .values()
            .find(|i| {
                i.value.ec2_instance_id.as_deref() == Some(LOCAL_INSTANCE_ID)
                    && i.value.status != "INACTIVE"
            })
            .map(|i| i.value.clone());
        if let Some(mut moved) = existing.take_if(|i| i.cluster != config.cluster) {
            // An instance is in one cluster: joining another, it leaves
            // the old one (what ran on it is recorded stopped by resume).
            moved.status = "INACTIVE".into();
            moved.agent_connected = false;
            moved.offers_fargate = false;
            moved.deregistered_at = Some(now());
            moved.version += 1;
            writes.push(Write::Instance(moved));
        }
        let instance = ecs::local_instance(
            existing,
            &region,
            &config.cluster,
            cpu,
            memory,
            &config.reserved_ports,
        );
        let instance_arn = instance.container_instance_arn.clone();
        writes.push(Write::Instance(instance));
        writes.extend(ec2::ensure_default(&state));
        state.apply(store.as_ref(), writes).await?;
        // The security groups' rules, where task sockets consult them.
        let fabric = Arc::new(Fabric::default());
        for g in state.security_groups.values() {
            fabric.set_group(&g.value.group_id, &g.value.ingress, &g.value.egress);
        }
        discovery::refresh(&state, &fabric);
        let elb = elb::plane::Plane::new(Arc::clone(&fabric));
        elb.sync(&state.elb);

        let ControlEnd {
            to_agent,
            from_agent,
        } = local;
        let control = ControlPlane {
            inner: Arc::new(Inner {
                config,
                store,
                state: tokio::sync::Mutex::new(state),
                logs,
                agents: Arc::new(Agents::new(instance_arn, to_agent)),
                rng: Mutex::new(placement::Rng::from_entropy()),
                shutting_down: std::sync::atomic::AtomicBool::new(false),
                registry: std::sync::OnceLock::new(),
                ecr_previews: Default::default(),
                wake: Arc::new(tokio::sync::Notify::new()),
                fabric,
                elb,
                metrics: metrics::Metrics::default(),
                _lock: lock,
            }),
        };
        control.resume().await?;
        tokio::spawn(report_loop(Arc::clone(&control.inner), from_agent));
        tokio::spawn(retention_loop(Arc::downgrade(&control.inner)));
        tokio::spawn(metrics_loop(Arc::downgrade(&control.inner)));
        tokio::spawn(services::scheduler_loop(Arc::downgrade(&control.inner)));
        Ok(control)
    }

    /// Level-triggered: makes the agent's work match the store.
    async fn resume(&self) -> Result<(), ApiError> {
        let inner = &self.inner;
        let mut state = inner.state.lock().await;
        let mut writes = Vec::new();
        let mut to_start = Vec::new();
        // This machine's instance, and those it was before it joined
        // another cluster.
        let local: std::collections::HashSet<&str> = state
            .instances
            .values()
            .filter(|i| i.value.ec2_instance_id.as_deref() == Some(LOCAL_INSTANCE_ID))
            .map(|i| i.value.container_instance_arn.as_str())
            .collect();
        for t in state.tasks.values() {
            let t = &t.value;
            if t.runs_on().is_none_or(|i| !local.contains(i)) || t.last_status == "STOPPED" {
                continue;
            }
            let never_started = matches!(t.last_status.as_str(), "PROVISIONING" | "PENDING");
            let here = t.runs_on() == Some(&inner.agents.local);
            if t.desired_status == "RUNNING" && never_started && here {
                to_start.push(t.clone());
            } else {
                // It was running (or stopping) in a process that is gone.
                let mut t = t.clone();
                let at = now();
                t.last_status = "STOPPED".into();
                t.desired_status = "STOPPED".into();
                if t.stop_code.is_none() {
                    t.stop_code = Some("TerminationNotice".into());
                    t.stopped_reason = Some(
                        "skiff serve stopped while the task ran; its containers ended with it"
                            .into(),
                    );
                }
                t.stopping_at.get_or_insert(at);
                t.execution_stopped_at.get_or_insert(at);
                t.stopped_at = Some(at);
                for c in &mut t.containers {
                    if c.last_status != "STOPPED" {
                        c.last_status = "STOPPED".into();
                    }
                }
                t.version += 1;
                writes.push(Write::Task(t));
            }
        }
        state.apply(inner.store.as_ref(), writes).await?;
        for t in to_start {
            if let Some(td) = ecs::taskdef_of(&state, &t.task_definition_arn) {
                inner.agents.start(&t, &td);
            }
        }
        Ok(())
    }

    /// Handles one AWS JSON 1.1 request: `target` is the `X-Amz-Target`
    /// header, `region` the request's signing region.
    pub async fn handle(
        &self,
        target: &str,
        body: &serde_json::Value,
        region: &str,
    ) -> Result<serde_json::Value, ApiError> {
        if let Some(op) = target.strip_prefix("AmazonEC2ContainerServiceV20141113.") {
            return ecs::handle(&self.inner, op, body, region).await;
        }
        if let Some(op) = target.strip_prefix("AmazonEC2ContainerRegistry_V20150921.") {
            return ecr::handle(&self.inner, op, body, region).await;
        }
        if let Some(op) = target.strip_prefix("Route53AutoNaming_v20170314.") {
            return discovery::handle(&self.inner, op, body, region).await;
        }
        if let Some(op) = target.strip_prefix(CLOUDWATCH_TARGET) {
            // The counts up to this moment, not the last tick's.
            elb::measure(&self.inner.elb, &self.inner.metrics, false);
            return self.inner.metrics.handle(op, body);
        }
        if let Some(op) = target.strip_prefix("Logs_20140328.") {
            let logs = self.inner.logs.clone();
            let (op, body, region) = (op.to_string(), body.clone(), region.to_string());
            return tokio::task::spawn_blocking(move || logs.handle(&op, &body, &region))
                .await
                .map_err(|e| ApiError::server(format!("the logs worker failed: {e}")))?;
        }
        Err(ApiError::unknown_operation(target))
    }

    /// Handles a Query-protocol request (EC2 security groups) and returns
    /// its XML answer.
    pub async fn handle_query(
        &self,
        service: QueryService,
        params: &query::Params,
        region: &str,
    ) -> Result<String, ApiError> {
        let action = params.required("Action")?;
        match service {
            QueryService::Ec2 => ec2::handle(&self.inner, action, params, region).await,
            QueryService::Elbv2 => elb::handle(&self.inner, action, params, region).await,
        }
    }

    /// Stops every task on the local agent (their containers end with this
    /// process) and waits, up to `within`, until each is recorded STOPPED.
    pub async fn shutdown(&self, within: Duration) {
        self.inner
            .shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let local = self.inner.agents.local.as_str();
        let arns: Vec<String> = {
            let mut state = self.inner.state.lock().await;
            let mut writes = Vec::new();
            for t in state.tasks.values() {
                let t = &t.value;
                if t.runs_on() == Some(local) && t.last_status != "STOPPED" {
                    let mut t = t.clone();
                    if t.desired_status != "STOPPED" {
                        t.desired_status = "STOPPED".into();
                        t.stop_code = Some("TerminationNotice".into());
                        t.stopped_reason = Some("skiff serve shut down".into());
                        t.stopping_at = Some(now());
                        t.version += 1;
                        writes.push(Write::Task(t));
                    }
                }
            }
            let arns = writes
                .iter()
                .filter_map(|w| match w {
                    Write::Task(t) => Some(t.task_arn.clone()),
                    _ => None,
                })
                .collect();
            if let Err(e) = state.apply(self.inner.store.as_ref(), writes).await {
                tracing::warn!("cannot record the shutdown's task stops: {e}");
            }
            arns
        };
        for arn in &arns {
            self.inner.agents.stop(Some(local), arn);
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let pending = {
                let state = self.inner.state.lock().await;
                state
                    .tasks
                    .values()
                    .any(|t| t.value.runs_on() == Some(local) && self.inner.agents.have(&t.value))
            };
            if !pending || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Serves the ECR API from `registry` (the one at
    /// `config.default_registry`). Once; later calls change nothing.
    pub fn attach_registry(&self, registry: skiff_registry::Registry) {
        let _ = self.inner.registry.set(registry);
    }

    /// The configuration.
    pub fn config(&self) -> &ControlConfig {
        &self.inner.config
    }

    /// The network fabric: the security groups' rules and the names the
    /// control plane keeps there, for its agents' task sockets.
    pub fn fabric(&self) -> Arc<Fabric> {
        Arc::clone(&self.inner.fabric)
    }

    /// Where agents write their containers' awslogs output: this control
    /// plane's CloudWatch Logs.
    pub fn log_destination(&self) -> Arc<dyn skiff_channel::logs::LogDestination> {
        Arc::new(self.inner.logs.clone())
    }
}

/// The local instance's `ec2InstanceId`.
pub(crate) const LOCAL_INSTANCE_ID: &str = "i-skiff-local";

/// Applies the agents' state changes, in order, batching whatever arrived
/// together into one store transaction.
/// A batch the store refused is kept and tried again: a report is never
/// dropped, or a task could stay short of STOPPED forever.
async fn report_loop(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<FromAgent>) {
    let mut batch = Vec::new();
    while !batch.is_empty() || rx.recv_many(&mut batch, 1024).await > 0 {
        // Whatever else has arrived joins this batch.
        while let Ok(r) = rx.try_recv() {
            batch.push(r);
        }
        let mut state = inner.state.lock().await;
        let mut changed: HashMap<String, Task> = HashMap::new();
        for change in &batch {
            let id = model::name_of(change.task_arn()).to_string();
            let Some(current) = changed
                .get(&id)
                .cloned()
                .or_else(|| state.tasks.get(&id).map(|t| t.value.clone()))
            else {
                continue;
            };
            changed.insert(id, ecs::apply_change(current, change.clone()));
        }
        let writes = changed.into_values().map(Write::Task).collect();
        match state.apply(inner.store.as_ref(), writes).await {
            Ok(()) => {
                batch.clear();
                // Discovered names follow their tasks.
                if !state.discovery.services.is_empty() {
                    discovery::refresh(&state, &inner.fabric);
                }
                // Services see their tasks' new states.
                inner.wake.notify_one();
            }
            Err(e) => {
                drop(state);
                tracing::error!("cannot record task state changes, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// What has been gone since before `cutoff` and can be forgotten: STOPPED
/// tasks, and deregistered container instances; and task definitions whose
/// deletion was asked for, once no task or service uses them.
fn forgettable(state: &State, cutoff: f64) -> Vec<Write> {
    let mut writes: Vec<Write> = state
        .tasks
        .values()
        .filter(|t| t.value.last_status == "STOPPED")
        .filter(|t| t.value.stopped_at.is_some_and(|s| s < cutoff))
        .map(|t| Write::RemoveTask(t.value.id().to_string()))
        .collect();
    writes.extend(
        state
            .instances
            .values()
            .filter(|i| i.value.status == "INACTIVE")
            .filter(|i| i.value.deregistered_at.is_some_and(|d| d < cutoff))
            .map(|i| Write::RemoveInstance(i.value.container_instance_arn.clone())),
    );
    let in_use = |arn: &str| {
        state
            .tasks
            .values()
            .any(|t| t.value.task_definition_arn == arn && t.value.last_status != "STOPPED")
            || state.services.values().any(|s| {
                s.value.status != "INACTIVE"
                    && s.value.deployments.iter().any(|d| d.task_definition == arn)
            })
    };
    writes.extend(
        state
            .taskdefs
            .values()
            .flat_map(|revs| revs.values())
            .filter(|td| td.value.status == "DELETE_IN_PROGRESS")
            .filter(|td| !in_use(&td.value.task_definition_arn))
            .map(|td| {
                let mut gone = td.value.clone();
                gone.status = ecs::DELETED.into();
                Write::TaskDef(gone)
            }),
    );
    writes
}

/// Forgets STOPPED tasks once they have been stopped for the retention
/// period, and deregistered container instances as long after they left.
/// CloudWatch's `X-Amz-Target` prefix.
pub(crate) const CLOUDWATCH_TARGET: &str = "GraniteServiceVersion20100801.";

/// How often the load balancers' metrics are read.
const METRICS_EVERY: Duration = Duration::from_secs(10);

/// Reads the load balancers' metrics every [`METRICS_EVERY`].
async fn metrics_loop(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(METRICS_EVERY);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        elb::measure(&inner.elb, &inner.metrics, true);
    }
}

async fn retention_loop(inner: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let Some(inner) = inner.upgrade() else { return };
        let cutoff = now() - inner.config.stopped_task_retention.as_secs_f64();
        let mut state = inner.state.lock().await;
        let writes = forgettable(&state, cutoff);
        if let Err(e) = state.apply(inner.store.as_ref(), writes).await {
            tracing::warn!("cannot forget old stopped tasks: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Entry;
    use serde_json::json;

    #[test]
    fn what_left_before_the_cutoff_is_forgotten_and_nothing_else() {
        let task = |id: &str, status: &str, stopped: Option<f64>| -> Task {
            serde_json::from_value(json!({
                "taskArn": format!("arn:aws:ecs:r:0:task/default/{id}"), "clusterArn": "c",
                "taskDefinitionArn": "td:1", "overrides": {}, "lastStatus": status,
                "desiredStatus": status, "cpu": "0", "memory": "8", "containers": [],
                "launchType": "EC2", "version": 1, "createdAt": 1.0, "stoppedAt": stopped,
            }))
            .unwrap()
        };
        let instance = |arn: &str, status: &str, gone: Option<f64>| -> model::ContainerInstance {
            serde_json::from_value(json!({
                "containerInstanceArn": arn, "version": 1, "versionInfo": {}, "status": status,
                "agentConnected": false, "registeredResources": [], "remainingResources": [],
                "runningTasksCount": 0, "pendingTasksCount": 0, "attributes": [],
                "registeredAt": 1.0, "deregisteredAt": gone,
            }))
            .unwrap()
        };
        let mut state = State::default();
        for t in [
            task("old", "STOPPED", Some(10.0)),
            task("recent", "STOPPED", Some(100.0)),
            task("running", "RUNNING", None),
        ] {
            state.tasks.insert(
                t.id().to_string(),
                Entry {
                    value: t,
                    revision: 1,
                },
            );
        }
        for i in [
            instance("ci/gone", "INACTIVE", Some(10.0)),
            instance("ci/just-gone", "INACTIVE", Some(100.0)),
            instance("ci/active", "ACTIVE", None),
        ] {
            state.instances.insert(
                i.container_instance_arn.clone(),
                Entry {
                    value: i,
                    revision: 1,
                },
            );
        }
        let forgotten: Vec<String> = forgettable(&state, 50.0)
            .into_iter()
            .map(|w| match w {
                Write::RemoveTask(id) => format!("task {id}"),
                Write::RemoveInstance(arn) => format!("instance {arn}"),
                _ => "something else".into(),
            })
            .collect();
        assert_eq!(forgotten, ["task old", "instance ci/gone"]);

        // A definition whose deletion was asked for goes once nothing
        // running uses it.
        let def = |rev: u32| {
            let mut td = taskdef::parse_register(&json!({"family": "web", "networkMode": "none",
                "containerDefinitions": [{"name": "a", "image": "x", "memory": 8}]}))
            .unwrap();
            td.revision = rev;
            td.task_definition_arn = format!("arn:aws:ecs:r:0:task-definition/web:{rev}");
            td.status = "DELETE_IN_PROGRESS".into();
            td
        };
        for rev in [1, 2] {
            state.taskdefs.entry("web".into()).or_default().insert(
                rev,
                Entry {
                    value: def(rev),
                    revision: 1,
                },
            );
        }
        let mut user = task("user", "RUNNING", None);
        user.task_definition_arn = "arn:aws:ecs:r:0:task-definition/web:2".into();
        state.tasks.insert(
            "user".into(),
            Entry {
                value: user,
                revision: 1,
            },
        );
        let gone: Vec<(u32, String)> = forgettable(&state, 50.0)
            .into_iter()
            .filter_map(|w| match w {
                Write::TaskDef(td) => Some((td.revision, td.status)),
                _ => None,
            })
            .collect();
        assert_eq!(gone, [(1, ecs::DELETED.to_string())]);
    }
}
