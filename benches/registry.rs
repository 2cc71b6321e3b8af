//! skiff's registry against Debian's `docker-registry` (distribution 2.8),
//! in the same run, on the same machine, with the same client: oci-client,
//! the library skiff pulls with.
//!
//! `cargo bench --bench registry` (needs `docker-registry` on PATH:
//! `apt-get install docker-registry`; without it the comparison is skipped).
//!
//! For blobs of 1, 10 and 100 MiB: a push of fresh content, and a pull of
//! it, against each registry in turn, interleaved, with two clients:
//!
//! - oci-client, as skiff pulls: pushes chunked in 4 MiB PATCHes, and
//!   pulls verifying the digest (twice over: the layer's and the
//!   `Docker-Content-Digest` header's, both SHA-256 on the client's core);
//! - curl (`apt-get install curl`): a POST and the whole blob in one PUT
//!   (`-T`), and a GET into /dev/null, timed by curl's own `time_total`.
//!   This one measures the registries rather than the client: on large
//!   blobs oci-client's hashing is the ceiling for both.
//!
//! Beside each pull, the same client pulling the same bytes from a bare
//! server: a thread in this process that answers every request with the
//! blob from memory in one write — no disk, no routing, no checks. No
//! registry can serve that client faster, so `bare / docker-registry` is
//! the most any registry could beat docker-registry by on that row.
//!
//! Median of SKIFF_BENCH_REGISTRY_RUNS runs (default 15, 8 for 100 MiB).
//! Both registries serve plain HTTP on loopback from a directory on the
//! same disk; skiff fsyncs every blob before it becomes visible,
//! docker-registry does not. Goal: skiff ≥ 1.5× docker-registry on each.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");
const MIB: usize = 1 << 20;

use skiff_harness::{KillOnDrop as Server, wait_until_serving};

fn start_skiff(dir: &Path) -> (Server, String) {
    let mut child = Command::new(SKIFF)
        .env("SKIFF_DATA_DIR", dir)
        .args(["registry", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start skiff registry");
    let mut banner = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    let addr = banner
        .trim()
        .strip_prefix("Registry listening on http://")
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("unexpected banner {banner:?}"))
        .to_string();
    wait_until_serving(&addr);
    (Server(child), addr)
}

fn start_docker_registry(dir: &Path) -> Option<(Server, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .args(["serve", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = Server(child);
    wait_until_serving(&addr);
    Some((server, addr))
}

/// The blob a [`Bare`] server answers with, and its digest.
type Served = Arc<Mutex<(Arc<Vec<u8>>, String)>>;

/// The least a server can do to serve a blob: a thread per connection that
/// reads a request head and writes the current blob from memory, whatever
/// was asked. What a client reaches against it is that client's ceiling.
struct Bare {
    addr: String,
    served: Served,
}

impl Bare {
    fn start() -> Bare {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let served: Served = Arc::default();
        let shared = served.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let served = shared.clone();
                std::thread::spawn(move || Bare::serve(conn, &served));
            }
        });
        Bare { addr, served }
    }

    fn serve(mut conn: TcpStream, served: &Served) {
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        loop {
            // A request head, up to its empty line; no request here has a body.
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) if line == "\r\n" => break,
                    Ok(_) => {}
                }
            }
            let (bytes, digest) = served.lock().unwrap().clone();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: {}\r\nDocker-Content-Digest: {digest}\r\n\r\n",
                bytes.len()
            );
            if conn.write_all(head.as_bytes()).is_err() || conn.write_all(&bytes).is_err() {
                return;
            }
        }
    }

    fn serve_next(&self, data: &[u8], digest: &str) {
        *self.served.lock().unwrap() = (Arc::new(data.to_vec()), digest.to_string());
    }
}

fn blob(size: usize, seed: u64) -> Vec<u8> {
    // Cheap, incompressible enough, different for every seed.
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(size);
    out
}

fn digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

struct Target {
    name: &'static str,
    client: Client,
    image: Reference,
}

impl Target {
    fn new(name: &'static str, addr: &str) -> Target {
        skiff_registry::remote::ensure_tls_provider();
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..ClientConfig::default()
        });
        let image: Reference = format!("{addr}/bench/blobs:latest").parse().unwrap();
        Target {
            name,
            client,
            image,
        }
    }

    async fn push(&self, data: &[u8], digest: &str) -> Duration {
        self.client
            .auth(
                &self.image,
                &RegistryAuth::Anonymous,
                RegistryOperation::Push,
            )
            .await
            .unwrap();
        let start = Instant::now();
        self.client
            .push_blob(&self.image, data.to_vec(), digest)
            .await
            .unwrap_or_else(|e| panic!("{}: push: {e}", self.name));
        start.elapsed()
    }

    async fn pull(&self, digest: &str, size: usize) -> Duration {
        let mut out = Vec::with_capacity(size);
        let start = Instant::now();
        self.client
            .pull_blob(&self.image, digest, &mut out)
            .await
            .unwrap_or_else(|e| panic!("{}: pull: {e}", self.name));
        let took = start.elapsed();
        assert_eq!(out.len(), size, "{}: short pull", self.name);
        took
    }
}

/// The same operations with curl: the plain HTTP client, whose own cost is
/// small enough that the figures are the registries'.
struct Curl {
    base: String,
    /// Where the blob to push is written for curl to read (tmpfs when
    /// there is one, so the client reads from memory).
    file: std::path::PathBuf,
}

