//! ECR's image and layer API through the AWS CLI: retagging as AWS's
//! documentation shows it (batch-get-image, then put-image with the
//! manifest), and a layer pushed by the API's upload calls.

use crate::support::{ServeProcess, sha256};
use serde_json::json;

#[test]
fn retag_with_the_cli_and_upload_layers_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.aws_ok(&[
        "ecr",
        "create-repository",
        "--repository-name",
        "hello",
        "--image-tag-mutability",
        "IMMUTABLE_WITH_EXCLUSION",
        "--image-tag-mutability-exclusion-filters",
        "filterType=WILDCARD,filter=latest",
    ]);
    serve.push(wasm_apps::app("HELLO_P1"), "hello:v1");

    // AWS's "Retagging an image" with the AWS CLI.
    let manifest = serve.manifest_of("hello", "v1");
    let put = serve.aws_ok(&[
        "ecr",
        "put-image",
        "--repository-name",
        "hello",
        "--image-tag",
        "latest",
        "--image-manifest",
        &manifest,
    ]);
    let digest = put["image"]["imageId"]["imageDigest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(digest, sha256(manifest.as_bytes()));
    let d = serve.aws_ok(&["ecr", "describe-images", "--repository-name", "hello"]);
    let mut tags: Vec<&str> = d["imageDetails"][0]["imageTags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    tags.sort();
    assert_eq!(tags, ["latest", "v1"]);
    // The same again: ECR's ImageAlreadyExistsException.
    serve.aws_err(
        &[
            "ecr",
            "put-image",
            "--repository-name",
            "hello",
            "--image-tag",
            "latest",
            "--image-manifest",
            &manifest,
        ],
        "ImageAlreadyExistsException",
    );
    // v1 is immutable: moving it is refused, by the registry's own rule.
    let other = serde_json::to_string(&{
        let mut m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
        m["annotations"] = json!({"x": "y"});
        m
    })
    .unwrap();
    serve.aws_err(
        &[
            "ecr",
            "put-image",
            "--repository-name",
            "hello",
            "--image-tag",
            "v1",
            "--image-manifest",
            &other,
        ],
        "ImageTagAlreadyExistsException",
    );
    let got = serve.aws_ok(&[
        "ecr",
        "batch-get-image",
        "--repository-name",
        "hello",
        "--image-ids",
        "imageTag=nope",
        &format!("imageDigest={digest}"),
    ]);
    assert_eq!(got["failures"][0]["failureCode"], "ImageNotFound");
    assert_eq!(got["images"][0]["imageId"]["imageDigest"], digest.as_str());

    // A layer through the upload calls, in two parts.
    let layer: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let layer_digest = sha256(&layer);
    let upload = serve.aws_ok(&["ecr", "initiate-layer-upload", "--repository-name", "hello"]);
    let id = upload["uploadId"].as_str().unwrap().to_string();
    for (first, last) in [(0usize, 1999usize), (2000, 2999)] {
        let part = dir.path().join(format!("part{first}"));
        std::fs::write(&part, &layer[first..=last]).unwrap();
        let r = serve.aws_ok(&[
            "ecr",
            "upload-layer-part",
            "--repository-name",
            "hello",
            "--upload-id",
            &id,
            "--part-first-byte",
            &first.to_string(),
            "--part-last-byte",
            &last.to_string(),
            "--layer-part-blob",
            &format!("fileb://{}", part.display()),
        ]);
        assert_eq!(r["lastByteReceived"], last);
    }
    let done = serve.aws_ok(&[
        "ecr",
        "complete-layer-upload",
        "--repository-name",
        "hello",
        "--upload-id",
        &id,
        "--layer-digests",
        &layer_digest,
    ]);
    assert_eq!(done["layerDigest"], layer_digest.as_str());
    let check = serve.aws_ok(&[
        "ecr",
        "batch-check-layer-availability",
        "--repository-name",
        "hello",
        "--layer-digests",
        &layer_digest,
        &format!("sha256:{}", "0".repeat(64)),
    ]);
    assert_eq!(check["layers"][0]["layerAvailability"], "AVAILABLE");
    assert_eq!(check["layers"][0]["layerSize"], 3000);
    assert_eq!(check["failures"][0]["failureCode"], "MissingLayerDigest");
    let url = serve.aws_ok(&[
        "ecr",
        "get-download-url-for-layer",
        "--repository-name",
        "hello",
        "--layer-digest",
        &layer_digest,
    ]);
    let url = url["downloadUrl"].as_str().unwrap().to_string();
    let out = std::process::Command::new("curl")
        .args(["-sf", &url])
        .output()
        .unwrap();
    assert_eq!(out.stdout, layer, "{url}");

    // A wrong digest fails the upload, and nothing is left behind.
    let upload = serve.aws_ok(&["ecr", "initiate-layer-upload", "--repository-name", "hello"]);
    let id = upload["uploadId"].as_str().unwrap().to_string();
    let part = dir.path().join("bad");
    std::fs::write(&part, b"abc").unwrap();
    serve.aws_ok(&[
        "ecr",
        "upload-layer-part",
        "--repository-name",
        "hello",
        "--upload-id",
        &id,
        "--part-first-byte",
        "0",
        "--part-last-byte",
        "2",
        "--layer-part-blob",
        &format!("fileb://{}", part.display()),
    ]);
    serve.aws_err(
        &[
            "ecr",
            "complete-layer-upload",
            "--repository-name",
            "hello",
            "--upload-id",
            &id,
            "--layer-digests",
            &format!("sha256:{}", "1".repeat(64)),
        ],
        "InvalidLayerException",
    );
    serve.aws_err(
        &[
            "ecr",
            "batch-get-image",
            "--repository-name",
            "nope",
            "--image-ids",
            "imageTag=v1",
        ],
        "RepositoryNotFoundException",
    );
}

#[test]
fn tags_policies_and_registry_scanning() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    let repo = serve.aws_ok(&[
        "ecr",
        "create-repository",
        "--repository-name",
        "team/app",
        "--tags",
        "Key=team,Value=web",
    ]);
    let arn = repo["repository"]["repositoryArn"]
        .as_str()
        .unwrap()
        .to_string();
    serve.aws_ok(&[
        "ecr",
        "tag-resource",
        "--resource-arn",
        &arn,
        "--tags",
        "Key=env,Value=lab",
    ]);
    serve.aws_ok(&[
        "ecr",
        "untag-resource",
        "--resource-arn",
        &arn,
        "--tag-keys",
        "team",
    ]);
    let t = serve.aws_ok(&["ecr", "list-tags-for-resource", "--resource-arn", &arn]);
    assert_eq!(t["tags"], json!([{"Key": "env", "Value": "lab"}]));

    let policy = r#"{"Version":"2012-10-17","Statement":[{"Sid":"pull","Effect":"Allow","Principal":"*","Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer"]}]}"#;
    serve.aws_ok(&[
        "ecr",
        "set-repository-policy",
        "--repository-name",
        "team/app",
        "--policy-text",
        policy,
    ]);
    let got = serve.aws_ok(&[
        "ecr",
        "get-repository-policy",
        "--repository-name",
        "team/app",
    ]);
    assert_eq!(got["policyText"], policy);
    let e = serve.aws_err(
        &[
            "ecr",
            "set-repository-policy",
            "--repository-name",
            "team/app",
            "--policy-text",
            r#"{"Statement":[{"Effect":"Maybe"}]}"#,
        ],
        "InvalidParameterException",
    );
    assert!(e.contains("Invalid repository policy"), "{e}");
    serve.aws_ok(&[
        "ecr",
        "delete-repository-policy",
        "--repository-name",
        "team/app",
    ]);
    serve.aws_err(
        &[
            "ecr",
            "get-repository-policy",
            "--repository-name",
            "team/app",
        ],
        "RepositoryPolicyNotFoundException",
    );
    serve.aws_ok(&["ecr", "put-registry-policy", "--policy-text", policy]);
    assert_eq!(
        serve.aws_ok(&["ecr", "get-registry-policy"])["policyText"],
        policy
    );
    assert_eq!(
        serve.aws_ok(&["ecr", "describe-registry"])["replicationConfiguration"]["rules"],
        json!([])
    );

    // Scan-on-push rules reach the repositories they match, and new ones.
    serve.aws_ok(&[
        "ecr",
        "put-registry-scanning-configuration",
        "--scan-type",
        "BASIC",
        "--rules",
        "scanFrequency=SCAN_ON_PUSH,repositoryFilters=[{filter=team/*,filterType=WILDCARD}]",
    ]);
    serve.aws_ok(&["ecr", "create-repository", "--repository-name", "team/api"]);
    serve.aws_ok(&["ecr", "create-repository", "--repository-name", "other"]);
    let c = serve.aws_ok(&[
        "ecr",
        "batch-get-repository-scanning-configuration",
        "--repository-names",
        "team/app",
        "team/api",
        "other",
    ]);
    let on: Vec<bool> = c["scanningConfigurations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["scanOnPush"].as_bool().unwrap())
        .collect();
    assert_eq!(on, [true, true, false]);
    let e = serve.aws_err(
        &[
            "ecr",
            "put-registry-scanning-configuration",
            "--scan-type",
            "ENHANCED",
        ],
        "InvalidParameterException",
    );
    assert!(e.contains("Inspector"), "{e}");

    // A deleted repository's tags go with it.
    serve.aws_ok(&["ecr", "delete-repository", "--repository-name", "team/app"]);
    serve.aws_ok(&["ecr", "create-repository", "--repository-name", "team/app"]);
    let t = serve.aws_ok(&["ecr", "list-tags-for-resource", "--resource-arn", &arn]);
    assert_eq!(t["tags"], json!([]));
}

/// `skiff serve` with credentials protects its registry too, on loopback
/// as well: pushes and pulls need a token from GetAuthorizationToken.
#[test]
fn a_serve_with_credentials_protects_its_registry() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start_with(
        dir.path(),
        &[
            "--access-key-id",
            "AKIDSKIFF",
            "--secret-access-key",
            "s3cret",
        ],
    );
    let stranger = tempfile::tempdir().unwrap();
    let out = crate::support::skiff([
        "push",
        wasm_apps::app("HELLO_P1"),
        &format!("{}/hello:v1", serve.registry),
    ])
    .data_dir(stranger.path())
    .run();
    assert_ne!(out.code, 0, "an anonymous push was accepted");
    assert!(out.stderr.to_lowercase().contains("auth"), "{}", out.stderr);
    let anonymous = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{}/v2/hello/tags/list", serve.registry))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "401");
    // The ECR way in: get-login-password, then push and run.
    serve.push(wasm_apps::app("HELLO_P1"), "hello:v1");
    serve.register_task_definition(
        dir.path(),
        &json!({"family": "hello", "containerDefinitions": [
            {"name": "app", "image": "hello:v1", "memory": 32, "essential": true}]}),
    );
    let run = serve.aws_ok(&["ecs", "run-task", "--task-definition", "hello"]);
    let task = run["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    serve.aws_ok(&["ecs", "wait", "tasks-stopped", "--tasks", &task]);
    let t = serve.aws_ok(&["ecs", "describe-tasks", "--tasks", &task]);
    assert_eq!(t["tasks"][0]["containers"][0]["exitCode"], 0, "{t}");
}

#[test]
fn account_settings_referrers_and_replication_status() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.aws_ok(&["ecr", "create-repository", "--repository-name", "hello"]);
    serve.push(wasm_apps::app("HELLO_P1"), "hello:v1");
    let s = serve.aws_ok(&[
        "ecr",
        "get-account-setting",
        "--name",
        "REGISTRY_POLICY_SCOPE",
    ]);
    assert_eq!(s["value"], "V2");
    serve.aws_ok(&[
        "ecr",
        "put-account-setting",
        "--name",
        "REGISTRY_POLICY_SCOPE",
        "--value",
        "V1",
    ]);
    assert_eq!(
        serve.aws_ok(&[
            "ecr",
            "get-account-setting",
            "--name",
            "REGISTRY_POLICY_SCOPE"
        ])["value"],
        "V1"
    );
    let e = serve.aws_err(
        &[
            "ecr",
            "put-account-setting",
            "--name",
            "BASIC_SCAN_TYPE_VERSION",
            "--value",
            "CLAIR",
        ],
        "InvalidParameterException",
    );
    assert!(e.contains("no Clair"), "{e}");
    let digest =
        serve.aws_ok(&["ecr", "describe-images", "--repository-name", "hello"])["imageDetails"][0]
            ["imageDigest"]
            .as_str()
            .unwrap()
            .to_string();
    let r = serve.aws_ok(&[
        "ecr",
        "list-image-referrers",
        "--repository-name",
        "hello",
        "--subject-id",
        &format!("imageDigest={digest}"),
    ]);
    assert_eq!(r["referrers"], json!([]));
    let st = serve.aws_ok(&[
        "ecr",
        "describe-image-replication-status",
        "--repository-name",
        "hello",
        "--image-id",
        "imageTag=v1",
    ]);
    assert_eq!(st["replicationStatuses"], json!([]));
    serve.aws_err(
        &[
            "ecr",
            "describe-image-replication-status",
            "--repository-name",
            "hello",
            "--image-id",
            "imageTag=v9",
        ],
        "ImageNotFoundException",
    );
}

