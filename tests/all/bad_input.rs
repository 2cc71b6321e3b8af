//! Bad input: one clear line on stderr, a non-zero exit, no panic.

use crate::support::*;

#[test]
fn a_file_that_is_not_wasm() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("notes.wasm");
    std::fs::write(&path, "just some text\n").unwrap();
    skiff(["run", path.to_str().unwrap()])
        .run()
        .assert_one_line_error(125, "is not a WebAssembly binary");
}

#[test]
fn a_truncated_wasm_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(app("HELLO_P1")).unwrap();
    let path = tmp.path().join("cut.wasm");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    skiff(["run", path.to_str().unwrap()])
        .run()
        .assert_one_line_error(125, "is not valid WebAssembly");
}

#[test]
fn a_module_importing_what_no_world_provides_names_the_import() {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = wat_file(
        tmp.path(),
        "needs-env.wasm",
        r#"(module
             (import "env" "launch_missiles" (func))
             (func (export "_start")))"#,
    );
    skiff(["run", wasm.to_str().unwrap()])
        .run()
        .assert_one_line_error(125, "env::launch_missiles");
}

#[test]
fn a_component_importing_what_no_world_provides_names_the_import() {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = wat_file(
        tmp.path(),
        "needs-iface.wasm",
        r#"(component
             (import "acme:rockets/launch@1.0.0" (instance
               (export "fire" (func))))
             (core module $m (func (export "run") (result i32) i32.const 0))
             (core instance $i (instantiate $m))
             (func $run (result (result)) (canon lift (core func $i "run")))
             (instance $cli (export "run" (func $run)))
             (export "wasi:cli/run@0.2.0" (instance $cli)))"#,
    );
    skiff(["run", wasm.to_str().unwrap()])
        .run()
        .assert_one_line_error(125, "acme:rockets/launch@1.0.0");
}

