//! Scanning, for Wasm: what ECR's basic scan is to a container image, this
//! is to a Wasm artifact. The binary must parse and validate; its imports
//! must be ones a skiff world provides; it must have an entry point skiff
//! runs. Each problem is a finding with one of ECR's severities; the report
//! is stored and also attached to the image as a referrer artifact, so any
//! OCI client can fetch it with the referrers API.

use crate::artifact::{self, WasmInfo, WasmSource};
use crate::digest::Digest;
use crate::error::Internal;
use crate::manifest::{self, Parsed};
use crate::server::{Inner, now};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The `artifactType` (and layer media type) of the reports attached to
/// scanned images.
pub const SCAN_REPORT_TYPE: &str = "application/vnd.skiff.scan.report.v1+json";

/// The WebAssembly features skiff's engine compiles: wasmtime 48's
/// defaults (the WebAssembly 3.0 set) as skiff builds it — without the
/// `gc` and `threads` crate features, so no GC types, exceptions or shared
/// memory — and the component model without async. Kept in step with the
/// wasmtime features in the workspace's Cargo.toml; the end-to-end tests
/// check that what the scan flags, `skiff run` refuses.
pub const ENGINE_FEATURES: wasmparser::WasmFeatures = wasmparser::WasmFeatures::WASM3
    .union(wasmparser::WasmFeatures::COMPONENT_MODEL)
    .difference(wasmparser::WasmFeatures::GC_TYPES)
    .difference(wasmparser::WasmFeatures::EXCEPTIONS)
    .difference(wasmparser::WasmFeatures::THREADS);

/// Above this size a binary gets a LOW finding: it is slow to pull, compile
/// and keep in memory.
pub const LARGE_BINARY: u64 = 50 << 20;

/// ECR's finding severities, least severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    /// Facts about the binary.
    Informational,
    /// Worth knowing: it will run, but not as well as it could.
    Low,
    /// It will not run as it is.
    Medium,
    /// It asks for something skiff does not provide.
    High,
    /// It is not valid WebAssembly.
    Critical,
}

impl Severity {
    /// ECR's name for it (`HIGH`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Informational => "INFORMATIONAL",
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }
}

/// One finding, shaped as ECR's `ImageScanFinding`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// A stable identifier (`WASM-UNKNOWN-IMPORT`, ...).
    pub name: String,
    /// What was found, for people.
    pub description: String,
    /// How bad it is.
    pub severity: Severity,
    /// Details as key/value pairs.
    pub attributes: Vec<Attribute>,
}

/// A finding's detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribute {
    /// Its name.
    pub key: String,
    /// Its value.
    pub value: String,
}

/// ECR's `imageScanStatus.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScanStatus {
    /// The scan is running.
    InProgress,
    /// The scan finished; the findings are complete.
    Complete,
    /// The scan could not read the image.
    Failed,
    /// The image holds nothing skiff scans (not a Wasm image).
    UnsupportedImage,
}

impl ScanStatus {
    /// The ECR name.
    pub fn as_str(self) -> &'static str {
        match self {
            ScanStatus::InProgress => "IN_PROGRESS",
            ScanStatus::Complete => "COMPLETE",
            ScanStatus::Failed => "FAILED",
            ScanStatus::UnsupportedImage => "UNSUPPORTED_IMAGE",
        }
    }
}

/// `imageScanStatus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    /// Where the scan is.
    pub status: ScanStatus,
    /// Why, in words.
    pub description: String,
}

/// `imageScanFindings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Findings {
    /// When the scan finished (seconds since the epoch).
    pub image_scan_completed_at: i64,
    /// How many findings of each severity.
    pub finding_severity_counts: BTreeMap<Severity, u32>,
    /// The findings, most severe first.
    pub findings: Vec<Finding>,
}

/// The binary that was scanned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScannedWasm {
    /// Its digest.
    pub digest: String,
    /// `module` or `component`.
    pub kind: String,
    /// Its size in bytes.
    pub size: u64,
    /// What it imports.
    pub imports: Vec<String>,
    /// What it exports.
    pub exports: Vec<String>,
}

/// A scan report, shaped as ECR's `DescribeImageScanFindings` answer (plus
/// what skiff learnt about the binary). This JSON is also the layer of the
/// referrer artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanReport {
    /// The repository.
    pub repository_name: String,
    /// The scanned manifest's digest.
    pub image_digest: String,
    /// Where the scan is.
    pub image_scan_status: StatusInfo,
    /// The findings, once complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_scan_findings: Option<Findings>,
    /// The binary scanned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wasm: Option<ScannedWasm>,
}

