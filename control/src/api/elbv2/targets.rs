//! Targets: RegisterTargets, DeregisterTargets, DescribeTargetHealth.

use super::{Config, Target, TargetGroup, finish, group, invalid, port_param, response};
use crate::api::protocol::query::Params;
use crate::core::Core;
use crate::core::LOCAL_INSTANCE_ID;
use crate::core::state::State;
use crate::error::ApiError;
use std::net::Ipv4Addr;

pub(super) fn register_targets(
    state: &State,
    cfg: &mut Config,
    p: &Params,
    remove: bool,
) -> Result<String, ApiError> {
    let arn = p.required("TargetGroupArn")?.to_string();
    let mut tg = group(cfg, &arn)?.clone();
    let given = p.list("Targets.member");
    if given.is_empty() {
        return Err(invalid("Give at least one target"));
    }
    for t in given {
        let id = t
            .required("Id")
            .map_err(|e| invalid(e.message))?
            .to_string();
        let port = port_param(&t, "Port")?.unwrap_or(tg.port);
        check_target(state, &tg, &id)?;
        let target = Target { id, port };
        if remove {
            if !tg.targets.contains(&target) {
                return Err(ApiError::coded(
                    "InvalidTarget",
                    format!(
                        "The target '{}:{}' is not registered in the target group",
                        target.id, target.port
                    ),
                ));
            }
            tg.targets.retain(|x| *x != target);
        } else if !tg.targets.contains(&target) {
            tg.targets.push(target);
        }
    }
    if tg.targets.len() > 1000 {
        return Err(ApiError::coded(
            "TooManyTargets",
            "A target group holds at most 1000 targets",
        ));
    }
    cfg.target_groups.insert(arn, tg);
    Ok(finish(if remove {
        response("DeregisterTargetsResponse", "DeregisterTargetsResult")
    } else {
        response("RegisterTargetsResponse", "RegisterTargetsResult")
    }))
}

/// A target skiff can reach: a loopback address (ip), or this machine's
/// container instance (instance: its published ports on 127.0.0.1).
pub(super) fn check_target(state: &State, tg: &TargetGroup, id: &str) -> Result<(), ApiError> {
    match tg.target_type.as_str() {
        "ip" => match id.parse::<Ipv4Addr>() {
            Ok(ip) if ip.is_loopback() => Ok(()),
            _ => Err(ApiError::coded(
                "InvalidTarget",
                format!(
                    "The IP address '{id}' is not a loopback address: skiff only ever sends to 127.0.0.0/8"
                ),
            )),
        },
        _ => {
            let known = state
                .instances
                .values()
                .any(|i| i.value.ec2_instance_id.as_deref() == Some(id) && id == LOCAL_INSTANCE_ID);
            if known {
                Ok(())
            } else {
                Err(ApiError::coded(
                    "InvalidTarget",
                    format!(
                        "The instance '{id}' is not this machine's container instance ({LOCAL_INSTANCE_ID})"
                    ),
                ))
            }
        }
    }
}

pub(super) fn describe_health(core: &Core, cfg: &Config, p: &Params) -> Result<String, ApiError> {
    let arn = p.required("TargetGroupArn")?;
    let tg = group(cfg, arn)?;
    let asked: Vec<Target> = p
        .list("Targets.member")
        .into_iter()
        .map(|t| {
            Ok(Target {
                id: t
                    .required("Id")
                    .map_err(|e| invalid(e.message))?
                    .to_string(),
                port: port_param(&t, "Port")?.unwrap_or(tg.port),
            })
        })
        .collect::<Result<_, ApiError>>()?;
    let health = core.elb.health(tg, cfg);
    let mut x = response("DescribeTargetHealthResponse", "DescribeTargetHealthResult");
    x.open("TargetHealthDescriptions");
    for h in health {
        if !asked.is_empty() && !asked.contains(&h.target) {
            continue;
        }
        x.open("member")
            .open("Target")
            .text("Id", &h.target.id)
            .text("Port", h.target.port)
            .text("AvailabilityZone", "local")
            .close()
            .text("HealthCheckPort", h.health_check_port)
            .open("TargetHealth")
            .text("State", h.state)
            .text_opt("Reason", h.reason)
            .text_opt("Description", h.description.as_ref())
            .close()
            .close();
    }
    x.close();
    Ok(finish(x))
}
