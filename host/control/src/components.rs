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
use runwarden_agent::components::{Deployable, admit_deployable};
use runwarden_evidence as ev;
use runwarden_proto::{ReleaseView, Scope};
use runwarden_runtime::{Loaded, RuleSet};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

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
            ("trust-policy", "", &ev::component_sha256(text.as_bytes())),
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
        // The policy's check, then the component must be what the release says (a
        // runbook with that manifest, or a rule set listing those rules): it is loaded to see.
        let (rt, bytes, envelope) = (
            self.runtime.clone(),
            component.to_vec(),
            release.to_string(),
        );
        let admitted = tokio::task::spawn_blocking(move || {
            admit_deployable(&rt, &bytes, &envelope, Some(&policy))
        })
        .await
        .map_err(|e| ControlError::Setup(format!("loading a published component: {e}")))?;
        let (r, publisher) = match admitted {
            Ok(a) => (a.release, a.key),
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
        // Published before (by this release or another of the same bytes): what is stored
        // is what is answered.
        let row = match new {
            true => row,
            false => self
                .store
                .releases(&caller.tenant, Some(&r.name))
                .await?
                .into_iter()
                .find(|x| x.sha256 == r.sha256)
                .unwrap_or(row),
        };
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
    pub(crate) async fn record_registry(
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

impl Controller {
    /// The runbook `name` as host `host` runs it: what a deployment put there, else the
    /// catalog's.
    pub(crate) fn runbook_on(&self, host: &str, name: &str) -> Option<Arc<Loaded>> {
        self.host_runbooks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .and_then(|m| m.get(name).cloned())
            .or_else(|| self.runbooks.get(name).cloned())
    }

    /// Host `host`'s whole catalog: the catalog with its deployments in place.
    pub(crate) fn catalog_of(&self, host: &str) -> BTreeMap<String, Arc<Loaded>> {
        let mut out = self.runbooks.clone();
        if let Some(m) = self
            .host_runbooks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
        {
            out.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        out
    }

    /// SHA-256 of what host `host` runs under `name` by deployment as noted here (`None`:
    /// nothing noted; a deployed runbook that is the catalog's own build is not noted).
    pub(crate) fn deployed_sha_on(&self, host: &str, name: &str) -> Option<String> {
        let runbook = self
            .host_runbooks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .and_then(|m| m.get(name).map(|l| l.sha256().to_string()));
        runbook.or_else(|| {
            self.host_rule_sets
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(host)
                .and_then(|m| m.get(name).map(|r| r.sha256().to_string()))
        })
    }

    /// The rule sets deployed to host `host`, in name order.
    pub(crate) fn rule_sets_deployed_on(&self, host: &str) -> Vec<Arc<RuleSet>> {
        self.host_rule_sets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Note that host `host` runs `now` under `name` (a deployment: a runbook, or a rule
    /// set that decides its incidents first), or, with `None`, nothing deployed under it
    /// any more (its own runbook of that name again, if the catalog has one).
    pub fn set_host_component(&self, host: &str, name: &str, now: Option<Deployable>) {
        let rules = match &now {
            Some(Deployable::Rules(r)) => Some(r.clone()),
            _ => None,
        };
        {
            let mut all = self
                .host_rule_sets
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let of_host = all.entry(host.to_string()).or_default();
            match rules {
                Some(r) => of_host.insert(name.to_string(), r),
                None => of_host.remove(name),
            };
        }
        let runbook = match now {
            Some(Deployable::Runbook(l)) => Some(l),
            _ => None,
        };
        self.set_host_runbook(host, name, runbook);
    }

    /// Note that host `host` runs `now` under `name` (a deployment), or, with `None`, its
    /// own version again (the catalog's).
    pub fn set_host_runbook(&self, host: &str, name: &str, now: Option<Arc<Loaded>>) {
        let mut all = self
            .host_runbooks
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let of_host = all.entry(host.to_string()).or_default();
        match now {
            Some(l)
                if self
                    .runbooks
                    .get(name)
                    .is_none_or(|b| b.sha256() != l.sha256()) =>
            {
                of_host.insert(name.to_string(), l);
            }
            _ => {
                of_host.remove(name);
            }
        }
    }
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
