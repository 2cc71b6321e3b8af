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
//! stop with [`decide`] — pure, so the deployment rules are unit-tested —
//! and commits the new tasks, the stops and the service's new record in one
//! transaction. Killing the process at any moment and starting again
//! therefore resumes from what was committed: nothing is started twice and
//! nothing is lost.

use crate::ecs::{
    self, Launch, active_cluster, includes, listed, parse, placement_rules, refuse, required,
    resolve_taskdef, string_list, to_value,
};
use crate::error::ApiError;
use crate::model::{
    Failure, NetworkConfiguration, PlacementItem, Tag, Task, arn, check_tags, name_of, now,
};
use crate::placement::{self, Constraint};
use crate::state::{State, Write};
use crate::taskdef::TaskDefinition;
use crate::{Inner, placement::Candidate};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How many events a service keeps (ECS shows the latest 100).
const MAX_EVENTS: usize = 100;

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
}

/// A task's target, registered by its service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registered {
    pub target_group_arn: String,
    pub target: crate::elb::Target,
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

/// A request's `loadBalancers`, checked as ECS does: each names a target
/// group that a load balancer uses, and a container port of the task
/// definition; ip target groups need awsvpc, instance ones bridge or host.
fn load_balancers(
    state: &State,
    body: &Value,
    td: &TaskDefinition,
) -> Result<Option<Vec<ServiceLoadBalancer>>, ApiError> {
    let lbs: Vec<ServiceLoadBalancer> = match body.get("loadBalancers") {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| ApiError::invalid_parameter(format!("loadBalancers is invalid: {e}")))?,
    };
    if lbs.len() > 5 {
        return Err(ApiError::invalid_parameter(
            "At most 5 load balancers can be given.",
        ));
    }
    for lb in &lbs {
        if lb.load_balancer_name.is_some() {
            return Err(ApiError::invalid_parameter(
                "loadBalancerName names a Classic Load Balancer, which skiff does not have: give a targetGroupArn",
            ));
        }
        let Some(tg) = state.elb.target_groups.get(&lb.target_group_arn) else {
            return Err(ApiError::invalid_parameter(format!(
                "Unable to find target group {}.",
                lb.target_group_arn
            )));
        };
        if state.elb.lbs_of_group(&tg.arn).is_empty() {
            return Err(ApiError::invalid_parameter(format!(
                "The target group {} does not have an associated load balancer.",
                tg.arn
            )));
        }
        let Some(c) = td
            .container_definitions
            .iter()
            .find(|c| c.name == lb.container_name)
        else {
            return Err(ApiError::invalid_parameter(format!(
                "The container {} does not exist in the task definition.",
                lb.container_name
            )));
        };
        if !c
            .port_mappings
            .iter()
            .any(|p| p.container_port == lb.container_port)
        {
            return Err(ApiError::invalid_parameter(format!(
                "The container {} did not have a container port {} defined.",
                lb.container_name, lb.container_port
            )));
        }
        let awsvpc = td.network_mode.as_deref() == Some("awsvpc");
        match (tg.target_type.as_str(), awsvpc) {
            ("ip", false) => {
                return Err(ApiError::invalid_parameter(format!(
                    "The target group {} has target type ip, which needs networkMode awsvpc.",
                    tg.arn
                )));
            }
            ("instance", true) => {
                return Err(ApiError::invalid_parameter(format!(
                    "The target group {} has target type instance, which is incompatible with networkMode awsvpc: use target type ip.",
                    tg.arn
                )));
            }
            _ => {}
        }
    }
    Ok(Some(lbs))
}

/// A task's target in a target group: its address (ip) or this machine's
/// instance with the container port's published host port (instance).
fn task_target(
    t: &Task,
    lb: &ServiceLoadBalancer,
    tg: &crate::elb::TargetGroup,
) -> Option<crate::elb::Target> {
    if tg.target_type == "ip" {
        let ip = crate::discovery::task_ip(t)?;
        return Some(crate::elb::Target {
            id: ip.to_string(),
            port: lb.container_port,
        });
    }
    let c = t.containers.iter().find(|c| c.name == lb.container_name)?;
    let b = c
        .network_bindings
        .iter()
        .find(|b| b.container_port == lb.container_port && b.protocol == "tcp")?;
    Some(crate::elb::Target {
        id: crate::LOCAL_INSTANCE_ID.to_string(),
        port: b.host_port,
    })
}

/// A request's `serviceRegistries`, checked: at most one, naming a
/// discovery service that exists, with A records, for an awsvpc
/// definition.
fn service_registries(
    state: &State,
    body: &Value,
    td: &TaskDefinition,
) -> Result<Option<Vec<ServiceRegistry>>, ApiError> {
    let regs: Vec<ServiceRegistry> = match body.get("serviceRegistries") {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            ApiError::invalid_parameter(format!("serviceRegistries is invalid: {e}"))
        })?,
    };
    if regs.len() > 1 {
        return Err(ApiError::invalid_parameter(
            "At most one service registry can be given.",
        ));
    }
    for r in &regs {
        let Some(found) = state
            .discovery
            .services
            .values()
            .find(|s| s.arn == r.registry_arn)
        else {
            return Err(ApiError::invalid_parameter(format!(
                "The service registry {} does not exist.",
                r.registry_arn
            )));
        };
        if r.port.is_some() || r.container_name.is_some() || r.container_port.is_some() {
            return Err(ApiError::invalid_parameter(
                "port, containerName and containerPort name SRV records, which skiff does not answer: register A records (awsvpc) with registryArn alone",
            ));
        }
        let dns = state
            .discovery
            .namespaces
            .get(&found.namespace_id)
            .is_some_and(|n| n.kind == "DNS_PRIVATE");
        if dns && td.network_mode.as_deref() != Some("awsvpc") {
            return Err(ApiError::invalid_parameter(
                "A service registry with A records needs networkMode awsvpc (tasks of other modes have no address of their own to register).",
            ));
        }
    }
    Ok(Some(regs))
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

    fn region(&self) -> &str {
        self.service_arn.split(':').nth(3).unwrap_or("us-east-1")
    }

    fn group(&self) -> String {
        format!("service:{}", self.service_name)
    }

    fn is_daemon(&self) -> bool {
        self.scheduling_strategy == "DAEMON"
    }

    /// Adds an event about a condition that may last (a task that cannot
    /// be placed, tasks that keep failing), unless the same was said in the
    /// last five minutes: ECS repeats itself, but not every pass.
    fn event_once(&mut self, at: f64, message: String) {
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
    fn event(&mut self, at: f64, message: String) {
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

    fn new_deployment(&mut self, at: f64, id: String, reason: &str) {
        for d in &mut self.deployments {
            d.status = "ACTIVE".into();
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
fn deployment_id(inner: &Inner) -> String {
    let n = inner
        .rng
        .lock()
        .map(|mut r| r.next_u64())
        .unwrap_or_else(|_| placement::Rng::from_entropy().next_u64());
    format!("ecs-svc/{:019}", n % 10_000_000_000_000_000_000)
}

// ---- the rules ---------------------------------------------------------------

/// What the scheduler does next for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Start `count` tasks of the PRIMARY deployment wherever placement
    /// puts them.
    Start { count: usize },
    /// Start one task of the PRIMARY deployment on this instance (DAEMON).
    StartOn { instance: String },
    /// Stop a task (ServiceSchedulerInitiated).
    Stop { task: String, reason: String },
}

/// What the scheduler knows about the world beside the service.
pub(crate) struct World<'a> {
    /// The service's tasks (any status).
    pub tasks: Vec<&'a Task>,
    /// Container instances that are DRAINING: their tasks move.
    pub draining: HashSet<&'a str>,
    /// DAEMON only: the ACTIVE instances a task may run on.
    pub eligible: Vec<&'a str>,
    pub now: f64,
    /// Tasks whose load balancer target failed its health checks, with
    /// the stop reason ECS gives.
    pub elb_failed: HashMap<String, String>,
}

/// A task that stopped on its own: it failed to start, or its essential
/// container exited.
fn failed(t: &Task) -> bool {
    t.last_status == "STOPPED"
        && matches!(
            t.stop_code.as_deref(),
            Some("TaskFailedToStart" | "EssentialContainerExited")
        )
}

/// How long a task without a health check must run before it shows that
/// its deployment works (a task that exits sooner is a crash loop).
const PROVEN_AFTER_SECS: f64 = 10.0;

/// A task that shows its deployment works: HEALTHY, or, without a health
/// check, RUNNING for [`PROVEN_AFTER_SECS`]. The first one ends the
/// circuit breaker's count; each one ends the backoff.
fn proven(t: &Task, now: f64) -> bool {
    let Some(started) = t.started_at else {
        return false;
    };
    match t.health_status.as_deref() {
        Some(h) => h == "HEALTHY",
        None => t.stopped_at.unwrap_or(now) - started >= PROVEN_AFTER_SECS,
    }
}

/// A task the service still wants.
fn live(t: &Task) -> bool {
    t.desired_status == "RUNNING" && t.last_status != "STOPPED"
}

/// A task that counts toward `minimumHealthyPercent`: running and, if it
/// is health-checked, HEALTHY.
fn healthy_running(t: &Task) -> bool {
    live(t)
        && t.last_status == "RUNNING"
        && t.health_status.as_deref().is_none_or(|h| h == "HEALTHY")
}

/// How a rollback deployment's rolloutStateReason begins.
const ROLLING_BACK: &str = "ECS deployment circuit breaker: rolling back to deploymentId ";

/// The circuit breaker's threshold: half the desired count, 3 to 200.
fn failure_threshold(desired: u32) -> u32 {
    desired.div_ceil(2).clamp(3, 200)
}

/// How long the scheduler waits before starting another task after `n`
/// consecutive failures: none after one, then 1 s doubling to 5 minutes.
fn backoff(n: u32) -> f64 {
    if n <= 1 {
        0.0
    } else {
        f64::from(2u32.saturating_pow(n - 2).min(300))
    }
}

/// One pass's work in progress: what it has decided so far.
struct Pass<'w, 'a> {
    world: &'w World<'a>,
    /// The PRIMARY deployment's id.
    primary: String,
    actions: Vec<Action>,
    /// Tasks this pass stops.
    stopping: HashSet<String>,
}

impl<'a> Pass<'_, 'a> {
    fn stop(&mut self, t: &Task, reason: String) {
        if self.stopping.insert(t.id().to_string()) {
            self.actions.push(Action::Stop {
                task: t.id().to_string(),
                reason,
            });
        }
    }

    /// Stops a task to scale or roll (ECS's wording).
    fn scale_in(&mut self, t: &Task) {
        let reason = format!(
            "Scaling activity initiated by (deployment {})",
            self.primary
        );
        self.stop(t, reason);
    }

    fn is_primary(&self, t: &Task) -> bool {
        t.started_by.as_deref() == Some(self.primary.as_str())
    }

    fn on_draining(&self, t: &Task) -> bool {
        t.container_instance_arn
            .as_deref()
            .is_some_and(|i| self.world.draining.contains(i))
    }

    /// The live tasks this pass is not stopping, cheapest to lose first
    /// (pending before running, then the newest).
    fn alive(&self) -> Vec<&'a Task> {
        let mut v: Vec<&'a Task> = self
            .world
            .tasks
            .iter()
            .copied()
            .filter(|t| live(t) && !self.stopping.contains(t.id()))
            .collect();
        v.sort_by(|a, b| {
            let ra = a.last_status == "RUNNING";
            let rb = b.last_status == "RUNNING";
            ra.cmp(&rb).then(b.created_at.total_cmp(&a.created_at))
        });
        v
    }

    /// Stops `tasks` that are not healthy, and healthy ones while more than
    /// `min_healthy` healthy tasks remain.
    fn retire(&mut self, tasks: Vec<&Task>, min_healthy: usize) {
        let healthy = self
            .alive()
            .into_iter()
            .filter(|t| healthy_running(t))
            .count();
        let mut budget = healthy.saturating_sub(min_healthy);
        for t in tasks {
            if !healthy_running(t) {
                self.scale_in(t);
            } else if budget > 0 {
                budget -= 1;
                self.scale_in(t);
            }
        }
    }
}

