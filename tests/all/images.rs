//! `skiff push`, `pull`, `images`, `rmi`, `login` and `run REF` against a
//! real registry process: ours, Debian's docker-registry, and images built
//! by buildah.

use crate::support::*;

fn registry_ref(registry: &RegistryProcess, repo: &str) -> String {
    format!("{}/{repo}", registry.addr)
}

#[test]
fn push_then_run_by_reference_then_forget() {
    let registry_data = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(registry_data.path());
    let local = tempfile::tempdir().unwrap();
    let reference = registry_ref(&registry, "demo/hello:v1");

    let out = skiff(["push", app("HELLO_P2"), &reference])
        .data_dir(local.path())
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .trim()
            .starts_with(&format!("{reference}@sha256:")),
        "{}",
        out.stdout
    );
    assert_eq!(
        out.stderr, "",
        "no progress bar when stderr is not a terminal"
    );

    // run pulls on demand, compiles, runs with the guest's arguments.
    let out = skiff(["run", &reference, "one", "--exit", "3"])
        .data_dir(local.path())
        .run();
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(
        out.stdout_lines(),
        [
            "Hello, world!",
            "arg[0]=hello",
            "arg[1]=one",
            "arg[2]=--exit",
            "arg[3]=3"
        ]
    );

    let out = skiff(["images"]).data_dir(local.path()).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&reference))
        .expect("listed");
    assert!(
        row.trim_end().ends_with("yes"),
        "compiled when pulled: {row}"
    );

    // The second run needs neither the registry nor a compile.
    drop(registry);
    let out = skiff(["run", &reference]).data_dir(local.path()).run();
    assert_eq!(out.code, 0, "{}", out.stderr);

    let out = skiff(["rmi", &reference]).data_dir(local.path()).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = skiff(["images"]).data_dir(local.path()).run();
    assert_eq!(
        out.stdout.lines().count(),
        1,
        "only the header is left: {}",
        out.stdout
    );
    skiff(["rmi", &reference])
        .data_dir(local.path())
        .run()
        .assert_one_line_error(125, "no such image");
}

#[test]
fn pull_compiles_so_the_first_run_only_instantiates() {
    let registry_data = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(registry_data.path());
    let local = tempfile::tempdir().unwrap();
    let reference = registry_ref(&registry, "warm/hello:v1");
    assert_eq!(
        skiff(["push", app("HELLO_P1"), &reference])
            .data_dir(local.path())
            .run()
            .code,
        0
    );
    let out = skiff(["pull", &reference]).data_dir(local.path()).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("(compiled)"), "{}", out.stdout);
    let compiled = std::fs::read_dir(local.path().join("cache/compiled"))
        .unwrap()
        .count();
    assert_eq!(compiled, 1, "the pull left compiled code in the cache");
}

#[test]
fn run_takes_arguments_and_environment_from_a_buildah_image() {
    let registry_data = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(registry_data.path());
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let runroot = work.path().join("run");
    let storage = [
        "--storage-driver",
        "vfs",
        "--root",
        root.to_str().unwrap(),
        "--runroot",
        runroot.to_str().unwrap(),
    ];
    let buildah = |args: &[&str]| -> String {
        let mut all: Vec<&str> = storage.to_vec();
        all.extend(args);
        let (ok, stdout, stderr) = peer("buildah", &all);
        assert!(ok, "buildah {args:?} failed:\n{stderr}");
        stdout.trim().lines().last().unwrap_or_default().to_string()
    };
    let container = buildah(&["from", "scratch"]);
    buildah(&["copy", &container, app("HELLO_P1"), "/hello.wasm"]);
    buildah(&[
        "config",
        "--os",
        "wasip1",
        "--arch",
        "wasm",
        "--entrypoint",
        r#"["/hello.wasm"]"#,
        "--cmd",
        r#"["from-buildah"]"#,
        "--env",
        "NAME=buildah",
        &container,
    ]);
    buildah(&["commit", &container, "wasm-hello"]);
    let reference = registry_ref(&registry, "buildah/hello:v1");
    buildah(&[
        "push",
        "--tls-verify=false",
        "wasm-hello",
        &format!("docker://{reference}"),
    ]);

    let local = tempfile::tempdir().unwrap();
    let out = skiff(["run", &reference]).data_dir(local.path()).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout_lines(),
        ["Hello, buildah!", "arg[0]=hello", "arg[1]=from-buildah"]
    );
    // The user's arguments and environment win over the image's.
    let out = skiff(["run", "-e", "NAME=user", &reference, "mine"])
        .data_dir(local.path())
        .run();
    assert_eq!(
        out.stdout_lines(),
        ["Hello, user!", "arg[0]=hello", "arg[1]=mine"]
    );
}

