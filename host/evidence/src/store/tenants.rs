//! Each tenant's view of the database's own log.
//!
//! The control plane's log is shared: every tenant's decisions go into it. A tenant's
//! bundle cannot hold the whole log (the other tenants' records are not the tenant's to
//! see), and a filtered share of it proves nothing about what was left out. So the store
//! keeps, per tenant, the records made for that tenant (as each record's signed statement
//! names it) in log order, numbered from 0: an append-only list whose Merkle tree the log's
//! own key signs under the origin [`tenant_origin`]. A bundle holding a view's records
//! `0..n` against a signed checkpoint of size `n` proves it holds every record of the
//! tenant's share up to that checkpoint; checkpoints of a view are kept, and later ones
//! proved consistent with them, as for the log itself.
//!
//! The views are derived from the log and caught up when asked ([`Store::tenant_view`]),
//! a transaction per page of records; concurrent catch-ups (two control planes on one
//! PostgreSQL) take turns on the one row that says how far the views reach.

use super::origins::numbered;
use super::{Db, Leaves, StoredRecord, db_err, now_ms, row_to_record};
use crate::error::{Error, Result};
use crate::merkle::Hash;
use sqlx::Connection;

/// Records read per catch-up transaction.
const PAGE: i64 = 4096;

/// The origin under which the view of `tenant` of the log `origin` is signed.
pub fn tenant_origin(origin: &str, tenant: &str) -> String {
    format!("{origin}/tenant/{tenant}")
}

/// Whether `tenant` can name a view: 1 to 128 of letters, digits and `- _ . @ :` (what an
/// incident's tenant may be).
pub fn valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= 128
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@' | b':'))
}

/// The tenant a record's signed statement names (`predicate.tenant`), read leniently (a
/// statement of a newer runwarden, with fields this one does not know, still names one);
/// `None` when the record is not a DSSE envelope of a JSON statement with a tenant.
pub(crate) fn tenant_in(envelope: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        predicate: Tenant,
    }
    #[derive(serde::Deserialize)]
    struct Tenant {
        tenant: String,
    }
    let json = std::str::from_utf8(envelope).ok()?;
    let env = crate::dsse::Envelope::from_json(json).ok()?;
    let payload = env.payload().ok()?;
    serde_json::from_slice::<Named>(&payload)
        .ok()
        .map(|n| n.predicate.tenant)
}

/// Catch the views up by one page of the log, inside transaction `$tx`; `$sql` adapts the
/// placeholders. Evaluates to whether there is more to do.
macro_rules! catch_up_in {
    ($tx:ident, $sql:expr, $lock:expr) => {{
        async {
            let scanned: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe($sql($lock)))
                .fetch_one(&mut *$tx)
                .await
                .map_err(db_err("reading how far the tenant views reach"))?;
            let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe($sql(
                "SELECT idx, envelope FROM evidence_log WHERE idx >= ? AND idx < ? ORDER BY idx",
            )))
            .bind(scanned)
            .bind(scanned + PAGE)
            .fetch_all(&mut *$tx)
            .await
            .map_err(db_err("reading records for the tenant views"))?;
            let mut next: std::collections::HashMap<String, i64> = Default::default();
            let mut reached = scanned;
            for (idx, envelope) in &rows {
                if *idx != reached {
                    return Err(Error::Store(format!(
                        "the log has no record {reached} (the next is {idx}): the evidence database is damaged"
                    )));
                }
                reached += 1;
                // The log's own records are this control plane's statements: one that
                // names no tenant is damage, and the views stop before it (a record
                // skipped here would be missing from its tenant's view for good).
                let Some(tenant) = tenant_in(envelope) else {
                    return Err(Error::MalformedRecord(format!(
                        "record {idx} of the log is not a statement that names a tenant: the evidence database is damaged"
                    )));
                };
                // A name no tenant can have is no tenant's (such a record cannot be
                // made through the API, which checks names).
                if !valid_tenant(&tenant) {
                    continue;
                }
                let seq = match next.get(&tenant) {
                    Some(s) => *s,
                    None => sqlx::query_scalar(sqlx::AssertSqlSafe($sql(
                        "SELECT COALESCE(MAX(seq) + 1, 0) FROM tenant_leaves WHERE tenant = ?",
                    )))
                    .bind(&tenant)
                    .fetch_one(&mut *$tx)
                    .await
                    .map_err(db_err("reading a tenant view"))?,
                };
                sqlx::query(sqlx::AssertSqlSafe($sql(
                    "INSERT INTO tenant_leaves (tenant, seq, idx) VALUES (?, ?, ?)",
                )))
                .bind(&tenant)
                .bind(seq)
                .bind(*idx)
                .execute(&mut *$tx)
                .await
                .map_err(db_err("writing a tenant view"))?;
                next.insert(tenant, seq + 1);
            }
            sqlx::query(sqlx::AssertSqlSafe($sql(
                "UPDATE tenant_views SET scanned = ? WHERE singleton = 0",
            )))
            .bind(reached)
            .execute(&mut *$tx)
            .await
            .map_err(db_err("writing how far the tenant views reach"))?;
            Ok::<bool, Error>(rows.len() as i64 == PAGE)
        }
        .await
    }};
}

