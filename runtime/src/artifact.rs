//! Artifacts: a Wasm binary, validated, compiled (or loaded from the compile
//! cache) and pre-linked, ready to be instantiated any number of times.

use crate::LoadError;
use crate::cache::{CompileCache, Lookup};
use crate::sandbox::Host;
use sha2::{Digest as _, Sha256};
use std::sync::OnceLock;
use wasmtime::component::Component;
use wasmtime::{Engine, Module};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// What kind of program an artifact is, decided from the binary itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactKind {
    /// A core module using WASI preview 1 (`_start`).
    Module,
    /// A component exporting `wasi:cli/run` (the `wasi:cli/command` world).
    Command,
    /// A component exporting `wasi:http/incoming-handler` (the
    /// `wasi:http/proxy` world): served, one instance per request.
    HttpProxy,
}

impl std::fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ArtifactKind::Module => "core module (wasip1)",
            ArtifactKind::Command => "component (wasi:cli/command)",
            ArtifactKind::HttpProxy => "component (wasi:http/proxy)",
        })
    }
}

/// Where an artifact's compiled code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadSource {
    /// Compiled now (and written to the compile cache if it is on).
    Compiled,
    /// Loaded from the on-disk compile cache: no compilation happened.
    DiskCache,
}

/// A loaded artifact. Cheap to share (`Arc`); instantiating it is all that
/// starting a task costs.
pub struct Artifact {
    name: String,
    digest: String,
    kind: ArtifactKind,
    source: LoadSource,
    pub(crate) pre: Prepared,
}

pub(crate) enum Prepared {
    Module(wasmtime::InstancePre<Host>),
    Command(CommandPre<Host>),
    Proxy(ProxyPre<Host>),
}

impl std::fmt::Debug for Artifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Artifact")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .field("kind", &self.kind)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Artifact {
    /// The name it was loaded under (file name or image reference).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// `sha256:<hex>` of the Wasm binary.
    pub fn digest(&self) -> &str {
        &self.digest
    }
    /// Module, command component or HTTP component.
    pub fn kind(&self) -> ArtifactKind {
        self.kind
    }
    /// Whether this load compiled or hit the cache.
    pub fn source(&self) -> LoadSource {
        self.source
    }
}

