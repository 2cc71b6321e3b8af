//! Joining a cluster over the network, as ECS's agent does: register the
//! machine as a container instance (`RegisterContainerInstance`), find the
//! channel (`DiscoverPollEndpoint`), and hold one WebSocket to it
//! (`skiff_channel::wire`) for as long as the agent runs, reconnecting
//! whenever it drops.
//!
//! The [`Agent`] itself is the same as inside `skiff serve`: it is served
//! an in-process link, and this module carries that link over the
//! network — payloads in; state changes out, each numbered and kept until
//! the control plane acknowledges it, so reports made while the control
//! plane is away are delivered, in order, when it is back. Every
//! connection opens with the control plane's list of what this instance
//! should run: the agent starts what it lacks (unless it ran it before)
//! and stops what is not listed.

use crate::Agent;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use skiff_channel::fabric::Fabric;
use skiff_channel::link::ControlEnd;
use skiff_channel::messages::{FromAgent, ToAgent};
use skiff_channel::sigv4::{self, Signer};
use skiff_channel::wire::{self, Down, Up, Welcome};
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// How an agent joins its cluster.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    /// The control plane's API (`http://HOST:PORT`).
    pub endpoint: String,
    /// The cluster, by name.
    pub cluster: String,
    /// The region requests are signed for.
    pub region: String,
    /// An access key and its secret, when the control plane requires
    /// signatures.
    pub credentials: Option<(String, String)>,
    /// CPU units and memory (MiB) the instance offers.
    pub cpu: u32,
    pub memory: u32,
    /// Host ports no task may take.
    pub reserved_ports: Vec<u16>,
    /// Containers it may run at once (its runtime's slots), if counted.
    pub slots: Option<u32>,
    /// Attributes (name, value) it registers with.
    pub attributes: Vec<(String, Option<String>)>,
    /// Where the instance's identity is kept across restarts (its EC2-style
    /// id and its container instance ARN), as the ECS agent keeps its.
    pub state_file: PathBuf,
}

/// Why joining failed for good (a transport error is retried instead).
#[derive(Debug)]
pub struct JoinError(pub String);

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JoinError {}

/// A call's failure: the API refused it (its `__type` and message), or no
/// answer came.
#[derive(Debug)]
enum CallError {
    Refused { kind: String, message: String },
    Transport(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Refused { kind, message } => write!(f, "{kind}: {message}"),
            CallError::Transport(m) => f.write_str(m),
        }
    }
}

/// What the instance's state file holds.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Identity {
    ec2_instance_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    container_instance_arn: Option<String>,
    #[serde(default)]
    cluster: String,
}

/// A registered instance, and where its channel is.
#[derive(Debug, Clone)]
pub struct Joined {
    pub container_instance_arn: String,
    pub ec2_instance_id: String,
    /// The WebSocket URL of the channel.
    pub channel: String,
    /// The cluster's registry (`host:port`), as DiscoverPollEndpoint told.
    pub registry: Option<String>,
    /// The block its tasks' addresses come from, as the control plane gave
    /// it (the instance's `skiff.task-addresses` attribute).
    pub task_addresses: Option<String>,
}

/// The control plane's API, as the agent calls it.
struct Api {
    http: reqwest::Client,
    config: JoinConfig,
    host: String,
}

