//! Manifests as the registry sees them: which kind a pushed document is,
//! whether it is well formed, and what it references.

use crate::digest::Digest;
use crate::error::{Code, Error};
use base64::Engine as _;
use serde::Deserialize;
use std::collections::BTreeMap;

/// An OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// An OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// A Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// A Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Largest manifest the registry accepts (the spec's "at least 4 MiB").
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// A descriptor, as it appears in manifests.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The referenced content's media type.
    pub media_type: String,
    /// Its digest.
    pub digest: String,
    /// Its size in bytes.
    pub size: i64,
    /// The content itself, base64, when embedded.
    #[serde(default)]
    pub data: Option<String>,
    /// Foreign content lives at these URLs, not in the registry.
    #[serde(default)]
    pub urls: Option<Vec<String>>,
    /// The referenced artifact's type.
    #[serde(default)]
    pub artifact_type: Option<String>,
    /// Platform of an index entry.
    #[serde(default)]
    pub platform: Option<serde_json::Value>,
    /// Annotations.
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// A validated manifest or index.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// Its media type (one of the four this registry stores).
    pub media_type: String,
    /// `artifactType`, if set.
    pub artifact_type: Option<String>,
    /// The config descriptor's media type (image manifests).
    pub config_media_type: Option<String>,
    /// The manifest it refers to, if any (the referrers API).
    pub subject: Option<Digest>,
    /// Annotations, as JSON text, kept for referrer descriptors.
    pub annotations: Option<String>,
    /// Blobs (config and layers) it needs, with their sizes and whether
    /// the content is embedded (`data`) or foreign (`urls`).
    pub blobs: Vec<(Digest, u64, bool)>,
    /// Child manifests (indexes).
    pub manifests: Vec<Digest>,
    /// The config and layer descriptors, for artifact handling.
    pub config: Option<Descriptor>,
    /// The layer descriptors.
    pub layers: Vec<Descriptor>,
    /// The index entries.
    pub entries: Vec<Descriptor>,
}

impl Parsed {
    /// Is this an index (OCI or Docker)?
    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_LIST
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(Code::ManifestInvalid, message)
}

fn descriptor_digest(d: &Descriptor, what: &str) -> Result<(Digest, u64), Error> {
    let digest: Digest = d
        .digest
        .parse()
        .map_err(|e| Error::new(Code::DigestInvalid, format!("{what}: {e}")))?;
    let size = u64::try_from(d.size).map_err(|_| invalid(format!("{what}: negative size")))?;
    if let Some(data) = &d.data {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| invalid(format!("{what}: `data` is not base64: {e}")))?;
        if bytes.len() as u64 != size || Digest::of(digest.algorithm(), &bytes) != digest {
            return Err(invalid(format!(
                "{what}: the embedded `data` does not match its digest and size"
            )));
        }
    }
    Ok((digest, size))
}

