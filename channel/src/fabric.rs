//! The network fabric: what every task's socket policy consults. It holds
//! the security groups' rules (mirrored from the state after each commit),
//! which task address is in which groups (set by the agent while a task
//! runs), and the names service discovery answers.
//!
//! Checks happen on the sending side, where skiff knows both ends: a
//! connection or datagram from a task leaves only if one of the sender's
//! groups allows it out (egress) and, when the destination is an awsvpc
//! task, one of the destination's groups lets it in (ingress). No task can
//! send any other way, so this is the whole firewall between tasks.
//!
//! It is state both sides of the channel hold, not a message: the control
//! plane writes the rules and the names (EC2's and Cloud Map's APIs, the
//! load balancers), the agent writes memberships and checks every socket
//! against it (`skiff-agent`'s network resource). Inside `skiff serve` the
//! two hold the same `Fabric`; an agent on another machine keeps a copy
//! its channel keeps current.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::RwLock;

/// An IPv4 block a rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    base: Ipv4Addr,
    prefix: u8,
}

impl Cidr {
    /// 0.0.0.0/0: anywhere (which for a task means anywhere on loopback).
    pub const ANY: Cidr = Cidr {
        base: Ipv4Addr::UNSPECIFIED,
        prefix: 0,
    };

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        };
        u32::from(ip) & mask == u32::from(self.base)
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;

    fn try_from(s: String) -> Result<Cidr, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("CIDR block {s} is malformed"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("CIDR block {s} is malformed"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("CIDR block {s} is malformed"))?;
        let cidr = Cidr { base: ip, prefix };
        if !cidr.contains(ip) {
            return Err(format!("CIDR block {s} is malformed: it has host bits set"));
        }
        if prefix != 0 && !(prefix >= 8 && ip.octets()[0] == 127) {
            return Err(format!(
                "CIDR block {s} is outside loopback: skiff tasks only ever have 127.0.0.0/8 addresses (use 0.0.0.0/0 or a block inside 127.0.0.0/8)"
            ));
        }
        Ok(cidr)
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        format!("{}/{}", c.base, c.prefix)
    }
}

/// Where a rule's traffic comes from (ingress) or goes to (egress).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    Cidr(Cidr),
    Group(String),
}

/// One rule: a protocol (`tcp`, `udp`, `icmp`, or `-1` for all), a port
/// range (ignored for `-1`), and a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub id: String,
    pub protocol: String,
    pub from_port: i64,
    pub to_port: i64,
    pub source: Source,
    /// A person's note (EC2's rule description); no effect on traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Rule {
    /// The same rule, ignoring its id (EC2 refuses duplicates).
    pub fn same(&self, other: &Rule) -> bool {
        self.protocol == other.protocol
            && (self.protocol == "-1"
                || (self.from_port == other.from_port && self.to_port == other.to_port))
            && self.source == other.source
    }
}

/// A transport protocol, as rules name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

#[derive(Debug, Default)]
struct Groups {
    /// Each group's (ingress, egress) rules.
    rules: HashMap<String, (Vec<Rule>, Vec<Rule>)>,
    /// Each awsvpc task address's groups.
    members: HashMap<Ipv4Addr, Vec<String>>,
    /// Service discovery: name → addresses.
    names: HashMap<String, Vec<Ipv4Addr>>,
    /// Machines' task address blocks.
    routes: Vec<Route>,
}

/// See the module's documentation. Cheap to share (`Arc`).
#[derive(Debug, Default)]
pub struct Fabric {
    inner: RwLock<Groups>,
    /// Grows with every change of rules or names (not memberships): an
    /// agent's channel sends [`Rules`] again when it moved.
    generation: std::sync::atomic::AtomicU64,
}

