//! Capacity providers and Fargate platform versions, as ECS has them.
//!
//! skiff's capacity providers are ECS's two built-in ones, `FARGATE` and
//! `FARGATE_SPOT`: a strategy naming them launches FARGATE tasks (on the
//! agents that lend the machine to Fargate tasks), each labelled with the
//! provider it was counted against (`capacityProviderName`). A spot task
//! here is never interrupted. Providers backed by an EC2 Auto Scaling
//! group have no meaning on skiff — machines join with `skiff agent` — so
//! CreateCapacityProvider is refused (see api/catalog.rs).
//!
//! A strategy splits tasks as ECS documents: the one provider with a
//! `base` gets that many first, the rest go by `weight`.

use crate::error::ApiError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The capacity providers every cluster may use.
pub const BUILT_IN: [&str; 2] = ["FARGATE", "FARGATE_SPOT"];

/// The Fargate platform version `LATEST` is, for Linux.
pub const LATEST_PLATFORM: &str = "1.4.0";

/// The Linux platform versions Fargate offers.
const PLATFORMS: [&str; 2] = ["1.4.0", "1.3.0"];

/// One entry of a `capacityProviderStrategy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StrategyItem {
    pub capacity_provider: String,
    #[serde(default)]
    pub weight: u32,
    #[serde(default)]
    pub base: u32,
}

/// Checks a strategy against ECS's rules and the providers `cluster`
/// has (`associated`).
pub(crate) fn check_strategy(
    items: &[StrategyItem],
    associated: &[String],
) -> Result<(), ApiError> {
    if items.len() > 20 {
        return Err(ApiError::invalid_parameter(
            "A capacity provider strategy can have at most 20 capacity providers.",
        ));
    }
    let mut seen = Vec::new();
    for i in items {
        if seen.contains(&i.capacity_provider.as_str()) {
            return Err(ApiError::invalid_parameter(format!(
                "Capacity provider {} appears more than once in the strategy.",
                i.capacity_provider
            )));
        }
        seen.push(&i.capacity_provider);
        if i.weight > 1000 {
            return Err(ApiError::invalid_parameter(format!(
                "The weight of capacity provider {} must be between 0 and 1000, not {}.",
                i.capacity_provider, i.weight
            )));
        }
        if i.base > 100_000 {
            return Err(ApiError::invalid_parameter(format!(
                "The base of capacity provider {} must be between 0 and 100000, not {}.",
                i.capacity_provider, i.base
            )));
        }
        if !BUILT_IN.contains(&i.capacity_provider.as_str()) {
            return Err(ApiError::invalid_parameter(format!(
                "The specified capacity provider {} does not exist: skiff's capacity providers are FARGATE and FARGATE_SPOT.",
                i.capacity_provider
            )));
        }
        if !associated.contains(&i.capacity_provider) {
            return Err(ApiError::invalid_parameter(
                "The specified capacity provider strategy cannot contain a capacity provider that is not associated with the cluster. Associate the capacity provider with the cluster or specify a valid capacity provider and try again.",
            ));
        }
    }
    if items.iter().filter(|i| i.base > 0).count() > 1 {
        return Err(ApiError::invalid_parameter(
            "Only one capacity provider in a strategy can have a base defined.",
        ));
    }
    if !items.is_empty() && items.iter().all(|i| i.weight == 0) {
        return Err(ApiError::invalid_parameter(
            "At least one capacity provider in a strategy must have a weight greater than zero.",
        ));
    }
    Ok(())
}

/// The providers a cluster may associate: FARGATE and FARGATE_SPOT.
pub(crate) fn check_associated(providers: &[String]) -> Result<(), ApiError> {
    if let Some(p) = providers.iter().find(|p| !BUILT_IN.contains(&p.as_str())) {
        return Err(ApiError::invalid_parameter(format!(
            "The specified capacity provider {p} does not exist: skiff's capacity providers are FARGATE and FARGATE_SPOT (machines join with skiff agent, not Auto Scaling groups)."
        )));
    }
    Ok(())
}

