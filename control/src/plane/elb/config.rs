//! The load balancers' configuration, as the plane runs it and the state
//! stores it (one document): load balancers, target groups with their
//! registered targets, listeners and rules.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// A resource's tags, in the order given.
pub type Tags = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancer {
    pub arn: String,
    pub name: String,
    /// application or network.
    pub kind: String,
    pub scheme: String,
    pub subnets: Vec<String>,
    /// Security group ids (application load balancers).
    pub security_groups: Vec<String>,
    pub created_at: f64,
    pub dns_name: String,
    /// Where its listeners bind.
    pub address: Ipv4Addr,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// Attributes set (the rest are AWS's defaults).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    pub enabled: bool,
    /// HTTP or TCP.
    pub protocol: String,
    /// `traffic-port` or a port number.
    pub port: String,
    pub path: Option<String>,
    pub interval: u64,
    pub timeout: u64,
    pub healthy: u32,
    pub unhealthy: u32,
    /// HTTP codes: `200`, `200,202`, `200-299`.
    pub matcher: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub id: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetGroup {
    pub arn: String,
    pub name: String,
    /// HTTP or TCP.
    pub protocol: String,
    pub port: u16,
    /// ip or instance.
    pub target_type: String,
    pub health: HealthCheck,
    /// round_robin or least_outstanding_requests.
    pub algorithm: String,
    /// Seconds a deregistered target drains.
    pub deregistration_delay: u64,
    pub targets: Vec<Target>,
    pub created_at: f64,
    #[serde(default)]
    pub tags: Tags,
}

/// What a listener or rule does with a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    Forward(String),
    /// Forward to several target groups, each request to one chosen in
    /// proportion to the weights (an application load balancer's
    /// `ForwardConfig`).
    Weighted(Vec<(String, u32)>),
    Fixed {
        status: u16,
        content_type: Option<String>,
        body: Option<String>,
    },
}

impl Action {
    /// The target groups it forwards to.
    pub fn groups(&self) -> Vec<&str> {
        match self {
            Action::Forward(tg) => vec![tg.as_str()],
            Action::Weighted(list) => list.iter().map(|(tg, _)| tg.as_str()).collect(),
            Action::Fixed { .. } => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    pub arn: String,
    pub lb_arn: String,
    pub port: u16,
    pub protocol: String,
    pub default_action: Action,
    /// Attributes set (the rest are AWS's defaults).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub arn: String,
    pub listener_arn: String,
    pub priority: u32,
    pub paths: Vec<String>,
    pub hosts: Vec<String>,
    pub action: Action,
    #[serde(default)]
    pub tags: Tags,
}

/// Everything configured, stored as one document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub load_balancers: BTreeMap<String, LoadBalancer>,
    pub target_groups: BTreeMap<String, TargetGroup>,
    pub listeners: BTreeMap<String, Listener>,
    pub rules: BTreeMap<String, Rule>,
}

impl Config {
    /// The target groups a load balancer's listeners and rules use.
    pub fn groups_of_lb(&self, lb_arn: &str) -> Vec<&str> {
        let mut out = Vec::new();
        for l in self.listeners.values().filter(|l| l.lb_arn == lb_arn) {
            let rules = self.rules.values().filter(|r| r.listener_arn == l.arn);
            for a in std::iter::once(&l.default_action).chain(rules.map(|r| &r.action)) {
                for tg in a.groups() {
                    if !out.contains(&tg) {
                        out.push(tg);
                    }
                }
            }
        }
        out
    }

    /// The load balancers using a target group.
    pub fn lbs_of_group(&self, tg_arn: &str) -> Vec<&str> {
        self.load_balancers
            .keys()
            .filter(|lb| self.groups_of_lb(lb).contains(&tg_arn))
            .map(String::as_str)
            .collect()
    }
}

/// The codes a matcher accepts (`200`, `200,202`, `200-299`).
pub fn parse_matcher(m: &str) -> Result<Vec<(u16, u16)>, String> {
    let bad = || {
        format!(
            "The matcher '{m}' is invalid: give codes from 200 to 499 as 200, 200,202 or 200-299"
        )
    };
    m.split(',')
        .map(|part| {
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (a.trim().parse::<u16>(), b.trim().parse::<u16>()),
                None => (part.trim().parse::<u16>(), part.trim().parse::<u16>()),
            };
            match (lo, hi) {
                (Ok(lo), Ok(hi)) if (200..=499).contains(&lo) && (lo..=499).contains(&hi) => {
                    Ok((lo, hi))
                }
                _ => Err(bad()),
            }
        })
        .collect()
}
