//! Changing what exists: load balancer and listener attributes (AWS's
//! full default set; values skiff cannot honour refused with why),
//! ModifyListener, ModifyRule, SetRulePriorities, SetSecurityGroups,
//! SetSubnets, SetIpAddressType, and DescribeAccountLimits.

use super::listeners::parse_action;
use super::rules::{parse_conditions, rule_xml};
use super::{Config, finish, invalid, lb, not_found, port_param, response};
use crate::api::protocol::query::{Params, Xml};
use crate::core::state::State;
use crate::error::ApiError;

/// How an attribute is answered: any value of the given kind is honoured
/// (`Any`), or only its default is, for the reason given.
enum Takes {
    Bool,
    Seconds(u64, u64),
    OneOf(&'static [&'static str]),
    OnlyDefault(&'static str),
}

const NO_S3: &str = "there is no S3 here to write logs to";
const NO_TLS: &str = "skiff's listeners are plain HTTP and TCP";

/// (key, default, what it takes), as AWS lists them for application load
/// balancers.
const APPLICATION: &[(&str, &str, Takes)] = &[
    ("access_logs.s3.enabled", "false", Takes::OnlyDefault(NO_S3)),
    ("access_logs.s3.bucket", "", Takes::OnlyDefault(NO_S3)),
    ("access_logs.s3.prefix", "", Takes::OnlyDefault(NO_S3)),
    (
        "connection_logs.s3.enabled",
        "false",
        Takes::OnlyDefault(NO_S3),
    ),
    ("connection_logs.s3.bucket", "", Takes::OnlyDefault(NO_S3)),
    ("connection_logs.s3.prefix", "", Takes::OnlyDefault(NO_S3)),
    (
        "health_check_logs.s3.enabled",
        "false",
        Takes::OnlyDefault(NO_S3),
    ),
    ("health_check_logs.s3.bucket", "", Takes::OnlyDefault(NO_S3)),
    ("health_check_logs.s3.prefix", "", Takes::OnlyDefault(NO_S3)),
    ("deletion_protection.enabled", "false", Takes::Bool),
    (
        "idle_timeout.timeout_seconds",
        "60",
        Takes::OnlyDefault(
            "skiff's listeners keep idle connections as hyper does; the timeout is not configurable yet",
        ),
    ),
    (
        "client_keep_alive.seconds",
        "3600",
        Takes::OnlyDefault("skiff's listeners keep client connections as hyper does"),
    ),
    // One availability zone per region: crossing zones changes nothing.
    ("load_balancing.cross_zone.enabled", "true", Takes::Bool),
    (
        "routing.http.desync_mitigation_mode",
        "defensive",
        Takes::OnlyDefault("skiff's HTTP parser refuses ambiguous requests; there are no modes"),
    ),
    (
        "routing.http.drop_invalid_header_fields.enabled",
        "false",
        Takes::OnlyDefault("invalid header fields are refused by skiff's HTTP parser"),
    ),
    (
        "routing.http.preserve_host_header.enabled",
        "false",
        Takes::OnlyDefault("the Host header is passed on as the client sent it"),
    ),
    (
        "routing.http.x_amzn_tls_version_and_cipher_suite.enabled",
        "false",
        Takes::OnlyDefault(NO_TLS),
    ),
    (
        "routing.http.xff_client_port.enabled",
        "false",
        Takes::OnlyDefault("X-Forwarded-For carries the client's address alone"),
    ),
    (
        "routing.http.xff_header_processing.mode",
        "append",
        Takes::OnlyDefault("X-Forwarded-For is appended to, as the default mode does"),
    ),
    // HTTP/2 is negotiated over TLS only, which these listeners are not.
    ("routing.http2.enabled", "true", Takes::Bool),
    (
        "waf.fail_open.enabled",
        "false",
        Takes::OnlyDefault("there is no WAF here"),
    ),
    (
        "zonal_shift.config.enabled",
        "false",
        Takes::OnlyDefault("one availability zone per region: nothing to shift"),
    ),
];

/// As AWS lists them for network load balancers.
const NETWORK: &[(&str, &str, Takes)] = &[
    ("access_logs.s3.enabled", "false", Takes::OnlyDefault(NO_S3)),
    ("access_logs.s3.bucket", "", Takes::OnlyDefault(NO_S3)),
    ("access_logs.s3.prefix", "", Takes::OnlyDefault(NO_S3)),
    ("deletion_protection.enabled", "false", Takes::Bool),
    ("load_balancing.cross_zone.enabled", "false", Takes::Bool),
    (
        "dns_record.client_routing_policy",
        "any_availability_zone",
        Takes::OneOf(&[
            "any_availability_zone",
            "availability_zone_affinity",
            "partial_availability_zone_affinity",
        ]),
    ),
    (
        "zonal_shift.config.enabled",
        "false",
        Takes::OnlyDefault("one availability zone per region: nothing to shift"),
    ),
];

