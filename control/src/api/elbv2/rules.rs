//! Listener rules: CreateRule, DescribeRules (path-pattern and
//! host-header conditions, by priority).

use super::listeners::{action_xml, parse_action};
use super::{Action, Config, Rule, finish, invalid, lb, not_found, response, short_id, tags};
use crate::api::protocol::query::{Params, Xml};
use crate::error::ApiError;

pub(super) fn default_rule_arn(listener_arn: &str) -> String {
    format!(
        "{}/default",
        listener_arn.replacen(":listener/", ":listener-rule/", 1)
    )
}

pub(super) fn create_rule(cfg: &mut Config, p: &Params) -> Result<String, ApiError> {
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
    let (paths, hosts) = parse_conditions(p.list("Conditions.member"))?;
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

/// A rule's conditions: (path patterns, host headers). A legacy
/// `Values` list holds one value, as ELB requires; the `*Config` forms
/// take several.
pub(super) fn parse_conditions(
    conditions: Vec<Params>,
) -> Result<(Vec<String>, Vec<String>), ApiError> {
    let mut paths = Vec::new();
    let mut hosts = Vec::new();
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
        let legacy = c.strings("Values.member");
        if legacy.len() > 1 {
            return Err(invalid(format!(
                "A '{field}' condition's Values takes one value; give several in {}",
                config.trim_end_matches(".Values.member")
            )));
        }
        let mut given = legacy;
        given.extend(c.strings(config));
        if given.is_empty() {
            return Err(invalid(format!("A {field} condition needs values")));
        }
        if given.iter().any(|v| v.is_empty() || v.len() > 128) {
            return Err(invalid(format!("{field} values are 1 to 128 characters")));
        }
        values.extend(given);
    }
    Ok((paths, hosts))
}

pub(super) fn rule_xml(
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

pub(super) fn describe_rules(cfg: &Config, p: &Params) -> Result<String, ApiError> {
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
