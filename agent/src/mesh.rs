//! Task connections between machines. Every machine's tasks have loopback
//! addresses in a block of its own (the control plane gives each
//! instance one); a task connecting to an address of another machine's
//! block is sent by its socket layer to this agent's *exit*
//! (`skiff_runtime::mesh`), and the agent carries the connection to the
//! other machine's agent's mesh listener, which connects it to the task
//! there — from the caller's own address, so the callee sees who called.
//! No root, no tunnel device: two TCP connections spliced, per
//! connection.
//!
//! The receiving agent judges every connection against its fabric before
//! connecting it: the caller's security groups (named in the header, by
//! the calling agent, which knows them) must allow it out, and the
//! callee's must let it in — the same rule a connection between tasks of
//! one machine meets. Agents prove they are the cluster's with the mesh
//! token the control plane gives them; a connection without it, or
//! refused, is reset.
//!
//! The header, one line: `SKIFF-MESH/1 TOKEN SRC_IP DST_IP:PORT GROUPS`,
//! `GROUPS` comma-separated or `-` (a bridge task: no groups); the answer
//! `OK` or `NO reason`. UDP crosses too: a task's datagram to another
//! machine's task lands on a *stand-in* the agent binds at that very
//! address on this machine's loopback (`skiff_runtime::mesh` asks for it
//! before the datagram leaves); each sender gets a mesh connection of its
//! own (header ending ` udp`) carrying length-prefixed datagrams both
//! ways, and the answers come back from the stand-in's address.

use skiff_channel::fabric::{Fabric, Proto, Route};
use skiff_channel::mesh::{Header, MAX_HEADER, dial, read_datagram, write_datagram};
use skiff_runtime::addresses::AddressBlock;
use skiff_runtime::mesh::Mesh;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};

/// How long a header may take to arrive, and a connection to be made.
const HANDSHAKE: Duration = Duration::from_secs(5);

/// What both ends need: the fabric (memberships, rules, routes), this
/// machine's block, the token.
pub struct MeshNode {
    fabric: Arc<Fabric>,
    own: AddressBlock,
    token: RwLock<String>,
    /// The UDP stand-ins listening, by address.
    stand_ins: Mutex<HashSet<SocketAddr>>,
    /// The runtime its work runs on (set by `start`).
    handle: std::sync::OnceLock<tokio::runtime::Handle>,
}

impl MeshNode {
    pub fn new(fabric: Arc<Fabric>, own: AddressBlock) -> Arc<MeshNode> {
        Arc::new(MeshNode {
            fabric,
            own,
            token: RwLock::new(String::new()),
            stand_ins: Mutex::new(HashSet::new()),
            handle: std::sync::OnceLock::new(),
        })
    }

    /// The token the control plane gave.
    pub fn set_token(&self, token: &str) {
        if let Ok(mut t) = self.token.write() {
            *t = token.to_string();
        }
    }

    fn token(&self) -> String {
        self.token.read().map(|t| t.clone()).unwrap_or_default()
    }

    /// Tells the runtime which addresses are other machines' (the node
    /// does so itself within 100 ms of the routes changing).
    pub fn routes_changed(&self) {
        let routes = self.fabric.routes();
        let ours = self.own_instance(&routes);
        let blocks = routes
            .iter()
            .filter(|r| ours.is_none_or(|i| r.instance != i))
            .filter_map(|r| r.block.parse::<AddressBlock>().ok())
            .filter(|b| *b != self.own)
            .collect();
        Mesh::current().set_remote(blocks);
    }

