//! `http::serve` from the library: requests answered, failures counted,
//! shutdown drains.

use crate::*;
use http_body_util::BodyExt;
use skiff_runtime::http::{Closed, Local, ServeError, ServeOptions, ServeReport, serve};
use std::io::{Read, Write};
use std::net::SocketAddr;

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_until_shutdown_and_reports() {
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(data.path());
    let art = rt.load_file(app("HTTP_HELLO_P2").as_ref()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (spec, out, _) = captured(&["http-hello"]);
    let server = tokio::spawn({
        let rt = rt.clone();
        async move {
            serve(&rt, &art, listener, ServeOptions::new(spec), async {
                let _ = stop_rx.await;
            })
            .await
        }
    });
    let client = tokio::task::spawn_blocking(move || {
        assert_eq!(get(addr, "/a"), (200, "Hello from skiff! path=/a\n".into()));
        assert_eq!(get(addr, "/count"), (200, "1\n".into()));
        assert_eq!(get(addr, "/trap").0, 500);
    });
    client.await.unwrap();
    stop_tx.send(()).unwrap();
    let report = server.await.unwrap().unwrap();
    assert_eq!(
        report,
        ServeReport {
            requests: 2,
            failed: 1,
            abandoned: 0
        }
    );
    assert!(out.text().contains("http-hello: /a\n"), "{}", out.text());
}

#[tokio::test]
async fn a_command_cannot_be_served() {
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(data.path());
    let art = rt.load_file(app("HELLO_P2").as_ref()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = serve(
        &rt,
        &art,
        listener,
        ServeOptions::new(InstanceSpec::default()),
        async {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ServeError::NotHttp(_)), "{err}");
}

/// More requests in flight than the pool has slots: they queue, none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_pool_wait_for_a_slot() {
    let data = tempfile::tempdir().unwrap();
    let rt = runtime_with_slots(data.path(), 2);
    let art = rt.load_file(app("HTTP_HELLO_P2").as_ref()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let rt = rt.clone();
        async move {
            serve(
                &rt,
                &art,
                listener,
                ServeOptions::new(InstanceSpec::default()),
                async {
                    let _ = stop_rx.await;
                },
            )
            .await
        }
    });
    let clients: Vec<_> = (0..8)
        .map(|_| tokio::task::spawn_blocking(move || get(addr, "/sleep?ms=100")))
        .collect();
    for c in clients {
        assert_eq!(c.await.unwrap(), (200, "slept 100ms\n".to_string()));
    }
    stop_tx.send(()).unwrap();
    let report = server.await.unwrap().unwrap();
    assert_eq!(
        report,
        ServeReport {
            requests: 8,
            failed: 0,
            abandoned: 0
        }
    );
}

/// A server on 127.0.0.1:0 with `options`, and the sender that stops it.
async fn start(
    rt: &Runtime,
    options: ServeOptions,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<ServeReport, ServeError>>,
) {
    let art = rt.load_file(app("HTTP_HELLO_P2").as_ref()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let rt = rt.clone();
    let server = tokio::spawn(async move {
        serve(&rt, &art, listener, options, async {
            let _ = stop_rx.await;
        })
        .await
    });
    (addr, stop_tx, server)
}

/// A request handed to a server of this process without a socket: what
/// `skiff serve`'s load balancer does for targets it serves itself.
fn handed(method: &str, path: &str, body: &'static str) -> http::Request<Body> {
    let body = http_body_util::Full::new(bytes::Bytes::from_static(body.as_bytes()))
        .map_err(|never| -> hyper::Error { match never {} })
        .boxed();
    http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "shop.example")
        .header("x-trace", "7")
        .body(body)
        .unwrap()
}

type Body = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;

