//! `skiff bench`: benchmarks for users, measuring the whole product on
//! their machine and printing its figures beside baselines measured in the
//! same run.

mod baselines;
mod cold_start;
mod density;
mod density_report;
mod guest;
mod http;
mod load;
mod plot;
mod report;
mod resident;
mod server;
mod whole_process;

use clap::{Args, Subcommand};
use report::Phase;
use serde_json::{Value, json};
use skiff_registry::remote::{self, RemoteOptions};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// Start tasks through RunTask → scheduler → agent → runtime and show
    /// where each one's time went, beside a bare wasmtime embedding, the
    /// wasmtime CLI and a container runtime.
    ColdStart(ColdStartArgs),
    /// Serve a wasi:http component as an ECS service behind a load
    /// balancer and measure requests per second and latency, through it
    /// and straight to the task, beside `wasmtime serve` and a native
    /// hyper server giving the same answer.
    Http(HttpArgs),
    /// Hold many long-running tasks on one agent at once (a sleeper, or
    /// idle wasi:http services each at its own address) and show the
    /// resident memory each adds, how fast they start and stop, and
    /// whether one more still starts fast, beside the same guest as a
    /// process of its own.
    Density(DensityArgs),
    /// Time `skiff run` itself, a whole process each time (spawned to
    /// exited), beside `wasmtime run` on the same file and a native
    /// process that does nothing.
    Run(RunArgs),
    /// The native server `skiff bench http` compares with (run by it).
    #[command(hide = true)]
    NativeHello {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: std::net::SocketAddr,
    },
}

/// What both benches take.
#[derive(Args, Debug)]
struct Common {
    /// A running `skiff serve`'s API to measure (default: start one, with
    /// an empty data dir, for this run). The benches leave their task
    /// definitions and images there; `http` removes its service, load
    /// balancer and target group (also on Ctrl-C).
    #[arg(long, env = "SKIFF_ENDPOINT", value_name = "URL")]
    endpoint: Option<String>,
    /// The cluster the tasks run in.
    #[arg(long, default_value = "default", value_name = "NAME")]
    cluster: String,
    #[command(flatten)]
    out: Output,
}

/// What every bench takes: how it reports, and what it compares with.
#[derive(Args, Debug)]
struct Output {
    /// Print the figures as JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Draw the distributions (each phase's, each target's latency, or
    /// each program's processes) to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// The wasmtime CLI to compare with (default: `wasmtime` on PATH).
    #[arg(long, value_name = "PATH")]
    wasmtime: Option<PathBuf>,
    /// Measure skiff alone.
    #[arg(long)]
    no_baselines: bool,
}

#[derive(Args, Debug)]
struct HttpArgs {
    /// The wasi:http component to serve (for example wasm-apps' http_hello.wasm).
    #[arg(long, value_name = "FILE")]
    image: PathBuf,
    /// How long each round of load lasts, in seconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Rounds per target (interleaved; the best is kept).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Connections kept busy at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connections: u32,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
struct DensityArgs {
    /// How many tasks to hold at once.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    tasks: u32,
    /// The guest: a Wasm file or image reference that runs until stopped
    /// (a wasi:http component is run as an awsvpc service, each task at
    /// its own address). Default: a built-in sleeper.
    #[arg(long, value_name = "FILE | REF")]
    image: Option<String>,
    /// Each container's memory limit, in MiB (ECS's least is 6). The bench's own serve caps
    /// every container at this (`--max-container-memory`), so each pool
    /// slot reserves only that much address space.
    #[arg(long, default_value_t = 64, value_name = "MIB", value_parser = clap::value_parser!(u32).range(6..=4096))]
    task_memory: u32,
    /// RunTask (ten tasks each) and StopTask calls in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    concurrency: u32,
    /// Tasks started and stopped one by one, before filling and when full.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    probes: u32,
    /// How long filling (or draining) may take before the tasks left are
    /// counted failed.
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = crate::serve::parse_timeout)]
    timeout: std::time::Duration,
    /// Processes each process baseline holds at once.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    baseline_processes: u32,
    /// With --endpoint: the server's process, whose memory is read (the
    /// bench reads its own serve's).
    #[arg(long, value_name = "PID", requires = "endpoint")]
    server_pid: Option<u32>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Processes of each program, timed (after one untimed run each).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    runs: u32,
    /// The guest: a Wasm file that runs to its exit (default: a built-in
    /// hello world).
    #[arg(long, value_name = "FILE")]
    image: Option<PathBuf>,
    /// Compile every time: each `skiff run` gets an empty data dir, and
    /// `wasmtime run` its cache off (`-C cache=n`). Default: warm, both
    /// compile caches filled by the untimed run.
    #[arg(long)]
    cold: bool,
    #[command(flatten)]
    out: Output,
    /// How long the first, untimed `skiff run` may take before it is
    /// stopped and the bench fails (it times guests that run to their
    /// exit).
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = crate::serve::parse_timeout)]
    timeout: std::time::Duration,
}

