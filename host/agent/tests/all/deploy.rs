//! Deployments the agent cannot trust. A host trusts one publisher for `trivial`; each
//! test sends it a deployment job that is wrong in one way and checks what an operator
//! and an auditor rely on: the report says what was wrong, nothing was loaded or kept on
//! disk (what ran before still runs, its pointer untouched), and the refusal is one
//! record in the host's log, signed by the host key, under the job's id.

use base64::Engine;
use runwarden_agent::{AgentConfig, AgentError, Executor, now_ms};
use runwarden_bus::BusError;
use runwarden_evidence as ev;
use runwarden_proto::RunStatus;
use runwarden_proto::bus::{
    DEPLOY_PAYLOAD_TYPE, DeployAction, DeployJob, JOB_PAYLOAD_TYPE, MAX_DEPLOYED_COMPONENT_BYTES,
    MAX_INLINE_COMPONENT_BYTES, PlannedRun, Provenance, RunJob, RunReport,
};
use runwarden_runtime::{Policy, Runtime, RuntimeConfig};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The trust policy of most tests: the publisher may ship `trivial`, at low risk.
const TRUSTS_TRIVIAL: &str =
    "[[publishers]]\nkey = \"{key}\"\ncomponents = [\"trivial\"]\nmax_risk = \"low\"\n";

/// A component as its publisher released it.
struct Published {
    bytes: Vec<u8>,
    name: String,
    version: String,
    sha256: String,
    /// The signed release, DSSE JSON.
    release: String,
}

struct Host {
    dir: tempfile::TempDir,
    rt: Arc<Runtime>,
    agent: Executor,
    log: ev::Store,
    host_key: ev::VerifyingKey,
    control: ev::SigningKey,
    publisher: ev::SigningKey,
    components: PathBuf,
    /// What the agent was started with, to start it again.
    config: AgentConfig,
}

/// What a refusal must leave as it was.
struct Before {
    log_size: u64,
    deployed: Vec<(String, String)>,
    files: BTreeMap<String, Vec<u8>>,
}

/// A host `srv-1` of tenant `clinic-a` with a components directory and the trust policy
/// `trust` (`{key}` stands for the publisher's key), no runbooks of its own.
async fn host_trusting(trust: &str) -> Host {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let rt = Arc::new(
        Runtime::new(RuntimeConfig {
            data_dir: root.join("data"),
        })
        .unwrap(),
    );
    let policy = Arc::new(Policy::parse("host_id = \"srv-1\"\n").unwrap());
    let publisher = ev::SigningKey::generate("publisher").unwrap();
    let trust: ev::TrustPolicy =
        toml::from_str(&trust.replace("{key}", &publisher.verifying_key().to_text())).unwrap();
    let log = ev::Store::open(&root.join("host.db").display().to_string())
        .await
        .unwrap();
    let key = ev::SigningKey::generate("srv-1").unwrap();
    let host_key = key.verifying_key();
    let control = ev::SigningKey::generate("runwarden-control").unwrap();
    let components = root.join("components");
    let config = AgentConfig {
        tenant: "clinic-a".into(),
        policy,
        runbooks: Vec::new(),
        publishers: Default::default(),
        trust: Some(trust),
        components: Some(components.clone()),
        key,
        control_keys: vec![control.verifying_key()],
        log: log.clone(),
        journal: root.join("agent-journal.db"),
    };
    let agent = Executor::open(rt.clone(), config.clone()).await.unwrap();
    Host {
        dir,
        rt,
        agent,
        log,
        host_key,
        control,
        publisher,
        components,
        config,
    }
}

async fn host() -> Host {
    host_trusting(TRUSTS_TRIVIAL).await
}

impl Host {
    /// The release a publisher would sign for `bytes`, as the benchmark makes it.
    fn release_of(&self, bytes: &[u8]) -> ev::Release {
        let l = self.rt.load(bytes).unwrap();
        ev::Release::of_runbook(l.manifest_json(), l.sha256())
    }

    /// `bytes` released as `release` says, signed with `key`.
    fn publish_as(&self, bytes: &[u8], release: &ev::Release, key: &ev::SigningKey) -> Published {
        Published {
            bytes: bytes.to_vec(),
            name: release.name.clone(),
            version: release.version.clone(),
            sha256: ev::component_sha256(bytes),
            release: release.sign(key).to_json(),
        }
    }

