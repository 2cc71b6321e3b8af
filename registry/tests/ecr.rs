//! ECR's behaviour on top of the distribution API, over HTTP: tag
//! immutability, scan on push with its referrer, lifecycle policies with
//! online garbage collection, and authentication (Basic `AWS:<token>` and
//! the bearer-token flow).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use skiff_registry::repos::{RepositorySettings, TagMutability};
use skiff_registry::scan::{SCAN_REPORT_TYPE, ScanReport, ScanStatus, Severity};
use skiff_registry::{AdminError, AuthMode, ChallengeKind, Digest};
use std::time::Duration;

const CONFIG: &[u8] = br#"{"architecture":"wasm","os":"wasip1"}"#;

fn module(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).unwrap()
}

fn command(n: u32) -> Vec<u8> {
    // A distinct valid command per n.
    module(&format!(
        r#"(module (func (export "_start")) (global i32 (i32.const {n})))"#
    ))
}

fn tag_digest(s: &Server, repo: &str, tag: &str) -> Option<String> {
    let r = s
        .client
        .head(s.url(&format!("/v2/{repo}/manifests/{tag}")))
        .send()
        .unwrap();
    (r.status() == StatusCode::OK).then(|| header(&r, "docker-content-digest").unwrap())
}

#[test]
fn immutable_tags_refuse_to_move_except_where_excluded() {
    let s = Server::start();
    s.registry
        .create_repository(
            "app",
            &RepositorySettings {
                tag_mutability: TagMutability::ImmutableWithExclusion,
                mutability_filters: vec!["latest".into(), "dev-*".into()],
                scan_on_push: false,
            },
        )
        .unwrap();
    let a = push_wasm(&s, "app", Some("v1"), &command(1), CONFIG);
    // The same image under the same tag again is no move.
    push_wasm(&s, "app", Some("v1"), &command(1), CONFIG);

    // Moving v1 is refused with ECR's code, and nothing changes.
    let layer = s.push_blob("app", &command(2));
    let c = s.push_blob("app", CONFIG);
    let other = image_manifest(&c, CONFIG.len(), &[(&layer, command(2).len())]);
    let r = s.push_manifest("app", "v1", OCI_MANIFEST, &other);
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().unwrap();
    assert_eq!(body["errors"][0]["code"], "TAG_INVALID");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("immutable"),
        "{body}"
    );
    assert_eq!(tag_digest(&s, "app", "v1"), Some(a.to_string()));
    let other_digest = Digest::sha256_of(&other).to_string();
    assert!(
        s.registry
            .images("app")
            .unwrap()
            .iter()
            .all(|i| i.digest != other_digest),
        "a refused push stores no image"
    );

    // Excluded tags move freely.
    for tag in ["latest", "dev-7"] {
        push_wasm(&s, "app", Some(tag), &command(1), CONFIG);
        let b = push_wasm(&s, "app", Some(tag), &command(3), CONFIG);
        assert_eq!(tag_digest(&s, "app", tag), Some(b.to_string()));
    }

    // MUTABLE_WITH_EXCLUSION turns it around.
    s.registry
        .set_settings(
            "app",
            &RepositorySettings {
                tag_mutability: TagMutability::MutableWithExclusion,
                mutability_filters: vec!["release-*".into()],
                scan_on_push: false,
            },
        )
        .unwrap();
    let b = push_wasm(&s, "app", Some("v1"), &command(4), CONFIG);
    assert_eq!(tag_digest(&s, "app", "v1"), Some(b.to_string()));
    let r1 = push_wasm(&s, "app", Some("release-1"), &command(1), CONFIG);
    let layer = s.push_blob("app", &command(5));
    let moved = image_manifest(&c, CONFIG.len(), &[(&layer, command(5).len())]);
    let r = s.push_manifest("app", "release-1", OCI_MANIFEST, &moved);
    assert_eq!(error_code(r), "TAG_INVALID");
    assert_eq!(tag_digest(&s, "app", "release-1"), Some(r1.to_string()));

    // Settings that do not make sense are refused.
    let err = s
        .registry
        .set_settings(
            "app",
            &RepositorySettings {
                tag_mutability: TagMutability::Immutable,
                mutability_filters: vec!["x".into()],
                scan_on_push: false,
            },
        )
        .unwrap_err();
    assert!(matches!(err, AdminError::InvalidParameter(_)), "{err}");
}

