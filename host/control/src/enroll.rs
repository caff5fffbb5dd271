//! Hosts joining the control plane: single-use enrollment tokens, enrollment, the hosts
//! list, drain.
//!
//! An admin of tenant T makes an enrollment token for T (optionally with labels): a
//! secret good for one host, until it expires. The agent of a new host presents it once
//! with its host id, its policy, its inventory and its public key; the host then belongs
//! to T for good (another tenant's token cannot take the id), and every record its log
//! holds must verify under that key.

use super::{Caller, ControlError, Controller, Result, getrandom_fill, now_ms, token_hash};
use crate::registry::HostConfig;
use crate::store::{EnrollmentTokenRow, HostRow};
use runwarden_evidence as ev;
use runwarden_proto::Scope;
use runwarden_proto::bus::LogSegment;
use runwarden_runtime::Policy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Shortest and longest life of an enrollment token, in seconds.
pub const ENROLL_TTL_SECS: std::ops::RangeInclusive<u64> = 60..=7 * 24 * 3600;
/// Most labels a host gets.
pub const MAX_LABELS: usize = 32;
/// A host heard from within this many seconds is online.
pub const ONLINE_WITHIN_SECS: i64 = 30;
/// An enrolled host not heard from for this many seconds (after it was once) gets no
/// jobs: its incidents escalate at once.
pub const OFFLINE_AFTER_SECS: i64 = 60;
/// How often a server reads the hosts table to serve what another server on the same
/// database enrolled or drained, in seconds.
pub const HOST_SYNC_SECS: u64 = 5;
/// Longest policy an agent may enroll with, in bytes.
pub const MAX_POLICY_BYTES: usize = 256 * 1024;

/// What an agent sends to enroll its host.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// The single-use enrollment token (`rwe_…`).
    pub token: String,
    /// The host's id (its policy's `host_id` must be the same).
    pub host_id: String,
    /// The agent's policy, TOML: the control plane builds the host's catalog from it.
    pub policy: String,
    /// What the host is and has.
    #[serde(default)]
    pub inventory: crate::Inventory,
    /// The host's public key, in the signed-note verifier form (`NAME+ID+KEY`): every
    /// record of its log must verify under it. The control plane names it (see
    /// [`Enrolled::key_name`]): the name sent here is not used.
    pub key: String,
}

/// What the control plane answers an enrolled agent. An agent reads it leniently: a field
/// a newer control plane adds does not stop an older agent from enrolling.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Enrolled {
    /// The tenant the host now belongs to.
    pub tenant: String,
    /// The host.
    pub host_id: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The key the control plane signs jobs with (verifier form): the agent runs only
    /// jobs it signed.
    pub control_key: String,
    /// The host's own NATS credentials (a `.creds` file's text), when the control plane
    /// mints them: its user reaches only this host's subjects. A secret: the agent keeps
    /// it 0600 and nothing logs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_creds: Option<String>,
    /// The name the host's key is enrolled under, and its log's origin is
    /// `runwarden/KEY_NAME`: the host id for a host's first key, `HOST~2`, `HOST~3`, … for
    /// the keys it enrolls with later (a rebuilt machine), so that each key signs a log of
    /// its own and the earlier logs stay the host's evidence. The agent renames its key to
    /// this before it signs anything.
    #[serde(default)]
    pub key_name: String,
}

/// What only the process knows of its link to the fleet, read at each scrape.
pub type Gauges = dyn Fn() -> LinkGauges + Send + Sync;

/// An agent's link to the fleet's control plane.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkGauges {
    /// Connected now.
    pub connected: bool,
    /// How far this host's log was forwarded (records the control plane confirmed).
    pub forwarded: Option<u64>,
}

/// A per-host gauge's value (none: not known).
type HostGauge = fn(&HostView) -> Option<f64>;

/// `v` as a Prometheus label value (backslash, quote and line breaks escaped).
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Mints a host's bus credentials at enrollment: `(tenant, host)` → a new bus user.
pub type CredentialMinter =
    dyn Fn(&str, &str) -> std::result::Result<MintedCredentials, String> + Send + Sync;

