//! One module per task resource, as ECS's agent has one per
//! `taskresource`: each provisions its piece of a task before the
//! containers start and cleans it up after they have stopped (when its
//! value is dropped, or by `cleanup`). The runner provisions them in the
//! order below and lets them go in reverse.
//!
//! | resource | provisions | cleans up |
//! |---|---|---|
//! | `volumes` | host paths checked, shared and scratch volumes made | scratch removed |
//! | `logs` | each awslogs container's stream (and group) | the last partial line written |
//! | `network` | addresses leased, the ENI joined to its security groups, socket policies | left the fabric, addresses released |
//! | `ports` | bridge host ports published | ports closed |
//! | `health` | health checks started (once their container runs) | checks stopped |

pub(crate) mod health;
pub(crate) mod logs;
pub(crate) mod network;
pub(crate) mod ports;
pub(crate) mod volumes;
