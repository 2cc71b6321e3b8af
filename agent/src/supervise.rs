//! Running a task's containers: each starts once its `dependsOn`
//! conditions hold (START, COMPLETE, SUCCESS, HEALTHY), a wasi:http
//! component is served at its address, anything else runs as an instance;
//! then they are watched until an essential one exits, the task is asked
//! to stop, or one cannot start. Everything still running is then stopped:
//! stdin closes, and after `stopTimeout` (default 30 s) it is killed.

use crate::resources::health::{HealthChecks, halted, task_health};
use crate::resources::logs::LineSink;
use crate::runner::Reporter;
use skiff_channel::messages::{
    ContainerChange, ContainerStatus, HealthStatus, TaskStateChange, TaskStatus,
};
use skiff_channel::now;
use skiff_channel::task::ContainerPhases;
use skiff_channel::taskdef::ContainerDefinition;
use skiff_runtime::{Artifact, InstanceSpec, Limit, Outcome, Runtime, StartPhases};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How supervision ended.
pub(crate) enum Supervised {
    EssentialExited,
    FailedToStart(String),
    Stopped,
}

/// One container, ready to start.
pub(crate) struct Container {
    pub definition: ContainerDefinition,
    pub spec: InstanceSpec,
    pub artifact: Arc<Artifact>,
    /// Its address (its task's; the host's loopback in host and bridge
    /// modes): where its health check's `localhost` is.
    pub address: std::net::Ipv4Addr,
    /// Where it serves, if it is a wasi:http component.
    pub serve_at: Option<SocketAddr>,
    /// Where its awslogs output goes.
    pub sink: Option<Arc<LineSink>>,
}

/// What a container's watcher tells supervision.
enum Event {
    /// Container `i`'s guest began to run (a server's, its first request).
    Entered(usize, ContainerPhases),
    /// Container `i` ended, with the phases not yet reported.
    Exited(usize, Outcome, ContainerPhases),
}

/// A start's phases as the task reports them.
fn start_phases(p: StartPhases) -> ContainerPhases {
    ContainerPhases {
        sandbox_micros: Some(ContainerPhases::micros(p.sandbox)),
        instantiate_micros: Some(ContainerPhases::micros(p.instantiate)),
        first_instruction_at: p
            .entered_at
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs_f64()),
        ..ContainerPhases::default()
    }
}

