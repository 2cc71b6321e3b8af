//! The AWS-facing layer: one module per AWS service skiff answers, each
//! thin — parse the request, call the core, shape the answer — over the
//! protocols they share ([`protocol`]: AWS JSON 1.0/1.1, the Query
//! protocol, SigV4) and the HTTP front ([`http`]).

pub mod catalog;
pub(crate) mod channel;
mod cloudmap;
mod cloudmap_more;
pub(crate) mod cloudwatch;
pub(crate) mod ec2;
mod ec2_network;
mod ec2_rules;
pub(crate) mod ecr;
mod ecr_cache;
mod ecr_images;
mod ecr_meta;
pub(crate) mod ecr_replication;
mod ecr_templates;
pub(crate) mod ecs;
pub(crate) mod ecs_express;
pub(crate) mod elbv2;
pub(crate) mod http;
pub(crate) mod logs;
mod logs_groups;
pub mod protocol;

use crate::core::Core;
use crate::error::ApiError;
use std::sync::{Arc, OnceLock};

/// CloudWatch's `X-Amz-Target` prefix.
pub(crate) const CLOUDWATCH_TARGET: &str = "GraniteServiceVersion20100801.";

/// The services answered in the Query protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryService {
    Ec2,
    Elbv2,
}

impl QueryService {
    /// Which service a request is for: by its signature's scope, else by
    /// the API version it names.
    pub fn of(signed_for: Option<&str>, version: Option<&str>) -> Option<QueryService> {
        match (signed_for, version) {
            (Some("ec2"), _) | (None, Some("2016-11-15")) => Some(QueryService::Ec2),
            (Some("elasticloadbalancing"), _) | (None, Some("2015-12-01")) => {
                Some(QueryService::Elbv2)
            }
            _ => None,
        }
    }

    /// How its errors look.
    pub fn flavor(self) -> protocol::query::Flavor {
        match self {
            QueryService::Ec2 => protocol::query::Flavor::Ec2,
            QueryService::Elbv2 => protocol::query::Flavor::Query,
        }
    }
}

/// The API: the core, and what only the API layer needs.
pub(crate) struct Api {
    pub(crate) core: Arc<Core>,
    /// The registry `skiff serve` runs beside the API, for the ECR
    /// operations (set once, by `attach_registry`).
    pub(crate) registry: OnceLock<skiff_registry::Registry>,
    /// ECR lifecycle policy previews started, by repository.
    pub(crate) ecr_previews: ecr::Previews,
}

impl Api {
    pub(crate) fn new(core: Arc<Core>) -> Api {
        Api {
            core,
            registry: OnceLock::new(),
            ecr_previews: Default::default(),
        }
    }

    /// Handles one AWS JSON 1.1 request: `target` is the `X-Amz-Target`
    /// header, `region` the request's signing region.
    pub(crate) async fn handle(
        &self,
        target: &str,
        body: &serde_json::Value,
        region: &str,
    ) -> Result<serde_json::Value, ApiError> {
        use catalog::Service;
        use protocol::shapes::{JsonService, check};
        if let Some(op) = target.strip_prefix("AmazonEC2ContainerServiceV20141113.") {
            catalog::admit(Service::Ecs, op)?;
            check(JsonService::Ecs, op, body)?;
            if op.ends_with("ExpressGatewayService") {
                return ecs_express::handle(self, op, body, region).await;
            }
            return ecs::handle(&self.core, op, body, region).await;
        }
        if let Some(op) = target.strip_prefix("AmazonEC2ContainerRegistry_V20150921.") {
            catalog::admit(Service::Ecr, op)?;
            check(JsonService::Ecr, op, body)?;
            return ecr::handle(self, op, body, region).await;
        }
        if let Some(op) = target.strip_prefix("Route53AutoNaming_v20170314.") {
            catalog::admit(Service::CloudMap, op)?;
            check(JsonService::CloudMap, op, body)?;
            return cloudmap::handle(&self.core, op, body, region).await;
        }
        if let Some(op) = target.strip_prefix(CLOUDWATCH_TARGET) {
            catalog::admit(Service::CloudWatch, op)?;
            check(JsonService::CloudWatch, op, body)?;
            // The counts up to this moment, not the last tick's.
            crate::core::lb_metrics::measure(&self.core.elb, &self.core.metrics, false);
            return cloudwatch::handle(&self.core.metrics, op, body);
        }
        if let Some(op) = target.strip_prefix("Logs_20140328.") {
            catalog::admit(Service::Logs, op)?;
            check(JsonService::Logs, op, body)?;
            let store = self.core.logs.clone();
            let (op, body, region) = (op.to_string(), body.clone(), region.to_string());
            return tokio::task::spawn_blocking(move || logs::handle(&store, &op, &body, &region))
                .await
                .map_err(|e| ApiError::server(format!("the logs worker failed: {e}")))?;
        }
        Err(ApiError::unknown_operation(target))
    }

    /// Handles a Query-protocol request (EC2 security groups) and returns
    /// its XML answer.
    pub(crate) async fn handle_query(
        &self,
        service: QueryService,
        params: &protocol::query::Params,
        region: &str,
    ) -> Result<String, ApiError> {
        let action = params.required("Action")?;
        catalog::admit(
            match service {
                QueryService::Ec2 => catalog::Service::Ec2,
                QueryService::Elbv2 => catalog::Service::Elbv2,
            },
            action,
        )?;
        match service {
            QueryService::Ec2 => ec2::handle(&self.core, action, params, region).await,
            QueryService::Elbv2 => elbv2::handle(&self.core, action, params, region).await,
        }
    }
}
