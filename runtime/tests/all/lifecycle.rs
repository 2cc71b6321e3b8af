//! Instances: outcomes, stopping, usage, and the errors of `spawn`.

use crate::*;
use skiff_runtime::{Limit, Limits, Mount, Outcome, SpawnError, Stdin};
use std::time::{Duration, Instant};

#[tokio::test]
async fn graceful_stop_closes_stdin_and_the_guest_exits_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(data.path());
    for (kind, sleeper) in both("sleeper") {
        let art = rt.load_file(sleeper.as_ref()).unwrap();
        let (spec, out, _) = captured(&["sleeper", "--until-stdin-eof"]);
        let spec = InstanceSpec {
            stdin: Stdin::UntilStopped,
            ..spec
        };
        let mut task = rt.spawn(&art, spec).unwrap();
        wait_until("the sleeper started", || out.text().contains("started")).await;
        assert!(!task.is_finished(), "{kind}: it waits for stdin");
        task.stop(Duration::from_secs(30));
        let start = Instant::now();
        assert_eq!(task.wait().await, Outcome::Exited(0), "{kind}");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{kind}: it did not wait out the grace"
        );
        assert!(
            out.text().contains("stdin closed, exiting"),
            "{kind}: {}",
            out.text()
        );
    }
}

#[tokio::test]
async fn a_guest_that_ignores_the_stop_is_killed_after_the_grace_period() {
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(data.path());
    for (kind, sleeper) in both("sleeper") {
        let art = rt.load_file(sleeper.as_ref()).unwrap();
        let (spec, out, _) = captured(&["sleeper"]);
        let mut task = rt
            .spawn(
                &art,
                InstanceSpec {
                    stdin: Stdin::UntilStopped,
                    ..spec
                },
            )
            .unwrap();
        wait_until("the sleeper started", || out.text().contains("started")).await;
        let start = Instant::now();
        task.stop(Duration::from_millis(200));
        assert_eq!(task.wait().await, Outcome::Stopped, "{kind}");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(190),
            "{kind}: killed before the grace ran out ({took:?})"
        );
        assert!(took < Duration::from_secs(10), "{kind}: {took:?}");
        // `wait` keeps answering the same.
        assert_eq!(task.wait().await, Outcome::Stopped);
        assert_eq!(task.wait().await.exit_code(), 137);
    }
}

#[tokio::test]
async fn dropping_the_handle_kills_the_instance() {
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(data.path());
    let art = rt.load_file(app("CPU_BURN_P1").as_ref()).unwrap();
    let sink = std::sync::Arc::new(CaptureSink::new());
    let spec = InstanceSpec {
        args: vec!["cpu-burn".into()],
        stdout: Output::Sink(sink.clone()),
        ..InstanceSpec::default()
    };
    let task = rt.spawn(&art, spec).unwrap();
    assert!(
        std::sync::Arc::strong_count(&sink) > 1,
        "the instance holds the sink"
    );
    drop(task);
    // The store (and with it the sink) goes away once the task is aborted.
    wait_until("the instance is gone", || {
        std::sync::Arc::strong_count(&sink) == 1
    })
    .await;
}

