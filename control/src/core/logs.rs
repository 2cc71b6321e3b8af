//! The `awslogs` store: log groups, streams and events, served through
//! CloudWatch Logs' API (DescribeLogGroups, DescribeLogStreams,
//! GetLogEvents, FilterLogEvents, CreateLogGroup, DeleteLogGroup).
//!
//! Agents write containers' output here (as [`LogDestination`]), one
//! event per line, stamped when the line was written. Events live in their own SQLite database
//! (`logs.db`): they are many and small, and losing the last ones in a power
//! cut is acceptable where losing a task is not (so `synchronous=NORMAL`).

use crate::core::model::now;
use crate::error::ApiError;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};
use skiff_channel::logs::{LogDestination, OpenStreamError};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Log groups, streams and events.
#[derive(Clone)]
pub struct LogStore {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS groups (
    name TEXT PRIMARY KEY NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS streams (
    grp TEXT NOT NULL,
    name TEXT NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (grp, name)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    grp TEXT NOT NULL,
    stream TEXT NOT NULL,
    ts INTEGER NOT NULL,
    ingested INTEGER NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_stream ON events (grp, stream, id);
";

fn sql(e: rusqlite::Error) -> ApiError {
    ApiError::server(format!("the log store failed: {e}"))
}

fn millis() -> i64 {
    (now() * 1000.0) as i64
}

/// The most events one GetLogEvents/FilterLogEvents answer carries.
const MAX_EVENTS: i64 = 10_000;

impl LogStore {
    /// Opens (creating) the store at `path`.
    pub fn open(path: &Path) -> Result<LogStore, ApiError> {
        let conn = Connection::open(path).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        Ok(LogStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| ApiError::server("the log store's lock is poisoned"))?;
        f(&mut conn)
    }

    /// Creates a group; `Ok(false)` if it already existed.
    pub fn create_group(&self, name: &str) -> Result<bool, ApiError> {
        self.with(|c| {
            let n = c
                .execute(
                    "INSERT OR IGNORE INTO groups (name, created) VALUES (?1, ?2)",
                    params![name, millis()],
                )
                .map_err(sql)?;
            Ok(n == 1)
        })
    }

    /// Whether a group exists.
    pub fn group_exists(&self, name: &str) -> Result<bool, ApiError> {
        self.with(|c| {
            c.query_row("SELECT 1 FROM groups WHERE name = ?1", [name], |_| Ok(()))
                .optional()
                .map(|r| r.is_some())
                .map_err(sql)
        })
    }

    /// Creates a stream in an existing group (nothing if it exists).
    pub fn create_stream(&self, group: &str, stream: &str) -> Result<(), ApiError> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO streams (grp, name, created) VALUES (?1, ?2, ?3)",
                params![group, stream, millis()],
            )
            .map_err(sql)?;
            Ok(())
        })
    }

    /// Appends events (timestamp in ms, message) to a stream.
    pub fn append(
        &self,
        group: &str,
        stream: &str,
        events: &[(i64, String)],
    ) -> Result<(), ApiError> {
        self.with(|c| {
            let tx = c.transaction().map_err(sql)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO events (grp, stream, ts, ingested, message) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .map_err(sql)?;
                let ingested = millis();
                for (ts, message) in events {
                    stmt.execute(params![group, stream, ts, ingested, message])
                        .map_err(sql)?;
                }
            }
            tx.commit().map_err(sql)
        })
    }

    fn require_group(c: &Connection, group: &str) -> Result<(), ApiError> {
        let found = c
            .query_row("SELECT 1 FROM groups WHERE name = ?1", [group], |_| Ok(()))
            .optional()
            .map_err(sql)?;
        match found {
            Some(()) => Ok(()),
            None => Err(ApiError::not_found(
                "ResourceNotFoundException",
                "The specified log group does not exist.",
            )),
        }
    }

    /// Handles one Logs API operation.
    pub fn handle(&self, op: &str, body: &Value, region: &str) -> Result<Value, ApiError> {
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
        let time =
            |name: &str, default: i64| body.get(name).and_then(Value::as_i64).unwrap_or(default);
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
                refuse(body, &["tags", "kmsKeyId", "logGroupClass"])?;
                let name = required("logGroupName")?;
                check_group_name(name)?;
                if !self.create_group(name)? {
                    return Err(ApiError::not_found(
                        "ResourceAlreadyExistsException",
                        "The specified log group already exists",
                    ));
                }
                Ok(json!({}))
            }
            "DeleteLogGroup" => {
                let name = required("logGroupName")?;
                self.with(|c| {
                    Self::require_group(c, name)?;
                    let tx = c.transaction().map_err(sql)?;
                    for table in ["events", "streams"] {
                        tx.execute(&format!("DELETE FROM {table} WHERE grp = ?1"), [name])
                            .map_err(sql)?;
                    }
                    tx.execute("DELETE FROM groups WHERE name = ?1", [name])
                        .map_err(sql)?;
                    tx.commit().map_err(sql)
                })?;
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
                self.with(|c| {
                    let mut stmt = c
                        .prepare_cached(
                            "SELECT g.name, g.created,
                                    (SELECT COALESCE(SUM(LENGTH(message)), 0) FROM events e WHERE e.grp = g.name)
                             FROM groups g WHERE g.name >= ?1 AND g.name > ?2 ORDER BY g.name",
                        )
                        .map_err(sql)?;
                    let rows = stmt
                        .query_map(params![prefix, after], |r| {
                            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                        })
                        .map_err(sql)?;
                    let mut groups = Vec::new();
                    let mut next = None;
                    for row in rows {
                        let (name, created, bytes) = row.map_err(sql)?;
                        if !name.starts_with(prefix) {
                            break;
                        }
                        if groups.len() as i64 == limit {
                            next = groups
                                .last()
                                .and_then(|g: &Value| g["logGroupName"].as_str().map(String::from));
                            break;
                        }
                        groups.push(json!({
                            "logGroupName": name,
                            "creationTime": created,
                            "metricFilterCount": 0,
                            "arn": group_arn(&name),
                            "logGroupArn": group_arn(&name).trim_end_matches(":*"),
                            "storedBytes": bytes,
                        }));
                    }
                    let mut out = json!({ "logGroups": groups });
                    if let Some(n) = next {
                        out["nextToken"] = json!(n);
                    }
                    Ok(out)
                })
            }
            "DescribeLogStreams" => {
                let group = required("logGroupName")?;
                let prefix = str_field("logStreamNamePrefix").unwrap_or("");
                let descending = body
                    .get("descending")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if body.get("orderBy").and_then(Value::as_str) == Some("LastEventTime")
                    && !prefix.is_empty()
                {
                    return Err(ApiError::invalid_parameter(
                        "Cannot order by LastEventTime with a logStreamNamePrefix.",
                    ));
                }
                let limit = limit(50, 50)?;
                let offset = numeric_token()?;
                self.with(|c| {
                    Self::require_group(c, group)?;
                    let order = if descending { "DESC" } else { "ASC" };
                    let by_time = body.get("orderBy").and_then(Value::as_str) == Some("LastEventTime");
                    let sort = if by_time { "last_ts" } else { "s.name" };
                    let mut stmt = c
                        .prepare(&format!(
                            "SELECT s.name, s.created,
                                    (SELECT MIN(ts) FROM events e WHERE e.grp = s.grp AND e.stream = s.name),
                                    (SELECT MAX(ts) FROM events e WHERE e.grp = s.grp AND e.stream = s.name) AS last_ts,
                                    (SELECT MAX(ingested) FROM events e WHERE e.grp = s.grp AND e.stream = s.name)
                             FROM streams s WHERE s.grp = ?1 AND substr(s.name, 1, length(?2)) = ?2
                             ORDER BY {sort} {order} LIMIT ?3 OFFSET ?4"
                        ))
                        .map_err(sql)?;
                    let rows = stmt
                        .query_map(params![group, prefix, limit + 1, offset], |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, i64>(1)?,
                                r.get::<_, Option<i64>>(2)?,
                                r.get::<_, Option<i64>>(3)?,
                                r.get::<_, Option<i64>>(4)?,
                            ))
                        })
                        .map_err(sql)?;
                    let mut streams = Vec::new();
                    for row in rows {
                        let (name, created, first, last, ingested) = row.map_err(sql)?;
                        let mut s = json!({
                            "logStreamName": name,
                            "creationTime": created,
                            "arn": crate::core::model::arn("logs", region, &format!("log-group:{group}:log-stream:{name}")),
                            "storedBytes": 0,
                        });
                        if let (Some(f), Some(l), Some(i)) = (first, last, ingested) {
                            s["firstEventTimestamp"] = json!(f);
                            s["lastEventTimestamp"] = json!(l);
                            s["lastIngestionTime"] = json!(i);
                        }
                        streams.push(s);
                    }
                    let mut out = json!({});
                    if streams.len() as i64 > limit {
                        streams.truncate(limit as usize);
                        out["nextToken"] = json!((offset + limit).to_string());
                    }
                    out["logStreams"] = json!(streams);
                    Ok(out)
                })
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
                self.with(|c| {
                    Self::require_group(c, group)?;
                    let exists = c
                        .query_row(
                            "SELECT 1 FROM streams WHERE grp = ?1 AND name = ?2",
                            params![group, stream],
                            |_| Ok(()),
                        )
                        .optional()
                        .map_err(sql)?;
                    if exists.is_none() {
                        return Err(ApiError::not_found(
                            "ResourceNotFoundException",
                            "The specified log stream does not exist.",
                        ));
                    }
                    let (cmp, order) = if forward { (">", "ASC") } else { ("<", "DESC") };
                    let bound_value = bound.unwrap_or(if forward { 0 } else { i64::MAX });
                    let mut stmt = c
                        .prepare_cached(&format!(
                            "SELECT id, ts, ingested, message FROM events
                             WHERE grp = ?1 AND stream = ?2 AND id {cmp} ?3 AND ts >= ?4 AND ts < ?5
                             ORDER BY id {order} LIMIT ?6"
                        ))
                        .map_err(sql)?;
                    let mut rows: Vec<(i64, i64, i64, String)> = stmt
                        .query_map(
                            params![group, stream, bound_value, start, end, limit],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                        )
                        .map_err(sql)?
                        .collect::<Result<_, _>>()
                        .map_err(sql)?;
                    if !forward {
                        rows.reverse();
                    }
                    // At the end of the stream the forward token stays the
                    // one given, which is how readers know to stop.
                    let next_forward = match (rows.last(), token) {
                        (Some(last), _) => format!("f/{}", last.0),
                        (None, Some(t)) if t.starts_with("f/") => t.to_string(),
                        (None, _) => format!("f/{}", bound.unwrap_or(0)),
                    };
                    let next_backward = match rows.first() {
                        Some(first) => format!("b/{}", first.0),
                        None => token
                            .filter(|t| t.starts_with("b/"))
                            .map(String::from)
                            .unwrap_or_else(|| "b/0".into()),
                    };
                    let events: Vec<Value> = rows
                        .into_iter()
                        .map(|(_, ts, ingested, message)| {
                            json!({"timestamp": ts, "message": message, "ingestionTime": ingested})
                        })
                        .collect();
                    Ok(json!({
                        "events": events,
                        "nextForwardToken": next_forward,
                        "nextBackwardToken": next_backward,
                    }))
                })
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
                self.with(|c| {
                    Self::require_group(c, group)?;
                    let mut stmt = c
                        .prepare_cached(
                            "SELECT id, stream, ts, ingested, message FROM events
                             WHERE grp = ?1 AND id > ?2 AND ts >= ?3 AND ts <= ?4 AND substr(stream, 1, length(?5)) = ?5
                             ORDER BY id",
                        )
                        .map_err(sql)?;
                    let rows = stmt
                        .query_map(params![group, after, start, end, stream_prefix], |r| {
                            Ok((
                                r.get::<_, i64>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, i64>(2)?,
                                r.get::<_, i64>(3)?,
                                r.get::<_, String>(4)?,
                            ))
                        })
                        .map_err(sql)?;
                    let mut events = Vec::new();
                    let mut next = None;
                    for row in rows {
                        let (id, s, ts, ingested, message) = row.map_err(sql)?;
                        if !streams.is_empty() && !streams.contains(&s) {
                            continue;
                        }
                        if !pattern.matches(&message) {
                            continue;
                        }
                        if events.len() as i64 == limit {
                            next = Some(id - 1);
                            break;
                        }
                        events.push(json!({
                            "logStreamName": s, "timestamp": ts, "message": message,
                            "ingestionTime": ingested, "eventId": id.to_string(),
                        }));
                    }
                    let mut out = json!({ "events": events, "searchedLogStreams": [] });
                    if let Some(n) = next {
                        out["nextToken"] = json!(n.to_string());
                    }
                    Ok(out)
                })
            }
            other => Err(ApiError::unknown_operation(&format!(
                "Logs_20140328.{other}"
            ))),
        }
    }
}

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

