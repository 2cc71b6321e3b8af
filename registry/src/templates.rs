//! Repository creation templates (ECR's CreateRepositoryCreationTemplate):
//! the settings a repository gets when the registry makes it by itself —
//! on a push into a repository that does not exist (`CREATE_ON_PUSH`), on
//! a pull through a cache rule (`PULL_THROUGH_CACHE`), or when another
//! skiff replicates an image here (`REPLICATION`: its pushes say so in
//! their user agent, [`REPLICATION_AGENT`]).
//!
//! A template is kept as ECR's JSON (the control plane checks it); the
//! registry applies its tag mutability, exclusion filters and lifecycle
//! policy as it creates the repository, and records the template's prefix
//! on it, so the control plane can give the repository the template's
//! policy and tags. The template whose prefix is the longest one the
//! repository's name starts with (`PREFIX/...`) applies; `ROOT` applies
//! where none does.

use crate::error::Internal;
use crate::repos::{RepositorySettings, TagMutability};
use crate::server::{Inner, now};
use crate::{AdminError, Registry};
use serde_json::Value;

/// A repository made by a push.
pub const CREATE_ON_PUSH: &str = "CREATE_ON_PUSH";
/// A repository made by a pull through a cache rule.
pub const PULL_THROUGH_CACHE: &str = "PULL_THROUGH_CACHE";
/// A repository made by another registry replicating into this one.
pub const REPLICATION: &str = "REPLICATION";

/// The user agent of skiff's replication pushes.
pub const REPLICATION_AGENT: &str = "skiff-replication";

/// The template for a repository `name` made as `kind`, if any.
pub fn choose<'a>(templates: &'a [Value], name: &str, kind: &str) -> Option<&'a Value> {
    let applies = |t: &&Value| {
        t["appliedFor"]
            .as_array()
            .is_some_and(|a| a.iter().any(|k| k == kind))
    };
    let prefix = |t: &Value| t["prefix"].as_str().unwrap_or_default().to_string();
    templates
        .iter()
        .filter(applies)
        .filter(|t| {
            let p = prefix(t);
            p != "ROOT" && name.starts_with(&format!("{p}/"))
        })
        .max_by_key(|t| prefix(t).len())
        .or_else(|| {
            templates
                .iter()
                .filter(applies)
                .find(|t| prefix(t) == "ROOT")
        })
}

/// The settings a template gives (the registry's defaults for the rest).
fn settings_from(
    template: &Value,
    defaults: &RepositorySettings,
) -> Result<RepositorySettings, String> {
    let mut s = defaults.clone();
    if let Some(m) = template["imageTagMutability"].as_str() {
        s.tag_mutability = TagMutability::parse(m)?;
    }
    if let Some(filters) = template["imageTagMutabilityExclusionFilters"].as_array() {
        s.mutability_filters = filters
            .iter()
            .filter_map(|f| f["filter"].as_str().map(String::from))
            .collect();
    }
    s.validate()?;
    Ok(s)
}

impl Registry {
    /// Adds a template (ECR's JSON, `prefix` in it), or replaces one
    /// (`create` false). Its tag mutability and lifecycle policy are
    /// checked as a repository's would be.
    pub fn put_template(&self, template: &Value, create: bool) -> Result<(), AdminError> {
        let prefix = template["prefix"].as_str().unwrap_or_default();
        settings_from(template, &self.inner.config.default_settings)
            .map_err(AdminError::InvalidParameter)?;
        if let Some(p) = template["lifecyclePolicy"].as_str() {
            crate::lifecycle::LifecyclePolicy::parse(p).map_err(AdminError::InvalidParameter)?;
        }
        if self.inner.db.put_template(prefix, template, create)? {
            Ok(())
        } else if create {
            Err(AdminError::TemplateAlreadyExists(prefix.to_string()))
        } else {
            Err(AdminError::TemplateNotFound(prefix.to_string()))
        }
    }

    /// Every template, by prefix.
    pub fn templates(&self) -> Result<Vec<Value>, AdminError> {
        Ok(self.inner.db.templates()?)
    }

    /// Removes the template for `prefix`, returning it.
    pub fn delete_template(&self, prefix: &str) -> Result<Value, AdminError> {
        let t = self
            .templates()?
            .into_iter()
            .find(|t| t["prefix"] == prefix)
            .ok_or_else(|| AdminError::TemplateNotFound(prefix.to_string()))?;
        self.inner.db.delete_template(prefix)?;
        Ok(t)
    }
}

impl Inner {
    /// Creates repository `name`, made as `kind`, from the template that
    /// applies (or with the registry's default settings). False if it
    /// existed.
    pub(crate) fn create_as(&self, name: &str, kind: &str) -> Result<bool, Internal> {
        if self.db.repository_exists(name)? {
            return Ok(false);
        }
        let templates = self.db.templates()?;
        let Some(t) = choose(&templates, name, kind) else {
            return self
                .db
                .create_repository_with(name, &self.config.default_settings, now());
        };
        let settings = settings_from(t, &self.config.default_settings).unwrap_or_else(|e| {
            tracing::warn!(
                repository = name,
                "its template's settings are not valid ({e}): the defaults apply"
            );
            self.config.default_settings.clone()
        });
        self.db.create_repository_from(
            name,
            &settings,
            t["lifecyclePolicy"].as_str(),
            t["prefix"].as_str(),
            now(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_longest_prefix_for_the_kind_applies_then_root() {
        let ts = [
            json!({"prefix": "ROOT", "appliedFor": ["CREATE_ON_PUSH"]}),
            json!({"prefix": "prod", "appliedFor": ["CREATE_ON_PUSH", "REPLICATION"]}),
            json!({"prefix": "prod/web", "appliedFor": ["CREATE_ON_PUSH"]}),
            json!({"prefix": "hub", "appliedFor": ["PULL_THROUGH_CACHE"]}),
        ];
        let pick = |name: &str, kind: &str| {
            choose(&ts, name, kind).map(|t| t["prefix"].as_str().unwrap().to_string())
        };
        assert_eq!(
            pick("prod/web/app", CREATE_ON_PUSH).as_deref(),
            Some("prod/web")
        );
        assert_eq!(pick("prod/api", CREATE_ON_PUSH).as_deref(), Some("prod"));
        assert_eq!(
            pick("production/x", CREATE_ON_PUSH).as_deref(),
            Some("ROOT")
        );
        assert_eq!(pick("prod/web/app", REPLICATION).as_deref(), Some("prod"));
        assert_eq!(
            pick("hub/library/x", PULL_THROUGH_CACHE).as_deref(),
            Some("hub")
        );
        assert_eq!(pick("other", PULL_THROUGH_CACHE), None);
    }
}
