//! Tenant bundles: everything an auditor of one tenant gets from a fleet's control plane,
//! in one file — the control plane's own log (the records of that tenant: what it decided
//! without running anything) and the log of every host of the tenant, as the control
//! plane mirrored it, each proved against its own signer's checkpoint.
//!
//! The auditor trusts one key, the control plane's. It signs the bundle's statement (a
//! DSSE envelope, the first member): the tenant, the filter, and for each log its role,
//! host, origin, signer key as enrolled, checkpoint (size and root), record count, and
//! where the log is with the sha256 of what names it.
//!
//! **Format 2** (written): each log is a bundle of format 4 whose members lie under its
//! own directory (`logs/00000-control/runwarden-bundle.json`, `…/checkpoint.txt`, …,
//! `…/seal.dsse.json`), the logs one after the other in the statement's order. The
//! statement names each log by its manifest's sha256; the log's seal — signed by the
//! control plane, which vouches for the host's key — covers that manifest and every other
//! member. Last comes `index.html`, the page a reader opens first (the logs, each linked
//! to its report), made from the statement alone: verification makes it again and
//! compares. It is written and verified as a stream: memory is one chunk of records,
//! whatever the bundle's size. **Format 1** (read only): each log a bundle of format 3
//! held whole in one member (`logs/00001-host.tar`) that the statement names by its sha256.
//!
//! Each host log verifies under the key the control plane vouches for, and must match what
//! the statement says of it. Every log is verified, and the first bad record of each is
//! named: one bad host log does not hide another.

use crate::bundle::{
    BundleError, LogExport, Verified, Within, append_member, hash_hex, verify_bundle, verify_stream,
};
use crate::dsse::Envelope;
use crate::keys::{SigningKey, VerifyingKey};
use crate::text::escape_control;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};

/// The tenant bundle format this code writes. Format 1 (each log a bundle of format 3
/// held whole in one member) is still read.
pub const TENANT_BUNDLE_VERSION: u32 = 2;
/// The oldest format this code reads.
const OLDEST_TENANT_VERSION: u32 = 1;
/// DSSE payload type of a tenant bundle's statement.
pub const TENANT_PAYLOAD_TYPE: &str = "application/vnd.runwarden.tenant-bundle+json";
/// The statement: the first member of a tenant bundle.
pub const TENANT_STATEMENT: &str = "tenant-bundle.dsse.json";
/// Where the logs' bundles are.
const LOGS_DIR: &str = "logs/";
/// Largest statement (a line per log).
const MAX_STATEMENT: u64 = 16 << 20;
/// Most logs in one tenant bundle.
const MAX_LOGS: usize = 100_000;
/// One log's bundle, in format 1 (read whole).
const MAX_LOG_BUNDLE: u64 = 8 << 30;
/// A log's manifest, in format 2.
const MAX_MANIFEST: u64 = 1 << 20;
/// The manifest of a bundle, its first member.
const MANIFEST: &str = "runwarden-bundle.json";
/// Format 2's last member: the page a reader opens first, made from the statement alone.
pub const TENANT_INDEX: &str = "index.html";

/// Whose log it is.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LogRole {
    /// The control plane's own log: decisions it made without running anything.
    Control,
    /// An enrolled host's log: what ran there, signed by the host's key.
    Host,
}

/// What the signed statement says of one log.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogEntry {
    /// Whose log.
    pub role: LogRole,
    /// The host, for a host's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// When the host enrolled with `key` (RFC 3339), for a host's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolled_at: Option<String>,
    /// The log's origin.
    pub origin: String,
    /// Its signer's key (signed-note verifier text), as enrolled.
    pub key: String,
    /// The checkpoint the log's records are proved against: tree size …
    pub tree_size: u64,
    /// … and root (hex).
    pub root: String,
    /// Records of the log in the bundle.
    pub records: u64,
    /// Whether those are all the log's records up to the checkpoint.
    pub complete: bool,
    /// Where the log's bundle is: in format 2 a directory (`logs/00001-host/`) holding
    /// a bundle of format 4 member by member; in format 1 one member (`logs/….tar`).
    pub member: String,
    /// sha256 (hex) of, in format 2, the log's manifest (`member` +
    /// `runwarden-bundle.json`: its seal, signed by the control plane, covers it and every
    /// other member of the log); in format 1, the whole member.
    pub sha256: String,
}

