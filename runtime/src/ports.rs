//! Privileged ports on task addresses, without the privilege.
//!
//! Linux keeps the ports below `net.ipv4.ip_unprivileged_port_start` (1024
//! unless lowered) for processes with `CAP_NET_BIND_SERVICE`. A task with
//! an address of its own listens on 80 as any server on ECS does, but skiff
//! runs without root and then cannot bind `TASK_IP:80`. So when this process
//! lacks the capability, a privileged port P on a task address is bound and
//! dialled on the host as P + [`SHIFT`] (80 → 64592). Only the syscalls see
//! the shifted port: guests see P in their binds, local and remote
//! addresses and datagram sources, and so do security groups, port mappings,
//! load balancer targets and every API answer. The shifted range sits above
//! Linux's ephemeral ports (32768–60999), so no connection is ever given
//! one of its ports by the kernel; a guest binding one explicitly is told
//! it is in use.
//!
//! Host processes outside skiff (curl) reach such a port through a
//! published port (`-p`, bridge `hostPort`) or a load balancer — or at the
//! shifted port itself.
//!
//! Whether ports shift is a property of the process (its capabilities) and
//! of its task address block, so it is set once, by [`PortMap::install`],
//! when `skiff serve` or `skiff run` starts; until then nothing shifts.

use crate::addresses::AddressBlock;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

/// How far a privileged port moves: 1..=1023 → 64513..=65535.
pub const SHIFT: u16 = 64512;

/// Which ports of which addresses shift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMap {
    block: AddressBlock,
    /// Ports 1..below shift; 0 or 1: none does.
    below: u16,
}

static PROCESS: OnceLock<PortMap> = OnceLock::new();

/// `CAP_NET_BIND_SERVICE`'s bit in the capability sets.
const CAP_NET_BIND_SERVICE: u32 = 10;

impl PortMap {
    /// Nothing shifts.
    pub fn identity() -> PortMap {
        PortMap {
            block: AddressBlock::default(),
            below: 0,
        }
    }

    /// What this process needs for task addresses in `block`: the
    /// privileged ports shift unless it may bind them.
    pub fn detect(block: AddressBlock) -> PortMap {
        let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|s| s.trim().parse::<u16>().ok())
            .unwrap_or(1024);
        PortMap::new(block, start, may_bind_privileged())
    }

    /// Ports below `unprivileged_start` (at most 1024) shift unless
    /// `capable`.
    pub fn new(block: AddressBlock, unprivileged_start: u16, capable: bool) -> PortMap {
        PortMap {
            block,
            below: if capable {
                0
            } else {
                unprivileged_start.min(1024)
            },
        }
    }

    /// Makes `self` the process's map (the first call wins).
    pub fn install(self) {
        let _ = PROCESS.set(self);
    }

    /// The process's map ([`identity`](Self::identity) until installed).
    pub fn current() -> PortMap {
        PROCESS.get().copied().unwrap_or_else(PortMap::identity)
    }

    /// Do any ports shift?
    pub fn shifts(&self) -> bool {
        self.below > 1
    }

    fn task_address(&self, ip: IpAddr) -> bool {
        matches!(ip, IpAddr::V4(v4) if self.block.contains(v4))
    }

    /// Where `addr` is on the host: its port shifted if it is a privileged
    /// port of a task address.
    pub fn host(&self, addr: SocketAddr) -> SocketAddr {
        let p = addr.port();
        if p > 0 && p < self.below && self.task_address(addr.ip()) {
            SocketAddr::new(addr.ip(), p + SHIFT)
        } else {
            addr
        }
    }

    /// What a host address is to guests: a shifted port shifted back.
    pub fn guest(&self, addr: SocketAddr) -> SocketAddr {
        let p = addr.port();
        if self.shifts() && p > SHIFT && p - SHIFT < self.below && self.task_address(addr.ip()) {
            SocketAddr::new(addr.ip(), p - SHIFT)
        } else {
            addr
        }
    }

    /// Is `addr` a host port standing in for a privileged one (so not the
    /// guest's to bind as itself)?
    pub fn reserved(&self, addr: SocketAddr) -> bool {
        self.guest(addr) != addr
    }
}

/// May this process bind privileged ports (`CAP_NET_BIND_SERVICE` in its
/// effective set)? Asked with `capget(2)`: reading `/proc/self/status`,
/// which the kernel writes out whole, cost a start's worth of `skiff run`.
fn may_bind_privileged() -> bool {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    /// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets, as two `Data`.
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget writes at most two `Data` (version 3) into `data`
    // and reads `header`; both outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut Header,
            data.as_mut_ptr(),
        )
    };
    rc == 0 && data[0].effective & (1 << CAP_NET_BIND_SERVICE) != 0
}

/// [`PortMap::host`] of the process's map.
pub fn host(addr: SocketAddr) -> SocketAddr {
    PortMap::current().host(addr)
}

/// [`PortMap::guest`] of the process's map.
pub fn guest(addr: SocketAddr) -> SocketAddr {
    PortMap::current().guest(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn capget_agrees_with_the_status_file() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let caps = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
            .unwrap();
        assert_eq!(
            may_bind_privileged(),
            caps & (1 << CAP_NET_BIND_SERVICE) != 0
        );
    }

    #[test]
    fn privileged_ports_of_task_addresses_shift_and_shift_back() {
        let m = PortMap::new(AddressBlock::default(), 1024, false);
        assert!(m.shifts());
        assert_eq!(m.host(a("127.18.0.5:80")), a("127.18.0.5:64592"));
        assert_eq!(m.host(a("127.18.0.5:1023")), a("127.18.0.5:65535"));
        assert_eq!(m.guest(a("127.18.0.5:64592")), a("127.18.0.5:80"));
        for unchanged in [
            "127.18.0.5:1024",
            "127.18.0.5:0",
            "127.0.0.1:80",
            "127.19.0.1:80",
        ] {
            assert_eq!(m.host(a(unchanged)), a(unchanged), "{unchanged}");
        }
        // Ephemeral and ordinary high ports are what they are.
        assert_eq!(m.guest(a("127.18.0.5:40000")), a("127.18.0.5:40000"));
        assert_eq!(m.guest(a("127.18.0.5:64512")), a("127.18.0.5:64512"));
        assert!(m.reserved(a("127.18.0.5:64600")));
        assert!(!m.reserved(a("127.18.0.5:8080")));
    }

    #[test]
    fn nothing_shifts_for_a_capable_process_or_a_lowered_limit() {
        for m in [
            PortMap::new(AddressBlock::default(), 1024, true),
            PortMap::new(AddressBlock::default(), 0, false),
            PortMap::identity(),
        ] {
            assert!(!m.shifts());
            assert_eq!(m.host(a("127.18.0.5:80")), a("127.18.0.5:80"));
            assert_eq!(m.guest(a("127.18.0.5:64592")), a("127.18.0.5:64592"));
        }
        // A limit of 100: 80 shifts, 443 does not.
        let m = PortMap::new(AddressBlock::default(), 100, false);
        assert_eq!(m.host(a("127.18.0.5:80")), a("127.18.0.5:64592"));
        assert_eq!(m.host(a("127.18.0.5:443")), a("127.18.0.5:443"));
        assert_eq!(m.guest(a("127.18.0.5:64955")), a("127.18.0.5:64955"));
    }
}
