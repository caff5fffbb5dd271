//! Durable, append-only storage of the evidence log: SQLite by default (one file in the
//! data directory, WAL, `synchronous = FULL`), PostgreSQL when given a `postgres://` URL.
//!
//! Appends go through one writer task that gathers whatever is waiting into a single
//! transaction: concurrent appenders share one commit (one fsync) instead of weakening
//! durability, and an append is reported done only after its commit. Leaf indexes are
//! assigned inside the transaction under the database's write lock (SQLite `BEGIN
//! IMMEDIATE`, a PostgreSQL transaction-scoped advisory lock), and the index is the
//! primary key, so two appenders — threads or processes — never get the same index.
//!
//! The latest signed checkpoint is also kept outside the database, in `DB.checkpoint` beside
//! a SQLite file (written atomically each time a newer checkpoint is stored), so losing or
//! damaging the database — its `-wal` file cut, deleted or altered — does not lose the proof
//! of what the log held. Opening checks the database (`PRAGMA quick_check`) and the log
//! against that checkpoint, and refuses a log that is shorter than it or has another root.

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::merkle::{Hash, MerkleTree, leaf_hash};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Row};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

mod origins;
mod tenants;
pub use origins::{MAX_SEGMENT_RECORDS, MirrorHead, Mirrored, Segment};
pub(crate) use tenants::tenant_in;
pub use tenants::{tenant_origin, valid_tenant};

/// Most records committed in one transaction.
const MAX_BATCH: usize = 1024;
/// Rows per INSERT statement (9 bound values each; well under every backend's limit).
const ROWS_PER_INSERT: usize = 100;
const INSERT: &str = "INSERT INTO evidence_log (idx, leaf_hash, envelope, invocation_id, host_id, runbook, status, started_at_ms, recorded_at_ms) ";

/// A record to append: the exact DSSE envelope bytes and the columns used to find it.
#[derive(Clone, Debug)]
pub struct NewRecord {
    /// The DSSE envelope, exactly as signed and serialized; its leaf hash is over these bytes.
    pub envelope: Vec<u8>,
    /// Invocation id (unique).
    pub invocation_id: String,
    /// Host that ran it.
    pub host_id: String,
    /// Runbook name.
    pub runbook: String,
    /// Outcome status.
    pub status: String,
    /// Start time, ms since the Unix epoch.
    pub started_at_ms: i64,
}

/// The records of `rows` made for `filter`'s tenant (the other conditions are SQL's).
fn keep_tenant(
    filter: &Filter,
    rows: impl Iterator<Item = Result<StoredRecord>>,
) -> Result<Vec<StoredRecord>> {
    let mut out = Vec::new();
    for r in rows {
        let r = r?;
        if filter.tenant_matches(&r) {
            out.push(r);
        }
    }
    Ok(out)
}

/// A record as stored.
#[derive(Clone, Debug)]
pub struct StoredRecord {
    /// Leaf index in the log.
    pub index: u64,
    /// RFC 6962 leaf hash of `envelope`.
    pub leaf_hash: Hash,
    /// The DSSE envelope bytes.
    pub envelope: Vec<u8>,
    /// Invocation id.
    pub invocation_id: String,
    /// Host.
    pub host_id: String,
    /// Runbook.
    pub runbook: String,
    /// Outcome status.
    pub status: String,
    /// Start time, ms since the Unix epoch.
    pub started_at_ms: i64,
    /// When it was appended, ms since the Unix epoch.
    pub recorded_at_ms: i64,
}

/// Which records to list or export. `None` means no constraint.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Started at or after (ms).
    pub since_ms: Option<i64>,
    /// Started before (ms).
    pub until_ms: Option<i64>,
    /// Host id.
    pub host: Option<String>,
    /// Runbook name.
    pub runbook: Option<String>,
    /// Outcome status.
    pub status: Option<String>,
    /// Tenant the record was made for (read from the signed statement).
    pub tenant: Option<String>,
}

impl Filter {
    /// Whether no condition is set: every record matches.
    pub fn is_empty(&self) -> bool {
        self.since_ms.is_none()
            && self.until_ms.is_none()
            && self.host.is_none()
            && self.runbook.is_none()
            && self.status.is_none()
            && self.tenant.is_none()
    }

    /// Whether `r` matches every condition.
    pub fn matches(&self, r: &StoredRecord) -> bool {
        self.since_ms.is_none_or(|t| r.started_at_ms >= t)
            && self.until_ms.is_none_or(|t| r.started_at_ms < t)
            && self.host.as_ref().is_none_or(|h| &r.host_id == h)
            && self.runbook.as_ref().is_none_or(|b| &r.runbook == b)
            && self.status.as_ref().is_none_or(|s| &r.status == s)
            && self.tenant_matches(r)
    }

