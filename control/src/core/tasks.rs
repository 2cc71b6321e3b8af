//! Launching and stopping tasks: what a task definition and a request
//! ask of an instance, placing tasks (EC2 in their cluster, FARGATE on any
//! instance that offers Fargate capacity), the new task objects, and a
//! stop asked for.

use crate::core::Core;
use crate::core::capacity::{self, StrategyItem};
use crate::core::instances::{candidates, fargate_capacity, instance_arn_for};
use crate::core::model::{
    Cluster, Container, Failure, NetworkBinding, NetworkConfiguration, PlacementItem, Tag, Task,
    TaskOverride, arn, name_of, new_id, now,
};
use crate::core::placement::{self, Constraint, Demand, Strategy};
use crate::core::state::State;
use crate::core::taskdef::{self, TaskDefinition};
use crate::error::ApiError;
use serde_json::{Value, json};
use std::collections::HashMap;

/// The definition a task was started from.
pub(crate) fn taskdef_of(state: &State, task_definition_arn: &str) -> Option<TaskDefinition> {
    let (family, rev) = name_of(task_definition_arn).split_once(':')?;
    state
        .taskdefs
        .get(family)?
        .get(&rev.parse().ok()?)
        .map(|e| e.value.clone())
}

/// A deleted revision, once nothing uses it: kept only so that its number
/// is never given again (ECS never reuses revisions); not found by any
/// operation.
pub(crate) const DELETED: &str = "DELETED";

/// Resolves `family`, `family:revision` or an ARN. `active_only` refuses
/// INACTIVE revisions (they cannot start tasks).
pub(crate) fn resolve_taskdef(
    state: &State,
    given: &str,
    active_only: bool,
) -> Result<TaskDefinition, ApiError> {
    let name = name_of(given);
    let not_found = || {
        ApiError::client(format!(
            "Unable to describe task definition. ({given} is not registered{}.)",
            if active_only { ", or not ACTIVE" } else { "" }
        ))
    };
    let family_revs = |f: &str| state.taskdefs.get(f).ok_or_else(not_found);
    let td = match name.split_once(':') {
        Some((family, rev)) => {
            let rev: u32 = rev
                .parse()
                .map_err(|_| ApiError::client(format!("Invalid revision number. Number: {rev}")))?;
            family_revs(family)?
                .get(&rev)
                .map(|e| e.value.clone())
                .filter(|td| td.status != DELETED)
                .ok_or_else(not_found)?
        }
        None => family_revs(name)?
            .values()
            .rev()
            .map(|e| &e.value)
            .find(|td| td.status == "ACTIVE")
            .cloned()
            .ok_or_else(not_found)?,
    };
    if active_only && td.status != "ACTIVE" {
        return Err(ApiError::client(format!(
            "TaskDefinition is inactive: {} cannot start new tasks.",
            td.task_definition_arn
        )));
    }
    Ok(td)
}

