//! docs/API.md is true: every operation of every service in AWS's models
//! is called on a live `skiff serve` with boto3, and the answer matches
//! the status the table gives it — an honoured operation is dispatched (it
//! may still refuse the empty request, as AWS would), a refused or
//! not-yet one gets `UnsupportedOperation` with its reason.

use crate::support::{ServeProcess, python_json};
use skiff_control::catalog::{self, Service, Status};

const CALL_EVERY_OPERATION: &str = r#"
import boto3, botocore.config, json, sys
req = json.load(sys.stdin)
config = botocore.config.Config(parameter_validation=False, inject_host_prefix=False,
                                retries={"max_attempts": 1})
out = {}
for service, ops in req["ops"].items():
    client = boto3.client(service, endpoint_url=req["endpoint"], region_name="eu-west-1",
                          aws_access_key_id="AKIDSKIFFTEST", aws_secret_access_key="secret",
                          config=config)
    for op in ops:
        try:
            client._make_api_call(op, {})
            out[service + "." + op] = ["ok", ""]
        except botocore.exceptions.ClientError as e:
            err = e.response.get("Error", {})
            out[service + "." + op] = [err.get("Code", "?"), err.get("Message", "")]
        except Exception as e:
            out[service + "." + op] = ["client:" + type(e).__name__, str(e)]
print(json.dumps(out))
"#;

#[test]
fn api_table_is_true() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    let mut ops = serde_json::Map::new();
    for service in Service::ALL {
        ops.insert(
            service.model_name().into(),
            catalog::operations(service).into(),
        );
    }
    let answers = python_json(
        CALL_EVERY_OPERATION,
        &serde_json::json!({"endpoint": format!("http://{}", serve.api), "ops": ops}),
    );
    let mut wrong = Vec::new();
    for service in Service::ALL {
        for op in catalog::operations(service) {
            let key = format!("{}.{op}", service.model_name());
            let code = answers[&key][0].as_str().unwrap_or("(no answer)");
            let message = answers[&key][1].as_str().unwrap_or_default();
            let status = catalog::status(service, op).expect("listed");
            let fits = match status {
                Status::Honoured(_) => {
                    code != "UnsupportedOperation"
                        && !code.starts_with("UnknownOperation")
                        && code != "InvalidAction"
                        && !code.starts_with("client:")
                        && !code.starts_with("Internal")
                }
                Status::Refused(why) => code == "UnsupportedOperation" && message.contains(why),
                Status::NotYet => code == "UnsupportedOperation" && message.contains("yet"),
            };
            if !fits {
                wrong.push(format!(
                    "{key}: table says {status:?}, server said {code}: {message}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    let table = catalog::render_markdown();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/API.md");
    if std::env::var_os("SKIFF_BLESS").is_some() {
        std::fs::write(&path, &table).unwrap();
    }
    let written = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        written == table,
        "docs/API.md is not the table api/catalog.rs gives; rewrite it with \
         SKIFF_BLESS=1 cargo nextest run -E 'test(api_table_is_true)'"
    );
}

/// The service models' constraints, as the AWS CLI meets them (it checks
/// minimums itself, the service the rest).
#[test]
fn model_constraints_reach_the_wire_in_aws_words() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    let e = serve.aws_err(
        &["logs", "describe-log-groups", "--limit", "51"],
        "InvalidParameterException",
    );
    assert!(
        e.contains("1 validation error detected: Value '51' at 'limit' failed to satisfy constraint: Member must have value less than or equal to 50"),
        "{e}"
    );
    let e = serve.aws_err(
        &["logs", "create-log-group", "--log-group-name", "has spaces"],
        "InvalidParameterException",
    );
    assert!(
        e.contains("Value 'has spaces' at 'logGroupName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\.\\-_/#A-Za-z0-9]+"),
        "{e}"
    );
    let e = serve.aws_err(
        &["ecr", "describe-repositories", "--max-results", "1001"],
        "ValidationException",
    );
    assert!(
        e.contains("Member must have value less than or equal to 1000"),
        "{e}"
    );
    let e = serve.aws_err(
        &[
            "ecs",
            "run-task",
            "--task-definition",
            "t",
            "--launch-type",
            "MOON",
        ],
        "InvalidParameterException",
    );
    assert!(e.contains("Value 'MOON' at 'launchType' failed to satisfy constraint: Member must satisfy enum value set: [EC2, FARGATE, EXTERNAL"), "{e}");
    // Nothing was made by the refused calls.
    let groups = serve.aws_ok(&["logs", "describe-log-groups"]);
    assert_eq!(groups["logGroups"], serde_json::json!([]));
}
