//! Clusters: their ECS objects, the rule for their names, and which is
//! meant when a request names one or none.

use crate::core::model::{Cluster, KeyValue, Tag, arn, name_of, now};
use crate::core::state::State;
use crate::error::ApiError;

pub(crate) fn new_cluster(name: &str, region: &str, tags: Vec<Tag>) -> Cluster {
    Cluster {
        cluster_arn: arn("ecs", region, &format!("cluster/{name}")),
        cluster_name: name.to_string(),
        status: "ACTIVE".into(),
        tags,
        settings: vec![KeyValue {
            name: "containerInsights".into(),
            value: "disabled".into(),
        }],
        created_at: now(),
        capacity_providers: Vec::new(),
        default_capacity_provider_strategy: Vec::new(),
        configuration: None,
    }
}

pub(crate) fn cluster_name(given: Option<&str>) -> &str {
    name_of(given.filter(|c| !c.is_empty()).unwrap_or("default"))
}

pub(crate) fn active_cluster<'a>(
    state: &'a State,
    given: Option<&str>,
) -> Result<&'a Cluster, ApiError> {
    state
        .clusters
        .get(cluster_name(given))
        .map(|e| &e.value)
        .filter(|c| c.status == "ACTIVE")
        .ok_or_else(ApiError::cluster_not_found)
}

/// ECS's rule for cluster names.
pub(crate) fn check_cluster_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty()
        || name.len() > 255
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ApiError::invalid_parameter(format!(
            "Cluster name {name:?} is invalid: up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed."
        )));
    }
    Ok(())
}
