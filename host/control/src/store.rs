//! Control-plane state in the same database as the evidence log (one migration sequence
//! in `migrations/`): incidents, the runbook actions guardrails count, API tokens.

use runwarden_proto::EscalationState;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A store failure.
#[derive(Debug, thiserror::Error)]
#[error("control-plane database: {0}")]
pub struct StoreError(String);

impl StoreError {
    pub(crate) fn corrupt(message: String) -> StoreError {
        StoreError(message)
    }
}

type Result<T> = std::result::Result<T, StoreError>;

fn db_err(what: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| StoreError(format!("{what}: {e}"))
}

#[derive(Clone)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Run the same code against whichever pool this is.
macro_rules! on_db {
    ($db:expr, $pool:ident, $pg:ident => $body:expr) => {
        match $db {
            Db::Sqlite($pool) => {
                let $pg = false;
                $body
            }
            Db::Postgres($pool) => {
                let $pg = true;
                $body
            }
        }
    };
}

// After the macros it uses.
mod deployments;
mod hosts;
mod month;
mod registry;
pub use deployments::{DeploymentRow, HostComponentRow};
pub use hosts::{EnrollmentTokenRow, HostKeyRow, HostRow};
pub use month::{MonthEscalation, MonthIncident, MonthRun};
pub use registry::ReleaseRow;

/// A [`StoredEscalation`] from a row of `ESCALATION_COLUMNS`, on either backend.
macro_rules! stored_escalation {
    ($r:expr, $pg:expr) => {
        StoredEscalation {
            row: EscalationRow {
                id: $r.try_get(0)?,
                incident_id: $r.try_get(1)?,
                tenant: $r.try_get(2)?,
                host: from_db($pg, $r.try_get(3)?),
                severity: $r.try_get(4)?,
                reason: from_db($pg, $r.try_get(5)?),
                proposal: from_db($pg, $r.try_get(6)?),
                created_at_ms: $r.try_get(7)?,
                sla_deadline_ms: $r.try_get(8)?,
            },
            state: $r.try_get(9)?,
            decided_by: from_db($pg, $r.try_get(10)?),
            decided_at_ms: $r.try_get(11)?,
            note: from_db($pg, $r.try_get(12)?),
        }
    };
}

/// Text as PostgreSQL stores it. PostgreSQL text cannot hold U+0000, which incident input
/// may carry (a JSON `\u0000`): on PostgreSQL, U+0000 is written as U+E000 `0` and U+E000
/// itself as U+E000 U+E000 (a private-use character), and [`from_db`] undoes it. SQLite
/// stores every string as it is. Incident records are JSON, whose writer escapes U+0000, so
/// only the free-text columns of runs, escalations and notifications go through this.
fn to_db(pg: bool, text: &str) -> std::borrow::Cow<'_, str> {
    if !pg || !text.contains(['\0', '\u{E000}']) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\0' => out.push_str("\u{E000}0"),
            '\u{E000}' => out.push_str("\u{E000}\u{E000}"),
            c => out.push(c),
        }
    }
    out.into()
}

