//! The members AWS JSON requests carry, typed as AWS's own service models
//! type them (`control/models/*.json`, kept from botocore's models by
//! `control/models/extract.py`). A member of the wrong type anywhere in a
//! request — `"cluster": ["c2"]`, a port given as a string, a list given
//! as an object — is a `SerializationException` naming where it is, as AWS
//! answers it, before the operation sees the request: an operation reading
//! a member it expects as a string never mistakes a list for its absence.
//! Members the model does not know are left to the operation (SDKs
//! expect a service to ignore them); `null` is the member's absence.

use crate::error::ApiError;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::LazyLock;

/// The AWS JSON services skiff answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonService {
    Ecs,
    Ecr,
    Logs,
    CloudWatch,
    CloudMap,
}

#[derive(Deserialize)]
struct Model {
    /// Each operation's input shape (`None`: it takes no members).
    operations: HashMap<String, Option<String>>,
    shapes: HashMap<String, Shape>,
}

#[derive(Deserialize)]
struct Shape {
    #[serde(rename = "type")]
    kind: String,
    /// A structure's members: name → shape.
    #[serde(default)]
    members: HashMap<String, String>,
    /// A list's member shape.
    #[serde(default)]
    member: Option<String>,
    /// A map's value shape.
    #[serde(default)]
    value: Option<String>,
}

fn load(json: &str) -> Model {
    serde_json::from_str(json).unwrap_or_else(|_| Model {
        operations: HashMap::new(),
        shapes: HashMap::new(),
    })
}

static ECS: LazyLock<Model> = LazyLock::new(|| load(include_str!("../../../models/ecs.json")));
static ECR: LazyLock<Model> = LazyLock::new(|| load(include_str!("../../../models/ecr.json")));
static LOGS: LazyLock<Model> = LazyLock::new(|| load(include_str!("../../../models/logs.json")));
static CLOUDWATCH: LazyLock<Model> =
    LazyLock::new(|| load(include_str!("../../../models/cloudwatch.json")));
static CLOUDMAP: LazyLock<Model> =
    LazyLock::new(|| load(include_str!("../../../models/servicediscovery.json")));

fn model(service: JsonService) -> &'static Model {
    match service {
        JsonService::Ecs => &ECS,
        JsonService::Ecr => &ECR,
        JsonService::Logs => &LOGS,
        JsonService::CloudWatch => &CLOUDWATCH,
        JsonService::CloudMap => &CLOUDMAP,
    }
}

/// Checks `body`, a request of operation `op`: a JSON object whose
/// members (and theirs) have the types the service's model gives them.
/// An operation the model does not have is the dispatcher's to refuse.
pub(crate) fn check(service: JsonService, op: &str, body: &Value) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::serialization(format!(
            "the request body must be a JSON object, not {}",
            kind_of(body)
        )));
    }
    let model = model(service);
    match model.operations.get(op) {
        Some(Some(input)) => check_value(model, input, body, ""),
        Some(None) | None => Ok(()),
    }
}

/// What a JSON value is, for a message.
fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn check_value(model: &Model, shape: &str, v: &Value, at: &str) -> Result<(), ApiError> {
    let Some(s) = model.shapes.get(shape) else {
        return Ok(());
    };
    if v.is_null() {
        return Ok(());
    }
    let wrong = |expected: &str| {
        let at = if at.is_empty() { "the request" } else { at };
        Err(ApiError::serialization(format!(
            "{at}: expected {expected}, not {}",
            kind_of(v)
        )))
    };
    match s.kind.as_str() {
        "string" | "blob" if !v.is_string() => return wrong("a string"),
        "boolean" if !v.is_boolean() => return wrong("a boolean"),
        "integer" | "long" if !(v.is_i64() || v.is_u64()) => return wrong("an integer"),
        "timestamp" if !v.is_number() => {
            return wrong("a timestamp (seconds since the epoch)");
        }
        "float" | "double" if !v.is_number() => return wrong("a number"),
        "list" => {
            let Some(items) = v.as_array() else {
                return wrong("a list");
            };
            if let Some(member) = &s.member {
                for (i, item) in items.iter().enumerate() {
                    check_value(model, member, item, &format!("{at}[{i}]"))?;
                }
            }
        }
        "map" => {
            let Some(entries) = v.as_object() else {
                return wrong("an object");
            };
            if let Some(value) = &s.value {
                for (k, item) in entries {
                    check_value(model, value, item, &join(at, k))?;
                }
            }
        }
        "structure" => {
            let Some(fields) = v.as_object() else {
                return wrong("an object");
            };
            for (name, member) in &s.members {
                if let Some(item) = fields.get(name) {
                    check_value(model, member, item, &join(at, name))?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn join(at: &str, name: &str) -> String {
    if at.is_empty() {
        name.to_string()
    } else {
        format!("{at}.{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(service: JsonService, op: &str, body: Value) -> String {
        let e = check(service, op, &body).unwrap_err();
        assert_eq!(e.kind, "SerializationException");
        assert_eq!(e.status, 400);
        e.message
    }

    #[test]
    fn every_service_has_its_model() {
        for (service, op) in [
            (JsonService::Ecs, "RunTask"),
            (JsonService::Ecr, "DescribeImages"),
            (JsonService::Logs, "GetLogEvents"),
            (JsonService::CloudWatch, "GetMetricData"),
            (JsonService::CloudMap, "RegisterInstance"),
        ] {
            assert!(
                matches!(model(service).operations.get(op), Some(Some(_))),
                "{service:?} {op}"
            );
        }
    }

    #[test]
    fn members_of_the_wrong_type_are_named() {
        let ecs = JsonService::Ecs;
        assert_eq!(
            err(
                ecs,
                "DeleteService",
                json!({"cluster": ["c2"], "service": "dup"})
            ),
            "cluster: expected a string, not a list"
        );
        assert_eq!(
            err(ecs, "RunTask", json!({"taskDefinition": "t", "count": "2"})),
            "count: expected an integer, not a string"
        );
        assert_eq!(
            err(
                ecs,
                "RegisterTaskDefinition",
                json!({"family": "f", "containerDefinitions": [{"name": "a", "portMappings": [{"containerPort": "80"}]}]})
            ),
            "containerDefinitions[0].portMappings[0].containerPort: expected an integer, not a string"
        );
        assert_eq!(
            err(
                ecs,
                "CreateService",
                json!({"serviceName": "s", "tags": {"k": "v"}})
            ),
            "tags: expected a list, not an object"
        );
        // The whole body is an object, for every service.
        for (service, op) in [
            (JsonService::Logs, "DescribeLogGroups"),
            (JsonService::CloudMap, "ListNamespaces"),
            (JsonService::CloudWatch, "ListMetrics"),
        ] {
            for body in [json!([]), json!("x"), json!(1), json!(null)] {
                assert!(
                    err(service, op, body).starts_with("the request body must be a JSON object"),
                    "{service:?}"
                );
            }
        }
        // Right types, nulls and unknown members pass.
        check(
            ecs,
            "RunTask",
            &json!({"taskDefinition": "t", "count": 2, "group": null, "somethingNew": [1]}),
        )
        .unwrap();
        check(
            JsonService::CloudWatch,
            "GetMetricStatistics",
            &json!({"StartTime": 1.5, "Period": 60, "Namespace": "n"}),
        )
        .unwrap();
        assert_eq!(
            err(
                JsonService::CloudWatch,
                "GetMetricStatistics",
                json!({"StartTime": "yesterday"})
            ),
            "StartTime: expected a timestamp (seconds since the epoch), not a string"
        );
    }
}
