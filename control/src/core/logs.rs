//! The `awslogs` store: log groups, streams and events, which CloudWatch
//! Logs' API (`crate::api::logs`) reads.
//!
//! Agents write containers' output here (as [`LogDestination`]), one
//! event per line, stamped when the line was written. Events live in their own SQLite database
//! (`logs.db`): they are many and small, and losing the last ones in a power
//! cut is acceptable where losing a task is not (so `synchronous=NORMAL`).

use crate::core::model::now;
use crate::error::ApiError;
use rusqlite::{Connection, OptionalExtension, params};
use skiff_channel::logs::{LogDestination, OpenStreamError};
use std::collections::BTreeMap;
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
CREATE TABLE IF NOT EXISTS group_retention (
    grp TEXT PRIMARY KEY NOT NULL,
    days INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS group_tags (
    grp TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (grp, key)
);
";

/// The retention periods CloudWatch Logs offers, in days.
pub const RETENTION_DAYS: [i64; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

const DAY_MS: i64 = 24 * 3600 * 1000;

fn sql(e: rusqlite::Error) -> ApiError {
    ApiError::server(format!("the log store failed: {e}"))
}

pub(crate) fn millis() -> i64 {
    (now() * 1000.0) as i64
}

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

    /// Whether stream `stream` of `group` exists.
    pub fn stream_exists(&self, group: &str, stream: &str) -> Result<bool, ApiError> {
        self.with(|c| {
            c.query_row(
                "SELECT 1 FROM streams WHERE grp = ?1 AND name = ?2",
                params![group, stream],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(sql)
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

    /// Deletes a group with its streams and events.
    pub fn delete_group(&self, name: &str) -> Result<(), ApiError> {
        self.with(|c| {
            Self::require_group(c, name)?;
            let tx = c.transaction().map_err(sql)?;
            for table in ["events", "streams", "group_retention", "group_tags"] {
                tx.execute(&format!("DELETE FROM {table} WHERE grp = ?1"), [name])
                    .map_err(sql)?;
            }
            tx.execute("DELETE FROM groups WHERE name = ?1", [name])
                .map_err(sql)?;
            tx.commit().map_err(sql)
        })
    }

    /// Deletes a stream with its events.
    pub fn delete_stream(&self, group: &str, stream: &str) -> Result<(), ApiError> {
        self.with(|c| {
            Self::require_group(c, group)?;
            let tx = c.transaction().map_err(sql)?;
            let n = tx
                .execute(
                    "DELETE FROM streams WHERE grp = ?1 AND name = ?2",
                    params![group, stream],
                )
                .map_err(sql)?;
            if n == 0 {
                return Err(ApiError::not_found(
                    "ResourceNotFoundException",
                    "The specified log stream does not exist.",
                ));
            }
            tx.execute(
                "DELETE FROM events WHERE grp = ?1 AND stream = ?2",
                params![group, stream],
            )
            .map_err(sql)?;
            tx.commit().map_err(sql)
        })
    }

    /// Sets (`Some(days)`, one of [`RETENTION_DAYS`]) or removes a group's
    /// retention; its events older than that go at once.
    pub fn set_retention(&self, group: &str, days: Option<i64>) -> Result<(), ApiError> {
        self.with(|c| {
            Self::require_group(c, group)?;
            match days {
                Some(d) => c.execute(
                    "INSERT OR REPLACE INTO group_retention (grp, days) VALUES (?1, ?2)",
                    params![group, d],
                ),
                None => c.execute("DELETE FROM group_retention WHERE grp = ?1", [group]),
            }
            .map_err(sql)?;
            Self::expire_in(c, group)
        })
    }

    /// A group's retention in days, if it has one.
    pub fn retention(&self, group: &str) -> Result<Option<i64>, ApiError> {
        self.with(|c| {
            c.query_row(
                "SELECT days FROM group_retention WHERE grp = ?1",
                [group],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)
        })
    }

    /// Deletes a group's events older than its retention.
    fn expire_in(c: &Connection, group: &str) -> Result<(), ApiError> {
        c.execute(
            "DELETE FROM events WHERE grp = ?1 AND ts < ?2 - 
                 (SELECT days FROM group_retention WHERE grp = ?1) * ?3",
            params![group, millis(), DAY_MS],
        )
        .map_err(sql)?;
        Ok(())
    }

    /// Deletes every group's events older than its retention (the
    /// control plane runs this every minute; reads expire their group
    /// first, so none is ever seen).
    pub fn expire(&self) -> Result<(), ApiError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM events WHERE ts < ?1 -
                     (SELECT days FROM group_retention r WHERE r.grp = events.grp) * ?2",
                params![millis(), DAY_MS],
            )
            .map_err(sql)?;
            Ok(())
        })
    }

    /// A group's tags.
    pub fn tags(&self, group: &str) -> Result<BTreeMap<String, String>, ApiError> {
        self.with(|c| {
            Self::require_group(c, group)?;
            let mut stmt = c
                .prepare_cached("SELECT key, value FROM group_tags WHERE grp = ?1")
                .map_err(sql)?;
            stmt.query_map([group], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(sql)?
                .collect::<Result<_, _>>()
                .map_err(sql)
        })
    }

    /// Adds `add` to a group's tags and removes `remove`; at most 50 may
    /// remain, as CloudWatch Logs allows.
    pub fn retag(
        &self,
        group: &str,
        add: &BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<(), ApiError> {
        self.with(|c| {
            Self::require_group(c, group)?;
            let tx = c.transaction().map_err(sql)?;
            for k in remove {
                tx.execute(
                    "DELETE FROM group_tags WHERE grp = ?1 AND key = ?2",
                    params![group, k],
                )
                .map_err(sql)?;
            }
            for (k, v) in add {
                tx.execute(
                    "INSERT OR REPLACE INTO group_tags (grp, key, value) VALUES (?1, ?2, ?3)",
                    params![group, k, v],
                )
                .map_err(sql)?;
            }
            let n: i64 = tx
                .query_row(
                    "SELECT COUNT(*) FROM group_tags WHERE grp = ?1",
                    [group],
                    |r| r.get(0),
                )
                .map_err(sql)?;
            if n > 50 {
                return Err(ApiError::invalid_parameter(
                    "A log group can have at most 50 tags.",
                ));
            }
            tx.commit().map_err(sql)
        })
    }

    /// Up to `limit` groups whose names start with `prefix`, after the
    /// group named `after`, in name order; and the name to page on from
    /// if there are more.
    pub fn groups(
        &self,
        prefix: &str,
        after: &str,
        limit: i64,
    ) -> Result<(Vec<GroupInfo>, Option<String>), ApiError> {
        self.with(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT g.name, g.created,
                            (SELECT COALESCE(SUM(LENGTH(message)), 0) FROM events e WHERE e.grp = g.name),
                            (SELECT days FROM group_retention r WHERE r.grp = g.name)
                     FROM groups g WHERE g.name >= ?1 AND g.name > ?2 ORDER BY g.name",
                )
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![prefix, after], |r| {
                    Ok(GroupInfo {
                        name: r.get(0)?,
                        created: r.get(1)?,
                        stored_bytes: r.get(2)?,
                        retention_days: r.get(3)?,
                    })
                })
                .map_err(sql)?;
            let mut groups: Vec<GroupInfo> = Vec::new();
            let mut next = None;
            for row in rows {
                let g = row.map_err(sql)?;
                if !g.name.starts_with(prefix) {
                    break;
                }
                if groups.len() as i64 == limit {
                    next = groups.last().map(|g| g.name.clone());
                    break;
                }
                groups.push(g);
            }
            Ok((groups, next))
        })
    }

    /// A group's streams whose names start with `prefix`, by name or by
    /// last event time, from `offset`: at most `limit` + 1 (one more says
    /// there are more).
    pub fn streams(
        &self,
        group: &str,
        prefix: &str,
        by_last_event: bool,
        descending: bool,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<StreamInfo>, ApiError> {
        self.with(|c| {
            Self::require_group(c, group)?;
            Self::expire_in(c, group)?;
            let order = if descending { "DESC" } else { "ASC" };
            let sort = if by_last_event { "last_ts" } else { "s.name" };
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
            stmt.query_map(params![group, prefix, limit + 1, offset], |r| {
                Ok(StreamInfo {
                    name: r.get(0)?,
                    created: r.get(1)?,
                    first_event: r.get(2)?,
                    last_event: r.get(3)?,
                    last_ingestion: r.get(4)?,
                })
            })
            .map_err(sql)?
            .collect::<Result<_, _>>()
            .map_err(sql)
        })
    }

    /// A stream's events with ids after `bound` (`forward`) or before it,
    /// timestamps in `[start, end)`, at most `limit`, in stream order.
    #[allow(clippy::too_many_arguments)] // one query's parameters
    pub fn events(
        &self,
        group: &str,
        stream: &str,
        forward: bool,
        bound: i64,
        start: i64,
        end: i64,
        limit: i64,
    ) -> Result<Vec<Event>, ApiError> {
        self.with(|c| {
            Self::require_group(c, group)?;
            Self::expire_in(c, group)?;
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
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT id, stream, ts, ingested, message FROM events
                     WHERE grp = ?1 AND stream = ?2 AND id {cmp} ?3 AND ts >= ?4 AND ts < ?5
                     ORDER BY id {order} LIMIT ?6"
                ))
                .map_err(sql)?;
            let mut rows: Vec<Event> = stmt
                .query_map(params![group, stream, bound, start, end, limit], event_row)
                .map_err(sql)?
                .collect::<Result<_, _>>()
                .map_err(sql)?;
            if !forward {
                rows.reverse();
            }
            Ok(rows)
        })
    }

    /// A group's events after id `after`, timestamps in `[start, end]`, in
    /// streams whose names start with `stream_prefix`, that `keep` keeps:
    /// at most `limit`, and the token to go on from if there are more.
    #[allow(clippy::too_many_arguments)] // one query's parameters
    pub fn filter(
        &self,
        group: &str,
        after: i64,
        start: i64,
        end: i64,
        stream_prefix: &str,
        limit: i64,
        keep: impl Fn(&Event) -> bool,
    ) -> Result<(Vec<Event>, Option<i64>), ApiError> {
        self.with(|c| {
            Self::require_group(c, group)?;
            Self::expire_in(c, group)?;
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, stream, ts, ingested, message FROM events
                     WHERE grp = ?1 AND id > ?2 AND ts >= ?3 AND ts <= ?4 AND substr(stream, 1, length(?5)) = ?5
                     ORDER BY id",
                )
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![group, after, start, end, stream_prefix], event_row)
                .map_err(sql)?;
            let mut events = Vec::new();
            let mut next = None;
            for row in rows {
                let e = row.map_err(sql)?;
                if !keep(&e) {
                    continue;
                }
                if events.len() as i64 == limit {
                    next = Some(e.id - 1);
                    break;
                }
                events.push(e);
            }
            Ok((events, next))
        })
    }
}

