//! The ECS operations: clusters, container instances, attributes, task
//! definitions, tasks and tags, each with the request and response fields
//! the AWS CLI and SDKs use.

use crate::error::ApiError;
use crate::model::{
    Cluster, Container, ContainerInstance, Failure, KeyValue, NetworkBinding, NetworkConfiguration,
    PlacementItem, Resource, Tag, Task, TaskOverride, arn, check_tags, merge_tags, name_of, new_id,
    now, state_rank,
};
use crate::placement::{self, Candidate, Constraint, Demand, Strategy};
use crate::services::{self, Service};
use crate::state::{State, Write};
use crate::taskdef::{self, Attribute, TaskDefinition};
use crate::{Inner, LOCAL_INSTANCE_ID};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use skiff_channel::messages::{
    ContainerChange, ContainerStatus, FromAgent, TaskStateChange, TaskStatus,
};
use std::collections::{BTreeMap, HashMap};

pub(crate) fn parse<T: DeserializeOwned>(body: &Value) -> Result<T, ApiError> {
    serde_json::from_value(body.clone())
        .map_err(|e| ApiError::serialization(format!("malformed request: {e}")))
}

pub(crate) fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Pages `items` with an opaque token (an offset).
pub(crate) fn page<T>(
    items: Vec<T>,
    token: Option<&str>,
    max: Option<i64>,
    limit: i64,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let start = match token {
        None | Some("") => 0,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| ApiError::invalid_parameter("The nextToken is invalid."))?,
    };
    let max = match max {
        None => limit as usize,
        Some(m) if (1..=limit).contains(&m) => m as usize,
        Some(m) => {
            return Err(ApiError::invalid_parameter(format!(
                "maxResults must be between 1 and {limit}, not {m}."
            )));
        }
    };
    let total = items.len();
    let out: Vec<T> = items.into_iter().skip(start).take(max).collect();
    let next = (start + out.len() < total).then(|| (start + out.len()).to_string());
    Ok((out, next))
}

/// A task definition as ECS shows it (its tags travel beside it).
fn taskdef_view(td: &TaskDefinition) -> Value {
    let mut v = to_value(td);
    if let Some(o) = v.as_object_mut() {
        o.remove("tags");
    }
    v
}

/// A List operation's answer: one page of `items` under `key`, as the
/// request's `nextToken` and `maxResults` (up to 100) ask, and the next
/// token when more remain.
pub(crate) fn listed<T: serde::Serialize>(
    body: &Value,
    key: &str,
    items: Vec<T>,
) -> Result<Value, ApiError> {
    listed_up_to(body, key, items, 100)
}

/// `listed` with another largest page (ECR's is 1000).
pub(crate) fn listed_up_to<T: serde::Serialize>(
    body: &Value,
    key: &str,
    items: Vec<T>,
    limit: i64,
) -> Result<Value, ApiError> {
    let (items, next) = page(
        items,
        body.get("nextToken").and_then(Value::as_str),
        body.get("maxResults").and_then(Value::as_i64),
        limit,
    )?;
    let mut v = json!({ key: items });
    if let Some(n) = next {
        v["nextToken"] = json!(n);
    }
    Ok(v)
}

/// A required string field of the request.
pub(crate) fn required<'a>(body: &'a Value, field: &str) -> Result<&'a str, ApiError> {
    body.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid_parameter(format!("{field} is required")))
}

pub(crate) fn new_cluster(name: &str, region: &str, tags: Vec<Tag>) -> Cluster {
    Cluster {
        cluster_arn: arn("ecs", region, &format!("cluster/{name}")),
        cluster_name: name.to_string(),
        status: "ACTIVE".into(),
        tags,
        settings: vec![KeyValue {
            name: "containerInsights".into(),
            value: "disabled".into(),
        }],
        created_at: now(),
    }
}

pub(crate) fn local_instance(
    existing: Option<ContainerInstance>,
    region: &str,
    cluster: &str,
    cpu: u32,
    memory: u32,
    reserved_ports: &[u16],
) -> ContainerInstance {
    let registered = vec![
        Resource::integer("CPU", i64::from(cpu)),
        Resource::integer("MEMORY", i64::from(memory)),
        Resource::ports("PORTS", reserved_ports),
        Resource::ports("PORTS_UDP", &[]),
    ];
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
    match existing {
        Some(mut i) => {
            // Keep custom attributes (PutAttributes); refresh the agent's.
            for a in i.attributes.drain(..) {
                if !attributes.iter().any(|x| x.name == a.name) {
                    attributes.push(a);
                }
            }
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
            }
        }
    }
}

/// The definition a task was started from.
pub(crate) fn taskdef_of(state: &State, task_definition_arn: &str) -> Option<TaskDefinition> {
    let (family, rev) = name_of(task_definition_arn).split_once(':')?;
    state
        .taskdefs
        .get(family)?
        .get(&rev.parse().ok()?)
        .map(|e| e.value.clone())
}

fn cluster_name(given: Option<&str>) -> &str {
    name_of(given.filter(|c| !c.is_empty()).unwrap_or("default"))
}

pub(crate) fn active_cluster<'a>(
    state: &'a State,
    given: Option<&str>,
) -> Result<&'a Cluster, ApiError> {
    state
        .clusters
        .get(cluster_name(given))
        .map(|e| &e.value)
        .filter(|c| c.status == "ACTIVE")
        .ok_or_else(ApiError::cluster_not_found)
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
    let not_found = || ApiError::client("Unable to describe task definition.");
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

/// Refuses a request body that is not a JSON object (AWS JSON 1.1 bodies
/// always are).
pub(crate) fn json_object(body: &Value) -> Result<(), ApiError> {
    if body.is_object() {
        Ok(())
    } else {
        Err(ApiError::serialization(
            "the request body must be a JSON object",
        ))
    }
}

