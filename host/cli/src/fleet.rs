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
use runwarden_proto::bus::{HandUp, Heartbeat, LogSegment, RunReport, RunningComponent};
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
/// The event kind of an incident an agent hands up.
const HANDUP: &str = "handup";

/// How `runwarden server` reaches its agents.
pub struct Fleet {
    /// `nats://…`.
    pub nats: String,
    /// A NATS credentials file, if the server needs one.
    pub creds: Option<PathBuf>,
}

/// What the server needs of NATS: the connection, the dispatcher, and (when it is the
/// operator) what mints each enrolling agent's credentials and revokes replaced ones.
pub(crate) type ServerBus = (jetstream::Client, Arc<dyn Dispatch>, Option<BusOperator>);

/// The control plane as the NATS operator: it mints each enrolling agent's bus user and
/// keeps the NATS server's copy of the fleet account up to date with every revoked one.
pub(crate) struct BusOperator {
    /// Mints an enrolling agent's bus user.
    pub(crate) minter: Arc<runwarden_control::CredentialMinter>,
    operator: nats_auth::Operator,
    account_seed: String,
    /// Connected as the system account's claims pusher.
    pusher: jetstream::Client,
}

/// How often the operator checks that the NATS server holds every revocation (after a
/// NATS restart, or another control plane's push of an older account).
const REVOCATIONS_EVERY: Duration = Duration::from_secs(10);

impl BusOperator {
    /// Push the fleet account, signed with every revoked bus user, whenever that set
    /// changes (an enrollment revoked a host's earlier user), after each reconnection to
    /// NATS, and at start — for as long as the server runs. A failed push is retried and
    /// said once per distinct reason.
    pub(crate) async fn keep_revocations(self, controller: Arc<Controller>) {
        let wake = controller.bus_users_revoked();
        let mut pushed: Option<(BTreeMap<String, i64>, u64)> = None;
        let mut said = String::new();
        loop {
            let connects = self
                .pusher
                .statistics()
                .connects
                .load(std::sync::atomic::Ordering::Relaxed);
            match controller.revoked_bus_users().await {
                Ok(revoked) if revoked.is_empty() => {}
                Ok(revoked) if pushed.as_ref() == Some(&(revoked.clone(), connects)) => {}
                Ok(revoked) => match self.push(&revoked).await {
                    Ok(()) => {
                        pushed = Some((revoked, connects));
                        said.clear();
                    }
                    Err(why) if why != said => {
                        errln!(
                            "the NATS server was not given the fleet account with its {} revoked bus user(s), so replaced hosts' old credentials still connect: {why}; retrying every {} s",
                            revoked.len(),
                            REVOCATIONS_EVERY.as_secs()
                        );
                        said = why;
                    }
                    Err(_) => {}
                },
                Err(e) => errln!("reading the revoked bus users: {e}"),
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(REVOCATIONS_EVERY) => {}
            }
        }
    }

    /// The fleet account signed again with `revoked`, pushed to the NATS server.
    async fn push(&self, revoked: &BTreeMap<String, i64>) -> Result<(), String> {
        let spec = nats_auth::AccountSpec {
            revoked_users: revoked.clone(),
            ..Default::default()
        };
        let account = self
            .operator
            .account_with(NATS_ACCOUNT, Some(&self.account_seed), &spec)
            .map_err(|e| e.to_string())?;
        jetstream::push_account_jwt(
            &self.pusher,
            nats_auth::claims_update_subject(&account),
            account.jwt(),
        )
        .await
        .map_err(|e| crate::term::clean(&e.to_string()).into_owned())
    }
}

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
        // The full resolver: the NATS server keeps the account JWTs the control plane
        // pushes (a host's replaced credentials revoked) in a directory of its own.
        // Beside DATA_DIR/nats (which holds only the control plane's own keys), not in it.
        let jwts = std::path::absolute(data_dir.join("nats-resolver"))
            .with_context(|| format!("cannot resolve {}", data_dir.display()))?;
        let text = format!(
            "# Written by `runwarden server --init-nats`: operator mode, the fleet's account\n\
             # preloaded, and the full resolver: the control plane pushes the account again\n\
             # whenever it revokes a host's replaced credentials, and the NATS server keeps\n\
             # it in resolver.dir (make that a directory the nats-server can write).\n\
             # Add listen/port and a jetstream store_dir; keep sync_interval.\n\
             {}\njetstream {{ sync_interval: always }}\n",
            nats_auth::server_config_full_resolver(&op, &jwts, std::slice::from_ref(&acct))
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
        crate::serve::Role::Server(Fleet {
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
    let client = jetstream::connect(&f.nats, creds.as_deref(), "runwarden-server")
        .await
        .with_context(|| format!("cannot use NATS at {}", f.nats))?;
    let operator = match identity {
        Some((op, acct)) => Some(bus_operator(f, data_dir, op, acct).await?),
        None => None,
    };
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
            ready: Ready::default(),
        }),
        operator,
    ))
}

