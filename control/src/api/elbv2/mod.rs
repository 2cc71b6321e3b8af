//! Elastic Load Balancing v2's API (`aws elbv2 ...`, Query protocol): the
//! subset the AWS CLI needs to put application and network load balancers
//! in front of ECS services. The configuration (load balancers, target
//! groups with their registered targets, listeners, rules) is one document
//! in the state; every change is committed, then synced into the running
//! load balancers (`crate::plane::elb`). One module per object family;
//! this one dispatches, and holds what they share.

mod listeners;
mod load_balancers;
mod modify;
mod rules;
mod tags;
mod target_groups;
mod targets;

pub use crate::plane::elb::config::{
    Action, Config, HealthCheck, Listener, LoadBalancer, Rule, Target, TargetGroup, parse_matcher,
};

use crate::api::protocol::query::{Params, Xml};
use crate::core::Core;
use crate::core::state::Write;
use crate::error::ApiError;
use listeners::{create_listener, describe_listeners};
use load_balancers::{create_lb, describe_lbs};
use rules::{create_rule, default_rule_arn, describe_rules};
use target_groups::{attributes, create_tg, describe_tgs, modify_attributes, modify_tg};
use targets::{describe_health, register_targets};

const XMLNS: &str = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/";

pub(super) fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

pub(super) fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::coded("ValidationError", message)
}

pub(super) fn not_found(kind: &'static str, what: &str) -> ApiError {
    ApiError::coded(kind, format!("{what} not found"))
}

/// A name as ELB takes them: 1 to 32 letters, digits and hyphens, not
/// starting or ending with a hyphen.
pub(super) fn check_name(name: &str, what: &str) -> Result<(), ApiError> {
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

pub(super) fn port_param(p: &Params, name: &str) -> Result<Option<u16>, ApiError> {
    match p.int(name).map_err(|e| invalid(e.message))? {
        None => Ok(None),
        Some(n) if (1..=65535).contains(&n) => Ok(Some(n as u16)),
        Some(n) => Err(invalid(format!(
            "'{n}' at '{name}' failed to satisfy constraint: Member must have value between 1 and 65535"
        ))),
    }
}

pub(super) fn bounded(
    p: &Params,
    name: &str,
    lo: i64,
    hi: i64,
    default: i64,
) -> Result<i64, ApiError> {
    match p.int(name).map_err(|e| invalid(e.message))? {
        None => Ok(default),
        Some(n) if (lo..=hi).contains(&n) => Ok(n),
        Some(n) => Err(invalid(format!(
            "'{n}' at '{name}' failed to satisfy constraint: Member must have value between {lo} and {hi}"
        ))),
    }
}

pub(super) fn response(root: &'static str, result: &'static str) -> Xml {
    let mut x = Xml::document(root, XMLNS);
    x.open(result);
    x
}

pub(super) fn finish(mut x: Xml) -> String {
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
        "DescribeLoadBalancerAttributes" => return modify::describe_lb_attributes(&cfg, p),
        "DescribeListenerAttributes" => return modify::describe_listener_attributes(&cfg, p),
        "DescribeAccountLimits" => return Ok(modify::describe_account_limits()),
        "SetIpAddressType" => return modify::set_ip_address_type(&cfg, p),
        "ModifyLoadBalancerAttributes" => modify::modify_lb_attributes(&mut cfg, p)?,
        "ModifyListenerAttributes" => modify::modify_listener_attributes(&mut cfg, p)?,
        "ModifyTargetGroup" => modify_tg(&mut cfg, p)?,
        "ModifyListener" => modify::modify_listener(&mut cfg, p)?,
        "ModifyRule" => modify::modify_rule(&mut cfg, p)?,
        "SetRulePriorities" => modify::set_rule_priorities(&mut cfg, p)?,
        "SetSecurityGroups" => modify::set_security_groups(&state, &mut cfg, p)?,
        "SetSubnets" => modify::set_subnets(&mut cfg, p, region)?,
        "CreateLoadBalancer" => create_lb(&state, &mut cfg, p, region, core.config.lb_address)?,
        "DeleteLoadBalancer" => {
            let lb = p.required("LoadBalancerArn")?.to_string();
            if modify::protected(&cfg, &lb) {
                return Err(ApiError::coded(
                    "OperationNotPermitted",
                    format!(
                        "Load balancer '{lb}' cannot be deleted because deletion protection is enabled"
                    ),
                ));
            }
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

pub(super) fn lb<'a>(cfg: &'a Config, arn: &str) -> Result<&'a LoadBalancer, ApiError> {
    cfg.load_balancers
        .get(arn)
        .ok_or_else(|| not_found("LoadBalancerNotFound", &format!("Load balancer '{arn}'")))
}

pub(super) fn group<'a>(cfg: &'a Config, arn: &str) -> Result<&'a TargetGroup, ApiError> {
    cfg.target_groups
        .get(arn)
        .ok_or_else(|| not_found("TargetGroupNotFound", &format!("Target groups '{arn}'")))
}
