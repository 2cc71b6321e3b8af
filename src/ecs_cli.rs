//! `skiff ps`, `skiff services`, `skiff logs`, `skiff deploy`: the ECS API
//! for people, as tables and progress lines. Every command is a client of
//! the API `skiff serve` runs, exactly like the AWS CLI.

use crate::api_client::{Api, CallError, Target};
use clap::Args;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct PsArgs {
    #[command(flatten)]
    target: Target,
    /// Include stopped tasks (kept for an hour after they stop).
    #[arg(short, long)]
    all: bool,
    /// Only this service's tasks.
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
}

#[derive(Args, Debug)]
pub struct ServicesArgs {
    #[command(flatten)]
    target: Target,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    #[command(flatten)]
    target: Target,
    /// A task (id or ARN) or a service (name or ARN).
    #[arg(value_name = "TASK|SERVICE")]
    what: String,
    /// Keep printing new lines as they come (a task: until it stops).
    #[arg(short, long)]
    follow: bool,
    /// Only this container's lines.
    #[arg(long, value_name = "NAME")]
    container: Option<String>,
}

#[derive(Args, Debug)]
pub struct DeployArgs {
    #[command(flatten)]
    target: Target,
    /// A task definition as `aws ecs register-task-definition
    /// --cli-input-json` takes it (or as describe-task-definition prints it).
    #[arg(value_name = "TASKDEF.json")]
    file: PathBuf,
    /// The service to create or update.
    #[arg(long, value_name = "NAME")]
    service: String,
    /// How many tasks the service keeps running (a new service: 1 unless
    /// given; an existing one keeps its count unless given).
    #[arg(long, value_name = "N")]
    count: Option<u32>,
    /// Give up waiting for the deployment after this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Register and update, but do not wait for the rollout.
    #[arg(long)]
    no_wait: bool,
}

