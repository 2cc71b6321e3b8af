//! Many tasks at once on `skiff serve`: what they cost the process, and
//! that the API stays answering while they start and run.

use crate::support::{ServeProcess, python_client, python_json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use wasm_apps::app;

/// The threads of a process, now.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn hundreds_of_tasks_of_a_new_image_start_without_a_thread_each() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start_with(dir.path(), &["--cpu", "100000", "--memory", "100000"]);
    // Never compiled in this data dir: every task would compile it.
    serve.push(app("SLEEPER_P1"), "sleeper:v1");
    let pid = serve.child.id();

    // Watch the process's threads while the tasks start.
    let most = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (most, done) = (Arc::clone(&most), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                most.fetch_max(threads(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let out = serve.boto3(
        r#"
import time
ecs = boto3.client('ecs', endpoint_url=ENDPOINT, region_name=REGION)
ecs.register_task_definition(family='sleep', networkMode='none',
    containerDefinitions=[{'name': 's', 'image': 'sleeper:v1', 'memory': 8, 'cpu': 2}])
arns = []
for _ in range(40):
    r = ecs.run_task(taskDefinition='sleep', count=10)
    assert not r['failures'], r['failures']
    arns += [t['taskArn'] for t in r['tasks']]
deadline = time.time() + 240
while time.time() < deadline:
    running = 0
    for i in range(0, len(arns), 100):
        ts = ecs.describe_tasks(tasks=arns[i:i + 100])['tasks']
        running += sum(1 for t in ts if t['lastStatus'] == 'RUNNING')
    if running == len(arns):
        break
    time.sleep(0.5)
# With all of them running, the API answers at once.
start = time.time()
ecs.list_clusters()
ecs.run_task(taskDefinition='sleep', count=1)
print(json.dumps({'running': running, 'answer': time.time() - start}))
"#,
        "AKIDSKIFFTEST",
        "secret",
    );
    done.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let result: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(result["running"], 400, "{out}");
    // A running task costs memory, not a thread: the tasks of one image
    // wait for one compile, and compiles never outnumber the cores.
    let most = most.load(Ordering::Relaxed);
    assert!(most < 64, "{most} threads while 400 tasks started");
    let answer = result["answer"].as_f64().unwrap();
    assert!(answer < 5.0, "ListClusters and RunTask took {answer} s");
}

/// Killed while tasks start, then restarted: every task the API
/// acknowledged ran at most once. Each appends its own mark to a file on
/// a host volume, so the file counts the runs; the kill comes right after
/// an answer, while that call's tasks are starting.
#[test]
fn a_task_runs_at_most_once_across_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let marks = host.path().join("marks");
    std::fs::write(&marks, "").unwrap();
    let mut acknowledged: Vec<String> = Vec::new();
    for round in 0..3 {
        let mut serve = ServeProcess::start(dir.path());
        if round == 0 {
            serve.push(app("FS_TOOL_P1"), "fs-tool:v1");
        }
        let program = format!(
            r#"
import boto3, json, sys
ecs = boto3.client('ecs', endpoint_url='http://{api}', region_name='eu-west-1',
    aws_access_key_id='AKIDSKIFFTEST', aws_secret_access_key='secret')
ecs.register_task_definition(family='mark', networkMode='none',
    volumes=[{{'name': 'marks', 'host': {{'sourcePath': '{host}'}}}}],
    containerDefinitions=[{{'name': 'm', 'image': 'fs-tool:v1', 'memory': 8, 'cpu': 2,
        'mountPoints': [{{'sourceVolume': 'marks', 'containerPath': '/data'}}]}}])
for i in range(1000):
    r = ecs.run_task(taskDefinition='mark', count=10, overrides={{'containerOverrides': [
        {{'name': 'm', 'command': ['append', '/data/marks', 'mark-{round}-' + str(i) + '\n']}}]}})
    # Each task of a call writes the call's mark: ten lines of it at most.
    print(json.dumps([t['taskArn'] for t in r['tasks']]), flush=True)
"#,
            api = serve.api,
            host = host.path().display(),
        );
        python_client(&program, |n, arns| {
            acknowledged.extend(serde_json::from_value::<Vec<String>>(arns).unwrap());
            if n == 7 + round {
                // Killed right after an answer: that call's tasks start.
                serve.child.kill().unwrap();
                serve.child.wait().unwrap();
                return false;
            }
            true
        });
    }

    let serve = ServeProcess::start(dir.path());
    // Every acknowledged task is there, and has ended; those whose start
    // was not confirmed say why they did not run again.
    for chunk in acknowledged.chunks(100) {
        let mut cmd = vec!["ecs", "describe-tasks", "--tasks"];
        cmd.extend(chunk.iter().map(String::as_str));
        let described = serve.aws_ok(&cmd);
        let tasks = described["tasks"].as_array().unwrap();
        assert_eq!(tasks.len(), chunk.len(), "{described:#}");
        for t in tasks {
            assert_eq!(t["lastStatus"], "STOPPED", "{t:#}");
            // Never TaskFailedToStart for what may have run: a client
            // retrying those would run the task twice.
            assert_ne!(t["stopCode"], "TaskFailedToStart", "{t:#}");
            if t["startedAt"].is_null() {
                let reason = t["stoppedReason"].as_str().unwrap();
                assert!(reason.contains("at most once"), "{reason}");
            }
        }
    }
    // No call's mark more than ten times (one per task).
    let written = std::fs::read_to_string(&marks).unwrap();
    let mut counts = std::collections::HashMap::new();
    for line in written.lines() {
        *counts.entry(line.to_string()).or_insert(0) += 1;
    }
    let again: Vec<_> = counts.iter().filter(|(_, n)| **n > 10).collect();
    assert!(again.is_empty(), "ran more than once: {again:?}");
}

/// The runtime's instance slots are a resource the instance registers: a
/// task that would not get one is not placed, as ECS refuses a task that
/// needs more CPU than is left, rather than accepted and failed.
#[test]
fn a_task_without_a_free_slot_is_not_placed() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start_with(
        dir.path(),
        &[
            "--max-instances",
            "40",
            "--cpu",
            "100000",
            "--memory",
            "100000",
        ],
    );
    serve.push(app("SLEEPER_P1"), "sleeper:v1");
    serve.register_task_definition(
        dir.path(),
        &serde_json::json!({"family": "sleep", "networkMode": "none",
            "containerDefinitions": [{"name": "s", "image": "sleeper:v1", "memory": 8, "cpu": 2}]}),
    );
    // 40 slots, 16 kept for HTTP requests and health checks: 24 for tasks.
    let instance = serve.aws_ok(&["ecs", "list-container-instances"])["containerInstanceArns"][0]
        .as_str()
        .unwrap()
        .to_string();
    let resource = |which: &str| {
        let d = serve.aws_ok(&[
            "ecs",
            "describe-container-instances",
            "--container-instances",
            &instance,
        ]);
        let find = |list: &serde_json::Value| {
            list.as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == "WASM_SLOTS")
                .map(|r| r["integerValue"].as_i64().unwrap())
        };
        find(&d["containerInstances"][0][which])
    };
    assert_eq!(resource("registeredResources"), Some(24));
    let mut placed = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..3 {
        let run = serve.aws_ok(&[
            "ecs",
            "run-task",
            "--task-definition",
            "sleep",
            "--count",
            "10",
        ]);
        for t in run["tasks"].as_array().unwrap() {
            placed.push(t["taskArn"].as_str().unwrap().to_string());
        }
        for f in run["failures"].as_array().unwrap() {
            refused.push(f["reason"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(placed.len(), 24);
    assert!(
        !refused.is_empty() && refused.iter().all(|r| r == "RESOURCE:WASM_SLOTS"),
        "{refused:?}"
    );
    assert_eq!(resource("remainingResources"), Some(0));
    // Every task placed runs: none fails for want of a slot.
    let mut cmd = vec!["ecs", "wait", "tasks-running", "--tasks"];
    cmd.extend(placed.iter().map(String::as_str));
    serve.aws_ok(&cmd);
}

/// What a guest wrote before an exit that was recorded is in the log
/// store, even when skiff serve is killed with SIGKILL right after: the
/// store has each line before the agent reports the exit.
#[test]
fn logs_of_a_recorded_exit_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged: Vec<String> = Vec::new();
    for round in 0..3 {
        let mut serve = ServeProcess::start(dir.path());
        if round == 0 {
            serve.push(app("HELLO_P1"), "hello:v1");
        }
        let program = format!(
            r#"
import boto3, json, time
ecs = boto3.client('ecs', endpoint_url='http://{api}', region_name='eu-west-1',
    aws_access_key_id='AKIDSKIFFTEST', aws_secret_access_key='secret')
ecs.register_task_definition(family='hello', networkMode='none',
    containerDefinitions=[{{'name': 'h', 'image': 'hello:v1', 'memory': 8, 'cpu': 2,
        'command': ['one', 'two', 'three'],
        'logConfiguration': {{'logDriver': 'awslogs', 'options': {{
            'awslogs-group': '/ecs/hello', 'awslogs-create-group': 'true',
            'awslogs-stream-prefix': 'p'}}}}}}])
for i in range(1000):
    r = ecs.run_task(taskDefinition='hello', count=10)
    print(json.dumps([t['taskArn'] for t in r['tasks']]), flush=True)
    time.sleep(0.03)
"#,
            api = serve.api,
        );
        python_client(&program, |n, arns| {
            acknowledged.extend(serde_json::from_value::<Vec<String>>(arns).unwrap());
            if n == 20 + 3 * round {
                serve.child.kill().unwrap();
                serve.child.wait().unwrap();
                return false;
            }
            true
        });
    }
    // One client checks them all: the AWS CLI costs a process per call.
    let serve = ServeProcess::start(dir.path());
    let checker = format!(
        r#"
import boto3, json, sys
kw = dict(endpoint_url='http://{api}', region_name='eu-west-1',
    aws_access_key_id='AKIDSKIFFTEST', aws_secret_access_key='secret')
ecs, logs = boto3.client('ecs', **kw), boto3.client('logs', **kw)
arns = json.load(sys.stdin)
exited, lost = 0, []
for i in range(0, len(arns), 100):
    for t in ecs.describe_tasks(tasks=arns[i:i + 100])['tasks']:
        if t['containers'][0].get('exitCode') != 0:
            continue
        exited += 1
        id = t['taskArn'].rsplit('/', 1)[1]
        events = logs.get_log_events(logGroupName='/ecs/hello',
            logStreamName='p/h/' + id, startFromHead=True)['events']
        messages = [e['message'] for e in events]
        if 'Hello, world!' not in messages or 'arg[3]=three' not in messages:
            lost.append([id, messages])
print(json.dumps({{'exited': exited, 'lost': lost}}))
"#,
        api = serve.api,
    );
    let report = python_json(&checker, &serde_json::json!(acknowledged));
    let exited = report["exited"].as_u64().unwrap();
    assert_eq!(
        report["lost"],
        serde_json::json!([]),
        "tasks that exited 0 without their log lines"
    );
    assert!(exited > 50, "only {exited} tasks exited before the kills");
}

/// A STOPPED task is forgotten after the retention time, and with it go
/// its rows: the state store gives their space back to the file system.
#[test]
fn forgotten_tasks_give_their_store_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start_with(dir.path(), &["--stopped-task-retention", "3s"]);
    serve.push(app("HELLO_P1"), "hello:v1");
    let store = dir.path().join("control");
    let size = || {
        ["state.db", "state.db-wal"]
            .iter()
            .map(|f| std::fs::metadata(store.join(f)).map_or(0, |m| m.len()))
            .sum::<u64>()
    };
    let out = serve.boto3(
        r#"
import time
ecs = boto3.client('ecs', endpoint_url=ENDPOINT, region_name=REGION)
ecs.register_task_definition(family='hello', networkMode='none',
    containerDefinitions=[{'name': 'h', 'image': 'hello:v1', 'memory': 8, 'cpu': 2}])
arns = []
for _ in range(40):
    arns += [t['taskArn'] for t in ecs.run_task(taskDefinition='hello', count=10)['tasks']]
def statuses():
    out = []
    for i in range(0, len(arns), 100):
        d = ecs.describe_tasks(tasks=arns[i:i + 100])
        out += [t['lastStatus'] for t in d['tasks']] + ['MISSING' for f in d['failures']]
    return out
deadline = time.time() + 120
while set(statuses()) != {'STOPPED'} and time.time() < deadline:
    time.sleep(0.2)
print(json.dumps(sorted(set(statuses()))))
"#,
        "AKIDSKIFFTEST",
        "secret",
    );
    assert_eq!(out.trim(), r#"["STOPPED"]"#);
    let peak = size();
    assert!(peak > 1 << 20, "400 tasks took only {peak} bytes");
    // Forgotten: DescribeTasks no longer knows them, and the space is back.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let described = serve.aws_ok(&["ecs", "list-tasks", "--desired-status", "STOPPED"]);
        let small = size() < 256 << 10;
        if described["taskArns"] == serde_json::json!([]) && small {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after a minute: {} stopped tasks listed, store {} bytes (peak {peak})",
            described["taskArns"].as_array().map_or(0, Vec::len),
            size()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// With each container's memory capped (`--max-container-memory 64m`),
/// one instance runs 10,000 tasks at once on a few threads, and the API
/// keeps answering; a task whose container needs more than the cap is not
/// placed there.
#[test]
fn ten_thousand_tasks_run_on_one_instance_with_capped_container_memory() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start_with(
        dir.path(),
        &[
            "--cpu",
            "1000000",
            "--memory",
            "1000000",
            "--max-instances",
            "11200",
            "--max-container-memory",
            "64m",
        ],
    );
    serve.push(app("SLEEPER_P1"), "sleeper:v1");
    let pid = serve.child.id();
    let out = serve.boto3(
        r#"
import time
ecs = boto3.client('ecs', endpoint_url=ENDPOINT, region_name=REGION)
ecs.register_task_definition(family='sleep', networkMode='none',
    containerDefinitions=[{'name': 's', 'image': 'sleeper:v1', 'memory': 8, 'cpu': 2}])
ecs.register_task_definition(family='big', networkMode='none',
    containerDefinitions=[{'name': 's', 'image': 'sleeper:v1', 'memory': 128, 'cpu': 2}])
big = ecs.run_task(taskDefinition='big')
arns, failures = [], []
for _ in range(1000):
    r = ecs.run_task(taskDefinition='sleep', count=10)
    failures += r['failures']
    arns += [t['taskArn'] for t in r['tasks']]
deadline = time.time() + 400
while time.time() < deadline:
    running = 0
    for i in range(0, len(arns), 100):
        ts = ecs.describe_tasks(tasks=arns[i:i + 100])['tasks']
        running += sum(1 for t in ts if t['lastStatus'] == 'RUNNING')
    if running == len(arns):
        break
    time.sleep(1)
worst = 0
for _ in range(10):
    start = time.time()
    ecs.list_clusters()
    worst = max(worst, time.time() - start)
attrs = ecs.describe_container_instances(containerInstances=ecs.list_container_instances()['containerInstanceArns'])['containerInstances'][0]['attributes']
print(json.dumps({'running': running, 'failures': failures, 'worst': worst,
    'big': [f['reason'] for f in big['failures']],
    'cap': [a.get('value') for a in attrs if a['name'] == 'skiff.max-container-memory']}))
"#,
        "AKIDSKIFFTEST",
        "secret",
    );
    let threads = threads(pid);
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    eprintln!(
        "10,000 tasks: {} running, {threads} threads, ListClusters worst {:.3} s",
        r["running"], r["worst"]
    );
    assert_eq!(r["failures"], serde_json::json!([]), "{out}");
    assert_eq!(r["running"], 10_000, "{out}");
    assert!(threads < 64, "{threads} threads with 10,000 tasks running");
    assert!(r["worst"].as_f64().unwrap() < 2.0, "{out}");
    assert_eq!(r["big"], serde_json::json!(["RESOURCE:MEMORY"]), "{out}");
    assert_eq!(r["cap"], serde_json::json!(["64"]), "{out}");
}

/// The local instance's remaining WASM_SLOTS.
fn free_slots(serve: &ServeProcess) -> i64 {
    let arns = serve.aws_ok(&["ecs", "list-container-instances"]);
    let arn = arns["containerInstanceArns"][0].as_str().unwrap();
    let described = serve.aws_ok(&[
        "ecs",
        "describe-container-instances",
        "--container-instances",
        arn,
    ]);
    described["containerInstances"][0]["remainingResources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "WASM_SLOTS")
        .and_then(|r| r["integerValue"].as_i64())
        .unwrap()
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn ten_thousand_tasks_started_and_stopped_leak_no_addresses_files_or_pool_slots() {
    let dir = tempfile::tempdir().unwrap();
    // Its address leases where this test can read them.
    let run = tempfile::tempdir().unwrap();
    let mut skiff = std::process::Command::new(crate::support::skiff_bin());
    skiff.env("XDG_RUNTIME_DIR", run.path());
    // 48 pool slots for 10,000 tasks, 40 at a time: a task that kept its
    // slot would soon leave none for the rest.
    let serve = ServeProcess::launch(skiff, dir.path(), &["--max-instances", "64"]);
    let held = || {
        std::fs::read_dir(run.path().join("skiff/addresses"))
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
            .filter(|lease| lease.starts_with("held"))
            .count()
    };
    let endpoint = format!("http://{}", serve.api);
    let bench = |tasks: &str| {
        let done = crate::support::skiff([
            "bench",
            "cold-start",
            "--json",
            "--no-baselines",
            "--network-mode",
            "awsvpc",
            "--concurrency",
            "40",
            "--tasks",
            tasks,
            "--endpoint",
            &endpoint,
        ])
        .run();
        assert_eq!(done.code, 0, "{}\n{}", done.stdout, done.stderr);
        let out: serde_json::Value = serde_json::from_str(&done.stdout).unwrap();
        assert_eq!(out["skiff"]["failed"], serde_json::json!([]), "{out:#}");
        assert_eq!(out["skiff"]["succeeded"], tasks.parse::<u64>().unwrap());
    };
    let pid = serve.child.id();
    // What is opened once (the store, the registry's files, pools) is open
    // after a first round.
    bench("100");
    let slots = free_slots(&serve);
    assert_eq!(slots, 48);
    let files = open_files(pid);

    assert_eq!(held(), 0);

    bench("10000");
    assert_eq!(free_slots(&serve), slots, "pool slots were kept");
    assert_eq!(held(), 0, "task addresses were kept");
    // The bench's connections close as it exits; the server sees them go.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while open_files(pid) > files + 8 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} files open after 10,000 tasks, {files} before",
            open_files(pid)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
