//! The registry's metadata: repositories, tags, manifests and what they
//! reference, which repository may serve which blob, referrers. SQLite in WAL
//! mode, one connection behind a mutex: every change is one transaction,
//! durable before the client hears back.

use crate::digest::Digest;
use crate::error::Internal;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// Schema migrations, applied in order; the database records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: the distribution core.
    "CREATE TABLE repositories (
        name TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL
     );
     CREATE TABLE blobs (
        digest TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        created_at INTEGER NOT NULL
     );
     CREATE TABLE repo_blobs (
        repo TEXT NOT NULL,
        digest TEXT NOT NULL,
        linked_at INTEGER NOT NULL,
        PRIMARY KEY (repo, digest)
     );
     CREATE INDEX repo_blobs_by_digest ON repo_blobs (digest);
     CREATE TABLE manifests (
        repo TEXT NOT NULL,
        digest TEXT NOT NULL,
        media_type TEXT NOT NULL,
        artifact_type TEXT,
        config_media_type TEXT,
        size INTEGER NOT NULL,
        subject TEXT,
        annotations TEXT,
        pushed_at INTEGER NOT NULL,
        PRIMARY KEY (repo, digest)
     );
     CREATE INDEX manifests_by_subject ON manifests (repo, subject);
     CREATE TABLE manifest_refs (
        repo TEXT NOT NULL,
        manifest TEXT NOT NULL,
        child TEXT NOT NULL,
        PRIMARY KEY (repo, manifest, child)
     );
     CREATE INDEX manifest_refs_by_child ON manifest_refs (child);
     CREATE TABLE tags (
        repo TEXT NOT NULL,
        tag TEXT NOT NULL,
        digest TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (repo, tag)
     );
     CREATE INDEX tags_by_digest ON tags (repo, digest);",
];

/// The metadata database.
pub(crate) struct Db {
    conn: Mutex<Connection>,
}

/// A stored manifest, as the referrers API and pulls need it.
#[derive(Debug, Clone)]
pub(crate) struct ManifestRow {
    pub(crate) digest: String,
    pub(crate) media_type: String,
    pub(crate) artifact_type: Option<String>,
    pub(crate) config_media_type: Option<String>,
    pub(crate) size: u64,
    pub(crate) annotations: Option<String>,
}

/// What a manifest push records.
pub(crate) struct NewManifest<'a> {
    pub(crate) repo: &'a str,
    pub(crate) digest: &'a Digest,
    pub(crate) media_type: &'a str,
    pub(crate) artifact_type: Option<&'a str>,
    pub(crate) config_media_type: Option<&'a str>,
    pub(crate) size: u64,
    pub(crate) subject: Option<&'a Digest>,
    pub(crate) annotations: Option<String>,
    /// Every blob and child manifest it references.
    pub(crate) children: Vec<Digest>,
    pub(crate) tag: Option<&'a str>,
    pub(crate) now: i64,
}

fn internal(e: impl std::fmt::Display) -> Internal {
    Internal::Other(e.to_string())
}

