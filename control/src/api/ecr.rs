//! The ECR API (`AmazonEC2ContainerRegistry_V20150921.*`) on skiff's API
//! endpoint, backed by the registry `skiff serve` runs: repositories, tag
//! mutability, scanning, lifecycle policies, images and tokens — what
//! `aws ecr` and boto3's ECR client call.

use crate::api::Api;
use crate::api::protocol::json::{json_object, listed_up_to, page, required};
use crate::core::model::{account, arn};
use crate::error::ApiError;
use serde_json::{Value, json};
use skiff_registry::lifecycle::Expiry;
use skiff_registry::repos::{Image, Repository, RepositorySettings, TagMutability};
use skiff_registry::{AdminError, ImageDeletion, Registry};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The last lifecycle policy preview started per repository: its policy
/// text (the repository's own, or one being tried out).
pub(crate) type Previews = Arc<Mutex<HashMap<String, String>>>;

/// How long a GetAuthorizationToken token lasts (ECR's: 12 hours).
const TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

pub(crate) fn ecr_error(e: AdminError) -> ApiError {
    let message = e.to_string();
    let kind = match e {
        AdminError::RepositoryNotFound(_) => "RepositoryNotFoundException",
        AdminError::RepositoryAlreadyExists(_) => "RepositoryAlreadyExistsException",
        AdminError::RepositoryNotEmpty(_) => "RepositoryNotEmptyException",
        AdminError::InvalidParameter(_) => "InvalidParameterException",
        AdminError::ImageNotFound { .. } => "ImageNotFoundException",
        AdminError::LifecyclePolicyNotFound(_) => "LifecyclePolicyNotFoundException",
        AdminError::ScanNotFound { .. } => "ScanNotFoundException",
        AdminError::CacheRuleAlreadyExists(_) => "PullThroughCacheRuleAlreadyExistsException",
        AdminError::CacheRuleNotFound(_) => "PullThroughCacheRuleNotFoundException",
        AdminError::TemplateAlreadyExists(_) => "TemplateAlreadyExistsException",
        AdminError::TemplateNotFound(_) => "TemplateNotFoundException",
        AdminError::Internal(_) => return ApiError::server(message),
    };
    ApiError::not_found(kind, message)
}

/// `customRoleArn`, which ECR's cache rules and templates take: refused.
pub(crate) const NO_CUSTOM_ROLE: (&str, &str) = (
    "customRoleArn",
    "there is no IAM here for the registry to assume a role in",
);

/// Runs `f` (the registry's SQLite calls) off the API's async workers.
pub(crate) async fn off_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::server(format!("the ECR worker failed: {e}")))
}

/// A management call on `registry`, off the API's async workers, its
/// refusal in ECR's words.
pub(crate) async fn admin<T: Send + 'static>(
    registry: &Registry,
    f: impl FnOnce(&Registry) -> Result<T, AdminError> + Send + 'static,
) -> Result<T, ApiError> {
    let r = registry.clone();
    off_thread(move || f(&r)).await?.map_err(ecr_error)
}

