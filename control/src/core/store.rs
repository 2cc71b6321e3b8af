//! The state store: where clusters, task definitions, tasks, services and
//! container instances live, durably.
//!
//! The trait is a small versioned key-value store with compare-and-swap
//! transactions — exactly what etcd offers (`Range`, `Txn` with
//! `mod_revision` compares) — so a store backed by etcd can replace the
//! SQLite one without the control plane noticing. Values are JSON
//! documents; keys are `/`-separated paths (`tasks/default/<id>`), so a
//! prefix lists a kind or a cluster's share of one.

use rusqlite::{Connection, OptionalExtension, params};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

/// A store operation's future.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The store failed (I/O, corruption): never the caller's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// A value and the store revision that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The document.
    pub value: Vec<u8>,
    /// The revision of the transaction that wrote it (never 0).
    pub revision: u64,
}

/// A condition a transaction needs to hold to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key does not exist.
    Absent(String),
    /// The key was last written at this revision.
    Revision(String, u64),
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create or replace.
    Put(String, Vec<u8>),
    /// Remove (a missing key is fine).
    Delete(String),
}

/// All of `ops`, atomically, if every compare holds; else nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// What must hold.
    pub compares: Vec<Compare>,
    /// What to write.
    pub ops: Vec<Op>,
}

/// The control plane's durable state.
pub trait StateStore: Send + Sync + 'static {
    /// One key.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Versioned>>;
    /// Every key starting with `prefix`, in key order.
    fn range<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, Vec<(String, Versioned)>>;
    /// Applies `txn`: `Some(revision)` once it is durable, `None` if a
    /// compare failed (and nothing was written).
    fn commit(&self, txn: Txn) -> StoreFuture<'_, Option<u64>>;
    /// Gives the space of removed keys back to the file system (after
    /// many are removed at once).
    fn reclaim(&self) -> StoreFuture<'_, ()>;
}

/// Schema migrations, in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    // v1: the key-value table and the revision counter.
    "CREATE TABLE kv (
         key TEXT PRIMARY KEY NOT NULL,
         value BLOB NOT NULL,
         revision INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE revision (id INTEGER PRIMARY KEY CHECK (id = 0), current INTEGER NOT NULL);
     INSERT INTO revision (id, current) VALUES (0, 0);",
    // v2: the revision before the value, so that a compare reads a row's
    // revision without walking its value's overflow pages (a task's JSON
    // spans several): the profile of many tasks starting had a tenth of
    // the store's thread there.
    "CREATE TABLE kv2 (
         key TEXT PRIMARY KEY NOT NULL,
         revision INTEGER NOT NULL,
         value BLOB NOT NULL
     ) WITHOUT ROWID;
     INSERT INTO kv2 (key, revision, value) SELECT key, revision, value FROM kv;
     DROP TABLE kv;
     ALTER TABLE kv2 RENAME TO kv;",
    // v3: a rowid table. WITHOUT ROWID keeps rows in an index b-tree,
    // whose leaves hold at most ~1 KB of a row: a task's JSON (1.5–2 KB)
    // spilled the rest to an overflow page of its own, so every task took
    // two pages (4.5 KB on disk for 1.7 KB), every update wrote both to the
    // WAL and every read fetched both. A table b-tree's leaf holds a row of
    // up to ~4 KB whole, two tasks to a page; the key's index finds it.
    "CREATE TABLE kv3 (
         key TEXT PRIMARY KEY NOT NULL,
         revision INTEGER NOT NULL,
         value BLOB NOT NULL
     );
     INSERT INTO kv3 (key, revision, value) SELECT key, revision, value FROM kv;
     DROP TABLE kv;
     ALTER TABLE kv3 RENAME TO kv;",
];

/// The default store: SQLite in WAL mode, every commit fsynced before it
/// returns.
pub struct SqliteStore {
    /// Work for the store's own thread, which owns the connection.
    jobs: std::sync::mpsc::Sender<Job>,
    path: PathBuf,
}

/// One piece of work on the connection.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

fn sql(e: rusqlite::Error) -> StoreError {
    StoreError(format!("sqlite: {e}"))
}

