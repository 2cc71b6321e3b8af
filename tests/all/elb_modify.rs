//! Changing load balancers after they exist, through the AWS CLI:
//! attributes (AWS's default set, deletion protection enforced),
//! ModifyTargetGroup, ModifyListener (the new port answers),
//! ModifyRule, SetRulePriorities and ELB's validation.

use crate::support::ServeProcess;
use serde_json::Value;
use skiff_harness::free_port;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

/// GET / at 127.0.0.1:`port`: the status and body, retried until it
/// answers `status` (listeners bind after the answer).
fn wait_for(port: u16, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = (|| -> std::io::Result<(u16, String)> {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port))?;
            c.set_read_timeout(Some(Duration::from_secs(10)))?;
            write!(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut raw = String::new();
            c.read_to_string(&mut raw)?;
            let code = raw
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            Ok((
                code,
                raw.split("\r\n\r\n").nth(1).unwrap_or_default().to_string(),
            ))
        })();
        if let Ok((code, body)) = &got
            && *code == status
        {
            return body.clone();
        }
        assert!(
            Instant::now() < deadline,
            "port {port} never answered {status}: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn attributes_listeners_rules_and_target_groups_change_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    let lb = s(&serve.aws_ok(&[
        "elbv2",
        "create-load-balancer",
        "--name",
        "shop",
        "--subnets",
        "subnet-1",
    ])["LoadBalancers"][0]["LoadBalancerArn"]);

    let attrs = serve.aws_ok(&[
        "elbv2",
        "describe-load-balancer-attributes",
        "--load-balancer-arn",
        &lb,
    ]);
    let get = |attrs: &Value, key: &str| {
        attrs["Attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["Key"] == key)
            .map(|a| s(&a["Value"]))
    };
    assert_eq!(
        get(&attrs, "deletion_protection.enabled").as_deref(),
        Some("false")
    );
    assert_eq!(
        get(&attrs, "idle_timeout.timeout_seconds").as_deref(),
        Some("60")
    );
    assert_eq!(
        get(&attrs, "routing.http2.enabled").as_deref(),
        Some("true")
    );
    serve.aws_ok(&[
        "elbv2",
        "modify-load-balancer-attributes",
        "--load-balancer-arn",
        &lb,
        "--attributes",
        "Key=deletion_protection.enabled,Value=true",
    ]);
    let e = serve.aws_err(
        &["elbv2", "delete-load-balancer", "--load-balancer-arn", &lb],
        "OperationNotPermitted",
    );
    assert!(e.contains("deletion protection is enabled"), "{e}");
    let e = serve.aws_err(
        &[
            "elbv2",
            "modify-load-balancer-attributes",
            "--load-balancer-arn",
            &lb,
            "--attributes",
            "Key=access_logs.s3.enabled,Value=true",
        ],
        "ValidationError",
    );
    assert!(e.contains("no S3"), "{e}");
    // Sending the defaults back, as tools do, is fine.
    serve.aws_ok(&[
        "elbv2",
        "modify-load-balancer-attributes",
        "--load-balancer-arn",
        &lb,
        "--attributes",
        "Key=idle_timeout.timeout_seconds,Value=60",
    ]);

    let tg = s(&serve.aws_ok(&[
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
        "--vpc-id",
        "vpc-0000000000000skf",
    ])["TargetGroups"][0]["TargetGroupArn"]);
    let m = serve.aws_ok(&[
        "elbv2",
        "modify-target-group",
        "--target-group-arn",
        &tg,
        "--health-check-path",
        "/health",
        "--health-check-interval-seconds",
        "10",
        "--healthy-threshold-count",
        "3",
    ]);
    let t = &m["TargetGroups"][0];
    assert_eq!(
        (
            t["HealthCheckPath"].as_str(),
            t["HealthCheckIntervalSeconds"].as_i64(),
            t["HealthyThresholdCount"].as_i64()
        ),
        (Some("/health"), Some(10), Some(3))
    );
    assert_eq!(
        t["HealthCheckTimeoutSeconds"], 5,
        "unchanged members keep their values"
    );

    // A listener moved to another port answers there.
    let (first, second) = (free_port(), free_port());
    let listener = s(&serve.aws_ok(&[
        "elbv2", "create-listener", "--load-balancer-arn", &lb, "--protocol", "HTTP", "--port",
        &first.to_string(), "--default-actions",
        "Type=fixed-response,FixedResponseConfig={StatusCode=503,ContentType=text/plain,MessageBody=down}",
    ])["Listeners"][0]["ListenerArn"]);
    assert_eq!(wait_for(first, 503), "down");
    serve.aws_ok(&[
        "elbv2", "modify-listener", "--listener-arn", &listener, "--port", &second.to_string(),
        "--default-actions",
        "Type=fixed-response,FixedResponseConfig={StatusCode=200,ContentType=text/plain,MessageBody=up}",
    ]);
    assert_eq!(wait_for(second, 200), "up");
    let e = serve.aws_err(
        &[
            "elbv2",
            "modify-listener",
            "--listener-arn",
            &listener,
            "--protocol",
            "HTTPS",
        ],
        "UnsupportedProtocol",
    );
    assert!(e.contains("plain HTTP"), "{e}");

    // Rules: one value per legacy condition; modified and reordered.
    let e = serve.aws_err(
        &[
            "elbv2",
            "create-rule",
            "--listener-arn",
            &listener,
            "--priority",
            "1",
            "--conditions",
            "Field=path-pattern,Values=/a,/b",
            "--actions",
            &format!("Type=forward,TargetGroupArn={tg}"),
        ],
        "ValidationError",
    );
    assert!(e.contains("takes one value"), "{e}");
    let rule = |priority: &str, path: &str| {
        s(&serve.aws_ok(&[
            "elbv2",
            "create-rule",
            "--listener-arn",
            &listener,
            "--priority",
            priority,
            "--conditions",
            &format!("Field=path-pattern,Values={path}"),
            "--actions",
            &format!("Type=forward,TargetGroupArn={tg}"),
        ])["Rules"][0]["RuleArn"])
    };
    let (a, b) = (rule("1", "/a"), rule("2", "/b"));
    let m = serve.aws_ok(&[
        "elbv2",
        "modify-rule",
        "--rule-arn",
        &a,
        "--conditions",
        "Field=path-pattern,PathPatternConfig={Values=[/x,/y]}",
    ]);
    assert_eq!(
        m["Rules"][0]["Conditions"][0]["Values"],
        serde_json::json!(["/x", "/y"])
    );
    serve.aws_err(
        &[
            "elbv2",
            "set-rule-priorities",
            "--rule-priorities",
            &format!("RuleArn={a},Priority=2"),
        ],
        "PriorityInUse",
    );
    serve.aws_ok(&[
        "elbv2",
        "set-rule-priorities",
        "--rule-priorities",
        &format!("RuleArn={a},Priority=2"),
        &format!("RuleArn={b},Priority=1"),
    ]);
    let rules = serve.aws_ok(&["elbv2", "describe-rules", "--rule-arns", &a]);
    assert_eq!(rules["Rules"][0]["Priority"], "2");

    serve.aws_err(
        &[
            "elbv2",
            "set-ip-address-type",
            "--load-balancer-arn",
            &lb,
            "--ip-address-type",
            "dualstack",
        ],
        "ValidationError",
    );
    let limits = serve.aws_ok(&["elbv2", "describe-account-limits"]);
    assert!(limits["Limits"].as_array().is_some_and(|l| !l.is_empty()));
    serve.aws_ok(&[
        "elbv2",
        "modify-load-balancer-attributes",
        "--load-balancer-arn",
        &lb,
        "--attributes",
        "Key=deletion_protection.enabled,Value=false",
    ]);
    serve.aws_ok(&["elbv2", "delete-load-balancer", "--load-balancer-arn", &lb]);
}

