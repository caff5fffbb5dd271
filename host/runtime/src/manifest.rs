//! The host's view of a runbook manifest.

use crate::bindings::runwarden::runbook::types as wit;
use crate::error::{Error, Result};
use crate::grant::Capability;
use crate::policy::ExecGrant;
use serde::Serialize;

/// Risk level of a runbook. Ordered: `Low < Medium < High`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    /// Read-only or trivially reversible.
    Low,
    /// Recoverable changes.
    Medium,
    /// Can lose data or cause outages.
    High,
}

/// A runbook's manifest, checked.
#[derive(Clone, Debug, Serialize)]
pub struct Manifest {
    /// Stable name.
    pub name: String,
    /// Version.
    pub version: String,
    /// One line.
    pub summary: String,
    /// JSON Schema of the params.
    pub params_schema: serde_json::Value,
    /// Effective risk level: what the manifest declared, raised to what its capabilities
    /// imply (see [`implied_risk`]). This is what guardrails, the catalog and MCP use.
    pub risk: Risk,
    /// The risk level the manifest declared.
    pub declared_risk: Risk,
    /// Requested capabilities.
    pub capabilities: Vec<Capability>,
    /// Platforms; empty means any.
    pub platforms: Vec<String>,
}

impl Manifest {
    pub(crate) fn from_wit(m: wit::Manifest) -> Result<Manifest> {
        let valid_name = !m.name.is_empty()
            && m.name.len() <= 64
            && m.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid_name {
            return Err(Error::Manifest(format!(
                "name {:?} must be 1-64 characters of a-z, 0-9 and -",
                m.name
            )));
        }
        let params_schema: serde_json::Value = serde_json::from_str(&m.params_schema)
            .map_err(|e| Error::Manifest(format!("{}: params-schema is not JSON: {e}", m.name)))?;
        jsonschema::validator_for(&params_schema).map_err(|e| {
            Error::Manifest(format!(
                "{}: params-schema is not a valid JSON Schema: {e}",
                m.name
            ))
        })?;
        let declared_risk = match m.risk {
            wit::Risk::Low => Risk::Low,
            wit::Risk::Medium => Risk::Medium,
            wit::Risk::High => Risk::High,
        };
        let capabilities: Vec<Capability> = m
            .capabilities
            .into_iter()
            .map(|c| match c {
                wit::Capability::Service(s) => Capability::Service(s),
                wit::Capability::Exec(e) => Capability::Exec(ExecGrant {
                    program: e.program,
                    args: e.args,
                }),
                wit::Capability::Http(o) => Capability::Http(o),
                wit::Capability::ReadDir(d) => Capability::ReadDir(d),
                wit::Capability::WriteDir(d) => Capability::WriteDir(d),
                wit::Capability::Secret(s) => Capability::Secret(s),
                wit::Capability::Probe => Capability::Probe,
            })
            .collect();
        Ok(Manifest {
            risk: effective_risk(declared_risk, &capabilities),
            declared_risk,
            capabilities,
            name: m.name,
            version: m.version,
            summary: m.summary,
            params_schema,
            platforms: m.platforms,
        })
    }
}

/// The least risk a capability implies, on the scale of the WIT's `risk` enum:
///
/// | capability | implied | why |
/// |---|---|---|
/// | `probe`, `read-dir`, `secret` | low | reads only |
/// | `http` | low | a low-risk run may only send GET and HEAD (checked at each call); other methods need a declared `medium` or more |
/// | `service` | medium | may stop or restart units: recoverable |
/// | `write-dir` | medium | may change or delete files in the directory |
/// | `exec` | high | the program is arbitrary: the host cannot tell what it does |
pub fn implied_risk(c: &Capability) -> Risk {
    match c {
        Capability::Probe
        | Capability::ReadDir(_)
        | Capability::Secret(_)
        | Capability::Http(_) => Risk::Low,
        Capability::Service(_) | Capability::WriteDir(_) => Risk::Medium,
        Capability::Exec(_) => Risk::High,
    }
}

/// The risk the host acts on: the declared risk can only raise what the capabilities
/// imply. A manifest that declares less than its capabilities imply understates its risk
/// (by mistake or on purpose): it is treated as `high`, so that a `low` runbook that
/// stops services or deletes files waits for whatever high-risk runbooks wait for.
pub fn effective_risk(declared: Risk, capabilities: &[Capability]) -> Risk {
    let implied = capabilities
        .iter()
        .map(implied_risk)
        .max()
        .unwrap_or(Risk::Low);
    if declared < implied {
        Risk::High
    } else {
        declared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_can_raise_its_risk_but_not_lower_it() {
        let svc = [Capability::Service("nginx.service".into())];
        let write = [Capability::WriteDir("/tmp/x".into())];
        let read = [Capability::ReadDir("/tmp/x".into()), Capability::Probe];
        let http = [Capability::Http("http://127.0.0.1:80".into())];
        let exec = [Capability::Exec(ExecGrant {
            program: "/bin/echo".into(),
            args: vec![],
        })];
        // Understated: gated as high.
        assert_eq!(effective_risk(Risk::Low, &svc), Risk::High);
        assert_eq!(effective_risk(Risk::Low, &write), Risk::High);
        assert_eq!(effective_risk(Risk::Medium, &exec), Risk::High);
        // Honest: as declared.
        assert_eq!(effective_risk(Risk::Medium, &svc), Risk::Medium);
        assert_eq!(effective_risk(Risk::Medium, &write), Risk::Medium);
        assert_eq!(effective_risk(Risk::Low, &read), Risk::Low);
        assert_eq!(effective_risk(Risk::Low, &http), Risk::Low);
        assert_eq!(effective_risk(Risk::Low, &[]), Risk::Low);
        // Raised: kept.
        assert_eq!(effective_risk(Risk::High, &read), Risk::High);
        assert_eq!(effective_risk(Risk::Medium, &http), Risk::Medium);
    }
}
