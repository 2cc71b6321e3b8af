//! The core's life: opening the store and rebuilding the state, the
//! default cluster and the local container instance, resuming what the
//! last process left, the background loops (agents' reports, forgetting
//! what stopped long ago, load balancer metrics, the service scheduler),
//! and shutting down.

use super::reports::report_loop;
use super::{Core, LOCAL_INSTANCE_ID, metrics, placement, services};
use crate::core::agents::Agents;
use crate::core::config::ControlConfig;
use crate::core::logs::LogStore;
use crate::core::model::{Task, now};
use crate::core::state::{State, Write};
use crate::core::store::{SqliteStore, StateStore};
use crate::core::{discovery, security_groups as ec2};
use crate::error::ApiError;
use skiff_channel::fabric::Fabric;
use skiff_channel::link::ControlEnd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// CPU cores and available memory (MiB) of this machine: what a container
/// instance offers unless told otherwise (skiff serve's own, skiff agent's).
pub fn machine_size() -> (u32, u32) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let available_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .unwrap_or(1 << 20);
    (
        cores,
        (available_kib / 1024).min(u64::from(u32::MAX)) as u32,
    )
}

/// A task the last process had, recorded STOPPED with `TerminationNotice`
/// (its host went away; not the task's failure, so a service does not
/// count it toward its backoff or circuit breaker): one it ran (or was
/// stopping) ended with it; one whose start was not yet confirmed may
/// have started, says so, and is not started again. It is not
/// `TaskFailedToStart`: a client that retries those would run it twice. A
/// stop asked for before keeps its code and reason.
pub(crate) fn ended_with_the_process(mut t: Task, at: f64) -> Task {
    let confirmed = matches!(
        t.last_status.as_str(),
        "RUNNING" | "DEACTIVATING" | "STOPPING" | "DEPROVISIONING"
    );
    t.last_status = "STOPPED".into();
    t.desired_status = "STOPPED".into();
    if t.stop_code.is_none() {
        let (code, reason) = if confirmed {
            (
                "TerminationNotice",
                "skiff serve stopped while the task ran; its containers ended with it",
            )
        } else {
            (
                "TerminationNotice",
                "skiff serve stopped before the task's start was confirmed: it may have started; a task starts at most once, so it was not started again",
            )
        };
        t.stop_code = Some(code.into());
        t.stopped_reason = Some(reason.into());
    }
    t.stopping_at.get_or_insert(at);
    t.execution_stopped_at.get_or_insert(at);
    t.stopped_at = Some(at);
    for c in &mut t.containers {
        if c.last_status != "STOPPED" {
            c.last_status = "STOPPED".into();
        }
    }
    t.version += 1;
    t
}

