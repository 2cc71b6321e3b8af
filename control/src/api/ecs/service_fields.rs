//! The fields CreateService and UpdateService take, parsed and checked as
//! ECS checks them: load balancers, service registries, the deployment
//! configuration, and what skiff cannot honour (refused by name).

use crate::api::protocol::json::{parse, refuse};
use crate::core::model::PlacementItem;
use crate::core::services::{
    CircuitBreaker, DeploymentConfiguration, ServiceLoadBalancer, ServiceRegistry,
};
use crate::core::state::State;
use crate::core::taskdef::TaskDefinition;
use crate::core::tasks::check_launch;
use crate::error::ApiError;
use serde::Deserialize;
use serde_json::Value;

/// A request's `loadBalancers`, checked as ECS does: each names a target
/// group that a load balancer uses, and a container port of the task
/// definition; ip target groups need awsvpc, instance ones bridge or host.
pub(crate) fn load_balancers(
    state: &State,
    body: &Value,
    td: &TaskDefinition,
) -> Result<Option<Vec<ServiceLoadBalancer>>, ApiError> {
    let lbs: Vec<ServiceLoadBalancer> = match body.get("loadBalancers") {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| ApiError::invalid_parameter(format!("loadBalancers is invalid: {e}")))?,
    };
    if lbs.len() > 5 {
        return Err(ApiError::invalid_parameter(
            "At most 5 load balancers can be given.",
        ));
    }
    for lb in &lbs {
        if lb.load_balancer_name.is_some() {
            return Err(ApiError::invalid_parameter(
                "loadBalancerName names a Classic Load Balancer, which skiff does not have: give a targetGroupArn",
            ));
        }
        let Some(tg) = state.elb.target_groups.get(&lb.target_group_arn) else {
            return Err(ApiError::invalid_parameter(format!(
                "Unable to find target group {}.",
                lb.target_group_arn
            )));
        };
        if state.elb.lbs_of_group(&tg.arn).is_empty() {
            return Err(ApiError::invalid_parameter(format!(
                "The target group {} does not have an associated load balancer.",
                tg.arn
            )));
        }
        let Some(c) = td
            .container_definitions
            .iter()
            .find(|c| c.name == lb.container_name)
        else {
            return Err(ApiError::invalid_parameter(format!(
                "The container {} does not exist in the task definition.",
                lb.container_name
            )));
        };
        if !c
            .port_mappings
            .iter()
            .any(|p| p.container_port == lb.container_port)
        {
            return Err(ApiError::invalid_parameter(format!(
                "The container {} did not have a container port {} defined.",
                lb.container_name, lb.container_port
            )));
        }
        let awsvpc = td.network_mode.as_deref() == Some("awsvpc");
        match (tg.target_type.as_str(), awsvpc) {
            ("ip", false) => {
                return Err(ApiError::invalid_parameter(format!(
                    "The target group {} has target type ip, which needs networkMode awsvpc.",
                    tg.arn
                )));
            }
            ("instance", true) => {
                return Err(ApiError::invalid_parameter(format!(
                    "The target group {} has target type instance, which is incompatible with networkMode awsvpc: use target type ip.",
                    tg.arn
                )));
            }
            _ => {}
        }
    }
    Ok(Some(lbs))
}

/// A request's `serviceRegistries`, checked: at most one, naming a
/// discovery service that exists, with A records, for an awsvpc
/// definition.
pub(crate) fn service_registries(
    state: &State,
    body: &Value,
    td: &TaskDefinition,
) -> Result<Option<Vec<ServiceRegistry>>, ApiError> {
    let regs: Vec<ServiceRegistry> = match body.get("serviceRegistries") {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            ApiError::invalid_parameter(format!("serviceRegistries is invalid: {e}"))
        })?,
    };
    if regs.len() > 1 {
        return Err(ApiError::invalid_parameter(
            "At most one service registry can be given.",
        ));
    }
    for r in &regs {
        let Some(found) = state
            .discovery
            .services
            .values()
            .find(|s| s.arn == r.registry_arn)
        else {
            return Err(ApiError::invalid_parameter(format!(
                "The service registry {} does not exist.",
                r.registry_arn
            )));
        };
        if r.port.is_some() || r.container_name.is_some() || r.container_port.is_some() {
            return Err(ApiError::invalid_parameter(
                "port, containerName and containerPort name SRV records, which skiff does not answer: register A records (awsvpc) with registryArn alone",
            ));
        }
        let dns = state
            .discovery
            .namespaces
            .get(&found.namespace_id)
            .is_some_and(|n| n.kind == "DNS_PRIVATE");
        if dns && td.network_mode.as_deref() != Some("awsvpc") {
            return Err(ApiError::invalid_parameter(
                "A service registry with A records needs networkMode awsvpc (tasks of other modes have no address of their own to register).",
            ));
        }
    }
    Ok(Some(regs))
}

