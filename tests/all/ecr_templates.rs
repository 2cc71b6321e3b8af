//! ECR repository creation templates through the AWS CLI: a repository
//! the registry makes on a push gets the settings, lifecycle policy,
//! repository policy and tags of the template whose prefix is the longest
//! its name starts with (ROOT otherwise). The pull-through cache and
//! replication tests check their kinds.

use crate::ecs_elb::{s, until};
use crate::support::ServeProcess;
use serde_json::json;
use wasm_apps::app;

const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"pull","Effect":"Allow","Principal":"*","Action":["ecr:BatchGetImage"]}]}"#;

#[test]
fn a_pushed_repository_is_made_from_the_template_that_applies() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    let lifecycle = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ecr/lifecycle-policy.json"),
    )
    .unwrap();
    let t = serve.aws_ok(&[
        "ecr",
        "create-repository-creation-template",
        "--prefix",
        "team",
        "--applied-for",
        "CREATE_ON_PUSH",
        "--image-tag-mutability",
        "IMMUTABLE",
        "--lifecycle-policy",
        &lifecycle,
        "--repository-policy",
        POLICY,
        "--resource-tags",
        "Key=owner,Value=team",
        "--description",
        "the team's repositories",
    ]);
    assert_eq!(t["repositoryCreationTemplate"]["prefix"], "team", "{t}");
    serve.aws_ok(&[
        "ecr",
        "create-repository-creation-template",
        "--prefix",
        "ROOT",
        "--applied-for",
        "CREATE_ON_PUSH",
        "--resource-tags",
        "Key=made,Value=by-push",
    ]);

    serve.push(app("HELLO_P1"), "team/app:v1");
    let r = &serve.aws_ok(&[
        "ecr",
        "describe-repositories",
        "--repository-names",
        "team/app",
    ])["repositories"][0];
    assert_eq!(r["imageTagMutability"], "IMMUTABLE", "{r}");
    let l = serve.aws_ok(&[
        "ecr",
        "get-lifecycle-policy",
        "--repository-name",
        "team/app",
    ]);
    assert!(
        s(&l["lifecyclePolicyText"]).contains("Keep the last 10 images"),
        "{l}"
    );
    let arn = s(&r["repositoryArn"]);
    until("the template's tags", 30, || {
        serve.aws_ok(&["ecr", "list-tags-for-resource", "--resource-arn", &arn])["tags"]
            == json!([{"Key": "owner", "Value": "team"}])
    });
    let p = serve.aws_ok(&[
        "ecr",
        "get-repository-policy",
        "--repository-name",
        "team/app",
    ]);
    assert!(s(&p["policyText"]).contains("ecr:BatchGetImage"), "{p}");
    // IMMUTABLE is enforced: v1 cannot move.
    let out = crate::support::skiff([
        "push",
        app("SLEEPER_P1"),
        &format!("{}/team/app:v1", serve.registry),
    ])
    .data_dir(dir.path())
    .run();
    assert_ne!(out.code, 0, "an immutable tag moved");

    // Anything else: ROOT.
    serve.push(app("HELLO_P1"), "other/app:v1");
    let r = &serve.aws_ok(&[
        "ecr",
        "describe-repositories",
        "--repository-names",
        "other/app",
    ])["repositories"][0];
    assert_eq!(r["imageTagMutability"], "MUTABLE");
    let arn = s(&r["repositoryArn"]);
    until("ROOT's tags", 30, || {
        serve.aws_ok(&["ecr", "list-tags-for-resource", "--resource-arn", &arn])["tags"]
            == json!([{"Key": "made", "Value": "by-push"}])
    });

    // Described, updated, deleted.
    let d = serve.aws_ok(&[
        "ecr",
        "describe-repository-creation-templates",
        "--prefixes",
        "team",
    ]);
    assert_eq!(
        d["repositoryCreationTemplates"].as_array().unwrap().len(),
        1,
        "{d}"
    );
    let u = serve.aws_ok(&[
        "ecr",
        "update-repository-creation-template",
        "--prefix",
        "team",
        "--description",
        "changed",
    ]);
    assert_eq!(u["repositoryCreationTemplate"]["description"], "changed");
    assert_eq!(
        u["repositoryCreationTemplate"]["imageTagMutability"],
        "IMMUTABLE"
    );
    serve.aws_ok(&[
        "ecr",
        "delete-repository-creation-template",
        "--prefix",
        "team",
    ]);
    let r = &serve.aws_ok(&[
        "ecr",
        "describe-repositories",
        "--repository-names",
        "team/app",
    ])["repositories"][0];
    assert_eq!(
        r["imageTagMutability"], "IMMUTABLE",
        "kept by the repository"
    );
}

#[test]
fn template_mistakes_get_ecr_errors() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    let create = |extra: &[&str]| {
        let mut a = vec![
            "ecr",
            "create-repository-creation-template",
            "--prefix",
            "team",
        ];
        a.extend_from_slice(extra);
        serve.aws(&a)
    };
    let refused = |extra: &[&str], code: &str, needle: &str| {
        let (ok, _, err) = create(extra);
        assert!(!ok && err.contains(code) && err.contains(needle), "{err}");
    };
    refused(
        &[
            "--applied-for",
            "CREATE_ON_PUSH",
            "--encryption-configuration",
            "encryptionType=KMS",
        ],
        "InvalidParameterException",
        "no KMS",
    );
    refused(
        &[
            "--applied-for",
            "CREATE_ON_PUSH",
            "--lifecycle-policy",
            "{\"rules\": 3}",
        ],
        "InvalidParameterException",
        "lifecycle policy",
    );
    refused(
        &[
            "--applied-for",
            "CREATE_ON_PUSH",
            "--image-tag-mutability",
            "IMMUTABLE_WITH_EXCLUSION",
        ],
        "InvalidParameterException",
        "needs at least one filter",
    );
    let (ok, _, err) = create(&["--applied-for", "CREATE_ON_PUSH"]);
    assert!(ok, "{err}");
    refused(
        &["--applied-for", "CREATE_ON_PUSH"],
        "TemplateAlreadyExistsException",
        "team",
    );
    serve.aws_err(
        &[
            "ecr",
            "update-repository-creation-template",
            "--prefix",
            "nope",
            "--description",
            "x",
        ],
        "TemplateNotFoundException",
    );
    serve.aws_err(
        &[
            "ecr",
            "delete-repository-creation-template",
            "--prefix",
            "nope",
        ],
        "TemplateNotFoundException",
    );
}