/// Decides one pass for `svc`: updates its deployments (failures, the
/// circuit breaker, rollout states), adds the events that follow, and
/// returns what to start and stop. Pure: the caller places and commits.
pub(crate) fn decide(
    svc: &mut Service,
    world: &World<'_>,
    new_id: &mut dyn FnMut() -> String,
) -> Vec<Action> {
    // A deleted service is INACTIVE once its last task has stopped.
    if svc.status == "DRAINING" && world.tasks.iter().all(|t| t.last_status == "STOPPED") {
        svc.status = "INACTIVE".into();
        svc.steady = false;
        return Vec::new();
    }
    let mut pass = Pass {
        world,
        primary: String::new(),
        actions: Vec::new(),
        stopping: HashSet::new(),
    };
    account(svc, &mut pass);
    trip_breaker(svc, world.now, new_id);
    let Some(primary) = svc.deployments.first().cloned() else {
        return pass.actions;
    };
    pass.primary = primary.id.clone();
    let throttled = primary
        .last_failure_at
        .is_some_and(|f| world.now < f + backoff(primary.consecutive_failures));
    if primary.consecutive_failures == 3 && throttled {
        let name = &svc.service_name;
        svc.event_once(
            world.now,
            format!("(service {name}) is unable to consistently start tasks successfully. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide."),
        );
    }
    let may_start = svc.status == "ACTIVE" && primary.rollout_state != "FAILED" && !throttled;
    if svc.is_daemon() {
        daemon(svc, &mut pass, may_start);
    } else {
        replica(svc, &mut pass, may_start);
    }
    settle(svc, &pass);
    pass.actions
}

/// Counts each deployment's failed tasks (once each) and successes, and
/// stops tasks that failed their health checks after the grace period.
fn account(svc: &mut Service, pass: &mut Pass<'_, '_>) {
    let now = pass.world.now;
    let grace = f64::from(svc.health_check_grace_period_seconds.unwrap_or(0));
    for d in &mut svc.deployments {
        let mine = pass
            .world
            .tasks
            .iter()
            .filter(|t| t.started_by.as_deref() == Some(d.id.as_str()));
        for t in mine {
            if proven(t, now) && !d.proven.iter().any(|p| p == t.id()) {
                d.proven.push(t.id().to_string());
                if !d.succeeded {
                    d.succeeded = true;
                    d.failed_tasks = 0;
                }
                d.consecutive_failures = 0;
            }
            let unhealthy = live(t)
                && t.health_status.as_deref() == Some("UNHEALTHY")
                && t.started_at.is_some_and(|s| now - s >= grace);
            if unhealthy {
                let reason = pass
                    .world
                    .elb_failed
                    .get(t.id())
                    .cloned()
                    .unwrap_or_else(|| "Task failed container health checks".into());
                pass.stop(t, reason);
            }
            let id = t.id().to_string();
            if (unhealthy || failed(t)) && !d.counted.contains(&id) {
                d.counted.push(id);
                d.consecutive_failures += 1;
                d.last_failure_at = Some(now);
                if !d.succeeded {
                    d.failed_tasks += 1;
                }
            }
        }
        // Forget tasks that are gone from the state.
        let present = |id: &String| pass.world.tasks.iter().any(|t| t.id() == id);
        d.counted.retain(present);
        d.proven.retain(present);
    }
}

/// The deployment circuit breaker: a PRIMARY deployment none of whose
/// tasks ever ran, with `failure_threshold` failures, FAILS, and with
/// rollback the last completed deployment's task definition returns.
fn trip_breaker(svc: &mut Service, now: f64, new_id: &mut dyn FnMut() -> String) {
    let breaker = svc.deployment_configuration.deployment_circuit_breaker;
    let threshold = failure_threshold(svc.desired_count);
    let name = svc.service_name.clone();
    if svc.status != "ACTIVE" {
        return;
    }
    let Some(p) = svc.deployments.first_mut() else {
        return;
    };
    if !breaker.enable
        || p.rollout_state != "IN_PROGRESS"
        || p.succeeded
        || p.failed_tasks < threshold
    {
        return;
    }
    let was_rollback = p.rollout_state_reason.starts_with(ROLLING_BACK);
    let failed_td = p.task_definition.clone();
    p.rollout_state = "FAILED".into();
    p.rollout_state_reason = "ECS deployment circuit breaker: tasks failed to start.".into();
    p.updated_at = now;
    let failed_id = p.id.clone();
    svc.event(
        now,
        format!(
            "(service {name}) (deployment {failed_id}) deployment failed: tasks failed to start."
        ),
    );
    // A rollback that fails too, or one that would deploy the same thing
    // again, stays FAILED: rolling back again would loop.
    let back = svc
        .last_completed
        .clone()
        .filter(|b| breaker.rollback && !was_rollback && b.task_definition != failed_td);
    if let Some(back) = back {
        svc.task_definition = back.task_definition.clone();
        let reason = format!("{ROLLING_BACK}{}.", back.deployment_id);
        svc.new_deployment(now, new_id(), &reason);
        svc.event(
            now,
            format!(
                "(service {name}) rolling back to deployment {}.",
                back.deployment_id
            ),
        );
    }
}

/// REPLICA: `desiredCount` tasks of the PRIMARY deployment, rolled out
/// within maximumPercent and minimumHealthyPercent.
fn replica(svc: &Service, pass: &mut Pass<'_, '_>, may_start: bool) {
    let desired = if svc.status == "ACTIVE" {
        svc.desired_count as usize
    } else {
        0
    };
    let cfg = svc.deployment_configuration;
    let max_total = desired * cfg.maximum_percent as usize / 100;
    let min_healthy =
        (desired as u64 * u64::from(cfg.minimum_healthy_percent)).div_ceil(100) as usize;
    let primary: Vec<&Task> = pass
        .alive()
        .into_iter()
        .filter(|t| pass.is_primary(t) && !pass.on_draining(t))
        .collect();
    // Too many of the primary: scale in.
    let excess = primary.len().saturating_sub(desired);
    for t in &primary[..excess] {
        pass.scale_in(t);
    }
    // Too few: start, within maximumPercent — which counts every task not
    // yet STOPPED, stopping ones included (they still hold resources).
    let want = desired.saturating_sub(primary.len() - excess);
    let present = pass
        .world
        .tasks
        .iter()
        .filter(|t| t.last_status != "STOPPED")
        .count();
    let room = max_total.saturating_sub(present);
    let n = want.min(room);
    if n > 0 && may_start {
        pass.actions.push(Action::Start { count: n });
    }
    // Everything else (older deployments, tasks on draining instances)
    // goes, keeping minimumHealthyPercent running.
    let others: Vec<&Task> = pass
        .alive()
        .into_iter()
        .filter(|t| !pass.is_primary(t) || pass.on_draining(t))
        .collect();
    pass.retire(others, min_healthy);
}

