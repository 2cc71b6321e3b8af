//! WASI as the guest sees it, for core modules and components alike:
//! arguments, environment, preopens, stdin, exit codes.

use crate::*;
use skiff_runtime::{Mount, Outcome, Stdin};

async fn run(program: &str, spec: InstanceSpec) -> Outcome {
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(data.path());
    let art = rt.load_file(program.as_ref()).unwrap();
    rt.spawn(&art, spec).unwrap().wait().await
}

#[tokio::test]
async fn args_are_exactly_the_specs() {
    for (kind, probe) in both("wasi-probe") {
        let (spec, out, _) = captured(&["probe", "args", "with space", "", "ünïcode"]);
        assert_eq!(run(probe, spec).await, Outcome::Exited(0), "{kind}");
        assert_eq!(out.text(), "probe\nargs\nwith space\n\nünïcode\n", "{kind}");
    }
}

#[tokio::test]
async fn env_is_exactly_the_specs() {
    for (kind, probe) in both("wasi-probe") {
        let (mut spec, out, _) = captured(&["probe", "env"]);
        spec.env = vec![("Z".into(), "last".into()), ("A".into(), "a=b".into())];
        assert_eq!(run(probe, spec).await, Outcome::Exited(0), "{kind}");
        assert_eq!(out.text(), "A=a=b\nZ=last\n", "{kind}");
    }
}

#[tokio::test]
async fn stdin_bytes_then_eof() {
    for (kind, probe) in both("wasi-probe") {
        let (mut spec, out, err) = captured(&["probe", "stdin"]);
        spec.stdin = Stdin::Bytes(b"abc\x00\xffdef".to_vec());
        assert_eq!(run(probe, spec).await, Outcome::Exited(0), "{kind}");
        assert_eq!(out.contents(), b"abc\x00\xffdef", "{kind}");
        assert!(err.text().contains("read 8 bytes"), "{kind}");
        // Closed stdin reads as empty.
        let (spec, out, _) = captured(&["probe", "stdin"]);
        assert_eq!(run(probe, spec).await, Outcome::Exited(0), "{kind}");
        assert_eq!(out.contents(), b"", "{kind}");
    }
}

#[tokio::test]
async fn preopens_are_the_only_filesystem() {
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("x"), "1").unwrap();
    std::fs::write(host.path().join("y"), "2").unwrap();
    for (kind, fs) in both("fs-tool") {
        let (mut spec, out, _) = captured(&["fs-tool", "ls", "mnt"]);
        spec.mounts = vec![Mount {
            host: host.path().to_path_buf(),
            guest: "mnt".into(),
            read_only: true,
        }];
        assert_eq!(run(fs, spec).await, Outcome::Exited(0), "{kind}");
        assert_eq!(out.text(), "x\ny\n", "{kind}");
    }
}

#[tokio::test]
async fn exit_codes_pass_through() {
    for (kind, hello) in both("hello") {
        for code in [0, 3, 125] {
            let (spec, _, _) = captured(&["hello", "--exit", &code.to_string()]);
            assert_eq!(run(hello, spec).await, Outcome::Exited(code), "{kind}");
        }
    }
    // WASI 0.2's exit-with-code takes any u8...
    let (spec, _, _) = captured(&["hello", "--exit", "255"]);
    assert_eq!(run(app("HELLO_P2"), spec).await, Outcome::Exited(255));
    // ...while preview 1 reserves 126 and up: a guest that asks for one
    // is stopped like a trap, with the reason.
    let (spec, _, _) = captured(&["hello", "--exit", "255"]);
    match run(app("HELLO_P1"), spec).await {
        Outcome::Trapped(why) => assert!(why.contains("invalid exit status"), "{why}"),
        other => panic!("expected a trap, got {other:?}"),
    }
}

/// A module writing `text` with `fd_write` and exiting 3 with `proc_exit`,
/// both imported from `abi` (memory at 16 holds the text, at 0 its iovec).
fn writer(abi: &str, text: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
            (import "{abi}" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
            (import "{abi}" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (data (i32.const 16) "{text}")
            (func (export "_start")
                (i32.store (i32.const 0) (i32.const 16))
                (i32.store (i32.const 4) (i32.const {len}))
                (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
                (call $exit (i32.const 3))))"#,
        len = text.len(),
        text = text.replace('\n', "\\n"),
    ))
    .unwrap()
}

#[tokio::test]
async fn modules_of_the_old_wasi_unstable_abi_run_beside_preview1_ones() {
    // Each ABI's linker is built when a module first needs it; one
    // runtime serves both, in either order.
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(data.path());
    for (abi, text) in [
        ("wasi_snapshot_preview1", "preview 1\n"),
        ("wasi_unstable", "unstable\n"),
        ("wasi_snapshot_preview1", "preview 1 again\n"),
    ] {
        let art = rt.load_bytes(abi, &writer(abi, text)).unwrap();
        let (spec, out, _) = captured(&[abi]);
        assert_eq!(
            rt.spawn(&art, spec).unwrap().wait().await,
            Outcome::Exited(3)
        );
        assert_eq!(out.text(), text, "{abi}");
    }
}
