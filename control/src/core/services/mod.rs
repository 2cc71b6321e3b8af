//! ECS services and the service scheduler.
//!
//! A service keeps `desiredCount` tasks of its task definition running
//! (REPLICA) or one task on every eligible container instance (DAEMON).
//! Each change of task definition is a deployment (`ecs-svc/…`); the task
//! of a deployment carries its id in `startedBy` and `service:NAME` as its
//! group, exactly as on ECS.
//!
//! The scheduler is level-triggered: every pass reads the service and its
//! tasks from the state (which is the store), decides what to start and
//! stop with [`decide`](decide::decide) — pure, so the deployment rules are unit-tested —
//! and commits the new tasks, the stops and the service's new record in one
//! transaction. Killing the process at any moment and starting again
//! therefore resumes from what was committed: nothing is started twice and
//! nothing is lost.

pub(crate) mod decide;
pub(crate) mod express;
pub(crate) mod reconcile;
pub(crate) mod task_sets;

pub(crate) use decide::{Action, World, decide, failure_threshold, live};
pub(crate) use reconcile::{
    Wake, daemon_instances, deregister_task, scheduler_loop, stop_after_draining,
};

use crate::core::Core;
use crate::core::model::{NetworkConfiguration, PlacementItem, Tag, Task, name_of};
use crate::core::placement;
use serde::{Deserialize, Serialize};

/// How many events a service keeps (ECS shows the latest 100).
pub(crate) const MAX_EVENTS: usize = 100;

/// The circuit breaker's switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker {
    pub enable: bool,
    pub rollback: bool,
}

/// A service's `deploymentConfiguration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentConfiguration {
    pub deployment_circuit_breaker: CircuitBreaker,
    pub maximum_percent: u32,
    pub minimum_healthy_percent: u32,
}

/// One deployment of a service: a task definition being rolled out
/// (PRIMARY) or rolled away from (ACTIVE).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub id: String,
    pub status: String,
    pub task_definition: String,
    pub created_at: f64,
    pub updated_at: f64,
    pub launch_type: String,
    /// IN_PROGRESS, COMPLETED or FAILED.
    pub rollout_state: String,
    pub rollout_state_reason: String,
    /// Consecutive failed tasks before the first success (what the circuit
    /// breaker counts; ECS's `failedTasks`).
    pub failed_tasks: u32,
    /// A task of this deployment has run (healthy): the circuit breaker
    /// stops counting.
    #[serde(default)]
    pub succeeded: bool,
    /// Failures since the last task that started successfully: the backoff.
    #[serde(default)]
    pub consecutive_failures: u32,
    #[serde(default)]
    pub last_failure_at: Option<f64>,
    /// Stopped tasks already counted (so a pass never counts one twice).
    #[serde(default)]
    pub counted: Vec<String>,
    /// Tasks already seen to work (see [`proven`]).
    #[serde(default)]
    pub proven: Vec<String>,
}

/// A line of a service's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEvent {
    pub id: String,
    pub created_at: f64,
    pub message: String,
}

/// A service as stored. Views add the counts (computed from the tasks)
/// and leave out the fields only skiff reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub service_arn: String,
    pub service_name: String,
    pub cluster_arn: String,
    /// ACTIVE, DRAINING (being deleted) or INACTIVE.
    pub status: String,
    pub desired_count: u32,
    pub task_definition: String,
    pub launch_type: String,
    /// REPLICA or DAEMON.
    pub scheduling_strategy: String,
    pub deployment_configuration: DeploymentConfiguration,
    #[serde(default)]
    pub placement_constraints: Vec<PlacementItem>,
    #[serde(default)]
    pub placement_strategy: Vec<PlacementItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_grace_period_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// The PRIMARY deployment first.
    pub deployments: Vec<Deployment>,
    /// Newest first.
    pub events: Vec<ServiceEvent>,
    pub created_at: f64,
    pub created_by: String,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    /// The last steady state was announced (an event) and holds.
    #[serde(default)]
    pub steady: bool,
    /// The last deployment that completed: where a rollback goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_completed: Option<Completed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_configuration: Option<NetworkConfiguration>,
    #[serde(default)]
    pub service_registries: Vec<ServiceRegistry>,
    #[serde(default)]
    pub load_balancers: Vec<ServiceLoadBalancer>,
    /// The targets this service registered for its tasks (stored; views
    /// leave it out).
    #[serde(default)]
    pub registered: Vec<Registered>,
    /// Its capacity provider strategy (empty: its launch type alone).
    #[serde(default)]
    pub capacity_provider_strategy: Vec<crate::core::capacity::StrategyItem>,
    /// A FARGATE service's platform version, as given (`LATEST`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_version: Option<String>,
    /// Its tasks carry `aws:ecs:clusterName` and `aws:ecs:serviceName`.
    #[serde(default)]
    pub enable_ecs_managed_tags: bool,
    /// Whose tags its tasks get: `SERVICE`, `TASK_DEFINITION` or `NONE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagate_tags: Option<String>,
    #[serde(default)]
    pub enable_execute_command: bool,
    /// Its service deployments, oldest first (the last
    /// [`MAX_HISTORY`]): what List/DescribeServiceDeployments and
    /// DescribeServiceRevisions answer.
    #[serde(default)]
    pub history: Vec<DeploymentRecord>,
    /// `EXTERNAL` (task sets) or `None`: ECS's rolling deployments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_controller: Option<String>,
    /// An EXTERNAL service's task sets (see [`task_sets`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_sets: Vec<task_sets::TaskSet>,
    /// What an Express Gateway service adds (see [`express`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub express: Option<Box<express::Express>>,
}

