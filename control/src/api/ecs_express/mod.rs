//! ECS Express Gateway services (Create/Describe/Update/DeleteExpressGatewayService):
//! one call gives a web application everything ECS would make for it —
//! a task definition family named after the service, a security group, an
//! application load balancer whose listener is the service's endpoint,
//! a target group health-checking `healthCheckPath`, an awsvpc FARGATE
//! service behind them — and scales it by its `scalingTarget`.
//!
//! The parts are made through the same handlers the ECS, EC2 and ELBv2
//! APIs use, so each is an ordinary resource those APIs show; a part that
//! cannot be made undoes those made before it. On skiff the listener
//! listens on the load balancers' address (127.0.0.1 by default) on a free
//! port, and the endpoint is its `http://` URL (AWS gives an `https://`
//! name under `on.aws`). Deleting drains the service and removes its load
//! balancer at once; its target group and security group go once its
//! tasks have stopped ([`express_loop`]).
//!
//! Scaling is target tracking (`core/services/express.rs`): every
//! 5 s (`scaling.rs`) the loop reads the service's metric over the last
//! minute — `AWS/ECS` `CPUUtilization` or `MemoryUtilization` times the
//! running tasks, or every request its target group was sent — and sets
//! the desired count that brings it to the target value, within the
//! minimum and maximum.

use super::ecs::{arn_of, commit, valid_name};
use super::protocol::json::{includes, parse, required, string_list};
use super::protocol::query::Params;
use super::{Api, QueryService};
use crate::core::Core;
use crate::core::model::{Tag, check_tags, now};
use crate::core::services::Service;
use crate::core::services::express::{
    self, Configuration, Express, MAX_CONFIGURATIONS, ScalingTarget,
};
use crate::core::state::State;
use crate::error::ApiError;
use serde_json::{Value, json};

mod scaling;
mod settings;

pub(crate) use scaling::express_loop;
use settings::{CONTAINER, check_role, default_logs, settings, task_definition};

/// Dispatches one Express Gateway operation.
pub(crate) async fn handle(
    api: &Api,
    op: &str,
    body: &Value,
    region: &str,
) -> Result<Value, ApiError> {
    let core = &api.core;
    match op {
        "CreateExpressGatewayService" => create(core, body, region).await,
        "DescribeExpressGatewayService" => {
            let state = core.state.lock().await;
            let svc = express_service(&state, required(body, "serviceArn")?)?;
            let with_tags = includes(body, "TAGS");
            Ok(json!({ "service": view(svc, with_tags) }))
        }
        "UpdateExpressGatewayService" => update(core, body, region).await,
        "DeleteExpressGatewayService" => delete(core, body, region).await,
        other => Err(ApiError::unknown_operation(other)),
    }
}

/// What was made so far, to undo if a later part cannot be made.
#[derive(Default)]
struct Made {
    security_groups: Vec<String>,
    load_balancer: Option<String>,
    target_group: Option<String>,
    task_definition: Option<String>,
}

impl Made {
    async fn undo(&self, core: &Core, region: &str) {
        let lb = self.load_balancer.as_deref();
        let tg = self.target_group.as_deref();
        let _ = remove_parts(core, region, lb, tg, &self.security_groups).await;
        if let Some(td) = &self.task_definition {
            let body = json!({ "taskDefinition": td });
            let _ = super::ecs::handle(core, "DeregisterTaskDefinition", &body, region).await;
            let body = json!({ "taskDefinitions": [td] });
            let _ = super::ecs::handle(core, "DeleteTaskDefinitions", &body, region).await;
        }
    }
}

