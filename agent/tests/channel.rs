//! The agent through its channel alone, as a control plane (here or on
//! another machine) sees it: task payloads in, ECS-shaped state changes
//! out. A real registry (skiff's, on loopback) serves the images and the
//! real runtime runs them; the log destination records what it is sent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use skiff_agent::{Agent, AgentConfig};
use skiff_channel::fabric::Fabric;
use skiff_channel::link::{ControlEnd, in_process};
use skiff_channel::logs::{LogDestination, OpenStreamError};
use skiff_channel::messages::{
    AttachmentStatus, ContainerStatus, FromAgent, StartTask, TaskStatus, ToAgent,
};
use skiff_channel::task::Task;
use skiff_channel::taskdef::TaskDefinition;
use skiff_registry::images::{ImageStore, Puller};
use skiff_registry::remote::{self, RemoteOptions};
use skiff_registry::{Registry, RegistryConfig};
use skiff_runtime::{Runtime, RuntimeConfig};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The log events each stream was sent.
#[derive(Default)]
struct Recorded(Mutex<Vec<(String, String)>>);

impl LogDestination for Recorded {
    fn open_stream(&self, group: &str, _: &str, create: bool) -> Result<(), OpenStreamError> {
        if group == "/missing" && !create {
            return Err(OpenStreamError::NoSuchGroup(group.into()));
        }
        Ok(())
    }
    fn put_events(&self, _: &str, stream: &str, events: &[(i64, String)]) -> Result<(), String> {
        let mut r = self.0.lock().unwrap();
        r.extend(events.iter().map(|(_, m)| (stream.to_string(), m.clone())));
        Ok(())
    }
}

/// A registry on loopback with hello and sleeper pushed, an agent with its
/// own data dir, and the control plane's end of its channel.
struct Bench {
    _dir: tempfile::TempDir,
    registry: String,
    logs: Arc<Recorded>,
    control: ControlEnd,
}

async fn bench() -> Bench {
    bench_with(|_, _| {}).await
}

/// [`bench`], with the agent's config and its puller's options changed.
async fn bench_with(change: impl FnOnce(&mut AgentConfig, &mut RemoteOptions)) -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(RegistryConfig::new(dir.path().join("registry"))).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { registry.serve(listener, std::future::pending()).await });
    for (name, wasm) in [
        ("hello", wasm_apps::HELLO_P1),
        ("sleeper", wasm_apps::SLEEPER_P1),
    ] {
        let bytes = std::fs::read(wasm).unwrap();
        remote::push(
            &format!("{addr}/{name}:v1"),
            &bytes,
            &RemoteOptions::default(),
        )
        .await
        .unwrap();
    }
    let runtime = Runtime::new(RuntimeConfig::default().with_data_dir(dir.path())).unwrap();
    let logs = Arc::new(Recorded::default());
    let (control, agent_end) = in_process();
    let mut config = AgentConfig::new(dir.path().join("agent"));
    config.default_registry = addr.clone();
    let mut options = RemoteOptions::default();
    change(&mut config, &mut options);
    let puller = Arc::new(Puller::new(
        ImageStore::new(dir.path().join("images")),
        options,
    ));
    let destination: Arc<dyn LogDestination> = Arc::clone(&logs) as _;
    Agent::start(
        config,
        runtime,
        puller,
        Arc::new(Fabric::default()),
        destination,
        agent_end,
    )
    .unwrap();
    Bench {
        _dir: dir,
        registry: addr,
        logs,
        control,
    }
}

