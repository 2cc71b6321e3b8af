//! The `skiff run` flags that shape what the guest sees: arguments, `-e`,
//! `--dir`, `-v`, stdin, and `--version`.

use crate::support::*;

#[test]
fn version_prints_name_and_semver() {
    let out = skiff(["--version"]).run();
    assert_eq!(out.code, 0);
    let line = out.stdout.trim();
    let version = line.strip_prefix("skiff ").expect("starts with `skiff `");
    let parts: Vec<&str> = version.split('.').collect();
    assert_eq!(parts.len(), 3, "{line}");
    assert!(parts.iter().all(|p| p.parse::<u32>().is_ok()), "{line}");
}

#[test]
fn run_parses_the_same_first_or_after_global_flags() {
    // `skiff run …` is parsed by a parser of `run` alone (a faster
    // start); after a global flag, by the whole command line's. What a
    // user sees must not tell them apart.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for args in [
        vec!["--help"],
        vec!["--version"],
        vec!["--bogus", "x.wasm"],
        vec!["--memory", "lots", "x.wasm"],
        vec![],
    ] {
        let short = skiff(["run"].iter().chain(&args)).run();
        let long = skiff(["--data-dir", data, "run"].iter().chain(&args)).run();
        assert_eq!(
            (short.code, &short.stdout, &short.stderr),
            (long.code, &long.stdout, &long.stderr),
            "skiff run {args:?}"
        );
    }
    let help = skiff(["run", "--help"]).run();
    assert!(
        help.stdout
            .starts_with("Run a WASI module or component, sandboxed and limited\n"),
        "{}",
        help.stdout
    );
    // The global flag is taken after `run` too.
    let hello = app("HELLO_P1");
    let out = skiff(["run", "--data-dir", data, hello]).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        std::fs::read_dir(dir.path().join("cache/compiled"))
            .unwrap()
            .next()
            .is_some(),
        "compiled code went to --data-dir"
    );
}

#[test]
fn arguments_after_the_file_go_to_the_guest_verbatim() {
    for (kind, hello) in both("hello") {
        // `-e` and `--dir` after the file are the guest's, not skiff's.
        let out = skiff(["run", hello, "-e", "X=1", "--dir", "/", "plain"]).run();
        assert_eq!(out.code, 0, "{kind}: {}", out.stderr);
        assert_eq!(
            out.stdout_lines(),
            [
                "Hello, world!",
                "arg[0]=hello.wasm",
                "arg[1]=-e",
                "arg[2]=X=1",
                "arg[3]=--dir",
                "arg[4]=/",
                "arg[5]=plain"
            ],
            "{kind}"
        );
    }
}

#[test]
fn env_gives_the_guest_only_what_was_asked() {
    for (kind, probe) in both("wasi-probe") {
        let out = skiff([
            "run",
            "-e",
            "A=1",
            "-e",
            "B=two=2",
            "-e",
            "FROM_HOST",
            probe,
            "env",
        ])
        .env("FROM_HOST", "host-value")
        .env("SECRET", "must-not-leak")
        .run();
        assert_eq!(out.code, 0, "{kind}: {}", out.stderr);
        assert_eq!(
            out.stdout_lines(),
            ["A=1", "B=two=2", "FROM_HOST=host-value"],
            "{kind}"
        );
    }
}

#[test]
fn env_key_without_value_and_unset_on_host_is_left_out() {
    let out = skiff(["run", "-e", "NOT_SET_ANYWHERE", app("WASI_PROBE_P1"), "env"]).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "");
}

#[test]
fn dir_maps_host_to_a_relative_guest_name_like_wasmtime() {
    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("some/host/path");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("f.txt"), "fixture").unwrap();
    for (kind, fs) in both("fs-tool") {
        let out = skiff([
            "run",
            "--dir",
            "some/host/path::fixtures.dir",
            fs,
            "cat",
            "fixtures.dir/f.txt",
        ])
        .current_dir(tmp.path())
        .run();
        assert_eq!(out.code, 0, "{kind}: {}", out.stderr);
        assert_eq!(out.stdout, "fixture", "{kind}");
    }
}

