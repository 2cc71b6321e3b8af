//! Cloud Map beyond create/list/delete: Update*Namespace and
//! UpdateService, service attributes, GetInstance,
//! GetInstancesHealthStatus and UpdateInstanceCustomHealthStatus, tags,
//! ListOperations and DiscoverInstancesRevision.

use super::cloudmap::{invalid, namespace, operation, required, service, service_not_found};
use crate::core::discovery::{Registry, instances};
use crate::core::model::now;
use crate::core::state::State;
use crate::error::ApiError;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

/// What an operation here did: answered from the registry as it is, or
/// changed it (to be committed).
pub(super) enum Done {
    Read(Value),
    Changed(Value),
}

/// A request's `Tags` ([{Key, Value}]).
pub(super) fn tags(body: &Value) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for t in body
        .get("Tags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = t["Key"]
            .as_str()
            .ok_or_else(|| invalid("every tag needs a Key"))?;
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(invalid(format!(
                "Tag key {key} uses the reserved prefix aws:"
            )));
        }
        out.insert(
            key.to_string(),
            t["Value"].as_str().unwrap_or("").to_string(),
        );
    }
    if out.len() > 50 {
        return Err(ApiError::coded(
            "TooManyTagsException",
            "A resource can have at most 50 tags.",
        ));
    }
    Ok(out)
}

/// The revision of a service's instances: changes whenever they do.
fn revision(list: &[(String, BTreeMap<String, String>)]) -> i64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    list.hash(&mut h);
    (h.finish() >> 1) as i64
}

/// Handles the operations here; `None` for any other.
pub(super) fn handle(
    state: &State,
    reg: &mut Registry,
    op: &str,
    body: &Value,
) -> Option<Result<Done, ApiError>> {
    OPERATIONS.contains(&op).then(|| run(state, reg, op, body))
}

/// The operations [`handle`] answers.
const OPERATIONS: &[&str] = &[
    "UpdateHttpNamespace",
    "UpdatePrivateDnsNamespace",
    "UpdateService",
    "GetServiceAttributes",
    "UpdateServiceAttributes",
    "DeleteServiceAttributes",
    "GetInstance",
    "GetInstancesHealthStatus",
    "UpdateInstanceCustomHealthStatus",
    "TagResource",
    "UntagResource",
    "ListTagsForResource",
    "ListOperations",
    "DiscoverInstancesRevision",
];

