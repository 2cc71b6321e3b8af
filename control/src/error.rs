//! An AWS exception: its kind (the error code each service names it by), a
//! message, and an HTTP status (4xx for every client mistake). Every room
//! returns it; the API layer puts it on the wire (`__type` in AWS JSON,
//! an error document in the Query protocol). Also what every room reads a
//! request with: its `null` members left out, and where a value did not
//! fit its type, said for people.

use serde_json::Value;

/// An error answered to an API caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ApiError {
    /// The exception's name (`ClientException`, `ClusterNotFoundException`).
    pub kind: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// The HTTP status.
    pub status: u16,
}

impl ApiError {
    fn new(kind: &'static str, status: u16, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            status,
        }
    }

    /// A client error with a service's own code (EC2's
    /// `InvalidGroup.NotFound`, ELB's `TargetGroupNotFound`...).
    pub fn coded(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(kind, 400, message)
    }

    /// The caller did something wrong (ECS's catch-all client error).
    pub fn client(message: impl Into<String>) -> Self {
        Self::new("ClientException", 400, message)
    }

    /// A parameter is malformed, out of range, or one skiff cannot honour.
    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new("InvalidParameterException", 400, message)
    }

    /// The request body is not what the operation takes.
    pub fn serialization(message: impl Into<String>) -> Self {
        Self::new("SerializationException", 400, message)
    }

    /// The named cluster does not exist.
    pub fn cluster_not_found() -> Self {
        Self::new("ClusterNotFoundException", 400, "Cluster not found.")
    }

    /// The cluster still holds something that must go first.
    pub fn cluster_contains(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(kind, 400, message)
    }

    /// No such operation on this endpoint.
    pub fn unknown_operation(target: &str) -> Self {
        Self::new(
            "UnknownOperationException",
            400,
            format!("unknown operation {target}"),
        )
    }

    /// A named resource (task, log group...) does not exist.
    pub fn not_found(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(kind, 400, message)
    }

    /// Credentials are missing or unknown.
    pub fn unrecognized_client(message: impl Into<String>) -> Self {
        Self::new("UnrecognizedClientException", 403, message)
    }

    /// The signature does not match.
    pub fn invalid_signature(message: impl Into<String>) -> Self {
        Self::new("InvalidSignatureException", 403, message)
    }

    /// skiff itself failed: the only 5xx.
    pub fn server(message: impl Into<String>) -> Self {
        Self::new("ServerException", 500, message)
    }
}

/// `value` (the request, or its member `member`) as `T`, its `null`
/// members left out. What does not fit is a ClientException naming where
/// it is and what was expected there.
pub(crate) fn from_request<T: serde::de::DeserializeOwned>(
    value: &Value,
    member: Option<&str>,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(without_nulls(value).as_ref())
        .map_err(|e| ApiError::client(unfit(&e, member)))
}

/// What [`from_request`] found, for people.
fn unfit(e: &serde_path_to_error::Error<serde_json::Error>, member: Option<&str>) -> String {
    let path = match (member, e.path().to_string()) {
        (None, p) => p,
        (Some(m), p) if p == "." => m.to_string(),
        (Some(m), p) if p.starts_with('[') => format!("{m}{p}"),
        (Some(m), p) => format!("{m}.{p}"),
    };
    let at = |name: &str| match path.as_str() {
        "." => name.to_string(),
        p => format!("{p}.{name}"),
    };
    let inner = e.inner().to_string();
    if let Some(name) = inner
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        return format!("{} is required.", at(name));
    }
    if inner.starts_with("invalid type: null") {
        return format!("{path} must not be null.");
    }
    if let Some(rest) = inner.strip_prefix("invalid value: integer `")
        && let Some((value, expected)) = rest.split_once("`, expected ")
    {
        let range = match expected {
            "u8" => "0 to 255".to_string(),
            "u16" => "0 to 65535".to_string(),
            "u32" => "0 to 4294967295".to_string(),
            "u64" | "usize" => "0 or more".to_string(),
            "i32" => "-2147483648 to 2147483647".to_string(),
            other => other.to_string(),
        };
        return format!(
            "Invalid value {value} for {path}: it must be a whole number from {range}."
        );
    }
    if let Some((found, expected)) = inner
        .strip_prefix("invalid type: ")
        .and_then(|r| r.split_once(", expected "))
    {
        return format!("{path}: expected {expected}, not {found}.");
    }
    format!("{path}: {inner}")
}

/// `value` with its objects' `null` members left out: `null` is a
/// member's absence (as AWS's front end reads it), so `"tags": null` is
/// no tags given, not a wrong type.
fn without_nulls(value: &Value) -> std::borrow::Cow<'_, Value> {
    fn has_null(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.values().any(|v| v.is_null() || has_null(v)),
            Value::Array(a) => a.iter().any(has_null),
            _ => false,
        }
    }
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.retain(|_, v| !v.is_null());
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    if !has_null(value) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut owned = value.clone();
    strip(&mut owned);
    std::borrow::Cow::Owned(owned)
}
