//! Paths of the guest components (standard runbooks and adversarial guests), built by
//! this crate's build script for wasm32-wasip2. Host tests and benches depend on this
//! crate instead of building guests themselves.

include!(concat!(env!("OUT_DIR"), "/components.rs"));

/// The path of the component built from crate `name` (e.g. `restart-service`).
///
/// # Panics
/// When no such component was built: the name is listed in the panic message.
pub fn component(name: &str) -> &'static std::path::Path {
    match COMPONENTS.iter().find(|(n, _)| *n == name) {
        Some((_, p)) => std::path::Path::new(p),
        None => panic!(
            "no guest component named {name:?}; built: {:?}",
            COMPONENTS.iter().map(|(n, _)| *n).collect::<Vec<_>>()
        ),
    }
}

/// The bytes of the component built from crate `name`.
pub fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(component(name)).expect("guest component is readable")
}
