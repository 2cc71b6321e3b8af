//! The state store: where clusters, task definitions, tasks, services and
//! container instances live, durably.
//!
//! The trait is a small versioned key-value store with compare-and-swap
//! transactions — exactly what etcd offers (`Range`, `Txn` with
//! `mod_revision` compares) — so a store backed by etcd can replace the
//! SQLite one without the control plane noticing. Values are JSON
//! documents; keys are `/`-separated paths (`tasks/default/<id>`), so a
//! prefix lists a kind or a cluster's share of one.
//!
//! Commits are queued when [`StateStore::commit`] is called and made
//! durable in that order; the SQLite store commits whatever is queued
//! together, in one transaction and one fsync (group commit), so the
//! control plane can apply a change to memory, let go of its lock and wait
//! for the disk while other requests go on. A writer that applies changes
//! to memory before they are durable names the revision each commit must
//! get ([`Txn::revision`]); if one fails, every later commit is refused
//! until that writer has reloaded what the store holds and called
//! [`StateStore::resume`].

use rusqlite::{Connection, OptionalExtension, params};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Mutex;
use tokio::sync::{oneshot, watch};

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
    /// The revision this transaction must commit as (the store's next),
    /// if its writer counts them: a writer that has already applied it to
    /// memory and written later compares against it. Another revision
    /// fails it as a compare does.
    pub revision: Option<u64>,
}

/// Where the commits queued so far end: [`StateStore::synced`] waits
/// until every commit up to a position is durable.
pub type Position = u64;

/// The control plane's durable state.
pub trait StateStore: Send + Sync + 'static {
    /// One key.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Versioned>>;
    /// Every key starting with `prefix`, in key order.
    fn range<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, Vec<(String, Versioned)>>;
    /// Queues `txn` behind every commit queued before this call (when it
    /// is called, not when the future is first polled); the future is
    /// `Some(revision)` once it is durable, `None` if a compare failed
    /// (and nothing was written).
    fn commit(&self, txn: Txn) -> StoreFuture<'static, Option<u64>>;
    /// The position of the last commit queued so far.
    fn queued(&self) -> Position;
    /// Once every commit up to `position` is durable; an error if one of
    /// them failed, or was refused after an earlier failure.
    fn synced(&self, position: Position) -> StoreFuture<'static, ()>;
    /// Resolves when a commit of a writer that counts revisions has failed:
    /// from then on every commit is refused until [`StateStore::resume`].
    fn failed(&self) -> StoreFuture<'static, ()>;
    /// Accepts commits again after a failure, once every commit queued
    /// before it has been refused: the revision of the last durable
    /// commit, to count on from (what the caller reloads is as of it).
    fn resume(&self) -> StoreFuture<'_, u64>;
    /// The revision of the last durable commit (0 for a new store).
    fn revision(&self) -> StoreFuture<'_, u64>;
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
/// is answered, commits queued together made durable together.
pub struct SqliteStore {
    /// Work for the store's own thread, which owns the connection; held
    /// while a commit takes its position, so positions follow queue order.
    jobs: Mutex<(std::sync::mpsc::Sender<Job>, Position)>,
    /// How far the store's thread has got, for [`StateStore::synced`].
    progress: watch::Receiver<Progress>,
    path: PathBuf,
}

/// One piece of work for the store's thread.
enum Job {
    Commit(Commit),
    /// Commits are accepted again (after a failure).
    Resume(oneshot::Sender<Result<u64, StoreError>>),
    /// Anything else on the connection (reads, upkeep).
    Run(Box<dyn FnOnce(&mut Connection) + Send>),
}

/// A queued commit.
struct Commit {
    txn: Txn,
    position: Position,
    done: oneshot::Sender<Result<Option<u64>, StoreError>>,
}

