//! Auditor bundles: one tar file holding records, their inclusion proofs, the signed
//! checkpoint they are proved against, consistency proofs from earlier checkpoints, the
//! signers' public keys and a human-readable HTML report — verified offline with nothing
//! but the bundle and a trusted public key.

use crate::checkpoint::Checkpoint;
use crate::dsse::Envelope;
use crate::keys::VerifyingKey;
use crate::merkle::{Hash, leaf_hash, verify_consistency, verify_inclusion};
use crate::record::{Statement, rfc3339_ms};
use crate::text::escape_control;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;

mod stream;
pub use stream::{BundleWriter, SEAL, SEAL_PAYLOAD_TYPE, export_segment, export_stream};
pub(crate) use stream::{LogExport, Within, append_member, verify_stream};

/// The bundle format version this code writes. Version 3 adds the manifest's `members`
/// (each member's size); version 2 bundles, which lack it, still verify. Version 1 (hex
/// proofs, the envelope as an escaped string) was never released.
pub const BUNDLE_VERSION: u32 = 3;
/// The oldest bundle format this code reads.
const OLDEST_VERSION: u32 = 2;
const MANIFEST: &str = "runwarden-bundle.json";
const RECORDS: &str = "records.jsonl";
const CHECKPOINT: &str = "checkpoint.txt";
const CONSISTENCY: &str = "consistency.json";
const REPORT: &str = "report.html";
const KEYS_DIR: &str = "keys/";

// Caps checked against each member's header before a byte of it is read, so that a size
// field (or a sparse map) cannot make verification allocate more than the file holds.
/// The manifest: a few fields and the export's filter.
const MAX_MANIFEST: u64 = 1 << 20;
/// A signed note: the checkpoint body and a few signature lines.
const MAX_CHECKPOINT: u64 = 64 << 10;
/// One `keys/KEYID.pub`: one line of key text.
const MAX_KEY_FILE: u64 = 4 << 10;
/// How many `keys/*.pub` members a bundle may hold.
const MAX_KEYS: usize = 256;
/// One line of `records.jsonl` (a version 2 bundle's records are capped at this many bytes
/// per record its manifest lists).
const MAX_RECORD_LINE: u64 = 16 << 20;
/// One entry of `consistency.json`: a proof of at most 2 × 64 hashes, base64, and its size.
const MAX_CONSISTENCY_ENTRY: u64 = 12 << 10;
/// Records, consistency proofs or the report.
const MAX_MEMBER: u64 = 4 << 30;
/// Every member together.
const MAX_TOTAL: u64 = 8 << 30;

/// What the bundle says about itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`BUNDLE_VERSION`].
    pub version: u32,
    /// Origin line of the log.
    pub origin: String,
    /// Size of the tree the checkpoint commits to.
    pub tree_size: u64,
    /// Number of records in `records.jsonl`.
    pub record_count: u64,
    /// Whether every record of the log up to `tree_size` is included (no filter).
    pub complete: bool,
    /// The filter used, for the reader.
    pub filter: serde_json::Value,
    /// When the bundle was made (RFC 3339).
    pub created_at: String,
    /// The size in bytes of every other member, by name (format 3; empty in format 2).
    /// Verification refuses a member that is not listed or larger than listed, before
    /// reading it. [`BundleContents::write`] fills it in.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub members: BTreeMap<String, u64>,
    /// Format 4 only: the bundle is a segment of the log (an archive's unit), its records
    /// the leaves `from..tree_size` rather than `0..tree_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<SegmentStart>,
    /// Format 4 only: the clinic's time zone, which the report shows times and months in.
    /// Absent: UTC (as in every bundle made before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<TimeZone>,
    /// Format 4 only: the report's layout. 2: the records it lists link to where they are
    /// in the bundle, and the summaries to them. 3: also how many escalations a person
    /// decided within their SLA, and how many late. 4: also, per month, host and runbook,
    /// the runs denied a call and the runs a person approved; the export's time in the
    /// bundle's time zone. Absent: as every bundle made before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<u32>,
}

/// A time zone a bundle's report is in: its name and the POSIX TZ rule it follows today,
/// carried in the manifest (under the seal) so that the report reads the same on every
/// machine, whatever its time zone files. Times before the zone's last change of rules are
/// shown by today's rule.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimeZone {
    /// IANA name (`Europe/Berlin`).
    pub name: String,
    /// POSIX TZ rule (`CET-1CEST,M3.5.0,M10.5.0/3`).
    pub rule: String,
}

impl TimeZone {
    /// The zone `name` from this machine's time zone files (`UTC` needs none).
    pub fn load(name: &str) -> Result<TimeZone, String> {
        let zone = runwarden_report::tz::Zone::load(name).map_err(|e| e.to_string())?;
        let rule = zone.rule().ok_or_else(|| {
            format!("time zone {name:?} has no rule for today's times in its file: pick another name for the same place")
        })?;
        Ok(TimeZone {
            name: name.to_string(),
            rule,
        })
    }

    /// The zone that follows the carried rule, checked.
    pub(crate) fn zone(&self) -> Result<runwarden_report::tz::Zone, String> {
        if self.name.len() > 64 || self.rule.len() > 128 {
            return Err("a time zone's name or rule is too long".into());
        }
        runwarden_report::tz::Zone::from_rule(&self.name, &self.rule).map_err(|e| e.to_string())
    }
}

/// Where a segment of a log starts: with its records, this hashes to the checkpoint's
/// root, which proves — from signed data alone — that the records are exactly the log's
/// leaves `from..tree_size`, in order.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SegmentStart {
    /// Leaf index of the segment's first record.
    pub from: u64,
    /// The roots (hex) of the perfect subtrees over leaves `0..from`, largest first
    /// ([`crate::CompactTree::frontier`]).
    pub frontier: Vec<String>,
}

impl SegmentStart {
    /// The start of a segment whose first record follows the leaves of `tree`.
    pub fn of(tree: &crate::merkle::CompactTree) -> SegmentStart {
        SegmentStart {
            from: tree.size(),
            frontier: tree.frontier().iter().map(hex::encode).collect(),
        }
    }