/// How many service deployments a service remembers.
pub const MAX_HISTORY: usize = 100;

/// A service deployment as ECS's ListServiceDeployments shows it, with
/// the service revision it deployed (the service's launch settings when
/// it began).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRecord {
    /// The deployment's id (`ecs-svc/...`).
    pub id: String,
    /// PENDING, IN_PROGRESS, SUCCESSFUL, STOPPED, STOP_REQUESTED,
    /// ROLLBACK_IN_PROGRESS, ROLLBACK_SUCCESSFUL, ROLLBACK_FAILED.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    pub created_at: f64,
    pub updated_at: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<f64>,
    /// The deployment it replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The service revision: its launch settings, as
    /// DescribeServiceRevisions shows them.
    pub revision: serde_json::Value,
}

/// A task's target, registered by its service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registered {
    pub target_group_arn: String,
    pub target: crate::plane::elb::config::Target,
    pub task: String,
}

/// A `loadBalancers` entry: the target group a container's port registers
/// in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceLoadBalancer {
    pub target_group_arn: String,
    pub container_name: String,
    pub container_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_name: Option<String>,
}

/// A `serviceRegistries` entry: the Cloud Map service the tasks register
/// in (A records of their awsvpc addresses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceRegistry {
    pub registry_arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<u16>,
}

/// A deployment that completed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Completed {
    pub deployment_id: String,
    pub task_definition: String,
}

impl Service {
    /// The state's key: `CLUSTER/NAME`.
    pub fn key(&self) -> String {
        format!("{}/{}", name_of(&self.cluster_arn), self.service_name)
    }

    pub(crate) fn region(&self) -> &str {
        self.service_arn.split(':').nth(3).unwrap_or("us-east-1")
    }

    pub(crate) fn group(&self) -> String {
        format!("service:{}", self.service_name)
    }

    pub(crate) fn is_daemon(&self) -> bool {
        self.scheduling_strategy == "DAEMON"
    }

    /// Deployed by task sets (the `EXTERNAL` deployment controller).
    pub(crate) fn is_external(&self) -> bool {
        self.deployment_controller.as_deref() == Some("EXTERNAL")
    }

    /// The target groups a task of this service (started by `started_by`)
    /// registers in: its task set's, or the service's.
    pub(crate) fn balancers_for(&self, started_by: Option<&str>) -> &[ServiceLoadBalancer] {
        if !self.is_external() {
            return &self.load_balancers;
        }
        self.task_sets
            .iter()
            .find(|s| Some(s.id.as_str()) == started_by)
            .map_or(&[], |s| &s.load_balancers)
    }

    /// The task set that started a task, if the service has task sets.
    pub(crate) fn task_set_of(&self, started_by: Option<&str>) -> Option<&task_sets::TaskSet> {
        self.task_sets
            .iter()
            .find(|s| Some(s.id.as_str()) == started_by)
    }

    /// The Cloud Map services a task started by `started_by` registers in.
    pub(crate) fn registries_for(&self, started_by: Option<&str>) -> &[ServiceRegistry] {
        if !self.is_external() {
            return &self.service_registries;
        }
        self.task_set_of(started_by)
            .map_or(&[], |s| &s.service_registries)
    }

    /// Whether any of its tasks register in Cloud Map service `arn`.
    pub(crate) fn uses_registry(&self, arn: &str) -> bool {
        self.service_registries
            .iter()
            .chain(self.task_sets.iter().flat_map(|s| &s.service_registries))
            .any(|r| r.registry_arn == arn)
    }