/// What the store's thread has done, as the waiters of
/// [`StateStore::synced`] and [`StateStore::failed`] see it.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Every commit up to here is answered (durable, refused or failed).
    answered: Position,
    /// Positions whose commits failed or were refused: from the first
    /// failure to the resume after it (the last few failures).
    failures: std::collections::VecDeque<(Position, Position)>,
    /// Between a failure and the resume after it.
    refusing: bool,
    /// How many groups have been committed (each one transaction).
    groups: u64,
}

impl Progress {
    /// Whether commit `position` failed or was refused.
    fn failed(&self, position: Position) -> bool {
        self.failures
            .iter()
            .any(|&(from, to)| (from..to).contains(&position))
    }
}

/// How many failures [`Progress`] remembers: a waiter older than that is
/// not expected (each waits for one fsync).
const FAILURES_KEPT: usize = 16;

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
        let (progress_tx, progress) = watch::channel(Progress::default());
        std::thread::Builder::new()
            .name("skiff-state-store".into())
            .spawn(move || serve_jobs(&mut conn, &queue, &progress_tx))
            .map_err(|e| StoreError(format!("cannot start the store's thread: {e}")))?;
        Ok(SqliteStore {
            jobs: Mutex::new((jobs, 0)),
            progress,
            path: path.to_path_buf(),
        })
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        let jobs = self.jobs.lock().map_err(|_| gone())?;
        jobs.0.send(job).map_err(|_| gone())
    }

    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        self.send(Job::Run(Box::new(move |conn| {
            let _ = done.send(f(conn));
        })))?;
        result.await.map_err(|_| gone())?
    }
}

fn gone() -> StoreError {
    StoreError("the store's thread is gone".into())
}

/// The most commits made durable together.
const MAX_GROUP: usize = 1024;

/// The store's thread: jobs in queue order; commits queued one after
/// another are committed together.
fn serve_jobs(
    conn: &mut Connection,
    queue: &std::sync::mpsc::Receiver<Job>,
    progress: &watch::Sender<Progress>,
) {
    let mut next = None;
    loop {
        let Some(job) = next.take().or_else(|| queue.recv().ok()) else {
            return;
        };
        match job {
            Job::Run(f) => f(conn),
            Job::Resume(done) => {
                progress.send_modify(|p| {
                    if p.refusing {
                        p.refusing = false;
                        if let Some(last) = p.failures.back_mut() {
                            last.1 = p.answered + 1;
                        }
                    }
                });
                let _ = done.send(current_revision(conn));
            }
            Job::Commit(first) => {
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match queue.try_recv() {
                        Ok(Job::Commit(c)) => group.push(c),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                commit_group(conn, group, progress);
            }
        }
    }
}

fn current_revision(conn: &Connection) -> Result<u64, StoreError> {
    conn.prepare_cached("SELECT current FROM revision WHERE id = 0")
        .and_then(|mut q| q.query_row([], |r| r.get::<_, i64>(0)))
        .map(|r| r as u64)
        .map_err(sql)
}

/// Commits `group` in one SQLite transaction (one fsync): a commit whose
/// compares fail writes nothing and leaves the others; an error writing
/// fails the whole group. A counted commit that fails, and every commit
/// after it, is refused until a resume.
fn commit_group(conn: &mut Connection, group: Vec<Commit>, progress: &watch::Sender<Progress>) {
    let refusing = progress.borrow().refusing;
    let last = group.last().map_or(0, |c| c.position);
    let mut answers: Vec<Result<Option<u64>, StoreError>> = Vec::with_capacity(group.len());
    let mut failed_at: Option<Position> = None;
    let outcome = (|| {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql)?;
        for c in &group {
            if refusing || failed_at.is_some() {
                answers.push(Err(refused()));
                continue;
            }
            // A commit whose compares fail has written nothing; one that
            // fails while writing fails the group (below).
            let answer = apply(&tx, &c.txn)?;
            if answer.is_none() && c.txn.revision.is_some() {
                failed_at = Some(c.position);
            }
            answers.push(Ok(answer));
        }
        tx.commit().map_err(sql)
    })();
    if let Err(e) = outcome {
        // Nothing of the group is written: it failed from its first.
        failed_at = group.first().map(|c| c.position);
        for a in &mut answers {
            if matches!(a, Ok(Some(_))) {
                *a = Err(e.clone());
            }
        }
        answers.resize(group.len(), Err(e));
    }
    progress.send_modify(|p| {
        p.answered = last;
        p.groups += 1;
        if let Some(from) = failed_at.filter(|_| !refusing) {
            p.refusing = true;
            p.failures.push_back((from, Position::MAX));
            if p.failures.len() > FAILURES_KEPT {
                p.failures.pop_front();
            }
        }
    });
    for (c, answer) in group.into_iter().zip(answers) {
        let _ = c.done.send(answer);
    }
}

