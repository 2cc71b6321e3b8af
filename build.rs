//! Link settings of skiff's own binaries.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SKIFF_PIE");
    println!("cargo:rerun-if-env-changed=SKIFF_LINK_ORDER");
    println!("cargo:rerun-if-changed=link/startup.order");
    let linux_gnu = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if !linux_gnu {
        return;
    }
    if std::env::var_os("SKIFF_PIE").is_some_and(|v| v == "1") {
        // RELR: a position-independent binary's ~75,000 relative
        // relocations packed in a bitmap the dynamic loader applies in a
        // tight loop, where one `Elf64_Rela` each was 16% of a `skiff run
        // hello` process. Needs GNU ld ≥ 2.38 (older ones ignore it) and,
        // to run, glibc ≥ 2.36 (Debian 12, Ubuntu 22.10).
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    } else {
        // A fixed-address executable: its pointers into itself (1.1 MB of
        // vtables, panic locations and tables in `.data.rel.ro`) are
        // resolved by the linker, so the loader neither writes nor copies
        // those pages at every start. A `skiff run hello` process went
        // from 5.0 to 3.4 ms. The cost: the executable's own image is not
        // at a random address (libraries, heap, stacks, mappings, compiled
        // guest code and guest memories still are). `SKIFF_PIE=1 cargo
        // build` links it position-independent instead, for distributions
        // that require it (docs/PERFORMANCE.md).
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    if links_with_rust_lld() && std::env::var_os("SKIFF_LINK_ORDER").is_none_or(|v| v != "0") {
        // The functions a `skiff run` start executes, placed together
        // (link/startup.order, made by link/refresh-startup-order): the
        // start then faults in its code from a few hundred KiB rather than
        // from pages all over a 37 MB .text — 357 page faults became 232
        // and a `skiff run hello` process 30% faster. Names the list has
        // and this build lacks are skipped.
        // Linked from a copy in OUT_DIR, not from the source tree: a build
        // directory shared by clones at other paths (CI's cache) reuses
        // this script's output, and a path into one clone would outlive it.
        let env = |k: &str| std::path::PathBuf::from(std::env::var_os(k).unwrap_or_default());
        let order = env("OUT_DIR").join("startup.order");
        if std::fs::copy(env("CARGO_MANIFEST_DIR").join("link/startup.order"), &order).is_err() {
            return;
        }
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether the binary is linked by rustc's own LLD, which takes a symbol
/// ordering file (GNU ld does not): the default for x86_64-unknown-linux-gnu
/// since Rust 1.90 when the toolchain ships it (rustup's do; some
/// distributions' builds of rustc do not, and link with the system's
/// linker), unless a linker is configured.
fn links_with_rust_lld() -> bool {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let target = env("TARGET");
    let configured = std::env::var_os("RUSTC_LINKER").is_some()
        || env("CARGO_ENCODED_RUSTFLAGS").contains("link");
    if target != "x86_64-unknown-linux-gnu" || configured {
        return false;
    }
    let sysroot = std::process::Command::new(std::env::var_os("RUSTC").unwrap_or("rustc".into()))
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    sysroot.is_some_and(|root| {
        std::path::Path::new(&root)
            .join("lib/rustlib")
            .join(&target)
            .join("bin/gcc-ld/ld.lld")
            .exists()
    })
}
