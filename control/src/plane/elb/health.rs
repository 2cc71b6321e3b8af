//! Target health: each target group's checks (HTTP with a matcher, or a
//! TCP connect) every interval, through the fabric as the load balancer;
//! and the reaper that lets a deregistered target go once it has drained.

use super::config::{TargetGroup, parse_matcher};
use super::forward::{Reach, connect, dial, full};
use super::{Group, Health, Plane, TargetLive, health_port};
use http::Request;
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::task::JoinSet;

/// Checks a group's targets every interval (the first check at once).
pub(super) async fn health_loop(plane: Weak<Plane>, tg_arn: String) {
    loop {
        let Some(p) = plane.upgrade() else { return };
        let Some(group) = p.group(&tg_arn) else {
            return;
        };
        let Some(spec) = group.spec() else { return };
        let lb_listener = {
            let cfg = p.config();
            cfg.listeners
                .values()
                .find(|l| cfg.lbs_of_group(&tg_arn).contains(&l.lb_arn.as_str()))
                .map(|l| l.arn.clone())
        };
        let targets: Vec<Arc<TargetLive>> = group
            .targets
            .lock()
            .map(|t| t.iter().filter(|t| !t.health().1).cloned().collect())
            .unwrap_or_default();
        let mut checks = JoinSet::new();
        for t in targets {
            let addr = SocketAddr::from((t.addr.ip(), health_port(&spec, &t.target)));
            let allowed = lb_listener.as_deref().is_some_and(|l| p.admits(l, addr));
            let spec = spec.clone();
            checks.spawn(async move {
                let result = if allowed {
                    check(&spec, &t.reach(), addr).await
                } else {
                    Err(("Target.Timeout", "the target's security groups do not let the load balancer's health checks in".to_string()))
                };
                (t, result)
            });
        }
        let interval = Duration::from_secs(spec.health.interval);
        drop(p);
        let group_for_wait = Arc::clone(&group);
        drop(group);
        while let Some(Ok((t, result))) = checks.join_next().await {
            if let Ok(mut l) = t.live.lock() {
                match result {
                    Ok(()) => {
                        l.ok_streak += 1;
                        l.bad_streak = 0;
                        if l.health != Health::Healthy && l.ok_streak >= spec.health.healthy {
                            l.health = Health::Healthy;
                            l.reason = None;
                            l.description = None;
                        }
                    }
                    Err((reason, description)) => {
                        l.bad_streak += 1;
                        l.ok_streak = 0;
                        if l.health != Health::Unhealthy && l.bad_streak >= spec.health.unhealthy {
                            l.health = Health::Unhealthy;
                        }
                        if l.health == Health::Unhealthy {
                            l.reason = Some(reason);
                            l.description = Some(description);
                        }
                    }
                }
                t.publish(&l);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = group_for_wait.added.notified() => {}
        }
    }
}

/// One health check: a TCP connect, or an HTTP GET whose status the
/// matcher accepts, within the timeout.
pub(super) async fn check(
    spec: &TargetGroup,
    reach: &Reach,
    addr: SocketAddr,
) -> Result<(), (&'static str, String)> {
    let timeout = Duration::from_secs(spec.health.timeout);
    if spec.health.protocol == "TCP" {
        return match dial(reach, addr, timeout).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err((
                "Target.FailedHealthChecks",
                format!("Health checks failed: {e}"),
            )),
            Err(_) => Err(("Target.Timeout", "Request timed out".into())),
        };
    }
    let path = spec.health.path.as_deref().unwrap_or("/");
    let req = Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .header("user-agent", "ELB-HealthChecker/2.0")
        .body(full(String::new()));
    let Ok(req) = req else {
        return Err(("Target.FailedHealthChecks", "bad health check path".into()));
    };
    // A connection of its own each time, as ELB's checks are.
    let exchange = async {
        let mut up = connect(reach, addr).await?;
        let sent = up.sender.send_request(req);
        up.drive(sent).await?.map_err(|e| e.to_string())
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(resp)) => {
            let status = resp.status().as_u16();
            // Read the body, so the connection can be used again.
            let _ = tokio::time::timeout(timeout, resp.into_body().collect()).await;
            let codes =
                parse_matcher(spec.health.matcher.as_deref().unwrap_or("200")).unwrap_or_default();
            if codes.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status)) {
                Ok(())
            } else {
                Err((
                    "Target.ResponseCodeMismatch",
                    format!("Health checks failed with these codes: [{status}]"),
                ))
            }
        }
        Ok(Err(e)) => Err((
            "Target.FailedHealthChecks",
            format!("Health checks failed: {e}"),
        )),
        Err(_) => Err(("Target.Timeout", "Request timed out".into())),
    }
}

/// Removes drained targets; it ends when nothing is draining.
pub(super) async fn reap_loop(plane: Weak<Plane>) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(p) = plane.upgrade() else { return };
        let groups: Vec<Arc<Group>> = p
            .groups
            .lock()
            .map(|g| g.values().cloned().collect())
            .unwrap_or_default();
        let mut draining = false;
        for g in groups {
            let delay = Duration::from_secs(g.spec().map_or(0, |s| s.deregistration_delay));
            if let Ok(mut targets) = g.targets.lock() {
                targets.retain(|t| {
                    let since = t.live.lock().ok().and_then(|l| l.draining);
                    match since {
                        Some(s)
                            if s.elapsed() >= delay
                                || t.outstanding.load(Ordering::Relaxed) == 0 =>
                        {
                            false
                        }
                        Some(_) => {
                            draining = true;
                            true
                        }
                        None => true,
                    }
                });
            }
        }
        if !draining {
            p.reaping.store(false, Ordering::SeqCst);
            // A target may have started draining after the pass above.
            let again = p
                .groups
                .lock()
                .map(|g| {
                    g.values().any(|g| {
                        g.targets.lock().is_ok_and(|ts| {
                            ts.iter()
                                .any(|t| t.live.lock().is_ok_and(|l| l.draining.is_some()))
                        })
                    })
                })
                .unwrap_or(false);
            if !again || p.reaping.swap(true, Ordering::SeqCst) {
                return;
            }
        }
    }
}