    /// The tree of the leaves before the segment, to hash its records into.
    pub fn tree(&self) -> Result<crate::merkle::CompactTree, String> {
        let frontier = self
            .frontier
            .iter()
            .map(|h| {
                hex::decode(h)
                    .ok()
                    .and_then(|b| <Hash>::try_from(b.as_slice()).ok())
                    .ok_or_else(|| {
                        format!(
                            "the segment's frontier holds {:?}, not a hash",
                            escape_control(&stream::cut(h, 80))
                        )
                    })
            })
            .collect::<Result<Vec<Hash>, String>>()?;
        crate::merkle::CompactTree::from_frontier(self.from, frontier)
            .map_err(|e| format!("the segment's frontier does not fit its start: {e}"))
    }
}

/// One record of a bundle. In `records.jsonl` it is one line,
/// `{"index":N,"proof":"BASE64","envelope":{…}}`: the proof hashes concatenated and
/// base64-encoded, the envelope embedded verbatim so its bytes are exactly the log leaf.
#[derive(Clone, Debug)]
pub struct BundleRecord {
    /// Leaf index in the log.
    pub index: u64,
    /// The DSSE envelope JSON, exactly the bytes that are the log leaf.
    pub envelope: String,
    /// Inclusion proof against the checkpoint.
    pub proof: Vec<Hash>,
}

/// A line of `records.jsonl` as read: borrowed from the bundle, nothing copied.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    index: u64,
    /// Absent in a complete bundle of format 4, whose leaves recompute the root instead.
    #[serde(default)]
    proof: Option<&'a str>,
    #[serde(borrow)]
    envelope: &'a serde_json::value::RawValue,
}

/// A consistency proof from an earlier checkpoint to the bundle's.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consistency {
    /// The earlier tree size.
    pub old_size: u64,
    /// Proof hashes, concatenated and base64-encoded.
    #[serde(with = "hashes_b64")]
    pub proof: Vec<Hash>,
}

/// Hash lists as one base64 string: a third the size of hex, decoded in one pass.
mod hashes_b64 {
    use super::Hash;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    pub(super) fn encode(hashes: &[Hash]) -> String {
        STANDARD.encode(hashes.concat())
    }

    pub(super) fn decode(text: &str) -> Option<Vec<Hash>> {
        let bytes = STANDARD.decode(text).ok()?;
        if bytes.len() % 32 != 0 {
            return None;
        }
        Some(
            bytes
                .chunks_exact(32)
                .map(|c| c.try_into().expect("32-byte chunk"))
                .collect(),
        )
    }

    pub(super) fn serialize<S: serde::Serializer>(h: &[Hash], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(h))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<Hash>, D::Error> {
        let text: std::borrow::Cow<'de, str> = serde::Deserialize::deserialize(d)?;
        decode(&text)
            .ok_or_else(|| serde::de::Error::custom("proof is not base64 of whole 32-byte hashes"))
    }
}

/// Everything that goes into a bundle.
pub struct BundleContents {
    /// The manifest.
    pub manifest: Manifest,
    /// The signed checkpoint note.
    pub checkpoint_note: String,
    /// Records with proofs, in index order.
    pub records: Vec<BundleRecord>,
    /// Consistency proofs from earlier checkpoint sizes.
    pub consistency: Vec<Consistency>,
    /// Public keys of the signers.
    pub keys: Vec<VerifyingKey>,
}

/// Why a bundle did not verify. `record` names the first bad record when there is one.
/// Displayed with control characters escaped ([`escape_control`]): the message quotes what
/// the bundle holds.
#[derive(Debug, thiserror::Error)]
#[error("{}{}", record.map(|r| format!("record {r}: ")).unwrap_or_default(), escape_control(message))]
pub struct BundleError {
    /// Leaf index of the first bad record, when the problem is a record.
    pub record: Option<u64>,
    /// What is wrong.
    pub message: String,
}

fn bad(message: impl Into<String>) -> BundleError {
    BundleError {
        record: None,
        message: message.into(),
    }
}

fn bad_record(index: u64, message: impl Into<String>) -> BundleError {
    BundleError {
        record: Some(index),
        message: message.into(),
    }
}

fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// A hash as lower-case hex, the way people read and compare them.
pub fn hash_hex(h: &Hash) -> String {
    hex(h)
}

impl BundleContents {
    /// Write the bundle as a tar archive: the manifest first, listing every other member's
    /// size, then the members.
    pub fn write(&self, out: impl std::io::Write) -> std::io::Result<()> {
        let mut lines = Vec::new();
        for r in &self.records {
            // The envelope goes in verbatim: it must be one line of JSON.
            if r.envelope.contains('\n')
                || serde_json::from_str::<serde::de::IgnoredAny>(&r.envelope).is_err()
            {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("record {} is not a one-line JSON envelope", r.index),
                ));
            }
            lines.extend_from_slice(
                format!(
                    "{{\"index\":{},\"proof\":\"{}\",\"envelope\":",
                    r.index,
                    hashes_b64::encode(&r.proof)
                )
                .as_bytes(),
            );
            lines.extend_from_slice(r.envelope.as_bytes());
            lines.extend_from_slice(b"}\n");
        }
        let mut members: Vec<(String, Vec<u8>)> = vec![
            (CHECKPOINT.into(), self.checkpoint_note.clone().into_bytes()),
            (RECORDS.into(), lines),
            (CONSISTENCY.into(), serde_json::to_vec(&self.consistency)?),
        ];
        for k in &self.keys {
            members.push((
                format!("{KEYS_DIR}{}.pub", k.key_id_hex()),
                format!("{}\n", k.to_text()).into_bytes(),
            ));
        }
        let records: Vec<(u64, &str)> = self
            .records
            .iter()
            .map(|r| (r.index, r.envelope.as_str()))
            .collect();
        members.push((
            REPORT.into(),
            report_html(&self.manifest, &records, &self.keys).into_bytes(),
        ));
        let mut manifest = self.manifest.clone();
        manifest.version = BUNDLE_VERSION;
        manifest.members = members
            .iter()
            .map(|(name, data)| (name.clone(), data.len() as u64))
            .collect();

        let manifest = serde_json::to_vec_pretty(&manifest)?;
        let all = std::iter::once((MANIFEST, manifest.as_slice()))
            .chain(members.iter().map(|(n, d)| (n.as_str(), d.as_slice())));
        write_tar(out, all)
    }
}