/// Parses placement constraints and strategies (at most 10 and 5), with
/// `random` when no strategy is given.
pub(crate) fn placement_rules(
    constraints: &[PlacementItem],
    strategies: &[PlacementItem],
) -> Result<(Vec<Constraint>, Vec<Strategy>), ApiError> {
    let constraints = constraints
        .iter()
        .map(|c| Constraint::parse(&c.kind, c.expression.as_deref()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::invalid_parameter)?;
    let mut strategies = strategies
        .iter()
        .map(|s| Strategy::parse(&s.kind, s.field.as_deref()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::invalid_parameter)?;
    if constraints.len() > 10 || strategies.len() > 5 {
        return Err(ApiError::invalid_parameter(
            "At most 10 placement constraints and 5 placement strategies.",
        ));
    }
    if strategies.is_empty() {
        strategies.push(Strategy::Random);
    }
    Ok((constraints, strategies))
}

/// What to launch: one task definition, how, and where it may go.
#[derive(Clone)]
pub(crate) struct Launch {
    pub td: TaskDefinition,
    pub overrides: TaskOverride,
    /// The request's constraints and the task definition's.
    pub constraints: Vec<Constraint>,
    pub strategies: Vec<Strategy>,
    pub group: String,
    pub started_by: Option<String>,
    pub tags: Vec<Tag>,
    pub client_token: Option<String>,
    pub launch_type: String,
    /// The awsvpc configuration (awsvpc task definitions only).
    pub network: Option<NetworkConfiguration>,
    /// The capacity provider strategy the tasks are counted against
    /// (FARGATE launches only; empty: none), and how many tasks each
    /// provider already has (a service's).
    pub providers: Vec<StrategyItem>,
    pub provider_counts: HashMap<String, u32>,
    /// A FARGATE launch's platform version (`LATEST` kept as given).
    pub platform_version: Option<String>,
    pub enable_execute_command: bool,
}

impl Launch {
    /// A launch of `td` with the request's `constraints` and the task
    /// definition's own.
    pub(crate) fn new(
        td: TaskDefinition,
        mut constraints: Vec<Constraint>,
        strategies: Vec<Strategy>,
        group: String,
    ) -> Result<Launch, ApiError> {
        for pc in &td.placement_constraints {
            constraints.push(
                Constraint::parse(&pc.kind, pc.expression.as_deref()).map_err(ApiError::client)?,
            );
        }
        Ok(Launch {
            td,
            overrides: TaskOverride::default(),
            constraints,
            strategies,
            group,
            started_by: None,
            tags: Vec::new(),
            client_token: None,
            launch_type: "EC2".into(),
            network: None,
            providers: Vec::new(),
            provider_counts: HashMap::new(),
            platform_version: None,
            enable_execute_command: false,
        })
    }
}

/// See [`network_configuration`].
pub(crate) fn check_network_configuration(
    td: &TaskDefinition,
    given: Option<&NetworkConfiguration>,
) -> Result<(), ApiError> {
    let awsvpc = td.network_mode.as_deref() == Some("awsvpc");
    let Some(config) = given else {
        return if awsvpc {
            Err(ApiError::invalid_parameter(
                "Network Configuration must be provided when networkMode 'awsvpc' is specified.",
            ))
        } else {
            Ok(())
        };
    };
    if !awsvpc {
        return Err(ApiError::invalid_parameter(
            "Network Configuration is not valid for the given networkMode of this task definition.",
        ));
    }
    let Some(vpc) = &config.awsvpc_configuration else {
        return Err(ApiError::invalid_parameter(
            "networkConfiguration.awsvpcConfiguration must be provided when networkMode 'awsvpc' is specified.",
        ));
    };
    if vpc.subnets.is_empty() {
        return Err(ApiError::invalid_parameter("subnets can not be empty."));
    }
    if vpc.subnets.len() > 16 {
        return Err(ApiError::invalid_parameter(
            "at most 16 subnets can be given.",
        ));
    }
    if let Some(bad) = vpc.subnets.iter().find(|s| !s.starts_with("subnet-")) {
        return Err(ApiError::invalid_parameter(format!(
            "{bad:?} is not a subnet id (subnet-...)."
        )));
    }
    match vpc.assign_public_ip.as_deref() {
        None | Some("DISABLED" | "ENABLED") => {}
        Some(other) => {
            return Err(ApiError::invalid_parameter(format!(
                "assignPublicIp {other:?} is invalid: expected ENABLED or DISABLED"
            )));
        }
    }
    Ok(())
}

/// What a launch type needs of the task definition and the request.
/// With no definition (yet), only the launch type itself is checked.
pub(crate) fn check_launch(
    launch_type: &str,
    td: Option<&TaskDefinition>,
    placement_given: bool,
) -> Result<(), ApiError> {
    let fargate_ready = td.is_none_or(|td| td.compatibilities.iter().any(|c| c == "FARGATE"));
    match launch_type {
        "EC2" => Ok(()),
        "FARGATE" if !fargate_ready => Err(ApiError::invalid_parameter(
            "Task definition does not support launch_type FARGATE: it needs networkMode awsvpc and a task-level cpu and memory from Fargate's table.",
        )),
        "FARGATE" if placement_given => Err(ApiError::invalid_parameter(
            "Placement constraints and strategies are not supported with FARGATE launch type.",
        )),
        "FARGATE" if td.is_some_and(|td| !td.placement_constraints.is_empty()) => {
            Err(ApiError::invalid_parameter(
                "Task placement constraints are not supported for tasks hosted on Fargate: the task definition has placementConstraints.",
            ))
        }
        "FARGATE" => Ok(()),
        "EXTERNAL" => Err(ApiError::invalid_parameter(
            "launchType EXTERNAL is not supported by skiff: use EC2 or FARGATE",
        )),
        other => Err(ApiError::invalid_parameter(format!(
            "launchType {other:?} is invalid"
        ))),
    }
}

/// What a task of `td` with `o` asks of an instance: (cpu, memory).
/// The largest memory limit (MiB) a container of the task has, as the
/// agent applies it: the override's, the container's `memory`, else the
/// task's (0: none is limited).
pub(crate) fn largest_container_memory(td: &TaskDefinition, o: &TaskOverride) -> i64 {
    let task_memory = o
        .memory
        .as_deref()
        .and_then(|m| taskdef::parse_task_memory(m).ok())
        .or_else(|| td.memory.as_deref().and_then(|m| m.parse().ok()));
    td.container_definitions
        .iter()
        .filter_map(|c| {
            o.container_overrides
                .iter()
                .find(|co| co.name == c.name)
                .and_then(|co| co.memory)
                .or(c.memory)
                .or(task_memory)
        })
        .map(i64::from)
        .max()
        .unwrap_or(0)
}

pub(crate) fn task_size(td: &TaskDefinition, o: &TaskOverride) -> (i64, i64) {
    let task_cpu = o
        .cpu
        .as_deref()
        .and_then(|c| taskdef::parse_task_cpu(c).ok())
        .or_else(|| td.cpu.as_deref().and_then(|c| c.parse().ok()));
    let task_memory = o
        .memory
        .as_deref()
        .and_then(|m| taskdef::parse_task_memory(m).ok())
        .or_else(|| td.memory.as_deref().and_then(|m| m.parse().ok()));
    let co = |name: &str| o.container_overrides.iter().find(|c| c.name == name);
    let cpu = task_cpu.map(i64::from).unwrap_or_else(|| {
        td.container_definitions
            .iter()
            .map(|c| i64::from(co(&c.name).and_then(|o| o.cpu).unwrap_or(c.cpu)))
            .sum()
    });
    let memory = task_memory.map(i64::from).unwrap_or_else(|| {
        td.container_definitions
            .iter()
            .map(|c| {
                let o = co(&c.name);
                let hard = o.and_then(|o| o.memory).or(c.memory);
                let soft = o
                    .and_then(|o| o.memory_reservation)
                    .or(c.memory_reservation);
                i64::from(soft.or(hard).unwrap_or(0))
            })
            .sum()
    });
    (cpu, memory)
}

/// The host ports a task of `td` holds on its instance: every mapped port
/// in host mode, the static ones in bridge mode (dynamic ones are picked
/// at start), in awsvpc the TCP ones when it has a public address
/// (`public`: they are published on the machine's), else none (the task
/// has its own address).
pub(crate) fn host_ports(td: &TaskDefinition, public: bool) -> (Vec<u16>, Vec<u16>) {
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    if td.network_mode.as_deref() == Some("awsvpc") && public {
        for c in &td.container_definitions {
            tcp.extend(
                c.port_mappings
                    .iter()
                    .filter(|p| p.protocol != "udp")
                    .map(|p| p.container_port),
            );
        }
        return (tcp, udp);
    }
    if !matches!(td.network_mode.as_deref(), Some("host" | "bridge")) {
        return (tcp, udp);
    }
    for c in &td.container_definitions {
        for p in &c.port_mappings {
            let port = p.host_port.unwrap_or(p.container_port);
            if port == 0 {
                continue;
            }
            if p.protocol == "udp" {
                udp.push(port);
            } else {
                tcp.push(port);
            }
        }
    }
    (tcp, udp)
}

pub(crate) fn new_task(
    region: &str,
    cluster: &Cluster,
    launch: &Launch,
    instance_arn: &str,
    cpu: i64,
    memory: i64,
) -> Task {
    let td = &launch.td;
    let id = new_id();
    let cluster_name = &cluster.cluster_name;
    let task_arn = arn("ecs", region, &format!("task/{cluster_name}/{id}"));
    let containers = td
        .container_definitions
        .iter()
        .map(|c| {
            let o = launch
                .overrides
                .container_overrides
                .iter()
                .find(|o| o.name == c.name);
            Container {
                container_arn: arn(
                    "ecs",
                    region,
                    &format!("container/{cluster_name}/{id}/{}", uuid::Uuid::new_v4()),
                ),
                task_arn: task_arn.clone(),
                name: c.name.clone(),
                image: c.image.clone(),
                image_digest: None,
                runtime_id: None,
                last_status: "PENDING".into(),
                exit_code: None,
                reason: None,
                // Host ports held from placement on (dynamic bridge ports
                // are added when the agent picks them); awsvpc tasks hold
                // none.
                network_bindings: match td.network_mode.as_deref() {
                    Some("awsvpc") if public_ip(launch.network.as_ref()) => c
                        .port_mappings
                        .iter()
                        .filter(|p| p.protocol != "udp")
                        .map(|p| NetworkBinding {
                            bind_ip: "127.0.0.1".into(),
                            container_port: p.container_port,
                            host_port: p.container_port,
                            protocol: p.protocol.clone(),
                        })
                        .collect(),
                    Some("host" | "bridge") => c
                        .port_mappings
                        .iter()
                        .filter(|p| p.host_port != Some(0))
                        .map(|p| NetworkBinding {
                            bind_ip: "127.0.0.1".into(),
                            container_port: p.container_port,
                            host_port: p.host_port.unwrap_or(p.container_port),
                            protocol: p.protocol.clone(),
                        })
                        .collect(),
                    _ => Vec::new(),
                },
                network_interfaces: Vec::new(),
                health_status: c.health_check.as_ref().map(|_| "UNKNOWN".to_string()),
                cpu: o.and_then(|o| o.cpu).unwrap_or(c.cpu).to_string(),
                memory: o.and_then(|o| o.memory).or(c.memory).map(|m| m.to_string()),
                memory_reservation: o
                    .and_then(|o| o.memory_reservation)
                    .or(c.memory_reservation)
                    .map(|m| m.to_string()),
                phases: None,
            }
        })
        .collect();
    Task {
        task_arn,
        cluster_arn: cluster.cluster_arn.clone(),
        task_definition_arn: td.task_definition_arn.clone(),
        // A FARGATE task shows no container instance, as on ECS; the one
        // lending it capacity is kept aside.
        container_instance_arn: (launch.launch_type != "FARGATE").then(|| instance_arn.to_string()),
        host_instance_arn: (launch.launch_type == "FARGATE").then(|| instance_arn.to_string()),
        overrides: launch.overrides.clone(),
        last_status: "PROVISIONING".into(),
        desired_status: "RUNNING".into(),
        cpu: cpu.to_string(),
        memory: memory.to_string(),
        containers,
        started_by: launch.started_by.clone(),
        group: Some(launch.group.clone()),
        launch_type: launch.launch_type.clone(),
        version: 1,
        stop_code: None,
        stopped_reason: None,
        created_at: now(),
        pull_started_at: None,
        pull_stopped_at: None,
        started_at: None,
        stopping_at: None,
        execution_stopped_at: None,
        stopped_at: None,
        attachments: eni_attachment(launch).into_iter().collect(),
        tags: launch.tags.clone(),
        // A task's health is its essential containers' (as the agent
        // reports it): checks on other containers do not make one.
        health_status: td
            .container_definitions
            .iter()
            .any(|c| c.essential && c.health_check.is_some())
            .then(|| "UNKNOWN".to_string()),
        enable_execute_command: launch.enable_execute_command,
        client_token: launch.client_token.clone(),
        network_configuration: launch.network.clone(),
        capacity_provider_name: None,
        platform_version: (launch.launch_type == "FARGATE").then(|| {
            capacity::resolved(launch.platform_version.as_deref().unwrap_or("LATEST")).to_string()
        }),
        platform_family: (launch.launch_type == "FARGATE").then(|| "Linux".to_string()),
        protected_until: None,
        stop_recorded_at: None,
    }
}

/// An awsvpc task's network interface, as ECS shows it before the
/// interface is attached: the agent fills in the address.
pub(crate) fn eni_attachment(launch: &Launch) -> Option<Value> {
    let vpc = launch.network.as_ref()?.awsvpc_configuration.as_ref()?;
    Some(json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "type": "ElasticNetworkInterface",
        "status": "PRECREATED",
        "details": [{"name": "subnetId", "value": vpc.subnets.first()}],
    }))
}

