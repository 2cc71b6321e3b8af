//! Load balancers built with `aws elbv2` in front of ECS services made with
//! `aws ecs create-service --load-balancers`: path routing between two
//! services, a task that fails its health checks drained and replaced, a
//! rolling deployment with no failed request under a steady client, a
//! network load balancer in front of a TCP echo service, and the mistakes
//! ELB refuses.

use crate::support::ServeProcess;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasm_apps::app;

/// An HTTP service's definition: http-hello answering `WHO` at
/// `.../whoami`, sick while its task volume holds `sick`.
pub(crate) fn web_td(family: &str, who: &str) -> Value {
    json!({
        "family": family, "networkMode": "awsvpc", "cpu": "256", "memory": "512",
        "volumes": [{"name": "state"}],
        "containerDefinitions": [{
            "name": "web", "image": "hello-http:v1",
            "environment": [{"name": "WHO", "value": who}],
            "portMappings": [{"containerPort": 80}],
            "mountPoints": [{"sourceVolume": "state", "containerPath": "/state"}],
            "stopTimeout": 5,
        }],
    })
}

use skiff_harness::free_port;

pub(crate) fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

/// GET through the load balancer: (status, body); status 0 if the
/// connection itself failed.
pub(crate) fn get(port: u16, path: &str) -> (u16, String) {
    let attempt = || -> std::io::Result<(u16, String)> {
        let mut c = TcpStream::connect(("127.0.0.1", port))?;
        c.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n"
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

/// POSTs `body` to http-hello's `/echo` through the load balancer; what
/// came back.
fn echo(port: u16, body: &[u8]) -> (u16, Vec<u8>) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        c,
        "POST /echo HTTP/1.1\r\nHost: shop.example\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    c.write_all(body).unwrap();
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, raw[split + 4..].to_vec())
}

/// The fewest established TCP connections to any of `to` seen in five
/// looks 50 ms apart, from /proc/net/tcp. A load balancer's pooled
/// connections to a target stay open between requests; a health check's
/// is open for a moment only.
fn pooled_connections_to(to: &[SocketAddr]) -> usize {
    let parse = |field: &str| -> Option<SocketAddr> {
        let (ip, port) = field.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?;
        let port = u16::from_str_radix(port, 16).ok()?;
        // The kernel prints the address as it is in memory (network
        // order), read as a host (little-endian) integer.
        Some(SocketAddr::from((ip.to_le_bytes(), port)))
    };
    (0..5)
        .map(|i| {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(50));
            }
            let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
            table
                .lines()
                .skip(1)
                .filter(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    // State 01: established.
                    fields.get(3) == Some(&"01")
                        && fields
                            .get(2)
                            .and_then(|f| parse(f))
                            .is_some_and(|a| to.contains(&a))
                })
                .count()
        })
        .min()
        .unwrap_or(0)
}

/// A 300 KB body POSTed to `/echo` through the load balancer on `port`
/// comes back byte for byte.
fn assert_echoed(port: u16) {
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(echo(port, &body), (200, body));
}

/// What http-hello's `/headers` shows of a [`get`] through the load
/// balancer listening on `port`: the client's host, the `X-Forwarded-*`
/// headers, and not the client's `Connection` (hop-by-hop).
fn forwarded_headers(port: u16) -> String {
    format!(
        "authority=shop.example\nx-forwarded-for: 127.0.0.1\nx-forwarded-port: {port}\nx-forwarded-proto: http"
    )
}

