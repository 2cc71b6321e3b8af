//! EC2's read-only view of skiff's network, in EC2's Query protocol:
//! DescribeVpcs (the one VPC: the task address range), DescribeSubnets
//! (the default subnet and every subnet label a task or service names),
//! DescribeNetworkInterfaces (each live awsvpc task's ENI, with its
//! public address when it has one), DescribeAvailabilityZones.
//!
//! Subnets are labels: every one shares the VPC's range, and a task's
//! address comes from the block of the machine it runs on.

use super::ec2::{filters, invalid, response};
use crate::api::protocol::query::{Params, Xml};
use crate::core::Core;
use crate::core::model::{Task, account, name_of};
use crate::core::security_groups::VPC_ID;
use crate::core::state::State;
use crate::error::ApiError;
use std::collections::BTreeSet;

/// The VPC's range: loopback, where every task address of every machine
/// is (this machine's 127.18.0.0/16, remote agents' blocks of
/// 127.64.0.0/10).
pub(crate) const VPC_CIDR: &str = "127.0.0.0/8";

/// The subnet that exists before any is named.
pub(crate) const DEFAULT_SUBNET: &str = "subnet-0000000000000000a";

/// Do `values` of each filter include what `have` gives for its name?
fn passes(filters: &[(String, Vec<String>)], have: impl Fn(&str) -> Vec<String>) -> bool {
    filters
        .iter()
        .all(|(name, values)| have(name).iter().any(|h| values.contains(h)))
}

/// Handles one of the actions here; `None` when the action is not one.
pub(crate) async fn handle(
    core: &Core,
    action: &str,
    p: &Params,
    region: &str,
) -> Option<Result<String, ApiError>> {
    Some(match action {
        "DescribeVpcs" => describe_vpcs(p),
        "DescribeSubnets" => describe_subnets(core, p, region).await,
        "DescribeNetworkInterfaces" => describe_interfaces(core, p, region).await,
        "DescribeAvailabilityZones" => describe_zones(p, region),
        "DescribeRegions" => describe_regions(p, region),
        "DescribeAccountAttributes" => describe_account(p),
        "DescribeVpcAttribute" => describe_vpc_attribute(p),
        other => return super::ec2_rules::handle(core, other, p).await,
    })
}

fn describe_vpcs(p: &Params) -> Result<String, ApiError> {
    let f = filters(p, &["vpc-id", "is-default", "cidr", "state"])?;
    let ids = p.strings("VpcId");
    if let Some(bad) = ids.iter().find(|i| *i != VPC_ID) {
        return Err(ApiError::coded(
            "InvalidVpcID.NotFound",
            format!("The vpc ID '{bad}' does not exist (skiff has one VPC: {VPC_ID})"),
        ));
    }
    let shown = passes(&f, |name| {
        vec![
            match name {
                "vpc-id" => VPC_ID,
                "is-default" => "true",
                "cidr" => VPC_CIDR,
                _ => "available",
            }
            .to_string(),
        ]
    });
    let mut x = response("DescribeVpcsResponse");
    x.open("vpcSet");
    if shown {
        x.open("item")
            .text("vpcId", VPC_ID)
            .text("ownerId", account())
            .text("state", "available")
            .text("cidrBlock", VPC_CIDR)
            .open("cidrBlockAssociationSet")
            .open("item")
            .text("cidrBlock", VPC_CIDR)
            .text("associationId", "vpc-cidr-assoc-0000000000000skf")
            .open("cidrBlockState")
            .text("state", "associated")
            .close()
            .close()
            .close()
            .text("dhcpOptionsId", "default")
            .text("instanceTenancy", "default")
            .text("isDefault", "true")
            .close();
    }
    x.close();
    Ok(x.finish())
}

