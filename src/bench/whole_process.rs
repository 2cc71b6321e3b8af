//! `skiff bench run`: `skiff run` itself, a whole process each time, from
//! the parent's spawn to its exit, beside `wasmtime run` on the same file
//! and a native process that does nothing (`true`: the floor of starting
//! any process on this machine). The targets take turns, one run each per
//! round, so a busy moment slows all of them alike.

use super::baselines::{self, Baseline, Ran};
use super::report::Phase;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// The name of the floor: starting a process at all.
pub const FLOOR: &str = "a native process doing nothing";

/// What to run.
pub struct Plan<'a> {
    /// This binary: the `skiff` whose `run` is measured.
    pub skiff: PathBuf,
    pub file: &'a Path,
    pub runs: usize,
    /// Compile every time: a new data dir per `skiff run`, `-C cache=n`
    /// for `wasmtime run`.
    pub cold: bool,
    /// The wasmtime CLI given with `--wasmtime`.
    pub wasmtime: Option<&'a Path>,
    pub baselines: bool,
    /// How long the untimed first `skiff run` may take (`--timeout`): a
    /// guest still running then is not one this bench can time.
    pub first_run_limit: Duration,
    /// Set to a signal's number when one asks the bench to stop.
    pub interrupted: &'a AtomicI32,
}

/// Why the bench stopped early.
#[derive(Debug)]
pub enum Stopped {
    /// A signal asked it to: its number.
    Interrupted(i32),
    /// A run failed: why.
    Failed(String),
}

/// What ran: skiff's start → exit, and each baseline's (or why it did
/// not run).
pub struct Measured {
    pub skiff: Phase,
    pub baselines: Vec<Baseline>,
}

/// `d` as `skiff run --timeout` takes it, in milliseconds.
fn millis_arg(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// One program measured a process at a time.
struct Target {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    /// The untimed first run's arguments.
    first_args: Vec<String>,
    /// A data dir of its own per run (skiff cold).
    fresh_data_dir: bool,
    version: Option<String>,
    phase: Phase,
    /// Why it stopped being measured, if it did.
    failed: Option<String>,
    /// Whether that was `skiff run`'s timeout (exit status 124).
    timed_out: bool,
}

impl Target {
    fn new(name: String, program: PathBuf, args: Vec<String>) -> Target {
        Target {
            name,
            program,
            first_args: args.clone(),
            args,
            fresh_data_dir: false,
            version: None,
            phase: Phase::new("start → exit", "a process, spawned to exited"),
            failed: None,
            timed_out: false,
        }
    }

    /// Runs it once; its time when `timed`.
    fn run(&mut self, timed: bool) {
        if self.failed.is_some() {
            return;
        }
        // Made (and removed) outside the time measured.
        let data_dir = match self.fresh_data_dir.then(tempfile::tempdir).transpose() {
            Ok(dir) => dir,
            Err(e) => {
                self.failed = Some(format!("cannot make a data dir: {e}"));
                return;
            }
        };
        let args = if timed { &self.args } else { &self.first_args };
        let mut command = Command::new(&self.program);
        if let Some(dir) = &data_dir {
            command.arg("--data-dir").arg(dir.path());
        }
        let (took, out) = match baselines::timed_process(command.args(args)) {
            Ok(ran) => ran,
            Err(e) => {
                self.failed = Some(format!("cannot run {}: {e}", self.program.display()));
                return;
            }
        };
        if !out.status.success() {
            self.timed_out = out.status.code() == Some(124);
            self.failed = Some(format!(
                "`{} {}` failed ({}): {}",
                self.program.display(),
                args.join(" "),
                out.status,
                reason(&out.stderr)
            ));
        } else if timed {
            self.phase.micros.push(took);
        }
    }

    fn outcome(self) -> Result<Ran, String> {
        match self.failed {
            Some(why) => Err(why),
            None => Ok(Ran {
                version: self.version,
                phases: vec![self.phase],
            }),
        }
    }
}

/// Runs `f` with a flag that a SIGINT or SIGTERM arriving meanwhile sets
/// to its number (instead of ending the process there and then).
pub fn watching_signals<T>(f: impl FnOnce(&AtomicI32) -> T) -> std::io::Result<T> {
    let flag = AtomicI32::new(0);
    let done = tokio::sync::Notify::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signal = {
        let _in_runtime = runtime.enter();
        crate::signals::shutdown_signal()
    };
    Ok(std::thread::scope(|scope| {
        scope.spawn(|| {
            runtime.block_on(async {
                tokio::select! {
                    number = signal => flag.store(number, Ordering::Relaxed),
                    () = done.notified() => {}
                }
            })
        });
        let out = f(&flag);
        done.notify_one();
        out
    }))
}

/// What a failed process said about why: skiff's own line (`error:`,
/// `skiff:`, not the wasm backtrace after it), else its last line.
fn reason(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("error:") || l.starts_with("skiff:"))
        .map(str::to_string)
        .unwrap_or_else(|| baselines::last_line(stderr))
}

