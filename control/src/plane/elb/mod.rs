//! The load balancers themselves: listeners on the host's loopback,
//! target health, request routing and counting, draining.
//!
//! Application listeners are HTTP/1.1 servers (hyper, keep-alive) that
//! evaluate the listener's rules by priority and forward to a healthy
//! target of the chosen group — round robin or least outstanding requests
//! — over pooled keep-alive connections, adding `X-Forwarded-For`,
//! `-Proto` and `-Port`. Network listeners carry TCP connections. A target
//! that deregisters drains: it gets no new requests, and leaves once its
//! in-flight ones are done or the deregistration delay has passed. If every
//! target of a group is unhealthy, requests go to all of them (AWS's fail
//! open). Traffic to a target, health checks included, passes the fabric:
//! the target's security groups must let the load balancer in. Targets are
//! kept as ECS and the API name them; only the connect maps a privileged
//! port to where it is on the host (see `skiff_runtime::ports`).

pub mod config;
mod forward;
mod health;
mod tcp;

use forward::{Upstream, serve_http};
use health::{health_loop, reap_loop};
use tcp::serve_tcp;

use bytes::Bytes;
use config::{Action, Config, Listener, Target, TargetGroup};
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use skiff_channel::fabric::{Fabric, Proto};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// A request's body on its way to a target.
type Body = BoxBody<Bytes, skiff_http_server::BodyError>;
/// A response's body on its way to the client: the target's, from a
/// connection or from a server of this process.
type Reply = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A target's health, as DescribeTargetHealth names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Initial,
    Healthy,
    Unhealthy,
}

#[derive(Debug)]
struct Live {
    health: Health,
    ok_streak: u32,
    bad_streak: u32,
    reason: Option<&'static str>,
    description: Option<String>,
    /// Deregistered at: draining since.
    draining: Option<Instant>,
}

/// One registered target, live.
#[derive(Debug)]
pub struct TargetLive {
    pub target: Target,
    pub addr: SocketAddr,
    /// How it is reached, and as whom (its load balancer's address and
    /// groups, kept current by `sync`).
    mesh: Arc<forward::MeshDial>,
    caller: RwLock<(Ipv4Addr, Option<Vec<String>>)>,
    /// Keep-alive connections to it with nothing in flight.
    idle: Mutex<Vec<Upstream>>,
    live: Mutex<Live>,
    /// `live`'s health and draining, for the request path to read without
    /// a lock: see [`TargetLive::publish`].
    fast: std::sync::atomic::AtomicU8,
    outstanding: AtomicUsize,
    requests: AtomicU64,
}

const DRAINING_BIT: u8 = 4;

impl TargetLive {
    fn reach(&self) -> forward::Reach {
        let (from, groups) = self
            .caller
            .read()
            .map(|c| c.clone())
            .unwrap_or((Ipv4Addr::LOCALHOST, None));
        forward::Reach {
            mesh: Arc::clone(&self.mesh),
            from,
            groups,
        }
    }

    fn health(&self) -> (Health, bool) {
        let v = self.fast.load(Ordering::Acquire);
        let health = match v & 3 {
            0 => Health::Initial,
            1 => Health::Healthy,
            _ => Health::Unhealthy,
        };
        (health, v & DRAINING_BIT != 0)
    }

    /// Makes `l` (just changed, under its lock) what requests see.
    fn publish(&self, l: &Live) {
        let health = match l.health {
            Health::Initial => 0,
            Health::Healthy => 1,
            Health::Unhealthy => 2,
        };
        let draining = if l.draining.is_some() {
            DRAINING_BIT
        } else {
            0
        };
        self.fast.store(health | draining, Ordering::Release);
    }

    /// Requests (application) or connections (network) sent to it.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// A target group, live.
struct Group {
    spec: Mutex<TargetGroup>,
    targets: Mutex<Vec<Arc<TargetLive>>>,
    next: AtomicUsize,
    checker: Mutex<Option<JoinHandle<()>>>,
    /// Wakes the health checks early: new targets get checked at once.
    added: tokio::sync::Notify,
    /// The algorithm is least outstanding requests (else round robin).
    least_outstanding: std::sync::atomic::AtomicBool,
    /// Requests (connections) sent to any of its targets, ever: unlike
    /// the targets' own counts, it outlives targets that leave.
    requests: AtomicU64,
}

impl Group {
    fn spec(&self) -> Option<TargetGroup> {
        self.spec.lock().ok().map(|s| s.clone())
    }

