//! Task sets: how a service with the `EXTERNAL` deployment controller runs.
//!
//! Such a service has no deployments of its own. Whoever deploys it (a
//! third-party controller, a script) creates task sets — each a task
//! definition with its own launch settings, load balancers and discovery
//! registries — and scales each to a percentage of the service's
//! `desiredCount`. The scheduler keeps every task set at its computed count
//! at once (that is what lets a controller run blue and green side by side
//! and shift traffic between them); one task set may be PRIMARY, and
//! DescribeServices shows its settings as the service's. Deleting a task
//! set drains it: its tasks leave their target groups and stop, and it is
//! gone once the last one has.
//!
//! [`decide`] is pure, like the rolling scheduler's, so its rules are
//! unit-tested without a store or an agent.

use crate::core::capacity::StrategyItem;
use crate::core::model::{NetworkConfiguration, Tag, Task};
use crate::core::services::decide::{
    Action, World, backoff, cheapest_first, failed, failed_health, healthy_running, live, proven,
};
use crate::core::services::{Service, ServiceLoadBalancer, ServiceRegistry};
use serde::{Deserialize, Serialize};

/// A task set's `scale`: a percentage of the service's desired count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scale {
    pub value: f64,
    /// Always `PERCENT` (ECS's only unit).
    pub unit: ScaleUnit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScaleUnit {
    #[serde(rename = "PERCENT")]
    Percent,
}

/// A task set as stored; views add its counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskSet {
    /// `ecs-svc/` and 19 digits, as ECS writes them; its tasks carry it in
    /// `startedBy`.
    pub id: String,
    pub task_set_arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// PRIMARY, ACTIVE or DRAINING.
    pub status: String,
    pub task_definition: String,
    pub launch_type: String,
    #[serde(default)]
    pub capacity_provider_strategy: Vec<StrategyItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_configuration: Option<NetworkConfiguration>,
    #[serde(default)]
    pub load_balancers: Vec<ServiceLoadBalancer>,
    #[serde(default)]
    pub service_registries: Vec<ServiceRegistry>,
    pub scale: Scale,
    pub created_at: f64,
    pub updated_at: f64,
    /// STEADY_STATE or STABILIZING.
    pub stability_status: String,
    pub stability_status_at: f64,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
}

impl TaskSet {
    /// ECS's `computedDesiredCount`: the service's desired count times the
    /// scale, always rounded up (1.2 tasks are 2).
    pub fn computed_desired_count(&self, desired: u32) -> u32 {
        let exact = f64::from(desired) * self.scale.value / 100.0;
        // A hair under a whole number is that number (0.1 * 30 is
        // 3.0000000000000004 in binary).
        (exact - 1e-9).ceil().max(0.0) as u32
    }

    pub(crate) fn owns(&self, t: &Task) -> bool {
        t.started_by.as_deref() == Some(self.id.as_str())
    }
}

/// Failures of a task set's tasks since one last showed it works, and when
/// the latest was: how long to wait before starting another. Read from
/// the tasks themselves, so a task set keeps no counters.
fn streak(set: &TaskSet, world: &World<'_>) -> (u32, Option<f64>) {
    let mine = || world.tasks.iter().filter(|t| set.owns(t));
    let last_success = mine()
        .filter(|t| proven(t, world.now))
        .filter_map(|t| t.started_at)
        .fold(f64::MIN, f64::max);
    let failures: Vec<f64> = mine()
        .filter(|t| failed(t))
        .filter_map(|t| t.stopped_at)
        .filter(|at| *at > last_success)
        .collect();
    let last = failures.iter().copied().reduce(f64::max);
    (failures.len() as u32, last)
}

