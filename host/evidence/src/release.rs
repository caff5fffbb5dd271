//! Signed component releases: a publisher's signature over a component (a runbook or an
//! L1 rule set) and its manifest, and the trust policy that says which publisher may ship
//! which components at which risk.
//!
//! A release is an in-toto Statement v1 in a DSSE envelope, signed with the publisher's
//! Ed25519 key — the same formats as an invocation record, so an auditor follows one chain
//! with one tool: the record's subject (the component's sha256) → the release that names
//! that sha256 → the publisher's key → the trust policy that admitted it.
//!
//! [`TrustPolicy::admit`] is the one check every loader makes (the control plane before it
//! stores a component, the agent again before it loads one): the signature is by a key the
//! policy lists, the bytes are the ones signed, and that key may publish that name at that
//! risk and version. Anything else is refused with a [`ReleaseError`] naming what failed.

use crate::dsse::Envelope;
use crate::keys::{SigningKey, VerifyingKey};
use crate::record::{PAYLOAD_TYPE, STATEMENT_TYPE, Subject};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// `predicateType` of a runwarden component release.
pub const RELEASE_PREDICATE_TYPE: &str = "https://runwarden.dev/attestation/release/v1";

/// The largest release statement read (a manifest with its params schema fits many times).
const MAX_RELEASE_BYTES: usize = 1 << 20;

/// What a component is.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ComponentKind {
    /// A remediation runbook.
    Runbook,
    /// A compiled L1 rule set.
    Rules,
}

impl ComponentKind {
    /// As written in a release.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentKind::Runbook => "runbook",
            ComponentKind::Rules => "rules",
        }
    }
}

/// A risk level, as manifests and trust policies name it: `low` < `medium` < `high`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum RiskLevel {
    /// Reads, or changes nothing that matters.
    Low,
    /// Changes state that can be put back.
    Medium,
    /// Changes that are hard to undo.
    High,
}

impl RiskLevel {
    /// As written.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Low => "low",
            RiskLevel::Medium => "medium",
            RiskLevel::High => "high",
        }
    }
}

/// What a publisher signs about one component.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// Runbook or rule set.
    pub kind: ComponentKind,
    /// Its name (the manifest's).
    pub name: String,
    /// Its version (the manifest's).
    pub version: String,
    /// SHA-256 (hex) of the component's bytes: the statement's subject.
    pub sha256: String,
    /// Its effective risk level (the manifest's declared risk, raised to what its
    /// capabilities imply): what a trust policy admits or not.
    pub risk: RiskLevel,
    /// Its manifest as the component declares it (summary, params schema, capabilities,
    /// platforms): signed, so a loader can check the component says the same.
    pub manifest: serde_json::Value,
    /// What it was built from, when the build says (source digest, toolchain), so that an
    /// auditor can build it again and compare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built_from: Option<serde_json::Value>,
    /// When it was signed, RFC 3339 UTC.
    pub signed_at: String,
}

/// The statement a release envelope carries.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseStatement {
    #[serde(rename = "_type")]
    statement_type: String,
    subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    predicate: Release,
}

/// Why a release was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The release file is not a signed release statement.
    #[error("not a runwarden release: {0}")]
    Malformed(String),
    /// No signature by a key the policy lists (or a signature that does not verify).
    #[error("not signed by a trusted publisher: {0}")]
    Untrusted(String),
    /// The bytes are not the ones signed.
    #[error(
        "the component's SHA-256 is {actual}, but the release signs {signed}: it was altered, or it is another component"
    )]
    Altered {
        /// What the release signs.
        signed: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// Signed by a trusted key that may not publish this.
    #[error("{0}")]
    NotAllowed(String),
}

