//! ECS services: CreateService, UpdateService, DeleteService,
//! DescribeServices, ListServices.

use super::service_fields::{
    check_launch_type, deployment_configuration, deployment_controller, desired_count, flag,
    grace_period, load_balancers, placement_items, refuse_task_set_fields, refuse_unsupported,
    service_registries, valid_name,
};
use crate::api::protocol::json::{includes, listed, parse, required, string_list, to_value};
use crate::core::Core;
use crate::core::clusters::active_cluster;
use crate::core::model::{Failure, NetworkConfiguration, Tag, Task, arn, check_tags, name_of, now};
use crate::core::services::{Service, daemon_instances, deployment_id, live};
use crate::core::state::{State, Write};
use crate::core::taskdef::TaskDefinition;
use crate::core::tasks::{
    Launch, check_launch, check_network_configuration, check_propagate_tags, placement_rules,
    resolve_taskdef, taskdef_of,
};
use crate::error::ApiError;
use serde_json::{Value, json};

/// A service as DescribeServices shows it: the stored record with the
/// counts of its tasks.
pub(crate) fn service_view(state: &State, svc: &Service, with_tags: bool) -> Value {
    let tasks: Vec<&Task> = state
        .tasks_of_service(&svc.key())
        .filter(|t| live(t))
        .collect();
    let count = |d: Option<&str>, running: bool| {
        tasks
            .iter()
            .filter(|t| d.is_none_or(|d| t.started_by.as_deref() == Some(d)))
            .filter(|t| (t.last_status == "RUNNING") == running)
            .count()
    };
    let deployments: Vec<Value> = svc
        .deployments
        .iter()
        .map(|d| {
            json!({
                "id": d.id,
                "status": d.status,
                "taskDefinition": d.task_definition,
                "desiredCount": if d.status == "PRIMARY" { svc.desired_count } else { 0 },
                "pendingCount": count(Some(&d.id), false),
                "runningCount": count(Some(&d.id), true),
                "failedTasks": d.failed_tasks,
                "createdAt": d.created_at,
                "updatedAt": d.updated_at,
                "launchType": d.launch_type,
                "rolloutState": d.rollout_state,
                "rolloutStateReason": d.rollout_state_reason,
            })
        })
        .collect();
    let mut v = json!({
        "serviceArn": svc.service_arn,
        "serviceName": svc.service_name,
        "clusterArn": svc.cluster_arn,
        "loadBalancers": svc.load_balancers,
        "serviceRegistries": svc.service_registries,
        "status": svc.status,
        "desiredCount": svc.desired_count,
        "runningCount": count(None, true),
        "pendingCount": count(None, false),
        "launchType": svc.launch_type,
        "taskDefinition": svc.task_definition,
        "deploymentConfiguration": svc.deployment_configuration,
        "deployments": deployments,
        "events": svc.events,
        "createdAt": svc.created_at,
        "placementConstraints": svc.placement_constraints,
        "placementStrategy": svc.placement_strategy,
        "schedulingStrategy": svc.scheduling_strategy,
        "deploymentController": {"type": svc.deployment_controller.as_deref().unwrap_or("ECS")},
        "createdBy": svc.created_by,
        "enableECSManagedTags": svc.enable_ecs_managed_tags,
        "propagateTags": svc.propagate_tags.as_deref().unwrap_or("NONE"),
        "enableExecuteCommand": svc.enable_execute_command,
        "availabilityZoneRebalancing": "DISABLED",
    });
    if !svc.capacity_provider_strategy.is_empty() {
        // Launched by its strategy: ECS shows that, not a launch type.
        v["capacityProviderStrategy"] = json!(svc.capacity_provider_strategy);
        if let Some(o) = v.as_object_mut() {
            o.remove("launchType");
        }
        for d in v["deployments"].as_array_mut().into_iter().flatten() {
            d["capacityProviderStrategy"] = json!(svc.capacity_provider_strategy);
            if let Some(o) = d.as_object_mut() {
                o.remove("launchType");
            }
        }
    }
    if let Some(p) = &svc.platform_version {
        v["platformVersion"] = json!(p);
        v["platformFamily"] = json!("Linux");
        for d in v["deployments"].as_array_mut().into_iter().flatten() {
            d["platformVersion"] = json!(p);
            d["platformFamily"] = json!("Linux");
        }
    }
    if let Some(g) = svc.health_check_grace_period_seconds {
        v["healthCheckGracePeriodSeconds"] = json!(g);
    }
    if let Some(r) = &svc.role_arn {
        v["roleArn"] = json!(r);
    }
    if let Some(n) = &svc.network_configuration {
        v["networkConfiguration"] = network_view(n);
    }
    if with_tags {
        v["tags"] = to_value(&svc.tags);
    }
    if svc.is_external() {
        v["taskSets"] = svc
            .task_sets
            .iter()
            .map(|set| super::task_sets::view(state, svc, set, false))
            .collect();
        // Without a primary task set, what it would give is null.
        if let Some(o) = v.as_object_mut() {
            for f in ["taskDefinition", "launchType"] {
                if o.get(f).is_some_and(|x| x == "") {
                    o.remove(f);
                }
            }
        }
    }
    v
}

