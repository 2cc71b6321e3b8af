//! The agent: one container instance's worker. It runs the tasks the
//! control plane places on it through `skiff-runtime` and reports every
//! state change back.
//!
//! A task goes PENDING (images pulled, compiled once per digest),
//! ACTIVATING (volumes and log streams made), RUNNING (every container
//! started, in `dependsOn` order), and, once an essential container exits
//! or it is asked to stop, DEACTIVATING → STOPPING (containers stopped:
//! stdin closes, then after `stopTimeout` they are killed) →
//! DEPROVISIONING (task-scoped volumes removed) → STOPPED.

use crate::logs::{LineSink, LogStore};
use crate::model::{Task, now};
use crate::taskdef::{ContainerDefinition, TaskDefinition};
use crate::tasknet::TaskNetwork;
use skiff_registry::images::{ImageRecord, Puller};
use skiff_runtime::addresses::AddressPool;
use skiff_runtime::{
    Artifact, ArtifactKind, InstanceSpec, Limit, Limits, Mount, NetworkMode, Outcome, Output,
    Runtime, Stdin,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// What changed about a task, as the agent saw it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TaskPatch {
    pub last_status: Option<&'static str>,
    pub pull_started_at: Option<f64>,
    pub pull_stopped_at: Option<f64>,
    pub started_at: Option<f64>,
    pub stopping_at: Option<f64>,
    pub execution_stopped_at: Option<f64>,
    pub stopped_at: Option<f64>,
    /// Set only when the agent decided the task stops (an essential
    /// container exited, it failed to start); a stop the control plane
    /// asked for keeps the code it set.
    pub stop_code: Option<&'static str>,
    pub stopped_reason: Option<String>,
    pub health_status: Option<&'static str>,
    pub containers: Vec<ContainerPatch>,
    /// The awsvpc task's network interface: its status, and the address
    /// once it has one.
    pub eni: Option<(&'static str, Option<std::net::Ipv4Addr>)>,
}

/// What changed about one container.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ContainerPatch {
    pub name: String,
    pub last_status: Option<&'static str>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub runtime_id: Option<String>,
    pub image_digest: Option<String>,
    pub health_status: Option<&'static str>,
    /// The host ports published for it (bridge), replacing those recorded.
    pub network_bindings: Option<Vec<crate::model::NetworkBinding>>,
}

/// A task's patch, on its way to the control plane.
#[derive(Debug)]
pub struct Report {
    pub task_id: String,
    pub patch: TaskPatch,
}

/// Runs tasks on this machine.
pub struct Agent {
    pub(crate) instance_arn: String,
    runtime: Runtime,
    puller: Arc<Puller>,
    logs: LogStore,
    /// Where `hello:v1` (no registry host) is pulled from.
    default_registry: String,
    data_dir: PathBuf,
    reports: mpsc::UnboundedSender<Report>,
    /// Where awsvpc and bridge tasks lease their addresses.
    addresses: Result<Arc<AddressPool>, String>,
    /// Security groups and memberships, for task socket policies.
    fabric: Arc<crate::fabric::Fabric>,
    running: Mutex<HashMap<String, watch::Sender<bool>>>,
    /// Compiled images recently started here, by image reference and
    /// binary digest: the next task of the same image only instantiates
    /// (no reading, hashing or deserialising the module again).
    warm: Mutex<Warm>,
}

/// How many compiled images the agent keeps warm.
const WARM_IMAGES: usize = 64;

/// The warm images, each with when it was last started (a counter): the
/// least recently started one goes when there are too many.
#[derive(Default)]
struct Warm {
    images: HashMap<(String, String), (Arc<Artifact>, u64)>,
    clock: u64,
}

impl Warm {
    fn get(&mut self, key: &(String, String)) -> Option<Arc<Artifact>> {
        self.clock += 1;
        let clock = self.clock;
        self.images.get_mut(key).map(|(a, used)| {
            *used = clock;
            Arc::clone(a)
        })
    }

    fn insert(&mut self, key: (String, String), artifact: Arc<Artifact>) {
        // Another binary under the same reference replaces the old one.
        self.images.retain(|k, _| k.0 != key.0);
        if self.images.len() >= WARM_IMAGES
            && let Some(oldest) = self
                .images
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            self.images.remove(&oldest);
        }
        self.clock += 1;
        self.images.insert(key, (artifact, self.clock));
    }
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("instance_arn", &self.instance_arn)
            .finish_non_exhaustive()
    }
}

