//! Where an agent sends its containers' `awslogs` output: CloudWatch Logs
//! of the control plane. ECS's agent writes to CloudWatch Logs directly
//! (not through its control channel), and so does skiff's: inside `skiff
//! serve` the control plane's log store is the destination; an agent on
//! another machine would call the Logs API.

use std::fmt;

/// A log stream could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenStreamError {
    /// The group's name breaks CloudWatch's rules (the message says how).
    InvalidGroupName(String),
    /// The group does not exist, and the container did not ask for it to be
    /// created (`awslogs-create-group`).
    NoSuchGroup(String),
    /// The destination failed.
    Failed(String),
}

impl fmt::Display for OpenStreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenStreamError::InvalidGroupName(why) | OpenStreamError::Failed(why) => {
                f.write_str(why)
            }
            OpenStreamError::NoSuchGroup(group) => write!(f, "log group {group} does not exist"),
        }
    }
}

impl std::error::Error for OpenStreamError {}

/// CloudWatch Logs, as an agent writes to it.
pub trait LogDestination: Send + Sync {
    /// Makes sure log stream `stream` exists in `group`, creating the group
    /// first if it is missing and `create_group` is set.
    fn open_stream(
        &self,
        group: &str,
        stream: &str,
        create_group: bool,
    ) -> Result<(), OpenStreamError>;

    /// Appends events (milliseconds since the epoch, message) to a stream
    /// opened before.
    fn put_events(&self, group: &str, stream: &str, events: &[(i64, String)])
    -> Result<(), String>;
}
