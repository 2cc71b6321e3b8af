//! Cloud Map beyond create and list, through the AWS CLI: updates, tags,
//! service attributes, instances and their custom health, operations.

use crate::support::ServeProcess;
use serde_json::json;

#[test]
fn namespaces_services_and_instances_update_tag_and_report_health() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    let op = serve.aws_ok(&[
        "servicediscovery",
        "create-http-namespace",
        "--name",
        "apps",
        "--tags",
        "Key=team,Value=web",
    ]);
    let op_id = op["OperationId"].as_str().unwrap().to_string();
    let ns = serve.aws_ok(&[
        "servicediscovery",
        "get-operation",
        "--operation-id",
        &op_id,
    ])["Operation"]["Targets"]["NAMESPACE"]
        .as_str()
        .unwrap()
        .to_string();
    let ns_arn =
        serve.aws_ok(&["servicediscovery", "get-namespace", "--id", &ns])["Namespace"]["Arn"]
            .as_str()
            .unwrap()
            .to_string();
    let t = serve.aws_ok(&[
        "servicediscovery",
        "list-tags-for-resource",
        "--resource-arn",
        &ns_arn,
    ]);
    assert_eq!(t["Tags"], json!([{"Key": "team", "Value": "web"}]));
    serve.aws_ok(&[
        "servicediscovery",
        "tag-resource",
        "--resource-arn",
        &ns_arn,
        "--tags",
        "Key=env,Value=lab",
    ]);
    serve.aws_ok(&[
        "servicediscovery",
        "untag-resource",
        "--resource-arn",
        &ns_arn,
        "--tag-keys",
        "team",
    ]);
    let t = serve.aws_ok(&[
        "servicediscovery",
        "list-tags-for-resource",
        "--resource-arn",
        &ns_arn,
    ]);
    assert_eq!(t["Tags"], json!([{"Key": "env", "Value": "lab"}]));
    serve.aws_ok(&[
        "servicediscovery",
        "update-http-namespace",
        "--id",
        &ns,
        "--namespace",
        "Description=renamed",
    ]);
    let n = serve.aws_ok(&["servicediscovery", "get-namespace", "--id", &ns]);
    assert_eq!(n["Namespace"]["Description"], "renamed");

    let svc = serve.aws_ok(&[
        "servicediscovery",
        "create-service",
        "--name",
        "api",
        "--namespace-id",
        &ns,
        "--health-check-custom-config",
        "FailureThreshold=1",
    ]);
    let sid = svc["Service"]["Id"].as_str().unwrap().to_string();
    serve.aws_ok(&[
        "servicediscovery",
        "update-service-attributes",
        "--service-id",
        &sid,
        "--attributes",
        "version=2,color=blue",
    ]);
    serve.aws_ok(&[
        "servicediscovery",
        "delete-service-attributes",
        "--service-id",
        &sid,
        "--attributes",
        "color",
    ]);
    let a = serve.aws_ok(&[
        "servicediscovery",
        "get-service-attributes",
        "--service-id",
        &sid,
    ]);
    assert_eq!(
        a["ServiceAttributes"]["Attributes"],
        json!({"version": "2"})
    );
    serve.aws_ok(&[
        "servicediscovery",
        "update-service",
        "--id",
        &sid,
        "--service",
        "Description=the api",
    ]);
    let s = serve.aws_ok(&["servicediscovery", "get-service", "--id", &sid]);
    assert_eq!(s["Service"]["Description"], "the api");

    for (id, ip) in [("one", "127.0.0.21"), ("two", "127.0.0.22")] {
        serve.aws_ok(&[
            "servicediscovery",
            "register-instance",
            "--service-id",
            &sid,
            "--instance-id",
            id,
            "--attributes",
            &format!("AWS_INSTANCE_IPV4={ip}"),
        ]);
    }
    let i = serve.aws_ok(&[
        "servicediscovery",
        "get-instance",
        "--service-id",
        &sid,
        "--instance-id",
        "two",
    ]);
    assert_eq!(
        i["Instance"]["Attributes"]["AWS_INSTANCE_IPV4"],
        "127.0.0.22"
    );
    let discover = |serve: &ServeProcess| {
        serve.aws_ok(&[
            "servicediscovery",
            "discover-instances",
            "--namespace-name",
            "apps",
            "--service-name",
            "api",
        ])
    };
    let before = discover(&serve);
    assert_eq!(before["Instances"].as_array().unwrap().len(), 2);
    serve.aws_ok(&[
        "servicediscovery",
        "update-instance-custom-health-status",
        "--service-id",
        &sid,
        "--instance-id",
        "one",
        "--status",
        "UNHEALTHY",
    ]);
    let h = serve.aws_ok(&[
        "servicediscovery",
        "get-instances-health-status",
        "--service-id",
        &sid,
    ]);
    assert_eq!(h["Status"], json!({"one": "UNHEALTHY", "two": "HEALTHY"}));
    let after = discover(&serve);
    let ids: Vec<&str> = after["Instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["InstanceId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["two"]);
    assert_ne!(before["InstancesRevision"], after["InstancesRevision"]);
    let r = serve.aws_ok(&[
        "servicediscovery",
        "discover-instances-revision",
        "--namespace-name",
        "apps",
        "--service-name",
        "api",
    ]);
    assert_eq!(r["InstancesRevision"], after["InstancesRevision"]);

    let ops = serve.aws_ok(&[
        "servicediscovery",
        "list-operations",
        "--filters",
        "Name=TYPE,Values=REGISTER_INSTANCE,Condition=IN",
    ]);
    assert_eq!(ops["Operations"].as_array().unwrap().len(), 2, "{ops}");
    let e = serve.aws_err(
        &[
            "servicediscovery",
            "create-public-dns-namespace",
            "--name",
            "example.com",
        ],
        "UnsupportedOperation",
    );
    assert!(e.contains("never public"), "{e}");
}
