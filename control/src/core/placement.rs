//! Task placement: which container instance each task goes to.
//!
//! ECS's model, kept: an instance is a candidate if it is ACTIVE, its agent
//! is connected, it has the task's CPU, memory and ports left, it has every
//! attribute the task definition requires, and it satisfies every
//! constraint (`distinctInstance`, `memberOf` in the cluster query
//! language). Strategies then rank the candidates, the first strategy
//! first and later ones breaking its ties: `binpack` (least remaining cpu or
//! memory), `spread` (fewest tasks of the same group per value of a field),
//! `random`. This is pure: it reads a snapshot and says where tasks go.

use regex::Regex;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The attribute of an instance whose runtime caps each container's memory
/// below the 4 GiB a Wasm memory may have: the cap, in MiB.
pub const MAX_CONTAINER_MEMORY: &str = "skiff.max-container-memory";

/// A container instance as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub arn: String,
    pub instance_id: String,
    pub active: bool,
    pub agent_connected: bool,
    pub registered_at: f64,
    pub running_tasks: u32,
    /// Attributes (`ecs.availability-zone`, custom ones); a value is optional.
    pub attributes: BTreeMap<String, Option<String>>,
    pub remaining_cpu: i64,
    pub remaining_memory: i64,
    /// Runtime instance slots left (`WASM_SLOTS`), if the instance counts
    /// them: one per container.
    pub remaining_slots: Option<i64>,
    pub used_tcp: HashSet<u16>,
    pub used_udp: HashSet<u16>,
    /// Tasks on the instance, by task group.
    pub groups: HashMap<String, u32>,
}

/// What one task needs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Demand {
    pub cpu: i64,
    pub memory: i64,
    /// Runtime instance slots: its containers.
    pub slots: i64,
    /// The largest memory limit (MiB) one of its containers has (0: none
    /// has one); an instance whose runtime caps each container lower
    /// (its [`MAX_CONTAINER_MEMORY`] attribute) cannot honour it.
    pub largest_container_memory: i64,
    pub tcp_ports: Vec<u16>,
    pub udp_ports: Vec<u16>,
    /// The task group (`family:web`, `service:api`): what `spread` and
    /// `distinctInstance` count.
    pub group: String,
    pub required_attributes: Vec<String>,
}

/// A placement strategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    Random,
    Spread(Field),
    BinpackCpu,
    BinpackMemory,
}

/// What `spread` spreads over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    InstanceId,
    Attribute(String),
}

impl Strategy {
    /// ECS's `{"type": ..., "field": ...}`.
    pub fn parse(kind: &str, field: Option<&str>) -> Result<Strategy, String> {
        match (kind, field) {
            ("random", None) => Ok(Strategy::Random),
            ("random", Some(f)) => Err(format!("the random strategy takes no field, got {f:?}")),
            ("binpack", Some(f)) if f.eq_ignore_ascii_case("cpu") => Ok(Strategy::BinpackCpu),
            ("binpack", Some(f)) if f.eq_ignore_ascii_case("memory") => Ok(Strategy::BinpackMemory),
            ("binpack", f) => Err(format!(
                "the binpack strategy's field must be cpu or memory, got {f:?}"
            )),
            ("spread", Some(f)) if f.eq_ignore_ascii_case("instanceId") || f == "host" => {
                Ok(Strategy::Spread(Field::InstanceId))
            }
            ("spread", Some(f)) => match f.strip_prefix("attribute:") {
                Some(a) if !a.is_empty() => Ok(Strategy::Spread(Field::Attribute(a.into()))),
                _ => Err(format!(
                    "the spread strategy's field must be instanceId or attribute:NAME, got {f:?}"
                )),
            },
            ("spread", None) => Err("the spread strategy needs a field".into()),
            (other, _) => Err(format!(
                "unknown placement strategy type {other:?} (expected random, spread or binpack)"
            )),
        }
    }
}

/// A placement constraint.
#[derive(Debug, Clone)]
pub enum Constraint {
    DistinctInstance,
    MemberOf(Expression),
}

