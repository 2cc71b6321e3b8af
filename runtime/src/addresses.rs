//! Task addresses: one loopback address per awsvpc task (or bridge
//! container), leased from a block inside 127.0.0.0/8.
//!
//! Loopback is one per machine, so every skiff process on it (a server, a
//! `skiff run`, the servers of a parallel test run) leases from the same
//! place: a directory of small files, one per address in use, changed only
//! under an exclusive lock on the directory. A lease names the process that
//! holds it (pid and start time), so one left by a process that died is
//! taken back. A released address rests for [`QUARANTINE`] before it is
//! handed out again, so a client still talking to the old task does not
//! reach a new one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a released address rests before it is leased again.
pub const QUARANTINE: Duration = Duration::from_secs(60);

/// A block of loopback addresses, such as the default `127.18.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressBlock {
    base: u32,
    prefix: u8,
}

impl Default for AddressBlock {
    fn default() -> Self {
        AddressBlock {
            base: u32::from(Ipv4Addr::new(127, 18, 0, 0)),
            prefix: 16,
        }
    }
}

impl FromStr for AddressBlock {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = s.split_once('/').ok_or_else(|| {
            format!("address block {s:?} is not in CIDR form (such as 127.18.0.0/16)")
        })?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("address block {s:?}: {ip:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("address block {s:?}: the prefix length must be 8 to 30"))?;
        if !ip.is_loopback() {
            return Err(format!(
                "address block {s:?} is not inside 127.0.0.0/8: tasks only ever get loopback addresses"
            ));
        }
        let mask = u32::MAX << (32 - prefix);
        if u32::from(ip) & !mask != 0 {
            return Err(format!(
                "address block {s:?} has host bits set (did you mean {}/{prefix}?)",
                Ipv4Addr::from(u32::from(ip) & mask)
            ));
        }
        let block = AddressBlock {
            base: u32::from(ip),
            prefix,
        };
        if block.contains(Ipv4Addr::LOCALHOST) {
            return Err(format!(
                "address block {s:?} holds 127.0.0.1, which is the host's own: pick a block such as 127.18.0.0/16"
            ));
        }
        Ok(block)
    }
}

impl std::fmt::Display for AddressBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

impl AddressBlock {
    /// Do the two blocks share an address?
    pub fn overlaps(&self, other: &AddressBlock) -> bool {
        let shorter = self.prefix.min(other.prefix);
        let mask = if shorter == 0 {
            0
        } else {
            u32::MAX << (32 - shorter)
        };
        self.base & mask == other.base & mask
    }

    /// Is `ip` in the block?
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(ip) & mask == self.base
    }

    /// How many addresses the block has.
    fn size(&self) -> u32 {
        1 << (32 - self.prefix)
    }

    /// The `n`th address of the block (wrapping), unless it ends in .0 or
    /// .255: those read as network and broadcast addresses even on loopback,
    /// where they are not.
    fn candidate(&self, n: u32) -> Option<Ipv4Addr> {
        let ip = Ipv4Addr::from(self.base + n % self.size());
        let last = ip.octets()[3];
        (last != 0 && last != 255).then_some(ip)
    }
}

/// Leases addresses from a block (see the module's documentation).
#[derive(Debug)]
pub struct AddressPool {
    block: AddressBlock,
    dir: PathBuf,
    /// Where the next search starts, so leases go round the block.
    next: Mutex<u32>,
}

/// An address held by this process until dropped (or [`Lease::release`]d).
#[derive(Debug)]
pub struct Lease {
    ip: Ipv4Addr,
    dir: PathBuf,
    released: bool,
}

impl Lease {
    /// The leased address.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// Gives the address back, to be leased again after [`QUARANTINE`].
    pub fn release(mut self) -> io::Result<()> {
        self.released = true;
        release(&self.dir, self.ip)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.released
            && let Err(e) = release(&self.dir, self.ip)
        {
            tracing::warn!(ip = %self.ip, error = %e, "could not release a task address");
        }
    }
}

