//! The agent's journal of runs it started: a row written durably before a run starts and
//! deleted once its record is in the host's log. The log's unique invocation id is the
//! truth about what finished; the journal is what tells, after a crash, which runs were
//! cut off (see [`Executor::recover`](crate::Executor::recover)).
//!
//! Its own SQLite file (`agent-journal.db`), synchronous commits, batched: the runs that
//! start together share one commit.

use runwarden_evidence as ev;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::Path;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most starts committed together.
const MAX_BATCH: usize = 256;

/// A run about to start.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Started {
    pub(crate) invocation_id: String,
    pub(crate) job: String,
    pub(crate) incident_id: String,
    pub(crate) tenant: String,
    pub(crate) runbook: String,
    pub(crate) sha256: String,
    pub(crate) provenance: String,
    pub(crate) dry_run: bool,
    pub(crate) started_at_ms: i64,
}

enum Op {
    Start(Started, oneshot::Sender<Result<(), String>>),
    Done(String),
}

/// The journal. Cloning shares it.
#[derive(Clone)]
pub(crate) struct Journal {
    pool: SqlitePool,
    tx: mpsc::Sender<Op>,
}

impl Journal {
    /// Open (or create, 0600) the journal at `path`.
    pub(crate) async fn open(path: &Path) -> Result<Journal, String> {
        ev::private_sqlite_files(path)
            .map_err(|e| format!("creating the agent journal {}: {e}", path.display()))?;
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await
            .map_err(|e| format!("opening the agent journal {}: {e}", path.display()))?;
        sqlx::migrate!("../../migrations/agent")
            .run(&pool)
            .await
            .map_err(|e| format!("the agent journal {}: {e}", path.display()))?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(writer(pool.clone(), rx));
        Ok(Journal { pool, tx })
    }

    /// Note durably that `run` is about to start; returns once committed.
    pub(crate) async fn start(&self, run: Started) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        let stopped = || "the agent journal's writer has stopped".to_string();
        self.tx
            .send(Op::Start(run, done))
            .await
            .map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())?
    }

    /// Forget `invocation_id`: its record is in the log. Best effort, in the background
    /// (a row left behind is found recorded at the next start and removed then).
    pub(crate) async fn done(&self, invocation_id: &str) {
        let _ = self.tx.send(Op::Done(invocation_id.to_string())).await;
    }

    /// Every run started and not known to be recorded, oldest first.
    pub(crate) async fn unfinished(&self) -> Result<Vec<Started>, String> {
        use sqlx::Row;
        let rows = sqlx::query(
            "SELECT invocation_id, job, incident_id, tenant, runbook, sha256, provenance, dry_run, started_at_ms \
             FROM started ORDER BY started_at_ms, invocation_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| format!("reading the agent journal: {e}"))?;
        rows.iter()
            .map(|r| {
                Ok(Started {
                    invocation_id: r.try_get(0)?,
                    job: r.try_get(1)?,
                    incident_id: r.try_get(2)?,
                    tenant: r.try_get(3)?,
                    runbook: r.try_get(4)?,
                    sha256: r.try_get(5)?,
                    provenance: r.try_get(6)?,
                    dry_run: r.try_get::<i64, _>(7)? != 0,
                    started_at_ms: r.try_get(8)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| format!("reading the agent journal: {e}"))
    }
}

async fn writer(pool: SqlitePool, mut rx: mpsc::Receiver<Op>) {
    while let Some(first) = rx.recv().await {
        let mut ops = vec![first];
        while ops.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let mut starts = Vec::new();
        let mut dones = Vec::new();
        for op in ops {
            match op {
                Op::Start(s, reply) => starts.push((s, reply)),
                Op::Done(id) => dones.push(id),
            }
        }
        let result = commit(&pool, &starts, &dones).await;
        for (_, reply) in starts {
            let _ = reply.send(result.clone());
        }
    }
}

/// One transaction: the starts (and the dones that came with them).
async fn commit(
    pool: &SqlitePool,
    starts: &[(Started, oneshot::Sender<Result<(), String>>)],
    dones: &[String],
) -> Result<(), String> {
    let err = |e: sqlx::Error| format!("writing the agent journal: {e}");
    let mut tx = pool.begin().await.map_err(err)?;
    for (s, _) in starts {
        sqlx::query(
            "INSERT OR REPLACE INTO started (invocation_id, job, incident_id, tenant, runbook, sha256, provenance, dry_run, started_at_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.invocation_id)
        .bind(&s.job)
        .bind(&s.incident_id)
        .bind(&s.tenant)
        .bind(&s.runbook)
        .bind(&s.sha256)
        .bind(&s.provenance)
        .bind(i64::from(s.dry_run))
        .bind(s.started_at_ms)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    }
    for id in dones {
        sqlx::query("DELETE FROM started WHERE invocation_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
    }
    tx.commit().await.map_err(err)
}