#[test]
fn run_pulls_from_the_reference_registry() {
    let reference_registry = DockerRegistry::start();
    let local = tempfile::tempdir().unwrap();
    let reference = format!("{}/theirs/hello:v1", reference_registry.addr);
    let out = skiff(["push", app("HELLO_P1"), &reference])
        .data_dir(local.path())
        .run();
    assert_eq!(out.code, 0, "pushing to docker-registry: {}", out.stderr);
    let fresh = tempfile::tempdir().unwrap();
    let out = skiff(["run", &reference, "x"]).data_dir(fresh.path()).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout_lines(),
        ["Hello, world!", "arg[0]=hello", "arg[1]=x"]
    );
}

#[test]
fn login_checks_and_keeps_credentials_private() {
    use std::os::unix::fs::PermissionsExt;
    let registry_data = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(registry_data.path());
    let local = tempfile::tempdir().unwrap();
    let out = skiff(["login", &registry.addr, "-u", "AWS", "--password-stdin"])
        .data_dir(local.path())
        .stdin(b"s3cret\n")
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "Login Succeeded");
    let file = local.path().join("auth.json");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved[&registry.addr]["username"], "AWS");
    assert_eq!(saved[&registry.addr]["password"], "s3cret");

    // Nothing listens here: refused, nothing saved.
    let out = skiff(["login", "127.0.0.1:1", "-u", "x", "--password-stdin"])
        .data_dir(local.path())
        .stdin(b"y\n")
        .run();
    assert_eq!(out.code, 125);
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(saved.get("127.0.0.1:1").is_none());
}

#[test]
fn source_date_epoch_makes_pushes_reproducible() {
    let registry_data = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(registry_data.path());
    let local = tempfile::tempdir().unwrap();
    let push = |tag: &str, epoch: &str| {
        let out = skiff([
            "push",
            app("HELLO_P1"),
            &registry_ref(&registry, &format!("r/app:{tag}")),
        ])
        .data_dir(local.path())
        .env("SOURCE_DATE_EPOCH", epoch)
        .run();
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout.trim().rsplit('@').next().unwrap().to_string()
    };
    let a = push("a", "1700000000");
    let b = push("b", "1700000000");
    assert_eq!(
        a, b,
        "the same file as of the same time is the same manifest"
    );
    assert_ne!(push("c", "1700000001"), a);
    let out = skiff(["push", app("HELLO_P1"), &registry_ref(&registry, "r/app:d")])
        .data_dir(local.path())
        .env("SOURCE_DATE_EPOCH", "yesterday")
        .run();
    out.assert_one_line_error(125, "SOURCE_DATE_EPOCH");
}

/// A bare `name:tag` means skiff's registry for push, pull, run and rmi,
/// as it does in task definitions; when nothing answers there, the error
/// says where it looked and why.
#[test]
fn a_bare_name_means_skiffs_registry_everywhere() {
    let registry_data = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(registry_data.path());
    let local = tempfile::tempdir().unwrap();
    let addr = registry.addr.clone();
    let bare = |args: &[&str]| {
        skiff(args)
            .data_dir(local.path())
            .env("SKIFF_REGISTRY", &addr)
    };
    let out = bare(&["push", app("HELLO_P1"), "greet:v1"]).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with(&format!("{}/greet:v1@sha256:", registry.addr)),
        "{}",
        out.stdout
    );
    let out = bare(&["run", "greet:v1"]).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = bare(&["images"]).run();
    assert!(
        out.stdout.contains(&format!("{}/greet:v1", registry.addr)),
        "{}",
        out.stdout
    );
    let out = bare(&["rmi", "greet:v1"]).run();
    assert_eq!(out.code, 0, "{}", out.stderr);

    // Nothing listening where a bare name points: the error says so.
    drop(registry);
    let out = bare(&["pull", "greet:v1"]).run();
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("greet:v1 has no registry host, so it names skiff's registry"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("docker.io/library/greet:v1"),
        "{}",
        out.stderr
    );
}

/// A listing whose reader has left (`skiff images | head -0`) ends the way
/// Unix tools do, by SIGPIPE, not with a panic's backtrace and status 101.
#[test]
fn a_listing_whose_reader_left_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let data = tempfile::tempdir().unwrap();
    // A pipe whose only reader is gone: every write to it fails.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(skiff_bin())
        .arg("images")
        .env("SKIFF_DATA_DIR", data.path())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