    /// Whether `r` was made for the filter's tenant (always, without one). A record
    /// whose statement cannot be read matches no tenant.
    fn tenant_matches(&self, r: &StoredRecord) -> bool {
        let Some(tenant) = &self.tenant else {
            return true;
        };
        std::str::from_utf8(&r.envelope)
            .ok()
            .and_then(|json| crate::dsse::Envelope::from_json(json).ok())
            .and_then(|env| crate::record::Statement::from_envelope(&env).ok())
            .is_some_and(|s| &s.predicate.tenant == tenant)
    }

    /// The filter as JSON, for a bundle's manifest.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "since_ms": self.since_ms, "until_ms": self.until_ms, "host": self.host,
            "runbook": self.runbook, "status": self.status,
        });
        if let Some(t) = &self.tenant {
            v["tenant"] = serde_json::json!(t);
        }
        v
    }
}

#[derive(Clone)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

struct AppendRequest {
    record: NewRecord,
    done: oneshot::Sender<Result<u64>>,
}

/// The evidence store. Cloning shares it.
#[derive(Clone)]
pub struct Store {
    db: Db,
    writer: mpsc::Sender<AppendRequest>,
    /// Where the latest signed checkpoint is kept outside the database, if anywhere.
    checkpoint_file: Option<Arc<CheckpointFile>>,
    /// The tree of the log's first leaves as last read, to extend: the root of a larger
    /// size reads only the leaves appended since (see [`Store::root_at`]).
    tree: Arc<tokio::sync::Mutex<crate::merkle::CompactTree>>,
}

/// The file that keeps the latest signed checkpoint; the lock orders this process's writes.
struct CheckpointFile {
    path: PathBuf,
    /// The database as named in messages.
    database: String,
    lock: tokio::sync::Mutex<()>,
}

/// The checkpoint file of the SQLite database at `db`: `DB.checkpoint` beside it
/// (`evidence.db` → `evidence.db.checkpoint`).
pub fn checkpoint_file_of(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".checkpoint");
    PathBuf::from(name)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn migrate_err(e: sqlx::migrate::MigrateError) -> Error {
    match e {
        sqlx::migrate::MigrateError::VersionMissing(v) => Error::SchemaTooNew(v),
        other => Error::Store(format!("migrating the evidence database: {other}")),
    }
}

fn db_err(what: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |e| Error::Store(format!("{what}: {e}"))
}

impl Store {
    /// Open the SQLite database at `path` (created if missing, mode 0600), apply migrations,
    /// and check it: `PRAGMA quick_check`, then the log against the checkpoint kept in
    /// [`checkpoint_file_of`] `path` ([`Error::LogIntegrity`] if it lost or changed records).
    pub async fn open_sqlite(path: &Path) -> Result<Store> {
        crate::files::private_sqlite_files(path).map_err(|source| Error::Io {
            action: "create the evidence database",
            path: path.to_owned(),
            source,
        })?;
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // A ping before each use is a round trip to the connection's thread (about
            // as much as the statement itself), and tells nothing of a local file.
            .test_before_acquire(false)
            .connect_with(opts)
            .await
            .map_err(|e| Error::Store(format!("opening {}: {e}", path.display())))?;
        let cp_file = checkpoint_file_of(path);
        // quick_check reads every page and checks its structure, not that indexes match
        // their rows: 0.15-0.18 s against integrity_check's 0.5 s on a 100,000-record,
        // 144 MB log (2-core VM, warm cache), and it finds the damage a cut or altered file
        // leaves. A lost or cut -wal file leaves a consistent, older database: the checkpoint
        // file below is what finds that.
        let problems: Vec<String> = sqlx::query_scalar("PRAGMA quick_check")
            .fetch_all(&pool)
            .await
            .unwrap_or_else(|e| vec![e.to_string()]);
        if problems.iter().any(|p| p != "ok") {
            return Err(Error::LogIntegrity {
                database: path.display().to_string(),
                checkpoint_file: cp_file,
                problem: format!("SQLite's integrity check failed: {}", problems.join("; ")),
                signed_at: "the last checkpoint you trust".into(),
            });
        }
        sqlx::migrate!("../../migrations/sqlite")
            .run(&pool)
            .await
            .map_err(migrate_err)?;
        Self::start(Db::Sqlite(pool))
            .with_checkpoint_file(path.display().to_string(), cp_file)
            .await
    }