/// The default grace period between asking a container to stop and
/// killing it (ECS's `stopTimeout` default).
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);

impl Agent {
    #[allow(clippy::too_many_arguments)] // each is one of the agent's parts
    pub(crate) fn new(
        instance_arn: String,
        runtime: Runtime,
        puller: Arc<Puller>,
        logs: LogStore,
        default_registry: String,
        data_dir: PathBuf,
        reports: mpsc::UnboundedSender<Report>,
        addresses: Result<Arc<AddressPool>, String>,
        fabric: Arc<crate::fabric::Fabric>,
    ) -> Agent {
        Agent {
            instance_arn,
            runtime,
            puller,
            logs,
            default_registry,
            data_dir,
            reports,
            addresses,
            fabric,
            running: Mutex::new(HashMap::new()),
            warm: Mutex::new(Warm::default()),
        }
    }

    /// The compiled image for `reference`: warm if the store still maps it
    /// to the binary compiled last time, else pulled (or read from the
    /// store) and compiled (or loaded from the compile cache).
    async fn image(&self, reference: &str) -> Result<(ImageRecord, Arc<Artifact>), String> {
        if let Some(record) = self.puller.cached(reference) {
            let key = (record.reference.clone(), record.wasm_digest.clone());
            let warm = self.warm.lock().ok().and_then(|mut w| w.get(&key));
            if let Some(artifact) = warm {
                return Ok((record, artifact));
            }
        }
        let (record, bytes) = self
            .puller
            .ensure(reference, &|_, _| {})
            .await
            .map_err(|e| format!("CannotPullContainerError: {e}"))?;
        let runtime = self.runtime.clone();
        let name = record.reference.clone();
        let artifact = tokio::task::spawn_blocking(move || runtime.load_bytes(&name, &bytes))
            .await
            .map_err(|e| format!("CannotPullContainerError: compiling failed: {e}"))?
            .map_err(|e| format!("CannotPullContainerError: {e}"))?;
        if let Ok(mut w) = self.warm.lock() {
            w.insert(
                (record.reference.clone(), record.wasm_digest.clone()),
                Arc::clone(&artifact),
            );
        }
        Ok((record, artifact))
    }

    /// Whether the agent is running (or starting) this task.
    pub(crate) fn has(&self, task_id: &str) -> bool {
        self.running
            .lock()
            .map(|r| r.contains_key(task_id))
            .unwrap_or(false)
    }

    /// Starts a task in the background (nothing if it already runs here).
    pub(crate) fn start(self: &Arc<Self>, task: Task, td: TaskDefinition) {
        let (tx, rx) = watch::channel(false);
        {
            let Ok(mut running) = self.running.lock() else {
                return;
            };
            if running.contains_key(task.id()) {
                return;
            }
            running.insert(task.id().to_string(), tx);
        }
        let agent = Arc::clone(self);
        // The task stays "had" until the control plane has recorded it
        // STOPPED (`forget`), so a StopTask racing its end never mistakes
        // it for a lost task.
        tokio::spawn(async move { agent.run(task, td, rx).await });
    }

    /// The control plane recorded the task STOPPED: the agent is done
    /// with it.
    pub(crate) fn forget(&self, task_id: &str) {
        if let Ok(mut running) = self.running.lock() {
            running.remove(task_id);
        }
    }

    /// Asks a task to stop (nothing if it does not run here).
    pub(crate) fn stop(&self, task_id: &str) {
        if let Ok(running) = self.running.lock()
            && let Some(tx) = running.get(task_id)
        {
            let _ = tx.send(true);
        }
    }

    fn report(&self, task_id: &str, patch: TaskPatch) {
        let _ = self.reports.send(Report {
            task_id: task_id.to_string(),
            patch,
        });
    }

    /// A reference with no registry host names an image in skiff's own
    /// registry.
    fn qualify(&self, image: &str) -> String {
        let first = image.split('/').next().unwrap_or("");
        let has_host = image.contains('/')
            && (first.contains('.') || first.contains(':') || first == "localhost");
        if has_host {
            image.to_string()
        } else {
            format!("{}/{image}", self.default_registry)
        }
    }