/// The statement the control plane signs over a tenant bundle.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TenantStatement {
    /// [`TENANT_BUNDLE_VERSION`].
    pub version: u32,
    /// The tenant.
    pub tenant: String,
    /// The filter every log's records were chosen by (besides the tenant).
    pub filter: serde_json::Value,
    /// When the bundle was made (RFC 3339).
    pub created_at: String,
    /// Every log of the tenant: the control plane's first, then the hosts' by host id.
    pub logs: Vec<LogEntry>,
}

/// Where a log of a tenant bundle comes from.
#[derive(Clone, Debug)]
pub enum LogSource {
    /// The tenant's view of the database's own log (the control plane's, which every
    /// tenant shares): every record made for the tenant, numbered from 0, under a
    /// checkpoint of the view — complete unless the filter has other conditions.
    TenantView,
    /// The log of this origin the database mirrors (a host's), every record of it.
    Mirror(String),
}

/// One log to put into a tenant bundle.
#[derive(Clone, Debug)]
pub struct TenantLog {
    /// Whose log.
    pub role: LogRole,
    /// The host, for a host's log.
    pub host: Option<String>,
    /// When the host enrolled (ms), for a host's log.
    pub enrolled_at_ms: Option<u64>,
    /// Where its records are.
    pub source: LogSource,
}

