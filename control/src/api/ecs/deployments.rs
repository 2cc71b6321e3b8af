//! Service deployments and revisions: ListServiceDeployments,
//! DescribeServiceDeployments, DescribeServiceRevisions and
//! StopServiceDeployment (a rollback to the last completed deployment),
//! from each service's deployment history (`Service::history`).

use super::services::{find_service, save, service_not_found};
use crate::api::protocol::json::{required, string_list};
use crate::core::Core;
use crate::core::clusters::active_cluster;
use crate::core::model::{Failure, now};
use crate::core::services::{DeploymentRecord, Service, deployment_id, failure_threshold, live};
use crate::core::state::State;
use crate::error::ApiError;
use serde_json::{Value, json};

/// The part of a deployment id (`ecs-svc/123`) its ARNs end with.
fn suffix(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

/// `arn:...:service/C/S` → `arn:...:KIND/C/S/SUFFIX`.
pub(crate) fn arn_of(svc: &Service, kind: &str, id: &str) -> String {
    format!(
        "{}/{}",
        svc.service_arn
            .replacen(":service/", &format!(":{kind}/"), 1),
        suffix(id)
    )
}

/// The service and record an ARN of `kind` names.
fn find<'a>(
    state: &'a State,
    arn: &str,
    kind: &str,
) -> Option<(&'a Service, &'a DeploymentRecord)> {
    let rest = arn.split_once(&format!(":{kind}/"))?.1;
    let mut parts = rest.splitn(3, '/');
    let (cluster, service, id) = (parts.next()?, parts.next()?, parts.next()?);
    let svc = state
        .services
        .get(&format!("{cluster}/{service}"))
        .map(|e| &e.value)?;
    let record = svc.history.iter().find(|r| suffix(&r.id) == id)?;
    Some((svc, record))
}

/// (requested, running, pending) tasks of a deployment.
fn counts(state: &State, svc: &Service, id: &str) -> (u32, usize, usize) {
    let tasks: Vec<_> = state
        .tasks_of_service(&svc.key())
        .filter(|t| live(t) && t.started_by.as_deref() == Some(id))
        .collect();
    let running = tasks.iter().filter(|t| t.last_status == "RUNNING").count();
    let primary = svc.deployments.first().is_some_and(|d| d.id == id);
    let requested = if primary { svc.desired_count } else { 0 };
    (requested, running, tasks.len() - running)
}

fn summary(svc: &Service, r: &DeploymentRecord) -> Value {
    let mut v = json!({
        "serviceDeploymentArn": arn_of(svc, "service-deployment", &r.id),
        "serviceArn": svc.service_arn,
        "clusterArn": svc.cluster_arn,
        "createdAt": r.created_at,
        "startedAt": r.created_at,
        "targetServiceRevisionArn": arn_of(svc, "service-revision", &r.id),
        "status": r.status,
    });
    if let Some(f) = r.finished_at {
        v["finishedAt"] = json!(f);
    }
    v
}

fn revision_ref(state: &State, svc: &Service, id: &str) -> Value {
    let (requested, running, pending) = counts(state, svc, id);
    json!({
        "arn": arn_of(svc, "service-revision", id),
        "requestedTaskCount": requested,
        "runningTaskCount": running,
        "pendingTaskCount": pending,
    })
}

pub(crate) async fn list(core: &Core, body: &Value) -> Result<Value, ApiError> {
    let given = required(body, "service")?;
    let statuses = string_list(body, "status").unwrap_or_default();
    let after = body.pointer("/createdAt/after").and_then(Value::as_f64);
    let before = body.pointer("/createdAt/before").and_then(Value::as_f64);
    let max = body.get("maxResults").and_then(Value::as_u64).unwrap_or(20);
    if !(1..=100).contains(&max) {
        return Err(ApiError::invalid_parameter(
            "maxResults must be between 1 and 100.",
        ));
    }
    let start: usize = match body.get("nextToken").and_then(Value::as_str) {
        Some(t) => t
            .parse()
            .map_err(|_| ApiError::invalid_parameter("The nextToken is invalid."))?,
        None => 0,
    };
    let state = core.state.lock().await;
    let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?;
    let svc = find_service(&state, &cluster.cluster_name, given).ok_or_else(service_not_found)?;
    let all: Vec<Value> = svc
        .history
        .iter()
        .rev()
        .filter(|r| statuses.is_empty() || statuses.contains(&r.status))
        .filter(|r| after.is_none_or(|a| r.created_at >= a))
        .filter(|r| before.is_none_or(|b| r.created_at <= b))
        .map(|r| summary(svc, r))
        .collect();
    let page: Vec<Value> = all.iter().skip(start).take(max as usize).cloned().collect();
    let mut out = json!({ "serviceDeployments": page });
    if start + page.len() < all.len() {
        out["nextToken"] = json!((start + page.len()).to_string());
    }
    Ok(out)
}

fn arns(body: &Value, name: &str) -> Result<Vec<String>, ApiError> {
    let given = string_list(body, name)?;
    if given.is_empty() || given.len() > 20 {
        return Err(ApiError::invalid_parameter(format!(
            "{name} must name 1 to 20 ARNs."
        )));
    }
    Ok(given)
}

