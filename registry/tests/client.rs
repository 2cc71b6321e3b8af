//! The pull and push path (oci-client) against the registry: the CNCF
//! artifact skiff pushes, every image shape it accepts, the ones it
//! refuses, and one download for overlapping pulls.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;
use skiff_registry::Digest;
use skiff_registry::images::{ImageStore, Puller};
use skiff_registry::remote::{self, RemoteError, RemoteOptions};

fn no_progress(_: u64, _: u64) {}

fn reference(s: &Server, repo: &str) -> String {
    format!("{}/{repo}", s.base.trim_start_matches("http://"))
}

const MODULE: &str = r#"(module (func (export "_start")))"#;

#[test]
fn push_then_pull_round_trips_a_cncf_wasm_artifact() {
    let s = Server::start();
    let component =
        wat::parse_str(r#"(component (import "wasi:cli/stdout@0.2.0" (instance)))"#).unwrap();
    let r = reference(&s, "art/hello:v1");
    let digest = block_on(remote::push(&r, &component, &RemoteOptions::default())).unwrap();

    // The manifest and config are the CNCF shape.
    let manifest: serde_json::Value = s
        .get(&format!("/v2/art/hello/manifests/{digest}"))
        .json()
        .unwrap();
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config: serde_json::Value = s
        .get(&format!("/v2/art/hello/blobs/{config_digest}"))
        .json()
        .unwrap();
    assert_eq!(config["architecture"], "wasm");
    assert_eq!(config["os"], "wasip2");
    assert_eq!(
        config["component"]["imports"],
        json!(["wasi:cli/stdout@0.2.0"])
    );

    let pulled = block_on(remote::pull(&r, &RemoteOptions::default(), &no_progress)).unwrap();
    assert_eq!(pulled.wasm, component);
    assert_eq!(pulled.manifest_digest, digest);
    // By digest too.
    let by_digest = format!("{}@{digest}", reference(&s, "art/hello"));
    let pulled = block_on(remote::pull(
        &by_digest,
        &RemoteOptions::default(),
        &no_progress,
    ))
    .unwrap();
    assert_eq!(pulled.wasm, component);
}

/// Pushes a manifest with `config` (type, bytes) and `layers` (type, bytes)
/// straight through the distribution API; returns the reference.
/// A puller with an image store of its own, empty (it lives as long as
/// the directory returned).
fn fresh_puller() -> (tempfile::TempDir, Puller) {
    let dir = tempfile::tempdir().unwrap();
    let puller = Puller::new(ImageStore::new(dir.path()), RemoteOptions::default());
    (dir, puller)
}

/// A runtime with two worker threads, where tasks started at once really
/// overlap.
fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn push_image(
    s: &Server,
    repo: &str,
    tag: &str,
    config: (&str, &[u8]),
    layers: &[(&str, &[u8])],
) -> String {
    let c = s.push_blob(repo, config.1);
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|(mt, bytes)| json!({"mediaType": mt, "digest": s.push_blob(repo, bytes).to_string(), "size": bytes.len()}))
        .collect();
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": config.0, "digest": c.to_string(), "size": config.1.len()},
        "layers": layers,
    }))
    .unwrap();
    let r = s.push_manifest(repo, tag, OCI_MANIFEST, &body);
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    reference(s, &format!("{repo}:{tag}"))
}

fn tar_of(files: &[(&str, &[u8])], gzip: bool) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o755);
        header.set_cksum();
        builder.append_data(&mut header, name, *data).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    if !gzip {
        return tar;
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    gz.finish().unwrap()
}

