//! What the AWS JSON protocols (1.0 and 1.1) share across services: a
//! request body parsed into its typed shape (a member of the wrong type is
//! a SerializationException), required members, fields skiff refuses,
//! opaque page tokens, `include` lists.

use crate::error::ApiError;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// `body` as `T`. The members' types were checked against AWS's model
/// before ([`super::shapes`]); what still does not fit — a value out of
/// the range skiff stores (a negative memory, a port past 65535), a member
/// skiff needs and the model leaves optional, a `null` where a value must
/// be — is a ClientException naming the member, in the request's terms.
pub(crate) fn parse<T: DeserializeOwned>(body: &Value) -> Result<T, ApiError> {
    crate::error::from_request(body, None)
}

/// Member `name` of `body`, parsed as [`parse`] does; a required one:
/// absent or `null`, it is "`name` is required.".
pub(crate) fn parse_member<T: DeserializeOwned>(body: &Value, name: &str) -> Result<T, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Err(ApiError::client(format!("{name} is required."))),
        Some(member) => crate::error::from_request(member, Some(name)),
    }
}

pub(crate) fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Pages `items` with an opaque token (an offset).
pub(crate) fn page<T>(
    items: Vec<T>,
    token: Option<&str>,
    max: Option<i64>,
    limit: i64,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let start = match token {
        None | Some("") => 0,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| ApiError::invalid_parameter("The nextToken is invalid."))?,
    };
    let max = match max {
        None => limit as usize,
        Some(m) if (1..=limit).contains(&m) => m as usize,
        Some(m) => {
            return Err(ApiError::invalid_parameter(format!(
                "maxResults must be between 1 and {limit}, not {m}."
            )));
        }
    };
    let total = items.len();
    let out: Vec<T> = items.into_iter().skip(start).take(max).collect();
    let next = (start + out.len() < total).then(|| (start + out.len()).to_string());
    Ok((out, next))
}

/// A List operation's answer: one page of `items` under `key`, as the
/// request's `nextToken` and `maxResults` (up to 100) ask, and the next
/// token when more remain.
pub(crate) fn listed<T: serde::Serialize>(
    body: &Value,
    key: &str,
    items: Vec<T>,
) -> Result<Value, ApiError> {
    listed_up_to(body, key, items, 100)
}

/// `listed` with another largest page (ECR's is 1000).
pub(crate) fn listed_up_to<T: serde::Serialize>(
    body: &Value,
    key: &str,
    items: Vec<T>,
    limit: i64,
) -> Result<Value, ApiError> {
    let (items, next) = page(
        items,
        body.get("nextToken").and_then(Value::as_str),
        body.get("maxResults").and_then(Value::as_i64),
        limit,
    )?;
    let mut v = json!({ key: items });
    if let Some(n) = next {
        v["nextToken"] = json!(n);
    }
    Ok(v)
}

/// A required string field of the request.
pub(crate) fn required<'a>(body: &'a Value, field: &str) -> Result<&'a str, ApiError> {
    body.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid_parameter(format!("{field} is required")))
}

/// A string member that must be given and not be empty.
pub(crate) fn required_nonempty<'a>(body: &'a Value, field: &str) -> Result<&'a str, ApiError> {
    body.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::invalid_parameter(format!("{field} is required")))
}

/// Refuses a request body that is not a JSON object (AWS JSON 1.1 bodies
/// always are).
pub(crate) fn json_object(body: &Value) -> Result<(), ApiError> {
    if body.is_object() {
        Ok(())
    } else {
        Err(ApiError::serialization(
            "the request body must be a JSON object",
        ))
    }
}

pub(crate) fn includes(body: &Value, what: &str) -> bool {
    body.get("include")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(what)))
}

/// Refuses request fields ECS defines that skiff cannot honour yet.
/// Refuses the first of `fields` the request gives (not null), saying
/// why: each is (member, why skiff has no meaning for it).
pub(crate) fn refuse_saying_why(body: &Value, fields: &[(&str, &str)]) -> Result<(), ApiError> {
    match fields
        .iter()
        .find(|(f, _)| body.get(*f).is_some_and(|v| !v.is_null()))
    {
        Some((field, why)) => Err(ApiError::invalid_parameter(format!(
            "{field} is not supported by skiff: {why}."
        ))),
        None => Ok(()),
    }
}

pub(crate) fn refuse(body: &Value, fields: &[&str]) -> Result<(), ApiError> {
    for f in fields {
        match body.get(*f) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(Value::Array(a)) if a.is_empty() => {}
            Some(Value::Object(o)) if o.is_empty() => {}
            Some(v) => {
                return Err(ApiError::invalid_parameter(format!(
                    "{f} is not supported by skiff (given {v}); remove it"
                )));
            }
        }
    }
    Ok(())
}

pub(crate) fn string_list(body: &Value, field: &str) -> Result<Vec<String>, ApiError> {
    match body.get(field) {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str().map(String::from).ok_or_else(|| {
                    ApiError::serialization(format!("{field} must be a list of strings"))
                })
            })
            .collect(),
        None | Some(Value::Null) => Ok(Vec::new()),
        _ => Err(ApiError::serialization(format!(
            "{field} must be a list of strings"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_opaque_offsets() {
        let (a, next) = page((0..5).collect::<Vec<_>>(), None, Some(2), 100).unwrap();
        assert_eq!((a, next.as_deref()), (vec![0, 1], Some("2")));
        let (b, next) = page((0..5).collect::<Vec<_>>(), Some("4"), Some(2), 100).unwrap();
        assert_eq!((b, next), (vec![4], None));
        assert!(page(vec![1], None, Some(0), 100).is_err());
        assert!(page(vec![1], Some("x"), None, 100).is_err());
    }
}
