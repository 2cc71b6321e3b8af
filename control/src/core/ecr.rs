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
}