async fn create(core: &Core, body: &Value, region: &str) -> Result<Value, ApiError> {
    for name in ["executionRoleArn", "infrastructureRoleArn"] {
        required(body, name)?;
    }
    check_role("infrastructureRoleArn", &body["infrastructureRoleArn"])?;
    let mut s = settings(body, None)?;
    let tags: Vec<Tag> = match body.get("tags").filter(|v| !v.is_null()) {
        None => Vec::new(),
        Some(v) => parse(v)?,
    };
    check_tags(&tags)?;
    let id = super::elbv2::short_id();
    let name = match body.get("serviceName").and_then(Value::as_str) {
        Some(n) => n.to_string(),
        None => format!("express-{}", &id[..8]),
    };
    valid_name(&name)?;
    let cluster = body
        .get("cluster")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    {
        // What can be checked before anything is made.
        let state = core.state.lock().await;
        let c = crate::core::clusters::active_cluster(&state, Some(&cluster))?;
        if super::ecs::find_service(&state, &c.cluster_name, &name)
            .is_some_and(|s| s.status != "INACTIVE")
        {
            return Err(ApiError::invalid_parameter(format!(
                "A service named {name} already exists in cluster {}.",
                c.cluster_name
            )));
        }
        let container = &mut s["primaryContainer"];
        if container["awsLogsConfiguration"].is_null() {
            container["awsLogsConfiguration"] = default_logs(&c.cluster_name, &name);
        }
    }
    let mut made = Made::default();
    match make(
        core, body, region, &s, &name, &cluster, &id, &tags, &mut made,
    )
    .await
    {
        Ok(v) => Ok(v),
        Err(e) => {
            made.undo(core, region).await;
            Err(e)
        }
    }
}

