//! Service discovery: a Cloud Map-shaped registry (`aws servicediscovery`,
//! AWS JSON 1.1 on the API endpoint) whose names tasks resolve through
//! WASI name lookup.
//!
//! Private DNS namespaces hold services with A records: an ECS service
//! that names one in `serviceRegistries` has its healthy awsvpc tasks'
//! addresses answered for `SERVICE.NAMESPACE` (a task is in while it is
//! RUNNING, wanted, and HEALTHY if it has health checks). HTTP namespaces
//! are found only through DiscoverInstances, as in Cloud Map. Instances can
//! also be registered by hand with an `AWS_INSTANCE_IPV4` on loopback.

use crate::core::Core;
use crate::core::discovery::{
    DiscoveryService, Namespace, Registry, ecs_users, forget_missing, instances, refresh,
};
use crate::core::model::{arn, now};
use crate::core::state::{State, Write};
use crate::error::ApiError;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

fn id(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    )
}

pub(super) fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::coded("InvalidInput", message)
}

fn str_field<'a>(body: &'a Value, name: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(format!("{name} must be a string"))),
    }
}

pub(super) fn required<'a>(body: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    str_field(body, name)?.ok_or_else(|| invalid(format!("{name} is required")))
}

/// A DNS label sequence: letters, digits, hyphens, dots.
fn dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

pub(crate) async fn handle(
    core: &Core,
    op: &str,
    body: &Value,
    region: &str,
) -> Result<Value, ApiError> {
    let mut state = core.state.lock().await;
    let before = state.discovery.clone();
    let mut reg = before.clone();
    let answer = match op {
        "CreatePrivateDnsNamespace" => create_namespace(&mut reg, body, region, "DNS_PRIVATE")?,
        "CreateHttpNamespace" => create_namespace(&mut reg, body, region, "HTTP")?,
        "GetNamespace" => {
            let ns = namespace(&reg, required(body, "Id")?)?;
            return Ok(json!({ "Namespace": namespace_view(&reg, ns) }));
        }
        "ListNamespaces" => {
            let all: Vec<Value> = reg
                .namespaces
                .values()
                .map(|n| namespace_view(&reg, n))
                .collect();
            return Ok(json!({ "Namespaces": all }));
        }
        "DeleteNamespace" => {
            let ns_id = required(body, "Id")?.to_string();
            namespace(&reg, &ns_id)?;
            if reg.services.values().any(|s| s.namespace_id == ns_id) {
                return Err(ApiError::coded(
                    "ResourceInUse",
                    format!("Namespace {ns_id} still has services"),
                ));
            }
            reg.namespaces.remove(&ns_id);
            json!({ "OperationId": operation(&mut reg, "DELETE_NAMESPACE", "NAMESPACE", &ns_id) })
        }
        "CreateService" => create_service(&mut reg, body, region)?,
        "GetService" => {
            let s = service(&reg, required(body, "Id")?)?;
            return Ok(json!({ "Service": service_view(&state, s) }));
        }
        "ListServices" => {
            let all: Vec<Value> = reg
                .services
                .values()
                .map(|s| service_view(&state, s))
                .collect();
            return Ok(json!({ "Services": all }));
        }
        "DeleteService" => {
            let sid = required(body, "Id")?.to_string();
            let s = service(&reg, &sid)?;
            if ecs_users(&state, &s.arn) > 0 {
                return Err(ApiError::coded(
                    "ResourceInUse",
                    format!("Service {sid} is used by an ECS service"),
                ));
            }
            reg.services.remove(&sid);
            json!({})
        }
        "GetOperation" => {
            let op_id = required(body, "OperationId")?;
            let op = reg.operations.get(op_id).cloned().ok_or_else(|| {
                ApiError::coded("OperationNotFound", format!("No operation {op_id}"))
            })?;
            return Ok(json!({ "Operation": op }));
        }
        "RegisterInstance" => register_instance(&mut reg, body)?,
        "DeregisterInstance" => {
            let s = reg
                .services
                .get_mut(required(body, "ServiceId")?)
                .ok_or_else(service_not_found)?;
            let instance = required(body, "InstanceId")?;
            if s.instances.remove(instance).is_none() {
                return Err(ApiError::coded(
                    "InstanceNotFound",
                    format!("No instance {instance}"),
                ));
            }
            json!({ "OperationId": operation(&mut reg, "DEREGISTER_INSTANCE", "INSTANCE", instance) })
        }
        "ListInstances" => {
            let s = service(&reg, required(body, "ServiceId")?)?;
            let list: Vec<Value> = instances(&state, s)
                .into_iter()
                .map(|(id, attrs)| json!({ "Id": id, "Attributes": attrs }))
                .collect();
            return Ok(json!({ "Instances": list }));
        }
        "DiscoverInstances" => {
            let (ns, s) = by_names(&reg, body)?;
            let wanted = str_field(body, "HealthStatus")?.unwrap_or("HEALTHY");
            let all = instances(&state, s);
            let healthy = |id: &String| !s.unhealthy.contains(id);
            let any_healthy = all.iter().any(|(id, _)| healthy(id));
            let list: Vec<Value> = all
                .into_iter()
                .filter(|(id, _)| match wanted {
                    "HEALTHY" => healthy(id),
                    "UNHEALTHY" => !healthy(id),
                    "HEALTHY_OR_ELSE_ALL" => !any_healthy || healthy(id),
                    _ => true,
                })
                .map(|(id, attrs)| {
                    let h = if healthy(&id) { "HEALTHY" } else { "UNHEALTHY" };
                    json!({ "InstanceId": id, "NamespaceName": ns.name, "ServiceName": s.name,
                            "HealthStatus": h, "Attributes": attrs })
                })
                .collect();
            let revision = super::cloudmap_more::instances_revision(&state, s);
            return Ok(json!({ "Instances": list, "InstancesRevision": revision }));
        }
        other => match super::cloudmap_more::handle(&state, &mut reg, other, body) {
            Some(Ok(super::cloudmap_more::Done::Read(v))) => return Ok(v),
            Some(Ok(super::cloudmap_more::Done::Changed(v))) => v,
            Some(Err(e)) => return Err(e),
            None => return Err(ApiError::unknown_operation(other)),
        },
    };
    state
        .apply(core.store.as_ref(), vec![Write::Discovery(Box::new(reg))])
        .await?;
    forget_missing(&before, &state.discovery, &core.fabric);
    refresh(&state, &core.fabric);
    Ok(answer)
}

