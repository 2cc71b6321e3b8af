//! `wasi-probe OP` — reports what the WASI host gives a guest.
//!
//! Ops:
//! - `env`: every environment variable, sorted, as `KEY=VALUE` lines.
//! - `args`: every argument, one per line.
//! - `clocks`: `wall SECONDS` (since the epoch), then sleeps 50 ms and prints
//!   `slept MILLIS` as measured by the monotonic clock.
//! - `random`: `random HEX` with 32 bytes from the secure random source.
//! - `stdin`: copies stdin to stdout, then prints `read N bytes` on stderr.
//! - `cwd`: the current directory the guest believes it is in.

use std::io::{Read, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};


fn random_bytes() -> std::io::Result<[u8; 32]> {
    // wasi-libc's `getentropy` is a direct call to the host's secure random
    // source (`random_get` on wasip1, `wasi:random/random` on wasip2).
    unsafe extern "C" {
        fn getentropy(buf: *mut u8, len: usize) -> i32;
    }
    let mut out = [0u8; 32];
    // SAFETY: `out` is a valid, writable 32-byte buffer.
    if unsafe { getentropy(out.as_mut_ptr(), out.len()) } == 0 {
        Ok(out)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn main() {
    let op = std::env::args().nth(1).unwrap_or_default();
    match op.as_str() {
        "env" => {
            let mut vars: Vec<(String, String)> = std::env::vars().collect();
            vars.sort();
            for (k, v) in vars {
                println!("{k}={v}");
            }
        }
        "args" => {
            for a in std::env::args() {
                println!("{a}");
            }
        }
        "clocks" => {
            let wall = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            println!("wall {wall}");
            let start = Instant::now();
            std::thread::sleep(Duration::from_millis(50));
            println!("slept {}", start.elapsed().as_millis());
        }
        "random" => match random_bytes() {
            Ok(bytes) => {
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                println!("random {hex}");
            }
            Err(e) => {
                eprintln!("wasi-probe: random failed: {e}");
                std::process::exit(1);
            }
        },
        "stdin" => {
            let mut data = Vec::new();
            if let Err(e) = std::io::stdin().read_to_end(&mut data) {
                eprintln!("wasi-probe: stdin failed: {e}");
                std::process::exit(1);
            }
            let _ = std::io::stdout().write_all(&data);
            eprintln!("read {} bytes", data.len());
        }
        "cwd" => match std::env::current_dir() {
            Ok(d) => println!("{}", d.display()),
            Err(e) => println!("no cwd: {e}"),
        },
        other => {
            eprintln!("wasi-probe: unknown op {other:?}");
            std::process::exit(2);
        }
    }
}