/// A bus user minted for a host's agent.
pub struct MintedCredentials {
    /// The `.creds` text (JWT and seed) the agent connects with.
    pub creds: String,
    /// The user's public key (`U…`): what a revocation names.
    pub user: String,
}

impl std::fmt::Debug for MintedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The creds hold the user's seed: never printed.
        f.debug_struct("MintedCredentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// A host as the operator sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HostView {
    /// Host id.
    pub id: String,
    /// Owner.
    pub tenant: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The host key's id (hex).
    pub key_id: String,
    /// When it enrolled (RFC 3339), or `null` for `runwarden up`'s own host.
    pub enrolled_at: Option<String>,
    /// When its agent was last heard from (RFC 3339).
    pub last_seen: Option<String>,
    /// Heard from within the last [`ONLINE_WITHIN_SECS`] seconds (agents say they are
    /// alive every 10 s); `runwarden up`'s own host always is.
    pub online: bool,
    /// No new jobs go to it.
    pub drained: bool,
    /// The agent's version, as its last heartbeat said.
    pub version: Option<String>,
    /// Records its log held at its last heartbeat (enrolled hosts).
    pub log_records: Option<u64>,
    /// Records of its log the control plane holds (mirrored; enrolled hosts).
    pub mirrored_records: Option<u64>,
    /// Incidents of it the control plane has sent to its agent (or is deciding) and not
    /// yet seen answered: its queue.
    #[serde(default)]
    pub queue_depth: u64,
    /// The newest record of its log the control plane holds.
    #[serde(default)]
    pub last_record: Option<LastRecord>,
    /// What it is and has.
    pub inventory: crate::Inventory,
    /// The components deployed to it: the version each runs, and one on its way.
    #[serde(default)]
    pub components: Vec<runwarden_proto::HostComponentView>,
}

/// The newest record of a host's log the control plane holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LastRecord {
    /// Its index in the host's log.
    pub index: u64,
    /// The invocation it records.
    pub invocation_id: String,
    /// The runbook.
    pub runbook: String,
    /// Its outcome (`healed`, `failed`, `interrupted`, …).
    pub status: String,
    /// When the host appended it (RFC 3339).
    pub at: String,
}

impl LastRecord {
    fn of(r: &ev::StoredRecord) -> LastRecord {
        LastRecord {
            index: r.index,
            invocation_id: r.invocation_id.clone(),
            runbook: r.runbook.clone(),
            status: r.status.clone(),
            at: ev::rfc3339_ms(r.recorded_at_ms.max(0) as u64),
        }
    }
}

/// A newly made enrollment token: the secret (shown once) and what it enrolls into.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EnrollmentToken {
    /// The secret (`rwe_…`): give it to one agent.
    pub token: String,
    /// Its id (`enr_…`).
    pub id: String,
    /// The tenant the host will belong to.
    pub tenant: String,
    /// The labels it will get.
    pub labels: BTreeMap<String, String>,
    /// When it stops working (RFC 3339).
    pub expires_at: String,
}

