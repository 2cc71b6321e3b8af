//! `net-probe OP ADDR` — one socket operation through plain `std::net`.
//!
//! Ops: `connect ADDR` (TCP), `bind ADDR` (TCP listen), `udp ADDR` (bind a
//! UDP socket and send one datagram to ADDR), `lookup HOST`, `send ADDR MSG`
//! (a line over TCP; prints both ends and the reply), `udp-send ADDR MSG`
//! (a datagram; prints the reply), `peer-after-reset ADDR` (connect, read
//! until the peer ends it, then ask for the peer's address).
//! Prints `ok ...` and exits 0, or `net-probe: OP failed: ERROR` and exits 1.
//! On wasip1 there is no socket API at all, so every op fails.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};

fn run(op: &str, addr: &str, message: Option<&str>) -> std::io::Result<String> {
    match op {
        "connect" => {
            let s = TcpStream::connect(addr)?;
            Ok(format!("connected to {}", s.peer_addr()?))
        }
        "bind" => {
            let l = TcpListener::bind(addr)?;
            Ok(format!("listening on {}", l.local_addr()?))
        }
        "udp" => {
            let s = UdpSocket::bind("127.0.0.1:0")?;
            let n = s.send_to(b"ping", addr)?;
            Ok(format!("sent {n} bytes"))
        }
        "send" => {
            // `send ADDR MESSAGE`: one line there, the reply back.
            let mut s = TcpStream::connect(addr)?;
            let (local, peer) = (s.local_addr()?, s.peer_addr()?);
            writeln!(s, "{}", message.unwrap_or("ping"))?;
            s.shutdown(Shutdown::Write)?;
            let mut reply = String::new();
            s.read_to_string(&mut reply)?;
            Ok(format!("from {local} to {peer}: {}", reply.trim_end()))
        }
        "peer-after-reset" => {
            // Connects, reads until the peer ends the connection (a server
            // that resets it), then asks who the peer is: what a program
            // that logs its peer after a failure does.
            let mut s = TcpStream::connect(addr)?;
            let mut rest = Vec::new();
            let ended = s.read_to_end(&mut rest);
            let peer = s.peer_addr()?;
            Ok(format!("peer {peer} after {ended:?}"))
        }
        "udp-send" => {
            // `udp-send ADDR MESSAGE`: one datagram there, one back.
            // (No read timeout: wasip2 has none. Run it under --timeout.)
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.send_to(message.unwrap_or("ping").as_bytes(), addr)?;
            let mut buf = [0u8; 2048];
            let (n, peer) = s.recv_from(&mut buf)?;
            Ok(format!(
                "from {peer}: {}",
                String::from_utf8_lossy(&buf[..n])
            ))
        }
        "lookup" => {
            let addrs: Vec<String> = (addr, 0)
                .to_socket_addrs()?
                .map(|a| a.ip().to_string())
                .collect();
            Ok(addrs.join(","))
        }
        other => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("unknown op {other:?}"),
        )),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (op, addr, message) = match args.as_slice() {
        [op, addr] => (op, addr, None),
        [op, addr, message] => (op, addr, Some(message.as_str())),
        _ => {
            eprintln!("usage: net-probe OP ADDR [MESSAGE]");
            std::process::exit(2);
        }
    };
    match run(op, addr, message) {
        Ok(msg) => println!("ok {msg}"),
        Err(e) => {
            eprintln!("net-probe: {op} failed: {e}");
            std::process::exit(1);
        }
    }
}