impl ScanReport {
    fn new(repo: &str, digest: &str, status: ScanStatus, description: impl Into<String>) -> Self {
        ScanReport {
            repository_name: repo.to_string(),
            image_digest: digest.to_string(),
            image_scan_status: StatusInfo {
                status,
                description: description.into(),
            },
            image_scan_findings: None,
            wasm: None,
        }
    }

    /// The scan has started and not finished.
    pub(crate) fn in_progress(repo: &str, digest: &str) -> Self {
        Self::new(
            repo,
            digest,
            ScanStatus::InProgress,
            "The scan is in progress.",
        )
    }

    /// The most severe finding, if any.
    pub fn worst(&self) -> Option<Severity> {
        self.image_scan_findings
            .as_ref()
            .and_then(|f| f.findings.iter().map(|f| f.severity).max())
    }
}

fn attr(key: &str, value: impl Into<String>) -> Attribute {
    Attribute {
        key: key.to_string(),
        value: value.into(),
    }
}

fn finding(
    name: &str,
    severity: Severity,
    description: String,
    attributes: Vec<Attribute>,
) -> Finding {
    Finding {
        name: name.to_string(),
        description,
        severity,
        attributes,
    }
}

/// WASI preview 1's functions (`wasi_snapshot_preview1`), every one of
/// which skiff links for a core module.
const PREVIEW1: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "sched_yield",
    "random_get",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

/// The WASI 0.2 interfaces skiff's worlds (`wasi:cli/command` and
/// `wasi:http/proxy`, with sockets) provide to a component.
const WASI_P2: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/ip-name-lookup",
    "wasi:http/types",
    "wasi:http/outgoing-handler",
];

/// Is `name@version` a WASI 0.2 interface skiff provides?
fn provided_p2(import: &str) -> bool {
    let Some((name, version)) = import.split_once('@') else {
        return false;
    };
    WASI_P2.contains(&name) && version.starts_with("0.2.")
}

/// Why a core module's import is not provided, or None if it is.
fn unprovided_p1(import: &str) -> Option<String> {
    let (module, name) = import.split_once("::").unwrap_or((import, ""));
    match module {
        "wasi_snapshot_preview1" if PREVIEW1.contains(&name) => None,
        "wasi_snapshot_preview1" => Some(format!("`{name}` is not a WASI preview 1 function")),
        "wasi_unstable" => Some(
            "WASI preview 0 (`wasi_unstable`) is not provided; rebuild for wasm32-wasip1".into(),
        ),
        "wasi" | "wasi_snapshot_preview2" | "wasi_ephemeral" => Some(format!(
            "`{module}` is not a WASI version skiff provides (preview 1 for modules, 0.2 for components)"
        )),
        _ => Some(format!(
            "no skiff world provides module `{module}` (core modules get `wasi_snapshot_preview1` only)"
        )),
    }
}

