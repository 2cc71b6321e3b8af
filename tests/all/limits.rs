//! `--memory`, `--timeout`, `--fuel`, `--cpu`: limits are enforced and the
//! process says which one stopped the guest.

use crate::support::*;
use std::time::Duration;

/// The last `holding N MiB` a mem-grow run printed.
fn held_mib(stdout: &str) -> u64 {
    stdout
        .lines()
        .rev()
        .find_map(|l| {
            l.strip_prefix("holding ")?
                .strip_suffix(" MiB")?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

#[test]
fn memory_bomb_stops_at_the_limit_with_137() {
    for (kind, grow) in both("mem-grow") {
        let out = skiff(["run", "--memory", "32m", grow, "--step-mib", "1"]).run();
        assert_eq!(out.code, 137, "{kind}: {}", out.stderr);
        assert!(
            out.stderr.contains("exceeded its memory limit of 32 MiB"),
            "{kind}: {}",
            out.stderr
        );
        let held = held_mib(&out.stdout);
        assert!(
            (16..=32).contains(&held),
            "{kind}: held {held} MiB under a 32 MiB limit"
        );
    }
}

#[test]
fn a_careful_guest_sees_the_allocation_fail() {
    for (kind, grow) in both("mem-grow") {
        let out = skiff(["run", "-m", "32m", grow, "--careful", "--step-mib", "1"]).run();
        assert_eq!(out.code, 0, "{kind}: {}", out.stderr);
        let last = out.stdout.lines().last().unwrap_or_default();
        let linear: u64 = last
            .split("linear memory ")
            .nth(1)
            .and_then(|s| s.strip_suffix(" MiB"))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{kind}: unexpected output {last:?}"));
        assert!(last.starts_with("allocation failed"), "{kind}: {last}");
        assert!(linear <= 32, "{kind}: linear memory reached {linear} MiB");
    }
}

#[test]
fn memory_limit_too_small_to_instantiate_is_137_not_a_crash() {
    let out = skiff(["run", "-m", "64k", app("HELLO_P1")]).run();
    assert_eq!(out.code, 137, "{}", out.stderr);
    assert!(
        out.stderr.contains("memory limit of 64 KiB"),
        "{}",
        out.stderr
    );
}

#[test]
fn spinning_guest_is_stopped_by_timeout_in_about_that_time() {
    for (kind, burn) in both("cpu-burn") {
        let out = skiff(["run", "--timeout", "2s", burn]).run();
        assert_eq!(out.code, 124, "{kind}: {}", out.stderr);
        assert!(
            out.stderr.contains("exceeded its time limit of 2s"),
            "{kind}: {}",
            out.stderr
        );
        assert!(
            out.elapsed >= Duration::from_millis(1900) && out.elapsed < Duration::from_secs(8),
            "{kind}: stopped after {:?}",
            out.elapsed
        );
    }
}

#[test]
fn a_guest_blocked_in_a_host_call_is_stopped_by_timeout_too() {
    let out = skiff(["run", "--timeout", "300ms", app("SLEEPER_P2")]).run();
    assert_eq!(out.code, 124, "{}", out.stderr);
    assert!(out.stdout.contains("sleeper: started"));
    assert!(out.elapsed < Duration::from_secs(5), "{:?}", out.elapsed);
}

#[test]
fn fuel_bounds_total_work() {
    for (kind, burn) in both("cpu-burn") {
        let out = skiff(["run", "--fuel", "5000000", burn]).run();
        assert_eq!(out.code, 124, "{kind}: {}", out.stderr);
        assert!(
            out.stderr.contains("exceeded its fuel limit of 5000000"),
            "{kind}: {}",
            out.stderr
        );
        // Enough fuel for a bounded job lets it finish.
        let out = skiff(["run", "--fuel", "500000000", burn, "--iterations", "1000"]).run();
        assert_eq!(out.code, 0, "{kind}: {}", out.stderr);
        assert!(
            out.stdout.starts_with("done 1000 "),
            "{kind}: {}",
            out.stdout
        );
    }
}

#[test]
fn cpu_units_are_validated_and_accepted() {
    let out = skiff([
        "run",
        "--cpu",
        "512",
        app("CPU_BURN_P1"),
        "--iterations",
        "100",
    ])
    .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    skiff(["run", "--cpu", "1", app("HELLO_P1")])
        .run()
        .assert_one_line_error(2, "--cpu");
}

#[test]
fn a_reader_that_never_reads_does_not_stop_the_time_limit() {
    // stdout is a pipe nobody reads: the guest blocks on it, skiff does not.
    let mut child = skiff(["run", "--timeout", "1s", app("FLOOD_P1"), "256"]).spawn();
    let code = wait_with_limit(&mut child, Duration::from_secs(30));
    assert_eq!(code, 124);
}
