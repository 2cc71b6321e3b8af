//! `skiff bench density`: N long-running tasks on one agent at once — a
//! sleeper, or idle wasi:http services each at its own address — and what
//! each costs in resident memory, how fast they fill and drain the box,
//! and whether starting and stopping one more is still fast when it is
//! full (probed the same way empty and full).

use super::report::Phase;
use crate::api_client::Api;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// What to run.
pub struct Plan {
    pub tasks: usize,
    /// RunTask and StopTask calls in flight at once.
    pub concurrency: usize,
    /// Tasks started and stopped one by one, empty and full.
    pub probes: usize,
    pub cluster: String,
    pub wasm: Vec<u8>,
    /// The guest is a wasi:http component: each task an awsvpc service.
    pub http: bool,
    /// Each container's memory limit (MiB).
    pub task_memory: u32,
    /// How long filling (or draining) may take.
    pub timeout: Duration,
    /// Every task of this run is started by this (`startedBy`), so an
    /// interrupted run finds and stops them on a server it was given.
    pub run_id: String,
}

/// What the run measured. Memory figures are the server's resident set,
/// when it can be read.
pub struct Measured {
    pub before: Option<u64>,
    pub full: Option<u64>,
    pub after: Option<u64>,
    pub running: usize,
    pub fill: Duration,
    pub stopped: usize,
    pub drain: Duration,
    pub empty: Vec<Phase>,
    pub loaded: Vec<Phase>,
    /// Requests to a sample of the idle services while full (http).
    pub requests: Option<(usize, Phase)>,
    /// Why tasks failed to start or stop (each reason once, with how many).
    pub failures: Vec<(String, usize)>,
}

impl Measured {
    /// Resident memory the running tasks added, per task.
    pub fn per_task(&self) -> Option<u64> {
        let (before, full) = (self.before?, self.full?);
        (self.running > 0).then(|| full.saturating_sub(before) / self.running as u64)
    }
}

/// Registers the guest, fills the box, probes, drains; `memory` reads the
/// server's resident set.
pub async fn run(
    api: &Api,
    plan: &Plan,
    memory: &dyn Fn() -> Option<u64>,
) -> anyhow::Result<Measured> {
    let definition = prepare(api, plan).await?;
    let mut failures: HashMap<String, usize> = HashMap::new();
    // One task first pulls and compiles, so neither is counted as memory
    // the tasks hold or time the probes take.
    if let Err(why) = probe(api, plan, &definition).await {
        anyhow::bail!("the first task, which pulls and compiles the guest, failed: {why}");
    }
    let empty = probes(api, plan, &definition, &mut failures).await;
    let before = memory();

    let started = Instant::now();
    let deadline = started + plan.timeout;
    let arns = fill(api, plan, &definition, &mut failures).await;
    let (running, not) = wait_for(api, plan, &arns, "RUNNING", deadline).await;
    let fill = started.elapsed();
    count(&mut failures, not);
    let full = memory();
    let requests = if plan.http {
        Some(sample_requests(api, &plan.cluster, &running).await)
    } else {
        None
    };
    let loaded = probes(api, plan, &definition, &mut failures).await;

    let started = Instant::now();
    let deadline = started + plan.timeout;
    stop_all(api, plan, &running, &mut failures).await;
    let (stopped, not) = wait_for(api, plan, &running, "STOPPED", deadline).await;
    let drain = started.elapsed();
    count(&mut failures, not);
    let after = memory();

    let failures = super::report::by_count(failures);
    Ok(Measured {
        before,
        full,
        after,
        running: running.len(),
        fill,
        stopped: stopped.len(),
        drain,
        empty,
        loaded,
        requests,
        failures,
    })
}

/// Pushes the guest and registers its task definition: its ARN.
async fn prepare(api: &Api, plan: &Plan) -> anyhow::Result<String> {
    let repository = super::cold_start::repository(api).await?;
    let options = super::cold_start::push_options(api, &repository).await?;
    let image = format!(
        "{repository}:density-{}",
        if plan.http { "http" } else { "sleeper" }
    );
    let mut container = json!({
        "name": "guest", "image": image, "memory": plan.task_memory, "essential": true,
    });
    if plan.http {
        container["portMappings"] = json!([{"containerPort": 80}]);
    }
    let definition = json!({
        "family": "skiff-bench-density",
        "networkMode": if plan.http { "awsvpc" } else { "none" },
        "containerDefinitions": [container],
    });
    super::cold_start::push_and_register(api, &options, &image, &plan.wasm, definition).await
}

