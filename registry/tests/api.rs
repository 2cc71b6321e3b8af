//! The distribution API end to end, over a real socket, endpoint by
//! endpoint: status codes, headers and bodies as the OCI spec states them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use skiff_registry::{Algorithm, Digest};
use std::time::Duration;

#[test]
fn base_endpoint_says_it_speaks_v2() {
    let s = Server::start();
    let r = s.get("/v2/");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "docker-distribution-api-version").as_deref(),
        Some("registry/2.0")
    );
}

#[test]
fn every_upload_style_makes_the_same_blob() {
    let s = Server::start();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let digest = Digest::sha256_of(&data);

    // POST then monolithic PUT.
    assert_eq!(s.push_blob("styles/monolithic", &data), digest);

    // A single POST with ?digest=.
    let r = s
        .client
        .post(s.url(&format!("/v2/styles/single/blobs/uploads/?digest={digest}")))
        .body(data.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(location(&r), format!("/v2/styles/single/blobs/{digest}"));
    assert_eq!(
        header(&r, "docker-content-digest"),
        Some(digest.to_string())
    );

    // Chunked PATCHes with Content-Range; Range: 0-N after each.
    let r = s
        .client
        .post(s.url("/v2/styles/chunked/blobs/uploads/"))
        .header("content-length", "0")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut loc = location(&r);
    for (start, chunk) in [(0usize, &data[..70_000]), (70_000, &data[70_000..150_000])] {
        let end = start + chunk.len() - 1;
        let r = s
            .client
            .patch(s.url(&loc))
            .header("content-range", format!("{start}-{end}"))
            .header("content-type", "application/octet-stream")
            .body(chunk.to_vec())
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        assert_eq!(header(&r, "range"), Some(format!("0-{end}")));
        loc = location(&r);
    }
    // An out-of-order chunk is refused with 416, and the status says where
    // the upload stands.
    let r = s
        .client
        .patch(s.url(&loc))
        .header("content-range", "10-19")
        .body(vec![0u8; 10])
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let r = s.get(&loc);
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range").as_deref(), Some("0-149999"));
    // The last chunk rides in the closing PUT.
    let r = s
        .client
        .put(s.url(&format!("{loc}?digest={digest}")))
        .header("content-range", format!("150000-{}", data.len() - 1))
        .body(data[150_000..].to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // A streamed PATCH without Content-Range (skopeo's way), closed by an
    // empty PUT.
    let r = s
        .client
        .post(s.url("/v2/styles/streamed/blobs/uploads/"))
        .send()
        .unwrap();
    let loc = location(&r);
    let r = s
        .client
        .patch(s.url(&loc))
        .body(data.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), Some(format!("0-{}", data.len() - 1)));
    let r = s
        .client
        .put(s.url(&format!("{}?digest={digest}", location(&r))))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    for repo in [
        "styles/monolithic",
        "styles/single",
        "styles/chunked",
        "styles/streamed",
    ] {
        let r = s.get(&format!("/v2/{repo}/blobs/{digest}"));
        assert_eq!(r.status(), StatusCode::OK, "{repo}");
        assert_eq!(r.bytes().unwrap().as_ref(), &data[..], "{repo}");
    }
}

#[test]
fn a_wrong_digest_leaves_nothing_behind() {
    let s = Server::start();
    let wrong = Digest::sha256_of(b"something else");
    let r = s
        .client
        .post(s.url("/v2/bad/blobs/uploads/"))
        .send()
        .unwrap();
    let loc = location(&r);
    let r = s
        .client
        .put(s.url(&format!("{loc}?digest={wrong}")))
        .body(b"content".to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r), "DIGEST_INVALID");
    assert_eq!(
        s.get(&format!("/v2/bad/blobs/{wrong}")).status(),
        StatusCode::NOT_FOUND
    );
    let actual = Digest::sha256_of(b"content");
    assert_eq!(
        s.get(&format!("/v2/bad/blobs/{actual}")).status(),
        StatusCode::NOT_FOUND
    );
    // The session is closed.
    assert_eq!(s.get(&loc).status(), StatusCode::NOT_FOUND);
    // Malformed digests are 400 too.
    let r = s
        .client
        .post(s.url("/v2/never/blobs/uploads/?digest=sha256:nothex"))
        .body(b"x".to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r), "DIGEST_INVALID");
    // No upload file left, and no repository made by pushes that failed.
    assert_eq!(s.uploads_on_disk(), 0);
    for repo in ["bad", "never"] {
        let r = s.get(&format!("/v2/{repo}/tags/list"));
        assert_eq!(error_code(r), "NAME_UNKNOWN", "{repo}");
    }
    assert!(s.registry.repositories().unwrap().is_empty());
}

