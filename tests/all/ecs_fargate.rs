//! AWS's own Fargate CLI tutorial ("Creating an Amazon ECS Linux task for
//! the Fargate launch type with the AWS CLI"), step by step as written —
//! the image swapped for a Wasm HTTP component, the placeholders
//! `subnet-abcd1234` and `sg-abcd1234` filled in from describe-subnets and
//! a security group opening port 80, as the tutorial's prerequisites ask
//! — and the Fargate options its variants and SDK code use: capacity
//! provider strategies, platform versions, managed and propagated tags.

use crate::support::ServeProcess;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// GET / at `addr`; the response, or the error reaching it.
fn get(addr: &str) -> Result<String, String> {
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn task_definition(serve: &ServeProcess) -> Value {
    json!({
        "family": "sample-fargate",
        "networkMode": "awsvpc",
        "containerDefinitions": [{
            "name": "fargate-app",
            "image": format!("{}/httpd:latest", serve.registry),
            "portMappings": [{"containerPort": 80, "hostPort": 80, "protocol": "tcp"}],
            "essential": true
        }],
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512"
    })
}

#[test]
fn fargate_cli_tutorial_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(wasm_apps::app("HTTP_HELLO_P2"), "httpd:latest");

    // Step 1: create the cluster.
    let c = serve.aws_ok(&["ecs", "create-cluster", "--cluster-name", "fargate-cluster"]);
    assert_eq!(c["cluster"]["status"], "ACTIVE");

    // Step 2: register the task definition from a file.
    let file = dir.path().join("fargate-task.json");
    std::fs::write(&file, task_definition(&serve).to_string()).unwrap();
    let td = serve.aws_ok(&[
        "ecs",
        "register-task-definition",
        "--cli-input-json",
        &format!("file://{}", file.display()),
    ]);
    assert_eq!(td["taskDefinition"]["revision"], 1);

    // Step 3: list task definitions.
    let l = serve.aws_ok(&["ecs", "list-task-definitions"]);
    assert!(
        l["taskDefinitionArns"]
            .to_string()
            .contains("sample-fargate:1")
    );

    // The prerequisites: a subnet and a security group letting port 80 in.
    let subnet = serve.aws_ok(&["ec2", "describe-subnets"])["Subnets"][0]["SubnetId"]
        .as_str()
        .unwrap()
        .to_string();
    let vpc = serve.aws_ok(&["ec2", "describe-vpcs"])["Vpcs"][0]["VpcId"]
        .as_str()
        .unwrap()
        .to_string();
    let sg = serve.aws_ok(&[
        "ec2",
        "create-security-group",
        "--group-name",
        "tutorial",
        "--description",
        "port 80 open",
        "--vpc-id",
        &vpc,
    ])["GroupId"]
        .as_str()
        .unwrap()
        .to_string();
    serve.aws_ok(&[
        "ec2",
        "authorize-security-group-ingress",
        "--group-id",
        &sg,
        "--protocol",
        "tcp",
        "--port",
        "80",
        "--cidr",
        "0.0.0.0/0",
    ]);

    // Step 4: create the service, with a public IP.
    let network = format!(
        "awsvpcConfiguration={{subnets=[{subnet}],securityGroups=[{sg}],assignPublicIp=ENABLED}}"
    );
    let svc = serve.aws_ok(&[
        "ecs",
        "create-service",
        "--cluster",
        "fargate-cluster",
        "--service-name",
        "fargate-service",
        "--task-definition",
        "sample-fargate:1",
        "--desired-count",
        "1",
        "--launch-type",
        "FARGATE",
        "--network-configuration",
        &network,
    ]);
    assert_eq!(svc["service"]["platformVersion"], "LATEST");

    // Step 5 and 6: list and describe the services.
    let l = serve.aws_ok(&["ecs", "list-services", "--cluster", "fargate-cluster"]);
    assert!(
        l["serviceArns"][0]
            .as_str()
            .unwrap()
            .ends_with("/fargate-service")
    );
    wait_for("the service's task to run", || {
        let d = serve.aws_ok(&[
            "ecs",
            "describe-services",
            "--cluster",
            "fargate-cluster",
            "--services",
            "fargate-service",
        ]);
        d["services"][0]["runningCount"] == 1
    });

    // Step 7: find the task's network interface, its public IP, and browse.
    let tasks = serve.aws_ok(&[
        "ecs",
        "list-tasks",
        "--cluster",
        "fargate-cluster",
        "--service",
        "fargate-service",
    ]);
    let task = tasks["taskArns"][0].as_str().unwrap().to_string();
    let t = &serve.aws_ok(&[
        "ecs",
        "describe-tasks",
        "--cluster",
        "fargate-cluster",
        "--tasks",
        &task,
    ])["tasks"][0];
    assert_eq!(t["launchType"], "FARGATE");
    assert_eq!(t["platformVersion"], "1.4.0");
    assert_eq!(t["platformFamily"], "Linux");
    let details = t["attachments"][0]["details"].as_array().unwrap();
    let detail = |name: &str| {
        details.iter().find(|d| d["name"] == name).unwrap()["value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let eni = detail("networkInterfaceId");
    let private = detail("privateIPv4Address");
    let nis = serve.aws_ok(&[
        "ec2",
        "describe-network-interfaces",
        "--network-interface-id",
        &eni,
    ]);
    let ni = &nis["NetworkInterfaces"][0];
    assert_eq!(ni["PrivateIpAddress"], private.as_str());
    assert_eq!(ni["SubnetId"], subnet.as_str());
    assert_eq!(ni["Groups"][0]["GroupId"], sg.as_str());
    let public = ni["Association"]["PublicIp"].as_str().unwrap().to_string();
    let page = get(&format!("{public}:80")).unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("Hello from skiff"), "{page}");
    // The address also finds it by filter, as scripts look it up.
    let by_ip = serve.aws_ok(&[
        "ec2",
        "describe-network-interfaces",
        "--filters",
        &format!("Name=addresses.private-ip-address,Values={private}"),
    ]);
    assert_eq!(
        by_ip["NetworkInterfaces"][0]["NetworkInterfaceId"],
        eni.as_str()
    );

    // A second task cannot have the same public port on this machine:
    // placement says so.
    serve.aws_ok(&[
        "ecs",
        "update-service",
        "--cluster",
        "fargate-cluster",
        "--service",
        "fargate-service",
        "--desired-count",
        "2",
    ]);
    wait_for(
        "the service to say why its second task has no place",
        || {
            let d = serve.aws_ok(&[
                "ecs",
                "describe-services",
                "--cluster",
                "fargate-cluster",
                "--services",
                "fargate-service",
            ]);
            d["services"][0]["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| {
                    e["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("RESOURCE:PORTS (assignPublicIp ENABLED"))
                })
        },
    );

    // The public address is behind the task's security group, as on AWS.
    serve.aws_ok(&[
        "ec2",
        "revoke-security-group-ingress",
        "--group-id",
        &sg,
        "--protocol",
        "tcp",
        "--port",
        "80",
        "--cidr",
        "0.0.0.0/0",
    ]);
    wait_for("the revoked rule to close the public port", || {
        get(&format!("{public}:80")).map_or(true, |page| page.is_empty())
    });

    // Step 8 and 9: clean up.
    serve.aws_ok(&[
        "ecs",
        "delete-service",
        "--cluster",
        "fargate-cluster",
        "--service",
        "fargate-service",
        "--force",
    ]);
    wait_for("the task to stop", || {
        let l = serve.aws_ok(&["ecs", "list-tasks", "--cluster", "fargate-cluster"]);
        l["taskArns"].as_array().is_some_and(Vec::is_empty)
    });
    // Its interface is gone with it, and so is its public port.
    serve.aws_err(
        &[
            "ec2",
            "describe-network-interfaces",
            "--network-interface-id",
            &eni,
        ],
        "InvalidNetworkInterfaceID.NotFound",
    );
    wait_for("the public port to close", || {
        get(&format!("{public}:80")).is_err()
    });
    let d = serve.aws_ok(&["ecs", "delete-cluster", "--cluster", "fargate-cluster"]);
    assert_eq!(d["cluster"]["status"], "INACTIVE");
}

#[test]
fn capacity_providers_platform_versions_and_tags() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(wasm_apps::app("HTTP_HELLO_P2"), "httpd:latest");
    let mut td = task_definition(&serve);
    td["tags"] = json!([{"key": "team", "value": "web"}]);
    serve.register_task_definition(dir.path(), &td);
    let net = "awsvpcConfiguration={subnets=[subnet-0000000000000000a]}";

    // A strategy needs its providers associated with the cluster.
    serve.aws_ok(&["ecs", "create-cluster", "--cluster-name", "plain"]);
    let e = serve.aws_err(
        &[
            "ecs",
            "run-task",
            "--cluster",
            "plain",
            "--task-definition",
            "sample-fargate",
            "--capacity-provider-strategy",
            "capacityProvider=FARGATE,weight=1",
            "--network-configuration",
            net,
        ],
        "InvalidParameterException",
    );
    assert!(e.contains("not associated with the cluster"), "{e}");
    // Overrides make a task size Fargate must have too.
    for (overrides, needle) in [
        (r#"{"cpu": "300"}"#, "cpu 300"),
        (r#"{"memory": "4096"}"#, "4096 memory"),
    ] {
        let e = serve.aws_err(
            &[
                "ecs",
                "run-task",
                "--task-definition",
                "sample-fargate",
                "--launch-type",
                "FARGATE",
                "--overrides",
                overrides,
                "--network-configuration",
                net,
            ],
            "ClientException",
        );
        assert!(
            e.contains("No Fargate configuration") && e.contains(needle),
            "{e}"
        );
    }
    let c = serve.aws_ok(&[
        "ecs",
        "create-cluster",
        "--cluster-name",
        "cp",
        "--capacity-providers",
        "FARGATE",
        "FARGATE_SPOT",
        "--default-capacity-provider-strategy",
        "capacityProvider=FARGATE_SPOT,weight=1",
    ]);
    assert_eq!(
        c["cluster"]["capacityProviders"],
        json!(["FARGATE", "FARGATE_SPOT"])
    );
    let e = serve.aws_err(
        &[
            "ecs",
            "create-cluster",
            "--cluster-name",
            "x",
            "--capacity-providers",
            "my-asg-provider",
        ],
        "InvalidParameterException",
    );
    assert!(e.contains("my-asg-provider does not exist"), "{e}");
    let d = serve.aws_ok(&["ecs", "describe-capacity-providers"]);
    let names: Vec<&str> = d["capacityProviders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["FARGATE", "FARGATE_SPOT"]);

    // Neither launch type nor strategy: the cluster's default strategy.
    let run = serve.aws_ok(&[
        "ecs",
        "run-task",
        "--cluster",
        "cp",
        "--task-definition",
        "sample-fargate",
        "--network-configuration",
        net,
        "--propagate-tags",
        "TASK_DEFINITION",
        "--enable-ecs-managed-tags",
        "--platform-version",
        "LATEST",
    ]);
    let t = &run["tasks"][0];
    assert_eq!(t["launchType"], "FARGATE");
    assert_eq!(t["capacityProviderName"], "FARGATE_SPOT");
    assert_eq!(t["platformVersion"], "1.4.0");
    let tags = serve.aws_ok(&[
        "ecs",
        "list-tags-for-resource",
        "--resource-arn",
        t["taskArn"].as_str().unwrap(),
    ]);
    let tags = tags["tags"].to_string();
    assert!(tags.contains(r#"{"key":"team","value":"web"}"#), "{tags}");
    assert!(
        tags.contains(r#"{"key":"aws:ecs:clusterName","value":"cp"}"#),
        "{tags}"
    );

    // ECS's refusals.
    let e = serve.aws_err(
        &[
            "ecs",
            "run-task",
            "--cluster",
            "cp",
            "--task-definition",
            "sample-fargate",
            "--launch-type",
            "FARGATE",
            "--capacity-provider-strategy",
            "capacityProvider=FARGATE,weight=1",
            "--network-configuration",
            net,
        ],
        "InvalidParameterException",
    );
    assert!(
        e.contains("Specifying both a launchType and capacityProviderStrategy"),
        "{e}"
    );
    let e = serve.aws_err(
        &[
            "ecs",
            "run-task",
            "--cluster",
            "cp",
            "--task-definition",
            "sample-fargate",
            "--launch-type",
            "EC2",
            "--platform-version",
            "1.4.0",
            "--network-configuration",
            net,
        ],
        "InvalidParameterException",
    );
    assert!(
        e.contains("applies only to tasks launched on Fargate"),
        "{e}"
    );
    let e = serve.aws_err(
        &[
            "ecs",
            "run-task",
            "--cluster",
            "cp",
            "--task-definition",
            "sample-fargate",
            "--platform-version",
            "9.9.9",
            "--network-configuration",
            net,
        ],
        "InvalidParameterException",
    );
    assert!(e.contains("Platform version 9.9.9 is not valid"), "{e}");
    let e = serve.aws_err(
        &[
            "ecs",
            "run-task",
            "--cluster",
            "cp",
            "--task-definition",
            "sample-fargate",
            "--propagate-tags",
            "SERVICE",
            "--network-configuration",
            net,
        ],
        "InvalidParameterException",
    );
    assert!(e.contains("propagateTags SERVICE"), "{e}");

    // A service splits by base and weight, and its tasks carry its tags.
    let svc = serve.aws_ok(&[
        "ecs",
        "create-service",
        "--cluster",
        "cp",
        "--service-name",
        "split",
        "--task-definition",
        "sample-fargate",
        "--desired-count",
        "5",
        "--capacity-provider-strategy",
        "capacityProvider=FARGATE,weight=1,base=2",
        "capacityProvider=FARGATE_SPOT,weight=2",
        "--network-configuration",
        net,
        "--propagate-tags",
        "SERVICE",
        "--enable-ecs-managed-tags",
        "--enable-execute-command",
        "--tags",
        "key=tier,value=front",
    ]);
    let s = &svc["service"];
    assert_eq!(s["propagateTags"], "SERVICE");
    assert_eq!(s["enableECSManagedTags"], true);
    assert_eq!(s["enableExecuteCommand"], true);
    assert_eq!(s["capacityProviderStrategy"][0]["base"], 2);
    assert!(s.get("launchType").is_none(), "{s}");
    let mut arns = Vec::new();
    wait_for("five tasks", || {
        let l = serve.aws_ok(&[
            "ecs",
            "list-tasks",
            "--cluster",
            "cp",
            "--service-name",
            "split",
        ]);
        arns = l["taskArns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        arns.len() == 5
    });
    let mut args = vec![
        "ecs",
        "describe-tasks",
        "--cluster",
        "cp",
        "--include",
        "TAGS",
        "--tasks",
    ];
    args.extend(arns.iter().map(String::as_str));
    let d = serve.aws_ok(&args);
    let of = |p: &str| {
        d["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["capacityProviderName"] == p)
            .count()
    };
    // Two for FARGATE's base, the other three 1:2.
    assert_eq!((of("FARGATE"), of("FARGATE_SPOT")), (3, 2));
    for t in d["tasks"].as_array().unwrap() {
        let tags = t["tags"].to_string();
        assert!(tags.contains(r#"{"key":"tier","value":"front"}"#), "{tags}");
        assert!(
            tags.contains(r#"{"key":"aws:ecs:serviceName","value":"split"}"#),
            "{tags}"
        );
        assert!(
            !tags.contains("team"),
            "SERVICE propagation copies the service's: {tags}"
        );
        assert_eq!(t["enableExecuteCommand"], true);
    }
    // A provider a service uses stays associated.
    let e = serve.aws_err(
        &[
            "ecs",
            "put-cluster-capacity-providers",
            "--cluster",
            "cp",
            "--capacity-providers",
            "FARGATE",
            "--default-capacity-provider-strategy",
            "[]",
        ],
        "ResourceInUseException",
    );
    assert!(e.contains("FARGATE_SPOT is in use"), "{e}");
}
