//! The fleet: `runwarden server` (the control plane, agents over NATS JetStream),
//! `runwarden agent enroll|run` (one per host) and `runwarden hosts` (the operator's view).
//!
//! The server decides and executes nothing: each job goes, signed, to the host's agent
//! over NATS; the agent runs it under its own policy, signs the record into its own log
//! and forwards that log, in signed segments, for the server to mirror.

use crate::incident::{Client, ServerArgs};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use runwarden_bus::{Address, BusError, Dispatch};
use runwarden_bus::{jetstream, nats_auth};
use runwarden_control::Controller;
use runwarden_proto::bus::{LogSegment, RunReport};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the server waits for an agent's report of one job, per attempt.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts per job (the same job id: run once, the agent answers a repeat from its
/// log). Six minutes in all: past the job's expiry (5 min) and the clock skew an agent
/// allows (1 min), so a job given up on can no longer run.
const DISPATCH_ATTEMPTS: u32 = 6;
/// How often an agent forwards its log when it has new records, and says it is alive.
const FORWARD_EVERY: Duration = Duration::from_secs(1);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);
/// What `runwarden agent enroll` writes in the data directory.
const AGENT_FILE: &str = "agent.json";
/// The host's own NATS credentials, when the control plane minted them (0600).
const NATS_CREDS: &str = "nats.creds";

/// How `runwarden server` reaches its agents.
pub struct Fleet {
    /// `nats://…`.
    pub nats: String,
    /// A NATS credentials file, if the server needs one.
    pub creds: Option<PathBuf>,
}

/// What the server needs of NATS: the connection, the dispatcher, and (when it is the
/// operator) what mints each enrolling agent's credentials.
pub(crate) type ServerBus = (
    jetstream::Client,
    Arc<dyn Dispatch>,
    Option<Arc<runwarden_control::CredentialMinter>>,
);

/// `runwarden server`.
#[derive(Args)]
pub struct ServerCmd {
    #[command(flatten)]
    control: crate::serve::UpArgs,
    /// NATS server with JetStream (2.11 or later).
    #[arg(long, env = "RUNWARDEN_NATS", required_unless_present = "init_nats")]
    nats: Option<String>,
    /// NATS credentials file of the control plane's user (default:
    /// DATA_DIR/nats/control.creds, written by --init-nats).
    #[arg(long, env = "RUNWARDEN_NATS_CREDS")]
    nats_creds: Option<PathBuf>,
    /// Make this control plane the NATS operator (once): write DATA_DIR/nats/ — the
    /// operator and fleet account keys, `nats-server.conf` for the NATS server, and the
    /// control plane's own credentials — then exit. From then on each enrolling agent gets
    /// credentials that reach only its own host's subjects.
    #[arg(long)]
    init_nats: bool,
}

/// The NATS account every agent and the control plane use (one per fleet; agents are
/// kept apart by their users' permissions).
const NATS_ACCOUNT: &str = "runwarden";

/// The fleet's NATS identity in DATA_DIR/nats/: the operator and the account (seeds,
/// 0600), if this control plane is the operator.
fn nats_identity(
    data_dir: &Path,
    create: bool,
) -> anyhow::Result<Option<(nats_auth::Operator, nats_auth::Account)>> {
    let dir = data_dir.join("nats");
    let (op_file, acct_file) = (dir.join("operator.seed"), dir.join("account.seed"));
    if !op_file.exists() {
        if !create {
            return Ok(None);
        }
        runwarden_evidence::create_private_dir(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let op = nats_auth::Operator::generate("runwarden")?;
        let acct = op.account(NATS_ACCOUNT)?;
        runwarden_evidence::write_atomic(&acct_file, acct.seed().expose().as_bytes())?;
        runwarden_evidence::write_atomic(&op_file, op.seed().expose().as_bytes())?;
    }
    let read = |f: &Path| -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(f)
            .with_context(|| format!("read {}", f.display()))?
            .trim()
            .to_string())
    };
    let op = nats_auth::Operator::from_seed("runwarden", &read(&op_file)?)?;
    let acct = op.account_with(
        NATS_ACCOUNT,
        Some(&read(&acct_file)?),
        &nats_auth::AccountSpec::default(),
    )?;
    Ok(Some((op, acct)))
}

