//! Artifacts: a Wasm binary, validated, compiled (or loaded from the compile
//! cache) and pre-linked, ready to be instantiated any number of times.

use crate::LoadError;
use crate::cache::{CompileCache, Lookup};
use crate::sandbox::Host;
use sha2::{Digest as _, Sha256};
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

/// The binary layer, read from the 8-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    Module,
    Component,
}

fn layer(name: &str, bytes: &[u8]) -> Result<Layer, LoadError> {
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
    match bytes[4..8] {
        [1, 0, 0, 0] => Ok(Layer::Module),
        [_, _, 1, 0] => Ok(Layer::Component),
        _ => Err(not_wasm(&format!(
            "unknown binary version {:02x?}",
            &bytes[4..8]
        ))),
    }
}

/// The sha256 of `bytes`, in hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub(crate) struct Linkers {
    pub(crate) module: wasmtime::Linker<Host>,
    pub(crate) component: wasmtime::component::Linker<Host>,
}

impl Linkers {
    /// Everything skiff provides to guests: WASI preview 1 (and its
    /// `wasi_unstable` ancestor) to core modules; WASI 0.2 (`wasi:cli`,
    /// `wasi:filesystem`, `wasi:sockets`, `wasi:http`...) to components.
    pub(crate) fn new(engine: &Engine) -> wasmtime::Result<Linkers> {
        let mut module = wasmtime::Linker::new(engine);
        wasmtime_wasi::p0::add_to_linker_async(&mut module, Host::p1)?;
        wasmtime_wasi::p1::add_to_linker_async(&mut module, Host::p1)?;
        let mut component = wasmtime::component::Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut component)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut component)?;
        Ok(Linkers { module, component })
    }
}

/// Compiles (or loads from `cache`) and pre-links `bytes`.
pub(crate) fn load(
    engine: &Engine,
    linkers: &Linkers,
    cache: Option<&CompileCache>,
    name: &str,
    bytes: &[u8],
) -> Result<Artifact, LoadError> {
    let layer = layer(name, bytes)?;
    let sha = sha256_hex(bytes);
    let invalid = |e: wasmtime::Error| LoadError::Invalid {
        name: name.to_string(),
        reason: format!("{e:#}"),
    };

    let (kind, pre, source) = match layer {
        Layer::Module => {
            let (module, source) = compile_or_load(
                cache,
                &sha,
                // SAFETY: the cache only hands out entries that
                // `CompileCache::store` wrote from `Module::serialize` for
                // this engine configuration (the key includes its
                // compatibility hash) and that passed their checksum.
                |code| unsafe { Module::deserialize(engine, code) },
                || Module::from_binary(engine, bytes),
                Module::serialize,
            )
            .map_err(invalid)?;
            let has_start =
                module.get_export("_start").is_some() || module.get_export("").is_some();
            if !has_start {
                return Err(LoadError::Unsupported {
                    name: name.to_string(),
                    reason: "the module exports no `_start` function, so it is not a WASI command"
                        .into(),
                });
            }
            let pre = linkers
                .module
                .instantiate_pre(&module)
                .map_err(|e| unsupported_import(name, e))?;
            (ArtifactKind::Module, Prepared::Module(pre), source)
        }
        Layer::Component => {
            let (component, source) = compile_or_load(
                cache,
                &sha,
                // SAFETY: as for modules above.
                |code| unsafe { Component::deserialize(engine, code) },
                || Component::from_binary(engine, bytes),
                Component::serialize,
            )
            .map_err(invalid)?;
            let ty = component.component_type();
            let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
            let exports_iface =
                |iface: &str| exports.iter().any(|e| e.split('@').next() == Some(iface));
            let pre = linkers
                .component
                .instantiate_pre(&component)
                .map_err(|e| unsupported_import(name, e))?;
            if exports_iface("wasi:http/incoming-handler") {
                let pre = ProxyPre::new(pre).map_err(|e| unsupported(name, e))?;
                (ArtifactKind::HttpProxy, Prepared::Proxy(pre), source)
            } else if exports_iface("wasi:cli/run") {
                let pre = CommandPre::new(pre).map_err(|e| unsupported(name, e))?;
                (ArtifactKind::Command, Prepared::Command(pre), source)
            } else {
                return Err(LoadError::Unsupported {
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
                });
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

/// Takes compiled code from the cache if a valid entry exists (one that
/// wasmtime refuses is evicted), else compiles and fills the cache.
fn compile_or_load<T>(
    cache: Option<&CompileCache>,
    sha: &str,
    deserialize: impl FnOnce(&[u8]) -> wasmtime::Result<T>,
    compile: impl FnOnce() -> wasmtime::Result<T>,
    serialize: impl FnOnce(&T) -> wasmtime::Result<Vec<u8>>,
) -> wasmtime::Result<(T, LoadSource)> {
    let Some(cache) = cache else {
        return Ok((compile()?, LoadSource::Compiled));
    };
    if let Lookup::Hit(code) = cache.lookup(sha) {
        match deserialize(&code) {
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

fn unsupported_import(name: &str, e: wasmtime::Error) -> LoadError {
    LoadError::Unsupported {
        name: name.to_string(),
        reason: format!("{e:#}").replace('\n', " "),
    }
}

fn unsupported(name: &str, e: wasmtime::Error) -> LoadError {
    LoadError::Unsupported {
        name: name.to_string(),
        reason: format!("{e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_decides_the_layer() {
        assert_eq!(layer("m", b"\0asm\x01\0\0\0").unwrap(), Layer::Module);
        assert_eq!(layer("c", b"\0asm\x0d\0\x01\0").unwrap(), Layer::Component);
        let err = layer("x", b"hello world").unwrap_err().to_string();
        assert!(err.contains("x is not a WebAssembly binary"), "{err}");
        let err = layer("elf", b"\x7fELF\x02\x01\x01\0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("precompiled"), "{err}");
        let err = layer("v", b"\0asm\x02\0\0\0").unwrap_err().to_string();
        assert!(err.contains("unknown binary version"), "{err}");
    }
}
