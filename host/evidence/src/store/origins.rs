//! One signer per log, and the logs of other signers mirrored beside it.
//!
//! A database's own log is signed by one key under one origin ([`Store::claim`]): the
//! control plane's key in a server, the host's key on an agent. A Merkle log with two
//! signers proves nothing — each would sign checkpoints of a tree the other also writes —
//! so a second key or origin is refused, and so is a checkpoint note the claimed key did
//! not sign.
//!
//! Every other log (each host's, at the control plane) is mirrored per origin
//! ([`Store::mirror`]): a [`Segment`] of consecutive records with the signed checkpoint
//! that covers them is taken only if the checkpoint and every record verify under the
//! log's key, the segment starts where the mirror ends, the records it repeats are the ones
//! held, and the held records plus the new ones have exactly the checkpoint's root. A
//! segment that starts past the end is a gap ([`Error::LogGap`]: a record is missing, e.g.
//! deleted from an agent's buffer); one that disagrees with what is held is a fork
//! ([`Error::LogFork`]). Either is refused whole, and nothing of it is stored.

use super::{Db, StoredRecord, db_err, now_ms, row_to_record};
use crate::checkpoint::Checkpoint;
use crate::dsse::Envelope;
use crate::error::{Error, Result};
use crate::keys::VerifyingKey;
use crate::merkle::{CompactTree, Hash, leaf_hash};
use crate::record::Statement;
use sqlx::Connection;

/// Most records one segment may carry.
pub const MAX_SEGMENT_RECORDS: usize = 4096;

/// Consecutive records of a log, from index `first`, with the signed checkpoint of the log
/// at `first + envelopes.len()` records.
#[derive(Clone, Debug)]
pub struct Segment {
    /// The log's origin (`runwarden/HOST`).
    pub origin: String,
    /// Index of the first record.
    pub first: u64,
    /// The DSSE envelopes, exactly as signed.
    pub envelopes: Vec<Vec<u8>>,
    /// The signed checkpoint note of the log at `first + envelopes.len()` records.
    pub checkpoint: String,
}

/// What a mirrored segment added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirrored {
    /// Records new to the mirror.
    pub added: u64,
    /// Records of the log the mirror now holds.
    pub size: u64,
}

/// The head of a mirrored log.
#[derive(Clone, Debug)]
pub struct MirrorHead {
    /// The log's origin.
    pub origin: String,
    /// Its signer's key.
    pub key: VerifyingKey,
    /// Records held.
    pub size: u64,
    /// The signed checkpoint of `size`.
    pub note: String,
}

/// `sql` with `?` placeholders numbered for PostgreSQL (`$1`, `$2`, …).
pub(super) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// The columns a mirrored record is found by, read from its signed statement.
struct Columns {
    invocation_id: String,
    host_id: String,
    runbook: String,
    status: String,
    started_at_ms: i64,
}

fn columns(env: &Envelope) -> Result<Columns> {
    let st = Statement::from_envelope(env)?;
    let p = &st.predicate;
    Ok(Columns {
        invocation_id: p.invocation_id.clone(),
        host_id: p.host_id.clone(),
        runbook: st
            .subject
            .first()
            .map(|s| s.name.clone())
            .unwrap_or_default(),
        status: p.outcome["status"]
            .as_str()
            .unwrap_or("unknown")
            .to_string(),
        started_at_ms: parse_rfc3339_ms(&p.started_at).ok_or_else(|| {
            Error::MalformedRecord(format!("started_at {:?} is not a time", p.started_at))
        })?,
    })
}

/// `YYYY-MM-DDTHH:MM:SS(.mmm)Z` as ms since the epoch (the form records are written in).
fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !s.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let ms = match &s[19..s.len() - 1] {
        "" => 0,
        frac if frac.len() == 4 && frac.starts_with('.') => frac[1..].parse().ok()?,
        _ => return None,
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (H. Hinnant), the inverse of `rfc3339_ms`.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + ms)
}

/// The identity row: origin, key name, key id (hex), public key.
type IdentityRow = (String, String, String, Vec<u8>);

/// The head row of a mirrored log: key name, public key, size, frontier, note.
type HeadRow = (String, Vec<u8>, i64, Vec<u8>, String);