    /// A target for the next request: healthy and not draining, chosen
    /// by the group's algorithm; if none is healthy, any that is not
    /// draining (fail open).
    fn pick(&self, least_outstanding: bool) -> Option<Arc<TargetLive>> {
        let targets = self.targets.lock().ok()?;
        let healthy = |t: &TargetLive| t.health() == (Health::Healthy, false);
        let not_draining = |t: &TargetLive| !t.health().1;
        let eligible: &dyn Fn(&TargetLive) -> bool = if targets.iter().any(|t| healthy(t)) {
            &healthy
        } else {
            &not_draining
        };
        let len = targets.len();
        if len == 0 {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if least_outstanding {
            // Fewest requests in flight; ties go round robin (the search
            // starts one further each time).
            let mut best: Option<&Arc<TargetLive>> = None;
            for i in 0..len {
                let t = &targets[(n + i) % len];
                if eligible(t)
                    && best.is_none_or(|b| {
                        t.outstanding.load(Ordering::Relaxed)
                            < b.outstanding.load(Ordering::Relaxed)
                    })
                {
                    best = Some(t);
                }
            }
            return best.cloned();
        }
        let count = targets.iter().filter(|t| eligible(t)).count();
        if count == 0 {
            return None;
        }
        targets
            .iter()
            .filter(|t| eligible(t))
            .nth(n % count)
            .cloned()
    }
}

/// A listener's routing, computed when the configuration changes: rules
/// in priority order with their target groups resolved, and who the load
/// balancer is to the fabric.
struct Route {
    rules: Vec<(Vec<String>, Vec<String>, RouteAction)>,
    default: RouteAction,
    lb_address: Ipv4Addr,
    /// Its security groups (application); none for a network one.
    lb_groups: Option<Vec<String>>,
}

#[derive(Clone)]
enum RouteAction {
    Forward(Arc<Group>),
    /// Groups with their weights (none zero), and their sum.
    Weighted(Vec<(Arc<Group>, u32)>, u32),
    Fixed {
        status: u16,
        content_type: Option<String>,
        body: Option<String>,
    },
    /// A target group that no longer exists.
    Missing,
}

impl Route {
    fn action(&self, host: &str, path: &str) -> &RouteAction {
        let host = host.split(':').next().unwrap_or(host);
        self.rules
            .iter()
            .find(|(paths, hosts, _)| {
                (paths.is_empty() || paths.iter().any(|p| wildcard(p, path, false)))
                    && (hosts.is_empty() || hosts.iter().any(|h| wildcard(h, host, true)))
            })
            .map_or(&self.default, |(_, _, a)| a)
    }

