//! `skiff bench cold-start`: N tasks through the real path — RunTask, the
//! scheduler, the agent, the runtime — each timed phase by phase from its
//! own timestamps and `skiff.*` attributes, C at a time.

use super::report::{self, Phase};
use crate::api_client::Api;
use serde_json::{Value, json};
use skiff_registry::remote::{self, Credentials, RemoteOptions};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, oneshot};

/// What to run, and where.
pub struct Plan {
    pub tasks: usize,
    pub concurrency: usize,
    pub cold: bool,
    pub cluster: String,
    /// The guest's bytes, pushed to the server's registry.
    pub wasm: Vec<u8>,
    /// Tasks in awsvpc mode (else `none`).
    pub awsvpc: bool,
    /// Tasks per RunTask call (its `count`).
    pub per_call: usize,
    /// How long a task may take to stop before the bench stops it and
    /// counts it failed.
    pub task_timeout: Duration,
    /// Cold, with the server compiling each image as it is pushed: wait
    /// until this compile cache (the server's) holds every image before
    /// timing, so the first starts time pull + loading compiled code.
    pub compiled_on_push: Option<std::path::PathBuf>,
}

/// What the run measured.
pub struct Measured {
    pub phases: Vec<Phase>,
    pub succeeded: usize,
    /// Why tasks failed (each reason once, with how many).
    pub failures: Vec<(String, usize)>,
    pub wall: Duration,
    pub pulled_bytes: u64,
    /// Where the tasks' compiled code came from (`skiff.guest.compile`:
    /// compiled, cache, warm), with how many of each.
    pub code: Vec<(String, usize)>,
    /// The poller's DescribeTasks calls, and the task descriptions they
    /// asked for (what watching the tasks cost the server).
    pub described: Polled,
}

/// What the poller asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Polled {
    pub calls: usize,
    pub tasks: usize,
}

/// Pushes the guest (one image, or one per task when cold), registers
/// the task definitions, runs every task to STOPPED and reads where each
/// one's time went.
pub async fn run(api: &Arc<Api>, plan: &Plan) -> anyhow::Result<Measured> {
    let (definitions, binaries) = prepare(api, plan).await?;
    if let Some(cache) = &plan.compiled_on_push {
        wait_compiled(cache, &binaries, plan.task_timeout).await?;
    }
    if !plan.cold {
        // One untimed start pulls and compiles: what follows is warm.
        let (primed, _) = run_tasks(api, plan, &definitions, 1, 1, 1).await?;
        if let Some(Err(why)) = primed.into_iter().next().map(|s| s.task) {
            anyhow::bail!("the first task, which pulls and compiles the guest, failed: {why}");
        }
    }
    let started = Instant::now();
    let (samples, described) = run_tasks(
        api,
        plan,
        &definitions,
        plan.tasks,
        plan.concurrency,
        plan.per_call,
    )
    .await?;
    Ok(measure(samples, started.elapsed(), described))
}

