//! `skiff deploy`, `skiff services`, `skiff ps` and `skiff logs`: the
//! people's commands, as clients of a running `skiff serve`.

use crate::support::{ServeProcess, skiff, wait_with_limit};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use wasm_apps::app;

/// `sleeper` until its stdin closes, logging to awslogs.
fn web(image: &str, version: &str) -> Value {
    json!({
        "family": "web",
        "networkMode": "none",
        "containerDefinitions": [{
            "name": "main", "image": image, "memory": 16,
            "command": ["--until-stdin-eof"],
            "environment": [{"name": "VERSION", "value": version}],
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": "/skiff/web", "awslogs-region": "eu-west-1",
                "awslogs-stream-prefix": "web", "awslogs-create-group": "true",
            }},
        }],
    })
}

fn write(dir: &Path, name: &str, v: &Value) -> String {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    p.display().to_string()
}

/// Rows of a table printed by skiff (header skipped), split on spaces.
fn rows(out: &str) -> Vec<Vec<&str>> {
    out.lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect()
}

#[test]
fn deploy_services_ps_and_logs_drive_a_service() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(app("SLEEPER_P1"), "sleeper:v1");
    let endpoint = format!("http://{}", serve.api);
    let cli = |args: &[&str]| skiff(args).env("SKIFF_ENDPOINT", &endpoint);

    let v1 = write(dir.path(), "web1.json", &web("sleeper:v1", "1"));
    let out = cli(&["deploy", &v1, "--service", "web", "--count", "2"]).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with("registered web:1\ncreated service web with web:1, 2 task(s)\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("(service web) has reached a steady state.")
    );
    assert!(
        out.stdout.trim_end().ends_with("completed: web is stable"),
        "{}",
        out.stdout
    );

    let out = cli(&["services"]).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("SERVICE "));
    assert_eq!(
        rows(&out.stdout),
        [["web", "ACTIVE", "2/2", "0", "web:1", "1", "COMPLETED"]]
    );

    let out = cli(&["ps"]).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let tasks = rows(&out.stdout);
    assert_eq!(tasks.len(), 2, "{}", out.stdout);
    for t in &tasks {
        assert_eq!(
            (t[1], t[2], t.last().copied()),
            ("web:1", "RUNNING", Some("service:web"))
        );
    }

    // A service's logs: every task's lines, each marked with its task.
    let out = cli(&["logs", "web"]).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    lines.sort();
    let mut expected: Vec<String> = tasks
        .iter()
        .map(|t| format!("{} | sleeper: started", &t[0][..8]))
        .collect();
    expected.sort();
    assert_eq!(lines, expected);

    // Following one task: its lines as they come, ending when it stops.
    let task = tasks[0][0].to_string();
    let mut follow = cli(&["logs", "-f", &task]).spawn();
    serve.aws_ok(&["ecs", "stop-task", "--task", &task]);
    assert_eq!(wait_with_limit(&mut follow, Duration::from_secs(60)), 0);
    let mut followed = String::new();
    std::io::Read::read_to_string(follow.stdout.as_mut().unwrap(), &mut followed).unwrap();
    assert_eq!(
        followed,
        "sleeper: started\nsleeper: stdin closed, exiting\n"
    );

    // The stopped task shows with -a; the service has replaced it.
    let out = cli(&["ps", "-a"]).run();
    let all = rows(&out.stdout);
    let stopped = all
        .iter()
        .find(|r| r[0] == task)
        .expect("the stopped task is listed");
    assert_eq!(&stopped[2..5], ["STOPPED", "(exit", "0)"]);

    // A new revision: the service is updated and rolled out.
    let v2 = write(dir.path(), "web2.json", &web("sleeper:v1", "2"));
    let out = cli(&["deploy", &v2, "--service", "web", "--count", "1"]).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("updating service web to web:2, 1 task(s)"),
        "{}",
        out.stdout
    );
    let out = cli(&["ps", "--service", "web"]).run();
    let now = rows(&out.stdout);
    assert_eq!(now.len(), 1);
    assert_eq!(now[0][1], "web:2");

    // A revision that never becomes healthy: deploy gives up, exit 1.
    let broken = write(dir.path(), "broken.json", &web("missing:v1", "3"));
    let out = cli(&["deploy", &broken, "--service", "web", "--timeout", "2s"]).run();
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("gave up after 2s"), "{}", out.stderr);
    // Without --count an existing service keeps its count.
    assert!(
        out.stdout
            .contains("updating service web to web:3, 1 task(s)"),
        "{}",
        out.stdout
    );
}