/// Export a tenant bundle of format 2 to `out`, as a stream: the statement (signed by
/// the control plane's `key`, the database's own log's), then each of `logs` as a bundle of
/// format 4 in its own directory, sealed by `key`. The database's own log gives the records
/// of `filter` (which names the tenant); a mirrored log every record within the filter's
/// other conditions (a host belongs to one tenant). A mirrored log the database holds
/// nothing of is left out. Reports are in `time_zone`. Memory stays what one log's export
/// holds (a chunk of records; a filtered export's leaf hashes), whatever the bundle's size.
/// `progress` hears (records written, records to write). Returns the output and the
/// statement.
#[allow(clippy::too_many_arguments)]
pub async fn export_tenant<W: Write>(
    store: &crate::store::Store,
    filter: &crate::store::Filter,
    logs: &[TenantLog],
    key: &SigningKey,
    time_zone: Option<&crate::bundle::TimeZone>,
    keys: Vec<VerifyingKey>,
    out: W,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> crate::error::Result<(W, TenantStatement)> {
    let Some(tenant) = filter.tenant.clone() else {
        return Err(crate::error::Error::MalformedRecord(
            "a tenant bundle is of one tenant: the filter names none".into(),
        ));
    };
    let per_host = crate::store::Filter {
        tenant: None,
        ..filter.clone()
    };
    // Everything the statement says comes first: each log planned (its checkpoint, its
    // records counted), its manifest hashed.
    let mut planned = Vec::with_capacity(logs.len());
    for log in logs {
        let export = match &log.source {
            LogSource::TenantView => Some(
                LogExport::view(store, &tenant, &per_host, key, time_zone, keys.clone()).await?,
            ),
            LogSource::Mirror(origin) => LogExport::mirror(store, origin, &per_host, time_zone)
                .await?
                .map(|mut e| {
                    e.tenant = Some(tenant.clone());
                    e
                }),
        };
        if let Some(e) = export {
            planned.push((log, e));
        }
    }
    let mut entries = Vec::with_capacity(planned.len());
    for (n, (log, e)) in planned.iter().enumerate() {
        let role = match log.role {
            LogRole::Host => "host",
            LogRole::Control => "control",
        };
        entries.push(LogEntry {
            role: log.role,
            host: log.host.clone(),
            enrolled_at: log.enrolled_at_ms.map(crate::record::rfc3339_ms),
            origin: e.manifest.origin.clone(),
            key: e.signer.to_text(),
            tree_size: e.manifest.tree_size,
            root: hash_hex(&e.root),
            records: e.manifest.record_count,
            complete: e.manifest.complete,
            member: format!("{LOGS_DIR}{n:05}-{role}/"),
            sha256: e.manifest_sha256(),
        });
    }
    let statement = TenantStatement {
        version: TENANT_BUNDLE_VERSION,
        tenant,
        filter: filter.to_json(),
        created_at: crate::bundle::now_rfc3339(),
        logs: entries,
    };
    let io = |source: std::io::Error| crate::error::Error::Io {
        action: "write the tenant bundle",
        path: std::path::PathBuf::from("(the bundle)"),
        source,
    };
    let envelope = Envelope::sign(
        TENANT_PAYLOAD_TYPE,
        &serde_json::to_vec(&statement).map_err(|e| io(e.into()))?,
        key,
    );
    let mut tar = tar::Builder::new(out);
    append_member(&mut tar, TENANT_STATEMENT, envelope.to_json().as_bytes()).map_err(io)?;
    let total: u64 = statement.logs.iter().map(|l| l.records).sum();
    let mut before = 0;
    for ((_, e), entry) in planned.iter().zip(&statement.logs) {
        let w = e.begin(tar, &entry.member).map_err(io)?;
        if w.manifest_sha256() != entry.sha256 {
            return Err(crate::error::Error::MalformedRecord(format!(
                "the manifest of {} changed between the statement and the bundle",
                entry.origin
            )));
        }
        let tell = |done: u64, _: u64| progress(before + done, total);
        let w = e.write(store, w, &tell).await?;
        tar = w.finish_in(key).map_err(io)?;
        before += entry.records;
    }
    append_member(&mut tar, TENANT_INDEX, index_page(&statement).as_bytes()).map_err(io)?;
    let mut out = tar.into_inner().map_err(io)?;
    out.flush().map_err(io)?;
    Ok((out, statement))
}

/// The page a tenant bundle opens with: what the statement says, each log linked to its
/// own report. A function of the signed statement alone: verification makes it again and
/// compares, so it says nothing the statement does not.
fn index_page(st: &TenantStatement) -> String {
    use crate::bundle::esc;
    let mut out = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>runwarden evidence — tenant {tenant}</title>\n\
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:80em}}table{{border-collapse:collapse}}\
td,th{{border:1px solid #ccc;padding:3px 6px;font-size:14px;text-align:left}}th{{background:#f3f3f3}}td.n{{text-align:right}}</style></head>\n\
<body><h1>Remediation evidence of tenant {tenant}</h1>\n\
<p>Made {created}. The control plane's decisions for this tenant and the log of each of its hosts, each proven against its signer's checkpoint; \
the control plane's key signs the list below. Check it with <code>runwarden evidence verify BUNDLE --key CONTROL.pub</code>; this page alone proves nothing. \
Unpack the bundle (<code>tar -xf BUNDLE</code>) and open this page from there to follow the links to each log's report.</p>\n\
<table><tr><th>log</th><th>records</th><th>of the log's</th><th>complete</th><th>signed by</th><th>report</th></tr>\n",
        tenant = esc(&st.tenant),
        created = esc(&st.created_at),
    );
    for l in &st.logs {
        let whose = match (&l.role, &l.host) {
            (LogRole::Host, Some(h)) => format!("host {}", esc(h)),
            _ => "control plane (its decisions for this tenant)".to_string(),
        };
        let signer = VerifyingKey::from_text(&l.key)
            .map(|k| format!("{} ({})", k.name(), k.key_id_hex()))
            .unwrap_or_else(|_| "?".to_string());
        out.push_str(&format!(
            "<tr><td>{whose}<br><code>{origin}</code></td><td class=\"n\">{records}</td><td class=\"n\">{size}</td><td>{complete}</td><td><code>{signer}</code></td><td><a href=\"{member}report.html\">report</a></td></tr>\n",
            origin = esc(&l.origin),
            records = l.records,
            size = l.tree_size,
            complete = if l.complete { "yes" } else { "filtered" },
            signer = esc(&signer),
            member = esc(&l.member),
        ));
    }
    out.push_str("</table>\n</body></html>\n");
    out
}