#[tokio::test]
async fn timeout_and_memory_outcomes_name_the_limit() {
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(data.path());
    let burn = rt.load_file(app("CPU_BURN_P2").as_ref()).unwrap();
    let (spec, _, _) = captured(&["cpu-burn"]);
    let limits = Limits {
        timeout: Some(Duration::from_millis(300)),
        ..Limits::default()
    };
    let outcome = rt
        .spawn(&burn, InstanceSpec { limits, ..spec })
        .unwrap()
        .wait()
        .await;
    assert!(
        matches!(outcome, Outcome::LimitExceeded { limit: Limit::Timeout(t), .. } if t == Duration::from_millis(300)),
        "{outcome:?}"
    );
    assert_eq!(outcome.exit_code(), 124);

    let grow = rt.load_file(app("MEM_GROW_P1").as_ref()).unwrap();
    let (spec, _, _) = captured(&["mem-grow"]);
    let limits = Limits {
        memory: Some(16 << 20),
        ..Limits::default()
    };
    let mut task = rt.spawn(&grow, InstanceSpec { limits, ..spec }).unwrap();
    let outcome = task.wait().await;
    assert!(
        matches!(outcome, Outcome::LimitExceeded { limit: Limit::Memory(m), .. } if m == 16 << 20),
        "{outcome:?}"
    );
    assert_eq!(outcome.exit_code(), 137);
    // It got close to the limit before it was refused.
    let peak = task.usage().peak_memory_bytes;
    assert!((8 << 20..=16 << 20).contains(&peak), "{:?}", task.usage());
}
#[tokio::test]
async fn a_stop_grace_period_does_not_extend_the_time_limit() {
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(data.path());
    let sleeper = rt.load_file(app("SLEEPER_P1").as_ref()).unwrap();
    let (spec, out, _) = captured(&["sleeper"]);
    let spec = InstanceSpec {
        limits: Limits {
            timeout: Some(Duration::from_millis(500)),
            ..Limits::default()
        },
        ..spec
    };
    let mut task = rt.spawn(&sleeper, spec).unwrap();
    wait_until("the sleeper started", || out.text().contains("started")).await;
    task.stop(Duration::from_secs(600));
    let start = Instant::now();
    let outcome = task.wait().await;
    assert!(
        matches!(
            outcome,
            Outcome::LimitExceeded {
                limit: Limit::Timeout(_),
                ..
            }
        ),
        "{outcome:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

/// A sink that blocks every write until the test lets go.
struct BlockedSink(std::sync::Mutex<std::sync::mpsc::Receiver<()>>);

impl skiff_runtime::OutputSink for BlockedSink {
    fn write(&self, _: &[u8]) -> std::io::Result<()> {
        if let Ok(gate) = self.0.lock() {
            let _ = gate.recv();
        }
        Ok(())
    }
}

/// A reader that never reads holds up its own guest, never the thread the
/// guest shares with timers and other tasks: the time limit still fires.
#[test]
fn a_blocked_output_stalls_only_its_own_guest() {
    one_thread().block_on(async {
        let data = tempfile::tempdir().unwrap();
        let rt = runtime(data.path());
        let flood = rt.load_file(app("FLOOD_P1").as_ref()).unwrap();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let spec = InstanceSpec {
            args: vec!["flood".into(), "64".into()],
            stdout: Output::Sink(std::sync::Arc::new(BlockedSink(std::sync::Mutex::new(
                gate,
            )))),
            limits: Limits {
                timeout: Some(Duration::from_millis(500)),
                ..Limits::default()
            },
            ..InstanceSpec::default()
        };
        let start = Instant::now();
        let outcome = rt.spawn(&flood, spec).unwrap().wait().await;
        assert!(
            matches!(
                outcome,
                Outcome::LimitExceeded {
                    limit: Limit::Timeout(_),
                    ..
                }
            ),
            "{outcome:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        drop(release);
    });
}

#[tokio::test]
async fn two_mounts_at_one_guest_path_are_refused() {
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(data.path());
    let hello = rt.load_file(app("HELLO_P1").as_ref()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mount = |read_only| Mount {
        host: dir.path().into(),
        guest: "/data".into(),
        read_only,
    };
    let spec = InstanceSpec {
        mounts: vec![mount(true), mount(false)],
        ..InstanceSpec::default()
    };
    let err = rt.spawn(&hello, spec).unwrap_err();
    assert!(
        matches!(err, SpawnError::DuplicateMount(ref p) if p == "/data"),
        "{err}"
    );
}

#[tokio::test]
async fn multi_memory_modules_run_within_an_instances_share_of_the_pool() {
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(data.path());
    let two = wat::parse_str(
        r#"(module (memory 1) (memory $b 1)
             (func (export "_start") (i32.store $b (i32.const 0) (i32.const 7))))"#,
    )
    .unwrap();
    let art = rt.load_bytes("two-memories", &two).unwrap();
    assert_eq!(
        rt.spawn(&art, InstanceSpec::default())
            .unwrap()
            .wait()
            .await,
        Outcome::Exited(0)
    );
    // More memories than an instance's share is valid Wasm skiff will not
    // run, said as such, not "invalid".
    let five = wat::parse_str(
        r#"(module (memory 1) (memory 1) (memory 1) (memory 1) (memory 1) (func (export "_start")))"#,
    )
    .unwrap();
    let err = rt
        .load_bytes("five-memories", &five)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("five-memories cannot run on skiff") && err.contains("valid WebAssembly"),
        "{err}"
    );
}

#[tokio::test]
async fn memory_usage_is_reported() {
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(data.path());
    for (kind, grow) in both("mem-grow") {
        let art = rt.load_file(grow.as_ref()).unwrap();
        let (spec, _, _) = captured(&["mem-grow", "--step-mib", "1", "--max-mib", "8"]);
        let mut task = rt.spawn(&art, spec).unwrap();
        assert_eq!(task.wait().await, Outcome::Exited(0), "{kind}");
        let usage = task.usage();
        assert!(
            (8 << 20..=24 << 20).contains(&usage.peak_memory_bytes),
            "{kind}: peak {usage:?}"
        );
    }
}

#[tokio::test]
async fn many_instances_of_one_artifact_run_at_once() {
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(data.path());
    let hello = rt.load_file(app("HELLO_P2").as_ref()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (spec, out, _) = captured(&["hello", &format!("n{i}")]);
        tasks.push((rt.spawn(&hello, spec).unwrap(), out, i));
    }
    for (mut task, out, i) in tasks {
        assert_eq!(task.wait().await, Outcome::Exited(0));
        assert!(out.text().contains(&format!("arg[1]=n{i}")));
    }
}

#[tokio::test]
async fn spawn_refuses_what_it_cannot_honour() {
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(data.path());
    let http = rt.load_file(app("HTTP_HELLO_P2").as_ref()).unwrap();
    assert!(matches!(
        rt.spawn(&http, InstanceSpec::default()),
        Err(SpawnError::NotACommand(_))
    ));

    let hello = rt.load_file(app("HELLO_P1").as_ref()).unwrap();
    let fuel = InstanceSpec {
        limits: Limits {
            fuel: Some(1000),
            ..Limits::default()
        },
        ..InstanceSpec::default()
    };
    assert!(matches!(
        rt.spawn(&hello, fuel),
        Err(SpawnError::FuelDisabled)
    ));

    let missing = InstanceSpec {
        mounts: vec![Mount {
            host: "/no/such/dir".into(),
            guest: "/data".into(),
            read_only: false,
        }],
        ..InstanceSpec::default()
    };
    let err = rt.spawn(&hello, missing).unwrap_err();
    assert!(err.to_string().contains("/no/such/dir"), "{err}");
}

#[test]
fn spawn_outside_an_async_runtime_is_an_error_not_a_panic() {
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(data.path());
    let hello = rt.load_file(app("HELLO_P1").as_ref()).unwrap();
    assert!(matches!(
        rt.spawn(&hello, InstanceSpec::default()),
        Err(SpawnError::NoExecutor)
    ));
}

#[test]
fn load_errors_say_what_is_wrong() {
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(data.path());
    let err = rt.load_bytes("text", b"hello").unwrap_err().to_string();
    assert!(err.contains("text is not a WebAssembly binary"), "{err}");
    let err = rt
        .load_bytes("bad", b"\0asm\x01\0\0\0\x01\xff")
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad is not valid WebAssembly"), "{err}");
    let imports =
        wat::parse_str(r#"(module (import "env" "f" (func)) (func (export "_start")))"#).unwrap();
    let err = rt.load_bytes("imp", &imports).unwrap_err().to_string();
    assert!(
        err.contains("imp cannot run on skiff") && err.contains("env::f"),
        "{err}"
    );
    let err = rt
        .load_file("/no/such.wasm".as_ref())
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot read /no/such.wasm"), "{err}");
}

/// Thousands of tasks share a couple of threads: 2000 guests sleeping at
/// once on a two-worker runtime, then all stopped.
#[test]
fn two_thousand_sleeping_tasks_share_two_threads() {
    let exec = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    exec.block_on(async {
        let data = tempfile::tempdir().unwrap();
        let rt = Runtime::new(RuntimeConfig {
            max_instances: 2000,
            ..RuntimeConfig::default().with_data_dir(data.path())
        })
        .unwrap();
        let sleeper = rt.load_file(app("SLEEPER_P1").as_ref()).unwrap();
        let sink = CaptureSink::new();
        let mut tasks = Vec::new();
        for _ in 0..2000 {
            let spec = InstanceSpec {
                args: vec!["sleeper".into()],
                stdout: Output::Sink(std::sync::Arc::new(sink.clone())),
                ..InstanceSpec::default()
            };
            tasks.push(rt.spawn(&sleeper, spec).unwrap());
        }
        wait_until("all 2000 are running", || {
            sink.text().matches("sleeper: started").count() == 2000
        })
        .await;
        assert!(tasks.iter().all(|t| !t.is_finished()));
        for task in &tasks {
            task.stop(Duration::ZERO);
        }
        for mut task in tasks {
            assert_eq!(task.wait().await, Outcome::Stopped);
        }
    });
}

#[tokio::test]
async fn spawning_beyond_the_pool_is_refused_until_a_slot_frees() {
    let data = tempfile::tempdir().unwrap();
    let rt = runtime_with_slots(data.path(), 2);
    let sleeper = rt.load_file(app("SLEEPER_P1").as_ref()).unwrap();
    let mut first = rt.spawn(&sleeper, InstanceSpec::default()).unwrap();
    let _second = rt.spawn(&sleeper, InstanceSpec::default()).unwrap();
    let err = rt.spawn(&sleeper, InstanceSpec::default()).unwrap_err();
    assert!(matches!(err, SpawnError::AtCapacity(2)), "{err}");
    first.stop(Duration::ZERO);
    assert_eq!(first.wait().await, Outcome::Stopped);
    let mut third = rt.spawn(&sleeper, InstanceSpec::default()).unwrap();
    third.stop(Duration::ZERO);
    assert_eq!(third.wait().await, Outcome::Stopped);
}