fn findings_of(s: &Server, repo: &str, reference: &str) -> ScanReport {
    let mut report = None;
    eventually("the scan to finish", || {
        match s.registry.scan_findings(repo, reference) {
            Ok(r) if r.image_scan_status.status != ScanStatus::InProgress => {
                report = Some(r);
                true
            }
            _ => false,
        }
    });
    report.unwrap()
}

#[test]
fn scan_on_push_validates_and_attaches_the_report_as_a_referrer() {
    let s = Server::start_in(tempfile::tempdir().unwrap(), |c| {
        c.default_settings.scan_on_push = true;
    });
    // Imports nothing a skiff world provides.
    let bad =
        module(r#"(module (import "env" "launch_missiles" (func)) (func (export "_start")))"#);
    let digest = push_wasm(&s, "scanned", Some("bad"), &bad, CONFIG);
    let report = findings_of(&s, "scanned", "bad");
    assert_eq!(report.image_scan_status.status, ScanStatus::Complete);
    assert_eq!(report.image_digest, digest.to_string());
    let findings = report.image_scan_findings.as_ref().unwrap();
    let unknown = findings
        .findings
        .iter()
        .find(|f| f.name == "WASM-UNKNOWN-IMPORT")
        .expect("an unknown-import finding");
    assert_eq!(unknown.severity, Severity::High);
    assert!(unknown.description.contains("env"), "{unknown:?}");
    assert_eq!(findings.finding_severity_counts[&Severity::High], 1);
    assert_eq!(report.worst(), Some(Severity::High));

    // The same report is a referrer of the image, for any OCI client.
    let r = s.get(&format!(
        "/v2/scanned/referrers/{digest}?artifactType={}",
        SCAN_REPORT_TYPE.replace('+', "%2B")
    ));
    assert_eq!(
        header(&r, "oci-filters-applied").as_deref(),
        Some("artifactType")
    );
    let index: Value = r.json().unwrap();
    let referrers = index["manifests"].as_array().unwrap();
    assert_eq!(referrers.len(), 1, "{index}");
    assert_eq!(referrers[0]["artifactType"], SCAN_REPORT_TYPE);
    let manifest: Value = s
        .get(&format!(
            "/v2/scanned/manifests/{}",
            referrers[0]["digest"].as_str().unwrap()
        ))
        .json()
        .unwrap();
    assert_eq!(manifest["subject"]["digest"], digest.to_string());
    let attached: ScanReport = s
        .get(&format!(
            "/v2/scanned/blobs/{}",
            manifest["layers"][0]["digest"].as_str().unwrap()
        ))
        .json()
        .unwrap();
    assert_eq!(attached, report);

    // A clean command has only its summary; scanning again replaces the
    // referrer rather than adding one.
    let good = push_wasm(&s, "scanned", Some("good"), &command(1), CONFIG);
    let report = findings_of(&s, "scanned", "good");
    let names: Vec<&str> = report
        .image_scan_findings
        .as_ref()
        .unwrap()
        .findings
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(names, ["WASM-SUMMARY"]);
    block_on(s.registry.scan("scanned", "good")).unwrap();
    let index: Value = s
        .get(&format!("/v2/scanned/referrers/{good}"))
        .json()
        .unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1, "{index}");

    // Something that is not Wasm is reported as such, not as a failure of
    // the registry.
    let garbage = push_wasm(
        &s,
        "scanned",
        Some("garbage"),
        b"\0asm\x01\0\0\0\x05garbage",
        CONFIG,
    );
    let report = findings_of(&s, "scanned", &garbage.to_string());
    let worst = &report.image_scan_findings.as_ref().unwrap().findings[0];
    assert_eq!(
        (worst.name.as_str(), worst.severity),
        ("WASM-INVALID", Severity::Critical)
    );

    // A binary embedded in the manifest (`data`) is scanned too.
    use base64::Engine;
    let embedded = command(7);
    let config = s.push_blob("scanned", CONFIG);
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.wasm.config.v0+json",
                   "digest": config.to_string(), "size": CONFIG.len()},
        "layers": [{"mediaType": "application/wasm",
                    "digest": Digest::sha256_of(&embedded).to_string(),
                    "size": embedded.len(),
                    "data": base64::engine::general_purpose::STANDARD.encode(&embedded)}],
    }))
    .unwrap();
    let r = s.push_manifest("scanned", "embedded", OCI_MANIFEST, &body);
    assert_eq!(r.status(), StatusCode::CREATED);
    let report = findings_of(&s, "scanned", "embedded");
    assert_eq!(
        report.image_scan_status.status,
        ScanStatus::Complete,
        "{report:?}"
    );
    assert_eq!(report.wasm.unwrap().size, embedded.len() as u64);

    // Never scanned, unknown: the errors ECR gives.
    s.registry
        .create_repository("quiet", &RepositorySettings::default())
        .unwrap();
    push_wasm(&s, "quiet", Some("v1"), &command(1), CONFIG);
    assert!(matches!(
        s.registry.scan_findings("quiet", "v1"),
        Err(AdminError::ScanNotFound { .. })
    ));
    assert!(matches!(
        s.registry.scan_findings("quiet", "v9"),
        Err(AdminError::ImageNotFound { .. })
    ));
}

