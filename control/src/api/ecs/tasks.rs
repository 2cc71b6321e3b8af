//! ECS tasks: RunTask, StartTask, StopTask, DescribeTasks, ListTasks.

use crate::api::protocol::json::{
    includes, listed, parse, refuse, required, string_list, to_value,
};
use crate::core::Core;
use crate::core::clusters::active_cluster;
use crate::core::model::{
    Cluster, Failure, NetworkConfiguration, PlacementItem, Tag, Task, TaskOverride, arn,
    check_tags, name_of,
};
use crate::core::services;
use crate::core::state::{State, Write};
use crate::core::taskdef::{self, TaskDefinition};
use crate::core::tasks::{
    Launch, check_launch, check_network_configuration, check_propagate_tags, place_tasks,
    placement_rules, resolve_taskdef, stop_request, task_tags,
};
use crate::error::ApiError;
use serde::Deserialize;
use serde_json::{Value, json};

/// Checks a request's `networkConfiguration` against the task definition's
/// network mode, as ECS does: awsvpc needs one, with subnets; other modes
/// take none.
pub(crate) fn network_configuration(
    body: &Value,
    td: &TaskDefinition,
) -> Result<Option<NetworkConfiguration>, ApiError> {
    let given = parse_network_configuration(body)?;
    check_network_configuration(td, given.as_ref())?;
    Ok(given)
}

/// A request's `networkConfiguration`, if it has one.
pub(crate) fn parse_network_configuration(
    body: &Value,
) -> Result<Option<NetworkConfiguration>, ApiError> {
    match body.get("networkConfiguration") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value::<NetworkConfiguration>(v.clone())
            .map(Some)
            .map_err(|e| ApiError::client(format!("networkConfiguration is invalid: {e}"))),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RunTaskReq {
    cluster: Option<String>,
    task_definition: Option<String>,
    count: Option<i64>,
    launch_type: Option<String>,
    #[serde(default)]
    overrides: TaskOverride,
    #[serde(default)]
    placement_constraints: Vec<PlacementItem>,
    #[serde(default)]
    placement_strategy: Vec<PlacementItem>,
    started_by: Option<String>,
    group: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
    client_token: Option<String>,
    propagate_tags: Option<String>,
    #[serde(default, rename = "enableECSManagedTags")]
    enable_ecs_managed_tags: bool,
    #[serde(default)]
    enable_execute_command: bool,
}

/// Fields of RunTask/StartTask skiff cannot honour yet.
pub(crate) const UNSUPPORTED_RUN_FIELDS: &[&str] = &["volumeConfigurations"];

/// ECS's limit on a task's overrides, in characters of their JSON.
const MAX_OVERRIDES_CHARS: usize = 8192;

pub(crate) fn check_overrides(
    body: &Value,
    td: &TaskDefinition,
    o: &TaskOverride,
) -> Result<(), ApiError> {
    if let Some(Value::Array(cos)) = body.pointer("/overrides/containerOverrides") {
        for co in cos {
            refuse(co, &["environmentFiles", "resourceRequirements"])?;
        }
    }
    if let Some(ov) = body.get("overrides") {
        refuse(ov, &["inferenceAcceleratorOverrides", "ephemeralStorage"])?;
        // ECS's limit, JSON formatting included: every task of the call
        // carries them.
        let size = serde_json::to_string(ov).map_or(0, |s| s.chars().count());
        if size > MAX_OVERRIDES_CHARS {
            return Err(ApiError::invalid_parameter(format!(
                "overrides is {size} characters; at most {MAX_OVERRIDES_CHARS} are allowed (JSON formatting included)."
            )));
        }
    }
    for co in &o.container_overrides {
        if !td.container_definitions.iter().any(|c| c.name == co.name) {
            return Err(ApiError::invalid_parameter(format!(
                "Override for container named {} is not a container in the TaskDefinition.",
                co.name
            )));
        }
    }
    if let Some(c) = &o.cpu {
        taskdef::parse_task_cpu(c).map_err(|e| ApiError::invalid_parameter(e.message))?;
    }
    if let Some(m) = &o.memory {
        taskdef::parse_task_memory(m).map_err(|e| ApiError::invalid_parameter(e.message))?;
    }
    Ok(())
}

pub(crate) fn task_view(t: &Task, with_tags: bool) -> Value {
    let mut v = to_value(t);
    if let Some(o) = v.as_object_mut() {
        o.remove("clientToken");
        o.remove("networkConfiguration");
        o.remove("hostInstanceArn");
        o.remove("protectedUntil");
        o.remove("stopRecordedAt");
        if !with_tags {
            o.remove("tags");
        }
        if let Some(containers) = o.get_mut("containers").and_then(Value::as_array_mut) {
            for c in containers.iter_mut().filter_map(Value::as_object_mut) {
                c.remove("phases");
            }
        }
        o.insert("attributes".into(), phase_attributes(t));
    }
    v
}

/// Where the task's start went, as ECS attributes (`skiff.CONTAINER.PART`
/// for each container's phases, `skiff.stopRecordedAt` for when the
/// control plane recorded it STOPPED): ECS's `Task` has an `attributes`
/// list, so the AWS CLI and SDKs show them as they are.
fn phase_attributes(t: &Task) -> Value {
    let mut out: Vec<Value> = t
        .containers
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.phases.as_ref().map(|p| p.attributes(&c.name, i)))
        .flatten()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    if let Some(at) = t.stop_recorded_at {
        out.push(json!({"name": "skiff.stopRecordedAt", "value": format!("{at:.6}")}));
    }
    Value::Array(out)
}

