//! `skiff serve` driven by the real AWS CLI and boto3, unchanged: the
//! issue's test of the control plane.

use crate::support::ServeProcess;
use serde_json::{Value, json};
use std::path::Path;
use wasm_apps::app;

fn write_json(dir: &Path, name: &str, v: &Value) -> String {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    format!("file://{}", p.display())
}

/// A one-container job: `hello` with a command and an exit code, its
/// output in awslogs.
fn hello_job(family: &str, exit: u8) -> Value {
    json!({
        "family": family,
        "networkMode": "none",
        "containerDefinitions": [{
            "name": "app",
            "image": "hello:v1",
            "memory": 64,
            "command": ["first", "--exit", exit.to_string()],
            "environment": [{"name": "NAME", "value": "ecs"}],
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": format!("/ecs/{family}"),
                "awslogs-region": "eu-west-1",
                "awslogs-stream-prefix": "job",
                "awslogs-create-group": "true",
            }},
        }],
    })
}

/// The messages of a GetLogEvents or FilterLogEvents answer.
fn messages(logs: &Value) -> Vec<&str> {
    logs["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect()
}

fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap()
}

#[test]
fn the_aws_cli_runs_a_job_and_reads_its_exit_code_and_logs() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(app("HELLO_P1"), "hello:v1");

    let td = write_json(dir.path(), "job.json", &hello_job("job", 3));
    let registered = serve.aws_ok(&["ecs", "register-task-definition", "--cli-input-json", &td]);
    let def = &registered["taskDefinition"];
    assert_eq!(
        def["taskDefinitionArn"],
        "arn:aws:ecs:eu-west-1:000000000000:task-definition/job:1"
    );
    // Normalised as ECS returns it.
    assert_eq!(def["containerDefinitions"][0]["essential"], true);
    assert_eq!(def["containerDefinitions"][0]["cpu"], 0);
    assert_eq!(def["containerDefinitions"][0]["mountPoints"], json!([]));
    assert_eq!(def["status"], "ACTIVE");
    assert_eq!(def["revision"], 1);

    let run = serve.aws_ok(&[
        "ecs",
        "run-task",
        "--task-definition",
        "job",
        "--started-by",
        "ci",
        "--tags",
        "key=run,value=1",
    ]);
    assert_eq!(run["failures"], json!([]));
    let arn = run["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    assert!(arn.starts_with("arn:aws:ecs:eu-west-1:000000000000:task/default/"));

    serve.aws_ok(&["ecs", "wait", "tasks-stopped", "--tasks", &arn]);
    let described = serve.aws_ok(&["ecs", "describe-tasks", "--tasks", &arn]);
    let task = &described["tasks"][0];
    assert_eq!(task["lastStatus"], "STOPPED");
    assert_eq!(task["desiredStatus"], "STOPPED");
    assert_eq!(task["stopCode"], "EssentialContainerExited");
    assert_eq!(task["containers"][0]["exitCode"], 3);
    assert_eq!(task["containers"][0]["lastStatus"], "STOPPED");
    assert_eq!(task["startedBy"], "ci");
    assert_eq!(task["group"], "family:job");
    assert!(
        task["containers"][0]["imageDigest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    // The lifecycle's timestamps, in order.
    let ts: Vec<f64> = [
        "createdAt",
        "pullStartedAt",
        "pullStoppedAt",
        "startedAt",
        "stoppingAt",
        "executionStoppedAt",
        "stoppedAt",
    ]
    .iter()
    .map(|k| {
        task[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} missing: {task}"))
    })
    .collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{ts:?}");

    // Tags on the task, by its ARN.
    serve.aws_ok(&[
        "ecs",
        "tag-resource",
        "--resource-arn",
        &arn,
        "--tags",
        "key=more,value=2",
    ]);
    let tags = serve.aws_ok(&["ecs", "list-tags-for-resource", "--resource-arn", &arn]);
    assert_eq!(
        tags["tags"],
        json!([{"key": "run", "value": "1"}, {"key": "more", "value": "2"}])
    );

    let stream = format!("job/app/{}", task_id(&arn));
    let logs = serve.aws_ok(&[
        "logs",
        "get-log-events",
        "--log-group-name",
        "/ecs/job",
        "--log-stream-name",
        &stream,
        "--start-from-head",
    ]);
    let lines = messages(&logs);
    assert_eq!(
        lines,
        [
            "Hello, ecs!",
            "arg[0]=app",
            "arg[1]=first",
            "arg[2]=--exit",
            "arg[3]=3"
        ]
    );
    // At the end of the stream, the same forward token comes back.
    let token = logs["nextForwardToken"].as_str().unwrap();
    let again = serve.aws_ok(&[
        "logs",
        "get-log-events",
        "--log-group-name",
        "/ecs/job",
        "--log-stream-name",
        &stream,
        "--next-token",
        token,
    ]);
    assert_eq!(again["events"], json!([]));
    assert_eq!(again["nextForwardToken"], token);
    let streams = serve.aws_ok(&[
        "logs",
        "describe-log-streams",
        "--log-group-name",
        "/ecs/job",
    ]);
    assert_eq!(streams["logStreams"][0]["logStreamName"], stream.as_str());

    // Overrides: command and environment per container.
    let overrides = json!({"containerOverrides": [{"name": "app", "command": ["x"], "environment": [{"name": "NAME", "value": "override"}]}]});
    let run = serve.aws_ok(&[
        "ecs",
        "run-task",
        "--task-definition",
        "job:1",
        "--overrides",
        &overrides.to_string(),
    ]);
    let arn2 = run["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    serve.aws_ok(&["ecs", "wait", "tasks-stopped", "--tasks", &arn2]);
    let task = &serve.aws_ok(&["ecs", "describe-tasks", "--tasks", &arn2])["tasks"][0];
    assert_eq!(task["containers"][0]["exitCode"], 0);
    let logs = serve.aws_ok(&[
        "logs",
        "filter-log-events",
        "--log-group-name",
        "/ecs/job",
        "--filter-pattern",
        "Hello",
    ]);
    let greetings = messages(&logs);
    assert_eq!(greetings, ["Hello, ecs!", "Hello, override!"]);

    let listed = serve.aws_ok(&[
        "ecs",
        "list-tasks",
        "--desired-status",
        "STOPPED",
        "--family",
        "job",
    ]);
    assert_eq!(listed["taskArns"].as_array().unwrap().len(), 2);
    let listed = serve.aws_ok(&[
        "ecs",
        "list-tasks",
        "--started-by",
        "ci",
        "--desired-status",
        "STOPPED",
    ]);
    assert_eq!(listed["taskArns"], json!([arn]));
    // A filter naming nothing is an error, not an empty list.
    serve.aws_err(
        &["ecs", "list-tasks", "--service-name", "nosuch"],
        "ServiceNotFoundException",
    );
    let e = serve.aws_err(
        &["ecs", "list-tasks", "--container-instance", "nonexistent"],
        "InvalidParameterException",
    );
    assert!(e.contains("nonexistent"), "{e}");
}

#[test]
fn clusters_definitions_and_mistakes_answer_as_ecs_does() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());

    let created = serve.aws_ok(&[
        "ecs",
        "create-cluster",
        "--cluster-name",
        "demo",
        "--tags",
        "key=team,value=a",
    ]);
    assert_eq!(created["cluster"]["status"], "ACTIVE");
    let clusters = serve.aws_ok(&["ecs", "list-clusters"]);
    assert_eq!(clusters["clusterArns"].as_array().unwrap().len(), 2);
    let d = serve.aws_ok(&[
        "ecs",
        "describe-clusters",
        "--clusters",
        "default",
        "demo",
        "ghost",
        "--include",
        "TAGS",
    ]);
    assert_eq!(d["clusters"][0]["registeredContainerInstancesCount"], 1);
    assert_eq!(d["clusters"][1]["registeredContainerInstancesCount"], 0);
    assert_eq!(
        d["clusters"][1]["tags"],
        json!([{"key": "team", "value": "a"}])
    );
    assert_eq!(
        d["failures"],
        json!([{"arn": "arn:aws:ecs:eu-west-1:000000000000:cluster/ghost", "reason": "MISSING"}])
    );

    // The local instance, sized from the machine.
    let instances = serve.aws_ok(&["ecs", "list-container-instances"]);
    let instance = instances["containerInstanceArns"][0]
        .as_str()
        .unwrap()
        .to_string();
    let di = serve.aws_ok(&[
        "ecs",
        "describe-container-instances",
        "--container-instances",
        &instance,
    ]);
    let ci = &di["containerInstances"][0];
    assert_eq!(ci["status"], "ACTIVE");
    assert_eq!(ci["agentConnected"], true);
    let cores = std::thread::available_parallelism().unwrap().get() as i64;
    assert_eq!(ci["registeredResources"][0]["integerValue"], cores * 1024);

    // A cluster with no instances cannot run tasks; it can be deleted.
    let td = write_json(dir.path(), "job.json", &hello_job("job", 0));
    serve.aws_ok(&["ecs", "register-task-definition", "--cli-input-json", &td]);
    let msg = serve.aws_err(
        &[
            "ecs",
            "run-task",
            "--cluster",
            "demo",
            "--task-definition",
            "job",
        ],
        "InvalidParameterException",
    );
    assert!(msg.contains("No Container Instances were found"), "{msg}");
    serve.aws_ok(&["ecs", "delete-cluster", "--cluster", "demo"]);
    let d = serve.aws_ok(&["ecs", "describe-clusters", "--clusters", "demo"]);
    assert_eq!(d["clusters"][0]["status"], "INACTIVE");
    serve.aws_err(
        &["ecs", "delete-cluster", "--cluster", "default"],
        "ClusterContainsContainerInstancesException",
    );
    serve.aws_err(
        &["ecs", "list-tasks", "--cluster", "demo"],
        "ClusterNotFoundException",
    );

    // Revisions, families, deregistration.
    serve.aws_ok(&["ecs", "register-task-definition", "--cli-input-json", &td]);
    let arns = serve.aws_ok(&[
        "ecs",
        "list-task-definitions",
        "--family-prefix",
        "job",
        "--sort",
        "DESC",
    ]);
    assert_eq!(
        arns["taskDefinitionArns"],
        json!([
            "arn:aws:ecs:eu-west-1:000000000000:task-definition/job:2",
            "arn:aws:ecs:eu-west-1:000000000000:task-definition/job:1"
        ])
    );
    let gone = serve.aws_ok(&[
        "ecs",
        "deregister-task-definition",
        "--task-definition",
        "job:2",
    ]);
    assert_eq!(gone["taskDefinition"]["status"], "INACTIVE");
    let latest = serve.aws_ok(&[
        "ecs",
        "describe-task-definition",
        "--task-definition",
        "job",
    ]);
    assert_eq!(latest["taskDefinition"]["revision"], 1);
    serve.aws_err(
        &["ecs", "run-task", "--task-definition", "job:2"],
        "ClientException",
    );
    let families = serve.aws_ok(&["ecs", "list-task-definition-families"]);
    assert_eq!(families["families"], json!(["job"]));

    // Malformed and unsupported input: the right __type, never a 5xx.
    let bridge = write_json(
        dir.path(),
        "bridge.json",
        &json!({
            "family": "web", "networkMode": "bridge",
            "containerDefinitions": [{"name": "a", "image": "x", "memory": 8,
                "portMappings": [{"containerPort": 53, "protocol": "udp"}]}],
        }),
    );
    serve.aws_err(
        &[
            "ecs",
            "register-task-definition",
            "--cli-input-json",
            &bridge,
        ],
        "ClientException",
    );
    let no_memory = write_json(
        dir.path(),
        "nomem.json",
        &json!({
            "family": "web", "networkMode": "none", "containerDefinitions": [{"name": "a", "image": "x"}],
        }),
    );
    let msg = serve.aws_err(
        &[
            "ecs",
            "register-task-definition",
            "--cli-input-json",
            &no_memory,
        ],
        "ClientException",
    );
    assert!(msg.contains("memoryReservation"), "{msg}");
    let privileged = write_json(
        dir.path(),
        "priv.json",
        &json!({
            "family": "web", "networkMode": "none",
            "containerDefinitions": [{"name": "a", "image": "x", "memory": 8, "privileged": true}],
        }),
    );
    let msg = serve.aws_err(
        &[
            "ecs",
            "register-task-definition",
            "--cli-input-json",
            &privileged,
        ],
        "InvalidParameterException",
    );
    assert!(msg.contains("privileged"), "{msg}");
    serve.aws_err(
        &[
            "ecs",
            "describe-task-definition",
            "--task-definition",
            "nope",
        ],
        "ClientException",
    );
    serve.aws_err(
        &[
            "ecs",
            "run-task",
            "--task-definition",
            "job",
            "--count",
            "11",
        ],
        "InvalidParameterException",
    );
    serve.aws_err(
        &[
            "ecs",
            "run-task",
            "--task-definition",
            "job",
            "--launch-type",
            "FARGATE",
        ],
        "InvalidParameterException",
    );
    serve.aws_err(
        &[
            "ecs",
            "run-task",
            "--task-definition",
            "job",
            "--placement-constraints",
            "type=memberOf,expression=attribute:x ==",
        ],
        "InvalidParameterException",
    );
    serve.aws_err(
        &["ecs", "stop-task", "--task", "nope"],
        "InvalidParameterException",
    );
    let d = serve.aws_ok(&["ecs", "describe-tasks", "--tasks", "0123"]);
    assert_eq!(d["failures"][0]["reason"], "MISSING");

    // Placement: a task that cannot fit says why, per instance.
    let huge = write_json(
        dir.path(),
        "huge.json",
        &json!({
            "family": "huge", "networkMode": "none",
            // 10 containers of 10 vCPU (ECS's most each): 100 vCPU.
            "containerDefinitions": (0..10)
                .map(|i| json!({"name": format!("c{i}"), "image": "x", "memory": 8, "cpu": 10_240}))
                .collect::<Vec<_>>(),
        }),
    );
    serve.aws_ok(&["ecs", "register-task-definition", "--cli-input-json", &huge]);
    let run = serve.aws_ok(&["ecs", "run-task", "--task-definition", "huge"]);
    assert_eq!(run["tasks"], json!([]));
    assert_eq!(
        run["failures"],
        json!([{"arn": instance, "reason": "RESOURCE:CPU"}])
    );
    let run = serve.aws_ok(&[
        "ecs",
        "run-task",
        "--task-definition",
        "job",
        "--placement-constraints",
        "type=memberOf,expression=attribute:ecs.instance-type == t2.*",
    ]);
    assert_eq!(
        run["failures"][0]["reason"],
        "MemberOf placement constraint unsatisfied."
    );

    // Attributes feed memberOf.
    serve.aws_ok(&[
        "ecs",
        "put-attributes",
        "--attributes",
        &format!("name=stack,value=prod,targetId={instance}"),
    ]);
    let attrs = serve.aws_ok(&[
        "ecs",
        "list-attributes",
        "--target-type",
        "container-instance",
        "--attribute-name",
        "stack",
    ]);
    assert_eq!(attrs["attributes"][0]["value"], "prod");
    // The agent's own attributes, which placement trusts, are not a
    // client's to change.
    for (op, attr) in [
        ("put-attributes", "name=ecs.os-type,value=linux"),
        ("delete-attributes", "name=ecs.os-type"),
    ] {
        let err = serve.aws_err(
            &[
                "ecs",
                op,
                "--attributes",
                &format!("{attr},targetId={instance}"),
            ],
            "InvalidParameterException",
        );
        assert!(err.contains("agent's own"), "{err}");
    }
    let filtered = serve.aws_ok(&[
        "ecs",
        "list-container-instances",
        "--filter",
        "attribute:stack == prod",
    ]);
    assert_eq!(filtered["containerInstanceArns"], json!([instance]));
    let filtered = serve.aws_ok(&[
        "ecs",
        "list-container-instances",
        "--filter",
        "attribute:stack == test",
    ]);
    assert_eq!(filtered["containerInstanceArns"], json!([]));

    // Tags on a task definition.
    let td_arn = "arn:aws:ecs:eu-west-1:000000000000:task-definition/job:1";
    serve.aws_ok(&[
        "ecs",
        "tag-resource",
        "--resource-arn",
        td_arn,
        "--tags",
        "key=a,value=1",
        "key=b,value=2",
    ]);
    serve.aws_ok(&[
        "ecs",
        "untag-resource",
        "--resource-arn",
        td_arn,
        "--tag-keys",
        "a",
    ]);
    let tags = serve.aws_ok(&["ecs", "list-tags-for-resource", "--resource-arn", td_arn]);
    assert_eq!(tags["tags"], json!([{"key": "b", "value": "2"}]));
}

#[test]
fn stop_task_stops_gracefully_and_state_survives_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = ServeProcess::start(dir.path());
    serve.push(app("SLEEPER_P1"), "sleeper:v1");
    let def = |family: &str, args: &[&str], stop_timeout: u32| {
        json!({
            "family": family, "networkMode": "none",
            "containerDefinitions": [{
                "name": "main", "image": "sleeper:v1", "memory": 32, "command": args,
                "stopTimeout": stop_timeout,
            }],
        })
    };
    let polite = write_json(
        dir.path(),
        "polite.json",
        &def("polite", &["--until-stdin-eof"], 30),
    );
    let stubborn = write_json(dir.path(), "stubborn.json", &def("stubborn", &[], 2));
    serve.aws_ok(&[
        "ecs",
        "register-task-definition",
        "--cli-input-json",
        &polite,
    ]);
    serve.aws_ok(&[
        "ecs",
        "register-task-definition",
        "--cli-input-json",
        &stubborn,
    ]);

    // A guest that exits when its stdin closes stops at once, exit code 0.
    let run = serve.aws_ok(&[
        "ecs",
        "run-task",
        "--task-definition",
        "polite",
        "--client-token",
        "tok-1",
    ]);
    let arn = run["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    // The same client token returns the same task, not a second one.
    let again = serve.aws_ok(&[
        "ecs",
        "run-task",
        "--task-definition",
        "polite",
        "--client-token",
        "tok-1",
    ]);
    assert_eq!(again["tasks"][0]["taskArn"], arn.as_str());
    serve.aws_ok(&["ecs", "wait", "tasks-running", "--tasks", &arn]);
    let stopped = serve.aws_ok(&["ecs", "stop-task", "--task", &arn, "--reason", "enough"]);
    assert_eq!(stopped["task"]["desiredStatus"], "STOPPED");
    serve.aws_ok(&["ecs", "wait", "tasks-stopped", "--tasks", &arn]);
    let t = &serve.aws_ok(&["ecs", "describe-tasks", "--tasks", &arn])["tasks"][0];
    assert_eq!(t["stopCode"], "UserInitiated");
    assert_eq!(t["stoppedReason"], "enough");
    assert_eq!(t["containers"][0]["exitCode"], 0);

    // One that ignores it is killed after its stopTimeout (137).
    let run = serve.aws_ok(&["ecs", "run-task", "--task-definition", "stubborn"]);
    let arn = run["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    serve.aws_ok(&["ecs", "wait", "tasks-running", "--tasks", &arn]);
    serve.aws_ok(&["ecs", "stop-task", "--task", &arn]);
    serve.aws_ok(&["ecs", "wait", "tasks-stopped", "--tasks", &arn]);
    let t = &serve.aws_ok(&["ecs", "describe-tasks", "--tasks", &arn])["tasks"][0];
    assert_eq!(t["containers"][0]["exitCode"], 137);
    let took = t["stoppedAt"].as_f64().unwrap() - t["stoppingAt"].as_f64().unwrap();
    assert!((2.0..10.0).contains(&took), "stopped after {took} s");

    // Killed outright while a task runs: on restart everything is still
    // there, and the task that died with the process is recorded STOPPED.
    let run = serve.aws_ok(&["ecs", "run-task", "--task-definition", "polite"]);
    let lost = run["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    serve.aws_ok(&["ecs", "wait", "tasks-running", "--tasks", &lost]);
    serve.child.kill().unwrap();
    serve.child.wait().unwrap();
    let mut serve = ServeProcess::start(dir.path());
    let t = &serve.aws_ok(&["ecs", "describe-tasks", "--tasks", &lost])["tasks"][0];
    assert_eq!(t["lastStatus"], "STOPPED");
    assert_eq!(t["stopCode"], "TerminationNotice");
    let families = serve.aws_ok(&["ecs", "list-task-definition-families"]);
    assert_eq!(families["families"], json!(["polite", "stubborn"]));
    let instances = serve.aws_ok(&["ecs", "list-container-instances"]);
    assert_eq!(
        instances["containerInstanceArns"].as_array().unwrap().len(),
        1,
        "the instance is re-used, not duplicated"
    );

    // SIGTERM stops running tasks gracefully and records them.
    let run = serve.aws_ok(&["ecs", "run-task", "--task-definition", "polite"]);
    let arn = run["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    serve.aws_ok(&["ecs", "wait", "tasks-running", "--tasks", &arn]);
    assert_eq!(serve.terminate(), 0);
    let serve = ServeProcess::start(dir.path());
    let t = &serve.aws_ok(&["ecs", "describe-tasks", "--tasks", &arn])["tasks"][0];
    assert_eq!(t["lastStatus"], "STOPPED");
    assert_eq!(t["containers"][0]["exitCode"], 0, "{t}");
    assert_eq!(t["stoppedReason"], "skiff serve shut down");
}

#[test]
fn boto3_sees_ecs_error_codes_waiters_and_sigv4() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start_with(
        dir.path(),
        &[
            "--access-key-id",
            "AKIDSKIFF",
            "--secret-access-key",
            "s3cret",
        ],
    );
    serve.push(app("HELLO_P1"), "hello:v1");
    let script = r#"
ecs = boto3.client('ecs', endpoint_url=ENDPOINT, region_name=REGION)
ecs.register_task_definition(family='job', networkMode='none', containerDefinitions=[
    {'name': 'app', 'image': 'hello:v1', 'memory': 64, 'command': ['--exit', '7']}])
task = ecs.run_task(taskDefinition='job')['tasks'][0]['taskArn']
ecs.get_waiter('tasks_stopped').wait(tasks=[task], WaiterConfig={'Delay': 1})
t = ecs.describe_tasks(tasks=[task])['tasks'][0]
print(json.dumps({'exit': t['containers'][0]['exitCode'], 'code': t['stopCode']}))
for call in [lambda: ecs.describe_clusters(clusters=['ghost']),
             lambda: ecs.list_tasks(cluster='ghost'),
             lambda: ecs.run_task(taskDefinition='nope'),
             lambda: ecs.register_task_definition(family='x', networkMode='awsvpc', requiresCompatibilities=['EXTERNAL'], containerDefinitions=[{'name': 'a', 'image': 'i', 'memory': 8}])]:
    try:
        r = call()
        print(json.dumps({'ok': r.get('failures')}))
    except botocore.exceptions.ClientError as e:
        print(json.dumps({'error': e.response['Error']['Code'], 'status': e.response['ResponseMetadata']['HTTPStatusCode']}))
"#;
    let out = serve.boto3(script, "AKIDSKIFF", "s3cret");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[0],
        json!({"exit": 7, "code": "EssentialContainerExited"})
    );
    assert_eq!(
        lines[1],
        json!({"ok": [{"arn": "arn:aws:ecs:eu-west-1:000000000000:cluster/ghost", "reason": "MISSING"}]})
    );
    assert_eq!(
        lines[2],
        json!({"error": "ClusterNotFoundException", "status": 400})
    );
    assert_eq!(lines[3], json!({"error": "ClientException", "status": 400}));
    assert_eq!(
        lines[4],
        json!({"error": "InvalidParameterException", "status": 400})
    );

    let probe = r#"
ecs = boto3.client('ecs', endpoint_url=ENDPOINT, region_name=REGION)
try:
    ecs.list_clusters()
    print('ok')
except botocore.exceptions.ClientError as e:
    print(e.response['Error']['Code'])
"#;
    assert_eq!(
        serve.boto3(probe, "AKIDSKIFF", "wrong").trim(),
        "InvalidSignatureException"
    );
    assert_eq!(
        serve.boto3(probe, "AKIDOTHER", "s3cret").trim(),
        "UnrecognizedClientException"
    );
    assert_eq!(serve.boto3(probe, "AKIDSKIFF", "s3cret").trim(), "ok");
}

#[test]
fn serve_refuses_a_public_address_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::support::skiff([
        "serve",
        "--api-addr",
        "0.0.0.0:0",
        "--registry-addr",
        "127.0.0.1:0",
    ])
    .data_dir(dir.path())
    .run();
    out.assert_one_line_error(1, "without credentials");
    // Its registry beyond loopback needs registry tokens, so credentials.
    let out = crate::support::skiff([
        "serve",
        "--api-addr",
        "127.0.0.1:0",
        "--registry-addr",
        "0.0.0.0:0",
    ])
    .data_dir(dir.path())
    .run();
    out.assert_one_line_error(
        1,
        "refusing to serve the registry on 0.0.0.0:0 without credentials",
    );
}

#[test]
fn one_serve_per_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let _first = ServeProcess::start(dir.path());
    let second = crate::support::skiff([
        "serve",
        "--api-addr",
        "127.0.0.1:0",
        "--registry-addr",
        "127.0.0.1:0",
    ])
    .data_dir(dir.path())
    .run();
    assert_ne!(second.code, 0, "a second serve started: {}", second.stderr);
    assert!(
        second.stderr.contains("another skiff serve"),
        "{}",
        second.stderr
    );
}