#[test]
fn a_module_without_an_entry_point() {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = wat_file(tmp.path(), "lib.wasm", r#"(module (func (export "add")))"#);
    skiff(["run", wasm.to_str().unwrap()])
        .run()
        .assert_one_line_error(125, "no `_start`");
}

#[test]
fn a_missing_file() {
    skiff(["run", "/definitely/not/here.wasm"])
        .run()
        .assert_one_line_error(125, "cannot read /definitely/not/here.wasm");
}

#[test]
fn an_image_from_an_unreachable_registry() {
    // Nothing listens on port 1 of loopback.
    skiff(["run", "127.0.0.1:1/hello:latest"])
        .run()
        .assert_one_line_error(125, "127.0.0.1:1/hello:latest");
}

#[test]
fn malformed_flags_are_one_line_usage_errors() {
    let hello = app("HELLO_P1");
    for (args, needle) in [
        (vec!["--volume", "/tmp"], "--volume"),
        (vec!["-v", "/tmp:relative"], "must be absolute"),
        (vec!["-v", "/tmp:/data:rx"], "unknown mode"),
        (vec!["--memory", "lots"], "--memory"),
        (vec!["-m", "12q"], "unknown unit"),
        (vec!["-m", "0"], "greater than zero"),
        (vec!["--memory", "64"], "did you mean 64m?"),
        (vec!["--timeout", "soon"], "--timeout"),
        (vec!["--timeout", "0s"], "greater than zero"),
        (vec!["--fuel", "lots"], "--fuel"),
        (
            vec!["--task-addresses", "10.0.0.0/16"],
            "not inside 127.0.0.0/8",
        ),
        (vec!["--network", "wifi"], "unknown network mode"),
        (vec!["-p", "80"], "--publish"),
        (vec!["--dir", "::x"], "HOST[::GUEST]"),
        (vec!["--no-such-flag"], "--no-such-flag"),
    ] {
        let mut cmd = vec!["run"];
        cmd.extend(&args);
        cmd.push(hello);
        skiff(cmd).run().assert_one_line_error(2, needle);
    }
}

#[test]
fn a_mount_whose_host_side_is_missing_or_a_file() {
    skiff(["run", "-v", "/no/such/dir:/data", app("HELLO_P1")])
        .run()
        .assert_one_line_error(125, "/no/such/dir is not a directory");
    skiff(["run", "--dir", "/no/such/dir", app("HELLO_P1")])
        .run()
        .assert_one_line_error(125, "--dir /no/such/dir is not a directory");
    let file = app("HELLO_P1");
    skiff(["run", "--dir", &format!("{file}::/x"), file])
        .run()
        .assert_one_line_error(125, "is not a directory");
}

#[test]
fn publishing_without_a_network_of_its_own_is_refused() {
    skiff(["run", "-p", "127.0.0.1:0:80", app("HELLO_P2")])
        .run()
        .assert_one_line_error(125, "--network none gives the task no network");
    skiff(["run", "--network", "host", "-p", "0:80", app("HELLO_P2")])
        .run()
        .assert_one_line_error(125, "listens on the host's ports itself");
    // A wasip1 module cannot listen at all.
    skiff(["run", "--network", "bridge", "-p", "0:80", app("HELLO_P1")])
        .run()
        .assert_one_line_error(125, "wasip1 module, which has no sockets");
}

#[test]
fn no_file_at_all_is_a_usage_error() {
    let out = skiff(["run"]).run();
    assert_eq!(out.code, 2);
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
}

#[test]
fn a_component_with_nothing_to_run() {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = wat_file(tmp.path(), "empty.wasm", "(component)");
    skiff(["run", wasm.to_str().unwrap()])
        .run()
        .assert_one_line_error(
            125,
            "exports neither `wasi:cli/run` nor `wasi:http/incoming-handler`",
        );
}

#[test]
fn two_mounts_at_one_guest_path() {
    let tmp = tempfile::tempdir().unwrap();
    let ro = format!("{}:/data:ro", tmp.path().display());
    let rw = format!("{}::/data", tmp.path().display());
    skiff(["run", "-v", &ro, "--dir", &rw, app("HELLO_P1")])
        .run()
        .assert_one_line_error(125, "two mounts use the guest path /data");
}

/// The registry's scan and the engine agree on which WebAssembly features
/// skiff compiles: what the scan flags as unsupported, `skiff run`
/// refuses; what it lets through, runs.
#[test]
fn the_scan_flags_exactly_the_features_the_engine_refuses() {
    use skiff_registry::scan::scan_wasm;
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "shared-memory",
            r#"(module (memory 1 1 shared) (func (export "_start")))"#,
            false,
        ),
        (
            "gc",
            r#"(module (type (struct (field i32))) (func (export "_start")))"#,
            false,
        ),
        (
            "exceptions",
            r#"(module (tag) (func (export "_start")))"#,
            false,
        ),
        (
            "tail-call",
            r#"(module (func $f) (func (export "_start") (return_call $f)))"#,
            true,
        ),
        (
            "multi-memory",
            r#"(module (memory 1) (memory 1) (func (export "_start")))"#,
            true,
        ),
        (
            "memory64",
            r#"(module (memory i64 1) (func (export "_start")))"#,
            true,
        ),
    ];
    for (name, wat, supported) in cases {
        let wasm = wat_file(tmp.path(), &format!("{name}.wasm"), wat);
        let (findings, _) = scan_wasm(&std::fs::read(&wasm).unwrap());
        let flagged = findings
            .iter()
            .any(|f| f.name == "WASM-UNSUPPORTED-FEATURE");
        assert_eq!(flagged, !supported, "{name}: {findings:?}");
        assert!(
            !findings.iter().any(|f| f.name == "WASM-INVALID"),
            "{name}: {findings:?}"
        );
        let out = skiff(["run", wasm.to_str().unwrap()]).run();
        if supported {
            assert_eq!(out.code, 0, "{name}: {}", out.stderr);
        } else {
            assert_eq!(out.code, 125, "{name}: {}", out.stderr);
        }
    }
}

#[test]
fn serve_refuses_addresses_off_loopback() {
    skiff(["serve", "--lb-address", "10.0.0.1"])
        .run()
        .assert_one_line_error(2, "not a loopback address");
    skiff(["serve", "--task-addresses", "192.168.0.0/16"])
        .run()
        .assert_one_line_error(2, "not inside 127.0.0.0/8");
}

#[test]
fn serve_refuses_a_container_memory_cap_it_cannot_keep() {
    for bad in ["5g", "1500k", "0", "lots"] {
        skiff(["serve", "--max-container-memory", bad])
            .run()
            .assert_one_line_error(2, "--max-container-memory");
    }
}
