//! ECR's image and layer API — BatchGetImage, PutImage,
//! BatchCheckLayerAvailability, InitiateLayerUpload, UploadLayerPart,
//! CompleteLayerUpload, GetDownloadUrlForLayer — answered by calling the
//! registry `skiff serve` runs over its own OCI distribution API on
//! loopback, so every rule a `docker push` meets (manifest validation,
//! referenced blobs, tag immutability, repository creation) holds for
//! these calls too, with no second implementation of them. With the
//! registry's authentication on, the calls carry a short-lived token the
//! control plane issues itself.

use crate::api::protocol::json::required_nonempty as required;
use crate::error::ApiError;
use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

/// The manifest types ECR serves, asked for when a request names none.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// The part size InitiateLayerUpload suggests (ECR's is 10 MiB-ish).
const PART_SIZE: u64 = 10 * 1024 * 1024;

/// The registry, as a client of its HTTP API.
pub(crate) struct Registry<'a> {
    pub addr: &'a str,
    pub admin: &'a skiff_registry::Registry,
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

/// A token the control plane issued itself, reused until near its end.
static TOKEN: Mutex<Option<(String, i64)>> = Mutex::new(None);

impl Registry<'_> {
    fn socket(&self) -> Result<SocketAddr, ApiError> {
        let mut addr: SocketAddr = self.addr.parse().map_err(|_| {
            ApiError::server(format!("the registry address {} is not IP:PORT", self.addr))
        })?;
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        Ok(addr)
    }

    fn authorization(&self) -> Result<String, ApiError> {
        let now = crate::core::model::now() as i64;
        let mut cached = TOKEN
            .lock()
            .map_err(|_| ApiError::server("the registry token cache is poisoned"))?;
        if let Some((t, until)) = cached.as_ref()
            && *until > now + 30
        {
            return Ok(t.clone());
        }
        let issued = self
            .admin
            .issue_token(Duration::from_secs(600))
            .map_err(|e| ApiError::server(format!("cannot issue a registry token: {e}")))?;
        let header = format!("Basic {}", issued.authorization_token());
        *cached = Some((header.clone(), issued.expires_at));
        Ok(header)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Answer, ApiError> {
        let addr = self.socket()?;
        let unreachable =
            |e: String| ApiError::server(format!("the registry at {addr} did not answer: {e}"));
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string())
            .header("authorization", self.authorization()?);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ApiError::server(format!("cannot build a registry request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// An `imageId`'s tag and digest are ones a registry can hold: refused in
/// ECR's words, naming the member, before any registry request is built.
fn check_image_id(tag: Option<&str>, digest: Option<&str>) -> Result<(), ApiError> {
    if let Some(t) = tag
        && !skiff_registry::names::valid_tag(t)
    {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid parameter at 'imageTag' failed to satisfy constraint: '{t:?} is not a tag: up to 128 letters, digits, _ . and -, not starting with . or -'"
        )));
    }
    if let Some(d) = digest
        && d.parse::<skiff_registry::Digest>().is_err()
    {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid parameter at 'imageDigest' failed to satisfy constraint: '{d:?} is not a digest (sha256:64 hex digits)'"
        )));
    }
    Ok(())
}

/// The registry's error code and message in an answer.
fn registry_error(a: &Answer) -> (String, String) {
    let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
    let e = &v["errors"][0];
    (
        e["code"].as_str().unwrap_or("UNKNOWN").to_string(),
        e["message"].as_str().unwrap_or("").to_string(),
    )
}

fn repository_not_found(name: &str) -> ApiError {
    ApiError::not_found(
        "RepositoryNotFoundException",
        format!(
            "The repository with name '{name}' does not exist in the registry with id '{}'",
            crate::core::model::account()
        ),
    )
}

