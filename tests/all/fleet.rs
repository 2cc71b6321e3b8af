//! One cluster across machines: a control plane (`skiff serve`) and agents
//! (`skiff agent`) on hosts that are Linux network namespaces this test
//! makes — each its own network stack, joined by a bridge, with addresses
//! the test assigns inside them (198.18.0.0/24, a benchmarking block), and
//! removed when the test ends. Nothing leaves them. Needs root (CI runs as
//! root); without it the tests say so and fail.

use crate::support::{ServeProcess, skiff_bin};
use serde_json::{Value, json};
use skiff_harness::netns::Hosts;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasm_apps::app;

const KEY: &str = "AKIDFLEET";
const SECRET: &str = "fleet-secret";

/// A `skiff agent` on a host.
struct AgentProcess {
    child: Child,
    /// Its container instance ARN, from its banner.
    arn: String,
    log: PathBuf,
}

impl AgentProcess {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
        // A failed test shows what the agent said: why it reconnected, what
        // it could not start.
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- {} ({}):\n{log}", self.log.display(), self.arn);
        }
    }
}

/// A control plane on host 0 and agents on the others.
struct Fleet {
    hosts: Hosts,
    serve: ServeProcess,
    dir: tempfile::TempDir,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // A failed test shows what the control plane said (every process
        // it ran, in turn).
        if std::thread::panicking() {
            let path = self.dir.path().join("control.log");
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            eprintln!("--- {}:\n{log}", path.display());
        }
    }
}

impl Fleet {
    /// Hosts 0..n; the control plane on host 0, cluster `fleet` made, the
    /// guests pushed (`sleeper:v1`, `hello:v1`) the way a user pushes to a
    /// registry that needs tokens.
    fn start(n: usize) -> Fleet {
        let hosts = Hosts::new(n);
        let dir = tempfile::tempdir().unwrap();
        let serve = Fleet::serve(&hosts, &dir.path().join("control"));
        let fleet = Fleet { hosts, serve, dir };
        fleet.aws_ok(&["ecs", "create-cluster", "--cluster-name", "fleet"]);
        let password = fleet.aws_ok(&["ecr", "get-authorization-token"])["authorizationData"][0]
            ["authorizationToken"]
            .as_str()
            .map(String::from)
            .unwrap();
        use base64::Engine;
        let password = base64::engine::general_purpose::STANDARD
            .decode(&password)
            .unwrap();
        let password = String::from_utf8(password).unwrap();
        let password = password.strip_prefix("AWS:").unwrap().to_string();
        let client = fleet.dir.path().join("client");
        let registry = format!("{}:5050", Hosts::addr(0));
        let run = |args: &[&str], stdin: &[u8]| {
            let mut c = fleet.hosts.command(0, skiff_bin());
            c.args(args)
                .env("SKIFF_DATA_DIR", &client)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = c.spawn().unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(stdin).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "skiff {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let insecure = ["--insecure-registry", &registry];
        run(
            &[
                &["login", "--username", "AWS", "--password-stdin", &registry][..],
                &insecure,
            ]
            .concat(),
            password.as_bytes(),
        );
        for (guest, repo) in [
            ("SLEEPER_P1", "sleeper:v1"),
            ("HELLO_P1", "hello:v1"),
            ("ECHO_P2", "echo:v1"),
            ("NET_PROBE_P2", "net-probe:v1"),
            ("HTTP_HELLO_P2", "hello-http:v1"),
        ] {
            let target = format!("{registry}/{repo}");
            run(
                &[&["push", app(guest), &target][..], &insecure].concat(),
                b"",
            );
        }
        fleet
    }

    fn serve(hosts: &Hosts, data: &Path) -> ServeProcess {
        let api = format!("{}:7700", Hosts::addr(0));
        let registry = format!("{}:5050", Hosts::addr(0));
        let mesh = format!("{}:7701", Hosts::addr(0));
        let mut cmd = hosts.command(0, skiff_bin());
        cmd.args([
            "serve",
            "--api-addr",
            &api,
            "--registry-addr",
            &registry,
            "--region",
            "eu-west-1",
            "--access-key-id",
            KEY,
            "--secret-access-key",
            SECRET,
            "--agent-timeout",
            "2s",
            "--mesh-addr",
            &mesh,
        ])
        .env("SKIFF_DATA_DIR", data)
        .env("SKIFF_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start skiff serve");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.with_file_name("control.log"))
            .expect("the control plane's log");
        let line = skiff_harness::first_line_then_copy(child.stderr.take().unwrap(), log);
        let banner = skiff_harness::ServeBanner::parse(&line)
            .unwrap_or_else(|| panic!("unexpected banner from skiff serve: {line:?}"));
        ServeProcess {
            child,
            api: banner.api,
            registry: banner.registry,
            cluster: banner.cluster,
            data_dir: data.to_path_buf(),
            keys: Some((KEY.into(), SECRET.into())),
            netns: Some(hosts.names[0].clone()),
        }
    }

    /// Starts `skiff agent` on host `i` (data under the test's dir, kept
    /// across restarts of that host's agent) with extra flags.
    fn agent(&self, i: usize, flags: &[&str]) -> AgentProcess {
        self.agent_with_secret(i, flags, SECRET).unwrap()
    }

    /// An agent signing with `secret`: its banner's instance, or why it
    /// exited.
    fn agent_with_secret(
        &self,
        i: usize,
        flags: &[&str],
        secret: &str,
    ) -> Result<AgentProcess, String> {
        self.agent_with_keys(i, flags, KEY, secret)
    }

    /// An agent signing with this key.
    fn agent_with_keys(
        &self,
        i: usize,
        flags: &[&str],
        key: &str,
        secret: &str,
    ) -> Result<AgentProcess, String> {
        let data = self.dir.path().join(format!("host{i}"));
        std::fs::create_dir_all(&data).unwrap();
        let log = data.join("agent.log");
        let mut cmd = self.hosts.command(i, skiff_bin());
        cmd.args([
            "agent",
            "--endpoint",
            &format!("http://{}:7700", Hosts::addr(0)),
            "--cluster",
            "fleet",
        ])
        .args(["--region", "eu-west-1", "--max-instances", "64"])
        .args(flags)
        .env("SKIFF_DATA_DIR", &data)
        .env("SKIFF_LOG", "warn")
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            // Appended: a host's agent restarted keeps the earlier one's log.
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap(),
        );
        // What this agent writes starts here.
        let before = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
        let mut child = cmd.spawn().expect("start skiff agent");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let all = std::fs::read(&log).unwrap_or_default();
            let text = String::from_utf8_lossy(all.get(before..).unwrap_or_default());
            if let Some(line) = text
                .lines()
                .find(|l| l.starts_with("skiff agent: instance "))
            {
                let arn = line["skiff agent: instance ".len()..]
                    .split(' ')
                    .next()
                    .unwrap()
                    .to_string();
                return Ok(AgentProcess { child, arn, log });
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited with {status}: {text}"));
            }
            assert!(
                Instant::now() < deadline,
                "skiff agent on host {i} did not start: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn aws_ok(&self, args: &[&str]) -> Value {
        self.serve.aws_ok(args)
    }

