//! Listeners and their default actions: CreateListener,
//! DescribeListeners (forward or fixed-response).

use super::{
    Action, Config, Listener, LoadBalancer, finish, group, invalid, lb, not_found, port_param,
    response, short_id, tags,
};
use crate::api::protocol::query::{Params, Xml};
use crate::error::ApiError;

/// A listener's or rule's actions: one forward (to one target group, or
/// to several by weight) or one fixed response.
pub(super) fn parse_action(
    cfg: &Config,
    list: Vec<Params>,
    lb: &LoadBalancer,
) -> Result<Action, ApiError> {
    let [a] = list.as_slice() else {
        return Err(invalid(
            "Give exactly one action: forward or fixed-response",
        ));
    };
    match a.required("Type").map_err(|e| invalid(e.message))? {
        "forward" => {
            // (target group, weight): TargetGroupArn alone weighs 1.
            let mut tgs: Vec<(String, u32)> = a
                .get("TargetGroupArn")
                .map(|t| (t.to_string(), 1))
                .into_iter()
                .collect();
            for t in a.list("ForwardConfig.TargetGroups.member") {
                let arn = t.required("TargetGroupArn")?.to_string();
                let weight = match t.int("Weight").map_err(|e| invalid(e.message))? {
                    None => 1,
                    Some(w) if (0..=999).contains(&w) => w as u32,
                    Some(w) => {
                        return Err(invalid(format!(
                            "A target group's Weight is from 0 to 999, not {w}"
                        )));
                    }
                };
                match tgs.iter_mut().find(|(a, _)| *a == arn) {
                    Some(given) => given.1 = weight,
                    None => tgs.push((arn, weight)),
                }
            }
            if a.get("ForwardConfig.TargetGroupStickinessConfig.Enabled") == Some("true") {
                return Err(invalid(
                    "Target group stickiness is not supported by skiff: each request is weighed on its own",
                ));
            }
            if tgs.is_empty() {
                return Err(invalid("A forward action needs a target group"));
            }
            if tgs.len() > 5 {
                return Err(invalid("A forward action takes at most 5 target groups"));
            }
            if tgs.len() > 1 && lb.kind != "application" {
                return Err(invalid(
                    "A network load balancer's forward action takes one target group",
                ));
            }
            for (tg, _) in &tgs {
                check_forward_group(cfg, lb, tg)?;
            }
            if tgs.iter().all(|(_, w)| *w == 0) {
                return Err(invalid("At least one target group needs a weight above 0"));
            }
            match tgs.as_slice() {
                [(tg, _)] => Ok(Action::Forward(tg.clone())),
                _ => Ok(Action::Weighted(tgs)),
            }
        }
        "fixed-response" if lb.kind == "application" => {
            let status = a
                .int("FixedResponseConfig.StatusCode")
                .map_err(|e| invalid(e.message))?
                .filter(|s| (200..=599).contains(s))
                .ok_or_else(|| invalid("A fixed response needs a StatusCode from 200 to 599"))?;
            Ok(Action::Fixed {
                status: status as u16,
                content_type: a.get("FixedResponseConfig.ContentType").map(String::from),
                body: a.get("FixedResponseConfig.MessageBody").map(String::from),
            })
        }
        other => Err(invalid(format!(
            "Action type '{other}' is not supported by skiff here: use forward{}",
            if lb.kind == "application" {
                " or fixed-response"
            } else {
                ""
            }
        ))),
    }
}

pub(super) fn create_listener(cfg: &mut Config, p: &Params) -> Result<String, ApiError> {
    let lb_arn = p.required("LoadBalancerArn")?.to_string();
    let lb = lb(cfg, &lb_arn)?.clone();
    let protocol = p
        .get("Protocol")
        .unwrap_or(if lb.kind == "application" {
            "HTTP"
        } else {
            "TCP"
        })
        .to_string();
    let wants = if lb.kind == "application" {
        "HTTP"
    } else {
        "TCP"
    };
    if protocol != wants {
        return Err(ApiError::coded(
            "UnsupportedProtocol",
            format!(
                "Protocol '{protocol}': a{} {} load balancer's listeners here are {wants} (no certificates for loopback)",
                if lb.kind == "application" { "n" } else { "" },
                lb.kind
            ),
        ));
    }
    let port =
        port_param(p, "Port")?.ok_or_else(|| invalid("A listener port must be specified"))?;
    if cfg
        .listeners
        .values()
        .any(|l| l.lb_arn == lb_arn && l.port == port)
    {
        return Err(ApiError::coded(
            "DuplicateListener",
            "A listener already exists on this port for this load balancer",
        ));
    }
    if let Some(other) = cfg.listeners.values().find(|l| {
        l.port == port
            && cfg
                .load_balancers
                .get(&l.lb_arn)
                .is_some_and(|o| o.address == lb.address)
    }) {
        return Err(ApiError::coded(
            "InvalidConfigurationRequest",
            format!(
                "Port {port} on {} is already used by listener {}",
                lb.address, other.arn
            ),
        ));
    }
    // The port must be free on the host now: bind it to find out.
    if let Err(e) = std::net::TcpListener::bind((lb.address, port)) {
        return Err(ApiError::coded(
            "InvalidConfigurationRequest",
            format!("The listener cannot bind {}:{port}: {e}", lb.address),
        ));
    }
    let action = parse_action(cfg, p.list("DefaultActions.member"), &lb)?;
    let id = short_id();
    let tail = lb_arn.split("loadbalancer/").nth(1).unwrap_or_default();
    let listener = Listener {
        arn: format!(
            "{}:listener/{tail}/{id}",
            lb_arn.split(":loadbalancer/").next().unwrap_or_default()
        ),
        lb_arn,
        port,
        protocol,
        default_action: action,
        tags: tags::parse(p, "Tags")?,
        attributes: Default::default(),
    };
    let mut x = response("CreateListenerResponse", "CreateListenerResult");
    x.open("Listeners");
    listener_xml(&mut x, &listener);
    x.close();
    cfg.listeners.insert(listener.arn.clone(), listener);
    Ok(finish(x))
}

