//! Enrolled hosts and the single-use tokens agents enroll with.

use super::{ControlStore, Db, Result, db_err, sql};
use sqlx::Row;

/// A host as enrolled.
#[derive(Clone, Debug, PartialEq)]
pub struct HostRow {
    /// Host id.
    pub id: String,
    /// The tenant that owns it.
    pub tenant: String,
    /// Labels, a JSON object.
    pub labels: String,
    /// The inventory the agent reported, JSON.
    pub inventory: String,
    /// The agent's policy, TOML.
    pub policy: String,
    /// The host key's name.
    pub key_name: String,
    /// The host key (32 bytes).
    pub public_key: Vec<u8>,
    /// When it enrolled (ms).
    pub enrolled_at_ms: i64,
    /// When its agent was last heard from (ms).
    pub last_seen_ms: Option<i64>,
    /// No new jobs go to it.
    pub drained: bool,
    /// The agent's version, as its last heartbeat said.
    pub agent_version: Option<String>,
    /// Records its log held, as its last heartbeat said.
    pub log_size: Option<i64>,
}

/// A key a host enrolled with: each signs its own log, `runwarden/KEY_NAME`.
#[derive(Clone, Debug, PartialEq)]
pub struct HostKeyRow {
    /// The key's name, given by the control plane (the host id, then `HOST~2`, …).
    pub key_name: String,
    /// The host.
    pub host_id: String,
    /// The host's tenant.
    pub tenant: String,
    /// The public key (32 bytes).
    pub public_key: Vec<u8>,
    /// When the host enrolled with it (ms).
    pub enrolled_at_ms: i64,
}

const HOST_KEY_COLUMNS: &str = "key_name, host_id, tenant, public_key, enrolled_at_ms";

fn host_key_row<R: Row>(r: &R) -> std::result::Result<HostKeyRow, sqlx::Error>
where
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Vec<u8>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    Ok(HostKeyRow {
        key_name: r.try_get(0)?,
        host_id: r.try_get(1)?,
        tenant: r.try_get(2)?,
        public_key: r.try_get(3)?,
        enrolled_at_ms: r.try_get(4)?,
    })
}

/// An enrollment token as stored (never its secret).
#[derive(Clone, Debug, PartialEq)]
pub struct EnrollmentTokenRow {
    /// Id (`enr_…`).
    pub id: String,
    /// The tenant the enrolled host will belong to.
    pub tenant: String,
    /// Labels the enrolled host gets, a JSON object.
    pub labels: String,
    /// When it was made (ms).
    pub created_at_ms: i64,
    /// After this it enrolls nothing (ms).
    pub expires_at_ms: i64,
}

const HOST_COLUMNS: &str = "id, tenant, labels, inventory, policy, key_name, public_key, enrolled_at_ms, last_seen_ms, drained, agent_version, log_size";

fn host_row<R: Row>(r: &R) -> std::result::Result<HostRow, sqlx::Error>
where
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Vec<u8>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    Ok(HostRow {
        id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        labels: r.try_get(2)?,
        inventory: r.try_get(3)?,
        policy: r.try_get(4)?,
        key_name: r.try_get(5)?,
        public_key: r.try_get(6)?,
        enrolled_at_ms: r.try_get(7)?,
        last_seen_ms: r.try_get(8)?,
        drained: r.try_get::<i64, _>(9)? != 0,
        agent_version: r.try_get(10)?,
        log_size: r.try_get(11)?,
    })
}

impl ControlStore {
    /// Store an enrollment token (its secret's hash only).
    pub async fn put_enrollment_token(
        &self,
        t: &EnrollmentTokenRow,
        secret_sha256: &str,
    ) -> Result<()> {
        on_db!(&self.write, p, pg => {
            sqlx::query(sql(pg, "INSERT INTO enrollment_tokens (id, secret_sha256, tenant, labels, created_at_ms, expires_at_ms) VALUES (?, ?, ?, ?, ?, ?)"))
                .bind(&t.id).bind(secret_sha256).bind(&t.tenant).bind(&t.labels).bind(t.created_at_ms).bind(t.expires_at_ms)
                .execute(p).await.map_err(db_err("storing an enrollment token"))?;
        });
        Ok(())
    }

