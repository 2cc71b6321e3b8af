//! The ECS task as a task payload carries it: the task itself (its
//! overrides, its awsvpc configuration, its containers) in the JSON shape
//! ECS's API returns it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Seconds since the epoch, as AWS JSON protocols carry timestamps, to
/// the microsecond (ECS shows milliseconds; SDKs read any fraction, and a
/// task's createdAt → startedAt is often under one).
pub fn now() -> f64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_micros() as f64) / 1_000_000.0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

/// A task's `networkConfiguration` (RunTask, CreateService).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awsvpc_configuration: Option<AwsvpcConfiguration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsvpcConfiguration {
    #[serde(default)]
    pub subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assign_public_ip: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkBinding {
    #[serde(rename = "bindIP")]
    pub bind_ip: String,
    pub container_port: u16,
    pub host_port: u16,
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub container_arn: String,
    pub task_arn: String,
    pub name: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    pub last_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub network_bindings: Vec<NetworkBinding>,
    #[serde(default)]
    pub network_interfaces: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<String>,
    pub cpu: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<String>,
    /// skiff's: where its start went (stored; views show it as the
    /// task's `skiff.*` attributes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<ContainerPhases>,
}

/// Where one container's start went, as its agent measured it. Each part
/// is reported when it is known: the image's when it is loaded, the
/// instance's when the guest begins to run, the exit when it ends.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPhases {
    /// Where the binary came from: `registry` (pulled now), `store`
    /// (pulled before, read back and its digest checked) or `warm` (the
    /// agent held it compiled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Bytes of the binary that came over the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_bytes: Option<u64>,
    /// Resolving the reference: manifests and image config, each checked
    /// against its digest (µs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve_micros: Option<u64>,
    /// The layer's download, its digest checked as it arrives (µs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_micros: Option<u64>,
    /// Writing it to the image store, or reading it back from there and
    /// checking its digest (µs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_micros: Option<u64>,
    /// Where the compiled code came from: `compiled` (now), `cache` (the
    /// on-disk compile cache) or `warm` (held in memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile: Option<String>,
    /// Compiling, or loading from the compile cache, and pre-linking (µs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_micros: Option<u64>,
    /// Building the sandbox: WASI context, store, limits (µs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_micros: Option<u64>,
    /// Instantiating in it (µs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instantiate_micros: Option<u64>,
    /// When the guest's first instruction ran (seconds since the epoch, to
    /// the microsecond); for a wasi:http server, its first request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_instruction_at: Option<f64>,
    /// When the guest ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exited_at: Option<f64>,
}

impl ContainerPhases {
    /// A duration as the phases count it: whole microseconds.
    pub fn micros(d: std::time::Duration) -> u64 {
        u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
    }

    /// Takes what `later` knows that this does not.
    pub fn merge(&mut self, later: ContainerPhases) {
        fn keep<T>(slot: &mut Option<T>, v: Option<T>) {
            if slot.is_none() {
                *slot = v;
            }
        }
        keep(&mut self.image, later.image);
        keep(&mut self.pull_bytes, later.pull_bytes);
        keep(&mut self.resolve_micros, later.resolve_micros);
        keep(&mut self.download_micros, later.download_micros);
        keep(&mut self.store_micros, later.store_micros);
        keep(&mut self.compile, later.compile);
        keep(&mut self.compile_micros, later.compile_micros);
        keep(&mut self.sandbox_micros, later.sandbox_micros);
        keep(&mut self.instantiate_micros, later.instantiate_micros);
        keep(&mut self.first_instruction_at, later.first_instruction_at);
        keep(&mut self.exited_at, later.exited_at);
    }