/// DAEMON: one task of the PRIMARY deployment on every eligible instance;
/// a new deployment replaces each instance's task, stop first.
fn daemon(svc: &mut Service, pass: &mut Pass<'_, '_>, may_start: bool) {
    let mut eligible: Vec<&str> = if svc.status == "ACTIVE" {
        pass.world.eligible.clone()
    } else {
        Vec::new()
    };
    eligible.sort_unstable();
    eligible.dedup();
    svc.desired_count = eligible.len() as u32;
    let min_healthy = (eligible.len() as u64
        * u64::from(svc.deployment_configuration.minimum_healthy_percent))
    .div_ceil(100) as usize;
    fn here(t: &Task) -> &str {
        t.container_instance_arn.as_deref().unwrap_or("")
    }
    for t in pass.alive() {
        if !eligible.contains(&here(t)) {
            pass.scale_in(t);
        }
    }
    for i in eligible {
        let on_i: Vec<&Task> = pass.alive().into_iter().filter(|t| here(t) == i).collect();
        let (primary, old): (Vec<&Task>, Vec<&Task>) =
            on_i.into_iter().partition(|t| pass.is_primary(t));
        if let Some((_, extra)) = primary.split_last() {
            for t in extra {
                pass.scale_in(t);
            }
            continue;
        }
        if !old.is_empty() {
            pass.retire(old, min_healthy);
            continue;
        }
        // A task still stopping here holds its resources: wait for it.
        let busy = pass
            .world
            .tasks
            .iter()
            .any(|t| here(t) == i && t.last_status != "STOPPED");
        if may_start && !busy {
            pass.actions.push(Action::StartOn {
                instance: i.to_string(),
            });
        }
    }
}

/// Ends finished deployments and, when nothing is left to do, completes
/// the rollout and announces the steady state.
fn settle(svc: &mut Service, pass: &Pass<'_, '_>) {
    let now = pass.world.now;
    let name = svc.service_name.clone();
    // Deployments whose tasks are all gone are over; a failed one stays in
    // view until the deployment that replaced it completes.
    let tasks = &pass.world.tasks;
    let mut failed_kept = false;
    svc.deployments.retain(|d| {
        let has_tasks = tasks
            .iter()
            .any(|t| t.started_by.as_deref() == Some(d.id.as_str()) && t.last_status != "STOPPED");
        let newest_failed = d.status != "PRIMARY" && d.rollout_state == "FAILED" && !failed_kept;
        failed_kept |= newest_failed;
        d.status == "PRIMARY" || has_tasks || newest_failed
    });
    let settled = |t: &&&Task| healthy_running(t) && pass.is_primary(t);
    let running = tasks.iter().filter(settled).count();
    let unsettled = tasks
        .iter()
        .any(|t| t.last_status != "STOPPED" && !settled(&t));
    let want = if svc.status == "ACTIVE" {
        svc.desired_count as usize
    } else {
        0
    };
    let deployments = svc
        .deployments
        .iter()
        .filter(|d| d.status == "PRIMARY" || d.rollout_state != "FAILED")
        .count();
    let stable = pass.actions.is_empty()
        && deployments == 1
        && running == want
        && !unsettled
        && svc.status == "ACTIVE";
    if !stable {
        svc.steady = false;
    } else {
        let p = &mut svc.deployments[0];
        if p.rollout_state == "IN_PROGRESS" {
            p.rollout_state = "COMPLETED".into();
            p.rollout_state_reason = format!("ECS deployment {} completed.", p.id);
            p.updated_at = now;
            let (id, td) = (p.id.clone(), p.task_definition.clone());
            svc.last_completed = Some(Completed {
                deployment_id: id.clone(),
                task_definition: td,
            });
            svc.event(
                now,
                format!("(service {name}) (deployment {id}) deployment completed."),
            );
            svc.deployments.truncate(1);
        }
        if !svc.steady {
            svc.steady = true;
            svc.event(now, format!("(service {name}) has reached a steady state."));
        }
    }
}

// ---- the scheduler -----------------------------------------------------------

/// Runs passes whenever something changes, and at least every second (for
/// backoff and grace periods).
pub(crate) async fn scheduler_loop(inner: Weak<Inner>) {
    loop {
        let wake = {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            if let Err(e) = reconcile(&inner).await {
                tracing::error!("the service scheduler failed a pass, retrying: {e}");
            }
            Arc::clone(&inner.wake)
        };
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// One pass over every service that is not INACTIVE.
pub(crate) async fn reconcile(inner: &Inner) -> Result<(), ApiError> {
    if inner
        .shutting_down
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        return Ok(());
    }
    let mut state = inner.state.lock().await;
    // Checked again under the lock: shutdown stops tasks under it too, and
    // must not see the scheduler start new ones after.
    if inner
        .shutting_down
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        return Ok(());
    }
    let keys: Vec<String> = state
        .services
        .iter()
        .filter(|(_, s)| s.value.status != "INACTIVE")
        .map(|(k, _)| k.clone())
        .collect();
    for key in keys {
        if let Some(svc) = state.services.get(&key).map(|s| s.value.clone()) {
            // One service's failure does not hold up the others.
            if let Err(e) = reconcile_one(inner, &mut state, svc).await {
                tracing::error!("the service scheduler failed a pass for {key}: {e}");
            }
        }
    }
    // Discovered names follow the services' tasks.
    if !state.discovery.services.is_empty() {
        crate::discovery::refresh(&state, &inner.fabric);
    }
    Ok(())
}

async fn reconcile_one(inner: &Inner, state: &mut State, mut svc: Service) -> Result<(), ApiError> {
    let before = svc.clone();
    let now = now();
    let group = svc.group();
    let cluster_name = name_of(&svc.cluster_arn).to_string();
    let Some(cluster) = state.clusters.get(&cluster_name).map(|c| c.value.clone()) else {
        return Ok(());
    };
    // Behind a load balancer, a task is healthy when its targets are
    // (and its container checks, if any, agree); until registered and
    // checked, it is not yet.
    let mut elb_failed = HashMap::new();
    // Only the running tasks of a balanced service are copied to be
    // overlaid; the rest are used as stored.
    let overlaid: Vec<std::borrow::Cow<'_, Task>> = state
        .tasks
        .values()
        .map(|t| &t.value)
        .filter(|t| belongs(t, &svc.cluster_arn, &group))
        .map(|t| {
            if svc.load_balancers.is_empty() || !live(t) || t.last_status != "RUNNING" {
                return std::borrow::Cow::Borrowed(t);
            }
            let mut t = t.clone();
            let mut state_of = "HEALTHY";
            for lb in &svc.load_balancers {
                let registered = svc
                    .registered
                    .iter()
                    .find(|r| r.task == t.id() && r.target_group_arn == lb.target_group_arn);
                let health = registered
                    .and_then(|r| inner.elb.target_health(&r.target_group_arn, &r.target));
                match health {
                    Some((crate::elb::plane::Health::Healthy, _)) => {}
                    Some((crate::elb::plane::Health::Unhealthy, _)) => {
                        state_of = "UNHEALTHY";
                        elb_failed.insert(
                            t.id().to_string(),
                            format!(
                                "Task failed ELB health checks in (target-group {})",
                                lb.target_group_arn
                            ),
                        );
                    }
                    _ if state_of == "HEALTHY" => state_of = "UNKNOWN",
                    _ => {}
                }
            }
            if t.health_status.as_deref().is_none_or(|h| h == "HEALTHY") {
                t.health_status = Some(state_of.into());
            }
            std::borrow::Cow::Owned(t)
        })
        .collect();
    let tasks: Vec<&Task> = overlaid.iter().map(|t| t.as_ref()).collect();
    let draining: HashSet<&str> = state
        .instances
        .values()
        .map(|i| &i.value)
        .filter(|i| i.cluster == cluster_name && i.status == "DRAINING")
        .map(|i| i.container_instance_arn.as_str())
        .collect();
    let primary_before = svc.deployments.first().map(|d| d.id.clone());
    let td = svc
        .deployments
        .first()
        .and_then(|d| crate::ecs::taskdef_of(state, &d.task_definition));
    let rules = placement_rules(&svc.placement_constraints, &svc.placement_strategy);
    let launch = match (td, rules) {
        (Some(td), Ok((constraints, strategies))) => {
            Launch::new(td, constraints, strategies, group.clone())
                .ok()
                .map(|mut l| {
                    l.launch_type = svc.launch_type.clone();
                    l.network = svc.network_configuration.clone();
                    l
                })
        }
        _ => None,
    };
    let eligible: Vec<&str> = match (&launch, svc.is_daemon()) {
        (Some(l), true) => daemon_instances(state, &cluster_name, l),
        _ => Vec::new(),
    };
    let world = World {
        tasks,
        draining,
        eligible,
        now,
        elb_failed,
    };
    let mut ids = || deployment_id(inner);
    let mut actions = decide(&mut svc, &world, &mut ids);
    drop(world);
    if svc.deployments.first().map(|d| d.id.clone()) != primary_before {
        // A rollback: what to start is the new PRIMARY's, which the next
        // pass (at once) places with its own task definition.
        actions.retain(|a| matches!(a, Action::Stop { .. }));
        inner.wake.notify_one();
    }

    // Carry the actions out.
    let region = svc.region().to_string();
    let name = svc.service_name.clone();
    let mut writes = Vec::new();
    let mut to_start: Vec<Task> = Vec::new();
    let mut to_stop = Vec::new();
    let mut stopped_running = Vec::new();
    for a in &actions {
        match a {
            Action::Stop { task, reason } => {
                let Some(t) = state.tasks.get(task).map(|t| t.value.clone()) else {
                    continue;
                };
                if t.last_status == "RUNNING" {
                    stopped_running.push(t.task_arn.clone());
                }
                let (t, running_here) =
                    ecs::stop_request(inner, t, "ServiceSchedulerInitiated", reason);
                if running_here {
                    to_stop.push(t.clone());
                }
                writes.push(Write::Task(t));
            }
            Action::Start { .. } | Action::StartOn { .. } => {
                let Some(launch) = launch.as_ref() else {
                    svc.event_once(
                        now,
                        format!("(service {name}) cannot start tasks: its task definition {} is not registered, or its placement rules are invalid.", svc.task_definition),
                    );
                    continue;
                };
                let mut l = Launch {
                    started_by: svc.deployments.first().map(|d| d.id.clone()),
                    ..launch.clone()
                };
                l.tags = Vec::new();
                let (count, on) = match a {
                    Action::Start { count } => (*count, None),
                    Action::StartOn { instance } => (1, Some(vec![instance.clone()])),
                    Action::Stop { .. } => continue,
                };
                match ecs::place_tasks(inner, state, &region, &cluster, &l, count, on.as_deref()) {
                    Ok((tasks, failures)) => {
                        if tasks.len() < count {
                            svc.event_once(now, unable_to_place(&name, &failures));
                        }
                        to_start.extend(tasks);
                    }
                    Err(e) => svc.event_once(now, unable_to_place_because(&name, &e.message)),
                }
            }
        }
    }
    if !to_start.is_empty() {
        let list: Vec<String> = to_start
            .iter()
            .map(|t| format!("(task {})", t.id()))
            .collect();
        svc.event(
            now,
            format!(
                "(service {name}) has started {} tasks: {}.",
                to_start.len(),
                list.join(" ")
            ),
        );
    }
    if !stopped_running.is_empty() {
        let list: Vec<String> = stopped_running
            .iter()
            .map(|a| format!("(task {})", name_of(a)))
            .collect();
        svc.event(
            now,
            format!(
                "(service {name}) has stopped {} running tasks: {}.",
                stopped_running.len(),
                list.join(" ")
            ),
        );
    }
    // Targets follow the tasks: RUNNING tasks the service wants are
    // registered; the rest are deregistered, and drain before their task
    // is stopped.
    let mut draining_targets: HashMap<String, Vec<(String, crate::elb::Target)>> = HashMap::new();
    let elb_before = state.elb.clone();
    let mut elb = elb_before.clone();
    if !svc.load_balancers.is_empty() || !svc.registered.is_empty() {
        let stopping: HashSet<&str> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Stop { task, .. } => Some(task.as_str()),
                _ => None,
            })
            .collect();
        let mut wanted = Vec::new();
        for t in state.tasks.values().map(|t| &t.value) {
            if !belongs(t, &svc.cluster_arn, &group)
                || !live(t)
                || t.last_status != "RUNNING"
                || stopping.contains(t.id())
            {
                continue;
            }
            for lb in &svc.load_balancers {
                let Some(tg) = elb.target_groups.get(&lb.target_group_arn) else {
                    continue;
                };
                if let Some(target) = task_target(t, lb, tg) {
                    wanted.push(Registered {
                        target_group_arn: lb.target_group_arn.clone(),
                        target,
                        task: t.id().to_string(),
                    });
                }
            }
        }
        for r in &svc.registered {
            if !wanted.contains(r) {
                if let Some(tg) = elb.target_groups.get_mut(&r.target_group_arn) {
                    tg.targets.retain(|x| *x != r.target);
                }
                draining_targets
                    .entry(r.task.clone())
                    .or_default()
                    .push((r.target_group_arn.clone(), r.target.clone()));
            }
        }
        for r in &wanted {
            if let Some(tg) = elb.target_groups.get_mut(&r.target_group_arn)
                && !tg.targets.contains(&r.target)
            {
                tg.targets.push(r.target.clone());
            }
        }
        svc.registered = wanted;
    }
    let elb_changed = elb != elb_before;
    if elb_changed {
        writes.push(Write::Elb(Box::new(elb)));
    }
    if svc != before {
        writes.push(Write::Service(Box::new(svc)));
    }
    writes.extend(to_start.iter().cloned().map(Write::Task));
    if writes.is_empty() {
        return Ok(());
    }
    state.apply(inner.store.as_ref(), writes).await?;
    if elb_changed {
        inner.elb.sync(&state.elb);
    }
    for t in to_stop {
        // Connection draining: no new requests reach the task; it stops
        // once those in flight are done (or the deregistration delay has
        // passed).
        let targets = draining_targets.remove(t.id()).unwrap_or_default();
        stop_after_draining(inner, &t, targets);
    }
    if let Some(l) = &launch {
        for t in &to_start {
            inner.agents.start(t, &l.td);
        }
    }
    Ok(())
}

