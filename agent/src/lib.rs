//! The agent: one container instance's worker, as ECS's agent is. It takes
//! task payloads from the control plane through its channel
//! ([`skiff_channel::link::AgentEnd`]), runs each task on `skiff-runtime`,
//! pulling its images with `skiff-registry`, and reports every state change
//! back in ECS's shapes. It knows nothing of the control plane's insides.
//!
//! - [`runner`](crate::runner): one task's life, PROVISIONING → PENDING →
//!   ACTIVATING → RUNNING → DEACTIVATING → STOPPING → DEPROVISIONING →
//!   STOPPED, and what it reports at each step.
//! - `images`: pulls and compiles the containers' images (and keeps
//!   recently started ones compiled).
//! - `resources/`: one module per task resource, each provisioning its
//!   piece before the containers start and cleaning it up after:
//!   `network` (the task's address, its ENI attachment, its socket policy),
//!   `ports` (bridge host ports), `volumes` (and task scratch), `logs`
//!   (awslogs streams), `health` (container health checks).
//! - `spec`: a container's sandbox — argv, environment, mounts, memory and
//!   CPU limits — from its definition and the task's overrides.
//! - `supervise`: starts the containers in `dependsOn` order and watches
//!   them until the task stops.
//!
//! ```no_run
//! # async fn demo(runtime: skiff_runtime::Runtime,
//! #               puller: std::sync::Arc<skiff_registry::images::Puller>,
//! #               logs: std::sync::Arc<dyn skiff_channel::logs::LogDestination>)
//! #               -> Result<(), Box<dyn std::error::Error>> {
//! use skiff_agent::{Agent, AgentConfig};
//! let (control_end, agent_end) = skiff_channel::link::in_process();
//! let fabric = std::sync::Arc::new(skiff_channel::fabric::Fabric::default());
//! let agent = Agent::start(AgentConfig::new("/var/lib/skiff"), runtime, puller, fabric, logs, agent_end)?;
//! // ... hand `control_end` to the control plane; the agent runs what it sends.
//! # Ok(()) }
//! ```

mod images;
pub mod join;
pub mod mesh;
mod resources;
mod runner;
mod spec;
mod supervise;

use skiff_channel::fabric::Fabric;
use skiff_channel::link::AgentEnd;
use skiff_channel::logs::LogDestination;
use skiff_channel::messages::{FromAgent, StartTask, TaskUsage, ToAgent, UsageReport};
use skiff_registry::images::{PullBehavior, Puller};
use skiff_runtime::Runtime;
use skiff_runtime::addresses::{AddressBlock, AddressPool};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// How an agent is set up.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where task scratch space lives (`tasks/ID`).
    pub data_dir: PathBuf,
    /// Where images named without a registry host (`hello:v1`) are pulled
    /// from: skiff's own registry. Default: `127.0.0.1:5050`.
    pub default_registry: String,
    /// Where awsvpc and bridge tasks get their loopback addresses.
    /// Default: 127.18.0.0/16.
    pub task_addresses: AddressBlock,
    /// How long pulling (and compiling) one container's image may take
    /// before the task fails with `CannotPullContainerError` (ECS's
    /// `ECS_IMAGE_PULL_TIMEOUT`). Default: 10 minutes. How long a registry
    /// may send nothing is the puller's (`RemoteOptions::read_timeout`).
    pub image_pull_timeout: std::time::Duration,
    /// Whether a task's image is pulled again when the agent holds it
    /// (ECS's `ECS_IMAGE_PULL_BEHAVIOR`). Default: `default`, which asks
    /// the registry what a tag names at every start.
    pub image_pull_behavior: PullBehavior,
    /// How long a container without a `stopTimeout` has to exit after it is
    /// asked to stop (ECS's `ECS_CONTAINER_STOP_TIMEOUT`). Default: 30 s.
    pub default_stop_timeout: std::time::Duration,
    /// How long a stopped task's scratch space is kept (ECS's
    /// `ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION`). Default: none.
    pub task_cleanup_wait: std::time::Duration,
    /// Where bridge tasks' host ports are published: the host's own
    /// address (as ECS publishes them). Default: 127.0.0.1 (`skiff
    /// serve`'s machine); `skiff agent` publishes on the address other
    /// machines reach it at.
    pub publish_address: std::net::Ipv4Addr,
}