/// A network configuration as ECS shows it: `assignPublicIp` always said.
pub(crate) fn network_view(n: &NetworkConfiguration) -> Value {
    let mut v = json!(n);
    if let Some(a) = v.get_mut("awsvpcConfiguration")
        && a.get("assignPublicIp").is_none()
    {
        a["assignPublicIp"] = json!("DISABLED");
    }
    v
}

pub(crate) fn find_service<'a>(
    state: &'a State,
    cluster: &str,
    given: &str,
) -> Option<&'a Service> {
    state
        .services
        .get(&format!("{cluster}/{}", name_of(given)))
        .map(|s| &s.value)
}

pub(crate) fn not_active() -> ApiError {
    ApiError::not_found("ServiceNotActiveException", "Service was not ACTIVE.")
}

pub(crate) fn service_not_found() -> ApiError {
    ApiError::not_found("ServiceNotFoundException", "Service not found.")
}

/// ECS's quota of services in one cluster (ACTIVE ones: a deleted service
/// draining its tasks does not hold a place).
const MAX_SERVICES_PER_CLUSTER: usize = 5000;

pub(crate) async fn create_service(
    core: &Core,
    body: &Value,
    region: &str,
) -> Result<Value, ApiError> {
    refuse_unsupported(body)?;
    let name = required(body, "serviceName")?.to_string();
    valid_name(&name)?;
    let controller = deployment_controller(body)?;
    let external = controller.is_some();
    if external {
        refuse_task_set_fields(body)?;
    }
    let given_td = if external {
        String::new()
    } else {
        required(body, "taskDefinition")?.to_string()
    };
    let strategy = body
        .get("schedulingStrategy")
        .and_then(Value::as_str)
        .unwrap_or("REPLICA")
        .to_string();
    let daemon = match strategy.as_str() {
        "REPLICA" => false,
        "DAEMON" => true,
        other => {
            return Err(ApiError::invalid_parameter(format!(
                "schedulingStrategy must be REPLICA or DAEMON, not {other:?}."
            )));
        }
    };
    let desired = desired_count(body)?;
    if daemon && external {
        return Err(ApiError::invalid_parameter(
            "The EXTERNAL deployment controller does not support the DAEMON scheduling strategy.",
        ));
    }
    if daemon && desired.is_some() {
        return Err(ApiError::invalid_parameter(
            "A DAEMON service runs one task per container instance: leave desiredCount out.",
        ));
    }
    let desired = match (daemon, desired) {
        (true, _) => 0,
        (false, Some(n)) => n,
        // Only the name is required of an EXTERNAL service: its task sets
        // run nothing until it is scaled.
        (false, None) if external => 0,
        (false, None) => {
            return Err(ApiError::invalid_parameter(
                "desiredCount is required for a REPLICA service.",
            ));
        }
    };
    let constraints = placement_items(body, "placementConstraints")?.unwrap_or_default();
    let strategies = placement_items(body, "placementStrategy")?.unwrap_or_default();
    if daemon && !strategies.is_empty() {
        return Err(ApiError::invalid_parameter(
            "Placement strategies are not supported with DAEMON scheduling strategy.",
        ));
    }
    placement_rules(&constraints, &strategies)?;
    let config = deployment_configuration(body, daemon, None)?;
    if let Some(l) = body.get("launchType").and_then(Value::as_str) {
        check_launch_type(Some(l))?;
    }
    let propagate = check_propagate_tags(body.get("propagateTags").and_then(Value::as_str), true)?;
    let tags: Vec<Tag> = match body.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => parse(v)?,
    };
    check_tags(&tags)?;
    let client_token = body
        .get("clientToken")
        .and_then(Value::as_str)
        .map(String::from);
    if client_token
        .as_deref()
        .is_some_and(|t| t.is_empty() || t.len() > 36)
    {
        return Err(ApiError::invalid_parameter(
            "clientToken must be 1 to 36 characters.",
        ));
    }
    let grace = grace_period(body)?;

    let mut state = core.state.lock().await;
    let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?.clone();
    if let Some(existing) = find_service(&state, &cluster.cluster_name, &name)
        && existing.status != "INACTIVE"
    {
        if client_token.is_some() && existing.client_token == client_token {
            return Ok(json!({ "service": service_view(&state, existing, false) }));
        }
        return Err(ApiError::invalid_parameter(
            "Creation of service was not idempotent.",
        ));
    }
    let in_cluster = state
        .services
        .values()
        .filter(|s| s.value.cluster_arn == cluster.cluster_arn && s.value.status == "ACTIVE")
        .count();
    if in_cluster >= MAX_SERVICES_PER_CLUSTER {
        return Err(ApiError::client(format!(
            "Cluster {} has {in_cluster} services, ECS's quota per cluster ({MAX_SERVICES_PER_CLUSTER}): delete one first.",
            cluster.cluster_name
        )));
    }
    let at = now();
    let mut svc = new_service(&cluster, region, &name, desired, body)?;
    svc.scheduling_strategy = strategy;
    svc.deployment_configuration = config;
    svc.placement_constraints = constraints;
    svc.placement_strategy = strategies;
    svc.health_check_grace_period_seconds = grace;
    svc.created_at = at;
    svc.tags = tags;
    svc.client_token = client_token;
    svc.propagate_tags = propagate;
    if external {
        // Its task sets say what runs, and how.
        svc.deployment_controller = controller;
        return save(core, &mut state, svc).await;
    }
    let choice = super::launch::choose(body, &cluster)?;
    let td = resolve_taskdef(&state, &given_td, true)?;
    let network = crate::api::ecs::parse_network_configuration(body)?;
    let placed = !svc.placement_constraints.is_empty() || !svc.placement_strategy.is_empty();
    check_runs(&choice.launch_type, &td, placed, network.as_ref())?;
    check_groups(&state, network.as_ref())?;
    let registries = service_registries(&state, body, &td)?.unwrap_or_default();
    let balancers = load_balancers(&state, body, &td)?.unwrap_or_default();
    if daemon {
        // One task per instance it may run on, from the start.
        let (c, s) = placement_rules(&svc.placement_constraints, &svc.placement_strategy)?;
        let launch = Launch::new(td.clone(), c, s, format!("service:{name}"))?;
        svc.desired_count = daemon_instances(&state, &cluster.cluster_name, &launch).len() as u32;
    }
    svc.task_definition = td.task_definition_arn.clone();
    svc.launch_type = choice.launch_type;
    svc.network_configuration = network;
    svc.service_registries = registries;
    svc.load_balancers = balancers;
    svc.capacity_provider_strategy = choice.providers;
    svc.platform_version = choice.platform_version;
    let id = deployment_id(core);
    svc.new_deployment(at, id, "ECS deployment in progress.");
    save(core, &mut state, svc).await
}

