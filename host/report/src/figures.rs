//! What a tenant's month comes to.

use serde::{Deserialize, Serialize};

/// The figures of one tenant's month: everything the report shows, nothing it does not.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Figures {
    /// The tenant (clinic).
    pub tenant: String,
    /// `YYYY-MM`.
    pub month: String,
    /// IANA name of the clinic's time zone (`Europe/Berlin`), or `UTC`: every time shown
    /// and the month's bounds are in it.
    pub time_zone: String,
    /// The instant the figures were taken at, local time (`2026-12-08 00:00 CET`): the
    /// end of the week after the month once that is over, else when the report was made.
    pub as_of: String,
    /// Whether the month's runs may still change the figures (made before `as_of` was
    /// the end of the week after the month).
    #[serde(default)]
    pub provisional: bool,
    /// Incidents received in the month.
    pub incidents: u64,
    /// Incidents by the tier that concluded them (`L1`, `L2`, `L3`) and by outcome.
    pub by_tier: Vec<TierRow>,
    /// Incidents a runbook healed (not a dry run) without a human: decided at L1 or L2.
    pub healed_automatically: u64,
    /// Incidents healed in all (also after a human's approval).
    pub healed: u64,
    /// Mean time from an incident's arrival to the run that healed it, in seconds.
    pub mean_time_to_heal_s: Option<f64>,
    /// Median of the same.
    pub median_time_to_heal_s: Option<f64>,
    /// Runs that were dry runs (simulated; never counted as healing anything).
    pub dry_runs: u64,
    /// Escalations to a human opened in the month.
    pub escalations: u64,
    /// Of those, decided by their SLA deadline.
    pub escalations_in_sla: u64,
    /// Of those, decided after their deadline, or still undecided past it.
    pub escalations_breached: u64,
    /// Of those, still undecided and not yet due.
    pub escalations_open: u64,
    /// Approvals given in the month, by who approved (most first).
    pub approvals: Vec<NameCount>,
    /// Incidents per local day of the month, by tier.
    pub daily: Vec<Day>,
    /// The problems that came back most (at least 3 times), most first, at most 10.
    pub recurring: Vec<Recurring>,
    /// Hosts needing attention (most unresolved first), at most 10.
    pub hosts_attention: Vec<HostRow>,
    /// L1 rules the flywheel promoted from repeated good L2 decisions in the month.
    pub promoted_rules: Vec<Promotion>,
    /// The signed checkpoint of the evidence log when the report was made: the figures
    /// are of the records up to it.
    pub checkpoint: CheckpointRef,
}

/// One tier's incidents.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TierRow {
    /// `L1`, `L2` or `L3`.
    pub tier: String,
    /// Incidents it concluded (or holds, for L3).
    pub incidents: u64,
    /// Of those, healed.
    pub healed: u64,
    /// Of those, failed (a runbook ran and did not fix it).
    pub failed: u64,
}

/// A name and a count.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NameCount {
    /// The name.
    pub name: String,
    /// How many.
    pub count: u64,
}

/// One local day.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Day {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Incidents concluded at L1.
    pub l1: u64,
    /// At L2.
    pub l2: u64,
    /// At L3 (or still with a human).
    pub l3: u64,
}

/// A problem that came back.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Recurring {
    /// The host.
    pub host: String,
    /// Incident type (`disk-full`).
    pub kind: String,
    /// The service, or empty.
    pub service: String,
    /// Times it came in the month.
    pub count: u64,
    /// Times it was healed.
    pub healed: u64,
}

/// A host needing attention.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostRow {
    /// The host.
    pub host: String,
    /// Incidents in the month.
    pub incidents: u64,
    /// Healed.
    pub healed: u64,
    /// Failed runs.
    pub failed: u64,
    /// Escalations still undecided now.
    pub open_escalations: u64,
    /// Escalations that missed their SLA.
    pub breached: u64,
}

/// A rule the flywheel promoted.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Promotion {
    /// The rule's id.
    pub rule: String,
    /// When (local time).
    pub at: String,
}

/// A signed checkpoint of the evidence log.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRef {
    /// The log's origin.
    pub origin: String,
    /// Its size (records).
    pub tree_size: u64,
    /// Its root (hex).
    pub root: String,
    /// The signed note itself (C2SP checkpoint).
    pub note: String,
}
