//! ECR pull-through cache rules, with Debian's docker-registry as the
//! upstream: an ECS task's image is fetched through skiff's registry on
//! its first pull, then served from the copy after the upstream is gone.

use crate::ecs_elb::{s, until};
use crate::support::{DockerRegistry, ServeProcess, skiff};
use serde_json::json;
use wasm_apps::app;

#[test]
fn a_pull_through_cache_rule_fetches_from_docker_registry_once_and_serves_the_copy() {
    let upstream = DockerRegistry::start();
    let pusher = tempfile::tempdir().unwrap();
    let theirs = format!("{}/library/hello:v1", upstream.addr);
    let out = skiff(["push", app("HELLO_P1"), &theirs])
        .data_dir(pusher.path())
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);

    let dir = tempfile::tempdir().unwrap();
    let mut serve = ServeProcess::start(dir.path());
    let rule = serve.aws_ok(&[
        "ecr",
        "create-pull-through-cache-rule",
        "--ecr-repository-prefix",
        "hub",
        "--upstream-registry-url",
        &upstream.addr,
    ]);
    assert_eq!(rule["ecrRepositoryPrefix"], "hub", "{rule}");
    assert_eq!(rule["upstreamRegistryUrl"], upstream.addr.as_str());
    assert_eq!(rule["upstreamRepositoryPrefix"], "ROOT");
    let v = serve.aws_ok(&[
        "ecr",
        "validate-pull-through-cache-rule",
        "--ecr-repository-prefix",
        "hub",
    ]);
    assert_eq!(v["isValid"], true, "{v}");
    // What the cache creates is made from its PULL_THROUGH_CACHE template.
    serve.aws_ok(&[
        "ecr",
        "create-repository-creation-template",
        "--prefix",
        "hub",
        "--applied-for",
        "PULL_THROUGH_CACHE",
        "--image-tag-mutability",
        "IMMUTABLE",
    ]);

    // An ECS task whose image is under the prefix: pulled through.
    serve.register_task_definition(
        dir.path(),
        &json!({
            "family": "hello",
            "containerDefinitions": [{
                "name": "hello", "image": "hub/library/hello:v1", "memory": 32,
                "essential": true, "command": ["through"]
            }]
        }),
    );
    let run = serve.aws_ok(&["ecs", "run-task", "--task-definition", "hello"]);
    let task = s(&run["tasks"][0]["taskArn"]);
    until("the task to stop", 60, || {
        serve.aws_ok(&["ecs", "describe-tasks", "--tasks", &task])["tasks"][0]["lastStatus"]
            == "STOPPED"
    });
    let t = &serve.aws_ok(&["ecs", "describe-tasks", "--tasks", &task])["tasks"][0];
    assert_eq!(t["containers"][0]["exitCode"], 0, "{t}");
    // ECR created the repository and holds the upstream's image.
    let images = serve.aws_ok(&[
        "ecr",
        "describe-images",
        "--repository-name",
        "hub/library/hello",
    ]);
    let cached = &images["imageDetails"][0];
    assert_eq!(cached["imageTags"], json!(["v1"]), "{images}");
    let r = &serve.aws_ok(&[
        "ecr",
        "describe-repositories",
        "--repository-names",
        "hub/library/hello",
    ])["repositories"][0];
    assert_eq!(r["imageTagMutability"], "IMMUTABLE", "{r}");
    let (ok, manifest, err) = crate::support::peer(
        "curl",
        &[
            "-sf",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            &format!("http://{}/v2/library/hello/manifests/v1", upstream.addr),
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(
        s(&cached["imageDigest"]),
        crate::support::sha256(manifest.as_bytes()),
        "the copy is the upstream's manifest, byte for byte"
    );

    // What the upstream does not have is not found, and leaves nothing.
    let fresh = tempfile::tempdir().unwrap();
    let out = skiff(["pull", &format!("{}/hub/library/nope:v1", serve.registry)])
        .data_dir(fresh.path())
        .run();
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains(&upstream.addr),
        "names the upstream: {}",
        out.stderr
    );
    // Not there is a 404, as from any registry (a 502 is for an upstream
    // that cannot be asked).
    let (_, status, _) = crate::support::peer(
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{}/v2/hub/library/nope/manifests/v1", serve.registry),
        ],
    );
    assert_eq!(status, "404");
    serve.aws_err(
        &[
            "ecr",
            "describe-repositories",
            "--repository-names",
            "hub/library/nope",
        ],
        "RepositoryNotFoundException",
    );

    // The upstream goes away: the copy is still served, and validating
    // the rule says why it is not valid now.
    drop(upstream);
    let fresh = tempfile::tempdir().unwrap();
    let out = skiff([
        "run",
        &format!("{}/hub/library/hello:v1", serve.registry),
        "cached",
    ])
    .data_dir(fresh.path())
    .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout_lines()[0], "Hello, world!");
    let v = serve.aws_ok(&[
        "ecr",
        "validate-pull-through-cache-rule",
        "--ecr-repository-prefix",
        "hub",
    ]);
    assert_eq!(v["isValid"], false, "{v}");
    assert!(s(&v["failure"]).contains("cannot be reached"), "{v}");

    // Deleting the rule keeps what it cached.
    serve.aws_ok(&[
        "ecr",
        "delete-pull-through-cache-rule",
        "--ecr-repository-prefix",
        "hub",
    ]);
    let d = serve.aws_ok(&["ecr", "describe-pull-through-cache-rules"]);
    assert_eq!(d["pullThroughCacheRules"], json!([]), "{d}");
    serve.aws_ok(&[
        "ecr",
        "describe-images",
        "--repository-name",
        "hub/library/hello",
    ]);
    serve.terminate();
}

