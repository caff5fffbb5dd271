//! What the API, the CLI and the dashboard show: an incident and everything decided and
//! done about it, escalations, runbooks and rules as listed.

use crate::{
    EscalationState, HandedUpFor, Incident, IncidentStatus, Risk, RunStatus, Severity, Tier,
    Verdict,
};
use serde::{Deserialize, Serialize};

/// One run the pipeline started.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    /// Runbook name.
    pub runbook: String,
    /// How it ended.
    pub status: RunStatus,
    /// Its summary.
    pub summary: String,
    /// Invocation id.
    pub invocation_id: String,
    /// Whether it was a dry run.
    pub dry_run: bool,
    /// Its evidence record's log index.
    pub evidence_index: u64,
}

/// What was decided: by an L1 rule, or by the L2 planner.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DecisionRecord {
    /// `L1` (a rule) or `L2` (the planner).
    pub tier: Tier,
    /// The rule that matched (L1).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rule_id: String,
    /// SHA-256 of the rule component it is in (L1).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rule_sha256: String,
    /// What the planner saw and said (L2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planner: Option<PlannerRecord>,
    /// Runbooks to run, in order, with params.
    pub actions: Vec<ActionRecord>,
    /// Whether the rule asks for dry runs only.
    pub dry_run: bool,
}

/// An L2 decision as recorded: who planned, digests of what it was sent and answered,
/// its confidence and rationale, and its cost.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PlannerRecord {
    /// `offline`, `openai`, `anthropic`.
    pub provider: String,
    /// Model.
    pub model: String,
    /// SHA-256 of the prompt as sent.
    pub prompt_sha256: String,
    /// SHA-256 of the response as received.
    pub response_sha256: String,
    /// 0–1.
    pub confidence: f64,
    /// Why (the planner's words, or why there was no proposal).
    pub rationale: String,
    /// Estimated prompt tokens.
    pub prompt_tokens: usize,
    /// Tokens the provider reported (input, output).
    pub usage: (u64, u64),
    /// Model latency (ms).
    pub latency_ms: u64,
    /// Attempts made.
    pub attempts: u32,
    /// Runbooks the catalog offered.
    pub catalog: Vec<String>,
}

/// One runbook of a decision.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ActionRecord {
    /// Runbook name.
    pub runbook: String,
    /// Params.
    pub params: serde_json::Value,
}

/// An incident and everything decided and done about it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IncidentRecord {
    /// Its id.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// The incident as submitted (tenant filled in).
    pub incident: Incident,
    /// Fingerprint (tenant, host, type, service).
    pub fingerprint: String,
    /// When it was received (RFC 3339).
    pub received_at: String,
    /// Who owns it now: `L1` (a rule handled it), `L2` (the planner did), `L3` (a human must).
    pub tier: Tier,
    /// Where it stands.
    pub status: IncidentStatus,
    /// Why it ended in this status, in words.
    pub reason: String,
    /// What the L1 rule decided, if one matched.
    pub decision: Option<DecisionRecord>,
    /// Each guardrail's verdict.
    pub guardrails: Vec<Verdict>,
    /// Runbook runs, in order.
    pub runs: Vec<RunRecord>,
    /// Log indexes of every evidence record about this incident.
    pub evidence: Vec<u64>,
    /// The escalation, when it ended at L3 (`GET /v1/escalations/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<String>,
    /// The token (`tok_…`) that submitted it over the API or MCP. That token may not
    /// approve or resolve its escalation: another identity must.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// On an agent: handed to the fleet's control plane (status `handed-up`), and what it
    /// needs there. At the control plane: what the agent handed it up for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed_up: Option<HandedUpFor>,
    /// The escalation its evidence named as it was opened, until its row is written
    /// (the control plane's bookkeeping: never on the wire, never stored).
    #[serde(skip)]
    pub opening: Option<EscalationRef>,
}

/// An escalation as a signed record names it: the record that opened it (in its
/// outcome's details) and the person's decision on it (on the approval guardrail's
/// verdict), so that a bundle's report can tell whether it was decided within its SLA
/// from signed data alone.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EscalationRef {
    /// Its id (`esc_…`).
    pub id: String,
    /// When it was opened, RFC 3339 UTC.
    pub opened_at: String,
    /// When it must be decided by (its SLA, by the incident's severity), RFC 3339 UTC.
    pub sla_deadline: String,
    /// When a person decided it, RFC 3339 UTC (on the decision only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
}

/// A deployed runbook, as listed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunbookInfo {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// One line.
    pub summary: String,
    /// `low`, `medium`, `high`.
    pub risk: Risk,
    /// SHA-256 of the component.
    pub sha256: String,
    /// Params JSON Schema.
    pub params_schema: serde_json::Value,
}