    /// Connect to PostgreSQL at `url` and apply migrations.
    pub async fn open_postgres(url: &str) -> Result<Store> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| Error::Store(format!("connecting to PostgreSQL: {e}")))?;
        sqlx::migrate!("../../migrations/postgres")
            .run(&pool)
            .await
            .map_err(migrate_err)?;
        Ok(Self::start(Db::Postgres(pool)))
    }

    /// Open `target`: a `postgres://` or `postgresql://` URL, or else a SQLite file path.
    pub async fn open(target: &str) -> Result<Store> {
        if target.starts_with("postgres://") || target.starts_with("postgresql://") {
            Self::open_postgres(target).await
        } else {
            Self::open_sqlite(Path::new(target)).await
        }
    }

    fn start(db: Db) -> Store {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(writer(db.clone(), rx));
        Store {
            db,
            writer: tx,
            checkpoint_file: None,
            tree: Arc::default(),
        }
    }

    /// Keep the latest signed checkpoint in `file` too (SQLite stores do so in
    /// [`checkpoint_file_of`] the database already; for PostgreSQL, give a file on the
    /// service's disk), after checking the log against the checkpoint the file holds.
    /// `database` names the log in messages.
    pub async fn keep_checkpoint_in(self, database: &str, file: &Path) -> Result<Store> {
        self.with_checkpoint_file(database.to_string(), file.to_owned())
            .await
    }

    async fn with_checkpoint_file(mut self, database: String, path: PathBuf) -> Result<Store> {
        self.checkpoint_file = Some(Arc::new(CheckpointFile {
            path,
            database,
            lock: tokio::sync::Mutex::new(()),
        }));
        self.check_against_checkpoint_file().await?;
        Ok(self)
    }

    /// Refuse the log if it is shorter than the kept checkpoint or its first leaves have
    /// another root; if no checkpoint is kept yet, keep the database's latest.
    async fn check_against_checkpoint_file(&self) -> Result<()> {
        let Some(f) = &self.checkpoint_file else {
            return Ok(());
        };
        let refuse = |problem: String, signed_at: String| Error::LogIntegrity {
            database: f.database.clone(),
            checkpoint_file: f.path.clone(),
            problem,
            signed_at,
        };
        let Some((note, kept_at)) = read_kept(&f.path)? else {
            if let Some((size, note)) = self.checkpoint_at_most(i64::MAX as u64).await? {
                self.keep(size, &note).await?;
            }
            return Ok(());
        };
        let cp = Checkpoint::parse_unverified(&note).map_err(|e| {
            refuse(
                format!("the kept checkpoint is unreadable ({e})"),
                kept_at.clone(),
            )
        })?;
        let size = self.size().await?;
        if size < cp.size {
            return Err(refuse(
                format!(
                    "the log has {size} records, but a checkpoint it signed (kept in {}, \
                     written {kept_at}) covers {} records",
                    f.path.display(),
                    cp.size
                ),
                kept_at,
            ));
        }
        // Hashed as the leaves are read (the tree the log keeps for its next checkpoint):
        // memory does not grow with the log.
        let root = self.root_at(cp.size).await.map_err(|e| {
            refuse(
                format!("reading its first {} records: {e}", cp.size),
                kept_at.clone(),
            )
        })?;
        if root != cp.root {
            return Err(refuse(
                format!(
                    "its first {} records are not the ones the checkpoint signed at {kept_at} \
                     covers (another Merkle root): records were altered or replaced",
                    cp.size
                ),
                kept_at,
            ));
        }
        Ok(())
    }

    /// Write `note` (for `size` leaves) to the checkpoint file unless it already keeps one
    /// at least as large. A note that is not a checkpoint of `size` leaves is not kept: the
    /// file must always be one the next open can check the log against.
    async fn keep(&self, size: u64, note: &str) -> Result<()> {
        let Some(f) = &self.checkpoint_file else {
            return Ok(());
        };
        if !Checkpoint::parse_unverified(note).is_ok_and(|cp| cp.size == size) {
            return Ok(());
        }
        let _order = f.lock.lock().await;
        let (path, note) = (f.path.clone(), note.to_string());
        tokio::task::spawn_blocking(move || {
            // Another process (an export beside `up`) may have kept a newer one.
            if let Some((kept, _)) = read_kept(&path)?
                && Checkpoint::parse_unverified(&kept).is_ok_and(|cp| cp.size >= size)
            {
                return Ok(());
            }
            crate::files::write_atomic(&path, note.as_bytes()).map_err(|source| Error::Io {
                action: "keep the latest checkpoint in",
                path,
                source,
            })
        })
        .await
        .map_err(|e| Error::Store(format!("keeping the checkpoint: {e}")))?
    }

    /// Append one record; returns its leaf index once it is durably committed.
    pub async fn append(&self, record: NewRecord) -> Result<u64> {
        let (done, wait) = oneshot::channel();
        self.writer
            .send(AppendRequest { record, done })
            .await
            .map_err(|_| Error::Store("the evidence writer has stopped".into()))?;
        wait.await
            .map_err(|_| Error::Store("the evidence writer has stopped".into()))?
    }

    /// Number of leaves in the log.
    pub async fn size(&self) -> Result<u64> {
        let n: i64 = match &self.db {
            Db::Sqlite(p) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM evidence_log")
                    .fetch_one(p)
                    .await
            }
            Db::Postgres(p) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM evidence_log")
                    .fetch_one(p)
                    .await
            }
        }
        .map_err(db_err("counting records"))?;
        Ok(n as u64)
    }

    /// Leaf hashes `0..size`, in order.
    pub async fn leaf_hashes(&self, size: u64) -> Result<Vec<Hash>> {
        // In pages: the rows of one query hold far more than the hashes they carry.
        let mut all = Vec::with_capacity(size.min(1 << 24) as usize);
        let mut from = 0;
        while from < size {
            let to = size.min(from + 65_536);
            all.extend(self.leaf_hash_range(from, to).await?);
            from = to;
        }
        Ok(all)
    }

    /// The indexes below `size` of the records whose columns match `filter` (every
    /// condition but the tenant, which only a record's statement holds), in no particular
    /// order. Read from the log's indexes where one serves the filter, so that records not
    /// matched are not read: a record's envelope comes before those columns in its row,
    /// and SQLite would read all of it to reach them.
    pub async fn matching_indexes(
        &self,
        filter: &Filter,
        size: u64,
        mut each: impl FnMut(u64),
    ) -> Result<()> {
        use futures_util::TryStreamExt as _;
        let read = db_err("finding the records a filter keeps");
        // Only the conditions set, so that an index holding every column they name serves
        // the query alone (the SQL text is made of these fixed pieces; every value is a
        // bound parameter).
        let mut conditions = vec![("idx <", Bound::Int(size.min(i64::MAX as u64) as i64))];
        let text = |v: &Option<String>| v.clone().map(Bound::Text);
        for (column, value) in [
            ("host_id =", text(&filter.host)),
            ("runbook =", text(&filter.runbook)),
            ("status =", text(&filter.status)),
            ("started_at_ms >=", filter.since_ms.map(Bound::Int)),
            ("started_at_ms <", filter.until_ms.map(Bound::Int)),
        ] {
            if let Some(v) = value {
                conditions.push((column, v));
            }
        }
        // SQLite chooses its plan without statistics: name the index.
        let index = if filter.host.is_some() {
            " INDEXED BY evidence_log_host"
        } else if filter.runbook.is_some() {
            " INDEXED BY evidence_log_runbook"
        } else if filter.since_ms.is_some() || filter.until_ms.is_some() {
            " INDEXED BY evidence_log_started"
        } else {
            ""
        };
        let sql = |pg: bool| {
            let terms: Vec<String> = conditions
                .iter()
                .enumerate()
                .map(|(i, (c, _))| match pg {
                    true => format!("{c} ${}", i + 1),
                    false => format!("{c} ?"),
                })
                .collect();
            let index = if pg { "" } else { index };
            format!(
                "SELECT idx FROM evidence_log{index} WHERE {}",
                terms.join(" AND ")
            )
        };
        let mut got = |i: i64| -> Result<()> {
            each(u64::try_from(i).map_err(|_| Error::Store(format!("a record's index is {i}")))?);
            Ok(())
        };
        // The same query on either database: bound, then read as a stream.
        macro_rules! each_index {
            ($pool:expr, $pg:expr) => {{
                let mut q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql($pg)));
                for (_, v) in &conditions {
                    q = match v {
                        Bound::Int(n) => q.bind(*n),
                        Bound::Text(t) => q.bind(t.clone()),
                    };
                }
                let mut rows = q.fetch($pool);
                while let Some(i) = rows.try_next().await.map_err(&read)? {
                    got(i)?;
                }
            }};
        }
        match &self.db {
            Db::Sqlite(p) => each_index!(p, false),
            Db::Postgres(p) => each_index!(p, true),
        }
        Ok(())
    }

    /// Leaf hashes `from..to`, in order; an error if any is missing.
    pub(crate) async fn leaf_hash_range(&self, from: u64, to: u64) -> Result<Vec<Hash>> {
        let (f, t) = (from as i64, to as i64);
        let rows: Vec<Vec<u8>> =
            match &self.db {
                Db::Sqlite(p) => sqlx::query_scalar(
                    "SELECT leaf_hash FROM evidence_log WHERE idx >= ? AND idx < ? ORDER BY idx",
                )
                .bind(f)
                .bind(t)
                .fetch_all(p)
                .await,
                Db::Postgres(p) => sqlx::query_scalar(
                    "SELECT leaf_hash FROM evidence_log WHERE idx >= $1 AND idx < $2 ORDER BY idx",
                )
                .bind(f)
                .bind(t)
                .fetch_all(p)
                .await,
            }
            .map_err(db_err("reading leaf hashes"))?;
        if rows.len() as u64 != to.saturating_sub(from) {
            return Err(Error::Store(format!(
                "the log has {} leaves from {from} below {to}: it has a gap",
                rows.len()
            )));
        }
        rows.into_iter()
            .enumerate()
            .map(|(i, h)| {
                h.try_into().map_err(|_| {
                    Error::Store(format!("leaf {} has a malformed hash", from + i as u64))
                })
            })
            .collect()
    }

    /// The consistency proof from `old_size` to `size` (RFC 6962), each of its subtree
    /// roots hashed from the leaves as they are read: memory does not grow with the log.
    pub async fn consistency_proof(&self, old_size: u64, size: u64) -> Result<Vec<Hash>> {
        self.consistency_proof_of(Leaves::Log, old_size, size).await
    }

    /// [`Store::consistency_proof`] of the log's tree or of a tenant's view.
    async fn consistency_proof_of(
        &self,
        which: Leaves<'_>,
        old_size: u64,
        size: u64,
    ) -> Result<Vec<Hash>> {
        let mut proof = Vec::new();
        for (lo, hi) in crate::merkle::consistency_ranges(old_size, size)? {
            let mut tree = crate::merkle::CompactTree::new();
            let mut at = lo;
            while at < hi {
                let to = hi.min(at + 65_536);
                for leaf in self.leaves(which, at, to).await? {
                    tree.append(leaf);
                }
                at = to;
            }
            if tree.size() != hi - lo {
                return Err(Error::MalformedRecord(format!(
                    "the log holds {} of leaves {lo}..{hi}",
                    tree.size()
                )));
            }
            proof.push(tree.root());
        }
        Ok(proof)
    }

    /// The Merkle root of the log's first `size` leaves. The tree is kept between calls
    /// and extended with the leaves appended since, so signing a checkpoint of a growing
    /// log costs what it grew, not its whole size (an agent signs one per segment it
    /// forwards). The log is append-only: a smaller `size` than last time is read whole.
    pub async fn root_at(&self, size: u64) -> Result<Hash> {
        let mut tree = self.tree.lock().await;
        if size < tree.size() {
            return Ok(MerkleTree::new(self.leaf_hashes(size).await?).root());
        }
        self.extend_tree(&mut tree, size).await?;
        Ok(tree.root())
    }

    /// Append the log's leaves `tree.size()..size` to `tree`: in steps, so that a large
    /// catch-up (the first checkpoint of a big log) holds a bounded number of leaves at
    /// once.
    pub async fn extend_tree(
        &self,
        tree: &mut crate::merkle::CompactTree,
        size: u64,
    ) -> Result<()> {
        self.extend_tree_of(Leaves::Log, tree, size).await
    }

    /// [`Store::extend_tree`] of the log's tree or of a tenant's view.
    async fn extend_tree_of(
        &self,
        which: Leaves<'_>,
        tree: &mut crate::merkle::CompactTree,
        size: u64,
    ) -> Result<()> {
        while tree.size() < size {
            let to = size.min(tree.size() + 65_536);
            let leaves = self.leaves(which, tree.size(), to).await?;
            if leaves.is_empty() {
                return Err(Error::MalformedRecord(format!(
                    "the log holds {} of the {size} leaves asked for",
                    tree.size()
                )));
            }
            for leaf in leaves {
                tree.append(leaf);
            }
        }
        Ok(())
    }

    /// Leaf hashes `from..to` of the log's tree or of a tenant's view.
    async fn leaves(&self, which: Leaves<'_>, from: u64, to: u64) -> Result<Vec<Hash>> {
        match which {
            Leaves::Log => self.leaf_hash_range(from, to).await,
            Leaves::Tenant(t) => self.tenant_leaf_hash_range(t, from, to).await,
        }
    }
}