fn run(state: &State, reg: &mut Registry, op: &str, body: &Value) -> Result<Done, ApiError> {
    match op {
        "UpdateHttpNamespace" | "UpdatePrivateDnsNamespace" => update_namespace(reg, op, body),
        "UpdateService" => update_service(reg, body),
        "GetServiceAttributes" => {
            let s = service(reg, required(body, "ServiceId")?)?;
            Ok(Done::Read(json!({ "ServiceAttributes": {
                "ServiceArn": s.arn, "Attributes": s.attributes,
            }})))
        }
        "UpdateServiceAttributes" => {
            let attrs: BTreeMap<String, String> = body
                .get("Attributes")
                .and_then(Value::as_object)
                .ok_or_else(|| invalid("Attributes is required"))?
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let s = reg
                .services
                .get_mut(required(body, "ServiceId")?)
                .ok_or_else(service_not_found)?;
            s.attributes.extend(attrs);
            if s.attributes.len() > 30 {
                return Err(ApiError::coded(
                    "ServiceAttributesLimitExceededException",
                    "A service can have at most 30 attributes.",
                ));
            }
            Ok(Done::Changed(json!({})))
        }
        "DeleteServiceAttributes" => {
            let keys: Vec<&str> = body
                .get("Attributes")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("Attributes is required"))?
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let s = reg
                .services
                .get_mut(required(body, "ServiceId")?)
                .ok_or_else(service_not_found)?;
            for k in keys {
                s.attributes.remove(k);
            }
            Ok(Done::Changed(json!({})))
        }
        "GetInstance" => {
            let s = service(reg, required(body, "ServiceId")?)?;
            let id = required(body, "InstanceId")?;
            let (_, attrs) = instances(state, s)
                .into_iter()
                .find(|(i, _)| i == id)
                .ok_or_else(|| ApiError::coded("InstanceNotFound", format!("No instance {id}")))?;
            Ok(Done::Read(
                json!({ "ResourceOwner": crate::core::model::account(), "Instance": { "Id": id, "Attributes": attrs } }),
            ))
        }
        "GetInstancesHealthStatus" => {
            let s = service(reg, required(body, "ServiceId")?)?;
            let wanted: Vec<&str> = body
                .get("Instances")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let status: BTreeMap<String, &str> = instances(state, s)
                .into_iter()
                .filter(|(id, _)| wanted.is_empty() || wanted.contains(&id.as_str()))
                .map(|(id, _)| {
                    let h = if s.unhealthy.contains(&id) {
                        "UNHEALTHY"
                    } else {
                        "HEALTHY"
                    };
                    (id, h)
                })
                .collect();
            Ok(Done::Read(json!({ "Status": status })))
        }
        "UpdateInstanceCustomHealthStatus" => {
            let id = required(body, "InstanceId")?.to_string();
            let healthy = match required(body, "Status")? {
                "HEALTHY" => true,
                "UNHEALTHY" => false,
                other => {
                    return Err(invalid(format!(
                        "Status must be HEALTHY or UNHEALTHY, not {other}"
                    )));
                }
            };
            let s = reg
                .services
                .get_mut(required(body, "ServiceId")?)
                .ok_or_else(service_not_found)?;
            if !s.custom_health {
                return Err(ApiError::coded(
                    "CustomHealthNotFound",
                    "The service has no HealthCheckCustomConfig.",
                ));
            }
            if !s.instances.contains_key(&id) {
                return Err(ApiError::coded(
                    "InstanceNotFound",
                    format!(
                        "No instance {id} registered through the API (ECS sets its tasks' health)"
                    ),
                ));
            }
            if healthy {
                s.unhealthy.remove(&id);
            } else {
                s.unhealthy.insert(id);
            }
            Ok(Done::Changed(json!({})))
        }
        "TagResource" | "UntagResource" => {
            let arn = required(body, "ResourceARN")?;
            let (add, remove) = if op == "TagResource" {
                (tags(body)?, Vec::new())
            } else {
                let keys = body
                    .get("TagKeys")
                    .and_then(Value::as_array)
                    .ok_or_else(|| invalid("TagKeys is required"))?
                    .iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect();
                (BTreeMap::new(), keys)
            };
            let target = tags_of(reg, arn)?;
            for k in remove {
                target.remove(&k);
            }
            target.extend(add);
            if target.len() > 50 {
                return Err(ApiError::coded(
                    "TooManyTagsException",
                    "A resource can have at most 50 tags.",
                ));
            }
            Ok(Done::Changed(json!({})))
        }
        "ListTagsForResource" => {
            let arn = required(body, "ResourceARN")?;
            let list: Vec<Value> = tags_of(reg, arn)?
                .iter()
                .map(|(k, v)| json!({ "Key": k, "Value": v }))
                .collect();
            Ok(Done::Read(json!({ "Tags": list })))
        }
        "ListOperations" => {
            let mut filters: Vec<(String, Vec<String>)> = Vec::new();
            for f in body
                .get("Filters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = f["Name"].as_str().unwrap_or_default().to_string();
                let values = f["Values"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default();
                filters.push((name, values));
            }
            let list: Vec<Value> = reg
                .operations
                .values()
                .filter(|o| {
                    filters.iter().all(|(name, values)| {
                        let have = match name.as_str() {
                            "NAMESPACE_ID" => o["Targets"]["NAMESPACE"].as_str(),
                            "SERVICE_ID" => o["Targets"]["SERVICE"].as_str(),
                            "STATUS" => o["Status"].as_str(),
                            "TYPE" => o["Type"].as_str(),
                            _ => None,
                        };
                        have.is_some_and(|h| values.iter().any(|v| v == h))
                    })
                })
                .map(|o| json!({ "Id": o["Id"], "Status": o["Status"] }))
                .collect();
            Ok(Done::Read(json!({ "Operations": list })))
        }
        "DiscoverInstancesRevision" => {
            let (_, s) = super::cloudmap::by_names(reg, body)?;
            Ok(Done::Read(
                json!({ "InstancesRevision": instances_revision(state, s) }),
            ))
        }
        other => Err(ApiError::unknown_operation(other)),
    }
}

