//! Messages between the control plane and a host's agent, version 1.
//!
//! The control plane decides; the agent executes. A [`RunJob`] says what one host must
//! run for one incident; the control plane signs it (a DSSE envelope of
//! [`JOB_PAYLOAD_TYPE`] over the job's JSON, made and checked by `runwarden-evidence`),
//! so a message on the bus is never enough to make a host act. The agent answers with a
//! [`RunReport`] naming the records it signed into its own log.
//!
//! Every message is JSON with `deny_unknown_fields` where a sender could smuggle in
//! something the receiver would ignore, and every enum is tagged by `type`: a version 2
//! gets new subjects (`rw.v2.…`), not new meanings for these.

use crate::{RunStatus, Tier, Verdict};
use serde::{Deserialize, Serialize};

/// The DSSE payload type of a signed [`RunJob`].
pub const JOB_PAYLOAD_TYPE: &str = "application/vnd.runwarden.job.v1+json";

/// Longest message either side accepts, in bytes (params are bounded far below).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// The DSSE payload type of a signed [`DeployJob`].
pub const DEPLOY_PAYLOAD_TYPE: &str = "application/vnd.runwarden.deploy.v1+json";

/// Largest component a [`DeployJob`] carries inline, in bytes: its base64 inside the
/// job's JSON, base64 again inside the signed envelope, stays within one message. A
/// larger one travels by reference ([`DeployJob::size`]).
pub const MAX_INLINE_COMPONENT_BYTES: usize = 512 * 1024;

/// Largest component a host takes at all, in bytes (inline or by reference).
pub const MAX_DEPLOYED_COMPONENT_BYTES: usize = 32 * 1024 * 1024;

/// The subject commands for `host` of `tenant` travel on.
pub fn command_subject(tenant: &str, host: &str) -> String {
    format!("rw.v1.cmd.{tenant}.{host}")
}

/// The subject `host` of `tenant` publishes events of `kind` on.
pub fn event_subject(tenant: &str, host: &str, kind: &str) -> String {
    format!("rw.v1.evt.{tenant}.{host}.{kind}")
}

/// Why a tier chose what a job runs, as the run's evidence records it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "tier", deny_unknown_fields)]
pub enum Provenance {
    /// A deterministic rule.
    L1 {
        /// The rule's id.
        rule_id: String,
        /// SHA-256 of the rule component it is in.
        rule_sha256: String,
    },
    /// The planner, or an MCP client's direct ask (`provider = "mcp"`).
    L2 {
        /// `offline`, `openai`, `anthropic`, `mcp`.
        provider: String,
        /// Model (or MCP client) name.
        model: String,
        /// SHA-256 of the prompt (or request).
        prompt_sha256: String,
        /// SHA-256 of the response (or params).
        response_sha256: String,
        /// 0–1.
        confidence: f64,
        /// Why, in the planner's words.
        rationale: String,
    },
    /// A human approved it.
    L3 {
        /// Who.
        approver: String,
    },
}

impl Provenance {
    /// The tier it names.
    pub fn tier(&self) -> Tier {
        match self {
            Provenance::L1 { .. } => Tier::L1,
            Provenance::L2 { .. } => Tier::L2,
            Provenance::L3 { .. } => Tier::L3,
        }
    }
}

/// One runbook run a job asks for.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlannedRun {
    /// The invocation id the run's record will carry: unique, chosen by the control
    /// plane, so a second delivery of the job is recognised by the agent.
    pub invocation: String,
    /// The runbook's name.
    pub runbook: String,
    /// SHA-256 of the component the control plane decided on: the agent refuses to run
    /// anything else under this name.
    pub sha256: String,
    /// Its params (checked against its schema by the agent before it runs).
    pub params: serde_json::Value,
}

