//! The L2→L1 flywheel: L2 decisions grouped by incident signature (type and service, in a
//! tenant). A signature whose planner runs all chose one runbook, with at least
//! `promote_after` successes (default 3) and no failure, is proposed as an L1 rule. A
//! human promotes it: the rule is written as YAML, compiled, replayed against the
//! stored incidents (what it would have matched and done), and deployed only when
//! confirmed — with a signed record of who promoted what, written before the rule goes
//! live. A promoted rule decides the incidents of the tenant whose history justified it,
//! and no other's. Promoted rules live in `DATA_DIR/rules/TENANT/` and are loaded again
//! at every start.
//!
//! Agent requests (MCP, type `agent.*`) are direct asks, not planner decisions: they are
//! not counted.

use super::{ActionRecord, Caller, ControlError, Controller, Result, Scoped, blocking, now_ms};
use crate::evidence::{self as evrec, Context as EvContext, Subject};
use crate::rules::{self as rulesfmt, RunbookParams};
use crate::store::RunRow;
use runwarden_evidence as ev;
use runwarden_proto::{IncidentStatus, Tier};
use runwarden_runtime::{Loaded, RuleSet, Runtime};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How many of the tenant's recent runs are grouped.
const HISTORY: u32 = 10_000;
/// How many stored incidents a replay reads.
const REPLAY: u32 = 10_000;
/// Matches listed in a replay report (all are counted).
const LISTED: usize = 50;

/// One L2 run of a signature.
#[derive(Clone, Debug, Serialize)]
pub struct FlywheelRun {
    /// The incident.
    pub incident_id: String,
    /// Host.
    pub host: String,
    /// `healed`, `no-op`, `failed`, …
    pub status: String,
    /// The run's summary.
    pub summary: String,
    /// When (RFC 3339).
    pub at: String,
    /// The params it ran with.
    pub params: Value,
}

/// A signature's L2 record, and whether it is ready to become a rule.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    /// `fw-` and 10 hex digits of the signature: the rule's id once promoted.
    pub id: String,
    /// The incidents' type.
    pub incident_type: String,
    /// Their service (empty: none).
    pub service: String,
    /// The runbook the planner chose (the latest, when it chose several).
    pub runbook: String,
    /// Runs that healed or found nothing to do.
    pub successes: u32,
    /// Runs that ended any other way.
    pub failures: u32,
    /// `candidate` (ready), `collecting` (too few successes), `disqualified`, `promoted`.
    pub state: String,
    /// Why it is in that state, in words.
    pub why: String,
    /// The params the rule would set (`{{service}}`, `{{labels.K}}` where they differ).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
    /// The runs, newest first (at most 20).
    pub history: Vec<FlywheelRun>,
}

/// One stored incident the rule matches.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayMatch {
    /// The incident.
    pub incident_id: String,
    /// When it was received.
    pub received_at: String,
    /// How it ended then.
    pub status: IncidentStatus,
    /// Who handled it then.
    pub tier: Tier,
    /// What the rule would have run.
    pub would_run: Vec<ActionRecord>,
}

/// The rule against the stored incidents.
#[derive(Clone, Debug, Serialize)]
pub struct Replay {
    /// Incidents replayed.
    pub incidents: usize,
    /// Those the rule matches.
    pub matched: usize,
    /// Matched ones the planner resolved then with the same runbook.
    pub agreed: usize,
    /// Matched ones that ended otherwise (failed, escalated, another runbook): look at
    /// these before promoting.
    pub differed: usize,
    /// The first matches, newest first.
    pub matches: Vec<ReplayMatch>,
}

/// A promotion, proposed or done.
#[derive(Clone, Debug, Serialize)]
pub struct Promotion {
    /// The candidate.
    pub candidate: Candidate,
    /// The rule, as YAML.
    pub yaml: String,
    /// SHA-256 of the compiled rule component.
    pub rule_sha256: String,
    /// The replay.
    pub replay: Replay,
    /// Whether it was deployed (only when confirmed).
    pub deployed: bool,
    /// Where the rule was written, once deployed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The evidence record of the promotion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence_index: Option<u64>,
    /// How the tenant's promoted rules reached its hosts once promoted: published as the
    /// signed rule set `flywheel` (every promoted rule of the tenant) and deployed to all
    /// its hosts — or why not (in words).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distributed: Option<String>,
    /// The deployment of that rule set, when one was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
}