/// The control plane as the NATS operator: the minter of agents' bus users, and a
/// connection as the system account's claims pusher (its credentials written afresh at
/// each start, 0600, in DATA_DIR/nats/pusher.creds).
async fn bus_operator(
    f: &Fleet,
    data_dir: &Path,
    op: nats_auth::Operator,
    acct: nats_auth::Account,
) -> anyhow::Result<BusOperator> {
    let perms = nats_auth::Permissions::claims_pusher();
    let pusher = op
        .system_account()
        .user("runwarden-claims-pusher", &perms)?;
    let file = data_dir.join("nats/pusher.creds");
    runwarden_evidence::write_atomic(&file, pusher.to_creds_file().expose().as_bytes())
        .with_context(|| format!("cannot write {}", file.display()))?;
    let pusher = jetstream::connect_with(
        &f.nats,
        Some(&file),
        "runwarden-server-claims",
        perms.inbox_prefix(),
    )
    .await
    .with_context(|| format!("cannot use NATS at {} as the system account", f.nats))?;
    let account_seed = acct.seed().expose().to_string();
    let minter: Arc<runwarden_control::CredentialMinter> =
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
            Ok(runwarden_control::MintedCredentials {
                creds: user.to_creds_file().expose().to_string(),
                user: user.public_key(),
            })
        });
    Ok(BusOperator {
        minter,
        operator: op,
        account_seed,
        pusher,
    })
}

/// The hosts whose job consumer this process made, since its current connection to NATS:
/// a job consumer keeps its state in the NATS server's memory and is gone when the NATS
/// server restarts, so after a reconnection each is made again (at the host's next
/// heartbeat or job).
#[derive(Default)]
struct Ready(Mutex<(u64, HashSet<Address>)>);

impl Ready {
    fn has(&self, client: &jetstream::Client, to: &Address) -> bool {
        let connects = client
            .statistics()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut made = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if made.0 != connects {
            *made = (connects, HashSet::new());
        }
        made.1.contains(to)
    }

    fn add(&self, to: &Address) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .insert(to.clone());
    }
}

/// Make the job consumer of `to` (once per connection to NATS): its agent can then take
/// jobs.
async fn ensure_consumer(
    client: &jetstream::Client,
    ready: &Ready,
    to: &Address,
) -> Result<(), BusError> {
    if ready.has(client, to) {
        return Ok(());
    }
    jetstream::ensure_agent_consumer(
        client,
        &to.tenant,
        &to.host,
        &jetstream::ConsumerSettings::default(),
    )
    .await?;
    ready.add(to);
    Ok(())
}

/// Jobs over JetStream: the host's consumer made once, a job sent again (same id) when an
/// attempt failed.
struct FleetDispatch {
    client: jetstream::Client,
    inner: jetstream::JetStreamDispatch,
    ready: Ready,
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

    fn connected(&self) -> bool {
        jetstream::is_connected(&self.client)
    }

    async fn store_blob(&self, tenant: &str, sha256: &str, bytes: &[u8]) -> Result<bool, BusError> {
        self.inner.store_blob(tenant, sha256, bytes).await
    }
}

