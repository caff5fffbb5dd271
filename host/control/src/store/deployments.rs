//! Deployments of published components, and what each host should run and runs.

use super::{ControlStore, Db, Result, db_err, sql};
use sqlx::Row;

/// A deployment, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct DeploymentRow {
    /// Its id.
    pub id: String,
    /// The tenant whose hosts it is for.
    pub tenant: String,
    /// The component's name.
    pub name: String,
    /// The version deployed ('' for a rollback).
    pub version: String,
    /// Its sha256 ('' for a rollback).
    pub sha256: String,
    /// `deploy` or `rollback`.
    pub action: String,
    /// The hosts as chosen.
    pub selector: String,
    /// The canaries' share, percent (0: none).
    pub canary_percent: i64,
    /// How long the canaries are watched, ms.
    pub soak_ms: i64,
    /// The canaries' failure rate above which it halts.
    pub max_failure_rate: f64,
    /// `canary`, `rolling`, `done`, `halted`.
    pub state: String,
    /// Why, in words.
    pub detail: String,
    /// When it was asked for.
    pub created_at_ms: i64,
    /// Who asked.
    pub created_by: String,
    /// When it last changed.
    pub updated_at_ms: i64,
}

/// What one host should run and runs under one component name.
#[derive(Clone, Debug, PartialEq)]
pub struct HostComponentRow {
    /// The host's tenant.
    pub tenant: String,
    /// The host.
    pub host: String,
    /// The component's name.
    pub name: String,
    /// The deployment that last set what is wanted.
    pub deployment: String,
    /// `deploy`, `rollback` or `remove`.
    pub action: String,
    /// What is wanted ('' with `remove`: the host's own).
    pub sha256: String,
    /// Its version.
    pub version: String,
    /// Whether the host is one of its deployment's canaries.
    pub canary: bool,
    /// `pending`, `held`, `deployed`, `refused`, `halted`.
    pub state: String,
    /// Why, or what the host said.
    pub detail: String,
    /// What the host said it runs ('' : its own).
    pub running_sha256: String,
    /// Its version.
    pub running_version: String,
    /// What it ran before that.
    pub previous_sha256: String,
    /// Its version.
    pub previous_version: String,
    /// When the host took what it runs.
    pub deployed_at_ms: i64,
    /// When the row last changed.
    pub updated_at_ms: i64,
}

const DEPLOYMENT_COLUMNS: &str = "id, tenant, name, version, sha256, action, selector, canary_percent, soak_ms, \
     max_failure_rate, state, detail, created_at_ms, created_by, updated_at_ms";
const HOST_COLUMNS: &str = "tenant, host, name, deployment, action, sha256, version, canary, state, detail, \
     running_sha256, running_version, previous_sha256, previous_version, deployed_at_ms, updated_at_ms";

fn deployment_row(r: &impl RowLike) -> std::result::Result<DeploymentRow, sqlx::Error> {
    Ok(DeploymentRow {
        id: r.text(0)?,
        tenant: r.text(1)?,
        name: r.text(2)?,
        version: r.text(3)?,
        sha256: r.text(4)?,
        action: r.text(5)?,
        selector: r.text(6)?,
        canary_percent: r.int(7)?,
        soak_ms: r.int(8)?,
        max_failure_rate: r.real(9)?,
        state: r.text(10)?,
        detail: r.text(11)?,
        created_at_ms: r.int(12)?,
        created_by: r.text(13)?,
        updated_at_ms: r.int(14)?,
    })
}

fn host_row(r: &impl RowLike) -> std::result::Result<HostComponentRow, sqlx::Error> {
    Ok(HostComponentRow {
        tenant: r.text(0)?,
        host: r.text(1)?,
        name: r.text(2)?,
        deployment: r.text(3)?,
        action: r.text(4)?,
        sha256: r.text(5)?,
        version: r.text(6)?,
        canary: r.int(7)? != 0,
        state: r.text(8)?,
        detail: r.text(9)?,
        running_sha256: r.text(10)?,
        running_version: r.text(11)?,
        previous_sha256: r.text(12)?,
        previous_version: r.text(13)?,
        deployed_at_ms: r.int(14)?,
        updated_at_ms: r.int(15)?,
    })
}