/// The name of the rule set the flywheel publishes for a tenant: every rule it promoted.
pub const FLYWHEEL_RULE_SET: &str = "flywheel";

fn ok(status: &str) -> bool {
    matches!(status, "healed" | "no-op")
}

fn candidate_id(tenant: &str, kind: &str, service: &str) -> String {
    let mut h = Sha256::new();
    for part in [tenant, kind, service] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    format!("fw-{}", &hex::encode(h.finalize())[..10])
}

/// The runbooks' param names, for compiling rules against them.
pub(crate) fn params_catalog(
    runbooks: &BTreeMap<String, Arc<Loaded>>,
) -> HashMap<String, RunbookParams> {
    runbooks
        .iter()
        .map(|(n, l)| {
            (
                n.clone(),
                RunbookParams::from_schema(&l.manifest().params_schema),
            )
        })
        .collect()
}

/// Compile one YAML rule file into a loaded rule set.
pub(crate) fn compile_rules(
    runtime: &Runtime,
    runbooks: &BTreeMap<String, Arc<Loaded>>,
    file: &str,
    yaml: &str,
) -> std::result::Result<Arc<RuleSet>, String> {
    let bytes = rule_component(runbooks, &[(file.to_string(), yaml.to_string())])?;
    runtime
        .load_rules(&bytes)
        .map_err(|e| format!("{file}: {e}"))
}

/// Compile YAML rule files (name, text), in order, into one rule component's bytes.
fn rule_component(
    runbooks: &BTreeMap<String, Arc<Loaded>>,
    sources: &[(String, String)],
) -> std::result::Result<Vec<u8>, String> {
    let program =
        rulesfmt::compile(sources, Some(&params_catalog(runbooks))).map_err(|e| e.to_string())?;
    rulesfmt::embed(runwarden_guests::rule_engine(), &program.to_bytes()).map_err(|e| e.to_string())
}

/// Where `tenant`'s promoted rules live: `DIR/TENANT`. Tenant names that could leave the
/// directory (`.`, `..`, a leading dot) are refused.
pub(crate) fn tenant_rules_dir(dir: &Path, tenant: &str) -> Result<PathBuf> {
    let safe = !tenant.is_empty()
        && !tenant.starts_with('.')
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if !safe {
        return Err(ControlError::Conflict(format!(
            "tenant {tenant:?} cannot name a directory of promoted rules: promote with a \
             tenant named by letters, digits and - _ . @"
        )));
    }
    Ok(dir.join(tenant))
}