fn key_of(name: &str, public: &[u8]) -> Result<VerifyingKey> {
    let bytes: [u8; 32] = public
        .try_into()
        .map_err(|_| Error::Store(format!("the stored public key of {name} is malformed")))?;
    VerifyingKey::from_bytes(name, &bytes)
}

/// The body of [`Store::mirror`] inside a transaction `$tx` of either database; `$sql`
/// turns `?`-placeholder SQL into the database's own.
macro_rules! mirror_in {
    ($tx:ident, $key:ident, $segment:ident, $cp:ident, $rows:ident, $sql:expr) => {{
        async {
            let origin = $segment.origin.as_str();
            let head: Option<HeadRow> = sqlx::query_as(sqlx::AssertSqlSafe($sql(
                "SELECT key_name, public_key, size, frontier, note FROM mirrored_logs WHERE origin = ?",
            )))
            .bind(origin)
            .fetch_optional(&mut *$tx)
            .await
            .map_err(db_err("reading a mirrored log"))?;
            let (held, mut tree) = match &head {
                None => (0u64, CompactTree::new()),
                Some((name, public, size, frontier, _)) => {
                    let pinned = key_of(name, public)?;
                    if pinned.to_bytes() != $key.to_bytes() {
                        return Err(Error::ForeignSigner {
                            held: format!("{origin} (key {})", pinned.label()),
                            claimed: format!("{origin} (key {})", $key.label()),
                        });
                    }
                    let hashes = frontier
                        .chunks(32)
                        .map(|c| Hash::try_from(c).map_err(|_| Error::Store(format!("the frontier of {origin} is malformed"))))
                        .collect::<Result<Vec<_>>>()?;
                    (*size as u64, CompactTree::from_frontier(*size as u64, hashes)?)
                }
            };
            if $segment.first > held {
                return Err(Error::LogGap {
                    origin: origin.to_string(),
                    held,
                    first: $segment.first,
                });
            }
            // What the segment repeats must be what is held.
            let overlap_end = held.min($cp.size);
            if $segment.first < overlap_end {
                let stored: Vec<(i64, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe($sql(
                    "SELECT idx, leaf_hash FROM mirrored_records WHERE origin = ? AND idx >= ? AND idx < ? ORDER BY idx",
                )))
                .bind(origin)
                .bind($segment.first as i64)
                .bind(overlap_end as i64)
                .fetch_all(&mut *$tx)
                .await
                .map_err(db_err("reading mirrored records"))?;
                for (i, (index, _, _, _)) in $rows.iter().take((overlap_end - $segment.first) as usize).enumerate() {
                    let same = stored
                        .get(i)
                        .is_some_and(|(idx, h)| *idx as u64 == *index && h.as_slice() == $rows[i].1.as_slice());
                    if !same {
                        return Err(Error::LogFork {
                            origin: origin.to_string(),
                            index: *index,
                            detail: "the record differs from the one held at this index".into(),
                        });
                    }
                }
            }
            if $cp.size <= held {
                // Nothing new. A checkpoint of a size already passed must still be of the
                // same tree: its records were compared above.
                return Ok(Mirrored { added: 0, size: held });
            }
            let fresh: Vec<_> = $rows.iter().filter(|r| r.0 >= held).collect();
            for r in &fresh {
                tree.append(r.1);
            }
            if tree.root() != $cp.root {
                return Err(Error::LogFork {
                    origin: origin.to_string(),
                    index: held,
                    detail: format!(
                        "the records held and the segment's give another root than the log's signed checkpoint at {} records",
                        $cp.size
                    ),
                });
            }
            let now = now_ms();
            for chunk in fresh.chunks(100) {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO mirrored_records (origin, idx, leaf_hash, envelope, invocation_id, host_id, runbook, status, started_at_ms, recorded_at_ms) ",
                );
                q.push_values(chunk.iter(), |mut b, r| {
                    b.push_bind(origin.to_string())
                        .push_bind(r.0 as i64)
                        .push_bind(r.1.to_vec())
                        .push_bind(r.2.clone())
                        .push_bind(r.3.invocation_id.clone())
                        .push_bind(r.3.host_id.clone())
                        .push_bind(r.3.runbook.clone())
                        .push_bind(r.3.status.clone())
                        .push_bind(r.3.started_at_ms)
                        .push_bind(now);
                });
                q.build()
                    .execute(&mut *$tx)
                    .await
                    .map_err(|e| Error::LogFork {
                        origin: origin.to_string(),
                        index: held,
                        detail: format!("storing the segment failed ({e}): an invocation id repeats in the log"),
                    })?;
            }
            let frontier: Vec<u8> = tree.frontier().iter().flatten().copied().collect();
            sqlx::query(sqlx::AssertSqlSafe($sql(
                "INSERT INTO mirrored_logs (origin, key_name, key_id, public_key, size, root, frontier, note, updated_at_ms) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (origin) DO UPDATE SET \
                 size = excluded.size, root = excluded.root, frontier = excluded.frontier, note = excluded.note, \
                 updated_at_ms = excluded.updated_at_ms",
            )))
            .bind(origin)
            .bind($key.name())
            .bind($key.key_id_hex())
            .bind($key.to_bytes().to_vec())
            .bind($cp.size as i64)
            .bind($cp.root.to_vec())
            .bind(frontier)
            .bind($segment.checkpoint.as_str())
            .bind(now)
            .execute(&mut *$tx)
            .await
            .map_err(db_err("storing a mirrored log's head"))?;
            Ok(Mirrored {
                added: fresh.len() as u64,
                size: $cp.size,
            })
        }
        .await
    }};
}

