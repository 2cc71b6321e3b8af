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
//!
//! - `api`: the control plane's API as the agent calls it (registration,
//!   and CloudWatch Logs for awslogs output: [`ApiLogs`]).
//! - `channel`: the WebSocket — reconciling, the outbox of reports,
//!   heartbeats, reconnecting ([`serve`]).

mod api;
mod channel;

pub use api::ApiLogs;
pub use channel::{Held, serve};

use api::{Api, CallError};
use serde_json::{Value, json};
use skiff_channel::wire;
use std::path::PathBuf;
use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

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