pub(crate) fn check_group_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=512).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-/.#".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_parameter(format!(
            "Log group name {name:?} is invalid: 1 to 512 of a-z, A-Z, 0-9, '_', '-', '/', '.', '#'."
        )))
    }
}

/// CloudWatch Logs' plain filter patterns: terms that must all appear,
/// `"quoted phrases"`, `-term` for terms that must not, `?term` for terms
/// of which one must. JSON and space-delimited patterns are refused.
#[derive(Debug)]
struct FilterPattern {
    all: Vec<String>,
    none: Vec<String>,
    any: Vec<String>,
}

impl FilterPattern {
    fn parse(s: &str) -> Result<FilterPattern, ApiError> {
        let s = s.trim();
        if s.starts_with('{') || s.starts_with('[') {
            return Err(ApiError::invalid_parameter(
                "JSON and space-delimited filter patterns are not supported by skiff: use terms, \"phrases\", -term or ?term",
            ));
        }
        let mut p = FilterPattern {
            all: vec![],
            none: vec![],
            any: vec![],
        };
        let mut rest = s;
        while !rest.is_empty() {
            rest = rest.trim_start();
            let (kind, after) = match rest.chars().next() {
                Some('-') => ('-', &rest[1..]),
                Some('?') => ('?', &rest[1..]),
                _ => (' ', rest),
            };
            let (term, tail) = if let Some(q) = after.strip_prefix('"') {
                match q.split_once('"') {
                    Some((t, tail)) => (t, tail),
                    None => {
                        return Err(ApiError::invalid_parameter(
                            "Invalid filter pattern: a quoted phrase is not closed.",
                        ));
                    }
                }
            } else {
                match after.split_once(char::is_whitespace) {
                    Some((t, tail)) => (t, tail),
                    None => (after, ""),
                }
            };
            if !term.is_empty() {
                match kind {
                    '-' => p.none.push(term.into()),
                    '?' => p.any.push(term.into()),
                    _ => p.all.push(term.into()),
                }
            }
            rest = tail;
        }
        Ok(p)
    }

