//! Load balancers: the Elastic Load Balancing v2 API subset the AWS CLI
//! needs (`aws elbv2 ...`, Query protocol), and the load balancers
//! themselves ([`plane`]): application load balancers (HTTP/1.1 through
//! hyper, rules by priority) and network load balancers (TCP), listening
//! on the host's loopback.
//!
//! The configuration (load balancers, target groups with their registered
//! targets, listeners, rules) is one document in the state; health, request
//! counts and connections live in the plane, which is synced to the
//! configuration after every change. [`measure`] turns the plane's counts
//! into CloudWatch metrics.

mod tags;

pub use crate::plane::elb::config::{
    Action, Config, HealthCheck, Listener, LoadBalancer, Rule, Target, TargetGroup, parse_matcher,
};

use crate::api::protocol::query::{Params, Xml, iso8601};
use crate::core::Core;
use crate::core::model::{arn, now};
use crate::core::state::{State, Write};
use crate::error::ApiError;
use std::net::Ipv4Addr;

const XMLNS: &str = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/";

/// The id of the machine's container instance, the one `instance` target
/// skiff can reach.
use crate::core::LOCAL_INSTANCE_ID;

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::coded("ValidationError", message)
}

fn not_found(kind: &'static str, what: &str) -> ApiError {
    ApiError::coded(kind, format!("{what} not found"))
}

/// A name as ELB takes them: 1 to 32 letters, digits and hyphens, not
/// starting or ending with a hyphen.
fn check_name(name: &str, what: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        return Err(invalid(format!(
            "{what} name '{name}' must be 1 to 32 letters, digits and hyphens, not starting or ending with a hyphen"
        )));
    }
    if what == "Load balancer" && name.starts_with("internal-") {
        return Err(invalid("Load balancer names cannot start with 'internal-'"));
    }
    Ok(())
}

fn port_param(p: &Params, name: &str) -> Result<Option<u16>, ApiError> {
    match p.int(name).map_err(|e| invalid(e.message))? {
        None => Ok(None),
        Some(n) if (1..=65535).contains(&n) => Ok(Some(n as u16)),
        Some(n) => Err(invalid(format!(
            "'{n}' at '{name}' failed to satisfy constraint: Member must have value between 1 and 65535"
        ))),
    }
}

fn bounded(p: &Params, name: &str, lo: i64, hi: i64, default: i64) -> Result<i64, ApiError> {
    match p.int(name).map_err(|e| invalid(e.message))? {
        None => Ok(default),
        Some(n) if (lo..=hi).contains(&n) => Ok(n),
        Some(n) => Err(invalid(format!(
            "'{n}' at '{name}' failed to satisfy constraint: Member must have value between {lo} and {hi}"
        ))),
    }
}

fn response(root: &'static str, result: &'static str) -> Xml {
    let mut x = Xml::document(root, XMLNS);
    x.open(result);
    x
}

fn finish(mut x: Xml) -> String {
    x.close()
        .open("ResponseMetadata")
        .text("RequestId", uuid::Uuid::new_v4())
        .close();
    x.finish()
}