/// Dispatches one ECS operation.
pub(crate) async fn handle(
    inner: &Inner,
    op: &str,
    body: &Value,
    region: &str,
) -> Result<Value, ApiError> {
    json_object(body)?;
    match op {
        "CreateCluster" => create_cluster(inner, body, region).await,
        "DescribeClusters" => describe_clusters(inner, body).await,
        "ListClusters" => list_clusters(inner, body).await,
        "DeleteCluster" => delete_cluster(inner, body).await,
        "ListContainerInstances" => list_instances(inner, body).await,
        "DescribeContainerInstances" => describe_instances(inner, body, region).await,
        "UpdateContainerInstancesState" => update_instances_state(inner, body, region).await,
        "RegisterContainerInstance" => register_instance(inner, body, region).await,
        "DeregisterContainerInstance" => deregister_instance(inner, body, region).await,
        "PutAttributes" => put_attributes(inner, body, false).await,
        "DeleteAttributes" => put_attributes(inner, body, true).await,
        "ListAttributes" => list_attributes(inner, body).await,
        "RegisterTaskDefinition" => register_taskdef(inner, body, region).await,
        "DescribeTaskDefinition" => describe_taskdef(inner, body).await,
        "ListTaskDefinitions" => list_taskdefs(inner, body).await,
        "ListTaskDefinitionFamilies" => list_families(inner, body).await,
        "DeregisterTaskDefinition" => deregister_taskdef(inner, body).await,
        "DeleteTaskDefinitions" => delete_taskdefs(inner, body, region).await,
        "RunTask" => run_task(inner, body, region, None).await,
        "StartTask" => start_task(inner, body, region).await,
        "StopTask" => stop_task(inner, body).await,
        "DescribeTasks" => describe_tasks(inner, body, region).await,
        "ListTasks" => list_tasks(inner, body).await,
        "CreateService" => services::create_service(inner, body, region).await,
        "UpdateService" => services::update_service(inner, body).await,
        "DeleteService" => services::delete_service(inner, body).await,
        "DescribeServices" => services::describe_services(inner, body, region).await,
        "ListServices" => services::list_services(inner, body).await,
        "TagResource" => tag_resource(inner, body, false).await,
        "UntagResource" => tag_resource(inner, body, true).await,
        "ListTagsForResource" => list_tags(inner, body).await,
        other => Err(ApiError::unknown_operation(&format!(
            "AmazonEC2ContainerServiceV20141113.{other}"
        ))),
    }
}

pub(crate) fn includes(body: &Value, what: &str) -> bool {
    body.get("include")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(what)))
}

/// Refuses request fields ECS defines that skiff cannot honour yet.
pub(crate) fn refuse(body: &Value, fields: &[&str]) -> Result<(), ApiError> {
    for f in fields {
        match body.get(*f) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(Value::Array(a)) if a.is_empty() => {}
            Some(Value::Object(o)) if o.is_empty() => {}
            Some(v) => {
                return Err(ApiError::invalid_parameter(format!(
                    "{f} is not supported by skiff (given {v}); remove it"
                )));
            }
        }
    }
    Ok(())
}

// ---- clusters ------------------------------------------------------------

fn cluster_view(state: &State, c: &Cluster, with_tags: bool, with_settings: bool) -> Value {
    let arn = &c.cluster_arn;
    let tasks = state
        .tasks
        .values()
        .map(|t| &t.value)
        .filter(|t| &t.cluster_arn == arn && t.last_status != "STOPPED");
    let (mut running, mut pending) = (0, 0);
    for t in tasks {
        if t.last_status == "RUNNING" {
            running += 1;
        } else if is_pending(t) {
            pending += 1;
        }
    }
    let instances = state
        .instances
        .values()
        .filter(|i| i.value.cluster == c.cluster_name && i.value.status != "INACTIVE")
        .count();
    let mut v = json!({
        "clusterArn": c.cluster_arn,
        "clusterName": c.cluster_name,
        "status": c.status,
        "registeredContainerInstancesCount": if c.status == "ACTIVE" { instances } else { 0 },
        "runningTasksCount": running,
        "pendingTasksCount": pending,
        "activeServicesCount": services::active_services(state, &c.cluster_arn),
        "statistics": [],
        "capacityProviders": [],
        "defaultCapacityProviderStrategy": [],
    });
    if with_tags {
        v["tags"] = to_value(&c.tags);
    }
    if with_settings {
        v["settings"] = to_value(&c.settings);
    }
    v
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateClusterReq {
    cluster_name: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(default)]
    settings: Vec<KeyValue>,
}

/// ECS's rule for cluster names.
pub(crate) fn check_cluster_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty()
        || name.len() > 255
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ApiError::invalid_parameter(format!(
            "Cluster name {name:?} is invalid: up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed."
        )));
    }
    Ok(())
}

async fn create_cluster(inner: &Inner, body: &Value, region: &str) -> Result<Value, ApiError> {
    refuse(
        body,
        &[
            "configuration",
            "capacityProviders",
            "defaultCapacityProviderStrategy",
            "serviceConnectDefaults",
        ],
    )?;
    let req: CreateClusterReq = parse(body)?;
    let name = req.cluster_name.unwrap_or_else(|| "default".into());
    check_cluster_name(&name)?;
    check_tags(&req.tags)?;
    for s in &req.settings {
        if s.name != "containerInsights"
            || !matches!(s.value.as_str(), "enabled" | "disabled" | "enhanced")
        {
            return Err(ApiError::invalid_parameter(format!(
                "Cluster setting {}={} is invalid: only containerInsights (enabled, disabled, enhanced) exists.",
                s.name, s.value
            )));
        }
        if s.value != "disabled" {
            return Err(ApiError::invalid_parameter(
                "containerInsights is not supported by skiff: set it to disabled",
            ));
        }
    }
    let mut state = inner.state.lock().await;
    if let Some(c) = state
        .clusters
        .get(&name)
        .filter(|c| c.value.status == "ACTIVE")
    {
        // Creating an existing cluster returns it, as ECS does.
        return Ok(json!({ "cluster": cluster_view(&state, &c.value, true, true) }));
    }
    let cluster = new_cluster(&name, region, req.tags);
    state
        .apply(inner.store.as_ref(), vec![Write::Cluster(cluster.clone())])
        .await?;
    Ok(json!({ "cluster": cluster_view(&state, &cluster, true, true) }))
}

async fn describe_clusters(inner: &Inner, body: &Value) -> Result<Value, ApiError> {
    let names: Vec<String> = match body.get("clusters") {
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        _ => vec!["default".into()],
    };
    if names.len() > 100 {
        return Err(ApiError::invalid_parameter(
            "At most 100 clusters can be described at once.",
        ));
    }
    let state = inner.state.lock().await;
    let mut clusters = Vec::new();
    let mut failures = Vec::new();
    for n in names {
        match state.clusters.get(name_of(&n)) {
            Some(c) => clusters.push(cluster_view(
                &state,
                &c.value,
                includes(body, "TAGS"),
                includes(body, "SETTINGS"),
            )),
            None => failures.push(Failure::missing(if n.starts_with("arn:") {
                n.clone()
            } else {
                arn("ecs", &inner.config.region, &format!("cluster/{n}"))
            })),
        }
    }
    Ok(json!({ "clusters": clusters, "failures": failures }))
}

async fn list_clusters(inner: &Inner, body: &Value) -> Result<Value, ApiError> {
    let state = inner.state.lock().await;
    let arns: Vec<String> = state
        .clusters
        .values()
        .filter(|c| c.value.status == "ACTIVE")
        .map(|c| c.value.cluster_arn.clone())
        .collect();
    listed(body, "clusterArns", arns)
}

