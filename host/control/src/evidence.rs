//! Turning what happened into signed evidence: the host's signing key, and the statement
//! for an invocation — or for a decision not to act.

use runwarden_evidence as ev;
use std::path::{Path, PathBuf};

/// Where host signing keys live: `DATA_DIR/signing-keys/HOST.key` (0600) beside `HOST.pub`.
pub fn keys_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("signing-keys")
}

/// A host id as a file name.
fn key_stem(host_id: &str) -> String {
    host_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The host's signing key: `explicit`, else `DATA_DIR/signing-keys/HOST.key`, created on
/// first use. The second value says whether it was just created (and where).
pub fn host_key(
    data_dir: &Path,
    explicit: Option<&Path>,
    host_id: &str,
) -> ev::Result<(ev::SigningKey, Option<PathBuf>)> {
    if let Some(p) = explicit {
        return Ok((ev::read_signing_key(p)?, None));
    }
    key_in(&keys_dir(data_dir), host_id, &key_stem(host_id))
}

/// Rename host `host_id`'s key in `data_dir` (see [`host_key`]) to `name`: the same
/// secret, its files rewritten in place (atomically, the private one 0600). The control
/// plane names an enrolling host's key (`runwarden_control::Enrolled::key_name`).
pub fn rename_host_key(data_dir: &Path, host_id: &str, name: &str) -> ev::Result<ev::SigningKey> {
    let dir = keys_dir(data_dir);
    let stem = key_stem(host_id);
    let private = dir.join(format!("{stem}.key"));
    let key = ev::read_signing_key(&private)?.renamed(name)?;
    let io = |action: &'static str, path: PathBuf| {
        move |source| ev::Error::Io {
            action,
            path,
            source,
        }
    };
    ev::write_atomic(&private, format!("{}\n", key.to_text()).as_bytes())
        .map_err(io("rewrite private key", private.clone()))?;
    let public = dir.join(format!("{stem}.pub"));
    ev::write_atomic(
        &public,
        format!("{}\n", key.verifying_key().to_text()).as_bytes(),
    )
    .map_err(io("rewrite public key", public.clone()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644))
            .map_err(io("make the public key readable", public.clone()))?;
    }
    Ok(key)
}

/// The name of the control plane's key, and of its file.
pub const CONTROL_KEY_NAME: &str = "runwarden-control";

/// The control plane's signing key, `DATA_DIR/control-key/runwarden-control.key`,
/// created on first use: it signs the jobs agents run (agents trust its public key,
/// `runwarden-control.pub` beside it). Apart from host keys, so that no host id can name
/// it.
pub fn control_key(data_dir: &Path) -> ev::Result<(ev::SigningKey, Option<PathBuf>)> {
    key_in(
        &data_dir.join("control-key"),
        CONTROL_KEY_NAME,
        CONTROL_KEY_NAME,
    )
}

/// The key `dir/STEM.key`, or a new key pair named `name` written there (0600, in a 0700
/// directory).
fn key_in(dir: &Path, name: &str, stem: &str) -> ev::Result<(ev::SigningKey, Option<PathBuf>)> {
    let path = dir.join(format!("{stem}.key"));
    if path.exists() {
        return Ok((ev::read_signing_key(&path)?, None));
    }
    ev::create_private_dir(dir).map_err(|source| ev::Error::Io {
        action: "create the signing-key directory",
        path: dir.to_owned(),
        source,
    })?;
    let (private, _) = ev::write_key_pair(dir, name)?;
    Ok((ev::read_signing_key(&private)?, Some(private)))
}

