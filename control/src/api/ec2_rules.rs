//! Security group rules by id — DescribeSecurityGroupRules,
//! ModifySecurityGroupRules, UpdateSecurityGroupRuleDescriptions* — and
//! EC2 tags (CreateTags, DeleteTags, DescribeTags) on skiff's taggable
//! EC2 resources, security groups.

use super::ec2::{filters, invalid, response};
use crate::api::protocol::query::{Params, Xml};
use crate::core::Core;
use crate::core::model::account;
use crate::core::security_groups::{Rule, Source};
use crate::core::state::Write;
use crate::error::ApiError;

/// Handles the actions here; `None` for any other.
pub(crate) async fn handle(
    core: &Core,
    action: &str,
    p: &Params,
) -> Option<Result<String, ApiError>> {
    Some(match action {
        "CreateTags" => retag(core, p, false).await,
        "DeleteTags" => retag(core, p, true).await,
        "DescribeTags" => describe_tags(core, p).await,
        "DescribeSecurityGroupRules" => describe_rules(core, p).await,
        "ModifySecurityGroupRules" => modify_rules(core, p).await,
        "UpdateSecurityGroupRuleDescriptionsIngress" => descriptions(core, p, false).await,
        "UpdateSecurityGroupRuleDescriptionsEgress" => descriptions(core, p, true).await,
        _ => return None,
    })
}

async fn retag(core: &Core, p: &Params, delete: bool) -> Result<String, ApiError> {
    let ids = p.strings("ResourceId");
    if ids.is_empty() {
        return Err(ApiError::coded(
            "MissingParameter",
            "The request must contain the parameter ResourceId",
        ));
    }
    let mut tags: Vec<(String, Option<String>)> = Vec::new();
    for t in p.list("Tag") {
        let key = t.required("Key")?.to_string();
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(invalid(format!(
                "Tag keys starting with 'aws:' are reserved for internal use: {key}"
            )));
        }
        tags.push((key, t.get("Value").map(String::from)));
    }
    if !delete && tags.is_empty() {
        return Err(ApiError::coded(
            "MissingParameter",
            "The request must contain the parameter Tag",
        ));
    }
    let mut state = core.state.lock().await;
    let mut writes = Vec::new();
    for id in &ids {
        if !id.starts_with("sg-") {
            return Err(invalid(format!(
                "skiff tags security groups only (sg-...); {id} is another kind of resource"
            )));
        }
        let mut g = state
            .security_groups
            .get(id)
            .map(|e| e.value.clone())
            .ok_or_else(|| {
                ApiError::coded(
                    "InvalidGroup.NotFound",
                    format!("The security group '{id}' does not exist"),
                )
            })?;
        for (k, v) in &tags {
            if delete {
                // A value given deletes the tag only if it matches.
                g.tags
                    .retain(|(tk, tv)| tk != k || v.as_ref().is_some_and(|v| v != tv));
            } else {
                let v = v.clone().unwrap_or_default();
                match g.tags.iter_mut().find(|(tk, _)| tk == k) {
                    Some(t) => t.1 = v,
                    None => g.tags.push((k.clone(), v)),
                }
            }
        }
        if g.tags.len() > 50 {
            return Err(ApiError::coded(
                "TagLimitExceeded",
                format!("The security group '{id}' would have more than 50 tags"),
            ));
        }
        writes.push(Write::SecurityGroup(Box::new(g)));
    }
    state.apply(core.store.as_ref(), writes).await?;
    let root = if delete {
        "DeleteTagsResponse"
    } else {
        "CreateTagsResponse"
    };
    let mut x = response(root);
    x.text("return", "true");
    Ok(x.finish())
}

async fn describe_tags(core: &Core, p: &Params) -> Result<String, ApiError> {
    let filters = filters(p, &["resource-id", "resource-type", "key", "value"])?;
    let state = core.state.lock().await;
    let mut x = response("DescribeTagsResponse");
    x.open("tagSet");
    for g in state.security_groups.values().map(|e| &e.value) {
        for (k, v) in &g.tags {
            let keep = filters.iter().all(|(name, values)| {
                let have = match name.as_str() {
                    "resource-id" => g.group_id.as_str(),
                    "resource-type" => "security-group",
                    "key" => k.as_str(),
                    _ => v.as_str(),
                };
                values.iter().any(|w| w == have)
            });
            if keep {
                x.open("item")
                    .text("resourceId", &g.group_id)
                    .text("resourceType", "security-group")
                    .text("key", k)
                    .text("value", v)
                    .close();
            }
        }
    }
    x.close();
    Ok(x.finish())
}

