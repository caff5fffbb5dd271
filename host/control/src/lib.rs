//! The runwarden control plane.
//!
//! An [`Incident`] comes in; L1 [rule sets](rules) decide which runbook should fix it;
//! guardrails decide whether it may run now; the sandbox runs it; the evidence log
//! records what was done — and what was not, and why.

pub mod escalation;
pub mod evidence;
pub mod guardrails;
mod incident;
pub mod inventory;
pub mod notify;
mod pipeline;
pub mod planner;
pub mod rules;
pub mod store;

pub use escalation::{Decision, ESCALATION_STATES, Escalation, SlaConfig};
pub use guardrails::{GuardrailConfig, HighRisk, Verdict};
pub use incident::{Incident, IncidentError, Severity, parse_rfc3339_ms};
pub use inventory::Inventory;
pub use notify::{Format, NotificationView, WebhookConfig};
pub use pipeline::agent::{AgentRequest, AgentTool, MAX_REASON};
pub use pipeline::flywheel::{Candidate, FlywheelRun, Promotion, Replay, ReplayMatch};
pub use pipeline::{
    ActionRecord, Caller, ControlConfig, ControlError, Controller, DecisionRecord, HostConfig,
    INCIDENT_STATUSES, IncidentRecord, RuleListing, RunRecord, RunbookInfo, Scope, authenticate,
    create_token,
};