    fn matches(&self, message: &str) -> bool {
        self.all.iter().all(|t| message.contains(t.as_str()))
            && !self.none.iter().any(|t| message.contains(t.as_str()))
            && (self.any.is_empty() || self.any.iter().any(|t| message.contains(t.as_str())))
    }
}

/// Agents write their containers' awslogs output here (inside `skiff
/// serve`; see `skiff_channel::logs`).
impl LogDestination for LogStore {
    fn open_stream(
        &self,
        group: &str,
        stream: &str,
        create_group: bool,
    ) -> Result<(), OpenStreamError> {
        check_group_name(group).map_err(|e| OpenStreamError::InvalidGroupName(e.message))?;
        let failed = |e: ApiError| OpenStreamError::Failed(e.message);
        if !self.group_exists(group).map_err(failed)? {
            if !create_group {
                return Err(OpenStreamError::NoSuchGroup(group.to_string()));
            }
            self.create_group(group).map_err(failed)?;
        }
        self.create_stream(group, stream).map_err(failed)
    }

    fn put_events(
        &self,
        group: &str,
        stream: &str,
        events: &[(i64, String)],
    ) -> Result<(), String> {
        self.append(group, stream, events).map_err(|e| e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let first = s.handle("GetLogEvents", &req, "us-east-1").unwrap();
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
        let second = s.handle("GetLogEvents", &req2, "us-east-1").unwrap();
        assert_eq!(second["events"][0]["message"], "three");
        let end = second["nextForwardToken"].as_str().unwrap().to_string();
        req2["nextToken"] = json!(end);
        let third = s.handle("GetLogEvents", &req2, "us-east-1").unwrap();
        assert_eq!(third["events"].as_array().unwrap().len(), 0);
        assert_eq!(third["nextForwardToken"].as_str().unwrap(), end);
        // Without startFromHead: the latest events.
        let tail = s
            .handle(
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
            s.handle(
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
        let err = s
            .handle(
                "GetLogEvents",
                &json!({"logGroupName": "nope", "logStreamName": "a"}),
                "r",
            )
            .unwrap_err();
        assert_eq!(err.kind, "ResourceNotFoundException");
        let err = s
            .handle(
                "FilterLogEvents",
                &json!({"logGroupName": "g", "filterPattern": "{ $.x = 1 }"}),
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
            (
                "CreateLogGroup",
                json!({"logGroupName": "h", "tags": {"a": "b"}}),
            ),
            ("DescribeLogGroups", json!({"logGroupNamePattern": "x"})),
        ] {
            let err = s.handle(op, &body, "r").unwrap_err();
            assert_eq!(err.kind, "InvalidParameterException", "{op} {body}");
        }
        assert!(!s.group_exists("h").unwrap());
    }
}
