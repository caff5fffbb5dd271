//! Sealed segments of a log in an S3 bucket under Object Lock (COMPLIANCE).
//!
//! Layout: `PREFIX/ORIGIN/FROM-TO.bundle`, FROM and TO the segment's first leaf index and
//! its checkpoint's tree size, 20 digits each so that the bucket lists them in log order.
//! Each object is a bundle of format 4 that is a segment of the log
//! ([`runwarden_evidence::SegmentStart`]): its records, the checkpoint of size TO signed by
//! the log's key, and the frontier of the leaves before it. The bucket is the archive's
//! only state: a run lists what is there, checks that it chains from record 0 and that its
//! last segment is of this very log, and goes on from there — so a retry or a run after a
//! crash writes nothing twice and leaves nothing half-sealed (an S3 PUT is atomic).

use crate::s3::{ListedVersion, S3, S3Error};
use runwarden_evidence::{self as ev, CompactTree, Hash};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Records per segment, at most: one segment is built in memory before it is written and
/// read back after, so this bounds the archiver's memory (about 20 MiB a segment at 5 KB
/// a record).
pub const SEGMENT_RECORDS: u64 = 4096;
/// A segment is cut short of [`SEGMENT_RECORDS`] when it would be larger than this.
pub const SEGMENT_BYTES: u64 = 128 << 20;
/// The largest segment object a verification reads (a record may be 16 MiB: one such
/// record alone makes a segment larger than [`SEGMENT_BYTES`]).
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;
/// Default retention: six years, what HIPAA asks documentation be kept.
pub const DEFAULT_RETENTION_DAYS: u64 = 6 * 365 + 2;
/// Attempts at one PUT when the error is worth retrying.
const ATTEMPTS: u32 = 5;
const SUFFIX: &str = ".bundle";

/// What can go wrong archiving or reading an archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The S3 call failed.
    #[error(transparent)]
    S3(#[from] S3Error),
    /// The evidence log could not be read or a segment not built.
    #[error(transparent)]
    Evidence(#[from] ev::Error),
    /// An `s3://` address that cannot be an archive.
    #[error("{0}")]
    Target(String),
    /// The bucket has no Object Lock: nothing written there would be WORM.
    #[error(
        "bucket {bucket:?} has no Object Lock: evidence archived there could be deleted or overwritten. Archive to a bucket created with Object Lock enabled (e.g. `aws s3api create-bucket --bucket NAME --object-lock-enabled-for-bucket`); nothing was written"
    )]
    NoObjectLock {
        /// The bucket.
        bucket: String,
    },
    /// What is in the archive is not a chain of this log's segments.
    #[error("the archive at {at} is not usable: {problem}")]
    Broken {
        /// `s3://BUCKET/KEY`.
        at: String,
        /// What is wrong, and what to do.
        problem: String,
    },
    /// A segment read back is not what was written, or does not verify.
    #[error("segment s3://{bucket}/{key}: {problem}")]
    Segment {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

/// `s3://BUCKET/PREFIX`: where the archive lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The bucket.
    pub bucket: String,
    /// The key prefix, without leading or trailing `/` (may be empty).
    pub prefix: String,
}

impl std::str::FromStr for Target {
    type Err = ArchiveError;

