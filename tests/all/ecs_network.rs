//! Task networking on `skiff serve`, driven by the AWS CLI: awsvpc tasks
//! with their own addresses (FARGATE too), bridge tasks with static and
//! dynamic published ports, host-port conflicts at placement, and a
//! wasi:http component served as a task.

use crate::support::ServeProcess;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};
use wasm_apps::app;

fn register(serve: &ServeProcess, dir: &Path, td: &Value) {
    let name = format!("{}.json", td["family"].as_str().unwrap());
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec(td).unwrap()).unwrap();
    serve.aws_ok(&[
        "ecs",
        "register-task-definition",
        "--cli-input-json",
        &format!("file://{}", p.display()),
    ]);
}

/// Runs tasks and waits until they are RUNNING; returns them described.
fn run_running(serve: &ServeProcess, args: &[&str]) -> Vec<Value> {
    let mut cmd = vec!["ecs", "run-task"];
    cmd.extend(args);
    let run = serve.aws_ok(&cmd);
    assert_eq!(run["failures"], json!([]), "{run:#}");
    let arns: Vec<String> = run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskArn"].as_str().unwrap().to_string())
        .collect();
    let mut wait = vec!["ecs", "wait", "tasks-running", "--tasks"];
    wait.extend(arns.iter().map(String::as_str));
    serve.aws_ok(&wait);
    describe(serve, &arns)
}

fn describe(serve: &ServeProcess, arns: &[String]) -> Vec<Value> {
    let mut cmd = vec!["ecs", "describe-tasks", "--tasks"];
    cmd.extend(arns.iter().map(String::as_str));
    serve.aws_ok(&cmd)["tasks"].as_array().unwrap().clone()
}

