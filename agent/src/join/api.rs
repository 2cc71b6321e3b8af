//! The control plane's API as an agent calls it: AWS JSON 1.1, signed
//! (SigV4) with the agent's key.

use super::{JoinConfig, JoinError};
use serde_json::{Value, json};
use skiff_channel::sigv4::{self, Signer};
use std::time::Duration;

/// A call's failure: the API refused it (its `__type` and message), or no
/// answer came.
#[derive(Debug)]
pub(super) enum CallError {
    Refused { kind: String, message: String },
    Transport(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Refused { kind, message } => write!(f, "{kind}: {message}"),
            CallError::Transport(m) => f.write_str(m),
        }
    }
}

/// The control plane's API, as the agent calls it.
pub(super) struct Api {
    http: reqwest::Client,
    config: JoinConfig,
    host: String,
}

impl Api {
    pub(super) fn new(config: &JoinConfig) -> Result<Api, JoinError> {
        let url = reqwest::Url::parse(&config.endpoint).map_err(|e| {
            JoinError(format!(
                "--endpoint {:?} is not a URL: {e}",
                config.endpoint
            ))
        })?;
        if url.scheme() != "http" {
            return Err(JoinError(format!(
                "--endpoint {:?} must be an http:// URL: skiff's API is plain HTTP (put TLS in front of it on a network you do not trust)",
                config.endpoint
            )));
        }
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => {
                return Err(JoinError(format!(
                    "--endpoint {:?} names no host",
                    config.endpoint
                )));
            }
        };
        skiff_registry::remote::ensure_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| JoinError(format!("cannot build an HTTP client: {e}")))?;
        Ok(Api {
            http,
            config: config.clone(),
            host,
        })
    }

    pub(super) fn signer(&self) -> Signer<'_> {
        let (key, secret) = self
            .config
            .credentials
            .as_ref()
            .map(|(k, s)| (k.as_str(), s.as_str()))
            .unwrap_or(("skiff", "skiff"));
        Signer {
            access_key: key,
            secret,
            region: &self.config.region,
            service: "ecs",
        }
    }

    pub(super) async fn ecs(&self, op: &str, body: Value) -> Result<Value, CallError> {
        let target = format!("AmazonEC2ContainerServiceV20141113.{op}");
        self.call("ecs", &target, body).await
    }

    async fn call(&self, service: &str, target: &str, body: Value) -> Result<Value, CallError> {
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let content_type = "application/x-amz-json-1.1";
        let signed = sigv4::sign(
            Signer {
                service,
                ..self.signer()
            },
            "POST",
            "/",
            "",
            &[
                ("host", &self.host),
                ("content-type", content_type),
                ("x-amz-target", target),
            ],
            &bytes,
            unix_now(),
        );
        let mut req = self
            .http
            .post(&self.config.endpoint)
            .header("content-type", content_type)
            .header("x-amz-target", target);
        for (n, v) in signed {
            req = req.header(n, v);
        }
        let resp = req.body(bytes).send().await.map_err(|e| {
            CallError::Transport(format!(
                "cannot reach the control plane at {}: {e}",
                self.config.endpoint
            ))
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| {
            CallError::Transport(format!("the control plane's answer was cut short: {e}"))
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|_| {
            CallError::Transport(format!(
                "{} answered HTTP {status} with something other than AWS JSON",
                self.config.endpoint
            ))
        })?;
        if status.is_success() {
            return Ok(v);
        }
        if status.is_server_error() {
            return Err(CallError::Transport(format!(
                "the control plane failed: {}",
                v["message"]
            )));
        }
        Err(CallError::Refused {
            kind: v["__type"]
                .as_str()
                .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
                .unwrap_or_else(|| format!("HTTP {status}")),
            message: v["message"].as_str().unwrap_or_default().to_string(),
        })
    }
}

pub(super) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// CloudWatch Logs of the control plane, over its API, as ECS's agent
/// writes containers' awslogs output: CreateLogGroup (with
/// `awslogs-create-group`), CreateLogStream, PutLogEvents. The calls are
/// made on a thread of their own; a caller on the async runtime waits in
/// `block_in_place`.
pub struct ApiLogs {
    calls: std::sync::Mutex<std::sync::mpsc::Sender<LogCall>>,
}

type LogCall = (
    String,
    Value,
    std::sync::mpsc::Sender<Result<Value, CallError>>,
);

impl ApiLogs {
    pub fn new(config: &JoinConfig) -> Result<ApiLogs, JoinError> {
        let api = Api::new(config)?;
        let (tx, rx) = std::sync::mpsc::channel::<LogCall>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| JoinError(format!("cannot start the log writer: {e}")))?;
        std::thread::Builder::new()
            .name("skiff-logs".into())
            .spawn(move || {
                while let Ok((op, body, reply)) = rx.recv() {
                    let target = format!("Logs_20140328.{op}");
                    let _ = reply.send(rt.block_on(api.call("logs", &target, body)));
                }
            })
            .map_err(|e| JoinError(format!("cannot start the log writer: {e}")))?;
        Ok(ApiLogs {
            calls: std::sync::Mutex::new(tx),
        })
    }

    fn call(&self, op: &str, body: Value) -> Result<Value, CallError> {
        let (reply, answer) = std::sync::mpsc::channel();
        let sent = self
            .calls
            .lock()
            .map(|c| c.send((op.to_string(), body, reply)).is_ok())
            .unwrap_or(false);
        if !sent {
            return Err(CallError::Transport("the log writer is gone".into()));
        }
        let wait = || {
            answer
                .recv()
                .unwrap_or_else(|_| Err(CallError::Transport("the log writer is gone".into())))
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }
}

impl skiff_channel::logs::LogDestination for ApiLogs {
    fn open_stream(
        &self,
        group: &str,
        stream: &str,
        create_group: bool,
    ) -> Result<(), skiff_channel::logs::OpenStreamError> {
        use skiff_channel::logs::OpenStreamError;
        let exists = |e: &CallError| matches!(e, CallError::Refused { kind, .. } if kind == "ResourceAlreadyExistsException");
        if create_group
            && let Err(e) = self.call("CreateLogGroup", json!({"logGroupName": group}))
            && !exists(&e)
        {
            return Err(match e {
                CallError::Refused { kind, message } if kind == "InvalidParameterException" => {
                    OpenStreamError::InvalidGroupName(message)
                }
                other => OpenStreamError::Failed(other.to_string()),
            });
        }
        match self.call(
            "CreateLogStream",
            json!({"logGroupName": group, "logStreamName": stream}),
        ) {
            Ok(_) => Ok(()),
            Err(e) if exists(&e) => Ok(()),
            Err(CallError::Refused { kind, .. }) if kind == "ResourceNotFoundException" => {
                Err(OpenStreamError::NoSuchGroup(group.to_string()))
            }
            Err(e) => Err(OpenStreamError::Failed(e.to_string())),
        }
    }

    fn put_events(
        &self,
        group: &str,
        stream: &str,
        events: &[(i64, String)],
    ) -> Result<(), String> {
        // Within PutLogEvents' limits: 10,000 events, 1 MiB.
        let mut start = 0;
        while start < events.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < events.len()
                && end - start < 10_000
                && bytes + events[end].1.len() + 26 <= 1_048_576
            {
                bytes += events[end].1.len() + 26;
                end += 1;
            }
            let end = end.max(start + 1);
            let batch: Vec<Value> = events[start..end]
                .iter()
                .map(|(t, m)| json!({"timestamp": t, "message": m}))
                .collect();
            self.call(
                "PutLogEvents",
                json!({"logGroupName": group, "logStreamName": stream, "logEvents": batch}),
            )
            .map_err(|e| e.to_string())?;
            start = end;
        }
        Ok(())
    }
}