#[derive(Args, Debug)]
struct ColdStartArgs {
    /// How many tasks to run (and runs of the in-process baseline; the
    /// process baselines run at most 100 times).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    tasks: u32,
    /// How many tasks at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    concurrency: u32,
    /// Tasks started by each RunTask call (its `count`, at most 10, as on
    /// ECS): one store commit starts them all.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10), conflicts_with = "cold")]
    count: u32,
    /// How long a task may take to reach STOPPED before it is stopped and
    /// counted failed (the guest is expected to exit by itself).
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = crate::serve::parse_timeout)]
    task_timeout: std::time::Duration,
    /// The guest: a Wasm file, or an image reference pulled once and
    /// pushed to the server's registry (default: a built-in hello world).
    #[arg(long, value_name = "FILE | REF")]
    image: Option<String>,
    /// Every task's image is new to the agent (a copy of the guest under
    /// its own digest), so each is pulled from the registry and compiled:
    /// the first start of an image. Baselines compile each time too.
    #[arg(long, conflicts_with = "warm")]
    cold: bool,
    /// The image is pulled and compiled by one task first, so the tasks
    /// timed only instantiate (the default).
    #[arg(long)]
    warm: bool,
    /// With --cold: the server compiles each image as it is pushed (as
    /// `skiff serve` does by default), and the bench waits for that before
    /// timing, so each first start is a pull and a load of compiled code.
    /// Without it a cold run's server does not compile on push, and each
    /// first start compiles. Needs the bench's own server.
    #[arg(long, requires = "cold", conflicts_with_all = ["warm", "endpoint"])]
    compiled_on_push: bool,
    /// The tasks' network mode: `none`, or `awsvpc` (each task leases an
    /// address and gets its own network).
    #[arg(long, default_value = "none", value_parser = ["none", "awsvpc"])]
    network_mode: String,
    #[command(flatten)]
    common: Common,
}

/// Runs a benchmark; the exit status.
pub fn run(args: BenchArgs) -> i32 {
    let ran = match args.bench {
        Bench::ColdStart(args) => cold_start_command(&args),
        Bench::Http(args) => http_command(&args),
        Bench::Density(args) => density_command(&args),
        Bench::Run(args) => run_command(&args),
        Bench::NativeHello { addr } => load::native_server(addr).map(|()| 0),
    };
    match ran {
        Ok(code) => code,
        Err(e) => {
            say!("error: {e:#}");
            1
        }
    }
}

/// The process-based baselines run at most this many times each (a
/// container start is tens of milliseconds).
const PROCESS_RUNS: usize = 100;

/// How many tasks a DescribeTasks names (ECS's most).
const DESCRIBE_BATCH: usize = 100;

/// A plot goes to an SVG file.
fn check_plot(plot: Option<&PathBuf>) -> anyhow::Result<()> {
    if let Some(plot) = plot {
        if !plot
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("svg"))
        {
            anyhow::bail!(
                "--plot {}: the plot is an SVG file (FILE.svg)",
                plot.display()
            );
        }
        // Found out now, not after the bench has run.
        std::fs::File::create(plot)
            .map_err(|e| anyhow::anyhow!("--plot {}: cannot write it: {e}", plot.display()))?;
    }
    Ok(())
}

/// The server to measure: the one given, or one started now with
/// `flags` (kept running while the returned guard lives).
fn server_for(
    endpoint: Option<&String>,
    flags: &[String],
) -> anyhow::Result<(Option<server::OwnServe>, String)> {
    Ok(match endpoint {
        Some(e) => (None, e.clone()),
        None => {
            let own = server::OwnServe::start(flags)?;
            let api = own.api.clone();
            (Some(own), api)
        }
    })
}