/// Scans one Wasm binary. Findings come most severe first.
pub fn scan_wasm(bytes: &[u8]) -> (Vec<Finding>, Option<WasmInfo>) {
    let size = bytes.len() as u64;
    let mut findings = Vec::new();
    let info = match artifact::wasm_info(bytes) {
        Ok(info) => info,
        Err(e) => {
            findings.push(finding(
                "WASM-INVALID",
                Severity::Critical,
                format!("the binary does not parse: {e}"),
                vec![attr("size", size.to_string())],
            ));
            return (findings, None);
        }
    };
    let validate =
        |features| wasmparser::Validator::new_with_features(features).validate_all(bytes);
    if let Err(e) = validate(ENGINE_FEATURES) {
        match validate(wasmparser::WasmFeatures::all()) {
            // Valid WebAssembly, but not what skiff compiles.
            Ok(_) => findings.push(finding(
                "WASM-UNSUPPORTED-FEATURE",
                Severity::High,
                format!(
                    "the binary uses a WebAssembly feature skiff's engine does not enable (no threads, GC, exceptions or async components): {e}; compiling it will fail"
                ),
                vec![attr("offset", e.offset().to_string())],
            )),
            Err(e) => findings.push(finding(
                "WASM-INVALID",
                Severity::Critical,
                format!("the binary does not validate: {e}"),
                vec![attr("offset", e.offset().to_string())],
            )),
        }
    }
    let kind = if info.component {
        "component"
    } else {
        "module"
    };
    for import in &info.imports {
        let why = if info.component {
            (!provided_p2(import)).then(|| {
                format!("no skiff world provides `{import}` (components get the WASI 0.2 cli, clocks, filesystem, io, random, sockets and http interfaces)")
            })
        } else {
            unprovided_p1(import)
        };
        if let Some(why) = why {
            findings.push(finding(
                "WASM-UNKNOWN-IMPORT",
                Severity::High,
                format!("the {kind} imports `{import}`: {why}; instantiating it will fail"),
                vec![attr("import", import.clone())],
            ));
        }
    }
    let entry = if info.component {
        info.exports.iter().find(|e| {
            e.starts_with("wasi:cli/run@0.2.") || e.starts_with("wasi:http/incoming-handler@0.2.")
        })
    } else {
        info.exports.iter().find(|e| *e == "_start" || e.is_empty())
    };
    if entry.is_none() {
        let wanted = if info.component {
            "`wasi:cli/run` or `wasi:http/incoming-handler`"
        } else {
            "`_start`"
        };
        findings.push(finding(
            "WASM-NO-ENTRY-POINT",
            Severity::Medium,
            format!("the {kind} exports no {wanted}, so skiff cannot run it as a task"),
            vec![attr("exports", info.exports.join(", "))],
        ));
    }
    if size > LARGE_BINARY {
        findings.push(finding(
            "WASM-LARGE-BINARY",
            Severity::Low,
            format!(
                "the binary is {} MiB; large binaries are slow to pull and compile (strip debug info, optimise with wasm-opt)",
                size >> 20
            ),
            vec![attr("size", size.to_string())],
        ));
    }
    findings.push(finding(
        "WASM-SUMMARY",
        Severity::Informational,
        format!(
            "a {kind} of {size} bytes with {} imports and {} exports",
            info.imports.len(),
            info.exports.len()
        ),
        vec![
            attr("kind", kind),
            attr("size", size.to_string()),
            attr("imports", info.imports.join(", ")),
            attr("exports", info.exports.join(", ")),
        ],
    ));
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    (findings, Some(info))
}

/// An image's Wasm binary, as this registry holds it.
pub(crate) enum ImageWasm {
    /// The binary.
    Binary(Vec<u8>),
    /// Not an image skiff runs, and why.
    Unsupported(String),
    /// One, but its binary could not be read, and why.
    Unreadable(String),
}

/// Builds a complete report from findings.
fn complete(repo: &str, digest: &str, wasm: &[u8], at: i64) -> ScanReport {
    let (findings, info) = scan_wasm(wasm);
    let mut counts = BTreeMap::new();
    for f in &findings {
        *counts.entry(f.severity).or_insert(0) += 1;
    }
    let mut report = ScanReport::new(
        repo,
        digest,
        ScanStatus::Complete,
        "The scan was completed successfully.",
    );
    report.image_scan_findings = Some(Findings {
        image_scan_completed_at: at,
        finding_severity_counts: counts,
        findings,
    });
    report.wasm = info.map(|info| ScannedWasm {
        digest: Digest::sha256_of(wasm).to_string(),
        kind: if info.component {
            "component"
        } else {
            "module"
        }
        .into(),
        size: wasm.len() as u64,
        imports: info.imports,
        exports: info.exports,
    });
    report
}

/// The empty JSON object, the config of a report artifact.
const EMPTY_CONFIG: &[u8] = b"{}";
const EMPTY_CONFIG_TYPE: &str = "application/vnd.oci.empty.v1+json";

impl Inner {
    /// Starts scanning image `digest` of `repo` in the background (ECR's
    /// `StartImageScan`): records it as in progress and returns that.
    pub(crate) async fn start_scan(
        self: &Arc<Self>,
        repo: &str,
        digest: &str,
    ) -> Result<ScanReport, Internal> {
        let pending = ScanReport::in_progress(repo, digest);
        {
            let _shared = self.gc_lock.read().await;
            let p = pending.clone();
            self.off_thread(move |i| i.record_scan(&p)).await?;
        }
        let (inner, repo, digest) = (Arc::clone(self), repo.to_string(), digest.to_string());
        tokio::spawn(async move {
            if let Err(e) = inner.run_scan(&repo, &digest).await {
                tracing::warn!(%repo, %digest, "scan failed: {e}");
                // Not IN_PROGRESS forever: the scan ended, without findings.
                let failed = ScanReport::new(
                    &repo,
                    &digest,
                    ScanStatus::Failed,
                    format!("The scan could not complete: {e}"),
                );
                let recorded = {
                    let _shared = inner.gc_lock.read().await;
                    inner.off_thread(move |i| i.record_scan(&failed)).await
                };
                if let Err(e) = recorded {
                    tracing::error!(%repo, %digest, "cannot record the failed scan: {e}");
                }
            }
        });
        Ok(pending)
    }