impl super::Store {
    /// Claim this database's own log for `origin`, signed by `key`. The first claim is
    /// recorded (after checking that the checkpoints already stored, if any, are `key`'s
    /// under `origin`); a later claim by another key or origin is refused
    /// ([`Error::ForeignSigner`]), and so is every checkpoint not signed by the claimed key.
    pub async fn claim(&self, origin: &str, key: &VerifyingKey) -> Result<()> {
        if let Some(held) = self.identity().await? {
            let (o, k) = held;
            if o != origin || k.to_bytes() != key.to_bytes() {
                return Err(Error::ForeignSigner {
                    held: format!("{o} (key {})", k.label()),
                    claimed: format!("{origin} (key {})", key.label()),
                });
            }
            return Ok(());
        }
        if let Some((_, note)) = self.checkpoint_at_most(i64::MAX as u64).await? {
            let ok = Checkpoint::parse(&note, std::slice::from_ref(key))
                .is_ok_and(|cp| cp.origin == origin);
            if !ok {
                let held = Checkpoint::parse_unverified(&note)
                    .map(|cp| cp.origin)
                    .unwrap_or_else(|_| "an unreadable checkpoint".into());
                return Err(Error::ForeignSigner {
                    held: format!("{held} (its stored checkpoints are signed by another key)"),
                    claimed: format!("{origin} (key {})", key.label()),
                });
            }
        }
        let (o, n, id, pk, t) = (
            origin.to_string(),
            key.name().to_string(),
            key.key_id_hex(),
            key.to_bytes().to_vec(),
            now_ms(),
        );
        let sql = "INSERT INTO log_identity (singleton, origin, key_name, key_id, public_key, created_at_ms) \
                   VALUES (0, ?, ?, ?, ?, ?) ON CONFLICT (singleton) DO NOTHING";
        match &self.db {
            Db::Sqlite(p) => sqlx::query(sql)
                .bind(o)
                .bind(n)
                .bind(id)
                .bind(pk)
                .bind(t)
                .execute(p)
                .await
                .map(|_| ()),
            Db::Postgres(p) => sqlx::query(sqlx::AssertSqlSafe(numbered(sql)))
                .bind(o)
                .bind(n)
                .bind(id)
                .bind(pk)
                .bind(t)
                .execute(p)
                .await
                .map(|_| ()),
        }
        .map_err(db_err("claiming the log"))?;
        // Two claimants raced: whoever won must be this one.
        Box::pin(self.claim(origin, key)).await
    }

    /// Who signs this database's own log, once claimed: origin and key.
    pub async fn identity(&self) -> Result<Option<(String, VerifyingKey)>> {
        let sql =
            "SELECT origin, key_name, key_id, public_key FROM log_identity WHERE singleton = 0";
        let row: Option<IdentityRow> = match &self.db {
            Db::Sqlite(p) => sqlx::query_as(sql).fetch_optional(p).await,
            Db::Postgres(p) => sqlx::query_as(sql).fetch_optional(p).await,
        }
        .map_err(db_err("reading the log's signer"))?;
        row.map(|(origin, name, _, public)| Ok((origin, key_of(&name, &public)?)))
            .transpose()
    }

