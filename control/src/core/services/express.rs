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

/// Target tracking: the desired count (now `current`) that brings the
/// service's metric to its target value, within `min..=max`, given its
/// `load` over the last minute in the metric's units summed over tasks
/// (the running tasks' utilization times their number, or the target
/// group's requests): `load / target` tasks. Counting what the running
/// tasks carry, not what is asked for, tasks not started (or not yet
/// healthy) do not make the same load count again. Scaling in only when
/// `low_for` (how long the load has wanted fewer tasks) has reached
/// [`SCALE_IN_AFTER`]. Without a measurement the count only moves into
/// its bounds.
pub fn target_tracking(
    current: u32,
    load: Option<f64>,
    scaling: &ScalingTarget,
    low_for: f64,
) -> u32 {
    let (min, max) = (scaling.min_task_count, scaling.max_task_count);
    let wanted = match load {
        Some(load) if scaling.auto_scaling_target_value > 0 => {
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
        // Two tasks at 90% (a load of 180): three would run at 60%.
        assert_eq!(target_tracking(2, Some(180.0), &t, 0.0), 3);
        // Far over target: no further than the maximum.
        assert_eq!(target_tracking(2, Some(1800.0), &t, 0.0), 10);
        // At target: as is.
        assert_eq!(target_tracking(3, Some(180.0), &t, 0.0), 3);
    }

    #[test]
    fn the_same_load_asks_for_the_same_count_however_many_were_asked_for() {
        let t = target(1, 20, 50);
        // 100 requests a minute at 50 per task: 2 tasks, whether 1 or 6
        // are asked for meanwhile (new ones take no traffic until healthy).
        for asked in [1, 2, 6] {
            let n = target_tracking(asked, Some(100.0), &t, SCALE_IN_AFTER);
            assert_eq!(n, 2, "with {asked} asked for");
        }
    }

    #[test]
    fn scales_in_only_after_the_cooldown_and_not_below_the_minimum() {
        let t = target(2, 10, 60);
        assert_eq!(target_tracking(6, Some(120.0), &t, 10.0), 6);
        assert_eq!(target_tracking(6, Some(120.0), &t, SCALE_IN_AFTER), 2);
        assert_eq!(target_tracking(6, Some(0.0), &t, SCALE_IN_AFTER), 2);
    }

    #[test]
    fn without_a_measurement_the_count_only_moves_into_bounds() {
        let t = target(2, 4, 60);
        assert_eq!(target_tracking(0, None, &t, 0.0), 2);
        assert_eq!(target_tracking(9, None, &t, 0.0), 4);
        assert_eq!(target_tracking(3, None, &t, 0.0), 3);
        // A service scaled to zero scales out for the load that comes.
        let t = target(0, 4, 10);
        assert_eq!(target_tracking(0, Some(25.0), &t, 0.0), 3);
    }
}