/// A task's targets taken out of their groups: what to write, and the
/// targets to wait for (see [`deregister_task`]).
pub(crate) struct Deregistered {
    pub writes: Vec<Write>,
    pub targets: Vec<(String, crate::elb::Target)>,
}

/// Takes task `id`'s targets out of its service's target groups (as a
/// stop must before the task goes: connection draining). None if it has
/// none.
pub(crate) fn deregister_task(state: &State, id: &str) -> Option<Deregistered> {
    let mut svc = state
        .services
        .values()
        .map(|s| &s.value)
        .find(|s| s.registered.iter().any(|r| r.task == id))?
        .clone();
    let mut elb = state.elb.clone();
    let mut targets = Vec::new();
    svc.registered.retain(|r| {
        if r.task != id {
            return true;
        }
        if let Some(tg) = elb.target_groups.get_mut(&r.target_group_arn) {
            tg.targets.retain(|x| *x != r.target);
        }
        targets.push((r.target_group_arn.clone(), r.target.clone()));
        false
    });
    Some(Deregistered {
        writes: vec![Write::Service(Box::new(svc)), Write::Elb(Box::new(elb))],
        targets,
    })
}

/// Stops task `t` on its agent once `targets` have drained (no request
/// in flight, or their deregistration delay has passed).
pub(crate) fn stop_after_draining(
    inner: &Inner,
    t: &Task,
    targets: Vec<(String, crate::elb::Target)>,
) {
    let instance = t.runs_on().map(String::from);
    let arn = t.task_arn.clone();
    if targets.is_empty() {
        inner.agents.stop(instance.as_deref(), &arn);
        return;
    }
    let elb = Arc::clone(&inner.elb);
    let agents = Arc::clone(&inner.agents);
    tokio::spawn(async move {
        for (tg, target) in targets {
            elb.drained(&tg, &target).await;
        }
        agents.stop(instance.as_deref(), &arn);
    });
}

/// The ACTIVE instances of `cluster` a DAEMON task of `launch` may run on:
/// those meeting its constraints and required attributes.
fn daemon_instances<'a>(state: &'a State, cluster: &str, launch: &Launch) -> Vec<&'a str> {
    let required: Vec<&str> = launch
        .td
        .requires_attributes
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    state
        .instances
        .values()
        .map(|i| &i.value)
        .filter(|i| i.cluster == cluster && i.status == "ACTIVE")
        .filter(|i| {
            let c = Candidate {
                arn: i.container_instance_arn.clone(),
                instance_id: i.ec2_instance_id.clone().unwrap_or_default(),
                active: true,
                agent_connected: i.agent_connected,
                registered_at: i.registered_at,
                running_tasks: 0,
                attributes: i
                    .attributes
                    .iter()
                    .map(|a| (a.name.clone(), a.value.clone()))
                    .collect(),
                remaining_cpu: 0,
                remaining_memory: 0,
                used_tcp: HashSet::new(),
                used_udp: HashSet::new(),
                groups: HashMap::new(),
            };
            required.iter().all(|r| c.attributes.contains_key(*r))
                && launch.constraints.iter().all(|k| match k {
                    Constraint::MemberOf(e) => e.matches(&c),
                    Constraint::DistinctInstance => true,
                })
        })
        .map(|i| i.container_instance_arn.as_str())
        .collect()
}

/// ECS's event when no instance could take a task, naming the closest.
fn unable_to_place(name: &str, failures: &[Failure]) -> String {
    if let Some(f) = failures.first().filter(|f| f.arn.is_none()) {
        // No instance to name (FARGATE capacity): ECS says why as it is.
        return format!(
            "(service {name}) was unable to place a task. Reason: {}.",
            f.reason
        );
    }
    let closest = failures.first().map(|f| {
        let id = f.arn.as_deref().map(name_of).unwrap_or("?");
        let why = match f.reason.as_str() {
            "RESOURCE:MEMORY" => "has insufficient memory available",
            "RESOURCE:CPU" => "has insufficient CPU units available",
            "RESOURCE:PORTS" | "RESOURCE:PORTS_UDP" => {
                "is already using a port required by your task"
            }
            "ATTRIBUTE" => "is missing an attribute required by your task",
            "INACTIVE" => "is not ACTIVE",
            "AGENT" => "has no connected agent",
            _ => "does not meet the placement constraints",
        };
        format!("The closest matching container-instance {id} {why}.")
    });
    unable_to_place_because(
        name,
        closest
            .as_deref()
            .unwrap_or("No Container Instances were found in your cluster."),
    )
}

fn unable_to_place_because(name: &str, reason: &str) -> String {
    format!(
        "(service {name}) was unable to place a task because no container instance met all of its requirements. Reason: {reason}"
    )
}

// ---- the API -----------------------------------------------------------------

