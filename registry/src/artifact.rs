//! Wasm artifacts: producing the CNCF "Wasm OCI Artifact", and recognising
//! every shape the ecosystem ships Wasm in (that artifact, Docker/runwasi
//! images with a tar layer, indexes with a wasm platform, single raw-wasm
//! layer images) — and refusing, with a reason, what skiff cannot run.

use crate::digest::Digest;
use crate::manifest::{self, Descriptor, Parsed};
use serde_json::json;

/// The CNCF Wasm artifact's config media type.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The CNCF Wasm artifact's layer media type.
pub const WASM_LAYER: &str = "application/wasm";
/// Other media types of a layer that is a bare Wasm binary.
pub const RAW_WASM_LAYERS: [&str; 4] = [
    WASM_LAYER,
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.module.wasm.content.layer.v1+wasm",
];
const IMAGE_CONFIGS: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
const TAR_LAYERS: [&str; 4] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];
const SPIN_CONFIG: &str = "application/vnd.fermyon.spin.application.v1+config";

/// What a Wasm binary declares, read without compiling it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmInfo {
    /// A component (WASI 0.2) rather than a core module (WASI preview 1).
    pub component: bool,
    /// Its imports: `module::name` for modules, interface names for
    /// components.
    pub imports: Vec<String>,
    /// Its exports.
    pub exports: Vec<String>,
}

/// Parses the outermost module or component of `bytes` for its imports
/// and exports. Nested modules (inside a component) are walked past.
pub fn wasm_info(bytes: &[u8]) -> Result<WasmInfo, String> {
    use wasmparser::{Encoding, Parser, Payload};
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("not a WebAssembly binary (no \\0asm header)".into());
    }
    let mut depth = 0usize;
    let mut info = WasmInfo {
        component: false,
        imports: Vec::new(),
        exports: Vec::new(),
    };
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| e.to_string())? {
            Payload::Version { encoding, .. } => {
                depth += 1;
                if depth == 1 {
                    info.component = encoding == Encoding::Component;
                }
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ImportSection(reader) if depth == 1 => {
                for import in reader.into_imports() {
                    let import = import.map_err(|e| e.to_string())?;
                    info.imports
                        .push(format!("{}::{}", import.module, import.name));
                }
            }
            Payload::ExportSection(reader) if depth == 1 => {
                for export in reader {
                    info.exports
                        .push(export.map_err(|e| e.to_string())?.name.to_string());
                }
            }
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    info.imports
                        .push(import.map_err(|e| e.to_string())?.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    info.exports
                        .push(export.map_err(|e| e.to_string())?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

/// A Wasm binary packaged as the CNCF Wasm OCI artifact: its config and
/// manifest bytes (the layer is the binary itself).
#[derive(Debug, Clone)]
pub struct Packaged {
    /// The config blob.
    pub config: Vec<u8>,
    /// The manifest.
    pub manifest: Vec<u8>,
    /// The layer's digest.
    pub layer_digest: Digest,
}

/// Packages `wasm` as a CNCF Wasm OCI artifact: config
/// `application/vnd.wasm.config.v0+json` (os `wasip1` or `wasip2`, and for
/// a component its imports and exports), one `application/wasm` layer.
pub fn package(wasm: &[u8], created: std::time::SystemTime) -> Result<Packaged, String> {
    let info = wasm_info(wasm)?;
    let layer_digest = Digest::sha256_of(wasm);
    let mut config = json!({
        "created": humantime::format_rfc3339_seconds(created).to_string(),
        "author": "skiff",
        "architecture": "wasm",
        "os": if info.component { "wasip2" } else { "wasip1" },
        "layerDigests": [layer_digest.to_string()],
    });
    if info.component {
        config["component"] = json!({
            "exports": info.exports,
            "imports": info.imports,
            "target": null,
        });
    }
    let config = serde_json::to_vec(&config).map_err(|e| e.to_string())?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_MANIFEST,
        "config": {
            "mediaType": WASM_CONFIG,
            "digest": Digest::sha256_of(&config).to_string(),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": WASM_LAYER,
            "digest": layer_digest.to_string(),
            "size": wasm.len(),
        }],
    }))
    .map_err(|e| e.to_string())?;
    Ok(Packaged {
        config,
        manifest,
        layer_digest,
    })
}