/// One line to a TCP echo server, its answer back; retried while the
/// guest is not listening yet (RUNNING means started, not listening).
fn say(addr: SocketAddr, line: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            writeln!(s, "{line}")?;
            s.shutdown(std::net::Shutdown::Write)?;
            let mut reply = String::new();
            s.read_to_string(&mut reply)?;
            Ok(reply.trim_end().to_string())
        })();
        match attempt {
            Ok(reply) if !reply.is_empty() => return reply,
            other => {
                assert!(Instant::now() < deadline, "{addr}: {other:?}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn detail<'a>(attachment: &'a Value, name: &str) -> &'a str {
    attachment["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .and_then(|d| d["value"].as_str())
        .unwrap_or_else(|| panic!("no {name} in {attachment:#}"))
}

fn echo_td(family: &str, mode: &str, port_mapping: Value) -> Value {
    json!({
        "family": family,
        "networkMode": mode,
        "requiresCompatibilities": if mode == "awsvpc" { json!(["FARGATE"]) } else { json!(["EC2"]) },
        "cpu": "256", "memory": "512",
        "containerDefinitions": [{
            "name": "echo", "image": "echo:v1",
            "command": ["tcp", "0.0.0.0:8080", family],
            // It does not end when its stdin closes: stop it quickly.
            "stopTimeout": 2,
            "portMappings": [port_mapping],
        }],
    })
}

#[test]
fn awsvpc_tasks_get_their_own_addresses_as_enis() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(app("ECHO_P2"), "echo:v1");
    register(
        &serve,
        dir.path(),
        &echo_td("vpc", "awsvpc", json!({"containerPort": 8080})),
    );
    let td = &serve.aws_ok(&[
        "ecs",
        "describe-task-definition",
        "--task-definition",
        "vpc",
    ])["taskDefinition"];
    assert_eq!(td["compatibilities"], json!(["EC2", "FARGATE"]));

    let net = "awsvpcConfiguration={subnets=[subnet-0a1b2c],assignPublicIp=DISABLED}";
    let tasks = run_running(
        &serve,
        &[
            "--task-definition",
            "vpc",
            "--count",
            "2",
            "--launch-type",
            "FARGATE",
            "--network-configuration",
            net,
        ],
    );
    let mut ips = Vec::new();
    for t in &tasks {
        assert_eq!(t["launchType"], "FARGATE");
        let eni = &t["attachments"][0];
        assert_eq!(eni["type"], "ElasticNetworkInterface");
        assert_eq!(eni["status"], "ATTACHED");
        assert_eq!(detail(eni, "subnetId"), "subnet-0a1b2c");
        assert!(detail(eni, "networkInterfaceId").starts_with("eni-"));
        let ip: Ipv4Addr = detail(eni, "privateIPv4Address").parse().unwrap();
        assert_eq!(ip.octets()[..2], [127, 18], "{ip}");
        let nic = &t["containers"][0]["networkInterfaces"][0];
        assert_eq!(nic["attachmentId"], eni["id"]);
        assert_eq!(nic["privateIpv4Address"], ip.to_string());
        assert_eq!(t["containers"][0]["networkBindings"], json!([]));
        ips.push(ip);
    }
    assert_ne!(ips[0], ips[1]);
    // Both listen on 8080, each at its own address.
    for ip in &ips {
        assert_eq!(say(SocketAddr::from((*ip, 8080)), "hi"), "vpc hi");
    }

    // Stopped, the interface is gone and the address no longer answers.
    let arn = tasks[0]["taskArn"].as_str().unwrap().to_string();
    serve.aws_ok(&["ecs", "stop-task", "--task", &arn]);
    serve.aws_ok(&["ecs", "wait", "tasks-stopped", "--tasks", &arn]);
    let stopped = &describe(&serve, &[arn])[0];
    assert_eq!(stopped["attachments"][0]["status"], "DELETED");
    assert!(
        TcpStream::connect_timeout(&SocketAddr::from((ips[0], 8080)), Duration::from_secs(2))
            .is_err()
    );

    // What ECS refuses.
    serve.aws_err(
        &["ecs", "run-task", "--task-definition", "vpc"],
        "InvalidParameterException",
    );
    for bad in [
        "awsvpcConfiguration={subnets=[]}",
        "awsvpcConfiguration={subnets=[subnet-1],assignPublicIp=ENABLED}",
        "awsvpcConfiguration={subnets=[vpc-1]}",
    ] {
        serve.aws_err(
            &[
                "ecs",
                "run-task",
                "--task-definition",
                "vpc",
                "--network-configuration",
                bad,
            ],
            "InvalidParameterException",
        );
    }
    register(
        &serve,
        dir.path(),
        &echo_td("br", "bridge", json!({"containerPort": 8080})),
    );
    serve.aws_err(
        &[
            "ecs",
            "run-task",
            "--task-definition",
            "br",
            "--network-configuration",
            net,
        ],
        "InvalidParameterException",
    );
    serve.aws_err(
        &[
            "ecs",
            "run-task",
            "--task-definition",
            "br",
            "--launch-type",
            "FARGATE",
        ],
        "InvalidParameterException",
    );
}

#[test]
fn bridge_publishes_static_and_dynamic_host_ports() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(app("ECHO_P2"), "echo:v1");
    // No hostPort: dynamic, from ECS's range.
    register(
        &serve,
        dir.path(),
        &echo_td("dyn", "bridge", json!({"containerPort": 8080})),
    );
    let tasks = run_running(&serve, &["--task-definition", "dyn", "--count", "2"]);
    let mut ports = Vec::new();
    for t in &tasks {
        let b = &t["containers"][0]["networkBindings"];
        assert_eq!(b.as_array().unwrap().len(), 1, "{b:#}");
        assert_eq!(b[0]["containerPort"], 8080);
        assert_eq!(b[0]["bindIP"], "127.0.0.1");
        assert_eq!(b[0]["protocol"], "tcp");
        let port = b[0]["hostPort"].as_u64().unwrap() as u16;
        assert!((49153..=65535).contains(&port), "{port}");
        assert_eq!(
            say(SocketAddr::from(([127, 0, 0, 1], port)), "hey"),
            "dyn hey"
        );
        ports.push(port);
    }
    assert_ne!(ports[0], ports[1]);

    // A static hostPort: one task per instance; the second is refused at
    // placement.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    register(
        &serve,
        dir.path(),
        &echo_td(
            "static",
            "bridge",
            json!({"containerPort": 8080, "hostPort": free}),
        ),
    );
    let run = serve.aws_ok(&[
        "ecs",
        "run-task",
        "--task-definition",
        "static",
        "--count",
        "2",
    ]);
    assert_eq!(run["tasks"].as_array().unwrap().len(), 1, "{run:#}");
    assert_eq!(run["failures"][0]["reason"], "RESOURCE:PORTS");
    let arn = run["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    serve.aws_ok(&["ecs", "wait", "tasks-running", "--tasks", &arn]);
    assert_eq!(
        say(SocketAddr::from(([127, 0, 0, 1], free)), "x"),
        "static x"
    );
    let t = &describe(&serve, &[arn])[0];
    assert_eq!(t["containers"][0]["networkBindings"][0]["hostPort"], free);
}

#[test]
fn host_mode_ports_conflict_at_placement() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(app("ECHO_P2"), "echo:v1");
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut td = echo_td("hostnet", "host", json!({"containerPort": free}));
    td["containerDefinitions"][0]["command"] = json!(["tcp", format!("127.0.0.1:{free}"), "host"]);
    register(&serve, dir.path(), &td);
    let run = serve.aws_ok(&[
        "ecs",
        "run-task",
        "--task-definition",
        "hostnet",
        "--count",
        "2",
    ]);
    assert_eq!(run["tasks"].as_array().unwrap().len(), 1, "{run:#}");
    assert_eq!(run["failures"][0]["reason"], "RESOURCE:PORTS");
    let arn = run["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    serve.aws_ok(&["ecs", "wait", "tasks-running", "--tasks", &arn]);
    assert_eq!(say(SocketAddr::from(([127, 0, 0, 1], free)), "y"), "host y");
}

#[test]
fn a_wasi_http_component_runs_as_an_awsvpc_task() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(app("HTTP_HELLO_P2"), "hello-http:v1");
    register(
        &serve,
        dir.path(),
        &json!({
            "family": "web", "networkMode": "awsvpc", "cpu": "256", "memory": "512",
            "containerDefinitions": [{"name": "web", "image": "hello-http:v1",
                                      "portMappings": [{"containerPort": 80}]}],
        }),
    );
    let tasks = run_running(
        &serve,
        &[
            "--task-definition",
            "web",
            "--network-configuration",
            "awsvpcConfiguration={subnets=[subnet-1]}",
        ],
    );
    let ip = detail(&tasks[0]["attachments"][0], "privateIPv4Address");
    let (ok, out, err) = crate::support::peer(
        "curl",
        &["-sS", "--max-time", "10", &format!("http://{ip}/a")],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim_end(), "Hello from skiff! path=/a");

    // Without a port to serve on, it cannot start, and says why.
    register(
        &serve,
        dir.path(),
        &json!({
            "family": "noport", "networkMode": "awsvpc", "cpu": "256", "memory": "512",
            "containerDefinitions": [{"name": "web", "image": "hello-http:v1"}],
        }),
    );
    let run = serve.aws_ok(&[
        "ecs",
        "run-task",
        "--task-definition",
        "noport",
        "--network-configuration",
        "awsvpcConfiguration={subnets=[subnet-1]}",
    ]);
    let arn = run["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    serve.aws_ok(&["ecs", "wait", "tasks-stopped", "--tasks", &arn]);
    let t = &describe(&serve, &[arn])[0];
    assert_eq!(t["stopCode"], "TaskFailedToStart");
    assert!(
        t["stoppedReason"]
            .as_str()
            .unwrap()
            .contains("portMappings"),
        "{t:#}"
    );
}
