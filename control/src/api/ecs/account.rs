//! ECS account settings (see [`crate::core::account`]) and task scale-in
//! protection: PutAccountSetting, PutAccountSettingDefault,
//! ListAccountSettings, DeleteAccountSetting, UpdateTaskProtection,
//! GetTaskProtection.

use crate::api::protocol::json::{required, string_list};
use crate::core::Core;
use crate::core::account::{self, AccountSettings};
use crate::core::clusters::active_cluster;
use crate::core::model::{Failure, account as account_id, arn, now};
use crate::core::state::Write;
use crate::error::ApiError;
use serde_json::{Value, json};

/// The one principal settings can name here: the account root.
fn root() -> String {
    format!("arn:aws:iam::{}:root", account_id())
}

fn check_principal(body: &Value) -> Result<(), ApiError> {
    match body.get("principalArn").and_then(Value::as_str) {
        None => Ok(()),
        Some(p) if p == root() => Ok(()),
        Some(p) => Err(ApiError::invalid_parameter(format!(
            "principalArn {p} is not supported by skiff: it has no IAM users or roles, so settings apply to the account root ({})",
            root()
        ))),
    }
}

fn setting(name: &str, value: &str, kind: Option<&str>) -> Value {
    let mut v = json!({ "name": name, "value": value, "principalArn": root() });
    if let Some(k) = kind {
        v["type"] = json!(k);
    }
    v
}

/// PutAccountSetting, or PutAccountSettingDefault (`default`).
pub(crate) async fn put_setting(
    core: &Core,
    body: &Value,
    default: bool,
) -> Result<Value, ApiError> {
    let name = required(body, "name")?;
    let value = required(body, "value")?;
    if default && body.get("principalArn").is_some_and(|p| !p.is_null()) {
        return Err(ApiError::invalid_parameter(
            "PutAccountSettingDefault takes no principalArn: it sets the account's default.",
        ));
    }
    check_principal(body)?;
    account::check(name, value)?;
    let mut state = core.state.lock().await;
    let mut settings = state.account.clone();
    let map = if default {
        &mut settings.defaults
    } else {
        &mut settings.own
    };
    map.insert(name.to_string(), value.to_string());
    state
        .apply(
            core.store.as_ref(),
            vec![Write::Account(Box::new(settings))],
        )
        .await?;
    Ok(json!({ "setting": setting(name, value, Some("user")) }))
}

pub(crate) async fn delete_setting(core: &Core, body: &Value) -> Result<Value, ApiError> {
    let name = required(body, "name")?;
    check_principal(body)?;
    account::check(name, &AccountSettings::default().effective(name).0)?;
    let mut state = core.state.lock().await;
    let mut settings = state.account.clone();
    // The answer is the setting deleted (or, if none was set, what is in
    // effect).
    let deleted = settings.own.remove(name);
    state
        .apply(
            core.store.as_ref(),
            vec![Write::Account(Box::new(settings.clone()))],
        )
        .await?;
    let (value, kind) = match deleted {
        Some(v) => (v, "user"),
        None => settings.effective(name),
    };
    Ok(json!({ "setting": setting(name, &value, Some(kind)) }))
}

pub(crate) async fn list_settings(core: &Core, body: &Value) -> Result<Value, ApiError> {
    check_principal(body)?;
    let name = body.get("name").and_then(Value::as_str);
    if let Some(n) = name {
        account::check(n, &AccountSettings::default().effective(n).0)?;
    }
    let value = body.get("value").and_then(Value::as_str);
    let effective = body
        .get("effectiveSettings")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let state = core.state.lock().await;
    let settings: Vec<Value> = account::names()
        .filter(|n| name.is_none_or(|w| w == *n))
        .filter_map(|n| {
            let (v, kind) = state.account.effective(n);
            // Without effectiveSettings, only what was set.
            (effective || kind == "user").then_some((n, v, kind))
        })
        .filter(|(_, v, _)| value.is_none_or(|w| w == v))
        .map(|(n, v, kind)| setting(n, &v, Some(kind)))
        .collect();
    Ok(json!({ "settings": settings }))
}

/// ECS's bounds on a protection's length, in minutes (default 120).
const MAX_PROTECTION_MINUTES: i64 = 2880;

pub(crate) async fn update_task_protection(core: &Core, body: &Value) -> Result<Value, ApiError> {
    let given = string_list(body, "tasks")?;
    if given.is_empty() || given.len() > 10 {
        return Err(ApiError::invalid_parameter(
            "tasks must name 1 to 10 tasks.",
        ));
    }
    let enabled = body
        .get("protectionEnabled")
        .and_then(Value::as_bool)
        .ok_or_else(|| ApiError::invalid_parameter("protectionEnabled is required."))?;
    let minutes = body
        .get("expiresInMinutes")
        .and_then(Value::as_i64)
        .unwrap_or(120);
    if enabled && !(1..=MAX_PROTECTION_MINUTES).contains(&minutes) {
        return Err(ApiError::invalid_parameter(format!(
            "expiresInMinutes must be between 1 and {MAX_PROTECTION_MINUTES}, not {minutes}."
        )));
    }
    let mut state = core.state.lock().await;
    let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?.clone();
    let at = now();
    let mut writes = Vec::new();
    let mut protected = Vec::new();
    let mut failures = Vec::new();
    for g in &given {
        let Some(t) = super::tasks::find_task(&state, &cluster, g).cloned() else {
            failures.push(Failure::missing(task_arn(
                &cluster.cluster_name,
                g,
                &core.config.region,
            )));
            continue;
        };
        if t.last_status == "STOPPED" || t.desired_status == "STOPPED" {
            failures.push(Failure {
                arn: Some(t.task_arn.clone()),
                reason: "TASK_NOT_VALID".into(),
                detail: Some("The task is stopping or stopped.".into()),
            });
            continue;
        }
        let mut t = t;
        t.protected_until = enabled.then_some(at + minutes as f64 * 60.0);
        t.version += 1;
        protected.push(protection_view(&t, at));
        writes.push(Write::Task(t));
    }
    state.apply(core.store.as_ref(), writes).await?;
    core.wake.all();
    Ok(json!({ "protectedTasks": protected, "failures": failures }))
}

pub(crate) async fn get_task_protection(core: &Core, body: &Value) -> Result<Value, ApiError> {
    let given = string_list(body, "tasks")?;
    if given.len() > 100 {
        return Err(ApiError::invalid_parameter(
            "tasks names at most 100 tasks.",
        ));
    }
    let state = core.state.lock().await;
    let cluster = active_cluster(&state, body.get("cluster").and_then(Value::as_str))?;
    let at = now();
    let mut protected = Vec::new();
    let mut failures = Vec::new();
    for g in &given {
        match super::tasks::find_task(&state, cluster, g) {
            Some(t) => protected.push(protection_view(t, at)),
            None => failures.push(Failure::missing(task_arn(
                &cluster.cluster_name,
                g,
                &core.config.region,
            ))),
        }
    }
    Ok(json!({ "protectedTasks": protected, "failures": failures }))
}

fn task_arn(cluster: &str, given: &str, region: &str) -> String {
    if given.starts_with("arn:") {
        given.to_string()
    } else {
        arn("ecs", region, &format!("task/{cluster}/{given}"))
    }
}

fn protection_view(t: &crate::core::model::Task, at: f64) -> Value {
    let on = t.protected_at(at);
    let mut v = json!({ "taskArn": t.task_arn, "protectionEnabled": on });
    if on {
        v["expirationDate"] = json!(t.protected_until);
    }
    v
}
