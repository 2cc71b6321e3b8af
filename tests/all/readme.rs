//! The README's examples run as written: its networking example is
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