    /// Scans image `digest` of `repo` and records the report; None if
    /// there is no such image.
    pub(crate) async fn run_scan(
        self: &Arc<Self>,
        repo: &str,
        digest: &str,
    ) -> Result<Option<ScanReport>, Internal> {
        // One scan at a time: each holds a whole binary in memory, and
        // pushes must not queue behind a burst of them.
        let _slot = self
            .scan_slots
            .acquire()
            .await
            .map_err(|e| Internal::Other(format!("scan slots: {e}")))?;
        let (r, d) = (repo.to_string(), digest.to_string());
        let Some(report) = self.off_thread(move |i| i.scan_image(&r, &d)).await? else {
            return Ok(None);
        };
        let _shared = self.gc_lock.read().await;
        let stored = report.clone();
        self.off_thread(move |i| i.record_scan(&stored)).await?;
        tracing::info!(
            %repo, %digest,
            status = report.image_scan_status.status.as_str(),
            worst = report.worst().map(Severity::as_str).unwrap_or("NONE"),
            "scanned"
        );
        Ok(Some(report))
    }

    /// Reads a stored manifest and parses it.
    fn stored_manifest(&self, repo: &str, digest: &str) -> Result<Option<Parsed>, Internal> {
        let Some(row) = self.db.manifest(repo, digest)? else {
            return Ok(None);
        };
        let d: Digest = row
            .digest
            .parse()
            .map_err(|e| Internal::Other(format!("stored digest: {e}")))?;
        let bytes = self.blobs.read(&d)?;
        manifest::parse(&bytes, &row.media_type)
            .map(Some)
            .map_err(|e| Internal::Other(format!("stored manifest {digest}: {e}")))
    }