pub(crate) fn target_states(serve: &ServeProcess, tg: &str) -> Vec<String> {
    serve.aws_ok(&["elbv2", "describe-target-health", "--target-group-arn", tg])["TargetHealthDescriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| s(&d["TargetHealth"]["State"]))
        .collect()
}

pub(crate) fn until(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub(crate) fn all_healthy(serve: &ServeProcess, tg: &str, n: usize) -> bool {
    let states = target_states(serve, tg);
    states.len() == n && states.iter().all(|s| s == "healthy")
}

#[test]
fn an_application_load_balancer_routes_drains_and_rolls_services() {
    let dir = tempfile::tempdir().unwrap();
    // As a non-root user's skiff: the tasks' port 80 is not the host's
    // (see skiff_runtime::ports), and the load balancer, its health checks
    // and the API still say 80.
    let serve = ServeProcess::start_without_low_ports(dir.path());
    serve.push(app("HTTP_HELLO_P2"), "hello-http:v1");
    serve.register_task_definition(dir.path(), &web_td("web", "web-v1"));
    serve.register_task_definition(dir.path(), &web_td("api", "api"));

    // The load balancer, entirely with aws elbv2.
    let lb = s(&serve.aws_ok(&[
        "elbv2",
        "create-load-balancer",
        "--name",
        "shop",
        "--type",
        "application",
        "--scheme",
        "internal",
        "--subnets",
        "subnet-1",
    ])["LoadBalancers"][0]["LoadBalancerArn"]);
    let tg = |name: &str| {
        s(&serve.aws_ok(&[
            "elbv2",
            "create-target-group",
            "--name",
            name,
            "--protocol",
            "HTTP",
            "--port",
            "80",
            "--target-type",
            "ip",
            "--vpc-id",
            "vpc-1",
            "--health-check-path",
            "/health",
            "--health-check-interval-seconds",
            "5",
            "--healthy-threshold-count",
            "2",
            "--unhealthy-threshold-count",
            "2",
        ])["TargetGroups"][0]["TargetGroupArn"])
    };
    let (web_tg, api_tg) = (tg("web"), tg("api"));
    for t in [&web_tg, &api_tg] {
        serve.aws_ok(&[
            "elbv2",
            "modify-target-group-attributes",
            "--target-group-arn",
            t,
            "--attributes",
            "Key=deregistration_delay.timeout_seconds,Value=10",
        ]);
    }
    let port = free_port();
    let listener = s(&serve.aws_ok(&[
        "elbv2",
        "create-listener",
        "--load-balancer-arn",
        &lb,
        "--protocol",
        "HTTP",
        "--port",
        &port.to_string(),
        "--default-actions",
        &format!("Type=forward,TargetGroupArn={web_tg}"),
    ])["Listeners"][0]["ListenerArn"]);
    serve.aws_ok(&[
        "elbv2",
        "create-rule",
        "--listener-arn",
        &listener,
        "--priority",
        "10",
        "--conditions",
        "Field=path-pattern,Values=/api/*",
        "--actions",
        &format!("Type=forward,TargetGroupArn={api_tg}"),
    ]);

    // Two services behind it.
    let net = "awsvpcConfiguration={subnets=[subnet-1]}";
    for (name, t, count) in [("web", &web_tg, "2"), ("api", &api_tg, "1")] {
        serve.aws_ok(&[
            "ecs",
            "create-service",
            "--service-name",
            name,
            "--task-definition",
            name,
            "--desired-count",
            count,
            "--network-configuration",
            net,
            "--health-check-grace-period-seconds",
            "0",
            "--load-balancers",
            &format!("targetGroupArn={t},containerName=web,containerPort=80"),
        ]);
    }
    serve.aws_ok(&["ecs", "wait", "services-stable", "--services", "web", "api"]);
    until("healthy targets", 60, || {
        all_healthy(&serve, &web_tg, 2) && all_healthy(&serve, &api_tg, 1)
    });
    let svc = &serve.aws_ok(&["ecs", "describe-services", "--services", "web"])["services"][0];
    assert_eq!(svc["loadBalancers"][0]["targetGroupArn"], web_tg.as_str());

    // Path routing.
    assert_eq!(get(port, "/whoami"), (200, "web-v1".into()));
    assert_eq!(get(port, "/api/whoami"), (200, "api".into()));
    assert_eq!(get(port, "/apix/whoami"), (200, "web-v1".into()));
    for _ in 0..10 {
        assert_eq!(get(port, "/whoami"), (200, "web-v1".into()));
    }
    request_counts_are_in_cloudwatch(&serve, &lb, &web_tg, &api_tg);
    // What the target is sent, and a body both ways.
    assert_eq!(get(port, "/headers"), (200, forwarded_headers(port)));
    assert_echoed(port);
    // All of it handed to the tasks in-process: the load balancer holds no
    // connections to them (port 80 is 64592 on the host here).
    let tasks = serve.aws_ok(&["ecs", "list-tasks"])["taskArns"].clone();
    let mut described = vec!["ecs", "describe-tasks", "--tasks"];
    let arns: Vec<String> = tasks.as_array().unwrap().iter().map(s).collect();
    described.extend(arns.iter().map(String::as_str));
    let task_ports: Vec<SocketAddr> = serve.aws_ok(&described)["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| {
            let ip: std::net::Ipv4Addr =
                s(&t["containers"][0]["networkInterfaces"][0]["privateIpv4Address"])
                    .parse()
                    .unwrap();
            [SocketAddr::from((ip, 80)), SocketAddr::from((ip, 64592))]
        })
        .collect();
    assert_eq!(task_ports.len(), 6, "{task_ports:?}");
    assert_eq!(pooled_connections_to(&task_ports), 0);

    // A task that fails its health checks is drained and replaced.
    let web_tasks = || -> Vec<String> {
        serve.aws_ok(&["ecs", "list-tasks", "--service-name", "web"])["taskArns"]
            .as_array()
            .unwrap()
            .iter()
            .map(s)
            .collect()
    };
    let victim = web_tasks()[0].clone();
    let victim_id = victim.rsplit('/').next().unwrap().to_string();
    let volume = serve
        .data_dir
        .join("agent/tasks")
        .join(&victim_id)
        .join("volumes/state");
    std::fs::write(volume.join("sick"), "").unwrap();
    until("the sick task to be stopped", 90, || {
        let t = &serve.aws_ok(&["ecs", "describe-tasks", "--tasks", &victim])["tasks"][0];
        t["desiredStatus"] == "STOPPED"
    });
    let t = &serve.aws_ok(&["ecs", "describe-tasks", "--tasks", &victim])["tasks"][0];
    assert!(
        s(&t["stoppedReason"]).starts_with("Task failed ELB health checks in (target-group "),
        "{t:#}"
    );
    until("a healthy replacement", 90, || {
        !web_tasks().contains(&victim) && web_tasks().len() == 2 && all_healthy(&serve, &web_tg, 2)
    });
    // The sick one gets no traffic meanwhile, and is gone now.
    for _ in 0..10 {
        assert_eq!(get(port, "/whoami"), (200, "web-v1".into()));
    }

    // A rolling deployment under a steady client: no request fails.
    let (stop, client) = steady_client(port);
    serve.register_task_definition(dir.path(), &web_td("web", "web-v2"));
    serve.aws_ok(&[
        "ecs",
        "update-service",
        "--service",
        "web",
        "--task-definition",
        "web:2",
    ]);
    until("the new revision to take over", 180, || {
        let svc = &serve.aws_ok(&["ecs", "describe-services", "--services", "web"])["services"][0];
        svc["deployments"].as_array().unwrap().len() == 1
            && svc["deployments"][0]["rolloutState"] == "COMPLETED"
            && all_healthy(&serve, &web_tg, 2)
    });
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
    assert!(seen.len() > 50, "only {} requests", seen.len());

    // A user's StopTask drains the task first, too: no request fails.
    let (stop, client) = steady_client(port);
    let victim = web_tasks()[0].clone();
    serve.aws_ok(&["ecs", "stop-task", "--task", &victim, "--reason", "by hand"]);
    until("a replacement for the stopped task", 90, || {
        !web_tasks().contains(&victim) && web_tasks().len() == 2 && all_healthy(&serve, &web_tg, 2)
    });
    stop.store(true, Ordering::Relaxed);
    let seen = client.join().unwrap();
    let failed: Vec<&(u16, String)> = seen.iter().filter(|(status, _)| *status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed",
        failed.len(),
        seen.len()
    );
    let t = &serve.aws_ok(&["ecs", "describe-tasks", "--tasks", &victim])["tasks"][0];
    assert_eq!(t["stoppedReason"], "by hand");
}

/// An application load balancer `name` whose listener, on a free port,
/// forwards to a new HTTP target group `name` of type `target_type`,
/// checked at `/health` every 5 s: the group's ARN and the port.
pub(crate) fn http_load_balancer(
    serve: &ServeProcess,
    name: &str,
    target_type: &str,
) -> (String, u16) {
    let lb = s(&serve.aws_ok(&[
        "elbv2",
        "create-load-balancer",
        "--name",
        name,
        "--subnets",
        "subnet-1",
    ])["LoadBalancers"][0]["LoadBalancerArn"]);
    let tg = s(&serve.aws_ok(&[
        "elbv2",
        "create-target-group",
        "--name",
        name,
        "--protocol",
        "HTTP",
        "--port",
        "80",
        "--target-type",
        target_type,
        "--health-check-path",
        "/health",
        "--health-check-interval-seconds",
        "5",
        "--healthy-threshold-count",
        "2",
    ])["TargetGroups"][0]["TargetGroupArn"]);
    let port = free_port();
    serve.aws_ok(&[
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
    (tg, port)
}

/// Registers the server at 127.0.0.1:`port` as the only target of ip
/// group `tg`, and waits until it is healthy.
fn register_healthy(serve: &ServeProcess, tg: &str, port: u16) {
    serve.aws_ok(&[
        "elbv2",
        "register-targets",
        "--target-group-arn",
        tg,
        "--targets",
        &format!("Id=127.0.0.1,Port={port}"),
    ]);
    until("a healthy target", 60, || all_healthy(serve, tg, 1));
}

/// The EC2-style setup: a bridge-mode service with dynamic host ports
/// behind a target group of type instance. Its targets are this machine's
/// instance at each task's published port, and requests reach the tasks.
#[test]
fn an_application_load_balancer_in_front_of_a_bridge_service() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(app("HTTP_HELLO_P2"), "hello-http:v1");
    serve.register_task_definition(
        dir.path(),
        &json!({
            "family": "bridged", "networkMode": "bridge", "cpu": "256", "memory": "512",
            "containerDefinitions": [{
                "name": "web", "image": "hello-http:v1",
                "environment": [{"name": "WHO", "value": "bridged"}],
                "portMappings": [{"containerPort": 80, "hostPort": 0}],
                "stopTimeout": 2,
            }],
        }),
    );
    let (tg, port) = http_load_balancer(&serve, "bridged", "instance");
    serve.aws_ok(&[
        "ecs",
        "create-service",
        "--service-name",
        "bridged",
        "--task-definition",
        "bridged",
        "--desired-count",
        "2",
        "--health-check-grace-period-seconds",
        "0",
        "--load-balancers",
        &format!("targetGroupArn={tg},containerName=web,containerPort=80"),
    ]);
    serve.aws_ok(&["ecs", "wait", "services-stable", "--services", "bridged"]);
    until("healthy targets", 60, || all_healthy(&serve, &tg, 2));

    // The targets are the instance at the tasks' dynamic host ports.
    let tasks =
        serve.aws_ok(&["ecs", "list-tasks", "--service-name", "bridged"])["taskArns"].clone();
    let described = serve.aws_ok(&[
        "ecs",
        "describe-tasks",
        "--tasks",
        &s(&tasks[0]),
        &s(&tasks[1]),
    ]);
    let mut bound: Vec<i64> = described["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["containers"][0]["networkBindings"][0]["hostPort"]
                .as_i64()
                .unwrap()
        })
        .collect();
    bound.sort();
    let health = serve.aws_ok(&["elbv2", "describe-target-health", "--target-group-arn", &tg]);
    let mut targets: Vec<i64> = health["TargetHealthDescriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["Target"]["Port"].as_i64().unwrap())
        .collect();
    targets.sort();
    assert_eq!(targets, bound);
    assert!(
        bound.iter().all(|p| (49153..=65535).contains(p)),
        "{bound:?}"
    );
    let instance = s(&health["TargetHealthDescriptions"][0]["Target"]["Id"]);
    assert!(instance.starts_with("i-"), "{instance}");

    for _ in 0..6 {
        assert_eq!(get(port, "/whoami"), (200, "bridged".into()));
    }
    assert_eq!(get(port, "/headers"), (200, forwarded_headers(port)));
    assert_echoed(port);
    // Handed to the tasks' servers in-process, through their published
    // ports: the load balancer holds no connections to those.
    let published: Vec<SocketAddr> = bound
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p as u16)))
        .collect();
    assert_eq!(pooled_connections_to(&published), 0);
}