fn blob_file_exists(s: &Server, digest: &Digest) -> bool {
    let hex = digest.to_string();
    let (alg, hex) = hex.split_once(':').unwrap();
    walk(&s.dir.path().join("registry"))
        .iter()
        .any(|p| p.ends_with(hex) && p.to_string_lossy().contains(alg))
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn lifecycle_preview_changes_nothing_and_apply_expires_and_collects() {
    let s = Server::start_in(tempfile::tempdir().unwrap(), |c| {
        c.gc_grace = Duration::ZERO;
        c.default_settings.scan_on_push = true;
    });
    let tagged: Vec<Digest> = (1..=3)
        .map(|n| push_wasm(&s, "svc", Some(&format!("v{n}")), &command(n), CONFIG))
        .collect();
    let untagged = push_wasm(&s, "svc", None, &command(9), CONFIG);
    for d in tagged.iter().chain([&untagged]) {
        findings_of(&s, "svc", &d.to_string());
    }
    assert!(matches!(
        s.registry.lifecycle_preview("svc"),
        Err(AdminError::LifecyclePolicyNotFound(_))
    ));
    let bad = s.registry.put_lifecycle_policy("svc", r#"{"rules":[]}"#);
    assert!(matches!(bad, Err(AdminError::InvalidParameter(_))));
    let policy = json!({"rules": [
        {"rulePriority": 1, "description": "keep one release",
         "selection": {"tagStatus": "tagged", "tagPrefixList": ["v"],
                       "countType": "imageCountMoreThan", "countNumber": 1},
         "action": {"type": "expire"}},
        {"rulePriority": 2,
         "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed",
                       "countUnit": "days", "countNumber": 1},
         "action": {"type": "expire"}},
    ]})
    .to_string();
    s.registry.put_lifecycle_policy("svc", &policy).unwrap();
    assert_eq!(s.registry.lifecycle_policy("svc").unwrap(), policy);

    let before = s.registry.images("svc").unwrap();
    // Four images and one scan report referring to each.
    assert_eq!(before.len(), 8);
    let preview = s.registry.lifecycle_preview("svc").unwrap();
    assert_eq!(preview.len(), 2, "{preview:?}");
    assert!(
        preview
            .iter()
            .all(|e| e.rule_priority == 1 && e.tags.len() == 1)
    );
    assert_eq!(
        s.registry.images("svc").unwrap(),
        before,
        "a preview changes nothing"
    );

    let (expired, gc) = block_on(s.registry.apply_lifecycle("svc")).unwrap();
    assert_eq!(expired, preview);
    assert!(gc.blobs_removed > 0, "{gc:?}");
    let after = s.registry.images("svc").unwrap();
    // The kept release and the untagged image, with their reports.
    assert_eq!(after.len(), 4, "{after:?}");
    for e in &expired {
        let r = s.get(&format!("/v2/svc/manifests/{}", e.digest));
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert!(
            !after
                .iter()
                .any(|i| i.subject.as_deref() == Some(e.digest.as_str()))
        );
        // Its own layer is gone from the disk.
        let n = tagged
            .iter()
            .position(|d| d.to_string() == e.digest)
            .unwrap() as u32
            + 1;
        let layer = Digest::sha256_of(&command(n));
        assert!(!blob_file_exists(&s, &layer));
        assert_eq!(
            error_code(s.get(&format!("/v2/svc/blobs/{layer}"))),
            "BLOB_UNKNOWN"
        );
    }
    // The config all of them shared stays.
    let config = Digest::sha256_of(CONFIG);
    assert_eq!(
        s.get(&format!("/v2/svc/blobs/{config}")).status(),
        StatusCode::OK
    );
    assert_eq!(s.registry.delete_lifecycle_policy("svc").unwrap(), policy);
}

#[test]
fn a_serving_registry_applies_policies_and_collects_garbage_by_itself() {
    let s = Server::start_in(tempfile::tempdir().unwrap(), |c| {
        c.gc_grace = Duration::ZERO;
        c.maintenance_interval = Duration::from_millis(100);
    });
    let old = push_wasm(&s, "auto", Some("a"), &command(1), CONFIG);
    let new = push_wasm(&s, "auto", None, &command(2), CONFIG);
    let policy = json!({"rules": [{"rulePriority": 1,
        "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1},
        "action": {"type": "expire"}}]})
    .to_string();
    s.registry.put_lifecycle_policy("auto", &policy).unwrap();
    let kept = s.registry.lifecycle_preview("auto").unwrap();
    assert_eq!(kept.len(), 1);
    let doomed = kept[0].digest.clone();
    eventually("the policy to be applied", || {
        s.get(&format!("/v2/auto/manifests/{doomed}")).status() == StatusCode::NOT_FOUND
    });
    let survivor = if doomed == old.to_string() {
        &new
    } else {
        &old
    };
    assert_eq!(
        s.get(&format!("/v2/auto/manifests/{survivor}")).status(),
        StatusCode::OK
    );

    // A delete over the API frees the blobs it made garbage.
    s.registry.delete_lifecycle_policy("auto").unwrap();
    let layer = s.push_blob("other", b"only here");
    let c = s.push_blob("other", CONFIG);
    let body = image_manifest(&c, CONFIG.len(), &[(&layer, 9)]);
    assert_eq!(
        s.push_manifest("other", "t", OCI_MANIFEST, &body).status(),
        StatusCode::CREATED
    );
    assert!(blob_file_exists(&s, &layer));
    let digest = Digest::sha256_of(&body);
    let r = s
        .client
        .delete(s.url(&format!("/v2/other/manifests/{digest}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    eventually("the layer to be collected", || {
        !blob_file_exists(&s, &layer)
    });
}

#[test]
fn repositories_are_managed_as_on_ecr() {
    let s = Server::start_in(tempfile::tempdir().unwrap(), |c| c.create_on_push = false);
    // Not created on push.
    let r = s
        .client
        .post(s.url("/v2/nope/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(error_code(r), "NAME_UNKNOWN");
    let created = s
        .registry
        .create_repository("team/app", &RepositorySettings::default())
        .unwrap();
    assert_eq!(created.settings.tag_mutability, TagMutability::Mutable);
    assert!(!created.settings.scan_on_push);
    assert!(matches!(
        s.registry
            .create_repository("team/app", &RepositorySettings::default()),
        Err(AdminError::RepositoryAlreadyExists(_))
    ));
    assert!(matches!(
        s.registry
            .create_repository("Team/../App", &RepositorySettings::default()),
        Err(AdminError::InvalidParameter(_))
    ));
    push_wasm(&s, "team/app", Some("v1"), &command(1), CONFIG);
    let names: Vec<String> = s
        .registry
        .repositories()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["team/app"]);
    let err = block_on(s.registry.delete_repository("team/app", false)).unwrap_err();
    assert!(matches!(err, AdminError::RepositoryNotEmpty(_)), "{err}");
    block_on(s.registry.delete_repository("team/app", true)).unwrap();
    assert_eq!(error_code(s.get("/v2/team/app/tags/list")), "NAME_UNKNOWN");
    assert!(matches!(
        block_on(s.registry.delete_repository("team/app", true)),
        Err(AdminError::RepositoryNotFound(_))
    ));
}

fn challenge(r: &reqwest::blocking::Response) -> String {
    header(r, "www-authenticate").expect("a WWW-Authenticate challenge")
}

#[test]
fn bearer_flow_challenges_with_scope_and_honours_it() {
    let s = Server::start_in(tempfile::tempdir().unwrap(), |c| c.auth = AuthMode::All);
    let token = s.registry.issue_token(Duration::from_secs(3600)).unwrap();
    let host = s.base.trim_start_matches("http://");

    let r = s.get("/v2/");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge(&r),
        format!("Bearer realm=\"http://{host}/v2/token\",service=\"skiff-registry\"")
    );
    let r = s.get("/v2/app/tags/list");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        challenge(&r).ends_with(",scope=\"repository:app:pull\""),
        "{}",
        challenge(&r)
    );
    assert_eq!(error_code(r), "UNAUTHORIZED");
    let r = s
        .client
        .post(s.url("/v2/app/blobs/uploads/"))
        .send()
        .unwrap();
    assert!(challenge(&r).ends_with(",scope=\"repository:app:pull,push\""));

    // Anonymous pull is off: no token for nobody.
    let r = s.get("/v2/token?service=skiff-registry&scope=repository:app:pull");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A wrong password neither.
    let r = s
        .client
        .get(s.url("/v2/token?scope=repository:app:pull"))
        .basic_auth("AWS", Some("not-a-token"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let bearer = |scope: &str| -> String {
        let r = s
            .client
            .get(s.url(&format!("/v2/token?service=skiff-registry&scope={scope}")))
            .basic_auth("AWS", Some(&token.token))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().unwrap();
        assert!(body["expires_in"].as_i64().unwrap() <= 15 * 60);
        body["token"].as_str().unwrap().to_string()
    };
    let pull = bearer("repository:app:pull");
    let push = bearer("repository:app:pull,push");

    let r = s
        .client
        .post(s.url("/v2/app/blobs/uploads/"))
        .bearer_auth(&pull)
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "pull does not grant push"
    );
    let r = s
        .client
        .post(s.url(&format!(
            "/v2/app/blobs/uploads/?digest={}",
            Digest::sha256_of(b"hello")
        )))
        .bearer_auth(&push)
        .body("hello")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s
        .client
        .get(s.url(&format!("/v2/app/blobs/{}", Digest::sha256_of(b"hello"))))
        .bearer_auth(&pull)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().unwrap(), "hello");
    // A scoped token cannot mount without `from` (that would search every
    // repository): it gets an upload session instead.
    let r = s
        .client
        .post(s.url(&format!(
            "/v2/app/blobs/uploads/?mount={}",
            Digest::sha256_of(b"hello")
        )))
        .bearer_auth(&push)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // A token for one repository is not a token for another.
    let r = s
        .client
        .get(s.url("/v2/other/tags/list"))
        .bearer_auth(&pull)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A forged token is refused.
    let (signed, signature) = pull.rsplit_once('.').unwrap();
    let flipped = if signature.starts_with('A') { 'B' } else { 'A' };
    let forged = format!("{signed}.{flipped}{}", &signature[1..]);
    let r = s
        .client
        .get(s.url("/v2/app/tags/list"))
        .bearer_auth(forged)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The OAuth2 form post works too (containerd uses it).
    let r = s
        .client
        .post(s.url("/v2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs([
                    ("grant_type", "password"),
                    ("service", "skiff-registry"),
                    ("scope", "repository:app:pull"),
                    ("username", "AWS"),
                    ("password", token.token.as_str()),
                ])
                .finish(),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().unwrap();
    assert!(body["access_token"].is_string());
}

#[test]
fn basic_auth_takes_aws_and_an_unexpired_token() {
    let s = Server::start_in(tempfile::tempdir().unwrap(), |c| {
        c.auth = AuthMode::Push;
        c.challenge = ChallengeKind::Basic;
    });
    let host = s.base.trim_start_matches("http://");
    // Anonymous pull stays on in push mode; pushing needs a token, and
    // `/v2/` says so, as clients expect before they log in.
    assert_eq!(s.get("/v2/").status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(s.get("/v2/app/tags/list")), "NAME_UNKNOWN");
    let r = s
        .client
        .post(s.url("/v2/app/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge(&r),
        format!("Basic realm=\"http://{host}/v2/token\",service=\"skiff-registry\"")
    );

    let token = s.registry.issue_token(Duration::from_secs(3600)).unwrap();
    let upload = |user: &str, password: &str| {
        s.client
            .post(s.url("/v2/app/blobs/uploads/"))
            .basic_auth(user, Some(password))
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(upload("AWS", &token.token), StatusCode::ACCEPTED);
    assert_eq!(upload("someone", &token.token), StatusCode::UNAUTHORIZED);
    assert_eq!(upload("AWS", "guess"), StatusCode::UNAUTHORIZED);
    // ECR's authorizationToken is base64 of exactly that pair.
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.authorization_token())
        .unwrap();
    assert_eq!(decoded, format!("AWS:{}", token.token).into_bytes());

    // A token stops working when it expires...
    let short = s.registry.issue_token(Duration::from_secs(1)).unwrap();
    assert_eq!(upload("AWS", &short.token), StatusCode::ACCEPTED);
    eventually("the token to expire", || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            > short.expires_at
    });
    assert_eq!(upload("AWS", &short.token), StatusCode::UNAUTHORIZED);
    // ...and every token when they are revoked.
    assert!(s.registry.revoke_tokens().unwrap() >= 1);
    assert_eq!(upload("AWS", &token.token), StatusCode::UNAUTHORIZED);
}

#[test]
fn a_directory_is_served_by_one_registry_at_a_time() {
    let s = Server::start();
    let second = skiff_registry::Registry::open(skiff_registry::RegistryConfig::new(
        s.dir.path().join("registry"),
    ))
    .unwrap();
    let err = block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        second.serve(listener, std::future::pending()).await
    })
    .unwrap_err();
    assert!(err.to_string().contains("already serving"), "{err}");
    // Its garbage is the server's to collect.
    let gc = block_on(second.collect_garbage()).unwrap();
    assert!(gc.deferred);
    // Management works from the second process all the same.
    second
        .create_repository("made/elsewhere", &RepositorySettings::default())
        .unwrap();
    assert_eq!(
        s.get("/v2/made/elsewhere/tags/list")
            .json::<Value>()
            .unwrap()["tags"],
        json!([])
    );
}
