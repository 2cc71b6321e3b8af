//! EC2's networking calls beyond security groups themselves, through the
//! AWS CLI: tags, rules by id, the account's and VPC's attributes, and the
//! clear refusals for what one loopback VPC has no room for.

use crate::support::ServeProcess;
use serde_json::json;

#[test]
fn tags_rules_attributes_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    let sg = serve.aws_ok(&[
        "ec2",
        "create-security-group",
        "--group-name",
        "web",
        "--description",
        "web",
    ])["GroupId"]
        .as_str()
        .unwrap()
        .to_string();
    serve.aws_ok(&[
        "ec2",
        "authorize-security-group-ingress",
        "--group-id",
        &sg,
        "--protocol",
        "tcp",
        "--port",
        "80",
        "--cidr",
        "0.0.0.0/0",
    ]);
    serve.aws_ok(&[
        "ec2",
        "create-tags",
        "--resources",
        &sg,
        "--tags",
        "Key=team,Value=web",
        "Key=env,Value=lab",
    ]);
    let t = serve.aws_ok(&[
        "ec2",
        "describe-tags",
        "--filters",
        &format!("Name=resource-id,Values={sg}"),
        "Name=key,Values=team",
    ]);
    assert_eq!(
        t["Tags"],
        json!([{"ResourceId": sg, "ResourceType": "security-group", "Key": "team", "Value": "web"}])
    );
    serve.aws_ok(&[
        "ec2",
        "delete-tags",
        "--resources",
        &sg,
        "--tags",
        "Key=team",
    ]);
    let g = serve.aws_ok(&["ec2", "describe-security-groups", "--group-ids", &sg]);
    assert_eq!(
        g["SecurityGroups"][0]["Tags"],
        json!([{"Key": "env", "Value": "lab"}])
    );
    serve.aws_err(
        &[
            "ec2",
            "create-tags",
            "--resources",
            "subnet-0000000000000000a",
            "--tags",
            "Key=a,Value=b",
        ],
        "InvalidParameterValue",
    );

    let rules = serve.aws_ok(&[
        "ec2",
        "describe-security-group-rules",
        "--filters",
        &format!("Name=group-id,Values={sg}"),
    ]);
    let rules = rules["SecurityGroupRules"].as_array().unwrap();
    let ingress = rules
        .iter()
        .find(|r| r["IsEgress"] == false)
        .expect("the ingress rule");
    assert_eq!(
        (ingress["FromPort"].as_i64(), ingress["CidrIpv4"].as_str()),
        (Some(80), Some("0.0.0.0/0"))
    );
    let id = ingress["SecurityGroupRuleId"].as_str().unwrap();
    let one = serve.aws_ok(&[
        "ec2",
        "describe-security-group-rules",
        "--security-group-rule-ids",
        id,
    ]);
    assert_eq!(one["SecurityGroupRules"].as_array().unwrap().len(), 1);

    // Descriptions: by permission, then a whole rule changed by its id.
    serve.aws_ok(&[
        "ec2", "update-security-group-rule-descriptions-ingress", "--group-id", &sg,
        "--ip-permissions", "IpProtocol=tcp,FromPort=80,ToPort=80,IpRanges=[{CidrIp=0.0.0.0/0,Description=web traffic}]",
    ]);
    let g = serve.aws_ok(&["ec2", "describe-security-groups", "--group-ids", &sg]);
    assert_eq!(
        g["SecurityGroups"][0]["IpPermissions"][0]["IpRanges"][0]["Description"],
        "web traffic"
    );
    serve.aws_ok(&[
        "ec2", "modify-security-group-rules", "--group-id", &sg, "--security-group-rules",
        &format!("SecurityGroupRuleId={id},SecurityGroupRule={{IpProtocol=tcp,FromPort=8080,ToPort=8080,CidrIpv4=127.0.0.0/8,Description=alt}}"),
    ]);
    let one = serve.aws_ok(&[
        "ec2",
        "describe-security-group-rules",
        "--security-group-rule-ids",
        id,
    ]);
    let r = &one["SecurityGroupRules"][0];
    assert_eq!(
        (
            r["FromPort"].as_i64(),
            r["CidrIpv4"].as_str(),
            r["Description"].as_str()
        ),
        (Some(8080), Some("127.0.0.0/8"), Some("alt"))
    );
    serve.aws_err(
        &[
            "ec2", "modify-security-group-rules", "--group-id", &sg, "--security-group-rules",
            "SecurityGroupRuleId=sgr-nope,SecurityGroupRule={IpProtocol=tcp,FromPort=1,ToPort=1,CidrIpv4=127.0.0.0/8}",
        ],
        "InvalidSecurityGroupRuleId.NotFound",
    );

    let r = serve.aws_ok(&["ec2", "describe-regions"]);
    assert_eq!(r["Regions"][0]["RegionName"], "eu-west-1");
    let a = serve.aws_ok(&[
        "ec2",
        "describe-account-attributes",
        "--attribute-names",
        "default-vpc",
    ]);
    let vpc = a["AccountAttributes"][0]["AttributeValues"][0]["AttributeValue"]
        .as_str()
        .unwrap()
        .to_string();
    let dns = serve.aws_ok(&[
        "ec2",
        "describe-vpc-attribute",
        "--vpc-id",
        &vpc,
        "--attribute",
        "enableDnsSupport",
    ]);
    assert_eq!(dns["EnableDnsSupport"]["Value"], true);

    for (args, says) in [
        (
            vec!["ec2", "create-vpc", "--cidr-block", "10.0.0.0/16"],
            "one VPC",
        ),
        (
            vec![
                "ec2",
                "create-subnet",
                "--vpc-id",
                &vpc,
                "--cidr-block",
                "127.1.0.0/16",
            ],
            "subnets are labels",
        ),
        (
            vec!["ec2", "describe-route-tables"],
            "no gateways or route tables",
        ),
    ] {
        let e = serve.aws_err(&args, "UnsupportedOperation");
        assert!(e.contains(says), "{args:?}: {e}");
    }
}
