//! Bundle format 4: written and verified as a stream, at any size, everything sealed.
//!
//! A bundle of format 4 holds, in this order and nothing else (verification refuses any
//! other member, order, or a member twice):
//!
//! 1. `runwarden-bundle.json`: the manifest (version 4, no `members`): the log's origin,
//!    the checkpoint's tree size, how many records, whether complete, the export's filter.
//! 2. `checkpoint.txt`, the signed checkpoint; 3. `consistency.json`; 4. `keys/KEYID.pub`.
//! 5. `records/00000000.jsonl`, `records/00000001.jsonl`, …: the records in leaf order,
//!    [`CHUNK_RECORDS`] per chunk (fewer only when the next would pass [`MAX_CHUNK`]
//!    bytes, and in the last). In a **complete** bundle a line is
//!    `{"index":N,"envelope":{…}}` and the records are the log's leaves `0..tree_size`:
//!    verification hashes them into the tree and must arrive at the checkpoint's root, which
//!    proves — from signed data alone — that every record of the log up to the checkpoint
//!    is there, in order, and nothing else. A **filtered** bundle's lines also carry each
//!    record's inclusion proof (`"proof":"BASE64"`).
//! 6. `report.html`: made from the records alone, at any size a page of summaries and the
//!    records that need attention; verification makes it again and compares.
//! 7. `seal.dsse.json`: a DSSE envelope signed by the exporter's key (the log's own key),
//!    over the manifest's sha256 and every other member's name, size and sha256, in order.
//!    Nothing in the bundle is outside the seal: the filter a filtered export states is
//!    signed, and so is the report.
//!
//! Memory is bounded by one chunk (at most [`MAX_CHUNK`] bytes) and the report's tallies,
//! whatever the number of records; each chunk's signatures are checked in batches on every
//! core.

use super::*;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::io::Write;

/// The format this module writes and reads.
pub(super) const STREAM_VERSION: u32 = 4;
/// The seal: the last member.
pub const SEAL: &str = "seal.dsse.json";
/// DSSE payload type of a bundle's seal.
pub const SEAL_PAYLOAD_TYPE: &str = "application/vnd.runwarden.bundle-seal+json";
const CHUNKS_DIR: &str = "records/";
/// Records per chunk.
const CHUNK_RECORDS: usize = 4096;
/// Bytes per chunk, at most: a record line is at most [`MAX_RECORD_LINE`], so one always
/// fits in an empty chunk.
const MAX_CHUNK: u64 = 2 * MAX_RECORD_LINE;
/// `consistency.json`: a proof per earlier checkpoint the log kept.
const MAX_CONSISTENCY: u64 = 64 << 20;
/// The report: summaries, and at most [`ATTENTION`] rows of records.
const MAX_REPORT: u64 = 16 << 20;
/// The seal, besides a line per member.
const SEAL_BASE: u64 = 16 << 10;
const SEAL_PER_MEMBER: u64 = 512;
/// The report's layout this code writes (see [`Manifest::report`]).
const REPORT_LAYOUT: u32 = 4;
/// How many records needing attention the report lists (the latest).
const ATTENTION: usize = 1000;
/// Distinct hosts, runbooks, months or approvers the report tallies by name; the rest are
/// counted together.
const MAX_NAMES: usize = 5000;

/// What a seal says.
#[derive(Serialize, Deserialize, PartialEq, Debug)]
#[serde(deny_unknown_fields)]
struct Seal {
    version: u32,
    /// sha256 (hex) of the manifest member.
    manifest: String,
    /// Every other member but the seal, in order.
    members: Vec<Sealed>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct Sealed {
    name: String,
    size: u64,
    sha256: String,
}

fn chunk_name(n: u64) -> String {
    format!("{CHUNKS_DIR}{n:08}.jsonl")
}

fn io_err(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

/// Writes a bundle of format 4 as the records come: [`BundleWriter::start`], then
/// [`BundleWriter::push`] each record in leaf order, then [`BundleWriter::finish`].
pub struct BundleWriter<W: Write> {
    tar: tar::Builder<W>,
    /// Where in the tar the bundle's members go: "" for a bundle of its own, a log's
    /// directory inside a tenant bundle.
    prefix: String,
    manifest: Manifest,
    manifest_sha256: String,
    sealed: Vec<Sealed>,
    keys: Vec<VerifyingKey>,
    chunk: Vec<u8>,
    in_chunk: usize,
    chunks: u64,
    written: u64,
    last: Option<u64>,
    /// The first record's index: 0, or a segment's start.
    from: u64,
    tally: Tally,
}

impl<W: Write> BundleWriter<W> {
    /// Begin a bundle: `manifest` (its `record_count` is what [`BundleWriter::finish`]
    /// checks was pushed), the signed `checkpoint_note`, `consistency` proofs and `keys`.
    pub fn start(
        out: W,
        manifest: &Manifest,
        checkpoint_note: &str,
        consistency: &[Consistency],
        keys: &[VerifyingKey],
    ) -> std::io::Result<BundleWriter<W>> {
        Self::start_in(
            tar::Builder::new(out),
            "",
            manifest,
            checkpoint_note,
            consistency,
            keys,
        )
    }

    /// Begin a bundle whose members go under `prefix` of the tar `tar` (a log of a tenant
    /// bundle); [`BundleWriter::finish_in`] gives the tar back.
    pub(crate) fn start_in(
        tar: tar::Builder<W>,
        prefix: &str,
        manifest: &Manifest,
        checkpoint_note: &str,
        consistency: &[Consistency],
        keys: &[VerifyingKey],
    ) -> std::io::Result<BundleWriter<W>> {
        let tally = Tally::of(manifest).map_err(io_err)?;
        let mut manifest = manifest.clone();
        manifest.version = STREAM_VERSION;
        manifest.members = BTreeMap::new();
        let from = manifest.segment.as_ref().map_or(0, |s| s.from);
        if manifest.segment.is_some()
            && (!manifest.complete
                || manifest.record_count != manifest.tree_size - from.min(manifest.tree_size))
        {
            return Err(io_err(format!(
                "a segment holds every record from {from} to the tree size {}, and nothing else",
                manifest.tree_size
            )));
        }
        let mut keys = keys.to_vec();
        keys.sort_by_key(|k| k.key_id_hex());
        keys.dedup_by_key(|k| k.key_id_hex());
        let mut w = BundleWriter {
            tar,
            prefix: prefix.to_string(),
            manifest_sha256: String::new(),
            manifest,
            sealed: Vec::new(),
            keys,
            chunk: Vec::new(),
            in_chunk: 0,
            chunks: 0,
            written: 0,
            last: None,
            from,
            tally,
        };
        let manifest = manifest_bytes(&w.manifest)?;
        w.manifest_sha256 = hex::encode(Sha256::digest(&manifest));
        w.member(MANIFEST, &manifest, false)?;
        w.member(CHECKPOINT, checkpoint_note.as_bytes(), true)?;
        w.member(CONSISTENCY, &serde_json::to_vec(consistency)?, true)?;
        for k in w.keys.clone() {
            let name = format!("{KEYS_DIR}{}.pub", k.key_id_hex());
            w.member(&name, format!("{}\n", k.to_text()).as_bytes(), true)?;
        }
        Ok(w)
    }

    fn member(&mut self, name: &str, data: &[u8], sealed: bool) -> std::io::Result<()> {
        if sealed {
            self.sealed.push(Sealed {
                name: name.to_string(),
                size: data.len() as u64,
                sha256: hex::encode(Sha256::digest(data)),
            });
        }
        append_member(&mut self.tar, &format!("{}{name}", self.prefix), data)
    }

    /// sha256 (hex) of the manifest as written: what the seal and a tenant bundle's
    /// statement name the bundle by.
    pub(crate) fn manifest_sha256(&self) -> &str {
        &self.manifest_sha256
    }

    /// Add the next record (leaf order). Its proof goes in only if the bundle is filtered.
    pub fn push(&mut self, r: &BundleRecord) -> std::io::Result<()> {
        if self.last.is_some_and(|l| r.index <= l) {
            return Err(io_err(format!(
                "record {} comes after record {}: records go in leaf order",
                r.index,
                self.last.unwrap_or_default()
            )));
        }
        if self.manifest.complete && r.index != self.from + self.written {
            return Err(io_err(format!(
                "record {} in a complete bundle where record {} belongs",
                r.index,
                self.from + self.written
            )));
        }
        // Parsing it as an envelope is the check that it is one line of JSON, and gives
        // the report its facts.
        let payload = (!r.envelope.contains('\n'))
            .then(|| envelope_payload(&r.envelope))
            .flatten()
            .ok_or_else(|| {
                io_err(format!(
                    "record {} is not a one-line DSSE envelope",
                    r.index
                ))
            })?;
        let head = if self.manifest.complete {
            format!("{{\"index\":{},\"envelope\":", r.index)
        } else {
            format!(
                "{{\"index\":{},\"proof\":\"{}\",\"envelope\":",
                r.index,
                hashes_b64::encode(&r.proof)
            )
        };
        let len = (head.len() + r.envelope.len() + 2) as u64;
        if len > MAX_RECORD_LINE {
            return Err(io_err(format!(
                "record {} is {len} bytes: more than a bundle may hold ({MAX_RECORD_LINE})",
                r.index
            )));
        }
        if self.in_chunk == CHUNK_RECORDS || self.chunk.len() as u64 + len > MAX_CHUNK {
            self.flush_chunk()?;
        }
        self.chunk.extend_from_slice(head.as_bytes());
        self.chunk.extend_from_slice(r.envelope.as_bytes());
        self.chunk.extend_from_slice(b"}\n");
        self.in_chunk += 1;
        self.written += 1;
        self.last = Some(r.index);
        let place = (self.chunks, self.in_chunk - 1);
        self.tally
            .add(r.index, place, facts_of(&payload).ok().as_ref());
        Ok(())
    }

    /// [`BundleWriter::push`] a record as the store holds it.
    fn push_stored(
        &mut self,
        r: crate::store::StoredRecord,
        proof: Vec<Hash>,
    ) -> crate::error::Result<()> {
        let envelope = String::from_utf8(r.envelope).map_err(|_| {
            crate::error::Error::MalformedRecord(format!("record {} is not UTF-8", r.index))
        })?;
        self.push(&BundleRecord {
            index: r.index,
            envelope,
            proof,
        })
        .map_err(io)
    }

    fn flush_chunk(&mut self) -> std::io::Result<()> {
        if self.in_chunk == 0 {
            return Ok(());
        }
        // The buffer is kept for the next chunk: no chunk-sized allocation per chunk.
        let mut data = std::mem::take(&mut self.chunk);
        self.member(&chunk_name(self.chunks), &data, true)?;
        data.clear();
        self.chunk = data;
        self.chunks += 1;
        self.in_chunk = 0;
        Ok(())
    }

    /// End the bundle: the last chunk, the report and the seal, signed by `sealer`;
    /// returns the output.
    pub fn finish(self, sealer: &crate::keys::SigningKey) -> std::io::Result<W> {
        let mut out = self.finish_in(sealer)?.into_inner()?;
        out.flush()?;
        Ok(out)
    }

    /// End the bundle as [`BundleWriter::finish`] does, and give back the tar it was
    /// written into, to go on with.
    pub(crate) fn finish_in(
        mut self,
        sealer: &crate::keys::SigningKey,
    ) -> std::io::Result<tar::Builder<W>> {
        if self.written != self.manifest.record_count {
            return Err(io_err(format!(
                "{} records were written but the manifest says {}",
                self.written, self.manifest.record_count
            )));
        }
        self.flush_chunk()?;
        let report = self.tally.render(&self.manifest, &self.keys);
        self.member(REPORT, report.as_bytes(), true)?;
        let seal = Seal {
            version: STREAM_VERSION,
            manifest: self.manifest_sha256.clone(),
            members: std::mem::take(&mut self.sealed),
        };
        let envelope = Envelope::sign(SEAL_PAYLOAD_TYPE, &serde_json::to_vec(&seal)?, sealer);
        self.member(SEAL, envelope.to_json().as_bytes(), false)?;
        Ok(self.tar)
    }
}

/// Append a regular member `name` holding `data` to `tar`, as every bundle writes one
/// (mode 0644, time 0).
pub(crate) fn append_member<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    data: &[u8],
) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, name, data)
}

