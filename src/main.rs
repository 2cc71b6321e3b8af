//! `skiff`: Amazon ECS rebuilt for WebAssembly. This binary is a thin client
//! of the libraries: it parses, calls them, and prints.

/// `eprintln!` that does not panic when stderr is gone (closed, a full
/// disk, a reader that left): what skiff says is lost, but the exit
/// status it promises is not turned into a panic's 101.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod agent;
mod agent_keys;
mod api_client;
mod aws_config;
mod bench;
mod ecs_cli;
mod ecs_deploy;
mod images;
mod registry;
mod repo;
mod run;
mod serve;
mod signals;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = ABOUT,
    propagate_version = true
)]
struct Cli {
    #[command(flatten)]
    global: Global,

    #[command(subcommand)]
    command: Command,
}

/// What every command takes.
#[derive(clap::Args)]
struct Global {
    /// Where skiff keeps its state (compiled code, volumes; default:
    /// SKIFF_DATA_DIR, else ~/.skiff). The variable is read by skiff, not
    /// the parser, so a flag given wins over it and an empty one is unset.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

/// The compile cache's size, for the commands that compile (serve, agent,
/// run, pull): only those list it, and the others refuse it as any
/// argument they do not take.
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub(crate) struct CompileCacheArgs {
    /// How much compiled code to keep in the data dir (e.g. 512m, 4g;
    /// default 1g, or SKIFF_COMPILE_CACHE_LIMIT): past it, the least
    /// recently used is removed.
    #[arg(long, value_name = "SIZE", value_parser = parse_cache_limit)]
    compile_cache_limit: Option<u64>,
}

fn parse_cache_limit(s: &str) -> Result<u64, String> {
    let bytes = skiff_runtime::units::parse_size(s)?;
    if bytes < 1 << 20 {
        return Err(format!(
            "`{s}`: a compile cache limit is at least 1m (one compiled module is often more)"
        ));
    }
    Ok(bytes)
}

/// `--compile-cache-limit`, once parsed.
static COMPILE_CACHE_LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// The runtime settings every command starts from: the defaults, with the
/// data dir and the global flags.
pub(crate) fn runtime_config(data_dir: impl Into<PathBuf>) -> skiff_runtime::RuntimeConfig {
    skiff_runtime::RuntimeConfig {
        compile_cache_limit: COMPILE_CACHE_LIMIT
            .get()
            .copied()
            .unwrap_or(skiff_runtime::DEFAULT_COMPILE_CACHE_LIMIT),
        ..skiff_runtime::RuntimeConfig::default().with_data_dir(data_dir)
    }
}

/// [`Cli`] with only `run`, parsed when `run` is the first argument:
/// building every command's arguments (clap builds the whole tree to parse
/// any of it) was a tenth of a `skiff run hello` process. The same
/// `Global` and `RunArgs`, so help and errors read the same either way.
#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = ABOUT,
    propagate_version = true
)]
struct RunCli {
    #[command(flatten)]
    global: Global,

    #[command(subcommand)]
    command: RunOnly,
}

#[derive(Subcommand)]
enum RunOnly {
    #[command(about = RUN_ABOUT)]
    Run(Box<run::RunArgs>),
}

const ABOUT: &str = "Amazon ECS rebuilt for WebAssembly";
const RUN_ABOUT: &str = "Run a WASI module or component, sandboxed and limited";

#[derive(Subcommand)]
enum Command {
    /// Run the ECS API, the registry, the control plane and a local
    /// container instance, in the foreground.
    Serve(Box<serve::ServeArgs>),
    /// Run this machine as a container instance of a cluster whose control
    /// plane (`skiff serve`) is elsewhere, in the foreground.
    Agent(Box<agent::AgentArgs>),
    /// Issue, list and revoke the keys agents join a cluster with (on the
    /// control plane's machine).
    AgentKeys(agent_keys::AgentKeysArgs),
    #[command(about = RUN_ABOUT)]
    Run(Box<run::RunArgs>),
    /// Run the OCI registry alone, in the foreground.
    Registry(registry::RegistryArgs),
    /// Push a Wasm file to a registry as an OCI artifact.
    Push(images::PushArgs),
    /// Pull an image and compile it, so its first start only instantiates.
    Pull(images::PullArgs),
    /// List pulled images.
    Images,
    /// Forget pulled images.
    Rmi(images::RmiArgs),
    /// Save credentials for a registry.
    Login(images::LoginArgs),
    /// Manage the local registry's repositories: tag immutability, scan
    /// on push, lifecycle policies, scan findings.
    Repo(repo::RepoArgs),
    /// List a cluster's tasks (a client of `skiff serve`'s API).
    Ps(ecs_cli::PsArgs),
    /// List a cluster's services.
    Services(ecs_cli::ServicesArgs),
    /// Print (and follow) a task's or a service's awslogs output.
    Logs(ecs_cli::LogsArgs),
    /// Register a task definition and create or update a service with it,
    /// then wait until the rollout completes.
    Deploy(ecs_deploy::DeployArgs),
    /// Change how many tasks a service runs, then wait until it does
    Scale(ecs_deploy::ScaleArgs),
    /// Measure skiff on this machine beside baselines run alongside it
    /// (cold start: where each task's time goes).
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(&e),
    };
    init_logging();
    if prints_for_a_pipe(&cli.command) {
        // Like any Unix tool, end quietly when a reader of our output
        // leaves (`skiff images | head -1`), rather than panicking in
        // println! with exit status 101. Not for servers or `run`, whose
        // writes to pipes must never end them, nor for bench, which must
        // stop what it started. (Sockets are written with MSG_NOSIGNAL.)
        // SAFETY: no other thread exists yet to race on the disposition.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // The flag, else the variable (read here, not by clap, so that a flag
    // given wins over a bad variable, an empty one is unset, and an error
    // names the variable).
    let cache = match &cli.command {
        Command::Serve(args) => Some(args.compile_cache),
        Command::Agent(args) => Some(args.compile_cache),
        Command::Run(args) => Some(args.compile_cache),
        Command::Pull(args) => Some(args.compile_cache),
        _ => None,
    };
    let limit = match cache.map(|c| c.compile_cache_limit) {
        // A command that compiles nothing.
        None => None,
        Some(Some(limit)) => Some(limit),
        Some(None) => match std::env::var("SKIFF_COMPILE_CACHE_LIMIT") {
            Ok(v) if !v.is_empty() => match parse_cache_limit(&v) {
                Ok(limit) => Some(limit),
                Err(e) => {
                    say!("error: SKIFF_COMPILE_CACHE_LIMIT in the environment: {e}");
                    return ExitCode::from(2);
                }
            },
            _ => None,
        },
    };
    if let Some(limit) = limit {
        let _ = COMPILE_CACHE_LIMIT.set(limit);
    }
    let data_dir = cli
        .global
        .data_dir
        .unwrap_or_else(skiff_runtime::default_data_dir);
    let code = match cli.command {
        Command::Serve(args) => serve::run(*args, &data_dir),
        Command::Agent(args) => agent::run(*args, &data_dir),
        Command::AgentKeys(args) => agent_keys::run(args, &data_dir),
        Command::Run(args) => run::run(*args, data_dir),
        Command::Registry(args) => registry::run(args, &data_dir),
        Command::Push(args) => images::push(args, &data_dir),
        Command::Pull(args) => images::pull(args, &data_dir),
        Command::Images => images::images(&data_dir),
        Command::Rmi(args) => images::rmi(args, &data_dir),
        Command::Login(args) => images::login(args, &data_dir),
        Command::Repo(args) => repo::run(args, &data_dir),
        Command::Ps(args) => ecs_cli::ps(args),
        Command::Services(args) => ecs_cli::services(args),
        Command::Logs(args) => ecs_cli::logs(args),
        Command::Deploy(args) => ecs_deploy::deploy(args),
        Command::Scale(args) => ecs_deploy::scale(args),
        Command::Bench(args) => bench::run(args),
    };
    ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1))
}

