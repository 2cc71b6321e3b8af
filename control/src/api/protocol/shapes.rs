//! The members AWS JSON requests carry, typed as AWS's own service models
//! type them (`control/models/*.json`, kept from botocore's models by
//! `control/models/extract.py`). A member of the wrong type anywhere in a
//! request — `"cluster": ["c2"]`, a port given as a string, a list given
//! as an object — is a `SerializationException` naming where it is, as AWS
//! answers it, before the operation sees the request: an operation reading
//! a member it expects as a string never mistakes a list for its absence.
//! Members the model does not know are left to the operation (SDKs
//! expect a service to ignore them); `null` is the member's absence.
//!
//! Then the model's constraints — required members, lengths, ranges,
//! patterns and enums — are checked as AWS's front end checks them, and
//! every violation is listed in AWS's words ("1 validation error
//! detected: Value '51' at 'limit' failed to satisfy constraint: Member
//! must have value less than or equal to 50"), under the exception each
//! service answers it with (see [`validation_kind`]).

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
    #[serde(default)]
    min: Option<f64>,
    #[serde(default)]
    max: Option<f64>,
    #[serde(default)]
    pattern: Option<String>,
    #[serde(default, rename = "enum")]
    allowed: Option<Vec<String>>,
    /// A structure's required members.
    #[serde(default)]
    required: Vec<String>,
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
    let Some(Some(input)) = model.operations.get(op) else {
        return Ok(());
    };
    check_value(model, input, body, "")?;
    let mut found = Vec::new();
    constraints(model, input, Some(body), "", service, &mut found);
    if found.is_empty() {
        return Ok(());
    }
    let n = found.len();
    Err(ApiError::coded(
        validation_kind(service),
        format!(
            "{n} validation error{} detected: {}",
            if n == 1 { "" } else { "s" },
            found.join("; ")
        ),
    ))
}

/// The exception each service answers a constraint violation with.
fn validation_kind(service: JsonService) -> &'static str {
    match service {
        JsonService::Ecs | JsonService::Logs => "InvalidParameterException",
        JsonService::Ecr => "ValidationException",
        JsonService::CloudMap => "InvalidInput",
        JsonService::CloudWatch => "InvalidParameterValueException",
    }
}