/// The promoted rules under `dir`: `(tenant, file)` for `DIR/TENANT/*.yaml`, and
/// `(None, file)` for rule files an operator put in `DIR` itself (every tenant's).
pub(crate) fn promoted(dir: &Path) -> std::io::Result<Vec<(Option<String>, PathBuf)>> {
    let mut out: Vec<(Option<String>, PathBuf)> = promoted_files(dir)?
        .into_iter()
        .map(|p| (None, p))
        .collect();
    let mut tenants = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let e = e?;
                if e.file_type()?.is_dir()
                    && let Some(name) = e.file_name().to_str()
                    && !name.starts_with('.')
                {
                    tenants.push(name.to_string());
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    tenants.sort();
    for t in tenants {
        for p in promoted_files(&dir.join(&t))? {
            out.push((Some(t.clone()), p));
        }
    }
    Ok(out)
}

/// The rule files in `dir`, by name.
fn promoted_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let p = e?.path();
                if p.extension().is_some_and(|x| x == "yaml") {
                    out.push(p);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    out.sort();
    Ok(out)
}

impl Controller {
    /// Every L2 signature of `tenant` and how close it is to becoming a rule: candidates
    /// first, then the rest. Not found for a tenant that does not own the host.
    pub async fn flywheel_candidates(&self, tenant: &str) -> Result<Vec<Candidate>> {
        self.check_owner(tenant)?;
        let runs = self.store.recent_runs(tenant, HISTORY).await?;
        let deployed: BTreeSet<String> = self
            .rule_sets(Some(tenant))
            .iter()
            .flat_map(|s| s.rules().iter().map(|r| r.id.clone()))
            .collect();
        let mut groups: BTreeMap<(String, String), Vec<&RunRow>> = BTreeMap::new();
        for r in runs
            .iter()
            .filter(|r| r.tier == "L2" && !r.dry_run && !r.incident_type.starts_with("agent."))
        {
            groups
                .entry((r.incident_type.clone(), r.service.clone()))
                .or_default()
                .push(&**r);
        }
        let min = self.planner_config.promote_after.max(1);
        let mut out = Vec::new();
        for ((kind, service), runs) in groups {
            let id = candidate_id(tenant, &kind, &service);
            let successes = runs.iter().filter(|r| ok(&r.status)).count() as u32;
            let failures = runs.len() as u32 - successes;
            let chosen: BTreeSet<&str> = runs.iter().map(|r| r.runbook.as_str()).collect();
            let mut params = None;
            let (state, why) = if deployed.contains(&id) {
                ("promoted", "deployed as an L1 rule".to_string())
            } else if let Some(f) = runs.iter().find(|r| !ok(&r.status)) {
                (
                    "disqualified",
                    format!(
                        "{failures} failed run(s); the last: {} ended {} at {}: {}",
                        f.runbook,
                        f.status,
                        ev::rfc3339_ms(f.at_ms as u64),
                        crate::planner::catalog::cut(&f.summary, 200)
                    ),
                )
            } else if chosen.len() > 1 {
                (
                    "disqualified",
                    format!(
                        "the planner chose different runbooks: {}",
                        chosen.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                )
            } else if successes < min {
                (
                    "collecting",
                    format!("{successes} of {min} successful L2 resolutions, none failed"),
                )
            } else {
                match self.template(tenant, &runs).await? {
                    Ok(p) => {
                        params = Some(p);
                        (
                            "candidate",
                            format!("{successes} successful L2 resolution(s), none failed"),
                        )
                    }
                    Err(why) => ("disqualified", why),
                }
            };
            out.push(Candidate {
                id,
                incident_type: kind,
                service,
                runbook: runs[0].runbook.clone(),
                successes,
                failures,
                state: state.into(),
                why,
                params,
                history: runs
                    .iter()
                    .take(20)
                    .map(|r| FlywheelRun {
                        incident_id: r.incident_id.clone(),
                        host: r.host.clone(),
                        status: r.status.clone(),
                        summary: r.summary.clone(),
                        at: ev::rfc3339_ms(r.at_ms as u64),
                        params: serde_json::from_str(&r.params).unwrap_or(Value::Null),
                    })
                    .collect(),
            });
        }
        out.sort_by_key(|c| match c.state.as_str() {
            "candidate" => 0,
            "collecting" => 1,
            "disqualified" => 2,
            _ => 3,
        });
        Ok(out)
    }

    /// The params a rule would set for `runs`: a value every run shares stays literal; one
    /// that differs must be the incident's service or one of its labels in every run.
    async fn template(
        &self,
        tenant: &str,
        runs: &[&RunRow],
    ) -> Result<std::result::Result<Value, String>> {
        let params: Vec<serde_json::Map<String, Value>> = runs
            .iter()
            .map(|r| match serde_json::from_str(&r.params) {
                Ok(Value::Object(m)) => m,
                _ => serde_json::Map::new(),
            })
            .collect();
        let keys: BTreeSet<&String> = params.iter().flat_map(|p| p.keys()).collect();
        let mut incidents = Vec::new();
        let mut out = serde_json::Map::new();
        for key in keys {
            let values: Vec<Option<&Value>> = params.iter().map(|p| p.get(key)).collect();
            if values.iter().all(|v| *v == values[0]) {
                if let Some(v) = values[0] {
                    out.insert(key.clone(), v.clone());
                }
                continue;
            }
            if incidents.is_empty() {
                for r in runs {
                    let Some(rec) = self.incident(tenant, &r.incident_id).await? else {
                        return Ok(Err(format!(
                            "incident {} of its history is no longer stored",
                            r.incident_id
                        )));
                    };
                    incidents.push(rec.incident);
                }
            }
            let mut fields: Vec<(String, Vec<Option<String>>)> = vec![(
                "{{service}}".into(),
                incidents.iter().map(|i| i.service.clone()).collect(),
            )];
            for label in incidents[0].labels.keys() {
                fields.push((
                    format!("{{{{labels.{label}}}}}"),
                    incidents
                        .iter()
                        .map(|i| i.labels.get(label).cloned())
                        .collect(),
                ));
            }
            let explained = fields.into_iter().find(|(_, got)| {
                got.iter()
                    .zip(&values)
                    .all(|(g, v)| g.is_some() && g.as_deref() == v.and_then(|v| v.as_str()))
            });
            match explained {
                Some((placeholder, _)) => {
                    out.insert(key.clone(), Value::String(placeholder));
                }
                None => {
                    return Ok(Err(format!(
                        "param {key:?} differs between runs and neither the service nor a label \
                         of the incidents explains it: a rule cannot say which value to use"
                    )));
                }
            }
        }
        Ok(Ok(Value::Object(out)))
    }

    /// The rule for candidate `c`, as YAML (keys in the order people write them).
    fn rule_yaml(c: &Candidate) -> String {
        use serde_yaml::{Mapping, Value as Y};
        let text = |s: &str| Y::String(s.to_string());
        let mut when = Mapping::new();
        when.insert(text("type"), text(&c.incident_type));
        if !c.service.is_empty() {
            when.insert(text("service"), text(&c.service));
        }
        let params = c.params.clone().unwrap_or_else(|| json!({}));
        let mut action = Mapping::new();
        action.insert(text("runbook"), text(&c.runbook));
        action.insert(
            text("params"),
            serde_yaml::to_value(&params).unwrap_or(Y::Null),
        );
        let on = if c.service.is_empty() {
            String::new()
        } else {
            format!(" on {}", c.service)
        };
        let mut rule = Mapping::new();
        rule.insert(text("id"), text(&c.id));
        rule.insert(
            text("summary"),
            text(&format!(
                "Learned from L2: {}{on} → {} ({} successful, none failed)",
                c.incident_type, c.runbook, c.successes
            )),
        );
        rule.insert(text("match"), Y::Mapping(when));
        rule.insert(text("action"), Y::Mapping(action));
        let mut doc = Mapping::new();
        doc.insert(text("rules"), Y::Sequence(vec![Y::Mapping(rule)]));
        let body = serde_yaml::to_string(&doc).unwrap_or_default();
        format!(
            "# Promoted by the runwarden flywheel: {} successful L2 resolution(s) of {}{on}\n\
             # and none failed. `runwarden flywheel candidates --all` shows its history.\n{body}",
            c.successes, c.incident_type,
        )
    }

    /// Propose (`confirm` false) or promote (`confirm` true) candidate `id` of `caller`'s
    /// tenant: the rule as YAML, compiled, and replayed against the stored incidents;
    /// when confirmed, written to `DATA_DIR/rules/ID.yaml`, deployed, and recorded.
    pub async fn flywheel_promote(
        &self,
        caller: &Caller,
        id: &str,
        confirm: Option<&str>,
    ) -> Result<Promotion> {
        let tenant = &caller.tenant;
        let _one_at_a_time = self.promoting.lock().await;
        let candidate = self
            .flywheel_candidates(tenant)
            .await?
            .into_iter()
            .find(|c| c.id == id)
            .ok_or_else(|| {
                ControlError::NotFound(format!(
                    "no flywheel candidate {id:?} for tenant {tenant}: list them with \
                     `runwarden flywheel candidates`"
                ))
            })?;
        if candidate.state != "candidate" {
            return Err(ControlError::Conflict(format!(
                "{id} is {}: {}",
                candidate.state, candidate.why
            )));
        }
        let yaml = Self::rule_yaml(&candidate);
        let (rt, runbooks, file, text) = (
            self.runtime.clone(),
            self.runbooks.clone(),
            format!("{id}.yaml"),
            yaml.clone(),
        );
        let set = blocking(move || compile_rules(&rt, &runbooks, &file, &text))
            .await?
            .map_err(|e| ControlError::Conflict(format!("the rule does not compile: {e}")))?;
        let replay = self.replay(tenant, &set, &candidate.runbook).await?;
        let mut promotion = Promotion {
            candidate,
            yaml,
            rule_sha256: set.sha256().to_string(),
            replay,
            deployed: false,
            path: None,
            evidence_index: None,
            distributed: None,
            deployment: None,
        };
        let Some(reviewed) = confirm else {
            return Ok(promotion);
        };
        // What a human confirms is what was shown: the candidate may have changed since.
        if reviewed != promotion.rule_sha256 {
            return Err(ControlError::Conflict(format!(
                "{id} changed since it was reviewed (its rule is now {}, not {reviewed}): \
                 review it again",
                promotion.rule_sha256
            )));
        }
        let dir = tenant_rules_dir(&self.promoted_dir, tenant)?;
        let path = dir.join(format!("{id}.yaml"));
        // The record first: a rule never decides anything without its signed promotion.
        let c = &promotion.candidate;
        let by = format!(
            "token {} ({} scope, tenant {tenant})",
            caller.token_id,
            caller.scope.as_str()
        );
        let on = if c.service.is_empty() {
            String::new()
        } else {
            format!(" on {}", c.service)
        };
        let summary = format!(
            "flywheel: promoted {id} for tenant {tenant} ({}{on} → {}) after {} successful L2 \
             resolutions; replay matched {} of {} stored incidents ({} resolved the same way then)",
            c.incident_type,
            c.runbook,
            c.successes,
            promotion.replay.matched,
            promotion.replay.incidents,
            promotion.replay.agreed
        );
        let now = now_ms();
        let rule_name = format!("rule:{id}");
        let statement = evrec::decision_statement(
            Subject {
                name: &rule_name,
                version: "flywheel",
                sha256: set.sha256(),
            },
            &self.key,
            // A rule is the tenant's: its record names the tenant's first host.
            &self
                .hosts_of(tenant)
                .first()
                .map(|h| h.id().to_string())
                .unwrap_or_default(),
            EvContext {
                tenant,
                provenance: ev::Provenance::L3 { approver: by },
                incident_id: None,
                guardrails: None,
            },
            "promoted",
            &summary,
            json!({
                "rule": promotion.yaml,
                "history": c.history.iter().map(|h| &h.incident_id).collect::<Vec<_>>(),
                "replay": {
                    "incidents": promotion.replay.incidents,
                    "matched": promotion.replay.matched,
                    "agreed": promotion.replay.agreed,
                    "differed": promotion.replay.differed,
                },
            }),
            now as u64,
        );
        let invocation = statement.predicate.invocation_id.clone();
        let index = self
            .append(&statement, &invocation, &rule_name, "promoted", now)
            .await?;
        // Then the file (so it loads at the next start), off the async workers; then the
        // rule goes live, for this tenant's incidents only.
        let (d, p, bytes) = (
            dir.clone(),
            path.clone(),
            promotion.yaml.clone().into_bytes(),
        );
        blocking(move || write_atomically(&d, &p, &bytes))
            .await?
            .map_err(|e| ControlError::Setup(format!("writing {}: {e}", path.display())))?;
        self.rule_sets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Scoped {
                tenant: Some(tenant.to_string()),
                set: set.clone(),
            });
        promotion.deployed = true;
        promotion.path = Some(path.display().to_string());
        promotion.evidence_index = Some(index);
        promotion.candidate.state = "promoted".into();
        promotion.candidate.why = "deployed as an L1 rule".into();
        // Live here; then to the tenant's hosts, through the same path as any rule set.
        match self.distribute_promoted(caller, &dir).await {
            Ok((note, deployment)) => {
                promotion.distributed = Some(note);
                promotion.deployment = deployment;
            }
            Err(e) => promotion.distributed = Some(format!("not deployed to hosts: {e}")),
        }
        Ok(promotion)
    }

    /// Sign the rule sets of promoted rules with `key` from now on (once; later calls
    /// change nothing): without one, promotions stay at the control plane.
    pub fn set_flywheel_publisher(&self, key: ev::SigningKey) {
        let _ = self.flywheel_publisher.set(key);
    }

    /// The key promotions are signed with, if any.
    pub fn flywheel_publisher(&self) -> Option<ev::VerifyingKey> {
        self.flywheel_publisher.get().map(|k| k.verifying_key())
    }

    /// Publish every rule promoted for `caller`'s tenant (the files in `dir`, in order)
    /// as the rule set [`FLYWHEEL_RULE_SET`], signed by the flywheel's publisher key, then
    /// deploy it to all the tenant's hosts. The tenant's trust policy (and each host's)
    /// decides whether that key may ship it, as for any publisher. What happened, in
    /// words, and the deployment's id.
    async fn distribute_promoted(
        &self,
        caller: &Caller,
        dir: &Path,
    ) -> Result<(String, Option<String>)> {
        let Some(key) = self.flywheel_publisher.get() else {
            return Ok((
                "live at the control plane only: it has no flywheel publisher key".into(),
                None,
            ));
        };
        let d = dir.to_path_buf();
        let files = blocking(move || promoted_files(&d))
            .await?
            .map_err(|e| ControlError::Setup(format!("reading {}: {e}", dir.display())))?;
        let mut sources = Vec::new();
        for f in &files {
            let text = std::fs::read_to_string(f)
                .map_err(|e| ControlError::Setup(format!("reading {}: {e}", f.display())))?;
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            sources.push((name, text));
        }
        let (rt, runbooks) = (self.runtime.clone(), self.runbooks.clone());
        let loaded = blocking(move || {
            let bytes = rule_component(&runbooks, &sources)?;
            let set = rt.load_rules(&bytes).map_err(|e| e.to_string())?;
            Ok::<_, String>((bytes, set))
        })
        .await?;
        let (bytes, set) = loaded.map_err(|e| {
            ControlError::Conflict(format!("the promoted rules do not compile together: {e}"))
        })?;
        // Versions only grow: one past the latest published (by any control plane).
        let latest = self
            .store
            .releases(&caller.tenant, Some(FLYWHEEL_RULE_SET))
            .await?
            .iter()
            .filter_map(|r| r.version.strip_prefix("1.0.")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        let version = format!("1.0.{}", latest + 1);
        let release = ev::Release::of_rules(
            FLYWHEEL_RULE_SET,
            &version,
            set.sha256(),
            set.manifest_json(),
        );
        let envelope = release.sign(key).to_json();
        if let Err(e) = self.publish(caller, &bytes, &envelope).await {
            return Ok((
                format!(
                    "live at the control plane only: publishing it as rule set {FLYWHEEL_RULE_SET} {version} was refused ({e}); trust the flywheel's key (`runwarden flywheel key`) for it with rules = true"
                ),
                None,
            ));
        }
        let deployed = self
            .deploy(
                caller,
                runwarden_proto::DeployRequest {
                    name: FLYWHEEL_RULE_SET.into(),
                    version: version.clone(),
                    hosts: "*".into(),
                    rollback: false,
                    canary_percent: None,
                    soak_secs: None,
                    max_failure_rate: None,
                },
            )
            .await;
        Ok(match deployed {
            Ok(d) => (
                format!(
                    "published as rule set {FLYWHEEL_RULE_SET} {version} (sha256 {}) and deployed to the tenant's hosts (deployment {})",
                    set.sha256(),
                    d.id
                ),
                Some(d.id),
            ),
            Err(e) => (
                format!(
                    "published as rule set {FLYWHEEL_RULE_SET} {version} (sha256 {}); not deployed to hosts: {e}",
                    set.sha256()
                ),
                None,
            ),
        })
    }

    /// Evaluate `set` against `tenant`'s stored incidents.
    async fn replay(&self, tenant: &str, set: &Arc<RuleSet>, runbook: &str) -> Result<Replay> {
        let records = self.incidents(tenant, None, REPLAY).await?;
        let inputs: Vec<_> = records
            .iter()
            .map(|r| {
                let labels = self
                    .hosts
                    .owned(tenant, &r.incident.host)
                    .map(|h| h.labels.clone())
                    .unwrap_or_default();
                crate::incident::rule_input(&r.incident, &r.id, &labels, &r.received_at)
            })
            .collect();
        let (rt, set) = (self.runtime.clone(), set.clone());
        let decisions = blocking(move || {
            inputs
                .iter()
                .map(|i| rt.evaluate(&set, i).ok().flatten())
                .collect::<Vec<_>>()
        })
        .await?;
        let mut replay = Replay {
            incidents: records.len(),
            matched: 0,
            agreed: 0,
            differed: 0,
            matches: Vec::new(),
        };
        for (rec, d) in records.iter().zip(decisions) {
            let Some(d) = d else { continue };
            replay.matched += 1;
            let same = rec.decision.as_ref().is_some_and(|x| x.tier == Tier::L2)
                && rec.runs.first().is_some_and(|r| r.runbook == runbook)
                && matches!(rec.status, IncidentStatus::Healed | IncidentStatus::NoOp);
            if same {
                replay.agreed += 1;
            } else {
                replay.differed += 1;
            }
            if replay.matches.len() < LISTED {
                replay.matches.push(ReplayMatch {
                    incident_id: rec.id.clone(),
                    received_at: rec.received_at.clone(),
                    status: rec.status,
                    tier: rec.tier,
                    would_run: d
                        .actions
                        .iter()
                        .map(|a| ActionRecord {
                            runbook: a.runbook.clone(),
                            params: serde_json::from_str(&a.params).unwrap_or(Value::Null),
                        })
                        .collect(),
                });
            }
        }
        Ok(replay)
    }
}

/// Write `bytes` to `path` through a temporary file in `dir` and a rename: a reader
/// (the next start) sees the whole file or none.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("rule")
    ));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
