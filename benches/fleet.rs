//! A cluster across machines: what an agent on another machine costs, how
//! fast a lost machine's tasks run again elsewhere, and what a second
//! machine adds.
//!
//! `cargo bench --bench fleet` (as root: the machines are network
//! namespaces it makes, 198.18.0.0/24 inside them, removed at the end)
//!
//! Host 0 runs `skiff serve` (its own instance in cluster `default`),
//! hosts 1 and 2 `skiff agent` (cluster `fleet`), all release builds,
//! `--agent-timeout 2s`. The client runs on host 0.
//!
//! - RunTask → RUNNING, SKIFF_BENCH_FLEET_RUNS (default 200) hello tasks
//!   one after another: on the remote agent (over the veth) and, the
//!   baseline, on skiff serve's in-process agent. By the tasks' own
//!   timestamps (createdAt → startedAt) and as a polling client sees it.
//! - Throughput: SKIFF_BENCH_FLEET_JOBS (default 1,000) hello jobs, 8
//!   clients × RunTask count 10, until none is left RUNNING: jobs/s on one
//!   agent, then on two (host 2 joins).
//! - Host loss: a service of 8 sleepers spread over both agents; kill -9
//!   host 2's agent; the time until 8 run again, all on host 1 — from the
//!   kill (the timeout included) and from the lost tasks' `stoppedAt`
//!   (detection).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use skiff_harness::netns::Hosts;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");
const KEY: &str = "AKIDBENCH";
const SECRET: &str = "bench-secret";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    host: String,
}

impl Api {
    async fn call(&self, service: &str, target: &str, body: Value) -> Value {
        let bytes = body.to_string().into_bytes();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let headers = [
            ("host", self.host.as_str()),
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target),
        ];
        let signed = skiff_channel::sigv4::sign_post(
            &headers,
            &bytes,
            KEY,
            SECRET,
            "us-east-1",
            service,
            now,
        );
        let mut req = self
            .http
            .post(format!("http://{}/", self.host))
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", target);
        for (n, v) in signed {
            req = req.header(n, v);
        }
        let resp = req.body(bytes).send().await.unwrap();
        let ok = resp.status().is_success();
        let v: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
        assert!(ok, "{target} failed: {v}");
        v
    }

    async fn ecs(&self, op: &str, body: Value) -> Value {
        let target = format!("AmazonEC2ContainerServiceV20141113.{op}");
        self.call("ecs", &target, body).await
    }
}

struct Proc(Child);

