//! The service scheduler's loop: level-triggered passes that read a
//! service and its tasks, [`decide`](super::decide::decide) what to do, and
//! commit the new tasks, the stops and the service's record in one
//! transaction; then tell the agents and the load balancers.

use crate::core::Core;
use crate::core::model::{Failure, Task, name_of, now};
use crate::core::placement::{Candidate, Constraint};
use crate::core::services::{
    Action, Registered, Service, ServiceLoadBalancer, World, decide, deployment_id, live,
};
use crate::core::state::{State, Write};
use crate::core::tasks::{Launch, place_tasks, placement_rules, stop_request, taskdef_of};
use crate::error::ApiError;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// A task's target in a target group: its address (ip) or its instance
/// (`ec2_id`) with the container port's published host port (instance).
pub(crate) fn task_target(
    t: &Task,
    ec2_id: Option<&str>,
    lb: &ServiceLoadBalancer,
    tg: &crate::plane::elb::config::TargetGroup,
) -> Option<crate::plane::elb::config::Target> {
    if tg.target_type == "ip" {
        let ip = crate::core::discovery::task_ip(t)?;
        return Some(crate::plane::elb::config::Target {
            id: ip.to_string(),
            port: lb.container_port,
        });
    }
    let c = t.containers.iter().find(|c| c.name == lb.container_name)?;
    let b = c
        .network_bindings
        .iter()
        .find(|b| b.container_port == lb.container_port && b.protocol == "tcp")?;
    Some(crate::plane::elb::config::Target {
        id: ec2_id?.to_string(),
        port: b.host_port,
    })
}

/// What the scheduler is to look at next: the services something changed
/// for (a task of theirs moved, a request changed them), or all of them
/// (an instance changed). Waking costs the services woken, not every
/// service in every cluster.
#[derive(Default)]
pub(crate) struct Wake {
    notify: tokio::sync::Notify,
    dirty: std::sync::Mutex<Dirty>,
}

#[derive(Default)]
struct Dirty {
    all: bool,
    services: BTreeSet<String>,
}

impl Wake {
    /// Service `key` (`CLUSTER/NAME`) is to be looked at.
    pub(crate) fn service(&self, key: String) {
        if let Ok(mut d) = self.dirty.lock() {
            d.services.insert(key);
        }
        self.notify.notify_one();
    }

    /// Every service is to be looked at.
    pub(crate) fn all(&self) {
        if let Ok(mut d) = self.dirty.lock() {
            d.all = true;
        }
        self.notify.notify_one();
    }

    fn take(&self) -> Dirty {
        self.dirty
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or(Dirty {
                all: true,
                services: BTreeSet::new(),
            })
    }
}

/// How often every service is looked at, changed or not (for backoff,
/// grace periods and load balancer health).
const FULL_PASS_EVERY: Duration = Duration::from_secs(1);

/// Services looked at under one hold of the state's lock: the API's
/// requests go between batches.
const SERVICES_PER_HOLD: usize = 64;

/// Looks at the services woken whenever something changes, and at every
/// service at least every second.
pub(crate) async fn scheduler_loop(core: Weak<Core>) {
    let mut last_full: Option<tokio::time::Instant> = None;
    loop {
        let wake = {
            let Some(core) = core.upgrade() else {
                return;
            };
            let mut dirty = core.wake.take();
            if last_full.is_none_or(|t| t.elapsed() >= FULL_PASS_EVERY) {
                dirty.all = true;
            }
            if dirty.all {
                last_full = Some(tokio::time::Instant::now());
            }
            let only = (!dirty.all).then_some(dirty.services);
            if let Err(e) = reconcile(&core, only).await {
                tracing::error!("the service scheduler failed a pass, retrying: {e}");
            }
            Arc::clone(&core.wake)
        };
        let next_full = last_full.map_or_else(tokio::time::Instant::now, |t| t + FULL_PASS_EVERY);
        tokio::select! {
            () = wake.notify.notified() => {}
            () = tokio::time::sleep_until(next_full) => {}
        }
    }
}

