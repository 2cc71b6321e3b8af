//! CloudWatch's read API (`GraniteServiceVersion20100801`, AWS JSON 1.0,
//! the protocol botocore picks for CloudWatch over CBOR and Query):
//! GetMetricData, GetMetricStatistics, ListMetrics, over the metric store.

use crate::core::metrics::{Key, Metrics, Stat};
use crate::core::model::now;
use crate::error::ApiError;
use serde_json::{Value, json};

/// CloudWatch's units.
const UNITS: [&str; 27] = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::coded("InvalidParameterValueException", message)
}

fn missing(name: &str) -> ApiError {
    ApiError::coded(
        "MissingRequiredParameterException",
        format!("the parameter {name} is required"),
    )
}

fn combination(message: impl Into<String>) -> ApiError {
    ApiError::coded("InvalidParameterCombinationException", message)
}

/// The code botocore shows for one of this API's errors (CloudWatch is
/// "awsQueryCompatible": the `x-amzn-query-error` header carries it).
pub fn query_error_code(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "InvalidParameterValueException" => "InvalidParameterValue",
        "MissingRequiredParameterException" => "MissingParameter",
        "InvalidParameterCombinationException" => "InvalidParameterCombination",
        "InvalidNextToken" => "InvalidNextToken",
        "ValidationError" => "ValidationError",
        "ServerException" => "InternalServiceError",
        _ => return None,
    })
}

/// Handles one CloudWatch operation.
pub(crate) fn handle(m: &Metrics, op: &str, body: &Value) -> Result<Value, ApiError> {
    match op {
        "GetMetricStatistics" => get_metric_statistics(m, body),
        "GetMetricData" => get_metric_data(m, body),
        "ListMetrics" => list_metrics(m, body),
        _ => Err(ApiError::coded(
            "UnknownOperationException",
            format!(
                "skiff's CloudWatch answers GetMetricData, GetMetricStatistics and ListMetrics, not {op}"
            ),
        )),
    }
}

