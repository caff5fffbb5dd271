//! The incident pipeline: intake → L1 rules → guardrails → a signed job → evidence.
//!
//! A [`Controller`] decides; it runs nothing. It serves one host (its policy and labels),
//! the deployed runbooks and rule sets; what the guardrails admit goes to the host's
//! agent as a job signed with the control plane's key ([`ControlConfig::dispatch`]), and
//! the agent's report (each run signed with the host key) concludes the incident. Every
//! decision not to act — and why — is a record the controller signs itself.

#[path = "agent.rs"]
pub(crate) mod agent;
#[path = "components.rs"]
pub(crate) mod components;
#[path = "deploy.rs"]
pub(crate) mod deploy;
#[path = "enroll.rs"]
pub(crate) mod enroll;
#[path = "flywheel.rs"]
pub(crate) mod flywheel;
#[path = "handup.rs"]
pub(crate) mod handup;

use crate::escalation::{Escalation, SlaConfig};
use crate::evidence::{self as evrec, Context as EvContext, Subject};
use crate::guardrails::{GuardrailConfig, HighRisk, Windows};
use crate::incident::Incident;
use crate::notify::{Notice, Notifier};
use crate::planner::{self, Backend, PlannerConfig, catalog};
use crate::registry::{HostConfig, Registry};
use crate::store::{
    ControlStore, EscalationRow, IncidentRow, Pending, RunRow, StoredEscalation, TokenRow, Write,
};
use runwarden_bus::Dispatch;
use runwarden_evidence as ev;
use runwarden_proto::bus::{JOB_PAYLOAD_TYPE, PlannedRun, RunJob, RunReport};
use runwarden_proto::{
    ActionRecord, DecisionRecord, EscalationRef, EscalationState, Guardrail as G, HandedUpFor,
    IncidentRecord, IncidentStatus as St, PlannerRecord, RuleListing, RunRecord, RunStatus,
    RunbookInfo, Scope, Tier, Verdict, VerdictKind as V,
};
use runwarden_runtime::{Loaded, Risk, RuleSet, Runtime};

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What can go wrong outside an incident's own outcome.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The incident is malformed.
    #[error(transparent)]
    Invalid(#[from] crate::IncidentError),
    /// The incident names another tenant than the caller's.
    #[error("the incident's tenant {given:?} is not yours ({caller:?}): omit it or use your own")]
    WrongTenant {
        /// In the body.
        given: String,
        /// The caller's.
        caller: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The evidence log failed: nothing is reported done without its evidence.
    #[error("evidence: {0}")]
    Evidence(#[from] ev::Error),
    /// The controller is shutting down.
    #[error("runwarden is shutting down: retry against the restarted service")]
    ShuttingDown,
    /// No such thing for this tenant.
    #[error("{0}")]
    NotFound(String),
    /// It cannot be done in the state things are in.
    #[error("{0}")]
    Conflict(String),
    /// A request (other than an incident) is malformed: what, and what to do.
    #[error("{0}")]
    BadRequest(String),
    /// Setup failed.
    #[error("{0}")]
    Setup(String),
}

impl ControlError {
    /// Whether the store or the evidence log failed because its disk (or SQLite's
    /// `max_page_count`) is full: the caller can say so and retry later, and nothing
    /// acknowledged is lost (see [`Controller::conclude_stalled`]).
    pub fn is_disk_full(&self) -> bool {
        if !matches!(self, ControlError::Store(_) | ControlError::Evidence(_)) {
            return false;
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && (io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28))
            {
                return true;
            }
            // SQLite says "database or disk is full"; PostgreSQL (53100) and the OS "No
            // space left on device". Store errors carry the driver's text.
            let text = e.to_string();
            if text.contains("database or disk is full") || text.contains("No space left on device")
            {
                return true;
            }
            cause = e.source();
        }
        false
    }
}

type Result<T, E = ControlError> = std::result::Result<T, E>;

/// How often a control plane renews the leases of the incidents it works on, ms.
pub const LEASE_RENEW_MS: i64 = 10_000;
/// How long a lease lasts unrenewed before another process may take the incident, ms
/// (several renewals: a busy moment does not lose it).
pub const LEASE_MS: i64 = 45_000;

/// Everything a [`Controller`] needs.
pub struct ControlConfig {
    /// Evidence + control-plane database: a `postgres://` URL or a SQLite file.
    pub database: String,
    /// Where host signing keys live (`DATA_DIR/signing-keys`).
    pub data_dir: std::path::PathBuf,
    /// The hosts served at start (`runwarden up`: its own; a server adds each host as
    /// its agent enrolls).
    pub hosts: Vec<HostConfig>,
    /// Whose key signs what this control plane records (decisions, checkpoints).
    pub signer: LogSigner,
    /// Guardrail settings.
    pub guardrails: GuardrailConfig,
    /// The L2 model, if one is configured; else the offline planner.
    pub llm: Option<planner::llm::LlmConfig>,
    /// Planner settings.
    pub planner: PlannerConfig,
    /// SLA deadlines of escalations.
    pub sla: SlaConfig,
    /// How jobs reach the host's agent (`runwarden up`: in process). Jobs are signed
    /// with the control plane's key, `DATA_DIR/control-key/` (created on first start):
    /// agents trust [`Controller::control_public_key`].
    pub dispatch: Arc<dyn Dispatch>,
    /// An agent's own control plane (`runwarden agent run`): it finishes at L1 what its
    /// rules and guardrails allow, and hands everything else — no rule matched, or a
    /// guardrail wants a human — up to the fleet's control plane (status `handed-up`,
    /// [`Controller::hand_ups`]) instead of planning or escalating it here.
    pub hand_up: bool,
}

/// Whose key signs a control plane's log.
#[derive(Clone, Debug)]
pub enum LogSigner {
    /// The key of this host (`runwarden up`: the control plane and the host's agent share
    /// one log, signed by the host's key, `DATA_DIR/signing-keys/HOST.key`).
    Host(String),
    /// The control plane's own key (`DATA_DIR/control-key/`): a fleet server, whose log
    /// holds only what it decided; each host signs its runs into its own log.
    Control,
}

/// A rule set and the tenant whose incidents it decides (`None`: every tenant's).
struct Scoped {
    tenant: Option<String>,
    set: Arc<RuleSet>,
}

/// What a tier chose, as the guardrails see it.
struct Chosen {
    tier: Tier,
    actions: Vec<ActionRecord>,
    dry_run: bool,
    cooldown_secs: Option<u32>,
    provenance: ev::Provenance,
}

/// A plan that escalates: why, and its provenance.
type Unplanned = (String, ev::Provenance);

/// An authenticated API caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Token id.
    pub token_id: String,
    /// The tenant the token is bound to.
    pub tenant: String,
    /// `read`, `operate` or `admin`.
    pub scope: Scope,
}

/// Counters for `/metrics`, by tenant: each tenant's tokens see their own.
#[derive(Default)]
struct Metrics {
    /// By (tenant, status).
    incidents: Mutex<BTreeMap<(String, String), u64>>,
    /// By (tenant, status).
    runs: Mutex<BTreeMap<(String, String), u64>>,
    /// By tenant: (sum of µs, count).
    l1_latency: Mutex<BTreeMap<String, (u64, u64)>>,
}

/// The control plane and local agent.
pub struct Controller {
    runtime: Arc<Runtime>,
    store: ControlStore,
    evidence: ev::Store,
    key: ev::SigningKey,
    origin: String,
    /// Signs the jobs agents run.
    control_key: ev::SigningKey,
    /// Where jobs go: the host's agent.
    dispatch: Arc<dyn Dispatch>,
    hosts: Registry,
    guardrails: GuardrailConfig,
    runbooks: BTreeMap<String, Arc<Loaded>>,
    /// Per host, what a deployment made it run instead of (or beside) `runbooks`.
    pub(crate) host_runbooks:
        std::sync::RwLock<std::collections::HashMap<String, BTreeMap<String, Arc<Loaded>>>>,
    /// Per host, the L1 rule sets deployed to it by name: they decide its incidents
    /// before the configured and promoted ones.
    pub(crate) host_rule_sets:
        std::sync::RwLock<std::collections::HashMap<String, BTreeMap<String, Arc<RuleSet>>>>,
    /// Woken when a deployment is made.
    deployments_wake: Arc<tokio::sync::Notify>,
    /// (host, component) being sent now.
    deploying: Mutex<std::collections::HashSet<(String, String)>>,
    /// (host, name, sha256) of deployed components that did not load here (said once).
    pub(crate) unloadable: Mutex<std::collections::HashSet<(String, String, String)>>,
    /// This process, as it claims the deployments it drives (several control planes may
    /// share one database).
    pub(crate) instance: String,
    /// Whether what hosts run by deployment was put back into their catalogs.
    deployments_restored: std::sync::atomic::AtomicBool,
    /// The configured rule sets, then the flywheel's promoted rules (each for its tenant).
    rule_sets: std::sync::RwLock<Vec<Scoped>>,
    /// Signs the rule set of each tenant's promoted rules (`DATA_DIR/flywheel-publisher.key`).
    pub(crate) flywheel_publisher: std::sync::OnceLock<ev::SigningKey>,
    /// One promotion at a time.
    promoting: tokio::sync::Mutex<()>,
    /// Where promoted rules are written (`DATA_DIR/rules`).
    promoted_dir: std::path::PathBuf,
    planner: Backend,
    planner_config: PlannerConfig,
    sla: SlaConfig,
    windows: Mutex<Windows>,
    /// Serializes guardrail checks with the in-memory note of the runs they admit, so two
    /// incidents cannot both pass a cooldown or the breaker before either is noted.
    admission: tokio::sync::Mutex<()>,
    in_flight: tokio::sync::RwLock<bool>,
    metrics: Metrics,
    /// Tells webhooks about escalations, in the background.
    notifier: Notifier,
    /// Escalations whose breach was announced by this process (the notifications table
    /// remembers them across restarts once a delivery ended).
    breaches_announced: Mutex<std::collections::HashSet<String>>,
    /// Gaps and forks of hosts' logs already raised (host, kind, index).
    raised: Mutex<std::collections::HashSet<(String, &'static str, u64)>>,
    /// Makes each enrolling agent's bus credentials, when set.
    minter: std::sync::OnceLock<Arc<enroll::CredentialMinter>>,
    /// Woken when an enrollment revoked a host's earlier bus users.
    bus_users_revoked: Arc<tokio::sync::Notify>,
    /// What the process adds to its metrics (an agent: its link to the fleet).
    gauges: std::sync::OnceLock<Arc<enroll::Gauges>>,
    /// Incidents this process stored as `processing` and has not finished: from before
    /// their `processing` row is written until after their final row is queued. Any other
    /// `processing` row of this host is stalled (see [`Controller::conclude_stalled`]).
    active: Mutex<std::collections::HashSet<String>>,
    /// See [`ControlConfig::hand_up`].
    hand_up: bool,
}

/// Removes an incident from [`Controller::active`] however its processing ends.
struct Active<'a> {
    set: &'a Mutex<std::collections::HashSet<String>>,
    id: String,
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Run blocking sandbox work off the async workers, on tokio's blocking pool. (Measured
/// against `block_in_place`, which hands the worker's queue to another thread on every
/// call: 4,570 against 3,800 incidents/s through the HTTP API.) Never inline on a worker:
/// wasmtime-wasi's synchronous bindings enter the runtime with `block_on` for streams and
/// polls, which panics there.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ControlError::Setup(format!("sandbox task: {e}")))
}

