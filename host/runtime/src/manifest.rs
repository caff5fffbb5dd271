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
        check_text(&m.name, "version", &m.version)?;
        check_text(&m.name, "summary", &m.summary)?;
        for p in &m.platforms {
            check_text(&m.name, "platforms", p)?;
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

/// The manifest's short text fields are shown to operators, models and auditors: each has
/// a shape, a length, and no control or bidi characters (which a terminal would obey).
fn check_text(runbook: &str, field: &str, value: &str) -> Result<()> {
    let (max, ok): (usize, fn(char) -> bool) = match field {
        // Semantic versions and the like: 1.2.3, 0.1.0-rc.1+build.5.
        "version" => (64, |c| c.is_ascii_alphanumeric() || ".-+_".contains(c)),
        "platforms" => (32, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || "-_".contains(c)
        }),
        _ => (200, |c| {
            !c.is_control() && !matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        }),
    };
    let shaped = match field {
        "version" => value.starts_with(|c: char| c.is_ascii_digit()),
        "summary" => true,
        _ => !value.is_empty(),
    };
    if value.chars().count() > max || !shaped || !value.chars().all(ok) {
        let want = match field {
            "version" => "start with a digit and hold only letters, digits and . - + _",
            "platforms" => "hold only a-z, 0-9, - and _",
            _ => "hold no control characters",
        };
        return Err(Error::Manifest(format!(
            "{runbook}: {field} {:?} must be at most {max} characters and {want}",
            value.escape_debug().to_string()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_text;

    #[test]
    fn short_fields_are_checked() {
        for v in ["1.0.0", "0.1.0-rc.1+build.5", "2"] {
            check_text("r", "version", v).unwrap();
        }
        for v in ["", "v1", "1.0\x1b[2K", "1 0", &"1".repeat(65)] {
            let e = check_text("r", "version", v).unwrap_err().to_string();
            assert!(e.contains("r: version"), "{e}");
            assert!(!e.contains('\x1b'), "the error shows no raw escape: {e}");
        }
        check_text("r", "summary", "Restart a systemd unit — and check it").unwrap();
        assert!(check_text("r", "summary", "ok\x1b[1A\x1b[2Kverified").is_err());
        assert!(check_text("r", "summary", "a\u{202e}b").is_err());
        assert!(check_text("r", "summary", &"x".repeat(201)).is_err());
        check_text("r", "platforms", "linux").unwrap();
        assert!(check_text("r", "platforms", "Linux!").is_err());
    }
}
