//! Scaling Express services by their targets, and removing what deleted
//! ones leave behind.

use super::{Api, commit, find_by_arn, remove_parts};
use crate::core::Core;
use crate::core::metrics::Key;
use crate::core::model::now;
use crate::core::services::Service;
use crate::core::services::express::{self, Express, Metric};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How often Express services are scaled (and deleted ones cleaned up).
const SCALE_EVERY: Duration = Duration::from_secs(5);

/// Scales every Express service to its target, and removes what deleted
/// ones leave behind once their tasks have stopped, every [`SCALE_EVERY`].
pub(crate) async fn express_loop(api: Weak<Api>) {
    // How long each service's metric has wanted fewer tasks.
    let low_since: Mutex<HashMap<String, f64>> = Mutex::new(HashMap::new());
    let mut tick = tokio::time::interval(SCALE_EVERY);
    loop {
        tick.tick().await;
        let Some(api) = api.upgrade() else { return };
        let core = Arc::clone(&api.core);
        drop(api);
        // Each with the number of its tasks running.
        let services: Vec<(Service, u32)> = {
            let state = core.state.lock().await;
            state
                .services
                .values()
                .map(|s| &s.value)
                .filter(|s| s.express.as_ref().is_some_and(|e| !e.removed))
                .map(|s| {
                    let running = state
                        .tasks_of_service(&s.key())
                        .filter(|t| t.last_status == "RUNNING")
                        .count();
                    (s.clone(), u32::try_from(running).unwrap_or(u32::MAX))
                })
                .collect()
        };
        if services.iter().any(|(s, _)| {
            s.express
                .as_ref()
                .and_then(|e| e.scaling())
                .is_some_and(|t| t.auto_scaling_metric == Metric::RequestCountPerTarget)
        }) {
            // The requests up to now, not the last tick's.
            crate::core::lb_metrics::measure(&core.elb, &core.metrics, false);
        }
        for (svc, running) in services {
            if svc.status == "INACTIVE" {
                clean_up(&core, &svc).await;
            } else if svc.status == "ACTIVE" {
                scale(&core, &svc, running, &low_since).await;
            }
        }
    }
}

/// Sets an Express service's desired count by its scaling target.
async fn scale(core: &Core, svc: &Service, running: u32, low_since: &Mutex<HashMap<String, f64>>) {
    let Some(e) = svc.express.as_deref() else {
        return;
    };
    let Some(target) = e.scaling() else { return };
    let at = now();
    let load = load(core, svc, e, target.auto_scaling_metric, running, at as i64);
    let wanted = express::target_tracking(svc.desired_count, load, &target, f64::MAX);
    let since = {
        let Ok(mut low) = low_since.lock() else {
            return;
        };
        if wanted < svc.desired_count {
            *low.entry(svc.service_arn.clone()).or_insert(at)
        } else {
            low.remove(&svc.service_arn);
            at
        }
    };
    let n = express::target_tracking(svc.desired_count, load, &target, at - since);
    if n == svc.desired_count {
        return;
    }
    let mut state = core.state.lock().await;
    let Some(current) = find_by_arn(&state, &svc.service_arn) else {
        return;
    };
    if current.status != "ACTIVE" || current.desired_count != svc.desired_count {
        return; // changed meanwhile: the next round decides
    }
    let mut changed = current.clone();
    let why = match load {
        Some(l) if target.auto_scaling_metric == Metric::RequestCountPerTarget => format!(
            "{l:.0} requests in the last minute against a target of {} per task",
            target.auto_scaling_target_value
        ),
        Some(l) => format!(
            "{} was {:.1} over {running} running tasks against a target of {}",
            json!(target.auto_scaling_metric)
                .as_str()
                .unwrap_or_default(),
            l / f64::from(running.max(1)),
            target.auto_scaling_target_value
        ),
        None => format!(
            "its scaling target allows {} to {} tasks",
            target.min_task_count, target.max_task_count
        ),
    };
    changed.desired_count = n;
    changed.event(
        at,
        format!(
            "(service {}) was scaled from {} to {n} tasks by its Express scaling target: {why}.",
            svc.service_name, svc.desired_count
        ),
    );
    if let Some(e) = changed.express.as_deref_mut() {
        e.updated_at = at;
    }
    if let Err(e) = commit(core, &mut state, &changed).await {
        tracing::warn!(service = %svc.service_arn, "cannot scale: {}", e.message);
    }
}

/// The service's load over the last minute, in its metric's units summed
/// over tasks: the running tasks' average utilization times their number,
/// or every request its target group was sent (whichever targets took
/// them). None without datapoints.
fn load(
    core: &Core,
    svc: &Service,
    e: &Express,
    metric: Metric,
    running: u32,
    at: i64,
) -> Option<f64> {
    let cluster = crate::core::model::name_of(&svc.cluster_arn);
    let key = match metric {
        Metric::AverageCpu | Metric::AverageMemory => {
            let name = if metric == Metric::AverageCpu {
                "CPUUtilization"
            } else {
                "MemoryUtilization"
            };
            let dims = [("ClusterName", cluster), ("ServiceName", &svc.service_name)];
            Key::new("AWS/ECS", name, &dims)
        }
        Metric::RequestCountPerTarget => {
            let tg = e.target_group_arn.rsplit(':').next().unwrap_or_default();
            let lb = e.load_balancer_arn.split(":loadbalancer/").nth(1)?;
            let dims = [("TargetGroup", tg), ("LoadBalancer", lb)];
            Key::new("AWS/ApplicationELB", "RequestCount", &dims)
        }
    };
    use crate::core::metrics::Stat;
    let points = core
        .metrics
        .aggregate(&key, None, at - 60, at + 1, 1)
        .map(|(_, p)| p)
        .unwrap_or_default();
    let (sum, count) = points.iter().fold((0.0, 0.0), |(s, c), (_, p)| {
        (s + p.get(Stat::Sum), c + p.get(Stat::SampleCount))
    });
    if metric == Metric::RequestCountPerTarget {
        // A minute without requests is a load of none.
        Some(sum)
    } else {
        (count > 0.0).then(|| sum / count * f64::from(running.max(1)))
    }
}

/// Removes what a deleted Express service leaves behind — its load
/// balancer, target group and the security groups made for it — now that
/// its tasks have stopped.
async fn clean_up(core: &Core, svc: &Service) {
    let Some(e) = svc.express.as_deref() else {
        return;
    };
    let region = svc.service_arn.split(':').nth(3).unwrap_or_default();
    // The load balancer is gone already if DeleteExpressGatewayService
    // deleted the service, but not if DeleteService did.
    let (lb, tg) = (&e.load_balancer_arn, &e.target_group_arn);
    if let Err(err) = remove_parts(core, region, Some(lb), Some(tg), &e.security_groups_made).await
    {
        tracing::warn!(service = %svc.service_arn, "cannot remove its parts yet: {}", err.message);
        return;
    }
    let mut state = core.state.lock().await;
    let Some(current) = find_by_arn(&state, &svc.service_arn) else {
        return;
    };
    let mut done = current.clone();
    if let Some(e) = done.express.as_deref_mut() {
        e.removed = true;
    }
    let _ = commit(core, &mut state, &done).await;
}