    /// This machine's instance: the one its own block is routed to.
    fn own_instance<'a>(&self, routes: &'a [Route]) -> Option<&'a str> {
        routes
            .iter()
            .find(|r| r.block.parse::<AddressBlock>().is_ok_and(|b| b == self.own))
            .map(|r| r.instance.as_str())
            .filter(|i| !i.is_empty())
    }

    /// Does this machine answer for `ip`: a task address of its own, or
    /// another block routed here (where the control plane's machine
    /// serves its load balancers to tasks)?
    fn answers_for(&self, ip: Ipv4Addr) -> bool {
        if self.own.contains(ip) {
            return true;
        }
        let routes = self.fabric.routes();
        let Some(ours) = self.own_instance(&routes) else {
            return false;
        };
        routes.iter().any(|r| {
            r.instance == ours
                && r.block
                    .parse::<AddressBlock>()
                    .is_ok_and(|b| b.contains(ip))
        })
    }

    /// The mesh listener of the machine whose block holds `ip`.
    fn via(&self, ip: Ipv4Addr) -> Option<String> {
        self.fabric
            .routes()
            .into_iter()
            .find(|r| {
                r.block
                    .parse::<AddressBlock>()
                    .is_ok_and(|b| b.contains(ip))
            })
            .map(|r| r.via)
    }

    /// Starts the exit (on loopback) and the mesh listener (on `listen`):
    /// the address the listener got.
    pub async fn start(self: &Arc<Self>, listen: SocketAddr) -> std::io::Result<SocketAddr> {
        let _ = self.handle.set(tokio::runtime::Handle::current());
        let exit = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        Mesh::current().set_exit(exit.local_addr()?);
        let weak = Arc::downgrade(self);
        Mesh::current().set_stand_in(Arc::new(move |wanted, host| {
            if let Some(node) = weak.upgrade() {
                node.stand_in(wanted, host);
            }
        }));
        let inbound = TcpListener::bind(listen).await?;
        let bound = inbound.local_addr()?;
        // The runtime learns other machines' blocks as routes change.
        let watched = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut seen = None;
            while let Some(node) = watched.upgrade() {
                let now = node.fabric.generation();
                if seen != Some(now) {
                    seen = Some(now);
                    node.routes_changed();
                }
                drop(node);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let node = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                match exit.accept().await {
                    Ok((conn, from)) => {
                        let node = Arc::clone(&node);
                        tokio::spawn(async move { node.carry(conn, from).await });
                    }
                    Err(e) => {
                        tracing::warn!("mesh exit: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
        let node = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                match inbound.accept().await {
                    Ok((conn, peer)) => {
                        let node = Arc::clone(&node);
                        tokio::spawn(async move {
                            if let Err(why) = node.deliver(conn).await {
                                tracing::info!(%peer, "mesh connection refused: {why}");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!("mesh listener: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
        Ok(bound)
    }

    /// A task's connection, accepted by the exit: carried to the machine
    /// of its destination, or reset.
    async fn carry(&self, mut conn: TcpStream, from: SocketAddr) {
        let mesh = Mesh::current();
        let outcome = async {
            let dest = mesh.destination(from).ok_or("no destination noted")?;
            let (IpAddr::V4(dest_ip), IpAddr::V4(src)) = (dest.ip(), from.ip()) else {
                return Err("not IPv4".to_string());
            };
            let via = self.via(dest_ip).ok_or("no machine has that address")?;
            let header = Header {
                token: self.token(),
                src,
                dst: dest,
                groups: self.fabric.groups_of(src),
                proto: Proto::Tcp,
            };
            dial(&via, &header, HANDSHAKE).await
        }
        .await;
        match outcome {
            Ok(mut far) => {
                let _ = conn.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut far).await;
            }
            Err(why) => {
                tracing::debug!(%from, "mesh: {why}");
                // A reset, as a refused connection is.
                let _ = conn.set_zero_linger();
            }
        }
        mesh.forget(from);
    }

    /// Another machine's connection: judged, then connected to the task
    /// here, from the caller's address.
    async fn deliver(&self, conn: TcpStream) -> Result<(), String> {
        let _ = conn.set_nodelay(true);
        let mut reader = BufReader::new(conn);
        let mut line = String::new();
        let read = tokio::time::timeout(HANDSHAKE, async {
            let mut limited = (&mut reader).take(MAX_HEADER);
            limited.read_line(&mut line).await
        })
        .await;
        if !matches!(read, Ok(Ok(n)) if n > 0 && line.ends_with('\n')) {
            return Err("no header".into());
        }
        let refuse = |reader: BufReader<TcpStream>, why: String| async move {
            let mut conn = reader.into_inner();
            let _ = conn.write_all(format!("NO {why}\n").as_bytes()).await;
            Err::<(), String>(why)
        };
        let h = match Header::parse(line.trim_end()) {
            Ok(h) => h,
            Err(e) => return refuse(reader, e).await,
        };
        let expected = self.token();
        if expected.is_empty() || !same(&h.token, &expected) {
            return refuse(reader, "not one of the cluster's agents".into()).await;
        }
        let IpAddr::V4(dest_ip) = h.dst.ip() else {
            return refuse(reader, "not an IPv4 destination".into()).await;
        };
        if !self.answers_for(dest_ip) || !h.src.is_loopback() || self.own.contains(h.src) {
            return refuse(
                reader,
                format!("{} is not a task address of this machine", h.dst),
            )
            .await;
        }
        if !self
            .fabric
            .allows(h.src, h.groups.as_deref(), h.dst, h.proto)
        {
            return refuse(
                reader,
                format!(
                    "security groups refuse {} ({}) → {} ({}, {:?})",
                    h.src,
                    h.groups
                        .as_deref()
                        .map(|g| g.join(","))
                        .unwrap_or_else(|| "no groups".into()),
                    h.dst,
                    self.fabric
                        .groups_of(dest_ip)
                        .map(|g| g.join(","))
                        .unwrap_or_else(|| "no groups".into()),
                    h.proto
                ),
            )
            .await;
        }
        if h.proto == Proto::Udp {
            return self.deliver_datagrams(reader, h).await;
        }
        // From the caller's address (any 127/8 address is this machine's
        // to bind), to the task's port as the host has it.
        let connected = async {
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(h.src.into(), 0))?;
            socket.connect(skiff_runtime::ports::host(h.dst)).await
        };
        let mut task = match tokio::time::timeout(HANDSHAKE, connected).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return refuse(reader, format!("{}: {e}", h.dst)).await,
            Err(_) => return refuse(reader, format!("{}: no answer", h.dst)).await,
        };
        let _ = task.set_nodelay(true);
        reader
            .get_mut()
            .write_all(b"OK\n")
            .await
            .map_err(|e| e.to_string())?;
        let _ = tokio::io::copy_bidirectional(&mut reader, &mut task).await;
        Ok(())
    }
}

impl MeshNode {
    /// Datagrams from another machine's task (`h.src`) to a task here, and
    /// its answers back, over one accepted mesh connection: sent from the
    /// caller's address, so the callee answers it.
    async fn deliver_datagrams(
        &self,
        mut reader: BufReader<TcpStream>,
        h: Header,
    ) -> Result<(), String> {
        let socket = UdpSocket::bind(SocketAddr::new(h.src.into(), 0))
            .await
            .map_err(|e| format!("cannot send from {}: {e}", h.src))?;
        socket
            .connect(skiff_runtime::ports::host(h.dst))
            .await
            .map_err(|e| format!("{}: {e}", h.dst))?;
        reader
            .get_mut()
            .write_all(b"OK\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 65_536];
        loop {
            tokio::select! {
                frame = read_datagram(&mut reader) => match frame {
                    Ok(Some(payload)) => {
                        let _ = socket.send(&payload).await;
                    }
                    _ => return Ok(()),
                },
                got = socket.recv(&mut buf) => {
                    let Ok(n) = got else { continue };
                    if write_datagram(reader.get_mut(), &buf[..n]).await.is_err() {
                        return Ok(());
                    }
                }
                () = tokio::time::sleep(UDP_IDLE) => return Ok(()),
            }
        }
    }

    /// Makes sure a stand-in listens at `host` (this machine's loopback)
    /// for another machine's task at `wanted`: datagrams a task here sends
    /// there are carried to it, and its answers come back from `host`.
    pub fn stand_in(self: &Arc<Self>, wanted: SocketAddr, host: SocketAddr) {
        let Some(handle) = self.handle.get().cloned() else {
            return;
        };
        let Ok(mut standing) = self.stand_ins.lock() else {
            return;
        };
        if standing.contains(&host) {
            return;
        }
        // Bound now, before the datagram that asked for it is sent; served
        // on the agent's runtime (the caller may be a guest's thread).
        let bound =
            std::net::UdpSocket::bind(host).and_then(|s| s.set_nonblocking(true).map(|()| s));
        let socket = match bound {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%host, "cannot stand in for {wanted}: {e}");
                return;
            }
        };
        standing.insert(host);
        let node = Arc::clone(self);
        handle.spawn(async move {
            match UdpSocket::from_std(socket) {
                Ok(socket) => {
                    Arc::clone(&node)
                        .serve_stand_in(Arc::new(socket), wanted)
                        .await
                }
                Err(e) => tracing::warn!(%host, "cannot stand in for {wanted}: {e}"),
            }
            if let Ok(mut s) = node.stand_ins.lock() {
                s.remove(&host);
            }
        });
    }

    /// A stand-in's life: each local sender gets a mesh connection of its
    /// own to `wanted`'s machine; idle for a minute, it ends.
    async fn serve_stand_in(self: Arc<Self>, socket: Arc<UdpSocket>, wanted: SocketAddr) {
        let mut senders: HashMap<SocketAddr, tokio::sync::mpsc::Sender<Vec<u8>>> = HashMap::new();
        let mut buf = vec![0u8; 65_536];
        loop {
            let got = tokio::time::timeout(UDP_IDLE, socket.recv_from(&mut buf)).await;
            let Ok(Ok((n, from))) = got else {
                if got.is_err() {
                    return;
                }
                continue;
            };
            let payload = buf[..n].to_vec();
            if let Some(tx) = senders.get(&from)
                && tx.send(payload.clone()).await.is_ok()
            {
                continue;
            }
            senders.remove(&from);
            let (IpAddr::V4(src), IpAddr::V4(dest_ip)) = (from.ip(), wanted.ip()) else {
                continue;
            };
            let Some(via) = self.via(dest_ip) else {
                continue;
            };
            let header = Header {
                token: self.token(),
                src,
                dst: wanted,
                groups: self.fabric.groups_of(src),
                proto: Proto::Udp,
            };
            let far = match dial(&via, &header, HANDSHAKE).await {
                Ok(far) => far,
                Err(why) => {
                    // Lost, as a datagram may be.
                    tracing::debug!(%from, %wanted, "mesh: {why}");
                    continue;
                }
            };
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
            let _ = tx.send(payload).await;
            senders.insert(from, tx);
            let socket = Arc::clone(&socket);
            tokio::spawn(async move {
                let (mut far_rx, mut far_tx) = far.into_split();
                loop {
                    tokio::select! {
                        out = rx.recv() => match out {
                            Some(p) => {
                                if write_datagram(&mut far_tx, &p).await.is_err() {
                                    return;
                                }
                            }
                            None => return,
                        },
                        back = read_datagram(&mut far_rx) => match back {
                            Ok(Some(p)) => {
                                let _ = socket.send_to(&p, from).await;
                            }
                            _ => return,
                        },
                    }
                }
            });
        }
    }
}

/// How long a UDP path between machines lasts without a datagram.
const UDP_IDLE: Duration = Duration::from_secs(60);

/// Constant-time comparison of secrets.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}