    /// The test guest `guest`, released by the trusted publisher.
    fn publish(&self, guest: &str) -> Published {
        let bytes = runwarden_test_artifacts::bytes(guest);
        self.publish_as(&bytes, &self.release_of(&bytes), &self.publisher)
    }

    /// A deployment of `c` carried inline, as the control plane would send it.
    fn job(&self, c: &Published) -> DeployJob {
        let now = now_ms();
        DeployJob {
            job: uuid(),
            deployment: uuid(),
            tenant: "clinic-a".into(),
            host: "srv-1".into(),
            requested_by: "token-ops".into(),
            action: DeployAction::Deploy,
            name: c.name.clone(),
            version: c.version.clone(),
            sha256: c.sha256.clone(),
            release: c.release.clone(),
            component: base64::engine::general_purpose::STANDARD.encode(&c.bytes),
            size: 0,
            issued_at_ms: now,
            expires_at_ms: now + 60_000,
        }
    }

    /// The same deployment naming `c` by reference: the agent fetches its bytes.
    fn by_reference(&self, c: &Published) -> DeployJob {
        DeployJob {
            component: String::new(),
            size: c.bytes.len() as u64,
            ..self.job(c)
        }
    }

    async fn send_signed(&self, job: &DeployJob, key: &ev::SigningKey) -> RunReport {
        self.agent
            .execute(&signed(job, key), now_ms())
            .await
            .unwrap()
    }

    async fn send(&self, job: &DeployJob) -> RunReport {
        self.send_signed(job, &self.control).await
    }

    async fn try_send_with(
        &self,
        job: &DeployJob,
        blobs: &MemBlobs,
    ) -> Result<RunReport, AgentError> {
        self.agent
            .execute_with(&signed(job, &self.control), now_ms(), Some(blobs))
            .await
    }

    async fn send_with(&self, job: &DeployJob, blobs: &MemBlobs) -> RunReport {
        self.try_send_with(job, blobs).await.unwrap()
    }

    /// The statement of record `index`, checked against the host key.
    async fn record(&self, index: u64) -> ev::Statement {
        let r = self.log.get(index).await.unwrap().unwrap();
        let env = ev::Envelope::from_json(std::str::from_utf8(&r.envelope).unwrap()).unwrap();
        env.verify(std::slice::from_ref(&self.host_key))
            .expect("signed by the host key");
        ev::Statement::from_envelope(&env).unwrap()
    }

    /// What runs as deployed now: (name, sha256), sorted.
    fn deployed(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .agent
            .deployed()
            .iter()
            .map(|l| (l.manifest().name.clone(), l.sha256().to_string()))
            .collect();
        v.sort();
        v
    }

    /// Every file in the components directory with its bytes (none yet: empty).
    fn files(&self) -> BTreeMap<String, Vec<u8>> {
        let Ok(entries) = std::fs::read_dir(&self.components) else {
            return BTreeMap::new();
        };
        entries
            .map(|e| e.unwrap().path())
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&p).unwrap())
            })
            .collect()
    }

    async fn before(&self) -> Before {
        Before {
            log_size: self.log.size().await.unwrap(),
            deployed: self.deployed(),
            files: self.files(),
        }
    }

    /// The refusal of `job` as an operator and an auditor see it: `report` says why (in
    /// words containing `expect`), nothing loaded or kept, one refusal record under the
    /// job's id, signed by the host and naming who asked.
    async fn assert_refused(
        &self,
        what: &str,
        before: &Before,
        job: &DeployJob,
        report: &RunReport,
        expect: &str,
    ) {
        let why = report
            .refused
            .as_deref()
            .unwrap_or_else(|| panic!("{what}: not refused: {report:?}"));
        assert!(why.contains(expect), "{what}: {why:?} lacks {expect:?}");
        assert_eq!(report.deployed, None, "{what}");
        assert_eq!(report.job, job.job, "{what}");
        assert_eq!(
            self.deployed(),
            before.deployed,
            "{what}: what runs is unchanged"
        );
        assert_eq!(
            self.files(),
            before.files,
            "{what}: nothing kept, no pointer moved"
        );
        assert_eq!(
            self.log.size().await.unwrap(),
            before.log_size + 1,
            "{what}: one refusal record"
        );
        let st = self.record(before.log_size).await;
        assert_eq!(st.predicate.outcome["status"], "refused", "{what}");
        assert_eq!(st.predicate.invocation_id, job.job, "{what}");
        let summary = st.predicate.outcome["summary"].as_str().unwrap();
        assert!(summary.contains(expect), "{what}: recorded {summary:?}");
        assert!(
            matches!(&st.predicate.provenance,
                ev::Provenance::Manual { operator: Some(o) } if *o == job.requested_by),
            "{what}: the record names who asked"
        );
        let stored = self.log.by_invocation(&job.job).await.unwrap().unwrap();
        assert_eq!(stored.index, before.log_size, "{what}");
        assert_eq!(stored.status, "refused", "{what}");
    }

    /// A job running `trivial` at `sha256` (its params are ignored).
    async fn run_trivial(&self, sha256: &str) -> RunReport {
        let now = now_ms();
        let job = RunJob {
            job: uuid(),
            incident: uuid(),
            tenant: "clinic-a".into(),
            host: "srv-1".into(),
            runs: vec![PlannedRun {
                invocation: uuid(),
                runbook: "trivial".into(),
                sha256: sha256.into(),
                params: serde_json::json!({}),
            }],
            dry_run: false,
            provenance: Provenance::L1 {
                rule_id: "deploy-test".into(),
                rule_sha256: "00".repeat(32),
            },
            verdicts: Vec::new(),
            issued_at_ms: now,
            expires_at_ms: now + 60_000,
        };
        let env = ev::Envelope::sign(
            JOB_PAYLOAD_TYPE,
            &serde_json::to_vec(&job).unwrap(),
            &self.control,
        )
        .to_json();
        self.agent.execute(env.as_bytes(), now_ms()).await.unwrap()
    }
}