/// Write `members` (name, bytes) in order as a tar archive of regular files, mode 0644,
/// no timestamps, and flush it.
pub(crate) fn write_tar<'a>(
    out: impl std::io::Write,
    members: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> std::io::Result<()> {
    let mut tar = tar::Builder::new(out);
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, name, data)?;
    }
    tar.into_inner()?.flush()
}

/// What a successful verification established.
#[derive(Debug)]
pub struct Verified {
    /// Records verified.
    pub records: u64,
    /// Tree size of the checkpoint.
    pub tree_size: u64,
    /// Root of the checkpoint.
    pub root: Hash,
    /// Origin of the log.
    pub origin: String,
    /// Earlier checkpoint the bundle was shown consistent with, if one was given.
    pub consistent_with: Option<u64>,
    /// Whether the bundle holds every record of the log.
    pub complete: bool,
    /// Where the records start: 0, or a segment's first leaf index (then `complete` says
    /// only that the segment holds every record from here to `tree_size`, and is false).
    pub from: u64,
    /// Root of the log's tree of size `from`, which the segment extends (the empty root
    /// when `from` is 0). A segment that follows another must start from its root.
    pub from_root: Hash,
}

impl std::fmt::Display for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "verified {} records of {} ({}), tree size {}, root {}",
            self.records,
            escape_control(&self.origin),
            if self.complete {
                "complete log".to_string()
            } else if self.from > 0 {
                format!("segment from record {}", self.from)
            } else {
                "filtered export".to_string()
            },
            self.tree_size,
            hex(&self.root)
        )?;
        if let Some(s) = self.consistent_with {
            write!(f, ", consistent with the earlier checkpoint of size {s}")?;
        }
        Ok(())
    }
}

/// A bundle's members as read: the manifest, and every other member in archive order.
struct Members {
    manifest: Manifest,
    list: Vec<(String, Vec<u8>)>,
}

impl Members {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.list
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.as_slice())
    }

    fn require(&self, name: &str) -> Result<&[u8], BundleError> {
        self.get(name).ok_or_else(|| {
            bad(format!(
                "bundle has no {name}: corrupt or not a runwarden bundle"
            ))
        })
    }
}

/// What a member is, by its name.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Manifest,
    Checkpoint,
    Records,
    Consistency,
    Report,
    Key,
}

fn kind_of(name: &str) -> Option<Kind> {
    Some(match name {
        MANIFEST => Kind::Manifest,
        CHECKPOINT => Kind::Checkpoint,
        RECORDS => Kind::Records,
        CONSISTENCY => Kind::Consistency,
        REPORT => Kind::Report,
        _ => {
            let id = name.strip_prefix(KEYS_DIR)?.strip_suffix(".pub")?;
            let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
            if id.len() != 8 || !id.bytes().all(hex) {
                return None;
            }
            Kind::Key
        }
    })
}

/// A member name for messages: quoted, control characters escaped.
fn shown(name: &[u8]) -> String {
    format!("\"{}\"", escape_control(&String::from_utf8_lossy(name)))
}

fn refused(name: &[u8], why: impl std::fmt::Display) -> BundleError {
    bad(format!(
        "bundle member {} refused: {why}; re-export the bundle",
        shown(name)
    ))
}

/// The member's name, if it is a plain relative path inside the bundle.
fn member_name(raw: &[u8]) -> Result<&str, BundleError> {
    let name = std::str::from_utf8(raw).map_err(|_| refused(raw, "its name is not UTF-8"))?;
    if name.is_empty() {
        return Err(refused(raw, "it has no name"));
    }
    if name.chars().any(crate::text::is_unsafe_char) {
        return Err(refused(raw, "its name holds control characters"));
    }
    if name.contains('\\') {
        return Err(refused(raw, "its name holds a backslash"));
    }
    let drive = name.len() >= 2 && name.as_bytes()[1] == b':';
    if name.starts_with('/') || drive {
        return Err(refused(raw, "absolute path"));
    }
    if name.split('/').any(|c| c == "..") {
        return Err(refused(raw, "path leaves the bundle"));
    }
    Ok(name)
}

/// Parse the manifest: a version this code reads, and (format 3) only expected member
/// names whose sizes are within the caps.
fn parse_manifest(data: &[u8]) -> Result<Manifest, BundleError> {
    let value: serde_json::Value =
        serde_json::from_slice(data).map_err(|e| bad(format!("{MANIFEST} is not JSON: {e}")))?;
    match value.get("version").and_then(|v| v.as_u64()) {
        Some(v) if (u64::from(OLDEST_VERSION)..=u64::from(BUNDLE_VERSION)).contains(&v) => {}
        Some(v) => {
            return Err(bad(format!(
                "unknown bundle version {v}; this runwarden reads versions {OLDEST_VERSION} to {}: upgrade runwarden",
                stream::STREAM_VERSION
            )));
        }
        None => return Err(bad(format!("{MANIFEST} has no version"))),
    }
    let m: Manifest = serde_json::from_value(value).map_err(|e| bad(format!("{MANIFEST}: {e}")))?;
    if (m.segment.is_some() || m.time_zone.is_some()) && m.version < stream::STREAM_VERSION {
        return Err(bad(format!(
            "{MANIFEST}: only a bundle of format {} carries a segment or a time zone, and this one is of format {}: corrupt; re-export the bundle",
            stream::STREAM_VERSION,
            m.version
        )));
    }
    if m.version >= 3 {
        if m.members.is_empty() {
            return Err(bad(format!(
                "{MANIFEST} lists no members: corrupt; re-export the bundle"
            )));
        }
        let mut total = 0u64;
        let mut keys = 0;
        for (name, &size) in &m.members {
            let kind = kind_of(name).filter(|k| *k != Kind::Manifest).ok_or_else(|| {
                bad(format!(
                    "{MANIFEST} lists a member {} that is not part of a runwarden bundle; re-export the bundle",
                    shown(name.as_bytes())
                ))
            })?;
            keys += usize::from(kind == Kind::Key);
            if size > fixed_cap(kind) || keys > MAX_KEYS {
                return Err(bad(format!(
                    "{MANIFEST} declares member {} of {size} bytes, more than a bundle may hold; re-export the bundle",
                    shown(name.as_bytes())
                )));
            }
            total = total.saturating_add(size);
        }
        if total > MAX_TOTAL {
            return Err(bad(format!(
                "{MANIFEST} declares {total} bytes of members, more than the {MAX_TOTAL} a bundle may hold"
            )));
        }
    } else if !m.members.is_empty() {
        return Err(bad(format!(
            "{MANIFEST}: a version {} manifest has no members field",
            m.version
        )));
    }
    Ok(m)
}