/// The namespace and service a discovery request names
/// (`NamespaceName`, `ServiceName`; case-insensitive, as DNS is).
pub(super) fn by_names<'a>(
    reg: &'a Registry,
    body: &Value,
) -> Result<(&'a Namespace, &'a DiscoveryService), ApiError> {
    let ns_name = required(body, "NamespaceName")?;
    let svc_name = required(body, "ServiceName")?;
    let ns = reg
        .namespaces
        .values()
        .find(|n| n.name.eq_ignore_ascii_case(ns_name))
        .ok_or_else(|| ApiError::coded("NamespaceNotFound", format!("No namespace {ns_name}")))?;
    let s = reg
        .services
        .values()
        .find(|s| s.namespace_id == ns.id && s.name.eq_ignore_ascii_case(svc_name))
        .ok_or_else(service_not_found)?;
    Ok((ns, s))
}

pub(super) fn service_not_found() -> ApiError {
    ApiError::coded("ServiceNotFound", "Service not found.")
}

pub(super) fn namespace<'a>(reg: &'a Registry, id: &str) -> Result<&'a Namespace, ApiError> {
    reg.namespaces
        .get(id)
        .ok_or_else(|| ApiError::coded("NamespaceNotFound", format!("Namespace {id} not found.")))
}

pub(super) fn service<'a>(reg: &'a Registry, id: &str) -> Result<&'a DiscoveryService, ApiError> {
    reg.services.get(id).ok_or_else(service_not_found)
}

pub(super) fn operation(reg: &mut Registry, kind: &str, target: &str, target_id: &str) -> String {
    let op_id = id("op");
    let at = now();
    reg.operations.insert(
        op_id.clone(),
        json!({ "Id": op_id, "Type": kind, "Status": "SUCCESS", "CreateDate": at,
                "UpdateDate": at, "Targets": { target: target_id } }),
    );
    // Old operations are not kept forever.
    while reg.operations.len() > 1000 {
        let Some(first) = reg.operations.keys().next().cloned() else {
            break;
        };
        reg.operations.remove(&first);
    }
    op_id
}