    async fn run(&self, task: Task, td: TaskDefinition, mut stop: watch::Receiver<bool>) {
        let id = task.id().to_string();
        // Task-scoped volumes; removed however the task ends.
        let scratch = self.data_dir.join("tasks").join(&id);
        let fail = |reason: String, specific: Vec<ContainerPatch>| {
            let _ = std::fs::remove_dir_all(&scratch);
            let t = now();
            // Every container ends STOPPED; the ones that failed say why.
            let mut containers: Vec<ContainerPatch> = td
                .container_definitions
                .iter()
                .map(|c| ContainerPatch {
                    name: c.name.clone(),
                    last_status: Some("STOPPED"),
                    ..ContainerPatch::default()
                })
                .collect();
            containers.extend(specific);
            self.report(
                &id,
                TaskPatch {
                    last_status: Some("STOPPED"),
                    execution_stopped_at: Some(t),
                    stopped_at: Some(t),
                    stop_code: Some("TaskFailedToStart"),
                    stopped_reason: Some(reason),
                    containers,
                    // An awsvpc task's interface, if it got one, is gone.
                    eni: Some(("DELETED", None)),
                    ..TaskPatch::default()
                },
            );
        };
        self.report(
            &id,
            TaskPatch {
                last_status: Some("PENDING"),
                pull_started_at: Some(now()),
                ..TaskPatch::default()
            },
        );

        // Pull and compile every image.
        let mut images = Vec::with_capacity(td.container_definitions.len());
        let mut pulled = Vec::new();
        for c in &td.container_definitions {
            if *stop.borrow() {
                return fail("Task stopped before it started".into(), Vec::new());
            }
            let reference = self.qualify(&c.image);
            let loaded = async {
                let (record, artifact) = self.image(&reference).await?;
                servable(c, &td, artifact.kind(), &record.reference)?;
                Ok::<_, String>((record, artifact))
            }
            .await;
            match loaded {
                Ok((record, artifact)) => {
                    pulled.push(ContainerPatch {
                        name: c.name.clone(),
                        image_digest: Some(record.manifest_digest.clone()),
                        ..ContainerPatch::default()
                    });
                    images.push((record, artifact));
                }
                Err(reason) => {
                    let containers = vec![ContainerPatch {
                        name: c.name.clone(),
                        last_status: Some("STOPPED"),
                        reason: Some(reason.clone()),
                        ..ContainerPatch::default()
                    }];
                    return fail(reason, containers);
                }
            }
        }
        if *stop.borrow() {
            return fail("Task stopped before it started".into(), Vec::new());
        }
        self.report(
            &id,
            TaskPatch {
                last_status: Some("ACTIVATING"),
                pull_stopped_at: Some(now()),
                containers: pulled,
                ..TaskPatch::default()
            },
        );

        // Volumes and log streams.
        let volumes = match self.volumes(&td, &scratch) {
            Ok(v) => v,
            Err(reason) => {
                return fail(reason, Vec::new());
            }
        };
        let mut sinks: HashMap<String, Arc<LineSink>> = HashMap::new();
        for c in &td.container_definitions {
            match self.log_sink(c, &id) {
                Ok(Some(sink)) => {
                    sinks.insert(c.name.clone(), sink);
                }
                Ok(None) => {}
                Err(reason) => {
                    return fail(reason, Vec::new());
                }
            }
        }

        if *stop.borrow() {
            return fail("Task stopped before it started".into(), Vec::new());
        }
        // Addresses and published ports, held until the task ends.
        let network = match TaskNetwork::new(&td, &task, &self.addresses, &self.fabric) {
            Ok(n) => n,
            Err(reason) => {
                return fail(format!("ResourceInitializationError: {reason}"), Vec::new());
            }
        };
        if network.eni.is_some() || network.bindings.iter().any(|b| !b.is_empty()) {
            self.report(
                &id,
                TaskPatch {
                    eni: network.eni.map(|ip| ("ATTACHED", Some(ip))),
                    containers: td
                        .container_definitions
                        .iter()
                        .zip(&network.bindings)
                        .filter(|(_, b)| !b.is_empty())
                        .map(|(c, b)| ContainerPatch {
                            name: c.name.clone(),
                            network_bindings: Some(b.clone()),
                            ..ContainerPatch::default()
                        })
                        .collect(),
                    ..TaskPatch::default()
                },
            );
        }
        // Where each wasi:http container serves: its address (the host's
        // loopback in host mode), at its first mapped port.
        let serve_at: Vec<Option<std::net::SocketAddr>> = td
            .container_definitions
            .iter()
            .zip(&images)
            .zip(&network.addresses)
            .map(|((c, (_, artifact)), ip)| {
                let port = c.port_mappings.first()?.container_port;
                (artifact.kind() == ArtifactKind::HttpProxy).then(|| {
                    std::net::SocketAddr::from((ip.unwrap_or(std::net::Ipv4Addr::LOCALHOST), port))
                })
            })
            .collect();
        // Start in dependency order, then supervise.
        let specs: Vec<(ContainerDefinition, InstanceSpec)> = td
            .container_definitions
            .iter()
            .zip(&images)
            .zip(&network.policies)
            .map(|((c, (record, _)), policy)| {
                let mut spec = self.spec(&task, &td, c, record, &volumes, sinks.get(&c.name));
                spec.network = Arc::clone(policy);
                (c.clone(), spec)
            })
            .collect();
        let artifacts: Vec<Arc<Artifact>> = images.into_iter().map(|(_, a)| a).collect();
        let container_sinks: Vec<Option<Arc<LineSink>>> = td
            .container_definitions
            .iter()
            .map(|c| sinks.get(&c.name).cloned())
            .collect();
        let outcome = self
            .supervise(
                &id,
                &specs,
                &artifacts,
                &serve_at,
                &container_sinks,
                &mut stop,
            )
            .await;
        // Published ports close and addresses go back.
        let had_eni = network.eni.is_some();
        drop(network);
        if had_eni {
            self.report(
                &id,
                TaskPatch {
                    eni: Some(("DELETED", None)),
                    ..TaskPatch::default()
                },
            );
        }

        for sink in sinks.values() {
            sink.flush();
        }
        self.report(
            &id,
            TaskPatch {
                last_status: Some("DEPROVISIONING"),
                execution_stopped_at: Some(now()),
                ..TaskPatch::default()
            },
        );
        if let Err(e) = std::fs::remove_dir_all(&scratch)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(task = %id, "cannot remove the task's scratch volumes: {e}");
        }
        let (stop_code, stopped_reason) = match outcome {
            Supervised::EssentialExited(name) => (
                Some("EssentialContainerExited"),
                Some(format!("Essential container in task exited ({name})")),
            ),
            Supervised::FailedToStart(reason) => (Some("TaskFailedToStart"), Some(reason)),
            Supervised::Stopped => (None, None),
        };
        self.report(
            &id,
            TaskPatch {
                last_status: Some("STOPPED"),
                stopped_at: Some(now()),
                stop_code,
                stopped_reason,
                ..TaskPatch::default()
            },
        );
    }

    fn volumes(
        &self,
        td: &TaskDefinition,
        scratch: &Path,
    ) -> Result<HashMap<String, PathBuf>, String> {
        let mut out = HashMap::new();
        for v in &td.volumes {
            let path = match (&v.host, &v.docker_volume_configuration) {
                (Some(h), _) if h.source_path.is_some() => {
                    let p = PathBuf::from(h.source_path.as_deref().unwrap_or_default());
                    if !p.is_dir() {
                        return Err(format!(
                            "CannotCreateContainerError: volume {}: host path {} is not a directory",
                            v.name,
                            p.display()
                        ));
                    }
                    p
                }
                (_, Some(d)) if d.scope == "shared" => {
                    let p = self.runtime.config().volumes_dir().join(&v.name);
                    if !p.is_dir() && d.autoprovision != Some(true) {
                        return Err(format!(
                            "CannotCreateContainerError: shared volume {} does not exist (set autoprovision to create it)",
                            v.name
                        ));
                    }
                    std::fs::create_dir_all(&p).map_err(|e| {
                        format!("CannotCreateContainerError: volume {}: {e}", v.name)
                    })?;
                    p
                }
                _ => {
                    let p = scratch.join("volumes").join(&v.name);
                    std::fs::create_dir_all(&p).map_err(|e| {
                        format!("CannotCreateContainerError: volume {}: {e}", v.name)
                    })?;
                    p
                }
            };
            out.insert(v.name.clone(), path);
        }
        Ok(out)
    }

    fn log_sink(
        &self,
        c: &ContainerDefinition,
        task_id: &str,
    ) -> Result<Option<Arc<LineSink>>, String> {
        let Some(log) = &c.log_configuration else {
            return Ok(None);
        };
        let group = log
            .options
            .get("awslogs-group")
            .cloned()
            .unwrap_or_default();
        let create = log
            .options
            .get("awslogs-create-group")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        crate::logs::check_group_name(&group)
            .map_err(|e| format!("CannotStartContainerError: {}", e.message))?;
        let exists = self.logs.group_exists(&group).map_err(|e| e.message)?;
        if !exists {
            if !create {
                return Err(format!(
                    "CannotStartContainerError: log group {group} does not exist (create it, or set awslogs-create-group to true)"
                ));
            }
            self.logs.create_group(&group).map_err(|e| e.message)?;
        }
        let stream = match log.options.get("awslogs-stream-prefix") {
            Some(prefix) if !prefix.is_empty() => format!("{prefix}/{}/{task_id}", c.name),
            _ => format!("{}/{task_id}", c.name),
        };
        self.logs
            .create_stream(&group, &stream)
            .map_err(|e| e.message)?;
        Ok(Some(Arc::new(LineSink::new(
            self.logs.clone(),
            group,
            stream,
        ))))
    }

    fn spec(
        &self,
        task: &Task,
        td: &TaskDefinition,
        c: &ContainerDefinition,
        record: &skiff_registry::images::ImageRecord,
        volumes: &HashMap<String, PathBuf>,
        sink: Option<&Arc<LineSink>>,
    ) -> InstanceSpec {
        let overrides = task
            .overrides
            .container_overrides
            .iter()
            .find(|o| o.name == c.name);
        // argv: entryPoint (its first word is argv[0]) or the container's
        // name, then command (or the override's) or the image's arguments.
        let command = overrides
            .and_then(|o| o.command.clone())
            .unwrap_or_else(|| c.command.clone());
        let mut args: Vec<String> = if c.entry_point.is_empty() {
            vec![c.name.clone()]
        } else {
            c.entry_point.clone()
        };
        if command.is_empty() {
            args.extend(record.args.iter().cloned());
        } else {
            args.extend(command);
        }
        // The image's environment, the definition's, then the override's.
        let mut env = record.env.clone();
        let mut set = |k: &str, v: &str| {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
        };
        for kv in &c.environment {
            set(&kv.name, &kv.value);
        }
        for kv in overrides.map(|o| o.environment.as_slice()).unwrap_or(&[]) {
            set(&kv.name, &kv.value);
        }
        // Mounts: the container's own, then those of volumesFrom.
        let mut mounts = Vec::new();
        let mut add = |points: &[crate::taskdef::MountPoint], force_ro: bool| {
            for m in points {
                if let Some(host) = volumes.get(&m.source_volume)
                    && !mounts.iter().any(|x: &Mount| x.guest == m.container_path)
                {
                    mounts.push(Mount {
                        host: host.clone(),
                        guest: m.container_path.clone(),
                        read_only: m.read_only || force_ro,
                    });
                }
            }
        };
        add(&c.mount_points, false);
        for from in &c.volumes_from {
            if let Some(src) = td
                .container_definitions
                .iter()
                .find(|x| x.name == from.source_container)
            {
                add(&src.mount_points, from.read_only);
            }
        }
        let memory_mib = overrides
            .and_then(|o| o.memory)
            .or(c.memory)
            .or_else(|| td.memory.as_deref().and_then(|m| m.parse().ok()));
        let cpu = overrides.and_then(|o| o.cpu).unwrap_or(c.cpu);
        let cpu_units = if cpu > 0 {
            cpu
        } else {
            td.cpu
                .as_deref()
                .and_then(|c| c.parse().ok())
                .unwrap_or(1024)
        }
        .max(2);
        let output = match sink {
            Some(s) => Output::Sink(Arc::clone(s) as Arc<dyn skiff_runtime::OutputSink>),
            None => Output::Null,
        };
        InstanceSpec {
            args,
            env,
            mounts,
            limits: Limits {
                memory: memory_mib.map(|m| u64::from(m) << 20),
                cpu_units,
                fuel: None,
                timeout: None,
            },
            // The task's network sets it (see `run`).
            network: NetworkMode::None.policy(None),
            stdin: Stdin::UntilStopped,
            stdout: output.clone(),
            stderr: output,
        }
    }

    async fn supervise(
        &self,
        task_id: &str,
        specs: &[(ContainerDefinition, InstanceSpec)],
        artifacts: &[Arc<Artifact>],
        serve_at: &[Option<std::net::SocketAddr>],
        sinks: &[Option<Arc<LineSink>>],
        stop: &mut watch::Receiver<bool>,
    ) -> Supervised {
        // A container's last line may lack a newline: write it when the
        // container ends, not when the task does.
        let flush = |i: usize| {
            if let Some(Some(sink)) = sinks.get(i) {
                sink.flush();
            }
        };
        let n = specs.len();
        let (exits, mut exited) = mpsc::unbounded_channel::<(usize, Outcome)>();
        let (halt, _) = watch::channel(false);
        let mut started = vec![false; n];
        let mut outcome: Vec<Option<Outcome>> = vec![None; n];
        let mut health: Vec<Option<&'static str>> = specs
            .iter()
            .map(|(c, _)| c.health_check.as_ref().map(|_| "UNKNOWN"))
            .collect();
        let (health_tx, mut health_rx) = mpsc::unbounded_channel::<(usize, &'static str)>();
        let mut running_reported = false;
        let mut result: Option<Supervised> = None;
        let mut checkers = Vec::new();

        loop {
            // Start whatever can start now.
            if result.is_none() {
                for i in 0..n {
                    if started[i] {
                        continue;
                    }
                    let (c, spec) = &specs[i];
                    let mut ready = true;
                    for d in &c.depends_on {
                        let Some(j) = specs.iter().position(|(x, _)| x.name == d.container_name)
                        else {
                            continue;
                        };
                        let ok = match d.condition.as_str() {
                            "START" => started[j],
                            "COMPLETE" => outcome[j].is_some(),
                            "SUCCESS" => match &outcome[j] {
                                Some(o) if o.exit_code() != 0 => {
                                    result = Some(Supervised::FailedToStart(format!(
                                        "CannotStartContainerError: {} depends on {} succeeding, which exited with {}",
                                        c.name,
                                        d.container_name,
                                        o.exit_code()
                                    )));
                                    false
                                }
                                Some(_) => true,
                                None => false,
                            },
                            _ => health[j] == Some("HEALTHY"),
                        };
                        ready &= ok;
                    }
                    if result.is_some() {
                        break;
                    }
                    if !ready {
                        continue;
                    }
                    let grace = c
                        .stop_timeout
                        .map(|s| Duration::from_secs(u64::from(s)))
                        .unwrap_or(DEFAULT_STOP_TIMEOUT);
                    if let Some(at) = serve_at[i] {
                        match spawn_server(
                            &self.runtime,
                            &artifacts[i],
                            spec.clone(),
                            at,
                            i,
                            grace,
                            exits.clone(),
                            halt.subscribe(),
                        ) {
                            Ok(()) => {
                                started[i] = true;
                                self.report(
                                    task_id,
                                    TaskPatch {
                                        containers: vec![ContainerPatch {
                                            name: c.name.clone(),
                                            last_status: Some("RUNNING"),
                                            runtime_id: Some(format!("{task_id}-{i}")),
                                            health_status: health[i],
                                            ..ContainerPatch::default()
                                        }],
                                        ..TaskPatch::default()
                                    },
                                );
                                continue;
                            }
                            Err(e) => {
                                result = Some(Supervised::FailedToStart(format!(
                                    "CannotStartContainerError: {}: {e}",
                                    c.name
                                )));
                                break;
                            }
                        }
                    }
                    match self.runtime.spawn(&artifacts[i], spec.clone()) {
                        Ok(instance) => {
                            started[i] = true;
                            self.report(
                                task_id,
                                TaskPatch {
                                    containers: vec![ContainerPatch {
                                        name: c.name.clone(),
                                        last_status: Some("RUNNING"),
                                        runtime_id: Some(format!("{task_id}-{}", instance.id())),
                                        health_status: health[i],
                                        ..ContainerPatch::default()
                                    }],
                                    ..TaskPatch::default()
                                },
                            );
                            spawn_watch(instance, i, grace, exits.clone(), halt.subscribe());
                            if let Some(check) = &c.health_check {
                                checkers.push(tokio::spawn(health_loop(
                                    self.runtime.clone(),
                                    Arc::clone(&artifacts[i]),
                                    spec.clone(),
                                    check.clone(),
                                    i,
                                    health_tx.clone(),
                                    halt.subscribe(),
                                )));
                            }
                        }
                        Err(e) => {
                            result = Some(Supervised::FailedToStart(format!(
                                "CannotStartContainerError: {}: {e}",
                                c.name
                            )));
                            break;
                        }
                    }
                }
                if result.is_none() && !running_reported && started.iter().all(|s| *s) {
                    running_reported = true;
                    self.report(
                        task_id,
                        TaskPatch {
                            last_status: Some("RUNNING"),
                            started_at: Some(now()),
                            ..TaskPatch::default()
                        },
                    );
                }
            }
            if result.is_some() {
                break;
            }
            if (0..n).all(|i| !started[i] || outcome[i].is_some()) && started.iter().any(|s| !s) {
                // Everything that started has ended, and the rest wait on
                // conditions that can no longer be met.
                result = Some(Supervised::FailedToStart(
                    "CannotStartContainerError: container dependencies can never be met".into(),
                ));
                break;
            }
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        result = Some(Supervised::Stopped);
                        break;
                    }
                }
                Some((i, o)) = exited.recv() => {
                    flush(i);
                    let (c, _) = &specs[i];
                    self.report(task_id, TaskPatch {
                        containers: vec![exit_patch(&c.name, &o)],
                        ..TaskPatch::default()
                    });
                    let essential = c.essential;
                    outcome[i] = Some(o);
                    if essential {
                        result = Some(Supervised::EssentialExited(c.name.clone()));
                        break;
                    }
                }
                Some((i, status)) = health_rx.recv() => {
                    if health[i] != Some(status) {
                        health[i] = Some(status);
                        let task_health = task_health(specs, &health);
                        self.report(task_id, TaskPatch {
                            health_status: Some(task_health),
                            containers: vec![ContainerPatch {
                                name: specs[i].0.name.clone(),
                                health_status: Some(status),
                                ..ContainerPatch::default()
                            }],
                            ..TaskPatch::default()
                        });
                    }
                }
            }
        }

        // Stop everything still running.
        self.report(
            task_id,
            TaskPatch {
                last_status: Some("DEACTIVATING"),
                stopping_at: Some(now()),
                ..TaskPatch::default()
            },
        );
        for c in &checkers {
            c.abort();
        }
        self.report(
            task_id,
            TaskPatch {
                last_status: Some("STOPPING"),
                ..TaskPatch::default()
            },
        );
        let _ = halt.send(true);
        drop(exits);
        let still_running = (0..n)
            .filter(|i| started[*i] && outcome[*i].is_none())
            .count();
        let mut remaining = still_running;
        while remaining > 0 {
            let Some((i, o)) = exited.recv().await else {
                break;
            };
            if outcome[i].is_none() {
                remaining -= 1;
                flush(i);
                self.report(
                    task_id,
                    TaskPatch {
                        containers: vec![exit_patch(&specs[i].0.name, &o)],
                        ..TaskPatch::default()
                    },
                );
                outcome[i] = Some(o);
            }
        }
        // Containers that never started end STOPPED with no exit code.
        let never: Vec<ContainerPatch> = (0..n)
            .filter(|i| !started[*i])
            .map(|i| ContainerPatch {
                name: specs[i].0.name.clone(),
                last_status: Some("STOPPED"),
                ..ContainerPatch::default()
            })
            .collect();
        if !never.is_empty() {
            self.report(
                task_id,
                TaskPatch {
                    containers: never,
                    ..TaskPatch::default()
                },
            );
        }
        result.unwrap_or(Supervised::Stopped)
    }
}