#[test]
fn dir_with_host_alone_mounts_it_at_the_same_path() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("f.txt"), "same path").unwrap();
    let host = tmp.path().to_str().unwrap();
    for (kind, fs) in both("fs-tool") {
        let file = format!("{host}/f.txt");
        let out = skiff(["run", "--dir", host, fs, "cat", &file]).run();
        assert_eq!(out.code, 0, "{kind}: {}", out.stderr);
        assert_eq!(out.stdout, "same path", "{kind}");
    }
    // A relative HOST alone is visible under the same relative name.
    std::fs::create_dir(tmp.path().join("rel")).unwrap();
    std::fs::write(tmp.path().join("rel/g.txt"), "relative").unwrap();
    let out = skiff(["run", "--dir", "rel", app("FS_TOOL_P1"), "cat", "rel/g.txt"])
        .current_dir(tmp.path())
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "relative");
}

#[test]
fn dir_is_read_write() {
    let tmp = tempfile::tempdir().unwrap();
    let mount = format!("{}::/work", tmp.path().display());
    for (kind, fs) in both("fs-tool") {
        let out = skiff(["run", "--dir", &mount, fs, "write", "/work/out.txt", kind]).run();
        assert_eq!(out.code, 0, "{kind}: {}", out.stderr);
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("out.txt")).unwrap(),
            kind
        );
    }
}

#[test]
fn volume_rw_writes_reach_the_host_and_ro_reads_work() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("in.txt"), "input").unwrap();
    let rw = format!("{}:/data", tmp.path().display());
    let ro = format!("{}:/data:ro", tmp.path().display());
    for (kind, fs) in both("fs-tool") {
        let out = skiff([
            "run",
            "-v",
            &rw,
            fs,
            "rename",
            "/data/in.txt",
            "/data/moved.txt",
        ])
        .run();
        assert_eq!(out.code, 0, "{kind}: {}", out.stderr);
        assert!(tmp.path().join("moved.txt").exists(), "{kind}");
        let out = skiff(["run", "-v", &ro, fs, "cat", "/data/moved.txt"]).run();
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (0, "input"),
            "{kind}: {}",
            out.stderr
        );
        std::fs::rename(tmp.path().join("moved.txt"), tmp.path().join("in.txt")).unwrap();
    }
}

#[test]
fn named_volume_lives_under_the_data_dir_and_persists() {
    let data = tempfile::tempdir().unwrap();
    let out = skiff([
        "run",
        "-v",
        "cache:/cache",
        app("FS_TOOL_P2"),
        "write",
        "/cache/kept",
        "across runs",
    ])
    .data_dir(data.path())
    .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(data.path().join("volumes/cache/kept")).unwrap(),
        "across runs"
    );
    let out = skiff([
        "run",
        "-v",
        "cache:/c:ro",
        app("FS_TOOL_P1"),
        "cat",
        "/c/kept",
    ])
    .data_dir(data.path())
    .run();
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "across runs"),
        "{}",
        out.stderr
    );
}

#[test]
fn stdin_is_streamed_to_the_guest() {
    for (kind, probe) in both("wasi-probe") {
        let input = b"line one\nline two\n";
        let out = skiff(["run", probe, "stdin"]).stdin(input).run();
        assert_eq!(out.code, 0, "{kind}: {}", out.stderr);
        assert_eq!(out.stdout.as_bytes(), input, "{kind}");
        assert!(
            out.stderr.contains("read 18 bytes"),
            "{kind}: {}",
            out.stderr
        );
    }
}

#[test]
fn clocks_are_the_hosts() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for (kind, probe) in both("wasi-probe") {
        let out = skiff(["run", probe, "clocks"]).run();
        assert_eq!(out.code, 0, "{kind}: {}", out.stderr);
        let lines = out.stdout_lines();
        let wall: u64 = lines[0].strip_prefix("wall ").unwrap().parse().unwrap();
        assert!(
            wall.abs_diff(now) < 120,
            "{kind}: wall clock {wall} vs host {now}"
        );
        let slept: u64 = lines[1].strip_prefix("slept ").unwrap().parse().unwrap();
        assert!(slept >= 50, "{kind}: a 50 ms sleep measured {slept} ms");
    }
}