#[test]
fn a_refused_chunk_leaves_the_upload_as_it_was() {
    let s = Server::start();
    let data: Vec<u8> = (0..15u8).collect();
    let loc = s.start_upload("chunks");
    let patch = |range: &str, body: &[u8]| {
        s.client
            .patch(s.url(&loc))
            .header("content-range", range)
            .body(body.to_vec())
            .send()
            .unwrap()
    };
    let uploaded = || header(&s.get(&loc), "range");

    // A range longer than any count of bytes.
    let r = patch("0-18446744073709551615", &data[..5]);
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(uploaded().as_deref(), Some("0-0"));

    // Shorter than its range, then longer: refused, nothing kept.
    let r = patch("0-9", &data[..5]);
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r), "SIZE_INVALID");
    assert_eq!(uploaded().as_deref(), Some("0-0"));
    assert_eq!(patch("0-9", &data[..10]).status(), StatusCode::ACCEPTED);
    for range in ["10-11", "10-18446744073709551615"] {
        let r = patch(range, &data[10..]);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{range}");
        assert_eq!(error_code(r), "SIZE_INVALID", "{range}");
        assert_eq!(uploaded().as_deref(), Some("0-9"), "{range}");
    }

    // Ranges that cannot be taken: 416 with where the upload is.
    for range in ["10-9", "ten-eleven", "0-4"] {
        let r = patch(range, &data[10..]);
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(header(&r, "range").as_deref(), Some("0-9"), "{range}");
        assert_eq!(location(&r), loc, "{range}");
    }
    let r = s
        .client
        .put(s.url(&format!("{loc}?digest={}", Digest::sha256_of(&data))))
        .header("content-range", "0-18446744073709551615")
        .body(data[10..].to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    // The same chunk again, with its unit written as some clients do.
    assert_eq!(
        patch("bytes=10-14", &data[10..]).status(),
        StatusCode::ACCEPTED
    );
    let digest = Digest::sha256_of(&data);
    let r = s
        .client
        .put(s.url(&format!("{loc}?digest={digest}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        s.get(&format!("/v2/chunks/blobs/{digest}"))
            .bytes()
            .unwrap()
            .as_ref(),
        &data[..]
    );
}

#[test]
fn an_upload_left_idle_is_dropped_and_one_in_use_is_kept() {
    let s = Server::start_in(tempfile::tempdir().unwrap(), |c| {
        c.upload_idle_limit = Duration::from_secs(2);
        c.maintenance_interval = Duration::from_millis(100);
    });
    let (left, used) = (s.start_upload("idle"), s.start_upload("idle"));
    assert_eq!(s.uploads_on_disk(), 2);
    let mut sent = 0u64;
    eventually("the idle upload to be dropped", || {
        // The other one gets a byte every poll.
        let r = s
            .client
            .patch(s.url(&used))
            .header("content-range", format!("{sent}-{sent}"))
            .body(vec![b'x'])
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        sent += 1;
        // (Not asked by a status GET: that would be using it.)
        s.uploads_on_disk() == 1
    });
    assert_eq!(error_code(s.get(&left)), "BLOB_UPLOAD_UNKNOWN");
    let r = s.get(&used);
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), Some(format!("0-{}", sent - 1)));
}

