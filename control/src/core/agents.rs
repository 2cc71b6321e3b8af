//! The agents (container instances) connected to this control plane, each
//! through its channel (`skiff_channel::link`). The control plane sends
//! them task payloads here and nowhere else; what they report comes back
//! through `report_loop` in `lib.rs`.

use crate::core::model::Task;
use crate::core::taskdef::TaskDefinition;
use skiff_channel::messages::{StartTask, ToAgent};
use std::collections::HashMap;
use std::sync::RwLock;
use tokio::sync::mpsc;

/// The connected agents, by container instance ARN.
#[derive(Debug)]
pub(crate) struct Agents {
    /// The in-process agent's container instance (`skiff serve`'s own).
    pub local: String,
    links: RwLock<HashMap<String, mpsc::UnboundedSender<ToAgent>>>,
}

impl Agents {
    /// The in-process agent, connected through `link`.
    pub(crate) fn new(local: String, link: mpsc::UnboundedSender<ToAgent>) -> Agents {
        Agents {
            links: RwLock::new(HashMap::from([(local.clone(), link)])),
            local,
        }
    }

    /// Whether the agent of this container instance is connected.
    fn connected(&self, instance_arn: &str) -> bool {
        self.links
            .read()
            .map(|l| l.get(instance_arn).is_some_and(|tx| !tx.is_closed()))
            .unwrap_or(false)
    }

    /// Whether a connected agent has task `t` (runs it, or has been sent
    /// it to run): one must be told to stop it, and reports its end. A
    /// task no agent has stops at once.
    pub(crate) fn have(&self, t: &Task) -> bool {
        t.last_status != "STOPPED" && t.runs_on().is_some_and(|i| self.connected(i))
    }

    fn send(&self, instance_arn: &str, message: ToAgent) {
        let sent = self
            .links
            .read()
            .ok()
            .and_then(|l| l.get(instance_arn).map(|tx| tx.send(message).is_ok()));
        if sent != Some(true) {
            tracing::warn!(
                instance = instance_arn,
                "no agent connected to send a task to"
            );
        }
    }

    /// Sends task `t` (written to the store) to the agent it is placed on.
    pub(crate) fn start(&self, t: &Task, td: &TaskDefinition) {
        if let Some(instance) = t.runs_on() {
            self.send(
                instance,
                ToAgent::StartTask(Box::new(StartTask {
                    task: t.clone(),
                    task_definition: td.clone(),
                })),
            );
        }
    }

    /// Asks the agent running task `task_arn` on `instance` to stop it.
    pub(crate) fn stop(&self, instance: Option<&str>, task_arn: &str) {
        if let Some(instance) = instance {
            self.send(
                instance,
                ToAgent::StopTask {
                    task_arn: task_arn.to_string(),
                },
            );
        }
    }
}