async fn delete_cluster(inner: &Inner, body: &Value) -> Result<Value, ApiError> {
    let given = required(body, "cluster")?;
    let mut state = inner.state.lock().await;
    let cluster = active_cluster(&state, Some(given))?.clone();
    if state
        .instances
        .values()
        .any(|i| i.value.cluster == cluster.cluster_name && i.value.status != "INACTIVE")
    {
        return Err(ApiError::cluster_contains(
            "ClusterContainsContainerInstancesException",
            "The Cluster cannot be deleted while Container Instances are active or draining.",
        ));
    }
    if services::has_services(&state, &cluster.cluster_arn) {
        return Err(ApiError::cluster_contains(
            "ClusterContainsServicesException",
            "The Cluster cannot be deleted while Services are active.",
        ));
    }
    if state
        .tasks
        .values()
        .any(|t| t.value.cluster_arn == cluster.cluster_arn && t.value.last_status != "STOPPED")
    {
        return Err(ApiError::cluster_contains(
            "ClusterContainsTasksException",
            "The Cluster cannot be deleted while Tasks are active.",
        ));
    }
    let mut c = cluster;
    c.status = "INACTIVE".into();
    state
        .apply(inner.store.as_ref(), vec![Write::Cluster(c.clone())])
        .await?;
    Ok(json!({ "cluster": cluster_view(&state, &c, false, false) }))
}

// ---- container instances -------------------------------------------------

/// A task not yet RUNNING (PROVISIONING, PENDING or ACTIVATING).
fn is_pending(t: &Task) -> bool {
    state_rank(&t.last_status) < state_rank("RUNNING")
}

/// What the tasks on one container instance that are not STOPPED use:
/// placement and DescribeContainerInstances both see this.
#[derive(Debug, Default)]
struct Usage {
    cpu: i64,
    memory: i64,
    tcp: Vec<u16>,
    udp: Vec<u16>,
    running: u32,
    pending: u32,
    /// Tasks by task group.
    groups: HashMap<String, u32>,
}

/// Every instance's usage, by instance ARN, in one pass over the tasks.
/// A FARGATE task uses the cpu and memory of the instance lending it
/// capacity, but is not one of its tasks (ECS shows it on none).
fn usage_by_instance(state: &State) -> HashMap<&str, Usage> {
    let mut all: HashMap<&str, Usage> = HashMap::new();
    for t in state.tasks.values().map(|t| &t.value) {
        let Some(arn) = t.runs_on() else {
            continue;
        };
        if t.last_status == "STOPPED" {
            continue;
        }
        let u = all.entry(arn).or_default();
        u.cpu += t.cpu.parse::<i64>().unwrap_or(0);
        u.memory += t.memory.parse::<i64>().unwrap_or(0);
        if t.container_instance_arn.is_none() {
            continue;
        }
        for b in t.containers.iter().flat_map(|c| &c.network_bindings) {
            if b.protocol == "udp" {
                u.udp.push(b.host_port);
            } else {
                u.tcp.push(b.host_port);
            }
        }
        if t.last_status == "RUNNING" {
            u.running += 1;
        } else if is_pending(t) {
            u.pending += 1;
        }
        *u.groups
            .entry(t.group.clone().unwrap_or_default())
            .or_default() += 1;
    }
    all
}

fn instance_view(i: &ContainerInstance, usage: Option<&Usage>, with_tags: bool) -> Value {
    let none = Usage::default();
    let u = usage.unwrap_or(&none);
    let mut remaining = i.registered_resources.clone();
    for r in &mut remaining {
        match r.name.as_str() {
            "CPU" => r.integer_value -= u.cpu,
            "MEMORY" => r.integer_value -= u.memory,
            "PORTS" | "PORTS_UDP" => {
                let used = if r.name == "PORTS" { &u.tcp } else { &u.udp };
                let set = r.string_set_value.get_or_insert_with(Vec::new);
                set.extend(used.iter().map(|p| p.to_string()));
            }
            _ => {}
        }
    }
    let mut v = to_value(i);
    if let Some(o) = v.as_object_mut() {
        o.remove("cluster");
        o.remove("deregisteredAt");
        o.remove("offersFargate");
    }
    v["remainingResources"] = to_value(&remaining);
    v["runningTasksCount"] = json!(u.running);
    v["pendingTasksCount"] = json!(u.pending);
    if !with_tags && let Some(o) = v.as_object_mut() {
        o.remove("tags");
    }
    v
}

fn find_instance<'a>(
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
fn candidates(state: &State, cluster: &str) -> Vec<Candidate> {
    let usage = usage_by_instance(state);
    state
        .instances
        .values()
        .map(|e| &e.value)
        .filter(|i| i.cluster == cluster && i.status != "INACTIVE")
        .map(|i| candidate(i, usage.get(i.container_instance_arn.as_str())))
        .collect()
}

fn candidate(i: &ContainerInstance, usage: Option<&Usage>) -> Candidate {
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
        used_tcp: u.tcp.iter().copied().chain(reserved).collect(),
        used_udp: u.udp.iter().copied().collect(),
        groups: u.groups.clone(),
    }
}

async fn list_instances(inner: &Inner, body: &Value) -> Result<Value, ApiError> {
    let state = inner.state.lock().await;
    let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?;
    let filter = match body
        .get("filter")
        .and_then(Value::as_str)
        .filter(|f| !f.is_empty())
    {
        Some(f) => Some(placement::Expression::parse(f).map_err(|e| {
            ApiError::invalid_parameter(format!("Invalid filter expression {f:?}: {e}"))
        })?),
        None => None,
    };
    let status = body.get("status").and_then(Value::as_str);
    if let Some(s) = status
        && !matches!(
            s,
            "ACTIVE" | "DRAINING" | "REGISTERING" | "DEREGISTERING" | "REGISTRATION_FAILED"
        )
    {
        return Err(ApiError::invalid_parameter(format!(
            "status {s:?} is invalid: expected ACTIVE, DRAINING, REGISTERING, DEREGISTERING or REGISTRATION_FAILED"
        )));
    }
    let usage = usage_by_instance(&state);
    let arns: Vec<String> = state
        .instances
        .values()
        .map(|e| &e.value)
        .filter(|i| i.cluster == cluster.cluster_name)
        .filter(|i| match status {
            Some(s) => i.status == s,
            None => i.status != "INACTIVE",
        })
        .filter(|i| {
            filter.as_ref().is_none_or(|f| {
                f.matches(&candidate(i, usage.get(i.container_instance_arn.as_str())))
            })
        })
        .map(|i| i.container_instance_arn.clone())
        .collect();
    listed(body, "containerInstanceArns", arns)
}

pub(crate) fn string_list(body: &Value, field: &str) -> Result<Vec<String>, ApiError> {
    match body.get(field) {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str().map(String::from).ok_or_else(|| {
                    ApiError::serialization(format!("{field} must be a list of strings"))
                })
            })
            .collect(),
        None | Some(Value::Null) => Ok(Vec::new()),
        _ => Err(ApiError::serialization(format!(
            "{field} must be a list of strings"
        ))),
    }
}