#[test]
fn a_request_queued_behind_the_closing_put_finds_the_upload_gone() {
    use std::io::{Read, Write};
    let s = Server::start();
    let data = vec![3u8; 64 * 1024];
    let digest = Digest::sha256_of(&data);
    let loc = s.start_upload("queued");
    let addr = s.base.trim_start_matches("http://").to_string();
    // The PUT that closes the upload, its body held back halfway.
    let mut put = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        put,
        "PUT {loc}?digest={digest} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        data.len()
    )
    .unwrap();
    put.write_all(&data[..1000]).unwrap();
    // Status requests until one goes unanswered: from then on the PUT
    // holds the upload (one answered sooner came before it).
    let ask = |request: &str| {
        let mut conn = std::net::TcpStream::connect(&addr).unwrap();
        write!(conn, "{request}").unwrap();
        conn.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        conn
    };
    let status_request = format!("GET {loc} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        let mut conn = ask(&status_request);
        let mut reply = String::new();
        match conn.read_to_string(&mut reply) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break conn;
            }
            other => {
                assert!(reply.starts_with("HTTP/1.1 204"), "{other:?}: {reply}");
                assert!(
                    std::time::Instant::now() < deadline,
                    "the PUT never took the upload"
                );
            }
        }
    };
    // A PATCH to the same upload meanwhile waits too.
    let patch = ask(&format!(
        "PATCH {loc} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
    ));
    put.write_all(&data[1000..]).unwrap();
    let mut reply = [0u8; 12];
    put.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"HTTP/1.1 201");
    for mut queued in [status, patch] {
        queued.set_read_timeout(None).unwrap();
        let mut reply = String::new();
        queued.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
        assert!(reply.contains("BLOB_UPLOAD_UNKNOWN"), "{reply}");
    }
    assert_eq!(
        s.get(&format!("/v2/queued/blobs/{digest}"))
            .bytes()
            .unwrap()
            .as_ref(),
        &data[..]
    );
}

#[test]
fn sha512_and_empty_blobs() {
    let s = Server::start();
    let data = b"sha-512 content".to_vec();
    let d512 = Digest::of(Algorithm::Sha512, &data);
    let r = s
        .client
        .post(s.url(&format!("/v2/algos/blobs/uploads/?digest={d512}")))
        .body(data.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        s.get(&format!("/v2/algos/blobs/{d512}"))
            .bytes()
            .unwrap()
            .as_ref(),
        &data[..]
    );

    let empty = s.push_blob("algos", b"");
    let r = s.get(&format!("/v2/algos/blobs/{empty}"));
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length").as_deref(), Some("0"));
}

#[test]
fn blob_reads_support_head_and_ranges() {
    let s = Server::start();
    let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let d = s.push_blob("ranges", &data);
    let r = s
        .client
        .head(s.url(&format!("/v2/ranges/blobs/{d}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length").as_deref(), Some("1000"));
    assert_eq!(header(&r, "docker-content-digest"), Some(d.to_string()));

    let r = s
        .client
        .get(s.url(&format!("/v2/ranges/blobs/{d}")))
        .header("range", "bytes=10-19")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header(&r, "content-range").as_deref(),
        Some("bytes 10-19/1000")
    );
    assert_eq!(r.bytes().unwrap().as_ref(), &data[10..20]);

    let r = s
        .client
        .get(s.url(&format!("/v2/ranges/blobs/{d}")))
        .header("range", "bytes=-5")
        .send()
        .unwrap();
    assert_eq!(r.bytes().unwrap().as_ref(), &data[995..]);

    let r = s
        .client
        .get(s.url(&format!("/v2/ranges/blobs/{d}")))
        .header("range", "bytes=1000-")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "content-range").as_deref(), Some("bytes */1000"));
    assert_eq!(error_code(r), "RANGE_INVALID");

    // A Range this does not serve is ignored (RFC 9110): the whole blob.
    for spec in ["bytes=abc", "lines=0-1", "bytes=0-1,3-4", "bytes=9-0"] {
        let r = s
            .client
            .get(s.url(&format!("/v2/ranges/blobs/{d}")))
            .header("range", spec)
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{spec}");
        assert_eq!(r.bytes().unwrap().as_ref(), &data[..], "{spec}");
    }

    // Ranges across page boundaries of a larger blob, and a HEAD of one.
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let d = s.push_blob("ranges", &data);
    for (spec, want) in [
        ("bytes=4095-12288", &data[4095..=12288]),
        ("bytes=8192-", &data[8192..]),
        ("bytes=-4097", &data[50_000 - 4097..]),
        ("bytes=49999-70000", &data[49_999..]),
    ] {
        let r = s
            .client
            .get(s.url(&format!("/v2/ranges/blobs/{d}")))
            .header("range", spec)
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{spec}");
        assert_eq!(r.bytes().unwrap().as_ref(), want, "{spec}");
    }
    let r = s
        .client
        .head(s.url(&format!("/v2/ranges/blobs/{d}")))
        .header("range", "bytes=100-199")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&r, "content-length").as_deref(), Some("100"));
    assert_eq!(
        header(&r, "content-range").as_deref(),
        Some("bytes 100-199/50000")
    );
}

