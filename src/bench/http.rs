//! `skiff bench http`: a wasi:http service's requests per second and
//! latency through an application load balancer and straight to its task,
//! beside `wasmtime serve` and a native hyper server doing the same work,
//! each under the same load, rounds interleaved, best round of each.

use super::load::{self, Load};
use super::report::{self, Phase};
use crate::api_client::Api;
use serde_json::{Value, json};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to measure.
pub struct Plan {
    pub wasm: Vec<u8>,
    pub file: PathBuf,
    pub seconds: u64,
    pub rounds: u32,
    pub connections: usize,
    pub cluster: String,
    pub wasmtime: Option<PathBuf>,
    pub baselines: bool,
}

/// One server the load is put on.
pub struct Target {
    pub name: &'static str,
    pub outcome: Result<Measured, String>,
}

/// A target's best round.
pub struct Measured {
    pub url: String,
    pub best: Load,
    pub rounds: Vec<f64>,
}

/// A child process ended when dropped.
pub(super) struct Killed(pub(super) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The service behind a load balancer on the server `api` reaches:
/// (the listener's URL, the task's URL); undone by [`teardown`].
async fn deploy(
    api: &Api,
    plan: &Plan,
    id: &str,
    made: &mut Vec<String>,
) -> anyhow::Result<(String, String)> {
    let repository = super::cold_start::repository(api).await?;
    let options = super::cold_start::push_options(api, &repository).await?;
    let image = format!("{repository}:http-{id}");
    skiff_registry::remote::push(&image, &plan.wasm, &options)
        .await
        .map_err(|e| anyhow::anyhow!("pushing the guest to {image}: {e}"))?;
    // The task may use every core, as the baselines may.
    let cpu = (1024 * std::thread::available_parallelism().map_or(1, |n| n.get())).min(10_240);
    api.ecs(
        "RegisterTaskDefinition",
        json!({"family": "skiff-bench-http", "networkMode": "awsvpc", "cpu": cpu.to_string(), "memory": "512",
               "containerDefinitions": [{"name": "web", "image": image, "essential": true,
                                         "portMappings": [{"containerPort": 80}]}]}),
    )
    .await?;
    let name = format!("skiff-bench-{id}");
    let lb = tag(
        &api.elb(
            "CreateLoadBalancer",
            &[("Name", &name), ("Subnets.member.1", "subnet-1")],
        )
        .await?,
        "LoadBalancerArn",
    )?;
    made.push(lb.clone());
    let tg = tag(
        &api.elb(
            "CreateTargetGroup",
            &[
                ("Name", &name),
                ("Protocol", "HTTP"),
                ("Port", "80"),
                ("TargetType", "ip"),
                ("HealthCheckIntervalSeconds", "5"),
                ("HealthyThresholdCount", "2"),
            ],
        )
        .await?,
        "TargetGroupArn",
    )?;
    made.push(tg.clone());
    let port = free_port()?.to_string();
    api.elb(
        "CreateListener",
        &[
            ("LoadBalancerArn", &lb),
            ("Protocol", "HTTP"),
            ("Port", &port),
            ("DefaultActions.member.1.Type", "forward"),
            ("DefaultActions.member.1.TargetGroupArn", &tg),
        ],
    )
    .await?;
    // Listeners listen on `skiff serve --lb-address` (127.0.0.1 unless
    // told otherwise); the load balancer's DNS name resolves for tasks.
    let listener_url = format!("http://127.0.0.1:{port}/");
    api.ecs(
        "CreateService",
        json!({"cluster": plan.cluster, "serviceName": name, "taskDefinition": "skiff-bench-http", "desiredCount": 1,
               "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-1"]}},
               "loadBalancers": [{"targetGroupArn": tg, "containerName": "web", "containerPort": 80}]}),
    )
    .await?;
    made.push(name.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    while !api
        .elb("DescribeTargetHealth", &[("TargetGroupArn", &tg)])
        .await?
        .contains("<State>healthy</State>")
    {
        if Instant::now() > deadline {
            anyhow::bail!("the bench's service never became healthy behind its load balancer");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tasks = api
        .ecs(
            "ListTasks",
            json!({"cluster": plan.cluster, "serviceName": name}),
        )
        .await?;
    let described = api
        .ecs(
            "DescribeTasks",
            json!({"cluster": plan.cluster, "tasks": tasks["taskArns"]}),
        )
        .await?;
    let ip = super::density::address_of(&described["tasks"][0])
        .ok_or_else(|| anyhow::anyhow!("the bench's task has no address"))?;
    Ok((listener_url, format!("http://{ip}:80/")))
}

/// Removes what [`deploy`] made (the load balancer and its listener, the
/// target group, the service), as far as it got.
async fn teardown(api: &Api, cluster: &str, made: &[String]) {
    if let Some(service) = made.get(2) {
        let _ = api
            .ecs(
                "DeleteService",
                json!({"cluster": cluster, "service": service, "force": true}),
            )
            .await;
    }
    if let Some(lb) = made.first() {
        let _ = api
            .elb("DeleteLoadBalancer", &[("LoadBalancerArn", lb)])
            .await;
    }
    if let Some(tg) = made.get(1) {
        // The target group goes once the load balancer no longer uses it.
        for _ in 0..50 {
            if api
                .elb("DeleteTargetGroup", &[("TargetGroupArn", tg)])
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The text of the first `<tag>` in an XML answer.
fn tag(doc: &str, name: &str) -> anyhow::Result<String> {
    let open = format!("<{name}>");
    let start = doc
        .find(&open)
        .ok_or_else(|| anyhow::anyhow!("no {name} in the answer: {doc}"))?
        + open.len();
    let end = doc[start..]
        .find('<')
        .ok_or_else(|| anyhow::anyhow!("{name} is not closed"))?;
    Ok(doc[start..start + end].to_string())
}

pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until something accepts connections at `addr`, at most `within`.
pub(super) fn wait_serving(addr: SocketAddr, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return Err(format!(
                "nothing served at {addr} after {} s",
                within.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// `skiff bench native-hello` (this binary), on a free port.
fn start_native() -> Result<(Killed, String), String> {
    use std::io::BufRead;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(["bench", "native-hello", "--addr", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the native server: {e}"))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    let url = line.trim().to_string();
    if !url.starts_with("http://") {
        let _ = child.kill();
        return Err(format!("the native server did not start: {url:?}"));
    }
    Ok((Killed(child), format!("{url}/")))
}

/// `wasmtime serve -Scli FILE` on a free port.
fn start_wasmtime_serve(wasmtime: Option<&Path>, file: &Path) -> Result<(Killed, String), String> {
    let wasmtime = super::baselines::find_wasmtime(wasmtime)?;
    let port = free_port().map_err(|e| e.to_string())?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let child = Command::new(&wasmtime)
        .args(["serve", "-Scli", "--addr", &addr.to_string()])
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", wasmtime.display()))?;
    let child = Killed(child);
    wait_serving(addr, Duration::from_secs(20))?;
    Ok((child, format!("http://{addr}/")))
}

/// Runs the bench: every target's best round.
pub fn run(rt: &tokio::runtime::Runtime, api: &Api, plan: &Plan) -> anyhow::Result<Vec<Target>> {
    let id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() % 0xffff_ffff)
            .unwrap_or_default()
    );
    let mut made = Vec::new();
    let (lb, direct) = match rt.block_on(deploy(api, plan, &id, &mut made)) {
        Ok(urls) => urls,
        Err(e) => {
            rt.block_on(teardown(api, &plan.cluster, &made));
            return Err(e);
        }
    };
    let mut servers: Vec<(&'static str, Result<String, String>, Option<Killed>)> = vec![
        ("through the load balancer", Ok(lb), None),
        ("straight to the task", Ok(direct), None),
    ];
    if plan.baselines {
        for (name, started) in [
            ("native hyper server (same answer)", start_native()),
            (
                "wasmtime serve -Scli",
                start_wasmtime_serve(plan.wasmtime.as_deref(), &plan.file),
            ),
        ] {
            match started {
                Ok((child, url)) => servers.push((name, Ok(url), Some(child))),
                Err(why) => servers.push((name, Err(why), None)),
            }
        }
    }
    let time = Duration::from_secs(plan.seconds);
    let addresses: Vec<Option<SocketAddr>> = servers
        .iter()
        .map(|(_, url, _)| url.as_deref().ok().and_then(address_of))
        .collect();
    let (rounds, connections) = (plan.rounds, plan.connections);
    let load = move || {
        let mut results: Vec<Vec<Load>> = addresses.iter().map(|_| Vec::new()).collect();
        for _ in 0..rounds {
            for (i, addr) in addresses.iter().enumerate() {
                if let Some(addr) = addr {
                    results[i].push(load::drive(*addr, &addr.to_string(), connections, time));
                }
            }
        }
        results
    };
    // Interrupted (Ctrl-C, SIGTERM), what was made on the server is
    // removed before the bench ends.
    let loaded = rt.block_on(async {
        tokio::select! {
            results = tokio::task::spawn_blocking(load) => Some(results),
            _ = crate::signals::shutdown_signal() => None,
        }
    });
    let results = match loaded {
        Some(Ok(results)) => results,
        Some(Err(e)) => {
            rt.block_on(teardown(api, &plan.cluster, &made));
            anyhow::bail!("the load failed: {e}");
        }
        None => {
            rt.block_on(teardown(api, &plan.cluster, &made));
            anyhow::bail!(
                "interrupted: the bench's service, load balancer and target group were removed"
            );
        }
    };
    rt.block_on(teardown(api, &plan.cluster, &made));
    Ok(servers
        .into_iter()
        .zip(results)
        .map(|((name, url, _child), rounds)| Target {
            name,
            outcome: url.map(|url| {
                let per_round = rounds.iter().map(Load::per_second).collect();
                let best = rounds
                    .into_iter()
                    .max_by(|a, b| a.per_second().total_cmp(&b.per_second()))
                    .unwrap_or_default();
                Measured {
                    url,
                    best,
                    rounds: per_round,
                }
            }),
        })
        .collect())
}

fn address_of(url: &str) -> Option<SocketAddr> {
    url.strip_prefix("http://")?
        .trim_end_matches('/')
        .parse()
        .ok()
}

/// A target's latency as a phase (for tables and the plot).
pub fn latency(t: &Target) -> Option<Phase> {
    let m = t.outcome.as_ref().ok()?;
    let mut p = Phase::new(t.name, "request latency under load");
    p.micros = m.best.latencies.clone();
    Some(p)
}

fn rps(targets: &[Target], name: &str) -> Option<f64> {
    targets
        .iter()
        .find(|t| t.name.starts_with(name))
        .and_then(|t| t.outcome.as_ref().ok())
        .filter(|m| m.best.requests > 0)
        .map(|m| m.best.per_second())
}

/// The comparisons the issue sets goals for.
pub fn ratios(targets: &[Target]) -> Value {
    let direct = rps(targets, "straight");
    let ratio = |other: Option<f64>| direct.zip(other).map(|(d, o)| d / o);
    json!({
        "directOverNative": ratio(rps(targets, "native")),
        "directOverWasmtimeServe": ratio(rps(targets, "wasmtime")),
        "loadBalancerCost": direct.zip(rps(targets, "through")).map(|(d, l)| 1.0 - l / d),
    })
}

pub fn json_of(targets: &[Target]) -> Value {
    let list: Vec<Value> = targets
        .iter()
        .map(|t| match &t.outcome {
            Ok(m) => {
                let lat = latency(t).and_then(|p| p.summary());
                json!({
                    "name": t.name, "ran": true, "url": m.url,
                    "requestsPerSecond": m.best.per_second(),
                    "requests": m.best.requests,
                    "errors": m.best.errors,
                    "firstError": m.best.first_error,
                    "roundsRequestsPerSecond": m.rounds,
                    "latency": lat.map(|s| json!({"p50Micros": report::ns(s.p50), "p90Micros": report::ns(s.p90), "p99Micros": report::ns(s.p99), "maxMicros": report::ns(s.max)})),
                })
            }
            Err(why) => json!({"name": t.name, "ran": false, "skipped": why}),
        })
        .collect();
    Value::Array(list)
}

pub fn print(targets: &[Target], connections: usize, seconds: u64, rounds: u32) {
    println!(
        "{connections} connection(s), {seconds} s a round, {rounds} round(s) interleaved, best round of each:"
    );
    println!(
        "{:<36} {:>12} {:>10} {:>10} {:>10} {:>8}",
        "target", "requests/s", "p50", "p99", "max", "errors"
    );
    for t in targets {
        match &t.outcome {
            Ok(m) => {
                let s = latency(t).and_then(|p| p.summary());
                let at = |f: fn(&report::Summary) -> f64| {
                    s.as_ref()
                        .map(|s| report::duration(f(s)))
                        .unwrap_or_default()
                };
                println!(
                    "{:<36} {:>12.0} {:>10} {:>10} {:>10} {:>8}",
                    t.name,
                    m.best.per_second(),
                    at(|s| s.p50),
                    at(|s| s.p99),
                    at(|s| s.max),
                    m.best.errors
                );
                if let Some(why) = &m.best.first_error {
                    println!("    first error: {why}");
                }
            }
            Err(why) => println!("{:<36} skipped: {why}", t.name),
        }
    }
    let r = ratios(targets);
    if let Some(v) = r["directOverNative"].as_f64() {
        println!("straight to the task / native hyper server: {v:.2}×");
    }
    if let Some(v) = r["directOverWasmtimeServe"].as_f64() {
        println!("straight to the task / wasmtime serve: {v:.2}×");
    }
    if let Some(v) = r["loadBalancerCost"].as_f64() {
        println!(
            "load balancer cost (1 − through / straight): {:.1}%{}",
            v * 100.0,
            if v < 0.0 {
                " (below zero: the rounds' noise is larger than the cost; run more rounds)"
            } else {
                ""
            }
        );
    }
}
