//! The registry's metadata: repositories, tags, manifests and what they
//! reference, which repository may serve which blob, referrers. SQLite in WAL
//! mode, one connection behind a mutex: every change is one transaction,
//! durable before the client hears back.

use crate::digest::Digest;
use crate::error::Internal;
use crate::repos::{Image, Repository, RepositorySettings, TagMutability};
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
    // 2: ECR's repository behaviour: tag mutability, scan on push,
    // lifecycle policies, scan results, issued tokens.
    "ALTER TABLE repositories ADD COLUMN tag_mutability TEXT NOT NULL DEFAULT 'MUTABLE';
     ALTER TABLE repositories ADD COLUMN mutability_filters TEXT NOT NULL DEFAULT '[]';
     ALTER TABLE repositories ADD COLUMN scan_on_push INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE repositories ADD COLUMN lifecycle_policy TEXT;
     CREATE TABLE scans (
        repo TEXT NOT NULL,
        digest TEXT NOT NULL,
        status TEXT NOT NULL,
        report TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (repo, digest)
     );
     CREATE TABLE tokens (
        token_hash TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL
     );",
    // 3: pull-through cache rules (see cache.rs).
    "CREATE TABLE cache_rules (
        prefix TEXT PRIMARY KEY,
        upstream_url TEXT NOT NULL,
        upstream_prefix TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
     );",
    // 4: repository creation templates (see templates.rs), and the one a
    // repository was made from.
    "CREATE TABLE templates (
        prefix TEXT PRIMARY KEY,
        body TEXT NOT NULL
     );
     ALTER TABLE repositories ADD COLUMN template TEXT;",
    // 5: pushed images not yet handed to the push hook (a crash or a
    // restart interrupted it): handed over when the registry serves again,
    // `attempts` times at most (see `server::HAND_OVER_ATTEMPTS`).
    "CREATE TABLE announcements (
        repo TEXT NOT NULL,
        digest TEXT NOT NULL,
        queued_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (repo, digest)
     );",
];

/// The metadata database.
pub(crate) struct Db {
    conn: Mutex<Connection>,
    /// Manifests recorded by this process (pushes, pull-through fills):
    /// what watchers compare to see that something new arrived.
    pub(crate) manifests_stored: std::sync::atomic::AtomicU64,
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
    /// Queue it for the push hook (see [`Db::announcements`]), in the same
    /// transaction.
    pub(crate) announce: bool,
}

/// What became of a manifest push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    Stored,
    /// It would move an immutable tag: nothing was recorded.
    TagImmutable,
    /// The repository does not exist (any more): nothing was recorded.
    NoRepository,
}

fn internal(e: impl std::fmt::Display) -> Internal {
    Internal::Other(e.to_string())
}

impl Db {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub(crate) fn open(path: &Path) -> Result<Db, Internal> {
        let conn = Connection::open(path)?;
        // First: another process (a server, a CLI command) may hold the
        // database, and even switching the journal mode must wait for it
        // rather than fail with "database is locked".
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a transaction is on disk before the client is answered.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let db = Db {
            conn: Mutex::new(conn),
            manifests_stored: Default::default(),
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
        // Most opens find the schema current: a read, no write lock, so a
        // CLI command opening the database never holds up the server.
        let version = |c: &Connection| -> Result<Option<i64>, Internal> {
            let exists = c
                .query_row(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
                    [],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if !exists {
                return Ok(None);
            }
            Ok(
                c.query_row("SELECT version FROM schema_version", [], |r| r.get(0))
                    .optional()?,
            )
        };
        let known = MIGRATIONS.len() as i64;
        let too_new = |v: i64| {
            internal(format!(
                "the registry database is at schema version {v}, newer than this skiff knows ({known})"
            ))
        };
        match version(&conn)? {
            Some(v) if v == known => return Ok(()),
            Some(v) if v > known => return Err(too_new(v)),
            _ => {}
        }
        // IMMEDIATE: take the write lock up front (waiting for it), not
        // upgrade a read lock mid-way, which fails at once when another
        // process writes; then look again, another process may have
        // migrated meanwhile.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
            [],
        )?;
        let current: i64 = version(&tx)?.unwrap_or(0);
        if current > known {
            return Err(too_new(current));
        }
        for sql in &MIGRATIONS[current as usize..] {
            tx.execute_batch(sql)?;
        }
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            params![known],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Every repository creation template, by prefix (ECR's JSON).
    pub(crate) fn templates(&self) -> Result<Vec<serde_json::Value>, Internal> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached("SELECT body FROM templates ORDER BY prefix")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|b| serde_json::from_str(&b?).map_err(internal))
            .collect()
    }