fn get_metric_statistics(m: &Metrics, body: &Value) -> Result<Value, ApiError> {
    let namespace = required_str(body, "Namespace")?;
    let name = required_str(body, "MetricName")?;
    let dims = dimensions(body.get("Dimensions"))?;
    let (start, end) = window(body)?;
    let period = period(body.get("Period"), "Period")?.ok_or_else(|| missing("Period"))?;
    if body
        .get("ExtendedStatistics")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        return Err(invalid(
            "ExtendedStatistics (percentiles) are not supported: skiff computes SampleCount, Average, Sum, Minimum and Maximum",
        ));
    }
    let stats = match body.get("Statistics") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| {
                s.as_str()
                    .ok_or_else(|| invalid("Statistics must be strings"))
            })
            .map(|s| s.and_then(Stat::parse))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(invalid("Statistics must be a list")),
    };
    if stats.is_empty() {
        return Err(missing("Statistics"));
    }
    let unit = unit(body.get("Unit"))?;
    let buckets = (end - start + period - 1) / period;
    if buckets > 1440 {
        return Err(combination(format!(
            "You have requested up to {buckets} datapoints, which exceeds the limit of 1440: use a longer period or a shorter time range"
        )));
    }
    let key = Key::with(namespace, name, dims);
    let points = m.aggregate(&key, unit, start, end, period);
    let datapoints: Vec<Value> = points
        .map(|(unit, points)| {
            points
                .iter()
                .map(|(t, s)| {
                    let mut d = serde_json::Map::new();
                    d.insert("Timestamp".into(), json!(t));
                    for st in &stats {
                        d.insert(st.name().into(), json!(s.get(*st)));
                    }
                    d.insert("Unit".into(), json!(unit));
                    Value::Object(d)
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(json!({ "Label": name, "Datapoints": datapoints }))
}

fn get_metric_data(m: &Metrics, body: &Value) -> Result<Value, ApiError> {
    let (start, end) = window(body)?;
    if body.get("NextToken").is_some_and(|t| !t.is_null()) {
        return Err(ApiError::coded(
            "InvalidNextToken",
            "skiff never hands out a NextToken for GetMetricData",
        ));
    }
    if body.get("LabelOptions").is_some_and(|t| !t.is_null()) {
        return Err(invalid(
            "LabelOptions is not supported: skiff's labels have no dynamic parts to format",
        ));
    }
    let ascending = match body.get("ScanBy").and_then(Value::as_str) {
        None | Some("TimestampDescending") => false,
        Some("TimestampAscending") => true,
        Some(other) => {
            return Err(invalid(format!(
                "ScanBy must be TimestampDescending or TimestampAscending, not {other:?}"
            )));
        }
    };
    let max = match body.get("MaxDatapoints") {
        None | Some(Value::Null) => 100_800,
        Some(v) => v
            .as_i64()
            .filter(|n| *n >= 1)
            .ok_or_else(|| invalid("MaxDatapoints must be a positive integer"))?
            as usize,
    };
    let queries = body
        .get("MetricDataQueries")
        .and_then(Value::as_array)
        .ok_or_else(|| missing("MetricDataQueries"))?;
    if queries.is_empty() || queries.len() > 500 {
        return Err(ApiError::coded(
            "ValidationError",
            format!(
                "MetricDataQueries must hold 1 to 500 queries, not {}",
                queries.len()
            ),
        ));
    }
    let mut ids = Vec::new();
    let mut results = Vec::new();
    let mut total = 0usize;
    let mut partial = false;
    for q in queries {
        let id = required_str(q, "Id")?;
        let mut chars = id.chars();
        if !chars.next().is_some_and(|c| c.is_ascii_lowercase())
            || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(ApiError::coded(
                "ValidationError",
                format!(
                    "the query Id {id:?} must start with a lowercase letter and hold only letters, digits and underscores"
                ),
            ));
        }
        if ids.contains(&id) {
            return Err(ApiError::coded(
                "ValidationError",
                format!("the query Id {id:?} is used twice"),
            ));
        }
        ids.push(id);
        if q.get("Expression").is_some_and(|e| !e.is_null()) {
            return Err(invalid(format!(
                "query {id}: metric math Expressions are not supported by skiff; use MetricStat"
            )));
        }
        if q.get("AccountId").is_some_and(|e| !e.is_null()) {
            return Err(invalid(format!(
                "query {id}: AccountId is not supported: skiff has one account"
            )));
        }
        let ms = q
            .get("MetricStat")
            .filter(|m| m.is_object())
            .ok_or_else(|| {
                ApiError::coded("ValidationError", format!("query {id} needs a MetricStat"))
            })?;
        let metric = ms
            .get("Metric")
            .ok_or_else(|| missing("MetricStat.Metric"))?;
        let namespace = required_str(metric, "Namespace")?;
        let name = required_str(metric, "MetricName")?;
        let dims = dimensions(metric.get("Dimensions"))?;
        let period = period(ms.get("Period"), "MetricStat.Period")?
            .ok_or_else(|| missing("MetricStat.Period"))?;
        let stat = Stat::parse(required_str(ms, "Stat")?)?;
        let unit = unit(ms.get("Unit"))?;
        let returned = match q.get("ReturnData") {
            None | Some(Value::Null) => true,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| invalid(format!("query {id}: ReturnData must be a boolean")))?,
        };
        if !returned {
            continue;
        }
        let label = match q.get("Label") {
            None | Some(Value::Null) => name.to_string(),
            Some(v) => v
                .as_str()
                .ok_or_else(|| invalid(format!("query {id}: Label must be a string")))?
                .to_string(),
        };
        let key = Key::with(namespace, name, dims);
        let mut points = m
            .aggregate(&key, unit, start, end, period)
            .map(|(_, p)| p)
            .unwrap_or_default();
        if !ascending {
            points.reverse();
        }
        let room = max.saturating_sub(total);
        if points.len() > room {
            points.truncate(room);
            partial = true;
        }
        total += points.len();
        results.push(json!({
            "Id": id,
            "Label": label,
            "Timestamps": points.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            "Values": points.iter().map(|(_, s)| s.get(stat)).collect::<Vec<_>>(),
            "StatusCode": if partial { "PartialData" } else { "Complete" },
        }));
    }
    let mut out = json!({ "MetricDataResults": results, "Messages": [] });
    if partial {
        out["Messages"] = json!([{
            "Code": "MaxDatapointsExceeded",
            "Value": format!("more than MaxDatapoints ({max}) datapoints match: ask for a shorter time range or a longer period"),
        }]);
    }
    Ok(out)
}

fn list_metrics(m: &Metrics, body: &Value) -> Result<Value, ApiError> {
    let namespace = optional_str(body, "Namespace")?;
    let name = optional_str(body, "MetricName")?;
    let mut filters = Vec::new();
    match body.get("Dimensions") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for f in a {
                let n = required_str(f, "Name")?;
                let v = optional_str(f, "Value")?;
                filters.push((n.to_string(), v.map(str::to_string)));
            }
        }
        Some(_) => return Err(invalid("Dimensions must be a list")),
    }
    let recent = match optional_str(body, "RecentlyActive")? {
        None => None,
        Some("PT3H") => Some(now() as i64 - 3 * 3600),
        Some(other) => {
            return Err(invalid(format!(
                "RecentlyActive must be PT3H, not {other:?}"
            )));
        }
    };
    if body
        .get("IncludeLinkedAccounts")
        .and_then(Value::as_bool)
        .unwrap_or(false)
        || body.get("OwningAccount").is_some_and(|v| !v.is_null())
    {
        return Err(invalid(
            "linked accounts are not supported: skiff has one account",
        ));
    }
    let offset = match optional_str(body, "NextToken")? {
        None => 0,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| invalid(format!("the NextToken {t:?} was not issued by ListMetrics")))?,
    };
    const PAGE: usize = 500;
    let matching: Vec<Key> = m.keys(|k, last| {
        namespace.is_none_or(|n| n == k.namespace)
            && name.is_none_or(|n| n == k.name)
            && filters.iter().all(|(fname, fvalue)| {
                k.dims
                    .iter()
                    .any(|(dn, dv)| dn == fname && fvalue.as_ref().is_none_or(|fv| fv == dv))
            })
            && recent.is_none_or(|since| last.is_some_and(|t| t >= since))
    });
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(PAGE)
        .map(|k| {
            json!({
                "Namespace": k.namespace,
                "MetricName": k.name,
                "Dimensions": k.dims.iter().map(|(n, v)| json!({"Name": n, "Value": v})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut out = json!({ "Metrics": page });
    if offset + PAGE < matching.len() {
        out["NextToken"] = json!((offset + PAGE).to_string());
    }
    Ok(out)
}
fn optional_str<'a>(v: &'a Value, name: &str) -> Result<Option<&'a str>, ApiError> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(format!("{name} must be a string"))),
    }
}

fn required_str<'a>(v: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    match optional_str(v, name)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(missing(name)),
    }
}