/// The SHA-256 (hex) of a component's bytes.
pub fn component_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Release {
    /// The release a publisher signs for a runbook whose manifest (as the component
    /// declares it, JSON) is `manifest` and whose bytes hash to `sha256`: its name,
    /// version and risk from the manifest, signed now.
    pub fn of_runbook(manifest: serde_json::Value, sha256: &str) -> Release {
        let text = |k: &str| manifest[k].as_str().unwrap_or_default().to_string();
        let risk = match manifest["risk"].as_str() {
            Some("high") => RiskLevel::High,
            Some("medium") => RiskLevel::Medium,
            _ => RiskLevel::Low,
        };
        Release {
            kind: ComponentKind::Runbook,
            name: text("name"),
            version: text("version"),
            sha256: sha256.to_string(),
            risk,
            manifest,
            built_from: None,
            signed_at: crate::now_rfc3339(),
        }
    }

    /// The release of the L1 rule set at `sha256` that its publisher names `name`,
    /// version `version`; `rules` is what the rule component lists (its rules' ids,
    /// summaries and the runbooks each may choose, JSON). A rule set touches nothing by
    /// itself (the rule engine gets no host capability; the runbooks it chooses are
    /// admitted on their own), so its risk is `low`.
    pub fn of_rules(name: &str, version: &str, sha256: &str, rules: serde_json::Value) -> Release {
        Release {
            kind: ComponentKind::Rules,
            name: name.to_string(),
            version: version.to_string(),
            sha256: sha256.to_string(),
            risk: RiskLevel::Low,
            manifest: rules,
            built_from: None,
            signed_at: crate::now_rfc3339(),
        }
    }

    /// Whether this release tells the truth about the rule set whose rule component
    /// lists `rules` ([`Release::of_rules`]): a rule set, at low risk, listing the very
    /// rules the component holds.
    pub fn describes_rules(&self, rules: &serde_json::Value) -> Result<(), String> {
        if self.kind != ComponentKind::Rules {
            return Err(format!(
                "its release says it is a {}, and the component is a rule set",
                self.kind.as_str()
            ));
        }
        if self.risk != RiskLevel::Low {
            return Err(format!(
                "its release says {} risk; a rule set is low risk",
                self.risk.as_str()
            ));
        }
        if *rules != self.manifest {
            return Err(
                "its release lists other rules than the rule component holds (ids, summaries or runbooks differ)"
                    .into(),
            );
        }
        Ok(())
    }

    /// Whether this release tells the truth about the runbook whose manifest (as the
    /// component declares it, JSON) is `manifest`: a runbook, of the same name and
    /// version, at the same risk, with the very manifest it declares. A trust policy
    /// judges the release's words; this ties them to the bytes.
    pub fn describes(&self, manifest: &serde_json::Value) -> Result<(), String> {
        if self.kind != ComponentKind::Runbook {
            return Err(format!(
                "its release says it is a {}, and the component is a runbook",
                self.kind.as_str()
            ));
        }
        let text = |k: &str| manifest[k].as_str().unwrap_or_default();
        if self.name != text("name") || self.version != text("version") {
            return Err(format!(
                "its release names {} {}, but the component is {} {}",
                crate::escape_control(&self.name),
                crate::escape_control(&self.version),
                crate::escape_control(text("name")),
                crate::escape_control(text("version"))
            ));
        }
        if text("risk") != self.risk.as_str() {
            return Err(format!(
                "its release says {} risk, but the component is {} risk",
                self.risk.as_str(),
                crate::escape_control(text("risk"))
            ));
        }
        if *manifest != self.manifest {
            return Err(
                "its release signs another manifest than the component declares (summary, params schema, capabilities or platforms differ)"
                    .into(),
            );
        }
        Ok(())
    }

    /// Sign it with the publisher's key.
    pub fn sign(&self, key: &SigningKey) -> Envelope {
        let statement = ReleaseStatement {
            statement_type: STATEMENT_TYPE.into(),
            subject: vec![Subject {
                name: self.name.clone(),
                digest: BTreeMap::from([("sha256".to_string(), self.sha256.clone())]),
            }],
            predicate_type: RELEASE_PREDICATE_TYPE.into(),
            predicate: self.clone(),
        };
        let payload = serde_json::to_vec(&statement).expect("a release serializes");
        Envelope::sign(PAYLOAD_TYPE, &payload, key)
    }

    /// The release an envelope (JSON) carries, once its signature is checked against
    /// `trusted` and `component` is shown to be the bytes it signs. Returns the release
    /// and the publisher's key.
    pub fn verify(
        envelope: &str,
        component: &[u8],
        trusted: &[VerifyingKey],
    ) -> Result<(Release, VerifyingKey), ReleaseError> {
        if envelope.len() > MAX_RELEASE_BYTES {
            return Err(ReleaseError::Malformed(format!(
                "{} bytes, more than a release ever needs ({MAX_RELEASE_BYTES})",
                envelope.len()
            )));
        }
        let env = Envelope::from_json(envelope)
            .map_err(|e| ReleaseError::Malformed(format!("not a DSSE envelope: {e}")))?;
        if env.payload_type != PAYLOAD_TYPE {
            return Err(ReleaseError::Malformed(format!(
                "payload type {:?}, expected {PAYLOAD_TYPE}",
                crate::escape_control(&env.payload_type)
            )));
        }
        let publisher = env
            .verify(trusted)
            .map_err(|e| ReleaseError::Untrusted(e.to_string()))?
            .clone();
        let payload = env
            .payload()
            .map_err(|e| ReleaseError::Malformed(e.to_string()))?;
        let s: ReleaseStatement = serde_json::from_slice(&payload)
            .map_err(|e| ReleaseError::Malformed(format!("its statement: {e}")))?;
        if s.statement_type != STATEMENT_TYPE || s.predicate_type != RELEASE_PREDICATE_TYPE {
            return Err(ReleaseError::Malformed(format!(
                "statement type {:?} / predicate type {:?}",
                crate::escape_control(&s.statement_type),
                crate::escape_control(&s.predicate_type)
            )));
        }
        let r = s.predicate;
        let names_it = s.subject.len() == 1
            && s.subject[0].name == r.name
            && s.subject[0].digest.get("sha256") == Some(&r.sha256)
            && s.subject[0].digest.len() == 1;
        if !names_it {
            return Err(ReleaseError::Malformed(
                "its subject is not the one component its predicate describes".into(),
            ));
        }
        let actual = component_sha256(component);
        if actual != r.sha256 {
            return Err(ReleaseError::Altered {
                signed: r.sha256,
                actual,
            });
        }
        Ok((r, publisher))
    }
}