async fn describe_rules(core: &Core, p: &Params) -> Result<String, ApiError> {
    let ids = p.strings("SecurityGroupRuleId");
    let mut groups: Vec<String> = Vec::new();
    let mut rule_ids: Vec<String> = ids;
    for f in p.list("Filter") {
        match f.required("Name")? {
            "group-id" => groups.extend(f.strings("Value")),
            "security-group-rule-id" => rule_ids.extend(f.strings("Value")),
            other => {
                return Err(invalid(format!(
                    "The filter '{other}' is invalid (skiff filters on group-id, security-group-rule-id)"
                )));
            }
        }
    }
    let state = core.state.lock().await;
    let mut x = response("DescribeSecurityGroupRulesResponse");
    x.open("securityGroupRuleSet");
    for g in state.security_groups.values().map(|e| &e.value) {
        if !groups.is_empty() && !groups.contains(&g.group_id) {
            continue;
        }
        let all = g
            .ingress
            .iter()
            .map(|r| (r, false))
            .chain(g.egress.iter().map(|r| (r, true)));
        for (r, egress) in all {
            if !rule_ids.is_empty() && !rule_ids.contains(&r.id) {
                continue;
            }
            rule_item(&mut x, &g.group_id, r, egress);
        }
    }
    x.close();
    Ok(x.finish())
}

fn rule_item(x: &mut Xml, group: &str, r: &Rule, egress: bool) {
    let (from, to) = if r.protocol == "-1" {
        (-1, -1)
    } else {
        (r.from_port, r.to_port)
    };
    x.open("item")
        .text("securityGroupRuleId", &r.id)
        .text("groupId", group)
        .text("groupOwnerId", account())
        .text("isEgress", egress)
        .text("ipProtocol", &r.protocol)
        .text("fromPort", from)
        .text("toPort", to);
    match &r.source {
        Source::Cidr(c) => {
            x.text("cidrIpv4", String::from(*c));
        }
        Source::Group(g) => {
            x.open("referencedGroupInfo")
                .text("groupId", g)
                .text("userId", account())
                .close();
        }
    }
    x.text_opt("description", r.description.as_ref());
    x.open("tagSet").close().close();
}

/// The group a request names (GroupId, else GroupName), to change.
fn group_of(
    state: &crate::core::state::State,
    p: &Params,
) -> Result<crate::core::security_groups::SecurityGroup, ApiError> {
    super::ec2::named(state, p).cloned()
}

fn rule_not_found(id: &str) -> ApiError {
    ApiError::coded(
        "InvalidSecurityGroupRuleId.NotFound",
        format!("The security group rule ID '{id}' does not exist"),
    )
}

async fn commit(
    core: &Core,
    state: &mut crate::core::state::State,
    g: crate::core::security_groups::SecurityGroup,
) -> Result<(), ApiError> {
    state
        .apply(
            core.store.as_ref(),
            vec![Write::SecurityGroup(Box::new(g.clone()))],
        )
        .await?;
    core.fabric.set_group(&g.group_id, &g.ingress, &g.egress);
    Ok(())
}