impl SqliteStore {
    /// Opens (creating and migrating as needed) the store at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut conn = Connection::open(path).map_err(sql)?;
        // Forgotten tasks' pages can be given back ([`StateStore::reclaim`]);
        // a store made before this setting existed is rewritten once.
        let auto_vacuum: i64 = conn
            .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
            .map_err(sql)?;
        if auto_vacuum != 2 {
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
                .map_err(sql)?;
            conn.execute_batch("VACUUM").map_err(sql)?;
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        // FULL: the WAL is fsynced at every commit, so an answered request
        // survives a power cut, not only a crash.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql)?;
        // 16 MiB of pages stay cached (SQLite's default is 2 MiB: with
        // thousands of tasks, commits read pages back from the file with a
        // read(2) each). A memory map instead was as fast but counted the
        // whole file in the process's resident memory.
        conn.pragma_update(None, "cache_size", -16_384)
            .map_err(sql)?;
        migrate(&mut conn)?;
        // The store has a thread of its own rather than tokio's blocking
        // pool: whatever else fills that pool (compiles, log writes) never
        // stands between an API request and its commit. It ends when the
        // store is dropped.
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("skiff-state-store".into())
            .spawn(move || {
                for job in queue {
                    job(&mut conn);
                }
            })
            .map_err(|e| StoreError(format!("cannot start the store's thread: {e}")))?;
        Ok(SqliteStore {
            jobs,
            path: path.to_path_buf(),
        })
    }

    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |conn| {
                let _ = done.send(f(conn));
            }))
            .map_err(|_| StoreError("the store's thread is gone".into()))?;
        result
            .await
            .map_err(|_| StoreError("the store's thread failed".into()))?
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql)?;
    let applied = usize::try_from(version).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(StoreError(format!(
            "the state store has schema version {version}, newer than this skiff knows ({}): use a newer skiff",
            MIGRATIONS.len()
        )));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction().map_err(sql)?;
        tx.execute_batch(migration).map_err(sql)?;
        tx.pragma_update(None, "user_version", i + 1).map_err(sql)?;
        tx.commit().map_err(sql)?;
    }
    Ok(())
}

fn apply(conn: &mut Connection, txn: &Txn) -> Result<Option<u64>, StoreError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql)?;
    for compare in &txn.compares {
        let (key, want) = match compare {
            Compare::Absent(k) => (k, None),
            Compare::Revision(k, r) => (k, Some(*r)),
        };
        // Statements are prepared once per connection, not parsed again
        // for every commit.
        let have: Option<i64> = tx
            .prepare_cached("SELECT revision FROM kv WHERE key = ?1")
            .and_then(|mut q| q.query_row([key], |r| r.get(0)).optional())
            .map_err(sql)?;
        if have.map(|r| r as u64) != want {
            return Ok(None);
        }
    }
    let revision: i64 = tx
        .prepare_cached("UPDATE revision SET current = current + 1 WHERE id = 0 RETURNING current")
        .and_then(|mut q| q.query_row([], |r| r.get(0)))
        .map_err(sql)?;
    for op in &txn.ops {
        match op {
            Op::Put(key, value) => {
                tx.prepare_cached(
                    "INSERT INTO kv (key, revision, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO UPDATE SET revision = excluded.revision, value = excluded.value",
                )
                .and_then(|mut q| q.execute(params![key, revision, value]))
                .map_err(sql)?;
            }
            Op::Delete(key) => {
                tx.prepare_cached("DELETE FROM kv WHERE key = ?1")
                    .and_then(|mut q| q.execute([key]))
                    .map_err(sql)?;
            }
        }
    }
    tx.commit().map_err(sql)?;
    Ok(Some(revision as u64))
}

impl StateStore for SqliteStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Versioned>> {
        let key = key.to_string();
        Box::pin(self.with_conn(move |conn| {
            conn.query_row(
                "SELECT value, revision FROM kv WHERE key = ?1",
                [&key],
                |r| {
                    Ok(Versioned {
                        value: r.get(0)?,
                        revision: r.get::<_, i64>(1)? as u64,
                    })
                },
            )
            .optional()
            .map_err(sql)
        }))
    }

    fn range<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, Vec<(String, Versioned)>> {
        let prefix = prefix.to_string();
        Box::pin(self.with_conn(move |conn| {
            // Keys in [prefix, prefix + U+10FFFF): a range scan, no LIKE
            // escaping.
            let end = format!("{prefix}\u{10FFFF}");
            let mut stmt = conn
                .prepare_cached(
                    "SELECT key, value, revision FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key",
                )
                .map_err(sql)?;
            let rows = stmt
                .query_map([&prefix, &end], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        Versioned {
                            value: r.get(1)?,
                            revision: r.get::<_, i64>(2)? as u64,
                        },
                    ))
                })
                .map_err(sql)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql)
        }))
    }

    fn commit(&self, txn: Txn) -> StoreFuture<'_, Option<u64>> {
        Box::pin(self.with_conn(move |conn| apply(conn, &txn)))
    }

    fn reclaim(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.with_conn(|conn| {
            // Free pages go back (auto_vacuum is INCREMENTAL), and the WAL
            // is emptied, not left at its largest.
            // Each step of this pragma frees one page: step it to the end.
            let mut vacuum = conn.prepare("PRAGMA incremental_vacuum").map_err(sql)?;
            let mut rows = vacuum.query([]).map_err(sql)?;
            while rows.next().map_err(sql)?.is_some() {}
            drop(rows);
            drop(vacuum);
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(sql)
        }))
    }
}