/// The largest member of `kind` any bundle may hold.
fn fixed_cap(kind: Kind) -> u64 {
    match kind {
        Kind::Manifest => MAX_MANIFEST,
        Kind::Checkpoint => MAX_CHECKPOINT,
        Kind::Key => MAX_KEY_FILE,
        Kind::Records | Kind::Consistency | Kind::Report => MAX_MEMBER,
    }
}

/// The largest a member may be, given the manifest: what format 3 declares, else a cap
/// derived from the counts a format 2 manifest states.
fn cap(m: &Manifest, kind: Kind, name: &str) -> Result<u64, BundleError> {
    if m.version >= 3 {
        return m
            .members
            .get(name)
            .copied()
            .ok_or_else(|| refused(name.as_bytes(), format!("{MANIFEST} does not list it")));
    }
    let derived = match kind {
        Kind::Records => m.record_count.saturating_mul(MAX_RECORD_LINE),
        Kind::Consistency => m
            .tree_size
            .saturating_mul(MAX_CONSISTENCY_ENTRY)
            .saturating_add(2),
        Kind::Report => m
            .record_count
            .saturating_mul(MAX_RECORD_LINE)
            .saturating_add(1 << 20),
        _ => u64::MAX,
    };
    Ok(derived.min(fixed_cap(kind)))
}

/// What a tar entry type is, for a message refusing it.
pub(crate) fn type_name(t: tar::EntryType) -> String {
    use tar::EntryType as T;
    match t {
        T::Link => "a hard link".into(),
        T::Symlink => "a symbolic link".into(),
        T::Char | T::Block => "a device".into(),
        T::Fifo => "a FIFO".into(),
        T::Directory => "a directory".into(),
        T::GNUSparse => "a sparse file".into(),
        T::XHeader | T::XGlobalHeader => "a pax extended header".into(),
        T::GNULongName | T::GNULongLink => "a GNU long-name header".into(),
        other => format!("a tar entry of type {:?}", other.as_byte() as char),
    }
}

/// Read a bundle's members, strictly and within bounds: the manifest first, then only the
/// members a bundle has, each a regular file, once, no larger than the manifest allows —
/// all checked on the header, before the member is read. Tar extensions are not
/// interpreted (no member name needs one), so what is read here is what `tar -x` extracts.
fn read_members<R: Read>(entries: &mut tar::Entries<'_, R>) -> Result<Contents, BundleError> {
    let mut manifest: Option<Manifest> = None;
    let mut list: Vec<(String, Vec<u8>)> = Vec::new();
    let mut keys_dir = false;
    let mut keys = 0usize;
    let mut total = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("corrupt or truncated bundle: {e}")))?;
        let raw = entry.path_bytes().into_owned();
        let etype = entry.header().entry_type();
        // Header sizes, not the entry's: a sparse map or pax record may claim another.
        let size = entry
            .header()
            .entry_size()
            .map_err(|e| bad(format!("corrupt bundle member {}: {e}", shown(&raw))))?;
        // `tar -cf … keys` adds the directory itself: harmless, once, empty.
        if etype.is_dir() && matches!(raw.as_slice(), b"keys/" | b"keys") && size == 0 {
            if std::mem::replace(&mut keys_dir, true) {
                return Err(refused(&raw, "it appears twice"));
            }
            continue;
        }
        if etype != tar::EntryType::Regular {
            return Err(refused(
                &raw,
                format!(
                    "it is {}; a bundle holds only regular files",
                    type_name(etype)
                ),
            ));
        }
        let name = member_name(&raw)?;
        let kind = kind_of(name).ok_or_else(|| {
            refused(
                &raw,
                format!(
                    "not part of a runwarden bundle (which holds {MANIFEST}, {CHECKPOINT}, {RECORDS}, {CONSISTENCY}, {REPORT} and {KEYS_DIR}KEYID.pub)"
                ),
            )
        })?;
        let twice = match kind {
            Kind::Manifest => manifest.is_some(),
            _ => list.iter().any(|(n, _)| n == name),
        };
        if twice {
            return Err(refused(&raw, "it appears twice"));
        }
        let limit = match &manifest {
            None if kind == Kind::Manifest => MAX_MANIFEST,
            None => {
                return Err(refused(
                    &raw,
                    format!("it comes before {MANIFEST}, which must be the first member"),
                ));
            }
            Some(m) => cap(m, kind, name)?,
        };
        if kind == Kind::Key {
            keys += 1;
            if keys > MAX_KEYS {
                return Err(refused(
                    &raw,
                    format!("a bundle holds at most {MAX_KEYS} keys"),
                ));
            }
        }
        if size > limit {
            let declared = if manifest.as_ref().is_some_and(|m| m.version >= 3) {
                format!("{MANIFEST} declares {limit}")
            } else {
                format!("at most {limit} are allowed")
            };
            return Err(refused(&raw, format!("it is {size} bytes but {declared}")));
        }
        total += size;
        if total > MAX_TOTAL {
            return Err(refused(
                &raw,
                format!("the bundle's members exceed {MAX_TOTAL} bytes in all"),
            ));
        }
        let data = read_entry(&mut entry, &raw, size)?;
        if kind == Kind::Manifest {
            // Format 4 is read as a stream, member by member, from here on.
            if serde_json::from_slice::<serde_json::Value>(&data)
                .is_ok_and(|v| v["version"] == stream::STREAM_VERSION)
            {
                return Ok(Contents::Stream(data));
            }
            manifest = Some(parse_manifest(&data)?);
        } else {
            list.push((name.to_string(), data));
        }
    }
    let manifest = manifest.ok_or_else(|| {
        bad(format!(
            "bundle has no {MANIFEST}: corrupt or not a runwarden bundle"
        ))
    })?;
    if let Some(missing) = manifest
        .members
        .keys()
        .find(|name| !list.iter().any(|(n, _)| n == *name))
    {
        return Err(bad(format!(
            "bundle member {} is listed in {MANIFEST} but missing; re-export the bundle",
            shown(missing.as_bytes())
        )));
    }
    Ok(Contents::Members(Box::new(Members { manifest, list })))
}