/// Runs an async command on a small runtime; errors print on one line.
fn block_on<F: std::future::Future<Output = anyhow::Result<i32>>>(f: F) -> i32 {
    // These commands only print: `skiff logs -f web | head` should end
    // quietly when `head` does, as other Unix tools do, not panic on a
    // closed stdout.
    // SAFETY: restoring a signal's default disposition; no handler runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start a runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(f) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// Prints rows as left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// `arn:...:task-definition/web:3` → `web:3`; `arn:...:task/c/ID` → `ID`.
fn short(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// How long ago an epoch-seconds timestamp was, briefly.
fn ago(at: Option<f64>) -> String {
    let Some(at) = at else {
        return "-".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(at);
    let s = (now - at).max(0.0) as u64;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

/// Describes tasks by ARN, 100 at a time.
async fn describe_tasks(api: &Api, cluster: &str, arns: &[Value]) -> Result<Vec<Value>, CallError> {
    let mut out = Vec::new();
    for chunk in arns.chunks(100) {
        let v = api
            .ecs("DescribeTasks", json!({"cluster": cluster, "tasks": chunk}))
            .await?;
        out.extend(v["tasks"].as_array().cloned().unwrap_or_default());
    }
    Ok(out)
}

/// The tasks of the cluster (or a service), running and, with `all`,
/// stopped; oldest first.
async fn tasks(
    api: &Api,
    cluster: &str,
    service: Option<&str>,
    all: bool,
) -> Result<Vec<Value>, CallError> {
    let mut arns = Vec::new();
    let statuses: &[&str] = if all {
        &["RUNNING", "STOPPED"]
    } else {
        &["RUNNING"]
    };
    for status in statuses {
        let mut body = json!({"cluster": cluster, "desiredStatus": status});
        if let Some(s) = service {
            body["serviceName"] = json!(s);
        }
        arns.extend(api.ecs_all("ListTasks", body, "taskArns").await?);
    }
    let mut tasks = describe_tasks(api, cluster, &arns).await?;
    tasks.sort_by(|a, b| {
        a["createdAt"]
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&b["createdAt"].as_f64().unwrap_or(0.0))
    });
    Ok(tasks)
}

pub fn ps(args: PsArgs) -> i32 {
    block_on(async move {
        let api = Api::new(&args.target.endpoint)?;
        let cluster = &args.target.cluster;
        let tasks = tasks(&api, cluster, args.service.as_deref(), args.all).await?;
        let rows: Vec<Vec<String>> = tasks
            .iter()
            .map(|t| {
                let s = |k: &str| t[k].as_str().unwrap_or("-").to_string();
                let mut status = s("lastStatus");
                if t["desiredStatus"] == "STOPPED" && status != "STOPPED" {
                    status = format!("{status}→STOPPED");
                }
                if status == "STOPPED" {
                    let exits: Vec<String> = t["containers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|c| c["exitCode"].as_i64())
                        .map(|c| c.to_string())
                        .collect();
                    if !exits.is_empty() {
                        status = format!("STOPPED (exit {})", exits.join(","));
                    }
                }
                vec![
                    short(&s("taskArn")).to_string(),
                    short(&s("taskDefinitionArn")).to_string(),
                    status,
                    t["healthStatus"].as_str().unwrap_or("-").to_string(),
                    ago(t["startedAt"].as_f64().or(t["createdAt"].as_f64())),
                    s("group"),
                ]
            })
            .collect();
        table(
            &["TASK", "DEFINITION", "STATUS", "HEALTH", "STARTED", "GROUP"],
            &rows,
        );
        Ok(0)
    })
}

pub fn services(args: ServicesArgs) -> i32 {
    block_on(async move {
        let api = Api::new(&args.target.endpoint)?;
        let cluster = &args.target.cluster;
        let arns = api
            .ecs_all("ListServices", json!({"cluster": cluster}), "serviceArns")
            .await?;
        let mut rows = Vec::new();
        for chunk in arns.chunks(10) {
            let v = api
                .ecs(
                    "DescribeServices",
                    json!({"cluster": cluster, "services": chunk}),
                )
                .await?;
            for s in v["services"].as_array().into_iter().flatten() {
                let rollout = s["deployments"]
                    .as_array()
                    .and_then(|d| d.first())
                    .and_then(|d| d["rolloutState"].as_str())
                    .unwrap_or("-");
                let n = |k: &str| s[k].as_u64().unwrap_or(0).to_string();
                rows.push(vec![
                    s["serviceName"].as_str().unwrap_or("-").to_string(),
                    s["status"].as_str().unwrap_or("-").to_string(),
                    format!("{}/{}", n("runningCount"), n("desiredCount")),
                    n("pendingCount"),
                    short(s["taskDefinition"].as_str().unwrap_or("-")).to_string(),
                    s["deployments"].as_array().map_or(0, Vec::len).to_string(),
                    rollout.to_string(),
                ]);
            }
        }
        table(
            &[
                "SERVICE",
                "STATUS",
                "RUNNING",
                "PENDING",
                "DEFINITION",
                "DEPLOYMENTS",
                "ROLLOUT",
            ],
            &rows,
        );
        Ok(0)
    })
}

/// One awslogs stream to read: whose it is and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Stream {
    task: String,
    container: String,
    group: String,
    name: String,
}

/// The streams of `tasks`' containers with awslogs; containers without it
/// are reported once on stderr (their output is not kept).
async fn streams(
    api: &Api,
    tasks: &[Value],
    only: Option<&str>,
    warned: &mut HashSet<String>,
    defs: &mut BTreeMap<String, Value>,
) -> Result<Vec<Stream>, CallError> {
    let mut out = Vec::new();
    for t in tasks {
        let td_arn = t["taskDefinitionArn"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !defs.contains_key(&td_arn) {
            let td = api
                .ecs("DescribeTaskDefinition", json!({"taskDefinition": td_arn}))
                .await?;
            defs.insert(td_arn.clone(), td["taskDefinition"].clone());
        }
        let task_id = short(t["taskArn"].as_str().unwrap_or_default()).to_string();
        for c in defs[&td_arn]["containerDefinitions"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = c["name"].as_str().unwrap_or_default();
            if only.is_some_and(|o| o != name) {
                continue;
            }
            let log = &c["logConfiguration"];
            if log["logDriver"] != "awslogs" {
                if warned.insert(format!("{td_arn}/{name}")) {
                    eprintln!(
                        "skiff: container {name} of {} has no awslogs logConfiguration: its output is not kept",
                        short(&td_arn)
                    );
                }
                continue;
            }
            let opts = &log["options"];
            let group = opts["awslogs-group"].as_str().unwrap_or_default();
            let stream = match opts["awslogs-stream-prefix"].as_str() {
                Some(p) if !p.is_empty() => format!("{p}/{name}/{task_id}"),
                _ => format!("{name}/{task_id}"),
            };
            out.push(Stream {
                task: task_id.clone(),
                container: name.to_string(),
                group: group.to_string(),
                name: stream,
            });
        }
    }
    Ok(out)
}

/// New events of one stream since `token` (from the start when `None`):
/// (timestamp, message) and the token to continue from.
async fn read_stream(
    api: &Api,
    s: &Stream,
    token: Option<&str>,
) -> Result<(Vec<(i64, String)>, Option<String>), CallError> {
    let mut events = Vec::new();
    let mut token = token.map(String::from);
    loop {
        let mut body =
            json!({"logGroupName": s.group, "logStreamName": s.name, "startFromHead": true});
        if let Some(t) = &token {
            body["nextToken"] = json!(t);
        }
        let v = match api.logs("GetLogEvents", body).await {
            Ok(v) => v,
            // Not created yet (the task has not started): nothing to read.
            Err(CallError::Api { kind, .. }) if kind == "ResourceNotFoundException" => {
                return Ok((events, token));
            }
            Err(e) => return Err(e),
        };
        let page: Vec<(i64, String)> = v["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["timestamp"].as_i64().unwrap_or(0),
                    e["message"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let next = v["nextForwardToken"].as_str().map(String::from);
        let done = page.is_empty() || next == token;
        events.extend(page);
        token = next;
        if done {
            return Ok((events, token));
        }
    }
}

pub fn logs(args: LogsArgs) -> i32 {
    block_on(async move {
        let api = Api::new(&args.target.endpoint)?;
        let cluster = args.target.cluster.clone();
        // A service by that name, else a task.
        let svc = api
            .ecs(
                "DescribeServices",
                json!({"cluster": cluster, "services": [args.what]}),
            )
            .await?;
        let service = svc["services"]
            .as_array()
            .and_then(|s| s.first())
            .and_then(|s| s["serviceName"].as_str())
            .map(String::from);
        let task_arn = if service.is_some() {
            None
        } else {
            let t = api
                .ecs(
                    "DescribeTasks",
                    json!({"cluster": cluster, "tasks": [args.what]}),
                )
                .await?;
            match t["tasks"].as_array().and_then(|t| t.first()) {
                Some(t) => Some(json!(t["taskArn"])),
                None => anyhow::bail!("no task or service {:?} in cluster {cluster}", args.what),
            }
        };
        let mut warned = HashSet::new();
        let mut defs = BTreeMap::new();
        let mut tokens: BTreeMap<Stream, Option<String>> = BTreeMap::new();
        // Tasks read to their end after they stopped: not read again.
        let mut finished: HashSet<String> = HashSet::new();
        loop {
            let current = match (&service, &task_arn) {
                (Some(s), _) => tasks(&api, &cluster, Some(s), true).await?,
                (None, Some(arn)) => {
                    describe_tasks(&api, &cluster, std::slice::from_ref(arn)).await?
                }
                (None, None) => Vec::new(),
            };
            let stopped: HashSet<String> = current
                .iter()
                .filter(|t| t["lastStatus"] == "STOPPED")
                .map(|t| short(t["taskArn"].as_str().unwrap_or_default()).to_string())
                .collect();
            let open: Vec<Value> = current
                .iter()
                .filter(|t| !finished.contains(short(t["taskArn"].as_str().unwrap_or_default())))
                .cloned()
                .collect();
            for s in streams(
                &api,
                &open,
                args.container.as_deref(),
                &mut warned,
                &mut defs,
            )
            .await?
            {
                tokens.entry(s).or_insert(None);
            }
            let multi_container = tokens
                .keys()
                .map(|s| &s.container)
                .collect::<HashSet<_>>()
                .len()
                > 1;
            let mut batch: Vec<(i64, String)> = Vec::new();
            for (s, token) in tokens.iter_mut() {
                let (events, next) = read_stream(&api, s, token.as_deref()).await?;
                *token = next;
                let who = match (service.is_some(), multi_container) {
                    (true, true) => {
                        format!("{} {} | ", &s.task[..8.min(s.task.len())], s.container)
                    }
                    (true, false) => format!("{} | ", &s.task[..8.min(s.task.len())]),
                    (false, true) => format!("{} | ", s.container),
                    (false, false) => String::new(),
                };
                batch.extend(events.into_iter().map(|(ts, m)| (ts, format!("{who}{m}"))));
            }
            batch.sort_by_key(|(ts, _)| *ts);
            for (_, line) in batch {
                println!("{line}");
            }
            // A stopped task's streams were just read to their end.
            tokens.retain(|s, _| !stopped.contains(&s.task));
            finished.extend(stopped);
            if !args.follow {
                return Ok(0);
            }
            // A task's logs end when it has stopped and been read once more.
            if service.is_none() && current.iter().all(|t| t["lastStatus"] == "STOPPED") {
                return Ok(0);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

pub fn deploy(args: DeployArgs) -> i32 {
    block_on(async move {
        let api = Api::new(&args.target.endpoint)?;
        let cluster = args.target.cluster.clone();
        let text = std::fs::read_to_string(&args.file)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.file.display()))?;
        let mut def: Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", args.file.display()))?;
        // describe-task-definition's output works too.
        if def["taskDefinition"].is_object() {
            def = def["taskDefinition"].take();
        }
        if !def.is_object() {
            anyhow::bail!(
                "{} must hold a task definition (a JSON object)",
                args.file.display()
            );
        }
        let registered = api.ecs("RegisterTaskDefinition", def).await?;
        let td = registered["taskDefinition"]["taskDefinitionArn"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        println!("registered {}", short(&td));

        let existing = api
            .ecs(
                "DescribeServices",
                json!({"cluster": cluster, "services": [args.service]}),
            )
            .await?;
        let status = existing["services"]
            .as_array()
            .and_then(|s| s.first())
            .and_then(|s| s["status"].as_str())
            .unwrap_or("MISSING")
            .to_string();
        let answer = match status.as_str() {
            "ACTIVE" => {
                let mut update =
                    json!({"cluster": cluster, "service": args.service, "taskDefinition": td});
                if let Some(n) = args.count {
                    update["desiredCount"] = json!(n);
                }
                let v = api.ecs("UpdateService", update).await?;
                println!(
                    "updating service {} to {}, {} task(s)",
                    args.service,
                    short(&td),
                    v["service"]["desiredCount"]
                );
                v
            }
            "DRAINING" => anyhow::bail!(
                "service {} is being deleted; deploy again once it is INACTIVE",
                args.service
            ),
            _ => {
                let count = args.count.unwrap_or(1);
                let v = api
                    .ecs(
                        "CreateService",
                        json!({"cluster": cluster, "serviceName": args.service,
                               "taskDefinition": td, "desiredCount": count}),
                    )
                    .await?;
                println!(
                    "created service {} with {}, {count} task(s)",
                    args.service,
                    short(&td),
                );
                v
            }
        };
        if args.no_wait {
            return Ok(0);
        }
        let ours = answer["service"]["deployments"][0]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let deadline = tokio::time::Instant::now() + args.timeout;
        let mut said: HashSet<String> = answer["service"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["id"].as_str().map(String::from))
            .collect();
        let mut last = String::new();
        loop {
            let v = api
                .ecs(
                    "DescribeServices",
                    json!({"cluster": cluster, "services": [args.service]}),
                )
                .await?;
            let s = &v["services"][0];
            let mut events: Vec<&Value> = s["events"].as_array().into_iter().flatten().collect();
            events.reverse();
            for e in events {
                if let Some(id) = e["id"].as_str()
                    && said.insert(id.to_string())
                {
                    println!("  {}", e["message"].as_str().unwrap_or_default());
                }
            }
            let deployments = s["deployments"].as_array().cloned().unwrap_or_default();
            let mine = deployments.iter().find(|d| d["id"] == ours.as_str());
            let progress = format!(
                "{}: {}/{} running, {} pending",
                args.service, s["runningCount"], s["desiredCount"], s["pendingCount"]
            );
            if progress != last {
                println!("{progress}");
                last = progress;
            }
            match mine.and_then(|d| d["rolloutState"].as_str()) {
                Some("COMPLETED") if deployments.len() == 1 => {
                    println!("deployment {ours} completed: {} is stable", args.service);
                    return Ok(0);
                }
                Some("FAILED") => {
                    let why = mine
                        .and_then(|d| d["rolloutStateReason"].as_str())
                        .unwrap_or("");
                    eprintln!("error: deployment {ours} failed: {why}");
                    return Ok(1);
                }
                None => {
                    eprintln!(
                        "error: deployment {ours} was replaced (by another deploy or a rollback)"
                    );
                    return Ok(1);
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                eprintln!(
                    "error: gave up after {}: deployment {ours} is still in progress",
                    humantime::format_duration(args.timeout)
                );
                return Ok(1);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}