#[test]
fn cross_repository_mounts() {
    let s = Server::start();
    let d = s.push_blob("mount/source", b"shared layer");
    // With `from`.
    let r = s
        .client
        .post(s.url(&format!(
            "/v2/mount/a/blobs/uploads/?mount={d}&from=mount/source"
        )))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(location(&r), format!("/v2/mount/a/blobs/{d}"));
    assert_eq!(
        s.get(&format!("/v2/mount/a/blobs/{d}")).status(),
        StatusCode::OK
    );
    // Without `from`: found elsewhere, mounted all the same.
    let r = s
        .client
        .post(s.url(&format!("/v2/mount/b/blobs/uploads/?mount={d}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // Unknown content: an upload session instead.
    let unknown = Digest::sha256_of(b"never pushed");
    let r = s
        .client
        .post(s.url(&format!(
            "/v2/mount/c/blobs/uploads/?mount={unknown}&from=mount/source"
        )))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(location(&r).starts_with("/v2/mount/c/blobs/uploads/"));
    // A repository that never had the blob cannot serve it.
    assert_eq!(
        s.get(&format!("/v2/mount/c/blobs/{d}")).status(),
        StatusCode::NOT_FOUND
    );
}

#[test]
fn upload_sessions_can_be_inspected_and_cancelled() {
    let s = Server::start();
    let r = s
        .client
        .post(s.url("/v2/cancel/blobs/uploads/"))
        .send()
        .unwrap();
    let loc = location(&r);
    assert!(header(&r, "docker-upload-uuid").is_some());
    let r = s.get(&loc);
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range").as_deref(), Some("0-0"));
    assert_eq!(
        s.client.delete(s.url(&loc)).send().unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let r = s.get(&loc);
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r), "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn manifests_round_trip_byte_for_byte() {
    let s = Server::start();
    let config = b"{\"type\":\"wasm\"}";
    let layer = b"\0asm\x01\0\0\0";
    let c = s.push_blob("app", config);
    let l = s.push_blob("app", layer);
    // Odd spacing and a custom field: stored exactly as sent.
    let mut body = image_manifest(&c, config.len(), &[(&l, layer.len())]);
    body.splice(1..1, b" \"x-custom\": [1,2,3] ,".iter().copied());
    let digest = Digest::sha256_of(&body);
    let r = s.push_manifest("app", "v1", OCI_MANIFEST, &body);
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().unwrap());
    let r = s.push_manifest("app", "v1", OCI_MANIFEST, &body);
    assert_eq!(
        header(&r, "docker-content-digest"),
        Some(digest.to_string())
    );
    assert_eq!(location(&r), format!("/v2/app/manifests/{digest}"));

    for reference in ["v1".to_string(), digest.to_string()] {
        let r = s.get(&format!("/v2/app/manifests/{reference}"));
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-type").as_deref(), Some(OCI_MANIFEST));
        assert_eq!(
            header(&r, "docker-content-digest"),
            Some(digest.to_string())
        );
        assert_eq!(r.bytes().unwrap().as_ref(), &body[..]);
        let r = s
            .client
            .head(s.url(&format!("/v2/app/manifests/{reference}")))
            .send()
            .unwrap();
        assert_eq!(header(&r, "content-length"), Some(body.len().to_string()));
    }
    // Pushed by digest: the digest must be the content's.
    let r = s.push_manifest(
        "app",
        &Digest::sha256_of(b"other").to_string(),
        OCI_MANIFEST,
        &body,
    );
    assert_eq!(error_code(r), "DIGEST_INVALID");
    let r = s.push_manifest("app", &digest.to_string(), OCI_MANIFEST, &body);
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[test]
fn manifests_must_be_complete_well_formed_and_small() {
    let s = Server::start();
    let config = s.push_blob("strict", b"{}");
    let missing = Digest::sha256_of(b"not pushed");
    let body = image_manifest(&config, 2, &[(&missing, 10)]);
    let r = s.push_manifest("strict", "v1", OCI_MANIFEST, &body);
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r), "MANIFEST_BLOB_UNKNOWN");

    let r = s.push_manifest(
        "strict",
        "v1",
        "application/x-bogus",
        b"{\"schemaVersion\":2}",
    );
    assert_eq!(error_code(r), "MANIFEST_INVALID");
    let r = s.push_manifest("strict", "v1", OCI_MANIFEST, b"not json");
    assert_eq!(error_code(r), "MANIFEST_INVALID");
    // The header and the body disagree about what it is.
    let r = s.push_manifest("strict", "v1", OCI_INDEX, &image_manifest(&config, 2, &[]));
    assert_eq!(error_code(r), "MANIFEST_INVALID");

    let mut huge = image_manifest(&config, 2, &[]);
    let padding = format!(",\"annotations\":{{\"pad\":\"{}\"}}}}", "x".repeat(4 << 20));
    huge.truncate(huge.len() - 1);
    huge.extend_from_slice(padding.as_bytes());
    let r = s.push_manifest("strict", "big", OCI_MANIFEST, &huge);
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let r = s.push_manifest(
        "strict",
        "bad:tag",
        OCI_MANIFEST,
        &image_manifest(&config, 2, &[]),
    );
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Nothing of the failures was stored.
    let tags: Value = s.get("/v2/strict/tags/list").json().unwrap();
    assert_eq!(tags["tags"], json!([]));
}

#[test]
fn the_edge_cases_of_the_conformance_suite() {
    let s = Server::start();
    // An artifact with the empty `{}` config embedded as `data`, no layers,
    // an artifactType, and a subject that does not exist (yet).
    let empty = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
    let ghost = Digest::sha256_of(b"a manifest pushed later, if ever");
    let artifact = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2, "data": "e30="},
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": ghost.to_string(), "size": 123},
        "annotations": {"org.example.format": "json"},
    }))
    .unwrap();
    let r = s.push_manifest(
        "edge",
        &Digest::sha256_of(&artifact).to_string(),
        OCI_MANIFEST,
        &artifact,
    );
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().unwrap());
    // (re-push to read the headers)
    let r = s.push_manifest(
        "edge",
        &Digest::sha256_of(&artifact).to_string(),
        OCI_MANIFEST,
        &artifact,
    );
    assert_eq!(header(&r, "oci-subject"), Some(ghost.to_string()));

    // A nested index: index -> index -> manifest.
    let cfg = s.push_blob("edge", b"{}");
    let image = image_manifest(&cfg, 2, &[]);
    let image_d = Digest::sha256_of(&image);
    assert_eq!(
        s.push_manifest("edge", &image_d.to_string(), OCI_MANIFEST, &image)
            .status(),
        StatusCode::CREATED
    );
    let inner = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": image_d.to_string(), "size": image.len(),
                       "platform": {"os": "wasip1", "architecture": "wasm"}}],
    }))
    .unwrap();
    let inner_d = Digest::sha256_of(&inner);
    assert_eq!(
        s.push_manifest("edge", &inner_d.to_string(), OCI_INDEX, &inner)
            .status(),
        StatusCode::CREATED
    );
    let outer = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_INDEX, "digest": inner_d.to_string(), "size": inner.len()}],
    }))
    .unwrap();
    assert_eq!(
        s.push_manifest("edge", "nested", OCI_INDEX, &outer)
            .status(),
        StatusCode::CREATED
    );
    // An index over a manifest the repository lacks is refused.
    let dangling = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": ghost.to_string(), "size": 1}],
    }))
    .unwrap();
    assert_eq!(
        error_code(s.push_manifest("edge", "dangling", OCI_INDEX, &dangling)),
        "MANIFEST_BLOB_UNKNOWN"
    );
}