/// Places `count` tasks of `launch` in `cluster` (or one on each instance
/// of `on`): the new tasks, not yet written, and why instances refused.
#[allow(clippy::too_many_arguments)]
pub(crate) fn place_tasks(
    core: &Core,
    state: &State,
    region: &str,
    cluster: &Cluster,
    launch: &Launch,
    count: usize,
    on: Option<&[String]>,
) -> Result<(Vec<Task>, Vec<Failure>), ApiError> {
    // The security groups, by id (none named: the default group).
    let resolved;
    let launch = match launch
        .network
        .as_ref()
        .and_then(|n| n.awsvpc_configuration.as_ref())
    {
        Some(vpc) => {
            let mut l = launch.clone();
            let mut vpc = vpc.clone();
            vpc.security_groups =
                crate::core::security_groups::resolve_groups(state, &vpc.security_groups)?;
            l.network = Some(NetworkConfiguration {
                awsvpc_configuration: Some(vpc),
            });
            resolved = l;
            &resolved
        }
        None => launch,
    };
    let td = &launch.td;
    let (cpu, memory) = task_size(td, &launch.overrides);
    let (tcp, udp) = host_ports(td, public_ip(launch.network.as_ref()));
    let demand = Demand {
        cpu,
        memory,
        slots: td.container_definitions.len() as i64,
        largest_container_memory: largest_container_memory(td, &launch.overrides),
        tcp_ports: tcp,
        udp_ports: udp,
        group: launch.group.clone(),
        required_attributes: td
            .requires_attributes
            .iter()
            .map(|a| a.name.clone())
            .collect(),
    };
    let fargate = launch.launch_type == "FARGATE";
    let mut cands = if fargate {
        fargate_capacity(state)
    } else {
        candidates(state, &cluster.cluster_name)
    };
    let mut failures = Vec::new();
    let chosen: Vec<usize> = match on {
        None if fargate => {
            let mut rng = placement::Rng::from_entropy();
            let p = placement::place(
                &mut cands,
                &demand,
                count,
                &launch.constraints,
                &launch.strategies,
                &mut rng,
            );
            if p.placed.len() < count {
                let mut why: Vec<&str> = p
                    .rejections
                    .iter()
                    .map(|(_, why)| placement::reason(*why))
                    .collect();
                why.dedup();
                // Ports a public address holds are the one shortage worth
                // naming: the rest is Fargate's "no capacity".
                let reason = if why.iter().any(|w| w.starts_with("RESOURCE:PORTS")) {
                    PUBLIC_PORTS_TAKEN.to_string()
                } else {
                    FARGATE_UNAVAILABLE.to_string()
                };
                failures.push(Failure {
                    arn: None,
                    reason,
                    detail: (!why.is_empty()).then(|| why.join(", ")),
                });
            }
            p.placed
        }
        None => {
            if cands.is_empty() {
                return Err(ApiError::invalid_parameter(
                    "No Container Instances were found in your cluster.",
                ));
            }
            let mut rng = core
                .rng
                .lock()
                .map(|r| r.clone())
                .unwrap_or_else(|_| placement::Rng::from_entropy());
            let p = placement::place(
                &mut cands,
                &demand,
                count,
                &launch.constraints,
                &launch.strategies,
                &mut rng,
            );
            if let Ok(mut r) = core.rng.lock() {
                *r = rng;
            }
            for (i, why) in &p.rejections {
                failures.push(Failure {
                    arn: Some(cands[*i].arn.clone()),
                    reason: placement::reason(*why).into(),
                    detail: None,
                });
            }
            p.placed
        }
        Some(instances) => {
            let mut chosen = Vec::new();
            for g in instances {
                let Some(i) = cands.iter().position(|c| name_of(&c.arn) == name_of(g)) else {
                    failures.push(Failure::missing(instance_arn_for(
                        region,
                        &cluster.cluster_name,
                        g,
                    )));
                    continue;
                };
                let mut one = vec![cands[i].clone()];
                let p = placement::place(
                    &mut one,
                    &demand,
                    1,
                    &launch.constraints,
                    &[],
                    &mut placement::Rng::new(1),
                );
                match p.rejections.first() {
                    None => {
                        cands[i] = one.remove(0);
                        chosen.push(i);
                    }
                    Some((_, why)) => failures.push(Failure {
                        arn: Some(cands[i].arn.clone()),
                        reason: placement::reason(*why).into(),
                        detail: None,
                    }),
                }
            }
            chosen
        }
    };
    let mut counts = launch.provider_counts.clone();
    let tasks = chosen
        .iter()
        .map(|i| {
            let mut t = new_task(region, cluster, launch, &cands[*i].arn, cpu, memory);
            if !launch.providers.is_empty() {
                let p = capacity::pick(&launch.providers, &counts).to_string();
                *counts.entry(p.clone()).or_insert(0) += 1;
                t.capacity_provider_name = Some(p);
            }
            t
        })
        .collect();
    Ok((tasks, failures))
}

