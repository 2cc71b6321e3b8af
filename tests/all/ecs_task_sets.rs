//! The EXTERNAL deployment controller through the AWS CLI, as a
//! third-party controller drives it: a blue/green deployment by task sets
//! behind an Application Load Balancer, traffic moved by the listener, the
//! old task set drained away — and the mistakes such a controller makes.

use crate::ecs_elb::{all_healthy, get, http_load_balancer, s, target_states, until, web_td};
use crate::support::ServeProcess;
use serde_json::Value;
use wasm_apps::app;

const NET: &str = "awsvpcConfiguration={subnets=[subnet-1]}";

fn task_sets(serve: &ServeProcess) -> Vec<Value> {
    serve.aws_ok(&[
        "ecs",
        "describe-task-sets",
        "--cluster",
        "default",
        "--service",
        "web",
    ])["taskSets"]
        .as_array()
        .unwrap()
        .clone()
}

fn task_set(serve: &ServeProcess, id: &str) -> Value {
    task_sets(serve)
        .into_iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("no task set {id}"))
}

fn create_task_set(serve: &ServeProcess, td: &str, who: &str, tg: &str, percent: u32) -> String {
    let t = serve.aws_ok(&[
        "ecs",
        "create-task-set",
        "--cluster",
        "default",
        "--service",
        "web",
        "--task-definition",
        td,
        "--external-id",
        who,
        "--network-configuration",
        NET,
        "--load-balancers",
        &format!("targetGroupArn={tg},containerName=web,containerPort=80"),
        "--scale",
        &format!("value={percent},unit=PERCENT"),
    ]);
    let set = &t["taskSet"];
    assert_eq!(set["status"], "ACTIVE", "{t}");
    assert_eq!(set["externalId"], who);
    assert!(
        s(&set["taskSetArn"]).contains(":task-set/default/web/ecs-svc/"),
        "{t}"
    );
    s(&set["id"])
}

