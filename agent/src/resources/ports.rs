//! A bridge task's published ports: each TCP `portMapping` of a container
//! listens on the host's 127.0.0.1 at its `hostPort` (0 or absent: a free
//! port of ECS's dynamic range) and is carried to the container's own
//! address. Closed when the [`PublishedPorts`] is dropped.

use skiff_channel::fabric::{Fabric, Proto};
use skiff_channel::task::NetworkBinding;
use skiff_channel::taskdef::TaskDefinition;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;

/// ECS's range for dynamic host ports in bridge mode.
pub(crate) const DYNAMIC_PORTS: std::ops::RangeInclusive<u16> = 49153..=65535;

/// A task's published ports.
pub(crate) struct PublishedPorts {
    /// Each container's bindings, in definition order.
    pub bindings: Vec<Vec<NetworkBinding>>,
    forwarders: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for PublishedPorts {
    fn drop(&mut self) {
        for f in &self.forwarders {
            f.abort();
        }
    }
}

impl PublishedPorts {
    /// Publishes the port mappings of a bridge task's containers, each at
    /// its address (`addresses`, in definition order), on the host's
    /// address `on`; a host-mode task's on `on` too when that is not
    /// loopback (its guests listen on loopback); nothing for other network
    /// modes. Must run inside a tokio runtime (the ports are
    /// served on it).
    pub(crate) fn provision(
        td: &TaskDefinition,
        addresses: &[Option<Ipv4Addr>],
        on: Ipv4Addr,
    ) -> Result<PublishedPorts, String> {
        let mut published = PublishedPorts {
            bindings: vec![Vec::new(); td.container_definitions.len()],
            forwarders: Vec::new(),
        };
        if td.network_mode.as_deref() == Some("host") && !on.is_loopback() {
            // Host mode on a machine reached by others: its ports are on
            // the host's address too, as on ECS (the guest listens on
            // loopback; a forwarder carries the host's address there).
            published.same_ports(td, on, Ipv4Addr::LOCALHOST, None, "")?;
            return Ok(published);
        }
        if td.network_mode.as_deref() != Some("bridge") {
            return Ok(published);
        }
        for (i, c) in td.container_definitions.iter().enumerate() {
            let Some(ip) = addresses.get(i).copied().flatten() else {
                continue;
            };
            for p in &c.port_mappings {
                let listener = publish(on, p.host_port.unwrap_or(0)).map_err(|e| {
                    format!(
                        "container {} cannot publish port {}: {e}",
                        c.name, p.container_port
                    )
                })?;
                let host = listener.local_addr().map_err(|e| e.to_string())?;
                listener.set_nonblocking(true).map_err(|e| e.to_string())?;
                let listener =
                    tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
                let target = SocketAddr::from((ip, p.container_port));
                published
                    .forwarders
                    .push(tokio::spawn(skiff_runtime::proxy::forward_tcp(
                        listener,
                        target,
                        std::future::pending(),
                    )));
                published.bindings[i].push(NetworkBinding {
                    bind_ip: host.ip().to_string(),
                    container_port: p.container_port,
                    host_port: host.port(),
                    protocol: p.protocol.clone(),
                });
            }
        }
        Ok(published)
    }
}

impl PublishedPorts {
    /// Publishes an awsvpc task's TCP ports on its machine's address `on`
    /// at the same port numbers: its public address (`assignPublicIp
    /// ENABLED`). A client is carried to the task only if the task's
    /// security groups let its address in (`fabric`), as a public IP is
    /// behind the same groups on AWS.
    pub(crate) fn publish_public(
        &mut self,
        td: &TaskDefinition,
        task: Ipv4Addr,
        on: Ipv4Addr,
        fabric: Arc<Fabric>,
    ) -> Result<(), String> {
        self.same_ports(td, on, task, Some(fabric), "its public address ")
    }

    /// Publishes every TCP port mapping of `td` on `on` at the same
    /// number, carried to that port at `to`; with `fabric`, only clients
    /// whose address the groups of `to` let in (`place` names `on` in
    /// errors).
    fn same_ports(
        &mut self,
        td: &TaskDefinition,
        on: Ipv4Addr,
        to: Ipv4Addr,
        fabric: Option<Arc<Fabric>>,
        place: &str,
    ) -> Result<(), String> {
        for (i, c) in td.container_definitions.iter().enumerate() {
            for p in c.port_mappings.iter().filter(|p| p.protocol != "udp") {
                let listener = TcpListener::bind((on, p.container_port))
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .and_then(tokio::net::TcpListener::from_std)
                    .map_err(|e| {
                        format!(
                            "container {} cannot publish port {} on {place}{on}: {e}",
                            c.name, p.container_port
                        )
                    })?;
                let target = SocketAddr::from((to, p.container_port));
                let fabric = fabric.clone();
                let admit = move |peer: SocketAddr| match (&fabric, peer.ip()) {
                    (None, _) => true,
                    (Some(f), std::net::IpAddr::V4(from)) => {
                        f.allows(from, None, target, Proto::Tcp)
                    }
                    (Some(_), std::net::IpAddr::V6(_)) => false,
                };
                self.forwarders
                    .push(tokio::spawn(skiff_runtime::proxy::forward_tcp_admitting(
                        listener,
                        target,
                        admit,
                        std::future::pending(),
                    )));
                self.bindings[i].push(NetworkBinding {
                    bind_ip: on.to_string(),
                    container_port: p.container_port,
                    host_port: p.container_port,
                    protocol: p.protocol.clone(),
                });
            }
        }
        Ok(())
    }
}

/// A listener on the host's address `on` at `port`, or at a free port of
/// [`DYNAMIC_PORTS`] when `port` is 0.
fn publish(on: Ipv4Addr, port: u16) -> std::io::Result<TcpListener> {
    if port != 0 {
        return TcpListener::bind((on, port));
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
        if let Ok(l) = TcpListener::bind((on, port)) {
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
        let a = publish(Ipv4Addr::LOCALHOST, 0).unwrap();
        let b = publish(Ipv4Addr::LOCALHOST, 0).unwrap();
        for l in [&a, &b] {
            let port = l.local_addr().unwrap().port();
            assert!(DYNAMIC_PORTS.contains(&port), "{port}");
            assert!(l.local_addr().unwrap().ip().is_loopback());
        }
        assert_ne!(a.local_addr().unwrap(), b.local_addr().unwrap());
        // A static port that is taken is an error, not another port.
        let taken = a.local_addr().unwrap().port();
        assert!(publish(Ipv4Addr::LOCALHOST, taken).is_err());
    }
}