/// Handles one ELBv2 action; the answer is the XML document.
pub(crate) async fn handle(
    core: &Core,
    action: &str,
    p: &Params,
    region: &str,
) -> Result<String, ApiError> {
    let mut state = core.state.lock().await;
    let mut cfg = state.elb.clone();
    let answer = match action {
        "DescribeLoadBalancers" => return describe_lbs(&cfg, p),
        "DescribeTargetGroups" => return describe_tgs(&cfg, p),
        "DescribeListeners" => return describe_listeners(&cfg, p),
        "DescribeRules" => return describe_rules(&cfg, p),
        "DescribeTargetHealth" => return describe_health(core, &cfg, p),
        "DescribeTags" => return tags::describe(&cfg, p),
        "AddTags" => tags::add(&mut cfg, p)?,
        "RemoveTags" => tags::remove(&mut cfg, p)?,
        "DescribeTargetGroupAttributes" => {
            let tg = group(&cfg, p.required("TargetGroupArn")?)?;
            let mut x = response(
                "DescribeTargetGroupAttributesResponse",
                "DescribeTargetGroupAttributesResult",
            );
            attributes(&mut x, tg);
            return Ok(finish(x));
        }
        "CreateLoadBalancer" => create_lb(&state, &mut cfg, p, region, core.config.lb_address)?,
        "DeleteLoadBalancer" => {
            let lb = p.required("LoadBalancerArn")?.to_string();
            // Deleting one that does not exist succeeds, as on AWS.
            if cfg.load_balancers.remove(&lb).is_some() {
                let listeners: Vec<String> = cfg
                    .listeners
                    .values()
                    .filter(|l| l.lb_arn == lb)
                    .map(|l| l.arn.clone())
                    .collect();
                for l in listeners {
                    cfg.listeners.remove(&l);
                    cfg.rules.retain(|_, r| r.listener_arn != l);
                }
            }
            finish(response(
                "DeleteLoadBalancerResponse",
                "DeleteLoadBalancerResult",
            ))
        }
        "CreateTargetGroup" => create_tg(&mut cfg, p, region)?,
        "ModifyTargetGroupAttributes" => modify_attributes(&mut cfg, p)?,
        "DeleteTargetGroup" => {
            let tg = p.required("TargetGroupArn")?.to_string();
            if !cfg.lbs_of_group(&tg).is_empty() {
                return Err(ApiError::coded(
                    "ResourceInUse",
                    format!("Target group '{tg}' is currently in use by a listener or a rule"),
                ));
            }
            if state.services.values().any(|s| {
                s.value.status != "INACTIVE"
                    && s.value
                        .load_balancers
                        .iter()
                        .any(|l| l.target_group_arn == tg)
            }) {
                return Err(ApiError::coded(
                    "ResourceInUse",
                    format!("Target group '{tg}' is used by an ECS service"),
                ));
            }
            cfg.target_groups.remove(&tg);
            finish(response(
                "DeleteTargetGroupResponse",
                "DeleteTargetGroupResult",
            ))
        }
        "CreateListener" => create_listener(&mut cfg, p)?,
        "DeleteListener" => {
            let l = p.required("ListenerArn")?.to_string();
            if cfg.listeners.remove(&l).is_none() {
                return Err(not_found("ListenerNotFound", &format!("Listener '{l}'")));
            }
            cfg.rules.retain(|_, r| r.listener_arn != l);
            finish(response("DeleteListenerResponse", "DeleteListenerResult"))
        }
        "CreateRule" => create_rule(&mut cfg, p)?,
        "DeleteRule" => {
            let r = p.required("RuleArn")?.to_string();
            if cfg.rules.remove(&r).is_none() {
                return Err(
                    if cfg
                        .listeners
                        .values()
                        .any(|l| default_rule_arn(&l.arn) == r)
                    {
                        ApiError::coded(
                            "OperationNotPermitted",
                            "A listener's default rule cannot be deleted",
                        )
                    } else {
                        not_found("RuleNotFound", &format!("Rule '{r}'"))
                    },
                );
            }
            finish(response("DeleteRuleResponse", "DeleteRuleResult"))
        }
        "RegisterTargets" => register_targets(&state, &mut cfg, p, false)?,
        "DeregisterTargets" => register_targets(&state, &mut cfg, p, true)?,
        other => {
            return Err(ApiError::coded(
                "InvalidAction",
                format!("The action {other} is not valid for skiff's Elastic Load Balancing v2"),
            ));
        }
    };
    state
        .apply(core.store.as_ref(), vec![Write::Elb(Box::new(cfg))])
        .await?;
    core.elb.sync(&state.elb);
    Ok(answer)
}

fn lb<'a>(cfg: &'a Config, arn: &str) -> Result<&'a LoadBalancer, ApiError> {
    cfg.load_balancers
        .get(arn)
        .ok_or_else(|| not_found("LoadBalancerNotFound", &format!("Load balancer '{arn}'")))
}

fn group<'a>(cfg: &'a Config, arn: &str) -> Result<&'a TargetGroup, ApiError> {
    cfg.target_groups
        .get(arn)
        .ok_or_else(|| not_found("TargetGroupNotFound", &format!("Target groups '{arn}'")))
}

fn create_lb(
    state: &State,
    cfg: &mut Config,
    p: &Params,
    region: &str,
    address: Ipv4Addr,
) -> Result<String, ApiError> {
    let name = p.required("Name")?.to_string();
    check_name(&name, "Load balancer")?;
    let kind = p.get("Type").unwrap_or("application").to_string();
    if !matches!(kind.as_str(), "application" | "network") {
        return Err(invalid(format!(
            "Load balancer type '{kind}' is not supported by skiff: use application or network"
        )));
    }
    let scheme = p.get("Scheme").unwrap_or("internet-facing").to_string();
    if !matches!(scheme.as_str(), "internet-facing" | "internal") {
        return Err(invalid(format!("Scheme '{scheme}' is invalid")));
    }
    if let Some(t) = p.get("IpAddressType")
        && t != "ipv4"
    {
        return Err(invalid(
            "skiff's load balancers are IPv4 (loopback) only: IpAddressType ipv4",
        ));
    }
    if !p.list("SubnetMappings.member").is_empty() {
        return Err(invalid(
            "SubnetMappings (static addresses) are not supported: give Subnets",
        ));
    }
    let subnets = p.strings("Subnets.member");
    if let Some(bad) = subnets.iter().find(|s| !s.starts_with("subnet-")) {
        return Err(invalid(format!("'{bad}' is not a valid subnet ID")));
    }
    let groups = p.strings("SecurityGroups.member");
    if kind == "network" && !groups.is_empty() {
        // Network load balancers gained security groups late on AWS;
        // skiff applies none to them.
        return Err(invalid(
            "skiff's network load balancers take no security groups",
        ));
    }
    let security_groups = if kind == "application" {
        crate::core::security_groups::resolve_groups(state, &groups)
            .map_err(|e| ApiError::coded("InvalidSecurityGroup", e.message))?
    } else {
        Vec::new()
    };
    if cfg.load_balancers.values().any(|l| l.name == name) {
        return Err(ApiError::coded(
            "DuplicateLoadBalancerName",
            format!("A load balancer with the same name '{name}' exists"),
        ));
    }
    let id = short_id();
    let short = if kind == "application" { "app" } else { "net" };
    let tags = tags::parse(p, "Tags")?;
    let lb = LoadBalancer {
        arn: arn(
            "elasticloadbalancing",
            region,
            &format!("loadbalancer/{short}/{name}/{id}"),
        ),
        dns_name: format!("{name}-{id}.elb.localhost"),
        name,
        kind,
        scheme,
        subnets,
        security_groups,
        created_at: now(),
        address,
        tags,
    };
    let mut x = response("CreateLoadBalancerResponse", "CreateLoadBalancerResult");
    x.open("LoadBalancers");
    lb_xml(&mut x, &lb);
    x.close();
    cfg.load_balancers.insert(lb.arn.clone(), lb);
    Ok(finish(x))
}

