//! runwarden's vocabulary: the types the HTTP API, the CLI, the control plane and the
//! agents all read and write.
//!
//! - [`Incident`]: what monitors report, validated.
//! - The words ([`Tier`], [`IncidentStatus`], [`EscalationState`], [`Guardrail`],
//!   [`VerdictKind`], [`RunStatus`], [`Scope`], [`Severity`], [`Risk`]): enums with one
//!   wire spelling each, pinned by tests, because stored records and sent messages use
//!   them.
//! - The views ([`IncidentRecord`], [`Escalation`], [`RunbookInfo`], …): what the API
//!   answers and the CLI prints.
//! - [`bus`]: the messages between the control plane and agents.
//!
//! This crate has no async runtime, database, sandbox or transport in it (serde only), so
//! that anything can speak runwarden.

pub mod bus;
mod incident;
mod model;
mod vocab;

pub use incident::{Incident, IncidentError, check_name, parse_rfc3339_ms};
pub use model::{
    ActionRecord, DecisionRecord, DeployRequest, DeploymentView, Escalation, EscalationRef,
    HostComponentView, HostDeploymentView, IncidentRecord, NotificationView, PlannerRecord,
    ReleaseView, RuleListing, RunRecord, RunbookInfo,
};
pub use vocab::{
    EscalationState, Guardrail, HandedUpFor, IncidentStatus, Risk, RunStatus, Scope, Severity,
    Tier, UnknownWord, Verdict, VerdictKind,
};

/// Whether `name` is a deployable component's name (a runbook's as its manifest has it,
/// or a rule set's as its release names it): 1 to 64 of `a-z`, `0-9` and `-`.
pub fn is_component_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