fn instance_arn_for(region: &str, cluster: &str, given: &str) -> String {
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

async fn describe_instances(inner: &Inner, body: &Value, region: &str) -> Result<Value, ApiError> {
    let given = string_list(body, "containerInstances")?;
    if given.is_empty() || given.len() > 100 {
        return Err(ApiError::invalid_parameter(
            "containerInstances must name 1 to 100 container instances.",
        ));
    }
    let state = inner.state.lock().await;
    let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?;
    let usage = usage_by_instance(&state);
    let mut found = Vec::new();
    let mut failures = Vec::new();
    for g in given {
        match find_instance(&state, &cluster.cluster_name, &g) {
            Some(i) => found.push(instance_view(
                i,
                usage.get(i.container_instance_arn.as_str()),
                includes(body, "TAGS"),
            )),
            None => failures.push(Failure::missing(instance_arn_for(
                region,
                &cluster.cluster_name,
                &g,
            ))),
        }
    }
    Ok(json!({ "containerInstances": found, "failures": failures }))
}

async fn update_instances_state(
    inner: &Inner,
    body: &Value,
    region: &str,
) -> Result<Value, ApiError> {
    let given = string_list(body, "containerInstances")?;
    let status = body.get("status").and_then(Value::as_str).unwrap_or("");
    if !matches!(status, "ACTIVE" | "DRAINING") {
        return Err(ApiError::invalid_parameter(format!(
            "status must be ACTIVE or DRAINING, not {status:?}"
        )));
    }
    if given.is_empty() || given.len() > 10 {
        return Err(ApiError::invalid_parameter(
            "containerInstances must name 1 to 10 container instances.",
        ));
    }
    let mut state = inner.state.lock().await;
    let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?
        .cluster_name
        .clone();
    let mut writes = Vec::new();
    let mut failures = Vec::new();
    for g in &given {
        match find_instance(&state, &cluster, g) {
            Some(i) => {
                let mut i = i.clone();
                if i.status != status {
                    i.status = status.into();
                    i.version += 1;
                }
                writes.push(Write::Instance(i));
            }
            None => failures.push(Failure::missing(instance_arn_for(region, &cluster, g))),
        }
    }
    let arns: Vec<String> = writes
        .iter()
        .filter_map(|w| match w {
            Write::Instance(i) => Some(i.container_instance_arn.clone()),
            _ => None,
        })
        .collect();
    state.apply(inner.store.as_ref(), writes).await?;
    // Services move their tasks off draining instances.
    inner.wake.notify_one();
    let usage = usage_by_instance(&state);
    let views: Vec<Value> = arns
        .iter()
        .filter_map(|a| state.instances.get(a))
        .map(|i| {
            instance_view(
                &i.value,
                usage.get(i.value.container_instance_arn.as_str()),
                false,
            )
        })
        .collect();
    Ok(json!({ "containerInstances": views, "failures": failures }))
}

/// RegisterContainerInstance: records an instance and its resources. skiff
/// has no remote agent yet, so an instance registered through the API has
/// no agent connected: it is listed, described and counted, and placement
/// passes it over with ECS's `AGENT` reason until an agent can serve it.
async fn register_instance(inner: &Inner, body: &Value, region: &str) -> Result<Value, ApiError> {
    refuse(body, &["platformDevices"])?;
    let tags: Vec<Tag> = match body.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => parse(v)?,
    };
    check_tags(&tags)?;
    let attributes: Vec<Attribute> = match body.get("attributes") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => parse(v)?,
    };
    let resources: Vec<Resource> = match body.get("totalResources") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => parse(v)?,
    };
    let integer = |name: &str| {
        resources
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.integer_value)
            .unwrap_or(0)
    };
    let (cpu, memory) = (integer("CPU"), integer("MEMORY"));
    if cpu < 0 || memory < 0 {
        return Err(ApiError::invalid_parameter(
            "totalResources CPU and MEMORY cannot be negative.",
        ));
    }
    let ports = |name: &str| -> Result<Vec<u16>, ApiError> {
        resources
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| r.string_set_value.clone())
            .unwrap_or_default()
            .iter()
            .map(|p| {
                p.parse::<u16>().map_err(|_| {
                    ApiError::invalid_parameter(format!("{name} holds {p:?}, which is not a port"))
                })
            })
            .collect()
    };
    let registered = vec![
        Resource::integer("CPU", cpu),
        Resource::integer("MEMORY", memory),
        Resource::ports("PORTS", &ports("PORTS")?),
        Resource::ports("PORTS_UDP", &ports("PORTS_UDP")?),
    ];
    // The EC2 instance id from the identity document, as the ECS agent
    // sends it; otherwise one is made up.
    let document: Option<Value> = body
        .get("instanceIdentityDocument")
        .and_then(Value::as_str)
        .map(|d| {
            serde_json::from_str(d).map_err(|e| {
                ApiError::invalid_parameter(format!(
                    "instanceIdentityDocument is not a JSON document: {e}"
                ))
            })
        })
        .transpose()?;
    let ec2_id = document
        .as_ref()
        .and_then(|d| d["instanceId"].as_str())
        .map(String::from)
        .unwrap_or_else(|| format!("i-{}", &new_id()[..17]));
    if ec2_id == LOCAL_INSTANCE_ID {
        return Err(ApiError::invalid_parameter(format!(
            "{LOCAL_INSTANCE_ID} is skiff serve's own instance; register another id"
        )));
    }
    let mut state = inner.state.lock().await;
    let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?.clone();
    // An instance belongs to one cluster at a time, as on ECS.
    if let Some(elsewhere) = state.instances.values().map(|e| &e.value).find(|i| {
        i.cluster != cluster.cluster_name
            && i.status != "INACTIVE"
            && i.ec2_instance_id.as_deref() == Some(ec2_id.as_str())
    }) {
        return Err(ApiError::invalid_parameter(format!(
            "Instance {ec2_id} is registered in cluster {}: deregister it there first.",
            elsewhere.cluster
        )));
    }
    // Re-registering (by containerInstanceArn, or the same EC2 instance)
    // updates its record.
    let existing = match body.get("containerInstanceArn").and_then(Value::as_str) {
        Some(given) => {
            let found = find_instance(&state, &cluster.cluster_name, given)
                .filter(|i| i.status != "INACTIVE")
                .cloned()
                .ok_or_else(|| {
                    ApiError::invalid_parameter(format!(
                        "The referenced container instance {given} was not found."
                    ))
                })?;
            if found.container_instance_arn == inner.agents.local {
                return Err(ApiError::invalid_parameter(
                    "This is skiff serve's own container instance: it registers itself.",
                ));
            }
            Some(found)
        }
        None => state
            .instances
            .values()
            .map(|e| &e.value)
            .find(|i| {
                i.cluster == cluster.cluster_name
                    && i.status != "INACTIVE"
                    && i.ec2_instance_id.as_deref() == Some(ec2_id.as_str())
            })
            .cloned(),
    };
    let instance = match existing {
        Some(mut i) => {
            i.registered_resources = registered.clone();
            i.remaining_resources = registered;
            merge_attributes(&mut i.attributes, attributes);
            merge_tags(&mut i.tags, &tags);
            if let Some(v) = body.get("versionInfo").filter(|v| !v.is_null()) {
                i.version_info = v.clone();
            }
            i.version += 1;
            i
        }
        None => {
            let id = new_id();
            let mut all = vec![Attribute {
                name: "ecs.availability-zone".into(),
                value: Some(format!("{region}a")),
                target_type: None,
                target_id: None,
            }];
            merge_attributes(&mut all, attributes);
            ContainerInstance {
                container_instance_arn: arn(
                    "ecs",
                    region,
                    &format!("container-instance/{}/{id}", cluster.cluster_name),
                ),
                ec2_instance_id: Some(ec2_id),
                version: 1,
                version_info: body.get("versionInfo").cloned().unwrap_or(json!({})),
                status: "ACTIVE".into(),
                agent_connected: false,
                registered_resources: registered.clone(),
                remaining_resources: registered,
                running_tasks_count: 0,
                pending_tasks_count: 0,
                attributes: all,
                registered_at: now(),
                tags,
                cluster: cluster.cluster_name.clone(),
                deregistered_at: None,
                offers_fargate: false,
            }
        }
    };
    state
        .apply(
            inner.store.as_ref(),
            vec![Write::Instance(instance.clone())],
        )
        .await?;
    Ok(json!({ "containerInstance": instance_view(&instance, None, true) }))
}