/// Runs every target `plan.runs` times, in turns.
pub fn run(plan: &Plan) -> Result<Measured, Stopped> {
    let file = plan.file.to_string_lossy().into_owned();
    // A data dir for the warm runs, its compile cache filled by the
    // untimed first run.
    let warm_dir =
        tempfile::tempdir().map_err(|e| Stopped::Failed(format!("cannot make a data dir: {e}")))?;
    let mut skiff = Target::new("skiff run".into(), plan.skiff.clone(), Vec::new());
    if plan.cold {
        skiff.fresh_data_dir = true;
    } else {
        skiff.args.push("--data-dir".into());
        skiff
            .args
            .push(warm_dir.path().to_string_lossy().into_owned());
    }
    skiff.first_args = skiff.args.clone();
    skiff.args.extend(["run".into(), file.clone()]);
    let limit = millis_arg(plan.first_run_limit);
    skiff
        .first_args
        .extend(["run".into(), "--timeout".into(), limit, file.clone()]);

    // Each baseline to measure, or why it cannot be, in the order printed.
    let mut others: Vec<Result<Target, Baseline>> = Vec::new();
    if plan.baselines {
        let name = format!(
            "wasmtime CLI (`wasmtime run{}`, a process each)",
            if plan.cold { " -C cache=n" } else { "" }
        );
        match baselines::find_wasmtime(plan.wasmtime) {
            Ok(wasmtime) => {
                let mut args = vec!["run".to_string()];
                if plan.cold {
                    args.extend(["-C".into(), "cache=n".into()]);
                }
                args.push(file.clone());
                let mut t = Target::new(name, wasmtime, args);
                t.version = baselines::version_of(&t.program, "--version");
                others.push(Ok(t));
            }
            Err(why) => others.push(Err(Baseline {
                name,
                outcome: Err(why),
            })),
        }
        let name = format!("{FLOOR} (`true`, a process each)");
        match baselines::on_path("true") {
            Some(program) => others.push(Ok(Target::new(name, program, Vec::new()))),
            None => others.push(Err(Baseline {
                name,
                outcome: Err("no `true` on PATH".into()),
            })),
        }
    }

    // One untimed round: the compile caches filled (warm), the programs'
    // files in the page cache.
    let stop = || match plan.interrupted.load(Ordering::Relaxed) {
        0 => Ok(()),
        signal => Err(Stopped::Interrupted(signal)),
    };
    for timed in std::iter::once(false).chain(std::iter::repeat_n(true, plan.runs)) {
        skiff.run(timed);
        stop()?;
        if let Some(why) = &skiff.failed {
            return Err(Stopped::Failed(if skiff.timed_out && !timed {
                format!("{why} (bench run times guests that run to their exit)")
            } else {
                why.clone()
            }));
        }
        for t in others.iter_mut().flatten() {
            t.run(timed);
            stop()?;
        }
    }
    let baselines = others
        .into_iter()
        .map(|t| match t {
            Ok(t) => Baseline {
                name: t.name.clone(),
                outcome: t.outcome(),
            },
            Err(skipped) => skipped,
        })
        .collect();
    Ok(Measured {
        skiff: skiff.phase,
        baselines,
    })
}
