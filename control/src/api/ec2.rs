//! Security groups: the EC2-shaped subset skiff manages, on the API
//! endpoint in EC2's Query protocol (`aws ec2 create-security-group`,
//! `authorize-security-group-ingress`...). Rules name loopback CIDRs (or
//! 0.0.0.0/0) and other groups; [`skiff_channel::fabric`] enforces them on every
//! connect and send of an awsvpc task that is a member.
//!
//! As in a VPC, a `default` group exists from the start: all traffic in
//! from its own members, everything out. A new group lets everything out
//! and nothing in until rules are added.

use crate::api::protocol::query::{Params, Xml};
use crate::core::Core;
use crate::core::model::account;
use crate::core::model::arn;
use crate::core::security_groups::{
    Cidr, Rule, SecurityGroup, Source, VPC_ID, everything_out, new_id, wanted_by,
};
use crate::core::state::Write;
use crate::error::ApiError;

const XMLNS: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

fn not_found(what: &str) -> ApiError {
    ApiError::coded(
        "InvalidGroup.NotFound",
        format!("The security group '{what}' does not exist"),
    )
}

pub(crate) fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::coded("InvalidParameterValue", message)
}

/// Handles one EC2 action; the answer is the XML document.
pub(crate) async fn handle(
    core: &Core,
    action: &str,
    p: &Params,
    region: &str,
) -> Result<String, ApiError> {
    match action {
        "CreateSecurityGroup" => create(core, p, region).await,
        "DescribeSecurityGroups" => describe(core, p, region).await,
        "DeleteSecurityGroup" => delete(core, p).await,
        "AuthorizeSecurityGroupIngress" => authorize(core, p, false, false).await,
        "AuthorizeSecurityGroupEgress" => authorize(core, p, true, false).await,
        "RevokeSecurityGroupIngress" => authorize(core, p, false, true).await,
        "RevokeSecurityGroupEgress" => authorize(core, p, true, true).await,
        other => match super::ec2_network::handle(core, other, p, region).await {
            Some(answer) => answer,
            None => Err(ApiError::coded(
                "InvalidAction",
                format!(
                    "The action {other} is not valid for this web service (skiff's EC2 subset: security groups and its network's Describe calls)"
                ),
            )),
        },
    }
}

pub(crate) fn response(root: &'static str) -> Xml {
    let mut x = Xml::document(root, XMLNS);
    x.text("requestId", uuid::Uuid::new_v4());
    x
}

/// A request's `Filter.N`, checked against the names an action knows.
pub(crate) fn filters(p: &Params, known: &[&str]) -> Result<Vec<(String, Vec<String>)>, ApiError> {
    let mut out = Vec::new();
    for f in p.list("Filter") {
        let name = f.required("Name")?.to_string();
        if !known.contains(&name.as_str()) {
            return Err(invalid(format!(
                "The filter '{name}' is invalid (skiff filters on {})",
                known.join(", ")
            )));
        }
        out.push((name, f.strings("Value")));
    }
    Ok(out)
}

fn tags_of(p: &Params) -> Result<Vec<(String, String)>, ApiError> {
    let mut tags = Vec::new();
    for spec in p.list("TagSpecification") {
        if let Some(t) = spec.get("ResourceType")
            && t != "security-group"
        {
            return Err(invalid(format!(
                "'{t}' is not a valid taggable resource type for this operation."
            )));
        }
        for tag in spec.list("Tag") {
            let key = tag.required("Key")?.to_string();
            tags.push((key, tag.get("Value").unwrap_or_default().to_string()));
        }
    }
    Ok(tags)
}

async fn create(core: &Core, p: &Params, region: &str) -> Result<String, ApiError> {
    let name = p.required("GroupName")?.to_string();
    let description = p.required("GroupDescription")?.to_string();
    if name.is_empty() || name.len() > 255 {
        return Err(invalid("GroupName must be 1 to 255 characters."));
    }
    if name.starts_with("sg-") {
        return Err(invalid("Group names may not be in the format sg-*."));
    }
    if description.len() > 255 {
        return Err(invalid("GroupDescription is at most 255 characters."));
    }
    if let Some(vpc) = p.get("VpcId")
        && vpc != VPC_ID
    {
        return Err(ApiError::coded(
            "InvalidVpcID.NotFound",
            format!("The vpc ID '{vpc}' does not exist (skiff has one VPC: {VPC_ID})"),
        ));
    }
    let tags = tags_of(p)?;
    let mut state = core.state.lock().await;
    if state
        .security_groups
        .values()
        .any(|g| g.value.group_name == name)
    {
        return Err(ApiError::coded(
            "InvalidGroup.Duplicate",
            format!("The security group '{name}' already exists for VPC '{VPC_ID}'"),
        ));
    }
    let sg = SecurityGroup {
        group_id: new_id("sg"),
        group_name: name,
        description,
        ingress: Vec::new(),
        egress: vec![everything_out()],
        tags,
    };
    state
        .apply(
            core.store.as_ref(),
            vec![Write::SecurityGroup(Box::new(sg.clone()))],
        )
        .await?;
    core.fabric.set_group(&sg.group_id, &sg.ingress, &sg.egress);
    let mut x = response("CreateSecurityGroupResponse");
    x.text("groupId", &sg.group_id).text(
        "securityGroupArn",
        arn("ec2", region, &format!("security-group/{}", sg.group_id)),
    );
    tag_set(&mut x, &sg.tags);
    Ok(x.finish())
}

