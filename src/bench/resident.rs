//! What `skiff bench density`'s figure is printed beside: the memory one
//! long-running guest costs as a process of its own — under the wasmtime
//! CLI, and as a native process doing the same (nothing, or serving
//! hello). Measured as proportional set size (a shared page counted once
//! across the processes that share it), so K processes' sum is what they
//! cost together, as skiff's resident growth is for its tasks.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
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

/// Processes killed (and reaped) when dropped.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

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
            hold(processes, |_| {
                let mut c = Command::new(&wasmtime);
                if http {
                    let addr = free_addr()?;
                    c.args(["serve", "-Scli", "--addr", &addr.to_string()])
                        .arg(file);
                    Ok((c, Ready::Listening(addr)))
                } else {
                    c.arg("run").arg(file);
                    Ok((c, Ready::FirstLine))
                }
            })
            .map(|(n, per)| Held {
                version,
                processes: n,
                per_process: per,
            })
        }
    };
    let native = hold(processes, |_| {
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
    })
    .map(|(n, per)| Held {
        version: None,
        processes: n,
        per_process: per,
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
/// proportional set sizes: how many, and their sum over their number.
fn hold(
    n: usize,
    command: impl Fn(usize) -> Result<(Command, Ready), String>,
) -> Result<(usize, u64), String> {
    let mut held = Children(Vec::with_capacity(n));
    for i in 0..n {
        let (mut c, ready) = command(i)?;
        let mut child = c
            // Held open: the sleeper waits for its stdin to close.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {:?}: {e}", c.get_program()))?;
        let stdout = child.stdout.take();
        held.0.push(child);
        match ready {
            Ready::FirstLine => first_line(stdout)?,
            Ready::Listening(addr) => listening(addr)?,
        }
    }
    let mut total = 0;
    for child in &held.0 {
        total += pss(child.id()).ok_or("cannot read a process's memory (smaps_rollup)")?;
    }
    Ok((n, total / n.max(1) as u64))
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

/// Waits until `addr` accepts a connection.
fn listening(addr: SocketAddr) -> Result<(), String> {
    let deadline = std::time::Instant::now() + READY_WITHIN;
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!(
        "nothing listened on {addr} within {} s",
        READY_WITHIN.as_secs()
    ))
}

fn free_addr() -> Result<SocketAddr, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))
}

/// A process's proportional set size (bytes).
pub fn pss(pid: u32) -> Option<u64> {
    kb_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

/// A process's resident set size now (bytes).
pub fn rss(pid: u32) -> Option<u64> {
    kb_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

fn kb_field(path: &str, field: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
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
        let (n, per) = hold(3, |_| {
            let mut c = Command::new("sh");
            c.args(["-c", "echo up; exec sleep 60"]);
            Ok((c, Ready::FirstLine))
        })
        .unwrap();
        assert_eq!(n, 3);
        assert!(per > 0);
        let silent = hold(1, |_| {
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