/// Which publishers may ship which components: a tenant's at the control plane, pinned
/// again in each agent's policy. Deny by default: an empty policy admits nothing.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrustPolicy {
    /// The trusted publishers.
    #[serde(default)]
    pub publishers: Vec<TrustedPublisher>,
    /// Per component name, the lowest version any publisher may ship (an older one is a
    /// downgrade, refused).
    #[serde(default)]
    pub minimum_versions: BTreeMap<String, String>,
}

/// One trusted publisher.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrustedPublisher {
    /// Its public key: the text of its `.pub` file.
    pub key: String,
    /// The component names it may publish: names, or globs where `*` stands for any run
    /// of characters (`restart-*`, `*`).
    pub components: Vec<String>,
    /// The highest risk it may publish at.
    pub max_risk: RiskLevel,
    /// Whether it may publish L1 rule sets (which decide what runs), not only runbooks.
    #[serde(default)]
    pub rules: bool,
}

impl TrustPolicy {
    /// The publishers' keys; an error names a key that does not parse.
    pub fn keys(&self) -> Result<Vec<VerifyingKey>, ReleaseError> {
        self.publishers
            .iter()
            .map(|p| {
                VerifyingKey::from_text(p.key.trim()).map_err(|e| {
                    ReleaseError::Malformed(format!("the trust policy's publisher key: {e}"))
                })
            })
            .collect()
    }