/// Decides one pass for an EXTERNAL service: every task set not DRAINING
/// kept at its computed count, DRAINING ones emptied and then forgotten,
/// tasks of no task set stopped; each task set's stability and the
/// service's steady state follow.
pub(crate) fn decide(svc: &mut Service, world: &World<'_>) -> Vec<Action> {
    let now = world.now;
    let active = svc.status == "ACTIVE";
    let mut actions = Vec::new();
    let stop = |actions: &mut Vec<Action>, t: &Task, reason: String| {
        actions.push(Action::Stop {
            task: t.id().to_string(),
            reason,
        });
    };
    let on_draining = |t: &Task| {
        t.container_instance_arn
            .as_deref()
            .is_some_and(|i| world.draining.contains(i))
    };
    let grace = f64::from(svc.health_check_grace_period_seconds.unwrap_or(0));
    for set in &svc.task_sets {
        let want = if active && set.status != "DRAINING" {
            set.computed_desired_count(svc.desired_count) as usize
        } else {
            0
        };
        let reason = format!("Scaling activity initiated by (task set {})", set.id);
        let mut keep: Vec<&Task> = Vec::new();
        for t in world
            .tasks
            .iter()
            .copied()
            .filter(|t| set.owns(t) && live(t))
        {
            if let Some(why) = failed_health(t, world, grace) {
                stop(&mut actions, t, why);
            } else if on_draining(t) {
                stop(&mut actions, t, reason.clone());
            } else {
                keep.push(t);
            }
        }
        // Too many: the cheapest to lose first (pending, then the newest),
        // sparing tasks protected from scale-in while the service is ACTIVE.
        cheapest_first(&mut keep);
        let excess = keep.len().saturating_sub(want);
        let going: Vec<&Task> = keep
            .iter()
            .copied()
            .filter(|t| !(active && set.status != "DRAINING" && t.protected_at(now)))
            .take(excess)
            .collect();
        for t in &going {
            stop(&mut actions, t, reason.clone());
        }
        let short = want.saturating_sub(keep.len() - going.len());
        let (failures, last) = streak(set, world);
        let throttled = last.is_some_and(|f| now < f + backoff(failures));
        if short > 0 && active && !throttled {
            actions.push(Action::StartSet {
                task_set: set.id.clone(),
                count: short,
            });
        }
    }
    // Tasks of no task set (one deleted and forgotten while they ran).
    for t in world.tasks.iter().copied().filter(|t| live(t)) {
        if !svc.task_sets.iter().any(|s| s.owns(t)) {
            stop(
                &mut actions,
                t,
                "Scaling activity initiated by (service)".into(),
            );
        }
    }
    settle(svc, world, &actions);
    actions
}

