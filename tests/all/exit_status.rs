//! Exit statuses: the guest's own code, 134 for traps.

use crate::support::*;

#[test]
fn the_guests_exit_code_is_skiffs() {
    for (kind, hello) in both("hello") {
        for code in ["0", "1", "7", "42"] {
            let out = skiff(["run", hello, "--exit", code]).run();
            assert_eq!(out.code.to_string(), code, "{kind}: {}", out.stderr);
            assert_eq!(out.stderr, "", "{kind}: a normal exit prints nothing");
        }
    }
}

#[test]
fn webassembly_text_runs_as_wasmtime_run_takes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let text = r#"(module
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (func (export "_start") (call $exit (i32.const 42))))"#;
    for name in ["exit.wat", "exit-text.wasm"] {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = skiff(["run", path.to_str().unwrap()]).run();
        assert_eq!(out.code, 42, "{name}: {}", out.stderr);
    }
    let bad = tmp.path().join("bad.wat");
    std::fs::write(&bad, "(module\n  (func (export \"_start\") (i32.bogus)))").unwrap();
    let out = skiff(["run", bad.to_str().unwrap()]).run();
    out.assert_one_line_error(125, "as WebAssembly text");
    assert!(out.stderr.contains("bad.wat:2:"), "{}", out.stderr);
    // Not text, not Wasm: the binary's own complaint, as before.
    let junk = tmp.path().join("junk.wasm");
    std::fs::write(&junk, "hello").unwrap();
    skiff(["run", junk.to_str().unwrap()])
        .run()
        .assert_one_line_error(125, "magic number");
}

#[test]
fn the_exit_status_holds_when_stderr_cannot_be_written() {
    // A reader that went away, or a full disk: what skiff says is lost,
    // not the status (a panic writing it would make every one 101).
    let tmp = tempfile::tempdir().unwrap();
    let trap = wat_file(
        tmp.path(),
        "trap.wasm",
        r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#,
    );
    for (args, expected) in [
        (vec!["run", trap.to_str().unwrap()], 134),
        (vec!["run", "/nonexistent/x.wasm"], 125),
        (vec!["run", "--bogus", "x.wasm"], 2),
    ] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let status = std::process::Command::new(skiff_bin())
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(full)
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(expected), "skiff {args:?}");
    }
}

#[test]
fn infinite_recursion_traps_with_134_and_a_wasm_backtrace() {
    for (kind, recurse) in both("recurse") {
        let out = skiff(["run", recurse]).run();
        assert_eq!(out.code, 134, "{kind}: {}", out.stderr);
        assert!(out.stdout.starts_with("recursing"), "{kind}");
        assert!(
            out.stderr
                .contains("trapped: wasm trap: call stack exhausted"),
            "{kind}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("wasm backtrace"),
            "{kind}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("recurse::depth"),
            "{kind}: frames are named: {}",
            out.stderr
        );
        assert!(
            !out.stderr.contains("panicked"),
            "{kind}: the host did not crash"
        );
    }
}

#[test]
fn unreachable_traps_with_134_naming_the_function() {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = wat_file(
        tmp.path(),
        "boom.wasm",
        r#"(module
             (func $explode unreachable)
             (func (export "_start") call $explode))"#,
    );
    let out = skiff(["run", wasm.to_str().unwrap()]).run();
    assert_eq!(out.code, 134, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("wasm `unreachable` instruction executed"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("explode"), "{}", out.stderr);
}

#[test]
fn proc_exit_from_a_bare_module() {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = wat_file(
        tmp.path(),
        "exit.wasm",
        r#"(module
             (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
             (memory (export "memory") 1)
             (func (export "_start") (call $exit (i32.const 99))))"#,
    );
    let out = skiff(["run", wasm.to_str().unwrap()]).run();
    assert_eq!(out.code, 99, "{}", out.stderr);
}

#[test]
fn sigint_and_sigterm_stop_a_command_with_130_and_143() {
    use std::io::{BufRead, BufReader};
    for (signal, expected) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let mut child = skiff(["run", app("SLEEPER_P1")]).spawn();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "sleeper: started\n");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "skiff ignored signal {signal}"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        // An exit status, not death by the signal: skiff handled it.
        assert_eq!(status.code(), Some(expected), "signal {signal}");
    }
}