/// Fields of CreateService/UpdateService skiff cannot honour yet.
const UNSUPPORTED_SERVICE_FIELDS: &[&str] = &[
    "capacityProviderStrategy",
    "platformVersion",
    "enableExecuteCommand",
    "enableECSManagedTags",
    "serviceConnectConfiguration",
    "volumeConfigurations",
    "vpcLatticeConfigurations",
];

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct CircuitBreakerReq {
    enable: bool,
    rollback: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DeploymentConfigurationReq {
    deployment_circuit_breaker: Option<CircuitBreakerReq>,
    maximum_percent: Option<i64>,
    minimum_healthy_percent: Option<i64>,
}

/// Checks a request's deploymentConfiguration against ECS's rules and
/// fills in the defaults (REPLICA 200/100, DAEMON 100/0).
fn deployment_configuration(
    body: &Value,
    daemon: bool,
    current: Option<DeploymentConfiguration>,
) -> Result<DeploymentConfiguration, ApiError> {
    let Some(given) = body.get("deploymentConfiguration").filter(|v| !v.is_null()) else {
        return Ok(current.unwrap_or(DeploymentConfiguration {
            deployment_circuit_breaker: CircuitBreaker::default(),
            maximum_percent: if daemon { 100 } else { 200 },
            minimum_healthy_percent: if daemon { 0 } else { 100 },
        }));
    };
    refuse(
        given,
        &[
            "lifecycleHooks",
            "canaryConfiguration",
            "linearConfiguration",
        ],
    )?;
    // What DescribeServices returns may be sent back: alarms that are off,
    // the ROLLING strategy, no bake time.
    if given.pointer("/alarms/enable") == Some(&Value::Bool(true)) {
        return Err(ApiError::invalid_parameter(
            "deploymentConfiguration.alarms is not supported by skiff (there are no CloudWatch alarms): set enable to false",
        ));
    }
    only(given, "/strategy", "ROLLING", "")?;
    if given
        .get("bakeTimeInMinutes")
        .and_then(Value::as_i64)
        .is_some_and(|b| b != 0)
    {
        return Err(ApiError::invalid_parameter(
            "bakeTimeInMinutes applies to blue/green deployments, which skiff does not run",
        ));
    }
    // resetOnHealthyTask true is ECS's default and what skiff does.
    if given.pointer("/deploymentCircuitBreaker/resetOnHealthyTask") == Some(&Value::Bool(false)) {
        return Err(ApiError::invalid_parameter(
            "resetOnHealthyTask false is not supported by skiff: a task that runs healthy resets the failure count",
        ));
    }
    let req: DeploymentConfigurationReq = parse(given)?;
    let base = current.unwrap_or(DeploymentConfiguration {
        deployment_circuit_breaker: CircuitBreaker::default(),
        maximum_percent: if daemon { 100 } else { 200 },
        minimum_healthy_percent: if daemon { 0 } else { 100 },
    });
    let max = req
        .maximum_percent
        .unwrap_or(i64::from(base.maximum_percent));
    let min = req
        .minimum_healthy_percent
        .unwrap_or(i64::from(base.minimum_healthy_percent));
    if !(0..=100).contains(&min) {
        return Err(ApiError::invalid_parameter(format!(
            "minimumHealthyPercent must be between 0 and 100, not {min}."
        )));
    }
    if daemon && max != 100 {
        return Err(ApiError::invalid_parameter(
            "The maximumPercent of a DAEMON service must be 100.",
        ));
    }
    if !(100..=i64::from(i32::MAX)).contains(&max) {
        return Err(ApiError::invalid_parameter(format!(
            "maximumPercent must be at least 100, not {max}."
        )));
    }
    if max == 100 && min == 100 && !daemon {
        return Err(ApiError::invalid_parameter(
            "maximumPercent 100 with minimumHealthyPercent 100 leaves a deployment no room to replace a task: lower minimumHealthyPercent or raise maximumPercent.",
        ));
    }
    Ok(DeploymentConfiguration {
        deployment_circuit_breaker: req
            .deployment_circuit_breaker
            .map(|c| CircuitBreaker {
                enable: c.enable,
                rollback: c.rollback,
            })
            .unwrap_or(base.deployment_circuit_breaker),
        maximum_percent: max as u32,
        minimum_healthy_percent: min as u32,
    })
}

/// Refuses a string field (a JSON pointer into the request) holding
/// anything but the one value skiff runs.
fn only(body: &Value, pointer: &str, allowed: &str, why: &str) -> Result<(), ApiError> {
    match body.pointer(pointer).and_then(Value::as_str) {
        Some(v) if v != allowed => {
            let field = pointer.trim_start_matches('/').replace('/', ".");
            Err(ApiError::invalid_parameter(format!(
                "{field} {v} is not supported by skiff{why}: use {allowed}"
            )))
        }
        _ => Ok(()),
    }
}

fn refuse_unsupported(body: &Value) -> Result<(), ApiError> {
    refuse(body, UNSUPPORTED_SERVICE_FIELDS)?;
    only(body, "/propagateTags", "NONE", "")?;
    only(
        body,
        "/availabilityZoneRebalancing",
        "DISABLED",
        " (one availability zone)",
    )?;
    only(
        body,
        "/deploymentController/type",
        "ECS",
        " (rolling updates)",
    )
}

fn check_launch_type(given: Option<&str>) -> Result<String, ApiError> {
    let launch_type = given.unwrap_or("EC2");
    crate::ecs::check_launch(launch_type, None, false)?;
    Ok(launch_type.to_string())
}

/// A service as DescribeServices shows it: the stored record with the
/// counts of its tasks.
fn service_view(state: &State, svc: &Service, with_tags: bool) -> Value {
    let group = svc.group();
    let tasks: Vec<&Task> = state
        .tasks
        .values()
        .map(|t| &t.value)
        .filter(|t| belongs(t, &svc.cluster_arn, &group) && live(t))
        .collect();
    let count = |d: Option<&str>, running: bool| {
        tasks
            .iter()
            .filter(|t| d.is_none_or(|d| t.started_by.as_deref() == Some(d)))
            .filter(|t| (t.last_status == "RUNNING") == running)
            .count()
    };
    let deployments: Vec<Value> = svc
        .deployments
        .iter()
        .map(|d| {
            json!({
                "id": d.id,
                "status": d.status,
                "taskDefinition": d.task_definition,
                "desiredCount": if d.status == "PRIMARY" { svc.desired_count } else { 0 },
                "pendingCount": count(Some(&d.id), false),
                "runningCount": count(Some(&d.id), true),
                "failedTasks": d.failed_tasks,
                "createdAt": d.created_at,
                "updatedAt": d.updated_at,
                "launchType": d.launch_type,
                "rolloutState": d.rollout_state,
                "rolloutStateReason": d.rollout_state_reason,
            })
        })
        .collect();
    let mut v = json!({
        "serviceArn": svc.service_arn,
        "serviceName": svc.service_name,
        "clusterArn": svc.cluster_arn,
        "loadBalancers": svc.load_balancers,
        "serviceRegistries": svc.service_registries,
        "status": svc.status,
        "desiredCount": svc.desired_count,
        "runningCount": count(None, true),
        "pendingCount": count(None, false),
        "launchType": svc.launch_type,
        "taskDefinition": svc.task_definition,
        "deploymentConfiguration": svc.deployment_configuration,
        "deployments": deployments,
        "events": svc.events,
        "createdAt": svc.created_at,
        "placementConstraints": svc.placement_constraints,
        "placementStrategy": svc.placement_strategy,
        "schedulingStrategy": svc.scheduling_strategy,
        "deploymentController": {"type": "ECS"},
        "createdBy": svc.created_by,
        "enableECSManagedTags": false,
        "propagateTags": "NONE",
        "enableExecuteCommand": false,
        "availabilityZoneRebalancing": "DISABLED",
    });
    if let Some(g) = svc.health_check_grace_period_seconds {
        v["healthCheckGracePeriodSeconds"] = json!(g);
    }
    if let Some(r) = &svc.role_arn {
        v["roleArn"] = json!(r);
    }
    if let Some(n) = &svc.network_configuration {
        v["networkConfiguration"] = json!(n);
    }
    if with_tags {
        v["tags"] = to_value(&svc.tags);
    }
    v
}

fn find_service<'a>(state: &'a State, cluster: &str, given: &str) -> Option<&'a Service> {
    state
        .services
        .get(&format!("{cluster}/{}", name_of(given)))
        .map(|s| &s.value)
}

fn not_active() -> ApiError {
    ApiError::not_found("ServiceNotActiveException", "Service was not ACTIVE.")
}

fn service_not_found() -> ApiError {
    ApiError::not_found("ServiceNotFoundException", "Service not found.")
}

fn valid_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty()
        || name.len() > 255
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ApiError::invalid_parameter(format!(
            "Service name {name:?} is invalid: up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed."
        )));
    }
    Ok(())
}

fn grace_period(body: &Value) -> Result<Option<u32>, ApiError> {
    match body.get("healthCheckGracePeriodSeconds") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if (0..=2_147_483_647).contains(&n) => Ok(Some(n as u32)),
            _ => Err(ApiError::invalid_parameter(format!(
                "healthCheckGracePeriodSeconds must be a whole number of seconds from 0, not {v}."
            ))),
        },
    }
}

fn desired_count(body: &Value) -> Result<Option<u32>, ApiError> {
    match body.get("desiredCount") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if (0..=100_000).contains(&n) => Ok(Some(n as u32)),
            _ => Err(ApiError::invalid_parameter(format!(
                "desiredCount must be between 0 and 100000, not {v}."
            ))),
        },
    }
}

fn placement_items(body: &Value, field: &str) -> Result<Option<Vec<PlacementItem>>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => parse(v).map(Some),
    }
}

