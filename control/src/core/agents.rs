//! The agents (container instances) connected to this control plane, each
//! through its channel: the in-process one (`skiff_channel::link`), and
//! agents on other machines, each on its WebSocket (`crate::api::channel`,
//! `remote.rs`). The control plane sends them task payloads here and
//! nowhere else; what they report comes back through `reports.rs`, tagged
//! with who sent it.

use crate::core::model::Task;
use crate::core::store::{Position, StateStore};
use crate::core::taskdef::TaskDefinition;
use skiff_channel::messages::{FromAgent, StartTask, ToAgent};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use tokio::sync::{mpsc, watch};

/// One state change, and who reported it.
#[derive(Debug)]
pub(crate) struct Report {
    /// The reporting agent's container instance ARN: it may report only
    /// about its own tasks.
    pub from: Arc<str>,
    pub change: FromAgent,
    /// A remote agent's report number, acknowledged once committed.
    pub ack: Option<(watch::Sender<u64>, u64)>,
}

/// An open channel to one agent.
#[derive(Debug)]
struct Link {
    tx: mpsc::UnboundedSender<ToAgent>,
    /// Which connection (0: the in-process agent's).
    conn: u64,
}

/// What the control plane remembers of a remote agent's session.
#[derive(Debug)]
pub(crate) struct Session {
    /// The agent process's session id: a new one means it restarted.
    pub id: String,
    /// The highest report recorded; the connection's writer sends it on.
    pub acked: watch::Sender<u64>,
    /// When it was last heard from (any frame).
    pub last_heard: Instant,
}

/// The open channels, by container instance ARN.
type Links = Arc<RwLock<HashMap<String, Link>>>;

/// The connected agents, by container instance ARN.
pub(crate) struct Agents {
    /// The in-process agent's container instance (`skiff serve`'s own).
    pub local: String,
    links: Links,
    /// What is sent to agents goes out once the store is durable past the
    /// changes made before it was sent (the forwarder, [`forward`]): an
    /// agent never runs a task whose record a crash could lose.
    outbox: mpsc::UnboundedSender<(Position, String, ToAgent)>,
    store: Arc<dyn StateStore>,
    /// Remote agents' sessions (connected or not), by instance ARN.
    pub(crate) sessions: Mutex<HashMap<String, Session>>,
    /// Every agent's reports, to the report loop.
    pub(crate) reports: mpsc::UnboundedSender<Report>,
    /// When this control plane started: an instance no agent has spoken
    /// for since counts as silent from then.
    pub(crate) started: Instant,
    next_conn: AtomicU64,
}

impl Agents {
    /// The in-process agent, connected through `link`; reports of every
    /// agent go to `reports`.
    pub(crate) fn new(
        local: String,
        link: mpsc::UnboundedSender<ToAgent>,
        reports: mpsc::UnboundedSender<Report>,
        store: Arc<dyn StateStore>,
    ) -> Agents {
        let links: Links = Arc::new(RwLock::new(HashMap::from([(
            local.clone(),
            Link { tx: link, conn: 0 },
        )])));
        let (outbox, sent) = mpsc::unbounded_channel();
        tokio::spawn(forward(Arc::clone(&store), Arc::clone(&links), sent));
        Agents {
            links,
            outbox,
            store,
            local,
            sessions: Mutex::new(HashMap::new()),
            reports,
            started: Instant::now(),
            next_conn: AtomicU64::new(1),
        }
    }

    /// Whether the agent of this container instance is connected.
    pub(crate) fn connected(&self, instance_arn: &str) -> bool {
        self.links
            .read()
            .map(|l| l.get(instance_arn).is_some_and(|l| !l.tx.is_closed()))
            .unwrap_or(false)
    }

