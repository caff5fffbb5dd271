//! Deploying published components to a tenant's hosts, in stages, and rolling back.
//!
//! A deployment names a release the tenant published (checked again against the tenant's
//! trust policy) and chooses hosts. Each chosen host gets a row of what it should run
//! under that name (`host_components`); [`Controller::reconcile_deployments`], run every
//! few seconds, sends each pending row to its host's agent as a signed [`DeployJob`] —
//! when the host is heard from, so an agent offline during a deployment converges when it
//! comes back — and notes what the agent answered. The agent checks the release against
//! its own trust policy before anything loads: a control plane cannot push what the
//! host does not trust.
//!
//! With canaries, the first hosts (by id) get it first; once each answered and the soak
//! time passed, the share of their runs of it that failed decides: above the threshold
//! the rollout halts and the canaries are rolled back, else the rest follow. A rollback
//! sends each chosen host what it ran before (or drops the deployed version, so that the
//! host's own runs again). The deployment's start, halt, promotion and end are records in
//! the control plane's log; each host's swap or refusal is a record in the host's log.

use super::{Caller, ControlError, Controller, Result, now_ms};
use crate::store::{DeploymentRow, HostComponentRow};
use base64::Engine;
use runwarden_agent::components::Deployable;
use runwarden_evidence as ev;
use runwarden_proto::bus::{
    DEPLOY_PAYLOAD_TYPE, DeployAction, DeployJob, MAX_DEPLOYED_COMPONENT_BYTES,
    MAX_INLINE_COMPONENT_BYTES,
};
use runwarden_proto::{
    DeployRequest, DeploymentView, HostComponentView, HostDeploymentView, Scope,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// How long an agent has to take a deployment job before it is sent again.
const DEPLOY_TTL_MS: i64 = 120_000;
/// How long a process's claim on a deployment lasts without being renewed (the
/// reconciler renews it every round, every 2 s).
const CLAIM_MS: i64 = 30_000;
/// How long after a step a host's word on what it runs is not taken against it.
const SETTLE_MS: i64 = 20_000;
/// How long canaries are watched unless told.
pub const DEFAULT_SOAK_SECS: u64 = 300;
/// The canaries' failure rate above which a rollout halts, unless told.
pub const DEFAULT_MAX_FAILURE_RATE: f64 = 0.2;

/// Whether host `id` with `labels` is chosen by `selector` (see [`DeployRequest::hosts`]).
fn chosen(selector: &str, id: &str, labels: &BTreeMap<String, String>) -> bool {
    let parts: Vec<&str> = selector
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if parts.contains(&"*") {
        return true;
    }
    let (wanted, ids): (Vec<&str>, Vec<&str>) = parts.iter().partition(|p| p.contains('='));
    if ids.contains(&id) {
        return true;
    }
    !wanted.is_empty()
        && wanted.iter().all(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or_default();
            labels.get(k.trim()).is_some_and(|have| have == v.trim())
        })
}

fn time(ms: i64) -> String {
    ev::rfc3339_ms(ms.max(0) as u64)
}

fn view(d: &DeploymentRow, hosts: &[HostComponentRow]) -> DeploymentView {
    DeploymentView {
        id: d.id.clone(),
        name: d.name.clone(),
        version: if d.action == "rollback" {
            "rollback".into()
        } else {
            d.version.clone()
        },
        action: d.action.clone(),
        selector: d.selector.clone(),
        canary_percent: d.canary_percent.clamp(0, 100) as u8,
        state: d.state.clone(),
        detail: d.detail.clone(),
        created_at: time(d.created_at_ms),
        created_by: d.created_by.clone(),
        hosts: hosts
            .iter()
            .map(|h| HostDeploymentView {
                host: h.host.clone(),
                state: h.state.clone(),
                detail: h.detail.clone(),
                version: h.version.clone(),
                sha256: h.sha256.clone(),
                canary: h.canary,
                updated_at: time(h.updated_at_ms),
            })
            .collect(),
    }
}

