//! What the control plane keeps about ECR repositories and the registry
//! beyond the registry's own records (`api/ecr_meta.rs` answers for it).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The stored document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EcrMeta {
    /// Repository → its tags, in the order given.
    #[serde(default)]
    pub tags: BTreeMap<String, Vec<(String, String)>>,
    /// Repository → its policy text.
    #[serde(default)]
    pub policies: BTreeMap<String, String>,
    #[serde(default)]
    pub registry_policy: Option<String>,
    /// Scan-on-push filters (WILDCARD) of the registry's BASIC scanning.
    #[serde(default)]
    pub scan_on_push_filters: Vec<String>,
    /// ECR account settings set (GetAccountSetting answers defaults for
    /// the rest).
    #[serde(default)]
    pub account: BTreeMap<String, String>,
    /// The registry's replication rules (PutReplicationConfiguration).
    #[serde(default)]
    pub replication: Vec<ReplicationRule>,
    /// `REPO@DIGEST` → how its copy to each destination went.
    #[serde(default)]
    pub replicated: BTreeMap<String, Vec<ReplicationStatus>>,
    /// Repositories made from a creation template whose policy and tags
    /// have been given to them.
    #[serde(default)]
    pub templated: std::collections::BTreeSet<String>,
}

/// A replication rule, as ECR's API shapes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicationRule {
    pub destinations: Vec<Destination>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repository_filters: Vec<RepositoryFilter>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    pub region: String,
    pub registry_id: String,
}

impl Destination {
    /// `REGION/ACCOUNT`, as `--replication-peer` names it.
    pub fn key(&self) -> String {
        format!("{}/{}", self.region, self.registry_id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepositoryFilter {
    pub filter: String,
    /// PREFIX_MATCH.
    pub filter_type: String,
}

impl ReplicationRule {
    /// Does the rule replicate repository `name`? (No filter: every one.)
    pub fn matches(&self, name: &str) -> bool {
        self.repository_filters.is_empty()
            || self
                .repository_filters
                .iter()
                .any(|f| name.starts_with(&f.filter))
    }
}

impl ReplicationStatus {
    /// Whether this is the copy to `d`.
    pub fn is_for(&self, d: &Destination) -> bool {
        self.region == d.region && self.registry_id == d.registry_id
    }
}

/// How an image's copy to one destination went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationStatus {
    pub region: String,
    pub registry_id: String,
    /// COMPLETE or FAILED (IN_PROGRESS is what has no record yet).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_code: Option<String>,
    /// The tags the copy carried.
    #[serde(default)]
    pub tags: Vec<String>,
}
