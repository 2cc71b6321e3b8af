//! Security groups as the core keeps them: EC2's objects (stored in the
//! state, mirrored into the fabric), the VPC's `default` group, and how a
//! task's named groups resolve. EC2's API for them is `crate::api::ec2`.

use crate::core::state::{State, Write};
use crate::error::ApiError;
use serde::{Deserialize, Serialize};
pub use skiff_channel::fabric::{Cidr, Rule, Source};

/// The one VPC skiff's groups live in (a label: there is one loopback).
pub const VPC_ID: &str = "vpc-0000000000000skf";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityGroup {
    pub group_id: String,
    pub group_name: String,
    pub description: String,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
}

pub(crate) fn new_id(prefix: &str) -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &hex[..17])
}

pub(crate) fn everything_out() -> Rule {
    Rule {
        id: new_id("sgr"),
        protocol: "-1".into(),
        from_port: -1,
        to_port: -1,
        source: Source::Cidr(Cidr::ANY),
        description: None,
    }
}

/// The VPC's `default` group: all in from its members, all out.
pub fn default_group() -> SecurityGroup {
    let id = new_id("sg");
    SecurityGroup {
        ingress: vec![Rule {
            id: new_id("sgr"),
            protocol: "-1".into(),
            from_port: -1,
            to_port: -1,
            source: Source::Group(id.clone()),
            description: None,
        }],
        egress: vec![everything_out()],
        group_id: id,
        group_name: "default".into(),
        description: "default VPC security group".into(),
        tags: Vec::new(),
    }
}

/// Does a task that is not stopped yet, or an active service, name the
/// group?
pub(crate) fn wanted_by(state: &State, group: &str) -> bool {
    let names = |n: &Option<crate::core::model::NetworkConfiguration>| {
        n.as_ref()
            .and_then(|n| n.awsvpc_configuration.as_ref())
            .is_some_and(|v| v.security_groups.iter().any(|g| g == group))
    };
    state
        .tasks
        .values()
        .any(|t| t.value.last_status != "STOPPED" && names(&t.value.network_configuration))
        || state
            .services
            .values()
            .any(|s| s.value.status != "INACTIVE" && names(&s.value.network_configuration))
}

/// Checks the groups a task names, by id as ECS takes them; none given
/// means the VPC's default group.
pub(crate) fn resolve_groups(state: &State, given: &[String]) -> Result<Vec<String>, ApiError> {
    if given.len() > 5 {
        return Err(ApiError::invalid_parameter(
            "At most 5 security groups can be given.",
        ));
    }
    if given.is_empty() {
        return state
            .security_groups
            .values()
            .find(|g| g.value.group_name == "default")
            .map(|g| vec![g.value.group_id.clone()])
            .ok_or_else(|| ApiError::server("the default security group is missing"));
    }
    given
        .iter()
        .map(|g| {
            state
                .security_groups
                .get(g)
                .map(|e| e.value.group_id.clone())
                .ok_or_else(|| {
                    // A group's name where its id belongs: say which id.
                    let named = state
                        .security_groups
                        .values()
                        .find(|e| e.value.group_name == *g)
                        .map(|e| {
                            format!(
                                " (securityGroups takes group ids: the group named {g} is {})",
                                e.value.group_id
                            )
                        })
                        .unwrap_or_default();
                    ApiError::invalid_parameter(format!(
                        "Error retrieving security group information for [{g}]: The security group '{g}' does not exist{named}"
                    ))
                })
        })
        .collect()
}

/// Makes sure the VPC's default group exists (first start).
pub(crate) fn ensure_default(state: &State) -> Option<Write> {
    (!state
        .security_groups
        .values()
        .any(|g| g.value.group_name == "default"))
    .then(|| Write::SecurityGroup(Box::new(default_group())))
}
