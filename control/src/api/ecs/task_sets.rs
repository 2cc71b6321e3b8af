//! ECS task sets, for services with the `EXTERNAL` deployment controller:
//! CreateTaskSet, DescribeTaskSets, UpdateTaskSet, DeleteTaskSet and
//! UpdateServicePrimaryTaskSet. The scheduler's side is
//! [`crate::core::services::task_sets`].

use super::service_fields::{load_balancers, service_registries};
use super::services::{
    check_groups, check_runs, commit, find_service, not_active, service_not_found,
};
use crate::api::protocol::json::{includes, parse, required, string_list, to_value};
use crate::core::Core;
use crate::core::clusters::active_cluster;
use crate::core::model::{Failure, Tag, check_tags, now};
use crate::core::services::task_sets::{Scale, ScaleUnit, TaskSet};
use crate::core::services::{Service, deployment_id, live};
use crate::core::state::State;
use crate::core::tasks::resolve_taskdef;
use crate::error::ApiError;
use serde_json::{Value, json};

/// A task set as DescribeTaskSets shows it: the stored record with its
/// computed desired count and the counts of its tasks.
pub(crate) fn view(state: &State, svc: &Service, set: &TaskSet, with_tags: bool) -> Value {
    let (mut running, mut pending) = (0, 0);
    for t in state.tasks_of_service(&svc.key()) {
        if set.owns(t) && live(t) {
            if t.last_status == "RUNNING" {
                running += 1;
            } else {
                pending += 1;
            }
        }
    }
    let mut v = json!({
        "id": set.id,
        "taskSetArn": set.task_set_arn,
        "serviceArn": svc.service_arn,
        "clusterArn": svc.cluster_arn,
        "status": set.status,
        "taskDefinition": set.task_definition,
        "computedDesiredCount": set.computed_desired_count(
            if svc.status == "ACTIVE" && set.status != "DRAINING" { svc.desired_count } else { 0 }
        ),
        "pendingCount": pending,
        "runningCount": running,
        "createdAt": set.created_at,
        "updatedAt": set.updated_at,
        "loadBalancers": set.load_balancers,
        "serviceRegistries": set.service_registries,
        "scale": set.scale,
        "stabilityStatus": set.stability_status,
        "stabilityStatusAt": set.stability_status_at,
    });
    if let Some(x) = &set.external_id {
        v["externalId"] = json!(x);
    }
    if set.capacity_provider_strategy.is_empty() {
        v["launchType"] = json!(set.launch_type);
    } else {
        v["capacityProviderStrategy"] = json!(set.capacity_provider_strategy);
    }
    if let Some(p) = &set.platform_version {
        v["platformVersion"] = json!(p);
        v["platformFamily"] = json!("Linux");
    }
    if let Some(n) = &set.network_configuration {
        v["networkConfiguration"] = super::services::network_view(n);
    }
    if with_tags {
        v["tags"] = to_value(&set.tags);
    }
    v
}

/// Commits `svc` (waking the scheduler) and answers with its task set
/// `set`.
async fn saved(
    core: &Core,
    state: &mut State,
    svc: Service,
    set: &TaskSet,
) -> Result<Value, ApiError> {
    commit(core, state, &svc).await?;
    Ok(json!({ "taskSet": view(state, &svc, set, false) }))
}

/// Gives `svc` its primary task set's settings, which DescribeServices
/// shows as the service's own — or, without a primary, none (null, as on
/// ECS).
fn show_primary(svc: &mut Service, primary: Option<&TaskSet>) {
    svc.task_definition = primary
        .map(|p| p.task_definition.clone())
        .unwrap_or_default();
    svc.launch_type = primary.map(|p| p.launch_type.clone()).unwrap_or_default();
    svc.capacity_provider_strategy = primary
        .map(|p| p.capacity_provider_strategy.clone())
        .unwrap_or_default();
    svc.platform_version = primary.and_then(|p| p.platform_version.clone());
    svc.network_configuration = primary.and_then(|p| p.network_configuration.clone());
    svc.load_balancers = primary
        .map(|p| p.load_balancers.clone())
        .unwrap_or_default();
    svc.service_registries = primary
        .map(|p| p.service_registries.clone())
        .unwrap_or_default();
}

/// The ACTIVE EXTERNAL service a task set request names, cloned to be
/// changed.
fn external_service(state: &State, body: &Value) -> Result<Service, ApiError> {
    let cluster = active_cluster(state, Some(required(body, "cluster")?))?;
    let svc = find_service(state, &cluster.cluster_name, required(body, "service")?)
        .ok_or_else(service_not_found)?;
    if svc.status != "ACTIVE" {
        return Err(not_active());
    }
    if !svc.is_external() {
        return Err(ApiError::invalid_parameter(
            "Amazon ECS only supports task set management on services configured to use external deployment controllers.",
        ));
    }
    Ok(svc.clone())
}