/// A manifest as a bundle holds it.
fn manifest_bytes(manifest: &Manifest) -> std::io::Result<Vec<u8>> {
    Ok(serde_json::to_vec_pretty(manifest)?)
}

/// The decoded payload of a DSSE envelope (JSON text), if it is one.
fn envelope_payload(envelope: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let env: crate::dsse::EnvelopeRef = serde_json::from_str(envelope).ok()?;
    base64::engine::general_purpose::STANDARD
        .decode(env.payload.as_bytes())
        .ok()
}

/// What the report needs of one record's statement.
#[derive(Clone, Debug, PartialEq)]
struct Facts {
    started_at: String,
    tenant: String,
    host: String,
    runbook: String,
    status: String,
    summary: String,
    dry_run: bool,
    tier: String,
    approver: Option<String>,
    denied_calls: u64,
    /// A person's decision on an escalation: whether it came by the SLA deadline.
    in_sla: Option<bool>,
}

#[derive(Deserialize)]
struct FactsStatement<'a> {
    #[serde(rename = "_type", borrow)]
    statement_type: std::borrow::Cow<'a, str>,
    #[serde(rename = "predicateType", borrow)]
    predicate_type: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    subject: Vec<FactsSubject<'a>>,
    #[serde(borrow)]
    predicate: FactsPredicate<'a>,
}

#[derive(Deserialize)]
struct FactsSubject<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct FactsPredicate<'a> {
    #[serde(borrow)]
    host_id: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    tenant: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    started_at: std::borrow::Cow<'a, str>,
    #[serde(default)]
    dry_run: bool,
    #[serde(borrow)]
    provenance: FactsProvenance<'a>,
    #[serde(borrow, default)]
    outcome: FactsOutcome<'a>,
    #[serde(default)]
    trace: Vec<FactsCall>,
    #[serde(borrow, default)]
    guardrails: Option<&'a serde_json::value::RawValue>,
}

/// A guardrail's verdict in a record, as far as the report reads it.
#[derive(Deserialize)]
struct FactsVerdict<'a> {
    #[serde(borrow, default)]
    guardrail: std::borrow::Cow<'a, str>,
    #[serde(default)]
    escalation: Option<FactsEscalation<'a>>,
}

#[derive(Deserialize)]
struct FactsEscalation<'a> {
    #[serde(borrow)]
    sla_deadline: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    decided_at: Option<std::borrow::Cow<'a, str>>,
}

/// Whether the person's decision a record's guardrails name (the `approval` verdict's
/// escalation) came by its SLA deadline; `None` when they name none (or not legibly).
fn decided_in_sla(guardrails: Option<&serde_json::value::RawValue>) -> Option<bool> {
    let raw = guardrails?.get();
    if !raw.contains("\"escalation\"") {
        return None;
    }
    let verdicts: Vec<FactsVerdict> = serde_json::from_str(raw).ok()?;
    verdicts
        .into_iter()
        .filter(|v| v.guardrail == "approval")
        .find_map(|v| {
            let e = v.escalation?;
            let ms = runwarden_report::tz::parse_utc_ms;
            Some(ms(e.decided_at.as_deref()?)? <= ms(&e.sla_deadline)?)
        })
}

#[derive(Deserialize)]
struct FactsProvenance<'a> {
    #[serde(borrow)]
    tier: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    approver: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct FactsOutcome<'a> {
    #[serde(borrow, default)]
    status: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    summary: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct FactsCall {
    #[serde(default = "yes")]
    allowed: bool,
}

fn yes() -> bool {
    true
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub(super) fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The report's facts of a runwarden invocation statement's JSON, or why it is not one.
fn facts_of(payload: &[u8]) -> Result<Facts, String> {
    let s: FactsStatement = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    if s.statement_type != crate::record::STATEMENT_TYPE
        || s.predicate_type != crate::record::PREDICATE_TYPE
    {
        return Err("not an invocation statement".into());
    }
    let p = s.predicate;
    Ok(Facts {
        started_at: p.started_at.into_owned(),
        tenant: p.tenant.into_owned(),
        host: p.host_id.into_owned(),
        runbook: s
            .subject
            .into_iter()
            .next()
            .map_or_else(|| "?".to_string(), |x| x.name.into_owned()),
        status: p.outcome.status.into_owned(),
        summary: cut(&p.outcome.summary, 300),
        dry_run: p.dry_run,
        tier: p.provenance.tier.into_owned(),
        approver: p.provenance.approver.map(|a| cut(&a, 200)),
        denied_calls: p.trace.iter().filter(|c| !c.allowed).count() as u64,
        in_sla: decided_in_sla(p.guardrails),
    })
}

/// How the report counts an outcome. A dry run is a dry run whatever its status: it
/// changed nothing, so it never counts as healed.
///
/// `people`: the report counts decisions to hand a problem to a person (escalated, or
/// waiting for an approval) on their own — every bundle with a time zone does; older ones
/// count them as "other", and their report must read as it was made.
fn class_of(f: &Facts, people: bool) -> &'static str {
    if f.dry_run {
        return "dry run";
    }
    match f.status.as_str() {
        "escalated" | "awaiting_approval" if people => "to a person",
        "healed" => "healed",
        "no-op" => "no-op",
        "failed" | "timeout" | "out_of_fuel" | "out_of_memory" | "output_limit" | "trapped" => {
            "failed"
        }
        "refused" | "denied" | "invalid_params" => "refused",
        "interrupted" => "interrupted",
        _ => "other",
    }
}

/// The outcome columns: the last one only in reports that count decisions to hand a
/// problem to a person ([`class_of`]).
const CLASSES: [&str; 8] = [
    "healed",
    "no-op",
    "failed",
    "refused",
    "interrupted",
    "dry run",
    "other",
    "to a person",
];

/// Runs by outcome class ([`CLASSES`]); people's decisions on escalations, by their
/// SLA: kept, missed (layout 3); runs denied a call and runs a person approved (layout
/// 4, [`NOTED`]).
#[derive(Default, Clone)]
struct Counts([u64; 8], [u64; 2], [u64; 2]);

/// The columns of [`Counts`]' third part.
const NOTED: [&str; 2] = ["denied a call", "approved by a person"];

