//! A container's sandbox, from its definition, its image and the task's
//! overrides: the one place where ECS's container fields become
//! `skiff-runtime`'s [`InstanceSpec`].
//!
//! - argv: `entryPoint` (its first word is argv[0]) or the container's name,
//!   then `command` (or the override's) or the image's arguments;
//! - environment: the image's, then the definition's, then the override's;
//! - mounts: the container's `mountPoints`, then those of `volumesFrom`
//!   (read-only if it says so);
//! - memory: the override's, the container's `memory`, or the task's, as a
//!   hard limit on the instance's linear memory;
//! - CPU: the override's or the container's `cpu` units, else the task's
//!   (1024 = one core), a weighted share of the agent's cores; the task's
//!   own `cpu`, when it has one, is also a hard limit on all its
//!   containers together (set by the runner: one `CpuCap` per task).
//!
//! The network policy is the task network's (see `resources::network`).

use skiff_channel::task::Task;
use skiff_channel::taskdef::{ContainerDefinition, MountPoint, TaskDefinition};
use skiff_registry::images::ImageRecord;
use skiff_runtime::{InstanceSpec, Limits, Mount, NetworkMode, Output, Stdin};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Container `c`'s spec. `volumes` maps the task's volumes to where they
/// are; `sink` takes its output (awslogs), else it is discarded.
pub(crate) fn container_spec(
    task: &Task,
    td: &TaskDefinition,
    c: &ContainerDefinition,
    record: &ImageRecord,
    volumes: &HashMap<String, PathBuf>,
    sink: Option<Arc<dyn skiff_runtime::OutputSink>>,
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
    let mut add = |points: &[MountPoint], force_ro: bool| {
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
        Some(s) => Output::Sink(s),
        None => Output::Null,
    };
    InstanceSpec {
        args,
        env,
        mounts,
        limits: Limits {
            memory: memory_mib.map(|m| u64::from(m) << 20),
            cpu_units,
            cpu_cap: None,
            fuel: None,
            timeout: None,
        },
        // The task's network sets it.
        network: NetworkMode::None.policy(None),
        stdin: Stdin::UntilStopped,
        stdout: output.clone(),
        stderr: output,
    }
}