    /// The enrollment token whose secret hashes to `secret_sha256`, if it is unused and
    /// unexpired at `now_ms` (nothing is spent).
    pub async fn enrollment_token(
        &self,
        secret_sha256: &str,
        now_ms: i64,
    ) -> Result<Option<EnrollmentTokenRow>> {
        on_db!(&self.write, p, pg => {
            let row = sqlx::query(sql(pg, "SELECT id, tenant, labels, created_at_ms, expires_at_ms FROM enrollment_tokens \
                WHERE secret_sha256 = ? AND used_at_ms IS NULL AND expires_at_ms > ?"))
                .bind(secret_sha256).bind(now_ms)
                .fetch_optional(p).await.map_err(db_err("reading an enrollment token"))?;
            row.map(|r| Ok(EnrollmentTokenRow {
                id: r.try_get(0)?,
                tenant: r.try_get(1)?,
                labels: r.try_get(2)?,
                created_at_ms: r.try_get(3)?,
                expires_at_ms: r.try_get(4)?,
            }))
            .transpose()
            .map_err(db_err("reading an enrollment token"))
        })
    }

    /// Use the enrollment token whose secret hashes to `secret_sha256` for `host`, once:
    /// `None` when there is no such token, it expired (at `now_ms`) or it was used.
    pub async fn use_enrollment_token(
        &self,
        secret_sha256: &str,
        host: &str,
        now_ms: i64,
    ) -> Result<Option<EnrollmentTokenRow>> {
        on_db!(&self.write, p, pg => {
            let row = sqlx::query(sql(pg, "UPDATE enrollment_tokens SET used_at_ms = ?, used_by = ? \
                WHERE secret_sha256 = ? AND used_at_ms IS NULL AND expires_at_ms > ? \
                RETURNING id, tenant, labels, created_at_ms, expires_at_ms"))
                .bind(now_ms).bind(host).bind(secret_sha256).bind(now_ms)
                .fetch_optional(p).await.map_err(db_err("using an enrollment token"))?;
            row.map(|r| Ok(EnrollmentTokenRow {
                id: r.try_get(0)?,
                tenant: r.try_get(1)?,
                labels: r.try_get(2)?,
                created_at_ms: r.try_get(3)?,
                expires_at_ms: r.try_get(4)?,
            }))
            .transpose()
            .map_err(db_err("using an enrollment token"))
        })
    }

