//! The registry's management API: what ECR's control-plane operations do
//! (repositories, tag immutability, lifecycle policies, scans, tokens),
//! for the `skiff` CLI now and the ECR JSON API later.
//!
//! These calls work on an open [`Registry`] whether or not it serves: a
//! second process (the CLI) may manage a directory a server is serving.
//! Only garbage collection is left to the serving process.

use crate::auth::IssuedToken;
use crate::digest::Digest;
use crate::error::Internal;
use crate::lifecycle::{Expiry, LifecyclePolicy};
use crate::repos::{Image, Repository, RepositorySettings};
use crate::scan::ScanReport;
use crate::server::{Inner, now};
use crate::{GcReport, Registry};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// What `Registry::delete_image` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageDeletion {
    /// The tag, or the image, is gone.
    Deleted,
    /// There was no such tag or image.
    NotFound,
    /// An image index lists the image: it stays.
    ReferencedByIndex,
}

/// Why a management call was refused. Everything but `Internal` is the
/// caller's mistake (ECR's exception of the same name in parentheses).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No such repository (`RepositoryNotFoundException`).
    #[error("repository {0} does not exist")]
    RepositoryNotFound(String),
    /// It exists already (`RepositoryAlreadyExistsException`).
    #[error("repository {0} already exists")]
    RepositoryAlreadyExists(String),
    /// Deleting a repository that has images without `force`
    /// (`RepositoryNotEmptyException`).
    #[error("repository {0} still has images: delete them first, or force")]
    RepositoryNotEmpty(String),
    /// A malformed name, setting or policy (`InvalidParameterException`).
    #[error("{0}")]
    InvalidParameter(String),
    /// No such image (`ImageNotFoundException`).
    #[error("image {reference} is not in repository {repository}")]
    ImageNotFound {
        /// The repository.
        repository: String,
        /// The tag or digest asked for.
        reference: String,
    },
    /// The repository has no lifecycle policy
    /// (`LifecyclePolicyNotFoundException`).
    #[error("repository {0} has no lifecycle policy")]
    LifecyclePolicyNotFound(String),
    /// The image was never scanned (`ScanNotFoundException`).
    #[error("image {reference} of {repository} has not been scanned")]
    ScanNotFound {
        /// The repository.
        repository: String,
        /// The tag or digest asked for.
        reference: String,
    },
    /// A pull-through cache rule for the prefix exists
    /// (`PullThroughCacheRuleAlreadyExistsException`).
    #[error("a pull-through cache rule with the prefix {0} already exists")]
    CacheRuleAlreadyExists(String),
    /// No pull-through cache rule has the prefix
    /// (`PullThroughCacheRuleNotFoundException`).
    #[error("no pull-through cache rule has the prefix {0}")]
    CacheRuleNotFound(String),
    /// A template for the prefix exists (`TemplateAlreadyExistsException`).
    #[error("a repository creation template with the prefix {0} already exists")]
    TemplateAlreadyExists(String),
    /// No template has the prefix (`TemplateNotFoundException`).
    #[error("no repository creation template has the prefix {0}")]
    TemplateNotFound(String),
    /// The registry failed.
    #[error(transparent)]
    Internal(#[from] Internal),
}

type Result<T> = std::result::Result<T, AdminError>;

fn check_name(name: &str) -> Result<()> {
    if crate::names::valid_repository(name) {
        Ok(())
    } else {
        Err(AdminError::InvalidParameter(format!(
            "invalid repository name {name:?}: lowercase letters and digits, separated by . _ __ - or /"
        )))
    }
}

impl Inner {
    fn existing(&self, name: &str) -> Result<Repository> {
        check_name(name)?;
        self.db
            .repository(name)?
            .ok_or_else(|| AdminError::RepositoryNotFound(name.to_string()))
    }

    /// The digest a tag or digest names in `repo`.
    fn resolve(&self, repo: &str, reference: &str) -> Result<String> {
        self.existing(repo)?;
        let not_found = || AdminError::ImageNotFound {
            repository: repo.to_string(),
            reference: reference.to_string(),
        };
        if reference.contains(':') && reference.parse::<Digest>().is_err() {
            return Err(AdminError::InvalidParameter(format!(
                "{reference:?} is neither a tag nor a digest"
            )));
        }
        Ok(self
            .db
            .manifest(repo, reference)?
            .ok_or_else(not_found)?
            .digest)
    }

    /// What the repository's policy would expire now.
    fn lifecycle_plan(&self, repo: &str) -> Result<Vec<Expiry>> {
        let found = self.existing(repo)?;
        let text = found
            .lifecycle_policy
            .ok_or_else(|| AdminError::LifecyclePolicyNotFound(repo.to_string()))?;
        let policy = LifecyclePolicy::parse(&text).map_err(|e| {
            Internal::Other(format!(
                "the stored lifecycle policy of {repo} is invalid: {e}"
            ))
        })?;
        self.plan_with(repo, &policy)
    }