fn lb_xml(x: &mut Xml, lb: &LoadBalancer) {
    x.open("member")
        .text("LoadBalancerArn", &lb.arn)
        .text("DNSName", &lb.dns_name)
        .text("CanonicalHostedZoneId", "ZSKIFF0000000")
        .text("CreatedTime", iso8601(lb.created_at))
        .text("LoadBalancerName", &lb.name)
        .text("Scheme", &lb.scheme)
        .text("VpcId", crate::core::security_groups::VPC_ID)
        .open("State")
        .text("Code", "active")
        .close()
        .text("Type", &lb.kind)
        .open("AvailabilityZones");
    for s in &lb.subnets {
        x.open("member")
            .text("ZoneName", "local")
            .text("SubnetId", s)
            .close();
    }
    x.close();
    if lb.kind == "application" {
        x.open("SecurityGroups");
        for g in &lb.security_groups {
            x.text("member", g);
        }
        x.close();
    }
    x.text("IpAddressType", "ipv4").close();
}

fn describe_lbs(cfg: &Config, p: &Params) -> Result<String, ApiError> {
    let arns = p.strings("LoadBalancerArns.member");
    let names = p.strings("Names.member");
    for a in &arns {
        lb(cfg, a)?;
    }
    for n in &names {
        if !cfg.load_balancers.values().any(|l| &l.name == n) {
            return Err(not_found(
                "LoadBalancerNotFound",
                &format!("Load balancers '[{n}]'"),
            ));
        }
    }
    let mut x = response(
        "DescribeLoadBalancersResponse",
        "DescribeLoadBalancersResult",
    );
    x.open("LoadBalancers");
    for l in cfg.load_balancers.values() {
        if (arns.is_empty() || arns.contains(&l.arn))
            && (names.is_empty() || names.contains(&l.name))
        {
            lb_xml(&mut x, l);
        }
    }
    x.close();
    Ok(finish(x))
}