impl Constraint {
    /// ECS's `{"type": ..., "expression": ...}`.
    pub fn parse(kind: &str, expression: Option<&str>) -> Result<Constraint, String> {
        match (kind, expression) {
            ("distinctInstance", None | Some("")) => Ok(Constraint::DistinctInstance),
            ("distinctInstance", Some(_)) => {
                Err("a distinctInstance constraint takes no expression".into())
            }
            ("memberOf", Some(e)) => Expression::parse(e)
                .map(Constraint::MemberOf)
                .map_err(|why| format!("memberOf expression {e:?}: {why}")),
            ("memberOf", None) => Err("a memberOf constraint needs an expression".into()),
            (other, _) => Err(format!(
                "unknown placement constraint type {other:?} (expected distinctInstance or memberOf)"
            )),
        }
    }
}

/// Why an instance was not chosen: ECS's `failures[].reason`.
pub fn reason(why: Rejection) -> &'static str {
    match why {
        Rejection::Inactive => "INACTIVE",
        Rejection::Agent => "AGENT",
        Rejection::Attribute => "ATTRIBUTE",
        Rejection::Cpu => "RESOURCE:CPU",
        Rejection::Memory => "RESOURCE:MEMORY",
        Rejection::Slots => "RESOURCE:WASM_SLOTS",
        Rejection::Ports => "RESOURCE:PORTS",
        Rejection::PortsUdp => "RESOURCE:PORTS_UDP",
        Rejection::DistinctInstance => "DistinctInstance placement constraint unsatisfied.",
        Rejection::MemberOf => "MemberOf placement constraint unsatisfied.",
    }
}

/// Why one instance cannot take a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Inactive,
    Agent,
    Attribute,
    Cpu,
    Memory,
    Slots,
    Ports,
    PortsUdp,
    DistinctInstance,
    MemberOf,
}

/// Whether `c` can take one task of `demand`, given what `place` keeps
/// at hand: the instance's tasks of the demand's group, and whether it met the constraints that do not change
/// as tasks are placed (`member_ok`).
fn check(
    c: &Candidate,
    demand: &Demand,
    constraints: &[Constraint],
    group_n: u32,
    member_ok: bool,
) -> Result<(), Rejection> {
    if !c.active {
        return Err(Rejection::Inactive);
    }
    if !c.agent_connected {
        return Err(Rejection::Agent);
    }
    if demand
        .required_attributes
        .iter()
        .any(|a| !c.attributes.contains_key(a))
    {
        return Err(Rejection::Attribute);
    }
    if c.remaining_cpu < demand.cpu {
        return Err(Rejection::Cpu);
    }
    if c.remaining_memory < demand.memory {
        return Err(Rejection::Memory);
    }
    if c.attributes
        .get(MAX_CONTAINER_MEMORY)
        .and_then(|v| v.as_deref()?.parse::<i64>().ok())
        .is_some_and(|max| demand.largest_container_memory > max)
    {
        return Err(Rejection::Memory);
    }
    if c.remaining_slots.is_some_and(|r| r < demand.slots) {
        return Err(Rejection::Slots);
    }
    if demand.tcp_ports.iter().any(|p| c.used_tcp.contains(p)) {
        return Err(Rejection::Ports);
    }
    if demand.udp_ports.iter().any(|p| c.used_udp.contains(p)) {
        return Err(Rejection::PortsUdp);
    }
    if !member_ok {
        return Err(Rejection::MemberOf);
    }
    for constraint in constraints {
        match constraint {
            Constraint::DistinctInstance => {
                if group_n > 0 {
                    return Err(Rejection::DistinctInstance);
                }
            }
            Constraint::MemberOf(e) => {
                if !e.matches(c) {
                    return Err(Rejection::MemberOf);
                }
            }
        }
    }
    Ok(())
}

