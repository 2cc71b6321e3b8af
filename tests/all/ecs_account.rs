//! ECS account settings, task scale-in protection and
//! ListServicesByNamespace, through the AWS CLI.

use crate::support::ServeProcess;
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn account_settings_are_kept_and_what_cannot_be_honoured_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    // Nothing set: ECS's defaults, as effective settings.
    let l = serve.aws_ok(&["ecs", "list-account-settings", "--effective-settings"]);
    let names: Vec<&str> = l["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"awsvpcTrunking") && names.contains(&"containerInsights"));
    assert!(
        l["settings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["type"] == "aws_managed")
    );
    let l = serve.aws_ok(&["ecs", "list-account-settings"]);
    assert_eq!(l["settings"], json!([]));

    let s = serve.aws_ok(&[
        "ecs",
        "put-account-setting-default",
        "--name",
        "awsvpcTrunking",
        "--value",
        "enabled",
    ]);
    assert_eq!(s["setting"]["value"], "enabled");
    serve.aws_ok(&[
        "ecs",
        "put-account-setting",
        "--name",
        "fargateTaskRetirementWaitPeriod",
        "--value",
        "14",
    ]);
    let l = serve.aws_ok(&["ecs", "list-account-settings", "--name", "awsvpcTrunking"]);
    assert_eq!(l["settings"][0]["value"], "enabled");
    assert_eq!(
        l["settings"][0]["principalArn"],
        "arn:aws:iam::000000000000:root"
    );

    // What skiff cannot honour, with why.
    for (name, value, says) in [
        ("serviceLongArnFormat", "disabled", "long ARNs only"),
        ("containerInsights", "enabled", "Container Insights"),
        ("guardDutyActivate", "on", "GuardDuty"),
        ("awsvpcTrunking", "sometimes", "not a valid value"),
    ] {
        let e = serve.aws_err(
            &[
                "ecs",
                "put-account-setting",
                "--name",
                name,
                "--value",
                value,
            ],
            "InvalidParameterException",
        );
        assert!(e.contains(says), "{name}={value}: {e}");
    }
    let e = serve.aws_err(
        &[
            "ecs",
            "put-account-setting",
            "--name",
            "awsvpcTrunking",
            "--value",
            "enabled",
            "--principal-arn",
            "arn:aws:iam::000000000000:role/deployer",
        ],
        "InvalidParameterException",
    );
    assert!(e.contains("no IAM users or roles"), "{e}");

    // Kept across a restart; deleting returns to the default.
    drop(serve);
    let serve = ServeProcess::start(dir.path());
    let l = serve.aws_ok(&["ecs", "list-account-settings"]);
    assert_eq!(l["settings"].as_array().unwrap().len(), 2, "{l}");
    let d = serve.aws_ok(&[
        "ecs",
        "delete-account-setting",
        "--name",
        "fargateTaskRetirementWaitPeriod",
    ]);
    assert_eq!(d["setting"]["value"], "14", "the setting deleted");
    let l = serve.aws_ok(&[
        "ecs",
        "list-account-settings",
        "--name",
        "fargateTaskRetirementWaitPeriod",
        "--effective-settings",
    ]);
    assert_eq!(l["settings"][0]["value"], "7", "back to the default");
}

#[test]
fn protected_tasks_survive_scale_in_until_unprotected() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(wasm_apps::app("SLEEPER_P1"), "sleeper:v1");
    serve.register_task_definition(
        dir.path(),
        &json!({
            "family": "sleepy",
            "containerDefinitions": [{
                "name": "s", "image": format!("{}/sleeper:v1", serve.registry),
                "memory": 32, "essential": true, "command": ["600"]
            }]
        }),
    );
    serve.aws_ok(&[
        "ecs",
        "create-service",
        "--service-name",
        "web",
        "--task-definition",
        "sleepy",
        "--desired-count",
        "3",
    ]);
    let running = |serve: &ServeProcess| -> Vec<String> {
        let l = serve.aws_ok(&["ecs", "list-tasks", "--service-name", "web"]);
        l["taskArns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait("three tasks", &|| running(&serve).len() == 3);
    let tasks = running(&serve);
    let p = serve.aws_ok(&[
        "ecs",
        "update-task-protection",
        "--cluster",
        "default",
        "--tasks",
        &tasks[0],
        &tasks[1],
        "--protection-enabled",
        "--expires-in-minutes",
        "60",
    ]);
    assert_eq!(p["protectedTasks"].as_array().unwrap().len(), 2);
    assert_eq!(p["protectedTasks"][0]["protectionEnabled"], true);
    let g = serve.aws_ok(&[
        "ecs",
        "get-task-protection",
        "--cluster",
        "default",
        "--tasks",
        &tasks[0],
        &tasks[2],
    ]);
    assert_eq!(g["protectedTasks"][0]["protectionEnabled"], true);
    assert!(g["protectedTasks"][0]["expirationDate"].is_number());
    assert_eq!(g["protectedTasks"][1]["protectionEnabled"], false);

    // Scale to zero: only the unprotected one goes.
    serve.aws_ok(&[
        "ecs",
        "update-service",
        "--service",
        "web",
        "--desired-count",
        "0",
    ]);
    wait("the unprotected task to stop", &|| {
        running(&serve).len() == 2
    });
    let left = running(&serve);
    assert!(
        left.contains(&tasks[0]) && left.contains(&tasks[1]),
        "{left:?}"
    );
    // Protection lifted: they go too.
    serve.aws_ok(&[
        "ecs",
        "update-task-protection",
        "--cluster",
        "default",
        "--tasks",
        &tasks[0],
        &tasks[1],
        "--no-protection-enabled",
    ]);
    wait("every task to stop", &|| running(&serve).is_empty());

    let e = serve.aws_err(
        &[
            "ecs",
            "update-task-protection",
            "--cluster",
            "default",
            "--tasks",
            &tasks[0],
            "--protection-enabled",
            "--expires-in-minutes",
            "9999",
        ],
        "InvalidParameterException",
    );
    assert!(e.contains("between 1 and 2880"), "{e}");
}

#[test]
fn services_are_listed_by_their_discovery_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    let op = serve.aws_ok(&[
        "servicediscovery",
        "create-private-dns-namespace",
        "--name",
        "corp.local",
        "--vpc",
        "vpc-0000000000000skf",
    ]);
    assert!(op["OperationId"].is_string());
    let ns = serve.aws_ok(&["servicediscovery", "list-namespaces"])["Namespaces"][0]["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let sd = serve.aws_ok(&[
        "servicediscovery",
        "create-service",
        "--name",
        "api",
        "--namespace-id",
        &ns,
        "--dns-config",
        "RoutingPolicy=MULTIVALUE,DnsRecords=[{Type=A,TTL=10}]",
    ]);
    let registry = sd["Service"]["Arn"].as_str().unwrap().to_string();
    serve.push(wasm_apps::app("SLEEPER_P1"), "sleeper:v1");
    serve.register_task_definition(
        dir.path(),
        &json!({
            "family": "api", "networkMode": "awsvpc",
            "containerDefinitions": [{
                "name": "s", "image": format!("{}/sleeper:v1", serve.registry),
                "memory": 32, "essential": true, "command": ["600"]
            }]
        }),
    );
    serve.aws_ok(&[
        "ecs",
        "create-service",
        "--service-name",
        "api",
        "--task-definition",
        "api",
        "--desired-count",
        "0",
        "--network-configuration",
        "awsvpcConfiguration={subnets=[subnet-0000000000000000a]}",
        "--service-registries",
        &format!("registryArn={registry}"),
    ]);
    let l = serve.aws_ok(&[
        "ecs",
        "list-services-by-namespace",
        "--namespace",
        "corp.local",
    ]);
    assert_eq!(l["serviceArns"].as_array().unwrap().len(), 1, "{l}");
    assert!(
        l["serviceArns"][0]
            .as_str()
            .unwrap()
            .ends_with("service/default/api")
    );
    serve.aws_err(
        &[
            "ecs",
            "list-services-by-namespace",
            "--namespace",
            "nowhere.local",
        ],
        "NamespaceNotFoundException",
    );
}