    /// Is the load balancer let through to `to`?
    fn admits(&self, fabric: &Fabric, to: SocketAddr) -> bool {
        fabric.allows(self.lb_address, self.lb_groups.as_deref(), to, Proto::Tcp)
    }
}

/// What DescribeTargetHealth shows for one target.
pub struct HealthView {
    pub target: Target,
    pub health_check_port: String,
    pub state: &'static str,
    pub reason: Option<&'static str>,
    pub description: Option<String>,
}

/// A target group's counters at one moment, for its metrics.
pub struct GroupCounts {
    pub tg_arn: String,
    /// Requests (application) or connections (network) to its targets,
    /// since the group was created.
    pub requests: u64,
    /// Targets healthy and not draining.
    pub healthy: usize,
    /// Targets unhealthy and not draining.
    pub unhealthy: usize,
    /// Each registered target (`ID:PORT`) and its own count since it was
    /// registered.
    pub targets: Vec<(String, u64)>,
}

/// A listener being served: as configured, where, and its task.
type Running = (Listener, Ipv4Addr, JoinHandle<()>);

/// Every load balancer of this control plane.
pub struct Plane {
    fabric: Arc<Fabric>,
    /// How targets on other machines are reached.
    mesh: Arc<forward::MeshDial>,
    config: RwLock<Arc<Config>>,
    listeners: Mutex<HashMap<String, Running>>,
    groups: Mutex<HashMap<String, Arc<Group>>>,
    /// A reaper is removing drained targets.
    reaping: std::sync::atomic::AtomicBool,
    /// Each listener's routing.
    routes: RwLock<Arc<HashMap<String, Arc<Route>>>>,
    /// The load balancers' DNS names the fabric answers.
    names: Mutex<Vec<String>>,
    me: Weak<Plane>,
}

impl Drop for Plane {
    fn drop(&mut self) {
        if let Ok(l) = self.listeners.lock() {
            for (_, _, h) in l.values() {
                h.abort();
            }
        }
        if let Ok(g) = self.groups.lock() {
            for group in g.values() {
                if let Some(h) = group.checker.lock().ok().and_then(|mut c| c.take()) {
                    h.abort();
                }
            }
        }
    }
}

/// A listener's socket at `address:port`, for the runtime.
fn listen(address: Ipv4Addr, port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let s = std::net::TcpListener::bind((address, port))?;
    s.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(s)
}

/// Where tasks reach a load balancer listening at `address`, and what
/// its DNS name answers them: the address itself, unless it is the
/// host's 127.0.0.1 (a task's 127.0.0.1 is the task), in which case
/// [`TASK_FRONT`], where its listeners listen too.
pub fn tasks_reach(address: Ipv4Addr) -> Ipv4Addr {
    if address == Ipv4Addr::LOCALHOST {
        TASK_FRONT
    } else {
        address
    }
}

/// The loopback address load balancers on 127.0.0.1 also listen on for
/// tasks: outside the task address blocks (127.18.0.0/16, 127.64.0.0/10).
pub const TASK_FRONT: Ipv4Addr = Ipv4Addr::new(127, 17, 0, 1);

fn target_addr(fabric: &Fabric, tg: &TargetGroup, t: &Target) -> SocketAddr {
    let ip = if tg.target_type == "ip" {
        t.id.parse().unwrap_or(Ipv4Addr::LOCALHOST)
    } else {
        // An instance's published ports: at its machine's address (where
        // its agent's mesh listens); this machine's on loopback.
        fabric
            .routes()
            .into_iter()
            .find(|r| r.instance == t.id)
            .and_then(|r| r.via.parse::<SocketAddr>().ok())
            .and_then(|a| match a.ip() {
                std::net::IpAddr::V4(ip) => Some(ip),
                std::net::IpAddr::V6(_) => None,
            })
            .unwrap_or(Ipv4Addr::LOCALHOST)
    };
    SocketAddr::from((ip, t.port))
}

fn health_port(tg: &TargetGroup, t: &Target) -> u16 {
    tg.health.port.parse().unwrap_or(t.port)
}

impl Plane {
    pub fn new(fabric: Arc<Fabric>) -> Arc<Plane> {
        Arc::new_cyclic(|me| Plane {
            mesh: Arc::new(forward::MeshDial {
                fabric: Arc::clone(&fabric),
                token: RwLock::new(String::new()),
            }),
            fabric,
            config: RwLock::new(Arc::new(Config::default())),
            listeners: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
            reaping: std::sync::atomic::AtomicBool::new(false),
            routes: RwLock::new(Arc::new(HashMap::new())),
            names: Mutex::new(Vec::new()),
            me: me.clone(),
        })
    }

    /// The token other machines' agents take connections to their tasks
    /// with (targets there are reached through them).
    pub fn set_mesh_token(&self, token: &str) {
        if let Ok(mut t) = self.mesh.token.write() {
            *t = token.to_string();
        }
    }

    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .map(|c| Arc::clone(&c))
            .unwrap_or_default()
    }

    fn group(&self, arn: &str) -> Option<Arc<Group>> {
        self.groups.lock().ok()?.get(arn).cloned()
    }

