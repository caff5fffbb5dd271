//! The words runwarden uses for where an incident is and what was decided about it.
//!
//! Each is an enum whose wire spelling (JSON, database columns, metrics labels) is fixed
//! here once: `tests/all/wire.rs` pins every spelling, because records already stored and
//! messages already sent use them. Comparing with a `&str` compares with that spelling,
//! so `status == "healed"` still reads naturally at the edges.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A word runwarden did not expect, with the words it knows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {got:?}: expected one of {}", .expected.join(", "))]
pub struct UnknownWord {
    /// What kind of word (`tier`, `incident status`, …).
    pub what: &'static str,
    /// What was given.
    pub got: String,
    /// What is known.
    pub expected: &'static [&'static str],
}

macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $wire)] $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Every wire spelling, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($wire),+];

            /// The wire spelling.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownWord;
            fn from_str(s: &str) -> Result<Self, UnknownWord> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    _ => Err(UnknownWord { what: $what, got: s.to_string(), expected: $name::NAMES }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.as_str()
            }
        }
    };
}

vocabulary! {
    /// Which tier decided (or must decide) an incident.
    Tier ("tier") {
        /// A deterministic rule.
        L1 = "L1",
        /// The planner (a model, or the offline planner), or an MCP client's direct ask.
        L2 = "L2",
        /// A human.
        L3 = "L3",
    }
}

vocabulary! {
    /// Where an incident stands.
    IncidentStatus ("incident status") {
        /// Accepted; not concluded yet.
        Processing = "processing",
        /// A runbook fixed it.
        Healed = "healed",
        /// A runbook found nothing to do.
        NoOp = "no-op",
        /// A runbook ran and did not fix it.
        Failed = "failed",
        /// A human must decide.
        Escalated = "escalated",
        /// A guardrail held it back (cooldown).
        Suppressed = "suppressed",
        /// A human must approve the proposed run.
        AwaitingApproval = "awaiting_approval",
        /// An agent's own control plane could not finish it at L1 and handed it to the
        /// fleet's control plane (L2/L3), which decides it there.
        HandedUp = "handed-up",
    }
}

vocabulary! {
    /// What an incident an agent handed up needs from the fleet's control plane.
    HandedUpFor ("hand-up need") {
        /// No L1 rule on the host matched: the control plane's tiers decide it (L1, L2, L3).
        Plan = "plan",
        /// A guardrail on the host escalated it: a human must decide.
        Escalation = "escalation",
        /// A rule chose a run that needs a human's approval.
        Approval = "approval",
    }
}

impl IncidentStatus {
    /// Whether the incident has concluded (everything but `processing`).
    pub fn is_concluded(self) -> bool {
        self != IncidentStatus::Processing
    }
}

vocabulary! {
    /// Where an escalation stands.
    EscalationState ("escalation state") {
        /// Raised; nobody has looked.
        Open = "open",
        /// Someone is on it.
        Acknowledged = "acknowledged",
        /// The proposed run was approved (and dispatched).
        Approved = "approved",
        /// Nothing runs.
        Denied = "denied",
        /// Undecided past the time it could still be decided.
        Expired = "expired",
        /// Fixed another way.
        Resolved = "resolved",
    }
}

impl EscalationState {
    /// Still waiting for a human (open or acknowledged).
    pub fn is_undecided(self) -> bool {
        matches!(self, EscalationState::Open | EscalationState::Acknowledged)
    }

    /// Whether an escalation in this state with `deadline_ms` is past its SLA at `now_ms`.
    pub fn breached(self, deadline_ms: i64, now_ms: i64) -> bool {
        self.is_undecided() && now_ms > deadline_ms
    }
}

vocabulary! {
    /// The check that gave a verdict.
    Guardrail ("guardrail") {
        /// The L1 rule sets themselves (a rule set that failed to evaluate).
        Rules = "rules",
        /// The L2 planner (no confident proposal).
        Planner = "planner",
        /// The same fingerprint too often within the window.
        Repeat = "repeat",
        /// The runbook is deployed and the host's policy grants what it touches.
        KnownTarget = "known_target",
        /// Per (tenant, host, runbook).
        Cooldown = "cooldown",
        /// Automatic runs per tenant per minute.
        CircuitBreaker = "circuit_breaker",
        /// High-risk runbooks: a dry run first, or approval.
        Risk = "risk",
        /// A human's decision on an escalation.
        Approval = "approval",
    }
}