/// How supervision ended.
enum Supervised {
    EssentialExited(String),
    FailedToStart(String),
    Stopped,
}

fn task_health(
    specs: &[(ContainerDefinition, InstanceSpec)],
    health: &[Option<&'static str>],
) -> &'static str {
    let essential: Vec<&'static str> = specs
        .iter()
        .zip(health)
        .filter(|((c, _), _)| c.essential)
        .filter_map(|(_, h)| *h)
        .collect();
    if essential.contains(&"UNHEALTHY") {
        "UNHEALTHY"
    } else if !essential.is_empty() && essential.iter().all(|h| *h == "HEALTHY") {
        "HEALTHY"
    } else {
        "UNKNOWN"
    }
}

fn exit_patch(name: &str, o: &Outcome) -> ContainerPatch {
    let reason = match o {
        Outcome::Exited(_) | Outcome::Stopped => None,
        Outcome::Trapped(t) => Some(format!("Trapped: {}", first_line(t))),
        Outcome::LimitExceeded {
            limit: l @ Limit::Memory(_),
            ..
        } => Some(format!("OutOfMemoryError: the container exceeded its {l}")),
        Outcome::LimitExceeded { limit, .. } => Some(format!("the container exceeded its {limit}")),
        Outcome::Failed(why) => Some(format!("CannotStartContainerError: {why}")),
    };
    ContainerPatch {
        name: name.to_string(),
        last_status: Some("STOPPED"),
        exit_code: Some(o.exit_code()),
        reason,
        ..ContainerPatch::default()
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// Resolves once `halt` turns true (or its sender is gone).
async fn halted(halt: &mut watch::Receiver<bool>) {
    let _ = halt.wait_for(|h| *h).await.map(|_| ());
}

/// Waits for one container; on halt, stops it with its grace period.
fn spawn_watch(
    mut instance: skiff_runtime::Instance,
    index: usize,
    grace: Duration,
    exits: mpsc::UnboundedSender<(usize, Outcome)>,
    mut halt: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let outcome = tokio::select! {
            o = instance.wait() => o,
            () = halted(&mut halt) => {
                instance.stop(grace);
                instance.wait().await
            }
        };
        let _ = exits.send((index, outcome));
    });
}