    fn from_str(s: &str) -> Result<Target, ArchiveError> {
        let bad = |why: &str| {
            ArchiveError::Target(format!(
                "{:?} is not an archive address: {why}; use s3://BUCKET/PREFIX",
                ev::escape_control(s)
            ))
        };
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| bad("it does not start with s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        if !bucket_ok {
            return Err(bad(
                "a bucket name is 3 to 63 lowercase letters, digits, '-' and '.'",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() {
            check_path(prefix).map_err(|why| bad(&why))?;
        }
        Ok(Target {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// Key path components: letters, digits, `.`, `_`, `-`; no empty, `.` or `..` component.
fn check_path(path: &str) -> Result<(), String> {
    for c in path.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return Err(format!(
                "{:?} has an empty, '.' or '..' component",
                ev::escape_control(path)
            ));
        }
        if !c
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(format!(
                "{:?} holds characters other than letters, digits, '.', '_', '-' and '/'",
                ev::escape_control(path)
            ));
        }
    }
    Ok(())
}

impl Target {
    /// The key prefix of a log's segments: `PREFIX/ORIGIN/`.
    fn log_dir(&self, origin: &str) -> Result<String, ArchiveError> {
        check_path(origin).map_err(|why| {
            ArchiveError::Target(format!(
                "log origin {why}: it cannot name an archive directory"
            ))
        })?;
        Ok(if self.prefix.is_empty() {
            format!("{origin}/")
        } else {
            format!("{}/{origin}/", self.prefix)
        })
    }

    fn at(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, ev::escape_control(key))
    }
}

/// One segment in the archive: its key, and the version of it read.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Listed {
    key: String,
    from: u64,
    to: u64,
    /// The key's newest version that is an object (not a delete marker); `None` where
    /// the server has no version ids.
    version: Option<String>,
    /// Whether a delete marker hides it: someone deleted the key without a version id,
    /// which Object Lock allows. The locked version is still there, and is read.
    hidden: bool,
}

/// The segments under `dir` that chain from record 0, in log order: of the segments
/// listed, the path from record 0 that reaches furthest (two archivers that ran at once
/// leave overlapping segments, both sealed and locked: either chain proves the same log).
/// Segments off that path are left out, and counted.
///
/// Listed by version, not by current object: a delete marker (a DELETE without a version
/// id, which COMPLIANCE mode does not stop) would otherwise hide the newest segments, and
/// the archive would read as a shorter log. Each key's newest version is read; a key hidden
/// behind a marker is marked so.
async fn segments(s3: &S3, target: &Target, dir: &str) -> Result<(Vec<Listed>, u64), ArchiveError> {
    let mut found: Vec<Listed> = Vec::new();
    let all = s3.list_versions(&target.bucket, dir).await?;
    // A key whose newest entry is a delete marker (servers list markers and versions
    // apart, or interleaved: only `IsLatest` says which is newest).
    let hidden: std::collections::HashSet<&str> = all
        .iter()
        .filter(|o| o.delete_marker && o.latest)
        .map(|o| o.key.as_str())
        .collect();
    // The version read of each key: its current one, or (behind a delete marker) the
    // first listed, which S3 lists newest first.
    let mut read: Vec<&ListedVersion> = Vec::new();
    let mut at: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for o in all.iter().filter(|o| !o.delete_marker) {
        match at.get(o.key.as_str()) {
            Some(&i) if o.latest => read[i] = o,
            Some(_) => {}
            None => {
                at.insert(&o.key, read.len());
                read.push(o);
            }
        }
    }
    for o in read {
        let name = &o.key[dir.len()..];
        let parsed = name.strip_suffix(SUFFIX).and_then(|n| {
            let (a, b) = n.split_once('-')?;
            let ok = |x: &str| x.len() == 20 && x.bytes().all(|c| c.is_ascii_digit());
            (ok(a) && ok(b)).then(|| Some((a.parse().ok()?, b.parse().ok()?)))?
        });
        let Some((from, to)) = parsed.filter(|(from, to)| from < to) else {
            return Err(ArchiveError::Broken {
                at: target.at(&o.key),
                problem: "an object that is not a segment of this archive (FROM-TO.bundle, FROM < TO) is in a log's directory; move it elsewhere".into(),
            });
        };
        found.push(Listed {
            key: o.key.clone(),
            from,
            to,
            version: o.version_id.clone(),
            hidden: hidden.contains(o.key.as_str()),
        });
    }
    Ok(chain(found))
}

/// The path from record 0 through `found` (edges FROM → TO) that reaches the largest TO,
/// and how many segments are not on it.
fn chain(mut found: Vec<Listed>) -> (Vec<Listed>, u64) {
    found.sort_by_key(|l| (l.from, l.to));
    // Reached record → the segment that reached it (None for record 0). In key order,
    // every segment's start is settled before the segment is looked at.
    let mut reached: std::collections::HashMap<u64, Option<usize>> =
        std::collections::HashMap::from([(0, None)]);
    for (i, l) in found.iter().enumerate() {
        if reached.contains_key(&l.from) {
            reached.entry(l.to).or_insert(Some(i));
        }
    }
    let end = reached.keys().copied().max().unwrap_or(0);
    let mut path = Vec::new();
    let mut at = end;
    while let Some(Some(i)) = reached.get(&at) {
        path.push(*i);
        at = found[*i].from;
    }
    path.reverse();
    let off = (found.len() - path.len()) as u64;
    let mut taken: Vec<Option<Listed>> = found.into_iter().map(Some).collect();
    (
        path.into_iter().filter_map(|i| taken[i].take()).collect(),
        off,
    )
}

fn segment_key(dir: &str, from: u64, to: u64) -> String {
    format!("{dir}{from:020}-{to:020}{SUFFIX}")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where a log's archive stands after [`archive_log`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Archived {
    /// The log.
    pub origin: String,
    /// `s3://BUCKET/PREFIX/ORIGIN/`.
    pub location: String,
    /// Segments this run wrote.
    pub written: u64,
    /// Records this run wrote.
    pub records_written: u64,
    /// Records in the archive now (its segments chain from record 0 to here).
    pub archived: u64,
    /// Retain-until date of what this run wrote (RFC 3339), if it wrote anything.
    pub retain_until: Option<String>,
    /// A last segment found not to verify (an upload broken off on a server that kept
    /// part of it) and written again as a new version of its key: `s3://BUCKET/KEY`.
    pub rewritten: Option<String>,
}

/// How an archive run is set up.
pub struct Archiver<'a> {
    /// The S3 client.
    pub s3: &'a S3,
    /// Where.
    pub target: &'a Target,
    /// Days each segment stays under COMPLIANCE retention from when it is written.
    pub retention_days: u64,
    /// Records per segment (at most [`SEGMENT_RECORDS`]; tests use fewer).
    pub segment_records: u64,
    /// Wait before the first retry of a failed PUT; doubled at each further attempt.
    pub backoff: Duration,
}

/// The wait before a PUT's first retry: 0.5 s, then 1, 2 and 4 s.
pub const BACKOFF: Duration = Duration::from_millis(500);

impl Archiver<'_> {
    /// Archive the database's own log (signed by `key`, named `origin`) up to its current
    /// size: every record not yet in the archive, in sealed segments written under Object
    /// Lock and read back. `progress` hears (records archived, records in the log).
    pub async fn archive_log(
        &self,
        store: &ev::Store,
        key: &ev::SigningKey,
        origin: &str,
        keys: Vec<ev::VerifyingKey>,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<Archived, ArchiveError> {
        let (s3, target) = (self.s3, self.target);
        if !s3.object_lock_enabled(&target.bucket).await? {
            return Err(ArchiveError::NoObjectLock {
                bucket: target.bucket.clone(),
            });
        }
        let dir = target.log_dir(origin)?;
        let (there, _off_path) = segments(s3, target, &dir).await?;
        let size = store.size().await?;
        let mut tree = CompactTree::new();
        // A last segment that does not verify (an upload broken off on a server that kept
        // what it got): written again, as a new version of its key, once the segment
        // before it shows the archive is this log's.
        let mut redo: Option<&Listed> = None;
        if let Some(last) = there.last() {
            if last.to > size {
                return Err(ArchiveError::Broken {
                    at: target.at(&last.key),
                    problem: format!(
                        "it holds records up to {} but this log has {size}: the archive is of another log (or this database was replaced); archive to another prefix",
                        last.to
                    ),
                });
            }
            let ours = [key.verifying_key()];
            let known = match read_segment(s3, target, last, &ours).await {
                Ok(v) => Some((last, v)),
                Err(ArchiveError::Segment { problem, .. }) => {
                    // Only a segment before it, verified as this log's, shows the
                    // directory is ours: never write over another log's only segment.
                    let Some(before) = there.len().checked_sub(2).map(|i| &there[i]) else {
                        return Err(ArchiveError::Broken {
                            at: target.at(&last.key),
                            problem: format!(
                                "the only segment there does not verify with this log's key ({problem}): it is another log's archive (or this log's key is new); archive to another prefix"
                            ),
                        });
                    };
                    redo = Some(last);
                    Some((before, read_segment(s3, target, before, &ours).await?))
                }
                Err(e) => return Err(e),
            };
            // What the archive holds must be this very log: a segment's signed root is
            // the log's root at its size.
            if let Some((l, v)) = known {
                store.extend_tree(&mut tree, l.to).await?;
                if v.root != tree.root() || v.origin != origin {
                    return Err(ArchiveError::Broken {
                        at: target.at(&l.key),
                        problem: "its signed checkpoint is not this log's at that size: the archive is of another log; archive to another prefix".into(),
                    });
                }
            }
        }
        let already = tree.size();
        let retention_ms = self.retention_days.saturating_mul(86_400_000);
        let mut done = Archived {
            origin: origin.to_string(),
            location: target.at(&dir),
            written: 0,
            records_written: 0,
            archived: already,
            retain_until: None,
            rewritten: redo.map(|l| target.at(&l.key)),
        };
        progress(already, size);
        let per = self.segment_records.clamp(1, SEGMENT_RECORDS);
        while tree.size() < size {
            let from = tree.size();
            // A segment written again keeps its range, so its key.
            let redo_to = redo.take().map_or(0, |l| l.to);
            let to = if redo_to > 0 {
                redo_to
            } else {
                size.min(from + per)
            };
            // Few records but large ones: halved until the segment fits the byte budget
            // (a segment written again keeps its range whatever its size).
            let mut to = to;
            let bytes = loop {
                let mut grown = tree.clone();
                let bytes = ev::export_segment(
                    store,
                    key,
                    origin,
                    keys.clone(),
                    &mut grown,
                    to,
                    Vec::new(),
                )
                .await?;
                if bytes.len() as u64 <= SEGMENT_BYTES || to - from == 1 || redo_to > 0 {
                    tree = grown;
                    break bytes;
                }
                to = from + (to - from) / 2;
            };
            if bytes.len() as u64 > MAX_SEGMENT_BYTES {
                return Err(ArchiveError::Broken {
                    at: target.at(&segment_key(&dir, from, to)),
                    problem: format!(
                        "the segment would be {} bytes, more than a verification reads ({MAX_SEGMENT_BYTES}); nothing was written",
                        bytes.len()
                    ),
                });
            }
            let key_name = segment_key(&dir, from, to);
            let retain_until_ms = now_ms() + retention_ms;
            self.put_and_check(&key_name, bytes.into(), retain_until_ms)
                .await?;
            done.written += 1;
            done.records_written += to - from;
            done.archived = to;
            done.retain_until = Some(ev::rfc3339_ms(retain_until_ms));
            progress(to, size);
        }
        Ok(done)
    }

    /// PUT one segment under COMPLIANCE retention (retried while the error is transient),
    /// then read that very version back: its lock, its size and its bytes.
    async fn put_and_check(
        &self,
        key: &str,
        body: bytes::Bytes,
        retain_until_ms: u64,
    ) -> Result<(), ArchiveError> {
        let (s3, bucket) = (self.s3, &self.target.bucket);
        let mut attempt = 0;
        let put = loop {
            attempt += 1;
            match s3
                .put_object_locked(bucket, key, body.clone(), retain_until_ms)
                .await
            {
                Ok(put) => break put,
                Err(e) if e.is_retryable() && attempt < ATTEMPTS => {
                    tokio::time::sleep(self.backoff * (1 << (attempt - 1))).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let bad = |problem: String| ArchiveError::Segment {
            bucket: bucket.clone(),
            key: key.to_string(),
            problem,
        };
        let version = put.version_id.as_deref();
        let head = s3
            .head_object(bucket, key, version)
            .await?
            .ok_or_else(|| bad("written, but not there when read back".into()))?;
        if head.lock_mode.as_deref() != Some("COMPLIANCE") {
            return Err(bad(format!(
                "written without COMPLIANCE retention (lock mode {:?}): the bucket did not apply it",
                head.lock_mode
            )));
        }
        let until = head.retain_until.as_deref().unwrap_or("");
        if !retained_until(until, retain_until_ms) {
            return Err(bad(format!(
                "written with retention until {:?}, not {}",
                ev::escape_control(until),
                ev::rfc3339_ms(retain_until_ms)
            )));
        }
        let back = s3
            .get_object(bucket, key, version, body.len() as u64)
            .await?;
        if Sha256::digest(&back) != Sha256::digest(&body) {
            return Err(bad(
                "read back, it is not what was written: check the storage".into(),
            ));
        }
        Ok(())
    }
}

/// Whether an S3 retain-until date (RFC 3339; S3 may drop the milliseconds) is no earlier
/// than `ms` to the second.
fn retained_until(date: &str, ms: u64) -> bool {
    // Compare as text at second precision: both are UTC `YYYY-MM-DDTHH:MM:SS`.
    let want = ev::rfc3339_ms(ms / 1000 * 1000);
    date.len() >= 19 && want.len() >= 19 && date[..19] >= want[..19]
}

/// Read a segment (the version of its key listed) and verify it: a segment of this log's
/// records `from..to` as its name says, or a complete bundle of `0..to` — never a
/// filtered export, whose records prove nothing about the others.
async fn read_segment(
    s3: &S3,
    target: &Target,
    l: &Listed,
    trusted: &[ev::VerifyingKey],
) -> Result<ev::Verified, ArchiveError> {
    let bytes = s3
        .get_object(
            &target.bucket,
            &l.key,
            l.version.as_deref(),
            MAX_SEGMENT_BYTES,
        )
        .await?;
    let bad = |problem: String| ArchiveError::Segment {
        bucket: target.bucket.clone(),
        key: l.key.clone(),
        problem,
    };
    let v = ev::verify_bundle(bytes.as_ref(), trusted, None).map_err(|e| bad(e.to_string()))?;
    if (v.from, v.tree_size) != (l.from, l.to) {
        return Err(bad(format!(
            "it holds records {}..{}, not what its name says",
            v.from, v.tree_size
        )));
    }
    if v.records != l.to - l.from || !(v.complete || v.from > 0) {
        return Err(bad(format!(
            "it holds {} records, not every record {}..{}: a filtered export, not a segment",
            v.records, l.from, l.to
        )));
    }
    Ok(v)
}

/// What [`verify_archive`] established of one log.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ArchiveVerified {
    /// The log.
    pub origin: String,
    /// Segments read.
    pub segments: u64,
    /// Records verified: every record of the log from 0 to `tree_size`.
    pub records: u64,
    /// The last segment's checkpoint.
    pub tree_size: u64,
    /// Its root (hex).
    pub root: String,
    /// The earliest retain-until date of the segments (RFC 3339).
    pub retained_until: Option<String>,
    /// Segments listed that are not on the chain from record 0 (left by two archivers at
    /// once, or put there by someone else): not read, not relied on.
    pub off_path: u64,
    /// Segments someone deleted without a version id: hidden behind a delete marker, read
    /// (and verified) from their locked versions.
    pub hidden: u64,
}

/// Verify a log's archive straight from the bucket: every segment (signatures, its records
/// against its signed checkpoint, its seal and report), each starting where the one
/// before ended, from record 0 — so the archive holds every record of the log up to its
/// last checkpoint — and each under COMPLIANCE Object Lock. `origin` names the log
/// ([`archived_logs`] lists them). `progress` hears (records verified, records archived).
pub async fn verify_archive(
    s3: &S3,
    target: &Target,
    origin: &str,
    trusted: &[ev::VerifyingKey],
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<ArchiveVerified, ArchiveError> {
    let origin = origin.to_string();
    let dir = target.log_dir(&origin)?;
    let (listed, off_path) = segments(s3, target, &dir).await?;
    if listed.is_empty() {
        return Err(ArchiveError::Broken {
            at: target.at(&dir),
            problem: "no segments of this log are there".into(),
        });
    }
    let total = listed.last().map_or(0, |l| l.to);
    let mut root: Hash = ev::EMPTY_ROOT;
    let mut retained: Option<String> = None;
    for l in &listed {
        let head = s3
            .head_object(&target.bucket, &l.key, l.version.as_deref())
            .await?
            .ok_or_else(|| ArchiveError::Broken {
                at: target.at(&l.key),
                problem: "listed but not readable".into(),
            })?;
        if head.lock_mode.as_deref() != Some("COMPLIANCE") {
            return Err(ArchiveError::Segment {
                bucket: target.bucket.clone(),
                key: l.key.clone(),
                problem: "not under COMPLIANCE Object Lock: it could be deleted or replaced".into(),
            });
        }
        let until = head.retain_until.clone().unwrap_or_default();
        if !retained_until(&until, now_ms()) {
            return Err(ArchiveError::Segment {
                bucket: target.bucket.clone(),
                key: l.key.clone(),
                problem: format!(
                    "its COMPLIANCE retention ended ({:?}): it can be deleted now",
                    ev::escape_control(&until)
                ),
            });
        }
        if retained.as_ref().is_none_or(|r| until < *r) {
            retained = Some(ev::escape_control(&until).into_owned());
        }
        // The version whose lock was just read is the one verified.
        let l = &Listed {
            version: head.version_id.clone().or_else(|| l.version.clone()),
            ..l.clone()
        };
        let v = read_segment(s3, target, l, trusted).await?;
        if v.origin != origin || v.from_root != root {
            return Err(ArchiveError::Segment {
                bucket: target.bucket.clone(),
                key: l.key.clone(),
                problem:
                    "it does not continue the segment before it (another log's, or a forged start)"
                        .into(),
            });
        }
        root = v.root;
        progress(l.to, total);
    }
    let last = listed.last().expect("not empty");
    Ok(ArchiveVerified {
        origin,
        segments: listed.len() as u64,
        records: last.to,
        tree_size: last.to,
        root: hex::encode(root),
        retained_until: retained,
        off_path,
        hidden: listed.iter().filter(|l| l.hidden).count() as u64,
    })
}

/// The logs archived under the target's prefix (their origins, sorted): every directory
/// that holds a segment.
pub async fn archived_logs(s3: &S3, target: &Target) -> Result<Vec<String>, ArchiveError> {
    let prefix = if target.prefix.is_empty() {
        String::new()
    } else {
        format!("{}/", target.prefix)
    };
    let mut origins: Vec<String> = Vec::new();
    // By version: a log whose segments were all deleted without a version id is still
    // archived (its versions are locked), and is listed.
    for o in s3.list_versions(&target.bucket, &prefix).await? {
        if let Some((dir, _)) = o.key[prefix.len()..].rsplit_once('/')
            && !origins.iter().any(|x| x == dir)
        {
            origins.push(dir.to_string());
        }
    }
    if origins.is_empty() {
        return Err(ArchiveError::Broken {
            at: target.to_string(),
            problem: "nothing is archived there".into(),
        });
    }
    origins.sort();
    Ok(origins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_strictly() {
        let t: Target = "s3://evidence-archive/clinic-a/2026".parse().unwrap();
        assert_eq!(
            (t.bucket.as_str(), t.prefix.as_str()),
            ("evidence-archive", "clinic-a/2026")
        );
        let t: Target = "s3://evidence-archive".parse().unwrap();
        assert_eq!(t.prefix, "");
        for bad in [
            "evidence-archive/x",
            "s3://Evidence/x",
            "s3://ab/x",
            "s3://bucket/../x",
            "s3://bucket/a//b",
            "s3://bucket/a b",
            "s3://bucket/a\u{1b}[31m",
            "s3://-bucket/x",
        ] {
            let e = bad.parse::<Target>().unwrap_err().to_string();
            assert!(e.contains("s3://BUCKET/PREFIX"), "{bad}: {e}");
            assert!(!e.contains('\u{1b}'), "{e}");
        }
    }

    #[test]
    fn segment_keys_sort_in_log_order() {
        let a = segment_key("p/runwarden/h/", 0, 8192);
        let b = segment_key("p/runwarden/h/", 8192, 100_000);
        let c = segment_key("p/runwarden/h/", 100_000, 100_001);
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(
            a,
            "p/runwarden/h/00000000000000000000-00000000000000008192.bundle"
        );
    }

    #[test]
    fn retention_dates_compare_to_the_second() {
        let ms = 1_900_000_000_123;
        assert!(retained_until(&ev::rfc3339_ms(ms), ms));
        assert!(retained_until(&ev::rfc3339_ms(ms)[..19], ms));
        assert!(!retained_until(&ev::rfc3339_ms(ms - 1000), ms));
        assert!(!retained_until("", ms));
    }
}