fn signed(job: &DeployJob, key: &ev::SigningKey) -> Vec<u8> {
    let payload = serde_json::to_vec(job).unwrap();
    ev::Envelope::sign(DEPLOY_PAYLOAD_TYPE, &payload, key)
        .to_json()
        .into_bytes()
}

fn uuid() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A transport's blob store, in memory: what it holds under each sha256 (whatever the
/// bytes are: a store is trusted with nothing), and every fetch asked of it.
#[derive(Default)]
struct MemBlobs {
    held: HashMap<String, Vec<u8>>,
    fetches: AtomicUsize,
}

impl MemBlobs {
    fn holding(sha256: &str, bytes: &[u8]) -> MemBlobs {
        MemBlobs {
            held: HashMap::from([(sha256.to_string(), bytes.to_vec())]),
            ..MemBlobs::default()
        }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl runwarden_bus::Blobs for MemBlobs {
    async fn fetch(&self, sha256: &str, _size: u64) -> Result<Vec<u8>, BusError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        self.held
            .get(sha256)
            .cloned()
            .ok_or_else(|| BusError::Transport(format!("no blob {sha256}")))
    }
}

#[tokio::test]
async fn a_deployment_the_agent_cannot_trust_is_refused_recorded_and_nothing_loads() {
    let h = host().await;
    let v1 = h.publish("trivial");
    let v2 = h.publish("trivial-next");
    let stranger = ev::SigningKey::generate("publisher").unwrap();
    let untrusted = h.publish_as(&v2.bytes, &h.release_of(&v2.bytes), &stranger);
    // A release that lies about the component: signed over its bytes, another version.
    let mut lie = h.release_of(&v2.bytes);
    lie.version = "9.9.9".into();
    let lying = h.publish_as(&v2.bytes, &lie, &h.publisher);
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let now = now_ms();
    let cases: Vec<(&str, DeployJob, &str)> = vec![
        (
            "another host's",
            DeployJob {
                host: "srv-2".into(),
                ..h.job(&v2)
            },
            "for host \"srv-2\"",
        ),
        (
            "another tenant's",
            DeployJob {
                tenant: "clinic-b".into(),
                ..h.job(&v2)
            },
            "for tenant \"clinic-b\"",
        ),
        (
            "expired",
            DeployJob {
                issued_at_ms: now - 120_000,
                expires_at_ms: now - 60_000,
                ..h.job(&v2)
            },
            "expired",
        ),
        (
            "issued an hour in the host's future",
            DeployJob {
                issued_at_ms: now + 3_600_000,
                expires_at_ms: now + 3_660_000,
                ..h.job(&v2)
            },
            "future",
        ),
        (
            "bytes that are not the sha256 named",
            DeployJob {
                component: b64(&v1.bytes),
                ..h.job(&v2)
            },
            "not the sha256 the job names",
        ),
        (
            "a component that is not base64",
            DeployJob {
                component: "not base64!".into(),
                ..h.job(&v2)
            },
            "not base64",
        ),
        (
            "an inline component beyond the inline limit",
            DeployJob {
                component: "A".repeat(MAX_INLINE_COMPONENT_BYTES.div_ceil(3) * 4 + 4),
                ..h.job(&v2)
            },
            "travel inline",
        ),
        (
            "bytes that are not a component, signed as a runbook",
            DeployJob {
                component: b64(b"not wasm"),
                sha256: ev::component_sha256(b"not wasm"),
                release: h
                    .publish_as(
                        b"not wasm",
                        &ev::Release {
                            sha256: ev::component_sha256(b"not wasm"),
                            ..h.release_of(&v2.bytes)
                        },
                        &h.publisher,
                    )
                    .release,
                ..h.job(&v2)
            },
            "it does not load as a runbook",
        ),
        (
            "a release that is not a release",
            DeployJob {
                release: "{}".into(),
                ..h.job(&v2)
            },
            "not a runwarden release",
        ),
        (
            "a release by an untrusted publisher",
            h.job(&untrusted),
            "not signed by a trusted publisher",
        ),
        (
            "a release of another component",
            DeployJob {
                release: v1.release.clone(),
                ..h.job(&v2)
            },
            "it was altered, or it is another component",
        ),
        (
            "a release that lies about the component",
            h.job(&lying),
            "its release names trivial 9.9.9, but the component is trivial 0.2.0",
        ),
        (
            "a job naming another version than its release",
            DeployJob {
                version: "0.3.0".into(),
                ..h.job(&v2)
            },
            "the job names trivial 0.3.0, its release trivial 0.2.0",
        ),
        (
            "a job naming another component than its release",
            DeployJob {
                name: "restart-service".into(),
                ..h.job(&v2)
            },
            "the job names restart-service 0.2.0, its release trivial 0.2.0",
        ),
        (
            "a job id that is not a UUID",
            DeployJob {
                job: "job-1".into(),
                ..h.job(&v2)
            },
            "not a UUID",
        ),
        (
            "a name that leaves the directory",
            DeployJob {
                name: "../x".into(),
                ..h.job(&v2)
            },
            "is not a component name",
        ),
        (
            "a name that is a path",
            DeployJob {
                name: "/tmp/x".into(),
                ..h.job(&v2)
            },
            "is not a component name",
        ),
    ];
    for (what, job, expect) in cases {
        let before = h.before().await;
        let report = h.send(&job).await;
        h.assert_refused(what, &before, &job, &report, expect).await;
    }
    assert!(h.files().is_empty(), "nothing was ever kept");
    for outside in [h.dir.path().join("x.deployed"), "/tmp/x.deployed".into()] {
        assert!(!outside.exists(), "{}", outside.display());
    }
    // Removing by such a name does not reach the file it names either.
    let outside = h.dir.path().join("x.deployed");
    std::fs::write(&outside, &v1.sha256).unwrap();
    let remove = DeployJob {
        action: DeployAction::Remove,
        name: "../x".into(),
        version: String::new(),
        sha256: String::new(),
        release: String::new(),
        component: String::new(),
        ..h.job(&v2)
    };
    let before = h.before().await;
    let report = h.send(&remove).await;
    h.assert_refused(
        "a removal by such a name",
        &before,
        &remove,
        &report,
        "is not a component name",
    )
    .await;
    assert!(outside.exists(), "the file outside is still there");

    // The same host takes a good deployment: the refusals were about the jobs.
    let ok = h.send(&h.job(&v2)).await;
    assert_eq!(ok.refused, None, "{ok:?}");
}

/// A forged job is not the control plane's, so neither is its id: the refusal is
/// recorded under an id of the host's own, and the control plane's job of that id
/// still deploys when it comes.
#[tokio::test]
async fn a_forged_deployment_is_refused_without_taking_the_id_it_claims() {
    let h = host().await;
    let v2 = h.publish("trivial-next");
    let forger = ev::SigningKey::generate("runwarden-control").unwrap();
    let job = h.job(&v2);
    let before = h.before().await;
    let report = h.send_signed(&job, &forger).await;
    let why = report.refused.as_deref().expect("refused");
    assert!(why.contains("not signed by a trusted control key"), "{why}");
    assert_eq!(report.deployed, None);
    assert!(h.deployed().is_empty());
    assert!(h.files().is_empty(), "nothing kept");
    assert_eq!(h.log.size().await.unwrap(), before.log_size + 1);
    let st = h.record(before.log_size).await;
    assert_eq!(st.predicate.outcome["status"], "refused");
    assert_ne!(st.predicate.invocation_id, job.job);
    assert!(h.log.by_invocation(&job.job).await.unwrap().is_none());

    let genuine = h.send(&job).await;
    assert_eq!(genuine.refused, None, "{genuine:?}");
    assert_eq!(h.deployed(), [("trivial".to_string(), v2.sha256.clone())]);
}

#[tokio::test]
async fn a_component_the_trust_policy_does_not_allow_is_refused() {
    let publisher_entry = |components: &str, max_risk: &str| {
        format!(
            "[[publishers]]\nkey = \"{{key}}\"\ncomponents = {components}\nmax_risk = \"{max_risk}\"\n"
        )
    };
    let cases = [
        (
            "a name the publisher may not publish",
            publisher_entry("[\"restart-*\"]", "high"),
            "trivial",
            "may not publish \"trivial\"",
        ),
        (
            "a risk above the publisher's",
            publisher_entry("[\"*\"]", "medium"),
            "disk-cleanup",
            "is high risk; publisher",
        ),
        (
            "a version below the minimum (a downgrade)",
            publisher_entry("[\"trivial\"]", "low") + "[minimum_versions]\ntrivial = \"0.2.0\"\n",
            "trivial",
            "a downgrade",
        ),
        (
            "no publisher at all",
            String::new(),
            "trivial",
            "lists no publisher",
        ),
    ];
    for (what, trust, guest, expect) in cases {
        let h = host_trusting(&trust).await;
        let job = h.job(&h.publish(guest));
        let before = h.before().await;
        let report = h.send(&job).await;
        h.assert_refused(what, &before, &job, &report, expect).await;
    }
}

#[tokio::test]
async fn a_component_named_by_reference_deploys_from_the_blob_store() {
    let h = host().await;
    let v2 = h.publish("trivial-next");
    let blobs = MemBlobs::holding(&v2.sha256, &v2.bytes);
    let job = h.by_reference(&v2);
    let report = h.send_with(&job, &blobs).await;
    assert_eq!(report.refused, None, "{report:?}");
    let deployed = report.deployed.clone().expect("deployed");
    assert_eq!(
        (deployed.name.as_str(), deployed.version.as_str()),
        ("trivial", "0.2.0")
    );
    assert_eq!(deployed.sha256, v2.sha256);
    assert_eq!(blobs.fetches(), 1);
    assert_eq!(h.deployed(), [("trivial".to_string(), v2.sha256.clone())]);
    assert_eq!(
        std::fs::read_to_string(h.components.join("trivial.deployed")).unwrap(),
        v2.sha256
    );
    assert_eq!(
        std::fs::read(h.components.join(format!("{}.wasm", v2.sha256))).unwrap(),
        v2.bytes,
        "the bytes kept are the ones fetched"
    );
    let st = h.record(deployed.record.index).await;
    assert_eq!(st.predicate.outcome["status"], "deployed");
    assert_eq!(st.predicate.invocation_id, job.job);

    // Delivered again: answered from its record, nothing fetched or recorded twice.
    let size = h.log.size().await.unwrap();
    let again = h.send_with(&job, &blobs).await;
    assert_eq!(again.deployed.as_ref(), Some(&deployed), "{again:?}");
    assert_eq!(blobs.fetches(), 1, "not fetched again");
    assert_eq!(h.log.size().await.unwrap(), size);
}

#[tokio::test]
async fn a_component_fetched_by_reference_is_refused_unless_it_is_what_the_job_names() {
    let h = host().await;
    let v1 = h.publish("trivial");
    let v2 = h.publish("trivial-next");
    let job = h.by_reference(&v2);
    let cases: Vec<(&str, DeployJob, Option<MemBlobs>, &str, usize)> = vec![
        (
            "the store returns another component",
            DeployJob {
                size: v1.bytes.len() as u64,
                ..job.clone()
            },
            Some(MemBlobs::holding(&v2.sha256, &v1.bytes)),
            "not the sha256 the job names",
            1,
        ),
        (
            "the store returns fewer bytes than the job says",
            job.clone(),
            Some(MemBlobs::holding(
                &v2.sha256,
                &v2.bytes[..v2.bytes.len() - 1],
            )),
            "the job says",
            1,
        ),
        (
            "the store returns more bytes than the job says",
            job.clone(),
            Some(MemBlobs::holding(
                &v2.sha256,
                &[&v2.bytes[..], b"x"].concat(),
            )),
            "the job says",
            1,
        ),
        (
            "a size beyond what the host takes",
            DeployJob {
                size: MAX_DEPLOYED_COMPONENT_BYTES as u64 + 1,
                ..job.clone()
            },
            Some(MemBlobs::holding(&v2.sha256, &v2.bytes)),
            "this host takes at most",
            0,
        ),
        (
            "both a component inline and a size",
            DeployJob {
                size: v2.bytes.len() as u64,
                ..h.job(&v2)
            },
            Some(MemBlobs::holding(&v2.sha256, &v2.bytes)),
            "both carries a component and names one by reference",
            0,
        ),
        (
            "by reference on a link that carries no blobs",
            job.clone(),
            None,
            "this link carries none",
            0,
        ),
    ];
    for (what, job, blobs, expect, fetches) in cases {
        let job = DeployJob { job: uuid(), ..job };
        let before = h.before().await;
        let report = match &blobs {
            Some(b) => h.send_with(&job, b).await,
            None => h.send(&job).await,
        };
        h.assert_refused(what, &before, &job, &report, expect).await;
        if let Some(b) = blobs {
            assert_eq!(b.fetches(), fetches, "{what}: fetches");
        }
    }
}

/// A store that cannot answer now is the transport's trouble, not a verdict on the job:
/// the job is given back (an error, no report), nothing is recorded under its id, and
/// delivered again once the store has the component it deploys.
#[tokio::test]
async fn a_component_the_store_cannot_give_now_is_not_refused_and_deploys_when_asked_again() {
    let h = host().await;
    let v2 = h.publish("trivial-next");
    let job = h.by_reference(&v2);
    let empty = MemBlobs::default();
    let before = h.before().await;
    match h.try_send_with(&job, &empty).await {
        Err(e @ AgentError::Fetch(_)) => assert!(e.to_string().contains(&v2.sha256), "{e}"),
        other => panic!("not given back: {other:?}"),
    }
    assert_eq!(empty.fetches(), 1);
    assert_eq!(
        h.log.size().await.unwrap(),
        before.log_size,
        "nothing recorded"
    );
    assert!(h.log.by_invocation(&job.job).await.unwrap().is_none());
    assert!(h.deployed().is_empty());
    assert!(h.files().is_empty(), "nothing kept");

    let report = h
        .send_with(&job, &MemBlobs::holding(&v2.sha256, &v2.bytes))
        .await;
    assert_eq!(report.refused, None, "{report:?}");
    assert_eq!(h.deployed(), [("trivial".to_string(), v2.sha256.clone())]);
}

#[tokio::test]
async fn a_refused_deployment_leaves_the_version_that_runs_running() {
    let h = host().await;
    let v1 = h.publish("trivial");
    let v2 = h.publish("trivial-next");
    let first = h.send(&h.job(&v1)).await;
    assert_eq!(first.refused, None, "{first:?}");
    let pointer = h.components.join("trivial.deployed");
    assert_eq!(std::fs::read_to_string(&pointer).unwrap(), v1.sha256);

    let stranger = ev::SigningKey::generate("publisher").unwrap();
    let untrusted = h.publish_as(&v2.bytes, &h.release_of(&v2.bytes), &stranger);
    let blobs = MemBlobs::holding(&v2.sha256, &v1.bytes);
    let lying_store = DeployJob {
        size: v1.bytes.len() as u64,
        ..h.by_reference(&v2)
    };
    let job = h.job(&untrusted);
    let before = h.before().await;
    let report = h.send(&job).await;
    h.assert_refused(
        "an untrusted release",
        &before,
        &job,
        &report,
        "not signed by a trusted publisher",
    )
    .await;
    let before = h.before().await;
    let report = h.send_with(&lying_store, &blobs).await;
    h.assert_refused(
        "a store returning other bytes",
        &before,
        &lying_store,
        &report,
        "not the sha256 the job names",
    )
    .await;

    assert_eq!(h.deployed(), [("trivial".to_string(), v1.sha256.clone())]);
    assert_eq!(std::fs::read_to_string(&pointer).unwrap(), v1.sha256);
    let run = h.run_trivial(&v1.sha256).await;
    assert_eq!(run.refused, None, "{run:?}");
    assert_eq!(run.runs[0].status, RunStatus::NoOp, "version 0.1.0 ran");
    let v2_run = h.run_trivial(&v2.sha256).await;
    assert!(v2_run.refused.is_some(), "0.2.0 is not here: {v2_run:?}");
}

#[tokio::test]
async fn a_refused_deployment_delivered_again_is_answered_from_its_one_record() {
    let h = host().await;
    let v2 = h.publish("trivial-next");
    let job = DeployJob {
        version: "0.3.0".into(),
        ..h.job(&v2)
    };
    let before = h.before().await;
    let first = h.send(&job).await;
    h.assert_refused("first delivery", &before, &job, &first, "its release")
        .await;
    let again = h.send(&job).await;
    let (a, b) = tokio::join!(h.send(&job), h.send(&job));
    for report in [&again, &a, &b] {
        let why = report.refused.as_deref().expect("refused again");
        assert!(why.contains("the job names trivial 0.3.0"), "{why}");
        assert_eq!(report.deployed, None);
    }
    assert_eq!(
        h.log.size().await.unwrap(),
        before.log_size + 1,
        "one refusal record for four deliveries"
    );
    assert!(h.deployed().is_empty());
    assert!(h.files().is_empty());
}

/// The answer from the log is the answer the first delivery got, word for word (as for
/// run jobs: `main.rs`'s `a_job_delivered_again_is_answered_from_the_log…`).
#[tokio::test]
async fn a_refused_deployment_delivered_again_gets_the_same_report() {
    let h = host().await;
    let v2 = h.publish("trivial-next");
    let job = DeployJob {
        version: "0.3.0".into(),
        ..h.job(&v2)
    };
    let first = h.send(&job).await;
    assert!(first.refused.is_some());
    assert_eq!(h.send(&job).await, first);
}

/// The agent stopped between keeping a component (its pointer written) and signing the
/// record of the swap: at the next start the component no record vouches for is not
/// loaded (refused, on the record), what the last record put in place runs again, and
/// the job, delivered again, is carried out afresh.
#[tokio::test]
async fn a_component_kept_without_its_record_is_not_loaded_at_the_next_start() {
    let h = host().await;
    let (v1, v2) = (h.publish("trivial"), h.publish("trivial-next"));
    let report = h.send(&h.job(&v1)).await;
    assert!(report.deployed.is_some(), "{report:?}");
    // The stop: v2's files and pointer on disk, no record of its swap.
    for (file, bytes) in [
        (format!("{}.wasm", v2.sha256), v2.bytes.clone()),
        (
            format!("{}.release.json", v2.sha256),
            v2.release.clone().into_bytes(),
        ),
        (
            "trivial.deployed".to_string(),
            v2.sha256.clone().into_bytes(),
        ),
    ] {
        std::fs::write(h.components.join(file), bytes).unwrap();
    }
    let size = h.log.size().await.unwrap();
    let again = Executor::open(h.rt.clone(), h.config.clone())
        .await
        .unwrap();
    assert_eq!(again.load_deployed().await.unwrap(), 1);
    let running: Vec<String> = again
        .deployed()
        .iter()
        .map(|l| l.sha256().to_string())
        .collect();
    assert_eq!(
        running,
        [v1.sha256.as_str()],
        "what the last record put in place"
    );
    assert_eq!(
        std::fs::read_to_string(h.components.join("trivial.deployed")).unwrap(),
        v1.sha256
    );
    assert_eq!(
        h.log.size().await.unwrap(),
        size + 1,
        "one refusal recorded"
    );
    let r = h.log.get(size).await.unwrap().unwrap();
    assert_eq!(
        (r.runbook.as_str(), r.status.as_str()),
        ("trivial", "refused")
    );
    // The job comes again: carried out, recorded, and kept across the next start.
    let job = h.job(&v2);
    let payload = serde_json::to_vec(&job).unwrap();
    let env = ev::Envelope::sign(DEPLOY_PAYLOAD_TYPE, &payload, &h.control).to_json();
    let report = again.execute(env.as_bytes(), now_ms()).await.unwrap();
    assert!(report.deployed.is_some(), "{report:?}");
    drop(again);
    let third = Executor::open(h.rt.clone(), h.config.clone())
        .await
        .unwrap();
    assert_eq!(third.load_deployed().await.unwrap(), 1);
    assert_eq!(third.deployed()[0].sha256(), v2.sha256);
}