/// A store failure is the server's, never the caller's.
impl From<StoreError> for crate::error::ApiError {
    fn from(e: StoreError) -> Self {
        crate::error::ApiError::server(format!("the state store failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> Op {
        Op::Put(k.into(), v.as_bytes().to_vec())
    }

    #[tokio::test]
    async fn compare_and_swap_applies_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        let r1 = store
            .commit(Txn {
                compares: vec![Compare::Absent("a".into())],
                ops: vec![put("a", "1"), put("b", "1")],
            })
            .await
            .unwrap()
            .unwrap();
        // A stale revision: nothing written, not even the other key.
        let lost = store
            .commit(Txn {
                compares: vec![Compare::Revision("a".into(), r1 + 7)],
                ops: vec![put("a", "2"), Op::Delete("b".into())],
            })
            .await
            .unwrap();
        assert_eq!(lost, None);
        assert_eq!(store.get("b").await.unwrap().unwrap().value, b"1");
        let r2 = store
            .commit(Txn {
                compares: vec![Compare::Revision("a".into(), r1)],
                ops: vec![put("a", "2"), Op::Delete("b".into())],
            })
            .await
            .unwrap()
            .unwrap();
        assert!(r2 > r1);
        let a = store.get("a").await.unwrap().unwrap();
        assert_eq!((a.value.as_slice(), a.revision), (b"2".as_slice(), r2));
        assert_eq!(store.get("b").await.unwrap(), None);
    }

    #[tokio::test]
    async fn range_lists_a_prefix_in_order_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            store
                .commit(Txn {
                    compares: vec![],
                    ops: vec![
                        put("tasks/b/2", "x"),
                        put("tasks/a/1", "y"),
                        put("tasksz", "z"),
                    ],
                })
                .await
                .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let keys: Vec<String> = store
            .range("tasks/")
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["tasks/a/1", "tasks/b/2"]);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        drop(SqliteStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = SqliteStore::open(&path).unwrap_err();
        assert!(err.0.contains("newer than this skiff knows"), "{err}");
    }

    #[tokio::test]
    async fn a_first_version_store_keeps_its_rows_when_its_columns_move() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute(
            "INSERT INTO kv (key, value, revision) VALUES ('task/a', X'41', 7)",
            [],
        )
        .unwrap();
        conn.execute("UPDATE revision SET current = 7", []).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        drop(conn);

        let store = SqliteStore::open(&path).unwrap();
        let rows = store.range("task/").await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].1.value.as_slice(), rows[0].1.revision),
            (&b"A"[..], 7)
        );
        // Compares see the moved revision; the next commit follows it.
        let txn = Txn {
            compares: vec![Compare::Revision("task/a".into(), 7)],
            ops: vec![put("task/a", "B")],
        };
        assert_eq!(store.commit(txn).await.unwrap(), Some(8));
    }

    /// Task-sized values (a task's JSON is 1.5–2 KB) share pages rather
    /// than each taking a page and an overflow page of its own.
    #[tokio::test]
    async fn task_sized_values_are_stored_two_to_a_page() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = SqliteStore::open(&path).unwrap();
        let value = "x".repeat(1_700);
        for chunk in 0..10 {
            let ops = (0..100)
                .map(|i| {
                    put(
                        &format!("tasks/{:032x}", chunk * 7919 + i * 104_729),
                        &value,
                    )
                })
                .collect();
            let txn = Txn {
                compares: vec![],
                ops,
            };
            store.commit(txn).await.unwrap().unwrap();
        }
        drop(store);
        let conn = Connection::open(&path).unwrap();
        let pages: i64 = conn
            .pragma_query_value(None, "page_count", |r| r.get(0))
            .unwrap();
        // 1,000 × 1.7 KB is 415 pages of 4 KiB packed; one page and an
        // overflow page each would be 2,000.
        assert!(pages < 700, "1,000 values of 1.7 KB took {pages} pages");
    }
}