/// A small, seedable generator for `random` (xorshift64*): placement must
/// be reproducible in tests, and nothing here needs cryptographic quality.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// Seeded from the clock and the process.
    pub fn from_entropy() -> Rng {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        Rng::new(u64::from_le_bytes(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The outcome of placing `count` tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// For each task placed, the index of its instance.
    pub placed: Vec<usize>,
    /// When fewer than `count` were placed: for each instance, why it could
    /// not take the next one (empty when there were no instances at all).
    pub rejections: Vec<(usize, Rejection)>,
}

/// Places up to `count` tasks of `demand`, updating `candidates` as it goes
/// (so a caller placing further work sees what these took).
///
/// Each task is one pass over the instances; what a pass would otherwise
/// recompute per instance is kept beside them: `memberOf` expressions that
/// placing cannot change are evaluated once, the demand's group count and
/// each spread attribute's value slot are plain indexes.
pub fn place(
    candidates: &mut [Candidate],
    demand: &Demand,
    count: usize,
    constraints: &[Constraint],
    strategies: &[Strategy],
    rng: &mut Rng,
) -> Placement {
    let mut placed = Vec::with_capacity(count);
    let (fixed, moving): (Vec<Constraint>, Vec<Constraint>) =
        constraints.iter().cloned().partition(|k| match k {
            Constraint::MemberOf(e) => e.is_static(),
            Constraint::DistinctInstance => false,
        });
    let member_ok: Vec<bool> = candidates
        .iter()
        .map(|c| {
            fixed.iter().all(|k| match k {
                Constraint::MemberOf(e) => e.matches(c),
                Constraint::DistinctInstance => true,
            })
        })
        .collect();
    let mut group_n: Vec<u32> = candidates
        .iter()
        .map(|c| c.groups.get(&demand.group).copied().unwrap_or(0))
        .collect();
    // For spread over an attribute: each instance's value slot, and the
    // group's tasks per slot.
    let mut spread: Vec<Option<(Vec<usize>, Vec<u64>)>> = strategies
        .iter()
        .map(|s| match s {
            Strategy::Spread(Field::Attribute(a)) => {
                let mut values: HashMap<Option<String>, usize> = HashMap::new();
                let slots: Vec<usize> = candidates
                    .iter()
                    .map(|c| {
                        let n = values.len();
                        *values.entry(attribute_value(c, a)).or_insert(n)
                    })
                    .collect();
                let mut counts = vec![0u64; values.len()];
                for (i, slot) in slots.iter().enumerate() {
                    counts[*slot] += u64::from(group_n[i]);
                }
                Some((slots, counts))
            }
            _ => None,
        })
        .collect();
    let mut keys: Vec<i64> = Vec::with_capacity(strategies.len());
    let mut best_keys: Vec<i64> = Vec::with_capacity(strategies.len());
    for _ in 0..count {
        let mut best: Option<usize> = None;
        for (i, c) in candidates.iter().enumerate() {
            if check(c, demand, &moving, group_n[i], member_ok[i]).is_err() {
                continue;
            }
            keys.clear();
            for (s, sp) in strategies.iter().zip(&spread) {
                keys.push(match (s, sp) {
                    (Strategy::Random, _) => (rng.next_u64() >> 1) as i64,
                    (Strategy::BinpackCpu, _) => c.remaining_cpu,
                    (Strategy::BinpackMemory, _) => c.remaining_memory,
                    (Strategy::Spread(Field::Attribute(_)), Some((slots, counts))) => {
                        counts[slots[i]] as i64
                    }
                    (Strategy::Spread(_), _) => i64::from(group_n[i]),
                });
            }
            // Lowest keys win; the earliest instance breaks full ties, so
            // placement without `random` is deterministic.
            if best.is_none() || keys < best_keys {
                best = Some(i);
                std::mem::swap(&mut keys, &mut best_keys);
            }
        }
        let Some(i) = best else { break };
        let c = &mut candidates[i];
        c.remaining_cpu -= demand.cpu;
        c.remaining_memory -= demand.memory;
        if let Some(r) = &mut c.remaining_slots {
            *r -= demand.slots;
        }
        c.used_tcp.extend(&demand.tcp_ports);
        c.used_udp.extend(&demand.udp_ports);
        c.running_tasks += 1;
        *c.groups.entry(demand.group.clone()).or_default() += 1;
        group_n[i] += 1;
        for (slots, counts) in spread.iter_mut().flatten() {
            counts[slots[i]] += 1;
        }
        placed.push(i);
    }
    let rejections = if placed.len() < count {
        candidates
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                check(c, demand, &moving, group_n[i], member_ok[i])
                    .err()
                    .map(|r| (i, r))
            })
            .collect()
    } else {
        Vec::new()
    };
    Placement { placed, rejections }
}