impl Core {
    /// Opens the state store, rebuilds the state, registers the local
    /// container instance in its cluster (`config.cluster`), records every
    /// task the last process had as stopped (none starts twice), then
    /// starts the background loops.
    ///
    /// `local` is the channel to this process's agent, which the local
    /// instance is: task payloads sent before the agent starts wait in it.
    pub(crate) async fn start(
        config: ControlConfig,
        local: ControlEnd,
    ) -> Result<Arc<Core>, ApiError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            ApiError::server(format!("cannot create {}: {e}", config.data_dir.display()))
        })?;
        // One control plane per data dir: a second would fight over the
        // store's revisions and run every task twice.
        let lock_path = config.data_dir.join("serve.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| ApiError::server(format!("cannot open {}: {e}", lock_path.display())))?;
        if lock.try_lock().is_err() {
            return Err(ApiError::server(format!(
                "another skiff serve is using {}",
                config.data_dir.display()
            )));
        }
        crate::core::model::set_account(&config.account_id).map_err(ApiError::client)?;
        if !valid_region(&config.region) {
            return Err(ApiError::client(format!(
                "{:?} is not a region name (like us-east-1 or eu-west-1)",
                config.region
            )));
        }
        crate::core::clusters::check_cluster_name(&config.cluster).map_err(|e| {
            ApiError::client(format!("the local instance's cluster: {}", e.message))
        })?;
        let store: Arc<dyn StateStore> =
            Arc::new(SqliteStore::open(&config.data_dir.join("state.db"))?);
        let logs = LogStore::open(&config.data_dir.join("logs.db"))?;
        let mut state = State::load(store.as_ref()).await?;

        // The default cluster, the local instance's, and the instance.
        let region = config.region.clone();
        let mut writes = Vec::new();
        let mut clusters = vec!["default"];
        if config.cluster != "default" {
            clusters.push(&config.cluster);
        }
        for name in clusters {
            if state
                .clusters
                .get(name)
                .is_none_or(|c| c.value.status != "ACTIVE")
            {
                writes.push(Write::Cluster(crate::core::clusters::new_cluster(
                    name,
                    &region,
                    Vec::new(),
                )));
            }
        }
        let (cores, memory) = machine_size();
        let cpu = config.agent_cpu.unwrap_or(cores * 1024);
        let memory = config.agent_memory.unwrap_or(memory);
        let mut existing = state
            .instances
            .values()
            .find(|i| {
                i.value.ec2_instance_id.as_deref() == Some(LOCAL_INSTANCE_ID)
                    && i.value.status != "INACTIVE"
            })
            .map(|i| i.value.clone());
        if let Some(mut moved) = existing.take_if(|i| i.cluster != config.cluster) {
            // An instance is in one cluster: joining another, it leaves
            // the old one (what ran on it is recorded stopped by resume).
            moved.status = "INACTIVE".into();
            moved.agent_connected = false;
            moved.offers_fargate = false;
            moved.deregistered_at = Some(now());
            moved.version += 1;
            writes.push(Write::Instance(moved));
        }
        let size = crate::core::instances::LocalSize {
            cpu,
            memory,
            slots: config.agent_slots,
            max_container_memory: config.agent_max_container_memory,
            reserved_ports: config.reserved_ports.clone(),
            mesh: config.local_mesh.clone(),
        };
        let instance =
            crate::core::instances::local_instance(existing, &region, &config.cluster, &size);
        let instance_arn = instance.container_instance_arn.clone();
        writes.push(Write::Instance(instance));
        // No agent on another machine is connected yet: each is until it
        // connects again, and taken for lost if it has not within the
        // timeout (its tasks run on meanwhile).
        for i in state.instances.values().map(|e| &e.value) {
            // (This machine's instances, the one before a move included,
            // are written above.)
            let remote = i.ec2_instance_id.as_deref() != Some(LOCAL_INSTANCE_ID);
            if i.agent_connected && remote {
                let mut i = i.clone();
                i.agent_connected = false;
                i.version += 1;
                writes.push(Write::Instance(i));
            }
        }
        writes.extend(ec2::ensure_default(&state));
        state.apply(store.as_ref(), writes).await?;
        let fabric = Arc::new(Fabric::default());
        let elb = crate::plane::elb::Plane::new(Arc::clone(&fabric));

        let ControlEnd {
            to_agent,
            mut from_agent,
        } = local;
        // Every agent's reports, tagged with who sent them, into one loop.
        let (reports, reports_rx) = tokio::sync::mpsc::unbounded_channel();
        {
            let reports = reports.clone();
            let from: Arc<str> = Arc::from(instance_arn.as_str());
            tokio::spawn(async move {
                while let Some(change) = from_agent.recv().await {
                    let report = crate::core::agents::Report {
                        from: Arc::clone(&from),
                        change,
                        ack: None,
                    };
                    if reports.send(report).is_err() {
                        return;
                    }
                }
            });
        }
        let agent_keys = crate::core::agent_keys::AgentKeys::new(&config.data_dir);
        let mesh_token = mesh_token(&config.data_dir)?;
        elb.set_mesh_token(&mesh_token);
        planes_follow(&state, &fabric, &elb, config.lb_address);
        let agents = Arc::new(Agents::new(
            instance_arn,
            to_agent,
            reports,
            Arc::clone(&store),
        ));
        let core = Arc::new(Core {
            config,
            store,
            state: tokio::sync::Mutex::new(state),
            logs,
            agents,
            agent_keys,
            mesh_token,
            rng: Mutex::new(placement::Rng::from_entropy()),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            wake: Arc::new(services::Wake::default()),
            fabric,
            elb,
            metrics: metrics::Metrics::default(),
            usage_samples: Default::default(),
            _lock: lock,
        });
        core.resume().await?;
        tokio::spawn(report_loop(Arc::clone(&core), reports_rx));
        tokio::spawn(reload_loop(Arc::downgrade(&core)));
        tokio::spawn(crate::core::remote::lost_agents_loop(Arc::downgrade(&core)));
        tokio::spawn(retention_loop(Arc::downgrade(&core)));
        tokio::spawn(metrics_loop(Arc::downgrade(&core)));
        tokio::spawn(services::scheduler_loop(Arc::downgrade(&core)));
        Ok(core)
    }

    /// After a restart, what ran in the last process is over: every task
    /// of this machine's instance that was not yet STOPPED is recorded so
    /// (see [`ended_with_the_process`]). None is started again: a task the
    /// store shows PROVISIONING or PENDING may already have run (the agent
    /// starts a guest before its reports are committed), and a task starts
    /// at most once, as on ECS. A service starts replacements.
    async fn resume(&self) -> Result<(), ApiError> {
        let mut state = self.state.lock().await;
        // This machine's instance, and those it was before it joined
        // another cluster.
        let local: std::collections::HashSet<&str> = state
            .instances
            .values()
            .filter(|i| i.value.ec2_instance_id.as_deref() == Some(LOCAL_INSTANCE_ID))
            .map(|i| i.value.container_instance_arn.as_str())
            .collect();
        let at = now();
        let writes: Vec<Write> = state
            .tasks
            .values()
            .map(|t| &t.value)
            .filter(|t| {
                t.runs_on().is_some_and(|i| local.contains(i)) && t.last_status != "STOPPED"
            })
            .map(|t| Write::Task(ended_with_the_process(t.clone(), at)))
            .collect();
        state.apply(self.store.as_ref(), writes).await?;
        Ok(())
    }

    /// Stops every task on the local agent (their containers end with this
    /// process) and waits, up to `within`, until each is recorded STOPPED.
    pub(crate) async fn shutdown(&self, within: Duration) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let local = self.agents.local.as_str();
        let arns: Vec<String> = {
            let mut state = self.state.lock().await;
            let mut writes = Vec::new();
            for t in state.tasks.values() {
                let t = &t.value;
                if t.runs_on() == Some(local) && t.last_status != "STOPPED" {
                    let mut t = t.clone();
                    if t.desired_status != "STOPPED" {
                        t.desired_status = "STOPPED".into();
                        t.stop_code = Some("TerminationNotice".into());
                        t.stopped_reason = Some("skiff serve shut down".into());
                        t.stopping_at = Some(now());
                        t.version += 1;
                        writes.push(Write::Task(t));
                    }
                }
            }
            let arns = writes
                .iter()
                .filter_map(|w| match w {
                    Write::Task(t) => Some(t.task_arn.clone()),
                    _ => None,
                })
                .collect();
            if let Err(e) = state.apply(self.store.as_ref(), writes).await {
                tracing::warn!("cannot record the shutdown's task stops: {e}");
            }
            arns
        };
        for arn in &arns {
            self.agents.stop(Some(local), arn);
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let pending = {
                let state = self.state.lock().await;
                state
                    .tasks
                    .values()
                    .any(|t| t.value.runs_on() == Some(local) && self.agents.have(&t.value))
            };
            if !pending || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The secret of this control plane's agents' mesh: made once, kept in
/// `mesh.key` (0600), so agents that reconnect after a restart still
/// trust each other.
fn mesh_token(dir: &std::path::Path) -> Result<String, ApiError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("mesh.key");
    if let Ok(t) = std::fs::read_to_string(&path)
        && t.trim().len() >= 32
    {
        return Ok(t.trim().to_string());
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::server(format!("no randomness for the mesh key: {e}")))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(token.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| ApiError::server(format!("cannot write {}: {e}", path.display())))?;
    Ok(token)
}