/// Every subnet skiff knows: the default one and the labels live tasks
/// and services name.
fn subnets(state: &State) -> BTreeSet<String> {
    let mut all = BTreeSet::from([DEFAULT_SUBNET.to_string()]);
    let named = state
        .tasks
        .values()
        .map(|t| &t.value)
        .filter(|t| t.last_status != "STOPPED")
        .filter_map(|t| t.network_configuration.as_ref())
        .chain(
            state
                .services
                .values()
                .filter(|s| s.value.status != "INACTIVE")
                .filter_map(|s| s.value.network_configuration.as_ref()),
        )
        .filter_map(|n| n.awsvpc_configuration.as_ref())
        .flat_map(|v| v.subnets.iter().cloned());
    all.extend(named);
    all
}

async fn describe_subnets(core: &Core, p: &Params, region: &str) -> Result<String, ApiError> {
    let f = filters(
        p,
        &[
            "subnet-id",
            "vpc-id",
            "availability-zone",
            "default-for-az",
            "state",
        ],
    )?;
    let ids = p.strings("SubnetId");
    let zone = format!("{region}a");
    let known = subnets(&*core.state.lock().await);
    if let Some(bad) = ids.iter().find(|i| !known.contains(*i)) {
        return Err(ApiError::coded(
            "InvalidSubnetID.NotFound",
            format!("The subnet ID '{bad}' does not exist"),
        ));
    }
    let mut x = response("DescribeSubnetsResponse");
    x.open("subnetSet");
    for s in known
        .iter()
        .filter(|s| ids.is_empty() || ids.contains(s))
        .filter(|s| {
            passes(&f, |name| {
                vec![match name {
                    "subnet-id" => s.to_string(),
                    "vpc-id" => VPC_ID.into(),
                    "availability-zone" => zone.clone(),
                    "default-for-az" => (s.as_str() == DEFAULT_SUBNET).to_string(),
                    _ => "available".into(),
                }]
            })
        })
    {
        x.open("item")
            .text("subnetId", s)
            .text(
                "subnetArn",
                crate::core::model::arn("ec2", region, &format!("subnet/{s}")),
            )
            .text("state", "available")
            .text("ownerId", account())
            .text("vpcId", VPC_ID)
            .text("cidrBlock", VPC_CIDR)
            .text("availableIpAddressCount", 16_777_214)
            .text("availabilityZone", &zone)
            .text("availabilityZoneId", format!("{region}-az1"))
            .text("defaultForAz", s == DEFAULT_SUBNET)
            .text("mapPublicIpOnLaunch", "false")
            .close();
    }
    x.close();
    Ok(x.finish())
}

/// An awsvpc task's interface: (id, subnet, mac, private address).
fn interface(t: &Task) -> Option<(String, String, String, String)> {
    let eni = t
        .attachments
        .iter()
        .find(|a| a["type"] == "ElasticNetworkInterface")?;
    let detail = |name: &str| {
        eni["details"]
            .as_array()?
            .iter()
            .find(|d| d["name"] == name)?["value"]
            .as_str()
            .map(String::from)
    };
    Some((
        detail("networkInterfaceId")?,
        detail("subnetId").unwrap_or_default(),
        detail("macAddress").unwrap_or_default(),
        detail("privateIPv4Address")?,
    ))
}

/// The machine address a task's published ports are on: its public
/// address, when it asked for one.
fn public_address(state: &State, t: &Task) -> Option<String> {
    if !crate::core::tasks::public_ip(t.network_configuration.as_ref()) {
        return None;
    }
    let from_bindings = t
        .containers
        .iter()
        .flat_map(|c| &c.network_bindings)
        .map(|b| b.bind_ip.clone())
        .next();
    from_bindings.or_else(|| {
        let on = t.runs_on()?;
        let i = state.instances.get(name_of(on))?;
        let mesh = i.value.mesh_address.as_deref()?;
        Some(mesh.rsplit_once(':')?.0.to_string())
    })
}