/// Handles one ECR operation.
pub(crate) async fn handle(
    api: &Api,
    op: &str,
    body: &Value,
    region: &str,
) -> Result<Value, ApiError> {
    json_object(body)?;
    let Some(registry) = api.registry.get() else {
        return Err(ApiError::unknown_operation(&format!(
            "AmazonEC2ContainerRegistry_V20150921.{op} (this control plane serves no registry)"
        )));
    };
    if let Some(id) = body.get("registryId").and_then(Value::as_str)
        && id != account()
    {
        return Err(ApiError::invalid_parameter(format!(
            "registryId {id} is not this registry's ({})",
            account()
        )));
    }
    let ecr = Ecr {
        registry: registry.clone(),
        region: region.to_string(),
        address: api.core.config.default_registry.clone(),
        previews: Arc::clone(&api.ecr_previews),
    };
    if let Some(answer) = super::ecr_meta::handle(&api.core, registry, op, body, region).await {
        return answer;
    }
    if op == "ValidatePullThroughCacheRule" {
        return super::ecr_cache::validate_rule(registry, body).await;
    }
    if super::ecr_cache::OPERATIONS.contains(&op) || super::ecr_templates::OPERATIONS.contains(&op)
    {
        let (r, o, b) = (registry.clone(), op.to_string(), body.clone());
        let answer = off_thread(move || {
            super::ecr_cache::handle(&r, &o, &b)
                .or_else(|| super::ecr_templates::handle(&r, &o, &b))
        })
        .await?;
        if let Some(answer) = answer {
            return answer;
        }
    }
    if op == "PutReplicationConfiguration" {
        return super::ecr_replication::put(&api.core, body, region).await;
    }
    if op == "CreateRepository" {
        // Tags are kept by the control plane, the rest by the registry.
        let tags = super::ecr_meta::parse_tags(body.get("tags"))?;
        let mut plain = body.clone();
        if let Some(o) = plain.as_object_mut() {
            o.remove("tags");
        }
        let name = body
            .get("repositoryName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let ecr = Ecr {
            registry: registry.clone(),
            region: region.to_string(),
            address: api.core.config.default_registry.clone(),
            previews: Arc::clone(&api.ecr_previews),
        };
        let answer = off_thread(move || ecr.blocking("CreateRepository", &plain)).await??;
        super::ecr_meta::created(&api.core, registry, &name, tags).await?;
        return Ok(answer);
    }
    let images = super::ecr_images::Registry {
        addr: &ecr.address,
        admin: &ecr.registry,
    };
    if let Some(answer) = images.handle(op, body).await {
        if op != "DescribeImageReplicationStatus" {
            return answer;
        }
        let mut answer = answer?;
        let repo = answer["repositoryName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let digest = answer["imageId"]["imageDigest"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        answer["replicationStatuses"] = super::ecr_replication::statuses(&api.core, &repo, &digest)
            .await
            .into();
        return Ok(answer);
    }
    match op {
        "DeleteRepository" => {
            let answer = ecr.delete_repository(body).await?;
            if let Some(name) = body.get("repositoryName").and_then(Value::as_str) {
                super::ecr_meta::forget(&api.core, name).await?;
            }
            Ok(answer)
        }
        "StartImageScan" => ecr.start_scan(body).await,
        _ => {
            // The rest are SQLite calls: off the API's async workers.
            let (op, body) = (op.to_string(), body.clone());
            off_thread(move || ecr.blocking(&op, &body)).await?
        }
    }
}

struct Ecr {
    registry: Registry,
    region: String,
    /// host:port of the registry, for `repositoryUri` and `proxyEndpoint`.
    address: String,
    previews: Previews,
}

/// An `imageId`: a digest, a tag, or both.
struct ImageId {
    digest: Option<String>,
    tag: Option<String>,
}

impl ImageId {
    fn parse(v: &Value) -> Result<ImageId, ApiError> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
        let id = ImageId {
            digest: s("imageDigest"),
            tag: s("imageTag"),
        };
        if id.digest.is_none() && id.tag.is_none() {
            return Err(ApiError::invalid_parameter(
                "an imageId needs an imageDigest or an imageTag",
            ));
        }
        Ok(id)
    }

    /// The registry reference: the digest when there is one.
    fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or_default()
    }

    fn view(&self) -> Value {
        let mut v = json!({});
        if let Some(d) = &self.digest {
            v["imageDigest"] = json!(d);
        }
        if let Some(t) = &self.tag {
            v["imageTag"] = json!(t);
        }
        v
    }

    fn matches(&self, image: &Image) -> bool {
        self.digest.as_ref().is_none_or(|d| *d == image.digest)
            && self.tag.as_ref().is_none_or(|t| image.tags.contains(t))
    }
}