/// The index of the task set `given` (its id or ARN) names in `svc`.
fn find_set(svc: &Service, given: &str) -> Result<usize, ApiError> {
    svc.task_sets
        .iter()
        .position(|s| s.id == given || s.task_set_arn == given)
        .ok_or_else(|| {
            ApiError::not_found(
                "TaskSetNotFoundException",
                format!(
                    "The specified task set {given} does not exist in service {}.",
                    svc.service_name
                ),
            )
        })
}

/// How many task sets (not DRAINING) a service may have at once.
const MAX_TASK_SETS: usize = 10;

/// A request's `scale` (100 percent when absent).
fn scale(body: &Value) -> Result<Option<Scale>, ApiError> {
    let Some(v) = body.get("scale").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let value = v.get("value").and_then(Value::as_f64).unwrap_or(0.0);
    let unit = match v.get("unit").and_then(Value::as_str) {
        None | Some("PERCENT") => ScaleUnit::Percent,
        Some(other) => {
            return Err(ApiError::invalid_parameter(format!(
                "scale.unit must be PERCENT, not {other:?}."
            )));
        }
    };
    if !(0.0..=100.0).contains(&value) {
        return Err(ApiError::invalid_parameter(format!(
            "scale.value is a percentage of the service's desiredCount, from 0 to 100, not {value}."
        )));
    }
    Ok(Some(Scale { value, unit }))
}

pub(crate) async fn create(core: &Core, body: &Value, region: &str) -> Result<Value, ApiError> {
    let given_td = required(body, "taskDefinition")?;
    let scale = scale(body)?.unwrap_or(Scale {
        value: 100.0,
        unit: ScaleUnit::Percent,
    });
    let tags: Vec<Tag> = match body.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => parse(v)?,
    };
    check_tags(&tags)?;
    let external_id = body.get("externalId").and_then(Value::as_str);
    if external_id.is_some_and(|x| x.is_empty() || x.len() > 255) {
        return Err(ApiError::invalid_parameter(
            "externalId must be 1 to 255 characters.",
        ));
    }
    let client_token = body.get("clientToken").and_then(Value::as_str);
    if client_token.is_some_and(|t| t.is_empty() || t.len() > 36) {
        return Err(ApiError::invalid_parameter(
            "clientToken must be 1 to 36 characters.",
        ));
    }
    let mut state = core.state.lock().await;
    let mut svc = external_service(&state, body)?;
    let live = svc
        .task_sets
        .iter()
        .filter(|s| s.status != "DRAINING")
        .count();
    if live >= MAX_TASK_SETS
        && client_token.is_none_or(|t| {
            !svc.task_sets
                .iter()
                .any(|s| s.client_token.as_deref() == Some(t))
        })
    {
        return Err(ApiError::client(format!(
            "Service {} has {live} task sets, skiff's most ({MAX_TASK_SETS}): delete one first.",
            svc.service_name
        )));
    }
    if let Some(token) = client_token
        && let Some(set) = svc
            .task_sets
            .iter()
            .find(|s| s.client_token.as_deref() == Some(token))
    {
        return Ok(json!({ "taskSet": view(&state, &svc, set, false) }));
    }
    let cluster = active_cluster(&state, Some(required(body, "cluster")?))?.clone();
    let choice = super::launch::choose(body, &cluster)?;
    let td = resolve_taskdef(&state, given_td, true)?;
    let network = crate::api::ecs::parse_network_configuration(body)?;
    let placed = !svc.placement_constraints.is_empty() || !svc.placement_strategy.is_empty();
    check_runs(&choice.launch_type, &td, placed, network.as_ref())?;
    check_groups(&state, network.as_ref())?;
    let registries = service_registries(&state, body, &td)?.unwrap_or_default();
    let balancers = load_balancers(&state, body, &td)?.unwrap_or_default();
    let id = deployment_id(core);
    let at = now();
    let set = TaskSet {
        task_set_arn: crate::core::model::arn(
            "ecs",
            region,
            &format!(
                "task-set/{}/{}/{id}",
                crate::core::model::name_of(&svc.cluster_arn),
                svc.service_name
            ),
        ),
        id,
        external_id: external_id.map(String::from),
        status: "ACTIVE".into(),
        task_definition: td.task_definition_arn.clone(),
        launch_type: choice.launch_type,
        capacity_provider_strategy: choice.providers,
        platform_version: choice.platform_version,
        network_configuration: network,
        load_balancers: balancers,
        service_registries: registries,
        scale,
        created_at: at,
        updated_at: at,
        stability_status: "STABILIZING".into(),
        stability_status_at: at,
        tags,
        client_token: client_token.map(String::from),
    };
    svc.task_sets.push(set.clone());
    svc.steady = false;
    saved(core, &mut state, svc, &set).await
}

