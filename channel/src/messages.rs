//! The messages between the control plane and an agent, in ECS's own
//! agent-facing shapes: the control plane sends task payloads (start this
//! task, stop that one); the agent answers with state changes shaped as
//! ECS's `SubmitTaskStateChange`, `SubmitContainerStateChange` and
//! `SubmitAttachmentStateChanges` requests, field for field, plus a few
//! fields of skiff's own, marked as such (the agent's own timestamps, stop
//! codes, health, the address it leased).
//!
//! Every message serialises to JSON in ECS's camelCase, so a network can go
//! under the channel without changing either side.

use crate::task::{NetworkBinding, Task};
use crate::taskdef::TaskDefinition;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// A task's lifecycle state, in ECS's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    Provisioning,
    Pending,
    Activating,
    Running,
    Deactivating,
    Stopping,
    Deprovisioning,
    Stopped,
}

impl TaskStatus {
    /// ECS's name for it (`RUNNING`).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Provisioning => "PROVISIONING",
            TaskStatus::Pending => "PENDING",
            TaskStatus::Activating => "ACTIVATING",
            TaskStatus::Running => "RUNNING",
            TaskStatus::Deactivating => "DEACTIVATING",
            TaskStatus::Stopping => "STOPPING",
            TaskStatus::Deprovisioning => "DEPROVISIONING",
            TaskStatus::Stopped => "STOPPED",
        }
    }
}

/// A container's state, as the agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContainerStatus {
    Pending,
    Running,
    Stopped,
}

impl ContainerStatus {
    /// ECS's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerStatus::Pending => "PENDING",
            ContainerStatus::Running => "RUNNING",
            ContainerStatus::Stopped => "STOPPED",
        }
    }
}

/// A container's (or a task's) health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthStatus {
    Healthy,
    Unhealthy,
    Unknown,
}

impl HealthStatus {
    /// ECS's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "HEALTHY",
            HealthStatus::Unhealthy => "UNHEALTHY",
            HealthStatus::Unknown => "UNKNOWN",
        }
    }
}

/// An attachment's (the awsvpc task's network interface's) state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AttachmentStatus {
    Precreated,
    Attached,
    Deleted,
}

impl AttachmentStatus {
    /// ECS's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachmentStatus::Precreated => "PRECREATED",
            AttachmentStatus::Attached => "ATTACHED",
            AttachmentStatus::Deleted => "DELETED",
        }
    }
}

/// What the control plane tells an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ToAgent {
    /// Run this task (nothing if the agent already runs it).
    StartTask(Box<StartTask>),
    /// Stop this task (nothing if the agent does not run it): its
    /// containers are asked to stop, then killed after their stopTimeout.
    StopTask {
        #[serde(rename = "taskArn")]
        task_arn: String,
    },
}

/// Everything an agent needs to run one task: the task (its overrides,
/// its awsvpc configuration with security groups resolved to ids, its
/// network interface) and its task definition (containers, volumes,
/// network mode, limits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartTask {
    pub task: Task,
    pub task_definition: TaskDefinition,
}

/// What an agent tells the control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FromAgent {
    /// `SubmitTaskStateChange`.
    TaskStateChange(TaskStateChange),
    /// `SubmitContainerStateChange`.
    ContainerStateChange(ContainerStateChange),
    /// `SubmitAttachmentStateChanges`.
    AttachmentStateChanges(AttachmentStateChanges),
}

impl FromAgent {
    /// The ARN of the task the change is about.
    pub fn task_arn(&self) -> &str {
        match self {
            FromAgent::TaskStateChange(c) => &c.task,
            FromAgent::ContainerStateChange(c) => &c.task,
            FromAgent::AttachmentStateChanges(c) => &c.task,
        }
    }
}

/// ECS's `SubmitTaskStateChange`: a task's new status, and whatever
/// changed with it. Only the fields set change anything; timestamps are
/// recorded once.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStateChange {
    /// The cluster's ARN.
    pub cluster: String,
    /// The task's ARN.
    pub task: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    /// Why it stopped (the task's `stoppedReason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerChange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_started_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_stopped_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_stopped_at: Option<f64>,
    /// skiff's: when its containers were all running, by the agent's
    /// clock (to the microsecond: a start is often under a millisecond).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    /// skiff's: when it began to stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping_at: Option<f64>,
    /// skiff's: when it was stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<f64>,
    /// skiff's: the task's `stopCode`, set only when the agent decided the
    /// task stops (an essential container exited, it failed to start); a
    /// stop the control plane asked for keeps the code it set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<String>,
    /// skiff's: the task's health, from its essential containers'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<HealthStatus>,
}

/// ECS's `SubmitContainerStateChange`: one container's change.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStateChange {
    /// The cluster's ARN.
    pub cluster: String,
    /// The task's ARN.
    pub task: String,
    #[serde(flatten)]
    pub change: ContainerChange,
}