/// A row of either backend, read by column index.
trait RowLike {
    fn text(&self, i: usize) -> std::result::Result<String, sqlx::Error>;
    fn int(&self, i: usize) -> std::result::Result<i64, sqlx::Error>;
    fn real(&self, i: usize) -> std::result::Result<f64, sqlx::Error>;
}

macro_rules! row_like {
    ($t:ty) => {
        impl RowLike for $t {
            fn text(&self, i: usize) -> std::result::Result<String, sqlx::Error> {
                Row::try_get(self, i)
            }
            fn int(&self, i: usize) -> std::result::Result<i64, sqlx::Error> {
                Row::try_get(self, i)
            }
            fn real(&self, i: usize) -> std::result::Result<f64, sqlx::Error> {
                Row::try_get(self, i)
            }
        }
    };
}
row_like!(sqlx::sqlite::SqliteRow);
row_like!(sqlx::postgres::PgRow);

impl ControlStore {
    /// Store a new deployment and set what each of its hosts should run (a host's row
    /// keeps what it runs and ran before).
    pub async fn create_deployment(
        &self,
        d: &DeploymentRow,
        hosts: &[HostComponentRow],
    ) -> Result<()> {
        on_db!(&self.write, p, pg => {
            let mut tx = p.begin().await.map_err(db_err("storing a deployment"))?;
            sqlx::query(sql(pg, &format!("INSERT INTO deployments ({DEPLOYMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")))
                .bind(&d.id).bind(&d.tenant).bind(&d.name).bind(&d.version).bind(&d.sha256)
                .bind(&d.action).bind(&d.selector).bind(d.canary_percent).bind(d.soak_ms)
                .bind(d.max_failure_rate).bind(&d.state).bind(&d.detail).bind(d.created_at_ms)
                .bind(&d.created_by).bind(d.updated_at_ms)
                .execute(&mut *tx).await.map_err(db_err("storing a deployment"))?;
            for h in hosts {
                sqlx::query(sql(pg, &format!("INSERT INTO host_components ({HOST_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                    ON CONFLICT (host, name) DO UPDATE SET deployment = excluded.deployment, action = excluded.action, \
                    sha256 = excluded.sha256, version = excluded.version, canary = excluded.canary, state = excluded.state, \
                    detail = excluded.detail, updated_at_ms = excluded.updated_at_ms \
                    WHERE host_components.tenant = excluded.tenant")))
                    .bind(&h.tenant).bind(&h.host).bind(&h.name).bind(&h.deployment).bind(&h.action)
                    .bind(&h.sha256).bind(&h.version).bind(h.canary as i64).bind(&h.state).bind(&h.detail)
                    .bind(&h.running_sha256).bind(&h.running_version).bind(&h.previous_sha256)
                    .bind(&h.previous_version).bind(h.deployed_at_ms).bind(h.updated_at_ms)
                    .execute(&mut *tx).await.map_err(db_err("storing a host's deployment"))?;
            }
            tx.commit().await.map_err(db_err("storing a deployment"))?;
        });
        Ok(())
    }