fn create_tg(cfg: &mut Config, p: &Params, region: &str) -> Result<String, ApiError> {
    let name = p.required("Name")?.to_string();
    check_name(&name, "Target group")?;
    let target_type = p.get("TargetType").unwrap_or("instance").to_string();
    if !matches!(target_type.as_str(), "ip" | "instance") {
        return Err(invalid(format!(
            "Target type '{target_type}' is not supported by skiff: use ip or instance"
        )));
    }
    let protocol = p
        .required("Protocol")
        .map_err(|e| invalid(e.message))?
        .to_string();
    if !matches!(protocol.as_str(), "HTTP" | "TCP") {
        return Err(ApiError::coded(
            "UnsupportedProtocol",
            format!(
                "Protocol '{protocol}' is not supported by skiff: use HTTP (application) or TCP (network); there are no certificates for loopback"
            ),
        ));
    }
    let port = port_param(p, "Port")?.ok_or_else(|| invalid("A port must be specified"))?;
    if let Some(vpc) = p.get("VpcId")
        && !vpc.starts_with("vpc-")
    {
        return Err(invalid(format!("'{vpc}' is not a valid VPC ID")));
    }
    let http = protocol == "HTTP";
    let hc_protocol = p
        .get("HealthCheckProtocol")
        .unwrap_or(if http { "HTTP" } else { "TCP" })
        .to_string();
    if !matches!(hc_protocol.as_str(), "HTTP" | "TCP") || (http && hc_protocol == "TCP") {
        return Err(invalid(format!(
            "Health check protocol '{hc_protocol}' is not supported for {protocol} target groups"
        )));
    }
    let hc_port = p
        .get("HealthCheckPort")
        .unwrap_or("traffic-port")
        .to_string();
    if hc_port != "traffic-port" && !hc_port.parse::<u16>().is_ok_and(|n| n > 0) {
        return Err(invalid(format!(
            "Health check port '{hc_port}' must be traffic-port or 1-65535"
        )));
    }
    let hc_http = hc_protocol == "HTTP";
    let path = p.get("HealthCheckPath").map(String::from);
    if let Some(path) = &path {
        if !hc_http {
            return Err(invalid(
                "A health check path can only be given for HTTP health checks",
            ));
        }
        if !path.starts_with('/') || path.len() > 1024 {
            return Err(invalid(
                "The health check path must start with '/' (1024 characters at most)",
            ));
        }
    }
    let matcher = p.get("Matcher.HttpCode").map(String::from);
    if let Some(m) = &matcher {
        check_matcher(m)?;
        if !hc_http {
            return Err(invalid(
                "A matcher can only be given for HTTP health checks",
            ));
        }
    }
    let interval = bounded(p, "HealthCheckIntervalSeconds", 5, 300, 30)? as u64;
    // Unless given, the timeout fits inside the interval.
    let default_timeout = if http { 5 } else { 10 }.min(interval as i64 - 1).max(2);
    let timeout = bounded(p, "HealthCheckTimeoutSeconds", 2, 120, default_timeout)? as u64;
    if timeout >= interval {
        return Err(invalid(
            "The health check timeout must be smaller than the interval",
        ));
    }
    let healthy = bounded(p, "HealthyThresholdCount", 2, 10, 5)? as u32;
    let unhealthy = bounded(p, "UnhealthyThresholdCount", 2, 10, 2)? as u32;
    let enabled = !matches!(p.get("HealthCheckEnabled"), Some("false"));
    if let Some(existing) = cfg.target_groups.values().find(|t| t.name == name) {
        return Err(ApiError::coded(
            "DuplicateTargetGroupName",
            format!(
                "A target group with the same name '{}' exists",
                existing.name
            ),
        ));
    }
    let tg = TargetGroup {
        arn: arn(
            "elasticloadbalancing",
            region,
            &format!("targetgroup/{name}/{}", short_id()),
        ),
        name,
        protocol,
        port,
        target_type,
        health: HealthCheck {
            enabled,
            protocol: hc_protocol,
            port: hc_port,
            path: if hc_http {
                Some(path.unwrap_or_else(|| "/".into()))
            } else {
                None
            },
            interval,
            timeout,
            healthy,
            unhealthy,
            matcher: if hc_http {
                Some(matcher.unwrap_or_else(|| "200".into()))
            } else {
                None
            },
        },
        algorithm: "round_robin".into(),
        deregistration_delay: 300,
        targets: Vec::new(),
        created_at: now(),
        tags: tags::parse(p, "Tags")?,
    };
    let mut x = response("CreateTargetGroupResponse", "CreateTargetGroupResult");
    x.open("TargetGroups");
    tg_xml(&mut x, cfg, &tg);
    x.close();
    cfg.target_groups.insert(tg.arn.clone(), tg);
    Ok(finish(x))
}

/// The codes a matcher accepts, or ELB's ValidationError.
fn check_matcher(m: &str) -> Result<Vec<(u16, u16)>, ApiError> {
    parse_matcher(m).map_err(invalid)
}

fn tg_xml(x: &mut Xml, cfg: &Config, tg: &TargetGroup) {
    x.open("member")
        .text("TargetGroupArn", &tg.arn)
        .text("TargetGroupName", &tg.name)
        .text("Protocol", &tg.protocol)
        .text("Port", tg.port)
        .text("VpcId", crate::core::security_groups::VPC_ID)
        .text("HealthCheckEnabled", tg.health.enabled)
        .text("HealthCheckProtocol", &tg.health.protocol)
        .text("HealthCheckPort", &tg.health.port)
        .text("HealthCheckIntervalSeconds", tg.health.interval)
        .text("HealthCheckTimeoutSeconds", tg.health.timeout)
        .text("HealthyThresholdCount", tg.health.healthy)
        .text("UnhealthyThresholdCount", tg.health.unhealthy)
        .text_opt("HealthCheckPath", tg.health.path.as_ref());
    if let Some(m) = &tg.health.matcher {
        x.open("Matcher").text("HttpCode", m).close();
    }
    x.open("LoadBalancerArns");
    for lb in cfg.lbs_of_group(&tg.arn) {
        x.text("member", lb);
    }
    x.close()
        .text("TargetType", &tg.target_type)
        .text("IpAddressType", "ipv4")
        .close();
}

