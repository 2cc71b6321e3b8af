//! ECR repository creation templates: Create/Describe/Update/Delete
//! RepositoryCreationTemplate. The registry keeps them and applies tag
//! mutability and lifecycle policy when it makes a repository by itself
//! (`skiff_registry::templates`); [`apply`] gives such a repository the
//! template's repository policy and tags, which the control plane keeps.

use crate::api::protocol::json::{listed_up_to, refuse_saying_why, required, string_list};
use crate::core::Core;
use crate::core::model::{account, now};
use crate::core::state::Write;
use crate::error::ApiError;
use serde_json::{Value, json};
use skiff_registry::Registry;

const APPLIED_FOR: [&str; 3] = ["REPLICATION", "PULL_THROUGH_CACHE", "CREATE_ON_PUSH"];

/// The operations [`handle`] answers (SQLite calls: run it off the
/// API's async workers).
pub(crate) const OPERATIONS: &[&str] = &[
    "CreateRepositoryCreationTemplate",
    "UpdateRepositoryCreationTemplate",
    "DeleteRepositoryCreationTemplate",
    "DescribeRepositoryCreationTemplates",
];

/// Answers the template operations; None for any other.
pub(crate) fn handle(
    registry: &Registry,
    op: &str,
    body: &Value,
) -> Option<Result<Value, ApiError>> {
    let answer = match op {
        "CreateRepositoryCreationTemplate" => put(registry, body, None),
        "UpdateRepositoryCreationTemplate" => required(body, "prefix").and_then(|p| {
            let p = trimmed(p);
            let current = registry
                .templates()
                .map_err(super::ecr::ecr_error)?
                .into_iter()
                .find(|t| t["prefix"] == p)
                .ok_or_else(|| {
                    super::ecr::ecr_error(skiff_registry::AdminError::TemplateNotFound(p.into()))
                })?;
            put(registry, body, Some(current))
        }),
        "DeleteRepositoryCreationTemplate" => required(body, "prefix").and_then(|p| {
            let t = registry
                .delete_template(trimmed(p))
                .map_err(super::ecr::ecr_error)?;
            Ok(json!({ "registryId": account(), "repositoryCreationTemplate": t }))
        }),
        "DescribeRepositoryCreationTemplates" => describe(registry, body),
        _ => return None,
    };
    Some(answer)
}

/// A prefix as templates are kept under: without a trailing slash.
fn trimmed(prefix: &str) -> &str {
    match prefix.trim_end_matches('/') {
        "" => prefix,
        p => p,
    }
}