/// A value bound to a query's parameter.
enum Bound {
    Int(i64),
    Text(String),
}

/// Which of the store's Merkle trees: the log's own, or a tenant's view of it.
#[derive(Clone, Copy)]
enum Leaves<'a> {
    Log,
    Tenant(&'a str),
}

/// The columns of `evidence_log`, in the order `row_to_record` reads them.
const COLUMNS: &str = "idx, leaf_hash, envelope, invocation_id, host_id, runbook, status, started_at_ms, recorded_at_ms";

fn row_to_record<R: Row>(row: &R) -> Result<StoredRecord>
where
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Vec<u8>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    let get_err = |e: sqlx::Error| Error::Store(format!("reading a record: {e}"));
    let index: i64 = row.try_get(0).map_err(get_err)?;
    let hash: Vec<u8> = row.try_get(1).map_err(get_err)?;
    Ok(StoredRecord {
        index: index as u64,
        leaf_hash: hash
            .try_into()
            .map_err(|_| Error::Store(format!("record {index} has a malformed leaf hash")))?,
        envelope: row.try_get(2).map_err(get_err)?,
        invocation_id: row.try_get(3).map_err(get_err)?,
        host_id: row.try_get(4).map_err(get_err)?,
        runbook: row.try_get(5).map_err(get_err)?,
        status: row.try_get(6).map_err(get_err)?,
        started_at_ms: row.try_get(7).map_err(get_err)?,
        recorded_at_ms: row.try_get(8).map_err(get_err)?,
    })
}