fn bad(why: String) -> ControlError {
    ControlError::BadRequest(why)
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<()> {
    if labels.len() > MAX_LABELS {
        return Err(bad(format!(
            "{} labels: at most {MAX_LABELS}",
            labels.len()
        )));
    }
    for (k, v) in labels {
        crate::incident::check_name("label name", k).map_err(|e| bad(e.to_string()))?;
        crate::incident::check_name("label value", v).map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
}

impl HostConfig {
    fn from_row(row: &HostRow) -> std::result::Result<HostConfig, String> {
        let policy = Policy::parse(&row.policy)
            .map_err(|e| format!("the stored policy of host {} does not parse: {e}", row.id))?;
        Ok(HostConfig {
            tenant: row.tenant.clone(),
            policy: Arc::new(policy),
            labels: serde_json::from_str(&row.labels)
                .map_err(|e| format!("the stored labels of host {}: {e}", row.id))?,
            inventory: serde_json::from_str(&row.inventory)
                .map_err(|e| format!("the stored inventory of host {}: {e}", row.id))?,
        })
    }
}

impl Controller {
    /// Serve every host enrolled in the store (at start).
    pub(super) async fn load_enrolled(&self) -> Result<()> {
        for row in self.store.hosts().await? {
            self.serve_row(&row).map_err(ControlError::Setup)?;
        }
        Ok(())
    }

    /// Serve `row`'s host as enrolled (again, if it enrolled anew) and as drained or not.
    fn serve_row(&self, row: &HostRow) -> std::result::Result<(), String> {
        if self.hosts.enrolled_at(&row.id) != Some(row.enrolled_at_ms) {
            self.hosts.insert(HostConfig::from_row(row)?)?;
            self.hosts.set_enrolled(&row.id, row.enrolled_at_ms);
        }
        self.hosts.set_drained(&row.id, row.drained);
        Ok(())
    }

    /// Catch up with the hosts table: hosts enrolled, re-enrolled, drained or undrained
    /// through another server on the same database are served as that server serves
    /// them. Every server does this every few seconds, and at once for a host id it does
    /// not know. Returns how many hosts are served.
    pub async fn sync_hosts(&self) -> Result<usize> {
        let rows = self.store.hosts().await?;
        for row in &rows {
            if let Err(e) = self.serve_row(row) {
                // One bad row does not keep the others from being served.
                eprintln!("runwarden: warning: host {}: {e}", row.id);
            }
        }
        Ok(self.hosts.all().len())
    }

    /// Host `id`, read from the store if this server does not serve it yet (it enrolled
    /// through another server since the last sync). `None`: no such host anywhere.
    pub async fn find_host(&self, id: &str) -> Result<Option<Arc<HostConfig>>> {
        if let Some(h) = self.hosts.get(id) {
            return Ok(Some(h));
        }
        let Some(row) = self.store.host(id).await? else {
            return Ok(None);
        };
        self.serve_row(&row).map_err(ControlError::Setup)?;
        Ok(self.hosts.get(id))
    }

    /// Make a single-use enrollment token for `caller`'s tenant (admin scope), good for
    /// `ttl_secs` (default one hour); the host it enrolls gets `labels`.
    pub async fn create_enrollment_token(
        &self,
        caller: &Caller,
        tenant: Option<&str>,
        labels: BTreeMap<String, String>,
        ttl_secs: Option<u64>,
    ) -> Result<EnrollmentToken> {
        if caller.scope != Scope::Admin {
            return Err(ControlError::Conflict(
                "enrollment tokens are made with an admin token".into(),
            ));
        }
        let tenant = tenant.unwrap_or(&caller.tenant);
        if tenant != caller.tenant {
            return Err(ControlError::WrongTenant {
                given: tenant.to_string(),
                caller: caller.tenant.clone(),
            });
        }
        check_labels(&labels)?;
        let ttl = ttl_secs.unwrap_or(3600);
        if !ENROLL_TTL_SECS.contains(&ttl) {
            return Err(bad(format!(
                "ttl of {ttl} s: an enrollment token lives from {} s to {} s (7 days)",
                ENROLL_TTL_SECS.start(),
                ENROLL_TTL_SECS.end()
            )));
        }
        let mut raw = [0u8; 32];
        getrandom_fill(&mut raw)?;
        let token = format!("rwe_{}", hex::encode(raw));
        let now = now_ms();
        let row = EnrollmentTokenRow {
            id: format!("enr_{}", &token_hash(&token)[..12]),
            tenant: tenant.to_string(),
            labels: serde_json::to_string(&labels).unwrap_or_else(|_| "{}".into()),
            created_at_ms: now,
            expires_at_ms: now + (ttl * 1000) as i64,
        };
        self.store
            .put_enrollment_token(&row, &token_hash(&token))
            .await?;
        Ok(EnrollmentToken {
            token,
            id: row.id,
            tenant: row.tenant,
            labels,
            expires_at: ev::rfc3339_ms(row.expires_at_ms as u64),
        })
    }

    /// Enroll a host with a single-use token: it belongs to the token's tenant from now
    /// on, its jobs are signed for its agent, and its records must verify under its key.
    pub async fn enroll(&self, e: Enrollment) -> Result<Enrolled> {
        crate::incident::check_name("host", &e.host_id).map_err(|x| bad(x.to_string()))?;
        if e.policy.len() > MAX_POLICY_BYTES {
            return Err(bad(format!(
                "a policy of {} bytes: at most {MAX_POLICY_BYTES}",
                e.policy.len()
            )));
        }
        let policy = Policy::parse(&e.policy).map_err(|x| bad(format!("the policy: {x}")))?;
        if policy.host_id != e.host_id {
            return Err(bad(format!(
                "the policy is for host {:?}, not {:?}: enroll with the host's own policy",
                policy.host_id, e.host_id
            )));
        }
        if e.host_id == crate::evidence::CONTROL_KEY_NAME {
            return Err(bad(format!(
                "host id {:?} is the control plane's own log's name: enroll under another id",
                e.host_id
            )));
        }
        let sent = ev::VerifyingKey::from_text(e.key.trim())
            .map_err(|x| bad(format!("the host key: {x}")))?;
        let unusable = || {
            ControlError::NotFound(
                "the enrollment token is unknown, expired or already used: ask an admin for a new one (runwarden hosts enroll-token)"
                    .into(),
            )
        };
        let secret = token_hash(&e.token);
        let held = self
            .store
            .enrollment_token(&secret, now_ms())
            .await?
            .ok_or_else(unusable)?;
        let taken = || {
            ControlError::Conflict(format!(
                "host id {:?} is taken: a host belongs to one tenant (enroll under another id)",
                e.host_id
            ))
        };
        // Checked before the token is spent: a refused enrollment leaves it usable.
        if self
            .hosts
            .get(&e.host_id)
            .is_some_and(|h| h.tenant != held.tenant)
            || self
                .store
                .host(&e.host_id)
                .await?
                .is_some_and(|h| h.tenant != held.tenant)
        {
            return Err(taken());
        }
        let key = self.name_key(&e.host_id, &sent.to_bytes()).await?;
        // Spent once, atomically: of two agents racing with one token, one enrolls.
        let token = self
            .store
            .use_enrollment_token(&secret, &e.host_id, now_ms())
            .await?
            .ok_or_else(unusable)?;
        let labels: BTreeMap<String, String> =
            serde_json::from_str(&token.labels).unwrap_or_default();
        let row = HostRow {
            id: e.host_id.clone(),
            tenant: token.tenant.clone(),
            labels: token.labels.clone(),
            inventory: serde_json::to_string(&e.inventory).unwrap_or_else(|_| "{}".into()),
            policy: e.policy.clone(),
            key_name: key.name().to_string(),
            public_key: key.to_bytes().to_vec(),
            enrolled_at_ms: now_ms(),
            last_seen_ms: None,
            drained: false,
            agent_version: None,
            log_size: None,
        };
        if !self.store.put_host(&row).await? {
            return Err(ControlError::Conflict(format!(
                "host {:?} changed while it enrolled (another tenant's, or another key took its \
                 name): ask an admin for a new token and enroll again",
                e.host_id
            )));
        }
        self.hosts
            .insert(HostConfig {
                tenant: token.tenant.clone(),
                policy: Arc::new(policy),
                labels: labels.clone(),
                inventory: e.inventory,
            })
            .map_err(ControlError::Conflict)?;
        self.hosts.set_enrolled(&e.host_id, row.enrolled_at_ms);
        let nats_creds = match self.minter.get() {
            Some(mint) => {
                let minted = mint(&token.tenant, &e.host_id).map_err(|why| {
                    ControlError::Setup(format!(
                        "host {} enrolled, but its bus credentials could not be made: {why}",
                        e.host_id
                    ))
                })?;
                // The host's earlier bus users (a rebuilt machine's old data directory,
                // a copy of it anywhere) are revoked from now on.
                let revoked = self
                    .store
                    .add_bus_user(&minted.user, &e.host_id, &token.tenant, now_ms())
                    .await?;
                if revoked > 0 {
                    self.bus_users_revoked.notify_one();
                }
                Some(minted.creds)
            }
            None => None,
        };
        Ok(Enrolled {
            tenant: token.tenant,
            host_id: e.host_id,
            labels,
            control_key: self.control_public_key().to_text(),
            nats_creds,
            key_name: key.name().to_string(),
        })
    }

    /// The key `public` of host `host`, named as the control plane names host keys: the
    /// name it had if the host enrolled with it before, else the host id for a host's
    /// first key and `HOST~N` for a later one (a name no host id can take: `~` is not
    /// allowed in one). A key another host enrolled with is refused: a key signs for one
    /// host.
    async fn name_key(&self, host: &str, public: &[u8; 32]) -> Result<ev::VerifyingKey> {
        let keys = self.store.host_keys(host).await?;
        if let Some(k) = keys.iter().find(|k| k.public_key == public) {
            return Ok(ev::VerifyingKey::from_bytes(&k.key_name, public)?);
        }
        for n in keys.len() + 1..keys.len() + 100 {
            let name = match n {
                1 => host.to_string(),
                n => format!("{host}~{n}"),
            };
            match self.store.host_key_named_or(&name, public).await? {
                None => return Ok(ev::VerifyingKey::from_bytes(&name, public)?),
                Some(k) if k.public_key == public => {
                    return Err(ControlError::Conflict(format!(
                        "this agent's key is enrolled for host {:?}: a key signs for one host; \
                         enroll {host:?} from a data directory of its own",
                        k.host_id
                    )));
                }
                Some(_) => {}
            }
        }
        Err(ControlError::Conflict(format!(
            "no free name for another key of host {host:?}"
        )))
    }

    /// The key host `id` signs its records with, if it enrolled.
    pub async fn host_key(&self, id: &str) -> Result<Option<ev::VerifyingKey>> {
        let Some(row) = self.store.host(id).await? else {
            return Ok(None);
        };
        let bytes: [u8; 32] = row.public_key.as_slice().try_into().map_err(|_| {
            ControlError::Setup(format!("the stored key of host {id} is malformed"))
        })?;
        Ok(Some(ev::VerifyingKey::from_bytes(&row.key_name, &bytes)?))
    }

    /// `tenant`'s hosts as the operator sees them.
    pub async fn host_views(&self, tenant: &str) -> Result<Vec<HostView>> {
        self.views(tenant, true).await
    }

    /// The views, with each host's newest record (a read per host) or without (metrics,
    /// scraped often: a fixed number of reads however many hosts).
    async fn views(&self, tenant: &str, newest_records: bool) -> Result<Vec<HostView>> {
        let rows: BTreeMap<String, HostRow> = self
            .store
            .hosts()
            .await?
            .into_iter()
            .filter(|r| r.tenant == tenant)
            .map(|r| (r.id.clone(), r))
            .collect();
        let time = |ms: i64| ev::rfc3339_ms(ms.max(0) as u64);
        let hosts = self.hosts_of(tenant);
        let sizes = self.evidence.mirrored_sizes().await?;
        let mut mirrored = BTreeMap::new();
        let mut last = BTreeMap::new();
        for h in &hosts {
            let newest = match rows.get(h.id()) {
                // An enrolled host: its log as mirrored here.
                Some(r) => {
                    let origin = ev::log_origin(&r.key_name);
                    let held = sizes.get(&origin).copied().unwrap_or(0);
                    mirrored.insert(r.id.clone(), held);
                    match held {
                        0 => None,
                        _ if !newest_records => None,
                        n => self
                            .evidence
                            .mirrored_records(&origin, n - 1, n)
                            .await?
                            .pop(),
                    }
                }
                None if !newest_records => None,
                // `runwarden up`'s own host: this database's own log is its log.
                None => match self.evidence.size().await? {
                    0 => None,
                    n => self.evidence.get(n - 1).await?,
                },
            };
            if let Some(r) = newest {
                last.insert(h.id().to_string(), LastRecord::of(&r));
            }
        }
        let queues = self.store.processing_by_host().await?;
        let mut components = self.host_components_by_host(tenant).await?;
        Ok(hosts
            .iter()
            .map(|h| {
                let row = rows.get(h.id());
                HostView {
                    queue_depth: queues.get(h.id()).copied().unwrap_or(0),
                    last_record: last.remove(h.id()),
                    version: row.and_then(|r| r.agent_version.clone()),
                    log_records: row.and_then(|r| r.log_size).map(|n| n.max(0) as u64),
                    mirrored_records: mirrored.get(h.id()).copied(),
                    id: h.id().to_string(),
                    tenant: h.tenant.clone(),
                    labels: h.labels.clone(),
                    key_id: row
                        .and_then(|r| <[u8; 32]>::try_from(r.public_key.as_slice()).ok())
                        .and_then(|b| ev::VerifyingKey::from_bytes(&row?.key_name, &b).ok())
                        .map(|k| k.key_id_hex())
                        .unwrap_or_default(),
                    enrolled_at: row.map(|r| time(r.enrolled_at_ms)),
                    last_seen: row.and_then(|r| r.last_seen_ms).map(time),
                    online: match row {
                        None => true,
                        Some(r) => r
                            .last_seen_ms
                            .is_some_and(|t| now_ms() - t <= ONLINE_WITHIN_SECS * 1000),
                    },
                    drained: row.is_some_and(|r| r.drained),
                    inventory: h.inventory.clone(),
                    components: components.remove(h.id()).unwrap_or_default(),
                }
            })
            .collect())
    }

    /// `tenant`'s fleet as Prometheus gauges: hosts by state; per host whether it is
    /// online, when it was last heard from, its queue and the records its log holds that
    /// the control plane does not yet; whether the bus reaches agents; and what the
    /// process adds (an agent: its link, backlog and hand-ups).
    pub async fn fleet_metrics(&self, tenant: &str) -> Result<String> {
        use std::fmt::Write as _;
        let views = self.views(tenant, false).await?;
        let mut out = String::new();
        let state = |h: &HostView| match (h.drained, h.online) {
            (true, _) => "drained",
            (false, true) => "online",
            (false, false) => "offline",
        };
        out.push_str("# HELP runwarden_hosts Hosts by state (drained counts as drained only).\n# TYPE runwarden_hosts gauge\n");
        for s in ["online", "offline", "drained"] {
            let n = views.iter().filter(|h| state(h) == s).count();
            let _ = writeln!(out, "runwarden_hosts{{state=\"{s}\"}} {n}");
        }
        let gauges: [(&str, &str, HostGauge); 4] = [
            (
                "runwarden_host_online",
                "1 if the host's agent was heard from within 30 s.",
                |h| Some(if h.online { 1.0 } else { 0.0 }),
            ),
            (
                "runwarden_host_last_seen_timestamp_seconds",
                "When the host's agent was last heard from (Unix time).",
                |h| {
                    h.last_seen
                        .as_deref()
                        .and_then(crate::parse_rfc3339_ms)
                        .map(|ms| ms as f64 / 1000.0)
                },
            ),
            (
                "runwarden_host_queue_depth",
                "Incidents sent to the host's agent (or being decided) and not yet answered.",
                |h| Some(h.queue_depth as f64),
            ),
            (
                "runwarden_host_unforwarded_records",
                "Records the host's log held at its last heartbeat that the control plane does not hold yet.",
                |h| Some(h.log_records?.saturating_sub(h.mirrored_records?) as f64),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for h in &views {
                if let Some(v) = value(h) {
                    let _ = writeln!(out, "{name}{{host=\"{}\"}} {v}", label_value(&h.id));
                }
            }
        }
        if !self.owns(tenant) {
            return Ok(out);
        }
        // An agent's link is its own to tell; a server's or `up`'s is its dispatcher.
        let link = self.gauges.get().map(|g| g());
        let connected = link
            .as_ref()
            .map_or_else(|| self.dispatch.connected(), |l| l.connected);
        let _ = writeln!(
            out,
            "# HELP runwarden_bus_connected 1 if this process's link to the fleet (a server: to its agents; an agent: to the control plane) is up.\n# TYPE runwarden_bus_connected gauge\nrunwarden_bus_connected {}",
            u8::from(connected)
        );
        if self.hand_up {
            // An agent: what waits on this host for the link.
            let pending = self.store.pending_hand_up_count().await?;
            let size = self.evidence.size().await?;
            let _ = writeln!(
                out,
                "# HELP runwarden_agent_hand_ups_pending Incidents this agent handed up (L2/L3) that the control plane has not taken yet.\n# TYPE runwarden_agent_hand_ups_pending gauge\nrunwarden_agent_hand_ups_pending {pending}\n\
                 # HELP runwarden_agent_log_records Records this host's log holds.\n# TYPE runwarden_agent_log_records gauge\nrunwarden_agent_log_records {size}"
            );
            if let Some(forwarded) = link.and_then(|l| l.forwarded) {
                let _ = writeln!(
                    out,
                    "# HELP runwarden_agent_unforwarded_records Records of this host's log not yet forwarded to the control plane.\n# TYPE runwarden_agent_unforwarded_records gauge\nrunwarden_agent_unforwarded_records {}",
                    size.saturating_sub(forwarded)
                );
            }
        }
        Ok(out)
    }

    /// Tell [`Controller::fleet_metrics`] about this process's link to the fleet (an
    /// agent's: the dispatcher of its own control plane is in-process).
    pub fn set_gauges(&self, gauges: Arc<Gauges>) {
        let _ = self.gauges.set(gauges);
    }

    /// Stop (or resume) dispatching new jobs to `caller`'s tenant's host `id`.
    pub async fn drain(&self, caller: &Caller, id: &str, drained: bool) -> Result<()> {
        // The path names the host: the answer does not echo it.
        if self.hosts.owned(&caller.tenant, id).is_none() {
            return Err(ControlError::NotFound(format!(
                "no such host for tenant {}: see GET /v1/hosts",
                caller.tenant
            )));
        }
        if !self.store.set_drained(id, drained).await? {
            return Err(ControlError::Conflict(format!(
                "host {id} did not enroll (runwarden up's own host cannot be drained)"
            )));
        }
        self.hosts.set_drained(id, drained);
        Ok(())
    }

    /// Mirror a segment of enrolled host `host`'s log: every record and the checkpoint
    /// must verify under the key it enrolled with, and continue what is held. A gap (a
    /// record missing, e.g. deleted from the agent's buffer) or a fork (another history
    /// under the host's key) is refused and raised once as a critical incident of the
    /// host's tenant, escalated to a human.
    pub async fn ingest_log(&self, host: &str, segment: &LogSegment) -> Result<ev::Mirrored> {
        let Some(key) = self.host_key(host).await? else {
            return Err(ControlError::NotFound(format!(
                "host {host} did not enroll: its log is not mirrored"
            )));
        };
        let origin = ev::log_origin(key.name());
        if segment.origin != origin {
            // A log of a key the host enrolled with before: what is mirrored of it stays,
            // nothing more is taken (the key was replaced, perhaps because it was lost).
            let retired = self
                .store
                .host_keys(host)
                .await?
                .into_iter()
                .any(|k| ev::log_origin(&k.key_name) == segment.origin);
            return Err(ControlError::BadRequest(match retired {
                true => format!(
                    "a segment of log {} from host {host}: that log's key was replaced when the \
                     host enrolled again, and its log is now {origin}",
                    segment.origin
                ),
                false => format!(
                    "a segment of log {} from host {host}, whose log is {origin}",
                    segment.origin
                ),
            }));
        }
        let store_segment = ev::Segment {
            origin: segment.origin.clone(),
            first: segment.first,
            envelopes: segment
                .envelopes
                .iter()
                .map(|e| e.as_bytes().to_vec())
                .collect(),
            checkpoint: segment.checkpoint.clone(),
        };
        let result = self.evidence.mirror(&key, &store_segment).await;
        let (kind, index) = match &result {
            Err(ev::Error::LogGap { held, .. }) => ("evidence-gap", *held),
            // The host says its own copy has a hole: the records after it reach no one.
            Err(ev::Error::SignerLogHole { first, .. }) => ("evidence-gap", *first),
            Err(ev::Error::LogFork { index, .. }) => ("evidence-fork", *index),
            _ => return Ok(result?),
        };
        let err = result.err().map(|e| e.to_string()).unwrap_or_default();
        let key = (host.to_string(), kind, index);
        let new = !self
            .raised
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key);
        if new && let Some(h) = self.hosts.get(host) {
            // Noted once raised: a raise that failed is tried again with the segment.
            self.raise(&h.tenant, host, kind, &err).await?;
            self.raised
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key);
        }
        Err(ControlError::Conflict(err))
    }

    /// An incident the control plane itself found about `host`: escalated to a human at
    /// once, with its record; no rule or planner acts on it.
    async fn raise(&self, tenant: &str, host: &str, kind: &str, message: &str) -> Result<()> {
        let incident = crate::Incident {
            tenant: tenant.to_string(),
            host: host.to_string(),
            kind: kind.to_string(),
            severity: runwarden_proto::Severity::Critical,
            service: None,
            message: crate::planner::catalog::cut(message, 1000).to_string(),
            labels: BTreeMap::from([("source".to_string(), "control-plane".to_string())]),
            occurred_at: None,
        };
        let mut rec = self.prepare(tenant, incident).await?;
        let now = now_ms();
        Self::end(
            &mut rec,
            runwarden_proto::Tier::L3,
            runwarden_proto::IncidentStatus::Escalated,
            format!("the host's evidence log: {message}"),
        );
        self.record_undecided(&mut rec, kind, now).await?;
        self.save(&mut rec, now).await?;
        Ok(())
    }

    /// From now on, hand each enrolling agent the bus credentials `mint` makes for its
    /// host (`runwarden server` with a NATS operator). Set once.
    pub fn set_credential_minter(&self, mint: Arc<CredentialMinter>) {
        let _ = self.minter.set(mint);
    }

    /// Woken whenever an enrollment revoked bus users: whoever pushes the bus's
    /// account (the NATS operator) pushes it again with [`Controller::revoked_bus_users`].
    pub fn bus_users_revoked(&self) -> Arc<tokio::sync::Notify> {
        self.bus_users_revoked.clone()
    }

    /// Every bus user revoked so far: its public key → when (Unix seconds, rounded up so
    /// that a user issued in that second is covered).
    pub async fn revoked_bus_users(&self) -> Result<BTreeMap<String, i64>> {
        Ok(self
            .store
            .revoked_bus_users()
            .await?
            .into_iter()
            .map(|(user, at_ms)| (user, at_ms.div_euclid(1000) + 1))
            .collect())
    }

    /// Note that `host`'s agent was heard from now, running `version` with `log_size`
    /// records in its log.
    pub async fn heard_from(
        &self,
        host: &str,
        version: Option<&str>,
        log_size: Option<u64>,
    ) -> Result<()> {
        let version = version.map(|v| crate::planner::catalog::cut(v, 64));
        Ok(self
            .store
            .touch_host(
                host,
                now_ms(),
                version.as_deref(),
                log_size.map(|n| n.min(i64::MAX as u64) as i64),
            )
            .await?)
    }
}
