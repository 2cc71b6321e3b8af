//! A task's first start beside a compile on push: how long a starting task
//! takes to compile its (not yet compiled) image while a big image pushed
//! just before compiles in the background, beside the same compile alone.
//!
//! `cargo bench --bench compile`. Three rows, in one run:
//! - alone: the small module compiled with nothing else compiling;
//! - beside a compile on push: the same while the big module compiles
//!   through `Runtime::precompile` (what `skiff serve` does on a push);
//! - beside a task's compile: the same while the big module compiles the
//!   way a starting task's does (`Runtime::load_bytes`, rayon's global
//!   pool), which is where compiles on push ran before they had a pool of
//!   their own.

// A benchmark harness, like a test: a failure should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use skiff_runtime::{Runtime, RuntimeConfig};
use std::time::{Duration, Instant};

/// A core module of `functions` functions, each `ops` arithmetic
/// instructions long, and an empty `_start`; `seed` makes its bytes (and
/// so its compile cache key) its own.
fn module(functions: usize, ops: usize, seed: usize) -> Vec<u8> {
    let mut wat = String::from("(module (func (export \"_start\"))\n");
    for f in 0..functions {
        wat.push_str("(func (param i32) (result i32) local.get 0\n");
        for o in 0..ops {
            let op = ["i32.add", "i32.mul", "i32.xor", "i32.sub"][o % 4];
            wat.push_str(&format!(
                "i32.const {} {op}\n",
                (f * 31 + o * 7 + seed) % 1000
            ));
        }
        wat.push_str(")\n");
    }
    wat.push(')');
    wat::parse_str(&wat).expect("a valid module")
}

/// Compiles the big module in a runtime, one way or another.
type Compile = fn(&Runtime, &[u8]);

fn runtime(dir: &std::path::Path) -> Runtime {
    Runtime::new(RuntimeConfig::default().with_data_dir(dir)).expect("runtime")
}

/// How long `small` takes to compile in a fresh runtime, while `beside`
/// (if any) compiles `big` in the same runtime, started 300 ms before;
/// and how long `big` took.
fn compile_small(
    small: &[u8],
    big: &[u8],
    beside: Option<Compile>,
) -> (Duration, Option<Duration>) {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    std::thread::scope(|s| {
        let background = beside.map(|compile| {
            let rt = rt.clone();
            s.spawn(move || {
                let started = Instant::now();
                compile(&rt, big);
                started.elapsed()
            })
        });
        if background.is_some() {
            // The push's compile under way before the task arrives.
            std::thread::sleep(Duration::from_millis(300));
        }
        let started = Instant::now();
        rt.load_bytes("small", small).unwrap();
        let small_took = started.elapsed();
        (small_took, background.map(|b| b.join().unwrap()))
    })
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let rounds = 3;
    println!("building the modules...");
    let big = module(8_000, 100, 1);
    let small = module(800, 100, 2);
    println!(
        "big: {} KiB, small: {} KiB; {rounds} rounds each, in turns (p50 of the small module's compile)",
        big.len() / 1024,
        small.len() / 1024
    );
    let kinds: [(&str, Option<Compile>); 3] = [
        ("alone", None),
        (
            "beside a compile on push (own pool)",
            Some(|rt, big| {
                rt.precompile("big", big).unwrap();
            }),
        ),
        (
            "beside a task's compile (global pool)",
            Some(|rt, big| {
                rt.load_bytes("big", big).unwrap();
            }),
        ),
    ];
    let mut small_times: Vec<Vec<Duration>> = vec![Vec::new(); kinds.len()];
    let mut big_times: Vec<Vec<Duration>> = vec![Vec::new(); kinds.len()];
    for _ in 0..rounds {
        for (i, (_, beside)) in kinds.iter().enumerate() {
            let (s, b) = compile_small(&small, &big, *beside);
            small_times[i].push(s);
            big_times[i].extend(b);
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let alone = median(&mut small_times[0]);
    println!(
        "{:<40} {:>14} {:>10} {:>22}",
        "small module's compile", "p50", "vs alone", "big module's, p50"
    );
    for (i, (name, _)) in kinds.iter().enumerate() {
        let p50 = median(&mut small_times[i]);
        let big = if big_times[i].is_empty() {
            "-".to_string()
        } else {
            ms(median(&mut big_times[i]))
        };
        println!(
            "{name:<40} {:>14} {:>9.1}× {big:>22}",
            ms(p50),
            p50.as_secs_f64() / alone.as_secs_f64()
        );
    }
}
