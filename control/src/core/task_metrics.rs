//! The services' CloudWatch metrics, from what the agents measure: every
//! [`USAGE_EVERY`](skiff_channel::messages::USAGE_EVERY) each agent sends
//! the CPU time and memory of the tasks it runs, and two samples of a task
//! give its use over the time between them.
//!
//! Recorded as AWS records them for every service: `AWS/ECS`
//! `CPUUtilization` and `MemoryUtilization` by `ClusterName`+`ServiceName`,
//! in percent: the CPU (or memory) the service's tasks used over what they
//! reserve (the task's `cpu` in units of 1/1024 vCPU, its `memory` in
//! MiB). A task's `cpu` is a hard limit (`skiff_runtime::CpuCap`), so CPU
//! reads at most about 100 (a sample may hold some of the cap's burst); a
//! task without one is counted against one vCPU, and may read over. Each
//! datapoint is one sample of the whole service; the statistics are over
//! samples.

use super::Core;
use crate::core::metrics::Metrics;
use crate::core::model::{self, Task};
use crate::core::state::service_of;
use skiff_channel::messages::UsageReport;
use std::collections::HashMap;
use std::sync::Mutex;

/// The last sample of each task, by the instance that runs it.
#[derive(Debug, Default)]
pub(crate) struct Samples(Mutex<HashMap<String, HashMap<String, Sample>>>);

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: f64,
    cpu_nanos: u64,
}

/// What one service's tasks used in one report: sums over the tasks with
/// an earlier sample.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Use {
    cpu_units: f64,
    cpu_reserved: f64,
    memory_mib: f64,
    memory_reserved: f64,
}

impl Core {
    /// Records an agent's usage report: its services' utilization.
    pub(crate) async fn record_usage(&self, from: &str, report: UsageReport) {
        let tasks: Vec<(Task, u64, u64)> = {
            let state = self.state.lock().await;
            report
                .tasks
                .into_iter()
                .filter_map(|u| {
                    let t = &state.tasks.get(model::name_of(&u.task_arn))?.value;
                    // Only services are measured.
                    (t.runs_on() == Some(from) && service_of(t).is_some())
                        .then(|| (t.clone(), u.cpu_nanos, u.memory_bytes))
                })
                .collect()
        };
        let Ok(mut samples) = self.usage_samples.0.lock() else {
            return;
        };
        let samples = samples.entry(from.to_string()).or_default();
        let by_service = utilization(samples, report.at, &tasks);
        record(&self.metrics, report.at as i64, by_service);
    }
}

/// Each service's use between the tasks' last samples and these, keyed
/// by (cluster name, service name). These samples replace the last ones:
/// a task no longer reported is forgotten.
fn utilization(
    samples: &mut HashMap<String, Sample>,
    at: f64,
    tasks: &[(Task, u64, u64)],
) -> HashMap<(String, String), Use> {
    let previous = std::mem::take(samples);
    let mut by_service: HashMap<(String, String), Use> = HashMap::new();
    for (task, cpu_nanos, memory_bytes) in tasks {
        let now = Sample {
            at,
            cpu_nanos: *cpu_nanos,
        };
        samples.insert(task.task_arn.clone(), now);
        let before = previous.get(&task.task_arn).copied();
        let Some(key) = service_of(task) else {
            continue;
        };
        let Some(before) = before.filter(|b| b.at < at) else {
            continue;
        };
        let seconds = at - before.at;
        let used = now.cpu_nanos.saturating_sub(before.cpu_nanos) as f64 / 1e9;
        let Some((cluster, service)) = key.split_once('/') else {
            continue;
        };
        let entry = by_service
            .entry((cluster.to_string(), service.to_string()))
            .or_default();
        entry.cpu_units += used / seconds * 1024.0;
        entry.cpu_reserved += reserved(&task.cpu).unwrap_or(1024.0);
        if let Some(memory) = reserved(&task.memory) {
            entry.memory_mib += *memory_bytes as f64 / (1024.0 * 1024.0);
            entry.memory_reserved += memory;
        }
    }
    by_service
}