    /// Its parts as ECS attributes (name, value) of a task, each name
    /// `skiff.CONTAINER.PART`: durations in microseconds, times in seconds
    /// since the epoch as ECS's own timestamps. A container name too long
    /// for an attribute name (128 characters) is given by its position.
    pub fn attributes(&self, container: &str, index: usize) -> Vec<(String, String)> {
        let who = if container.len() <= 96 {
            container.to_string()
        } else {
            index.to_string()
        };
        let count = |v: Option<u64>| v.map(|v| v.to_string());
        let time = |v: Option<f64>| v.map(|v| format!("{v:.6}"));
        [
            ("image", self.image.clone()),
            ("pullBytes", count(self.pull_bytes)),
            ("resolveMicros", count(self.resolve_micros)),
            ("downloadMicros", count(self.download_micros)),
            ("storeMicros", count(self.store_micros)),
            ("compile", self.compile.clone()),
            ("compileMicros", count(self.compile_micros)),
            ("sandboxMicros", count(self.sandbox_micros)),
            ("instantiateMicros", count(self.instantiate_micros)),
            ("firstInstructionAt", time(self.first_instruction_at)),
            ("exitedAt", time(self.exited_at)),
        ]
        .into_iter()
        .filter_map(|(part, v)| v.map(|v| (format!("skiff.{who}.{part}"), v)))
        .collect()
    }
}

/// The task lifecycle, in ECS's order.
pub const TASK_STATES: &[&str] = &[
    "PROVISIONING",
    "PENDING",
    "ACTIVATING",
    "RUNNING",
    "DEACTIVATING",
    "STOPPING",
    "DEPROVISIONING",
    "STOPPED",
];

/// Where `state` comes in the lifecycle (unknown states sort last).
pub fn state_rank(state: &str) -> usize {
    TASK_STATES
        .iter()
        .position(|s| *s == state)
        .unwrap_or(TASK_STATES.len())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerOverride {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<KeyValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TaskOverride {
    #[serde(default)]
    pub container_overrides: Vec<ContainerOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub task_arn: String,
    pub cluster_arn: String,
    pub task_definition_arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_instance_arn: Option<String>,
    pub overrides: TaskOverride,
    pub last_status: String,
    pub desired_status: String,
    pub cpu: String,
    pub memory: String,
    pub containers: Vec<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub launch_type: String,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    pub created_at: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_started_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_stopped_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_stopped_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<f64>,
    #[serde(default)]
    pub attachments: Vec<Value>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<String>,
    #[serde(default)]
    pub enable_execute_command: bool,
    /// The idempotency token RunTask was called with (stored; not in
    /// ECS's shape, so views leave it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    /// The awsvpc configuration it was launched with, security groups
    /// resolved to ids (stored; views leave it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_configuration: Option<NetworkConfiguration>,
    /// The container instance whose agent runs a FARGATE task (stored:
    /// ECS shows FARGATE tasks with no container instance, so views
    /// leave it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_instance_arn: Option<String>,
    /// The capacity provider it was counted against (`FARGATE`,
    /// `FARGATE_SPOT`), when launched by a capacity provider strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_provider_name: Option<String>,
    /// A FARGATE task's platform version (`LATEST` resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_version: Option<String>,
    /// `Linux`, for a FARGATE task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_family: Option<String>,
    /// Scale-in protection until this time (UpdateTaskProtection; stored,
    /// shown by GetTaskProtection only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected_until: Option<f64>,
    /// When the control plane recorded it STOPPED, by its own clock
    /// (stored; shown as the `skiff.stopRecordedAt` attribute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_recorded_at: Option<f64>,
}

impl Task {
    /// Is it protected from scale-in at `now`?
    pub fn protected_at(&self, now: f64) -> bool {
        self.protected_until.is_some_and(|until| until > now)
    }
}

impl Task {
    /// The task id: the last component of its ARN.
    pub fn id(&self) -> &str {
        self.task_arn.rsplit('/').next().unwrap_or(&self.task_arn)
    }

    /// The container instance whose agent runs it: its own (EC2), or the
    /// one lending it capacity (FARGATE).
    pub fn runs_on(&self) -> Option<&str> {
        self.container_instance_arn
            .as_deref()
            .or(self.host_instance_arn.as_deref())
    }

    /// The cluster's name, from its ARN.
    pub fn cluster_name(&self) -> &str {
        self.cluster_arn
            .rsplit('/')
            .next()
            .unwrap_or(&self.cluster_arn)
    }
}