/// Whether `bundle` starts like a tenant bundle (its first member is the statement).
pub fn is_tenant_bundle(bundle: impl Read) -> bool {
    let mut archive = tar::Archive::new(bundle);
    let Ok(mut entries) = archive.entries() else {
        return false;
    };
    entries
        .next()
        .and_then(|e| e.ok())
        .is_some_and(|e| e.path_bytes().as_ref() == TENANT_STATEMENT.as_bytes())
}

/// What verifying a tenant bundle found: the signed statement, and each log's result.
#[derive(Debug)]
pub struct TenantVerified {
    /// The statement, signed by a trusted control-plane key.
    pub statement: TenantStatement,
    /// Each log of the statement, in its order, with what its verification found.
    pub logs: Vec<(LogEntry, Result<Verified, BundleError>)>,
}

impl TenantVerified {
    /// Whether every log verified.
    pub fn ok(&self) -> bool {
        self.logs.iter().all(|(_, r)| r.is_ok())
    }
}

impl std::fmt::Display for TenantVerified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.statement;
        let bad = self.logs.iter().filter(|(_, r)| r.is_err()).count();
        writeln!(
            f,
            "tenant {}: {} log(s), statement signed by the control plane, made {}{}",
            escape_control(&s.tenant),
            s.logs.len(),
            escape_control(&s.created_at),
            if bad == 0 {
                String::new()
            } else {
                format!("; {bad} FAILED")
            }
        )?;
        for (entry, result) in &self.logs {
            let whose = match (&entry.role, &entry.host) {
                (LogRole::Host, Some(h)) => format!("host {}", escape_control(h)),
                _ => "control plane".to_string(),
            };
            match result {
                Ok(v) => writeln!(f, "  ok      {whose}: {v}")?,
                Err(e) => writeln!(
                    f,
                    "  FAILED  {whose} ({}): {e}",
                    escape_control(&entry.origin)
                )?,
            }
        }
        Ok(())
    }
}

fn bad(message: impl Into<String>) -> BundleError {
    BundleError {
        record: None,
        message: message.into(),
    }
}

/// Verify a tenant bundle: its statement must be signed by one of `trusted` (the control
/// plane's key); each log's bundle must be the one the statement names (by its manifest's
/// digest, in format 2), verify under the signer key the statement names (the control
/// log's must itself be trusted), and prove exactly the checkpoint and record count the
/// statement states. `Err` when the bundle as a whole cannot be read or its statement is
/// not trusted; otherwise every log's own result. Format 2 is read as a stream (memory is
/// one chunk of records, whatever the size); format 1 a log at a time.
pub fn verify_tenant_bundle(
    bundle: impl Read,
    trusted: &[VerifyingKey],
) -> Result<TenantVerified, BundleError> {
    verify_tenant_bundle_since(bundle, trusted, None)
}

