//! `runwarden-fleet-sim`: N simulated agents in one process, speaking the real protocol.
//!
//! Each simulated host is enrolled at the control plane like a real agent (a single-use
//! token made with an admin token, then `POST /v1/enroll` with its own Ed25519 key and a
//! policy), takes the jobs of its own durable consumer on `RW_CMD` through the same
//! [`runwarden_bus::jetstream::JetStreamJobs`] a real agent uses, checks each job as an
//! agent does (signed by the control plane's key, for its tenant and host, not expired),
//! signs a record per run with its key and answers with a [`RunReport`] (published on
//! `RW_EVT`, then the job double-acked). It sends a heartbeat every 10 s. It runs no
//! sandbox and keeps its log in memory: what it measures is the fleet's path, not a
//! runbook.
//!
//! At the end (SIGINT/SIGTERM or `--duration`) it prints one JSON line: jobs answered,
//! refused, and the time from a job's issue at the control plane to its report stored
//! (p50, p99, max, in ms).

use anyhow::{Context, bail};
use clap::Parser;
use runwarden_bus::jetstream;
use runwarden_evidence as ev;
use runwarden_proto::RunStatus;
use runwarden_proto::bus::{
    DEPLOY_PAYLOAD_TYPE, DeployJob, DeployOutcome, JOB_PAYLOAD_TYPE, LogRef, RunJob, RunOutcome,
    RunReport,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The control plane's API (`http://127.0.0.1:8640`).
    #[arg(long)]
    server: String,
    /// A file holding an admin token of the tenant the hosts join.
    #[arg(long)]
    token_file: std::path::PathBuf,
    /// NATS.
    #[arg(long)]
    nats: String,
    /// A NATS credentials file every simulated agent connects with (a benchmark may use
    /// the control plane's own; real agents each have their own user).
    #[arg(long)]
    creds: Option<std::path::PathBuf>,
    /// Simulated agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Agents sharing one NATS connection (1: each its own, as real agents).
    #[arg(long, default_value_t = 1)]
    per_connection: usize,
    /// Host ids are PREFIX0 … PREFIX{N-1}.
    #[arg(long, default_value = "sim-")]
    prefix: String,
    /// A directory each host's policy grants (write_dirs), for the rule's runbook.
    #[arg(long)]
    grant: std::path::PathBuf,
    /// Stop after this many seconds (default: at SIGINT or SIGTERM).
    #[arg(long)]
    duration: Option<u64>,
    /// How long each agent's pull for jobs waits on the server (an idle agent pulls again
    /// this often).
    #[arg(long, default_value_t = 5)]
    pull_expiry_secs: u64,
    /// Seconds between an agent's heartbeats (0: none).
    #[arg(long, default_value_t = 10)]
    heartbeat_secs: u64,
    /// Written once every agent is enrolled and taking jobs.
    #[arg(long)]
    ready_file: Option<std::path::PathBuf>,
    /// The trust policy (TOML) deployments are checked against, as a real agent's: with
    /// it, a simulated agent takes a deployment it admits (it compiles nothing).
    #[arg(long)]
    trust: Option<std::path::PathBuf>,
}

/// What every simulated agent adds to.
#[derive(Default)]
struct Stats {
    answered: AtomicU64,
    refused: AtomicU64,
    /// Issue-to-report times, µs.
    latencies: Mutex<Vec<u32>>,
}

