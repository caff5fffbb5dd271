//! `runwarden keys …` and `runwarden evidence …`, and recording each CLI run.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use runwarden_evidence as ev;
use runwarden_runtime::Invocation;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where the evidence log lives.
#[derive(Args, Clone, Debug)]
pub struct LogArgs {
    /// The database (evidence and control plane): a `postgres://` URL, or a SQLite file
    /// (`--database` is the same). Default: DATA_DIR/evidence.db.
    #[arg(long, global = true, alias = "database", env = "RUNWARDEN_EVIDENCE_DB")]
    pub evidence_db: Option<String>,
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Generate an Ed25519 key pair: NAME.key (0600) and NAME.pub (C2SP signed-note verifier key).
    Generate {
        /// Directory to write the key files into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Key name, e.g. the host id (letters, digits, `.`, `_`, `-`, `/`).
        #[arg(long, default_value = "runwarden-host")]
        name: String,
    },
}

#[derive(Subcommand)]
pub enum EvidenceCommand {
    /// List records, oldest first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Export records, proofs, a fresh signed checkpoint, public keys and an HTML report
    /// into one bundle file (tar) for an auditor. With --tenant: a tenant bundle holding
    /// the tenant's view of the control plane's log (every record made for it, under a
    /// checkpoint of the view) and the log of every host it enrolled, under one statement
    /// signed by the control plane's log key.
    Export {
        #[command(flatten)]
        filter: FilterArgs,
        /// The bundle file to write.
        #[arg(short, long)]
        out: PathBuf,
        /// Key that signs the checkpoint. Default: the key that signs this database's log
        /// (DATA_DIR/control-key or DATA_DIR/signing-keys).
        #[arg(long, env = "RUNWARDEN_SIGNING_KEY")]
        signing_key: Option<PathBuf>,
        /// The clinic's time zone (IANA name, e.g. Europe/Berlin): the report's times and
        /// months are in it. Carried in the bundle, under its seal.
        #[arg(long, env = "RUNWARDEN_TIME_ZONE", default_value = "UTC")]
        time_zone: String,
        /// Print what was exported as one JSON object (no progress line).
        #[arg(long)]
        json: bool,
    },
    /// Archive the log to S3 under Object Lock (WORM): every record not yet archived, in
    /// sealed segments (records and the signed checkpoint that covers them) locked in
    /// COMPLIANCE mode for the retention period, each read back and checked. Idempotent:
    /// a retry, or a run after a crash, goes on from what the bucket holds.
    Archive {
        /// Where: s3://BUCKET/PREFIX (the bucket must have Object Lock enabled).
        #[arg(long)]
        to: String,
        #[command(flatten)]
        s3: crate::archive::S3Args,
        /// How long each segment stays locked from when it is written: days (2190, 2190d)
        /// or years (6y).
        #[arg(long, default_value = "6y", value_parser = crate::archive::parse_retention)]
        retention: u64,
        /// Key that signs the segments' checkpoints: as for `export`.
        #[arg(long, env = "RUNWARDEN_SIGNING_KEY")]
        signing_key: Option<PathBuf>,
        /// Print the outcome as one JSON object (no progress line).
        #[arg(long)]
        json: bool,
    },
    /// Verify a bundle offline: every signature, every inclusion proof, the checkpoint, and
    /// optionally its consistency with an earlier checkpoint you trust. Given
    /// s3://BUCKET/PREFIX, verify a log straight from its WORM archive: every segment,
    /// chained from record 0, each under COMPLIANCE Object Lock.
    Verify {
        /// The bundle file, or s3://BUCKET/PREFIX of an archive.
        bundle: PathBuf,
        /// In an archive holding several logs: the log's origin (e.g. runwarden/host-1).
        #[arg(long)]
        origin: Option<String>,
        #[command(flatten)]
        s3: crate::archive::S3Args,
        /// Trusted public key file(s) (NAME.pub).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// An earlier checkpoint note you trust (e.g. checkpoint.txt of a previous bundle):
        /// the log is proved an append-only extension of it. For a tenant bundle, the note
        /// of one of its logs (e.g. `logs/00000-control/checkpoint.txt`, the tenant's view).
        #[arg(long)]
        since_checkpoint: Option<PathBuf>,
        /// Fail unless the bundle holds every record of its log up to the signed
        /// checkpoint, proven from signed data alone (for a tenant bundle: of every log).
        #[arg(long)]
        require_complete: bool,
        /// Print the verdict as one JSON object (no progress line); the exit status is
        /// the same.
        #[arg(long)]
        json: bool,
    },
    /// Show one record: the decoded statement, its signature status and inclusion proof.
    Show {
        /// Leaf index in the log.
        index: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Record filters.
#[derive(Args, Clone, Debug, Default)]
pub struct FilterArgs {
    /// Started at or after (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, UTC).
    #[arg(long)]
    since: Option<String>,
    /// Started before (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, UTC).
    #[arg(long)]
    until: Option<String>,
    /// Host id.
    #[arg(long)]
    host: Option<String>,
    /// Runbook name.
    #[arg(long)]
    runbook: Option<String>,
    /// Outcome status (healed, no-op, failed, refused, timeout, …).
    #[arg(long)]
    status: Option<String>,
    /// Tenant: its records only (export: a tenant bundle with its hosts' logs).
    #[arg(long)]
    tenant: Option<String>,
}

impl FilterArgs {
    fn to_filter(&self) -> anyhow::Result<ev::Filter> {
        Ok(ev::Filter {
            since_ms: self
                .since
                .as_deref()
                .map(parse_time)
                .transpose()
                .context("--since")?,
            until_ms: self
                .until
                .as_deref()
                .map(parse_time)
                .transpose()
                .context("--until")?,
            host: self.host.clone(),
            runbook: self.runbook.clone(),
            status: self.status.clone(),
            tenant: self.tenant.clone(),
        })
    }
}

/// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS[.fff]Z` (UTC) to ms since the epoch.
fn parse_time(text: &str) -> anyhow::Result<i64> {
    let bad =
        || anyhow::anyhow!("{text:?} is not a UTC time: use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ");
    let (date, time) = match text.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z').ok_or_else(bad)?)),
        None => (text, None),
    };
    let p: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let [y, m, d] = p[..] else { return Err(bad()) };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    // Days since 1970-01-01 (H. Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = match time {
        None => 0.0,
        Some(t) => {
            let p: Vec<f64> = t
                .split(':')
                .map(|x| x.parse().map_err(|_| bad()))
                .collect::<Result<_, _>>()?;
            let [h, mi, s] = p[..] else { return Err(bad()) };
            h * 3600.0 + mi * 60.0 + s
        }
    };
    Ok(days * 86_400_000 + (secs * 1000.0) as i64)
}

