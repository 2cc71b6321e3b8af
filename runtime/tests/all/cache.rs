//! The compile cache: a second start never compiles; a changed file, a
//! changed engine or a damaged entry never reuses stale code.

use crate::*;
use skiff_runtime::{LoadSource, Outcome};

fn entries(data: &std::path::Path) -> Vec<std::path::PathBuf> {
    let dir = data.join("cache/compiled");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn second_load_in_a_new_process_comes_from_disk() {
    let data = tempfile::tempdir().unwrap();
    for (kind, hello) in both("hello") {
        // Each `Runtime` stands for a fresh process: nothing in memory.
        let first = runtime(data.path()).load_file(hello.as_ref()).unwrap();
        assert_eq!(first.source(), LoadSource::Compiled, "{kind}");
        let second = runtime(data.path()).load_file(hello.as_ref()).unwrap();
        assert_eq!(second.source(), LoadSource::DiskCache, "{kind}");
        assert_eq!(first.digest(), second.digest());
    }
    assert_eq!(entries(data.path()).len(), 2);
}

#[tokio::test]
async fn cached_code_runs_like_fresh_code() {
    let data = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let rt = runtime(data.path());
        let hello = rt.load_file(app("HELLO_P2").as_ref()).unwrap();
        let (spec, out, _) = captured(&["hello", "--exit", "5"]);
        let outcome = rt.spawn(&hello, spec).unwrap().wait().await;
        assert_eq!(outcome, Outcome::Exited(5));
        assert!(out.text().starts_with("Hello, world!"));
    }
}

#[tokio::test]
async fn code_loaded_from_disk_runs_on_when_its_entry_is_replaced() {
    // Loaded code maps the entry's file; entries are replaced by renaming
    // a new file over them, which leaves the mapped one as it was.
    let data = tempfile::tempdir().unwrap();
    for (kind, hello) in both("hello") {
        runtime(data.path()).load_file(hello.as_ref()).unwrap();
        let rt = runtime(data.path());
        let loaded = rt.load_file(hello.as_ref()).unwrap();
        assert_eq!(loaded.source(), LoadSource::DiskCache, "{kind}");
        for entry in entries(data.path()) {
            let new = entry.with_extension("new");
            std::fs::write(&new, b"not code").unwrap();
            std::fs::rename(&new, &entry).unwrap();
        }
        let (spec, out, _) = captured(&["hello", "--exit", "5"]);
        let outcome = rt.spawn(&loaded, spec).unwrap().wait().await;
        assert_eq!(outcome, Outcome::Exited(5), "{kind}");
        assert!(out.text().starts_with("Hello, world!"), "{kind}");
    }
}

