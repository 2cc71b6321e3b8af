//! Container health checks. A Wasm container has no shell and no other
//! programs, so `["CMD", arg0, args...]` runs a fresh instance of the
//! container's own module with that argv (and its environment, mounts and
//! network) every `interval`: exit 0 within `timeout` passes. A `curl` or
//! `wget` request of the container itself ([`HealthCheck::http_probe`]) is
//! sent by the agent instead, to the container's address: an answer passes
//! (one below 400 if the command says to fail on errors). `retries`
//! failures in a row after `startPeriod` make it UNHEALTHY, one pass
//! HEALTHY. The checks stop when the task does.

use crate::supervise::Container;
use skiff_channel::messages::HealthStatus;
use skiff_channel::taskdef::{ContainerDefinition, HealthCheck, HttpProbe};
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
    pub(crate) fn start(
        &mut self,
        runtime: &Runtime,
        container: &Container,
        check: &HealthCheck,
        index: usize,
        report: &mpsc::UnboundedSender<(usize, HealthStatus)>,
        halt: watch::Receiver<bool>,
    ) {
        // Registration refused a check that is neither.
        let probe = match check.http_probe() {
            Ok(Some(probe)) => Probe::Http(probe, container.address),
            _ => Probe::Command(
                runtime.clone(),
                Arc::clone(&container.artifact),
                container.spec.clone(),
            ),
        };
        self.checkers.push(tokio::spawn(health_loop(
            probe,
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

/// How a container is checked.
enum Probe {
    /// A fresh instance of its module, with the check's argv.
    Command(Runtime, Arc<Artifact>, InstanceSpec),
    /// A request of it, at its address.
    Http(HttpProbe, std::net::Ipv4Addr),
}

impl Probe {
    /// One check: whether it passed within `timeout`.
    async fn passes(&self, check: &HealthCheck, client: &reqwest::Client) -> bool {
        let timeout = Duration::from_secs(u64::from(check.timeout));
        match self {
            Probe::Command(runtime, artifact, spec) => {
                let mut probe = spec.clone();
                probe.args = check.command[1..].to_vec();
                probe.stdin = Stdin::Null;
                probe.stdout = Output::Null;
                probe.stderr = Output::Null;
                probe.limits.timeout = Some(timeout);
                match runtime.spawn(artifact, probe) {
                    Ok(mut i) => i.wait().await == Outcome::Exited(0),
                    Err(_) => false,
                }
            }
            Probe::Http(probe, address) => {
                let timeout = probe
                    .max_time
                    .map_or(timeout, |t| timeout.min(Duration::from_secs(u64::from(t))));
                // Where the container's port is on the host (a task's
                // privileged ports are shifted), as its server bound it.
                let at =
                    skiff_runtime::ports::host(std::net::SocketAddr::from((*address, probe.port)));
                let url = format!("http://{at}{}", probe.path);
                let method = if probe.head {
                    reqwest::Method::HEAD
                } else {
                    reqwest::Method::GET
                };
                let sent = client
                    .request(method, url)
                    .header(reqwest::header::HOST, format!("localhost:{}", probe.port))
                    .timeout(timeout)
                    .send()
                    .await;
                match sent {
                    Ok(r) => !probe.fail_on_error_status || r.status().as_u16() < 400,
                    Err(_) => false,
                }
            }
        }
    }
}

async fn health_loop(
    probe: Probe,
    check: HealthCheck,
    index: usize,
    report: mpsc::UnboundedSender<(usize, HealthStatus)>,
    mut halt: watch::Receiver<bool>,
) {
    let started = tokio::time::Instant::now();
    let start_period = Duration::from_secs(u64::from(check.start_period.unwrap_or(0)));
    let mut failures = 0;
    // Requests as curl makes them: no proxy, no redirects followed, a
    // connection each time.
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .user_agent("curl/8 (skiff health check)")
        .build()
        .unwrap_or_default();
    loop {
        let passed = probe.passes(&check, &client).await;
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
