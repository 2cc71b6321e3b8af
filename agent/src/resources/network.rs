//! The task's network identity, by the definition's `networkMode`: the
//! loopback addresses it leases (one per awsvpc task, its ENI attachment;
//! one per bridge container), its place in the fabric (an awsvpc task's
//! security groups), and the socket policy each container gets. Let go
//! when the [`TaskNetwork`] is dropped: the task leaves the fabric and the
//! addresses go back to the pool (to rest before they are leased again).

use skiff_channel::fabric::{Fabric, Proto};
use skiff_channel::task::Task;
use skiff_channel::taskdef::TaskDefinition;
use skiff_runtime::addresses::{AddressPool, Lease};
use skiff_runtime::net::{NetworkMode, NetworkPolicy, SocketUse};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

/// A running task's network.
pub(crate) struct TaskNetwork {
    /// Each container's policy, in definition order.
    pub policies: Vec<Arc<dyn NetworkPolicy>>,
    /// Each container's own address (awsvpc: the task's; bridge: its own).
    pub addresses: Vec<Option<Ipv4Addr>>,
    /// The awsvpc task's address: its network interface.
    pub eni: Option<Ipv4Addr>,
    _leases: Vec<Lease>,
    fabric: Arc<Fabric>,
}

impl Drop for TaskNetwork {
    fn drop(&mut self) {
        if let Some(ip) = self.eni {
            self.fabric.leave(ip);
        }
    }
}

impl TaskNetwork {
    /// Sets up the network of `td`'s task `task`.
    pub(crate) fn provision(
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
            eni: None,
            _leases: Vec::new(),
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
                for i in 0..n {
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
                }
            }
        }
        Ok(net)
    }
}

/// The socket policy of a task with an address of its own: awsvpc (with
/// its security groups) or bridge (`groups` None: no groups of its own, so
/// egress is open, but awsvpc tasks' ingress rules still apply to it).
pub(crate) struct TaskPolicy {
    pub ip: Ipv4Addr,
    pub groups: Option<Vec<String>>,
    pub fabric: Arc<Fabric>,
}

impl NetworkPolicy for TaskPolicy {
    fn allows(&self, addr: SocketAddr, usage: SocketUse) -> bool {
        match usage {
            SocketUse::TcpBind | SocketUse::TcpListen | SocketUse::UdpBind => {
                addr.ip() == IpAddr::V4(self.ip)
            }
            // Ingress was judged where the traffic was sent from; traffic
            // from the host is not a task's to filter (there are no
            // namespaces between them).
            SocketUse::TcpAccept | SocketUse::UdpReceive => addr.ip().is_loopback(),
            SocketUse::TcpConnect | SocketUse::UdpSend => {
                let proto = if usage == SocketUse::TcpConnect {
                    Proto::Tcp
                } else {
                    Proto::Udp
                };
                // Only loopback, ever; the task itself is always reachable.
                match addr.ip() {
                    IpAddr::V4(ip) if ip == self.ip => true,
                    IpAddr::V4(ip) if ip.is_loopback() => {
                        self.fabric
                            .allows(self.ip, self.groups.as_deref(), addr, proto)
                    }
                    _ => false,
                }
            }
        }
    }
    fn sockets_enabled(&self) -> bool {
        true
    }
    fn name_lookup_enabled(&self) -> bool {
        false
    }
    fn allows_http(&self, _: &str, _: u16) -> bool {
        false
    }
    fn task_address(&self) -> Option<Ipv4Addr> {
        Some(self.ip)
    }
    fn resolve(&self, name: &str) -> Option<Vec<IpAddr>> {
        self.fabric
            .resolve(name)
            .map(|v| v.into_iter().map(IpAddr::V4).collect())
    }
}
