//! CPU: a spinning guest cannot starve other tasks or the runtime, and
//! tasks share a contended CPU in proportion to their units.

use crate::*;
use skiff_runtime::{Instance, Limits, Outcome};
use std::time::{Duration, Instant};

fn burner(rt: &Runtime, units: u32) -> (Instance, CaptureSink) {
    let burn = rt.load_file(app("CPU_BURN_P1").as_ref()).unwrap();
    let (spec, out, _) = captured(&["cpu-burn", "--report-every", "2000000"]);
    let spec = InstanceSpec {
        limits: Limits {
            cpu_units: units,
            ..Limits::default()
        },
        ..spec
    };
    (rt.spawn(&burn, spec).unwrap(), out)
}

fn progress(out: &CaptureSink) -> usize {
    out.text()
        .lines()
        .filter(|l| l.starts_with("progress"))
        .count()
}

/// Two tasks on one thread contend for it: each pair must share the CPU in
/// the ratio of its units (within the precision of the epoch tick), and
/// neither may starve.
#[test]
fn contended_tasks_share_cpu_by_units() {
    for (small_units, large_units) in [(1024, 3072), (512, 2048)] {
        let expected = f64::from(large_units) / f64::from(small_units);
        one_thread().block_on(async {
            let data = tempfile::tempdir().unwrap();
            let rt = runtime(data.path());
            let (mut small, small_out) = burner(&rt, small_units);
            let (mut large, large_out) = burner(&rt, large_units);

            // Measure over a fixed amount of CPU, not of wall-clock time, so
            // a busy machine only makes the test slower.
            let deadline = Instant::now() + Duration::from_secs(120);
            while small.usage().cpu_time + large.usage().cpu_time < Duration::from_millis(1500) {
                assert!(Instant::now() < deadline, "the tasks made no progress");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            small.stop(Duration::ZERO);
            large.stop(Duration::ZERO);
            assert_eq!(small.wait().await, Outcome::Stopped);
            assert_eq!(large.wait().await, Outcome::Stopped);

            let (s, l) = (small.usage().cpu_time, large.usage().cpu_time);
            let ratio = l.as_secs_f64() / s.as_secs_f64();
            assert!(s > Duration::from_millis(100), "{small_units} units starved: {s:?} vs {l:?}");
            assert!(
                (expected * 0.6..=expected * 1.6).contains(&ratio),
                "{large_units}:{small_units} units got {ratio:.2}x the CPU, expected about {expected}x ({l:?} vs {s:?})"
            );
            assert!(progress(&small_out) > 0 && progress(&large_out) > progress(&small_out));
        });
    }
}

/// With a guest spinning on the only thread, timers still fire promptly:
/// the guest yields after each CPU slice.
#[test]
fn a_spinning_guest_does_not_starve_the_runtime() {
    one_thread().block_on(async {
        let data = tempfile::tempdir().unwrap();
        let rt = runtime(data.path());
        let (mut spinner, _) = burner(&rt, 262_144);
        // Let it get going: it has used some CPU.
        while spinner.usage().cpu_time < Duration::from_millis(50) {
            tokio::task::yield_now().await;
        }
        let mut worst = Duration::ZERO;
        for _ in 0..10 {
            let start = Instant::now();
            tokio::time::sleep(Duration::from_millis(10)).await;
            worst = worst.max(start.elapsed());
        }
        spinner.stop(Duration::ZERO);
        spinner.wait().await;
        // Even the largest share yields after its capped 50 ms slice.
        assert!(
            worst < Duration::from_millis(500),
            "a 10 ms timer took {worst:?}"
        );
    });
}

/// A guest's CPU time is observable while it runs and after it ends.
#[tokio::test]
async fn cpu_time_is_reported() {
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(data.path());
    let burn = rt.load_file(app("CPU_BURN_P2").as_ref()).unwrap();
    let (spec, out, _) = captured(&["cpu-burn", "--iterations", "200000000"]);
    let mut job = rt.spawn(&burn, spec).unwrap();
    assert_eq!(job.wait().await, Outcome::Exited(0));
    assert!(out.text().starts_with("done 200000000"));
    assert!(
        job.usage().cpu_time > Duration::from_millis(20),
        "{:?}",
        job.usage()
    );
}

/// A capped guest gets no more CPU than its cap allows, however free the
/// cores are: a quarter of a core, plus the burst, over the time it ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_cap_holds_a_spinning_guest_to_its_share() {
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(data.path());
    let burn = rt.load_file(app("CPU_BURN_P1").as_ref()).unwrap();
    let (spec, out, _) = captured(&["cpu-burn", "--report-every", "2000000"]);
    let spec = InstanceSpec {
        limits: Limits {
            cpu_units: 256,
            cpu_cap: Some(skiff_runtime::CpuCap::new(256)),
            ..Limits::default()
        },
        ..spec
    };
    let started = Instant::now();
    let mut job = rt.spawn(&burn, spec).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    job.stop(Duration::ZERO);
    assert_eq!(job.wait().await, Outcome::Stopped);
    let ran = started.elapsed();
    let used = job.usage().cpu_time;
    let allowed = ran.mul_f64(0.25) + skiff_runtime::CPU_BURST.mul_f64(0.25);
    assert!(
        used <= allowed + Duration::from_millis(50),
        "used {used:?} of CPU in {ran:?} with a quarter of a core"
    );
    assert!(progress(&out) > 0, "it still runs");
}