/// Parses a pushed manifest. `content_type` is the request's, without
/// parameters (empty if absent).
pub fn parse(bytes: &[u8], content_type: &str) -> Result<Parsed, Error> {
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| {
        invalid(format!(
            "the manifest is not valid JSON of the expected shape: {e}"
        ))
    })?;
    if raw.schema_version != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }
    let declared = raw.media_type.as_deref().filter(|m| !m.is_empty());
    let header = Some(content_type).filter(|c| !c.is_empty() && *c != "application/json");
    let media_type = match (declared, header) {
        (Some(d), Some(h)) if d != h => {
            return Err(invalid(format!(
                "the manifest says its mediaType is {d} but it was sent as {h}"
            )));
        }
        (Some(m), _) | (None, Some(m)) => m.to_string(),
        // OCI 1.0 left mediaType optional: tell the kinds apart by shape.
        (None, None) if raw.manifests.is_some() => OCI_INDEX.to_string(),
        (None, None) if raw.config.is_some() => OCI_MANIFEST.to_string(),
        (None, None) => return Err(invalid("the manifest has no mediaType")),
    };
    let index = match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        OCI_INDEX | DOCKER_LIST => true,
        other => {
            return Err(invalid(format!(
                "unsupported manifest media type {other:?} (expected an OCI or Docker v2 manifest or index)"
            )));
        }
    };
    let subject = match &raw.subject {
        Some(s) => Some(descriptor_digest(s, "subject")?.0),
        None => None,
    };
    let annotations = raw
        .annotations
        .as_ref()
        .filter(|a| !a.is_empty())
        .map(|a| serde_json::to_string(a).unwrap_or_default());
    let mut parsed = Parsed {
        media_type,
        artifact_type: raw.artifact_type.filter(|a| !a.is_empty()),
        config_media_type: None,
        subject,
        annotations,
        blobs: Vec::new(),
        manifests: Vec::new(),
        config: None,
        layers: Vec::new(),
        entries: Vec::new(),
    };
    if index {
        if raw.config.is_some() || raw.layers.is_some() {
            return Err(invalid(
                "an index has `manifests`, not `config` or `layers`",
            ));
        }
        let entries = raw
            .manifests
            .ok_or_else(|| invalid("an index needs `manifests`"))?;
        for (i, entry) in entries.iter().enumerate() {
            let (digest, _) = descriptor_digest(entry, &format!("manifests[{i}]"))?;
            parsed.manifests.push(digest);
        }
        parsed.entries = entries;
    } else {
        if raw.manifests.is_some() {
            return Err(invalid(
                "an image manifest has `config` and `layers`, not `manifests`",
            ));
        }
        let config = raw
            .config
            .ok_or_else(|| invalid("an image manifest needs `config`"))?;
        let (digest, size) = descriptor_digest(&config, "config")?;
        parsed.blobs.push((digest, size, config.data.is_some()));
        parsed.config_media_type = Some(config.media_type.clone());
        let layers = raw.layers.unwrap_or_default();
        for (i, layer) in layers.iter().enumerate() {
            let (digest, size) = descriptor_digest(layer, &format!("layers[{i}]"))?;
            let elsewhere =
                layer.data.is_some() || layer.urls.as_ref().is_some_and(|u| !u.is_empty());
            parsed.blobs.push((digest, size, elsewhere));
        }
        parsed.config = Some(config);
        parsed.layers = layers;
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    #[test]
    fn image_manifest_with_embedded_empty_config() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/x.test",
            "config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{EMPTY}","size":2,"data":"e30="}},
            "layers":[]}}"#
        );
        let p = parse(m.as_bytes(), OCI_MANIFEST).unwrap();
        assert_eq!(p.artifact_type.as_deref(), Some("application/x.test"));
        assert_eq!(p.blobs.len(), 1);
        assert!(p.blobs[0].2, "embedded config");
    }

    #[test]
    fn mismatches_and_garbage_are_manifest_invalid() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"x","digest":"{EMPTY}","size":2}},"layers":[]}}"#
        );
        let e = parse(m.as_bytes(), OCI_INDEX).unwrap_err();
        assert_eq!(e.code, Code::ManifestInvalid);
        assert_eq!(
            parse(b"{", OCI_MANIFEST).unwrap_err().code,
            Code::ManifestInvalid
        );
        let bogus = r#"{"schemaVersion":2,"mediaType":"application/x-bogus"}"#;
        assert_eq!(
            parse(bogus.as_bytes(), "").unwrap_err().code,
            Code::ManifestInvalid
        );
        let bad_data = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{EMPTY}","size":2,"data":"e31="}},"layers":[]}}"#
        );
        assert_eq!(
            parse(bad_data.as_bytes(), "").unwrap_err().code,
            Code::ManifestInvalid
        );
        let bad_digest = r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:zz","size":2},"layers":[]}"#;
        assert_eq!(
            parse(bad_digest.as_bytes(), "").unwrap_err().code,
            Code::DigestInvalid
        );
    }

    #[test]
    fn index_children_are_listed() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{EMPTY}","size":2}}]}}"#
        );
        let p = parse(m.as_bytes(), "").unwrap();
        assert!(p.is_index());
        assert_eq!(p.manifests.len(), 1);
    }
}