/// Listener attributes.
const LISTENER_APPLICATION: &[(&str, &str, Takes)] = &[(
    "routing.http.response.server.enabled",
    "true",
    Takes::OnlyDefault("answers carry the Server header skiff's listener gives"),
)];
const LISTENER_NETWORK: &[(&str, &str, Takes)] =
    &[("tcp.idle_timeout.seconds", "350", Takes::Seconds(60, 6000))];

fn table(kind: &str) -> &'static [(&'static str, &'static str, Takes)] {
    if kind == "application" {
        APPLICATION
    } else {
        NETWORK
    }
}

/// Checks `value` for `key` in `table`.
fn check(table: &[(&str, &str, Takes)], key: &str, value: &str) -> Result<(), ApiError> {
    let Some((_, default, takes)) = table.iter().find(|(k, _, _)| *k == key) else {
        return Err(invalid(format!(
            "Attribute key '{key}' is not recognized: {}",
            table
                .iter()
                .map(|(k, _, _)| *k)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let ok = match takes {
        Takes::Bool => matches!(value, "true" | "false"),
        Takes::Seconds(lo, hi) => value.parse::<u64>().is_ok_and(|v| (*lo..=*hi).contains(&v)),
        Takes::OneOf(values) => values.contains(&value),
        Takes::OnlyDefault(why) => {
            if value == *default {
                true
            } else {
                return Err(invalid(format!(
                    "Attribute '{key}' value '{value}' is not supported by skiff: {why} (only '{default}')"
                )));
            }
        }
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "Attribute '{key}' value '{value}' is not valid"
        )))
    }
}

fn attributes_xml(
    x: &mut Xml,
    table: &[(&str, &str, Takes)],
    set: &std::collections::BTreeMap<String, String>,
) {
    x.open("Attributes");
    for (k, default, _) in table {
        let v = set.get(*k).map_or(*default, String::as_str);
        x.open("member").text("Key", k).text("Value", v).close();
    }
    x.close();
}

/// The attributes a Modify*Attributes request gives, checked.
fn given(p: &Params, table: &[(&str, &str, Takes)]) -> Result<Vec<(String, String)>, ApiError> {
    let list = p.list("Attributes.member");
    if list.is_empty() {
        return Err(invalid("Attributes must name at least one attribute"));
    }
    let mut out = Vec::new();
    for a in list {
        let key = a.required("Key")?.to_string();
        let value = a.get("Value").unwrap_or_default().to_string();
        check(table, &key, &value)?;
        out.push((key, value));
    }
    Ok(out)
}

pub(super) fn describe_lb_attributes(cfg: &Config, p: &Params) -> Result<String, ApiError> {
    let l = lb(cfg, p.required("LoadBalancerArn")?)?;
    let mut x = response(
        "DescribeLoadBalancerAttributesResponse",
        "DescribeLoadBalancerAttributesResult",
    );
    attributes_xml(&mut x, table(&l.kind), &l.attributes);
    Ok(finish(x))
}

pub(super) fn modify_lb_attributes(cfg: &mut Config, p: &Params) -> Result<String, ApiError> {
    let arn = p.required("LoadBalancerArn")?.to_string();
    let mut l = lb(cfg, &arn)?.clone();
    for (k, v) in given(p, table(&l.kind))? {
        l.attributes.insert(k, v);
    }
    let mut x = response(
        "ModifyLoadBalancerAttributesResponse",
        "ModifyLoadBalancerAttributesResult",
    );
    attributes_xml(&mut x, table(&l.kind), &l.attributes);
    cfg.load_balancers.insert(arn, l);
    Ok(finish(x))
}

fn listener_table(
    cfg: &Config,
    arn: &str,
) -> Result<&'static [(&'static str, &'static str, Takes)], ApiError> {
    let l = cfg
        .listeners
        .get(arn)
        .ok_or_else(|| not_found("ListenerNotFound", &format!("Listener '{arn}'")))?;
    Ok(if lb(cfg, &l.lb_arn)?.kind == "application" {
        LISTENER_APPLICATION
    } else {
        LISTENER_NETWORK
    })
}

pub(super) fn describe_listener_attributes(cfg: &Config, p: &Params) -> Result<String, ApiError> {
    let arn = p.required("ListenerArn")?;
    let t = listener_table(cfg, arn)?;
    let set = cfg
        .listeners
        .get(arn)
        .map(|l| l.attributes.clone())
        .unwrap_or_default();
    let mut x = response(
        "DescribeListenerAttributesResponse",
        "DescribeListenerAttributesResult",
    );
    attributes_xml(&mut x, t, &set);
    Ok(finish(x))
}

