//! The host half of runwarden.
//!
//! The control plane decides; the agent executes. An [`Executor`] holds what only the
//! host has — its signing key, its policy, its runbooks — and runs the control plane's
//! signed jobs for this host only, each planned invocation at most once, signing every
//! record (and every refusal) into this host's own evidence log. `runwarden up` drives
//! one in the same process as the control plane; `runwarden agent` will drive one over
//! NATS JetStream with the same messages ([`runwarden_proto::bus`]).

pub mod components;
mod deploy;
mod executor;
mod forward;
mod journal;
mod record;

pub use executor::{
    AgentConfig, AgentError, Executor, MAX_RUNS_PER_JOB, now_ms, run_status, serve, spawn_local,
};
pub use forward::MAX_SEGMENT_BYTES;
pub use record::{Context, statement};