/// What has been gone since before `cutoff` and can be forgotten: STOPPED
/// tasks, and deregistered container instances; and task definitions whose
/// deletion was asked for, once no task or service uses them.
fn forgettable(state: &State, cutoff: f64) -> Vec<Write> {
    let mut writes: Vec<Write> = state
        .tasks
        .values()
        .filter(|t| t.value.last_status == "STOPPED")
        .filter(|t| t.value.stopped_at.is_some_and(|s| s < cutoff))
        .map(|t| Write::RemoveTask(t.value.id().to_string()))
        .collect();
    writes.extend(
        state
            .instances
            .values()
            .filter(|i| i.value.status == "INACTIVE")
            .filter(|i| i.value.deregistered_at.is_some_and(|d| d < cutoff))
            .map(|i| Write::RemoveInstance(i.value.container_instance_arn.clone())),
    );
    let in_use = |arn: &str| {
        state
            .tasks
            .values()
            .any(|t| t.value.task_definition_arn == arn && t.value.last_status != "STOPPED")
            || state.services.values().any(|s| {
                s.value.status != "INACTIVE"
                    && s.value.deployments.iter().any(|d| d.task_definition == arn)
            })
    };
    writes.extend(
        state
            .taskdefs
            .values()
            .flat_map(|revs| revs.values())
            .filter(|td| td.value.status == "DELETE_IN_PROGRESS")
            .filter(|td| !in_use(&td.value.task_definition_arn))
            .map(|td| {
                let mut gone = td.value.clone();
                gone.status = crate::core::tasks::DELETED.into();
                Write::TaskDef(gone)
            }),
    );
    writes
}

