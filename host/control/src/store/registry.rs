//! The component registry: tenants' trust policies, components by SHA-256, and releases.

use super::{ControlStore, Db, Result, db_err, sql};
use sqlx::Row;

/// A tenant's release of a component, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct ReleaseRow {
    /// The tenant that published it.
    pub tenant: String,
    /// The component's SHA-256 (hex).
    pub sha256: String,
    /// `runbook` or `rules`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its effective risk level.
    pub risk: String,
    /// The publisher's key, as text.
    pub publisher: String,
    /// The signed release (DSSE envelope JSON).
    pub envelope: String,
    /// When it was published (ms).
    pub published_at_ms: i64,
    /// Who published it (the token).
    pub published_by: String,
}

const RELEASE_COLUMNS: &str =
    "tenant, sha256, kind, name, version, risk, publisher, envelope, published_at_ms, published_by";

impl ControlStore {
    /// Set `tenant`'s trust policy (JSON), replacing the one it had.
    pub async fn put_trust_policy(
        &self,
        tenant: &str,
        policy: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<()> {
        on_db!(&self.write, p, pg => {
            sqlx::query(sql(pg, "INSERT INTO trust_policies (tenant, policy, updated_at_ms, updated_by) VALUES (?, ?, ?, ?) \
                ON CONFLICT (tenant) DO UPDATE SET policy = excluded.policy, updated_at_ms = excluded.updated_at_ms, updated_by = excluded.updated_by"))
                .bind(tenant).bind(policy).bind(now_ms).bind(by)
                .execute(p).await.map_err(db_err("storing a trust policy"))?;
        });
        Ok(())
    }

    /// `tenant`'s trust policy (JSON), if it has one.
    pub async fn trust_policy(&self, tenant: &str) -> Result<Option<String>> {
        on_db!(&self.write, p, pg => {
            Ok(sqlx::query_scalar(sql(pg, "SELECT policy FROM trust_policies WHERE tenant = ?"))
                .bind(tenant)
                .fetch_optional(p).await.map_err(db_err("reading a trust policy"))?)
        })
    }

    /// Store a component's bytes (once, by SHA-256) and `tenant`'s release of it (once:
    /// publishing the same release again changes nothing). Returns whether the release
    /// is new.
    pub async fn put_release(&self, bytes: &[u8], r: &ReleaseRow) -> Result<bool> {
        on_db!(&self.write, p, pg => {
            let mut tx = p.begin().await.map_err(db_err("publishing a component"))?;
            sqlx::query(sql(pg, "INSERT INTO components (sha256, bytes, size) VALUES (?, ?, ?) ON CONFLICT (sha256) DO NOTHING"))
                .bind(&r.sha256).bind(bytes).bind(bytes.len() as i64)
                .execute(&mut *tx).await.map_err(db_err("storing a component"))?;
            let new = sqlx::query(sql(pg, &format!("INSERT INTO releases ({RELEASE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, sha256) DO NOTHING")))
                .bind(&r.tenant).bind(&r.sha256).bind(&r.kind).bind(&r.name).bind(&r.version).bind(&r.risk)
                .bind(&r.publisher).bind(&r.envelope).bind(r.published_at_ms).bind(&r.published_by)
                .execute(&mut *tx).await.map_err(db_err("storing a release"))?
                .rows_affected() == 1;
            tx.commit().await.map_err(db_err("publishing a component"))?;
            Ok(new)
        })
    }

    /// `tenant`'s releases, newest first, of `name` only when given.
    pub async fn releases(&self, tenant: &str, name: Option<&str>) -> Result<Vec<ReleaseRow>> {
        on_db!(&self.write, p, pg => {
            sqlx::query(sql(pg, &format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE tenant = ? AND (CAST(? AS TEXT) IS NULL OR name = ?) \
                ORDER BY published_at_ms DESC, sha256")))
                .bind(tenant).bind(name).bind(name)
                .fetch_all(p).await.map_err(db_err("listing releases"))?
                .iter()
                .map(|r| Ok(ReleaseRow {
                    tenant: r.try_get(0)?,
                    sha256: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    name: r.try_get(3)?,
                    version: r.try_get(4)?,
                    risk: r.try_get(5)?,
                    publisher: r.try_get(6)?,
                    envelope: r.try_get(7)?,
                    published_at_ms: r.try_get(8)?,
                    published_by: r.try_get(9)?,
                }))
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
                .map_err(db_err("listing releases"))
        })
    }

    /// A component's bytes, by SHA-256, if `tenant` published it.
    pub async fn component(&self, tenant: &str, sha256: &str) -> Result<Option<Vec<u8>>> {
        on_db!(&self.write, p, pg => {
            Ok(sqlx::query_scalar(sql(pg, "SELECT c.bytes FROM components c JOIN releases r ON r.sha256 = c.sha256 \
                WHERE r.tenant = ? AND c.sha256 = ?"))
                .bind(tenant).bind(sha256)
                .fetch_optional(p).await.map_err(db_err("reading a component"))?)
        })
    }
}