/// Fields of CreateService/UpdateService skiff cannot honour yet.
pub(crate) const UNSUPPORTED_SERVICE_FIELDS: &[&str] = &[
    "serviceConnectConfiguration",
    "volumeConfigurations",
    "vpcLatticeConfigurations",
];

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CircuitBreakerReq {
    enable: bool,
    rollback: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeploymentConfigurationReq {
    deployment_circuit_breaker: Option<CircuitBreakerReq>,
    maximum_percent: Option<i64>,
    minimum_healthy_percent: Option<i64>,
}

/// Checks a request's deploymentConfiguration against ECS's rules and
/// fills in the defaults (REPLICA 200/100, DAEMON 100/0).
pub(crate) fn deployment_configuration(
    body: &Value,
    daemon: bool,
    current: Option<DeploymentConfiguration>,
) -> Result<DeploymentConfiguration, ApiError> {
    let Some(given) = body.get("deploymentConfiguration").filter(|v| !v.is_null()) else {
        return Ok(current.unwrap_or(DeploymentConfiguration {
            deployment_circuit_breaker: CircuitBreaker::default(),
            maximum_percent: if daemon { 100 } else { 200 },
            minimum_healthy_percent: if daemon { 0 } else { 100 },
        }));
    };
    refuse(
        given,
        &[
            "lifecycleHooks",
            "canaryConfiguration",
            "linearConfiguration",
        ],
    )?;
    // What DescribeServices returns may be sent back: alarms that are off,
    // the ROLLING strategy, no bake time.
    if given.pointer("/alarms/enable") == Some(&Value::Bool(true)) {
        return Err(ApiError::invalid_parameter(
            "deploymentConfiguration.alarms is not supported by skiff (there are no CloudWatch alarms): set enable to false",
        ));
    }
    only(given, "/strategy", "ROLLING", "")?;
    if given
        .get("bakeTimeInMinutes")
        .and_then(Value::as_i64)
        .is_some_and(|b| b != 0)
    {
        return Err(ApiError::invalid_parameter(
            "bakeTimeInMinutes applies to blue/green deployments, which skiff does not run",
        ));
    }
    // resetOnHealthyTask true is ECS's default and what skiff does.
    if given.pointer("/deploymentCircuitBreaker/resetOnHealthyTask") == Some(&Value::Bool(false)) {
        return Err(ApiError::invalid_parameter(
            "resetOnHealthyTask false is not supported by skiff: a task that runs healthy resets the failure count",
        ));
    }
    let req: DeploymentConfigurationReq = parse(given)?;
    let base = current.unwrap_or(DeploymentConfiguration {
        deployment_circuit_breaker: CircuitBreaker::default(),
        maximum_percent: if daemon { 100 } else { 200 },
        minimum_healthy_percent: if daemon { 0 } else { 100 },
    });
    let max = req
        .maximum_percent
        .unwrap_or(i64::from(base.maximum_percent));
    let min = req
        .minimum_healthy_percent
        .unwrap_or(i64::from(base.minimum_healthy_percent));
    if !(0..=100).contains(&min) {
        return Err(ApiError::invalid_parameter(format!(
            "minimumHealthyPercent must be between 0 and 100, not {min}."
        )));
    }
    if daemon && max != 100 {
        return Err(ApiError::invalid_parameter(
            "The maximumPercent of a DAEMON service must be 100.",
        ));
    }
    if !(100..=i64::from(i32::MAX)).contains(&max) {
        return Err(ApiError::invalid_parameter(format!(
            "maximumPercent must be at least 100, not {max}."
        )));
    }
    if max == 100 && min == 100 && !daemon {
        return Err(ApiError::invalid_parameter(
            "maximumPercent 100 with minimumHealthyPercent 100 leaves a deployment no room to replace a task: lower minimumHealthyPercent or raise maximumPercent.",
        ));
    }
    Ok(DeploymentConfiguration {
        deployment_circuit_breaker: req
            .deployment_circuit_breaker
            .map(|c| CircuitBreaker {
                enable: c.enable,
                rollback: c.rollback,
            })
            .unwrap_or(base.deployment_circuit_breaker),
        maximum_percent: max as u32,
        minimum_healthy_percent: min as u32,
    })
}

/// Refuses a string field (a JSON pointer into the request) holding
/// anything but the one value skiff runs.
pub(crate) fn only(body: &Value, pointer: &str, allowed: &str, why: &str) -> Result<(), ApiError> {
    match body.pointer(pointer).and_then(Value::as_str) {
        Some(v) if v != allowed => {
            let field = pointer.trim_start_matches('/').replace('/', ".");
            Err(ApiError::invalid_parameter(format!(
                "{field} {v} is not supported by skiff{why}: use {allowed}"
            )))
        }
        _ => Ok(()),
    }
}

pub(crate) fn refuse_unsupported(body: &Value) -> Result<(), ApiError> {
    refuse(body, UNSUPPORTED_SERVICE_FIELDS)?;
    only(
        body,
        "/availabilityZoneRebalancing",
        "DISABLED",
        " (one availability zone)",
    )
}

/// A request's `deploymentController`: `None` for ECS's rolling updates
/// (the default), `EXTERNAL` for task sets.
pub(crate) fn deployment_controller(body: &Value) -> Result<Option<String>, ApiError> {
    match body.pointer("/deploymentController/type") {
        None | Some(Value::Null)
            if body
                .get("deploymentController")
                .is_some_and(|c| !c.is_null()) =>
        {
            Err(ApiError::invalid_parameter(
                "deploymentController.type is required: ECS, CODE_DEPLOY or EXTERNAL",
            ))
        }
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(t)) if t == "ECS" => Ok(None),
        Some(Value::String(t)) if t == "EXTERNAL" => Ok(Some(t.clone())),
        Some(Value::String(t)) if t == "CODE_DEPLOY" => Err(ApiError::invalid_parameter(
            "deploymentController.type CODE_DEPLOY needs AWS CodeDeploy, which skiff does not have: use EXTERNAL and drive the blue/green task sets yourself (CreateTaskSet, UpdateServicePrimaryTaskSet, DeleteTaskSet), or ECS for rolling updates",
        )),
        Some(other) => Err(ApiError::invalid_parameter(format!(
            "deploymentController.type must be ECS, CODE_DEPLOY or EXTERNAL, not {other}"
        ))),
    }
}

