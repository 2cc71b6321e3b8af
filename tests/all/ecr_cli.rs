//! `aws ecr` against `skiff serve`: the ECR API on the same endpoint as
//! ECS, managing the registry skiff serves, driven by the real AWS CLI.

use crate::support::{ServeProcess, skiff};
use serde_json::{Value, json};
use wasm_apps::app;

/// `skiff push FILE REGISTRY/REPO:TAG` against the server's registry.
fn push(serve: &ServeProcess, wasm: &str, repo_tag: &str) -> crate::support::Finished {
    skiff(["push", wasm, &format!("{}/{repo_tag}", serve.registry)])
        .data_dir(&serve.data_dir)
        .run()
}

fn tags(detail: &Value) -> Vec<&str> {
    detail["imageTags"]
        .as_array()
        .map(|t| t.iter().map(|t| t.as_str().unwrap()).collect())
        .unwrap_or_default()
}

#[test]
fn the_aws_cli_manages_repositories_images_scans_policies_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());

    let created = serve.aws_ok(&[
        "ecr",
        "create-repository",
        "--repository-name",
        "apps/hello",
        "--image-scanning-configuration",
        "scanOnPush=true",
        "--image-tag-mutability",
        "IMMUTABLE_WITH_EXCLUSION",
        "--image-tag-mutability-exclusion-filters",
        "filterType=WILDCARD,filter=latest",
    ]);
    let repo = &created["repository"];
    assert_eq!(
        repo["repositoryArn"],
        "arn:aws:ecr:eu-west-1:000000000000:repository/apps/hello"
    );
    assert_eq!(repo["registryId"], "000000000000");
    let uri = format!("{}/apps/hello", serve.registry);
    assert_eq!(repo["repositoryUri"], uri.as_str());
    assert_eq!(repo["imageScanningConfiguration"]["scanOnPush"], true);
    serve.aws_err(
        &[
            "ecr",
            "create-repository",
            "--repository-name",
            "apps/hello",
        ],
        "RepositoryAlreadyExistsException",
    );
    serve.aws_err(
        &["ecr", "create-repository", "--repository-name", "Bad..Name"],
        "InvalidParameterException",
    );

    // Pushed with skiff, scanned on push, seen by aws ecr. (One push: a
    // second push of the same file a second later is another manifest,
    // since skiff's artifacts carry their creation time.)
    assert_eq!(push(&serve, app("HELLO_P1"), "apps/hello:v1").code, 0);
    serve.aws_ok(&[
        "ecr",
        "wait",
        "image-scan-complete",
        "--repository-name",
        "apps/hello",
        "--image-id",
        "imageTag=v1",
    ]);
    let described = serve.aws_ok(&[
        "ecr",
        "describe-images",
        "--repository-name",
        "apps/hello",
        "--filter",
        "tagStatus=TAGGED",
    ]);
    let details = described["imageDetails"].as_array().unwrap();
    assert_eq!(details.len(), 1, "{described:#}");
    let first = &details[0];
    assert_eq!(tags(first), ["v1"]);
    assert_eq!(first["imageScanStatus"]["status"], "COMPLETE");
    assert_eq!(
        first["artifactMediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    let first_digest = first["imageDigest"].as_str().unwrap().to_string();
    let findings = serve.aws_ok(&[
        "ecr",
        "describe-image-scan-findings",
        "--repository-name",
        "apps/hello",
        "--image-id",
        "imageTag=v1",
    ]);
    assert_eq!(findings["imageId"]["imageDigest"], first_digest.as_str());
    assert_eq!(
        findings["imageScanFindings"]["findings"][0]["name"],
        "WASM-SUMMARY"
    );

    // Tag immutability: v1 cannot move, latest (excluded) can.
    assert_ne!(push(&serve, app("HELLO_P2"), "apps/hello:v1").code, 0);
    assert_eq!(push(&serve, app("HELLO_P2"), "apps/hello:latest").code, 0);
    let changed = serve.aws_ok(&[
        "ecr",
        "put-image-tag-mutability",
        "--repository-name",
        "apps/hello",
        "--image-tag-mutability",
        "MUTABLE",
    ]);
    assert_eq!(changed["imageTagMutability"], "MUTABLE");
    let listed = serve.aws_ok(&[
        "ecr",
        "list-images",
        "--repository-name",
        "apps/hello",
        "--filter",
        "tagStatus=TAGGED",
    ]);
    assert_eq!(listed["imageIds"].as_array().unwrap().len(), 2);

    // An ECS task runs the image by its repositoryUri.
    let def = json!({"family": "from-ecr", "networkMode": "none",
        "containerDefinitions": [{"name": "app", "image": format!("{uri}:v1"), "memory": 16,
                                  "command": ["--exit", "4"]}]});
    serve.aws_ok(&[
        "ecs",
        "register-task-definition",
        "--cli-input-json",
        &def.to_string(),
    ]);
    let run = serve.aws_ok(&["ecs", "run-task", "--task-definition", "from-ecr"]);
    let arn = run["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    serve.aws_ok(&["ecs", "wait", "tasks-stopped", "--tasks", &arn]);
    let t = &serve.aws_ok(&["ecs", "describe-tasks", "--tasks", &arn])["tasks"][0];
    assert_eq!(t["containers"][0]["exitCode"], 4, "{t}");
    assert_eq!(t["containers"][0]["imageDigest"], first_digest.as_str());

    // Lifecycle: keep one tagged image; the preview names the older one.
    let policy = json!({"rules": [{"rulePriority": 1, "description": "keep one",
        "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1},
        "action": {"type": "expire"}}]})
    .to_string();
    serve.aws_ok(&[
        "ecr",
        "put-lifecycle-policy",
        "--repository-name",
        "apps/hello",
        "--lifecycle-policy-text",
        &policy,
    ]);
    let got = serve.aws_ok(&[
        "ecr",
        "get-lifecycle-policy",
        "--repository-name",
        "apps/hello",
    ]);
    assert_eq!(got["lifecyclePolicyText"], policy.as_str());
    serve.aws_ok(&[
        "ecr",
        "start-lifecycle-policy-preview",
        "--repository-name",
        "apps/hello",
    ]);
    let preview = serve.aws_ok(&[
        "ecr",
        "get-lifecycle-policy-preview",
        "--repository-name",
        "apps/hello",
    ]);
    assert_eq!(preview["status"], "COMPLETE");
    assert_eq!(
        preview["summary"]["expiringImageTotalCount"], 1,
        "{preview:#}"
    );
    assert_eq!(
        preview["previewResults"][0]["imageDigest"],
        first_digest.as_str()
    );
    assert_eq!(preview["previewResults"][0]["action"]["type"], "EXPIRE");
    // A policy can be tried out before it is put: keeping two expires
    // nothing, and the stored policy is unchanged.
    let keep_two = policy.replace("\"countNumber\":1", "\"countNumber\":2");
    assert_ne!(keep_two, policy);
    serve.aws_ok(&[
        "ecr",
        "start-lifecycle-policy-preview",
        "--repository-name",
        "apps/hello",
        "--lifecycle-policy-text",
        &keep_two,
    ]);
    let tried = serve.aws_ok(&[
        "ecr",
        "get-lifecycle-policy-preview",
        "--repository-name",
        "apps/hello",
    ]);
    assert_eq!(tried["lifecyclePolicyText"], keep_two.as_str());
    assert_eq!(tried["summary"]["expiringImageTotalCount"], 0, "{tried:#}");
    let got = serve.aws_ok(&[
        "ecr",
        "get-lifecycle-policy",
        "--repository-name",
        "apps/hello",
    ]);
    assert_eq!(got["lifecyclePolicyText"], policy.as_str());

    // A scan on demand.
    let started = serve.aws_ok(&[
        "ecr",
        "start-image-scan",
        "--repository-name",
        "apps/hello",
        "--image-id",
        "imageTag=latest",
    ]);
    assert!(
        started["imageId"]["imageDigest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );

    // Deleting: a tag that is the last on its image takes the image; a
    // missing one is a failure entry, not an error.
    let deleted = serve.aws_ok(&[
        "ecr",
        "batch-delete-image",
        "--repository-name",
        "apps/hello",
        "--image-ids",
        "imageTag=v1",
        "imageTag=nope",
    ]);
    assert_eq!(deleted["imageIds"][0]["imageTag"], "v1");
    assert_eq!(deleted["failures"][0]["failureCode"], "ImageNotFound");
    let left = serve.aws_ok(&[
        "ecr",
        "describe-images",
        "--repository-name",
        "apps/hello",
        "--filter",
        "tagStatus=TAGGED",
    ]);
    let left: Vec<Vec<&str>> = left["imageDetails"]
        .as_array()
        .unwrap()
        .iter()
        .map(tags)
        .collect();
    assert_eq!(left, [["latest"]]);
    serve.aws_err(
        &[
            "ecr",
            "describe-images",
            "--repository-name",
            "apps/hello",
            "--image-ids",
            &format!("imageDigest={first_digest}"),
        ],
        "ImageNotFoundException",
    );

    // Tokens: what `aws ecr get-login-password` prints is the password of
    // user AWS, for the registry at proxyEndpoint.
    let token = serve.aws_ok(&["ecr", "get-authorization-token"]);
    let data = &token["authorizationData"][0];
    assert_eq!(data["proxyEndpoint"], format!("http://{}", serve.registry));
    let (ok, password, err) = serve.aws(&["ecr", "get-login-password"]);
    assert!(ok, "{err}");
    let login = skiff(["login", &serve.registry, "-u", "AWS", "--password-stdin"])
        .data_dir(&serve.data_dir)
        .stdin(password.trim().as_bytes())
        .run();
    assert_eq!(login.code, 0, "{}", login.stderr);

    // Deleting a repository with images needs force.
    serve.aws_err(
        &[
            "ecr",
            "delete-repository",
            "--repository-name",
            "apps/hello",
        ],
        "RepositoryNotEmptyException",
    );
    serve.aws_ok(&[
        "ecr",
        "delete-repository",
        "--repository-name",
        "apps/hello",
        "--force",
    ]);
    serve.aws_err(
        &[
            "ecr",
            "describe-repositories",
            "--repository-names",
            "apps/hello",
        ],
        "RepositoryNotFoundException",
    );
    serve.aws_err(
        &[
            "ecr",
            "get-lifecycle-policy-preview",
            "--repository-name",
            "apps/hello",
        ],
        "RepositoryNotFoundException",
    );
}