/// Which entry of an index skiff runs: the one whose platform is Wasm.
pub fn pick_wasm_platform(index: &Parsed) -> Result<&Descriptor, String> {
    let is_wasm = |d: &&Descriptor| {
        d.platform.as_ref().is_some_and(|p| {
            p["architecture"] == "wasm"
                && matches!(p["os"].as_str(), Some("wasi" | "wasip1" | "wasip2"))
        })
    };
    index.entries.iter().find(is_wasm).ok_or_else(|| {
        let platforms: Vec<String> = index
            .entries
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .map(|p| {
                format!(
                    "{}/{}",
                    p["os"].as_str().unwrap_or("?"),
                    p["architecture"].as_str().unwrap_or("?")
                )
            })
            .collect();
        format!(
            "an image index with no wasm platform (it has {}); skiff runs WebAssembly",
            if platforms.is_empty() {
                "no platforms".to_string()
            } else {
                platforms.join(", ")
            }
        )
    })
}

/// Where the Wasm binary of an image manifest is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WasmSource {
    /// The layer with this digest is the binary.
    Layer(String),
    /// The binary is a file inside this tar layer (gzipped or not); the
    /// image config must be read to know which file and how to run it.
    TarLayer {
        /// The layer's digest.
        digest: String,
        /// Whether it is gzip-compressed.
        gzip: bool,
    },
}

/// Decides where an image manifest keeps its Wasm, or why skiff cannot
/// run it. `config` is the config blob when the manifest's config is an
/// image config (it says os and architecture); pass None otherwise.
pub fn locate_wasm(manifest: &Parsed, config: Option<&[u8]>) -> Result<WasmSource, String> {
    let config_type = manifest.config_media_type.as_deref().unwrap_or("");
    if config_type == SPIN_CONFIG {
        return Err(format!(
            "a Spin application ({} layers plus its spin.toml): skiff runs one Wasm module or component per container; run it with `spin up`",
            manifest.layers.len()
        ));
    }
    let raw: Vec<&Descriptor> = manifest
        .layers
        .iter()
        .filter(|l| RAW_WASM_LAYERS.contains(&l.media_type.as_str()))
        .collect();
    if IMAGE_CONFIGS.contains(&config_type) {
        let config: serde_json::Value = config
            .and_then(|c| serde_json::from_slice(c).ok())
            .ok_or("the image config could not be read")?;
        let (os, arch) = (
            config["os"].as_str().unwrap_or("?"),
            config["architecture"].as_str().unwrap_or("?"),
        );
        if arch != "wasm" || !matches!(os, "wasi" | "wasip1" | "wasip2") {
            return Err(format!(
                "a {os}/{arch} container image: skiff runs WebAssembly (os wasi/wasip1/wasip2, architecture wasm)"
            ));
        }
        if let [layer] = raw.as_slice() {
            return Ok(WasmSource::Layer(layer.digest.clone()));
        }
        let tars: Vec<&Descriptor> = manifest
            .layers
            .iter()
            .filter(|l| TAR_LAYERS.contains(&l.media_type.as_str()))
            .collect();
        return match tars.as_slice() {
            [layer] => Ok(WasmSource::TarLayer {
                digest: layer.digest.clone(),
                gzip: layer.media_type.ends_with("gzip"),
            }),
            [] => Err("a wasm image with no layer holding the binary".into()),
            many => Err(format!(
                "a wasm image with {} filesystem layers; skiff runs images with one",
                many.len()
            )),
        };
    }
    match raw.as_slice() {
        [layer] if manifest.layers.len() == 1 => Ok(WasmSource::Layer(layer.digest.clone())),
        _ => {
            let layers: Vec<&str> = manifest
                .layers
                .iter()
                .map(|l| l.media_type.as_str())
                .collect();
            Err(format!(
                "an artifact with config {config_type:?} and layers {layers:?}: skiff runs artifacts with one Wasm layer"
            ))
        }
    }
}