fn run_request(plan: &Plan, definition: &str, count: usize) -> Value {
    let mut request = json!({"cluster": plan.cluster, "taskDefinition": definition, "count": count, "startedBy": plan.run_id});
    if plan.http {
        request["networkConfiguration"] = json!({"awsvpcConfiguration": {"subnets": ["subnet-1"]}});
    }
    request
}

fn count(failures: &mut HashMap<String, usize>, reasons: Vec<String>) {
    for why in reasons {
        *failures.entry(why).or_default() += 1;
    }
}

/// `call` on every item, at most `concurrency` at once: the results, in
/// the items' order.
async fn at_most<T, R, Fut>(
    concurrency: usize,
    items: impl IntoIterator<Item = T>,
    call: impl Fn(T) -> Fut,
) -> Vec<R>
where
    Fut: std::future::Future<Output = R>,
{
    use futures_util::StreamExt;
    futures_util::stream::iter(items)
        .map(call)
        .buffered(concurrency.max(1))
        .collect()
        .await
}

/// Starts every task, ten to a RunTask (ECS's most), `concurrency` calls
/// at once: the ARNs of those placed.
async fn fill(
    api: &Api,
    plan: &Plan,
    definition: &str,
    failures: &mut HashMap<String, usize>,
) -> Vec<String> {
    let calls = (0..plan.tasks)
        .step_by(10)
        .map(|first| (plan.tasks - first).min(10));
    let ran = at_most(plan.concurrency, calls, |n| async move {
        (
            n,
            api.ecs("RunTask", run_request(plan, definition, n)).await,
        )
    })
    .await;
    let mut arns = Vec::with_capacity(plan.tasks);
    for (n, ran) in ran {
        match ran {
            Ok(v) => {
                let placed = super::cold_start::placed(&v);
                // ECS gives one failure per reason, not per task.
                if placed.len() < n {
                    let why = v["failures"][0]["reason"]
                        .as_str()
                        .unwrap_or("no reason given");
                    *failures
                        .entry(format!("RunTask did not place them: {why}"))
                        .or_default() += n - placed.len();
                }
                arns.extend(placed);
            }
            Err(e) => *failures.entry(format!("RunTask: {e}")).or_default() += n,
        }
    }
    arns
}

/// Stops every task of this run still meant to run on the server, until
/// a listing finds none (a RunTask in flight when the run was interrupted
/// may place tasks after the first look): how many were asked to stop.
pub async fn stop_leftovers(api: &Api, plan: &Plan) -> Result<usize, String> {
    let mut stopped = 0;
    loop {
        let arns: Vec<String> = api
            .ecs_all(
                "ListTasks",
                json!({"cluster": plan.cluster, "startedBy": plan.run_id, "desiredStatus": "RUNNING"}),
                "taskArns",
            )
            .await
            .map_err(|e| format!("ListTasks: {e}"))?
            .into_iter()
            .filter_map(|a| a.as_str().map(String::from))
            .collect();
        if arns.is_empty() {
            return Ok(stopped);
        }
        let mut failures = HashMap::new();
        stop_all(api, plan, &arns, &mut failures).await;
        if let Some((why, _)) = failures.into_iter().next() {
            return Err(why);
        }
        stopped += arns.len();
    }
}

/// StopTask on every task, `concurrency` at once.
async fn stop_all(api: &Api, plan: &Plan, arns: &[String], failures: &mut HashMap<String, usize>) {
    let stopped = at_most(plan.concurrency, arns, |arn| {
        api.ecs(
            "StopTask",
            json!({"cluster": plan.cluster, "task": arn, "reason": STOP_REASON}),
        )
    })
    .await;
    for e in stopped.into_iter().filter_map(Result::err) {
        *failures.entry(format!("StopTask: {e}")).or_default() += 1;
    }
}