#[test]
fn pull_through_cache_rule_mistakes_get_ecr_errors() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    let create = |extra: &[&str]| {
        let mut a = vec![
            "ecr",
            "create-pull-through-cache-rule",
            "--ecr-repository-prefix",
            "hub",
        ];
        a.extend_from_slice(extra);
        serve.aws(&a)
    };
    let refused = |extra: &[&str], code: &str, needle: &str| {
        let (ok, _, err) = create(extra);
        assert!(!ok && err.contains(code) && err.contains(needle), "{err}");
    };
    refused(
        &["--upstream-registry-url", "oci://127.0.0.1:5000"],
        "InvalidParameterException",
        "without a scheme",
    );
    refused(
        &[
            "--upstream-registry-url",
            "127.0.0.1:5000",
            "--credential-arn",
            "arn:aws:secretsmanager:us-east-1:000000000000:secret:ecr-pullthroughcache/x",
        ],
        "InvalidParameterException",
        "Secrets Manager",
    );
    refused(
        &[
            "--upstream-registry-url",
            "127.0.0.1:5000",
            "--upstream-registry",
            "docker-hub",
        ],
        "InvalidParameterException",
        "does not match",
    );
    refused(
        &["--upstream-registry-url", "127.0.0.1:99999"],
        "InvalidParameterException",
        "port",
    );
    let (ok, _, err) = create(&["--upstream-registry-url", "127.0.0.1:5000"]);
    assert!(ok, "{err}");
    // Validation asks the upstream: skiff's own API is no registry, and
    // one that takes connections but never answers is said to time out,
    // in seconds.
    let validate = |prefix: &str, url: &str| {
        serve.aws_ok(&[
            "ecr",
            "create-pull-through-cache-rule",
            "--ecr-repository-prefix",
            prefix,
            "--upstream-registry-url",
            url,
        ]);
        serve.aws_ok(&[
            "ecr",
            "validate-pull-through-cache-rule",
            "--ecr-repository-prefix",
            prefix,
        ])
    };
    let v = validate("api", &serve.api);
    assert_eq!(v["isValid"], false, "{v}");
    assert!(
        s(&v["failure"]).contains("does not answer as an OCI registry"),
        "{v}"
    );
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let held = std::thread::spawn(move || {
        let mut kept = Vec::new();
        for c in silent.incoming().take(4) {
            kept.push(c);
        }
        kept.len()
    });
    let started = std::time::Instant::now();
    let v = validate("stalled", &silent_addr);
    assert_eq!(v["isValid"], false, "{v}");
    assert!(s(&v["failure"]).contains("timed out"), "{v}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(45),
        "a stalled upstream is told in seconds, not minutes"
    );
    drop(held);
    refused(
        &["--upstream-registry-url", "127.0.0.1:5001"],
        "PullThroughCacheRuleAlreadyExistsException",
        "hub",
    );
    let e = serve.aws_err(
        &[
            "ecr",
            "describe-pull-through-cache-rules",
            "--ecr-repository-prefixes",
            "nope",
        ],
        "PullThroughCacheRuleNotFoundException",
    );
    assert!(e.contains("nope"), "{e}");
    serve.aws_err(
        &[
            "ecr",
            "update-pull-through-cache-rule",
            "--ecr-repository-prefix",
            "hub",
            "--credential-arn",
            "arn:aws:secretsmanager:us-east-1:000000000000:secret:ecr-pullthroughcache/x",
        ],
        "UnsupportedOperation",
    );
}
