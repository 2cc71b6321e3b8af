//! ECS task definitions: RegisterTaskDefinition, DescribeTaskDefinition,
//! ListTaskDefinitions, ListTaskDefinitionFamilies,
//! DeregisterTaskDefinition, DeleteTaskDefinitions.

use crate::api::protocol::json::{includes, listed, required, string_list, to_value};
use crate::core::Core;
use crate::core::model::{Failure, arn, name_of, now};
use crate::core::state::Write;
use crate::core::taskdef::{self, TaskDefinition};
use crate::core::tasks::{DELETED, resolve_taskdef};
use crate::error::ApiError;
use serde_json::{Value, json};

/// A task definition as ECS shows it (its tags travel beside it).
pub(crate) fn taskdef_view(td: &TaskDefinition) -> Value {
    let mut v = to_value(td);
    if let Some(o) = v.as_object_mut() {
        o.remove("tags");
    }
    v
}

pub(crate) async fn register_taskdef(
    core: &Core,
    body: &Value,
    region: &str,
) -> Result<Value, ApiError> {
    let mut td = taskdef::parse_register(body)?;
    let mut state = core.state.lock().await;
    let revision = state
        .taskdefs
        .get(&td.family)
        .and_then(|f| f.keys().next_back().copied())
        .unwrap_or(0)
        + 1;
    td.revision = revision;
    td.task_definition_arn = arn(
        "ecs",
        region,
        &format!("task-definition/{}:{revision}", td.family),
    );
    td.registered_at = now();
    td.registered_by = Some(format!(
        "arn:aws:iam::{}:root",
        crate::core::model::account()
    ));
    state
        .apply(core.store.as_ref(), vec![Write::TaskDef(td.clone())])
        .await?;
    Ok(json!({ "taskDefinition": taskdef_view(&td), "tags": to_value(&td.tags) }))
}

pub(crate) async fn describe_taskdef(core: &Core, body: &Value) -> Result<Value, ApiError> {
    let given = required(body, "taskDefinition")?;
    let state = core.state.lock().await;
    let td = resolve_taskdef(&state, given, false)?;
    let mut out = json!({ "taskDefinition": taskdef_view(&td) });
    if includes(body, "TAGS") {
        out["tags"] = to_value(&td.tags);
    }
    Ok(out)
}

pub(crate) async fn list_taskdefs(core: &Core, body: &Value) -> Result<Value, ApiError> {
    let prefix = body.get("familyPrefix").and_then(Value::as_str);
    let status = body
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("ACTIVE");
    if !matches!(status, "ACTIVE" | "INACTIVE" | "DELETE_IN_PROGRESS") {
        return Err(ApiError::invalid_parameter(format!(
            "status must be ACTIVE, INACTIVE or DELETE_IN_PROGRESS, not {status:?}"
        )));
    }
    let desc = match body.get("sort").and_then(Value::as_str) {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(s) => {
            return Err(ApiError::invalid_parameter(format!(
                "sort must be ASC or DESC, not {s:?}"
            )));
        }
    };
    let state = core.state.lock().await;
    let mut arns: Vec<String> = state
        .taskdefs
        .iter()
        // ECS's familyPrefix matches the whole family name.
        .filter(|(f, _)| prefix.is_none_or(|p| p == f.as_str()))
        .flat_map(|(_, revs)| revs.values())
        .filter(|td| td.value.status == status)
        .map(|td| td.value.task_definition_arn.clone())
        .collect();
    if desc {
        arns.reverse();
    }
    listed(body, "taskDefinitionArns", arns)
}

pub(crate) async fn list_families(core: &Core, body: &Value) -> Result<Value, ApiError> {
    let prefix = body
        .get("familyPrefix")
        .and_then(Value::as_str)
        .unwrap_or("");
    let status = body
        .get("status")
        .and_then(Value::as_str)
        // Without a status ECS lists every family, active or not.
        .unwrap_or("ALL");
    if !matches!(status, "ACTIVE" | "INACTIVE" | "ALL") {
        return Err(ApiError::invalid_parameter(
            "status must be ACTIVE, INACTIVE or ALL",
        ));
    }
    let state = core.state.lock().await;
    let families: Vec<String> = state
        .taskdefs
        .iter()
        .filter(|(f, _)| f.starts_with(prefix))
        .filter(|(_, revs)| revs.values().any(|t| t.value.status != DELETED))
        .filter(|(_, revs)| {
            let active = revs.values().any(|t| t.value.status == "ACTIVE");
            match status {
                "ACTIVE" => active,
                "INACTIVE" => !active,
                _ => true,
            }
        })
        .map(|(f, _)| f.clone())
        .collect();
    listed(body, "families", families)
}

pub(crate) async fn deregister_taskdef(core: &Core, body: &Value) -> Result<Value, ApiError> {
    let given = required(body, "taskDefinition")?;
    if !name_of(given).contains(':') {
        return Err(ApiError::client(
            "A revision is required: family:revision or a full ARN.",
        ));
    }
    let mut state = core.state.lock().await;
    let mut td = resolve_taskdef(&state, given, false)?;
    if td.status == "ACTIVE" {
        td.status = "INACTIVE".into();
        td.deregistered_at = Some(now());
        state
            .apply(core.store.as_ref(), vec![Write::TaskDef(td.clone())])
            .await?;
    }
    Ok(json!({ "taskDefinition": taskdef_view(&td) }))
}

/// DeleteTaskDefinitions: INACTIVE revisions become DELETE_IN_PROGRESS,
/// still describable while tasks or services use them, and are gone once
/// nothing does (the retention pass).
pub(crate) async fn delete_taskdefs(
    core: &Core,
    body: &Value,
    region: &str,
) -> Result<Value, ApiError> {
    let given = string_list(body, "taskDefinitions")?;
    if given.is_empty() || given.len() > 10 {
        return Err(ApiError::invalid_parameter(
            "taskDefinitions must name 1 to 10 task definition revisions.",
        ));
    }
    let mut state = core.state.lock().await;
    let mut deleted = Vec::new();
    let mut failures = Vec::new();
    let mut writes = Vec::new();
    for g in given {
        let arn_of = || {
            if g.starts_with("arn:") {
                g.clone()
            } else {
                arn("ecs", region, &format!("task-definition/{g}"))
            }
        };
        if !name_of(&g).contains(':') {
            failures.push(Failure {
                arn: Some(arn_of()),
                reason: "A revision is required: family:revision or a full ARN.".into(),
                detail: None,
            });
            continue;
        }
        let mut td = match resolve_taskdef(&state, &g, false) {
            Ok(td) => td,
            Err(_) => {
                failures.push(Failure::missing(arn_of()));
                continue;
            }
        };
        if td.status == "ACTIVE" {
            failures.push(Failure {
                arn: Some(td.task_definition_arn.clone()),
                reason: "The specified task definition is still in ACTIVE status. Please deregister the target and try again.".into(),
                detail: None,
            });
            continue;
        }
        if td.status == "INACTIVE" {
            td.status = "DELETE_IN_PROGRESS".into();
            td.delete_requested_at = Some(now());
            writes.push(Write::TaskDef(td.clone()));
        }
        deleted.push(taskdef_view(&td));
    }
    state.apply(core.store.as_ref(), writes).await?;
    Ok(json!({ "taskDefinitions": deleted, "failures": failures }))
}
