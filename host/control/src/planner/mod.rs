//! L2: when no L1 rule matches, a planner chooses one runbook from the catalog the
//! incident's host can run — or says it is unsure, and the incident escalates to a human.
//!
//! - [`llm`]: the model clients (OpenAI-compatible chat completions with `tools`,
//!   Anthropic Messages with `tool_use`), with timeouts and bounded retries.
//!
//! Whatever a model answers is only a proposal: the pipeline validates it (the runbook
//! must be in the filtered catalog, its params must satisfy the runbook's schema and the
//! host's grants, the confidence must clear the threshold) and then applies the same
//! guardrails as to an L1 decision.

pub mod llm;

use serde::{Deserialize, Serialize};

/// One tool offered to the model: a name, what it is for, and a JSON Schema of its input.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ToolSpec {
    /// Tool name (`select_runbook`, `escalate`).
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// JSON Schema of the tool's input.
    pub input_schema: serde_json::Value,
}

/// What a planner is asked: instructions, the incident with its catalog, and the tools
/// the model must answer with.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PlanRequest {
    /// Instructions (the system prompt).
    pub system: String,
    /// The incident and the catalog, as the user turn.
    pub user: String,
    /// The tools; the model must call exactly one.
    pub tools: Vec<ToolSpec>,
}

/// A tool call the model made.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ToolCall {
    /// Which tool.
    pub name: String,
    /// Its input (a JSON object).
    pub input: serde_json::Value,
}

/// Tokens a call consumed, as the provider reported them.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
}

/// A model's answer before validation, with what is needed to record it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelAnswer {
    /// `openai` or `anthropic`.
    pub provider: String,
    /// The model that answered (as the provider named it, else as configured).
    pub model: String,
    /// The first tool call in the answer, if any.
    pub tool: Option<ToolCall>,
    /// Any text the model wrote besides.
    pub text: String,
    /// The exact request body sent (its SHA-256 goes into the evidence).
    pub request_body: Vec<u8>,
    /// The exact response body received (likewise).
    pub response_body: Vec<u8>,
    /// Tokens used, if reported.
    pub usage: Usage,
    /// Wall time of the successful attempt, in milliseconds.
    pub latency_ms: u64,
    /// Attempts made (1 when the first succeeded).
    pub attempts: u32,
}

pub mod catalog;
pub mod offline;
pub mod prompt;

use crate::incident::Incident;
use catalog::CatalogEntry;
use runwarden_runtime::Policy;
use sha2::{Digest, Sha256};

/// Where proposals come from.
pub enum Backend {
    /// Lexical retrieval, no model ([`offline`]).
    Offline,
    /// A model behind an HTTP API.
    Llm(Box<llm::LlmClient>),
}

/// Planner settings.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannerConfig {
    /// Below this confidence a proposal escalates instead of running.
    pub min_confidence: f64,
    /// How many of the tenant's recent runs the catalog and the offline planner consider.
    pub history: u32,
    /// Successful L2 resolutions of one signature (and no failure) before the flywheel
    /// proposes it as an L1 rule.
    pub promote_after: u32,
}

impl Default for PlannerConfig {
    fn default() -> PlannerConfig {
        PlannerConfig {
            min_confidence: 0.7,
            history: 500,
            promote_after: 3,
        }
    }
}

/// A validated plan: a runbook to run, or why not; and what to record about it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    /// `offline`, `openai`, `anthropic`.
    pub provider: String,
    /// The model (`lexical-v1` offline).
    pub model: String,
    /// SHA-256 (hex) of exactly what the planner was sent.
    pub prompt_sha256: String,
    /// SHA-256 (hex) of exactly what it answered.
    pub response_sha256: String,
    /// The proposal's confidence (0 when there was none).
    pub confidence: f64,
    /// The proposal's rationale, or why there is none.
    pub rationale: String,
    /// The runbook and params to run, when the proposal passed validation.
    pub action: Option<(String, serde_json::Value)>,
    /// Why the incident escalates instead, when it does.
    pub escalate: Option<String>,
    /// Estimated prompt tokens.
    pub prompt_tokens: usize,
    /// Tokens the provider reported.
    pub usage: Usage,
    /// Model latency in ms (0 offline).
    pub latency_ms: u64,
    /// Attempts made.
    pub attempts: u32,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Plan {
    fn escalate(mut self, reason: String) -> Plan {
        self.action = None;
        self.escalate = Some(reason);
        self
    }
}