#[test]
fn every_shape_of_wasm_image_yields_its_binary() {
    let s = Server::start();
    let wasm = wat::parse_str(MODULE).unwrap();
    let image_config = serde_json::to_vec(&json!({
        "os": "wasip1", "architecture": "wasm",
        "config": {"Entrypoint": ["/bin/app.wasm"], "Cmd": ["serve", "--port", "80"], "Env": ["MODE=prod"]},
    }))
    .unwrap();
    // Docker/runwasi images: a tar or tar+gzip layer, run as the config says.
    for (tag, layer_type, gzip) in [
        ("tar", "application/vnd.oci.image.layer.v1.tar", false),
        (
            "targz",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            true,
        ),
    ] {
        let layer = tar_of(&[("bin/app.wasm", &wasm), ("etc/motd", b"hi")], gzip);
        let r = push_image(
            &s,
            "shapes/docker",
            tag,
            ("application/vnd.oci.image.config.v1+json", &image_config),
            &[(layer_type, &layer)],
        );
        let pulled = block_on(remote::pull(&r, &RemoteOptions::default(), &no_progress)).unwrap();
        assert_eq!(pulled.wasm, wasm, "{tag}");
        assert_eq!(pulled.run.args, ["serve", "--port", "80"], "{tag}");
        assert_eq!(
            pulled.run.env,
            [("MODE".to_string(), "prod".to_string())],
            "{tag}"
        );
    }
    // Single raw-wasm-layer images of each media type.
    for (i, layer_type) in [
        "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
        "application/vnd.wasm.content.layer.v1+wasm",
        "application/vnd.module.wasm.content.layer.v1+wasm",
    ]
    .iter()
    .enumerate()
    {
        let r = push_image(
            &s,
            "shapes/raw",
            &format!("t{i}"),
            ("application/vnd.unknown.config.v1+json", b"{}"),
            &[(layer_type, &wasm)],
        );
        let pulled = block_on(remote::pull(&r, &RemoteOptions::default(), &no_progress)).unwrap();
        assert_eq!(pulled.wasm, wasm, "{layer_type}");
    }
    // An index with a linux entry and a wasm entry: the wasm one is run.
    let wasm_image = push_image(
        &s,
        "shapes/multi",
        "wasm-only",
        ("application/vnd.wasm.config.v0+json", b"{}"),
        &[("application/wasm", &wasm)],
    );
    let linux = push_image(
        &s,
        "shapes/multi",
        "linux-only",
        (
            "application/vnd.oci.image.config.v1+json",
            br#"{"os":"linux","architecture":"amd64"}"#,
        ),
        &[(
            "application/vnd.oci.image.layer.v1.tar",
            &tar_of(&[("bin/sh", b"elf")], false),
        )],
    );
    let digest_of = |r: &str| {
        let tag = r.rsplit(':').next().unwrap();
        let resp = s.get(&format!("/v2/shapes/multi/manifests/{tag}"));
        let d = header(&resp, "docker-content-digest").unwrap();
        (d, resp.bytes().unwrap().len())
    };
    let ((ld, ls), (wd, ws)) = (digest_of(&linux), digest_of(&wasm_image));
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": ld, "size": ls, "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": wd, "size": ws, "platform": {"os": "wasip1", "architecture": "wasm"}},
        ],
    }))
    .unwrap();
    assert_eq!(
        s.push_manifest("shapes/multi", "both", OCI_INDEX, &index)
            .status(),
        reqwest::StatusCode::CREATED
    );
    let pulled = block_on(remote::pull(
        &reference(&s, "shapes/multi:both"),
        &RemoteOptions::default(),
        &no_progress,
    ))
    .unwrap();
    assert_eq!(pulled.wasm, wasm);
    assert_eq!(pulled.manifest_digest.to_string(), wd);
    // What the tag names is the index: a start that asks finds the pulled
    // image current (not pulled again each time).
    assert_eq!(pulled.reference_digest, Digest::sha256_of(&index));
    let (_store, puller) = fresh_puller();
    let both = reference(&s, "shapes/multi:both");
    let always = skiff_registry::images::PullBehavior::Always;
    let checked = block_on(puller.check(&both, always)).unwrap();
    block_on(puller.ensure_checked(checked, &no_progress)).unwrap();
    let checked = block_on(puller.check(&both, always)).unwrap();
    assert!(checked.current.is_some(), "an index's image is current");
}

