//! Hostile and careless clients of `skiff serve`'s listeners: one peer
//! holding every connection it can with requests it never finishes does
//! not stop the API or the registry from answering everyone else; a
//! registry that never answers fails a pull; members of the wrong type,
//! oversized bodies and Query requests sent as GET get the protocol's
//! own errors.

use crate::support::ServeProcess;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Opens `n` connections to `to` from `from` (a loopback address of the
/// test's own), each sending `partial` and then nothing: the number the
/// server refused at once (503) and the connections still held.
fn hold(from: &str, to: SocketAddr, n: usize, partial: &[u8]) -> (usize, Vec<TcpStream>) {
    let from: std::net::IpAddr = from.parse().unwrap();
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..n {
        let socket = connect_from(from, to);
        let Some(mut s) = socket else { continue };
        let _ = s.write_all(partial);
        held.push(s);
    }
    // The server refuses those over the limit at once; the rest hear
    // nothing.
    std::thread::sleep(Duration::from_millis(500));
    let mut kept = Vec::new();
    for mut s in held {
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            // Told, or closed before it could read the telling (its unread
            // request makes the close a reset).
            Ok(n) if n > 0 && buf[..n].starts_with(b"HTTP/1.1 503") => refused += 1,
            Ok(0) => refused += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => refused += 1,
            Ok(_) => {}
            Err(_) => kept.push(s),
        }
    }
    (refused, kept)
}

/// A blocking connection from `from` to `to`.
fn connect_from(from: std::net::IpAddr, to: SocketAddr) -> Option<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().ok()?;
        socket.bind(SocketAddr::from((from, 0))).ok()?;
        let s = socket.connect(to).await.ok()?;
        s.into_std().ok()
    })
    .and_then(|s| s.set_nonblocking(false).ok().map(|()| s))
}

