//! The agents' channel on the API endpoint: `GET /ws` upgraded to a
//! WebSocket (`skiff_channel::wire` has the frames and the protocol), for
//! `skiff agent` on another machine. The opening request is signed like
//! any API call when the control plane has credentials; the instance it
//! names must be registered (`core::remote::attach` has the rules).
//! Everything the agent reports on it is about its own instance's tasks
//! (the report loop refuses the rest).

use super::Api;
use crate::core::Core;
use crate::core::agents::Report;
use crate::core::remote::Attached;
use crate::error::ApiError;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use skiff_channel::wire::{self, Down, Opening, Up};
use std::sync::Arc;
use std::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// Whether a request opens an agent's channel.
pub(crate) fn is_opening(req: &skiff_http_server::Request) -> bool {
    req.method() == http::Method::GET && req.uri().path() == wire::PATH
}

impl Api {
    /// Checks an opening request (a WebSocket handshake, signed, for a
    /// registered instance), attaches the agent and answers 101; the
    /// channel is then served on the upgraded connection.
    pub(crate) async fn open_channel(
        &self,
        mut req: skiff_http_server::Request,
    ) -> Result<http::Response<http_body_util::Full<bytes::Bytes>>, ApiError> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let websocket = header("upgrade").eq_ignore_ascii_case("websocket")
            && header("connection")
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
        let key = header("sec-websocket-key");
        if !websocket || key.is_empty() || header("sec-websocket-version") != "13" {
            return Err(ApiError::client(format!(
                "{} is an agent's channel: a WebSocket (version 13) handshake opens it",
                wire::PATH
            )));
        }
        let config = &self.core.config;
        let mut agent_key = None;
        if !config.credentials.is_empty() {
            let headers: Vec<(String, String)> = req
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_ascii_lowercase(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let received = super::protocol::sigv4::Received {
                method: "GET",
                path: req.uri().path(),
                query: req.uri().query().unwrap_or(""),
                headers: &headers,
                body: b"",
            };
            agent_key = self.verify(&received, unix_now())?.1;
        }
        let opening = Opening::parse(req.uri().query().unwrap_or("")).map_err(ApiError::client)?;
        let mut attached = self.core.attach(&opening, agent_key.as_ref()).await?;
        let registry = self.registry.get().cloned().map(|r| {
            let address =
                super::ecs::registry_as_seen_from(&config.default_registry, &header("host"));
            (r, address)
        });
        attached.welcome.registry = registry.as_ref().and_then(|(r, a)| access(r, a));
        let on_upgrade = hyper::upgrade::on(&mut req);
        let core = Arc::clone(&self.core);
        tokio::spawn(async move {
            let instance = Arc::clone(&attached.instance);
            let conn = attached.conn;
            match on_upgrade.await {
                Ok(upgraded) => {
                    let ws = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        None,
                    )
                    .await;
                    let key = agent_key.map(|k| k.access_key_id);
                    serve(&core, attached, registry, key, ws).await;
                }
                Err(e) => tracing::debug!(%instance, "the agent's channel did not open: {e}"),
            }
            core.detach(&instance, conn).await;
        });
        http::Response::builder()
            .status(http::StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .map_err(|e| ApiError::server(e.to_string()))
    }
}

/// How long a registry token handed to an agent lasts (ECR's 12 hours);
/// a fresh one is sent when half of it has passed.
const REGISTRY_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// Credentials for an agent to pull from the cluster's registry.
fn access(registry: &skiff_registry::Registry, address: &str) -> Option<wire::RegistryAccess> {
    match registry.issue_token(REGISTRY_TOKEN_TTL) {
        Ok(t) => Some(wire::RegistryAccess {
            address: address.to_string(),
            username: "AWS".into(),
            password: t.token,
            expires_at: t.expires_at,
        }),
        Err(e) => {
            tracing::warn!("cannot issue a registry token for an agent: {e}");
            None
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Serves one agent's channel until it closes, the agent goes silent for
/// the timeout, or a newer connection (or the agent's loss) replaces it.
async fn serve<S>(
    core: &Core,
    attached: Attached,
    registry: Option<(skiff_registry::Registry, String)>,
    agent_key: Option<String>,
    ws: WebSocketStream<S>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Attached {
        instance,
        welcome,
        mut payloads,
        mut acked,
        acked_tx,
        ..
    } = attached;
    let (mut sink, mut stream) = ws.split();
    let send = |frame: &Down| Message::text(wire::encode(frame));
    let mut fabric_seen = core.fabric.generation();
    if sink
        .send(send(&Down::Welcome(Box::new(welcome))))
        .await
        .is_err()
        || sink
            .send(send(&Down::Fabric(core.fabric.rules())))
            .await
            .is_err()
    {
        return;
    }
    let timeout = core.config.agent_timeout;
    let mut tick = tokio::time::interval(wire::HEARTBEAT);
    let mut last_heard = Instant::now();
    let mut last_tick = Instant::now();
    let mut token_issued = Instant::now();
    loop {
        let out = tokio::select! {
            payload = payloads.recv() => match payload {
                Some(p) => Down::Payload(p),
                // Replaced by a newer connection, or the instance lost.
                None => break,
            },
            Ok(()) = acked.changed() => Down::Ack { seq: *acked.borrow_and_update() },
            _ = tick.tick() => {
                // A tick much later than due: this process stood still,
                // not the agent.
                if last_tick.elapsed() > wire::HEARTBEAT * 2 + std::time::Duration::from_secs(1) {
                    last_heard = Instant::now();
                }
                last_tick = Instant::now();
                if last_heard.elapsed() > timeout {
                    tracing::warn!(%instance, "agent silent for more than {timeout:?}: closing its channel");
                    break;
                }
                if let Some(id) = &agent_key
                    && core.agent_keys.get(id).is_none()
                {
                    tracing::warn!(%instance, "agent key {id} revoked: closing its channel");
                    break;
                }
                let generation = core.fabric.generation();
                if token_issued.elapsed() > REGISTRY_TOKEN_TTL / 2
                    && let Some(fresh) = registry.as_ref().and_then(|(r, a)| access(r, a))
                {
                    token_issued = Instant::now();
                    Down::Registry(fresh)
                } else if generation != fabric_seen {
                    fabric_seen = generation;
                    Down::Fabric(core.fabric.rules())
                } else {
                    Down::Heartbeat
                }
            }
            frame = stream.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                        last_heard = Instant::now();
                        core.agents.heard(&instance);
                        continue;
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {
                        tracing::warn!(%instance, "the agent sent a binary frame: closing its channel");
                        break;
                    }
                };
                last_heard = Instant::now();
                core.agents.heard(&instance);
                match wire::decode::<Up>(&text) {
                    Ok(Up::Heartbeat) => {}
                    Ok(Up::Usage(report)) => core.record_usage(&instance, report).await,
                    Ok(Up::Report { seq, change }) => {
                        let report = Report {
                            from: Arc::clone(&instance),
                            change: *change,
                            ack: Some((acked_tx.clone(), seq)),
                        };
                        if core.agents.reports.send(report).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%instance, "closing the agent's channel: {e}");
                        break;
                    }
                }
                continue;
            }
        };
        if sink.send(send(&out)).await.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
}
