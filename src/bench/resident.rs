//! What `skiff bench density`'s figure is printed beside: the memory one
//! long-running guest costs as a process of its own — under the wasmtime
//! CLI, and as a native process doing the same (nothing, or serving
//! hello). Measured as proportional set size (a shared page counted once
//! across the processes that share it), so K processes' sum is what they
//! cost together, as skiff's resident growth is for its tasks.

use super::http::{Killed, free_port, wait_serving};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// One baseline: its name, and what it measured or why it was skipped.
pub struct Resident {
    pub name: String,
    pub outcome: Result<Held, String>,
}

/// What a baseline that ran measured.
pub struct Held {
    pub version: Option<String>,
    pub processes: usize,
    /// Their proportional set sizes' sum over their number.
    pub per_process: u64,
}

/// How long a baseline's process may take to say it is up.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// The baselines for `processes` long-running guests: `file` holds the
/// guest (a wasi:http component when `http`).
pub fn baselines(
    file: &Path,
    http: bool,
    wasmtime: Option<&Path>,
    processes: usize,
) -> Vec<Resident> {
    let cli = match super::baselines::find_wasmtime(wasmtime) {
        Err(why) => Err(why),
        Ok(wasmtime) => {
            let version = super::baselines::version_of(&wasmtime, "--version");
            hold(processes, || {
                let mut c = Command::new(&wasmtime);
                if http {
                    let port = free_port().map_err(|e| format!("no free port: {e}"))?;
                    let addr = SocketAddr::from(([127, 0, 0, 1], port));
                    c.args(["serve", "-Scli", "--addr", &addr.to_string()])
                        .arg(file);
                    Ok((c, Ready::Listening(addr)))
                } else {
                    c.arg("run").arg(file);
                    Ok((c, Ready::FirstLine))
                }
            })
            .map(|held| Held { version, ..held })
        }
    };
    let native = hold(processes, || {
        if http {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let mut c = Command::new(exe);
            c.args(["bench", "native-hello", "--addr", "127.0.0.1:0"]);
            Ok((c, Ready::FirstLine))
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", "echo sleeping; exec sleep 3600"]);
            Ok((c, Ready::FirstLine))
        }
    });
    vec![
        Resident {
            name: if http {
                "wasmtime CLI (`wasmtime serve`, a process each)".into()
            } else {
                "wasmtime CLI (`wasmtime run`, a process each)".into()
            },
            outcome: cli,
        },
        Resident {
            name: if http {
                "native hyper server (a process each)".into()
            } else {
                "native process (`sleep`, a process each)".into()
            },
            outcome: native,
        },
    ]
}

/// When a baseline's process is up.
enum Ready {
    /// It printed its first line on stdout.
    FirstLine,
    /// It accepts connections there.
    Listening(SocketAddr),
}

/// Starts `n` processes, waits until each is up, and reads their
/// proportional set sizes (the version is the caller's to say).
fn hold(n: usize, command: impl Fn() -> Result<(Command, Ready), String>) -> Result<Held, String> {
    let mut held: Vec<Killed> = Vec::with_capacity(n);
    for _ in 0..n {
        let (mut c, ready) = command()?;
        let mut child = c
            // Held open: the sleeper waits for its stdin to close.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {:?}: {e}", c.get_program()))?;
        let stdout = child.stdout.take();
        held.push(Killed(child));
        match ready {
            Ready::FirstLine => first_line(stdout)?,
            Ready::Listening(addr) => wait_serving(addr, READY_WITHIN)?,
        }
    }
    let mut total = 0;
    for child in &held {
        total += pss(child.0.id()).ok_or("cannot read a process's memory (smaps_rollup)")?;
    }
    Ok(Held {
        version: None,
        processes: n,
        per_process: total / n.max(1) as u64,
    })
}

/// Waits for a first line on `stdout`; the rest is drained.
fn first_line(stdout: Option<std::process::ChildStdout>) -> Result<(), String> {
    let stdout = stdout.ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let read = reader.read_line(&mut line);
        let _ = tx.send(read.map(|n| n > 0));
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    match rx.recv_timeout(READY_WITHIN) {
        Ok(Ok(true)) => Ok(()),
        Ok(_) => Err("the process ended before it printed a line".into()),
        Err(_) => Err(format!(
            "the guest printed no line within {} s (the baseline waits for a long-running guest's first line to know it is up)",
            READY_WITHIN.as_secs()
        )),
    }
}

/// A process's proportional set size (bytes).
pub fn pss(pid: u32) -> Option<u64> {
    super::report::proc_kb(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

/// A process's resident set size now (bytes).
pub fn rss(pid: u32) -> Option<u64> {
    super::report::proc_kb(&format!("/proc/{pid}/status"), "VmRSS:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_memory_is_read() {
        let me = std::process::id();
        let (rss, pss) = (rss(me).unwrap(), pss(me).unwrap());
        assert!(rss > 0 && pss > 0 && pss <= rss, "rss {rss}, pss {pss}");
        assert_eq!(super::rss(u32::MAX), None);
    }

    #[test]
    fn processes_are_held_until_up_and_then_ended() {
        let held = hold(3, || {
            let mut c = Command::new("sh");
            c.args(["-c", "echo up; exec sleep 60"]);
            Ok((c, Ready::FirstLine))
        })
        .unwrap();
        assert_eq!(held.processes, 3);
        assert!(held.per_process > 0);
        let silent = hold(1, || {
            let mut c = Command::new("true");
            c.arg("quiet");
            Ok((c, Ready::FirstLine))
        });
        assert_eq!(
            silent.err().as_deref(),
            Some("the process ended before it printed a line")
        );
    }
}