fn describe_tgs(cfg: &Config, p: &Params) -> Result<String, ApiError> {
    let arns = p.strings("TargetGroupArns.member");
    let names = p.strings("Names.member");
    let lb_arn = p.get("LoadBalancerArn");
    if let Some(a) = lb_arn {
        lb(cfg, a)?;
    }
    for a in &arns {
        group(cfg, a)?;
    }
    for n in &names {
        if !cfg.target_groups.values().any(|t| &t.name == n) {
            return Err(not_found(
                "TargetGroupNotFound",
                &format!("One or more target groups ('{n}')"),
            ));
        }
    }
    let of_lb = lb_arn.map(|a| cfg.groups_of_lb(a));
    let mut x = response("DescribeTargetGroupsResponse", "DescribeTargetGroupsResult");
    x.open("TargetGroups");
    for tg in cfg.target_groups.values() {
        if (arns.is_empty() || arns.contains(&tg.arn))
            && (names.is_empty() || names.contains(&tg.name))
            && of_lb.as_ref().is_none_or(|g| g.contains(&tg.arn.as_str()))
        {
            tg_xml(&mut x, cfg, tg);
        }
    }
    x.close();
    Ok(finish(x))
}

fn attributes(x: &mut Xml, tg: &TargetGroup) {
    x.open("Attributes");
    for (k, v) in [
        (
            "deregistration_delay.timeout_seconds",
            tg.deregistration_delay.to_string(),
        ),
        ("load_balancing.algorithm.type", tg.algorithm.clone()),
        ("stickiness.enabled", "false".to_string()),
    ] {
        x.open("member").text("Key", k).text("Value", v).close();
    }
    x.close();
}

fn modify_attributes(cfg: &mut Config, p: &Params) -> Result<String, ApiError> {
    let arn = p.required("TargetGroupArn")?.to_string();
    let mut tg = group(cfg, &arn)?.clone();
    for a in p.list("Attributes.member") {
        let key = a.required("Key")?;
        let value = a.required("Value")?;
        match key {
            "deregistration_delay.timeout_seconds" => {
                tg.deregistration_delay = value
                    .parse::<u64>()
                    .ok()
                    .filter(|v| *v <= 3600)
                    .ok_or_else(|| invalid(format!("'{value}' must be 0 to 3600 seconds")))?;
            }
            "load_balancing.algorithm.type" => {
                if !matches!(value, "round_robin" | "least_outstanding_requests") {
                    return Err(invalid(format!(
                        "'{value}' is not a load balancing algorithm skiff has: round_robin or least_outstanding_requests"
                    )));
                }
                if tg.protocol != "HTTP" {
                    return Err(invalid("Only HTTP target groups choose an algorithm"));
                }
                tg.algorithm = value.into();
            }
            "stickiness.enabled" if value == "false" => {}
            other => {
                return Err(invalid(format!(
                    "The attribute '{other}' is not supported by skiff (deregistration_delay.timeout_seconds, load_balancing.algorithm.type)"
                )));
            }
        }
    }
    let mut x = response(
        "ModifyTargetGroupAttributesResponse",
        "ModifyTargetGroupAttributesResult",
    );
    attributes(&mut x, &tg);
    cfg.target_groups.insert(arn, tg);
    Ok(finish(x))
}

/// A listener's or rule's actions: one forward (to one target group) or
/// one fixed response.
fn parse_action(cfg: &Config, list: Vec<Params>, lb: &LoadBalancer) -> Result<Action, ApiError> {
    let [a] = list.as_slice() else {
        return Err(invalid(
            "Give exactly one action: forward or fixed-response",
        ));
    };
    match a.required("Type").map_err(|e| invalid(e.message))? {
        "forward" => {
            let mut tgs: Vec<String> = a
                .get("TargetGroupArn")
                .map(String::from)
                .into_iter()
                .collect();
            for t in a.list("ForwardConfig.TargetGroups.member") {
                let arn = t.required("TargetGroupArn")?.to_string();
                if !tgs.contains(&arn) {
                    tgs.push(arn);
                }
            }
            let [tg] = tgs.as_slice() else {
                return Err(invalid("A forward action takes one target group in skiff"));
            };
            let g = group(cfg, tg)?;
            let wants = if lb.kind == "application" {
                "HTTP"
            } else {
                "TCP"
            };
            if g.protocol != wants {
                return Err(ApiError::coded(
                    "IncompatibleProtocols",
                    format!(
                        "The {} target group cannot be used by a{} {} load balancer",
                        g.protocol,
                        if lb.kind == "application" { "n" } else { "" },
                        lb.kind
                    ),
                ));
            }
            if let Some(other) = cfg.lbs_of_group(tg).into_iter().find(|l| *l != lb.arn) {
                return Err(ApiError::coded(
                    "TargetGroupAssociationLimit",
                    format!(
                        "The target group is already used by load balancer {other}; skiff allows one"
                    ),
                ));
            }
            Ok(Action::Forward(tg.clone()))
        }
        "fixed-response" if lb.kind == "application" => {
            let status = a
                .int("FixedResponseConfig.StatusCode")
                .map_err(|e| invalid(e.message))?
                .filter(|s| (200..=599).contains(s))
                .ok_or_else(|| invalid("A fixed response needs a StatusCode from 200 to 599"))?;
            Ok(Action::Fixed {
                status: status as u16,
                content_type: a.get("FixedResponseConfig.ContentType").map(String::from),
                body: a.get("FixedResponseConfig.MessageBody").map(String::from),
            })
        }
        other => Err(invalid(format!(
            "Action type '{other}' is not supported by skiff here: use forward{}",
            if lb.kind == "application" {
                " or fixed-response"
            } else {
                ""
            }
        ))),
    }
}