    /// Makes the running load balancers match `cfg`: listeners started and
    /// stopped, targets added (initial) and drained, health checks running
    /// for the groups a load balancer uses. Must run inside tokio.
    pub fn sync(&self, cfg: &Config) {
        if let Ok(mut c) = self.config.write() {
            *c = Arc::new(cfg.clone());
        }
        let Some(me) = self.me.upgrade() else {
            return;
        };
        // Target groups and their targets.
        if let Ok(mut groups) = self.groups.lock() {
            groups.retain(|arn, g| {
                let keep = cfg.target_groups.contains_key(arn);
                if !keep && let Some(h) = g.checker.lock().ok().and_then(|mut c| c.take()) {
                    h.abort();
                }
                keep
            });
            for tg in cfg.target_groups.values() {
                let g = groups.entry(tg.arn.clone()).or_insert_with(|| {
                    Arc::new(Group {
                        spec: Mutex::new(tg.clone()),
                        targets: Mutex::new(Vec::new()),
                        next: AtomicUsize::new(0),
                        checker: Mutex::new(None),
                        added: tokio::sync::Notify::new(),
                        least_outstanding: std::sync::atomic::AtomicBool::new(false),
                        requests: AtomicU64::new(0),
                    })
                });
                if let Ok(mut s) = g.spec.lock() {
                    *s = tg.clone();
                }
                g.least_outstanding.store(
                    tg.algorithm == "least_outstanding_requests",
                    Ordering::Relaxed,
                );
                // Its load balancer, as whom targets are called.
                let caller = cfg
                    .lbs_of_group(&tg.arn)
                    .first()
                    .and_then(|lb| cfg.load_balancers.get(*lb))
                    .map(|lb| {
                        (
                            lb.address,
                            (lb.kind == "application").then(|| lb.security_groups.clone()),
                        )
                    })
                    .unwrap_or((Ipv4Addr::LOCALHOST, None));
                if let Ok(mut targets) = g.targets.lock() {
                    for t in targets.iter() {
                        if let Ok(mut c) = t.caller.write() {
                            *c = caller.clone();
                        }
                    }
                    for t in &tg.targets {
                        match targets.iter().find(|x| x.target == *t) {
                            Some(existing) => {
                                // Registered again while draining: back in.
                                if let Ok(mut l) = existing.live.lock() {
                                    l.draining = None;
                                    existing.publish(&l);
                                }
                            }
                            None => {
                                g.added.notify_one();
                                let live = Live {
                                    health: if tg.health.enabled {
                                        Health::Initial
                                    } else {
                                        Health::Healthy
                                    },
                                    ok_streak: 0,
                                    bad_streak: 0,
                                    reason: tg
                                        .health
                                        .enabled
                                        .then_some("Elb.InitialHealthChecking"),
                                    description: None,
                                    draining: None,
                                };
                                let t = TargetLive {
                                    target: t.clone(),
                                    addr: target_addr(&self.fabric, tg, t),
                                    mesh: Arc::clone(&self.mesh),
                                    caller: RwLock::new(caller.clone()),
                                    idle: Mutex::new(Vec::new()),
                                    fast: std::sync::atomic::AtomicU8::new(0),
                                    live: Mutex::new(live),
                                    outstanding: AtomicUsize::new(0),
                                    requests: AtomicU64::new(0),
                                };
                                if let Ok(l) = t.live.lock() {
                                    t.publish(&l);
                                }
                                targets.push(Arc::new(t));
                            }
                        }
                    }
                    for t in targets.iter() {
                        if !tg.targets.contains(&t.target)
                            && let Ok(mut l) = t.live.lock()
                            && l.draining.is_none()
                        {
                            l.draining = Some(Instant::now());
                            t.publish(&l);
                        }
                    }
                }
                let in_use = !cfg.lbs_of_group(&tg.arn).is_empty() && tg.health.enabled;
                if let Ok(mut checker) = g.checker.lock() {
                    match (in_use, checker.as_ref()) {
                        (true, None) => {
                            *checker = Some(tokio::spawn(health_loop(
                                Arc::downgrade(&me),
                                tg.arn.clone(),
                            )));
                        }
                        (false, Some(h)) => {
                            h.abort();
                            *checker = None;
                        }
                        _ => {}
                    }
                }
            }
        }
        // Routing, with the groups as they now are.
        if let Ok(groups) = self.groups.lock() {
            let resolve = |a: &Action| match a {
                Action::Forward(tg) => groups.get(tg).map_or(RouteAction::Missing, |g| {
                    RouteAction::Forward(Arc::clone(g))
                }),
                Action::Weighted(list) => {
                    let live: Vec<(Arc<Group>, u32)> = list
                        .iter()
                        .filter(|(_, w)| *w > 0)
                        .filter_map(|(tg, w)| Some((Arc::clone(groups.get(tg)?), *w)))
                        .collect();
                    let total = live.iter().map(|(_, w)| w).sum();
                    if total == 0 {
                        RouteAction::Missing
                    } else {
                        RouteAction::Weighted(live, total)
                    }
                }
                Action::Fixed {
                    status,
                    content_type,
                    body,
                } => RouteAction::Fixed {
                    status: *status,
                    content_type: content_type.clone(),
                    body: body.clone(),
                },
            };
            let mut routes = HashMap::new();
            for l in cfg.listeners.values() {
                let Some(lb) = cfg.load_balancers.get(&l.lb_arn) else {
                    continue;
                };
                let mut rules: Vec<&config::Rule> = cfg
                    .rules
                    .values()
                    .filter(|r| r.listener_arn == l.arn)
                    .collect();
                rules.sort_by_key(|r| r.priority);
                routes.insert(
                    l.arn.clone(),
                    Arc::new(Route {
                        rules: rules
                            .into_iter()
                            .map(|r| (r.paths.clone(), r.hosts.clone(), resolve(&r.action)))
                            .collect(),
                        default: resolve(&l.default_action),
                        lb_address: lb.address,
                        lb_groups: (lb.kind == "application").then(|| lb.security_groups.clone()),
                    }),
                );
            }
            if let Ok(mut r) = self.routes.write() {
                *r = Arc::new(routes);
            }
        }
        // Tasks resolve the load balancers' DNS names.
        if let Ok(mut names) = self.names.lock() {
            for old in names.iter() {
                if !cfg.load_balancers.values().any(|lb| &lb.dns_name == old) {
                    self.fabric.set_name(old, Vec::new());
                }
            }
            *names = cfg
                .load_balancers
                .values()
                .map(|lb| lb.dns_name.clone())
                .collect();
            for lb in cfg.load_balancers.values() {
                self.fabric
                    .set_name(&lb.dns_name, vec![tasks_reach(lb.address)]);
            }
        }
        // Drained targets leave in the background (one reaper at a time).
        if !self.reaping.swap(true, Ordering::SeqCst) {
            tokio::spawn(reap_loop(Arc::downgrade(&me)));
        }
        // Listeners.
        if let Ok(mut running) = self.listeners.lock() {
            running.retain(|arn, (l, addr, h)| {
                let same = cfg.listeners.get(arn).is_some_and(|c| {
                    c.port == l.port
                        && cfg.load_balancers.get(&c.lb_arn).map(|lb| lb.address) == Some(*addr)
                });
                if !same {
                    h.abort();
                }
                same
            });
            for l in cfg.listeners.values() {
                if running.contains_key(&l.arn) {
                    continue;
                }
                let Some(lb) = cfg.load_balancers.get(&l.lb_arn) else {
                    continue;
                };
                let bound = listen(lb.address, l.port);
                let socket = match bound {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(listener = %l.arn, "cannot listen on {}:{}: {e}", lb.address, l.port);
                        continue;
                    }
                };
                // On the host's 127.0.0.1, which a task cannot reach (its
                // 127.0.0.1 is itself), the listener also listens where
                // tasks find it by the load balancer's DNS name.
                let front = tasks_reach(lb.address);
                let for_tasks = (front != lb.address)
                    .then(|| {
                        listen(front, l.port)
                            .map_err(|e| {
                                tracing::warn!(listener = %l.arn, "tasks cannot reach it by name: cannot listen on {front}:{}: {e}", l.port);
                            })
                            .ok()
                    })
                    .flatten();
                let (weak, arn, port, http) = (
                    Arc::downgrade(&me),
                    l.arn.clone(),
                    l.port,
                    lb.kind == "application",
                );
                let handle = tokio::spawn(async move {
                    let serve = |socket| {
                        let (weak, arn) = (weak.clone(), arn.clone());
                        async move {
                            if http {
                                serve_http(weak, arn, port, socket).await;
                            } else {
                                serve_tcp(weak, arn, socket).await;
                            }
                        }
                    };
                    match for_tasks {
                        Some(second) => {
                            tokio::join!(serve(socket), serve(second));
                        }
                        None => serve(socket).await,
                    }
                });
                running.insert(l.arn.clone(), (l.clone(), lb.address, handle));
            }
        }
    }

