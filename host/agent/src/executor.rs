//! Running what the control plane decided: check the signed job, run each planned
//! invocation once, sign each record into this host's log, report.
//!
//! Trust does not rest on the transport. A job runs only if it is signed by a control
//! key this agent trusts, names this host and its tenant, has not expired, and asks for
//! components this host has under the exact SHA-256 the control plane decided on; the
//! grant is still computed here, from this host's policy. Anything else is refused, the
//! refusal signed into the log.
//!
//! Exactly once: an invocation id is recorded at most once in the host's log (the
//! column is unique). A job delivered again is answered from the records it already
//! has; a delivery that arrives while the first is still running waits for it instead
//! of starting a second run.

use crate::journal::{Journal, Started};
use crate::record::statement;
use runwarden_evidence as ev;
use runwarden_proto::RunStatus;
use runwarden_proto::bus::{
    JOB_PAYLOAD_TYPE, LogRef, MAX_MESSAGE_BYTES, PlannedRun, Provenance, RunJob, RunOutcome,
    RunReport,
};
use runwarden_runtime::{Loaded, Policy, RunOptions, Runtime, Status};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// Most runs one job may ask for.
pub const MAX_RUNS_PER_JOB: usize = 16;
/// How far ahead of this host's clock a job's issue time may be (clock skew), ms.
const MAX_SKEW_MS: i64 = 60_000;

/// What an agent needs.
#[derive(Clone)]
pub struct AgentConfig {
    /// The tenant that owns this host.
    pub tenant: String,
    /// This host's policy: the grants are computed from it, whatever the job says.
    pub policy: Arc<Policy>,
    /// The runbooks this host has, loaded.
    pub runbooks: Vec<Arc<Loaded>>,
    /// Who published the runbooks that came with a signed release: component sha256 →
    /// the publisher's key id, named in the record of every run of it.
    pub publishers: HashMap<String, String>,
    /// This host's trust policy: what a deployment may load (none: nothing is).
    pub trust: Option<ev::TrustPolicy>,
    /// Where deployed components are kept (`DATA_DIR/components`), loaded again at start
    /// through the trust policy; `None`: deployments are refused.
    pub components: Option<std::path::PathBuf>,
    /// This host's signing key: every record of this host is signed with it.
    pub key: ev::SigningKey,
    /// The control-plane keys whose jobs this agent runs.
    pub control_keys: Vec<ev::VerifyingKey>,
    /// This host's evidence log.
    pub log: ev::Store,
    /// The journal of runs started (`DATA_DIR/agent-journal.db`): what tells, after a
    /// crash, which runs were cut off.
    pub journal: std::path::PathBuf,
}

