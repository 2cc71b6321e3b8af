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
            self.here("ecs", body, region)?;
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
            self.here("logs", body, region)?;
            let store = self.core.logs.clone();
            let (op, body, region) = (op.to_string(), body.clone(), region.to_string());
            return tokio::task::spawn_blocking(move || logs::handle(&store, &op, &body, &region))
                .await
                .map_err(|e| ApiError::server(format!("the logs worker failed: {e}")))?;
        }
        Err(ApiError::unknown_operation(target))
    }

    /// Refuses a request naming a resource of `service` by an ARN of
    /// another region or account (see [`foreign_arn`]): nothing of theirs is here (one `skiff
    /// serve` is one region of one account), and the ARN's last part must
    /// not find the local resource of that name.
    fn here(&self, service: &str, body: &serde_json::Value, region: &str) -> Result<(), ApiError> {
        let account = &self.core.config.account_id;
        match foreign_arn(body, service, region, account) {
            None => Ok(()),
            Some(arn) => Err(ApiError::invalid_parameter(format!(
                "{arn} is not of this region and account ({region}, {account}): one skiff serve is one region of one account, and nothing of another is here."
            ))),
        }
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

/// The first ARN of `service` among the request's own members (strings,
/// and lists of strings, at the top: where ECS and Logs name the resources
/// a request is about) whose region or account is not `region` /
/// `account`. What a request carries deeper — a container's environment,
/// a log event's message — is data, and may name anything.
fn foreign_arn(
    v: &serde_json::Value,
    service: &str,
    region: &str,
    account: &str,
) -> Option<String> {
    use serde_json::Value;
    let foreign = |s: &str| {
        let parts: Vec<&str> = s.splitn(6, ':').collect();
        parts.len() == 6
            && parts[0] == "arn"
            && parts[2] == service
            && (parts[3] != region || parts[4] != account)
    };
    let members = v.as_object()?;
    members.values().find_map(|m| match m {
        Value::String(s) => foreign(s).then(|| s.clone()),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .find(|s| foreign(s))
            .map(String::from),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::foreign_arn;
    use serde_json::json;

    #[test]
    fn arns_of_another_region_or_account_naming_what_a_request_is_about_are_found() {
        let here = |v| foreign_arn(&v, "ecs", "eu-west-1", "123456789012");
        let own = "arn:aws:ecs:eu-west-1:123456789012:cluster/apps";
        let west = "arn:aws:ecs:us-west-2:123456789012:cluster/apps";
        let theirs = "arn:aws:ecs:eu-west-1:999999999999:service/apps/web";
        assert_eq!(here(json!({"cluster": own, "services": ["web"]})), None);
        assert_eq!(here(json!({"cluster": west})).as_deref(), Some(west));
        assert_eq!(
            here(json!({"services": ["web", theirs]})).as_deref(),
            Some(theirs)
        );
        // Other services' ARNs (roles, target groups) are not this check's.
        let role = "arn:aws:iam::999999999999:role/r";
        let tg = "arn:aws:elasticloadbalancing:us-west-2:1:targetgroup/t/1";
        assert_eq!(here(json!({"executionRoleArn": role, "tg": tg})), None);
        // Nor is data: an environment value may name another region's
        // cluster (a task that manages it), a log line may quote one.
        let env =
            json!({"containerDefinitions": [{"environment": [{"name": "C", "value": west}]}]});
        assert_eq!(here(env), None);
        assert_eq!(here(json!({"logEvents": [{"message": west}]})), None);
    }
}