    /// Every target of a group, with its health and request count.
    pub fn health(&self, tg: &TargetGroup, cfg: &Config) -> Vec<HealthView> {
        let in_use = !cfg.lbs_of_group(&tg.arn).is_empty();
        let Some(g) = self.group(&tg.arn) else {
            return Vec::new();
        };
        let Ok(targets) = g.targets.lock() else {
            return Vec::new();
        };
        targets
            .iter()
            .map(|t| {
                let live = t.live.lock();
                let (state, reason, description) = match live.as_deref() {
                    Ok(l) if l.draining.is_some() => (
                        "draining",
                        Some("Target.DeregistrationInProgress"),
                        Some("Target deregistration is in progress".to_string()),
                    ),
                    Ok(_) if !in_use => (
                        "unused",
                        Some("Target.NotInUse"),
                        Some("Target group is not configured to receive traffic from the load balancer".to_string()),
                    ),
                    Ok(l) => match l.health {
                        Health::Initial => ("initial", l.reason, Some("Initial health checks in progress".into())),
                        Health::Healthy => ("healthy", None, None),
                        Health::Unhealthy => ("unhealthy", l.reason, l.description.clone()),
                    },
                    Err(_) => ("unavailable", None, None),
                };
                HealthView {
                    target: t.target.clone(),
                    health_check_port: health_port(tg, &t.target).to_string(),
                    state,
                    reason,
                    description,
                }
            })
            .collect()
    }

