//! The evidence record of one invocation: an in-toto Statement v1 whose subject is the
//! runbook component and whose predicate says what ran, where, why, with what grant,
//! what every host call did, and how it ended — signed into a DSSE envelope.

use crate::dsse::Envelope;
use crate::error::{Error, Result};
use crate::keys::SigningKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `_type` of an in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// DSSE payload type of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// `predicateType` of a runwarden invocation record.
pub const PREDICATE_TYPE: &str = "https://runwarden.dev/attestation/invocation/v1";

/// An in-toto Statement v1 about one invocation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// Always [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub statement_type: String,
    /// The component that ran: name and sha256.
    pub subject: Vec<Subject>,
    /// Always [`PREDICATE_TYPE`].
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// What happened.
    pub predicate: Invocation,
}

/// An in-toto subject.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    /// Runbook name.
    pub name: String,
    /// `{"sha256": "<hex>"}` of the component bytes.
    pub digest: BTreeMap<String, String>,
}

/// Why the invocation happened: which tier decided, on what basis.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "tier", deny_unknown_fields)]
pub enum Provenance {
    /// Run by hand (`runwarden runbook run`).
    #[serde(rename = "manual")]
    Manual {
        /// Who ran it, when known (the OS user).
        operator: Option<String>,
    },
    /// A deterministic rule chose it.
    L1 {
        /// The rule's id.
        rule_id: String,
        /// SHA-256 of the rule component.
        rule_sha256: String,
    },
    /// The LLM planner chose it.
    L2 {
        /// Provider (`openai`, `anthropic`, `offline`).
        provider: String,
        /// Model name.
        model: String,
        /// SHA-256 of the prompt.
        prompt_sha256: String,
        /// SHA-256 of the response.
        response_sha256: String,
        /// The planner's confidence, 0–1.
        confidence: f64,
        /// Its one-line rationale.
        rationale: String,
    },
    /// A human approved it.
    L3 {
        /// The approver's identity.
        approver: String,
    },
    /// Nothing decided to act: no L1 rule matched and no planner chose (the record of an
    /// escalation).
    #[serde(rename = "none")]
    Undecided {
        /// Why nothing was decided.
        reason: String,
    },
}

/// The predicate: one invocation, as the runtime reported it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Invocation {
    /// Unique id of the invocation.
    pub invocation_id: String,
    /// Tenant (the clinic) it was done for.
    pub tenant: String,
    /// Host it ran on.
    pub host_id: String,
    /// Key id (hex) of the host key that signed this record.
    pub key_id: String,
    /// Why it ran.
    pub provenance: Provenance,
    /// Runbook version.
    pub runbook_version: String,
    /// SHA-256 of the effective grant's canonical JSON; absent when it was refused.
    pub grant_digest: Option<String>,
    /// The effective grant.
    pub grant: Option<serde_json::Value>,
    /// Params as given (secrets never appear here: runbooks read them through `secrets`).
    pub params: serde_json::Value,
    /// Every host call, secret values redacted.
    pub trace: serde_json::Value,
    /// Outcome: status, summary, details.
    pub outcome: serde_json::Value,
    /// Start, RFC 3339 UTC.
    pub started_at: String,
    /// End, RFC 3339 UTC.
    pub ended_at: String,
    /// Duration in microseconds.
    pub duration_us: u64,
    /// Fuel consumed.
    pub fuel_consumed: u64,
    /// Whether mutating calls were simulated.
    pub dry_run: bool,
    /// The incident this was done (or not done) for, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<String>,
    /// The guardrails' verdicts on it, when it went through the incident pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrails: Option<serde_json::Value>,
    /// Key id (hex) of the publisher whose signed release admitted the component that
    /// ran; absent for the standard runbooks built into runwarden, and for records that
    /// are not runs of a component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
}

impl Statement {
    /// A statement about `runbook` (component digest `sha256`).
    pub fn new(runbook: &str, sha256: &str, predicate: Invocation) -> Statement {
        Statement {
            statement_type: STATEMENT_TYPE.into(),
            subject: vec![Subject {
                name: runbook.into(),
                digest: BTreeMap::from([("sha256".to_string(), sha256.to_string())]),
            }],
            predicate_type: PREDICATE_TYPE.into(),
            predicate,
        }
    }

    /// Sign into a DSSE envelope with the host key.
    pub fn sign(&self, key: &SigningKey) -> Result<Envelope> {
        let payload = serde_json::to_vec(self)?;
        Ok(Envelope::sign(PAYLOAD_TYPE, &payload, key))
    }

    /// Read the statement out of an envelope (the signature is checked separately).
    pub fn from_envelope(env: &Envelope) -> Result<Statement> {
        if env.payload_type != PAYLOAD_TYPE {
            return Err(Error::MalformedRecord(format!(
                "payload type {:?}, expected {PAYLOAD_TYPE}",
                env.payload_type
            )));
        }
        let s: Statement = serde_json::from_slice(&env.payload()?)
            .map_err(|e| Error::MalformedRecord(format!("not a runwarden statement: {e}")))?;
        if s.statement_type != STATEMENT_TYPE || s.predicate_type != PREDICATE_TYPE {
            return Err(Error::MalformedRecord(format!(
                "statement type {:?} / predicate type {:?} are not runwarden's",
                s.statement_type, s.predicate_type
            )));
        }
        Ok(s)
    }

    /// The subject's sha256, if present.
    pub fn sha256(&self) -> Option<&str> {
        self.subject
            .first()
            .and_then(|s| s.digest.get("sha256"))
            .map(String::as_str)
    }
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC (`2026-11-21T23:17:41.123Z`).
pub fn rfc3339_ms(ms: u64) -> String {
    let (secs, milli) = (ms / 1000, ms % 1000);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_303_061_123), "2026-11-21T23:17:41.123Z");
    }

    #[test]
    fn statements_round_trip_through_a_signed_envelope() {
        let key = SigningKey::generate("host-1").unwrap();
        let st = Statement::new(
            "restart-service",
            "ab12",
            Invocation {
                publisher: None,
                invocation_id: "i-1".into(),
                tenant: "clinic".into(),
                host_id: "host-1".into(),
                key_id: key.verifying_key().key_id_hex(),
                provenance: Provenance::Manual {
                    operator: Some("ops".into()),
                },
                runbook_version: "0.1.0".into(),
                grant_digest: None,
                grant: None,
                params: serde_json::json!({"unit": "nginx.service"}),
                trace: serde_json::json!([]),
                outcome: serde_json::json!({"status": "refused"}),
                started_at: rfc3339_ms(0),
                ended_at: rfc3339_ms(1),
                duration_us: 1000,
                fuel_consumed: 0,
                dry_run: false,
                incident_id: None,
                guardrails: None,
            },
        );
        let env = st.sign(&key).unwrap();
        env.verify(&[key.verifying_key()]).unwrap();
        let back = Statement::from_envelope(&env).unwrap();
        assert_eq!(back, st);
        assert_eq!(back.sha256(), Some("ab12"));
        let json = serde_json::to_value(&back).unwrap();
        assert_eq!(json["_type"], STATEMENT_TYPE);
        assert_eq!(json["predicate"]["provenance"]["tier"], "manual");
    }
}
