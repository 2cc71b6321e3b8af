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
