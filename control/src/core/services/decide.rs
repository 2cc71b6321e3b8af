//! The service scheduler's rules, pure: given a service and its tasks,
//! what to start and what to stop — REPLICA within maximumPercent and
//! minimumHealthyPercent, DAEMON one per eligible instance, failures
//! counted and backed off, the circuit breaker, steady state. Unit-tested
//! without a store or an agent.

use crate::core::model::Task;
use crate::core::services::{Completed, Service};
use std::collections::{HashMap, HashSet};

/// What the scheduler does next for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Start `count` tasks of the PRIMARY deployment wherever placement
    /// puts them.
    Start { count: usize },
    /// Start one task of the PRIMARY deployment on this instance (DAEMON).
    StartOn { instance: String },
    /// Start `count` tasks of this task set (EXTERNAL services).
    StartSet { task_set: String, count: usize },
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
/// container exited. (One that ended with skiff serve is a
/// `TerminationNotice`: its deployment is not to blame.)
pub(crate) fn failed(t: &Task) -> bool {
    t.last_status == "STOPPED"
        && matches!(
            t.stop_code.as_deref(),
            Some("TaskFailedToStart" | "EssentialContainerExited")
        )
}

/// How long a task without a health check must run before it shows that
/// its deployment works (a task that exits sooner is a crash loop).
pub(crate) const PROVEN_AFTER_SECS: f64 = 10.0;

/// A task that shows its deployment works: HEALTHY, or, without a health
/// check, RUNNING for [`PROVEN_AFTER_SECS`]. The first one ends the
/// circuit breaker's count; each one ends the backoff.
pub(crate) fn proven(t: &Task, now: f64) -> bool {
    let Some(started) = t.started_at else {
        return false;
    };
    match t.health_status.as_deref() {
        Some(h) => h == "HEALTHY",
        None => t.stopped_at.unwrap_or(now) - started >= PROVEN_AFTER_SECS,
    }
}

/// Orders tasks cheapest to lose first: pending before running, then the
/// newest.
pub(crate) fn cheapest_first(tasks: &mut [&Task]) {
    tasks.sort_by(|a, b| {
        let ra = a.last_status == "RUNNING";
        let rb = b.last_status == "RUNNING";
        ra.cmp(&rb).then(b.created_at.total_cmp(&a.created_at))
    });
}

/// Why a task that has failed its health checks (after the grace period,
/// `grace` seconds) is stopped — its load balancer's reason, else its
/// container checks' — or None if it has not.
pub(crate) fn failed_health(t: &Task, world: &World<'_>, grace: f64) -> Option<String> {
    let unhealthy = t.health_status.as_deref() == Some("UNHEALTHY")
        && t.started_at.is_some_and(|s| world.now - s >= grace);
    unhealthy.then(|| {
        world
            .elb_failed
            .get(t.id())
            .cloned()
            .unwrap_or_else(|| "Task failed container health checks".into())
    })
}

/// A task the service still wants.
pub(crate) fn live(t: &Task) -> bool {
    t.desired_status == "RUNNING" && t.last_status != "STOPPED"
}

/// A task that counts toward `minimumHealthyPercent`: running and, if it
/// is health-checked, HEALTHY.
pub(crate) fn healthy_running(t: &Task) -> bool {
    live(t)
        && t.last_status == "RUNNING"
        && t.health_status.as_deref().is_none_or(|h| h == "HEALTHY")
}

/// How a rollback deployment's rolloutStateReason begins.
pub(crate) const ROLLING_BACK: &str =
    "ECS deployment circuit breaker: rolling back to deploymentId ";

/// The circuit breaker's threshold: half the desired count, 3 to 200.
pub(crate) fn failure_threshold(desired: u32) -> u32 {
    desired.div_ceil(2).clamp(3, 200)
}

/// How long the scheduler waits before starting another task after `n`
/// consecutive failures: none after one, then 1 s doubling to 5 minutes.
pub(crate) fn backoff(n: u32) -> f64 {
    if n <= 1 {
        0.0
    } else {
        f64::from(2u32.saturating_pow(n - 2).min(300))
    }
}

