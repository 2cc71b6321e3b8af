//! Pull-through cache rules: this registry as a caching proxy of another
//! (ECR's CreatePullThroughCacheRule).
//!
//! A rule maps a repository prefix here to an upstream registry. Pulling
//! `PREFIX/REPO:TAG` (or `@DIGEST`) that is not here yet fetches
//! `UPSTREAM/[UPSTREAM_PREFIX/]REPO` — the manifest, an index's child
//! manifests and every blob, each digest checked — stores it as if it had
//! been pushed to `PREFIX/REPO` (creating that repository, as ECR does),
//! and answers from the copy. A tag is looked up upstream again once a
//! day ([`REFRESH_AFTER_SECS`], ECR's interval); if the upstream cannot be
//! reached then, the cached copy is served. A digest never changes, so it
//! is never fetched twice.
//!
//! Upstreams on loopback are spoken to in plain HTTP, others in HTTPS
//! (as every pull here); they are pulled anonymously: ECR's upstream
//! credentials live in Secrets Manager, which skiff does not have.

use crate::db::NewManifest;
use crate::digest::Digest;
use crate::error::Failure;
use crate::error::{Code, Error};
use crate::manifest;
use crate::remote::{ACCEPT, RemoteOptions, client_for, parse_reference, verified_digest};
use crate::server::{Inner, now};
use crate::{AdminError, Registry};
use oci_client::Reference;
use std::sync::Arc;

/// How long a cached tag is served before the upstream is asked again.
pub const REFRESH_AFTER_SECS: i64 = 24 * 60 * 60;

/// A pull-through cache rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CacheRule {
    /// Repositories under `PREFIX/` here come from the upstream.
    pub prefix: String,
    /// The upstream registry, `host[:port]`.
    pub upstream_url: String,
    /// The upstream's repository prefix, or `ROOT` for none.
    pub upstream_prefix: String,
    /// Seconds since the epoch.
    pub created_at: i64,
    pub updated_at: i64,
}

impl CacheRule {
    /// The upstream repository a repository here under the rule mirrors.
    pub fn upstream_repository(&self, name: &str) -> Option<String> {
        let rest = name.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        if rest.is_empty() {
            return None;
        }
        Some(if self.upstream_prefix == "ROOT" {
            rest.to_string()
        } else {
            format!("{}/{rest}", self.upstream_prefix)
        })
    }
}

/// Checks a rule's upstream registry address: `host[:port]`, no scheme or
/// path (ECR's `upstreamRegistryUrl`).
pub fn check_upstream_url(url: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("upstreamRegistryUrl {url:?} {why}"));
    if url.contains("://") {
        return bad("is a host name (and port), without a scheme");
    }
    if url.is_empty() || url.contains('/') || url.contains(char::is_whitespace) {
        return bad("must be a registry's host name, optionally with :port");
    }
    if let Some((_, port)) = url.rsplit_once(':')
        && !url.ends_with(']')
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return bad("has no valid port (1 to 65535)");
    }
    match parse_reference(&format!("{url}/probe:latest")) {
        Ok(r) if r.registry() == url => Ok(()),
        _ => bad("is not a registry address"),
    }
}

/// How upstreams are spoken to: short timeouts, so a client waiting on a
/// pull through the cache (or a validation) hears of a stalled upstream
/// in seconds, not minutes.
fn upstream_options(read_timeout: std::time::Duration) -> RemoteOptions {
    RemoteOptions {
        connect_timeout: std::time::Duration::from_secs(5),
        read_timeout,
        ..RemoteOptions::default()
    }
}

/// Did the upstream say it has no such image (rather than fail)?
fn upstream_lacks(e: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode as C};
    match e {
        E::ImageManifestNotFoundError(_) => true,
        E::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|x| matches!(x.code, C::ManifestUnknown | C::NameUnknown | C::NotFound)),
        E::ServerError { code, .. } => *code == 404,
        // An anonymous pull of a repository the upstream does not have
        // (Docker Hub's answer) or will not show.
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => true,
        _ => false,
    }
}

