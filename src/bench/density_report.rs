//! `skiff bench density`'s figures, as JSON and as text.

use super::density::{Measured, Plan};
use super::report;
use super::resident::Resident;
use serde_json::{Value, json};

/// The goal for what one task may add to the server's resident
/// memory.
const GOAL_PER_TASK: u64 = 128 << 10;

/// Everything one run printed.
pub struct Run<'a> {
    pub what: &'a str,
    pub wasm_bytes: usize,
    pub http: bool,
    pub endpoint: &'a str,
    pub own: bool,
    pub plan: &'a Plan,
    /// Tasks the cluster had before the run (running, or stopped lately).
    pub prior: usize,
    pub measured: &'a Measured,
    pub peak: Option<u64>,
    pub baselines: &'a [Resident],
}

fn rate(n: usize, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

pub fn json_of(r: &Run) -> Value {
    let m = r.measured;
    let per_task = m.per_task();
    json!({
        "bench": "density",
        "skiffVersion": env!("CARGO_PKG_VERSION"),
        "machine": report::machine(),
        "guest": {"name": r.what, "bytes": r.wasm_bytes, "kind": if r.http { "wasi:http service" } else { "long-running task" }},
        "endpoint": r.endpoint,
        "serverStartedForThisRun": r.own,
        "tasks": r.plan.tasks,
        "taskMemoryMiB": r.plan.task_memory,
        "concurrency": r.plan.concurrency,
        "tasksInClusterBefore": r.prior,
        "running": m.running,
        "failed": m.failures.iter().map(|(why, n)| json!({"reason": why, "count": n})).collect::<Vec<_>>(),
        "fill": {"seconds": m.fill.as_secs_f64(), "tasksPerSecond": rate(m.running, m.fill.as_secs_f64())},
        "drain": {"stopped": m.stopped, "seconds": m.drain.as_secs_f64(), "tasksPerSecond": rate(m.stopped, m.drain.as_secs_f64())},
        "memory": {
            "beforeBytes": m.before,
            "fullBytes": m.full,
            "afterStopBytes": m.after,
            "peakBytes": r.peak,
            "perTaskBytes": per_task,
            "goalPerTaskBytes": GOAL_PER_TASK,
        },
        "probes": {"empty": report::json(&m.empty), "full": report::json(&m.loaded)},
        "requestsWhileFull": m.requests.as_ref().map(|(sampled, row)| json!({
            "sampled": sampled, "answered": row.micros.len(), "phase": report::json(std::slice::from_ref(row)),
        })),
        "baselines": r.baselines.iter().map(|b| match &b.outcome {
            Ok(held) => json!({
                "name": b.name, "ran": true, "version": held.version, "processes": held.processes,
                "perTaskBytes": held.per_process,
                "baselineOverSkiff": per_task.filter(|&p| p > 0).map(|p| held.per_process as f64 / p as f64),
            }),
            Err(why) => json!({"name": b.name, "ran": false, "skipped": why}),
        }).collect::<Vec<_>>(),
    })
}

pub fn print(out: &Value, m: &Measured, baselines: &[Resident]) {
    report::print_machine(out);
    println!(
        "{} of {} task(s) running after {:.2} s ({:.0} tasks/s to RUNNING, ten to a RunTask)",
        m.running,
        out["tasks"],
        m.fill.as_secs_f64(),
        out["fill"]["tasksPerSecond"].as_f64().unwrap_or(0.0)
    );
    match (m.before, m.full, m.after) {
        (Some(before), Some(full), Some(after)) => println!(
            "skiff serve's resident memory: {} before, {} with them running, {} after stopping them",
            report::bytes(before),
            report::bytes(full),
            report::bytes(after)
        ),
        _ => println!(
            "skiff serve's resident memory: not measured (with --endpoint, give --server-pid)"
        ),
    }
    if let Some(per) = m.per_task() {
        let prior = out["tasksInClusterBefore"].as_u64().unwrap_or(0);
        println!(
            "  {} per task (growth / tasks running); goal ≤ {}: {}",
            report::bytes(per),
            report::bytes(GOAL_PER_TASK),
            if prior > 0 {
                format!("not judged ({prior} task(s) were in the cluster before)")
            } else if per <= GOAL_PER_TASK {
                "met".into()
            } else {
                "not met".into()
            }
        );
    }
    if let Some((sampled, row)) = &m.requests {
        println!(
            "while all ran, {} of {sampled} sampled services answered a request",
            row.micros.len()
        );
        for line in report::table(std::slice::from_ref(row)).lines() {
            println!("  {line}");
        }
    }
    println!(
        "stopped {} in {:.2} s ({:.0} tasks/s, StopTask to STOPPED seen)",
        m.stopped,
        m.drain.as_secs_f64(),
        out["drain"]["tasksPerSecond"].as_f64().unwrap_or(0.0)
    );
    for (when, rows) in [("empty", &m.empty), ("full", &m.loaded)] {
        if rows.iter().all(|r| r.micros.is_empty()) {
            continue;
        }
        println!();
        println!("one more task started and stopped, one at a time, {when}:");
        for line in report::table(rows).lines() {
            println!("  {line}");
        }
    }
    for (why, n) in &m.failures {
        println!("FAILED: {n} task(s): {why}");
    }
    if baselines.is_empty() {
        return;
    }
    println!();
    println!(
        "baselines (the same guest as a process of its own; proportional set size per process):"
    );
    for b in baselines {
        match &b.outcome {
            Err(why) => println!("  {}: skipped: {why}", b.name),
            Ok(held) => {
                let version = report::version_suffix(held.version.as_deref());
                let ratio = m
                    .per_task()
                    .filter(|&p| p > 0)
                    .map(|p| format!(": {:.0}× skiff's", held.per_process as f64 / p as f64))
                    .unwrap_or_default();
                println!(
                    "  {}{version}: {} each, {} held{ratio}",
                    b.name,
                    report::bytes(held.per_process),
                    held.processes
                );
            }
        }
    }
}