impl Controller {
    /// Deploy a published release to `caller`'s tenant's hosts, or roll them back
    /// (admin). The hosts get it from [`Controller::reconcile_deployments`]; the answer
    /// is the deployment as it starts.
    pub async fn deploy(&self, caller: &Caller, req: DeployRequest) -> Result<DeploymentView> {
        if caller.scope != Scope::Admin {
            return Err(ControlError::Conflict(
                "components are deployed with an admin token".into(),
            ));
        }
        // A component's name as its manifest has it (what a host accepts).
        if !runwarden_proto::is_component_name(&req.name) {
            return Err(ControlError::BadRequest(format!(
                "name {:?}: a component's name is 1 to 64 of a-z, 0-9 and -",
                ev::escape_control(&req.name)
            )));
        }
        if req.rollback && req.canary_percent.is_some_and(|p| p > 0) {
            return Err(ControlError::BadRequest(
                "a rollback goes to every chosen host at once: no canaries".into(),
            ));
        }
        if req.hosts.trim().is_empty() || req.hosts.len() > 1024 {
            return Err(ControlError::BadRequest(
                "choose hosts: `*`, host ids or key=value labels, comma separated".into(),
            ));
        }
        let canary = match req.canary_percent {
            None | Some(0) => 0,
            Some(p @ 1..=99) => p,
            Some(p) => {
                return Err(ControlError::BadRequest(format!(
                    "a canary share of {p}%: 1 to 99"
                )));
            }
        };
        let max_failure_rate = req.max_failure_rate.unwrap_or(DEFAULT_MAX_FAILURE_RATE);
        if !(0.0..=1.0).contains(&max_failure_rate) {
            return Err(ControlError::BadRequest(format!(
                "a maximum failure rate of {max_failure_rate}: 0 to 1"
            )));
        }
        let soak_secs = req.soak_secs.unwrap_or(DEFAULT_SOAK_SECS).min(7 * 86_400);
        let mut hosts: Vec<String> = self
            .hosts_of(&caller.tenant)
            .iter()
            .filter(|h| chosen(&req.hosts, h.id(), &h.labels))
            .map(|h| h.id().to_string())
            .collect();
        hosts.sort();
        if hosts.is_empty() {
            return Err(ControlError::NotFound(format!(
                "no host of tenant {} is chosen by {:?}: see `runwarden hosts list`",
                caller.tenant,
                ev::escape_control(&req.hosts)
            )));
        }
        let now = now_ms();
        let id = uuid::Uuid::now_v7().to_string();
        let held: BTreeMap<String, HostComponentRow> = self
            .store
            .host_components(Some(&caller.tenant), None)
            .await?
            .into_iter()
            .filter(|r| r.name == req.name)
            .map(|r| (r.host.clone(), r))
            .collect();
        let canaries = match canary {
            0 => 0,
            p => (hosts.len() * p as usize).div_ceil(100).max(1),
        };
        let (action, version, sha256) = match req.rollback {
            true => ("rollback", String::new(), String::new()),
            false => {
                let r = self
                    .deployable(&caller.tenant, &req.name, &req.version)
                    .await?;
                if r.kind == "rules" && canary > 0 {
                    return Err(ControlError::BadRequest(format!(
                        "{} {} is a rule set: canaries judge the runs of a runbook, and a rule set's decisions are not counted yet — deploy it to a few hosts by name first",
                        req.name, r.version
                    )));
                }
                ("deploy", r.version, r.sha256)
            }
        };
        let mut rows = Vec::new();
        for (i, host) in hosts.iter().enumerate() {
            let before = held.get(host);
            let (row_action, row_sha, row_version, state, detail) = if req.rollback {
                match before {
                    Some(b) if !b.running_sha256.is_empty() && b.previous_sha256.is_empty() => (
                        "remove",
                        String::new(),
                        String::new(),
                        "pending",
                        "to the host's own version".to_string(),
                    ),
                    Some(b) if !b.previous_sha256.is_empty() => (
                        "rollback",
                        b.previous_sha256.clone(),
                        b.previous_version.clone(),
                        "pending",
                        format!("back to {}", b.previous_version),
                    ),
                    _ => (
                        "rollback",
                        String::new(),
                        String::new(),
                        "refused",
                        "nothing was deployed here to roll back".to_string(),
                    ),
                }
            } else if i < canaries || canaries == 0 {
                (
                    "deploy",
                    sha256.clone(),
                    version.clone(),
                    "pending",
                    String::new(),
                )
            } else {
                (
                    "deploy",
                    sha256.clone(),
                    version.clone(),
                    "held",
                    "after the canaries".to_string(),
                )
            };
            rows.push(HostComponentRow {
                tenant: caller.tenant.clone(),
                host: host.clone(),
                name: req.name.clone(),
                deployment: id.clone(),
                action: row_action.into(),
                sha256: row_sha,
                version: row_version,
                canary: i < canaries,
                state: state.into(),
                detail,
                running_sha256: before.map(|b| b.running_sha256.clone()).unwrap_or_default(),
                running_version: before
                    .map(|b| b.running_version.clone())
                    .unwrap_or_default(),
                previous_sha256: before
                    .map(|b| b.previous_sha256.clone())
                    .unwrap_or_default(),
                previous_version: before
                    .map(|b| b.previous_version.clone())
                    .unwrap_or_default(),
                deployed_at_ms: before.map_or(0, |b| b.deployed_at_ms),
                updated_at_ms: now,
            });
        }
        let by = format!("token {}", caller.token_id);
        let d = DeploymentRow {
            id: id.clone(),
            tenant: caller.tenant.clone(),
            name: req.name.clone(),
            version: version.clone(),
            sha256: sha256.clone(),
            action: action.into(),
            selector: req.hosts.trim().to_string(),
            canary_percent: canary as i64,
            soak_ms: (soak_secs * 1000) as i64,
            max_failure_rate,
            state: if canaries > 0 { "canary" } else { "rolling" }.into(),
            detail: match canaries {
                0 => format!("to {} host(s)", hosts.len()),
                n => format!(
                    "to {n} canary host(s) of {}, watched {soak_secs} s; the rest follow while at most {:.0}% of their runs fail",
                    hosts.len(),
                    max_failure_rate * 100.0
                ),
            },
            created_at_ms: now,
            created_by: by,
            updated_at_ms: now,
        };
        self.store.create_deployment(&d, &rows).await?;
        let summary = format!(
            "{} {} {}: {}",
            action,
            req.name,
            if req.rollback { "" } else { &version },
            d.detail
        );
        self.record_registry(
            caller,
            (&req.name, &version, &sha256),
            if req.rollback { "rollback" } else { "deploy" },
            &summary,
            json!({"deployment": id, "hosts": hosts, "selector": d.selector,
                   "canary_percent": canary, "soak_secs": soak_secs,
                   "max_failure_rate": max_failure_rate}),
        )
        .await?;
        self.deployments_wake.notify_one();
        Ok(view(&d, &rows))
    }

