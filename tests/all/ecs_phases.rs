//! Every task carries where its start went, as ECS attributes the real
//! AWS CLI shows (`skiff.CONTAINER.PART`): where the image came from and
//! how long pulling and compiling took, the sandbox and instantiation, the
//! first instruction and the exit. Also the fast path's promise: the second
//! start of an image compiles nothing, a restarted agent loads the
//! compiled code from its compile cache, and so does the first start of
//! an image compiled as it was pushed.

use crate::support::ServeProcess;
use serde_json::{Value, json};
use std::collections::HashMap;
use wasm_apps::app;

/// The task's `skiff.*` attributes, by name.
fn phases(task: &Value) -> HashMap<String, String> {
    task["attributes"]
        .as_array()
        .unwrap_or_else(|| panic!("no attributes: {task}"))
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["value"].as_str().unwrap().to_string(),
            )
        })
        .filter(|(n, _)| n.starts_with("skiff."))
        .collect()
}

fn number(p: &HashMap<String, String>, name: &str) -> f64 {
    p.get(name)
        .unwrap_or_else(|| panic!("no {name} in {p:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// One of ECS's timestamps (the AWS CLI prints them as seconds since the
/// epoch, to the microsecond, as the API sends them).
fn timestamp(task: &Value, field: &str) -> f64 {
    task[field]
        .as_f64()
        .unwrap_or_else(|| panic!("no {field}: {task}"))
}

/// Registers `phases`: one container of `hello:v1`.
fn register_hello(serve: &ServeProcess, dir: &std::path::Path) {
    serve.register_task_definition(
        dir,
        &json!({
            "family": "phases",
            "networkMode": "none",
            "containerDefinitions": [{"name": "app", "image": "hello:v1", "memory": 64}],
        }),
    );
}

/// Runs one hello job to its end; the task as DescribeTasks shows it.
fn run_job(serve: &ServeProcess) -> Value {
    let run = serve.aws_ok(&["ecs", "run-task", "--task-definition", "phases"]);
    let arn = run["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    serve.aws_ok(&["ecs", "wait", "tasks-stopped", "--tasks", &arn]);
    let task = serve.aws_ok(&["ecs", "describe-tasks", "--tasks", &arn])["tasks"][0].clone();
    assert_eq!(task["containers"][0]["exitCode"], 0, "{task}");
    task
}

#[test]
fn tasks_show_where_their_start_went_and_the_second_start_compiles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Not compiled as it is pushed: the first start compiles.
    let mut serve = ServeProcess::start_with(dir.path(), &["--no-compile-on-push"]);
    serve.push(app("HELLO_P2"), "hello:v1");
    let size = std::fs::metadata(app("HELLO_P2")).unwrap().len();
    register_hello(&serve, dir.path());

    // The first start pulls from the registry and compiles.
    let first = run_job(&serve);
    let p = phases(&first);
    assert_eq!(p["skiff.app.image"], "registry", "{p:?}");
    assert_eq!(number(&p, "skiff.app.pullBytes"), size as f64, "{p:?}");
    assert_eq!(p["skiff.app.compile"], "compiled", "{p:?}");
    assert!(number(&p, "skiff.app.compileMicros") > 0.0, "{p:?}");
    for part in [
        "resolveMicros",
        "downloadMicros",
        "storeMicros",
        "sandboxMicros",
    ] {
        number(&p, &format!("skiff.app.{part}"));
    }
    assert!(number(&p, "skiff.app.instantiateMicros") > 0.0, "{p:?}");
    // Taken from serve's own registry, the binary is on disk once: the
    // image store's file is the registry's blob, linked.
    let stored: Vec<_> = std::fs::read_dir(dir.path().join("images/wasm"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(
        std::os::unix::fs::MetadataExt::nlink(&std::fs::metadata(&stored[0]).unwrap()),
        2,
        "{stored:?}"
    );
    // The phases fall between ECS's own timestamps, in order.
    let entered = number(&p, "skiff.app.firstInstructionAt");
    let exited = number(&p, "skiff.app.exitedAt");
    let recorded = number(&p, "skiff.stopRecordedAt");
    let slack = 1e-6; // both are printed to the microsecond
    assert!(
        entered + slack >= timestamp(&first, "pullStoppedAt"),
        "{first}"
    );
    // startedAt (RUNNING) is when the container began to start: no guest
    // runs before it.
    assert!(entered + slack >= timestamp(&first, "startedAt"), "{first}");
    assert!(exited >= entered, "{p:?}");
    assert!(exited <= timestamp(&first, "stoppedAt") + slack, "{first}");
    assert!(
        recorded + slack >= timestamp(&first, "stoppedAt"),
        "{first}"
    );

    // The second start of the same image only instantiates: nothing is
    // pulled or compiled.
    let second = run_job(&serve);
    let p = phases(&second);
    assert_eq!(p["skiff.app.image"], "warm", "{p:?}");
    assert_eq!(p["skiff.app.compile"], "warm", "{p:?}");
    assert!(!p.contains_key("skiff.app.pullBytes"), "{p:?}");
    assert!(!p.contains_key("skiff.app.compileMicros"), "{p:?}");
    number(&p, "skiff.app.instantiateMicros");
    number(&p, "skiff.app.firstInstructionAt");

    // A restarted agent resolves the tag again (as the ECS agent's default
    // pull behaviour does) but compiles nothing: the compiled code comes
    // from its compile cache.
    assert_eq!(serve.terminate(), 0);
    let serve = ServeProcess::start(dir.path());
    let third = run_job(&serve);
    let p = phases(&third);
    assert_eq!(p["skiff.app.compile"], "cache", "{p:?}");
    number(&p, "skiff.app.instantiateMicros");
}

#[test]
fn an_image_compiled_as_it_was_pushed_starts_from_compiled_code() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(app("HELLO_P2"), "hello:v1");
    // The push is answered first; the compile follows, into the cache.
    let compiled = dir.path().join("cache/compiled");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let entries = || {
        std::fs::read_dir(&compiled).map_or(0, |d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
                .count()
        })
    };
    while entries() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing compiled within a minute of the push"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    register_hello(&serve, dir.path());
    // Its first start pulls, and loads the compiled code.
    let p = phases(&run_job(&serve));
    assert_eq!(p["skiff.app.image"], "registry", "{p:?}");
    assert_eq!(p["skiff.app.compile"], "cache", "{p:?}");
    number(&p, "skiff.app.compileMicros");
}

#[test]
fn a_running_task_shows_its_start_before_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(app("SLEEPER_P1"), "sleeper:v1");
    serve.register_task_definition(
        dir.path(),
        &json!({
            "family": "long",
            "networkMode": "none",
            "containerDefinitions": [{
                "name": "main", "image": "sleeper:v1", "memory": 16,
                "command": ["--until-stdin-eof"],
            }],
        }),
    );
    let run = serve.aws_ok(&["ecs", "run-task", "--task-definition", "long"]);
    let arn = run["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    serve.aws_ok(&["ecs", "wait", "tasks-running", "--tasks", &arn]);
    // The guest's start is reported when it begins to run, apart from
    // RUNNING (which does not wait for it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let p = loop {
        let task = serve.aws_ok(&["ecs", "describe-tasks", "--tasks", &arn])["tasks"][0].clone();
        let p = phases(&task);
        if p.contains_key("skiff.main.firstInstructionAt") {
            assert_eq!(task["lastStatus"], "RUNNING", "{task}");
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no start phases: {task}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    number(&p, "skiff.main.sandboxMicros");
    number(&p, "skiff.main.instantiateMicros");
    assert!(!p.contains_key("skiff.main.exitedAt"), "{p:?}");
    assert!(!p.contains_key("skiff.stopRecordedAt"), "{p:?}");

    serve.aws_ok(&["ecs", "stop-task", "--task", &arn]);
    serve.aws_ok(&["ecs", "wait", "tasks-stopped", "--tasks", &arn]);
    let task = serve.aws_ok(&["ecs", "describe-tasks", "--tasks", &arn])["tasks"][0].clone();
    let p = phases(&task);
    assert!(number(&p, "skiff.main.exitedAt") > number(&p, "skiff.main.firstInstructionAt"));
    number(&p, "skiff.stopRecordedAt");
}

/// A tag pushed again runs its new image at the next start, as under the
/// ECS agent's default pull behaviour (which asks what the tag names at
/// every start); an agent set to `prefer-cached` (here by its ECS agent
/// config file) keeps starting the image it holds.
#[test]
fn a_tag_pushed_again_runs_its_new_image_unless_the_agent_prefers_cached() {
    for behavior in ["default", "prefer-cached"] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("ecs.config");
        std::fs::write(&config, format!("ECS_IMAGE_PULL_BEHAVIOR={behavior}\n")).unwrap();
        let serve =
            ServeProcess::start_with(dir.path(), &["--ecs-config", config.to_str().unwrap()]);
        serve.push(app("HELLO_P2"), "hello:v1");
        register_hello(&serve, dir.path());
        let digest = |task: &Value| {
            task["containers"][0]["imageDigest"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let first = digest(&run_job(&serve));
        let again = run_job(&serve);
        assert_eq!(phases(&again)["skiff.app.image"], "warm", "{again}");
        assert_eq!(digest(&again), first);

        // The same tag, another binary.
        serve.push(app("HELLO_P1"), "hello:v1");
        let images = serve.aws_ok(&[
            "ecr",
            "describe-images",
            "--repository-name",
            "hello",
            "--image-ids",
            "imageTag=v1",
        ]);
        let pushed = images["imageDetails"][0]["imageDigest"]
            .as_str()
            .unwrap()
            .to_string();
        assert_ne!(pushed, first);
        let after = run_job(&serve);
        let p = phases(&after);
        if behavior == "default" {
            assert_eq!(digest(&after), pushed, "{behavior}: {after}");
            assert_eq!(p["skiff.app.image"], "registry", "{p:?}");
            // And that one is warm from then on.
            let next = run_job(&serve);
            assert_eq!(phases(&next)["skiff.app.image"], "warm", "{next}");
            assert_eq!(digest(&next), pushed);
        } else {
            assert_eq!(digest(&after), first, "{behavior}: {after}");
            assert_eq!(p["skiff.app.image"], "warm", "{p:?}");
        }
    }
}

/// A server started with a lower `--compile-cache-limit` than its cache
/// holds prunes it as it starts, not only at its next compile.
#[test]
fn a_server_prunes_its_compile_cache_to_a_lowered_limit_as_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache/compiled");
    std::fs::create_dir_all(&cache).unwrap();
    let stale = cache.join(format!("{}-0123456789abcdef.cwasm", "cd".repeat(32)));
    std::fs::File::create(&stale)
        .unwrap()
        .set_len(3 << 20)
        .unwrap();
    let _serve = ServeProcess::start_with(dir.path(), &["--compile-cache-limit", "2m"]);
    // Pruned off the start's path: soon after the server answers.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while stale.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} is still there",
            stale.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
