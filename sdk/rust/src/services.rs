//! Service units granted by policy.
use crate::HostError;
use crate::bindings::runwarden::runbook::services as raw;
pub use crate::bindings::runwarden::runbook::services::UnitStatus;

/// Read a unit's state (allowed in dry runs).
pub fn status(unit: &str) -> Result<UnitStatus, HostError> {
    raw::status(unit)
}
/// Start a unit.
pub fn start(unit: &str) -> Result<(), HostError> {
    raw::start(unit)
}
/// Stop a unit.
pub fn stop(unit: &str) -> Result<(), HostError> {
    raw::stop(unit)
}
/// Restart a unit.
pub fn restart(unit: &str) -> Result<(), HostError> {
    raw::restart(unit)
}
/// Reload a unit.
pub fn reload(unit: &str) -> Result<(), HostError> {
    raw::reload(unit)
}