/// Waits until `cache` (a compile cache directory) holds compiled code of
/// every binary in `shas` (sha256 hex). The server compiles them one at a
/// time, so the limit is on going `limit` without one more done.
async fn wait_compiled(
    cache: &std::path::Path,
    shas: &[String],
    limit: Duration,
) -> anyhow::Result<()> {
    let mut left: std::collections::HashSet<&str> = shas.iter().map(String::as_str).collect();
    let mut progressed = Instant::now();
    loop {
        // Entries are `<sha256>-<engine>.cwasm`.
        let before = left.len();
        if let Ok(entries) = std::fs::read_dir(cache) {
            for entry in entries.flatten() {
                if let Some(name) = entry.file_name().to_str()
                    && let Some((sha, rest)) = name.split_once('-')
                    && rest.ends_with(".cwasm")
                {
                    left.remove(sha);
                }
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        if left.len() < before {
            progressed = Instant::now();
        } else if progressed.elapsed() > limit {
            anyhow::bail!(
                "the server compiled {} of {} pushed images, then none more within {limit:?} (--task-timeout)",
                shas.len() - left.len(),
                shas.len(),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The task definition of each task (the same one for every task, when
/// warm), and the sha256 (hex) of each image's binary.
async fn prepare(api: &Api, plan: &Plan) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let repository = repository(api).await?;
    let options = push_options(api, &repository).await?;
    let run_id = super::run_id();
    let images = if plan.cold { plan.tasks } else { 1 };
    let mut definitions = Vec::with_capacity(images);
    let mut binaries = Vec::with_capacity(images);
    for i in 0..images {
        let (tag, wasm) = if plan.cold {
            (
                format!("cold-{run_id}-{i}"),
                super::guest::distinct(&plan.wasm, i),
            )
        } else {
            (format!("warm-{run_id}"), plan.wasm.clone())
        };
        let image = format!("{repository}:{tag}");
        let definition = json!({
            "family": "skiff-bench",
            "networkMode": if plan.awsvpc { "awsvpc" } else { "none" },
            "containerDefinitions": [{
                "name": "guest", "image": image, "memory": 64, "essential": true,
            }],
        });
        binaries.push(skiff_registry::Digest::sha256_of(&wasm).hex().to_string());
        definitions.push(push_and_register(api, &options, &image, &wasm, definition).await?);
    }
    Ok((definitions, binaries))
}

/// The ARNs of the tasks a RunTask answer placed.
pub(super) fn placed(ran: &Value) -> Vec<String> {
    ran["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["taskArn"].as_str().map(String::from))
        .collect()
}

/// Pushes `wasm` to `image` and registers `definition` (which runs it):
/// the task definition's ARN.
pub(super) async fn push_and_register(
    api: &Api,
    options: &RemoteOptions,
    image: &str,
    wasm: &[u8],
    definition: Value,
) -> anyhow::Result<String> {
    remote::push(image, wasm, options)
        .await
        .map_err(|e| anyhow::anyhow!("pushing the guest to {image}: {e}"))?;
    let registered = api
        .ecs("RegisterTaskDefinition", definition)
        .await
        .map_err(|e| anyhow::anyhow!("registering the bench's task definition: {e}"))?;
    registered["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| anyhow::anyhow!("RegisterTaskDefinition answered no ARN"))
}

/// The bench's repository (`skiff-bench`) in the server's registry, made
/// through ECR's API if need be: its URI.
pub(super) async fn repository(api: &Api) -> anyhow::Result<String> {
    let body = json!({"repositoryName": "skiff-bench"});
    let made = match api.ecr("CreateRepository", body.clone()).await {
        Ok(v) => v["repository"].clone(),
        Err(crate::api_client::CallError::Api { kind, .. })
            if kind == "RepositoryAlreadyExistsException" =>
        {
            let found = api
                .ecr(
                    "DescribeRepositories",
                    json!({"repositoryNames": ["skiff-bench"]}),
                )
                .await?;
            found["repositories"][0].clone()
        }
        Err(e) => anyhow::bail!("making the bench's repository: {e}"),
    };
    made["repositoryUri"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| anyhow::anyhow!("the registry gave the bench's repository no URI"))
}

/// Credentials for pushing there, as `aws ecr get-login-password` gets
/// them (a registry that wants none ignores them).
pub(super) async fn push_options(api: &Api, repository: &str) -> anyhow::Result<RemoteOptions> {
    use base64::Engine as _;
    let host = repository.split('/').next().unwrap_or(repository);
    let mut options = RemoteOptions::default();
    let token = api.ecr("GetAuthorizationToken", json!({})).await?;
    if let Some(t) = token["authorizationData"][0]["authorizationToken"].as_str()
        && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(t)
        && let Some((user, password)) = String::from_utf8_lossy(&decoded).split_once(':')
    {
        options.credentials.push((
            host.to_string(),
            Credentials {
                username: user.to_string(),
                password: password.to_string(),
            },
        ));
    }
    Ok(options)
}

/// One task as the bench saw it.
struct Sample {
    sent: Instant,
    answered: Instant,
    seen: Instant,
    /// The task as DescribeTasks showed it STOPPED, or why it never ran.
    task: Result<Value, String>,
}

/// How many task descriptions a second the poller asks for at most.
const DESCRIBED_PER_SECOND: f64 = 16_000.0;

/// Tasks the poller watches: who waits for each, by ARN, and the order to
/// ask about them in.
type Pending = Arc<Mutex<Waiting>>;

#[derive(Default)]
struct Waiting {
    waiters: HashMap<String, oneshot::Sender<(Instant, Value)>>,
    /// Longest unasked first: a task found not yet STOPPED goes to the back.
    queue: std::collections::VecDeque<String>,
    polled: Polled,
}

impl Waiting {
    fn insert(&mut self, arn: String, waiter: oneshot::Sender<(Instant, Value)>) {
        self.queue.push_back(arn.clone());
        self.waiters.insert(arn, waiter);
    }

    fn remove(&mut self, arn: &str) -> Option<oneshot::Sender<(Instant, Value)>> {
        // (Its place in the queue is skipped when it comes up.)
        self.waiters.remove(arn)
    }

    /// The next `n` tasks still waited for, from the front of the queue.
    fn next(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::with_capacity(n.min(self.waiters.len()));
        while out.len() < n
            && let Some(arn) = self.queue.pop_front()
        {
            if self.waiters.contains_key(&arn) {
                out.push(arn);
            }
        }
        out
    }
}

/// Runs `count` tasks, `per_call` a RunTask, the i-th call's of
/// `definitions[i % len]`, at most `concurrency` at once.
async fn run_tasks(
    api: &Arc<Api>,
    plan: &Plan,
    definitions: &[String],
    count: usize,
    concurrency: usize,
    per_call: usize,
) -> anyhow::Result<(Vec<Sample>, Polled)> {
    let pending: Pending = Arc::default();
    let poller = tokio::spawn(poll(
        Arc::clone(api),
        plan.cluster.clone(),
        Arc::clone(&pending),
    ));
    let mut request = json!({"cluster": plan.cluster, "count": 1});
    if plan.awsvpc {
        request["networkConfiguration"] = json!({"awsvpcConfiguration": {"subnets": ["subnet-1"]}});
    }
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut running = Vec::with_capacity(count);
    let mut left = count;
    let per_call = per_call.clamp(1, concurrency);
    for i in 0.. {
        if left == 0 {
            break;
        }
        let n = per_call.min(left);
        left -= n;
        let slot = Arc::clone(&slots)
            .acquire_many_owned(u32::try_from(n).unwrap_or(1))
            .await?;
        let api = Arc::clone(api);
        let pending = Arc::clone(&pending);
        let mut request = request.clone();
        request["taskDefinition"] = definitions[i % definitions.len()].clone().into();
        request["count"] = n.into();
        let timeout = plan.task_timeout;
        let cluster = plan.cluster.clone();
        running.push(tokio::spawn(async move {
            let samples = one(&api, request, n, &pending, timeout, &cluster).await;
            drop(slot);
            samples
        }));
    }
    let mut out = Vec::with_capacity(count);
    for r in running {
        out.extend(r.await?);
    }
    poller.abort();
    let polled = pending.lock().map(|p| p.polled).unwrap_or_default();
    Ok((out, polled))
}

/// RunTask of `n` tasks, then wait for the poller to see each STOPPED.
async fn one(
    api: &Api,
    request: Value,
    n: usize,
    pending: &Pending,
    timeout: Duration,
    cluster: &str,
) -> Vec<Sample> {
    let sent = Instant::now();
    let ran = api.ecs("RunTask", request).await;
    let answered = Instant::now();
    let failed = |why: String| Sample {
        sent,
        answered,
        seen: answered,
        task: Err(why),
    };
    let ran = match ran {
        Ok(v) => v,
        Err(e) => return (0..n).map(|_| failed(format!("RunTask: {e}"))).collect(),
    };
    let arns = placed(&ran);
    let mut out: Vec<Sample> = (arns.len()..n)
        .map(|_| {
            let why = ran["failures"][0]["reason"].as_str().unwrap_or("no task");
            failed(format!("RunTask placed nothing: {why}"))
        })
        .collect();
    let mut waits = Vec::with_capacity(arns.len());
    for arn in arns {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = pending.lock() {
            p.insert(arn.clone(), tx);
        }
        waits.push((arn, rx));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    for (arn, rx) in waits {
        let waited = tokio::time::timeout_at(deadline, rx).await;
        out.push(match waited {
            Ok(Ok((seen, task))) => Sample {
                sent,
                answered,
                seen,
                task: Ok(task),
            },
            _ => {
                // A guest that does not exit is stopped, not waited for.
                if let Ok(mut p) = pending.lock() {
                    p.remove(&arn);
                }
                let stop = json!({"cluster": cluster, "task": arn, "reason": "skiff bench: no exit in time"});
                let _ = api.ecs("StopTask", stop).await;
                failed(format!(
                    "a task did not stop within {} (--task-timeout): cold-start measures guests that run to their exit; it was stopped",
                    skiff_runtime::format_duration(timeout)
                ))
            }
        });
    }
    out
}

/// DescribeTasks on the tasks being waited for, handing each STOPPED one
/// to its waiter: the 100 (ECS's most a call) asked about longest ago
/// (or never) each time — every millisecond while a few wait, less often
/// with many, at most [`DESCRIBED_PER_SECOND`] task descriptions a
/// second, so that polling does not become the load it measures. Asking
/// in turn, a task is asked about once it has waited as long as all those
/// ahead of it, by when most have stopped: about one description a task,
/// where asking about every task each time asked about most twice.
async fn poll(api: Arc<Api>, cluster: String, pending: Pending) {
    let mut asked = 0usize;
    loop {
        let every = Duration::from_secs_f64((asked as f64 / DESCRIBED_PER_SECOND).max(0.001));
        tokio::time::sleep(every).await;
        let arns = match pending.lock() {
            Ok(mut p) => p.next(super::DESCRIBE_BATCH),
            Err(_) => return,
        };
        asked = arns.len();
        if arns.is_empty() {
            continue;
        }
        let found = api
            .ecs("DescribeTasks", json!({"cluster": cluster, "tasks": arns}))
            .await;
        let seen = Instant::now();
        let stopped: HashMap<&str, &Value> = match &found {
            Ok(found) => found["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["lastStatus"] == "STOPPED")
                .filter_map(|t| Some((t["taskArn"].as_str()?, t)))
                .collect(),
            Err(_) => HashMap::new(),
        };
        let Ok(mut p) = pending.lock() else { return };
        p.polled.calls += 1;
        p.polled.tasks += arns.len();
        for arn in arns {
            match stopped.get(arn.as_str()) {
                Some(task) => {
                    if let Some(waiter) = p.remove(&arn) {
                        let _ = waiter.send((seen, (*task).clone()));
                    }
                }
                None => p.queue.push_back(arn),
            }
        }
    }
}

/// The phases of every task that ran, from its timestamps (seconds since
/// the epoch, to the microsecond) and its `skiff.guest.*` attributes.
fn measure(samples: Vec<Sample>, wall: Duration, described: Polled) -> Measured {
    let mut phases = [
        ("RunTask answered", "the API call, as the client timed it"),
        (
            "scheduled",
            "createdAt → pullStartedAt: stored, placed, handed to the agent",
        ),
        (
            "image",
            "pullStartedAt → pullStoppedAt: pull and compile, or find it warm",
        ),
        ("  resolve", "manifests and config, digests checked"),
        ("  download", "the layer, its digest checked as it arrives"),
        (
            "  store",
            "written to the image store (or read back and checked)",
        ),
        ("  compile", "compiled, or loaded from the compile cache"),
        (
            "provisioned",
            "pullStoppedAt → startedAt: volumes, logs, network",
        ),
        ("sandbox", "WASI context, store and limits"),
        ("instantiate", "the guest instantiated in a pool slot"),
        ("first instruction", "createdAt → the entry point called"),
        ("ran", "first instruction → the guest returned"),
        ("stopped", "the guest returned → stoppedAt"),
        ("recorded", "stoppedAt → the control plane recorded STOPPED"),
        (
            "task, created → stopped",
            "createdAt → stoppedAt, by the task's timestamps",
        ),
        (
            "client, RunTask → STOPPED seen",
            "as a polling client sees it (DescribeTasks on the 100 tasks asked about longest ago, every 1 ms, or with more waiting at most 16,000 descriptions a second)",
        ),
    ]
    .map(|(name, what)| Phase::new(name, what))
    .to_vec();
    let mut failures: HashMap<String, usize> = HashMap::new();
    let mut succeeded = 0;
    let mut pulled_bytes = 0;
    let mut code: HashMap<String, usize> = HashMap::new();
    for s in samples {
        let task = match s.task {
            Ok(t) if t["containers"][0]["exitCode"] == 0 => t,
            Ok(t) => {
                let why = t["stoppedReason"]
                    .as_str()
                    .or(t["containers"][0]["reason"].as_str())
                    .unwrap_or("exited non-zero")
                    .to_string();
                *failures.entry(why).or_default() += 1;
                continue;
            }
            Err(why) => {
                *failures.entry(why).or_default() += 1;
                continue;
            }
        };
        succeeded += 1;
        let at = |field: &str| task[field].as_f64();
        let text = |part: &str| {
            task["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["name"] == format!("skiff.guest.{part}"))
                .and_then(|a| a["value"].as_str())
        };
        let attr = |part: &str| text(part).and_then(|v| v.parse::<f64>().ok());
        let between = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some((b - a) * 1e6),
            _ => None,
        };
        pulled_bytes += attr("pullBytes").unwrap_or(0.0) as u64;
        *code
            .entry(text("compile").unwrap_or("unknown").to_string())
            .or_default() += 1;
        let entered = attr("firstInstructionAt");
        let exited = attr("exitedAt");
        let values = [
            Some(s.answered.duration_since(s.sent).as_secs_f64() * 1e6),
            between(at("createdAt"), at("pullStartedAt")),
            between(at("pullStartedAt"), at("pullStoppedAt")),
            attr("resolveMicros"),
            attr("downloadMicros"),
            attr("storeMicros"),
            attr("compileMicros"),
            between(at("pullStoppedAt"), at("startedAt")),
            attr("sandboxMicros"),
            attr("instantiateMicros"),
            between(at("createdAt"), entered),
            between(entered, exited),
            between(exited, at("stoppedAt")),
            between(at("stoppedAt"), recorded(&task)),
            between(at("createdAt"), at("stoppedAt")),
            Some(s.seen.duration_since(s.sent).as_secs_f64() * 1e6),
        ];
        for (phase, v) in phases.iter_mut().zip(values) {
            if let Some(v) = v {
                // Two clocks a microsecond apart can disagree by rounding.
                phase.micros.push(v.max(0.0));
            }
        }
    }
    let failures = report::by_count(failures);
    Measured {
        phases,
        succeeded,
        failures,
        wall,
        pulled_bytes,
        code: report::by_count(code),
        described,
    }
}

/// `skiff.stopRecordedAt` (not per container).
fn recorded(task: &Value) -> Option<f64> {
    task["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["name"] == "skiff.stopRecordedAt")?["value"]
        .as_str()?
        .parse()
        .ok()
}

/// The bench's figures as JSON.
pub fn json_of(m: &Measured) -> Value {
    let secs = m.wall.as_secs_f64();
    json!({
        "succeeded": m.succeeded,
        "failed": m.failures.iter().map(|(why, n)| json!({"reason": why, "count": n})).collect::<Vec<_>>(),
        "wallSeconds": secs,
        "tasksPerSecond": if secs > 0.0 { m.succeeded as f64 / secs } else { 0.0 },
        "pulledBytes": m.pulled_bytes,
        "codeFrom": m.code.iter().map(|(from, n)| (from.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "describeTasksCalls": m.described.calls,
        "tasksDescribed": m.described.tasks,
        "phases": report::json(&m.phases),
    })
}
