//! Guardrails: whether what a rule decided may run now.
//!
//! - **repeat**: the same fingerprint (tenant, host, type, service) seen `repeat_threshold`
//!   times within `repeat_window_secs` escalates instead of acting again;
//! - **known target**: the runbook must be deployed and the host's policy must grant what
//!   the run would touch;
//! - **cooldown** per (tenant, host, runbook);
//! - **circuit breaker** per tenant: more than `breaker_max_per_minute` automatic runs in
//!   a minute stops automatic action and escalates;
//! - **risk**: high-risk runbooks run as a dry run first, or only wait for approval.
//!
//! The windows live in memory for speed and are rebuilt from the database at start, so a
//! restart resets none of them. Several servers on one PostgreSQL also claim each
//! admitted run's cooldown in the database (`cooldowns`), atomically: no two of them start
//! one runbook on one host within its cooldown. Repeat detection and the breaker count
//! what each server saw itself: with N servers, a fingerprint may be acted on up to N
//! times before it escalates (each time past the shared cooldown), and a tenant's breaker
//! opens at up to N × `breaker_max_per_minute`.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

pub use runwarden_proto::Verdict;

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
    /// Cooldown per (tenant, host, runbook) unless a rule sets its own, seconds.
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

/// The windows guardrails count in. Every key starts with the tenant: one tenant's
/// incidents and runs never count towards another's cooldown, repeat or breaker.
/// Entries that left their window are swept at most once a minute (amortised over the
/// calls), so a flood of distinct fingerprints does not grow memory past the window.
pub(crate) struct Windows {
    /// Occurrences by fingerprint (which names the tenant and host).
    fingerprints: HashMap<String, VecDeque<i64>>,
    /// Latest run start by (tenant, host, runbook).
    last_run: HashMap<(String, String, String), i64>,
    /// Automatic run starts by tenant, within the last minute.
    tenant_runs: HashMap<String, VecDeque<i64>>,
    /// How long occurrences count as repeats (ms).
    repeat_window_ms: i64,
    /// How long a run start is kept for cooldowns (ms).
    keep_runs_ms: i64,
    /// When the last sweep ran.
    swept_at: i64,
}

const MINUTE_MS: i64 = 60_000;

/// How often expired entries are swept.
const SWEEP_EVERY_MS: i64 = MINUTE_MS;

/// How long run starts are kept at least: the span a restart rebuilds cooldowns from.
pub(crate) const KEEP_RUNS_MS: i64 = 7 * 24 * 3600 * 1000;

impl Windows {
    /// Empty windows: repeats count within `repeat_window_ms`, run starts are kept for
    /// `keep_runs_ms` (the longest cooldown that can apply).
    pub(crate) fn new(repeat_window_ms: i64, keep_runs_ms: i64) -> Windows {
        Windows {
            fingerprints: HashMap::new(),
            last_run: HashMap::new(),
            tenant_runs: HashMap::new(),
            repeat_window_ms,
            keep_runs_ms,
            swept_at: i64::MIN,
        }
    }

    /// Note an occurrence of `fingerprint` at `now`; how many earlier ones are within
    /// the repeat window.
    pub(crate) fn see(&mut self, fingerprint: &str, now: i64) -> usize {
        self.sweep(now);
        let window_ms = self.repeat_window_ms;
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

    /// When `runbook` last started on `host` for `tenant`.
    pub(crate) fn last_run(&self, tenant: &str, host: &str, runbook: &str) -> Option<i64> {
        self.last_run
            .get(&(tenant.to_string(), host.to_string(), runbook.to_string()))
            .copied()
    }

    /// Automatic runs of `tenant` within the minute before `now`.
    pub(crate) fn runs_last_minute(&mut self, tenant: &str, now: i64) -> usize {
        self.sweep(now);
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
        self.sweep(at);
        let slot = self
            .last_run
            .entry((tenant.to_string(), host.to_string(), runbook.to_string()))
            .or_insert(at);
        *slot = (*slot).max(at);
        self.tenant_runs
            .entry(tenant.to_string())
            .or_default()
            .push_back(at);
    }

    /// Drop what left its window, at most once every [`SWEEP_EVERY_MS`].
    fn sweep(&mut self, now: i64) {
        if now.saturating_sub(self.swept_at) < SWEEP_EVERY_MS {
            return;
        }
        self.swept_at = now;
        let repeat_from = now - self.repeat_window_ms;
        self.fingerprints.retain(|_, q| {
            while q.front().is_some_and(|t| *t < repeat_from) {
                q.pop_front();
            }
            !q.is_empty()
        });
        let keep_from = now - self.keep_runs_ms;
        self.last_run.retain(|_, at| *at >= keep_from);
        self.tenant_runs.retain(|_, q| {
            while q.front().is_some_and(|t| *t <= now - MINUTE_MS) {
                q.pop_front();
            }
            !q.is_empty()
        });
    }

    /// How many keys each window holds: (fingerprints, runs, tenants).
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize, usize) {
        (
            self.fingerprints.len(),
            self.last_run.len(),
            self.tenant_runs.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_within_their_spans() {
        let mut w = Windows::new(900_000, KEEP_RUNS_MS);
        assert_eq!(w.see("f", 0), 0);
        assert_eq!(w.see("f", 1_000), 1);
        assert_eq!(w.see("f", 1_000_000), 0, "older ones left the window");
        w.ran("t", "h", "r", 10);
        w.ran("t", "h", "r", 20);
        assert_eq!(w.last_run("t", "h", "r"), Some(20));
        assert_eq!(w.runs_last_minute("t", 30), 2);
        assert_eq!(w.runs_last_minute("t", 60_020), 0);
        assert_eq!(w.runs_last_minute("other", 30), 0);
    }

    #[test]
    fn cooldowns_and_breakers_are_per_tenant() {
        let mut w = Windows::new(900_000, KEEP_RUNS_MS);
        w.ran("b", "h", "r", 10);
        assert_eq!(
            w.last_run("a", "h", "r"),
            None,
            "b's run is not a's cooldown"
        );
        assert_eq!(w.last_run("b", "h", "r"), Some(10));
        assert_eq!(
            w.runs_last_minute("a", 20),
            0,
            "b's runs are not a's breaker"
        );
        assert_eq!(w.runs_last_minute("b", 20), 1);
    }

    #[test]
    fn expired_entries_are_swept_so_the_maps_shrink() {
        let window = 900_000;
        let mut w = Windows::new(window, 3_600_000);
        for i in 0..10_000 {
            w.see(&format!("fp-{i}"), i);
            w.ran(&format!("tenant-{i}"), "h", &format!("rb-{i}"), i);
        }
        assert_eq!(w.sizes(), (10_000, 10_000, 10_000));
        // Past the repeat window and the breaker's minute: only the new ones stay.
        let later = 10_000 + window + SWEEP_EVERY_MS;
        w.see("fp-new", later);
        let (fps, _, tenants) = w.sizes();
        assert_eq!((fps, tenants), (1, 0));
        assert_eq!(w.see("fp-new", later + 1), 1, "a live entry still counts");
        // Past how long runs are kept: cooldown entries go too.
        let much_later = later + 3_600_000 + SWEEP_EVERY_MS;
        w.ran("t", "h", "r", much_later);
        assert_eq!(w.sizes(), (0, 1, 1));
        assert_eq!(w.last_run("t", "h", "r"), Some(much_later));
    }
}