/// A new ACTIVE service named `name` in `cluster` with the request's
/// flags, the rest at ECS's defaults (the caller fills them in).
fn new_service(
    cluster: &crate::core::model::Cluster,
    region: &str,
    name: &str,
    desired: u32,
    body: &Value,
) -> Result<Service, ApiError> {
    Ok(Service {
        service_arn: arn(
            "ecs",
            region,
            &format!("service/{}/{name}", cluster.cluster_name),
        ),
        service_name: name.to_string(),
        cluster_arn: cluster.cluster_arn.clone(),
        status: "ACTIVE".into(),
        desired_count: desired,
        task_definition: String::new(),
        launch_type: String::new(),
        scheduling_strategy: "REPLICA".into(),
        deployment_configuration: deployment_configuration(&json!({}), false, None)?,
        placement_constraints: Vec::new(),
        placement_strategy: Vec::new(),
        health_check_grace_period_seconds: None,
        role_arn: body.get("role").and_then(Value::as_str).map(String::from),
        deployments: Vec::new(),
        events: Vec::new(),
        created_at: 0.0,
        created_by: format!("arn:aws:iam::{}:root", crate::core::model::account()),
        tags: Vec::new(),
        client_token: None,
        steady: false,
        last_completed: None,
        network_configuration: None,
        service_registries: Vec::new(),
        load_balancers: Vec::new(),
        registered: Vec::new(),
        capacity_provider_strategy: Vec::new(),
        platform_version: None,
        enable_ecs_managed_tags: flag(body, "enableECSManagedTags").unwrap_or(false),
        propagate_tags: None,
        enable_execute_command: flag(body, "enableExecuteCommand").unwrap_or(false),
        history: Vec::new(),
        deployment_controller: None,
        task_sets: Vec::new(),
        express: None,
    })
}

