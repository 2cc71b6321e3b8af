//! `--network none` (the default) denies every socket operation; `host`
//! allows loopback and nothing else; `awsvpc` and `bridge` give the task a
//! loopback address of its own, and `-p` publishes its ports.

use crate::support::*;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

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

/// A program that asks for its peer after the peer reset the connection
/// gets an error, not a trap: wasi-libc aborts the guest on the
/// invalid-state wasmtime-wasi reports for the kernel's ENOTCONN (this
/// once killed the fleet test's refused probe, with no message).
#[test]
fn asking_for_a_reset_connections_peer_is_an_error_not_a_trap() {
    use std::os::fd::AsRawFd;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Accept, then reset (SO_LINGER 0: close sends RST). A guest that never
    // connects ends the test rather than hanging it.
    listener.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let conn = loop {
            match listener.accept() {
                Ok((conn, _)) => break conn,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if std::time::Instant::now() > deadline {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        conn.set_nonblocking(false).unwrap();
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid socket and a linger value of the right size.
        let set = unsafe {
            libc::setsockopt(
                conn.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0);
        drop(conn);
    });
    // The guest reads until the reset has arrived, then asks for its peer.
    let out = host_probe("peer-after-reset", &addr);
    server.join().unwrap();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("peer-after-reset failed: Connection reset"),
        "{}",
        out.stderr
    );
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

/// A `skiff run` server (echo, or an HTTP component) with its task address
/// and the lines it printed before it was ready.
struct Task {
    child: std::process::Child,
    /// The task's own address (from `skiff: task address ...`).
    ip: std::net::Ipv4Addr,
    /// Published ports, host side (from `skiff: publishing A -> B`).
    published: Vec<SocketAddr>,
    /// The line that said it was ready.
    ready: String,
    /// Kept so the guest's output keeps a reader: on a closed pipe its
    /// next print would fail.
    _output: (
        std::sync::mpsc::Receiver<String>,
        std::sync::mpsc::Receiver<String>,
    ),
}

impl Task {
    /// Starts `skiff run ARGS` and waits until `ready` appears on stdout or
    /// stderr.
    fn start(args: &[&str], ready: &str) -> Task {
        Task::start_as(skiff(args.iter().copied()), args, ready)
    }

    fn start_as(skiff: crate::support::Skiff, args: &[&str], ready: &str) -> Task {
        let mut child = skiff.spawn();
        let out = lines(child.stdout.take().unwrap());
        let err = lines(child.stderr.take().unwrap());
        // Killed on drop, even if it never gets ready.
        let mut task = Task {
            child,
            ip: std::net::Ipv4Addr::UNSPECIFIED,
            published: Vec::new(),
            ready: String::new(),
            _output: (out, err),
        };
        let mut is_ready = false;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (out, err) = &task._output;
            // The address line comes first, but on stderr: stdout may be
            // read before it.
            for line in err.try_iter().chain(out.try_iter()) {
                if let Some(a) = line.strip_prefix("skiff: task address ") {
                    task.ip = a.trim().parse().unwrap();
                }
                if let Some(p) = line.strip_prefix("skiff: publishing ") {
                    let host = p.split(" -> ").next().unwrap();
                    task.published.push(host.parse().unwrap());
                }
                if line.contains(ready) {
                    is_ready = true;
                    task.ready = line;
                }
            }
            if is_ready && !task.ip.is_unspecified() {
                return task;
            }
            assert!(
                Instant::now() < deadline,
                "never saw {ready:?} and a task address from {args:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(r: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// One line to a TCP echo server, its answer back.
fn say(addr: SocketAddr, line: &str) -> String {
    use std::io::Write;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    writeln!(s, "{line}").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply.trim_end().to_string()
}

fn in_default_block(ip: std::net::Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    (a, b) == (127, 18)
}

/// `skiff run` arguments for net-probe `ARGS...` (`OP TARGET [MESSAGE]`)
/// as a one-off awsvpc task (30 s at most).
fn awsvpc_probe(args: &[&str]) -> Vec<String> {
    let run = [
        "run",
        "--network",
        "awsvpc",
        "--timeout",
        "30s",
        app("NET_PROBE_P2"),
    ];
    run.iter().chain(args).map(|a| a.to_string()).collect()
}

fn awsvpc_echo(tag: &str) -> Task {
    Task::start(
        &[
            "run",
            "--network",
            "awsvpc",
            app("ECHO_P2"),
            "tcp",
            "0.0.0.0:8080",
            tag,
        ],
        "listening on",
    )
}

#[test]
fn awsvpc_tasks_each_have_their_own_address_and_port_space() {
    let a = awsvpc_echo("A");
    let b = awsvpc_echo("B");
    assert_ne!(a.ip, b.ip);
    assert!(
        in_default_block(a.ip) && in_default_block(b.ip),
        "{} {}",
        a.ip,
        b.ip
    );
    // Both listen on 8080, each on its own address.
    assert_eq!(say(SocketAddr::from((a.ip, 8080)), "hi"), "A hi");
    assert_eq!(say(SocketAddr::from((b.ip, 8080)), "hi"), "B hi");
    // Task to task: the connection leaves from the caller's own address.
    let out = skiff(awsvpc_probe(&["send", &format!("{}:8080", a.ip), "hello"])).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let probe_ip = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("skiff: task address "))
        .expect("the probe's address")
        .trim()
        .to_string();
    assert_ne!(probe_ip, a.ip.to_string());
    assert!(
        out.stdout.starts_with(&format!("ok from {probe_ip}:")),
        "not from the task's address: {}",
        out.stdout
    );
    assert!(
        out.stdout
            .trim_end()
            .ends_with(&format!("to {}:8080: A hello", a.ip)),
        "{}",
        out.stdout
    );
}

#[test]
fn awsvpc_localhost_is_the_task_itself_and_nothing_else_is_bindable() {
    let probe = |args: &[&str]| skiff(awsvpc_probe(args)).run();
    // A server on the host's 127.0.0.1 is out of reach: there, 127.0.0.1
    // is the task, which does not listen.
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    host.set_nonblocking(true).unwrap();
    let port = host.local_addr().unwrap().port();
    let out = probe(&["connect", &format!("127.0.0.1:{port}")]);
    assert_eq!(out.code, 1, "reached the host's loopback: {}", out.stdout);
    assert!(host.accept().is_err(), "the host's listener was reached");

    // Binding 0.0.0.0 or 127.0.0.1 lands on the task's address.
    for any in ["0.0.0.0:0", "127.0.0.1:0"] {
        let out = probe(&["bind", any]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let ip = out
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("skiff: task address "))
            .unwrap()
            .trim();
        assert!(
            out.stdout.starts_with(&format!("ok listening on {ip}:")),
            "{}",
            out.stdout
        );
    }
    // Someone else's address is not the task's to bind.
    let out = probe(&["bind", "127.0.0.5:0"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    // localhost resolves to the task; names skiff does not know, nowhere.
    let out = probe(&["lookup", "localhost"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("ok 127.18."), "{}", out.stdout);
    let out = probe(&["lookup", "example.com"]);
    assert_eq!(out.code, 1, "resolved through the host: {}", out.stdout);
    // Never anything but loopback.
    let out = probe(&["connect", "192.168.1.1:80"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stderr.contains("connect failed"), "{}", out.stderr);
}

#[test]
fn awsvpc_udp_echo() {
    let server = Task::start(
        &[
            "run",
            "--network",
            "awsvpc",
            app("ECHO_P2"),
            "udp",
            "0.0.0.0:9000",
            "U",
        ],
        "listening on",
    );
    let out = skiff(awsvpc_probe(&[
        "udp-send",
        &format!("{}:9000", server.ip),
        "hey",
    ]))
    .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout.trim_end(),
        format!("ok from {}:9000: U hey", server.ip)
    );
}

#[test]
fn bridge_publishes_ports_on_the_host() {
    // HOSTPORT 0: a port the kernel picks, printed.
    let t = Task::start(
        &[
            "run",
            "--network",
            "bridge",
            "-p",
            "0:7000",
            app("ECHO_P2"),
            "tcp",
            "0.0.0.0:7000",
            "P",
        ],
        "listening on",
    );
    let [host] = t.published[..] else {
        panic!("published {:?}", t.published)
    };
    assert_eq!(host.ip(), std::net::Ipv4Addr::LOCALHOST);
    assert_ne!(host.port(), 0);
    assert_eq!(say(host, "through the host"), "P through the host");
    // And the task's own address answers directly.
    assert_eq!(say(SocketAddr::from((t.ip, 7000)), "direct"), "P direct");
}

#[test]
fn an_http_component_on_its_own_address_and_published() {
    let t = Task::start(
        &[
            "run",
            "--network",
            "awsvpc",
            "-p",
            "127.0.0.1:0:80",
            app("HTTP_HELLO_P2"),
        ],
        "Serving HTTP on",
    );
    for addr in [t.published[0], SocketAddr::from((t.ip, 80))] {
        let (ok, out, err) = peer(
            "curl",
            &["-sS", "--max-time", "10", &format!("http://{addr}/x")],
        );
        assert!(ok, "{addr}: {err}");
        assert_eq!(out.trim_end(), "Hello from skiff! path=/x", "{addr}");
    }
}

#[test]
fn awsvpc_outgoing_http_reaches_tasks_not_the_host() {
    let target = Task::start(
        &[
            "run",
            "--network",
            "awsvpc",
            "-p",
            "127.0.0.1:0:80",
            app("HTTP_HELLO_P2"),
        ],
        "Serving HTTP on",
    );
    let caller = Task::start(
        &[
            "run",
            "--network",
            "awsvpc",
            "-p",
            "127.0.0.1:0:80",
            app("HTTP_HELLO_P2"),
        ],
        "Serving HTTP on",
    );
    let fetch = |url: &str| {
        let (ok, out, err) = peer(
            "curl",
            &[
                "-sS",
                "--max-time",
                "20",
                "-w",
                "\n%{http_code}",
                &format!("http://{}/fetch?url={url}", caller.published[0]),
            ],
        );
        assert!(ok, "{err}");
        let (body, code) = out.rsplit_once('\n').unwrap();
        (code.to_string(), body.trim_end().to_string())
    };
    let (code, body) = fetch(&format!("http://{}:80/y", target.ip));
    assert_eq!(
        (code.as_str(), body.as_str()),
        ("200", "Hello from skiff! path=/y")
    );
    // The host's loopback is not the task's: 127.0.0.1 is the caller
    // itself, where nothing listens on that port.
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    host.set_nonblocking(true).unwrap();
    let (code, _) = fetch(&format!("http://{}/z", host.local_addr().unwrap()));
    assert_ne!(code, "200");
    assert!(host.accept().is_err(), "the host's listener was reached");
}

/// A non-root user's skiff (no `CAP_NET_BIND_SERVICE`) still gives tasks
/// port 80 on their own addresses: guests, other tasks and published ports
/// all see 80, and on the host it sits at 80 + 64512.
#[test]
fn without_the_capability_tasks_still_listen_on_port_80() {
    let server = |proto: &str, addr: &str, tag: &str, publish: bool| {
        let mut args = vec!["run", "--network", "awsvpc"];
        if publish {
            args.extend(["-p", "127.0.0.1:0:80"]);
        }
        args.extend([app("ECHO_P2"), proto, addr, tag]);
        Task::start_as(skiff_without_low_ports(&args), &args, "listening on")
    };
    let a = server("tcp", "0.0.0.0:80", "A", true);
    let b = server("tcp", "0.0.0.0:80", "B", true);
    assert_eq!(
        a.ready,
        format!("listening on {}:80", a.ip),
        "the guest sees 80"
    );
    assert_eq!(say(a.published[0], "hi"), "A hi");
    assert_eq!(say(b.published[0], "hi"), "B hi");
    assert_eq!(say(SocketAddr::from((a.ip, 64592)), "direct"), "A direct");
    assert!(
        TcpStream::connect((a.ip, 80)).is_err(),
        "nothing is on 80 itself"
    );

    // Task to task, by port 80.
    let probe = |op: &str, target: String| {
        skiff_without_low_ports(awsvpc_probe(&[op, &target, "hello"])).run()
    };
    let out = probe("send", format!("{}:80", b.ip));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .trim_end()
            .ends_with(&format!("to {}:80: B hello", b.ip)),
        "{}",
        out.stdout
    );

    // UDP on 53: the answer comes from port 53, as far as the guest knows.
    let dns = server("udp", "0.0.0.0:53", "U", false);
    let out = probe("udp-send", format!("{}:53", dns.ip));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout.trim_end(),
        format!("ok from {}:53: U hello", dns.ip)
    );

    // The host ports standing in for privileged ones are not the guest's.
    let out = skiff_without_low_ports([
        "run",
        "--network",
        "awsvpc",
        app("ECHO_P2"),
        "tcp",
        "0.0.0.0:64592",
    ])
    .run();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("in use"), "{}", out.stderr);
}