/// How an image config says to run its Wasm: the binary's path in the
/// layer, its arguments and environment (Docker/runwasi images).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunConfig {
    /// Path of the `.wasm` inside the layer, if the config names one.
    pub wasm_path: Option<String>,
    /// Arguments after the binary (`Entrypoint[1..]` + `Cmd`).
    pub args: Vec<String>,
    /// `KEY=VALUE` pairs.
    pub env: Vec<(String, String)>,
}

/// Reads an image config's `Entrypoint`, `Cmd` and `Env`.
pub fn run_config(config: &[u8]) -> RunConfig {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(config) else {
        return RunConfig::default();
    };
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let c = &v["config"];
    let mut line = strings(&c["Entrypoint"]);
    line.extend(strings(&c["Cmd"]));
    let wasm_path = line.first().filter(|p| p.ends_with(".wasm")).cloned();
    let args = if wasm_path.is_some() {
        line[1..].to_vec()
    } else {
        line
    };
    let env = strings(&c["Env"])
        .into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    RunConfig {
        wasm_path,
        args,
        env,
    }
}

/// Finds the Wasm binary in a tar layer: the file `path` names, or else
/// the only `.wasm` file.
/// The largest Wasm binary skiff takes out of a layer (or scans): far more
/// than any binary it could run well, and a bound on what a hostile layer
/// (a small gzip that expands to gigabytes) can make it allocate.
pub const MAX_WASM_BYTES: u64 = 512 << 20;

