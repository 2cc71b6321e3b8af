//! CloudWatch Logs' housekeeping through the AWS CLI: retention (enforced),
//! tags by name and by ARN, DeleteLogStream.

use crate::support::ServeProcess;
use serde_json::json;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn retention_tags_and_stream_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.aws_ok(&[
        "logs",
        "create-log-group",
        "--log-group-name",
        "/app/web",
        "--tags",
        "team=web,tier=front",
    ]);
    let t = serve.aws_ok(&[
        "logs",
        "list-tags-log-group",
        "--log-group-name",
        "/app/web",
    ]);
    assert_eq!(t["tags"], json!({"team": "web", "tier": "front"}));
    let arn = "arn:aws:logs:eu-west-1:000000000000:log-group:/app/web";
    serve.aws_ok(&[
        "logs",
        "tag-resource",
        "--resource-arn",
        arn,
        "--tags",
        "owner=ops",
    ]);
    serve.aws_ok(&[
        "logs",
        "untag-resource",
        "--resource-arn",
        arn,
        "--tag-keys",
        "tier",
    ]);
    let t = serve.aws_ok(&["logs", "list-tags-for-resource", "--resource-arn", arn]);
    assert_eq!(t["tags"], json!({"team": "web", "owner": "ops"}));
    serve.aws_err(
        &[
            "logs",
            "list-tags-for-resource",
            "--resource-arn",
            "arn:aws:logs:eu-west-1:000000000000:log-group:/nope",
        ],
        "ResourceNotFoundException",
    );

    // Events from three days ago and now; then a day's retention.
    serve.aws_ok(&[
        "logs",
        "create-log-stream",
        "--log-group-name",
        "/app/web",
        "--log-stream-name",
        "s",
    ]);
    let day = 24 * 3600 * 1000;
    for (at, message) in [(now_ms() - 3 * day, "old"), (now_ms(), "new")] {
        let events = json!([{"timestamp": at, "message": message}]).to_string();
        serve.aws_ok(&[
            "logs",
            "put-log-events",
            "--log-group-name",
            "/app/web",
            "--log-stream-name",
            "s",
            "--log-events",
            &events,
        ]);
    }
    let read = |serve: &ServeProcess| -> Vec<String> {
        serve.aws_ok(&[
            "logs",
            "get-log-events",
            "--log-group-name",
            "/app/web",
            "--log-stream-name",
            "s",
            "--start-from-head",
        ])["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(read(&serve), ["old", "new"]);
    let e = serve.aws_err(
        &[
            "logs",
            "put-retention-policy",
            "--log-group-name",
            "/app/web",
            "--retention-in-days",
            "2",
        ],
        "InvalidParameterException",
    );
    assert!(
        e.contains("Member must satisfy enum value set: [1, 3, 5"),
        "{e}"
    );
    serve.aws_ok(&[
        "logs",
        "put-retention-policy",
        "--log-group-name",
        "/app/web",
        "--retention-in-days",
        "1",
    ]);
    let g = serve.aws_ok(&[
        "logs",
        "describe-log-groups",
        "--log-group-name-prefix",
        "/app",
    ]);
    assert_eq!(g["logGroups"][0]["retentionInDays"], 1);
    assert_eq!(read(&serve), ["new"]);
    // Older than the retention is refused on the way in.
    let events = json!([
        {"timestamp": now_ms() - day - 3_600_000, "message": "late"},
        {"timestamp": now_ms() - day + 3_600_000, "message": "newer"}
    ])
    .to_string();
    let put = serve.aws_ok(&[
        "logs",
        "put-log-events",
        "--log-group-name",
        "/app/web",
        "--log-stream-name",
        "s",
        "--log-events",
        &events,
    ]);
    assert_eq!(put["rejectedLogEventsInfo"]["expiredLogEventEndIndex"], 1);
    assert_eq!(read(&serve), ["new", "newer"]);
    serve.aws_ok(&[
        "logs",
        "delete-retention-policy",
        "--log-group-name",
        "/app/web",
    ]);
    let g = serve.aws_ok(&["logs", "describe-log-groups"]);
    assert!(g["logGroups"][0].get("retentionInDays").is_none(), "{g}");

    // Deleting a stream takes its events.
    serve.aws_ok(&[
        "logs",
        "delete-log-stream",
        "--log-group-name",
        "/app/web",
        "--log-stream-name",
        "s",
    ]);
    let s = serve.aws_ok(&[
        "logs",
        "describe-log-streams",
        "--log-group-name",
        "/app/web",
    ]);
    assert_eq!(s["logStreams"], json!([]));
    serve.aws_err(
        &[
            "logs",
            "delete-log-stream",
            "--log-group-name",
            "/app/web",
            "--log-stream-name",
            "s",
        ],
        "ResourceNotFoundException",
    );
}

#[test]
fn filter_log_events_takes_awss_pattern_syntax() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(dir.path());
    serve.aws_ok(&["logs", "create-log-group", "--log-group-name", "app"]);
    serve.aws_ok(&[
        "logs",
        "create-log-stream",
        "--log-group-name",
        "app",
        "--log-stream-name",
        "s",
    ]);
    let lines = [
        r#"{"level":"error","latency":250}"#,
        r#"{"level":"info","latency":12}"#,
        "127.0.0.1 GET /a 404 15",
        "127.0.0.1 GET /b 200 900",
    ];
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|m| json!({"timestamp": now_ms(), "message": m}))
        .collect();
    serve.aws_ok(&[
        "logs",
        "put-log-events",
        "--log-group-name",
        "app",
        "--log-stream-name",
        "s",
        "--log-events",
        &serde_json::Value::from(events).to_string(),
    ]);
    let find = |pattern: &str| -> Vec<String> {
        serve.aws_ok(&[
            "logs",
            "filter-log-events",
            "--log-group-name",
            "app",
            "--filter-pattern",
            pattern,
        ])["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        find(r#"{ $.level = "error" && $.latency > 100 }"#),
        [lines[0]]
    );
    assert_eq!(find("[ip, method, path, status = 4*, bytes]"), [lines[2]]);
    assert_eq!(find("%GET /[ab] 200%"), [lines[3]]);
    serve.aws_err(
        &[
            "logs",
            "filter-log-events",
            "--log-group-name",
            "app",
            "--filter-pattern",
            "{ $.level = }",
        ],
        "InvalidParameterException",
    );
}