/// A metric's dimensions: at most 30, names unique, values given.
fn dimensions(v: Option<&Value>) -> Result<Vec<(String, String)>, ApiError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(invalid("Dimensions must be a list")),
    };
    if list.len() > 30 {
        return Err(invalid(format!(
            "a metric has at most 30 dimensions, not {}",
            list.len()
        )));
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for d in list {
        let n = required_str(d, "Name")?;
        let value = required_str(d, "Value")?;
        if out.iter().any(|(o, _)| o == n) {
            return Err(invalid(format!("the dimension {n} is given twice")));
        }
        out.push((n.to_string(), value.to_string()));
    }
    Ok(out)
}

/// A timestamp: seconds since the epoch (botocore's JSON form).
fn timestamp(body: &Value, name: &str) -> Result<f64, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Err(missing(name)),
        Some(Value::Number(n)) => n
            .as_f64()
            .ok_or_else(|| invalid(format!("{name} is not a time"))),
        Some(Value::String(s)) => s.parse::<f64>().map_err(|_| {
            invalid(format!(
                "{name} {s:?} is not a time: AWS JSON gives seconds since the epoch"
            ))
        }),
        Some(_) => Err(invalid(format!("{name} is not a time"))),
    }
}

/// [StartTime, EndTime) in whole seconds.
fn window(body: &Value) -> Result<(i64, i64), ApiError> {
    let start = timestamp(body, "StartTime")?.floor() as i64;
    let end = timestamp(body, "EndTime")?.ceil() as i64;
    if start >= end {
        return Err(invalid("StartTime must be before EndTime"));
    }
    Ok((start, end))
}

/// A period: 1, 5, 10, 30 or a multiple of 60 seconds.
fn period(v: Option<&Value>, name: &str) -> Result<Option<i64>, ApiError> {
    let p = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v
            .as_i64()
            .ok_or_else(|| invalid(format!("{name} must be an integer")))?,
    };
    if p >= 1 && ([1, 5, 10, 30].contains(&p) || p % 60 == 0) {
        Ok(Some(p))
    } else {
        Err(invalid(format!(
            "{name} {p} is not valid: use 1, 5, 10, 30 or a multiple of 60 seconds"
        )))
    }
}

