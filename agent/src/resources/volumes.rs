//! A task's volumes: a host path (`host.sourcePath`, which must exist), a
//! shared skiff-managed volume under the runtime's data dir
//! (`dockerVolumeConfiguration` scope `shared`, made if `autoprovision`),
//! or task scratch space (anything else) under `DATA/tasks/ID/volumes`,
//! removed however the task ends.

use skiff_channel::taskdef::TaskDefinition;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A task's volumes, by name: where each is on the host.
pub(crate) struct Volumes {
    pub paths: HashMap<String, PathBuf>,
    /// The task's scratch space: removed on cleanup.
    scratch: PathBuf,
}

impl Volumes {
    /// Where task `id`'s scratch space is, under `data_dir`.
    pub(crate) fn scratch_of(data_dir: &Path, id: &str) -> PathBuf {
        data_dir.join("tasks").join(id)
    }

    /// Makes (or finds) every volume of `td`. `shared_dir` is where shared
    /// volumes live.
    pub(crate) fn provision(
        td: &TaskDefinition,
        scratch: PathBuf,
        shared_dir: &Path,
    ) -> Result<Volumes, String> {
        let mut paths = HashMap::new();
        for v in &td.volumes {
            let path = match (&v.host, &v.docker_volume_configuration) {
                (Some(h), _) if h.source_path.is_some() => {
                    let p = PathBuf::from(h.source_path.as_deref().unwrap_or_default());
                    if !p.is_dir() {
                        return Err(format!(
                            "CannotCreateContainerError: volume {}: host path {} is not a directory",
                            v.name,
                            p.display()
                        ));
                    }
                    p
                }
                (_, Some(d)) if d.scope == "shared" => {
                    let p = shared_dir.join(&v.name);
                    if !p.is_dir() && d.autoprovision != Some(true) {
                        return Err(format!(
                            "CannotCreateContainerError: shared volume {} does not exist (set autoprovision to create it)",
                            v.name
                        ));
                    }
                    std::fs::create_dir_all(&p).map_err(|e| {
                        format!("CannotCreateContainerError: volume {}: {e}", v.name)
                    })?;
                    p
                }
                _ => {
                    let p = scratch.join("volumes").join(&v.name);
                    std::fs::create_dir_all(&p).map_err(|e| {
                        format!("CannotCreateContainerError: volume {}: {e}", v.name)
                    })?;
                    p
                }
            };
            paths.insert(v.name.clone(), path);
        }
        Ok(Volumes { paths, scratch })
    }

    /// Removes the task's scratch space (host and shared volumes stay).
    pub(crate) fn cleanup(self, task_id: &str) {
        remove_scratch(&self.scratch, task_id);
    }
}

/// Removes a task's scratch space, if it has any.
pub(crate) fn remove_scratch(scratch: &Path, task_id: &str) {
    if let Err(e) = std::fs::remove_dir_all(scratch)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(task = %task_id, "cannot remove the task's scratch volumes: {e}");
    }
}