fn tag_set(x: &mut Xml, tags: &[(String, String)]) {
    if tags.is_empty() {
        return;
    }
    x.open("tagSet");
    for (k, v) in tags {
        x.open("item").text("key", k).text("value", v).close();
    }
    x.close();
}

/// The group a request names by `GroupId` or `GroupName`.
pub(crate) fn named<'a>(
    state: &'a crate::core::state::State,
    p: &Params,
) -> Result<&'a SecurityGroup, ApiError> {
    if let Some(id) = p.get("GroupId") {
        return state
            .security_groups
            .get(id)
            .map(|e| &e.value)
            .ok_or_else(|| not_found(id));
    }
    let name = p.get("GroupName").ok_or_else(|| {
        ApiError::coded(
            "MissingParameter",
            "The request must contain the parameter GroupId or GroupName",
        )
    })?;
    state
        .security_groups
        .values()
        .map(|e| &e.value)
        .find(|g| g.group_name == name)
        .ok_or_else(|| not_found(name))
}

async fn describe(core: &Core, p: &Params, region: &str) -> Result<String, ApiError> {
    let ids = p.strings("GroupId");
    let names = p.strings("GroupName");
    let filters = filters(p, &["group-id", "group-name", "vpc-id", "description"])?;
    let max = p.int("MaxResults")?;
    if let Some(m) = max
        && !(5..=1000).contains(&m)
    {
        return Err(invalid("MaxResults must be between 5 and 1000."));
    }
    let start: usize = match p.get("NextToken") {
        Some(t) => t
            .parse()
            .map_err(|_| invalid(format!("The token '{t}' is invalid.")))?,
        None => 0,
    };
    let state = core.state.lock().await;
    for id in &ids {
        if !state.security_groups.contains_key(id) {
            return Err(not_found(id));
        }
    }
    for name in &names {
        if !state
            .security_groups
            .values()
            .any(|g| &g.value.group_name == name)
        {
            return Err(not_found(name));
        }
    }
    let mut groups: Vec<&SecurityGroup> = state
        .security_groups
        .values()
        .map(|e| &e.value)
        .filter(|g| ids.is_empty() || ids.contains(&g.group_id))
        .filter(|g| names.is_empty() || names.contains(&g.group_name))
        .filter(|g| {
            filters.iter().all(|(name, values)| {
                let have = match name.as_str() {
                    "group-id" => g.group_id.as_str(),
                    "group-name" => g.group_name.as_str(),
                    "vpc-id" => VPC_ID,
                    _ => g.description.as_str(),
                };
                values.iter().any(|v| v == have)
            })
        })
        .collect();
    groups.sort_by(|a, b| a.group_name.cmp(&b.group_name));
    let page: Vec<&SecurityGroup> = groups
        .iter()
        .skip(start)
        .take(max.map_or(usize::MAX, |m| m as usize))
        .copied()
        .collect();
    let next = (start + page.len() < groups.len()).then(|| (start + page.len()).to_string());
    let mut x = response("DescribeSecurityGroupsResponse");
    x.open("securityGroupInfo");
    for g in page {
        x.open("item")
            .text("ownerId", account())
            .text("groupId", &g.group_id)
            .text("groupName", &g.group_name)
            .text("groupDescription", &g.description)
            .text("vpcId", VPC_ID)
            .text(
                "securityGroupArn",
                arn("ec2", region, &format!("security-group/{}", g.group_id)),
            );
        permissions(&mut x, "ipPermissions", &g.ingress);
        permissions(&mut x, "ipPermissionsEgress", &g.egress);
        tag_set(&mut x, &g.tags);
        x.close();
    }
    x.close();
    x.text_opt("nextToken", next);
    Ok(x.finish())
}

