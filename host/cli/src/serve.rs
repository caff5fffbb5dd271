//! `runwarden up`: the control plane and one local agent in one process, on the embedded
//! default (SQLite in the data dir, in-process dispatch), with zero configuration.
//!
//! Configuration is layered: built-in defaults → `runwarden.toml` (`--config`, else
//! `DATA_DIR/runwarden.toml` when present) → `RUNWARDEN_*` environment → flags.

use anyhow::{Context, bail};
use clap::Args;
use runwarden_control::planner::PlannerConfig;
use runwarden_control::planner::llm::LlmConfig;
use runwarden_control::{ControlConfig, Controller, GuardrailConfig, HostConfig, Scope};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// The host policy `up` uses when none is configured.
const EXAMPLE_POLICY: &str = include_str!("../../../examples/policy.toml");
/// The rule set `up` serves when none is configured.
const STANDARD_RULES: &str = include_str!("../../../rules/standard.yaml");
/// Where `up` listens by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8640";
/// Where an agent's local intake listens by default (loopback only).
pub const AGENT_LISTEN: &str = "127.0.0.1:8641";
/// The operate token of an agent's local intake (created, 0600, on first start).
pub const LOCAL_TOKEN: &str = "local-token";

/// What a control plane started by [`run_control`] is.
pub(crate) enum Role {
    /// `runwarden up`: the control plane and this host's agent, in one process.
    Up,
    /// `runwarden server`: the control plane; agents over NATS.
    Server(crate::fleet::Fleet),
    /// `runwarden agent run`: this host's agent, with its own control plane for the local
    /// intake (L1 here; the rest handed up to the fleet's control plane over NATS).
    Agent(Box<crate::fleet::AgentRole>),
}
/// The tenant that owns the local host unless `tenant` is configured; the admin token
/// `up` creates on first start is its.
pub const LOCAL_TENANT: &str = "local";

#[derive(Args)]
pub struct UpArgs {
    /// Configuration file (default: DATA_DIR/runwarden.toml when it exists).
    #[arg(long, env = "RUNWARDEN_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "RUNWARDEN_LISTEN")]
    listen: Option<String>,
    /// Host policy of the local agent (default: the shipped example policy).
    #[arg(long, env = "RUNWARDEN_POLICY")]
    policy: Option<PathBuf>,
    /// Rule sets: YAML files (compiled at start) or rule components (.wasm). Repeat for
    /// more. Default: the shipped rules/standard.yaml.
    #[arg(long = "rules")]
    rules: Vec<PathBuf>,
    /// Also deploy the runbook components in this directory: each needs its signed
    /// release beside it (COMPONENT.release.json), admitted by the trust policy.
    #[arg(long, env = "RUNWARDEN_RUNBOOKS_DIR")]
    runbooks_dir: Option<PathBuf>,
    /// The trust policy (TOML) that admits components of the runbooks directory
    /// (default: DATA_DIR/trust.toml when it exists; without one, none is loaded).
    #[arg(long, env = "RUNWARDEN_TRUST")]
    trust: Option<PathBuf>,
}

/// `runwarden.toml`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The tenant that owns the local host (default `local`): only its tokens see or act
    /// on it.
    tenant: Option<String>,
    /// Address to listen on.
    listen: Option<String>,
    /// Host policy file.
    policy: Option<PathBuf>,
    /// Rule sets (YAML or .wasm).
    #[serde(default)]
    rules: Vec<PathBuf>,
    /// Extra runbook components (each signed, admitted by the trust policy).
    runbooks_dir: Option<PathBuf>,
    /// The trust policy that admits them.
    trust: Option<PathBuf>,
    /// Labels of the local host, for rules' `host_labels`.
    #[serde(default)]
    host_labels: BTreeMap<String, String>,
    /// Guardrail settings.
    #[serde(default)]
    guardrails: GuardrailConfig,
    /// HTTP API limits.
    #[serde(default)]
    api: ApiFileConfig,
    /// L2 planner settings.
    #[serde(default)]
    planner: PlannerFileConfig,
    /// The L2 model (the API key comes from the environment only).
    #[serde(default)]
    llm: LlmFileConfig,
    /// SLA deadlines of escalations, by severity.
    #[serde(default)]
    escalations: runwarden_control::SlaConfig,
    /// The periodic WORM archive of the evidence log (S3 Object Lock).
    archive: Option<ArchiveFileConfig>,
}

