//! ECS clusters: CreateCluster, DescribeClusters, ListClusters,
//! DeleteCluster.

use crate::api::ecs::services::{active_services, has_services};
use crate::api::protocol::json::{includes, listed, parse, refuse, required, to_value};
use crate::core::Core;
use crate::core::capacity::{self, StrategyItem};
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
        "capacityProviders": c.capacity_providers,
        "defaultCapacityProviderStrategy": c.default_capacity_provider_strategy,
    });
    if let Some(conf) = &c.configuration {
        v["configuration"] = conf.clone();
    }
    if with_tags {
        v["tags"] = to_value(&c.tags);
    }
    if with_settings {
        v["settings"] = to_value(&c.settings);
    }
    v
}

/// DescribeClusters' `STATISTICS`: running and pending tasks and active
/// and draining services of the cluster, by launch type, as ECS names
/// them (values are strings).
fn statistics(state: &State, c: &Cluster) -> Value {
    let kind = |launch_type: &str| match launch_type {
        "FARGATE" => "Fargate",
        "EXTERNAL" => "External",
        _ => "EC2",
    };
    let mut counts: std::collections::BTreeMap<String, usize> = ["EC2", "Fargate"]
        .iter()
        .flat_map(|k| {
            [
                format!("running{k}TasksCount"),
                format!("pending{k}TasksCount"),
                format!("active{k}ServiceCount"),
                format!("draining{k}ServiceCount"),
            ]
        })
        .map(|name| (name, 0))
        .collect();
    for t in state.tasks.values().map(|t| &t.value) {
        if t.cluster_arn != c.cluster_arn || t.last_status == "STOPPED" {
            continue;
        }
        let k = kind(&t.launch_type);
        if t.last_status == "RUNNING" {
            *counts.entry(format!("running{k}TasksCount")).or_default() += 1;
        } else if is_pending(t) {
            *counts.entry(format!("pending{k}TasksCount")).or_default() += 1;
        }
    }
    for s in state.services.values().map(|s| &s.value) {
        if s.cluster_arn != c.cluster_arn {
            continue;
        }
        let k = kind(&s.launch_type);
        match s.status.as_str() {
            "ACTIVE" => *counts.entry(format!("active{k}ServiceCount")).or_default() += 1,
            "DRAINING" => {
                *counts
                    .entry(format!("draining{k}ServiceCount"))
                    .or_default() += 1
            }
            _ => {}
        }
    }
    Value::Array(
        counts
            .into_iter()
            .map(|(name, n)| json!({"name": name, "value": n.to_string()}))
            .collect(),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateClusterReq {
    cluster_name: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(default)]
    settings: Vec<KeyValue>,
    #[serde(default)]
    capacity_providers: Vec<String>,
    #[serde(default)]
    default_capacity_provider_strategy: Vec<StrategyItem>,
}

/// ECS's quota of clusters.
const MAX_CLUSTERS: usize = 10_000;

pub(crate) async fn create_cluster(
    core: &Core,
    body: &Value,
    region: &str,
) -> Result<Value, ApiError> {
    refuse(body, &["serviceConnectDefaults"])?;
    let req: CreateClusterReq = parse(body)?;
    let name = req.cluster_name.unwrap_or_else(|| "default".into());
    check_cluster_name(&name)?;
    check_tags(&req.tags)?;
    check_settings(&req.settings)?;
    let configuration = configuration(body)?;
    capacity::check_associated(&req.capacity_providers)?;
    capacity::check_strategy(
        &req.default_capacity_provider_strategy,
        &req.capacity_providers,
    )?;
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
    let mut cluster = new_cluster(&name, region, req.tags);
    cluster.capacity_providers = req.capacity_providers;
    cluster.default_capacity_provider_strategy = req.default_capacity_provider_strategy;
    cluster.configuration = configuration;
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
            Some(c) => {
                let mut view = cluster_view(
                    &state,
                    &c.value,
                    includes(body, "TAGS"),
                    includes(body, "SETTINGS"),
                );
                if includes(body, "STATISTICS") {
                    view["statistics"] = statistics(&state, &c.value);
                }
                clusters.push(view);
            }
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

/// Cluster settings: containerInsights, which skiff keeps disabled.
fn check_settings(settings: &[KeyValue]) -> Result<(), ApiError> {
    for s in settings {
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
                "containerInsights enabled is not supported by skiff: its metrics are CloudWatch's ECS/ContainerInsights, which skiff does not publish; set it to disabled",
            ));
        }
    }
    Ok(())
}

