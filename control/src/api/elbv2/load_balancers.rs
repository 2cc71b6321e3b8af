//! Load balancers: CreateLoadBalancer, DescribeLoadBalancers.

use super::{
    Config, LoadBalancer, check_name, finish, invalid, lb, not_found, response, short_id, tags,
};
use crate::api::protocol::query::{Params, Xml, iso8601};
use crate::core::model::{arn, now};
use crate::core::state::State;
use crate::error::ApiError;
use std::net::Ipv4Addr;

pub(super) fn create_lb(
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
        attributes: Default::default(),
    };
    let mut x = response("CreateLoadBalancerResponse", "CreateLoadBalancerResult");
    x.open("LoadBalancers");
    lb_xml(&mut x, &lb);
    x.close();
    cfg.load_balancers.insert(lb.arn.clone(), lb);
    Ok(finish(x))
}

pub(super) fn lb_xml(x: &mut Xml, lb: &LoadBalancer) {
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

pub(super) fn describe_lbs(cfg: &Config, p: &Params) -> Result<String, ApiError> {
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
