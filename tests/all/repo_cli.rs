//! `skiff registry --auth`, `skiff registry token`, `skiff login` and
//! `skiff repo ...` against a real `skiff registry` process: what an ECR
//! user does with the `aws ecr` commands, done with skiff's own.

use crate::support::*;
use std::time::{Duration, Instant};

fn stdin_token(data: &std::path::Path) -> String {
    let out = skiff(["registry", "token", "--ttl", "1h"])
        .data_dir(data)
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("valid until"), "{}", out.stderr);
    out.stdout.trim().to_string()
}

#[test]
fn tokens_gate_a_registry_and_login_opens_it() {
    let registry_data = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start_with(registry_data.path(), &["--auth", "all"]);
    let local = tempfile::tempdir().unwrap();
    let reference = format!("{}/locked/hello:v1", registry.addr);

    // Nothing without credentials.
    let out = skiff(["push", app("HELLO_P2"), &reference])
        .data_dir(local.path())
        .run();
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.to_lowercase().contains("auth") || out.stderr.contains("401"),
        "{}",
        out.stderr
    );

    // A token issued while the registry serves, from another process.
    let token = stdin_token(registry_data.path());
    let out = skiff(["login", &registry.addr, "-u", "AWS", "--password-stdin"])
        .data_dir(local.path())
        .stdin(b"not-the-token\n")
        .run();
    assert_ne!(out.code, 0, "a wrong token is refused at login");
    assert!(!local.path().join("auth.json").exists());
    let out = skiff(["login", &registry.addr, "-u", "AWS", "--password-stdin"])
        .data_dir(local.path())
        .stdin(format!("{token}\n").as_bytes())
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "Login Succeeded");

    let out = skiff(["push", app("HELLO_P2"), &reference])
        .data_dir(local.path())
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = skiff(["run", &reference]).data_dir(local.path()).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout_lines()[0], "Hello, world!");

    // Revoked: the saved login stops working.
    let out = skiff(["registry", "revoke-tokens"])
        .data_dir(registry_data.path())
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = skiff(["pull", &reference]).data_dir(local.path()).run();
    assert_ne!(out.code, 0);

    // Bad flags are one-line usage errors.
    skiff(["registry", "token", "--ttl", "soon"])
        .data_dir(registry_data.path())
        .run()
        .assert_one_line_error(2, "--ttl");
    skiff(["registry", "--auth", "everyone"])
        .data_dir(registry_data.path())
        .run()
        .assert_one_line_error(2, "everyone");
    // A challenge with nothing to challenge is refused, not ignored.
    skiff(["registry", "--auth-challenge", "basic"])
        .data_dir(registry_data.path())
        .run()
        .assert_one_line_error(2, "--auth-challenge needs --auth");
}

/// Runs `skiff repo ARGS` against `data`, expecting success.
fn repo(data: &std::path::Path, args: &[&str]) -> String {
    let out = skiff(["repo"].iter().chain(args)).data_dir(data).run();
    assert_eq!(out.code, 0, "skiff repo {args:?}: {}", out.stderr);
    out.stdout
}