fn create_listener(cfg: &mut Config, p: &Params) -> Result<String, ApiError> {
    let lb_arn = p.required("LoadBalancerArn")?.to_string();
    let lb = lb(cfg, &lb_arn)?.clone();
    let protocol = p
        .get("Protocol")
        .unwrap_or(if lb.kind == "application" {
            "HTTP"
        } else {
            "TCP"
        })
        .to_string();
    let wants = if lb.kind == "application" {
        "HTTP"
    } else {
        "TCP"
    };
    if protocol != wants {
        return Err(ApiError::coded(
            "UnsupportedProtocol",
            format!(
                "Protocol '{protocol}': a{} {} load balancer's listeners here are {wants} (no certificates for loopback)",
                if lb.kind == "application" { "n" } else { "" },
                lb.kind
            ),
        ));
    }
    let port =
        port_param(p, "Port")?.ok_or_else(|| invalid("A listener port must be specified"))?;
    if cfg
        .listeners
        .values()
        .any(|l| l.lb_arn == lb_arn && l.port == port)
    {
        return Err(ApiError::coded(
            "DuplicateListener",
            "A listener already exists on this port for this load balancer",
        ));
    }
    if let Some(other) = cfg.listeners.values().find(|l| {
        l.port == port
            && cfg
                .load_balancers
                .get(&l.lb_arn)
                .is_some_and(|o| o.address == lb.address)
    }) {
        return Err(ApiError::coded(
            "InvalidConfigurationRequest",
            format!(
                "Port {port} on {} is already used by listener {}",
                lb.address, other.arn
            ),
        ));
    }
    // The port must be free on the host now: bind it to find out.
    if let Err(e) = std::net::TcpListener::bind((lb.address, port)) {
        return Err(ApiError::coded(
            "InvalidConfigurationRequest",
            format!("The listener cannot bind {}:{port}: {e}", lb.address),
        ));
    }
    let action = parse_action(cfg, p.list("DefaultActions.member"), &lb)?;
    let id = short_id();
    let tail = lb_arn.split("loadbalancer/").nth(1).unwrap_or_default();
    let listener = Listener {
        arn: format!(
            "{}:listener/{tail}/{id}",
            lb_arn.split(":loadbalancer/").next().unwrap_or_default()
        ),
        lb_arn,
        port,
        protocol,
        default_action: action,
        tags: tags::parse(p, "Tags")?,
    };
    let mut x = response("CreateListenerResponse", "CreateListenerResult");
    x.open("Listeners");
    listener_xml(&mut x, &listener);
    x.close();
    cfg.listeners.insert(listener.arn.clone(), listener);
    Ok(finish(x))
}

fn action_xml(x: &mut Xml, name: &'static str, a: &Action) {
    x.open(name).open("member");
    match a {
        Action::Forward(tg) => {
            x.text("Type", "forward")
                .text("TargetGroupArn", tg)
                .text("Order", 1);
            x.open("ForwardConfig")
                .open("TargetGroups")
                .open("member")
                .text("TargetGroupArn", tg)
                .text("Weight", 1)
                .close()
                .close()
                .close();
        }
        Action::Fixed {
            status,
            content_type,
            body,
        } => {
            x.text("Type", "fixed-response").text("Order", 1);
            x.open("FixedResponseConfig")
                .text("StatusCode", status)
                .text_opt("ContentType", content_type.as_ref())
                .text_opt("MessageBody", body.as_ref())
                .close();
        }
    }
    x.close().close();
}

fn listener_xml(x: &mut Xml, l: &Listener) {
    x.open("member")
        .text("ListenerArn", &l.arn)
        .text("LoadBalancerArn", &l.lb_arn)
        .text("Port", l.port)
        .text("Protocol", &l.protocol);
    action_xml(x, "DefaultActions", &l.default_action);
    x.close();
}

fn describe_listeners(cfg: &Config, p: &Params) -> Result<String, ApiError> {
    let arns = p.strings("ListenerArns.member");
    let lb_arn = p.get("LoadBalancerArn");
    if lb_arn.is_none() && arns.is_empty() {
        return Err(invalid("Give a load balancer ARN or listener ARNs"));
    }
    if let Some(a) = lb_arn {
        lb(cfg, a)?;
    }
    for a in &arns {
        if !cfg.listeners.contains_key(a) {
            return Err(not_found(
                "ListenerNotFound",
                &format!("One or more listeners ('{a}')"),
            ));
        }
    }
    let mut x = response("DescribeListenersResponse", "DescribeListenersResult");
    x.open("Listeners");
    for l in cfg.listeners.values() {
        if (arns.is_empty() || arns.contains(&l.arn)) && lb_arn.is_none_or(|a| a == l.lb_arn) {
            listener_xml(&mut x, l);
        }
    }
    x.close();
    Ok(finish(x))
}