/// What a bench's banner says it runs against.
fn against(own: Option<&server::OwnServe>, endpoint: &str) -> String {
    match own {
        Some(_) => format!("a skiff serve started for this run ({endpoint})"),
        None => endpoint.to_string(),
    }
}

/// A name for this run, unlike any earlier one's (microseconds since the
/// epoch, in hex).
fn run_id() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or_default()
    )
}

fn http_command(args: &HttpArgs) -> anyhow::Result<i32> {
    check_plot(args.common.out.plot.as_ref())?;
    let name = args.image.display().to_string();
    let wasm = std::fs::read(&args.image)
        .map_err(|e| anyhow::anyhow!("--image {name}: cannot read it: {e}"))?;
    if skiff_runtime::inspect(&name, &wasm)? != skiff_runtime::ArtifactKind::HttpProxy {
        anyhow::bail!(
            "--image {name}: not a wasi:http component (wasi:http/proxy): the http bench serves requests"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (own, endpoint) = server_for(args.common.endpoint.as_ref(), &[])?;
    let api = crate::api_client::Api::new(&endpoint)?;
    if !args.common.out.json {
        say!(
            "skiff bench http: {name} as an ECS service behind a load balancer, against {}",
            against(own.as_ref(), &endpoint)
        );
    }
    let plan = http::Plan {
        wasm,
        file: args.image.clone(),
        seconds: args.seconds,
        rounds: args.rounds,
        connections: args.connections as usize,
        cluster: args.common.cluster.clone(),
        wasmtime: args.common.out.wasmtime.clone(),
        baselines: !args.common.out.no_baselines,
    };
    let targets = http::run(&rt, &api, &plan)?;
    let peak = own.as_ref().and_then(|o| report::peak_memory(o.pid()));
    drop(own);
    if let Some(path) = &args.common.out.plot {
        let rows: Vec<Phase> = targets.iter().filter_map(http::latency).collect();
        plot::draw(
            path,
            &format!("skiff bench http ({} connections)", args.connections),
            &rows,
        )?;
    }
    let out = json!({
        "bench": "http",
        "skiffVersion": env!("CARGO_PKG_VERSION"),
        "machine": report::machine(),
        "guest": {"name": name, "bytes": plan.wasm.len()},
        "endpoint": endpoint,
        "serverStartedForThisRun": args.common.endpoint.is_none(),
        "peakMemoryBytes": peak,
        "connections": args.connections,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "targets": http::json_of(&targets),
        "ratios": http::ratios(&targets),
    });
    if args.common.out.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        http::print(&targets, plan.connections, plan.seconds, plan.rounds);
    }
    let served = targets
        .iter()
        .take(2)
        .all(|t| t.outcome.as_ref().is_ok_and(|m| m.best.requests > 0));
    Ok(if served { 0 } else { 1 })
}

fn density_command(args: &DensityArgs) -> anyhow::Result<i32> {
    check_plot(args.common.out.plot.as_ref())?;
    if let Some(pid) = args.server_pid {
        check_server_pid(pid)?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (wasm, what) = match &args.image {
        Some(image) => rt.block_on(guest_of(Some(image)))?,
        None => (
            guest::sleeper()?,
            "the built-in sleeper (a wasip1 module)".to_string(),
        ),
    };
    let http = skiff_runtime::inspect(&what, &wasm)? == skiff_runtime::ArtifactKind::HttpProxy;
    let tasks = args.tasks as usize;
    let probes = args.probes as usize;
    // Its own serve has room for every task and probe: pool slots
    // (containers get nine tenths), CPU and memory declared for all.
    let held = tasks + probes + 1;
    let slots = (held * 10 / 9 + 17).max(32);
    let flags = [
        "--max-instances".to_string(),
        slots.to_string(),
        "--max-container-memory".into(),
        format!("{}m", args.task_memory),
        "--cpu".into(),
        (held * 1024).to_string(),
        "--memory".into(),
        (held * args.task_memory as usize + 1024).to_string(),
    ];
    let (own, endpoint) = server_for(args.common.endpoint.as_ref(), &flags)?;
    let pid = own.as_ref().map(server::OwnServe::pid).or(args.server_pid);
    let api = crate::api_client::Api::new(&endpoint)?;
    if !args.common.out.json {
        say!(
            "skiff bench density: {tasks} {} of {what} at once, {} MiB each, against {}",
            if http { "idle services" } else { "tasks" },
            args.task_memory,
            against(own.as_ref(), &endpoint)
        );
    }
    let plan = density::Plan {
        tasks,
        concurrency: args.concurrency as usize,
        probes,
        cluster: args.common.cluster.clone(),
        wasm: wasm.clone(),
        http,
        task_memory: args.task_memory,
        timeout: args.timeout,
        run_id: format!("skiff-bench-density-{}", run_id()),
    };
    // Figures from a server that has run tasks already read low (it
    // reuses what they freed) or mix in theirs: said, not hidden.
    let prior = rt.block_on(tasks_in(&api, &plan.cluster))?;
    if prior > 0 && !args.common.out.json {
        say!(
            "warning: {prior} task(s) already in cluster {} (running, or stopped within the hour): memory freed by earlier tasks is reused, so per-task figures read low, and the probes are not of an empty box; a fresh serve (no --endpoint) measures from nothing",
            plan.cluster
        );
    }
    let memory = move || pid.and_then(resident::rss);
    // Interrupted (Ctrl-C, SIGTERM), the tasks it started on a server it
    // was given are stopped; its own serve ends with it.
    let ran = rt.block_on(async {
        tokio::select! {
            m = density::run(&api, &plan, &memory) => Some(m),
            _ = crate::signals::shutdown_signal() => None,
        }
    });
    let Some(measured) = ran else {
        drop(own);
        if args.common.endpoint.is_none() {
            anyhow::bail!("interrupted");
        }
        say!(
            "interrupted: stopping the tasks it started on {endpoint} (startedBy {}; Ctrl-C again to leave them)",
            plan.run_id
        );
        let stopped = rt.block_on(async {
            tokio::select! {
                n = density::stop_leftovers(&api, &plan) => Some(n),
                _ = crate::signals::shutdown_signal() => None,
            }
        });
        match stopped {
            Some(Ok(n)) => anyhow::bail!("interrupted: {n} task(s) it started were stopped"),
            Some(Err(why)) => anyhow::bail!(
                "interrupted: stopping its tasks failed ({why}); they are startedBy {}",
                plan.run_id
            ),
            None => anyhow::bail!(
                "interrupted twice: its tasks were left running (startedBy {})",
                plan.run_id
            ),
        }
    };
    let measured = measured?;
    let peak = pid.and_then(report::peak_memory);
    drop(own);
    let baselines = if args.common.out.no_baselines {
        Vec::new()
    } else {
        let file = guest_file(&wasm)?;
        resident::baselines(
            file.path(),
            http,
            args.common.out.wasmtime.as_deref(),
            (args.baseline_processes as usize).min(tasks),
        )
    };
    let out = density_report::json_of(&density_report::Run {
        what: &what,
        wasm_bytes: wasm.len(),
        http,
        endpoint: &endpoint,
        own: args.common.endpoint.is_none(),
        plan: &plan,
        prior,
        measured: &measured,
        peak,
        baselines: &baselines,
    });
    if let Some(path) = &args.common.out.plot {
        let rows: Vec<Phase> = [("empty", &measured.empty), ("full", &measured.loaded)]
            .into_iter()
            .flat_map(|(when, rows)| {
                rows.iter().map(move |p| Phase {
                    name: leak(format!("{when}: {}", p.name)),
                    ..p.clone()
                })
            })
            .collect();
        plot::draw(
            path,
            &format!("skiff bench density: one more task, empty and with {tasks} running"),
            &rows,
        )?;
    }
    if args.common.out.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        density_report::print(&out, &measured, &baselines);
    }
    Ok(
        if measured.running == tasks && measured.failures.is_empty() {
            0
        } else {
            1
        },
    )
}

/// Tasks in `cluster`, running or recently stopped.
async fn tasks_in(api: &crate::api_client::Api, cluster: &str) -> anyhow::Result<usize> {
    let mut n = 0;
    for status in ["RUNNING", "STOPPED"] {
        n += api
            .ecs_all(
                "ListTasks",
                json!({"cluster": cluster, "desiredStatus": status}),
                "taskArns",
            )
            .await
            .map(|arns| arns.len())
            .or_else(|e| match e {
                crate::api_client::CallError::Api { kind, .. }
                    if kind == "ClusterNotFoundException" =>
                {
                    Ok(0)
                }
                e => Err(e),
            })?;
    }
    Ok(n)
}

/// `--server-pid` names a running skiff process.
fn check_server_pid(pid: u32) -> anyhow::Result<()> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map_err(|_| anyhow::anyhow!("--server-pid {pid}: no such process"))?;
    let words: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    if !words.iter().any(|w| w.contains("skiff")) || !words.iter().any(|w| w == "serve") {
        anyhow::bail!(
            "--server-pid {pid}: not a skiff serve (it runs {}): give the process of the server at --endpoint",
            words.first().map(String::as_str).unwrap_or("nothing")
        );
    }
    Ok(())
}

