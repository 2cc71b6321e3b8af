//! The network policy in front of every socket a guest opens.
//!
//! All of a guest's networking goes through WASI (`wasi:sockets`,
//! `wasi:http`), so a policy consulted on each bind, connect and send is a
//! complete firewall: there is no other way out of the sandbox.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

/// What a task's network looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// No network at all: every socket operation and outgoing HTTP request
    /// is denied. The default, as for a container with `--network none`.
    #[default]
    None,
    /// The host's loopback network: the guest may bind and connect on
    /// 127.0.0.0/8 and ::1, and nothing else. Binding the unspecified
    /// address (0.0.0.0) is refused, since that would listen beyond loopback,
    /// and so is name lookup, since the host's resolver would carry the
    /// guest's queries off the machine: use `127.0.0.1` or `::1`.
    Host,
    /// A loopback address of the task's own (see [`OwnAddress`]); ports
    /// reach the host only where they are published.
    Bridge,
    /// A loopback address of the task's own, as an awsvpc task has its own
    /// network interface.
    Awsvpc,
}

impl FromStr for NetworkMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            "bridge" => Ok(NetworkMode::Bridge),
            "awsvpc" => Ok(NetworkMode::Awsvpc),
            other => Err(format!(
                "unknown network mode `{other}` (expected none, host, bridge or awsvpc)"
            )),
        }
    }
}

impl std::fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NetworkMode::None => "none",
            NetworkMode::Host => "host",
            NetworkMode::Bridge => "bridge",
            NetworkMode::Awsvpc => "awsvpc",
        })
    }
}

/// What a guest wants to do with an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketUse {
    /// Bind a TCP socket to this local address. Connecting binds implicitly
    /// to the unspecified address with port 0 first.
    TcpBind,
    /// Listen on this (local) address.
    TcpListen,
    /// Accept a connection from this remote address.
    TcpAccept,
    /// Connect to this remote address.
    TcpConnect,
    /// Bind a UDP socket to this local address (implicitly, as for TCP,
    /// before the first send).
    UdpBind,
    /// Send datagrams to this remote address.
    UdpSend,
    /// Receive a datagram from this remote address.
    UdpReceive,
}

/// Decides, per address, what a task's guests may do on the network. The
/// networking layer (awsvpc, security groups) plugs in its own policy here.
pub trait NetworkPolicy: Send + Sync + 'static {
    /// May the guest use `addr` this way?
    fn allows(&self, addr: SocketAddr, usage: SocketUse) -> bool;
    /// May the guest create sockets at all (TCP, UDP)?
    fn sockets_enabled(&self) -> bool;
    /// May the guest resolve names?
    fn name_lookup_enabled(&self) -> bool;
    /// May the guest send an outgoing HTTP request to `host:port`? Asked
    /// only of policies without a [`task_address`](Self::task_address);
    /// with one, the request is resolved and checked as a TCP connection.
    fn allows_http(&self, host: &str, port: u16) -> bool;
    /// The task's own loopback address (awsvpc, bridge), if it has one. The
    /// guest's binds of the unspecified address, 127.0.0.1 or this address
    /// land here, its connections leave from here, and `127.0.0.1` and
    /// `localhost` mean the task itself, never the host. [`allows`]
    /// (Self::allows) then judges the rewritten addresses.
    fn task_address(&self) -> Option<Ipv4Addr> {
        None
    }
    /// The addresses of a name this network answers itself (service
    /// discovery), or `None`. A task with an address of its own resolves
    /// nothing else: the host's resolver would carry the query off the
    /// machine.
    fn resolve(&self, _name: &str) -> Option<Vec<IpAddr>> {
        None
    }
}

/// Where a task with its own address `own` reaches `ip`: 127.0.0.1 is the
/// task itself, as `localhost` is in a task of its own network namespace.
pub(crate) fn task_destination(own: Ipv4Addr, ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(Ipv4Addr::LOCALHOST) => IpAddr::V4(own),
        ip => ip,
    }
}

/// The addresses `name` has for a task with its own address `own`: an IP
/// literal itself, `localhost` the task, anything else only what the
/// policy answers (the host's resolver would carry the query, and the
/// task's traffic, off the machine). `None` if it has none.
pub(crate) fn resolve_for_task(
    policy: &dyn NetworkPolicy,
    own: Ipv4Addr,
    name: &str,
) -> Option<Vec<IpAddr>> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Some(vec![ip]);
    }
    if name.eq_ignore_ascii_case("localhost") {
        return Some(vec![IpAddr::V4(own)]);
    }
    policy.resolve(name).filter(|addrs| !addrs.is_empty())
}

/// Denies everything.
#[derive(Debug, Default)]
pub struct DenyAll;

