//! Paths of the guest components for host tests and benches: the test guests
//! (`tests/guests/`, built by this crate's build script for wasm32-wasip2) and the
//! standard runbooks and rule components (`runbooks/`, built by `runwarden-guests`).

include!(concat!(env!("OUT_DIR"), "/components.rs"));

/// The path of the component built from crate `name` (e.g. `restart-service`).
///
/// # Panics
/// When no such component was built: the name is listed in the panic message.
pub fn component(name: &str) -> &'static std::path::Path {
    if let Some((_, p)) = COMPONENTS.iter().find(|(n, _)| *n == name) {
        return std::path::Path::new(p);
    }
    match runwarden_guests::path(name) {
        Some(p) => p,
        None => panic!(
            "no guest component named {name:?}; built: {:?} and {:?}",
            COMPONENTS.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            runwarden_guests::COMPONENTS
                .iter()
                .map(|(n, _, _)| *n)
                .collect::<Vec<_>>()
        ),
    }
}

/// The bytes of the component built from crate `name`.
pub fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(component(name)).expect("guest component is readable")
}