/// The tasks of the service, by the task set (`startedBy`) that started
/// them, among those not stopped.
fn running_by_set(serve: &ServeProcess) -> Vec<String> {
    let arns = serve.aws_ok(&["ecs", "list-tasks", "--service-name", "web"])["taskArns"].clone();
    let arns: Vec<String> = arns.as_array().unwrap().iter().map(s).collect();
    if arns.is_empty() {
        return Vec::new();
    }
    let mut args = vec!["ecs", "describe-tasks", "--tasks"];
    args.extend(arns.iter().map(String::as_str));
    let mut by: Vec<String> = serve.aws_ok(&args)["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| s(&t["startedBy"]))
        .collect();
    by.sort();
    by
}

#[test]
fn a_blue_green_deployment_by_task_sets_behind_a_load_balancer() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(app("HTTP_HELLO_P2"), "hello-http:v1");
    serve.register_task_definition(dir.path(), &web_td("web", "blue"));
    serve.register_task_definition(dir.path(), &web_td("web", "green"));
    let (blue_tg, port) = http_load_balancer(&serve, "blue", "ip");
    let green_tg = s(&serve.aws_ok(&[
        "elbv2",
        "create-target-group",
        "--name",
        "green",
        "--protocol",
        "HTTP",
        "--port",
        "80",
        "--target-type",
        "ip",
        "--health-check-path",
        "/health",
        "--health-check-interval-seconds",
        "5",
        "--healthy-threshold-count",
        "2",
    ])["TargetGroups"][0]["TargetGroupArn"]);
    // A test listener for green, as blue/green deployments have.
    let lb = s(
        &serve.aws_ok(&["elbv2", "describe-load-balancers", "--names", "blue"])["LoadBalancers"][0]
            ["LoadBalancerArn"],
    );
    let test_port = skiff_harness::free_port();
    serve.aws_ok(&[
        "elbv2",
        "create-listener",
        "--load-balancer-arn",
        &lb,
        "--protocol",
        "HTTP",
        "--port",
        &test_port.to_string(),
        "--default-actions",
        &format!("Type=forward,TargetGroupArn={green_tg}"),
    ]);

    // Only the name is needed; what runs comes from task sets.
    let svc = serve.aws_ok(&[
        "ecs",
        "create-service",
        "--service-name",
        "web",
        "--desired-count",
        "2",
        "--deployment-controller",
        "type=EXTERNAL",
    ]);
    assert_eq!(svc["service"]["deploymentController"]["type"], "EXTERNAL");
    assert_eq!(svc["service"]["taskSets"], serde_json::json!([]));
    assert!(svc["service"].get("taskDefinition").is_none(), "{svc}");

    // Blue: the whole desired count, made primary.
    let blue = create_task_set(&serve, "web:1", "blue", &blue_tg, 100);
    let p = serve.aws_ok(&[
        "ecs",
        "update-service-primary-task-set",
        "--cluster",
        "default",
        "--service",
        "web",
        "--primary-task-set",
        &blue,
    ]);
    assert_eq!(p["taskSet"]["status"], "PRIMARY");
    until("two healthy blue targets", 90, || {
        all_healthy(&serve, &blue_tg, 2)
    });
    assert_eq!(get(port, "/whoami"), (200, "blue".into()));
    let d = &serve.aws_ok(&["ecs", "describe-services", "--services", "web"])["services"][0];
    assert!(
        s(&d["taskDefinition"]).ends_with("task-definition/web:1"),
        "{d}"
    );
    assert_eq!(d["loadBalancers"][0]["targetGroupArn"], blue_tg.as_str());
    assert_eq!(d["taskSets"][0]["id"], blue.as_str());
    assert_eq!(d["runningCount"], 2);

    // Green beside it at half the count: 50% of 2 is 1; blue keeps its 2
    // and all the traffic.
    let green = create_task_set(&serve, "web:2", "green", &green_tg, 50);
    until("a healthy green target", 90, || {
        all_healthy(&serve, &green_tg, 1)
    });
    until("both task sets steady", 30, || {
        task_sets(&serve)
            .iter()
            .all(|t| t["stabilityStatus"] == "STEADY_STATE")
    });
    let g = task_set(&serve, &green);
    assert_eq!(g["computedDesiredCount"], 1, "{g}");
    assert_eq!(g["runningCount"], 1, "{g}");
    assert_eq!(task_set(&serve, &blue)["runningCount"], 2);
    assert_eq!(running_by_set(&serve).len(), 3);
    for _ in 0..5 {
        assert_eq!(get(port, "/whoami"), (200, "blue".into()));
        assert_eq!(get(test_port, "/whoami"), (200, "green".into()));
    }

    // The controller moves the traffic (the listener), then the service.
    let listeners = serve.aws_ok(&["elbv2", "describe-listeners", "--load-balancer-arn", &lb]);
    let listener = listeners["Listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["Port"] == port)
        .map(|l| s(&l["ListenerArn"]))
        .unwrap();
    // A canary first: a quarter of the requests to green, by weight.
    serve.aws_ok(&[
        "elbv2",
        "modify-listener",
        "--listener-arn",
        &listener,
        "--default-actions",
        &format!(
            "Type=forward,ForwardConfig={{TargetGroups=[{{TargetGroupArn={blue_tg},Weight=3}},{{TargetGroupArn={green_tg},Weight=1}}]}}"
        ),
    ]);
    let l = serve.aws_ok(&["elbv2", "describe-listeners", "--listener-arns", &listener]);
    let weights: Vec<i64> = l["Listeners"][0]["DefaultActions"][0]["ForwardConfig"]["TargetGroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["Weight"].as_i64().unwrap())
        .collect();
    assert_eq!(weights, [3, 1], "{l}");
    let (ok, _, err) = serve.aws(&[
        "elbv2",
        "modify-listener",
        "--listener-arn",
        &listener,
        "--default-actions",
        &format!(
            "Type=forward,ForwardConfig={{TargetGroups=[{{TargetGroupArn={blue_tg},Weight=1000}}]}}"
        ),
    ]);
    assert!(!ok && err.contains("from 0 to 999"), "{err}");
    let answers: Vec<String> = (0..80).map(|_| get(port, "/whoami").1).collect();
    let green_share = answers.iter().filter(|a| *a == "green").count();
    assert_eq!(
        green_share + answers.iter().filter(|a| *a == "blue").count(),
        80,
        "{answers:?}"
    );
    assert!(
        (8..=32).contains(&green_share),
        "about 20 of 80 to green, not {green_share}"
    );
    serve.aws_ok(&[
        "elbv2",
        "modify-listener",
        "--listener-arn",
        &listener,
        "--default-actions",
        &format!("Type=forward,TargetGroupArn={green_tg}"),
    ]);
    assert_eq!(get(port, "/whoami"), (200, "green".into()));
    serve.aws_ok(&[
        "ecs",
        "update-service-primary-task-set",
        "--cluster",
        "default",
        "--service",
        "web",
        "--primary-task-set",
        &green,
    ]);
    assert_eq!(task_set(&serve, &blue)["status"], "ACTIVE");
    let d = &serve.aws_ok(&["ecs", "describe-services", "--services", "web"])["services"][0];
    assert!(
        s(&d["taskDefinition"]).ends_with("task-definition/web:2"),
        "{d}"
    );
    serve.aws_ok(&[
        "ecs",
        "update-task-set",
        "--cluster",
        "default",
        "--service",
        "web",
        "--task-set",
        &green,
        "--scale",
        "value=100,unit=PERCENT",
    ]);
    until("two healthy green targets", 90, || {
        all_healthy(&serve, &green_tg, 2)
    });

    // Blue is still scaled: deleting it needs force (or a scale of 0).
    let e = serve.aws_err(
        &[
            "ecs",
            "delete-task-set",
            "--cluster",
            "default",
            "--service",
            "web",
            "--task-set",
            &blue,
        ],
        "InvalidParameterException",
    );
    assert!(e.contains("has not been scaled down to zero"), "{e}");
    let del = serve.aws_ok(&[
        "ecs",
        "delete-task-set",
        "--cluster",
        "default",
        "--service",
        "web",
        "--task-set",
        &blue,
        "--force",
    ]);
    assert_eq!(del["taskSet"]["status"], "DRAINING");
    until("blue drained and gone", 90, || {
        task_sets(&serve).iter().all(|t| t["id"] != blue.as_str())
    });
    assert!(target_states(&serve, &blue_tg).is_empty());
    assert_eq!(running_by_set(&serve), [green.clone(), green.clone()]);
    for _ in 0..5 {
        assert_eq!(get(port, "/whoami"), (200, "green".into()));
    }
    // The service tells the story.
    let d = &serve.aws_ok(&["ecs", "describe-services", "--services", "web"])["services"][0];
    let said: Vec<String> = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| s(&e["message"]))
        .collect();
    assert!(
        said.iter().any(|m| m.starts_with(&format!(
            "(service web, taskSet {green}) has started 1 tasks"
        ))),
        "{said:?}"
    );

    // Deleting the service drains what is left.
    serve.aws_ok(&["ecs", "delete-service", "--service", "web", "--force"]);
    until("the service INACTIVE", 60, || {
        serve.aws_ok(&["ecs", "describe-services", "--services", "web"])["services"][0]["status"]
            == "INACTIVE"
    });
    assert!(running_by_set(&serve).is_empty());
}

#[test]
fn task_set_mistakes_are_refused_with_ecs_errors() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(app("HTTP_HELLO_P2"), "hello-http:v1");
    serve.register_task_definition(dir.path(), &web_td("web", "blue"));
    fn ts<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec![
            "ecs",
            "create-task-set",
            "--cluster",
            "default",
            "--service",
            "web",
            "--task-definition",
            "web:1",
            "--network-configuration",
            NET,
        ];
        a.extend_from_slice(extra);
        a
    }
    // Task sets belong to EXTERNAL services only.
    serve.aws_ok(&[
        "ecs",
        "create-service",
        "--service-name",
        "rolling",
        "--task-definition",
        "web:1",
        "--desired-count",
        "0",
        "--network-configuration",
        NET,
    ]);
    let mut on_rolling = ts(&[]);
    on_rolling[5] = "rolling";
    let e = serve.aws_err(&on_rolling, "InvalidParameterException");
    assert!(e.contains("external deployment controllers"), "{e}");
    // What belongs to task sets is refused on the service, naming where
    // it goes.
    let e = serve.aws_err(
        &[
            "ecs",
            "create-service",
            "--service-name",
            "web",
            "--deployment-controller",
            "type=EXTERNAL",
            "--task-definition",
            "web:1",
        ],
        "InvalidParameterException",
    );
    assert!(e.contains("taskDefinition is set per task set"), "{e}");
    let e = serve.aws_err(
        &[
            "ecs",
            "create-service",
            "--service-name",
            "web",
            "--deployment-controller",
            "type=CODE_DEPLOY",
            "--task-definition",
            "web:1",
            "--desired-count",
            "1",
        ],
        "InvalidParameterException",
    );
    assert!(e.contains("CodeDeploy"), "{e}");
    serve.aws_ok(&[
        "ecs",
        "create-service",
        "--service-name",
        "web",
        "--deployment-controller",
        "type=EXTERNAL",
        "--desired-count",
        "4",
    ]);
    let e = serve.aws_err(
        &[
            "ecs",
            "update-service",
            "--service",
            "web",
            "--task-definition",
            "web:1",
        ],
        "InvalidParameterException",
    );
    assert!(e.contains("CreateTaskSet"), "{e}");
    let e = serve.aws_err(
        &[
            "ecs",
            "update-service",
            "--service",
            "web",
            "--deployment-controller",
            "type=ECS",
        ],
        "InvalidParameterException",
    );
    assert!(e.contains("cannot be changed"), "{e}");
    let long = "x".repeat(300);
    serve.aws_err(&ts(&["--external-id", &long]), "InvalidParameterException");
    serve.aws_err(&ts(&["--client-token", &long]), "InvalidParameterException");
    // (The AWS CLI checks this one itself; an SDK that does not is told.)
    let e = serve.boto3(
        "from botocore.config import Config\n\
         ecs = boto3.client('ecs', endpoint_url=ENDPOINT, region_name=REGION,\n\
             config=Config(parameter_validation=False))\n\
         try:\n\
         \x20   ecs.create_service(serviceName='typeless', deploymentController={})\n\
         except botocore.exceptions.ClientError as e:\n\
         \x20   print(e.response['Error']['Code'], e.response['Error']['Message'])\n",
        "AKIDSKIFFTEST",
        "secret",
    );
    assert!(
        e.starts_with("InvalidParameterException") && e.contains("deploymentController.type"),
        "{e}"
    );
    let e = serve.aws_err(
        &ts(&["--scale", "value=150,unit=PERCENT"]),
        "InvalidParameterException",
    );
    assert!(e.contains("from 0 to 100"), "{e}");
    let e = serve.aws_err(&ts(&["--task-definition", "nope:1"]), "ClientException");
    assert!(e.contains("nope:1"), "{e}");
    // Unknown task sets: failures in a describe, errors elsewhere.
    let d = serve.aws_ok(&[
        "ecs",
        "describe-task-sets",
        "--cluster",
        "default",
        "--service",
        "web",
        "--task-sets",
        "ecs-svc/1234",
    ]);
    assert_eq!(d["failures"][0]["reason"], "MISSING", "{d}");
    for op in ["update-service-primary-task-set", "delete-task-set"] {
        let flag = if op == "delete-task-set" {
            "--task-set"
        } else {
            "--primary-task-set"
        };
        serve.aws_err(
            &[
                "ecs",
                op,
                "--cluster",
                "default",
                "--service",
                "web",
                flag,
                "ecs-svc/1234",
            ],
            "TaskSetNotFoundException",
        );
    }
    // A client token makes creation idempotent; tags are kept; the tasks
    // register in Cloud Map with the task set's external id.
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
        &s(&op["OperationId"]),
    ]);
    let ns = s(&op["Operation"]["Targets"]["NAMESPACE"]);
    let registry = s(&serve.aws_ok(&[
        "servicediscovery",
        "create-service",
        "--name",
        "web",
        "--dns-config",
        &format!("NamespaceId={ns},DnsRecords=[{{Type=A,TTL=10}}]"),
    ])["Service"]["Arn"]);
    let registries = format!("registryArn={registry}");
    let args = ts(&[
        "--client-token",
        "once",
        "--external-id",
        "canary",
        "--service-registries",
        &registries,
        "--scale",
        "value=30,unit=PERCENT",
        "--tags",
        "key=team,value=edge",
    ]);
    let a = serve.aws_ok(&args);
    let b = serve.aws_ok(&args);
    assert_eq!(a["taskSet"]["id"], b["taskSet"]["id"]);
    assert_eq!(
        a["taskSet"]["computedDesiredCount"], 2,
        "30% of 4 is 1.2: 2"
    );
    assert_eq!(
        a["taskSet"]["networkConfiguration"]["awsvpcConfiguration"]["assignPublicIp"],
        "DISABLED"
    );
    let d = serve.aws_ok(&[
        "ecs",
        "describe-task-sets",
        "--cluster",
        "default",
        "--service",
        "web",
        "--include",
        "TAGS",
    ]);
    assert_eq!(d["taskSets"].as_array().unwrap().len(), 1);
    assert_eq!(d["taskSets"][0]["tags"][0]["value"], "edge");
    until("both canary tasks discoverable", 60, || {
        let found = serve.aws_ok(&[
            "servicediscovery",
            "discover-instances",
            "--namespace-name",
            "local",
            "--service-name",
            "web",
        ]);
        let i = found["Instances"].as_array().unwrap();
        i.len() == 2
            && i.iter()
                .all(|i| i["Attributes"]["ECS_TASK_SET_EXTERNAL_ID"] == "canary")
    });
    // Tagged by ARN like any ECS resource.
    let arn = s(&a["taskSet"]["taskSetArn"]);
    serve.aws_ok(&[
        "ecs",
        "tag-resource",
        "--resource-arn",
        &arn,
        "--tags",
        "key=stage,value=canary",
    ]);
    let t = serve.aws_ok(&["ecs", "list-tags-for-resource", "--resource-arn", &arn]);
    assert_eq!(t["tags"].as_array().unwrap().len(), 2, "{t}");
}