/// A task's `cpu` or `memory` as a number; none when it reserves none.
fn reserved(value: &str) -> Option<f64> {
    value.parse::<f64>().ok().filter(|v| *v > 0.0)
}

fn record(metrics: &Metrics, at: i64, by_service: HashMap<(String, String), Use>) {
    for ((cluster, service), u) in by_service {
        let dims = [
            ("ClusterName", cluster.as_str()),
            ("ServiceName", service.as_str()),
        ];
        if u.cpu_reserved > 0.0 {
            let percent = u.cpu_units / u.cpu_reserved * 100.0;
            metrics.record("AWS/ECS", "CPUUtilization", &dims, "Percent", at, percent);
        }
        if u.memory_reserved > 0.0 {
            let percent = u.memory_mib / u.memory_reserved * 100.0;
            metrics.record(
                "AWS/ECS",
                "MemoryUtilization",
                &dims,
                "Percent",
                at,
                percent,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(arn: &str, service: Option<&str>, cpu: &str, memory: &str) -> Task {
        let mut t: Task = serde_json::from_value(serde_json::json!({
            "taskArn": arn, "clusterArn": "arn:aws:ecs:us-east-1:1:cluster/c",
            "taskDefinitionArn": "td", "overrides": {}, "lastStatus": "RUNNING",
            "desiredStatus": "RUNNING", "cpu": cpu, "memory": memory, "containers": [],
            "launchType": "FARGATE", "version": 1, "createdAt": 0.0,
        }))
        .unwrap();
        t.group = service.map(|s| format!("service:{s}"));
        t.started_by = service.map(|_| "ecs-svc/1".to_string());
        t
    }

    #[test]
    fn two_samples_give_the_share_of_what_the_tasks_reserve() {
        let mut samples = HashMap::new();
        let a = task("arn:t/a", Some("web"), "512", "1024");
        let b = task("arn:t/b", Some("web"), "512", "1024");
        let lone = task("arn:t/c", None, "256", "512");
        let mib = 1024 * 1024;
        let first = [(a.clone(), 0, 0), (b.clone(), 0, 0), (lone.clone(), 0, 0)];
        // A first sample is only remembered.
        assert!(utilization(&mut samples, 100.0, &first).is_empty());
        // In 10 s, a used 5 s of CPU (half a vCPU = 512 units: all it
        // reserves) and b none; they hold 256 and 768 MiB of 2048.
        let second = [
            (a, 5_000_000_000, 256 * mib),
            (b, 0, 768 * mib),
            (lone, 9_000_000_000, 0),
        ];
        let by = utilization(&mut samples, 110.0, &second);
        assert_eq!(by.len(), 1, "only services are measured");
        let web = by[&("c".to_string(), "web".to_string())];
        assert_eq!(web.cpu_units / web.cpu_reserved, 0.5);
        assert_eq!(web.memory_mib / web.memory_reserved, 0.5);
        // A sample that is not newer is no interval.
        assert!(utilization(&mut samples, 110.0, &second).is_empty());
        // A task no longer reported is forgotten.
        utilization(&mut samples, 120.0, &second[..1]);
        assert_eq!(samples.len(), 1);
    }

    #[test]
    fn a_task_reserving_no_memory_has_no_memory_figure() {
        let mut samples = HashMap::new();
        let t = task("arn:t/a", Some("web"), "0", "");
        utilization(&mut samples, 0.0, &[(t.clone(), 0, 0)]);
        let by = utilization(&mut samples, 1.0, &[(t, 1_000_000_000, 5)]);
        let web = by[&("c".to_string(), "web".to_string())];
        // No CPU reservation counts as one vCPU, the runtime's default share.
        assert_eq!(web.cpu_units / web.cpu_reserved, 1.0);
        assert_eq!(web.memory_reserved, 0.0);
    }
}
