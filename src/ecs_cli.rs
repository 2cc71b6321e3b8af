//! `skiff ps`, `skiff services`, `skiff logs` (and, in `ecs_deploy`,
//! `skiff deploy` and `skiff scale`): the ECS API
//! for people, as tables and progress lines. Every command is a client of
//! the API `skiff serve` runs, exactly like the AWS CLI.

use crate::api_client::{Api, CallError, Target};
use clap::Args;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
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
    /// Only lines from this long ago on (`10m`, `2h`), or from this time
    /// on (RFC 3339: `2026-12-06T14:00:00Z`).
    #[arg(long, value_name = "WHEN", value_parser = parse_since)]
    since: Option<i64>,
    /// Only the last N lines (then, with --follow, every new one).
    #[arg(long, value_name = "N")]
    tail: Option<usize>,
    /// Start each line with the time it was written (RFC 3339).
    #[arg(short, long)]
    timestamps: bool,
}

/// `--since`: a duration back from now, or a time; in ms since the epoch.
fn parse_since(s: &str) -> Result<i64, String> {
    let now = std::time::SystemTime::now();
    let at = match humantime::parse_duration(s) {
        Ok(d) => now
            .checked_sub(d)
            .ok_or_else(|| format!("{s:?} reaches before 1970"))?,
        Err(_) => humantime::parse_rfc3339_weak(s).map_err(|_| {
            format!("{s:?} is neither a duration (10m, 2h) nor a time (2026-12-06T14:00:00Z)")
        })?,
    };
    Ok(at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64))
}

/// Runs an async command on a small runtime; errors print on one line.
pub(crate) fn block_on<F: std::future::Future<Output = anyhow::Result<i32>>>(f: F) -> i32 {
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
            say!("error: cannot start a runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(f) {
        Ok(code) => code,
        Err(e) => {
            say!("error: {e:#}");
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
pub(crate) fn short(arn: &str) -> &str {
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

/// A task's own address: its ENI's (awsvpc), else its first container's.
fn address(t: &Value) -> String {
    let eni = t["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["type"] == "ElasticNetworkInterface")
        .flat_map(|a| a["details"].as_array().into_iter().flatten())
        .find(|d| d["name"] == "privateIPv4Address")
        .and_then(|d| d["value"].as_str());
    let container = t["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["networkInterfaces"].as_array().into_iter().flatten())
        .find_map(|n| n["privateIpv4Address"].as_str());
    eni.or(container).unwrap_or("-").to_string()
}

/// A task's ports published on its machine: `IP:HOST->CONTAINER/PROTO`.
fn ports(t: &Value) -> String {
    let all: Vec<String> = t["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["networkBindings"].as_array().into_iter().flatten())
        .map(|b| {
            format!(
                "{}:{}->{}/{}",
                b["bindIP"].as_str().unwrap_or("?"),
                b["hostPort"],
                b["containerPort"],
                b["protocol"].as_str().unwrap_or("tcp")
            )
        })
        .collect();
    if all.is_empty() {
        "-".into()
    } else {
        all.join(",")
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
                    address(t),
                    ports(t),
                    s("group"),
                ]
            })
            .collect();
        table(
            &[
                "TASK",
                "DEFINITION",
                "STATUS",
                "HEALTH",
                "STARTED",
                "ADDRESS",
                "PORTS",
                "GROUP",
            ],
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
                    say!(
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
    since: Option<i64>,
) -> Result<(Vec<(i64, String)>, Option<String>), CallError> {
    let mut events = Vec::new();
    let mut token = token.map(String::from);
    loop {
        let mut body =
            json!({"logGroupName": s.group, "logStreamName": s.name, "startFromHead": true});
        if let Some(since) = since {
            body["startTime"] = json!(since);
        }
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

/// The one task of the cluster whose id starts with `prefix` (at least
/// four characters).
async fn by_prefix(api: &Api, cluster: &str, prefix: &str) -> anyhow::Result<String> {
    let id = short(prefix);
    if id.len() < 4 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        anyhow::bail!("no task or service {prefix:?} in cluster {cluster}");
    }
    let mut found = Vec::new();
    for status in ["RUNNING", "STOPPED"] {
        let arns = api
            .ecs_all(
                "ListTasks",
                json!({"cluster": cluster, "desiredStatus": status}),
                "taskArns",
            )
            .await?;
        found.extend(
            arns.into_iter()
                .filter_map(|a| a.as_str().map(String::from))
                .filter(|a| short(a).starts_with(id)),
        );
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => anyhow::bail!("no task or service {prefix:?} in cluster {cluster}"),
        many => anyhow::bail!(
            "{prefix:?} is the start of {} tasks' ids in cluster {cluster}: give more of it",
            many.len()
        ),
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
                // The short ids `skiff logs` and `skiff ps` print.
                None => Some(json!(by_prefix(&api, &cluster, &args.what).await?)),
            }
        };
        let mut warned = HashSet::new();
        let mut defs = BTreeMap::new();
        // --tail cuts the first batch only; later ones are new lines.
        let mut tail = args.tail;
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
                let (events, next) = read_stream(&api, s, token.as_deref(), args.since).await?;
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
            if let Some(n) = tail.take() {
                batch.drain(..batch.len().saturating_sub(n));
            }
            for (ts, line) in batch {
                if args.timestamps {
                    let at = std::time::UNIX_EPOCH + Duration::from_millis(ts.max(0) as u64);
                    println!("{} {line}", humantime::format_rfc3339_millis(at));
                } else {
                    println!("{line}");
                }
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
