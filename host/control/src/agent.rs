//! Requests from agents (MCP clients): an LLM or a person's tool asks for one runbook
//! from this host's catalog. The request becomes an incident of type `agent.RUNBOOK`
//! (service `params-DIGEST`: the same request again is a repeat, a corrected one is
//! not) whose decision is tier L2 with provider `mcp`, then passes exactly the same
//! guardrails (repeat, known target, cooldown, breaker, risk and approval) and leaves
//! the same evidence as any incident: an MCP client gains no path around them.

use super::{
    ActionRecord, Caller, Chosen, ControlError, Controller, DecisionRecord, IncidentRecord,
    PlannerRecord, Result, Tier,
};
use crate::incident::{Incident, Severity};
use crate::planner::catalog;
use runwarden_evidence as ev;
use runwarden_runtime::{Capability, Risk};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Longest reason an agent may give, in bytes.
pub const MAX_REASON: usize = 2000;

/// A runbook as an agent sees it: the catalog entry and what it may do to the host.
#[derive(Clone, Debug, Serialize)]
pub struct AgentTool {
    /// Runbook name (the tool's name).
    pub name: String,
    /// Version.
    pub version: String,
    /// One line.
    pub summary: String,
    /// `low`, `medium`, `high`.
    pub risk: &'static str,
    /// JSON Schema of its params.
    pub params_schema: serde_json::Value,
    /// It only reads the host (probes, directories to read).
    pub read_only: bool,
    /// It may destroy or rewrite something (writes, deletes, programs, or high risk).
    pub destructive: bool,
    /// It talks to origins outside the host.
    pub open_world: bool,
    /// Whether the policy makes it wait for a human before it runs for real.
    pub needs_approval: bool,
    /// Its last run on this host failed.
    pub failing_here: bool,
}

/// What an agent asks for.
#[derive(Clone, Debug)]
pub struct AgentRequest {
    /// The runbook.
    pub runbook: String,
    /// Its params.
    pub params: serde_json::Value,
    /// Why, in the agent's words (recorded in the evidence).
    pub reason: String,
    /// A dry run only.
    pub dry_run: bool,
    /// How urgent (the SLA of an escalation it may end in).
    pub severity: Severity,
    /// The client, as it named itself (`name/version`).
    pub client: String,
    /// SHA-256 (hex) of the request as received.
    pub request_sha256: String,
}

impl Controller {
    /// The runbooks an agent of `tenant` may ask for on this host: the planners' catalog
    /// (platform and grants filtered), with what each may do. Not found for a tenant
    /// that does not own the host.
    pub async fn agent_tools(&self, tenant: &str) -> Result<Vec<AgentTool>> {
        let host = self.tenant_host(tenant)?;
        let recent = self
            .store
            .recent_runs(tenant, self.planner_config.history)
            .await?;
        let (entries, _) = catalog::build(
            &self.catalog_of(host.id()),
            &host.policy,
            &host.inventory.platform,
            host.id(),
            &recent,
        );
        Ok(entries
            .into_iter()
            .map(|e| {
                let m = e.loaded.manifest();
                let caps = &m.capabilities;
                let read_only = caps
                    .iter()
                    .all(|c| matches!(c, Capability::Probe | Capability::ReadDir(_)));
                let destructive = m.risk == Risk::High
                    || caps
                        .iter()
                        .any(|c| matches!(c, Capability::WriteDir(_) | Capability::Exec(_)));
                AgentTool {
                    version: m.version.clone(),
                    read_only,
                    destructive,
                    open_world: caps.iter().any(|c| matches!(c, Capability::Http(_))),
                    needs_approval: m.risk == Risk::High,
                    name: e.name,
                    summary: e.summary,
                    risk: e.risk,
                    params_schema: e.params_schema,
                    failing_here: e.failing_here,
                }
            })
            .collect())
    }