fn refused() -> StoreError {
    StoreError(
        "not written: an earlier change failed to commit, and the control plane is reloading its state"
            .into(),
    )
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

/// Applies `txn` inside transaction `tx` (not committed here): `None`,
/// having written nothing, if a compare fails.
fn apply(tx: &Connection, txn: &Txn) -> Result<Option<u64>, StoreError> {
    if let Some(want) = txn.revision
        && current_revision(tx)? + 1 != want
    {
        return Ok(None);
    }
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

    fn commit(&self, txn: Txn) -> StoreFuture<'static, Option<u64>> {
        let (done, answer) = oneshot::channel();
        let queued = self.jobs.lock().map_err(|_| gone()).and_then(|mut jobs| {
            jobs.1 += 1;
            let position = jobs.1;
            jobs.0
                .send(Job::Commit(Commit {
                    txn,
                    position,
                    done,
                }))
                .map_err(|_| gone())
        });
        Box::pin(async move {
            queued?;
            answer.await.map_err(|_| gone())?
        })
    }

    fn queued(&self) -> Position {
        self.jobs.lock().map_or(0, |jobs| jobs.1)
    }

    fn synced(&self, position: Position) -> StoreFuture<'static, ()> {
        let mut progress = self.progress.clone();
        Box::pin(async move {
            let p = progress
                .wait_for(|p| p.answered >= position)
                .await
                .map_err(|_| gone())?;
            match p.failed(position) {
                true => Err(refused()),
                false => Ok(()),
            }
        })
    }

    fn failed(&self) -> StoreFuture<'static, ()> {
        let mut progress = self.progress.clone();
        Box::pin(async move {
            progress
                .wait_for(|p| p.refusing)
                .await
                .map_err(|_| gone())?;
            Ok(())
        })
    }

    fn resume(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let (done, answer) = oneshot::channel();
            self.send(Job::Resume(done))?;
            answer.await.map_err(|_| gone())?
        })
    }

    fn revision(&self) -> StoreFuture<'_, u64> {
        Box::pin(self.with_conn(|conn| current_revision(conn)))
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
                ..Txn::default()
            })
            .await
            .unwrap()
            .unwrap();
        // A stale revision: nothing written, not even the other key.
        let lost = store
            .commit(Txn {
                compares: vec![Compare::Revision("a".into(), r1 + 7)],
                ops: vec![put("a", "2"), Op::Delete("b".into())],
                ..Txn::default()
            })
            .await
            .unwrap();
        assert_eq!(lost, None);
        assert_eq!(store.get("b").await.unwrap().unwrap().value, b"1");
        let r2 = store
            .commit(Txn {
                compares: vec![Compare::Revision("a".into(), r1)],
                ops: vec![put("a", "2"), Op::Delete("b".into())],
                ..Txn::default()
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
                    ..Txn::default()
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
            ..Txn::default()
        };
        assert_eq!(store.commit(txn).await.unwrap(), Some(8));
    }

    /// Holds the store's thread until the returned sender is dropped (or
    /// sent to), so that what is queued meanwhile is one group.
    fn hold(store: &SqliteStore) -> std::sync::mpsc::Sender<()> {
        let (release, held) = std::sync::mpsc::channel::<()>();
        store
            .send(Job::Run(Box::new(move |_| {
                let _ = held.recv();
            })))
            .unwrap();
        release
    }

    fn counted(key: &str, revision: u64) -> Txn {
        Txn {
            ops: vec![put(key, "v")],
            revision: Some(revision),
            ..Txn::default()
        }
    }

    #[tokio::test]
    async fn commits_queued_together_are_made_durable_together_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        let release = hold(&store);
        // Queued when called, in call order: revisions follow it.
        let commits: Vec<_> = (1..=100)
            .map(|i| store.commit(counted(&format!("k/{i:03}"), i)))
            .collect();
        assert_eq!(store.queued(), 100);
        let all = store.synced(store.queued());
        drop(release);
        for (i, c) in commits.into_iter().enumerate() {
            assert_eq!(c.await.unwrap(), Some(i as u64 + 1));
        }
        all.await.unwrap();
        assert_eq!(store.progress.borrow().groups, 1, "one transaction");
        assert_eq!(store.revision().await.unwrap(), 100);
        assert_eq!(store.range("k/").await.unwrap().len(), 100);
    }

    #[tokio::test]
    async fn a_failed_counted_commit_refuses_the_rest_until_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        let failed = store.failed();
        let release = hold(&store);
        let first = store.commit(counted("a", 1));
        // Counted as 3 where the store is at 2: its writer's count is off.
        let wrong = store.commit(counted("b", 3));
        let after = store.commit(counted("c", 2));
        let (at_first, at_wrong) = (1, 2);
        drop(release);
        // The commit before the failure in the same group is durable.
        assert_eq!(first.await.unwrap(), Some(1));
        store.synced(at_first).await.unwrap();
        assert_eq!(wrong.await.unwrap(), None);
        let refused = after.await.unwrap_err();
        assert!(refused.0.contains("earlier change failed"), "{refused}");
        store.synced(at_wrong).await.unwrap_err();
        failed.await.unwrap();
        // Refused until resumed, even a commit that counts right.
        store.commit(counted("c", 2)).await.unwrap_err();
        store.synced(store.queued()).await.unwrap_err();
        assert_eq!(store.resume().await.unwrap(), 1);
        assert_eq!(store.commit(counted("c", 2)).await.unwrap(), Some(2));
        store.synced(store.queued()).await.unwrap();
        let keys: Vec<String> = store
            .range("")
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["a", "c"]);
    }

    /// A group that cannot be written (here the file may not grow) fails
    /// whole: the commits before the one that failed are not durable, and
    /// nothing is refused once resumed.
    #[tokio::test]
    async fn a_group_that_cannot_be_written_fails_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        assert_eq!(store.commit(counted("a", 1)).await.unwrap(), Some(1));
        store
            .with_conn(|conn| {
                let pages: i64 = conn
                    .pragma_query_value(None, "page_count", |r| r.get(0))
                    .map_err(sql)?;
                conn.pragma_update(None, "max_page_count", pages)
                    .map_err(sql)
            })
            .await
            .unwrap();
        let release = hold(&store);
        let small = store.commit(counted("b", 2));
        let at_small = store.queued();
        let large = store.commit(Txn {
            ops: vec![Op::Put("c".into(), vec![7; 64 << 10])],
            revision: Some(3),
            ..Txn::default()
        });
        drop(release);
        small.await.unwrap_err();
        large.await.unwrap_err();
        store.synced(at_small).await.unwrap_err();
        assert_eq!(store.resume().await.unwrap(), 1);
        assert_eq!(store.get("b").await.unwrap(), None);
        assert_eq!(store.commit(counted("b", 2)).await.unwrap(), Some(2));
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
                ..Txn::default()
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
