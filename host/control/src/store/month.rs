//! What a tenant's month holds, for the monthly report: its incidents, runs and
//! escalations, read a page at a time.

use super::{ControlStore, Db, Result, StoreError, db_err, from_db, sql};
use sqlx::Row;

/// An incident as the monthly report counts it.
#[derive(Clone, Debug, PartialEq)]
pub struct MonthIncident {
    /// Id.
    pub id: String,
    /// Host.
    pub host: String,
    /// Incident type (`disk-full`).
    pub kind: String,
    /// Service, or empty.
    pub service: String,
    /// The tier that holds it (`L1`, `L2`, `L3`).
    pub tier: String,
    /// Where it stands (`healed`, `escalated`, …).
    pub status: String,
    /// When it was received (ms).
    pub received_at_ms: i64,
}

/// A run as the monthly report counts it.
#[derive(Clone, Debug, PartialEq)]
pub struct MonthRun {
    /// Its incident.
    pub incident_id: String,
    /// Host.
    pub host: String,
    /// How it ended.
    pub status: String,
    /// Who decided it.
    pub tier: String,
    /// A dry run.
    pub dry_run: bool,
    /// When it ended (ms).
    pub at_ms: i64,
}

/// An escalation as the monthly report counts it.
#[derive(Clone, Debug, PartialEq)]
pub struct MonthEscalation {
    /// Host.
    pub host: String,
    /// Its state now.
    pub state: String,
    /// Opened (ms).
    pub created_at_ms: i64,
    /// Due (ms).
    pub sla_deadline_ms: i64,
    /// Who decided.
    pub decided_by: String,
    /// When (ms).
    pub decided_at_ms: Option<i64>,
}

/// Rows read at a time.
const PAGE: i64 = 2000;

#[derive(serde::Deserialize)]
struct Facts<'a> {
    #[serde(borrow)]
    tier: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    incident: IncidentFacts<'a>,
}

#[derive(serde::Deserialize)]
struct IncidentFacts<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    service: Option<std::borrow::Cow<'a, str>>,
}

impl ControlStore {
    /// `tenant`'s incidents received in `[from_ms, to_ms)`, oldest first, each handed to
    /// `each` (read a page at a time: memory does not grow with the month). Returns how
    /// many.
    pub async fn month_incidents(
        &self,
        tenant: &str,
        from_ms: i64,
        to_ms: i64,
        mut each: impl FnMut(MonthIncident),
    ) -> Result<u64> {
        self.flush().await?;
        // Ids are never empty: (from_ms, "") comes before every incident of the month.
        let mut after: (i64, String) = (from_ms, String::new());
        let mut count = 0;
        loop {
            let rows: Vec<(String, String, String, i64, String)> = on_db!(&self.db, p, pg => {
                sqlx::query(sql(pg, "SELECT id, host, status, received_at_ms, record FROM incidents \
                    WHERE tenant = ? AND received_at_ms < ? AND (received_at_ms > ? OR (received_at_ms = ? AND id > ?)) \
                    ORDER BY received_at_ms, id LIMIT ?"))
                    .bind(tenant).bind(to_ms).bind(after.0).bind(after.0).bind(&after.1).bind(PAGE)
                    .fetch_all(p).await.map_err(db_err("reading the month's incidents"))?
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?)))
                    .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
                    .map_err(db_err("reading the month's incidents"))?
            });
            let n = rows.len() as i64;
            for (id, host, status, received_at_ms, record) in rows {
                let facts: Facts = serde_json::from_str(&record).map_err(|e| {
                    StoreError(format!("incident {id} has a malformed record: {e}"))
                })?;
                each(MonthIncident {
                    host,
                    kind: facts.incident.kind.into_owned(),
                    service: facts
                        .incident
                        .service
                        .map(|s| s.into_owned())
                        .unwrap_or_default(),
                    tier: facts.tier.into_owned(),
                    status,
                    received_at_ms,
                    id: id.clone(),
                });
                after = (received_at_ms, id);
                count += 1;
            }
            if n < PAGE {
                return Ok(count);
            }
        }
    }

    /// `tenant`'s runs that ended in `[from_ms, to_ms)`, oldest first.
    pub async fn month_runs(
        &self,
        tenant: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<MonthRun>> {
        self.flush().await?;
        on_db!(&self.db, p, pg => {
            sqlx::query(sql(pg, "SELECT incident_id, host, status, tier, dry_run, at_ms FROM runs \
                WHERE tenant = ? AND at_ms >= ? AND at_ms < ? ORDER BY at_ms"))
                .bind(tenant).bind(from_ms).bind(to_ms)
                .fetch_all(p).await.map_err(db_err("reading the month's runs"))?
                .iter()
                .map(|r| Ok(MonthRun {
                    incident_id: r.try_get(0)?,
                    host: r.try_get(1)?,
                    status: r.try_get(2)?,
                    tier: r.try_get(3)?,
                    dry_run: r.try_get(4)?,
                    at_ms: r.try_get(5)?,
                }))
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
                .map_err(db_err("reading the month's runs"))
        })
    }

    /// `tenant`'s escalations opened in `[from_ms, to_ms)`, oldest first.
    pub async fn month_escalations(
        &self,
        tenant: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<MonthEscalation>> {
        self.flush().await?;
        on_db!(&self.db, p, pg => {
            sqlx::query(sql(pg, "SELECT host, state, created_at_ms, sla_deadline_ms, decided_by, decided_at_ms FROM escalations \
                WHERE tenant = ? AND created_at_ms >= ? AND created_at_ms < ? ORDER BY created_at_ms, id"))
                .bind(tenant).bind(from_ms).bind(to_ms)
                .fetch_all(p).await.map_err(db_err("reading the month's escalations"))?
                .iter()
                .map(|r| Ok(MonthEscalation {
                    host: from_db(pg, r.try_get(0)?),
                    state: r.try_get(1)?,
                    created_at_ms: r.try_get(2)?,
                    sla_deadline_ms: r.try_get(3)?,
                    decided_by: from_db(pg, r.try_get(4)?),
                    decided_at_ms: r.try_get(5)?,
                }))
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
                .map_err(db_err("reading the month's escalations"))
        })
    }
}