impl Counts {
    fn add(&mut self, class: &str) {
        if let Some(i) = CLASSES.iter().position(|c| *c == class) {
            self.0[i] += 1;
        }
    }

    fn noted(&mut self, f: &Facts) {
        self.2[0] += u64::from(f.denied_calls > 0);
        self.2[1] += u64::from(f.approver.is_some());
    }

    fn decided(&mut self, in_sla: Option<bool>) {
        match in_sla {
            Some(true) => self.1[0] += 1,
            Some(false) => self.1[1] += 1,
            None => {}
        }
    }

    fn runs(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// Counts by name, at most [`MAX_NAMES`] names; later names are counted together.
#[derive(Default)]
struct ByName {
    names: BTreeMap<String, Counts>,
    rest: Counts,
    rest_names: u64,
}

impl ByName {
    fn add(&mut self, name: &str, class: &str, in_sla: Option<bool>, f: &Facts) {
        let c = if let Some(c) = self.names.get_mut(name) {
            c
        } else if self.names.len() < MAX_NAMES {
            self.names.entry(name.to_string()).or_default()
        } else {
            self.rest_names += 1;
            &mut self.rest
        };
        c.add(class);
        c.decided(in_sla);
        c.noted(f);
    }
}

/// The report's tallies, added to record by record in leaf order — by the writer as it
/// writes and by verification as it checks — so both make the same page.
#[derive(Default)]
struct Tally {
    /// The zone times and months are shown in; UTC (as text) when `None`.
    zone: Option<runwarden_report::tz::Zone>,
    records: u64,
    all: Counts,
    unreadable: u64,
    months: ByName,
    hosts: ByName,
    runbooks: ByName,
    tiers: BTreeMap<String, u64>,
    approvers: ByName,
    denied_calls: u64,
    first: Option<String>,
    last: Option<String>,
    /// The latest records needing attention: index, where it is (chunk, line from 0).
    attention: VecDeque<(u64, (u64, usize), Facts)>,
    /// Whether the report links records to where they are (layout 2 on).
    links: bool,
    /// Whether it counts people's decisions on escalations by their SLA (layout 3 on).
    sla: bool,
    /// Whether it counts runs denied a call and runs a person approved per row, and shows
    /// the export's time in the zone (layout 4 on).
    noted: bool,
}

impl Tally {
    /// The tally of a bundle with this manifest.
    fn of(manifest: &Manifest) -> Result<Tally, String> {
        Ok(Tally {
            zone: manifest
                .time_zone
                .as_ref()
                .map(|t| t.zone().map_err(|e| format!("{MANIFEST}: time zone: {e}")))
                .transpose()?,
            links: match manifest.report {
                None | Some(1) => false,
                Some(2..=REPORT_LAYOUT) => true,
                Some(other) => {
                    return Err(format!(
                        "{MANIFEST}: report layout {other} is newer than this runwarden reads ({REPORT_LAYOUT}): upgrade runwarden"
                    ));
                }
            },
            sla: manifest.report.is_some_and(|l| l >= 3),
            noted: manifest.report.is_some_and(|l| l >= 4),
            ..Tally::default()
        })
    }

    /// A record's time as the report shows it: local, when the bundle has a time zone.
    fn when(&self, started_at: &str) -> String {
        match &self.zone {
            Some(z) => runwarden_report::tz::parse_utc_ms(started_at)
                .map_or_else(|| started_at.to_string(), |ms| z.local(ms)),
            None => started_at.to_string(),
        }
    }

    fn add(&mut self, index: u64, place: (u64, usize), facts: Option<&Facts>) {
        self.records += 1;
        let Some(f) = facts else {
            self.unreadable += 1;
            return;
        };
        let class = class_of(f, self.zone.is_some());
        // Only a person's decision (tier L3) is counted by its SLA.
        let in_sla = f.in_sla.filter(|_| self.sla && f.tier == "L3");
        self.all.add(class);
        self.all.decided(in_sla);
        self.all.noted(f);
        let local = self.zone.as_ref().and_then(|z| {
            runwarden_report::tz::parse_utc_ms(&f.started_at).map(|ms| z.local_date(ms))
        });
        let month = match &local {
            Some(date) => date.get(..7),
            None => f.started_at.get(..7),
        };
        self.months.add(month.unwrap_or("?"), class, in_sla, f);
        self.hosts.add(&f.host, class, in_sla, f);
        self.runbooks.add(&f.runbook, class, in_sla, f);
        let tier = if self.tiers.contains_key(&f.tier) || self.tiers.len() < 16 {
            f.tier.clone()
        } else {
            "other".to_string()
        };
        *self.tiers.entry(tier).or_default() += 1;
        if let Some(a) = &f.approver {
            self.approvers.add(a, class, in_sla, f);
        }
        self.denied_calls += f.denied_calls;
        if self.first.is_none() {
            self.first = Some(f.started_at.clone());
        }
        self.last = Some(f.started_at.clone());
        if !matches!(class, "healed" | "no-op" | "dry run") || f.denied_calls > 0 {
            if self.attention.len() == ATTENTION {
                self.attention.pop_front();
            }
            self.attention.push_back((index, place, f.clone()));
        }
    }

    fn render(&self, manifest: &Manifest, keys: &[VerifyingKey]) -> String {
        let mut out = String::new();
        let zone = self.zone.as_ref().map_or("UTC", |z| z.name()).to_string();
        let columns = if self.zone.is_some() {
            CLASSES.len()
        } else {
            CLASSES.len() - 1
        };
        let sla_columns = if self.sla { 2 } else { 0 };
        let noted_columns = if self.noted { NOTED.len() } else { 0 };
        let head = |n: &str| {
            let cols: String = CLASSES[..columns]
                .iter()
                .chain(&["decided in SLA", "decided late"][..sla_columns])
                .chain(&NOTED[..noted_columns])
                .map(|c| format!("<th>{c}</th>"))
                .collect();
            format!("<tr><th>{n}</th><th>runs</th>{cols}</tr>\n")
        };
        let row = |name: &str, c: &Counts, latest: Option<&str>| {
            let cells: String = c.0[..columns]
                .iter()
                .chain(&c.1[..sla_columns])
                .chain(&c.2[..noted_columns])
                .map(|n| format!("<td>{n}</td>"))
                .collect();
            format!(
                "<tr><td>{}</td><td>{}</td>{cells}{}</tr>\n",
                esc(name),
                c.runs(),
                latest.unwrap_or_default()
            )
        };
        // Layout 2: the latest record of a host or runbook listed below, linked.
        let latest = |of: fn(&Facts) -> &str| {
            let mut by: BTreeMap<&str, u64> = BTreeMap::new();
            for (i, _, f) in &self.attention {
                by.insert(of(f), *i);
            }
            by
        };
        let (by_host, by_runbook) = (latest(|f| &f.host), latest(|f| &f.runbook));
        let table = |title: &str, col: &str, by: &ByName, linked: Option<&BTreeMap<&str, u64>>| {
            let head = match linked {
                Some(_) => head(col).replace("</tr>", "<th>latest needing attention</th></tr>"),
                None => head(col),
            };
            let mut t = format!("<h2>{title}</h2>\n<table>\n{head}");
            for (name, c) in &by.names {
                let cell = linked.map(|l| match l.get(name.as_str()) {
                    Some(i) => format!("<td><a href=\"#r{i}\">record {i}</a></td>"),
                    None => "<td></td>".to_string(),
                });
                t.push_str(&row(name, c, cell.as_deref()));
            }
            if by.rest_names > 0 {
                let cell = linked.map(|_| "<td></td>");
                t.push_str(&row(
                    &format!("{} more, together", by.rest_names),
                    &by.rest,
                    cell,
                ));
            }
            t.push_str("</table>\n");
            t
        };
        out.push_str(&format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>runwarden evidence — {origin}</title>\n\
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:80em}}table{{border-collapse:collapse;margin-bottom:1em}}\
td,th{{border:1px solid #ccc;padding:3px 6px;font-size:14px;text-align:right;vertical-align:top}}td:first-child,th:first-child{{text-align:left}}\
th{{background:#f3f3f3}}td.text{{text-align:left}}.when{{white-space:nowrap}}dt{{font-weight:bold;float:left;clear:left;margin-right:.5em}}dd{{margin:0 0 .2em 0}}</style></head>\n\
<body><h1>Remediation evidence</h1>\n<p>Log <b>{origin}</b>: {count} of its {size} records, from {first} to {last} ({zone}), exported {created}. \
Every record is signed by the host that ran it and proven part of the log whose signed checkpoint is in this bundle. \
Check it with <code>runwarden evidence verify BUNDLE --key KEY.pub</code>; this page alone proves nothing.</p>\n<p>{kind}</p>\n",
            origin = esc(&manifest.origin),
            count = self.records,
            size = manifest.tree_size,
            first = esc(&self.first.as_deref().map_or_else(|| "—".to_string(), |t| self.when(t))),
            last = esc(&self.last.as_deref().map_or_else(|| "—".to_string(), |t| self.when(t))),
            zone = esc(&zone),
            created = esc(&if self.noted {
                self.when(&manifest.created_at)
            } else {
                manifest.created_at.clone()
            }),
            kind = if let Some(seg) = manifest.segment.as_ref().filter(|s| s.from > 0) {
                format!(
                    "This is a segment of the log, its records {} to {}: verification proves they are every record of that range and follow the log's earlier records, which are in the segments before it.",
                    seg.from, manifest.tree_size
                )
            } else if manifest.complete {
                "This is the complete log up to the checkpoint: verification proves nothing was left out.".to_string()
            } else {
                format!(
                    "This is a filtered export ({}): it proves each record shown is authentic and in the log, not that no others exist.",
                    esc(&manifest.filter.to_string())
                )
            },
        ));
        out.push_str("<h2>Outcomes</h2>\n<table>\n");
        out.push_str(&head("all records"));
        out.push_str(&row("all", &self.all, None));
        out.push_str("</table>\n");
        if self.unreadable > 0 {
            out.push_str(&format!(
                "<p>{} records are not runwarden invocation statements.</p>\n",
                self.unreadable
            ));
        }
        out.push_str(&format!(
            "<p>Calls the hosts' policies denied: {}. Dry runs only simulated their changes and are never counted as healed.</p>\n",
            self.denied_calls
        ));
        if self.sla {
            let [kept, late] = self.all.1;
            let share = match kept + late {
                0 => String::new(),
                n => format!(" ({:.1}%)", kept as f64 * 100.0 / n as f64),
            };
            out.push_str(&format!(
                "<p>Escalations a person decided in these records: {}, within their SLA: {kept}{share}, late: {late}.</p>\n",
                kept + late
            ));
        }
        let links = |by| self.links.then_some(by);
        out.push_str(&table(
            &format!("By month ({})", esc(&zone)),
            "month",
            &self.months,
            None,
        ));
        out.push_str(&table("By host", "host", &self.hosts, links(&by_host)));
        out.push_str(&table(
            "By runbook",
            "runbook",
            &self.runbooks,
            links(&by_runbook),
        ));
        out.push_str("<h2>Who decided</h2>\n<table><tr><th>tier</th><th>runs</th></tr>\n");
        for (tier, n) in &self.tiers {
            let what = match tier.as_str() {
                "L1" => "L1: a deterministic rule",
                "L2" => "L2: the planner (a model)",
                "L3" => "L3: a person approved it",
                "manual" => "run by hand",
                "none" => "nothing decided (escalated, refused)",
                _ => tier.as_str(),
            };
            out.push_str(&format!("<tr><td>{}</td><td>{n}</td></tr>\n", esc(what)));
        }
        out.push_str("</table>\n");
        if !self.approvers.names.is_empty() {
            out.push_str(&table(
                "Approvals, by approver",
                "approver",
                &self.approvers,
                None,
            ));
        }
        out.push_str(&format!(
            "<h2>Needing attention</h2>\n<p>The latest {} records that did not heal or whose runbook was denied a call (of {} in all); \
{}</p>\n\
<table><tr><th>#</th><th>when ({})</th><th>host</th><th>runbook</th><th>outcome</th><th>summary</th><th>decided by</th>{}</tr>\n",
            self.attention.len(),
            self.records,
            if self.links {
                "each links to the signed record itself: unpack the bundle (<code>tar -xf BUNDLE</code>) and open this page from there, and a record's link opens the file of records that holds it, at the line named."
            } else {
                "each is in the bundle's records under its index."
            },
            esc(&zone),
            if self.links { "<th>signed record</th>" } else { "" },
        ));
        for (i, (chunk, line), f) in &self.attention {
            let who = match (&f.approver, f.tier.as_str()) {
                (Some(a), _) => format!("approved by {a}"),
                (None, t) => t.to_string(),
            };
            let (id, place) = match self.links {
                true => (
                    format!(" id=\"r{i}\""),
                    format!(
                        "<td class=\"text\"><a href=\"{name}\">{name}</a> line {}</td>",
                        line + 1,
                        name = chunk_name(*chunk)
                    ),
                ),
                false => (String::new(), String::new()),
            };
            out.push_str(&format!(
                "<tr{id}><td>{i}</td><td class=\"when\">{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td>{place}</tr>\n",
                esc(&self.when(&f.started_at)),
                esc(&f.host),
                esc(&f.runbook),
                esc(class_of(f, self.zone.is_some())),
                esc(&f.summary),
                esc(&who),
            ));
        }
        out.push_str("</table>\n<h2>What the outcomes mean</h2><dl>");
        for (k, v) in [
            ("healed", "the problem was found and fixed"),
            ("no-op", "nothing needed doing"),
            (
                "failed",
                "the runbook tried and could not fix it, or the sandbox stopped it (time, fuel, memory, a fault)",
            ),
            (
                "refused",
                "stopped before it started: the host's policy does not allow what it asked for, or its inputs were not valid",
            ),
            (
                "interrupted",
                "the agent stopped while it ran; it was recorded at the next start and not run again",
            ),
            ("dry run", "only simulated: nothing was changed"),
        ] {
            out.push_str(&format!("<dt>{k}</dt><dd>{v}</dd>"));
        }
        if self.zone.is_some() {
            out.push_str(
                "<dt>to a person</dt><dd>nothing ran: the control plane handed the problem to a person (escalated, or waiting for an approval); what the person decided is recorded after it</dd>",
            );
        }
        if self.sla {
            out.push_str(
                "<dt>other</dt><dd>a person declined the proposed run or resolved the problem another way (nothing ran), or an outcome this report does not name</dd>",
            );
            out.push_str(
                "<dt>decided in SLA, late</dt><dd>a person approved, denied or resolved an escalation by the deadline its incident's severity set (the SLA), or after it; counted where the decision is recorded (an approved run, in the log of the host it ran on)</dd>",
            );
        }
        if self.noted {
            out.push_str(
                "<dt>denied a call</dt><dd>runs in which the host's policy refused at least one call the runbook made (the run may still have healed)</dd>",
            );
            out.push_str(
                "<dt>approved by a person</dt><dd>runs that ran because a person approved them; who approved is under Approvals</dd>",
            );
        }
        out.push_str("</dl>\n<h2>Signing keys</h2><ul>");
        for k in keys {
            out.push_str(&format!("<li><code>{}</code></li>", esc(&k.to_text())));
        }
        out.push_str("</ul>\n</body></html>\n");
        out
    }
}

/// Export the records of the database's own log (signed by `key`, named after it) that
/// match `filter` as a bundle of format 4 written to `out`, its report in `time_zone` (UTC
/// if `None`), with a fresh checkpoint signed by `key` (stored, so later exports can prove
/// consistency with it), sealed by `key`. Reads the log a page at a time: memory does not
/// grow with the log. `progress` hears (records written, records to write) now and then.
/// Returns the output and the bundle's manifest.
pub async fn export_stream<W: Write>(
    store: &crate::store::Store,
    filter: &crate::store::Filter,
    key: &crate::keys::SigningKey,
    time_zone: Option<&TimeZone>,
    keys: Vec<VerifyingKey>,
    out: W,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> crate::error::Result<(W, Manifest)> {
    let log = LogExport::own(store, filter, key, time_zone, keys).await?;
    let manifest = log.manifest.clone();
    let w = log.begin(tar::Builder::new(out), "").map_err(io)?;
    let w = log.write(store, w, progress).await?;
    Ok((w.finish(key).map_err(io)?, manifest))
}

/// `key` among `keys`, once.
fn with_key(keys: &mut Vec<VerifyingKey>, key: &VerifyingKey) {
    if !keys.iter().any(|k| k.to_text() == key.to_text()) {
        keys.push(key.clone());
    }
}

/// Records read from the store at a time: a quarter of a chunk.
const PAGE: u64 = CHUNK_RECORDS as u64 / 4;
/// Leaf hashes read at a time (without their records).
const LEAF_PAGE: u64 = 65_536;
const _: () = assert!(LEAF_PAGE.is_multiple_of(BLOCK));
/// Leaves per block of a filtered export's proofs (see [`LogExport::count`]); pages start
/// at multiples of it.
const BLOCK: u64 = 64;
const _: () = assert!(PAGE.is_multiple_of(BLOCK));

/// Where an export's records come from.
enum Source {
    /// The database's own log.
    Own,
    /// The log of this origin the database mirrors.
    Mirror(String),
    /// This tenant's view of the database's own log.
    View(String),
}

/// Which of a log's records a filtered export keeps: a bit per record (at most 125 MB
/// for a log of a billion records; 225 KB for 1.8 million).
struct Kept(Vec<u64>);

impl Kept {
    fn new(size: u64) -> Kept {
        Kept(vec![0; size.div_ceil(64) as usize])
    }

    fn set(&mut self, i: u64) {
        if let Some(w) = self.0.get_mut((i / 64) as usize) {
            *w |= 1 << (i % 64);
        }
    }

    fn get(&self, i: u64) -> bool {
        self.0
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn count(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// The runs of kept records in `from..to`: `(first, end)`, in order.
    fn runs(&self, from: u64, to: u64) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for i in (from..to).filter(|&i| self.get(i)) {
            match runs.last_mut() {
                Some((_, end)) if *end == i => *end = i + 1,
                _ => runs.push((i, i + 1)),
            }
        }
        runs
    }
}

/// One log's export, planned: everything its bundle says before the records (the
/// manifest, with how many records it holds; the checkpoint; proofs; keys), and where the
/// records come from. Planning reads the log once when filtered (to count), writing once
/// more; memory stays a page of records, plus a filtered export's tree above its blocks of
/// leaves (2 bytes a record) for the inclusion proofs.
pub(crate) struct LogExport {
    /// The manifest the bundle starts with.
    pub(crate) manifest: Manifest,
    /// The signed checkpoint the records are proved against.
    note: String,
    /// The key that signed it …
    pub(crate) signer: VerifyingKey,
    /// … over this root.
    pub(crate) root: Hash,
    consistency: Vec<Consistency>,
    keys: Vec<VerifyingKey>,
    /// A filtered export's proofs: the log's tree from blocks of [`BLOCK`] leaves up
    /// (the upper part of a record's inclusion proof; the lower part is made from its
    /// block's leaves as they pass). 1/32 of the leaves' hashes: memory stays small
    /// whatever the log's size.
    blocks: Option<crate::merkle::MerkleTree>,
    /// A filtered export's records: which of the log's the filter keeps.
    kept: Option<Kept>,
    /// Where the records come from.
    source: Source,
    /// In a tenant's bundle: the tenant every record must be made for (checked as it is
    /// written: another tenant's record is never put into the bundle).
    pub(crate) tenant: Option<String>,
    filter: crate::store::Filter,
}

impl LogExport {
    /// The database's own log, signed by `key`: a fresh checkpoint, signed and stored, and
    /// proofs of its consistency with every earlier one the log kept.
    pub(crate) async fn own(
        store: &crate::store::Store,
        filter: &crate::store::Filter,
        key: &crate::keys::SigningKey,
        time_zone: Option<&TimeZone>,
        mut keys: Vec<VerifyingKey>,
    ) -> crate::error::Result<LogExport> {
        let origin = crate::keys::log_origin(key.name());
        let size = store.size().await?;
        let root = store.root_at(size).await?;
        let cp = Checkpoint {
            origin: origin.clone(),
            size,
            root,
        };
        let note = cp.sign(key)?;
        store.put_checkpoint(size, &cp.root, &note).await?;
        let olders: Vec<u64> = store
            .checkpoint_sizes()
            .await?
            .into_iter()
            .filter(|&old| old > 0 && old < size)
            .collect();
        let mut consistency = Vec::new();
        for old in olders {
            consistency.push(Consistency {
                old_size: old,
                proof: store.consistency_proof(old, size).await?,
            });
        }
        let signer = key.verifying_key();
        with_key(&mut keys, &signer);
        let mut log = LogExport {
            manifest: Manifest::of_export(&origin, size, filter, time_zone),
            note,
            signer,
            root: cp.root,
            consistency,
            keys,
            blocks: None,
            kept: None,
            source: Source::Own,
            filter: filter.clone(),
            tenant: None,
        };
        log.count(store).await?;
        Ok(log)
    }

    /// The log `origin` this database mirrors (another signer's: nothing is signed here),
    /// proved against the latest checkpoint its signer sent. `None` when nothing of it is
    /// mirrored.
    pub(crate) async fn mirror(
        store: &crate::store::Store,
        origin: &str,
        filter: &crate::store::Filter,
        time_zone: Option<&TimeZone>,
    ) -> crate::error::Result<Option<LogExport>> {
        let Some(head) = store.mirror_head(origin).await? else {
            return Ok(None);
        };
        let cp = Checkpoint::parse(&head.note, std::slice::from_ref(&head.key)).map_err(|e| {
            crate::error::Error::MalformedRecord(format!(
                "the mirrored checkpoint of {origin} does not verify: {e}"
            ))
        })?;
        let mut log = LogExport {
            manifest: Manifest::of_export(origin, head.size, filter, time_zone),
            note: head.note,
            signer: head.key.clone(),
            root: cp.root,
            consistency: Vec::new(),
            keys: vec![head.key],
            blocks: None,
            kept: None,
            source: Source::Mirror(origin.to_string()),
            filter: filter.clone(),
            tenant: None,
        };
        log.count(store).await?;
        Ok(Some(log))
    }

    /// `tenant`'s view of the database's own log (signed by `key`): the records made for
    /// the tenant, in log order, numbered from 0, that match `filter` (its other
    /// conditions; every record of the view when it has none: a complete export). A fresh
    /// checkpoint of the view is signed under [`crate::store::tenant_origin`] and kept,
    /// with proofs of its consistency with every earlier one.
    pub(crate) async fn view(
        store: &crate::store::Store,
        tenant: &str,
        filter: &crate::store::Filter,
        key: &crate::keys::SigningKey,
        time_zone: Option<&TimeZone>,
        mut keys: Vec<VerifyingKey>,
    ) -> crate::error::Result<LogExport> {
        let size = store.tenant_view(tenant).await?;
        let origin = crate::store::tenant_origin(&crate::keys::log_origin(key.name()), tenant);
        let root = store.tenant_root(tenant, size).await?;
        let note = Checkpoint {
            origin: origin.clone(),
            size,
            root,
        }
        .sign(key)?;
        store
            .put_tenant_checkpoint(tenant, size, &root, &note)
            .await?;
        let mut consistency = Vec::new();
        for old in store.tenant_checkpoint_sizes(tenant).await? {
            if old > 0 && old < size {
                consistency.push(Consistency {
                    old_size: old,
                    proof: store.tenant_consistency_proof(tenant, old, size).await?,
                });
            }
        }
        let signer = key.verifying_key();
        with_key(&mut keys, &signer);
        let mut log = LogExport {
            manifest: Manifest::of_export(&origin, size, filter, time_zone),
            note,
            signer,
            root,
            consistency,
            keys,
            blocks: None,
            kept: None,
            source: Source::View(tenant.to_string()),
            filter: filter.clone(),
            tenant: None,
        };
        log.count(store).await?;
        Ok(log)
    }

    /// Records `from..to` of the log, every one of them.
    async fn page(
        &self,
        store: &crate::store::Store,
        from: u64,
        to: u64,
    ) -> crate::error::Result<Vec<crate::store::StoredRecord>> {
        let page = match &self.source {
            Source::Own => store.range(from, to).await?,
            Source::View(tenant) => return store.tenant_range(tenant, from, to).await,
            Source::Mirror(origin) => store.mirrored_records(origin, from, to).await?,
        };
        if page.len() as u64 != to - from || page.iter().zip(from..).any(|(r, i)| r.index != i) {
            return Err(crate::error::Error::MalformedRecord(format!(
                "{} holds {} of records {from}..{to}, or not in order: the evidence database is damaged",
                self.manifest.origin,
                page.len()
            )));
        }
        Ok(page)
    }

    /// Whether the filter can be applied to the database's own log by its columns alone
    /// (not by a tenant, which only a record's statement names).
    fn by_columns(&self) -> bool {
        matches!(self.source, Source::Own) && self.filter.tenant.is_none()
    }

    /// A filtered export finds its records first (the manifest, written first, says how
    /// many there are), and hashes the log's blocks of leaves for its proofs.
    async fn count(&mut self, store: &crate::store::Store) -> crate::error::Result<()> {
        let size = self.manifest.tree_size;
        if self.manifest.complete {
            self.manifest.record_count = size;
            return Ok(());
        }
        let mut kept = Kept::new(size);
        let mut blocks = Vec::with_capacity(size.div_ceil(BLOCK) as usize);
        let mut from = 0;
        if self.by_columns() {
            // The log's indexes say which records the filter keeps; the leaves are read
            // without the records.
            store
                .matching_indexes(&self.filter, size, |i| kept.set(i))
                .await?;
            while from < size {
                let to = (from + LEAF_PAGE).min(size);
                for block in store
                    .leaf_hash_range(from, to)
                    .await?
                    .chunks(BLOCK as usize)
                {
                    blocks.push(crate::merkle::MerkleTree::new(block.to_vec()).root());
                }
                from = to;
            }
        } else {
            while from < size {
                let to = (from + PAGE).min(size);
                let page = self.page(store, from, to).await?;
                for r in page.iter().filter(|r| self.filter.matches(r)) {
                    kept.set(r.index);
                }
                for block in page.chunks(BLOCK as usize) {
                    let leaves = block.iter().map(|r| r.leaf_hash).collect();
                    blocks.push(crate::merkle::MerkleTree::new(leaves).root());
                }
                from = to;
            }
        }
        self.manifest.record_count = kept.count();
        self.kept = Some(kept);
        let blocks = crate::merkle::MerkleTree::new(blocks);
        // The leaves read must be the ones the checkpoint was signed over.
        if blocks.root() != self.root {
            return Err(crate::error::Error::MalformedRecord(format!(
                "the records of {} do not hash to the root of its checkpoint: the evidence database is damaged; nothing was written",
                self.manifest.origin
            )));
        }
        self.blocks = Some(blocks);
        Ok(())
    }

    /// sha256 (hex) of its manifest, as its bundle will hold it.
    pub(crate) fn manifest_sha256(&self) -> String {
        hex::encode(Sha256::digest(
            manifest_bytes(&self.manifest).unwrap_or_default(),
        ))
    }

    /// Start its bundle in `tar`, under `prefix`.
    pub(crate) fn begin<W: Write>(
        &self,
        tar: tar::Builder<W>,
        prefix: &str,
    ) -> std::io::Result<BundleWriter<W>> {
        BundleWriter::start_in(
            tar,
            prefix,
            &self.manifest,
            &self.note,
            &self.consistency,
            &self.keys,
        )
    }

    /// Write its records into `w`, a page at a time; `progress` hears (written, to write).
    pub(crate) async fn write<W: Write>(
        &self,
        store: &crate::store::Store,
        mut w: BundleWriter<W>,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> crate::error::Result<BundleWriter<W>> {
        let (size, count) = (self.manifest.tree_size, self.manifest.record_count);
        let (mut from, mut written) = (0, 0u64);
        while from < size && written < count {
            let to = (from + PAGE).min(size);
            let (page, hashes) = match &self.kept {
                // Only the records kept are read from the database's own log, and the
                // leaves of their page for their proofs.
                Some(kept) if self.by_columns() => {
                    let runs = kept.runs(from, to);
                    if runs.is_empty() {
                        from = to;
                        continue;
                    }
                    let mut page = Vec::new();
                    for (a, b) in runs {
                        page.extend(self.page(store, a, b).await?);
                    }
                    (page, store.leaf_hash_range(from, to).await?)
                }
                _ => {
                    let page = self.page(store, from, to).await?;
                    let hashes = page.iter().map(|r| r.leaf_hash).collect::<Vec<Hash>>();
                    (page, hashes)
                }
            };
            // The tree of the block the last proof was in.
            let mut block: Option<(u64, crate::merkle::MerkleTree)> = None;
            for r in page {
                if self.kept.as_ref().is_some_and(|k| !k.get(r.index)) {
                    continue;
                }
                // Where it is among the page's leaves.
                let at = (r.index - from) as usize;
                if let Some(t) = &self.tenant {
                    let made_for = crate::store::tenant_in(&r.envelope);
                    if made_for.as_deref() != Some(t.as_str()) {
                        return Err(crate::error::Error::MalformedRecord(format!(
                            "record {} of {} is made for tenant {:?}, not {t:?}: a tenant's bundle holds only its records; nothing was written",
                            r.index,
                            self.manifest.origin,
                            made_for.unwrap_or_default()
                        )));
                    }
                }
                let proof = match &self.blocks {
                    Some(upper) => {
                        let j = r.index / BLOCK;
                        if block.as_ref().is_none_or(|(b, _)| *b != j) {
                            let lo = at - (r.index % BLOCK) as usize;
                            let hi = (lo + BLOCK as usize).min(hashes.len());
                            let leaves = hashes[lo..hi].to_vec();
                            block = Some((j, crate::merkle::MerkleTree::new(leaves)));
                        }
                        let (_, lower) = block.as_ref().expect("set above");
                        let mut proof = lower.inclusion_proof(r.index % BLOCK)?;
                        proof.extend(upper.inclusion_proof(j)?);
                        proof
                    }
                    None => Vec::new(),
                };
                w.push_stored(r, proof)?;
                written += 1;
            }
            progress(written, count);
            from = to;
        }
        Ok(w)
    }
}

impl Manifest {
    /// The manifest of an export of `tree_size` records of `origin` by `filter` (its
    /// record count still to be set).
    fn of_export(
        origin: &str,
        tree_size: u64,
        filter: &crate::store::Filter,
        time_zone: Option<&TimeZone>,
    ) -> Manifest {
        Manifest {
            version: STREAM_VERSION,
            origin: origin.to_string(),
            tree_size,
            record_count: 0,
            complete: filter.is_empty(),
            filter: filter.to_json(),
            created_at: now_rfc3339(),
            members: BTreeMap::new(),
            segment: None,
            time_zone: time_zone.cloned(),
            report: Some(REPORT_LAYOUT),
        }
    }
}

fn io(source: std::io::Error) -> crate::error::Error {
    crate::error::Error::Io {
        action: "write the bundle",
        path: std::path::PathBuf::from("(the bundle)"),
        source,
    }
}

/// Export the records `tree.size()..to` of the database's own log as a **segment** (an
/// archive's unit): a bundle of format 4 whose manifest says where it starts
/// ([`SegmentStart`]), with a checkpoint of size `to` signed by `key`, sealed by `key`.
/// `tree` holds the leaves before the segment and comes back holding them up to `to`.
/// Memory is bounded by a page of records and what `out` keeps.
pub async fn export_segment<W: Write>(
    store: &crate::store::Store,
    key: &crate::keys::SigningKey,
    origin: &str,
    mut keys: Vec<VerifyingKey>,
    tree: &mut crate::merkle::CompactTree,
    to: u64,
    out: W,
) -> crate::error::Result<W> {
    let from = tree.size();
    let size = store.size().await?;
    if to <= from || to > size {
        return Err(crate::error::Error::InvalidTreeSizes {
            old_size: from,
            new_size: to,
            reason: "a segment holds at least one record of the log",
        });
    }
    let start = SegmentStart::of(tree);
    let mut ahead = tree.clone();
    store.extend_tree(&mut ahead, to).await?;
    let cp = Checkpoint {
        origin: origin.to_string(),
        size: to,
        root: ahead.root(),
    };
    let note = cp.sign(key)?;
    with_key(&mut keys, &key.verifying_key());
    let manifest = Manifest {
        version: STREAM_VERSION,
        origin: origin.to_string(),
        tree_size: to,
        record_count: to - from,
        complete: true,
        filter: serde_json::json!({}),
        created_at: now_rfc3339(),
        members: BTreeMap::new(),
        segment: Some(start),
        time_zone: None,
        report: Some(REPORT_LAYOUT),
    };
    // A segment follows the one before it; the proofs of consistency are its frontier.
    let mut w = BundleWriter::start(out, &manifest, &note, &[], &keys).map_err(io)?;
    let mut at = from;
    while at < to {
        let next = (at + PAGE).min(to);
        for r in store.range(at, next).await? {
            // What is written must be what the checkpoint's root was computed from.
            if leaf_hash(&r.envelope) != r.leaf_hash {
                return Err(crate::error::Error::MalformedRecord(format!(
                    "record {} does not hash to its stored leaf hash: the evidence database is damaged",
                    r.index
                )));
            }
            tree.append(r.leaf_hash);
            w.push_stored(r, Vec::new())?;
        }
        at = next;
    }
    // The records written must be the leaves the checkpoint was signed over.
    if tree.root() != cp.root {
        return Err(crate::error::Error::MalformedRecord(format!(
            "records {from}..{to} do not hash to the root the log's leaf hashes give: the evidence database is damaged; nothing was written"
        )));
    }
    w.finish(key).map_err(io)
}

/// What comes next in a bundle of format 4.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Stage {
    Checkpoint,
    Consistency,
    KeysOrChunks,
    Chunks,
    Seal,
    Done,
}

/// What a member of format 4 is, by name.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Member {
    Checkpoint,
    Consistency,
    Key,
    Chunk(u64),
    Report,
    Seal,
}

fn member_of(name: &str) -> Option<Member> {
    Some(match name {
        CHECKPOINT => Member::Checkpoint,
        CONSISTENCY => Member::Consistency,
        REPORT => Member::Report,
        SEAL => Member::Seal,
        _ => {
            if kind_of(name) == Some(Kind::Key) {
                return Some(Member::Key);
            }
            let n = name.strip_prefix(CHUNKS_DIR)?.strip_suffix(".jsonl")?;
            if n.len() != 8 || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Member::Chunk(n.parse().ok()?)
        }
    })
}

/// A bundle of format 4 inside a tenant bundle: its members' names start with `prefix`,
/// it is sealed by `sealer` (the tenant bundle's signer, who vouches for the log's key),
/// and it ends at its seal, where the tenant bundle goes on. A log cut short meets the
/// next log's first member: it is handed back in `spilled` (when it is a regular file of
/// at most `spill_max` bytes), for the next log to start with.
pub(crate) struct Within<'a> {
    pub(crate) prefix: &'a str,
    pub(crate) sealer: &'a VerifyingKey,
    /// Every record must be made for this tenant.
    pub(crate) tenant: &'a str,
    /// The largest member handed back: the next log's manifest, or the closing page.
    pub(crate) spill_max: u64,
    pub(crate) spilled: &'a mut Option<(String, Vec<u8>)>,
}

/// Verify a bundle of format 4 whose manifest (`manifest_bytes`, already read from
/// `entries`) says so; the rest of its members come from `entries` — up to its seal when
/// it is `within` a tenant bundle, else all of them.
pub(crate) fn verify_stream<R: Read>(
    manifest_bytes: &[u8],
    entries: &mut tar::Entries<'_, R>,
    trusted: &[VerifyingKey],
    since: Option<&str>,
    mut within: Option<Within<'_>>,
) -> Result<Verified, BundleError> {
    let manifest: Manifest =
        serde_json::from_slice(manifest_bytes).map_err(|e| bad(format!("{MANIFEST}: {e}")))?;
    if manifest.version != STREAM_VERSION || !manifest.members.is_empty() {
        return Err(bad(format!(
            "{MANIFEST}: a version {STREAM_VERSION} manifest lists no members (its seal does)"
        )));
    }
    let manifest_sha256 = hex::encode(Sha256::digest(manifest_bytes));
    // A segment's records hash into the tree of the leaves before it; the rest start at 0.
    let (mut tree, from) = match &manifest.segment {
        None => (crate::merkle::CompactTree::new(), 0),
        Some(s) => {
            if !manifest.complete || s.from > manifest.tree_size {
                return Err(bad(format!(
                    "{MANIFEST}: a segment holds every record from its start to the tree size, unfiltered"
                )));
            }
            let tree = s.tree().map_err(|e| bad(format!("{MANIFEST}: {e}")))?;
            (tree, s.from)
        }
    };
    let from_root = tree.root();
    let mut stage = Stage::Checkpoint;
    let mut seen: Vec<Sealed> = Vec::new();
    let mut cp: Option<Checkpoint> = None;
    let mut consistent_with = None;
    let mut keys: Vec<VerifyingKey> = Vec::new();
    let ids: Vec<String> = trusted.iter().map(|k| k.key_id_hex()).collect();
    let mut tally = Tally::of(&manifest).map_err(bad)?;
    let mut count = 0u64;
    let mut last: Option<u64> = from.checked_sub(1);
    let mut chunks = 0u64;
    // The previous chunk's records and size: only the last chunk may hold fewer than
    // CHUNK_RECORDS records unless it was full by its bytes.
    let mut previous: Option<(usize, u64, String)> = None;
    let mut report: Option<Vec<u8>> = None;
    let mut sealed = false;
    let mut log_key: Option<usize> = None;
    let mut dirs = [false; 2];
    for entry in entries.by_ref() {
        let mut entry = entry.map_err(|e| bad(format!("corrupt or truncated bundle: {e}")))?;
        let mut raw = entry.path_bytes().into_owned();
        if let Some(w) = &mut within {
            let Some(inner) = raw.strip_prefix(w.prefix.as_bytes()) else {
                let etype = entry.header().entry_type();
                if etype != tar::EntryType::Regular && !etype.is_dir() {
                    return Err(refused(
                        &raw,
                        format!(
                            "it is {}; a bundle holds only regular files",
                            type_name(etype)
                        ),
                    ));
                }
                let size = entry.header().entry_size().unwrap_or(u64::MAX);
                if entry.header().entry_type() == tar::EntryType::Regular && size <= w.spill_max {
                    let data = read_entry(&mut entry, &raw, size)?;
                    *w.spilled = Some((String::from_utf8_lossy(&raw).into_owned(), data));
                }
                return Err(bad(format!(
                    "truncated: the log's members stop before its {SEAL}, at {} (members removed)",
                    shown(&raw)
                )));
            };
            raw = inner.to_vec();
        }
        let etype = entry.header().entry_type();
        let size = entry
            .header()
            .entry_size()
            .map_err(|e| bad(format!("corrupt bundle member {}: {e}", shown(&raw))))?;
        // `tar -cf … keys records` adds the directories themselves: harmless, empty, once.
        if etype.is_dir() && size == 0 && stage != Stage::Done {
            let dir = match raw.as_slice() {
                b"keys/" | b"keys" => 0,
                b"records/" | b"records" => 1,
                _ => 2,
            };
            if dir < 2 {
                if std::mem::replace(&mut dirs[dir], true) {
                    return Err(refused(&raw, "it appears twice"));
                }
                continue;
            }
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
        let name = member_name(&raw)?.to_string();
        if name == MANIFEST || seen.iter().any(|m| m.name == name) {
            return Err(refused(&raw, "it appears twice"));
        }
        let member = member_of(&name).ok_or_else(|| {
            refused(
                &raw,
                format!(
                    "not part of a runwarden bundle of format {STREAM_VERSION} (which holds {MANIFEST}, {CHECKPOINT}, {CONSISTENCY}, {KEYS_DIR}KEYID.pub, {CHUNKS_DIR}NNNNNNNN.jsonl, {REPORT} and {SEAL})"
                ),
            )
        })?;
        let out_of_place = |expected: &str| {
            refused(
                &raw,
                format!(
                    "out of place: {expected} comes here (members reordered, added or duplicated)"
                ),
            )
        };
        let limit = match (stage, member) {
            (Stage::Done, _) => {
                return Err(refused(
                    &raw,
                    format!("it comes after {SEAL}, which ends a bundle"),
                ));
            }
            (Stage::Checkpoint, Member::Checkpoint) => MAX_CHECKPOINT,
            (Stage::Checkpoint, _) => return Err(out_of_place(CHECKPOINT)),
            (Stage::Consistency, Member::Consistency) => MAX_CONSISTENCY,
            (Stage::Consistency, _) => return Err(out_of_place(CONSISTENCY)),
            (Stage::KeysOrChunks, Member::Key) if keys.len() < MAX_KEYS => MAX_KEY_FILE,
            (Stage::KeysOrChunks, Member::Key) => {
                return Err(refused(
                    &raw,
                    format!("a bundle holds at most {MAX_KEYS} keys"),
                ));
            }
            (Stage::KeysOrChunks | Stage::Chunks, Member::Chunk(n)) if n == chunks => MAX_CHUNK,
            (Stage::KeysOrChunks | Stage::Chunks, Member::Chunk(_)) => {
                return Err(out_of_place(&chunk_name(chunks)));
            }
            (Stage::KeysOrChunks | Stage::Chunks, Member::Report) => MAX_REPORT,
            (Stage::KeysOrChunks | Stage::Chunks, _) => {
                return Err(out_of_place(&format!("{} or {REPORT}", chunk_name(chunks))));
            }
            (Stage::Seal, Member::Seal) => SEAL_BASE + SEAL_PER_MEMBER * seen.len() as u64,
            (Stage::Seal, _) => return Err(out_of_place(SEAL)),
        };
        if size > limit {
            return Err(refused(
                &raw,
                format!("it is {size} bytes; at most {limit} may be here"),
            ));
        }
        let data = read_entry(&mut entry, &raw, size)?;
        let sealed_as = |sha256: String| Sealed {
            name: name.clone(),
            size,
            sha256,
        };
        // A chunk's digest is taken beside the checks of its records (below).
        if !matches!(member, Member::Seal | Member::Chunk(_)) {
            seen.push(sealed_as(hex::encode(Sha256::digest(&data))));
        }
        match member {
            Member::Checkpoint => {
                let note =
                    std::str::from_utf8(&data).map_err(|_| bad("checkpoint is not UTF-8"))?;
                let c = Checkpoint::parse(note, trusted)
                    .map_err(|e| bad(format!("checkpoint: {e}")))?;
                check_against_manifest(&manifest, &c)?;
                // The log's own key (of those trusted): the one that must seal the bundle.
                log_key = trusted
                    .iter()
                    .position(|k| Checkpoint::parse(note, std::slice::from_ref(k)).is_ok());
                cp = Some(c);
                stage = Stage::Consistency;
            }
            Member::Consistency => {
                let c = cp.as_ref().expect("the checkpoint came first");
                consistent_with = consistent_since(c, trusted, since, || Ok(&data))?;
                stage = Stage::KeysOrChunks;
            }
            Member::Key => {
                let key = key_member(&name, &data)?;
                if keys
                    .last()
                    .is_some_and(|k| k.key_id_hex() >= key.key_id_hex())
                {
                    return Err(refused(&raw, "keys go once each, in key id order"));
                }
                keys.push(key);
            }
            Member::Chunk(_) => {
                if let Some((n, bytes, name)) = previous.take()
                    && n < CHUNK_RECORDS
                    && bytes + MAX_RECORD_LINE <= MAX_CHUNK
                {
                    return Err(bad(format!(
                        "bundle member {} holds {n} records, fewer than {CHUNK_RECORDS}, and is not the last: corrupt; re-export the bundle",
                        shown(name.as_bytes())
                    )));
                }
                let c = cp.as_ref().expect("the checkpoint came first");
                let (n, sha256) = std::thread::scope(|s| {
                    let digest = s.spawn(|| hex::encode(Sha256::digest(&data)));
                    let n = check_records(
                        &data,
                        &manifest,
                        c,
                        &ids,
                        trusted,
                        (&mut count, &mut last),
                        &mut tree,
                        (&mut tally, chunks),
                        within.as_ref().map(|w| w.tenant),
                    );
                    let sha256 = digest
                        .join()
                        .unwrap_or_else(|e| std::panic::resume_unwind(e));
                    (n, sha256)
                });
                let n = n?;
                seen.push(sealed_as(sha256));
                previous = Some((n, size, name.clone()));
                chunks += 1;
                stage = Stage::Chunks;
            }
            Member::Report => {
                report = Some(data);
                stage = Stage::Seal;
            }
            Member::Seal => {
                // What the records prove comes first (naming a record where one is to
                // blame), then the seal over everything, then the report — which even
                // its exporter cannot make say what the records do not.
                let c = cp.as_ref().expect("the checkpoint came first");
                check_complete(&manifest, c, count, last, &tree)?;
                let sealer = match &within {
                    Some(w) => std::slice::from_ref(w.sealer),
                    None => log_key.map_or(&[][..], |k| std::slice::from_ref(&trusted[k])),
                };
                check_seal(&data, sealer, &manifest_sha256, &seen)?;
                let report = report.take().expect("the report comes before the seal");
                if report != tally.render(&manifest, &keys).as_bytes() {
                    return Err(bad(format!(
                        "{REPORT} is not the report of the records in this bundle (forged by whoever sealed it): do not rely on it"
                    )));
                }
                sealed = true;
                stage = Stage::Done;
                if within.is_some() {
                    break;
                }
            }
        }
    }
    if !sealed {
        return Err(bad(format!(
            "truncated bundle: it ends before {SEAL} (after {} member(s)); re-export the bundle",
            seen.len() + 1
        )));
    }
    let cp = cp.expect("sealed bundles have a checkpoint");
    Ok(Verified {
        records: count,
        tree_size: cp.size,
        root: cp.root,
        origin: cp.origin,
        consistent_with,
        complete: manifest.complete && from == 0,
        from,
        from_root,
    })
}

/// The records counted are the ones the manifest lists and, in a complete bundle, every
/// record of the checkpoint's tree: their leaves hash to its root.
fn check_complete(
    manifest: &Manifest,
    cp: &Checkpoint,
    count: u64,
    last: Option<u64>,
    tree: &crate::merkle::CompactTree,
) -> Result<(), BundleError> {
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
    if manifest.complete {
        let from = manifest.segment.as_ref().map_or(0, |s| s.from);
        if from + count != cp.size {
            return Err(bad_record(
                from + count,
                format!(
                    "missing: a complete bundle must hold all {} records of the checkpoint from record {from} (truncated)",
                    cp.size - from
                ),
            ));
        }
        if tree.root() != cp.root {
            return Err(bad(
                "the records do not hash to the checkpoint's root: a record was replaced by another signed record, or the checkpoint is of another log",
            ));
        }
    }
    Ok(())
}

/// The checkpoint must be of the log and size the manifest names.
fn check_against_manifest(manifest: &Manifest, cp: &Checkpoint) -> Result<(), BundleError> {
    if cp.size != manifest.tree_size {
        return Err(bad(format!(
            "the manifest says tree size {} but the signed checkpoint says {}",
            manifest.tree_size, cp.size
        )));
    }
    if cp.origin != manifest.origin {
        return Err(bad(format!(
            "the manifest says log {:?} but the signed checkpoint is of log {:?}",
            manifest.origin, cp.origin
        )));
    }
    Ok(())
}

/// The seal must be signed by a trusted key and name exactly the members seen.
fn check_seal(
    data: &[u8],
    trusted: &[VerifyingKey],
    manifest_sha256: &str,
    seen: &[Sealed],
) -> Result<(), BundleError> {
    let text = std::str::from_utf8(data).map_err(|_| bad(format!("{SEAL} is not UTF-8")))?;
    let env = Envelope::from_json(text).map_err(|e| bad(format!("{SEAL}: {e}")))?;
    if env.payload_type != SEAL_PAYLOAD_TYPE {
        return Err(bad(format!(
            "{SEAL} has payload type {:?}, not a bundle seal",
            escape_control(&env.payload_type)
        )));
    }
    env.verify(trusted).map_err(|e| {
        bad(format!(
            "{SEAL} is not signed by the log's own key ({e}): the bundle's manifest, filter and report are not vouched for"
        ))
    })?;
    let payload = env.payload().map_err(|e| bad(format!("{SEAL}: {e}")))?;
    let seal: Seal = serde_json::from_slice(&payload).map_err(|e| bad(format!("{SEAL}: {e}")))?;
    if seal.version != STREAM_VERSION || seal.manifest != manifest_sha256 {
        return Err(bad(format!(
            "{MANIFEST} is not the one the seal signed (altered): re-export the bundle"
        )));
    }
    if seal.members.len() != seen.len() {
        return Err(bad(format!(
            "the seal names {} members, the bundle holds {}: members added or removed",
            seal.members.len(),
            seen.len()
        )));
    }
    for (want, got) in seal.members.iter().zip(seen) {
        if want != got {
            return Err(bad(format!(
                "bundle member {} is not the one the seal signed (altered, replaced or moved): re-export the bundle",
                shown(got.name.as_bytes())
            )));
        }
    }
    Ok(())
}

/// Check one chunk's records: each line, in order (strictly increasing indexes; in a
/// complete bundle exactly the next leaf), signed by a trusted key; in a filtered bundle
/// proved against the checkpoint, in a complete one hashed into `tree`. Returns how many
/// records the chunk holds.
#[allow(clippy::too_many_arguments)]
fn check_records(
    data: &[u8],
    manifest: &Manifest,
    cp: &Checkpoint,
    ids: &[String],
    trusted: &[VerifyingKey],
    (count, last): (&mut u64, &mut Option<u64>),
    tree: &mut crate::merkle::CompactTree,
    (tally, chunk): (&mut Tally, u64),
    tenant: Option<&str>,
) -> Result<usize, BundleError> {
    let Some(body) = data.strip_suffix(b"\n") else {
        return Err(bad_record(
            last.map_or(0, |l| l + 1),
            "a chunk of records that does not end a line (truncated)",
        ));
    };
    // Counted before anything is built for them: a chunk of tiny lines must not cost
    // more than its records could.
    let n = body.iter().filter(|b| **b == b'\n').count() + 1;
    if n > CHUNK_RECORDS {
        return Err(bad_record(
            last.map_or(0, |l| l + 1),
            format!(
                "a chunk of {n} lines: a chunk holds at most {CHUNK_RECORDS} records (corrupt)"
            ),
        ));
    }
    let lines: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
    if *count + lines.len() as u64 > manifest.record_count {
        return Err(bad_record(
            last.map_or(0, |l| l + 1),
            format!(
                "more records than the {} the manifest lists (records added)",
                manifest.record_count
            ),
        ));
    }
    let parsed = parse_lines(&lines);
    let mut records = Vec::with_capacity(lines.len());
    for (pos, p) in parsed.into_iter().enumerate() {
        let r = p.map_err(|e| {
            let at = records
                .last()
                .map(|r: &Line| r.index + 1)
                .or(last.map(|l| l + 1))
                .unwrap_or(0);
            bad_record(
                at,
                format!(
                    "a line of the records is corrupt: {e} (line {} of its chunk)",
                    pos + 1
                ),
            )
        })?;
        records.push(r);
    }
    let checked = check_lines(&records, cp, ids, trusted, manifest.complete);
    // A record missing here may only stand later in the chunk: then it was moved.
    let present: std::collections::HashSet<u64> = records.iter().map(|r| r.index).collect();
    for (line, (r, result)) in records.iter().zip(checked).enumerate() {
        let i = r.index;
        check_place(
            i,
            *last,
            manifest.complete,
            |x| present.contains(&x),
            cp.size,
        )?;
        let (leaf, facts) = result?;
        if let Some(t) = tenant {
            let made_for = facts.as_ref().map(|f| f.tenant.as_str());
            if made_for != Some(t) {
                return Err(bad_record(
                    i,
                    format!(
                        "made for tenant {:?}, in a bundle of tenant {t:?}",
                        escape_control(made_for.unwrap_or("(none)"))
                    ),
                ));
            }
        }
        if manifest.complete {
            tree.append(leaf);
        }
        tally.add(i, (chunk, line), facts.as_ref());
        *last = Some(i);
        *count += 1;
    }
    Ok(records.len())
}

/// Each record's leaf hash and report facts, or what is wrong with it: signatures checked
/// in batches, on every core.
fn check_lines(
    records: &[Line],
    cp: &Checkpoint,
    ids: &[String],
    trusted: &[VerifyingKey],
    complete: bool,
) -> Vec<Result<(Hash, Option<Facts>), BundleError>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 16);
    let part = records.len().div_ceil(workers).max(1);
    let parts: Vec<&[Line]> = records.chunks(part).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .iter()
            .map(|p| s.spawn(move || check_part(p, cp, ids, trusted, complete)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

fn check_part(
    part: &[Line],
    cp: &Checkpoint,
    ids: &[String],
    trusted: &[VerifyingKey],
    complete: bool,
) -> Vec<Result<(Hash, Option<Facts>), BundleError>> {
    let mut out: Vec<Result<(Hash, Option<Facts>), BundleError>> = Vec::with_capacity(part.len());
    let (mut msgs, mut sigs, mut keys, mut at) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (pos, r) in part.iter().enumerate() {
        let opened = if complete {
            match r.proof {
                Some(_) => Err(bad_record(
                    r.index,
                    "an inclusion proof in a complete bundle, whose records prove themselves (altered)",
                )),
                None => open_record(r, ids),
            }
        } else {
            match r.proof {
                None => Err(bad_record(
                    r.index,
                    "no inclusion proof in a filtered bundle",
                )),
                Some(_) => prepare(r, cp, ids),
            }
        };
        // One reading of the statement both checks what it claims to be and gives the
        // report its facts.
        let opened = opened.and_then(|(pae, off, sig, k)| match facts_of(&pae[off..]) {
            Ok(facts) => Ok((pae, sig, k, facts)),
            Err(e) => Err(bad_record(
                r.index,
                format!("not a runwarden statement: {e}"),
            )),
        });
        match opened {
            Ok((pae, sig, k, facts)) => {
                out.push(Ok((leaf_hash(r.envelope.get().as_bytes()), Some(facts))));
                msgs.push(pae);
                sigs.push(sig);
                keys.push(*trusted[k].dalek());
                at.push(pos);
            }
            Err(e) => out.push(Err(e)),
        }
    }
    for j in bad_signatures(&msgs, &sigs, &keys) {
        let pos = at[j];
        out[pos] = Err(bad_record(
            part[pos].index,
            "signature: does not verify with the trusted key",
        ));
    }
    out
}
