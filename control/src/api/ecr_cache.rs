//! ECR pull-through cache rules: Create/Describe/Delete/Validate
//! PullThroughCacheRule, kept and enforced by the registry
//! (`skiff_registry::cache`): pulling `PREFIX/REPO` fetches `REPO` from
//! the rule's upstream registry once and serves the copy.

use crate::api::protocol::json::{listed_up_to, refuse_saying_why, required, string_list};
use crate::core::model::account;
use crate::error::ApiError;
use serde_json::{Value, json};
use skiff_registry::Registry;
use skiff_registry::cache::CacheRule;

/// ECR's name for an upstream, from its address (None: not one of the
/// upstreams ECR names).
fn upstream_kind(url: &str) -> Option<&'static str> {
    let host = url.split(':').next().unwrap_or(url);
    Some(match host {
        "registry-1.docker.io" => "docker-hub",
        "public.ecr.aws" => "ecr-public",
        "quay.io" => "quay",
        "registry.k8s.io" => "k8s",
        "ghcr.io" => "github-container-registry",
        "registry.gitlab.com" => "gitlab-container-registry",
        h if h.ends_with(".azurecr.io") => "azure-container-registry",
        h if h.contains(".dkr.ecr.") && h.ends_with(".amazonaws.com") => "ecr",
        _ => return None,
    })
}

fn view(rule: &CacheRule) -> Value {
    let mut v = json!({
        "ecrRepositoryPrefix": rule.prefix,
        "upstreamRegistryUrl": rule.upstream_url,
        "upstreamRepositoryPrefix": rule.upstream_prefix,
        "createdAt": rule.created_at,
        "updatedAt": rule.updated_at,
        "registryId": account(),
    });
    if let Some(k) = upstream_kind(&rule.upstream_url) {
        v["upstreamRegistry"] = json!(k);
    }
    v
}

/// The operations [`handle`] answers (SQLite calls: run it off the
/// API's async workers).
pub(crate) const OPERATIONS: &[&str] = &[
    "CreatePullThroughCacheRule",
    "DescribePullThroughCacheRules",
    "DeletePullThroughCacheRule",
];

/// Answers the pull-through cache operations but validation; None for any
/// other.
pub(crate) fn handle(
    registry: &Registry,
    op: &str,
    body: &Value,
) -> Option<Result<Value, ApiError>> {
    let answer = match op {
        "CreatePullThroughCacheRule" => create(registry, body),
        "DescribePullThroughCacheRules" => describe(registry, body),
        "DeletePullThroughCacheRule" => required(body, "ecrRepositoryPrefix").and_then(|p| {
            let rule = registry
                .delete_cache_rule(p)
                .map_err(super::ecr::ecr_error)?;
            Ok(view(&rule))
        }),
        _ => return None,
    };
    Some(answer)
}

/// ValidatePullThroughCacheRule: asks the upstream now.
pub(crate) async fn validate_rule(registry: &Registry, body: &Value) -> Result<Value, ApiError> {
    validate(registry, required(body, "ecrRepositoryPrefix")?).await
}

fn create(registry: &Registry, body: &Value) -> Result<Value, ApiError> {
    refuse_saying_why(
        body,
        &[
            (
                "credentialArn",
                "upstream credentials are Secrets Manager secrets, which skiff does not have: skiff pulls from upstreams anonymously",
            ),
            super::ecr::NO_CUSTOM_ROLE,
        ],
    )?;
    let prefix = required(body, "ecrRepositoryPrefix")?;
    let url = required(body, "upstreamRegistryUrl")?;
    if let Some(given) = body.get("upstreamRegistry").and_then(Value::as_str)
        && upstream_kind(url) != Some(given)
    {
        return Err(ApiError::invalid_parameter(format!(
            "upstreamRegistry {given} does not match upstreamRegistryUrl {url} ({}): leave upstreamRegistry out and skiff names it from the address",
            upstream_kind(url).unwrap_or("not one of the upstreams ECR names")
        )));
    }
    let upstream_prefix = body.get("upstreamRepositoryPrefix").and_then(Value::as_str);
    let rule = registry
        .create_cache_rule(prefix, url, upstream_prefix)
        .map_err(super::ecr::ecr_error)?;
    let mut v = view(&rule);
    if let Some(o) = v.as_object_mut() {
        o.remove("updatedAt");
    }
    Ok(v)
}

fn describe(registry: &Registry, body: &Value) -> Result<Value, ApiError> {
    let mut rules = registry.cache_rules().map_err(super::ecr::ecr_error)?;
    if body.get("ecrRepositoryPrefixes").is_some() {
        let wanted = string_list(body, "ecrRepositoryPrefixes")?;
        for w in &wanted {
            if !rules.iter().any(|r| &r.prefix == w) {
                return Err(super::ecr::ecr_error(
                    skiff_registry::AdminError::CacheRuleNotFound(w.clone()),
                ));
            }
        }
        rules.retain(|r| wanted.contains(&r.prefix));
    }
    let views: Vec<Value> = rules.iter().map(view).collect();
    listed_up_to(body, "pullThroughCacheRules", views, 1000)
}

async fn validate(registry: &Registry, prefix: &str) -> Result<Value, ApiError> {
    let (rule, failure) = registry
        .validate_cache_rule(prefix)
        .await
        .map_err(super::ecr::ecr_error)?;
    let mut v = view(&rule);
    if let Some(o) = v.as_object_mut() {
        o.remove("createdAt");
        o.remove("updatedAt");
        o.remove("upstreamRegistry");
    }
    v["isValid"] = json!(failure.is_none());
    if let Some(f) = failure {
        v["failure"] = json!(f);
    }
    Ok(v)
}
