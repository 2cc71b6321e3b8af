//! `--network none` (the default) denies every socket operation; `host`
//! allows loopback and nothing else.

use crate::support::*;
use std::io::Read;
use std::net::{TcpListener, UdpSocket};

#[test]
fn none_denies_tcp_udp_and_name_lookup() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let udp_addr = udp.local_addr().unwrap().to_string();
    // wasip1 has no sockets at all (see below), so the policy is seen
    // through the component.
    for (kind, probe) in [("wasip2 component", app("NET_PROBE_P2"))] {
        for (op, target) in [
            ("connect", addr.as_str()),
            ("bind", "127.0.0.1:0"),
            ("udp", udp_addr.as_str()),
            ("lookup", "localhost"),
        ] {
            let out = skiff(["run", probe, op, target]).run();
            assert_eq!(
                out.code, 1,
                "{kind}: {op} {target} succeeded: {}",
                out.stdout
            );
            assert!(
                out.stderr.contains(&format!("{op} failed")),
                "{kind}: {}",
                out.stderr
            );
        }
    }
    // Nothing reached the host.
    assert!(listener.accept().is_err(), "a connection got through");
    assert!(
        udp.recv_from(&mut [0u8; 16]).is_err(),
        "a datagram got through"
    );
}

/// net-probe (the wasip2 component) under `--network host`.
fn host_probe(op: &str, target: &str) -> Finished {
    skiff(["run", "--network", "host", app("NET_PROBE_P2"), op, target]).run()
}

#[test]
fn host_allows_loopback_tcp_and_udp() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let out = host_probe("connect", &addr);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), format!("ok connected to {addr}"));
    let (mut conn, _) = listener.accept().unwrap();
    let mut buf = Vec::new();
    conn.read_to_end(&mut buf).unwrap();

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let target = udp.local_addr().unwrap().to_string();
    let out = host_probe("udp", &target);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut buf = [0u8; 16];
    let (n, from) = udp.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    assert!(from.ip().is_loopback());

    let out = host_probe("bind", "127.0.0.1:0");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("ok listening on 127.0.0.1:"),
        "{}",
        out.stdout
    );
}

#[test]
fn host_refuses_name_lookup() {
    // The host's resolver would carry the guest's queries off the machine.
    let out = host_probe("lookup", "localhost");
    assert_eq!(out.code, 1, "lookup was allowed: {}", out.stdout);
    assert!(out.stderr.contains("lookup failed"), "{}", out.stderr);
}

#[test]
fn host_refuses_listening_beyond_loopback() {
    let out = host_probe("bind", "0.0.0.0:0");
    assert_eq!(
        out.code, 1,
        "listening on 0.0.0.0 was allowed: {}",
        out.stdout
    );
}

#[test]
fn wasip1_modules_have_no_sockets_even_on_host() {
    let out = skiff([
        "run",
        "--network",
        "host",
        app("NET_PROBE_P1"),
        "bind",
        "127.0.0.1:0",
    ])
    .run();
    assert_eq!(out.code, 1, "{}", out.stdout);
}
