//! ECS Express Gateway services through the real AWS CLI: one call makes
//! a web service reachable at an endpoint, with a task definition, a
//! security group, a load balancer and a target group of its own, scaled
//! by its scaling target; updates roll out new revisions; deletion takes
//! everything it made away.

use crate::support::{ServeProcess, peer};
use serde_json::Value;
use std::time::{Duration, Instant};
use wasm_apps::app;

const EXECUTION_ROLE: &str = "arn:aws:iam::000000000000:role/ecsTaskExecutionRole";
const INFRASTRUCTURE_ROLE: &str =
    "arn:aws:iam::000000000000:role/ecsInfrastructureRoleForExpressServices";

/// GETs `url`; the body.
fn get(url: &str) -> String {
    let (ok, out, err) = peer("curl", &["-fsS", "--max-time", "10", url]);
    assert!(ok, "GET {url}: {err}");
    out
}

/// Waits (up to a minute) until `check` of the service holds.
fn until(serve: &ServeProcess, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = serve.aws_ok(&["ecs", "describe-services", "--services", "web"]);
        let svc = d["services"][0].clone();
        if check(&svc) {
            return svc;
        }
        assert!(Instant::now() < deadline, "never {what}: {svc:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The names of the load balancers, target groups and security groups
/// there are.
fn parts(serve: &ServeProcess) -> (Vec<String>, Vec<String>, Vec<String>) {
    let names = |v: &Value, list: &str, field: &str| -> Vec<String> {
        v[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x[field].as_str().unwrap().to_string())
            .collect()
    };
    let lbs = serve.aws_ok(&["elbv2", "describe-load-balancers"]);
    let tgs = serve.aws_ok(&["elbv2", "describe-target-groups"]);
    let sgs = serve.aws_ok(&["ec2", "describe-security-groups"]);
    (
        names(&lbs, "LoadBalancers", "LoadBalancerName"),
        names(&tgs, "TargetGroups", "TargetGroupName"),
        names(&sgs, "SecurityGroups", "GroupName"),
    )
}

/// `aws ecs create-express-gateway-service` of a service named `name`.
fn create<'a>(name: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "ecs",
        "create-express-gateway-service",
        "--execution-role-arn",
        EXECUTION_ROLE,
        "--infrastructure-role-arn",
        INFRASTRUCTURE_ROLE,
        "--service-name",
        name,
    ];
    args.extend(rest);
    args
}