/// A value as AWS's messages quote it.
fn quoted(v: &Value) -> String {
    match v {
        Value::String(s) => format!("'{s}'"),
        Value::Array(items) => format!(
            "'[{}]'",
            items
                .iter()
                .map(|i| match i {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => format!("'{other}'"),
    }
}

/// A model pattern, compiled to match whole values (as Java's
/// `matches`); `None` for one Rust's regex cannot take (look-arounds),
/// which is then not checked.
fn pattern(p: &str) -> Option<regex::Regex> {
    static CACHE: LazyLock<std::sync::Mutex<HashMap<String, Option<regex::Regex>>>> =
        LazyLock::new(Default::default);
    let mut cache = CACHE.lock().ok()?;
    cache
        .entry(p.to_string())
        .or_insert_with(|| regex::Regex::new(&format!("^(?s:{p})$")).ok())
        .clone()
}

/// Collects every constraint `v` (of `shape`, at `at`) breaks, in AWS's
/// words. ECS and CloudWatch answer missing members in each operation's
/// own words, so theirs are left to their operations.
fn constraints(
    model: &Model,
    shape: &str,
    v: Option<&Value>,
    at: &str,
    service: JsonService,
    found: &mut Vec<String>,
) {
    let Some(s) = model.shapes.get(shape) else {
        return;
    };
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return;
    };
    let mut broken = |what: String| {
        found.push(format!(
            "Value {} at '{at}' failed to satisfy constraint: {what}",
            quoted(v)
        ));
    };
    match s.kind.as_str() {
        "string" => {
            let text = v.as_str().unwrap_or_default();
            if let Some(allowed) = &s.allowed
                && !allowed.iter().any(|a| a == text)
            {
                broken(format!(
                    "Member must satisfy enum value set: [{}]",
                    allowed.join(", ")
                ));
            }
            let len = text.chars().count() as f64;
            if s.min.is_some_and(|m| len < m) {
                broken(format!(
                    "Member must have length greater than or equal to {}",
                    s.min.unwrap_or_default()
                ));
            }
            if s.max.is_some_and(|m| len > m) {
                broken(format!(
                    "Member must have length less than or equal to {}",
                    s.max.unwrap_or_default()
                ));
            }
            // ECR words its own name checks ("Invalid parameter at
            // 'repositoryName' failed to satisfy constraint: ...").
            if let Some(p) = s.pattern.as_ref().filter(|_| service != JsonService::Ecr)
                && let Some(re) = pattern(p)
                && !re.is_match(text)
            {
                broken(format!(
                    "Member must satisfy regular expression pattern: {p}"
                ));
            }
        }
        "integer" | "long" => {
            let n = v.as_f64().unwrap_or_default();
            if s.min.is_some_and(|m| n < m) {
                broken(format!(
                    "Member must have value greater than or equal to {}",
                    s.min.unwrap_or_default()
                ));
            }
            if s.max.is_some_and(|m| n > m) {
                broken(format!(
                    "Member must have value less than or equal to {}",
                    s.max.unwrap_or_default()
                ));
            }
        }
        "list" | "map" => {
            let len = v
                .as_array()
                .map(Vec::len)
                .or_else(|| v.as_object().map(serde_json::Map::len))
                .unwrap_or(0) as f64;
            if s.min.is_some_and(|m| len < m) {
                broken(format!(
                    "Member must have length greater than or equal to {}",
                    s.min.unwrap_or_default()
                ));
            }
            if s.max.is_some_and(|m| len > m) {
                broken(format!(
                    "Member must have length less than or equal to {}",
                    s.max.unwrap_or_default()
                ));
            }
            if let (Some(member), Some(items)) = (&s.member, v.as_array()) {
                for (i, item) in items.iter().enumerate() {
                    let at = format!("{at}.{}.member", i + 1);
                    constraints(model, member, Some(item), &at, service, found);
                }
            }
            if let (Some(value), Some(entries)) = (&s.value, v.as_object()) {
                for (k, item) in entries {
                    constraints(model, value, Some(item), &join(at, k), service, found);
                }
            }
        }
        "structure" => {
            let fields = v.as_object();
            let mut names: Vec<&String> = s.members.keys().collect();
            names.sort();
            for name in names {
                let item = fields.and_then(|f| f.get(name)).filter(|i| !i.is_null());
                let here = join(at, name);
                if item.is_none() {
                    if !matches!(service, JsonService::Ecs | JsonService::CloudWatch)
                        && s.required.contains(name)
                    {
                        found.push(format!(
                            "Value null at '{here}' failed to satisfy constraint: Member must not be null"
                        ));
                    }
                    continue;
                }
                constraints(model, &s.members[name], item, &here, service, found);
            }
        }
        _ => {}
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
    fn constraints_are_worded_as_aws_words_them() {
        let e = check(
            JsonService::Logs,
            "DescribeLogGroups",
            &json!({"limit": 51}),
        )
        .unwrap_err();
        assert_eq!(e.kind, "InvalidParameterException");
        assert_eq!(
            e.message,
            "1 validation error detected: Value '51' at 'limit' failed to satisfy constraint: Member must have value less than or equal to 50"
        );
        let e = check(
            JsonService::Logs,
            "PutLogEvents",
            &json!({"logGroupName": "a b", "logStreamName": "s", "logEvents": [{"message": "m"}]}),
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "2 validation errors detected: Value null at 'logEvents.1.member.timestamp' failed to satisfy constraint: Member must not be null; Value 'a b' at 'logGroupName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\.\\-_/#A-Za-z0-9]+"
        );
        let e = check(
            JsonService::Logs,
            "PutLogEvents",
            &json!({"logGroupName": "g", "logStreamName": "s", "logEvents": []}),
        )
        .unwrap_err();
        assert!(e.message.ends_with("Value '[]' at 'logEvents' failed to satisfy constraint: Member must have length greater than or equal to 1"), "{}", e.message);
        let e = check(
            JsonService::Ecr,
            "DescribeRepositories",
            &json!({"maxResults": 1001}),
        )
        .unwrap_err();
        assert_eq!(e.kind, "ValidationException");
        let e = check(
            JsonService::Ecs,
            "RunTask",
            &json!({"taskDefinition": "t", "launchType": "MOON"}),
        )
        .unwrap_err();
        assert_eq!(e.kind, "InvalidParameterException");
        assert!(e.message.contains("Value 'MOON' at 'launchType' failed to satisfy constraint: Member must satisfy enum value set: [EC2, FARGATE, EXTERNAL"), "{}", e.message);
        // ECS words its missing members itself.
        check(JsonService::Ecs, "RunTask", &json!({})).unwrap();
        let e = check(JsonService::CloudMap, "GetNamespace", &json!({})).unwrap_err();
        assert_eq!(e.kind, "InvalidInput");
        assert!(e.message.contains("Value null at 'Id'"), "{}", e.message);
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