/// What one host must run for one incident: the control plane's decision, signed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunJob {
    /// The job's id.
    pub job: String,
    /// The incident it is for.
    pub incident: String,
    /// The tenant that owns the host.
    pub tenant: String,
    /// The host that must run it.
    pub host: String,
    /// The runs, in order; the agent stops at the first that neither heals nor finds
    /// nothing to do.
    pub runs: Vec<PlannedRun>,
    /// Dry runs only.
    pub dry_run: bool,
    /// Who decided.
    pub provenance: Provenance,
    /// What the guardrails said, recorded in each run's evidence.
    pub verdicts: Vec<Verdict>,
    /// When the control plane issued it (ms since the epoch).
    pub issued_at_ms: i64,
    /// After this the agent refuses it: the decision is stale.
    pub expires_at_ms: i64,
}

/// Where a record sits: its log (origin), index and leaf hash.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LogRef {
    /// The log's origin (`runwarden/HOST`).
    pub origin: String,
    /// Its index in that log.
    pub index: u64,
    /// RFC 6962 leaf hash of the record, hex.
    pub leaf_hash: String,
}

/// How one planned run ended on the host.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunOutcome {
    /// The invocation.
    pub invocation: String,
    /// The runbook.
    pub runbook: String,
    /// How it ended.
    pub status: RunStatus,
    /// One line for humans.
    pub summary: String,
    /// Whether it was a dry run.
    pub dry_run: bool,
    /// Its signed record in the host's log.
    pub record: LogRef,
}

/// The agent's answer to a [`RunJob`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunReport {
    /// The job.
    pub job: String,
    /// The incident.
    pub incident: String,
    /// The host that ran it.
    pub host: String,
    /// One per run that started, in order (the runs after one that failed are absent).
    pub runs: Vec<RunOutcome>,
    /// Set when the agent refused the whole job (bad signature, expired, another
    /// tenant's or host's, a component it does not have): why, in words. Nothing ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// The answer to a [`DeployJob`] the agent carried out (then `runs` is empty and
    /// `incident` is the deployment's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed: Option<DeployOutcome>,
}

/// What a [`DeployJob`] asks of a host.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DeployAction {
    /// Load this component: new runs of its name use it (runs in flight finish on the
    /// version they started with).
    Deploy,
    /// Load this earlier component again (a rollback to a signed release).
    Rollback,
    /// Drop the deployed version of the name: new runs use the one the host had before
    /// any deployment (built in, or from its runbooks directory), if any.
    Remove,
}

impl DeployAction {
    /// As written.
    pub fn as_str(self) -> &'static str {
        match self {
            DeployAction::Deploy => "deploy",
            DeployAction::Rollback => "rollback",
            DeployAction::Remove => "remove",
        }
    }
}

/// control → agent (the host's command subject, like a [`RunJob`], signed by the control
/// plane as a DSSE envelope of [`DEPLOY_PAYLOAD_TYPE`]): load one signed component. The
/// agent checks the release against its own trust policy before anything loads: a
/// control plane cannot push what the host does not trust.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeployJob {
    /// The job's id: a UUID, the invocation id of the agent's record of it (a job
    /// delivered again is answered from that record).
    pub job: String,
    /// The deployment it belongs to.
    pub deployment: String,
    /// The tenant that owns the host.
    pub tenant: String,
    /// The host.
    pub host: String,
    /// Who asked for the deployment (a token id), recorded by the host.
    pub requested_by: String,
    /// What to do.
    pub action: DeployAction,
    /// The component's name.
    pub name: String,
    /// Its version (`remove`: empty).
    pub version: String,
    /// SHA-256 of its bytes (`remove`: empty).
    pub sha256: String,
    /// Its publisher's signed release, DSSE JSON as published (`remove`: empty).
    pub release: String,
    /// Its bytes, base64, at most [`MAX_INLINE_COMPONENT_BYTES`]; empty for `remove`, and
    /// when the component travels by reference: the agent fetches `size` bytes stored
    /// under `sha256` from the transport's blob store and checks them against `sha256`.
    pub component: String,
    /// Its size in bytes when it travels by reference (0: inline, or `remove`); at most
    /// [`MAX_DEPLOYED_COMPONENT_BYTES`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// When the control plane issued it (ms since the epoch).
    pub issued_at_ms: i64,
    /// After this the agent refuses it.
    pub expires_at_ms: i64,
}