fn ev_ms(rfc3339: &str) -> i64 {
    crate::incident::parse_rfc3339_ms(rfc3339).unwrap_or_else(now_ms)
}

impl Controller {
    /// Open the database, load the signing key, rebuild the guardrail windows, and serve
    /// `runbooks` (component bytes) and `rule_sets` (rule component bytes) on `runtime`.
    pub async fn start(
        config: ControlConfig,
        runtime: Arc<Runtime>,
        runbooks: Vec<Vec<u8>>,
        rule_sets: Vec<Vec<u8>>,
    ) -> Result<Controller> {
        let (evidence, store) = evrec::open_checked(&config.database, &config.data_dir).await?;
        let notifier = Notifier::start(&config.sla.webhooks, store.clone())
            .map_err(|e| ControlError::Setup(e.to_string()))?;
        let (control_key, _) = evrec::control_key(&config.data_dir)?;
        let key = match &config.signer {
            LogSigner::Host(host_id) => evrec::host_key(&config.data_dir, None, host_id)?.0,
            LogSigner::Control => control_key.clone(),
        };
        let origin = ev::log_origin(key.name());
        // The decisions and checkpoints this control plane signs go into its log: one
        // signer, checked at every start.
        evidence.claim(&origin, &key.verifying_key()).await?;
        let mut deployed = BTreeMap::new();
        for bytes in runbooks {
            let l = runtime
                .load(&bytes)
                .map_err(|e| ControlError::Setup(format!("deploying a runbook: {e}")))?;
            deployed.insert(l.manifest().name.clone(), l);
        }
        let mut sets = Vec::new();
        for bytes in rule_sets {
            let set = runtime
                .load_rules(&bytes)
                .map_err(|e| ControlError::Setup(format!("deploying a rule set: {e}")))?;
            for r in set.rules() {
                for rb in &r.runbooks {
                    if !deployed.contains_key(rb) {
                        return Err(ControlError::Setup(format!(
                            "rule {} (rule set {}) names runbook {rb:?}, which is not deployed",
                            r.id,
                            &set.sha256()[..12]
                        )));
                    }
                }
            }
            sets.push(Scoped { tenant: None, set });
        }
        // Rules the flywheel promoted, after the configured ones, each for its tenant.
        let promoted_dir = config.data_dir.join("rules");
        let files = flywheel::promoted(&promoted_dir)
            .map_err(|e| ControlError::Setup(format!("reading {}: {e}", promoted_dir.display())))?;
        for (tenant, f) in files {
            let yaml = std::fs::read_to_string(&f)
                .map_err(|e| ControlError::Setup(format!("reading {}: {e}", f.display())))?;
            let set = flywheel::compile_rules(&runtime, &deployed, &f.display().to_string(), &yaml)
                .map_err(|e| {
                    ControlError::Setup(format!(
                        "a promoted rule no longer compiles: {e} (fix or remove {})",
                        f.display()
                    ))
                })?;
            sets.push(Scoped { tenant, set });
        }
        // Rules see the inventory as host labels; configured labels win.
        let hosts = Registry::default();
        for host in config.hosts {
            hosts.insert(host).map_err(ControlError::Setup)?;
        }
        let planner = match config.llm {
            Some(llm) => Backend::Llm(Box::new(
                planner::llm::LlmClient::new(llm)
                    .map_err(|e| ControlError::Setup(format!("the L2 planner: {e}")))?,
            )),
            None => Backend::Offline,
        };
        // Rebuild the windows from what the database remembers.
        let now = now_ms();
        let window_ms = (config.guardrails.repeat_window_secs * 1000) as i64;
        let mut windows = Windows::new(
            window_ms,
            crate::guardrails::KEEP_RUNS_MS.max((config.guardrails.cooldown_secs * 1000) as i64),
        );
        for (fp, at) in store.fingerprints_since(now - window_ms).await? {
            windows.see(&fp, at);
        }
        for a in store
            .actions_since(now - crate::guardrails::KEEP_RUNS_MS)
            .await?
        {
            windows.ran(&a.tenant, &a.host, &a.runbook, a.at_ms);
        }
        let controller = Controller {
            runtime,
            store,
            evidence,
            key,
            origin,
            control_key,
            dispatch: config.dispatch,
            hosts,
            guardrails: config.guardrails,
            runbooks: deployed,
            rule_sets: std::sync::RwLock::new(sets),
            flywheel_publisher: std::sync::OnceLock::new(),
            promoting: tokio::sync::Mutex::new(()),
            promoted_dir,
            planner,
            planner_config: config.planner,
            sla: config.sla,
            windows: Mutex::new(windows),
            admission: tokio::sync::Mutex::new(()),
            in_flight: tokio::sync::RwLock::new(false),
            metrics: Metrics::default(),
            notifier,
            breaches_announced: Mutex::default(),
            raised: Mutex::default(),
            host_runbooks: Default::default(),
            host_rule_sets: Default::default(),
            deployments_wake: Arc::default(),
            deploying: Mutex::default(),
            instance: uuid::Uuid::now_v7().to_string(),
            unloadable: Mutex::default(),
            deployments_restored: Default::default(),
            minter: std::sync::OnceLock::new(),
            bus_users_revoked: Arc::default(),
            gauges: std::sync::OnceLock::new(),
            active: Mutex::default(),
            hand_up: config.hand_up,
        };
        controller.load_enrolled().await?;
        // What a stop cut off: on SQLite every `processing` incident (one process owns
        // the database); on PostgreSQL only those whose lease expired — another server
        // may be working on the rest.
        let expired = controller
            .store
            .is_postgres()
            .then_some(std::time::Duration::from_millis(LEASE_MS as u64));
        controller
            .conclude_unfinished(
                expired,
                "runwarden stopped before it finished this incident: a human must decide (or resubmit)",
                "interrupted by a stop",
            )
            .await?;
        Ok(controller)
    }

    /// Incidents of this host that are `processing` but that nothing is working on —
    /// accepted (and acknowledged) when a write then failed, a full disk say — are
    /// escalated, with a record saying so, once the store takes writes again. Only those
    /// received more than `older_than` ago (a margin against an incident that starts and
    /// ends between the sweep's reads). Returns how many. `runwarden up` calls this
    /// periodically, so an acknowledged incident never stays `processing`.
    pub async fn conclude_stalled(&self, older_than: std::time::Duration) -> Result<usize> {
        self.conclude_unfinished(
            Some(older_than),
            "runwarden could not finish this incident (a write failed, e.g. a full disk): \
             a human must decide (or resubmit)",
            "a write failed while it was handled",
        )
        .await
    }

    /// Renew the leases of the incidents this process works on (every
    /// [`LEASE_RENEW_MS`]): another control-plane process sharing the database takes an
    /// incident for stalled only once its lease ([`LEASE_MS`]) lapsed.
    pub async fn renew_leases(&self) -> Result<()> {
        let ids: Vec<String> = self
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        Ok(self.store.renew(&ids, now_ms()).await?)
    }

    /// Escalate the served hosts' `processing` incidents that this process is not working
    /// on (all of them at start, when nothing is) and whose lease lapsed `older_than` ago.
    async fn conclude_unfinished(
        &self,
        older_than: Option<std::time::Duration>,
        reason: &str,
        note: &str,
    ) -> Result<usize> {
        let active = || {
            self.active
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        };
        let before = active();
        let mut stored = Vec::new();
        for host in self.hosts.all() {
            stored.extend(self.store.unfinished_incidents(host.id()).await?);
        }
        let after = active();
        let now = now_ms();
        let cutoff = older_than.map(|d| now - d.as_millis() as i64);
        let mut concluded = 0;
        for json in stored {
            let mut rec = parse_record(&json)?;
            let received_ms = ev_ms(&rec.received_at);
            if before.contains(&rec.id) || after.contains(&rec.id) {
                continue;
            }
            // Another process may be working on it (two servers on one PostgreSQL): only
            // one whose lease nobody renewed for `older_than` is taken, by one process.
            if let Some(c) = cutoff
                && !self.store.take_stale(&rec.id, c, now).await?
            {
                continue;
            }
            Self::end(&mut rec, Tier::L3, St::Escalated, reason);
            self.record_undecided(&mut rec, note, now_ms()).await?;
            self.save(&mut rec, received_ms).await?;
            concluded += 1;
        }
        Ok(concluded)
    }