/// One pass over the services in `only` (all if None) that are not
/// INACTIVE.
pub(crate) async fn reconcile(core: &Core, only: Option<BTreeSet<String>>) -> Result<(), ApiError> {
    let stopping = || core.shutting_down.load(std::sync::atomic::Ordering::SeqCst);
    if stopping() {
        return Ok(());
    }
    let keys: Vec<String> = {
        let state = core.state.lock().await;
        match only {
            None => state
                .services
                .iter()
                .filter(|(_, s)| s.value.status != "INACTIVE")
                .map(|(k, _)| k.clone())
                .collect(),
            Some(keys) => keys.into_iter().collect(),
        }
    };
    for batch in keys.chunks(SERVICES_PER_HOLD) {
        let mut state = core.state.lock().await;
        // Checked under the lock: shutdown stops tasks under it too, and
        // must not see the scheduler start new ones after.
        if stopping() {
            return Ok(());
        }
        for key in batch {
            let Some(svc) = state
                .services
                .get(key)
                .map(|s| &s.value)
                .filter(|s| s.status != "INACTIVE")
                .cloned()
            else {
                continue;
            };
            // One service's failure does not hold up the others.
            if let Err(e) = reconcile_one(core, &mut state, svc).await {
                tracing::error!("the service scheduler failed a pass for {key}: {e}");
            }
        }
        drop(state);
        tokio::task::yield_now().await;
    }
    // Discovered names follow the services' tasks.
    let state = core.state.lock().await;
    if !state.discovery.services.is_empty() {
        crate::core::discovery::refresh(&state, &core.fabric);
    }
    Ok(())
}