fn cold_start_command(args: &ColdStartArgs) -> anyhow::Result<i32> {
    check_plot(args.common.out.plot.as_ref())?;
    if args.count > args.concurrency {
        anyhow::bail!(
            "--count {} is more than --concurrency {}: a RunTask of {} tasks runs them all at once (raise --concurrency)",
            args.count,
            args.concurrency,
            args.count
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (wasm, what) = rt.block_on(guest_of(args.image.as_deref()))?;
    if skiff_runtime::inspect(&what, &wasm)? == skiff_runtime::ArtifactKind::HttpProxy {
        anyhow::bail!(
            "{what} is a wasi:http component, which serves requests rather than running to an exit: cold-start runs a module or a wasi:cli command"
        );
    }
    // A cold run times compiling at first start unless told otherwise.
    let flags = if args.cold && !args.compiled_on_push {
        vec!["--no-compile-on-push".to_string()]
    } else {
        Vec::new()
    };
    let (own, endpoint) = server_for(args.common.endpoint.as_ref(), &flags)?;
    if args.cold && own.is_none() {
        say!(
            "note: the server at {endpoint} may compile images as they are pushed (skiff serve does unless started with --no-compile-on-push); a first start that finds its image compiled shows compile \"cache\""
        );
    }
    let api = Arc::new(crate::api_client::Api::new(&endpoint)?);
    let tasks = args.tasks as usize;
    let plan = cold_start::Plan {
        tasks,
        concurrency: args.concurrency as usize,
        cold: args.cold,
        cluster: args.common.cluster.clone(),
        wasm: wasm.clone(),
        awsvpc: args.network_mode == "awsvpc",
        per_call: args.count as usize,
        task_timeout: args.task_timeout,
        compiled_on_push: own
            .as_ref()
            .filter(|_| args.compiled_on_push)
            .map(server::OwnServe::compile_cache),
    };
    if !args.common.out.json {
        say!(
            "skiff bench cold-start: {tasks} tasks of {what}, {}, network mode {}, {} at a time{}, against {}",
            match (args.cold, args.compiled_on_push) {
                (false, _) => "warm",
                (true, false) => "cold",
                (true, true) => "cold, compiled on push",
            },
            args.network_mode,
            args.concurrency,
            if args.count > 1 {
                format!(", {} to a RunTask", args.count)
            } else {
                String::new()
            },
            against(own.as_ref(), &endpoint)
        );
    }
    let measured = rt.block_on(cold_start::run(&api, &plan))?;
    let peak = own.as_ref().and_then(|o| report::peak_memory(o.pid()));
    drop(own);

    let baselines = if args.common.out.no_baselines {
        Vec::new()
    } else {
        let file = guest_file(&wasm)?;
        let runs = tasks.min(PROCESS_RUNS);
        let mut b = vec![
            baselines::bare_wasmtime(&wasm, tasks, args.cold),
            baselines::wasmtime_cli(
                args.common.out.wasmtime.as_deref(),
                file.path(),
                runs,
                args.cold,
            ),
        ];
        b.extend(baselines::container(runs));
        b
    };

    let out = json!({
        "bench": "cold-start",
        "skiffVersion": env!("CARGO_PKG_VERSION"),
        "machine": report::machine(),
        "mode": if args.cold { "cold" } else { "warm" },
        "compiledOnPush": args.compiled_on_push,
        "networkMode": args.network_mode,
        "tasks": tasks,
        "concurrency": args.concurrency,
        "countPerRunTask": args.count,
        "guest": {"name": what, "bytes": wasm.len()},
        "endpoint": endpoint,
        "serverStartedForThisRun": args.common.endpoint.is_none(),
        "peakMemoryBytes": peak,
        "skiff": cold_start::json_of(&measured),
        "baselines": baselines.iter().map(|b| baseline_json(b, &measured.phases)).collect::<Vec<_>>(),
    });
    if let Some(path) = &args.common.out.plot {
        let mut rows: Vec<Phase> = measured.phases.clone();
        rows.extend(start_to_exit_rows(&baselines, "baseline: "));
        plot::draw(
            path,
            &format!(
                "skiff bench cold-start ({} tasks, {})",
                tasks,
                out["mode"].as_str().unwrap_or("")
            ),
            &rows,
        )?;
    }
    if args.common.out.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_text(&measured, peak, &baselines, &out);
    }
    Ok(if measured.succeeded == 0 { 1 } else { 0 })
}

fn run_command(args: &RunArgs) -> anyhow::Result<i32> {
    check_plot(args.out.plot.as_ref())?;
    // The built-in guest is written to a file kept while the bench runs.
    let (wasm, what, path, _written) = match &args.image {
        Some(path) => {
            let wasm = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("--image {}: cannot read it: {e}", path.display()))?;
            (wasm, path.display().to_string(), path.clone(), None)
        }
        None => {
            let wasm = guest::hello()?;
            let file = guest_file(&wasm)?;
            let path = file.path().to_path_buf();
            let what = "the built-in hello (a wasip1 module)".to_string();
            (wasm, what, path, Some(file))
        }
    };
    // Refused here with the reason, not as a failed process later.
    if skiff_runtime::inspect(&what, &wasm)? == skiff_runtime::ArtifactKind::HttpProxy {
        anyhow::bail!(
            "{what} is a wasi:http component, which serves requests rather than running to an exit: bench run runs a module or a wasi:cli command"
        );
    }
    let mode = if args.cold { "cold" } else { "warm" };
    if !args.out.json {
        say!(
            "skiff bench run: `skiff run` on {what}, {} process{} of each program, {mode}, in turns",
            args.runs,
            if args.runs == 1 { "" } else { "es" }
        );
    }
    // Ctrl-C (or a SIGTERM) stops the bench between processes, so its
    // data dirs and files are removed rather than left behind.
    let skiff = std::env::current_exe()?;
    let measured = whole_process::watching_signals(|interrupted| {
        whole_process::run(&whole_process::Plan {
            skiff,
            file: &path,
            runs: args.runs as usize,
            cold: args.cold,
            wasmtime: args.out.wasmtime.as_deref(),
            baselines: !args.out.no_baselines,
            first_run_limit: args.timeout,
            interrupted,
        })
    })?;
    let measured = match measured {
        Ok(m) => m,
        Err(whole_process::Stopped::Interrupted(signal)) => {
            say!("skiff bench run: interrupted, its files removed; nothing to report");
            return Ok(128 + signal);
        }
        Err(whole_process::Stopped::Failed(why)) => anyhow::bail!("{why}"),
    };
    // Each baseline's p50 and skiff run's, where both ran.
    let skiff_p50 = measured.skiff.summary().map(|s| s.p50);
    let compared: Vec<Option<(f64, f64)>> = measured
        .baselines
        .iter()
        .map(|b| {
            let ran = b.outcome.as_ref().ok()?;
            let theirs = ran.start_to_exit()?.summary()?.p50;
            Some((theirs, skiff_p50?))
        })
        .collect();
    let baselines_json: Vec<Value> = measured
        .baselines
        .iter()
        .zip(&compared)
        .map(|(b, c)| compared_json(b, c.map(|(t, o)| ("start → exit, p50".to_string(), t, o))))
        .collect();
    let out = json!({
        "bench": "run",
        "skiffVersion": env!("CARGO_PKG_VERSION"),
        "machine": report::machine(),
        "mode": mode,
        "runs": args.runs,
        "guest": {"name": what, "bytes": wasm.len()},
        "skiff": report::json(std::slice::from_ref(&measured.skiff)),
        "baselines": baselines_json,
    });
    // skiff's row, then each baseline that ran, by its short name.
    let mut rows = vec![Phase {
        name: "skiff run",
        ..measured.skiff.clone()
    }];
    rows.extend(start_to_exit_rows(&measured.baselines, ""));
    if let Some(plot) = &args.out.plot {
        plot::draw(
            plot,
            &format!("skiff bench run ({} processes each, {mode})", args.runs),
            &rows,
        )?;
    }
    if args.out.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    report::print_machine(&out);
    print!("{}", report::table_headed(&rows, "process", "runs"));
    for (b, c) in measured.baselines.iter().zip(&compared) {
        match &b.outcome {
            Err(why) => println!("{}: skipped: {why}", b.name),
            Ok(ran) => {
                let Some((theirs, ours)) = *c else { continue };
                let ratio = theirs / ours;
                let verdict = if b.name.starts_with(whole_process::FLOOR) {
                    format!("skiff run takes {} more", report::duration(ours - theirs))
                } else if (0.95..=1.05).contains(&ratio) {
                    "about the same".to_string()
                } else {
                    faster_or_slower("skiff run", ratio)
                };
                println!(
                    "{}{}: p50 {} vs skiff run's {}: {verdict}",
                    b.name,
                    report::version_suffix(ran.version.as_deref()),
                    report::duration(theirs),
                    report::duration(ours)
                );
            }
        }
    }
    Ok(0)
}

