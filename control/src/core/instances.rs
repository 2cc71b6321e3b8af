//! Container instances: the local one (this process's agent), what the
//! tasks on each use, and each as a placement candidate.

use crate::core::LOCAL_INSTANCE_ID;
use crate::core::model::{
    ContainerInstance, Resource, Task, arn, name_of, new_id, now, state_rank,
};
use crate::core::placement::Candidate;
use crate::core::placement::MAX_CONTAINER_MEMORY;
use crate::core::state::State;
use crate::core::taskdef::Attribute;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};

/// The resource an instance that counts its runtime's instance slots
/// registers: one per container it may run at once.
pub(crate) const SLOTS: &str = "WASM_SLOTS";

/// The attribute naming an instance's task address block (the control
/// plane gives each instance with a remote agent one).
pub(crate) const TASK_ADDRESSES: &str = "skiff.task-addresses";

/// How many blocks the task address space (127.64.0.0/10) holds: one per
/// instance, each a /18 (16,382 task addresses).
const ADDRESS_BLOCKS: u32 = 256;

fn address_block(k: u32) -> String {
    format!("127.{}.{}.0/18", 64 + k / 4, (k % 4) * 64)
}

/// A task address block no instance (not INACTIVE) has.
pub(crate) fn free_address_block(state: &State) -> Option<String> {
    let taken: std::collections::HashSet<&str> = state
        .instances
        .values()
        .map(|e| &e.value)
        .filter(|i| i.status != "INACTIVE")
        .flat_map(|i| &i.attributes)
        .filter(|a| a.name == TASK_ADDRESSES)
        .filter_map(|a| a.value.as_deref())
        .collect();
    (0..ADDRESS_BLOCKS)
        .map(address_block)
        .find(|b| !taken.contains(b.as_str()))
}

/// Where every machine's task addresses are reached: each instance (not
/// INACTIVE) with a block and an agent that said where its mesh listens.
///
/// The control plane's machine, when it is in the mesh, also answers for
/// where tasks reach its load balancers (`lb_address` as tasks see it,
/// [`crate::plane::elb::tasks_reach`]): a route for the smallest block
/// holding that address, so tasks on other machines reach load balancers
/// by their DNS names too.
pub(crate) fn routes(
    state: &State,
    lb_address: std::net::Ipv4Addr,
) -> Vec<skiff_channel::fabric::Route> {
    let mut routes: Vec<skiff_channel::fabric::Route> = state
        .instances
        .values()
        .map(|e| &e.value)
        .filter(|i| i.status != "INACTIVE")
        .filter_map(|i| {
            let block = i
                .attributes
                .iter()
                .find(|a| a.name == TASK_ADDRESSES)?
                .value
                .clone()?;
            Some(skiff_channel::fabric::Route {
                block,
                via: i.mesh_address.clone()?,
                instance: i.ec2_instance_id.clone().unwrap_or_default(),
            })
        })
        .collect();
    let front = crate::plane::elb::tasks_reach(lb_address);
    let front = format!(
        "{}/{FRONT_PREFIX}",
        std::net::Ipv4Addr::from(u32::from(front) & (u32::MAX << (32 - FRONT_PREFIX)))
    );
    let local = routes
        .iter()
        .find(|r| r.instance == super::LOCAL_INSTANCE_ID)
        .cloned();
    if let Some(local) = local {
        routes.push(skiff_channel::fabric::Route {
            block: front,
            ..local
        });
    }
    routes
}

/// The prefix of the block routed to the load balancers' machine: the
/// smallest block the mesh takes (a /30, with the front address in it).
const FRONT_PREFIX: u32 = 30;

/// The local instance's sizes.
#[derive(Debug, Clone)]
pub(crate) struct LocalSize {
    pub cpu: u32,
    pub memory: u32,
    /// Containers it may run at once (its runtime's instance slots).
    pub slots: Option<u32>,
    /// The most memory (MiB) its runtime gives one container, if less than
    /// a Wasm memory's 4 GiB.
    pub max_container_memory: Option<u32>,
    pub reserved_ports: Vec<u16>,
    /// Its task address block and mesh listener, if it is in the mesh.
    pub mesh: Option<(String, String)>,
}

