//! The HTTP front: AWS JSON 1.1 and 1.0 on `POST /`, the operation named
//! by `X-Amz-Target`, and the Query protocol (form-encoded); SigV4 verified
//! when credentials are configured.

use super::Api;
use crate::error::ApiError;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use serde_json::{Value, json};
use skiff_http_server::{CollectError, ServerConfig};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The largest request body accepted (RegisterTaskDefinition's limit is
/// 64 KiB of container definitions; this leaves room).
const MAX_BODY: usize = 4 << 20;

/// Connections the API serves at once (a quarter of them per peer).
const MAX_CONNECTIONS: usize = 1024;

/// How a JSON request came, to answer in kind.
#[derive(Clone, Copy)]
struct Dialect {
    /// `application/x-amz-json-1.0` (CloudWatch) rather than 1.1.
    json_1_0: bool,
    /// An "awsQueryCompatible" service (CloudWatch): errors also carry
    /// their Query-protocol code in `x-amzn-query-error`.
    query_compatible: bool,
}

fn respond(
    status: u16,
    body: &Value,
    error_type: Option<&str>,
    dialect: Dialect,
) -> Response<Full<Bytes>> {
    let content_type = if dialect.json_1_0 {
        "application/x-amz-json-1.0"
    } else {
        "application/x-amz-json-1.1"
    };
    let mut b = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", content_type)
        .header("x-amzn-requestid", uuid::Uuid::new_v4().to_string());
    if let Some(t) = error_type {
        b = b.header("x-amzn-errortype", t);
        if dialect.query_compatible
            && let Some(code) = super::cloudwatch::query_error_code(t)
        {
            let fault = if status >= 500 { "Receiver" } else { "Sender" };
            b = b.header("x-amzn-query-error", format!("{code};{fault}"));
        }
    }
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    b.body(Full::new(Bytes::from(bytes)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn error_response(e: &ApiError, dialect: Dialect) -> Response<Full<Bytes>> {
    if e.status >= 500 {
        tracing::error!(kind = e.kind, "{}", e.message);
    }
    respond(
        e.status,
        &json!({ "__type": e.kind, "message": e.message }),
        Some(e.kind),
        dialect,
    )
}

/// An answer in the protocol the request came in.
enum Answer {
    /// AWS JSON 1.1 (ECS, ECR, Logs, Cloud Map) or 1.0 (CloudWatch).
    Json(Value),
    /// Query protocol: the XML document.
    Xml(String),
}

fn xml_response(status: u16, body: String, request_id: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "text/xml;charset=UTF-8")
        .header("x-amzn-requestid", request_id)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

impl Api {
    async fn http(&self, req: skiff_http_server::Request) -> Response<Full<Bytes>> {
        if super::channel::is_opening(&req) {
            let plain = Dialect {
                json_1_0: false,
                query_compatible: false,
            };
            return match self.open_channel(req).await {
                Ok(upgrading) => upgrading,
                Err(e) => error_response(&e, plain),
            };
        }
        // The Query protocol (errors in XML too): a form-encoded body, or
        // an `Action` in the query string (EC2 and ELB take GET as well).
        let query = !req.headers().contains_key("x-amz-target")
            && (req
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| {
                    v.to_ascii_lowercase()
                        .starts_with("application/x-www-form-urlencoded")
                })
                || query_string_action(req.uri().query()));
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
        };
        let dialect = Dialect {
            json_1_0: header("content-type").starts_with("application/x-amz-json-1.0"),
            query_compatible: header("x-amz-target").starts_with(super::CLOUDWATCH_TARGET),
        };
        let mut flavor = super::protocol::query::Flavor::Ec2;
        let mut answer = self.answer(req, query, dialect, &mut flavor).await;
        // Which region this endpoint is, for clients that were not told
        // (skiff's own CLI learns it from a refusal).
        if let Ok(v) = http::HeaderValue::from_str(&self.core.config.region) {
            answer.headers_mut().insert("x-skiff-region", v);
        }
        answer
    }

    async fn answer(
        &self,
        req: skiff_http_server::Request,
        query: bool,
        dialect: Dialect,
        flavor: &mut super::protocol::query::Flavor,
    ) -> Response<Full<Bytes>> {
        let answer = self.http_inner(req, query, flavor).await;
        // Whatever the request read or wrote may be in memory only (changes
        // are applied before the store has made them durable): it is
        // answered once the store is durable past every change made so far.
        let store = &self.core.store;
        let answer = match store.synced(store.queued()).await {
            Ok(()) => answer,
            Err(e) => Err(e.into()),
        };
        match answer {
            Ok(Answer::Json(v)) => respond(200, &v, None, dialect),
            Ok(Answer::Xml(doc)) => {
                // The header carries the id the document gives.
                let id = request_id_of(&doc).unwrap_or_default().to_string();
                xml_response(200, doc, &id)
            }
            Err(e) if query => {
                if e.status >= 500 {
                    tracing::error!(kind = e.kind, "{}", e.message);
                }
                let id = uuid::Uuid::new_v4().to_string();
                xml_response(
                    e.status,
                    super::protocol::query::error_document(*flavor, &e, &id),
                    &id,
                )
            }
            Err(e) => error_response(&e, dialect),
        }
    }

    async fn http_inner(
        &self,
        req: skiff_http_server::Request,
        query: bool,
        flavor: &mut super::protocol::query::Flavor,
    ) -> Result<Answer, ApiError> {
        let (parts, body) = req.into_parts();
        let get_query = query && parts.method == http::Method::GET;
        if parts.method != http::Method::POST && !get_query {
            let expected = if query {
                "Query-protocol requests are GET or POST"
            } else {
                "AWS JSON 1.1 requests are POST / with X-Amz-Target"
            };
            return Err(ApiError {
                kind: if query {
                    "InvalidAction"
                } else {
                    "UnknownOperationException"
                },
                message: format!(
                    "{} {} is not an operation: {expected}",
                    parts.method,
                    parts.uri.path()
                ),
                status: 404,
            });
        }
        let body = body.collect_within(MAX_BODY).await.map_err(|e| match e {
            CollectError::Body(slow) if slow.is_timeout() => ApiError {
                kind: "RequestTimeoutException",
                message: format!("the request body did not arrive: {slow}"),
                status: 408,
            },
            CollectError::Body(broken) => {
                ApiError::serialization(format!("cannot read the request body: {broken}"))
            }
            CollectError::TooLarge { .. } => ApiError {
                kind: "RequestEntityTooLargeException",
                message: format!("the request body is larger than {MAX_BODY} bytes"),
                status: 413,
            },
        })?;
        let headers: Vec<(String, String)> = parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let config = &self.core.config;
        // Set when the request is signed with an agent key: it may call
        // only what an agent does.
        let mut agent_key = None;
        let region = if config.credentials.is_empty() {
            header("authorization")
                .and_then(super::protocol::sigv4::Authorization::parse)
                .map(|a| a.region)
                .unwrap_or_else(|| config.region.clone())
        } else {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let received = super::protocol::sigv4::Received {
                method: parts.method.as_str(),
                path: parts.uri.path(),
                query: parts.uri.query().unwrap_or(""),
                headers: &headers,
                body: &body,
            };
            let (auth, key) = self.verify(&received, now)?;
            agent_key = key;
            auth.region
        };
        if region != config.region {
            // One skiff serve is one region's endpoint, as each AWS region
            // has its own: a request signed for another is refused as AWS
            // refuses it, so nothing made in one region shows in another.
            return Err(ApiError::invalid_signature(format!(
                "Credential should be scoped to a valid region, not '{region}': this skiff serve answers region {} (its --region); set AWS_DEFAULT_REGION={} or run another skiff serve with --region {region}",
                config.region, config.region
            )));
        }
        if let Some(key) = &agent_key
            && query
        {
            return Err(crate::core::agent_keys::denied(
                key,
                "a Query-protocol operation",
            ));
        }
        if query {
            let params = if get_query {
                super::protocol::query::Params::parse(parts.uri.query().unwrap_or("").as_bytes())
            } else {
                super::protocol::query::Params::parse(&body)
            };

            let signed_for = header("authorization")
                .and_then(super::protocol::sigv4::Authorization::parse)
                .map(|a| a.service);
            let service =
                super::QueryService::of(signed_for.as_deref(), params.get("Version"))
                    .ok_or_else(|| {
                        ApiError::coded(
                            "InvalidAction",
                            format!(
                                "no Query-protocol service here for {} (skiff answers EC2 security groups and Elastic Load Balancing v2)",
                                signed_for.as_deref().or(params.get("Version")).unwrap_or("this request")
                            ),
                        )
                    })?;
            *flavor = service.flavor();
            params.check_xml_safe()?;
            return self
                .handle_query(service, &params, &region)
                .await
                .map(Answer::Xml);
        }
        let target = header("x-amz-target").ok_or_else(|| {
            ApiError::unknown_operation("(none: the X-Amz-Target header is missing)")
        })?;
        let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            serde_json::from_slice(&body).map_err(|e| {
                ApiError::serialization(format!("the request body is not valid JSON: {e}"))
            })?
        };
        if let Some(key) = &agent_key {
            crate::core::agent_keys::may_call(key, target, &value)?;
            if target == "AmazonEC2ContainerServiceV20141113.RegisterContainerInstance" {
                super::protocol::shapes::check(
                    super::protocol::shapes::JsonService::Ecs,
                    "RegisterContainerInstance",
                    &value,
                )?;
                return super::ecs::register_instance(&self.core, &value, &region, Some(key))
                    .await
                    .map(Answer::Json);
            }
        }
        if target == "AmazonEC2ContainerServiceV20141113.DiscoverPollEndpoint" {
            // Answered with the address the agent reached us at.
            super::protocol::shapes::check(
                super::protocol::shapes::JsonService::Ecs,
                "DiscoverPollEndpoint",
                &value,
            )?;
            let host = header("host").unwrap_or("127.0.0.1");
            return super::ecs::discover_poll_endpoint(&self.core, &value, host)
                .await
                .map(Answer::Json);
        }
        self.handle(target, &value, &region).await.map(Answer::Json)
    }
}

impl Api {
    /// Checks a request's signature against the configured credentials,
    /// then the agent keys: its authorization, and the agent key it was
    /// signed with, if it was.
    pub(crate) fn verify(
        &self,
        received: &super::protocol::sigv4::Received<'_>,
        now: i64,
    ) -> Result<
        (
            super::protocol::sigv4::Authorization,
            Option<crate::core::agent_keys::AgentKey>,
        ),
        ApiError,
    > {
        use super::protocol::sigv4;
        match sigv4::verify(received, &self.core.config.credentials, now) {
            Err(e) if e.kind == "UnrecognizedClientException" => {
                let key = received
                    .headers
                    .iter()
                    .find(|(n, _)| n == "authorization")
                    .and_then(|(_, v)| sigv4::Authorization::parse(v))
                    .and_then(|a| self.core.agent_keys.get(&a.access_key))
                    .ok_or(e)?;
                let one = std::collections::HashMap::from([(
                    key.access_key_id.clone(),
                    key.secret_access_key.clone(),
                )]);
                Ok((sigv4::verify(received, &one, now)?, Some(key)))
            }
            other => other.map(|a| (a, None)),
        }
    }
}

/// The request id a Query answer's document carries (EC2's `requestId`,
/// ELB's `RequestId`).
fn request_id_of(doc: &str) -> Option<&str> {
    ["<requestId>", "<RequestId>"].iter().find_map(|open| {
        let start = doc.find(open)? + open.len();
        let len = doc[start..].find('<')?;
        Some(&doc[start..start + len])
    })
}

/// Whether a query string names a Query-protocol `Action`.
fn query_string_action(query: Option<&str>) -> bool {
    query.is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "Action"))
}

/// Serves the API on `listener` until `shutdown` resolves, then finishes
/// the requests in flight (up to 30 seconds).
pub(crate) async fn serve(
    api: &Arc<Api>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    // Anyone who can reach the API may hold connections: bound them, in
    // all and per peer.
    let config = ServerConfig {
        // AWS SDKs read a ThrottlingException and retry with backoff.
        busy: (
            "application/x-amz-json-1.1",
            r#"{"__type":"ThrottlingException","message":"too many connections from this address; retry"}"#,
        ),
        ..ServerConfig::public("API", MAX_CONNECTIONS)
    };
    skiff_http_server::serve(listener, &config, shutdown, |_peer| {
        let api = Arc::clone(api);
        service_fn(move |req| {
            let api = Arc::clone(&api);
            async move { Ok::<_, Infallible>(api.http(req).await) }
        })
    })
    .await;
    Ok(())
}
