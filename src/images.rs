//! `skiff push`, `pull`, `images`, `rmi`, `login`: moving Wasm images
//! between registries and this machine.

use clap::Args;
use skiff_registry::images::{ImageStore, Puller};
use skiff_registry::remote::{self, Credentials, RemoteOptions};
use skiff_runtime::{Runtime, RuntimeConfig};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Options every command that talks to a registry takes.
#[derive(Args, Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Speak plain HTTP to this registry (host[:port]); loopback registries
    /// always are. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// The Wasm module or component to push.
    #[arg(value_name = "FILE.wasm")]
    file: PathBuf,
    /// Where to push it: REGISTRY/REPOSITORY[:TAG].
    #[arg(value_name = "REF")]
    reference: String,
    #[command(flatten)]
    registry: RegistryOptions,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// The image: REGISTRY/REPOSITORY[:TAG|@DIGEST].
    #[arg(value_name = "REF")]
    reference: String,
    #[command(flatten)]
    registry: RegistryOptions,

    #[command(flatten)]
    pub(crate) compile_cache: crate::CompileCacheArgs,
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Images to forget.
    #[arg(value_name = "REF", required = true)]
    references: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The registry: HOST[:PORT].
    #[arg(value_name = "REGISTRY")]
    registry: String,
    /// The user (ECR-style token logins use `AWS`).
    #[arg(short, long)]
    username: String,
    /// Read the password (or token) from stdin.
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    options: RegistryOptions,
}

/// Credentials saved by `skiff login`, mode 0600 under the data dir.
fn auth_file(data_dir: &Path) -> PathBuf {
    data_dir.join("auth.json")
}

fn load_credentials(data_dir: &Path) -> BTreeMap<String, Credentials> {
    std::fs::read(auth_file(data_dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The remote options for a command: its flags plus saved credentials.
pub fn remote_options(data_dir: &Path, flags: &RegistryOptions) -> RemoteOptions {
    RemoteOptions {
        insecure_registries: flags.insecure_registries.clone(),
        credentials: load_credentials(data_dir).into_iter().collect(),
        ..RemoteOptions::default()
    }
}

pub fn image_store(data_dir: &Path) -> ImageStore {
    ImageStore::new(data_dir.join("images"))
}

/// A progress bar on a terminal, nothing when stderr is not one.
pub fn progress_bar(what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

fn runtime_for(data_dir: &Path) -> Result<Runtime, String> {
    Runtime::new(RuntimeConfig {
        max_instances: 1,
        ..crate::runtime_config(data_dir)
    })
    .map_err(|e| e.to_string())
}

/// A current-thread runtime for one command's async work.
pub(crate) fn tokio() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn report(result: Result<(), String>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            say!("error: {e}");
            125
        }
    }
}

/// Where a reference with no registry host points, as in task
/// definitions: skiff's own registry (`SKIFF_REGISTRY`, else
/// `127.0.0.1:5050`, where `skiff serve` runs it).
pub fn default_registry() -> String {
    std::env::var("SKIFF_REGISTRY")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "127.0.0.1:5050".into())
}

/// `reference` with its registry: `hello:v1` is skiff's registry's, as a
/// task definition's `image` is; one naming a host (`docker.io/...`,
/// `localhost:5000/...`) is left alone.
pub fn qualify(reference: &str) -> String {
    let first = reference.split('/').next().unwrap_or("");
    let has_host = reference.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_host {
        reference.to_string()
    } else {
        format!("{}/{reference}", default_registry())
    }
}

/// An error about `qualified`, saying where a bare name pointed.
fn where_it_looked(given: &str, qualified: &str, e: String) -> String {
    if given == qualified {
        return e;
    }
    format!(
        "{e} ({given} has no registry host, so it names skiff's registry, {} — as in task definitions; set SKIFF_REGISTRY, or name another registry in full, e.g. docker.io/library/{given})",
        default_registry()
    )
}

pub fn push(mut args: PushArgs, data_dir: &Path) -> i32 {
    let given = args.reference.clone();
    args.reference = qualify(&given);
    let qualified = args.reference.clone();
    report((|| {
        let wasm = std::fs::read(&args.file)
            .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
        let name = args.file.display().to_string();
        skiff_runtime::inspect(&name, &wasm).map_err(|e| e.to_string())?;
        let options = remote_options(data_dir, &args.registry);
        // SOURCE_DATE_EPOCH (reproducible builds' convention) fixes the
        // artifact's creation time, so the same file is the same digest.
        let created = match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) if !v.is_empty() => {
                let secs: u64 = v.trim().parse().map_err(|_| {
                    format!("SOURCE_DATE_EPOCH must be whole seconds since 1970, not {v:?}")
                })?;
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)
            }
            _ => std::time::SystemTime::now(),
        };
        let bar = progress_bar("pushing");
        bar.set_length(wasm.len() as u64);
        let digest = tokio()?
            .block_on(remote::push_as_of(
                &args.reference,
                &wasm,
                created,
                &options,
            ))
            .map_err(|e| where_it_looked(&given, &qualified, e.to_string()))?;
        bar.finish_and_clear();
        println!(
            "{}@{digest}",
            remote::parse_reference(&args.reference)
                .map_err(|e| e.to_string())?
                .whole()
        );
        Ok(())
    })())
}