    /// Stores a template: a new one (`create`; false if its prefix is
    /// taken), or over an existing one (false if there is none).
    pub(crate) fn put_template(
        &self,
        prefix: &str,
        body: &serde_json::Value,
        create: bool,
    ) -> Result<bool, Internal> {
        let conn = self.lock()?;
        let text = body.to_string();
        let n = if create {
            conn.execute(
                "INSERT OR IGNORE INTO templates (prefix, body) VALUES (?1, ?2)",
                params![prefix, text],
            )?
        } else {
            conn.execute(
                "UPDATE templates SET body = ?2 WHERE prefix = ?1",
                params![prefix, text],
            )?
        };
        Ok(n > 0)
    }

    /// Removes a template. False if there was none.
    pub(crate) fn delete_template(&self, prefix: &str) -> Result<bool, Internal> {
        let conn = self.lock()?;
        Ok(conn.execute("DELETE FROM templates WHERE prefix = ?1", [prefix])? > 0)
    }

    /// Creates `repo` as `template` says (its settings and lifecycle
    /// policy), recording which template it was. False if it exists.
    pub(crate) fn create_repository_from(
        &self,
        repo: &str,
        settings: &RepositorySettings,
        lifecycle_policy: Option<&str>,
        template: Option<&str>,
        now: i64,
    ) -> Result<bool, Internal> {
        let conn = self.lock()?;
        let n = conn.execute(
            "INSERT OR IGNORE INTO repositories (name, created_at, tag_mutability, mutability_filters, scan_on_push, lifecycle_policy, template)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                repo,
                now,
                settings.tag_mutability.as_str(),
                serde_json::to_string(&settings.mutability_filters).map_err(internal)?,
                settings.scan_on_push as i64,
                lifecycle_policy,
                template
            ],
        )?;
        Ok(n > 0)
    }

    /// Every pull-through cache rule, by prefix.
    pub(crate) fn cache_rules(&self) -> Result<Vec<crate::cache::CacheRule>, Internal> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(
            "SELECT prefix, upstream_url, upstream_prefix, created_at, updated_at
             FROM cache_rules ORDER BY prefix",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(crate::cache::CacheRule {
                prefix: r.get(0)?,
                upstream_url: r.get(1)?,
                upstream_prefix: r.get(2)?,
                created_at: r.get(3)?,
                updated_at: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Adds a rule. False if one with its prefix exists.
    pub(crate) fn put_cache_rule(&self, rule: &crate::cache::CacheRule) -> Result<bool, Internal> {
        let conn = self.lock()?;
        let n = conn.execute(
            "INSERT OR IGNORE INTO cache_rules (prefix, upstream_url, upstream_prefix, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                rule.prefix,
                rule.upstream_url,
                rule.upstream_prefix,
                rule.created_at,
                rule.updated_at
            ],
        )?;
        Ok(n > 0)
    }

    /// Removes the rule for `prefix`. False if there was none.
    pub(crate) fn delete_cache_rule(&self, prefix: &str) -> Result<bool, Internal> {
        let conn = self.lock()?;
        Ok(conn.execute("DELETE FROM cache_rules WHERE prefix = ?1", [prefix])? > 0)
    }