impl Db {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub(crate) fn open(path: &Path) -> Result<Db, Internal> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a transaction is on disk before the client is answered.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let db = Db {
            conn: Mutex::new(conn),
        };
        db.migrate()?;
        Ok(db)
    }

    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, Connection>, Internal> {
        self.conn
            .lock()
            .map_err(|_| internal("metadata lock poisoned"))
    }

    fn migrate(&self) -> Result<(), Internal> {
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
            [],
        )?;
        let current: i64 = tx
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        if current as usize > MIGRATIONS.len() {
            return Err(internal(format!(
                "the registry database is at schema version {current}, newer than this skiff knows ({})",
                MIGRATIONS.len()
            )));
        }
        for sql in &MIGRATIONS[current as usize..] {
            tx.execute_batch(sql)?;
        }
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            params![MIGRATIONS.len() as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn repository_exists(&self, repo: &str) -> Result<bool, Internal> {
        let conn = self.lock()?;
        Ok(conn
            .query_row("SELECT 1 FROM repositories WHERE name = ?1", [repo], |_| {
                Ok(())
            })
            .optional()?
            .is_some())
    }

    pub(crate) fn create_repository(&self, repo: &str, now: i64) -> Result<bool, Internal> {
        let conn = self.lock()?;
        let n = conn.execute(
            "INSERT OR IGNORE INTO repositories (name, created_at) VALUES (?1, ?2)",
            params![repo, now],
        )?;
        Ok(n > 0)
    }

    /// The size of a blob linked into `repo`, if it is.
    pub(crate) fn linked_blob(&self, repo: &str, digest: &Digest) -> Result<Option<u64>, Internal> {
        let conn = self.lock()?;
        Ok(conn
            .query_row(
                "SELECT b.size FROM repo_blobs l JOIN blobs b ON b.digest = l.digest
                 WHERE l.repo = ?1 AND l.digest = ?2",
                params![repo, digest.to_string()],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|s| s as u64))
    }

    /// Records a committed blob (if new) and links it into `repo`.
    pub(crate) fn link_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        now: i64,
    ) -> Result<(), Internal> {
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO repositories (name, created_at) VALUES (?1, ?2)",
            params![repo, now],
        )?;
        tx.execute(
            "INSERT OR IGNORE INTO blobs (digest, size, created_at) VALUES (?1, ?2, ?3)",
            params![digest.to_string(), size as i64, now],
        )?;
        tx.execute(
            "INSERT INTO repo_blobs (repo, digest, linked_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (repo, digest) DO UPDATE SET linked_at = excluded.linked_at",
            params![repo, digest.to_string(), now],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Removes `repo`'s link to a blob. False if there was none.
    pub(crate) fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool, Internal> {
        let conn = self.lock()?;
        let n = conn.execute(
            "DELETE FROM repo_blobs WHERE repo = ?1 AND digest = ?2",
            params![repo, digest.to_string()],
        )?;
        Ok(n > 0)
    }

    /// Which repository (of `from`, or of any) has this blob linked.
    pub(crate) fn blob_owner(
        &self,
        digest: &Digest,
        from: Option<&str>,
    ) -> Result<Option<u64>, Internal> {
        let conn = self.lock()?;
        let size = match from {
            Some(from) => conn
                .query_row(
                    "SELECT b.size FROM repo_blobs l JOIN blobs b ON b.digest = l.digest
                     WHERE l.repo = ?1 AND l.digest = ?2",
                    params![from, digest.to_string()],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?,
            None => conn
                .query_row(
                    "SELECT b.size FROM repo_blobs l JOIN blobs b ON b.digest = l.digest
                     WHERE l.digest = ?1 LIMIT 1",
                    [digest.to_string()],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?,
        };
        Ok(size.map(|s| s as u64))
    }

    /// The manifest `reference` (a tag or a digest) names in `repo`.
    pub(crate) fn manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<ManifestRow>, Internal> {
        let conn = self.lock()?;
        let digest: Option<String> = if reference.contains(':') {
            Some(reference.to_string())
        } else {
            conn.query_row(
                "SELECT digest FROM tags WHERE repo = ?1 AND tag = ?2",
                params![repo, reference],
                |r| r.get(0),
            )
            .optional()?
        };
        let Some(digest) = digest else {
            return Ok(None);
        };
        Ok(conn
            .query_row(
                "SELECT digest, media_type, artifact_type, config_media_type, size, annotations
                 FROM manifests WHERE repo = ?1 AND digest = ?2",
                params![repo, digest],
                row_to_manifest,
            )
            .optional()?)
    }

    /// Records a manifest push in one transaction: the repository, the
    /// manifest (stored as a blob too), what it references, and its tag.
    pub(crate) fn put_manifest(&self, m: &NewManifest<'_>) -> Result<(), Internal> {
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        let digest = m.digest.to_string();
        tx.execute(
            "INSERT OR IGNORE INTO repositories (name, created_at) VALUES (?1, ?2)",
            params![m.repo, m.now],
        )?;
        tx.execute(
            "INSERT OR IGNORE INTO blobs (digest, size, created_at) VALUES (?1, ?2, ?3)",
            params![digest, m.size as i64, m.now],
        )?;
        tx.execute(
            "INSERT INTO repo_blobs (repo, digest, linked_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (repo, digest) DO UPDATE SET linked_at = excluded.linked_at",
            params![m.repo, digest, m.now],
        )?;
        tx.execute(
            "INSERT INTO manifests (repo, digest, media_type, artifact_type, config_media_type,
                                    size, subject, annotations, pushed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (repo, digest) DO NOTHING",
            params![
                m.repo,
                digest,
                m.media_type,
                m.artifact_type,
                m.config_media_type,
                m.size as i64,
                m.subject.map(|s| s.to_string()),
                m.annotations,
                m.now
            ],
        )?;
        for child in &m.children {
            tx.execute(
                "INSERT OR IGNORE INTO manifest_refs (repo, manifest, child) VALUES (?1, ?2, ?3)",
                params![m.repo, digest, child.to_string()],
            )?;
        }
        if let Some(tag) = m.tag {
            tx.execute(
                "INSERT INTO tags (repo, tag, digest, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (repo, tag) DO UPDATE SET digest = excluded.digest,
                                                      updated_at = excluded.updated_at",
                params![m.repo, tag, digest, m.now],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Is `digest` a manifest stored in `repo`?
    pub(crate) fn has_manifest(&self, repo: &str, digest: &Digest) -> Result<bool, Internal> {
        let conn = self.lock()?;
        Ok(conn
            .query_row(
                "SELECT 1 FROM manifests WHERE repo = ?1 AND digest = ?2",
                params![repo, digest.to_string()],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Deletes a tag. False if it did not exist.
    pub(crate) fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool, Internal> {
        let conn = self.lock()?;
        Ok(conn.execute(
            "DELETE FROM tags WHERE repo = ?1 AND tag = ?2",
            params![repo, tag],
        )? > 0)
    }

    /// Deletes a manifest, the tags pointing at it and its references.
    /// False if it did not exist.
    pub(crate) fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<bool, Internal> {
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        let d = digest.to_string();
        let n = tx.execute(
            "DELETE FROM manifests WHERE repo = ?1 AND digest = ?2",
            params![repo, d],
        )?;
        tx.execute(
            "DELETE FROM tags WHERE repo = ?1 AND digest = ?2",
            params![repo, d],
        )?;
        tx.execute(
            "DELETE FROM manifest_refs WHERE repo = ?1 AND manifest = ?2",
            params![repo, d],
        )?;
        tx.execute(
            "DELETE FROM repo_blobs WHERE repo = ?1 AND digest = ?2",
            params![repo, d],
        )?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Tags of `repo` after `last` (exclusive), in byte order, at most `n`
    /// (plus one, to tell whether there are more).
    pub(crate) fn tags(
        &self,
        repo: &str,
        last: Option<&str>,
        limit: u64,
    ) -> Result<Vec<String>, Internal> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare(
            "SELECT tag FROM tags WHERE repo = ?1 AND tag > ?2 ORDER BY tag COLLATE BINARY LIMIT ?3",
        )?;
        let rows = stmt.query_map(
            params![
                repo,
                last.unwrap_or(""),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |r| r.get(0),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Manifests of `repo` whose subject is `subject`.
    pub(crate) fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
    ) -> Result<Vec<ManifestRow>, Internal> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare(
            "SELECT digest, media_type, artifact_type, config_media_type, size, annotations
             FROM manifests WHERE repo = ?1 AND subject = ?2 ORDER BY pushed_at, digest",
        )?;
        let rows = stmt.query_map(params![repo, subject.to_string()], row_to_manifest)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn row_to_manifest(r: &rusqlite::Row<'_>) -> rusqlite::Result<ManifestRow> {
    Ok(ManifestRow {
        digest: r.get(0)?,
        media_type: r.get(1)?,
        artifact_type: r.get(2)?,
        config_media_type: r.get(3)?,
        size: r.get::<_, i64>(4)? as u64,
        annotations: r.get(5)?,
    })
}
