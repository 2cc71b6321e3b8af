//! Service deployments and revisions through the AWS CLI: the history a
//! service keeps, and StopServiceDeployment rolling a stuck deployment
//! back to the last one that completed.

use crate::support::ServeProcess;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn td(serve: &ServeProcess, image: &str) -> Value {
    json!({
        "family": "web",
        "containerDefinitions": [{
            "name": "s", "image": format!("{}/{image}", serve.registry),
            "memory": 32, "essential": true, "command": ["600"]
        }]
    })
}

#[test]
fn deployments_are_listed_described_and_a_stuck_one_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(wasm_apps::app("SLEEPER_P1"), "sleeper:v1");
    serve.register_task_definition(dir.path(), &td(&serve, "sleeper:v1"));
    serve.aws_ok(&[
        "ecs",
        "create-service",
        "--service-name",
        "web",
        "--task-definition",
        "web:1",
        "--desired-count",
        "1",
    ]);
    serve.aws_ok(&["ecs", "wait", "services-stable", "--services", "web"]);
    let list = |serve: &ServeProcess| {
        serve.aws_ok(&["ecs", "list-service-deployments", "--service", "web"])
    };
    let l = list(&serve);
    assert_eq!(l["serviceDeployments"][0]["status"], "SUCCESSFUL", "{l}");

    // A revision whose image does not exist: its deployment never completes.
    serve.register_task_definition(dir.path(), &td(&serve, "missing:v1"));
    serve.aws_ok(&[
        "ecs",
        "update-service",
        "--service",
        "web",
        "--task-definition",
        "web:2",
    ]);
    let l = list(&serve);
    let stuck = l["serviceDeployments"][0].clone();
    assert_eq!(stuck["status"], "IN_PROGRESS", "{l}");
    let arn = stuck["serviceDeploymentArn"].as_str().unwrap().to_string();
    assert!(arn.contains(":service-deployment/default/web/"), "{arn}");
    let rev = serve.aws_ok(&[
        "ecs",
        "describe-service-revisions",
        "--service-revision-arns",
        stuck["targetServiceRevisionArn"].as_str().unwrap(),
    ]);
    assert!(
        rev["serviceRevisions"][0]["taskDefinition"]
            .as_str()
            .unwrap()
            .ends_with("web:2")
    );
    assert_eq!(rev["serviceRevisions"][0]["launchType"], "EC2");

    serve.aws_ok(&[
        "ecs",
        "stop-service-deployment",
        "--service-deployment-arn",
        &arn,
        "--stop-type",
        "ROLLBACK",
    ]);
    serve.aws_ok(&["ecs", "wait", "services-stable", "--services", "web"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let d = loop {
        let d = serve.aws_ok(&[
            "ecs",
            "describe-service-deployments",
            "--service-deployment-arns",
            &arn,
        ]);
        if d["serviceDeployments"][0]["status"] == "ROLLBACK_SUCCESSFUL" {
            break d;
        }
        assert!(Instant::now() < deadline, "never rolled back: {d}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let sd = &d["serviceDeployments"][0];
    assert_eq!(sd["sourceServiceRevisions"].as_array().unwrap().len(), 1);
    assert!(sd["rollback"]["serviceRevisionArn"].is_string(), "{sd}");
    let l = list(&serve);
    let statuses: Vec<&str> = l["serviceDeployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["SUCCESSFUL", "ROLLBACK_SUCCESSFUL", "SUCCESSFUL"]
    );
    let s = serve.aws_ok(&["ecs", "describe-services", "--services", "web"]);
    assert!(
        s["services"][0]["taskDefinition"]
            .as_str()
            .unwrap()
            .ends_with("web:1")
    );

    serve.aws_err(
        &[
            "ecs",
            "stop-service-deployment",
            "--service-deployment-arn",
            &arn,
        ],
        "ConflictException",
    );
    let missing = arn.replace("/web/", "/nope/");
    let d = serve.aws_ok(&[
        "ecs",
        "describe-service-deployments",
        "--service-deployment-arns",
        &missing,
    ]);
    assert_eq!(d["failures"][0]["reason"], "MISSING");
}