impl AddressPool {
    /// A pool over `block`, shared with every skiff process of this user on
    /// the machine.
    pub fn new(block: AddressBlock) -> io::Result<AddressPool> {
        AddressPool::with_dir(block, default_dir())
    }

    /// A pool whose leases live in `dir` (created if missing).
    pub fn with_dir(block: AddressBlock, dir: impl Into<PathBuf>) -> io::Result<AddressPool> {
        let dir = dir.into();
        private_dir(&dir)?;
        // Processes start their search at different places, so that two
        // that start at once rarely contend for the same address.
        let start = std::process::id().wrapping_mul(2_654_435_761) % block.size();
        Ok(AddressPool {
            block,
            dir,
            next: Mutex::new(start),
        })
    }

    /// The block the pool leases from.
    pub fn block(&self) -> AddressBlock {
        self.block
    }

    /// Leases a free address for `owner` (a task ARN, `skiff run`...).
    pub fn acquire(&self, owner: &str) -> io::Result<Lease> {
        let _lock = DirLock::new(&self.dir)?;
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let now = unix_now();
        let me = Holder::me();
        for i in 0..self.block.size() {
            let n = next.wrapping_add(i);
            let Some(ip) = self.block.candidate(n) else {
                continue;
            };
            let path = self.dir.join(ip.to_string());
            let free = match fs::read_to_string(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => true,
                Err(e) => return Err(e),
                Ok(text) => match LeaseState::parse(&text) {
                    LeaseState::Released(at) => now.saturating_sub(at) >= QUARANTINE.as_secs(),
                    LeaseState::Held(holder) => !holder.alive(),
                    // A file we cannot read as a lease is left alone.
                    LeaseState::Unknown => false,
                },
            };
            if free {
                write_atomic(&path, &format!("held {} {} {owner}\n", me.pid, me.start))?;
                *next = n.wrapping_add(1);
                return Ok(Lease {
                    ip,
                    dir: self.dir.clone(),
                    released: false,
                });
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!(
                "every address of {} is in use or resting after release",
                self.block
            ),
        ))
    }
}

fn release(dir: &Path, ip: Ipv4Addr) -> io::Result<()> {
    let _lock = DirLock::new(dir)?;
    write_atomic(
        &dir.join(ip.to_string()),
        &format!("released {}\n", unix_now()),
    )
}

/// Where leases live: the user's runtime directory if there is one, else a
/// private directory under the temporary directory.
fn default_dir() -> PathBuf {
    if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(run).join("skiff").join("addresses");
    }
    let uid = unsafe { libc::geteuid() };
    std::env::temp_dir()
        .join(format!("skiff-{uid}"))
        .join("addresses")
}

/// Creates `dir` (mode 0700) and makes sure it is ours and not a symlink:
/// under a shared /tmp another user could have made it first.
fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = fs::symlink_metadata(dir)?;
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a directory owned by this user; refusing to keep address leases there",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// An exclusive lock on a lease directory, held while it lives.
struct DirLock(File);

impl DirLock {
    fn new(dir: &Path) -> io::Result<DirLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".lock"))?;
        file.lock()?;
        Ok(DirLock(file))
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    drop(f);
    fs::rename(&tmp, path)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A process, told apart from a later one with the same pid by its start
/// time.
#[derive(Debug, PartialEq, Eq)]
struct Holder {
    pid: u32,
    start: u64,
}

impl Holder {
    fn me() -> Holder {
        let pid = std::process::id();
        Holder {
            pid,
            start: start_time(pid).unwrap_or(0),
        }
    }

    fn alive(&self) -> bool {
        start_time(self.pid).is_some_and(|s| s == self.start)
    }
}