/// Can the service's tasks run from `td`, with its launch type, placement
/// and network configuration?
pub(crate) fn check_runs(
    svc_launch: &str,
    td: &TaskDefinition,
    placement_given: bool,
    network: Option<&NetworkConfiguration>,
) -> Result<(), ApiError> {
    check_launch(svc_launch, Some(td), placement_given)?;
    check_network_configuration(td, network)
}

/// The security groups a service's network configuration names exist.
pub(crate) fn check_groups(
    state: &State,
    network: Option<&NetworkConfiguration>,
) -> Result<(), ApiError> {
    if let Some(vpc) = network.and_then(|n| n.awsvpc_configuration.as_ref()) {
        crate::core::security_groups::resolve_groups(state, &vpc.security_groups)?;
    }
    Ok(())
}

pub(crate) async fn update_service(core: &Core, body: &Value) -> Result<Value, ApiError> {
    refuse_unsupported(body)?;
    let given = required(body, "service")?;
    let desired = desired_count(body)?;
    let force = body
        .get("forceNewDeployment")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let constraints = placement_items(body, "placementConstraints")?;
    let strategies = placement_items(body, "placementStrategy")?;
    let grace = grace_period(body)?;
    if let Some(l) = body.get("launchType").and_then(Value::as_str) {
        check_launch_type(Some(l))?;
    }
    let propagate = check_propagate_tags(body.get("propagateTags").and_then(Value::as_str), true)?;
    let new_strategy = super::launch::strategy(body)?;
    let mut state = core.state.lock().await;
    let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?.clone();
    let mut svc = find_service(&state, &cluster.cluster_name, given)
        .cloned()
        .ok_or_else(service_not_found)?;
    if svc.status != "ACTIVE" {
        return Err(not_active());
    }
    if deployment_controller(body)? != svc.deployment_controller
        && body.get("deploymentController").is_some()
    {
        return Err(ApiError::invalid_parameter(
            "A service's deployment controller cannot be changed between ECS and EXTERNAL: create a new service.",
        ));
    }
    if svc.is_external() {
        refuse_task_set_fields(body)?;
    }
    let daemon = svc.is_daemon();
    if daemon && desired.is_some() {
        return Err(ApiError::invalid_parameter(
            "A DAEMON service runs one task per container instance: its desiredCount cannot be set.",
        ));
    }
    if daemon && strategies.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid_parameter(
            "Placement strategies are not supported with DAEMON scheduling strategy.",
        ));
    }
    placement_rules(
        constraints.as_deref().unwrap_or(&svc.placement_constraints),
        strategies.as_deref().unwrap_or(&svc.placement_strategy),
    )?;
    svc.deployment_configuration =
        deployment_configuration(body, daemon, Some(svc.deployment_configuration))?;
    let mut redeploy = force;
    if let Some(s) = new_strategy
        && s != svc.capacity_provider_strategy
    {
        if s.is_empty() {
            return Err(ApiError::invalid_parameter(
                "capacityProviderStrategy cannot be emptied: a service launched by a strategy keeps one.",
            ));
        }
        crate::core::capacity::check_strategy(&s, &cluster.capacity_providers)?;
        if svc.launch_type != "FARGATE" {
            let td = taskdef_of(&state, &svc.task_definition).ok_or_else(|| {
                ApiError::client("The service's task definition no longer exists.")
            })?;
            check_launch("FARGATE", Some(&td), false)?;
            svc.launch_type = "FARGATE".into();
        }
        svc.capacity_provider_strategy = s;
        redeploy = true;
    }
    if let Some(v) = body.get("platformVersion").and_then(Value::as_str) {
        let v = crate::core::capacity::platform_version(Some(v), svc.launch_type == "FARGATE")?;
        if v != svc.platform_version {
            svc.platform_version = v;
            redeploy = true;
        }
    }
    if propagate.is_some() {
        svc.propagate_tags = propagate;
    }
    if let Some(m) = flag(body, "enableECSManagedTags") {
        svc.enable_ecs_managed_tags = m;
    }
    if let Some(e) = flag(body, "enableExecuteCommand") {
        svc.enable_execute_command = e;
    }
    let network = crate::api::ecs::parse_network_configuration(body)?;
    let given_td = body.get("taskDefinition").and_then(Value::as_str);
    if given_td.is_some()
        || network.is_some()
        || body.get("serviceRegistries").is_some()
        || body.get("loadBalancers").is_some()
    {
        let td = match given_td {
            Some(given) => resolve_taskdef(&state, given, true)?,
            None => taskdef_of(&state, &svc.task_definition).ok_or_else(|| {
                ApiError::client("The service's task definition no longer exists.")
            })?,
        };
        let network = network.or_else(|| svc.network_configuration.clone());
        let placement_given = !constraints
            .as_deref()
            .unwrap_or(&svc.placement_constraints)
            .is_empty()
            || !strategies
                .as_deref()
                .unwrap_or(&svc.placement_strategy)
                .is_empty();
        check_runs(&svc.launch_type, &td, placement_given, network.as_ref())?;
        check_groups(&state, network.as_ref())?;
        if let Some(regs) = service_registries(&state, body, &td)?
            && regs != svc.service_registries
        {
            svc.service_registries = regs;
            redeploy = true;
        }
        match load_balancers(&state, body, &td)? {
            Some(lbs) if lbs != svc.load_balancers => {
                svc.load_balancers = lbs;
                redeploy = true;
            }
            Some(_) => {}
            // A new definition must still carry the balanced ports.
            None if given_td.is_some() && !svc.load_balancers.is_empty() => {
                let current = json!({ "loadBalancers": svc.load_balancers });
                load_balancers(&state, &current, &td)?;
            }
            None => {}
        }
        if td.task_definition_arn != svc.task_definition {
            svc.task_definition = td.task_definition_arn;
            redeploy = true;
        }
        if network != svc.network_configuration {
            svc.network_configuration = network;
            redeploy = true;
        }
    }
    if let Some(c) = constraints
        && c != svc.placement_constraints
    {
        svc.placement_constraints = c;
        redeploy = true;
    }
    if let Some(s) = strategies
        && s != svc.placement_strategy
    {
        svc.placement_strategy = s;
        redeploy = true;
    }
    if let Some(n) = desired {
        svc.desired_count = n;
    }
    if grace.is_some() {
        svc.health_check_grace_period_seconds = grace;
    }
    let at = now();
    if redeploy && !svc.is_external() {
        let id = deployment_id(core);
        svc.new_deployment(at, id, "ECS deployment in progress.");
    } else if let Some(p) = svc.deployments.first_mut() {
        p.updated_at = at;
    }
    svc.steady = svc.steady && !redeploy && desired.is_none();
    save(core, &mut state, svc).await
}

