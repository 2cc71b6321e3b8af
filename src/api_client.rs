//! A client of skiff's ECS API (AWS JSON 1.1 over HTTP, SigV4-signed), for
//! the commands people type: `skiff ps`, `services`, `logs`, `deploy`.

use clap::Args;
use serde_json::Value;
use std::fmt;

/// Where the API is and which cluster to look at.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The skiff API (`skiff serve --api-addr`).
    #[arg(
        long,
        env = "SKIFF_ENDPOINT",
        default_value = "http://127.0.0.1:7700",
        value_name = "URL"
    )]
    pub endpoint: String,
    /// The cluster.
    #[arg(long, default_value = "default", value_name = "NAME")]
    pub cluster: String,
}

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// The API answered with an error (`__type`, message).
    Api { kind: String, message: String },
    /// No answer: the server is not there, or spoke something else.
    Transport(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Api { kind, message } => write!(f, "{kind}: {message}"),
            CallError::Transport(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CallError {}

/// An API client. Signs with the keys the environment or the AWS CLI's
/// files give (see [`crate::aws_config`]; a skiff with credentials
/// configured needs them), otherwise with placeholder keys, which a skiff
/// without credentials accepts. Signs for the region they give; when
/// none is given, for the one the server says it is.
pub struct Api {
    http: reqwest::Client,
    url: reqwest::Url,
    host: String,
    region: std::sync::Mutex<String>,
    /// The region was configured (not to be learned from the server).
    region_given: bool,
    key: String,
    secret: String,
}

impl Api {
    pub fn new(endpoint: &str) -> anyhow::Result<Api> {
        let url = reqwest::Url::parse(endpoint)
            .map_err(|e| anyhow::anyhow!("--endpoint {endpoint:?} is not a URL: {e}"))?;
        if url.scheme() != "http" {
            // `skiff serve` speaks plain HTTP (on loopback unless it has
            // credentials); put a TLS proxy in front for anything else.
            anyhow::bail!(
                "--endpoint {endpoint:?} must be an http:// URL: skiff's API is plain HTTP"
            );
        }
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => anyhow::bail!("--endpoint {endpoint:?} names no host"),
        };
        // reqwest is built without a TLS provider of its own, and insists
        // on one even for plain HTTP.
        skiff_registry::remote::ensure_tls_provider();
        let settings = crate::aws_config::settings();
        Ok(Api {
            // A stalled server fails a call rather than hanging `deploy`
            // or `logs -f` forever.
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .map_err(|e| anyhow::anyhow!("cannot build an HTTP client: {e}"))?,
            url,
            host,
            region_given: settings.region.is_some(),
            region: std::sync::Mutex::new(settings.region.unwrap_or_else(|| "us-east-1".into())),
            key: settings.access_key_id.unwrap_or_else(|| "skiff".into()),
            secret: settings.secret_access_key.unwrap_or_else(|| "skiff".into()),
        })
    }

    /// Calls `AmazonEC2ContainerServiceV20141113.<op>`.
    pub async fn ecs(&self, op: &str, body: Value) -> Result<Value, CallError> {
        self.call(
            "ecs",
            &format!("AmazonEC2ContainerServiceV20141113.{op}"),
            body,
        )
        .await
    }

    /// Calls `AmazonEC2ContainerRegistry_V20150921.<op>`.
    pub async fn ecr(&self, op: &str, body: Value) -> Result<Value, CallError> {
        self.call(
            "ecr",
            &format!("AmazonEC2ContainerRegistry_V20150921.{op}"),
            body,
        )
        .await
    }

    /// Calls `Logs_20140328.<op>`.
    pub async fn logs(&self, op: &str, body: Value) -> Result<Value, CallError> {
        self.call("logs", &format!("Logs_20140328.{op}"), body)
            .await
    }

    async fn call(&self, service: &str, target: &str, body: Value) -> Result<Value, CallError> {
        match self.call_once(service, target, &body).await {
            // Not told a region: sign for the one the server is.
            Err((CallError::Api { kind, .. }, Some(theirs)))
                if kind == "InvalidSignatureException" && !self.region_given =>
            {
                if let Ok(mut r) = self.region.lock() {
                    *r = theirs;
                }
                self.call_once(service, target, &body)
                    .await
                    .map_err(|(e, _)| e)
            }
            other => other.map_err(|(e, _)| e),
        }
    }

    /// One call; a failure comes with the region the server says it is.
    async fn call_once(
        &self,
        service: &str,
        target: &str,
        body: &Value,
    ) -> Result<Value, (CallError, Option<String>)> {
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let (status, text, theirs) = self
            .post(service, "application/x-amz-json-1.1", Some(target), bytes)
            .await?;
        let v: Value = serde_json::from_str(&text).map_err(|_| {
            (
                CallError::Transport(format!(
                    "{} answered HTTP {status} with something other than AWS JSON: is it skiff's API?",
                    self.url
                )),
                None,
            )
        })?;
        if status.is_success() {
            return Ok(v);
        }
        let kind = v["__type"]
            .as_str()
            .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
            .unwrap_or_else(|| format!("HTTP {status}"));
        let message = v["message"]
            .as_str()
            .or_else(|| v["Message"].as_str())
            .unwrap_or("")
            .to_string();
        Err((CallError::Api { kind, message }, theirs))
    }

    /// Calls ELBv2's `action` (the query protocol: a form in, XML out):
    /// the answer's XML.
    pub async fn elb(&self, action: &str, params: &[(&str, &str)]) -> Result<String, CallError> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("Action", action);
        form.append_pair("Version", "2015-12-01");
        for (k, v) in params {
            form.append_pair(k, v);
        }
        let body = form.finish().into_bytes();
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let once = async || {
            let (status, text, theirs) = self
                .post("elasticloadbalancing", content_type, None, body.clone())
                .await?;
            if status.is_success() {
                return Ok(text);
            }
            let tag = |t: &str| {
                let open = format!("<{t}>");
                let start = text.find(&open)? + open.len();
                let end = text[start..].find('<')? + start;
                Some(text[start..end].to_string())
            };
            let kind = tag("Code").unwrap_or_else(|| format!("HTTP {status}"));
            let message = tag("Message").unwrap_or_default();
            Err((CallError::Api { kind, message }, theirs))
        };
        match once().await {
            Err((CallError::Api { kind, .. }, Some(theirs)))
                if kind == "InvalidSignatureException" && !self.region_given =>
            {
                if let Ok(mut r) = self.region.lock() {
                    *r = theirs;
                }
                once().await.map_err(|(e, _)| e)
            }
            other => other.map_err(|(e, _)| e),
        }
    }

    /// POSTs `body`, signed for `service`: the status, the answer's text
    /// and the region the server says it is, if not the one signed for.
    async fn post(
        &self,
        service: &str,
        content_type: &str,
        target: Option<&str>,
        bytes: Vec<u8>,
    ) -> Result<(reqwest::StatusCode, String, Option<String>), (CallError, Option<String>)> {
        let region = self
            .region
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|_| "us-east-1".into());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut headers = vec![("host", self.host.as_str()), ("content-type", content_type)];
        if let Some(target) = target {
            headers.push(("x-amz-target", target));
        }
        let signed = skiff_control::sigv4::sign_post(
            &headers,
            &bytes,
            &self.key,
            &self.secret,
            &region,
            service,
            now,
        );
        let mut req = self
            .http
            .post(self.url.clone())
            .header("content-type", content_type);
        if let Some(target) = target {
            req = req.header("x-amz-target", target);
        }
        for (n, v) in signed {
            req = req.header(n, v);
        }
        let resp = req.body(bytes).send().await.map_err(|e| {
            (
                CallError::Transport(format!(
                    "cannot reach skiff's API at {}: {e} (is `skiff serve` running? --endpoint or SKIFF_ENDPOINT name it)",
                    self.url
                )),
                None,
            )
        })?;
        let status = resp.status();
        let theirs = resp
            .headers()
            .get("x-skiff-region")
            .and_then(|v| v.to_str().ok())
            .filter(|r| *r != region)
            .map(String::from);
        let text = resp.text().await.map_err(|e| {
            (
                CallError::Transport(format!("the API's answer was cut short: {e}")),
                None,
            )
        })?;
        Ok((status, text, theirs))
    }

    /// Every page of a List operation: the items under `key`.
    pub async fn ecs_all(
        &self,
        op: &str,
        mut body: Value,
        key: &str,
    ) -> Result<Vec<Value>, CallError> {
        let mut out = Vec::new();
        loop {
            let page = self.ecs(op, body.clone()).await?;
            if let Some(items) = page[key].as_array() {
                out.extend(items.iter().cloned());
            }
            match page["nextToken"].as_str() {
                Some(t) if !t.is_empty() => body["nextToken"] = Value::from(t),
                _ => return Ok(out),
            }
        }
    }
}
