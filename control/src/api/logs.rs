//! CloudWatch Logs' API (`Logs_20140328`) over the log store:
//! CreateLogGroup, DeleteLogGroup, DescribeLogGroups, CreateLogStream,
//! DescribeLogStreams, PutLogEvents (the write path `skiff agent` on
//! another machine uses for its containers' awslogs output, as ECS's
//! agent does), GetLogEvents, FilterLogEvents; retention, tags and
//! DeleteLogStream are in `logs_groups`.

use crate::core::logs::{FilterPattern, LogStore, check_group_name};
use crate::error::ApiError;
use serde_json::{Value, json};

/// The most events one GetLogEvents/FilterLogEvents answer carries.
const MAX_EVENTS: i64 = 10_000;

/// Refuses request fields skiff's log store does not honour.
fn refuse(body: &Value, fields: &[&str]) -> Result<(), ApiError> {
    for f in fields {
        if body.get(*f).is_some_and(|v| !v.is_null()) {
            return Err(ApiError::invalid_parameter(format!(
                "{f} is not supported by skiff's log store; remove it"
            )));
        }
    }
    Ok(())
}

fn no_group() -> ApiError {
    ApiError::not_found(
        "ResourceNotFoundException",
        "The specified log group does not exist.",
    )
}

/// CloudWatch's log stream names: 1 to 512 characters, no `:` or `*`.
fn check_stream_name(name: &str) -> Result<(), ApiError> {
    if name.chars().count() > 512 || name.contains([':', '*']) {
        return Err(ApiError::invalid_parameter(format!(
            "Log stream name {name:?} is invalid: 1 to 512 characters, without ':' or '*'."
        )));
    }
    Ok(())
}

/// PutLogEvents' rules: 1 to 10,000 events, at most 1,048,576 bytes
/// (each message's UTF-8 bytes plus 26), in chronological order, spanning
/// at most 24 hours. Events more than 14 days old or 2 hours ahead of
/// `now_ms` are not stored and are reported as AWS does
/// (`rejectedLogEventsInfo`): the range to store and that report.
fn check_batch(
    events: &[(i64, String)],
    now_ms: i64,
) -> Result<(std::ops::Range<usize>, serde_json::Map<String, Value>), ApiError> {
    if events.is_empty() || events.len() > 10_000 {
        return Err(ApiError::invalid_parameter(
            "logEvents must hold 1 to 10000 events.",
        ));
    }
    let bytes: usize = events.iter().map(|(_, m)| m.len() + 26).sum();
    if bytes > 1_048_576 {
        return Err(ApiError::invalid_parameter(format!(
            "The batch is {bytes} bytes; PutLogEvents takes at most 1048576 (each message's bytes plus 26)."
        )));
    }
    if events.windows(2).any(|w| w[1].0 < w[0].0) {
        return Err(ApiError::invalid_parameter(
            "Log events in a single PutLogEvents request must be in chronological order.",
        ));
    }
    let (first, last) = (events[0].0, events[events.len() - 1].0);
    if last - first > 24 * 3600 * 1000 {
        return Err(ApiError::invalid_parameter(
            "The log events in a single PutLogEvents request cannot span more than 24 hours.",
        ));
    }
    let too_old = events
        .iter()
        .take_while(|(t, _)| *t < now_ms - 14 * 24 * 3600 * 1000)
        .count();
    let too_new = events
        .iter()
        .position(|(t, _)| *t > now_ms + 2 * 3600 * 1000)
        .unwrap_or(events.len());
    let mut rejected = serde_json::Map::new();
    if too_old > 0 {
        rejected.insert("tooOldLogEventEndIndex".into(), json!(too_old));
    }
    if too_new < events.len() {
        rejected.insert("tooNewLogEventStartIndex".into(), json!(too_new));
    }
    Ok((too_old..too_new.max(too_old), rejected))
}