#[test]
fn tags_paginate_with_n_last_and_link() {
    let s = Server::start();
    let cfg = s.push_blob("paged", b"{}");
    let body = image_manifest(&cfg, 2, &[]);
    for tag in ["b", "a", "d", "c", "E"] {
        assert_eq!(
            s.push_manifest("paged", tag, OCI_MANIFEST, &body).status(),
            StatusCode::CREATED
        );
    }
    let all: Value = s.get("/v2/paged/tags/list").json().unwrap();
    assert_eq!(
        all,
        json!({"name": "paged", "tags": ["E", "a", "b", "c", "d"]})
    );
    let r = s.get("/v2/paged/tags/list?n=2");
    assert_eq!(
        header(&r, "link").as_deref(),
        Some("</v2/paged/tags/list?n=2&last=a>; rel=\"next\"")
    );
    assert_eq!(r.json::<Value>().unwrap()["tags"], json!(["E", "a"]));
    let r = s.get("/v2/paged/tags/list?n=2&last=a");
    assert_eq!(r.json::<Value>().unwrap()["tags"], json!(["b", "c"]));
    let r = s.get("/v2/paged/tags/list?n=2&last=c");
    assert!(header(&r, "link").is_none(), "no more pages");
    assert_eq!(r.json::<Value>().unwrap()["tags"], json!(["d"]));
    let r = s.get("/v2/paged/tags/list?n=0");
    assert!(header(&r, "link").is_none());
    assert_eq!(r.json::<Value>().unwrap()["tags"], json!([]));
    let r = s.get("/v2/paged/tags/list?last=c");
    assert_eq!(r.json::<Value>().unwrap()["tags"], json!(["d"]));
    let r = s.get("/v2/paged/tags/list?n=99999999999999999999999&last=c");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(header(&r, "link").is_none());
    assert_eq!(r.json::<Value>().unwrap()["tags"], json!(["d"]));
    for bad in ["-1", "two", ""] {
        let r = s.get(&format!("/v2/paged/tags/list?n={bad}"));
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "n={bad}");
    }
    assert_eq!(error_code(s.get("/v2/nowhere/tags/list")), "NAME_UNKNOWN");
}