    /// Waits (at most `within`) until `check` holds for what `args` answer.
    fn until(&self, args: &[&str], within: Duration, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.aws_ok(args);
            if check(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "gave up waiting on aws {args:?}: {v:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn instance(&self, arn: &str) -> Value {
        self.aws_ok(&[
            "ecs",
            "describe-container-instances",
            "--cluster",
            "fleet",
            "--container-instances",
            arn,
        ])["containerInstances"][0]
            .clone()
    }

    fn connected(&self, arn: &str) -> bool {
        self.instance(arn)["agentConnected"] == json!(true)
    }

    /// Waits until instance `arn`'s agent is connected.
    fn until_connected(&self, arn: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.connected(arn) {
            assert!(
                Instant::now() < deadline,
                "{arn} never connected: {:#}",
                self.instance(arn)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The cluster's tasks, described (`desired`: RUNNING or STOPPED).
    fn tasks(&self, desired: &str, extra: &[&str]) -> Vec<Value> {
        let mut args = vec![
            "ecs",
            "list-tasks",
            "--cluster",
            "fleet",
            "--desired-status",
            desired,
        ];
        args.extend(extra);
        let arns: Vec<String> = self.aws_ok(&args)["taskArns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        if arns.is_empty() {
            return Vec::new();
        }
        let mut args = vec!["ecs", "describe-tasks", "--cluster", "fleet", "--tasks"];
        args.extend(arns.iter().map(String::as_str));
        self.aws_ok(&args)["tasks"].as_array().unwrap().clone()
    }

    fn register(&self, family: &str, image: &str, command: &[&str]) {
        let td = json!([{ "name": "main", "image": image, "memory": 32, "essential": true, "command": command }]);
        self.aws_ok(&[
            "ecs",
            "register-task-definition",
            "--family",
            family,
            "--container-definitions",
            &td.to_string(),
        ]);
    }
}

/// Tasks on each instance, by instance ARN.
fn per_instance(tasks: &[Value]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for t in tasks {
        *m.entry(
            t["containerInstanceArn"]
                .as_str()
                .unwrap_or("none")
                .to_string(),
        )
        .or_default() += 1;
    }
    m
}

fn running(tasks: &[Value]) -> Vec<Value> {
    tasks
        .iter()
        .filter(|t| t["lastStatus"] == "RUNNING")
        .cloned()
        .collect()
}

#[test]
fn agents_on_two_hosts_run_a_clusters_services_and_the_aws_cli_sees_them() {
    let fleet = Fleet::start(3);
    let a = fleet.agent(
        1,
        &[
            "--attribute",
            "tier=gold",
            "--availability-zone",
            "eu-west-1a",
        ],
    );
    let b = fleet.agent(2, &["--availability-zone", "eu-west-1b"]);
    assert_ne!(a.arn, b.arn);
    let listed = fleet.aws_ok(&["ecs", "list-container-instances", "--cluster", "fleet"]);
    assert_eq!(
        listed["containerInstanceArns"].as_array().unwrap().len(),
        2,
        "{listed}"
    );
    for arn in [&a.arn, &b.arn] {
        let i = fleet.instance(arn);
        assert_eq!(i["agentConnected"], json!(true), "{i:#}");
        assert_eq!(i["status"], "ACTIVE");
        assert!(
            i["ec2InstanceId"].as_str().unwrap().starts_with("i-"),
            "{i:#}"
        );
        assert_eq!(i["versionInfo"]["agentHash"], "skiff");
    }
    let zone = |i: &Value| {
        i["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "ecs.availability-zone")
            .map(|a| a["value"].as_str().unwrap().to_string())
    };
    assert_eq!(zone(&fleet.instance(&b.arn)).as_deref(), Some("eu-west-1b"));

    // A replica service spread across both hosts (by zone, as AWS's
    // default for services is).
    fleet.register("sleepy", "sleeper:v1", &[]);
    fleet.aws_ok(&[
        "ecs",
        "create-service",
        "--cluster",
        "fleet",
        "--service-name",
        "replicas",
        "--task-definition",
        "sleepy",
        "--desired-count",
        "4",
        "--placement-strategy",
        "type=spread,field=attribute:ecs.availability-zone",
    ]);
    let tasks = fleet.until(
        &[
            "ecs",
            "list-tasks",
            "--cluster",
            "fleet",
            "--service-name",
            "replicas",
        ],
        Duration::from_secs(60),
        |v| v["taskArns"].as_array().is_some_and(|a| a.len() == 4),
    );
    assert_eq!(tasks["taskArns"].as_array().unwrap().len(), 4);
    let deadline = Instant::now() + Duration::from_secs(60);
    let replicas = loop {
        let t = running(&fleet.tasks("RUNNING", &["--service-name", "replicas"]));
        if t.len() == 4 {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "replicas never all RUNNING: {t:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let spread = per_instance(&replicas);
    assert_eq!(spread.get(&a.arn), Some(&2), "{spread:?}");
    assert_eq!(spread.get(&b.arn), Some(&2), "{spread:?}");

    // A daemon service: one task on each instance.
    fleet.aws_ok(&[
        "ecs",
        "create-service",
        "--cluster",
        "fleet",
        "--service-name",
        "daemon",
        "--task-definition",
        "sleepy",
        "--scheduling-strategy",
        "DAEMON",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = running(&fleet.tasks("RUNNING", &["--service-name", "daemon"]));
        let on = per_instance(&d);
        if on.get(&a.arn) == Some(&1) && on.get(&b.arn) == Some(&1) && d.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "daemon tasks: {on:?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // distinctInstance: two tasks, two machines.
    let run = fleet.aws_ok(&[
        "ecs",
        "run-task",
        "--cluster",
        "fleet",
        "--task-definition",
        "sleepy",
        "--count",
        "2",
        "--placement-constraints",
        "type=distinctInstance",
    ]);
    let placed: std::collections::BTreeSet<&str> = run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["containerInstanceArn"].as_str().unwrap())
        .collect();
    assert_eq!(placed.len(), 2, "{run:#}");
    // memberOf by zone: host 2's.
    let run = fleet.aws_ok(&[
        "ecs",
        "run-task",
        "--cluster",
        "fleet",
        "--task-definition",
        "sleepy",
        "--placement-constraints",
        "type=memberOf,expression=attribute:ecs.availability-zone == eu-west-1b",
    ]);
    assert_eq!(
        run["tasks"][0]["containerInstanceArn"],
        json!(b.arn),
        "{run:#}"
    );
    // (Standalone tasks stay on a DRAINING instance, as on ECS: stopped
    // here, so the drain below has only services' tasks to move.)
    for t in fleet.tasks("RUNNING", &["--family", "sleepy"]) {
        if !t["group"]
            .as_str()
            .unwrap_or_default()
            .starts_with("service:")
        {
            let arn = t["taskArn"].as_str().unwrap();
            fleet.aws_ok(&["ecs", "stop-task", "--cluster", "fleet", "--task", arn]);
        }
    }
    // memberOf by an agent's attribute: only host 1 is gold.
    fleet.register("hello", "hello:v1", &[]);
    let run = fleet.aws_ok(&[
        "ecs",
        "run-task",
        "--cluster",
        "fleet",
        "--task-definition",
        "hello",
        "--count",
        "3",
        "--placement-constraints",
        "type=memberOf,expression=attribute:tier == gold",
    ]);
    for t in run["tasks"].as_array().unwrap() {
        assert_eq!(t["containerInstanceArn"], json!(a.arn), "{t:#}");
    }
    // ... and they ran there: exit code 0, output delivered.
    let arns: Vec<&str> = run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskArn"].as_str().unwrap())
        .collect();
    let mut args = vec![
        "ecs",
        "wait",
        "tasks-stopped",
        "--cluster",
        "fleet",
        "--tasks",
    ];
    args.extend(&arns);
    fleet.aws_ok(&args);
    let mut args = vec!["ecs", "describe-tasks", "--cluster", "fleet", "--tasks"];
    args.extend(&arns);
    for t in fleet.aws_ok(&args)["tasks"].as_array().unwrap() {
        assert_eq!(t["containers"][0]["exitCode"], json!(0), "{t:#}");
    }

    // Deregistering an instance with tasks is refused without --force.
    let err = fleet.serve.aws_err(
        &[
            "ecs",
            "deregister-container-instance",
            "--cluster",
            "fleet",
            "--container-instance",
            &b.arn,
        ],
        "InvalidParameterException",
    );
    assert!(err.contains("force"), "{err}");

    // DRAINING host 2 moves its replicas to host 1 and stops its daemon task.
    fleet.aws_ok(&[
        "ecs",
        "update-container-instances-state",
        "--cluster",
        "fleet",
        "--container-instances",
        &b.arn,
        "--status",
        "DRAINING",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = fleet.tasks("RUNNING", &[]);
        let on_b = all
            .iter()
            .filter(|t| t["containerInstanceArn"] == json!(b.arn))
            .count();
        let r = running(&fleet.tasks("RUNNING", &["--service-name", "replicas"]));
        if on_b == 0 && r.len() == 4 && per_instance(&r).get(&a.arn) == Some(&4) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "host 2 did not drain: {} left there",
            on_b
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let remaining = fleet.instance(&b.arn);
    assert_eq!(remaining["runningTasksCount"], json!(0), "{remaining:#}");
    drop((a, b));
}

#[test]
fn an_agent_offering_fargate_runs_fargate_tasks_of_any_cluster() {
    let fleet = Fleet::start(2);
    let a = fleet.agent(1, &["--fargate", "--cpu", "4096"]);
    let fargate = json!([{ "name": "main", "image": "sleeper:v1", "essential": true }]);
    fleet.aws_ok(&[
        "ecs",
        "register-task-definition",
        "--family",
        "serverless",
        "--requires-compatibilities",
        "FARGATE",
        "--network-mode",
        "awsvpc",
        "--cpu",
        "256",
        "--memory",
        "512",
        "--container-definitions",
        &fargate.to_string(),
    ]);
    let cpu = |i: &Value| {
        i["remainingResources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "CPU")
            .unwrap()["integerValue"]
            .as_i64()
            .unwrap()
    };
    // FARGATE tasks go to any instance offering capacity: this agent's,
    // or skiff serve's own (which pulls from its registry with a token
    // too). Placement is random between them; run them until one lands
    // here (each does with probability 1/2). Every one runs.
    let mut here = None;
    for _ in 0..30 {
        let t = fleet.aws_ok(&[
            "ecs",
            "run-task",
            "--cluster",
            "default",
            "--launch-type",
            "FARGATE",
            "--task-definition",
            "serverless",
            "--network-configuration",
            "awsvpcConfiguration={subnets=[subnet-1]}",
        ])["tasks"][0]
            .clone();
        assert!(
            t["containerInstanceArn"].is_null(),
            "FARGATE tasks show no instance: {t:#}"
        );
        let arn = t["taskArn"].as_str().unwrap().to_string();
        let v = fleet.until(
            &[
                "ecs",
                "describe-tasks",
                "--cluster",
                "default",
                "--tasks",
                &arn,
            ],
            Duration::from_secs(30),
            |v| {
                v["tasks"][0]["lastStatus"] == "RUNNING" || v["tasks"][0]["lastStatus"] == "STOPPED"
            },
        );
        assert_eq!(v["tasks"][0]["lastStatus"], "RUNNING", "{v:#}");
        if cpu(&fleet.instance(&a.arn)) == 4096 - 256 {
            here = Some(v);
            break;
        }
    }
    let t = here.expect("no FARGATE task was placed on the agent offering capacity");
    assert_eq!(t["tasks"][0]["launchType"], "FARGATE");
    let i = fleet.instance(&a.arn);
    assert_eq!(
        i["runningTasksCount"],
        json!(0),
        "not one of its tasks: {i:#}"
    );
    assert!(
        i["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "skiff.fargate"),
        "{i:#}"
    );
}

#[test]
fn a_lost_host_s_tasks_come_back_elsewhere_and_never_run_twice() {
    let fleet = Fleet::start(3);
    let a = fleet.agent(1, &[]);
    let mut b = fleet.agent(2, &[]);
    fleet.register("sleepy", "sleeper:v1", &[]);
    fleet.aws_ok(&[
        "ecs",
        "create-service",
        "--cluster",
        "fleet",
        "--service-name",
        "web",
        "--task-definition",
        "sleepy",
        "--desired-count",
        "4",
        "--placement-strategy",
        "type=spread,field=instanceId",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = loop {
        let r = running(&fleet.tasks("RUNNING", &["--service-name", "web"]));
        if r.len() == 4 {
            break r;
        }
        assert!(Instant::now() < deadline, "service never RUNNING: {r:#?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let on_b: Vec<String> = before
        .iter()
        .filter(|t| t["containerInstanceArn"] == json!(b.arn))
        .map(|t| t["taskArn"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(on_b.len(), 2, "{:?}", per_instance(&before));

    // kill -9: the host's tasks end with it; after the timeout (2 s) they
    // are recorded STOPPED and replaced on host 1.
    b.kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = running(&fleet.tasks("RUNNING", &["--service-name", "web"]));
        if r.len() == 4 && r.iter().all(|t| t["containerInstanceArn"] == json!(a.arn)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not replaced on host 1: {:?}",
            per_instance(&r)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut args = vec!["ecs", "describe-tasks", "--cluster", "fleet", "--tasks"];
    args.extend(on_b.iter().map(String::as_str));
    for t in fleet.aws_ok(&args)["tasks"].as_array().unwrap() {
        assert_eq!(t["lastStatus"], "STOPPED", "{t:#}");
        assert_eq!(t["stopCode"], "TerminationNotice", "{t:#}");
        let reason = t["stoppedReason"].as_str().unwrap();
        assert!(reason.starts_with("Host EC2 (instance i-"), "{reason}");
    }
    assert!(!fleet.connected(&b.arn));

    // The host comes back (the same machine: same data): same instance,
    // connected, and nothing of what it ran before runs again.
    let b2 = fleet.agent(2, &[]);
    assert_eq!(b2.arn, b.arn, "the same machine is the same instance");
    fleet.until_connected(&b.arn, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let r = running(&fleet.tasks("RUNNING", &["--service-name", "web"]));
    assert_eq!(r.len(), 4, "{r:#?}");
    for t in &r {
        assert!(
            !on_b.contains(&t["taskArn"].as_str().unwrap().to_string()),
            "resurrected: {t:#}"
        );
    }
    let mut args = vec!["ecs", "describe-tasks", "--cluster", "fleet", "--tasks"];
    args.extend(on_b.iter().map(String::as_str));
    for t in fleet.aws_ok(&args)["tasks"].as_array().unwrap() {
        assert_eq!(t["lastStatus"], "STOPPED", "{t:#}");
    }
    drop(a);
}

#[test]
fn agents_keep_running_while_the_control_plane_is_away_and_deliver_what_happened() {
    let mut fleet = Fleet::start(2);
    let a = fleet.agent(1, &[]);
    fleet.register("sleepy", "sleeper:v1", &[]);
    fleet.register("brief", "sleeper:v1", &["--for", "3"]);
    let long = fleet.aws_ok(&[
        "ecs",
        "run-task",
        "--cluster",
        "fleet",
        "--task-definition",
        "sleepy",
    ])["tasks"][0]["taskArn"]
        .as_str()
        .unwrap()
        .to_string();
    let brief = fleet.aws_ok(&[
        "ecs",
        "run-task",
        "--cluster",
        "fleet",
        "--task-definition",
        "brief",
    ])["tasks"][0]["taskArn"]
        .as_str()
        .unwrap()
        .to_string();
    fleet.until(
        &[
            "ecs",
            "describe-tasks",
            "--cluster",
            "fleet",
            "--tasks",
            &long,
            &brief,
        ],
        Duration::from_secs(30),
        |v| {
            v["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["lastStatus"] == "RUNNING")
        },
    );

    // The control plane goes away (kill -9) while `brief` ends on the agent.
    let _ = fleet.serve.child.kill();
    let _ = fleet.serve.child.wait();
    std::thread::sleep(Duration::from_secs(4));
    assert!(a.child_alive(), "the agent exits without its control plane");
    let data = fleet.serve.data_dir.clone();
    fleet.serve = Fleet::serve(&fleet.hosts, &data);

    // The agent reconnects within the timeout: `long` was never lost, and
    // `brief`'s end, reported while nobody listened, arrives.
    let v = fleet.until(
        &[
            "ecs",
            "describe-tasks",
            "--cluster",
            "fleet",
            "--tasks",
            &long,
            &brief,
        ],
        Duration::from_secs(30),
        |v| {
            let t = v["tasks"].as_array().unwrap();
            t[0]["lastStatus"] == "RUNNING" && t[1]["lastStatus"] == "STOPPED"
        },
    );
    let t = &v["tasks"][1];
    assert_eq!(t["containers"][0]["exitCode"], json!(0), "{t:#}");
    assert_eq!(t["stopCode"], "EssentialContainerExited", "{t:#}");
    // Connected again (waited for: with a 2 s timeout, a loaded machine may
    // drop the new channel once, and the agent reconnects within 500 ms).
    fleet.until_connected(&a.arn, Duration::from_secs(10));

    // The control plane stands still (SIGSTOP) for twice the timeout: it
    // was deaf, its agents were not silent; nothing is taken for lost.
    let pid = fleet.serve.child.id() as i32;
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_secs(4));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    std::thread::sleep(Duration::from_secs(3));
    let v = fleet.aws_ok(&[
        "ecs",
        "describe-tasks",
        "--cluster",
        "fleet",
        "--tasks",
        &long,
    ]);
    assert_eq!(
        v["tasks"][0]["lastStatus"], "RUNNING",
        "a stall took the task for lost: {v:#}"
    );
    fleet.until_connected(&a.arn, Duration::from_secs(10));

    // Cut off for longer than the timeout (its link down): its task is
    // taken for lost; when the link is back, the agent learns it and stops
    // it, and nothing is resurrected.
    fleet.hosts.link(1, false);
    fleet.until(
        &[
            "ecs",
            "describe-tasks",
            "--cluster",
            "fleet",
            "--tasks",
            &long,
        ],
        Duration::from_secs(30),
        |v| v["tasks"][0]["lastStatus"] == "STOPPED",
    );
    fleet.hosts.link(1, true);
    fleet.until_connected(&a.arn, Duration::from_secs(30));
    // The agent stopped it: its own report of the stop arrives, and it
    // runs nothing.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(&a.log).unwrap_or_default();
        let i = fleet.instance(&a.arn);
        if i["runningTasksCount"] == json!(0) && i["pendingTasksCount"] == json!(0) {
            break;
        }
        assert!(Instant::now() < deadline, "{i:#} {log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_agent_with_wrong_credentials_joins_nothing() {
    let fleet = Fleet::start(2);
    let err = match fleet.agent_with_secret(1, &[], "not-the-secret") {
        Ok(_) => panic!("an agent with a wrong secret joined"),
        Err(e) => e,
    };
    assert!(
        err.contains("refused to register") && err.contains("signature"),
        "{err}"
    );
    let listed = fleet.aws_ok(&["ecs", "list-container-instances", "--cluster", "fleet"]);
    assert_eq!(listed["containerInstanceArns"], json!([]));
}

#[test]
fn one_agent_cannot_report_for_anothers_tasks() {
    let fleet = Fleet::start(3);
    let a = fleet.agent(1, &[]);
    let b = fleet.agent(2, &[]);
    fleet.register("sleepy", "sleeper:v1", &[]);
    let task = fleet.aws_ok(&[
        "ecs",
        "run-task",
        "--cluster",
        "fleet",
        "--task-definition",
        "sleepy",
        "--placement-constraints",
        &format!(
            "type=memberOf,expression=ec2InstanceId == {}",
            fleet.instance(&b.arn)["ec2InstanceId"].as_str().unwrap()
        ),
    ])["tasks"][0]["taskArn"]
        .as_str()
        .unwrap()
        .to_string();
    fleet.until(
        &[
            "ecs",
            "describe-tasks",
            "--cluster",
            "fleet",
            "--tasks",
            &task,
        ],
        Duration::from_secs(30),
        |v| v["tasks"][0]["lastStatus"] == "RUNNING",
    );
    // A client with valid keys opens A's channel and reports B's task
    // stopped: the report is acknowledged (the channel goes on) but
    // changes nothing.
    let acked = forge_report(&fleet, (KEY, SECRET), &a.arn, &task).expect("the channel opens");
    assert!(acked, "the forged report was never acknowledged");
    let t = &fleet.aws_ok(&[
        "ecs",
        "describe-tasks",
        "--cluster",
        "fleet",
        "--tasks",
        &task,
    ])["tasks"][0];
    assert_eq!(t["lastStatus"], "RUNNING", "{t:#}");
    assert!(t["stopCode"].is_null(), "{t:#}");
}

/// Opens instance `instance`'s channel (from host 0, signed with the
/// fleet's keys) and reports task `task` STOPPED: whether the report was
/// acknowledged.
fn forge_report(
    fleet: &Fleet,
    (key, secret): (&str, &str),
    instance: &str,
    task: &str,
) -> Result<bool, String> {
    use futures_util::{SinkExt, StreamExt};
    use skiff_channel::messages::{FromAgent, TaskStateChange, TaskStatus};
    use skiff_channel::wire::{self, Down, Up};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let ns = fleet.hosts.names[0].clone();
    let host = format!("{}:7700", Hosts::addr(0));
    let cluster = instance
        .split(":container-instance/")
        .next()
        .unwrap()
        .to_string()
        + ":cluster/fleet";
    let query = wire::query(&cluster, instance, "forged-session", None);
    let instance = instance.to_string();
    let task = task.to_string();
    let (key, secret) = (key.to_string(), secret.to_string());
    // The client must run inside host 0's network.
    inside(&ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut request = format!("ws://{host}{}?{query}", wire::PATH)
                .into_client_request()
                .unwrap();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            let signer = skiff_channel::sigv4::Signer {
                access_key: &key,
                secret: &secret,
                region: "eu-west-1",
                service: "ecs",
            };
            for (n, v) in skiff_channel::sigv4::sign(
                signer,
                "GET",
                wire::PATH,
                &query,
                &[("host", &host)],
                b"",
                now,
            ) {
                request.headers_mut().insert(
                    http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(&v).unwrap(),
                );
            }
            let ws = match tokio_tungstenite::connect_async(request).await {
                Ok((ws, _)) => ws,
                Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                    let body = resp.body().as_deref().unwrap_or_default();
                    let body = String::from_utf8_lossy(body);
                    return Err(format!("HTTP {}: {body}", resp.status()));
                }
                Err(e) => return Err(e.to_string()),
            };
            let (mut tx, mut rx) = ws.split();
            let change = FromAgent::TaskStateChange(TaskStateChange {
                cluster,
                task,
                status: Some(TaskStatus::Stopped),
                reason: Some(format!("forged by {instance}")),
                ..TaskStateChange::default()
            });
            let frame = wire::encode(&Up::Report {
                seq: 1,
                change: Box::new(change),
            });
            tx.send(Message::text(frame)).await.unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while let Ok(Some(Ok(Message::Text(t)))) =
                tokio::time::timeout_at(deadline, rx.next()).await
            {
                if let Ok(Down::Ack { seq: 1 }) = wire::decode::<Down>(&t) {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    })
    .join()
    .unwrap()
}

#[test]
fn agent_keys_act_only_for_their_agents_and_revoking_one_disconnects_it() {
    let fleet = Fleet::start(3);
    let issue = |cluster: &str| -> (String, String) {
        let out = Command::new(skiff_bin())
            .args(["agent-keys", "create", "--cluster", cluster])
            .env("SKIFF_DATA_DIR", &fleet.serve.data_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let var = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .unwrap()
                .to_string()
        };
        (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
    };
    let (k1, s1) = issue("fleet");
    let (k2, s2) = issue("fleet");
    let (k3, s3) = issue("elsewhere");
    let a = fleet.agent_with_keys(1, &[], &k1, &s1).unwrap();
    assert!(fleet.connected(&a.arn));
    // The key serves agents, nothing else.
    let aws_as = |key: &str, secret: &str, args: &[&str]| {
        let out = fleet
            .hosts
            .command(0, "aws")
            .args(args)
            .args([
                "--endpoint-url",
                &format!("http://{}", fleet.serve.api),
                "--region",
                "eu-west-1",
            ])
            .env("AWS_ACCESS_KEY_ID", key)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = aws_as(&k1, &s1, &["ecs", "list-clusters"]);
    assert!(
        !ok && err.contains("AccessDeniedException") && err.contains("ListClusters"),
        "{err}"
    );
    // Another agent's key cannot open this instance's channel.
    let forged = forge_report(
        &fleet,
        (&k2, &s2),
        &a.arn,
        "arn:aws:ecs:eu-west-1:000000000000:task/fleet/x",
    );
    let e = forged.unwrap_err();
    assert!(e.contains("400") && e.contains("did not register"), "{e}");
    // A key of another cluster joins nothing here.
    let err = match fleet.agent_with_keys(2, &[], &k3, &s3) {
        Ok(_) => panic!("a key of cluster elsewhere joined fleet"),
        Err(e) => e,
    };
    assert!(err.contains("may act only in cluster elsewhere"), "{err}");

    // Revoked: the agent's channel closes, and it cannot come back.
    let out = Command::new(skiff_bin())
        .args(["agent-keys", "revoke", &k1])
        .env("SKIFF_DATA_DIR", &fleet.serve.data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fleet.until(
        &[
            "ecs",
            "describe-container-instances",
            "--cluster",
            "fleet",
            "--container-instances",
            &a.arn,
        ],
        Duration::from_secs(20),
        |v| v["containerInstances"][0]["agentConnected"] == json!(false),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(!fleet.connected(&a.arn), "a revoked key reconnected");
    let (ok, err) = aws_as(
        &k1,
        &s1,
        &["ecs", "discover-poll-endpoint", "--cluster", "fleet"],
    );
    assert!(!ok && err.contains("UnrecognizedClientException"), "{err}");
}

impl Fleet {
    fn group(&self, name: &str) -> String {
        self.aws_ok(&[
            "ec2",
            "create-security-group",
            "--group-name",
            name,
            "--description",
            name,
        ])["GroupId"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The ec2InstanceId of an instance, for memberOf.
    fn on(&self, arn: &str) -> String {
        format!(
            "type=memberOf,expression=ec2InstanceId == {}",
            self.instance(arn)["ec2InstanceId"].as_str().unwrap()
        )
    }

    /// Registers `probe`: net-probe in an awsvpc task, its output in
    /// `/fleet/probe`.
    fn register_probe(&self) {
        let probe = json!([{ "name": "probe", "image": "net-probe:v1",
            "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/fleet/probe",
                "awslogs-create-group": "true", "awslogs-region": "eu-west-1", "awslogs-stream-prefix": "p"}} }]);
        self.aws_ok(&[
            "ecs",
            "register-task-definition",
            "--family",
            "probe",
            "--network-mode",
            "awsvpc",
            "--cpu",
            "256",
            "--memory",
            "512",
            "--container-definitions",
            &probe.to_string(),
        ]);
    }

    /// Runs net-probe with `args` on instance `arn` in `groups`: its exit
    /// code and output.
    fn probe(&self, arn: &str, groups: &[&str], args: &[&str]) -> (i64, String) {
        self.probe_in("fleet", Some(arn), groups, args)
    }

    /// Runs net-probe in `cluster` (on instance `arn`, if given).
    fn probe_in(
        &self,
        cluster: &str,
        arn: Option<&str>,
        groups: &[&str],
        args: &[&str],
    ) -> (i64, String) {
        let net =
            json!({"awsvpcConfiguration": {"subnets": ["subnet-1"], "securityGroups": groups}});
        let overrides = json!({"containerOverrides": [{"name": "probe", "command": args}]});
        let (net, overrides) = (net.to_string(), overrides.to_string());
        let mut run = vec![
            "ecs",
            "run-task",
            "--cluster",
            cluster,
            "--task-definition",
            "probe",
            "--network-configuration",
            &net,
            "--overrides",
            &overrides,
        ];
        let on = arn.map(|a| self.on(a));
        if let Some(on) = &on {
            run.extend(["--placement-constraints", on]);
        }
        let t = self.aws_ok(&run)["tasks"][0]["taskArn"]
            .as_str()
            .unwrap()
            .to_string();
        // Within a minute (a probe waiting for an answer that never comes
        // would otherwise wait for ever): else stopped, and the test fails.
        let deadline = Instant::now() + Duration::from_secs(60);
        let describe = ["ecs", "describe-tasks", "--cluster", cluster, "--tasks", &t];
        while self.aws_ok(&describe)["tasks"][0]["lastStatus"] != "STOPPED" {
            if Instant::now() > deadline {
                self.aws_ok(&["ecs", "stop-task", "--cluster", cluster, "--task", &t]);
                panic!("net-probe {args:?} did not finish within a minute");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let d = &self.aws_ok(&["ecs", "describe-tasks", "--cluster", cluster, "--tasks", &t])["tasks"]
            [0];
        let code = d["containers"][0]["exitCode"]
            .as_i64()
            .unwrap_or_else(|| panic!("no exit code: {d:#}"));
        let id = t.rsplit('/').next().unwrap();
        let events = self.aws_ok(&[
            "logs",
            "filter-log-events",
            "--log-group-name",
            "/fleet/probe",
            "--log-stream-name-prefix",
            &format!("p/probe/{id}"),
        ]);
        let out = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("\n");
        // The task's own account too, for a failure's message.
        let why = format!(
            "[{} / {}]",
            d["containers"][0]["reason"], d["stoppedReason"]
        );
        (code, format!("{out}\n{why}"))
    }
}

#[test]
fn tasks_reach_tasks_on_other_machines_by_address_and_name_within_their_security_groups() {
    let fleet = Fleet::start(3);
    let a = fleet.agent(1, &[]);
    let b = fleet.agent(2, &[]);
    let web = fleet.group("web");
    let client = fleet.group("client");
    let other = fleet.group("other");
    fleet.aws_ok(&[
        "ec2",
        "authorize-security-group-ingress",
        "--group-id",
        &web,
        "--protocol",
        "tcp",
        "--port",
        "8080",
        "--source-group",
        &client,
    ]);
    let echo = json!([{ "name": "web", "image": "echo:v1", "command": ["tcp", "0.0.0.0:8080", "web"],
        "portMappings": [{"containerPort": 8080}] }]);
    fleet.aws_ok(&[
        "ecs",
        "register-task-definition",
        "--family",
        "echo",
        "--network-mode",
        "awsvpc",
        "--cpu",
        "256",
        "--memory",
        "512",
        "--container-definitions",
        &echo.to_string(),
    ]);
    fleet.register_probe();

    // Cloud Map names the echo service, which runs on host 2.
    let op = fleet.aws_ok(&[
        "servicediscovery",
        "create-private-dns-namespace",
        "--name",
        "fleet.local",
        "--vpc",
        "vpc-1",
    ]);
    let op = fleet.aws_ok(&[
        "servicediscovery",
        "get-operation",
        "--operation-id",
        op["OperationId"].as_str().unwrap(),
    ]);
    let ns = op["Operation"]["Targets"]["NAMESPACE"]
        .as_str()
        .unwrap()
        .to_string();
    let registry = fleet.aws_ok(&[
        "servicediscovery",
        "create-service",
        "--name",
        "echo",
        "--dns-config",
        &format!("NamespaceId={ns},DnsRecords=[{{Type=A,TTL=10}}]"),
    ])["Service"]["Arn"]
        .as_str()
        .unwrap()
        .to_string();
    let net = json!({"awsvpcConfiguration": {"subnets": ["subnet-1"], "securityGroups": [web]}});
    fleet.aws_ok(&[
        "ecs",
        "create-service",
        "--cluster",
        "fleet",
        "--service-name",
        "echo",
        "--task-definition",
        "echo",
        "--desired-count",
        "1",
        "--network-configuration",
        &net.to_string(),
        "--placement-constraints",
        &fleet.on(&b.arn),
        "--service-registries",
        &format!("registryArn={registry}"),
    ]);
    fleet.aws_ok(&[
        "ecs",
        "wait",
        "services-stable",
        "--cluster",
        "fleet",
        "--services",
        "echo",
    ]);
    let server = &running(&fleet.tasks("RUNNING", &["--service-name", "echo"]))[0];
    assert_eq!(server["containerInstanceArn"], json!(b.arn));
    let ip = server["attachments"][0]["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "privateIPv4Address")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string();
    let block_of = |arn: &str| {
        fleet.instance(arn)["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "skiff.task-addresses")
            .unwrap()["value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (block_a, block_b) = (block_of(&a.arn), block_of(&b.arn));
    assert_ne!(block_a, block_b, "each machine its own task addresses");
    let prefix = |block: &str| block.rsplitn(3, '.').nth(2).unwrap().to_string();
    assert!(ip.starts_with(&prefix(&block_b)), "{ip} not in {block_b}");

    // From host 1, by address: the answer comes back, each end sees the
    // other's task address.
    let target = format!("{ip}:8080");
    let (code, out) = fleet.probe(&a.arn, &[&client], &["send", &target, "hi"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("to {target}: web hi")), "{out}");
    assert!(out.contains(&format!("from {}", prefix(&block_a))), "{out}");
    // By name.
    let (code, out) = fleet.probe(
        &a.arn,
        &[&client],
        &["send", "echo.fleet.local:8080", "named"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("web named"), "{out}");
    // Not without a rule: host 2 refuses it.
    let (code, out) = fleet.probe(&a.arn, &[&other], &["send", &target, "hi"]);
    assert_eq!(code, 1, "{out}");

    // From skiff serve's own machine too (its instance is in the mesh),
    // and from host 1 to a task there.
    let (code, out) = fleet.probe_in("default", None, &[&client], &["send", &target, "from-0"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("web from-0") && out.contains("from 127.18."),
        "{out}"
    );
    let on_0 = fleet.aws_ok(&[
        "ecs",
        "run-task",
        "--cluster",
        "default",
        "--task-definition",
        "echo",
        "--network-configuration",
        &net.to_string(),
    ])["tasks"][0]["taskArn"]
        .as_str()
        .unwrap()
        .to_string();
    let v = fleet.until(
        &[
            "ecs",
            "describe-tasks",
            "--cluster",
            "default",
            "--tasks",
            &on_0,
        ],
        Duration::from_secs(30),
        |v| {
            v["tasks"][0]["attachments"][0]["details"]
                .as_array()
                .is_some_and(|d| d.iter().any(|x| x["name"] == "privateIPv4Address"))
                && v["tasks"][0]["lastStatus"] == "RUNNING"
        },
    );
    let ip0 = v["tasks"][0]["attachments"][0]["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "privateIPv4Address")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ip0.starts_with("127.18."), "{ip0}");
    let (code, out) = fleet.probe(
        &a.arn,
        &[&client],
        &["send", &format!("{ip0}:8080"), "to-0"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("web to-0"), "{out}");
}

/// Runs `f` on a thread inside host `ns`'s network.
fn inside<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        skiff_harness::netns::enter(&ns);
        f()
    })
}

/// GET `path` at 127.0.0.1:`port` (of the calling thread's network): the
/// status (0 if the connection failed) and body.
fn get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let attempt = || -> std::io::Result<(u16, String)> {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port))?;
        c.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = String::new();
        c.read_to_string(&mut raw)?;
        let status = raw
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = raw
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_string();
        Ok((status, body))
    };
    attempt().unwrap_or((0, String::new()))
}

#[test]
fn a_load_balancer_spreads_over_both_machines_and_rolls_without_a_failed_request() {
    let fleet = Fleet::start(3);
    let a = fleet.agent(1, &[]);
    let b = fleet.agent(2, &[]);
    let web = |who: &str| {
        json!([{ "name": "web", "image": "hello-http:v1",
            "environment": [{"name": "WHO", "value": who}],
            "portMappings": [{"containerPort": 80}], "stopTimeout": 5 }])
    };
    for who in ["web-v1", "web-v2"] {
        fleet.aws_ok(&[
            "ecs",
            "register-task-definition",
            "--family",
            "web",
            "--network-mode",
            "awsvpc",
            "--cpu",
            "256",
            "--memory",
            "512",
            "--container-definitions",
            &web(who).to_string(),
        ]);
    }
    let lb = fleet.aws_ok(&[
        "elbv2",
        "create-load-balancer",
        "--name",
        "web",
        "--subnets",
        "subnet-1",
    ])["LoadBalancers"][0]
        .clone();
    let (lb, lb_name) = (
        lb["LoadBalancerArn"].as_str().unwrap().to_string(),
        lb["DNSName"].as_str().unwrap().to_string(),
    );
    let tg = fleet.aws_ok(&[
        "elbv2",
        "create-target-group",
        "--name",
        "web",
        "--protocol",
        "HTTP",
        "--port",
        "80",
        "--target-type",
        "ip",
        "--health-check-path",
        "/health",
        "--health-check-interval-seconds",
        "5",
        "--healthy-threshold-count",
        "2",
    ])["TargetGroups"][0]["TargetGroupArn"]
        .as_str()
        .unwrap()
        .to_string();
    fleet.aws_ok(&[
        "elbv2",
        "modify-target-group-attributes",
        "--target-group-arn",
        &tg,
        "--attributes",
        "Key=deregistration_delay.timeout_seconds,Value=5",
    ]);
    let port = 8000u16;
    fleet.aws_ok(&[
        "elbv2",
        "create-listener",
        "--load-balancer-arn",
        &lb,
        "--protocol",
        "HTTP",
        "--port",
        &port.to_string(),
        "--default-actions",
        &format!("Type=forward,TargetGroupArn={tg}"),
    ]);
    fleet.aws_ok(&[
        "ecs",
        "create-service",
        "--cluster",
        "fleet",
        "--service-name",
        "web",
        "--task-definition",
        "web:1",
        "--desired-count",
        "4",
        "--placement-strategy",
        "type=spread,field=instanceId",
        "--network-configuration",
        "awsvpcConfiguration={subnets=[subnet-1]}",
        "--load-balancers",
        &format!("targetGroupArn={tg},containerName=web,containerPort=80"),
    ]);
    let healthy = |n: usize| {
        let d = fleet.aws_ok(&["elbv2", "describe-target-health", "--target-group-arn", &tg]);
        let states: Vec<Value> = d["TargetHealthDescriptions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["TargetHealth"]["State"].clone())
            .collect();
        states.len() == n && states.iter().all(|s| s == "healthy")
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !healthy(4) {
        assert!(Instant::now() < deadline, "targets never healthy");
        std::thread::sleep(Duration::from_millis(250));
    }
    let spread = per_instance(&running(
        &fleet.tasks("RUNNING", &["--service-name", "web"]),
    ));
    assert_eq!(
        (spread.get(&a.arn), spread.get(&b.arn)),
        (Some(&2), Some(&2)),
        "{spread:?}"
    );

    // Requests reach targets on both machines.
    let ns = fleet.hosts.names[0].clone();
    let answers = inside(&ns, move || {
        (0..20).map(|_| get(port, "/whoami")).collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    assert!(
        answers.iter().all(|a| *a == (200, "web-v1".to_string())),
        "{answers:?}"
    );

    // Tasks on the other machines reach the load balancer by its DNS name
    // (it listens on the control plane's machine).
    fleet.register_probe();
    for agent in [&a, &b] {
        let address = format!("{lb_name}:{port}");
        let (code, out) = fleet.probe(
            &agent.arn,
            &[],
            &[
                "send",
                &address,
                "GET /whoami HTTP/1.1\nHost: web\nConnection: close\n",
            ],
        );
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("200 OK") && out.contains("web-v1"), "{out:?}");
    }

    // A rolling deployment under a steady client: no request fails.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let stop = Arc::clone(&stop);
        inside(&ns, move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                seen.push(get(port, "/whoami"));
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        })
    };
    fleet.aws_ok(&[
        "ecs",
        "update-service",
        "--cluster",
        "fleet",
        "--service",
        "web",
        "--task-definition",
        "web:2",
    ]);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let svc = &fleet.aws_ok(&[
            "ecs",
            "describe-services",
            "--cluster",
            "fleet",
            "--services",
            "web",
        ])["services"][0];
        if svc["deployments"].as_array().unwrap().len() == 1
            && svc["deployments"][0]["rolloutState"] == "COMPLETED"
            && healthy(4)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout never completed: {svc:#}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let seen = client.join().unwrap();
    let failed: Vec<&(u16, String)> = seen.iter().filter(|(status, _)| *status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        seen.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(seen.iter().any(|(_, b)| b == "web-v1") && seen.iter().any(|(_, b)| b == "web-v2"));
    assert_eq!(seen.last().unwrap().1, "web-v2");
    let spread = per_instance(&running(
        &fleet.tasks("RUNNING", &["--service-name", "web"]),
    ));
    assert_eq!(
        (spread.get(&a.arn), spread.get(&b.arn)),
        (Some(&2), Some(&2)),
        "{spread:?}"
    );
}

#[test]
fn bridge_tasks_on_other_machines_are_instance_targets_at_their_hosts_address() {
    let fleet = Fleet::start(3);
    let a = fleet.agent(1, &[]);
    let b = fleet.agent(2, &[]);
    let td = json!([{ "name": "web", "image": "hello-http:v1",
        "environment": [{"name": "WHO", "value": "bridged"}],
        "portMappings": [{"containerPort": 80, "hostPort": 0}], "stopTimeout": 2 }]);
    fleet.aws_ok(&[
        "ecs",
        "register-task-definition",
        "--family",
        "bridged",
        "--network-mode",
        "bridge",
        "--cpu",
        "256",
        "--memory",
        "512",
        "--container-definitions",
        &td.to_string(),
    ]);
    let lb = fleet.aws_ok(&[
        "elbv2",
        "create-load-balancer",
        "--name",
        "bridged",
        "--subnets",
        "subnet-1",
    ])["LoadBalancers"][0]["LoadBalancerArn"]
        .as_str()
        .unwrap()
        .to_string();
    let tg = fleet.aws_ok(&[
        "elbv2",
        "create-target-group",
        "--name",
        "bridged",
        "--protocol",
        "HTTP",
        "--port",
        "80",
        "--target-type",
        "instance",
        "--health-check-path",
        "/health",
        "--health-check-interval-seconds",
        "5",
        "--healthy-threshold-count",
        "2",
    ])["TargetGroups"][0]["TargetGroupArn"]
        .as_str()
        .unwrap()
        .to_string();
    fleet.aws_ok(&[
        "elbv2",
        "create-listener",
        "--load-balancer-arn",
        &lb,
        "--protocol",
        "HTTP",
        "--port",
        "8001",
        "--default-actions",
        &format!("Type=forward,TargetGroupArn={tg}"),
    ]);
    fleet.aws_ok(&[
        "ecs",
        "create-service",
        "--cluster",
        "fleet",
        "--service-name",
        "bridged",
        "--task-definition",
        "bridged",
        "--desired-count",
        "2",
        "--placement-strategy",
        "type=spread,field=instanceId",
        "--load-balancers",
        &format!("targetGroupArn={tg},containerName=web,containerPort=80"),
    ]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let health = loop {
        let d = fleet.aws_ok(&["elbv2", "describe-target-health", "--target-group-arn", &tg]);
        let all = d["TargetHealthDescriptions"].as_array().unwrap().clone();
        if all.len() == 2 && all.iter().all(|t| t["TargetHealth"]["State"] == "healthy") {
            break all;
        }
        assert!(Instant::now() < deadline, "targets never healthy: {d:#}");
        std::thread::sleep(Duration::from_millis(250));
    };
    // Each target is a machine's instance at its task's host port, which
    // is published on that machine's address.
    let mut ids: Vec<String> = health
        .iter()
        .map(|t| t["Target"]["Id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let mut want: Vec<String> = [&a.arn, &b.arn]
        .iter()
        .map(|arn| {
            fleet.instance(arn)["ec2InstanceId"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    want.sort();
    assert_eq!(ids, want);
    for t in running(&fleet.tasks("RUNNING", &["--service-name", "bridged"])) {
        let binding = &t["containers"][0]["networkBindings"][0];
        let host = if t["containerInstanceArn"] == json!(a.arn) {
            1
        } else {
            2
        };
        assert_eq!(binding["bindIP"], json!(Hosts::addr(host)), "{t:#}");
    }
    let ns = fleet.hosts.names[0].clone();
    let answers = inside(&ns, || {
        (0..10).map(|_| get(8001, "/whoami")).collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    assert!(
        answers.iter().all(|a| *a == (200, "bridged".to_string())),
        "{answers:?}"
    );
}

#[test]
fn host_mode_ports_of_an_agent_are_on_its_machines_address() {
    let fleet = Fleet::start(2);
    let a = fleet.agent(1, &[]);
    let td = json!([{ "name": "web", "image": "hello-http:v1",
        "environment": [{"name": "WHO", "value": "on-host"}],
        "portMappings": [{"containerPort": 8080}] }]);
    fleet.aws_ok(&[
        "ecs",
        "register-task-definition",
        "--family",
        "onhost",
        "--network-mode",
        "host",
        "--container-definitions",
        &td.to_string(),
        "--memory",
        "64",
    ]);
    let t = fleet.aws_ok(&[
        "ecs",
        "run-task",
        "--cluster",
        "fleet",
        "--task-definition",
        "onhost",
    ])["tasks"][0]["taskArn"]
        .as_str()
        .unwrap()
        .to_string();
    let v = fleet.until(
        &["ecs", "describe-tasks", "--cluster", "fleet", "--tasks", &t],
        Duration::from_secs(30),
        |v| v["tasks"][0]["lastStatus"] == "RUNNING",
    );
    let binding = &v["tasks"][0]["containers"][0]["networkBindings"][0];
    assert_eq!(binding["bindIP"], json!(Hosts::addr(1)), "{v:#}");
    assert_eq!(binding["hostPort"], json!(8080));
    assert_eq!(v["tasks"][0]["containerInstanceArn"], json!(a.arn));
    // Reached from another machine at that address.
    let ns = fleet.hosts.names[0].clone();
    let answer = inside(&ns, || {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect((Hosts::addr(1).as_str(), 8080)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            c,
            "GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        c.read_to_string(&mut raw).unwrap();
        raw
    })
    .join()
    .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.trim_end().ends_with("on-host"),
        "{answer}"
    );
}

#[test]
fn a_stopped_agent_stops_its_tasks_and_reports_their_end() {
    let fleet = Fleet::start(2);
    let mut a = fleet.agent(1, &[]);
    fleet.register("graceful", "sleeper:v1", &["--until-stdin-eof"]);
    let t = fleet.aws_ok(&[
        "ecs",
        "run-task",
        "--cluster",
        "fleet",
        "--task-definition",
        "graceful",
    ])["tasks"][0]["taskArn"]
        .as_str()
        .unwrap()
        .to_string();
    fleet.until(
        &["ecs", "describe-tasks", "--cluster", "fleet", "--tasks", &t],
        Duration::from_secs(30),
        |v| v["tasks"][0]["lastStatus"] == "RUNNING",
    );
    // One agent per data dir: a second would be the same instance twice.
    let err = match fleet
        .agent_with_secret(1, &["--mesh-addr", "0.0.0.0:7702"], SECRET)
        .map(|_| ())
    {
        Ok(()) => panic!("a second agent started on the same data dir"),
        Err(e) => e,
    };
    assert!(err.contains("another agent is using"), "{err}");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(a.child.id() as i32, libc::SIGTERM) };
    let status = a.child.wait().unwrap();
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(&a.log).unwrap_or_default()
    );
    // Its end was delivered before it left: the guest saw stdin close and
    // exited 0.
    let v = fleet.aws_ok(&["ecs", "describe-tasks", "--cluster", "fleet", "--tasks", &t]);
    let task = &v["tasks"][0];
    assert_eq!(task["lastStatus"], "STOPPED", "{task:#}");
    assert_eq!(task["containers"][0]["exitCode"], json!(0), "{task:#}");
}

#[test]
fn datagrams_cross_machines_within_security_groups_and_answers_come_back() {
    let fleet = Fleet::start(3);
    let a = fleet.agent(1, &[]);
    let b = fleet.agent(2, &[]);
    let web = fleet.group("udp-web");
    let client = fleet.group("udp-client");
    fleet.aws_ok(&[
        "ec2",
        "authorize-security-group-ingress",
        "--group-id",
        &web,
        "--protocol",
        "udp",
        "--port",
        "9000",
        "--source-group",
        &client,
    ]);
    let echo =
        json!([{ "name": "web", "image": "echo:v1", "command": ["udp", "0.0.0.0:9000", "web"] }]);
    fleet.aws_ok(&[
        "ecs",
        "register-task-definition",
        "--family",
        "uecho",
        "--network-mode",
        "awsvpc",
        "--cpu",
        "256",
        "--memory",
        "512",
        "--container-definitions",
        &echo.to_string(),
    ]);
    fleet.register_probe();
    let net = json!({"awsvpcConfiguration": {"subnets": ["subnet-1"], "securityGroups": [web]}});
    let server = fleet.aws_ok(&[
        "ecs",
        "run-task",
        "--cluster",
        "fleet",
        "--task-definition",
        "uecho",
        "--placement-constraints",
        &fleet.on(&b.arn),
        "--network-configuration",
        &net.to_string(),
    ])["tasks"][0]["taskArn"]
        .as_str()
        .unwrap()
        .to_string();
    let v = fleet.until(
        &[
            "ecs",
            "describe-tasks",
            "--cluster",
            "fleet",
            "--tasks",
            &server,
        ],
        Duration::from_secs(30),
        |v| v["tasks"][0]["lastStatus"] == "RUNNING",
    );
    let ip = v["tasks"][0]["attachments"][0]["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "privateIPv4Address")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string();
    let target = format!("{ip}:9000");
    // The answer comes back from the callee's address.
    let (code, out) = fleet.probe(&a.arn, &[&client], &["udp-send", &target, "ping"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("from {target}: web ping")), "{out}");
    let (code, out) = fleet.probe(&a.arn, &[&client], &["udp-send", &target, "again"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("web again"), "{out}");
}

impl AgentProcess {
    fn child_alive(&self) -> bool {
        // SAFETY: signal 0 only checks that our child exists.
        unsafe { libc::kill(self.child.id() as i32, 0) == 0 }
    }
}