/// `[archive]`: every `every`, the log's new records go to `to` as sealed segments
/// under COMPLIANCE retention. Credentials come from the environment only
/// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchiveFileConfig {
    /// s3://BUCKET/PREFIX.
    to: String,
    /// Minutes between runs (default 60).
    every: Option<String>,
    /// Retention of each segment: days (`2190d`) or years (`6y`, the default).
    retention: Option<String>,
    /// The S3 endpoint (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else AWS S3).
    endpoint: Option<String>,
    /// The region (default: AWS_REGION, else us-east-1).
    region: Option<String>,
}

/// What the periodic archive needs, checked at start.
struct ArchivePlan {
    target: runwarden_archive::Target,
    client: runwarden_archive::s3::S3,
    retention_days: u64,
    every: std::time::Duration,
}

impl ArchiveFileConfig {
    fn plan(&self) -> anyhow::Result<ArchivePlan> {
        let target = self.to.parse().context("[archive] to")?;
        let retention_days =
            crate::archive::parse_retention(self.retention.as_deref().unwrap_or("6y"))
                .context("[archive] retention")?;
        let every = crate::archive::parse_every(self.every.as_deref().unwrap_or("1h"))
            .context("[archive] every")?;
        let s3 = crate::archive::S3Args {
            s3_endpoint: self
                .endpoint
                .clone()
                .or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok()),
            s3_region: self
                .region
                .clone()
                .or_else(|| std::env::var("AWS_REGION").ok()),
        };
        let client = s3.client().context("[archive]")?;
        Ok(ArchivePlan {
            target,
            client,
            retention_days,
            every,
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PlannerFileConfig {
    min_confidence: Option<f64>,
    history: Option<u32>,
    promote_after: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LlmFileConfig {
    provider: Option<String>,
    url: Option<String>,
    model: Option<String>,
}

impl FileConfig {
    /// The planner settings: defaults, then the file.
    fn planner(&self) -> anyhow::Result<PlannerConfig> {
        let mut p = PlannerConfig::default();
        if let Some(c) = self.planner.min_confidence {
            anyhow::ensure!(
                (0.0..=1.0).contains(&c),
                "[planner] min_confidence = {c}: use a number from 0 to 1"
            );
            p.min_confidence = c;
        }
        if let Some(h) = self.planner.history {
            p.history = h;
        }
        if let Some(n) = self.planner.promote_after {
            anyhow::ensure!(
                (1..=1000).contains(&n),
                "[planner] promote_after = {n}: use a count from 1 to 1000"
            );
            p.promote_after = n;
        }
        Ok(p)
    }

    /// The L2 model: `RUNWARDEN_LLM_*` in the environment over `[llm]` in the file; the
    /// key from `RUNWARDEN_LLM_API_KEY` or the provider's usual variable. None: offline.
    fn llm(&self) -> anyhow::Result<Option<LlmConfig>> {
        let file = |name: &str| match name {
            "RUNWARDEN_LLM_PROVIDER" => self.llm.provider.clone(),
            "RUNWARDEN_LLM_URL" => self.llm.url.clone(),
            "RUNWARDEN_LLM_MODEL" => self.llm.model.clone(),
            _ => None,
        };
        LlmConfig::from_env(|name| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .or_else(|| file(name))
        })
        .map_err(|e| anyhow::anyhow!("the L2 planner: {e}"))
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ApiFileConfig {
    max_body_bytes: Option<usize>,
    rate_per_sec: Option<u32>,
    burst: Option<u32>,
    mcp_origins: Option<Vec<String>>,
    max_connections: Option<usize>,
    header_timeout_secs: Option<u64>,
    body_timeout_secs: Option<u64>,
}

fn read_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("read config {}", path.display()))?;
    // The error's own text quotes the offending line, which may hold a webhook URL or
    // secret: only the position and the message are shown.
    toml::from_str(&text).map_err(|e| {
        let at = e
            .span()
            .map(|span| {
                let before = text.get(..span.start).unwrap_or(&text);
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}: ")
            })
            .unwrap_or_default();
        anyhow::anyhow!(
            "config {}: {at}{}",
            path.display(),
            e.message().split_whitespace().collect::<Vec<_>>().join(" ")
        )
    })
}

/// Compile YAML rule sets, read rule components.
pub(crate) fn rule_sets(
    rt: &runwarden_runtime::Runtime,
    files: &[PathBuf],
    extra_runbooks: Option<&Path>,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut yaml = Vec::new();
    let mut out = Vec::new();
    for f in files {
        if f.extension().is_some_and(|e| e == "wasm") {
            out.push(std::fs::read(f).with_context(|| format!("read {}", f.display()))?);
        } else {
            yaml.push((
                f.display().to_string(),
                std::fs::read_to_string(f).with_context(|| format!("read {}", f.display()))?,
            ));
        }
    }
    if files.is_empty() {
        yaml.push((
            "rules/standard.yaml (built in)".to_string(),
            STANDARD_RULES.to_string(),
        ));
    }
    if !yaml.is_empty() {
        let catalog = crate::rules::catalog(rt, extra_runbooks)?;
        let program = runwarden_control::rules::compile(&yaml, Some(&catalog))?;
        out.insert(
            0,
            runwarden_control::rules::embed(runwarden_guests::rule_engine(), &program.to_bytes())?,
        );
    }
    Ok(out)
}

/// The standard runbooks, then the components of the runbooks directory the trust
/// policy admits (see [`crate::trusted`]).
fn runbooks(
    rt: &runwarden_runtime::Runtime,
    dir: Option<&Path>,
    trust: Option<&crate::trusted::Trust>,
) -> anyhow::Result<(Vec<Vec<u8>>, crate::trusted::Components)> {
    let mut out: Vec<Vec<u8>> = runwarden_guests::standard_runbooks()
        .map(|(_, b)| b.to_vec())
        .collect();
    let mut extra = crate::trusted::components(rt, dir, trust)?;
    crate::trusted::report_refusals(&extra.refused);
    out.append(&mut extra.admitted);
    Ok((out, extra))
}

/// The database: `--evidence-db`, else DATA_DIR/evidence.db.
fn database(data_dir: &Path, log: &crate::evidence::LogArgs) -> String {
    match &log.evidence_db {
        Some(db) => db.clone(),
        None => data_dir.join("evidence.db").display().to_string(),
    }
}

/// The admin token file: created (0600) with a fresh admin token on first start.
fn admin_token(data_dir: &Path) -> PathBuf {
    data_dir.join("admin-token")
}

/// `runwarden up`: the control plane and this host's agent in one process.
pub fn up(
    args: UpArgs,
    data_dir: PathBuf,
    log: &crate::evidence::LogArgs,
) -> anyhow::Result<ExitCode> {
    run_control(args, data_dir, log, Role::Up)
}

/// A control plane: with this host's agent in process (`runwarden up`, and `runwarden
/// agent run` whose control plane hands up what L1 cannot finish), or with agents over
/// NATS JetStream (`runwarden server`).
pub(crate) fn run_control(
    args: UpArgs,
    data_dir: PathBuf,
    log: &crate::evidence::LogArgs,
    role: Role,
) -> anyhow::Result<ExitCode> {
    let config_path = args.config.clone().or_else(|| {
        let p = data_dir.join("runwarden.toml");
        p.exists().then_some(p)
    });
    let file = match &config_path {
        Some(p) => read_config(p)?,
        None => FileConfig::default(),
    };
    let planner = file.planner()?;
    // Each process archives the log it signs: `up` its host's, a server its control log,
    // an agent its host's (only the host's key can seal a segment of the host's log).
    let archive = file
        .archive
        .as_ref()
        .map(ArchiveFileConfig::plan)
        .transpose()?;
    let tenant = match (&role, &file.tenant) {
        (Role::Agent(a), Some(t)) if *t != a.tenant => bail!(
            "tenant = {t:?} in the config, but this agent enrolled into tenant {:?}",
            a.tenant
        ),
        (Role::Agent(a), _) => a.tenant.clone(),
        (_, t) => t.clone().unwrap_or_else(|| LOCAL_TENANT.to_string()),
    };
    if tenant.is_empty()
        || !tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':'))
    {
        bail!("tenant = {tenant:?} in the config: letters, digits and - _ . @ : only");
    }
    let planner_threshold = planner.min_confidence;
    // What may be shown of each webhook: its name and host (the URL is a secret).
    let webhooks: Vec<String> = file
        .escalations
        .webhooks
        .iter()
        .map(|w| format!("{} → {} ({})", w.name, w.host(), w.format.as_str()))
        .collect();
    let llm = file.llm()?;
    let listen = args.listen.or(file.listen).unwrap_or_else(|| {
        match role {
            Role::Agent(_) => AGENT_LISTEN,
            _ => DEFAULT_LISTEN,
        }
        .to_string()
    });
    let policy_path = args.policy.or(file.policy);
    let policy = match (&role, &policy_path) {
        (Role::Agent(a), Some(p)) if std::fs::canonicalize(p).ok().as_ref() != Some(&a.policy) => {
            bail!(
                "--policy {}: this agent runs under the policy it enrolled with ({})",
                p.display(),
                a.policy.display()
            )
        }
        (Role::Agent(a), _) => {
            let policy = runwarden_runtime::Policy::load(&a.policy)?;
            if policy.host_id != a.host_id {
                bail!(
                    "{} is now the policy of host {:?}; this agent enrolled as {:?}",
                    a.policy.display(),
                    policy.host_id,
                    a.host_id
                );
            }
            policy
        }
        (_, Some(p)) => runwarden_runtime::Policy::load(p)?,
        (_, None) => runwarden_runtime::Policy::parse(EXAMPLE_POLICY)?,
    };
    let rules_files = if args.rules.is_empty() {
        file.rules
    } else {
        args.rules
    };
    let runbooks_dir = args.runbooks_dir.or(file.runbooks_dir);
    runwarden_evidence::create_private_dir(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let database = database(&data_dir, log);
    let mut api = runwarden_api::ApiConfig::default();
    if let Some(v) = file.api.max_body_bytes {
        api.max_body_bytes = v;
    }
    if let Some(v) = file.api.rate_per_sec {
        api.rate_per_sec = v;
    }
    if let Some(v) = &file.api.mcp_origins {
        api.mcp_origins = v.clone();
    }
    if let Some(v) = file.api.burst {
        api.burst = v;
    }
    if let Some(v) = file.api.max_connections {
        anyhow::ensure!(v > 0, "[api] max_connections must be at least 1");
        api.max_connections = v;
    }
    for (v, slot, key) in [
        (
            file.api.header_timeout_secs,
            &mut api.header_timeout,
            "header_timeout_secs",
        ),
        (
            file.api.body_timeout_secs,
            &mut api.body_timeout,
            "body_timeout_secs",
        ),
    ] {
        if let Some(v) = v {
            anyhow::ensure!(
                (1..=3600).contains(&v),
                "[api] {key} must be between 1 and 3600 seconds, not {v}"
            );
            *slot = std::time::Duration::from_secs(v);
        }
    }

    let rt = Arc::new(crate::runbook::runtime(data_dir.clone())?);
    let rule_sets = rule_sets(&rt, &rules_files, runbooks_dir.as_deref())?;
    let trust = crate::trusted::Trust::find(args.trust.or(file.trust), &data_dir)?;
    let (runbooks, extra) = runbooks(&rt, runbooks_dir.as_deref(), trust.as_ref())?;
    // Blocking threads carry rule evaluations and runs waiting for a slot (at most
    // `runwarden_runtime::MAX_RUNS` run at once): past this many, work queues instead of
    // each waiting incident holding a thread of its own.
    {
        let rt = Arc::downgrade(&rt);
        crate::memory::on_idle(move || {
            if let Some(rt) = rt.upgrade() {
                rt.on_idle_run_threads(crate::memory::collect_this_thread);
            }
        });
    }
    let io = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(64)
        .on_thread_park(crate::memory::on_park)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    io.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("cannot listen on {listen}: pass --listen ADDR:PORT"))?;
        let addr = listener.local_addr()?;
        // `up`: the control plane and this host's agent, in one process over the
        // in-process link — the same seam as a fleet's server and agents over NATS.
        let policy = Arc::new(policy);
        let host_id = policy.host_id.clone();
        let labels = match &role {
            Role::Agent(a) => a.labels.clone(),
            _ => file.host_labels,
        };
        let (dispatch, hosts, signer, local, nats, minter): (
            Arc<dyn runwarden_bus::Dispatch>,
            _,
            _,
            _,
            _,
            _,
        ) = match &role {
            Role::Up | Role::Agent(_) => {
                let (link, agent) = runwarden_bus::in_process(&policy.host_id, 256);
                (
                    Arc::new(link),
                    vec![HostConfig {
                        tenant: tenant.clone(),
                        policy: policy.clone(),
                        labels,
                        inventory: runwarden_control::Inventory::detect(Path::new("/")),
                    }],
                    runwarden_control::LogSigner::Host(policy.host_id.clone()),
                    Some(agent),
                    None,
                    None,
                )
            }
            Role::Server(f) => {
                let (client, dispatch, minter) =
                    crate::fleet::connect_server(f, &data_dir).await?;
                (
                    dispatch,
                    Vec::new(),
                    runwarden_control::LogSigner::Control,
                    None,
                    Some(client),
                    minter,
                )
            }
        };
        let controller = Arc::new(
            Controller::start(
                ControlConfig {
                    database,
                    data_dir: data_dir.clone(),
                    hosts,
                    signer,
                    guardrails: file.guardrails,
                    llm,
                    planner,
                    sla: file.escalations,
                    dispatch,
                    hand_up: matches!(role, Role::Agent(_)),
                },
                rt.clone(),
                runbooks.clone(),
                rule_sets,
            )
            .await?,
        );
        if !matches!(role, Role::Agent(_)) {
            // Promoted rules reach hosts as a rule set signed by this key.
            controller.set_flywheel_publisher(crate::flywheel::publisher_key(&data_dir)?);
        }
        if let Some(operator) = minter {
            controller.set_credential_minter(operator.minter.clone());
            tokio::spawn(operator.keep_revocations(controller.clone()));
        }
        let mut bus = None;
        if let Some(agent) = local {
            let (host_key, _) =
                runwarden_control::evidence::host_key(&data_dir, None, &policy.host_id)?;
            // The agent runs this control plane's jobs; an agent's also the fleet's.
            let mut control_keys = vec![controller.control_public_key()];
            if let Role::Agent(a) = &role {
                control_keys.push(a.control_key.clone());
            }
            let executor = runwarden_agent::spawn_local(
                rt,
                runwarden_agent::AgentConfig {
                    publishers: extra.publishers.clone(),
                    trust: trust.as_ref().map(|t| t.policy.clone()),
                    components: Some(data_dir.join("components")),
                    tenant: tenant.clone(),
                    policy,
                    runbooks: Vec::new(),
                    key: host_key,
                    control_keys,
                    log: controller.evidence_log(),
                    journal: data_dir.join("agent-journal.db"),
                },
                &runbooks,
                agent,
            )
            .await?;
            // This host's control plane decides with what the agent runs, deployments
            // included.
            for l in executor.deployed() {
                controller.set_host_runbook(&host_id, &l.manifest().name.clone(), Some(l));
            }
            for (name, _, set) in executor.deployed_rules() {
                let set = runwarden_agent::components::Deployable::Rules(set);
                controller.set_host_component(&host_id, &name, Some(set));
            }
            {
                let (controller, host) = (Arc::downgrade(&controller), host_id.clone());
                executor.on_swap(move |name, now| {
                    if let Some(c) = controller.upgrade() {
                        c.set_host_component(&host, name, now);
                    }
                });
            }
            // What the trust policy refused is on this host's record.
            for r in &extra.refused {
                executor
                    .refuse_component(&r.name, &r.sha256, &r.path.display().to_string(), &r.why)
                    .await?;
            }
            if let Role::Agent(a) = &role {
                bus = Some(crate::fleet::AgentBus::start(
                    a,
                    executor,
                    controller.clone(),
                    &data_dir,
                ));
            }
        }
        let events = nats.map(|client| tokio::spawn(crate::fleet::serve_events(client, controller.clone())));
        // Deployments go out from the control plane that holds the registry (`up`, a
        // server), not from an agent's own.
        if !matches!(role, Role::Agent(_)) {
            tokio::spawn(
                controller
                    .clone()
                    .run_deployments(std::time::Duration::from_secs(2)),
            );
        }
        if let Some(plan) = archive {
            let store = controller.evidence_log();
            let key = crate::evidence::export_key(&data_dir, None, &store).await?;
            outln!(
                "  evidence archive: {} every {} s, locked {} days",
                plan.target,
                plan.every.as_secs(),
                plan.retention_days
            );
            crate::archive::spawn_periodic(
                store,
                key,
                crate::evidence::local_public_keys(&data_dir),
                plan.target,
                plan.client,
                plan.retention_days,
                plan.every,
            );
        }
        // The agent's local intake takes incidents (operate); `up` and a server get an
        // admin of their tenant.
        let (token_file, scope) = match &role {
            Role::Agent(_) => (data_dir.join(LOCAL_TOKEN), Scope::Operate),
            _ => (admin_token(&data_dir), Scope::Admin),
        };
        if !token_file.exists() {
            let (secret, id) = controller
                .create_token(
                    &tenant,
                    scope,
                    &format!("{} (created at first start)", scope.as_str()),
                )
                .await?;
            write_secret(&token_file, &secret)?;
            errln!("created {} token {id} for tenant {tenant}", scope.as_str());
        }
        match &role {
            Role::Up => outln!("runwarden is up at http://{addr}/ (host {host_id}, tenant {tenant})"),
            Role::Server(f) => outln!(
                "runwarden server is up at http://{addr}/ (agents over NATS at {}, tenant {tenant})",
                f.nats
            ),
            Role::Agent(a) => outln!(
                "runwarden agent of host {host_id} (tenant {tenant}) is up: local intake at http://{addr}/, jobs and hand-ups over NATS at {}",
                a.nats
            ),
        }
        outln!(
            "  {} token: {} (tenant {tenant})",
            scope.as_str(),
            token_file.display()
        );
        outln!(
            "  {} runbooks, {} rules; evidence and state in {}",
            controller.runbooks().len(),
            controller.rules().len(),
            log.evidence_db
                .as_deref()
                .map(|_| "the configured database")
                .unwrap_or("the data dir")
        );
        outln!(
            "  L2 planner: {} (acts at confidence ≥ {})",
            controller.planner(),
            planner_threshold
        );
        for w in &webhooks {
            outln!("  escalation webhook: {w}");
        }
        if let Some(p) = &config_path {
            outln!("  config: {}", p.display());
        }
        // A signed checkpoint of the log every minute it grew.
        let cp = controller.clone();
        let ticker = tokio::spawn(async move {
            let mut t = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                t.tick().await;
                if let Err(e) = cp.checkpoint().await {
                    errln!("warning: periodic checkpoint: {e}");
                }
            }
        });
        // The leases of incidents in progress, renewed: another server on the same
        // PostgreSQL never takes them for stalled.
        let leases = controller.clone();
        let renewer = tokio::spawn(async move {
            let every = std::time::Duration::from_millis(runwarden_control::LEASE_RENEW_MS as u64);
            let mut t = tokio::time::interval(every);
            loop {
                t.tick().await;
                if let Err(e) = leases.renew_leases().await {
                    errln!("warning: renewing the leases of incidents in progress: {e}");
                }
            }
        });
        // Hosts enrolled, re-enrolled, drained or undrained through another server on
        // the same database: served here within HOST_SYNC_SECS.
        let hosts = controller.clone();
        let syncer = tokio::spawn(async move {
            let mut t = tokio::time::interval(std::time::Duration::from_secs(
                runwarden_control::HOST_SYNC_SECS,
            ));
            loop {
                t.tick().await;
                if let Err(e) = hosts.sync_hosts().await {
                    errln!("warning: reading the hosts table: {e}");
                }
            }
        });
        // Escalations past their SLA deadline, announced to the webhooks once each; and
        // incidents a failed write left `processing`, concluded.
        let sla = controller.clone();
        let breaches = tokio::spawn(async move {
            let mut t = tokio::time::interval(std::time::Duration::from_secs(30));
            loop {
                t.tick().await;
                if let Err(e) = sla.announce_breaches().await {
                    errln!("warning: announcing SLA breaches: {e}");
                }
                // Incidents acknowledged when a write then failed (a full disk): concluded
                // and recorded as soon as the store takes writes again.
                match sla
                    .conclude_stalled(std::time::Duration::from_secs(60))
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => errln!("concluded {n} incident(s) left processing by a failed write"),
                    Err(e) => errln!("warning: concluding stalled incidents: {e}"),
                }
            }
        });
        runwarden_api::serve(listener, controller.clone(), api, shutdown_signal()).await?;
        ticker.abort();
        breaches.abort();
        renewer.abort();
        syncer.abort();
        if let Some(e) = events {
            e.abort();
        }
        if let Some(bus) = bus {
            // Jobs from the fleet in progress finish and are recorded.
            bus.stop().await;
        }
        // A last checkpoint covering everything written before the stop.
        controller.checkpoint().await?;
        outln!("runwarden stopped: in-flight incidents finished, evidence written");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without signal handlers the process still stops on the default action.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    errln!("stopping: finishing in-flight incidents");
}

