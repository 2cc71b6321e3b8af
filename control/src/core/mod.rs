//! The cluster's core: the ECS objects and their rules, the durable state
//! and its store, task placement, launching and stopping tasks, the agents'
//! reports, and the service scheduler. It knows no wire format: the API
//! layer (`crate::api`) parses requests into calls here and shapes the
//! answers; here are objects, state changes and errors.

pub(crate) mod account;
pub mod agent_keys;
pub(crate) mod agents;
pub(crate) mod capacity;
pub(crate) mod clusters;
pub(crate) mod config;
pub(crate) mod discovery;
pub(crate) mod ecr;
pub(crate) mod filter_pattern;
pub(crate) mod instances;
pub(crate) mod lb_metrics;
pub(crate) mod lifecycle;
pub(crate) mod logs;
pub(crate) mod metrics;
pub mod model;
pub mod placement;
pub(crate) mod remote;
pub(crate) mod reports;
pub(crate) mod security_groups;
pub(crate) mod services;
pub(crate) mod state;
pub mod store;
pub(crate) mod task_metrics;
pub mod task_size;
pub mod taskdef;
pub(crate) mod tasks;

use crate::core::agents::Agents;
use crate::core::config::ControlConfig;
use crate::core::logs::LogStore;
use crate::core::state::State;
use crate::core::store::StateStore;
use crate::plane::elb::Plane;
use skiff_channel::fabric::Fabric;
use std::sync::{Arc, Mutex};

/// The local instance's `ec2InstanceId`.
pub(crate) const LOCAL_INSTANCE_ID: &str = "i-skiff-local";

/// The control plane's core: what every operation and every loop works
/// on. One per process, shared (`Arc`).
pub(crate) struct Core {
    pub(crate) config: ControlConfig,
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) state: tokio::sync::Mutex<State>,
    pub(crate) logs: LogStore,
    /// The agents, each reached through its channel.
    pub(crate) agents: Arc<Agents>,
    /// The secret agents present to each other's mesh listeners.
    pub(crate) mesh_token: String,
    /// Keys that sign only agents' calls (`skiff agent-keys`).
    pub(crate) agent_keys: agent_keys::AgentKeys,
    pub(crate) rng: Mutex<placement::Rng>,
    /// Set by `shutdown`: no new tasks start.
    pub(crate) shutting_down: std::sync::atomic::AtomicBool,
    /// Wakes the service scheduler: a task, service or instance changed.
    pub(crate) wake: Arc<services::Wake>,
    /// Security groups and task memberships, as task sockets see them.
    pub(crate) fabric: Arc<Fabric>,
    /// The load balancers, running.
    pub(crate) elb: Arc<Plane>,
    /// What CloudWatch's API reads: the load balancers' metrics and the
    /// services' utilization.
    pub(crate) metrics: metrics::Metrics,
    /// The agents' last usage sample of each task they run.
    pub(crate) usage_samples: task_metrics::Samples,
    /// Held while this process uses the data dir.
    _lock: std::fs::File,
}