fn merge_attributes(into: &mut Vec<Attribute>, new: Vec<Attribute>) {
    for mut a in new {
        a.target_type = None;
        a.target_id = None;
        into.retain(|x| x.name != a.name);
        into.push(a);
    }
}

/// DeregisterContainerInstance: the instance becomes INACTIVE. One with
/// tasks still running needs `force` (they are orphaned, as on ECS); the
/// local instance is skiff serve's own and stays.
async fn deregister_instance(inner: &Inner, body: &Value, region: &str) -> Result<Value, ApiError> {
    let given = required(body, "containerInstance")?;
    let force = body.get("force").and_then(Value::as_bool).unwrap_or(false);
    let mut state = inner.state.lock().await;
    let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?.clone();
    let Some(mut instance) = find_instance(&state, &cluster.cluster_name, given).cloned() else {
        return Err(ApiError::invalid_parameter(format!(
            "The referenced container instance {} was not found.",
            instance_arn_for(region, &cluster.cluster_name, given)
        )));
    };
    if instance.container_instance_arn == inner.agents.local {
        return Err(ApiError::invalid_parameter(
            "This is skiff serve's own container instance: it leaves when skiff serve stops.",
        ));
    }
    let busy = state.tasks.values().any(|t| {
        t.value.container_instance_arn.as_deref() == Some(&instance.container_instance_arn)
            && t.value.last_status != "STOPPED"
    });
    if busy && !force {
        return Err(ApiError::invalid_parameter(
            "The container instance has tasks that are not stopped: stop them first, or deregister with force.",
        ));
    }
    if instance.status != "INACTIVE" {
        instance.status = "INACTIVE".into();
        instance.agent_connected = false;
        instance.deregistered_at = Some(now());
        instance.version += 1;
        state
            .apply(
                inner.store.as_ref(),
                vec![Write::Instance(instance.clone())],
            )
            .await?;
        inner.wake.notify_one();
    }
    let usage = usage_by_instance(&state);
    Ok(json!({
        "containerInstance": instance_view(
            &instance,
            usage.get(instance.container_instance_arn.as_str()),
            false,
        )
    }))
}

async fn put_attributes(inner: &Inner, body: &Value, delete: bool) -> Result<Value, ApiError> {
    let attrs: Vec<Attribute> = parse(body.get("attributes").unwrap_or(&Value::Null))?;
    if attrs.is_empty() || attrs.len() > 10 {
        return Err(ApiError::invalid_parameter(
            "attributes must hold 1 to 10 attributes.",
        ));
    }
    let mut state = inner.state.lock().await;
    let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?
        .cluster_name
        .clone();
    let mut changed: BTreeMap<String, ContainerInstance> = BTreeMap::new();
    for a in &attrs {
        let name_ok = !a.name.is_empty()
            && a.name.len() <= 128
            && a.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./@".contains(c));
        if !name_ok {
            return Err(ApiError::invalid_parameter(format!(
                "Attribute name {:?} is invalid.",
                a.name
            )));
        }
        if a.target_type
            .as_deref()
            .is_some_and(|t| t != "container-instance")
        {
            return Err(ApiError::invalid_parameter(
                "targetType must be container-instance.",
            ));
        }
        let target = a
            .target_id
            .as_deref()
            .ok_or_else(|| ApiError::invalid_parameter("targetId is required"))?;
        let current = match changed.get(name_of(target)) {
            Some(i) => i.clone(),
            None => find_instance(&state, &cluster, target)
                .cloned()
                .ok_or_else(|| {
                    ApiError::not_found(
                        "TargetNotFoundException",
                        format!("Could not find {target}."),
                    )
                })?,
        };
        let mut i = current;
        i.attributes.retain(|x| x.name != a.name);
        if !delete {
            i.attributes.push(Attribute {
                name: a.name.clone(),
                value: a.value.clone(),
                target_type: None,
                target_id: None,
            });
        }
        changed.insert(name_of(target).to_string(), i);
    }
    let writes = changed.into_values().map(Write::Instance).collect();
    state.apply(inner.store.as_ref(), writes).await?;
    Ok(json!({ "attributes": to_value(&attrs) }))
}

async fn list_attributes(inner: &Inner, body: &Value) -> Result<Value, ApiError> {
    if body.get("targetType").and_then(Value::as_str) != Some("container-instance") {
        return Err(ApiError::invalid_parameter(
            "targetType must be container-instance.",
        ));
    }
    let name = body.get("attributeName").and_then(Value::as_str);
    let value = body.get("attributeValue").and_then(Value::as_str);
    if value.is_some() && name.is_none() {
        return Err(ApiError::invalid_parameter(
            "attributeValue needs attributeName.",
        ));
    }
    let state = inner.state.lock().await;
    let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?;
    let mut out = Vec::new();
    for i in state
        .instances
        .values()
        .map(|e| &e.value)
        .filter(|i| i.cluster == cluster.cluster_name)
    {
        for a in &i.attributes {
            if name.is_some_and(|n| n != a.name)
                || value.is_some_and(|v| a.value.as_deref() != Some(v))
            {
                continue;
            }
            out.push(json!({
                "name": a.name, "value": a.value, "targetType": "container-instance",
                "targetId": i.container_instance_arn,
            }));
        }
    }
    listed(body, "attributes", out)
}

