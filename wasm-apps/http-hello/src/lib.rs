//! A `wasi:http/proxy` component: the HTTP hello world of skiff.
//!
//! - `GET /` (or any path) → `200 Hello from skiff! path=/...`
//! - `/sleep?ms=N` → waits N milliseconds before answering (for drain tests)
//! - `/echo` → answers with the request body
//! - `/trap` → traps, so the host must answer 500 and keep serving
//! - `/count` → how many requests this instance has handled: always 1 when
//!   every request gets a fresh instance
//! - `/env` → the instance's environment, one `KEY=VALUE` per line
//!
//! Every request also prints one line on stdout, which the host streams.

use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::StreamError;

struct HttpHello;

static HANDLED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn read_body(request: &IncomingRequest) -> Vec<u8> {
    let mut data = Vec::new();
    let Ok(body) = request.consume() else {
        return data;
    };
    let Ok(stream) = body.stream() else {
        return data;
    };
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => data.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(_)) => break,
        }
    }
    drop(stream);
    let _ = IncomingBody::finish(body);
    data
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
        } else if path == "/count" {
            respond(out, 200, "text/plain", format!("{handled}\n").as_bytes());
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