/// How often the load balancers' metrics are read.
const METRICS_EVERY: Duration = Duration::from_secs(10);

/// Reads the load balancers' metrics every [`METRICS_EVERY`].
async fn metrics_loop(inner: std::sync::Weak<Core>) {
    let mut tick = tokio::time::interval(METRICS_EVERY);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        crate::core::lb_metrics::measure(&inner.elb, &inner.metrics, true);
    }
}

/// How many objects one transaction forgets: the API's requests go
/// between batches.
const FORGET_PER_COMMIT: usize = 500;

/// The data planes take what the state says: security groups' rules where
/// task sockets consult them, service discovery's names, the load
/// balancers, the routes to other instances' tasks.
fn planes_follow(
    state: &State,
    fabric: &Fabric,
    elb: &crate::plane::elb::Plane,
    lb_address: std::net::Ipv4Addr,
) {
    for g in state.security_groups.values() {
        fabric.set_group(&g.value.group_id, &g.value.ingress, &g.value.egress);
    }
    discovery::refresh(state, fabric);
    elb.sync(&state.elb);
    fabric.set_routes(crate::core::instances::routes(state, lb_address));
}

/// When the store fails a change (memory is ahead of it, and it refuses
/// every later change), the state is read again from the store, and the
/// data planes follow it. Requests meanwhile are answered with the
/// store's error; agents are sent nothing made after the failure.
async fn reload_loop(core: std::sync::Weak<Core>) {
    loop {
        let failed = match core.upgrade() {
            Some(core) => core.store.failed(),
            None => return,
        };
        if failed.await.is_err() {
            return;
        }
        let Some(core) = core.upgrade() else { return };
        tracing::error!("the state store failed a change: reading the state from the store again");
        let mut state = core.state.lock().await;
        while let Err(e) = state.reload(core.store.as_ref()).await {
            tracing::error!("cannot read the state store, trying again: {e}");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        planes_follow(&state, &core.fabric, &core.elb, core.config.lb_address);
        tracing::info!("the state was read again from the store");
    }
}

/// Forgets STOPPED tasks once they have been stopped for the retention
/// period, and deregistered container instances as long after they left;
/// gives their memory and their store's space back.
async fn retention_loop(inner: std::sync::Weak<Core>) {
    loop {
        let every = match inner.upgrade() {
            Some(inner) => (inner.config.stopped_task_retention / 4)
                .clamp(Duration::from_millis(100), Duration::from_secs(60)),
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        // Log groups' retention too (reads expire their group first).
        let logs = inner.logs.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || logs.expire()).await {
            tracing::warn!("cannot expire old log events: {e}");
        }
        let cutoff = now() - inner.config.stopped_task_retention.as_secs_f64();
        let mut writes = forgettable(&*inner.state.lock().await, cutoff);
        if writes.is_empty() {
            continue;
        }
        while !writes.is_empty() {
            let rest = writes.split_off(writes.len().min(FORGET_PER_COMMIT));
            let mut state = inner.state.lock().await;
            // What another request changed meanwhile is forgotten next time.
            let batch = revalidate(&state, writes, cutoff);
            if let Err(e) = state.apply(inner.store.as_ref(), batch).await {
                tracing::warn!("cannot forget old stopped tasks: {e}");
            }
            drop(state);
            writes = rest;
        }
        if let Err(e) = inner.store.reclaim().await {
            tracing::warn!("cannot give the state store's free space back: {e}");
        }
        give_back_memory();
    }
}

/// Of `writes`, what is still forgettable in `state`, as it is now (a
/// batch is read under one hold of the lock and applied under another).
fn revalidate(state: &State, writes: Vec<Write>, cutoff: f64) -> Vec<Write> {
    let still = forgettable(state, cutoff);
    let key = |w: &Write| match w {
        Write::RemoveTask(id) => Some(format!("t/{id}")),
        Write::RemoveInstance(arn) => Some(format!("i/{arn}")),
        Write::TaskDef(td) => Some(format!("d/{}", td.task_definition_arn)),
        _ => None,
    };
    let wanted: std::collections::HashSet<String> = writes.iter().filter_map(key).collect();
    still
        .into_iter()
        .filter(|w| key(w).is_some_and(|k| wanted.contains(&k)))
        .collect()
}

/// Returns freed heap to the system: the allocator keeps it otherwise,
/// and a control plane that ran many tasks once would stay at its peak.
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Is `r` shaped like an AWS region name (`us-east-1`, `us-gov-west-1`)?
fn valid_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts.iter().all(|p| !p.is_empty())
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model;
    use crate::core::state::Entry;
    use crate::core::taskdef;
    use serde_json::json;

    #[test]
    fn a_task_the_last_process_had_is_stopped_never_started_again() {
        let task = |status: &str, stop_code: Option<&str>| -> Task {
            serde_json::from_value(json!({
                "taskArn": "arn:aws:ecs:r:0:task/default/t", "clusterArn": "c",
                "taskDefinitionArn": "td:1", "overrides": {}, "lastStatus": status,
                "desiredStatus": "RUNNING", "cpu": "0", "memory": "8", "launchType": "EC2",
                "version": 1, "createdAt": 1.0, "stopCode": stop_code,
                "containers": [{"containerArn": "c/a", "taskArn": "t", "name": "a", "image": "x",
                    "lastStatus": status, "cpu": "0"}],
            }))
            .unwrap()
        };
        for status in ["PROVISIONING", "PENDING", "ACTIVATING"] {
            let t = ended_with_the_process(task(status, None), 5.0);
            assert_eq!(
                (t.last_status.as_str(), t.stop_code.as_deref()),
                ("STOPPED", Some("TerminationNotice")),
                "{status}"
            );
            let reason = t.stopped_reason.unwrap();
            assert!(reason.contains("may have started"), "{reason}");
            assert!(reason.contains("at most once"), "{reason}");
            assert_eq!(t.containers[0].last_status, "STOPPED");
            assert_eq!(t.stopped_at, Some(5.0));
        }
        for status in ["RUNNING", "DEACTIVATING", "STOPPING"] {
            let t = ended_with_the_process(task(status, None), 5.0);
            assert_eq!(
                t.stop_code.as_deref(),
                Some("TerminationNotice"),
                "{status}"
            );
        }
        // A stop the user asked for keeps its code.
        let t = ended_with_the_process(task("STOPPING", Some("UserInitiated")), 5.0);
        assert_eq!(t.stop_code.as_deref(), Some("UserInitiated"));
    }

    #[test]
    fn what_left_before_the_cutoff_is_forgotten_and_nothing_else() {
        let task = |id: &str, status: &str, stopped: Option<f64>| -> Task {
            serde_json::from_value(json!({
                "taskArn": format!("arn:aws:ecs:r:0:task/default/{id}"), "clusterArn": "c",
                "taskDefinitionArn": "td:1", "overrides": {}, "lastStatus": status,
                "desiredStatus": status, "cpu": "0", "memory": "8", "containers": [],
                "launchType": "EC2", "version": 1, "createdAt": 1.0, "stoppedAt": stopped,
            }))
            .unwrap()
        };
        let instance = |arn: &str, status: &str, gone: Option<f64>| -> model::ContainerInstance {
            serde_json::from_value(json!({
                "containerInstanceArn": arn, "version": 1, "versionInfo": {}, "status": status,
                "agentConnected": false, "registeredResources": [], "remainingResources": [],
                "runningTasksCount": 0, "pendingTasksCount": 0, "attributes": [],
                "registeredAt": 1.0, "deregisteredAt": gone,
            }))
            .unwrap()
        };
        let mut state = State::default();
        for t in [
            task("old", "STOPPED", Some(10.0)),
            task("recent", "STOPPED", Some(100.0)),
            task("running", "RUNNING", None),
        ] {
            state.tasks.insert(
                t.id().to_string(),
                Entry {
                    value: t,
                    revision: 1,
                },
            );
        }
        for i in [
            instance("ci/gone", "INACTIVE", Some(10.0)),
            instance("ci/just-gone", "INACTIVE", Some(100.0)),
            instance("ci/active", "ACTIVE", None),
        ] {
            state.instances.insert(
                i.container_instance_arn.clone(),
                Entry {
                    value: i,
                    revision: 1,
                },
            );
        }
        let forgotten: Vec<String> = forgettable(&state, 50.0)
            .into_iter()
            .map(|w| match w {
                Write::RemoveTask(id) => format!("task {id}"),
                Write::RemoveInstance(arn) => format!("instance {arn}"),
                _ => "something else".into(),
            })
            .collect();
        assert_eq!(forgotten, ["task old", "instance ci/gone"]);

        // A definition whose deletion was asked for goes once nothing
        // running uses it.
        let def = |rev: u32| {
            let mut td = taskdef::parse_register(&json!({"family": "web", "networkMode": "none",
                "containerDefinitions": [{"name": "a", "image": "x", "memory": 8}]}))
            .unwrap();
            td.revision = rev;
            td.task_definition_arn = format!("arn:aws:ecs:r:0:task-definition/web:{rev}");
            td.status = "DELETE_IN_PROGRESS".into();
            td
        };
        for rev in [1, 2] {
            state.taskdefs.entry("web".into()).or_default().insert(
                rev,
                Entry {
                    value: def(rev),
                    revision: 1,
                },
            );
        }
        let mut user = task("user", "RUNNING", None);
        user.task_definition_arn = "arn:aws:ecs:r:0:task-definition/web:2".into();
        state.tasks.insert(
            "user".into(),
            Entry {
                value: user,
                revision: 1,
            },
        );
        let gone: Vec<(u32, String)> = forgettable(&state, 50.0)
            .into_iter()
            .filter_map(|w| match w {
                Write::TaskDef(td) => Some((td.revision, td.status)),
                _ => None,
            })
            .collect();
        assert_eq!(gone, [(1, crate::core::tasks::DELETED.to_string())]);
    }
}