/// Ask `backend` about `incident` with `catalog`, then validate the proposal: the runbook
/// must be in the catalog, its params must satisfy its schema and `policy`'s grants, and
/// its confidence must reach `config.min_confidence`. Never fails: a planner error is a
/// plan that escalates, with the error as its reason.
pub async fn plan(
    backend: &Backend,
    config: &PlannerConfig,
    host: &str,
    incident: &Incident,
    catalog: &[CatalogEntry],
    recent: &[std::sync::Arc<crate::store::RunRow>],
    policy: &Policy,
) -> Plan {
    let incident_json = serde_json::to_value(incident).unwrap_or(serde_json::Value::Null);
    let request = prompt::request(&incident_json, host, catalog);
    let mut plan = Plan {
        provider: String::new(),
        model: String::new(),
        prompt_sha256: String::new(),
        response_sha256: String::new(),
        confidence: 0.0,
        rationale: String::new(),
        action: None,
        escalate: None,
        prompt_tokens: prompt::estimate_tokens(&request),
        usage: Usage::default(),
        latency_ms: 0,
        attempts: 0,
    };
    let proposal = match backend {
        Backend::Offline => {
            plan.provider = "offline".into();
            plan.model = "lexical-v1".into();
            plan.attempts = 1;
            plan.prompt_sha256 = sha256_hex(&serde_json::to_vec(&request).unwrap_or_default());
            let p = offline::choose(incident, catalog, recent);
            let answer = match &p {
                offline::Proposal::Run {
                    runbook,
                    params,
                    confidence,
                    rationale,
                } => serde_json::json!({
                    "tool": "select_runbook",
                    "input": {"runbook": runbook, "params": params, "confidence": confidence, "rationale": rationale}
                }),
                offline::Proposal::Escalate { reason } => serde_json::json!({
                    "tool": "escalate", "input": {"reason": reason}
                }),
            };
            plan.response_sha256 = sha256_hex(answer.to_string().as_bytes());
            p
        }
        Backend::Llm(client) => {
            plan.provider = client.provider().as_str().into();
            plan.model = client.model().into();
            match client.complete(&request).await {
                Err(e) => {
                    plan.prompt_sha256 =
                        sha256_hex(&serde_json::to_vec(&request).unwrap_or_default());
                    return plan.escalate(format!("the planner failed: {e}"));
                }
                Ok(a) => {
                    plan.model = a.model.clone();
                    plan.prompt_sha256 = sha256_hex(&a.request_body);
                    plan.response_sha256 = sha256_hex(&a.response_body);
                    plan.usage = a.usage;
                    plan.latency_ms = a.latency_ms;
                    plan.attempts = a.attempts;
                    match read_tool_call(a.tool.as_ref(), &a.text) {
                        Ok(p) => p,
                        Err(reason) => return plan.escalate(reason),
                    }
                }
            }
        }
    };
    match proposal {
        offline::Proposal::Escalate { reason } => {
            plan.rationale = reason.clone();
            plan.escalate(format!("the planner escalated: {reason}"))
        }
        offline::Proposal::Run {
            runbook,
            params,
            confidence,
            rationale,
        } => {
            plan.confidence = confidence;
            plan.rationale = catalog::cut(&rationale, 500);
            let Some(entry) = catalog.iter().find(|e| e.name == runbook) else {
                return plan.escalate(format!(
                    "the planner chose {:?}, which is not in this host's catalog",
                    catalog::cut(&runbook, 80)
                ));
            };
            if let Err(why) = validate(entry, &params, confidence, config, policy) {
                return plan.escalate(why);
            }
            plan.action = Some((runbook, params));
            plan
        }
    }
}

/// Check a proposal for `entry` (already known to be in the catalog): params must be an
/// object that satisfies the runbook's schema and the host's grants, and the confidence
/// must lie in 0–1 and reach the threshold.
pub fn validate(
    entry: &CatalogEntry,
    params: &serde_json::Value,
    confidence: f64,
    config: &PlannerConfig,
    policy: &Policy,
) -> Result<(), String> {
    let name = &entry.name;
    if !params.is_object() {
        return Err(format!("the planner's params for {name} are not an object"));
    }
    entry
        .loaded
        .precheck(policy, params)
        .map_err(|why| format!("the planner's choice {name} does not fit: {why}"))?;
    if !(0.0..=1.0).contains(&confidence) || confidence < config.min_confidence {
        return Err(format!(
            "the planner chose {name} with confidence {confidence:.2}, below the threshold {:.2}",
            config.min_confidence
        ));
    }
    Ok(())
}

/// Read a model's tool call into a proposal; an answer that is not one is the reason to
/// escalate.
fn read_tool_call(tool: Option<&ToolCall>, text: &str) -> Result<offline::Proposal, String> {
    let Some(call) = tool else {
        return Err(format!(
            "the model answered without choosing a tool: {:?}",
            catalog::cut(text, 200)
        ));
    };
    let input = &call.input;
    match call.name.as_str() {
        "escalate" => Ok(offline::Proposal::Escalate {
            reason: input
                .get("reason")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("no reason given")
                .to_string(),
        }),
        "select_runbook" => {
            let runbook = input.get("runbook").and_then(serde_json::Value::as_str);
            let confidence = input.get("confidence").and_then(serde_json::Value::as_f64);
            match (runbook, confidence) {
                (Some(r), Some(c)) => Ok(offline::Proposal::Run {
                    runbook: r.to_string(),
                    params: input
                        .get("params")
                        .cloned()
                        .unwrap_or(serde_json::json!({})),
                    confidence: c,
                    rationale: input
                        .get("rationale")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                }),
                _ => Err(
                    "the model's select_runbook call lacks a runbook name or a numeric confidence"
                        .into(),
                ),
            }
        }
        other => Err(format!(
            "the model called {:?}, which is not one of the offered tools",
            catalog::cut(other, 80)
        )),
    }
}
