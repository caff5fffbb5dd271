//! The runwarden control plane.
//!
//! An [`Incident`] comes in; L1 [rule sets](rules) decide which runbook should fix it;
//! guardrails decide whether it may run now; the sandbox runs it; the evidence log
//! records what was done — and what was not, and why.

pub mod evidence;
mod incident;
pub mod rules;

pub use incident::{Incident, IncidentError, Severity, parse_rfc3339_ms};