    /// Every target group's counters, for the metrics.
    pub fn counts(&self) -> Vec<GroupCounts> {
        let Ok(groups) = self.groups.lock() else {
            return Vec::new();
        };
        groups
            .iter()
            .map(|(arn, g)| {
                let targets = g.targets.lock().map(|t| t.clone()).unwrap_or_default();
                let live = |h: Health| targets.iter().filter(|t| t.health() == (h, false)).count();
                GroupCounts {
                    tg_arn: arn.clone(),
                    requests: g.requests.load(Ordering::Relaxed),
                    healthy: live(Health::Healthy),
                    unhealthy: live(Health::Unhealthy),
                    targets: targets
                        .iter()
                        .map(|t| (format!("{}:{}", t.target.id, t.target.port), t.requests()))
                        .collect(),
                }
            })
            .collect()
    }

    /// The health of one registered target (None if it is not there).
    pub fn target_health(&self, tg_arn: &str, target: &Target) -> Option<(Health, bool)> {
        let g = self.group(tg_arn)?;
        let targets = g.targets.lock().ok()?;
        targets
            .iter()
            .find(|t| t.target == *target)
            .map(|t| t.health())
    }

    /// Waits until a deregistered target has drained (no requests in
    /// flight) or its deregistration delay has passed.
    pub async fn drained(&self, tg_arn: &str, target: &Target) {
        loop {
            let Some(g) = self.group(tg_arn) else {
                return;
            };
            let delay = g.spec().map_or(0, |s| s.deregistration_delay);
            let state = g.targets.lock().ok().and_then(|ts| {
                ts.iter().find(|t| t.target == *target).map(|t| {
                    let since = t.live.lock().ok().and_then(|l| l.draining);
                    (since, t.outstanding.load(Ordering::Relaxed))
                })
            });
            match state {
                None => return,
                Some((Some(since), busy))
                    if busy == 0 || since.elapsed() >= Duration::from_secs(delay) =>
                {
                    return;
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    fn route(&self, listener_arn: &str) -> Option<Arc<Route>> {
        self.routes.read().ok()?.get(listener_arn).cloned()
    }

    /// Is the load balancer of `listener_arn` let through to `to`?
    fn admits(&self, listener_arn: &str, to: SocketAddr) -> bool {
        self.route(listener_arn)
            .is_some_and(|r| r.admits(&self.fabric, to))
    }
}

/// ELB's wildcards: `*` any run of characters, `?` exactly one.
fn wildcard(pattern: &str, s: &str, fold: bool) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = if fold {
        (
            pattern.to_lowercase().chars().collect(),
            s.to_lowercase().chars().collect(),
        )
    } else {
        (pattern.chars().collect(), s.chars().collect())
    };
    // Iterative matching with backtracking to the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < s.len() {
        if i < p.len() && (p[i] == '?' || p[i] == s[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(st) = star {
            i = st + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    while i < p.len() && p[i] == '*' {
        i += 1;
    }
    i == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use forward::strip_hop_by_hop;

    #[test]
    fn hop_by_hop_headers_stay_on_their_hop() {
        let mut h = http::HeaderMap::new();
        for (n, v) in [
            ("connection", "close, x-trace"),
            ("x-trace", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("host", "shop.example"),
            ("x-forwarded-for", "127.0.0.1"),
        ] {
            h.insert(n, http::HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["host", "x-forwarded-for"]);
    }

    #[test]
    fn elb_wildcards() {
        assert!(wildcard("/api/*", "/api/users", false));
        assert!(wildcard("/api/*", "/api/", false));
        assert!(!wildcard("/api/*", "/apix", false));
        assert!(wildcard("/img/?.png", "/img/a.png", false));
        assert!(!wildcard("/img/?.png", "/img/ab.png", false));
        assert!(wildcard("*", "", false));
        assert!(
            !wildcard("/API/*", "/api/x", false),
            "paths are case-sensitive"
        );
        assert!(
            wildcard("*.Example.com", "api.example.COM", true),
            "hosts are not"
        );
        assert!(wildcard("a*b*c", "aXXbYYc", false));
        assert!(!wildcard("a*b*c", "aXXbYY", false));
    }
}