/// Creates a template (`current` None) or updates `current` with what the
/// request gives.
fn put(registry: &Registry, body: &Value, current: Option<Value>) -> Result<Value, ApiError> {
    refuse_saying_why(body, &[super::ecr::NO_CUSTOM_ROLE])?;
    let prefix = required(body, "prefix")?;
    let name_like = trimmed(prefix);
    if prefix != "ROOT" && !skiff_registry::names::valid_repository(name_like) {
        return Err(ApiError::invalid_parameter(format!(
            "prefix {prefix:?} must be ROOT or a repository namespace: lowercase letters and digits, separated by . _ - or /"
        )));
    }
    let creating = current.is_none();
    let at = now();
    let mut t = current.unwrap_or_else(|| {
        json!({
            "prefix": name_like,
            "imageTagMutability": "MUTABLE",
            "encryptionConfiguration": {"encryptionType": "AES256"},
            "resourceTags": [],
            "createdAt": at,
        })
    });
    if let Some(a) = body.get("appliedFor").filter(|v| !v.is_null()) {
        let kinds = string_list(body, "appliedFor")?;
        if kinds.is_empty() {
            return Err(ApiError::invalid_parameter(
                "appliedFor needs at least one of REPLICATION, PULL_THROUGH_CACHE, CREATE_ON_PUSH",
            ));
        }
        if let Some(k) = kinds.iter().find(|k| !APPLIED_FOR.contains(&k.as_str())) {
            return Err(ApiError::invalid_parameter(format!(
                "appliedFor {k:?} is not one of REPLICATION, PULL_THROUGH_CACHE, CREATE_ON_PUSH"
            )));
        }
        t["appliedFor"] = a.clone();
    } else if creating {
        return Err(ApiError::invalid_parameter("appliedFor is required"));
    }
    if let Some(e) = body.get("encryptionConfiguration").filter(|v| !v.is_null()) {
        match e["encryptionType"].as_str() {
            Some("AES256") => t["encryptionConfiguration"] = json!({"encryptionType": "AES256"}),
            other => {
                return Err(ApiError::invalid_parameter(format!(
                    "encryptionType {} is not supported by skiff: there is no KMS; the registry's disk is AES256 in ECR's terms",
                    other.unwrap_or("(none)")
                )));
            }
        }
    }
    if let Some(tags) = body.get("resourceTags").filter(|v| !v.is_null()) {
        super::ecr_meta::parse_tags(Some(tags))?;
        t["resourceTags"] = tags.clone();
    }
    if let Some(p) = body.get("repositoryPolicy").and_then(Value::as_str) {
        super::ecr_meta::check_policy(p, "repository")?;
        t["repositoryPolicy"] = json!(p);
    }
    for field in [
        "description",
        "imageTagMutability",
        "imageTagMutabilityExclusionFilters",
        "lifecyclePolicy",
    ] {
        if let Some(v) = body.get(field).filter(|v| !v.is_null()) {
            t[field] = v.clone();
        }
    }
    t["updatedAt"] = json!(at);
    registry
        .put_template(&t, creating)
        .map_err(super::ecr::ecr_error)?;
    Ok(json!({ "registryId": account(), "repositoryCreationTemplate": t }))
}

fn describe(registry: &Registry, body: &Value) -> Result<Value, ApiError> {
    let mut all = registry.templates().map_err(super::ecr::ecr_error)?;
    if body.get("prefixes").is_some_and(|v| !v.is_null()) {
        let wanted = string_list(body, "prefixes")?;
        all.retain(|t| wanted.iter().any(|w| t["prefix"] == w.as_str()));
    }
    let mut v = listed_up_to(body, "repositoryCreationTemplates", all, 1000)?;
    v["registryId"] = json!(account());
    Ok(v)
}

/// Gives each repository the registry made from a template that
/// template's repository policy and tags (once: later changes are the
/// repository's own).
pub(crate) async fn apply(core: &Core, registry: &Registry) -> Result<(), ApiError> {
    // Most registries have no templates: then there is nothing to do, and
    // the state's lock is not taken.
    let any = super::ecr::admin(registry, |r| r.templates().map(|t| !t.is_empty())).await?;
    if !any {
        return Ok(());
    }
    // Listed under the state's lock: a DeleteRepository forgets a
    // repository's policy and tags under it too, so they are never written
    // back for a repository deleted meanwhile.
    let mut state = core.state.lock().await;
    let (repos, templates) =
        super::ecr::admin(registry, |r| Ok((r.repositories()?, r.templates()?))).await?;
    let mut meta = state.ecr.clone();
    for repo in repos {
        let Some(prefix) = repo.template else {
            continue;
        };
        if !meta.templated.insert(repo.name.clone()) {
            continue;
        }
        let Some(t) = templates.iter().find(|t| t["prefix"] == prefix.as_str()) else {
            continue;
        };
        if let Some(p) = t["repositoryPolicy"].as_str() {
            meta.policies
                .entry(repo.name.clone())
                .or_insert_with(|| p.to_string());
        }
        let tags = super::ecr_meta::parse_tags(Some(&t["resourceTags"]))?;
        if !tags.is_empty() {
            meta.tags.entry(repo.name.clone()).or_insert(tags);
        }
    }
    if meta != state.ecr {
        state
            .apply(core.store.as_ref(), vec![Write::Ecr(Box::new(meta))])
            .await?;
    }
    Ok(())
}