/// Whether `lb` may forward to target group `tg`: its protocol fits the
/// load balancer, and no other load balancer uses it.
fn check_forward_group(cfg: &Config, lb: &LoadBalancer, tg: &str) -> Result<(), ApiError> {
    let g = group(cfg, tg)?;
    let wants = if lb.kind == "application" {
        "HTTP"
    } else {
        "TCP"
    };
    if g.protocol != wants {
        return Err(ApiError::coded(
            "IncompatibleProtocols",
            format!(
                "The {} target group cannot be used by a{} {} load balancer",
                g.protocol,
                if lb.kind == "application" { "n" } else { "" },
                lb.kind
            ),
        ));
    }
    if let Some(other) = cfg.lbs_of_group(tg).into_iter().find(|l| *l != lb.arn) {
        return Err(ApiError::coded(
            "TargetGroupAssociationLimit",
            format!("The target group is already used by load balancer {other}; skiff allows one"),
        ));
    }
    Ok(())
}

pub(super) fn action_xml(x: &mut Xml, name: &'static str, a: &Action) {
    x.open(name).open("member");
    match a {
        Action::Forward(tg) => {
            x.text("Type", "forward")
                .text("TargetGroupArn", tg)
                .text("Order", 1);
            x.open("ForwardConfig")
                .open("TargetGroups")
                .open("member")
                .text("TargetGroupArn", tg)
                .text("Weight", 1)
                .close()
                .close()
                .close();
        }
        Action::Weighted(list) => {
            x.text("Type", "forward").text("Order", 1);
            x.open("ForwardConfig").open("TargetGroups");
            for (tg, w) in list {
                x.open("member")
                    .text("TargetGroupArn", tg)
                    .text("Weight", w)
                    .close();
            }
            x.close().close();
        }
        Action::Fixed {
            status,
            content_type,
            body,
        } => {
            x.text("Type", "fixed-response").text("Order", 1);
            x.open("FixedResponseConfig")
                .text("StatusCode", status)
                .text_opt("ContentType", content_type.as_ref())
                .text_opt("MessageBody", body.as_ref())
                .close();
        }
    }
    x.close().close();
}

pub(super) fn listener_xml(x: &mut Xml, l: &Listener) {
    x.open("member")
        .text("ListenerArn", &l.arn)
        .text("LoadBalancerArn", &l.lb_arn)
        .text("Port", l.port)
        .text("Protocol", &l.protocol);
    action_xml(x, "DefaultActions", &l.default_action);
    x.close();
}

pub(super) fn describe_listeners(cfg: &Config, p: &Params) -> Result<String, ApiError> {
    let arns = p.strings("ListenerArns.member");
    let lb_arn = p.get("LoadBalancerArn");
    if lb_arn.is_none() && arns.is_empty() {
        return Err(invalid("Give a load balancer ARN or listener ARNs"));
    }
    if let Some(a) = lb_arn {
        lb(cfg, a)?;
    }
    for a in &arns {
        if !cfg.listeners.contains_key(a) {
            return Err(not_found(
                "ListenerNotFound",
                &format!("One or more listeners ('{a}')"),
            ));
        }
    }
    let mut x = response("DescribeListenersResponse", "DescribeListenersResult");
    x.open("Listeners");
    for l in cfg.listeners.values() {
        if (arns.is_empty() || arns.contains(&l.arn)) && lb_arn.is_none_or(|a| a == l.lb_arn) {
            listener_xml(&mut x, l);
        }
    }
    x.close();
    Ok(finish(x))
}
