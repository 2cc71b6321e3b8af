//! Paths to the guest programs of `wasm-apps/`, built for this build by
//! `build.rs`. `FOO_P1` is program `foo` as a wasip1 core module, `FOO_P2` as
//! a wasip2 component.
//!
//! This crate exists for tests and benchmarks, so its helpers panic on a
//! name that was not built: that is a mistake in the test.
#![allow(clippy::panic)]

include!(concat!(env!("OUT_DIR"), "/apps.rs"));

/// The path of a built guest by constant name (`"HELLO_P1"`), if it exists.
pub fn path(name: &str) -> Option<&'static str> {
    ALL.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
}

/// The path of a built guest by constant name; panics if there is none.
pub fn app(name: &str) -> &'static str {
    path(name).unwrap_or_else(|| panic!("no guest program {name} was built"))
}

/// Both builds of a guest program (`"fs-tool"`), labelled for messages:
/// `[("wasip1 module", path), ("wasip2 component", path)]`.
pub fn both(program: &str) -> [(&'static str, &'static str); 2] {
    let upper = program.to_uppercase().replace('-', "_");
    [
        ("wasip1 module", app(&format!("{upper}_P1"))),
        ("wasip2 component", app(&format!("{upper}_P2"))),
    ]
}