/// A target outside `skiff serve` (a `skiff run` HTTP server, a process
/// of its own) is reached over loopback connections, and is sent the same
/// request as the services' tasks, which `skiff serve` hands requests to
/// without a socket.
#[test]
fn an_application_load_balancer_forwards_to_a_server_outside_skiff_serve() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    let outside = crate::http::Server::start(&["-e", "WHO=outside"]);
    let (tg, port) = http_load_balancer(&serve, "outside", "ip");
    register_healthy(&serve, &tg, outside.addr.port());
    assert_eq!(get(port, "/headers"), (200, forwarded_headers(port)));
    assert_echoed(port);
    for _ in 0..20 {
        assert_eq!(get(port, "/whoami"), (200, "outside".into()));
    }
    // Over TCP: the load balancer keeps its connection to the server open
    // for the next request.
    assert!(pooled_connections_to(&[outside.addr]) >= 1);
    let counted = serve.aws_ok(&["elbv2", "describe-target-health", "--target-group-arn", &tg]);
    assert_eq!(
        counted["TargetHealthDescriptions"][0]["TargetHealth"]["State"],
        "healthy"
    );
}

/// A target that closes each keep-alive connection once it has answered,
/// as a server does whose idle timeout has passed: a request through the
/// load balancer that finds its pooled connection closed goes on a new
/// one instead of failing.
#[test]
fn a_pooled_connection_the_target_closed_is_not_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target_port = server.local_addr().unwrap().port();
    // One message per request answered (health checks aside), once its
    // connection is closed.
    let (closed_tx, closed) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        for stream in server.incoming().map_while(Result::ok) {
            let closed_tx = closed_tx.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                // HTTP/1.1 and no `Connection: close`: the connection
                // looks reusable, and then it closes.
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n");
                drop(stream);
                if !head.starts_with(b"GET /health ") {
                    let _ = closed_tx.send(());
                }
            });
        }
    });
    let (tg, port) = http_load_balancer(&serve, "closing", "ip");
    register_healthy(&serve, &tg, target_port);
    for _ in 0..20 {
        assert_eq!(get(port, "/"), (200, "ok".into()));
        // The next request comes once the target has closed this one's
        // connection (closing it mid-request is a different case: a
        // request the target may have seen is not sent again).
        closed
            .recv_timeout(Duration::from_secs(10))
            .expect("the target closed the connection");
    }
}