pub(super) fn modify_listener_attributes(cfg: &mut Config, p: &Params) -> Result<String, ApiError> {
    let arn = p.required("ListenerArn")?.to_string();
    let t = listener_table(cfg, &arn)?;
    let changes = given(p, t)?;
    let Some(l) = cfg.listeners.get_mut(&arn) else {
        return Err(not_found("ListenerNotFound", &format!("Listener '{arn}'")));
    };
    for (k, v) in changes {
        l.attributes.insert(k, v);
    }
    let set = l.attributes.clone();
    let mut x = response(
        "ModifyListenerAttributesResponse",
        "ModifyListenerAttributesResult",
    );
    attributes_xml(&mut x, t, &set);
    Ok(finish(x))
}

/// Is deletion protection on for `arn`? (DeleteLoadBalancer refuses then.)
pub(super) fn protected(cfg: &Config, arn: &str) -> bool {
    cfg.load_balancers
        .get(arn)
        .and_then(|l| l.attributes.get("deletion_protection.enabled"))
        .is_some_and(|v| v == "true")
}

pub(super) fn modify_listener(cfg: &mut Config, p: &Params) -> Result<String, ApiError> {
    let arn = p.required("ListenerArn")?.to_string();
    let mut l = cfg
        .listeners
        .get(&arn)
        .cloned()
        .ok_or_else(|| not_found("ListenerNotFound", &format!("Listener '{arn}'")))?;
    let balancer = lb(cfg, &l.lb_arn)?.clone();
    if let Some(protocol) = p.get("Protocol") {
        let wants = if balancer.kind == "application" {
            "HTTP"
        } else {
            "TCP"
        };
        if protocol != wants {
            return Err(ApiError::coded(
                "UnsupportedProtocol",
                format!(
                    "Protocol '{protocol}': this load balancer's listeners are {wants} ({NO_TLS})"
                ),
            ));
        }
    }
    if p.get("Certificates.member.1.CertificateArn").is_some() || p.get("SslPolicy").is_some() {
        return Err(ApiError::coded(
            "UnsupportedProtocol",
            format!("Certificates and SSL policies: {NO_TLS}"),
        ));
    }
    if let Some(port) = port_param(p, "Port")?
        && port != l.port
    {
        if cfg.listeners.values().any(|o| {
            o.port == port
                && cfg
                    .load_balancers
                    .get(&o.lb_arn)
                    .is_some_and(|b| b.address == balancer.address)
        }) {
            return Err(ApiError::coded(
                "DuplicateListener",
                "A listener already exists on this port for this load balancer",
            ));
        }
        if let Err(e) = std::net::TcpListener::bind((balancer.address, port)) {
            return Err(ApiError::coded(
                "InvalidConfigurationRequest",
                format!("The listener cannot bind {}:{port}: {e}", balancer.address),
            ));
        }
        l.port = port;
    }
    let actions = p.list("DefaultActions.member");
    if !actions.is_empty() {
        l.default_action = parse_action(cfg, actions, &balancer)?;
    }
    let mut x = response("ModifyListenerResponse", "ModifyListenerResult");
    x.open("Listeners");
    super::listeners::listener_xml(&mut x, &l);
    x.close();
    cfg.listeners.insert(arn, l);
    Ok(finish(x))
}

pub(super) fn modify_rule(cfg: &mut Config, p: &Params) -> Result<String, ApiError> {
    let arn = p.required("RuleArn")?.to_string();
    let mut r = cfg
        .rules
        .get(&arn)
        .cloned()
        .ok_or_else(|| not_found("RuleNotFound", &format!("Rule '{arn}'")))?;
    let listener = cfg.listeners.get(&r.listener_arn).cloned().ok_or_else(|| {
        not_found(
            "ListenerNotFound",
            &format!("Listener '{}'", r.listener_arn),
        )
    })?;
    let balancer = lb(cfg, &listener.lb_arn)?.clone();
    let conditions = p.list("Conditions.member");
    if !conditions.is_empty() {
        (r.paths, r.hosts) = parse_conditions(conditions)?;
    }
    let actions = p.list("Actions.member");
    if !actions.is_empty() {
        r.action = parse_action(cfg, actions, &balancer)?;
    }
    let mut x = response("ModifyRuleResponse", "ModifyRuleResult");
    x.open("Rules");
    rule_xml(
        &mut x,
        &r.arn,
        &r.priority.to_string(),
        &r.paths,
        &r.hosts,
        &r.action,
        false,
    );
    x.close();
    cfg.rules.insert(arn, r);
    Ok(finish(x))
}

