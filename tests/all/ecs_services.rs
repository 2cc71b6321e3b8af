//! ECS services on `skiff serve`, driven by the AWS CLI and boto3: the
//! service scheduler keeps tasks running, replaces them, rolls out new
//! task definitions, and survives being killed mid-deployment.

use crate::support::ServeProcess;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};
use wasm_apps::app;

fn write_json(dir: &Path, name: &str, v: &Value) -> String {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    format!("file://{}", p.display())
}

/// A long-running web-ish task: `sleeper` until its stdin closes (so a
/// stop is graceful and quick). `version` lands in its environment.
fn web(version: &str) -> Value {
    json!({
        "family": "web",
        "networkMode": "none",
        "containerDefinitions": [{
            "name": "main", "image": "sleeper:v1", "memory": 16,
            "command": ["--until-stdin-eof"],
            "environment": [{"name": "VERSION", "value": version}],
        }],
    })
}

/// Polls DescribeServices until `done` holds for the service (at most 90 s).
fn service_until(
    serve: &ServeProcess,
    cluster: &str,
    name: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s = serve.aws_ok(&[
            "ecs",
            "describe-services",
            "--cluster",
            cluster,
            "--services",
            name,
        ])["services"][0]
            .clone();
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {s:#}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// What `aws ecs wait services-stable` checks.
fn stable(s: &Value) -> bool {
    s["deployments"].as_array().map(Vec::len) == Some(1) && s["runningCount"] == s["desiredCount"]
}

/// The service's tasks that are wanted (desired RUNNING), described.
fn service_tasks(serve: &ServeProcess, name: &str) -> Vec<Value> {
    let arns = serve.aws_ok(&["ecs", "list-tasks", "--service-name", name]);
    let arns: Vec<&str> = arns["taskArns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    if arns.is_empty() {
        return Vec::new();
    }
    let mut args = vec!["ecs", "describe-tasks", "--tasks"];
    args.extend(arns);
    serve.aws_ok(&args)["tasks"].as_array().unwrap().clone()
}

fn messages(s: &Value) -> Vec<String> {
    s["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_aws_cli_runs_a_service_replaces_rolls_out_scales_and_deletes_it() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(app("SLEEPER_P1"), "sleeper:v1");
    for (file, version) in [("web1.json", "1"), ("web2.json", "2")] {
        let td = write_json(dir.path(), file, &web(version));
        serve.aws_ok(&["ecs", "register-task-definition", "--cli-input-json", &td]);
    }

    let created = serve.aws_ok(&[
        "ecs",
        "create-service",
        "--service-name",
        "web",
        "--task-definition",
        "web:1",
        "--desired-count",
        "3",
        "--tags",
        "key=team,value=edge",
    ]);
    let s = &created["service"];
    assert_eq!(
        s["serviceArn"],
        "arn:aws:ecs:eu-west-1:000000000000:service/default/web"
    );
    assert_eq!(s["status"], "ACTIVE");
    assert_eq!(s["schedulingStrategy"], "REPLICA");
    assert_eq!(
        s["deploymentConfiguration"],
        json!({"deploymentCircuitBreaker": {"enable": false, "rollback": false},
               "maximumPercent": 200, "minimumHealthyPercent": 100})
    );
    assert_eq!(s["deployments"][0]["status"], "PRIMARY");
    assert_eq!(s["deployments"][0]["rolloutState"], "IN_PROGRESS");
    assert!(
        s["deployments"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("ecs-svc/")
    );

    serve.aws_ok(&["ecs", "wait", "services-stable", "--services", "web"]);
    let s = &serve.aws_ok(&[
        "ecs",
        "describe-services",
        "--services",
        "web",
        "--include",
        "TAGS",
    ])["services"][0];
    assert_eq!(
        (s["runningCount"].as_u64(), s["pendingCount"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(s["deployments"][0]["rolloutState"], "COMPLETED");
    assert_eq!(s["tags"], json!([{"key": "team", "value": "edge"}]));
    let said = messages(s);
    assert_eq!(
        said[0], "(service web) has reached a steady state.",
        "{said:?}"
    );
    assert!(
        said.iter()
            .any(|m| m.starts_with("(service web) has started 3 tasks: (task "))
    );
    let tasks = service_tasks(&serve, "web");
    assert_eq!(tasks.len(), 3);
    for t in &tasks {
        assert_eq!(t["group"], "service:web");
        assert_eq!(t["startedBy"], s["deployments"][0]["id"]);
        assert_eq!(t["lastStatus"], "RUNNING");
    }
    let clusters = serve.aws_ok(&["ecs", "describe-clusters"]);
    assert_eq!(clusters["clusters"][0]["activeServicesCount"], 1);
    assert_eq!(
        serve.aws_ok(&["ecs", "list-services"])["serviceArns"],
        json!([s["serviceArn"]])
    );

    // A task stopped by hand is replaced.
    let victim = tasks[0]["taskArn"].as_str().unwrap().to_string();
    serve.aws_ok(&["ecs", "stop-task", "--task", &victim]);
    serve.aws_ok(&["ecs", "wait", "tasks-stopped", "--tasks", &victim]);
    service_until(&serve, "default", "web", |s| {
        stable(s) && s["pendingCount"] == 0
    });
    let now: Vec<Value> = service_tasks(&serve, "web");
    assert_eq!(now.len(), 3);
    assert!(!now.iter().any(|t| t["taskArn"] == victim.as_str()));

    // A new revision rolls out; the old tasks go once the new ones run.
    let old: HashSet<String> = now
        .iter()
        .map(|t| t["taskArn"].as_str().unwrap().to_string())
        .collect();
    let updated = serve.aws_ok(&[
        "ecs",
        "update-service",
        "--service",
        "web",
        "--task-definition",
        "web:2",
    ]);
    let deployments = updated["service"]["deployments"].as_array().unwrap();
    assert_eq!(deployments.len(), 2);
    assert_eq!(deployments[0]["status"], "PRIMARY");
    assert_eq!(deployments[1]["status"], "ACTIVE");
    let s = service_until(&serve, "default", "web", |s| {
        stable(s) && s["deployments"][0]["rolloutState"] == "COMPLETED"
    });
    assert!(
        s["taskDefinition"]
            .as_str()
            .unwrap()
            .ends_with("task-definition/web:2")
    );
    assert!(
        messages(&s)
            .iter()
            .any(|m| m.contains("deployment completed."))
    );
    let rolled = service_tasks(&serve, "web");
    assert_eq!(rolled.len(), 3);
    for t in &rolled {
        assert!(t["taskDefinitionArn"].as_str().unwrap().ends_with("web:2"));
        assert!(!old.contains(t["taskArn"].as_str().unwrap()));
    }
    let mut args = vec!["ecs", "describe-tasks", "--tasks"];
    args.extend(old.iter().map(String::as_str));
    for t in serve.aws_ok(&args)["tasks"].as_array().unwrap() {
        assert_eq!(t["desiredStatus"], "STOPPED");
        assert_eq!(t["stopCode"], "ServiceSchedulerInitiated");
    }

    // Scale down.
    serve.aws_ok(&[
        "ecs",
        "update-service",
        "--service",
        "web",
        "--desired-count",
        "1",
    ]);
    let s = service_until(&serve, "default", "web", |s| {
        stable(s) && s["desiredCount"] == 1
    });
    assert_eq!(s["runningCount"], 1);
    assert_eq!(service_tasks(&serve, "web").len(), 1);

    // Mistakes.
    serve.aws_err(
        &["ecs", "delete-service", "--service", "web"],
        "InvalidParameterException",
    );
    serve.aws_err(
        &[
            "ecs",
            "update-service",
            "--service",
            "nope",
            "--desired-count",
            "1",
        ],
        "ServiceNotFoundException",
    );
    serve.aws_err(
        &[
            "ecs",
            "create-service",
            "--service-name",
            "web",
            "--task-definition",
            "web:1",
            "--desired-count",
            "1",
        ],
        "InvalidParameterException",
    );
    serve.aws_err(
        &["ecs", "create-service", "--service-name", "lb", "--task-definition", "web:1", "--desired-count", "1",
          "--load-balancers", "targetGroupArn=arn:aws:elasticloadbalancing:eu-west-1:000000000000:targetgroup/t/1,containerName=main,containerPort=80"],
        "InvalidParameterException",
    );
    serve.aws_err(
        &[
            "ecs",
            "create-service",
            "--service-name",
            "x",
            "--task-definition",
            "web:1",
            "--desired-count",
            "1",
            "--deployment-configuration",
            "maximumPercent=100,minimumHealthyPercent=100",
        ],
        "InvalidParameterException",
    );
    let missing = serve.aws_ok(&["ecs", "describe-services", "--services", "ghost"]);
    assert_eq!(missing["failures"][0]["reason"], "MISSING");
    assert_eq!(
        missing["failures"][0]["arn"],
        "arn:aws:ecs:eu-west-1:000000000000:service/default/ghost"
    );

    // Delete: DRAINING, its task stops, then INACTIVE and still describable.
    let deleted = serve.aws_ok(&["ecs", "delete-service", "--service", "web", "--force"]);
    assert_eq!(deleted["service"]["status"], "DRAINING");
    let s = service_until(&serve, "default", "web", |s| s["status"] == "INACTIVE");
    assert_eq!(s["runningCount"], 0);
    assert!(service_tasks(&serve, "web").is_empty());
    assert_eq!(
        serve.aws_ok(&["ecs", "list-services"])["serviceArns"],
        json!([])
    );
    serve.aws_err(
        &[
            "ecs",
            "update-service",
            "--service",
            "web",
            "--desired-count",
            "1",
        ],
        "ServiceNotActiveException",
    );

    // A cluster with a service cannot be deleted; without it, it can.
    serve.aws_ok(&["ecs", "create-cluster", "--cluster-name", "empty"]);
    serve.aws_ok(&[
        "ecs",
        "create-service",
        "--cluster",
        "empty",
        "--service-name",
        "idle",
        "--task-definition",
        "web:2",
        "--desired-count",
        "0",
    ]);
    serve.aws_err(
        &["ecs", "delete-cluster", "--cluster", "empty"],
        "ClusterContainsServicesException",
    );
    serve.aws_ok(&[
        "ecs",
        "delete-service",
        "--cluster",
        "empty",
        "--service",
        "idle",
    ]);
    service_until(&serve, "empty", "idle", |s| s["status"] == "INACTIVE");
    serve.aws_ok(&["ecs", "delete-cluster", "--cluster", "empty"]);
}

#[test]
fn killed_mid_deployment_the_service_converges_with_nothing_lost_or_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(app("SLEEPER_P1"), "sleeper:v1");
    let td = write_json(dir.path(), "web1.json", &web("1"));
    serve.aws_ok(&["ecs", "register-task-definition", "--cli-input-json", &td]);
    // Revision 2 takes a while to start (a 2 s init container), so the
    // kill lands while its tasks are still pending.
    let mut slow = web("2");
    slow["containerDefinitions"][0]["dependsOn"] =
        json!([{"containerName": "init", "condition": "SUCCESS"}]);
    slow["containerDefinitions"]
        .as_array_mut()
        .unwrap()
        .push(json!({
            "name": "init", "image": "sleeper:v1", "memory": 8, "essential": false,
            "command": ["--for", "2"],
        }));
    let td = write_json(dir.path(), "web2.json", &slow);
    serve.aws_ok(&["ecs", "register-task-definition", "--cli-input-json", &td]);
    serve.aws_ok(&[
        "ecs",
        "create-service",
        "--service-name",
        "web",
        "--task-definition",
        "web:1",
        "--desired-count",
        "4",
        "--deployment-configuration",
        "maximumPercent=150,minimumHealthyPercent=50",
    ]);
    service_until(&serve, "default", "web", stable);
    serve.aws_ok(&[
        "ecs",
        "update-service",
        "--service",
        "web",
        "--task-definition",
        "web:2",
    ]);
    // Mid-deployment: some new tasks exist, old ones remain. (Watched
    // with one boto3 client, which polls in milliseconds: the AWS CLI's
    // second per call can miss the window on a loaded machine.)
    let seen = serve.boto3(
        r#"
import time
ecs = boto3.client('ecs', endpoint_url=ENDPOINT, region_name=REGION)
deadline = time.time() + 90
while time.time() < deadline:
    d = ecs.describe_services(services=['web'])['services'][0]['deployments']
    if len(d) == 2 and d[0]['pendingCount'] > 0:
        print('mid-deployment')
        break
    time.sleep(0.01)
"#,
        "AKIDSKIFFTEST",
        "secret",
    );
    assert_eq!(
        seen.trim(),
        "mid-deployment",
        "the deployment was never seen in progress"
    );
    let mut serve = serve;
    serve.child.kill().unwrap();
    serve.child.wait().unwrap();
    drop(serve);

    let serve = ServeProcess::start(dir.path());
    let s = service_until(&serve, "default", "web", |s| {
        stable(s) && s["deployments"][0]["rolloutState"] == "COMPLETED"
    });
    assert_eq!(s["runningCount"], 4);
    assert!(s["taskDefinition"].as_str().unwrap().ends_with("web:2"));
    let tasks = service_tasks(&serve, "web");
    assert_eq!(tasks.len(), 4, "exactly the desired count, none twice");
    for t in &tasks {
        assert_eq!(t["lastStatus"], "RUNNING");
        assert!(t["taskDefinitionArn"].as_str().unwrap().ends_with("web:2"));
        assert_eq!(t["startedBy"], s["deployments"][0]["id"]);
    }
    // Every task the old process ran is recorded STOPPED; none is left
    // RUNNING without an agent.
    let all = serve.aws_ok(&["ecs", "list-tasks", "--desired-status", "STOPPED"]);
    let stopped: Vec<&str> = all["taskArns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(!stopped.is_empty());
    let mut args = vec!["ecs", "describe-tasks", "--tasks"];
    args.extend(stopped.iter().take(100));
    for t in serve.aws_ok(&args)["tasks"].as_array().unwrap() {
        assert_eq!(t["lastStatus"], "STOPPED", "{t}");
    }
}

#[test]
fn boto3_sees_the_circuit_breaker_roll_back_and_a_daemon_follow_draining() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(app("SLEEPER_P1"), "sleeper:v1");
    let out = serve.boto3(
        r#"
ecs = boto3.client('ecs', endpoint_url=ENDPOINT, region_name=REGION)
def td(image):
    return ecs.register_task_definition(family='api', networkMode='none', containerDefinitions=[
        {'name': 'main', 'image': image, 'memory': 16, 'command': ['--until-stdin-eof']}])
td('sleeper:v1')
td('missing:v1')
ecs.create_service(serviceName='api', taskDefinition='api:1', desiredCount=2,
    deploymentConfiguration={'deploymentCircuitBreaker': {'enable': True, 'rollback': True}})
fast = {'Delay': 1, 'MaxAttempts': 90}
ecs.get_waiter('services_stable').wait(services=['api'], WaiterConfig=fast)
first = ecs.describe_services(services=['api'])['services'][0]['deployments'][0]['id']

# A revision whose image does not exist: its tasks fail to start, the
# breaker trips after 3 and the service goes back to api:1.
ecs.update_service(service='api', taskDefinition='api:2')
ecs.get_waiter('services_stable').wait(services=['api'], WaiterConfig=fast)
import time
for _ in range(60):
    s = ecs.describe_services(services=['api'])['services'][0]
    if s['deployments'][0]['rolloutState'] == 'COMPLETED':
        break
    time.sleep(0.5)
print(json.dumps({
    'taskDefinition': s['taskDefinition'],
    'deployment': s['deployments'][0]['taskDefinition'],
    'reason': s['deployments'][0]['rolloutStateReason'],
    'events': [e['message'] for e in s['events']],
    'first': first,
    'running': s['runningCount'],
}))

# A DAEMON service: one task on the (single) instance; draining the
# instance stops it, activating it brings it back.
ecs.create_service(serviceName='agent', taskDefinition='api:1', schedulingStrategy='DAEMON')
ecs.get_waiter('services_stable').wait(services=['agent'], WaiterConfig=fast)
d = ecs.describe_services(services=['agent'])['services'][0]
inst = ecs.list_container_instances()['containerInstanceArns'][0]
ecs.update_container_instances_state(containerInstances=[inst], status='DRAINING')
for _ in range(60):
    if ecs.describe_services(services=['agent'])['services'][0]['runningCount'] == 0:
        break
    time.sleep(0.5)
drained = ecs.describe_services(services=['agent'])['services'][0]
ecs.update_container_instances_state(containerInstances=[inst], status='ACTIVE')
ecs.get_waiter('services_stable').wait(services=['agent'], WaiterConfig=fast)
back = ecs.describe_services(services=['agent'])['services'][0]
errors = []
for call in [lambda: ecs.create_service(serviceName='d2', taskDefinition='api:1', schedulingStrategy='DAEMON', desiredCount=2),
             lambda: ecs.update_service(service='agent', desiredCount=3),
             lambda: ecs.delete_service(service='api'),
             lambda: ecs.create_service(serviceName='bad name', taskDefinition='api:1', desiredCount=1)]:
    try:
        call()
        errors.append('none')
    except botocore.exceptions.ClientError as e:
        errors.append(e.response['Error']['Code'])
print(json.dumps({'daemon': [d['desiredCount'], d['runningCount']],
                  'drained': [drained['desiredCount'], drained['runningCount']],
                  'back': [back['desiredCount'], back['runningCount']],
                  'errors': errors}))
"#,
        "AKIDSKIFFTEST",
        "secret",
    );
    let mut lines = out.lines();
    let breaker: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert!(
        breaker["taskDefinition"]
            .as_str()
            .unwrap()
            .ends_with("api:1"),
        "{breaker:#}"
    );
    assert!(breaker["deployment"].as_str().unwrap().ends_with("api:1"));
    assert_eq!(breaker["running"], 2);
    let reason = breaker["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("ECS deployment ecs-svc/") && reason.ends_with(" completed."),
        "{reason}"
    );
    let events: Vec<&str> = breaker["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e.ends_with("deployment failed: tasks failed to start.")),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e
        == &format!(
            "(service api) rolling back to deployment {}.",
            breaker["first"].as_str().unwrap()
        )));
    let daemon: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(daemon["daemon"], json!([1, 1]));
    assert_eq!(daemon["drained"], json!([0, 0]));
    assert_eq!(daemon["back"], json!([1, 1]));
    assert_eq!(
        daemon["errors"],
        json!([
            "InvalidParameterException",
            "InvalidParameterException",
            "InvalidParameterException",
            "InvalidParameterException"
        ])
    );
}