/// Rules as EC2 lists them: grouped by protocol and ports, each with its
/// CIDR ranges and group pairs.
fn permissions(x: &mut Xml, name: &'static str, rules: &[Rule]) {
    let mut keys: Vec<(&str, i64, i64)> = Vec::new();
    for r in rules {
        let k = (r.protocol.as_str(), r.from_port, r.to_port);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    x.open(name);
    for (protocol, from, to) in keys {
        x.open("item").text("ipProtocol", protocol);
        if protocol != "-1" {
            x.text("fromPort", from).text("toPort", to);
        }
        let same = |r: &&Rule| r.protocol == protocol && r.from_port == from && r.to_port == to;
        x.open("groups");
        for r in rules.iter().filter(same) {
            if let Source::Group(g) = &r.source {
                x.open("item")
                    .text("userId", account())
                    .text("groupId", g)
                    .text_opt("description", r.description.as_ref())
                    .close();
            }
        }
        x.close().open("ipRanges");
        for r in rules.iter().filter(same) {
            if let Source::Cidr(c) = &r.source {
                x.open("item")
                    .text("cidrIp", String::from(*c))
                    .text_opt("description", r.description.as_ref())
                    .close();
            }
        }
        x.close()
            .open("ipv6Ranges")
            .close()
            .open("prefixListIds")
            .close()
            .close();
    }
    x.close();
}

/// The rules an Authorize/Revoke request names.
fn requested_rules(state: &crate::core::state::State, p: &Params) -> Result<Vec<Rule>, ApiError> {
    if p.get("IpProtocol").is_some() || p.get("CidrIp").is_some() {
        return Err(invalid(
            "skiff takes rules as IpPermissions (the AWS CLI's --protocol/--port/--cidr/--source-group send them so)",
        ));
    }
    let perms = p.list("IpPermissions");
    if perms.is_empty() {
        return Err(ApiError::coded(
            "MissingParameter",
            "The request must contain the parameter IpPermissions",
        ));
    }
    let mut rules = Vec::new();
    for perm in perms {
        let protocol = match perm.required("IpProtocol")?.to_ascii_lowercase().as_str() {
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
        let (from, to) = if protocol == "-1" {
            (-1, -1)
        } else {
            let from = perm.int("FromPort")?.ok_or_else(|| {
                invalid(format!("Invalid value for portRange. Must specify both from and to ports with {protocol}."))
            })?;
            let to = perm.int("ToPort")?.ok_or_else(|| {
                invalid(format!("Invalid value for portRange. Must specify both from and to ports with {protocol}."))
            })?;
            let range = if protocol == "icmp" {
                -1..=255
            } else {
                0..=65535
            };
            if !range.contains(&from) || !range.contains(&to) || (protocol != "icmp" && from > to) {
                return Err(invalid(format!(
                    "Invalid value for portRange: {from}-{to} (ports are 0 to 65535, from <= to)"
                )));
            }
            (from, to)
        };
        if !perm.list("Ipv6Ranges").is_empty() {
            return Err(invalid(
                "skiff tasks have no IPv6 addresses: Ipv6Ranges cannot match anything",
            ));
        }
        if !perm.list("PrefixListIds").is_empty() {
            return Err(invalid("skiff has no managed prefix lists"));
        }
        let mut sources = Vec::new();
        for range in perm.list("IpRanges") {
            let cidr = Cidr::try_from(range.required("CidrIp")?.to_string()).map_err(invalid)?;
            sources.push((Source::Cidr(cidr), description(&range)?));
        }
        // On the wire EC2 names the pairs by their location name, Groups.
        let pairs = perm
            .list("Groups")
            .into_iter()
            .chain(perm.list("UserIdGroupPairs"));
        for pair in pairs {
            let group = match (pair.get("GroupId"), pair.get("GroupName")) {
                (Some(id), _) => state
                    .security_groups
                    .get(id)
                    .map(|e| e.value.group_id.clone())
                    .ok_or_else(|| not_found(id))?,
                (None, Some(name)) => state
                    .security_groups
                    .values()
                    .find(|g| g.value.group_name == name)
                    .map(|g| g.value.group_id.clone())
                    .ok_or_else(|| not_found(name))?,
                (None, None) => {
                    return Err(ApiError::coded(
                        "MissingParameter",
                        "A group pair needs a GroupId or GroupName",
                    ));
                }
            };
            sources.push((Source::Group(group), description(&pair)?));
        }
        if sources.is_empty() {
            return Err(ApiError::coded(
                "MissingParameter",
                "A permission needs IpRanges or UserIdGroupPairs",
            ));
        }
        for (source, description) in sources {
            rules.push(Rule {
                id: new_id("sgr"),
                protocol: protocol.into(),
                from_port: from,
                to_port: to,
                source,
                description,
            });
        }
    }
    Ok(rules)
}

/// A rule's `Description`: up to 255 characters of a-z, A-Z, 0-9,
/// spaces and `._-:/()#,@[]+=&;{}!$*`, as EC2 allows.
pub(crate) fn description(p: &Params) -> Result<Option<String>, ApiError> {
    let Some(d) = p.get("Description") else {
        return Ok(None);
    };
    let ok = d.chars().count() <= 255
        && d.chars()
            .all(|c| c.is_ascii_alphanumeric() || " ._-:/()#,@[]+=&;{}!$*".contains(c));
    if !ok {
        return Err(invalid(format!(
            "Invalid rule description. Valid descriptions are strings less than 256 characters from the following set: a-zA-Z0-9. _-:/()#,@[]+=&;{{}}!$*: {d:?}"
        )));
    }
    Ok(Some(d.to_string()))
}

async fn authorize(
    core: &Core,
    p: &Params,
    egress: bool,
    revoke: bool,
) -> Result<String, ApiError> {
    let mut state = core.state.lock().await;
    if egress && p.get("GroupId").is_none() {
        return Err(ApiError::coded(
            "MissingParameter",
            "The request must contain the parameter GroupId",
        ));
    }
    let mut sg = named(&state, p)?.clone();
    let rules = requested_rules(&state, p)?;
    let list = if egress {
        &mut sg.egress
    } else {
        &mut sg.ingress
    };
    let mut changed = Vec::new();
    for r in rules {
        let existing = list.iter().position(|x| x.same(&r));
        match (revoke, existing) {
            (false, Some(_)) => {
                return Err(ApiError::coded(
                    "InvalidPermission.Duplicate",
                    format!(
                        "the specified rule \"peer: {}, {}, ALLOW\" already exists",
                        peer(&r.source),
                        ports(&r)
                    ),
                ));
            }
            (false, None) => {
                changed.push(r.clone());
                list.push(r);
            }
            (true, Some(i)) => changed.push(list.remove(i)),
            (true, None) => {
                return Err(ApiError::coded(
                    "InvalidPermission.NotFound",
                    format!(
                        "The specified rule does not exist in this security group: peer {}, {}",
                        peer(&r.source),
                        ports(&r)
                    ),
                ));
            }
        }
    }
    state
        .apply(
            core.store.as_ref(),
            vec![Write::SecurityGroup(Box::new(sg.clone()))],
        )
        .await?;
    core.fabric.set_group(&sg.group_id, &sg.ingress, &sg.egress);
    let root = match (egress, revoke) {
        (false, false) => "AuthorizeSecurityGroupIngressResponse",
        (true, false) => "AuthorizeSecurityGroupEgressResponse",
        (false, true) => "RevokeSecurityGroupIngressResponse",
        (true, true) => "RevokeSecurityGroupEgressResponse",
    };
    let mut x = response(root);
    x.text("return", "true");
    if !revoke {
        x.open("securityGroupRuleSet");
        for r in &changed {
            x.open("item")
                .text("securityGroupRuleId", &r.id)
                .text("groupId", &sg.group_id)
                .text("groupOwnerId", account())
                .text("isEgress", egress)
                .text("ipProtocol", &r.protocol)
                .text("fromPort", r.from_port)
                .text("toPort", r.to_port);
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
            x.close();
        }
        x.close();
    }
    Ok(x.finish())
}

fn peer(s: &Source) -> String {
    match s {
        Source::Cidr(c) => String::from(*c),
        Source::Group(g) => g.clone(),
    }
}

fn ports(r: &Rule) -> String {
    if r.protocol == "-1" {
        "ALL".into()
    } else {
        format!("{} {}-{}", r.protocol, r.from_port, r.to_port)
    }
}

async fn delete(core: &Core, p: &Params) -> Result<String, ApiError> {
    let mut state = core.state.lock().await;
    let sg = named(&state, p)?.clone();
    if sg.group_name == "default" {
        return Err(ApiError::coded(
            "CannotDelete",
            format!(
                "the specified group: \"{}\" name: \"default\" cannot be deleted by a user",
                sg.group_id
            ),
        ));
    }
    let referenced = state.security_groups.values().any(|g| {
        g.value.group_id != sg.group_id
            && g.value
                .ingress
                .iter()
                .chain(&g.value.egress)
                .any(|r| r.source == Source::Group(sg.group_id.clone()))
    });
    if referenced || core.fabric.in_use(&sg.group_id) || wanted_by(&state, &sg.group_id) {
        return Err(ApiError::coded(
            "DependencyViolation",
            format!("resource {} has a dependent object", sg.group_id),
        ));
    }
    state
        .apply(
            core.store.as_ref(),
            vec![Write::RemoveSecurityGroup(sg.group_id.clone())],
        )
        .await?;
    core.fabric.remove_group(&sg.group_id);
    let mut x = response("DeleteSecurityGroupResponse");
    x.text("return", "true").text("groupId", &sg.group_id);
    Ok(x.finish())
}
