//! What a host loads besides the runbooks built into runwarden: only a component whose
//! signed release the host's own trust policy admits. The release must be signed by a
//! publisher the policy lists for that name, kind and risk, over these very bytes, and it
//! must tell the truth about the component (name, version, risk, manifest). Deny by
//! default: without a trust policy nothing loads. The same check runs for a component
//! found in the runbooks directory at start and for one deployed by the control plane.

use runwarden_evidence as ev;
use runwarden_runtime::{Loaded, RuleSet, Runtime};
use std::sync::Arc;

/// What a deployment loads: a runbook, or an L1 rule set (what its release says, and
/// what the component is shown to be).
#[derive(Clone)]
pub enum Deployable {
    /// A runbook, run by jobs.
    Runbook(Arc<Loaded>),
    /// A rule set, which the host's own control plane decides with.
    Rules(Arc<RuleSet>),
}

impl Deployable {
    /// SHA-256 of its bytes.
    pub fn sha256(&self) -> &str {
        match self {
            Deployable::Runbook(l) => l.sha256(),
            Deployable::Rules(r) => r.sha256(),
        }
    }
}

/// A deployable component the trust policy admitted, loaded.
pub struct AdmittedDeployable {
    /// The component.
    pub component: Deployable,
    /// What its publisher signed.
    pub release: ev::Release,
    /// The publisher's key id (hex).
    pub publisher: String,
    /// The publisher's key.
    pub key: ev::VerifyingKey,
}

/// Admit `bytes` with its release `envelope` under `trust`, as the kind its release
/// says: the signature and the policy are checked before anything is compiled, then the
/// component must be what the release says (a runbook with that manifest, or a rule
/// component listing those rules).
pub fn admit_deployable(
    rt: &Runtime,
    bytes: &[u8],
    envelope: &str,
    trust: Option<&ev::TrustPolicy>,
) -> Result<AdmittedDeployable, String> {
    let Some(trust) = trust else {
        return Err(
            "no trust policy: this host loads no component beyond the built-in \
                    runbooks until one names the publishers it trusts (--trust FILE, or \
                    DATA_DIR/trust.toml)"
                .into(),
        );
    };
    let (release, key) = trust.admit(envelope, bytes).map_err(|e| e.to_string())?;
    let component = match release.kind {
        ev::ComponentKind::Runbook => {
            let loaded = rt
                .load(bytes)
                .map_err(|e| format!("it does not load as a runbook: {e}"))?;
            release
                .describes(&loaded.manifest_json())
                .map_err(|e| format!("its release does not describe it: {e}"))?;
            Deployable::Runbook(loaded)
        }
        ev::ComponentKind::Rules => {
            let set = rt
                .load_rules(bytes)
                .map_err(|e| format!("it does not load as a rule set: {e}"))?;
            release
                .describes_rules(&set.manifest_json())
                .map_err(|e| format!("its release does not describe it: {e}"))?;
            Deployable::Rules(set)
        }
    };
    Ok(AdmittedDeployable {
        component,
        release,
        publisher: key.key_id_hex(),
        key,
    })
}

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