/// A repository a fill made, removed when dropped while `inner` is set —
/// if it is still empty.
struct MadeRepository {
    inner: Option<(Arc<Inner>, String)>,
}

impl Drop for MadeRepository {
    fn drop(&mut self) {
        let Some((inner, name)) = self.inner.take() else {
            return;
        };
        let forget = move || {
            if let Err(e) = inner.db.delete_repository(&name, false) {
                tracing::warn!(repository = %name, "cannot remove the repository a failed fill made: {e}");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn_blocking(forget);
            }
            Err(_) => forget(),
        }
    }
}

fn upstream_error(rule: &CacheRule, what: &str, e: impl std::fmt::Display) -> Failure {
    Error::new(
        Code::ManifestUnknown,
        format!(
            "{what} could not be fetched from the upstream registry {} of pull-through cache rule {}: {e}",
            rule.upstream_url, rule.prefix
        ),
    )
    .with_status(http::StatusCode::BAD_GATEWAY)
    .into()
}

/// An upstream's answer to a manifest request that failed: 404 when it
/// has no such image, 502 when it could not be asked.
fn manifest_error(
    rule: &CacheRule,
    what: &str,
    e: oci_client::errors::OciDistributionError,
) -> Failure {
    if upstream_lacks(&e) {
        return Error::new(
            Code::ManifestUnknown,
            format!(
                "{what} is not in the upstream registry {} of pull-through cache rule {} (or is not for anonymous pulls)",
                rule.upstream_url, rule.prefix
            ),
        )
        .into();
    }
    upstream_error(rule, what, e)
}

impl Registry {
    /// Adds a rule: repositories under `prefix/` come from `upstream_url`
    /// (under `upstream_prefix`, or its root).
    pub fn create_cache_rule(
        &self,
        prefix: &str,
        upstream_url: &str,
        upstream_prefix: Option<&str>,
    ) -> Result<CacheRule, AdminError> {
        let name_like = |what: &str, v: &str| {
            if crate::names::valid_repository(v) && (2..=30).contains(&v.len()) {
                Ok(())
            } else {
                Err(AdminError::InvalidParameter(format!(
                    "{what} {v:?} must be 2 to 30 lowercase letters and digits, separated by . _ - or /"
                )))
            }
        };
        name_like("ecrRepositoryPrefix", prefix)?;
        let upstream_prefix = upstream_prefix.unwrap_or("ROOT");
        if upstream_prefix != "ROOT" {
            name_like("upstreamRepositoryPrefix", upstream_prefix)?;
        }
        check_upstream_url(upstream_url).map_err(AdminError::InvalidParameter)?;
        let at = now();
        let rule = CacheRule {
            prefix: prefix.to_string(),
            upstream_url: upstream_url.to_string(),
            upstream_prefix: upstream_prefix.to_string(),
            created_at: at,
            updated_at: at,
        };
        if !self.inner.db.put_cache_rule(&rule)? {
            return Err(AdminError::CacheRuleAlreadyExists(prefix.to_string()));
        }
        Ok(rule)
    }

    /// Every rule, by prefix.
    pub fn cache_rules(&self) -> Result<Vec<CacheRule>, AdminError> {
        Ok(self.inner.db.cache_rules()?)
    }

    /// The rule for `prefix`.
    pub fn cache_rule(&self, prefix: &str) -> Result<CacheRule, AdminError> {
        self.cache_rules()?
            .into_iter()
            .find(|r| r.prefix == prefix)
            .ok_or_else(|| AdminError::CacheRuleNotFound(prefix.to_string()))
    }

    /// Removes the rule for `prefix` (what it cached stays), returning it.
    pub fn delete_cache_rule(&self, prefix: &str) -> Result<CacheRule, AdminError> {
        let rule = self.cache_rule(prefix)?;
        self.inner.db.delete_cache_rule(prefix)?;
        Ok(rule)
    }

