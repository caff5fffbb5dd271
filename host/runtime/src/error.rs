//! Errors at the runtime's boundary.

/// What can go wrong loading, describing or refusing to run a component.
///
/// A run that starts and then fails (a trap, a timeout, a denied call) is not an
/// `Error`: it is an [`crate::Invocation`] with its own status, because it must still be
/// traced and recorded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The policy file is unreadable, malformed or inconsistent.
    #[error("policy {path}: {message}")]
    Policy {
        /// Which file.
        path: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The bytes are not a WebAssembly component.
    #[error(
        "not a WebAssembly component: {0} (build runbooks for wasm32-wasip2, e.g. `runwarden runbook build DIR`)"
    )]
    NotAComponent(String),
    /// The component does not implement the `runwarden:runbook/runbook` world.
    #[error("component does not implement the runwarden:runbook@0.1.0 `runbook` world: {0}")]
    WrongWorld(String),
    /// The component's manifest is unusable.
    #[error("invalid manifest: {0}")]
    Manifest(String),
    /// The component does not implement the `runwarden:runbook/rule` world (or imports
    /// more than WASI).
    #[error(
        "not an L1 rule component (world runwarden:runbook@0.1.0 `rule`, importing nothing but WASI): {0}"
    )]
    NotARule(String),
    /// A rule component trapped, ran out of fuel or time while evaluating.
    #[error("rule component failed: {0}")]
    RuleTrapped(String),
    /// The runtime could not be set up (engine, cache directory, key).
    #[error("runtime setup: {0}")]
    Setup(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
