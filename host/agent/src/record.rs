//! Turning a run into signed evidence: the in-toto statement of one invocation, signed
//! by the host's key.

use runwarden_evidence as ev;
use runwarden_runtime::Invocation;

/// Context of an invocation beyond what the runtime reports.
pub struct Context<'a> {
    /// Tenant it was done for.
    pub tenant: &'a str,
    /// Why it ran.
    pub provenance: ev::Provenance,
    /// The incident, when there was one.
    pub incident_id: Option<&'a str>,
    /// Guardrail verdicts, when it went through the pipeline.
    pub guardrails: Option<serde_json::Value>,
    /// Key id of the component's publisher (a deployed, signed component).
    pub publisher: Option<String>,
}

/// The evidence statement of an invocation.
pub fn statement(inv: &Invocation, key: &ev::SigningKey, cx: Context<'_>) -> ev::Statement {
    ev::Statement::new(
        &inv.runbook,
        &inv.sha256,
        ev::Invocation {
            publisher: cx.publisher,
            invocation_id: inv.invocation_id.clone(),
            tenant: cx.tenant.to_string(),
            host_id: inv.host_id.clone(),
            key_id: key.verifying_key().key_id_hex(),
            provenance: cx.provenance,
            runbook_version: inv.version.clone(),
            grant_digest: inv.grant_digest.clone(),
            grant: inv
                .grant
                .as_ref()
                .and_then(|g| serde_json::to_value(g).ok()),
            params: inv.params.clone(),
            trace: serde_json::to_value(&inv.trace).unwrap_or_default(),
            outcome: serde_json::to_value(&inv.outcome).unwrap_or_default(),
            started_at: ev::rfc3339_ms(inv.started_at_ms),
            ended_at: ev::rfc3339_ms(inv.started_at_ms + inv.duration_us / 1000),
            duration_us: inv.duration_us,
            fuel_consumed: inv.fuel_consumed,
            dry_run: inv.dry_run,
            incident_id: cx.incident_id.map(String::from),
            guardrails: cx.guardrails,
        },
    )
}