/// Polls DescribeTasks until `done` holds for the task (at most 60 s).
fn describe_until(serve: &ServeProcess, arn: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let t = serve.aws_ok(&["ecs", "describe-tasks", "--tasks", arn])["tasks"][0].clone();
        if done(&t) {
            return t;
        }
        assert!(std::time::Instant::now() < deadline, "gave up waiting: {t}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn containers_start_in_dependency_order_share_volumes_and_are_health_checked() {
    let dir = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(app("FS_TOOL_P1"), "fs-tool:v1");
    serve.push(app("SLEEPER_P1"), "sleeper:v1");
    let logs = |prefix: &str| {
        json!({"logDriver": "awslogs", "options": {
        "awslogs-group": "/ecs/deps", "awslogs-stream-prefix": prefix, "awslogs-create-group": "true"}})
    };
    let td = write_json(
        dir.path(),
        "deps.json",
        &json!({
            "family": "deps", "networkMode": "none",
            "volumes": [{"name": "scratch"}, {"name": "out", "host": {"sourcePath": host.path()}}],
            "containerDefinitions": [
                {"name": "writer", "image": "fs-tool:v1", "memory": 32, "essential": false,
                 "command": ["write", "/scratch/note", "written-by-writer"],
                 "mountPoints": [{"sourceVolume": "scratch", "containerPath": "/scratch"}]},
                {"name": "reader", "image": "fs-tool:v1", "memory": 32, "essential": false,
                 "command": ["cat", "/scratch/note"], "volumesFrom": [{"sourceContainer": "writer", "readOnly": true}],
                 "dependsOn": [{"containerName": "writer", "condition": "SUCCESS"}], "logConfiguration": logs("r")},
                {"name": "main", "image": "sleeper:v1", "memory": 32, "command": ["--until-stdin-eof"],
                 "dependsOn": [{"containerName": "reader", "condition": "COMPLETE"}],
                 "healthCheck": {"command": ["CMD", "sleeper", "--until-stdin-eof"], "interval": 5, "timeout": 2, "retries": 1}},
                {"name": "sidecar", "image": "fs-tool:v1", "memory": 32, "essential": false,
                 "command": ["write", "/out/sidecar", "after-healthy"],
                 "mountPoints": [{"sourceVolume": "out", "containerPath": "/out"}],
                 "dependsOn": [{"containerName": "main", "condition": "HEALTHY"}]},
            ],
        }),
    );
    serve.aws_ok(&["ecs", "register-task-definition", "--cli-input-json", &td]);
    let run = serve.aws_ok(&["ecs", "run-task", "--task-definition", "deps"]);
    let arn = run["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    // The sidecar runs only once main's health check has passed.
    let t = describe_until(&serve, &arn, |t| {
        t["containers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "sidecar" && c["exitCode"] == 0)
    });
    assert_eq!(t["lastStatus"], "RUNNING");
    assert_eq!(t["healthStatus"], "HEALTHY");
    let c = |name: &str| {
        t["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(c("writer")["exitCode"], 0);
    assert_eq!(c("reader")["exitCode"], 0);
    assert_eq!(c("main")["healthStatus"], "HEALTHY");
    assert_eq!(c("main")["lastStatus"], "RUNNING");
    assert_eq!(
        std::fs::read_to_string(host.path().join("sidecar")).unwrap(),
        "after-healthy"
    );
    // The reader saw what the writer wrote, through volumesFrom.
    let stream = format!("r/reader/{}", task_id(&arn));
    let out = serve.aws_ok(&[
        "logs",
        "get-log-events",
        "--log-group-name",
        "/ecs/deps",
        "--log-stream-name",
        &stream,
    ]);
    assert_eq!(out["events"][0]["message"], "written-by-writer");

    // The agent keeps the task's scratch volumes under its data dir.
    let scratch = dir.path().join("agent/tasks").join(task_id(&arn));
    assert!(scratch.exists(), "{}", scratch.display());
    serve.aws_ok(&["ecs", "stop-task", "--task", &arn]);
    serve.aws_ok(&["ecs", "wait", "tasks-stopped", "--tasks", &arn]);
    let t = &serve.aws_ok(&["ecs", "describe-tasks", "--tasks", &arn])["tasks"][0];
    assert_eq!(t["stopCode"], "UserInitiated");
    // The task's scratch volume is gone with it; the host volume stays.
    assert!(!scratch.exists());
    assert!(host.path().join("sidecar").exists());
}

#[test]
fn a_failing_health_check_marks_the_task_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(app("SLEEPER_P1"), "sleeper:v1");
    // Without --until-stdin-eof the probe sleeps past its timeout.
    let td = write_json(
        dir.path(),
        "sick.json",
        &json!({
            "family": "sick", "networkMode": "none",
            "containerDefinitions": [{"name": "main", "image": "sleeper:v1", "memory": 32,
                "command": ["--until-stdin-eof"],
                "healthCheck": {"command": ["CMD", "sleeper"], "interval": 5, "timeout": 2, "retries": 1}}],
        }),
    );
    serve.aws_ok(&["ecs", "register-task-definition", "--cli-input-json", &td]);
    let run = serve.aws_ok(&["ecs", "run-task", "--task-definition", "sick"]);
    let arn = run["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    assert_eq!(run["tasks"][0]["healthStatus"], "UNKNOWN");
    let t = describe_until(&serve, &arn, |t| t["healthStatus"] == "UNHEALTHY");
    assert_eq!(t["containers"][0]["healthStatus"], "UNHEALTHY");
    assert_eq!(t["lastStatus"], "RUNNING");
}

/// A web container's health check as ECS definitions write it, a `curl`
/// of itself (also as `CMD-SHELL`): skiff sends that request to the
/// container. `-f` fails on an error status; without it any answer
/// passes. A wasi:http component runs no commands, so any other check of
/// one stops its task saying how to write it.
#[test]
fn a_web_containers_curl_health_check_is_a_request_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(app("HTTP_HELLO_P2"), "web:v1");
    let web = |name: &str, port: u16, essential: bool, command: Value| {
        json!({"name": name, "image": "web:v1", "memory": 32, "essential": essential,
            "portMappings": [{"containerPort": port}],
            "healthCheck": {"command": command, "interval": 5, "timeout": 2, "retries": 1}})
    };
    let td = write_json(
        dir.path(),
        "web.json",
        &json!({
            "family": "web", "networkMode": "awsvpc",
            "containerDefinitions": [
                web("ok", 8080, true, json!(["CMD-SHELL", "curl -fsS http://localhost:8080/ || exit 1"])),
                // /trap answers 500.
                web("sick", 8081, false, json!(["CMD", "curl", "-f", "http://localhost:8081/trap"])),
                web("lenient", 8082, false, json!(["CMD", "wget", "-q", "--spider", "http://127.0.0.1:8082/"])),
            ],
        }),
    );
    serve.aws_ok(&["ecs", "register-task-definition", "--cli-input-json", &td]);
    let net = "awsvpcConfiguration={subnets=[subnet-0a1b2c]}";
    let run = serve.aws_ok(&[
        "ecs",
        "run-task",
        "--task-definition",
        "web",
        "--network-configuration",
        net,
    ]);
    let arn = run["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    let t = describe_until(&serve, &arn, |t| {
        t["containers"]
            .as_array()
            .is_some_and(|cs| cs.iter().all(|c| c["healthStatus"] != "UNKNOWN"))
    });
    let health = |name: &str| {
        t["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["healthStatus"].clone())
            .unwrap()
    };
    assert_eq!(health("ok"), "HEALTHY", "{t}");
    assert_eq!(health("sick"), "UNHEALTHY", "{t}");
    assert_eq!(health("lenient"), "HEALTHY", "{t}");
    // Only essential containers count toward the task's health.
    assert_eq!(t["healthStatus"], "HEALTHY", "{t}");
    // The cluster's statistics count it, by launch type.
    let d = serve.aws_ok(&["ecs", "describe-clusters", "--include", "STATISTICS"]);
    let stats = &d["clusters"][0]["statistics"];
    let stat = |name: &str| {
        stats
            .as_array()
            .and_then(|s| s.iter().find(|e| e["name"] == name))
            .map(|e| e["value"].clone())
            .unwrap_or_else(|| panic!("no {name}: {stats}"))
    };
    assert_eq!(stat("runningEC2TasksCount"), "1", "{stats}");
    assert_eq!(stat("runningFargateTasksCount"), "0", "{stats}");
    assert_eq!(stat("activeEC2ServiceCount"), "0", "{stats}");

    // What a probe could not honour is refused when registered.
    let bad = json!({"family": "bad", "networkMode": "awsvpc", "containerDefinitions": [
        web("w", 8080, true, json!(["CMD", "curl", "-fL", "http://localhost:8080/"]))]});
    let td = write_json(dir.path(), "bad.json", &bad);
    let e = serve.aws_err(
        &["ecs", "register-task-definition", "--cli-input-json", &td],
        "InvalidParameterException",
    );
    assert!(e.contains("curl -L is not supported"), "{e}");

    // A command check of a wasi:http component cannot run.
    let td = write_json(
        dir.path(),
        "cmd.json",
        &json!({"family": "cmd", "networkMode": "awsvpc", "containerDefinitions": [
            web("w", 8080, true, json!(["CMD", "http_hello"]))]}),
    );
    serve.aws_ok(&["ecs", "register-task-definition", "--cli-input-json", &td]);
    let run = serve.aws_ok(&[
        "ecs",
        "run-task",
        "--task-definition",
        "cmd",
        "--network-configuration",
        net,
    ]);
    let arn = run["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    let t = describe_until(&serve, &arn, |t| t["lastStatus"] == "STOPPED");
    let reason = t["stoppedReason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("CannotStartContainerError")
            && reason.contains("runs no commands")
            && reason.contains(r#"["CMD", "curl", "-f", "http://localhost:8080/"]"#),
        "{t}"
    );
}

#[test]
fn instances_registered_through_the_api_are_listed_but_have_no_agent() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    let doc = r#"{"instanceId": "i-0123456789abcdef0", "region": "eu-west-1"}"#;
    let registered = serve.aws_ok(&[
        "ecs",
        "register-container-instance",
        "--instance-identity-document",
        doc,
        "--total-resources",
        "name=CPU,type=INTEGER,integerValue=2048",
        "name=MEMORY,type=INTEGER,integerValue=4096",
        "--attributes",
        "name=stack,value=edge",
    ]);
    let ci = &registered["containerInstance"];
    assert_eq!(ci["ec2InstanceId"], "i-0123456789abcdef0");
    assert_eq!(ci["agentConnected"], false);
    assert_eq!(ci["status"], "ACTIVE");
    let arn = ci["containerInstanceArn"].as_str().unwrap().to_string();
    assert!(arn.starts_with("arn:aws:ecs:eu-west-1:000000000000:container-instance/default/"));
    // Registering the same EC2 instance again updates it.
    let again = serve.aws_ok(&[
        "ecs",
        "register-container-instance",
        "--instance-identity-document",
        doc,
        "--total-resources",
        "name=CPU,type=INTEGER,integerValue=4096",
    ]);
    assert_eq!(
        again["containerInstance"]["containerInstanceArn"],
        arn.as_str()
    );
    // And by its ARN, with the agent's version.
    let by_arn = serve.aws_ok(&[
        "ecs",
        "register-container-instance",
        "--container-instance-arn",
        &arn,
        "--version-info",
        "agentVersion=1.80.0,agentHash=abc,dockerVersion=none",
        "--total-resources",
        "name=CPU,type=INTEGER,integerValue=4096",
    ]);
    assert_eq!(
        by_arn["containerInstance"]["containerInstanceArn"],
        arn.as_str()
    );
    assert_eq!(
        by_arn["containerInstance"]["versionInfo"]["agentVersion"],
        "1.80.0"
    );
    serve.aws_err(
        &[
            "ecs",
            "register-container-instance",
            "--container-instance-arn",
            "nope",
        ],
        "InvalidParameterException",
    );
    let listed = serve.aws_ok(&["ecs", "list-container-instances"]);
    assert_eq!(listed["containerInstanceArns"].as_array().unwrap().len(), 2);
    let edge = serve.aws_ok(&[
        "ecs",
        "list-container-instances",
        "--filter",
        "attribute:stack == edge",
    ]);
    assert_eq!(edge["containerInstanceArns"], json!([arn]));

    // Placement passes it over: no agent serves it.
    serve.push(app("HELLO_P1"), "hello:v1");
    let td = write_json(dir.path(), "job.json", &hello_job("job", 0));
    serve.aws_ok(&["ecs", "register-task-definition", "--cli-input-json", &td]);
    let run = serve.aws_ok(&[
        "ecs",
        "run-task",
        "--task-definition",
        "job",
        "--placement-constraints",
        "type=memberOf,expression=attribute:stack == edge",
    ]);
    assert_eq!(run["tasks"], json!([]));
    let failures = run["failures"].as_array().unwrap();
    assert!(
        failures
            .iter()
            .any(|f| f["arn"] == arn.as_str() && f["reason"] == "AGENT"),
        "{failures:?}"
    );

    // A cluster with an instance cannot be deleted until it deregisters.
    serve.aws_ok(&["ecs", "create-cluster", "--cluster-name", "edge"]);
    let other = serve.aws_ok(&[
        "ecs",
        "register-container-instance",
        "--cluster",
        "edge",
        "--total-resources",
        "name=CPU,type=INTEGER,integerValue=1024",
    ]);
    let other_arn = other["containerInstance"]["containerInstanceArn"]
        .as_str()
        .unwrap()
        .to_string();
    serve.aws_err(
        &["ecs", "delete-cluster", "--cluster", "edge"],
        "ClusterContainsContainerInstancesException",
    );
    // An instance belongs to one cluster at a time.
    serve.aws_err(
        &[
            "ecs",
            "register-container-instance",
            "--cluster",
            "edge",
            "--instance-identity-document",
            doc,
        ],
        "InvalidParameterException",
    );
    let gone = serve.aws_ok(&[
        "ecs",
        "deregister-container-instance",
        "--cluster",
        "edge",
        "--container-instance",
        &other_arn,
    ]);
    assert_eq!(gone["containerInstance"]["status"], "INACTIVE");
    serve.aws_ok(&["ecs", "delete-cluster", "--cluster", "edge"]);

    // Mistakes: skiff serve's own instance stays; bad resources and
    // documents are refused.
    let local = listed["containerInstanceArns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .find(|a| *a != arn)
        .unwrap()
        .to_string();
    serve.aws_err(
        &[
            "ecs",
            "deregister-container-instance",
            "--container-instance",
            &local,
        ],
        "InvalidParameterException",
    );
    serve.aws_err(
        &[
            "ecs",
            "register-container-instance",
            "--instance-identity-document",
            "not json",
        ],
        "InvalidParameterException",
    );
    serve.aws_err(
        &[
            "ecs",
            "register-container-instance",
            "--total-resources",
            "name=PORTS,type=STRINGSET,stringSetValue=http",
        ],
        "InvalidParameterException",
    );
}

#[test]
fn task_definitions_are_deleted_once_inactive() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    let td = write_json(dir.path(), "job.json", &hello_job("gone", 0));
    for _ in 0..2 {
        serve.aws_ok(&["ecs", "register-task-definition", "--cli-input-json", &td]);
    }
    // An ACTIVE revision is refused, one failure each; nothing changes.
    let refused = serve.aws_ok(&[
        "ecs",
        "delete-task-definitions",
        "--task-definitions",
        "gone:1",
        "gone:9",
    ]);
    assert_eq!(refused["taskDefinitions"], json!([]));
    let reasons: Vec<&str> = refused["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["reason"].as_str().unwrap())
        .collect();
    assert!(reasons[0].contains("still in ACTIVE status"), "{reasons:?}");
    assert_eq!(reasons[1], "MISSING");

    serve.aws_ok(&[
        "ecs",
        "deregister-task-definition",
        "--task-definition",
        "gone:1",
    ]);
    let deleted = serve.aws_ok(&[
        "ecs",
        "delete-task-definitions",
        "--task-definitions",
        "gone:1",
    ]);
    let td = &deleted["taskDefinitions"][0];
    assert_eq!(td["status"], "DELETE_IN_PROGRESS");
    assert!(td["deleteRequestedAt"].as_f64().is_some());
    let listed = serve.aws_ok(&[
        "ecs",
        "list-task-definitions",
        "--status",
        "DELETE_IN_PROGRESS",
    ]);
    assert_eq!(
        listed["taskDefinitionArns"],
        json!([td["taskDefinitionArn"]])
    );
    // Still describable while its deletion is in progress; the family's
    // latest ACTIVE revision is untouched.
    let described = serve.aws_ok(&[
        "ecs",
        "describe-task-definition",
        "--task-definition",
        "gone:1",
    ]);
    assert_eq!(described["taskDefinition"]["status"], "DELETE_IN_PROGRESS");
    let latest = serve.aws_ok(&[
        "ecs",
        "describe-task-definition",
        "--task-definition",
        "gone",
    ]);
    assert_eq!(latest["taskDefinition"]["revision"], 2);
}