/// Why a FARGATE task with a public address found no machine: its ports
/// are taken there.
pub(crate) const PUBLIC_PORTS_TAKEN: &str = "RESOURCE:PORTS (assignPublicIp ENABLED publishes the task's ports on its machine's address: another task already holds one of them there; one such task per port per machine)";

/// Why a FARGATE task found no capacity, in ECS's words.
pub(crate) const FARGATE_UNAVAILABLE: &str = "Capacity is unavailable at this time. Please try again later or in a different availability zone";

/// Asks `t` to stop with `code` and `reason` (a stop asked for before
/// keeps its own). A task no agent runs stops at once. Returns the task to
/// write and whether the agent runs it (and must be told once it is
/// written).
pub(crate) fn stop_request(core: &Core, mut t: Task, code: &str, reason: &str) -> (Task, bool) {
    let running_here = core.agents.have(&t);
    if t.desired_status != "STOPPED" {
        t.desired_status = "STOPPED".into();
        t.stop_code = Some(code.into());
        t.stopped_reason = Some(reason.into());
        t.stopping_at = Some(now());
    }
    t.version += 1;
    if !running_here {
        // Nothing runs it: it stops now.
        t.last_status = "STOPPED".into();
        t.execution_stopped_at = Some(now());
        t.stopped_at = Some(now());
        for c in &mut t.containers {
            c.last_status = "STOPPED".into();
        }
    }
    (t, running_here)
}

