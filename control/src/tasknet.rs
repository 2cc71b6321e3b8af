//! A task's network on this machine, by the definition's `networkMode`:
//! the loopback addresses it leases (one per awsvpc task, one per bridge
//! container) and the host ports it publishes (bridge). Everything is let
//! go when the [`TaskNetwork`] is dropped: published ports close, and the
//! addresses go back to the pool (to rest before they are leased again).

use crate::fabric::{Fabric, TaskPolicy};
use crate::model::{NetworkBinding, Task};
use crate::taskdef::TaskDefinition;
use skiff_runtime::addresses::{AddressPool, Lease};
use skiff_runtime::net::{NetworkMode, NetworkPolicy};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;

/// ECS's range for dynamic host ports in bridge mode.
pub const DYNAMIC_PORTS: std::ops::RangeInclusive<u16> = 49153..=65535;

/// A running task's network.
pub struct TaskNetwork {
    /// Each container's policy, in definition order.
    pub policies: Vec<Arc<dyn NetworkPolicy>>,
    /// Each container's own address (awsvpc: the task's; bridge: its own).
    pub addresses: Vec<Option<Ipv4Addr>>,
    /// Each container's published ports (bridge).
    pub bindings: Vec<Vec<NetworkBinding>>,
    /// The awsvpc task's address: its network interface.
    pub eni: Option<Ipv4Addr>,
    _leases: Vec<Lease>,
    published: Vec<tokio::task::JoinHandle<()>>,
    fabric: Arc<Fabric>,
}

impl Drop for TaskNetwork {
    fn drop(&mut self) {
        for p in &self.published {
            p.abort();
        }
        if let Some(ip) = self.eni {
            self.fabric.leave(ip);
        }
    }
}

impl TaskNetwork {
    /// Sets up the network of `td`'s task `owner` (its ARN). Must run inside
    /// a tokio runtime (published ports are served on it).
    pub fn new(
        td: &TaskDefinition,
        task: &Task,
        pool: &Result<Arc<AddressPool>, String>,
        fabric: &Arc<Fabric>,
    ) -> Result<TaskNetwork, String> {
        let owner = task.task_arn.as_str();
        let n = td.container_definitions.len();
        let mode = match td.network_mode.as_deref() {
            Some("host") => NetworkMode::Host,
            Some("bridge") => NetworkMode::Bridge,
            Some("awsvpc") => NetworkMode::Awsvpc,
            _ => NetworkMode::None,
        };
        let mut net = TaskNetwork {
            policies: Vec::with_capacity(n),
            addresses: vec![None; n],
            bindings: vec![Vec::new(); n],
            eni: None,
            _leases: Vec::new(),
            published: Vec::new(),
            fabric: Arc::clone(fabric),
        };
        let lease = |net: &mut TaskNetwork| -> Result<Ipv4Addr, String> {
            let pool = pool.as_ref().map_err(Clone::clone)?;
            let lease = pool
                .acquire(owner)
                .map_err(|e| format!("no task address: {e}"))?;
            let ip = lease.ip();
            net._leases.push(lease);
            Ok(ip)
        };
        match mode {
            NetworkMode::None | NetworkMode::Host => {
                net.policies = vec![mode.policy(None); n];
            }
            NetworkMode::Awsvpc => {
                // One interface for the task: its containers share the
                // address, and localhost, as on ECS.
                let ip = lease(&mut net)?;
                let groups = task
                    .network_configuration
                    .as_ref()
                    .and_then(|n| n.awsvpc_configuration.as_ref())
                    .map(|v| v.security_groups.clone())
                    .unwrap_or_default();
                fabric.join(ip, groups.clone());
                net.eni = Some(ip);
                let policy: Arc<dyn NetworkPolicy> = Arc::new(TaskPolicy {
                    ip,
                    groups: Some(groups),
                    fabric: Arc::clone(fabric),
                });
                net.policies = vec![policy; n];
                net.addresses = vec![Some(ip); n];
            }
            NetworkMode::Bridge => {
                for (i, c) in td.container_definitions.iter().enumerate() {
                    let ip = lease(&mut net)?;
                    // No groups of its own (bridge tasks use the
                    // instance's network), but awsvpc tasks' rules still
                    // apply to what it sends them.
                    net.policies.push(Arc::new(TaskPolicy {
                        ip,
                        groups: None,
                        fabric: Arc::clone(fabric),
                    }));
                    net.addresses[i] = Some(ip);
                    for p in &c.port_mappings {
                        let listener = publish(p.host_port.unwrap_or(0)).map_err(|e| {
                            format!(
                                "container {} cannot publish port {}: {e}",
                                c.name, p.container_port
                            )
                        })?;
                        let host = listener.local_addr().map_err(|e| e.to_string())?;
                        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
                        let listener = tokio::net::TcpListener::from_std(listener)
                            .map_err(|e| e.to_string())?;
                        let target = SocketAddr::from((ip, p.container_port));
                        net.published
                            .push(tokio::spawn(skiff_runtime::proxy::forward_tcp(
                                listener,
                                target,
                                std::future::pending(),
                            )));
                        net.bindings[i].push(NetworkBinding {
                            bind_ip: host.ip().to_string(),
                            container_port: p.container_port,
                            host_port: host.port(),
                            protocol: p.protocol.clone(),
                        });
                    }
                }
            }
        }
        Ok(net)
    }
}

/// A listener on the host's loopback at `port`, or at a free port of
/// [`DYNAMIC_PORTS`] when `port` is 0.
fn publish(port: u16) -> std::io::Result<TcpListener> {
    if port != 0 {
        return TcpListener::bind((Ipv4Addr::LOCALHOST, port));
    }
    // Start somewhere different each time, then walk the range.
    let span = u32::from(DYNAMIC_PORTS.end() - DYNAMIC_PORTS.start()) + 1;
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        % span;
    for i in 0..span {
        let port = DYNAMIC_PORTS.start() + ((start + i) % span) as u16;
        if let Ok(l) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            return Ok(l);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "every dynamic port (49153-65535) is in use",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_ports_come_from_ecs_range() {
        let a = publish(0).unwrap();
        let b = publish(0).unwrap();
        for l in [&a, &b] {
            let port = l.local_addr().unwrap().port();
            assert!(DYNAMIC_PORTS.contains(&port), "{port}");
            assert!(l.local_addr().unwrap().ip().is_loopback());
        }
        assert_ne!(a.local_addr().unwrap(), b.local_addr().unwrap());
        // A static port that is taken is an error, not another port.
        let taken = a.local_addr().unwrap().port();
        assert!(publish(taken).is_err());
    }
}