    /// Adds an event about a condition that may last (a task that cannot
    /// be placed, tasks that keep failing), unless the same was said in the
    /// last five minutes: ECS repeats itself, but not every pass.
    pub(crate) fn event_once(&mut self, at: f64, message: String) {
        if self
            .events
            .iter()
            .take_while(|e| at - e.created_at < 300.0)
            .any(|e| e.message == message)
        {
            return;
        }
        self.event(at, message);
    }

    /// Adds an event.
    pub(crate) fn event(&mut self, at: f64, message: String) {
        self.events.insert(
            0,
            ServiceEvent {
                id: uuid::Uuid::new_v4().to_string(),
                created_at: at,
                message,
            },
        );
        self.events.truncate(MAX_EVENTS);
    }

    /// The service's launch settings now: a service revision.
    pub(crate) fn revision(&self, at: f64) -> serde_json::Value {
        let mut r = serde_json::json!({
            "taskDefinition": self.task_definition,
            "loadBalancers": self.load_balancers,
            "serviceRegistries": self.service_registries,
            "createdAt": at,
        });
        if self.capacity_provider_strategy.is_empty() {
            r["launchType"] = serde_json::json!(self.launch_type);
        } else {
            r["capacityProviderStrategy"] = serde_json::json!(self.capacity_provider_strategy);
        }
        if let Some(p) = &self.platform_version {
            r["platformVersion"] = serde_json::json!(p);
            r["platformFamily"] = serde_json::json!("Linux");
        }
        if let Some(n) = &self.network_configuration {
            r["networkConfiguration"] = serde_json::json!(n);
        }
        r
    }

    /// Records how deployment `id` ended (or what it is doing now).
    pub(crate) fn record(&mut self, id: &str, status: &str, reason: &str, at: f64) {
        if let Some(r) = self.history.iter_mut().rev().find(|r| r.id == id) {
            r.status = status.into();
            r.status_reason = Some(reason.into());
            r.updated_at = at;
            if matches!(
                status,
                "SUCCESSFUL" | "ROLLBACK_SUCCESSFUL" | "ROLLBACK_FAILED"
            ) {
                r.finished_at = Some(at);
            }
            if status == "STOPPED" {
                r.stopped_at = Some(at);
            }
        }
    }

    pub(crate) fn new_deployment(&mut self, at: f64, id: String, reason: &str) {
        for d in &mut self.deployments {
            d.status = "ACTIVE".into();
        }
        let source = self.deployments.first().map(|d| d.id.clone());
        for r in &mut self.history {
            if r.status == "IN_PROGRESS" {
                r.status = "STOPPED".into();
                r.status_reason = Some(format!("Superseded by service deployment {id}."));
                r.stopped_at = Some(at);
                r.updated_at = at;
            }
        }
        self.history.push(DeploymentRecord {
            id: id.clone(),
            status: "IN_PROGRESS".into(),
            status_reason: Some(reason.to_string()),
            created_at: at,
            updated_at: at,
            finished_at: None,
            stopped_at: None,
            source,
            revision: self.revision(at),
        });
        if self.history.len() > MAX_HISTORY {
            let extra = self.history.len() - MAX_HISTORY;
            self.history.drain(..extra);
        }
        self.deployments.insert(
            0,
            Deployment {
                id,
                status: "PRIMARY".into(),
                task_definition: self.task_definition.clone(),
                created_at: at,
                updated_at: at,
                launch_type: self.launch_type.clone(),
                rollout_state: "IN_PROGRESS".into(),
                rollout_state_reason: reason.into(),
                failed_tasks: 0,
                succeeded: false,
                consecutive_failures: 0,
                last_failure_at: None,
                counted: Vec::new(),
                proven: Vec::new(),
            },
        );
        self.steady = false;
    }
}

/// Whether `t` is one of the service's tasks: in its cluster and group,
/// started by one of its deployments (a RunTask that only borrowed the
/// group name is not adopted).
pub(crate) fn belongs(t: &Task, cluster_arn: &str, group: &str) -> bool {
    t.cluster_arn == cluster_arn
        && t.group.as_deref() == Some(group)
        && t.started_by
            .as_deref()
            .is_some_and(|b| b.starts_with("ecs-svc/"))
}

/// A new deployment id, as ECS writes them: `ecs-svc/` and 19 digits.
pub(crate) fn deployment_id(core: &Core) -> String {
    let n = core
        .rng
        .lock()
        .map(|mut r| r.next_u64())
        .unwrap_or_else(|_| placement::Rng::from_entropy().next_u64());
    format!("ecs-svc/{:019}", n % 10_000_000_000_000_000_000)
}