/// A bundle as [`read_members`] found it: every member of format 2 or 3 read, or the
/// manifest of format 4, whose other members are read as a stream.
enum Contents {
    Members(Box<Members>),
    Stream(Vec<u8>),
}

/// Verify a bundle against `trusted` keys; optionally against an earlier checkpoint note
/// the auditor already trusts (proves the log was only appended to since).
pub fn verify_bundle(
    bundle: impl Read,
    trusted: &[VerifyingKey],
    since_checkpoint: Option<&str>,
) -> Result<Verified, BundleError> {
    let mut archive = tar::Archive::new(bundle);
    let mut entries = archive
        .entries()
        .map_err(|e| bad(format!("not a runwarden bundle (tar): {e}")))?
        .raw(true);
    let members = match read_members(&mut entries)? {
        Contents::Members(m) => *m,
        Contents::Stream(manifest) => {
            return stream::verify_stream(&manifest, &mut entries, trusted, since_checkpoint, None);
        }
    };
    let get = |name: &str| members.require(name);
    let manifest = &members.manifest;
    let note = std::str::from_utf8(get(CHECKPOINT)?).map_err(|_| bad("checkpoint is not UTF-8"))?;
    let cp = Checkpoint::parse(note, trusted).map_err(|e| bad(format!("checkpoint: {e}")))?;
    if cp.size != manifest.tree_size {
        return Err(bad(format!(
            "the manifest says tree size {} but the signed checkpoint says {}",
            manifest.tree_size, cp.size
        )));
    }
    // The report names the log from the manifest: it must be the log that signed.
    if cp.origin != manifest.origin {
        return Err(bad(format!(
            "the manifest says log {:?} but the signed checkpoint is of log {:?}",
            manifest.origin, cp.origin
        )));
    }

    let consistent_with = consistent_since(&cp, trusted, since_checkpoint, || get(CONSISTENCY))?;

    let text = get(RECORDS)?;
    let lines: Vec<&[u8]> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut records = Vec::with_capacity(lines.len());
    for (pos, parsed) in parse_lines(&lines).into_iter().enumerate() {
        let r = parsed.map_err(|e| {
            let at = records.last().map(|r: &Line| r.index + 1).unwrap_or(0);
            bad_record(at, format!("line {} of {RECORDS} is corrupt: {e}", pos + 1))
        })?;
        records.push(r);
    }
    // Signatures, statements and inclusion proofs are independent per record: check them
    // on every core, then walk the records in order so the first problem is the one named.
    let mut crypto = check_all(&records, &cp, trusted);
    let present: std::collections::BTreeSet<u64> = records.iter().map(|r| r.index).collect();
    let mut count = 0u64;
    let mut last: Option<u64> = None;
    for (pos, r) in records.iter().enumerate() {
        let i = r.index;
        check_place(
            i,
            last,
            manifest.complete,
            |x| present.contains(&x),
            cp.size,
        )?;
        if let Some(e) = crypto[pos].take() {
            return Err(e);
        }
        last = Some(i);
        count += 1;
    }
    if count != manifest.record_count {
        let at = last.map(|l| l + 1).unwrap_or(0);
        return Err(bad_record(
            at,
            format!(
                "the manifest lists {} records but the bundle holds {count} (records removed)",
                manifest.record_count
            ),
        ));
    }
    if manifest.complete && count != cp.size {
        return Err(bad_record(
            count,
            format!(
                "missing: a complete bundle must hold all {} records of the checkpoint (truncated)",
                cp.size
            ),
        ));
    }
    check_report(&members, &records)?;
    Ok(Verified {
        records: count,
        tree_size: cp.size,
        root: cp.root,
        origin: cp.origin,
        consistent_with,
        complete: manifest.complete,
        from: 0,
        from_root: crate::merkle::EMPTY_ROOT,
    })
}

/// A `keys/KEYID.pub` member: one line of key text, named by its key id.
fn key_member(name: &str, data: &[u8]) -> Result<VerifyingKey, BundleError> {
    std::str::from_utf8(data)
        .ok()
        .and_then(|t| t.strip_suffix('\n'))
        .and_then(|t| VerifyingKey::from_text(t).ok())
        .filter(|k| name == format!("{KEYS_DIR}{}.pub", k.key_id_hex()))
        .ok_or_else(|| {
            refused(
                name.as_bytes(),
                "it is not the public key its name says (one line of key text, named by its key id)",
            )
        })
}

/// The `size` bytes of a member, all of them: the buffer grows with what is actually
/// read, never with what a header claims.
fn read_entry(entry: &mut impl Read, raw: &[u8], size: u64) -> Result<Vec<u8>, BundleError> {
    let mut data = Vec::with_capacity(size.min(1 << 20) as usize);
    entry.take(size).read_to_end(&mut data).map_err(|e| {
        bad(format!(
            "corrupt or truncated bundle at {}: {e}",
            shown(raw)
        ))
    })?;
    if data.len() as u64 != size {
        return Err(bad(format!(
            "truncated bundle: member {} ends after {} of its {size} bytes",
            shown(raw),
            data.len()
        )));
    }
    Ok(data)
}

/// Record `i` where it stands, after `last`: the next index of a complete log (or, if
/// the next index is `present` later, a record moved), anything after the previous one in
/// a filtered export, and within the checkpoint's tree of `size`.
fn check_place(
    i: u64,
    last: Option<u64>,
    complete: bool,
    present: impl Fn(u64) -> bool,
    size: u64,
) -> Result<(), BundleError> {
    let expected = last.map(|p| p + 1).unwrap_or(0);
    if last.is_some_and(|p| i <= p) || (complete && i != expected && present(expected)) {
        let after = last
            .map(|p| format!("after record {p}"))
            .unwrap_or_else(|| "first".into());
        return Err(bad_record(
            i,
            format!("out of order: it stands {after} (records reordered or duplicated)"),
        ));
    }
    if complete && i != expected {
        return Err(bad_record(
            expected,
            "missing from a complete bundle (removed)",
        ));
    }
    if i >= size {
        return Err(bad_record(
            i,
            format!("beyond the checkpoint's tree size {size}"),
        ));
    }
    Ok(())
}