/// [`verify_tenant_bundle`], and the log of the checkpoint note `since` (one the auditor
/// kept from an earlier bundle: the tenant's view of the control log, or a host's log)
/// proved an append-only extension of it. Format 2 only.
pub fn verify_tenant_bundle_since(
    bundle: impl Read,
    trusted: &[VerifyingKey],
    since: Option<&str>,
) -> Result<TenantVerified, BundleError> {
    let mut archive = tar::Archive::new(bundle);
    let mut entries = archive
        .entries()
        .map_err(|e| bad(format!("not a runwarden tenant bundle (tar): {e}")))?
        .raw(true);
    let (statement, signer) = {
        let entry = entries.next().ok_or_else(|| {
            bad(format!(
                "bundle has no {TENANT_STATEMENT}: corrupt or not a runwarden tenant bundle"
            ))
        })?;
        let mut entry = entry.map_err(|e| bad(format!("corrupt or truncated bundle: {e}")))?;
        let (name, size) = regular(&entry)?;
        if name.as_bytes() != TENANT_STATEMENT.as_bytes() {
            return Err(bad(format!(
                "bundle member {} comes before {TENANT_STATEMENT}, which must be the first member",
                shown(&name)
            )));
        }
        if size > MAX_STATEMENT {
            return Err(bad(format!(
                "{TENANT_STATEMENT} is {size} bytes, more than {MAX_STATEMENT}"
            )));
        }
        let data = read_member(&mut entry, size, &shown(&name))?;
        read_statement(&data, trusted)?
    };
    // The log the kept checkpoint is of: its origin line.
    let since = match since {
        None => None,
        Some(note) => {
            let origin = note.lines().next().unwrap_or_default();
            if statement.version == 1 {
                return Err(bad(
                    "--since-checkpoint applies to tenant bundles of format 2: export the tenant again",
                ));
            }
            if !statement.logs.iter().any(|l| l.origin == origin) {
                return Err(bad(format!(
                    "--since-checkpoint is of log {:?}, which this bundle does not hold",
                    escape_control(origin)
                )));
            }
            Some((origin.to_string(), note))
        }
    };
    let results = if statement.version == 1 {
        logs_of_format_1(&statement, &mut entries, trusted)?
    } else {
        let since = since.as_ref().map(|(o, n)| (o.as_str(), *n));
        logs_of_format_2(&statement, &signer, &mut entries, trusted, since)?
    };
    let logs = statement
        .logs
        .iter()
        .cloned()
        .zip(results)
        .map(|(entry, r)| {
            let r = r.unwrap_or_else(|| {
                Err(bad(format!(
                    "its member \"{}\" is missing from the bundle (removed)",
                    escape_control(&entry.member)
                )))
            });
            (entry, r)
        })
        .collect();
    Ok(TenantVerified { statement, logs })
}

type LogResults = Vec<Option<Result<Verified, BundleError>>>;

/// A member's name and size, if it is a regular file.
fn regular<R: Read>(entry: &tar::Entry<'_, R>) -> Result<(String, u64), BundleError> {
    let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
    let etype = entry.header().entry_type();
    if etype != tar::EntryType::Regular {
        return Err(bad(format!(
            "bundle member {} refused: it is {}; a tenant bundle holds only regular files; re-export the bundle",
            shown(&name),
            crate::bundle::type_name(etype)
        )));
    }
    let size = entry
        .header()
        .entry_size()
        .map_err(|e| bad(format!("corrupt bundle member {}: {e}", shown(&name))))?;
    Ok((name, size))
}

fn shown(name: &str) -> String {
    format!("\"{}\"", escape_control(name))
}

