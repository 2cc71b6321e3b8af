//! Copying an image to another registry (ECR's replication): its blobs,
//! an index's child manifests, then the manifest under each of its tags,
//! into the repository of the same name there — byte for byte, so the
//! digest is the same on both sides. A blob the destination has already
//! (from another image, or a copy cut short) is not sent again; one it
//! lacks is sent from a mapping of the file, not read into memory whole.

use crate::Registry;
use crate::digest::Digest;
use crate::manifest;
use crate::remote::{RemoteOptions, client_for, parse_reference};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

impl Registry {
    /// Copies image `digest` of `repo`, with `tags`, to the registry at
    /// `destination` (`host[:port]`). The error says what failed, for
    /// people.
    pub async fn replicate(
        &self,
        repo: &str,
        digest: &str,
        tags: &[String],
        destination: &str,
        options: &RemoteOptions,
    ) -> Result<(), String> {
        let at = |reference: &str| {
            parse_reference(&format!("{destination}/{repo}{reference}")).map_err(|e| e.to_string())
        };
        let by_digest = at(&format!("@{digest}"))?;
        let (client, auth) = client_for(&by_digest, options);
        client
            .auth(&by_digest, &auth, oci_client::RegistryOperation::Push)
            .await
            .map_err(|e| format!("{destination} refused a push to {repo}: {e}"))?;
        let (bytes, media_type) = self
            .copy_children(&client, &auth, &by_digest, repo, digest)
            .await?;
        let targets: Vec<Reference> = if tags.is_empty() {
            vec![by_digest]
        } else {
            tags.iter()
                .map(|t| at(&format!(":{t}")))
                .collect::<Result<_, _>>()?
        };
        for target in targets {
            client
                .push_manifest_raw(&target, bytes.clone(), header(&media_type)?)
                .await
                .map_err(|e| format!("pushing the manifest to {}: {e}", target.whole()))?;
        }
        Ok(())
    }

    /// Sends what manifest `digest` references (blobs, and child
    /// manifests with theirs) to `to`'s repository; the manifest's bytes
    /// and media type, for the caller to push.
    async fn copy_children(
        &self,
        client: &Client,
        auth: &RegistryAuth,
        to: &Reference,
        repo: &str,
        digest: &str,
    ) -> Result<(Vec<u8>, String), String> {
        let (bytes, media_type) = self.local_manifest(repo, digest).await?;
        let parsed = manifest::parse(&bytes, &media_type).map_err(|e| e.to_string())?;
        for (blob, _, elsewhere) in &parsed.blobs {
            if *elsewhere {
                continue;
            }
            let there = client
                .blob_exists(to, &blob.to_string())
                .await
                .map_err(|e| format!("asking {} for blob {blob}: {e}", to.whole()))?;
            if there {
                continue;
            }
            let b = blob.clone();
            let data = self
                .inner
                .off_thread(move |i| Ok(i.blobs.map(&b, 0, None)?))
                .await
                .map_err(|e| format!("reading blob {blob}: {e}"))?;
            client
                .push_blob(to, data, &blob.to_string())
                .await
                .map_err(|e| format!("pushing blob {blob} to {}: {e}", to.whole()))?;
        }
        for child in &parsed.manifests {
            let child_ref = to.clone_with_digest(child.to_string());
            let (child_bytes, child_type) =
                Box::pin(self.copy_children(client, auth, &child_ref, repo, &child.to_string()))
                    .await?;
            client
                .push_manifest_raw(&child_ref, child_bytes, header(&child_type)?)
                .await
                .map_err(|e| format!("pushing manifest {child} to {}: {e}", to.whole()))?;
        }
        Ok((bytes, media_type))
    }

    /// A stored manifest's bytes and media type.
    async fn local_manifest(&self, repo: &str, digest: &str) -> Result<(Vec<u8>, String), String> {
        let d: Digest = digest.parse().map_err(|e| format!("{digest}: {e}"))?;
        let (r, dd) = (repo.to_string(), digest.to_string());
        self.inner
            .off_thread(move |i| {
                let Some(row) = i.db.manifest(&r, &dd)? else {
                    return Ok(None);
                };
                Ok(Some((i.blobs.read(&d)?, row.media_type)))
            })
            .await
            .map_err(|e| format!("reading manifest {digest}: {e}"))?
            .ok_or_else(|| format!("{repo}@{digest} is no longer here"))
    }
}

fn header(media_type: &str) -> Result<http::HeaderValue, String> {
    http::HeaderValue::from_str(media_type).map_err(|e| format!("media type {media_type}: {e}"))
}
