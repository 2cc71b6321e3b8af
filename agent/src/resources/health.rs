//! Container health checks. A Wasm container has no shell and no other
//! programs, so `["CMD", arg0, args...]` runs a fresh instance of the
//! container's own module with that argv (and its environment, mounts and
//! network) every `interval`: exit 0 within `timeout` passes; `retries`
//! failures in a row after `startPeriod` make it UNHEALTHY, one pass
//! HEALTHY. The checks stop when the task does.

use skiff_channel::messages::HealthStatus;
use skiff_channel::taskdef::{ContainerDefinition, HealthCheck};
use skiff_runtime::{Artifact, InstanceSpec, Outcome, Output, Runtime, Stdin};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// A task's running health checks; stopped when dropped.
#[derive(Default)]
pub(crate) struct HealthChecks {
    checkers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        for c in &self.checkers {
            c.abort();
        }
    }
}

impl HealthChecks {
    /// Starts checking container `index` (with `check`), reporting each
    /// result on `report`, until `halt` turns true.
    #[allow(clippy::too_many_arguments)] // each is one part of the check
    pub(crate) fn start(
        &mut self,
        runtime: &Runtime,
        artifact: &Arc<Artifact>,
        spec: &InstanceSpec,
        check: &HealthCheck,
        index: usize,
        report: &mpsc::UnboundedSender<(usize, HealthStatus)>,
        halt: watch::Receiver<bool>,
    ) {
        self.checkers.push(tokio::spawn(health_loop(
            runtime.clone(),
            Arc::clone(artifact),
            spec.clone(),
            check.clone(),
            index,
            report.clone(),
            halt,
        )));
    }
}

/// A task's health from its containers': UNHEALTHY if an essential one is,
/// HEALTHY if every checked essential one is, else UNKNOWN.
pub(crate) fn task_health(
    containers: &[ContainerDefinition],
    health: &[Option<HealthStatus>],
) -> HealthStatus {
    let essential: Vec<HealthStatus> = containers
        .iter()
        .zip(health)
        .filter(|(c, _)| c.essential)
        .filter_map(|(_, h)| *h)
        .collect();
    if essential.contains(&HealthStatus::Unhealthy) {
        HealthStatus::Unhealthy
    } else if !essential.is_empty() && essential.iter().all(|h| *h == HealthStatus::Healthy) {
        HealthStatus::Healthy
    } else {
        HealthStatus::Unknown
    }
}

/// Resolves once `halt` turns true (or its sender is gone).
pub(crate) async fn halted(halt: &mut watch::Receiver<bool>) {
    let _ = halt.wait_for(|h| *h).await.map(|_| ());
}

async fn health_loop(
    runtime: Runtime,
    artifact: Arc<Artifact>,
    spec: InstanceSpec,
    check: HealthCheck,
    index: usize,
    report: mpsc::UnboundedSender<(usize, HealthStatus)>,
    mut halt: watch::Receiver<bool>,
) {
    let started = tokio::time::Instant::now();
    let start_period = Duration::from_secs(u64::from(check.start_period.unwrap_or(0)));
    let mut failures = 0;
    loop {
        let mut probe = spec.clone();
        probe.args = check.command[1..].to_vec();
        probe.stdin = Stdin::Null;
        probe.stdout = Output::Null;
        probe.stderr = Output::Null;
        probe.limits.timeout = Some(Duration::from_secs(u64::from(check.timeout)));
        let passed = match runtime.spawn(&artifact, probe) {
            Ok(mut i) => i.wait().await == Outcome::Exited(0),
            Err(_) => false,
        };
        if passed {
            failures = 0;
            let _ = report.send((index, HealthStatus::Healthy));
        } else if started.elapsed() >= start_period {
            failures += 1;
            if failures >= check.retries {
                let _ = report.send((index, HealthStatus::Unhealthy));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(u64::from(check.interval))) => {}
            () = halted(&mut halt) => return,
        }
    }
}