pub fn keys(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Generate { out, name } => {
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let (private, public) = ev::write_key_pair(&out, &name)?;
            let vk = ev::read_verifying_key(&public)?;
            println!(
                "private key: {} (mode 0600: keep it on this host)",
                private.display()
            );
            println!("public key:  {} (give this to auditors)", public.display());
            println!("key id:      {}", vk.key_id_hex());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn io() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub(crate) async fn open_store(data_dir: &Path, args: &LogArgs) -> anyhow::Result<ev::Store> {
    let target = match &args.evidence_db {
        Some(t) => t.clone(),
        None => {
            ev::create_private_dir(data_dir)
                .with_context(|| format!("cannot create {}", data_dir.display()))?;
            data_dir.join("evidence.db").display().to_string()
        }
    };
    let store = ev::Store::open(&target).await?;
    if target.starts_with("postgres://") || target.starts_with("postgresql://") {
        // Where `runwarden up` keeps the PostgreSQL log's latest checkpoint.
        let kept = data_dir.join("evidence.checkpoint");
        if kept.exists() {
            return Ok(store
                .keep_checkpoint_in("(the PostgreSQL evidence log)", &kept)
                .await?);
        }
    }
    Ok(store)
}

use runwarden_control::evidence::keys_dir;

/// The host's signing key: `--signing-key`, else DATA_DIR/signing-keys/HOST.key, created on first use.
fn host_key(
    data_dir: &Path,
    explicit: Option<&Path>,
    host_id: &str,
) -> anyhow::Result<ev::SigningKey> {
    let (key, created) = runwarden_control::evidence::host_key(data_dir, explicit, host_id)?;
    if let Some(path) = created {
        eprintln!(
            "created the signing key of host {host_id}: {} (public key beside it)",
            path.display()
        );
    }
    Ok(key)
}

/// Every public key in DATA_DIR/signing-keys: what `evidence show` trusts by default.
pub(crate) fn local_public_keys(data_dir: &Path) -> Vec<ev::VerifyingKey> {
    std::fs::read_dir(keys_dir(data_dir))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "pub"))
                .filter_map(|e| ev::read_verifying_key(&e.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn origin(key: &ev::SigningKey) -> String {
    ev::log_origin(key.name())
}

/// Sign `inv` into a record, append it durably, and sign a checkpoint of the new tree.
/// Returns the record's leaf index.
pub fn record(
    data_dir: &Path,
    log: &LogArgs,
    signing_key: Option<&Path>,
    tenant: &str,
    inv: &Invocation,
) -> anyhow::Result<u64> {
    let key = host_key(data_dir, signing_key, &inv.host_id)?;
    let statement = runwarden_agent::statement(
        inv,
        &key,
        runwarden_agent::Context {
            tenant,
            provenance: ev::Provenance::Manual {
                operator: std::env::var("SUDO_USER")
                    .or_else(|_| std::env::var("USER"))
                    .ok(),
            },
            incident_id: None,
            guardrails: None,
            // Run by hand from a file: no release was checked.
            publisher: None,
        },
    );
    let envelope = statement.sign(&key)?;
    let status = serde_json::to_value(inv.outcome.status)?
        .as_str()
        .unwrap_or("unknown")
        .to_string();
    io()?.block_on(async {
        let store = open_store(data_dir, log).await?;
        store.claim(&origin(&key), &key.verifying_key()).await?;
        let index = store
            .append(ev::NewRecord {
                envelope: envelope.to_json().into_bytes(),
                invocation_id: inv.invocation_id.clone(),
                host_id: inv.host_id.clone(),
                runbook: inv.runbook.clone(),
                status,
                started_at_ms: inv.started_at_ms as i64,
            })
            .await?;
        Ok(index)
    })
}

/// The key that signs exports: `--signing-key`, else the key of this database's log (the
/// one its first checkpoint claimed), found in DATA_DIR/control-key or
/// DATA_DIR/signing-keys, else the only key in DATA_DIR/signing-keys.
pub(crate) async fn export_key(
    data_dir: &Path,
    explicit: Option<&Path>,
    store: &ev::Store,
) -> anyhow::Result<ev::SigningKey> {
    if let Some(p) = explicit {
        return Ok(ev::read_signing_key(p)?);
    }
    let key_files = |dir: PathBuf| -> Vec<PathBuf> {
        std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "key"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let dir = keys_dir(data_dir);
    let keys = key_files(dir.clone());
    if let Some((origin, public)) = store.identity().await? {
        let mut candidates = key_files(data_dir.join("control-key"));
        candidates.extend(keys.iter().cloned());
        for path in candidates {
            let key = ev::read_signing_key(&path)?;
            if key.verifying_key().to_text() == public.to_text() {
                return Ok(key);
            }
        }
        bail!(
            "the key of this log ({}, key id {}) is not in {} or {}: pass --signing-key",
            ev::escape_control(&origin),
            public.key_id_hex(),
            data_dir.join("control-key").display(),
            dir.display()
        );
    }
    match keys.as_slice() {
        [one] => Ok(ev::read_signing_key(one)?),
        [] => bail!(
            "no signing key in {}: run a runbook first, or pass --signing-key",
            dir.display()
        ),
        _ => bail!(
            "{} holds several signing keys: pass --signing-key",
            dir.display()
        ),
    }
}

/// The export's progress line: on a terminal, none with --json.
fn export_progress(json: bool) -> crate::term::Progress {
    let mut p = crate::term::Progress::new("exporting", 0);
    if json {
        p.off();
    }
    p
}

/// `evidence export --tenant T`: T's view of the control log and every log of T's
/// enrolled hosts, as this database mirrors them, under a statement signed by `key`;
/// written as it is read, to a temporary file renamed once whole.
#[allow(clippy::too_many_arguments)]
async fn export_tenant(
    data_dir: &Path,
    log: &LogArgs,
    store: &ev::Store,
    filter: &ev::Filter,
    tenant: &str,
    key: &ev::SigningKey,
    time_zone: &ev::TimeZone,
    out: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let database = match &log.evidence_db {
        Some(t) => t.clone(),
        None => data_dir.join("evidence.db").display().to_string(),
    };
    let control = runwarden_control::store::ControlStore::open(&database).await?;
    let mut logs = vec![ev::TenantLog {
        role: ev::LogRole::Control,
        host: None,
        enrolled_at_ms: None,
        source: ev::LogSource::TenantView,
    }];
    // Each host's log under every key it enrolled with: a host enrolled again with a new
    // key (a rebuilt machine) has a log per key, the earlier ones kept.
    let keys = control.tenant_host_keys(tenant).await?;
    for key in &keys {
        logs.push(ev::TenantLog {
            role: ev::LogRole::Host,
            host: Some(key.host_id.clone()),
            enrolled_at_ms: Some(key.enrolled_at_ms.max(0) as u64),
            source: ev::LogSource::Mirror(ev::log_origin(&key.key_name)),
        });
    }
    let tmp = out.with_extension("partial");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let progress = export_progress(json);
    let tell = |done: u64, total: u64| progress.at_of(done, total);
    let written = ev::export_tenant(
        store,
        filter,
        &logs,
        key,
        Some(time_zone),
        vec![key.verifying_key()],
        std::io::BufWriter::with_capacity(1 << 20, file),
        &tell,
    )
    .await;
    progress.done();
    let statement = match written {
        Ok((w, statement)) => {
            w.into_inner()
                .map_err(|e| e.into_error())
                .and_then(|f| f.sync_all())
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            statement
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("cannot write {}", tmp.display()));
        }
    };
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    let records: u64 = statement.logs.iter().map(|l| l.records).sum();
    if json {
        let logs: Vec<serde_json::Value> = statement
            .logs
            .iter()
            .map(|l| {
                serde_json::json!({
                    "host": l.host, "records": l.records, "tree_size": l.tree_size,
                    "complete": l.complete,
                })
            })
            .collect();
        println!(
            "{}",
            crate::term::json_line(&serde_json::json!({
                "bundle": out.display().to_string(), "tenant": tenant, "records": records,
                "logs": logs,
            }))
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "exported {records} record(s) of tenant {} from {} log(s) to {}",
        ev::escape_control(tenant),
        statement.logs.len(),
        ev::escape_control(&out.display().to_string()),
    );
    for l in &statement.logs {
        println!(
            "  {:<26} {:>8} record(s), checkpoint size {}{}",
            ev::escape_control(&match &l.host {
                Some(h) => format!("host {h}"),
                None => "control plane".into(),
            }),
            l.records,
            l.tree_size,
            if l.complete {
                ", complete"
            } else {
                ", filtered"
            }
        );
    }
    let mut missing: Vec<&str> = Vec::new();
    for key in &keys {
        let held = statement
            .logs
            .iter()
            .any(|l| l.host.as_deref() == Some(key.host_id.as_str()));
        if !held && !missing.contains(&key.host_id.as_str()) {
            missing.push(&key.host_id);
        }
    }
    if !missing.is_empty() {
        eprintln!(
            "no records mirrored yet from enrolled host(s) {}: their logs are not in the bundle",
            ev::escape_control(&missing.join(", "))
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn evidence(cmd: EvidenceCommand, data_dir: &Path, log: &LogArgs) -> anyhow::Result<ExitCode> {
    if let EvidenceCommand::Verify {
        bundle,
        keys,
        since_checkpoint,
        require_complete,
        json,
        origin,
        s3,
    } = cmd
    {
        if let Some(to) = bundle.to_str().filter(|b| b.starts_with("s3://")) {
            if since_checkpoint.is_some() {
                bail!(
                    "--since-checkpoint applies to a bundle file; an archive proves itself from record 0"
                );
            }
            let trusted = keys
                .iter()
                .map(|k| ev::read_verifying_key(k))
                .collect::<Result<Vec<_>, _>>()?;
            // An archive verified is complete from record 0: --require-complete holds.
            return crate::archive::verify(to, origin.as_deref(), &s3, &trusted, json);
        }
        if origin.is_some() {
            bail!("--origin names a log in an archive (s3://…), not in a bundle file");
        }
        return verify(
            &bundle,
            &keys,
            since_checkpoint.as_deref(),
            require_complete,
            json,
        );
    }
    io()?.block_on(async {
        let store = open_store(data_dir, log).await?;
        match cmd {
            EvidenceCommand::List { filter, json } => {
                let records = store.list(&filter.to_filter()?).await?;
                for r in &records {
                    if json {
                        println!(
                            "{}",
                            crate::term::json_line(&serde_json::json!({
                                "index": r.index, "invocation_id": r.invocation_id, "host_id": r.host_id,
                                "runbook": r.runbook, "status": r.status,
                                "started_at": ev::rfc3339_ms(r.started_at_ms.max(0) as u64),
                                "leaf_hash": ev::hash_hex(&r.leaf_hash),
                            }))
                        );
                    } else {
                        let e = |t: &str| ev::escape_control(t).into_owned();
                        println!(
                            "{:>6}  {}  {:<16} {:<18} {:<14} {}",
                            r.index,
                            ev::rfc3339_ms(r.started_at_ms.max(0) as u64),
                            e(&r.host_id),
                            e(&r.runbook),
                            e(&r.status),
                            e(&r.invocation_id)
                        );
                    }
                }
                if !json {
                    eprintln!("{} record(s)", records.len());
                }
                Ok(ExitCode::SUCCESS)
            }
            EvidenceCommand::Export { filter, out, signing_key, time_zone, json } => {
                let time_zone = ev::TimeZone::load(&time_zone).map_err(|e| anyhow::anyhow!("--time-zone: {e}"))?;
                let key = export_key(data_dir, signing_key.as_deref(), &store).await?;
                let filter = filter.to_filter()?;
                if let Some(tenant) = filter.tenant.clone() {
                    return export_tenant(data_dir, log, &store, &filter, &tenant, &key, &time_zone, &out, json).await;
                }
                // Written as it is read, to a temporary file renamed once whole.
                let tmp = out.with_extension("partial");
                let file = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
                let progress = export_progress(json);
                let tell = |done: u64, total: u64| progress.at_of(done, total);
                let written = ev::export_stream(&store, &filter, &key, Some(&time_zone), local_public_keys(data_dir), std::io::BufWriter::with_capacity(1 << 20, file), &tell).await;
                progress.done();
                let manifest = match written {
                    Ok((w, manifest)) => {
                        w.into_inner().map_err(|e| e.into_error()).and_then(|f| f.sync_all()).with_context(|| format!("cannot write {}", tmp.display()))?;
                        manifest
                    }
                    Err(e) => {
                        let _ = std::fs::remove_file(&tmp);
                        return Err(e).with_context(|| format!("cannot write {}", tmp.display()));
                    }
                };
                std::fs::rename(&tmp, &out).with_context(|| format!("cannot write {}", out.display()))?;
                if json {
                    println!(
                        "{}",
                        crate::term::json_line(&serde_json::json!({
                            "bundle": out.display().to_string(), "origin": manifest.origin,
                            "records": manifest.record_count, "tree_size": manifest.tree_size,
                            "complete": manifest.complete, "filter": manifest.filter,
                        }))
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                println!(
                    "exported {} record(s) of {} to {} (checkpoint size {}, {})",
                    manifest.record_count,
                    ev::escape_control(&manifest.origin),
                    ev::escape_control(&out.display().to_string()),
                    manifest.tree_size,
                    if manifest.complete { "complete log" } else { "filtered" }
                );
                Ok(ExitCode::SUCCESS)
            }
            EvidenceCommand::Verify { .. } => unreachable!("verify runs without a store"),
            EvidenceCommand::Archive { to, s3, retention, signing_key, json } => {
                let key = export_key(data_dir, signing_key.as_deref(), &store).await?;
                crate::archive::archive_once(&store, &key, local_public_keys(data_dir), &to, &s3, retention, json).await
            }
            EvidenceCommand::Show { index, json } => {
                let Some(r) = store.get(index).await? else {
                    bail!("no record {index}: the log has {} record(s)", store.size().await?);
                };
                let env = ev::Envelope::from_json(std::str::from_utf8(&r.envelope).context("record is not UTF-8")?)?;
                let trusted = local_public_keys(data_dir);
                let signature = match env.verify(&trusted) {
                    Ok(k) => format!("valid, signed by {} (key id {})", k.name(), k.key_id_hex()),
                    Err(e) => format!("NOT VERIFIED: {e}"),
                };
                let statement = ev::Statement::from_envelope(&env)?;
                let size = store.size().await?;
                let leaves = store.leaf_hashes(size).await?;
                let proof = ev::inclusion_proof(&leaves, index)?;
                let root = ev::root(&leaves);
                let included = ev::verify_inclusion(&r.leaf_hash, index, size, &proof, &root).is_ok();
                if json {
                    println!(
                        "{}",
                        crate::term::json_text(serde_json::to_string_pretty(&serde_json::json!({
                            "index": index,
                            "statement": statement,
                            "signature": signature,
                            "leaf_hash": ev::hash_hex(&r.leaf_hash),
                            "inclusion_proof": {"tree_size": size, "root": ev::hash_hex(&root),
                                                "hashes": proof.iter().map(ev::hash_hex).collect::<Vec<_>>(), "verified": included},
                        }))?)
                    );
                } else {
                    // Every field was written by someone else (a runbook's summary, a host id):
                    // printed with control characters escaped.
                    let say = |line: String| println!("{}", ev::escape_control(&line));
                    let p = &statement.predicate;
                    say(format!("record {index} of {size}"));
                    say(format!("runbook:    {} {} (sha256 {})", statement.subject[0].name, p.runbook_version, statement.sha256().unwrap_or("?")));
                    say(format!("invocation: {} on {} for {} ({})", p.invocation_id, p.host_id, p.tenant, serde_json::to_string(&p.provenance)?));
                    say(format!("when:       {} → {}{}", p.started_at, p.ended_at, if p.dry_run { " [dry run]" } else { "" }));
                    say(format!("outcome:    {} — {}", p.outcome["status"].as_str().unwrap_or("?"), p.outcome["summary"].as_str().unwrap_or("")));
                    say(format!("host calls: {}", p.trace.as_array().map_or(0, Vec::len)));
                    say(format!("signature:  {signature}"));
                    println!(
                        "inclusion:  {} in the tree of size {size} with root {} ({} proof hashes)",
                        if included { "verified" } else { "FAILED" },
                        ev::hash_hex(&root),
                        proof.len()
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// Why `--require-complete` fails for a one-log bundle, if it does.
fn short_of_complete(v: &ev::Verified) -> Option<String> {
    if v.complete {
        None
    } else if v.from > 0 {
        Some(format!(
            "--require-complete: this is one segment of an archive (records {} to {}); verify the archive (s3://…) it belongs to",
            v.from, v.tree_size
        ))
    } else {
        Some(format!(
            "--require-complete: this is a filtered export ({} of the log's {} records); export the whole log",
            v.records, v.tree_size
        ))
    }
}

/// Why `--require-complete` fails for a tenant bundle, if it does.
fn tenant_short_of_complete(v: &ev::TenantVerified) -> Option<String> {
    let partial: Vec<String> = v
        .logs
        .iter()
        .filter(|(e, _)| !e.complete)
        .map(|(e, _)| ev::escape_control(&e.origin).into_owned())
        .collect();
    (!partial.is_empty()).then(|| {
        format!(
            "--require-complete: not every record of {} up to its checkpoint is in the bundle (a filtered export; or a tenant bundle of format 1, whose control-plane part is a share of a shared log: export it again)",
            partial.join(", ")
        )
    })
}

/// `evidence verify --json` of a one-log bundle: the verdict as one object.
fn log_json(verified: &Result<ev::Verified, ev::BundleError>, require_complete: bool) -> ExitCode {
    let (ok, out) = match verified {
        Ok(v) => {
            let short = require_complete.then(|| short_of_complete(v)).flatten();
            (
                short.is_none(),
                serde_json::json!({
                    "verified": short.is_none(),
                    "origin": v.origin,
                    "records": v.records,
                    "tree_size": v.tree_size,
                    "root": ev::hash_hex(&v.root),
                    "complete": v.complete,
                    "consistent_with": v.consistent_with,
                    "error": short,
                }),
            )
        }
        Err(e) => (
            false,
            serde_json::json!({"verified": false, "error": e.message, "record": e.record}),
        ),
    };
    println!("{}", crate::term::json_line(&out));
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `evidence verify --json` of a tenant bundle: the verdict and each log's.
fn tenant_json(
    verified: &Result<ev::TenantVerified, ev::BundleError>,
    require_complete: bool,
) -> ExitCode {
    let (ok, out) = match verified {
        Ok(v) => {
            let short = require_complete
                .then(|| tenant_short_of_complete(v))
                .flatten();
            let logs: Vec<serde_json::Value> = v
                .logs
                .iter()
                .map(|(e, r)| {
                    serde_json::json!({
                        "role": e.role,
                        "host": e.host,
                        "origin": e.origin,
                        "complete": e.complete,
                        "verified": r.is_ok(),
                        "records": r.as_ref().ok().map(|v| v.records),
                        "error": r.as_ref().err().map(|e| e.to_string()),
                    })
                })
                .collect();
            let ok = v.ok() && short.is_none();
            (
                ok,
                serde_json::json!({
                    "verified": ok,
                    "tenant": v.statement.tenant,
                    "logs": logs,
                    "error": short,
                }),
            )
        }
        Err(e) => (
            false,
            serde_json::json!({"verified": false, "error": e.message, "record": e.record}),
        ),
    };
    println!("{}", crate::term::json_line(&out));
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `file`, read through a buffer, telling `progress` how far it is.
fn reading(
    file: std::fs::File,
    progress: &crate::term::Progress,
) -> std::io::BufReader<crate::term::Counting<'_, std::fs::File>> {
    std::io::BufReader::with_capacity(
        1 << 20,
        crate::term::Counting {
            inner: file,
            read: 0,
            progress,
        },
    )
}

/// `evidence verify`: needs nothing but the bundle and the keys.
fn verify(
    bundle: &Path,
    keys: &[PathBuf],
    since: Option<&Path>,
    require_complete: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let trusted = keys
        .iter()
        .map(|k| ev::read_verifying_key(k))
        .collect::<Result<Vec<_>, _>>()?;
    let since = since
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display())))
        .transpose()?;
    let open =
        || std::fs::File::open(bundle).with_context(|| format!("cannot open {}", bundle.display()));
    // Read as a stream, a progress bar on a terminal (none with --json).
    let progress = |file: &std::fs::File| {
        let mut p = crate::term::Progress::new("verifying", file.metadata().map_or(0, |m| m.len()));
        if json {
            p.off();
        }
        p
    };
    if ev::is_tenant_bundle(std::io::BufReader::new(open()?)) {
        let file = open()?;
        let shown = progress(&file);
        let verified =
            ev::verify_tenant_bundle_since(reading(file, &shown), &trusted, since.as_deref());
        shown.done();
        if json {
            return Ok(tenant_json(&verified, require_complete));
        }
        return match verified {
            // Quotes the bundle: escaped inside, line by line.
            Ok(v) if v.ok() => {
                print!("{v}");
                match require_complete
                    .then(|| tenant_short_of_complete(&v))
                    .flatten()
                {
                    Some(why) => {
                        eprintln!("verification FAILED: {why}");
                        Ok(ExitCode::FAILURE)
                    }
                    None => Ok(ExitCode::SUCCESS),
                }
            }
            Ok(v) => {
                eprint!("verification FAILED: {v}");
                Ok(ExitCode::FAILURE)
            }
            Err(e) => {
                eprintln!(
                    "verification FAILED: {}",
                    ev::escape_control(&e.to_string())
                );
                Ok(ExitCode::FAILURE)
            }
        };
    }
    let file = open()?;
    let shown = progress(&file);
    let verified = ev::verify_bundle(reading(file, &shown), &trusted, since.as_deref());
    shown.done();
    if json {
        return Ok(log_json(&verified, require_complete));
    }
    match verified {
        // Both quote the bundle: printed with control characters escaped, so nothing in it
        // can rewrite the line that says whether it verified.
        Ok(v) => {
            println!("{}", ev::escape_control(&v.to_string()));
            match require_complete.then(|| short_of_complete(&v)).flatten() {
                Some(why) => {
                    eprintln!("verification FAILED: {why}");
                    Ok(ExitCode::FAILURE)
                }
                None => Ok(ExitCode::SUCCESS),
            }
        }
        Err(e) => {
            eprintln!(
                "verification FAILED: {}",
                ev::escape_control(&e.to_string())
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