/// A log group, as DescribeLogGroups lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub name: String,
    /// Milliseconds since the epoch.
    pub created: i64,
    pub stored_bytes: i64,
    pub retention_days: Option<i64>,
}

/// A log stream, as DescribeLogStreams lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    pub name: String,
    pub created: i64,
    pub first_event: Option<i64>,
    pub last_event: Option<i64>,
    pub last_ingestion: Option<i64>,
}

/// One log event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its place in the store: later events have larger ids.
    pub id: i64,
    pub stream: String,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub ingested: i64,
    pub message: String,
}

fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        id: r.get(0)?,
        stream: r.get(1)?,
        timestamp: r.get(2)?,
        ingested: r.get(3)?,
        message: r.get(4)?,
    })
}

pub(crate) fn check_group_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=512).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-/.#".contains(c));
    if !ok {
        return Err(ApiError::invalid_parameter(format!(
            "Log group name {name:?} is invalid: 1 to 512 of a-z, A-Z, 0-9, '_', '-', '/', '.', '#'."
        )));
    }
    if name.starts_with("aws/") {
        return Err(ApiError::invalid_parameter(format!(
            "Log group name {name:?} is invalid: names starting with aws/ are reserved for AWS."
        )));
    }
    Ok(())
}

pub(crate) use crate::core::filter_pattern::FilterPattern;

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
