//! Deployments on the host: a signed [`DeployJob`] loads one component, checked against
//! this host's own trust policy, compiled, kept on disk and swapped in whole — runs in
//! flight finish on the component they started with; new runs use the new one. Every
//! swap and every refusal is a signed record in the host's log, under the job's id as its
//! invocation id: a job delivered again is answered from that record, never done twice.
//!
//! On disk (`DATA_DIR/components`): `SHA.wasm` and `SHA.release.json` per component
//! (content-addressed, written before anything points at them) and `NAME.deployed`
//! holding the sha256 deployed under NAME (replaced atomically: the pointer is the
//! commit). At start each pointed-to component is admitted again; one that no longer
//! passes (the trust policy changed, a file was altered) is refused and recorded.

use crate::components::{AdmittedDeployable, Deployable, admit_deployable};
use crate::executor::{AgentError, ComponentRecord, Executor};
use base64::Engine;
use runwarden_evidence as ev;
use runwarden_proto::bus::{
    DEPLOY_PAYLOAD_TYPE, DeployAction, DeployJob, DeployOutcome, LogRef,
    MAX_DEPLOYED_COMPONENT_BYTES, MAX_INLINE_COMPONENT_BYTES, RunReport,
};
use runwarden_runtime::Loaded;
use std::path::Path;
use std::sync::Arc;

/// Told of every swap: the name, and what runs under it now (nothing: the name is gone).
pub(crate) type OnSwap = Box<dyn Fn(&str, Option<Deployable>) + Send + Sync>;

/// How the record of a refused deployment begins its summary (the reason follows).
const REFUSED: &str = "deployment refused, nothing loaded: ";

/// Whether `envelope` says it carries a deployment (checked properly when opened).
pub(crate) fn is_deploy_job(envelope: &[u8]) -> bool {
    std::str::from_utf8(envelope)
        .ok()
        .and_then(|t| ev::Envelope::from_json(t).ok())
        .is_some_and(|e| e.payload_type == DEPLOY_PAYLOAD_TYPE)
}

/// Whether `name` can name a file of its own: a component name as manifests have them.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// What a record of a deployment step says, as the job's report.
fn outcome_of(statement: &ev::Statement, record: LogRef) -> DeployOutcome {
    let p = &statement.predicate;
    let text = |k: &str| p.params[k].as_str().unwrap_or_default().to_string();
    DeployOutcome {
        name: statement
            .subject
            .first()
            .map(|s| s.name.clone())
            .unwrap_or_default(),
        version: p.runbook_version.clone(),
        sha256: statement
            .subject
            .first()
            .and_then(|s| s.digest.get("sha256").cloned())
            .unwrap_or_default(),
        publisher: p.publisher.clone().unwrap_or_default(),
        previous: text("previous"),
        record,
    }
}

