//! The channel over a network: what a control plane and an agent on
//! another machine say to each other on the one WebSocket the agent opens
//! (ECS's agent holds one too, to its "ACS" endpoint, found with
//! `DiscoverPollEndpoint`).
//!
//! The agent opens `GET /ws?clusterArn=…&containerInstanceArn=…&agentSession=…`
//! on the control plane's API endpoint, signed (SigV4) when the cluster
//! has credentials. Then each side sends JSON text frames:
//!
//! - control → agent ([`Down`]): first a [`Welcome`] (the tasks the
//!   instance should be running, for the agent to reconcile against what it
//!   runs; the highest report already recorded), then task payloads,
//!   acknowledgements of reports, the fabric's rules when they change, and
//!   heartbeats.
//! - agent → control ([`Up`]): its state changes, each numbered, what its
//!   tasks use (every few seconds, unnumbered), and heartbeats.
//!
//! Delivery of reports is at least once and in order: an agent keeps each
//! report until the control plane acknowledges it (after committing it),
//! and on a new connection sends again, in order, those after the
//! welcome's `acked`. Applying a report twice changes nothing (states only
//! move forward, timestamps are set once). Payloads need no
//! acknowledgement: every welcome carries the whole of what the instance
//! should run, so one lost with a connection is in the next welcome.
//!
//! `agentSession` is random per agent process: a new one tells the control
//! plane the agent restarted, and every task it had ended with the old
//! process (a task starts at most once, so none is sent again).

use crate::fabric::Rules;
use crate::messages::{FromAgent, StartTask, ToAgent, UsageReport};
use serde::{Deserialize, Serialize};

/// Where an agent opens its channel, on the API endpoint.
pub const PATH: &str = "/ws";

/// How often each side sends a heartbeat when it has nothing else to say.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(1);

/// What the control plane sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Down {
    /// The first frame of every connection.
    Welcome(Box<Welcome>),
    /// A task payload.
    Payload(ToAgent),
    /// Reports up to and including `seq` are recorded: the agent may forget
    /// them.
    Ack { seq: u64 },
    /// The security groups' rules and the discoverable names, whole.
    Fabric(Rules),
    /// Fresh credentials for the cluster's registry (before the last
    /// expire).
    Registry(RegistryAccess),
    /// Nothing to say, but here.
    Heartbeat,
}

/// The opening of a connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Welcome {
    pub container_instance_arn: String,
    pub cluster_arn: String,
    /// The highest report already recorded from this agent session (0 for
    /// none): send again those after it.
    pub acked: u64,
    /// Every task this instance should be running. The agent starts those
    /// it does not run (unless they ran here before) and stops every other.
    pub tasks: Vec<StartTask>,
    /// How long the control plane waits without hearing from the agent
    /// before it takes the instance for lost, in milliseconds.
    pub timeout_ms: u64,
    /// The cluster's registry, where images named without a registry host
    /// are, and credentials to pull from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryAccess>,
    /// The secret agents present to each other's mesh listeners (task
    /// connections between machines).
    #[serde(default)]
    pub mesh_token: String,
}

/// Where the cluster's registry is, and how to pull from it (a registry
/// token, the password of user `AWS`, as ECR's GetAuthorizationToken).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryAccess {
    /// `host:port`, as the agent reaches it.
    pub address: String,
    pub username: String,
    pub password: String,
    /// When the password stops working (seconds since the epoch).
    pub expires_at: i64,
}

/// What an agent sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Up {
    /// A state change, numbered from 1 in the agent session's order.
    Report { seq: u64, change: Box<FromAgent> },
    /// What its tasks have used (not numbered: a lost one is a missed
    /// sample).
    Usage(UsageReport),
    /// Nothing to say, but here.
    Heartbeat,
}

/// A frame as a WebSocket text message.
pub fn encode<T: Serialize>(frame: &T) -> String {
    // Our own types serialise without fail (no maps with non-string keys).
    serde_json::to_string(frame).unwrap_or_default()
}

/// A text message as a frame; what is not one is an error naming why.
pub fn decode<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("not a channel frame: {e}"))
}

/// The query string an agent opens its channel with (`mesh`: where its
/// mesh listener is reached, if it has one).
pub fn query(cluster_arn: &str, instance_arn: &str, session: &str, mesh: Option<&str>) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("clusterArn", cluster_arn)
        .append_pair("containerInstanceArn", instance_arn)
        .append_pair("agentSession", session);
    if let Some(m) = mesh {
        q.append_pair("meshAddress", m);
    }
    q.finish()
}

/// What an opening request's query string names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening {
    pub cluster_arn: String,
    pub container_instance_arn: String,
    pub agent_session: String,
    /// Where the agent's mesh listener is reached (`host:port`).
    pub mesh_address: Option<std::net::SocketAddr>,
}

impl Opening {
    /// Parses the query; the error names what is missing.
    pub fn parse(query: &str) -> Result<Opening, String> {
        let mut cluster = None;
        let mut instance = None;
        let mut session = None;
        let mut mesh = None;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "meshAddress" => {
                    mesh = Some(
                        v.parse()
                            .map_err(|_| format!("meshAddress {v:?} is not an IP:PORT"))?,
                    )
                }
                "clusterArn" => cluster = Some(v.into_owned()),
                "containerInstanceArn" => instance = Some(v.into_owned()),
                "agentSession" => session = Some(v.into_owned()),
                _ => {}
            }
        }
        let need = |v: Option<String>, name: &str| {
            v.filter(|v| !v.is_empty())
                .ok_or_else(|| format!("the channel's opening request names no {name}"))
        };
        Ok(Opening {
            cluster_arn: need(cluster, "clusterArn")?,
            container_instance_arn: need(instance, "containerInstanceArn")?,
            agent_session: need(session, "agentSession")?,
            mesh_address: mesh,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{TaskStateChange, TaskStatus};

    #[test]
    fn frames_round_trip_and_garbage_is_named() {
        let up = Up::Report {
            seq: 7,
            change: Box::new(FromAgent::TaskStateChange(TaskStateChange {
                cluster: "c".into(),
                task: "t".into(),
                status: Some(TaskStatus::Running),
                ..TaskStateChange::default()
            })),
        };
        let text = encode(&up);
        assert!(
            text.starts_with(r#"{"report":{"seq":7,"change":{"taskStateChange""#),
            "{text}"
        );
        assert_eq!(decode::<Up>(&text).unwrap(), up);
        assert_eq!(encode(&Down::Heartbeat), r#""heartbeat""#);
        assert!(
            decode::<Down>("{\"launch\":1}")
                .unwrap_err()
                .starts_with("not a channel frame")
        );
    }

    #[test]
    fn openings_name_what_they_lack() {
        let q = query("arn:c", "arn:i/1", "s-1", Some("198.18.0.2:7701"));
        let o = Opening::parse(&q).unwrap();
        assert_eq!(o.container_instance_arn, "arn:i/1");
        assert_eq!(o.agent_session, "s-1");
        assert_eq!(o.mesh_address, Some("198.18.0.2:7701".parse().unwrap()));
        assert!(
            Opening::parse("clusterArn=x&containerInstanceArn=i&agentSession=s&meshAddress=x")
                .is_err()
        );
        let e = Opening::parse("clusterArn=x&agentSession=y").unwrap_err();
        assert!(e.contains("containerInstanceArn"), "{e}");
    }
}