impl Api {
    fn new(config: &JoinConfig) -> Result<Api, JoinError> {
        let url = reqwest::Url::parse(&config.endpoint).map_err(|e| {
            JoinError(format!(
                "--endpoint {:?} is not a URL: {e}",
                config.endpoint
            ))
        })?;
        if url.scheme() != "http" {
            return Err(JoinError(format!(
                "--endpoint {:?} must be an http:// URL: skiff's API is plain HTTP (put TLS in front of it on a network you do not trust)",
                config.endpoint
            )));
        }
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => {
                return Err(JoinError(format!(
                    "--endpoint {:?} names no host",
                    config.endpoint
                )));
            }
        };
        skiff_registry::remote::ensure_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| JoinError(format!("cannot build an HTTP client: {e}")))?;
        Ok(Api {
            http,
            config: config.clone(),
            host,
        })
    }

    fn signer(&self) -> Signer<'_> {
        let (key, secret) = self
            .config
            .credentials
            .as_ref()
            .map(|(k, s)| (k.as_str(), s.as_str()))
            .unwrap_or(("skiff", "skiff"));
        Signer {
            access_key: key,
            secret,
            region: &self.config.region,
            service: "ecs",
        }
    }

    async fn ecs(&self, op: &str, body: Value) -> Result<Value, CallError> {
        let target = format!("AmazonEC2ContainerServiceV20141113.{op}");
        self.call("ecs", &target, body).await
    }

    async fn call(&self, service: &str, target: &str, body: Value) -> Result<Value, CallError> {
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let content_type = "application/x-amz-json-1.1";
        let signed = sigv4::sign(
            Signer {
                service,
                ..self.signer()
            },
            "POST",
            "/",
            "",
            &[
                ("host", &self.host),
                ("content-type", content_type),
                ("x-amz-target", target),
            ],
            &bytes,
            unix_now(),
        );
        let mut req = self
            .http
            .post(&self.config.endpoint)
            .header("content-type", content_type)
            .header("x-amz-target", target);
        for (n, v) in signed {
            req = req.header(n, v);
        }
        let resp = req.body(bytes).send().await.map_err(|e| {
            CallError::Transport(format!(
                "cannot reach the control plane at {}: {e}",
                self.config.endpoint
            ))
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| {
            CallError::Transport(format!("the control plane's answer was cut short: {e}"))
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|_| {
            CallError::Transport(format!(
                "{} answered HTTP {status} with something other than AWS JSON",
                self.config.endpoint
            ))
        })?;
        if status.is_success() {
            return Ok(v);
        }
        if status.is_server_error() {
            return Err(CallError::Transport(format!(
                "the control plane failed: {}",
                v["message"]
            )));
        }
        Err(CallError::Refused {
            kind: v["__type"]
                .as_str()
                .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
                .unwrap_or_else(|| format!("HTTP {status}")),
            message: v["message"].as_str().unwrap_or_default().to_string(),
        })
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A random hex string of `n` digits (ids, sessions).
fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n.div_ceil(2)];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: the clock and pid still make it unlikely to repeat.
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        bytes = seed.bytes().rev().take(n.div_ceil(2)).collect();
    }
    let mut s: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    s.truncate(n);
    s
}

fn load_identity(path: &std::path::Path) -> Result<Identity, JoinError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            JoinError(format!(
                "{} is damaged ({e}): remove it to register as a new instance",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Identity {
            ec2_instance_id: format!("i-{}", random_hex(17)),
            ..Identity::default()
        }),
        Err(e) => Err(JoinError(format!("cannot read {}: {e}", path.display()))),
    }
}

fn save_identity(path: &std::path::Path, id: &Identity) -> Result<(), JoinError> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&tmp, serde_json::to_vec_pretty(id).unwrap_or_default())?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| JoinError(format!("cannot write {}: {e}", path.display())))
}