    /// Whether a connected agent has task `t` (runs it, or has been sent
    /// it to run): one must be told to stop it, and reports its end. A
    /// task no agent has stops at once (an agent that comes back stops it
    /// when it reconciles).
    pub(crate) fn have(&self, t: &Task) -> bool {
        t.last_status != "STOPPED" && t.runs_on().is_some_and(|i| self.connected(i))
    }

    /// Opens a new channel to a remote agent of `instance_arn`, replacing
    /// (and so closing) any older one: its number, and the payloads to
    /// send on it.
    pub(crate) fn link(&self, instance_arn: &str) -> (u64, mpsc::UnboundedReceiver<ToAgent>) {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut links) = self.links.write() {
            links.insert(instance_arn.to_string(), Link { tx, conn });
        }
        (conn, rx)
    }

    /// Closes connection `conn` of `instance_arn`, if it is still the
    /// instance's: whether it was.
    pub(crate) fn unlink(&self, instance_arn: &str, conn: u64) -> bool {
        let Ok(mut links) = self.links.write() else {
            return false;
        };
        if links.get(instance_arn).is_some_and(|l| l.conn == conn) {
            links.remove(instance_arn);
            return true;
        }
        false
    }

    /// Closes whatever connection `instance_arn` has.
    pub(crate) fn unlink_any(&self, instance_arn: &str) {
        if let Ok(mut links) = self.links.write() {
            links.remove(instance_arn);
        }
    }

    /// Notes that an agent of `instance_arn` was heard from.
    pub(crate) fn heard(&self, instance_arn: &str) {
        if let Ok(mut sessions) = self.sessions.lock()
            && let Some(s) = sessions.get_mut(instance_arn)
        {
            s.last_heard = Instant::now();
        }
    }

    /// Notes every remote agent as heard from now (after the control
    /// plane itself stood still).
    pub(crate) fn heard_all(&self) {
        if let Ok(mut sessions) = self.sessions.lock() {
            let now = Instant::now();
            for s in sessions.values_mut() {
                s.last_heard = now;
            }
        }
    }

    fn send(&self, instance_arn: &str, message: ToAgent) {
        let position = self.store.queued();
        if self
            .outbox
            .send((position, instance_arn.to_string(), message))
            .is_err()
        {
            tracing::warn!(instance = instance_arn, "the agents' forwarder is gone");
        }
    }

    /// Sends task `t` (written to the store) to the agent it is placed on.
    pub(crate) fn start(&self, t: &Task, td: &TaskDefinition) {
        if let Some(instance) = t.runs_on() {
            self.send(
                instance,
                ToAgent::StartTask(Box::new(StartTask {
                    task: t.clone(),
                    task_definition: td.clone(),
                })),
            );
        }
    }

    /// Asks the agent running task `task_arn` on `instance` to stop it.
    pub(crate) fn stop(&self, instance: Option<&str>, task_arn: &str) {
        if let Some(instance) = instance {
            self.send(
                instance,
                ToAgent::StopTask {
                    task_arn: task_arn.to_string(),
                },
            );
        }
    }
}

impl std::fmt::Debug for Agents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agents")
            .field("local", &self.local)
            .field("links", &self.links)
            .finish_non_exhaustive()
    }
}

/// Sends each message on its agent's channel, in the order sent, once the
/// store is durable past the position it was sent at; a message sent after
/// a change the store failed is dropped (the state it came from is being
/// reloaded).
async fn forward(
    store: Arc<dyn StateStore>,
    links: Links,
    mut sent: mpsc::UnboundedReceiver<(Position, String, ToAgent)>,
) {
    while let Some((position, instance, message)) = sent.recv().await {
        if let Err(e) = store.synced(position).await {
            tracing::warn!(instance, "not sent to the agent: {e}");
            continue;
        }
        let delivered = links
            .read()
            .ok()
            .and_then(|l| l.get(&instance).map(|l| l.tx.send(message).is_ok()));
        if delivered != Some(true) {
            tracing::warn!(instance, "no agent connected to send a task to");
        }
    }
}
