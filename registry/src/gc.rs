//! Online garbage collection: blobs no manifest references, and no
//! repository has linked recently, are deleted while the registry serves.

use crate::digest::Digest;
use crate::error::Internal;
use crate::server::{Inner, now};
use rusqlite::params;
use std::collections::HashSet;
use std::sync::Arc;

/// What a collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs deleted.
    pub blobs_removed: u64,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Another process serves the registry, and collects its garbage:
    /// nothing was done here.
    pub deferred: bool,
}

impl Inner {
    /// Deletes every blob that no manifest references and that no
    /// repository linked within the grace period. Uploads in progress are
    /// not blobs yet, pushes take the lock shared while they check and
    /// record references, and a reader that has a blob open keeps it: so
    /// nothing in use is ever collected.
    pub(crate) async fn collect_garbage(self: &Arc<Self>) -> Result<GcReport, Internal> {
        let _exclusive = self.gc_lock.write().await;
        self.off_thread(|i| i.sweep()).await
    }

    /// The collection itself: blocking, under the exclusive lock.
    fn sweep(&self) -> Result<GcReport, Internal> {
        // Uploads and pushes of another process are invisible to this
        // one's lock: collect only while serving, or while no one serves.
        let _directory = if self.is_serving() {
            None
        } else {
            match self.lock_directory()? {
                Some(lock) => Some(lock),
                None => {
                    return Ok(GcReport {
                        deferred: true,
                        ..GcReport::default()
                    });
                }
            }
        };
        let cutoff = now() - i64::try_from(self.config.gc_grace.as_secs()).unwrap_or(i64::MAX);
        let mut report = GcReport::default();
        let doomed: Vec<(String, i64)> = {
            let mut conn = self.db.lock()?;
            let tx = conn.transaction()?;
            let doomed: Vec<(String, i64)> = {
                let mut stmt = tx.prepare(
                    "SELECT b.digest, b.size FROM blobs b
                     WHERE NOT EXISTS (SELECT 1 FROM manifests m WHERE m.digest = b.digest)
                       AND NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.child = b.digest)
                       AND NOT EXISTS (SELECT 1 FROM repo_blobs l
                                       WHERE l.digest = b.digest AND l.linked_at > ?1)
                       AND b.created_at <= ?1",
                )?;
                let rows = stmt.query_map(params![cutoff], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            for (digest, _) in &doomed {
                tx.execute("DELETE FROM repo_blobs WHERE digest = ?1", params![digest])?;
                tx.execute("DELETE FROM blobs WHERE digest = ?1", params![digest])?;
            }
            tx.commit()?;
            doomed
        };
        for (digest, size) in doomed {
            if let Ok(d) = digest.parse::<Digest>() {
                self.blobs.remove(&d)?;
                report.blobs_removed += 1;
                report.bytes_freed += size as u64;
            }
        }
        // Files with no row at all: a crash between the rename and the
        // database commit.
        let known: HashSet<String> = {
            let conn = self.db.lock()?;
            let mut stmt = conn.prepare("SELECT digest FROM blobs")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for digest in self.blobs.all()? {
            if known.contains(&digest.to_string()) {
                continue;
            }
            let path = self.blobs.path(&digest);
            let old = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= self.config.gc_grace);
            if old {
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                self.blobs.remove(&digest)?;
                report.blobs_removed += 1;
                report.bytes_freed += size;
            }
        }
        Ok(report)
    }
}