#[test]
fn what_skiff_cannot_run_is_refused_with_what_it_is() {
    let s = Server::start();
    let wasm = wat::parse_str(MODULE).unwrap();
    let spin = push_image(
        &s,
        "refuse/spin",
        "v1",
        ("application/vnd.fermyon.spin.application.v1+config", b"{}"),
        &[
            ("application/vnd.wasm.content.layer.v1+wasm", &wasm),
            (
                "application/vnd.wasm.content.layer.v1+wasm",
                b"\0asm\x01\0\0\0",
            ),
        ],
    );
    let linux = push_image(
        &s,
        "refuse/linux",
        "v1",
        (
            "application/vnd.oci.image.config.v1+json",
            br#"{"os":"linux","architecture":"arm64"}"#,
        ),
        &[(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            &tar_of(&[("bin/sh", b"elf")], true),
        )],
    );
    let helm = push_image(
        &s,
        "refuse/helm",
        "v1",
        ("application/vnd.cncf.helm.config.v1+json", b"{}"),
        &[(
            "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
            b"chart",
        )],
    );
    for (r, says) in [
        (spin, "Spin application"),
        (linux, "linux/arm64 container image"),
        (helm, "one Wasm layer"),
    ] {
        match block_on(remote::pull(&r, &RemoteOptions::default(), &no_progress)) {
            Err(e @ RemoteError::Unrunnable { .. }) => {
                assert!(e.to_string().contains(says), "{e}");
                assert!(e.to_string().contains("cannot run on skiff"), "{e}");
            }
            other => panic!("{r}: expected a refusal, got {other:?}"),
        }
    }
    // Missing images and malformed references are errors, not panics.
    assert!(matches!(
        block_on(remote::pull(
            &reference(&s, "refuse/none:v1"),
            &RemoteOptions::default(),
            &no_progress
        )),
        Err(RemoteError::Registry { .. })
    ));
    assert!(matches!(
        block_on(remote::pull(
            "UPPER/Case:v1",
            &RemoteOptions::default(),
            &no_progress
        )),
        Err(RemoteError::BadReference { .. })
    ));
}

#[test]
fn overlapping_pulls_of_one_image_download_it_once() {
    let s = Server::start();
    let wasm = wat::parse_str(MODULE).unwrap();
    let r = reference(&s, "once/hello:v1");
    block_on(remote::push(&r, &wasm, &RemoteOptions::default())).unwrap();
    let before = s.registry.stats();
    let (_store, puller) = fresh_puller();
    let puller = std::sync::Arc::new(puller);
    let rt = two_workers();
    let results: Vec<_> = rt.block_on(async {
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (puller, r) = (puller.clone(), r.clone());
                tokio::spawn(async move { puller.ensure(&r, &no_progress).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap().unwrap());
        }
        out
    });
    assert!(results.iter().all(|(_, bytes)| *bytes == wasm));
    let after = s.registry.stats();
    assert_eq!(
        after.manifests_served - before.manifests_served,
        1,
        "one manifest fetch"
    );
    assert_eq!(
        after.blobs_served - before.blobs_served,
        1,
        "one layer download"
    );
    // The store remembers it: listed, readable, removable.
    let store = puller.store();
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].wasm_digest, Digest::sha256_of(&wasm).to_string());
    assert!(store.remove(&listed[0].reference).unwrap());
    assert!(store.list().unwrap().is_empty());
}

