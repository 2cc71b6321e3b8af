//! Hosts for multi-machine tests and benches: Linux network namespaces,
//! each its own network stack, joined by a bridge in a namespace of its
//! own, with addresses assigned inside them (198.18.0.0/24, a block set
//! aside for benchmarking networks). Nothing leaves them; they are removed
//! when dropped. Making them needs root (CI runs as root).

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs `ip ARGS`, panicking with its error (and why it may fail).
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip (iproute2): {e}"));
    assert!(
        out.status.success(),
        "ip {args:?}: {} (network namespaces need root)",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Hosts 0..n on one bridge.
#[derive(Debug)]
pub struct Hosts {
    /// Each host's namespace name.
    pub names: Vec<String>,
    hub: String,
}

impl Hosts {
    /// Makes `n` hosts: host `i` has address [`Hosts::addr`]`(i)` on its
    /// `eth0`, and loopback up.
    pub fn new(n: usize) -> Hosts {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let tag = format!(
            "sk{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let hub = format!("{tag}hub");
        ip(&["netns", "add", &hub]);
        let mut hosts = Hosts {
            names: Vec::new(),
            hub: hub.clone(),
        };
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for i in 0..n {
            let ns = format!("{tag}h{i}");
            ip(&["netns", "add", &ns]);
            hosts.names.push(ns.clone());
            let port = format!("p{i}");
            ip(&[
                "link", "add", &port, "netns", &hub, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"]);
            let addr = format!("{}/24", Hosts::addr(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        hosts
    }

    /// Host `i`'s address.
    pub fn addr(i: usize) -> String {
        format!("198.18.0.{}", i + 1)
    }

    /// `program`, to be run on host `i`.
    pub fn command(&self, i: usize, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.names[i], program]);
        c
    }

    /// Cuts host `i` off the network (`up`: back on).
    pub fn link(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.names[i], "link", "set", "eth0", state]);
    }

    /// Moves the calling thread into host `i`'s network: the sockets it
    /// opens from now are that host's (threads it starts inherit it).
    pub fn enter(&self, i: usize) {
        enter(&self.names[i]);
    }
}

/// Moves the calling thread into the network namespace `name`.
pub fn enter(name: &str) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(format!("/run/netns/{name}"))
        .unwrap_or_else(|e| panic!("no network namespace {name}: {e}"));
    // SAFETY: setns(2) on a namespace file descriptor we hold open.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {name}: {}", std::io::Error::last_os_error());
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in self.names.iter().chain([&self.hub]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