/// Two task sets short of tasks at once share one instance's room: what
/// one is placed on, the other does not get too (the scheduler places one
/// set per pass), so an instance is never filled past its memory.
#[test]
fn task_sets_growing_together_do_not_overfill_an_instance() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start_with(dir.path(), &["--memory", "1024"]);
    serve.push(app("SLEEPER_P1"), "sleeper:v1");
    serve.register_task_definition(
        dir.path(),
        &serde_json::json!({
            "family": "sleepy",
            "containerDefinitions": [{
                "name": "s", "image": "sleeper:v1", "memory": 256, "essential": true
            }]
        }),
    );
    serve.aws_ok(&[
        "ecs",
        "create-service",
        "--service-name",
        "web",
        "--deployment-controller",
        "type=EXTERNAL",
        "--desired-count",
        "0",
    ]);
    for _ in 0..2 {
        serve.aws_ok(&[
            "ecs",
            "create-task-set",
            "--cluster",
            "default",
            "--service",
            "web",
            "--task-definition",
            "sleepy",
        ]);
    }
    // Each set wants 3 tasks of 256 MiB: 6, where 4 fit.
    serve.aws_ok(&[
        "ecs",
        "update-service",
        "--service",
        "web",
        "--desired-count",
        "3",
    ]);
    until("the room to be taken", 60, || {
        let sets = task_sets(&serve);
        let placed: i64 = sets
            .iter()
            .map(|t| t["runningCount"].as_i64().unwrap() + t["pendingCount"].as_i64().unwrap())
            .sum();
        assert!(
            placed <= 4,
            "{placed} tasks of 256 MiB on 1024 MiB: {sets:?}"
        );
        placed == 4
    });
    let d = &serve.aws_ok(&["ecs", "describe-services", "--services", "web"])["services"][0];
    assert!(
        d["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| s(&e["message"]).contains("was unable to place a task")),
        "{d}"
    );
    assert_eq!(running_by_set(&serve).len(), 4);
}