/// ModifySecurityGroupRules: a rule, by id, becomes what the request says
/// (protocol, ports, peer, description), keeping its id.
async fn modify_rules(core: &Core, p: &Params) -> Result<String, ApiError> {
    let mut state = core.state.lock().await;
    let group_id = p.required("GroupId")?.to_string();
    let mut g = group_of(&state, p)?;
    for m in p.list("SecurityGroupRule") {
        let id = m.required("SecurityGroupRuleId")?.to_string();
        let spec = m.member("SecurityGroupRule");
        let protocol = spec.required("IpProtocol")?.to_ascii_lowercase();
        let protocol = match protocol.as_str() {
            "tcp" | "6" => "tcp",
            "udp" | "17" => "udp",
            "icmp" | "1" => "icmp",
            "-1" | "all" => "-1",
            other => {
                return Err(invalid(format!(
                    "Invalid value '{other}' for IP protocol. Unknown protocol."
                )));
            }
        };
        let port = |name: &str| -> Result<i64, ApiError> {
            spec.int(name)?
                .ok_or_else(|| invalid(format!("{name} is required for {protocol}")))
        };
        let (from, to) = if protocol == "-1" {
            (-1, -1)
        } else {
            (port("FromPort")?, port("ToPort")?)
        };
        let source = match (spec.get("CidrIpv4"), spec.get("ReferencedGroupId")) {
            (Some(c), None) => Source::Cidr(
                crate::core::security_groups::Cidr::try_from(c.to_string()).map_err(invalid)?,
            ),
            (None, Some(gid)) => {
                if !state.security_groups.contains_key(gid) {
                    return Err(ApiError::coded(
                        "InvalidGroup.NotFound",
                        format!("The security group '{gid}' does not exist"),
                    ));
                }
                Source::Group(gid.to_string())
            }
            _ => return Err(invalid("Give one of CidrIpv4 or ReferencedGroupId")),
        };
        let description = crate::api::ec2::description(&spec)?;
        let rule = g
            .ingress
            .iter_mut()
            .chain(g.egress.iter_mut())
            .find(|r| r.id == id)
            .ok_or_else(|| rule_not_found(&id))?;
        *rule = Rule {
            id,
            protocol: protocol.into(),
            from_port: from,
            to_port: to,
            source,
            description,
        };
    }
    if g.group_id != group_id {
        return Err(invalid("GroupId does not name the rules' group"));
    }
    commit(core, &mut state, g).await?;
    let mut x = response("ModifySecurityGroupRulesResponse");
    x.text("return", "true");
    Ok(x.finish())
}

/// UpdateSecurityGroupRuleDescriptions{Ingress,Egress}: by rule id, or
/// by the permission a rule has.
async fn descriptions(core: &Core, p: &Params, egress: bool) -> Result<String, ApiError> {
    let mut state = core.state.lock().await;
    let mut g = group_of(&state, p)?;
    let rules = if egress {
        &mut g.egress
    } else {
        &mut g.ingress
    };
    for d in p.list("SecurityGroupRuleDescriptions") {
        let id = d.required("SecurityGroupRuleId")?;
        let text = crate::api::ec2::description(&d)?;
        let r = rules
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or_else(|| rule_not_found(id))?;
        r.description = text;
    }
    for perm in p.list("IpPermissions") {
        let protocol = perm.get("IpProtocol").unwrap_or("-1").to_ascii_lowercase();
        let from = perm.int("FromPort")?.unwrap_or(-1);
        let to = perm.int("ToPort")?.unwrap_or(-1);
        let matches = |r: &Rule, source: &Source| {
            r.protocol == protocol
                && (protocol == "-1" || (r.from_port == from && r.to_port == to))
                && &r.source == source
        };
        for range in perm.list("IpRanges") {
            let cidr =
                crate::core::security_groups::Cidr::try_from(range.required("CidrIp")?.to_string())
                    .map_err(invalid)?;
            let text = crate::api::ec2::description(&range)?;
            let r = rules
                .iter_mut()
                .find(|r| matches(r, &Source::Cidr(cidr)))
                .ok_or_else(|| rule_not_found(range.required("CidrIp").unwrap_or_default()))?;
            r.description = text;
        }
        for pair in perm
            .list("Groups")
            .into_iter()
            .chain(perm.list("UserIdGroupPairs"))
        {
            let gid = pair.required("GroupId")?.to_string();
            let text = crate::api::ec2::description(&pair)?;
            let r = rules
                .iter_mut()
                .find(|r| matches(r, &Source::Group(gid.clone())))
                .ok_or_else(|| rule_not_found(&gid))?;
            r.description = text;
        }
    }
    commit(core, &mut state, g).await?;
    let root = if egress {
        "UpdateSecurityGroupRuleDescriptionsEgressResponse"
    } else {
        "UpdateSecurityGroupRuleDescriptionsIngressResponse"
    };
    let mut x = response(root);
    x.text("return", "true");
    Ok(x.finish())
}