/// Whether `command` is a client that prints and holds nothing a signal
/// could leave half done.
fn prints_for_a_pipe(command: &Command) -> bool {
    match command {
        Command::Serve(_)
        | Command::Agent(_)
        | Command::Run(_)
        | Command::Registry(_)
        | Command::Bench(_) => false,
        Command::AgentKeys(_)
        | Command::Push(_)
        | Command::Pull(_)
        | Command::Images
        | Command::Rmi(_)
        | Command::Login(_)
        | Command::Repo(_)
        | Command::Ps(_)
        | Command::Services(_)
        | Command::Logs(_)
        | Command::Deploy(_)
        | Command::Scale(_) => true,
    }
}

/// The command line: `skiff run …` through [`RunCli`], anything else
/// through [`Cli`].
fn parse() -> Result<Cli, clap::Error> {
    if std::env::args_os().nth(1).is_some_and(|a| a == "run") {
        let RunCli { global, command } = RunCli::try_parse()?;
        let RunOnly::Run(args) = command;
        return Ok(Cli {
            global,
            command: Command::Run(args),
        });
    }
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().try_get_matches()?;
    let cli = Cli::from_arg_matches(&matches)?;
    // The benches start what they measure with data dirs of their own:
    // one given would not be used, so it is refused rather than ignored.
    let given = |id| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    if matches!(cli.command, Command::Bench(_)) && given("data_dir") {
        return Err(Cli::command().error(
            clap::error::ErrorKind::ArgumentConflict,
            "--data-dir: skiff bench uses data dirs of its own (empty ones, so what is cached elsewhere does not change its figures); drop --data-dir",
        ));
    }
    Ok(cli)
}

/// Help and version go to stdout as usual; a usage error is one line on
/// stderr and exit status 2.
fn clap_exit(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(if e.use_stderr() { 2 } else { 0 })
        }
        _ => {
            // One line: clap's first, with what it names on the lines
            // after it (the missing arguments, a "similar argument" tip),
            // without the usage block.
            let rendered = e.render().to_string();
            let mut parts: Vec<&str> = Vec::new();
            for line in rendered.lines().map(str::trim) {
                if line.starts_with("Usage:") || line.starts_with("For more information") {
                    break;
                }
                // clap's "to pass '--x' as a value, use '-- --x'": after
                // `--`, `skiff run` takes it for the Wasm file.
                if line.starts_with("tip: to pass") {
                    continue;
                }
                if !line.is_empty() {
                    parts.push(line);
                }
            }
            let one = if parts.is_empty() {
                "error: invalid arguments".to_string()
            } else {
                parts.join(" ")
            };
            say!("{one}");
            ExitCode::from(2)
        }
    }
}

/// Lets a server hold as many open files as the system allows it (the soft
/// limit, often 1024, up to the hard one), as Go's runtime does for every
/// program: its listeners bound their connections themselves, and running
/// out of descriptors would stop it accepting anyone.
pub(crate) fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                tracing::debug!("cannot raise the open files limit");
            }
        }
    }
}

/// `SKIFF_LOG` takes a tracing filter (`debug`, `skiff_runtime=trace`);
/// warnings and errors show by default.
fn init_logging() {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Without SKIFF_LOG, a plain level: parsing a filter is a start's
    // worth of a `skiff run` process.
    let _ = match tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG") {
        Ok(filter) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .try_init(),
        Err(_) => tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .try_init(),
    };
}
