//! Named secrets. Values never enter the trace.
use crate::HostError;

/// Read a granted secret.
pub fn get(name: &str) -> Result<String, HostError> {
    crate::bindings::runwarden::runbook::secrets::get(name)
}