vocabulary! {
    /// What a guardrail said.
    VerdictKind ("verdict") {
        /// Go on.
        Pass = "pass",
        /// A human must decide.
        Escalate = "escalate",
        /// Do nothing now.
        Suppress = "suppress",
        /// Run as a dry run, then wait for approval.
        DryRunFirst = "dry_run_first",
        /// Run nothing; wait for approval.
        AwaitApproval = "await_approval",
        /// A human approved the proposed run.
        Approved = "approved",
        /// A human acknowledged the escalation.
        Acknowledged = "acknowledged",
        /// A human denied the proposed run.
        Denied = "denied",
        /// A human fixed it another way.
        Resolved = "resolved",
        /// The check itself failed.
        Error = "error",
    }
}

/// One guardrail's verdict, as shown in the API and recorded in evidence.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Verdict {
    /// Which check.
    pub guardrail: Guardrail,
    /// What it said.
    pub verdict: VerdictKind,
    /// Why, in words.
    pub detail: String,
    /// The escalation a person's decision (guardrail `approval`) was on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<crate::EscalationRef>,
}

impl Verdict {
    /// A verdict.
    pub fn new(guardrail: Guardrail, verdict: VerdictKind, detail: impl Into<String>) -> Verdict {
        Verdict {
            guardrail,
            verdict,
            detail: detail.into(),
            escalation: None,
        }
    }

    /// Whether the guardrail let the action through.
    pub fn passed(&self) -> bool {
        self.verdict == VerdictKind::Pass
    }
}

vocabulary! {
    /// How one runbook run ended.
    RunStatus ("run status") {
        /// The runbook fixed the problem.
        Healed = "healed",
        /// Nothing needed doing.
        NoOp = "no-op",
        /// The runbook ran and failed.
        Failed = "failed",
        /// The manifest asked for capabilities the policy does not grant; nothing ran.
        Refused = "refused",
        /// The params were rejected.
        InvalidParams = "invalid_params",
        /// The wall-clock deadline passed.
        Timeout = "timeout",
        /// The fuel ran out.
        OutOfFuel = "out_of_fuel",
        /// The guest needed more memory than the limit.
        OutOfMemory = "out_of_memory",
        /// The guest trapped.
        Trapped = "trapped",
        /// The guest wrote more output than the limit.
        OutputLimit = "output_limit",
        /// The agent stopped (a crash, a kill) while the run was in progress; recorded when
        /// it started again, and never run again.
        Interrupted = "interrupted",
    }
}

impl RunStatus {
    /// Did the run succeed (healed or no-op)?
    pub fn is_success(self) -> bool {
        matches!(self, RunStatus::Healed | RunStatus::NoOp)
    }
}

vocabulary! {
    /// What an API token may do; each scope includes the ones before it.
    Scope ("scope") {
        /// Read incidents, runbooks, rules, evidence.
        Read = "read",
        /// Also submit incidents and decide escalations.
        Operate = "operate",
        /// Also manage tokens.
        Admin = "admin",
    }
}

impl Scope {
    /// Parse `read`, `operate`, `admin`.
    pub fn parse(s: &str) -> Option<Scope> {
        s.parse().ok()
    }
}

impl Severity {
    /// Parse `info`, `low`, `medium`, `high`, `critical`.
    pub fn parse(s: &str) -> Option<Severity> {
        s.parse().ok()
    }
}

vocabulary! {
    /// How bad an incident is, in increasing order.
    Severity ("severity") {
        /// Worth knowing.
        Info = "info",
        /// Degraded, no one affected yet.
        Low = "low",
        /// Someone is or soon will be affected.
        Medium = "medium",
        /// A needed service is impaired.
        High = "high",
        /// A needed service is down, or data is at risk.
        Critical = "critical",
    }
}

vocabulary! {
    /// How much harm a runbook can do, as its manifest declares it (at least what its
    /// capabilities imply).
    Risk ("risk") {
        /// Reads, or changes nothing that matters.
        Low = "low",
        /// Restarts, rotates, cleans.
        Medium = "medium",
        /// Stops services, deletes, reconfigures: a dry run first, or approval.
        High = "high",
    }
}