/// Format 2: each log a bundle of format 4 in its directory, in the statement's order,
/// verified as it streams by. A log that fails is skipped to its end, and the next is
/// verified: one bad log does not hide another.
fn logs_of_format_2<R: Read>(
    st: &TenantStatement,
    signer: &VerifyingKey,
    entries: &mut tar::Entries<'_, R>,
    trusted: &[VerifyingKey],
    since: Option<(&str, &str)>,
) -> Result<LogResults, BundleError> {
    let mut results: LogResults = st.logs.iter().map(|_| None).collect();
    // The log whose manifest comes next, a failed log whose members are passed over, and
    // a member a log cut short read past (the next log's manifest).
    let mut next = 0usize;
    let mut skipping: Option<usize> = None;
    let mut spilled: Option<(String, Vec<u8>)> = None;
    let mut indexed = false;
    let page = index_page(st);
    // Each log by its directory (`logs/NAME/`): a member's log is found in one look-up.
    let dirs: std::collections::HashMap<&str, usize> = st
        .logs
        .iter()
        .enumerate()
        .map(|(i, l)| (l.member.as_str(), i))
        .collect();
    let owner_of = |name: &str| {
        let rest = name.strip_prefix(LOGS_DIR)?;
        let end = LOGS_DIR.len() + rest.find('/')? + 1;
        dirs.get(&name[..end]).copied()
    };
    loop {
        let mut entry = None;
        let (name, size, mut data) = match spilled.take() {
            Some((name, data)) => (name, data.len() as u64, Some(data)),
            None => {
                let Some(e) = entries.next() else { break };
                let e = e.map_err(|e| {
                    // A log refused on a header that claims more than the file holds ends
                    // the stream while it is passed over: the refusal is the reason.
                    let failed = skipping.and_then(|at| results[at].as_ref()?.as_ref().err());
                    match (skipping, failed) {
                        (Some(at), Some(why)) => bad(format!(
                            "corrupt or truncated bundle ({e}) after its log {} failed: {why}",
                            shown(&st.logs[at].member)
                        )),
                        _ => bad(format!("corrupt or truncated bundle: {e}")),
                    }
                })?;
                let (name, size) = regular(&e)?;
                entry = Some(e);
                (name, size, None)
            }
        };
        let owner = owner_of(&name);
        if owner.is_some() && owner == skipping {
            continue;
        }
        skipping = None;
        if owner.is_none() && name == TENANT_INDEX {
            if std::mem::replace(&mut indexed, true) {
                return Err(bad(format!(
                    "bundle member {} refused: it appears twice",
                    shown(&name)
                )));
            }
            let data = match (data.take(), entry.as_mut()) {
                (Some(d), _) => d,
                (None, Some(e)) if size <= page.len() as u64 => {
                    read_member(e, size, &shown(&name))?
                }
                _ => Vec::new(),
            };
            if data != page.as_bytes() {
                return Err(bad(format!(
                    "{TENANT_INDEX} is not the page of this bundle's signed statement (altered): do not rely on it"
                )));
            }
            continue;
        }
        if indexed {
            return Err(bad(format!(
                "bundle member {} refused: it comes after {TENANT_INDEX}, which ends a tenant bundle",
                shown(&name)
            )));
        }
        let Some(at) = owner else {
            return Err(bad(format!(
                "bundle member {} refused: the signed statement lists no log it belongs to",
                shown(&name)
            )));
        };
        if at < next {
            return Err(bad(format!(
                "bundle member {} refused: its log came earlier (it appears twice, or out of place)",
                shown(&name)
            )));
        }
        // The logs passed over have no members here.
        next = at + 1;
        let log = &st.logs[at];
        if name != format!("{}{MANIFEST}", log.member) {
            results[at] = Some(Err(bad(format!(
                "its bundle does not start with its manifest: {} comes first (members removed or reordered)",
                shown(&name)
            ))));
            skipping = Some(at);
            continue;
        }
        if size > MAX_MANIFEST {
            return Err(bad(format!(
                "bundle member {} is {size} bytes, more than {MAX_MANIFEST}",
                shown(&name)
            )));
        }
        let manifest = match (data.take(), entry.as_mut()) {
            (Some(d), _) => d,
            (None, Some(e)) => read_member(e, size, &shown(&name))?,
            (None, None) => return Err(bad(format!("{} could not be read", shown(&name)))),
        };
        drop(entry);
        let within = Within {
            prefix: &log.member,
            sealer: signer,
            tenant: &st.tenant,
            spill_max: MAX_MANIFEST.max(page.len() as u64),
            spilled: &mut spilled,
        };
        let kept = since
            .filter(|(origin, _)| *origin == log.origin)
            .map(|(_, note)| note);
        let result = check_log_2(log, &manifest, entries, trusted, kept, within);
        if result.is_err() {
            skipping = Some(at);
        }
        results[at] = Some(result);
    }
    if !indexed {
        return Err(bad(format!(
            "truncated tenant bundle: it ends before {TENANT_INDEX}, its last member"
        )));
    }
    Ok(results)
}