fn create_namespace(
    reg: &mut Registry,
    body: &Value,
    region: &str,
    kind: &str,
) -> Result<Value, ApiError> {
    let name = required(body, "Name")?
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if !dns_name(&name) {
        return Err(invalid(format!(
            "Namespace name {name:?} is not a valid DNS name"
        )));
    }
    let vpc = str_field(body, "Vpc")?;
    if kind == "DNS_PRIVATE" && vpc.is_none() {
        return Err(invalid("Vpc is required"));
    }
    let request = str_field(body, "CreatorRequestId")?.map(String::from);
    if let Some(existing) = reg.namespaces.values().find(|n| n.name == name) {
        if request.is_some() && existing.creator_request_id == request {
            let ns_id = existing.id.clone();
            return Ok(
                json!({ "OperationId": operation(reg, "CREATE_NAMESPACE", "NAMESPACE", &ns_id) }),
            );
        }
        return Err(ApiError::coded(
            "NamespaceAlreadyExists",
            format!("Namespace {name} already exists"),
        ));
    }
    let ns_id = id("ns");
    reg.namespaces.insert(
        ns_id.clone(),
        Namespace {
            arn: arn("servicediscovery", region, &format!("namespace/{ns_id}")),
            id: ns_id.clone(),
            name,
            kind: kind.into(),
            description: str_field(body, "Description")?.map(String::from),
            vpc: vpc.map(String::from),
            created_at: now(),
            creator_request_id: request,
            tags: super::cloudmap_more::tags(body)?,
            updated_at: None,
        },
    );
    Ok(json!({ "OperationId": operation(reg, "CREATE_NAMESPACE", "NAMESPACE", &ns_id) }))
}

fn namespace_view(reg: &Registry, n: &Namespace) -> Value {
    let mut properties = json!({ "HttpProperties": { "HttpName": n.name } });
    if n.kind == "DNS_PRIVATE" {
        properties["DnsProperties"] = json!({
            "HostedZoneId": format!("Z{}", n.id.trim_start_matches("ns-").to_ascii_uppercase()),
            "SOA": { "TTL": 15 },
        });
    }
    json!({
        "Id": n.id, "Arn": n.arn, "Name": n.name, "Type": n.kind,
        "Description": n.description, "CreateDate": n.created_at,
        "UpdateDate": n.updated_at.unwrap_or(n.created_at),
        "CreatorRequestId": n.creator_request_id,
        "ServiceCount": reg.services.values().filter(|s| s.namespace_id == n.id).count(),
        "Properties": properties,
    })
}

fn create_service(reg: &mut Registry, body: &Value, region: &str) -> Result<Value, ApiError> {
    let name = required(body, "Name")?.to_ascii_lowercase();
    if !dns_name(&name) || name.contains('.') {
        return Err(invalid(format!(
            "Service name {name:?} must be one DNS label"
        )));
    }
    let dns = body.get("DnsConfig").filter(|v| !v.is_null());
    let ns_id = str_field(body, "NamespaceId")?
        .or_else(|| dns.and_then(|d| d["NamespaceId"].as_str()))
        .ok_or_else(|| invalid("NamespaceId is required"))?
        .to_string();
    let ns = namespace(reg, &ns_id)?.clone();
    let mut ttl = None;
    match (ns.kind.as_str(), dns) {
        ("DNS_PRIVATE", Some(d)) => {
            let records = d["DnsRecords"].as_array().cloned().unwrap_or_default();
            if records.len() != 1 || records[0]["Type"] != "A" {
                return Err(invalid(
                    "skiff answers A records only: DnsRecords must be [{Type: A, TTL: ...}]",
                ));
            }
            if let Some(p) = d["RoutingPolicy"].as_str()
                && p != "MULTIVALUE"
            {
                return Err(invalid(
                    "RoutingPolicy must be MULTIVALUE: every healthy address is answered",
                ));
            }
            ttl = Some(records[0]["TTL"].as_u64().unwrap_or(60));
        }
        ("DNS_PRIVATE", None) => {
            return Err(invalid("A service in a DNS namespace needs a DnsConfig"));
        }
        (_, Some(_)) => {
            return Err(invalid("An HTTP namespace's services have no DnsConfig"));
        }
        (_, None) => {}
    }
    if body.get("HealthCheckConfig").is_some_and(|v| !v.is_null()) {
        return Err(invalid(
            "HealthCheckConfig (Route 53 health checks) is not available: use HealthCheckCustomConfig, which ECS's task health feeds",
        ));
    }
    let custom_health = body
        .get("HealthCheckCustomConfig")
        .is_some_and(|v| !v.is_null());
    let request = str_field(body, "CreatorRequestId")?.map(String::from);
    if let Some(existing) = reg
        .services
        .values()
        .find(|s| s.namespace_id == ns_id && s.name == name)
    {
        if request.is_some() && existing.creator_request_id == request {
            return Ok(json!({ "Service": plain_view(existing, &ns) }));
        }
        return Err(ApiError::coded(
            "ServiceAlreadyExists",
            format!("Service {name} already exists in {}", ns.name),
        ));
    }
    let sid = id("srv");
    let s = DiscoveryService {
        arn: arn("servicediscovery", region, &format!("service/{sid}")),
        id: sid.clone(),
        name,
        namespace_id: ns_id,
        description: str_field(body, "Description")?.map(String::from),
        ttl,
        custom_health,
        created_at: now(),
        creator_request_id: request,
        instances: BTreeMap::new(),
        tags: super::cloudmap_more::tags(body)?,
        attributes: BTreeMap::new(),
        unhealthy: Default::default(),
    };
    let view = plain_view(&s, &ns);
    reg.services.insert(sid, s);
    Ok(json!({ "Service": view }))
}