/// Reads what kind of program `bytes` is without compiling it: the header
/// says module or component, a component's exports say command or HTTP
/// proxy. Also rejects, with a reason, what is not Wasm, does not parse, or
/// has no entry point skiff can call.
pub fn inspect(name: &str, bytes: &[u8]) -> Result<ArtifactKind, LoadError> {
    use wasmparser::{Chunk, Encoding, Parser, Payload};
    let not_wasm = |reason: &str| LoadError::NotWasm {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if bytes.starts_with(b"\x7fELF") {
        return Err(not_wasm(
            "it is native code (ELF), perhaps a precompiled .cwasm; give skiff the .wasm file",
        ));
    }
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(not_wasm("it does not start with the `\\0asm` magic number"));
    }
    if !matches!(bytes[4..8], [1, 0, 0, 0] | [_, _, 1, 0]) {
        return Err(not_wasm(&format!(
            "unknown binary version {:02x?}",
            &bytes[4..8]
        )));
    }
    let invalid = |e: wasmparser::BinaryReaderError| LoadError::Invalid {
        name: name.to_string(),
        reason: e.to_string(),
    };

    // Only the outermost module or component matters: its code section
    // and nested modules and components are skipped, not walked (what
    // they hold is for the compiler to check).
    let truncated = || LoadError::Invalid {
        name: name.to_string(),
        reason: "unexpected end-of-file: a section runs past the end of the binary".into(),
    };
    let mut component = false;
    let mut exports: Vec<String> = Vec::new();
    let mut parser = Parser::new(0);
    let mut data = bytes;
    loop {
        let payload = match parser.parse(data, true).map_err(invalid)? {
            Chunk::Parsed { consumed, payload } => {
                data = &data[consumed..];
                payload
            }
            // Not with `eof` set; counted as the end it would be.
            Chunk::NeedMoreData(_) => return Err(truncated()),
        };
        match payload {
            Payload::Version { encoding, .. } => component = encoding == Encoding::Component,
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(invalid)?;
                    // Only functions can be entry points.
                    if export.kind == wasmparser::ExternalKind::Func {
                        exports.push(export.name.to_string());
                    }
                }
            }
            Payload::ComponentExportSection(reader) => {
                for export in reader {
                    exports.push(export.map_err(invalid)?.name.name.to_string());
                }
            }
            Payload::CodeSectionStart { size, .. } => {
                parser.skip_section();
                data = usize::try_from(size)
                    .ok()
                    .and_then(|n| data.get(n..))
                    .ok_or_else(truncated)?;
            }
            Payload::ModuleSection {
                unchecked_range, ..
            }
            | Payload::ComponentSection {
                unchecked_range, ..
            } => {
                data = data.get(unchecked_range.len()..).ok_or_else(truncated)?;
            }
            Payload::End(_) => break,
            _ => {}
        }
    }

    if !component {
        if exports.iter().any(|e| e == "_start" || e.is_empty()) {
            return Ok(ArtifactKind::Module);
        }
        return Err(LoadError::Unsupported {
            name: name.to_string(),
            reason: "the module exports no `_start` function, so it is not a WASI command".into(),
        });
    }
    let exports_iface = |iface: &str| exports.iter().any(|e| e.split('@').next() == Some(iface));
    if exports_iface("wasi:http/incoming-handler") {
        Ok(ArtifactKind::HttpProxy)
    } else if exports_iface("wasi:cli/run") {
        Ok(ArtifactKind::Command)
    } else {
        Err(LoadError::Unsupported {
            name: name.to_string(),
            reason: format!(
                "the component exports neither `wasi:cli/run` nor \
                 `wasi:http/incoming-handler` (it exports: {})",
                if exports.is_empty() {
                    "nothing".to_string()
                } else {
                    exports.join(", ")
                }
            ),
        })
    }
}

/// The sha256 of `bytes`, in hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Everything skiff provides to guests: WASI preview 1 (and its
/// `wasi_unstable` ancestor) to core modules; WASI 0.2 (`wasi:cli`,
/// `wasi:filesystem`, `wasi:sockets`, `wasi:http`...) to components. Each
/// linker is built the first time an artifact of its kind is loaded, so a
/// process that only runs modules never pays for the component linker,
/// and one whose modules import no `wasi_unstable` never pays for that
/// (building it doubled the module linker's cost, a start's worth).
#[derive(Default)]
pub(crate) struct Linkers {
    preview1: OnceLock<Result<wasmtime::Linker<Host>, String>>,
    with_unstable: OnceLock<Result<wasmtime::Linker<Host>, String>>,
    component: OnceLock<Result<wasmtime::component::Linker<Host>, String>>,
}