/// One simulated host.
struct Host {
    tenant: String,
    id: String,
    key: ev::SigningKey,
    control: ev::VerifyingKey,
    /// What deployments it admits.
    trust: Option<Arc<ev::TrustPolicy>>,
    /// Records signed so far (its log, counted).
    next_index: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.agents == 0 || args.per_connection == 0 {
        bail!("--agents and --per-connection must be at least 1");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let admin = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("reading {}", args.token_file.display()))?
        .trim()
        .to_string();
    let http = reqwest::Client::new();
    let trust = match &args.trust {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(Arc::new(
                toml::from_str::<ev::TrustPolicy>(&text)
                    .with_context(|| format!("trust policy {}", p.display()))?,
            ))
        }
        None => None,
    };
    let started = Instant::now();
    // Enroll, 16 at a time.
    let mut hosts = Vec::with_capacity(args.agents);
    let ids: Vec<String> = (0..args.agents)
        .map(|i| format!("{}{i}", args.prefix))
        .collect();
    for chunk in ids.chunks(16) {
        let mut set = tokio::task::JoinSet::new();
        for id in chunk {
            let (http, admin, server, id) =
                (http.clone(), admin.clone(), args.server.clone(), id.clone());
            let grant = args.grant.clone();
            set.spawn(async move { enroll(&http, &server, &admin, &id, &grant).await });
        }
        while let Some(h) = set.join_next().await {
            let mut h = h??;
            h.trust = trust.clone();
            hosts.push(Arc::new(h));
        }
    }
    eprintln!(
        "enrolled {} hosts in {:.1} s",
        hosts.len(),
        started.elapsed().as_secs_f64()
    );
    let stats = Arc::new(Stats::default());
    let mut clients = Vec::new();
    for (n, group) in hosts.chunks(args.per_connection).enumerate() {
        let client = jetstream::connect_with(
            &args.nats,
            args.creds.as_deref(),
            &format!("runwarden-fleet-sim-{n}"),
            None,
        )
        .await
        .with_context(|| format!("connecting to NATS at {}", args.nats))?;
        for host in group {
            tokio::spawn(serve(
                client.clone(),
                host.clone(),
                stats.clone(),
                Duration::from_secs(args.pull_expiry_secs),
            ));
            if args.heartbeat_secs > 0 {
                tokio::spawn(heartbeats(
                    client.clone(),
                    host.clone(),
                    Duration::from_secs(args.heartbeat_secs),
                ));
            }
        }
        clients.push(client);
    }
    eprintln!(
        "{} agents on {} NATS connections, taking jobs",
        hosts.len(),
        clients.len()
    );
    if let Some(f) = &args.ready_file {
        std::fs::write(f, "ready\n").with_context(|| format!("writing {}", f.display()))?;
    }
    let stop = async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    match args.duration {
        Some(s) => {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(s)) => {}
                _ = stop => {}
            }
        }
        None => stop.await,
    }
    let mut l = stats
        .latencies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    l.sort_unstable();
    let at = |q: f64| -> f64 {
        if l.is_empty() {
            return 0.0;
        }
        let i = ((l.len() as f64 * q).ceil() as usize).clamp(1, l.len()) - 1;
        f64::from(l[i]) / 1000.0
    };
    println!(
        "{}",
        serde_json::json!({
            "agents": hosts.len(),
            "connections": clients.len(),
            "answered": stats.answered.load(Ordering::Relaxed),
            "refused": stats.refused.load(Ordering::Relaxed),
            "issue_to_report_ms": {"p50": at(0.50), "p99": at(0.99), "max": at(1.0)},
        })
    );
    Ok(())
}

/// Enroll host `id` with a fresh key and a policy granting `grant`.
async fn enroll(
    http: &reqwest::Client,
    server: &str,
    admin: &str,
    id: &str,
    grant: &std::path::Path,
) -> anyhow::Result<Host> {
    let token: serde_json::Value = http
        .post(format!("{server}/v1/hosts/enroll-tokens"))
        .bearer_auth(admin)
        .json(&serde_json::json!({}))
        .send()
        .await?
        .error_for_status()
        .context("making an enrollment token")?
        .json()
        .await?;
    let key = ev::SigningKey::generate(id)?;
    let policy = format!(
        "host_id = {}\n[grants]\nwrite_dirs = [{}]\n",
        serde_json::Value::from(id),
        serde_json::Value::from(grant.display().to_string())
    );
    let enrolled: serde_json::Value = http
        .post(format!("{server}/v1/enroll"))
        .json(&serde_json::json!({
            "token": token["token"],
            "host_id": id,
            "policy": policy,
            "key": key.verifying_key().to_text(),
        }))
        .send()
        .await?
        .error_for_status()
        .with_context(|| format!("enrolling {id}"))?
        .json()
        .await?;
    let control = ev::VerifyingKey::from_text(enrolled["control_key"].as_str().unwrap_or(""))
        .context("the control plane's key")?;
    Ok(Host {
        tenant: enrolled["tenant"].as_str().unwrap_or_default().to_string(),
        id: id.to_string(),
        key,
        control,
        trust: None,
        next_index: AtomicU64::new(0),
    })
}