fn plain_view(s: &DiscoveryService, ns: &Namespace) -> Value {
    let mut v = json!({
        "Id": s.id, "Arn": s.arn, "Name": s.name, "NamespaceId": s.namespace_id,
        "Description": s.description, "CreateDate": s.created_at,
        "CreatorRequestId": s.creator_request_id,
        "Type": if ns.kind == "HTTP" { "HTTP" } else { "DNS_HTTP" },
    });
    if let Some(ttl) = s.ttl {
        v["DnsConfig"] = json!({
            "NamespaceId": s.namespace_id, "RoutingPolicy": "MULTIVALUE",
            "DnsRecords": [{ "Type": "A", "TTL": ttl }],
        });
    }
    if s.custom_health {
        v["HealthCheckCustomConfig"] = json!({ "FailureThreshold": 1 });
    }
    v
}

fn service_view(state: &State, s: &DiscoveryService) -> Value {
    let Some(ns) = state.discovery.namespaces.get(&s.namespace_id) else {
        return json!({ "Id": s.id });
    };
    let mut v = plain_view(s, ns);
    v["InstanceCount"] = json!(instances(state, s).len());
    v
}

fn register_instance(reg: &mut Registry, body: &Value) -> Result<Value, ApiError> {
    let sid = required(body, "ServiceId")?.to_string();
    let instance = required(body, "InstanceId")?.to_string();
    let attrs: BTreeMap<String, String> = match body.get("Attributes") {
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|v| (k.clone(), v.to_string()))
                    .ok_or_else(|| invalid(format!("Attribute {k} must be a string")))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(invalid("Attributes is required")),
    };
    let s = reg.services.get_mut(&sid).ok_or_else(service_not_found)?;
    match attrs
        .get("AWS_INSTANCE_IPV4")
        .map(|ip| ip.parse::<Ipv4Addr>())
    {
        Some(Ok(ip)) if ip.is_loopback() => {}
        Some(_) => {
            return Err(invalid(
                "AWS_INSTANCE_IPV4 must be a loopback address: skiff never answers another",
            ));
        }
        None if s.ttl.is_some() => {
            return Err(invalid("A service with A records needs AWS_INSTANCE_IPV4"));
        }
        None => {}
    }
    if attrs.contains_key("AWS_INSTANCE_IPV6") || attrs.contains_key("AWS_INSTANCE_CNAME") {
        return Err(invalid(
            "skiff answers A records only: no AWS_INSTANCE_IPV6 or CNAME",
        ));
    }
    s.instances.insert(instance.clone(), attrs);
    Ok(json!({ "OperationId": operation(reg, "REGISTER_INSTANCE", "INSTANCE", &instance) }))
}