pub(crate) async fn create_service(
    inner: &Inner,
    body: &Value,
    region: &str,
) -> Result<Value, ApiError> {
    refuse_unsupported(body)?;
    let name = required(body, "serviceName")?.to_string();
    valid_name(&name)?;
    let given_td = required(body, "taskDefinition")?.to_string();
    let strategy = body
        .get("schedulingStrategy")
        .and_then(Value::as_str)
        .unwrap_or("REPLICA")
        .to_string();
    let daemon = match strategy.as_str() {
        "REPLICA" => false,
        "DAEMON" => true,
        other => {
            return Err(ApiError::invalid_parameter(format!(
                "schedulingStrategy must be REPLICA or DAEMON, not {other:?}."
            )));
        }
    };
    let desired = desired_count(body)?;
    if daemon && desired.is_some() {
        return Err(ApiError::invalid_parameter(
            "A DAEMON service runs one task per container instance: leave desiredCount out.",
        ));
    }
    let desired = match (daemon, desired) {
        (true, _) => 0,
        (false, Some(n)) => n,
        (false, None) => {
            return Err(ApiError::invalid_parameter(
                "desiredCount is required for a REPLICA service.",
            ));
        }
    };
    let constraints = placement_items(body, "placementConstraints")?.unwrap_or_default();
    let strategies = placement_items(body, "placementStrategy")?.unwrap_or_default();
    if daemon && !strategies.is_empty() {
        return Err(ApiError::invalid_parameter(
            "Placement strategies are not supported with DAEMON scheduling strategy.",
        ));
    }
    placement_rules(&constraints, &strategies)?;
    let config = deployment_configuration(body, daemon, None)?;
    let launch_type = check_launch_type(body.get("launchType").and_then(Value::as_str))?;
    let tags: Vec<Tag> = match body.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => parse(v)?,
    };
    check_tags(&tags)?;
    let client_token = body
        .get("clientToken")
        .and_then(Value::as_str)
        .map(String::from);
    if client_token
        .as_deref()
        .is_some_and(|t| t.is_empty() || t.len() > 36)
    {
        return Err(ApiError::invalid_parameter(
            "clientToken must be 1 to 36 characters.",
        ));
    }
    let grace = grace_period(body)?;

    let mut state = inner.state.lock().await;
    let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?.clone();
    if let Some(existing) = find_service(&state, &cluster.cluster_name, &name)
        && existing.status != "INACTIVE"
    {
        if client_token.is_some() && existing.client_token == client_token {
            return Ok(json!({ "service": service_view(&state, existing, false) }));
        }
        return Err(ApiError::invalid_parameter(
            "Creation of service was not idempotent.",
        ));
    }
    let td = resolve_taskdef(&state, &given_td, true)?;
    let network = crate::ecs::parse_network_configuration(body)?;
    check_runs(
        &launch_type,
        &td,
        !constraints.is_empty() || !strategies.is_empty(),
        network.as_ref(),
    )?;
    check_groups(&state, network.as_ref())?;
    let registries = service_registries(&state, body, &td)?.unwrap_or_default();
    let balancers = load_balancers(&state, body, &td)?.unwrap_or_default();
    let desired = if daemon {
        // One task per instance it may run on, from the start.
        let (c, s) = placement_rules(&constraints, &strategies)?;
        let launch = Launch::new(td.clone(), c, s, format!("service:{name}"))?;
        daemon_instances(&state, &cluster.cluster_name, &launch).len() as u32
    } else {
        desired
    };
    let at = now();
    let mut svc = Service {
        service_arn: arn(
            "ecs",
            region,
            &format!("service/{}/{name}", cluster.cluster_name),
        ),
        service_name: name.clone(),
        cluster_arn: cluster.cluster_arn.clone(),
        status: "ACTIVE".into(),
        desired_count: desired,
        task_definition: td.task_definition_arn.clone(),
        launch_type,
        scheduling_strategy: strategy,
        deployment_configuration: config,
        placement_constraints: constraints,
        placement_strategy: strategies,
        health_check_grace_period_seconds: grace,
        role_arn: body.get("role").and_then(Value::as_str).map(String::from),
        deployments: Vec::new(),
        events: Vec::new(),
        created_at: at,
        created_by: format!("arn:aws:iam::{}:root", crate::model::ACCOUNT),
        tags,
        client_token,
        steady: false,
        last_completed: None,
        network_configuration: network,
        service_registries: registries,
        load_balancers: balancers,
        registered: Vec::new(),
    };
    let id = deployment_id(inner);
    svc.new_deployment(at, id, "ECS deployment in progress.");
    save(inner, &mut state, svc).await
}

/// Can the service's tasks run from `td`, with its launch type, placement
/// and network configuration?
fn check_runs(
    svc_launch: &str,
    td: &TaskDefinition,
    placement_given: bool,
    network: Option<&NetworkConfiguration>,
) -> Result<(), ApiError> {
    crate::ecs::check_launch(svc_launch, Some(td), placement_given)?;
    crate::ecs::check_network_configuration(td, network)
}

/// The security groups a service's network configuration names exist.
fn check_groups(state: &State, network: Option<&NetworkConfiguration>) -> Result<(), ApiError> {
    if let Some(vpc) = network.and_then(|n| n.awsvpc_configuration.as_ref()) {
        crate::ec2::resolve_groups(state, &vpc.security_groups)?;
    }
    Ok(())
}

pub(crate) async fn update_service(inner: &Inner, body: &Value) -> Result<Value, ApiError> {
    refuse_unsupported(body)?;
    let given = required(body, "service")?;
    let desired = desired_count(body)?;
    let force = body
        .get("forceNewDeployment")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let constraints = placement_items(body, "placementConstraints")?;
    let strategies = placement_items(body, "placementStrategy")?;
    let grace = grace_period(body)?;
    if let Some(l) = body.get("launchType").and_then(Value::as_str) {
        check_launch_type(Some(l))?;
    }
    let mut state = inner.state.lock().await;
    let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?.clone();
    let mut svc = find_service(&state, &cluster.cluster_name, given)
        .cloned()
        .ok_or_else(service_not_found)?;
    if svc.status != "ACTIVE" {
        return Err(not_active());
    }
    let daemon = svc.is_daemon();
    if daemon && desired.is_some() {
        return Err(ApiError::invalid_parameter(
            "A DAEMON service runs one task per container instance: its desiredCount cannot be set.",
        ));
    }
    if daemon && strategies.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid_parameter(
            "Placement strategies are not supported with DAEMON scheduling strategy.",
        ));
    }
    placement_rules(
        constraints.as_deref().unwrap_or(&svc.placement_constraints),
        strategies.as_deref().unwrap_or(&svc.placement_strategy),
    )?;
    svc.deployment_configuration =
        deployment_configuration(body, daemon, Some(svc.deployment_configuration))?;
    let mut redeploy = force;
    let network = crate::ecs::parse_network_configuration(body)?;
    let given_td = body.get("taskDefinition").and_then(Value::as_str);
    if given_td.is_some()
        || network.is_some()
        || body.get("serviceRegistries").is_some()
        || body.get("loadBalancers").is_some()
    {
        let td = match given_td {
            Some(given) => resolve_taskdef(&state, given, true)?,
            None => crate::ecs::taskdef_of(&state, &svc.task_definition).ok_or_else(|| {
                ApiError::client("The service's task definition no longer exists.")
            })?,
        };
        let network = network.or_else(|| svc.network_configuration.clone());
        let placement_given = !constraints
            .as_deref()
            .unwrap_or(&svc.placement_constraints)
            .is_empty()
            || !strategies
                .as_deref()
                .unwrap_or(&svc.placement_strategy)
                .is_empty();
        check_runs(&svc.launch_type, &td, placement_given, network.as_ref())?;
        check_groups(&state, network.as_ref())?;
        if let Some(regs) = service_registries(&state, body, &td)?
            && regs != svc.service_registries
        {
            svc.service_registries = regs;
            redeploy = true;
        }
        match load_balancers(&state, body, &td)? {
            Some(lbs) if lbs != svc.load_balancers => {
                svc.load_balancers = lbs;
                redeploy = true;
            }
            Some(_) => {}
            // A new definition must still carry the balanced ports.
            None if given_td.is_some() && !svc.load_balancers.is_empty() => {
                let current = json!({ "loadBalancers": svc.load_balancers });
                load_balancers(&state, &current, &td)?;
            }
            None => {}
        }
        if td.task_definition_arn != svc.task_definition {
            svc.task_definition = td.task_definition_arn;
            redeploy = true;
        }
        if network != svc.network_configuration {
            svc.network_configuration = network;
            redeploy = true;
        }
    }
    if let Some(c) = constraints
        && c != svc.placement_constraints
    {
        svc.placement_constraints = c;
        redeploy = true;
    }
    if let Some(s) = strategies
        && s != svc.placement_strategy
    {
        svc.placement_strategy = s;
        redeploy = true;
    }
    if let Some(n) = desired {
        svc.desired_count = n;
    }
    if grace.is_some() {
        svc.health_check_grace_period_seconds = grace;
    }
    let at = now();
    if redeploy {
        let id = deployment_id(inner);
        svc.new_deployment(at, id, "ECS deployment in progress.");
    } else if let Some(p) = svc.deployments.first_mut() {
        p.updated_at = at;
    }
    svc.steady = svc.steady && !redeploy && desired.is_none();
    save(inner, &mut state, svc).await
}

/// Commits a service a request changed, wakes the scheduler to act on it,
/// and answers with it.
async fn save(inner: &Inner, state: &mut State, svc: Service) -> Result<Value, ApiError> {
    state
        .apply(
            inner.store.as_ref(),
            vec![Write::Service(Box::new(svc.clone()))],
        )
        .await?;
    inner.wake.notify_one();
    Ok(json!({ "service": service_view(state, &svc, false) }))
}

pub(crate) async fn delete_service(inner: &Inner, body: &Value) -> Result<Value, ApiError> {
    let given = required(body, "service")?;
    let force = body.get("force").and_then(Value::as_bool).unwrap_or(false);
    let mut state = inner.state.lock().await;
    let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?.clone();
    let mut svc = find_service(&state, &cluster.cluster_name, given)
        .cloned()
        .ok_or_else(service_not_found)?;
    match svc.status.as_str() {
        "DRAINING" => return Ok(json!({ "service": service_view(&state, &svc, false) })),
        "INACTIVE" => return Err(not_active()),
        _ => {}
    }
    if !svc.is_daemon() && svc.desired_count > 0 && !force {
        return Err(ApiError::invalid_parameter(
            "The service cannot be stopped while it is scaled above 0.",
        ));
    }
    svc.status = "DRAINING".into();
    svc.desired_count = 0;
    svc.steady = false;
    save(inner, &mut state, svc).await
}

