//! ECS clusters: CreateCluster, DescribeClusters, ListClusters,
//! DeleteCluster.

use crate::api::ecs::services::{active_services, has_services};
use crate::api::protocol::json::{includes, listed, parse, refuse, required, to_value};
use crate::core::Core;
use crate::core::clusters::{active_cluster, check_cluster_name, new_cluster};
use crate::core::instances::is_pending;
use crate::core::model::{Cluster, Failure, KeyValue, Tag, arn, check_tags, name_of};
use crate::core::state::{State, Write};
use crate::error::ApiError;
use serde::Deserialize;
use serde_json::{Value, json};

pub(crate) fn cluster_view(
    state: &State,
    c: &Cluster,
    with_tags: bool,
    with_settings: bool,
) -> Value {
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
        "activeServicesCount": active_services(state, &c.cluster_arn),
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
pub(crate) struct CreateClusterReq {
    cluster_name: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(default)]
    settings: Vec<KeyValue>,
}

/// ECS's quota of clusters.
const MAX_CLUSTERS: usize = 10_000;

pub(crate) async fn create_cluster(
    core: &Core,
    body: &Value,
    region: &str,
) -> Result<Value, ApiError> {
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
    let mut state = core.state.lock().await;
    if let Some(c) = state
        .clusters
        .get(&name)
        .filter(|c| c.value.status == "ACTIVE")
    {
        // Creating an existing cluster returns it, as ECS does.
        return Ok(json!({ "cluster": cluster_view(&state, &c.value, true, true) }));
    }
    let active = state
        .clusters
        .values()
        .filter(|c| c.value.status == "ACTIVE")
        .count();
    if active >= MAX_CLUSTERS {
        return Err(ApiError::client(format!(
            "There are {active} clusters, ECS's quota per account and region ({MAX_CLUSTERS}): delete one first."
        )));
    }
    let cluster = new_cluster(&name, region, req.tags);
    state
        .apply(core.store.as_ref(), vec![Write::Cluster(cluster.clone())])
        .await?;
    Ok(json!({ "cluster": cluster_view(&state, &cluster, true, true) }))
}

pub(crate) async fn describe_clusters(core: &Core, body: &Value) -> Result<Value, ApiError> {
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
    let state = core.state.lock().await;
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
                arn("ecs", &core.config.region, &format!("cluster/{n}"))
            })),
        }
    }
    Ok(json!({ "clusters": clusters, "failures": failures }))
}

pub(crate) async fn list_clusters(core: &Core, body: &Value) -> Result<Value, ApiError> {
    let state = core.state.lock().await;
    let arns: Vec<String> = state
        .clusters
        .values()
        .filter(|c| c.value.status == "ACTIVE")
        .map(|c| c.value.cluster_arn.clone())
        .collect();
    listed(body, "clusterArns", arns)
}

pub(crate) async fn delete_cluster(core: &Core, body: &Value) -> Result<Value, ApiError> {
    let given = required(body, "cluster")?;
    let mut state = core.state.lock().await;
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
    if has_services(&state, &cluster.cluster_arn) {
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
        .apply(core.store.as_ref(), vec![Write::Cluster(c.clone())])
        .await?;
    Ok(json!({ "cluster": cluster_view(&state, &c, false, false) }))
}
