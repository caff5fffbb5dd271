//! Tenant bundles: everything an auditor of one tenant gets from a fleet's control plane,
//! in one file — the control plane's own log (the records of that tenant: what it decided
//! without running anything) and the log of every host of the tenant, as the control
//! plane mirrored it, each an ordinary bundle proved against its own signer's checkpoint.
//!
//! The auditor trusts one key, the control plane's. It signs the bundle's statement (a
//! DSSE envelope, the first member): the tenant, the filter, and for each log its role,
//! host, origin, signer key as enrolled, checkpoint (size and root), record count and the
//! sha256 of its member. Each host log then verifies under the key the control plane
//! vouches for, and must match what the statement says of it. Every log is verified, and
//! the first bad record of each is named: one bad host log does not hide another.

use crate::bundle::{BundleContents, BundleError, Verified, hash_hex, verify_bundle};
use crate::dsse::Envelope;
use crate::keys::{SigningKey, VerifyingKey};
use crate::text::escape_control;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;

/// The tenant bundle format this code writes and reads.
pub const TENANT_BUNDLE_VERSION: u32 = 1;
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
/// One log's bundle.
const MAX_LOG_BUNDLE: u64 = 8 << 30;

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
    /// The member holding the log's bundle.
    pub member: String,
    /// sha256 (hex) of that member.
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

/// One log to put into a tenant bundle.
pub struct LogPart {
    /// Whose log.
    pub role: LogRole,
    /// The host, for a host's log.
    pub host: Option<String>,
    /// When the host enrolled (ms), for a host's log.
    pub enrolled_at_ms: Option<u64>,
    /// The log's bundle.
    pub bundle: BundleContents,
}

