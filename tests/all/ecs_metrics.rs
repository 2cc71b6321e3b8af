//! The services' CPU and memory utilization in CloudWatch (`AWS/ECS`),
//! measured by the agent as the tasks run, read back with boto3 as AWS's
//! own dashboards and autoscaling read them.

use crate::support::ServeProcess;
use wasm_apps::app;

#[test]
fn services_report_cpu_and_memory_utilization() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(app("CPU_BURN_P1"), "burn:v1");
    serve.push(app("HTTP_HELLO_P2"), "hello-http:v1");
    let out = serve.boto3(
        r#"
import time, urllib.request
ecs = boto3.client('ecs', endpoint_url=ENDPOINT, region_name=REGION)
cw = boto3.client('cloudwatch', endpoint_url=ENDPOINT, region_name=REGION)
net = {'awsvpcConfiguration': {'subnets': ['subnet-1']}}
# A task that spins for ever reserving half a vCPU, and a web server.
ecs.register_task_definition(family='burn', networkMode='awsvpc', cpu='512', memory='512',
    containerDefinitions=[{'name': 'b', 'image': 'burn:v1'}])
ecs.register_task_definition(family='web', networkMode='awsvpc', cpu='256', memory='512',
    containerDefinitions=[{'name': 'w', 'image': 'hello-http:v1',
                           'portMappings': [{'containerPort': 80}]}])
ecs.create_service(serviceName='burn', taskDefinition='burn', desiredCount=1,
                   networkConfiguration=net)
ecs.create_service(serviceName='web', taskDefinition='web', desiredCount=1,
                   networkConfiguration=net)

def stats(service, metric):
    now = time.time()
    r = cw.get_metric_statistics(Namespace='AWS/ECS', MetricName=metric,
        Dimensions=[{'Name': 'ClusterName', 'Value': 'default'},
                    {'Name': 'ServiceName', 'Value': service}],
        StartTime=now - 600, EndTime=now + 60, Period=60,
        Statistics=['Maximum'], Unit='Percent')
    return [d['Maximum'] for d in r['Datapoints']]

def web_address():
    arns = ecs.list_tasks(serviceName='web', desiredStatus='RUNNING')['taskArns']
    for t in ecs.describe_tasks(tasks=arns)['tasks'] if arns else []:
        if t['lastStatus'] == 'RUNNING':
            for d in t['attachments'][0]['details']:
                if d['name'] == 'privateIPv4Address':
                    return d['value']

# Each request gets an instance of its own: the server's memory is that of
# the requests in flight, so one waits while the agent samples.
import threading
def slow_requests(ip):
    while time.time() < deadline:
        urllib.request.urlopen(f'http://{ip}/sleep?ms=2000', timeout=10).read()

found = {}
slow = None
deadline = time.time() + 90
while time.time() < deadline and len(found) < 4:
    ip = web_address()
    if ip:
        if slow is None:
            slow = threading.Thread(target=slow_requests, args=(ip,), daemon=True)
            slow.start()
        for _ in range(50):
            assert urllib.request.urlopen(f'http://{ip}/', timeout=10).status == 200
    for service in ['burn', 'web']:
        for metric in ['CPUUtilization', 'MemoryUtilization']:
            values = stats(service, metric)
            if values and max(values) > 0:
                found[f'{service} {metric}'] = max(values)
    time.sleep(0.5)
# Nothing is measured for what is no service.
listed = cw.list_metrics(Namespace='AWS/ECS')['Metrics']
print(json.dumps({'found': found,
                  'services': sorted({d['Value'] for m in listed for d in m['Dimensions']
                                      if d['Name'] == 'ServiceName'})}))
"#,
        "AKIDSKIFFTEST",
        "secret",
    );
    let result: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let found = &result["found"];
    for key in [
        "burn CPUUtilization",
        "burn MemoryUtilization",
        "web CPUUtilization",
        "web MemoryUtilization",
    ] {
        assert!(found[key].as_f64().is_some(), "no {key} above zero: {out}");
    }
    // A task that never yields uses its half vCPU while it runs, and no
    // more, however free the cores: the task's size is a hard limit, as
    // on Fargate (a sample may take some of its 100 ms burst).
    let burn = found["burn CPUUtilization"].as_f64().unwrap();
    assert!(
        (50.0..=110.0).contains(&burn),
        "burn used {burn}% of its CPU: {out}"
    );
    assert_eq!(result["services"], serde_json::json!(["burn", "web"]));
}