#[test]
fn random_is_fresh_every_run() {
    for (kind, probe) in both("wasi-probe") {
        let a = skiff(["run", probe, "random"]).run();
        let b = skiff(["run", probe, "random"]).run();
        assert_eq!(
            (a.code, b.code),
            (0, 0),
            "{kind}: {} {}",
            a.stderr,
            b.stderr
        );
        let hex = |s: &str| s.trim().strip_prefix("random ").unwrap().to_string();
        let (x, y) = (hex(&a.stdout), hex(&b.stdout));
        assert_eq!(x.len(), 64, "{kind}: {x}");
        assert_ne!(x, y, "{kind}: two runs drew the same 32 random bytes");
    }
}

#[test]
fn data_dir_flag_and_env_choose_where_compiled_code_goes() {
    let by_flag = tempfile::tempdir().unwrap();
    let out = skiff([
        "run",
        "--data-dir",
        by_flag.path().to_str().unwrap(),
        app("HELLO_P1"),
    ])
    .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let entries = std::fs::read_dir(by_flag.path().join("cache/compiled"))
        .unwrap()
        .count();
    assert_eq!(entries, 1);

    let by_env = tempfile::tempdir().unwrap();
    let out = skiff(["run", app("HELLO_P2")])
        .data_dir(by_env.path())
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let entries = std::fs::read_dir(by_env.path().join("cache/compiled"))
        .unwrap()
        .count();
    assert_eq!(entries, 1);

    // An empty variable is unset, and a flag given wins over it.
    let out = skiff([
        "run",
        "--data-dir",
        by_flag.path().to_str().unwrap(),
        app("HELLO_P2"),
    ])
    .env("SKIFF_DATA_DIR", "")
    .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let entries = std::fs::read_dir(by_flag.path().join("cache/compiled"))
        .unwrap()
        .count();
    assert_eq!(entries, 2);
}

/// `--compile-cache-limit` (or `SKIFF_COMPILE_CACHE_LIMIT`): past it, the
/// least recently used compiled code goes when new code is written; a
/// limit too small to hold anything is refused.
#[test]
fn compile_cache_limit_removes_the_least_recently_used_code() {
    let data = tempfile::tempdir().unwrap();
    let cache = data.path().join("cache/compiled");
    std::fs::create_dir_all(&cache).unwrap();
    // Code of some other binary (and another engine), unused for a day.
    let stale = cache.join(format!("{}-0123456789abcdef.cwasm", "ab".repeat(32)));
    let f = std::fs::File::create(&stale).unwrap();
    f.set_len(3 << 20).unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(86_400))
        .unwrap();
    drop(f);
    let out = skiff(["run", "--compile-cache-limit", "2m", app("HELLO_P1")])
        .data_dir(data.path())
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let left: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!stale.exists(), "the stale entry goes: {left:?}");
    assert_eq!(left.len(), 1, "hello's own code stays: {left:?}");

    let out = skiff(["run", app("HELLO_P1")])
        .data_dir(data.path())
        .env("SKIFF_COMPILE_CACHE_LIMIT", "64k")
        .run();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("SKIFF_COMPILE_CACHE_LIMIT in the environment: `64k`: a compile cache limit is at least 1m"),
        "{}",
        out.stderr
    );
    // A flag given wins over the variable; an empty variable is unset.
    for (flag, var) in [(&["--compile-cache-limit", "2m"][..], "64k"), (&[][..], "")] {
        let out = skiff(["run"].iter().chain(flag).chain([&app("HELLO_P1")]))
            .data_dir(data.path())
            .env("SKIFF_COMPILE_CACHE_LIMIT", var)
            .run();
        assert_eq!(out.code, 0, "{flag:?} {var:?}: {}", out.stderr);
    }
    // A command that compiles nothing neither lists nor takes it.
    let out = skiff(["images", "--compile-cache-limit", "1g"])
        .data_dir(data.path())
        .run();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("unexpected argument '--compile-cache-limit'"),
        "{}",
        out.stderr
    );
    let help = skiff(["push", "--help"]).run();
    assert_eq!(help.code, 0, "{}", help.stderr);
    assert!(help.stdout.contains("--data-dir"), "{}", help.stdout);
    assert!(
        !help.stdout.contains("--compile-cache-limit"),
        "{}",
        help.stdout
    );
}
