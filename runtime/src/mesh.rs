//! Task addresses on other machines. A cluster's task addresses are all
//! loopback addresses, each machine's in a block of its own; a connection
//! from a task here to an address in another machine's block cannot go to
//! that address (it is this machine's loopback). The task's socket layer
//! (`sockets.rs`) sends it instead to the local *exit* — a listener of
//! the agent's, which carries it to the other machine's agent — after
//! noting where it was going, keyed by the connection's own (task address,
//! port). The agent looks that up when it accepts ([`Mesh::destination`]);
//! the guest, asking its socket for its peer, is told the address it
//! connected to, not the exit.
//!
//! One per process, like [`crate::ports::PortMap`]: the agent sets the
//! exit and the other machines' blocks; a process that sets nothing has
//! no remote addresses, and connections go where they are sent.

use crate::addresses::AddressBlock;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock, Mutex, RwLock};

/// Makes sure a stand-in listens at a remote task's UDP address (the
/// guest's view of it, and where the host has it).
pub type StandIn = Arc<dyn Fn(SocketAddr, SocketAddr) + Send + Sync>;

/// See the module's documentation.
#[derive(Default)]
pub struct Mesh {
    /// Other machines' blocks.
    remote: RwLock<Vec<AddressBlock>>,
    /// Where connections to them go first.
    exit: RwLock<Option<SocketAddr>>,
    /// Each diverted connection's destination, by its local address.
    diverted: Mutex<HashMap<SocketAddr, SocketAddr>>,
    /// UDP: datagrams to another machine's task go to a stand-in the
    /// agent binds at that address on this machine's loopback (any 127/8
    /// address is this machine's to bind), which carries them there and
    /// its answers back, from that address.
    stand_in: RwLock<Option<StandIn>>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("exit", &self.exit)
            .finish_non_exhaustive()
    }
}

static MESH: LazyLock<Mesh> = LazyLock::new(Mesh::default);

impl Mesh {
    /// The process's.
    pub fn current() -> &'static Mesh {
        &MESH
    }

    /// Sets where connections to other machines' tasks go first.
    pub fn set_exit(&self, exit: SocketAddr) {
        if let Ok(mut e) = self.exit.write() {
            *e = Some(exit);
        }
    }

    /// Sets the other machines' blocks (replacing those set before).
    pub fn set_remote(&self, blocks: Vec<AddressBlock>) {
        if let Ok(mut r) = self.remote.write() {
            *r = blocks;
        }
    }

    /// Is `ip` a task address of another machine (with an exit to reach it)?
    pub fn is_remote(&self, ip: IpAddr) -> bool {
        let IpAddr::V4(ip) = ip else {
            return false;
        };
        self.exit.read().is_ok_and(|e| e.is_some())
            && self
                .remote
                .read()
                .is_ok_and(|r| r.iter().any(|b| b.contains(ip)))
    }

    /// Sets how UDP stand-ins are made.
    pub fn set_stand_in(&self, f: StandIn) {
        if let Ok(mut s) = self.stand_in.write() {
            *s = Some(f);
        }
    }

    /// Makes sure a stand-in listens for `wanted` (another machine's task
    /// address; at `host` here), if it is one.
    pub(crate) fn stand_in_udp(&self, wanted: SocketAddr, host: SocketAddr) {
        if !self.is_remote(wanted.ip()) {
            return;
        }
        let f = self.stand_in.read().ok().and_then(|s| s.clone());
        if let Some(f) = f {
            f(wanted, host);
        }
    }

    /// Is `addr` the exit?
    pub fn is_exit(&self, addr: SocketAddr) -> bool {
        self.exit.read().is_ok_and(|e| *e == Some(addr))
    }

    /// Notes that the connection from `local` is for `destination`: where
    /// it must connect instead (the exit), if `destination` is remote.
    pub(crate) fn divert(&self, local: SocketAddr, destination: SocketAddr) -> Option<SocketAddr> {
        if !self.is_remote(destination.ip()) {
            return None;
        }
        let exit = (*self.exit.read().ok()?)?;
        if let Ok(mut d) = self.diverted.lock() {
            d.insert(local, destination);
        }
        Some(exit)
    }

    /// Where the connection from `local` (accepted by the exit) was going.
    pub fn destination(&self, local: SocketAddr) -> Option<SocketAddr> {
        self.diverted.lock().ok()?.get(&local).copied()
    }

    /// Forgets the connection from `local` (it closed).
    pub fn forget(&self, local: SocketAddr) {
        if let Ok(mut d) = self.diverted.lock() {
            d.remove(&local);
        }
    }

    /// The peer a guest's connection from `local` has, as the guest knows
    /// it: the destination it asked for, if it went through the exit.
    pub(crate) fn peer(&self, local: SocketAddr, peer: SocketAddr) -> SocketAddr {
        if self.is_exit(peer) {
            self.destination(local).unwrap_or(peer)
        } else {
            peer
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_addresses_go_through_the_exit_and_keep_their_name() {
        let m = Mesh::default();
        let there: SocketAddr = "127.64.64.9:8080".parse().unwrap();
        let here: SocketAddr = "127.64.0.5:40000".parse().unwrap();
        m.set_remote(vec!["127.64.64.0/18".parse().unwrap()]);
        assert!(!m.is_remote(there.ip()), "no exit yet: nothing is remote");
        let exit: SocketAddr = "127.0.0.1:7702".parse().unwrap();
        m.set_exit(exit);
        assert!(m.is_remote(there.ip()));
        assert!(!m.is_remote("127.64.0.9".parse().unwrap()));
        assert_eq!(m.divert(here, there), Some(exit));
        assert_eq!(m.divert(here, "127.64.0.9:80".parse().unwrap()), None);
        assert_eq!(m.destination(here), Some(there));
        assert_eq!(m.peer(here, exit), there);
        let other: SocketAddr = "127.64.0.7:1".parse().unwrap();
        assert_eq!(m.peer(here, other), other);
        m.forget(here);
        assert_eq!(m.destination(here), None);
    }
}