/// With an earlier checkpoint the auditor trusts (`since`, a signed note): that the
/// bundle's checkpoint `cp` is an append-only extension of it, by the proof in
/// `consistency` (the member's bytes, read only if needed). Returns its size.
fn consistent_since<'a>(
    cp: &Checkpoint,
    trusted: &[VerifyingKey],
    since: Option<&str>,
    consistency: impl FnOnce() -> Result<&'a [u8], BundleError>,
) -> Result<Option<u64>, BundleError> {
    let Some(old_note) = since else {
        return Ok(None);
    };
    let old = Checkpoint::parse(old_note, trusted)
        .map_err(|e| bad(format!("--since-checkpoint: {e}")))?;
    if old.origin != cp.origin {
        return Err(bad(format!(
            "--since-checkpoint is for log {:?}, the bundle for {:?}",
            old.origin, cp.origin
        )));
    }
    if old.size > cp.size {
        return Err(bad(format!(
            "the bundle's checkpoint (size {}) is older than the one you trust (size {}): the log was rolled back or the bundle is stale",
            cp.size, old.size
        )));
    }
    if old.size == cp.size {
        if old.root != cp.root {
            return Err(bad(
                "the bundle's checkpoint and yours have the same size but different roots: the log was rewritten",
            ));
        }
    } else {
        let list: Vec<Consistency> = serde_json::from_slice(consistency()?)
            .map_err(|e| bad(format!("consistency.json: {e}")))?;
        let c = list.iter().find(|c| c.old_size == old.size).ok_or_else(|| {
            bad(format!("the bundle has no consistency proof from size {}: export it again from a log that kept that checkpoint", old.size))
        })?;
        verify_consistency(old.size, cp.size, &old.root, &cp.root, &c.proof).map_err(|e| {
            bad(format!(
                "the log is not an append-only extension of your checkpoint: {e}"
            ))
        })?;
    }
    Ok(Some(old.size))
}

/// The bundle's report is unsigned: it must be exactly the report of the records just
/// verified, or the bundle is refused. The keys it lists must be the key files beside it.
fn check_report(members: &Members, records: &[Line]) -> Result<(), BundleError> {
    let mut keys = Vec::new();
    for (name, data) in &members.list {
        if kind_of(name) != Some(Kind::Key) {
            continue;
        }
        keys.push(key_member(name, data)?);
    }
    let Some(report) = members.get(REPORT) else {
        return Ok(());
    };
    let records: Vec<(u64, &str)> = records
        .iter()
        .map(|r| (r.index, r.envelope.get()))
        .collect();
    if report != report_html(&members.manifest, &records, &keys).as_bytes() {
        return Err(bad(format!(
            "{REPORT} is not the report of the records in this bundle (altered or forged): do not rely on it; re-export the bundle"
        )));
    }
    Ok(())
}

/// The envelope's claims about itself: enough to know it is a runwarden statement without
/// building the whole document (`evidence show` reads it in full).
#[derive(Deserialize)]
struct StatementHead {
    #[serde(rename = "_type")]
    statement_type: String,
    #[serde(rename = "predicateType")]
    predicate_type: String,
}

/// Everything about one record except its signature, which is returned for batching:
/// (message = PAE, signature, the trusted key that should have made it).
fn prepare(r: &Line, cp: &Checkpoint, ids: &[String]) -> Result<Opened, BundleError> {
    let (pae, at, sig, k) = open_record(r, ids)?;
    let i = r.index;
    let proof = r
        .proof
        .and_then(hashes_b64::decode)
        .ok_or_else(|| bad_record(i, "malformed inclusion proof"))?;
    verify_inclusion(
        &leaf_hash(r.envelope.get().as_bytes()),
        i,
        cp.size,
        &proof,
        &cp.root,
    )
    .map_err(|e| {
        bad_record(
            i,
            format!("not in the log committed to by the checkpoint (altered or moved): {e}"),
        )
    })?;
    Ok((pae, at, sig, k))
}

/// A record opened for batch verification: its PAE, where the decoded payload starts in
/// it, the signature, and the position of the trusted key that should have made it.
type Opened = (Vec<u8>, usize, ed25519_dalek::Signature, usize);

/// That the statement `payload` of record `i` claims to be a runwarden invocation
/// statement (its header only: the rest is not built).
fn statement_head(i: u64, payload: &[u8]) -> Result<(), BundleError> {
    let head: StatementHead = serde_json::from_slice(payload)
        .map_err(|e| bad_record(i, format!("not a runwarden statement: {e}")))?;
    if head.statement_type != crate::record::STATEMENT_TYPE
        || head.predicate_type != crate::record::PREDICATE_TYPE
    {
        return Err(bad_record(i, "not a runwarden invocation statement"));
    }
    Ok(())
}

/// A record's envelope opened: its PAE (the decoded payload from the returned offset on)
/// and the signature by a trusted key (by position in `ids`), not yet verified. What the
/// payload says is not checked here.
fn open_record(r: &Line, ids: &[String]) -> Result<Opened, BundleError> {
    use base64::Engine as _;
    let i = r.index;
    let env: crate::dsse::EnvelopeRef = serde_json::from_str(r.envelope.get())
        .map_err(|e| bad_record(i, format!("not a DSSE envelope: {e}")))?;
    if env.payload_type != crate::record::PAYLOAD_TYPE {
        return Err(bad_record(
            i,
            format!(
                "payload type {:?} is not an in-toto statement",
                env.payload_type
            ),
        ));
    }
    // The PAE is built around the decoded payload in one buffer.
    let (pae, at) = crate::dsse::pae_decoding(&env.payload_type, &env.payload)
        .map_err(|e| bad_record(i, e.to_string()))?;
    let signed = env.signatures.iter().find_map(|s| {
        let k = ids
            .iter()
            .position(|id| id.eq_ignore_ascii_case(&s.keyid))?;
        Some((s, k))
    });
    let Some((sig_entry, k)) = signed else {
        let signers: Vec<&str> = env.signatures.iter().map(|s| s.keyid.as_ref()).collect();
        return Err(bad_record(
            i,
            format!("signature: no signature by a trusted key (signed by key ids {signers:?})"),
        ));
    };
    let sig = base64::engine::general_purpose::STANDARD
        .decode(sig_entry.sig.as_bytes())
        .ok()
        .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
        .ok_or_else(|| bad_record(i, "signature: malformed"))?;
    Ok((pae, at, sig, k))
}