/// Serves a wasi:http container at `at` until halted (then drains for at
/// most `grace`); its end is reported like a container's exit.
#[allow(clippy::too_many_arguments)]
fn spawn_server(
    runtime: &Runtime,
    artifact: &Arc<Artifact>,
    spec: InstanceSpec,
    at: std::net::SocketAddr,
    index: usize,
    grace: Duration,
    exits: mpsc::UnboundedSender<(usize, Outcome)>,
    mut halt: watch::Receiver<bool>,
) -> Result<(), String> {
    let listener = std::net::TcpListener::bind(skiff_runtime::ports::host(at))
        .map_err(|e| format!("cannot listen on {at}: {e}"))?;
    listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
        .map_err(|e| format!("cannot listen on {at}: {e}"))
        .map(|listener| {
            let runtime = runtime.clone();
            let artifact = Arc::clone(artifact);
            let mut options = skiff_runtime::http::ServeOptions::new(spec);
            options.drain_timeout = grace;
            tokio::spawn(async move {
                let served =
                    skiff_runtime::http::serve(&runtime, &artifact, listener, options, async {
                        halted(&mut halt).await;
                    })
                    .await;
                let outcome = match served {
                    Ok(_) => Outcome::Exited(0),
                    Err(e) => Outcome::Failed(e.to_string()),
                };
                let _ = exits.send((index, outcome));
            });
        })
}