/// Makes the parts of an Express service, noting each in `made`.
#[allow(clippy::too_many_arguments)]
async fn make(
    core: &Core,
    body: &Value,
    region: &str,
    s: &Value,
    name: &str,
    cluster: &str,
    id: &str,
    tags: &[Tag],
    made: &mut Made,
) -> Result<Value, ApiError> {
    let part = format!("ecs-express-{id}");
    let port = s["primaryContainer"]["containerPort"].to_string();
    let net = &s["networkConfiguration"];
    let mut groups = string_list(net, "securityGroups")?;
    let subnets = subnets_of(net)?;
    {
        // A group for the load balancer, which the tasks are in too (with
        // the groups the request names): they take the container port from
        // the load balancer, whatever the request's groups allow.
        let answer = query(
            core,
            region,
            QueryService::Ec2,
            "CreateSecurityGroup",
            &[
                ("GroupName", &part),
                ("GroupDescription", &format!("ECS Express service {name}")),
            ],
        )
        .await?;
        let group = xml_text(&answer, "groupId")
            .ok_or_else(|| ApiError::server("CreateSecurityGroup answered no groupId"))?;
        made.security_groups.push(group.clone());
        query(
            core,
            region,
            QueryService::Ec2,
            "AuthorizeSecurityGroupIngress",
            &[
                ("GroupId", &group),
                ("IpPermissions.1.IpProtocol", "tcp"),
                ("IpPermissions.1.FromPort", &port),
                ("IpPermissions.1.ToPort", &port),
                ("IpPermissions.1.Groups.1.GroupId", &group),
            ],
        )
        .await?;
        groups.push(group);
    }
    let td = super::ecs::handle(
        core,
        "RegisterTaskDefinition",
        &task_definition(name, s, region),
        region,
    )
    .await?;
    let td_arn = td["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    made.task_definition = Some(td_arn.clone());

    let mut lb_form: Vec<(String, String)> = vec![("Name".into(), part.clone())];
    for (i, g) in made.security_groups.iter().enumerate() {
        lb_form.push((format!("SecurityGroups.member.{}", i + 1), g.clone()));
    }
    for (i, n) in subnets.iter().enumerate() {
        lb_form.push((format!("Subnets.member.{}", i + 1), n.clone()));
    }
    let lb_form: Vec<(&str, &str)> = lb_form
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let answer = query(
        core,
        region,
        QueryService::Elbv2,
        "CreateLoadBalancer",
        &lb_form,
    )
    .await?;
    let lb = xml_text(&answer, "LoadBalancerArn")
        .ok_or_else(|| ApiError::server("CreateLoadBalancer answered no ARN"))?;
    made.load_balancer = Some(lb.clone());
    let health = s["healthCheckPath"].as_str().unwrap_or_default();
    let answer = query(
        core,
        region,
        QueryService::Elbv2,
        "CreateTargetGroup",
        &[
            ("Name", &part),
            ("Protocol", "HTTP"),
            ("Port", &port),
            ("TargetType", "ip"),
            ("HealthCheckPath", health),
        ],
    )
    .await?;
    let tg = xml_text(&answer, "TargetGroupArn")
        .ok_or_else(|| ApiError::server("CreateTargetGroup answered no ARN"))?;
    made.target_group = Some(tg.clone());
    let listen_port = free_port(core)?;
    let answer = query(
        core,
        region,
        QueryService::Elbv2,
        "CreateListener",
        &[
            ("LoadBalancerArn", &lb),
            ("Protocol", "HTTP"),
            ("Port", &listen_port.to_string()),
            ("DefaultActions.member.1.Type", "forward"),
            ("DefaultActions.member.1.TargetGroupArn", &tg),
        ],
    )
    .await?;
    let listener = xml_text(&answer, "ListenerArn")
        .ok_or_else(|| ApiError::server("CreateListener answered no ARN"))?;

    let scaling: ScalingTarget = serde_json::from_value(s["scalingTarget"].clone())
        .map_err(|e| ApiError::server(e.to_string()))?;
    let mut service = json!({
        "cluster": cluster,
        "serviceName": name,
        "taskDefinition": td_arn,
        "desiredCount": scaling.min_task_count,
        "launchType": "FARGATE",
        "networkConfiguration": awsvpc(&subnets, &groups),
        "loadBalancers": [{
            "targetGroupArn": tg, "containerName": CONTAINER,
            "containerPort": s["primaryContainer"]["containerPort"],
        }],
        "enableECSManagedTags": true,
        "propagateTags": "SERVICE",
    });
    if !tags.is_empty() {
        service["tags"] = json!(tags);
    }
    let created = super::ecs::handle(core, "CreateService", &service, region).await?;
    let arn = created["service"]["serviceArn"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let at = now();
    let endpoint = format!("http://{}:{listen_port}/", core.config.lb_address);
    let mut state = core.state.lock().await;
    let mut svc = find_by_arn(&state, &arn)
        .cloned()
        .ok_or_else(|| ApiError::server("the service just made is gone"))?;
    let deployment = primary_deployment(&svc);
    svc.express = Some(Box::new(Express {
        infrastructure_role_arn: required(body, "infrastructureRoleArn")?.to_string(),
        configurations: vec![Configuration {
            deployment,
            created_at: at,
            settings: s.clone(),
        }],
        load_balancer_arn: lb,
        listener_arn: listener,
        target_group_arn: tg,
        security_groups_made: made.security_groups.clone(),
        endpoint,
        updated_at: at,
        removed: false,
    }));
    commit(core, &mut state, &svc).await?;
    Ok(json!({ "service": view(&svc, true) }))
}

async fn update(core: &Core, body: &Value, region: &str) -> Result<Value, ApiError> {
    let arn = required(body, "serviceArn")?.to_string();
    let (svc, before) = {
        let state = core.state.lock().await;
        let svc = express_service(&state, &arn)?.clone();
        if svc.status != "ACTIVE" {
            return Err(ApiError::invalid_parameter(format!(
                "The Express service {arn} is {}: it cannot be updated.",
                svc.status
            )));
        }
        let before = svc
            .express
            .as_ref()
            .and_then(|e| e.current())
            .map(|c| c.settings.clone())
            .unwrap_or_default();
        (svc, before)
    };
    let s = settings(body, Some(&before))?;
    let e = svc
        .express
        .as_deref()
        .cloned()
        .ok_or_else(|| ApiError::server("an Express service without its record"))?;
    if s["healthCheckPath"] != before["healthCheckPath"] {
        query(
            core,
            region,
            QueryService::Elbv2,
            "ModifyTargetGroup",
            &[
                ("TargetGroupArn", &e.target_group_arn),
                (
                    "HealthCheckPath",
                    s["healthCheckPath"].as_str().unwrap_or("/"),
                ),
            ],
        )
        .await?;
    }
    // What the tasks run changed: a new revision, rolled out.
    let runs = |v: &Value| {
        let mut v = v.clone();
        for name in ["scalingTarget", "healthCheckPath"] {
            v[name] = Value::Null;
        }
        v
    };
    let redeploy = runs(&s) != runs(&before);
    if redeploy {
        let td = super::ecs::handle(
            core,
            "RegisterTaskDefinition",
            &task_definition(&svc.service_name, &s, region),
            region,
        )
        .await?;
        let mut change = json!({
            "cluster": svc.cluster_arn,
            "service": svc.service_name,
            "taskDefinition": td["taskDefinition"]["taskDefinitionArn"],
        });
        if s["networkConfiguration"] != before["networkConfiguration"] {
            let net = &s["networkConfiguration"];
            let mut groups = string_list(net, "securityGroups")?;
            groups.extend(e.security_groups_made.iter().cloned());
            change["networkConfiguration"] = awsvpc(&subnets_of(net)?, &groups);
        }
        super::ecs::handle(core, "UpdateService", &change, region).await?;
    }
    let at = now();
    let mut state = core.state.lock().await;
    let mut svc = express_service(&state, &arn)?.clone();
    if svc.status != "ACTIVE" {
        // Deleted while this update ran: what it rolled out drains with it.
        return Err(ApiError::invalid_parameter(format!(
            "The Express service {arn} was deleted while it was being updated."
        )));
    }
    let deployment = primary_deployment(&svc);
    if let Some(e) = svc.express.as_deref_mut() {
        if !redeploy && let Some(last) = e.configurations.last_mut() {
            // Scaling and health checks change in place.
            last.settings = s;
        } else {
            e.configurations.push(Configuration {
                deployment,
                created_at: at,
                settings: s,
            });
            let extra = e.configurations.len().saturating_sub(MAX_CONFIGURATIONS);
            e.configurations.drain(..extra);
        }
        e.updated_at = at;
    }
    // The count moves into the new bounds at once.
    if let Some(t) = svc.express.as_ref().and_then(|e| e.scaling()) {
        let n = express::target_tracking(svc.desired_count, None, &t, 0.0);
        svc.desired_count = n;
    }
    commit(core, &mut state, &svc).await?;
    let mut v = view(&svc, false);
    let active = v["activeConfigurations"]
        .as_array()
        .and_then(|a| a.last())
        .cloned()
        .unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("activeConfigurations");
        o.remove("currentDeployment");
        o.remove("infrastructureRoleArn");
        o.remove("tags");
        o.insert("targetConfiguration".into(), active);
    }
    Ok(json!({ "service": v }))
}

async fn delete(core: &Core, body: &Value, region: &str) -> Result<Value, ApiError> {
    let arn = required(body, "serviceArn")?.to_string();
    let svc = {
        let state = core.state.lock().await;
        express_service(&state, &arn)?.clone()
    };
    if svc.status == "INACTIVE" {
        return Err(ApiError::invalid_parameter(format!(
            "The Express service {arn} is already deleted."
        )));
    }
    if svc.status == "ACTIVE" {
        let body = json!({"cluster": svc.cluster_arn, "service": svc.service_name, "force": true});
        super::ecs::handle(core, "DeleteService", &body, region).await?;
    }
    // Nothing more reaches it; its target group and security group go
    // once its tasks have stopped.
    if let Some(e) = &svc.express {
        remove_parts(core, region, Some(&e.load_balancer_arn), None, &[]).await?;
    }
    let state = core.state.lock().await;
    let svc = express_service(&state, &arn)?;
    Ok(json!({ "service": view(svc, false) }))
}

/// The service an ARN names, in any state: the state keeps services by
/// `CLUSTER/NAME`, the ARN's tail.
fn find_by_arn<'a>(state: &'a State, arn: &str) -> Option<&'a Service> {
    let (_, key) = arn.split_once(":service/")?;
    state
        .services
        .get(key)
        .map(|s| &s.value)
        .filter(|s| s.service_arn == arn)
}