pub(crate) async fn reconcile_one(
    core: &Core,
    state: &mut State,
    mut svc: Service,
) -> Result<(), ApiError> {
    let before = svc.clone();
    let now = now();
    let cluster_name = name_of(&svc.cluster_arn).to_string();
    let Some(cluster) = state.clusters.get(&cluster_name).map(|c| c.value.clone()) else {
        return Ok(());
    };
    // Behind a load balancer, a task is healthy when its targets are
    // (and its container checks, if any, agree); until registered and
    // checked, it is not yet.
    let mut elb_failed = HashMap::new();
    // Only the running tasks of a balanced service are copied to be
    // overlaid; the rest are used as stored.
    let key = svc.key();
    let overlaid: Vec<std::borrow::Cow<'_, Task>> = state
        .tasks_of_service(&key)
        .map(|t| {
            let balancers = svc.balancers_for(t.started_by.as_deref());
            if balancers.is_empty() || !live(t) || t.last_status != "RUNNING" {
                return std::borrow::Cow::Borrowed(t);
            }
            let mut t = t.clone();
            let mut state_of = "HEALTHY";
            for lb in balancers {
                let registered = svc
                    .registered
                    .iter()
                    .find(|r| r.task == t.id() && r.target_group_arn == lb.target_group_arn);
                let health =
                    registered.and_then(|r| core.elb.target_health(&r.target_group_arn, &r.target));
                match health {
                    Some((crate::plane::elb::Health::Healthy, _)) => {}
                    Some((crate::plane::elb::Health::Unhealthy, _)) => {
                        state_of = "UNHEALTHY";
                        elb_failed.insert(
                            t.id().to_string(),
                            format!(
                                "Task failed ELB health checks in (target-group {})",
                                lb.target_group_arn
                            ),
                        );
                    }
                    _ if state_of == "HEALTHY" => state_of = "UNKNOWN",
                    _ => {}
                }
            }
            if t.health_status.as_deref().is_none_or(|h| h == "HEALTHY") {
                t.health_status = Some(state_of.into());
            }
            std::borrow::Cow::Owned(t)
        })
        .collect();
    let tasks: Vec<&Task> = overlaid.iter().map(|t| t.as_ref()).collect();
    let draining: HashSet<&str> = state
        .instances
        .values()
        .map(|i| &i.value)
        .filter(|i| i.cluster == cluster_name && i.status == "DRAINING")
        .map(|i| i.container_instance_arn.as_str())
        .collect();
    let primary_before = svc.deployments.first().map(|d| d.id.clone());
    let launch = svc.deployments.first().and_then(|d| {
        let how = LaunchSettings {
            task_definition: &d.task_definition,
            launch_type: &svc.launch_type,
            network: svc.network_configuration.as_ref(),
            providers: &svc.capacity_provider_strategy,
            platform_version: svc.platform_version.as_ref(),
            started_by: &d.id,
        };
        launch_for(state, &svc, &tasks, &how)
    });
    let eligible: Vec<&str> = match (&launch, svc.is_daemon()) {
        (Some(l), true) => daemon_instances(state, &cluster_name, l),
        _ => Vec::new(),
    };
    let world = World {
        tasks,
        draining,
        eligible,
        now,
        elb_failed,
    };
    let mut ids = || deployment_id(core);
    let mut actions = decide(&mut svc, &world, &mut ids);
    drop(world);
    if svc.deployments.first().map(|d| d.id.clone()) != primary_before {
        // A rollback: what to start is the new PRIMARY's, which the next
        // pass (at once) places with its own task definition.
        actions.retain(|a| matches!(a, Action::Stop { .. }));
        core.wake.service(key.clone());
    }

    // Carry the actions out.
    let region = svc.region().to_string();
    let name = svc.service_name.clone();
    let mut writes = Vec::new();
    // What to start, in batches of one task definition.
    let mut to_start: Vec<(Vec<Task>, crate::core::taskdef::TaskDefinition)> = Vec::new();
    let mut to_stop = Vec::new();
    let mut stopped_running = Vec::new();
    // One task set's tasks are placed per pass: placement reads the free
    // room from the state, which a second batch placed in the same pass
    // would not see taken by the first. The rest start in the next pass,
    // at once.
    let mut placed_a_set = false;
    for a in &actions {
        match a {
            Action::Stop { task, reason } => {
                let Some(t) = state.tasks.get(task).map(|t| t.value.clone()) else {
                    continue;
                };
                if t.last_status == "RUNNING" {
                    stopped_running.push(t.task_arn.clone());
                }
                let (t, running_here) = stop_request(core, t, "ServiceSchedulerInitiated", reason);
                if running_here {
                    to_stop.push(t.clone());
                }
                writes.push(Write::Task(t));
            }
            Action::Start { .. } | Action::StartOn { .. } | Action::StartSet { .. } => {
                let set_launch;
                let (l, td) = match a {
                    Action::StartSet { task_set, .. } => {
                        if placed_a_set {
                            core.wake.service(key.clone());
                            continue;
                        }
                        placed_a_set = true;
                        let Some(set) = svc.task_set_of(Some(task_set)) else {
                            continue;
                        };
                        let how = LaunchSettings {
                            task_definition: &set.task_definition,
                            launch_type: &set.launch_type,
                            network: set.network_configuration.as_ref(),
                            providers: &set.capacity_provider_strategy,
                            platform_version: set.platform_version.as_ref(),
                            started_by: &set.id,
                        };
                        let tasks: Vec<&Task> = state.tasks_of_service(&key).collect();
                        set_launch = launch_for(state, &svc, &tasks, &how);
                        (set_launch.as_ref(), set.task_definition.clone())
                    }
                    _ => (launch.as_ref(), svc.task_definition.clone()),
                };
                let Some(l) = l else {
                    svc.event_once(
                        now,
                        format!("(service {name}) cannot start tasks: its task definition {td} is not registered, or its placement rules are invalid."),
                    );
                    continue;
                };
                let (count, on) = match a {
                    Action::Start { count } | Action::StartSet { count, .. } => (*count, None),
                    Action::StartOn { instance } => (1, Some(vec![instance.clone()])),
                    Action::Stop { .. } => continue,
                };
                match place_tasks(core, state, &region, &cluster, l, count, on.as_deref()) {
                    Ok((tasks, failures)) => {
                        if tasks.len() < count {
                            svc.event_once(now, unable_to_place(&name, &failures));
                        }
                        if !tasks.is_empty() {
                            to_start.push((tasks, l.td.clone()));
                        }
                    }
                    Err(e) => svc.event_once(now, unable_to_place_because(&name, &e.message)),
                }
            }
        }
    }
    for (tasks, _) in &to_start {
        let list: Vec<String> = tasks.iter().map(|t| format!("(task {})", t.id())).collect();
        // ECS names the task set a task set's tasks were started for.
        let whose = match tasks
            .first()
            .and_then(|t| svc.task_set_of(t.started_by.as_deref()))
        {
            Some(set) => format!("service {name}, taskSet {}", set.id),
            None => format!("service {name}"),
        };
        svc.event(
            now,
            format!(
                "({whose}) has started {} tasks: {}.",
                tasks.len(),
                list.join(" ")
            ),
        );
    }
    if !stopped_running.is_empty() {
        let list: Vec<String> = stopped_running
            .iter()
            .map(|a| format!("(task {})", name_of(a)))
            .collect();
        svc.event(
            now,
            format!(
                "(service {name}) has stopped {} running tasks: {}.",
                stopped_running.len(),
                list.join(" ")
            ),
        );
    }
    // Targets follow the tasks: RUNNING tasks the service wants are
    // registered; the rest are deregistered, and drain before their task
    // is stopped.
    let mut draining_targets: HashMap<String, Vec<(String, crate::plane::elb::config::Target)>> =
        HashMap::new();
    // The load balancers' configuration is copied only for a service that
    // has targets in it.
    let balanced = !svc.load_balancers.is_empty()
        || !svc.registered.is_empty()
        || svc.task_sets.iter().any(|s| !s.load_balancers.is_empty());
    let mut elb = if balanced {
        state.elb.clone()
    } else {
        Default::default()
    };
    if balanced {
        let stopping: HashSet<&str> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Stop { task, .. } => Some(task.as_str()),
                _ => None,
            })
            .collect();
        let mut wanted = Vec::new();
        for t in state.tasks_of_service(&key) {
            if !live(t) || t.last_status != "RUNNING" || stopping.contains(t.id()) {
                continue;
            }
            for lb in svc.balancers_for(t.started_by.as_deref()) {
                let Some(tg) = elb.target_groups.get(&lb.target_group_arn) else {
                    continue;
                };
                let ec2_id = t
                    .container_instance_arn
                    .as_ref()
                    .and_then(|arn| state.instances.get(arn))
                    .and_then(|i| i.value.ec2_instance_id.as_deref());
                if let Some(target) = task_target(t, ec2_id, lb, tg) {
                    wanted.push(Registered {
                        target_group_arn: lb.target_group_arn.clone(),
                        target,
                        task: t.id().to_string(),
                    });
                }
            }
        }
        for r in &svc.registered {
            if !wanted.contains(r) {
                if let Some(tg) = elb.target_groups.get_mut(&r.target_group_arn) {
                    tg.targets.retain(|x| *x != r.target);
                }
                draining_targets
                    .entry(r.task.clone())
                    .or_default()
                    .push((r.target_group_arn.clone(), r.target.clone()));
            }
        }
        for r in &wanted {
            if let Some(tg) = elb.target_groups.get_mut(&r.target_group_arn)
                && !tg.targets.contains(&r.target)
            {
                tg.targets.push(r.target.clone());
            }
        }
        svc.registered = wanted;
    }
    let elb_changed = balanced && elb != state.elb;
    if elb_changed {
        writes.push(Write::Elb(Box::new(elb)));
    }
    if svc != before {
        writes.push(Write::Service(Box::new(svc)));
    }
    writes.extend(
        to_start
            .iter()
            .flat_map(|(tasks, _)| tasks.iter().cloned().map(Write::Task)),
    );
    if writes.is_empty() {
        return Ok(());
    }
    state.apply(core.store.as_ref(), writes).await?;
    if elb_changed {
        core.elb.sync(&state.elb);
    }
    for t in to_stop {
        // Connection draining: no new requests reach the task; it stops
        // once those in flight are done (or the deregistration delay has
        // passed).
        let targets = draining_targets.remove(t.id()).unwrap_or_default();
        stop_after_draining(core, &t, targets);
    }
    for (tasks, td) in &to_start {
        for t in tasks {
            core.agents.start(t, td);
        }
    }
    Ok(())
}

