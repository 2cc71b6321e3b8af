//! One task's life on this agent, and what it reports at each step:
//!
//! | status | what happens |
//! |---|---|
//! | PENDING | images pulled and compiled (`pullStartedAt`, `pullStoppedAt`) |
//! | ACTIVATING | resources provisioned: volumes, log streams, the network (its ENI attachment reported ATTACHED), published ports |
//! | RUNNING | every container started, in `dependsOn` order (`startedAt`) |
//! | DEACTIVATING → STOPPING | an essential container exited, or the task was asked to stop: containers stopped |
//! | DEPROVISIONING | resources cleaned up in reverse (`executionStoppedAt`; the ENI reported DELETED) |
//! | STOPPED | `stopCode` and `stoppedReason` if the agent decided it |
//!
//! A task asked to stop before its containers start, or one that cannot
//! start, goes straight to STOPPED (`TaskFailedToStart`).

use crate::Inner;
use crate::resources::logs::LineSink;
use crate::resources::network::TaskNetwork;
use crate::resources::ports::PublishedPorts;
use crate::resources::volumes::{self, Volumes};
use crate::supervise::{Container, Supervised, supervise};
use skiff_channel::messages::{
    AttachmentChange, AttachmentStateChanges, AttachmentStatus, ContainerChange,
    ContainerStateChange, ContainerStatus, FromAgent, TaskStateChange, TaskStatus, attachment_arn,
};
use skiff_channel::now;
use skiff_channel::task::Task;
use skiff_channel::taskdef::TaskDefinition;
use skiff_runtime::ArtifactKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// The usage meters of one task's containers, as they start.
pub(crate) type Meters = Arc<std::sync::Mutex<Vec<skiff_runtime::UsageMeter>>>;

/// Sends one task's state changes to the control plane, in order, and
/// keeps its containers' usage meters where the agent's usage reports
/// read them.
pub(crate) struct Reporter {
    cluster: String,
    task: String,
    /// The id of the task's ENI attachment, if it has one (awsvpc).
    eni: Option<String>,
    tx: mpsc::UnboundedSender<FromAgent>,
    meters: Meters,
}

impl Reporter {
    fn new(task: &Task, tx: mpsc::UnboundedSender<FromAgent>, meters: Meters) -> Reporter {
        let eni = task
            .attachments
            .iter()
            .find(|a| a["type"] == "ElasticNetworkInterface")
            .and_then(|a| a["id"].as_str())
            .map(String::from);
        Reporter {
            cluster: task.cluster_arn.clone(),
            task: task.task_arn.clone(),
            eni,
            tx,
            meters,
        }
    }

    /// Counts a started container's use as the task's.
    pub(crate) fn meter(&self, meter: skiff_runtime::UsageMeter) {
        if let Ok(mut meters) = self.meters.lock() {
            meters.push(meter);
        }
    }

    /// The task's id (the last part of its ARN).
    pub(crate) fn task_id(&self) -> &str {
        self.task.rsplit('/').next().unwrap_or(&self.task)
    }

    /// `SubmitTaskStateChange`.
    pub(crate) fn task(&self, change: TaskStateChange) {
        let _ = self.tx.send(FromAgent::TaskStateChange(TaskStateChange {
            cluster: self.cluster.clone(),
            task: self.task.clone(),
            ..change
        }));
    }

    /// `SubmitContainerStateChange`.
    pub(crate) fn container(&self, change: ContainerChange) {
        let _ = self
            .tx
            .send(FromAgent::ContainerStateChange(ContainerStateChange {
                cluster: self.cluster.clone(),
                task: self.task.clone(),
                change,
            }));
    }

    /// The ENI attachment's change, if the task has one.
    fn eni(&self, status: AttachmentStatus, ip: Option<Ipv4Addr>) -> Option<AttachmentChange> {
        self.eni.as_deref().map(|id| AttachmentChange {
            attachment_arn: attachment_arn(&self.task, id),
            status,
            private_ipv4_address: ip,
        })
    }

    /// `SubmitAttachmentStateChanges` for the ENI, if the task has one.
    fn attachment(&self, status: AttachmentStatus, ip: Option<Ipv4Addr>) {
        if let Some(change) = self.eni(status, ip) {
            let _ = self
                .tx
                .send(FromAgent::AttachmentStateChanges(AttachmentStateChanges {
                    cluster: self.cluster.clone(),
                    task: self.task.clone(),
                    attachments: vec![change],
                }));
        }
    }