/// The Express service an ARN names, or the error AWS gives.
fn express_service<'a>(state: &'a State, arn: &str) -> Result<&'a Service, ApiError> {
    match find_by_arn(state, arn) {
        Some(s) if s.express.is_some() => Ok(s),
        Some(_) => Err(ApiError::invalid_parameter(format!(
            "{arn} is a service, but not an Express service: manage it with DescribeServices, UpdateService and DeleteService."
        ))),
        None => Err(ApiError::not_found(
            "ServiceNotFoundException",
            format!("The Express service {arn} was not found."),
        )),
    }
}

/// An Express service as ECS shows it.
fn view(svc: &Service, with_tags: bool) -> Value {
    let Some(e) = svc.express.as_deref() else {
        return json!({});
    };
    let rolling: Vec<&str> = svc.deployments.iter().map(|d| d.id.as_str()).collect();
    let mut active: Vec<&Configuration> = e
        .configurations
        .iter()
        .filter(|c| rolling.contains(&c.deployment.as_str()))
        .collect();
    if active.is_empty() {
        active.extend(e.current());
    }
    let configurations: Vec<Value> = active
        .iter()
        .map(|c| {
            let mut v = c.settings.clone();
            if let Some(o) = v.as_object_mut() {
                o.retain(|_, v| !v.is_null());
            }
            v["serviceRevisionArn"] = json!(arn_of(svc, "service-revision", &c.deployment));
            v["ingressPaths"] = json!([{"accessType": "PUBLIC", "endpoint": e.endpoint}]);
            v["createdAt"] = json!(c.created_at);
            v
        })
        .collect();
    let mut v = json!({
        "cluster": svc.cluster_arn,
        "serviceName": svc.service_name,
        "serviceArn": svc.service_arn,
        "infrastructureRoleArn": e.infrastructure_role_arn,
        "status": {"statusCode": svc.status},
        "activeConfigurations": configurations,
        "createdAt": svc.created_at,
        "updatedAt": e.updated_at,
    });
    if let Some(d) = svc.deployments.first() {
        v["currentDeployment"] = json!(arn_of(svc, "service-deployment", &d.id));
    }
    if with_tags {
        v["tags"] = json!(svc.tags);
    }
    v
}

