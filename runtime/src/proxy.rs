//! Published ports: a listener on the host's loopback whose connections
//! are carried to a task's own address (bridge `portMappings` and
//! `skiff run -p` with `--network bridge|awsvpc`).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{LazyLock, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// How long reaching the task may take before the client is dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The published ports of this process (where they listen on the host) and
/// the task address each leads to, so a request for a published port can
/// be handed to the server behind it (see `http::Local::find`).
static PUBLISHED: LazyLock<RwLock<HashMap<SocketAddr, SocketAddr>>> =
    LazyLock::new(Default::default);

/// The task address the published port listening at `addr` leads to.
pub(crate) fn leads_to(addr: SocketAddr) -> Option<SocketAddr> {
    PUBLISHED.read().ok()?.get(&addr).copied()
}

/// Lists a published port in [`PUBLISHED`] while it lives.
struct Listed(SocketAddr);

impl Drop for Listed {
    fn drop(&mut self) {
        if let Ok(mut table) = PUBLISHED.write() {
            table.remove(&self.0);
        }
    }
}

/// Carries every connection accepted on `listener` to `target` until
/// `shutdown` completes; then stops accepting and drops the connections
/// still open. A connection the task refuses (not listening yet, or gone)
/// is closed at once, as a closed port would be.
pub async fn forward_tcp(
    listener: TcpListener,
    target: SocketAddr,
    shutdown: impl Future<Output = ()>,
) {
    forward_tcp_admitting(listener, target, |_| true, shutdown).await;
}

/// [`forward_tcp`], carrying only the connections whose client address
/// `admit` accepts (a task's security groups, for its public address);
/// the others are closed at once, as a filtered port would be.
pub async fn forward_tcp_admitting(
    listener: TcpListener,
    target: SocketAddr,
    admit: impl Fn(SocketAddr) -> bool,
    shutdown: impl Future<Output = ()>,
) {
    let listed = listener.local_addr().ok().map(|at| {
        if let Ok(mut table) = PUBLISHED.write() {
            table.insert(at, target);
        }
        Listed(at)
    });
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) if admit(peer) => {
                    connections.spawn(carry(client, target));
                }
                Ok((client, peer)) => {
                    tracing::debug!(%peer, %target, "published port: the task's security groups refuse this client");
                    drop(client);
                }
                Err(e) => {
                    // Out of file descriptors and the like: keep going.
                    tracing::warn!("accept failed on a published port: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listed);
    connections.shutdown().await;
}

async fn carry(mut client: TcpStream, target: SocketAddr) {
    let _ = client.set_nodelay(true);
    let at = crate::ports::host(target);
    let mut task = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(at)).await {
        Ok(Ok(task)) => task,
        Ok(Err(e)) => {
            tracing::debug!(%target, "published port: the task refused the connection: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%target, "published port: the task did not answer in time");
            return;
        }
    };
    let _ = task.set_nodelay(true);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut task).await {
        tracing::debug!(%target, "published connection ended with an error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn carries_bytes_both_ways_and_stops_on_shutdown() {
        let task = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = task.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = task.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 5];
                    s.read_exact(&mut buf).await.unwrap();
                    s.write_all(&buf.map(|b| b.to_ascii_uppercase()))
                        .await
                        .unwrap();
                });
            }
        });
        let published = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = published.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let proxy = tokio::spawn(forward_tcp(published, target, async {
            let _ = stopped.await;
        }));
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut reply = [0u8; 5];
        c.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"HELLO");
        stop.send(()).unwrap();
        proxy.await.unwrap();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "still listening after shutdown"
        );
    }

    #[tokio::test]
    async fn a_refused_task_connection_closes_the_client() {
        // A port nothing listens on.
        let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = gone.local_addr().unwrap();
        drop(gone);
        let published = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = published.local_addr().unwrap();
        tokio::spawn(forward_tcp(published, target, std::future::pending()));
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf))
            .await
            .expect("the client was left hanging")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
}