fn payload(id: &str, containers: serde_json::Value, mode: &str) -> StartTask {
    let names: Vec<String> = containers
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    let task: Task = serde_json::from_value(json!({
        "taskArn": format!("arn:aws:ecs:eu-west-1:000000000000:task/edge/{id}"),
        "clusterArn": "arn:aws:ecs:eu-west-1:000000000000:cluster/edge",
        "taskDefinitionArn": "arn:aws:ecs:eu-west-1:000000000000:task-definition/t:1",
        "overrides": {}, "lastStatus": "PROVISIONING", "desiredStatus": "RUNNING",
        "cpu": "256", "memory": "64", "launchType": "EC2", "version": 1, "createdAt": 1.0,
        "containers": names.iter().map(|n| json!({
            "containerArn": format!("c/{n}"), "taskArn": "t", "name": n, "image": "x",
            "lastStatus": "PENDING", "cpu": "0",
        })).collect::<Vec<_>>(),
        "attachments": if mode == "awsvpc" {
            json!([{"id": "eni-attach-1", "type": "ElasticNetworkInterface", "status": "PRECREATED", "details": []}])
        } else { json!([]) },
        "networkConfiguration": if mode == "awsvpc" {
            json!({"awsvpcConfiguration": {"subnets": ["subnet-1"], "securityGroups": ["sg-1"]}})
        } else { json!(null) },
    }))
    .unwrap();
    let task_definition: TaskDefinition = serde_json::from_value(json!({
        "taskDefinitionArn": "arn:aws:ecs:eu-west-1:000000000000:task-definition/t:1",
        "family": "t", "revision": 1, "status": "ACTIVE", "networkMode": mode,
        "containerDefinitions": containers, "volumes": [], "requiresAttributes": [],
        "placementConstraints": [], "compatibilities": ["EC2"], "registeredAt": 1.0,
    }))
    .unwrap();
    StartTask {
        task,
        task_definition,
    }
}

/// Sends the agent a task to start.
fn send_start(b: &Bench, start: StartTask) {
    b.control
        .to_agent
        .send(ToAgent::StartTask(Box::new(start)))
        .unwrap();
}

/// Every change the agent sends until the task is STOPPED.
async fn until_stopped(control: &mut ControlEnd) -> Vec<FromAgent> {
    let mut seen = Vec::new();
    loop {
        let change = tokio::time::timeout(Duration::from_secs(60), control.from_agent.recv())
            .await
            .expect("the agent reports within a minute")
            .expect("the channel stays open");
        let stopped = matches!(&change, FromAgent::TaskStateChange(c) if c.status == Some(TaskStatus::Stopped));
        seen.push(change);
        if stopped {
            return seen;
        }
    }
}

