//! `net-probe OP ADDR` — one socket operation through plain `std::net`.
//!
//! Ops: `connect ADDR` (TCP), `bind ADDR` (TCP listen), `udp ADDR` (bind a
//! UDP socket and send one datagram to ADDR), `lookup HOST`.
//! Prints `ok ...` and exits 0, or `net-probe: OP failed: ERROR` and exits 1.
//! On wasip1 there is no socket API at all, so every op fails.

use std::net::{TcpListener, TcpStream, ToSocketAddrs, UdpSocket};

fn run(op: &str, addr: &str) -> std::io::Result<String> {
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
    let [op, addr] = args.as_slice() else {
        eprintln!("usage: net-probe OP ADDR");
        std::process::exit(2);
    };
    match run(op, addr) {
        Ok(msg) => println!("ok {msg}"),
        Err(e) => {
            eprintln!("net-probe: {op} failed: {e}");
            std::process::exit(1);
        }
    }
}