#[test]
fn an_express_service_serves_scales_updates_and_goes_away_whole() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(app("HTTP_HELLO_P2"), "hello-http:v1");
    // A group of the user's that lets nothing in: the service still
    // serves (the load balancer's group is the tasks' too).
    let closed = serve.aws_ok(&[
        "ec2",
        "create-security-group",
        "--group-name",
        "closed",
        "--description",
        "nothing in",
    ])["GroupId"]
        .as_str()
        .unwrap()
        .to_string();
    let before = parts(&serve);

    // Mistakes are refused naming the field, and leave nothing behind.
    let err = serve.aws_err(
        &create(
            "web",
            &[
                "--primary-container",
                "image=hello-http:v1",
                "--scaling-target",
                "minTaskCount=4,maxTaskCount=2",
            ],
        ),
        "InvalidParameterException",
    );
    assert!(err.contains("minTaskCount"), "{err}");
    let err = serve.aws_err(
        &create(
            "web",
            &[
                "--primary-container",
                "image=no-such-image:v1",
                "--cpu",
                "lots",
            ],
        ),
        "InvalidParameterException",
    );
    assert!(err.contains("cpu"), "{err}");
    let mut bad_role = create("web", &["--primary-container", "image=hello-http:v1"]);
    bad_role[5] = "not-an-arn";
    let err = serve.aws_err(&bad_role, "InvalidParameterException");
    assert!(err.contains("infrastructureRoleArn"), "{err}");
    let err = serve.aws_err(
        &create(
            "web",
            &[
                "--primary-container",
                "image=hello-http:v1",
                "--tags",
                "key=a,value=1",
                "key=a,value=2",
            ],
        ),
        "InvalidParameterException",
    );
    assert!(err.contains("twice"), "{err}");
    // A part that cannot be made undoes those made before it: the task
    // definition (secrets: skiff has no Secrets Manager or SSM) comes after
    // the security group.
    let err = serve.aws_err(
        &create(
            "web",
            &[
                "--primary-container",
                r#"{"image": "hello-http:v1", "secrets": [{"name": "A", "valueFrom": "arn:aws:ssm:us-east-1:000000000000:parameter/a"}]}"#,
            ],
        ),
        "InvalidParameterException",
    );
    assert!(err.contains("secrets"), "{err}");
    assert_eq!(parts(&serve), before, "a refused create left parts behind");

    let created = serve.aws_ok(&create(
        "web",
        &[
            "--primary-container",
            r#"{"image": "hello-http:v1", "environment": [{"name": "WHO", "value": "blue"}]}"#,
            "--scaling-target",
            "minTaskCount=1,maxTaskCount=6,autoScalingMetric=REQUEST_COUNT_PER_TARGET,autoScalingTargetValue=15",
            "--tags",
            "key=team,value=web",
            "--network-configuration",
            &format!("securityGroups={closed}"),
        ],
    ));
    let svc = &created["service"];
    let arn = svc["serviceArn"].as_str().unwrap().to_string();
    assert_eq!(svc["status"]["statusCode"], "ACTIVE");
    let config = &svc["activeConfigurations"][0];
    // AWS's defaults, filled in.
    assert_eq!(config["cpu"], "256");
    assert_eq!(config["memory"], "512");
    assert_eq!(config["healthCheckPath"], "/ping");
    assert_eq!(config["primaryContainer"]["containerPort"], 80);
    assert_eq!(config["scalingTarget"]["maxTaskCount"], 6);
    let endpoint = config["ingressPaths"][0]["endpoint"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    let first_revision = config["serviceRevisionArn"].as_str().unwrap().to_string();

    // Its parts are ordinary resources.
    let (lbs, tgs, sgs) = parts(&serve);
    assert_eq!(lbs.len(), before.0.len() + 1);
    assert_eq!(tgs.len(), before.1.len() + 1);
    assert_eq!(sgs.len(), before.2.len() + 1);
    let td = serve.aws_ok(&[
        "ecs",
        "describe-task-definition",
        "--task-definition",
        "web",
    ]);
    let td = &td["taskDefinition"];
    assert_eq!(td["requiresCompatibilities"][0], "FARGATE");
    assert_eq!(td["executionRoleArn"], EXECUTION_ROLE);
    let tg = serve.aws_ok(&["elbv2", "describe-target-groups"]);
    let tg = tg["TargetGroups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| {
            g["TargetGroupName"]
                .as_str()
                .unwrap()
                .starts_with("ecs-express-")
        })
        .unwrap()
        .clone();
    assert_eq!(tg["HealthCheckPath"], "/ping");

    // It serves at its endpoint.
    until(&serve, "serving", |s| {
        s["runningCount"] == 1 && s["desiredCount"] == 1
    });
    serve.aws_ok(&["ecs", "wait", "services-stable", "--services", "web"]);
    assert_eq!(get(&format!("{endpoint}whoami")).trim(), "blue");
    // Its output is in a log group of its own, as ECS makes one.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = serve.aws_ok(&[
            "logs",
            "filter-log-events",
            "--log-group-name",
            "/aws/ecs/default/web",
        ]);
        if events["events"].to_string().contains("/whoami") {
            break;
        }
        assert!(Instant::now() < deadline, "no log events: {events}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // 40 requests a minute against a target of 15 per task: 3 tasks.
    for _ in 0..40 {
        get(&endpoint);
    }
    let scaled = until(&serve, "scaled out", |s| s["desiredCount"] == 3);
    let events = scaled["events"].to_string();
    // In one step, or two when the scaler looked while the requests were
    // still arriving (1 to 2, then 2 to 3): target tracking either way.
    assert!(
        events.contains("scaled from 1 to 3") || events.contains("scaled from 2 to 3"),
        "{events}"
    );
    // And no further while the same load lasts, though the new tasks
    // take no traffic until their targets are healthy (three rounds).
    let deadline = Instant::now() + Duration::from_secs(16);
    while Instant::now() < deadline {
        let d = serve.aws_ok(&["ecs", "describe-services", "--services", "web"]);
        assert_eq!(d["services"][0]["desiredCount"], 3, "ran away: {d:#}");
        std::thread::sleep(Duration::from_millis(500));
    }

    // An update of what runs rolls out a new revision; scaling bounds
    // apply at once.
    let updated = serve.aws_ok(&[
        "ecs",
        "update-express-gateway-service",
        "--service-arn",
        &arn,
        "--primary-container",
        r#"{"image": "hello-http:v1", "environment": [{"name": "WHO", "value": "green"}]}"#,
        "--scaling-target",
        "maxTaskCount=2",
    ]);
    let target = &updated["service"]["targetConfiguration"];
    assert_eq!(
        target["primaryContainer"]["environment"][0]["value"],
        "green"
    );
    assert_eq!(target["scalingTarget"]["maxTaskCount"], 2);
    assert_eq!(
        target["scalingTarget"]["autoScalingMetric"],
        "REQUEST_COUNT_PER_TARGET"
    );
    assert_ne!(target["serviceRevisionArn"], first_revision.as_str());
    until(&serve, "scaled to the new maximum", |s| {
        s["desiredCount"] == 2
    });
    serve.aws_ok(&["ecs", "wait", "services-stable", "--services", "web"]);
    assert_eq!(get(&format!("{endpoint}whoami")).trim(), "green");
    let d = serve.aws_ok(&[
        "ecs",
        "describe-express-gateway-service",
        "--service-arn",
        &arn,
        "--include",
        "TAGS",
    ]);
    assert_eq!(d["service"]["tags"][0]["key"], "team");
    assert_eq!(
        d["service"]["activeConfigurations"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let revision = serve.aws_ok(&[
        "ecs",
        "describe-service-revisions",
        "--service-revision-arns",
        d["service"]["activeConfigurations"][0]["serviceRevisionArn"]
            .as_str()
            .unwrap(),
    ]);
    assert_eq!(
        revision["serviceRevisions"].as_array().unwrap().len(),
        1,
        "{revision}"
    );

    // Not an Express service, and no service at all.
    serve.aws_ok(&[
        "ecs",
        "create-service",
        "--service-name",
        "plain",
        "--task-definition",
        "web",
        "--desired-count",
        "0",
        "--network-configuration",
        "awsvpcConfiguration={subnets=[subnet-1]}",
    ]);
    let plain = arn.replace("/web", "/plain");
    let e = serve.aws_err(
        &[
            "ecs",
            "describe-express-gateway-service",
            "--service-arn",
            &plain,
        ],
        "InvalidParameterException",
    );
    assert!(e.contains("not an Express service"), "{e}");
    serve.aws_err(
        &[
            "ecs",
            "describe-express-gateway-service",
            "--service-arn",
            &arn.replace("/web", "/nothing"),
        ],
        "ServiceNotFoundException",
    );
    serve.aws_err(
        &create("web", &["--primary-container", "image=hello-http:v1"]),
        "InvalidParameterException",
    );

    // Deleting drains it, and everything it made goes.
    let deleted = serve.aws_ok(&[
        "ecs",
        "delete-express-gateway-service",
        "--service-arn",
        &arn,
    ]);
    assert_eq!(deleted["service"]["status"]["statusCode"], "DRAINING");
    assert_eq!(parts(&serve).0, before.0, "its load balancer goes at once");
    let deadline = Instant::now() + Duration::from_secs(60);
    while parts(&serve) != before {
        assert!(
            Instant::now() < deadline,
            "left behind: {:?}",
            parts(&serve)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let d = serve.aws_ok(&[
        "ecs",
        "describe-express-gateway-service",
        "--service-arn",
        &arn,
    ]);
    assert_eq!(d["service"]["status"]["statusCode"], "INACTIVE");
}