fn task_statuses(changes: &[FromAgent]) -> Vec<TaskStatus> {
    changes
        .iter()
        .filter_map(|c| match c {
            FromAgent::TaskStateChange(t) => t.status,
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_payload_runs_and_every_state_change_comes_back_in_ecs_shapes() {
    let mut b = bench().await;
    let start = payload(
        "t1",
        json!([{"name": "app", "image": "hello:v1", "cpu": 0, "memory": 32, "essential": true,
            "environment": [{"name": "NAME", "value": "edge"}],
            "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/ecs/t", "awslogs-stream-prefix": "p"}}}]),
        "none",
    );
    send_start(&b, start.clone());
    let changes = until_stopped(&mut b.control).await;

    // Every change names its cluster and task.
    for c in &changes {
        assert_eq!(c.task_arn(), start.task.task_arn);
    }
    assert_eq!(
        task_statuses(&changes),
        [
            TaskStatus::Pending,
            TaskStatus::Activating,
            TaskStatus::Running,
            TaskStatus::Deactivating,
            TaskStatus::Stopping,
            TaskStatus::Deprovisioning,
            TaskStatus::Stopped,
        ]
    );
    // The guest's start is reported on its own when it begins to run, or
    // with its exit if it has already ended by then: either way, once.
    let container: Vec<(Option<ContainerStatus>, Option<i32>)> = changes
        .iter()
        .filter_map(|c| match c {
            FromAgent::ContainerStateChange(c) if c.change.status.is_some() => {
                Some((c.change.status, c.change.exit_code))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        container,
        [
            (Some(ContainerStatus::Running), None),
            (Some(ContainerStatus::Stopped), Some(0))
        ]
    );
    let mut phases = skiff_channel::task::ContainerPhases::default();
    for c in &changes {
        if let FromAgent::ContainerStateChange(c) = c
            && let Some(p) = &c.change.phases
        {
            assert!(
                c.change.status.is_some() || p.first_instruction_at.is_some(),
                "{c:?}"
            );
            phases.merge(p.clone());
        }
    }
    assert!(phases.first_instruction_at.is_some(), "{phases:?}");
    assert!(phases.sandbox_micros.is_some(), "{phases:?}");
    assert!(phases.instantiate_micros.is_some(), "{phases:?}");
    assert!(
        phases.exited_at >= phases.first_instruction_at,
        "{phases:?}"
    );
    let FromAgent::TaskStateChange(last) = changes.last().unwrap() else {
        unreachable!()
    };
    assert_eq!(last.stop_code.as_deref(), Some("EssentialContainerExited"));
    assert_eq!(
        last.reason.as_deref(),
        Some("Essential container in task exited")
    );
    // The image's digest was reported at ACTIVATING; the output reached the
    // log destination line by line, in the task's stream.
    assert!(changes.iter().any(|c| matches!(c,
        FromAgent::TaskStateChange(t) if t.containers.iter().any(|c| c.image_digest.as_deref().is_some_and(|d| d.starts_with("sha256:"))))));
    let logs = b.logs.0.lock().unwrap().clone();
    assert!(
        logs.contains(&("p/app/t1".into(), "Hello, edge!".into())),
        "{logs:?}"
    );
    assert!(!b.registry.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_payload_sent_again_after_the_task_ended_does_not_run_it_twice() {
    let mut b = bench().await;
    let hello = |id: &str| {
        payload(
            id,
            json!([{"name": "app", "image": "hello:v1", "cpu": 0, "memory": 32, "essential": true}]),
            "none",
        )
    };
    send_start(&b, hello("once"));
    until_stopped(&mut b.control).await;
    // The same task again (a retried or replayed message), then another:
    // messages are taken in order, so the repeat would have begun first.
    send_start(&b, hello("once"));
    send_start(&b, hello("next"));
    let changes = until_stopped(&mut b.control).await;
    let arns: std::collections::BTreeSet<&str> = changes.iter().map(|c| c.task_arn()).collect();
    assert_eq!(
        arns,
        std::collections::BTreeSet::from([hello("next").task.task_arn.as_str()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_stops_the_task_and_its_network_interface_is_reported_both_ways() {
    let mut b = bench().await;
    let start = payload(
        "t2",
        json!([{"name": "s", "image": "sleeper:v1", "cpu": 0, "memory": 32, "essential": true,
            "command": ["--until-stdin-eof"]}]),
        "awsvpc",
    );
    // The same payload twice runs one task.
    for _ in 0..2 {
        send_start(&b, start.clone());
    }
    // Wait until it runs, then stop it.
    let mut before = Vec::new();
    loop {
        let c = b.control.from_agent.recv().await.unwrap();
        let running =
            matches!(&c, FromAgent::TaskStateChange(t) if t.status == Some(TaskStatus::Running));
        before.push(c);
        if running {
            break;
        }
    }
    b.control
        .to_agent
        .send(ToAgent::StopTask {
            task_arn: start.task.task_arn.clone(),
        })
        .unwrap();
    let after = until_stopped(&mut b.control).await;
    let all: Vec<FromAgent> = before.into_iter().chain(after).collect();
    assert_eq!(
        task_statuses(&all)
            .iter()
            .filter(|s| **s == TaskStatus::Running)
            .count(),
        1,
        "one run"
    );
    let FromAgent::TaskStateChange(last) = all.last().unwrap() else {
        unreachable!()
    };
    // A stop asked for: the agent sets no stop code of its own.
    assert_eq!(last.stop_code, None);
    let attachments: Vec<(AttachmentStatus, bool)> = all
        .iter()
        .filter_map(|c| match c {
            FromAgent::AttachmentStateChanges(a) => Some(a.attachments.clone()),
            _ => None,
        })
        .flatten()
        .map(|a| {
            assert!(
                a.attachment_arn.ends_with(":attachment/eni-attach-1"),
                "{}",
                a.attachment_arn
            );
            (a.status, a.private_ipv4_address.is_some())
        })
        .collect();
    assert_eq!(
        attachments,
        [
            (AttachmentStatus::Attached, true),
            (AttachmentStatus::Deleted, false)
        ]
    );
    // The container exited cleanly when its stdin closed.
    assert!(all.iter().any(|c| matches!(c,
        FromAgent::ContainerStateChange(c) if c.change.status == Some(ContainerStatus::Stopped) && c.change.exit_code == Some(0))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_cannot_start_says_why() {
    let mut b = bench().await;
    let start = payload(
        "t3",
        json!([{"name": "a", "image": "nowhere:v1", "cpu": 0, "memory": 32, "essential": true}]),
        "none",
    );
    send_start(&b, start);
    let changes = until_stopped(&mut b.control).await;
    assert_eq!(
        task_statuses(&changes),
        [TaskStatus::Pending, TaskStatus::Stopped]
    );
    let FromAgent::TaskStateChange(last) = changes.last().unwrap() else {
        unreachable!()
    };
    assert_eq!(last.stop_code.as_deref(), Some("TaskFailedToStart"));
    // ECS's error, the image, and what the registry said, in its words.
    let reason = last.reason.as_deref().unwrap_or_default();
    assert!(
        reason.starts_with("CannotPullContainerError: ")
            && reason.ends_with(
                "/nowhere:v1: the registry answered NAME_UNKNOWN: repository nowhere is not known"
            ),
        "{reason}"
    );
    // And a log group that is not there stops a task before it runs.
    let start = payload(
        "t4",
        json!([{"name": "a", "image": "hello:v1", "cpu": 0, "memory": 32, "essential": true,
            "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/missing"}}}]),
        "none",
    );
    send_start(&b, start);
    let changes = until_stopped(&mut b.control).await;
    let FromAgent::TaskStateChange(last) = changes.last().unwrap() else {
        unreachable!()
    };
    assert_eq!(
        last.reason.as_deref(),
        Some(
            "CannotStartContainerError: log group /missing does not exist (create it, or set awslogs-create-group to true)"
        )
    );
}

/// A registry that accepts connections and never answers, until the test
/// ends: its address.
async fn silent_registry() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    addr
}

fn last_reason(changes: &[FromAgent]) -> String {
    let FromAgent::TaskStateChange(last) = changes.last().unwrap() else {
        unreachable!()
    };
    assert_eq!(last.stop_code.as_deref(), Some("TaskFailedToStart"));
    last.reason.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_never_answers_fails_the_pull_naming_the_timeout() {
    let silent = silent_registry().await;
    // The registry sends nothing: the inactivity timeout ends the pull.
    let mut b = bench_with(|_, options| options.read_timeout = Duration::from_millis(500)).await;
    let start = payload(
        "t5",
        json!([{"name": "a", "image": format!("{silent}/hang:v1"), "cpu": 0, "memory": 32, "essential": true}]),
        "none",
    );
    send_start(&b, start);
    let reason = last_reason(&until_stopped(&mut b.control).await);
    assert!(reason.starts_with("CannotPullContainerError"), "{reason}");
    assert!(reason.contains("sent nothing for 500ms"), "{reason}");

    // A pull that takes too long in all fails at the pull timeout.
    let mut b =
        bench_with(|config, _| config.image_pull_timeout = Duration::from_millis(700)).await;
    let start = payload(
        "t6",
        json!([{"name": "a", "image": format!("{silent}/hang:v1"), "cpu": 0, "memory": 32, "essential": true}]),
        "none",
    );
    send_start(&b, start);
    let reason = last_reason(&until_stopped(&mut b.control).await);
    assert!(
        reason.contains("took longer than 700ms, the image pull timeout"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_a_pull_in_progress() {
    let silent = silent_registry().await;
    let mut b = bench().await;
    let start = payload(
        "t7",
        json!([{"name": "a", "image": format!("{silent}/hang:v1"), "cpu": 0, "memory": 32, "essential": true}]),
        "none",
    );
    let arn = start.task.task_arn.clone();
    send_start(&b, start);
    // PENDING: the pull has begun (and would wait a minute for the
    // registry); the stop ends it at once.
    let first = b.control.from_agent.recv().await.unwrap();
    assert!(
        matches!(&first, FromAgent::TaskStateChange(t) if t.status == Some(TaskStatus::Pending))
    );
    b.control
        .to_agent
        .send(ToAgent::StopTask { task_arn: arn })
        .unwrap();
    let changes = tokio::time::timeout(Duration::from_secs(10), until_stopped(&mut b.control))
        .await
        .expect("stopped well before the pull timeouts");
    assert_eq!(last_reason(&changes), "Task stopped before it started");
}
