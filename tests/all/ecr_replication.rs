//! ECR replication between two `skiff serve`s (two accounts), driven by
//! the AWS CLI: images of the repositories a rule matches reach the other
//! registry with the same digests and every tag, a retag follows, and a
//! destination that went away is reported FAILED.

use crate::ecs_elb::{s, until};
use crate::support::ServeProcess;
use serde_json::{Value, json};
use wasm_apps::app;

fn images(serve: &ServeProcess, repo: &str) -> Option<Value> {
    let (ok, out, _) = serve.aws(&["ecr", "describe-images", "--repository-name", repo]);
    ok.then(|| serde_json::from_str::<Value>(&out).unwrap()["imageDetails"].clone())
}

fn tags_of(details: &Value, digest: &str) -> Vec<String> {
    let mut tags: Vec<String> = details
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["imageDigest"] == digest)
        .flat_map(|d| d["imageTags"].as_array().cloned().unwrap_or_default())
        .map(|t| s(&t))
        .collect();
    tags.sort();
    tags
}

fn status(serve: &ServeProcess, tag: &str) -> Value {
    serve.aws_ok(&[
        "ecr",
        "describe-image-replication-status",
        "--repository-name",
        "app/web",
        "--image-id",
        &format!("imageTag={tag}"),
    ])["replicationStatuses"]
        .clone()
}

#[test]
fn images_replicate_to_another_skiffs_registry_with_every_tag() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut other = ServeProcess::start_with(dir_b.path(), &["--account-id", "111111111111"]);
    let peer = format!("eu-west-1/111111111111={}", other.registry);
    let serve = ServeProcess::start_with(dir_a.path(), &["--replication-peer", &peer]);
    // The destination makes what replication brings from its REPLICATION
    // template (a push would get the defaults).
    other.aws_ok(&[
        "ecr",
        "create-repository-creation-template",
        "--prefix",
        "app",
        "--applied-for",
        "REPLICATION",
        "--resource-tags",
        "Key=from,Value=replication",
    ]);
    serve.push(app("HELLO_P1"), "app/web:v1");
    serve.push(app("SLEEPER_P1"), "other/job:v1");

    // Mistakes first: the source itself, and a destination nobody named.
    let rule = |region: &str, account: &str| {
        json!({"rules": [{
            "destinations": [{"region": region, "registryId": account}],
            "repositoryFilters": [{"filter": "app/", "filterType": "PREFIX_MATCH"}],
        }]})
        .to_string()
    };
    let put = |config: String| {
        serve.aws(&[
            "ecr",
            "put-replication-configuration",
            "--replication-configuration",
            &config,
        ])
    };
    let (ok, _, err) = put(rule("eu-west-1", "000000000000"));
    assert!(
        !ok && err.contains("InvalidParameterException") && err.contains("this registry"),
        "{err}"
    );
    let (ok, _, err) = put(rule("us-west-2", "111111111111"));
    assert!(
        !ok && err.contains("--replication-peer us-west-2/111111111111=HOST:PORT"),
        "{err}"
    );
    let twice = json!({"rules": [{"destinations": [
        {"region": "eu-west-1", "registryId": "111111111111"},
        {"region": "eu-west-1", "registryId": "111111111111"},
    ]}]});
    let (ok, _, err) = put(twice.to_string());
    assert!(!ok && err.contains("named twice"), "{err}");
    let bad_filter = rule("eu-west-1", "111111111111").replace("app/", "BAD FILTER");
    let (ok, _, err) = put(bad_filter);
    assert!(!ok && err.contains("'filter'"), "{err}");

    let (ok, out, err) = put(rule("eu-west-1", "111111111111"));
    assert!(ok, "{err}");
    assert!(out.contains("PREFIX_MATCH"), "{out}");
    let r = serve.aws_ok(&["ecr", "describe-registry"]);
    assert_eq!(
        r["replicationConfiguration"]["rules"][0]["destinations"][0]["registryId"],
        "111111111111"
    );

    // app/web reaches the other registry, same digest; other/job does not.
    let ours = images(&serve, "app/web").unwrap();
    let digest = s(&ours[0]["imageDigest"]);
    until("app/web:v1 replicated", 60, || {
        images(&other, "app/web").is_some_and(|d| tags_of(&d, &digest) == ["v1"])
    });
    until("the status COMPLETE", 30, || {
        status(&serve, "v1")[0]["status"] == "COMPLETE"
    });
    let st = status(&serve, "v1");
    assert_eq!(st[0]["region"], "eu-west-1", "{st}");
    assert_eq!(st[0]["registryId"], "111111111111");
    assert!(images(&other, "other/job").is_none(), "not under app/");
    let arn = s(&other.aws_ok(&[
        "ecr",
        "describe-repositories",
        "--repository-names",
        "app/web",
    ])["repositories"][0]["repositoryArn"]);
    until("the REPLICATION template's tags", 30, || {
        other.aws_ok(&["ecr", "list-tags-for-resource", "--resource-arn", &arn])["tags"]
            == json!([{"Key": "from", "Value": "replication"}])
    });

    // A retag (AWS's put-image way) follows.
    let manifest = serve.manifest_of("app/web", "v1");
    serve.aws_ok(&[
        "ecr",
        "put-image",
        "--repository-name",
        "app/web",
        "--image-tag",
        "stable",
        "--image-manifest",
        &manifest,
    ]);
    until("the new tag replicated", 60, || {
        images(&other, "app/web").is_some_and(|d| tags_of(&d, &digest) == ["stable", "v1"])
    });
    // The copy runs: pulled from the other registry, it says hello.
    let fresh = tempfile::tempdir().unwrap();
    let out = crate::support::skiff(["run", &format!("{}/app/web:stable", other.registry)])
        .data_dir(fresh.path())
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout_lines()[0], "Hello, world!");

    // The destination goes away: a new image's copy FAILS, saying why.
    other.terminate();
    serve.push(app("SLEEPER_P1"), "app/web:v2");
    until("the copy FAILED", 60, || {
        status(&serve, "v2")[0]["status"] == "FAILED"
    });
    let st = status(&serve, "v2");
    assert!(
        st[0]["failureCode"].as_str().is_some_and(|f| !f.is_empty()),
        "{st}"
    );
}
