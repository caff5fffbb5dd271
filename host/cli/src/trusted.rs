//! The gate in front of a host's extra runbooks: a component from the runbooks directory
//! is loaded only when its signed release sits beside it (`COMPONENT.release.json`, as
//! `runwarden runbook sign` writes it), the release is signed by a publisher the host's
//! trust policy lists for that name, kind and risk, the bytes are the ones signed, and the
//! release tells the truth about the component (name, version, risk, manifest). Anything
//! else — unsigned, altered, untrusted — is refused: not loaded, said on stderr, and (on a
//! host, `up` and `agent run`) signed into the host's log as a `refused` record.
//!
//! Deny by default: without a trust policy no component from the directory loads. The
//! standard runbooks built into runwarden are trusted as the binary is, and records of
//! their runs name no publisher.

use anyhow::Context;
use runwarden_evidence as ev;
use runwarden_runtime::Runtime;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The trust policy in force and where it came from.
pub(crate) struct Trust {
    /// Its file.
    pub path: PathBuf,
    /// The policy.
    pub policy: ev::TrustPolicy,
}

impl Trust {
    /// `--trust FILE` (or `trust` in runwarden.toml), else `DATA_DIR/trust.toml` when it
    /// exists, else none. A policy that does not parse stops the start.
    pub(crate) fn find(given: Option<PathBuf>, data_dir: &Path) -> anyhow::Result<Option<Trust>> {
        let path = match given {
            Some(p) => p,
            None => {
                let p = data_dir.join("trust.toml");
                if !p.exists() {
                    return Ok(None);
                }
                p
            }
        };
        let policy = crate::publish::read_trust_policy(&path)?;
        Ok(Some(Trust { path, policy }))
    }
}

/// A component of the runbooks directory that was not loaded, and why.
pub(crate) struct Refused {
    /// Its file.
    pub path: PathBuf,
    /// Its name (from its manifest; the file's stem when it does not load).
    pub name: String,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// Why, in words.
    pub why: String,
}

/// What the runbooks directory gave: the admitted components, who published each, and
/// what was refused.
#[derive(Default)]
pub(crate) struct Components {
    /// Bytes of each admitted component.
    pub admitted: Vec<Vec<u8>>,
    /// Component sha256 → its publisher's key id.
    pub publishers: HashMap<String, String>,
    /// What was refused.
    pub refused: Vec<Refused>,
}

/// Check every `.wasm` file of `dir` against `trust` (see the module docs).
pub(crate) fn components(
    rt: &Runtime,
    dir: Option<&Path>,
    trust: Option<&Trust>,
) -> anyhow::Result<Components> {
    let mut out = Components::default();
    let Some(dir) = dir else {
        return Ok(out);
    };
    for path in crate::rules::wasm_files(dir)? {
        let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        let sha256 = ev::component_sha256(&bytes);
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        match admit(rt, &path, &bytes, trust) {
            Ok(publisher) => {
                out.publishers.insert(sha256, publisher);
                out.admitted.push(bytes);
            }
            Err((name, why)) => out.refused.push(Refused {
                path,
                name: name.unwrap_or(stem),
                sha256,
                why,
            }),
        }
    }
    Ok(out)
}

/// The component's publisher's key id, or (its name if known, why not).
fn admit(
    rt: &Runtime,
    path: &Path,
    bytes: &[u8],
    trust: Option<&Trust>,
) -> Result<String, (Option<String>, String)> {
    let release_file = crate::publish::release_path(path);
    let envelope = match std::fs::read_to_string(&release_file) {
        Ok(e) => Some(e),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err((None, format!("reading {}: {e}", release_file.display()))),
    };
    runwarden_agent::components::admit(rt, bytes, envelope.as_deref(), trust.map(|t| &t.policy))
        .map(|a| a.publisher)
        .map_err(|n| {
            let place = match (&envelope, trust) {
                (None, Some(_)) => format!(" (expected at {})", release_file.display()),
                (Some(_), Some(t)) => format!(" (trust policy {})", t.path.display()),
                _ => String::new(),
            };
            (n.name, format!("{}{place}", n.why))
        })
}

/// Say on stderr what was refused (names and reasons cleaned for the terminal).
pub(crate) fn report_refusals(refused: &[Refused]) {
    for r in refused {
        errln!(
            "error: component {} ({}, sha256 {}) refused, not loaded: {}",
            crate::term::clean(&r.name),
            r.path.display(),
            &r.sha256[..12.min(r.sha256.len())],
            crate::term::clean(&r.why)
        );
    }
}
