//! `skiff deploy` and `skiff scale`: register a task definition and roll
//! a service to it, or change how many tasks it runs, then follow the
//! rollout as ECS reports it.

use crate::api_client::{Api, Target};
use crate::ecs_cli::{block_on, short};
use clap::Args;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

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
    /// How its tasks launch: EC2 or FARGATE (default: the cluster's
    /// default capacity provider strategy, else EC2).
    #[arg(long, value_name = "TYPE", conflicts_with = "capacity_provider")]
    launch_type: Option<String>,
    /// A capacity provider to launch with, as `NAME[:WEIGHT[:BASE]]`
    /// (FARGATE, FARGATE_SPOT); repeat for a strategy of several.
    #[arg(long, value_name = "NAME[:WEIGHT[:BASE]]")]
    capacity_provider: Vec<String>,
    /// An awsvpc task's subnets (comma-separated; default: the default
    /// subnet, when the definition's networkMode is awsvpc).
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    subnets: Vec<String>,
    /// An awsvpc task's security groups, by id (comma-separated).
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    security_groups: Vec<String>,
    /// Give awsvpc tasks a public address: their ports on the machine's.
    #[arg(long)]
    assign_public_ip: bool,
    /// Register the service's tasks in a target group, as
    /// `TARGET_GROUP_ARN:CONTAINER:PORT`; repeatable.
    #[arg(long, value_name = "TG_ARN:CONTAINER:PORT")]
    load_balancer: Vec<String>,
}

/// `skiff scale SERVICE N`.
#[derive(Args, Debug)]
pub struct ScaleArgs {
    #[command(flatten)]
    target: Target,
    /// The service.
    #[arg(value_name = "SERVICE")]
    service: String,
    /// How many tasks it is to run.
    #[arg(value_name = "N")]
    count: u32,
    /// Give up waiting after this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Change the count, but do not wait for the tasks.
    #[arg(long)]
    no_wait: bool,
}

/// Is `given` (a request) already what `have` (as Describe* shows it)
/// says, member by member? Members `have` adds (ECS's defaults) are not
/// differences; tags are not compared.
fn already(given: &Value, have: &Value) -> bool {
    match (given, have) {
        (Value::Object(g), Value::Object(h)) => g
            .iter()
            .all(|(k, v)| k == "tags" || v.is_null() || h.get(k).is_some_and(|hv| already(v, hv))),
        (Value::Array(g), Value::Array(h)) => {
            g.len() == h.len() && g.iter().zip(h).all(|(a, b)| already(a, b))
        }
        // ECS answers numbers given as strings ("cpu": "256") as given.
        (a, b) => a == b,
    }
}

/// The launch and network members of a CreateService/UpdateService
/// request, from the flags.
fn launch_members(args: &DeployArgs, def: &Value) -> anyhow::Result<Value> {
    let mut m = json!({});
    if let Some(l) = &args.launch_type {
        m["launchType"] = json!(l);
    }
    if !args.capacity_provider.is_empty() {
        let mut strategy = Vec::new();
        for p in &args.capacity_provider {
            let mut parts = p.split(':');
            let name = parts.next().unwrap_or_default();
            let num = |s: Option<&str>, what: &str, default: u32| -> anyhow::Result<u32> {
                s.map_or(Ok(default), |v| {
                    v.parse().map_err(|_| {
                        anyhow::anyhow!("--capacity-provider {p:?}: {what} {v:?} is not a number")
                    })
                })
            };
            let weight = num(parts.next(), "weight", 1)?;
            let base = num(parts.next(), "base", 0)?;
            strategy.push(json!({"capacityProvider": name, "weight": weight, "base": base}));
        }
        m["capacityProviderStrategy"] = json!(strategy);
    }
    let awsvpc = def["networkMode"] == "awsvpc";
    if awsvpc {
        let subnets = if args.subnets.is_empty() {
            vec!["subnet-0000000000000000a".to_string()]
        } else {
            args.subnets.clone()
        };
        let mut vpc = json!({"subnets": subnets});
        if !args.security_groups.is_empty() {
            vpc["securityGroups"] = json!(args.security_groups);
        }
        vpc["assignPublicIp"] = json!(if args.assign_public_ip {
            "ENABLED"
        } else {
            "DISABLED"
        });
        m["networkConfiguration"] = json!({"awsvpcConfiguration": vpc});
    } else if !args.subnets.is_empty() || !args.security_groups.is_empty() || args.assign_public_ip
    {
        anyhow::bail!(
            "--subnets, --security-groups and --assign-public-ip are for networkMode awsvpc; this definition's is {}",
            def["networkMode"]
                .as_str()
                .unwrap_or("bridge (the default)")
        );
    }
    if !args.load_balancer.is_empty() {
        let mut lbs = Vec::new();
        for lb in &args.load_balancer {
            // The ARN has colons of its own: the last two fields are ours.
            let mut parts = lb.rsplitn(3, ':');
            let (Some(port), Some(container), Some(tg)) =
                (parts.next(), parts.next(), parts.next())
            else {
                anyhow::bail!("--load-balancer {lb:?}: expected TARGET_GROUP_ARN:CONTAINER:PORT");
            };
            let port: u16 = port
                .parse()
                .map_err(|_| anyhow::anyhow!("--load-balancer {lb:?}: {port:?} is not a port"))?;
            lbs.push(
                json!({"targetGroupArn": tg, "containerName": container, "containerPort": port}),
            );
        }
        m["loadBalancers"] = json!(lbs);
    }
    Ok(m)
}