/// Check a run of records: everything but signatures one by one, then all signatures in
/// one Ed25519 batch; if the batch fails, one by one to name the bad ones.
fn check_chunk(
    part: &[Line],
    cp: &Checkpoint,
    trusted: &[VerifyingKey],
) -> Vec<Option<BundleError>> {
    let ids: Vec<String> = trusted.iter().map(|k| k.key_id_hex()).collect();
    let mut errors: Vec<Option<BundleError>> = (0..part.len()).map(|_| None).collect();
    let (mut msgs, mut sigs, mut keys, mut at) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (pos, r) in part.iter().enumerate() {
        match prepare(r, cp, &ids).and_then(|o| statement_head(r.index, &o.0[o.1..]).map(|()| o)) {
            Ok((m, _, s, k)) => {
                msgs.push(m);
                sigs.push(s);
                keys.push(*trusted[k].dalek());
                at.push(pos);
            }
            Err(e) => errors[pos] = Some(e),
        }
    }
    for j in bad_signatures(&msgs, &sigs, &keys) {
        let pos = at[j];
        errors[pos] = Some(bad_record(
            part[pos].index,
            "signature: does not verify with the trusted key",
        ));
    }
    errors
}

/// Which of the signatures (by position) do not verify: all of them in one Ed25519 batch,
/// and only if the batch fails, one by one to name the bad ones.
fn bad_signatures(
    msgs: &[Vec<u8>],
    sigs: &[ed25519_dalek::Signature],
    keys: &[ed25519_dalek::VerifyingKey],
) -> Vec<usize> {
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    // Batch verification is the fast path; a small-order trusted key (never a real host's)
    // would weaken it, so then every signature is checked strictly.
    let weak = keys.iter().any(|k| k.is_weak());
    if !weak && ed25519_dalek::verify_batch(&refs, sigs, keys).is_ok() {
        return Vec::new();
    }
    (0..msgs.len())
        .filter(|&j| keys[j].verify_strict(&msgs[j], &sigs[j]).is_err())
        .collect()
}

/// Parse `records.jsonl` lines on every core, keeping their order.
fn parse_lines<'a>(lines: &[&'a [u8]]) -> Vec<Result<Line<'a>, serde_json::Error>> {
    map_on_every_core(lines, |l| serde_json::from_slice(l))
}

/// `f` of each item, computed on every core, in the items' order. A panic in a worker is
/// passed on rather than dropping its share (which would shift every later result).
fn map_on_every_core<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 16);
    let chunk = items.len().div_ceil(workers).max(1);
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(f).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// [`check_chunk`] over every record, on every core; `None` where a record is sound.
fn check_all(
    records: &[Line],
    cp: &Checkpoint,
    trusted: &[VerifyingKey],
) -> Vec<Option<BundleError>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 16);
    let chunk = records.len().div_ceil(workers).clamp(1, 4096);
    let parts: Vec<&[Line]> = records.chunks(chunk).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<Vec<Option<BundleError>>> = (0..parts.len()).map(|_| Vec::new()).collect();
    let results = std::sync::Mutex::new(&mut out);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(part) = parts.get(n) else { break };
                    let r = check_chunk(part, cp, trusted);
                    results.lock().unwrap_or_else(|e| e.into_inner())[n] = r;
                }
            });
        }
    });
    out.into_iter().flatten().collect()
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One row of the report and the outcome it tallies; `None` for a record that is not a
/// runwarden statement.
fn report_row(index: u64, envelope: &str) -> Option<(String, String)> {
    let env = Envelope::from_json(envelope).ok()?;
    let st = Statement::from_envelope(&env).ok()?;
    let p = &st.predicate;
    let why = match serde_json::to_value(&p.provenance) {
        Ok(v) => match v["tier"].as_str() {
            Some("manual") => format!(
                "run by hand{}",
                v["operator"]
                    .as_str()
                    .map(|o| format!(" by {o}"))
                    .unwrap_or_default()
            ),
            Some("L1") => format!("rule {}", v["rule_id"].as_str().unwrap_or("?")),
            Some("L2") => format!(
                "planner {} ({})",
                v["model"].as_str().unwrap_or("?"),
                v["rationale"].as_str().unwrap_or("")
            ),
            Some("L3") => format!("approved by {}", v["approver"].as_str().unwrap_or("?")),
            Some("none") => format!("nothing decided: {}", v["reason"].as_str().unwrap_or("?")),
            _ => "?".into(),
        },
        Err(_) => "?".into(),
    };
    let calls = p.trace.as_array().map_or(0, Vec::len);
    let denied = p
        .trace
        .as_array()
        .map_or(0, |t| t.iter().filter(|e| e["allowed"] == false).count());
    let row = format!(
        "<tr><td>{}</td><td class=\"when\">{}</td><td>{}</td><td>{}</td><td>{} {}</td><td>{}</td><td class=\"s-{}\">{}</td><td>{}</td><td>{} ({} denied)</td></tr>\n",
        index,
        esc(&p.started_at),
        esc(&p.tenant),
        esc(&p.host_id),
        esc(st.subject.first().map_or("?", |s| s.name.as_str())),
        esc(&p.runbook_version),
        esc(&why),
        esc(p.outcome["status"].as_str().unwrap_or("?")),
        esc(p.outcome["status"].as_str().unwrap_or("?")),
        esc(&format!(
            "{}{}",
            p.outcome["summary"].as_str().unwrap_or(""),
            if p.dry_run {
                " (dry run: nothing was changed)"
            } else {
                ""
            }
        )),
        calls,
        denied,
    );
    Some((row, p.outcome["status"].as_str().unwrap_or("?").to_string()))
}

/// [`report_row`] of every record, on every core (verification makes the report again).
fn report_rows(records: &[(u64, &str)]) -> Vec<Option<(String, String)>> {
    map_on_every_core(records, |&(i, e)| report_row(i, e))
}