pub(super) fn set_rule_priorities(cfg: &mut Config, p: &Params) -> Result<String, ApiError> {
    let mut changes = Vec::new();
    for m in p.list("RulePriorities.member") {
        let arn = m.required("RuleArn")?.to_string();
        let priority = m
            .int("Priority")
            .map_err(|e| invalid(e.message))?
            .filter(|n| (1..=50_000).contains(n))
            .ok_or_else(|| invalid("A priority is 1 to 50000"))? as u32;
        if !cfg.rules.contains_key(&arn) {
            return Err(not_found("RuleNotFound", &format!("Rule '{arn}'")));
        }
        changes.push((arn, priority));
    }
    let mut next = cfg.clone();
    for (arn, priority) in &changes {
        if let Some(r) = next.rules.get_mut(arn) {
            r.priority = *priority;
        }
    }
    // No two rules of a listener may share a priority afterwards.
    let mut seen = std::collections::HashSet::new();
    for r in next.rules.values() {
        if !seen.insert((r.listener_arn.clone(), r.priority)) {
            return Err(ApiError::coded(
                "PriorityInUse",
                format!("Priority '{}' is currently in use", r.priority),
            ));
        }
    }
    *cfg = next;
    let mut x = response("SetRulePrioritiesResponse", "SetRulePrioritiesResult");
    x.open("Rules");
    for (arn, _) in &changes {
        if let Some(r) = cfg.rules.get(arn) {
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
    }
    x.close();
    Ok(finish(x))
}

pub(super) fn set_security_groups(
    state: &State,
    cfg: &mut Config,
    p: &Params,
) -> Result<String, ApiError> {
    let arn = p.required("LoadBalancerArn")?.to_string();
    let mut l = lb(cfg, &arn)?.clone();
    if l.kind != "application" {
        return Err(invalid(
            "Network load balancers here have no security groups",
        ));
    }
    let groups =
        crate::core::security_groups::resolve_groups(state, &p.strings("SecurityGroups.member"))?;
    l.security_groups = groups.clone();
    cfg.load_balancers.insert(arn, l);
    let mut x = response("SetSecurityGroupsResponse", "SetSecurityGroupsResult");
    x.open("SecurityGroupIds");
    for g in groups {
        x.text("member", g);
    }
    x.close();
    Ok(finish(x))
}

pub(super) fn set_subnets(cfg: &mut Config, p: &Params, region: &str) -> Result<String, ApiError> {
    let arn = p.required("LoadBalancerArn")?.to_string();
    let mut l = lb(cfg, &arn)?.clone();
    let mut subnets = p.strings("Subnets.member");
    subnets.extend(
        p.list("SubnetMappings.member")
            .iter()
            .filter_map(|m| m.get("SubnetId").map(String::from)),
    );
    if subnets.is_empty() {
        return Err(invalid("Subnets must name at least one subnet"));
    }
    if let Some(bad) = subnets.iter().find(|s| !s.starts_with("subnet-")) {
        return Err(invalid(format!("'{bad}' is not a valid subnet ID")));
    }
    l.subnets = subnets.clone();
    cfg.load_balancers.insert(arn, l);
    let mut x = response("SetSubnetsResponse", "SetSubnetsResult");
    x.open("AvailabilityZones");
    for s in subnets {
        x.open("member")
            .text("ZoneName", format!("{region}a"))
            .text("SubnetId", s)
            .close();
    }
    x.close().text("IpAddressType", "ipv4");
    Ok(finish(x))
}

pub(super) fn set_ip_address_type(cfg: &Config, p: &Params) -> Result<String, ApiError> {
    lb(cfg, p.required("LoadBalancerArn")?)?;
    match p.required("IpAddressType")? {
        "ipv4" => {}
        other => {
            return Err(invalid(format!(
                "IpAddressType '{other}' is not supported by skiff: load balancers listen on IPv4 loopback addresses (ipv4)"
            )));
        }
    }
    let mut x = response("SetIpAddressTypeResponse", "SetIpAddressTypeResult");
    x.text("IpAddressType", "ipv4");
    Ok(finish(x))
}

/// AWS's default quotas, for tools that read them (skiff does not count
/// them: its load balancers are listeners on this machine).
pub(super) fn describe_account_limits() -> String {
    let mut x = response(
        "DescribeAccountLimitsResponse",
        "DescribeAccountLimitsResult",
    );
    x.open("Limits");
    for (name, max) in [
        ("application-load-balancers", "50"),
        ("target-groups", "3000"),
        ("targets-per-application-load-balancer", "1000"),
        ("listeners-per-application-load-balancer", "50"),
        ("rules-per-application-load-balancer", "100"),
        ("network-load-balancers", "50"),
        ("targets-per-network-load-balancer", "3000"),
        ("listeners-per-network-load-balancer", "50"),
    ] {
        x.open("member").text("Name", name).text("Max", max).close();
    }
    x.close();
    finish(x)
}