/// GETs through the load balancer one after another until told to stop;
/// what each got.
fn steady_client(port: u16) -> (Arc<AtomicBool>, std::thread::JoinHandle<Vec<(u16, String)>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut seen: Vec<(u16, String)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                seen.push(get(port, "/whoami"));
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        })
    };
    (stop, client)
}

/// The requests so far — 12 to web's two targets, 1 to api's — read back
/// through `aws cloudwatch`, by load balancer, by target group, per target,
/// and the targets' health.
fn request_counts_are_in_cloudwatch(serve: &ServeProcess, lb: &str, web_tg: &str, api_tg: &str) {
    let lb_value = lb.split(":loadbalancer/").nth(1).unwrap();
    let lb_dim = format!("Name=LoadBalancer,Value={lb_value}");
    let tg_value = |arn: &str| arn.rsplit(':').next().unwrap().to_string();
    let tg_dim = |arn: &str| format!("Name=TargetGroup,Value={}", tg_value(arn));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (start, end) = ((now - 600).to_string(), (now + 60).to_string());
    // `aws cloudwatch get-metric-statistics` for an AWS/ApplicationELB
    // metric over the last ten minutes; `rest` is --period and the
    // statistics.
    let statistics = |name: &str, dims: &[&str], rest: &[&str]| -> (bool, String, String) {
        let mut args = vec![
            "cloudwatch",
            "get-metric-statistics",
            "--namespace",
            "AWS/ApplicationELB",
            "--metric-name",
            name,
            "--start-time",
            &start,
            "--end-time",
            &end,
        ];
        if !dims.is_empty() {
            args.push("--dimensions");
            args.extend(dims);
        }
        args.extend(rest);
        serve.aws(&args)
    };
    // The values of one statistic, one per period.
    let values = |name: &str, dims: &[&str], period: &str, stat: &str| -> Vec<f64> {
        let (ok, out, err) = statistics(name, dims, &["--period", period, "--statistics", stat]);
        assert!(ok, "get-metric-statistics {name} failed: {err}");
        let out: Value = serde_json::from_str(&out).unwrap();
        out["Datapoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d[stat].as_f64().unwrap())
            .collect()
    };
    let sum = |name: &str, dims: &[&str], period: &str| -> f64 {
        values(name, dims, period, "Sum").iter().sum()
    };
    assert_eq!(sum("RequestCount", &[&lb_dim], "60"), 13.0);
    assert_eq!(
        sum("RequestCountPerTarget", &[&tg_dim(web_tg)], "60"),
        6.0,
        "12 requests over 2 healthy targets"
    );

    // GetMetricData: one query per target group.
    let query = |id: &str, tg: &str| {
        json!({
            "Id": id,
            "MetricStat": {
                "Metric": {
                    "Namespace": "AWS/ApplicationELB", "MetricName": "RequestCount",
                    "Dimensions": [
                        {"Name": "TargetGroup", "Value": tg_value(tg)},
                        {"Name": "LoadBalancer", "Value": lb_value},
                    ],
                },
                "Period": 60, "Stat": "Sum",
            },
        })
    };
    let queries = json!([query("web", web_tg), query("api", api_tg)]).to_string();
    let out = serve.aws_ok(&[
        "cloudwatch",
        "get-metric-data",
        "--start-time",
        &start,
        "--end-time",
        &end,
        "--metric-data-queries",
        &queries,
    ]);
    let results = out["MetricDataResults"].as_array().unwrap();
    let total = |id: &str| -> f64 {
        let r = results.iter().find(|r| r["Id"] == id).unwrap();
        assert_eq!(r["StatusCode"], "Complete");
        assert_eq!(
            r["Timestamps"].as_array().unwrap().len(),
            r["Values"].as_array().unwrap().len()
        );
        r["Values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .sum()
    };
    assert_eq!((total("web"), total("api")), (12.0, 1.0), "{out:#}");

    // Each target's own count (skiff's Target dimension): round robin
    // split web's evenly.
    let listed = serve.aws_ok(&[
        "cloudwatch",
        "list-metrics",
        "--namespace",
        "AWS/ApplicationELB",
        "--metric-name",
        "RequestCount",
        "--dimensions",
        &tg_dim(web_tg),
        "Name=Target",
    ]);
    let targets: Vec<String> = listed["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let dims = m["Dimensions"].as_array().unwrap();
            s(&dims.iter().find(|d| d["Name"] == "Target").unwrap()["Value"])
        })
        .collect();
    assert_eq!(targets.len(), 2, "{listed:#}");
    for t in &targets {
        let target = format!("Name=Target,Value={t}");
        let dims = [tg_dim(web_tg), lb_dim.clone(), target];
        let dims: Vec<&str> = dims.iter().map(String::as_str).collect();
        assert_eq!(sum("RequestCount", &dims, "600"), 6.0, "{t}");
    }

    // Health, sampled every few seconds.
    until("HealthyHostCount", 30, || {
        values(
            "HealthyHostCount",
            &[&tg_dim(web_tg), &lb_dim],
            "60",
            "Maximum",
        )
        .contains(&2.0)
    });

    // Mistakes, by CloudWatch's codes.
    let refused = |rest: &[&str]| -> String {
        let (ok, out, err) = statistics("RequestCount", &[], rest);
        assert!(!ok, "{rest:?} succeeded: {out}");
        assert!(err.contains("(InvalidParameterValue)"), "{rest:?}: {err}");
        err
    };
    let err = refused(&["--period", "7", "--statistics", "Sum"]);
    assert!(err.contains("Period 7"), "{err}");
    refused(&["--period", "60", "--extended-statistics", "p99"]);
}

#[test]
fn a_network_load_balancer_carries_tcp_to_an_echo_service() {
    let dir = tempfile::tempdir().unwrap();
    // Load balancers on an address of their own, which tasks can reach
    // (their 127.0.0.1 is themselves).
    let serve = ServeProcess::start_with(dir.path(), &["--lb-address", "127.17.0.1"]);
    serve.push(app("ECHO_P2"), "echo:v1");
    serve.push(app("NET_PROBE_P2"), "net-probe:v1");
    serve.register_task_definition(dir.path(),
        &json!({
            "family": "echo", "networkMode": "awsvpc", "cpu": "256", "memory": "512",
            "containerDefinitions": [{"name": "echo", "image": "echo:v1",
                "command": ["tcp", "0.0.0.0:7000", "nlb"], "portMappings": [{"containerPort": 7000}],
                "stopTimeout": 2}],
        }),
    );
    let lb = s(&serve.aws_ok(&[
        "elbv2",
        "create-load-balancer",
        "--name",
        "echo",
        "--type",
        "network",
        "--subnets",
        "subnet-1",
    ])["LoadBalancers"][0]["LoadBalancerArn"]);
    let tg = s(&serve.aws_ok(&[
        "elbv2",
        "create-target-group",
        "--name",
        "echo",
        "--protocol",
        "TCP",
        "--port",
        "7000",
        "--target-type",
        "ip",
        "--health-check-interval-seconds",
        "5",
        "--healthy-threshold-count",
        "2",
    ])["TargetGroups"][0]["TargetGroupArn"]);
    // A network load balancer has no security groups of its own (as on
    // AWS): the targets' groups must let its address in.
    let default = s(&serve.aws_ok(&[
        "ec2",
        "describe-security-groups",
        "--group-names",
        "default",
    ])["SecurityGroups"][0]["GroupId"]);
    serve.aws_ok(&[
        "ec2",
        "authorize-security-group-ingress",
        "--group-id",
        &default,
        "--protocol",
        "tcp",
        "--port",
        "7000",
        "--cidr",
        "127.17.0.1/32",
    ]);
    let port = free_port();
    serve.aws_ok(&[
        "elbv2",
        "create-listener",
        "--load-balancer-arn",
        &lb,
        "--protocol",
        "TCP",
        "--port",
        &port.to_string(),
        "--default-actions",
        &format!("Type=forward,TargetGroupArn={tg}"),
    ]);
    serve.aws_ok(&[
        "ecs",
        "create-service",
        "--service-name",
        "echo",
        "--task-definition",
        "echo",
        "--desired-count",
        "2",
        "--network-configuration",
        "awsvpcConfiguration={subnets=[subnet-1]}",
        "--load-balancers",
        &format!("targetGroupArn={tg},containerName=echo,containerPort=7000"),
    ]);
    until("healthy echo targets", 90, || all_healthy(&serve, &tg, 2));
    for i in 0..6 {
        let mut c = TcpStream::connect(SocketAddr::from(([127, 17, 0, 1], port))).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        writeln!(c, "line {i}").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply).unwrap();
        assert_eq!(reply.trim_end(), format!("nlb line {i}"));
    }
    // Six connections, in CloudWatch as NewFlowCount (boto3 this time).
    let lb_dim = lb.split(":loadbalancer/").nth(1).unwrap();
    let flows = serve.boto3(
        &format!(
            "import time\n\
             cw = boto3.client('cloudwatch', endpoint_url=ENDPOINT, region_name=REGION)\n\
             out = cw.get_metric_statistics(Namespace='AWS/NetworkELB', MetricName='NewFlowCount',\n\
                 Dimensions=[{{'Name': 'LoadBalancer', 'Value': '{lb_dim}'}}],\n\
                 StartTime=time.time() - 600, EndTime=time.time() + 60, Period=60, Statistics=['Sum'])\n\
             print(int(sum(d['Sum'] for d in out['Datapoints'])))"
        ),
        "AKIDEXAMPLE",
        "secret",
    );
    assert_eq!(flows.trim(), "6");
    // A task calls the load balancer by its DNS name.
    let dns = s(
        &serve.aws_ok(&["elbv2", "describe-load-balancers", "--names", "echo"])["LoadBalancers"][0]
            ["DNSName"],
    );
    let target = format!("{dns}:{port}");
    assert_eq!(
        serve.probe_task(dir.path(), &[], &["send", &target, "from a task"]),
        0
    );
}