pub(crate) async fn describe_services(
    inner: &Inner,
    body: &Value,
    region: &str,
) -> Result<Value, ApiError> {
    let given = string_list(body, "services")?;
    if given.is_empty() || given.len() > 10 {
        return Err(ApiError::invalid_parameter(
            "services must name 1 to 10 services.",
        ));
    }
    let state = inner.state.lock().await;
    let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?;
    let mut services = Vec::new();
    let mut failures = Vec::new();
    for g in given {
        match find_service(&state, &cluster.cluster_name, &g) {
            Some(s) => services.push(service_view(&state, s, includes(body, "TAGS"))),
            None => failures.push(Failure::missing(if g.starts_with("arn:") {
                g.clone()
            } else {
                arn(
                    "ecs",
                    region,
                    &format!("service/{}/{g}", cluster.cluster_name),
                )
            })),
        }
    }
    Ok(json!({ "services": services, "failures": failures }))
}

pub(crate) async fn list_services(inner: &Inner, body: &Value) -> Result<Value, ApiError> {
    let launch_type = body.get("launchType").and_then(Value::as_str);
    let strategy = body.get("schedulingStrategy").and_then(Value::as_str);
    if let Some(s) = strategy
        && !matches!(s, "REPLICA" | "DAEMON")
    {
        return Err(ApiError::invalid_parameter(
            "schedulingStrategy must be REPLICA or DAEMON.",
        ));
    }
    let state = inner.state.lock().await;
    let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?;
    let arns: Vec<String> = state
        .services
        .values()
        .map(|s| &s.value)
        .filter(|s| s.cluster_arn == cluster.cluster_arn && s.status != "INACTIVE")
        .filter(|s| launch_type.is_none_or(|l| s.launch_type == l))
        .filter(|s| strategy.is_none_or(|st| s.scheduling_strategy == st))
        .map(|s| s.service_arn.clone())
        .collect();
    listed(body, "serviceArns", arns)
}

/// The services of a cluster that count as active (ACTIVE or DRAINING).
pub(crate) fn active_services(state: &State, cluster_arn: &str) -> usize {
    state
        .services
        .values()
        .filter(|s| s.value.cluster_arn == cluster_arn && s.value.status == "ACTIVE")
        .count()
}