/// Write a tenant bundle of `parts`, its statement signed by the control plane's `key`.
/// Returns the statement.
pub fn write_tenant_bundle(
    tenant: &str,
    filter: serde_json::Value,
    parts: &[LogPart],
    key: &SigningKey,
    out: impl std::io::Write,
) -> std::io::Result<TenantStatement> {
    let mut members = Vec::with_capacity(parts.len());
    let mut logs = Vec::with_capacity(parts.len());
    for (n, part) in parts.iter().enumerate() {
        let mut data = Vec::new();
        part.bundle.write(&mut data)?;
        // The key that signed the log's checkpoint: the one the statement vouches for.
        let parsed = part.bundle.keys.iter().find_map(|k| {
            crate::checkpoint::Checkpoint::parse(
                &part.bundle.checkpoint_note,
                std::slice::from_ref(k),
            )
            .ok()
            .map(|cp| (k, cp))
        });
        let Some((signer, cp)) = parsed else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the checkpoint of {} verifies under none of its keys",
                    part.bundle.manifest.origin
                ),
            ));
        };
        let member = match part.role {
            LogRole::Host => format!("{LOGS_DIR}{n:05}-host.tar"),
            LogRole::Control => format!("{LOGS_DIR}{n:05}-control.tar"),
        };
        logs.push(LogEntry {
            role: part.role,
            host: part.host.clone(),
            enrolled_at: part.enrolled_at_ms.map(crate::record::rfc3339_ms),
            origin: part.bundle.manifest.origin.clone(),
            key: signer.to_text(),
            tree_size: cp.size,
            root: hash_hex(&cp.root),
            records: part.bundle.records.len() as u64,
            complete: part.bundle.manifest.complete,
            member: member.clone(),
            sha256: hex::encode(Sha256::digest(&data)),
        });
        members.push((member, data));
    }
    let statement = TenantStatement {
        version: TENANT_BUNDLE_VERSION,
        tenant: tenant.to_string(),
        filter,
        created_at: crate::bundle::now_rfc3339(),
        logs,
    };
    let envelope = Envelope::sign(TENANT_PAYLOAD_TYPE, &serde_json::to_vec(&statement)?, key);
    let signed = envelope.to_json();
    let all = std::iter::once((TENANT_STATEMENT, signed.as_bytes()))
        .chain(members.iter().map(|(n, d)| (n.as_str(), d.as_slice())));
    crate::bundle::write_tar(out, all)?;
    Ok(statement)
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
/// plane's key); each log's bundle must be the member the statement hashed, verify under
/// the signer key the statement names (the control log's must itself be trusted), and
/// prove exactly the checkpoint and record count the statement states. `Err` when the
/// bundle as a whole cannot be read or its statement is not trusted; otherwise every
/// log's own result.
pub fn verify_tenant_bundle(
    bundle: impl Read,
    trusted: &[VerifyingKey],
) -> Result<TenantVerified, BundleError> {
    let mut archive = tar::Archive::new(bundle);
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a runwarden tenant bundle (tar): {e}")))?
        .raw(true);
    let mut statement: Option<TenantStatement> = None;
    let mut results: Vec<Option<Result<Verified, BundleError>>> = Vec::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("corrupt or truncated bundle: {e}")))?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let shown = format!("\"{}\"", escape_control(&name));
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(bad(format!(
                "bundle member {shown} refused: a tenant bundle holds only regular files"
            )));
        }
        let size = entry
            .header()
            .entry_size()
            .map_err(|e| bad(format!("corrupt bundle member {shown}: {e}")))?;
        let Some(st) = &statement else {
            if name != TENANT_STATEMENT {
                return Err(bad(format!(
                    "bundle member {shown} comes before {TENANT_STATEMENT}, which must be the first member"
                )));
            }
            if size > MAX_STATEMENT {
                return Err(bad(format!(
                    "{TENANT_STATEMENT} is {size} bytes, more than {MAX_STATEMENT}"
                )));
            }
            let data = read_member(&mut entry, size, &shown)?;
            let s = read_statement(&data, trusted)?;
            results = s.logs.iter().map(|_| None).collect();
            statement = Some(s);
            continue;
        };
        let Some(pos) = st.logs.iter().position(|l| l.member == name) else {
            return Err(bad(format!(
                "bundle member {shown} refused: the signed statement does not list it"
            )));
        };
        if results[pos].is_some() {
            return Err(bad(format!(
                "bundle member {shown} refused: it appears twice"
            )));
        }
        if size > MAX_LOG_BUNDLE {
            return Err(bad(format!(
                "bundle member {shown} is {size} bytes, more than {MAX_LOG_BUNDLE}"
            )));
        }
        let data = read_member(&mut entry, size, &shown)?;
        results[pos] = Some(check_log(&st.logs[pos], &data, trusted));
    }
    let statement = statement.ok_or_else(|| {
        bad(format!(
            "bundle has no {TENANT_STATEMENT}: corrupt or not a runwarden tenant bundle"
        ))
    })?;
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
fn read_statement(data: &[u8], trusted: &[VerifyingKey]) -> Result<TenantStatement, BundleError> {
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
    envelope.verify(trusted).map_err(|e| {
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
        Some(v) if v == u64::from(TENANT_BUNDLE_VERSION) => {}
        other => {
            return Err(bad(format!(
                "unknown tenant bundle version {other:?}; this runwarden reads version {TENANT_BUNDLE_VERSION}: upgrade runwarden"
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
        let well_named = l
            .member
            .strip_prefix(LOGS_DIR)
            .and_then(|n| n.strip_suffix(".tar"))
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
    Ok(s)
}

/// Verify one log's bundle against what the statement says of it.
fn check_log(
    entry: &LogEntry,
    data: &[u8],
    trusted: &[VerifyingKey],
) -> Result<Verified, BundleError> {
    let digest = hex::encode(Sha256::digest(data));
    let key = VerifyingKey::from_text(&entry.key)
        .map_err(|e| bad(format!("the statement's key for this log: {e}")))?;
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
    if entry.role == LogRole::Control && !trusted.iter().any(|t| t.to_text() == key.to_text()) {
        return Err(bad(
            "the control plane's log is signed by a key you did not pass with --key",
        ));
    }
    let v = verify_bundle(data, std::slice::from_ref(&key), None)?;
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