/// What the control plane writes into a fabric, whole: every group's
/// rules and every discoverable name. An agent on another machine holds a
/// copy; its own tasks' memberships are its own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rules {
    pub groups: Vec<GroupRules>,
    pub names: Vec<(String, Vec<Ipv4Addr>)>,
    /// Where each machine's task addresses are reached.
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// One machine's task addresses, and its agent's mesh listener, which
/// takes connections to them from other machines.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// A loopback block, `127.64.0.0/18`.
    pub block: String,
    /// `host:port`.
    pub via: String,
    /// The machine's instance (its `ec2InstanceId`): instance targets of
    /// load balancers there are its published ports, at `via`'s host.
    #[serde(default)]
    pub instance: String,
}

/// One security group's rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupRules {
    pub id: String,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
}

/// Does `rule` let traffic of `proto` to `port` through, from or to `peer`
/// (an address and its groups)?
fn matches(rule: &Rule, proto: Proto, port: u16, peer: Ipv4Addr, peer_groups: &[String]) -> bool {
    let proto_ok = rule.protocol == "-1" || rule.protocol == proto.name();
    let port_ok = rule.protocol == "-1"
        || (i64::from(port) >= rule.from_port && i64::from(port) <= rule.to_port);
    let source_ok = match &rule.source {
        Source::Cidr(net) => net.contains(peer),
        Source::Group(g) => peer_groups.iter().any(|p| p == g),
    };
    proto_ok && port_ok && source_ok
}