/// Take `host`'s jobs for as long as the process runs.
async fn serve(client: jetstream::Client, host: Arc<Host>, stats: Arc<Stats>, pull: Duration) {
    use runwarden_bus::Jobs;
    let mut jobs = match jetstream::JetStreamJobs::new(&client, &host.tenant, &host.id) {
        Ok(j) => j.with_pull_expiry(pull),
        Err(e) => {
            eprintln!("host {}: {e}", host.id);
            return;
        }
    };
    while let Some(delivery) = jobs.next().await {
        let (host, stats) = (host.clone(), stats.clone());
        tokio::spawn(async move {
            let now = now_ms();
            let (report, issued) = answer(&host, &delivery.job, delivery.blobs(), now).await;
            let refused = report.refused.is_some();
            delivery.reply(report).await;
            if refused {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
            stats.answered.fetch_add(1, Ordering::Relaxed);
            let took_us = ((now_ms() - issued).max(0) as u64 * 1000).min(u64::from(u32::MAX));
            stats
                .latencies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(took_us as u32);
        });
    }
}

/// Check `envelope` as an agent does and answer it: one signed record per run, all
/// healed. Also when it was issued (ms). A deployment's component is fetched from `blobs`
/// when the job names it by reference.
async fn answer(
    host: &Host,
    envelope: &[u8],
    blobs: Option<&dyn runwarden_bus::Blobs>,
    now: i64,
) -> (RunReport, i64) {
    if let Ok(job) = open_as::<DeployJob>(host, envelope, DEPLOY_PAYLOAD_TYPE) {
        let bytes = match job.size {
            0 => base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &job.component)
                .map_err(|e| e.to_string()),
            size => match blobs {
                Some(b) => b.fetch(&job.sha256, size).await.map_err(|e| e.to_string()),
                None => Err("named by reference, and no blob store".to_string()),
            },
        };
        return (deploy(host, job, bytes, now), now);
    }
    let refuse = |why: String| RunReport {
        job: String::new(),
        incident: String::new(),
        host: host.id.clone(),
        runs: Vec::new(),
        refused: Some(why),
        deployed: None,
    };
    let job = match open(host, envelope) {
        Ok(j) => j,
        Err(why) => return (refuse(why), now),
    };
    if job.tenant != host.tenant || job.host != host.id || now > job.expires_at_ms {
        let mut r = refuse("not this host's, or expired".into());
        r.job = job.job;
        r.incident = job.incident;
        return (r, job.issued_at_ms);
    }
    let origin = ev::log_origin(host.key.name());
    let runs = job
        .runs
        .iter()
        .map(|run| {
            let statement = serde_json::json!({
                "_type": ev::STATEMENT_TYPE,
                "subject": [{"name": run.runbook, "digest": {"sha256": run.sha256}}],
                "predicateType": ev::PREDICATE_TYPE,
                "predicate": {
                    "invocation_id": run.invocation, "host_id": host.id, "tenant": host.tenant,
                    "incident": job.incident, "params": run.params, "status": "healed",
                    "simulated": true,
                },
            });
            let env = ev::Envelope::sign(
                ev::PAYLOAD_TYPE,
                statement.to_string().as_bytes(),
                &host.key,
            );
            let index = host.next_index.fetch_add(1, Ordering::Relaxed);
            RunOutcome {
                invocation: run.invocation.clone(),
                runbook: run.runbook.clone(),
                status: RunStatus::Healed,
                summary: "simulated".into(),
                dry_run: job.dry_run,
                record: LogRef {
                    origin: origin.clone(),
                    index,
                    leaf_hash: ev::hash_hex(&ev::leaf_hash(env.to_json().as_bytes())),
                },
            }
        })
        .collect();
    (
        RunReport {
            job: job.job,
            incident: job.incident,
            host: host.id.clone(),
            runs,
            refused: None,
            deployed: None,
        },
        job.issued_at_ms,
    )
}