/// The tags a new task carries: its own (RunTask's), then those
/// propagated from its task definition or service, then ECS's managed
/// tags when asked for; the first of a key wins.
pub(crate) fn task_tags(
    own: &[Tag],
    propagate: Option<&str>,
    td: &TaskDefinition,
    service: Option<(&str, &[Tag])>,
    managed: bool,
    cluster_name: &str,
) -> Vec<Tag> {
    let mut tags: Vec<Tag> = own.to_vec();
    let mut add = |key: &str, value: &str| {
        if !tags.iter().any(|t| t.key == key) {
            tags.push(Tag {
                key: key.to_string(),
                value: value.to_string(),
            });
        }
    };
    match propagate {
        Some("TASK_DEFINITION") => td.tags.iter().for_each(|t| add(&t.key, &t.value)),
        Some("SERVICE") => {
            if let Some((_, service_tags)) = service {
                service_tags.iter().for_each(|t| add(&t.key, &t.value));
            }
        }
        _ => {}
    }
    if managed {
        add("aws:ecs:clusterName", cluster_name);
        if let Some((name, _)) = service {
            add("aws:ecs:serviceName", name);
        }
    }
    tags
}

/// A request's `propagateTags`: `TASK_DEFINITION`, `SERVICE` (services
/// only) or `NONE`.
pub(crate) fn check_propagate_tags(
    given: Option<&str>,
    for_service: bool,
) -> Result<Option<String>, ApiError> {
    match given {
        None => Ok(None),
        Some("TASK_DEFINITION" | "NONE") => Ok(given.map(String::from)),
        Some("SERVICE") if for_service => Ok(given.map(String::from)),
        Some("SERVICE") => Err(ApiError::invalid_parameter(
            "propagateTags SERVICE is only valid for tasks a service starts; RunTask takes TASK_DEFINITION or NONE.",
        )),
        Some(other) => Err(ApiError::invalid_parameter(format!(
            "propagateTags must be TASK_DEFINITION, SERVICE or NONE, not {other}."
        ))),
    }
}

/// Does an awsvpc configuration ask for a public address? Here that is
/// the address of the task's machine: its TCP ports are published there
/// (at the same port numbers), for clients outside skiff's network, and
/// each connection is admitted by the task's security groups' ingress
/// rules as coming from the client's address.
pub(crate) fn public_ip(network: Option<&NetworkConfiguration>) -> bool {
    network
        .and_then(|n| n.awsvpc_configuration.as_ref())
        .and_then(|v| v.assign_public_ip.as_deref())
        == Some("ENABLED")
}
