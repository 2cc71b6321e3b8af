//! ECR's repository behaviour on top of the distribution API: repositories
//! with settings, tag mutability (with exclusion filters), and the images
//! of a repository as ECR describes them.

use crate::error::{Code, Error};

/// ECR's `imageTagMutability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TagMutability {
    /// Tags may be moved to other images.
    Mutable,
    /// A tag, once pushed, always names the same image.
    Immutable,
    /// Mutable, except tags matching the filters.
    MutableWithExclusion,
    /// Immutable, except tags matching the filters.
    ImmutableWithExclusion,
}

impl TagMutability {
    /// The ECR name.
    pub fn as_str(self) -> &'static str {
        match self {
            TagMutability::Mutable => "MUTABLE",
            TagMutability::Immutable => "IMMUTABLE",
            TagMutability::MutableWithExclusion => "MUTABLE_WITH_EXCLUSION",
            TagMutability::ImmutableWithExclusion => "IMMUTABLE_WITH_EXCLUSION",
        }
    }

    /// Parses an ECR name.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "MUTABLE" => Ok(TagMutability::Mutable),
            "IMMUTABLE" => Ok(TagMutability::Immutable),
            "MUTABLE_WITH_EXCLUSION" => Ok(TagMutability::MutableWithExclusion),
            "IMMUTABLE_WITH_EXCLUSION" => Ok(TagMutability::ImmutableWithExclusion),
            other => Err(format!(
                "unknown tag mutability {other:?} (expected MUTABLE, IMMUTABLE, MUTABLE_WITH_EXCLUSION or IMMUTABLE_WITH_EXCLUSION)"
            )),
        }
    }
}

/// A repository's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositorySettings {
    /// Whether tags can be moved.
    pub tag_mutability: TagMutability,
    /// Wildcard filters (`*` matches any run of characters) for the
    /// `*_WITH_EXCLUSION` mutabilities.
    pub mutability_filters: Vec<String>,
    /// Validate every pushed image and record the findings.
    pub scan_on_push: bool,
}

impl Default for RepositorySettings {
    fn default() -> Self {
        RepositorySettings {
            tag_mutability: TagMutability::Mutable,
            mutability_filters: Vec::new(),
            scan_on_push: false,
        }
    }
}

impl RepositorySettings {
    /// Checks the settings are coherent (filters only with the exclusion
    /// forms, and valid).
    pub fn validate(&self) -> Result<(), String> {
        let exclusion = matches!(
            self.tag_mutability,
            TagMutability::MutableWithExclusion | TagMutability::ImmutableWithExclusion
        );
        if exclusion && self.mutability_filters.is_empty() {
            return Err(format!(
                "{} needs at least one filter",
                self.tag_mutability.as_str()
            ));
        }
        if !exclusion && !self.mutability_filters.is_empty() {
            return Err(format!("{} takes no filters", self.tag_mutability.as_str()));
        }
        for f in &self.mutability_filters {
            if f.is_empty()
                || f.len() > 128
                || !f
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | '_' | '.' | '-'))
            {
                return Err(format!(
                    "invalid tag filter {f:?} (letters, digits, _ . - and * only)"
                ));
            }
        }
        Ok(())
    }

    /// May `tag` be moved from the image it names to another?
    pub fn tag_is_mutable(&self, tag: &str) -> bool {
        let excluded = self
            .mutability_filters
            .iter()
            .any(|f| wildcard_match(f, tag));
        match self.tag_mutability {
            TagMutability::Mutable => true,
            TagMutability::Immutable => false,
            TagMutability::MutableWithExclusion => !excluded,
            TagMutability::ImmutableWithExclusion => excluded,
        }
    }
}

/// A repository, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// Its name.
    pub name: String,
    /// When it was created (seconds since the epoch).
    pub created_at: i64,
    /// Its settings.
    pub settings: RepositorySettings,
    /// Its lifecycle policy (ECR JSON), if any.
    pub lifecycle_policy: Option<String>,
    /// The prefix of the repository creation template it was made from,
    /// if one applied.
    pub template: Option<String>,
}

/// An image of a repository: a manifest with its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The manifest digest.
    pub digest: String,
    /// Its tags, sorted.
    pub tags: Vec<String>,
    /// The manifest's media type.
    pub media_type: String,
    /// The manifest's artifact type, or its config's media type.
    pub artifact_type: Option<String>,
    /// The size of the manifest and everything it references.
    pub size: u64,
    /// When it was pushed (seconds since the epoch).
    pub pushed_at: i64,
    /// The manifest it refers to (signatures, scan reports, SBOMs).
    pub subject: Option<String>,
}

/// `*` matches any run of characters (including none); the rest literally.
pub fn wildcard_match(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

/// The error an immutable tag gives when pushed over, as ECR words it.
pub(crate) fn tag_already_exists(tag: &str, repo: &str) -> Error {
    Error::new(
        Code::Denied,
        format!(
            "The image tag '{tag}' already exists in the '{repo}' repository and cannot be overwritten because the tag is immutable."
        ),
    )
    .with_status(http::StatusCode::BAD_REQUEST)
    .with_code_name("TAG_INVALID")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("prod*", "prod-1"));
        assert!(wildcard_match("*-rc", "v1-rc"));
        assert!(wildcard_match("v*.*", "v1.2"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("latest", "latest"));
        assert!(!wildcard_match("latest", "latest2"));
        assert!(!wildcard_match("prod*", "pro"));
        assert!(!wildcard_match("a*b*c", "acb"));
    }

    #[test]
    fn mutability_with_exclusions() {
        let s = |m, f: &[&str]| RepositorySettings {
            tag_mutability: m,
            mutability_filters: f.iter().map(|x| x.to_string()).collect(),
            scan_on_push: true,
        };
        assert!(s(TagMutability::Mutable, &[]).tag_is_mutable("x"));
        assert!(!s(TagMutability::Immutable, &[]).tag_is_mutable("x"));
        let imm_except_latest = s(TagMutability::ImmutableWithExclusion, &["latest", "dev-*"]);
        assert!(imm_except_latest.tag_is_mutable("latest"));
        assert!(imm_except_latest.tag_is_mutable("dev-42"));
        assert!(!imm_except_latest.tag_is_mutable("v1.0"));
        let mut_except_release = s(TagMutability::MutableWithExclusion, &["v*"]);
        assert!(!mut_except_release.tag_is_mutable("v1"));
        assert!(mut_except_release.tag_is_mutable("latest"));
        assert!(
            s(TagMutability::ImmutableWithExclusion, &[])
                .validate()
                .is_err()
        );
        assert!(s(TagMutability::Immutable, &["x"]).validate().is_err());
        assert!(
            s(TagMutability::MutableWithExclusion, &["bad filter"])
                .validate()
                .is_err()
        );
    }
}