#[test]
fn one_peer_holding_connections_does_not_stop_the_api_or_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    let api: SocketAddr = serve.api.parse().unwrap();
    let registry: SocketAddr = serve.registry.parse().unwrap();
    // Content-Length 1000, one byte sent, then silence: the request is
    // never finished. 300 of them to each server, from one address.
    let partial = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: AmazonEC2ContainerServiceV20141113.ListClusters\r\nContent-Length: 1000\r\n\r\n{";
    let (refused, _held_api) = hold("127.0.0.66", api, 300, partial);
    // A quarter of the API's 1024 connections per peer: 256 held, the
    // rest refused.
    assert!(refused >= 40, "only {refused} of 300 refused");
    // A manifest whose body never finishes (the registry reads it whole
    // before answering).
    let upload = b"PUT /v2/x/manifests/v1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 1000\r\n\r\n{";
    let (refused, _held_registry) = hold("127.0.0.66", registry, 300, upload);
    assert!(refused >= 40, "only {refused} of 300 refused");

    // One more from that address is told why, in its protocol's terms.
    let told = |to: SocketAddr| {
        let mut s = connect_from("127.0.0.66".parse().unwrap(), to).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    };
    let answer = told(api);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains(r#""__type":"ThrottlingException""#),
        "{answer}"
    );
    let answer = told(registry);
    assert!(answer.contains(r#""code":"TOOMANYREQUESTS""#), "{answer}");

    // Everyone else is answered meanwhile.
    let clusters = serve.aws_ok(&["ecs", "list-clusters"]);
    assert_eq!(clusters["clusterArns"].as_array().unwrap().len(), 1);
    let mut s = TcpStream::connect(registry).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn idle_connections_from_many_addresses_do_not_keep_a_client_out() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    let api: SocketAddr = serve.api.parse().unwrap();
    // Five addresses, each up to its quota, more than the API's 1,024
    // connections in all, none sending a byte.
    let mut held = Vec::new();
    for i in 1..=5 {
        let (_, kept) = hold(&format!("127.0.3.{i}"), api, 256, b"");
        held.extend(kept);
    }
    // A client with a request is answered at once: it takes the slot of
    // a connection that was doing nothing.
    let started = std::time::Instant::now();
    let (status, answer) = post(
        &serve.api,
        "AmazonEC2ContainerServiceV20141113.ListClusters",
        "{}",
    );
    assert_eq!(status, 200, "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered after {:?}",
        started.elapsed()
    );
    drop(held);
}

#[test]
fn serve_takes_every_open_file_the_system_allows_it() {
    // Started with a soft limit of 512 (many systems give 1024) under a
    // hard one of 4096: 512 would be three hundred connections from
    // running out.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new("prlimit");
    cmd.args(["--nofile=512:4096", crate::support::skiff_bin()]);
    let serve = ServeProcess::launch(cmd, dir.path(), &[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", serve.child.id())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = open_files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["4096", "4096"], "{open_files}");
}

#[test]
fn a_registry_that_never_answers_fails_its_task_and_a_stop_ends_the_wait() {
    // Accepts connections, holds them, says nothing.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming() {
            held.push(conn);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start_with(dir.path(), &["--image-pull-inactivity-timeout", "3s"]);
    serve.register_task_definition(
        dir.path(),
        &serde_json::json!({
            "family": "hang", "networkMode": "none",
            "containerDefinitions": [{"name": "a", "image": format!("{addr}/hang:v1"), "memory": 16}],
        }),
    );
    let run = || {
        serve.aws_ok(&["ecs", "run-task", "--task-definition", "hang"])["tasks"][0]["taskArn"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let describe = |arn: &str| {
        serve.aws_ok(&["ecs", "wait", "tasks-stopped", "--tasks", arn]);
        serve.aws_ok(&["ecs", "describe-tasks", "--tasks", arn])["tasks"][0].clone()
    };
    // Stopped while it waits for the registry: it stops now, not at the
    // timeout.
    let arn = run();
    serve.aws_ok(&["ecs", "stop-task", "--task", &arn]);
    let t = describe(&arn);
    assert_eq!(t["stopCode"], "UserInitiated");
    let took = t["stoppedAt"].as_f64().unwrap() - t["stoppingAt"].as_f64().unwrap();
    assert!(took < 2.5, "stopped {took} s after asked");
    // Left alone, it fails at the inactivity timeout, which it names.
    let arn = run();
    let t = describe(&arn);
    assert_eq!(t["stopCode"], "TaskFailedToStart");
    let reason = t["stoppedReason"].as_str().unwrap();
    assert!(reason.starts_with("CannotPullContainerError"), "{reason}");
    assert!(reason.contains("sent nothing for 3s"), "{reason}");
}

/// Posts `body` as AWS JSON to the API, for operation `target`: the
/// status and the answer.
fn post(api: &str, target: &str, body: &str) -> (u16, serde_json::Value) {
    let content_type = if target.starts_with("GraniteServiceVersion20100801.") {
        "application/x-amz-json-1.0"
    } else {
        "application/x-amz-json-1.1"
    };
    let mut s = TcpStream::connect(api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: {api}\r\nX-Amz-Target: {target}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let json = answer
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(serde_json::Value::Null);
    (status, json)
}

#[test]
fn a_member_of_the_wrong_type_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.register_task_definition(
        dir.path(),
        &serde_json::json!({"family": "idle", "networkMode": "none",
            "containerDefinitions": [{"name": "a", "image": "x", "memory": 16}]}),
    );
    serve.aws_ok(&[
        "ecs",
        "create-service",
        "--service-name",
        "dup",
        "--task-definition",
        "idle",
        "--desired-count",
        "0",
    ]);
    let ecs = "AmazonEC2ContainerServiceV20141113.";
    // A cluster given as a list is not the default cluster.
    let (status, answer) = post(
        &serve.api,
        &format!("{ecs}DeleteService"),
        r#"{"cluster": ["c2"], "service": "dup"}"#,
    );
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["__type"], "SerializationException");
    assert_eq!(answer["message"], "cluster: expected a string, not a list");
    let (status, _) = post(
        &serve.api,
        &format!("{ecs}CreateService"),
        r#"{"cluster": ["c2"], "serviceName": "other", "taskDefinition": "idle"}"#,
    );
    assert_eq!(status, 400);
    let services = serve.aws_ok(&["ecs", "list-services"]);
    assert_eq!(services["serviceArns"].as_array().unwrap().len(), 1);
    let dup = &serve.aws_ok(&["ecs", "describe-services", "--services", "dup"])["services"][0];
    assert_eq!(dup["status"], "ACTIVE");
    // Every service's body is an object.
    for target in [
        "Logs_20140328.DescribeLogGroups",
        "Route53AutoNaming_v20170314.ListNamespaces",
        "GraniteServiceVersion20100801.ListMetrics",
        "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories",
    ] {
        for body in ["[]", "\"x\"", "1", "null"] {
            let (status, answer) = post(&serve.api, target, body);
            assert_eq!(status, 400, "{target} {body}: {answer}");
            assert_eq!(
                answer["__type"], "SerializationException",
                "{target} {body}"
            );
        }
    }
}

/// Sends `head` and then `body` in pieces, as a client that does not wait
/// for an early answer would; the whole answer.
fn send_raw(api: &str, head: &str, body: &[u8]) -> String {
    let mut s = TcpStream::connect(api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    for piece in body.chunks(64 * 1024) {
        s.write_all(piece)
            .expect("the server closed before the body was sent");
    }
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// `METHOD TARGET` with no body; the whole answer.
fn bodiless(api: &str, method: &str, target: &str) -> String {
    send_raw(
        api,
        &format!("{method} {target} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n"),
        b"",
    )
}

/// A form-encoded (Query protocol) POST; the whole answer.
fn post_form(api: &str, form: &str) -> String {
    send_raw(
        api,
        &format!(
            "POST / HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            form.len()
        ),
        form.as_bytes(),
    )
}

#[test]
fn query_protocol_edges_answer_in_xml() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    let api = &serve.api;
    // EC2's Query API is also GET with the parameters in the query string.
    let answer = bodiless(
        api,
        "GET",
        "/?Action=DescribeSecurityGroups&Version=2016-11-15",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("<DescribeSecurityGroupsResponse"),
        "{answer}"
    );
    // The header's request id is the document's.
    let header_id = answer
        .lines()
        .find_map(|l| l.strip_prefix("x-amzn-requestid: "))
        .unwrap();
    assert!(
        answer.contains(&format!("<requestId>{header_id}</requestId>")),
        "{answer}"
    );
    // A character XML cannot carry is refused, not stored to break every
    // later answer.
    let form =
        "Action=CreateSecurityGroup&Version=2016-11-15&GroupName=bell&GroupDescription=a%07b";
    let answer = post_form(api, form);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("<Code>InvalidParameterValue</Code>"),
        "{answer}"
    );
    assert!(answer.contains("U+0007"), "{answer}");
    serve.aws_ok(&["ec2", "describe-security-groups"]);
    // ELB's refusal is in ELB's error document.
    let form =
        "Action=CreateTargetGroup&Version=2015-12-01&Name=t%07&Protocol=HTTP&Port=80&TargetType=ip";
    let answer = post_form(api, form);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("<ErrorResponse"), "{answer}");
    assert!(answer.contains("<Type>Sender</Type>"), "{answer}");
    let answer = bodiless(api, "GET", "/?Action=DescribeNothing&Version=2016-11-15");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("<Code>InvalidAction</Code>"), "{answer}");
    let answer = bodiless(
        api,
        "DELETE",
        "/?Action=DescribeSecurityGroups&Version=2016-11-15",
    );
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("<Code>InvalidAction</Code>"), "{answer}");
    // An oversized form is a 413 in XML, and the client that keeps sending
    // its whole body reads it (whatever the header's case).
    let body = format!(
        "Action=DescribeSecurityGroups&Version=2016-11-15&X={}",
        "a".repeat(5 << 20)
    );
    let answer = send_raw(
        api,
        &format!(
            "POST / HTTP/1.1\r\nHost: {api}\r\nContent-Type: Application/X-WWW-Form-Urlencoded; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ),
        body.as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("text/xml"), "{answer}");
    assert!(
        answer.contains("<Code>RequestEntityTooLargeException</Code>"),
        "{answer}"
    );
    // So does a JSON client's, in JSON.
    let body = format!("{{\"x\": \"{}\"}}", "a".repeat(5 << 20));
    let answer = send_raw(
        api,
        &format!(
            "POST / HTTP/1.1\r\nHost: {api}\r\nX-Amz-Target: AmazonEC2ContainerServiceV20141113.ListClusters\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ),
        body.as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("\"__type\":\"RequestEntityTooLargeException\""),
        "{answer}"
    );
}

#[test]
fn ecs_quotas_are_enforced_with_ecs_errors() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    let out = serve.boto3(
        r#"
ecs = boto3.client('ecs', endpoint_url=ENDPOINT, region_name=REGION)
def code(call, **kw):
    try:
        call(**kw)
        return 'ok'
    except botocore.exceptions.ClientError as e:
        return e.response['Error']['Code'] + ': ' + e.response['Error']['Message']
big = [{'name': 'a', 'image': 'x', 'memory': 8,
        'environment': [{'name': 'E%d' % i, 'value': 'v' * 1000} for i in range(1000)]}]
print(code(ecs.register_task_definition, family='big', networkMode='none', containerDefinitions=big))
ecs.register_task_definition(family='idle', networkMode='none',
    containerDefinitions=[{'name': 'a', 'image': 'x', 'memory': 8}])
for i in range(5000):
    ecs.create_service(serviceName='s%d' % i, taskDefinition='idle', desiredCount=0)
print(code(ecs.create_service, serviceName='one-more', taskDefinition='idle', desiredCount=0))
ecs.delete_service(service='s0')
print(code(ecs.run_task, taskDefinition='idle', overrides={'containerOverrides': [
    {'name': 'a', 'environment': [{'name': 'E%d' % i, 'value': 'v' * 100} for i in range(80)]}]}))
print(code(ecs.create_service, serviceName='one-more', taskDefinition='idle', desiredCount=0))
"#,
        "AKIDSKIFFTEST",
        "secret",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("ClientException: The task definition is 10"),
        "{out}"
    );
    assert!(lines[0].contains("limit is 65536 bytes"), "{out}");
    assert_eq!(
        lines[1],
        "ClientException: Cluster default has 5000 services, ECS's quota per cluster (5000): delete one first."
    );
    assert!(
        lines[2].starts_with("InvalidParameterException: overrides is 10123 characters"),
        "{out}"
    );
    assert!(lines[2].contains("at most 8192"), "{out}");
    assert_eq!(lines[3], "ok");
}

/// A value of the right type that skiff cannot take — out of range, a
/// member it needs missing, a `null` where a value must be — is a
/// ClientException naming the member, not the parser's words.
#[test]
fn values_that_do_not_fit_are_client_errors_naming_the_member() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    let ecs = "AmazonEC2ContainerServiceV20141113.";
    let cases = [
        (
            "RegisterTaskDefinition",
            r#"{"family": "f", "containerDefinitions": [{"name": "a", "memory": 32}]}"#,
            "Container.image should not be null or empty (container a).",
        ),
        (
            "RegisterTaskDefinition",
            r#"{"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "memory": -5}]}"#,
            "Invalid value -5 for containerDefinitions[0].memory: it must be a whole number from 0 to 4294967295.",
        ),
        (
            "RegisterTaskDefinition",
            r#"{"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "memory": 8,
                "portMappings": [{"containerPort": 70000}]}]}"#,
            "Invalid value 70000 for containerDefinitions[0].portMappings[0].containerPort: it must be a whole number from 0 to 65535.",
        ),
        (
            "RunTask",
            r#"{"taskDefinition": "f", "overrides": {"containerOverrides": [{"name": "a", "memory": -1}]}}"#,
            "Invalid value -1 for overrides.containerOverrides[0].memory: it must be a whole number from 0 to 4294967295.",
        ),
    ];
    let cluster = serve.aws_ok(&["ecs", "describe-clusters"])["clusters"][0]["clusterArn"].clone();
    // null is absence.
    let tags_null = serde_json::json!({"resourceArn": cluster, "tags": null}).to_string();
    let cases = cases
        .iter()
        .map(|(op, body, says)| (*op, body.to_string(), *says))
        .chain([("TagResource", tags_null, "tags is required.")]);
    for (op, body, says) in cases {
        let (status, answer) = post(&serve.api, &format!("{ecs}{op}"), &body);
        assert_eq!(status, 400, "{op} {body}: {answer}");
        assert_eq!(answer["__type"], "ClientException", "{op} {body}: {answer}");
        assert_eq!(answer["message"], says, "{op} {body}");
    }
    let (status, answer) = post(
        &serve.api,
        &format!("{ecs}RunTask"),
        r#"{"taskDefinition": "x", "placementConstraints": [{"type": "memberOf", "expression": "attribute:foo =="}]}"#,
    );
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["__type"], "InvalidParameterException", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains(r#"memberOf expression "attribute:foo ==""#)),
        "{answer}"
    );
}