    /// Admit a component: its release (`envelope`, JSON) is signed by a publisher this
    /// policy lists, `component` is the bytes it signs, and that publisher may ship it —
    /// its kind, its name, its risk, its version. Returns the release and the
    /// publisher's key.
    pub fn admit(
        &self,
        envelope: &str,
        component: &[u8],
    ) -> Result<(Release, VerifyingKey), ReleaseError> {
        let keys = self.keys()?;
        if keys.is_empty() {
            return Err(ReleaseError::Untrusted(
                "the trust policy lists no publisher: nothing can be deployed until one is added"
                    .into(),
            ));
        }
        let (release, key) = Release::verify(envelope, component, &keys)?;
        let theirs: Vec<&TrustedPublisher> = self
            .publishers
            .iter()
            .zip(&keys)
            .filter(|(_, k)| k.to_text() == key.to_text())
            .map(|(p, _)| p)
            .collect();
        let who = key.label();
        // One entry must allow it whole (name, kind and risk): entries never add up.
        let named: Vec<&&TrustedPublisher> = theirs
            .iter()
            .filter(|p| p.components.iter().any(|g| glob_match(g, &release.name)))
            .collect();
        if named.is_empty() {
            return Err(ReleaseError::NotAllowed(format!(
                "publisher {who} may not publish {:?}: the trust policy lists it for {}",
                crate::escape_control(&release.name),
                theirs
                    .iter()
                    .flat_map(|p| p.components.iter())
                    .map(|g| format!("{:?}", crate::escape_control(g)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let of_kind: Vec<&&&TrustedPublisher> = named
            .iter()
            .filter(|p| release.kind == ComponentKind::Runbook || p.rules)
            .collect();
        if of_kind.is_empty() {
            return Err(ReleaseError::NotAllowed(format!(
                "publisher {who} may not publish L1 rule sets named {:?} (set rules = true on its entry for that name in the trust policy)",
                crate::escape_control(&release.name)
            )));
        }
        let max = of_kind.iter().map(|p| p.max_risk).max().expect("not empty");
        if release.risk > max {
            return Err(ReleaseError::NotAllowed(format!(
                "{} is {} risk; publisher {who} may publish it at {} risk at most",
                crate::escape_control(&release.name),
                release.risk.as_str(),
                max.as_str()
            )));
        }
        if let Some(min) = self.minimum_versions.get(&release.name)
            && compare_versions(&release.version, min) == std::cmp::Ordering::Less
        {
            return Err(ReleaseError::NotAllowed(format!(
                "{} {} is older than {min}, the lowest version the trust policy allows: a downgrade",
                crate::escape_control(&release.name),
                crate::escape_control(&release.version)
            )));
        }
        Ok((release, key))
    }
}

/// Whether `name` matches `glob`, where `*` stands for any run of characters (none
/// included) and everything else for itself.
pub fn glob_match(glob: &str, name: &str) -> bool {
    let parts: Vec<&str> = glob.split('*').collect();
    if parts.len() == 1 {
        return glob == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if name.len() < first.len() + last.len() || !name.starts_with(first) || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Versions compared as semantic versions: the release numbers part by part (a missing
/// part is 0: `1.2` = `1.2.0`; `1.10.0` > `1.9.2`), then a pre-release (after the first
/// `-`) before the release itself (`2.0.0-rc.1` < `2.0.0`), its identifiers compared
/// numbers as numbers, words as text, a number before a word; build metadata (after `+`)
/// is ignored. A part that is not a number is compared as text.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    fn parts(v: &str) -> (Vec<&str>, Option<Vec<&str>>) {
        let v = v.split('+').next().unwrap_or_default();
        let (core, pre) = match v.split_once('-') {
            Some((c, p)) => (c, Some(p.split('.').collect())),
            None => (v, None),
        };
        (core.split('.').collect(), pre)
    }
    fn ident(x: &str, y: &str) -> Ordering {
        match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(p), Ok(q)) => p.cmp(&q),
            (Ok(_), Err(_)) => Ordering::Less,
            (Err(_), Ok(_)) => Ordering::Greater,
            (Err(_), Err(_)) => x.cmp(y),
        }
    }
    let ((ca, pa), (cb, pb)) = (parts(a), parts(b));
    for i in 0..ca.len().max(cb.len()) {
        let o = ident(
            ca.get(i).copied().unwrap_or("0"),
            cb.get(i).copied().unwrap_or("0"),
        );
        if o != Ordering::Equal {
            return o;
        }
    }
    match (pa, pb) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => {
            for i in 0..x.len().max(y.len()) {
                let o = match (x.get(i), y.get(i)) {
                    (None, None) => Ordering::Equal,
                    (None, Some(_)) => Ordering::Less,
                    (Some(_), None) => Ordering::Greater,
                    (Some(p), Some(q)) => ident(p, q),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering::*;

    #[test]
    fn globs_match_whole_names() {
        for (g, n, m) in [
            ("restart-service", "restart-service", true),
            ("restart-service", "restart-services", false),
            ("restart-*", "restart-service", true),
            ("restart-*", "restart-", true),
            ("restart-*", "rotate-logs", false),
            ("*", "anything", true),
            ("*-logs", "rotate-logs", true),
            ("r*e*s", "rotate-logs", true),
            ("r*x*s", "rotate-logs", false),
            ("a*a", "a", false),
        ] {
            assert_eq!(glob_match(g, n), m, "{g} ~ {n}");
        }
    }

    #[test]
    fn versions_compare_by_their_numbers() {
        assert_eq!(compare_versions("1.10.0", "1.9.2"), Greater);
        assert_eq!(compare_versions("0.1.0", "0.1.0"), Equal);
        assert_eq!(compare_versions("0.1", "0.1.0"), Equal);
        assert_eq!(compare_versions("2.0.0-rc1", "2.0.0"), Less);
        assert_eq!(compare_versions("1.2.0-1", "1.2.0"), Less);
        assert_eq!(compare_versions("2.0.0-rc.2", "2.0.0-rc.1"), Greater);
        assert_eq!(compare_versions("2.0.0-rc.1", "2.0.0-rc.1.1"), Less);
        assert_eq!(compare_versions("2.0.0-1", "2.0.0-alpha"), Less);
        assert_eq!(compare_versions("1.0.0+build.5", "1.0.0"), Equal);
        assert_eq!(compare_versions("1.0.0", "1.0.1"), Less);
    }
}