/// RunTask, or StartTask when `on` names the instances.
pub(crate) async fn run_task(
    core: &Core,
    body: &Value,
    region: &str,
    on: Option<Vec<String>>,
) -> Result<Value, ApiError> {
    refuse(body, UNSUPPORTED_RUN_FIELDS)?;
    let req: RunTaskReq = parse(body)?;
    let given_td = req
        .task_definition
        .as_deref()
        .ok_or_else(|| ApiError::invalid_parameter("taskDefinition is required"))?;
    let count = req.count.unwrap_or(1);
    if on.is_none() && !(1..=10).contains(&count) {
        return Err(ApiError::invalid_parameter(format!(
            "count must be between 1 and 10, not {count}."
        )));
    }
    if let Some(t) = &req.client_token
        && (t.is_empty() || t.len() > 64)
    {
        return Err(ApiError::invalid_parameter(
            "clientToken must be 1 to 64 characters.",
        ));
    }
    check_tags(&req.tags)?;
    if req.started_by.as_deref().is_some_and(|s| s.len() > 128) {
        return Err(ApiError::invalid_parameter(
            "startedBy is at most 128 characters.",
        ));
    }
    if let Some(l) = &req.launch_type {
        check_launch(l, None, false)?;
    }
    let propagate = check_propagate_tags(req.propagate_tags.as_deref(), false)?;
    let (constraints, strategies) =
        placement_rules(&req.placement_constraints, &req.placement_strategy)?;
    if core.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError::server(
            "skiff serve is shutting down: no new tasks start",
        ));
    }
    let mut state = core.state.lock().await;
    // Again under the lock, which shutdown holds while it stops tasks.
    if core.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError::server(
            "skiff serve is shutting down: no new tasks start",
        ));
    }
    if let Some(token) = &req.client_token
        && let Some(ids) = state.client_tokens.get(token)
    {
        // The same request again: the tasks it made, as they are now.
        let tasks: Vec<Value> = ids
            .iter()
            .filter_map(|id| state.tasks.get(id))
            .map(|t| task_view(&t.value, false))
            .collect();
        return Ok(json!({ "tasks": tasks, "failures": [] }));
    }
    let cluster = active_cluster(&state, req.cluster.as_deref())?.clone();
    let choice = super::launch::choose(body, &cluster)?;
    let launch_type = choice.launch_type.clone();
    let td = resolve_taskdef(&state, given_td, true)?;
    check_overrides(body, &td, &req.overrides)?;
    if launch_type == "FARGATE" && (req.overrides.cpu.is_some() || req.overrides.memory.is_some()) {
        // The task's size with its overrides must be one Fargate has.
        let size = |over: &Option<String>, td: &Option<String>| {
            over.as_deref()
                .or(td.as_deref())
                .and_then(|v| v.parse::<u32>().ok())
        };
        crate::core::taskdef::check_fargate_size(
            size(&req.overrides.cpu, &td.cpu),
            size(&req.overrides.memory, &td.memory),
        )?;
    }
    check_launch(
        &launch_type,
        Some(&td),
        !req.placement_constraints.is_empty() || !req.placement_strategy.is_empty(),
    )?;
    let network = network_configuration(body, &td)?;
    let group = req
        .group
        .clone()
        .unwrap_or_else(|| format!("family:{}", td.family));
    if group.len() > 255 {
        return Err(ApiError::invalid_parameter(
            "group is at most 255 characters.",
        ));
    }
    let mut launch = Launch::new(td, constraints, strategies, group)?;
    launch.overrides = req.overrides;
    launch.started_by = req.started_by;
    launch.tags = task_tags(
        &req.tags,
        propagate.as_deref(),
        &launch.td,
        None,
        req.enable_ecs_managed_tags,
        &cluster.cluster_name,
    );
    launch.client_token = req.client_token;
    launch.launch_type = launch_type;
    launch.network = network;
    launch.providers = choice.providers;
    launch.platform_version = choice.platform_version;
    launch.enable_execute_command = req.enable_execute_command;
    let (tasks, failures) = place_tasks(
        core,
        &state,
        region,
        &cluster,
        &launch,
        count as usize,
        on.as_deref(),
    )?;
    let durable = state.stage(
        core.store.as_ref(),
        tasks.iter().cloned().map(Write::Task).collect(),
    )?;
    // (Agents are sent the tasks once they are durable.)
    for t in &tasks {
        core.agents.start(t, &launch.td);
    }
    // Other requests go on while the store writes these tasks (with
    // theirs).
    drop(state);
    durable.wait().await?;
    let views: Vec<Value> = tasks.iter().map(|t| task_view(t, false)).collect();
    Ok(json!({ "tasks": views, "failures": failures }))
}