fn tag_status(body: &Value) -> Result<&str, ApiError> {
    match body.pointer("/filter/tagStatus").and_then(Value::as_str) {
        None => Ok("ANY"),
        Some(s @ ("TAGGED" | "UNTAGGED" | "ANY")) => Ok(s),
        Some(other) => Err(ApiError::invalid_parameter(format!(
            "tagStatus must be TAGGED, UNTAGGED or ANY, not {other:?}"
        ))),
    }
}

/// One page of `items` under `key`, ECR's way (maxResults up to 1000).
fn paged(body: &Value, key: &str, items: Vec<Value>) -> Result<Value, ApiError> {
    listed_up_to(body, key, items, 1000)
}

/// `imageTagMutability` and its exclusion filters from a request, onto
/// `settings`.
fn mutability(body: &Value, settings: &mut RepositorySettings) -> Result<(), ApiError> {
    if let Some(m) = body.get("imageTagMutability").and_then(Value::as_str) {
        settings.tag_mutability = TagMutability::parse(m).map_err(ApiError::invalid_parameter)?;
        settings.mutability_filters.clear();
    }
    if let Some(filters) = body
        .get("imageTagMutabilityExclusionFilters")
        .and_then(Value::as_array)
    {
        let mut out = Vec::new();
        for f in filters {
            let kind = f.get("filterType").and_then(Value::as_str).unwrap_or("");
            if kind != "WILDCARD" {
                return Err(ApiError::invalid_parameter(format!(
                    "filterType must be WILDCARD, not {kind:?}"
                )));
            }
            out.push(required(f, "filter")?.to_string());
        }
        settings.mutability_filters = out;
    }
    Ok(())
}

impl Ecr {
    fn blocking(&self, op: &str, body: &Value) -> Result<Value, ApiError> {
        match op {
            "CreateRepository" => self.create_repository(body),
            "DescribeRepositories" => self.describe_repositories(body),
            "PutImageTagMutability" => self.put_tag_mutability(body),
            "PutImageScanningConfiguration" => self.put_scanning(body),
            "DescribeImages" => self.describe_images(body),
            "ListImages" => self.list_images(body),
            "BatchDeleteImage" => self.batch_delete(body),
            "PutLifecyclePolicy" => self.put_lifecycle_policy(body),
            "GetLifecyclePolicy" => self.get_lifecycle_policy(body),
            "DeleteLifecyclePolicy" => self.delete_lifecycle_policy(body),
            "StartLifecyclePolicyPreview" => self.start_preview(body),
            "GetLifecyclePolicyPreview" => self.get_preview(body),
            "DescribeImageScanFindings" => self.scan_findings(body),
            "GetAuthorizationToken" => self.authorization_token(),
            other => Err(ApiError::unknown_operation(&format!(
                "AmazonEC2ContainerRegistry_V20150921.{other}"
            ))),
        }
    }

    fn repository_view(&self, r: &Repository) -> Value {
        let mut v = json!({
            "repositoryArn": arn("ecr", &self.region, &format!("repository/{}", r.name)),
            "registryId": account(),
            "repositoryName": r.name,
            "repositoryUri": format!("{}/{}", self.address, r.name),
            "createdAt": r.created_at,
            "imageTagMutability": r.settings.tag_mutability.as_str(),
            "imageScanningConfiguration": {"scanOnPush": r.settings.scan_on_push},
            "encryptionConfiguration": {"encryptionType": "AES256"},
        });
        if !r.settings.mutability_filters.is_empty() {
            v["imageTagMutabilityExclusionFilters"] = r
                .settings
                .mutability_filters
                .iter()
                .map(|f| json!({"filterType": "WILDCARD", "filter": f}))
                .collect();
        }
        v
    }