    /// Whether the upstream of `prefix`'s rule answers as a registry
    /// anonymous pulls can use: None if it does, else why not.
    pub async fn validate_cache_rule(
        &self,
        prefix: &str,
    ) -> Result<(CacheRule, Option<String>), AdminError> {
        let rule = self.cache_rule(prefix)?;
        let probe = parse_reference(&format!("{}/skiff/probe:latest", rule.upstream_url))
            .map_err(|e| AdminError::InvalidParameter(e.to_string()))?;
        let options = upstream_options(std::time::Duration::from_secs(10));
        let (client, auth) = client_for(&probe, &options);
        use oci_client::errors::OciDistributionError as E;
        let url = &rule.upstream_url;
        let failure = match client.list_tags(&probe, &auth, Some(1), None).await {
            Ok(_) => None,
            // It answered as a registry does (the probe repository is
            // unknown to it).
            Err(E::RegistryError { .. }) => None,
            Err(E::RequestError(e)) if e.is_timeout() => Some(format!(
                "the upstream registry {url} timed out: it takes connections but does not answer"
            )),
            Err(E::RequestError(e)) => Some(format!(
                "the upstream registry {url} cannot be reached: {e}"
            )),
            Err(E::UnauthorizedError { .. }) | Err(E::AuthenticationFailure(_)) => Some(format!(
                "the upstream registry {url} needs credentials, and skiff pulls from upstreams anonymously"
            )),
            Err(e) => Some(format!("{url} does not answer as an OCI registry ({e})")),
        };
        Ok((rule, failure))
    }
}