/// Verify one log of format 2, whose manifest is `manifest`, its other members next in
/// `entries`.
fn check_log_2<R: Read>(
    entry: &LogEntry,
    manifest: &[u8],
    entries: &mut tar::Entries<'_, R>,
    trusted: &[VerifyingKey],
    since: Option<&str>,
    within: Within<'_>,
) -> Result<Verified, BundleError> {
    let key = log_key(entry, trusted)?;
    let digest = hex::encode(Sha256::digest(manifest));
    if digest != entry.sha256 {
        return Err(bad(format!(
            "its manifest is not the one the statement signed (sha256 {digest}, signed {}): altered or replaced",
            escape_control(&entry.sha256)
        )));
    }
    let v = verify_stream(
        manifest,
        entries,
        std::slice::from_ref(&key),
        since,
        Some(within),
    )?;
    check_claims(entry, v)
}

/// The key the statement names for a log; the control plane's log's must be trusted.
fn log_key(entry: &LogEntry, trusted: &[VerifyingKey]) -> Result<VerifyingKey, BundleError> {
    let key = VerifyingKey::from_text(&entry.key)
        .map_err(|e| bad(format!("the statement's key for this log: {e}")))?;
    if entry.role == LogRole::Control && !trusted.iter().any(|t| t.to_text() == key.to_text()) {
        return Err(bad(
            "the control plane's log is signed by a key you did not pass with --key",
        ));
    }
    Ok(key)
}

/// What a log proved must be what the statement says of it.
fn check_claims(entry: &LogEntry, v: Verified) -> Result<Verified, BundleError> {
    let root = hash_hex(&v.root);
    if v.origin != entry.origin
        || v.tree_size != entry.tree_size
        || root != entry.root
        || v.records != entry.records
        || v.complete != entry.complete
    {
        return Err(bad(format!(
            "it proves {} records of {} at size {} root {root}, but the statement signed {} records of {} at size {} root {}",
            v.records,
            escape_control(&v.origin),
            v.tree_size,
            entry.records,
            escape_control(&entry.origin),
            entry.tree_size,
            escape_control(&entry.root)
        )));
    }
    Ok(v)
}

/// Format 1: each log a bundle held whole in one member, in any order.
fn logs_of_format_1<R: Read>(
    st: &TenantStatement,
    entries: &mut tar::Entries<'_, R>,
    trusted: &[VerifyingKey],
) -> Result<LogResults, BundleError> {
    let mut results: LogResults = st.logs.iter().map(|_| None).collect();
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("corrupt or truncated bundle: {e}")))?;
        let (name, size) = regular(&entry)?;
        let Some(pos) = st.logs.iter().position(|l| l.member == name) else {
            return Err(bad(format!(
                "bundle member {} refused: the signed statement does not list it",
                shown(&name)
            )));
        };
        if results[pos].is_some() {
            return Err(bad(format!(
                "bundle member {} refused: it appears twice",
                shown(&name)
            )));
        }
        if size > MAX_LOG_BUNDLE {
            return Err(bad(format!(
                "bundle member {} is {size} bytes, more than {MAX_LOG_BUNDLE}",
                shown(&name)
            )));
        }
        let data = read_member(&mut entry, size, &shown(&name))?;
        results[pos] = Some(check_log(&st.logs[pos], &data, trusted));
    }
    Ok(results)
}

fn read_member(entry: &mut impl Read, size: u64, shown: &str) -> Result<Vec<u8>, BundleError> {
    let mut data = Vec::with_capacity(size.min(1 << 20) as usize);
    entry
        .take(size)
        .read_to_end(&mut data)
        .map_err(|e| bad(format!("corrupt or truncated bundle at {shown}: {e}")))?;
    if data.len() as u64 != size {
        return Err(bad(format!(
            "truncated bundle: member {shown} ends after {} of its {size} bytes",
            data.len()
        )));
    }
    Ok(data)
}