/// The id of the service's newest deployment (what a configuration is
/// rolled out by).
fn primary_deployment(svc: &Service) -> String {
    svc.deployments
        .first()
        .map(|d| d.id.clone())
        .unwrap_or_default()
}

/// The subnets a `networkConfiguration` names, else the default one.
fn subnets_of(net: &Value) -> Result<Vec<String>, ApiError> {
    let mut subnets = string_list(net, "subnets")?;
    if subnets.is_empty() {
        subnets.push(super::ec2_network::DEFAULT_SUBNET.to_string());
    }
    Ok(subnets)
}

/// The service's `networkConfiguration`.
fn awsvpc(subnets: &[String], groups: &[String]) -> Value {
    json!({"awsvpcConfiguration": {
        "subnets": subnets, "securityGroups": groups, "assignPublicIp": "DISABLED",
    }})
}

/// A free port on the load balancers' address, for a new listener.
fn free_port(core: &Core) -> Result<u16, ApiError> {
    std::net::TcpListener::bind((core.config.lb_address, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ApiError::server(format!("no free port for the listener: {e}")))
}

/// One EC2 or ELBv2 action, as if it came on the wire.
async fn query(
    core: &Core,
    region: &str,
    service: QueryService,
    action: &str,
    params: &[(&str, &str)],
) -> Result<String, ApiError> {
    let p = form(action, params);
    match service {
        QueryService::Ec2 => super::ec2::handle(core, action, &p, region).await,
        QueryService::Elbv2 => super::elbv2::handle(core, action, &p, region).await,
    }
}

/// Removes an Express service's load balancer (if still there), target
/// group and the security groups made for it, in that order (each is in
/// use by the one before); the first that cannot go says why.
async fn remove_parts(
    core: &Core,
    region: &str,
    load_balancer: Option<&str>,
    target_group: Option<&str>,
    security_groups: &[String],
) -> Result<(), ApiError> {
    use QueryService::{Ec2, Elbv2};
    if let Some(lb) = load_balancer {
        let lb = [("LoadBalancerArn", lb)];
        query(core, region, Elbv2, "DeleteLoadBalancer", &lb).await?;
    }
    if let Some(tg) = target_group {
        let tg = [("TargetGroupArn", tg)];
        query(core, region, Elbv2, "DeleteTargetGroup", &tg).await?;
    }
    for g in security_groups {
        match query(core, region, Ec2, "DeleteSecurityGroup", &[("GroupId", g)]).await {
            Err(e) if e.kind != "InvalidGroup.NotFound" => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

fn form(action: &str, params: &[(&str, &str)]) -> Params {
    let mut f = form_urlencoded::Serializer::new(String::new());
    f.append_pair("Action", action);
    for (k, v) in params {
        f.append_pair(k, v);
    }
    Params::parse(f.finish().as_bytes())
}

/// The text of the first `<tag>` element of an XML answer.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(xml[start..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_text_finds_the_first_element() {
        let xml = "<a><GroupId>x</GroupId><groupId>sg-1</groupId><groupId>sg-2</groupId></a>";
        assert_eq!(xml_text(xml, "groupId").as_deref(), Some("sg-1"));
        assert_eq!(xml_text(xml, "nothing"), None);
    }
}
