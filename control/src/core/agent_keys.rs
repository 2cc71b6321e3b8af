//! Agent keys: access keys that sign only what an agent of one cluster
//! does — register a container instance there, open that instance's
//! channel, find it (DiscoverPollEndpoint), and write its containers'
//! awslogs output — never RunTask, never another cluster. An instance is
//! bound to the key that registered it: another key cannot open its
//! channel (and so cannot report for its tasks).
//!
//! Issued and revoked on the control plane's machine (`skiff agent-keys`),
//! as registry tokens are: kept in `DATA/control/agent-keys.json` (0600),
//! which `skiff serve` reads again whenever it changed. A revoked key's
//! open channels close within a second.

use crate::error::ApiError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// One agent key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The cluster (by name) it may join.
    pub cluster: String,
    /// Seconds since the epoch.
    pub created_at: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    keys: Vec<AgentKey>,
}

/// The file of agent keys under a control plane's data dir.
pub fn file_in(control_dir: &Path) -> PathBuf {
    control_dir.join("agent-keys.json")
}

fn read(path: &Path) -> Result<File, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is damaged: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(File::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Changes the file under an exclusive lock, then writes it whole (temp
/// file, rename), readable by its owner only.
fn change<T>(path: &Path, f: impl FnOnce(&mut File) -> T) -> Result<T, String> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let lock_path = path.with_extension("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    let mut file = read(path)?;
    let out = f(&mut file);
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut w = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        w.write_all(&bytes)?;
        w.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(out)
}

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| format!("no randomness for a key: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Issues a key for agents of `cluster`.
pub fn create(path: &Path, cluster: &str) -> Result<AgentKey, String> {
    crate::core::clusters::check_cluster_name(cluster).map_err(|e| e.message)?;
    let key = AgentKey {
        access_key_id: format!("AKSA{}", random_hex(8)?.to_ascii_uppercase()),
        secret_access_key: random_hex(20)?,
        cluster: cluster.to_string(),
        created_at: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    change(path, |f| f.keys.push(key.clone()))?;
    Ok(key)
}

/// Revokes key `id`: whether there was one.
pub fn revoke(path: &Path, id: &str) -> Result<bool, String> {
    change(path, |f| {
        let before = f.keys.len();
        f.keys.retain(|k| k.access_key_id != id);
        f.keys.len() != before
    })
}

/// The keys issued.
pub fn list(path: &Path) -> Result<Vec<AgentKey>, String> {
    read(path).map(|f| f.keys)
}

/// A file's modification time, inode and length: it changed if they did.
type Identity = (SystemTime, u64, u64);

/// The keys as the control plane checks them: read again when the file
/// changed.
#[derive(Debug)]
pub(crate) struct AgentKeys {
    path: PathBuf,
    /// The file's identity when read, and its keys.
    cache: Mutex<(Option<Identity>, Vec<AgentKey>)>,
}

impl AgentKeys {
    pub(crate) fn new(control_dir: &Path) -> AgentKeys {
        AgentKeys {
            path: file_in(control_dir),
            cache: Mutex::new((None, Vec::new())),
        }
    }

    /// The agent key `id`, if it is one (and not revoked).
    pub(crate) fn get(&self, id: &str) -> Option<AgentKey> {
        use std::os::unix::fs::MetadataExt;
        // Written by rename: a new inode each time, whatever the clock.
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| Ok((m.modified()?, m.ino(), m.len())))
            .ok();
        let mut cache = self.cache.lock().ok()?;
        if cache.0 != modified || modified.is_none() {
            match read(&self.path) {
                Ok(f) => *cache = (modified, f.keys),
                Err(e) => {
                    tracing::error!("agent keys: {e}");
                    *cache = (modified, Vec::new());
                }
            }
        }
        cache.1.iter().find(|k| k.access_key_id == id).cloned()
    }
}

/// What an agent key may call: an agent's operations, in its cluster.
pub(crate) fn may_call(
    key: &AgentKey,
    target: &str,
    body: &serde_json::Value,
) -> Result<(), ApiError> {
    let op = target.rsplit('.').next().unwrap_or(target);
    let agent_op = matches!(
        target.split('.').next(),
        Some("AmazonEC2ContainerServiceV20141113")
    ) && matches!(op, "RegisterContainerInstance" | "DiscoverPollEndpoint")
        || matches!(target.split('.').next(), Some("Logs_20140328"))
            && matches!(op, "CreateLogGroup" | "CreateLogStream" | "PutLogEvents");
    if !agent_op {
        return Err(denied(key, op));
    }
    if target.starts_with("AmazonEC2ContainerServiceV20141113.") {
        let cluster = body
            .get("cluster")
            .and_then(serde_json::Value::as_str)
            .map(crate::core::model::name_of)
            .unwrap_or("default");
        if cluster != key.cluster {
            return Err(ApiError {
                kind: "AccessDeniedException",
                message: format!(
                    "Agent key {} may act only in cluster {}, not {cluster}.",
                    key.access_key_id, key.cluster
                ),
                status: 400,
            });
        }
    }
    Ok(())
}

pub(crate) fn denied(key: &AgentKey, op: &str) -> ApiError {
    ApiError {
        kind: "AccessDeniedException",
        message: format!(
            "User: agent key {} is not authorized to perform: {op} (an agent key registers and serves container instances of cluster {} only)",
            key.access_key_id, key.cluster
        ),
        status: 400,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_issued_seen_and_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_in(dir.path());
        let keys = AgentKeys::new(dir.path());
        assert!(keys.get("AKSA0").is_none());
        let k = create(&path, "edge").unwrap();
        assert!(k.access_key_id.starts_with("AKSA") && k.secret_access_key.len() == 40);
        assert_eq!(keys.get(&k.access_key_id), Some(k.clone()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(revoke(&path, &k.access_key_id).unwrap());
        assert!(!revoke(&path, &k.access_key_id).unwrap());
        // Seen at once, even within the file clock's resolution.
        assert!(keys.get(&k.access_key_id).is_none());
        assert!(create(&path, "not a name!").is_err());
    }

    #[test]
    fn an_agent_key_calls_only_an_agents_operations_in_its_cluster() {
        let k = AgentKey {
            access_key_id: "AKSA1".into(),
            secret_access_key: "s".into(),
            cluster: "edge".into(),
            created_at: 0,
        };
        let ecs = |op: &str| format!("AmazonEC2ContainerServiceV20141113.{op}");
        assert!(
            may_call(
                &k,
                &ecs("RegisterContainerInstance"),
                &json!({"cluster": "edge"})
            )
            .is_ok()
        );
        assert!(
            may_call(
                &k,
                &ecs("DiscoverPollEndpoint"),
                &json!({"cluster": "arn:aws:ecs:r:0:cluster/edge"})
            )
            .is_ok()
        );
        assert!(may_call(&k, "Logs_20140328.PutLogEvents", &json!({})).is_ok());
        let e = may_call(&k, &ecs("RunTask"), &json!({"cluster": "edge"})).unwrap_err();
        assert_eq!(e.kind, "AccessDeniedException");
        assert!(e.message.contains("RunTask"), "{}", e.message);
        let e = may_call(&k, &ecs("RegisterContainerInstance"), &json!({})).unwrap_err();
        assert!(e.message.contains("not default"), "{}", e.message);
        assert!(may_call(&k, "Logs_20140328.DeleteLogGroup", &json!({})).is_err());
    }
}