    /// What `policy` would expire from `repo` now.
    fn plan_with(&self, repo: &str, policy: &LifecyclePolicy) -> Result<Vec<Expiry>> {
        // Images only: an index's entries and the artifacts attached to an
        // image (its referrers) go with it, never on their own.
        let parts: HashSet<String> = self.db.child_manifests(repo)?.into_iter().collect();
        let images: Vec<Image> = self
            .db
            .images(repo)?
            .into_iter()
            .filter(|i| i.subject.is_none() && !parts.contains(&i.digest))
            .collect();
        Ok(policy.evaluate(&images, now()))
    }

    /// Applies `repo`'s lifecycle policy: expires what it selects.
    pub(crate) async fn apply_lifecycle(self: &Arc<Self>, repo: &str) -> Result<Vec<Expiry>> {
        let r = repo.to_string();
        let expired = self
            .off_thread(move |i| {
                let plan = match i.lifecycle_plan(&r) {
                    Ok(plan) => plan,
                    Err(AdminError::Internal(e)) => return Err(e),
                    Err(other) => return Ok(Err(other)),
                };
                // Each checked again as it goes: an image retagged or
                // listed by a new index since the plan stays.
                let mut expired = Vec::with_capacity(plan.len());
                for e in plan {
                    if i.db.expire_image(&r, &e.digest, &e.tags)? > 0 {
                        expired.push(e);
                    }
                }
                Ok(Ok(expired))
            })
            .await??;
        if !expired.is_empty() {
            tracing::info!(
                repository = repo,
                images = expired.len(),
                "lifecycle policy expired images"
            );
        }
        Ok(expired)
    }

    /// One maintenance pass: every lifecycle policy, then garbage
    /// collection.
    pub(crate) async fn maintain(self: &Arc<Self>) -> std::result::Result<GcReport, Internal> {
        self.drop_idle_uploads().await?;
        let names = self
            .off_thread(|i| i.db.repositories_with_policies())
            .await?;
        for name in names {
            match self.apply_lifecycle(&name).await {
                Ok(_)
                | Err(AdminError::LifecyclePolicyNotFound(_) | AdminError::RepositoryNotFound(_)) =>
                    {}
                Err(AdminError::Internal(e)) => return Err(e),
                Err(e) => tracing::warn!(repository = %name, "lifecycle policy not applied: {e}"),
            }
        }
        self.collect_garbage().await
    }
}

impl Registry {
    /// Creates a repository (`CreateRepository`).
    pub fn create_repository(
        &self,
        name: &str,
        settings: &RepositorySettings,
    ) -> Result<Repository> {
        check_name(name)?;
        settings.validate().map_err(AdminError::InvalidParameter)?;
        if !self
            .inner
            .db
            .create_repository_with(name, settings, now())?
        {
            return Err(AdminError::RepositoryAlreadyExists(name.to_string()));
        }
        self.repository(name)
    }

    /// Every repository, by name (`DescribeRepositories`).
    pub fn repositories(&self) -> Result<Vec<Repository>> {
        let mut all = Vec::new();
        for name in self.inner.db.repository_names()? {
            if let Some(r) = self.inner.db.repository(&name)? {
                all.push(r);
            }
        }
        Ok(all)
    }

    /// One repository.
    pub fn repository(&self, name: &str) -> Result<Repository> {
        self.inner.existing(name)
    }

    /// Changes a repository's tag mutability and scan-on-push
    /// (`PutImageTagMutability`, `PutImageScanningConfiguration`).
    pub fn set_settings(&self, name: &str, settings: &RepositorySettings) -> Result<Repository> {
        self.inner.existing(name)?;
        settings.validate().map_err(AdminError::InvalidParameter)?;
        self.inner.db.set_settings(name, settings)?;
        self.repository(name)
    }

    /// Deletes a repository (`DeleteRepository`); one with images only
    /// with `force`. Its blobs are collected (by the serving process).
    pub async fn delete_repository(&self, name: &str, force: bool) -> Result<Repository> {
        let found = self.inner.existing(name)?;
        if !self.inner.db.delete_repository(name, force)? {
            return Err(AdminError::RepositoryNotEmpty(name.to_string()));
        }
        self.inner.maintenance.notify_one();
        Ok(found)
    }

    /// Sets a repository's lifecycle policy (`PutLifecyclePolicy`), after
    /// validating it against ECR's schema.
    pub fn put_lifecycle_policy(&self, name: &str, policy: &str) -> Result<()> {
        self.inner.existing(name)?;
        LifecyclePolicy::parse(policy).map_err(AdminError::InvalidParameter)?;
        self.inner.db.set_lifecycle_policy(name, Some(policy))?;
        Ok(())
    }

    /// A repository's lifecycle policy text (`GetLifecyclePolicy`).
    pub fn lifecycle_policy(&self, name: &str) -> Result<String> {
        self.inner
            .existing(name)?
            .lifecycle_policy
            .ok_or_else(|| AdminError::LifecyclePolicyNotFound(name.to_string()))
    }

    /// Removes a repository's lifecycle policy, returning it
    /// (`DeleteLifecyclePolicy`).
    pub fn delete_lifecycle_policy(&self, name: &str) -> Result<String> {
        let policy = self.lifecycle_policy(name)?;
        self.inner.db.set_lifecycle_policy(name, None)?;
        Ok(policy)
    }