impl Store {
    /// The record at `index`, if the log has one.
    pub async fn get(&self, index: u64) -> Result<Option<StoredRecord>> {
        let i = index as i64;
        match &self.db {
            Db::Sqlite(p) => {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM evidence_log WHERE idx = ?"
                ));
                let row = sqlx::query(sql)
                    .bind(i)
                    .fetch_optional(p)
                    .await
                    .map_err(db_err("reading a record"))?;
                row.as_ref().map(row_to_record).transpose()
            }
            Db::Postgres(p) => {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM evidence_log WHERE idx = $1"
                ));
                let row = sqlx::query(sql)
                    .bind(i)
                    .fetch_optional(p)
                    .await
                    .map_err(db_err("reading a record"))?;
                row.as_ref().map(row_to_record).transpose()
            }
        }
    }

    /// Records `from..to` of the log, in order (fewer at its end).
    pub async fn range(&self, from: u64, to: u64) -> Result<Vec<StoredRecord>> {
        let (f, t) = (
            from.min(i64::MAX as u64) as i64,
            to.min(i64::MAX as u64) as i64,
        );
        let read = db_err("reading records");
        match &self.db {
            Db::Sqlite(p) => {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM evidence_log WHERE idx >= ? AND idx < ? ORDER BY idx"
                ));
                let rows = sqlx::query(sql)
                    .bind(f)
                    .bind(t)
                    .fetch_all(p)
                    .await
                    .map_err(read)?;
                rows.iter().map(row_to_record).collect()
            }
            Db::Postgres(p) => {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM evidence_log WHERE idx >= $1 AND idx < $2 ORDER BY idx"
                ));
                let rows = sqlx::query(sql)
                    .bind(f)
                    .bind(t)
                    .fetch_all(p)
                    .await
                    .map_err(read)?;
                rows.iter().map(row_to_record).collect()
            }
        }
    }

    /// The record of invocation `id`, if the log has one (an agent answers a second
    /// delivery of a job from it instead of running the job again).
    pub async fn by_invocation(&self, id: &str) -> Result<Option<StoredRecord>> {
        let read = db_err("reading a record by invocation id");
        match &self.db {
            Db::Sqlite(p) => {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM evidence_log WHERE invocation_id = ?"
                ));
                let row = sqlx::query(sql)
                    .bind(id)
                    .fetch_optional(p)
                    .await
                    .map_err(read)?;
                row.as_ref().map(row_to_record).transpose()
            }
            Db::Postgres(p) => {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM evidence_log WHERE invocation_id = $1"
                ));
                let row = sqlx::query(sql)
                    .bind(id)
                    .fetch_optional(p)
                    .await
                    .map_err(read)?;
                row.as_ref().map(row_to_record).transpose()
            }
        }
    }

    /// Records matching `filter`, in log order.
    pub async fn list(&self, filter: &Filter) -> Result<Vec<StoredRecord>> {
        // Every condition is always present and disabled by a NULL bind, so the SQL text is
        // constant and every value is a bound parameter.
        let (sqlite, pg) = (
            format!(
                "SELECT {COLUMNS} FROM evidence_log WHERE (?1 IS NULL OR started_at_ms >= ?1) AND (?2 IS NULL OR started_at_ms < ?2) \
                 AND (?3 IS NULL OR host_id = ?3) AND (?4 IS NULL OR runbook = ?4) AND (?5 IS NULL OR status = ?5) ORDER BY idx"
            ),
            format!(
                "SELECT {COLUMNS} FROM evidence_log WHERE ($1::BIGINT IS NULL OR started_at_ms >= $1) AND ($2::BIGINT IS NULL OR started_at_ms < $2) \
                 AND ($3::TEXT IS NULL OR host_id = $3) AND ($4::TEXT IS NULL OR runbook = $4) AND ($5::TEXT IS NULL OR status = $5) ORDER BY idx"
            ),
        );
        let f = filter.clone();
        match &self.db {
            Db::Sqlite(p) => {
                let rows = sqlx::query(sqlx::AssertSqlSafe(sqlite))
                    .bind(f.since_ms)
                    .bind(f.until_ms)
                    .bind(f.host)
                    .bind(f.runbook)
                    .bind(f.status)
                    .fetch_all(p)
                    .await
                    .map_err(db_err("listing records"))?;
                keep_tenant(filter, rows.iter().map(row_to_record))
            }
            Db::Postgres(p) => {
                let rows = sqlx::query(sqlx::AssertSqlSafe(pg))
                    .bind(f.since_ms)
                    .bind(f.until_ms)
                    .bind(f.host)
                    .bind(f.runbook)
                    .bind(f.status)
                    .fetch_all(p)
                    .await
                    .map_err(db_err("listing records"))?;
                keep_tenant(filter, rows.iter().map(row_to_record))
            }
        }
    }

    /// Store a signed checkpoint note for tree size `size` (kept if one exists already).
    pub async fn put_checkpoint(&self, size: u64, root: &Hash, note: &str) -> Result<()> {
        self.check_signer(note).await?;
        let (s, r, n, t) = (size as i64, root.to_vec(), note.to_string(), now_ms());
        match &self.db {
            Db::Sqlite(p) => {
                sqlx::query("INSERT INTO checkpoints (size, root, note, created_at_ms) VALUES (?, ?, ?, ?) ON CONFLICT (size) DO NOTHING")
                    .bind(s).bind(r).bind(n).bind(t).execute(p).await.map(|_| ())
            }
            Db::Postgres(p) => {
                sqlx::query("INSERT INTO checkpoints (size, root, note, created_at_ms) VALUES ($1, $2, $3, $4) ON CONFLICT (size) DO NOTHING")
                    .bind(s).bind(r).bind(n).bind(t).execute(p).await.map(|_| ())
            }
        }
        .map_err(db_err("storing a checkpoint"))?;
        self.keep(size, note).await
    }

    /// Sizes of every stored checkpoint, ascending.
    pub async fn checkpoint_sizes(&self) -> Result<Vec<u64>> {
        let sizes: Vec<i64> = match &self.db {
            Db::Sqlite(p) => {
                sqlx::query_scalar("SELECT size FROM checkpoints ORDER BY size")
                    .fetch_all(p)
                    .await
            }
            Db::Postgres(p) => {
                sqlx::query_scalar("SELECT size FROM checkpoints ORDER BY size")
                    .fetch_all(p)
                    .await
            }
        }
        .map_err(db_err("reading checkpoints"))?;
        Ok(sizes.into_iter().map(|s| s as u64).collect())
    }

    /// The signed note of the largest stored checkpoint at or below `max_size`.
    pub async fn checkpoint_at_most(&self, max_size: u64) -> Result<Option<(u64, String)>> {
        let m = max_size as i64;
        let row: Option<(i64, String)> = match &self.db {
            Db::Sqlite(p) => {
                sqlx::query_as(
                    "SELECT size, note FROM checkpoints WHERE size <= ? ORDER BY size DESC LIMIT 1",
                )
                .bind(m)
                .fetch_optional(p)
                .await
            }
            Db::Postgres(p) => sqlx::query_as(
                "SELECT size, note FROM checkpoints WHERE size <= $1 ORDER BY size DESC LIMIT 1",
            )
            .bind(m)
            .fetch_optional(p)
            .await,
        }
        .map_err(db_err("reading checkpoints"))?;
        Ok(row.map(|(s, n)| (s as u64, n)))
    }
}

