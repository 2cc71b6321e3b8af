//! ECS account settings (PutAccountSetting, PutAccountSettingDefault,
//! ListAccountSettings, DeleteAccountSetting): what each may be set to
//! here and why, and the stored document.
//!
//! Every setting ECS has is listed and answered. A value skiff cannot
//! honour is refused with the reason; one whose effect skiff has by
//! nature (no ENI limit, no IAM to deny tagging, no retirements or
//! maintenance windows) is stored and listed.

use crate::error::ApiError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The stored settings: the account's defaults, and the account root's
/// own (skiff has no IAM users or roles to set others for).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSettings {
    #[serde(default)]
    pub defaults: BTreeMap<String, String>,
    #[serde(default)]
    pub own: BTreeMap<String, String>,
}

/// A setting: its name, AWS's default, the values it takes, and why any
/// other value ECS knows is refused here.
struct Rule {
    name: &'static str,
    default: &'static str,
    takes: &'static [&'static str],
    refused: &'static [&'static str],
    why: &'static str,
}

const RULES: &[Rule] = &[
    Rule {
        name: "serviceLongArnFormat",
        default: "enabled",
        takes: &["enabled"],
        refused: &["disabled"],
        why: "skiff makes long ARNs only (ECS retired the short format)",
    },
    Rule {
        name: "taskLongArnFormat",
        default: "enabled",
        takes: &["enabled"],
        refused: &["disabled"],
        why: "skiff makes long ARNs only (ECS retired the short format)",
    },
    Rule {
        name: "containerInstanceLongArnFormat",
        default: "enabled",
        takes: &["enabled"],
        refused: &["disabled"],
        why: "skiff makes long ARNs only (ECS retired the short format)",
    },
    Rule {
        name: "awsvpcTrunking",
        default: "disabled",
        takes: &["enabled", "disabled"],
        refused: &[],
        why: "",
    },
    Rule {
        name: "containerInsights",
        default: "disabled",
        takes: &["disabled"],
        refused: &["enabled", "enhanced"],
        why: "skiff publishes no Container Insights metrics",
    },
    Rule {
        name: "fargateFIPSMode",
        default: "disabled",
        takes: &["disabled"],
        refused: &["enabled"],
        why: "skiff has no FIPS 140 validated mode",
    },
    Rule {
        name: "tagResourceAuthorization",
        default: "on",
        takes: &["on", "off"],
        refused: &[],
        why: "",
    },
    Rule {
        name: "fargateTaskRetirementWaitPeriod",
        default: "7",
        takes: &["0", "7", "14"],
        refused: &[],
        why: "",
    },
    Rule {
        name: "guardDutyActivate",
        default: "off",
        takes: &["off"],
        refused: &["on"],
        why: "there is no GuardDuty runtime monitoring here",
    },
    Rule {
        name: "defaultLogDriverMode",
        default: "non-blocking",
        takes: &["blocking", "non-blocking"],
        refused: &[],
        why: "",
    },
    Rule {
        name: "fargateEventWindows",
        default: "disabled",
        takes: &["enabled", "disabled"],
        refused: &[],
        why: "",
    },
];

fn rule(name: &str) -> Result<&'static Rule, ApiError> {
    RULES.iter().find(|r| r.name == name).ok_or_else(|| {
        ApiError::invalid_parameter(format!(
            "{name} is not an account setting: ECS's are {}.",
            RULES.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
        ))
    })
}

/// Checks `value` for setting `name`.
pub(crate) fn check(name: &str, value: &str) -> Result<(), ApiError> {
    let r = rule(name)?;
    if r.takes.contains(&value) {
        return Ok(());
    }
    if r.refused.contains(&value) {
        return Err(ApiError::invalid_parameter(format!(
            "{name} {value} is not supported by skiff: {}.",
            r.why
        )));
    }
    Err(ApiError::invalid_parameter(format!(
        "{value} is not a valid value for {name}: use {}.",
        r.takes
            .iter()
            .chain(r.refused)
            .copied()
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Every setting's name, in ECS's order.
pub(crate) fn names() -> impl Iterator<Item = &'static str> {
    RULES.iter().map(|r| r.name)
}

impl AccountSettings {
    /// The value in effect for the account root: its own, the account's
    /// default, else AWS's; and whether it was set (`user`) or not
    /// (`aws_managed`).
    pub(crate) fn effective(&self, name: &str) -> (String, &'static str) {
        if let Some(v) = self.own.get(name) {
            return (v.clone(), "user");
        }
        if let Some(v) = self.defaults.get(name) {
            return (v.clone(), "user");
        }
        let default = RULES
            .iter()
            .find(|r| r.name == name)
            .map_or("", |r| r.default);
        (default.to_string(), "aws_managed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_answered_and_refusals_say_why() {
        for n in names() {
            let (v, kind) = AccountSettings::default().effective(n);
            check(n, &v).unwrap_or_else(|e| panic!("{n}'s default {v} is refused: {e}"));
            assert_eq!(kind, "aws_managed");
        }
        let e = check("serviceLongArnFormat", "disabled").unwrap_err();
        assert!(e.message.contains("long ARNs only"), "{}", e.message);
        let e = check("awsvpcTrunking", "maybe").unwrap_err();
        assert!(e.message.contains("use enabled, disabled"), "{}", e.message);
        assert!(check("nope", "on").is_err());
        let mut s = AccountSettings::default();
        s.defaults.insert("awsvpcTrunking".into(), "enabled".into());
        assert_eq!(s.effective("awsvpcTrunking"), ("enabled".into(), "user"));
    }
}
