//! The agent's channel over the network: one WebSocket to the control
//! plane, reconnected whenever it drops (see the module above and
//! `skiff_channel::wire`).

use super::api::{Api, unix_now};
use super::{JoinConfig, JoinError, Joined, random_hex, register};
use crate::Agent;
use futures_util::{SinkExt, StreamExt};
use skiff_channel::fabric::Fabric;
use skiff_channel::link::ControlEnd;
use skiff_channel::messages::{FromAgent, ToAgent, USAGE_EVERY};
use skiff_channel::sigv4;
use skiff_channel::wire::{self, Down, Up, Welcome};
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

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
        // The first task's pull then finds its client made.
        let (puller, at) = (Arc::clone(&self.puller), access.address.clone());
        tokio::task::spawn_blocking(move || puller.prepare(&at));
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
    /// The control plane refused the channel (credentials, key revoked).
    Refused(String),
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
    let mut refused_delay = Duration::from_secs(1);
    let mut shutdown_seen = shutdown.clone();
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
                    refused_delay = Duration::from_secs(1);
                }
                tracing::warn!(
                    "the channel to the control plane is down ({why}); reconnecting in {delay:?}"
                );
                if stop_while_away(&agent, &mut end, &shutdown) {
                    return Ok(());
                }
                wait_or_shutdown(delay, &mut shutdown_seen).await;
                delay = (delay * 2).min(RECONNECT_AT_MOST);
            }
            Ended::Refused(why) => {
                tracing::error!(
                    "the control plane refused the channel: {why}; trying again in {refused_delay:?}"
                );
                if stop_while_away(&agent, &mut end, &shutdown) {
                    return Ok(());
                }
                wait_or_shutdown(refused_delay, &mut shutdown_seen).await;
                refused_delay = (refused_delay * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// Shutting down while the control plane cannot be reached: the tasks
/// are stopped here (their end is reported if it comes back in time);
/// whether none is left.
fn stop_while_away(
    agent: &Agent,
    end: &mut ControlEnd,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> bool {
    if !*shutdown.borrow() {
        return false;
    }
    let running = agent.running_tasks();
    for arn in &running {
        let _ = end.to_agent.send(ToAgent::StopTask {
            task_arn: arn.clone(),
        });
    }
    running.is_empty()
}

/// Sleeps `delay`, or less if shutdown is asked for meanwhile.
async fn wait_or_shutdown(delay: Duration, shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        _ = shutdown.changed() => {}
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
                // Bad credentials, a revoked key, a refused instance: said
                // loudly, and tried again ever more slowly (an operator
                // may fix it).
                return Ended::Refused(format!("HTTP {status}: {body}"));
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
    let mut usage = tokio::time::interval(USAGE_EVERY);
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
            _ = usage.tick() => Up::Usage(agent.usage()),
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
}