/// With the defaults (listeners on the host's 127.0.0.1), a task reaches a
/// load balancer by its DNS name: the name answers an address where the
/// listener also listens for tasks.
#[test]
fn tasks_reach_a_load_balancer_by_its_dns_name() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(wasm_apps::app("NET_PROBE_P2"), "net-probe:v1");
    let made = serve.aws_ok(&[
        "elbv2",
        "create-load-balancer",
        "--name",
        "front",
        "--subnets",
        "subnet-1",
    ]);
    let lb = s(&made["LoadBalancers"][0]["LoadBalancerArn"]);
    let dns = s(&made["LoadBalancers"][0]["DNSName"]);
    let port = free_port();
    serve.aws_ok(&[
        "elbv2", "create-listener", "--load-balancer-arn", &lb, "--protocol", "HTTP", "--port",
        &port.to_string(), "--default-actions",
        "Type=fixed-response,FixedResponseConfig={StatusCode=200,ContentType=text/plain,MessageBody=hi}",
    ]);
    // The host still finds it on 127.0.0.1.
    assert_eq!(wait_for(port, 200), "hi");
    let code = serve.probe_task(
        dir.path(),
        &[],
        &["send", &format!("{dns}:{port}"), "GET / HTTP/1.0\r\n"],
    );
    assert_eq!(code, 0, "a task could not reach {dns}:{port}");
}
