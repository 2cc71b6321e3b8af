//! What skiff's control plane and its agents (the container instances)
//! share, and nothing else: neither side sees the other's insides.
//!
//! - [`messages`]: the channel's messages. In: task payloads ("start this
//!   task", with everything the agent needs; "stop that one"). Out: task,
//!   container and attachment state changes in the shapes of ECS's
//!   `SubmitTaskStateChange`, `SubmitContainerStateChange` and
//!   `SubmitAttachmentStateChanges`.
//! - [`task`] and [`taskdef`]: the ECS objects a task payload carries, in
//!   ECS's JSON shapes.
//! - [`link`]: the channel within one process (`skiff serve`'s agent).
//! - [`fabric`]: the network state every task's sockets are checked
//!   against: security-group rules, which task is in which groups, and the
//!   names service discovery answers.
//! - [`logs`]: where an agent writes its containers' awslogs output.
//! - [`wire`]: the channel over a network (a WebSocket the agent opens),
//!   for agents on other machines (`skiff agent`).
//! - [`sigv4`]: signing requests to the control plane's API.
//! - [`mesh`]: opening a connection to a task on another machine.

pub mod fabric;
pub mod link;
pub mod logs;
pub mod mesh;
pub mod messages;
pub mod sigv4;
pub mod task;
pub mod taskdef;
pub mod wire;

pub use task::now;