/// A task's targets taken out of their groups: what to write, and the
/// targets to wait for (see [`deregister_task`]).
pub(crate) struct Deregistered {
    pub writes: Vec<Write>,
    pub targets: Vec<(String, crate::plane::elb::config::Target)>,
}

/// Takes task `id`'s targets out of its service's target groups (as a
/// stop must before the task goes: connection draining). None if it has
/// none.
pub(crate) fn deregister_task(state: &State, id: &str) -> Option<Deregistered> {
    let mut svc = state
        .services
        .values()
        .map(|s| &s.value)
        .find(|s| s.registered.iter().any(|r| r.task == id))?
        .clone();
    let mut elb = state.elb.clone();
    let mut targets = Vec::new();
    svc.registered.retain(|r| {
        if r.task != id {
            return true;
        }
        if let Some(tg) = elb.target_groups.get_mut(&r.target_group_arn) {
            tg.targets.retain(|x| *x != r.target);
        }
        targets.push((r.target_group_arn.clone(), r.target.clone()));
        false
    });
    Some(Deregistered {
        writes: vec![Write::Service(Box::new(svc)), Write::Elb(Box::new(elb))],
        targets,
    })
}

/// Stops task `t` on its agent once `targets` have drained (no request
/// in flight, or their deregistration delay has passed).
pub(crate) fn stop_after_draining(
    core: &Core,
    t: &Task,
    targets: Vec<(String, crate::plane::elb::config::Target)>,
) {
    let instance = t.runs_on().map(String::from);
    let arn = t.task_arn.clone();
    if targets.is_empty() {
        core.agents.stop(instance.as_deref(), &arn);
        return;
    }
    let elb = Arc::clone(&core.elb);
    let agents = Arc::clone(&core.agents);
    tokio::spawn(async move {
        for (tg, target) in targets {
            elb.drained(&tg, &target).await;
        }
        agents.stop(instance.as_deref(), &arn);
    });
}