    /// `tenant`'s deployment `id`.
    pub async fn deployment(&self, tenant: &str, id: &str) -> Result<Option<DeploymentRow>> {
        on_db!(&self.write, p, pg => {
            let row = sqlx::query(sql(pg, &format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE tenant = ? AND id = ?")))
                .bind(tenant).bind(id)
                .fetch_optional(p).await.map_err(db_err("reading a deployment"))?;
            row.as_ref().map(deployment_row).transpose().map_err(db_err("reading a deployment"))
        })
    }

    /// Deployments, newest first: `tenant`'s (every tenant's with `None`), in `state`
    /// only when given, at most `limit`.
    pub async fn deployments(
        &self,
        tenant: Option<&str>,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeploymentRow>> {
        on_db!(&self.write, p, pg => {
            sqlx::query(sql(pg, &format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE (CAST(? AS TEXT) IS NULL OR tenant = ?) \
                AND (CAST(? AS TEXT) IS NULL OR state = ?) ORDER BY created_at_ms DESC, id LIMIT ?")))
                .bind(tenant).bind(tenant).bind(state).bind(state).bind(limit as i64)
                .fetch_all(p).await.map_err(db_err("listing deployments"))?
                .iter().map(deployment_row).collect::<std::result::Result<Vec<_>, _>>()
                .map_err(db_err("listing deployments"))
        })
    }

    /// Set deployment `id`'s state.
    pub async fn set_deployment_state(
        &self,
        id: &str,
        state: &str,
        detail: &str,
        now_ms: i64,
    ) -> Result<()> {
        on_db!(&self.write, p, pg => {
            sqlx::query(sql(pg, "UPDATE deployments SET state = ?, detail = ?, updated_at_ms = ? WHERE id = ?"))
                .bind(state).bind(detail).bind(now_ms).bind(id)
                .execute(p).await.map_err(db_err("updating a deployment"))?;
        });
        Ok(())
    }

    /// Claim deployment `id` for the process `me` until `until_ms`, unless another
    /// process holds a claim that has not expired by `now_ms`: whether `me` holds it now.
    /// Only the holder sends a deployment's jobs and judges it, so control planes sharing
    /// one database never do a step twice; a holder that died is replaced once its claim
    /// expires.
    pub async fn claim_deployment(
        &self,
        id: &str,
        me: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool> {
        on_db!(&self.write, p, pg => {
            Ok(sqlx::query(sql(pg, "UPDATE deployments SET claimed_by = ?, claimed_until_ms = ? \
                WHERE id = ? AND (claimed_by = ? OR claimed_until_ms < ?)"))
                .bind(me).bind(until_ms).bind(id).bind(me).bind(now_ms)
                .execute(p).await.map_err(db_err("claiming a deployment"))?
                .rows_affected() == 1)
        })
    }

    /// Host rows: of deployment `deployment` when given, else of `tenant` (every
    /// tenant's with `None`), by host and name.
    pub async fn host_components(
        &self,
        tenant: Option<&str>,
        deployment: Option<&str>,
    ) -> Result<Vec<HostComponentRow>> {
        on_db!(&self.write, p, pg => {
            sqlx::query(sql(pg, &format!("SELECT {HOST_COLUMNS} FROM host_components \
                WHERE (CAST(? AS TEXT) IS NULL OR tenant = ?) AND (CAST(? AS TEXT) IS NULL OR deployment = ?) ORDER BY host, name")))
                .bind(tenant).bind(tenant).bind(deployment).bind(deployment)
                .fetch_all(p).await.map_err(db_err("listing hosts' components"))?
                .iter().map(host_row).collect::<std::result::Result<Vec<_>, _>>()
                .map_err(db_err("listing hosts' components"))
        })
    }

    /// Set the state of `host`'s row for `name`, if deployment `deployment` still
    /// decides it. Returns whether it did.
    pub async fn set_host_component_state(
        &self,
        host: &str,
        name: &str,
        deployment: &str,
        state: &str,
        detail: &str,
        now_ms: i64,
    ) -> Result<bool> {
        on_db!(&self.write, p, pg => {
            Ok(sqlx::query(sql(pg, "UPDATE host_components SET state = ?, detail = ?, updated_at_ms = ? \
                WHERE host = ? AND name = ? AND deployment = ?"))
                .bind(state).bind(detail).bind(now_ms).bind(host).bind(name).bind(deployment)
                .execute(p).await.map_err(db_err("updating a host's deployment"))?
                .rows_affected() == 1)
        })
    }

    /// `host` took what deployment `deployment` wanted under `name`: it now runs
    /// `sha256` (`version`). A deployment keeps what ran before to roll back to; a
    /// rollback uses that up (rolling back again goes to the host's own version), so a
    /// rollback never brings back what it rolled back from.
    #[allow(clippy::too_many_arguments)]
    pub async fn host_component_deployed(
        &self,
        host: &str,
        name: &str,
        deployment: &str,
        sha256: &str,
        version: &str,
        detail: &str,
        now_ms: i64,
    ) -> Result<bool> {
        on_db!(&self.write, p, pg => {
            Ok(sqlx::query(sql(pg, "UPDATE host_components SET \
                previous_sha256 = CASE WHEN action <> 'deploy' THEN '' WHEN running_sha256 = ? THEN previous_sha256 ELSE running_sha256 END, \
                previous_version = CASE WHEN action <> 'deploy' THEN '' WHEN running_sha256 = ? THEN previous_version ELSE running_version END, \
                running_sha256 = ?, running_version = ?, state = 'deployed', detail = ?, deployed_at_ms = ?, updated_at_ms = ? \
                WHERE host = ? AND name = ? AND deployment = ?"))
                .bind(sha256).bind(sha256).bind(sha256).bind(version).bind(detail).bind(now_ms).bind(now_ms)
                .bind(host).bind(name).bind(deployment)
                .execute(p).await.map_err(db_err("noting a host's deployment"))?
                .rows_affected() == 1)
        })
    }

    /// What `host` runs under `name` by its own word (its heartbeat): `sha256` and
    /// `version` (empty: nothing deployed), with `state` and `detail`.
    #[allow(clippy::too_many_arguments)]
    pub async fn host_component_runs(
        &self,
        host: &str,
        name: &str,
        deployment: &str,
        sha256: &str,
        version: &str,
        state: &str,
        detail: &str,
        now_ms: i64,
    ) -> Result<bool> {
        on_db!(&self.write, p, pg => {
            Ok(sqlx::query(sql(pg, "UPDATE host_components SET running_sha256 = ?, running_version = ?, \
                state = ?, detail = ?, updated_at_ms = ? WHERE host = ? AND name = ? AND deployment = ?"))
                .bind(sha256).bind(version).bind(state).bind(detail).bind(now_ms)
                .bind(host).bind(name).bind(deployment)
                .execute(p).await.map_err(db_err("noting what a host runs"))?
                .rows_affected() == 1)
        })
    }

    /// Runs of `runbook` on `host` since `since_ms` that were not dry runs: (how many,
    /// how many did not heal or find nothing to do).
    pub async fn runs_since(&self, host: &str, runbook: &str, since_ms: i64) -> Result<(u64, u64)> {
        self.flush().await?;
        on_db!(&self.db, p, pg => {
            let r = sqlx::query(sql(pg, "SELECT COUNT(*), COALESCE(SUM(CASE WHEN status IN ('healed', 'no-op') THEN 0 ELSE 1 END), 0) \
                FROM runs WHERE host = ? AND runbook = ? AND at_ms >= ? AND dry_run = ?"))
                .bind(host).bind(runbook).bind(since_ms).bind(false)
                .fetch_one(p).await.map_err(db_err("counting runs"))?;
            let total: i64 = r.try_get(0).map_err(db_err("counting runs"))?;
            let failed: i64 = r.try_get(1).map_err(db_err("counting runs"))?;
            Ok((total.max(0) as u64, failed.max(0) as u64))
        })
    }

    /// Store `rows` as they are now (a host's state and target, by host and name).
    pub async fn update_host_components(&self, rows: &[HostComponentRow]) -> Result<()> {
        on_db!(&self.write, p, pg => {
            let mut tx = p.begin().await.map_err(db_err("updating hosts' deployments"))?;
            for r in rows {
                sqlx::query(sql(pg, "UPDATE host_components SET action = ?, sha256 = ?, version = ?, state = ?, detail = ?, updated_at_ms = ? \
                    WHERE host = ? AND name = ? AND deployment = ?"))
                    .bind(&r.action).bind(&r.sha256).bind(&r.version).bind(&r.state).bind(&r.detail).bind(r.updated_at_ms)
                    .bind(&r.host).bind(&r.name).bind(&r.deployment)
                    .execute(&mut *tx).await.map_err(db_err("updating hosts' deployments"))?;
            }
            tx.commit().await.map_err(db_err("updating hosts' deployments"))?;
        });
        Ok(())
    }
}
