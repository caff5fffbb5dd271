//! The runwarden sandbox.
//!
//! [`Runtime`] loads runbook components (compiling once, caching authenticated native
//! artifacts), reads their [`Manifest`], and runs them under a [`Policy`]: the
//! [`Grant`] is the manifest's requests checked against the policy before instantiation,
//! every host call is checked again at call time and traced, and wall-clock, fuel,
//! memory and output limits end a runaway guest with its own [`Status`].

mod backends;
mod cache;
mod confine;
mod error;
mod grant;
mod host;
mod manifest;
mod output;
mod policy;
mod redact;
mod rules;
mod runtime;
mod trace;
mod wasi;

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "runbook",
        // Every host call can trap: that is how a full trace stops a guest.
        imports: { default: trappable },
    });
}

pub use error::{Error, Result};
pub use grant::{Capability, Grant, Refusal};
pub use manifest::{Manifest, Risk, effective_risk, implied_risk};
pub use policy::{
    CommandTemplates, ExecGrant, Grants, Limits, Policy, SecretSource, ServiceBackend,
};
pub use rules::{Action, Decision, Incident, RuleInfo, RuleSet, Severity};
pub use runtime::{
    Invocation, Loaded, MAX_ABANDONED, MAX_RUNS, Outcome, RunOptions, Runtime, RuntimeConfig,
    Status, engine_config,
};
pub use trace::TraceEntry;