/// ECS_IMAGE_PULL_BEHAVIOR: `default` and `always` ask what a tag names
/// at every start and pull it again when it moved; `once` and
/// `prefer-cached` start from the stored image without a request; a
/// digest is never asked about; a registry that cannot be reached fails
/// only `always` (and `default` with nothing stored).
#[test]
fn a_moved_tag_is_pulled_again_as_the_pull_behavior_says() {
    use skiff_registry::images::PullBehavior::{Always, Default, Once, PreferCached};
    let mut s = Server::start();
    let v1 = wat::parse_str(MODULE).unwrap();
    let v2 = wat::parse_str(r#"(module (func (export "_start") nop))"#).unwrap();
    assert_ne!(v1, v2);
    let r = reference(&s, "moving/web:latest");
    let d1 = block_on(remote::push(&r, &v1, &RemoteOptions::default())).unwrap();
    let (_store, puller) = fresh_puller();
    // Requests to the registry (a HEAD counts as a manifest served).
    let asked = |s: &Server| s.registry.stats().manifests_served;
    let start = |behavior| {
        let checked = block_on(puller.check(&r, behavior)).unwrap();
        let current = checked.current.clone();
        let (record, wasm, report) =
            block_on(puller.ensure_checked(checked, &no_progress)).unwrap();
        (current.is_some(), record, wasm, report.pulled)
    };

    let (was_current, record, wasm, pulled) = start(Default);
    assert!(!was_current && pulled);
    assert_eq!(
        (wasm, record.reference_digest),
        (v1.clone(), d1.to_string())
    );
    // Unmoved: asked (one HEAD), not pulled.
    let before = asked(&s);
    let (was_current, _, wasm, pulled) = start(Default);
    assert!(was_current && !pulled);
    assert_eq!(wasm, v1);
    assert_eq!(asked(&s) - before, 1, "one manifest HEAD");

    // (At a fixed time: pushed again below under another tag, it is the
    // same manifest.)
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let d2 = block_on(remote::push_as_of(&r, &v2, at, &RemoteOptions::default())).unwrap();
    // once and prefer-cached use what is stored, asking nothing.
    let before = asked(&s);
    for behavior in [Once, PreferCached] {
        let (was_current, _, wasm, pulled) = start(behavior);
        assert!(was_current && !pulled, "{behavior}");
        assert_eq!(wasm, v1, "{behavior} starts the stored image");
    }
    assert_eq!(asked(&s), before, "once and prefer-cached ask nothing");
    // default sees the move and pulls the new binary.
    let (was_current, record, wasm, pulled) = start(Default);
    assert!(!was_current && pulled);
    assert_eq!(
        (wasm, record.reference_digest),
        (v2.clone(), d2.to_string())
    );

    // A digest names one image forever: pulled once, not asked about again
    // (but under always, as ECS pulls it then).
    let repo = r.trim_end_matches(":latest");
    let by_digest = format!("{repo}@{d1}");
    let checked = block_on(puller.check(&by_digest, Default)).unwrap();
    let (_, wasm, report) = block_on(puller.ensure_checked(checked, &no_progress)).unwrap();
    assert!(report.pulled);
    assert_eq!(wasm, v1);
    let before = asked(&s);
    let checked = block_on(puller.check(&by_digest, Default)).unwrap();
    assert!(checked.current.is_some());
    assert_eq!(asked(&s), before, "a digest is not asked about");
    let checked = block_on(puller.check(&by_digest, Always)).unwrap();
    assert!(checked.current.is_some());
    assert_eq!(asked(&s) - before, 1, "always asks about a digest too");

    // The same image under another name is not downloaded again: by the
    // digest the store holds under the tag, or by another tag naming it.
    let blobs = s.registry.stats().blobs_served;
    let checked = block_on(puller.check(&format!("{repo}@{d2}"), Default)).unwrap();
    assert!(checked.current.is_some(), "held under the tag");
    let (_, wasm, report) = block_on(puller.ensure_checked(checked, &no_progress)).unwrap();
    assert!(!report.pulled);
    assert_eq!(wasm, v2);
    let stable = format!("{repo}:stable");
    let same = block_on(remote::push_as_of(
        &stable,
        &v2,
        at,
        &RemoteOptions::default(),
    ))
    .unwrap();
    assert_eq!(same, d2);
    let checked = block_on(puller.check(&stable, Default)).unwrap();
    let (record, wasm, report) = block_on(puller.ensure_checked(checked, &no_progress)).unwrap();
    assert!(!report.pulled);
    assert_eq!(
        (wasm, record.reference_digest),
        (v2.clone(), d2.to_string())
    );
    assert_eq!(s.registry.stats().blobs_served, blobs, "no download");

    // The registry gone: default starts the stored image, always fails,
    // and default with nothing stored fails naming the registry.
    s.shutdown();
    let checked = block_on(puller.check(&r, Default)).unwrap();
    assert_eq!(checked.current.unwrap().reference_digest, d2.to_string());
    assert!(matches!(
        block_on(puller.check(&r, Always)),
        Err(RemoteError::Registry { .. })
    ));
    assert!(
        block_on(puller.check(&by_digest, Default))
            .unwrap()
            .current
            .is_some()
    );
    assert!(matches!(
        block_on(puller.check(&by_digest, Always)),
        Err(RemoteError::Registry { .. })
    ));
    let never = reference(&s, "moving/never:v1");
    assert!(matches!(
        block_on(puller.check(&never, Default)),
        Err(RemoteError::Registry { .. })
    ));
}

/// Tasks of one image starting together share the question of what its
/// tag names, and every one of them sees the tag's current image. (How
/// many questions they share is timing; `Questions`' own test counts them
/// deterministically.)
#[test]
fn starts_of_one_image_at_once_all_see_its_current_image() {
    use skiff_registry::images::PullBehavior::Default;
    let s = Server::start();
    let wasm = wat::parse_str(MODULE).unwrap();
    let r = reference(&s, "burst/web:v1");
    let pushed = block_on(remote::push(&r, &wasm, &RemoteOptions::default())).unwrap();
    let (_store, puller) = fresh_puller();
    let puller = std::sync::Arc::new(puller);
    let rt = two_workers();
    rt.block_on(async {
        let checked = puller.check(&r, Default).await.unwrap();
        puller.ensure_checked(checked, &no_progress).await.unwrap();
    });
    let before = s.registry.stats().manifests_served;
    let current: Vec<bool> = rt.block_on(async {
        let starts: Vec<_> = (0..50)
            .map(|_| {
                let (puller, r) = (puller.clone(), r.clone());
                tokio::spawn(async move { puller.check(&r, Default).await })
            })
            .collect();
        let mut out = Vec::new();
        for start in starts {
            let checked = start.await.unwrap().unwrap();
            out.push(
                checked
                    .current
                    .is_some_and(|c| c.reference_digest == pushed.to_string()),
            );
        }
        out
    });
    assert!(current.iter().all(|c| *c), "{current:?}");
    let asked = s.registry.stats().manifests_served - before;
    assert!(asked >= 1, "the registry was asked");
}

/// An agent in the registry's process asks it what a tag names without
/// HTTP, and still sees every move; a pull-through cache's repository,
/// whose tags a pull refreshes from upstream, is asked over HTTP.
#[test]
fn a_tag_resolver_answers_in_process_and_sees_every_move() {
    use skiff_registry::images::PullBehavior::Default;
    let s = Server::start();
    let v1 = wat::parse_str(MODULE).unwrap();
    let v2 = wat::parse_str(r#"(module (func (export "_start") nop))"#).unwrap();
    let r = reference(&s, "local/web:v1");
    block_on(remote::push(&r, &v1, &RemoteOptions::default())).unwrap();
    let (_store, puller) = fresh_puller();
    let registry = s.registry.clone();
    puller.set_tag_resolver(
        s.base.trim_start_matches("http://"),
        std::sync::Arc::new(move |repo, tag| registry.tag_digest(repo, tag)),
    );
    let checked = block_on(puller.check(&r, Default)).unwrap();
    block_on(puller.ensure_checked(checked, &no_progress)).unwrap();
    let before = s.registry.stats();
    let d2 = block_on(remote::push(&r, &v2, &RemoteOptions::default())).unwrap();
    let checked = block_on(puller.check(&r, Default)).unwrap();
    assert!(checked.current.is_none(), "the move is seen");
    assert_eq!(
        s.registry.stats().manifests_served,
        before.manifests_served,
        "asked in-process, not over HTTP"
    );
    let (record, wasm, _) = block_on(puller.ensure_checked(checked, &no_progress)).unwrap();
    assert_eq!((wasm, record.reference_digest), (v2, d2.to_string()));

    // Under a pull-through cache rule the registry does not answer
    // in-process: a pull there may refresh the tag from upstream.
    assert_eq!(
        s.registry.tag_digest("local/web", "v1"),
        Some(d2.to_string())
    );
    assert_eq!(s.registry.tag_digest("local/web", "v9"), None);
    s.registry
        .create_cache_rule("local", "127.0.0.1:9", None)
        .unwrap();
    assert_eq!(s.registry.tag_digest("local/web", "v1"), None);
}

/// An agent in the registry's process reads a pushed binary from the
/// registry's blob file and links it into its store: nothing downloaded,
/// nothing written twice. A damaged file is downloaded instead.
#[test]
fn a_registry_in_process_hands_over_its_blob_files_to_link() {
    use std::os::unix::fs::MetadataExt;
    let s = Server::start();
    let host = s.base.trim_start_matches("http://").to_string();
    let wasm = wat::parse_str(MODULE).unwrap();
    let r = reference(&s, "local/app:v1");
    block_on(remote::push(&r, &wasm, &RemoteOptions::default())).unwrap();
    let layer = Digest::sha256_of(&wasm).to_string();
    let blob = s.registry.blob_file("local/app", &layer).expect("its blob");
    // Only a repository that holds the blob has it to hand.
    assert_eq!(s.registry.blob_file("other/app", &layer), None);
    assert_eq!(s.registry.blob_file("local/app", "sha256:0bad"), None);

    let (store, puller) = fresh_puller();
    let registry = s.registry.clone();
    puller.set_blob_files(
        &host,
        std::sync::Arc::new(move |repo, digest| registry.blob_file(repo, digest)),
    );
    let served = s.registry.stats().blobs_served;
    let (record, got) = block_on(puller.ensure(&r, &no_progress)).unwrap();
    assert_eq!(got, wasm);
    assert_eq!(
        s.registry.stats().blobs_served,
        served,
        "nothing downloaded"
    );
    let stored = puller
        .store()
        .wasm_path(layer.trim_start_matches("sha256:"));
    assert_eq!(record.wasm_digest, layer);
    assert_eq!(
        std::fs::metadata(&stored).unwrap().ino(),
        std::fs::metadata(&blob).unwrap().ino(),
        "the store's binary is the registry's file"
    );

    // A file that is not the blob is not used: the layer is downloaded.
    let damaged = store.path().join("damaged");
    std::fs::write(&damaged, b"\0asm not the layer").unwrap();
    let (_store2, puller) = fresh_puller();
    puller.set_blob_files(
        &host,
        std::sync::Arc::new(move |_, _| Some(damaged.clone())),
    );
    let (_, got) = block_on(puller.ensure(&r, &no_progress)).unwrap();
    assert_eq!(got, wasm);
    assert_eq!(s.registry.stats().blobs_served, served + 1, "downloaded");
    let stored = puller
        .store()
        .wasm_path(layer.trim_start_matches("sha256:"));
    assert_eq!(std::fs::read(&stored).unwrap(), wasm);
}

#[test]
fn oci_client_pushes_chunked_and_monolithic_alike() {
    use oci_client::client::{ClientConfig, ClientProtocol};
    use oci_client::secrets::RegistryAuth;
    let s = Server::start();
    let host = s.base.trim_start_matches("http://").to_string();
    // 9 MiB and a bit: three of oci-client's 4 MiB chunks, the last short.
    let blob: Vec<u8> = (0..(9 << 20) + 12_345u32)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let digest = Digest::sha256_of(&blob).to_string();
    for (repo, monolithic) in [("chunked/blob", false), ("monolithic/blob", true)] {
        let client = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(vec![host.clone()]),
            use_monolithic_push: monolithic,
            ..ClientConfig::default()
        });
        let image: oci_client::Reference = format!("{host}/{repo}:t").parse().unwrap();
        block_on(async {
            client
                .auth(
                    &image,
                    &RegistryAuth::Anonymous,
                    oci_client::RegistryOperation::Push,
                )
                .await
                .unwrap();
            if monolithic {
                client
                    .push_blob(&image, blob.clone(), &digest)
                    .await
                    .unwrap();
            } else {
                // The stream form never falls back to a monolithic PUT.
                let chunks: Vec<oci_client::errors::Result<bytes::Bytes>> = blob
                    .chunks(3 << 20)
                    .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
                    .collect();
                let pushed = client
                    .push_blob_stream_chunked(&image, futures_util::stream::iter(chunks))
                    .await
                    .unwrap();
                assert_eq!(
                    (pushed.blob_digest, pushed.size),
                    (digest.clone(), blob.len() as u64)
                );
            }
            let mut pulled = Vec::new();
            client
                .pull_blob(&image, digest.as_str(), &mut pulled)
                .await
                .unwrap();
            assert_eq!(pulled.len(), blob.len());
            assert!(pulled == blob, "{repo}: the blob came back different");
        });
    }
}

