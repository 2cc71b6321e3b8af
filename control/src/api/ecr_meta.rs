//! What ECR keeps about repositories and the registry beyond images:
//! tags, repository and registry policies (validated and kept; skiff has
//! no IAM identities yet for them to grant or deny anything to, which
//! DescribeRegistry and the catalog say), the registry's scanning
//! configuration (basic scan-on-push rules, applied to the repositories
//! they match, now and when made), and DescribeRegistry. Stored as one
//! document in the control plane's state.

use crate::api::protocol::json::required_nonempty as required;
use crate::core::Core;
use crate::core::ecr::EcrMeta;
use crate::core::model::account;
use crate::core::state::Write;
use crate::error::ApiError;
use serde_json::{Value, json};
use skiff_registry::AdminError;

/// ECR's `tags` ([{Key, Value}]).
pub(crate) fn parse_tags(v: Option<&Value>) -> Result<Vec<(String, String)>, ApiError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for t in v.and_then(Value::as_array).into_iter().flatten() {
        let key = t["Key"].as_str().ok_or_else(|| {
            ApiError::coded("InvalidTagParameterException", "Every tag needs a Key")
        })?;
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(ApiError::coded(
                "InvalidTagParameterException",
                format!("Tag key {key} uses the reserved prefix aws:"),
            ));
        }
        let value = t["Value"].as_str().unwrap_or_default().to_string();
        out.retain(|(k, _)| k != key);
        out.push((key.to_string(), value));
    }
    Ok(out)
}

/// Checks a policy document as ECR does before storing it.
pub(crate) fn check_policy(text: &str, what: &str) -> Result<(), ApiError> {
    let invalid = |why: &str| {
        ApiError::invalid_parameter(format!(
            "Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid {what} policy provided: {why}'"
        ))
    };
    let v: Value = serde_json::from_str(text).map_err(|e| invalid(&format!("not JSON ({e})")))?;
    let statements = match &v["Statement"] {
        Value::Array(a) if !a.is_empty() => a.clone(),
        Value::Object(_) => vec![v["Statement"].clone()],
        _ => return Err(invalid("it needs a Statement")),
    };
    for s in &statements {
        if !matches!(s["Effect"].as_str(), Some("Allow" | "Deny")) {
            return Err(invalid("each statement's Effect is Allow or Deny"));
        }
        if s.get("Principal").is_none() && s.get("NotPrincipal").is_none() {
            return Err(invalid("each statement names a Principal"));
        }
        let actions: Vec<&str> = match &s["Action"] {
            Value::String(a) => vec![a.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => return Err(invalid("each statement names its Action")),
        };
        if let Some(bad) = actions
            .iter()
            .find(|a| **a != "*" && !a.starts_with("ecr:"))
        {
            return Err(invalid(&format!("'{bad}' is not an ECR action")));
        }
    }
    Ok(())
}

/// The repository an ECR repository ARN names.
fn repository_of(arn: &str) -> Result<&str, ApiError> {
    arn.strip_prefix("arn:aws:ecr:")
        .and_then(|rest| rest.split_once(":repository/"))
        .map(|(_, name)| name)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid_parameter(format!(
                "Invalid parameter at 'resourceArn' failed to satisfy constraint: '{arn}' is not a repository ARN"
            ))
        })
}

fn not_found(e: AdminError) -> ApiError {
    ApiError::not_found("RepositoryNotFoundException", e.to_string())
}

/// The operations here.
const OPERATIONS: &[&str] = &[
    "TagResource",
    "UntagResource",
    "ListTagsForResource",
    "SetRepositoryPolicy",
    "GetRepositoryPolicy",
    "DeleteRepositoryPolicy",
    "PutRegistryPolicy",
    "GetRegistryPolicy",
    "DeleteRegistryPolicy",
    "DescribeRegistry",
    "GetRegistryScanningConfiguration",
    "PutRegistryScanningConfiguration",
    "BatchGetRepositoryScanningConfiguration",
    "GetAccountSetting",
    "PutAccountSetting",
];

/// ECR's account settings: (name, default, values skiff takes, why not
/// the others).
const ACCOUNT_SETTINGS: &[(&str, &str, &[&str], &str)] = &[
    (
        "BASIC_SCAN_TYPE_VERSION",
        "AWS_NATIVE",
        &["AWS_NATIVE"],
        "skiff's basic scan is its own validation of Wasm modules and components; there is no Clair",
    ),
    ("REGISTRY_POLICY_SCOPE", "V2", &["V1", "V2"], ""),
];

/// Handles the operations here; `None` for any other.
pub(crate) async fn handle(
    core: &Core,
    registry: &skiff_registry::Registry,
    op: &str,
    body: &Value,
    region: &str,
) -> Option<Result<Value, ApiError>> {
    if !OPERATIONS.contains(&op) {
        return None;
    }
    Some(run(core, registry, op, body, region).await)
}

