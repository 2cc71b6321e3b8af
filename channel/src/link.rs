//! The channel inside one process: two unbounded queues, one each way, so
//! neither side ever waits for the other. Messages arrive in the order
//! they were sent. (A network transport will carry the same messages; see
//! [`crate::messages`].)

use crate::messages::{FromAgent, ToAgent};
use tokio::sync::mpsc;

/// The control plane's end of one agent's channel.
#[derive(Debug)]
pub struct ControlEnd {
    /// Task payloads to the agent.
    pub to_agent: mpsc::UnboundedSender<ToAgent>,
    /// The agent's state changes.
    pub from_agent: mpsc::UnboundedReceiver<FromAgent>,
}

/// An agent's end of its channel.
#[derive(Debug)]
pub struct AgentEnd {
    /// Task payloads from the control plane.
    pub from_control: mpsc::UnboundedReceiver<ToAgent>,
    /// State changes to the control plane.
    pub to_control: mpsc::UnboundedSender<FromAgent>,
}

/// A channel between a control plane and an agent in this process.
pub fn in_process() -> (ControlEnd, AgentEnd) {
    let (to_agent, from_control) = mpsc::unbounded_channel();
    let (to_control, from_agent) = mpsc::unbounded_channel();
    (
        ControlEnd {
            to_agent,
            from_agent,
        },
        AgentEnd {
            from_control,
            to_control,
        },
    )
}
