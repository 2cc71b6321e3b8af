//! `skiff agent-keys`: issue, list and revoke the keys agents join a
//! cluster with. Run on the control plane's machine, against its data dir
//! (as `skiff registry token` is); `skiff serve` sees the change at once.

use clap::{Args, Subcommand};
use skiff_control::agent_keys;
use std::path::Path;

#[derive(Args, Debug)]
pub struct AgentKeysArgs {
    #[command(subcommand)]
    command: AgentKeysCommand,
}

#[derive(Subcommand, Debug)]
enum AgentKeysCommand {
    /// Issue a key for agents of a cluster: it registers and serves that
    /// cluster's container instances and nothing else. Prints it as the
    /// variables `skiff agent` reads.
    Create {
        /// The cluster its agents join.
        #[arg(long, default_value = "default", value_name = "NAME")]
        cluster: String,
    },
    /// List the keys issued (not their secrets).
    List,
    /// Revoke a key: calls signed with it are refused from now, and the
    /// channels it opened close.
    Revoke {
        /// The key's access key id.
        #[arg(value_name = "ACCESS_KEY_ID")]
        id: String,
    },
}

pub fn run(args: AgentKeysArgs, data_dir: &Path) -> i32 {
    let path = agent_keys::file_in(&data_dir.join("control"));
    let done = match args.command {
        AgentKeysCommand::Create { cluster } => agent_keys::create(&path, &cluster).map(|k| {
            say!("Agent key for cluster {}:", k.cluster);
            println!("AWS_ACCESS_KEY_ID={}", k.access_key_id);
            println!("AWS_SECRET_ACCESS_KEY={}", k.secret_access_key);
        }),
        AgentKeysCommand::List => agent_keys::list(&path).map(|keys| {
            for k in keys {
                let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(k.created_at);
                println!(
                    "{}\t{}\t{}",
                    k.access_key_id,
                    k.cluster,
                    humantime::format_rfc3339_seconds(at)
                );
            }
        }),
        AgentKeysCommand::Revoke { id } => match agent_keys::revoke(&path, &id) {
            Ok(true) => {
                println!("Revoked {id}");
                Ok(())
            }
            Ok(false) => Err(format!("no agent key {id}")),
            Err(e) => Err(e),
        },
    };
    match done {
        Ok(()) => 0,
        Err(e) => {
            say!("error: {e}");
            1
        }
    }
}