#[test]
fn repo_commands_manage_repositories_policies_and_scans() {
    let data = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(data.path());
    let local = tempfile::tempdir().unwrap();
    let at = |tag: &str| format!("{}/team/app:{tag}", registry.addr);
    let push = |file: &str, tag: &str| skiff(["push", file, &at(tag)]).data_dir(local.path()).run();

    repo(
        data.path(),
        &[
            "create",
            "team/app",
            "--tag-mutability",
            "IMMUTABLE_WITH_EXCLUSION",
            "--exclude",
            "dev-*",
            "--scan-on-push",
        ],
    );
    let listed = repo(data.path(), &["ls"]);
    let row = listed.lines().find(|l| l.starts_with("team/app")).unwrap();
    assert!(
        row.contains("IMMUTABLE_WITH_EXCLUSION (dev-*)") && row.contains("yes"),
        "{row}"
    );

    assert_eq!(push(app("HELLO_P2"), "v1").code, 0);
    let moved = push(app("HELLO_P1"), "v1");
    assert_ne!(moved.code, 0);
    assert!(moved.stderr.contains("TAG_INVALID"), "{}", moved.stderr);
    assert_eq!(push(app("HELLO_P1"), "dev-1").code, 0);
    assert_eq!(push(app("HELLO_P2"), "dev-1").code, 0, "dev-* moves");

    // The scan the push started finishes and says what it found.
    let deadline = Instant::now() + Duration::from_secs(30);
    let findings = loop {
        let out = skiff(["repo", "findings", "team/app", "v1"])
            .data_dir(data.path())
            .run();
        if out.code == 0 && out.stdout.contains("COMPLETE") {
            break out.stdout;
        }
        assert!(
            Instant::now() < deadline,
            "no finished scan: {}{}",
            out.stdout,
            out.stderr
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(findings.contains("WASM-SUMMARY"), "{findings}");
    let json = repo(data.path(), &["scan", "team/app", "v1", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["imageScanStatus"]["status"], "COMPLETE");
    assert_eq!(report["wasm"]["kind"], "component");
    let images = repo(data.path(), &["images", "team/app"]);
    assert!(
        images.contains("application/vnd.skiff.scan.report.v1+json →"),
        "{images}"
    );

    // A policy from stdin; preview, then apply.
    let policy = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","tagPrefixList":["dev"],"countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}},{"rulePriority":2,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#;
    let out = skiff(["repo", "lifecycle", "put", "team/app", "-"])
        .data_dir(data.path())
        .stdin(policy.as_bytes())
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        repo(data.path(), &["lifecycle", "get", "team/app"]).trim(),
        policy
    );
    // Two images tagged dev-*: the policy keeps the newer.
    assert_eq!(push(app("HELLO_P1"), "dev-2").code, 0);
    let preview = repo(data.path(), &["lifecycle", "preview", "team/app"]);
    let expiring: Vec<&str> = preview.lines().skip(1).collect();
    assert_eq!(expiring.len(), 1, "{preview}");
    let before = repo(data.path(), &["images", "team/app"]);
    let applied = repo(data.path(), &["lifecycle", "apply", "team/app"]);
    assert!(applied.contains(expiring[0]), "{applied}");
    assert!(
        applied.contains("the running registry will free their blobs"),
        "{applied}"
    );
    let after = repo(data.path(), &["images", "team/app"]);
    assert!(
        after.lines().count() < before.lines().count(),
        "{before}\n{after}"
    );

    // Mistakes name the problem; nothing changes.
    let bad = skiff(["repo", "lifecycle", "put", "team/app", "-"])
        .data_dir(data.path())
        .stdin(br#"{"rules":[{"rulePriority":1}]}"#)
        .run();
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("lifecycle policy"), "{}", bad.stderr);
    assert_eq!(
        repo(data.path(), &["lifecycle", "get", "team/app"]).trim(),
        policy
    );
    let bad = skiff(["repo", "create", "Team/App"])
        .data_dir(data.path())
        .run();
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("invalid repository name"),
        "{}",
        bad.stderr
    );
    skiff(["repo", "create", "x", "--tag-mutability", "SOMETIMES"])
        .data_dir(data.path())
        .run()
        .assert_one_line_error(2, "SOMETIMES");
    let bad = skiff(["repo", "rm", "team/app"])
        .data_dir(data.path())
        .run();
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("still has images"), "{}", bad.stderr);

    repo(data.path(), &["rm", "team/app", "--force"]);
    assert!(!repo(data.path(), &["ls"]).contains("team/app"));
    let gone = skiff(["pull", &at("v1")]).data_dir(local.path()).run();
    assert_ne!(gone.code, 0);
}