/// Waits until every task shows `status`, describing them in batches:
/// those that did, and why each of the others did not (a task that
/// stopped while it was to run, or the time ran out).
async fn wait_for(
    api: &Api,
    plan: &Plan,
    arns: &[String],
    status: &str,
    deadline: Instant,
) -> (Vec<String>, Vec<String>) {
    let cluster = &plan.cluster;
    let mut pending: HashSet<&String> = arns.iter().collect();
    let mut reached = Vec::with_capacity(arns.len());
    let mut failed = Vec::new();
    while !pending.is_empty() && Instant::now() < deadline {
        // Polling is load too: at most ~8,000 descriptions a second.
        let every = Duration::from_secs_f64((pending.len() as f64 / 8_000.0).max(0.005));
        tokio::time::sleep(every).await;
        let batch: Vec<&String> = pending.iter().copied().collect();
        for chunk in batch.chunks(super::DESCRIBE_BATCH) {
            let Ok(found) = api
                .ecs("DescribeTasks", json!({"cluster": cluster, "tasks": chunk}))
                .await
            else {
                continue;
            };
            if Instant::now() >= deadline {
                break;
            }
            for task in found["tasks"].as_array().into_iter().flatten() {
                let Some(arn) = task["taskArn"].as_str() else {
                    continue;
                };
                let Some(&key) = pending.get(&arn.to_string()) else {
                    continue;
                };
                match settled(task, status) {
                    Some(Ok(())) => reached.push(key.clone()),
                    Some(Err(why)) => failed.push(why),
                    None => continue,
                }
                pending.remove(key);
            }
        }
    }
    failed.extend(pending.iter().map(|_| too_late(status, plan.timeout)));
    (reached, failed)
}

/// Whether `task` has come to `status` (a STOPPED one only if the bench
/// stopped it), or why it never will; `None` while it is on its way.
fn settled(task: &Value, status: &str) -> Option<Result<(), String>> {
    let last = task["lastStatus"].as_str().unwrap_or_default();
    if last == status && (status != "STOPPED" || stopped_by_us(task)) {
        Some(Ok(()))
    } else if last == "STOPPED" {
        Some(Err(stopped_reason(task)))
    } else {
        None
    }
}

fn too_late(status: &str, timeout: Duration) -> String {
    format!(
        "not {status} within {} (--timeout)",
        skiff_runtime::format_duration(timeout)
    )
}

/// What the bench's StopTask calls give as their reason.
const STOP_REASON: &str = "skiff bench density";

/// Whether a STOPPED task was stopped by the bench (not by its exit).
fn stopped_by_us(task: &Value) -> bool {
    task["stoppedReason"]
        .as_str()
        .is_some_and(|r| r.starts_with(STOP_REASON))
}

/// Why a task stopped before it was asked to.
fn stopped_reason(task: &Value) -> String {
    let why = task["stoppedReason"]
        .as_str()
        .or(task["containers"][0]["reason"].as_str())
        .unwrap_or("no reason given");
    format!("stopped by itself (a long-running guest is expected): {why}")
}

/// The probes' rows.
fn probe_phases(http: bool) -> Vec<Phase> {
    let mut rows = vec![
        Phase::new(
            "RunTask → RUNNING seen",
            "one task started, as a client polling every 1 ms sees it",
        ),
        Phase::new(
            "createdAt → startedAt",
            "the same, by the task's timestamps",
        ),
        Phase::new(
            "StopTask → STOPPED seen",
            "the task stopped, as a client polling every 1 ms sees it",
        ),
        Phase::new(
            "stoppingAt → stoppedAt",
            "the same, by the task's timestamps",
        ),
    ];
    if http {
        rows.push(Phase::new(
            "RUNNING seen → first byte",
            "a request to the new service, connection to first response byte",
        ));
    }
    rows
}

/// `plan.probes` tasks started and stopped one after another.
async fn probes(
    api: &Api,
    plan: &Plan,
    definition: &str,
    failures: &mut HashMap<String, usize>,
) -> Vec<Phase> {
    let mut rows = probe_phases(plan.http);
    for _ in 0..plan.probes {
        match probe(api, plan, definition).await {
            Ok(values) => {
                for (row, v) in rows.iter_mut().zip(values) {
                    row.micros.push(v.max(0.0));
                }
            }
            Err(why) => *failures.entry(format!("probe: {why}")).or_default() += 1,
        }
    }
    rows
}