fn same(sql: &str) -> String {
    sql.to_string()
}

impl super::Store {
    /// Catch every tenant's view up with the log, then the size of `tenant`'s.
    pub async fn tenant_view(&self, tenant: &str) -> Result<u64> {
        if !valid_tenant(tenant) {
            return Err(Error::MalformedRecord(format!(
                "tenant {:?}: a tenant is 1 to 128 of letters, digits and - _ . @ :",
                crate::text::escape_control(tenant)
            )));
        }
        loop {
            let more = match &self.db {
                Db::Sqlite(p) => {
                    let mut conn = p
                        .acquire()
                        .await
                        .map_err(db_err("acquiring a connection"))?;
                    let mut tx = conn
                        .begin_with("BEGIN IMMEDIATE")
                        .await
                        .map_err(db_err("beginning a tenant view update"))?;
                    let more = catch_up_in!(
                        tx,
                        same,
                        "SELECT scanned FROM tenant_views WHERE singleton = 0"
                    )?;
                    tx.commit()
                        .await
                        .map_err(db_err("committing a tenant view update"))?;
                    more
                }
                Db::Postgres(p) => {
                    let mut tx = p
                        .begin()
                        .await
                        .map_err(db_err("beginning a tenant view update"))?;
                    let more = catch_up_in!(
                        tx,
                        numbered,
                        "SELECT scanned FROM tenant_views WHERE singleton = 0 FOR UPDATE"
                    )?;
                    tx.commit()
                        .await
                        .map_err(db_err("committing a tenant view update"))?;
                    more
                }
            };
            if !more {
                break;
            }
        }
        let n = self
            .tenant_ints(
                "SELECT COUNT(*) FROM tenant_leaves WHERE tenant = ?",
                tenant,
                "reading a tenant view",
            )
            .await?;
        Ok(n.first().copied().unwrap_or(0) as u64)
    }