#[test]
fn load_balancer_mistakes_get_elb_error_codes() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    let lb = s(&serve.aws_ok(&[
        "elbv2",
        "create-load-balancer",
        "--name",
        "a",
        "--subnets",
        "subnet-1",
    ])["LoadBalancers"][0]["LoadBalancerArn"]);
    serve.aws_err(
        &[
            "elbv2",
            "create-load-balancer",
            "--name",
            "a",
            "--subnets",
            "subnet-1",
        ],
        "DuplicateLoadBalancerName",
    );
    let tg = s(&serve.aws_ok(&[
        "elbv2",
        "create-target-group",
        "--name",
        "t",
        "--protocol",
        "HTTP",
        "--port",
        "80",
        "--target-type",
        "ip",
    ])["TargetGroups"][0]["TargetGroupArn"]);
    let port = free_port().to_string();
    let fwd = format!("Type=forward,TargetGroupArn={tg}");
    let l = s(&serve.aws_ok(&[
        "elbv2",
        "create-listener",
        "--load-balancer-arn",
        &lb,
        "--protocol",
        "HTTP",
        "--port",
        &port,
        "--default-actions",
        &fwd,
    ])["Listeners"][0]["ListenerArn"]);
    let rule = |priority: &str, path: &str| {
        serve.aws(&[
            "elbv2",
            "create-rule",
            "--listener-arn",
            &l,
            "--priority",
            priority,
            "--conditions",
            &format!("Field=path-pattern,Values={path}"),
            "--actions",
            &fwd,
        ])
    };
    assert!(rule("5", "/a/*").0);
    // Overlapping rules: the same priority twice.
    let (ok, _, err) = rule("5", "/b/*");
    assert!(!ok && err.contains("(PriorityInUse)"), "{err}");
    for (args, code) in [
        (
            vec![
                "elbv2",
                "create-listener",
                "--load-balancer-arn",
                &lb,
                "--protocol",
                "HTTP",
                "--port",
                &port,
                "--default-actions",
                &fwd,
            ],
            "DuplicateListener",
        ),
        (
            vec![
                "elbv2",
                "create-listener",
                "--load-balancer-arn",
                &lb,
                "--protocol",
                "HTTP",
                "--port",
                "70000",
                "--default-actions",
                &fwd,
            ],
            "ValidationError",
        ),
        (
            vec![
                "elbv2",
                "register-targets",
                "--target-group-arn",
                "arn:aws:elasticloadbalancing:eu-west-1:000000000000:targetgroup/nope/0",
                "--targets",
                "Id=127.18.0.9",
            ],
            "TargetGroupNotFound",
        ),
        (
            vec![
                "elbv2",
                "register-targets",
                "--target-group-arn",
                &tg,
                "--targets",
                "Id=10.0.0.1",
            ],
            "InvalidTarget",
        ),
        (
            vec![
                "elbv2",
                "create-target-group",
                "--name",
                "t",
                "--protocol",
                "HTTP",
                "--port",
                "80",
            ],
            "DuplicateTargetGroupName",
        ),
        (
            vec![
                "elbv2",
                "create-target-group",
                "--name",
                "u",
                "--protocol",
                "HTTPS",
                "--port",
                "443",
            ],
            "UnsupportedProtocol",
        ),
        (
            vec!["elbv2", "delete-target-group", "--target-group-arn", &tg],
            "ResourceInUse",
        ),
        (
            vec!["elbv2", "describe-load-balancers", "--names", "ghost"],
            "LoadBalancerNotFound",
        ),
    ] {
        serve.aws_err(&args, code);
    }
    let (ok, _, err) = rule("50001", "/c/*");
    assert!(!ok && err.contains("(ValidationError)"), "{err}");
    // Unknown target groups for an ECS service.
    serve.push(app("HTTP_HELLO_P2"), "hello-http:v1");
    serve.register_task_definition(dir.path(), &web_td("web", "w"));
    serve.aws_err(
        &[
            "ecs", "create-service", "--service-name", "web", "--task-definition", "web",
            "--network-configuration", "awsvpcConfiguration={subnets=[subnet-1]}",
            "--load-balancers", "targetGroupArn=arn:aws:elasticloadbalancing:eu-west-1:000000000000:targetgroup/nope/0,containerName=web,containerPort=80",
        ],
        "InvalidParameterException",
    );
    // Tags: given at creation, added, replaced, removed, read back.
    let tagged = s(&serve.aws_ok(&[
        "elbv2",
        "create-target-group",
        "--name",
        "tagged",
        "--protocol",
        "TCP",
        "--port",
        "7",
        "--tags",
        "Key=team,Value=shop",
        "Key=env,Value=dev",
    ])["TargetGroups"][0]["TargetGroupArn"]);
    serve.aws_ok(&[
        "elbv2",
        "add-tags",
        "--resource-arns",
        &lb,
        &tagged,
        "--tags",
        "Key=env,Value=prod",
    ]);
    serve.aws_ok(&[
        "elbv2",
        "remove-tags",
        "--resource-arns",
        &tagged,
        "--tag-keys",
        "team",
    ]);
    let described = serve.aws_ok(&[
        "elbv2",
        "describe-tags",
        "--resource-arns",
        &tagged,
        &lb,
        &l,
    ]);
    let tags_of = |arn: &str| -> Vec<(String, String)> {
        described["TagDescriptions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["ResourceArn"] == arn)
            .unwrap_or_else(|| panic!("{arn} not described: {described:#}"))["Tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (s(&t["Key"]), s(&t["Value"])))
            .collect()
    };
    assert_eq!(tags_of(&tagged), [("env".to_string(), "prod".to_string())]);
    assert_eq!(tags_of(&lb), [("env".to_string(), "prod".to_string())]);
    assert_eq!(tags_of(&l), []);
    serve.aws_err(
        &[
            "elbv2",
            "add-tags",
            "--resource-arns",
            &tagged,
            "--tags",
            "Key=a,Value=1",
            "Key=a,Value=2",
        ],
        "DuplicateTagKeys",
    );
    serve.aws_err(
        &[
            "elbv2",
            "add-tags",
            "--resource-arns",
            &tagged,
            "--tags",
            "Key=aws:x,Value=1",
        ],
        "ValidationError",
    );
    let many: Vec<String> = (0..50).map(|i| format!("Key=k{i},Value=v")).collect();
    let mut args = vec!["elbv2", "add-tags", "--resource-arns", &tagged, "--tags"];
    args.extend(many.iter().map(String::as_str));
    serve.aws_err(&args, "TooManyTags");
    serve.aws_err(
        &[
            "elbv2",
            "describe-tags",
            "--resource-arns",
            &tg.replace("/t/", "/ghost/"),
        ],
        "TargetGroupNotFound",
    );
    serve.aws_ok(&[
        "elbv2",
        "delete-target-group",
        "--target-group-arn",
        &tagged,
    ]);

    // The deletes, in order, all work.
    serve.aws_ok(&["elbv2", "delete-listener", "--listener-arn", &l]);
    serve.aws_ok(&["elbv2", "delete-target-group", "--target-group-arn", &tg]);
    serve.aws_ok(&["elbv2", "delete-load-balancer", "--load-balancer-arn", &lb]);
    assert_eq!(
        serve.aws_ok(&["elbv2", "describe-load-balancers"])["LoadBalancers"],
        json!([])
    );
}