/// The text [`to_db`] stored.
fn from_db(pg: bool, text: String) -> String {
    if !pg || !text.contains('\u{E000}') {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\u{E000}') {
            (_, true) => match chars.next() {
                Some('0') => out.push('\0'),
                Some(next) => out.push(next),
                None => out.push(c),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

/// SQL written with `?` placeholders, numbered `$1…` for PostgreSQL.
fn sql(pg: bool, text: &str) -> AssertSqlSafe<String> {
    if !pg {
        return AssertSqlSafe(text.to_string());
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut n = 0;
    for c in text.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    AssertSqlSafe(out)
}

/// One action guardrails count.
#[derive(Clone, Debug)]
pub struct ActionRow {
    /// Tenant.
    pub tenant: String,
    /// Host.
    pub host: String,
    /// Runbook.
    pub runbook: String,
    /// When it started (ms).
    pub at_ms: i64,
}

/// An API token as stored (the secret is not).
#[derive(Clone, Debug)]
pub struct TokenRow {
    /// Public id.
    pub id: String,
    /// The tenant it is bound to.
    pub tenant: String,
    /// `read`, `operate` or `admin`.
    pub scope: String,
    /// A name for people.
    pub name: String,
    /// Revoked tokens authenticate nothing.
    pub revoked: bool,
}

/// The control-plane store. Cloning shares it.
///
/// On SQLite the control state lives in its own file beside the evidence log
/// ([`control_path`]), and every write goes through one connection: SQLite admits one
/// writer per file, and a writer that finds the lock taken sleeps in milliseconds. Reads
/// use a pool of their own and never wait (WAL).
#[derive(Clone)]
pub struct ControlStore {
    db: Db,
    write: Db,
    writer: mpsc::Sender<WriteRequest>,
    recent: Arc<std::sync::Mutex<RecentRuns>>,
}

/// How many of a tenant's latest runs are kept in memory: what the planners read on
/// every incident no rule matched (`planner.history`, 500 by default). A request for
/// more reads the database.
pub const RECENT_RUNS: usize = 1000;
/// Tenants whose latest runs are kept at once; the least recently read is dropped first.
const RECENT_TENANTS: usize = 256;

/// The latest runs of recently planned-for tenants, newest first. A tenant's list is
/// read from the database once, then kept current by the writer with every run it
/// commits (this store is the only writer of runs in a process), so planning reads no
/// rows. A run not yet committed is not among them, as it would not be in the database.
#[derive(Default)]
struct RecentRuns {
    tenants: HashMap<String, TenantRuns>,
    clock: u64,
}

struct TenantRuns {
    runs: std::collections::VecDeque<Arc<RunRow>>,
    /// False while the list is being read from the database (runs queued meanwhile are
    /// collected and merged when it arrives).
    loaded: bool,
    used: u64,
}

impl RecentRuns {
    fn push(&mut self, run: &RunRow) {
        if let Some(t) = self.tenants.get_mut(&run.tenant) {
            t.runs.push_front(Arc::new(run.clone()));
            t.runs.truncate(RECENT_RUNS);
        }
    }

    /// The first `limit` runs of `tenant`, when its list is loaded.
    fn get(&mut self, tenant: &str, limit: usize) -> Option<Vec<Arc<RunRow>>> {
        self.clock += 1;
        let t = self.tenants.get_mut(tenant).filter(|t| t.loaded)?;
        t.used = self.clock;
        Some(t.runs.iter().take(limit).cloned().collect())
    }

    /// Start loading `tenant`'s list; false when another caller already is.
    fn start_loading(&mut self, tenant: &str) -> bool {
        if self.tenants.contains_key(tenant) {
            return false;
        }
        if self.tenants.len() >= RECENT_TENANTS
            && let Some(oldest) = self
                .tenants
                .iter()
                .filter(|(_, t)| t.loaded)
                .min_by_key(|(_, t)| t.used)
                .map(|(k, _)| k.clone())
        {
            self.tenants.remove(&oldest);
        }
        self.tenants.insert(
            tenant.to_string(),
            TenantRuns {
                runs: Default::default(),
                loaded: false,
                used: self.clock,
            },
        );
        true
    }

    /// Finish loading `tenant`'s list with `stored` (newest first, read after every run
    /// queued before loading began was committed); `None` when the read failed.
    fn finish_loading(&mut self, tenant: &str, stored: Option<&[Arc<RunRow>]>) {
        let Some(stored) = stored else {
            self.tenants.remove(tenant);
            return;
        };
        let Some(t) = self.tenants.get_mut(tenant) else {
            return;
        };
        // Runs queued while the database was read may also be in what it returned.
        let queued: std::collections::HashSet<&str> =
            t.runs.iter().map(|r| r.invocation_id.as_str()).collect();
        let older: Vec<Arc<RunRow>> = stored
            .iter()
            .filter(|r| !queued.contains(r.invocation_id.as_str()))
            .cloned()
            .collect();
        t.runs.extend(older);
        t.runs
            .make_contiguous()
            .sort_by_key(|r| std::cmp::Reverse(r.at_ms));
        t.runs.truncate(RECENT_RUNS);
        t.loaded = true;
    }
}

/// A write the control plane makes on every incident; queued and committed in batches
/// (one statement per table per batch) by the store's writer task.
#[derive(Clone, Debug)]
pub enum Write {
    /// Insert or replace an incident's record.
    Incident(IncidentRow),
    /// A runbook run ended: its outcome.
    Run(RunRow),
    /// An incident went to a human (written once per incident).
    Escalation(EscalationRow),
    /// How a webhook notification of an escalation ended.
    Notification(NotificationRow),
    /// A runbook run started (what cooldowns and the breaker count).
    Action {
        /// Tenant.
        tenant: String,
        /// Host.
        host: String,
        /// Runbook.
        runbook: String,
        /// The incident it is for.
        incident_id: String,
        /// When (ms).
        at_ms: i64,
    },
}

/// A runbook run and its outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRow {
    /// The invocation's id.
    pub invocation_id: String,
    /// The incident it was for.
    pub incident_id: String,
    /// Tenant.
    pub tenant: String,
    /// Host.
    pub host: String,
    /// Runbook.
    pub runbook: String,
    /// Its status (`healed`, `failed`, …).
    pub status: String,
    /// Its summary.
    pub summary: String,
    /// Who decided it: `L1`, `L2`, `L3`.
    pub tier: String,
    /// Whether it was a dry run.
    pub dry_run: bool,
    /// The incident's type.
    pub incident_type: String,
    /// The incident's service (empty when none).
    pub service: String,
    /// The incident's message.
    pub message: String,
    /// The params it ran with (JSON).
    pub params: String,
    /// When it started (ms).
    pub at_ms: i64,
}

/// An escalation's row as first written (state `open`).
#[derive(Clone, Debug, PartialEq)]
pub struct EscalationRow {
    /// Id.
    pub id: String,
    /// Its incident (one escalation per incident).
    pub incident_id: String,
    /// Tenant.
    pub tenant: String,
    /// Host.
    pub host: String,
    /// The incident's severity.
    pub severity: String,
    /// Why.
    pub reason: String,
    /// `{"runbook", "params"}` JSON, or empty.
    pub proposal: String,
    /// When (ms).
    pub created_at_ms: i64,
    /// Deadline (ms).
    pub sla_deadline_ms: i64,
}

/// How one webhook notification of an escalation ended.
#[derive(Clone, Debug, PartialEq)]
pub struct NotificationRow {
    /// Id (also sent as `X-Runwarden-Delivery`).
    pub id: String,
    /// The escalation.
    pub escalation_id: String,
    /// Tenant.
    pub tenant: String,
    /// The webhook's name (never its URL).
    pub webhook: String,
    /// `escalation.opened`, `escalation.decided`, `escalation.breached`.
    pub event: String,
    /// `delivered`, `failed`, `dropped`.
    pub status: String,
    /// Requests made.
    pub attempts: i64,
    /// Why it was not delivered: a status code or an error kind, never the URL.
    pub last_error: String,
    /// When it ended (ms).
    pub at_ms: i64,
}

/// An escalation as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEscalation {
    /// As first written.
    pub row: EscalationRow,
    /// Its state.
    pub state: String,
    /// Who decided.
    pub decided_by: String,
    /// When (ms).
    pub decided_at_ms: Option<i64>,
    /// What they said.
    pub note: String,
}

/// An incident's row.
#[derive(Clone, Debug)]
pub struct IncidentRow {
    /// Id.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Host.
    pub host: String,
    /// Fingerprint.
    pub fingerprint: String,
    /// Status.
    pub status: String,
    /// When it was received (ms).
    pub received_at_ms: i64,
    /// When this row was written (ms).
    pub updated_at_ms: i64,
    /// The whole record, JSON.
    pub record: String,
}

struct WriteRequest {
    writes: Vec<Write>,
    done: oneshot::Sender<Result<()>>,
}

/// Queued writes; [`Pending::wait`] returns once they are committed.
pub struct Pending(oneshot::Receiver<Result<()>>);

impl Pending {
    /// Wait for the commit.
    pub async fn wait(self) -> Result<()> {
        self.0
            .await
            .map_err(|_| StoreError("the control-plane writer has stopped".into()))?
    }
}

/// Most requests committed in one batch.
const MAX_BATCH: usize = 256;

async fn writer(
    db: Db,
    mut rx: mpsc::Receiver<WriteRequest>,
    recent: Arc<std::sync::Mutex<RecentRuns>>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let result = if batch.iter().all(|r| r.writes.is_empty()) {
            Ok(())
        } else {
            commit(&db, batch.iter().flat_map(|r| &r.writes)).await
        };
        // A PostgreSQL batch is one transaction, so a failed one wrote nothing: commit each
        // request alone, so that only the one that cannot be written fails, not the other
        // tenants' requests that shared its batch. (SQLite statements commit on their own and
        // fail only when the database does, for every request alike.)
        let results: Vec<Result<()>> = match result {
            Err(_) if batch.len() > 1 && matches!(db, Db::Postgres(_)) => {
                let mut each = Vec::with_capacity(batch.len());
                for r in &batch {
                    each.push(commit(&db, r.writes.iter()).await);
                }
                each
            }
            Ok(()) => batch.iter().map(|_| Ok(())).collect(),
            Err(e) => batch.iter().map(|_| Err(StoreError(e.0.clone()))).collect(),
        };
        for (r, result) in batch.into_iter().zip(results) {
            // Committed runs join their tenant's latest, before anyone is told they are
            // written.
            if result.is_ok() && r.writes.iter().any(|w| matches!(w, Write::Run(_))) {
                let mut recent = recent.lock().unwrap_or_else(|e| e.into_inner());
                for w in &r.writes {
                    if let Write::Run(run) = w {
                        recent.push(run);
                    }
                }
            }
            // Nobody waits for this write (see `Controller::complete`): say it failed.
            if let Err(Err(e)) = r.done.send(result) {
                eprintln!("runwarden: {e}");
            }
        }
    }
}

/// Every action row in one INSERT, then every incident's last row in one upsert (a batch
/// may hold an incident twice: `processing`, then its end). Each statement commits on its
/// own: nothing needs the two tables to change together, and each round trip to the
/// database thread costs as much as the statement. The SQL differs with the batch size,
/// so it is not kept prepared.
async fn commit<'a>(db: &Db, writes: impl Iterator<Item = &'a Write>) -> Result<()> {
    let mut actions = Vec::new();
    let mut runs = Vec::new();
    let mut escalations = Vec::new();
    let mut notifications = Vec::new();
    let mut incidents: Vec<&IncidentRow> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for w in writes {
        match w {
            Write::Action { .. } => actions.push(w),
            Write::Run(r) => runs.push(r),
            Write::Escalation(e) => escalations.push(e),
            Write::Notification(n) => notifications.push(n),
            Write::Incident(row) => match at.get(row.id.as_str()) {
                Some(&i) => incidents[i] = row,
                None => {
                    at.insert(&row.id, incidents.len());
                    incidents.push(row);
                }
            },
        }
    }
    // The statements, against executor `$ex`; `$pg` says whether it is PostgreSQL.
    macro_rules! statements {
        ($ex:expr, $pg:expr) => {{
        let pg = $pg;
        for chunk in actions.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO actions (tenant, host, runbook, incident_id, at_ms) ",
            );
            q.push_values(chunk, |mut b, w| {
                if let Write::Action { tenant, host, runbook, incident_id, at_ms } = w {
                    b.push_bind(tenant.as_str())
                        .push_bind(host.as_str())
                        .push_bind(runbook.as_str())
                        .push_bind(incident_id.as_str())
                        .push_bind(*at_ms);
                }
            });
            q.build().persistent(false).execute($ex).await.map_err(db_err("recording actions"))?;
        }
        for chunk in runs.chunks(ROWS_PER_STATEMENT / 2) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO runs (invocation_id, incident_id, tenant, host, runbook, status, summary, tier, dry_run, incident_type, service, message, params, at_ms) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(r.invocation_id.as_str())
                    .push_bind(r.incident_id.as_str())
                    .push_bind(r.tenant.as_str())
                    .push_bind(r.host.as_str())
                    .push_bind(r.runbook.as_str())
                    .push_bind(r.status.as_str())
                    .push_bind(to_db(pg, &r.summary))
                    .push_bind(r.tier.as_str())
                    .push_bind(r.dry_run)
                    .push_bind(to_db(pg, &r.incident_type))
                    .push_bind(to_db(pg, &r.service))
                    .push_bind(to_db(pg, &r.message))
                    .push_bind(to_db(pg, &r.params))
                    .push_bind(r.at_ms);
            });
            q.push(" ON CONFLICT (invocation_id) DO NOTHING");
            q.build().persistent(false).execute($ex).await.map_err(db_err("recording runs"))?;
        }
        for chunk in escalations.chunks(ROWS_PER_STATEMENT / 2) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO escalations (id, incident_id, tenant, host, severity, reason, state, proposal, created_at_ms, sla_deadline_ms, updated_at_ms) ",
            );
            q.push_values(chunk, |mut b, e| {
                b.push_bind(e.id.as_str())
                    .push_bind(e.incident_id.as_str())
                    .push_bind(e.tenant.as_str())
                    .push_bind(to_db(pg, &e.host))
                    .push_bind(e.severity.as_str())
                    .push_bind(to_db(pg, &e.reason))
                    .push_bind(EscalationState::Open.as_str())
                    .push_bind(to_db(pg, &e.proposal))
                    .push_bind(e.created_at_ms)
                    .push_bind(e.sla_deadline_ms)
                    .push_bind(e.created_at_ms);
            });
            q.push(" ON CONFLICT (incident_id) DO NOTHING");
            q.build().persistent(false).execute($ex).await.map_err(db_err("recording escalations"))?;
        }
        for chunk in notifications.chunks(ROWS_PER_STATEMENT / 2) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO notifications (id, escalation_id, tenant, webhook, event, status, attempts, last_error, at_ms) ",
            );
            q.push_values(chunk, |mut b, n| {
                b.push_bind(n.id.as_str())
                    .push_bind(n.escalation_id.as_str())
                    .push_bind(n.tenant.as_str())
                    .push_bind(n.webhook.as_str())
                    .push_bind(n.event.as_str())
                    .push_bind(n.status.as_str())
                    .push_bind(n.attempts)
                    .push_bind(to_db(pg, &n.last_error))
                    .push_bind(n.at_ms);
            });
            q.push(" ON CONFLICT (id) DO NOTHING");
            q.build().persistent(false).execute($ex).await.map_err(db_err("recording notifications"))?;
        }
        for chunk in incidents.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO incidents (id, tenant, host, fingerprint, status, received_at_ms, updated_at_ms, record) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(r.id.as_str())
                    .push_bind(r.tenant.as_str())
                    .push_bind(r.host.as_str())
                    .push_bind(r.fingerprint.as_str())
                    .push_bind(r.status.as_str())
                    .push_bind(r.received_at_ms)
                    .push_bind(r.updated_at_ms)
                    .push_bind(r.record.as_str());
            });
            q.push(" ON CONFLICT (id) DO UPDATE SET status = excluded.status, updated_at_ms = excluded.updated_at_ms, record = excluded.record");
            q.build().persistent(false).execute($ex).await.map_err(db_err("writing incidents"))?;
        }
        }};
    }
    match db {
        Db::Sqlite(p) => statements!(p, false),
        // One transaction: a batch that fails leaves nothing behind, so its requests can be
        // committed again one by one (see `writer`).
        Db::Postgres(p) => {
            let mut tx = p.begin().await.map_err(db_err("beginning a write"))?;
            statements!(&mut *tx, true);
            tx.commit().await.map_err(db_err("committing writes"))?;
        }
    }
    Ok(())
}