impl Executor {
    /// Be told of every swap from now on (the host's own control plane keeps its catalog
    /// in step with what runs here).
    pub fn on_swap(&self, f: impl Fn(&str, Option<Deployable>) + Send + Sync + 'static) {
        self.on_swap
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(f));
    }

    /// The components deployed here (not built in nor from the runbooks directory).
    pub fn deployed(&self) -> Vec<Arc<Loaded>> {
        let runbooks = self.runbooks.read().unwrap_or_else(|e| e.into_inner());
        runbooks
            .iter()
            .filter(|(name, l)| {
                self.base
                    .get(*name)
                    .is_none_or(|b| b.sha256() != l.sha256())
            })
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// The L1 rule sets deployed here: name, version (as released), the set; by name.
    pub fn deployed_rules(&self) -> Vec<(String, String, Arc<runwarden_runtime::RuleSet>)> {
        let sets = self.rule_sets.read().unwrap_or_else(|e| e.into_inner());
        let mut sets: Vec<_> = sets
            .iter()
            .map(|(n, (s, v))| (n.clone(), v.clone(), s.clone()))
            .collect();
        sets.sort_by(|a, b| a.0.cmp(&b.0));
        sets
    }

    /// What runs here by deployment (runbooks and rule sets): name → (sha256, version),
    /// a deployed runbook included when it is the very build the host has of its own.
    pub fn deployed_components(&self) -> std::collections::BTreeMap<String, (String, String)> {
        let deployed = self.deployed_now.read().unwrap_or_else(|e| e.into_inner());
        deployed
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// What runs under `name` now: its sha256 and whether it is a rule set.
    fn running(&self, name: &str) -> Option<(String, bool)> {
        let runbooks = self.runbooks.read().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = runbooks.get(name) {
            return Some((l.sha256().to_string(), false));
        }
        let sets = self.rule_sets.read().unwrap_or_else(|e| e.into_inner());
        sets.get(name).map(|(s, _)| (s.sha256().to_string(), true))
    }

    /// Run `now` under `name` (`None`: nothing deployed under it), released as `version`
    /// by `publisher`.
    fn swap(&self, name: &str, now: Option<Deployable>, version: &str, publisher: Option<String>) {
        {
            let mut runbooks = self.runbooks.write().unwrap_or_else(|e| e.into_inner());
            let mut sets = self.rule_sets.write().unwrap_or_else(|e| e.into_inner());
            if let (Some(c), Some(p)) = (&now, publisher.clone()) {
                self.publishers
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(c.sha256().to_string(), p);
            }
            // One name, one component: a runbook or a rule set.
            runbooks.remove(name);
            sets.remove(name);
            match &now {
                Some(Deployable::Runbook(l)) => {
                    runbooks.insert(name.to_string(), l.clone());
                }
                Some(Deployable::Rules(r)) => {
                    sets.insert(name.to_string(), (r.clone(), version.to_string()));
                }
                None => {}
            }
            // What runs by deployment (a release's publisher came with it), by name.
            let mut deployed = self.deployed_now.write().unwrap_or_else(|e| e.into_inner());
            match (&now, &publisher) {
                (Some(c), Some(_)) => {
                    deployed.insert(
                        name.to_string(),
                        (c.sha256().to_string(), version.to_string()),
                    );
                }
                _ => {
                    deployed.remove(name);
                }
            }
        }
        for f in self
            .on_swap
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            f(name, now.clone());
        }
    }

    /// Load what was deployed before this start (see the module docs); returns how many
    /// loaded. A component that no longer passes the trust policy is refused, recorded.
    pub async fn load_deployed(&self) -> Result<usize, AgentError> {
        let Some(dir) = self.components.clone() else {
            return Ok(0);
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(0);
        };
        let mut pointers: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "deployed"))
            .collect();
        pointers.sort();
        let mut loaded = 0;
        for pointer in pointers {
            let name = pointer
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let sha = std::fs::read_to_string(&pointer)
                .unwrap_or_default()
                .trim()
                .to_string();
            let source = pointer.display().to_string();
            if !safe_name(&name) || sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                self.refuse_component(&name, &sha, &source, "a malformed deployment pointer")
                    .await?;
                continue;
            }
            // The pointer is written before the record of the swap: a stop in between
            // leaves a pointer no record vouches for. That component is not loaded (its
            // job comes again and is carried out afresh); what the last record put in
            // place is, if its files are still here.
            let recorded = self.recorded_deployment(&name).await?;
            let sha = match recorded {
                Some(r) if r == sha => sha,
                recorded => {
                    let why = "no record of its deployment in this host's log (the agent \
                               stopped before it was signed): not loaded; its deployment \
                               job comes again";
                    self.refuse_component(&name, &sha, &source, why).await?;
                    let back = recorded.filter(|r| dir.join(format!("{r}.wasm")).is_file());
                    let undone = match &back {
                        Some(r) => ev::write_atomic(&pointer, r.as_bytes()).is_ok(),
                        None => std::fs::remove_file(&pointer).is_ok(),
                    };
                    match back {
                        Some(r) if undone => r,
                        _ => continue,
                    }
                }
            };
            let bytes = std::fs::read(dir.join(format!("{sha}.wasm")));
            let release = std::fs::read_to_string(dir.join(format!("{sha}.release.json")));
            let (bytes, release) = match (bytes, release) {
                (Ok(b), Ok(r)) => (b, r),
                (Err(e), _) | (_, Err(e)) => {
                    let why = format!("its deployed files are unreadable: {e}");
                    self.refuse_component(&name, &sha, &source, &why).await?;
                    continue;
                }
            };
            match self.admit_blocking(bytes, release).await? {
                Ok(a) if a.release.name == name => {
                    self.swap(
                        &name,
                        Some(a.component),
                        &a.release.version,
                        Some(a.publisher),
                    );
                    loaded += 1;
                }
                Ok(a) => {
                    let why = format!(
                        "the component deployed as {name} is named {}",
                        ev::escape_control(&a.release.name)
                    );
                    self.refuse_component(&name, &sha, &source, &why).await?;
                }
                Err(why) => self.refuse_component(&name, &sha, &source, &why).await?,
            }
        }
        Ok(loaded)
    }

    /// The sha256 that the latest signed swap of `name` in this host's log put in place
    /// (a `deployed` or `rolled-back` record of a deployment), if any.
    async fn recorded_deployment(&self, name: &str) -> Result<Option<String>, AgentError> {
        let mut latest: Option<ev::StoredRecord> = None;
        for status in ["deployed", "rolled-back"] {
            let filter = ev::Filter {
                runbook: Some(name.to_string()),
                status: Some(status.to_string()),
                ..Default::default()
            };
            for r in self.log().list(&filter).await? {
                if latest.as_ref().is_none_or(|l| l.index < r.index) {
                    latest = Some(r);
                }
            }
        }
        let Some(r) = latest else {
            return Ok(None);
        };
        let statement = ev::Envelope::from_json(&String::from_utf8_lossy(&r.envelope))
            .and_then(|e| ev::Statement::from_envelope(&e))?;
        if statement.predicate.params.get("deployment").is_none() {
            return Ok(None);
        }
        Ok(statement
            .subject
            .first()
            .and_then(|s| s.digest.get("sha256").cloned()))
    }

    /// Admit on a blocking thread (compiling is CPU work).
    async fn admit_blocking(
        &self,
        bytes: Vec<u8>,
        release: String,
    ) -> Result<Result<AdmittedDeployable, String>, AgentError> {
        let (rt, trust) = (self.runtime.clone(), self.trust.clone());
        tokio::task::spawn_blocking(move || admit_deployable(&rt, &bytes, &release, trust.as_ref()))
            .await
            .map_err(|e| AgentError::Worker(e.to_string()))
    }

    /// Carry out the signed deployment `envelope` (see the module docs).
    pub(crate) async fn deploy(
        &self,
        envelope: &[u8],
        now_ms: i64,
        blobs: Option<&dyn runwarden_bus::Blobs>,
    ) -> Result<RunReport, AgentError> {
        let job: DeployJob = match self.open_signed(envelope, DEPLOY_PAYLOAD_TYPE) {
            Ok(job) => job,
            Err(why) => return self.refuse(None, &why, now_ms).await,
        };
        // One deployment at a time: each reads what runs now and replaces it.
        let _one = self.deploying.lock().await;
        if let Some(r) = self.log().by_invocation(&job.job).await? {
            return self.answered(&job, r);
        }
        let checked = self
            .addressed(
                &job.tenant,
                &job.host,
                job.issued_at_ms,
                job.expires_at_ms,
                now_ms,
            )
            .and_then(|()| {
                uuid::Uuid::try_parse(&job.job)
                    .map(|_| ())
                    .map_err(|_| "the deployment's job id is not a UUID".to_string())
            })
            .and_then(|()| match safe_name(&job.name) {
                true => Ok(()),
                false => Err(format!(
                    "{:?} is not a component name",
                    ev::escape_control(&job.name)
                )),
            });
        if let Err(why) = checked {
            return self.refuse_deployment(&job, &why).await;
        }
        let running = self.running(&job.name);
        let previous = running.clone().map(|r| r.0).unwrap_or_default();
        let Some(dir) = self.components.clone() else {
            return self
                .refuse_deployment(&job, "this host keeps no deployed components")
                .await;
        };
        if job.action == DeployAction::Remove {
            let rules = running.is_some_and(|r| r.1);
            return self.remove(&job, &dir, previous, rules).await;
        }
        let bytes = match self.component_of(&job, blobs).await? {
            Ok(b) => b,
            Err(why) => return self.refuse_deployment(&job, &why).await,
        };
        if ev::component_sha256(&bytes) != job.sha256 {
            return self
                .refuse_deployment(
                    &job,
                    "the component's bytes are not the sha256 the job names",
                )
                .await;
        }
        let admitted = match self
            .admit_blocking(bytes.clone(), job.release.clone())
            .await?
        {
            Ok(a) => a,
            Err(why) => return self.refuse_deployment(&job, &why).await,
        };
        // One name, one kind: a rule set does not replace a runbook, nor the reverse.
        let is_rules = matches!(admitted.component, Deployable::Rules(_));
        if let Some((_, was_rules)) = running
            && was_rules != is_rules
        {
            let why = format!(
                "a {} runs here under the name {}; a {} cannot replace it",
                if was_rules { "rule set" } else { "runbook" },
                job.name,
                if is_rules { "rule set" } else { "runbook" },
            );
            return self.refuse_deployment(&job, &why).await;
        }
        if admitted.release.name != job.name || admitted.release.version != job.version {
            let why = format!(
                "the job names {} {}, its release {} {}",
                ev::escape_control(&job.name),
                ev::escape_control(&job.version),
                ev::escape_control(&admitted.release.name),
                ev::escape_control(&admitted.release.version)
            );
            return self.refuse_deployment(&job, &why).await;
        }
        // Bytes and release first, the pointer last: a crash leaves the old pointer.
        let kept = (|| -> std::io::Result<()> {
            ev::create_private_dir(&dir).map_err(std::io::Error::other)?;
            ev::write_atomic(&dir.join(format!("{}.wasm", job.sha256)), &bytes)
                .map_err(std::io::Error::other)?;
            ev::write_atomic(
                &dir.join(format!("{}.release.json", job.sha256)),
                job.release.as_bytes(),
            )
            .map_err(std::io::Error::other)?;
            ev::write_atomic(
                &dir.join(format!("{}.deployed", job.name)),
                job.sha256.as_bytes(),
            )
            .map_err(std::io::Error::other)
        })();
        if let Err(e) = kept {
            let why = format!("keeping it on disk failed: {e}");
            return self.refuse_deployment(&job, &why).await;
        }
        let publisher = admitted.publisher.clone();
        let status = match job.action {
            DeployAction::Rollback => "rolled-back",
            _ => "deployed",
        };
        let record = self
            .record_component(ComponentRecord {
                invocation_id: job.job.clone(),
                name: &job.name,
                sha256: &job.sha256,
                status,
                summary: format!(
                    "{} {} {} (publisher {}){}",
                    status,
                    job.name,
                    job.version,
                    &publisher[..16.min(publisher.len())],
                    match previous.is_empty() {
                        true => String::new(),
                        false => format!(", replacing {}", &previous[..12.min(previous.len())]),
                    }
                ),
                provenance: ev::Provenance::Manual {
                    operator: Some(job.requested_by.clone()),
                },
                params: serde_json::json!({
                    "deployment": job.deployment, "action": job.action.as_str(),
                    "previous": previous,
                }),
                version: &job.version,
                publisher: Some(publisher.clone()),
            })
            .await?;
        self.swap(
            &job.name,
            Some(admitted.component),
            &job.version,
            Some(publisher.clone()),
        );
        Ok(self.report(
            &job,
            None,
            Some(DeployOutcome {
                name: job.name.clone(),
                version: job.version.clone(),
                sha256: job.sha256.clone(),
                publisher,
                previous,
                record,
            }),
        ))
    }

    /// The component `job` deploys: inline, or fetched from `blobs` by reference; or why
    /// the job is refused. Only its size is checked here (before anything is fetched);
    /// its sha256 by the caller. A store that cannot answer now is an error: the job is
    /// given back to come again, not refused.
    async fn component_of(
        &self,
        job: &DeployJob,
        blobs: Option<&dyn runwarden_bus::Blobs>,
    ) -> Result<Result<Vec<u8>, String>, AgentError> {
        if job.size == 0 {
            if job.component.len() > MAX_INLINE_COMPONENT_BYTES.div_ceil(3) * 4 {
                return Ok(Err(format!(
                    "an inline component of {} base64 characters: at most {MAX_INLINE_COMPONENT_BYTES} bytes travel inline",
                    job.component.len()
                )));
            }
            return Ok(base64::engine::general_purpose::STANDARD
                .decode(&job.component)
                .map_err(|e| format!("the component is not base64: {e}")));
        }
        if !job.component.is_empty() {
            return Ok(Err(
                "the job both carries a component and names one by reference".into(),
            ));
        }
        if job.size > MAX_DEPLOYED_COMPONENT_BYTES as u64 {
            return Ok(Err(format!(
                "a component of {} bytes: this host takes at most {MAX_DEPLOYED_COMPONENT_BYTES}",
                job.size
            )));
        }
        let Some(blobs) = blobs else {
            return Ok(Err(
                "the job names its component by reference, and this link carries none".into(),
            ));
        };
        let bytes = blobs
            .fetch(&job.sha256, job.size)
            .await
            .map_err(|e| AgentError::Fetch(format!("component {}: {e}", job.sha256)))?;
        if bytes.len() as u64 != job.size {
            return Ok(Err(format!(
                "the component fetched is {} bytes, the job says {}",
                bytes.len(),
                job.size
            )));
        }
        Ok(Ok(bytes))
    }

    /// Drop the deployed version of `job.name`: the host's own (built in, runbooks
    /// directory) runs again, if it has one.
    async fn remove(
        &self,
        job: &DeployJob,
        dir: &Path,
        previous: String,
        rules: bool,
    ) -> Result<RunReport, AgentError> {
        let pointer = dir.join(format!("{}.deployed", job.name));
        if let Err(e) = std::fs::remove_file(&pointer)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            let why = format!("removing {}: {e}", pointer.display());
            return self.refuse_deployment(job, &why).await;
        }
        // A rule set has no version of the host's own to go back to.
        let base = match rules {
            true => None,
            false => self.base.get(&job.name).cloned(),
        };
        let now_sha = base
            .as_ref()
            .map(|l| l.sha256().to_string())
            .unwrap_or_default();
        let version = base
            .as_ref()
            .map(|l| l.manifest().version.clone())
            .unwrap_or_default();
        let record = self
            .record_component(ComponentRecord {
                invocation_id: job.job.clone(),
                name: &job.name,
                sha256: &now_sha,
                status: "rolled-back",
                summary: match &base {
                    Some(_) => format!(
                        "rolled back {} to the host's own version {version}",
                        job.name
                    ),
                    None => format!("removed {}: the host has no version of its own", job.name),
                },
                provenance: ev::Provenance::Manual {
                    operator: Some(job.requested_by.clone()),
                },
                params: serde_json::json!({
                    "deployment": job.deployment, "action": job.action.as_str(),
                    "previous": previous,
                }),
                version: &version,
                publisher: None,
            })
            .await?;
        self.swap(&job.name, base.map(Deployable::Runbook), &version, None);
        Ok(self.report(
            job,
            None,
            Some(DeployOutcome {
                name: job.name.clone(),
                version,
                sha256: now_sha,
                publisher: String::new(),
                previous,
                record,
            }),
        ))
    }

    /// Refuse a deployment: recorded under the job's id, nothing loaded.
    async fn refuse_deployment(&self, job: &DeployJob, why: &str) -> Result<RunReport, AgentError> {
        self.record_component(ComponentRecord {
            invocation_id: job.job.clone(),
            name: &job.name,
            sha256: &job.sha256,
            status: "refused",
            summary: format!("{REFUSED}{why}"),
            provenance: ev::Provenance::Manual {
                operator: Some(job.requested_by.clone()),
            },
            params: serde_json::json!({
                "deployment": job.deployment, "action": job.action.as_str(),
            }),
            version: &job.version,
            publisher: None,
        })
        .await?;
        Ok(self.report(job, Some(why.to_string()), None))
    }

    /// The answer to a job already carried out, from its record.
    fn answered(&self, job: &DeployJob, r: ev::StoredRecord) -> Result<RunReport, AgentError> {
        let statement = ev::Envelope::from_json(&String::from_utf8_lossy(&r.envelope))
            .and_then(|e| ev::Statement::from_envelope(&e))?;
        let record = LogRef {
            origin: self.origin().to_string(),
            index: r.index,
            leaf_hash: ev::hash_hex(&r.leaf_hash),
        };
        Ok(match r.status.as_str() {
            "refused" => {
                let summary = statement.predicate.outcome["summary"]
                    .as_str()
                    .unwrap_or("refused");
                let why = summary.strip_prefix(REFUSED).unwrap_or(summary);
                self.report(job, Some(why.to_string()), None)
            }
            "deployed" | "rolled-back" => {
                self.report(job, None, Some(outcome_of(&statement, record)))
            }
            other => self.report(
                job,
                Some(format!(
                    "the job's id is that of a record of another kind ({}) in this host's log",
                    ev::escape_control(other)
                )),
                None,
            ),
        })
    }

    fn report(
        &self,
        job: &DeployJob,
        refused: Option<String>,
        deployed: Option<DeployOutcome>,
    ) -> RunReport {
        RunReport {
            job: job.job.clone(),
            incident: job.deployment.clone(),
            host: self.host().to_string(),
            runs: Vec::new(),
            refused,
            deployed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::safe_name;

    #[test]
    fn names_that_could_leave_the_directory_are_not_names() {
        assert!(safe_name("restart-service"));
        assert!(safe_name("rotate_logs2"));
        for bad in ["", "../x", "a/b", "A", "x.deployed", &"a".repeat(65), "a b"] {
            assert!(!safe_name(bad), "{bad}");
        }
    }
}
