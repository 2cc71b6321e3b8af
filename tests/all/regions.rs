//! One `skiff serve` is one region's endpoint, as each AWS region has its
//! own: everything it makes names its region (and the configured account)
//! in its ARN, a request signed for another region is refused as AWS
//! refuses it — so nothing made in one region is listed or collides in
//! another — and skiff's own CLI reads the SDKs' profiles, or learns the
//! region from the server when none is configured.

use crate::support::{ServeProcess, skiff};

#[test]
fn a_serve_is_one_region_and_refuses_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start_with(dir.path(), &["--account-id", "123456789012"]);
    let c = serve.aws_ok(&["ecs", "create-cluster", "--cluster-name", "apps"]);
    assert_eq!(
        c["cluster"]["clusterArn"],
        "arn:aws:ecs:eu-west-1:123456789012:cluster/apps"
    );
    let sg = serve.aws_ok(&["ec2", "describe-security-groups"]);
    assert_eq!(sg["SecurityGroups"][0]["OwnerId"], "123456789012");
    // The same name in another region's or account's ARN is another
    // resource, which is not here: refused, naming it, whatever names it.
    for other in [
        "arn:aws:ecs:us-west-2:123456789012:cluster/apps",
        "arn:aws:ecs:eu-west-1:999999999999:cluster/apps",
    ] {
        for args in [
            vec!["ecs", "describe-clusters", "--clusters", other],
            vec!["ecs", "list-services", "--cluster", other],
            vec![
                "ecs",
                "tag-resource",
                "--resource-arn",
                other,
                "--tags",
                "key=a,value=b",
            ],
        ] {
            let e = serve.aws_err(&args, "InvalidParameterException");
            assert!(e.contains(other) && e.contains("one region"), "{e}");
        }
    }
    serve.aws_ok(&["logs", "create-log-group", "--log-group-name", "mine"]);
    serve.aws_err(
        &[
            "logs",
            "tag-resource",
            "--resource-arn",
            "arn:aws:logs:us-west-2:123456789012:log-group:mine",
            "--tags",
            "a=b",
        ],
        "InvalidParameterException",
    );
    serve.aws_ok(&["logs", "delete-log-group", "--log-group-name", "mine"]);
    let own = "arn:aws:ecs:eu-west-1:123456789012:cluster/apps";
    let d = serve.aws_ok(&["ecs", "describe-clusters", "--clusters", own]);
    assert_eq!(d["clusters"][0]["clusterName"], "apps");
    serve.aws_ok(&["ecs", "list-services", "--cluster", own]);

    // Another region's signature, in both protocols: refused, nothing made.
    for args in [
        vec!["ecs", "create-cluster", "--cluster-name", "apps"],
        vec!["ecs", "list-clusters"],
        vec!["logs", "create-log-group", "--log-group-name", "g"],
        vec!["ec2", "describe-security-groups"],
    ] {
        let mut with_region = args.clone();
        with_region.extend(["--region", "us-west-2"]);
        let e = serve.aws_err(&with_region, "InvalidSignatureException");
        assert!(
            e.contains("not 'us-west-2': this skiff serve answers region eu-west-1"),
            "{e}"
        );
    }
    let groups = serve.aws_ok(&["logs", "describe-log-groups"]);
    assert_eq!(groups["logGroups"], serde_json::json!([]));

    // skiff's CLI: a profile's region is used as the SDKs use it...
    let aws = dir.path().join("aws");
    std::fs::create_dir_all(&aws).unwrap();
    std::fs::write(
        aws.join("config"),
        "[default]\nregion = us-west-2\n\n[profile lab]\nregion = eu-west-1\n",
    )
    .unwrap();
    let endpoint = format!("http://{}", serve.api);
    let run = |profile: Option<&str>, config: &str| {
        let mut s = skiff(["services", "--endpoint", &endpoint, "--cluster", "apps"])
            .env("AWS_CONFIG_FILE", config)
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("AWS_REGION", "")
            .env("AWS_DEFAULT_REGION", "");
        if let Some(p) = profile {
            s = s.env("AWS_PROFILE", p);
        }
        s.run()
    };
    let config = aws.join("config");
    let config = config.to_str().unwrap();
    let wrong = run(None, config);
    assert_ne!(wrong.code, 0);
    assert!(wrong.stderr.contains("not 'us-west-2'"), "{}", wrong.stderr);
    let lab = run(Some("lab"), config);
    assert_eq!(lab.code, 0, "{}", lab.stderr);
    // ... and with none configured, the server's.
    let learned = run(None, "/nonexistent");
    assert_eq!(learned.code, 0, "{}", learned.stderr);

    // A region or account that is no such thing is refused at start.
    for (flag, value, says) in [
        ("--region", "mars", "not a region name"),
        ("--account-id", "12", "twelve digits"),
    ] {
        let bad = tempfile::tempdir().unwrap();
        let out = skiff([
            "serve",
            flag,
            value,
            "--api-addr",
            "127.0.0.1:0",
            "--registry-addr",
            "127.0.0.1:0",
        ])
        .data_dir(bad.path())
        .run();
        assert_ne!(out.code, 0);
        assert!(out.stderr.contains(says), "{}", out.stderr);
    }
}