/// The kept checkpoint note and when it was written (RFC 3339), if the file exists.
fn read_kept(path: &Path) -> Result<Option<(String, String)>> {
    let io = |source| Error::Io {
        action: "read the kept checkpoint",
        path: path.to_owned(),
        source,
    };
    let note = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let at = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| crate::record::rfc3339_ms(d.as_millis() as u64))
        .unwrap_or_else(|| "the last checkpoint".into());
    Ok(Some((note, at)))
}

async fn writer(db: Db, mut rx: mpsc::Receiver<AppendRequest>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let records: Vec<&NewRecord> = batch.iter().map(|r| &r.record).collect();
        let result = match &db {
            Db::Sqlite(p) => commit_sqlite(p, &records).await,
            Db::Postgres(p) => commit_postgres(p, &records).await,
        };
        match result {
            Ok(first_index) => {
                for (i, r) in batch.into_iter().enumerate() {
                    let _ = r.done.send(Ok(first_index + i as u64));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for r in batch {
                    let _ = r.done.send(Err(Error::Store(msg.clone())));
                }
            }
        }
    }
}

/// One row of an evidence INSERT: the columns in `INSERT`'s order.
fn bind_record<DB>(
    mut b: sqlx::query_builder::Separated<'_, DB, &'static str>,
    idx: i64,
    r: &NewRecord,
    now: i64,
) where
    DB: sqlx::Database,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Vec<u8>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    b.push_bind(idx)
        .push_bind(leaf_hash(&r.envelope).to_vec())
        .push_bind(r.envelope.clone())
        .push_bind(r.invocation_id.clone())
        .push_bind(r.host_id.clone())
        .push_bind(r.runbook.clone())
        .push_bind(r.status.clone())
        .push_bind(r.started_at_ms)
        .push_bind(now);
}