fn default_rule_arn(listener_arn: &str) -> String {
    format!(
        "{}/default",
        listener_arn.replacen(":listener/", ":listener-rule/", 1)
    )
}

fn create_rule(cfg: &mut Config, p: &Params) -> Result<String, ApiError> {
    let listener = p.required("ListenerArn")?.to_string();
    let l = cfg
        .listeners
        .get(&listener)
        .cloned()
        .ok_or_else(|| not_found("ListenerNotFound", &format!("Listener '{listener}'")))?;
    let lb = lb(cfg, &l.lb_arn)?.clone();
    if lb.kind != "application" {
        return Err(invalid(
            "Rules are for application load balancers' listeners",
        ));
    }
    let priority = p
        .int("Priority")
        .map_err(|e| invalid(e.message))?
        .ok_or_else(|| invalid("A priority must be specified"))?;
    if !(1..=50_000).contains(&priority) {
        return Err(invalid(format!(
            "'{priority}' at 'priority' failed to satisfy constraint: Member must have value between 1 and 50000"
        )));
    }
    let priority = priority as u32;
    if cfg
        .rules
        .values()
        .any(|r| r.listener_arn == listener && r.priority == priority)
    {
        return Err(ApiError::coded(
            "PriorityInUse",
            format!("Priority '{priority}' is currently in use"),
        ));
    }
    let mut paths = Vec::new();
    let mut hosts = Vec::new();
    let conditions = p.list("Conditions.member");
    if conditions.is_empty() {
        return Err(invalid("A rule needs at least one condition"));
    }
    for c in conditions {
        let field = c.required("Field").map_err(|e| invalid(e.message))?;
        let (values, config) = match field {
            "path-pattern" => (&mut paths, "PathPatternConfig.Values.member"),
            "host-header" => (&mut hosts, "HostHeaderConfig.Values.member"),
            other => {
                return Err(invalid(format!(
                    "Condition field '{other}' is not supported by skiff: use path-pattern or host-header"
                )));
            }
        };
        let mut given = c.strings("Values.member");
        given.extend(c.strings(config));
        if given.is_empty() {
            return Err(invalid(format!("A {field} condition needs values")));
        }
        if given.iter().any(|v| v.is_empty() || v.len() > 128) {
            return Err(invalid(format!("{field} values are 1 to 128 characters")));
        }
        values.extend(given);
    }
    let action = parse_action(cfg, p.list("Actions.member"), &lb)?;
    let rule = Rule {
        arn: format!(
            "{}/{}",
            default_rule_arn(&listener).trim_end_matches("/default"),
            short_id()
        ),
        listener_arn: listener,
        priority,
        paths,
        hosts,
        action,
        tags: tags::parse(p, "Tags")?,
    };
    let mut x = response("CreateRuleResponse", "CreateRuleResult");
    x.open("Rules");
    rule_xml(
        &mut x,
        &rule.arn,
        &rule.priority.to_string(),
        &rule.paths,
        &rule.hosts,
        &rule.action,
        false,
    );
    x.close();
    cfg.rules.insert(rule.arn.clone(), rule);
    Ok(finish(x))
}

fn rule_xml(
    x: &mut Xml,
    arn: &str,
    priority: &str,
    paths: &[String],
    hosts: &[String],
    action: &Action,
    is_default: bool,
) {
    x.open("member")
        .text("RuleArn", arn)
        .text("Priority", priority)
        .open("Conditions");
    for (field, values, config) in [
        ("path-pattern", paths, "PathPatternConfig"),
        ("host-header", hosts, "HostHeaderConfig"),
    ] {
        if values.is_empty() {
            continue;
        }
        x.open("member").text("Field", field).open("Values");
        for v in values {
            x.text("member", v);
        }
        x.close();
        x.open(if config == "PathPatternConfig" {
            "PathPatternConfig"
        } else {
            "HostHeaderConfig"
        })
        .open("Values");
        for v in values {
            x.text("member", v);
        }
        x.close().close().close();
    }
    x.close();
    action_xml(x, "Actions", action);
    x.text("IsDefault", is_default).close();
}