async fn run(
    core: &Core,
    registry: &skiff_registry::Registry,
    op: &str,
    body: &Value,
    region: &str,
) -> Result<Value, ApiError> {
    let mut state = core.state.lock().await;
    let mut meta = state.ecr.clone();
    let repo_arn =
        |name: &str| crate::core::model::arn("ecr", region, &format!("repository/{name}"));
    let answer = match op {
        "TagResource" | "UntagResource" => {
            let name = repository_of(required(body, "resourceArn")?)?.to_string();
            registry.repository(&name).map_err(not_found)?;
            let tags = meta.tags.entry(name).or_default();
            if op == "TagResource" {
                for (k, v) in parse_tags(body.get("tags"))? {
                    tags.retain(|(tk, _)| *tk != k);
                    tags.push((k, v));
                }
            } else {
                let keys: Vec<&str> = body
                    .get("tagKeys")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                tags.retain(|(k, _)| !keys.contains(&k.as_str()));
            }
            if tags.len() > 50 {
                return Err(ApiError::coded(
                    "TooManyTagsException",
                    "A repository can have at most 50 tags.",
                ));
            }
            json!({})
        }
        "ListTagsForResource" => {
            let name = repository_of(required(body, "resourceArn")?)?;
            registry.repository(name).map_err(not_found)?;
            let tags: Vec<Value> = meta
                .tags
                .get(name)
                .into_iter()
                .flatten()
                .map(|(k, v)| json!({"Key": k, "Value": v}))
                .collect();
            return Ok(json!({ "tags": tags }));
        }
        "SetRepositoryPolicy" => {
            let name = required(body, "repositoryName")?.to_string();
            registry.repository(&name).map_err(not_found)?;
            let text = required(body, "policyText")?.to_string();
            check_policy(&text, "repository")?;
            meta.policies.insert(name.clone(), text.clone());
            json!({ "registryId": account(), "repositoryName": name, "policyText": text })
        }
        "GetRepositoryPolicy" | "DeleteRepositoryPolicy" => {
            let name = required(body, "repositoryName")?.to_string();
            registry.repository(&name).map_err(not_found)?;
            let text = if op == "GetRepositoryPolicy" {
                meta.policies.get(&name).cloned()
            } else {
                meta.policies.remove(&name)
            }
            .ok_or_else(|| {
                ApiError::not_found(
                    "RepositoryPolicyNotFoundException",
                    format!("Repository policy does not exist for the repository with name '{name}' in the registry with id '{}'", account()),
                )
            })?;
            let answer =
                json!({ "registryId": account(), "repositoryName": name, "policyText": text });
            if op == "GetRepositoryPolicy" {
                return Ok(answer);
            }
            answer
        }
        "PutRegistryPolicy" => {
            let text = required(body, "policyText")?.to_string();
            check_policy(&text, "registry")?;
            meta.registry_policy = Some(text.clone());
            json!({ "registryId": account(), "policyText": text })
        }
        "GetRegistryPolicy" | "DeleteRegistryPolicy" => {
            let text = if op == "GetRegistryPolicy" {
                meta.registry_policy.clone()
            } else {
                meta.registry_policy.take()
            }
            .ok_or_else(|| {
                ApiError::not_found(
                    "RegistryPolicyNotFoundException",
                    format!(
                        "Registry policy does not exist in the registry with id '{}'",
                        account()
                    ),
                )
            })?;
            let answer = json!({ "registryId": account(), "policyText": text });
            if op == "GetRegistryPolicy" {
                return Ok(answer);
            }
            answer
        }
        "GetAccountSetting" | "PutAccountSetting" => {
            let name = required(body, "name")?.to_string();
            let (_, default, takes, why) = ACCOUNT_SETTINGS
                .iter()
                .find(|(n, ..)| *n == name)
                .ok_or_else(|| {
                    ApiError::invalid_parameter(format!(
                        "{name} is not an account setting: BASIC_SCAN_TYPE_VERSION or REGISTRY_POLICY_SCOPE"
                    ))
                })?;
            if op == "GetAccountSetting" {
                let value = meta.account.get(&name).map_or(*default, String::as_str);
                return Ok(json!({ "name": name, "value": value }));
            }
            let value = required(body, "value")?.to_string();
            if !takes.contains(&value.as_str()) {
                return Err(ApiError::invalid_parameter(format!(
                    "{name} {value} is not supported by skiff{}{why}",
                    if why.is_empty() { "" } else { ": " }
                )));
            }
            meta.account.insert(name.clone(), value.clone());
            json!({ "name": name, "value": value })
        }
        "DescribeRegistry" => {
            return Ok(json!({
                "registryId": account(),
                "replicationConfiguration": super::ecr_replication::configuration(&meta.replication),
            }));
        }
        "GetRegistryScanningConfiguration" => {
            return Ok(json!({
                "registryId": account(),
                "scanningConfiguration": scanning_view(&meta),
            }));
        }
        "PutRegistryScanningConfiguration" => {
            if let Some(t) = body.get("scanType").and_then(Value::as_str)
                && t != "BASIC"
            {
                return Err(ApiError::invalid_parameter(format!(
                    "scanType {t} is not supported by skiff: ENHANCED scanning is Amazon Inspector's; skiff's BASIC scan validates Wasm modules and components"
                )));
            }
            let mut filters = Vec::new();
            for rule in body
                .get("rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match rule["scanFrequency"].as_str() {
                    Some("SCAN_ON_PUSH") => {}
                    Some(other) => {
                        return Err(ApiError::invalid_parameter(format!(
                            "scanFrequency {other} is not supported by skiff: BASIC scanning is SCAN_ON_PUSH (or a manual StartImageScan)"
                        )));
                    }
                    None => {
                        return Err(ApiError::invalid_parameter(
                            "each rule needs a scanFrequency",
                        ));
                    }
                }
                for f in rule["repositoryFilters"].as_array().into_iter().flatten() {
                    if f["filterType"] != "WILDCARD" {
                        return Err(ApiError::invalid_parameter(
                            "repositoryFilters' filterType is WILDCARD",
                        ));
                    }
                    filters.push(f["filter"].as_str().unwrap_or("*").to_string());
                }
            }
            meta.scan_on_push_filters = filters;
            apply_scanning(registry, &meta).map_err(not_found)?;
            json!({ "registryScanningConfiguration": scanning_view(&meta) })
        }
        "BatchGetRepositoryScanningConfiguration" => {
            let names: Vec<&str> = body
                .get("repositoryNames")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if names.is_empty() || names.len() > 25 {
                return Err(ApiError::invalid_parameter(
                    "repositoryNames must name 1 to 25 repositories",
                ));
            }
            let (mut found, mut failures) = (Vec::new(), Vec::new());
            for n in names {
                match registry.repository(n) {
                    Ok(r) => found.push(json!({
                        "repositoryArn": repo_arn(n),
                        "repositoryName": n,
                        "scanOnPush": r.settings.scan_on_push,
                        "scanFrequency": if r.settings.scan_on_push { "SCAN_ON_PUSH" } else { "MANUAL" },
                        "appliedScanFilters": meta.scan_on_push_filters.iter()
                            .filter(|f| skiff_registry::repos::wildcard_match(f, n))
                            .map(|f| json!({"filter": f, "filterType": "WILDCARD"}))
                            .collect::<Vec<_>>(),
                    })),
                    Err(_) => failures.push(json!({
                        "repositoryName": n, "failureCode": "REPOSITORY_NOT_FOUND",
                        "failureReason": "REPOSITORY_NOT_FOUND",
                    })),
                }
            }
            return Ok(json!({ "scanningConfigurations": found, "failures": failures }));
        }
        _ => return Err(ApiError::unknown_operation(op)),
    };
    state
        .apply(core.store.as_ref(), vec![Write::Ecr(Box::new(meta))])
        .await?;
    Ok(answer)
}

