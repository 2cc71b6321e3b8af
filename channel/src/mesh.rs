//! The mesh handshake: how a connection to a task on another machine is
//! opened at that machine's agent (its mesh listener). The caller — an
//! agent carrying a task's connection, or the control plane's load
//! balancers — sends one line, `SKIFF-MESH/1 TOKEN SRC_IP DST_IP:PORT
//! GROUPS` (`GROUPS` comma-separated, or `-` for a caller outside
//! security groups; a sixth field `udp` for datagrams); the listener
//! answers `OK` and splices, or `NO reason` and closes. Datagrams then
//! travel as frames, a 2-byte big-endian length and the payload, each way.
//! Both ends live here so they cannot drift.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The first word of every header.
pub const MAGIC: &str = "SKIFF-MESH/1";

/// The longest header a listener reads.
pub const MAX_HEADER: u64 = 1024;

/// Who calls whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub token: String,
    pub src: Ipv4Addr,
    pub dst: SocketAddr,
    /// The caller's security groups (`None`: outside groups).
    pub groups: Option<Vec<String>>,
    /// TCP (a stream) or UDP (datagrams, framed).
    pub proto: crate::fabric::Proto,
}

impl Header {
    /// The header line, newline included.
    pub fn line(&self) -> String {
        let groups = match &self.groups {
            Some(g) if !g.is_empty() => g.join(","),
            _ => "-".to_string(),
        };
        let proto = match self.proto {
            crate::fabric::Proto::Tcp => "",
            crate::fabric::Proto::Udp => " udp",
        };
        format!(
            "{MAGIC} {} {} {} {groups}{proto}\n",
            self.token, self.src, self.dst
        )
    }

    /// Parses a header line (without its newline).
    pub fn parse(line: &str) -> Result<Header, String> {
        let parts: Vec<&str> = line.split(' ').collect();
        let (proto, parts) = match parts[..] {
            [ref head @ .., "udp"] if head.len() == 5 => (crate::fabric::Proto::Udp, head),
            ref all => (crate::fabric::Proto::Tcp, all),
        };
        let [magic, token, src, dst, groups] = parts[..] else {
            return Err("malformed header".into());
        };
        if magic != MAGIC {
            return Err("not a mesh header".into());
        }
        let (Ok(src), Ok(dst)) = (src.parse::<Ipv4Addr>(), dst.parse::<SocketAddr>()) else {
            return Err("malformed addresses".into());
        };
        Ok(Header {
            token: token.to_string(),
            src,
            dst,
            groups: match groups {
                "-" => None,
                g => Some(g.split(',').map(String::from).collect()),
            },
            proto,
        })
    }
}

/// Writes one datagram frame.
pub async fn write_datagram<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    payload: &[u8],
) -> std::io::Result<()> {
    let len = u16::try_from(payload.len()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a datagram over 65535 bytes",
        )
    })?;
    let mut frame = Vec::with_capacity(payload.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    w.write_all(&frame).await
}

/// Reads one datagram frame (`None` at the end of the stream).
pub async fn read_datagram<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut payload = vec![0u8; usize::from(u16::from_be_bytes(len))];
    r.read_exact(&mut payload).await?;
    Ok(Some(payload))
}

/// Opens a connection to `header.dst` through the mesh listener at `via`:
/// the stream, spliced once answered `OK` (nothing read past the answer),
/// or why not.
pub async fn dial(via: &str, header: &Header, within: Duration) -> Result<TcpStream, String> {
    let attempt = async {
        let mut far = TcpStream::connect(via)
            .await
            .map_err(|e| format!("cannot reach the mesh listener at {via}: {e}"))?;
        let _ = far.set_nodelay(true);
        far.write_all(header.line().as_bytes())
            .await
            .map_err(|e| format!("{via} closed: {e}"))?;
        // The answer byte by byte: what follows it is the callee's.
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            let n = far
                .read(&mut byte)
                .await
                .map_err(|e| format!("{via} closed: {e}"))?;
            if n == 0 {
                return Err(format!("{via} closed without an answer"));
            }
            if byte[0] == b'\n' || answer.len() as u64 >= MAX_HEADER {
                break;
            }
            answer.push(byte[0]);
        }
        let answer = String::from_utf8_lossy(&answer).into_owned();
        if answer == "OK" {
            Ok(far)
        } else {
            Err(format!("refused: {}", answer.trim_start_matches("NO ")))
        }
    };
    tokio::time::timeout(within, attempt)
        .await
        .map_err(|_| format!("{via} did not answer within {within:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_garbage_is_named() {
        let h = Header {
            token: "t0k".into(),
            src: Ipv4Addr::new(127, 64, 0, 5),
            dst: "127.64.64.9:8080".parse().unwrap(),
            groups: Some(vec!["sg-1".into(), "sg-2".into()]),
            proto: crate::fabric::Proto::Tcp,
        };
        let line = h.line();
        assert_eq!(
            line,
            "SKIFF-MESH/1 t0k 127.64.0.5 127.64.64.9:8080 sg-1,sg-2\n"
        );
        assert_eq!(Header::parse(line.trim_end()).unwrap(), h);
        let bridge = Header { groups: None, ..h };
        assert!(bridge.line().ends_with(" -\n"));
        assert_eq!(
            Header::parse(bridge.line().trim_end()).unwrap().groups,
            None
        );
        let udp = Header {
            proto: crate::fabric::Proto::Udp,
            ..bridge
        };
        assert!(udp.line().ends_with(" - udp\n"), "{}", udp.line());
        assert_eq!(Header::parse(udp.line().trim_end()).unwrap(), udp);
        assert!(Header::parse("GET / HTTP/1.1").is_err());
        assert!(
            Header::parse("SKIFF-MESH/1 t x y -")
                .unwrap_err()
                .contains("addresses")
        );
    }
}