fn unit(v: Option<&Value>) -> Result<Option<&'static str>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => UNITS
            .iter()
            .find(|u| *u == s)
            .copied()
            .map(Some)
            .ok_or_else(|| invalid(format!("{s:?} is not a CloudWatch unit"))),
        Some(_) => Err(invalid("Unit must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(m: &Metrics, body: Value) -> Value {
        handle(m, "GetMetricStatistics", &body).unwrap()
    }

    #[test]
    fn points_aggregate_into_aligned_periods() {
        let m = Metrics::default();
        let dims = [("LoadBalancer", "app/web/1")];
        for (t, v) in [(600, 2.0), (659, 3.0), (660, 10.0), (725, 1.0)] {
            m.record("AWS/ApplicationELB", "RequestCount", &dims, "Count", t, v);
        }
        let out = stats(
            &m,
            json!({
                "Namespace": "AWS/ApplicationELB", "MetricName": "RequestCount",
                "Dimensions": [{"Name": "LoadBalancer", "Value": "app/web/1"}],
                "StartTime": 600, "EndTime": 720, "Period": 60,
                "Statistics": ["Sum", "SampleCount", "Maximum", "Average"],
            }),
        );
        let d = out["Datapoints"].as_array().unwrap();
        assert_eq!(d.len(), 2, "{out}");
        assert_eq!(d[0]["Timestamp"], 600);
        assert_eq!(d[0]["Sum"], 5.0);
        assert_eq!(d[0]["SampleCount"], 2.0);
        assert_eq!(d[0]["Average"], 2.5);
        assert_eq!(d[1]["Sum"], 10.0, "725 is past EndTime");
        assert_eq!(d[1]["Unit"], "Count");
        // Periods start at StartTime, rounded down to the minute.
        let out = stats(
            &m,
            json!({
                "Namespace": "AWS/ApplicationELB", "MetricName": "RequestCount",
                "Dimensions": [{"Name": "LoadBalancer", "Value": "app/web/1"}],
                "StartTime": 610, "EndTime": 900, "Period": 120, "Statistics": ["Sum"],
            }),
        );
        let d = out["Datapoints"].as_array().unwrap();
        assert_eq!(
            (d[0]["Timestamp"].clone(), d[0]["Sum"].clone()),
            (json!(600), json!(15.0))
        );
        assert_eq!(
            (d[1]["Timestamp"].clone(), d[1]["Sum"].clone()),
            (json!(720), json!(1.0))
        );
        // A different dimension set is a different metric.
        let other = stats(
            &m,
            json!({
                "Namespace": "AWS/ApplicationELB", "MetricName": "RequestCount",
                "StartTime": 600, "EndTime": 720, "Period": 60, "Statistics": ["Sum"],
            }),
        );
        assert_eq!(other["Datapoints"], json!([]));
    }

    #[test]
    fn counters_count_growth_and_restarts() {
        let m = Metrics::default();
        assert_eq!(m.delta("a", 5), 5);
        assert_eq!(m.delta("a", 5), 0);
        assert_eq!(m.delta("a", 9), 4);
        assert_eq!(m.delta("a", 2), 2, "went down: started over");
    }

    #[test]
    fn bad_queries_are_refused_by_name() {
        let m = Metrics::default();
        let base = json!({
            "Namespace": "N", "MetricName": "M", "StartTime": 0, "EndTime": 60,
            "Period": 60, "Statistics": ["Sum"],
        });
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            handle(&m, "GetMetricStatistics", &b).unwrap_err()
        };
        assert!(with("Period", json!(7)).message.contains("Period 7"));
        assert!(with("Statistics", json!(["p99"])).message.contains("p99"));
        assert_eq!(
            with("Unit", json!("Parsecs")).kind,
            "InvalidParameterValueException"
        );
        assert!(with("EndTime", json!(0)).message.contains("before"));
        let e = with("EndTime", json!(100_000));
        assert_eq!(
            e.kind, "InvalidParameterCombinationException",
            "{}",
            e.message
        );
        let e = handle(
            &m,
            "GetMetricData",
            &json!({"StartTime": 0, "EndTime": 60, "MetricDataQueries": [{"Id": "Bad"}]}),
        )
        .unwrap_err();
        assert_eq!(e.kind, "ValidationError");
    }
}