// ---- task definitions -----------------------------------------------------

async fn register_taskdef(inner: &Inner, body: &Value, region: &str) -> Result<Value, ApiError> {
    let mut td = taskdef::parse_register(body)?;
    let mut state = inner.state.lock().await;
    let revision = state
        .taskdefs
        .get(&td.family)
        .and_then(|f| f.keys().next_back().copied())
        .unwrap_or(0)
        + 1;
    td.revision = revision;
    td.task_definition_arn = arn(
        "ecs",
        region,
        &format!("task-definition/{}:{revision}", td.family),
    );
    td.registered_at = now();
    td.registered_by = Some(format!("arn:aws:iam::{}:root", crate::model::ACCOUNT));
    state
        .apply(inner.store.as_ref(), vec![Write::TaskDef(td.clone())])
        .await?;
    Ok(json!({ "taskDefinition": taskdef_view(&td), "tags": to_value(&td.tags) }))
}

async fn describe_taskdef(inner: &Inner, body: &Value) -> Result<Value, ApiError> {
    let given = required(body, "taskDefinition")?;
    let state = inner.state.lock().await;
    let td = resolve_taskdef(&state, given, false)?;
    let mut out = json!({ "taskDefinition": taskdef_view(&td) });
    if includes(body, "TAGS") {
        out["tags"] = to_value(&td.tags);
    }
    Ok(out)
}

async fn list_taskdefs(inner: &Inner, body: &Value) -> Result<Value, ApiError> {
    let prefix = body.get("familyPrefix").and_then(Value::as_str);
    let status = body
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("ACTIVE");
    if !matches!(status, "ACTIVE" | "INACTIVE" | "DELETE_IN_PROGRESS") {
        return Err(ApiError::invalid_parameter(format!(
            "status must be ACTIVE, INACTIVE or DELETE_IN_PROGRESS, not {status:?}"
        )));
    }
    let desc = match body.get("sort").and_then(Value::as_str) {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(s) => {
            return Err(ApiError::invalid_parameter(format!(
                "sort must be ASC or DESC, not {s:?}"
            )));
        }
    };
    let state = inner.state.lock().await;
    let mut arns: Vec<String> = state
        .taskdefs
        .iter()
        // ECS's familyPrefix matches the whole family name.
        .filter(|(f, _)| prefix.is_none_or(|p| p == f.as_str()))
        .flat_map(|(_, revs)| revs.values())
        .filter(|td| td.value.status == status)
        .map(|td| td.value.task_definition_arn.clone())
        .collect();
    if desc {
        arns.reverse();
    }
    listed(body, "taskDefinitionArns", arns)
}

async fn list_families(inner: &Inner, body: &Value) -> Result<Value, ApiError> {
    let prefix = body
        .get("familyPrefix")
        .and_then(Value::as_str)
        .unwrap_or("");
    let status = body
        .get("status")
        .and_then(Value::as_str)
        // Without a status ECS lists every family, active or not.
        .unwrap_or("ALL");
    if !matches!(status, "ACTIVE" | "INACTIVE" | "ALL") {
        return Err(ApiError::invalid_parameter(
            "status must be ACTIVE, INACTIVE or ALL",
        ));
    }
    let state = inner.state.lock().await;
    let families: Vec<String> = state
        .taskdefs
        .iter()
        .filter(|(f, _)| f.starts_with(prefix))
        .filter(|(_, revs)| revs.values().any(|t| t.value.status != DELETED))
        .filter(|(_, revs)| {
            let active = revs.values().any(|t| t.value.status == "ACTIVE");
            match status {
                "ACTIVE" => active,
                "INACTIVE" => !active,
                _ => true,
            }
        })
        .map(|(f, _)| f.clone())
        .collect();
    listed(body, "families", families)
}

async fn deregister_taskdef(inner: &Inner, body: &Value) -> Result<Value, ApiError> {
    let given = required(body, "taskDefinition")?;
    if !name_of(given).contains(':') {
        return Err(ApiError::client(
            "A revision is required: family:revision or a full ARN.",
        ));
    }
    let mut state = inner.state.lock().await;
    let mut td = resolve_taskdef(&state, given, false)?;
    if td.status == "ACTIVE" {
        td.status = "INACTIVE".into();
        td.deregistered_at = Some(now());
        state
            .apply(inner.store.as_ref(), vec![Write::TaskDef(td.clone())])
            .await?;
    }
    Ok(json!({ "taskDefinition": taskdef_view(&td) }))
}

/// DeleteTaskDefinitions: INACTIVE revisions become DELETE_IN_PROGRESS,
/// still describable while tasks or services use them, and are gone once
/// nothing does (the retention pass).
async fn delete_taskdefs(inner: &Inner, body: &Value, region: &str) -> Result<Value, ApiError> {
    let given = string_list(body, "taskDefinitions")?;
    if given.is_empty() || given.len() > 10 {
        return Err(ApiError::invalid_parameter(
            "taskDefinitions must name 1 to 10 task definition revisions.",
        ));
    }
    let mut state = inner.state.lock().await;
    let mut deleted = Vec::new();
    let mut failures = Vec::new();
    let mut writes = Vec::new();
    for g in given {
        let arn_of = || {
            if g.starts_with("arn:") {
                g.clone()
            } else {
                arn("ecs", region, &format!("task-definition/{g}"))
            }
        };
        if !name_of(&g).contains(':') {
            failures.push(Failure {
                arn: Some(arn_of()),
                reason: "A revision is required: family:revision or a full ARN.".into(),
                detail: None,
            });
            continue;
        }
        let mut td = match resolve_taskdef(&state, &g, false) {
            Ok(td) => td,
            Err(_) => {
                failures.push(Failure::missing(arn_of()));
                continue;
            }
        };
        if td.status == "ACTIVE" {
            failures.push(Failure {
                arn: Some(td.task_definition_arn.clone()),
                reason: "The specified task definition is still in ACTIVE status. Please deregister the target and try again.".into(),
                detail: None,
            });
            continue;
        }
        if td.status == "INACTIVE" {
            td.status = "DELETE_IN_PROGRESS".into();
            td.delete_requested_at = Some(now());
            writes.push(Write::TaskDef(td.clone()));
        }
        deleted.push(taskdef_view(&td));
    }
    state.apply(inner.store.as_ref(), writes).await?;
    Ok(json!({ "taskDefinitions": deleted, "failures": failures }))
}

// ---- tasks ----------------------------------------------------------------

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
        })
    }
}

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
        None | Some("DISABLED") => {}
        Some("ENABLED") => {
            return Err(ApiError::invalid_parameter(
                "assignPublicIp ENABLED: skiff gives tasks loopback addresses only, never a public one",
            ));
        }
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunTaskReq {
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
}