/// Write a secret to a new file only its owner can read.
pub(crate) fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    writeln!(f, "{secret}").with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// `runwarden token create`.
pub fn token_create(
    data_dir: &Path,
    log: &crate::evidence::LogArgs,
    tenant: &str,
    scope: &str,
    name: &str,
) -> anyhow::Result<ExitCode> {
    let Some(scope) = Scope::parse(scope) else {
        bail!("--scope {scope:?}: use read, operate or admin");
    };
    runwarden_evidence::create_private_dir(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let database = database(data_dir, log);
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (secret, id) = io.block_on(async {
        let store = runwarden_control::store::ControlStore::open(&database).await?;
        if tenant.is_empty()
            || !tenant
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':'))
        {
            bail!("--tenant {tenant:?}: letters, digits and - _ . @ : only");
        }
        Ok::<_, anyhow::Error>(runwarden_control::create_token(&store, tenant, scope, name).await?)
    })?;
    errln!(
        "created token {id} for tenant {tenant}, scope {}; it is shown once, keep it secret:",
        scope.as_str()
    );
    outln!("{secret}");
    Ok(ExitCode::SUCCESS)
}

/// `runwarden token list` (no id) and `runwarden token revoke ID`.
pub fn token_admin(
    data_dir: &Path,
    log: &crate::evidence::LogArgs,
    revoke: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let database = database(data_dir, log);
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    io.block_on(async {
        let store = runwarden_control::store::ControlStore::open(&database).await?;
        match revoke {
            Some(id) => {
                if !store.revoke_token(id).await? {
                    bail!("no token {id:?}: `runwarden token list` shows them");
                }
                outln!("revoked {id}");
            }
            None => {
                for t in store.list_tokens().await? {
                    outln!(
                        "{:<18} {:<16} {:<8} {}{}",
                        t.id,
                        t.tenant,
                        t.scope,
                        t.name,
                        if t.revoked { " (revoked)" } else { "" }
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