fn strings(body: &Value, name: &str) -> Vec<String> {
    body.get(name)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

impl Registry<'_> {
    /// Handles the operations here; `None` for any other.
    pub(crate) async fn handle(&self, op: &str, body: &Value) -> Option<Result<Value, ApiError>> {
        Some(match op {
            "BatchGetImage" => self.batch_get_image(body).await,
            "PutImage" => self.put_image(body).await,
            "BatchCheckLayerAvailability" => self.check_layers(body).await,
            "InitiateLayerUpload" => self.initiate_upload(body).await,
            "UploadLayerPart" => self.upload_part(body).await,
            "CompleteLayerUpload" => self.complete_upload(body).await,
            "GetDownloadUrlForLayer" => self.download_url(body).await,
            "ListImageReferrers" => self.referrers(body).await,
            "DescribeImageReplicationStatus" => self.replication_status(body).await,
            _ => return None,
        })
    }

    fn repository<'b>(&self, body: &'b Value) -> Result<&'b str, ApiError> {
        let name = required(body, "repositoryName")?;
        self.admin
            .repository(name)
            .map_err(|_| repository_not_found(name))?;
        Ok(name)
    }

    async fn batch_get_image(&self, body: &Value) -> Result<Value, ApiError> {
        let name = self.repository(body)?;
        let ids = body
            .get("imageIds")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty() && a.len() <= 100)
            .ok_or_else(|| ApiError::invalid_parameter("imageIds must name 1 to 100 images"))?;
        let accept = match strings(body, "acceptedMediaTypes") {
            t if t.is_empty() => MANIFEST_TYPES.to_string(),
            t => t.join(", "),
        };
        let (mut images, mut failures) = (Vec::new(), Vec::new());
        for id in ids {
            let tag = id.get("imageTag").and_then(Value::as_str);
            let digest = id.get("imageDigest").and_then(Value::as_str);
            let Some(reference) = digest.or(tag) else {
                failures.push(json!({"imageId": id, "failureCode": "MissingDigestAndTag",
                    "failureReason": "Requested image has no digest and no tag"}));
                continue;
            };
            if let Err(e) = check_image_id(tag, digest) {
                let code = if digest.is_some_and(|d| d.parse::<skiff_registry::Digest>().is_err()) {
                    "InvalidImageDigest"
                } else {
                    "InvalidImageTag"
                };
                failures
                    .push(json!({"imageId": id, "failureCode": code, "failureReason": e.message}));
                continue;
            }
            let a = self
                .call(
                    Method::GET,
                    &format!("/v2/{name}/manifests/{reference}"),
                    &[("accept", &accept)],
                    Vec::new(),
                )
                .await?;
            if !a.status.is_success() {
                let (code, _) = registry_error(&a);
                let (failure, reason) =
                    if code == "MANIFEST_UNKNOWN" || a.status == StatusCode::NOT_FOUND {
                        ("ImageNotFound", "Requested image not found")
                    } else {
                        (
                            "UnsupportedImageType",
                            "The image's manifest type is not among acceptedMediaTypes",
                        )
                    };
                failures
                    .push(json!({"imageId": id, "failureCode": failure, "failureReason": reason}));
                continue;
            }
            let found_digest = a
                .headers
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            if let (Some(d), Some(t)) = (digest, tag) {
                // Both given: the tag must point at the digest.
                let by_tag = self
                    .call(
                        Method::HEAD,
                        &format!("/v2/{name}/manifests/{t}"),
                        &[("accept", &accept)],
                        Vec::new(),
                    )
                    .await?;
                let tagged = by_tag
                    .headers
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok());
                if tagged != Some(d) {
                    failures.push(
                        json!({"imageId": id, "failureCode": "ImageTagDoesNotMatchDigest",
                        "failureReason": "Invalid tag for the requested digest"}),
                    );
                    continue;
                }
            }
            let media_type = a
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let mut image_id = json!({ "imageDigest": found_digest });
            if let Some(t) = tag {
                image_id["imageTag"] = json!(t);
            }
            images.push(json!({
                "registryId": crate::core::model::account(),
                "repositoryName": name,
                "imageId": image_id,
                "imageManifest": String::from_utf8_lossy(&a.body),
                "imageManifestMediaType": media_type,
            }));
        }
        Ok(json!({ "images": images, "failures": failures }))
    }

    async fn put_image(&self, body: &Value) -> Result<Value, ApiError> {
        let name = self.repository(body)?;
        let manifest = required(body, "imageManifest")?;
        let parsed: Value = serde_json::from_str(manifest).map_err(|e| {
            ApiError::invalid_parameter(format!(
                "Invalid parameter at 'imageManifest': not JSON ({e})"
            ))
        })?;
        let media_type = body
            .get("imageManifestMediaType")
            .and_then(Value::as_str)
            .or_else(|| parsed["mediaType"].as_str())
            .unwrap_or("application/vnd.oci.image.manifest.v1+json")
            .to_string();
        let tag = body.get("imageTag").and_then(Value::as_str);
        check_image_id(tag, body.get("imageDigest").and_then(Value::as_str))?;
        let digest = format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(manifest.as_bytes()))
        );
        if let Some(given) = body.get("imageDigest").and_then(Value::as_str)
            && given != digest
        {
            return Err(ApiError::not_found(
                "ImageDigestDoesNotMatchException",
                format!(
                    "The specified image digest {given} does not match the digest of the manifest, {digest}."
                ),
            ));
        }
        if let Some(t) = tag {
            let current = self
                .call(
                    Method::HEAD,
                    &format!("/v2/{name}/manifests/{t}"),
                    &[("accept", MANIFEST_TYPES)],
                    Vec::new(),
                )
                .await?;
            if current.status.is_success()
                && current
                    .headers
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    == Some(&digest)
            {
                return Err(ApiError::not_found(
                    "ImageAlreadyExistsException",
                    format!(
                        "Image with digest '{digest}' and tag '{t}' already exists in the repository with name '{name}' in registry with id '{}'",
                        crate::core::model::account()
                    ),
                ));
            }
        }
        let reference = tag.unwrap_or(&digest);
        let a = self
            .call(
                Method::PUT,
                &format!("/v2/{name}/manifests/{reference}"),
                &[("content-type", &media_type)],
                manifest.as_bytes().to_vec(),
            )
            .await?;
        if !a.status.is_success() {
            let (code, message) = registry_error(&a);
            return Err(match code.as_str() {
                "MANIFEST_BLOB_UNKNOWN" | "BLOB_UNKNOWN" => ApiError::not_found(
                    "LayersNotFoundException",
                    format!(
                        "Layers referenced by the manifest are not in the repository: {message}"
                    ),
                ),
                "TAG_INVALID"
                    if message.contains("immutable") || message.contains("already exists") =>
                {
                    ApiError::not_found("ImageTagAlreadyExistsException", message)
                }
                "DENIED" | "UNAUTHORIZED" => {
                    ApiError::not_found("ImageTagAlreadyExistsException", message)
                }
                _ => ApiError::invalid_parameter(format!(
                    "Invalid parameter at 'imageManifest': {message}"
                )),
            });
        }
        let mut image_id = json!({ "imageDigest": digest });
        if let Some(t) = tag {
            image_id["imageTag"] = json!(t);
        }
        Ok(json!({ "image": {
            "registryId": crate::core::model::account(),
            "repositoryName": name,
            "imageId": image_id,
            "imageManifest": manifest,
            "imageManifestMediaType": media_type,
        }}))
    }

    async fn check_layers(&self, body: &Value) -> Result<Value, ApiError> {
        let name = self.repository(body)?;
        let digests = strings(body, "layerDigests");
        if digests.is_empty() || digests.len() > 100 {
            return Err(ApiError::invalid_parameter(
                "layerDigests must name 1 to 100 layers",
            ));
        }
        let (mut layers, mut failures) = (Vec::new(), Vec::new());
        for d in digests {
            if !d.starts_with("sha256:") || d.len() != 71 {
                failures.push(
                    json!({"layerDigest": d, "failureCode": "InvalidLayerDigest",
                    "failureReason": "Invalid layer digest"}),
                );
                continue;
            }
            let a = self
                .call(
                    Method::HEAD,
                    &format!("/v2/{name}/blobs/{d}"),
                    &[],
                    Vec::new(),
                )
                .await?;
            if a.status.is_success() {
                let size: u64 = a
                    .headers
                    .get("content-length")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(0);
                layers.push(
                    json!({"layerDigest": d, "layerAvailability": "AVAILABLE", "layerSize": size}),
                );
            } else {
                failures.push(
                    json!({"layerDigest": d, "failureCode": "MissingLayerDigest",
                    "failureReason": "The layer is not in the repository"}),
                );
            }
        }
        Ok(json!({ "layers": layers, "failures": failures }))
    }

    async fn initiate_upload(&self, body: &Value) -> Result<Value, ApiError> {
        let name = self.repository(body)?;
        let a = self
            .call(
                Method::POST,
                &format!("/v2/{name}/blobs/uploads/"),
                &[],
                Vec::new(),
            )
            .await?;
        if a.status != StatusCode::ACCEPTED {
            let (_, message) = registry_error(&a);
            return Err(ApiError::invalid_parameter(format!(
                "the upload could not start: {message}"
            )));
        }
        let id = a
            .headers
            .get("docker-upload-uuid")
            .and_then(|v| v.to_str().ok())
            .map(String::from)
            .or_else(|| {
                let location = a.headers.get("location")?.to_str().ok()?;
                Some(location.split('?').next()?.rsplit('/').next()?.to_string())
            })
            .ok_or_else(|| ApiError::server("the registry gave the upload no id"))?;
        Ok(json!({ "uploadId": id, "partSize": PART_SIZE }))
    }

    async fn upload_part(&self, body: &Value) -> Result<Value, ApiError> {
        let name = self.repository(body)?;
        let id = required(body, "uploadId")?;
        let first = body.get("partFirstByte").and_then(Value::as_u64);
        let last = body.get("partLastByte").and_then(Value::as_u64);
        let (Some(first), Some(last)) = (first, last) else {
            return Err(ApiError::invalid_parameter(
                "partFirstByte and partLastByte are required",
            ));
        };
        let blob = base64::engine::general_purpose::STANDARD
            .decode(required(body, "layerPartBlob")?)
            .map_err(|e| {
                ApiError::invalid_parameter(format!("layerPartBlob is not base64: {e}"))
            })?;
        if last < first || last - first + 1 != blob.len() as u64 {
            return Err(ApiError::not_found(
                "InvalidLayerPartException",
                format!(
                    "partFirstByte {first} to partLastByte {last} is not the {} bytes given",
                    blob.len()
                ),
            ));
        }
        let range = format!("{first}-{last}");
        let a = self
            .call(
                Method::PATCH,
                &format!("/v2/{name}/blobs/uploads/{id}"),
                &[
                    ("content-range", &range),
                    ("content-type", "application/octet-stream"),
                ],
                blob,
            )
            .await?;
        match a.status {
            StatusCode::ACCEPTED => Ok(json!({
                "registryId": crate::core::model::account(),
                "repositoryName": name,
                "uploadId": id,
                "lastByteReceived": last,
            })),
            StatusCode::NOT_FOUND => Err(ApiError::not_found(
                "UploadNotFoundException",
                format!("The upload {id} does not exist (or has ended)."),
            )),
            _ => {
                let (_, message) = registry_error(&a);
                Err(ApiError::not_found("InvalidLayerPartException", message))
            }
        }
    }

    async fn complete_upload(&self, body: &Value) -> Result<Value, ApiError> {
        let name = self.repository(body)?;
        let id = required(body, "uploadId")?;
        let digests = strings(body, "layerDigests");
        let [digest] = digests.as_slice() else {
            return Err(ApiError::invalid_parameter(
                "layerDigests must name the one layer uploaded",
            ));
        };
        let exists = self
            .call(
                Method::HEAD,
                &format!("/v2/{name}/blobs/{digest}"),
                &[],
                Vec::new(),
            )
            .await?;
        let a = self
            .call(
                Method::PUT,
                &format!("/v2/{name}/blobs/uploads/{id}?digest={digest}"),
                &[],
                Vec::new(),
            )
            .await?;
        match a.status {
            StatusCode::CREATED if exists.status.is_success() => Err(ApiError::not_found(
                "LayerAlreadyExistsException",
                format!("The layer {digest} already exists in the repository with name '{name}'"),
            )),
            StatusCode::CREATED => Ok(json!({
                "registryId": crate::core::model::account(),
                "repositoryName": name,
                "uploadId": id,
                "layerDigest": digest,
            })),
            StatusCode::NOT_FOUND => Err(ApiError::not_found(
                "UploadNotFoundException",
                format!("The upload {id} does not exist (or has ended)."),
            )),
            _ => {
                let (code, message) = registry_error(&a);
                Err(if code == "DIGEST_INVALID" {
                    ApiError::not_found(
                        "InvalidLayerException",
                        format!("The layer's digest is not {digest}: {message}"),
                    )
                } else if code == "BLOB_UPLOAD_INVALID" && message.contains("empty") {
                    ApiError::not_found("EmptyUploadException", message)
                } else {
                    ApiError::not_found("InvalidLayerException", message)
                })
            }
        }
    }

    /// ListImageReferrers: the OCI referrers of a manifest (signatures,
    /// SBOMs...), from the registry's referrers API.
    async fn referrers(&self, body: &Value) -> Result<Value, ApiError> {
        let name = self.repository(body)?;
        let digest = body
            .pointer("/subjectId/imageDigest")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::invalid_parameter("subjectId.imageDigest is required"))?;
        let types = strings(body.get("filter").unwrap_or(&Value::Null), "artifactTypes");
        let a = self
            .call(
                Method::GET,
                &format!("/v2/{name}/referrers/{digest}"),
                &[("accept", "application/vnd.oci.image.index.v1+json")],
                Vec::new(),
            )
            .await?;
        if !a.status.is_success() {
            let (_, message) = registry_error(&a);
            return Err(ApiError::not_found("ImageNotFoundException", message));
        }
        let index: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
        let referrers: Vec<Value> = index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| {
                types.is_empty()
                    || m["artifactType"]
                        .as_str()
                        .is_some_and(|t| types.iter().any(|w| w == t))
            })
            .map(|m| {
                json!({
                    "digest": m["digest"], "mediaType": m["mediaType"],
                    "artifactType": m["artifactType"], "size": m["size"],
                    "annotations": m.get("annotations").cloned().unwrap_or(json!({})),
                    "artifactStatus": "ACTIVE",
                })
            })
            .collect();
        Ok(json!({ "referrers": referrers }))
    }

    /// DescribeImageReplicationStatus: the image exists, and its digest
    /// (the caller adds the statuses, from the control plane's records).
    async fn replication_status(&self, body: &Value) -> Result<Value, ApiError> {
        let name = self.repository(body)?;
        let id = body
            .get("imageId")
            .ok_or_else(|| ApiError::invalid_parameter("imageId is required"))?;
        let given_digest = id.get("imageDigest").and_then(Value::as_str);
        let given_tag = id.get("imageTag").and_then(Value::as_str);
        check_image_id(given_tag, given_digest)?;
        let reference = given_tag.or(given_digest).ok_or_else(|| {
            ApiError::invalid_parameter("imageId needs an imageDigest or an imageTag")
        })?;
        let a = self
            .call(
                Method::HEAD,
                &format!("/v2/{name}/manifests/{reference}"),
                &[("accept", MANIFEST_TYPES)],
                Vec::new(),
            )
            .await?;
        if !a.status.is_success() {
            return Err(ApiError::not_found(
                "ImageNotFoundException",
                format!(
                    "The image {reference} does not exist in the repository with name '{name}'"
                ),
            ));
        }
        let mut id = id.clone();
        if let Some(d) = a
            .headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            // A tag and a digest that name different images name none.
            if given_digest.is_some_and(|g| g != d) {
                return Err(ApiError::not_found(
                    "ImageNotFoundException",
                    format!(
                        "The image with tag {} is {d}, not {}, in the repository with name '{name}'",
                        given_tag.unwrap_or_default(),
                        given_digest.unwrap_or_default()
                    ),
                ));
            }
            id["imageDigest"] = json!(d);
        }
        Ok(json!({ "repositoryName": name, "imageId": id, "replicationStatuses": [] }))
    }

    async fn download_url(&self, body: &Value) -> Result<Value, ApiError> {
        let name = self.repository(body)?;
        let digest = required(body, "layerDigest")?;
        let a = self
            .call(
                Method::HEAD,
                &format!("/v2/{name}/blobs/{digest}"),
                &[],
                Vec::new(),
            )
            .await?;
        if !a.status.is_success() {
            return Err(ApiError::not_found(
                "LayersNotFoundException",
                format!("The layer {digest} is not in the repository with name '{name}'"),
            ));
        }
        Ok(json!({
            "downloadUrl": format!("http://{}/v2/{name}/blobs/{digest}", self.addr),
            "layerDigest": digest,
        }))
    }
}