/// `runwarden server`: the control plane; agents over NATS.
pub fn server(
    cmd: ServerCmd,
    data_dir: PathBuf,
    log: &crate::evidence::LogArgs,
) -> anyhow::Result<ExitCode> {
    if cmd.init_nats {
        let (op, acct) =
            nats_identity(&data_dir, true)?.context("the NATS identity was not written")?;
        let dir = data_dir.join("nats");
        let conf = dir.join("nats-server.conf");
        let text = format!(
            "# Written by `runwarden server --init-nats`: operator mode, the fleet's account\n\
             # preloaded. Add listen/port and a jetstream store_dir; keep sync_interval.\n\
             {}\njetstream {{ sync_interval: always }}\n",
            nats_auth::server_config(&op, std::slice::from_ref(&acct))
        );
        runwarden_evidence::write_atomic(&conf, text.as_bytes())?;
        let creds = acct.user("runwarden-control", &nats_auth::Permissions::control())?;
        runwarden_evidence::write_atomic(
            &dir.join("control.creds"),
            creds.to_creds_file().expose().as_bytes(),
        )?;
        outln!("{}", conf.display());
        errln!(
            "wrote the NATS operator and fleet account (keys in {}, 0600), the NATS server's configuration ({}) and this control plane's credentials ({}); start nats-server with that configuration, then `runwarden server --nats URL`",
            dir.display(),
            conf.display(),
            dir.join("control.creds").display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    crate::serve::run_control(
        cmd.control,
        data_dir,
        log,
        Some(Fleet {
            nats: cmd
                .nats
                .context("pass --nats nats://HOST:PORT (a NATS server with JetStream)")?,
            creds: cmd.nats_creds,
        }),
    )
}

/// Connect the server to NATS: streams, and the dispatcher that reaches agents.
pub(crate) async fn connect_server(f: &Fleet, data_dir: &Path) -> anyhow::Result<ServerBus> {
    let identity = nats_identity(data_dir, false)?;
    let own = data_dir.join("nats/control.creds");
    let creds = f
        .creds
        .clone()
        .or_else(|| (identity.is_some() && own.exists()).then_some(own));
    let minter: Option<Arc<runwarden_control::CredentialMinter>> =
        identity.map(|(_, acct)| -> Arc<runwarden_control::CredentialMinter> {
            Arc::new(move |tenant: &str, host: &str| {
                let perms = nats_auth::Permissions::agent(
                    tenant,
                    host,
                    &jetstream::agent_consumer_name(tenant, host),
                )
                .map_err(|e| e.to_string())?;
                let user = acct
                    .user(&format!("agent-{tenant}-{host}"), &perms)
                    .map_err(|e| e.to_string())?;
                Ok(user.to_creds_file().expose().to_string())
            })
        });
    let client = jetstream::connect(&f.nats, creds.as_deref(), "runwarden-server")
        .await
        .with_context(|| format!("cannot use NATS at {}", f.nats))?;
    jetstream::ensure_streams(&client).await?;
    let inner = jetstream::JetStreamDispatch::start(&client, ANSWER_TIMEOUT).await?;
    if let Some(mut unclaimed) = inner.take_unclaimed() {
        // Reports of jobs no process here waits for (sent before a restart): their
        // records are in the hosts' logs, which the server mirrors; the incidents were
        // escalated when the server restarted.
        tokio::spawn(async move {
            while let Some(r) = unclaimed.recv().await {
                errln!(
                    "a report of job {} from host {} came after its incident was concluded (its records are in the host's log)",
                    crate::term::clean(&r.job),
                    crate::term::clean(&r.host)
                );
            }
        });
    }
    Ok((
        client.clone(),
        Arc::new(FleetDispatch {
            client,
            inner,
            ready: Mutex::default(),
        }),
        minter,
    ))
}

/// Make the job consumer of `to` (once per process): its agent can then take jobs.
async fn ensure_consumer(
    client: &jetstream::Client,
    ready: &Mutex<HashSet<Address>>,
    to: &Address,
) -> Result<(), BusError> {
    if ready.lock().unwrap_or_else(|e| e.into_inner()).contains(to) {
        return Ok(());
    }
    jetstream::ensure_agent_consumer(
        client,
        &to.tenant,
        &to.host,
        &jetstream::ConsumerSettings::default(),
    )
    .await?;
    ready
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(to.clone());
    Ok(())
}

/// Jobs over JetStream: the host's consumer made once, a job sent again (same id) when an
/// attempt failed.
struct FleetDispatch {
    client: jetstream::Client,
    inner: jetstream::JetStreamDispatch,
    ready: Mutex<HashSet<Address>>,
}

#[async_trait::async_trait]
impl Dispatch for FleetDispatch {
    async fn dispatch(
        &self,
        to: &Address,
        job_id: &str,
        job: Vec<u8>,
    ) -> Result<RunReport, BusError> {
        ensure_consumer(&self.client, &self.ready, to).await?;
        let mut last = None;
        for _ in 0..DISPATCH_ATTEMPTS {
            match self.inner.dispatch(to, job_id, job.clone()).await {
                Ok(r) => return Ok(r),
                Err(e @ (BusError::Transport(_) | BusError::Timeout(_))) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| BusError::Timeout(to.host.clone())))
    }
}

/// Take agents' events for as long as the server runs: log segments mirrored (in order,
/// under each host's enrolled key), heartbeats noted.
pub(crate) async fn serve_events(client: jetstream::Client, controller: Arc<Controller>) {
    // Every enrolled host's job consumer exists before its first job, so its agent can
    // wait on it; a host enrolled since is seen at its first heartbeat.
    let ready = Mutex::default();
    for tenant_host in controller.all_hosts() {
        let to = Address {
            tenant: tenant_host.tenant.clone(),
            host: tenant_host.id().to_string(),
        };
        if let Err(e) = ensure_consumer(&client, &ready, &to).await {
            errln!("warning: the job consumer of host {}: {e}", to.host);
        }
    }
    let mut events = loop {
        match jetstream::Events::open(&client).await {
            Ok(e) => break e,
            Err(e) => {
                errln!("warning: agents' events: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    loop {
        let ev = events.next().await;
        let owner = controller
            .hosts_of(&ev.tenant)
            .iter()
            .any(|h| h.id() == ev.host);
        if !owner {
            errln!(
                "an event from host {} of tenant {}, which is not enrolled: dropped",
                crate::term::clean(&ev.host),
                crate::term::clean(&ev.tenant)
            );
            ev.ack().await;
            continue;
        }
        match ev.kind.as_str() {
            "log" => match serde_json::from_slice::<LogSegment>(&ev.payload) {
                Ok(segment) => match controller.ingest_log(&ev.host, &segment).await {
                    Ok(_) => ev.ack().await,
                    Err(e @ runwarden_control::ControlError::Store(_)) => {
                        errln!("warning: mirroring {}'s log: {e}; retrying", ev.host);
                        ev.retry(Duration::from_secs(2)).await;
                    }
                    Err(e) => {
                        errln!(
                            "refused a segment of host {}'s log: {}",
                            crate::term::clean(&ev.host),
                            crate::term::clean(&e.to_string())
                        );
                        ev.ack().await;
                    }
                },
                Err(e) => {
                    errln!(
                        "a malformed log segment from host {}: {e}",
                        crate::term::clean(&ev.host)
                    );
                    ev.ack().await;
                }
            },
            _ => {
                let to = Address {
                    tenant: ev.tenant.clone(),
                    host: ev.host.clone(),
                };
                if let Err(e) = ensure_consumer(&client, &ready, &to).await {
                    errln!("warning: the job consumer of host {}: {e}", to.host);
                }
                let beat: serde_json::Value =
                    serde_json::from_slice(&ev.payload).unwrap_or_default();
                let version = beat["version"]
                    .as_str()
                    .filter(|v| v.len() <= 64 && v.chars().all(|c| c.is_ascii_graphic()));
                if let Err(e) = controller
                    .heard_from(&ev.host, version, beat["log_size"].as_u64())
                    .await
                {
                    errln!("warning: noting {}'s heartbeat: {e}", ev.host);
                }
                ev.ack().await;
            }
        }
    }
}

/// `runwarden agent …`.
#[derive(Subcommand)]
pub enum AgentCommand {
    /// Enroll this host with a control plane (once): prints its tenant and labels.
    Enroll {
        /// The single-use enrollment token (`runwarden hosts enroll-token`).
        #[arg(long, env = "RUNWARDEN_ENROLL_TOKEN", hide_env_values = true)]
        token: String,
        /// This host's id (letters, digits and - _ @ :).
        #[arg(long)]
        host_id: String,
        /// This host's policy (its host_id must be the same).
        #[arg(long)]
        policy: PathBuf,
    },
    /// Run this host's agent: jobs from NATS, records into this host's log, the log
    /// forwarded to the control plane.
    Run {
        /// NATS server with JetStream (2.11 or later).
        #[arg(long, env = "RUNWARDEN_NATS")]
        nats: String,
        /// NATS credentials file of this host's user.
        #[arg(long, env = "RUNWARDEN_NATS_CREDS")]
        nats_creds: Option<PathBuf>,
        /// Also deploy the runbook components in this directory.
        #[arg(long, env = "RUNWARDEN_RUNBOOKS_DIR")]
        runbooks_dir: Option<PathBuf>,
    },
}

/// What an enrolled agent keeps in its data directory.
#[derive(serde::Serialize, serde::Deserialize)]
struct AgentFile {
    server: String,
    tenant: String,
    host_id: String,
    labels: BTreeMap<String, String>,
    control_key: String,
    policy: PathBuf,
}

pub fn agent(
    cmd: AgentCommand,
    server: &ServerArgs,
    data_dir: PathBuf,
) -> anyhow::Result<ExitCode> {
    match cmd {
        AgentCommand::Enroll {
            token,
            host_id,
            policy,
        } => enroll(server, &data_dir, &token, &host_id, &policy),
        AgentCommand::Run {
            nats,
            nats_creds,
            runbooks_dir,
        } => run_agent(
            &data_dir,
            &nats,
            nats_creds.as_deref(),
            runbooks_dir.as_deref(),
        ),
    }
}

fn enroll(
    server: &ServerArgs,
    data_dir: &Path,
    token: &str,
    host_id: &str,
    policy_path: &Path,
) -> anyhow::Result<ExitCode> {
    let base = server
        .server()
        .context("pass --server URL: the control plane to enroll with")?;
    let file = data_dir.join(AGENT_FILE);
    if file.exists() {
        bail!(
            "this data directory already holds an enrolled agent ({}): use another --data-dir, or remove it to enroll again",
            file.display()
        );
    }
    let policy_text = std::fs::read_to_string(policy_path)
        .with_context(|| format!("read {}", policy_path.display()))?;
    let policy = runwarden_runtime::Policy::parse(&policy_text)
        .with_context(|| format!("{}", policy_path.display()))?;
    if policy.host_id != host_id {
        bail!(
            "{} is the policy of host {:?}, not {host_id:?}",
            policy_path.display(),
            policy.host_id
        );
    }
    runwarden_evidence::create_private_dir(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let (key, _) = runwarden_control::evidence::host_key(data_dir, None, host_id)?;
    let body = runwarden_control::Enrollment {
        token: token.trim().to_string(),
        host_id: host_id.to_string(),
        policy: policy_text,
        inventory: runwarden_control::Inventory::detect(Path::new("/")),
        key: key.verifying_key().to_text(),
    };
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let enrolled: runwarden_control::Enrolled = io.block_on(async {
        let resp = reqwest::Client::new()
            .post(format!("{base}/v1/enroll"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body)?)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .with_context(|| format!("cannot reach the control plane at {base}"))?;
        let status = resp.status();
        let v: serde_json::Value =
            serde_json::from_slice(&resp.bytes().await.unwrap_or_default()).unwrap_or_default();
        if !status.is_success() {
            bail!(
                "the control plane refused the enrollment ({status}): {}",
                v["error"]["message"].as_str().unwrap_or("no reason given")
            );
        }
        serde_json::from_value(v).context("the control plane's answer")
    })?;
    let policy =
        std::fs::canonicalize(policy_path).with_context(|| format!("{}", policy_path.display()))?;
    let agent = AgentFile {
        server: base,
        tenant: enrolled.tenant.clone(),
        host_id: enrolled.host_id.clone(),
        labels: enrolled.labels.clone(),
        control_key: enrolled.control_key,
        policy,
    };
    if let Some(creds) = &enrolled.nats_creds {
        runwarden_evidence::write_atomic(&data_dir.join(NATS_CREDS), creds.as_bytes())
            .with_context(|| format!("write {}", data_dir.join(NATS_CREDS).display()))?;
    }
    runwarden_evidence::write_atomic(&file, serde_json::to_string_pretty(&agent)?.as_bytes())
        .with_context(|| format!("write {}", file.display()))?;
    outln!(
        "enrolled host {} into tenant {}",
        crate::term::clean(&enrolled.host_id),
        crate::term::clean(&enrolled.tenant)
    );
    for (k, v) in &enrolled.labels {
        outln!(
            "  label {}={}",
            crate::term::clean(k),
            crate::term::clean(v)
        );
    }
    outln!(
        "  key: {} (its public half is enrolled)",
        key.verifying_key().key_id_hex()
    );
    outln!("  next: runwarden agent run --nats nats://…");
    Ok(ExitCode::SUCCESS)
}

fn run_agent(
    data_dir: &Path,
    nats: &str,
    creds: Option<&Path>,
    runbooks_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let file = data_dir.join(AGENT_FILE);
    let agent: AgentFile = serde_json::from_slice(
        &std::fs::read(&file).with_context(|| {
            format!(
                "{} is missing: enroll first (runwarden agent enroll --server URL --token T --host-id H --policy FILE)",
                file.display()
            )
        })?,
    )
    .with_context(|| format!("{}", file.display()))?;
    let policy = Arc::new(runwarden_runtime::Policy::load(&agent.policy)?);
    if policy.host_id != agent.host_id {
        bail!(
            "{} is now the policy of host {:?}; this agent enrolled as {:?}",
            agent.policy.display(),
            policy.host_id,
            agent.host_id
        );
    }
    let control_key = runwarden_evidence::VerifyingKey::from_text(&agent.control_key)
        .context("the control plane's key in agent.json")?;
    let rt = Arc::new(crate::runbook::runtime(data_dir.to_path_buf())?);
    let mut runbooks = Vec::new();
    for (_, b) in runwarden_guests::standard_runbooks() {
        runbooks.push(rt.load(b)?);
    }
    if let Some(dir) = runbooks_dir {
        for p in crate::rules::wasm_files(dir)? {
            runbooks.push(
                rt.load(&std::fs::read(&p).with_context(|| format!("read {}", p.display()))?)?,
            );
        }
    }
    let (key, _) = runwarden_control::evidence::host_key(data_dir, None, &agent.host_id)?;
    let io = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(32)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    io.block_on(async move {
        let log =
            runwarden_evidence::Store::open(&data_dir.join("evidence.db").display().to_string())
                .await?;
        let executor = Arc::new(
            runwarden_agent::Executor::open(
                rt,
                runwarden_agent::AgentConfig {
                    tenant: agent.tenant.clone(),
                    policy,
                    runbooks,
                    key,
                    control_keys: vec![control_key],
                    log,
                    journal: data_dir.join("agent-journal.db"),
                },
            )
            .await?,
        );
        let interrupted = executor.recover().await?;
        if interrupted > 0 {
            errln!("{interrupted} run(s) cut off by a stop are recorded `interrupted`");
        }
        let own = data_dir.join(NATS_CREDS);
        let creds = creds
            .map(Path::to_path_buf)
            .or_else(|| own.exists().then_some(own));
        let client = jetstream::connect_with(
            nats,
            creds.as_deref(),
            &format!("runwarden-agent-{}", agent.host_id),
            Some(&nats_auth::agent_inbox_prefix(&agent.host_id)?),
        )
        .await
        .with_context(|| format!("cannot use NATS at {nats}"))?;
        let jobs = jetstream::JetStreamJobs::new(&client, &agent.tenant, &agent.host_id)?;
        let stopper = jobs.stopper();
        let serving = tokio::spawn(runwarden_agent::serve(executor.clone(), jobs));
        let forwarding = tokio::spawn(forward(
            client.clone(),
            executor.clone(),
            data_dir.join("forwarded"),
        ));
        outln!(
            "runwarden agent of host {} (tenant {}) is up: jobs from NATS at {nats}",
            crate::term::clean(&agent.host_id),
            crate::term::clean(&agent.tenant)
        );
        crate::serve::shutdown_signal().await;
        stopper.stop();
        // Runs in progress finish and are recorded before the agent stops.
        let _ = serving.await;
        forwarding.abort();
        outln!("runwarden agent stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Forward this host's log to the control plane for as long as the agent runs, and say
/// it is alive. How far it was forwarded is kept in `mark`, written after the server
/// confirmed each segment stored (a segment sent again is taken once).
async fn forward(
    client: jetstream::Client,
    executor: Arc<runwarden_agent::Executor>,
    mark: PathBuf,
) {
    let mut from: u64 = std::fs::read_to_string(&mark)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let (tenant, host) = (executor.tenant().to_string(), executor.host().to_string());
    let mut last_beat = std::time::Instant::now() - HEARTBEAT_EVERY;
    loop {
        match executor.segment(from).await {
            Ok(Some(segment)) => {
                let end = segment.first + segment.envelopes.len() as u64;
                // Message ids are deduplicated per stream: they name the log.
                let id = format!("log-{tenant}-{host}-{}-{end}", segment.first);
                let sent = match serde_json::to_vec(&segment) {
                    Ok(bytes) => {
                        jetstream::publish_event(&client, &tenant, &host, "log", &id, bytes).await
                    }
                    Err(e) => Err(BusError::Refused(e.to_string())),
                };
                match sent {
                    Ok(()) => {
                        from = end;
                        if let Err(e) =
                            runwarden_evidence::write_atomic(&mark, end.to_string().as_bytes())
                        {
                            errln!("warning: noting how far the log was forwarded: {e}");
                        }
                        continue;
                    }
                    Err(e) => errln!("warning: forwarding this host's log: {e}; retrying"),
                }
            }
            Ok(None) => {}
            Err(e) => errln!("warning: reading this host's log to forward it: {e}"),
        }
        if last_beat.elapsed() >= HEARTBEAT_EVERY {
            let size = executor.log().size().await.ok();
            let beat = serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"), "forwarded": from, "log_size": size,
            });
            let id = format!("hb-{tenant}-{host}-{}", runwarden_agent::now_ms());
            if jetstream::publish_event(
                &client,
                &tenant,
                &host,
                "heartbeat",
                &id,
                beat.to_string().into_bytes(),
            )
            .await
            .is_ok()
            {
                last_beat = std::time::Instant::now();
            }
        }
        tokio::time::sleep(FORWARD_EVERY).await;
    }
}

/// `runwarden hosts …` (through the control plane's API).
#[derive(Subcommand)]
pub enum HostsCommand {
    /// Print a single-use, expiring token that enrolls one host into your tenant.
    EnrollToken {
        /// The tenant (default: your token's; another is refused).
        #[arg(long)]
        tenant: Option<String>,
        /// Labels of the host it enrolls: k=v,k=v.
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        /// Seconds it stays usable (60 to 604800; default 3600).
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// List your tenant's hosts.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send no new jobs to a host (its incidents escalate).
    Drain {
        /// The host.
        host: String,
    },
    /// Send jobs to a drained host again.
    Undrain {
        /// The host.
        host: String,
    },
}

pub fn hosts(cmd: HostsCommand, server: &ServerArgs, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let client = Client::new(server, data_dir)?;
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    io.block_on(async {
        match cmd {
            HostsCommand::EnrollToken { tenant, labels, ttl } => {
                let mut map = BTreeMap::new();
                for l in labels.iter().filter(|l| !l.is_empty()) {
                    let Some((k, v)) = l.split_once('=') else {
                        bail!("--labels {l:?}: give k=v pairs, comma-separated");
                    };
                    map.insert(k.to_string(), v.to_string());
                }
                let v = client
                    .send(client.http.post(format!("{}/v1/hosts/enroll-tokens", client.base)).header("content-type", "application/json").body(
                        serde_json::json!({"tenant": tenant, "labels": map, "ttl_secs": ttl}).to_string(),
                    ))
                    .await?;
                outln!("{}", crate::term::clean(v["token"].as_str().unwrap_or_default()));
                errln!(
                    "enrollment token {} for tenant {}, usable once until {}: runwarden agent enroll --server {} --token … --host-id … --policy …",
                    crate::term::clean(v["id"].as_str().unwrap_or("?")),
                    crate::term::clean(v["tenant"].as_str().unwrap_or("?")),
                    crate::term::clean(v["expires_at"].as_str().unwrap_or("?")),
                    client.base
                );
            }
            HostsCommand::List { json } => {
                let v = client
                    .send(client.http.get(format!("{}/v1/hosts", client.base)))
                    .await?;
                if json {
                    outln!("{}", serde_json::to_string_pretty(&v["hosts"])?);
                } else {
                    outln!(
                        "{:<24} {:<16} {:<26} {:<8} {:<8} {:<11} labels",
                        "HOST",
                        "TENANT",
                        "LAST SEEN",
                        "STATE",
                        "VERSION",
                        "LOG (HELD)"
                    );
                    for h in v["hosts"].as_array().into_iter().flatten() {
                        let labels: Vec<String> = h["labels"]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                            .collect();
                        let log = match (h["log_records"].as_u64(), h["mirrored_records"].as_u64()) {
                            (Some(n), Some(m)) => format!("{n} ({m})"),
                            (None, Some(m)) => format!("? ({m})"),
                            _ => "-".to_string(),
                        };
                        outln!(
                            "{:<24} {:<16} {:<26} {:<8} {:<8} {:<11} {}",
                            crate::term::clean(h["id"].as_str().unwrap_or("?")),
                            crate::term::clean(h["tenant"].as_str().unwrap_or("?")),
                            crate::term::clean(h["last_seen"].as_str().unwrap_or("never")),
                            if h["drained"] == true {
                                "drained"
                            } else if h["online"] == true {
                                "online"
                            } else {
                                "offline"
                            },
                            crate::term::clean(h["version"].as_str().unwrap_or("-")),
                            log,
                            crate::term::clean(&labels.join(","))
                        );
                    }
                }
            }
            HostsCommand::Drain { host } => {
                drain(&client, &host, "drain").await?;
            }
            HostsCommand::Undrain { host } => {
                drain(&client, &host, "undrain").await?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

async fn drain(client: &Client, host: &str, action: &str) -> anyhow::Result<()> {
    let v = client
        .send(
            client
                .http
                .post(format!("{}/v1/hosts/{host}/{action}", client.base))
                .header("content-type", "application/json")
                .body("{}"),
        )
        .await?;
    outln!(
        "host {}: {}",
        crate::term::clean(host),
        if v["drained"] == true {
            "drained (no new jobs)"
        } else {
            "active"
        }
    );
    Ok(())
}