impl Curl {
    fn new(addr: &str, scratch: &Path) -> Curl {
        Curl {
            base: format!("http://{addr}"),
            file: scratch.join(format!("blob-{}", addr.replace([':', '.'], "-"))),
        }
    }

    /// Runs curl; returns its `time_total` and the headers it received.
    fn curl(args: &[&str]) -> (Duration, String) {
        let out = Command::new("curl")
            .args(["-s", "-S", "--fail", "-D", "-", "-o", "/dev/null"])
            .args(["-w", "\ntime_total=%{time_total}\n"])
            .args(args)
            .output()
            .expect("curl is installed");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "curl {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let secs: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("time_total="))
            .and_then(|t| t.trim().parse().ok())
            .expect("curl printed time_total");
        (Duration::from_secs_f64(secs), text)
    }

    /// POST, then the whole blob in one PUT, as docker pushes a layer.
    fn push(&self, data: &[u8], digest: &str) -> Duration {
        std::fs::write(&self.file, data).unwrap();
        let (started, headers) = Self::curl(&[
            "-X",
            "POST",
            &format!("{}/v2/bench/curl/blobs/uploads/", self.base),
        ]);
        let location = headers
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case("location"))
                    .map(|(_, v)| v.trim().to_string())
            })
            .expect("a Location header");
        let location = if location.starts_with("http") {
            location
        } else {
            format!("{}{location}", self.base)
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let (put, _) = Self::curl(&[
            "-T",
            self.file.to_str().unwrap(),
            "-H",
            "content-type: application/octet-stream",
            &format!("{location}{sep}digest={digest}"),
        ]);
        started + put
    }

    fn pull(&self, digest: &str) -> Duration {
        Self::curl(&[&format!("{}/v2/bench/curl/blobs/{digest}", self.base)]).0
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rate(size: usize, d: Duration) -> String {
    format!("{:>8.1} MiB/s", size as f64 / MIB as f64 / d.as_secs_f64())
}

fn main() {
    let runs: usize = std::env::var("SKIFF_BENCH_REGISTRY_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_skiff, skiff_addr) = start_skiff(dirs.0.path());
    let Some((_docker, docker_addr)) = start_docker_registry(dirs.1.path()) else {
        println!(
            "registry: skipped, no `docker-registry` on PATH (apt-get install docker-registry)"
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let targets = [
        Target::new("skiff", &skiff_addr),
        Target::new("docker-registry", &docker_addr),
    ];
    let scratch = tempfile::tempdir_in(if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    })
    .unwrap();
    let curl = [
        Curl::new(&skiff_addr, scratch.path()),
        Curl::new(&docker_addr, scratch.path()),
    ];
    let bare = Bare::start();
    let bare_clients = (
        Target::new("bare server", &bare.addr),
        Curl::new(&bare.addr, scratch.path()),
    );
    println!("skiff registry vs docker-registry, blobs, median of runs (higher is better)");
    println!(
        "{:<8} {:<10} {:<5} {:>16} {:>18} {:>8} {:>16} {:>12}",
        "size", "client", "op", "skiff", "docker-registry", "ratio", "bare server", "bare/docker"
    );
    let mut seed = 0u64;
    for size_mib in [1usize, 10, 100] {
        let size = size_mib * MIB;
        let n = if size_mib >= 100 {
            runs.div_ceil(2)
        } else {
            runs
        };
        // [client][registry] -> times
        let mut push = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
        let mut pull = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
        // [client] -> times
        let mut bare_pull = [Vec::new(), Vec::new()];
        rt.block_on(async {
            for round in 0..=n {
                seed += 1;
                let data = blob(size, seed);
                let d = digest(&data);
                // Alternate who goes first, so neither always gets a
                // warmer page cache. Round 0 warms up and is not counted.
                let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
                bare.serve_next(&data, &d);
                let pull_bare = || async {
                    let a = bare_clients.0.pull(&d, size).await;
                    (a, bare_clients.1.pull(&d))
                };
                let mut bare_times = None;
                if round % 2 == 0 {
                    bare_times = Some(pull_bare().await);
                }
                for i in order {
                    let (a, b) = (
                        targets[i].push(&data, &d).await,
                        targets[i].pull(&d, size).await,
                    );
                    let (c, e) = (curl[i].push(&data, &d), curl[i].pull(&d));
                    if round > 0 {
                        push[0][i].push(a);
                        pull[0][i].push(b);
                        push[1][i].push(c);
                        pull[1][i].push(e);
                    }
                }
                let (a, e) = match bare_times {
                    Some(times) => times,
                    None => pull_bare().await,
                };
                if round > 0 {
                    bare_pull[0].push(a);
                    bare_pull[1].push(e);
                }
            }
        });
        for (c, client) in ["oci-client", "curl"].into_iter().enumerate() {
            let bare = median(std::mem::take(&mut bare_pull[c]));
            for (op, times) in [("push", &mut push[c]), ("pull", &mut pull[c])] {
                let [s, d] =
                    [std::mem::take(&mut times[0]), std::mem::take(&mut times[1])].map(median);
                let ceiling = match op {
                    "pull" => format!(
                        "{:>16} {:>11.2}x",
                        rate(size, bare),
                        d.as_secs_f64() / bare.as_secs_f64()
                    ),
                    _ => String::new(),
                };
                println!(
                    "{:<8} {:<10} {:<5} {:>16} {:>18} {:>7.2}x {ceiling}",
                    format!("{size_mib} MiB"),
                    client,
                    op,
                    rate(size, s),
                    rate(size, d),
                    d.as_secs_f64() / s.as_secs_f64()
                );
            }
        }
    }
}
