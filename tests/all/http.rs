//! `skiff run` of a `wasi:http/proxy` component: served with a fresh
//! instance per request, drained on SIGTERM.

use crate::support::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

/// A running `skiff run -p` with its address and its output as lines.
pub(crate) struct Server {
    child: Child,
    pub(crate) addr: SocketAddr,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

fn lines(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Server {
    pub(crate) fn start(extra: &[&str]) -> Server {
        let mut args = vec!["run", "-p", "127.0.0.1:0:80"];
        args.extend(extra);
        args.push(app("HTTP_HELLO_P2"));
        let mut child = skiff(args).spawn();
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        let banner = stderr
            .recv_timeout(Duration::from_secs(60))
            .expect("skiff printed where it serves");
        let addr = skiff_harness::http_banner(&banner)
            .unwrap_or_else(|| panic!("unexpected banner {banner:?}"));
        Server {
            child,
            addr,
            stdout,
            stderr,
        }
    }

    fn wait_for_stdout(&self, needle: &str) {
        loop {
            let line = self
                .stdout
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("never saw {needle:?} on stdout"));
            if line.contains(needle) {
                return;
            }
        }
    }

    fn terminate(&mut self) -> i32 {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        wait_with_limit(&mut self.child, Duration::from_secs(30))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on its own connection: (status, body).
fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    parse_response(s)
}

fn parse_response(mut s: TcpStream) -> (u16, String) {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    (status, body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path, b"")
}

#[test]
fn serves_each_request_from_a_fresh_instance() {
    let mut server = Server::start(&[]);
    assert_eq!(
        get(server.addr, "/hello"),
        (200, "Hello from skiff! path=/hello\n".to_string())
    );
    for _ in 0..5 {
        assert_eq!(get(server.addr, "/count"), (200, "1\n".to_string()));
    }
    assert_eq!(
        request(server.addr, "POST", "/echo", b"ping pong"),
        (200, "ping pong".to_string())
    );
    server.wait_for_stdout("http-hello: /echo");
    assert_eq!(server.terminate(), 0);
}

#[test]
fn a_trapping_request_gets_500_and_the_server_keeps_serving() {
    let mut server = Server::start(&[]);
    let (status, body) = get(server.addr, "/trap");
    assert_eq!(status, 500);
    assert!(
        !body.contains("backtrace"),
        "internals leaked to the client: {body}"
    );
    assert_eq!(get(server.addr, "/").0, 200);
    assert_eq!(server.terminate(), 0);
    let log: Vec<String> = server.stderr.try_iter().collect();
    assert!(log.iter().any(|l| l.contains("unreachable")), "{log:?}");
}

#[test]
fn many_concurrent_clients_are_all_answered() {
    let mut server = Server::start(&[]);
    let addr = server.addr;
    let clients: Vec<_> = (0..16)
        .map(|i| {
            std::thread::spawn(move || {
                for j in 0..10 {
                    let path = format!("/c{i}/r{j}");
                    let (status, body) = get(addr, &path);
                    assert_eq!(status, 200);
                    assert_eq!(body, format!("Hello from skiff! path={path}\n"));
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(server.terminate(), 0);
}

#[test]
fn keep_alive_connections_serve_many_requests() {
    let mut server = Server::start(&[]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    for i in 0..20 {
        write!(s, "GET /k{i} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length: ") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            format!("Hello from skiff! path=/k{i}\n")
        );
    }
    drop(s);
    assert_eq!(server.terminate(), 0);
}

#[test]
fn sigterm_drains_requests_in_flight_then_exits_0() {
    let mut server = Server::start(&[]);
    let addr = server.addr;
    let slow = std::thread::spawn(move || get(addr, "/sleep?ms=1500"));
    // The guest prints the path when the request reaches it.
    server.wait_for_stdout("http-hello: /sleep?ms=1500");
    let code = server.terminate();
    assert_eq!(slow.join().unwrap(), (200, "slept 1500ms\n".to_string()));
    assert_eq!(code, 0);
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after shutdown"
    );
}

#[test]
fn env_and_timeout_apply_to_every_request() {
    let mut server = Server::start(&["-e", "REGION=local", "--timeout", "500ms"]);
    assert_eq!(
        get(server.addr, "/env"),
        (200, "REGION=local\n".to_string())
    );
    let started = std::time::Instant::now();
    let (status, body) = get(server.addr, "/sleep?ms=10000");
    assert_eq!(status, 504, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.terminate(), 0);
}

#[test]
fn a_request_without_a_host_is_a_client_error() {
    let mut server = Server::start(&[]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let (status, _) = parse_response(s);
    assert_eq!(status, 400);
    assert_eq!(get(server.addr, "/").0, 200);
    assert_eq!(server.terminate(), 0);
}

/// An upstream on loopback answering every request with `body`; it reports
/// each request line it saw.
fn upstream(body: &'static str) -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap() == 0 || header == "\r\n" {
                    break;
                }
            }
            let _ = tx.send(request_line.trim().to_string());
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, rx)
}

#[test]
fn outgoing_http_is_denied_without_network() {
    let (up, seen) = upstream("should not be reached");
    let mut server = Server::start(&[]);
    let (status, body) = get(server.addr, &format!("/fetch?url=http://{up}/x"));
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("HttpRequestDenied"), "{body}");
    assert!(seen.try_recv().is_err(), "the request reached the upstream");
    assert_eq!(server.terminate(), 0);
}

#[test]
fn outgoing_http_to_loopback_works_on_the_host_network() {
    let (up, seen) = upstream("upstream says hi");
    let mut server = Server::start(&["--network", "host"]);
    let (status, body) = get(server.addr, &format!("/fetch?url=http://{up}/x"));
    assert_eq!((status, body.as_str()), (200, "upstream says hi"));
    assert_eq!(
        seen.recv_timeout(Duration::from_secs(10)).unwrap(),
        "GET /x HTTP/1.1"
    );
    assert_eq!(server.terminate(), 0);
}
