//! The host's view of a runbook manifest.

use crate::bindings::runwarden::runbook::types as wit;
use crate::error::{Error, Result};
use crate::grant::Capability;
use crate::policy::ExecGrant;
use serde::Serialize;

/// Risk level of a runbook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
    /// Risk level.
    pub risk: Risk,
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
        Ok(Manifest {
            name: m.name,
            version: m.version,
            summary: m.summary,
            params_schema,
            risk: match m.risk {
                wit::Risk::Low => Risk::Low,
                wit::Risk::Medium => Risk::Medium,
                wit::Risk::High => Risk::High,
            },
            capabilities: m
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
                .collect(),
            platforms: m.platforms,
        })
    }
}
