//! `skiff registry`: the OCI registry alone, in the foreground.

use clap::{Args, Subcommand};
use skiff_registry::{AuthMode, ChallengeKind, Registry, RegistryConfig};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RegistryArgs {
    #[command(subcommand)]
    command: Option<RegistryCommand>,

    /// Address to listen on.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:5050")]
    addr: SocketAddr,

    /// Refuse pushes to repositories that do not exist yet (as ECR does),
    /// instead of creating them on first push.
    #[arg(long)]
    no_create_on_push: bool,

    /// Who must authenticate: off, push (pulls stay anonymous) or all.
    #[arg(long, value_name = "WHO", default_value = "off", value_parser = AuthMode::parse)]
    auth: AuthMode,

    /// How a 401 asks for credentials: bearer (the Docker token flow,
    /// the default) or basic (as ECR does). Both accept Basic
    /// AWS:<token>. Only with --auth push or all.
    #[arg(long, value_name = "KIND", value_parser = parse_challenge)]
    auth_challenge: Option<ChallengeKind>,

    /// Scan the images pushed to repositories this creates.
    #[arg(long)]
    scan_on_push: bool,
}

#[derive(Subcommand, Debug)]
enum RegistryCommand {
    /// Issue a registry token: the password for user AWS (ECR's
    /// GetAuthorizationToken).
    Token {
        /// How long it lasts (`12h`, `30m`, `7days`).
        #[arg(long, default_value = "12h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Revoke every issued token.
    RevokeTokens,
}

fn parse_challenge(s: &str) -> Result<ChallengeKind, String> {
    match s {
        "bearer" => Ok(ChallengeKind::Bearer),
        "basic" => Ok(ChallengeKind::Basic),
        other => Err(format!(
            "unknown challenge {other:?} (expected bearer or basic)"
        )),
    }
}

fn admin(args: RegistryCommand, data_dir: &Path) -> Result<(), String> {
    let registry = Registry::open(RegistryConfig::new(data_dir.join("registry")))
        .map_err(|e| e.to_string())?;
    match args {
        RegistryCommand::Token { ttl } => {
            let token = registry.issue_token(ttl).map_err(|e| e.to_string())?;
            let expires =
                std::time::UNIX_EPOCH + Duration::from_secs(token.expires_at.max(0) as u64);
            say!(
                "Token for user AWS, valid until {}:",
                humantime::format_rfc3339_seconds(expires)
            );
            println!("{}", token.token);
        }
        RegistryCommand::RevokeTokens => {
            let n = registry.revoke_tokens().map_err(|e| e.to_string())?;
            println!("Revoked {n} token(s)");
        }
    }
    Ok(())
}

/// Serves until SIGINT/SIGTERM; returns the exit status.
pub fn run(args: RegistryArgs, data_dir: &Path) -> i32 {
    if let Some(command) = args.command {
        return match admin(command, data_dir) {
            Ok(()) => 0,
            Err(e) => {
                say!("error: {e}");
                1
            }
        };
    }
    crate::raise_open_files_limit();
    if args.auth_challenge.is_some() && args.auth == AuthMode::Off {
        // Nothing is ever challenged with auth off: say so rather than
        // accept a flag that does nothing.
        say!("error: --auth-challenge needs --auth push or --auth all");
        return 2;
    }
    let result = (|| -> Result<(), String> {
        let mut config = RegistryConfig::new(data_dir.join("registry"));
        config.create_on_push = !args.no_create_on_push;
        config.auth = args.auth;
        config.challenge = args.auth_challenge.unwrap_or_default();
        config.default_settings.scan_on_push = args.scan_on_push;
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
            // Signals are caught from here, before the banner says we serve.
            let stop = crate::signals::shutdown_signal();
            say!(
                "Registry listening on http://{local}/ (data in {})",
                data_dir.join("registry").display()
            );
            registry
                .serve(listener, async {
                    stop.await;
                    say!("skiff: shutting down the registry");
                })
                .await
                .map_err(|e| e.to_string())
        })
    })();
    match result {
        Ok(()) => 0,
        Err(e) => {
            say!("error: {e}");
            125
        }
    }
}