pub fn wasm_from_tar(layer: &[u8], gzip: bool, path: Option<&str>) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let reader: Box<dyn Read + '_> = if gzip {
        Box::new(flate2::read::GzDecoder::new(layer))
    } else {
        Box::new(layer)
    };
    let mut archive = tar::Archive::new(reader);
    let wanted = path.map(|p| {
        p.trim_start_matches('/')
            .trim_start_matches("./")
            .to_string()
    });
    let mut found: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in archive
        .entries()
        .map_err(|e| format!("the layer is not a tar archive: {e}"))?
    {
        let mut entry = entry.map_err(|e| format!("a broken tar entry: {e}"))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| format!("a tar entry with a bad name: {e}"))?
            .to_string_lossy()
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_string();
        let matches = match &wanted {
            Some(w) => &name == w,
            None => name.ends_with(".wasm"),
        };
        if matches {
            if found.len() == 1 && wanted.is_none() {
                // A second candidate: ambiguous, whatever else follows.
                found.push((name, Vec::new()));
                break;
            }
            let size = entry.header().size().unwrap_or(u64::MAX);
            if size > MAX_WASM_BYTES {
                return Err(format!(
                    "{name} is {size} bytes, more than the {MAX_WASM_BYTES} skiff takes"
                ));
            }
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| format!("reading {name}: {e}"))?;
            found.push((name, bytes));
            if wanted.is_some() {
                break;
            }
        }
    }
    match (found.len(), &wanted) {
        (1, _) => Ok(found.remove(0).1),
        (0, Some(w)) => Err(format!("the image's entrypoint {w} is not in its layer")),
        (0, None) => Err("the image's layer holds no .wasm file".into()),
        (n, _) => Err(format!(
            "the image's layer holds {n} .wasm files and no entrypoint says which to run"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(config_type: &str, layers: &[&str]) -> Parsed {
        let layers: Vec<serde_json::Value> = layers
            .iter()
            .enumerate()
            .map(|(i, mt)| json!({"mediaType": mt, "digest": Digest::sha256_of(&[i as u8]).to_string(), "size": 1}))
            .collect();
        let m = json!({
            "schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST,
            "config": {"mediaType": config_type, "digest": Digest::sha256_of(b"c").to_string(), "size": 1},
            "layers": layers,
        });
        manifest::parse(m.to_string().as_bytes(), "").unwrap()
    }

    #[test]
    fn packages_a_module_and_a_component() {
        let module = wat::parse_str(r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))) (func (export "_start")))"#).unwrap();
        let p = package(&module, std::time::UNIX_EPOCH).unwrap();
        let config: serde_json::Value = serde_json::from_slice(&p.config).unwrap();
        assert_eq!(config["os"], "wasip1");
        assert_eq!(config["architecture"], "wasm");
        assert_eq!(config["created"], "1970-01-01T00:00:00Z");
        assert!(config.get("component").is_none());
        let m = manifest::parse(&p.manifest, manifest::OCI_MANIFEST).unwrap();
        assert_eq!(m.config_media_type.as_deref(), Some(WASM_CONFIG));
        assert_eq!(
            locate_wasm(&m, None).unwrap(),
            WasmSource::Layer(p.layer_digest.to_string())
        );

        let component =
            wat::parse_str(r#"(component (import "wasi:cli/stdout@0.2.0" (instance)))"#).unwrap();
        let config: serde_json::Value =
            serde_json::from_slice(&package(&component, std::time::UNIX_EPOCH).unwrap().config)
                .unwrap();
        assert_eq!(config["os"], "wasip2");
        assert_eq!(
            config["component"]["imports"],
            json!(["wasi:cli/stdout@0.2.0"])
        );
    }

    #[test]
    fn recognises_and_refuses() {
        assert!(matches!(
            locate_wasm(
                &parsed(
                    "application/x.any",
                    &["application/vnd.wasm.content.layer.v1+wasm"]
                ),
                None
            ),
            Ok(WasmSource::Layer(_))
        ));
        let spin = locate_wasm(
            &parsed(
                SPIN_CONFIG,
                &[
                    "application/vnd.wasm.content.layer.v1+wasm",
                    "application/vnd.wasm.content.layer.v1+wasm",
                ],
            ),
            None,
        );
        assert!(spin.unwrap_err().contains("Spin application"));
        let linux = locate_wasm(
            &parsed(IMAGE_CONFIGS[0], &[TAR_LAYERS[1]]),
            Some(br#"{"os":"linux","architecture":"amd64"}"#),
        );
        assert!(linux.unwrap_err().contains("linux/amd64 container image"));
        let wasi = locate_wasm(
            &parsed(IMAGE_CONFIGS[0], &[TAR_LAYERS[1]]),
            Some(br#"{"os":"wasip1","architecture":"wasm"}"#),
        );
        assert!(matches!(wasi, Ok(WasmSource::TarLayer { gzip: true, .. })));
        let helm = locate_wasm(
            &parsed(
                "application/vnd.cncf.helm.config.v1+json",
                &["application/tar"],
            ),
            None,
        );
        assert!(helm.unwrap_err().contains("one Wasm layer"));
    }

    #[test]
    fn reads_docker_style_run_configs() {
        let rc = run_config(br#"{"config":{"Entrypoint":["/app.wasm","--flag"],"Cmd":["x"],"Env":["A=1","B=two=2"]}}"#);
        assert_eq!(rc.wasm_path.as_deref(), Some("/app.wasm"));
        assert_eq!(rc.args, ["--flag", "x"]);
        assert_eq!(
            rc.env,
            [
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "two=2".to_string())
            ]
        );
    }

    #[test]
    fn a_tar_entry_too_large_to_take_is_refused_before_it_is_read() {
        // A header that claims more than the limit, and nothing after it:
        // refused from the header alone, nothing allocated.
        let mut header = tar::Header::new_gnu();
        header.set_path("huge.wasm").unwrap();
        header.set_size(MAX_WASM_BYTES + 1);
        header.set_mode(0o644);
        header.set_cksum();
        let err = wasm_from_tar(header.as_bytes(), false, None).unwrap_err();
        assert!(err.contains("more than"), "{err}");
    }

    #[test]
    fn finds_the_wasm_in_a_tar_layer() {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("app.wasm", b"\0asm-one".as_slice()),
            ("etc/readme", b"hi".as_slice()),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, data).unwrap();
        }
        let tar = builder.into_inner().unwrap();
        assert_eq!(wasm_from_tar(&tar, false, None).unwrap(), b"\0asm-one");
        assert_eq!(
            wasm_from_tar(&tar, false, Some("/app.wasm")).unwrap(),
            b"\0asm-one"
        );
        assert!(
            wasm_from_tar(&tar, false, Some("/other.wasm"))
                .unwrap_err()
                .contains("not in its layer")
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        assert_eq!(
            wasm_from_tar(&gz.finish().unwrap(), true, None).unwrap(),
            b"\0asm-one"
        );
    }
}