impl AgentConfig {
    /// Defaults, with task scratch space under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        AgentConfig {
            data_dir: data_dir.into(),
            default_registry: "127.0.0.1:5050".into(),
            task_addresses: AddressBlock::default(),
            image_pull_timeout: std::time::Duration::from_secs(600),
            image_pull_behavior: PullBehavior::Default,
            default_stop_timeout: std::time::Duration::from_secs(30),
            task_cleanup_wait: std::time::Duration::ZERO,
            publish_address: std::net::Ipv4Addr::LOCALHOST,
        }
    }
}

/// A running agent. Dropping it changes nothing: it runs until its channel
/// closes.
#[derive(Debug, Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

/// What every task runner of the agent shares.
pub(crate) struct Inner {
    pub(crate) config: AgentConfig,
    pub(crate) runtime: Runtime,
    pub(crate) images: images::Images,
    pub(crate) logs: Arc<dyn LogDestination>,
    /// Where awsvpc and bridge tasks lease their addresses (or why they
    /// cannot).
    pub(crate) addresses: Result<Arc<AddressPool>, String>,
    /// Security groups and memberships, for task socket policies.
    pub(crate) fabric: Arc<Fabric>,
    /// State changes to the control plane.
    pub(crate) reports: mpsc::UnboundedSender<FromAgent>,
    /// The tasks running (or starting) here, by ARN.
    running: Mutex<HashMap<String, Running>>,
    /// The tasks that ran here and ended: a payload for one of them again
    /// (a control plane's retry, a replayed message) does not run it twice.
    ended: Mutex<Ended>,
    /// Held while this agent uses its data dir: two agents on one would
    /// be one instance twice, each stopping what the other started.
    _lock: std::fs::File,
}

/// A task running (or starting) here.
struct Running {
    stop: watch::Sender<bool>,
    /// What its containers use, as they start.
    meters: runner::Meters,
}

/// How long, and how many, ended tasks are remembered: as long as a
/// control plane keeps a STOPPED task (an hour by default), and no more
/// than this many.
const ENDED_KEPT_FOR: std::time::Duration = std::time::Duration::from_secs(3600);
const ENDED_KEPT_AT_MOST: usize = 100_000;

/// Ended tasks' ARNs, oldest first.
#[derive(Default)]
struct Ended {
    order: std::collections::VecDeque<(std::time::Instant, String)>,
    arns: std::collections::HashSet<String>,
}