pub(crate) async fn start_task(core: &Core, body: &Value, region: &str) -> Result<Value, ApiError> {
    let instances = string_list(body, "containerInstances")?;
    if instances.is_empty() || instances.len() > 10 {
        return Err(ApiError::invalid_parameter(
            "containerInstances must name 1 to 10 container instances.",
        ));
    }
    if body.get("count").is_some() || body.get("launchType").is_some() {
        return Err(ApiError::invalid_parameter(
            "StartTask takes containerInstances, not count or launchType.",
        ));
    }
    run_task(core, body, region, Some(instances)).await
}

pub(crate) fn find_task<'a>(state: &'a State, cluster: &Cluster, given: &str) -> Option<&'a Task> {
    state
        .tasks
        .get(name_of(given))
        .map(|t| &t.value)
        .filter(|t| t.cluster_arn == cluster.cluster_arn)
}

pub(crate) async fn stop_task(core: &Core, body: &Value) -> Result<Value, ApiError> {
    let given = required(body, "task")?;
    let reason = body.get("reason").and_then(Value::as_str);
    if reason.is_some_and(|r| r.len() > 255) {
        return Err(ApiError::invalid_parameter(
            "reason is at most 255 characters.",
        ));
    }
    let mut state = core.state.lock().await;
    let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?.clone();
    let task = find_task(&state, &cluster, given)
        .cloned()
        .ok_or_else(|| ApiError::invalid_parameter("The referenced task was not found."))?;
    let running_here = core.agents.have(&task);
    // Already stopped, or stopping on the agent: nothing more to do. A task
    // no agent runs (lost with a previous process) is stopped below, even
    // if a stop was asked for before.
    if task.last_status == "STOPPED" || (task.desired_status == "STOPPED" && running_here) {
        return Ok(json!({ "task": task_view(&task, false) }));
    }
    let (t, running_here) = stop_request(
        core,
        task,
        "UserInitiated",
        reason.unwrap_or("Task stopped by user"),
    );
    // Behind a load balancer, the task leaves its target groups first and
    // drains, as when its service stops it.
    let deregistered = crate::core::services::deregister_task(&state, t.id());
    let mut writes = vec![Write::Task(t.clone())];
    let mut draining = Vec::new();
    if let Some(d) = deregistered {
        writes.extend(d.writes);
        draining = d.targets;
    }
    let durable = state.stage(core.store.as_ref(), writes)?;
    if !draining.is_empty() {
        core.elb.sync(&state.elb);
    }
    if running_here {
        crate::core::services::stop_after_draining(core, &t, draining);
    }
    drop(state);
    durable.wait().await?;
    // A service replaces its stopped task.
    if let Some(key) = crate::core::state::service_of(&t) {
        core.wake.service(key);
    }
    Ok(json!({ "task": task_view(&t, false) }))
}