impl Inner {
    /// The rule `name` is under, if any.
    pub(crate) async fn cache_rule_for(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<Option<CacheRule>, Failure> {
        let n = name.to_string();
        let rules = self
            .off_thread(move |i| i.db.cache_rules())
            .await
            .map_err(Failure::Internal)?;
        // The most specific rule: the longest prefix.
        Ok(rules
            .into_iter()
            .filter(|r| r.upstream_repository(&n).is_some())
            .max_by_key(|r| r.prefix.len()))
    }

    /// Makes sure `name:reference` is here, fetching it from `rule`'s
    /// upstream when it is missing or is a tag due for a refresh.
    pub(crate) async fn pull_through(
        self: &Arc<Self>,
        rule: &CacheRule,
        name: &str,
        reference: &str,
    ) -> Result<(), Failure> {
        let is_tag = !reference.contains(':');
        let (n, r) = (name.to_string(), reference.to_string());
        let cached = self
            .off_thread(move |i| {
                let have = i.db.repository_exists(&n)? && i.db.manifest(&n, &r)?.is_some();
                let at = if have && !r.contains(':') {
                    i.db.tag_updated_at(&n, &r)?
                } else {
                    None
                };
                Ok((have, at))
            })
            .await
            .map_err(Failure::Internal)?;
        let fresh = match cached {
            (false, _) => false,
            (true, Some(at)) if is_tag => now() - at < REFRESH_AFTER_SECS,
            (true, _) => true,
        };
        if fresh {
            return Ok(());
        }
        match self.fetch(rule, name, reference).await {
            Ok(()) => Ok(()),
            Err(e) if cached.0 => {
                tracing::warn!(
                    repository = name,
                    reference,
                    "the upstream of a cached tag could not be asked; serving the cached copy: {e:?}"
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Fetches `name:reference` from the upstream and stores it here.
    async fn fetch(
        self: &Arc<Self>,
        rule: &CacheRule,
        name: &str,
        reference: &str,
    ) -> Result<(), Failure> {
        let Some(upstream_repo) = rule.upstream_repository(name) else {
            return Ok(());
        };
        let sep = if reference.contains(':') { '@' } else { ':' };
        let whole = format!("{}/{upstream_repo}{sep}{reference}", rule.upstream_url);
        let image = parse_reference(&whole).map_err(|e| upstream_error(rule, &whole, e))?;
        let options = upstream_options(std::time::Duration::from_secs(30));
        let (client, auth) = client_for(&image, &options);
        let (bytes, _) = client
            .pull_manifest_raw(&image, &auth, &ACCEPT)
            .await
            .map_err(|e| manifest_error(rule, &whole, e))?;
        let digest = verified_digest(&whole, image.digest(), &bytes)
            .map_err(|e| upstream_error(rule, &whole, e))?;
        let parsed = manifest::parse(&bytes, "").map_err(|e| upstream_error(rule, &whole, e))?;
        // The repository exists from here on (ECR creates it on the first
        // pull); if nothing could be stored, a repository this pull made
        // goes again.
        let n = name.to_string();
        let created = self
            .off_thread(move |i| i.create_as(&n, crate::templates::PULL_THROUGH_CACHE))
            .await
            .map_err(Failure::Internal)?;
        // Until the image is stored, a repository this fill made goes again
        // if the fill fails or is dropped (its client went away) — unless
        // another fill has stored something in it meanwhile.
        let mut made = MadeRepository {
            inner: created.then(|| (Arc::clone(self), name.to_string())),
        };
        let stored = async {
            for child in &parsed.manifests {
                let child_ref = image.clone_with_digest(child.to_string());
                let (bytes, _) = client
                    .pull_manifest_raw(&child_ref, &auth, &ACCEPT)
                    .await
                    .map_err(|e| upstream_error(rule, &whole, e))?;
                let d = verified_digest(&whole, child_ref.digest(), &bytes)
                    .map_err(|e| upstream_error(rule, &whole, e))?;
                let p = manifest::parse(&bytes, "").map_err(|e| upstream_error(rule, &whole, e))?;
                if !p.manifests.is_empty() {
                    return Err(upstream_error(rule, &whole, "an index inside an index"));
                }
                self.fetch_blobs(rule, &client, &image, name, &p).await?;
                self.store(name, &d, bytes.to_vec(), &p, None).await?;
            }
            self.fetch_blobs(rule, &client, &image, name, &parsed)
                .await?;
            let tag = (!reference.contains(':')).then_some(reference);
            self.store(name, &digest, bytes.to_vec(), &parsed, tag)
                .await
        }
        .await;
        if stored.is_ok() {
            made.inner = None;
        }
        stored
    }

    /// Fetches the blobs of `m` that are not linked into `name` yet.
    async fn fetch_blobs(
        self: &Arc<Self>,
        rule: &CacheRule,
        client: &oci_client::Client,
        image: &Reference,
        name: &str,
        m: &manifest::Parsed,
    ) -> Result<(), Failure> {
        for (blob, size, elsewhere) in &m.blobs {
            if *elsewhere {
                continue;
            }
            let (n, b) = (name.to_string(), blob.clone());
            let here = self
                .off_thread(move |i| Ok((i.db.linked_blob(&n, &b)?, i.blobs.exists(&b))))
                .await
                .map_err(Failure::Internal)?;
            match here {
                (Some(_), _) => continue,
                (None, true) => {}
                (None, false) => {
                    let upload = self
                        .blobs
                        .upload_path(&format!(".cache-{}", uuid::Uuid::new_v4()));
                    let result = async {
                        let mut file = tokio::fs::File::create(&upload)
                            .await
                            .map_err(|e| Failure::Internal(e.into()))?;
                        client
                            .pull_blob(image, blob.to_string().as_str(), &mut file)
                            .await
                            .map_err(|e| upstream_error(rule, &blob.to_string(), e))?;
                        drop(file);
                        let (path, b) = (upload.clone(), blob.clone());
                        self.off_thread(move |i| {
                            let actual = crate::blobs::Blobs::hash_file(&path, b.algorithm())?;
                            if actual != b {
                                return Ok(Some(actual));
                            }
                            i.blobs.commit(&path, &b)?;
                            Ok(None)
                        })
                        .await
                        .map_err(Failure::Internal)
                    }
                    .await;
                    match result {
                        Ok(None) => {}
                        Ok(Some(actual)) => {
                            let _ = std::fs::remove_file(&upload);
                            return Err(upstream_error(
                                rule,
                                &blob.to_string(),
                                format!("its content's digest is {actual}"),
                            ));
                        }
                        Err(e) => {
                            let _ = std::fs::remove_file(&upload);
                            return Err(e);
                        }
                    }
                }
            }
            // Linked at once: a linked blob is kept by garbage collection
            // for its grace period, long enough for the manifest to follow.
            let _shared = self.gc_lock.read().await;
            let (n, b, s) = (name.to_string(), blob.clone(), *size);
            self.off_thread(move |i| i.db.link_blob(&n, &b, s, now()))
                .await
                .map_err(Failure::Internal)?;
        }
        Ok(())
    }

    /// Records a fetched manifest as a push into `name` would.
    async fn store(
        self: &Arc<Self>,
        name: &str,
        digest: &Digest,
        bytes: Vec<u8>,
        m: &manifest::Parsed,
        tag: Option<&str>,
    ) -> Result<(), Failure> {
        let children: Vec<Digest> = m
            .blobs
            .iter()
            .map(|(d, _, _)| d.clone())
            .chain(m.manifests.iter().cloned())
            .collect();
        let (n, d, t, m) = (
            name.to_string(),
            digest.clone(),
            tag.map(String::from),
            m.clone(),
        );
        let size = bytes.len() as u64;
        let _shared = self.gc_lock.read().await;
        let recorded = self
            .off_thread(move |i| {
                i.blobs.put(&d, &bytes)?;
                i.db.put_manifest(&NewManifest {
                    repo: &n,
                    digest: &d,
                    media_type: &m.media_type,
                    artifact_type: m.artifact_type.as_deref(),
                    config_media_type: m.config_media_type.as_deref(),
                    size,
                    subject: m.subject.as_ref(),
                    annotations: m.annotations.clone(),
                    children,
                    tag: t.as_deref(),
                    now: now(),
                    announce: false,
                })
            })
            .await
            .map_err(Failure::Internal)?;
        match recorded {
            crate::db::Recorded::Stored => Ok(()),
            crate::db::Recorded::TagImmutable => {
                Err(crate::repos::tag_already_exists(tag.unwrap_or_default(), name).into())
            }
            crate::db::Recorded::NoRepository => Err(Error::new(
                Code::NameUnknown,
                format!("repository {name} was deleted while its image was fetched"),
            )
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(prefix: &str, upstream_prefix: &str) -> CacheRule {
        CacheRule {
            prefix: prefix.into(),
            upstream_url: "127.0.0.1:5000".into(),
            upstream_prefix: upstream_prefix.into(),
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn a_rule_maps_repositories_under_its_prefix_only() {
        let r = rule("hub", "ROOT");
        assert_eq!(
            r.upstream_repository("hub/library/hello").as_deref(),
            Some("library/hello")
        );
        assert_eq!(r.upstream_repository("hub"), None);
        assert_eq!(r.upstream_repository("hub/"), None);
        assert_eq!(r.upstream_repository("hubby/x"), None);
        let r = rule("mirror", "team");
        assert_eq!(
            r.upstream_repository("mirror/app").as_deref(),
            Some("team/app")
        );
    }

    #[test]
    fn upstream_urls_are_registry_addresses() {
        assert!(check_upstream_url("127.0.0.1:5000").is_ok());
        assert!(check_upstream_url("registry-1.docker.io").is_ok());
        assert!(check_upstream_url("https://quay.io").is_err());
        assert!(check_upstream_url("quay.io/x").is_err());
        assert!(check_upstream_url("").is_err());
    }
}