pub(crate) async fn describe(core: &Core, body: &Value, region: &str) -> Result<Value, ApiError> {
    let wanted = match body.get("taskSets") {
        None | Some(Value::Null) => None,
        Some(_) => Some(string_list(body, "taskSets")?),
    };
    let with_tags = includes(body, "TAGS");
    let state = core.state.lock().await;
    let svc = external_service(&state, body)?;
    let mut sets = Vec::new();
    let mut failures = Vec::new();
    match wanted {
        None => sets.extend(
            svc.task_sets
                .iter()
                .map(|s| view(&state, &svc, s, with_tags)),
        ),
        Some(ids) => {
            for given in ids {
                match find_set(&svc, &given) {
                    Ok(i) => sets.push(view(&state, &svc, &svc.task_sets[i], with_tags)),
                    Err(_) => failures.push(Failure::missing(if given.starts_with("arn:") {
                        given.clone()
                    } else {
                        crate::core::model::arn(
                            "ecs",
                            region,
                            &format!(
                                "task-set/{}/{}/{given}",
                                crate::core::model::name_of(&svc.cluster_arn),
                                svc.service_name
                            ),
                        )
                    })),
                }
            }
        }
    }
    Ok(json!({ "taskSets": sets, "failures": failures }))
}

pub(crate) async fn update(core: &Core, body: &Value) -> Result<Value, ApiError> {
    let given = required(body, "taskSet")?;
    let scale = scale(body)?.ok_or_else(|| {
        ApiError::invalid_parameter(
            "scale is required: the task set's new share of the service's desiredCount.",
        )
    })?;
    let mut state = core.state.lock().await;
    let mut svc = external_service(&state, body)?;
    let i = find_set(&svc, given)?;
    if svc.task_sets[i].status == "DRAINING" {
        return Err(ApiError::invalid_parameter(format!(
            "The task set {} is being deleted (DRAINING): it cannot be scaled.",
            svc.task_sets[i].id
        )));
    }
    let set = &mut svc.task_sets[i];
    set.scale = scale;
    set.updated_at = now();
    let set = set.clone();
    saved(core, &mut state, svc, &set).await
}

pub(crate) async fn delete(core: &Core, body: &Value) -> Result<Value, ApiError> {
    let given = required(body, "taskSet")?;
    let force = body.get("force").and_then(Value::as_bool).unwrap_or(false);
    let mut state = core.state.lock().await;
    let mut svc = external_service(&state, body)?;
    let i = find_set(&svc, given)?;
    let desired = svc.desired_count;
    let set = &mut svc.task_sets[i];
    if set.status != "DRAINING" && set.computed_desired_count(desired) > 0 && !force {
        return Err(ApiError::invalid_parameter(format!(
            "The task set {} has not been scaled down to zero (its computed desired count is {}): scale it to 0 with UpdateTaskSet first, or delete it with force.",
            set.id,
            set.computed_desired_count(desired)
        )));
    }
    if set.status == "PRIMARY" {
        show_primary(&mut svc, None);
    }
    let set = &mut svc.task_sets[i];
    set.status = "DRAINING".into();
    set.updated_at = now();
    let set = set.clone();
    saved(core, &mut state, svc, &set).await
}

pub(crate) async fn make_primary(core: &Core, body: &Value) -> Result<Value, ApiError> {
    let given = required(body, "primaryTaskSet")?;
    let mut state = core.state.lock().await;
    let mut svc = external_service(&state, body)?;
    let i = find_set(&svc, given)?;
    if svc.task_sets[i].status == "DRAINING" {
        return Err(ApiError::invalid_parameter(format!(
            "The task set {} is being deleted (DRAINING): it cannot become the primary task set.",
            svc.task_sets[i].id
        )));
    }
    let at = now();
    for (j, set) in svc.task_sets.iter_mut().enumerate() {
        let status = if j == i { "PRIMARY" } else { "ACTIVE" };
        if set.status != "DRAINING" && set.status != status {
            set.status = status.into();
            set.updated_at = at;
        }
    }
    let set = svc.task_sets[i].clone();
    show_primary(&mut svc, Some(&set));
    let name = svc.service_name.clone();
    svc.event(
        at,
        format!(
            "(service {name}) updated its primary task set to {}.",
            set.id
        ),
    );
    saved(core, &mut state, svc, &set).await
}