/// ECS's `ContainerStateChange`: what changed about one container.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerChange {
    pub container_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The host ports published for it (bridge), replacing those recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_bindings: Option<Vec<NetworkBinding>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ContainerStatus>,
    /// skiff's: the container's health check result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<HealthStatus>,
    /// skiff's: what is now known of where its start went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<crate::task::ContainerPhases>,
}

/// ECS's `SubmitAttachmentStateChanges`: the task's network interface
/// attached (with the address the agent leased for it) or deleted.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentStateChanges {
    /// The cluster's ARN.
    pub cluster: String,
    /// skiff's: the task whose attachments these are.
    pub task: String,
    pub attachments: Vec<AttachmentChange>,
}

/// ECS's `AttachmentStateChange`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentChange {
    /// `arn:aws:ecs:REGION:ACCOUNT:attachment/ID`, ID being the attachment's
    /// `id` in the task (see [`attachment_arn`]).
    pub attachment_arn: String,
    pub status: AttachmentStatus,
    /// skiff's: the interface's address, once it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_ipv4_address: Option<Ipv4Addr>,
}

/// The ARN of a task's attachment `id`: the task's ARN, with
/// `attachment/ID` for its resource.
pub fn attachment_arn(task_arn: &str, id: &str) -> String {
    match task_arn.split_once(":task/") {
        Some((prefix, _)) => format!("{prefix}:attachment/{id}"),
        None => format!("attachment/{id}"),
    }
}

/// The attachment id an ARN names.
pub fn attachment_id(attachment_arn: &str) -> &str {
    attachment_arn.rsplit('/').next().unwrap_or(attachment_arn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn state_changes_are_ecs_shapes_on_the_wire() {
        let change = FromAgent::TaskStateChange(TaskStateChange {
            cluster: "arn:aws:ecs:r:0:cluster/c".into(),
            task: "arn:aws:ecs:r:0:task/c/abc".into(),
            status: Some(TaskStatus::Stopped),
            reason: Some("Essential container in task exited".into()),
            containers: vec![ContainerChange {
                container_name: "web".into(),
                exit_code: Some(1),
                status: Some(ContainerStatus::Stopped),
                ..ContainerChange::default()
            }],
            execution_stopped_at: Some(2.5),
            ..TaskStateChange::default()
        });
        let wire = serde_json::to_value(&change).unwrap();
        assert_eq!(
            wire,
            json!({"taskStateChange": {
                "cluster": "arn:aws:ecs:r:0:cluster/c", "task": "arn:aws:ecs:r:0:task/c/abc",
                "status": "STOPPED", "reason": "Essential container in task exited",
                "containers": [{"containerName": "web", "exitCode": 1, "status": "STOPPED"}],
                "executionStoppedAt": 2.5,
            }})
        );
        assert_eq!(serde_json::from_value::<FromAgent>(wire).unwrap(), change);
        let container = FromAgent::ContainerStateChange(ContainerStateChange {
            cluster: "c".into(),
            task: "t".into(),
            change: ContainerChange {
                container_name: "web".into(),
                status: Some(ContainerStatus::Running),
                runtime_id: Some("t-1".into()),
                ..ContainerChange::default()
            },
        });
        assert_eq!(
            serde_json::to_value(&container).unwrap(),
            json!({"containerStateChange": {"cluster": "c", "task": "t",
                "containerName": "web", "runtimeId": "t-1", "status": "RUNNING"}})
        );
    }

    #[test]
    fn attachments_are_named_by_arn() {
        let arn = attachment_arn("arn:aws:ecs:eu-west-1:000000000000:task/c/abc", "e-1");
        assert_eq!(arn, "arn:aws:ecs:eu-west-1:000000000000:attachment/e-1");
        assert_eq!(attachment_id(&arn), "e-1");
        assert!(TaskStatus::Running < TaskStatus::Stopped);
        assert_eq!(TaskStatus::Deprovisioning.as_str(), "DEPROVISIONING");
    }
}

/// What the tasks running on an instance have used so far, sent every
/// [`USAGE_EVERY`] (ECS's agent sends the like to its telemetry endpoint).
/// Not a state change: a lost one is only a missed sample, so it is
/// neither numbered nor acknowledged. The control plane turns two samples
/// of a task into its CPU and memory utilization (CloudWatch's
/// `AWS/ECS` metrics).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    /// When it was measured, in seconds since the epoch.
    pub at: f64,
    pub tasks: Vec<TaskUsage>,
}

/// One task's use: all its containers together.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskUsage {
    pub task_arn: String,
    /// CPU time its containers have spent since they started, in
    /// nanoseconds.
    pub cpu_nanos: u64,
    /// The linear memory its containers hold now, in bytes.
    pub memory_bytes: u64,
}

/// How often agents send a [`UsageReport`].
pub const USAGE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