    fn create_repository(&self, body: &Value) -> Result<Value, ApiError> {
        let name = required(body, "repositoryName")?;
        if let Some(t) = body
            .pointer("/encryptionConfiguration/encryptionType")
            .and_then(Value::as_str)
            && t != "AES256"
        {
            return Err(ApiError::invalid_parameter(format!(
                "encryptionType {t} is not supported by skiff (there is no KMS): use AES256"
            )));
        }
        let mut settings = RepositorySettings::default();
        mutability(body, &mut settings)?;
        if let Some(scan) = body
            .pointer("/imageScanningConfiguration/scanOnPush")
            .and_then(Value::as_bool)
        {
            settings.scan_on_push = scan;
        }
        let r = self
            .registry
            .create_repository(name, &settings)
            .map_err(ecr_error)?;
        Ok(json!({ "repository": self.repository_view(&r) }))
    }

    fn describe_repositories(&self, body: &Value) -> Result<Value, ApiError> {
        let repos = match body.get("repositoryNames").and_then(Value::as_array) {
            Some(names) if !names.is_empty() => names
                .iter()
                .map(|n| {
                    let n = n.as_str().ok_or_else(|| {
                        ApiError::serialization("repositoryNames must be strings")
                    })?;
                    self.registry.repository(n).map_err(ecr_error)
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => self.registry.repositories().map_err(ecr_error)?,
        };
        let views = repos.iter().map(|r| self.repository_view(r)).collect();
        paged(body, "repositories", views)
    }

    async fn delete_repository(&self, body: &Value) -> Result<Value, ApiError> {
        let name = required(body, "repositoryName")?;
        let force = body.get("force").and_then(Value::as_bool).unwrap_or(false);
        let r = self
            .registry
            .delete_repository(name, force)
            .await
            .map_err(ecr_error)?;
        Ok(json!({ "repository": self.repository_view(&r) }))
    }

    fn put_tag_mutability(&self, body: &Value) -> Result<Value, ApiError> {
        let name = required(body, "repositoryName")?;
        required(body, "imageTagMutability")?;
        let mut settings = self.registry.repository(name).map_err(ecr_error)?.settings;
        mutability(body, &mut settings)?;
        let r = self
            .registry
            .set_settings(name, &settings)
            .map_err(ecr_error)?;
        let v = self.repository_view(&r);
        let mut out = json!({
            "registryId": account(),
            "repositoryName": r.name,
            "imageTagMutability": v["imageTagMutability"],
        });
        if !v["imageTagMutabilityExclusionFilters"].is_null() {
            out["imageTagMutabilityExclusionFilters"] =
                v["imageTagMutabilityExclusionFilters"].clone();
        }
        Ok(out)
    }

    fn put_scanning(&self, body: &Value) -> Result<Value, ApiError> {
        let name = required(body, "repositoryName")?;
        let scan = body
            .pointer("/imageScanningConfiguration/scanOnPush")
            .and_then(Value::as_bool)
            .ok_or_else(|| {
                ApiError::invalid_parameter("imageScanningConfiguration.scanOnPush is required")
            })?;
        let mut settings = self.registry.repository(name).map_err(ecr_error)?.settings;
        settings.scan_on_push = scan;
        self.registry
            .set_settings(name, &settings)
            .map_err(ecr_error)?;
        Ok(json!({
            "registryId": account(),
            "repositoryName": name,
            "imageScanningConfiguration": {"scanOnPush": scan},
        }))
    }

    fn image_detail(&self, name: &str, i: &Image) -> Value {
        let mut v = json!({
            "registryId": account(),
            "repositoryName": name,
            "imageDigest": i.digest,
            "imageSizeInBytes": i.size,
            "imagePushedAt": i.pushed_at,
            "imageManifestMediaType": i.media_type,
        });
        if !i.tags.is_empty() {
            v["imageTags"] = json!(i.tags);
        }
        if let Some(a) = &i.artifact_type {
            v["artifactMediaType"] = json!(a);
        }
        if let Ok(report) = self.registry.scan_findings(name, &i.digest) {
            v["imageScanStatus"] = json!({
                "status": report.image_scan_status.status.as_str(),
                "description": report.image_scan_status.description,
            });
            if let Some(f) = &report.image_scan_findings {
                v["imageScanFindingsSummary"] = json!({
                    "imageScanCompletedAt": f.image_scan_completed_at,
                    "findingSeverityCounts": f.finding_severity_counts,
                });
            }
        }
        v
    }

    fn describe_images(&self, body: &Value) -> Result<Value, ApiError> {
        let name = required(body, "repositoryName")?;
        let images = self.registry.images(name).map_err(ecr_error)?;
        let status = tag_status(body)?;
        let chosen: Vec<&Image> = match body.get("imageIds").and_then(Value::as_array) {
            Some(ids) if !ids.is_empty() => {
                let mut out = Vec::new();
                for id in ids {
                    let id = ImageId::parse(id)?;
                    let found = images.iter().find(|i| id.matches(i)).ok_or_else(|| {
                        ApiError::not_found(
                            "ImageNotFoundException",
                            format!(
                                "The image with imageId {} does not exist within the repository with name '{name}' in the registry with id '{}'",
                                id.view(),
                                account()
                            ),
                        )
                    })?;
                    out.push(found);
                }
                out
            }
            _ => images
                .iter()
                .filter(|i| match status {
                    "TAGGED" => !i.tags.is_empty(),
                    "UNTAGGED" => i.tags.is_empty(),
                    _ => true,
                })
                .collect(),
        };
        // A page first, then the details (a scan lookup each) of that page.
        let (chosen, next) = page(
            chosen,
            body.get("nextToken").and_then(Value::as_str),
            body.get("maxResults").and_then(Value::as_i64),
            1000,
        )?;
        let details: Vec<Value> = chosen.iter().map(|i| self.image_detail(name, i)).collect();
        let mut out = json!({ "imageDetails": details });
        if let Some(n) = next {
            out["nextToken"] = json!(n);
        }
        Ok(out)
    }

    fn list_images(&self, body: &Value) -> Result<Value, ApiError> {
        let name = required(body, "repositoryName")?;
        let status = tag_status(body)?;
        let mut ids = Vec::new();
        for i in self.registry.images(name).map_err(ecr_error)? {
            if i.tags.is_empty() {
                if status != "TAGGED" {
                    ids.push(json!({"imageDigest": i.digest}));
                }
            } else if status != "UNTAGGED" {
                for t in &i.tags {
                    ids.push(json!({"imageDigest": i.digest, "imageTag": t}));
                }
            }
        }
        paged(body, "imageIds", ids)
    }

    fn batch_delete(&self, body: &Value) -> Result<Value, ApiError> {
        let name = required(body, "repositoryName")?;
        let ids = body
            .get("imageIds")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty() && a.len() <= 100)
            .ok_or_else(|| ApiError::invalid_parameter("imageIds must name 1 to 100 images"))?;
        let images = self.registry.images(name).map_err(ecr_error)?;
        let mut deleted = Vec::new();
        let mut failures = Vec::new();
        // Every entry is judged on its own: one bad entry is a failure
        // entry, never an error after others were deleted.
        for raw in ids {
            let failure = |code: &str, reason: &str| json!({"imageId": raw, "failureCode": code, "failureReason": reason});
            let Ok(id) = ImageId::parse(raw) else {
                failures.push(failure(
                    "MissingDigestAndTag",
                    "Invalid request parameters: both tag and digest cannot be null",
                ));
                continue;
            };
            if let Some(d) = &id.digest
                && d.parse::<skiff_registry::Digest>().is_err()
            {
                failures.push(failure(
                    "InvalidImageDigest",
                    &format!("Invalid image digest {d}"),
                ));
                continue;
            }
            let Some(image) = images.iter().find(|i| id.matches(i)) else {
                let digest_exists = id
                    .digest
                    .as_ref()
                    .is_some_and(|d| images.iter().any(|i| &i.digest == d));
                if id.tag.is_some() && digest_exists {
                    failures.push(failure(
                        "ImageTagDoesNotMatchDigest",
                        "Invalid request parameters: image tag does not match digest",
                    ));
                } else {
                    failures.push(failure("ImageNotFound", "Requested image not found"));
                }
                continue;
            };
            // A tag alone deletes that tag (and the image, if it was the
            // last); a digest deletes the image and all its tags.
            let reference = match (&id.tag, &id.digest) {
                (Some(t), None) => t.clone(),
                _ => image.digest.clone(),
            };
            match self
                .registry
                .delete_image(name, &reference)
                .map_err(ecr_error)?
            {
                ImageDeletion::Deleted if reference.contains(':') && !image.tags.is_empty() => {
                    for t in &image.tags {
                        deleted.push(json!({"imageDigest": image.digest, "imageTag": t}));
                    }
                }
                ImageDeletion::Deleted => {
                    let mut v = json!({"imageDigest": image.digest});
                    if let Some(t) = &id.tag {
                        v["imageTag"] = json!(t);
                    }
                    deleted.push(v);
                }
                ImageDeletion::NotFound => {
                    failures.push(failure("ImageNotFound", "Requested image not found"));
                }
                ImageDeletion::ReferencedByIndex => failures.push(failure(
                    "ImageReferencedByManifestList",
                    "Requested image is referenced by an image index",
                )),
            }
        }
        Ok(json!({ "imageIds": deleted, "failures": failures }))
    }

    fn put_lifecycle_policy(&self, body: &Value) -> Result<Value, ApiError> {
        let name = required(body, "repositoryName")?;
        let text = required(body, "lifecyclePolicyText")?;
        self.registry
            .put_lifecycle_policy(name, text)
            .map_err(ecr_error)?;
        Ok(json!({
            "registryId": account(), "repositoryName": name, "lifecyclePolicyText": text,
        }))
    }

    fn get_lifecycle_policy(&self, body: &Value) -> Result<Value, ApiError> {
        let name = required(body, "repositoryName")?;
        let text = self.registry.lifecycle_policy(name).map_err(ecr_error)?;
        Ok(json!({
            "registryId": account(), "repositoryName": name, "lifecyclePolicyText": text,
        }))
    }

    fn delete_lifecycle_policy(&self, body: &Value) -> Result<Value, ApiError> {
        let name = required(body, "repositoryName")?;
        let text = self
            .registry
            .delete_lifecycle_policy(name)
            .map_err(ecr_error)?;
        Ok(json!({
            "registryId": account(), "repositoryName": name, "lifecyclePolicyText": text,
        }))
    }

    /// StartLifecyclePolicyPreview: of the policy text given (tried out
    /// before it is put) or the repository's own. Previews are computed
    /// when asked for (they are quick), so this records which policy, and
    /// checks it.
    fn start_preview(&self, body: &Value) -> Result<Value, ApiError> {
        let name = required(body, "repositoryName")?;
        let text = match body.get("lifecyclePolicyText").and_then(Value::as_str) {
            Some(t) => {
                self.registry
                    .lifecycle_preview_of(name, t)
                    .map_err(ecr_error)?;
                t.to_string()
            }
            None => self.registry.lifecycle_policy(name).map_err(ecr_error)?,
        };
        if let Ok(mut p) = self.previews.lock() {
            p.insert(name.to_string(), text.clone());
        }
        Ok(json!({
            "registryId": account(),
            "repositoryName": name,
            "lifecyclePolicyText": text,
            "status": "IN_PROGRESS",
        }))
    }

    /// GetLifecyclePolicyPreview: what the previewed policy would expire
    /// now (nothing is expired), filtered and paged as asked.
    fn get_preview(&self, body: &Value) -> Result<Value, ApiError> {
        let name = required(body, "repositoryName")?;
        self.registry.repository(name).map_err(ecr_error)?;
        let started = self.previews.lock().ok().and_then(|p| p.get(name).cloned());
        let Some(text) = started else {
            return Err(ApiError::not_found(
                "LifecyclePolicyPreviewNotFoundException",
                format!(
                    "There is no lifecycle policy preview for the repository {name}: start one with StartLifecyclePolicyPreview"
                ),
            ));
        };
        let expiries: Vec<Expiry> = self
            .registry
            .lifecycle_preview_of(name, &text)
            .map_err(ecr_error)?;
        let status = tag_status(body)?;
        let ids = match body.get("imageIds").and_then(Value::as_array) {
            Some(ids) => ids
                .iter()
                .map(ImageId::parse)
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let chosen: Vec<Value> = expiries
            .iter()
            .filter(|e| match status {
                "TAGGED" => !e.tags.is_empty(),
                "UNTAGGED" => e.tags.is_empty(),
                _ => true,
            })
            .filter(|e| {
                ids.is_empty()
                    || ids.iter().any(|id| {
                        id.digest.as_ref().is_none_or(|d| *d == e.digest)
                            && id.tag.as_ref().is_none_or(|t| e.tags.contains(t))
                    })
            })
            .map(|e| {
                json!({
                    "imageTags": e.tags,
                    "imageDigest": e.digest,
                    "imagePushedAt": e.pushed_at,
                    "action": {"type": "EXPIRE"},
                    "appliedRulePriority": e.rule_priority,
                })
            })
            .collect();
        let total = chosen.len();
        let mut out = paged(body, "previewResults", chosen)?;
        out["registryId"] = json!(account());
        out["repositoryName"] = json!(name);
        out["lifecyclePolicyText"] = json!(text);
        out["status"] = json!("COMPLETE");
        out["summary"] = json!({"expiringImageTotalCount": total});
        Ok(out)
    }

    async fn start_scan(&self, body: &Value) -> Result<Value, ApiError> {
        let name = required(body, "repositoryName")?;
        let id = ImageId::parse(body.get("imageId").unwrap_or(&Value::Null))?;
        let report = self
            .registry
            .start_scan(name, id.reference())
            .await
            .map_err(ecr_error)?;
        let mut image = id.view();
        image["imageDigest"] = json!(report.image_digest);
        Ok(json!({
            "registryId": account(),
            "repositoryName": name,
            "imageId": image,
            "imageScanStatus": {
                "status": report.image_scan_status.status.as_str(),
                "description": report.image_scan_status.description,
            },
        }))
    }

    fn scan_findings(&self, body: &Value) -> Result<Value, ApiError> {
        let name = required(body, "repositoryName")?;
        let id = ImageId::parse(body.get("imageId").unwrap_or(&Value::Null))?;
        let report = self
            .registry
            .scan_findings(name, id.reference())
            .map_err(ecr_error)?;
        let mut image = id.view();
        image["imageDigest"] = json!(report.image_digest);
        let mut out = json!({
            "registryId": account(),
            "repositoryName": name,
            "imageId": image,
            "imageScanStatus": {
                "status": report.image_scan_status.status.as_str(),
                "description": report.image_scan_status.description,
            },
        });
        if let Some(f) = &report.image_scan_findings {
            out["imageScanFindings"] = json!({
                "imageScanCompletedAt": f.image_scan_completed_at,
                "findingSeverityCounts": f.finding_severity_counts,
                "findings": f.findings.iter().map(|x| json!({
                    "name": x.name,
                    "description": x.description,
                    "severity": x.severity.as_str(),
                    "attributes": x.attributes,
                })).collect::<Vec<_>>(),
            });
        }
        Ok(out)
    }

    fn authorization_token(&self) -> Result<Value, ApiError> {
        let token = self.registry.issue_token(TOKEN_TTL).map_err(ecr_error)?;
        Ok(json!({
            "authorizationData": [{
                "authorizationToken": token.authorization_token(),
                "expiresAt": token.expires_at,
                "proxyEndpoint": format!("http://{}", self.address),
            }],
        }))
    }
}