    /// What the policy would expire now, changing nothing
    /// (`GetLifecyclePolicyPreview`).
    pub fn lifecycle_preview(&self, name: &str) -> Result<Vec<Expiry>> {
        self.inner.lifecycle_plan(name)
    }

    /// What a policy given as text (not necessarily the repository's)
    /// would expire now, changing nothing (`StartLifecyclePolicyPreview`
    /// with a `lifecyclePolicyText`).
    pub fn lifecycle_preview_of(&self, name: &str, policy: &str) -> Result<Vec<Expiry>> {
        self.inner.existing(name)?;
        let policy = LifecyclePolicy::parse(policy).map_err(AdminError::InvalidParameter)?;
        self.inner.plan_with(name, &policy)
    }

    /// Deletes an image (`BatchDeleteImage`): by digest, the manifest and
    /// every tag on it; by tag, the tag — and the image with it when that
    /// was its last tag, as ECR does (in one transaction, so a push of the
    /// same image under a new tag meanwhile keeps it). An image an index
    /// lists is not deleted (ECR's `ImageReferencedByManifestList`).
    pub fn delete_image(&self, name: &str, reference: &str) -> Result<ImageDeletion> {
        let digest = match self.inner.resolve(name, reference) {
            Ok(d) => d,
            Err(AdminError::ImageNotFound { .. }) => return Ok(ImageDeletion::NotFound),
            Err(e) => return Err(e),
        };
        if self.inner.db.child_manifests(name)?.contains(&digest) {
            return Ok(ImageDeletion::ReferencedByIndex);
        }
        let d: Digest = digest
            .parse()
            .map_err(|e| Internal::Other(format!("a stored digest is invalid: {e}")))?;
        let deleted = if reference.contains(':') {
            self.inner.db.delete_manifest(name, &d)?
        } else if self
            .inner
            .db
            .expire_image(name, &digest, &[reference.to_string()])?
            > 0
        {
            // It was the image's last tag: the image went with it.
            true
        } else {
            self.inner.db.delete_tag(name, reference)?
        };
        if !deleted {
            return Ok(ImageDeletion::NotFound);
        }
        self.inner.maintenance.notify_one();
        Ok(ImageDeletion::Deleted)
    }

    /// Expires what the policy selects now, and collects the blobs that
    /// freed (a serving registry also does this on its own, every
    /// [`crate::RegistryConfig::maintenance_interval`]).
    pub async fn apply_lifecycle(&self, name: &str) -> Result<(Vec<Expiry>, GcReport)> {
        let expired = self.inner.apply_lifecycle(name).await?;
        let gc = self.inner.collect_garbage().await?;
        Ok((expired, gc))
    }

    /// The images of a repository, newest first (`DescribeImages`).
    pub fn images(&self, name: &str) -> Result<Vec<Image>> {
        self.inner.existing(name)?;
        Ok(self.inner.db.images(name)?)
    }

    /// Scans an image now and returns the finished report (what
    /// `StartImageScan` starts, run to its end).
    pub async fn scan(&self, name: &str, reference: &str) -> Result<ScanReport> {
        let digest = self.inner.resolve(name, reference)?;
        self.inner
            .run_scan(name, &digest)
            .await?
            .ok_or_else(|| AdminError::ImageNotFound {
                repository: name.to_string(),
                reference: reference.to_string(),
            })
    }

    /// Starts a scan in the background and returns at once, IN_PROGRESS
    /// (`StartImageScan`).
    pub async fn start_scan(&self, name: &str, reference: &str) -> Result<ScanReport> {
        let digest = self.inner.resolve(name, reference)?;
        Ok(self.inner.start_scan(name, &digest).await?)
    }

    /// The last scan report of an image (`DescribeImageScanFindings`).
    pub fn scan_findings(&self, name: &str, reference: &str) -> Result<ScanReport> {
        let digest = self.inner.resolve(name, reference)?;
        let json = self
            .inner
            .db
            .scan(name, &digest)?
            .ok_or_else(|| AdminError::ScanNotFound {
                repository: name.to_string(),
                reference: reference.to_string(),
            })?;
        serde_json::from_str(&json)
            .map_err(|e| Internal::Other(format!("stored scan report: {e}")).into())
    }

    /// Issues a registry token valid for `ttl` (`GetAuthorizationToken`):
    /// the password of user `AWS`.
    pub fn issue_token(&self, ttl: Duration) -> Result<IssuedToken> {
        if ttl.is_zero() {
            return Err(AdminError::InvalidParameter(
                "a token must last longer than 0s".into(),
            ));
        }
        Ok(self.inner.auth.issue(&self.inner.db, ttl, now())?)
    }

    /// Revokes every issued token; returns how many there were. Bearer
    /// tokens already traded for one stay valid until they expire (at
    /// most [`crate::auth::BEARER_TTL`]).
    pub fn revoke_tokens(&self) -> Result<u64> {
        Ok(self.inner.db.revoke_tokens()?)
    }
}