/// The statement, if a trusted key signed it and it is well formed.
fn read_statement(
    data: &[u8],
    trusted: &[VerifyingKey],
) -> Result<(TenantStatement, VerifyingKey), BundleError> {
    let text =
        std::str::from_utf8(data).map_err(|_| bad(format!("{TENANT_STATEMENT} is not UTF-8")))?;
    let envelope =
        Envelope::from_json(text).map_err(|e| bad(format!("{TENANT_STATEMENT}: {e}")))?;
    if envelope.payload_type != TENANT_PAYLOAD_TYPE {
        return Err(bad(format!(
            "{TENANT_STATEMENT} is of payload type {:?}, not {TENANT_PAYLOAD_TYPE}",
            escape_control(&envelope.payload_type)
        )));
    }
    let signer = envelope.verify(trusted).map_err(|e| {
        bad(format!(
            "the tenant bundle's statement is not signed by a key you trust ({e}): pass the control plane's public key with --key"
        ))
    })?;
    let payload = envelope
        .payload()
        .map_err(|e| bad(format!("{TENANT_STATEMENT}: {e}")))?;
    let value: serde_json::Value = serde_json::from_slice(&payload)
        .map_err(|e| bad(format!("the statement is not JSON: {e}")))?;
    match value.get("version").and_then(|v| v.as_u64()) {
        Some(v)
            if (u64::from(OLDEST_TENANT_VERSION)..=u64::from(TENANT_BUNDLE_VERSION))
                .contains(&v) => {}
        other => {
            return Err(bad(format!(
                "unknown tenant bundle version {other:?}; this runwarden reads versions {OLDEST_TENANT_VERSION} to {TENANT_BUNDLE_VERSION}: upgrade runwarden"
            )));
        }
    }
    let s: TenantStatement =
        serde_json::from_value(value).map_err(|e| bad(format!("the statement: {e}")))?;
    if s.logs.len() > MAX_LOGS {
        return Err(bad(format!(
            "the statement lists {} logs, more than {MAX_LOGS}",
            s.logs.len()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for l in &s.logs {
        let end = if s.version == 1 { ".tar" } else { "/" };
        let well_named = l
            .member
            .strip_prefix(LOGS_DIR)
            .and_then(|n| n.strip_suffix(end))
            .is_some_and(|n| {
                !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !well_named || !seen.insert(l.member.as_str()) {
            return Err(bad(format!(
                "the statement lists a member \"{}\" that a tenant bundle cannot hold",
                escape_control(&l.member)
            )));
        }
        if (l.role == LogRole::Host) != l.host.is_some() {
            return Err(bad(format!(
                "the statement's entry for {} names a host only if it is a host's log",
                escape_control(&l.origin)
            )));
        }
    }
    Ok((s, signer.clone()))
}

/// Verify one log's bundle of format 1 against what the statement says of it.
fn check_log(
    entry: &LogEntry,
    data: &[u8],
    trusted: &[VerifyingKey],
) -> Result<Verified, BundleError> {
    let digest = hex::encode(Sha256::digest(data));
    let key = log_key(entry, trusted)?;
    if digest != entry.sha256 {
        let altered = format!(
            "its bundle is not the one the statement signed (sha256 {digest}, signed {})",
            escape_control(&entry.sha256)
        );
        // Name the first bad record when there is one: that is what the auditor needs.
        return Err(
            match verify_bundle(data, std::slice::from_ref(&key), None) {
                Err(e) => BundleError {
                    record: e.record,
                    message: format!("{altered}: {}", e.message),
                },
                Ok(_) => bad(format!("{altered}: altered or replaced")),
            },
        );
    }
    let v = verify_bundle(data, std::slice::from_ref(&key), None)?;
    check_claims(entry, v)
}