impl NetworkPolicy for DenyAll {
    fn allows(&self, _: SocketAddr, _: SocketUse) -> bool {
        false
    }
    fn sockets_enabled(&self) -> bool {
        false
    }
    fn name_lookup_enabled(&self) -> bool {
        false
    }
    fn allows_http(&self, _: &str, _: u16) -> bool {
        false
    }
}

/// The host's loopback addresses, nothing else: no name lookup either.
#[derive(Debug, Default)]
pub struct LoopbackOnly;

impl NetworkPolicy for LoopbackOnly {
    fn allows(&self, addr: SocketAddr, usage: SocketUse) -> bool {
        let ip = addr.ip();
        match usage {
            // The implicit bind before a connect or first send names the
            // unspecified address with port 0; where that socket may go is
            // checked on connect/send. An explicit bind of 0.0.0.0 to a real
            // port, or listening on it, would reach beyond loopback.
            SocketUse::TcpBind | SocketUse::UdpBind => {
                ip.is_loopback() || (ip.is_unspecified() && addr.port() == 0)
            }
            _ => ip.is_loopback(),
        }
    }
    fn sockets_enabled(&self) -> bool {
        true
    }
    fn name_lookup_enabled(&self) -> bool {
        false
    }
    fn allows_http(&self, host: &str, _: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// A task with a loopback address of its own and no firewall but loopback:
/// what `skiff run --network awsvpc|bridge` gives a one-off task. (Tasks of
/// the control plane get security groups and service discovery on top.)
#[derive(Debug, Clone, Copy)]
pub struct OwnAddress(pub Ipv4Addr);

impl NetworkPolicy for OwnAddress {
    fn allows(&self, addr: SocketAddr, usage: SocketUse) -> bool {
        match (usage, addr.ip()) {
            (SocketUse::TcpBind | SocketUse::TcpListen | SocketUse::UdpBind, ip) => ip == self.0,
            (_, IpAddr::V4(ip)) => ip.is_loopback(),
            (_, IpAddr::V6(_)) => false,
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
        Some(self.0)
    }
}

impl NetworkMode {
    /// Does a task in this mode have an address of its own?
    pub fn has_own_address(self) -> bool {
        matches!(self, NetworkMode::Bridge | NetworkMode::Awsvpc)
    }

    /// The policy that implements this mode. `address` is the task's own,
    /// for bridge and awsvpc (ignored otherwise); without one, such a task
    /// has no network at all.
    pub fn policy(self, address: Option<Ipv4Addr>) -> Arc<dyn NetworkPolicy> {
        match (self, address) {
            (NetworkMode::None, _) => Arc::new(DenyAll),
            (NetworkMode::Host, _) => Arc::new(LoopbackOnly),
            (NetworkMode::Bridge | NetworkMode::Awsvpc, Some(ip)) => Arc::new(OwnAddress(ip)),
            (NetworkMode::Bridge | NetworkMode::Awsvpc, None) => Arc::new(DenyAll),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only_refuses_everything_but_loopback() {
        let p = LoopbackOnly;
        let ok: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let ok6: SocketAddr = "[::1]:80".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:80".parse().unwrap();
        let lan: SocketAddr = "192.168.1.1:80".parse().unwrap();
        assert!(p.allows(ok, SocketUse::TcpConnect));
        assert!(p.allows(ok6, SocketUse::TcpBind));
        assert!(!p.allows(any, SocketUse::TcpBind));
        assert!(!p.allows(any, SocketUse::TcpListen));
        let implicit: SocketAddr = "0.0.0.0:0".parse().unwrap();
        assert!(p.allows(implicit, SocketUse::TcpBind));
        assert!(p.allows(implicit, SocketUse::UdpBind));
        assert!(!p.allows(implicit, SocketUse::TcpListen));
        assert!(!p.allows(lan, SocketUse::TcpConnect));
        assert!(p.sockets_enabled());
        assert!(!p.name_lookup_enabled(), "DNS would leave the machine");
        assert!(!DenyAll.sockets_enabled() && !DenyAll.name_lookup_enabled());
        assert!(p.allows_http("localhost", 80));

        assert!(p.allows_http("127.0.0.9", 80));
        assert!(p.allows_http("[::1]", 80));
        assert!(!p.allows_http("example.com", 80));
    }

    #[test]
    fn modes_parse_and_unknown_modes_are_refused_clearly() {
        assert_eq!("none".parse::<NetworkMode>(), Ok(NetworkMode::None));
        assert_eq!("host".parse::<NetworkMode>(), Ok(NetworkMode::Host));
        assert_eq!("awsvpc".parse::<NetworkMode>(), Ok(NetworkMode::Awsvpc));
        assert_eq!("bridge".parse::<NetworkMode>(), Ok(NetworkMode::Bridge));
        assert!(
            "wifi"
                .parse::<NetworkMode>()
                .unwrap_err()
                .contains("unknown")
        );
    }
}
