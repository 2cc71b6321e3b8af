//! Link settings of skiff's own binaries.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SKIFF_PIE");
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
}
