//! ECS Express Gateway services: a service together with what ECS makes
//! for it (a task definition family, a security group, an application load
//! balancer with a listener and a target group) and its scaling target.
//! This is what is kept of them; the API (`api/ecs_express.rs`) makes and
//! removes the parts, and scales the service by [`target_tracking`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What an Express Gateway service adds to its service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Express {
    pub infrastructure_role_arn: String,
    /// Each configuration it was given, oldest first, with the service
    /// deployment that rolled it out (the last [`MAX_CONFIGURATIONS`]).
    pub configurations: Vec<Configuration>,
    pub load_balancer_arn: String,
    pub listener_arn: String,
    pub target_group_arn: String,
    /// Security groups made for it (none when the request named its own),
    /// removed with it.
    pub security_groups_made: Vec<String>,
    /// Where it is reached: its listener's URL.
    pub endpoint: String,
    pub updated_at: f64,
    /// Once deleted: its target group and security groups are gone too
    /// (they wait until its tasks have stopped).
    #[serde(default)]
    pub removed: bool,
}

/// How many configurations an Express service remembers.
pub const MAX_CONFIGURATIONS: usize = 20;

/// One configuration of an Express service, as `activeConfigurations`
/// shows it (without its revision's ARN and the ingress paths, which are
/// derived).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Configuration {
    /// The service deployment (`ecs-svc/...`) that rolled it out.
    pub deployment: String,
    pub created_at: f64,
    /// `executionRoleArn`, `taskRoleArn`, `cpu`, `memory`,
    /// `networkConfiguration`, `healthCheckPath`, `primaryContainer`,
    /// `scalingTarget`, defaults filled in.
    pub settings: Value,
}

impl Express {
    /// The configuration in force: the last one given.
    pub fn current(&self) -> Option<&Configuration> {
        self.configurations.last()
    }

    /// Its scaling target, as configured now.
    pub fn scaling(&self) -> Option<ScalingTarget> {
        let s = &self.current()?.settings["scalingTarget"];
        serde_json::from_value(s.clone()).ok()
    }
}

/// An Express service's `scalingTarget`, defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalingTarget {
    pub min_task_count: u32,
    pub max_task_count: u32,
    pub auto_scaling_metric: Metric,
    pub auto_scaling_target_value: u32,
}

/// What an Express service scales on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Metric {
    /// The service's `AWS/ECS` `CPUUtilization`, in percent.
    AverageCpu,
    /// The service's `AWS/ECS` `MemoryUtilization`, in percent.
    AverageMemory,
    /// Its target group's `RequestCountPerTarget` per minute.
    RequestCountPerTarget,
}

/// How long the metric must stay below target before the service scales
/// in (target tracking's scale-in cooldown: scaling out is at once,
/// scaling in waits, so a dip does not cost capacity).
pub const SCALE_IN_AFTER: f64 = 300.0;

/// Target tracking: the desired count (now `current`) that brings
/// `metric` — measured over the last minute, averaged over the `running`
/// tasks — to `target`, within `min..=max`. The load is the running
/// tasks', so tasks asked for but not started yet do not make the same
/// load count again. Scaling in only when `low_for` (how long the metric
/// has wanted fewer tasks) has reached [`SCALE_IN_AFTER`]. Without a
/// measurement the count only moves into its bounds.
pub fn target_tracking(
    current: u32,
    running: u32,
    metric: Option<f64>,
    scaling: &ScalingTarget,
    low_for: f64,
) -> u32 {
    let (min, max) = (scaling.min_task_count, scaling.max_task_count);
    let wanted = match metric {
        Some(m) if scaling.auto_scaling_target_value > 0 => {
            // With no task running, the load is measured as one task's.
            let load = f64::from(running.max(1)) * m;
            let n = (load / f64::from(scaling.auto_scaling_target_value)).ceil();
            n.clamp(0.0, f64::from(u32::MAX)) as u32
        }
        _ => current,
    };
    let wanted = if wanted < current && low_for < SCALE_IN_AFTER {
        current
    } else {
        wanted
    };
    wanted.clamp(min, max.max(min))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(min: u32, max: u32, value: u32) -> ScalingTarget {
        ScalingTarget {
            min_task_count: min,
            max_task_count: max,
            auto_scaling_metric: Metric::AverageCpu,
            auto_scaling_target_value: value,
        }
    }

    #[test]
    fn scales_out_at_once_to_bring_the_metric_to_target() {
        let t = target(1, 10, 60);
        // Two tasks at 90%: three tasks would run at 60%.
        assert_eq!(target_tracking(2, 2, Some(90.0), &t, 0.0), 3);
        // Far over target: no further than the maximum.
        assert_eq!(target_tracking(2, 2, Some(900.0), &t, 0.0), 10);
        // At target: as is.
        assert_eq!(target_tracking(3, 3, Some(60.0), &t, 0.0), 3);
    }

    #[test]
    fn tasks_not_started_yet_do_not_count_the_load_again() {
        let t = target(1, 20, 60);
        // Asked for 5, 3 run at 150%: 8 would hold the load at 60%, not
        // 5 × 150% / 60%.
        assert_eq!(target_tracking(5, 3, Some(150.0), &t, 0.0), 8);
        assert_eq!(target_tracking(8, 3, Some(150.0), &t, 0.0), 8);
    }

    #[test]
    fn scales_in_only_after_the_cooldown_and_not_below_the_minimum() {
        let t = target(2, 10, 60);
        assert_eq!(target_tracking(6, 6, Some(20.0), &t, 10.0), 6);
        assert_eq!(target_tracking(6, 6, Some(20.0), &t, SCALE_IN_AFTER), 2);
        assert_eq!(target_tracking(6, 6, Some(0.0), &t, SCALE_IN_AFTER), 2);
    }

    #[test]
    fn without_a_measurement_the_count_only_moves_into_bounds() {
        let t = target(2, 4, 60);
        assert_eq!(target_tracking(0, 0, None, &t, 0.0), 2);
        assert_eq!(target_tracking(9, 9, None, &t, 0.0), 4);
        assert_eq!(target_tracking(3, 1, None, &t, 0.0), 3);
        // A service scaled to zero still measures its load as one task's.
        let t = target(0, 4, 10);
        assert_eq!(target_tracking(0, 0, Some(25.0), &t, 0.0), 3);
    }
}
