//! A bounded soak: thousands of tasks through the API while `skiff serve`
//! is killed with SIGKILL at random moments and started again. Whatever it
//! acknowledged survives, no task starts twice, a service comes back to
//! its desired count, and with 2,000 tasks running the API still answers
//! at once.

use crate::support::{ServeProcess, python_client, python_json};
use std::collections::HashMap;
use wasm_apps::app;

/// The flags every start of the soak's `skiff serve` gets: room for 2,000
/// running tasks.
const ROOMY: &[&str] = &[
    "--cpu",
    "100000",
    "--memory",
    "100000",
    "--max-instances",
    "3000",
];

/// A small deterministic generator: the kill points of a run, printed so a
/// failure can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn tasks_services_and_writes_survive_random_kills() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut rng = Lcg(seed);
    eprintln!("soak seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let marks = host.path().join("marks");
    std::fs::write(&marks, "").unwrap();

    // What the API acknowledged: each call's task ARNs, and the clusters
    // it created.
    let mut calls: Vec<(String, Vec<String>)> = Vec::new();
    let mut clusters: Vec<String> = Vec::new();
    for round in 0..5 {
        let mut serve = ServeProcess::start_with(dir.path(), ROOMY);
        if round == 0 {
            serve.push(app("FS_TOOL_P1"), "fs-tool:v1");
            serve.push(app("SLEEPER_P1"), "sleeper:v1");
        }
        let kill_after = 20 + rng.below(100);
        let program = format!(
            r#"
import boto3, json
ecs = boto3.client('ecs', endpoint_url='http://{api}', region_name='eu-west-1',
    aws_access_key_id='AKIDSKIFFTEST', aws_secret_access_key='secret')
if {round} == 0:
    ecs.register_task_definition(family='mark', networkMode='none',
        volumes=[{{'name': 'marks', 'host': {{'sourcePath': '{host}'}}}}],
        containerDefinitions=[{{'name': 'm', 'image': 'fs-tool:v1', 'memory': 8, 'cpu': 2,
            'mountPoints': [{{'sourceVolume': 'marks', 'containerPath': '/data'}}]}}])
    ecs.register_task_definition(family='sleep', networkMode='none',
        containerDefinitions=[{{'name': 's', 'image': 'sleeper:v1', 'memory': 8, 'cpu': 2}}])
    ecs.create_service(serviceName='steady', taskDefinition='sleep', desiredCount=20)
for i in range(10000):
    call = 'call-{round}-%d' % i
    r = ecs.run_task(taskDefinition='mark', count=10, overrides={{'containerOverrides': [
        {{'name': 'm', 'command': ['append', '/data/marks', call + '\n']}}]}})
    print(json.dumps({{'call': call, 'tasks': [t['taskArn'] for t in r['tasks']]}}), flush=True)
    ecs.create_cluster(clusterName=call)
    print(json.dumps({{'cluster': call}}), flush=True)
"#,
            api = serve.api,
            host = host.path().display(),
        );
        python_client(&program, |n, answer| {
            if let Some(c) = answer["cluster"].as_str() {
                clusters.push(c.to_string());
            } else {
                let arns = answer["tasks"].as_array().unwrap();
                calls.push((
                    answer["call"].as_str().unwrap().to_string(),
                    arns.iter()
                        .map(|a| a.as_str().unwrap().to_string())
                        .collect(),
                ));
            }
            if n as u64 == kill_after {
                serve.child.kill().unwrap();
                serve.child.wait().unwrap();
                return false;
            }
            true
        });
    }
    let acknowledged: usize = calls.iter().map(|(_, t)| t.len()).sum();
    assert!(
        acknowledged >= 200,
        "seed {seed}: only {acknowledged} tasks"
    );

    let serve = ServeProcess::start_with(dir.path(), ROOMY);
    let checker = format!(
        r#"
import boto3, json, sys, time
ecs = boto3.client('ecs', endpoint_url='http://{api}', region_name='eu-west-1',
    aws_access_key_id='AKIDSKIFFTEST', aws_secret_access_key='secret')
given = json.load(sys.stdin)
report = {{'missing_tasks': [], 'not_stopped': [], 'ran': {{}}, 'missing_clusters': []}}
for call, arns in given['calls']:
    for i in range(0, len(arns), 100):
        d = ecs.describe_tasks(tasks=arns[i:i + 100])
        report['missing_tasks'] += [f['arn'] for f in d['failures']]
        for t in d['tasks']:
            if t['lastStatus'] != 'STOPPED':
                report['not_stopped'].append(t['taskArn'])
            if t['containers'][0].get('exitCode') == 0:
                report['ran'][call] = report['ran'].get(call, 0) + 1
names = given['clusters']
for i in range(0, len(names), 100):
    d = ecs.describe_clusters(clusters=names[i:i + 100])
    report['missing_clusters'] += [f['arn'] for f in d['failures']]
# The service comes back to its desired count.
deadline = time.time() + 120
while time.time() < deadline:
    s = ecs.describe_services(services=['steady'])['services'][0]
    if s['runningCount'] == s['desiredCount'] == 20:
        break
    time.sleep(0.2)
report['steady'] = [s['runningCount'], s['desiredCount']]
# 2,000 tasks running, and the API answers at once.
arns = []
for _ in range(198):
    r = ecs.run_task(taskDefinition='sleep', count=10)
    arns += [t['taskArn'] for t in r['tasks']]
    report.setdefault('failures', []).extend(f['reason'] for f in r['failures'])
deadline = time.time() + 300
while time.time() < deadline:
    running = 0
    for i in range(0, len(arns), 100):
        running += sum(t['lastStatus'] == 'RUNNING'
                       for t in ecs.describe_tasks(tasks=arns[i:i + 100])['tasks'])
    if running == len(arns):
        break
    time.sleep(1)
report['running'] = running + 20
worst = 0
for _ in range(20):
    start = time.time()
    ecs.list_clusters(maxResults=10)
    ecs.describe_services(services=['steady'])
    ecs.run_task(taskDefinition='mark', count=1, overrides={{'containerOverrides': [
        {{'name': 'm', 'command': ['append', '/data/marks', 'late\n']}}]}})
    worst = max(worst, time.time() - start)
report['worst'] = worst
print(json.dumps(report))
"#,
        api = serve.api,
    );
    eprintln!("soak seed {seed}: checking");
    let report = python_json(
        &checker,
        &serde_json::json!({"calls": calls, "clusters": clusters}),
    );
    eprintln!(
        "soak: {acknowledged} tasks and {} clusters acknowledged over 5 kills; {} running; worst API round trip {:.3} s",
        clusters.len(),
        report["running"],
        report["worst"]
    );

    // No acknowledged write lost.
    assert_eq!(
        report["missing_tasks"],
        serde_json::json!([]),
        "seed {seed}"
    );
    assert_eq!(
        report["missing_clusters"],
        serde_json::json!([]),
        "seed {seed}"
    );
    assert_eq!(report["not_stopped"], serde_json::json!([]), "seed {seed}");
    // Exactly once for every task recorded as having run, at most once for
    // the rest: a call's mark is written once per task that ran, never
    // more than once per task.
    let written = std::fs::read_to_string(&marks).unwrap();
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for line in written.lines() {
        *counts.entry(line).or_insert(0) += 1;
    }
    for (call, arns) in &calls {
        let marked = counts.get(call.as_str()).copied().unwrap_or(0);
        let ran = report["ran"][call].as_u64().unwrap_or(0);
        assert!(
            ran <= marked && marked <= arns.len() as u64,
            "seed {seed}: {call} has {} tasks, {ran} recorded as run, {marked} marks",
            arns.len()
        );
    }
    let ran: u64 = calls
        .iter()
        .map(|(call, _)| report["ran"][call].as_u64().unwrap_or(0))
        .sum();
    assert!(ran > 0, "seed {seed}: no acknowledged task ran");
    assert_eq!(report["steady"], serde_json::json!([20, 20]), "seed {seed}");
    assert_eq!(report["failures"], serde_json::json!([]), "seed {seed}");
    assert_eq!(report["running"], 2000, "seed {seed}");
    // Frozen, the API took tens of seconds; answering, milliseconds.
    let worst = report["worst"].as_f64().unwrap();
    assert!(worst < 2.0, "seed {seed}: an API round trip took {worst} s");
}