/// Commits a service a request changed, wakes the scheduler to act on it,
/// and answers with it.
pub(crate) async fn save(core: &Core, state: &mut State, svc: Service) -> Result<Value, ApiError> {
    commit(core, state, &svc).await?;
    Ok(json!({ "service": service_view(state, &svc, false) }))
}

/// Commits a changed service and wakes the scheduler to act on it.
pub(crate) async fn commit(core: &Core, state: &mut State, svc: &Service) -> Result<(), ApiError> {
    state
        .apply(
            core.store.as_ref(),
            vec![Write::Service(Box::new(svc.clone()))],
        )
        .await?;
    core.wake.service(svc.key());
    Ok(())
}

pub(crate) async fn delete_service(core: &Core, body: &Value) -> Result<Value, ApiError> {
    let given = required(body, "service")?;
    let force = body.get("force").and_then(Value::as_bool).unwrap_or(false);
    let mut state = core.state.lock().await;
    let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?.clone();
    let mut svc = find_service(&state, &cluster.cluster_name, given)
        .cloned()
        .ok_or_else(service_not_found)?;
    match svc.status.as_str() {
        "DRAINING" => return Ok(json!({ "service": service_view(&state, &svc, false) })),
        "INACTIVE" => return Err(not_active()),
        _ => {}
    }
    if !svc.is_daemon() && svc.desired_count > 0 && !force {
        return Err(ApiError::invalid_parameter(
            "The service cannot be stopped while it is scaled above 0.",
        ));
    }
    svc.status = "DRAINING".into();
    svc.desired_count = 0;
    svc.steady = false;
    for set in &mut svc.task_sets {
        set.status = "DRAINING".into();
    }
    save(core, &mut state, svc).await
}