impl Linkers {
    /// The linker for `module`: preview 1, and `wasi_unstable` too if it
    /// imports from it.
    fn module(&self, engine: &Engine, module: &Module) -> Result<&wasmtime::Linker<Host>, String> {
        let unstable = module.imports().any(|i| i.module() == "wasi_unstable");
        let cell = if unstable {
            &self.with_unstable
        } else {
            &self.preview1
        };
        cell.get_or_init(|| {
            let mut linker = wasmtime::Linker::new(engine);
            let added = if unstable {
                wasmtime_wasi::p0::add_to_linker_async(&mut linker, Host::p1)
            } else {
                Ok(())
            };
            added
                .and_then(|()| wasmtime_wasi::p1::add_to_linker_async(&mut linker, Host::p1))
                .and_then(|()| crate::posix_fs::fix_module_linker(&mut linker, unstable))
                .map(|()| linker)
                .map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map_err(Clone::clone)
    }

    fn component(&self, engine: &Engine) -> Result<&wasmtime::component::Linker<Host>, String> {
        self.component
            .get_or_init(|| {
                let mut linker = wasmtime::component::Linker::new(engine);
                wasmtime_wasi::p2::add_to_linker_async(&mut linker)
                    .and_then(|()| {
                        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
                    })
                    .and_then(|()| crate::sockets::add_to_linker(&mut linker, Host::task_sockets))
                    .and_then(|()| crate::posix_fs::fix_component_linker(&mut linker))
                    .map(|()| linker)
                    .map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// Compiles (or loads from `cache`) and pre-links `bytes`, whose sha256
/// (hex) is `sha`.
pub(crate) fn load(
    engine: &Engine,
    linkers: &Linkers,
    cache: Option<&CompileCache>,
    name: &str,
    bytes: &[u8],
    sha: String,
) -> Result<Artifact, LoadError> {
    let kind = inspect(name, bytes)?;
    let invalid = |e: wasmtime::Error| compile_error(name, bytes, e);
    let linker_failed = |reason: String| LoadError::Unsupported {
        name: name.to_string(),
        reason: format!("the WASI linker could not be built: {reason}"),
    };

    let (pre, source) = match kind {
        ArtifactKind::Module => {
            let (module, source) = compile_or_load(
                cache,
                &sha,
                // SAFETY: the cache only hands out entries that
                // `CompileCache::store` wrote from `Module::serialize` for
                // this engine configuration (the key includes its
                // compatibility hash), that passed their checksum, and
                // whose files are never written again (so the mapping
                // wasmtime makes of one keeps what was checked).
                |file| unsafe { Module::deserialize_open_file(engine, file) },
                || Module::from_binary(engine, bytes),
                Module::serialize,
            )
            .map_err(invalid)?;
            let pre = linkers
                .module(engine, &module)
                .map_err(linker_failed)?
                .instantiate_pre(&module)
                .map_err(|e| unsupported(name, e))?;
            (Prepared::Module(pre), source)
        }
        ArtifactKind::Command | ArtifactKind::HttpProxy => {
            let (component, source) = compile_or_load(
                cache,
                &sha,
                // SAFETY: as for modules above.
                |file| unsafe { component_from_file(engine, file) },
                || Component::from_binary(engine, bytes),
                Component::serialize,
            )
            .map_err(invalid)?;
            let pre = linkers
                .component(engine)
                .map_err(linker_failed)?
                .instantiate_pre(&component)
                .map_err(|e| unsupported(name, e))?;
            if kind == ArtifactKind::HttpProxy {
                (
                    Prepared::Proxy(ProxyPre::new(pre).map_err(|e| unsupported(name, e))?),
                    source,
                )
            } else {
                (
                    Prepared::Command(CommandPre::new(pre).map_err(|e| unsupported(name, e))?),
                    source,
                )
            }
        }
    };
    Ok(Artifact {
        name: name.to_string(),
        digest: format!("sha256:{sha}"),
        kind,
        source,
        pre,
    })
}

/// Why `bytes` did not compile: the binary's fault if it does not
/// validate, skiff's limits otherwise (a proposal wasmtime is built without,
/// more memories or instances than an instance's share of the pool).
fn compile_error(name: &str, bytes: &[u8], e: wasmtime::Error) -> LoadError {
    let mut validator = wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all());
    match validator.validate_all(bytes) {
        Err(invalid) => LoadError::Invalid {
            name: name.to_string(),
            reason: invalid.to_string(),
        },
        Ok(_) => LoadError::Unsupported {
            name: name.to_string(),
            reason: format!("it is valid WebAssembly, but beyond what skiff runs: {e:#}"),
        },
    }
}

/// Takes compiled code from the cache if a valid entry exists (one that
/// wasmtime refuses is evicted), else compiles and fills the cache.
fn compile_or_load<T>(
    cache: Option<&CompileCache>,
    sha: &str,
    deserialize: impl FnOnce(std::fs::File) -> wasmtime::Result<T>,
    compile: impl FnOnce() -> wasmtime::Result<T>,
    serialize: impl FnOnce(&T) -> wasmtime::Result<Vec<u8>>,
) -> wasmtime::Result<(T, LoadSource)> {
    let Some(cache) = cache else {
        return Ok((compile()?, LoadSource::Compiled));
    };
    if let Lookup::Hit(file) = cache.lookup(sha) {
        match deserialize(file) {
            Ok(loaded) => return Ok((loaded, LoadSource::DiskCache)),
            Err(e) => {
                tracing::warn!("compiled-code cache entry rejected ({e:#}); recompiling");
                cache.evict(sha);
            }
        }
    }
    let compiled = compile()?;
    match serialize(&compiled) {
        Ok(code) => {
            if let Err(e) = cache.store(sha, &code) {
                tracing::warn!("could not write the compile cache: {e}");
            }
        }
        Err(e) => tracing::warn!("could not serialize compiled code: {e:#}"),
    }
    Ok((compiled, LoadSource::Compiled))
}

/// Loads a compiled component from a compile-cache entry's open file.
/// wasmtime maps a file for modules but takes a path for components: the
/// open file's `/proc/self/fd` entry names that file, where the cache path
/// could name a newer one by now. Without `/proc` the file is read and
/// copied instead.
///
/// # Safety
///
/// As for [`Component::deserialize_file`]: `file` holds code this engine
/// compiled, and nobody writes to it while the component lives.
unsafe fn component_from_file(engine: &Engine, file: std::fs::File) -> wasmtime::Result<Component> {
    use std::os::fd::AsRawFd;
    let by_fd = std::path::PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    if by_fd.exists() {
        // SAFETY: the caller's promise; `file` stays open until wasmtime
        // has opened the same file through this path.
        return unsafe { Component::deserialize_file(engine, &by_fd) };
    }
    let mut code = Vec::new();
    std::io::Read::read_to_end(&mut &file, &mut code)?;
    // SAFETY: the caller's promise.
    unsafe { Component::deserialize(engine, &code) }
}

/// Link errors name the import that no skiff world provides.
fn unsupported(name: &str, e: wasmtime::Error) -> LoadError {
    LoadError::Unsupported {
        name: name.to_string(),
        reason: format!("{e:#}").replace('\n', " "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_reads_the_kind_without_compiling() {
        let module = wat::parse_str(r#"(module (func (export "_start")))"#).unwrap();
        assert_eq!(inspect("m", &module).unwrap(), ArtifactKind::Module);
        let global =
            wat::parse_str(r#"(module (global (export "_start") i32 (i32.const 0)))"#).unwrap();
        assert!(
            inspect("g", &global).is_err(),
            "a global named _start is no entry point"
        );
        let library = wat::parse_str(r#"(module (func (export "add")))"#).unwrap();
        let err = inspect("lib", &library).unwrap_err().to_string();
        assert!(err.contains("no `_start`"), "{err}");
        // A component with a nested module that exports `_start` is still
        // judged by its own exports.
        let nested =
            wat::parse_str(r#"(component (core module (func (export "_start"))))"#).unwrap();
        let err = inspect("c", &nested).unwrap_err().to_string();
        assert!(err.contains("exports neither"), "{err}");
        // Sections after a skipped code section or nested module are read.
        let after_code = wat::parse_str(
            r#"(module (func (export "_start") nop) (@custom "after" (after code) "x"))"#,
        )
        .unwrap();
        assert_eq!(inspect("a", &after_code).unwrap(), ArtifactKind::Module);
        let cut = &after_code[..after_code.len() - 12];
        let err = inspect("cut", cut).unwrap_err().to_string();
        assert!(err.contains("cut is not valid WebAssembly"), "{err}");
        let cut = &nested[..nested.len() / 2];
        let err = inspect("half", cut).unwrap_err().to_string();
        assert!(err.contains("half is not valid WebAssembly"), "{err}");
    }

    #[test]
    fn inspect_rejects_what_is_not_wasm() {
        let err = inspect("x", b"hello world").unwrap_err().to_string();
        assert!(err.contains("x is not a WebAssembly binary"), "{err}");
        let err = inspect("elf", b"\x7fELF\x02\x01\x01\0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("precompiled"), "{err}");
        let err = inspect("v", b"\0asm\x02\0\0\0").unwrap_err().to_string();
        assert!(err.contains("unknown binary version"), "{err}");
        let err = inspect("t", b"\0asm\x01\0\0\0\x07\x10")
            .unwrap_err()
            .to_string();
        assert!(err.contains("t is not valid WebAssembly"), "{err}");
    }
}
