//! The runwarden control plane.
//!
//! An [`Incident`] comes in; L1 [rule sets](rules) decide which runbook should fix it;
//! guardrails decide whether it may run now; the host's agent runs it (a signed job over
//! a [`Dispatch`](runwarden_bus::Dispatch)); the evidence log records what was done — and
//! what was not, and why.

pub mod escalation;
pub mod evidence;
pub mod guardrails;
mod incident;
pub mod inventory;
pub mod notify;
mod pipeline;
pub mod planner;
mod registry;
pub mod rules;
pub mod store;

pub use escalation::{Decision, Escalation, SlaConfig};
pub use guardrails::{GuardrailConfig, HighRisk};
pub use incident::rule_input;
pub use inventory::Inventory;
pub use notify::{Format, WebhookConfig};
pub use pipeline::agent::{AgentRequest, AgentTool, MAX_REASON};
pub use pipeline::components::MAX_COMPONENT_BYTES;
pub use pipeline::enroll::{
    CredentialMinter, Enrolled, Enrollment, EnrollmentToken, Gauges, HOST_SYNC_SECS, HostView,
    LastRecord, LinkGauges, MintedCredentials,
};
pub use pipeline::flywheel::{Candidate, FlywheelRun, Promotion, Replay, ReplayMatch};
pub use pipeline::{
    Caller, ControlConfig, ControlError, Controller, LEASE_MS, LEASE_RENEW_MS, LogSigner,
    authenticate, create_token,
};
pub use registry::HostConfig;
/// Trust policies and releases, from [`runwarden_evidence`].
pub use runwarden_evidence::{RiskLevel, TrustPolicy, TrustedPublisher};
/// The vocabulary and views, from [`runwarden_proto`].
pub use runwarden_proto::{
    ActionRecord, DecisionRecord, DeployRequest, DeploymentView, EscalationState, Guardrail,
    Incident, IncidentError, IncidentRecord, IncidentStatus, NotificationView, PlannerRecord,
    ReleaseView, Risk, RuleListing, RunRecord, RunStatus, RunbookInfo, Scope, Severity, Tier,
    Verdict, VerdictKind, parse_rfc3339_ms,
};