/// Take agents' events for as long as the server runs: log segments mirrored (in order,
/// under each host's enrolled key), heartbeats noted.
pub(crate) async fn serve_events(client: jetstream::Client, controller: Arc<Controller>) {
    // Every enrolled host's job consumer exists before its first job, so its agent can
    // wait on it; a host enrolled since is seen at its first heartbeat.
    let ready = Arc::new(Ready::default());
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
        // A host that enrolled through another server on the same database is read now.
        let owner = match controller.find_host(&ev.host).await {
            Ok(h) => h.is_some_and(|h| h.tenant == ev.tenant),
            Err(e) => {
                errln!(
                    "warning: reading host {}: {e}; retrying",
                    crate::term::clean(&ev.host)
                );
                ev.retry(Duration::from_secs(2)).await;
                continue;
            }
        };
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
            HANDUP => match serde_json::from_slice::<HandUp>(&ev.payload) {
                Ok(up) => match controller.take_hand_up(&ev.host, up).await {
                    Ok(rec) => {
                        errln!(
                            "host {} handed up incident {}: {} at {}",
                            crate::term::clean(&ev.host),
                            crate::term::clean(&rec.id),
                            rec.status,
                            rec.tier
                        );
                        ev.ack().await
                    }
                    Err(e @ runwarden_control::ControlError::Store(_)) => {
                        errln!("warning: taking {}'s hand-up: {e}; retrying", ev.host);
                        ev.retry(Duration::from_secs(2)).await;
                    }
                    Err(e) => {
                        errln!(
                            "refused a hand-up from host {}: {}",
                            crate::term::clean(&ev.host),
                            crate::term::clean(&e.to_string())
                        );
                        ev.ack().await;
                    }
                },
                Err(e) => {
                    errln!(
                        "a malformed hand-up from host {}: {e}",
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
                // Beside the events, not in their way: after a NATS restart every
                // host's consumer is made again, each at its host's next heartbeat.
                if !ready.has(&client, &to) {
                    let (client, ready) = (client.clone(), ready.clone());
                    tokio::spawn(async move {
                        if let Err(e) = ensure_consumer(&client, &ready, &to).await {
                            errln!("warning: the job consumer of host {}: {e}", to.host);
                        }
                    });
                }
                let beat = serde_json::from_slice::<Heartbeat>(&ev.payload)
                    .ok()
                    .filter(Heartbeat::is_plausible);
                let Some(beat) = beat else {
                    errln!(
                        "warning: a heartbeat of {} that is not one: dropped",
                        crate::term::clean(&ev.host)
                    );
                    ev.ack().await;
                    continue;
                };
                if let Err(e) = controller
                    .heard_from(&ev.host, Some(&beat.version), beat.log_size)
                    .await
                {
                    errln!("warning: noting {}'s heartbeat: {e}", ev.host);
                }
                if let Some(list) = &beat.components
                    && beat.at_ms > 0
                {
                    let runs: BTreeMap<String, (String, String)> = list
                        .iter()
                        .map(|c| (c.name.clone(), (c.sha256.clone(), c.version.clone())))
                        .collect();
                    if let Err(e) = controller
                        .note_host_runs(&ev.tenant, &ev.host, &runs, beat.at_ms)
                        .await
                    {
                        errln!("warning: noting what {} runs: {e}", ev.host);
                    }
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
    /// forwarded to the control plane; and a local intake (loopback HTTP, the `/v1` API)
    /// whose incidents this host heals at L1 by itself, link or no link, handing the rest
    /// up to the control plane.
    Run {
        /// NATS server with JetStream (2.11 or later). The agent starts without it and
        /// connects when it can.
        #[arg(long, env = "RUNWARDEN_NATS")]
        nats: String,
        /// NATS credentials file of this host's user (default: DATA_DIR/nats.creds).
        #[arg(long, env = "RUNWARDEN_NATS_CREDS")]
        nats_creds: Option<PathBuf>,
        /// The local intake and the rules, guardrails and runbooks of this host's own
        /// control plane (`--listen`, default 127.0.0.1:8641; `--rules`; `--config`).
        #[command(flatten)]
        control: crate::serve::UpArgs,
    },
}

/// What `runwarden agent run` is: the enrolled host, and how it reaches the fleet.
pub(crate) struct AgentRole {
    /// The tenant the host enrolled into.
    pub tenant: String,
    /// The host.
    pub host_id: String,
    /// Its labels, from enrollment.
    pub labels: BTreeMap<String, String>,
    /// The fleet control plane's key: its jobs verify under it.
    pub control_key: runwarden_evidence::VerifyingKey,
    /// The policy it enrolled with (canonical path).
    pub policy: PathBuf,
    /// `nats://…`.
    pub nats: String,
    /// The host's NATS credentials, if any.
    pub creds: Option<PathBuf>,
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
    log: &crate::evidence::LogArgs,
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
            control,
        } => {
            let role = agent_role(&data_dir, nats, nats_creds)?;
            crate::serve::run_control(
                control,
                data_dir,
                log,
                crate::serve::Role::Agent(Box::new(role)),
            )
        }
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
    // The control plane names the key (a host enrolled again with a new key signs a log
    // of its own, `runwarden/HOST~2`): renamed before it signs anything.
    let key = if !enrolled.key_name.is_empty() && enrolled.key_name != key.name() {
        runwarden_control::evidence::rename_host_key(data_dir, host_id, &enrolled.key_name)?
    } else {
        key
    };
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
        "  key: {} named {} (its public half is enrolled; this host's log is runwarden/{})",
        key.verifying_key().key_id_hex(),
        crate::term::clean(key.name()),
        crate::term::clean(key.name())
    );
    outln!("  next: runwarden agent run --nats nats://…");
    Ok(ExitCode::SUCCESS)
}

/// The enrolled agent of `data_dir` (`agent.json`).
fn agent_role(data_dir: &Path, nats: String, creds: Option<PathBuf>) -> anyhow::Result<AgentRole> {
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
    let control_key = runwarden_evidence::VerifyingKey::from_text(&agent.control_key)
        .context("the control plane's key in agent.json")?;
    let own = data_dir.join(NATS_CREDS);
    Ok(AgentRole {
        tenant: agent.tenant,
        host_id: agent.host_id,
        labels: agent.labels,
        control_key,
        policy: agent.policy,
        nats,
        creds: creds.or_else(|| own.exists().then_some(own)),
    })
}

/// An agent's side of the bus: connected in the background (the agent heals at L1
/// without it), then serving the fleet's jobs and forwarding the host's log, heartbeats
/// and hand-ups.
pub(crate) struct AgentBus {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl AgentBus {
    /// Start connecting to the fleet for `role`'s host, with this host's `executor` and
    /// its own `controller` (whose hand-ups go up).
    pub(crate) fn start(
        role: &AgentRole,
        executor: Arc<runwarden_agent::Executor>,
        controller: Arc<Controller>,
        data_dir: &Path,
    ) -> AgentBus {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (nats, creds, host) = (role.nats.clone(), role.creds.clone(), role.host_id.clone());
        let mark = data_dir.join("forwarded");
        let link = Arc::new(Link {
            client: std::sync::OnceLock::new(),
            forwarded: std::sync::atomic::AtomicU64::new(forwarded_mark(&mark)),
        });
        let gauges = link.clone();
        controller.set_gauges(Arc::new(move || runwarden_control::LinkGauges {
            connected: gauges.client.get().is_some_and(jetstream::is_connected),
            forwarded: Some(gauges.forwarded.load(std::sync::atomic::Ordering::Relaxed)),
        }));
        let task = tokio::spawn(async move {
            let mut wait = Duration::from_millis(500);
            let client = loop {
                let inbox = match nats_auth::agent_inbox_prefix(&host) {
                    Ok(p) => p,
                    Err(e) => {
                        errln!("error: this host's NATS inbox: {e}");
                        return;
                    }
                };
                let name = format!("runwarden-agent-{host}");
                let connecting =
                    jetstream::connect_with(&nats, creds.as_deref(), &name, Some(&inbox));
                tokio::select! {
                    r = connecting => match r {
                        Ok(c) => break c,
                        Err(e @ BusError::Refused(_)) => {
                            errln!("error: NATS at {nats}: {e}; this host heals at L1 only");
                            return;
                        }
                        Err(e) => errln!("warning: {e}; healing at L1 meanwhile, retrying in {}s", wait.as_secs_f32()),
                    },
                    _ = stopped.changed() => return,
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopped.changed() => return,
                }
                wait = (wait * 2).min(Duration::from_secs(15));
            };
            let jobs =
                match jetstream::JetStreamJobs::new(&client, executor.tenant(), executor.host()) {
                    Ok(j) => j,
                    Err(e) => {
                        errln!("error: this host's jobs on NATS: {e}");
                        return;
                    }
                };
            let stopper = jobs.stopper();
            let _ = link.client.set(client.clone());
            let serving = tokio::spawn(runwarden_agent::serve(executor.clone(), jobs));
            let forwarding = tokio::spawn(forward(client, executor, controller, mark, link));
            outln!("connected to NATS at {nats}: jobs from the control plane");
            let _ = stopped.changed().await;
            stopper.stop();
            // Runs in progress finish and are recorded before the agent stops.
            let _ = serving.await;
            forwarding.abort();
        });
        AgentBus { stop, task }
    }

    /// Stop taking jobs; wait for those in progress.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// An agent's link to the fleet, as its metrics show it.
struct Link {
    /// The NATS client, once connected.
    client: std::sync::OnceLock<jetstream::Client>,
    /// How far this host's log was forwarded.
    forwarded: std::sync::atomic::AtomicU64,
}

/// How far this host's log was forwarded, as noted in `mark` (0 if never).
fn forwarded_mark(mark: &Path) -> u64 {
    std::fs::read_to_string(mark)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Forward this host's log to the control plane for as long as the agent runs, hand up
/// what its own control plane could not finish, and say it is alive. How far the log was
/// forwarded is kept in `mark`, written after the server confirmed each segment stored (a
/// segment sent again is taken once); a hand-up is marked sent once NATS stored it.
async fn forward(
    client: jetstream::Client,
    executor: Arc<runwarden_agent::Executor>,
    controller: Arc<Controller>,
    mark: PathBuf,
    link: Arc<Link>,
) {
    let mut from = forwarded_mark(&mark);
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
                    Ok(()) if segment.checkpoint.is_empty() => {
                        // Records after a hole in this host's log: the control plane
                        // raises the gap; nothing past it can be signed, so this waits.
                        errln!(
                            "error: this host's log misses record {from}: it was deleted; the control plane is told"
                        );
                        tokio::time::sleep(HEARTBEAT_EVERY).await;
                    }
                    Ok(()) => {
                        from = end;
                        link.forwarded
                            .store(end, std::sync::atomic::Ordering::Relaxed);
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
        hand_up(&client, &controller, &tenant, &host).await;
        if last_beat.elapsed() >= HEARTBEAT_EVERY {
            let size = executor.log().size().await.ok();
            // What runs here by deployment, so that the control plane notes what this
            // host refused at its start; and when that was read (this host's clock).
            let beat = Heartbeat {
                version: env!("CARGO_PKG_VERSION").to_string(),
                forwarded: from,
                log_size: size,
                at_ms: runwarden_agent::now_ms(),
                components: Some(
                    executor
                        .deployed_components()
                        .into_iter()
                        .map(|(name, (sha256, version))| RunningComponent {
                            name,
                            version,
                            sha256,
                        })
                        .collect(),
                ),
            };
            let id = format!("hb-{tenant}-{host}-{}", runwarden_agent::now_ms());
            if jetstream::publish_event(
                &client,
                &tenant,
                &host,
                "heartbeat",
                &id,
                serde_json::to_vec(&beat).expect("a heartbeat serializes"),
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

/// Send what this host's control plane handed up and has not sent yet.
async fn hand_up(client: &jetstream::Client, controller: &Controller, tenant: &str, host: &str) {
    let ups = match controller.hand_ups(32).await {
        Ok(u) => u,
        Err(e) => {
            errln!("warning: reading what to hand up: {e}");
            return;
        }
    };
    for up in ups {
        let id = up.record.id.clone();
        let bytes = match serde_json::to_vec(&up) {
            Ok(b) => b,
            Err(e) => {
                errln!("warning: handing up incident {id}: {e}");
                continue;
            }
        };
        let msg_id = format!("up-{tenant}-{host}-{id}");
        match jetstream::publish_event(client, tenant, host, HANDUP, &msg_id, bytes).await {
            Ok(()) => {
                if let Err(e) = controller.hand_up_sent(&id).await {
                    errln!("warning: noting incident {id} handed up: {e}");
                }
            }
            Err(e) => {
                errln!("warning: handing up incident {id}: {e}; retrying");
                return;
            }
        }
    }
}

/// One deployed component of a host, as `hosts list` shows it.
fn component_line(c: &serde_json::Value) -> String {
    let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    let running = match text("version").as_str() {
        "" => "its own".to_string(),
        v => v.to_string(),
    };
    match (text("state").as_str(), text("wanted").as_str()) {
        ("deployed", _) => format!("{} {running}", text("name")),
        (state, "") => format!("{} {running} ({state})", text("name")),
        (state, wanted) => format!("{} {running} ({state} {wanted})", text("name")),
    }
}

/// For each deployed component whose hosts run different versions: one line naming them.
fn version_skew(hosts: &serde_json::Value) -> Vec<String> {
    let mut by_name: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for h in hosts.as_array().into_iter().flatten() {
        for c in h["components"].as_array().into_iter().flatten() {
            let version = match c["version"].as_str().unwrap_or_default() {
                "" => "its own",
                v => v,
            };
            by_name
                .entry(c["name"].as_str().unwrap_or_default().to_string())
                .or_default()
                .entry(version.to_string())
                .or_default()
                .push(h["id"].as_str().unwrap_or("?").to_string());
        }
    }
    by_name
        .into_iter()
        .filter(|(_, versions)| versions.len() > 1)
        .map(|(name, versions)| {
            let parts: Vec<String> = versions
                .iter()
                .map(|(v, hosts)| format!("{v} on {}", hosts.join(" ")))
                .collect();
            format!("version skew: {name} runs {}", parts.join("; "))
        })
        .collect()
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
                        "{:<24} {:<16} {:<8} {:<26} {:<8} {:>5} {:<11} {:<48} LABELS",
                        "HOST",
                        "TENANT",
                        "STATE",
                        "LAST SEEN",
                        "VERSION",
                        "QUEUE",
                        "LOG (HELD)",
                        "LAST RECORD"
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
                        let r = &h["last_record"];
                        let last = if r.is_object() {
                            format!(
                                "{} {} {}",
                                r["at"].as_str().unwrap_or("?"),
                                r["runbook"].as_str().unwrap_or("?"),
                                r["status"].as_str().unwrap_or("?")
                            )
                        } else {
                            "-".to_string()
                        };
                        outln!(
                            "{:<24} {:<16} {:<8} {:<26} {:<8} {:>5} {:<11} {:<48} {}",
                            crate::term::clean(h["id"].as_str().unwrap_or("?")),
                            crate::term::clean(h["tenant"].as_str().unwrap_or("?")),
                            if h["drained"] == true {
                                "drained"
                            } else if h["online"] == true {
                                "online"
                            } else {
                                "offline"
                            },
                            crate::term::clean(h["last_seen"].as_str().unwrap_or("never")),
                            crate::term::clean(h["version"].as_str().unwrap_or("-")),
                            h["queue_depth"].as_u64().unwrap_or(0),
                            log,
                            crate::term::clean(&last),
                            crate::term::clean(&labels.join(","))
                        );
                        let deployed: Vec<String> = h["components"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(component_line)
                            .collect();
                        if !deployed.is_empty() {
                            outln!("  deployed: {}", crate::term::clean(&deployed.join(", ")));
                        }
                    }
                    for line in version_skew(&v["hosts"]) {
                        outln!("{}", crate::term::clean(&line));
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