    /// The integers `sql` selects, its one parameter `tenant`.
    async fn tenant_ints(&self, sql: &str, tenant: &str, what: &'static str) -> Result<Vec<i64>> {
        match &self.db {
            Db::Sqlite(p) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
                    .bind(tenant)
                    .fetch_all(p)
                    .await
            }
            Db::Postgres(p) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(numbered(sql)))
                    .bind(tenant)
                    .fetch_all(p)
                    .await
            }
        }
        .map_err(db_err(what))
    }

    /// Records `from..to` of `tenant`'s view (as far as [`Store::tenant_view`] caught it
    /// up), each with its place in the view as its index.
    pub async fn tenant_range(
        &self,
        tenant: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<StoredRecord>> {
        // As `row_to_record` reads them, the place in the view first.
        let sql = "SELECT t.seq, l.leaf_hash, l.envelope, l.invocation_id, l.host_id, l.runbook, \
                   l.status, l.started_at_ms, l.recorded_at_ms \
                   FROM tenant_leaves t JOIN evidence_log l ON l.idx = t.idx \
                   WHERE t.tenant = ? AND t.seq >= ? AND t.seq < ? ORDER BY t.seq";
        let (f, t) = (
            from.min(i64::MAX as u64) as i64,
            to.min(i64::MAX as u64) as i64,
        );
        let read = db_err("reading a tenant view's records");
        let records: Vec<StoredRecord> = match &self.db {
            Db::Sqlite(p) => {
                let rows = sqlx::query(sql)
                    .bind(tenant)
                    .bind(f)
                    .bind(t)
                    .fetch_all(p)
                    .await
                    .map_err(read)?;
                rows.iter().map(row_to_record).collect::<Result<_>>()?
            }
            Db::Postgres(p) => {
                let rows = sqlx::query(sqlx::AssertSqlSafe(numbered(sql)))
                    .bind(tenant)
                    .bind(f)
                    .bind(t)
                    .fetch_all(p)
                    .await
                    .map_err(read)?;
                rows.iter().map(row_to_record).collect::<Result<_>>()?
            }
        };
        if records.len() as u64 != to.saturating_sub(from)
            || records.iter().zip(from..).any(|(r, i)| r.index != i)
        {
            return Err(Error::Store(format!(
                "the view of tenant {tenant} lacks some of its records {from}..{to}: the evidence database is damaged"
            )));
        }
        Ok(records)
    }

    /// Keep a signed checkpoint of `tenant`'s view.
    pub async fn put_tenant_checkpoint(
        &self,
        tenant: &str,
        size: u64,
        root: &Hash,
        note: &str,
    ) -> Result<()> {
        let sql = "INSERT INTO tenant_checkpoints (tenant, size, root, note, created_at_ms) VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant, size) DO NOTHING";
        let write = db_err("keeping a tenant view's checkpoint");
        match &self.db {
            Db::Sqlite(p) => sqlx::query(sql)
                .bind(tenant)
                .bind(size as i64)
                .bind(root.as_slice())
                .bind(note)
                .bind(now_ms())
                .execute(p)
                .await
                .map(|_| ()),
            Db::Postgres(p) => sqlx::query(sqlx::AssertSqlSafe(numbered(sql)))
                .bind(tenant)
                .bind(size as i64)
                .bind(root.as_slice())
                .bind(note)
                .bind(now_ms())
                .execute(p)
                .await
                .map(|_| ()),
        }
        .map_err(write)
    }

    /// The sizes of the checkpoints kept of `tenant`'s view, smallest first.
    pub async fn tenant_checkpoint_sizes(&self, tenant: &str) -> Result<Vec<u64>> {
        let sizes = self
            .tenant_ints(
                "SELECT size FROM tenant_checkpoints WHERE tenant = ? ORDER BY size",
                tenant,
                "reading a tenant view's checkpoints",
            )
            .await?;
        Ok(sizes.into_iter().map(|s| s as u64).collect())
    }

    /// Leaf hashes `from..to` of `tenant`'s view.
    pub(super) async fn tenant_leaf_hash_range(
        &self,
        tenant: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<Hash>> {
        let sql = "SELECT l.leaf_hash FROM tenant_leaves t JOIN evidence_log l ON l.idx = t.idx \
                   WHERE t.tenant = ? AND t.seq >= ? AND t.seq < ? ORDER BY t.seq";
        let (f, t) = (
            from.min(i64::MAX as u64) as i64,
            to.min(i64::MAX as u64) as i64,
        );
        let read = db_err("reading a tenant view's leaves");
        let hashes: Vec<Vec<u8>> = match &self.db {
            Db::Sqlite(p) => {
                sqlx::query_scalar(sql)
                    .bind(tenant)
                    .bind(f)
                    .bind(t)
                    .fetch_all(p)
                    .await
            }
            Db::Postgres(p) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(numbered(sql)))
                    .bind(tenant)
                    .bind(f)
                    .bind(t)
                    .fetch_all(p)
                    .await
            }
        }
        .map_err(read)?;
        hashes
            .into_iter()
            .map(|h| {
                h.try_into()
                    .map_err(|_| Error::Store("a tenant view's leaf has a malformed hash".into()))
            })
            .collect()
    }

    /// The root of `tenant`'s view's first `size` leaves, hashed as they are read.
    pub async fn tenant_root(&self, tenant: &str, size: u64) -> Result<Hash> {
        let mut tree = crate::merkle::CompactTree::new();
        self.extend_tree_of(Leaves::Tenant(tenant), &mut tree, size)
            .await?;
        Ok(tree.root())
    }

    /// The consistency proof of `tenant`'s view from `old_size` to `size`.
    pub async fn tenant_consistency_proof(
        &self,
        tenant: &str,
        old_size: u64,
        size: u64,
    ) -> Result<Vec<Hash>> {
        self.consistency_proof_of(Leaves::Tenant(tenant), old_size, size)
            .await
    }
}