/// Whether any service of the cluster is not yet INACTIVE.
pub(crate) fn has_services(state: &State, cluster_arn: &str) -> bool {
    state
        .services
        .values()
        .any(|s| s.value.cluster_arn == cluster_arn && s.value.status != "INACTIVE")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "ecs-svc/1";
    const NEW: &str = "ecs-svc/2";

    fn service(desired: u32, max: u32, min: u32) -> Service {
        let mut s = Service {
            service_arn: "arn:aws:ecs:us-east-1:000000000000:service/default/web".into(),
            service_name: "web".into(),
            cluster_arn: "arn:aws:ecs:us-east-1:000000000000:cluster/default".into(),
            status: "ACTIVE".into(),
            desired_count: desired,
            task_definition: "web:1".into(),
            launch_type: "EC2".into(),
            scheduling_strategy: "REPLICA".into(),
            deployment_configuration: DeploymentConfiguration {
                deployment_circuit_breaker: CircuitBreaker::default(),
                maximum_percent: max,
                minimum_healthy_percent: min,
            },
            placement_constraints: Vec::new(),
            placement_strategy: Vec::new(),
            health_check_grace_period_seconds: None,
            role_arn: None,
            deployments: Vec::new(),
            events: Vec::new(),
            created_at: 0.0,
            created_by: String::new(),
            tags: Vec::new(),
            client_token: None,
            steady: false,
            last_completed: None,
            network_configuration: None,
            service_registries: Vec::new(),
            load_balancers: Vec::new(),
            registered: Vec::new(),
        };
        s.new_deployment(0.0, OLD.into(), "");
        s
    }

    /// `web` rolling from web:1 (OLD) to web:2 (NEW).
    fn rolling(desired: u32, max: u32, min: u32) -> Service {
        let mut s = service(desired, max, min);
        s.deployments[0].rollout_state = "COMPLETED".into();
        s.last_completed = Some(Completed {
            deployment_id: OLD.into(),
            task_definition: "web:1".into(),
        });
        s.task_definition = "web:2".into();
        s.new_deployment(1.0, NEW.into(), "");
        s
    }

    fn task(id: &str, deployment: &str, status: &str) -> Task {
        serde_json::from_value(json!({
            "taskArn": format!("arn:aws:ecs:us-east-1:000000000000:task/default/{id}"),
            "clusterArn": "arn:aws:ecs:us-east-1:000000000000:cluster/default",
            "taskDefinitionArn": "web:1", "overrides": {}, "lastStatus": status,
            "desiredStatus": if status == "STOPPED" { "STOPPED" } else { "RUNNING" },
            "cpu": "0", "memory": "8", "containers": [], "launchType": "EC2", "version": 1,
            "createdAt": id.trim_start_matches(|c: char| c.is_alphabetic()).parse::<f64>().unwrap_or(0.0),
            "startedBy": deployment, "group": "service:web",
            "containerInstanceArn": "i-1",
            "startedAt": if status == "RUNNING" { json!(1.0) } else { Value::Null },
        }))
        .unwrap()
    }

    fn failed_task(id: &str, deployment: &str) -> Task {
        let mut t = task(id, deployment, "STOPPED");
        t.stop_code = Some("TaskFailedToStart".into());
        t
    }

    fn world<'a>(tasks: &'a [Task], now: f64) -> World<'a> {
        World {
            tasks: tasks.iter().collect(),
            draining: HashSet::new(),
            eligible: Vec::new(),
            now,
            elb_failed: HashMap::new(),
        }
    }

    fn run(svc: &mut Service, tasks: &[Task], now: f64) -> Vec<Action> {
        let mut n = 2;
        let mut ids = || {
            n += 1;
            format!("ecs-svc/{n}")
        };
        decide(svc, &world(tasks, now), &mut ids)
    }

    fn stops(actions: &[Action]) -> Vec<&str> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Stop { task, .. } => Some(task.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_new_service_starts_its_desired_count_then_reaches_a_steady_state() {
        let mut s = service(3, 200, 100);
        assert_eq!(run(&mut s, &[], 10.0), vec![Action::Start { count: 3 }]);
        assert!(s.events.is_empty());
        let tasks = [
            task("a1", OLD, "RUNNING"),
            task("a2", OLD, "RUNNING"),
            task("a3", OLD, "PENDING"),
        ];
        assert_eq!(run(&mut s, &tasks, 11.0), vec![]);
        assert_eq!(s.deployments[0].rollout_state, "IN_PROGRESS");
        let tasks = [
            task("a1", OLD, "RUNNING"),
            task("a2", OLD, "RUNNING"),
            task("a3", OLD, "RUNNING"),
        ];
        assert_eq!(run(&mut s, &tasks, 12.0), vec![]);
        assert_eq!(s.deployments[0].rollout_state, "COMPLETED");
        let messages: Vec<&str> = s.events.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "(service web) has reached a steady state.",
                "(service web) (deployment ecs-svc/1) deployment completed."
            ]
        );
        assert_eq!(s.last_completed.as_ref().unwrap().task_definition, "web:1");
        // Steady holds: nothing new is said.
        run(&mut s, &tasks, 13.0);
        assert_eq!(s.events.len(), 2);
        // A deployment later: its end is a steady state again, said again
        // even within minutes.
        s.new_deployment(14.0, NEW.into(), "");
        let new = [
            task("b1", NEW, "RUNNING"),
            task("b2", NEW, "RUNNING"),
            task("b3", NEW, "RUNNING"),
        ];
        run(&mut s, &new, 15.0);
        assert_eq!(
            s.events[0].message,
            "(service web) has reached a steady state."
        );
        assert_eq!(s.events.len(), 4);
    }

    #[test]
    fn a_rolling_deployment_stays_within_maximum_and_minimum_percent() {
        // 200/100: all new tasks first, then the old ones go.
        let mut s = rolling(3, 200, 100);
        let old = [
            task("o1", OLD, "RUNNING"),
            task("o2", OLD, "RUNNING"),
            task("o3", OLD, "RUNNING"),
        ];
        assert_eq!(run(&mut s, &old, 10.0), vec![Action::Start { count: 3 }]);
        let mut tasks = old.to_vec();
        tasks.extend([
            task("n4", NEW, "RUNNING"),
            task("n5", NEW, "PENDING"),
            task("n6", NEW, "PENDING"),
        ]);
        // 4 healthy, 3 must stay: one old task may go.
        assert_eq!(stops(&run(&mut s, &tasks, 11.0)).len(), 1);

        // 100/50 with 4: no room above 4, so two old go first, then two new start.
        let mut s = rolling(4, 100, 50);
        let old: Vec<Task> = (1..=4)
            .map(|i| task(&format!("o{i}"), OLD, "RUNNING"))
            .collect();
        let a = run(&mut s, &old, 10.0);
        assert_eq!(stops(&a).len(), 2);
        assert!(!a.iter().any(|a| matches!(a, Action::Start { .. })));
        let left = [old[0].clone(), old[1].clone()];
        assert_eq!(run(&mut s, &left, 11.0), vec![Action::Start { count: 2 }]);
        // Once the old deployment has no task left it is gone.
        let new: Vec<Task> = (5..=8)
            .map(|i| task(&format!("n{i}"), NEW, "RUNNING"))
            .collect();
        assert_eq!(run(&mut s, &new, 12.0), vec![]);
        assert_eq!(s.deployments.len(), 1);
        assert_eq!(s.deployments[0].rollout_state, "COMPLETED");
    }

    #[test]
    fn scaling_down_stops_pending_then_newest_tasks() {
        let mut s = service(1, 200, 100);
        let tasks = [
            task("a1", OLD, "RUNNING"),
            task("a2", OLD, "RUNNING"),
            task("a3", OLD, "PENDING"),
        ];
        let a = run(&mut s, &tasks, 10.0);
        assert_eq!(stops(&a), ["a3", "a2"]);
        assert!(
            matches!(&a[0], Action::Stop { reason, .. } if reason == "Scaling activity initiated by (deployment ecs-svc/1)")
        );
    }

    #[test]
    fn the_circuit_breaker_fails_a_deployment_and_rolls_back() {
        let mut s = rolling(1, 200, 100);
        s.deployment_configuration.deployment_circuit_breaker = CircuitBreaker {
            enable: true,
            rollback: true,
        };
        let mut tasks = vec![task("o1", OLD, "RUNNING")];
        tasks.push(failed_task("f1", NEW));
        tasks.push(failed_task("f2", NEW));
        run(&mut s, &tasks, 10.0);
        assert_eq!(s.deployments[0].failed_tasks, 2);
        assert_eq!(s.deployments[0].rollout_state, "IN_PROGRESS");
        tasks.push(failed_task("f3", NEW));
        run(&mut s, &tasks, 20.0);
        // The same stopped tasks are never counted twice.
        assert_eq!(s.deployments.len(), 3);
        assert_eq!(s.deployments[0].status, "PRIMARY");
        assert_eq!(s.deployments[0].task_definition, "web:1");
        assert_eq!(
            s.deployments[0].rollout_state_reason,
            "ECS deployment circuit breaker: rolling back to deploymentId ecs-svc/1."
        );
        assert_eq!(s.deployments[1].id, NEW);
        assert_eq!(s.deployments[1].rollout_state, "FAILED");
        assert_eq!(s.deployments[1].failed_tasks, 3);
        assert_eq!(s.task_definition, "web:1");
        assert!(s.events.iter().any(|e| e.message
            == "(service web) (deployment ecs-svc/2) deployment failed: tasks failed to start."));

        // Without rollback the deployment fails and starts nothing more.
        let mut s = rolling(1, 200, 100);
        s.deployment_configuration.deployment_circuit_breaker = CircuitBreaker {
            enable: true,
            rollback: false,
        };
        let tasks = [
            failed_task("f1", NEW),
            failed_task("f2", NEW),
            failed_task("f3", NEW),
        ];
        let a = run(&mut s, &tasks, 100.0);
        assert_eq!(s.deployments[0].rollout_state, "FAILED");
        assert!(a.is_empty(), "{a:?}");
    }

    #[test]
    fn a_task_that_ran_resets_the_failure_count_and_ends_the_backoff() {
        let mut s = service(1, 200, 100);
        s.deployment_configuration.deployment_circuit_breaker.enable = true;
        let tasks = [failed_task("f1", OLD), failed_task("f2", OLD)];
        // Two failures in a row: wait a second before the next start.
        assert_eq!(run(&mut s, &tasks, 10.0), vec![]);
        assert_eq!(run(&mut s, &tasks, 10.5), vec![]);
        assert_eq!(run(&mut s, &tasks, 11.0), vec![Action::Start { count: 1 }]);
        let mut ok = task("r3", OLD, "RUNNING");
        ok.started_at = Some(12.0);
        let tasks = [failed_task("f1", OLD), failed_task("f2", OLD), ok];
        // Running is not yet proof: a crash loop runs too, briefly.
        run(&mut s, &tasks, 15.0);
        assert_eq!(s.deployments[0].consecutive_failures, 2);
        run(&mut s, &tasks, 22.0);
        assert_eq!(
            (
                s.deployments[0].failed_tasks,
                s.deployments[0].consecutive_failures
            ),
            (0, 0)
        );
        assert!(s.deployments[0].succeeded);
    }

    #[test]
    fn unhealthy_tasks_are_replaced_after_the_grace_period() {
        let mut s = service(1, 200, 100);
        s.health_check_grace_period_seconds = Some(30);
        let mut t = task("u1", OLD, "RUNNING");
        t.health_status = Some("UNHEALTHY".into());
        let tasks = [t];
        assert_eq!(run(&mut s, &tasks, 20.0), vec![]);
        let a = run(&mut s, &tasks, 40.0);
        assert_eq!(
            a[0],
            Action::Stop {
                task: "u1".into(),
                reason: "Task failed container health checks".into()
            }
        );
        assert_eq!(a[1], Action::Start { count: 1 });
        assert_eq!(s.deployments[0].failed_tasks, 1);
    }

    #[test]
    fn tasks_on_draining_instances_move_keeping_the_minimum_healthy() {
        let mut s = service(1, 200, 100);
        let tasks = [task("d1", OLD, "RUNNING")];
        let mut w = world(&tasks, 10.0);
        w.draining.insert("i-1");
        let a = decide(&mut s, &w, &mut || "x".into());
        assert_eq!(a, vec![Action::Start { count: 1 }]);
        let mut tasks = tasks.to_vec();
        let mut moved = task("m2", OLD, "RUNNING");
        moved.container_instance_arn = Some("i-2".into());
        tasks.push(moved);
        let mut w = world(&tasks, 11.0);
        w.draining.insert("i-1");
        assert_eq!(stops(&decide(&mut s, &w, &mut || "x".into())), ["d1"]);
    }

    #[test]
    fn a_daemon_runs_one_task_per_eligible_instance() {
        let mut s = service(0, 100, 0);
        s.scheduling_strategy = "DAEMON".into();
        let mut elsewhere = task("x2", OLD, "RUNNING");
        elsewhere.container_instance_arn = Some("i-gone".into());
        let tasks = [task("a1", OLD, "RUNNING"), elsewhere];
        let mut w = world(&tasks, 10.0);
        w.eligible = vec!["i-1", "i-2"];
        let a = decide(&mut s, &w, &mut || "x".into());
        assert_eq!(
            a,
            vec![
                Action::Stop {
                    task: "x2".into(),
                    reason: "Scaling activity initiated by (deployment ecs-svc/1)".into()
                },
                Action::StartOn {
                    instance: "i-2".into()
                }
            ]
        );
        assert_eq!(s.desired_count, 2);
        // A new deployment replaces each instance's task: stop, then start.
        s.new_deployment(11.0, NEW.into(), "");
        let tasks = [task("a1", OLD, "RUNNING")];
        let mut w = world(&tasks, 12.0);
        w.eligible = vec!["i-1"];
        assert_eq!(stops(&decide(&mut s, &w, &mut || "x".into())), ["a1"]);
    }

    #[test]
    fn a_deleted_service_is_inactive_once_its_tasks_stopped() {
        let mut s = service(0, 200, 100);
        s.status = "DRAINING".into();
        let tasks = [task("a1", OLD, "RUNNING")];
        assert_eq!(stops(&run(&mut s, &tasks, 10.0)), ["a1"]);
        assert_eq!(s.status, "DRAINING");
        let tasks = [task("a1", OLD, "STOPPED")];
        assert_eq!(run(&mut s, &tasks, 11.0), vec![]);
        assert_eq!(s.status, "INACTIVE");
    }

    #[test]
    fn a_failing_rollback_stays_failed_instead_of_looping() {
        let mut s = rolling(1, 200, 100);
        s.deployment_configuration.deployment_circuit_breaker = CircuitBreaker {
            enable: true,
            rollback: true,
        };
        let mut tasks = vec![
            failed_task("f1", NEW),
            failed_task("f2", NEW),
            failed_task("f3", NEW),
        ];
        run(&mut s, &tasks, 10.0);
        let rollback = s.deployments[0].id.clone();
        assert_ne!(rollback, NEW);
        // The rollback's tasks fail as well: it fails, and nothing more is
        // deployed.
        tasks.extend(["r1", "r2", "r3"].map(|id| failed_task(id, &rollback)));
        let a = run(&mut s, &tasks, 20.0);
        assert_eq!(s.deployments[0].id, rollback);
        assert_eq!(s.deployments[0].rollout_state, "FAILED");
        assert!(a.is_empty(), "{a:?}");
        // Only the newest failed deployment stays in view beside the primary.
        assert_eq!(
            s.deployments
                .iter()
                .filter(|d| d.status != "PRIMARY" && d.rollout_state == "FAILED")
                .count(),
            1
        );
    }

    #[test]
    fn a_crash_loop_counts_as_failures_and_stopping_tasks_hold_their_room() {
        let mut s = service(1, 100, 0);
        s.deployment_configuration.deployment_circuit_breaker.enable = true;
        // Ran a second, then its essential container exited.
        let crashed = |id: &str| {
            let mut t = failed_task(id, OLD);
            t.stop_code = Some("EssentialContainerExited".into());
            t.started_at = Some(1.0);
            t.stopped_at = Some(2.0);
            t
        };
        let tasks = [crashed("c1"), crashed("c2")];
        run(&mut s, &tasks, 10.0);
        assert_eq!(s.deployments[0].failed_tasks, 2);
        assert!(!s.deployments[0].succeeded);
        // A task still stopping holds the one slot maximumPercent 100 allows.
        let mut s = rolling(1, 100, 0);
        let mut stopping = task("o1", OLD, "RUNNING");
        stopping.desired_status = "STOPPED".into();
        assert_eq!(run(&mut s, &[stopping], 10.0), vec![]);
    }

    #[test]
    fn the_failure_threshold_is_half_the_desired_count_from_3_to_200() {
        assert_eq!(failure_threshold(1), 3);
        assert_eq!(failure_threshold(10), 5);
        assert_eq!(failure_threshold(11), 6);
        assert_eq!(failure_threshold(1000), 200);
        assert_eq!(
            (backoff(1), backoff(2), backoff(3), backoff(40)),
            (0.0, 1.0, 2.0, 300.0)
        );
    }
}
