//! What a host loads besides the runbooks built into runwarden: only a component whose
//! signed release the host's own trust policy admits. The release must be signed by a
//! publisher the policy lists for that name, kind and risk, over these very bytes, and it
//! must tell the truth about the component (name, version, risk, manifest). Deny by
//! default: without a trust policy nothing loads. The same check runs for a component
//! found in the runbooks directory at start and for one deployed by the control plane.

use runwarden_evidence as ev;
use runwarden_runtime::{Loaded, Runtime};
use std::sync::Arc;

/// A component the trust policy admitted, compiled.
pub struct Admitted {
    /// The component, loaded (compiled, or from the compile cache).
    pub loaded: Arc<Loaded>,
    /// What its publisher signed.
    pub release: ev::Release,
    /// The publisher's key id (hex): named in the record of every run of it.
    pub publisher: String,
}

/// A component that was not admitted.
#[derive(Debug)]
pub struct NotAdmitted {
    /// Its name, when it loaded far enough to tell.
    pub name: Option<String>,
    /// Why, in words.
    pub why: String,
}

/// Admit `bytes` with its release `envelope` (DSSE JSON, if one came with it) under
/// `trust` (see the module docs).
pub fn admit(
    rt: &Runtime,
    bytes: &[u8],
    envelope: Option<&str>,
    trust: Option<&ev::TrustPolicy>,
) -> Result<Admitted, NotAdmitted> {
    let loaded = rt.load(bytes).map_err(|e| NotAdmitted {
        name: None,
        why: format!("it does not load: {e}"),
    })?;
    let name = loaded.manifest().name.clone();
    let fail = |why: String| NotAdmitted {
        name: Some(name.clone()),
        why,
    };
    let Some(trust) = trust else {
        return Err(fail(
            "no trust policy: this host loads no component beyond the built-in runbooks until \
             one names the publishers it trusts (--trust FILE, or DATA_DIR/trust.toml)"
                .into(),
        ));
    };
    let Some(envelope) = envelope else {
        return Err(fail(
            "unsigned: no release came with it (`runwarden runbook sign` makes one)".into(),
        ));
    };
    let (release, key) = trust
        .admit(envelope, bytes)
        .map_err(|e| fail(e.to_string()))?;
    release
        .describes(&loaded.manifest_json())
        .map_err(|e| fail(format!("its release does not describe it: {e}")))?;
    Ok(Admitted {
        loaded,
        release,
        publisher: key.key_id_hex(),
    })
}