/// Starts the containers, watches them, and stops them; how it ended.
pub(crate) async fn supervise(
    runtime: &Runtime,
    report: &Reporter,
    containers: &[Container],
    stop: &mut watch::Receiver<bool>,
    default_stop_timeout: Duration,
) -> Supervised {
    // A container's last line may lack a newline: write it when the
    // container ends, not when the task does.
    let flush = |i: usize| {
        if let Some(sink) = containers.get(i).and_then(|c| c.sink.as_ref()) {
            sink.flush();
        }
    };
    let definitions: Vec<ContainerDefinition> =
        containers.iter().map(|c| c.definition.clone()).collect();
    let n = containers.len();
    let (exits, mut exited) = mpsc::unbounded_channel::<Event>();
    let (halt, _) = watch::channel(false);
    let mut started = vec![false; n];
    let mut outcome: Vec<Option<Outcome>> = vec![None; n];
    let mut health: Vec<Option<HealthStatus>> = containers
        .iter()
        .map(|c| {
            c.definition
                .health_check
                .as_ref()
                .map(|_| HealthStatus::Unknown)
        })
        .collect();
    let (health_tx, mut health_rx) = mpsc::unbounded_channel::<(usize, HealthStatus)>();
    let mut running_reported = false;
    // When the last container began to start: the task's startedAt, so
    // that no guest's first instruction comes before it.
    let mut starting = now();
    let mut result: Option<Supervised> = None;
    let mut checks = HealthChecks::default();

    loop {
        // Start whatever can start now.
        if result.is_none() {
            for i in 0..n {
                if started[i] {
                    continue;
                }
                let container = &containers[i];
                let c = &container.definition;
                let mut ready = true;
                for d in &c.depends_on {
                    let Some(j) = definitions.iter().position(|x| x.name == d.container_name)
                    else {
                        continue;
                    };
                    let ok = match d.condition.as_str() {
                        "START" => started[j],
                        "COMPLETE" => outcome[j].is_some(),
                        "SUCCESS" => match &outcome[j] {
                            Some(o) if o.exit_code() != 0 => {
                                result = Some(Supervised::FailedToStart(format!(
                                    "CannotStartContainerError: {} depends on {} succeeding, which exited with {}",
                                    c.name,
                                    d.container_name,
                                    o.exit_code()
                                )));
                                false
                            }
                            Some(_) => true,
                            None => false,
                        },
                        _ => health[j] == Some(HealthStatus::Healthy),
                    };
                    ready &= ok;
                }
                if result.is_some() {
                    break;
                }
                if !ready {
                    continue;
                }
                let grace = c
                    .stop_timeout
                    .map(|s| Duration::from_secs(u64::from(s)))
                    .unwrap_or(default_stop_timeout);
                starting = now();
                let runtime_id = if let Some(at) = container.serve_at {
                    let usage = skiff_runtime::UsageMeter::new();
                    report.meter(usage.clone());
                    spawn_server(
                        runtime,
                        &container.artifact,
                        container.spec.clone(),
                        usage,
                        at,
                        i,
                        grace,
                        exits.clone(),
                        halt.subscribe(),
                    )
                    .map(|()| format!("{}-{i}", report.task_id()))
                } else {
                    match runtime.spawn(&container.artifact, container.spec.clone()) {
                        Ok(instance) => {
                            report.meter(instance.meter());
                            let id = format!("{}-{}", report.task_id(), instance.id());
                            spawn_watch(instance, i, grace, exits.clone(), halt.subscribe());
                            Ok(id)
                        }
                        Err(e) => Err(e.to_string()),
                    }
                };
                match runtime_id {
                    Ok(runtime_id) => {
                        started[i] = true;
                        if let Some(check) = &c.health_check {
                            checks.start(
                                runtime,
                                container,
                                check,
                                i,
                                &health_tx,
                                halt.subscribe(),
                            );
                        }
                        report.container(ContainerChange {
                            container_name: c.name.clone(),
                            status: Some(ContainerStatus::Running),
                            runtime_id: Some(runtime_id),
                            health_status: health[i],
                            ..ContainerChange::default()
                        });
                    }
                    Err(e) => {
                        result = Some(Supervised::FailedToStart(format!(
                            "CannotStartContainerError: {}: {e}",
                            c.name
                        )));
                        break;
                    }
                }
            }
            if result.is_none() && !running_reported && started.iter().all(|s| *s) {
                running_reported = true;
                report.task(TaskStateChange {
                    status: Some(TaskStatus::Running),
                    started_at: Some(starting),
                    ..TaskStateChange::default()
                });
            }
        }
        if result.is_some() {
            break;
        }
        if (0..n).all(|i| !started[i] || outcome[i].is_some()) && started.iter().any(|s| !s) {
            // Everything that started has ended, and the rest wait on
            // conditions that can no longer be met.
            result = Some(Supervised::FailedToStart(
                "CannotStartContainerError: container dependencies can never be met".into(),
            ));
            break;
        }
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    result = Some(Supervised::Stopped);
                    break;
                }
            }
            Some(event) = exited.recv() => {
                let (i, o, phases) = match event {
                    Event::Entered(i, phases) => {
                        report.container(ContainerChange {
                            container_name: definitions[i].name.clone(),
                            phases: Some(phases),
                            ..ContainerChange::default()
                        });
                        continue;
                    }
                    Event::Exited(i, o, phases) => (i, o, phases),
                };
                flush(i);
                let c = &definitions[i];
                report.container(exit_change(&c.name, &o, phases));
                outcome[i] = Some(o);
                if c.essential {
                    result = Some(Supervised::EssentialExited);
                    break;
                }
            }
            Some((i, status)) = health_rx.recv() => {
                if health[i] != Some(status) {
                    health[i] = Some(status);
                    report.task(TaskStateChange {
                        health_status: Some(task_health(&definitions, &health)),
                        containers: vec![ContainerChange {
                            container_name: definitions[i].name.clone(),
                            health_status: Some(status),
                            ..ContainerChange::default()
                        }],
                        ..TaskStateChange::default()
                    });
                }
            }
        }
    }

    // Stop everything still running.
    report.task(TaskStateChange {
        status: Some(TaskStatus::Deactivating),
        stopping_at: Some(now()),
        ..TaskStateChange::default()
    });
    drop(checks);
    report.task(TaskStateChange {
        status: Some(TaskStatus::Stopping),
        ..TaskStateChange::default()
    });
    let _ = halt.send(true);
    drop(exits);
    let still_running = (0..n)
        .filter(|i| started[*i] && outcome[*i].is_none())
        .count();
    let mut remaining = still_running;
    while remaining > 0 {
        let Some(event) = exited.recv().await else {
            break;
        };
        let (i, o, phases) = match event {
            Event::Entered(i, phases) => (i, None, phases),
            Event::Exited(i, o, phases) => (i, Some(o), phases),
        };
        let name = &definitions[i].name;
        match o {
            Some(o) if outcome[i].is_none() => {
                remaining -= 1;
                flush(i);
                report.container(exit_change(name, &o, phases));
                outcome[i] = Some(o);
            }
            Some(_) => {}
            None => report.container(ContainerChange {
                container_name: name.clone(),
                phases: Some(phases),
                ..ContainerChange::default()
            }),
        }
    }
    // Containers that never started end STOPPED with no exit code.
    let never: Vec<ContainerChange> = (0..n)
        .filter(|i| !started[*i])
        .map(|i| ContainerChange {
            container_name: definitions[i].name.clone(),
            status: Some(ContainerStatus::Stopped),
            ..ContainerChange::default()
        })
        .collect();
    if !never.is_empty() {
        report.task(TaskStateChange {
            containers: never,
            ..TaskStateChange::default()
        });
    }
    result.unwrap_or(Supervised::Stopped)
}