/// Fields of RunTask/StartTask skiff cannot honour yet.
const UNSUPPORTED_RUN_FIELDS: &[&str] = &[
    "propagateTags",
    "capacityProviderStrategy",
    "enableECSManagedTags",
    "enableExecuteCommand",
    "volumeConfigurations",
    "platformVersion",
];

fn check_overrides(body: &Value, td: &TaskDefinition, o: &TaskOverride) -> Result<(), ApiError> {
    if let Some(Value::Array(cos)) = body.pointer("/overrides/containerOverrides") {
        for co in cos {
            refuse(co, &["environmentFiles", "resourceRequirements"])?;
        }
    }
    if let Some(ov) = body.get("overrides") {
        refuse(ov, &["inferenceAcceleratorOverrides", "ephemeralStorage"])?;
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

/// What a task of `td` with `o` asks of an instance: (cpu, memory).
fn task_size(td: &TaskDefinition, o: &TaskOverride) -> (i64, i64) {
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
/// at start), none in awsvpc (the task has its own address).
fn host_ports(td: &TaskDefinition) -> (Vec<u16>, Vec<u16>) {
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
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

fn new_task(
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
        enable_execute_command: false,
        client_token: launch.client_token.clone(),
        network_configuration: launch.network.clone(),
    }
}

/// An awsvpc task's network interface, as ECS shows it before the
/// interface is attached: the agent fills in the address.
fn eni_attachment(launch: &Launch) -> Option<Value> {
    let vpc = launch.network.as_ref()?.awsvpc_configuration.as_ref()?;
    Some(json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "type": "ElasticNetworkInterface",
        "status": "PRECREATED",
        "details": [{"name": "subnetId", "value": vpc.subnets.first()}],
    }))
}

fn task_view(t: &Task, with_tags: bool) -> Value {
    let mut v = to_value(t);
    if let Some(o) = v.as_object_mut() {
        o.remove("clientToken");
        o.remove("networkConfiguration");
        o.remove("hostInstanceArn");
        if !with_tags {
            o.remove("tags");
        }
    }
    v
}

/// RunTask, or StartTask when `on` names the instances.
async fn run_task(
    inner: &Inner,
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
    let launch_type = req.launch_type.clone().unwrap_or_else(|| "EC2".into());
    check_launch(&launch_type, None, false)?;
    let (constraints, strategies) =
        placement_rules(&req.placement_constraints, &req.placement_strategy)?;
    if inner
        .shutting_down
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        return Err(ApiError::server(
            "skiff serve is shutting down: no new tasks start",
        ));
    }
    let mut state = inner.state.lock().await;
    // Again under the lock, which shutdown holds while it stops tasks.
    if inner
        .shutting_down
        .load(std::sync::atomic::Ordering::SeqCst)
    {
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
    let td = resolve_taskdef(&state, given_td, true)?;
    check_overrides(body, &td, &req.overrides)?;
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
    launch.tags = req.tags;
    launch.client_token = req.client_token;
    launch.launch_type = launch_type;
    launch.network = network;
    let (tasks, failures) = place_tasks(
        inner,
        &state,
        region,
        &cluster,
        &launch,
        count as usize,
        on.as_deref(),
    )?;
    state
        .apply(
            inner.store.as_ref(),
            tasks.iter().cloned().map(Write::Task).collect(),
        )
        .await?;
    for t in &tasks {
        inner.agents.start(t, &launch.td);
    }
    let views: Vec<Value> = tasks.iter().map(|t| task_view(t, false)).collect();
    Ok(json!({ "tasks": views, "failures": failures }))
}

/// Places `count` tasks of `launch` in `cluster` (or one on each instance
/// of `on`): the new tasks, not yet written, and why instances refused.
#[allow(clippy::too_many_arguments)]
pub(crate) fn place_tasks(
    inner: &Inner,
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
            vpc.security_groups = crate::ec2::resolve_groups(state, &vpc.security_groups)?;
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
    let (tcp, udp) = host_ports(td);
    let demand = Demand {
        cpu,
        memory,
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
                failures.push(Failure {
                    arn: None,
                    reason: FARGATE_UNAVAILABLE.into(),
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
            let mut rng = inner
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
            if let Ok(mut r) = inner.rng.lock() {
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
    let tasks = chosen
        .iter()
        .map(|i| new_task(region, cluster, launch, &cands[*i].arn, cpu, memory))
        .collect();
    Ok((tasks, failures))
}

/// Why a FARGATE task found no capacity, in ECS's words.
const FARGATE_UNAVAILABLE: &str = "Capacity is unavailable at this time. Please try again later or in a different availability zone";

/// Where FARGATE tasks of any cluster may run: every active instance whose
/// agent offers Fargate capacity.
fn fargate_capacity(state: &State) -> Vec<Candidate> {
    let usage = usage_by_instance(state);
    state
        .instances
        .values()
        .map(|e| &e.value)
        .filter(|i| i.offers_fargate && i.status == "ACTIVE")
        .map(|i| candidate(i, usage.get(i.container_instance_arn.as_str())))
        .collect()
}

async fn start_task(inner: &Inner, body: &Value, region: &str) -> Result<Value, ApiError> {
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
    run_task(inner, body, region, Some(instances)).await
}

fn find_task<'a>(state: &'a State, cluster: &Cluster, given: &str) -> Option<&'a Task> {
    state
        .tasks
        .get(name_of(given))
        .map(|t| &t.value)
        .filter(|t| t.cluster_arn == cluster.cluster_arn)
}

async fn stop_task(inner: &Inner, body: &Value) -> Result<Value, ApiError> {
    let given = required(body, "task")?;
    let reason = body.get("reason").and_then(Value::as_str);
    if reason.is_some_and(|r| r.len() > 255) {
        return Err(ApiError::invalid_parameter(
            "reason is at most 255 characters.",
        ));
    }
    let mut state = inner.state.lock().await;
    let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?.clone();
    let task = find_task(&state, &cluster, given)
        .cloned()
        .ok_or_else(|| ApiError::invalid_parameter("The referenced task was not found."))?;
    let running_here = inner.agents.have(&task);
    // Already stopped, or stopping on the agent: nothing more to do. A task
    // no agent runs (lost with a previous process) is stopped below, even
    // if a stop was asked for before.
    if task.last_status == "STOPPED" || (task.desired_status == "STOPPED" && running_here) {
        return Ok(json!({ "task": task_view(&task, false) }));
    }
    let (t, running_here) = stop_request(
        inner,
        task,
        "UserInitiated",
        reason.unwrap_or("Task stopped by user"),
    );
    // Behind a load balancer, the task leaves its target groups first and
    // drains, as when its service stops it.
    let deregistered = crate::services::deregister_task(&state, t.id());
    let mut writes = vec![Write::Task(t.clone())];
    let mut draining = Vec::new();
    if let Some(d) = deregistered {
        writes.extend(d.writes);
        draining = d.targets;
    }
    state.apply(inner.store.as_ref(), writes).await?;
    if !draining.is_empty() {
        inner.elb.sync(&state.elb);
    }
    if running_here {
        crate::services::stop_after_draining(inner, &t, draining);
    }
    // A service replaces its stopped task.
    inner.wake.notify_one();
    Ok(json!({ "task": task_view(&t, false) }))
}

/// Asks `t` to stop with `code` and `reason` (a stop asked for before
/// keeps its own). A task no agent runs stops at once. Returns the task to
/// write and whether the agent runs it (and must be told once it is
/// written).
pub(crate) fn stop_request(inner: &Inner, mut t: Task, code: &str, reason: &str) -> (Task, bool) {
    let running_here = inner.agents.have(&t);
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

async fn describe_tasks(inner: &Inner, body: &Value, region: &str) -> Result<Value, ApiError> {
    let given = string_list(body, "tasks")?;
    if given.is_empty() || given.len() > 100 {
        return Err(ApiError::invalid_parameter(
            "tasks must name 1 to 100 tasks.",
        ));
    }
    let state = inner.state.lock().await;
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

async fn list_tasks(inner: &Inner, body: &Value) -> Result<Value, ApiError> {
    let state = inner.state.lock().await;
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
    let instance = s("containerInstance").map(|i| name_of(i).to_string());
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

fn apply_task_change(mut t: Task, p: TaskStateChange) -> Task {
    if let Some(s) = p.status.map(TaskStatus::as_str)
        // States only move forward.
        && state_rank(s) > state_rank(&t.last_status)
    {
        t.last_status = s.into();
        if s == "STOPPED" {
            t.desired_status = "STOPPED".into();
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

fn apply_container_change(mut t: Task, cp: ContainerChange) -> Task {
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
    }
    t
}

/// Records an awsvpc task's network interface as the agent reports it:
/// its status, and once it has an address, the interface's details and
/// each container's `networkInterfaces`, as ECS shows them.
fn attach_eni(t: &mut Task, status: &str, ip: Option<std::net::Ipv4Addr>) {
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

// ---- tags -------------------------------------------------------------------

async fn tag_resource(inner: &Inner, body: &Value, remove: bool) -> Result<Value, ApiError> {
    let resource = required(body, "resourceArn")?;
    let (new, keys): (Vec<Tag>, Vec<String>) = if remove {
        (Vec::new(), string_list(body, "tagKeys")?)
    } else {
        let tags: Vec<Tag> = parse(body.get("tags").unwrap_or(&Value::Null))?;
        check_tags(&tags)?;
        (tags, Vec::new())
    };
    let edit = |tags: &mut Vec<Tag>| -> Result<(), ApiError> {
        if remove {
            tags.retain(|t| !keys.contains(&t.key));
        } else {
            merge_tags(tags, &new);
            check_tags(tags)?;
        }
        Ok(())
    };
    let mut state = inner.state.lock().await;
    let write = match locate(&state, resource)? {
        Located::Cluster(mut c) => {
            edit(&mut c.tags)?;
            Write::Cluster(c)
        }
        Located::TaskDef(mut td) => {
            edit(&mut td.tags)?;
            Write::TaskDef(*td)
        }
        Located::Task(mut t) => {
            edit(&mut t.tags)?;
            Write::Task(*t)
        }
        Located::Instance(mut i) => {
            edit(&mut i.tags)?;
            Write::Instance(*i)
        }
        Located::Service(mut s) => {
            edit(&mut s.tags)?;
            Write::Service(s)
        }
    };
    state.apply(inner.store.as_ref(), vec![write]).await?;
    Ok(json!({}))
}

async fn list_tags(inner: &Inner, body: &Value) -> Result<Value, ApiError> {
    let resource = required(body, "resourceArn")?;
    let state = inner.state.lock().await;
    let tags = match locate(&state, resource)? {
        Located::Cluster(c) => c.tags,
        Located::TaskDef(td) => td.tags,
        Located::Task(t) => t.tags,
        Located::Instance(i) => i.tags,
        Located::Service(s) => s.tags,
    };
    Ok(json!({ "tags": to_value(&tags) }))
}

enum Located {
    Cluster(Cluster),
    TaskDef(Box<TaskDefinition>),
    Task(Box<Task>),
    Instance(Box<ContainerInstance>),
    Service(Box<Service>),
}

fn locate(state: &State, resource: &str) -> Result<Located, ApiError> {
    let not_found = || {
        ApiError::not_found(
            "ResourceNotFoundException",
            format!("The specified resource {resource} is not found."),
        )
    };
    let path = resource
        .strip_prefix("arn:")
        .and_then(|r| r.splitn(5, ':').nth(4))
        .ok_or_else(|| ApiError::invalid_parameter(format!("{resource:?} is not an ARN.")))?;
    let (kind, rest) = path.split_once('/').ok_or_else(not_found)?;
    let found = match kind {
        "cluster" => state
            .clusters
            .get(rest)
            .filter(|c| c.value.status == "ACTIVE")
            .map(|c| Located::Cluster(c.value.clone())),
        "task-definition" => {
            let (family, rev) = rest.split_once(':').ok_or_else(not_found)?;
            rev.parse::<u32>()
                .ok()
                .and_then(|r| state.taskdefs.get(family)?.get(&r))
                .filter(|t| t.value.status != DELETED)
                .map(|t| Located::TaskDef(Box::new(t.value.clone())))
        }
        "task" => state
            .tasks
            .get(rest.rsplit('/').next().unwrap_or(rest))
            .map(|t| Located::Task(Box::new(t.value.clone()))),
        "service" => {
            // New-style ARNs name the cluster: service/CLUSTER/NAME.
            let key = if rest.contains('/') {
                rest.to_string()
            } else {
                format!("default/{rest}")
            };
            state
                .services
                .get(&key)
                .filter(|s| s.value.status != "INACTIVE")
                .map(|s| Located::Service(Box::new(s.value.clone())))
        }
        "container-instance" => state
            .instances
            .values()
            .find(|i| i.value.container_instance_arn == resource)
            .map(|i| Located::Instance(Box::new(i.value.clone()))),
        _ => None,
    };
    found.ok_or_else(not_found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_opaque_offsets() {
        let (a, next) = page((0..5).collect::<Vec<_>>(), None, Some(2), 100).unwrap();
        assert_eq!((a, next.as_deref()), (vec![0, 1], Some("2")));
        let (b, next) = page((0..5).collect::<Vec<_>>(), Some("4"), Some(2), 100).unwrap();
        assert_eq!((b, next), (vec![4], None));
        assert!(page(vec![1], None, Some(0), 100).is_err());
        assert!(page(vec![1], Some("x"), None, 100).is_err());
    }

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