/// A report a non-engineer can read: what ran where, when, why, with what outcome. Made
/// from `records` (leaf index, envelope) alone, so verification can make it again.
fn report_html(manifest: &Manifest, records: &[(u64, &str)], keys: &[VerifyingKey]) -> String {
    let mut rows = String::new();
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for (row, status) in report_rows(records).into_iter().flatten() {
        rows.push_str(&row);
        *tally.entry(status).or_default() += 1;
    }
    let outcomes: Vec<String> = tally
        .iter()
        .map(|(status, n)| format!("{n} {}", esc(status)))
        .collect();
    let legend: String = [
        ("healed", "the problem was found and fixed"),
        ("no-op", "nothing needed doing"),
        ("failed", "the runbook tried and could not fix the problem"),
        ("refused", "stopped before it started: the host's policy does not allow what it asked for"),
        ("invalid_params", "stopped before it started: its inputs were not valid"),
        ("timeout, out_of_fuel, out_of_memory, output_limit, trapped", "stopped by the sandbox's limits or a fault; nothing outside its permissions could be touched"),
    ]
    .iter()
    .map(|(k, v)| format!("<dt>{k}</dt><dd>{v}</dd>"))
    .collect();
    let keys: String = keys
        .iter()
        .map(|k| format!("<li><code>{}</code></li>", esc(&k.to_text())))
        .collect();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>runwarden evidence — {origin}</title>\n\
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;width:100%}}\
td,th{{border:1px solid #ccc;padding:4px 6px;font-size:14px;vertical-align:top}}th{{background:#f3f3f3}}\
.when{{white-space:nowrap}}dt{{font-weight:bold;float:left;clear:left;margin-right:.5em}}dd{{margin:0 0 .2em 0}}\
.s-healed,.s-no-op{{color:#176f2c}}.s-failed,.s-timeout,.s-trapped,.s-out_of_fuel,.s-out_of_memory,.s-output_limit{{color:#a31515}}.s-refused,.s-invalid_params{{color:#8a5a00}}</style></head>\n\
<body><h1>Remediation evidence</h1>\n<p>Log <b>{origin}</b>: {count} of {size} records, exported {created}. \
Every record below is signed by the host that ran it and proven to be part of the log whose signed checkpoint is in this bundle. \
Check it with <code>runwarden evidence verify BUNDLE --key KEY.pub</code>; this page alone proves nothing.</p>\n\
<p>Outcomes: {outcomes}. {kind}</p>\n\
<table><tr><th>#</th><th>When (UTC)</th><th>Tenant</th><th>Host</th><th>Runbook</th><th>Why</th><th>Outcome</th><th>Summary</th><th>Host calls</th></tr>\n{rows}</table>\n\
<h2>What the outcomes mean</h2><dl>{legend}</dl>\n\
<p>“Host calls” counts what the runbook asked the host to do (check a service, restart it, read a directory…) and how many of those the policy denied; each call is listed in the signed record. A dry run only simulates changes.</p>\n\
<h2>Signing keys</h2><ul>{keys}</ul>\n</body></html>\n",
        outcomes = if outcomes.is_empty() {
            "none".to_string()
        } else {
            outcomes.join(", ")
        },
        kind = if manifest.complete {
            "This is the complete log up to the checkpoint: nothing was left out."
        } else {
            "This is a filtered export: it proves each record shown is authentic and in the log, not that no others exist."
        },
        origin = esc(&manifest.origin),
        count = records.len(),
        size = manifest.tree_size,
        created = esc(&manifest.created_at),
    )
}

/// Export the records of the database's own log that match `filter`, with a fresh
/// checkpoint signed by `key` (stored, so later exports can prove consistency with it).
pub async fn export(
    store: &crate::store::Store,
    filter: &crate::store::Filter,
    key: &crate::keys::SigningKey,
    origin: &str,
    mut keys: Vec<VerifyingKey>,
) -> crate::error::Result<BundleContents> {
    let size = store.size().await?;
    let leaves = store.leaf_hashes(size).await?;
    let tree = crate::merkle::MerkleTree::new(leaves.clone());
    let cp = Checkpoint {
        origin: origin.to_string(),
        size,
        root: tree.root(),
    };
    let note = cp.sign(key)?;
    store.put_checkpoint(size, &cp.root, &note).await?;
    let mut consistency = Vec::new();
    for old in store.checkpoint_sizes().await? {
        if old > 0 && old < size {
            consistency.push(Consistency {
                old_size: old,
                proof: crate::merkle::consistency_proof(&leaves, old)?,
            });
        }
    }
    let signer = key.verifying_key();
    if !keys.iter().any(|k| k.to_text() == signer.to_text()) {
        keys.push(signer);
    }
    let listed = store.list(filter).await?;
    assemble(origin, &tree, note, listed, consistency, keys, filter)
}

/// A bundle of `listed` (records of the log `tree`), proved against `note`.
fn assemble(
    origin: &str,
    tree: &crate::merkle::MerkleTree,
    note: String,
    listed: Vec<crate::store::StoredRecord>,
    consistency: Vec<Consistency>,
    keys: Vec<VerifyingKey>,
    filter: &crate::store::Filter,
) -> crate::error::Result<BundleContents> {
    let size = tree.size();
    let mut records = Vec::with_capacity(listed.len());
    for r in listed {
        if r.index >= size {
            continue;
        }
        records.push(BundleRecord {
            index: r.index,
            envelope: String::from_utf8(r.envelope).map_err(|_| {
                crate::error::Error::MalformedRecord(format!("record {} is not UTF-8", r.index))
            })?,
            proof: tree.inclusion_proof(r.index)?,
        });
    }
    Ok(BundleContents {
        manifest: Manifest {
            version: BUNDLE_VERSION,
            origin: origin.to_string(),
            tree_size: size,
            record_count: records.len() as u64,
            complete: filter.is_empty(),
            filter: filter.to_json(),
            created_at: now_rfc3339(),
            members: BTreeMap::new(),
            segment: None,
            time_zone: None,
            report: None,
        },
        checkpoint_note: note,
        records,
        consistency,
        keys,
    })
}

/// Now as RFC 3339.
pub fn now_rfc3339() -> String {
    rfc3339_ms(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    )
}
