//! Hostile guests: nothing outside the preopens is reachable, and a
//! read-only volume refuses every write-like operation.

use crate::support::*;
use std::path::Path;

/// A host tree: `root/data` is mounted, `root/outside/secret.txt` must stay
/// out of reach; `data/escape` is a pre-existing symlink pointing outside.
fn fixture() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::create_dir_all(tmp.path().join("outside")).unwrap();
    std::fs::write(tmp.path().join("outside/secret.txt"), "SECRET").unwrap();
    std::fs::write(data.join("file.txt"), "inside").unwrap();
    std::os::unix::fs::symlink("../outside/secret.txt", data.join("escape")).unwrap();
    std::os::unix::fs::symlink(
        tmp.path().join("outside/secret.txt"),
        data.join("escape-abs"),
    )
    .unwrap();
    tmp
}

fn mount(root: &Path, mode: &str) -> String {
    format!("{}:/data{mode}", root.join("data").display())
}

fn denied(out: &Finished, what: &str) {
    assert_eq!(
        out.code, 1,
        "{what} should fail: {} {}",
        out.stdout, out.stderr
    );
    assert!(!out.stdout.contains("SECRET"), "{what} leaked the secret");
    assert!(out.stderr.contains("fs-tool:"), "{what}: {}", out.stderr);
}

#[test]
fn reads_cannot_leave_a_preopen() {
    let tmp = fixture();
    let secret = tmp.path().join("outside/secret.txt");
    let v = mount(tmp.path(), "");
    for (kind, fs) in both("fs-tool") {
        for path in [
            "/data/../outside/secret.txt",
            "/data/sub/../../outside/secret.txt",
            secret.to_str().unwrap(),
            "/data/escape",
            "/data/escape-abs",
            "/etc/passwd",
        ] {
            let out = skiff(["run", "-v", &v, fs, "cat", path]).run();
            denied(&out, &format!("{kind}: cat {path}"));
        }
        // Listing the parent is refused too.
        let out = skiff(["run", "-v", &v, fs, "ls", "/data/.."]).run();
        denied(&out, &format!("{kind}: ls /data/.."));
        // The mount itself works.
        let out = skiff(["run", "-v", &v, fs, "cat", "/data/file.txt"]).run();
        assert_eq!((out.code, out.stdout.as_str()), (0, "inside"), "{kind}");
    }
}

#[test]
fn symlinks_created_by_the_guest_do_not_escape() {
    let tmp = fixture();
    let v = mount(tmp.path(), "");
    let secret = tmp.path().join("outside/secret.txt");
    for (kind, fs) in both("fs-tool") {
        // An absolute target is refused outright.
        let out = skiff([
            "run",
            "-v",
            &v,
            fs,
            "symlink",
            secret.to_str().unwrap(),
            "/data/abs-link",
        ])
        .run();
        denied(&out, &format!("{kind}: symlink to an absolute path"));
        // A relative target that climbs out may be created (as in any
        // container), but it is never followed.
        let out = skiff([
            "run",
            "-v",
            &v,
            fs,
            "symlink",
            "../outside/secret.txt",
            "/data/made",
        ])
        .run();
        assert_eq!(out.code, 0, "{kind}: {}", out.stderr);
        let link = tmp.path().join("data/made");
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            std::path::Path::new("../outside/secret.txt")
        );
        let out = skiff(["run", "-v", &v, fs, "cat", "/data/made"]).run();
        denied(&out, &format!("{kind}: cat through a guest-made symlink"));
        let out = skiff(["run", "-v", &v, fs, "write", "/data/made", "overwrite"]).run();
        denied(&out, &format!("{kind}: write through a guest-made symlink"));
        let _ = std::fs::remove_file(tmp.path().join("data/made"));
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "SECRET");
}

#[test]
fn writes_cannot_leave_a_preopen() {
    let tmp = fixture();
    let v = mount(tmp.path(), "");
    for (kind, fs) in both("fs-tool") {
        for args in [
            vec!["write", "/data/../outside/new.txt", "x"],
            vec!["rename", "/data/file.txt", "/data/../outside/moved.txt"],
            vec!["mkdir", "/data/../outside/dir"],
            vec!["write", "/tmp/skiff-escape.txt", "x"],
        ] {
            let mut cmd = vec!["run", "-v", &v, fs];
            cmd.extend(&args);
            let out = skiff(cmd).run();
            denied(&out, &format!("{kind}: {args:?}"));
        }
    }
    let outside: Vec<_> = std::fs::read_dir(tmp.path().join("outside"))
        .unwrap()
        .collect();
    assert_eq!(outside.len(), 1, "only the secret is outside");
    assert!(tmp.path().join("data/file.txt").exists());
}