/// The ACTIVE instances of `cluster` a DAEMON task of `launch` may run on:
/// those meeting its constraints and required attributes.
pub(crate) fn daemon_instances<'a>(
    state: &'a State,
    cluster: &str,
    launch: &Launch,
) -> Vec<&'a str> {
    let required: Vec<&str> = launch
        .td
        .requires_attributes
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    state
        .instances
        .values()
        .map(|i| &i.value)
        .filter(|i| i.cluster == cluster && i.status == "ACTIVE")
        .filter(|i| {
            let c = Candidate {
                arn: i.container_instance_arn.clone(),
                instance_id: i.ec2_instance_id.clone().unwrap_or_default(),
                active: true,
                agent_connected: i.agent_connected,
                registered_at: i.registered_at,
                running_tasks: 0,
                attributes: i
                    .attributes
                    .iter()
                    .map(|a| (a.name.clone(), a.value.clone()))
                    .collect(),
                remaining_cpu: 0,
                remaining_memory: 0,
                remaining_slots: None,
                used_tcp: HashSet::new(),
                used_udp: HashSet::new(),
                groups: HashMap::new(),
            };
            required.iter().all(|r| c.attributes.contains_key(*r))
                && launch.constraints.iter().all(|k| match k {
                    Constraint::MemberOf(e) => e.matches(&c),
                    Constraint::DistinctInstance => true,
                })
        })
        .map(|i| i.container_instance_arn.as_str())
        .collect()
}

/// ECS's event when no instance could take a task, naming the closest.
pub(crate) fn unable_to_place(name: &str, failures: &[Failure]) -> String {
    if let Some(f) = failures.first().filter(|f| f.arn.is_none()) {
        // No instance to name (FARGATE capacity): ECS says why as it is.
        return format!(
            "(service {name}) was unable to place a task. Reason: {}.",
            f.reason
        );
    }
    let closest = failures.first().map(|f| {
        let id = f.arn.as_deref().map(name_of).unwrap_or("?");
        let why = match f.reason.as_str() {
            "RESOURCE:MEMORY" => "has insufficient memory available",
            "RESOURCE:CPU" => "has insufficient CPU units available",
            "RESOURCE:WASM_SLOTS" => "has no free Wasm instance slot",
            "RESOURCE:PORTS" | "RESOURCE:PORTS_UDP" => {
                "is already using a port required by your task"
            }
            "ATTRIBUTE" => "is missing an attribute required by your task",
            "INACTIVE" => "is not ACTIVE",
            "AGENT" => "has no connected agent",
            _ => "does not meet the placement constraints",
        };
        format!("The closest matching container-instance {id} {why}.")
    });
    unable_to_place_because(
        name,
        closest
            .as_deref()
            .unwrap_or("No Container Instances were found in your cluster."),
    )
}

pub(crate) fn unable_to_place_because(name: &str, reason: &str) -> String {
    format!(
        "(service {name}) was unable to place a task because no container instance met all of its requirements. Reason: {reason}"
    )
}

/// What a launch of a service's tasks is made of: its deployment's or its
/// task set's settings.
struct LaunchSettings<'a> {
    task_definition: &'a str,
    launch_type: &'a str,
    network: Option<&'a crate::core::model::NetworkConfiguration>,
    providers: &'a [crate::core::capacity::StrategyItem],
    platform_version: Option<&'a String>,
    started_by: &'a str,
}

/// The launch of `svc`'s tasks with settings `how`: None if its task
/// definition is not registered or its placement rules are invalid.
fn launch_for(
    state: &State,
    svc: &Service,
    tasks: &[&Task],
    how: &LaunchSettings<'_>,
) -> Option<Launch> {
    let td = taskdef_of(state, how.task_definition)?;
    let (constraints, strategies) =
        placement_rules(&svc.placement_constraints, &svc.placement_strategy).ok()?;
    let mut l = Launch::new(td, constraints, strategies, svc.group()).ok()?;
    l.launch_type = how.launch_type.to_string();
    l.network = how.network.cloned();
    l.providers = how.providers.to_vec();
    for t in tasks {
        if let Some(p) = &t.capacity_provider_name {
            *l.provider_counts.entry(p.clone()).or_insert(0) += 1;
        }
    }
    l.platform_version = how.platform_version.cloned();
    l.enable_execute_command = svc.enable_execute_command;
    l.started_by = Some(how.started_by.to_string());
    let cluster_name = name_of(&svc.cluster_arn);
    l.tags = crate::core::tasks::task_tags(
        &[],
        svc.propagate_tags.as_deref(),
        &l.td,
        Some((&svc.service_name, &svc.tags)),
        svc.enable_ecs_managed_tags,
        cluster_name,
    );
    Some(l)
}