    /// The content of a descriptor of `manifest`: embedded, or a blob.
    fn content(&self, repo: &str, manifest: &Parsed, digest: &str) -> Result<Vec<u8>, String> {
        // Embedded in the manifest (`data`, checked when it was pushed)?
        let embedded = manifest
            .config
            .iter()
            .chain(&manifest.layers)
            .find(|d| d.digest == digest)
            .and_then(|d| d.data.as_deref());
        if let Some(data) = embedded {
            use base64::Engine;
            return base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| format!("the embedded data of {digest} is not base64: {e}"));
        }
        self.blob(repo, digest)
    }

    /// A blob of `repo`, if it is one (never another repository's: a
    /// layer pushed with `urls` is not checked at push time) and not too
    /// large to scan.
    fn blob(&self, repo: &str, digest: &str) -> Result<Vec<u8>, String> {
        let d: Digest = digest.parse().map_err(|e| format!("{e}"))?;
        match self.db.linked_blob(repo, &d) {
            Ok(Some(size)) if size > artifact::MAX_WASM_BYTES => Err(format!(
                "blob {digest} is {size} bytes, more than the {} skiff scans",
                artifact::MAX_WASM_BYTES
            )),
            Ok(Some(_)) => self
                .blobs
                .read(&d)
                .map_err(|e| format!("blob {digest} cannot be read: {e}")),
            Ok(None) => Err(format!(
                "blob {digest} is not in {repo} (a layer stored elsewhere is not scanned)"
            )),
            Err(e) => Err(format!("blob {digest} cannot be looked up: {e}")),
        }
    }

    /// Scans the image `digest` of `repo` (blocking). None if there is no
    /// such manifest.
    pub(crate) fn scan_image(
        &self,
        repo: &str,
        digest: &str,
    ) -> Result<Option<ScanReport>, Internal> {
        Ok(self.image_wasm(repo, digest)?.map(|found| match found {
            ImageWasm::Binary(wasm) => complete(repo, digest, &wasm, now()),
            ImageWasm::Unsupported(why) => ScanReport::new(
                repo,
                digest,
                ScanStatus::UnsupportedImage,
                format!("Not a Wasm image skiff can scan: {why}."),
            ),
            ImageWasm::Unreadable(why) => ScanReport::new(repo, digest, ScanStatus::Failed, why),
        }))
    }

    /// The Wasm binary of the image `digest` of `repo`, read from this
    /// registry's storage (blocking). None if there is no such manifest.
    pub(crate) fn image_wasm(
        &self,
        repo: &str,
        digest: &str,
    ) -> Result<Option<ImageWasm>, Internal> {
        let Some(mut parsed) = self.stored_manifest(repo, digest)? else {
            return Ok(None);
        };
        let unsupported = |why: String| Ok(Some(ImageWasm::Unsupported(why)));
        if parsed.artifact_type.as_deref() == Some(SCAN_REPORT_TYPE) {
            return unsupported("it is a scan report".into());
        }
        if parsed.is_index() {
            let child = match artifact::pick_wasm_platform(&parsed) {
                Ok(d) => d.digest.clone(),
                Err(why) => return unsupported(why),
            };
            match self.stored_manifest(repo, &child)? {
                Some(p) => parsed = p,
                None => return unsupported(format!("its wasm entry {child} is not in {repo}")),
            }
        }
        let config = match parsed.config.as_ref() {
            Some(c) if c.media_type.ends_with("config.v1+json") => {
                self.content(repo, &parsed, &c.digest).ok()
            }
            _ => None,
        };
        let located = match artifact::locate_wasm(&parsed, config.as_deref()) {
            Ok(source) => source,
            Err(why) => return unsupported(why),
        };
        let wasm = match located {
            WasmSource::Layer(layer) => self.content(repo, &parsed, &layer),
            WasmSource::TarLayer {
                digest: layer,
                gzip,
            } => {
                let path = config
                    .as_deref()
                    .map(artifact::run_config)
                    .and_then(|c| c.wasm_path);
                self.content(repo, &parsed, &layer)
                    .and_then(|tar| artifact::wasm_from_tar(&tar, gzip, path.as_deref()))
            }
        };
        Ok(Some(match wasm {
            Ok(wasm) => ImageWasm::Binary(wasm),
            Err(why) => ImageWasm::Unreadable(why),
        }))
    }

    /// Stores a finished report, and attaches it to the image as a
    /// referrer (replacing an earlier report). Blocking; the caller holds
    /// the garbage-collection lock shared.
    pub(crate) fn record_scan(&self, report: &ScanReport) -> Result<(), Internal> {
        let repo = report.repository_name.as_str();
        let json = serde_json::to_string(report).map_err(|e| Internal::Other(e.to_string()))?;
        let Some(subject) = self.db.manifest(repo, &report.image_digest)? else {
            // Deleted while it was scanned: nothing to attach to.
            return Ok(());
        };
        let record = || {
            self.db.put_scan(
                repo,
                &report.image_digest,
                report.image_scan_status.status.as_str(),
                &json,
                now(),
            )
        };
        if report.image_scan_status.status == ScanStatus::InProgress {
            return record();
        }
        let subject_digest: Digest = subject
            .digest
            .parse()
            .map_err(|e| Internal::Other(format!("stored digest: {e}")))?;
        for old in self.db.referrers(repo, &subject_digest)? {
            if old.artifact_type.as_deref() == Some(SCAN_REPORT_TYPE)
                && let Ok(d) = old.digest.parse::<Digest>()
            {
                self.db.delete_manifest(repo, &d)?;
            }
        }
        let layer = json.clone().into_bytes();
        let layer_digest = Digest::sha256_of(&layer);
        let config_digest = Digest::sha256_of(EMPTY_CONFIG);
        let at = now();
        self.blobs.put(&config_digest, EMPTY_CONFIG)?;
        self.db
            .link_blob(repo, &config_digest, EMPTY_CONFIG.len() as u64, at)?;
        self.blobs.put(&layer_digest, &layer)?;
        self.db
            .link_blob(repo, &layer_digest, layer.len() as u64, at)?;
        let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest::OCI_MANIFEST,
            "artifactType": SCAN_REPORT_TYPE,
            "config": {
                "mediaType": EMPTY_CONFIG_TYPE,
                "digest": config_digest.to_string(),
                "size": EMPTY_CONFIG.len(),
            },
            "layers": [{
                "mediaType": SCAN_REPORT_TYPE,
                "digest": layer_digest.to_string(),
                "size": layer.len(),
            }],
            "subject": {
                "mediaType": subject.media_type,
                "digest": subject.digest,
                "size": subject.size,
            },
            "annotations": {
                "org.opencontainers.image.created": created,
                "vnd.skiff.scan.status": report.image_scan_status.status.as_str(),
                "vnd.skiff.scan.worst": report.worst().map(Severity::as_str).unwrap_or("NONE"),
            },
        });
        let bytes = serde_json::to_vec(&body).map_err(|e| Internal::Other(e.to_string()))?;
        let parsed = manifest::parse(&bytes, manifest::OCI_MANIFEST)
            .map_err(|e| Internal::Other(format!("scan report manifest: {e}")))?;
        let digest = Digest::sha256_of(&bytes);
        self.blobs.put(&digest, &bytes)?;
        let stored = self.db.put_manifest(&crate::db::NewManifest {
            repo,
            digest: &digest,
            media_type: manifest::OCI_MANIFEST,
            artifact_type: Some(SCAN_REPORT_TYPE),
            config_media_type: Some(EMPTY_CONFIG_TYPE),
            size: bytes.len() as u64,
            subject: Some(&subject_digest),
            annotations: parsed.annotations.clone(),
            children: vec![config_digest, layer_digest],
            tag: None,
            now: at,
            announce: false,
        })?;
        if stored != crate::db::Recorded::Stored {
            // The repository went while the image was scanned.
            return Ok(());
        }
        // Finished only once the referrer is there too.
        record()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(findings: &[Finding]) -> Vec<(&str, Severity)> {
        findings
            .iter()
            .map(|f| (f.name.as_str(), f.severity))
            .collect()
    }

    #[test]
    fn a_wasi_command_module_has_only_its_summary() {
        let wasm = wat::parse_str(
            r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
                (memory (export "memory") 1) (func (export "_start")))"#,
        )
        .unwrap();
        let (findings, info) = scan_wasm(&wasm);
        assert_eq!(
            names(&findings),
            [("WASM-SUMMARY", Severity::Informational)]
        );
        assert!(!info.unwrap().component);
        let summary = &findings[0].attributes;
        assert!(summary.contains(&attr("kind", "module")));
        assert!(summary.contains(&attr("imports", "wasi_snapshot_preview1::fd_write")));
    }

    #[test]
    fn imports_no_world_provides_are_high() {
        let wasm = wat::parse_str(
            r#"(module (import "env" "host_log" (func))
                (import "wasi_unstable" "fd_write" (func))
                (import "wasi_snapshot_preview1" "no_such_call" (func))
                (func (export "_start")))"#,
        )
        .unwrap();
        let (findings, _) = scan_wasm(&wasm);
        let high: Vec<&Finding> = findings
            .iter()
            .filter(|f| f.severity == Severity::High)
            .collect();
        assert_eq!(high.len(), 3, "{findings:?}");
        assert!(
            high[0].description.contains("module `env`"),
            "{}",
            high[0].description
        );
        assert!(
            high[1].description.contains("preview 0"),
            "{}",
            high[1].description
        );
        assert!(
            high[2].description.contains("`no_such_call`"),
            "{}",
            high[2].description
        );
        assert_eq!(findings[0].severity, Severity::High, "most severe first");
    }

    #[test]
    fn invalid_and_entryless_binaries() {
        // Parses, but does not validate: the function returns nothing yet
        // leaves an i32 on the stack.
        let invalid = wat::parse_str(r#"(module (func (export "_start") i32.const 1))"#).unwrap();
        let (findings, _) = scan_wasm(&invalid);
        assert_eq!(findings[0].name, "WASM-INVALID");
        assert_eq!(findings[0].severity, Severity::Critical);
        assert!(
            findings[0].description.contains("does not validate"),
            "{}",
            findings[0].description
        );

        let (findings, info) = scan_wasm(b"\0asm\x01\0\0\0\xff");
        assert!(info.is_none());
        assert_eq!(names(&findings), [("WASM-INVALID", Severity::Critical)]);

        let reactor = wat::parse_str(r#"(module (func (export "_initialize")))"#).unwrap();
        let (findings, _) = scan_wasm(&reactor);
        assert_eq!(
            names(&findings),
            [
                ("WASM-NO-ENTRY-POINT", Severity::Medium),
                ("WASM-SUMMARY", Severity::Informational)
            ]
        );
    }

    #[test]
    fn component_imports_are_checked_against_wasi_0_2() {
        assert!(provided_p2("wasi:cli/environment@0.2.0"));
        assert!(provided_p2("wasi:http/outgoing-handler@0.2.6"));
        assert!(!provided_p2("wasi:cli/environment@0.3.0"));
        assert!(!provided_p2("wasi:keyvalue/store@0.2.0"));
        assert!(!provided_p2("my:app/logging"));
    }
}