/// The guest in a file of its own, for the baselines that run files.
fn guest_file(wasm: &[u8]) -> anyhow::Result<tempfile::NamedTempFile> {
    let file = tempfile::Builder::new().suffix(".wasm").tempfile()?;
    std::fs::write(file.path(), wasm)?;
    Ok(file)
}

/// The guest's bytes and a name for it.
async fn guest_of(image: Option<&str>) -> anyhow::Result<(Vec<u8>, String)> {
    let Some(image) = image else {
        let wasm = guest::hello()?;
        return Ok((wasm, "the built-in hello (a wasip1 module)".into()));
    };
    let path = std::path::Path::new(image);
    if path.exists() {
        let wasm = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("--image {image}: cannot read it: {e}"))?;
        if !wasm.starts_with(b"\0asm") {
            anyhow::bail!("--image {image}: not a Wasm binary (no \\0asm header)");
        }
        return Ok((wasm, image.to_string()));
    }
    let looks_like_a_file = image.ends_with(".wasm")
        || image.starts_with('/')
        || image.starts_with("./")
        || image.starts_with("../");
    if looks_like_a_file || (!image.contains(':') && !image.contains('/')) {
        anyhow::bail!(
            "--image {image}: no such file, and not an image reference (REGISTRY/REPOSITORY:TAG)"
        );
    }
    let pulled = remote::pull(image, &RemoteOptions::default(), &|_, _| {})
        .await
        .map_err(|e| anyhow::anyhow!("--image {image}: {e}"))?;
    Ok((pulled.wasm, image.to_string()))
}