impl Ended {
    fn insert(&mut self, arn: String) {
        let now = std::time::Instant::now();
        while let Some((at, old)) = self.order.front() {
            if self.order.len() < ENDED_KEPT_AT_MOST && now.duration_since(*at) < ENDED_KEPT_FOR {
                break;
            }
            self.arns.remove(old);
            self.order.pop_front();
        }
        if self.arns.insert(arn.clone()) {
            self.order.push_back((now, arn));
        }
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The agent could not start.
#[derive(Debug)]
pub struct StartError(String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

impl Agent {
    /// Starts an agent serving its end of a channel: it runs the tasks the
    /// control plane sends until the channel closes. Must be called inside
    /// a tokio runtime.
    pub fn start(
        config: AgentConfig,
        runtime: Runtime,
        puller: Arc<Puller>,
        fabric: Arc<Fabric>,
        logs: Arc<dyn LogDestination>,
        end: AgentEnd,
    ) -> Result<Agent, StartError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StartError(format!("cannot create {}: {e}", config.data_dir.display())))?;
        let lock_path = config.data_dir.join("agent.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StartError(format!("cannot open {}: {e}", lock_path.display())))?;
        if lock.try_lock().is_err() {
            return Err(StartError(format!(
                "another agent is using {} (one agent per data dir: give this one its own SKIFF_DATA_DIR)",
                config.data_dir.display()
            )));
        }
        // Without a lease directory, tasks with addresses of their own fail
        // to start (saying why); the others run.
        let addresses = AddressPool::new(config.task_addresses)
            .map(Arc::new)
            .map_err(|e| format!("cannot keep task address leases: {e}"));
        let inner = Arc::new(Inner {
            images: images::Images::new(
                runtime.clone(),
                puller,
                &config.default_registry,
                config.image_pull_behavior,
            ),
            config,
            runtime,
            logs,
            addresses,
            fabric,
            reports: end.to_control,
            running: Mutex::new(HashMap::new()),
            ended: Mutex::new(Ended::default()),
            _lock: lock,
        });
        tokio::spawn(serve_channel(Arc::clone(&inner), end.from_control));
        Ok(Agent { inner })
    }

    /// How it was set up.
    pub fn config(&self) -> &AgentConfig {
        &self.inner.config
    }

    /// What each task running here has used so far (its containers
    /// together), for [`UsageReport`]s.
    pub fn usage(&self) -> UsageReport {
        let Ok(running) = self.inner.running.lock() else {
            return UsageReport::default();
        };
        let tasks = running
            .iter()
            .map(|(arn, r)| {
                let mut usage = TaskUsage {
                    task_arn: arn.clone(),
                    ..TaskUsage::default()
                };
                for m in r.meters.lock().iter().flat_map(|m| m.iter()) {
                    let u = m.usage();
                    usage.cpu_nanos += u64::try_from(u.cpu_time.as_nanos()).unwrap_or(u64::MAX);
                    usage.memory_bytes += u.memory_bytes;
                }
                usage
            })
            .collect();
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        UsageReport { at, tasks }
    }

    /// The ARNs of the tasks running (or starting, or stopping) here.
    pub fn running_tasks(&self) -> Vec<String> {
        self.inner
            .running
            .lock()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// Takes the control plane's messages, in order, until the channel closes.
async fn serve_channel(inner: Arc<Inner>, mut from_control: mpsc::UnboundedReceiver<ToAgent>) {
    while let Some(message) = from_control.recv().await {
        match message {
            ToAgent::StartTask(payload) => inner.start(*payload),
            ToAgent::StopTask { task_arn } => inner.stop(&task_arn),
        }
    }
}

impl Inner {
    /// Starts a task in the background (nothing if it already runs here).
    fn start(self: &Arc<Self>, payload: StartTask) {
        let (tx, rx) = watch::channel(false);
        let meters = runner::Meters::default();
        {
            let Ok(mut running) = self.running.lock() else {
                return;
            };
            let arn = &payload.task.task_arn;
            let ended = self.ended.lock().is_ok_and(|e| e.arns.contains(arn));
            if running.contains_key(arn) || ended {
                // A task starts at most once.
                tracing::warn!(task = %arn, "a start for a task that already ran here: ignored");
                return;
            }
            running.insert(
                arn.clone(),
                Running {
                    stop: tx,
                    meters: meters.clone(),
                },
            );
        }
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            let arn = payload.task.task_arn.clone();
            runner::run(&inner, payload.task, payload.task_definition, rx, meters).await;
            // Its STOPPED is on its way: the task is no longer this agent's.
            // Remembered as ended first, so no start slips in between.
            if let Ok(mut ended) = inner.ended.lock() {
                ended.insert(arn.clone());
            }
            if let Ok(mut running) = inner.running.lock() {
                running.remove(&arn);
            }
        });
    }

    /// Asks a task to stop (nothing if it does not run here).
    fn stop(&self, task_arn: &str) {
        if let Ok(running) = self.running.lock()
            && let Some(r) = running.get(task_arn)
        {
            let _ = r.stop.send(true);
        }
    }
}