    /// Carry an agent's request to its end, as `caller`: decided (by the agent, tier
    /// L2, provider `mcp`), guarded, run or escalated, recorded. Returns once its
    /// evidence is durable, like [`Controller::submit`].
    pub async fn agent_request(
        &self,
        caller: &Caller,
        req: AgentRequest,
    ) -> Result<IncidentRecord> {
        // Another tenant's host is not found, and nothing is recorded in its log.
        self.check_owner(&caller.tenant)?;
        let reason = req.reason.trim();
        // The catalog, read once: the check below and the decision's record use it.
        let catalog_names: Vec<String> = self
            .agent_tools(&caller.tenant)
            .await?
            .into_iter()
            .map(|t| t.name)
            .collect();
        let refusal = if caller.scope < crate::Scope::Operate {
            Some(ControlError::Invalid(crate::IncidentError {
                field: "token",
                message: format!(
                    "token {} has scope {}: running a runbook needs an operate token",
                    caller.token_id,
                    caller.scope.as_str()
                ),
            }))
        } else if caller.scope > crate::Scope::Operate {
            // An admin token could approve its own requests: agents get their own.
            Some(ControlError::Invalid(crate::IncidentError {
                field: "token",
                message: format!(
                    "token {} has scope admin: give the agent an operate token of its own \
                     (runwarden token create --scope operate), so that it cannot approve \
                     its own requests",
                    caller.token_id
                ),
            }))
        } else if reason.is_empty() {
            Some(ControlError::Invalid(crate::IncidentError {
                field: "reason",
                message: "is empty: say why the runbook should run".into(),
            }))
        } else if reason.len() > MAX_REASON {
            Some(ControlError::Invalid(crate::IncidentError {
                field: "reason",
                message: format!("is {} bytes long; at most {MAX_REASON}", reason.len()),
            }))
        } else if !req.params.is_object() {
            Some(ControlError::Invalid(crate::IncidentError {
                field: "params",
                message: "must be a JSON object of the runbook's params".into(),
            }))
        } else if !catalog_names.contains(&req.runbook) {
            Some(ControlError::NotFound(format!(
                "runbook {:?} is not in this host's catalog: list the tools to see what it can run",
                catalog::cut(&req.runbook, 64)
            )))
        } else {
            None
        };
        if let Some(e) = refusal {
            self.record_refusal(caller, &req, &e.to_string()).await?;
            return Err(e);
        }
        let client = catalog::cut(&req.client, 200);
        // The same request twice within the repeat window goes to a human (it did not
        // fix things); a corrected one, or the real run after a dry run, is a new one.
        let params_sha = hex::encode(Sha256::digest(
            format!("{}{}", req.params, if req.dry_run { " dry" } else { "" }).as_bytes(),
        ));
        let mut labels = BTreeMap::new();
        labels.insert("source".to_string(), "mcp".to_string());
        labels.insert("client".to_string(), client.clone());
        labels.insert("token".to_string(), caller.token_id.clone());
        let incident = Incident {
            tenant: caller.tenant.clone(),
            host: self.tenant_host(&caller.tenant)?.id().to_string(),
            kind: format!("agent.{}", req.runbook),
            severity: req.severity,
            service: Some(format!("params-{}", &params_sha[..12])),
            message: reason.to_string(),
            labels,
            occurred_at: None,
        };
        let mut rec = self.prepare(&caller.tenant, incident).await?;
        rec.requested_by = Some(caller.token_id.clone());
        let rationale = format!(
            "requested over MCP by {client} with token {} ({} scope, tenant {}): {}",
            caller.token_id,
            caller.scope.as_str(),
            caller.tenant,
            catalog::cut(reason, 500)
        );
        let provenance = ev::Provenance::L2 {
            provider: "mcp".into(),
            model: client.clone(),
            prompt_sha256: req.request_sha256.clone(),
            response_sha256: params_sha.clone(),
            confidence: 1.0,
            rationale: rationale.clone(),
        };
        let actions = vec![ActionRecord {
            runbook: req.runbook.clone(),
            params: req.params.clone(),
        }];
        rec.decision = Some(DecisionRecord {
            tier: Tier::L2,
            rule_id: String::new(),
            rule_sha256: String::new(),
            planner: Some(PlannerRecord {
                provider: "mcp".into(),
                model: client,
                prompt_sha256: req.request_sha256,
                response_sha256: params_sha,
                confidence: 1.0,
                rationale,
                prompt_tokens: 0,
                usage: (0, 0),
                latency_ms: 0,
                attempts: 1,
                catalog: catalog_names,
            }),
            actions: actions.clone(),
            dry_run: req.dry_run,
        });
        let chosen = Chosen {
            tier: Tier::L2,
            actions,
            dry_run: req.dry_run,
            cooldown_secs: None,
            provenance,
        };
        self.finish(rec, Some(chosen)).await
    }
}

impl Controller {
    /// Evidence of an agent request refused before it became an incident: who asked for
    /// what, and why not. Nothing ran.
    async fn record_refusal(&self, caller: &Caller, req: &AgentRequest, why: &str) -> Result<()> {
        let client = catalog::cut(&req.client, 200);
        let name = format!("agent-request:{}", catalog::cut(&req.runbook, 64));
        let now = super::now_ms();
        let statement = crate::evidence::decision_statement(
            crate::evidence::Subject {
                name: &name,
                version: "",
                sha256: &req.request_sha256,
            },
            &self.key,
            self.tenant_host(&caller.tenant)?.id(),
            crate::evidence::Context {
                tenant: &caller.tenant,
                provenance: ev::Provenance::L2 {
                    provider: "mcp".into(),
                    model: client.clone(),
                    prompt_sha256: req.request_sha256.clone(),
                    response_sha256: String::new(),
                    confidence: 0.0,
                    rationale: format!(
                        "requested over MCP by {client} with token {} ({} scope, tenant {}): {}",
                        caller.token_id,
                        caller.scope.as_str(),
                        caller.tenant,
                        catalog::cut(req.reason.trim(), 500)
                    ),
                },
                incident_id: None,
                guardrails: None,
            },
            "refused",
            why,
            req.params.clone(),
            now as u64,
        );
        let id = statement.predicate.invocation_id.clone();
        self.append(&statement, &id, &name, "refused", now).await?;
        Ok(())
    }
}