/// A phase name that lives as long as the program (a few per run).
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Each baseline that ran, as one row of its start → exit named
/// `prefix` and its short name.
fn start_to_exit_rows<'a>(
    baselines: &'a [baselines::Baseline],
    prefix: &'a str,
) -> impl Iterator<Item = Phase> + 'a {
    baselines.iter().filter_map(move |b| {
        let total = b.outcome.as_ref().ok()?.start_to_exit()?;
        Some(Phase {
            name: leak(format!("{prefix}{}", short(&b.name))),
            ..total.clone()
        })
    })
}

/// A baseline's name up to its parenthesis.
fn short(name: &str) -> &str {
    name.split(" (").next().unwrap_or(name)
}

fn summary_of(phases: &[Phase], name: &str) -> Option<report::Summary> {
    phases
        .iter()
        .find(|p| p.name == name)
        .and_then(Phase::summary)
}

/// What skiff's figure each baseline is compared with: a process-based
/// one with what a client sees (a whole start, API included); the bare
/// embedding with skiff's own sandbox + instantiation, so the ratio is
/// skiff's overhead on the start path.
fn comparison(b: &baselines::Baseline, skiff: &[Phase]) -> Option<(String, f64, f64)> {
    let ran = b.outcome.as_ref().ok()?;
    if b.name.starts_with("bare") {
        let bare =
            summary_of(&ran.phases, "sandbox")?.p50 + summary_of(&ran.phases, "instantiate")?.p50;
        let ours = summary_of(skiff, "sandbox")?.p50 + summary_of(skiff, "instantiate")?.p50;
        return Some(("sandbox + instantiate, p50".into(), bare, ours));
    }
    let theirs = ran.start_to_exit()?.summary()?.p50;
    let ours = summary_of(skiff, "client, RunTask → STOPPED seen")?.p50;
    Some((
        "start → exit, p50 (skiff: RunTask → STOPPED seen)".into(),
        theirs,
        ours,
    ))
}

