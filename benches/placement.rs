//! Task placement throughput: 10,000 tasks onto 1,000 simulated container
//! instances, with each strategy the issue names, timed in-process.
//!
//! `cargo bench --bench placement`
//!
//! Instances: 4 vCPU / 8 GiB each (room for 16 tasks of 256 CPU / 512 MiB),
//! spread over three availability zones, every tenth one with a `gpu`
//! attribute. Two shapes of work, each over fresh instances:
//!
//! - one call placing all 10,000 (a service scaling out);
//! - 1,000 calls of 10 (RunTask's maximum count), the instances carrying
//!   what the earlier calls placed.
//!
//! The baseline, measured in the same run, is `random`: no ranking beyond
//! a draw, the least work a strategy can do. Goal: ≥ 10,000 placements/s
//! for binpack and spread.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use skiff_control::placement::{Candidate, Constraint, Demand, Rng, Strategy, place};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

const INSTANCES: usize = 1_000;
const TASKS: usize = 10_000;

fn instances() -> Vec<Candidate> {
    (0..INSTANCES)
        .map(|i| {
            let mut attributes = BTreeMap::new();
            let az = ["a", "b", "c"][i % 3];
            attributes.insert(
                "ecs.availability-zone".to_string(),
                Some(format!("us-east-1{az}")),
            );
            attributes.insert("ecs.instance-type".to_string(), Some("skiff.local".into()));
            if i % 10 == 0 {
                attributes.insert("gpu".to_string(), None);
            }
            Candidate {
                arn: format!(
                    "arn:aws:ecs:us-east-1:000000000000:container-instance/default/{i:032x}"
                ),
                instance_id: format!("i-{i:017x}"),
                active: true,
                agent_connected: true,
                registered_at: i as f64,
                running_tasks: 0,
                attributes,
                remaining_cpu: 4096,
                remaining_memory: 8192,
                remaining_slots: None,
                used_tcp: HashSet::new(),
                used_udp: HashSet::new(),
                groups: HashMap::new(),
            }
        })
        .collect()
}

fn demand() -> Demand {
    Demand {
        cpu: 256,
        memory: 512,
        slots: 1,
        largest_container_memory: 0,
        tcp_ports: Vec::new(),
        udp_ports: Vec::new(),
        group: "service:web".into(),
        required_attributes: Vec::new(),
    }
}

/// Places TASKS tasks in calls of `batch`: placements per second.
fn run(strategies: &[Strategy], constraints: &[Constraint], batch: usize) -> f64 {
    let mut cands = instances();
    let demand = demand();
    let mut rng = Rng::new(42);
    let start = Instant::now();
    let mut placed = 0;
    while placed < TASKS {
        let p = place(
            &mut cands,
            &demand,
            batch,
            constraints,
            strategies,
            &mut rng,
        );
        assert_eq!(
            p.placed.len(),
            batch,
            "the instances have room for every task"
        );
        placed += batch;
    }
    let took = start.elapsed().max(Duration::from_nanos(1));
    TASKS as f64 / took.as_secs_f64()
}

/// The best of a few runs (the machine is shared; the best is the least
/// disturbed).
fn best(strategies: &[Strategy], constraints: &[Constraint], batch: usize) -> f64 {
    (0..3)
        .map(|_| run(strategies, constraints, batch))
        .fold(0.0, f64::max)
}

fn main() {
    let spread_az = Strategy::parse("spread", Some("attribute:ecs.availability-zone")).unwrap();
    let spread_id = Strategy::parse("spread", Some("instanceId")).unwrap();
    let binpack = Strategy::parse("binpack", Some("memory")).unwrap();
    let member = Constraint::parse(
        "memberOf",
        Some("attribute:ecs.availability-zone in [us-east-1a, us-east-1b]"),
    )
    .unwrap();
    let cases: Vec<(&str, Vec<Strategy>, Vec<Constraint>)> = vec![
        ("random (baseline)", vec![Strategy::Random], vec![]),
        ("binpack memory", vec![binpack.clone()], vec![]),
        ("spread instanceId", vec![spread_id.clone()], vec![]),
        (
            "spread zone, then instanceId",
            vec![spread_az.clone(), spread_id.clone()],
            vec![],
        ),
        (
            "binpack + memberOf(zone in [a, b])",
            vec![binpack.clone()],
            vec![member],
        ),
        (
            "spread instanceId + distinctInstance",
            vec![spread_id.clone()],
            vec![Constraint::DistinctInstance],
        ),
    ];
    println!(
        "placement: {TASKS} tasks onto {INSTANCES} instances (best of 3), placements/s; goal ≥ 10,000"
    );
    println!(
        "{:<38} {:>16} {:>16}",
        "strategy", "one call of 10k", "1,000 calls of 10"
    );
    for (name, strategies, constraints) in &cases {
        // distinctInstance allows one task per instance: 1,000 at most.
        let (one, batched) = if matches!(constraints.first(), Some(Constraint::DistinctInstance)) {
            (None, None)
        } else {
            (
                Some(best(strategies, constraints, TASKS)),
                Some(best(strategies, constraints, 10)),
            )
        };
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:>16.0}"));
        if one.is_none() {
            // Place one per instance instead: 1,000 tasks.
            let mut cands = instances();
            let start = Instant::now();
            let p = place(
                &mut cands,
                &demand(),
                INSTANCES,
                constraints,
                strategies,
                &mut Rng::new(1),
            );
            assert_eq!(p.placed.len(), INSTANCES);
            let rate = INSTANCES as f64 / start.elapsed().as_secs_f64();
            println!(
                "{name:<38} {rate:>16.0} {:>16}  (1,000 tasks: one per instance)",
                "-"
            );
        } else {
            println!("{name:<38} {} {}", f(one), f(batched));
        }
    }
}
