//! What the benchmarks share beyond `skiff-harness` (which the tests use
//! too): the servers they start (skiff run -p, skiff serve, wasmtime
//! serve), and `wrk`.

// Each benchmark uses some of these.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

pub const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");

// Each benchmark uses some of these.
#[allow(unused_imports)]
pub use skiff_harness::{
    KillOnDrop as Server, find_program, find_wasmtime, free_port, wait_until_serving,
};

/// `wasmtime serve -Scli` of `wasm` on a free loopback port.
pub fn start_wasmtime_serve(wasmtime: &Path, wasm: &str) -> (Server, SocketAddr) {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let child = Command::new(wasmtime)
        .args(["serve", "-Scli", "--addr", &addr.to_string(), wasm])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wasmtime serve");
    wait_until_serving(addr);
    (Server(child), addr)
}

/// `skiff run -p` of http-hello on a free loopback port, with `data` as
/// its data dir: the server and its address.
pub fn start_skiff_run_http(data: &Path) -> (Server, SocketAddr) {
    let mut child = Command::new(SKIFF)
        .env("SKIFF_DATA_DIR", data)
        .args(["run", "-p", "127.0.0.1:0:80", wasm_apps::HTTP_HELLO_P2])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start skiff");
    let banner = skiff_harness::first_line_then_drain(child.stderr.take().expect("stderr"));
    let addr = skiff_harness::http_banner(&banner)
        .unwrap_or_else(|| panic!("unexpected banner {banner:?}"));
    wait_until_serving(addr);
    (Server(child), addr)
}

/// `skiff serve` on free ports with a fresh data dir: the server, the API
/// address and the registry address.
pub fn start_skiff_serve(data: &Path) -> (Server, String, String) {
    let s = skiff_harness::start_serve(Command::new(SKIFF), data, "error", &[]);
    (Server(s.child), s.banner.api, s.banner.registry)
}

/// Requests per second and the mean latency of one `wrk -t2 -c32` run.
pub fn wrk(wrk: &Path, url: &str, secs: u64) -> (f64, String) {
    let out = Command::new(wrk)
        .args(["-t2", "-c32", &format!("-d{secs}s"), url])
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Non-2xx"), "errors under load:\n{text}");
    assert!(
        !text.contains("Socket errors"),
        "socket errors under load:\n{text}"
    );
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{text}"));
    let latency = text
        .lines()
        .find(|l| l.trim_start().starts_with("Latency"))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        .unwrap_or_default();
    (rps, latency)
}