fn baseline_json(b: &baselines::Baseline, skiff: &[Phase]) -> Value {
    compared_json(b, comparison(b, skiff))
}

/// A baseline as JSON, with what it was compared with: (what, its
/// figure, skiff's), in microseconds.
fn compared_json(b: &baselines::Baseline, compared: Option<(String, f64, f64)>) -> Value {
    match &b.outcome {
        Ok(ran) => {
            let compared = compared.map(|(what, theirs, ours)| {
                json!({"what": what, "baselineMicros": report::ns(theirs), "skiffMicros": report::ns(ours), "baselineOverSkiff": theirs / ours})
            });
            json!({"name": b.name, "ran": true, "version": ran.version, "phases": report::json(&ran.phases), "comparison": compared})
        }
        Err(why) => json!({"name": b.name, "ran": false, "skipped": why}),
    }
}

/// "WHO N× faster" or "WHO N× slower", for a baseline's figure over
/// skiff's.
fn faster_or_slower(who: &str, ratio: f64) -> String {
    if ratio >= 1.0 {
        format!("{who} {ratio:.1}× faster")
    } else {
        format!("{who} {:.1}× slower", 1.0 / ratio)
    }
}

fn print_text(
    m: &cold_start::Measured,
    peak: Option<u64>,
    baselines: &[baselines::Baseline],
    out: &Value,
) {
    report::print_machine(out);
    print!("{}", report::table(&m.phases));
    let secs = m.wall.as_secs_f64();
    println!();
    println!(
        "{} tasks ran in {:.3} s: {:.0} tasks/s (from the first RunTask to the last STOPPED seen)",
        m.succeeded,
        secs,
        if secs > 0.0 {
            m.succeeded as f64 / secs
        } else {
            0.0
        }
    );
    if m.succeeded > 0 {
        println!(
            "watching them (the bench's own polling): {} DescribeTasks calls, {:.2} descriptions a task",
            m.described.calls,
            m.described.tasks as f64 / m.succeeded as f64
        );
    }
    let code: Vec<String> = m
        .code
        .iter()
        .map(|(from, n)| match from.as_str() {
            "compiled" => format!("{n} compiled at start"),
            "cache" => format!("{n} loaded from the compile cache"),
            "warm" => format!("{n} already in memory"),
            other => format!("{n} {other}"),
        })
        .collect();
    if !code.is_empty() {
        println!("compiled code: {}", code.join(", "));
    }
    println!(
        "pulled {}; peak memory of skiff serve: {}",
        report::bytes(m.pulled_bytes),
        peak.map(report::bytes)
            .unwrap_or_else(|| "not measured (a server this run did not start)".into())
    );
    for (why, n) in &m.failures {
        println!("FAILED: {n} task(s): {why}");
    }
    if baselines.is_empty() {
        return;
    }
    println!();
    println!("baselines (the same guest, this machine, this run):");
    for b in baselines {
        match &b.outcome {
            Err(why) => println!("  {}: skipped: {why}", b.name),
            Ok(ran) => {
                let version = report::version_suffix(ran.version.as_deref());
                println!("  {}{version}", b.name);
                for line in report::table(&ran.phases).lines() {
                    println!("    {line}");
                }
                if let Some((what, theirs, ours)) = comparison(b, &m.phases) {
                    let verdict = faster_or_slower("skiff", theirs / ours);
                    println!(
                        "    {what}: {} vs skiff's {}: {verdict}",
                        report::duration(theirs),
                        report::duration(ours)
                    );
                }
            }
        }
    }
}
