//! The catalog a planner chooses from: each deployed runbook the incident's host can run
//! (its platform, and grants its policy could give), with what happened when it ran here
//! before — on this host and across the tenant — so that a runbook that failed here
//! recently is marked and the planner is told why.

use crate::store::RunRow;
use runwarden_runtime::{Capability, Grant, Loaded, Policy, Risk};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Runs counted, per scope.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Tally {
    /// Runs that healed or found nothing to do.
    pub ok: u32,
    /// Runs that ended any other way (failed, refused, timeout, …).
    pub failed: u32,
    /// The most recent failure: when (RFC 3339), status and summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

impl Tally {
    fn add(&mut self, run: &RunRow) {
        if matches!(run.status.as_str(), "healed" | "no-op") {
            self.ok += 1;
        } else {
            self.failed += 1;
            // Rows come newest first: the first failure seen is the latest.
            if self.last_failure.is_none() {
                // To the minute: `2026-11-22T10:24Z`.
                let at = runwarden_evidence::rfc3339_ms(run.at_ms.max(0) as u64);
                self.last_failure = Some(format!(
                    "{}Z {}: {}",
                    at.get(..16).unwrap_or(&at),
                    run.status,
                    cut(&run.summary, 60)
                ));
            }
        }
    }
}

/// One runbook as a planner sees it.
#[derive(Clone, Serialize)]
pub struct CatalogEntry {
    /// Name.
    pub name: String,
    /// One line.
    pub summary: String,
    /// `low`, `medium`, `high`.
    pub risk: &'static str,
    /// Platforms it runs on (empty: any).
    pub platforms: Vec<String>,
    /// JSON Schema of its params.
    pub params_schema: serde_json::Value,
    /// Recent runs on this host.
    pub on_host: Tally,
    /// Recent runs across the tenant.
    pub on_tenant: Tally,
    /// Whether it failed on this host recently (its last run here did not succeed).
    pub failing_here: bool,
    #[serde(skip)]
    pub(crate) loaded: Arc<Loaded>,
}

impl std::fmt::Debug for CatalogEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogEntry")
            .field("name", &self.name)
            .field("risk", &self.risk)
            .field("on_host", &self.on_host)
            .field("on_tenant", &self.on_tenant)
            .field("failing_here", &self.failing_here)
            .finish()
    }
}

/// A runbook left out of the catalog, and why.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Excluded {
    /// Name.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// The risk's name.
pub fn risk_name(r: Risk) -> &'static str {
    match r {
        Risk::Low => "low",
        Risk::Medium => "medium",
        Risk::High => "high",
    }
}

/// Whether `policy` could grant `cap` for some params. A capability with a `{param}`
/// placeholder is possible when the policy grants anything of its kind (the exact scope
/// is checked once params are known); one without is checked exactly.
fn grantable(cap: &Capability, policy: &Policy) -> bool {
    let g = &policy.grants;
    let templated = match cap {
        Capability::Service(s)
        | Capability::Http(s)
        | Capability::ReadDir(s)
        | Capability::WriteDir(s)
        | Capability::Secret(s) => s.contains('{'),
        Capability::Exec(e) => e.program.contains('{') || e.args.iter().any(|a| a.contains('{')),
        Capability::Probe => false,
    };
    if !templated {
        return Grant::resolve(std::slice::from_ref(cap), &serde_json::json!({}), policy).is_ok();
    }
    match cap {
        Capability::Service(_) => !g.services.is_empty(),
        Capability::Http(_) => !g.http.is_empty(),
        Capability::ReadDir(_) => !g.read_dirs.is_empty() || !g.write_dirs.is_empty(),
        Capability::WriteDir(_) => !g.write_dirs.is_empty(),
        Capability::Secret(_) => !g.secrets.is_empty(),
        Capability::Exec(_) => !g.exec.is_empty(),
        Capability::Probe => g.probe,
    }
}

/// Build the catalog for one incident on `host` (served with `policy`, on `platform`):
/// every runbook in `deployed` the host can run, in name order, with its history from
/// `recent` (the tenant's recent runs, newest first). Returns the catalog and what was
/// left out.
pub fn build(
    deployed: &BTreeMap<String, Arc<Loaded>>,
    policy: &Policy,
    platform: &str,
    host: &str,
    recent: &[std::sync::Arc<RunRow>],
) -> (Vec<CatalogEntry>, Vec<Excluded>) {
    let mut out = Vec::new();
    let mut excluded = Vec::new();
    for (name, l) in deployed {
        let m = l.manifest();
        if !m.platforms.is_empty() && !m.platforms.iter().any(|p| p == platform) {
            excluded.push(Excluded {
                name: name.clone(),
                reason: format!("runs on {}, the host is {platform}", m.platforms.join(", ")),
            });
            continue;
        }
        if let Some(cap) = m.capabilities.iter().find(|c| !grantable(c, policy)) {
            excluded.push(Excluded {
                name: name.clone(),
                reason: format!("the host's policy cannot grant {cap}"),
            });
            continue;
        }
        let (mut on_host, mut on_tenant) = (Tally::default(), Tally::default());
        let mut last_here = None;
        for r in recent.iter().filter(|r| &r.runbook == name && !r.dry_run) {
            on_tenant.add(r);
            if r.host == host {
                on_host.add(r);
                last_here.get_or_insert(r.status.as_str());
            }
        }
        out.push(CatalogEntry {
            name: name.clone(),
            summary: m.summary.clone(),
            risk: risk_name(m.risk),
            platforms: m.platforms.clone(),
            params_schema: m.params_schema.clone(),
            failing_here: last_here.is_some_and(|s| !matches!(s, "healed" | "no-op")),
            on_host,
            on_tenant,
            loaded: l.clone(),
        });
    }
    (out, excluded)
}

/// At most `max` bytes of `s`, cut at a character boundary, with `…` when cut.
pub(crate) fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