/// One pass's work in progress: what it has decided so far.
pub(crate) struct Pass<'w, 'a> {
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
        cheapest_first(&mut v);
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
    if svc.is_external() {
        return super::task_sets::decide(svc, world);
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
pub(crate) fn account(svc: &mut Service, pass: &mut Pass<'_, '_>) {
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
            let sick = live(t)
                .then(|| failed_health(t, pass.world, grace))
                .flatten();
            let unhealthy = sick.is_some();
            if let Some(reason) = sick {
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
pub(crate) fn trip_breaker(svc: &mut Service, now: f64, new_id: &mut dyn FnMut() -> String) {
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
        svc.record(
            &failed_id,
            "ROLLBACK_IN_PROGRESS",
            "ECS deployment circuit breaker: tasks failed to start; rolling back.",
            now,
        );
        svc.event(
            now,
            format!(
                "(service {name}) rolling back to deployment {}.",
                back.deployment_id
            ),
        );
    } else if was_rollback {
        // The rollback failed: so did the deployment it rolled back from.
        let why = "ECS deployment circuit breaker: the rollback's tasks failed to start.";
        let source = svc
            .history
            .iter()
            .rev()
            .find(|r| r.id == failed_id)
            .and_then(|r| r.source.clone());
        svc.record(&failed_id, "ROLLBACK_FAILED", why, now);
        if let Some(from) = source {
            svc.record(&from, "ROLLBACK_FAILED", why, now);
        }
    } else {
        svc.record(
            &failed_id,
            "STOPPED",
            "ECS deployment circuit breaker: tasks failed to start.",
            now,
        );
    }
}

/// REPLICA: `desiredCount` tasks of the PRIMARY deployment, rolled out
/// within maximumPercent and minimumHealthyPercent.
pub(crate) fn replica(svc: &Service, pass: &mut Pass<'_, '_>, may_start: bool) {
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
    // Too many of the primary: scale in, sparing tasks protected from it
    // (UpdateTaskProtection) while the service is ACTIVE.
    let excess = primary.len().saturating_sub(desired);
    let now = pass.world.now;
    let spare = |t: &Task| svc.status == "ACTIVE" && t.protected_at(now);
    let going: Vec<&Task> = primary
        .iter()
        .copied()
        .filter(|t| !spare(t))
        .take(excess)
        .collect();
    for t in &going {
        pass.scale_in(t);
    }
    // Too few: start, within maximumPercent — which counts every task not
    // yet STOPPED, stopping ones included (they still hold resources).
    let want = desired.saturating_sub(primary.len() - going.len());
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
    // A deployment waits for a protected task's protection to end.
    let others: Vec<&Task> = pass
        .alive()
        .into_iter()
        .filter(|t| !pass.is_primary(t) || pass.on_draining(t))
        .filter(|t| !spare(t))
        .collect();
    pass.retire(others, min_healthy);
}

/// DAEMON: one task of the PRIMARY deployment on every eligible instance;
/// a new deployment replaces each instance's task, stop first.
pub(crate) fn daemon(svc: &mut Service, pass: &mut Pass<'_, '_>, may_start: bool) {
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
pub(crate) fn settle(svc: &mut Service, pass: &Pass<'_, '_>) {
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
    // More running than wanted, and the rest protected: ECS says why.
    let protected = tasks
        .iter()
        .filter(|t| live(t) && pass.is_primary(t) && t.protected_at(now))
        .count();
    let live_primary = tasks
        .iter()
        .filter(|t| live(t) && pass.is_primary(t) && !pass.stopping.contains(t.id()))
        .count();
    if svc.status == "ACTIVE" && live_primary > want && protected > 0 {
        svc.event_once(
            now,
            format!(
                "(service {name}) was unable to scale in due to (reason: {protected} tasks under protection)."
            ),
        );
    }
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
            svc.record(&id, "SUCCESSFUL", "Service deployment completed.", now);
            // A rollback that completed: the deployment it rolled back from
            // is rolled back.
            let source = svc
                .history
                .iter()
                .rev()
                .find(|r| r.id == id)
                .and_then(|r| r.source.clone());
            if let Some(from) = source
                && svc
                    .history
                    .iter()
                    .any(|r| r.id == from && r.status == "ROLLBACK_IN_PROGRESS")
            {
                svc.record(&from, "ROLLBACK_SUCCESSFUL", "Rolled back.", now);
            }
        }
        if !svc.steady {
            svc.steady = true;
            svc.event(now, format!("(service {name}) has reached a steady state."));
        }
    }
}

/// The test fixtures, for the task sets' tests too.
#[cfg(test)]
pub(crate) use tests::{service, stops, task};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::services::{CircuitBreaker, DeploymentConfiguration};
    use serde_json::{Value, json};

    const OLD: &str = "ecs-svc/1";
    const NEW: &str = "ecs-svc/2";

    pub(crate) fn service(desired: u32, max: u32, min: u32) -> Service {
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
            capacity_provider_strategy: Vec::new(),
            platform_version: None,
            enable_ecs_managed_tags: false,
            propagate_tags: None,
            enable_execute_command: false,
            history: Vec::new(),
            deployment_controller: None,
            task_sets: Vec::new(),
            express: None,
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

    pub(crate) fn task(id: &str, deployment: &str, status: &str) -> Task {
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

    pub(crate) fn stops(actions: &[Action]) -> Vec<&str> {
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
    fn scale_in_spares_protected_tasks_until_their_protection_ends() {
        let mut svc = service(3, 200, 100);
        let mut tasks: Vec<Task> = ["t1", "t2", "t3"]
            .iter()
            .map(|id| task(id, OLD, "RUNNING"))
            .collect();
        // The newest two, which scale-in would stop first, are protected:
        // from 3 to 1 only the oldest may go.
        tasks[1].protected_until = Some(200.0);
        tasks[2].protected_until = Some(200.0);
        svc.desired_count = 1;
        assert_eq!(stops(&run(&mut svc, &tasks, 100.0)), ["t1"]);
        assert!(
            svc.events.iter().any(|e| e
                .message
                .contains("unable to scale in due to (reason: 2 tasks under protection)")),
            "{:?}",
            svc.events
        );
        // Once it has expired, they go too.
        let actions = run(&mut svc, &tasks, 300.0);
        assert_eq!(stops(&actions).len(), 2, "{actions:?}");
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
    fn tasks_not_started_again_after_a_restart_are_not_failures() {
        let mut s = service(1, 200, 100);
        s.deployment_configuration.deployment_circuit_breaker.enable = true;
        // What a restart records for tasks whose start was unconfirmed.
        let lost = |id: &str| {
            crate::core::lifecycle::ended_with_the_process(task(id, OLD, "PENDING"), 5.0)
        };
        let tasks: Vec<Task> = (0..10).map(|i| lost(&format!("l{i}"))).collect();
        // No backoff, no circuit breaker: the replacement starts at once.
        assert_eq!(run(&mut s, &tasks, 10.0), vec![Action::Start { count: 1 }]);
        assert_eq!(s.deployments[0].consecutive_failures, 0);
        assert_ne!(s.deployments[0].rollout_state, "FAILED");
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
