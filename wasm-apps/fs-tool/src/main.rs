//! `fs-tool OP ARGS...` — one filesystem operation per run, through WASI.
//!
//! Ops: `ls DIR`, `cat FILE`, `write FILE TEXT`, `append FILE TEXT`,
//! `truncate FILE LEN`, `rm FILE`, `mkdir DIR`, `rmdir DIR`,
//! `rename FROM TO`, `symlink TARGET LINK`, `readlink LINK`, `stat PATH`,
//! `preopens`.
//!
//! Prints the result on stdout and exits 0, or prints `fs-tool: OP failed:
//! ERROR` on stderr and exits 1. Tests drive it with hostile paths (`..`,
//! absolute paths, symlinks) to prove the sandbox holds.

use std::fs;
use std::io::Write;

fn run(op: &str, args: &[String]) -> std::io::Result<()> {
    let arg = |i: usize| -> std::io::Result<&str> {
        args.get(i).map(String::as_str).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "missing argument")
        })
    };
    match op {
        "ls" => {
            let mut names: Vec<String> = fs::read_dir(arg(0)?)?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<_, _>>()?;
            names.sort();
            for name in names {
                println!("{name}");
            }
        }
        "cat" => {
            let data = fs::read(arg(0)?)?;
            std::io::stdout().write_all(&data)?;
        }
        "write" => fs::write(arg(0)?, arg(1)?)?,
        "append" => {
            let mut f = fs::OpenOptions::new().append(true).open(arg(0)?)?;
            f.write_all(arg(1)?.as_bytes())?;
        }
        "truncate" => {
            let len = arg(1)?.parse().map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad length")
            })?;
            fs::OpenOptions::new().write(true).open(arg(0)?)?.set_len(len)?;
        }
        "rm" => fs::remove_file(arg(0)?)?,
        "mkdir" => fs::create_dir(arg(0)?)?,
        "rmdir" => fs::remove_dir(arg(0)?)?,
        "rename" => fs::rename(arg(0)?, arg(1)?)?,
        "symlink" => symlink(arg(0)?, arg(1)?)?,
        "readlink" => println!("{}", fs::read_link(arg(0)?)?.display()),
        "stat" => {
            let m = fs::symlink_metadata(arg(0)?)?;
            let kind = if m.is_dir() {
                "dir"
            } else if m.file_type().is_symlink() {
                "symlink"
            } else {
                "file"
            };
            println!("{kind} {}", m.len());
        }
        "preopens" => {
            // Every preopen is reachable by its guest name; list each root.
            for dir in args {
                println!("{dir}: {}", fs::read_dir(dir).map(|d| d.count()).unwrap_or(0));
            }
        }
        other => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("unknown op {other:?}"),
            ));
        }
    }
    Ok(())
}

#[cfg(target_os = "wasi")]
fn symlink(target: &str, link: &str) -> std::io::Result<()> {
    use std::ffi::{CString, c_char, c_int};
    // std has no stable symlink for WASI; wasi-libc's `symlink` resolves the
    // link path against the preopens like every other libc call.
    unsafe extern "C" {
        fn symlink(target: *const c_char, link: *const c_char) -> c_int;
    }
    let target = CString::new(target)?;
    let link = CString::new(link)?;
    // SAFETY: both pointers are valid NUL-terminated strings for the call.
    if unsafe { symlink(target.as_ptr(), link.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "wasi"))]
fn symlink(target: &str, link: &str) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((op, rest)) = args.split_first() else {
        eprintln!("usage: fs-tool OP ARGS...");
        std::process::exit(2);
    };
    match run(op, rest) {
        Ok(()) => {
            let _ = std::io::stdout().flush();
        }
        Err(e) => {
            eprintln!("fs-tool: {op} failed: {e}");
            std::process::exit(1);
        }
    }
}
