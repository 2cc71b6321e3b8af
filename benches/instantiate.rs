//! The start path of a task: build the sandbox (WASI context, limits) and
//! instantiate from the pre-linked image, with the pooling allocator (what
//! skiff uses) and with the on-demand allocator (the baseline).
//!
//! `cargo bench --bench instantiate`. Goal: ≤ 50 µs per instantiate.

// A benchmark harness, like a test: a failure should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{Criterion, criterion_group};
use skiff_runtime::{InstanceSpec, Runtime, RuntimeConfig};
use std::time::{Duration, Instant};

const GUESTS: [(&str, &str); 3] = [
    ("hello module (wasip1)", wasm_apps::HELLO_P1),
    ("hello component (wasip2)", wasm_apps::HELLO_P2),
    ("http-hello component (proxy)", wasm_apps::HTTP_HELLO_P2),
];

fn runtime(pooling: bool, data: &std::path::Path) -> Runtime {
    Runtime::new(RuntimeConfig {
        pooling,
        ..RuntimeConfig::default().with_data_dir(data)
    })
    .expect("runtime")
}

fn spec() -> InstanceSpec {
    InstanceSpec {
        args: vec!["hello".into(), "world".into()],
        env: vec![("NAME".into(), "bench".into())],
        ..InstanceSpec::default()
    }
}

fn instantiate(c: &mut Criterion) {
    let exec = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let data = tempfile::tempdir().expect("tempdir");
    let mut group = c.benchmark_group("instantiate");
    for (allocator, pooling) in [("pooling", true), ("on-demand", false)] {
        let rt = runtime(pooling, data.path());
        for (guest, path) in GUESTS {
            let artifact = rt.load_file(path.as_ref()).expect("load");
            let spec = spec();
            group.bench_function(format!("{guest}/{allocator}"), |b| {
                b.iter(|| {
                    exec.block_on(rt.instantiate_only(&artifact, &spec))
                        .expect("instantiate")
                })
            });
        }
    }
    group.finish();
}

/// Median time per instantiate over `rounds` batches of 1000.
fn median_per_instantiate(rt: &Runtime, path: &str, exec: &tokio::runtime::Runtime) -> Duration {
    let artifact = rt.load_file(path.as_ref()).expect("load");
    let spec = spec();
    let mut samples: Vec<Duration> = (0..15)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..1000 {
                exec.block_on(rt.instantiate_only(&artifact, &spec))
                    .expect("instantiate");
            }
            start.elapsed() / 1000
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2]
}

/// One table with skiff's figure beside the baseline, measured now.
fn summary() {
    let exec = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let data = tempfile::tempdir().expect("tempdir");
    let pooled = runtime(true, data.path());
    let on_demand = runtime(false, data.path());
    println!();
    println!("instantiate, median of 15 × 1000 (goal: pooling ≤ 50 µs)");
    println!(
        "{:<30} {:>12} {:>12} {:>9}",
        "guest", "pooling", "on-demand", "speedup"
    );
    for (guest, path) in GUESTS {
        let p = median_per_instantiate(&pooled, path, &exec);
        let o = median_per_instantiate(&on_demand, path, &exec);
        println!(
            "{guest:<30} {:>9.1} µs {:>9.1} µs {:>8.1}x {}",
            p.as_secs_f64() * 1e6,
            o.as_secs_f64() * 1e6,
            o.as_secs_f64() / p.as_secs_f64(),
            if p <= Duration::from_micros(50) {
                "ok"
            } else {
                "OVER GOAL"
            }
        );
    }
}

criterion_group!(benches, instantiate);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