    /// Refuse `note` unless it is a checkpoint of this log's claimed signer (a log not
    /// claimed yet takes any: it is checked when claimed).
    pub(super) async fn check_signer(&self, note: &str) -> Result<()> {
        let Some((origin, key)) = self.identity().await? else {
            return Ok(());
        };
        let cp = Checkpoint::parse(note, std::slice::from_ref(&key)).map_err(|e| {
            Error::ForeignSigner {
                held: format!("{origin} (key {})", key.label()),
                claimed: format!("a checkpoint this key did not sign ({e})"),
            }
        })?;
        if cp.origin != origin {
            return Err(Error::ForeignSigner {
                held: format!("{origin} (key {})", key.label()),
                claimed: format!("a checkpoint of origin {}", cp.origin),
            });
        }
        Ok(())
    }

    /// The head of the mirrored log `origin`, if any of it is held.
    pub async fn mirror_head(&self, origin: &str) -> Result<Option<MirrorHead>> {
        let sql =
            "SELECT key_name, public_key, size, frontier, note FROM mirrored_logs WHERE origin = ?";
        let row: Option<HeadRow> = match &self.db {
            Db::Sqlite(p) => sqlx::query_as(sql).bind(origin).fetch_optional(p).await,
            Db::Postgres(p) => {
                sqlx::query_as(sqlx::AssertSqlSafe(numbered(sql)))
                    .bind(origin)
                    .fetch_optional(p)
                    .await
            }
        }
        .map_err(db_err("reading a mirrored log"))?;
        row.map(|(name, public, size, _, note)| {
            Ok(MirrorHead {
                origin: origin.to_string(),
                key: key_of(&name, &public)?,
                size: size as u64,
                note,
            })
        })
        .transpose()
    }

    /// How many records each mirrored log holds, by origin: one read for every log.
    pub async fn mirrored_sizes(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let sql = "SELECT origin, size FROM mirrored_logs";
        let rows: Vec<(String, i64)> = match &self.db {
            Db::Sqlite(p) => sqlx::query_as(sql).fetch_all(p).await,
            Db::Postgres(p) => sqlx::query_as(sql).fetch_all(p).await,
        }
        .map_err(db_err("reading the mirrored logs' sizes"))?;
        Ok(rows
            .into_iter()
            .map(|(origin, size)| (origin, size.max(0) as u64))
            .collect())
    }

    /// The origins of every mirrored log, in order.
    pub async fn mirrored_origins(&self) -> Result<Vec<String>> {
        let sql = "SELECT origin FROM mirrored_logs ORDER BY origin";
        match &self.db {
            Db::Sqlite(p) => sqlx::query_scalar(sql).fetch_all(p).await,
            Db::Postgres(p) => sqlx::query_scalar(sql).fetch_all(p).await,
        }
        .map_err(db_err("listing mirrored logs"))
    }