async fn describe_interfaces(core: &Core, p: &Params, region: &str) -> Result<String, ApiError> {
    let f = filters(
        p,
        &[
            "network-interface-id",
            "private-ip-address",
            "addresses.private-ip-address",
            "association.public-ip",
            "subnet-id",
            "vpc-id",
            "group-id",
            "status",
            "description",
            "availability-zone",
        ],
    )?;
    let ids = p.strings("NetworkInterfaceId");
    let state = core.state.lock().await;
    let zone = format!("{region}a");
    let mut found = Vec::new();
    for t in state.tasks.values().map(|t| &t.value) {
        if t.last_status == "STOPPED" {
            continue;
        }
        let Some((id, subnet, mac, ip)) = interface(t) else {
            continue;
        };
        let groups: Vec<String> = t
            .network_configuration
            .as_ref()
            .and_then(|n| n.awsvpc_configuration.as_ref())
            .map(|v| v.security_groups.clone())
            .unwrap_or_default();
        let public = public_address(&state, t);
        let attachment = t
            .attachments
            .iter()
            .find(|a| a["type"] == "ElasticNetworkInterface")
            .and_then(|a| a["id"].as_str())
            .unwrap_or_default()
            .to_string();
        let description =
            crate::core::model::arn("ecs", region, &format!("attachment/{attachment}"));
        let have = |name: &str| -> Vec<String> {
            match name {
                "network-interface-id" => vec![id.clone()],
                "private-ip-address" | "addresses.private-ip-address" => vec![ip.clone()],
                "association.public-ip" => public.clone().into_iter().collect(),
                "subnet-id" => vec![subnet.clone()],
                "vpc-id" => vec![VPC_ID.into()],
                "group-id" => groups.clone(),
                "status" => vec!["in-use".into()],
                "availability-zone" => vec![zone.clone()],
                _ => vec![description.clone()],
            }
        };
        if (ids.is_empty() || ids.contains(&id)) && passes(&f, have) {
            found.push((id, subnet, mac, ip, groups, public, description));
        }
    }
    if let Some(bad) = ids.iter().find(|i| !found.iter().any(|f| &f.0 == *i)) {
        return Err(ApiError::coded(
            "InvalidNetworkInterfaceID.NotFound",
            format!("The networkInterface ID '{bad}' does not exist"),
        ));
    }
    found.sort();
    let group_name = |id: &str| {
        state
            .security_groups
            .get(id)
            .map(|g| g.value.group_name.clone())
            .unwrap_or_default()
    };
    let mut x = response("DescribeNetworkInterfacesResponse");
    x.open("networkInterfaceSet");
    for (id, subnet, mac, ip, groups, public, description) in &found {
        let dns = format!("ip-{}.{region}.compute.internal", ip.replace('.', "-"));
        x.open("item")
            .text("networkInterfaceId", id)
            .text("subnetId", subnet)
            .text("vpcId", VPC_ID)
            .text("availabilityZone", &zone)
            .text("description", description)
            .text("ownerId", account())
            .text("requesterId", "578734482556")
            .text("requesterManaged", "true")
            .text("status", "in-use")
            .text("macAddress", mac)
            .text("privateIpAddress", ip)
            .text("privateDnsName", &dns)
            .text("sourceDestCheck", "true")
            .text("interfaceType", "interface");
        x.open("groupSet");
        for g in groups {
            x.open("item")
                .text("groupId", g)
                .text("groupName", group_name(g))
                .close();
        }
        x.close();
        if let Some(p) = public {
            association(&mut x, p);
        }
        x.open("privateIpAddressesSet")
            .open("item")
            .text("privateIpAddress", ip)
            .text("privateDnsName", &dns)
            .text("primary", "true");
        if let Some(p) = public {
            association(&mut x, p);
        }
        x.close().close();
        x.open("ipv6AddressesSet").close();
        x.open("tagSet").close();
        x.close();
    }
    x.close();
    Ok(x.finish())
}

fn association(x: &mut Xml, public: &str) {
    x.open("association")
        .text("publicIp", public)
        .text("publicDnsName", "")
        .text("ipOwnerId", "amazon")
        .close();
}

