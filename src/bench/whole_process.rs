//! `skiff bench run`: `skiff run` itself, a whole process each time, from
//! the parent's spawn to its exit, beside `wasmtime run` on the same file
//! and a native process that does nothing (`true`: the floor of starting
//! any process on this machine). The targets take turns, one run each per
//! round, so a busy moment slows all of them alike.

use super::baselines::{self, Baseline, Ran};
use super::report::Phase;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

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
}

/// What ran: skiff's start → exit, and each baseline's (or why it did
/// not run).
pub struct Measured {
    pub skiff: Phase,
    pub baselines: Vec<Baseline>,
}

/// One program measured a process at a time.
struct Target {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    /// A data dir of its own per run (skiff cold).
    fresh_data_dir: bool,
    version: Option<String>,
    phase: Phase,
    /// Why it stopped being measured, if it did.
    failed: Option<String>,
}

impl Target {
    fn new(name: String, program: PathBuf, args: Vec<String>) -> Target {
        Target {
            name,
            program,
            args,
            fresh_data_dir: false,
            version: None,
            phase: Phase::new("start → exit", "a process, spawned to exited"),
            failed: None,
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
        let mut command = Command::new(&self.program);
        if let Some(dir) = &data_dir {
            command.arg("--data-dir").arg(dir.path());
        }
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let out = match command.output() {
            Ok(out) => out,
            Err(e) => {
                self.failed = Some(format!("cannot run {}: {e}", self.program.display()));
                return;
            }
        };
        let took = start.elapsed().as_secs_f64() * 1e6;
        if !out.status.success() {
            self.failed = Some(format!(
                "`{} {}` failed ({}): {}",
                self.program.display(),
                self.args.join(" "),
                out.status,
                baselines::last_line(&out.stderr)
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

/// Runs every target `plan.runs` times, in turns.
pub fn run(plan: &Plan) -> anyhow::Result<Measured> {
    let file = plan.file.to_string_lossy().into_owned();
    // A data dir for the warm runs, its compile cache filled by the
    // untimed first run.
    let warm_dir = tempfile::tempdir()?;
    let mut skiff = Target::new("skiff run".into(), plan.skiff.clone(), Vec::new());
    if plan.cold {
        skiff.fresh_data_dir = true;
    } else {
        skiff.args.push("--data-dir".into());
        skiff
            .args
            .push(warm_dir.path().to_string_lossy().into_owned());
    }
    skiff.args.extend(["run".into(), file.clone()]);

    // Each baseline to measure, or why it cannot be, in the order printed.
    let mut others: Vec<Result<Target, Baseline>> = Vec::new();
    if plan.baselines {
        let name = "wasmtime CLI (`wasmtime run`, a process each)".to_string();
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
    for timed in std::iter::once(false).chain(std::iter::repeat_n(true, plan.runs)) {
        skiff.run(timed);
        for t in others.iter_mut().flatten() {
            t.run(timed);
        }
    }
    if let Some(why) = skiff.failed {
        anyhow::bail!("{why}");
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
