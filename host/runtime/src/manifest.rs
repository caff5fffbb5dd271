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
