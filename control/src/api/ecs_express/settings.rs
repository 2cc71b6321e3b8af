//! An Express service's settings: AWS's defaults filled in, checked, and
//! the task definition they make.

use crate::core::services::express::{Metric, ScalingTarget};
use crate::error::ApiError;
use serde_json::{Value, json};

/// The defaults AWS documents for an Express service.
const DEFAULT_CPU: &str = "256";
const DEFAULT_MEMORY: &str = "512";
const DEFAULT_PORT: u64 = 80;
const DEFAULT_HEALTH_CHECK_PATH: &str = "/ping";
const DEFAULT_SCALING: ScalingTarget = ScalingTarget {
    min_task_count: 1,
    max_task_count: 20,
    auto_scaling_metric: Metric::AverageCpu,
    auto_scaling_target_value: 60,
};
/// The name of the task definition's one container.
pub(super) const CONTAINER: &str = "Main";

/// The settings a request gives, defaults filled in and checked.
pub(super) fn settings(body: &Value, before: Option<&Value>) -> Result<Value, ApiError> {
    let given = |name: &str| body.get(name).filter(|v| !v.is_null());
    let kept = |name: &str, default: Value| {
        before
            .and_then(|b| b.get(name))
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or(default)
    };
    let mut s = json!({});
    for (name, default) in [
        ("executionRoleArn", Value::Null),
        ("taskRoleArn", Value::Null),
        ("cpu", json!(DEFAULT_CPU)),
        ("memory", json!(DEFAULT_MEMORY)),
        ("networkConfiguration", Value::Null),
        ("healthCheckPath", json!(DEFAULT_HEALTH_CHECK_PATH)),
    ] {
        s[name] = given(name).cloned().unwrap_or_else(|| kept(name, default));
    }
    if !s["healthCheckPath"]
        .as_str()
        .is_some_and(|p| p.starts_with('/') && p.len() <= 1024)
    {
        return Err(ApiError::invalid_parameter(
            "healthCheckPath must start with a slash (/) and be at most 1024 characters.",
        ));
    }
    for name in ["cpu", "memory"] {
        if !s[name]
            .as_str()
            .is_some_and(|v| v.parse::<u32>().is_ok_and(|n| n > 0))
        {
            return Err(ApiError::invalid_parameter(format!(
                "{name} must be a whole number of {} from 1 to {}, not {}.",
                if name == "cpu" { "CPU units" } else { "MiB" },
                u32::MAX,
                s[name]
            )));
        }
    }
    for name in ["executionRoleArn", "taskRoleArn"] {
        if let Some(arn) = s.get(name).filter(|v| !v.is_null()) {
            check_role(name, arn)?;
        }
    }
    let mut container = match given("primaryContainer") {
        Some(c) => c.clone(),
        None => kept("primaryContainer", Value::Null),
    };
    if container.is_null() {
        return Err(ApiError::invalid_parameter("primaryContainer is required."));
    }
    let port = container
        .get("containerPort")
        .cloned()
        .unwrap_or(json!(DEFAULT_PORT));
    if !port.as_u64().is_some_and(|p| (1..=65535).contains(&p)) {
        return Err(ApiError::invalid_parameter(format!(
            "primaryContainer.containerPort must be 1 to 65535, not {port}."
        )));
    }
    container["containerPort"] = port;
    if container
        .get("repositoryCredentials")
        .is_some_and(|v| !v.is_null())
    {
        return Err(ApiError::invalid_parameter(
            "primaryContainer.repositoryCredentials names a Secrets Manager secret, and skiff has no Secrets Manager: pull with the cluster's registry credentials (or a public image).",
        ));
    }
    // A new container without a log configuration keeps the one before.
    if container
        .get("awsLogsConfiguration")
        .is_none_or(Value::is_null)
        && let Some(logs) = before
            .map(|b| &b["primaryContainer"]["awsLogsConfiguration"])
            .filter(|v| !v.is_null())
    {
        container["awsLogsConfiguration"] = logs.clone();
    }
    if let Some(logs) = container
        .get("awsLogsConfiguration")
        .filter(|v| !v.is_null())
    {
        check_logs(logs)?;
    }
    s["primaryContainer"] = container;
    let scaling = match given("scalingTarget") {
        Some(t) => scaling_target(t, before)?,
        None => kept_scaling(before),
    };
    s["scalingTarget"] = json!(scaling);
    Ok(s)
}

/// An IAM role's ARN (`arn:aws:iam::123456789012:role/NAME`), or the
/// error AWS gives. (Roles are not assumed here: there is no IAM.)
pub(super) fn check_role(name: &str, arn: &Value) -> Result<(), ApiError> {
    let ok = arn.as_str().is_some_and(|a| {
        let parts: Vec<&str> = a.splitn(6, ':').collect();
        parts.len() == 6
            && parts[0] == "arn"
            && parts[1].starts_with("aws")
            && parts[2] == "iam"
            && parts[3].is_empty()
            && parts[4].len() == 12
            && parts[4].bytes().all(|b| b.is_ascii_digit())
            && parts[5].strip_prefix("role/").is_some_and(|r| {
                // IAM's characters for a role's path and name.
                !r.is_empty()
                    && r.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b))
            })
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_parameter(format!(
            "{name} must be an IAM role's ARN (arn:aws:iam::123456789012:role/NAME), not {arn}."
        )))
    }
}