fn auth_server(challenge: skiff_registry::ChallengeKind) -> (Server, RemoteOptions) {
    let s = Server::start_in(tempfile::tempdir().unwrap(), |c| {
        c.auth = skiff_registry::AuthMode::All;
        c.challenge = challenge;
    });
    let token = s
        .registry
        .issue_token(std::time::Duration::from_secs(3600))
        .unwrap();
    let options = RemoteOptions {
        credentials: vec![(
            s.base.trim_start_matches("http://").to_string(),
            remote::Credentials {
                username: "AWS".into(),
                password: token.token,
            },
        )],
        ..RemoteOptions::default()
    };
    (s, options)
}

#[test]
fn oci_client_authenticates_with_basic_and_with_bearer_tokens() {
    let module = wat::parse_str(MODULE).unwrap();
    for challenge in [
        skiff_registry::ChallengeKind::Basic,
        skiff_registry::ChallengeKind::Bearer,
    ] {
        let (s, options) = auth_server(challenge);
        let r = reference(&s, "secured/app:v1");
        let digest = block_on(remote::push(&r, &module, &options)).unwrap();
        let pulled = block_on(remote::pull(&r, &options, &no_progress)).unwrap();
        assert_eq!(pulled.manifest_digest, digest, "{challenge:?}");
        assert_eq!(pulled.wasm, module);
        block_on(remote::check_login(
            s.base.trim_start_matches("http://"),
            &options,
        ))
        .unwrap();

        // Without credentials, or with a wrong token, nothing.
        let anonymous = block_on(remote::pull(&r, &RemoteOptions::default(), &no_progress));
        assert!(
            matches!(&anonymous, Err(RemoteError::Registry { detail, .. }) if detail.to_lowercase().contains("auth") || detail.contains("401")),
            "{challenge:?}: {anonymous:?}"
        );
        let mut wrong = options.clone();
        wrong.credentials[0].1.password = "not-a-token".into();
        let refused = block_on(remote::push(&r, &module, &wrong));
        assert!(refused.is_err(), "{challenge:?}");
        assert!(
            block_on(remote::check_login(
                s.base.trim_start_matches("http://"),
                &wrong
            ))
            .is_err()
        );
    }
}

