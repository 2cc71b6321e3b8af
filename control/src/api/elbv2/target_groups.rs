//! Target groups: CreateTargetGroup, DescribeTargetGroups, their
//! attributes (deregistration delay, load balancing algorithm) and health
//! check settings.

use super::parse_matcher;
use super::{
    Config, HealthCheck, TargetGroup, bounded, check_name, finish, group, invalid, lb, not_found,
    port_param, response, short_id, tags,
};
use crate::api::protocol::query::{Params, Xml};
use crate::core::model::{arn, now};
use crate::error::ApiError;

pub(super) fn create_tg(cfg: &mut Config, p: &Params, region: &str) -> Result<String, ApiError> {
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
    let health = health_check(p, &protocol, None)?;
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
        health,
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

/// A target group's health check from a request's HealthCheck* members:
/// AWS's defaults for a new group of `protocol`, or, modifying one, what
/// `base` has.
pub(super) fn health_check(
    p: &Params,
    protocol: &str,
    base: Option<&HealthCheck>,
) -> Result<HealthCheck, ApiError> {
    let http = protocol == "HTTP";
    let hc_protocol = p
        .get("HealthCheckProtocol")
        .or(base.map(|b| b.protocol.as_str()))
        .unwrap_or(if http { "HTTP" } else { "TCP" })
        .to_string();
    if !matches!(hc_protocol.as_str(), "HTTP" | "TCP") || (http && hc_protocol == "TCP") {
        return Err(invalid(format!(
            "Health check protocol '{hc_protocol}' is not supported for {protocol} target groups"
        )));
    }
    let hc_port = p
        .get("HealthCheckPort")
        .or(base.map(|b| b.port.as_str()))
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
    let interval = bounded(
        p,
        "HealthCheckIntervalSeconds",
        5,
        300,
        base.map_or(30, |b| b.interval as i64),
    )? as u64;
    // Unless given, the timeout fits inside the interval.
    let default_timeout = base.map_or_else(
        || if http { 5 } else { 10 }.min(interval as i64 - 1).max(2),
        |b| b.timeout as i64,
    );
    let timeout = bounded(p, "HealthCheckTimeoutSeconds", 2, 120, default_timeout)? as u64;
    if timeout >= interval {
        return Err(invalid(
            "The health check timeout must be smaller than the interval",
        ));
    }
    let healthy = bounded(
        p,
        "HealthyThresholdCount",
        2,
        10,
        base.map_or(5, |b| i64::from(b.healthy)),
    )? as u32;
    let unhealthy = bounded(
        p,
        "UnhealthyThresholdCount",
        2,
        10,
        base.map_or(2, |b| i64::from(b.unhealthy)),
    )? as u32;
    let enabled = match p.get("HealthCheckEnabled") {
        Some(v) => v != "false",
        None => base.is_none_or(|b| b.enabled),
    };
    let keep = |given: Option<String>, old: Option<&String>, default: &str| {
        given
            .or_else(|| old.cloned())
            .unwrap_or_else(|| default.into())
    };
    Ok(HealthCheck {
        enabled,
        path: hc_http.then(|| keep(path, base.and_then(|b| b.path.as_ref()), "/")),
        matcher: hc_http.then(|| keep(matcher, base.and_then(|b| b.matcher.as_ref()), "200")),
        protocol: hc_protocol,
        port: hc_port,
        interval,
        timeout,
        healthy,
        unhealthy,
    })
}

/// ModifyTargetGroup: its health check.
pub(super) fn modify_tg(cfg: &mut Config, p: &Params) -> Result<String, ApiError> {
    let arn = p.required("TargetGroupArn")?.to_string();
    let mut tg = group(cfg, &arn)?.clone();
    tg.health = health_check(p, &tg.protocol, Some(&tg.health))?;
    let mut x = response("ModifyTargetGroupResponse", "ModifyTargetGroupResult");
    x.open("TargetGroups");
    tg_xml(&mut x, cfg, &tg);
    x.close();
    cfg.target_groups.insert(arn, tg);
    Ok(finish(x))
}

/// The codes a matcher accepts, or ELB's ValidationError.
pub(super) fn check_matcher(m: &str) -> Result<Vec<(u16, u16)>, ApiError> {
    parse_matcher(m).map_err(invalid)
}

pub(super) fn tg_xml(x: &mut Xml, cfg: &Config, tg: &TargetGroup) {
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

pub(super) fn describe_tgs(cfg: &Config, p: &Params) -> Result<String, ApiError> {
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

pub(super) fn attributes(x: &mut Xml, tg: &TargetGroup) {
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

pub(super) fn modify_attributes(cfg: &mut Config, p: &Params) -> Result<String, ApiError> {
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