/// DiscoverInstances' `InstancesRevision` for a service.
pub(super) fn instances_revision(
    state: &State,
    s: &crate::core::discovery::DiscoveryService,
) -> i64 {
    let mut list = instances(state, s);
    for (id, attrs) in &mut list {
        if s.unhealthy.contains(id) {
            attrs.insert("-health".into(), "UNHEALTHY".into());
        }
    }
    revision(&list)
}

/// The tags of the namespace or service `arn` names.
fn tags_of<'a>(
    reg: &'a mut Registry,
    arn: &str,
) -> Result<&'a mut BTreeMap<String, String>, ApiError> {
    if let Some(n) = reg.namespaces.values_mut().find(|n| n.arn == arn) {
        return Ok(&mut n.tags);
    }
    if let Some(s) = reg.services.values_mut().find(|s| s.arn == arn) {
        return Ok(&mut s.tags);
    }
    Err(ApiError::coded(
        "ResourceNotFoundException",
        format!("The resource {arn} does not exist."),
    ))
}

fn update_namespace(reg: &mut Registry, op: &str, body: &Value) -> Result<Done, ApiError> {
    let id = required(body, "Id")?.to_string();
    let kind = namespace(reg, &id)?.kind.clone();
    let wanted = if op == "UpdateHttpNamespace" {
        "HTTP"
    } else {
        "DNS_PRIVATE"
    };
    if kind != wanted {
        return Err(invalid(format!(
            "Namespace {id} is {kind}: {op} updates {wanted} namespaces"
        )));
    }
    let update = body
        .get("Namespace")
        .filter(|v| v.is_object())
        .ok_or_else(|| invalid("Namespace is required"))?;
    if let Some(ttl) = update.pointer("/Properties/DnsProperties/SOA/TTL")
        && ttl.as_i64() != Some(15)
    {
        return Err(invalid(
            "skiff's namespaces have no SOA record to change: its TTL stays 15",
        ));
    }
    if let Some(n) = reg.namespaces.get_mut(&id) {
        if let Some(d) = update.get("Description").and_then(Value::as_str) {
            n.description = Some(d.to_string());
        }
        n.updated_at = Some(now());
    }
    Ok(Done::Changed(
        json!({ "OperationId": operation(reg, "UPDATE_NAMESPACE", "NAMESPACE", &id) }),
    ))
}

fn update_service(reg: &mut Registry, body: &Value) -> Result<Done, ApiError> {
    let id = required(body, "Id")?.to_string();
    let update = body
        .get("Service")
        .filter(|v| v.is_object())
        .ok_or_else(|| invalid("Service is required"))?;
    if update
        .get("HealthCheckConfig")
        .is_some_and(|v| !v.is_null())
    {
        return Err(invalid(
            "HealthCheckConfig (Route 53 health checks) is not available: use HealthCheckCustomConfig, which ECS's task health feeds",
        ));
    }
    let s = reg.services.get_mut(&id).ok_or_else(service_not_found)?;
    if let Some(records) = update
        .pointer("/DnsConfig/DnsRecords")
        .and_then(Value::as_array)
    {
        if s.ttl.is_none() {
            return Err(invalid("An HTTP namespace's services have no DnsConfig"));
        }
        if records.len() != 1 || records[0]["Type"] != "A" {
            return Err(invalid(
                "skiff answers A records only: DnsRecords must be [{Type: A, TTL: ...}]",
            ));
        }
        s.ttl = Some(records[0]["TTL"].as_u64().unwrap_or(60));
    }
    if let Some(d) = update.get("Description").and_then(Value::as_str) {
        s.description = Some(d.to_string());
    }
    Ok(Done::Changed(
        json!({ "OperationId": operation(reg, "UPDATE_SERVICE", "SERVICE", &id) }),
    ))
}