/// The provider the next task goes to, given how many tasks each already
/// has: the base first, then the one furthest below its weighted share.
pub(crate) fn pick<'a>(items: &'a [StrategyItem], counts: &HashMap<String, u32>) -> &'a str {
    let count = |i: &StrategyItem| counts.get(&i.capacity_provider).copied().unwrap_or(0);
    if let Some(b) = items.iter().find(|i| i.base > 0 && count(i) < i.base) {
        return &b.capacity_provider;
    }
    items
        .iter()
        .filter(|i| i.weight > 0)
        .min_by(|a, b| {
            // Beyond its base, count(a)/weight(a) against count(b)/weight(b).
            let share = |i: &StrategyItem| u64::from(count(i).saturating_sub(i.base));
            (share(a) * u64::from(b.weight)).cmp(&(share(b) * u64::from(a.weight)))
        })
        .map_or("FARGATE", |i| i.capacity_provider.as_str())
}

/// A request's `platformVersion`, given its launch type: `None` for EC2
/// tasks, the version (`LATEST` kept as given) for FARGATE ones.
pub(crate) fn platform_version(
    given: Option<&str>,
    fargate: bool,
) -> Result<Option<String>, ApiError> {
    match (given, fargate) {
        (None, false) => Ok(None),
        (Some(v), false) => Err(ApiError::invalid_parameter(format!(
            "platformVersion {v} applies only to tasks launched on Fargate (launch type FARGATE or a FARGATE capacity provider)."
        ))),
        (None, true) => Ok(Some("LATEST".into())),
        (Some(v), true) if v == "LATEST" || PLATFORMS.contains(&v) => Ok(Some(v.to_string())),
        (Some(v), true) => Err(ApiError::invalid_parameter(format!(
            "Platform version {v} is not valid: Fargate's Linux platform versions are LATEST, {}.",
            PLATFORMS.join(", ")
        ))),
    }
}

/// The version a task runs: `LATEST` resolved.
pub(crate) fn resolved(version: &str) -> &str {
    if version == "LATEST" {
        LATEST_PLATFORM
    } else {
        version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(p: &str, weight: u32, base: u32) -> StrategyItem {
        StrategyItem {
            capacity_provider: p.into(),
            weight,
            base,
        }
    }

    #[test]
    fn base_first_then_by_weight() {
        let s = [item("FARGATE", 1, 2), item("FARGATE_SPOT", 3, 0)];
        let mut counts = HashMap::new();
        let mut order = Vec::new();
        for _ in 0..10 {
            let p = pick(&s, &counts).to_string();
            *counts.entry(p.clone()).or_insert(0) += 1;
            order.push(p);
        }
        assert_eq!(order[..2], ["FARGATE", "FARGATE"]);
        // The 8 beyond the base split 1:3.
        assert_eq!(counts["FARGATE"], 2 + 2);
        assert_eq!(counts["FARGATE_SPOT"], 6);
    }

    #[test]
    fn strategies_are_checked_as_ecs_checks_them() {
        let both = vec!["FARGATE".to_string(), "FARGATE_SPOT".to_string()];
        check_strategy(&[item("FARGATE", 1, 0)], &both).unwrap();
        let e = check_strategy(&[item("FARGATE", 1, 0)], &[]).unwrap_err();
        assert!(e.message.contains("not associated with the cluster"));
        let e = check_strategy(&[item("my-asg", 1, 0)], &both).unwrap_err();
        assert!(e.message.contains("my-asg does not exist"));
        let e = check_strategy(&[item("FARGATE", 0, 1)], &both).unwrap_err();
        assert!(e.message.contains("weight greater than zero"));
        let e = check_strategy(&[item("FARGATE", 1, 1), item("FARGATE_SPOT", 1, 1)], &both)
            .unwrap_err();
        assert!(e.message.contains("Only one capacity provider"));
        assert_eq!(
            platform_version(None, true).unwrap().as_deref(),
            Some("LATEST")
        );
        assert!(platform_version(Some("LATEST"), false).is_err());
        assert!(platform_version(Some("9.9.9"), true).is_err());
        assert_eq!(resolved("LATEST"), "1.4.0");
    }
}
