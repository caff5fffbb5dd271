//! The hosts a control plane serves, each owned by exactly one tenant.
//!
//! `runwarden up` serves one host (its own); `runwarden server` serves every host an agent
//! enrolled. A host's tenant never changes once it is registered: an enrollment of the
//! same host id for another tenant is refused.

use runwarden_runtime::Policy;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// A host: the tenant that owns it, its policy (id, grants, limits) and inventory labels.
pub struct HostConfig {
    /// The tenant the host belongs to (`runwarden up`: `local`, or `tenant` in
    /// runwarden.toml; a fleet host: the tenant it enrolled into). Only its tokens see or
    /// act on the host: for any other tenant, the host, its incidents, catalog, rules and
    /// records are answered like a host that does not exist.
    pub tenant: String,
    /// The host's policy (the agent's copy is authoritative when it runs anything; the
    /// control plane's is for the catalog and prechecks).
    pub policy: Arc<Policy>,
    /// Inventory labels rules can match (`role = "db"`).
    pub labels: BTreeMap<String, String>,
    /// What the host is and has (platform, OS, init, package manager, services): rules
    /// see it as labels, planners in their prompt, and runbooks that declare platforms
    /// are offered only on theirs.
    pub inventory: crate::Inventory,
}

impl HostConfig {
    /// The host's id.
    pub fn id(&self) -> &str {
        &self.policy.host_id
    }
}

/// The hosts served, by id.
#[derive(Default)]
pub(crate) struct Registry {
    hosts: RwLock<BTreeMap<String, Arc<HostConfig>>>,
    /// Hosts no new jobs go to.
    drained: RwLock<std::collections::BTreeSet<String>>,
    /// Hosts whose agents enrolled (their heartbeats are in the store), with when they
    /// enrolled: a host enrolled again (through any server) is read again.
    enrolled: RwLock<BTreeMap<String, i64>>,
}

impl Registry {
    /// Add `host` (its inventory becomes labels; configured labels win), or replace the
    /// entry of the same id and tenant. Refuses to move a host to another tenant.
    pub(crate) fn insert(&self, mut host: HostConfig) -> Result<Arc<HostConfig>, String> {
        for (k, v) in host.inventory.labels() {
            host.labels.entry(k.to_string()).or_insert(v);
        }
        let mut hosts = self.hosts.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = hosts.get(host.id())
            && old.tenant != host.tenant
        {
            return Err(format!(
                "host {} belongs to tenant {}: a host belongs to one tenant (give it another id)",
                host.id(),
                old.tenant
            ));
        }
        let host = Arc::new(host);
        hosts.insert(host.id().to_string(), host.clone());
        Ok(host)
    }

    /// The host `id`, whoever owns it.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<HostConfig>> {
        self.hosts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// The host `id` if `tenant` owns it.
    pub(crate) fn owned(&self, tenant: &str, id: &str) -> Option<Arc<HostConfig>> {
        self.get(id).filter(|h| h.tenant == tenant)
    }

    /// Every host, in id order.
    pub(crate) fn all(&self) -> Vec<Arc<HostConfig>> {
        self.hosts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// `tenant`'s hosts, in id order.
    pub(crate) fn of_tenant(&self, tenant: &str) -> Vec<Arc<HostConfig>> {
        self.all()
            .into_iter()
            .filter(|h| h.tenant == tenant)
            .collect()
    }

    /// Whether `tenant` owns any host.
    pub(crate) fn has_tenant(&self, tenant: &str) -> bool {
        self.hosts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|h| h.tenant == tenant)
    }

    /// Mark `id` drained (no new jobs go to it) or not.
    pub(crate) fn set_drained(&self, id: &str, drained: bool) {
        let mut set = self.drained.write().unwrap_or_else(|e| e.into_inner());
        if drained {
            set.insert(id.to_string());
        } else {
            set.remove(id);
        }
    }

    /// Whether `id` is drained.
    pub(crate) fn is_drained(&self, id: &str) -> bool {
        self.drained
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    /// Note that `id`'s agent enrolled at `at_ms`.
    pub(crate) fn set_enrolled(&self, id: &str, at_ms: i64) {
        self.enrolled
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), at_ms);
    }

    /// Whether `id`'s agent enrolled (`runwarden up`'s own host did not).
    pub(crate) fn is_enrolled(&self, id: &str) -> bool {
        self.enrolled
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
    }

    /// When `id`'s agent enrolled, as this registry last read it.
    pub(crate) fn enrolled_at(&self, id: &str) -> Option<i64> {
        self.enrolled
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
    }
}