    /// Store `host` with its current key, or replace the row of the same id if the same
    /// tenant owns it; the key joins the host's keys ([`ControlStore::host_keys`]) unless
    /// it is one of them already. One transaction. Returns false (and changes nothing)
    /// when another tenant owns the id, or the key's name or public key is another
    /// host's (or another key's of this host).
    pub async fn put_host(&self, h: &HostRow) -> Result<bool> {
        on_db!(&self.write, p, pg => {
            let mut tx = p.begin().await.map_err(db_err("beginning to store a host"))?;
            let r = sqlx::query(sql(pg, "INSERT INTO hosts (id, tenant, labels, inventory, policy, key_name, public_key, enrolled_at_ms, last_seen_ms, drained) \
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET \
                labels = excluded.labels, inventory = excluded.inventory, policy = excluded.policy, key_name = excluded.key_name, \
                public_key = excluded.public_key, enrolled_at_ms = excluded.enrolled_at_ms \
                WHERE hosts.tenant = excluded.tenant"))
                .bind(&h.id).bind(&h.tenant).bind(&h.labels).bind(&h.inventory).bind(&h.policy).bind(&h.key_name)
                .bind(&h.public_key).bind(h.enrolled_at_ms).bind(h.last_seen_ms).bind(i64::from(h.drained))
                .execute(&mut *tx).await.map_err(db_err("storing a host"))?;
            if r.rows_affected() == 0 {
                return Ok(false);
            }
            let known = sqlx::query(sql(pg, &format!("SELECT {HOST_KEY_COLUMNS} FROM host_keys WHERE key_name = ? OR public_key = ?")))
                .bind(&h.key_name).bind(&h.public_key)
                .fetch_all(&mut *tx).await.map_err(db_err("reading a host's keys"))?;
            let known = known.iter().map(host_key_row).collect::<std::result::Result<Vec<_>, _>>().map_err(db_err("reading a host's keys"))?;
            if known.is_empty() {
                sqlx::query(sql(pg, &format!("INSERT INTO host_keys ({HOST_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?)")))
                    .bind(&h.key_name).bind(&h.id).bind(&h.tenant).bind(&h.public_key).bind(h.enrolled_at_ms)
                    .execute(&mut *tx).await.map_err(db_err("storing a host's key"))?;
            } else if !known.iter().all(|k| k.key_name == h.key_name && k.public_key == h.public_key && k.host_id == h.id) {
                // The name or the public key is another key's (dropping `tx` rolls back).
                return Ok(false);
            }
            tx.commit().await.map_err(db_err("committing a host"))?;
            Ok(true)
        })
    }

    /// Every key host `id` enrolled with, oldest first.
    pub async fn host_keys(&self, id: &str) -> Result<Vec<HostKeyRow>> {
        on_db!(&self.write, p, pg => {
            let rows = sqlx::query(sql(pg, &format!("SELECT {HOST_KEY_COLUMNS} FROM host_keys WHERE host_id = ? ORDER BY enrolled_at_ms, key_name")))
                .bind(id)
                .fetch_all(p).await.map_err(db_err("reading a host's keys"))?;
            rows.iter().map(host_key_row).collect::<std::result::Result<Vec<_>, _>>().map_err(db_err("reading a host's keys"))
        })
    }

    /// Note the bus (NATS) user `public_key` minted for `host` of `tenant` at `now_ms`, and
    /// revoke every earlier user of that host: one set of bus credentials per host, the
    /// latest. Returns how many were revoked.
    pub async fn add_bus_user(
        &self,
        public_key: &str,
        host: &str,
        tenant: &str,
        now_ms: i64,
    ) -> Result<u64> {
        on_db!(&self.write, p, pg => {
            let mut tx = p.begin().await.map_err(db_err("beginning to store a bus user"))?;
            let revoked = sqlx::query(sql(pg, "UPDATE bus_users SET revoked_at_ms = ? WHERE host_id = ? AND revoked_at_ms IS NULL AND public_key <> ?"))
                .bind(now_ms).bind(host).bind(public_key)
                .execute(&mut *tx).await.map_err(db_err("revoking a host's bus users"))?
                .rows_affected();
            sqlx::query(sql(pg, "INSERT INTO bus_users (public_key, host_id, tenant, issued_at_ms) VALUES (?, ?, ?, ?) ON CONFLICT (public_key) DO NOTHING"))
                .bind(public_key).bind(host).bind(tenant).bind(now_ms)
                .execute(&mut *tx).await.map_err(db_err("storing a bus user"))?;
            tx.commit().await.map_err(db_err("committing a bus user"))?;
            Ok(revoked)
        })
    }

    /// Every revoked bus user: public key → when it was revoked (ms), oldest first.
    pub async fn revoked_bus_users(&self) -> Result<Vec<(String, i64)>> {
        on_db!(&self.write, p, pg => {
            let rows = sqlx::query(sql(pg, "SELECT public_key, revoked_at_ms FROM bus_users WHERE revoked_at_ms IS NOT NULL ORDER BY revoked_at_ms, public_key"))
                .fetch_all(p).await.map_err(db_err("reading the revoked bus users"))?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
                .map_err(db_err("reading the revoked bus users"))
        })
    }