pub(crate) fn local_instance(
    existing: Option<ContainerInstance>,
    region: &str,
    cluster: &str,
    size: &LocalSize,
) -> ContainerInstance {
    let mut registered = vec![
        Resource::integer("CPU", i64::from(size.cpu)),
        Resource::integer("MEMORY", i64::from(size.memory)),
        Resource::ports("PORTS", &size.reserved_ports),
        Resource::ports("PORTS_UDP", &[]),
    ];
    if let Some(slots) = size.slots {
        registered.push(Resource::integer(SLOTS, i64::from(slots)));
    }
    let attrs = |names: &[(&str, Option<String>)]| -> Vec<Attribute> {
        names
            .iter()
            .map(|(n, v)| Attribute {
                name: (*n).to_string(),
                value: v.clone(),
                target_type: None,
                target_id: None,
            })
            .collect()
    };
    let mut attributes = attrs(&[
        ("ecs.os-type", Some("wasi".into())),
        ("ecs.cpu-architecture", Some("wasm32".into())),
        ("ecs.availability-zone", Some(format!("{region}a"))),
        ("ecs.instance-type", Some("skiff.local".into())),
        ("com.amazonaws.ecs.capability.logging-driver.awslogs", None),
        ("ecs.capability.container-health-check", None),
        ("ecs.capability.container-ordering", None),
        ("com.amazonaws.ecs.capability.task-iam-role", None),
    ]);
    if let Some(max) = size.max_container_memory {
        attributes.extend(attrs(&[(MAX_CONTAINER_MEMORY, Some(max.to_string()))]));
    }
    if let Some((block, _)) = &size.mesh {
        attributes.extend(attrs(&[(TASK_ADDRESSES, Some(block.clone()))]));
    }
    let mesh_address = size.mesh.as_ref().map(|(_, at)| at.clone());
    match existing {
        Some(mut i) => {
            // Keep custom attributes (PutAttributes); refresh the agent's
            // (a cap of an earlier start is not kept).
            for a in i.attributes.drain(..) {
                let agents_own = a.name == MAX_CONTAINER_MEMORY || a.name == TASK_ADDRESSES;
                if !agents_own && !attributes.iter().any(|x| x.name == a.name) {
                    attributes.push(a);
                }
            }
            i.mesh_address = mesh_address;
            i.attributes = attributes;
            i.registered_resources = registered.clone();
            i.remaining_resources = registered;
            i.agent_connected = true;
            i.offers_fargate = true;
            i.version += 1;
            i
        }
        None => {
            let id = new_id();
            ContainerInstance {
                container_instance_arn: arn(
                    "ecs",
                    region,
                    &format!("container-instance/{cluster}/{id}"),
                ),
                ec2_instance_id: Some(LOCAL_INSTANCE_ID.into()),
                version: 1,
                version_info: json!({
                    "agentVersion": env!("CARGO_PKG_VERSION"),
                    "agentHash": "skiff",
                    "dockerVersion": "wasmtime-48",
                }),
                status: "ACTIVE".into(),
                agent_connected: true,
                registered_resources: registered.clone(),
                remaining_resources: registered,
                running_tasks_count: 0,
                pending_tasks_count: 0,
                attributes,
                registered_at: now(),
                tags: Vec::new(),
                cluster: cluster.to_string(),
                deregistered_at: None,
                offers_fargate: true,
                agent_session: None,
                registered_by: None,
                mesh_address,
            }
        }
    }
}

/// A task not yet RUNNING (PROVISIONING, PENDING or ACTIVATING).
pub(crate) fn is_pending(t: &Task) -> bool {
    state_rank(&t.last_status) < state_rank("RUNNING")
}

/// What the tasks on one container instance that are not STOPPED use:
/// placement and DescribeContainerInstances both see this.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Usage {
    pub cpu: i64,
    pub memory: i64,
    /// Runtime instance slots: the containers of its tasks.
    pub slots: i64,
    pub tcp: Vec<u16>,
    pub udp: Vec<u16>,
    pub running: u32,
    pub pending: u32,
    /// Tasks by task group.
    pub groups: HashMap<String, u32>,
}

/// Every instance's usage, by instance ARN: kept by the state as tasks
/// change ([`account`]), not summed over every task at each placement.
pub(crate) fn usage_by_instance(state: &State) -> &HashMap<String, Usage> {
    state.usage()
}