#[test]
fn image_ids_no_registry_can_hold_are_refused_naming_the_member() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.push(wasm_apps::app("HELLO_P1"), "hello:v1");
    let manifest = serve.manifest_of("hello", "v1");
    for bad in ["bad tag!", "a/b", &"x".repeat(200)] {
        let e = serve.aws_err(
            &[
                "ecr",
                "put-image",
                "--repository-name",
                "hello",
                "--image-tag",
                bad,
                "--image-manifest",
                &manifest,
            ],
            "InvalidParameterException",
        );
        assert!(e.contains("'imageTag'"), "{e}");
        let g = serve.aws_ok(&[
            "ecr",
            "batch-get-image",
            "--repository-name",
            "hello",
            "--image-ids",
            &format!("imageTag={bad}"),
        ]);
        assert_eq!(g["failures"][0]["failureCode"], "InvalidImageTag", "{g}");
    }
    serve.aws_err(
        &[
            "ecr",
            "describe-image-replication-status",
            "--repository-name",
            "hello",
            "--image-id",
            "imageTag=bad tag!",
        ],
        "InvalidParameterException",
    );
    // A tag and a digest of different images name no image.
    serve.aws_err(
        &[
            "ecr",
            "describe-image-replication-status",
            "--repository-name",
            "hello",
            "--image-id",
            &format!("imageTag=v1,imageDigest=sha256:{}", "0".repeat(64)),
        ],
        "ImageNotFoundException",
    );
}
