//! `skiff registry`: the OCI registry alone, in the foreground.

use clap::Args;
use skiff_registry::{Registry, RegistryConfig};
use std::net::SocketAddr;
use std::path::Path;

#[derive(Args, Debug)]
pub struct RegistryArgs {
    /// Address to listen on.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:5050")]
    addr: SocketAddr,

    /// Refuse pushes to repositories that do not exist yet (as ECR does),
    /// instead of creating them on first push.
    #[arg(long)]
    no_create_on_push: bool,
}

/// Serves until SIGINT/SIGTERM; returns the exit status.
pub fn run(args: RegistryArgs, data_dir: &Path) -> i32 {
    let result = (|| -> Result<(), String> {
        let mut config = RegistryConfig::new(data_dir.join("registry"));
        config.create_on_push = !args.no_create_on_push;
        let registry = Registry::open(config).map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))?;
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind(args.addr)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
            let local = listener.local_addr().map_err(|e| e.to_string())?;
            eprintln!(
                "Registry listening on http://{local}/ (data in {})",
                data_dir.join("registry").display()
            );
            registry
                .serve(listener, async {
                    crate::signals::shutdown_signal().await;
                    eprintln!("skiff: shutting down the registry");
                })
                .await
                .map_err(|e| e.to_string())
        })
    })();
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            125
        }
    }
}
