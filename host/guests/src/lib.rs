//! The components that ship inside the `runwarden` binary: the standard runbooks and the
//! L1 rule engine, built from `runbooks/` for wasm32-wasip2 by this crate's build script.

include!(concat!(env!("OUT_DIR"), "/components.rs"));

/// Crate name of the rule engine component.
pub const RULE_ENGINE: &str = "rule-engine";

/// Components that are not runbooks (rule components).
const NOT_RUNBOOKS: &[&str] = &[RULE_ENGINE, "example-rust-rule"];

/// The bytes of the component built from crate `name`, if it is one.
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    COMPONENTS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, _, b)| *b)
}

/// Where the component built from crate `name` is on this machine (for tests).
pub fn path(name: &str) -> Option<&'static std::path::Path> {
    COMPONENTS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, p, _)| std::path::Path::new(*p))
}

/// The bare rule engine component (no rules embedded).
pub fn rule_engine() -> &'static [u8] {
    bytes(RULE_ENGINE).expect("the rule engine is built with the runbooks")
}

/// The standard runbooks: (crate name, component bytes).
pub fn standard_runbooks() -> impl Iterator<Item = (&'static str, &'static [u8])> {
    COMPONENTS
        .iter()
        .filter(|(n, _, _)| !NOT_RUNBOOKS.contains(n))
        .map(|(n, _, b)| (*n, *b))
}