/// Adds (`sign` 1) or takes away (-1) what task `t` uses from its
/// instance's entry in `all`. A FARGATE task uses the cpu and memory of
/// the instance lending it capacity, but is not one of its tasks (ECS
/// shows it on none). A STOPPED task uses nothing.
pub(crate) fn account(all: &mut HashMap<String, Usage>, t: &Task, sign: i64) {
    let Some(arn) = t.runs_on() else {
        return;
    };
    if t.last_status == "STOPPED" {
        return;
    }
    let u = all.entry(arn.to_string()).or_default();
    u.cpu += sign * t.cpu.parse::<i64>().unwrap_or(0);
    u.memory += sign * t.memory.parse::<i64>().unwrap_or(0);
    u.slots += sign * t.containers.len() as i64;
    // Host ports: host and bridge tasks', and a FARGATE or EC2 awsvpc
    // task's published on its machine for its public address.
    for b in t.containers.iter().flat_map(|c| &c.network_bindings) {
        let ports = if b.protocol == "udp" {
            &mut u.udp
        } else {
            &mut u.tcp
        };
        if sign > 0 {
            ports.push(b.host_port);
        } else if let Some(i) = ports.iter().position(|p| *p == b.host_port) {
            ports.swap_remove(i);
        }
    }
    if t.container_instance_arn.is_some() {
        let count = |n: &mut u32| {
            *n = if sign > 0 {
                n.saturating_add(1)
            } else {
                n.saturating_sub(1)
            }
        };
        if t.last_status == "RUNNING" {
            count(&mut u.running);
        } else if is_pending(t) {
            count(&mut u.pending);
        }
        let group = t.group.clone().unwrap_or_default();
        let n = u.groups.entry(group.clone()).or_default();
        count(n);
        if *n == 0 {
            u.groups.remove(&group);
        }
    }
    if u.cpu == 0 && u.memory == 0 && u.slots == 0 && u.groups.is_empty() {
        all.remove(arn);
    }
}

pub(crate) fn find_instance<'a>(
    state: &'a State,
    cluster: &str,
    given: &str,
) -> Option<&'a ContainerInstance> {
    let id = name_of(given);
    state
        .instances
        .values()
        .map(|e| &e.value)
        .find(|i| i.cluster == cluster && name_of(&i.container_instance_arn) == id)
}

/// The placement view of every instance in a cluster.
pub(crate) fn candidates(state: &State, cluster: &str) -> Vec<Candidate> {
    let usage = usage_by_instance(state);
    state
        .instances
        .values()
        .map(|e| &e.value)
        .filter(|i| i.cluster == cluster && i.status != "INACTIVE")
        .map(|i| candidate(i, usage.get(i.container_instance_arn.as_str())))
        .collect()
}

pub(crate) fn candidate(i: &ContainerInstance, usage: Option<&Usage>) -> Candidate {
    let none = Usage::default();
    let u = usage.unwrap_or(&none);
    let registered = |name: &str| {
        i.registered_resources
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.integer_value)
            .unwrap_or(0)
    };
    let reserved: Vec<u16> = i
        .registered_resources
        .iter()
        .find(|r| r.name == "PORTS")
        .and_then(|r| r.string_set_value.as_ref())
        .map(|s| s.iter().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default();
    Candidate {
        arn: i.container_instance_arn.clone(),
        instance_id: i.ec2_instance_id.clone().unwrap_or_default(),
        active: i.status == "ACTIVE",
        agent_connected: i.agent_connected,
        registered_at: i.registered_at,
        running_tasks: u.running,
        attributes: i
            .attributes
            .iter()
            .map(|a| (a.name.clone(), a.value.clone()))
            .collect::<BTreeMap<_, _>>(),
        remaining_cpu: registered("CPU") - u.cpu,
        remaining_memory: registered("MEMORY") - u.memory,
        remaining_slots: i
            .registered_resources
            .iter()
            .find(|r| r.name == SLOTS)
            .map(|r| r.integer_value - u.slots),
        used_tcp: u.tcp.iter().copied().chain(reserved).collect(),
        used_udp: u.udp.iter().copied().collect(),
        groups: u.groups.clone(),
    }
}

pub(crate) fn instance_arn_for(region: &str, cluster: &str, given: &str) -> String {
    if given.starts_with("arn:") {
        given.to_string()
    } else {
        arn(
            "ecs",
            region,
            &format!("container-instance/{cluster}/{given}"),
        )
    }
}

/// Where FARGATE tasks of any cluster may run: every active instance whose
/// agent offers Fargate capacity.
pub(crate) fn fargate_capacity(state: &State) -> Vec<Candidate> {
    let usage = usage_by_instance(state);
    state
        .instances
        .values()
        .map(|e| &e.value)
        .filter(|i| i.offers_fargate && i.status == "ACTIVE")
        .map(|i| candidate(i, usage.get(i.container_instance_arn.as_str())))
        .collect()
}

#[cfg(test)]
mod block_tests {
    use super::*;

    #[test]
    fn address_blocks_are_distinct_and_inside_loopback() {
        let all: std::collections::HashSet<String> =
            (0..ADDRESS_BLOCKS).map(address_block).collect();
        assert_eq!(all.len(), 256);
        assert_eq!(address_block(0), "127.64.0.0/18");
        assert_eq!(address_block(5), "127.65.64.0/18");
        assert_eq!(address_block(255), "127.127.192.0/18");
        // Second octets 64..=127: clear of 127.0.0.1, the local
        // instance's 127.18.0.0/16 and load balancers' addresses.
        assert!(all.iter().all(|b| {
            let second: u32 = b.split('.').nth(1).unwrap().parse().unwrap();
            (64..128).contains(&second)
        }));
    }
}
