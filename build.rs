//! Link settings of skiff's own binaries.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let linux_gnu = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if linux_gnu {
        // RELR: the binary's ~75,000 relative relocations packed in a
        // bitmap the dynamic loader applies in a tight loop, where one
        // `Elf64_Rela` each was 16% of a `skiff run hello` process.
        // Needs GNU ld ≥ 2.38 (older ones ignore it) and, to run, glibc
        // ≥ 2.36 (Debian 12, Ubuntu 22.10).
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