/// A deployed rule, as listed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RuleListing {
    /// Rule id.
    pub id: String,
    /// One line.
    pub summary: String,
    /// Runbooks it may choose.
    pub runbooks: Vec<String>,
    /// SHA-256 of its component.
    pub rule_sha256: String,
}

/// An escalation as listed and shown.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Escalation {
    /// Its id.
    pub id: String,
    /// The incident.
    pub incident_id: String,
    /// Tenant.
    pub tenant: String,
    /// Host.
    pub host: String,
    /// The incident's severity.
    pub severity: Severity,
    /// Why a human must decide.
    pub reason: String,
    /// Where it stands.
    pub state: EscalationState,
    /// What a human may approve: `{"runbook", "params"}`, when something was proposed.
    pub proposal: Option<serde_json::Value>,
    /// When it was raised (RFC 3339).
    pub created_at: String,
    /// When it must be decided (RFC 3339).
    pub sla_deadline: String,
    /// Still undecided past its deadline.
    pub breached: bool,
    /// Who decided.
    pub decided_by: String,
    /// When (RFC 3339).
    pub decided_at: Option<String>,
    /// What they said.
    pub note: String,
    /// How webhooks were told about it, oldest first (shown with one escalation, not in
    /// lists).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<NotificationView>,
}

/// A webhook delivery as shown with its escalation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NotificationView {
    /// The webhook's name.
    pub webhook: String,
    /// `escalation.opened`, `escalation.decided`, `escalation.breached`.
    pub event: String,
    /// `delivered`, `failed` (after its attempts), `dropped` (never sent: the queue was
    /// full, or runwarden stopped first).
    pub status: String,
    /// Requests made.
    pub attempts: u32,
    /// Why it was not delivered (`HTTP 500`, `no answer within 5 s`, …).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    /// When it ended (RFC 3339).
    pub at: String,
}

/// A component a tenant published into the control plane's registry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReleaseView {
    /// SHA-256 of its bytes (hex): how it is named everywhere.
    pub sha256: String,
    /// `runbook` or `rules`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its effective risk level.
    pub risk: String,
    /// The publisher's key that signed it, as text.
    pub publisher: String,
    /// When it was published (RFC 3339).
    pub published_at: String,
    /// Who published it.
    pub published_by: String,
    /// Whether this call published it (false: it was there already).
    pub new: bool,
}

/// `POST /v1/deployments`: deploy a published release to a tenant's hosts, or roll back.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The component's name.
    pub name: String,
    /// The version to deploy (a release the tenant published); ignored by a rollback.
    #[serde(default)]
    pub version: String,
    /// Which hosts: `*` (all the tenant's), host ids and `key=value` labels, comma
    /// separated; a host is chosen when it is named or has every label given.
    pub hosts: String,
    /// Roll back to what each chosen host ran before instead (`version` unused).
    #[serde(default)]
    pub rollback: bool,
    /// Deploy first to this share of the chosen hosts (1–99 %), watch, then to the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_percent: Option<u8>,
    /// How long the canaries are watched before the rest follow (seconds; default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_secs: Option<u64>,
    /// The canaries' share of failed runs of the new version above which the rollout
    /// halts and the canaries are rolled back (0–1; default 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failure_rate: Option<f64>,
}

/// One host's part in a deployment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HostDeploymentView {
    /// The host.
    pub host: String,
    /// `pending` (sent, or waiting for the host to come back), `held` (after the
    /// canaries), `deployed`, `refused` (the host said why), `halted`.
    pub state: String,
    /// Why, or what the host said.
    pub detail: String,
    /// The version and sha256 this deployment wants there (empty: the host's own).
    pub version: String,
    /// Its sha256.
    pub sha256: String,
    /// Whether it is a canary.
    pub canary: bool,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

/// A deployment of one component to a tenant's hosts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DeploymentView {
    /// Its id.
    pub id: String,
    /// The component's name.
    pub name: String,
    /// The version deployed (a rollback: `rollback`).
    pub version: String,
    /// `deploy` or `rollback`.
    pub action: String,
    /// The hosts as chosen.
    pub selector: String,
    /// The canaries' share (0: none).
    pub canary_percent: u8,
    /// `canary` (watching the canaries), `rolling`, `done` (every host answered),
    /// `halted` (the canaries failed too often: rolled back).
    pub state: String,
    /// Why it is in that state, in words.
    pub detail: String,
    /// When it was asked for (RFC 3339), and by whom.
    pub created_at: String,
    /// Who asked.
    pub created_by: String,
    /// Each chosen host.
    pub hosts: Vec<HostDeploymentView>,
}

/// What a host runs of one deployed component (`hosts list`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HostComponentView {
    /// The component's name.
    pub name: String,
    /// The version it runs (empty: its own, not deployed).
    pub version: String,
    /// Its sha256.
    pub sha256: String,
    /// `deployed`, `pending` (a newer one is on its way), `refused`, `held`.
    pub state: String,
    /// The version on its way, when pending or held.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub wanted: String,
}
