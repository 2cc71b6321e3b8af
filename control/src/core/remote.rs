//! Agents on other machines (`skiff agent`): what connecting, going quiet
//! and coming back do to their container instances and tasks. The wire
//! (the WebSocket, its frames and heartbeats) is `crate::api::channel`'s;
//! here are the rules.
//!
//! - **Connecting** (`attach`): the instance must be registered, not
//!   INACTIVE, in the cluster named. An agent with a new session (its
//!   process restarted) had its tasks end with the old process: they are
//!   recorded STOPPED (`TerminationNotice`) and none is sent again. The
//!   welcome carries every task the instance should run; the instance is
//!   `agentConnected`.
//! - **Disconnecting** (`detach`): the instance is no longer
//!   `agentConnected` (nothing new is placed there), but its tasks are
//!   left alone for the timeout: an agent keeps running them while it
//!   cannot reach the control plane, and reconnects.
//! - **Lost** (`lost_agents_loop`): an instance whose agent has been
//!   silent for longer than `ControlConfig::agent_timeout` (counted from
//!   this control plane's start for one not yet heard from) has its tasks
//!   recorded STOPPED, and the services replace them elsewhere. If the agent
//!   comes back, the welcome does not list them, so it stops them: nothing
//!   is resurrected.

use super::Core;
use crate::core::agents::Session;
use crate::core::model::{ContainerInstance, Task, now};
use crate::core::state::Write;
use crate::error::ApiError;
use skiff_channel::messages::{StartTask, ToAgent};
use skiff_channel::wire::{Opening, Welcome};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// A remote agent's connection, accepted.
pub(crate) struct Attached {
    pub instance: Arc<str>,
    pub conn: u64,
    pub welcome: Welcome,
    /// Task payloads to send on it.
    pub payloads: mpsc::UnboundedReceiver<ToAgent>,
    /// The highest report recorded, as it grows.
    pub acked: watch::Receiver<u64>,
    pub acked_tx: watch::Sender<u64>,
}

/// Task `t`, recorded STOPPED because its host went away: `reason` says how.
fn ended_with_its_host(mut t: Task, reason: &str, at: f64) -> Task {
    t.last_status = "STOPPED".into();
    t.desired_status = "STOPPED".into();
    if t.stop_code.is_none() {
        t.stop_code = Some("TerminationNotice".into());
        t.stopped_reason = Some(reason.to_string());
    }
    t.stopping_at.get_or_insert(at);
    t.execution_stopped_at.get_or_insert(at);
    t.stopped_at = Some(at);
    for c in &mut t.containers {
        c.last_status = "STOPPED".into();
    }
    t.version += 1;
    t
}

/// The EC2 id an instance goes by in messages.
fn ec2_id(i: &ContainerInstance) -> &str {
    i.ec2_instance_id
        .as_deref()
        .unwrap_or(&i.container_instance_arn)
}

impl Core {
    /// Accepts a remote agent's connection for the instance `opening`
    /// names (see the module's documentation).
    /// Signed with an agent key (`key`), the instance must be one that key
    /// registered.
    pub(crate) async fn attach(
        &self,
        opening: &Opening,
        key: Option<&crate::core::agent_keys::AgentKey>,
    ) -> Result<Attached, ApiError> {
        let mut state = self.state.lock().await;
        let arn = opening.container_instance_arn.as_str();
        let cluster = crate::core::model::name_of(&opening.cluster_arn);
        let Some(mut instance) = state
            .instances
            .get(arn)
            .map(|e| e.value.clone())
            .filter(|i| i.status != "INACTIVE")
        else {
            return Err(ApiError::invalid_parameter(format!(
                "Container instance {arn} is not registered (or was deregistered): register it again."
            )));
        };
        if instance.cluster != cluster {
            return Err(ApiError::invalid_parameter(format!(
                "Container instance {arn} is registered in cluster {}, not {cluster}.",
                instance.cluster
            )));
        }
        if let Some(key) = key
            && instance.registered_by.as_deref() != Some(key.access_key_id.as_str())
        {
            return Err(ApiError {
                kind: "AccessDeniedException",
                message: format!(
                    "Agent key {} did not register container instance {arn}: it cannot open its channel.",
                    key.access_key_id
                ),
                status: 400,
            });
        }
        if arn == self.agents.local {
            return Err(ApiError::invalid_parameter(
                "This is skiff serve's own container instance: its agent is in-process.",
            ));
        }
        let mut writes = Vec::new();
        let at = now();
        let restarted = instance.agent_session.as_deref() != Some(&opening.agent_session);
        if restarted {
            let reason = format!(
                "The agent on {} restarted: the task ended with its old process (a task starts at most once, so it is not started again)",
                ec2_id(&instance)
            );
            writes.extend(
                state
                    .tasks_on(arn)
                    .filter(|t| t.last_status != "STOPPED")
                    .map(|t| Write::Task(ended_with_its_host(t.clone(), &reason, at))),
            );
        }
        let tasks: Vec<StartTask> = if restarted {
            Vec::new()
        } else {
            state
                .tasks_on(arn)
                .filter(|t| t.last_status != "STOPPED" && t.desired_status == "RUNNING")
                .filter_map(|t| {
                    Some(StartTask {
                        task: t.clone(),
                        task_definition: crate::core::tasks::taskdef_of(
                            &state,
                            &t.task_definition_arn,
                        )?,
                    })
                })
                .collect()
        };
        instance.agent_connected = true;
        instance.agent_session = Some(opening.agent_session.clone());
        if let Some(mesh) = opening.mesh_address {
            instance.mesh_address = Some(mesh.to_string());
        }
        instance.version += 1;
        writes.push(Write::Instance(instance.clone()));
        state.apply(self.store.as_ref(), writes).await?;
        self.fabric.set_routes(crate::core::instances::routes(
            &state,
            self.config.lb_address,
        ));
        // Linked while the state is held: a task placed after the welcome's
        // list was made is sent on this link.
        let (conn, payloads) = self.agents.link(arn);
        let (acked_tx, acked) = {
            let mut sessions = self
                .agents
                .sessions
                .lock()
                .map_err(|_| ApiError::server("the agents' sessions are poisoned"))?;
            let session = sessions.entry(arn.to_string()).or_insert_with(|| Session {
                id: String::new(),
                acked: watch::channel(0).0,
                last_heard: Instant::now(),
            });
            if session.id != opening.agent_session {
                session.id = opening.agent_session.clone();
                session.acked = watch::channel(0).0;
            }
            session.last_heard = Instant::now();
            (session.acked.clone(), session.acked.subscribe())
        };
        drop(state);
        self.wake.all();
        let acked_now = *acked.borrow();
        Ok(Attached {
            instance: Arc::from(arn),
            conn,
            welcome: Welcome {
                container_instance_arn: arn.to_string(),
                cluster_arn: crate::core::model::arn(
                    "ecs",
                    arn.split(':').nth(3).unwrap_or(&self.config.region),
                    &format!("cluster/{cluster}"),
                ),
                acked: acked_now,
                tasks,
                timeout_ms: self.config.agent_timeout.as_millis() as u64,
                registry: None,
                mesh_token: self.mesh_token.clone(),
            },
            payloads,
            acked,
            acked_tx,
        })
    }

