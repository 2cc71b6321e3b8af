//! ECS container instances: RegisterContainerInstance,
//! DeregisterContainerInstance, ListContainerInstances,
//! DescribeContainerInstances, UpdateContainerInstancesState, and their
//! attributes (PutAttributes, DeleteAttributes, ListAttributes).

use crate::api::protocol::json::{
    includes, listed, parse, refuse, required, string_list, to_value,
};
use crate::core::clusters::active_cluster;
use crate::core::instances::{
    Usage, candidate, find_instance, instance_arn_for, usage_by_instance,
};
use crate::core::model::{
    ContainerInstance, Failure, Resource, Tag, arn, check_tags, merge_tags, name_of, new_id, now,
};
use crate::core::placement;
use crate::core::state::Write;
use crate::core::taskdef::Attribute;
use crate::core::{Core, LOCAL_INSTANCE_ID};
use crate::error::ApiError;
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub(crate) fn instance_view(
    i: &ContainerInstance,
    usage: Option<&Usage>,
    with_tags: bool,
) -> Value {
    let none = Usage::default();
    let u = usage.unwrap_or(&none);
    let mut remaining = i.registered_resources.clone();
    for r in &mut remaining {
        match r.name.as_str() {
            "CPU" => r.integer_value -= u.cpu,
            "MEMORY" => r.integer_value -= u.memory,
            crate::core::instances::SLOTS => r.integer_value -= u.slots,
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
        o.remove("agentSession");
        o.remove("registeredBy");
        o.remove("meshAddress");
    }
    v["remainingResources"] = to_value(&remaining);
    v["runningTasksCount"] = json!(u.running);
    v["pendingTasksCount"] = json!(u.pending);
    if !with_tags && let Some(o) = v.as_object_mut() {
        o.remove("tags");
    }
    v
}

pub(crate) async fn list_instances(core: &Core, body: &Value) -> Result<Value, ApiError> {
    let state = core.state.lock().await;
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

pub(crate) async fn describe_instances(
    core: &Core,
    body: &Value,
    region: &str,
) -> Result<Value, ApiError> {
    let given = string_list(body, "containerInstances")?;
    if given.is_empty() || given.len() > 100 {
        return Err(ApiError::invalid_parameter(
            "containerInstances must name 1 to 100 container instances.",
        ));
    }
    let state = core.state.lock().await;
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

pub(crate) async fn update_instances_state(
    core: &Core,
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
    let mut state = core.state.lock().await;
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
    state.apply(core.store.as_ref(), writes).await?;
    // Services move their tasks off draining instances.
    core.wake.all();
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

/// RegisterContainerInstance: records an instance and its resources (again:
/// updates them). It has no agent connected until one opens its channel
/// (`skiff agent` registers, then does): until then it is listed,
/// described and counted, and placement passes it over with ECS's `AGENT`
/// reason.
///
/// Signed with an agent key (`by`), it registers an instance bound to
/// that key: only it may register that instance again or open its channel.
pub(crate) async fn register_instance(
    core: &Core,
    body: &Value,
    region: &str,
    by: Option<&crate::core::agent_keys::AgentKey>,
) -> Result<Value, ApiError> {
    refuse(body, &["platformDevices"])?;
    let tags: Vec<Tag> = match body.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => parse(v)?,
    };
    check_tags(&tags)?;
    let mut attributes: Vec<Attribute> = match body.get("attributes") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => parse(v)?,
    };
    // The control plane's to give.
    attributes.retain(|a| a.name != crate::core::instances::TASK_ADDRESSES);
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
    let mut state = core.state.lock().await;
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
            if found.container_instance_arn == core.agents.local {
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
    // `skiff agent --fargate`: its agent lends FARGATE tasks of any
    // cluster its capacity.
    let fargate = attributes.iter().any(|a| a.name == FARGATE_ATTRIBUTE);
    let by = by.map(|k| k.access_key_id.clone());
    if let Some(i) = &existing
        && by.is_some()
        && i.registered_by != by
    {
        return Err(ApiError {
            kind: "AccessDeniedException",
            message: format!(
                "Container instance {} was registered with another key: this agent key cannot register it.",
                i.container_instance_arn
            ),
            status: 400,
        });
    }
    let instance = match existing {
        Some(mut i) => {
            i.registered_resources = registered.clone();
            i.remaining_resources = registered;
            i.offers_fargate = fargate;
            i.attributes.retain(|a| a.name != FARGATE_ATTRIBUTE);
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
            // Its tasks' addresses: a block of its own in the cluster's
            // task address space, so every task address is unique.
            let block = crate::core::instances::free_address_block(&state).ok_or_else(|| {
                ApiError::client(
                    "Every task address block is taken (256 container instances with agents): deregister one first.",
                )
            })?;
            all.push(Attribute {
                name: crate::core::instances::TASK_ADDRESSES.into(),
                value: Some(block),
                target_type: None,
                target_id: None,
            });
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
                offers_fargate: fargate,
                agent_session: None,
                registered_by: by,
                mesh_address: None,
            }
        }
    };
    state
        .apply(core.store.as_ref(), vec![Write::Instance(instance.clone())])
        .await?;
    Ok(json!({ "containerInstance": instance_view(&instance, None, true) }))
}

/// The attribute an agent registers with when it offers Fargate capacity.
pub(crate) const FARGATE_ATTRIBUTE: &str = "skiff.fargate";

pub(crate) fn merge_attributes(into: &mut Vec<Attribute>, new: Vec<Attribute>) {
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
pub(crate) async fn deregister_instance(
    core: &Core,
    body: &Value,
    region: &str,
) -> Result<Value, ApiError> {
    let given = required(body, "containerInstance")?;
    let force = body.get("force").and_then(Value::as_bool).unwrap_or(false);
    let mut state = core.state.lock().await;
    let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?.clone();
    let Some(mut instance) = find_instance(&state, &cluster.cluster_name, given).cloned() else {
        return Err(ApiError::invalid_parameter(format!(
            "The referenced container instance {} was not found.",
            instance_arn_for(region, &cluster.cluster_name, given)
        )));
    };
    if instance.container_instance_arn == core.agents.local {
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
            .apply(core.store.as_ref(), vec![Write::Instance(instance.clone())])
            .await?;
        core.fabric.set_routes(crate::core::instances::routes(
            &state,
            core.config.lb_address,
        ));
        core.wake.all();
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

pub(crate) async fn put_attributes(
    core: &Core,
    body: &Value,
    delete: bool,
) -> Result<Value, ApiError> {
    let attrs: Vec<Attribute> = crate::api::protocol::json::parse_member(body, "attributes")?;
    if attrs.is_empty() || attrs.len() > 10 {
        return Err(ApiError::invalid_parameter(
            "attributes must hold 1 to 10 attributes.",
        ));
    }
    let mut state = core.state.lock().await;
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
        if a.name.starts_with("ecs.")
            || a.name.starts_with("com.amazonaws.ecs.")
            || a.name.starts_with("skiff.")
        {
            // The agent's own: placement trusts them to say what the
            // instance can do.
            return Err(ApiError::invalid_parameter(format!(
                "Attribute {} is the container instance agent's own; it cannot be {}.",
                a.name,
                if delete { "deleted" } else { "set" }
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
    state.apply(core.store.as_ref(), writes).await?;
    Ok(json!({ "attributes": to_value(&attrs) }))
}

pub(crate) async fn list_attributes(core: &Core, body: &Value) -> Result<Value, ApiError> {
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
    let state = core.state.lock().await;
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

/// DiscoverPollEndpoint: where an agent opens its channel (and sends
/// telemetry): this API, at the address the agent reached it by (`host`,
/// the request's Host header). The instance, if named, must be registered
/// in the cluster.
pub(crate) async fn discover_poll_endpoint(
    core: &Core,
    body: &Value,
    host: &str,
) -> Result<Value, ApiError> {
    if let Some(given) = body.get("containerInstance").and_then(Value::as_str) {
        let state = core.state.lock().await;
        let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?;
        if find_instance(&state, &cluster.cluster_name, given)
            .is_none_or(|i| i.status == "INACTIVE")
        {
            return Err(ApiError::invalid_parameter(format!(
                "The referenced container instance {given} was not found in cluster {}.",
                cluster.cluster_name
            )));
        }
    }
    let endpoint = format!("http://{host}/");
    Ok(json!({
        "endpoint": endpoint,
        "telemetryEndpoint": endpoint,
        "serviceConnectEndpoint": endpoint,
        "systemLogsEndpoint": endpoint,
        // skiff's own: where the cluster's registry is.
        "skiffRegistry": registry_as_seen_from(&core.config.default_registry, host),
    }))
}

/// The cluster's registry (`listening`, `IP:PORT`) as a client that
/// reached the API at `host` (a Host header) reaches it: at that host when
/// the registry listens on every address.
pub(crate) fn registry_as_seen_from(listening: &str, host: &str) -> String {
    match listening.parse::<std::net::SocketAddr>() {
        Ok(addr) if addr.ip().is_unspecified() => {
            let name = match host.rsplit_once(':') {
                Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
                _ => host,
            };
            format!("{name}:{}", addr.port())
        }
        _ => listening.to_string(),
    }
}
