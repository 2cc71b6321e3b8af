//! The load balancers' CloudWatch metrics, under AWS's names:
//!
//! - `AWS/ApplicationELB` `RequestCount` by `LoadBalancer` and by
//!   `TargetGroup`+`LoadBalancer`; `RequestCountPerTarget` by `TargetGroup`
//!   and by `TargetGroup`+`LoadBalancer` (requests over healthy targets, or
//!   over all of them when none is healthy and traffic fails open).
//! - `AWS/NetworkELB` `NewFlowCount` by the same dimensions.
//! - `HealthyHostCount` and `UnHealthyHostCount` by
//!   `TargetGroup`+`LoadBalancer`, in both namespaces.
//! - skiff's own addition, each target's count: `RequestCount` (or
//!   `NewFlowCount`) by `TargetGroup`+`LoadBalancer`+`Target`, the target
//!   as `ID:PORT`. CloudWatch matches dimension sets exactly, so queries
//!   written for AWS never see these series mixed into theirs.
//!
//! Dimension values are AWS's: `app/NAME/ID` (`net/...`) and
//! `targetgroup/NAME/ID`, the tails of the ARNs. Counts are recorded as
//! they grow, stamped when read; periods with no traffic have no
//! datapoint, as on AWS.

use crate::core::metrics::Metrics;
use crate::core::model::now;
use crate::plane::elb::Plane;

/// Records the counts' growth since the last reading and, with `gauges`,
/// the healthy and unhealthy targets of each group in use.
pub fn measure(plane: &Plane, metrics: &Metrics, gauges: bool) {
    let cfg = plane.config();
    let at = now() as i64;
    let mut read: Vec<String> = Vec::new();
    let mut counter = |id: String, value: u64| {
        let d = metrics.delta(&id, value);
        read.push(id);
        d
    };
    for g in plane.counts() {
        let group_delta = counter(format!("group {}", g.tg_arn), g.requests);
        let target_deltas: Vec<(String, u64)> = g
            .targets
            .iter()
            .map(|(t, n)| (t.clone(), counter(format!("target {} {t}", g.tg_arn), *n)))
            .collect();
        let lbs = cfg.lbs_of_group(&g.tg_arn);
        let Some(lb) = lbs.first().and_then(|a| cfg.load_balancers.get(*a)) else {
            // Not in use: nothing reaches it, and AWS reports nothing.
            continue;
        };
        let lb_dim = lb.arn.split(":loadbalancer/").nth(1).unwrap_or(&lb.arn);
        let tg_dim = g.tg_arn.rsplit(':').next().unwrap_or(&g.tg_arn);
        let (ns, count) = if lb.kind == "application" {
            ("AWS/ApplicationELB", "RequestCount")
        } else {
            ("AWS/NetworkELB", "NewFlowCount")
        };
        let by_group = [("TargetGroup", tg_dim), ("LoadBalancer", lb_dim)];
        if group_delta > 0 {
            let n = group_delta as f64;
            metrics.record(ns, count, &[("LoadBalancer", lb_dim)], "Count", at, n);
            metrics.record(ns, count, &by_group, "Count", at, n);
            if lb.kind == "application" {
                let over = if g.healthy > 0 {
                    g.healthy
                } else {
                    g.targets.len().max(1)
                };
                let per = n / over as f64;
                for dims in [&by_group[..], &by_group[..1]] {
                    metrics.record(ns, "RequestCountPerTarget", dims, "Count", at, per);
                }
            }
        }
        for (target, d) in target_deltas.iter().filter(|(_, d)| *d > 0) {
            let dims = [
                ("TargetGroup", tg_dim),
                ("LoadBalancer", lb_dim),
                ("Target", target.as_str()),
            ];
            metrics.record(ns, count, &dims, "Count", at, *d as f64);
        }
        if gauges {
            let healthy = g.healthy as f64;
            let unhealthy = g.unhealthy as f64;
            metrics.record(ns, "HealthyHostCount", &by_group, "Count", at, healthy);
            metrics.record(ns, "UnHealthyHostCount", &by_group, "Count", at, unhealthy);
        }
    }
    metrics.retain_counters(|id| read.iter().any(|r| r == id));
}