/// Can this container run from this image in this network? wasip1 modules
/// have no sockets, so nothing of theirs can be published; a wasi:http
/// component needs a network and a port to be served on.
fn servable(
    c: &ContainerDefinition,
    td: &TaskDefinition,
    kind: ArtifactKind,
    reference: &str,
) -> Result<(), String> {
    match kind {
        ArtifactKind::Module if !c.port_mappings.is_empty() => Err(format!(
            "CannotStartContainerError: {reference} is a wasip1 module, which has no sockets: container {} cannot serve its portMappings (build it for wasm32-wasip2)",
            c.name
        )),
        ArtifactKind::HttpProxy if td.network_mode.as_deref() == Some("none") => Err(format!(
            "CannotStartContainerError: {reference} is a wasi:http component, and networkMode none gives container {} no network to serve on",
            c.name
        )),
        ArtifactKind::HttpProxy if c.port_mappings.is_empty() => Err(format!(
            "CannotStartContainerError: {reference} is a wasi:http component: give container {} a portMappings entry for the port it serves on",
            c.name
        )),
        _ => Ok(()),
    }
}

/// Runs a container's health check: a fresh instance of its module with the
/// check's argv, every `interval`; `retries` failures in a row after
/// `startPeriod` make it UNHEALTHY, one pass HEALTHY.
async fn health_loop(
    runtime: Runtime,
    artifact: Arc<Artifact>,
    spec: InstanceSpec,
    check: crate::taskdef::HealthCheck,
    index: usize,
    report: mpsc::UnboundedSender<(usize, &'static str)>,
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
            let _ = report.send((index, "HEALTHY"));
        } else if started.elapsed() >= start_period {
            failures += 1;
            if failures >= check.retries {
                let _ = report.send((index, "UNHEALTHY"));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(u64::from(check.interval))) => {}
            () = halted(&mut halt) => return,
        }
    }
}