/// A container's end, as ECS reports it: its exit code, and why if it
/// did not simply exit.
fn exit_change(name: &str, o: &Outcome, mut phases: ContainerPhases) -> ContainerChange {
    let reason = match o {
        Outcome::Exited(_) | Outcome::Stopped => None,
        Outcome::Trapped(t) => Some(format!("Trapped: {}", first_line(t))),
        Outcome::LimitExceeded {
            limit: l @ Limit::Memory(_),
            ..
        } => Some(format!("OutOfMemoryError: the container exceeded its {l}")),
        Outcome::LimitExceeded { limit, .. } => Some(format!("the container exceeded its {limit}")),
        Outcome::Failed(why) => Some(format!("CannotStartContainerError: {why}")),
    };
    phases.exited_at = Some(now());
    ContainerChange {
        container_name: name.to_string(),
        status: Some(ContainerStatus::Stopped),
        exit_code: Some(o.exit_code()),
        reason,
        phases: Some(phases),
        ..ContainerChange::default()
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// Waits for one container, reporting when its guest begins to run; on
/// halt, stops it with its grace period.
fn spawn_watch(
    mut instance: skiff_runtime::Instance,
    index: usize,
    grace: Duration,
    exits: mpsc::UnboundedSender<Event>,
    mut halt: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut entered = instance.start_phases();
        let mut reported = false;
        let outcome = loop {
            tokio::select! {
                o = instance.wait() => break o,
                () = halted(&mut halt) => {
                    instance.stop(grace);
                    break instance.wait().await;
                }
                seen = async { entered.wait_for(Option::is_some).await.ok().and_then(|p| *p) }, if !reported => {
                    match seen {
                        Some(p) if !instance.is_finished() => {
                            let _ = exits.send(Event::Entered(index, start_phases(p)));
                            reported = true;
                        }
                        // A guest that has already ended (or never ran)
                        // says it all at its exit, in one report.
                        _ => break instance.wait().await,
                    }
                }
            }
        };
        let phases = match instance.phases() {
            Some(p) if !reported => start_phases(p),
            _ => ContainerPhases::default(),
        };
        let _ = exits.send(Event::Exited(index, outcome, phases));
    });
}

/// Serves a wasi:http container at `at` until halted (then drains for at
/// most `grace`); its end is reported like a container's exit.
#[allow(clippy::too_many_arguments)]
fn spawn_server(
    runtime: &Runtime,
    artifact: &Arc<Artifact>,
    spec: InstanceSpec,
    usage: skiff_runtime::UsageMeter,
    at: SocketAddr,
    index: usize,
    grace: Duration,
    exits: mpsc::UnboundedSender<Event>,
    mut halt: watch::Receiver<bool>,
) -> Result<(), String> {
    let listener = std::net::TcpListener::bind(skiff_runtime::ports::host(at))
        .map_err(|e| format!("cannot listen on {at}: {e}"))?;
    listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
        .map_err(|e| format!("cannot listen on {at}: {e}"))
        .map(|listener| {
            let runtime = runtime.clone();
            let artifact = Arc::clone(artifact);
            let mut options = skiff_runtime::http::ServeOptions::new(spec);
            options.drain_timeout = grace;
            options.usage = usage;
            let mut first = options.first_request();
            let entered = exits.clone();
            // The first request's start, when there is one.
            let first_request = tokio::spawn(async move {
                if let Ok(p) = first.wait_for(Option::is_some).await
                    && let Some(p) = *p
                {
                    let _ = entered.send(Event::Entered(index, start_phases(p)));
                }
            });
            tokio::spawn(async move {
                let served =
                    skiff_runtime::http::serve(&runtime, &artifact, listener, options, async {
                        halted(&mut halt).await;
                    })
                    .await;
                first_request.abort();
                let outcome = match served {
                    Ok(_) => Outcome::Exited(0),
                    Err(e) => Outcome::Failed(e.to_string()),
                };
                let _ = exits.send(Event::Exited(index, outcome, ContainerPhases::default()));
            });
        })
}