/// Forgets drained task sets, updates each one's stability, and announces
/// the service's steady state (or ends it being INACTIVE once deleted).
fn settle(svc: &mut Service, world: &World<'_>, actions: &[Action]) {
    let now = world.now;
    let tasks = &world.tasks;
    svc.task_sets.retain(|s| {
        s.status != "DRAINING"
            || tasks
                .iter()
                .any(|t| s.owns(t) && t.last_status != "STOPPED")
    });
    let desired = if svc.status == "ACTIVE" {
        svc.desired_count
    } else {
        0
    };
    let mut all_steady = true;
    for set in &mut svc.task_sets {
        let mine = || tasks.iter().filter(|t| set.owns(t));
        let running = mine().filter(|t| healthy_running(t)).count();
        let unsettled = mine().any(|t| t.last_status != "STOPPED" && !healthy_running(t));
        let busy = actions.iter().any(|a| match a {
            Action::StartSet { task_set, .. } => *task_set == set.id,
            Action::Stop { task, .. } => mine().any(|t| t.id() == task),
            _ => false,
        });
        let steady = !busy && !unsettled && running == set.computed_desired_count(desired) as usize;
        let status = if steady {
            "STEADY_STATE"
        } else {
            "STABILIZING"
        };
        if set.stability_status != status {
            set.stability_status = status.into();
            set.stability_status_at = now;
        }
        all_steady &= steady;
    }
    let name = svc.service_name.clone();
    if svc.status == "ACTIVE" && all_steady && actions.is_empty() {
        if !svc.steady {
            svc.steady = true;
            svc.event(now, format!("(service {name}) has reached a steady state."));
        }
    } else {
        svc.steady = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::services::decide::{service, stops as stopped, task};
    use std::collections::{HashMap, HashSet};

    fn set(id: &str, status: &str, percent: f64) -> TaskSet {
        TaskSet {
            id: id.into(),
            task_set_arn: format!("arn:aws:ecs:us-east-1:000000000000:task-set/default/web/{id}"),
            external_id: None,
            status: status.into(),
            task_definition: "web:1".into(),
            launch_type: "EC2".into(),
            capacity_provider_strategy: Vec::new(),
            platform_version: None,
            network_configuration: None,
            load_balancers: Vec::new(),
            service_registries: Vec::new(),
            scale: Scale {
                value: percent,
                unit: ScaleUnit::Percent,
            },
            created_at: 0.0,
            updated_at: 0.0,
            stability_status: "STABILIZING".into(),
            stability_status_at: 0.0,
            tags: Vec::new(),
            client_token: None,
        }
    }

    fn external(desired: u32, sets: Vec<TaskSet>) -> Service {
        let mut s = service(desired, 100, 0);
        s.deployments.clear();
        s.deployment_controller = Some("EXTERNAL".into());
        s.task_sets = sets;
        s
    }

    fn run(svc: &mut Service, tasks: &[Task], now: f64) -> Vec<Action> {
        let world = World {
            tasks: tasks.iter().collect(),
            draining: HashSet::new(),
            eligible: Vec::new(),
            now,
            elb_failed: HashMap::new(),
        };
        decide(svc, &world)
    }

    fn starts(actions: &[Action]) -> Vec<(&str, usize)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::StartSet { task_set, count } => Some((task_set.as_str(), *count)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_computed_count_rounds_up() {
        let s = set("ecs-svc/1", "ACTIVE", 30.0);
        assert_eq!(s.computed_desired_count(4), 2, "1.2 tasks are 2");
        assert_eq!(s.computed_desired_count(10), 3, "exactly 3 stays 3");
        assert_eq!(s.computed_desired_count(0), 0);
        assert_eq!(set("x", "ACTIVE", 0.0).computed_desired_count(7), 0);
        assert_eq!(set("x", "ACTIVE", 100.0).computed_desired_count(7), 7);
    }

    #[test]
    fn every_task_set_is_kept_at_its_share_at_once() {
        let mut s = external(
            4,
            vec![
                set("ecs-svc/blue", "PRIMARY", 100.0),
                set("ecs-svc/green", "ACTIVE", 50.0),
            ],
        );
        assert_eq!(
            starts(&run(&mut s, &[], 1.0)),
            [("ecs-svc/blue", 4), ("ecs-svc/green", 2)]
        );
        let tasks = [
            task("b1", "ecs-svc/blue", "RUNNING"),
            task("b2", "ecs-svc/blue", "RUNNING"),
            task("b3", "ecs-svc/blue", "RUNNING"),
            task("b4", "ecs-svc/blue", "RUNNING"),
            task("g1", "ecs-svc/green", "RUNNING"),
            task("g2", "ecs-svc/green", "PENDING"),
        ];
        assert!(run(&mut s, &tasks, 2.0).is_empty());
        assert_eq!(s.task_sets[0].stability_status, "STEADY_STATE");
        assert_eq!(s.task_sets[1].stability_status, "STABILIZING", "g2 pends");
        assert!(!s.steady);
        // Green scaled to 0: its tasks go, pending first; blue is untouched.
        s.task_sets[1].scale.value = 0.0;
        assert_eq!(stopped(&run(&mut s, &tasks, 3.0)), ["g2", "g1"]);
    }

    #[test]
    fn a_draining_task_set_empties_then_is_forgotten_and_strays_stop() {
        let mut s = external(2, vec![set("ecs-svc/old", "DRAINING", 100.0)]);
        let tasks = [
            task("o1", "ecs-svc/old", "RUNNING"),
            task("x1", "ecs-svc/gone", "RUNNING"),
        ];
        let actions = run(&mut s, &tasks, 1.0);
        assert_eq!(stopped(&actions), ["o1", "x1"]);
        assert!(starts(&actions).is_empty(), "a draining set starts nothing");
        assert_eq!(s.task_sets.len(), 1, "kept while its task stops");
        let done = [task("o1", "ecs-svc/old", "STOPPED")];
        run(&mut s, &done, 2.0);
        assert!(s.task_sets.is_empty());
        assert!(s.steady, "nothing left to do is a steady state");
    }

    #[test]
    fn a_task_set_whose_tasks_keep_failing_backs_off() {
        let mut s = external(1, vec![set("ecs-svc/bad", "PRIMARY", 100.0)]);
        let mut tasks = Vec::new();
        for (i, at) in [10.0, 11.0, 12.0].into_iter().enumerate() {
            let mut t = task(&format!("f{i}"), "ecs-svc/bad", "STOPPED");
            t.stop_code = Some("EssentialContainerExited".into());
            t.stopped_at = Some(at);
            tasks.push(t);
        }
        // Three failures in a row: wait 2 s after the last before the next.
        assert!(starts(&run(&mut s, &tasks, 13.0)).is_empty());
        assert_eq!(starts(&run(&mut s, &tasks, 14.5)), [("ecs-svc/bad", 1)]);
    }
}