#[test]
fn the_peoples_commands_explain_their_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    let endpoint = format!("http://{}", serve.api);
    let cli = |args: &[&str]| skiff(args).env("SKIFF_ENDPOINT", &endpoint);

    let out = cli(&["logs", "nope"]).run();
    out.assert_one_line_error(1, "no task or service \"nope\" in cluster default");
    let out = cli(&["deploy", "/nonexistent.json", "--service", "s"]).run();
    out.assert_one_line_error(1, "cannot read /nonexistent.json");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{ not json").unwrap();
    let out = cli(&["deploy", bad.to_str().unwrap(), "--service", "s"]).run();
    out.assert_one_line_error(1, "is not JSON");
    let invalid = write(
        dir.path(),
        "invalid.json",
        &json!({"family": "x", "containerDefinitions": []}),
    );
    let out = cli(&["deploy", &invalid, "--service", "s"]).run();
    out.assert_one_line_error(1, "Exception: ");
    let out = cli(&["ps", "--cluster", "nowhere"]).run();
    out.assert_one_line_error(1, "ClusterNotFoundException");
    let out = skiff(["ps", "--endpoint", "ftp://127.0.0.1:1"]).run();
    out.assert_one_line_error(1, "must be an http:// URL");
    drop(serve);
    let out = cli(&["services"]).run();
    out.assert_one_line_error(1, "cannot reach skiff's API");
    let out = skiff(["deploy", "x.json"]).run();
    assert_eq!(out.code, 2, "a missing --service is a usage error");
}

#[test]
fn deploy_flags_scale_and_log_options() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(app("SLEEPER_P1"), "sleeper:v1");
    serve.push(app("HTTP_HELLO_P2"), "hello-http:v1");
    let endpoint = format!("http://{}", serve.api);
    let cli = |args: &[&str]| skiff(args).env("SKIFF_ENDPOINT", &endpoint);

    // The same definition twice: no second revision.
    let v1 = write(dir.path(), "web1.json", &web("sleeper:v1", "1"));
    let out = cli(&["deploy", &v1, "--service", "web"]).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = cli(&["deploy", &v1, "--service", "web"]).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with("web:1 is unchanged: no new revision\n"),
        "{}",
        out.stdout
    );

    // skiff scale waits until the tasks run.
    let out = cli(&["scale", "web", "3"]).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("service web scaled to 3 task(s)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("web: 3/3 running, 0 pending"),
        "{}",
        out.stdout
    );
    let out = cli(&["ps", "--service", "web"]).run();
    let tasks = rows(&out.stdout);
    assert_eq!(tasks.len(), 3, "{}", out.stdout);

    // Logs by the short id logs prints, the last lines, timestamps, since.
    let short = &tasks[0][0][..8];
    let out = cli(&["logs", short]).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "sleeper: started\n");
    let out = cli(&["logs", "web", "--tail", "1"]).run();
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    let out = cli(&["logs", short, "--timestamps", "--since", "1h"]).run();
    let line = out.stdout.trim_end();
    assert!(line.ends_with("Z sleeper: started"), "{line}");
    assert!(line.starts_with("20"), "{line}");
    let out = cli(&["logs", short, "--since", "2099-01-01T00:00:00Z"]).run();
    assert_eq!((out.code, out.stdout.as_str()), (0, ""));
    let out = cli(&["logs", "0000"]).run();
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("no task or service \"0000\""),
        "{}",
        out.stderr
    );

    // An awsvpc service with a public address: ps shows where it is.
    let http = json!({
        "family": "hello", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
        "cpu": "256", "memory": "512",
        "containerDefinitions": [{
            "name": "web", "image": "hello-http:v1", "essential": true,
            "portMappings": [{"containerPort": 8089}],
        }],
    });
    let file = write(dir.path(), "hello.json", &http);
    let out = cli(&[
        "deploy",
        &file,
        "--service",
        "hello",
        "--capacity-provider",
        "FARGATE",
        "--assign-public-ip",
    ])
    .run();
    assert_ne!(
        out.code, 0,
        "FARGATE is not associated with the cluster yet"
    );
    assert!(
        out.stderr.contains("not associated with the cluster"),
        "{}",
        out.stderr
    );
    let out = cli(&[
        "deploy",
        &file,
        "--service",
        "hello",
        "--launch-type",
        "FARGATE",
        "--assign-public-ip",
    ])
    .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = cli(&["ps", "--service", "hello"]).run();
    let row = &rows(&out.stdout)[0];
    assert!(row.iter().any(|c| c.starts_with("127.")), "{}", out.stdout);
    assert!(row.contains(&"127.0.0.1:8089->8089/tcp"), "{}", out.stdout);

    // Network flags on a definition that is not awsvpc are a mistake.
    let out = cli(&["deploy", &v1, "--service", "web", "--subnets", "subnet-1"]).run();
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("are for networkMode awsvpc"),
        "{}",
        out.stderr
    );
}