/// Registers this machine as a container instance of the cluster (again,
/// if it was before: its record is updated) and finds its channel. A
/// control plane that cannot be reached is tried again every few seconds;
/// a refusal (bad credentials, no such cluster) is an error.
pub async fn register(config: &JoinConfig) -> Result<Joined, JoinError> {
    let api = Api::new(config)?;
    let mut identity = load_identity(&config.state_file)?;
    if identity.cluster != config.cluster {
        // Another cluster: a new instance there.
        identity.container_instance_arn = None;
        identity.cluster = config.cluster.clone();
    }
    let mut resources = vec![
        json!({"name": "CPU", "type": "INTEGER", "integerValue": config.cpu}),
        json!({"name": "MEMORY", "type": "INTEGER", "integerValue": config.memory}),
        json!({"name": "PORTS", "type": "STRINGSET",
               "stringSetValue": config.reserved_ports.iter().map(u16::to_string).collect::<Vec<_>>()}),
        json!({"name": "PORTS_UDP", "type": "STRINGSET", "stringSetValue": []}),
    ];
    if let Some(slots) = config.slots {
        resources.push(json!({"name": "WASM_SLOTS", "type": "INTEGER", "integerValue": slots}));
    }
    let attributes: Vec<Value> = config
        .attributes
        .iter()
        .map(|(n, v)| match v {
            Some(v) => json!({"name": n, "value": v}),
            None => json!({"name": n}),
        })
        .collect();
    let document = json!({
        "instanceId": identity.ec2_instance_id,
        "region": config.region,
        "instanceType": "skiff.agent",
    });
    let mut delay = Duration::from_millis(200);
    let (arn, task_addresses) = loop {
        let mut body = json!({
            "cluster": config.cluster,
            "instanceIdentityDocument": document.to_string(),
            "totalResources": resources,
            "attributes": attributes,
            "versionInfo": {
                "agentVersion": env!("CARGO_PKG_VERSION"),
                "agentHash": "skiff",
                "dockerVersion": "wasmtime-48",
            },
        });
        if let Some(arn) = &identity.container_instance_arn {
            body["containerInstanceArn"] = json!(arn);
        }
        match api.ecs("RegisterContainerInstance", body).await {
            Ok(v) => match v["containerInstance"]["containerInstanceArn"].as_str() {
                Some(arn) => {
                    let block = v["containerInstance"]["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|a| a["name"] == "skiff.task-addresses")
                        .and_then(|a| a["value"].as_str())
                        .map(String::from);
                    break (arn.to_string(), block);
                }
                None => {
                    return Err(JoinError(
                        "RegisterContainerInstance answered no containerInstanceArn".into(),
                    ));
                }
            },
            Err(CallError::Refused { message, .. })
                if identity.container_instance_arn.is_some() && message.contains("not found") =>
            {
                // Deregistered meanwhile: this machine joins as a new one.
                tracing::warn!("this instance was deregistered: registering as a new one");
                identity.container_instance_arn = None;
            }
            Err(CallError::Refused { kind, message }) => {
                return Err(JoinError(format!(
                    "the control plane refused to register this instance: {kind}: {message}"
                )));
            }
            Err(CallError::Transport(e)) => {
                tracing::warn!("{e}; trying again in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    };
    identity.container_instance_arn = Some(arn.clone());
    save_identity(&config.state_file, &identity)?;
    let (discovered, registry) = loop {
        match api
            .ecs(
                "DiscoverPollEndpoint",
                json!({"cluster": config.cluster, "containerInstance": arn}),
            )
            .await
        {
            Ok(v) => {
                break (
                    v["endpoint"]
                        .as_str()
                        .unwrap_or(&config.endpoint)
                        .to_string(),
                    v["skiffRegistry"].as_str().map(String::from),
                );
            }
            Err(CallError::Refused { kind, message }) => {
                return Err(JoinError(format!(
                    "DiscoverPollEndpoint: {kind}: {message}"
                )));
            }
            Err(CallError::Transport(e)) => {
                tracing::warn!("{e}; trying again in {delay:?}");
                tokio::time::sleep(delay).await;
            }
        }
    };
    let base = discovered.trim_end_matches('/');
    let channel = match base.strip_prefix("http://") {
        Some(rest) => format!("ws://{rest}{}", wire::PATH),
        None => {
            return Err(JoinError(format!(
                "DiscoverPollEndpoint answered {discovered:?}, not an http:// URL"
            )));
        }
    };
    Ok(Joined {
        container_instance_arn: arn,
        ec2_instance_id: identity.ec2_instance_id,
        channel,
        registry,
        task_addresses,
    })
}

/// CloudWatch Logs of the control plane, over its API, as ECS's agent
/// writes containers' awslogs output: CreateLogGroup (with
/// `awslogs-create-group`), CreateLogStream, PutLogEvents. The calls are
/// made on a thread of their own; a caller on the async runtime waits in
/// `block_in_place`.
pub struct ApiLogs {
    calls: std::sync::Mutex<std::sync::mpsc::Sender<LogCall>>,
}

type LogCall = (
    String,
    Value,
    std::sync::mpsc::Sender<Result<Value, CallError>>,
);

impl ApiLogs {
    pub fn new(config: &JoinConfig) -> Result<ApiLogs, JoinError> {
        let api = Api::new(config)?;
        let (tx, rx) = std::sync::mpsc::channel::<LogCall>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| JoinError(format!("cannot start the log writer: {e}")))?;
        std::thread::Builder::new()
            .name("skiff-logs".into())
            .spawn(move || {
                while let Ok((op, body, reply)) = rx.recv() {
                    let target = format!("Logs_20140328.{op}");
                    let _ = reply.send(rt.block_on(api.call("logs", &target, body)));
                }
            })
            .map_err(|e| JoinError(format!("cannot start the log writer: {e}")))?;
        Ok(ApiLogs {
            calls: std::sync::Mutex::new(tx),
        })
    }

    fn call(&self, op: &str, body: Value) -> Result<Value, CallError> {
        let (reply, answer) = std::sync::mpsc::channel();
        let sent = self
            .calls
            .lock()
            .map(|c| c.send((op.to_string(), body, reply)).is_ok())
            .unwrap_or(false);
        if !sent {
            return Err(CallError::Transport("the log writer is gone".into()));
        }
        let wait = || {
            answer
                .recv()
                .unwrap_or_else(|_| Err(CallError::Transport("the log writer is gone".into())))
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }
}

impl skiff_channel::logs::LogDestination for ApiLogs {
    fn open_stream(
        &self,
        group: &str,
        stream: &str,
        create_group: bool,
    ) -> Result<(), skiff_channel::logs::OpenStreamError> {
        use skiff_channel::logs::OpenStreamError;
        let exists = |e: &CallError| matches!(e, CallError::Refused { kind, .. } if kind == "ResourceAlreadyExistsException");
        if create_group
            && let Err(e) = self.call("CreateLogGroup", json!({"logGroupName": group}))
            && !exists(&e)
        {
            return Err(match e {
                CallError::Refused { kind, message } if kind == "InvalidParameterException" => {
                    OpenStreamError::InvalidGroupName(message)
                }
                other => OpenStreamError::Failed(other.to_string()),
            });
        }
        match self.call(
            "CreateLogStream",
            json!({"logGroupName": group, "logStreamName": stream}),
        ) {
            Ok(_) => Ok(()),
            Err(e) if exists(&e) => Ok(()),
            Err(CallError::Refused { kind, .. }) if kind == "ResourceNotFoundException" => {
                Err(OpenStreamError::NoSuchGroup(group.to_string()))
            }
            Err(e) => Err(OpenStreamError::Failed(e.to_string())),
        }
    }

    fn put_events(
        &self,
        group: &str,
        stream: &str,
        events: &[(i64, String)],
    ) -> Result<(), String> {
        // Within PutLogEvents' limits: 10,000 events, 1 MiB.
        let mut start = 0;
        while start < events.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < events.len()
                && end - start < 10_000
                && bytes + events[end].1.len() + 26 <= 1_048_576
            {
                bytes += events[end].1.len() + 26;
                end += 1;
            }
            let end = end.max(start + 1);
            let batch: Vec<Value> = events[start..end]
                .iter()
                .map(|(t, m)| json!({"timestamp": t, "message": m}))
                .collect();
            self.call(
                "PutLogEvents",
                json!({"logGroupName": group, "logStreamName": stream, "logEvents": batch}),
            )
            .map_err(|e| e.to_string())?;
            start = end;
        }
        Ok(())
    }
}

/// Reports sent but not yet acknowledged, oldest first.
#[derive(Default)]
struct Outbox {
    next: u64,
    unacked: VecDeque<(u64, FromAgent)>,
}

impl Outbox {
    /// Keeps `change` until acknowledged: its number.
    fn push(&mut self, change: FromAgent) -> u64 {
        self.next += 1;
        self.unacked.push_back((self.next, change));
        self.next
    }

    fn acked(&mut self, seq: u64) {
        while self.unacked.front().is_some_and(|(s, _)| *s <= seq) {
            self.unacked.pop_front();
        }
    }
}

/// What the agent holds that its channel keeps current: the fabric's
/// rules, and the credentials of the cluster's registry.
pub struct Held {
    pub fabric: Arc<Fabric>,
    pub puller: Arc<skiff_registry::images::Puller>,
    /// Task connections between machines, and where other machines reach
    /// this one's (`host:port`).
    pub mesh: Option<(Arc<crate::mesh::MeshNode>, SocketAddr)>,
}

impl Held {
    fn registry_access(&self, access: &wire::RegistryAccess) {
        self.puller.set_credentials(
            &access.address,
            skiff_registry::remote::Credentials {
                username: access.username.clone(),
                password: access.password.clone(),
            },
        );
    }
}

/// Why one connection ended.
enum Ended {
    /// Dropped, refused or silent: connect again (at once if it had been
    /// welcomed).
    Lost { why: String, welcomed: bool },
    /// The agent is shutting down and everything is delivered.
    Done,
    /// The control plane no longer knows the instance: register again.
    Unknown(String),
}

/// The longest wait between tries to reconnect: well under the shortest
/// timeout a control plane takes an agent for lost after (2 s), so a
/// control plane that restarts finds its agents back in time.
const RECONNECT_AT_MOST: Duration = Duration::from_millis(500);

/// Serves the agent's channel over the network until `shutdown` resolves
/// and the agent's last reports are delivered (or `drain` passed):
/// connects, reconciles, carries payloads and reports, and reconnects
/// after any loss (every 100 to 500 ms).
pub async fn serve(
    config: &JoinConfig,
    mut joined: Joined,
    agent: Agent,
    held: Held,
    mut end: ControlEnd,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), JoinError> {
    let api = Api::new(config)?;
    let session = random_hex(32);
    let mut outbox = Outbox::default();
    let mut delay = Duration::from_millis(100);
    loop {
        let ended = connect_once(
            &api,
            &joined,
            &session,
            &agent,
            &held,
            &mut end,
            &mut outbox,
            shutdown.clone(),
        )
        .await;
        match ended {
            Ended::Done => return Ok(()),
            Ended::Unknown(why) => {
                tracing::warn!("{why}: registering again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RECONNECT_AT_MOST);
                joined = register(config).await?;
            }
            Ended::Lost { why, welcomed } => {
                if welcomed {
                    delay = Duration::from_millis(100);
                }
                tracing::warn!(
                    "the channel to the control plane is down ({why}); reconnecting in {delay:?}"
                );
                if *shutdown.borrow() && agent.running_tasks().is_empty() {
                    // Shutting down with no one to tell: reports stay undelivered.
                    return Ok(());
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RECONNECT_AT_MOST);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn connect_once(
    api: &Api,
    joined: &Joined,
    session: &str,
    agent: &Agent,
    held: &Held,
    end: &mut ControlEnd,
    outbox: &mut Outbox,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Ended {
    let cluster_arn = joined
        .container_instance_arn
        .split_once(":container-instance/")
        .map(|(prefix, rest)| {
            format!(
                "{prefix}:cluster/{}",
                rest.split('/').next().unwrap_or_default()
            )
        })
        .unwrap_or_default();
    let mesh = held.mesh.as_ref().map(|(_, at)| at.to_string());
    let query = wire::query(
        &cluster_arn,
        &joined.container_instance_arn,
        session,
        mesh.as_deref(),
    );
    let url = format!("{}?{query}", joined.channel);
    let Ok(mut request) = url.as_str().into_client_request() else {
        return Ended::Lost {
            why: format!("{url} is not a WebSocket URL"),
            welcomed: false,
        };
    };
    let host = request
        .uri()
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let signed = sigv4::sign(
        api.signer(),
        "GET",
        wire::PATH,
        &query,
        &[("host", &host)],
        b"",
        unix_now(),
    );
    for (n, v) in signed {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(n.as_bytes()),
            http::HeaderValue::from_str(&v),
        ) {
            request.headers_mut().insert(n, v);
        }
    }
    let connected = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(request),
    )
    .await;
    let ws = match connected {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
            let body = resp
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .to_string();
            let status = resp.status();
            if status.is_client_error() {
                if body.contains("not registered") {
                    return Ended::Unknown(format!(
                        "the control plane does not know this instance: {body}"
                    ));
                }
                // Bad credentials, a refused instance: worth saying loudly,
                // and trying again (an operator may fix it).
                tracing::error!("the control plane refused the channel: HTTP {status}: {body}");
            }
            return Ended::Lost {
                why: format!("HTTP {status}"),
                welcomed: false,
            };
        }
        Ok(Err(e)) => {
            return Ended::Lost {
                why: e.to_string(),
                welcomed: false,
            };
        }
        Err(_) => {
            return Ended::Lost {
                why: "no answer within 10s".into(),
                welcomed: false,
            };
        }
    };
    let (mut sink, mut stream) = ws.split();
    // The welcome first.
    let welcome: Welcome = match tokio::time::timeout(Duration::from_secs(10), stream.next()).await
    {
        Ok(Some(Ok(Message::Text(t)))) => match wire::decode::<Down>(&t) {
            Ok(Down::Welcome(w)) => *w,
            Ok(_) => {
                return Ended::Lost {
                    why: "the control plane did not open with a welcome".into(),
                    welcomed: false,
                };
            }
            Err(e) => {
                return Ended::Lost {
                    why: e,
                    welcomed: false,
                };
            }
        },
        _ => {
            return Ended::Lost {
                why: "no welcome".into(),
                welcomed: false,
            };
        }
    };
    tracing::info!(instance = %welcome.container_instance_arn, tasks = welcome.tasks.len(), "connected to the control plane");
    let timeout = Duration::from_millis(welcome.timeout_ms.max(1000));
    outbox.acked(welcome.acked);
    if let Some(access) = &welcome.registry {
        held.registry_access(access);
    }
    if let Some((node, _)) = &held.mesh {
        node.set_token(&welcome.mesh_token);
    }
    // Reconcile: what is listed runs (the agent ignores what it runs or
    // ran), what is not is stopped.
    let listed: HashSet<String> = welcome
        .tasks
        .iter()
        .map(|t| t.task.task_arn.clone())
        .collect();
    for arn in agent.running_tasks() {
        if !listed.contains(&arn) {
            let _ = end.to_agent.send(ToAgent::StopTask { task_arn: arn });
        }
    }
    for t in welcome.tasks {
        let _ = end.to_agent.send(ToAgent::StartTask(Box::new(t)));
    }
    // What was not acknowledged goes again, in order.
    for (seq, change) in &outbox.unacked {
        let frame = wire::encode(&Up::Report {
            seq: *seq,
            change: Box::new(change.clone()),
        });
        if sink.send(Message::text(frame)).await.is_err() {
            return Ended::Lost {
                why: "the connection closed".into(),
                welcomed: true,
            };
        }
    }
    let mut tick = tokio::time::interval(wire::HEARTBEAT);
    let mut last_heard = Instant::now();
    let mut stopping = false;
    loop {
        if stopping
            && agent.running_tasks().is_empty()
            && outbox.unacked.is_empty()
            && end.from_agent.is_empty()
        {
            let _ = sink.close().await;
            return Ended::Done;
        }
        let out = tokio::select! {
            Some(change) = end.from_agent.recv() => {
                let seq = outbox.push(change.clone());
                Up::Report { seq, change: Box::new(change) }
            }
            Ok(()) = shutdown.changed(), if !stopping => {
                if *shutdown.borrow() {
                    stopping = true;
                    for arn in agent.running_tasks() {
                        let _ = end.to_agent.send(ToAgent::StopTask { task_arn: arn });
                    }
                }
                continue;
            }
            _ = tick.tick() => {
                if last_heard.elapsed() > timeout {
                    return Ended::Lost { why: format!("the control plane was silent for more than {timeout:?}"), welcomed: true };
                }
                Up::Heartbeat
            }
            frame = stream.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                        last_heard = Instant::now();
                        continue;
                    }
                    Some(Ok(Message::Close(_))) | None => return Ended::Lost { why: "the control plane closed the channel".into(), welcomed: true },
                    Some(Err(e)) => return Ended::Lost { why: e.to_string(), welcomed: true },
                    Some(Ok(_)) => continue,
                };
                last_heard = Instant::now();
                match wire::decode::<Down>(&text) {
                    Ok(Down::Payload(p)) => {
                        if !stopping {
                            let _ = end.to_agent.send(p);
                        }
                    }
                    Ok(Down::Ack { seq }) => outbox.acked(seq),
                    Ok(Down::Fabric(rules)) => {
                        held.fabric.set_rules(rules);
                        if let Some((node, _)) = &held.mesh {
                            node.routes_changed();
                        }
                    }
                    Ok(Down::Registry(access)) => held.registry_access(&access),
                    Ok(Down::Heartbeat) => {}
                    Ok(Down::Welcome(_)) => return Ended::Lost { why: "a second welcome".into(), welcomed: true },
                    Err(e) => return Ended::Lost { why: e, welcomed: true },
                }
                continue;
            }
        };
        if sink.send(Message::text(wire::encode(&out))).await.is_err() {
            return Ended::Lost {
                why: "the connection closed".into(),
                welcomed: true,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_channel::messages::TaskStateChange;

    fn change(n: u32) -> FromAgent {
        FromAgent::TaskStateChange(TaskStateChange {
            task: format!("t{n}"),
            ..TaskStateChange::default()
        })
    }

    #[test]
    fn the_outbox_keeps_what_is_not_acknowledged_in_order() {
        let mut o = Outbox::default();
        for n in 1..=4 {
            assert_eq!(o.push(change(n)), u64::from(n));
        }
        o.acked(2);
        let left: Vec<u64> = o.unacked.iter().map(|(s, _)| *s).collect();
        assert_eq!(left, [3, 4]);
        o.acked(1);
        assert_eq!(o.unacked.len(), 2, "an older ack changes nothing");
        assert_eq!(o.push(change(5)), 5);
        o.acked(5);
        assert!(o.unacked.is_empty());
    }

    #[test]
    fn identities_are_made_once_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("instance.json");
        let fresh = load_identity(&path).unwrap();
        assert!(fresh.ec2_instance_id.starts_with("i-") && fresh.ec2_instance_id.len() == 19);
        save_identity(&path, &fresh).unwrap();
        assert_eq!(
            load_identity(&path).unwrap().ec2_instance_id,
            fresh.ec2_instance_id
        );
        std::fs::write(&path, "{").unwrap();
        assert!(load_identity(&path).unwrap_err().0.contains("remove it"));
    }
}