/// Check a deployment as a real agent does — signed, for this host, fresh, the bytes
/// (inline or fetched) the sha256 names, the release admitted by the trust policy — and
/// answer it with a signed record (nothing is compiled or kept).
fn deploy(host: &Host, job: DeployJob, bytes: Result<Vec<u8>, String>, now: i64) -> RunReport {
    let checked = (|| {
        if job.tenant != host.tenant || job.host != host.id || now > job.expires_at_ms {
            return Err("not this host's, or expired".to_string());
        }
        let bytes = bytes?;
        if ev::component_sha256(&bytes) != job.sha256 {
            return Err("the bytes are not the sha256 named".into());
        }
        let trust = host.trust.as_ref().ok_or("no trust policy")?;
        let (_, key) = trust
            .admit(&job.release, &bytes)
            .map_err(|e| e.to_string())?;
        Ok(key.key_id_hex())
    })();
    let mut report = RunReport {
        job: job.job.clone(),
        incident: job.deployment.clone(),
        host: host.id.clone(),
        runs: Vec::new(),
        refused: None,
        deployed: None,
    };
    match checked {
        Err(why) => report.refused = Some(why),
        Ok(publisher) => {
            let statement = serde_json::json!({
                "_type": ev::STATEMENT_TYPE,
                "subject": [{"name": job.name, "digest": {"sha256": job.sha256}}],
                "predicateType": ev::PREDICATE_TYPE,
                "predicate": {"invocation_id": job.job, "host_id": host.id, "status": "deployed",
                              "publisher": publisher, "simulated": true},
            });
            let env = ev::Envelope::sign(
                ev::PAYLOAD_TYPE,
                statement.to_string().as_bytes(),
                &host.key,
            );
            report.deployed = Some(DeployOutcome {
                name: job.name,
                version: job.version,
                sha256: job.sha256,
                publisher,
                previous: String::new(),
                record: LogRef {
                    origin: ev::log_origin(host.key.name()),
                    index: host.next_index.fetch_add(1, Ordering::Relaxed),
                    leaf_hash: ev::hash_hex(&ev::leaf_hash(env.to_json().as_bytes())),
                },
            });
        }
    }
    report
}

/// The job in `envelope`, if the control plane signed it.
fn open(host: &Host, envelope: &[u8]) -> Result<RunJob, String> {
    open_as(host, envelope, JOB_PAYLOAD_TYPE)
}

/// The message of `payload_type` in `envelope`, if the control plane signed it.
fn open_as<T: serde::de::DeserializeOwned>(
    host: &Host,
    envelope: &[u8],
    payload_type: &str,
) -> Result<T, String> {
    let text = std::str::from_utf8(envelope).map_err(|_| "not UTF-8".to_string())?;
    let env = ev::Envelope::from_json(text).map_err(|e| e.to_string())?;
    if env.payload_type != payload_type {
        return Err(format!("not a {payload_type}"));
    }
    env.verify(std::slice::from_ref(&host.control))
        .map_err(|e| format!("not signed by the control plane: {e}"))?;
    let payload = env.payload().map_err(|e| e.to_string())?;
    serde_json::from_slice(&payload).map_err(|e| e.to_string())
}

/// A heartbeat `every` so often, the first at a random point of the first period.
async fn heartbeats(client: jetstream::Client, host: Arc<Host>, every: Duration) {
    let jitter = now_ms().unsigned_abs() % every.as_millis().max(1) as u64;
    tokio::time::sleep(Duration::from_millis(jitter)).await;
    let mut every = tokio::time::interval(every);
    loop {
        every.tick().await;
        // No log size: a simulated host forwards no log, and has no backlog to show.
        let beat = serde_json::json!({"version": env!("CARGO_PKG_VERSION")});
        let id = format!("hb-{}-{}-{}", host.tenant, host.id, now_ms());
        let _ = jetstream::publish_event(
            &client,
            &host.tenant,
            &host.id,
            "heartbeat",
            &id,
            beat.to_string().into_bytes(),
        )
        .await;
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