/// A cluster's `configuration`: execute-command settings are kept as
/// data (a Wasm task has no shell to open a session into, so
/// ExecuteCommand is refused whatever they say); managed storage (KMS
/// keys for Fargate's ephemeral storage) has no meaning here.
fn configuration(body: &Value) -> Result<Option<Value>, ApiError> {
    let Some(conf) = body.get("configuration").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    refuse(conf, &["managedStorageConfiguration"])?;
    if let Some(logging) = conf
        .pointer("/executeCommandConfiguration/logging")
        .and_then(Value::as_str)
        && !matches!(logging, "NONE" | "DEFAULT" | "OVERRIDE")
    {
        return Err(ApiError::invalid_parameter(format!(
            "executeCommandConfiguration.logging must be NONE, DEFAULT or OVERRIDE, not {logging}."
        )));
    }
    Ok(Some(conf.clone()))
}

/// UpdateCluster: settings and configuration.
pub(crate) async fn update_cluster(core: &Core, body: &Value) -> Result<Value, ApiError> {
    refuse(body, &["serviceConnectDefaults"])?;
    let given = required(body, "cluster")?;
    let settings: Vec<KeyValue> = match body.get("settings") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => parse(v)?,
    };
    check_settings(&settings)?;
    let configuration = configuration(body)?;
    let mut state = core.state.lock().await;
    let mut c = active_cluster(&state, Some(given))?.clone();
    if configuration.is_some() {
        c.configuration = configuration;
    }
    state
        .apply(core.store.as_ref(), vec![Write::Cluster(c.clone())])
        .await?;
    Ok(json!({ "cluster": cluster_view(&state, &c, true, true) }))
}

/// UpdateClusterSettings.
pub(crate) async fn update_cluster_settings(core: &Core, body: &Value) -> Result<Value, ApiError> {
    let given = required(body, "cluster")?;
    let settings: Vec<KeyValue> = crate::api::protocol::json::parse_member(body, "settings")?;
    check_settings(&settings)?;
    let state = core.state.lock().await;
    let c = active_cluster(&state, Some(given))?;
    Ok(json!({ "cluster": cluster_view(&state, c, true, true) }))
}

/// PutClusterCapacityProviders: which built-in providers the cluster
/// uses, and its default strategy. A provider a service's strategy names
/// stays.
pub(crate) async fn put_cluster_capacity_providers(
    core: &Core,
    body: &Value,
) -> Result<Value, ApiError> {
    let given = required(body, "cluster")?;
    let providers: Vec<String> = match body.get("capacityProviders") {
        Some(v @ Value::Array(_)) => parse(v)?,
        _ => {
            return Err(ApiError::invalid_parameter(
                "capacityProviders is required (an empty list removes them all).",
            ));
        }
    };
    let strategy: Vec<StrategyItem> = match body.get("defaultCapacityProviderStrategy") {
        Some(v @ Value::Array(_)) => parse(v)?,
        _ => {
            return Err(ApiError::invalid_parameter(
                "defaultCapacityProviderStrategy is required (an empty list sets none).",
            ));
        }
    };
    capacity::check_associated(&providers)?;
    capacity::check_strategy(&strategy, &providers)?;
    let mut state = core.state.lock().await;
    let mut c = active_cluster(&state, Some(given))?.clone();
    let in_use = state
        .services
        .values()
        .map(|s| &s.value)
        .filter(|s| s.cluster_arn == c.cluster_arn && s.status != "INACTIVE")
        .flat_map(|s| s.capacity_provider_strategy.iter())
        .find(|i| !providers.contains(&i.capacity_provider));
    if let Some(i) = in_use {
        return Err(ApiError::coded(
            "ResourceInUseException",
            format!(
                "The specified capacity provider {} is in use and cannot be removed.",
                i.capacity_provider
            ),
        ));
    }
    c.capacity_providers = providers;
    c.default_capacity_provider_strategy = strategy;
    state
        .apply(core.store.as_ref(), vec![Write::Cluster(c.clone())])
        .await?;
    Ok(json!({ "cluster": cluster_view(&state, &c, true, true) }))
}

/// DescribeCapacityProviders: the two built in.
pub(crate) fn describe_capacity_providers(body: &Value, region: &str) -> Result<Value, ApiError> {
    let wanted: Vec<String> = match body.get("capacityProviders") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => parse(v)?,
    };
    let view = |name: &str| {
        json!({
            "capacityProviderArn": arn("ecs", region, &format!("capacity-provider/{name}")),
            "name": name,
            "status": "ACTIVE",
            "tags": [],
        })
    };
    let mut found = Vec::new();
    let mut failures = Vec::new();
    if wanted.is_empty() {
        found = capacity::BUILT_IN.iter().map(|n| view(n)).collect();
    }
    for w in &wanted {
        let n = name_of(w);
        if capacity::BUILT_IN.contains(&n) {
            found.push(view(n));
        } else {
            failures.push(Failure::missing(if w.starts_with("arn:") {
                w.clone()
            } else {
                arn("ecs", region, &format!("capacity-provider/{w}"))
            }));
        }
    }
    Ok(json!({ "capacityProviders": found, "failures": failures }))
}