/// The latest ACTIVE revision of `def`'s family, if it is `def` already.
async fn unchanged(api: &Api, def: &Value) -> Option<String> {
    let family = def["family"].as_str()?;
    let have = api
        .ecs("DescribeTaskDefinition", json!({"taskDefinition": family}))
        .await
        .ok()?;
    let td = &have["taskDefinition"];
    (td["status"] == "ACTIVE" && already(def, td))
        .then(|| td["taskDefinitionArn"].as_str().map(String::from))
        .flatten()
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
        let launch = launch_members(&args, &def)?;
        let td = match unchanged(&api, &def).await {
            Some(td) => {
                println!("{} is unchanged: no new revision", short(&td));
                td
            }
            None => {
                let registered = api.ecs("RegisterTaskDefinition", def).await?;
                let td = registered["taskDefinition"]["taskDefinitionArn"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                println!("registered {}", short(&td));
                td
            }
        };

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
                for (k, v) in launch.as_object().into_iter().flatten() {
                    // A service's launch type is fixed at creation (ECS's rule).
                    if k != "launchType" {
                        update[k] = v.clone();
                    }
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
                let mut create = json!({"cluster": cluster, "serviceName": args.service,
                                        "taskDefinition": td, "desiredCount": count});
                for (k, v) in launch.as_object().into_iter().flatten() {
                    create[k] = v.clone();
                }
                let v = api.ecs("CreateService", create).await?;
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
                    say!("error: deployment {ours} failed: {why}");
                    return Ok(1);
                }
                None => {
                    say!("error: deployment {ours} was replaced (by another deploy or a rollback)");
                    return Ok(1);
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                say!(
                    "error: gave up after {}: deployment {ours} is still in progress",
                    humantime::format_duration(args.timeout)
                );
                return Ok(1);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

pub fn scale(args: ScaleArgs) -> i32 {
    block_on(async move {
        let api = Api::new(&args.target.endpoint)?;
        let cluster = args.target.cluster.clone();
        let v = api
            .ecs(
                "UpdateService",
                json!({"cluster": cluster, "service": args.service, "desiredCount": args.count}),
            )
            .await?;
        println!(
            "service {} scaled to {} task(s)",
            v["service"]["serviceName"]
                .as_str()
                .unwrap_or(&args.service),
            args.count
        );
        if args.no_wait {
            return Ok(0);
        }
        let deadline = tokio::time::Instant::now() + args.timeout;
        let mut last = String::new();
        loop {
            let v = api
                .ecs(
                    "DescribeServices",
                    json!({"cluster": cluster, "services": [args.service]}),
                )
                .await?;
            let s = &v["services"][0];
            let (running, pending) = (&s["runningCount"], &s["pendingCount"]);
            let progress = format!(
                "{}: {running}/{} running, {pending} pending",
                args.service, args.count
            );
            if progress != last {
                println!("{progress}");
                last = progress;
            }
            if running == &json!(args.count) && pending == &json!(0) {
                return Ok(0);
            }
            if tokio::time::Instant::now() >= deadline {
                say!(
                    "error: gave up after {}: {} of {} tasks running",
                    humantime::format_duration(args.timeout),
                    running,
                    args.count
                );
                return Ok(1);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}
