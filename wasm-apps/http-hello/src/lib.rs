//! A `wasi:http/proxy` component: the HTTP hello world of skiff.
//!
//! - `GET /` (or any path) → `200 Hello from skiff! path=/...`
//! - `/sleep?ms=N` → waits N milliseconds before answering (for drain tests)
//! - `/echo` → answers with the request body
//! - `/trap` → traps, so the host must answer 500 and keep serving
//! - `/count` → how many requests this instance has handled: always 1 when
//!   every request gets a fresh instance
//! - `/env` → the instance's environment, one `KEY=VALUE` per line
//! - `/headers` → the request's authority, then its headers, one
//!   `name: value` per line, sorted (for proxy tests)
//! - `.../whoami` → the value of `WHO`
//! - `/health` → 500 while `/state/sick` exists, else 200
//! - `/fetch?url=http://HOST:PORT/PATH` → makes an outgoing `wasi:http`
//!   request and answers with its status and body, or 502 and the error
//!   code when the host refuses or the request fails
//!
//! Every request also prints one line on stdout, which the host streams.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, IncomingResponse, OutgoingBody, OutgoingRequest,
    OutgoingResponse, ResponseOutparam, Scheme,
};
use wasip2::io::streams::{InputStream, StreamError};

struct HttpHello;

static HANDLED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn read_all(stream: &InputStream) -> Vec<u8> {
    let mut data = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => data.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(_)) => break,
        }
    }
    data
}

fn read_body(request: &IncomingRequest) -> Vec<u8> {
    let Ok(body) = request.consume() else {
        return Vec::new();
    };
    let Ok(stream) = body.stream() else {
        return Vec::new();
    };
    let data = read_all(&stream);
    drop(stream);
    let _ = IncomingBody::finish(body);
    data
}

fn response_body(response: &IncomingResponse) -> Vec<u8> {
    let Ok(body) = response.consume() else {
        return Vec::new();
    };
    let Ok(stream) = body.stream() else {
        return Vec::new();
    };
    let data = read_all(&stream);
    drop(stream);
    let _ = IncomingBody::finish(body);
    data
}

/// GETs an `http://` URL through `wasi:http/outgoing-handler`.
fn fetch(url: &str) -> Result<(u16, Vec<u8>), String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    request.set_scheme(Some(&Scheme::Http)).map_err(|()| "bad scheme")?;
    request.set_authority(Some(authority)).map_err(|()| "bad authority")?;
    request.set_path_with_query(Some(path)).map_err(|()| "bad path")?;
    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response")?
        .map_err(|()| "response already taken")?
        .map_err(|e| format!("{e:?}"))?;
    Ok((response.status(), response_body(&response)))
}

fn respond(out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[content_type.as_bytes().to_vec()]);
    let _ = headers.set("content-length", &[body.len().to_string().into_bytes()]);
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(stream) = outgoing.write() {
        for chunk in body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                break;
            }
        }
        drop(stream);
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

impl wasip2::exports::http::incoming_handler::Guest for HttpHello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let handled = HANDLED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let path = request.path_with_query().unwrap_or_else(|| "/".to_string());
        println!("http-hello: {path}");
        if let Some(query) = path.strip_prefix("/sleep?ms=") {
            let ms: u64 = query.parse().unwrap_or(0);
            wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
            respond(out, 200, "text/plain", format!("slept {ms}ms\n").as_bytes());
        } else if path == "/echo" {
            let body = read_body(&request);
            respond(out, 200, "application/octet-stream", &body);
        } else if path == "/trap" {
            core::arch::wasm32::unreachable();
        } else if let Some(url) = path.strip_prefix("/fetch?url=") {
            match fetch(url) {
                Ok((status, body)) => respond(out, status, "application/octet-stream", &body),
                Err(e) => respond(out, 502, "text/plain", format!("fetch failed: {e}\n").as_bytes()),
            }
        } else if path.ends_with("/whoami") {
            // Which service answered (its WHO), for load balancer tests.
            let who = std::env::var("WHO").unwrap_or_else(|_| "nobody".into());
            respond(out, 200, "text/plain", format!("{who}\n").as_bytes());
        } else if path == "/health" {
            // Sick while /state/sick exists (a task-scoped volume a test
            // can reach), healthy otherwise.
            if std::fs::metadata("/state/sick").is_ok() {
                respond(out, 500, "text/plain", b"sick\n");
            } else {
                respond(out, 200, "text/plain", b"ok\n");
            }
        } else if path == "/count" {

            respond(out, 200, "text/plain", format!("{handled}\n").as_bytes());
        } else if path == "/headers" {
            let mut lines: Vec<String> = request
                .headers()
                .entries()
                .into_iter()
                .map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(&v)))
                .collect();
            lines.sort();
            let authority = request.authority().unwrap_or_default();
            let text = format!("authority={authority}\n{}", lines.concat());
            respond(out, 200, "text/plain", text.as_bytes());
        } else if path == "/env" {
            let mut vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}\n")).collect();
            vars.sort();
            respond(out, 200, "text/plain", vars.concat().as_bytes());

        } else {
            respond(
                out,
                200,
                "text/plain",
                format!("Hello from skiff! path={path}\n").as_bytes(),
            );
        }
    }
}

wasip2::http::proxy::export!(HttpHello);