fn describe_rules(cfg: &Config, p: &Params) -> Result<String, ApiError> {
    let listener = p.get("ListenerArn");
    let arns = p.strings("RuleArns.member");
    if listener.is_none() && arns.is_empty() {
        return Err(invalid("Give a listener ARN or rule ARNs"));
    }
    if let Some(l) = listener
        && !cfg.listeners.contains_key(l)
    {
        return Err(not_found("ListenerNotFound", &format!("Listener '{l}'")));
    }
    for a in &arns {
        let default = cfg
            .listeners
            .values()
            .any(|l| default_rule_arn(&l.arn) == *a);
        if !cfg.rules.contains_key(a) && !default {
            return Err(not_found(
                "RuleNotFound",
                &format!("One or more rules ('{a}')"),
            ));
        }
    }
    let mut x = response("DescribeRulesResponse", "DescribeRulesResult");
    x.open("Rules");
    let mut rules: Vec<&Rule> = cfg
        .rules
        .values()
        .filter(|r| {
            listener.is_none_or(|l| l == r.listener_arn)
                && (arns.is_empty() || arns.contains(&r.arn))
        })
        .collect();
    rules.sort_by_key(|r| r.priority);
    for r in rules {
        rule_xml(
            &mut x,
            &r.arn,
            &r.priority.to_string(),
            &r.paths,
            &r.hosts,
            &r.action,
            false,
        );
    }
    for l in cfg.listeners.values() {
        let arn = default_rule_arn(&l.arn);
        if listener.is_some_and(|x| x == l.arn) || arns.contains(&arn) {
            rule_xml(&mut x, &arn, "default", &[], &[], &l.default_action, true);
        }
    }
    x.close();
    Ok(finish(x))
}

fn register_targets(
    state: &State,
    cfg: &mut Config,
    p: &Params,
    remove: bool,
) -> Result<String, ApiError> {
    let arn = p.required("TargetGroupArn")?.to_string();
    let mut tg = group(cfg, &arn)?.clone();
    let given = p.list("Targets.member");
    if given.is_empty() {
        return Err(invalid("Give at least one target"));
    }
    for t in given {
        let id = t
            .required("Id")
            .map_err(|e| invalid(e.message))?
            .to_string();
        let port = port_param(&t, "Port")?.unwrap_or(tg.port);
        check_target(state, &tg, &id)?;
        let target = Target { id, port };
        if remove {
            if !tg.targets.contains(&target) {
                return Err(ApiError::coded(
                    "InvalidTarget",
                    format!(
                        "The target '{}:{}' is not registered in the target group",
                        target.id, target.port
                    ),
                ));
            }
            tg.targets.retain(|x| *x != target);
        } else if !tg.targets.contains(&target) {
            tg.targets.push(target);
        }
    }
    if tg.targets.len() > 1000 {
        return Err(ApiError::coded(
            "TooManyTargets",
            "A target group holds at most 1000 targets",
        ));
    }
    cfg.target_groups.insert(arn, tg);
    Ok(finish(if remove {
        response("DeregisterTargetsResponse", "DeregisterTargetsResult")
    } else {
        response("RegisterTargetsResponse", "RegisterTargetsResult")
    }))
}

/// A target skiff can reach: a loopback address (ip), or this machine's
/// container instance (instance: its published ports on 127.0.0.1).
fn check_target(state: &State, tg: &TargetGroup, id: &str) -> Result<(), ApiError> {
    match tg.target_type.as_str() {
        "ip" => match id.parse::<Ipv4Addr>() {
            Ok(ip) if ip.is_loopback() => Ok(()),
            _ => Err(ApiError::coded(
                "InvalidTarget",
                format!(
                    "The IP address '{id}' is not a loopback address: skiff only ever sends to 127.0.0.0/8"
                ),
            )),
        },
        _ => {
            let known = state
                .instances
                .values()
                .any(|i| i.value.ec2_instance_id.as_deref() == Some(id) && id == LOCAL_INSTANCE_ID);
            if known {
                Ok(())
            } else {
                Err(ApiError::coded(
                    "InvalidTarget",
                    format!(
                        "The instance '{id}' is not this machine's container instance ({LOCAL_INSTANCE_ID})"
                    ),
                ))
            }
        }
    }
}

fn describe_health(core: &Core, cfg: &Config, p: &Params) -> Result<String, ApiError> {
    let arn = p.required("TargetGroupArn")?;
    let tg = group(cfg, arn)?;
    let asked: Vec<Target> = p
        .list("Targets.member")
        .into_iter()
        .map(|t| {
            Ok(Target {
                id: t
                    .required("Id")
                    .map_err(|e| invalid(e.message))?
                    .to_string(),
                port: port_param(&t, "Port")?.unwrap_or(tg.port),
            })
        })
        .collect::<Result<_, ApiError>>()?;
    let health = core.elb.health(tg, cfg);
    let mut x = response("DescribeTargetHealthResponse", "DescribeTargetHealthResult");
    x.open("TargetHealthDescriptions");
    for h in health {
        if !asked.is_empty() && !asked.contains(&h.target) {
            continue;
        }
        x.open("member")
            .open("Target")
            .text("Id", &h.target.id)
            .text("Port", h.target.port)
            .text("AvailabilityZone", "local")
            .close()
            .text("HealthCheckPort", h.health_check_port)
            .open("TargetHealth")
            .text("State", h.state)
            .text_opt("Reason", h.reason)
            .text_opt("Description", h.description.as_ref())
            .close()
            .close();
    }
    x.close();
    Ok(finish(x))
}