pub(crate) async fn describe_services(
    core: &Core,
    body: &Value,
    region: &str,
) -> Result<Value, ApiError> {
    let given = string_list(body, "services")?;
    if given.is_empty() || given.len() > 10 {
        return Err(ApiError::invalid_parameter(
            "services must name 1 to 10 services.",
        ));
    }
    let state = core.state.lock().await;
    let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?;
    let mut services = Vec::new();
    let mut failures = Vec::new();
    for g in given {
        match find_service(&state, &cluster.cluster_name, &g) {
            Some(s) => services.push(service_view(&state, s, includes(body, "TAGS"))),
            None => failures.push(Failure::missing(if g.starts_with("arn:") {
                g.clone()
            } else {
                arn(
                    "ecs",
                    region,
                    &format!("service/{}/{g}", cluster.cluster_name),
                )
            })),
        }
    }
    Ok(json!({ "services": services, "failures": failures }))
}

pub(crate) async fn list_services(core: &Core, body: &Value) -> Result<Value, ApiError> {
    let launch_type = body.get("launchType").and_then(Value::as_str);
    let strategy = body.get("schedulingStrategy").and_then(Value::as_str);
    if let Some(s) = strategy
        && !matches!(s, "REPLICA" | "DAEMON")
    {
        return Err(ApiError::invalid_parameter(
            "schedulingStrategy must be REPLICA or DAEMON.",
        ));
    }
    let state = core.state.lock().await;
    let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?;
    let arns: Vec<String> = state
        .services
        .values()
        .map(|s| &s.value)
        .filter(|s| s.cluster_arn == cluster.cluster_arn && s.status != "INACTIVE")
        .filter(|s| launch_type.is_none_or(|l| s.launch_type == l))
        .filter(|s| strategy.is_none_or(|st| s.scheduling_strategy == st))
        .map(|s| s.service_arn.clone())
        .collect();
    listed(body, "serviceArns", arns)
}

/// ListServicesByNamespace: the services (of any cluster) registered in
/// a Cloud Map namespace, named by name or ARN.
pub(crate) async fn list_services_by_namespace(
    core: &Core,
    body: &Value,
) -> Result<Value, ApiError> {
    let given = required(body, "namespace")?;
    let state = core.state.lock().await;
    let ns = state
        .discovery
        .namespaces
        .values()
        .find(|n| n.arn == given || n.name == given || n.id == given)
        .ok_or_else(|| {
            ApiError::not_found(
                "NamespaceNotFoundException",
                format!("The namespace {given} does not exist."),
            )
        })?;
    let in_namespace = |registry_arn: &str| {
        state
            .discovery
            .services
            .values()
            .any(|d| d.arn == registry_arn && d.namespace_id == ns.id)
    };
    let arns: Vec<String> = state
        .services
        .values()
        .map(|s| &s.value)
        .filter(|s| s.status == "ACTIVE")
        .filter(|s| {
            s.service_registries
                .iter()
                .any(|r| in_namespace(&r.registry_arn))
        })
        .map(|s| s.service_arn.clone())
        .collect();
    listed(body, "serviceArns", arns)
}

/// The services of a cluster that count as active (ACTIVE or DRAINING).
pub(crate) fn active_services(state: &State, cluster_arn: &str) -> usize {
    state
        .services
        .values()
        .filter(|s| s.value.cluster_arn == cluster_arn && s.value.status == "ACTIVE")
        .count()
}

/// Whether any service of the cluster is not yet INACTIVE.
pub(crate) fn has_services(state: &State, cluster_arn: &str) -> bool {
    state
        .services
        .values()
        .any(|s| s.value.cluster_arn == cluster_arn && s.value.status != "INACTIVE")
}