/// The members a service with the EXTERNAL deployment controller takes
/// from its task sets, not from CreateService or UpdateService.
pub(crate) const TASK_SET_FIELDS: &[&str] = &[
    "taskDefinition",
    "launchType",
    "capacityProviderStrategy",
    "platformVersion",
    "networkConfiguration",
    "loadBalancers",
    "serviceRegistries",
    "forceNewDeployment",
];

/// Refuses, for an EXTERNAL service, what belongs to its task sets.
pub(crate) fn refuse_task_set_fields(body: &Value) -> Result<(), ApiError> {
    match TASK_SET_FIELDS
        .iter()
        .find(|f| body.get(**f).is_some_and(|v| !v.is_null()))
    {
        Some(f) => Err(ApiError::invalid_parameter(format!(
            "{f} is set per task set on a service with the EXTERNAL deployment controller: create a task set (CreateTaskSet) with it, and make it the primary one (UpdateServicePrimaryTaskSet)"
        ))),
        None => Ok(()),
    }
}

pub(crate) fn check_launch_type(given: Option<&str>) -> Result<String, ApiError> {
    let launch_type = given.unwrap_or("EC2");
    check_launch(launch_type, None, false)?;
    Ok(launch_type.to_string())
}

pub(crate) fn valid_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty()
        || name.len() > 255
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ApiError::invalid_parameter(format!(
            "Service name {name:?} is invalid: up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed."
        )));
    }
    Ok(())
}

pub(crate) fn grace_period(body: &Value) -> Result<Option<u32>, ApiError> {
    match body.get("healthCheckGracePeriodSeconds") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if (0..=2_147_483_647).contains(&n) => Ok(Some(n as u32)),
            _ => Err(ApiError::invalid_parameter(format!(
                "healthCheckGracePeriodSeconds must be a whole number of seconds from 0, not {v}."
            ))),
        },
    }
}

pub(crate) fn desired_count(body: &Value) -> Result<Option<u32>, ApiError> {
    match body.get("desiredCount") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if (0..=100_000).contains(&n) => Ok(Some(n as u32)),
            _ => Err(ApiError::invalid_parameter(format!(
                "desiredCount must be between 0 and 100000, not {v}."
            ))),
        },
    }
}

pub(crate) fn placement_items(
    body: &Value,
    field: &str,
) -> Result<Option<Vec<PlacementItem>>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => parse(v).map(Some),
    }
}

/// A boolean member of a request (absent: `None`).
pub(crate) fn flag(body: &Value, name: &str) -> Option<bool> {
    body.get(name).and_then(Value::as_bool)
}
