//! CloudWatch Logs' group and stream housekeeping: DeleteLogStream,
//! Put/DeleteRetentionPolicy (enforced: older events are deleted, never
//! read, and refused on the way in), and tags by group name
//! (TagLogGroup, UntagLogGroup, ListTagsLogGroup) or by ARN
//! (TagResource, UntagResource, ListTagsForResource).

use crate::api::protocol::json::required_nonempty as required;
use crate::core::logs::{LogStore, RETENTION_DAYS};
use crate::error::ApiError;
use serde_json::{Value, json};
use std::collections::BTreeMap;

fn tag_map(v: Option<&Value>) -> Result<BTreeMap<String, String>, ApiError> {
    let Some(obj) = v.and_then(Value::as_object) else {
        return Err(ApiError::invalid_parameter("tags is required"));
    };
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        if k.to_ascii_lowercase().starts_with("aws:") {
            return Err(ApiError::invalid_parameter(format!(
                "Tag key {k:?} uses the reserved prefix aws:."
            )));
        }
        out.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
    }
    Ok(out)
}

/// The group an ARN names: `arn:aws:logs:REGION:ACCOUNT:log-group:NAME`
/// (with or without a trailing `:*`).
fn group_of_arn(arn: &str) -> Result<&str, ApiError> {
    arn.split_once(":log-group:")
        .map(|(_, name)| name.trim_end_matches(":*"))
        .filter(|n| !n.is_empty() && arn.starts_with("arn:aws:logs:"))
        .ok_or_else(|| {
            ApiError::invalid_parameter(format!(
                "{arn} is not a log group ARN (arn:aws:logs:REGION:ACCOUNT:log-group:NAME); skiff tags log groups"
            ))
        })
}

/// Handles the operations here; `None` for any other.
pub(crate) fn handle(store: &LogStore, op: &str, body: &Value) -> Option<Result<Value, ApiError>> {
    OPERATIONS.contains(&op).then(|| run(store, op, body))
}

/// The operations [`handle`] answers.
const OPERATIONS: &[&str] = &[
    "DeleteLogStream",
    "PutRetentionPolicy",
    "DeleteRetentionPolicy",
    "TagLogGroup",
    "UntagLogGroup",
    "ListTagsLogGroup",
    "TagResource",
    "UntagResource",
    "ListTagsForResource",
];

fn run(store: &LogStore, op: &str, body: &Value) -> Result<Value, ApiError> {
    match op {
        "DeleteLogStream" => {
            store.delete_stream(
                required(body, "logGroupName")?,
                required(body, "logStreamName")?,
            )?;
            Ok(json!({}))
        }
        "PutRetentionPolicy" => {
            let group = required(body, "logGroupName")?;
            let days = body
                .get("retentionInDays")
                .and_then(Value::as_i64)
                .ok_or_else(|| ApiError::invalid_parameter("retentionInDays is required"))?;
            if !RETENTION_DAYS.contains(&days) {
                return Err(ApiError::invalid_parameter(format!(
                    "1 validation error detected: Value '{days}' at 'retentionInDays' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
                    RETENTION_DAYS.map(|d| d.to_string()).join(", ")
                )));
            }
            store.set_retention(group, Some(days))?;
            Ok(json!({}))
        }
        "DeleteRetentionPolicy" => {
            store.set_retention(required(body, "logGroupName")?, None)?;
            Ok(json!({}))
        }
        "TagLogGroup" => {
            let tags = tag_map(body.get("tags"))?;
            store.retag(required(body, "logGroupName")?, &tags, &[])?;
            Ok(json!({}))
        }
        "UntagLogGroup" => {
            let keys = string_list(body, "tags")?;
            store.retag(required(body, "logGroupName")?, &BTreeMap::new(), &keys)?;
            Ok(json!({}))
        }
        "ListTagsLogGroup" => {
            let tags = store.tags(required(body, "logGroupName")?)?;
            Ok(json!({ "tags": tags }))
        }
        "TagResource" => {
            let group = group_of_arn(required(body, "resourceArn")?)?;
            store.retag(group, &tag_map(body.get("tags"))?, &[])?;
            Ok(json!({}))
        }
        "UntagResource" => {
            let group = group_of_arn(required(body, "resourceArn")?)?;
            let keys = string_list(body, "tagKeys")?;
            store.retag(group, &BTreeMap::new(), &keys)?;
            Ok(json!({}))
        }
        "ListTagsForResource" => {
            let group = group_of_arn(required(body, "resourceArn")?)?;
            Ok(json!({ "tags": store.tags(group)? }))
        }
        other => Err(ApiError::unknown_operation(other)),
    }
}

fn string_list(body: &Value, name: &str) -> Result<Vec<String>, ApiError> {
    body.get(name)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .ok_or_else(|| ApiError::invalid_parameter(format!("{name} is required")))
}
