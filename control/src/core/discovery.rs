//! Service discovery as the core keeps it: Cloud Map's namespaces and
//! services (one document in the state), the instances each answers (the
//! registered ones and the tasks of the ECS services registering in it),
//! and the DNS names pushed into the fabric for task name lookups. Cloud
//! Map's API for it is `crate::api::cloudmap`.

use crate::core::model::Task;
use crate::core::state::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use skiff_channel::fabric::Fabric;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    pub id: String,
    pub arn: String,
    pub name: String,
    /// DNS_PRIVATE or HTTP.
    pub kind: String,
    pub description: Option<String>,
    pub vpc: Option<String>,
    pub created_at: f64,
    pub creator_request_id: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub updated_at: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryService {
    pub id: String,
    pub arn: String,
    pub name: String,
    pub namespace_id: String,
    pub description: Option<String>,
    /// The A record's TTL (DNS namespaces).
    pub ttl: Option<u64>,
    pub custom_health: bool,
    pub created_at: f64,
    pub creator_request_id: Option<String>,
    /// Instances registered through the API, by id: their attributes.
    #[serde(default)]
    pub instances: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Service attributes (UpdateServiceAttributes).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Instances UpdateInstanceCustomHealthStatus set UNHEALTHY: left out
    /// of DNS answers and DiscoverInstances (HEALTHY).
    #[serde(default)]
    pub unhealthy: std::collections::BTreeSet<String>,
}

/// Everything discovery keeps, stored as one document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    pub namespaces: BTreeMap<String, Namespace>,
    pub services: BTreeMap<String, DiscoveryService>,
    /// Operations (namespace creation and deletion are asynchronous in
    /// Cloud Map; here they are done when answered), by id.
    #[serde(default)]
    pub operations: BTreeMap<String, Value>,
}

/// How many ECS services (not deleted) register in the discovery service
/// with this ARN.
pub(crate) fn ecs_users(state: &State, registry_arn: &str) -> usize {
    state
        .services
        .values()
        .filter(|s| s.value.status != "INACTIVE" && s.value.uses_registry(registry_arn))
        .count()
}

/// An awsvpc task's address.
pub(crate) fn task_ip(t: &Task) -> Option<Ipv4Addr> {
    t.attachments
        .iter()
        .filter(|a| a["type"] == "ElasticNetworkInterface" && a["status"] == "ATTACHED")
        .flat_map(|a| a["details"].as_array().into_iter().flatten())
        .find(|d| d["name"] == "privateIPv4Address")
        .and_then(|d| d["value"].as_str())
        .and_then(|v| v.parse().ok())
}

/// Is the task one discovery should answer: running, wanted, and healthy
/// if it is checked?
fn discoverable(t: &Task) -> bool {
    t.last_status == "RUNNING"
        && t.desired_status == "RUNNING"
        && t.health_status.as_deref().is_none_or(|h| h == "HEALTHY")
}

/// A discovery service's instances: the registered ones, and the tasks of
/// the ECS services registering in it.
pub(crate) fn instances(
    state: &State,
    s: &DiscoveryService,
) -> Vec<(String, BTreeMap<String, String>)> {
    let mut out: Vec<(String, BTreeMap<String, String>)> = s
        .instances
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for svc in state.services.values().map(|e| &e.value) {
        if svc.status == "INACTIVE" || !svc.uses_registry(&s.arn) {
            continue;
        }
        let group = format!("service:{}", svc.service_name);
        for t in state.tasks.values().map(|e| &e.value) {
            if t.cluster_arn != svc.cluster_arn
                || t.group.as_deref() != Some(&group)
                || !discoverable(t)
                || !svc
                    .registries_for(t.started_by.as_deref())
                    .iter()
                    .any(|r| r.registry_arn == s.arn)
            {
                continue;
            }
            if let Some(ip) = task_ip(t) {
                let mut attrs = BTreeMap::new();
                attrs.insert("AWS_INSTANCE_IPV4".to_string(), ip.to_string());
                attrs.insert("ECS_CLUSTER_NAME".to_string(), t.cluster_name().to_string());
                attrs.insert("ECS_SERVICE_NAME".to_string(), svc.service_name.clone());
                attrs.insert(
                    "ECS_TASK_DEFINITION_FAMILY".to_string(),
                    t.task_definition_arn
                        .rsplit('/')
                        .next()
                        .unwrap_or_default()
                        .split(':')
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                );
                // A task set's tasks carry its external id, as on ECS.
                if let Some(x) = svc
                    .task_set_of(t.started_by.as_deref())
                    .and_then(|ts| ts.external_id.as_ref())
                {
                    attrs.insert("ECS_TASK_SET_EXTERNAL_ID".to_string(), x.clone());
                }
                out.push((t.id().to_string(), attrs));
            }
        }
    }
    out
}

/// Puts every DNS name's current addresses into the fabric.
pub(crate) fn refresh(state: &State, fabric: &Fabric) {
    for s in state.discovery.services.values() {
        let Some(ns) = state.discovery.namespaces.get(&s.namespace_id) else {
            continue;
        };
        if ns.kind != "DNS_PRIVATE" {
            continue;
        }
        let ips: Vec<Ipv4Addr> = instances(state, s)
            .into_iter()
            .filter(|(id, _)| !s.unhealthy.contains(id))
            .collect::<Vec<_>>()
            .iter()
            .filter_map(|(_, a)| a.get("AWS_INSTANCE_IPV4")?.parse().ok())
            .collect();
        fabric.set_name(&format!("{}.{}", s.name, ns.name), ips);
    }
}

/// Names that no longer exist leave the fabric (after a delete).
pub(crate) fn forget_missing(before: &Registry, after: &Registry, fabric: &Fabric) {
    for s in before.services.values() {
        if !after.services.contains_key(&s.id)
            && let Some(ns) = before.namespaces.get(&s.namespace_id)
        {
            fabric.set_name(&format!("{}.{}", s.name, ns.name), Vec::new());
        }
    }
}
