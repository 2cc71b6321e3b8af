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

mod api;
mod core;
pub mod error;
mod plane;

pub use crate::api::catalog;
pub use crate::api::protocol::sigv4;
pub use crate::core::{agent_keys, placement, store};
pub use crate::plane::elb::TASK_FRONT;
pub use error::ApiError;

use crate::api::Api;
use crate::core::Core;
use skiff_channel::fabric::Fabric;
use skiff_channel::link::ControlEnd;
use std::sync::Arc;
use std::time::Duration;

pub use crate::api::QueryService;
pub use crate::core::config::ControlConfig;
pub use crate::core::lifecycle::machine_size;

/// The control plane. Cheap to clone.
#[derive(Clone)]
pub struct ControlPlane {
    api: Arc<Api>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("config", &self.api.core.config)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Opens the state store, rebuilds the state, registers the local
    /// container instance in its cluster (`config.cluster`), and records
    /// every task the last process had as stopped (none starts twice).
    ///
    /// `local` is the channel to this process's agent, which the local
    /// instance is: task payloads sent before the agent starts wait in it.
    pub async fn start(config: ControlConfig, local: ControlEnd) -> Result<ControlPlane, ApiError> {
        let core = Core::start(config, local).await?;
        let api = Arc::new(Api::new(core));
        tokio::spawn(api::ecr_replication::ecr_loop(Arc::downgrade(&api)));
        tokio::spawn(api::ecs_express::express_loop(Arc::downgrade(&api)));
        Ok(ControlPlane { api })
    }

    /// Serves the API on `listener` until `shutdown` resolves, then
    /// finishes the requests in flight (up to 30 seconds).
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        api::http::serve(&self.api, listener, shutdown).await
    }

    /// Stops every task on the local agent (their containers end with this
    /// process) and waits, up to `within`, until each is recorded STOPPED.
    pub async fn shutdown(&self, within: Duration) {
        self.api.core.shutdown(within).await;
    }

    /// Serves the ECR API from `registry` (the one at
    /// `config.default_registry`). Once; later calls change nothing.
    pub fn attach_registry(&self, registry: skiff_registry::Registry) {
        let _ = self.api.registry.set(registry);
    }

    /// Records what the tasks of this process's agent (the local
    /// instance) have used: CloudWatch's `AWS/ECS` utilization.
    pub async fn record_local_usage(&self, report: skiff_channel::messages::UsageReport) {
        let core = &self.api.core;
        core.record_usage(&core.agents.local, report).await;
    }

    /// The configuration.
    pub fn config(&self) -> &ControlConfig {
        &self.api.core.config
    }

    /// The network fabric: the security groups' rules and the names the
    /// control plane keeps there, for its agents' task sockets.
    pub fn fabric(&self) -> Arc<Fabric> {
        Arc::clone(&self.api.core.fabric)
    }

    /// The secret agents' mesh listeners take connections with.
    pub fn mesh_token(&self) -> String {
        self.api.core.mesh_token.clone()
    }

    /// Where agents write their containers' awslogs output: this control
    /// plane's CloudWatch Logs.
    pub fn log_destination(&self) -> Arc<dyn skiff_channel::logs::LogDestination> {
        Arc::new(self.api.core.logs.clone())
    }
}