#[test]
fn a_changed_file_is_compiled_again() {
    let data = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("app.wasm");
    let v1 = wat::parse_str(r#"(module (func (export "_start")))"#).unwrap();
    let v2 = wat::parse_str(r#"(module (func (export "_start") nop))"#).unwrap();
    std::fs::write(&path, &v1).unwrap();
    assert_eq!(
        runtime(data.path()).load_file(&path).unwrap().source(),
        LoadSource::Compiled
    );
    std::fs::write(&path, &v2).unwrap();
    let changed = runtime(data.path()).load_file(&path).unwrap();
    assert_eq!(changed.source(), LoadSource::Compiled);
    assert_eq!(entries(data.path()).len(), 2, "one entry per content");
}

#[test]
fn a_different_engine_never_uses_the_entry() {
    let data = tempfile::tempdir().unwrap();
    let plain = runtime(data.path());
    assert_eq!(
        plain.load_file(app("HELLO_P1").as_ref()).unwrap().source(),
        LoadSource::Compiled
    );
    // Fuel metering changes the generated code, so the engine hash differs.
    let fuel = Runtime::new(RuntimeConfig {
        fuel: true,
        ..RuntimeConfig::default().with_data_dir(data.path())
    })
    .unwrap();
    assert_eq!(
        fuel.load_file(app("HELLO_P1").as_ref()).unwrap().source(),
        LoadSource::Compiled
    );
    assert_eq!(entries(data.path()).len(), 2);
}

#[tokio::test]
async fn a_corrupt_entry_is_detected_and_recompiled() {
    let data = tempfile::tempdir().unwrap();
    runtime(data.path())
        .load_file(app("HELLO_P1").as_ref())
        .unwrap();
    let [entry] = entries(data.path()).try_into().unwrap();

    // Damage the compiled code in the middle, where wasmtime would not notice.
    let mut bytes = std::fs::read(&entry).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(&entry, &bytes).unwrap();

    let rt = runtime(data.path());
    let hello = rt.load_file(app("HELLO_P1").as_ref()).unwrap();
    assert_eq!(hello.source(), LoadSource::Compiled);
    let (spec, out, _) = captured(&["hello"]);
    assert_eq!(
        rt.spawn(&hello, spec).unwrap().wait().await,
        Outcome::Exited(0)
    );
    assert!(out.text().starts_with("Hello, world!"));
    // The entry was rewritten and is good again.
    assert_eq!(
        runtime(data.path())
            .load_file(app("HELLO_P1").as_ref())
            .unwrap()
            .source(),
        LoadSource::DiskCache
    );

    // A truncated entry, and one that is not compiled code at all, too.
    for damage in [&bytes[..100], b"garbage".as_slice()] {
        std::fs::write(&entry, damage).unwrap();
        let again = runtime(data.path())
            .load_file(app("HELLO_P1").as_ref())
            .unwrap();
        assert_eq!(again.source(), LoadSource::Compiled);
    }
}

#[test]
fn the_cache_can_be_turned_off() {
    let data = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        compile_cache: false,
        ..RuntimeConfig::default().with_data_dir(data.path())
    };
    for _ in 0..2 {
        let rt = Runtime::new(config.clone()).unwrap();
        assert_eq!(
            rt.load_file(app("HELLO_P1").as_ref()).unwrap().source(),
            LoadSource::Compiled
        );
    }
    assert!(entries(data.path()).is_empty());
}

#[test]
fn concurrent_loads_of_one_file_share_the_entry_safely() {
    let data = tempfile::tempdir().unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let dir = data.path().to_path_buf();
            std::thread::spawn(move || {
                runtime(&dir)
                    .load_file(app("HELLO_P2").as_ref())
                    .map(|_| ())
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    assert_eq!(entries(data.path()).len(), 1, "no temp files left behind");
    assert_eq!(
        runtime(data.path())
            .load_file(app("HELLO_P2").as_ref())
            .unwrap()
            .source(),
        LoadSource::DiskCache
    );
}

#[test]
fn precompiling_fills_the_cache_once_and_a_load_meanwhile_waits_for_it() {
    let data = tempfile::tempdir().unwrap();
    for (kind, hello) in both("hello") {
        let bytes = std::fs::read(hello).unwrap();
        let rt = runtime(data.path());
        // A push's compile and a task's start of the same binary at once
        // (as different names): one compiles, the other finds its code.
        let (pushed, started) = std::thread::scope(|s| {
            let push = s.spawn(|| rt.precompile("pushed", &bytes).unwrap());
            let start = s.spawn(|| rt.load_bytes("started", &bytes).unwrap().source());
            (push.join().unwrap(), start.join().unwrap())
        });
        assert!(
            pushed != (started == LoadSource::Compiled),
            "{kind}: compiled by the push: {pushed}, the start's code: {started:?}"
        );
        // Compiled already: nothing to do.
        assert!(!rt.precompile("again", &bytes).unwrap(), "{kind}");
        let fresh = runtime(data.path());
        assert!(!fresh.precompile("again", &bytes).unwrap(), "{kind}");
        assert_eq!(
            fresh.load_bytes("later", &bytes).unwrap().source(),
            LoadSource::DiskCache,
            "{kind}"
        );
    }
    assert_eq!(entries(data.path()).len(), 2);
}

#[test]
fn precompiling_without_a_cache_keeps_nothing_and_bad_binaries_are_errors() {
    let data = tempfile::tempdir().unwrap();
    let rt = skiff_runtime::Runtime::new(skiff_runtime::RuntimeConfig {
        compile_cache: false,
        ..skiff_runtime::RuntimeConfig::default().with_data_dir(data.path())
    })
    .unwrap();
    let hello = std::fs::read(app("HELLO_P1")).unwrap();
    assert!(!rt.precompile("hello", &hello).unwrap());
    assert!(entries(data.path()).is_empty());
    let rt = runtime(data.path());
    let err = rt.precompile("junk", b"\0asm\x01\0\0\0junk").unwrap_err();
    assert!(err.to_string().contains("junk"), "{err}");
    assert!(entries(data.path()).is_empty());
}
