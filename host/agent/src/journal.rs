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
            // No ping before each use: a round trip to the connection's thread, for a
            // local file.
            .test_before_acquire(false)
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

/// How long forgotten runs wait for company before they are committed anyway, and how
/// many make a batch.
const DONE_DELAY: Duration = Duration::from_secs(1);
const DONE_BATCH: usize = 64;

/// Starts are committed at once, with every start queued beside them: one statement
/// when there is one. Dones are never waited for: they are committed in batches, when
/// [`DONE_BATCH`] have gathered or once the journal has been quiet for [`DONE_DELAY`] —
/// so a run's end puts no commit of its own in front of the next run's start.
async fn writer(pool: SqlitePool, mut rx: mpsc::Receiver<Op>) {
    let mut dones: Vec<String> = Vec::new();
    loop {
        if dones.len() >= DONE_BATCH {
            // Best effort: a row left behind is removed at the next start of the agent.
            if commit(&pool, &[], &dones).await.is_ok() {
                dones.clear();
            }
        }
        let first = if dones.is_empty() {
            rx.recv().await
        } else {
            match tokio::time::timeout(DONE_DELAY, rx.recv()).await {
                Ok(op) => op,
                Err(_) => {
                    if commit(&pool, &[], &dones).await.is_ok() {
                        dones.clear();
                    }
                    continue;
                }
            }
        };
        let Some(first) = first else {
            let _ = commit(&pool, &[], &dones).await;
            return;
        };
        let mut ops = vec![first];
        while ops.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let mut starts = Vec::new();
        for op in ops {
            match op {
                Op::Start(s, reply) => starts.push((s, reply)),
                Op::Done(id) => dones.push(id),
            }
        }
        if starts.is_empty() {
            continue;
        }
        let result = commit(&pool, &starts, &[]).await;
        for (_, reply) in starts {
            let _ = reply.send(result.clone());
        }
    }
}

const INSERT_STARTED: &str = "INSERT OR REPLACE INTO started (invocation_id, job, incident_id, tenant, runbook, sha256, provenance, dry_run, started_at_ms) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";

fn insert_started(
    s: &Started,
) -> sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    sqlx::query(INSERT_STARTED)
        .bind(&s.invocation_id)
        .bind(&s.job)
        .bind(&s.incident_id)
        .bind(&s.tenant)
        .bind(&s.runbook)
        .bind(&s.sha256)
        .bind(&s.provenance)
        .bind(i64::from(s.dry_run))
        .bind(s.started_at_ms)
}

/// One commit: the starts, or the dones. A single start is one autocommit statement (one
/// round trip to SQLite's thread instead of three).
async fn commit(
    pool: &SqlitePool,
    starts: &[(Started, oneshot::Sender<Result<(), String>>)],
    dones: &[String],
) -> Result<(), String> {
    let err = |e: sqlx::Error| format!("writing the agent journal: {e}");
    if let ([(s, _)], []) = (starts, dones) {
        return insert_started(s)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(err);
    }
    let mut tx = pool.begin().await.map_err(err)?;
    for (s, _) in starts {
        insert_started(s).execute(&mut *tx).await.map_err(err)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn started(id: &str) -> Started {
        Started {
            invocation_id: id.into(),
            job: "job".into(),
            incident_id: "inc".into(),
            tenant: "t".into(),
            runbook: "clear-tmp".into(),
            sha256: "00".into(),
            provenance: "{}".into(),
            dry_run: false,
            started_at_ms: 1,
        }
    }

    async fn ids(j: &Journal) -> Vec<String> {
        let rows = j.unfinished().await.unwrap();
        rows.into_iter().map(|s| s.invocation_id).collect()
    }

    #[tokio::test]
    async fn a_forgotten_run_leaves_the_journal_once_quiet_and_a_start_stays_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("agent-journal.db"))
            .await
            .unwrap();
        j.start(started("a")).await.unwrap();
        assert_eq!(ids(&j).await, ["a"], "a start is durable once it returns");

        // A done is not waited for, and goes once the journal is quiet.
        j.done("a").await;
        j.start(started("b")).await.unwrap();
        j.done("b").await;
        let deadline = std::time::Instant::now() + DONE_DELAY * 10;
        while !ids(&j).await.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "a done was never committed on its own"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // A journal reopened after a run started and was never forgotten still has it.
        j.start(started("c")).await.unwrap();
        drop(j);
        let j = Journal::open(&dir.path().join("agent-journal.db"))
            .await
            .unwrap();
        assert_eq!(ids(&j).await, ["c"]);
    }
}
