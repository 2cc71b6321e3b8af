//! The load `skiff bench http` puts on a server: N keep-alive HTTP/1.1
//! connections, each sending its next GET as soon as the last answer is
//! read, for a while (as `wrk -c N` does), timing every request. And the
//! native hyper server it compares with.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What one round of load measured.
#[derive(Debug, Default, Clone)]
pub struct Load {
    /// Answered 2xx, whole.
    pub requests: u64,
    /// Failed: refused, cut short, or not 2xx.
    pub errors: u64,
    pub first_error: Option<String>,
    /// Each answered request's latency, µs.
    pub latencies: Vec<f64>,
    pub elapsed: Duration,
}

impl Load {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `connections` connections to `addr` sending `GET /` with `Host: host`
/// for `time`, on a runtime of two threads (the load's share of the
/// machine, as `wrk -t2`).
pub fn drive(addr: SocketAddr, host: &str, connections: usize, time: Duration) -> Load {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return Load {
                errors: 1,
                first_error: Some(format!("cannot start the load's runtime: {e}")),
                ..Load::default()
            };
        }
    };
    rt.block_on(async {
        let start = Instant::now();
        let deadline = start + time;
        let mut all = Vec::with_capacity(connections);
        for _ in 0..connections {
            all.push(tokio::spawn(connection(addr, host.to_string(), deadline)));
        }
        let mut load = Load::default();
        for c in all {
            let Ok(one) = c.await else { continue };
            load.requests += one.requests;
            load.errors += one.errors;
            load.first_error = load.first_error.or(one.first_error);
            load.latencies.extend(one.latencies);
        }
        load.elapsed = start.elapsed();
        load
    })
}

/// One connection's requests until `deadline`; a broken connection is
/// made again.
async fn connection(addr: SocketAddr, host: String, deadline: Instant) -> Load {
    let mut load = Load::default();
    let fail = |load: &mut Load, why: String| {
        load.errors += 1;
        load.first_error.get_or_insert(why);
    };
    'connect: while Instant::now() < deadline {
        let stream = match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => {
                fail(&mut load, format!("connecting to {addr}: {e}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await
        else {
            fail(&mut load, format!("HTTP/1.1 handshake with {addr} failed"));
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < deadline {
            let req = match hyper::Request::get("/")
                .header("host", &host)
                .body(Empty::<Bytes>::new())
            {
                Ok(r) => r,
                Err(e) => {
                    fail(&mut load, format!("building a request: {e}"));
                    return load;
                }
            };
            let sent = Instant::now();
            let answered = match sender.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    match resp.into_body().collect().await {
                        Ok(_) if status.is_success() => Ok(()),
                        Ok(_) => Err(format!("answered {status}")),
                        Err(e) => Err(format!("the answer was cut short: {e}")),
                    }
                }
                Err(e) => Err(format!("the request failed: {e}")),
            };
            match answered {
                Ok(()) => {
                    load.requests += 1;
                    load.latencies.push(sent.elapsed().as_secs_f64() * 1e6);
                }
                Err(why) => {
                    fail(&mut load, why);
                    continue 'connect;
                }
            }
        }
    }
    load
}

/// The native server: hyper answering every request as the hello guest
/// does (`200 Hello from skiff! path=/…`, text/plain), on all cores. The
/// physical ceiling of this machine for that answer.
pub fn native_server(addr: SocketAddr) -> anyhow::Result<()> {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        // The parent reads where it listens from the first line.
        println!("http://{}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let body = format!("Hello from skiff! path={}\n", req.uri().path());
                    hyper::Response::builder()
                        .header("content-type", "text/plain")
                        .header("content-length", body.len())
                        .body(Full::new(Bytes::from(body)))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
