//! What the agents report: their state changes, applied to the tasks in
//! the order they were sent.

use super::Core;
use crate::core::agents::Report;
use crate::core::discovery;
use crate::core::model::{self, Task};
use crate::core::model::{now, state_rank};
use crate::core::state::Write;
use serde_json::json;
use skiff_channel::messages::FromAgent;
use skiff_channel::messages::{ContainerChange, ContainerStatus, TaskStateChange, TaskStatus};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Applies the agents' state changes, in order, batching whatever arrived
/// together into one store transaction, then acknowledges remote agents'.
/// A batch the store refused is kept and tried again: a report is never
/// dropped, or a task could stay short of STOPPED forever. A report about
/// a task that is not on the reporting agent's instance is refused (one
/// agent cannot report for another's tasks).
pub(crate) async fn report_loop(inner: Arc<Core>, mut rx: mpsc::UnboundedReceiver<Report>) {
    let mut batch: Vec<Report> = Vec::new();
    while !batch.is_empty() || rx.recv_many(&mut batch, 1024).await > 0 {
        // Whatever else has arrived joins this batch.
        while let Ok(r) = rx.try_recv() {
            batch.push(r);
        }
        let mut state = inner.state.lock().await;
        let mut changed: HashMap<String, Task> = HashMap::new();
        for report in &batch {
            let id = model::name_of(report.change.task_arn()).to_string();
            let Some(current) = changed
                .get(&id)
                .cloned()
                .or_else(|| state.tasks.get(&id).map(|t| t.value.clone()))
            else {
                continue;
            };
            if current.runs_on() != Some(&*report.from) {
                tracing::warn!(
                    agent = %report.from,
                    task = %report.change.task_arn(),
                    "a report about a task of another instance: refused"
                );
                continue;
            }
            changed.insert(id, apply_change(current, report.change.clone()));
        }
        let woken: BTreeSet<String> = changed
            .values()
            .filter_map(crate::core::state::service_of)
            .collect();
        let writes = changed.into_values().map(Write::Task).collect();
        // Applied to memory and queued; the state is let go while the store
        // writes it, so that requests (and their commits) go on meanwhile.
        let durable = state.stage(inner.store.as_ref(), writes);
        if durable.is_ok() && !state.discovery.services.is_empty() {
            // Discovered names follow their tasks.
            discovery::refresh(&state, &inner.fabric);
        }
        drop(state);
        let durable = match durable {
            Ok(d) => d.wait().await,
            Err(e) => Err(e),
        };
        match durable {
            Ok(()) => {
                for report in batch.drain(..) {
                    if let Some((acked, seq)) = report.ack {
                        acked.send_if_modified(|a| {
                            let newer = seq > *a;
                            *a = (*a).max(seq);
                            newer
                        });
                    }
                }
                // Services see their tasks' new states.
                for key in woken {
                    inner.wake.service(key);
                }
            }
            Err(e) => {
                // The state is read again from the store (`reload_loop`);
                // the batch is applied to that.
                tracing::error!("cannot record task state changes, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Applies an agent's state change to its task. States only move
/// forward; a stop the control plane asked for keeps its code and reason;
/// timestamps are set once.
pub(crate) fn apply_change(t: Task, change: FromAgent) -> Task {
    match change {
        FromAgent::TaskStateChange(c) => apply_task_change(t, c),
        FromAgent::ContainerStateChange(c) => {
            let mut t = apply_container_change(t, c.change);
            t.version += 1;
            t
        }
        FromAgent::AttachmentStateChanges(c) => {
            let mut t = t;
            for a in c.attachments {
                attach_eni(&mut t, a.status.as_str(), a.private_ipv4_address);
            }
            t.version += 1;
            t
        }
    }
}

pub(crate) fn apply_task_change(mut t: Task, p: TaskStateChange) -> Task {
    if let Some(s) = p.status.map(TaskStatus::as_str)
        // States only move forward.
        && state_rank(s) > state_rank(&t.last_status)
    {
        t.last_status = s.into();
        if s == "STOPPED" {
            t.desired_status = "STOPPED".into();
            t.stop_recorded_at = Some(now());
        }
        if matches!(s, "DEACTIVATING" | "STOPPING") {
            t.desired_status = "STOPPED".into();
        }
    }
    let once = |slot: &mut Option<f64>, v: Option<f64>| {
        if slot.is_none() {
            *slot = v;
        }
    };
    once(&mut t.pull_started_at, p.pull_started_at);
    once(&mut t.pull_stopped_at, p.pull_stopped_at);
    once(&mut t.started_at, p.started_at);
    once(&mut t.stopping_at, p.stopping_at);
    once(&mut t.execution_stopped_at, p.execution_stopped_at);
    once(&mut t.stopped_at, p.stopped_at);
    if t.last_status == "STOPPED" {
        t.stopping_at
            .get_or_insert(t.stopped_at.unwrap_or_else(now));
        t.execution_stopped_at
            .get_or_insert(t.stopped_at.unwrap_or_else(now));
    }
    if t.stop_code.is_none() && p.stop_code.is_some() {
        t.stop_code = p.stop_code;
        t.stopped_reason = p.reason;
    }
    if let Some(h) = p.health_status {
        t.health_status = Some(h.as_str().into());
    }
    for a in p.attachments {
        attach_eni(&mut t, a.status.as_str(), a.private_ipv4_address);
    }
    for c in p.containers {
        t = apply_container_change(t, c);
    }
    t.version += 1;
    t
}

pub(crate) fn apply_container_change(mut t: Task, cp: ContainerChange) -> Task {
    if let Some(c) = t
        .containers
        .iter_mut()
        .find(|c| c.name == cp.container_name)
    {
        if let Some(s) = cp.status.map(ContainerStatus::as_str)
            && state_rank(s) > state_rank(&c.last_status)
        {
            c.last_status = s.into();
        }
        if cp.exit_code.is_some() {
            c.exit_code = cp.exit_code;
        }
        if cp.reason.is_some() {
            c.reason = cp.reason;
        }
        if cp.runtime_id.is_some() {
            c.runtime_id = cp.runtime_id;
        }
        if cp.image_digest.is_some() {
            c.image_digest = cp.image_digest;
        }
        if let Some(h) = cp.health_status {
            c.health_status = Some(h.as_str().into());
        }
        if let Some(b) = cp.network_bindings {
            c.network_bindings = b;
        }
        if let Some(p) = cp.phases {
            c.phases.get_or_insert_default().merge(p);
        }
    }
    t
}

/// Records an awsvpc task's network interface as the agent reports it:
/// its status, and once it has an address, the interface's details and
/// each container's `networkInterfaces`, as ECS shows them.
pub(crate) fn attach_eni(t: &mut Task, status: &str, ip: Option<std::net::Ipv4Addr>) {
    let Some(eni) = t
        .attachments
        .iter_mut()
        .find(|a| a["type"] == "ElasticNetworkInterface")
    else {
        return;
    };
    eni["status"] = json!(status);
    let Some(ip) = ip else {
        return;
    };
    let id = eni["id"].as_str().unwrap_or_default().to_string();
    let [_, b, c, d] = ip.octets();
    let hex: String = id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(17)
        .collect();
    if let Some(details) = eni["details"].as_array_mut() {
        details.retain(|d| d["name"] == "subnetId");
        details.extend([
            json!({"name": "networkInterfaceId", "value": format!("eni-{hex}")}),
            json!({"name": "macAddress", "value": format!("02:00:7f:{b:02x}:{c:02x}:{d:02x}")}),
            json!({"name": "privateIPv4Address", "value": ip.to_string()}),
        ]);
    }
    for c in &mut t.containers {
        c.network_interfaces = vec![json!({
            "attachmentId": id,
            "privateIpv4Address": ip.to_string(),
        })];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use skiff_channel::messages::{TaskStateChange, TaskStatus};

    #[test]
    fn patches_move_states_forward_only_and_keep_a_requested_stop() {
        let mut t: Task = serde_json::from_value(json!({
            "taskArn": "arn:aws:ecs:r:0:task/default/abc", "clusterArn": "c", "taskDefinitionArn": "td:1",
            "overrides": {}, "lastStatus": "RUNNING", "desiredStatus": "STOPPED", "cpu": "0", "memory": "8",
            "containers": [], "launchType": "EC2", "version": 1, "createdAt": 1.0,
            "stopCode": "UserInitiated", "stoppedReason": "bye",
        }))
        .unwrap();
        t = apply_change(
            t,
            FromAgent::TaskStateChange(TaskStateChange {
                status: Some(TaskStatus::Pending),
                ..TaskStateChange::default()
            }),
        );
        assert_eq!(t.last_status, "RUNNING");
        t = apply_change(
            t,
            FromAgent::TaskStateChange(TaskStateChange {
                status: Some(TaskStatus::Stopped),
                stopped_at: Some(5.0),
                stop_code: Some("EssentialContainerExited".into()),
                reason: Some("x".into()),
                ..TaskStateChange::default()
            }),
        );
        assert_eq!(t.last_status, "STOPPED");
        assert_eq!(t.stop_code.as_deref(), Some("UserInitiated"));
        assert_eq!(t.stopped_reason.as_deref(), Some("bye"));
        assert_eq!(t.stopped_at, Some(5.0));
        assert!(t.stopping_at.is_some() && t.execution_stopped_at.is_some());
    }
}
