//! Guardrails: whether what a rule decided may run now.
//!
//! - **repeat**: the same fingerprint (tenant, host, type, service) seen `repeat_threshold`
//!   times within `repeat_window_secs` escalates instead of acting again;
//! - **known target**: the runbook must be deployed and the host's policy must grant what
//!   the run would touch;
//! - **cooldown** per (host, runbook);
//! - **circuit breaker** per tenant: more than `breaker_max_per_minute` automatic runs in
//!   a minute stops automatic action and escalates;
//! - **risk**: high-risk runbooks run as a dry run first, or only wait for approval.
//!
//! The windows live in memory for speed and are rebuilt from the database at start, so a
//! restart resets none of them.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// What to do with a high-risk runbook an automatic tier chose.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum HighRisk {
    /// Run it as a dry run (recorded), then wait for a human to approve the real run.
    DryRunFirst,
    /// Run nothing; wait for a human to approve.
    Approval,
}

/// Guardrail settings (`[guardrails]` in runwarden.toml).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardrailConfig {
    /// Cooldown per (host, runbook) unless a rule sets its own, seconds.
    pub cooldown_secs: u64,
    /// Window of repeat detection, seconds.
    pub repeat_window_secs: u64,
    /// Occurrences of one fingerprint within the window that escalate (the 2nd by default).
    pub repeat_threshold: u32,
    /// Automatic runs per tenant per minute above which automation stops and escalates.
    pub breaker_max_per_minute: u32,
    /// High-risk runbooks: `dry-run-first` or `approval`.
    pub high_risk: HighRisk,
}

impl Default for GuardrailConfig {
    fn default() -> Self {
        GuardrailConfig {
            cooldown_secs: 300,
            repeat_window_secs: 900,
            repeat_threshold: 2,
            breaker_max_per_minute: 30,
            high_risk: HighRisk::DryRunFirst,
        }
    }
}

/// One guardrail's verdict, as shown in the API and recorded in evidence.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Verdict {
    /// `repeat`, `known_target`, `cooldown`, `circuit_breaker`, `risk`.
    pub guardrail: String,
    /// `pass`, `escalate`, `suppress`, `dry_run_first`, `await_approval`.
    pub verdict: String,
    /// Why, in words.
    pub detail: String,
}

impl Verdict {
    pub(crate) fn new(guardrail: &str, verdict: &str, detail: impl Into<String>) -> Verdict {
        Verdict {
            guardrail: guardrail.into(),
            verdict: verdict.into(),
            detail: detail.into(),
        }
    }

    /// Whether the guardrail let the action through.
    pub fn passed(&self) -> bool {
        self.verdict == "pass"
    }
}

/// The windows guardrails count in.
#[derive(Default)]
pub(crate) struct Windows {
    fingerprints: HashMap<String, VecDeque<i64>>,
    last_run: HashMap<(String, String), i64>,
    tenant_runs: HashMap<String, VecDeque<i64>>,
}

const MINUTE_MS: i64 = 60_000;

impl Windows {
    /// Note an occurrence of `fingerprint` at `now`; how many earlier ones are within
    /// `window_ms`.
    pub(crate) fn see(&mut self, fingerprint: &str, now: i64, window_ms: i64) -> usize {
        let q = self
            .fingerprints
            .entry(fingerprint.to_string())
            .or_default();
        while q.front().is_some_and(|t| *t < now - window_ms) {
            q.pop_front();
        }
        let earlier = q.len();
        q.push_back(now);
        earlier
    }

    /// When `runbook` last started on `host`.
    pub(crate) fn last_run(&self, host: &str, runbook: &str) -> Option<i64> {
        self.last_run
            .get(&(host.to_string(), runbook.to_string()))
            .copied()
    }

    /// Automatic runs of `tenant` within the minute before `now`.
    pub(crate) fn runs_last_minute(&mut self, tenant: &str, now: i64) -> usize {
        let Some(q) = self.tenant_runs.get_mut(tenant) else {
            return 0;
        };
        while q.front().is_some_and(|t| *t <= now - MINUTE_MS) {
            q.pop_front();
        }
        q.len()
    }

    /// Note that `runbook` started on `host` for `tenant` at `at`.
    pub(crate) fn ran(&mut self, tenant: &str, host: &str, runbook: &str, at: i64) {
        let slot = self
            .last_run
            .entry((host.to_string(), runbook.to_string()))
            .or_insert(at);
        *slot = (*slot).max(at);
        self.tenant_runs
            .entry(tenant.to_string())
            .or_default()
            .push_back(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_within_their_spans() {
        let mut w = Windows::default();
        assert_eq!(w.see("f", 0, 900_000), 0);
        assert_eq!(w.see("f", 1_000, 900_000), 1);
        assert_eq!(
            w.see("f", 1_000_000, 900_000),
            0,
            "older ones left the window"
        );
        w.ran("t", "h", "r", 10);
        w.ran("t", "h", "r", 20);
        assert_eq!(w.last_run("h", "r"), Some(20));
        assert_eq!(w.runs_last_minute("t", 30), 2);
        assert_eq!(w.runs_last_minute("t", 60_020), 0);
        assert_eq!(w.runs_last_minute("other", 30), 0);
    }
}