fn attribute_value(c: &Candidate, name: &str) -> Option<String> {
    c.attributes.get(name).cloned().flatten()
}

/// A `memberOf` expression of ECS's cluster query language:
/// `attribute:NAME OP VALUE`, `ec2InstanceId`, `agentConnected`,
/// `runningTasksCount`, `registeredAt`, `task:group`, joined by
/// `and`/`&&`, `or`/`||`, grouped with parentheses, negated with `not(...)`.
#[derive(Debug, Clone)]
pub enum Expression {
    And(Box<Expression>, Box<Expression>),
    Or(Box<Expression>, Box<Expression>),
    Not(Box<Expression>),
    Test {
        subject: Subject,
        op: Op,
        args: Vec<String>,
        regex: Option<Regex>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Attribute(String),
    InstanceId,
    AgentConnected,
    RunningTasksCount,
    RegisteredAt,
    TaskGroup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Exists,
    NotExists,
    Gt,
    Ge,
    Lt,
    Le,
    In,
    NotIn,
    Matches,
    NotMatches,
}

fn tokenize(s: &str) -> Vec<String> {
    let is_regex_op = |t: &str| matches!(t, "=~" | "!~" | "matches" | "not_matches");
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(ch) = chars.next() {
        // A pattern after a regex operator is one word, parentheses and
        // all (up to whitespace outside its own groups).
        if cur.is_empty() && !ch.is_whitespace() && out.last().is_some_and(|t| is_regex_op(t)) {
            let mut depth = 0i32;
            let mut c = ch;
            loop {
                match c {
                    '(' => depth += 1,
                    ')' if depth == 0 => break,
                    ')' => depth -= 1,
                    _ => {}
                }
                cur.push(c);
                match chars.peek() {
                    Some(n) if n.is_whitespace() && depth == 0 => break,
                    Some(')') if depth == 0 => break,
                    Some(_) => c = chars.next().unwrap_or(' '),
                    None => break,
                }
            }
            out.push(std::mem::take(&mut cur));
            continue;
        }
        match ch {
            '(' | ')' | '[' | ']' | ',' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push(ch.to_string());
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

struct Parser {
    tokens: Vec<String>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.pos).map(String::as_str)
    }

    fn next(&mut self) -> Option<String> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expect(&mut self, want: &str) -> Result<(), String> {
        match self.next() {
            Some(t) if t == want => Ok(()),
            Some(t) => Err(format!("expected {want:?}, found {t:?}")),
            None => Err(format!("expected {want:?} at the end")),
        }
    }

    fn or(&mut self) -> Result<Expression, String> {
        let mut left = self.and()?;
        while matches!(self.peek(), Some("or" | "||")) {
            self.pos += 1;
            left = Expression::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expression, String> {
        let mut left = self.primary()?;
        while matches!(self.peek(), Some("and" | "&&")) {
            self.pos += 1;
            left = Expression::And(Box::new(left), Box::new(self.primary()?));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Expression, String> {
        match self.peek() {
            Some("(") => {
                self.pos += 1;
                let e = self.or()?;
                self.expect(")")?;
                Ok(e)
            }
            Some("not" | "!") if self.tokens.get(self.pos + 1).is_some_and(|t| t == "(") => {
                self.pos += 2;
                let e = self.or()?;
                self.expect(")")?;
                Ok(Expression::Not(Box::new(e)))
            }
            _ => self.test(),
        }
    }

    fn test(&mut self) -> Result<Expression, String> {
        let subject = self.next().ok_or("the expression is empty")?;
        let subject = match subject.as_str() {
            "ec2InstanceId" => Subject::InstanceId,
            "agentConnected" => Subject::AgentConnected,
            "runningTasksCount" => Subject::RunningTasksCount,
            "registeredAt" => Subject::RegisteredAt,
            "task:group" => Subject::TaskGroup,
            s => match s.strip_prefix("attribute:") {
                Some(a) if !a.is_empty() => Subject::Attribute(a.into()),
                _ => return Err(format!("unknown subject {s:?}")),
            },
        };
        let op_token = self.next().ok_or("an operator is missing")?;
        let op = match op_token.as_str() {
            "==" | "equals" => Op::Eq,
            "!=" | "not_equals" => Op::Ne,
            "exists" => Op::Exists,
            "!exists" | "not_exists" => Op::NotExists,
            ">" | "greater_than" => Op::Gt,
            ">=" | "greater_than_equal" => Op::Ge,
            "<" | "less_than" => Op::Lt,
            "<=" | "less_than_equal" => Op::Le,
            "in" => Op::In,
            "!in" | "not_in" => Op::NotIn,
            "=~" | "matches" => Op::Matches,
            "!~" | "not_matches" => Op::NotMatches,
            other => return Err(format!("unknown operator {other:?}")),
        };
        let args = match op {
            Op::Exists | Op::NotExists => Vec::new(),
            Op::In | Op::NotIn => {
                self.expect("[")?;
                let mut list = Vec::new();
                loop {
                    match self.next() {
                        Some(t) if t == "]" => break,
                        Some(t) if t == "," => {}
                        Some(t) => list.push(t),
                        None => return Err("a list is not closed with ]".into()),
                    }
                }
                if list.is_empty() {
                    return Err("an in list is empty".into());
                }
                list
            }
            _ => vec![self.next().ok_or("a value is missing")?],
        };
        if matches!(op, Op::Gt | Op::Ge | Op::Lt | Op::Le) && args[0].parse::<f64>().is_err() {
            return Err(format!("{op_token} needs a number, got {:?}", args[0]));
        }
        let regex = match op {
            Op::Matches | Op::NotMatches => Some(
                Regex::new(&format!("^(?:{})$", args[0]))
                    .map_err(|e| format!("invalid pattern {:?}: {e}", args[0]))?,
            ),
            _ => None,
        };
        Ok(Expression::Test {
            subject,
            op,
            args,
            regex,
        })
    }
}

/// `*` in a value matches any run of characters. Greedy with one
/// backtrack point (the last `*`): linear in practice, never exponential.
fn wildcard(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, vi));
            pi += 1;
        } else if pi < p.len() && p[pi] == v[vi] {
            pi += 1;
            vi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl Expression {
    /// Parses an expression; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<Expression, String> {
        let mut p = Parser {
            tokens: tokenize(s),
            pos: 0,
        };
        let e = p.or()?;
        match p.next() {
            None => Ok(e),
            Some(t) => Err(format!("unexpected {t:?}")),
        }
    }

    /// Whether the expression's answer cannot change as tasks are placed
    /// (it reads neither `runningTasksCount` nor `task:group`).
    pub fn is_static(&self) -> bool {
        match self {
            Expression::And(a, b) | Expression::Or(a, b) => a.is_static() && b.is_static(),
            Expression::Not(e) => e.is_static(),
            Expression::Test { subject, .. } => {
                !matches!(subject, Subject::RunningTasksCount | Subject::TaskGroup)
            }
        }
    }

    /// Whether the instance satisfies the expression.
    pub fn matches(&self, c: &Candidate) -> bool {
        match self {
            Expression::And(a, b) => a.matches(c) && b.matches(c),
            Expression::Or(a, b) => a.matches(c) || b.matches(c),
            Expression::Not(e) => !e.matches(c),
            Expression::Test {
                subject,
                op,
                args,
                regex,
            } => {
                let values: Vec<String> = match subject {
                    Subject::Attribute(a) => match c.attributes.get(a) {
                        Some(v) => vec![v.clone().unwrap_or_default()],
                        None => vec![],
                    },
                    Subject::InstanceId => vec![c.instance_id.clone()],
                    Subject::AgentConnected => vec![c.agent_connected.to_string()],
                    Subject::RunningTasksCount => vec![c.running_tasks.to_string()],
                    Subject::RegisteredAt => vec![format!("{}", c.registered_at)],
                    Subject::TaskGroup => c
                        .groups
                        .iter()
                        .filter(|(_, n)| **n > 0)
                        .map(|(g, _)| g.clone())
                        .collect(),
                };
                let num = |v: &str| v.parse::<f64>().ok();
                let any = |f: &dyn Fn(&str) -> bool| values.iter().any(|v| f(v));
                match op {
                    Op::Exists => !values.is_empty(),
                    Op::NotExists => values.is_empty(),
                    Op::Eq => any(&|v| wildcard(&args[0], v)),
                    Op::Ne => !any(&|v| wildcard(&args[0], v)),
                    Op::In => any(&|v| args.iter().any(|a| wildcard(a, v))),
                    Op::NotIn => !any(&|v| args.iter().any(|a| wildcard(a, v))),
                    Op::Gt | Op::Ge | Op::Lt | Op::Le => any(&|v| {
                        let (Some(v), Some(a)) = (num(v), num(&args[0])) else {
                            return false;
                        };
                        match op {
                            Op::Gt => v > a,
                            Op::Ge => v >= a,
                            Op::Lt => v < a,
                            _ => v <= a,
                        }
                    }),
                    Op::Matches => regex.as_ref().is_some_and(|r| any(&|v| r.is_match(v))),
                    Op::NotMatches => !regex.as_ref().is_some_and(|r| any(&|v| r.is_match(v))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(i: usize, cpu: i64, memory: i64, zone: &str) -> Candidate {
        Candidate {
            arn: format!("ci-{i}"),
            instance_id: format!("i-{i}"),
            active: true,
            agent_connected: true,
            registered_at: 0.0,
            running_tasks: 0,
            attributes: BTreeMap::from([
                ("ecs.availability-zone".to_string(), Some(zone.to_string())),
                (
                    "stack".to_string(),
                    Some(if i.is_multiple_of(2) { "prod" } else { "test" }.to_string()),
                ),
            ]),
            remaining_cpu: cpu,
            remaining_memory: memory,
            remaining_slots: None,
            used_tcp: HashSet::new(),
            used_udp: HashSet::new(),
            groups: HashMap::new(),
        }
    }

    fn demand(cpu: i64, memory: i64) -> Demand {
        Demand {
            cpu,
            memory,
            group: "family:web".into(),
            ..Demand::default()
        }
    }

    #[test]
    fn binpack_fills_the_fullest_instance_first() {
        let mut c = vec![
            instance(0, 4096, 4096, "a"),
            instance(1, 1024, 4096, "a"),
            instance(2, 2048, 4096, "a"),
        ];
        let p = place(
            &mut c,
            &demand(512, 128),
            4,
            &[],
            &[Strategy::BinpackCpu],
            &mut Rng::new(1),
        );
        // 1 has least cpu left: it takes two, then 2 (2048) takes the rest.
        assert_eq!(p.placed, [1, 1, 2, 2]);
        let mut c = vec![instance(0, 4096, 1024, "a"), instance(1, 4096, 512, "a")];
        let p = place(
            &mut c,
            &demand(1, 256),
            3,
            &[],
            &[Strategy::BinpackMemory],
            &mut Rng::new(1),
        );
        assert_eq!(p.placed, [1, 1, 0]);
    }

    #[test]
    fn spread_balances_over_instances_and_attributes() {
        let mut c: Vec<_> = (0..4)
            .map(|i| instance(i, 8192, 8192, if i < 3 { "a" } else { "b" }))
            .collect();
        let p = place(
            &mut c,
            &demand(1, 1),
            4,
            &[],
            &[
                Strategy::Spread(Field::Attribute("ecs.availability-zone".into())),
                Strategy::Spread(Field::InstanceId),
            ],
            &mut Rng::new(1),
        );
        // Zones alternate (a, b, a, b); within zone a, distinct instances.
        assert_eq!(p.placed, [0, 3, 1, 3]);
        let mut c: Vec<_> = (0..3).map(|i| instance(i, 8192, 8192, "a")).collect();
        let p = place(
            &mut c,
            &demand(1, 1),
            6,
            &[],
            &[Strategy::Spread(Field::InstanceId)],
            &mut Rng::new(1),
        );
        assert_eq!(p.placed, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn random_is_reproducible_by_seed_and_uses_every_instance() {
        let fresh = || {
            (0..5)
                .map(|i| instance(i, 1 << 20, 1 << 20, "a"))
                .collect::<Vec<_>>()
        };
        let run = |seed| {
            place(
                &mut fresh(),
                &demand(1, 1),
                200,
                &[],
                &[Strategy::Random],
                &mut Rng::new(seed),
            )
            .placed
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let used: HashSet<usize> = run(7).into_iter().collect();
        assert_eq!(used.len(), 5);
    }

    #[test]
    fn no_capacity_gives_ecs_reasons_per_instance() {
        let mut c = vec![instance(0, 256, 4096, "a"), instance(1, 4096, 128, "a")];
        c[1].used_tcp.insert(80);
        let mut d = demand(512, 256);
        let p = place(&mut c, &d, 1, &[], &[], &mut Rng::new(1));
        assert!(p.placed.is_empty());
        assert_eq!(p.rejections, [(0, Rejection::Cpu), (1, Rejection::Memory)]);
        d.memory = 64;
        d.tcp_ports = vec![80];
        let p = place(&mut c, &d, 1, &[], &[], &mut Rng::new(1));
        assert_eq!(p.rejections, [(0, Rejection::Cpu), (1, Rejection::Ports)]);
        assert_eq!(reason(Rejection::Ports), "RESOURCE:PORTS");
        let mut c = vec![instance(0, 4096, 4096, "a")];
        c[0].used_udp.insert(53);
        let udp = Demand {
            udp_ports: vec![53],
            ..demand(1, 1)
        };
        let p = place(&mut c, &udp, 1, &[], &[], &mut Rng::new(1));
        assert_eq!(p.rejections, [(0, Rejection::PortsUdp)]);
        assert_eq!(reason(Rejection::PortsUdp), "RESOURCE:PORTS_UDP");
        // Runtime slots, where an instance counts them: one per container.
        let mut c = vec![instance(0, 4096, 4096, "a")];
        c[0].remaining_slots = Some(3);
        let two = Demand {
            slots: 2,
            ..demand(1, 1)
        };
        let p = place(&mut c, &two, 2, &[], &[], &mut Rng::new(1));
        assert_eq!(p.placed.len(), 1);
        assert_eq!(c[0].remaining_slots, Some(1));
        assert_eq!(p.rejections, [(0, Rejection::Slots)]);
        assert_eq!(reason(Rejection::Slots), "RESOURCE:WASM_SLOTS");
        // A runtime that caps each container's memory below a container's
        // limit cannot honour it.
        let mut c = vec![instance(0, 4096, 4096, "a"), instance(1, 4096, 4096, "a")];
        c[0].attributes
            .insert(MAX_CONTAINER_MEMORY.to_string(), Some("64".to_string()));
        let big = Demand {
            largest_container_memory: 128,
            ..demand(1, 1)
        };
        let p = place(&mut c, &big, 1, &[], &[], &mut Rng::new(1));
        assert_eq!(p.placed, [1]);
        assert_eq!(p.rejections, []);
        let p = place(&mut c[..1], &big, 1, &[], &[], &mut Rng::new(1));
        assert_eq!(p.rejections, [(0, Rejection::Memory)]);
        let fits = Demand {
            largest_container_memory: 64,
            ..demand(1, 1)
        };
        assert_eq!(
            place(&mut c[..1], &fits, 1, &[], &[], &mut Rng::new(1)).placed,
            [0]
        );
        // Partial placement: the first fits, the second reports why not.
        let mut c = vec![instance(0, 1024, 1024, "a")];
        let p = place(&mut c, &demand(600, 1), 2, &[], &[], &mut Rng::new(1));
        assert_eq!(p.placed, [0]);
        assert_eq!(p.rejections, [(0, Rejection::Cpu)]);
    }

    #[test]
    fn distinct_instance_and_member_of() {
        let mut c: Vec<_> = (0..3).map(|i| instance(i, 8192, 8192, "a")).collect();
        let p = place(
            &mut c,
            &demand(1, 1),
            4,
            &[Constraint::parse("distinctInstance", None).unwrap()],
            &[Strategy::BinpackCpu],
            &mut Rng::new(1),
        );
        assert_eq!(p.placed, [0, 1, 2]);
        assert_eq!(p.rejections.len(), 3);
        assert!(
            p.rejections
                .iter()
                .all(|(_, r)| *r == Rejection::DistinctInstance)
        );

        let mut c: Vec<_> = (0..4).map(|i| instance(i, 8192, 8192, "a")).collect();
        let only_prod = Constraint::parse("memberOf", Some("attribute:stack == prod")).unwrap();
        let p = place(
            &mut c,
            &demand(1, 1),
            4,
            &[only_prod],
            &[Strategy::Spread(Field::InstanceId)],
            &mut Rng::new(1),
        );
        assert_eq!(p.placed, [0, 2, 0, 2]);

        // An expression on what placing changes is evaluated as it changes:
        // each instance takes tasks while it runs fewer than two.
        let mut c: Vec<_> = (0..2).map(|i| instance(i, 8192, 8192, "a")).collect();
        let few = Constraint::parse("memberOf", Some("runningTasksCount < 2")).unwrap();
        let p = place(
            &mut c,
            &demand(1, 1),
            5,
            &[few],
            &[Strategy::BinpackCpu],
            &mut Rng::new(1),
        );
        assert_eq!(p.placed, [0, 0, 1, 1]);
        assert!(p.rejections.iter().all(|(_, r)| *r == Rejection::MemberOf));
    }

    #[test]
    fn the_cluster_query_language() {
        let c = {
            let mut c = instance(3, 1, 1, "us-east-1b");
            c.attributes
                .insert("ecs.instance-type".into(), Some("t2.small".into()));
            c.running_tasks = 4;
            c.groups.insert("service:api".into(), 1);
            c
        };
        let yes = |e: &str| Expression::parse(e).unwrap().matches(&c);
        assert!(yes("attribute:ecs.instance-type == t2.small"));
        assert!(yes("attribute:ecs.instance-type == t2.*"));
        assert!(yes("attribute:ecs.instance-type == *.sm*l*"));
        assert!(!yes("attribute:ecs.instance-type == *.big"));
        assert!(!wildcard("*a*a*a*a*a*a*a*a*b", &"a".repeat(50_000)));
        assert!(!yes("attribute:ecs.instance-type != t2.small"));
        assert!(yes(
            "attribute:ecs.availability-zone in [us-east-1a, us-east-1b]"
        ));
        assert!(yes("attribute:ecs.availability-zone not_in [us-east-1a]"));
        assert!(yes("attribute:ecs.instance-type =~ t2\\.(small|micro)"));
        assert!(yes("attribute:stack exists and not(attribute:gpu exists)"));
        assert!(yes("runningTasksCount > 3 && runningTasksCount <= 4"));
        assert!(yes("task:group == service:api"));
        assert!(yes(
            "(ec2InstanceId == i-9 or ec2InstanceId == i-3) and agentConnected == true"
        ));
        assert!(!yes("attribute:gpu == true"));
        for bad in [
            "",
            "attribute:x",
            "attribute:x === y",
            "nonsense == 1",
            "attribute:x in [a, b",
            "runningTasksCount > many",
            "attribute:x =~ (",
            "attribute:x == a extra",
        ] {
            assert!(Expression::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn strategies_parse_with_ecs_field_names() {
        assert_eq!(
            Strategy::parse("binpack", Some("memory")),
            Ok(Strategy::BinpackMemory)
        );
        assert_eq!(
            Strategy::parse("spread", Some("attribute:ecs.availability-zone")),
            Ok(Strategy::Spread(Field::Attribute(
                "ecs.availability-zone".into()
            )))
        );
        assert_eq!(
            Strategy::parse("spread", Some("instanceId")),
            Ok(Strategy::Spread(Field::InstanceId))
        );
        assert!(Strategy::parse("binpack", Some("disk")).is_err());
        assert!(Strategy::parse("pack", None).is_err());
    }
}