/// A process's start time (field 22 of `/proc/PID/stat`), if it exists.
fn start_time(pid: u32) -> Option<u64> {
    let mut stat = String::new();
    File::open(format!("/proc/{pid}/stat"))
        .ok()?
        .read_to_string(&mut stat)
        .ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

enum LeaseState {
    Held(Holder),
    Released(u64),
    Unknown,
}

impl LeaseState {
    fn parse(text: &str) -> LeaseState {
        let mut words = text.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("held"), Some(pid), Some(start)) => match (pid.parse(), start.parse()) {
                (Ok(pid), Ok(start)) => LeaseState::Held(Holder { pid, start }),
                _ => LeaseState::Unknown,
            },
            (Some("released"), Some(at), _) => {
                at.parse().map_or(LeaseState::Unknown, LeaseState::Released)
            }
            _ => LeaseState::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_overlap_when_they_share_an_address() {
        let b = |s: &str| s.parse::<AddressBlock>().unwrap();
        assert!(b("127.64.0.0/10").overlaps(&b("127.65.64.0/18")));
        assert!(b("127.65.64.0/18").overlaps(&b("127.64.0.0/10")));
        assert!(!b("127.18.0.0/16").overlaps(&b("127.64.0.0/10")));
        assert!(!b("127.64.0.0/18").overlaps(&b("127.64.64.0/18")));
    }

    #[test]
    fn blocks_parse_and_stay_on_loopback() {
        let b: AddressBlock = "127.18.0.0/16".parse().unwrap();
        assert_eq!(b, AddressBlock::default());
        assert!(b.contains(Ipv4Addr::new(127, 18, 3, 4)));
        assert!(!b.contains(Ipv4Addr::new(127, 19, 0, 1)));
        for (bad, says) in [
            ("10.0.0.0/16", "not inside 127.0.0.0/8"),
            ("192.168.0.0/24", "not inside 127.0.0.0/8"),
            ("127.18.0.1/16", "host bits"),
            ("127.0.0.0/16", "127.0.0.1"),
            ("127.18.0.0/4", "8 to 30"),
            ("127.18.0.0", "CIDR"),
        ] {
            let err = bad.parse::<AddressBlock>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn leases_are_exclusive_and_rest_after_release() {
        let dir = tempfile::tempdir().unwrap();
        // A /29 holds 8 addresses; all but 127.18.9.0 are leasable.
        let block: AddressBlock = "127.18.9.0/29".parse().unwrap();
        let pool = AddressPool::with_dir(block, dir.path()).unwrap();
        let mut held = Vec::new();
        while let Ok(lease) = pool.acquire("test") {
            assert!(block.contains(lease.ip()));
            assert_ne!(lease.ip().octets()[3], 0);
            held.push(lease);
        }
        let ips: std::collections::HashSet<_> = held.iter().map(Lease::ip).collect();
        assert_eq!(ips.len(), held.len(), "an address was leased twice");
        assert_eq!(held.len(), 7);
        // A second pool (another process's view) sees them taken.
        let other = AddressPool::with_dir(block, dir.path()).unwrap();
        assert!(other.acquire("other").is_err());
        // Released, an address rests: still not leasable.
        held.pop().unwrap().release().unwrap();
        let err = other.acquire("other").unwrap_err();
        assert!(err.to_string().contains("resting"), "{err}");
    }

    #[test]
    fn a_dead_holders_lease_is_taken_back() {
        let dir = tempfile::tempdir().unwrap();
        let block: AddressBlock = "127.18.9.0/30".parse().unwrap();
        let pool = AddressPool::with_dir(block, dir.path()).unwrap();
        // Fill the block with leases of a process that no longer exists
        // (pid 0 is never a user process).
        for n in 1..4 {
            fs::write(dir.path().join(format!("127.18.9.{n}")), "held 0 1 gone\n").unwrap();
        }
        let lease = pool.acquire("new").unwrap();
        let text = fs::read_to_string(dir.path().join(lease.ip().to_string())).unwrap();
        assert!(
            text.starts_with(&format!("held {} ", std::process::id())),
            "{text}"
        );
        assert!(text.trim_end().ends_with(" new"), "{text}");
    }
}