#[test]
fn referrers_list_and_filter() {
    let s = Server::start();
    let cfg = s.push_blob("refs", b"{}");
    let subject = image_manifest(&cfg, 2, &[]);
    let subject_d = Digest::sha256_of(&subject);
    s.push_manifest("refs", "app", OCI_MANIFEST, &subject);
    let sbom_cfg = s.push_blob("refs", b"{\"sbom\":true}");
    for (artifact_type, cfg, cfg_len, annotation) in [
        (Some("application/vnd.example.sbom.v1"), &cfg, 2, "one"),
        (None, &sbom_cfg, 13, "two"),
    ] {
        let mut m = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.example.config.v1+json", "digest": cfg.to_string(), "size": cfg_len},
            "layers": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject_d.to_string(), "size": subject.len()},
            "annotations": {"note": annotation},
        });
        if let Some(t) = artifact_type {
            m["artifactType"] = json!(t);
        }
        let body = serde_json::to_vec(&m).unwrap();
        let r = s.push_manifest(
            "refs",
            &Digest::sha256_of(&body).to_string(),
            OCI_MANIFEST,
            &body,
        );
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = s.get(&format!("/v2/refs/referrers/{subject_d}"));
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type").as_deref(), Some(OCI_INDEX));
    let index: Value = r.json().unwrap();
    let mut found: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["artifactType"].as_str().unwrap().to_string(),
                d["annotations"]["note"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    found.sort();
    // Without an artifactType of its own, a referrer is typed by its config.
    assert_eq!(
        found,
        [
            (
                "application/vnd.example.config.v1+json".to_string(),
                "two".to_string()
            ),
            (
                "application/vnd.example.sbom.v1".to_string(),
                "one".to_string()
            ),
        ]
    );

    let r = s.get(&format!(
        "/v2/refs/referrers/{subject_d}?artifactType=application/vnd.example.sbom.v1"
    ));
    assert_eq!(
        header(&r, "oci-filters-applied").as_deref(),
        Some("artifactType")
    );
    assert_eq!(
        r.json::<Value>().unwrap()["manifests"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Nothing refers to it, or the repository does not exist: an empty list,
    // never a 404 (a 404 would send clients to the fallback tag scheme).
    let other = Digest::sha256_of(b"lonely");
    let r = s.get(&format!("/v2/nowhere/referrers/{other}"));
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().unwrap()["manifests"], json!([]));
    assert_eq!(
        s.get("/v2/refs/referrers/sha256:zz").status(),
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn deletes_are_visible_at_once() {
    let s = Server::start();
    let cfg = s.push_blob("del", b"{}");
    let body = image_manifest(&cfg, 2, &[]);
    let d = Digest::sha256_of(&body);
    s.push_manifest("del", "one", OCI_MANIFEST, &body);
    s.push_manifest("del", "two", OCI_MANIFEST, &body);
    // By tag: only the tag goes.
    assert_eq!(
        s.client
            .delete(s.url("/v2/del/manifests/one"))
            .send()
            .unwrap()
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        s.get("/v2/del/manifests/one").status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(s.get("/v2/del/manifests/two").status(), StatusCode::OK);
    // By digest: the manifest and every tag pointing at it.
    assert_eq!(
        s.client
            .delete(s.url(&format!("/v2/del/manifests/{d}")))
            .send()
            .unwrap()
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        error_code(s.get("/v2/del/manifests/two")),
        "MANIFEST_UNKNOWN"
    );
    assert_eq!(
        s.get(&format!("/v2/del/manifests/{d}")).status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.client
            .delete(s.url(&format!("/v2/del/manifests/{d}")))
            .send()
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    // An image an index lists stays until the index is deleted.
    s.push_manifest("del", "child", OCI_MANIFEST, &body);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": body.len()}]
    }))
    .unwrap();
    let index_digest = Digest::sha256_of(&index);
    assert_eq!(
        s.push_manifest("del", "multi", OCI_INDEX, &index).status(),
        StatusCode::CREATED
    );
    let delete = |what: &Digest| {
        s.client
            .delete(s.url(&format!("/v2/del/manifests/{what}")))
            .send()
            .unwrap()
    };
    let r = delete(&d);
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(r), "DENIED");
    assert_eq!(
        s.get(&format!("/v2/del/manifests/{d}")).status(),
        StatusCode::OK
    );
    assert_eq!(delete(&index_digest).status(), StatusCode::ACCEPTED);
    assert_eq!(delete(&d).status(), StatusCode::ACCEPTED);
    // Blobs.
    assert_eq!(
        s.client
            .delete(s.url(&format!("/v2/del/blobs/{cfg}")))
            .send()
            .unwrap()
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        error_code(s.get(&format!("/v2/del/blobs/{cfg}"))),
        "BLOB_UNKNOWN"
    );
    assert_eq!(
        s.client
            .delete(s.url(&format!("/v2/del/blobs/{cfg}")))
            .send()
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
}

/// Sends one request as written, without a client normalising its path.
fn raw_request(s: &Server, request_line: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        conn,
        "{request_line} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    let status = reply.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn names_and_references_are_validated() {
    let s = Server::start();
    for request in [
        "GET /v2/a/../b/tags/list",
        "GET /v2/UPPER/tags/list",
        "GET /v2/a//b/tags/list",
        "GET /v2/a%2F..%2Fb/tags/list",
        "GET /v2/a%aé/tags/list",
        "POST /v2/a/../b/blobs/uploads/",
        "GET /v2/../../etc/passwd/blobs/sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    ] {
        let (status, body) = raw_request(&s, request);
        assert_eq!(status, 400, "{request}: {body}");
        assert!(body.contains("NAME_INVALID"), "{request}: {body}");
    }
    assert_eq!(
        s.get("/v2/nothing-here/manifests/latest").status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        error_code(s.get("/v2/nothing-here/manifests/latest")),
        "NAME_UNKNOWN"
    );
    assert_eq!(
        s.get("/v2/x/unknown-endpoint").status(),
        StatusCode::NOT_FOUND
    );
    // Nothing was created by the refused requests.
    let repos: Value = {
        let (status, _) = raw_request(&s, "GET /v2/b/tags/list");
        json!(status)
    };
    assert_eq!(repos, json!(404), "no repository b was created");
}

#[test]
fn a_truncated_body_stores_nothing() {
    use std::io::{Read, Write};
    let s = Server::start();
    let data = vec![7u8; 100_000];
    let digest = Digest::sha256_of(&data);
    // Announce 100000 bytes, send 1000, hang up.
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        conn,
        "POST /v2/cut/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100000\r\n\r\n"
    )
    .unwrap();
    conn.write_all(&data[..1000]).unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    let _ = conn.read_to_end(&mut reply);
    assert_eq!(
        s.get(&format!("/v2/cut/blobs/{digest}")).status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(s.uploads_on_disk(), 0, "the partial upload was removed");
}

#[test]
fn a_restart_keeps_what_was_committed_and_drops_half_uploads() {
    let s = Server::start();
    let d = s.push_blob("durable", b"kept");
    let r = s
        .client
        .post(s.url("/v2/durable/blobs/uploads/"))
        .send()
        .unwrap();
    let loc = location(&r);
    s.client
        .patch(s.url(&loc))
        .body(b"half of it".to_vec())
        .send()
        .unwrap();
    let s = s.restart();
    assert_eq!(
        s.get(&format!("/v2/durable/blobs/{d}"))
            .bytes()
            .unwrap()
            .as_ref(),
        b"kept"
    );
    assert_eq!(
        s.get(&loc).status(),
        StatusCode::NOT_FOUND,
        "uploads do not survive a restart"
    );
    assert_eq!(s.uploads_on_disk(), 0);
}

#[test]
fn concurrent_pushes_of_one_blob_and_tag_are_safe() {
    let s = Server::start();
    let data = vec![42u8; 300_000];
    let cfg = s.push_blob("race", b"{}");
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (base, client) = (s.base.clone(), s.client.clone());
            let data = data.clone();
            let cfg = cfg.clone();
            std::thread::spawn(move || {
                let digest = Digest::sha256_of(&data);
                let r = client
                    .post(format!("{base}/v2/race/blobs/uploads/?digest={digest}"))
                    .body(data.clone())
                    .send()
                    .unwrap();
                assert_eq!(r.status(), StatusCode::CREATED);
                let body = image_manifest(&cfg, 2, &[(&digest, data.len())]);
                let mut body: Value = serde_json::from_slice(&body).unwrap();
                body["annotations"] = json!({"writer": i.to_string()});
                let r = client
                    .put(format!("{base}/v2/race/manifests/latest"))
                    .header("content-type", OCI_MANIFEST)
                    .body(serde_json::to_vec(&body).unwrap())
                    .send()
                    .unwrap();
                assert_eq!(r.status(), StatusCode::CREATED);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // One of the writers won the tag; what it points to is whole.
    let r = s.get("/v2/race/manifests/latest");
    assert_eq!(r.status(), StatusCode::OK);
    let m: Value = r.json().unwrap();
    let layer: Digest = m["layers"][0]["digest"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        s.get(&format!("/v2/race/blobs/{layer}"))
            .bytes()
            .unwrap()
            .len(),
        data.len()
    );
}

#[test]
fn garbage_collection_keeps_what_is_referenced() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir, |c| c.gc_grace = Duration::ZERO);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cfg = s.push_blob("gc", b"{}");
    let layer = s.push_blob("gc", b"layer bytes");
    let stray = s.push_blob("gc", b"uploaded, never referenced");
    let body = image_manifest(&cfg, 2, &[(&layer, 11)]);
    let d = Digest::sha256_of(&body);
    s.push_manifest("gc", "v1", OCI_MANIFEST, &body);
    std::thread::sleep(Duration::from_millis(1100)); // links age past a zero grace at 1 s resolution
    let report = rt.block_on(s.registry.collect_garbage()).unwrap();
    assert_eq!(report.blobs_removed, 1, "{report:?}");
    assert_eq!(
        s.get(&format!("/v2/gc/blobs/{stray}")).status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get(&format!("/v2/gc/blobs/{layer}")).status(),
        StatusCode::OK
    );
    assert_eq!(s.get("/v2/gc/manifests/v1").status(), StatusCode::OK);

    // Once the manifest goes, so do its blobs.
    s.client
        .delete(s.url(&format!("/v2/gc/manifests/{d}")))
        .send()
        .unwrap();
    // The delete wakes the server's own collector: the config, the layer,
    // and the manifest's own bytes go without anyone asking.
    eventually("every blob file to be collected", || {
        skiff_files(&s.dir.path().join("registry/blobs")) == 0
    });
    let report = rt.block_on(s.registry.collect_garbage()).unwrap();
    assert_eq!(report.blobs_removed, 0, "{report:?}");
}

fn skiff_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.path().is_dir() {
            n += skiff_files(&entry.path());
        } else {
            n += 1;
        }
    }
    n
}