async fn text(r: http::Response<skiff_runtime::http::LocalBody>) -> (u16, String) {
    let status = r.status().as_u16();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// A server is reachable from this process by its listener's address while
/// it accepts, and a request handed to it is served as one from a socket:
/// same guest, same counting; once it stops, it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_takes_requests_from_its_own_process_while_it_accepts() {
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(data.path());
    let (addr, stop, server) = start(&rt, ServeOptions::new(InstanceSpec::default())).await;
    // It answers a connection, so it is accepting, so it is listed.
    let (status, _) = tokio::task::spawn_blocking(move || get(addr, "/a"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let other: SocketAddr = "127.0.0.1:1".parse().unwrap();
    assert!(Local::find(other).is_none(), "nothing listens there");
    let local = Local::find(addr).expect("listed while it accepts");

    let headers = text(local.call(handed("GET", "/headers", "")).await.unwrap()).await;
    assert_eq!(
        headers,
        (
            200,
            // wasi:http gives the guest `Host` as the authority.
            "authority=shop.example\nx-trace: 7\n".into()
        )
    );
    let echoed = text(local.call(handed("POST", "/echo", "ping")).await.unwrap()).await;
    assert_eq!(echoed, (200, "ping".into()));
    let trapped = text(local.call(handed("GET", "/trap", "")).await.unwrap()).await;
    assert_eq!(trapped.0, 500);

    stop.send(()).unwrap();
    let report = server.await.unwrap().unwrap();
    assert_eq!(
        report,
        ServeReport {
            requests: 3,
            failed: 1,
            abandoned: 0
        }
    );
    assert!(
        Local::find(addr).is_none(),
        "a stopped server is not listed"
    );
    assert!(matches!(
        local.call(handed("GET", "/a", "")).await,
        Err(Closed)
    ));
}

/// A request handed over in-process that is still waiting for an instance
/// slot when shutdown is asked is drained as a connection's would be: the
/// server waits for it, and it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_requests_handed_over_in_process() {
    let data = tempfile::tempdir().unwrap();
    let rt = runtime_with_slots(data.path(), 1);
    let (spec, out, _) = captured(&["http-hello"]);
    let (addr, stop, server) = start(&rt, ServeOptions::new(spec)).await;
    // The only slot, taken by a slow request from a socket.
    let slow = tokio::task::spawn_blocking(move || get(addr, "/sleep?ms=300"));
    wait_until("the slow request holds the slot", || {
        out.text().contains("http-hello: /sleep?ms=300")
    })
    .await;
    let local = Local::find(addr).expect("listed while it accepts");
    let mut waiting = Box::pin(local.call(handed("GET", "/a", "")));
    // Polled once: handed over, and waiting for the slot.
    tokio::select! {
        biased;
        _ = &mut waiting => panic!("served without a free slot"),
        () = std::future::ready(()) => {}
    }
    stop.send(()).unwrap();
    assert_eq!(slow.await.unwrap(), (200, "slept 300ms\n".to_string()));
    let served = text(waiting.await.unwrap()).await;
    assert_eq!(served, (200, "Hello from skiff! path=/a\n".into()));
    let report = server.await.unwrap().unwrap();
    assert_eq!(
        report,
        ServeReport {
            requests: 2,
            failed: 0,
            abandoned: 0
        }
    );
}

/// Through a published port of this process, the server behind it is
/// found too, for as long as the port is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_port_leads_to_the_server_behind_it() {
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(data.path());
    let (addr, stop, server) = start(&rt, ServeOptions::new(InstanceSpec::default())).await;
    let published = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = published.local_addr().unwrap();
    let (unpublish, unpublished) = tokio::sync::oneshot::channel::<()>();
    let proxy = tokio::spawn(skiff_runtime::proxy::forward_tcp(published, addr, async {
        let _ = unpublished.await;
    }));
    // Answered through the port: both are running, so both are listed.
    let (status, body) = tokio::task::spawn_blocking(move || get(at, "/a"))
        .await
        .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "Hello from skiff! path=/a\n")
    );

    let local = Local::find(at).expect("the server behind the published port");
    let echoed = text(local.call(handed("POST", "/echo", "via")).await.unwrap()).await;
    assert_eq!(echoed, (200, "via".into()));

    unpublish.send(()).unwrap();
    proxy.await.unwrap();
    assert!(Local::find(at).is_none(), "no longer published");
    assert!(Local::find(addr).is_some(), "the server itself still is");
    stop.send(()).unwrap();
    let report = server.await.unwrap().unwrap();
    assert_eq!(report.requests, 2);
}

/// A client that never finishes its headers cannot hold the server open
/// past the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_does_not_hold_shutdown() {
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(data.path());
    let options = ServeOptions {
        header_timeout: std::time::Duration::from_millis(300),
        ..ServeOptions::new(InstanceSpec::default())
    };
    let (addr, stop, server) = start(&rt, options).await;
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: te").unwrap();
    stop.send(()).unwrap();
    let started = std::time::Instant::now();
    let report = server.await.unwrap().unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report, ServeReport::default());
}

/// A guest still running when the drain timeout ends is stopped, and its
/// client told 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_outliving_the_drain_timeout_are_abandoned() {
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(data.path());
    let (spec, out, _) = captured(&["http-hello"]);
    let options = ServeOptions {
        drain_timeout: std::time::Duration::from_millis(300),
        ..ServeOptions::new(spec)
    };
    let (addr, stop, server) = start(&rt, options).await;
    let client = tokio::task::spawn_blocking(move || get(addr, "/sleep?ms=600000"));
    wait_until("the request reached the guest", || {
        out.text().contains("/sleep")
    })
    .await;
    stop.send(()).unwrap();
    let report = server.await.unwrap().unwrap();
    assert_eq!(
        report,
        ServeReport {
            requests: 0,
            failed: 1,
            abandoned: 1
        }
    );
    assert_eq!(client.await.unwrap().0, 503);
}

/// With every slot busy, a request waits at most `queue_timeout`, then 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_cannot_get_a_slot_in_time_gets_503() {
    let data = tempfile::tempdir().unwrap();
    let rt = runtime_with_slots(data.path(), 1);
    let (spec, out, _) = captured(&["http-hello"]);
    let options = ServeOptions {
        queue_timeout: std::time::Duration::from_millis(200),
        ..ServeOptions::new(spec)
    };
    let (addr, stop, server) = start(&rt, options).await;
    let busy = tokio::task::spawn_blocking(move || get(addr, "/sleep?ms=3000"));
    wait_until("the slow request holds the slot", || {
        out.text().contains("/sleep")
    })
    .await;
    let (status, _) = tokio::task::spawn_blocking(move || get(addr, "/"))
        .await
        .unwrap();
    assert_eq!(status, 503);
    assert_eq!(busy.await.unwrap(), (200, "slept 3000ms\n".to_string()));
    stop.send(()).unwrap();
    let report = server.await.unwrap().unwrap();
    assert_eq!(
        report,
        ServeReport {
            requests: 1,
            failed: 1,
            abandoned: 0
        }
    );
}