/// Handles one Logs API operation.
pub fn handle(store: &LogStore, op: &str, body: &Value, region: &str) -> Result<Value, ApiError> {
    let str_field = |name: &str| body.get(name).and_then(Value::as_str);
    let required = |name: &str| {
        str_field(name)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::invalid_parameter(format!("{name} is required")))
    };
    let limit = |default: i64, max: i64| -> Result<i64, ApiError> {
        match body.get("limit") {
            None | Some(Value::Null) => Ok(default),
            Some(v) => match v.as_i64() {
                Some(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::invalid_parameter(format!(
                    "limit must be between 1 and {max}"
                ))),
            },
        }
    };
    let time = |name: &str, default: i64| body.get(name).and_then(Value::as_i64).unwrap_or(default);
    let bad_token = || ApiError::invalid_parameter("The specified nextToken is invalid.");
    // DescribeLogStreams and FilterLogEvents page with a number.
    let numeric_token = || -> Result<i64, ApiError> {
        str_field("nextToken")
            .map(|t| t.parse().map_err(|_| bad_token()))
            .transpose()
            .map(|t| t.unwrap_or(0))
    };
    let group_arn =
        |name: &str| crate::core::model::arn("logs", region, &format!("log-group:{name}:*"));
    match op {
        "CreateLogGroup" => {
            refuse(body, &["kmsKeyId"])?;
            if let Some(class) = str_field("logGroupClass")
                && class != "STANDARD"
            {
                return Err(ApiError::invalid_parameter(format!(
                    "logGroupClass {class} is not supported by skiff: every group is STANDARD (stored on this machine's disk)"
                )));
            }
            let name = required("logGroupName")?;
            check_group_name(name)?;
            if !store.create_group(name)? {
                return Err(ApiError::not_found(
                    "ResourceAlreadyExistsException",
                    "The specified log group already exists",
                ));
            }
            if body.get("tags").is_some_and(|t| !t.is_null()) {
                let tagged = super::logs_groups::handle(
                    store,
                    "TagLogGroup",
                    &json!({"logGroupName": name, "tags": body["tags"]}),
                );
                if let Some(Err(e)) = tagged {
                    // Nothing half-made.
                    let _ = store.delete_group(name);
                    return Err(e);
                }
            }
            Ok(json!({}))
        }
        "CreateLogStream" => {
            let group = required("logGroupName")?;
            let stream = required("logStreamName")?;
            check_stream_name(stream)?;
            if !store.group_exists(group)? {
                return Err(no_group());
            }
            if store.stream_exists(group, stream)? {
                return Err(ApiError::not_found(
                    "ResourceAlreadyExistsException",
                    "The specified log stream already exists",
                ));
            }
            store.create_stream(group, stream)?;
            Ok(json!({}))
        }
        "PutLogEvents" => {
            refuse(body, &["entity"])?;
            let group = required("logGroupName")?;
            let stream = required("logStreamName")?;
            let events: Vec<(i64, String)> = body
                .get("logEvents")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|e| {
                            Some((
                                e.get("timestamp")?.as_i64()?,
                                e.get("message")?.as_str()?.to_string(),
                            ))
                        })
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| ApiError::invalid_parameter("logEvents is required"))?
                .ok_or_else(|| {
                    ApiError::invalid_parameter("each of logEvents needs a timestamp and a message")
                })?;
            if !store.group_exists(group)? {
                return Err(no_group());
            }
            if !store.stream_exists(group, stream)? {
                return Err(ApiError::not_found(
                    "ResourceNotFoundException",
                    "The specified log stream does not exist.",
                ));
            }
            let now_ms = (crate::core::model::now() * 1000.0) as i64;
            let (mut accepted, mut rejected) = check_batch(&events, now_ms)?;
            // Events older than the group's retention are refused, as AWS
            // refuses them (expiredLogEventEndIndex).
            if let Some(days) = store.retention(group)? {
                let expired = events
                    .iter()
                    .take_while(|(t, _)| *t < now_ms - days * 24 * 3600 * 1000)
                    .count();
                if expired > 0 {
                    rejected.insert("expiredLogEventEndIndex".into(), json!(expired));
                    accepted = expired.max(accepted.start)..accepted.end.max(expired);
                }
            }
            store.append(group, stream, &events[accepted.clone()])?;
            let mut out = json!({ "nextSequenceToken": format!("{:056}", (crate::core::model::now() * 1000.0) as i64) });
            if !rejected.is_empty() {
                out["rejectedLogEventsInfo"] = Value::Object(rejected);
            }
            Ok(out)
        }
        "DeleteLogGroup" => {
            store.delete_group(required("logGroupName")?)?;
            Ok(json!({}))
        }
        "DescribeLogGroups" => {
            refuse(
                body,
                &[
                    "logGroupNamePattern",
                    "logGroupIdentifiers",
                    "accountIdentifiers",
                ],
            )?;
            let prefix = str_field("logGroupNamePrefix").unwrap_or("");
            let limit = limit(50, 50)?;
            let after = str_field("nextToken").unwrap_or("");
            let (groups, next) = store.groups(prefix, after, limit)?;
            let groups: Vec<Value> = groups
                .iter()
                .map(|g| {
                    let mut v = json!({
                        "logGroupName": g.name,
                        "creationTime": g.created,
                        "metricFilterCount": 0,
                        "arn": group_arn(&g.name),
                        "logGroupArn": group_arn(&g.name).trim_end_matches(":*"),
                        "storedBytes": g.stored_bytes,
                        "logGroupClass": "STANDARD",
                    });
                    if let Some(d) = g.retention_days {
                        v["retentionInDays"] = json!(d);
                    }
                    v
                })
                .collect();
            let mut out = json!({ "logGroups": groups });
            if let Some(n) = next {
                out["nextToken"] = json!(n);
            }
            Ok(out)
        }
        "DescribeLogStreams" => {
            let group = required("logGroupName")?;
            let prefix = str_field("logStreamNamePrefix").unwrap_or("");
            let descending = body
                .get("descending")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let by_time = body.get("orderBy").and_then(Value::as_str) == Some("LastEventTime");
            if by_time && !prefix.is_empty() {
                return Err(ApiError::invalid_parameter(
                    "Cannot order by LastEventTime with a logStreamNamePrefix.",
                ));
            }
            let limit = limit(50, 50)?;
            let offset = numeric_token()?;
            let found = store.streams(group, prefix, by_time, descending, limit, offset)?;
            let mut streams: Vec<Value> = found
                .iter()
                .map(|s| {
                    let mut v = json!({
                        "logStreamName": s.name,
                        "creationTime": s.created,
                        "arn": crate::core::model::arn("logs", region, &format!("log-group:{group}:log-stream:{}", s.name)),
                        "storedBytes": 0,
                    });
                    if let (Some(f), Some(l), Some(i)) = (s.first_event, s.last_event, s.last_ingestion) {
                        v["firstEventTimestamp"] = json!(f);
                        v["lastEventTimestamp"] = json!(l);
                        v["lastIngestionTime"] = json!(i);
                    }
                    v
                })
                .collect();
            let mut out = json!({});
            if streams.len() as i64 > limit {
                streams.truncate(limit as usize);
                out["nextToken"] = json!((offset + limit).to_string());
            }
            out["logStreams"] = json!(streams);
            Ok(out)
        }
        "GetLogEvents" => {
            let group = required("logGroupName")?;
            let stream = required("logStreamName")?;
            let limit = limit(MAX_EVENTS, MAX_EVENTS)?;
            let from_head = body
                .get("startFromHead")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let (start, end) = (time("startTime", i64::MIN), time("endTime", i64::MAX));
            let token = str_field("nextToken");
            // Tokens: f/ID reads forward after event ID, b/ID backward
            // before it.
            let (forward, bound) = match token {
                None => (from_head, None),
                Some(t) => {
                    let parse = |s: &str| s.parse::<i64>().map_err(|_| bad_token());
                    match t.split_once('/') {
                        Some(("f", id)) => (true, Some(parse(id)?)),
                        Some(("b", id)) => (false, Some(parse(id)?)),
                        _ => return Err(bad_token()),
                    }
                }
            };
            let bound_value = bound.unwrap_or(if forward { 0 } else { i64::MAX });
            let rows = store.events(group, stream, forward, bound_value, start, end, limit)?;
            // At the end of the stream the forward token stays the one
            // given, which is how readers know to stop.
            let next_forward = match (rows.last(), token) {
                (Some(last), _) => format!("f/{}", last.id),
                (None, Some(t)) if t.starts_with("f/") => t.to_string(),
                (None, _) => format!("f/{}", bound.unwrap_or(0)),
            };
            let next_backward = match rows.first() {
                Some(first) => format!("b/{}", first.id),
                None => token
                    .filter(|t| t.starts_with("b/"))
                    .map(String::from)
                    .unwrap_or_else(|| "b/0".into()),
            };
            let events: Vec<Value> = rows
                .into_iter()
                .map(|e| {
                    json!({"timestamp": e.timestamp, "message": e.message, "ingestionTime": e.ingested})
                })
                .collect();
            Ok(json!({
                "events": events,
                "nextForwardToken": next_forward,
                "nextBackwardToken": next_backward,
            }))
        }
        "FilterLogEvents" => {
            let group = required("logGroupName")?;
            let limit = limit(MAX_EVENTS, MAX_EVENTS)?;
            let (start, end) = (time("startTime", i64::MIN), time("endTime", i64::MAX));
            let streams: Vec<String> = match body.get("logStreamNames") {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect(),
                _ => Vec::new(),
            };
            let stream_prefix = str_field("logStreamNamePrefix").unwrap_or("");
            if !streams.is_empty() && !stream_prefix.is_empty() {
                return Err(ApiError::invalid_parameter(
                    "logStreamNames and logStreamNamePrefix cannot both be given.",
                ));
            }
            let pattern = FilterPattern::parse(str_field("filterPattern").unwrap_or(""))?;
            let after = numeric_token()?;
            let (found, next) =
                store.filter(group, after, start, end, stream_prefix, limit, |e| {
                    (streams.is_empty() || streams.contains(&e.stream))
                        && pattern.matches(&e.message)
                })?;
            let events: Vec<Value> = found
                .into_iter()
                .map(|e| {
                    json!({
                        "logStreamName": e.stream, "timestamp": e.timestamp, "message": e.message,
                        "ingestionTime": e.ingested, "eventId": e.id.to_string(),
                    })
                })
                .collect();
            let mut out = json!({ "events": events, "searchedLogStreams": [] });
            if let Some(n) = next {
                out["nextToken"] = json!(n.to_string());
            }
            Ok(out)
        }
        other => super::logs_groups::handle(store, other, body).unwrap_or_else(|| {
            Err(ApiError::unknown_operation(&format!(
                "Logs_20140328.{other}"
            )))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::logs::millis;
    use skiff_channel::logs::LogDestination;

    fn store() -> (tempfile::TempDir, LogStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = LogStore::open(&dir.path().join("logs.db")).unwrap();
        (dir, s)
    }

    #[test]
    fn lines_become_events_and_forward_tokens_stop_at_the_end() {
        let (_d, s) = store();
        // The lines an agent's sink makes of "one\ntw", "o\r\nthree" (see
        // skiff-agent's `lines_become_events`).
        s.open_stream("/ecs/job", "app/t1", true).unwrap();
        for line in ["one", "two", "three"] {
            s.put_events("/ecs/job", "app/t1", &[(millis(), line.into())])
                .unwrap();
        }
        let req = json!({"logGroupName": "/ecs/job", "logStreamName": "app/t1", "startFromHead": true, "limit": 2});
        let first = handle(&s, "GetLogEvents", &req, "us-east-1").unwrap();
        let msgs: Vec<&str> = first["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["message"].as_str().unwrap())
            .collect();
        assert_eq!(msgs, ["one", "two"]);
        let token = first["nextForwardToken"].as_str().unwrap();
        let mut req2 = req.clone();
        req2["nextToken"] = json!(token);
        let second = handle(&s, "GetLogEvents", &req2, "us-east-1").unwrap();
        assert_eq!(second["events"][0]["message"], "three");
        let end = second["nextForwardToken"].as_str().unwrap().to_string();
        req2["nextToken"] = json!(end);
        let third = handle(&s, "GetLogEvents", &req2, "us-east-1").unwrap();
        assert_eq!(third["events"].as_array().unwrap().len(), 0);
        assert_eq!(third["nextForwardToken"].as_str().unwrap(), end);
        // Without startFromHead: the latest events.
        let tail = handle(
            &s,
            "GetLogEvents",
            &json!({"logGroupName": "/ecs/job", "logStreamName": "app/t1", "limit": 1}),
            "us-east-1",
        )
        .unwrap();
        assert_eq!(tail["events"][0]["message"], "three");
    }

    #[test]
    fn filter_patterns_and_missing_things() {
        let (_d, s) = store();
        s.create_group("g").unwrap();
        s.create_stream("g", "a").unwrap();
        s.append(
            "g",
            "a",
            &[
                (1, "GET /health 200".into()),
                (2, "GET /x 500 error".into()),
                (3, "POST /y 201".into()),
            ],
        )
        .unwrap();
        let find = |p: &str| -> Vec<String> {
            handle(
                &s,
                "FilterLogEvents",
                &json!({"logGroupName": "g", "filterPattern": p}),
                "r",
            )
            .unwrap()["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["message"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(find("GET -error"), ["GET /health 200"]);
        assert_eq!(find("?201 ?500").len(), 2);
        assert_eq!(find("\"x 500\""), ["GET /x 500 error"]);
        let err = handle(
            &s,
            "GetLogEvents",
            &json!({"logGroupName": "nope", "logStreamName": "a"}),
            "r",
        )
        .unwrap_err();
        assert_eq!(err.kind, "ResourceNotFoundException");
        // JSON and space-delimited patterns are AWS's too; a broken one is
        // refused.
        assert_eq!(find("{ $.x = 1 }"), Vec::<String>::new());
        assert_eq!(
            find("[method, path, status = 5*, ...]"),
            ["GET /x 500 error"]
        );
        let err = handle(
            &s,
            "FilterLogEvents",
            &json!({"logGroupName": "g", "filterPattern": "{ $.x = }"}),
            "r",
        )
        .unwrap_err();
        assert_eq!(err.kind, "InvalidParameterException");
        // Fields the store does not honour are refused, not ignored.
        for (op, body) in [
            (
                "CreateLogGroup",
                json!({"logGroupName": "h", "kmsKeyId": "k"}),
            ),
            ("DescribeLogGroups", json!({"logGroupNamePattern": "x"})),
        ] {
            let err = handle(&s, op, &body, "r").unwrap_err();
            assert_eq!(err.kind, "InvalidParameterException", "{op} {body}");
        }
        assert!(!s.group_exists("h").unwrap());
    }
}

#[cfg(test)]
mod write_tests {
    use super::*;

    #[test]
    fn put_log_events_batches_follow_cloudwatchs_rules() {
        let now = 2_000_000_000_000;
        let ev = |t: i64| (t, "x".to_string());
        let (ok, rejected) = check_batch(&[ev(now - 5), ev(now)], now).unwrap();
        assert_eq!((ok, rejected.len()), (0..2, 0));
        let day = 24 * 3600 * 1000;
        // Too old at the front, too new at the back: stored between.
        let (ok, rejected) = check_batch(
            &[
                ev(now - 14 * day - 1),
                ev(now - 14 * day + 1),
                ev(now - 14 * day + 2),
            ],
            now,
        )
        .unwrap();
        assert_eq!(ok, 1..3);
        assert_eq!(rejected["tooOldLogEventEndIndex"], json!(1));
        let hour = 3600 * 1000;
        let (ok, rejected) = check_batch(&[ev(now), ev(now + 3 * hour)], now).unwrap();
        assert_eq!(ok, 0..1);
        assert_eq!(rejected["tooNewLogEventStartIndex"], json!(1));
        for (bad, why) in [
            (vec![ev(now), ev(now - 1)], "chronological"),
            (vec![], "1 to 10000"),
            (vec![ev(now - 2 * day), ev(now)], "24 hours"),
            (vec![(now, "y".repeat(1_048_576))], "1048576"),
        ] {
            let e = check_batch(&bad, now).unwrap_err();
            assert!(e.message.contains(why), "{}", e.message);
        }
        assert!(check_stream_name("ecs/web/abc").is_ok());
        assert!(check_stream_name("a:b").is_err());
    }
}
