//! The control plane's layout holds: its rooms import only downwards
//! (root → api → core → plane, all → error), no file grows past about 800
//! lines of code, and the crates keep the dependency rule (control and
//! agent share only skiff-channel). See docs/ARCHITECTURE.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each room, and the rooms it may import from.
const ALLOWED: &[(&str, &[&str])] = &[
    ("root", &["api", "core", "plane", "error"]),
    ("api", &["core", "plane", "error"]),
    ("core", &["plane", "error"]),
    ("plane", &["error"]),
    ("error", &[]),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's module path from the crate root (`api/ecs/mod.rs` → api, ecs).
fn module_path(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

/// The room a module path is in: its first part, or the root.
fn room(path: &[String]) -> String {
    match path.first().map(String::as_str) {
        None => "root".into(),
        Some(r @ ("api" | "core" | "plane" | "error")) => r.into(),
        Some(_) => "root".into(),
    }
}

/// A file's code, without its test module and comments.
fn code(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let text = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    text.lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first segment of every path this code names from the crate root,
/// and how many levels each `super::` chain climbs.
fn references(code: &str) -> (BTreeSet<String>, BTreeSet<usize>) {
    let mut roots = BTreeSet::new();
    let mut climbs = BTreeSet::new();
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !is_ident(bytes[i - 1]);
        if starts_word && code[i..].starts_with("crate::") {
            let rest = &code[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = &group[..group.find('}').unwrap_or(group.len())];
                for item in inner.split(',') {
                    let first: String = item
                        .trim()
                        .chars()
                        .take_while(|c| is_ident(*c as u8))
                        .collect();
                    if !first.is_empty() {
                        roots.insert(first);
                    }
                }
            } else {
                let first: String = rest.chars().take_while(|c| is_ident(*c as u8)).collect();
                roots.insert(first);
            }
            i += "crate::".len();
            continue;
        }
        if starts_word && code[i..].starts_with("super::") {
            let mut n = 0;
            let mut j = i;
            while code[j..].starts_with("super::") {
                n += 1;
                j += "super::".len();
            }
            climbs.insert(n);
            i = j;
            continue;
        }
        i += 1;
    }
    (roots, climbs)
}

#[test]
fn rooms_import_only_downwards() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let path = module_path(file);
        let from = room(&path);
        let (roots, climbs) = references(&code(file));
        let mut to: BTreeSet<String> = roots
            .into_iter()
            .map(|r| room(std::slice::from_ref(&r)))
            .collect();
        for n in climbs {
            // `super` from a mod.rs or lib.rs starts at its own module.
            let mut at = path.clone();
            for _ in 0..n {
                at.pop();
            }
            to.insert(room(&at));
        }
        for target in to {
            if target != from && !allowed[from.as_str()].contains(&target.as_str()) {
                wrong.push(format!(
                    "{} ({from}) imports from {target}",
                    file.strip_prefix(src()).unwrap().display()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the rooms' direction (root → api → core → plane → error):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_sees_upward_imports() {
    // The checker itself: a path from the crate root, a grouped one, and
    // a `super` chain that leaves the room are all seen.
    let (roots, climbs) = references(
        "use crate::api::ecs;\nuse crate::{core::Core, plane};\nuse super::super::x;\nlet a = crate::error::ApiError::client(\"x\");",
    );
    assert_eq!(
        roots.into_iter().collect::<Vec<_>>(),
        ["api", "core", "error", "plane"]
    );
    assert_eq!(climbs.into_iter().collect::<Vec<_>>(), [2]);
    let tasks = src().join("core").join("tasks.rs");
    assert_eq!(module_path(&tasks), ["core", "tasks"]);
    assert_eq!(room(&module_path(&src().join("lib.rs"))), "root");
}

#[test]
fn no_file_has_more_than_about_800_lines_of_code() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            let lines = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or_default()
                .lines()
                .count();
            (lines > 820).then(|| format!("{}: {lines}", f.display()))
        })
        .collect();
    long.sort();
    assert!(
        long.is_empty(),
        "split these (tests may stay beside the code):\n{}",
        long.join("\n")
    );
}

/// The skiff crates a crate's Cargo.toml depends on (not dev-dependencies).
fn skiff_dependencies(krate: &str) -> BTreeSet<String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let mut section = "";
    let mut deps = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[dependencies]"
            && let Some(name) = line.split(['.', ' ', '=']).next()
            && name.starts_with("skiff-")
        {
            deps.insert(name.to_string());
        }
    }
    deps
}

#[test]
fn control_and_agent_share_only_the_channel() {
    let control = skiff_dependencies("control");
    let agent = skiff_dependencies("agent");
    assert!(!control.contains("skiff-agent"), "{control:?}");
    assert!(!agent.contains("skiff-control"), "{agent:?}");
    assert!(control.contains("skiff-channel") && agent.contains("skiff-channel"));
    // The channel and the layers below depend on neither.
    for low in ["channel", "runtime", "registry", "http-server"] {
        let deps = skiff_dependencies(low);
        assert!(
            !deps.contains("skiff-control") && !deps.contains("skiff-agent"),
            "{low}: {deps:?}"
        );
    }
    assert!(!skiff_dependencies("runtime").contains("skiff-registry"));
    assert!(!skiff_dependencies("registry").contains("skiff-runtime"));
}