async fn commit_sqlite(pool: &SqlitePool, records: &[&NewRecord]) -> Result<u64> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(db_err("acquiring a connection"))?;
    if records.len() <= ROWS_PER_INSERT {
        // One statement, one round trip to the database thread: an autocommit INSERT
        // takes the write lock before it reads the log size, so the indexes it assigns
        // are as safe as under BEGIN IMMEDIATE, and it commits (durably) before returning.
        let now = now_ms();
        let mut q = sqlx::QueryBuilder::new(
            "INSERT INTO evidence_log (idx, leaf_hash, envelope, invocation_id, host_id, runbook, status, started_at_ms, recorded_at_ms) \
             SELECT (SELECT COALESCE(MAX(idx) + 1, 0) FROM evidence_log) + column1, column2, column3, column4, column5, column6, column7, column8, column9 FROM (",
        );
        q.push_values(records.iter().enumerate(), |b, (i, r)| {
            bind_record(b, i as i64, r, now)
        });
        q.push(") RETURNING idx");
        let indexes: Vec<i64> = q
            .build_query_scalar()
            // Its text differs with the batch size: not worth a prepared-statement slot.
            .persistent(false)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err("appending records"))?;
        let first = indexes.iter().copied().min().unwrap_or(0);
        if indexes.len() != records.len()
            || indexes.iter().max() != Some(&(first + records.len() as i64 - 1))
        {
            return Err(Error::Store(format!(
                "appending records: expected {} consecutive indexes, got {indexes:?}",
                records.len()
            )));
        }
        return Ok(first as u64);
    }
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(db_err("beginning an append"))?;
    let next: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(idx) + 1, 0) FROM evidence_log")
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err("reading the log size"))?;
    let now = now_ms();
    // Many rows per statement: per-statement overhead, not the disk, dominates otherwise.
    for (c, chunk) in records.chunks(ROWS_PER_INSERT).enumerate() {
        let mut q = sqlx::QueryBuilder::new(INSERT);
        q.push_values(chunk.iter().enumerate(), |b, (i, r)| {
            bind_record(b, next + (c * ROWS_PER_INSERT + i) as i64, r, now)
        });
        q.build()
            .execute(&mut *tx)
            .await
            .map_err(db_err("appending records"))?;
    }
    tx.commit().await.map_err(db_err("committing appends"))?;
    Ok(next as u64)
}

async fn commit_postgres(pool: &PgPool, records: &[&NewRecord]) -> Result<u64> {
    let mut tx = pool.begin().await.map_err(db_err("beginning an append"))?;
    // One appender at a time across every process writing this log.
    sqlx::query("SELECT pg_advisory_xact_lock(727477260101)")
        .execute(&mut *tx)
        .await
        .map_err(db_err("locking the log"))?;
    let next: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(idx) + 1, 0) FROM evidence_log")
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err("reading the log size"))?;
    let now = now_ms();
    // Many rows per statement: per-statement overhead, not the disk, dominates otherwise.
    for (c, chunk) in records.chunks(ROWS_PER_INSERT).enumerate() {
        let mut q = sqlx::QueryBuilder::new(INSERT);
        q.push_values(chunk.iter().enumerate(), |b, (i, r)| {
            bind_record(b, next + (c * ROWS_PER_INSERT + i) as i64, r, now)
        });
        q.build()
            .execute(&mut *tx)
            .await
            .map_err(db_err("appending records"))?;
    }
    tx.commit().await.map_err(db_err("committing appends"))?;
    Ok(next as u64)
}