impl Proc {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Starts `skiff agent` on host `i`; returns once its banner is out.
fn agent(hosts: &Hosts, i: usize, data: &std::path::Path) -> Proc {
    let dir = data.join(format!("host{i}"));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("agent.log");
    let mut child = hosts
        .command(i, SKIFF)
        .args([
            "agent",
            "--endpoint",
            &format!("http://{}:7700", Hosts::addr(0)),
        ])
        .args(["--cluster", "fleet", "--region", "us-east-1"])
        .env("SKIFF_DATA_DIR", &dir)
        .env("SKIFF_LOG", "error")
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("skiff agent: instance") {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the agent on host {i} exited with {status}: {text}");
        }
        assert!(
            Instant::now() < deadline,
            "agent on host {i} did not start: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc(child)
}

/// One task at a time: RunTask → RUNNING by the task's timestamps and as
/// a client polling DescribeTasks sees it, sorted.
async fn latency(api: &Api, cluster: &str, runs: usize) -> (Vec<Duration>, Vec<Duration>) {
    let mut seen = Vec::with_capacity(runs);
    let mut own = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let v = api
            .ecs(
                "RunTask",
                json!({"cluster": cluster, "taskDefinition": "hello"}),
            )
            .await;
        let arn = v["tasks"][0]["taskArn"].clone();
        assert!(arn.is_string(), "not placed: {v}");
        loop {
            let t = api
                .ecs("DescribeTasks", json!({"cluster": cluster, "tasks": [arn]}))
                .await;
            let task = &t["tasks"][0];
            if let (Some(created), Some(started)) =
                (task["createdAt"].as_f64(), task["startedAt"].as_f64())
            {
                seen.push(start.elapsed());
                own.push(Duration::from_secs_f64((started - created).max(0.0)));
                break;
            }
        }
    }
    seen.sort();
    own.sort();
    (seen, own)
}

/// Hello jobs, 8 clients × RunTask count 10, until none is left: jobs/s.
async fn throughput(api: &Api, jobs: usize) -> f64 {
    let start = Instant::now();
    let per_client = jobs.div_ceil(8 * 10);
    let mut clients = Vec::new();
    for _ in 0..8 {
        let api = api.clone();
        clients.push(tokio::spawn(async move {
            let mut started = 0;
            for _ in 0..per_client {
                let v = api
                    .ecs(
                        "RunTask",
                        json!({"cluster": "fleet", "taskDefinition": "hello", "count": 10}),
                    )
                    .await;
                started += v["tasks"].as_array().unwrap().len();
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
                json!({"cluster": "fleet", "desiredStatus": "RUNNING", "maxResults": 1}),
            )
            .await;
        if left["taskArns"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let runs = env_or("SKIFF_BENCH_FLEET_RUNS", 200);
    let jobs = env_or("SKIFF_BENCH_FLEET_JOBS", 1_000);
    let hosts = Hosts::new(3);
    let data = tempfile::tempdir().unwrap();
    let control = data.path().join("control");
    let mut serve = hosts.command(0, SKIFF);
    serve
        .args(["serve", "--api-addr", &format!("{}:7700", Hosts::addr(0))])
        .args(["--registry-addr", &format!("{}:5050", Hosts::addr(0))])
        .args(["--access-key-id", KEY, "--secret-access-key", SECRET])
        .args(["--agent-timeout", "2s"])
        .env("SKIFF_DATA_DIR", &control)
        .env("SKIFF_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = serve.spawn().unwrap();
    let banner = skiff_harness::first_line_then_drain(child.stderr.take().unwrap());
    assert!(banner.starts_with("skiff serve: API"), "{banner}");
    let _serve = Proc(child);
    // The client is on host 0.
    hosts.enter(0);
    skiff_registry::remote::ensure_tls_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let api = Api {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(16)
            .build()
            .unwrap(),
        host: format!("{}:7700", Hosts::addr(0)),
    };
    // Push as a user does: a registry token, then skiff login and push.
    let registry = format!("{}:5050", Hosts::addr(0));
    let token = rt.block_on(api.call(
        "ecr",
        "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken",
        json!({}),
    ));
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD
        .decode(
            token["authorizationData"][0]["authorizationToken"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let password = String::from_utf8(token)
        .unwrap()
        .trim_start_matches("AWS:")
        .to_string();
    let client = data.path().join("client");
    let skiff = |args: &[&str], stdin: &[u8]| {
        use std::io::Write;
        let mut c = hosts
            .command(0, SKIFF)
            .args(args)
            .args(["--insecure-registry", &registry])
            .env("SKIFF_DATA_DIR", &client)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(stdin).unwrap();
        assert!(c.wait().unwrap().success(), "skiff {args:?} failed");
    };
    skiff(
        &["login", "--username", "AWS", "--password-stdin", &registry],
        password.as_bytes(),
    );
    skiff(
        &["push", wasm_apps::HELLO_P1, &format!("{registry}/hello:v1")],
        b"",
    );
    skiff(
        &[
            "push",
            wasm_apps::SLEEPER_P1,
            &format!("{registry}/sleeper:v1"),
        ],
        b"",
    );

    rt.block_on(api.ecs("CreateCluster", json!({"clusterName": "fleet"})));
    let mut a = agent(&hosts, 1, data.path());
    let report = rt.block_on(async {
        for (family, image) in [("hello", "hello:v1"), ("sleepy", "sleeper:v1")] {
            api.ecs(
                "RegisterTaskDefinition",
                json!({"family": family, "networkMode": "none",
                       "containerDefinitions": [{"name": "main", "image": image, "memory": 16}]}),
            )
            .await;
        }
        // Warm both: the first task of each pulls and compiles.
        for cluster in ["default", "fleet"] {
            latency(&api, cluster, 3).await;
        }
        let (remote_seen, remote_own) = latency(&api, "fleet", runs).await;
        let (local_seen, local_own) = latency(&api, "default", runs).await;
        let one = throughput(&api, jobs).await;
        (remote_seen, remote_own, local_seen, local_own, one)
    });
    let (remote_seen, remote_own, local_seen, local_own, one) = report;
    let mut b = agent(&hosts, 2, data.path());
    let (two, from_kill, from_detection) = rt.block_on(async {
        // Warm host 2 too (its first task pulls and compiles).
        tokio::time::sleep(Duration::from_secs(1)).await;
        throughput(&api, 80).await;
        let two = throughput(&api, jobs).await;
        api.ecs(
            "CreateService",
            json!({"cluster": "fleet", "serviceName": "sleepers", "taskDefinition": "sleepy",
                   "desiredCount": 8,
                   "placementStrategy": [{"type": "spread", "field": "instanceId"}]}),
        )
        .await;
        let running = |v: &Value| {
            v["services"][0]["runningCount"].as_i64() == Some(8)
                && v["services"][0]["pendingCount"].as_i64() == Some(0)
        };
        loop {
            let v = api
                .ecs("DescribeServices", json!({"cluster": "fleet", "services": ["sleepers"]}))
                .await;
            if running(&v) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The tasks before: the replacements are the ones not among them.
        let before: Vec<Value> = api
            .ecs(
                "ListTasks",
                json!({"cluster": "fleet", "serviceName": "sleepers", "desiredStatus": "RUNNING"}),
            )
            .await["taskArns"]
            .as_array()
            .unwrap()
            .clone();
        let killed_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        let killed = Instant::now();
        b.kill();
        // Until 8 run again and none of them is on host 2.
        let (took, lost_at) = loop {
            let list = api
                .ecs(
                    "ListTasks",
                    json!({"cluster": "fleet", "serviceName": "sleepers", "desiredStatus": "RUNNING"}),
                )
                .await;
            let arns = list["taskArns"].clone();
            let tasks = if arns.as_array().unwrap().is_empty() {
                Vec::new()
            } else {
                api.ecs("DescribeTasks", json!({"cluster": "fleet", "tasks": arns}))
                    .await["tasks"]
                    .as_array()
                    .unwrap()
                    .clone()
            };
            // Eight running, four of them new (host 2's, replaced).
            let all_back = tasks.len() == 8
                && tasks.iter().all(|t| t["lastStatus"] == "RUNNING")
                && tasks.iter().filter(|t| !before.contains(&t["taskArn"])).count() == 4;
            if all_back {
                let took = killed.elapsed();
                let stopped = api
                    .ecs(
                        "ListTasks",
                        json!({"cluster": "fleet", "serviceName": "sleepers", "desiredStatus": "STOPPED"}),
                    )
                    .await["taskArns"]
                    .clone();
                let lost = api
                    .ecs("DescribeTasks", json!({"cluster": "fleet", "tasks": stopped}))
                    .await;
                let lost_at = lost["tasks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|t| t["stoppedAt"].as_f64())
                    .fold(f64::MAX, f64::min);
                break (took, lost_at);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let from_detection = Duration::from_secs_f64((killed_at + took.as_secs_f64() - lost_at).max(0.0));
        (two, took, from_detection)
    });
    a.kill();

    println!("fleet: 3 hosts (network namespaces), skiff serve on host 0, agents on hosts 1 and 2");
    println!();
    println!("RunTask → RUNNING ({runs} tasks, one at a time)   p50         p99");
    println!(
        "  remote agent, task's timestamps           {:>10}  {:>10}",
        ms(percentile(&remote_own, 0.5)),
        ms(percentile(&remote_own, 0.99))
    );
    println!(
        "  remote agent, as a client sees it         {:>10}  {:>10}",
        ms(percentile(&remote_seen, 0.5)),
        ms(percentile(&remote_seen, 0.99))
    );
    println!(
        "  in-process agent, task's timestamps       {:>10}  {:>10}   (baseline)",
        ms(percentile(&local_own, 0.5)),
        ms(percentile(&local_own, 0.99))
    );
    println!(
        "  in-process agent, as a client sees it     {:>10}  {:>10}   (baseline)",
        ms(percentile(&local_seen, 0.5)),
        ms(percentile(&local_seen, 0.99))
    );
    println!(
        "  remote / in-process (client, p50)         {:>9.2}x",
        percentile(&remote_seen, 0.5).as_secs_f64() / percentile(&local_seen, 0.5).as_secs_f64()
    );
    println!();
    println!("hello jobs to STOPPED ({jobs} jobs, 8 clients)");
    println!("  one agent      {one:>8.0} jobs/s   (baseline)");
    println!("  two agents     {two:>8.0} jobs/s   {:.2}x", two / one);
    println!();
    println!("kill -9 of an agent with 4 of a service's 8 tasks (--agent-timeout 2s)");
    println!(
        "  all 8 RUNNING again, from the kill        {}",
        ms(from_kill)
    );
    println!(
        "  all 8 RUNNING again, from detection       {}   (goal ≤ 5 s)",
        ms(from_detection)
    );
}