/// What can stop an agent from answering at all (its log failed). A refused job is not
/// an error: it is answered with a [`RunReport`] that says why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The evidence log failed: nothing is reported done without its record.
    #[error("the host's evidence log: {0}")]
    Evidence(#[from] ev::Error),
    /// A run could not be handed to a worker thread.
    #[error("the run's worker thread failed: {0}")]
    Worker(String),
    /// The journal of started runs failed: nothing runs that could not be noted first.
    #[error("{0}")]
    Journal(String),
    /// A runbook did not load.
    #[error("loading a runbook: {0}")]
    Runbook(#[from] runwarden_runtime::Error),
    /// What a deployment names by reference could not be fetched now: the job is given
    /// back, to come again.
    #[error("fetching {0}; the job comes again")]
    Fetch(String),
}

/// The host side: runs checked jobs on this host, exactly once each.
pub struct Executor {
    pub(crate) runtime: Arc<Runtime>,
    tenant: String,
    policy: Arc<Policy>,
    /// The runbooks runs use now, by name: swapped whole by a deployment (a run holds the
    /// component it started with).
    pub(crate) runbooks: RwLock<HashMap<String, Arc<Loaded>>>,
    /// What the host had before any deployment (built in, runbooks directory).
    pub(crate) base: HashMap<String, Arc<Loaded>>,
    pub(crate) publishers: RwLock<HashMap<String, String>>,
    pub(crate) trust: Option<ev::TrustPolicy>,
    pub(crate) components: Option<std::path::PathBuf>,
    /// The L1 rule sets deployed here, by name (the host's own control plane decides
    /// with them).
    pub(crate) rule_sets: RwLock<HashMap<String, (Arc<runwarden_runtime::RuleSet>, String)>>,
    /// What runs by deployment: name → (sha256, version as released).
    pub(crate) deployed_now: RwLock<HashMap<String, (String, String)>>,
    /// Told of every swap: (name, what runs under it now, if anything).
    pub(crate) on_swap: Mutex<Vec<crate::deploy::OnSwap>>,
    /// Held while a deployment reads and replaces what runs.
    pub(crate) deploying: tokio::sync::Mutex<()>,
    key: ev::SigningKey,
    origin: String,
    control_keys: Vec<ev::VerifyingKey>,
    log: ev::Store,
    journal: Journal,
    /// Invocations being run now, each with a lock a second delivery waits on.
    running: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Executor {
    /// An executor for the host `config.policy` describes, its journal opened. Call
    /// [`recover`](Executor::recover) before it serves.
    pub async fn open(runtime: Arc<Runtime>, config: AgentConfig) -> Result<Executor, AgentError> {
        let origin = ev::log_origin(config.key.name());
        // This host's log has one signer: its key, checked at every start.
        config
            .log
            .claim(&origin, &config.key.verifying_key())
            .await?;
        let journal = Journal::open(&config.journal)
            .await
            .map_err(AgentError::Journal)?;
        let base: HashMap<String, Arc<Loaded>> = config
            .runbooks
            .into_iter()
            .map(|l| (l.manifest().name.clone(), l))
            .collect();
        Ok(Executor {
            runtime,
            tenant: config.tenant,
            policy: config.policy,
            runbooks: RwLock::new(base.clone()),
            base,
            publishers: RwLock::new(config.publishers),
            trust: config.trust,
            components: config.components,
            rule_sets: RwLock::default(),
            deployed_now: RwLock::default(),
            on_swap: Mutex::new(Vec::new()),
            deploying: tokio::sync::Mutex::new(()),
            key: config.key,
            origin,
            control_keys: config.control_keys,
            log: config.log,
            journal,
            running: Mutex::new(HashMap::new()),
        })
    }

    /// Record every run the journal says was started and the log does not hold as
    /// `interrupted` — cut off by a crash or a kill — signed like any record and never run
    /// again (a job naming it is answered from the log). Returns how many.
    pub async fn recover(&self) -> Result<usize, AgentError> {
        let mut recorded = 0;
        for s in self
            .journal
            .unfinished()
            .await
            .map_err(AgentError::Journal)?
        {
            if self.log.by_invocation(&s.invocation_id).await?.is_none() {
                self.record_interrupted(&s).await?;
                recorded += 1;
            }
            self.journal.done(&s.invocation_id).await;
        }
        Ok(recorded)
    }

    async fn record_interrupted(&self, s: &Started) -> Result<(), AgentError> {
        let now = now_ms();
        let provenance = serde_json::from_str::<Provenance>(&s.provenance)
            .map(|p| evidence_provenance(&p))
            .unwrap_or_else(|e| ev::Provenance::Undecided {
                reason: format!("the journal's provenance does not parse: {e}"),
            });
        let summary = format!(
            "the agent stopped while this run was in progress (started {}); it was not run \
             again: a human must check the host",
            ev::rfc3339_ms(s.started_at_ms.max(0) as u64)
        );
        let statement = ev::Statement::new(
            &s.runbook,
            &s.sha256,
            ev::Invocation {
                publisher: None,
                invocation_id: s.invocation_id.clone(),
                tenant: s.tenant.clone(),
                host_id: self.host().to_string(),
                key_id: self.key.verifying_key().key_id_hex(),
                provenance,
                runbook_version: String::new(),
                grant_digest: None,
                grant: None,
                params: serde_json::json!({"job": s.job}),
                trace: serde_json::json!([]),
                outcome: serde_json::json!({
                    "status": RunStatus::Interrupted, "summary": summary, "details": {},
                }),
                started_at: ev::rfc3339_ms(s.started_at_ms.max(0) as u64),
                ended_at: ev::rfc3339_ms(now.max(0) as u64),
                duration_us: 0,
                fuel_consumed: 0,
                dry_run: s.dry_run,
                incident_id: Some(s.incident_id.clone()),
                guardrails: None,
            },
        );
        let envelope = statement.sign(&self.key)?.to_json().into_bytes();
        self.log
            .append(ev::NewRecord {
                envelope,
                invocation_id: s.invocation_id.clone(),
                host_id: self.host().to_string(),
                runbook: s.runbook.clone(),
                status: RunStatus::Interrupted.to_string(),
                started_at_ms: s.started_at_ms,
            })
            .await?;
        Ok(())
    }

    /// The host this agent serves.
    pub fn host(&self) -> &str {
        &self.policy.host_id
    }

    /// The tenant that owns it.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The origin of this host's log (`runwarden/KEYNAME`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// This host's evidence log.
    pub fn log(&self) -> &ev::Store {
        &self.log
    }

    /// The key this host signs with.
    pub(crate) fn key(&self) -> &ev::SigningKey {
        &self.key
    }

    /// Check the signed job `envelope` (DSSE JSON) and run it; `now_ms` is this host's
    /// clock. The report names every record; a refused job's report says why, and the
    /// refusal is itself a signed record.
    pub async fn execute(&self, envelope: &[u8], now_ms: i64) -> Result<RunReport, AgentError> {
        self.execute_with(envelope, now_ms, None).await
    }

    /// [`Executor::execute`], fetching what a deployment names by reference from
    /// `blobs` (the transport's store; `None`: such a deployment is refused).
    pub async fn execute_with(
        &self,
        envelope: &[u8],
        now_ms: i64,
        blobs: Option<&dyn runwarden_bus::Blobs>,
    ) -> Result<RunReport, AgentError> {
        if crate::deploy::is_deploy_job(envelope) {
            return self.deploy(envelope, now_ms, blobs).await;
        }
        let job = match self.open_job(envelope) {
            Ok(job) => job,
            Err(why) => return self.refuse(None, &why, now_ms).await,
        };
        let loaded = match self.admissible(&job, now_ms) {
            Ok(loaded) => loaded,
            Err(why) => {
                // A job delivered again is answered from the log, even once it has
                // expired.
                if let Some(report) = self.already_recorded(&job).await? {
                    return Ok(report);
                }
                return self.refuse(Some(&job), &why, now_ms).await;
            }
        };
        // An admissible job delivered again is answered from the log too: each run is
        // looked up under its invocation's lock before it would start (`run_once`).
        let mut runs = Vec::with_capacity(job.runs.len());
        for (planned, loaded) in job.runs.iter().zip(loaded) {
            let outcome = self.run_once(&job, planned, loaded).await?;
            let go_on = outcome.status.is_success();
            runs.push(outcome);
            if !go_on {
                break;
            }
        }
        Ok(RunReport {
            job: job.job,
            incident: job.incident,
            host: self.host().to_string(),
            runs,
            refused: None,
            deployed: None,
        })
    }

    /// The job inside a signed envelope, if a trusted control key signed it.
    fn open_job(&self, envelope: &[u8]) -> Result<RunJob, String> {
        self.open_signed(envelope, JOB_PAYLOAD_TYPE)
    }

    /// The message of `payload_type` inside a signed envelope, if a trusted control key
    /// signed it.
    pub(crate) fn open_signed<T: serde::de::DeserializeOwned>(
        &self,
        envelope: &[u8],
        payload_type: &str,
    ) -> Result<T, String> {
        if envelope.len() > MAX_MESSAGE_BYTES {
            return Err(format!(
                "the job is {} bytes; at most {MAX_MESSAGE_BYTES}",
                envelope.len()
            ));
        }
        let text = std::str::from_utf8(envelope).map_err(|_| "the job is not UTF-8".to_string())?;
        let env = ev::Envelope::from_json(text).map_err(|e| format!("the job envelope: {e}"))?;
        if env.payload_type != payload_type {
            return Err(format!(
                "the envelope's payload type is {:?}, not {payload_type}",
                ev::escape_control(&env.payload_type)
            ));
        }
        env.verify(&self.control_keys)
            .map_err(|e| format!("the job is not signed by a trusted control key: {e}"))?;
        let payload = env.payload().map_err(|e| format!("the job payload: {e}"))?;
        serde_json::from_slice(&payload).map_err(|e| format!("the job does not parse: {e}"))
    }

    /// Whether a job for `tenant` and `host`, issued and expiring then, is for this host
    /// now.
    pub(crate) fn addressed(
        &self,
        tenant: &str,
        host: &str,
        issued_at_ms: i64,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<(), String> {
        if tenant != self.tenant {
            return Err(format!(
                "the job is for tenant {:?}; this host belongs to {:?}",
                ev::escape_control(tenant),
                self.tenant
            ));
        }
        if host != self.host() {
            return Err(format!(
                "the job is for host {:?}; this is {:?}",
                ev::escape_control(host),
                self.host()
            ));
        }
        if now_ms > expires_at_ms {
            return Err(format!(
                "the job expired {} ms ago: the decision is stale",
                now_ms - expires_at_ms
            ));
        }
        if issued_at_ms > now_ms + MAX_SKEW_MS {
            return Err(format!(
                "the job was issued {} ms in this host's future (clock skew beyond {MAX_SKEW_MS} ms)",
                issued_at_ms - now_ms
            ));
        }
        Ok(())
    }

    /// Whether this host may run `job` now: the component each run uses, as decided.
    fn admissible(&self, job: &RunJob, now_ms: i64) -> Result<Vec<Arc<Loaded>>, String> {
        self.addressed(
            &job.tenant,
            &job.host,
            job.issued_at_ms,
            job.expires_at_ms,
            now_ms,
        )?;
        if job.runs.is_empty() || job.runs.len() > MAX_RUNS_PER_JOB {
            return Err(format!(
                "the job asks for {} runs; 1 to {MAX_RUNS_PER_JOB}",
                job.runs.len()
            ));
        }
        let runbooks = self.runbooks.read().unwrap_or_else(|e| e.into_inner());
        let mut loaded = Vec::with_capacity(job.runs.len());
        for run in &job.runs {
            if uuid::Uuid::try_parse(&run.invocation).is_err() {
                return Err(format!(
                    "invocation id {:?} is not a UUID",
                    ev::escape_control(&run.invocation)
                ));
            }
            let Some(l) = runbooks.get(&run.runbook) else {
                return Err(format!(
                    "runbook {:?} is not deployed on this host",
                    ev::escape_control(&run.runbook)
                ));
            };
            if l.sha256() != run.sha256 {
                return Err(format!(
                    "runbook {} here is {}, not the {} the control plane decided on",
                    run.runbook,
                    &l.sha256()[..12],
                    ev::escape_control(run.sha256.get(..12).unwrap_or(&run.sha256))
                ));
            }
            loaded.push(l.clone());
        }
        Ok(loaded)
    }

    /// The report of a job every run of which is already in the log (in order, up to
    /// the first that did not succeed), or `None` if any has yet to run.
    async fn already_recorded(&self, job: &RunJob) -> Result<Option<RunReport>, AgentError> {
        if job.runs.is_empty() {
            // Nothing to find: not "all of it already ran" (the job is refused below).
            return Ok(None);
        }
        let mut runs = Vec::new();
        for planned in &job.runs {
            let Some(outcome) = self.recorded(planned).await? else {
                return Ok(None);
            };
            let go_on = outcome.status.is_success();
            runs.push(outcome);
            if !go_on {
                break;
            }
        }
        Ok(Some(RunReport {
            job: job.job.clone(),
            incident: job.incident.clone(),
            host: self.host().to_string(),
            runs,
            refused: None,
            deployed: None,
        }))
    }

    /// The outcome of `planned` as its record in the log says, if it has one.
    async fn recorded(&self, planned: &PlannedRun) -> Result<Option<RunOutcome>, AgentError> {
        let Some(r) = self.log.by_invocation(&planned.invocation).await? else {
            return Ok(None);
        };
        let statement = ev::Envelope::from_json(&String::from_utf8_lossy(&r.envelope))
            .and_then(|e| ev::Statement::from_envelope(&e))?;
        let outcome = &statement.predicate.outcome;
        Ok(Some(RunOutcome {
            invocation: r.invocation_id,
            runbook: r.runbook,
            status: r.status.parse().unwrap_or(RunStatus::Failed),
            summary: outcome["summary"].as_str().unwrap_or_default().to_string(),
            dry_run: statement.predicate.dry_run,
            record: LogRef {
                origin: self.origin.clone(),
                index: r.index,
                leaf_hash: ev::hash_hex(&r.leaf_hash),
            },
        }))
    }

    /// Run `planned` unless it already ran: one run per invocation id, ever.
    async fn run_once(
        &self,
        job: &RunJob,
        planned: &PlannedRun,
        loaded: Arc<Loaded>,
    ) -> Result<RunOutcome, AgentError> {
        let lock = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(planned.invocation.clone())
            .or_default()
            .clone();
        let guard = lock.lock().await;
        let result = match self.recorded(planned).await {
            Ok(Some(done)) => Ok(done),
            Ok(None) => self.run(job, planned, loaded).await,
            Err(e) => Err(e),
        };
        drop(guard);
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        // The last one out removes the entry (the map holds one reference).
        if Arc::strong_count(&lock) <= 2 {
            running.remove(&planned.invocation);
        }
        result
    }

    async fn run(
        &self,
        job: &RunJob,
        planned: &PlannedRun,
        loaded: Arc<Loaded>,
    ) -> Result<RunOutcome, AgentError> {
        // Noted durably before it starts: a crash from here on is found at the next start.
        self.journal
            .start(Started {
                invocation_id: planned.invocation.clone(),
                job: job.job.clone(),
                incident_id: job.incident.clone(),
                tenant: job.tenant.clone(),
                runbook: planned.runbook.clone(),
                sha256: planned.sha256.clone(),
                provenance: serde_json::to_string(&job.provenance).unwrap_or_default(),
                dry_run: job.dry_run,
                started_at_ms: now_ms(),
            })
            .await
            .map_err(AgentError::Journal)?;
        let (rt, policy) = (self.runtime.clone(), self.policy.clone());
        let opts = RunOptions {
            params: planned.params.clone(),
            dry_run: job.dry_run,
            invocation_id: Some(planned.invocation.clone()),
        };
        let inv = tokio::task::spawn_blocking(move || rt.invoke(&loaded, &policy, opts))
            .await
            .map_err(|e| AgentError::Worker(e.to_string()))?;
        let statement = statement(
            &inv,
            &self.key,
            crate::record::Context {
                tenant: &job.tenant,
                provenance: evidence_provenance(&job.provenance),
                incident_id: Some(&job.incident),
                guardrails: serde_json::to_value(&job.verdicts).ok(),
                publisher: self
                    .publishers
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&inv.sha256)
                    .cloned(),
            },
        );
        let status = run_status(inv.outcome.status);
        let envelope = statement.sign(&self.key)?.to_json().into_bytes();
        let leaf = ev::leaf_hash(&envelope);
        let index = self
            .log
            .append(ev::NewRecord {
                envelope,
                invocation_id: inv.invocation_id.clone(),
                host_id: self.host().to_string(),
                runbook: inv.runbook.clone(),
                status: status.to_string(),
                started_at_ms: inv.started_at_ms as i64,
            })
            .await?;
        self.journal.done(&inv.invocation_id).await;
        Ok(RunOutcome {
            invocation: inv.invocation_id,
            runbook: inv.runbook,
            status,
            summary: inv.outcome.summary,
            dry_run: inv.dry_run,
            record: LogRef {
                origin: self.origin.clone(),
                index,
                leaf_hash: ev::hash_hex(&leaf),
            },
        })
    }

    /// Sign the refusal of a job into the log and answer with it. Nothing ran.
    /// Sign into this host's log that the component `name` (its bytes' sha256), found at
    /// `source`, was refused — unsigned, altered or not admitted by the trust policy —
    /// and is not loaded: `why`, in words.
    pub async fn refuse_component(
        &self,
        name: &str,
        sha256: &str,
        source: &str,
        why: &str,
    ) -> Result<(), AgentError> {
        self.record_component(ComponentRecord {
            invocation_id: uuid::Uuid::now_v7().to_string(),
            name,
            sha256,
            status: "refused",
            summary: format!("component refused, not loaded: {why}"),
            provenance: ev::Provenance::Undecided {
                reason: format!("the host's trust policy: {why}"),
            },
            params: serde_json::json!({ "component": source }),
            version: "",
            publisher: None,
        })
        .await
        .map(|_| ())
    }

    /// Sign a record about a component (loaded, swapped, refused) into this host's log;
    /// its index and leaf hash.
    pub(crate) async fn record_component(
        &self,
        r: ComponentRecord<'_>,
    ) -> Result<LogRef, AgentError> {
        let now = now_ms();
        let at = ev::rfc3339_ms(now.max(0) as u64);
        let statement = ev::Statement::new(
            r.name,
            r.sha256,
            ev::Invocation {
                invocation_id: r.invocation_id.clone(),
                tenant: self.tenant.clone(),
                host_id: self.host().to_string(),
                key_id: self.key.verifying_key().key_id_hex(),
                provenance: r.provenance,
                runbook_version: r.version.to_string(),
                grant_digest: None,
                grant: None,
                params: r.params,
                trace: serde_json::json!([]),
                outcome: serde_json::json!({"status": r.status, "summary": r.summary, "details": {}}),
                started_at: at.clone(),
                ended_at: at,
                duration_us: 0,
                fuel_consumed: 0,
                dry_run: false,
                incident_id: None,
                guardrails: None,
                publisher: r.publisher,
            },
        );
        let envelope = statement.sign(&self.key)?.to_json().into_bytes();
        let leaf = ev::leaf_hash(&envelope);
        let index = self
            .log
            .append(ev::NewRecord {
                envelope,
                invocation_id: r.invocation_id,
                host_id: self.host().to_string(),
                runbook: r.name.to_string(),
                status: r.status.into(),
                started_at_ms: now,
            })
            .await?;
        Ok(LogRef {
            origin: self.origin.clone(),
            index,
            leaf_hash: ev::hash_hex(&leaf),
        })
    }

    pub(crate) async fn refuse(
        &self,
        job: Option<&RunJob>,
        why: &str,
        now_ms: i64,
    ) -> Result<RunReport, AgentError> {
        let at = now_ms.max(0) as u64;
        let job_id = job.map_or("", |j| j.job.as_str());
        let statement = ev::Statement::new(
            "runwarden-job",
            "",
            ev::Invocation {
                publisher: None,
                invocation_id: uuid::Uuid::now_v7().to_string(),
                tenant: job.map_or_else(|| self.tenant.clone(), |j| j.tenant.clone()),
                host_id: self.host().to_string(),
                key_id: self.key.verifying_key().key_id_hex(),
                provenance: ev::Provenance::Undecided {
                    reason: format!("job refused by the agent: {why}"),
                },
                runbook_version: String::new(),
                grant_digest: None,
                grant: None,
                params: serde_json::json!({
                    "job": job_id,
                    "runs": job.map(|j| j.runs.iter().map(|r| serde_json::json!({
                        "invocation": r.invocation, "runbook": r.runbook, "sha256": r.sha256,
                    })).collect::<Vec<_>>()),
                }),
                trace: serde_json::json!([]),
                outcome: serde_json::json!({"status": "refused", "summary": why, "details": {}}),
                started_at: ev::rfc3339_ms(at),
                ended_at: ev::rfc3339_ms(at),
                duration_us: 0,
                fuel_consumed: 0,
                dry_run: false,
                incident_id: job.map(|j| j.incident.clone()),
                guardrails: None,
            },
        );
        let envelope = statement.sign(&self.key)?.to_json().into_bytes();
        self.log
            .append(ev::NewRecord {
                envelope,
                invocation_id: statement.predicate.invocation_id.clone(),
                host_id: self.host().to_string(),
                runbook: "runwarden-job".into(),
                status: "refused".into(),
                started_at_ms: now_ms,
            })
            .await?;
        Ok(RunReport {
            job: job_id.to_string(),
            incident: job.map_or_else(String::new, |j| j.incident.clone()),
            host: self.host().to_string(),
            runs: Vec::new(),
            refused: Some(why.to_string()),
            deployed: None,
        })
    }
}

/// A record about a component, as [`Executor::record_component`] signs it.
pub(crate) struct ComponentRecord<'a> {
    pub invocation_id: String,
    pub name: &'a str,
    pub sha256: &'a str,
    pub status: &'static str,
    pub summary: String,
    pub provenance: ev::Provenance,
    pub params: serde_json::Value,
    pub version: &'a str,
    pub publisher: Option<String>,
}

/// The runtime's outcome in the wire vocabulary.
pub fn run_status(s: Status) -> RunStatus {
    match s {
        Status::Healed => RunStatus::Healed,
        Status::NoOp => RunStatus::NoOp,
        Status::Failed => RunStatus::Failed,
        Status::Refused => RunStatus::Refused,
        Status::InvalidParams => RunStatus::InvalidParams,
        Status::Timeout => RunStatus::Timeout,
        Status::OutOfFuel => RunStatus::OutOfFuel,
        Status::OutOfMemory => RunStatus::OutOfMemory,
        Status::Trapped => RunStatus::Trapped,
        Status::OutputLimit => RunStatus::OutputLimit,
    }
}

/// The job's provenance as its records state it.
fn evidence_provenance(p: &Provenance) -> ev::Provenance {
    match p.clone() {
        Provenance::L1 {
            rule_id,
            rule_sha256,
        } => ev::Provenance::L1 {
            rule_id,
            rule_sha256,
        },
        Provenance::L2 {
            provider,
            model,
            prompt_sha256,
            response_sha256,
            confidence,
            rationale,
        } => ev::Provenance::L2 {
            provider,
            model,
            prompt_sha256,
            response_sha256,
            confidence,
            rationale,
        },
        Provenance::L3 { approver } => ev::Provenance::L3 { approver },
    }
}

/// Serve the jobs that arrive on `link` until its control-plane end is dropped, each in
/// its own task. A job the log could not record is answered with nothing (the control
/// plane sees the link's error and escalates; the job asked again is answered from the
/// log or run then).
pub async fn serve(executor: Arc<Executor>, mut link: impl runwarden_bus::Jobs) {
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(delivery) = link.next().await {
        let executor = executor.clone();
        tasks.spawn(async move {
            let now = now_ms();
            match executor
                .execute_with(&delivery.job, now, delivery.blobs())
                .await
            {
                Ok(report) => delivery.reply(report).await,
                Err(e) => {
                    eprintln!("runwarden agent {}: {e}", executor.host());
                    delivery.abandon().await
                }
            }
        });
        // Reap finished tasks as we go, so the set does not grow with history.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// Milliseconds since the Unix epoch, by this host's clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The agent of `runwarden up`, in the control plane's process: `runbooks` (component
/// bytes) loaded on `runtime`, runs a crash cut off recorded (see
/// [`Executor::recover`]), then serving `link` in a task of its own until the link's
/// control-plane end is dropped. The executor is returned so that the same one can serve
/// another link too (`runwarden agent run`: its own control plane's and the fleet's).
pub async fn spawn_local(
    runtime: Arc<Runtime>,
    mut config: AgentConfig,
    runbooks: &[Vec<u8>],
    link: impl runwarden_bus::Jobs,
) -> Result<Arc<Executor>, AgentError> {
    for bytes in runbooks {
        config.runbooks.push(runtime.load(bytes)?);
    }
    let executor = Arc::new(Executor::open(runtime, config).await?);
    let interrupted = executor.recover().await?;
    if interrupted > 0 {
        eprintln!(
            "runwarden agent {}: {interrupted} runs were cut off by a stop and are recorded `interrupted`",
            executor.host()
        );
    }
    // What was deployed before this start, admitted again, before any job is taken.
    let deployed = executor.load_deployed().await?;
    if deployed > 0 {
        eprintln!(
            "runwarden agent {}: {deployed} deployed component(s) loaded",
            executor.host()
        );
    }
    tokio::spawn(serve(executor.clone(), link));
    Ok(executor)
}