    /// A service unit a runbook would act on that is not installed on this host, when the
    /// host is managed by systemd and its inventory lists every unit (a typo, or a unit
    /// of another host, is not acted on). Instances (`getty@tty1.service`) and globs are
    /// not checked.
    fn unknown_service(
        host: &HostConfig,
        l: &Loaded,
        params: &serde_json::Value,
    ) -> Option<String> {
        let inv = &host.inventory;
        let systemd = matches!(
            host.policy.services,
            runwarden_runtime::ServiceBackend::Systemd
        );
        if !systemd
            || inv.init != "systemd"
            || inv.services.is_empty()
            || inv.services.len() >= crate::inventory::MAX_SERVICES
        {
            return None;
        }
        for cap in &l.manifest().capabilities {
            let runwarden_runtime::Capability::Service(pattern) = cap else {
                continue;
            };
            let unit = match pattern.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(param) => match params.get(param).and_then(|v| v.as_str()) {
                    Some(u) => u,
                    None => continue,
                },
                None => pattern.as_str(),
            };
            if unit.contains(['@', '*', '?']) || inv.services.iter().any(|s| s == unit) {
                continue;
            }
            return Some(format!(
                "service {unit} is not installed on {} (its {} unit files do not include it; \
                 restart runwarden after installing a unit)",
                host.id(),
                inv.services.len()
            ));
        }
        None
    }

    /// The rule sets that decide `tenant`'s incidents (every set, with `None`), in
    /// evaluation order.
    fn rule_sets(&self, tenant: Option<&str>) -> Vec<Arc<RuleSet>> {
        self.rule_sets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|s| tenant.is_none() || s.tenant.is_none() || s.tenant.as_deref() == tenant)
            .map(|s| s.set.clone())
            .collect()
    }

    /// The key agents check jobs against.
    pub fn control_public_key(&self) -> ev::VerifyingKey {
        self.control_key.verifying_key()
    }

    /// The evidence log (`runwarden up`'s agent appends its host's records to it).
    pub fn evidence_log(&self) -> ev::Store {
        self.evidence.clone()
    }

    /// The first host served, by id (`runwarden up`'s own, its only one).
    pub fn local_host(&self) -> Option<Arc<HostConfig>> {
        self.hosts.all().into_iter().next()
    }

    /// Serve `host` from now on (a fleet agent enrolled), or update its entry. Refused if
    /// the host id belongs to another tenant.
    pub fn add_host(&self, host: HostConfig) -> Result<()> {
        self.hosts
            .insert(host)
            .map(drop)
            .map_err(ControlError::Conflict)
    }

    /// Every host served, in id order.
    pub fn all_hosts(&self) -> Vec<Arc<HostConfig>> {
        self.hosts.all()
    }

    /// `tenant`'s hosts, in id order.
    pub fn hosts_of(&self, tenant: &str) -> Vec<Arc<HostConfig>> {
        self.hosts.of_tenant(tenant)
    }

    /// Whether `tenant` owns a host here. A tenant without one is answered as if nothing
    /// existed: no incidents, catalog, rules, metrics or log.
    pub fn owns(&self, tenant: &str) -> bool {
        self.hosts.has_tenant(tenant)
    }

    /// `Ok` when `tenant` owns a host here, else the not-found answer of a tenant without
    /// one (the same whether other tenants have hosts or not).
    pub fn check_owner(&self, tenant: &str) -> Result<()> {
        if self.owns(tenant) {
            Ok(())
        } else {
            Err(ControlError::NotFound(format!(
                "tenant {tenant} has no host on this runwarden: use a token of the tenant that owns the host"
            )))
        }
    }

    /// `tenant`'s host `id`, or the not-found answer of a host that does not exist (the
    /// same for another tenant's host).
    fn owned_host(&self, tenant: &str, id: &str) -> Result<Arc<HostConfig>> {
        self.hosts.owned(tenant, id).ok_or_else(|| {
            ControlError::NotFound(format!(
                "no host {id:?} for tenant {tenant}: submit incidents for a host your tenant owns (an agent enrolls a host)"
            ))
        })
    }

    /// The host an MCP client of `tenant` acts on: the tenant's only host.
    fn tenant_host(&self, tenant: &str) -> Result<Arc<HostConfig>> {
        let hosts = self.hosts.of_tenant(tenant);
        match hosts.as_slice() {
            [one] => Ok(one.clone()),
            [] => self.check_owner(tenant).and_then(|()| {
                Err(ControlError::NotFound(format!(
                    "tenant {tenant} has no host"
                )))
            }),
            many => Err(ControlError::Conflict(format!(
                "tenant {tenant} has {} hosts here: agent requests over MCP act on a tenant's only host",
                many.len()
            ))),
        }
    }

    /// Whether a record of `tenant` about `host` is hidden from it: the host is served
    /// here and belongs to another tenant (records written before hosts had owners).
    fn hidden(&self, tenant: &str, host: &str) -> bool {
        self.hosts.get(host).is_some_and(|h| h.tenant != tenant)
    }

    /// The L2 planner, in words (`offline (lexical retrieval)`, `openai gpt-4o-mini`).
    pub fn planner(&self) -> String {
        match &self.planner {
            Backend::Offline => "offline (lexical retrieval)".into(),
            Backend::Llm(c) => format!("{} {}", c.provider().as_str(), c.model()),
        }
    }

    /// `host` as a planner is told about it: the inventory, and the service units present
    /// that the policy grants (at most 40).
    fn host_line(host: &HostConfig) -> String {
        let inv = &host.inventory;
        let granted: Vec<&str> = inv
            .services
            .iter()
            .filter(|u| {
                runwarden_runtime::Grant::resolve(
                    &[runwarden_runtime::Capability::Service((*u).clone())],
                    &serde_json::json!({}),
                    &host.policy,
                )
                .is_ok()
            })
            .take(40)
            .map(String::as_str)
            .collect();
        format!(
            "{} ({}); service units present that runbooks may touch: {}",
            host.id(),
            inv.describe(),
            if granted.is_empty() {
                "none known".to_string()
            } else {
                granted.join(", ")
            }
        )
    }

    /// The log's origin line (`runwarden/HOST`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The evidence log.
    pub fn evidence(&self) -> &ev::Store {
        &self.evidence
    }

    /// The public key evidence is signed with.
    pub fn verifying_key(&self) -> ev::VerifyingKey {
        self.key.verifying_key()
    }

    /// Deployed runbooks, by name.
    pub fn runbooks(&self) -> Vec<RunbookInfo> {
        let mut out: Vec<RunbookInfo> = self
            .runbooks
            .values()
            .map(|l| {
                let m = l.manifest();
                RunbookInfo {
                    name: m.name.clone(),
                    version: m.version.clone(),
                    summary: m.summary.clone(),
                    risk: match m.risk {
                        Risk::Low => runwarden_proto::Risk::Low,
                        Risk::Medium => runwarden_proto::Risk::Medium,
                        Risk::High => runwarden_proto::Risk::High,
                    },
                    sha256: l.sha256().into(),
                    params_schema: m.params_schema.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Deployed rules, in evaluation order: every tenant's.
    pub fn rules(&self) -> Vec<RuleListing> {
        self.rules_for(None)
    }

    /// The rules that decide `tenant`'s incidents (all of them, with `None`).
    pub fn rules_for(&self, tenant: Option<&str>) -> Vec<RuleListing> {
        self.rule_sets(tenant)
            .iter()
            .flat_map(|s| {
                s.rules().iter().map(|r| RuleListing {
                    id: r.id.clone(),
                    summary: r.summary.clone(),
                    runbooks: r.runbooks.clone(),
                    rule_sha256: s.sha256().into(),
                })
            })
            .collect()
    }

    /// Submit an incident for `tenant` and carry it to its end: decided, guarded, run,
    /// recorded. Returns once every evidence record about it is durable.
    /// (Unlike [`Controller::accept`], nothing is stored before processing starts: the
    /// caller waits for the result.)
    pub async fn submit(&self, tenant: &str, incident: Incident) -> Result<IncidentRecord> {
        let rec = self.prepare(tenant, incident).await?;
        self.complete(rec).await
    }

    /// Validate an incident for `tenant`, give it an id and store it as `processing`.
    /// Follow with [`Controller::complete`].
    pub async fn accept(&self, tenant: &str, incident: Incident) -> Result<IncidentRecord> {
        let mut rec = self.prepare(tenant, incident).await?;
        self.store_accepted(&mut rec).await?;
        Ok(rec)
    }

    /// [`Controller::submit`] for an API caller: the incident is `caller`'s tenant's, and
    /// `caller`'s token is recorded as its requester (which may not approve it).
    pub async fn submit_as(&self, caller: &Caller, incident: Incident) -> Result<IncidentRecord> {
        let mut rec = self.prepare(&caller.tenant, incident).await?;
        rec.requested_by = Some(caller.token_id.clone());
        self.complete(rec).await
    }

    /// [`Controller::accept`] for an API caller, recording its token as the requester.
    pub async fn accept_as(&self, caller: &Caller, incident: Incident) -> Result<IncidentRecord> {
        let mut rec = self.prepare(&caller.tenant, incident).await?;
        rec.requested_by = Some(caller.token_id.clone());
        self.store_accepted(&mut rec).await?;
        Ok(rec)
    }

    /// Store an accepted incident as `processing`. If that fails it was not accepted, and
    /// nothing is working on it.
    async fn store_accepted(&self, rec: &mut IncidentRecord) -> Result<()> {
        let received_ms = ev_ms(&rec.received_at);
        let saved = self.save(rec, received_ms).await;
        if saved.is_err() {
            self.active
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&rec.id);
        }
        saved
    }

    /// Validate an incident for `tenant` and give it an id.
    async fn prepare(&self, tenant: &str, mut incident: Incident) -> Result<IncidentRecord> {
        if *self.in_flight.read().await {
            return Err(ControlError::ShuttingDown);
        }
        if incident.tenant.is_empty() {
            incident.tenant = tenant.to_string();
        } else if incident.tenant != tenant {
            return Err(ControlError::WrongTenant {
                given: incident.tenant.clone(),
                caller: tenant.to_string(),
            });
        }
        incident.validate()?;
        // A host belongs to one tenant: every host a tenant does not own is answered
        // alike, whether it exists for another tenant or not at all. A host enrolled
        // through another server on the same database since the last sync is read now.
        if self.hosts.get(&incident.host).is_none() {
            self.find_host(&incident.host).await?;
        }
        self.owned_host(tenant, &incident.host)?;
        let received_ms = now_ms();
        let rec = IncidentRecord {
            id: evrec::time_ordered_id(),
            tenant: tenant.to_string(),
            fingerprint: incident.fingerprint(),
            received_at: ev::rfc3339_ms(received_ms as u64),
            incident,
            tier: Tier::L1,
            status: St::Processing,
            reason: String::new(),
            decision: None,
            guardrails: Vec::new(),
            runs: Vec::new(),
            evidence: Vec::new(),
            escalation: None,
            requested_by: None,
            handed_up: None,
            opening: None,
        };
        Ok(rec)
    }

    /// Carry an accepted incident to its end. Shutdown waits for every call in progress;
    /// an incident accepted but not yet started when shutdown began is escalated (and
    /// recorded) rather than left `processing`.
    pub async fn complete(&self, rec: IncidentRecord) -> Result<IncidentRecord> {
        self.finish(rec, None).await
    }

    /// [`Controller::complete`], with what to do already chosen (`directed`: an agent's
    /// request) or to be decided by the tiers (`None`).
    async fn finish(
        &self,
        mut rec: IncidentRecord,
        directed: Option<Chosen>,
    ) -> Result<IncidentRecord> {
        let guard = self.in_flight.read().await;
        let _active = Active {
            set: &self.active,
            id: rec.id.clone(),
        };
        let started = std::time::Instant::now();
        let received_ms = ev_ms(&rec.received_at);
        if *guard {
            Self::end(
                &mut rec,
                Tier::L3,
                St::Escalated,
                "runwarden was stopping before it could act: a human must decide (or resubmit)",
            );
            self.record_undecided(&mut rec, "shutting down", now_ms())
                .await?;
            self.save(&mut rec, received_ms).await?;
            return Ok(rec);
        }
        self.process(&mut rec, now_ms(), directed).await?;
        // The result is ready once its evidence is durable: the incident's row is queued
        // for the writer, not waited for. Every read of incidents waits for the writes
        // queued before it, so no caller sees the row older than this answer. A crash in
        // the next moments may lose the row, never the evidence (which names the incident).
        drop(self.queue_save(&mut rec, received_ms).await?);
        *self
            .metrics
            .incidents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((rec.tenant.clone(), rec.status.to_string()))
            .or_default() += 1;
        if rec.decision.is_some() {
            let mut l1 = self
                .metrics
                .l1_latency
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let (sum, count) = l1.entry(rec.tenant.clone()).or_default();
            *sum += started.elapsed().as_micros() as u64;
            *count += 1;
        }
        drop(guard);
        Ok(rec)
    }

    async fn save(&self, rec: &mut IncidentRecord, received_ms: i64) -> Result<()> {
        Ok(self.queue_save(rec, received_ms).await?.wait().await?)
    }

    /// Queue the incident's row; an incident that ended at L3 also gets its escalation
    /// (once: the row is written only if the incident has none).
    async fn queue_save(&self, rec: &mut IncidentRecord, received_ms: i64) -> Result<Pending> {
        if rec.status == St::Processing {
            self.active
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(rec.id.clone());
        }
        let mut writes = Vec::with_capacity(2);
        let mut opened = None;
        // An agent's own control plane escalates nothing itself: a human decides at the
        // fleet's control plane, which it hands the incident to.
        if self.hand_up
            && rec.tier == Tier::L3
            && matches!(rec.status, St::Escalated | St::AwaitingApproval)
        {
            rec.handed_up = Some(if rec.status == St::AwaitingApproval {
                HandedUpFor::Approval
            } else {
                HandedUpFor::Escalation
            });
            rec.status = St::HandedUp;
            rec.reason = handup::handed_up(&rec.reason);
        }
        if self.opens_escalation(rec) {
            self.open_escalation(rec, now_ms());
        }
        if let Some(open) = rec.opening.take() {
            let proposal = rec
                .decision
                .as_ref()
                .and_then(|d| d.actions.first())
                .map(|a| serde_json::json!({"runbook": a.runbook, "params": a.params}).to_string())
                .unwrap_or_default();
            let ms = |t: &str| ev_ms(t);
            let row = EscalationRow {
                id: open.id.clone(),
                incident_id: rec.id.clone(),
                tenant: rec.tenant.clone(),
                host: rec.incident.host.clone(),
                severity: rec.incident.severity.as_str().into(),
                reason: rec.reason.clone(),
                proposal,
                created_at_ms: ms(&open.opened_at),
                sla_deadline_ms: ms(&open.sla_deadline),
            };
            opened = Some(Notice::opened(&row, &rec.incident));
            writes.push(Write::Escalation(row));
        }
        let record = serde_json::to_string(rec).expect("an incident record serializes");
        writes.push(Write::Incident(IncidentRow {
            id: rec.id.clone(),
            tenant: rec.tenant.clone(),
            host: rec.incident.host.clone(),
            fingerprint: rec.fingerprint.clone(),
            status: rec.status.to_string(),
            received_at_ms: received_ms,
            updated_at_ms: now_ms(),
            record,
        }));
        let pending = self.store.queue(writes).await?;
        // After the row is queued: a webhook's receiver that reads it back finds it.
        if let Some(notice) = opened {
            self.notifier.notify(notice).await;
        }
        Ok(pending)
    }

    /// Whether `rec`, as it stands, opens an escalation: it ended at L3 (a person must
    /// decide) and has none yet. An agent's own control plane opens none: it hands the
    /// incident up to the fleet's control plane, where a person decides.
    fn opens_escalation(&self, rec: &IncidentRecord) -> bool {
        !self.hand_up
            && rec.tier == Tier::L3
            && !matches!(rec.status, St::Processing | St::HandedUp)
            && rec.escalation.is_none()
            && rec.opening.is_none()
    }

    /// Open `rec`'s escalation at `now`: its id and SLA deadline (by the incident's
    /// severity), named by the record that opens it; its row follows with the incident's.
    fn open_escalation(&self, rec: &mut IncidentRecord, now: i64) -> EscalationRef {
        let open = EscalationRef {
            id: format!("esc_{}", &evrec::uuid_v4().replace('-', "")[..16]),
            opened_at: ev::rfc3339_ms(now.max(0) as u64),
            sla_deadline: ev::rfc3339_ms(
                self.sla.deadline(rec.incident.severity, now).max(0) as u64
            ),
            decided_at: None,
        };
        rec.escalation = Some(open.id.clone());
        rec.opening = Some(open.clone());
        open
    }

    fn end(rec: &mut IncidentRecord, tier: Tier, status: St, reason: impl Into<String>) {
        rec.tier = tier;
        rec.status = status;
        rec.reason = reason.into();
    }

    async fn process(
        &self,
        rec: &mut IncidentRecord,
        now: i64,
        directed: Option<Chosen>,
    ) -> Result<()> {
        // The host as registered now (an approval may come after its agent left).
        let Some(host) = self.hosts.owned(&rec.tenant, &rec.incident.host) else {
            let why = format!(
                "host {:?} is no longer served here (its agent left the fleet)",
                rec.incident.host
            );
            rec.guardrails
                .push(Verdict::new(G::KnownTarget, V::Escalate, why.clone()));
            Self::end(
                rec,
                Tier::L3,
                St::Escalated,
                format!("unknown target: {why}"),
            );
            self.record_undecided(rec, "unknown target", now).await?;
            return Ok(());
        };
        // L1: the first rule set with a matching rule decides (unless it is decided).
        let input =
            crate::incident::rule_input(&rec.incident, &rec.id, &host.labels, &rec.received_at);
        let mut decision = None;
        let sets = if directed.is_some() {
            Vec::new()
        } else {
            let mut sets = self.rule_sets_deployed_on(host.id());
            sets.extend(self.rule_sets(Some(&rec.tenant)));
            sets
        };
        for set in &sets {
            let set2 = set.clone();
            let rt = self.runtime.clone();
            let input2 = input.clone();
            let d = blocking(move || rt.evaluate(&set2, &input2)).await?;
            match d {
                Ok(Some(d)) => {
                    decision = Some((set.clone(), d));
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    // A broken rule set must not stop the others; it is recorded.
                    rec.guardrails.push(Verdict::new(
                        G::Rules,
                        V::Error,
                        format!("rule set {} failed: {e}", &set.sha256()[..12]),
                    ));
                }
            }
        }
        let earlier = self
            .windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .see(&rec.fingerprint, now);

        let threshold = self.guardrails.repeat_threshold.max(1) as usize;
        let chosen = match decision {
            _ if directed.is_some() => directed.expect("checked"),
            Some((set, d)) => {
                let actions: Vec<ActionRecord> = d
                    .actions
                    .iter()
                    .map(|a| ActionRecord {
                        runbook: a.runbook.clone(),
                        params: serde_json::from_str(&a.params).unwrap_or(serde_json::Value::Null),
                    })
                    .collect();
                rec.decision = Some(DecisionRecord {
                    tier: Tier::L1,
                    rule_id: d.rule_id.clone(),
                    rule_sha256: set.sha256().into(),
                    planner: None,
                    actions: actions.clone(),
                    dry_run: d.dry_run,
                });
                Chosen {
                    tier: Tier::L1,
                    actions,
                    dry_run: d.dry_run,
                    cooldown_secs: d.cooldown_secs,
                    provenance: ev::Provenance::L1 {
                        rule_id: d.rule_id.clone(),
                        rule_sha256: set.sha256().into(),
                    },
                }
            }
            None if earlier + 1 >= threshold => {
                // A repeat goes to a human before any planner is asked again.
                let detail = format!(
                    "no L1 rule matched, and it was seen {} times within {} min (threshold {threshold})",
                    earlier + 1,
                    self.guardrails.repeat_window_secs / 60
                );
                rec.guardrails
                    .push(Verdict::new(G::Repeat, V::Escalate, detail.clone()));
                Self::end(
                    rec,
                    Tier::L3,
                    St::Escalated,
                    format!("repeated incident: {detail}"),
                );
                self.record_undecided(rec, "repeated incident, no L1 rule matched", now)
                    .await?;
                return Ok(());
            }
            None if self.hand_up => {
                rec.handed_up = Some(HandedUpFor::Plan);
                Self::end(
                    rec,
                    Tier::L1,
                    St::HandedUp,
                    "no L1 rule on this host matched: handed to the control plane's tiers",
                );
                self.record_undecided(rec, "handed up: no L1 rule matched", now)
                    .await?;
                return Ok(());
            }
            None => match self.plan(rec, &host).await? {
                Ok(chosen) => chosen,
                Err((reason, provenance)) => {
                    Self::end(rec, Tier::L3, St::Escalated, reason);
                    // The subject is the planner: what it was sent is what it judged.
                    let (model, prompt) = match &provenance {
                        ev::Provenance::L2 {
                            model,
                            prompt_sha256,
                            ..
                        } => (model.clone(), prompt_sha256.clone()),
                        _ => (String::new(), String::new()),
                    };
                    self.record_decision(
                        rec,
                        Subject {
                            name: "l2-planner",
                            version: &model,
                            sha256: &prompt,
                        },
                        provenance,
                        serde_json::json!({}),
                        None,
                        now,
                    )
                    .await?;
                    return Ok(());
                }
            },
        };
        let Chosen {
            tier,
            actions,
            dry_run: rule_dry_run,
            cooldown_secs,
            provenance,
        } = chosen;
        let first = actions.first().cloned();

        // Repeat.
        if earlier + 1 >= threshold {
            let detail = format!(
                "seen {} times within {} min (threshold {threshold})",
                earlier + 1,
                self.guardrails.repeat_window_secs / 60
            );
            rec.guardrails
                .push(Verdict::new(G::Repeat, V::Escalate, detail.clone()));
            Self::end(
                rec,
                Tier::L3,
                St::Escalated,
                format!("repeated incident: {detail}"),
            );
            self.record_blocked(rec, first.as_ref(), provenance, None, now)
                .await?;
            return Ok(());
        }
        rec.guardrails.push(Verdict::new(
            G::Repeat,
            V::Pass,
            format!("{} earlier within the window", earlier),
        ));

        // Known target: host served (and not drained), runbooks deployed, params and
        // grants fit.
        let mut loaded = Vec::new();
        let mut unknown = None;
        if self.hosts.is_drained(host.id()) {
            unknown = Some(format!(
                "host {} is drained: no new jobs go to it (runwarden hosts undrain {})",
                host.id(),
                host.id()
            ));
        } else {
            for a in &actions {
                match self.runbook_on(host.id(), &a.runbook) {
                    None => {
                        unknown = Some(format!("runbook {:?} is not deployed", a.runbook));
                        break;
                    }
                    Some(l) => {
                        if let Err(why) = l.precheck(&host.policy, &a.params) {
                            unknown = Some(why);
                            break;
                        }
                        if let Some(why) = Self::unknown_service(&host, &l, &a.params) {
                            unknown = Some(why);
                            break;
                        }
                        loaded.push(l.clone());
                    }
                }
            }
        }
        if let Some(why) = unknown {
            rec.guardrails
                .push(Verdict::new(G::KnownTarget, V::Escalate, why.clone()));
            Self::end(
                rec,
                Tier::L3,
                St::Escalated,
                format!("unknown target: {why}"),
            );
            self.record_blocked(rec, first.as_ref(), provenance, None, now)
                .await?;
            return Ok(());
        }
        rec.guardrails.push(Verdict::new(
            G::KnownTarget,
            V::Pass,
            "runbooks deployed; the host's policy grants what they touch",
        ));

        // Cooldown, breaker and the runs they admit happen under one lock.
        let admission = self.admission.lock().await;
        // Time as of admission: runs noted by incidents admitted before this one are
        // never in its future.
        let now = now_ms();
        let cooldown_ms =
            i64::from(cooldown_secs.unwrap_or(self.guardrails.cooldown_secs as u32)) * 1000;
        let host = rec.incident.host.clone();
        let cooling = {
            let w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
            actions.iter().find_map(|a| {
                w.last_run(&rec.tenant, &host, &a.runbook)
                    .filter(|t| now - t < cooldown_ms)
                    .map(|t| (a.runbook.clone(), (cooldown_ms - (now - t)) / 1000))
            })
        };
        if let Some((rb, left)) = cooling {
            let detail = format!(
                "{rb} ran on {host} less than {} s ago ({left} s of cooldown left)",
                cooldown_ms / 1000
            );
            rec.guardrails
                .push(Verdict::new(G::Cooldown, V::Suppress, detail.clone()));
            Self::end(rec, tier, St::Suppressed, format!("cooldown: {detail}"));
            drop(admission);
            self.record_blocked(rec, first.as_ref(), provenance, None, now)
                .await?;
            return Ok(());
        }
        rec.guardrails.push(Verdict::new(
            G::Cooldown,
            V::Pass,
            format!(
                "none of its runbooks ran on {host} in the last {} s",
                cooldown_ms / 1000
            ),
        ));
        let recent = self
            .windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .runs_last_minute(&rec.tenant, now);
        let max = self.guardrails.breaker_max_per_minute as usize;
        if recent + actions.len() > max {
            let detail = format!(
                "{recent} automatic runs for tenant {} in the last minute (at most {max}): automation paused",
                rec.tenant
            );
            rec.guardrails
                .push(Verdict::new(G::CircuitBreaker, V::Escalate, detail.clone()));
            Self::end(
                rec,
                Tier::L3,
                St::Escalated,
                format!("circuit breaker open: {detail}"),
            );
            drop(admission);
            self.record_blocked(rec, first.as_ref(), provenance, None, now)
                .await?;
            return Ok(());
        }
        rec.guardrails.push(Verdict::new(
            G::CircuitBreaker,
            V::Pass,
            format!("{recent} automatic runs in the last minute (at most {max})"),
        ));

        // Risk.
        let risky = loaded.iter().find(|l| l.manifest().risk == Risk::High);
        let mut dry_only = rule_dry_run;
        let mut awaiting = None;
        if let Some(l) = risky {
            let name = l.manifest().name.clone();
            match self.guardrails.high_risk {
                HighRisk::Approval => {
                    let detail = format!("{name} is high-risk: it waits for a human's approval");
                    rec.guardrails
                        .push(Verdict::new(G::Risk, V::AwaitApproval, detail.clone()));
                    Self::end(rec, Tier::L3, St::AwaitingApproval, detail);
                    drop(admission);
                    self.record_blocked(rec, first.as_ref(), provenance, None, now)
                        .await?;
                    return Ok(());
                }
                HighRisk::DryRunFirst => {
                    let detail = format!(
                        "{name} is high-risk: it runs as a dry run now, the real run waits for approval"
                    );
                    rec.guardrails
                        .push(Verdict::new(G::Risk, V::DryRunFirst, detail.clone()));
                    dry_only = true;
                    awaiting = Some(detail);
                }
            }
        } else {
            rec.guardrails
                .push(Verdict::new(G::Risk, V::Pass, "no high-risk runbook"));
        }

        // Admitted: note the runs before releasing the lock. They are persisted (so a
        // restart keeps the cooldown and the breaker) while the first one runs, and the
        // incident's result waits for that write. Dry runs change nothing: they start no
        // cooldown and do not count towards the breaker.
        let counted: &[ActionRecord] = if dry_only { &[] } else { &actions };
        // Other servers on the same PostgreSQL admit runs too: the cooldown is claimed
        // there, atomically, so no two of them start one runbook on one host within it.
        if cooldown_ms > 0 && !counted.is_empty() {
            let names: Vec<String> = counted.iter().map(|a| a.runbook.clone()).collect();
            if let Some((rb, started)) = self
                .store
                .claim_cooldowns(&rec.tenant, &host, &names, now, cooldown_ms)
                .await?
            {
                let left = (cooldown_ms - (now - started)).max(0) / 1000;
                let detail = format!(
                    "{rb} ran on {host} less than {} s ago, admitted by another server ({left} s of cooldown left)",
                    cooldown_ms / 1000
                );
                for v in rec
                    .guardrails
                    .iter_mut()
                    .filter(|v| v.guardrail == G::Cooldown)
                {
                    *v = Verdict::new(G::Cooldown, V::Suppress, detail.clone());
                }
                Self::end(rec, tier, St::Suppressed, format!("cooldown: {detail}"));
                drop(admission);
                self.record_blocked(rec, first.as_ref(), provenance, None, now)
                    .await?;
                return Ok(());
            }
        }
        {
            let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
            for a in counted {
                w.ran(&rec.tenant, &host, &a.runbook, now);
            }
        }
        drop(admission);
        let persist = self
            .store
            .queue(
                counted
                    .iter()
                    .map(|a| Write::Action {
                        tenant: rec.tenant.clone(),
                        host: host.clone(),
                        runbook: a.runbook.clone(),
                        incident_id: rec.id.clone(),
                        at_ms: now,
                    })
                    .collect(),
            )
            .await?;

        // Dispatch to the host's agent; it runs them in order while each heals or finds
        // nothing to do.
        let runs = actions.iter().zip(&loaded).map(|(a, l)| (a, l.as_ref()));
        let verdicts = rec.guardrails.clone();
        let statuses = self
            .run_job(rec, runs, dry_only, &provenance, tier, verdicts)
            .await?;
        persist.wait().await?;
        let Some(statuses) = statuses else {
            return Ok(());
        };
        let failed = statuses.iter().any(|s| !s.is_success());
        if statuses.contains(&RunStatus::Interrupted) {
            // The agent stopped mid-run and recorded it so; it does not run it again:
            // what state the host is in is for a human to check.
            let cut = rec
                .runs
                .iter()
                .find(|r| r.status == RunStatus::Interrupted)
                .map_or_else(String::new, |r| r.runbook.clone());
            Self::end(
                rec,
                Tier::L3,
                St::Escalated,
                format!(
                    "{cut} was cut off by a stop of the host's agent (recorded `interrupted`, not run again): a human must check the host"
                ),
            );
        } else if failed {
            let last = rec.runs.last().expect("a run happened");
            let reason = format!("{} ended {}: {}", last.runbook, last.status, last.summary);
            Self::end(rec, tier, St::Failed, reason);
        } else if let Some(detail) = awaiting {
            Self::end(rec, Tier::L3, St::AwaitingApproval, detail);
        } else if dry_only {
            Self::end(
                rec,
                tier,
                St::NoOp,
                "the rule runs dry runs only: nothing was changed",
            );
        } else if statuses.contains(&RunStatus::Healed) {
            let summary = rec
                .runs
                .iter()
                .map(|r| r.summary.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            Self::end(rec, tier, St::Healed, summary);
        } else {
            let summary = rec
                .runs
                .iter()
                .map(|r| r.summary.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            Self::end(rec, tier, St::NoOp, summary);
        }
        Ok(())
    }

    /// Send `runs` to the host's agent as one signed job and add what it reports to
    /// `rec`: each run's record, its note for planners and the metrics. Returns the runs'
    /// statuses, or `None` when the agent refused the job or could not be reached — then
    /// `rec` has ended at L3, escalated, with the refusal recorded.
    async fn run_job<'a>(
        &self,
        rec: &mut IncidentRecord,
        runs: impl Iterator<Item = (&'a ActionRecord, &'a Loaded)>,
        dry_run: bool,
        provenance: &ev::Provenance,
        tier: Tier,
        verdicts: Vec<Verdict>,
    ) -> Result<Option<Vec<RunStatus>>> {
        let now = now_ms();
        let job = RunJob {
            job: evrec::time_ordered_id(),
            incident: rec.id.clone(),
            tenant: rec.tenant.clone(),
            host: rec.incident.host.clone(),
            runs: runs
                .map(|(a, l)| PlannedRun {
                    invocation: evrec::time_ordered_id(),
                    runbook: a.runbook.clone(),
                    sha256: l.sha256().to_string(),
                    params: a.params.clone(),
                })
                .collect(),
            dry_run,
            provenance: job_provenance(provenance),
            verdicts,
            issued_at_ms: now,
            expires_at_ms: now + JOB_TTL_MS,
        };
        let payload = serde_json::to_vec(&job).expect("a job serializes");
        let signed = ev::Envelope::sign(JOB_PAYLOAD_TYPE, &payload, &self.control_key)
            .to_json()
            .into_bytes();
        let to = runwarden_bus::Address {
            tenant: job.tenant.clone(),
            host: job.host.clone(),
        };
        let not_run = |why: String| RunReport {
            job: job.job.clone(),
            incident: rec.id.clone(),
            host: job.host.clone(),
            runs: Vec::new(),
            refused: Some(why),
            deployed: None,
        };
        // An enrolled host whose agent went silent gets no job: nothing is sent that
        // could run after a human took the incident over. (A dispatch that gets no answer
        // waits until the job has expired, so "not run" is then true too.)
        // Only enrolled hosts have heartbeats: `up`'s own host costs no read here.
        let silent = if self.hosts.is_enrolled(&job.host) {
            self.store
                .host(&job.host)
                .await?
                .and_then(|h| h.last_seen_ms)
                .filter(|t| now - t > enroll::OFFLINE_AFTER_SECS * 1000)
        } else {
            None
        };
        let report = if let Some(seen) = silent {
            not_run(format!(
                "host {}'s agent is offline (last heard from {}): no job was sent",
                job.host,
                ev::rfc3339_ms(seen.max(0) as u64)
            ))
        } else {
            match self.dispatch.dispatch(&to, &job.job, signed).await {
                Ok(report) => report,
                Err(e) => not_run(format!("the job did not reach the host's agent: {e}")),
            }
        };
        if report.runs.is_empty() {
            let why = report
                .refused
                .unwrap_or_else(|| "the agent ran nothing".to_string());
            Self::end(rec, Tier::L3, St::Escalated, format!("not run: {why}"));
            let first = job.runs.first().map(|p| ActionRecord {
                runbook: p.runbook.clone(),
                params: p.params.clone(),
            });
            self.record_blocked(rec, first.as_ref(), provenance.clone(), None, now_ms())
                .await?;
            return Ok(None);
        }
        let mut statuses = Vec::with_capacity(report.runs.len());
        for (run, plan) in report.runs.into_iter().zip(&job.runs) {
            statuses.push(run.status);
            self.note_run(rec, run, plan, tier).await?;
        }
        Ok(Some(statuses))
    }

    /// Add one run the agent reported to `rec`; note it for planners and metrics.
    async fn note_run(
        &self,
        rec: &mut IncidentRecord,
        run: runwarden_proto::bus::RunOutcome,
        plan: &PlannedRun,
        tier: Tier,
    ) -> Result<()> {
        rec.evidence.push(run.record.index);
        *self
            .metrics
            .runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((rec.tenant.clone(), run.status.to_string()))
            .or_default() += 1;
        // What planners learn from; committed before the incident's row.
        drop(
            self.store
                .queue(vec![Write::Run(RunRow {
                    invocation_id: run.invocation.clone(),
                    incident_id: rec.id.clone(),
                    tenant: rec.tenant.clone(),
                    host: rec.incident.host.clone(),
                    runbook: run.runbook.clone(),
                    status: run.status.to_string(),
                    summary: run.summary.clone(),
                    tier: tier.to_string(),
                    dry_run: run.dry_run,
                    incident_type: rec.incident.kind.clone(),
                    service: rec.incident.service.clone().unwrap_or_default(),
                    message: rec.incident.message.clone(),
                    params: plan.params.to_string(),
                    at_ms: now_ms(),
                })])
                .await?,
        );
        rec.runs.push(RunRecord {
            runbook: run.runbook,
            status: run.status,
            summary: run.summary,
            invocation_id: run.invocation,
            dry_run: run.dry_run,
            evidence_index: run.record.index,
        });
        Ok(())
    }

    /// L2: build the host's catalog, ask the planner, validate. `Ok` is what to run (the
    /// guardrails still apply); `Err` is an escalation with its reason and provenance.
    async fn plan(
        &self,
        rec: &mut IncidentRecord,
        host: &HostConfig,
    ) -> Result<Result<Chosen, Unplanned>> {
        let recent = self
            .store
            .recent_runs(&rec.tenant, self.planner_config.history)
            .await?;
        let (catalog, _excluded) = catalog::build(
            &self.catalog_of(host.id()),
            &host.policy,
            &host.inventory.platform,
            &rec.incident.host,
            &recent,
        );
        let plan = planner::plan(
            &self.planner,
            &self.planner_config,
            &Self::host_line(host),
            &rec.incident,
            &catalog,
            &recent,
            &host.policy,
        )
        .await;
        let provenance = ev::Provenance::L2 {
            provider: plan.provider.clone(),
            model: plan.model.clone(),
            prompt_sha256: plan.prompt_sha256.clone(),
            response_sha256: plan.response_sha256.clone(),
            confidence: plan.confidence,
            rationale: plan.rationale.clone(),
        };
        let actions: Vec<ActionRecord> = plan
            .action
            .iter()
            .map(|(runbook, params)| ActionRecord {
                runbook: runbook.clone(),
                params: params.clone(),
            })
            .collect();
        rec.decision = Some(DecisionRecord {
            tier: Tier::L2,
            rule_id: String::new(),
            rule_sha256: String::new(),
            planner: Some(PlannerRecord {
                provider: plan.provider.clone(),
                model: plan.model.clone(),
                prompt_sha256: plan.prompt_sha256.clone(),
                response_sha256: plan.response_sha256.clone(),
                confidence: plan.confidence,
                rationale: plan.rationale.clone(),
                prompt_tokens: plan.prompt_tokens,
                usage: (plan.usage.input_tokens, plan.usage.output_tokens),
                latency_ms: plan.latency_ms,
                attempts: plan.attempts,
                catalog: catalog.iter().map(|e| e.name.clone()).collect(),
            }),
            actions: actions.clone(),
            dry_run: false,
        });
        if let Some(reason) = plan.escalate {
            rec.guardrails
                .push(Verdict::new(G::Planner, V::Escalate, reason.clone()));
            return Ok(Err((
                format!("no L1 rule matched; {reason}: a human must decide"),
                provenance,
            )));
        }
        rec.guardrails.push(Verdict::new(
            G::Planner,
            V::Pass,
            format!(
                "{} ({}) chose {} with confidence {:.2} (threshold {:.2})",
                plan.provider,
                plan.model,
                actions.first().map_or("", |a| a.runbook.as_str()),
                plan.confidence,
                self.planner_config.min_confidence
            ),
        ));
        Ok(Ok(Chosen {
            tier: Tier::L2,
            actions,
            dry_run: false,
            cooldown_secs: None,
            provenance,
        }))
    }

    /// Evidence that nothing decided to act: its subject is the first rule component (the
    /// rules that were asked), its provenance tier `none`.
    async fn record_undecided(
        &self,
        rec: &mut IncidentRecord,
        reason: &str,
        now: i64,
    ) -> Result<()> {
        let sha = self
            .rule_sets(None)
            .first()
            .map(|s| s.sha256().to_string())
            .unwrap_or_else(|| hex::encode(Sha256::digest(b"")));
        self.record_decision(
            rec,
            Subject {
                name: "l1-rules",
                version: "",
                sha256: &sha,
            },
            ev::Provenance::Undecided {
                reason: reason.into(),
            },
            serde_json::json!({}),
            None,
            now,
        )
        .await
    }

    /// Evidence of an action a guardrail stopped: the runbook that would have run.
    async fn record_blocked(
        &self,
        rec: &mut IncidentRecord,
        action: Option<&ActionRecord>,
        provenance: ev::Provenance,
        status: Option<&'static str>,
        now: i64,
    ) -> Result<()> {
        let (name, version, sha, params) = match action.and_then(|a| {
            self.runbook_on(&rec.incident.host, &a.runbook)
                .map(|l| (a, l))
        }) {
            Some((a, l)) => (
                l.manifest().name.clone(),
                l.manifest().version.clone(),
                l.sha256().to_string(),
                a.params.clone(),
            ),
            None => (
                action.map(|a| a.runbook.clone()).unwrap_or_default(),
                String::new(),
                hex::encode(Sha256::digest(b"")),
                action.map(|a| a.params.clone()).unwrap_or_default(),
            ),
        };
        self.record_decision(
            rec,
            Subject {
                name: &name,
                version: &version,
                sha256: &sha,
            },
            provenance,
            params,
            status,
            now,
        )
        .await
    }

    /// Sign a decision about `rec` into the control plane's log: `status` is the
    /// record's outcome (the incident's status when `None`). A record that leaves the
    /// incident to a person opens its escalation and names it, with its SLA deadline.
    async fn record_decision(
        &self,
        rec: &mut IncidentRecord,
        subject: Subject<'_>,
        provenance: ev::Provenance,
        params: serde_json::Value,
        status: Option<&'static str>,
        now: i64,
    ) -> Result<()> {
        let name = subject.name.to_string();
        let status = status.unwrap_or(rec.status.as_str());
        let opens = (self.opens_escalation(rec)).then(|| self.open_escalation(rec, now));
        let mut statement = evrec::decision_statement(
            subject,
            &self.key,
            &rec.incident.host,
            EvContext {
                tenant: &rec.tenant,
                provenance,
                incident_id: Some(&rec.id),
                guardrails: serde_json::to_value(&rec.guardrails).ok(),
            },
            status,
            &rec.reason,
            params,
            now as u64,
        );
        if let Some(open) = opens {
            statement.predicate.outcome["details"]["escalation"] =
                serde_json::to_value(open).expect("an escalation serializes");
        }
        let id = statement.predicate.invocation_id.clone();
        let index = self.append(&statement, &id, &name, status, now).await?;
        rec.evidence.push(index);
        Ok(())
    }

    async fn append(
        &self,
        statement: &ev::Statement,
        invocation_id: &str,
        runbook: &str,
        status: &str,
        started_at_ms: i64,
    ) -> Result<u64> {
        let envelope = statement.sign(&self.key)?;
        Ok(self
            .evidence
            .append(ev::NewRecord {
                envelope: envelope.to_json().into_bytes(),
                invocation_id: invocation_id.to_string(),
                host_id: statement.predicate.host_id.clone(),
                runbook: runbook.to_string(),
                status: status.to_string(),
                started_at_ms,
            })
            .await?)
    }

    /// One of `tenant`'s incidents.
    pub async fn incident(&self, tenant: &str, id: &str) -> Result<Option<IncidentRecord>> {
        Ok(self
            .store
            .get_incident(tenant, id)
            .await?
            .map(|j| parse_record(&j))
            .transpose()?
            .filter(|r| !self.hidden(tenant, &r.incident.host)))
    }

    /// `tenant`'s incidents, newest first.
    pub async fn incidents(
        &self,
        tenant: &str,
        status: Option<St>,
        limit: u32,
    ) -> Result<Vec<IncidentRecord>> {
        let mut out = Vec::new();
        let status = status.map(St::as_str);
        for j in self.store.list_incidents(tenant, status, limit).await? {
            let r = parse_record(&j)?;
            if !self.hidden(tenant, &r.incident.host) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Decide `caller`'s tenant's escalation `id`: acknowledge it, deny it, or approve it —
    /// which runs the proposed runbook now, with the approver's identity in its evidence.
    /// Refused when it is unknown (for this tenant), already decided, expired (older than
    /// the approval window), or proposes nothing that can run here. Returns the
    /// escalation as it ends, and the incident.
    pub async fn decide(
        &self,
        caller: &Caller,
        id: &str,
        decision: crate::Decision,
        note: &str,
    ) -> Result<(Escalation, IncidentRecord)> {
        if *self.in_flight.read().await {
            return Err(ControlError::ShuttingDown);
        }
        let tenant = &caller.tenant;
        let unknown = || {
            ControlError::NotFound(format!(
                "no escalation {id:?} for tenant {tenant}: list them with GET /v1/escalations"
            ))
        };
        let esc = self
            .store
            .escalations(tenant, Some(id), None, 1)
            .await?
            .pop()
            .filter(|e| !self.hidden(tenant, &e.row.host))
            .ok_or_else(unknown)?;
        let mut rec = self
            .incident(tenant, &esc.row.incident_id)
            .await?
            .ok_or_else(unknown)?;
        // Approval comes from another identity than the request's: the token that asked
        // (an agent's, or whoever submitted the incident) neither approves nor resolves
        // it. Denying or acknowledging one's own request is allowed: nothing runs.
        let requester = rec.requested_by.clone().or_else(|| {
            let labels = &rec.incident.labels;
            (labels.get("source").map(String::as_str) == Some("mcp"))
                .then(|| labels.get("token").cloned())
                .flatten()
        });
        if matches!(
            decision,
            crate::Decision::Approve | crate::Decision::Resolve
        ) && requester.as_deref() == Some(caller.token_id.as_str())
        {
            return Err(ControlError::Conflict(format!(
                "escalation {id} was requested by token {} itself: a different token must {} it \
                 (another person's, or an operator's); a request's own token may only deny or \
                 acknowledge it",
                caller.token_id,
                if decision == crate::Decision::Approve {
                    "approve"
                } else {
                    "resolve"
                }
            )));
        }
        let note = crate::planner::catalog::cut(note, 1000);
        let by = format!(
            "token {} ({} scope, tenant {tenant})",
            caller.token_id,
            caller.scope.as_str()
        );
        let now = now_ms();
        let undecided = [EscalationState::Open, EscalationState::Acknowledged];
        let decided = |state: &dyn std::fmt::Display| {
            ControlError::Conflict(format!(
                "escalation {id} is {state}: only an open or acknowledged escalation can be decided"
            ))
        };
        if decision == crate::Decision::Acknowledge {
            if !self
                .store
                .transition_escalation(
                    tenant,
                    id,
                    &[EscalationState::Open, EscalationState::Open],
                    EscalationState::Acknowledged,
                    &by,
                    now,
                    &note,
                )
                .await?
            {
                return Err(decided(&esc.state));
            }
            let e = self.escalation(tenant, id).await?.ok_or_else(unknown)?;
            self.notifier
                .notify(Notice::decided(&e, &rec.incident))
                .await;
            return Ok((e, rec));
        }
        let proposal: Option<ActionRecord> = serde_json::from_str(&esc.row.proposal).ok();
        if decision == crate::Decision::Approve {
            let expires = esc.row.created_at_ms + (self.sla.approval_ttl_secs as i64) * 1000;
            if now > expires && undecided.iter().any(|u| *u == esc.state.as_str()) {
                self.store
                    .transition_escalation(
                        tenant,
                        id,
                        &undecided,
                        EscalationState::Expired,
                        &by,
                        now,
                        "",
                    )
                    .await?;
                return Err(ControlError::Conflict(format!(
                    "escalation {id} expired at {}: the host has moved on since it was judged; resubmit the incident",
                    ev::rfc3339_ms(expires as u64)
                )));
            }
            if !undecided.iter().any(|u| *u == esc.state.as_str()) {
                return Err(decided(&esc.state));
            }
        }
        let runnable = match (&proposal, decision) {
            (Some(p), crate::Decision::Approve) => {
                let l = self.runbook_on(&esc.row.host, &p.runbook).ok_or_else(|| {
                    ControlError::Conflict(format!(
                        "escalation {id} proposes {}, which is not deployed here",
                        p.runbook
                    ))
                })?;
                let host = self
                    .hosts
                    .owned(&rec.tenant, &rec.incident.host)
                    .ok_or_else(|| {
                        ControlError::Conflict(format!(
                            "escalation {id} is for host {}, which is no longer served here",
                            rec.incident.host
                        ))
                    })?;
                l.precheck(&host.policy, &p.params).map_err(|why| {
                    ControlError::Conflict(format!("escalation {id} cannot run: {why}"))
                })?;
                if let Some(why) = Self::unknown_service(&host, &l, &p.params) {
                    return Err(ControlError::Conflict(format!(
                        "escalation {id} cannot run: {why}"
                    )));
                }
                Some((p.clone(), l))
            }
            (None, crate::Decision::Approve) => {
                return Err(ControlError::Conflict(format!(
                    "escalation {id} proposes nothing to run: fix it by hand, or deny it"
                )));
            }
            _ => None,
        };
        // Claim it: only one decision wins.
        if !self
            .store
            .transition_escalation(tenant, id, &undecided, decision.state(), &by, now, &note)
            .await?
        {
            let now_state = self
                .escalation(tenant, id)
                .await?
                .map_or_else(|| "gone".to_string(), |e| e.state.to_string());
            return Err(decided(&now_state));
        }
        let provenance = ev::Provenance::L3 {
            approver: by.clone(),
        };
        let verdict = Verdict::new(
            G::Approval,
            if runnable.is_some() {
                V::Approved
            } else {
                decision.verdict()
            },
            format!(
                "{} by {by}{}",
                decision.state(),
                if note.is_empty() {
                    String::new()
                } else {
                    format!(": {note}")
                }
            ),
        );
        let verdict = Verdict {
            escalation: Some(EscalationRef {
                id: esc.row.id.clone(),
                opened_at: ev::rfc3339_ms(esc.row.created_at_ms.max(0) as u64),
                sla_deadline: ev::rfc3339_ms(esc.row.sla_deadline_ms.max(0) as u64),
                decided_at: Some(ev::rfc3339_ms(now.max(0) as u64)),
            }),
            ..verdict
        };
        rec.guardrails.push(verdict.clone());
        match runnable {
            Some((p, l)) => {
                let statuses = self
                    .run_job(
                        &mut rec,
                        std::iter::once((&p, l.as_ref())),
                        false,
                        &provenance,
                        Tier::L3,
                        vec![verdict.clone()],
                    )
                    .await?;
                if let Some(statuses) = statuses {
                    let last = rec.runs.last().expect("it ran");
                    let outcome = match statuses.last() {
                        Some(RunStatus::Healed) => St::Healed,
                        Some(RunStatus::NoOp) => St::NoOp,
                        _ => St::Failed,
                    };
                    let reason = format!(
                        "approved by {by}; {} ended {}: {}",
                        last.runbook, last.status, last.summary
                    );
                    Self::end(&mut rec, Tier::L3, outcome, reason);
                }
            }
            None => {
                rec.reason = format!("{}; {} by {by}", rec.reason, decision.state());
                // What the person decided, in words of its own: `denied` is a host
                // policy's refusal of a call.
                let status = match decision {
                    crate::Decision::Deny => "declined",
                    _ => decision.state().as_str(),
                };
                self.record_blocked(&mut rec, proposal.as_ref(), provenance, Some(status), now)
                    .await?;
            }
        }
        let received_ms = ev_ms(&rec.received_at);
        self.save(&mut rec, received_ms).await?;
        let e = self.escalation(tenant, id).await?.ok_or_else(unknown)?;
        self.notifier
            .notify(Notice::decided(&e, &rec.incident))
            .await;
        Ok((e, rec))
    }

    /// Tell the webhooks, once each, about escalations still undecided past their SLA
    /// deadline (`runwarden up` calls this every 30 s). Returns how many were announced.
    pub async fn announce_breaches(&self) -> Result<usize> {
        if self.notifier.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        let mut announced = 0;
        let mut breached = Vec::new();
        for host in self.hosts.all() {
            breached.extend(
                self.store
                    .breached_unannounced(host.id(), now, 1000)
                    .await?,
            );
        }
        for e in breached {
            let id = e.row.id.clone();
            let seen = |ids: &std::collections::HashSet<String>| ids.contains(&id);
            if seen(
                &self
                    .breaches_announced
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            ) {
                continue;
            }
            let Some(rec) = self.incident(&e.row.tenant, &e.row.incident_id).await? else {
                continue;
            };
            let view = escalation_view(e, now)?;
            self.notifier
                .notify(Notice::breached(&view, &rec.incident))
                .await;
            // Noted once handed to the webhooks; their delivery records take over from
            // there (a dropped one is announced again by the next process).
            let mut ids = self
                .breaches_announced
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if ids.len() > 100_000 {
                ids.clear();
            }
            ids.insert(id);
            announced += 1;
        }
        Ok(announced)
    }

    /// `tenant`'s escalations, newest first, optionally in one state.
    pub async fn escalations(
        &self,
        tenant: &str,
        state: Option<EscalationState>,
        limit: u32,
    ) -> Result<Vec<Escalation>> {
        let now = now_ms();
        self.store
            .escalations(tenant, None, state, limit)
            .await?
            .into_iter()
            .filter(|e| !self.hidden(tenant, &e.row.host))
            .map(|e| escalation_view(e, now))
            .collect()
    }

    /// One of `tenant`'s escalations, with how webhooks were told about it.
    pub async fn escalation(&self, tenant: &str, id: &str) -> Result<Option<Escalation>> {
        let now = now_ms();
        let Some(mut e) = self
            .store
            .escalations(tenant, Some(id), None, 1)
            .await?
            .into_iter()
            .find(|e| !self.hidden(tenant, &e.row.host))
            .map(|e| escalation_view(e, now))
            .transpose()?
        else {
            return Ok(None);
        };
        e.notifications = self
            .store
            .notifications(tenant, id)
            .await?
            .into_iter()
            .map(Into::into)
            .collect();
        Ok(Some(e))
    }

    /// An evidence record, decoded, if it belongs to `tenant`.
    pub async fn evidence_record(
        &self,
        tenant: &str,
        index: u64,
    ) -> Result<Option<serde_json::Value>> {
        // The log is the host's: a tenant that does not own it has no records in it.
        if !self.owns(tenant) {
            return Ok(None);
        }
        let Some(r) = self.evidence.get(index).await? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&r.envelope).into_owned();
        let env = ev::Envelope::from_json(&text)?;
        let st = ev::Statement::from_envelope(&env)?;
        if st.predicate.tenant != tenant {
            return Ok(None);
        }
        let signed = env.verify(&[self.key.verifying_key()]).is_ok();
        Ok(Some(serde_json::json!({
            "index": r.index,
            "leaf_hash": ev::hash_hex(&r.leaf_hash),
            "signature": if signed { "valid" } else { "INVALID" },
            "envelope": serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default(),
            "statement": st,
        })))
    }

    /// Sign a checkpoint of the log as it is now (stored), and return its note.
    pub async fn checkpoint(&self) -> Result<String> {
        let size = self.evidence.size().await?;
        if let Some((s, note)) = self.evidence.checkpoint_at_most(size).await?
            && s == size
        {
            return Ok(note);
        }
        let cp = ev::Checkpoint {
            origin: self.origin.clone(),
            size,
            root: self.evidence.root_at(size).await?,
        };
        let note = cp.sign(&self.key)?;
        self.evidence.put_checkpoint(size, &cp.root, &note).await?;
        Ok(note)
    }

    /// Create an API token for `tenant`; returns the secret (shown once) and its id.
    pub async fn create_token(
        &self,
        tenant: &str,
        scope: Scope,
        name: &str,
    ) -> Result<(String, String)> {
        crate::incident::check_name("tenant", tenant)?;
        create_token(&self.store, tenant, scope, name).await
    }

    /// The caller a bearer secret belongs to.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Caller>> {
        authenticate(&self.store, secret).await
    }

    /// Prometheus text exposition of `tenant`'s counters. Webhook deliveries are the
    /// host's, shown to the tenant that owns it.
    pub fn metrics(&self, tenant: &str) -> String {
        let mut out = String::new();
        out.push_str("# HELP runwarden_incidents_total Incidents by final status.\n# TYPE runwarden_incidents_total counter\n");
        for ((t, s), n) in self
            .metrics
            .incidents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if t == tenant {
                out.push_str(&format!(
                    "runwarden_incidents_total{{status=\"{s}\"}} {n}\n"
                ));
            }
        }
        out.push_str("# HELP runwarden_runs_total Runbook runs by status.\n# TYPE runwarden_runs_total counter\n");
        for ((t, s), n) in self
            .metrics
            .runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if t == tenant {
                out.push_str(&format!("runwarden_runs_total{{status=\"{s}\"}} {n}\n"));
            }
        }
        let (sum, count) = self
            .metrics
            .l1_latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .copied()
            .unwrap_or_default();
        out.push_str("# HELP runwarden_l1_seconds Time from intake to result of incidents a rule matched.\n# TYPE runwarden_l1_seconds summary\n");
        out.push_str(&format!(
            "runwarden_l1_seconds_sum {}\nrunwarden_l1_seconds_count {count}\n",
            sum as f64 / 1e6,
        ));
        if self.owns(tenant) {
            out.push_str("# HELP runwarden_webhook_deliveries_total Escalation webhook deliveries by outcome.\n# TYPE runwarden_webhook_deliveries_total counter\n");
            for (s, n) in self.notifier.counts() {
                out.push_str(&format!(
                    "runwarden_webhook_deliveries_total{{status=\"{s}\"}} {n}\n"
                ));
            }
        }
        out
    }

    /// `tenant`'s escalations awaiting a human, and how many of them are past their SLA
    /// deadline, as Prometheus gauges.
    pub async fn escalation_metrics(&self, tenant: &str) -> Result<String> {
        let (open, breached) = self.store.undecided_escalations(tenant, now_ms()).await?;
        Ok(format!(
            "# HELP runwarden_escalations_open Escalations open or acknowledged.\n# TYPE runwarden_escalations_open gauge\nrunwarden_escalations_open {open}\n\
             # HELP runwarden_escalations_breached Open escalations past their SLA deadline.\n# TYPE runwarden_escalations_breached gauge\nrunwarden_escalations_breached {breached}\n"
        ))
    }

    /// Stop taking incidents and wait for those in flight (their evidence written, their
    /// state committed); webhook deliveries get a few seconds to finish.
    pub async fn shutdown(&self) {
        *self.in_flight.write().await = true;
        // Deliveries get a few seconds; their records are written by the flush.
        self.notifier.shutdown().await;
        if let Err(e) = self.store.flush().await {
            eprintln!("runwarden: {e}");
        }
    }
}

/// How long an agent may still act on a job after it was issued: past that the decision
/// is stale and the agent refuses it.
const JOB_TTL_MS: i64 = 5 * 60 * 1000;

/// The provenance a job carries: what the tier that chose it decided.
fn job_provenance(p: &ev::Provenance) -> runwarden_proto::bus::Provenance {
    use runwarden_proto::bus::Provenance as P;
    match p.clone() {
        ev::Provenance::L1 {
            rule_id,
            rule_sha256,
        } => P::L1 {
            rule_id,
            rule_sha256,
        },
        ev::Provenance::L2 {
            provider,
            model,
            prompt_sha256,
            response_sha256,
            confidence,
            rationale,
        } => P::L2 {
            provider,
            model,
            prompt_sha256,
            response_sha256,
            confidence,
            rationale,
        },
        ev::Provenance::L3 { approver } => P::L3 { approver },
        // Never dispatched: a manual run is not the control plane's, and an undecided
        // incident runs nothing. Named for what they are, should that change.
        ev::Provenance::Manual { operator } => P::L3 {
            approver: operator.unwrap_or_else(|| "an operator".into()),
        },
        ev::Provenance::Undecided { reason } => P::L3 {
            approver: format!("nobody ({reason})"),
        },
    }
}

/// An escalation as shown; a stored state or severity runwarden does not know is an
/// error (a damaged or newer database), never guessed.
fn escalation_view(e: StoredEscalation, now: i64) -> Result<Escalation> {
    let at = |ms: i64| ev::rfc3339_ms(ms.max(0) as u64);
    let corrupt = |what: runwarden_proto::UnknownWord| {
        ControlError::Store(crate::store::StoreError::corrupt(format!(
            "escalation {}: {what}",
            e.row.id
        )))
    };
    let state: EscalationState = e.state.parse().map_err(corrupt)?;
    let severity = e.row.severity.parse().map_err(corrupt)?;
    Ok(Escalation {
        breached: state.breached(e.row.sla_deadline_ms, now),
        id: e.row.id,
        incident_id: e.row.incident_id,
        tenant: e.row.tenant,
        host: e.row.host,
        severity,
        reason: e.row.reason,
        state,
        proposal: serde_json::from_str(&e.row.proposal).ok(),
        created_at: at(e.row.created_at_ms),
        sla_deadline: at(e.row.sla_deadline_ms),
        decided_by: e.decided_by,
        decided_at: e.decided_at_ms.map(at),
        note: e.note,
        notifications: Vec::new(),
    })
}

/// A stored incident record; a row that does not parse is an error, never skipped.
fn parse_record(json: &str) -> Result<IncidentRecord> {
    serde_json::from_str(json).map_err(|e| {
        ControlError::Store(crate::store::StoreError::corrupt(format!(
            "an incident record does not parse: {e}"
        )))
    })
}

fn token_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Create a token in `store`: returns (secret, id). The secret is `rw_` + 32 random bytes
/// (hex); only its SHA-256 is stored.
pub async fn create_token(
    store: &ControlStore,
    tenant: &str,
    scope: Scope,
    name: &str,
) -> Result<(String, String)> {
    let mut raw = [0u8; 32];
    getrandom_fill(&mut raw)?;
    let secret = format!("rw_{}", hex::encode(raw));
    let id = format!(
        "tok_{}",
        &hex::encode(Sha256::digest(secret.as_bytes()))[..12]
    );
    store
        .put_token(
            &TokenRow {
                id: id.clone(),
                tenant: tenant.into(),
                scope: scope.as_str().into(),
                name: name.into(),
                revoked: false,
            },
            &token_hash(&secret),
            now_ms(),
        )
        .await?;
    Ok((secret, id))
}

/// The caller a bearer secret belongs to, if it is a live token.
pub async fn authenticate(store: &ControlStore, secret: &str) -> Result<Option<Caller>> {
    if !secret.starts_with("rw_") || secret.len() != 67 {
        return Ok(None);
    }
    let Some(t) = store.token_by_hash(&token_hash(secret)).await? else {
        return Ok(None);
    };
    if t.revoked {
        return Ok(None);
    }
    Ok(Scope::parse(&t.scope).map(|scope| Caller {
        token_id: t.id,
        tenant: t.tenant,
        scope,
    }))
}

fn getrandom_fill(buf: &mut [u8]) -> Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| ControlError::Setup(format!("reading /dev/urandom: {e}")))
}