    /// The tenant's release `name` `version`, checked again against its trust policy
    /// (which may have changed since it was published) and small enough for the bus.
    async fn deployable(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> Result<crate::store::ReleaseRow> {
        let r = self
            .store
            .releases(tenant, Some(name))
            .await?
            .into_iter()
            .find(|r| r.version == version)
            .ok_or_else(|| {
                ControlError::NotFound(format!(
                    "tenant {tenant} published no release {} {}: see `runwarden runbook published`",
                    ev::escape_control(name),
                    ev::escape_control(version)
                ))
            })?;
        if r.kind != "runbook" && r.kind != "rules" {
            return Err(ControlError::BadRequest(format!(
                "{name} {version} is a {}: runbooks and rule sets are deployed",
                ev::escape_control(&r.kind)
            )));
        }
        let bytes = self.component_bytes(tenant, &r.sha256).await?;
        if bytes.len() > MAX_DEPLOYED_COMPONENT_BYTES {
            return Err(ControlError::BadRequest(format!(
                "{name} {version} is {} bytes; a host takes components of at most {MAX_DEPLOYED_COMPONENT_BYTES} bytes",
                bytes.len()
            )));
        }
        let policy = self
            .store
            .trust_policy(tenant)
            .await?
            .and_then(|t| serde_json::from_str::<ev::TrustPolicy>(&t).ok())
            .unwrap_or_default();
        policy.admit(&r.envelope, &bytes).map_err(|e| {
            ControlError::Conflict(format!(
                "tenant {tenant}'s trust policy no longer admits {name} {version}: {e}"
            ))
        })?;
        Ok(r)
    }

    async fn component_bytes(&self, tenant: &str, sha256: &str) -> Result<Vec<u8>> {
        self.store.component(tenant, sha256).await?.ok_or_else(|| {
            ControlError::NotFound(format!("tenant {tenant} published no component {sha256}"))
        })
    }

    /// `caller`'s tenant's deployment `id`.
    pub async fn deployment(&self, caller: &Caller, id: &str) -> Result<DeploymentView> {
        let d = self
            .store
            .deployment(&caller.tenant, id)
            .await?
            .ok_or_else(|| {
                ControlError::NotFound(format!(
                    "no deployment {} for tenant {}: see GET /v1/deployments",
                    ev::escape_control(id),
                    caller.tenant
                ))
            })?;
        let hosts = self.store.host_components(None, Some(&d.id)).await?;
        Ok(view(&d, &hosts))
    }

    /// `caller`'s tenant's latest deployments (at most 100), newest first.
    pub async fn deployments(&self, caller: &Caller) -> Result<Vec<DeploymentView>> {
        let mut out = Vec::new();
        for d in self
            .store
            .deployments(Some(&caller.tenant), None, 100)
            .await?
        {
            let hosts = self.store.host_components(None, Some(&d.id)).await?;
            out.push(view(&d, &hosts));
        }
        Ok(out)
    }

    /// What `tenant`'s hosts run of deployed components, by host.
    pub(crate) async fn host_components_by_host(
        &self,
        tenant: &str,
    ) -> Result<BTreeMap<String, Vec<HostComponentView>>> {
        let mut out: BTreeMap<String, Vec<HostComponentView>> = BTreeMap::new();
        for r in self.store.host_components(Some(tenant), None).await? {
            let settled = matches!(r.state.as_str(), "deployed" | "refused" | "halted");
            out.entry(r.host.clone())
                .or_default()
                .push(HostComponentView {
                    name: r.name.clone(),
                    version: r.running_version.clone(),
                    sha256: r.running_sha256.clone(),
                    state: r.state.clone(),
                    wanted: match settled || r.version == r.running_version {
                        true => String::new(),
                        false => r.version.clone(),
                    },
                });
        }
        Ok(out)
    }

    /// Drive every deployment one step: put back at start what hosts run, send what is
    /// pending to hosts that are heard from, judge canaries whose soak time passed, and
    /// close rollouts every host answered. Call it every few seconds (`run_deployments`).
    pub async fn reconcile_deployments(self: &Arc<Self>) -> Result<()> {
        if !self
            .deployments_restored
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            self.restore_deployed().await?;
            self.deployments_restored
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        let now = now_ms();
        let rows = self.store.host_components(None, None).await?;
        self.follow_catalogs(&rows).await;
        // Only what this process holds the claim of (see `claim_deployment`).
        let mut active: std::collections::BTreeSet<String> = rows
            .iter()
            .filter(|r| r.state == "pending")
            .map(|r| r.deployment.clone())
            .collect();
        let judged = self.store.deployments(None, Some("canary"), 1000).await?;
        let rolling = self.store.deployments(None, Some("rolling"), 1000).await?;
        active.extend(judged.iter().chain(&rolling).map(|d| d.id.clone()));
        let mut mine = std::collections::HashSet::new();
        // Cut off from the agents, this process lets another drive (its claims lapse).
        if !self.dispatch.connected() {
            active.clear();
        }
        for id in active {
            if self
                .store
                .claim_deployment(&id, &self.instance, now, now + CLAIM_MS)
                .await?
            {
                mine.insert(id);
            }
        }
        for row in rows
            .iter()
            .filter(|r| r.state == "pending" && mine.contains(&r.deployment))
        {
            if self.hosts.owned(&row.tenant, &row.host).is_none()
                || self.host_silent(&row.host, now).await?
            {
                continue;
            }
            let key = (row.host.clone(), row.name.clone());
            if !self
                .deploying
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.clone())
            {
                continue;
            }
            let (me, row) = (self.clone(), row.clone());
            tokio::spawn(async move {
                let answered = match me.send_deployment(&row).await {
                    Ok(answered) => answered,
                    Err(e) => {
                        eprintln!(
                            "warning: deploying {} to host {}: {e}; tried again",
                            row.name, row.host
                        );
                        false
                    }
                };
                me.deploying
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                // An answer may end a rollout or a canary's watch: look at once (not
                // after a failed delivery: that waits for the next round).
                if answered {
                    me.deployments_wake.notify_one();
                }
            });
        }
        for d in judged.iter().filter(|d| mine.contains(&d.id)) {
            self.judge_canaries(d, &rows, now).await?;
        }
        for d in rolling.iter().filter(|d| mine.contains(&d.id)) {
            let mine: Vec<&HostComponentRow> =
                rows.iter().filter(|r| r.deployment == d.id).collect();
            if mine
                .iter()
                .any(|r| r.state == "pending" || r.state == "held")
            {
                continue;
            }
            let refused = mine.iter().filter(|r| r.state == "refused").count();
            let detail = format!(
                "{} host(s) answered: {} took it, {refused} refused",
                mine.len(),
                mine.len() - refused
            );
            self.record_deployment_step(d, "deploy-done", &detail)
                .await?;
            self.store
                .set_deployment_state(&d.id, "done", &detail, now)
                .await?;
        }
        Ok(())
    }