impl Fabric {
    fn changed(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// How many times rules or names changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Every group's rules and every name, as the control plane set them.
    pub fn rules(&self) -> Rules {
        let Ok(g) = self.inner.read() else {
            return Rules::default();
        };
        let mut groups: Vec<GroupRules> = g
            .rules
            .iter()
            .map(|(id, (ingress, egress))| GroupRules {
                id: id.clone(),
                ingress: ingress.clone(),
                egress: egress.clone(),
            })
            .collect();
        groups.sort_by(|a, b| a.id.cmp(&b.id));
        let mut names: Vec<(String, Vec<Ipv4Addr>)> = g
            .names
            .iter()
            .map(|(n, a)| (n.clone(), a.clone()))
            .collect();
        names.sort();
        Rules {
            groups,
            names,
            routes: g.routes.clone(),
        }
    }

    /// Sets every machine's route (sorted), if they changed.
    pub fn set_routes(&self, mut routes: Vec<Route>) {
        routes.sort();
        if let Ok(mut g) = self.inner.write() {
            if g.routes == routes {
                return;
            }
            g.routes = routes;
        }
        self.changed();
    }

    /// The routes to every machine's task addresses.
    pub fn routes(&self) -> Vec<Route> {
        self.inner
            .read()
            .map(|g| g.routes.clone())
            .unwrap_or_default()
    }

    /// Replaces every group's rules and every name with `rules` (an agent
    /// on another machine, from its channel); memberships stay.
    pub fn set_rules(&self, rules: Rules) {
        if let Ok(mut g) = self.inner.write() {
            g.rules = rules
                .groups
                .into_iter()
                .map(|r| (r.id, (r.ingress, r.egress)))
                .collect();
            g.names = rules.names.into_iter().collect();
            g.routes = rules.routes;
        }
        self.changed();
    }

    /// Replaces a group's rules (after it was created or changed).
    pub fn set_group(&self, id: &str, ingress: &[Rule], egress: &[Rule]) {
        if let Ok(mut g) = self.inner.write() {
            g.rules
                .insert(id.to_string(), (ingress.to_vec(), egress.to_vec()));
        }
        self.changed();
    }

    /// Forgets a deleted group.
    pub fn remove_group(&self, id: &str) {
        if let Ok(mut g) = self.inner.write() {
            g.rules.remove(id);
        }
        self.changed();
    }

    /// A task address joins its groups (while the task runs).
    pub fn join(&self, ip: Ipv4Addr, groups: Vec<String>) {
        if let Ok(mut g) = self.inner.write() {
            g.members.insert(ip, groups);
        }
    }

    /// A task address leaves the fabric.
    pub fn leave(&self, ip: Ipv4Addr) {
        if let Ok(mut g) = self.inner.write() {
            g.members.remove(&ip);
        }
    }

    /// Is any group of this address using `group`? (A group in use cannot
    /// be deleted.)
    pub fn in_use(&self, group: &str) -> bool {
        self.inner
            .read()
            .map(|g| g.members.values().any(|m| m.iter().any(|x| x == group)))
            .unwrap_or(false)
    }

    /// The groups of a task address, if it is an awsvpc task's.
    pub fn groups_of(&self, ip: Ipv4Addr) -> Option<Vec<String>> {
        self.inner.read().ok()?.members.get(&ip).cloned()
    }

    /// Sets (or with no addresses, removes) a discoverable name.
    pub fn set_name(&self, name: &str, addrs: Vec<Ipv4Addr>) {
        if let Ok(mut g) = self.inner.write() {
            let name = name.to_ascii_lowercase();
            let old = if addrs.is_empty() {
                g.names.remove(&name)
            } else {
                g.names.insert(name, addrs.clone())
            };
            if old.unwrap_or_default() == addrs {
                return;
            }
        }
        self.changed();
    }

    /// The addresses a name resolves to.
    pub fn resolve(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.inner.read().ok()?.names.get(&name).cloned()
    }

    /// May traffic of `proto` go from `from` (with `from_groups`, `None`
    /// for a sender outside security groups: egress open) to `to`?
    pub fn allows(
        &self,
        from: Ipv4Addr,
        from_groups: Option<&[String]>,
        to: SocketAddr,
        proto: Proto,
    ) -> bool {
        let IpAddr::V4(to_ip) = to.ip() else {
            return false;
        };
        let Ok(g) = self.inner.read() else {
            return false;
        };
        let to_groups = g.members.get(&to_ip);
        let empty = Vec::new();
        let no_groups: &[String] = &empty;
        // Out of the sender's groups.
        if let Some(groups) = from_groups {
            let out = groups.iter().any(|id| {
                g.rules.get(id).is_some_and(|(_, egress)| {
                    egress.iter().any(|r| {
                        matches(
                            r,
                            proto,
                            to.port(),
                            to_ip,
                            to_groups.map_or(no_groups, Vec::as_slice),
                        )
                    })
                })
            });
            if !out {
                return false;
            }
        }
        // Into the receiver's, when it is an awsvpc task.
        if let Some(groups) = to_groups {
            let sender_groups = from_groups.unwrap_or(no_groups);
            return groups.iter().any(|id| {
                g.rules.get(id).is_some_and(|(ingress, _)| {
                    ingress
                        .iter()
                        .any(|r| matches(r, proto, to.port(), from, sender_groups))
                })
            });
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(protocol: &str, from: i64, to: i64, source: Source) -> Rule {
        Rule {
            id: String::new(),
            protocol: protocol.into(),
            from_port: from,
            to_port: to,
            source,
            description: None,
        }
    }

    /// A group's id and rules, as `set_group` takes them.
    struct Group(&'static str, Vec<Rule>, Vec<Rule>);

    fn group(id: &'static str, ingress: Vec<Rule>, egress: Vec<Rule>) -> Group {
        Group(id, ingress, egress)
    }

    impl Fabric {
        fn set(&self, g: &Group) {
            self.set_group(g.0, &g.1, &g.2);
        }
    }

    #[test]
    fn egress_then_ingress_by_cidr_and_group() {
        let f = Fabric::default();
        let anywhere = || Source::Cidr(Cidr::ANY);
        let a: Ipv4Addr = "127.18.0.1".parse().unwrap();
        let b: Ipv4Addr = "127.18.0.2".parse().unwrap();
        let c: Ipv4Addr = "127.18.0.3".parse().unwrap();
        // web: anything out; in: 8080/tcp from the lb group only.
        f.set(&group(
            "sg-web",
            vec![rule("tcp", 8080, 8080, Source::Group("sg-lb".into()))],
            vec![rule("-1", 0, 0, anywhere())],
        ));
        // lb: out only to 8080/tcp.
        f.set(&group(
            "sg-lb",
            vec![],
            vec![rule("tcp", 8080, 8080, anywhere())],
        ));
        f.set(&group(
            "sg-other",
            vec![],
            vec![rule("-1", 0, 0, anywhere())],
        ));
        f.join(a, vec!["sg-web".into()]);
        f.join(b, vec!["sg-lb".into()]);
        f.join(c, vec!["sg-other".into()]);
        let web = SocketAddr::from((a, 8080));
        let lb_groups = vec!["sg-lb".to_string()];
        let other_groups = vec!["sg-other".to_string()];
        assert!(f.allows(b, Some(&lb_groups), web, Proto::Tcp));
        assert!(
            !f.allows(b, Some(&lb_groups), web, Proto::Udp),
            "udp not allowed in"
        );
        assert!(!f.allows(b, Some(&lb_groups), SocketAddr::from((a, 9090)), Proto::Tcp));
        assert!(
            !f.allows(c, Some(&other_groups), web, Proto::Tcp),
            "not in the lb group"
        );
        // lb's egress stops it at other ports, even to non-tasks.
        assert!(!f.allows(
            b,
            Some(&lb_groups),
            SocketAddr::from(([127, 0, 0, 9], 80)),
            Proto::Tcp
        ));
        // A sender outside groups (bridge) still meets ingress.
        assert!(!f.allows(c, None, web, Proto::Tcp));
        f.leave(a);
        assert!(
            f.allows(c, Some(&other_groups), web, Proto::Tcp),
            "no task there any more"
        );
        assert!(f.in_use("sg-lb") && !f.in_use("sg-web"));
    }

    #[test]
    fn names_resolve_case_blind_and_disappear() {
        let f = Fabric::default();
        let ip: Ipv4Addr = "127.18.0.7".parse().unwrap();
        f.set_name("api.local", vec![ip]);
        assert_eq!(f.resolve("API.local."), Some(vec![ip]));
        f.set_name("api.local", Vec::new());
        assert_eq!(f.resolve("api.local"), None);
    }

    #[test]
    fn rules_copy_to_another_fabric_and_memberships_stay_its_own() {
        let control = Fabric::default();
        let any = Rule {
            id: "r".into(),
            protocol: "-1".into(),
            from_port: 0,
            to_port: 0,
            source: Source::Cidr(Cidr::ANY),
            description: None,
        };
        control.set_group("sg-a", &[], std::slice::from_ref(&any));
        control.set_name("api.local", vec![Ipv4Addr::new(127, 18, 0, 7)]);
        let seen = control.generation();
        control.set_name("api.local", vec![Ipv4Addr::new(127, 18, 0, 7)]);
        assert_eq!(
            control.generation(),
            seen,
            "the same name again is no change"
        );

        let agent = Fabric::default();
        let mine = Ipv4Addr::new(127, 18, 0, 9);
        agent.join(mine, vec!["sg-a".into()]);
        agent.set_rules(control.rules());
        assert_eq!(agent.rules(), control.rules());
        assert_eq!(agent.groups_of(mine), Some(vec!["sg-a".to_string()]));
        assert_eq!(
            agent.resolve("api.local"),
            Some(vec![Ipv4Addr::new(127, 18, 0, 7)])
        );
        control.remove_group("sg-a");
        assert!(control.generation() > seen);
        agent.set_rules(control.rules());
        assert!(agent.rules().groups.is_empty());
    }

    #[test]
    fn cidrs_stay_on_loopback() {
        let ok = |s: &str| Cidr::try_from(s.to_string());
        assert!(
            ok("0.0.0.0/0")
                .unwrap()
                .contains("127.18.3.4".parse().unwrap())
        );
        let block = ok("127.18.0.0/16").unwrap();
        assert!(block.contains("127.18.9.9".parse().unwrap()));
        assert!(!block.contains("127.19.0.1".parse().unwrap()));
        for bad in [
            "10.0.0.0/8",
            "192.168.0.0/16",
            "127.18.0.1/16",
            "127.0.0.0/4",
            "x/8",
            "127.0.0.0/33",
        ] {
            assert!(ok(bad).is_err(), "{bad}");
        }
    }
}