fn describe_zones(p: &Params, region: &str) -> Result<String, ApiError> {
    let f = filters(p, &["zone-name", "region-name", "state", "zone-id"])?;
    let zone = format!("{region}a");
    let names = p.strings("ZoneName");
    if let Some(bad) = names.iter().find(|n| **n != zone) {
        return Err(invalid(format!(
            "The zone '{bad}' does not exist in region {region} (skiff answers one zone per region: {zone})"
        )));
    }
    let mut x = response("DescribeAvailabilityZonesResponse");
    x.open("availabilityZoneInfo");
    let shown = passes(&f, |name| {
        vec![match name {
            "zone-name" => zone.clone(),
            "region-name" => region.to_string(),
            "zone-id" => format!("{region}-az1"),
            _ => "available".into(),
        }]
    });
    if shown {
        x.open("item")
            .text("zoneName", &zone)
            .text("zoneState", "available")
            .text("regionName", region)
            .text("zoneId", format!("{region}-az1"))
            .text("zoneType", "availability-zone")
            .text("optInStatus", "opt-in-not-required")
            .open("messageSet")
            .close()
            .close();
    }
    x.close();
    Ok(x.finish())
}

/// DescribeRegions: the region this endpoint is (one skiff serve answers
/// one region).
fn describe_regions(p: &Params, region: &str) -> Result<String, ApiError> {
    let names = p.strings("RegionName");
    if let Some(bad) = names.iter().find(|n| *n != region) {
        return Err(invalid(format!(
            "The region '{bad}' is not this endpoint's: this skiff serve answers {region} (run another for {bad})"
        )));
    }
    let mut x = response("DescribeRegionsResponse");
    x.open("regionInfo")
        .open("item")
        .text("regionName", region)
        .text("regionEndpoint", "the --endpoint-url you called")
        .text("optInStatus", "opt-in-not-required")
        .close()
        .close();
    Ok(x.finish())
}

/// DescribeAccountAttributes: a VPC-only account whose default VPC is
/// skiff's one.
fn describe_account(p: &Params) -> Result<String, ApiError> {
    let wanted = p.strings("AttributeName");
    let all: [(&str, &str); 2] = [("supported-platforms", "VPC"), ("default-vpc", VPC_ID)];
    if let Some(bad) = wanted.iter().find(|w| !all.iter().any(|(n, _)| n == *w)) {
        return Err(invalid(format!(
            "skiff answers the account attributes supported-platforms and default-vpc, not {bad}"
        )));
    }
    let mut x = response("DescribeAccountAttributesResponse");
    x.open("accountAttributeSet");
    for (name, value) in all {
        if wanted.is_empty() || wanted.iter().any(|w| w == name) {
            x.open("item")
                .text("attributeName", name)
                .open("attributeValueSet")
                .open("item")
                .text("attributeValue", value)
                .close()
                .close()
                .close();
        }
    }
    x.close();
    Ok(x.finish())
}

/// DescribeVpcAttribute: names resolve inside tasks (enableDnsSupport,
/// enableDnsHostnames are on).
fn describe_vpc_attribute(p: &Params) -> Result<String, ApiError> {
    let vpc = p.required("VpcId")?;
    if vpc != VPC_ID {
        return Err(ApiError::coded(
            "InvalidVpcID.NotFound",
            format!("The vpc ID '{vpc}' does not exist (skiff has one VPC: {VPC_ID})"),
        ));
    }
    let attribute = p.required("Attribute")?;
    let element = match attribute {
        "enableDnsSupport" => "enableDnsSupport",
        "enableDnsHostnames" => "enableDnsHostnames",
        "enableNetworkAddressUsageMetrics" => "enableNetworkAddressUsageMetrics",
        other => {
            return Err(invalid(format!(
                "Value ({other}) for parameter attribute is invalid: enableDnsSupport, enableDnsHostnames or enableNetworkAddressUsageMetrics"
            )));
        }
    };
    let on = attribute != "enableNetworkAddressUsageMetrics";
    let mut x = response("DescribeVpcAttributeResponse");
    x.text("vpcId", vpc).open(element).text("value", on).close();
    Ok(x.finish())
}