/// An `awsLogsConfiguration` CloudWatch Logs will take: a log group name
/// of its characters, a stream prefix without `:` or `*` (stream names
/// are made of it).
fn check_logs(logs: &Value) -> Result<(), ApiError> {
    let group = logs["logGroup"].as_str().unwrap_or_default();
    crate::core::logs::check_group_name(group).map_err(|e| {
        ApiError::invalid_parameter(format!(
            "primaryContainer.awsLogsConfiguration.logGroup: {}",
            e.message
        ))
    })?;
    let prefix = logs["logStreamPrefix"].as_str().unwrap_or_default();
    if prefix.is_empty() || prefix.len() > 256 || prefix.contains([':', '*']) {
        return Err(ApiError::invalid_parameter(format!(
            "primaryContainer.awsLogsConfiguration.logStreamPrefix {prefix:?} must be 1 to 256 characters without ':' or '*'."
        )));
    }
    Ok(())
}

/// The log configuration an Express service gets when it names none, as
/// ECS gives one: a group of its own, streams prefixed `ecs`.
pub(super) fn default_logs(cluster: &str, service: &str) -> Value {
    json!({"logGroup": format!("/aws/ecs/{cluster}/{service}"), "logStreamPrefix": "ecs"})
}

/// The scaling target of the settings before, else the default.
fn kept_scaling(before: Option<&Value>) -> ScalingTarget {
    before
        .and_then(|b| serde_json::from_value(b["scalingTarget"].clone()).ok())
        .unwrap_or(DEFAULT_SCALING)
}

/// A `scalingTarget`: what it leaves out is as before (or the default).
fn scaling_target(t: &Value, before: Option<&Value>) -> Result<ScalingTarget, ApiError> {
    let base = kept_scaling(before);
    let count =
        |name: &str, default: u32, range: (u32, u32), what: &str| -> Result<u32, ApiError> {
            match t.get(name).filter(|v| !v.is_null()) {
                None => Ok(default),
                Some(v) => v
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| (range.0..=range.1).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid_parameter(format!(
                            "scalingTarget.{name} must be {} to {}{what}, not {v}.",
                            range.0, range.1
                        ))
                    }),
            }
        };
    let tasks = (0, 5000);
    let metric = match t.get("autoScalingMetric").and_then(Value::as_str) {
        None => base.auto_scaling_metric,
        Some(m) => serde_json::from_value(json!(m)).map_err(|_| {
            ApiError::invalid_parameter(format!(
                "scalingTarget.autoScalingMetric must be AVERAGE_CPU, AVERAGE_MEMORY or REQUEST_COUNT_PER_TARGET, not {m:?}."
            ))
        })?,
    };
    let percent = matches!(metric, Metric::AverageCpu | Metric::AverageMemory);
    let (values, what) = if percent {
        ((1, 100), " (percent)")
    } else {
        ((1, 1_000_000), " (requests per target per minute)")
    };
    // A new metric without a value starts from the default value.
    let value = if metric == base.auto_scaling_metric {
        base.auto_scaling_target_value
    } else {
        DEFAULT_SCALING.auto_scaling_target_value
    };
    let target = ScalingTarget {
        min_task_count: count("minTaskCount", base.min_task_count, tasks, "")?,
        max_task_count: count("maxTaskCount", base.max_task_count, tasks, "")?,
        auto_scaling_metric: metric,
        auto_scaling_target_value: count("autoScalingTargetValue", value, values, what)?,
    };
    if target.min_task_count > target.max_task_count {
        return Err(ApiError::invalid_parameter(format!(
            "scalingTarget.minTaskCount ({}) is more than maxTaskCount ({}).",
            target.min_task_count, target.max_task_count
        )));
    }
    if !(values.0..=values.1).contains(&target.auto_scaling_target_value) {
        // The value kept from before, for a metric it does not suit.
        return Err(ApiError::invalid_parameter(format!(
            "scalingTarget.autoScalingTargetValue {} does not suit {}: give one from {} to {}{what}.",
            target.auto_scaling_target_value,
            json!(metric).as_str().unwrap_or_default(),
            values.0,
            values.1
        )));
    }
    Ok(target)
}