fn scanning_view(meta: &EcrMeta) -> Value {
    let rules: Vec<Value> = if meta.scan_on_push_filters.is_empty() {
        Vec::new()
    } else {
        vec![json!({
            "scanFrequency": "SCAN_ON_PUSH",
            "repositoryFilters": meta.scan_on_push_filters.iter()
                .map(|f| json!({"filter": f, "filterType": "WILDCARD"}))
                .collect::<Vec<_>>(),
        })]
    };
    json!({ "scanType": "BASIC", "rules": rules })
}

/// Turns scan-on-push on for every repository the registry's rules match.
pub(crate) fn apply_scanning(
    registry: &skiff_registry::Registry,
    meta: &EcrMeta,
) -> Result<(), AdminError> {
    for r in registry.repositories()? {
        let matched = meta
            .scan_on_push_filters
            .iter()
            .any(|f| skiff_registry::repos::wildcard_match(f, &r.name));
        if matched && !r.settings.scan_on_push {
            let mut s = r.settings.clone();
            s.scan_on_push = true;
            registry.set_settings(&r.name, &s)?;
        }
    }
    Ok(())
}

/// Forgets what was kept about a deleted repository.
pub(crate) async fn forget(core: &Core, name: &str) -> Result<(), ApiError> {
    let mut state = core.state.lock().await;
    let mut meta = state.ecr.clone();
    let had_tags = meta.tags.remove(name).is_some();
    let had_policy = meta.policies.remove(name).is_some();
    let had_template = meta.templated.remove(name);
    if !had_tags && !had_policy && !had_template {
        return Ok(());
    }
    state
        .apply(core.store.as_ref(), vec![Write::Ecr(Box::new(meta))])
        .await
}

/// Keeps a new repository's tags, and applies the registry's scanning
/// rules to it.
pub(crate) async fn created(
    core: &Core,
    registry: &skiff_registry::Registry,
    name: &str,
    tags: Vec<(String, String)>,
) -> Result<(), ApiError> {
    let mut state = core.state.lock().await;
    let mut meta = state.ecr.clone();
    apply_scanning(registry, &meta).map_err(not_found)?;
    if tags.is_empty() {
        return Ok(());
    }
    meta.tags.insert(name.to_string(), tags);
    state
        .apply(core.store.as_ref(), vec![Write::Ecr(Box::new(meta))])
        .await
}
