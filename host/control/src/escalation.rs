//! L3: an incident that ends with a human to decide — escalated, or awaiting approval —
//! gets an escalation: its reason, what was proposed (if anything), and an SLA deadline
//! by severity. An open escalation past its deadline is *breached*.

use crate::incident::Severity;
pub use runwarden_proto::Escalation;
use runwarden_proto::{EscalationState, VerdictKind};
use serde::{Deserialize, Serialize};

/// SLA deadlines by severity, in seconds; `low` (and `info`) is one business day unless
/// set: the deadline moves past Saturday and Sunday (UTC).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SlaConfig {
    /// Critical incidents (default 15 minutes).
    pub critical_secs: u64,
    /// High (default 1 hour).
    pub high_secs: u64,
    /// Medium (default 4 hours).
    pub medium_secs: u64,
    /// Low and info (default: one business day).
    pub low_secs: Option<u64>,
    /// How long a proposal may be approved (default 24 hours): an older one is expired,
    /// because the host it was judged on has moved on.
    pub approval_ttl_secs: u64,
    /// Webhooks told when an escalation opens and when it is decided
    /// (`[[escalations.webhooks]]`; none by default).
    pub webhooks: Vec<crate::notify::WebhookConfig>,
}

impl Default for SlaConfig {
    fn default() -> SlaConfig {
        SlaConfig {
            critical_secs: 15 * 60,
            high_secs: 3600,
            medium_secs: 4 * 3600,
            low_secs: None,
            approval_ttl_secs: 24 * 3600,
            webhooks: Vec::new(),
        }
    }
}

const DAY_MS: i64 = 24 * 3600 * 1000;

/// Day of the week of a Unix time in ms, UTC: 0 Monday … 6 Sunday.
fn weekday(ms: i64) -> i64 {
    // 1970-01-01 was a Thursday (3).
    (ms.div_euclid(DAY_MS) + 3).rem_euclid(7)
}

impl SlaConfig {
    /// When an escalation of `severity` raised at `at_ms` must be decided.
    pub fn deadline(&self, severity: Severity, at_ms: i64) -> i64 {
        let secs = match severity {
            Severity::Critical => self.critical_secs,
            Severity::High => self.high_secs,
            Severity::Medium => self.medium_secs,
            Severity::Low | Severity::Info => match self.low_secs {
                Some(s) => s,
                None => {
                    let mut d = at_ms + DAY_MS;
                    while weekday(d) >= 5 {
                        d += DAY_MS;
                    }
                    return d;
                }
            },
        };
        at_ms + (secs as i64) * 1000
    }
}

/// What a human does with an escalation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Seen; being worked on.
    Acknowledge,
    /// Run what was proposed, as the approver.
    Approve,
    /// Do not run it.
    Deny,
    /// Fixed another way (by hand): nothing runs, and that is recorded.
    Resolve,
}

impl Decision {
    /// The state it leads to.
    pub fn state(self) -> EscalationState {
        match self {
            Decision::Acknowledge => EscalationState::Acknowledged,
            Decision::Approve => EscalationState::Approved,
            Decision::Deny => EscalationState::Denied,
            Decision::Resolve => EscalationState::Resolved,
        }
    }

    /// The approval guardrail's verdict when it decides an escalation.
    pub fn verdict(self) -> VerdictKind {
        match self {
            Decision::Acknowledge => VerdictKind::Acknowledged,
            Decision::Approve => VerdictKind::Approved,
            Decision::Deny => VerdictKind::Denied,
            Decision::Resolve => VerdictKind::Resolved,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> i64 {
        crate::parse_rfc3339_ms(rfc3339).unwrap()
    }

    #[test]
    fn deadlines_by_severity_and_business_days() {
        let sla = SlaConfig::default();
        let t = ms("2026-11-20T10:00:00Z"); // a Friday
        assert_eq!(weekday(t), 4);
        assert_eq!(
            sla.deadline(Severity::Critical, t),
            ms("2026-11-20T10:15:00Z")
        );
        assert_eq!(sla.deadline(Severity::High, t), ms("2026-11-20T11:00:00Z"));
        assert_eq!(
            sla.deadline(Severity::Medium, t),
            ms("2026-11-20T14:00:00Z")
        );
        // One business day from Friday is Monday.
        assert_eq!(sla.deadline(Severity::Low, t), ms("2026-11-23T10:00:00Z"));
        let wed = ms("2026-11-18T09:30:00Z");
        assert_eq!(
            sla.deadline(Severity::Info, wed),
            ms("2026-11-19T09:30:00Z")
        );
        let custom = SlaConfig {
            low_secs: Some(60),
            ..SlaConfig::default()
        };
        assert_eq!(custom.deadline(Severity::Low, t), t + 60_000);
        assert!(EscalationState::Open.breached(t, t + 1));
        assert!(EscalationState::Acknowledged.breached(t, t + 1));
        assert!(!EscalationState::Approved.breached(t, t + 1));
        assert!(!EscalationState::Open.breached(t, t));
    }
}
