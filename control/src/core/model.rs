//! The ECS objects skiff keeps, in the JSON shapes the API returns them.
//! A task's own shape is the channel's (a task payload carries it to an
//! agent), and is re-exported here.

use crate::core::taskdef::Attribute;
use crate::error::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use skiff_channel::task::*;

/// The account every ARN names.
pub const DEFAULT_ACCOUNT: &str = "000000000000";

static ACCOUNT_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The account id in every ARN and owner field: `skiff serve
/// --account-id` (twelve digits), else [`DEFAULT_ACCOUNT`]. Set once, at
/// start.
pub fn set_account(id: &str) -> Result<(), String> {
    if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("the account id must be twelve digits, not {id:?}"));
    }
    match ACCOUNT_ID.get() {
        Some(set) if set != id => Err(format!("the account id is already {set}")),
        _ => {
            let _ = ACCOUNT_ID.set(id.to_string());
            Ok(())
        }
    }
}

/// See [`set_account`].
pub fn account() -> &'static str {
    ACCOUNT_ID.get().map_or(DEFAULT_ACCOUNT, String::as_str)
}

/// `arn:aws:SERVICE:REGION:000000000000:RESOURCE`.
pub fn arn(service: &str, region: &str, resource: &str) -> String {
    format!("arn:aws:{service}:{region}:{}:{resource}", account())
}

/// A fresh resource id (ECS task ids are 32 hex digits).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// ECS's tag rules: at most 50, keys 1–128 characters, values up to 256,
/// no `aws:` prefix.
pub fn check_tags(tags: &[Tag]) -> Result<(), ApiError> {
    if tags.len() > 50 {
        return Err(ApiError::invalid_parameter(
            "A resource can have at most 50 tags.",
        ));
    }
    for t in tags {
        if t.key.is_empty() || t.key.chars().count() > 128 {
            return Err(ApiError::invalid_parameter(format!(
                "Tag key {:?} must be 1 to 128 characters.",
                t.key
            )));
        }
        if t.value.chars().count() > 256 {
            return Err(ApiError::invalid_parameter(format!(
                "The value of tag {:?} is longer than 256 characters.",
                t.key
            )));
        }
        if t.key.to_ascii_lowercase().starts_with("aws:") {
            return Err(ApiError::invalid_parameter(format!(
                "Tag key {:?} uses the reserved prefix aws:.",
                t.key
            )));
        }
    }
    let mut keys: Vec<&str> = tags.iter().map(|t| t.key.as_str()).collect();
    keys.sort_unstable();
    if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
        return Err(ApiError::invalid_parameter(format!(
            "Tag key {:?} is given twice: a resource's tag keys are unique.",
            w[0]
        )));
    }
    Ok(())
}

/// Merges `new` into `tags`, replacing values of keys already there.
pub fn merge_tags(tags: &mut Vec<Tag>, new: &[Tag]) {
    for t in new {
        match tags.iter_mut().find(|o| o.key == t.key) {
            Some(o) => o.value = t.value.clone(),
            None => tags.push(t.clone()),
        }
    }
}

/// A placement constraint or strategy as ECS's requests carry it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementItem {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

/// A `failures` entry of a Describe or RunTask answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Failure {
    /// The resource does not exist.
    pub fn missing(arn: String) -> Failure {
        Failure {
            arn: Some(arn),
            reason: "MISSING".into(),
            detail: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    pub cluster_arn: String,
    pub cluster_name: String,
    pub status: String,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub settings: Vec<KeyValue>,
    #[serde(default)]
    pub created_at: f64,
    /// The capacity providers associated with it (FARGATE, FARGATE_SPOT).
    #[serde(default)]
    pub capacity_providers: Vec<String>,
    /// The strategy a launch with neither a launch type nor a strategy
    /// uses.
    #[serde(default)]
    pub default_capacity_provider_strategy: Vec<crate::core::capacity::StrategyItem>,
    /// `configuration` as given (execute-command settings, kept as data:
    /// ExecuteCommand itself has no meaning here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<serde_json::Value>,
}

/// A resource a container instance offers (CPU, MEMORY, PORTS, PORTS_UDP).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub double_value: f64,
    #[serde(default)]
    pub long_value: i64,
    #[serde(default)]
    pub integer_value: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_set_value: Option<Vec<String>>,
}

impl Resource {
    pub fn integer(name: &str, value: i64) -> Resource {
        Resource {
            name: name.into(),
            kind: "INTEGER".into(),
            double_value: 0.0,
            long_value: 0,
            integer_value: value,
            string_set_value: None,
        }
    }

    pub fn ports(name: &str, ports: &[u16]) -> Resource {
        Resource {
            name: name.into(),
            kind: "STRINGSET".into(),
            double_value: 0.0,
            long_value: 0,
            integer_value: 0,
            string_set_value: Some(ports.iter().map(|p| p.to_string()).collect()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInstance {
    pub container_instance_arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ec2_instance_id: Option<String>,
    pub version: u64,
    pub version_info: Value,
    pub status: String,
    pub agent_connected: bool,
    pub registered_resources: Vec<Resource>,
    pub remaining_resources: Vec<Resource>,
    pub running_tasks_count: u32,
    pub pending_tasks_count: u32,
    pub attributes: Vec<Attribute>,
    pub registered_at: f64,
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// The cluster's name (stored; not part of ECS's shape, so views
    /// leave it out).
    #[serde(default)]
    pub cluster: String,
    /// When it was deregistered (stored, for forgetting it later; views
    /// leave it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregistered_at: Option<f64>,
    /// Whether its agent also runs FARGATE tasks, of any cluster (stored;
    /// ECS has no such field, so views leave it out).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub offers_fargate: bool,
    /// The session of the agent process that last connected for it (stored;
    /// views leave it out): one connecting with another restarted, and the
    /// tasks the old one had ended with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_session: Option<String>,
    /// The agent key that registered it, if one did (stored; views leave
    /// it out): only that key may open its channel or register it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_by: Option<String>,
    /// Where its agent's mesh listener is reached (stored; views leave it
    /// out): other machines' connections to its tasks go there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_address: Option<String>,
}

/// The name of a resource given by name or ARN
/// (`arn:aws:ecs:r:a:cluster/NAME` → `NAME`).
pub fn name_of(name_or_arn: &str) -> &str {
    if name_or_arn.starts_with("arn:") {
        name_or_arn.rsplit('/').next().unwrap_or(name_or_arn)
    } else {
        name_or_arn
    }
}
