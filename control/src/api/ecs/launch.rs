//! How a RunTask or CreateService/UpdateService request says where its
//! tasks run: `launchType`, or a `capacityProviderStrategy`, or neither
//! (the cluster's default strategy, else EC2), and a FARGATE launch's
//! `platformVersion`.

use crate::api::protocol::json::parse;
use crate::core::capacity::{self, StrategyItem};
use crate::core::model::Cluster;
use crate::core::tasks::check_launch;
use crate::error::ApiError;
use serde_json::Value;

/// Where a request's tasks run.
pub(crate) struct LaunchChoice {
    pub launch_type: String,
    /// Empty: by launch type alone.
    pub providers: Vec<StrategyItem>,
    /// FARGATE launches: as given, `LATEST` when not.
    pub platform_version: Option<String>,
}

/// A request's `capacityProviderStrategy`; `None` when absent.
pub(crate) fn strategy(body: &Value) -> Result<Option<Vec<StrategyItem>>, ApiError> {
    match body.get("capacityProviderStrategy") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => parse(v).map(Some),
    }
}

/// Decides a request's launch for `cluster`, as ECS does.
pub(crate) fn choose(body: &Value, cluster: &Cluster) -> Result<LaunchChoice, ApiError> {
    let launch_type = body.get("launchType").and_then(Value::as_str);
    let given = strategy(body)?.filter(|s| !s.is_empty());
    if launch_type.is_some() && given.is_some() {
        return Err(ApiError::invalid_parameter(
            "Specifying both a launchType and capacityProviderStrategy is not supported.",
        ));
    }
    let providers = match (launch_type, given) {
        (Some(_), _) => Vec::new(),
        (None, Some(s)) => {
            capacity::check_strategy(&s, &cluster.capacity_providers)?;
            s
        }
        (None, None) => cluster.default_capacity_provider_strategy.clone(),
    };
    let launch_type = match launch_type {
        Some(l) => l.to_string(),
        None if !providers.is_empty() => "FARGATE".into(),
        None => "EC2".into(),
    };
    check_launch(&launch_type, None, false)?;
    let platform_version = capacity::platform_version(
        body.get("platformVersion").and_then(Value::as_str),
        launch_type == "FARGATE",
    )?;
    Ok(LaunchChoice {
        launch_type,
        providers,
        platform_version,
    })
}
