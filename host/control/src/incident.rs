//! Incidents as the rule components see them. The incident model itself is
//! [`runwarden_proto::Incident`].

pub(crate) use runwarden_proto::{Incident, Severity, check_name, parse_rfc3339_ms};
use std::collections::BTreeMap;

/// What a rule component sees: the incident, its id, and the host's labels.
pub fn rule_input(
    incident: &Incident,
    id: &str,
    host_labels: &BTreeMap<String, String>,
    received_at: &str,
) -> runwarden_runtime::Incident {
    use runwarden_runtime::Severity as S;
    runwarden_runtime::Incident {
        id: id.to_string(),
        tenant: incident.tenant.clone(),
        host: incident.host.clone(),
        kind: incident.kind.clone(),
        severity: match incident.severity {
            Severity::Info => S::Info,
            Severity::Low => S::Low,
            Severity::Medium => S::Medium,
            Severity::High => S::High,
            Severity::Critical => S::Critical,
        },
        service: incident.service.clone(),
        message: incident.message.clone(),
        labels: incident.labels.clone().into_iter().collect(),
        host_labels: host_labels.clone().into_iter().collect(),
        occurred_at: incident
            .occurred_at
            .clone()
            .unwrap_or_else(|| received_at.to_string()),
    }
}
