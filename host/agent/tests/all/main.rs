//! The agent against a real sandbox, real runbooks and a real SQLite log: a signed job
//! runs once and its record verifies under the host key; anything the agent cannot trust
//! is refused, and the refusal is itself a signed record.

mod deploy;

use runwarden_agent::{AgentConfig, Executor, now_ms};
use runwarden_evidence as ev;
use runwarden_proto::bus::{JOB_PAYLOAD_TYPE, PlannedRun, Provenance, RunJob, RunReport};
use runwarden_proto::{Guardrail, RunStatus, Verdict, VerdictKind};
use runwarden_runtime::{Policy, Runtime, RuntimeConfig};
use std::sync::Arc;

struct Host {
    dir: tempfile::TempDir,
    rt: Arc<Runtime>,
    policy: Arc<Policy>,
    tmp: std::path::PathBuf,
    agent: Arc<Executor>,
    log: ev::Store,
    host_key: ev::VerifyingKey,
    control: ev::SigningKey,
    clear_tmp_sha: String,
}

async fn host() -> Host {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let tmp = root.join("work/tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let rt = Arc::new(
        Runtime::new(RuntimeConfig {
            data_dir: root.join("data"),
        })
        .unwrap(),
    );
    let policy = Arc::new(
        Policy::parse(&format!(
            "host_id = \"srv-1\"\n[grants]\nwrite_dirs = [\"{}\"]\n",
            root.join("work").display()
        ))
        .unwrap(),
    );
    let runbooks: Vec<_> = runwarden_guests::standard_runbooks()
        .map(|(_, b)| rt.load(b).unwrap())
        .collect();
    let clear_tmp_sha = runbooks
        .iter()
        .find(|l| l.manifest().name == "clear-tmp")
        .unwrap()
        .sha256()
        .to_string();
    let log = ev::Store::open(&root.join("host.db").display().to_string())
        .await
        .unwrap();
    let key = ev::SigningKey::generate("srv-1").unwrap();
    let host_key = key.verifying_key();
    let control = ev::SigningKey::generate("runwarden-control").unwrap();
    std::fs::write(root.join("host.key"), key.to_text()).unwrap();
    let agent = Arc::new(
        Executor::open(
            rt.clone(),
            AgentConfig {
                publishers: Default::default(),
                trust: None,
                components: None,
                tenant: "clinic-a".into(),
                policy: policy.clone(),
                runbooks,
                key,
                control_keys: vec![control.verifying_key()],
                log: log.clone(),
                journal: root.join("agent-journal.db"),
            },
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        agent.recover().await.unwrap(),
        0,
        "a new journal holds nothing"
    );
    Host {
        dir,
        rt,
        policy,
        tmp,
        agent,
        log,
        host_key,
        control,
        clear_tmp_sha,
    }
}

impl Host {
    fn job(&self) -> RunJob {
        let now = now_ms();
        RunJob {
            job: uuid(),
            incident: uuid(),
            tenant: "clinic-a".into(),
            host: "srv-1".into(),
            runs: vec![PlannedRun {
                invocation: uuid(),
                runbook: "clear-tmp".into(),
                sha256: self.clear_tmp_sha.clone(),
                params: serde_json::json!({"dir": self.tmp, "older_than_hours": 24}),
            }],
            dry_run: false,
            provenance: Provenance::L1 {
                rule_id: "tmp-full".into(),
                rule_sha256: "00".repeat(32),
            },
            verdicts: vec![Verdict::new(Guardrail::Cooldown, VerdictKind::Pass, "none")],
            issued_at_ms: now,
            expires_at_ms: now + 60_000,
        }
    }

    async fn send(&self, job: &RunJob, key: &ev::SigningKey) -> RunReport {
        let payload = serde_json::to_vec(job).unwrap();
        let env = ev::Envelope::sign(JOB_PAYLOAD_TYPE, &payload, key).to_json();
        self.agent.execute(env.as_bytes(), now_ms()).await.unwrap()
    }

    /// The statement of record `index`, checked against the host key.
    async fn record(&self, index: u64) -> ev::Statement {
        let r = self.log.get(index).await.unwrap().unwrap();
        let env = ev::Envelope::from_json(std::str::from_utf8(&r.envelope).unwrap()).unwrap();
        env.verify(std::slice::from_ref(&self.host_key))
            .expect("signed by the host key");
        ev::Statement::from_envelope(&env).unwrap()
    }
}

fn uuid() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[tokio::test]
async fn a_signed_job_runs_on_its_host_and_its_record_verifies_under_the_host_key() {
    let h = host().await;
    let job = h.job();
    let report = h.send(&job, &h.control).await;
    assert_eq!(report.refused, None, "{report:?}");
    assert_eq!(report.runs.len(), 1);
    let run = &report.runs[0];
    assert_eq!(
        run.status,
        RunStatus::NoOp,
        "an empty directory: nothing to delete"
    );
    assert_eq!(
        run.invocation, job.runs[0].invocation,
        "the id the control plane chose"
    );
    assert_eq!(run.record.origin, "runwarden/srv-1");
    let st = h.record(run.record.index).await;
    assert_eq!(st.predicate.invocation_id, job.runs[0].invocation);
    assert_eq!(
        st.predicate.incident_id.as_deref(),
        Some(job.incident.as_str())
    );
    assert_eq!(st.predicate.tenant, "clinic-a");
    assert!(
        matches!(st.predicate.provenance, ev::Provenance::L1 { ref rule_id, .. } if rule_id == "tmp-full")
    );
    assert_eq!(
        st.predicate.guardrails.as_ref().unwrap()[0]["guardrail"],
        "cooldown",
        "the control plane's verdicts are in the host's record"
    );
    let r = h.log.get(run.record.index).await.unwrap().unwrap();
    assert_eq!(run.record.leaf_hash, ev::hash_hex(&r.leaf_hash));
}

#[tokio::test]
async fn a_job_delivered_again_is_answered_from_the_log_and_never_runs_twice() {
    let h = host().await;
    let job = h.job();
    let first = h.send(&job, &h.control).await;
    let size = h.log.size().await.unwrap();
    let again = h.send(&job, &h.control).await;
    assert_eq!(
        again, first,
        "the same answer, from the record it already has"
    );
    assert_eq!(h.log.size().await.unwrap(), size, "no second record");

    // Two deliveries at once: one run, both answered with it.
    let job = h.job();
    let (a, b) = tokio::join!(h.send(&job, &h.control), h.send(&job, &h.control));
    assert_eq!(a, b);
    assert_eq!(
        h.log.size().await.unwrap(),
        size + 1,
        "one run for two deliveries"
    );

    // Redelivered after it expired: still answered from the log, not refused.
    let mut old = h.job();
    let done = h.send(&old, &h.control).await;
    old.expires_at_ms = 0;
    // (The signature covers the expiry: the control plane re-sending its own old job.)
    let replay = h.send(&old, &h.control).await;
    assert_eq!(replay.runs, done.runs);
}

#[tokio::test]
async fn a_job_the_agent_cannot_trust_is_refused_and_the_refusal_is_recorded() {
    let h = host().await;
    let stranger = ev::SigningKey::generate("runwarden-control").unwrap();
    let cases: Vec<(&str, RunJob, &ev::SigningKey, &str)> = vec![
        (
            "forged",
            h.job(),
            &stranger,
            "not signed by a trusted control key",
        ),
        (
            "expired",
            RunJob {
                expires_at_ms: now_ms() - 1,
                ..h.job()
            },
            &h.control,
            "expired",
        ),
        (
            "another tenant's",
            RunJob {
                tenant: "clinic-b".into(),
                ..h.job()
            },
            &h.control,
            "tenant \"clinic-b\"",
        ),
        (
            "another host's",
            RunJob {
                host: "srv-2".into(),
                ..h.job()
            },
            &h.control,
            "host \"srv-2\"",
        ),
        (
            "from the future",
            RunJob {
                issued_at_ms: now_ms() + 3_600_000,
                ..h.job()
            },
            &h.control,
            "future",
        ),
        (
            "empty",
            RunJob {
                runs: vec![],
                ..h.job()
            },
            &h.control,
            "asks for 0 runs",
        ),
    ];
    let mut wrong_sha = h.job();
    wrong_sha.runs[0].sha256 = "ab".repeat(32);
    let mut absent = h.job();
    absent.runs[0].runbook = "format-disk".into();
    let mut bad_id = h.job();
    bad_id.runs[0].invocation = "../../etc".into();
    let cases = cases.into_iter().chain([
        (
            "another component",
            wrong_sha,
            &h.control,
            "not the abababababab",
        ),
        (
            "a runbook the host does not have",
            absent,
            &h.control,
            "not deployed on this host",
        ),
        ("a bad invocation id", bad_id, &h.control, "is not a UUID"),
    ]);
    for (what, job, key, expect) in cases {
        let before = h.log.size().await.unwrap();
        let report = h.send(&job, key).await;
        let why = report
            .refused
            .as_deref()
            .unwrap_or_else(|| panic!("{what}: ran: {report:?}"));
        assert!(why.contains(expect), "{what}: {why}");
        assert!(report.runs.is_empty(), "{what}");
        assert_eq!(
            h.log.size().await.unwrap(),
            before + 1,
            "{what}: one refusal record"
        );
        let st = h.record(before).await;
        assert_eq!(st.predicate.outcome["status"], "refused", "{what}");
        assert!(
            std::fs::read_dir(&h.tmp).unwrap().next().is_none(),
            "{what}: nothing touched"
        );
    }

    // Not a job at all: refused, recorded, and the agent goes on serving.
    for junk in [
        b"not json".to_vec(),
        br#"{"payload":"e30=","payloadType":"text/plain","signatures":[]}"#.to_vec(),
        vec![b' '; runwarden_proto::bus::MAX_MESSAGE_BYTES + 1],
    ] {
        let before = h.log.size().await.unwrap();
        let report = h.agent.execute(&junk, now_ms()).await.unwrap();
        assert!(report.refused.is_some());
        assert_eq!(h.log.size().await.unwrap(), before + 1);
    }
    let ok = h.send(&h.job(), &h.control).await;
    assert_eq!(ok.refused, None, "{ok:?}");
}

/// What a crash leaves: the journal says a run started, the log has no record of it.
/// (A real `kill -9` of `runwarden up` mid-run is in the CLI tests.) At the next start
/// the run is recorded `interrupted`, signed by the host key, and a job naming it again
/// is answered from that record: the runbook does not run a second time.
#[tokio::test]
async fn a_run_cut_off_by_a_crash_is_recorded_interrupted_at_the_next_start_and_never_rerun() {
    let h = host().await;
    let job = h.job();
    let planned = &job.runs[0];
    let journal = h.dir.path().join("agent-journal.db");
    {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", journal.display()))
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO started (invocation_id, job, incident_id, tenant, runbook, sha256, provenance, dry_run, started_at_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)",
        )
        .bind(&planned.invocation)
        .bind(&job.job)
        .bind(&job.incident)
        .bind(&job.tenant)
        .bind(&planned.runbook)
        .bind(&planned.sha256)
        .bind(serde_json::to_string(&job.provenance).unwrap())
        .bind(job.issued_at_ms)
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    // A file the runbook would delete if it ran (older than the 24 h it is asked for).
    let stale = h.tmp.join("stale.log");
    std::fs::write(&stale, b"x").unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(old)
        .unwrap();

    // The agent starts again on the same journal and log.
    let key =
        ev::SigningKey::from_text(&std::fs::read_to_string(h.dir.path().join("host.key")).unwrap())
            .unwrap();
    let again = Executor::open(
        h.rt.clone(),
        AgentConfig {
            publishers: Default::default(),
            trust: None,
            components: None,
            tenant: "clinic-a".into(),
            policy: h.policy.clone(),
            runbooks: runwarden_guests::standard_runbooks()
                .map(|(_, b)| h.rt.load(b).unwrap())
                .collect(),
            key,
            control_keys: vec![h.control.verifying_key()],
            log: h.log.clone(),
            journal: journal.clone(),
        },
    )
    .await
    .unwrap();
    let size = h.log.size().await.unwrap();
    assert_eq!(again.recover().await.unwrap(), 1);
    assert_eq!(h.log.size().await.unwrap(), size + 1);
    let st = h.record(size).await;
    assert_eq!(st.predicate.invocation_id, planned.invocation);
    assert_eq!(st.predicate.outcome["status"], "interrupted");
    assert_eq!(
        st.predicate.incident_id.as_deref(),
        Some(job.incident.as_str())
    );
    assert!(matches!(st.predicate.provenance, ev::Provenance::L1 { .. }));
    assert_eq!(again.recover().await.unwrap(), 0, "recorded once");

    // The control plane sends the job again: answered from the log, not run.
    let payload = serde_json::to_vec(&job).unwrap();
    let env = ev::Envelope::sign(JOB_PAYLOAD_TYPE, &payload, &h.control).to_json();
    let report = again.execute(env.as_bytes(), now_ms()).await.unwrap();
    assert_eq!(report.runs.len(), 1);
    assert_eq!(report.runs[0].status, RunStatus::Interrupted);
    assert_eq!(report.runs[0].record.index, size);
    assert!(stale.exists(), "the runbook did not run again");
    assert_eq!(h.log.size().await.unwrap(), size + 1);
}

/// The log as the control plane mirrors it: segments of the host's records with its
/// signed checkpoints, each continuing the last, every record under the host key.
#[tokio::test]
async fn the_hosts_log_forwards_in_segments_that_a_mirror_takes_in_order() {
    let h = host().await;
    for _ in 0..5 {
        let report = h.send(&h.job(), &h.control).await;
        assert_eq!(report.runs.len(), 1, "{report:?}");
    }
    // A refusal is a record too: 6 in all.
    let mut stale = h.job();
    stale.expires_at_ms = 1;
    assert!(h.send(&stale, &h.control).await.refused.is_some());
    assert_eq!(h.log.size().await.unwrap(), 6);

    let mirror = ev::Store::open(&h.dir.path().join("server.db").display().to_string())
        .await
        .unwrap();
    let first = h.agent.segment(0).await.unwrap().unwrap();
    assert_eq!((first.first, first.envelopes.len()), (0, 6));
    assert_eq!(first.origin, "runwarden/srv-1");
    let as_stored = |s: &runwarden_proto::bus::LogSegment| ev::Segment {
        origin: s.origin.clone(),
        first: s.first,
        envelopes: s.envelopes.iter().map(|e| e.as_bytes().to_vec()).collect(),
        checkpoint: s.checkpoint.clone(),
    };
    // Forwarded in two pieces, then once more after a new run.
    let mut head = first.clone();
    head.envelopes.truncate(4);
    head.checkpoint = h.agent.checkpoint_at(4).await.unwrap();
    assert_eq!(
        mirror
            .mirror(&h.host_key, &as_stored(&head))
            .await
            .unwrap()
            .size,
        4
    );
    let rest = h.agent.segment(4).await.unwrap().unwrap();
    assert_eq!(
        mirror
            .mirror(&h.host_key, &as_stored(&rest))
            .await
            .unwrap()
            .size,
        6
    );
    assert!(h.agent.segment(6).await.unwrap().is_none(), "nothing new");
    h.send(&h.job(), &h.control).await;
    let next = h.agent.segment(6).await.unwrap().unwrap();
    assert_eq!(
        mirror
            .mirror(&h.host_key, &as_stored(&next))
            .await
            .unwrap()
            .size,
        7
    );
    // What the mirror holds is the host's log, byte for byte.
    let held = mirror
        .mirrored_records("runwarden/srv-1", 0, 100)
        .await
        .unwrap();
    let own = h.log.range(0, 100).await.unwrap();
    assert_eq!(held.len(), 7);
    assert!(
        held.iter()
            .zip(&own)
            .all(|(m, o)| m.envelope == o.envelope && m.leaf_hash == o.leaf_hash)
    );
    // Under another key the host's segments are refused.
    let other = ev::SigningKey::generate("srv-1").unwrap().verifying_key();
    assert!(mirror.mirror(&other, &as_stored(&next)).await.is_err());
}
