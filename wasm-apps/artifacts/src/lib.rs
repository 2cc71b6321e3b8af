//! Paths to the guest programs of `wasm-apps/`, built for this build by
//! `build.rs`. `FOO_P1` is program `foo` as a wasip1 core module, `FOO_P2` as
//! a wasip2 component.

include!(concat!(env!("OUT_DIR"), "/apps.rs"));

/// The path of a built guest by constant name (`"HELLO_P1"`), if it exists.
pub fn path(name: &str) -> Option<&'static str> {
    ALL.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
}