pub(crate) async fn describe_tasks(
    core: &Core,
    body: &Value,
    region: &str,
) -> Result<Value, ApiError> {
    let given = string_list(body, "tasks")?;
    if given.is_empty() || given.len() > 100 {
        return Err(ApiError::invalid_parameter(
            "tasks must name 1 to 100 tasks.",
        ));
    }
    let state = core.state.lock().await;
    let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?;
    let mut tasks = Vec::new();
    let mut failures = Vec::new();
    for g in given {
        match find_task(&state, cluster, &g) {
            Some(t) => tasks.push(task_view(t, includes(body, "TAGS"))),
            None => failures.push(Failure::missing(if g.starts_with("arn:") {
                g.clone()
            } else {
                arn("ecs", region, &format!("task/{}/{g}", cluster.cluster_name))
            })),
        }
    }
    Ok(json!({ "tasks": tasks, "failures": failures }))
}

pub(crate) async fn list_tasks(core: &Core, body: &Value) -> Result<Value, ApiError> {
    let state = core.state.lock().await;
    let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?;
    let s = |f: &str| {
        body.get(f)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    let desired = s("desiredStatus").unwrap_or("RUNNING");
    if !matches!(desired, "RUNNING" | "PENDING" | "STOPPED") {
        return Err(ApiError::invalid_parameter(
            "desiredStatus must be RUNNING, PENDING or STOPPED.",
        ));
    }
    if s("family").is_some() && s("serviceName").is_some() {
        return Err(ApiError::invalid_parameter(
            "family and serviceName cannot both be given.",
        ));
    }
    // A filter naming nothing is an error, as on ECS, not an empty list: a
    // script's typo would otherwise read as "no tasks".
    if let Some(n) = s("serviceName")
        && crate::api::ecs::find_service(&state, &cluster.cluster_name, n).is_none()
    {
        return Err(crate::api::ecs::services::service_not_found());
    }
    let instance = s("containerInstance").map(|i| name_of(i).to_string());
    if let Some(i) = instance.as_deref()
        && crate::core::instances::find_instance(&state, &cluster.cluster_name, i).is_none()
    {
        return Err(ApiError::invalid_parameter(format!(
            "containerInstance {i} is not a container instance of cluster {}.",
            cluster.cluster_name
        )));
    }
    let mut tasks: Vec<&Task> = state
        .tasks
        .values()
        .map(|t| &t.value)
        .filter(|t| t.cluster_arn == cluster.cluster_arn)
        // No task ever has desired status PENDING: that filter lists none.
        .filter(|t| t.desired_status == desired)
        .filter(|t| {
            s("family").is_none_or(|f| name_of(&t.task_definition_arn).split(':').next() == Some(f))
        })
        .filter(|t| s("startedBy").is_none_or(|b| t.started_by.as_deref() == Some(b)))
        .filter(|t| {
            s("serviceName").is_none_or(|n| {
                services::belongs(t, &cluster.cluster_arn, &format!("service:{}", name_of(n)))
            })
        })
        .filter(|t| s("launchType").is_none_or(|l| t.launch_type == l))
        .filter(|t| {
            instance
                .as_deref()
                .is_none_or(|i| t.container_instance_arn.as_deref().map(name_of) == Some(i))
        })
        .collect();
    tasks.sort_by(|a, b| a.created_at.total_cmp(&b.created_at));
    let arns: Vec<String> = tasks.iter().map(|t| t.task_arn.clone()).collect();
    listed(body, "taskArns", arns)
}