    /// Records `from..to` of the mirrored log `origin`, in order.
    pub async fn mirrored_records(
        &self,
        origin: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<StoredRecord>> {
        let sql = "SELECT idx, leaf_hash, envelope, invocation_id, host_id, runbook, status, started_at_ms, recorded_at_ms \
                   FROM mirrored_records WHERE origin = ? AND idx >= ? AND idx < ? ORDER BY idx";
        let (f, t) = (
            from.min(i64::MAX as u64) as i64,
            to.min(i64::MAX as u64) as i64,
        );
        match &self.db {
            Db::Sqlite(p) => {
                let rows = sqlx::query(sql)
                    .bind(origin)
                    .bind(f)
                    .bind(t)
                    .fetch_all(p)
                    .await
                    .map_err(db_err("reading mirrored records"))?;
                rows.iter().map(row_to_record).collect()
            }
            Db::Postgres(p) => {
                let rows = sqlx::query(sqlx::AssertSqlSafe(numbered(sql)))
                    .bind(origin)
                    .bind(f)
                    .bind(t)
                    .fetch_all(p)
                    .await
                    .map_err(db_err("reading mirrored records"))?;
                rows.iter().map(row_to_record).collect()
            }
        }
    }

    /// Mirror `segment` of the log signed by `key` (see the module docs for what is
    /// checked). Idempotent: a segment already held adds nothing. The first segment of a
    /// log pins `key` as its signer; later ones must verify under the same key.
    pub async fn mirror(&self, key: &VerifyingKey, segment: &Segment) -> Result<Mirrored> {
        let origin = segment.origin.as_str();
        if segment.envelopes.len() > MAX_SEGMENT_RECORDS {
            return Err(Error::MalformedRecord(format!(
                "a segment of {} records: at most {MAX_SEGMENT_RECORDS} at a time",
                segment.envelopes.len()
            )));
        }
        // The log's key was pinned by its first segment (again under the lock below).
        let head = self.mirror_head(origin).await?;
        if let Some(head) = &head
            && head.key.to_bytes() != key.to_bytes()
        {
            return Err(Error::ForeignSigner {
                held: format!("{origin} (key {})", head.key.label()),
                claimed: format!("{origin} (key {})", key.label()),
            });
        }
        // Every record verifies under the log's key before anything is read or written.
        let mut rows = Vec::with_capacity(segment.envelopes.len());
        for (i, bytes) in segment.envelopes.iter().enumerate() {
            let index = segment.first + i as u64;
            let text = std::str::from_utf8(bytes).map_err(|_| {
                Error::MalformedRecord(format!("record {index} of {origin} is not UTF-8"))
            })?;
            let env = Envelope::from_json(text)?;
            env.verify(std::slice::from_ref(key))
                .map_err(|e| Error::MalformedRecord(format!("record {index} of {origin}: {e}")))?;
            let cols = columns(&env)
                .map_err(|e| Error::MalformedRecord(format!("record {index} of {origin}: {e}")))?;
            rows.push((index, leaf_hash(bytes), bytes.clone(), cols));
        }
        // Records signed by the log's key that start past what is held: a gap, whatever
        // the checkpoint (a host missing a record cannot sign one; it sends none).
        let held = head.as_ref().map_or(0, |h| h.size);
        if !rows.is_empty() && segment.first > held {
            return Err(Error::LogGap {
                origin: origin.to_string(),
                held,
                first: segment.first,
            });
        }
        if !rows.is_empty() && segment.checkpoint.is_empty() {
            return Err(Error::SignerLogHole {
                origin: origin.to_string(),
                held,
                first: segment.first,
            });
        }
        let cp = Checkpoint::parse(&segment.checkpoint, std::slice::from_ref(key))?;
        let end = segment.first + segment.envelopes.len() as u64;
        if cp.origin != origin || cp.size != end {
            return Err(Error::MalformedRecord(format!(
                "the segment's checkpoint is of {} at {} records, not of {origin} at {end}",
                cp.origin, cp.size
            )));
        }
        match &self.db {
            Db::Sqlite(p) => {
                let mut conn = p
                    .acquire()
                    .await
                    .map_err(db_err("acquiring a connection"))?;
                let mut tx = conn
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(db_err("beginning a mirror write"))?;
                let out = mirror_in!(tx, key, segment, cp, rows, str::to_string)?;
                tx.commit()
                    .await
                    .map_err(db_err("committing a mirror write"))?;
                Ok(out)
            }
            Db::Postgres(p) => {
                let mut tx = p
                    .begin()
                    .await
                    .map_err(db_err("beginning a mirror write"))?;
                // One writer per mirrored log across every server process.
                sqlx::query("SELECT pg_advisory_xact_lock(727477, hashtext($1))")
                    .bind(origin)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err("locking a mirrored log"))?;
                let out = mirror_in!(tx, key, segment, cp, rows, numbered)?;
                tx.commit()
                    .await
                    .map_err(db_err("committing a mirror write"))?;
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_back_to_what_rfc3339_ms_wrote() {
        for ms in [
            0u64,
            1,
            999,
            86_399_999,
            951_782_400_000,
            1_764_892_800_123,
            4_102_444_800_000,
        ] {
            assert_eq!(
                parse_rfc3339_ms(&crate::record::rfc3339_ms(ms)),
                Some(ms as i64)
            );
        }
        assert_eq!(
            parse_rfc3339_ms("2026-12-05T10:00:00Z"),
            Some(1_796_464_800_000)
        );
        for bad in [
            "",
            "2026-13-01T00:00:00.000Z",
            "2026-12-05 10:00:00Z",
            "2026-12-05T10:00:00.1Z",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(numbered("a = ? AND b < ?"), "a = $1 AND b < $2");
    }
}
