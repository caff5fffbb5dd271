//! The component registry (issue #15): each tenant's trust policy, and the components its
//! publishers have published, kept by SHA-256 in the control plane's store.
//!
//! The store, not the NATS Object Store: the embedded default (`runwarden up`) has no NATS,
//! and two servers on one PostgreSQL see one registry. A publication is checked against
//! the tenant's trust policy before anything is stored, and every publication, refusal
//! and policy change is a record in the control plane's log.

use super::{Caller, ControlError, Controller, Result, now_ms};
use crate::evidence::{self as evrec, Context as EvContext, Subject};
use crate::store::ReleaseRow;
use runwarden_evidence as ev;
use runwarden_proto::{ReleaseView, Scope};
use serde_json::json;

/// The largest component published (the runtime's own limit on a component is the same).
pub const MAX_COMPONENT_BYTES: usize = 32 << 20;

impl Controller {
    /// Set `caller`'s tenant's trust policy (admin): which publishers may ship which
    /// components. Recorded in the control plane's log. Returns the policy as stored.
    pub async fn set_trust_policy(
        &self,
        caller: &Caller,
        policy: ev::TrustPolicy,
    ) -> Result<ev::TrustPolicy> {
        if caller.scope != Scope::Admin {
            return Err(ControlError::Conflict(
                "a trust policy is set with an admin token".into(),
            ));
        }
        let keys = policy
            .keys()
            .map_err(|e| ControlError::BadRequest(e.to_string()))?;
        for p in &policy.publishers {
            if p.components.is_empty() {
                return Err(ControlError::BadRequest(format!(
                    "publisher {} has no components: list the names or globs it may publish",
                    ev::escape_control(&p.key)
                )));
            }
        }
        let text = serde_json::to_string(&policy).expect("a policy serializes");
        let now = now_ms();
        let by = format!("token {}", caller.token_id);
        self.store
            .put_trust_policy(&caller.tenant, &text, &by, now)
            .await?;
        let summary = format!(
            "trust policy set: {} publisher(s) ({})",
            keys.len(),
            keys.iter()
                .map(|k| k.label())
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.record_registry(
            caller,
            ("trust-policy", "", &hex_sha256(text.as_bytes())),
            "trust-set",
            &summary,
            json!({"policy": policy}),
        )
        .await?;
        Ok(policy)
    }

    /// `caller`'s tenant's trust policy, if it has one.
    pub async fn trust_policy(&self, caller: &Caller) -> Result<Option<ev::TrustPolicy>> {
        self.store
            .trust_policy(&caller.tenant)
            .await?
            .map(|t| {
                serde_json::from_str(&t).map_err(|e| {
                    ControlError::Setup(format!("the stored trust policy does not parse: {e}"))
                })
            })
            .transpose()
    }

    /// Publish a component into the registry for `caller`'s tenant (admin): its release
    /// must be admitted by the tenant's trust policy (a trusted publisher's signature over
    /// these bytes, within what that publisher may ship). A refusal is recorded, and
    /// nothing is stored; publishing the same release again changes nothing.
    pub async fn publish(
        &self,
        caller: &Caller,
        component: &[u8],
        release: &str,
    ) -> Result<ReleaseView> {
        if caller.scope != Scope::Admin {
            return Err(ControlError::Conflict(
                "components are published with an admin token".into(),
            ));
        }
        if component.len() > MAX_COMPONENT_BYTES {
            return Err(ControlError::BadRequest(format!(
                "a component of {} bytes: at most {MAX_COMPONENT_BYTES}",
                component.len()
            )));
        }
        let sha256 = ev::component_sha256(component);
        let Some(policy) = self.trust_policy(caller).await? else {
            let why = format!(
                "tenant {} has no trust policy: nothing can be published until an admin sets one (runwarden trust set)",
                caller.tenant
            );
            self.record_registry(caller, ("?", "", &sha256), "refused", &why, json!({}))
                .await?;
            return Err(ControlError::Conflict(why));
        };
        let (r, publisher) = match policy.admit(release, component) {
            Ok(admitted) => admitted,
            Err(e) => {
                let why = format!("publication refused: {e}");
                self.record_registry(caller, ("?", "", &sha256), "refused", &why, json!({}))
                    .await?;
                return Err(ControlError::Conflict(why));
            }
        };
        let row = ReleaseRow {
            tenant: caller.tenant.clone(),
            sha256: r.sha256.clone(),
            kind: r.kind.as_str().into(),
            name: r.name.clone(),
            version: r.version.clone(),
            risk: r.risk.as_str().into(),
            publisher: publisher.to_text(),
            envelope: release.to_string(),
            published_at_ms: now_ms(),
            published_by: format!("token {}", caller.token_id),
        };
        let new = self.store.put_release(component, &row).await?;
        if new {
            let summary = format!(
                "published {} {} ({}, {} risk), signed by publisher {}",
                r.name,
                r.version,
                r.kind.as_str(),
                r.risk.as_str(),
                publisher.label()
            );
            self.record_registry(
                caller,
                (&r.name, &r.version, &r.sha256),
                "published",
                &summary,
                json!({"publisher": publisher.to_text(), "kind": r.kind.as_str(), "risk": r.risk.as_str()}),
            )
            .await?;
        }
        Ok(view(&row, new))
    }

    /// `caller`'s tenant's releases, newest first (of `name` only, when given).
    pub async fn releases(&self, caller: &Caller, name: Option<&str>) -> Result<Vec<ReleaseView>> {
        Ok(self
            .store
            .releases(&caller.tenant, name)
            .await?
            .iter()
            .map(|r| view(r, false))
            .collect())
    }

    /// Sign a registry decision into the control plane's log: its subject the component
    /// (name, version, sha256), its provenance the token that asked.
    async fn record_registry(
        &self,
        caller: &Caller,
        (name, version, sha256): (&str, &str, &str),
        status: &str,
        summary: &str,
        params: serde_json::Value,
    ) -> Result<u64> {
        let now = now_ms();
        let subject = format!("component:{name}");
        let statement = evrec::decision_statement(
            Subject {
                name: &subject,
                version,
                sha256,
            },
            &self.key,
            // The registry is the tenant's: its record names the tenant's first host.
            &self
                .hosts_of(&caller.tenant)
                .first()
                .map(|h| h.id().to_string())
                .unwrap_or_default(),
            EvContext {
                tenant: &caller.tenant,
                provenance: ev::Provenance::Manual {
                    operator: Some(format!("token {}", caller.token_id)),
                },
                incident_id: None,
                guardrails: None,
            },
            status,
            summary,
            params,
            now as u64,
        );
        let invocation = statement.predicate.invocation_id.clone();
        self.append(&statement, &invocation, &subject, status, now)
            .await
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    ev::component_sha256(bytes)
}

fn view(r: &ReleaseRow, new: bool) -> ReleaseView {
    ReleaseView {
        sha256: r.sha256.clone(),
        kind: r.kind.clone(),
        name: r.name.clone(),
        version: r.version.clone(),
        risk: r.risk.clone(),
        publisher: r.publisher.clone(),
        published_at: ev::rfc3339_ms(r.published_at_ms.max(0) as u64),
        published_by: r.published_by.clone(),
        new,
    }
}
