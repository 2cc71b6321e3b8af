//! Tests of the `skiff-runtime` library API, as the agent will use it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cache;
mod cpu;
mod http_serve;
mod lifecycle;
mod wasi;

use skiff_runtime::{CaptureSink, InstanceSpec, Output, Runtime, RuntimeConfig};
use std::sync::Arc;

/// A runtime with its own data dir, so cache state is the test's own.
pub fn runtime(data: &std::path::Path) -> Runtime {
    Runtime::new(RuntimeConfig::default().with_data_dir(data)).unwrap()
}

/// [`runtime`] with a pool of only `slots` instance slots.
pub fn runtime_with_slots(data: &std::path::Path, slots: u32) -> Runtime {
    Runtime::new(RuntimeConfig {
        max_instances: slots,
        ..RuntimeConfig::default().with_data_dir(data)
    })
    .unwrap()
}

pub use wasm_apps::{app, both};

/// A runtime on the calling thread only, so instances contend for it.
pub fn one_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A spec whose stdout and stderr are captured.
pub fn captured(args: &[&str]) -> (InstanceSpec, CaptureSink, CaptureSink) {
    let out = CaptureSink::new();
    let err = CaptureSink::new();
    let spec = InstanceSpec {
        args: args.iter().map(|s| s.to_string()).collect(),
        stdout: Output::Sink(Arc::new(out.clone())),
        stderr: Output::Sink(Arc::new(err.clone())),
        ..InstanceSpec::default()
    };
    (spec, out, err)
}

/// Polls `cond` until it holds; fails the test after 30 s.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