    /// The task could not start (or was stopped before it did): every
    /// container ends STOPPED, those in `specific` saying why.
    fn failed(&self, td: &TaskDefinition, reason: String, specific: Vec<ContainerChange>) {
        let t = now();
        let mut containers: Vec<ContainerChange> = td
            .container_definitions
            .iter()
            .map(|c| ContainerChange {
                container_name: c.name.clone(),
                status: Some(ContainerStatus::Stopped),
                ..ContainerChange::default()
            })
            .collect();
        containers.extend(specific);
        self.task(TaskStateChange {
            status: Some(TaskStatus::Stopped),
            execution_stopped_at: Some(t),
            stopped_at: Some(t),
            stop_code: Some("TaskFailedToStart".into()),
            reason: Some(reason),
            containers,
            // An awsvpc task's interface, if it got one, is gone.
            attachments: self
                .eni(AttachmentStatus::Deleted, None)
                .into_iter()
                .collect(),
            ..TaskStateChange::default()
        });
    }
}

/// Runs a task to its end; `stop` turns true when the control plane asks
/// it to stop.
pub(crate) async fn run(
    agent: &Arc<Inner>,
    task: Task,
    td: TaskDefinition,
    mut stop: watch::Receiver<bool>,
    meters: Meters,
) {
    let report = Reporter::new(&task, agent.reports.clone(), meters);
    let id = report.task_id().to_string();
    let scratch = Volumes::scratch_of(&agent.config.data_dir, &id);
    let fail = |reason: String, specific: Vec<ContainerChange>| {
        volumes::remove_scratch(&scratch, &id);
        report.failed(&td, reason, specific);
    };
    let stopped_early = || "Task stopped before it started".to_string();
    report.task(TaskStateChange {
        status: Some(TaskStatus::Pending),
        pull_started_at: Some(now()),
        ..TaskStateChange::default()
    });

    // Pull and compile every image.
    let mut images = Vec::with_capacity(td.container_definitions.len());
    let mut pulled = Vec::new();
    let pull_timeout = agent.config.image_pull_timeout;
    for c in &td.container_definitions {
        if *stop.borrow() {
            return fail(stopped_early(), Vec::new());
        }
        // A stop asked for ends the pull; so does the pull timeout.
        let pulled_one = tokio::select! {
            loaded = tokio::time::timeout(pull_timeout, agent.images.container(c, &td)) => {
                loaded.unwrap_or_else(|_| Err(format!(
                    "CannotPullContainerError: pulling {} took longer than {pull_timeout:?}, the image pull timeout",
                    c.image
                )))
            }
            _ = stop.wait_for(|s| *s) => return fail(stopped_early(), Vec::new()),
        };
        match pulled_one {
            Ok((record, artifact, phases)) => {
                pulled.push(ContainerChange {
                    container_name: c.name.clone(),
                    image_digest: Some(record.manifest_digest.clone()),
                    phases: Some(phases),
                    ..ContainerChange::default()
                });
                images.push((record, artifact));
            }
            Err(reason) => {
                let containers = vec![ContainerChange {
                    container_name: c.name.clone(),
                    status: Some(ContainerStatus::Stopped),
                    reason: Some(reason.clone()),
                    ..ContainerChange::default()
                }];
                return fail(reason, containers);
            }
        }
    }
    if *stop.borrow() {
        return fail(stopped_early(), Vec::new());
    }
    report.task(TaskStateChange {
        status: Some(TaskStatus::Activating),
        pull_stopped_at: Some(now()),
        containers: pulled,
        ..TaskStateChange::default()
    });

    // The task's resources, in order; let go in reverse.
    let volumes =
        match Volumes::provision(&td, scratch.clone(), &agent.runtime.config().volumes_dir()) {
            Ok(v) => v,
            Err(reason) => return fail(reason, Vec::new()),
        };
    let mut sinks: Vec<Option<Arc<LineSink>>> = Vec::new();
    for c in &td.container_definitions {
        match crate::resources::logs::provision(&agent.logs, c, &id) {
            Ok(sink) => sinks.push(sink),
            Err(reason) => return fail(reason, Vec::new()),
        }
    }
    if *stop.borrow() {
        return fail(stopped_early(), Vec::new());
    }
    let public = task
        .network_configuration
        .as_ref()
        .and_then(|n| n.awsvpc_configuration.as_ref())
        .is_some_and(|v| v.assign_public_ip.as_deref() == Some("ENABLED"));
    let provisioned =
        TaskNetwork::provision(&td, &task, &agent.addresses, &agent.fabric).and_then(|network| {
            let mut ports =
                PublishedPorts::provision(&td, &network.addresses, agent.config.publish_address)?;
            if let (true, Some(eni)) = (public, network.eni) {
                ports.publish_public(
                    &td,
                    eni,
                    agent.config.publish_address,
                    Arc::clone(&agent.fabric),
                )?;
            }
            Ok((network, ports))
        });
    let (network, ports) = match provisioned {
        Ok(n) => n,
        Err(reason) => {
            return fail(format!("ResourceInitializationError: {reason}"), Vec::new());
        }
    };
    if let Some(ip) = network.eni {
        report.attachment(AttachmentStatus::Attached, Some(ip));
    }
    let bindings: Vec<ContainerChange> = td
        .container_definitions
        .iter()
        .zip(&ports.bindings)
        .filter(|(_, b)| !b.is_empty())
        .map(|(c, b)| ContainerChange {
            container_name: c.name.clone(),
            network_bindings: Some(b.clone()),
            ..ContainerChange::default()
        })
        .collect();
    if !bindings.is_empty() {
        report.task(TaskStateChange {
            containers: bindings,
            ..TaskStateChange::default()
        });
    }

    // The task's size, when it has one, is a hard limit on its containers'
    // CPU together (as the ECS agent's task cgroup, and Fargate, make it).
    let cap = task
        .overrides
        .cpu
        .as_deref()
        .or(td.cpu.as_deref())
        .and_then(|c| c.parse::<u32>().ok())
        .filter(|c| *c > 0)
        .map(skiff_runtime::CpuCap::new);
    // The containers: a wasi:http component serves at its address (the
    // host's loopback in host mode), at its first mapped port.
    let containers: Vec<Container> = td
        .container_definitions
        .iter()
        .zip(images)
        .zip(&network.policies)
        .zip(&network.addresses)
        .zip(&sinks)
        .map(|((((c, (record, artifact)), policy), ip), sink)| {
            let output = sink
                .as_ref()
                .map(|s| Arc::clone(s) as Arc<dyn skiff_runtime::OutputSink>);
            let mut spec =
                crate::spec::container_spec(&task, &td, c, &record, &volumes.paths, output);
            spec.network = Arc::clone(policy);
            spec.limits.cpu_cap = cap.clone();
            let serve_at = c.port_mappings.first().and_then(|p| {
                (artifact.kind() == ArtifactKind::HttpProxy).then(|| {
                    SocketAddr::from((ip.unwrap_or(Ipv4Addr::LOCALHOST), p.container_port))
                })
            });
            Container {
                definition: c.clone(),
                spec,
                artifact,
                address: ip.unwrap_or(Ipv4Addr::LOCALHOST),
                serve_at,
                sink: sink.clone(),
            }
        })
        .collect();
    let outcome = supervise(
        &agent.runtime,
        &report,
        &containers,
        &mut stop,
        agent.config.default_stop_timeout,
    )
    .await;

    // Published ports close and addresses go back.
    let had_eni = network.eni.is_some();
    drop(ports);
    drop(network);
    if had_eni {
        report.attachment(AttachmentStatus::Deleted, None);
    }
    for sink in sinks.iter().flatten() {
        sink.flush();
    }
    report.task(TaskStateChange {
        status: Some(TaskStatus::Deprovisioning),
        execution_stopped_at: Some(now()),
        ..TaskStateChange::default()
    });
    // Kept for ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION (none by default), for
    // someone to look at what the task left.
    let wait = agent.config.task_cleanup_wait;
    if wait.is_zero() {
        volumes.cleanup(&id);
    } else {
        let id = id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            volumes.cleanup(&id);
        });
    }
    let (stop_code, reason) = match outcome {
        // ECS's words exactly (scripts match them); which container it
        // was, and how it exited, are in the task's containers.
        Supervised::EssentialExited => (
            Some("EssentialContainerExited".to_string()),
            Some("Essential container in task exited".to_string()),
        ),
        Supervised::FailedToStart(reason) => (Some("TaskFailedToStart".to_string()), Some(reason)),
        Supervised::Stopped => (None, None),
    };
    report.task(TaskStateChange {
        status: Some(TaskStatus::Stopped),
        stopped_at: Some(now()),
        stop_code,
        reason,
        ..TaskStateChange::default()
    });
}