    /// The key named `name` or whose public key is `public_key`, of any host.
    pub async fn host_key_named_or(
        &self,
        name: &str,
        public_key: &[u8],
    ) -> Result<Option<HostKeyRow>> {
        on_db!(&self.write, p, pg => {
            let row = sqlx::query(sql(pg, &format!("SELECT {HOST_KEY_COLUMNS} FROM host_keys WHERE key_name = ? OR public_key = ? LIMIT 1")))
                .bind(name).bind(public_key)
                .fetch_optional(p).await.map_err(db_err("reading a host key"))?;
            row.as_ref().map(host_key_row).transpose().map_err(db_err("reading a host key"))
        })
    }

    /// Every key the hosts of `tenant` enrolled with, by host then oldest first.
    pub async fn tenant_host_keys(&self, tenant: &str) -> Result<Vec<HostKeyRow>> {
        on_db!(&self.db, p, pg => {
            let rows = sqlx::query(sql(pg, &format!("SELECT {HOST_KEY_COLUMNS} FROM host_keys WHERE tenant = ? ORDER BY host_id, enrolled_at_ms, key_name")))
                .bind(tenant)
                .fetch_all(p).await.map_err(db_err("reading the hosts' keys"))?;
            rows.iter().map(host_key_row).collect::<std::result::Result<Vec<_>, _>>().map_err(db_err("reading the hosts' keys"))
        })
    }

    /// The host `id`, if enrolled.
    pub async fn host(&self, id: &str) -> Result<Option<HostRow>> {
        on_db!(&self.write, p, pg => {
            let row = sqlx::query(sql(pg, &format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = ?")))
                .bind(id)
                .fetch_optional(p).await.map_err(db_err("reading a host"))?;
            row.as_ref().map(host_row).transpose().map_err(db_err("reading a host"))
        })
    }

    /// Every enrolled host, by id.
    pub async fn hosts(&self) -> Result<Vec<HostRow>> {
        on_db!(&self.db, p, pg => {
            let rows = sqlx::query(sql(pg, &format!("SELECT {HOST_COLUMNS} FROM hosts ORDER BY id")))
                .fetch_all(p).await.map_err(db_err("listing hosts"))?;
            rows.iter().map(host_row).collect::<std::result::Result<Vec<_>, _>>().map_err(db_err("listing hosts"))
        })
    }

    /// Mark `id` drained (no new jobs) or not; false when there is no such host.
    pub async fn set_drained(&self, id: &str, drained: bool) -> Result<bool> {
        on_db!(&self.write, p, pg => {
            let r = sqlx::query(sql(pg, "UPDATE hosts SET drained = ? WHERE id = ?"))
                .bind(i64::from(drained)).bind(id)
                .execute(p).await.map_err(db_err("draining a host"))?;
            Ok(r.rows_affected() > 0)
        })
    }

    /// Note that `id`'s agent was heard from at `at_ms`, running `version`, its log holding
    /// `log_size` records (each kept when not given).
    pub async fn touch_host(
        &self,
        id: &str,
        at_ms: i64,
        version: Option<&str>,
        log_size: Option<i64>,
    ) -> Result<()> {
        on_db!(&self.write, p, pg => {
            sqlx::query(sql(pg, "UPDATE hosts SET last_seen_ms = ?, agent_version = COALESCE(?, agent_version), \
                log_size = COALESCE(?, log_size) WHERE id = ? AND (last_seen_ms IS NULL OR last_seen_ms < ?)"))
                .bind(at_ms).bind(version).bind(log_size).bind(id).bind(at_ms)
                .execute(p).await.map_err(db_err("noting a host's heartbeat"))?;
        });
        Ok(())
    }
}
