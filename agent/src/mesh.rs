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
//! `OK` or `NO reason`. Only TCP crosses machines.

use skiff_channel::fabric::{Fabric, Proto};
use skiff_channel::mesh::{Header, MAX_HEADER, dial};
use skiff_runtime::addresses::AddressBlock;
use skiff_runtime::mesh::Mesh;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// How long a header may take to arrive, and a connection to be made.
const HANDSHAKE: Duration = Duration::from_secs(5);

/// What both ends need: the fabric (memberships, rules, routes), this
/// machine's block, the token.
pub struct MeshNode {
    fabric: Arc<Fabric>,
    own: AddressBlock,
    token: RwLock<String>,
}

impl MeshNode {
    pub fn new(fabric: Arc<Fabric>, own: AddressBlock) -> Arc<MeshNode> {
        Arc::new(MeshNode {
            fabric,
            own,
            token: RwLock::new(String::new()),
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
        let blocks = self
            .fabric
            .routes()
            .iter()
            .filter_map(|r| r.block.parse::<AddressBlock>().ok())
            .filter(|b| *b != self.own)
            .collect();
        Mesh::current().set_remote(blocks);
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
        let exit = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        Mesh::current().set_exit(exit.local_addr()?);
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
        if !self.own.contains(dest_ip) || !h.src.is_loopback() || self.own.contains(h.src) {
            return refuse(
                reader,
                format!("{} is not a task address of this machine", h.dst),
            )
            .await;
        }
        if !self
            .fabric
            .allows(h.src, h.groups.as_deref(), h.dst, Proto::Tcp)
        {
            return refuse(
                reader,
                format!("security groups refuse {} → {}", h.src, h.dst),
            )
            .await;
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

/// Constant-time comparison of secrets.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}