/// The task definition a configuration runs.
pub(super) fn task_definition(family: &str, s: &Value, region: &str) -> Value {
    let c = &s["primaryContainer"];
    let mut container = json!({
        "name": CONTAINER,
        "image": c["image"],
        "essential": true,
        "portMappings": [{"containerPort": c["containerPort"], "protocol": "tcp"}],
    });
    for name in ["command", "environment", "secrets"] {
        if let Some(v) = c.get(name).filter(|v| !v.is_null()) {
            container[name] = v.clone();
        }
    }
    if let Some(logs) = c.get("awsLogsConfiguration").filter(|v| !v.is_null()) {
        container["logConfiguration"] = json!({
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": logs["logGroup"],
                "awslogs-stream-prefix": logs["logStreamPrefix"],
                "awslogs-region": region,
                "awslogs-create-group": "true",
            },
        });
    }
    let mut td = json!({
        "family": family,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": s["cpu"],
        "memory": s["memory"],
        "containerDefinitions": [container],
    });
    for name in ["executionRoleArn", "taskRoleArn"] {
        if !s[name].is_null() {
            td[name] = s[name].clone();
        }
    }
    td
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_fill_in_aws_defaults_and_keep_what_an_update_leaves_out() {
        let s = settings(&json!({"primaryContainer": {"image": "web:v1"}}), None).unwrap();
        assert_eq!(s["cpu"], "256");
        assert_eq!(s["memory"], "512");
        assert_eq!(s["healthCheckPath"], "/ping");
        assert_eq!(s["primaryContainer"]["containerPort"], 80);
        assert_eq!(
            s["scalingTarget"],
            json!({"minTaskCount": 1, "maxTaskCount": 20,
                   "autoScalingMetric": "AVERAGE_CPU", "autoScalingTargetValue": 60})
        );
        let u = settings(
            &json!({"memory": "1024", "scalingTarget": {"maxTaskCount": 3}}),
            Some(&s),
        )
        .unwrap();
        assert_eq!(u["memory"], "1024");
        assert_eq!(u["primaryContainer"]["image"], "web:v1");
        assert_eq!(u["scalingTarget"]["maxTaskCount"], 3);
        assert_eq!(u["scalingTarget"]["minTaskCount"], 1);
        // Another metric without a value starts from the default value.
        let r = settings(
            &json!({"scalingTarget": {"autoScalingMetric": "REQUEST_COUNT_PER_TARGET",
                                      "autoScalingTargetValue": 500}}),
            Some(&u),
        )
        .unwrap();
        let m = settings(
            &json!({"scalingTarget": {"autoScalingMetric": "AVERAGE_MEMORY"}}),
            Some(&r),
        )
        .unwrap();
        assert_eq!(m["scalingTarget"]["autoScalingTargetValue"], 60);
        // A container given anew keeps the log configuration before.
        let logs = json!({"logGroup": "/g", "logStreamPrefix": "p"});
        let mut with_logs = u.clone();
        with_logs["primaryContainer"]["awsLogsConfiguration"] = logs.clone();
        let n = settings(
            &json!({"primaryContainer": {"image": "web:v2"}}),
            Some(&with_logs),
        )
        .unwrap();
        assert_eq!(n["primaryContainer"]["awsLogsConfiguration"], logs);
    }

    #[test]
    fn bad_settings_are_refused_naming_the_field() {
        let bad = |body: Value, needle: &str| {
            let e = settings(&body, None).unwrap_err();
            assert!(e.message.contains(needle), "{}", e.message);
        };
        let image = json!({"image": "web:v1"});
        bad(json!({}), "primaryContainer");
        bad(
            json!({"primaryContainer": {"image": "w", "containerPort": 0}}),
            "containerPort",
        );
        bad(
            json!({"primaryContainer": image, "healthCheckPath": "ping"}),
            "healthCheckPath",
        );
        bad(json!({"primaryContainer": image, "cpu": "a lot"}), "cpu");
        bad(
            json!({"primaryContainer": image, "scalingTarget": {"minTaskCount": 5, "maxTaskCount": 2}}),
            "minTaskCount",
        );
        bad(
            json!({"primaryContainer": image, "scalingTarget": {"autoScalingTargetValue": 150}}),
            "autoScalingTargetValue",
        );
        bad(
            json!({"primaryContainer": image, "scalingTarget": {"autoScalingMetric": "QUEUE"}}),
            "autoScalingMetric",
        );
        bad(
            json!({"primaryContainer": {"image": "w", "repositoryCredentials": {"credentialsParameter": "arn"}}}),
            "Secrets Manager",
        );
        bad(
            json!({"primaryContainer": image, "taskRoleArn": "garbage"}),
            "taskRoleArn",
        );
        bad(
            json!({"primaryContainer": image, "executionRoleArn": "arn:aws:iam::1:role/x"}),
            "executionRoleArn",
        );
        bad(
            json!({"primaryContainer": image, "executionRoleArn": "arn:aws:iam::000000000000:role/a b"}),
            "executionRoleArn",
        );
        bad(
            json!({"primaryContainer": {"image": "w", "awsLogsConfiguration":
                {"logGroup": "aws/mine", "logStreamPrefix": "p"}}}),
            "reserved",
        );
        bad(
            json!({"primaryContainer": {"image": "w", "awsLogsConfiguration":
                {"logGroup": "bad group!", "logStreamPrefix": "p"}}}),
            "logGroup",
        );
        bad(
            json!({"primaryContainer": {"image": "w", "awsLogsConfiguration":
                {"logGroup": "/g", "logStreamPrefix": "a:b"}}}),
            "logStreamPrefix",
        );
        bad(
            json!({"primaryContainer": image, "scalingTarget":
                {"autoScalingMetric": "REQUEST_COUNT_PER_TARGET", "autoScalingTargetValue": 0}}),
            "1 to 1000000",
        );
    }
}
