//! `echo tcp|udp ADDR [TAG]` — an echo server through plain `std::net`.
//!
//! `tcp`: listens on ADDR and answers each line a client sends with
//! `TAG LINE` (TAG defaults to `echo`), one connection after another, until
//! the client closes. `udp`: binds ADDR and answers each datagram with
//! `TAG PAYLOAD`. Either way it first prints `listening on LOCAL_ADDR`, so a
//! test knows when it is ready and where it landed.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, UdpSocket};

fn tcp(addr: &str, tag: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    println!("listening on {}", listener.local_addr()?);
    for conn in listener.incoming() {
        let conn = conn?;
        let peer = conn.peer_addr()?;
        eprintln!("connection from {peer}");
        // (wasip2 sockets cannot be cloned: read and write through `&`.)
        for line in BufReader::new(&conn).lines() {
            let line = match line {
                Ok(line) => line,
                Err(e) => {
                    eprintln!("reading from {peer}: {e}");
                    break;
                }
            };
            if let Err(e) = writeln!(&conn, "{tag} {line}") {
                eprintln!("writing to {peer}: {e}");
                break;
            }
        }
    }
    Ok(())
}

fn udp(addr: &str, tag: &str) -> std::io::Result<()> {
    let socket = UdpSocket::bind(addr)?;
    println!("listening on {}", socket.local_addr()?);
    let mut buf = [0u8; 2048];
    loop {
        let (n, peer) = socket.recv_from(&mut buf)?;
        let mut reply = format!("{tag} ").into_bytes();
        reply.extend_from_slice(&buf[..n]);
        socket.send_to(&reply, peer)?;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (proto, addr, tag) = match args.as_slice() {
        [p, a] => (p.as_str(), a.as_str(), "echo"),
        [p, a, t] => (p.as_str(), a.as_str(), t.as_str()),
        _ => {
            eprintln!("usage: echo tcp|udp ADDR [TAG]");
            std::process::exit(2);
        }
    };
    let result = match proto {
        "tcp" => tcp(addr, tag),
        "udp" => udp(addr, tag),
        other => {
            eprintln!("echo: unknown protocol {other:?} (expected tcp or udp)");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("echo: {proto} {addr}: {e}");
        std::process::exit(1);
    }
}