    /// Connection `conn` of a remote agent closed: its instance is no
    /// longer connected, unless a newer connection replaced it.
    pub(crate) async fn detach(&self, instance_arn: &str, conn: u64) {
        if !self.agents.unlink(instance_arn, conn) {
            return;
        }
        self.set_connected(instance_arn, false).await;
    }

    async fn set_connected(&self, instance_arn: &str, connected: bool) {
        let mut state = self.state.lock().await;
        let Some(mut i) = state.instances.get(instance_arn).map(|e| e.value.clone()) else {
            return;
        };
        // A newer connection may have been accepted meanwhile (its attach
        // took the state first): it is connected, whatever the old one says.
        if i.agent_connected == connected || (!connected && self.agents.connected(instance_arn)) {
            return;
        }
        i.agent_connected = connected;
        i.version += 1;
        if let Err(e) = state
            .apply(self.store.as_ref(), vec![Write::Instance(i)])
            .await
        {
            tracing::warn!("cannot record that {instance_arn}'s agent disconnected: {e}");
        }
        drop(state);
        self.wake.all();
    }

    /// Takes every remote instance silent for longer than the timeout for
    /// lost: it is disconnected and its tasks are recorded STOPPED.
    async fn reap_lost(&self) {
        let timeout = self.config.agent_timeout;
        let mut state = self.state.lock().await;
        let silent = |arn: &str| {
            let last = self
                .agents
                .sessions
                .lock()
                .ok()
                .and_then(|s| s.get(arn).map(|s| s.last_heard))
                .unwrap_or(self.agents.started);
            last.elapsed() > timeout
        };
        let usage = state.usage();
        let lost: Vec<ContainerInstance> = state
            .instances
            .values()
            .map(|e| &e.value)
            .filter(|i| {
                i.container_instance_arn != self.agents.local
                    && i.status != "INACTIVE"
                    && (i.agent_connected || usage.contains_key(&i.container_instance_arn))
                    && silent(&i.container_instance_arn)
            })
            .cloned()
            .collect();
        if lost.is_empty() {
            return;
        }
        let at = now();
        let mut writes = Vec::new();
        for mut i in lost {
            let reason = format!(
                "Host EC2 (instance {}) stopped responding: its agent was silent for more than {}s; the task is presumed lost with its host",
                ec2_id(&i),
                timeout.as_secs_f64()
            );
            tracing::warn!(instance = %i.container_instance_arn, "agent silent for more than {timeout:?}: its tasks are taken for lost");
            writes.extend(
                state
                    .tasks_on(&i.container_instance_arn)
                    .filter(|t| t.last_status != "STOPPED")
                    .map(|t| Write::Task(ended_with_its_host(t.clone(), &reason, at))),
            );
            // A connection still open (a cut network) is closed: the agent
            // reconnects when it can, and reconciles.
            self.agents.unlink_any(&i.container_instance_arn);
            if i.agent_connected {
                i.agent_connected = false;
                i.version += 1;
                writes.push(Write::Instance(i));
            }
        }
        if let Err(e) = state.apply(self.store.as_ref(), writes).await {
            tracing::warn!("cannot record lost instances' tasks: {e}");
            return;
        }
        drop(state);
        self.wake.all();
    }
}

/// Looks for lost instances four times per timeout, until the core goes.
pub(crate) async fn lost_agents_loop(core: Weak<Core>) {
    let every = match core.upgrade() {
        Some(c) => (c.config.agent_timeout / 4).max(Duration::from_millis(50)),
        None => return,
    };
    let mut last = std::time::Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let Some(core) = core.upgrade() else {
            return;
        };
        // The control plane itself stood still (paused, starved, a clock
        // jump): its agents were not silent, it was deaf. Each gets a fresh
        // timeout rather than its tasks taken for lost.
        if last.elapsed() > every * 2 + Duration::from_secs(1) {
            tracing::warn!(
                "the control plane stood still for {:?}: agents get a fresh timeout",
                last.elapsed()
            );
            core.agents.heard_all();
        } else {
            core.reap_lost().await;
        }
        last = std::time::Instant::now();
    }
}
