//! Task networking on `skiff serve`, driven by the AWS CLI: awsvpc tasks
//! with their own addresses (FARGATE too), bridge tasks with static and
//! dynamic published ports, host-port conflicts at placement, and a
//! wasi:http component served as a task.

use crate::support::ServeProcess;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use wasm_apps::app;

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
    serve.register_task_definition(
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
        "awsvpcConfiguration={subnets=[subnet-1],assignPublicIp=MAYBE}",
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
    serve.register_task_definition(
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
    serve.register_task_definition(
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
    serve.register_task_definition(
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
    serve.register_task_definition(dir.path(), &td);
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
    serve.register_task_definition(
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
    serve.register_task_definition(
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

fn group_id(serve: &ServeProcess, name: &str, description: &str) -> String {
    serve.aws_ok(&[
        "ec2",
        "create-security-group",
        "--group-name",
        name,
        "--description",
        description,
    ])["GroupId"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn security_groups_decide_which_tasks_reach_which() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(app("ECHO_P2"), "echo:v1");
    serve.push(app("NET_PROBE_P2"), "net-probe:v1");
    let web = group_id(&serve, "web", "the echo server");
    let client = group_id(&serve, "client", "may call web");
    let other = group_id(&serve, "other", "may not, at first");
    serve.aws_ok(&[
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

    // The echo server, in `web`.
    serve.register_task_definition(
        dir.path(),
        &echo_td("sgweb", "awsvpc", json!({"containerPort": 8080})),
    );
    let net = json!({"awsvpcConfiguration": {"subnets": ["subnet-1"], "securityGroups": [web]}});
    let server = &run_running(
        &serve,
        &[
            "--task-definition",
            "sgweb",
            "--network-configuration",
            &net.to_string(),
        ],
    )[0];
    let ip = detail(&server["attachments"][0], "privateIPv4Address").to_string();
    let target = format!("{ip}:8080");
    // Listening before anyone calls.
    assert_eq!(
        say(format!("{ip}:8080").parse().unwrap(), "ready?"),
        "sgweb ready?"
    );

    // Allowed by a rule naming the caller's group; refused without one.
    assert_eq!(
        serve.probe_task(dir.path(), &[&client], &["send", &target, "hi"]),
        0
    );
    assert_eq!(
        serve.probe_task(dir.path(), &[&other], &["send", &target, "hi"]),
        1
    );
    assert_eq!(
        serve.probe_task(dir.path(), &[&other], &["connect", &target]),
        1
    );
    // A rule added now applies at once.
    serve.aws_ok(&[
        "ec2",
        "authorize-security-group-ingress",
        "--group-id",
        &web,
        "--protocol",
        "tcp",
        "--port",
        "8080",
        "--source-group",
        &other,
    ]);
    assert_eq!(
        serve.probe_task(dir.path(), &[&other], &["send", &target, "hi"]),
        0
    );

    // Egress: a group that may only send to port 9000 cannot reach a
    // loopback listener elsewhere; the default group (all out) can.
    let host = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let outside = host.local_addr().unwrap().to_string();
    let locked = group_id(&serve, "locked", "egress to 9000 only");
    serve.aws_ok(&[
        "ec2",
        "revoke-security-group-egress",
        "--group-id",
        &locked,
        "--ip-permissions",
        "IpProtocol=-1,IpRanges=[{CidrIp=0.0.0.0/0}]",
    ]);
    serve.aws_ok(&[
        "ec2",
        "authorize-security-group-egress",
        "--group-id",
        &locked,
        "--ip-permissions",
        "IpProtocol=tcp,FromPort=9000,ToPort=9000,IpRanges=[{CidrIp=127.0.0.0/8}]",
    ]);
    assert_eq!(
        serve.probe_task(dir.path(), &[&locked], &["connect", &outside]),
        1
    );
    assert_eq!(serve.probe_task(dir.path(), &[], &["connect", &outside]), 0);

    // The default group: members reach each other; others do not reach
    // them.
    let default_net = json!({"awsvpcConfiguration": {"subnets": ["subnet-1"]}});
    let member = &run_running(
        &serve,
        &[
            "--task-definition",
            "sgweb",
            "--network-configuration",
            &default_net.to_string(),
        ],
    )[0];
    let member_ip = detail(&member["attachments"][0], "privateIPv4Address").to_string();
    let member_target = format!("{member_ip}:8080");
    say(member_target.parse().unwrap(), "ready?");
    assert_eq!(
        serve.probe_task(dir.path(), &[], &["send", &member_target, "hi"]),
        0
    );
    assert_eq!(
        serve.probe_task(dir.path(), &[&client], &["send", &member_target, "hi"]),
        1
    );

    // A group in use, or named by another group's rule, stays.
    serve.aws_err(
        &["ec2", "delete-security-group", "--group-id", &web],
        "DependencyViolation",
    );
    serve.aws_err(
        &["ec2", "delete-security-group", "--group-id", &client],
        "DependencyViolation",
    );
    serve.aws_err(
        &["ec2", "delete-security-group", "--group-name", "default"],
        "CannotDelete",
    );
    // Unknown groups are refused where tasks name them.
    let bad = json!({"awsvpcConfiguration": {"subnets": ["subnet-1"], "securityGroups": ["sg-0123456789abcdef0"]}});
    serve.aws_err(
        &[
            "ecs",
            "run-task",
            "--task-definition",
            "sgweb",
            "--network-configuration",
            &bad.to_string(),
        ],
        "InvalidParameterException",
    );
}

#[test]
fn security_group_mistakes_get_ec2_error_codes() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    let sg = group_id(&serve, "a", "a");
    serve.aws_err(
        &[
            "ec2",
            "create-security-group",
            "--group-name",
            "a",
            "--description",
            "again",
        ],
        "InvalidGroup.Duplicate",
    );
    serve.aws_err(
        &[
            "ec2",
            "describe-security-groups",
            "--group-ids",
            "sg-0000000000000000a",
        ],
        "InvalidGroup.NotFound",
    );
    let rule = [
        "--group-id",
        &sg,
        "--protocol",
        "tcp",
        "--port",
        "80",
        "--cidr",
        "127.18.0.0/16",
    ];
    let mut add = vec!["ec2", "authorize-security-group-ingress"];
    add.extend(rule);
    serve.aws_ok(&add);
    serve.aws_err(&add, "InvalidPermission.Duplicate");
    let mut remove = vec!["ec2", "revoke-security-group-ingress"];
    remove.extend(rule);
    serve.aws_ok(&remove);
    serve.aws_err(&remove, "InvalidPermission.NotFound");
    for (args, code) in [
        (
            vec!["--protocol", "tcp", "--port", "80", "--cidr", "10.0.0.0/8"],
            "InvalidParameterValue",
        ),
        (
            vec![
                "--protocol",
                "tcp",
                "--port",
                "70000",
                "--cidr",
                "127.0.0.0/8",
            ],
            "InvalidParameterValue",
        ),
        (
            vec!["--protocol", "47", "--port", "1", "--cidr", "127.0.0.0/8"],
            "InvalidParameterValue",
        ),
        (
            vec![
                "--protocol",
                "tcp",
                "--port",
                "80",
                "--source-group",
                "sg-0000000000000000b",
            ],
            "InvalidGroup.NotFound",
        ),
    ] {
        let mut cmd = vec!["ec2", "authorize-security-group-ingress", "--group-id", &sg];
        cmd.extend(args);
        serve.aws_err(&cmd, code);
    }
    // A task names groups by id, as on ECS; a name is refused, saying
    // which id it would have been.
    serve.register_task_definition(
        dir.path(),
        &echo_td("named", "awsvpc", json!({"containerPort": 8080})),
    );
    let refused = serve.aws_err(
        &[
            "ecs",
            "run-task",
            "--task-definition",
            "named",
            "--network-configuration",
            "awsvpcConfiguration={subnets=[subnet-1],securityGroups=[a]}",
        ],
        "InvalidParameterException",
    );
    assert!(
        refused.contains(&format!("the group named a is {sg}")),
        "{refused}"
    );
    serve.aws_ok(&["ec2", "delete-security-group", "--group-id", &sg]);
    serve.aws_err(
        &["ec2", "delete-security-group", "--group-id", &sg],
        "InvalidGroup.NotFound",
    );
}

#[test]
fn tasks_find_a_service_by_its_discovery_name() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(app("ECHO_P2"), "echo:v1");
    serve.push(app("NET_PROBE_P2"), "net-probe:v1");
    let op = serve.aws_ok(&[
        "servicediscovery",
        "create-private-dns-namespace",
        "--name",
        "local",
        "--vpc",
        "vpc-1",
    ]);
    let op = serve.aws_ok(&[
        "servicediscovery",
        "get-operation",
        "--operation-id",
        op["OperationId"].as_str().unwrap(),
    ]);
    assert_eq!(op["Operation"]["Status"], "SUCCESS");
    let ns = op["Operation"]["Targets"]["NAMESPACE"]
        .as_str()
        .unwrap()
        .to_string();
    let registry = serve.aws_ok(&[
        "servicediscovery",
        "create-service",
        "--name",
        "api",
        "--dns-config",
        &format!("NamespaceId={ns},DnsRecords=[{{Type=A,TTL=10}}]"),
        "--health-check-custom-config",
        "FailureThreshold=1",
    ])["Service"]["Arn"]
        .as_str()
        .unwrap()
        .to_string();

    serve.register_task_definition(
        dir.path(),
        &echo_td("api", "awsvpc", json!({"containerPort": 8080})),
    );
    let net = "awsvpcConfiguration={subnets=[subnet-1]}";
    serve.aws_ok(&[
        "ecs",
        "create-service",
        "--service-name",
        "api",
        "--task-definition",
        "api",
        "--desired-count",
        "2",
        "--network-configuration",
        net,
        "--service-registries",
        &format!("registryArn={registry}"),
    ]);
    serve.aws_ok(&["ecs", "wait", "services-stable", "--services", "api"]);
    let svc = &serve.aws_ok(&["ecs", "describe-services", "--services", "api"])["services"][0];
    assert_eq!(
        svc["serviceRegistries"][0]["registryArn"],
        registry.as_str()
    );

    // Cloud Map lists both tasks' addresses.
    let arns = serve.aws_ok(&["ecs", "list-tasks", "--service-name", "api"])["taskArns"].clone();
    let arns: Vec<String> = arns
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let mut task_ips: Vec<String> = describe(&serve, &arns)
        .iter()
        .map(|t| detail(&t["attachments"][0], "privateIPv4Address").to_string())
        .collect();
    task_ips.sort();
    let found = serve.aws_ok(&[
        "servicediscovery",
        "discover-instances",
        "--namespace-name",
        "local",
        "--service-name",
        "api",
    ]);
    let mut listed: Vec<String> = found["Instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["Attributes"]["AWS_INSTANCE_IPV4"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    listed.sort();
    assert_eq!(listed, task_ips);
    for ip in &task_ips {
        say(format!("{ip}:8080").parse().unwrap(), "ready?");
    }

    // A task of another service calls it by name.
    assert_eq!(
        serve.probe_task(dir.path(), &[], &["send", "api.local:8080", "hello"]),
        0
    );
    assert_eq!(
        serve.probe_task(dir.path(), &[], &["lookup", "nope.local"]),
        1
    );

    // Scaled to zero, the name answers nothing.
    serve.aws_ok(&[
        "ecs",
        "update-service",
        "--service",
        "api",
        "--desired-count",
        "0",
    ]);
    serve.aws_ok(&["ecs", "wait", "services-stable", "--services", "api"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while serve.aws_ok(&[
        "servicediscovery",
        "discover-instances",
        "--namespace-name",
        "local",
        "--service-name",
        "api",
    ])["Instances"]
        != json!([])
    {
        assert!(Instant::now() < deadline, "instances outlived their tasks");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        serve.probe_task(dir.path(), &[], &["lookup", "api.local"]),
        1
    );

    // What Cloud Map and ECS refuse.
    serve.aws_err(
        &[
            "servicediscovery",
            "create-private-dns-namespace",
            "--name",
            "local",
            "--vpc",
            "vpc-1",
        ],
        "NamespaceAlreadyExists",
    );
    serve.aws_err(
        &["servicediscovery", "delete-namespace", "--id", &ns],
        "ResourceInUse",
    );
    serve.register_task_definition(
        dir.path(),
        &echo_td("bridged", "bridge", json!({"containerPort": 8080})),
    );
    serve.aws_err(
        &[
            "ecs",
            "create-service",
            "--service-name",
            "b",
            "--task-definition",
            "bridged",
            "--service-registries",
            &format!("registryArn={registry}"),
        ],
        "InvalidParameterException",
    );
    serve.aws_err(
        &[
            "ecs",
            "create-service",
            "--service-name",
            "c",
            "--task-definition",
            "api",
            "--network-configuration",
            net,
            "--service-registries",
            "registryArn=arn:aws:servicediscovery:eu-west-1:000000000000:service/srv-nope",
        ],
        "InvalidParameterException",
    );
}

/// The address of an awsvpc task, from its network interface.
fn eni_address(task: &Value) -> Ipv4Addr {
    detail(&task["attachments"][0], "privateIPv4Address")
        .parse()
        .unwrap()
}

/// The tasks of `service` in `cluster`, described.
fn service_tasks(serve: &ServeProcess, cluster: &str, service: &str) -> Vec<Value> {
    let listed = serve.aws_ok(&[
        "ecs",
        "list-tasks",
        "--cluster",
        cluster,
        "--service-name",
        service,
    ]);
    let arns: Vec<String> = listed["taskArns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let mut cmd = vec!["ecs", "describe-tasks", "--cluster", cluster, "--tasks"];
    cmd.extend(arns.iter().map(String::as_str));
    serve.aws_ok(&cmd)["tasks"].as_array().unwrap().clone()
}

/// Every AWS tutorial starts with `create-cluster`: FARGATE runs there on
/// skiff's own capacity, with no container instance, while EC2 tasks wait
/// for an instance to join that cluster.
#[test]
fn fargate_runs_in_a_new_cluster_and_ec2_waits_for_an_instance() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut serve = ServeProcess::start(&data);
    assert_eq!(serve.cluster, "default");
    serve.push(app("ECHO_P2"), "echo:v1");
    serve.aws_ok(&["ecs", "create-cluster", "--cluster-name", "mycluster"]);
    serve.register_task_definition(
        dir.path(),
        &echo_td("web", "awsvpc", json!({"containerPort": 8080})),
    );
    let net = "awsvpcConfiguration={subnets=[subnet-0a1b2c]}";

    // EC2 needs an instance in the cluster; there is none.
    let refused = serve.aws_err(
        &[
            "ecs",
            "run-task",
            "--cluster",
            "mycluster",
            "--task-definition",
            "web",
            "--network-configuration",
            net,
        ],
        "InvalidParameterException",
    );
    assert!(
        refused.contains("No Container Instances were found in your cluster."),
        "{refused}"
    );

    // FARGATE needs none: a service reaches a steady state and answers.
    serve.aws_ok(&[
        "ecs",
        "create-service",
        "--cluster",
        "mycluster",
        "--service-name",
        "web",
        "--task-definition",
        "web",
        "--desired-count",
        "2",
        "--launch-type",
        "FARGATE",
        "--network-configuration",
        net,
    ]);
    serve.aws_ok(&[
        "ecs",
        "wait",
        "services-stable",
        "--cluster",
        "mycluster",
        "--services",
        "web",
    ]);
    let tasks = service_tasks(&serve, "mycluster", "web");
    assert_eq!(tasks.len(), 2, "{tasks:#?}");
    for t in &tasks {
        assert_eq!(t["launchType"], "FARGATE");
        assert_eq!(t["lastStatus"], "RUNNING");
        assert!(
            t["clusterArn"]
                .as_str()
                .unwrap()
                .ends_with(":cluster/mycluster")
        );
        assert!(t.get("containerInstanceArn").is_none(), "{t:#}");
        assert_eq!(
            say(SocketAddr::from((eni_address(t), 8080)), "hi"),
            "web hi"
        );
    }
    let svc = &serve.aws_ok(&[
        "ecs",
        "describe-services",
        "--cluster",
        "mycluster",
        "--services",
        "web",
    ])["services"][0];
    assert_eq!(svc["runningCount"], 2, "{svc:#}");
    // The cluster has no instances, and the local one counts no FARGATE
    // task as its own.
    let listed = serve.aws_ok(&["ecs", "list-container-instances", "--cluster", "mycluster"]);
    assert_eq!(listed["containerInstanceArns"], json!([]));
    let local = serve.aws_ok(&["ecs", "list-container-instances"])["containerInstanceArns"][0]
        .as_str()
        .unwrap()
        .to_string();
    let described = &serve.aws_ok(&[
        "ecs",
        "describe-container-instances",
        "--container-instances",
        &local,
    ])["containerInstances"][0];
    assert_eq!(described["runningTasksCount"], 0, "{described:#}");

    // An instance that joins the cluster with no agent connected is ECS's
    // AGENT reason, not a placement.
    let joined = serve.aws_ok(&[
        "ecs",
        "register-container-instance",
        "--cluster",
        "mycluster",
        "--total-resources",
        "name=CPU,type=INTEGER,integerValue=1024",
        "name=MEMORY,type=INTEGER,integerValue=1024",
    ]);
    let joined = joined["containerInstance"]["containerInstanceArn"]
        .as_str()
        .unwrap()
        .to_string();
    let run = serve.aws_ok(&[
        "ecs",
        "run-task",
        "--cluster",
        "mycluster",
        "--task-definition",
        "web",
        "--network-configuration",
        net,
    ]);
    assert_eq!(run["tasks"], json!([]));
    assert_eq!(run["failures"], json!([{"arn": joined, "reason": "AGENT"}]));
    serve.aws_ok(&[
        "ecs",
        "deregister-container-instance",
        "--cluster",
        "mycluster",
        "--container-instance",
        &joined,
    ]);

    // skiff serve's own instance joins the cluster named by an ECS agent
    // config file: EC2 tasks run there now, and the FARGATE service comes
    // back after the restart.
    assert_eq!(serve.terminate(), 0);
    let config = dir.path().join("ecs.config");
    std::fs::write(&config, "ECS_CLUSTER=mycluster\n").unwrap();
    let serve = ServeProcess::start_with(&data, &["--ecs-config", config.to_str().unwrap()]);
    assert_eq!(serve.cluster, "mycluster");
    let listed = serve.aws_ok(&["ecs", "list-container-instances", "--cluster", "mycluster"]);
    assert_eq!(listed["containerInstanceArns"].as_array().unwrap().len(), 1);
    let run = serve.aws_ok(&[
        "ecs",
        "run-task",
        "--cluster",
        "mycluster",
        "--task-definition",
        "web",
        "--network-configuration",
        net,
    ]);
    assert_eq!(run["failures"], json!([]), "{run:#}");
    let arn = run["tasks"][0]["taskArn"].as_str().unwrap();
    let wait = [
        "ecs",
        "wait",
        "tasks-running",
        "--cluster",
        "mycluster",
        "--tasks",
        arn,
    ];
    serve.aws_ok(&wait);
    let tasks = serve.aws_ok(&[
        "ecs",
        "describe-tasks",
        "--cluster",
        "mycluster",
        "--tasks",
        arn,
    ])["tasks"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(tasks[0]["launchType"], "EC2");
    assert_eq!(
        tasks[0]["containerInstanceArn"],
        listed["containerInstanceArns"][0]
    );
    assert_eq!(
        say(SocketAddr::from((eni_address(&tasks[0]), 8080)), "ec2"),
        "web ec2"
    );
    serve.aws_ok(&[
        "ecs",
        "wait",
        "services-stable",
        "--cluster",
        "mycluster",
        "--services",
        "web",
    ]);
    let tasks = service_tasks(&serve, "mycluster", "web");
    assert_eq!(tasks.len(), 2, "{tasks:#?}");
    assert!(
        tasks
            .iter()
            .all(|t| t.get("containerInstanceArn").is_none())
    );
    // The default cluster has no instance left: EC2 waits there now.
    serve.register_task_definition(
        dir.path(),
        &json!({"family": "job", "networkMode": "none",
            "containerDefinitions": [{"name": "a", "image": "echo:v1", "memory": 16}]}),
    );
    let refused = serve.aws_err(
        &["ecs", "run-task", "--task-definition", "job"],
        "InvalidParameterException",
    );
    assert!(refused.contains("No Container Instances"), "{refused}");
}
