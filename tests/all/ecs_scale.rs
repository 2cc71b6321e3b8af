//! Many tasks at once on `skiff serve`: what they cost the process, and
//! that the API stays answering while they start and run.

use crate::support::ServeProcess;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use wasm_apps::app;

/// The threads of a process, now.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn hundreds_of_tasks_of_a_new_image_start_without_a_thread_each() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start_with(dir.path(), &["--cpu", "100000", "--memory", "100000"]);
    // Never compiled in this data dir: every task would compile it.
    serve.push(app("SLEEPER_P1"), "sleeper:v1");
    let pid = serve.child.id();

    // Watch the process's threads while the tasks start.
    let most = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (most, done) = (Arc::clone(&most), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                most.fetch_max(threads(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let out = serve.boto3(
        r#"
import time
ecs = boto3.client('ecs', endpoint_url=ENDPOINT, region_name=REGION)
ecs.register_task_definition(family='sleep', networkMode='none',
    containerDefinitions=[{'name': 's', 'image': 'sleeper:v1', 'memory': 8, 'cpu': 2}])
arns = []
for _ in range(40):
    r = ecs.run_task(taskDefinition='sleep', count=10)
    assert not r['failures'], r['failures']
    arns += [t['taskArn'] for t in r['tasks']]
deadline = time.time() + 240
while time.time() < deadline:
    running = 0
    for i in range(0, len(arns), 100):
        ts = ecs.describe_tasks(tasks=arns[i:i + 100])['tasks']
        running += sum(1 for t in ts if t['lastStatus'] == 'RUNNING')
    if running == len(arns):
        break
    time.sleep(0.5)
# With all of them running, the API answers at once.
start = time.time()
ecs.list_clusters()
ecs.run_task(taskDefinition='sleep', count=1)
print(json.dumps({'running': running, 'answer': time.time() - start}))
"#,
        "AKIDSKIFFTEST",
        "secret",
    );
    done.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let result: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(result["running"], 400, "{out}");
    // A running task costs memory, not a thread: the tasks of one image
    // wait for one compile, and compiles never outnumber the cores.
    let most = most.load(Ordering::Relaxed);
    assert!(most < 64, "{most} threads while 400 tasks started");
    let answer = result["answer"].as_f64().unwrap();
    assert!(answer < 5.0, "ListClusters and RunTask took {answer} s");
}