/// Pulls `reference` and compiles it, so the first task start only
/// instantiates. Returns the record and the binary.
pub fn pull_and_compile(
    reference: &str,
    data_dir: &Path,
    flags: &RegistryOptions,
    always: bool,
) -> Result<(skiff_registry::images::ImageRecord, Vec<u8>), String> {
    let puller = Puller::new(image_store(data_dir), remote_options(data_dir, flags));
    let bar = progress_bar("pulling");
    let progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let rt = tokio()?;
    let qualified = qualify(reference);
    let (record, wasm) = if always {
        rt.block_on(puller.pull(&qualified, &progress))
    } else {
        rt.block_on(puller.ensure(&qualified, &progress))
    }
    .map_err(|e| where_it_looked(reference, &qualified, e.to_string()))?;
    bar.finish_and_clear();
    Ok((record, wasm))
}

pub fn pull(args: PullArgs, data_dir: &Path) -> i32 {
    report((|| {
        let (record, wasm) = pull_and_compile(&args.reference, data_dir, &args.registry, true)?;
        runtime_for(data_dir)?
            .load_bytes(&record.reference, &wasm)
            .map_err(|e| e.to_string())?;
        println!("{} {} (compiled)", record.reference, record.manifest_digest);
        Ok(())
    })())
}

pub fn images(data_dir: &Path) -> i32 {
    report((|| {
        let store = image_store(data_dir);
        let records = store
            .list()
            .map_err(|e| format!("cannot read the image store: {e}"))?;
        let runtime = runtime_for(data_dir)?;
        println!(
            "{:<50} {:<19} {:>10}  COMPILED",
            "REFERENCE", "DIGEST", "SIZE"
        );
        for r in records {
            let short = r
                .manifest_digest
                .trim_start_matches("sha256:")
                .get(..12)
                .unwrap_or("")
                .to_string();
            let compiled = runtime.is_compiled(r.wasm_digest.trim_start_matches("sha256:"));
            println!(
                "{:<50} sha256:{:<12} {:>10}  {}",
                r.reference,
                short,
                skiff_runtime::format_bytes(r.size),
                if compiled { "yes" } else { "no" }
            );
        }
        Ok(())
    })())
}

pub fn rmi(args: RmiArgs, data_dir: &Path) -> i32 {
    report((|| {
        let store = image_store(data_dir);
        for reference in &args.references {
            let whole = remote::parse_reference(&qualify(reference))
                .map_err(|e| e.to_string())?
                .whole();
            if !store
                .remove(&whole)
                .map_err(|e| format!("cannot update the image store: {e}"))?
            {
                return Err(format!("no such image: {whole}"));
            }
            println!("Untagged: {whole}");
        }
        Ok(())
    })())
}

pub fn login(args: LoginArgs, data_dir: &Path) -> i32 {
    report((|| {
        let mut password = String::new();
        if args.password_stdin {
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut password)
                .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
        } else {
            return Err("give the password on stdin with --password-stdin".into());
        }
        let credentials = Credentials {
            username: args.username.clone(),
            password: password.trim_end_matches(['\n', '\r']).to_string(),
        };
        // Check them against the registry before saving them.
        let mut options = remote_options(data_dir, &args.options);
        options.credentials = vec![(args.registry.clone(), credentials.clone())];
        tokio()?
            .block_on(remote::check_login(&args.registry, &options))
            .map_err(|e| e.to_string())?;
        let mut saved = load_credentials(data_dir);
        saved.insert(args.registry.clone(), credentials);
        save_credentials(data_dir, &saved)?;
        println!("Login Succeeded");
        Ok(())
    })())
}

fn save_credentials(data_dir: &Path, all: &BTreeMap<String, Credentials>) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let path = auth_file(data_dir);
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec_pretty(all).map_err(|e| e.to_string())?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(&json).map_err(|e| e.to_string())?;
    f.sync_all().map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
