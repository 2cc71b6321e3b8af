//! The registry against clients and registries we did not write: skopeo
//! (streamed PATCH uploads, cross-repository mounts), Debian's
//! docker-registry (the reference implementation, distribution 2.8) and
//! oras-py (artifacts with custom config media types).

use crate::support::*;
use std::path::Path;
use std::time::Duration;

const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";

fn docker_ref(addr: &str, repo: &str) -> String {
    format!("docker://{addr}/{repo}")
}

fn skopeo(args: &[&str]) -> String {
    let (ok, stdout, stderr) = peer("skopeo", args);
    assert!(ok, "skopeo {args:?} failed:\n{stderr}");
    stdout
}

/// The manifest digest skopeo reads back from a registry.
fn remote_digest(reference: &str) -> String {
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", reference]);
    sha256(raw.as_bytes())
}

fn hello_layout(dir: &Path) -> String {
    let wasm = std::fs::read(app("HELLO_P1")).unwrap();
    oci_layout(
        dir,
        "v1",
        WASM_CONFIG,
        br#"{"os":"wasip1","architecture":"wasm"}"#,
        &[("application/wasm", &wasm)],
    )
}

#[test]
fn skopeo_pushes_an_oci_layout_and_reads_it_back() {
    let data = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(data.path());
    let layout = tempfile::tempdir().unwrap();
    let digest = hello_layout(layout.path());
    let src = format!("oci:{}:v1", layout.path().display());
    let dst = docker_ref(&registry.addr, "wasm/hello:v1");
    skopeo(&["copy", "--dest-tls-verify=false", &src, &dst]);
    assert_eq!(
        remote_digest(&dst),
        digest,
        "the manifest arrived byte for byte"
    );

    let tags = skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &docker_ref(&registry.addr, "wasm/hello"),
    ]);
    let tags: serde_json::Value = serde_json::from_str(&tags).unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["v1"]));

    // And back out into a fresh layout, blob for blob.
    let out = tempfile::tempdir().unwrap();
    let back = format!("oci:{}:v1", out.path().display());
    skopeo(&["copy", "--src-tls-verify=false", &dst, &back]);
    let wasm = std::fs::read(app("HELLO_P1")).unwrap();
    let layer = out
        .path()
        .join("blobs/sha256")
        .join(sha256(&wasm).trim_start_matches("sha256:"));
    assert_eq!(std::fs::read(layer).unwrap(), wasm);

    skopeo(&["delete", "--tls-verify=false", &dst]);
    let (ok, _, _) = peer("skopeo", &["inspect", "--raw", "--tls-verify=false", &dst]);
    assert!(!ok, "the manifest is gone after skopeo delete");
}

#[test]
fn skopeo_copies_between_repositories_by_mounting() {
    let data = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(data.path());
    let layout = tempfile::tempdir().unwrap();
    let digest = hello_layout(layout.path());
    let first = docker_ref(&registry.addr, "team-a/hello:v1");
    let second = docker_ref(&registry.addr, "team-b/hello:v1");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.path().display()),
        &first,
    ]);
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &first,
        &second,
    ]);
    assert_eq!(remote_digest(&second), digest);
    // The layer was mounted across, not sent again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut log = Vec::new();
    while !log.iter().any(|l: &String| l.contains("mounted a blob")) {
        assert!(
            std::time::Instant::now() < deadline,
            "no mount in the log: {log:?}"
        );
        log.extend(registry.logged());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn images_travel_to_the_reference_registry_and_back() {
    let data = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(data.path());
    let reference = DockerRegistry::start();
    let layout = tempfile::tempdir().unwrap();
    let digest = hello_layout(layout.path());
    let ours = docker_ref(&registry.addr, "roundtrip/hello:v1");
    let theirs = docker_ref(&reference.addr, "roundtrip/hello:v1");
    let home = docker_ref(&registry.addr, "returned/hello:v1");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.path().display()),
        &ours,
    ]);
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &ours,
        &theirs,
    ]);
    assert_eq!(remote_digest(&theirs), digest);
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &theirs,
        &home,
    ]);
    assert_eq!(remote_digest(&home), digest);
}

#[test]
fn oras_pushes_and_pulls_an_artifact_with_a_custom_config_type() {
    let data = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(data.path());
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("notes.txt"), "hello from oras").unwrap();
    std::fs::write(work.path().join("config.json"), r#"{"kind":"acme"}"#).unwrap();
    let script = format!(
        r#"
import os, sys, oras.client
os.chdir({work:?})
client = oras.client.OrasClient(hostname={addr:?}, insecure=True)
target = {addr:?} + "/artifacts/notes:v1"
client.push(target=target, files=["notes.txt:text/plain"],
            manifest_config="config.json:application/vnd.acme.config.v1+json")
manifest = client.get_manifest(target)
assert manifest["config"]["mediaType"] == "application/vnd.acme.config.v1+json", manifest
os.makedirs("out", exist_ok=True)
files = client.pull(target=target, outdir="out")
print(open(files[0]).read())
"#,
        work = work.path().display().to_string(),
        addr = registry.addr,
    );
    let (ok, stdout, stderr) = peer("python3", &["-c", &script]);
    assert!(ok, "oras failed:\n{stderr}");
    assert_eq!(stdout.trim(), "hello from oras");
}

#[test]
fn a_registry_killed_mid_upload_shows_nothing_partial_after_restart() {
    use std::io::Write;
    let data = tempfile::tempdir().unwrap();
    let mut registry = RegistryProcess::start(data.path());
    let payload = vec![9u8; 4 << 20];
    let digest = sha256(&payload);
    let mut conn = std::net::TcpStream::connect(&registry.addr).unwrap();
    write!(
        conn,
        "POST /v2/crash/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        payload.len()
    )
    .unwrap();
    conn.write_all(&payload[..1 << 20]).unwrap();
    conn.flush().unwrap();
    // Wait until the registry has the upload on disk, then kill it.
    let uploads = data.path().join("registry/uploads");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the upload never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(registry.child.id() as i32, libc::SIGKILL) };
    let _ = registry.child.wait();
    drop(conn);

    let registry = RegistryProcess::start(data.path());
    let (ok, _, _) = peer(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &docker_ref(&registry.addr, "crash/x:latest"),
        ],
    );
    assert!(!ok);
    let blob = data
        .path()
        .join("registry/blobs/sha256")
        .join(&digest["sha256:".len().."sha256:".len() + 2])
        .join(&digest["sha256:".len()..]);
    assert!(!blob.exists(), "no partial blob became visible");
    assert_eq!(
        std::fs::read_dir(&uploads).unwrap().count(),
        0,
        "the half upload is gone"
    );
}