    /// When `tag` of `repo` last moved.
    pub(crate) fn tag_updated_at(&self, repo: &str, tag: &str) -> Result<Option<i64>, Internal> {
        let conn = self.lock()?;
        Ok(conn
            .query_row(
                "SELECT updated_at FROM tags WHERE repo = ?1 AND tag = ?2",
                params![repo, tag],
                |r| r.get(0),
            )
            .optional()?)
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
    ) -> Result<bool, Internal> {
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        if read_settings(&tx, repo)?.is_none() {
            // Deleted since the upload began: it is not brought back.
            return Ok(false);
        }
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
        Ok(true)
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

    /// The digest `tag` names in `repo`.
    pub(crate) fn tag_digest(&self, repo: &str, tag: &str) -> Result<Option<String>, Internal> {
        // Asked at every task start: the statement is kept.
        let conn = self.lock()?;
        let mut stmt =
            conn.prepare_cached("SELECT digest FROM tags WHERE repo = ?1 AND tag = ?2")?;
        Ok(stmt
            .query_row(params![repo, tag], |r| r.get(0))
            .optional()?)
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
    /// Returns false, recording nothing, if the push would move an
    /// immutable tag.
    pub(crate) fn put_manifest(&self, m: &NewManifest<'_>) -> Result<Recorded, Internal> {
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        let digest = m.digest.to_string();
        let Some(settings) = read_settings(&tx, m.repo)? else {
            // Deleted since the push began: it is not brought back.
            return Ok(Recorded::NoRepository);
        };
        if let Some(tag) = m.tag {
            let current: Option<String> = tx
                .query_row(
                    "SELECT digest FROM tags WHERE repo = ?1 AND tag = ?2",
                    params![m.repo, tag],
                    |r| r.get(0),
                )
                .optional()?;
            if current.is_some_and(|c| c != digest) && !settings.tag_is_mutable(tag) {
                return Ok(Recorded::TagImmutable);
            }
        }
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
        if m.announce {
            tx.execute(
                "INSERT INTO announcements (repo, digest, queued_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (repo, digest) DO NOTHING",
                params![m.repo, digest, m.now],
            )?;
        }
        tx.commit()?;
        self.manifests_stored
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Recorded::Stored)
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
        let n = delete_manifest_rows(&tx, repo, &digest.to_string())?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Expires image `digest` of `repo` if it is still what a lifecycle
    /// plan saw — exactly `tags`, and listed by no other manifest — with
    /// its referrers and the index entries nothing else holds, in one
    /// transaction (against pushes from any process). Returns how many
    /// manifests went; 0 if the image changed and was left alone.
    pub(crate) fn expire_image(
        &self,
        repo: &str,
        digest: &str,
        tags: &[String],
    ) -> Result<u64, Internal> {
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let strings = |sql: &str, a: &str| -> Result<Vec<String>, Internal> {
            let mut stmt = tx.prepare(sql)?;
            let rows = stmt.query_map(params![repo, a], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        };
        let mut now_tags = strings(
            "SELECT tag FROM tags WHERE repo = ?1 AND digest = ?2",
            digest,
        )?;
        now_tags.sort();
        let mut planned = tags.to_vec();
        planned.sort();
        let listed = strings(
            "SELECT manifest FROM manifest_refs WHERE repo = ?1 AND child = ?2",
            digest,
        )?;
        if now_tags != planned || !listed.is_empty() {
            return Ok(0);
        }
        let mut removed = 0;
        let mut queue = vec![digest.to_string()];
        while let Some(next) = queue.pop() {
            queue.extend(strings(
                "SELECT digest FROM manifests WHERE repo = ?1 AND subject = ?2",
                &next,
            )?);
            let children = strings(
                "SELECT r.child FROM manifest_refs r
                 JOIN manifests m ON m.repo = r.repo AND m.digest = r.child
                 WHERE r.repo = ?1 AND r.manifest = ?2",
                &next,
            )?;
            removed += delete_manifest_rows(&tx, repo, &next)? as u64;
            for child in children {
                let held: i64 = tx.query_row(
                    "SELECT (SELECT COUNT(*) FROM tags WHERE repo = ?1 AND digest = ?2)
                          + (SELECT COUNT(*) FROM manifest_refs WHERE repo = ?1 AND child = ?2)",
                    params![repo, child],
                    |r| r.get(0),
                )?;
                if held == 0 {
                    queue.push(child);
                }
            }
        }
        tx.commit()?;
        Ok(removed)
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

/// Deletes a manifest and everything recorded about it (not its blobs).
fn delete_manifest_rows(tx: &Connection, repo: &str, digest: &str) -> Result<usize, Internal> {
    let n = tx.execute(
        "DELETE FROM manifests WHERE repo = ?1 AND digest = ?2",
        params![repo, digest],
    )?;
    for sql in [
        "DELETE FROM tags WHERE repo = ?1 AND digest = ?2",
        "DELETE FROM manifest_refs WHERE repo = ?1 AND manifest = ?2",
        "DELETE FROM repo_blobs WHERE repo = ?1 AND digest = ?2",
        "DELETE FROM scans WHERE repo = ?1 AND digest = ?2",
    ] {
        tx.execute(sql, params![repo, digest])?;
    }
    Ok(n)
}

/// A repository's settings, read inside a transaction or on a connection.
fn read_settings(conn: &Connection, repo: &str) -> Result<Option<RepositorySettings>, Internal> {
    let row: Option<(String, String, i64)> = conn
        .query_row(
            "SELECT tag_mutability, mutability_filters, scan_on_push FROM repositories WHERE name = ?1",
            [repo],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((mutability, filters, scan)) = row else {
        return Ok(None);
    };
    Ok(Some(RepositorySettings {
        tag_mutability: TagMutability::parse(&mutability).map_err(internal)?,
        mutability_filters: serde_json::from_str(&filters).map_err(internal)?,
        scan_on_push: scan != 0,
    }))
}

impl Db {
    /// A repository with its settings.
    pub(crate) fn repository(&self, repo: &str) -> Result<Option<Repository>, Internal> {
        let conn = self.lock()?;
        let row: Option<(i64, Option<String>, Option<String>)> = conn
            .query_row(
                "SELECT created_at, lifecycle_policy, template FROM repositories WHERE name = ?1",
                [repo],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((created_at, lifecycle_policy, template)) = row else {
            return Ok(None);
        };
        let settings = read_settings(&conn, repo)?.unwrap_or_default();
        Ok(Some(Repository {
            name: repo.to_string(),
            created_at,
            settings,
            lifecycle_policy,
            template,
        }))
    }

    /// Every repository's name, sorted.
    pub(crate) fn repository_names(&self) -> Result<Vec<String>, Internal> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare("SELECT name FROM repositories ORDER BY name")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Creates a repository with settings. False if it already exists.
    pub(crate) fn create_repository_with(
        &self,
        repo: &str,
        settings: &RepositorySettings,
        now: i64,
    ) -> Result<bool, Internal> {
        self.create_repository_from(repo, settings, None, None, now)
    }

    /// Replaces a repository's settings. False if there is no such
    /// repository.
    pub(crate) fn set_settings(
        &self,
        repo: &str,
        settings: &RepositorySettings,
    ) -> Result<bool, Internal> {
        let conn = self.lock()?;
        let n = conn.execute(
            "UPDATE repositories SET tag_mutability = ?2, mutability_filters = ?3, scan_on_push = ?4 WHERE name = ?1",
            params![
                repo,
                settings.tag_mutability.as_str(),
                serde_json::to_string(&settings.mutability_filters).map_err(internal)?,
                settings.scan_on_push as i64
            ],
        )?;
        Ok(n > 0)
    }

    /// Sets (or clears) a repository's lifecycle policy. False if there is
    /// no such repository.
    pub(crate) fn set_lifecycle_policy(
        &self,
        repo: &str,
        policy: Option<&str>,
    ) -> Result<bool, Internal> {
        let conn = self.lock()?;
        let n = conn.execute(
            "UPDATE repositories SET lifecycle_policy = ?2 WHERE name = ?1",
            params![repo, policy],
        )?;
        Ok(n > 0)
    }

    /// Deletes a repository and everything in it. With `force` false, a
    /// repository that still has images is kept and Ok(false) returned.
    pub(crate) fn delete_repository(&self, repo: &str, force: bool) -> Result<bool, Internal> {
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        let images: i64 = tx.query_row(
            "SELECT COUNT(*) FROM manifests WHERE repo = ?1",
            [repo],
            |r| r.get(0),
        )?;
        if images > 0 && !force {
            return Ok(false);
        }
        for table in ["tags", "manifest_refs", "manifests", "repo_blobs", "scans"] {
            tx.execute(&format!("DELETE FROM {table} WHERE repo = ?1"), [repo])?;
        }
        tx.execute("DELETE FROM repositories WHERE name = ?1", [repo])?;
        tx.commit()?;
        Ok(true)
    }

    /// The images of a repository, newest first (pushes within the same
    /// second in the order they landed): each manifest, its tags, and its
    /// size with everything it references.
    pub(crate) fn images(&self, repo: &str) -> Result<Vec<Image>, Internal> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare(
            "SELECT m.digest, m.media_type, COALESCE(m.artifact_type, m.config_media_type), m.size, m.pushed_at, m.subject,
                    (SELECT group_concat(t.tag, char(10)) FROM tags t WHERE t.repo = m.repo AND t.digest = m.digest),
                    (SELECT COALESCE(SUM(b.size), 0) FROM manifest_refs r JOIN blobs b ON b.digest = r.child
                      WHERE r.repo = m.repo AND r.manifest = m.digest)
             FROM manifests m WHERE m.repo = ?1 ORDER BY m.pushed_at DESC, m.rowid DESC",
        )?;
        let rows = stmt.query_map([repo], |r| {
            let tags: Option<String> = r.get(6)?;
            let mut tags: Vec<String> = tags
                .map(|t| t.split('\n').map(str::to_string).collect())
                .unwrap_or_default();
            tags.sort();
            Ok(Image {
                digest: r.get(0)?,
                media_type: r.get(1)?,
                artifact_type: r.get(2)?,
                size: (r.get::<_, i64>(3)? + r.get::<_, i64>(7)?) as u64,
                pushed_at: r.get(4)?,
                subject: r.get(5)?,
                tags,
            })
        })?;
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

impl Db {
    /// Records a scan's state and report (JSON) for a manifest.
    pub(crate) fn put_scan(
        &self,
        repo: &str,
        digest: &str,
        status: &str,
        report: &str,
        now: i64,
    ) -> Result<(), Internal> {
        let conn = self.lock()?;
        conn.execute(
            "INSERT INTO scans (repo, digest, status, report, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (repo, digest) DO UPDATE SET status = excluded.status,
                 report = excluded.report, updated_at = excluded.updated_at",
            params![repo, digest, status, report, now],
        )?;
        Ok(())
    }

    /// The last scan report (JSON) of a manifest.
    pub(crate) fn scan(&self, repo: &str, digest: &str) -> Result<Option<String>, Internal> {
        let conn = self.lock()?;
        Ok(conn
            .query_row(
                "SELECT report FROM scans WHERE repo = ?1 AND digest = ?2",
                params![repo, digest],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Manifests of `repo` that another manifest of it lists (the entries
    /// of its indexes): parts of an image, not images of their own.
    pub(crate) fn child_manifests(&self, repo: &str) -> Result<Vec<String>, Internal> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare(
            "SELECT DISTINCT r.child FROM manifest_refs r
             JOIN manifests m ON m.repo = r.repo AND m.digest = r.child WHERE r.repo = ?1",
        )?;
        let rows = stmt.query_map([repo], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Renews a blob's link into `repo` (at most once a minute), so the
    /// garbage collector's grace period starts again.
    pub(crate) fn touch_link(&self, repo: &str, digest: &Digest, now: i64) -> Result<(), Internal> {
        let conn = self.lock()?;
        conn.execute(
            "UPDATE repo_blobs SET linked_at = ?3 WHERE repo = ?1 AND digest = ?2 AND linked_at < ?3 - 60",
            params![repo, digest.to_string(), now],
        )?;
        Ok(())
    }

    /// Repositories that have a lifecycle policy.
    pub(crate) fn repositories_with_policies(&self) -> Result<Vec<String>, Internal> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare(
            "SELECT name FROM repositories WHERE lifecycle_policy IS NOT NULL ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Pushed images queued for the push hook and not yet handed over, in
    /// the order they were pushed (rowids grow with each insert).
    pub(crate) fn announcements(&self) -> Result<Vec<(String, String, u32)>, Internal> {
        let conn = self.lock()?;
        let mut stmt =
            conn.prepare("SELECT repo, digest, attempts FROM announcements ORDER BY rowid")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Counts one more hand-over of `digest` of `repo` to the push hook,
    /// durably before it starts: how many there have been, this one
    /// included (0 if it is no longer queued).
    pub(crate) fn announcing(&self, repo: &str, digest: &str) -> Result<u32, Internal> {
        let conn = self.lock()?;
        Ok(conn
            .query_row(
                "UPDATE announcements SET attempts = attempts + 1
                 WHERE repo = ?1 AND digest = ?2 RETURNING attempts",
                params![repo, digest],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// The push hook is done with `digest` of `repo`.
    pub(crate) fn announced(&self, repo: &str, digest: &str) -> Result<(), Internal> {
        let conn = self.lock()?;
        conn.execute(
            "DELETE FROM announcements WHERE repo = ?1 AND digest = ?2",
            params![repo, digest],
        )?;
        Ok(())
    }

    /// Scans that were still running when the registry stopped.
    pub(crate) fn scans_in_progress(&self) -> Result<Vec<(String, String)>, Internal> {
        let conn = self.lock()?;
        let mut stmt =
            conn.prepare("SELECT repo, digest FROM scans WHERE status = 'IN_PROGRESS'")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records an issued registry token (its SHA-256, never the token).
    pub(crate) fn put_token(
        &self,
        token_hash: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), Internal> {
        let conn = self.lock()?;
        conn.execute("DELETE FROM tokens WHERE expires_at <= ?1", [now])?;
        conn.execute(
            "INSERT INTO tokens (token_hash, expires_at) VALUES (?1, ?2)",
            params![token_hash, expires_at],
        )?;
        Ok(())
    }

    /// When an issued token expires, if it was issued.
    pub(crate) fn token_expiry(&self, token_hash: &str) -> Result<Option<i64>, Internal> {
        let conn = self.lock()?;
        Ok(conn
            .query_row(
                "SELECT expires_at FROM tokens WHERE token_hash = ?1",
                [token_hash],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Forgets every issued token.
    pub(crate) fn revoke_tokens(&self) -> Result<u64, Internal> {
        let conn = self.lock()?;
        Ok(conn.execute("DELETE FROM tokens", [])? as u64)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn put(
        db: &Db,
        digest: &Digest,
        tag: Option<&str>,
        subject: Option<&Digest>,
        children: Vec<Digest>,
    ) {
        db.put_manifest(&NewManifest {
            repo: "r",
            digest,
            media_type: "application/vnd.oci.image.manifest.v1+json",
            artifact_type: None,
            config_media_type: None,
            size: 1,
            subject,
            annotations: None,
            children,
            tag,
            now: 1,
            announce: false,
        })
        .unwrap();
    }

    #[test]
    fn a_deleted_repository_is_not_brought_back_by_a_late_push() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db")).unwrap();
        let settings = RepositorySettings {
            scan_on_push: true,
            ..RepositorySettings::default()
        };
        db.create_repository_with("r", &settings, 1).unwrap();
        assert!(db.delete_repository("r", true).unwrap());
        let blob = Digest::sha256_of(b"layer");
        assert!(!db.link_blob("r", &blob, 5, 2).unwrap());
        let outcome = db
            .put_manifest(&NewManifest {
                repo: "r",
                digest: &blob,
                media_type: "application/vnd.oci.image.manifest.v1+json",
                artifact_type: None,
                config_media_type: None,
                size: 1,
                subject: None,
                annotations: None,
                children: vec![],
                tag: Some("v1"),
                now: 2,
                announce: false,
            })
            .unwrap();
        assert_eq!(outcome, Recorded::NoRepository);
        assert!(!db.repository_exists("r").unwrap());
    }

    #[test]
    fn expiry_leaves_an_image_that_changed_since_the_plan() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db")).unwrap();
        db.create_repository_with("r", &RepositorySettings::default(), 1)
            .unwrap();
        let image = Digest::sha256_of(b"image");
        let report = Digest::sha256_of(b"report");
        let index = Digest::sha256_of(b"index");
        put(&db, &image, None, None, vec![]);
        put(&db, &report, None, Some(&image), vec![]);

        // Planned untagged; tagged since: left alone.
        put(&db, &image, Some("v2"), None, vec![]);
        assert_eq!(db.expire_image("r", &image.to_string(), &[]).unwrap(), 0);
        assert!(db.has_manifest("r", &image).unwrap());

        // Listed by an index since: left alone too.
        db.delete_tag("r", "v2").unwrap();
        put(&db, &index, Some("multi"), None, vec![image.clone()]);
        assert_eq!(db.expire_image("r", &image.to_string(), &[]).unwrap(), 0);

        // As planned: the index goes, and takes its loose entry and that
        // entry's referrer with it.
        let tags = vec!["multi".to_string()];
        assert_eq!(db.expire_image("r", &index.to_string(), &tags).unwrap(), 3);
        for d in [&image, &report, &index] {
            assert!(!db.has_manifest("r", d).unwrap());
        }
    }
}