/// A push hook that sends each image's digest to `tx`, and whether it is
/// handed over again after an interrupted hand-over, then takes as long as
/// `finish` says (forever: it never finishes).
fn telling_hook(
    tx: std::sync::mpsc::Sender<(String, bool)>,
    finish: fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> skiff_registry::PushHook {
    let tx = std::sync::Mutex::new(tx);
    std::sync::Arc::new(move |image: skiff_registry::PushedImage| {
        let _ = tx.lock().unwrap().send((image.digest, image.resumed));
        finish()
    })
}

/// How many pushed images wait for the push hook, read from the registry's
/// database as another process would.
fn queued_for_the_hook(s: &Server) -> i64 {
    let db = rusqlite::Connection::open(s.dir.path().join("registry/registry.db")).unwrap();
    db.query_row("SELECT count(*) FROM announcements", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn images_the_push_hook_had_not_finished_are_handed_over_when_the_registry_serves_again() {
    let wait = std::time::Duration::from_secs(20);
    // The hook starts on the first image and never finishes; the second
    // waits its turn. Then the process ends (its runtime with it).
    let (tx, rx) = std::sync::mpsc::channel();
    let s = Server::start_hooked(
        tempfile::tempdir().unwrap(),
        telling_hook(tx, || Box::pin(std::future::pending())),
    );
    let first = wat::parse_str(MODULE).unwrap();
    let second = wat::parse_str(r#"(module (func (export "_start") nop))"#).unwrap();
    let push = |s: &Server, tag: &str, wasm: &[u8]| {
        let r = reference(s, &format!("queued/app:{tag}"));
        block_on(remote::push(&r, wasm, &RemoteOptions::default()))
            .unwrap()
            .to_string()
    };
    let a = push(&s, "v1", &first);
    let b = push(&s, "v2", &second);
    assert_eq!(rx.recv_timeout(wait).unwrap(), (a.clone(), false));
    assert_eq!(queued_for_the_hook(&s), 2);

    // Served again: both are handed over, in the order they were pushed,
    // and once the hook is done with them they leave the queue. Only the
    // first had been interrupted; the second had not had its turn.
    let (tx, rx) = std::sync::mpsc::channel();
    let s = s.restart_hooked(telling_hook(tx, || Box::pin(async {})));
    assert_eq!(rx.recv_timeout(wait).unwrap(), (a, true));
    assert_eq!(rx.recv_timeout(wait).unwrap(), (b, false));
    assert!(
        rx.recv_timeout(std::time::Duration::from_millis(300))
            .is_err(),
        "an image handed over twice"
    );
    let deadline = std::time::Instant::now() + wait;
    while queued_for_the_hook(&s) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the queue kept its images"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    // A registry serving without a hook queues nothing.
    let s = s.restart();
    push(&s, "v3", &first);
    assert_eq!(queued_for_the_hook(&s), 0);
}

#[test]
fn an_image_whose_hook_never_finishes_is_given_up_after_three_hand_overs() {
    let wait = std::time::Duration::from_secs(20);
    let stuck = |tx| telling_hook(tx, || Box::pin(std::future::pending()));
    let (tx, rx) = std::sync::mpsc::channel();
    let mut s = Server::start_hooked(tempfile::tempdir().unwrap(), stuck(tx));
    let r = reference(&s, "doomed/app:v1");
    let module = wat::parse_str(MODULE).unwrap();
    let digest = block_on(remote::push(&r, &module, &RemoteOptions::default()))
        .unwrap()
        .to_string();
    assert_eq!(rx.recv_timeout(wait).unwrap(), (digest.clone(), false));
    // Each time the process ends before the hook does (as a compile that
    // runs out of memory would end it).
    for _ in 0..2 {
        let (tx, rx) = std::sync::mpsc::channel();
        s = s.restart_hooked(stuck(tx));
        assert_eq!(rx.recv_timeout(wait).unwrap(), (digest.clone(), true));
    }
    // The fourth time it is taken off the queue without being handed over.
    let (tx, rx) = std::sync::mpsc::channel();
    let s = s.restart_hooked(telling_hook(tx, || Box::pin(async {})));
    let deadline = std::time::Instant::now() + wait;
    while queued_for_the_hook(&s) > 0 {
        assert!(std::time::Instant::now() < deadline, "still queued");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(rx.try_recv().is_err(), "handed over a fourth time");
}

#[test]
fn the_push_hook_is_told_of_each_pushed_wasm_image_with_its_binary_and_of_nothing_else() {
    let s = Server::start();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    s.registry.on_push(std::sync::Arc::new(
        move |image: skiff_registry::PushedImage| {
            tx.lock().unwrap().send(image).unwrap();
            Box::pin(async {})
        },
    ));
    let module = wat::parse_str(MODULE).unwrap();
    let r = reference(&s, "hooked/app:v1");
    let digest = block_on(remote::push(&r, &module, &RemoteOptions::default())).unwrap();
    let told = rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap();
    assert_eq!(told.repository, "hooked/app");
    assert_eq!(told.digest, digest.to_string());
    assert_eq!(told.wasm, module);

    // Not a Wasm image (an OCI artifact of another kind), an index of the
    // image, and a referrer of it (a signature): not told.
    let blob = s.push_blob("hooked/app", b"{}");
    let other = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.example.config+json", "digest": blob.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.example.data", "digest": blob.to_string(), "size": 2}],
    }))
    .unwrap();
    assert_eq!(
        s.push_manifest("hooked/app", "other", OCI_MANIFEST, &other)
            .status(),
        reqwest::StatusCode::CREATED
    );
    let manifest = s
        .get(&format!("/v2/hooked/app/manifests/{digest}"))
        .bytes()
        .unwrap();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len(),
            "platform": {"architecture": "wasm", "os": "wasip1"}}],
    }))
    .unwrap();
    assert_eq!(
        s.push_manifest("hooked/app", "index", OCI_INDEX, &index)
            .status(),
        reqwest::StatusCode::CREATED
    );
    // (The referrer carries a Wasm layer, so only its being a referrer
    // keeps it from the hook.)
    let layer = s.push_blob("hooked/app", &module);
    let signature = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": blob.to_string(), "size": 2},
        "layers": [{"mediaType": "application/wasm", "digest": layer.to_string(), "size": module.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len()},
    }))
    .unwrap();
    let signed = s.push_manifest(
        "hooked/app",
        &Digest::sha256_of(&signature).to_string(),
        OCI_MANIFEST,
        &signature,
    );
    assert_eq!(signed.status(), reqwest::StatusCode::CREATED);
    // A second Wasm push after them all: the first thing told since.
    let second = wat::parse_str(r#"(module (func (export "_start") nop))"#).unwrap();
    let r2 = reference(&s, "hooked/app:v2");
    let digest2 = block_on(remote::push(&r2, &second, &RemoteOptions::default())).unwrap();
    let told = rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap();
    assert_eq!((told.digest, told.wasm), (digest2.to_string(), second));
}