/// One task started, (for a service) asked once, and stopped: the
/// probes' figures, in their rows' order.
async fn probe(api: &Api, plan: &Plan, definition: &str) -> Result<Vec<f64>, String> {
    let sent = Instant::now();
    let ran = api
        .ecs("RunTask", run_request(plan, definition, 1))
        .await
        .map_err(|e| format!("RunTask: {e}"))?;
    let arn = ran["tasks"][0]["taskArn"]
        .as_str()
        .ok_or_else(|| {
            let why = ran["failures"][0]["reason"].as_str().unwrap_or("no task");
            format!("RunTask placed nothing: {why}")
        })?
        .to_string();
    let running = watch(api, &plan.cluster, &arn, "RUNNING", plan.timeout).await?;
    let up = sent.elapsed();
    let first_byte = if plan.http {
        let ip = address_of(&running).ok_or("the service has no address")?;
        Some(first_byte(ip).await?)
    } else {
        None
    };
    let asked = Instant::now();
    api.ecs(
        "StopTask",
        json!({"cluster": plan.cluster, "task": arn, "reason": format!("{STOP_REASON} probe")}),
    )
    .await
    .map_err(|e| format!("StopTask: {e}"))?;
    let stopped = watch(api, &plan.cluster, &arn, "STOPPED", plan.timeout).await?;
    let down = asked.elapsed();
    let between = |task: &Value, a: &str, b: &str| match (task[a].as_f64(), task[b].as_f64()) {
        (Some(a), Some(b)) => Ok((b - a) * 1e6),
        _ => Err(format!("the task has no {a} or {b}")),
    };
    let mut values = vec![
        up.as_secs_f64() * 1e6,
        between(&running, "createdAt", "startedAt")?,
        down.as_secs_f64() * 1e6,
        between(&stopped, "stoppingAt", "stoppedAt")?,
    ];
    values.extend(first_byte);
    Ok(values)
}

/// Describes one task every millisecond until it shows `status`.
async fn watch(
    api: &Api,
    cluster: &str,
    arn: &str,
    status: &str,
    timeout: Duration,
) -> Result<Value, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = api
            .ecs("DescribeTasks", json!({"cluster": cluster, "tasks": [arn]}))
            .await
            .map_err(|e| format!("DescribeTasks: {e}"))?;
        let task = &found["tasks"][0];
        if let Some(settled) = settled(task, status) {
            return settled.map(|()| task.clone());
        }
        if Instant::now() > deadline {
            return Err(too_late(status, timeout));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// An awsvpc task's address, as DescribeTasks gives it.
pub(super) fn address_of(task: &Value) -> Option<&str> {
    task["containers"][0]["networkInterfaces"][0]["privateIpv4Address"].as_str()
}

/// `GET /` to a task's port 80 on a new connection: microseconds from
/// connecting to the response's first byte.
async fn first_byte(ip: &str) -> Result<f64, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let started = Instant::now();
        let mut stream = tokio::net::TcpStream::connect((ip, 80)).await?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: skiff-bench\r\nConnection: close\r\n\r\n")
            .await?;
        let mut first = [0u8; 1];
        let n = stream.read(&mut first).await?;
        let took = started.elapsed().as_secs_f64() * 1e6;
        if n == 0 {
            return Err(std::io::Error::other("closed without answering"));
        }
        Ok(took)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| format!("{ip}:80 gave no answer in 10 s"))?
        .map_err(|e| format!("{ip}:80: {e}"))
}

/// One request to each of up to 100 idle services spread over all that
/// run: how many answered, and how long each took to its first byte.
async fn sample_requests(api: &Api, cluster: &str, arns: &[String]) -> (usize, Phase) {
    let mut row = Phase::new(
        "request to an idle service",
        "a sample of up to 100 while all run: connection to first response byte",
    );
    let step = (arns.len() / 100).max(1);
    let sample: Vec<&String> = arns.iter().step_by(step).take(100).collect();
    let Ok(found) = api
        .ecs(
            "DescribeTasks",
            json!({"cluster": cluster, "tasks": sample}),
        )
        .await
    else {
        return (sample.len(), row);
    };
    for task in found["tasks"].as_array().into_iter().flatten() {
        if let Some(ip) = address_of(task)
            && let Ok(took) = first_byte(ip).await
        {
            row.micros.push(took);
        }
    }
    (sample.len(), row)
}