#[test]
fn read_only_volume_refuses_every_write_like_operation() {
    let tmp = fixture();
    let v = mount(tmp.path(), ":ro");
    for (kind, fs) in both("fs-tool") {
        for args in [
            vec!["write", "/data/new.txt", "x"],
            vec!["write", "/data/file.txt", "overwritten"],
            vec!["append", "/data/file.txt", "more"],
            vec!["truncate", "/data/file.txt", "0"],
            vec!["rm", "/data/file.txt"],
            vec!["rename", "/data/file.txt", "/data/renamed.txt"],
            vec!["mkdir", "/data/newdir"],
            vec!["rmdir", "/data/sub"],
            vec!["symlink", "file.txt", "/data/link"],
        ] {
            let mut cmd = vec!["run", "-v", &v, fs];
            cmd.extend(&args);
            let out = skiff(cmd).run();
            assert_eq!(out.code, 1, "{kind}: {args:?} succeeded on a :ro volume");
            assert!(
                out.stderr.contains("not permitted"),
                "{kind}: {args:?}: {}",
                out.stderr
            );
        }
        let out = skiff(["run", "-v", &v, fs, "cat", "/data/file.txt"]).run();
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (0, "inside"),
            "{kind}: reads still work"
        );
    }
    // Nothing changed on the host.
    let data = tmp.path().join("data");
    assert_eq!(
        std::fs::read_to_string(data.join("file.txt")).unwrap(),
        "inside"
    );
    let mut names: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["escape", "escape-abs", "file.txt", "sub"]);
}

#[test]
fn without_mounts_there_is_no_filesystem() {
    for (kind, fs) in both("fs-tool") {
        for path in ["/", ".", "/etc/passwd"] {
            let out = skiff(["run", fs, "ls", path]).run();
            assert_eq!(out.code, 1, "{kind}: ls {path}: {}", out.stdout);
        }
    }
}

/// Trailing slashes mean what POSIX says (the wasi-testsuite's
/// `remove_directory_trailing_slashes` and `unlink_file_trailing_slashes`):
/// `rmdir("dir/")` removes the directory — wasmtime-wasi alone answers
/// EINVAL — while a file named with a slash is never removed.
#[test]
fn trailing_slashes_in_removals_behave_as_posix_says() {
    for (kind, fs) in both("fs-tool") {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir_all(d.join("dir")).unwrap();
        std::fs::create_dir_all(d.join("dir2")).unwrap();
        std::fs::write(d.join("file"), "x").unwrap();
        let v = format!("{}:/d", d.display());
        let run = |op: &str, path: &str| skiff(["run", "-v", &v, fs, op, path]).run();

        let out = run("rmdir", "/d/dir/");
        assert_eq!(out.code, 0, "{kind}: rmdir dir/: {}", out.stderr);
        assert!(!d.join("dir").exists(), "{kind}: dir/ is gone");
        let out = run("rmdir", "/d/dir2//");
        assert_eq!(out.code, 0, "{kind}: rmdir dir2//: {}", out.stderr);
        assert!(!d.join("dir2").exists(), "{kind}: dir2// is gone");

        let out = run("rmdir", "/d/file/");
        assert!(
            out.stderr.contains("Not a directory"),
            "{kind}: {}",
            out.stderr
        );
        let out = run("rm", "/d/file/");
        assert!(
            out.stderr.contains("Not a directory"),
            "{kind}: {}",
            out.stderr
        );
        assert!(d.join("file").exists(), "{kind}: file/ names no file");
        std::fs::create_dir_all(d.join("dir")).unwrap();
        let out = run("rm", "/d/dir/");
        assert!(
            out.stderr.contains("Is a directory"),
            "{kind}: {}",
            out.stderr
        );
        assert!(d.join("dir").exists(), "{kind}");
        let out = run("rmdir", "/d/missing/");
        assert!(
            out.stderr.contains("No such file or directory"),
            "{kind}: {}",
            out.stderr
        );
    }
}