    /// Keep the catalogs here in step with what the store says each host runs (another
    /// control plane on the same database may have deployed it, or heard the host say so).
    async fn follow_catalogs(&self, rows: &[HostComponentRow]) {
        for r in rows {
            let noted = self.deployed_sha_on(&r.host, &r.name);
            let in_step = match &noted {
                Some(sha) => *sha == r.running_sha256,
                None => {
                    r.running_sha256.is_empty()
                        || self
                            .runbooks
                            .get(&r.name)
                            .is_some_and(|l| l.sha256() == r.running_sha256)
                }
            };
            let key = (r.host.clone(), r.name.clone(), r.running_sha256.clone());
            let failed = self
                .unloadable
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&key);
            if in_step || failed {
                continue;
            }
            if r.running_sha256.is_empty() {
                self.set_host_component(&r.host, &r.name, None);
                continue;
            }
            match self
                .load_component(&r.tenant, &r.name, &r.running_sha256)
                .await
            {
                Ok(c) => self.set_host_component(&r.host, &r.name, Some(c)),
                Err(e) => {
                    eprintln!(
                        "warning: host {} runs {} {}, which does not load here: {e}",
                        r.host, r.name, r.running_version
                    );
                    self.unloadable
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key);
                }
            }
        }
    }

    /// What host `host` of `tenant` says it runs by deployment (its heartbeat, read at
    /// `at_ms` by the host's clock: name → (sha256, version)). Where that differs from
    /// what was noted — it refused a kept component at its last start (the trust policy
    /// changed, a file was altered), or lost one — the host's word is noted, and the
    /// catalog here follows it, so that no job names a component the host does not run.
    /// The host is believed only about what a deployment gave it: nothing, or the
    /// release its row names now, runs or ran before; and not about a row that changed in
    /// the 20 s before the heartbeat was read or received (it may predate that step).
    pub async fn note_host_runs(
        &self,
        tenant: &str,
        host: &str,
        runs: &BTreeMap<String, (String, String)>,
        at_ms: i64,
    ) -> Result<()> {
        let now = now_ms();
        let rows = self.store.host_components(Some(tenant), None).await?;
        for r in rows.iter().filter(|r| r.host == host) {
            let (sha, _) = runs.get(&r.name).cloned().unwrap_or_default();
            let settled =
                now - r.updated_at_ms >= SETTLE_MS && at_ms - r.updated_at_ms >= SETTLE_MS;
            if sha == r.running_sha256 || !settled {
                continue;
            }
            let version = if sha.is_empty() {
                String::new()
            } else if sha == r.sha256 {
                r.version.clone()
            } else if sha == r.previous_sha256 {
                r.previous_version.clone()
            } else {
                eprintln!(
                    "warning: host {host} says it runs {} {sha}, which no deployment gave it: not believed",
                    r.name
                );
                continue;
            };
            let (state, detail) = match (sha.is_empty(), r.state.as_str()) {
                (true, "deployed") => (
                    "refused",
                    format!(
                        "the host no longer runs {} {} (it refused it at its last start: see the host's log)",
                        r.name, r.running_version
                    ),
                ),
                (true, other) => (other, format!("the host runs no deployed {}", r.name)),
                (false, other) => (
                    if sha == r.sha256 { "deployed" } else { other },
                    format!("the host says it runs {} {version}", r.name),
                ),
            };
            let now_running = match sha.is_empty() {
                true => None,
                false => match self.load_component(tenant, &r.name, &sha).await {
                    Ok(c) => Some(c),
                    Err(e) => {
                        eprintln!("warning: host {host} runs {} {sha}: {e}", r.name);
                        continue;
                    }
                },
            };
            self.store
                .host_component_runs(
                    host,
                    &r.name,
                    &r.deployment,
                    &sha,
                    &version,
                    state,
                    &detail,
                    now,
                )
                .await?;
            eprintln!("warning: host {host}: {detail}");
            self.set_host_component(host, &r.name, now_running);
        }
        Ok(())
    }

    /// Whether enrolled host `host` has not been heard from lately (`up`'s own host
    /// always is).
    async fn host_silent(&self, host: &str, now: i64) -> Result<bool> {
        if !self.hosts.is_enrolled(host) {
            return Ok(false);
        }
        Ok(self
            .store
            .host(host)
            .await?
            .and_then(|h| h.last_seen_ms)
            .is_none_or(|t| now - t > super::enroll::OFFLINE_AFTER_SECS * 1000))
    }

    /// At start: what each host runs by deployment goes back into its catalog here.
    async fn restore_deployed(&self) -> Result<()> {
        for r in self.store.host_components(None, None).await? {
            if r.running_sha256.is_empty() {
                continue;
            }
            match self
                .load_component(&r.tenant, &r.name, &r.running_sha256)
                .await
            {
                Ok(c) => self.set_host_component(&r.host, &r.name, Some(c)),
                Err(e) => eprintln!(
                    "warning: host {} runs {} {}, which does not load here: {e}",
                    r.host, r.name, r.running_version
                ),
            }
        }
        Ok(())
    }

    /// The component `sha256` that `tenant` published as `name`, loaded as the kind its
    /// release says (a runbook, or a rule set).
    async fn load_component(&self, tenant: &str, name: &str, sha256: &str) -> Result<Deployable> {
        let releases = self.store.releases(tenant, Some(name)).await?;
        let Some(release) = releases.iter().find(|r| r.sha256 == sha256) else {
            return Err(ControlError::NotFound(format!(
                "tenant {tenant} published no {name} of sha256 {sha256}"
            )));
        };
        let rules = release.kind == "rules";
        let bytes = self.component_bytes(tenant, sha256).await?;
        let rt = self.runtime.clone();
        tokio::task::spawn_blocking(move || match rules {
            true => rt.load_rules(&bytes).map(Deployable::Rules),
            false => rt.load(&bytes).map(Deployable::Runbook),
        })
        .await
        .map_err(|e| ControlError::Setup(e.to_string()))?
        .map_err(|e| ControlError::Setup(format!("loading component {sha256}: {e}")))
    }

    /// Send `row` to its host and note the answer; whether the host answered (or the
    /// job was refused here) rather than the delivery failing.
    async fn send_deployment(&self, row: &HostComponentRow) -> Result<bool> {
        let action = match row.action.as_str() {
            "remove" => DeployAction::Remove,
            "rollback" => DeployAction::Rollback,
            _ => DeployAction::Deploy,
        };
        let (release, bytes) = match action {
            DeployAction::Remove => (String::new(), Vec::new()),
            _ => {
                let release = self
                    .store
                    .releases(&row.tenant, Some(&row.name))
                    .await?
                    .into_iter()
                    .find(|r| r.sha256 == row.sha256)
                    .ok_or_else(|| {
                        ControlError::NotFound(format!(
                            "the release of {} {} is gone from the registry",
                            row.name, row.sha256
                        ))
                    })?;
                (
                    release.envelope,
                    self.component_bytes(&row.tenant, &row.sha256).await?,
                )
            }
        };
        let to = runwarden_bus::Address {
            tenant: row.tenant.clone(),
            host: row.host.clone(),
        };
        // A component that fits travels inside its job (what every agent takes); a larger
        // one is stored on the link and named by the job.
        let stored = match bytes.len() > MAX_INLINE_COMPONENT_BYTES {
            true => {
                self.dispatch
                    .store_blob(&row.tenant, &row.sha256, &bytes)
                    .await
            }
            false => Ok(false),
        };
        let by_reference = match stored {
            Ok(stored) => stored,
            Err(e) => {
                let detail = format!(
                    "the component could not be stored for the host yet ({e}); sent again when the host is heard from"
                );
                self.note_row(row, "pending", &detail, now_ms()).await?;
                return Ok(false);
            }
        };
        let deployment = self.store.deployment(&row.tenant, &row.deployment).await?;
        let now = now_ms();
        let job = DeployJob {
            job: uuid::Uuid::now_v7().to_string(),
            deployment: row.deployment.clone(),
            tenant: row.tenant.clone(),
            host: row.host.clone(),
            requested_by: deployment.map(|d| d.created_by).unwrap_or_default(),
            action,
            name: row.name.clone(),
            version: row.version.clone(),
            sha256: row.sha256.clone(),
            release,
            component: match by_reference {
                true => String::new(),
                false => base64::engine::general_purpose::STANDARD.encode(&bytes),
            },
            size: match by_reference {
                true => bytes.len() as u64,
                false => 0,
            },
            issued_at_ms: now,
            expires_at_ms: now + DEPLOY_TTL_MS,
        };
        let payload = serde_json::to_vec(&job).expect("a deployment job serializes");
        let signed = ev::Envelope::sign(DEPLOY_PAYLOAD_TYPE, &payload, &self.control_key)
            .to_json()
            .into_bytes();
        if signed.len() > runwarden_proto::bus::MAX_MESSAGE_BYTES {
            let why = format!(
                "the signed job is {} bytes (the component, its release, base64 twice); the bus carries at most {}",
                signed.len(),
                runwarden_proto::bus::MAX_MESSAGE_BYTES
            );
            self.note_row(row, "refused", &why, now).await?;
            return Ok(true);
        }
        let report = match self.dispatch.dispatch(&to, &job.job, signed).await {
            Ok(r) => r,
            Err(e) => {
                let detail =
                    format!("not delivered yet ({e}); sent again when the host is heard from");
                self.note_row(row, "pending", &detail, now_ms()).await?;
                return Ok(false);
            }
        };
        match (report.refused, report.deployed) {
            (None, Some(o)) => {
                // Dropped: the host runs its own again, which the registry need not hold.
                let (sha, version) = match action {
                    DeployAction::Remove => ("", ""),
                    _ => (o.sha256.as_str(), o.version.as_str()),
                };
                // What the host said is noted first: it did it, whatever follows here.
                let detail = format!("record {} of {}", o.record.index, o.record.origin);
                self.store
                    .host_component_deployed(
                        &row.host,
                        &row.name,
                        &row.deployment,
                        sha,
                        version,
                        &detail,
                        now_ms(),
                    )
                    .await?;
                let loaded = match action {
                    DeployAction::Remove => None,
                    _ => match self.load_component(&row.tenant, &row.name, &o.sha256).await {
                        Ok(l) => Some(l),
                        Err(e) => {
                            eprintln!(
                                "warning: host {} runs {} {}, which this control plane cannot load ({e}): its jobs for it will be refused until it can",
                                row.host, row.name, o.version
                            );
                            return Ok(true);
                        }
                    },
                };
                self.set_host_component(&row.host, &row.name, loaded);
            }
            (why, _) => {
                let why = why.unwrap_or_else(|| "the agent's answer says nothing".into());
                self.note_row(
                    row,
                    "refused",
                    &crate::planner::catalog::cut(&why, 1000),
                    now_ms(),
                )
                .await?;
            }
        }
        Ok(true)
    }

    /// Set `row`'s state and detail, if its deployment still decides it.
    async fn note_row(
        &self,
        row: &HostComponentRow,
        state: &str,
        detail: &str,
        now: i64,
    ) -> Result<()> {
        self.store
            .set_host_component_state(&row.host, &row.name, &row.deployment, state, detail, now)
            .await?;
        Ok(())
    }

    /// Once every canary of `d` answered and its soak time passed: halt and roll them
    /// back, or let the rest follow.
    async fn judge_canaries(
        &self,
        d: &DeploymentRow,
        rows: &[HostComponentRow],
        now: i64,
    ) -> Result<()> {
        let canaries: Vec<&HostComponentRow> = rows
            .iter()
            .filter(|r| r.deployment == d.id && r.canary)
            .collect();
        if canaries.iter().any(|r| r.state == "pending") {
            return Ok(());
        }
        let refused: Vec<&&HostComponentRow> =
            canaries.iter().filter(|r| r.state == "refused").collect();
        let (mut total, mut failed) = (0, 0);
        let mut watched_until = 0;
        for r in canaries.iter().filter(|r| r.state == "deployed") {
            let (t, f) = self
                .store
                .runs_since(&r.host, &r.name, r.deployed_at_ms)
                .await?;
            total += t;
            failed += f;
            watched_until = watched_until.max(r.deployed_at_ms + d.soak_ms);
        }
        let rate = if total == 0 {
            0.0
        } else {
            failed as f64 / total as f64
        };
        let halt = if let Some(r) = refused.first() {
            Some(format!("canary host {} refused it: {}", r.host, r.detail))
        } else if rate > d.max_failure_rate {
            Some(format!(
                "{failed} of {total} runs on the canaries failed ({:.0}%, above {:.0}%)",
                rate * 100.0,
                d.max_failure_rate * 100.0
            ))
        } else {
            None
        };
        if halt.is_none() && now < watched_until {
            return Ok(());
        }
        match halt {
            Some(why) => {
                // The canaries go back to what they ran; the rest never get it.
                let mut back = Vec::new();
                for r in rows.iter().filter(|r| r.deployment == d.id) {
                    let mut r = r.clone();
                    if r.canary && r.state == "deployed" {
                        (r.action, r.sha256, r.version) = match r.previous_sha256.is_empty() {
                            true => ("remove".into(), String::new(), String::new()),
                            false => (
                                "rollback".into(),
                                r.previous_sha256.clone(),
                                r.previous_version.clone(),
                            ),
                        };
                        r.state = "pending".into();
                        r.detail = "halted: rolled back".into();
                    } else if r.state == "held" {
                        r.state = "halted".into();
                        r.detail = "halted before it came here".into();
                    } else {
                        continue;
                    }
                    r.updated_at_ms = now;
                    back.push(r);
                }
                let detail = format!("halted: {why}");
                self.record_deployment_step(d, "deploy-halted", &detail)
                    .await?;
                self.store.update_host_components(&back).await?;
                self.store
                    .set_deployment_state(&d.id, "halted", &detail, now)
                    .await?;
            }
            None => {
                let mut rest = Vec::new();
                for r in rows
                    .iter()
                    .filter(|r| r.deployment == d.id && r.state == "held")
                {
                    let mut r = r.clone();
                    r.state = "pending".into();
                    r.detail = String::new();
                    r.updated_at_ms = now;
                    rest.push(r);
                }
                let detail = format!(
                    "canaries passed: {failed} of {total} runs failed; to the other {} host(s)",
                    rest.len()
                );
                self.record_deployment_step(d, "deploy-promoted", &detail)
                    .await?;
                self.store.update_host_components(&rest).await?;
                self.store
                    .set_deployment_state(&d.id, "rolling", &detail, now)
                    .await?;
            }
        }
        Ok(())
    }

    /// Sign a step the control plane took on its own into its log.
    async fn record_deployment_step(
        &self,
        d: &DeploymentRow,
        status: &str,
        detail: &str,
    ) -> Result<()> {
        let caller = Caller {
            token_id: format!("control-plane (deployment {})", d.id),
            tenant: d.tenant.clone(),
            scope: Scope::Admin,
        };
        self.record_registry(
            &caller,
            (&d.name, &d.version, &d.sha256),
            status,
            detail,
            json!({"deployment": d.id}),
        )
        .await?;
        Ok(())
    }

    /// Run [`Controller::reconcile_deployments`] every `every` (and at once when a
    /// deployment is made) for as long as the controller lives.
    pub async fn run_deployments(self: Arc<Self>, every: std::time::Duration) {
        loop {
            if let Err(e) = self.reconcile_deployments().await {
                eprintln!("warning: deployments: {e}");
            }
            let wake = self.deployments_wake.clone();
            let _ = tokio::time::timeout(every, wake.notified()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::chosen;
    use std::collections::BTreeMap;

    #[test]
    fn hosts_are_chosen_by_id_by_every_label_given_or_all() {
        let labels = BTreeMap::from([
            ("site".to_string(), "north".to_string()),
            ("role".to_string(), "db".to_string()),
        ]);
        assert!(chosen("*", "h1", &labels));
        assert!(chosen("h2, h1", "h1", &labels));
        assert!(!chosen("h2", "h1", &labels));
        assert!(chosen("site=north", "h1", &labels));
        assert!(chosen("site=north,role=db", "h1", &labels));
        assert!(!chosen("site=north,role=web", "h1", &labels));
        assert!(!chosen("site=south", "h1", &labels));
        assert!(!chosen("", "h1", &labels));
    }
}