/// How a host carried out a [`DeployJob`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeployOutcome {
    /// The component's name.
    pub name: String,
    /// What the host now runs under that name: version and sha256 (empty when the name
    /// is gone), and its publisher's key id (empty for a built-in runbook).
    pub version: String,
    /// Its sha256.
    pub sha256: String,
    /// Its publisher's key id.
    pub publisher: String,
    /// The sha256 it ran before (empty if none).
    pub previous: String,
    /// The host's signed record of the swap.
    pub record: LogRef,
}

/// agent → control (subject `event_subject(tenant, host, "handup")`): an incident the
/// agent's own control plane could not finish at L1 — no rule matched, or a guardrail
/// wants a human — for the fleet's control plane to decide. Sent when the link is up,
/// kept on the host until then.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HandUp {
    /// The incident as the agent's control plane left it: status `handed-up`, with what
    /// it needs ([`IncidentRecord::handed_up`]), the rule's decision and the guardrails'
    /// verdicts, if any.
    pub record: crate::IncidentRecord,
    /// How long it waited on the host before it could be sent (the link was down), ms.
    pub waited_ms: u64,
}

/// agent → control (subject `event_subject(tenant, host, "heartbeat")`, every 10 s while
/// the link is up): the agent is alive, how far its log is forwarded, and what runs on
/// it by deployment. Not signed: only the host's NATS credentials may publish it, and the
/// control plane believes it only about the host itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Heartbeat {
    /// The agent's runwarden version.
    pub version: String,
    /// Records of its log forwarded so far.
    #[serde(default)]
    pub forwarded: u64,
    /// Records in its log, if it could tell.
    #[serde(default)]
    pub log_size: Option<u64>,
    /// When it was made, ms since the epoch by the host's clock (0: not said — an agent
    /// older than this field).
    #[serde(default)]
    pub at_ms: i64,
    /// What runs by deployment (`None`: not said — an older agent).
    #[serde(default)]
    pub components: Option<Vec<RunningComponent>>,
}

/// A component a host runs by deployment, as its heartbeat says.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunningComponent {
    /// Its name.
    pub name: String,
    /// Its version, as released.
    pub version: String,
    /// SHA-256 of its bytes.
    pub sha256: String,
}

impl Heartbeat {
    /// Whether what it says is within bounds a control plane takes: a version, names and
    /// versions of at most 64 printable ASCII characters, sha256s as 64 hex digits, at
    /// most 1024 components.
    pub fn is_plausible(&self) -> bool {
        let fits = |t: &str| t.len() <= 64 && t.chars().all(|c| c.is_ascii_graphic());
        let hex = |t: &str| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit());
        fits(&self.version)
            && self.components.as_ref().is_none_or(|list| {
                list.len() <= 1024
                    && list
                        .iter()
                        .all(|c| fits(&c.name) && fits(&c.version) && hex(&c.sha256))
            })
    }
}

/// Consecutive records of a host's log, from index `first`, with the host's signed
/// checkpoint of its log at `first + envelopes.len()` records: what an agent forwards so
/// the control plane mirrors its log (subject `event_subject(tenant, host, "log")`). The
/// control plane checks every signature against the key the host enrolled with, and that
/// the segment continues what it holds: a gap or a fork is refused and raised.
///
/// When the host's own log misses a record (one deleted from its buffer), the agent
/// sends the records after the hole with an empty `checkpoint`: it cannot sign the tree
/// it no longer holds, and the control plane raises the gap.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogSegment {
    /// The log's origin (`runwarden/HOST`).
    pub origin: String,
    /// Index of the first record.
    pub first: u64,
    /// The DSSE envelopes, exactly as signed (JSON text).
    pub envelopes: Vec<String>,
    /// The signed checkpoint note at the segment's end.
    pub checkpoint: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
