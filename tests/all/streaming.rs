//! Guest output is streamed, not collected: 256 MiB through stdout leaves
//! the host's peak memory far below 256 MiB.

use crate::support::*;
use std::io::Read;
use std::process::{Command, Stdio};

/// Waits for `pid` and returns (exit status, peak RSS in bytes).
fn wait4(pid: u32) -> (i32, u64) {
    let mut status = 0;
    // SAFETY: plain syscall with valid out-pointers; `rusage` is POD.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid as i32, "wait4 failed");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    // ru_maxrss is in KiB on Linux.
    (code, usage.ru_maxrss as u64 * 1024)
}

#[test]
// The child is reaped by `wait4`, which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn writing_256_mib_to_stdout_keeps_host_memory_bounded() {
    for (kind, flood) in both("flood") {
        let mut child = Command::new(skiff_bin())
            .args(["run", flood, "256"])
            .env("SKIFF_DATA_DIR", shared_data_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut total = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = stdout.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            assert!(buf[..n].iter().all(|b| *b == b'x' || *b == b'\n'));
            total += n as u64;
        }
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let (code, peak) = wait4(child.id());
        assert_eq!(code, 0, "{kind}: {stderr}");
        assert_eq!(total, 256 << 20, "{kind}: every byte arrived");
        assert!(stderr.contains("wrote 256 MiB"), "{kind}: {stderr}");
        assert!(
            peak < 96 << 20,
            "{kind}: host peak RSS {} MiB while streaming 256 MiB",
            peak >> 20
        );
    }
}