/// Rows per multi-row INSERT (8 columns: well under SQLite's 32,766 bound parameters).
const ROWS_PER_STATEMENT: usize = 256;

/// The SQLite file that holds the control state for the evidence log at `evidence`:
/// `NAME-control.db` beside it (`evidence.db` → `evidence-control.db`).
pub fn control_path(evidence: &Path) -> std::path::PathBuf {
    let stem = evidence
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "runwarden".into());
    evidence.with_file_name(format!("{stem}-control.db"))
}

fn migrate_err(e: sqlx::migrate::MigrateError) -> StoreError {
    match e {
        sqlx::migrate::MigrateError::VersionMissing(v) => StoreError(format!(
            "the database was written by a newer runwarden (migration {v}): upgrade runwarden"
        )),
        other => StoreError(format!("migrating: {other}")),
    }
}

impl ControlStore {
    /// Open the control state for the evidence log at `target`: the same database for a
    /// `postgres://` URL; for a SQLite file, [`control_path`] of it (created if missing).
    pub async fn open(target: &str) -> Result<ControlStore> {
        let (db, write) =
            if target.starts_with("postgres://") || target.starts_with("postgresql://") {
                let pool = PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(target)
                    .await
                    .map_err(db_err("connecting to PostgreSQL"))?;
                sqlx::migrate!("../../migrations/postgres")
                    .run(&pool)
                    .await
                    .map_err(migrate_err)?;
                (Db::Postgres(pool.clone()), Db::Postgres(pool))
            } else {
                let path = control_path(Path::new(target));
                runwarden_evidence::private_sqlite_files(&path)
                    .map_err(|e| StoreError(format!("creating {}: {e}", path.display())))?;
                let opts = SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // Control state survives a process crash or restart (WAL); an OS crash may
                    // lose its last commits. Evidence — the record of what was done — is
                    // written through its own connections with `synchronous = FULL`.
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(30));
                let open = |n| {
                    SqlitePoolOptions::new()
                        .max_connections(n)
                        // A ping before each use is a round trip to the connection's
                        // thread, and tells nothing of a local file.
                        .test_before_acquire(false)
                        .connect_with(opts.clone())
                };
                let opening = |e| StoreError(format!("opening {}: {e}", path.display()));
                let write = open(1).await.map_err(opening)?;
                sqlx::migrate!("../../migrations/sqlite")
                    .run(&write)
                    .await
                    .map_err(migrate_err)?;
                let read = open(4).await.map_err(opening)?;
                (Db::Sqlite(read), Db::Sqlite(write))
            };
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let recent = Arc::<std::sync::Mutex<RecentRuns>>::default();
        tokio::spawn(writer(write.clone(), rx, recent.clone()));
        Ok(ControlStore {
            db,
            write,
            writer: tx,
            recent,
        })
    }

    /// The largest evidence log index a stored incident names (its `evidence` list), if
    /// any: at start, a log shorter than this lost records those incidents point to.
    pub async fn max_evidence_index(&self) -> Result<Option<u64>> {
        self.flush().await?;
        let max: Option<i64> = on_db!(&self.db, p, pg => {
            // PostgreSQL's JSON functions refuse a record holding `\u0000` (any text the
            // input allows), so there the top-level list is found as text: the last
            // `"evidence":[…]` (the field comes after every nested object), which no JSON
            // string can contain unescaped.
            let text = if pg {
                r#"SELECT MAX(e::BIGINT) FROM incidents, regexp_split_to_table(substring(record from '.*"evidence":\[([0-9,]*)\]'), ',') AS e WHERE e <> ''"#
            } else {
                "SELECT MAX(CAST(e.value AS INTEGER)) FROM incidents, json_each(incidents.record, '$.evidence') AS e"
            };
            sqlx::query_scalar(text).fetch_one(p).await.map_err(db_err("reading the evidence indexes incidents name"))?
        });
        Ok(max.map(|m| m as u64))
    }

    /// One incident's record, if it belongs to `tenant`.
    pub async fn get_incident(&self, tenant: &str, id: &str) -> Result<Option<String>> {
        self.flush().await?;
        on_db!(&self.db, p, pg => {
            sqlx::query_scalar(sql(pg, "SELECT record FROM incidents WHERE id = ? AND tenant = ?"))
                .bind(id).bind(tenant)
                .fetch_optional(p).await.map_err(db_err("reading an incident"))
        })
    }

    /// A tenant's incidents, newest first.
    pub async fn list_incidents(
        &self,
        tenant: &str,
        status: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>> {
        self.flush().await?;
        on_db!(&self.db, p, pg => {
            sqlx::query_scalar(sql(pg, "SELECT record FROM incidents WHERE tenant = ? AND (? IS NULL OR status = ?) \
                ORDER BY received_at_ms DESC, id DESC LIMIT ?"))
                .bind(tenant).bind(status).bind(status).bind(i64::from(limit))
                .fetch_all(p).await.map_err(db_err("listing incidents"))
        })
    }

    /// Records of every incident for `host` still `processing` (of any tenant).
    pub async fn unfinished_incidents(&self, host: &str) -> Result<Vec<String>> {
        self.flush().await?;
        on_db!(&self.db, p, pg => {
            sqlx::query_scalar(sql(pg, "SELECT record FROM incidents WHERE status = 'processing' AND host = ? ORDER BY received_at_ms"))
                .bind(host)
                .fetch_all(p).await.map_err(db_err("reading unfinished incidents"))
        })
    }

    /// Whether this is PostgreSQL (which several control-plane processes may share).
    pub fn is_postgres(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
    }

    /// Renew the lease of the `processing` incidents `ids` this process works on: their
    /// `updated_at_ms` becomes `now_ms`, so no other process takes them for stalled.
    pub async fn renew(&self, ids: &[String], now_ms: i64) -> Result<()> {
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            on_db!(&self.db, p, pg => {
                let mut q = sqlx::QueryBuilder::new("UPDATE incidents SET updated_at_ms = ");
                q.push_bind(now_ms);
                q.push(" WHERE status = 'processing' AND id IN (");
                let mut ids = q.separated(", ");
                for id in chunk {
                    ids.push_bind(id.as_str());
                }
                q.push(")");
                let _ = pg;
                q.build().persistent(false).execute(p).await.map_err(db_err("renewing leases"))?;
            });
        }
        Ok(())
    }

    /// Take the `processing` incident `id` if nobody renewed its lease since
    /// `stale_before_ms`: true if this process now holds it (atomically; of several
    /// processes trying, one wins).
    pub async fn take_stale(&self, id: &str, stale_before_ms: i64, now_ms: i64) -> Result<bool> {
        self.flush().await?;
        on_db!(&self.db, p, pg => {
            sqlx::query(sql(pg, "UPDATE incidents SET updated_at_ms = ? WHERE id = ? AND status = 'processing' AND updated_at_ms <= ?"))
                .bind(now_ms).bind(id).bind(stale_before_ms)
                .execute(p).await
                .map(|r| r.rows_affected() == 1)
                .map_err(db_err("taking a stalled incident"))
        })
    }

    /// Records of incidents handed up (`handed-up`) and not yet taken by the fleet's
    /// control plane, oldest first, at most `limit`.
    pub async fn pending_hand_ups(&self, limit: u32) -> Result<Vec<String>> {
        self.flush().await?;
        on_db!(&self.db, p, pg => {
            sqlx::query_scalar(sql(pg, "SELECT record FROM incidents WHERE status = 'handed-up' \
                AND NOT EXISTS (SELECT 1 FROM hand_ups_sent s WHERE s.incident_id = incidents.id) \
                ORDER BY received_at_ms, id LIMIT ?"))
                .bind(i64::from(limit))
                .fetch_all(p).await.map_err(db_err("reading incidents to hand up"))
        })
    }

    /// How many handed-up incidents wait to be sent (a gauge: queued writes not waited for).
    pub async fn pending_hand_up_count(&self) -> Result<u64> {
        on_db!(&self.db, p, pg => {
            let n: i64 = sqlx::query_scalar(sql(pg, "SELECT COUNT(*) FROM incidents WHERE status = 'handed-up' \
                AND NOT EXISTS (SELECT 1 FROM hand_ups_sent s WHERE s.incident_id = incidents.id)"))
                .fetch_one(p).await.map_err(db_err("counting incidents to hand up"))?;
            Ok(n.max(0) as u64)
        })
    }

    /// Incidents still `processing`, by host: what each host's agent has been sent and not
    /// yet answered (a gauge: queued writes not waited for).
    pub async fn processing_by_host(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        on_db!(&self.db, p, pg => {
            let rows: Vec<(String, i64)> = sqlx::query_as(sql(pg, "SELECT host, COUNT(*) FROM incidents WHERE status = 'processing' GROUP BY host"))
                .fetch_all(p).await.map_err(db_err("counting incidents in progress"))?;
            Ok(rows.into_iter().map(|(h, n)| (h, n.max(0) as u64)).collect())
        })
    }

    /// Claim runs of `runbooks` on `host` for `tenant` starting at `now_ms`, unless one of
    /// them started within `cooldown_ms` through any process on this database: all are
    /// claimed, or none. `Some((runbook, started))`: that one is cooling down. Only
    /// PostgreSQL is shared between processes; on SQLite nothing is claimed (`None`).
    pub async fn claim_cooldowns(
        &self,
        tenant: &str,
        host: &str,
        runbooks: &[String],
        now_ms: i64,
        cooldown_ms: i64,
    ) -> Result<Option<(String, i64)>> {
        let Db::Postgres(p) = &self.write else {
            return Ok(None);
        };
        let mut tx = p.begin().await.map_err(db_err("claiming a cooldown"))?;
        for runbook in runbooks {
            let claimed: Option<i64> = sqlx::query_scalar(
                "INSERT INTO cooldowns (tenant, host, runbook, last_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tenant, host, runbook) DO UPDATE SET last_ms = excluded.last_ms \
                 WHERE cooldowns.last_ms <= excluded.last_ms - $5 RETURNING last_ms",
            )
            .bind(tenant)
            .bind(host)
            .bind(runbook)
            .bind(now_ms)
            .bind(cooldown_ms)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err("claiming a cooldown"))?;
            if claimed.is_none() {
                let started: i64 = sqlx::query_scalar(
                    "SELECT last_ms FROM cooldowns WHERE tenant = $1 AND host = $2 AND runbook = $3",
                )
                .bind(tenant)
                .bind(host)
                .bind(runbook)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err("reading a cooldown"))?;
                // Nothing of this incident is claimed.
                tx.rollback().await.map_err(db_err("claiming a cooldown"))?;
                return Ok(Some((runbook.clone(), started)));
            }
        }
        tx.commit().await.map_err(db_err("claiming a cooldown"))?;
        Ok(None)
    }

    /// Note that the fleet's control plane took hand-up `id`.
    pub async fn hand_up_sent(&self, id: &str, at_ms: i64) -> Result<()> {
        on_db!(&self.db, p, pg => {
            sqlx::query(sql(pg, "INSERT INTO hand_ups_sent (incident_id, sent_at_ms) VALUES (?, ?) ON CONFLICT DO NOTHING"))
                .bind(id).bind(at_ms)
                .execute(p).await.map(|_| ()).map_err(db_err("noting a hand-up sent"))
        })
    }

    /// The id of an incident of `tenant` with `fingerprint` received after `after_ms`
    /// that a run healed, if any.
    pub async fn healed_since(
        &self,
        tenant: &str,
        fingerprint: &str,
        after_ms: i64,
    ) -> Result<Option<String>> {
        self.flush().await?;
        on_db!(&self.db, p, pg => {
            sqlx::query_scalar(sql(pg, "SELECT id FROM incidents WHERE fingerprint = ? AND received_at_ms > ? \
                AND tenant = ? AND status = 'healed' ORDER BY received_at_ms LIMIT 1"))
                .bind(fingerprint).bind(after_ms).bind(tenant)
                .fetch_optional(p).await.map_err(db_err("reading later incidents"))
        })
    }

    /// The tenant and host of incident `id`, whoever's it is.
    pub async fn incident_owner(&self, id: &str) -> Result<Option<(String, String)>> {
        self.flush().await?;
        on_db!(&self.db, p, pg => {
            sqlx::query_as(sql(pg, "SELECT tenant, host FROM incidents WHERE id = ?"))
                .bind(id)
                .fetch_optional(p).await.map_err(db_err("reading an incident"))
        })
    }

    /// Fingerprints of incidents received since `since_ms`, with when.
    pub async fn fingerprints_since(&self, since_ms: i64) -> Result<Vec<(String, i64)>> {
        on_db!(&self.db, p, pg => {
            let rows = sqlx::query(sql(pg, "SELECT fingerprint, received_at_ms FROM incidents WHERE received_at_ms >= ? ORDER BY received_at_ms"))
                .bind(since_ms)
                .fetch_all(p).await.map_err(db_err("reading recent incidents"))?;
            rows.iter()
                .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
                .map_err(db_err("reading recent incidents"))
        })
    }

    /// Queue `writes` for the writer; they are committed, in order, together with
    /// whatever else is queued. Await the returned [`Pending`] to know they are.
    pub async fn queue(&self, writes: Vec<Write>) -> Result<Pending> {
        let (done, wait) = oneshot::channel();
        self.writer
            .send(WriteRequest { writes, done })
            .await
            .map_err(|_| StoreError("the control-plane writer has stopped".into()))?;
        Ok(Pending(wait))
    }

    /// Commit `writes` (with whatever else is queued).
    pub async fn write(&self, writes: Vec<Write>) -> Result<()> {
        self.queue(writes).await?.wait().await
    }

    /// Wait until every write queued before this call is committed. Reads of incidents
    /// start with it, so they see every write the pipeline has queued.
    pub async fn flush(&self) -> Result<()> {
        self.write(Vec::new()).await
    }

    /// `tenant`'s escalations, newest first, optionally in one `state`; or the one `id`.
    pub async fn escalations(
        &self,
        tenant: &str,
        id: Option<&str>,
        state: Option<EscalationState>,
        limit: u32,
    ) -> Result<Vec<StoredEscalation>> {
        self.flush().await?;
        let state = state.map(EscalationState::as_str);
        on_db!(&self.db, p, pg => {
            let rows = sqlx::query(sql(pg, "SELECT id, incident_id, tenant, host, severity, reason, proposal, created_at_ms, sla_deadline_ms, state, decided_by, decided_at_ms, note \
                FROM escalations WHERE tenant = ? AND (? IS NULL OR id = ?) AND (? IS NULL OR state = ?) ORDER BY created_at_ms DESC, id DESC LIMIT ?"))
                .bind(tenant).bind(id).bind(id).bind(state).bind(state).bind(i64::from(limit))
                .fetch_all(p).await.map_err(db_err("reading escalations"))?;
            rows.iter()
                .map(|r| Ok(stored_escalation!(r, pg)))
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
                .map_err(db_err("reading escalations"))
        })
    }

    /// Escalations of `host` (any tenant) still undecided past their deadline at `now_ms`
    /// whose breach no webhook delivery ended for yet (a dropped one is tried again), the
    /// longest overdue first.
    pub async fn breached_unannounced(
        &self,
        host: &str,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<StoredEscalation>> {
        self.flush().await?;
        on_db!(&self.db, p, pg => {
            let rows = sqlx::query(sql(pg, "SELECT id, incident_id, tenant, host, severity, reason, proposal, created_at_ms, sla_deadline_ms, state, decided_by, decided_at_ms, note \
                FROM escalations e WHERE host = ? AND state IN ('open', 'acknowledged') AND sla_deadline_ms < ? \
                AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.escalation_id = e.id AND n.event = 'escalation.breached' \
                    AND n.status IN ('delivered', 'failed')) \
                ORDER BY sla_deadline_ms, id LIMIT ?"))
                .bind(host).bind(now_ms).bind(i64::from(limit))
                .fetch_all(p).await.map_err(db_err("reading breached escalations"))?;
            rows.iter()
                .map(|r| Ok(stored_escalation!(r, pg)))
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
                .map_err(db_err("reading breached escalations"))
        })
    }

    /// How `tenant`'s webhook notifications of escalation `escalation_id` ended, oldest
    /// first.
    pub async fn notifications(
        &self,
        tenant: &str,
        escalation_id: &str,
    ) -> Result<Vec<NotificationRow>> {
        self.flush().await?;
        on_db!(&self.db, p, pg => {
            let rows = sqlx::query(sql(pg, "SELECT id, escalation_id, tenant, webhook, event, status, attempts, last_error, at_ms \
                FROM notifications WHERE tenant = ? AND escalation_id = ? ORDER BY at_ms, id"))
                .bind(tenant).bind(escalation_id)
                .fetch_all(p).await.map_err(db_err("reading notifications"))?;
            rows.iter()
                .map(|r| Ok(NotificationRow {
                    id: r.try_get(0)?,
                    escalation_id: r.try_get(1)?,
                    tenant: r.try_get(2)?,
                    webhook: r.try_get(3)?,
                    event: r.try_get(4)?,
                    status: r.try_get(5)?,
                    attempts: r.try_get(6)?,
                    last_error: from_db(pg, r.try_get(7)?),
                    at_ms: r.try_get(8)?,
                }))
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
                .map_err(db_err("reading notifications"))
        })
    }

    /// `tenant`'s escalations open or acknowledged, and how many of them are past their
    /// deadline at `now_ms`.
    pub async fn undecided_escalations(&self, tenant: &str, now_ms: i64) -> Result<(i64, i64)> {
        self.flush().await?;
        on_db!(&self.db, p, pg => {
            let row = sqlx::query(sql(pg, "SELECT COUNT(*), COALESCE(SUM(CASE WHEN sla_deadline_ms < ? THEN 1 ELSE 0 END), 0) \
                FROM escalations WHERE state IN ('open', 'acknowledged') AND tenant = ?"))
                .bind(now_ms).bind(tenant)
                .fetch_one(p).await.map_err(db_err("counting escalations"))?;
            Ok((
                row.try_get::<i64, _>(0).map_err(db_err("counting escalations"))?,
                row.try_get::<i64, _>(1).map_err(db_err("counting escalations"))?,
            ))
        })
    }

    /// Move `tenant`'s escalation `id` from one of `from` to `to`, as `by`, if it is still
    /// in one of them: false when it is not (someone else decided first). The single
    /// conditional UPDATE is what makes two approvals of one escalation run it once.
    #[allow(clippy::too_many_arguments)]
    pub async fn transition_escalation(
        &self,
        tenant: &str,
        id: &str,
        from: &[EscalationState; 2],
        to: EscalationState,
        by: &str,
        at_ms: i64,
        note: &str,
    ) -> Result<bool> {
        self.flush().await?;
        on_db!(&self.write, p, pg => {
            let r = sqlx::query(sql(pg, "UPDATE escalations SET state = ?, decided_by = ?, decided_at_ms = ?, note = ?, updated_at_ms = ? \
                WHERE id = ? AND tenant = ? AND state IN (?, ?)"))
                .bind(to.as_str()).bind(to_db(pg, by)).bind(at_ms).bind(to_db(pg, note)).bind(at_ms)
                .bind(id).bind(tenant).bind(from[0].as_str()).bind(from[1].as_str())
                .execute(p).await.map_err(db_err("deciding an escalation"))?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// `tenant`'s most recent runs (at most `limit`), newest first.
    pub async fn recent_runs(&self, tenant: &str, limit: u32) -> Result<Vec<Arc<RunRow>>> {
        let limit = limit as usize;
        if limit > RECENT_RUNS {
            return self.stored_runs(tenant, limit).await;
        }
        let lock = || self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(runs) = lock().get(tenant, limit) {
            return Ok(runs);
        }
        if !lock().start_loading(tenant) {
            // Another caller is loading it.
            return self.stored_runs(tenant, limit).await;
        }
        let stored = self.stored_runs(tenant, RECENT_RUNS).await;
        lock().finish_loading(tenant, stored.as_deref().ok());
        let mut runs = stored?;
        runs.truncate(limit);
        Ok(runs)
    }

    /// `tenant`'s latest `limit` runs as stored, newest first (after every queued write).
    async fn stored_runs(&self, tenant: &str, limit: usize) -> Result<Vec<Arc<RunRow>>> {
        self.flush().await?;
        on_db!(&self.db, p, pg => {
            let rows = sqlx::query(sql(pg, "SELECT invocation_id, incident_id, tenant, host, runbook, status, summary, tier, dry_run, incident_type, service, message, params, at_ms \
                FROM runs WHERE tenant = ? ORDER BY at_ms DESC LIMIT ?"))
                .bind(tenant).bind(limit as i64)
                .fetch_all(p).await.map_err(db_err("reading recent runs"))?;
            rows.iter()
                .map(|r| Ok(Arc::new(RunRow {
                    invocation_id: r.try_get(0)?,
                    incident_id: r.try_get(1)?,
                    tenant: r.try_get(2)?,
                    host: r.try_get(3)?,
                    runbook: r.try_get(4)?,
                    status: r.try_get(5)?,
                    summary: from_db(pg, r.try_get(6)?),
                    tier: r.try_get(7)?,
                    dry_run: r.try_get(8)?,
                    incident_type: from_db(pg, r.try_get(9)?),
                    service: from_db(pg, r.try_get(10)?),
                    message: from_db(pg, r.try_get(11)?),
                    params: from_db(pg, r.try_get(12)?),
                    at_ms: r.try_get(13)?,
                })))
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
                .map_err(db_err("reading recent runs"))
        })
    }

    /// Actions since `since_ms`, oldest first.
    pub async fn actions_since(&self, since_ms: i64) -> Result<Vec<ActionRow>> {
        on_db!(&self.db, p, pg => {
            let rows = sqlx::query(sql(pg, "SELECT tenant, host, runbook, at_ms FROM actions WHERE at_ms >= ? ORDER BY at_ms"))
                .bind(since_ms)
                .fetch_all(p).await.map_err(db_err("reading recent actions"))?;
            rows.iter()
                .map(|r| Ok(ActionRow {
                    tenant: r.try_get(0)?,
                    host: r.try_get(1)?,
                    runbook: r.try_get(2)?,
                    at_ms: r.try_get(3)?,
                }))
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
                .map_err(db_err("reading recent actions"))
        })
    }

    /// Store a token (its secret's hash only).
    pub async fn put_token(&self, t: &TokenRow, secret_sha256: &str, at_ms: i64) -> Result<()> {
        on_db!(&self.write, p, pg => {
            sqlx::query(sql(pg, "INSERT INTO api_tokens (id, tenant, scope, name, secret_sha256, created_at_ms, revoked) VALUES (?, ?, ?, ?, ?, ?, ?)"))
                .bind(&t.id).bind(&t.tenant).bind(&t.scope).bind(&t.name).bind(secret_sha256).bind(at_ms).bind(t.revoked)
                .execute(p).await.map_err(db_err("storing a token"))?;
        });
        Ok(())
    }

    /// Revoke a token; false when there is no such token.
    pub async fn revoke_token(&self, id: &str) -> Result<bool> {
        on_db!(&self.write, p, pg => {
            let r = sqlx::query(sql(pg, "UPDATE api_tokens SET revoked = ? WHERE id = ?"))
                .bind(true).bind(id)
                .execute(p).await.map_err(db_err("revoking a token"))?;
            Ok(r.rows_affected() > 0)
        })
    }

    /// Every token (never the secrets), oldest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenRow>> {
        on_db!(&self.db, p, pg => {
            let rows = sqlx::query(sql(pg, "SELECT id, tenant, scope, name, revoked FROM api_tokens ORDER BY created_at_ms, id"))
                .fetch_all(p).await.map_err(db_err("listing tokens"))?;
            rows.iter()
                .map(|r| Ok(TokenRow {
                    id: r.try_get(0)?,
                    tenant: r.try_get(1)?,
                    scope: r.try_get(2)?,
                    name: r.try_get(3)?,
                    revoked: r.try_get(4)?,
                }))
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
                .map_err(db_err("listing tokens"))
        })
    }

    /// The token whose secret hashes to `secret_sha256`.
    pub async fn token_by_hash(&self, secret_sha256: &str) -> Result<Option<TokenRow>> {
        on_db!(&self.db, p, pg => {
            let row = sqlx::query(sql(pg, "SELECT id, tenant, scope, name, revoked FROM api_tokens WHERE secret_sha256 = ?"))
                .bind(secret_sha256)
                .fetch_optional(p).await.map_err(db_err("reading a token"))?;
            row.map(|r| Ok(TokenRow {
                id: r.try_get(0)?,
                tenant: r.try_get(1)?,
                scope: r.try_get(2)?,
                name: r.try_get(3)?,
                revoked: r.try_get(4)?,
            }))
            .transpose()
            .map_err(db_err("reading a token"))
        })
    }
}
