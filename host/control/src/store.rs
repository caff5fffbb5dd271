//! Control-plane state in the same database as the evidence log (one migration sequence
//! in `migrations/`): incidents, the runbook actions guardrails count, API tokens.

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row};
use std::path::Path;
use std::time::Duration;

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
#[derive(Clone)]
pub struct ControlStore {
    db: Db,
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
    /// Open `target`: a `postgres://` URL, or a SQLite file (created if missing).
    pub async fn open(target: &str) -> Result<ControlStore> {
        let db = if target.starts_with("postgres://") || target.starts_with("postgresql://") {
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
            Db::Postgres(pool)
        } else {
            let opts = SqliteConnectOptions::new()
                .filename(Path::new(target))
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // Control state survives a process crash or restart (WAL); an OS crash may
                // lose its last commits. Evidence — the record of what was done — is
                // written through its own connections with `synchronous = FULL`.
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(30));
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts)
                .await
                .map_err(|e| StoreError(format!("opening {target}: {e}")))?;
            sqlx::migrate!("../../migrations/sqlite")
                .run(&pool)
                .await
                .map_err(migrate_err)?;
            Db::Sqlite(pool)
        };
        Ok(ControlStore { db })
    }

    /// Insert or replace an incident's record.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_incident(
        &self,
        id: &str,
        tenant: &str,
        host: &str,
        fingerprint: &str,
        status: &str,
        received_at_ms: i64,
        updated_at_ms: i64,
        record: &str,
    ) -> Result<()> {
        on_db!(&self.db, p, pg => {
            sqlx::query(sql(pg, "INSERT INTO incidents (id, tenant, host, fingerprint, status, received_at_ms, updated_at_ms, record) \
                VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
                ON CONFLICT (id) DO UPDATE SET status = excluded.status, updated_at_ms = excluded.updated_at_ms, record = excluded.record"))
                .bind(id).bind(tenant).bind(host).bind(fingerprint).bind(status)
                .bind(received_at_ms).bind(updated_at_ms).bind(record)
                .execute(p).await.map_err(db_err("writing an incident"))?;
        });
        Ok(())
    }

    /// One incident's record, if it belongs to `tenant`.
    pub async fn get_incident(&self, tenant: &str, id: &str) -> Result<Option<String>> {
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
        on_db!(&self.db, p, pg => {
            sqlx::query_scalar(sql(pg, "SELECT record FROM incidents WHERE tenant = ? AND (? IS NULL OR status = ?) \
                ORDER BY received_at_ms DESC, id DESC LIMIT ?"))
                .bind(tenant).bind(status).bind(status).bind(i64::from(limit))
                .fetch_all(p).await.map_err(db_err("listing incidents"))
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

    /// Record that a runbook run started.
    pub async fn record_action(
        &self,
        tenant: &str,
        host: &str,
        runbook: &str,
        incident_id: &str,
        at_ms: i64,
    ) -> Result<()> {
        on_db!(&self.db, p, pg => {
            sqlx::query(sql(pg, "INSERT INTO actions (tenant, host, runbook, incident_id, at_ms) VALUES (?, ?, ?, ?, ?)"))
                .bind(tenant).bind(host).bind(runbook).bind(incident_id).bind(at_ms)
                .execute(p).await.map_err(db_err("recording an action"))?;
        });
        Ok(())
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
        on_db!(&self.db, p, pg => {
            sqlx::query(sql(pg, "INSERT INTO api_tokens (id, tenant, scope, name, secret_sha256, created_at_ms, revoked) VALUES (?, ?, ?, ?, ?, ?, ?)"))
                .bind(&t.id).bind(&t.tenant).bind(&t.scope).bind(&t.name).bind(secret_sha256).bind(at_ms).bind(t.revoked)
                .execute(p).await.map_err(db_err("storing a token"))?;
        });
        Ok(())
    }

    /// Revoke a token; false when there is no such token.
    pub async fn revoke_token(&self, id: &str) -> Result<bool> {
        on_db!(&self.db, p, pg => {
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