/// Open the evidence log and the control state of `database` and check them together:
/// the log against its kept checkpoint (a SQLite log keeps it beside itself; a PostgreSQL
/// one in `DATA_DIR/evidence.checkpoint`), and every evidence index the stored incidents
/// name against the log's size, so that a log that lost records is never extended and an
/// index an old incident names is never given to a new record.
pub async fn open_checked(
    database: &str,
    data_dir: &Path,
) -> Result<(ev::Store, crate::store::ControlStore), crate::ControlError> {
    let mut evidence = ev::Store::open(database).await?;
    let postgres = database.starts_with("postgres://") || database.starts_with("postgresql://");
    if postgres {
        ev::create_private_dir(data_dir).map_err(|source| ev::Error::Io {
            action: "create the data directory",
            path: data_dir.to_owned(),
            source,
        })?;
        evidence = evidence
            .keep_checkpoint_in(
                "(the PostgreSQL evidence log)",
                &data_dir.join("evidence.checkpoint"),
            )
            .await?;
    }
    let control = crate::store::ControlStore::open(database).await?;
    let size = evidence.size().await?;
    if let Some(max) = control.max_evidence_index().await?
        && max >= size
    {
        let (what, recover) = if postgres {
            (
                "the PostgreSQL database".to_string(),
                "restore the database from a backup".to_string(),
            )
        } else {
            let db = Path::new(database);
            (
                db.display().to_string(),
                format!(
                    "stop runwarden and restore {} (with its -wal file, if any) from a backup \
                     taken after the incident was stored; if no such backup exists, move {}, \
                     {} and {} (each with its -wal and -shm files) into an archive directory \
                     (give it to your auditors) and start again with a new, empty log",
                    db.display(),
                    db.display(),
                    crate::store::control_path(db).display(),
                    ev::checkpoint_file_of(db).display()
                ),
            )
        };
        return Err(crate::ControlError::Setup(format!(
            "the evidence log in {what} has {size} records, but a stored incident names \
             evidence record {max}: the log lost records. Refusing to start, so that no new \
             record takes an index an old incident names. To recover: {recover}"
        )));
    }
    Ok((evidence, control))
}

/// Context of an invocation beyond what the runtime reports.
pub struct Context<'a> {
    /// Tenant it was done for.
    pub tenant: &'a str,
    /// Why it ran.
    pub provenance: ev::Provenance,
    /// The incident, when there was one.
    pub incident_id: Option<&'a str>,
    /// Guardrail verdicts, when it went through the pipeline.
    pub guardrails: Option<serde_json::Value>,
}

/// What a decision record is about: the component that would have run (or decided).
pub struct Subject<'a> {
    /// Component name.
    pub name: &'a str,
    /// Its version, when known.
    pub version: &'a str,
    /// SHA-256 of its bytes.
    pub sha256: &'a str,
}

/// The evidence statement of a decision not to act now: suppressed, escalated, or
/// waiting for approval. Nothing ran: no grant, no trace, no fuel.
#[allow(clippy::too_many_arguments)]
pub fn decision_statement(
    subject: Subject<'_>,
    key: &ev::SigningKey,
    host_id: &str,
    cx: Context<'_>,
    status: &str,
    summary: &str,
    params: serde_json::Value,
    at_ms: u64,
) -> ev::Statement {
    ev::Statement::new(
        subject.name,
        subject.sha256,
        ev::Invocation {
            publisher: None,
            invocation_id: time_ordered_id(),
            tenant: cx.tenant.to_string(),
            host_id: host_id.to_string(),
            key_id: key.verifying_key().key_id_hex(),
            provenance: cx.provenance,
            runbook_version: subject.version.to_string(),
            grant_digest: None,
            grant: None,
            params,
            trace: serde_json::json!([]),
            outcome: serde_json::json!({"status": status, "summary": summary, "details": {}}),
            started_at: ev::rfc3339_ms(at_ms),
            ended_at: ev::rfc3339_ms(at_ms),
            duration_us: 0,
            fuel_consumed: 0,
            dry_run: false,
            incident_id: cx.incident_id.map(String::from),
            guardrails: cx.guardrails,
        },
    )
}

/// A random UUID v4 string.
pub fn uuid_v4() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A UUID v7 string: the time in ms, then 74 random bits. Ids that are primary keys of
/// tables written on every incident are time-ordered, so each insert lands at the end of
/// its index instead of on a random page: writes stay as fast with a million rows as with
/// none.
pub fn time_ordered_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