pub(crate) async fn describe(core: &Core, body: &Value) -> Result<Value, ApiError> {
    let given = arns(body, "serviceDeploymentArns")?;
    let state = core.state.lock().await;
    let (mut found, mut failures) = (Vec::new(), Vec::new());
    for arn in given {
        let Some((svc, r)) = find(&state, &arn, "service-deployment") else {
            failures.push(Failure::missing(arn));
            continue;
        };
        let mut v = summary(svc, r);
        v["updatedAt"] = json!(r.updated_at);
        if let Some(reason) = &r.status_reason {
            v["statusReason"] = json!(reason);
        }
        if let Some(s) = r.stopped_at {
            v["stoppedAt"] = json!(s);
        }
        v["targetServiceRevision"] = revision_ref(&state, svc, &r.id);
        v["sourceServiceRevisions"] = json!(
            r.source
                .iter()
                .map(|s| revision_ref(&state, svc, s))
                .collect::<Vec<_>>()
        );
        let breaker = svc.deployment_configuration.deployment_circuit_breaker;
        let failed = svc
            .deployments
            .iter()
            .find(|d| d.id == r.id)
            .map_or(0, |d| d.failed_tasks);
        v["deploymentConfiguration"] = json!(svc.deployment_configuration);
        v["deploymentCircuitBreaker"] = json!({
            "status": if !breaker.enable { "DISABLED" } else if r.status == "ROLLBACK_IN_PROGRESS" || r.status == "ROLLBACK_SUCCESSFUL" || r.status == "ROLLBACK_FAILED" { "TRIGGERED" } else { "MONITORING" },
            "failureCount": failed,
            "threshold": failure_threshold(svc.desired_count),
        });
        if r.status.starts_with("ROLLBACK") {
            let to = svc
                .history
                .iter()
                .find(|x| x.source.as_deref() == Some(&r.id));
            if let Some(to) = to {
                v["rollback"] = json!({
                    "reason": r.status_reason,
                    "startedAt": to.created_at,
                    "serviceRevisionArn": arn_of(svc, "service-revision", &to.id),
                });
            }
        }
        found.push(v);
    }
    Ok(json!({ "serviceDeployments": found, "failures": failures }))
}

pub(crate) async fn describe_revisions(core: &Core, body: &Value) -> Result<Value, ApiError> {
    let given = arns(body, "serviceRevisionArns")?;
    let state = core.state.lock().await;
    let (mut found, mut failures) = (Vec::new(), Vec::new());
    for arn in given {
        let Some((svc, r)) = find(&state, &arn, "service-revision") else {
            failures.push(Failure::missing(arn));
            continue;
        };
        let mut v = r.revision.clone();
        v["serviceRevisionArn"] = json!(arn_of(svc, "service-revision", &r.id));
        v["serviceArn"] = json!(svc.service_arn);
        v["clusterArn"] = json!(svc.cluster_arn);
        found.push(v);
    }
    Ok(json!({ "serviceRevisions": found, "failures": failures }))
}

/// StopServiceDeployment: ROLLBACK returns the service to its last
/// completed deployment.
pub(crate) async fn stop(core: &Core, body: &Value) -> Result<Value, ApiError> {
    let arn = required(body, "serviceDeploymentArn")?.to_string();
    match body.get("stopType").and_then(Value::as_str) {
        None | Some("ROLLBACK") => {}
        Some(other) => {
            return Err(ApiError::invalid_parameter(format!(
                "stopType {other} is not supported by skiff: ROLLBACK returns the service to its last completed deployment"
            )));
        }
    }
    let mut state = core.state.lock().await;
    let (svc, record) = find(&state, &arn, "service-deployment").ok_or_else(|| {
        ApiError::not_found(
            "ServiceDeploymentNotFoundException",
            format!("The service deployment {arn} does not exist."),
        )
    })?;
    let (mut svc, id) = (svc.clone(), record.id.clone());
    if record.status != "IN_PROGRESS" || svc.deployments.first().is_none_or(|d| d.id != id) {
        return Err(ApiError::not_found(
            "ConflictException",
            format!(
                "The service deployment is {}: only the one in progress can be stopped.",
                record.status
            ),
        ));
    }
    let back = svc.last_completed.clone().ok_or_else(|| {
        ApiError::not_found(
            "ConflictException",
            "The service has no completed deployment to roll back to.",
        )
    })?;
    let at = now();
    svc.task_definition = back.task_definition.clone();
    svc.new_deployment(
        at,
        deployment_id(core),
        &format!(
            "Rolling back to {} (StopServiceDeployment).",
            back.deployment_id
        ),
    );
    svc.record(
        &id,
        "ROLLBACK_IN_PROGRESS",
        "Stopped by StopServiceDeployment; rolling back.",
        at,
    );
    svc.event(
        at,
        format!(
            "(service {}) rolling back to deployment {}.",
            svc.service_name, back.deployment_id
        ),
    );
    save(core, &mut state, svc).await?;
    Ok(json!({ "serviceDeploymentArn": arn }))
}
