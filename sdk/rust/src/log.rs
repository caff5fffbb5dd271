//! Structured messages into the trace.
use crate::bindings::runwarden::runbook::log as raw;
pub use raw::Level;

/// Log a message with key/value fields.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    raw::log(level, message, &fields)
}
/// Log at info level.
pub fn info(message: &str) {
    log(Level::Info, message, &[])
}
/// Log at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, message, &[])
}
/// Log at error level.
pub fn error(message: &str) {
    log(Level::Error, message, &[])
}
/// Log at debug level.
pub fn debug(message: &str) {
    log(Level::Debug, message, &[])
}
