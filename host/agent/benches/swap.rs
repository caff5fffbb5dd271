//! Hot swap on one agent (issue #15): what a deployment costs the host while it runs.
//!
//! - `deploy`: a signed deployment of `trivial` taken by the agent — signature, trust
//!   policy, compile (from the compile cache after the first), files kept, swap, record
//!   signed and stored — alternating 0.2.0 and a rollback to 0.1.0;
//! - `runs`: jobs of `clear-tmp` run one after another, first alone (the baseline), then
//!   while `trivial` is swapped as fast as the agent takes deployments; the runs never
//!   wait for a swap (the catalog's lock is held only to replace one entry) but share the
//!   CPU with the compile and signature work.
//!
//! Prints p50, p99 and max of each (ms). `cargo bench -p runwarden-agent --bench swap`

use base64::Engine;
use runwarden_agent::{AgentConfig, Executor, now_ms};
use runwarden_evidence as ev;
use runwarden_proto::bus::{
    DEPLOY_PAYLOAD_TYPE, DeployAction, DeployJob, JOB_PAYLOAD_TYPE, PlannedRun, Provenance, RunJob,
};
use runwarden_runtime::{Policy, Runtime, RuntimeConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The allocator the `runwarden` binary ships with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RUNS: usize = 300;
const DEPLOYS: usize = 60;

fn quantiles(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n = {})",
        at(0.5),
        at(0.99),
        at(1.0),
        v.len()
    )
}

fn signed(payload_type: &str, payload: &impl serde::Serialize, key: &ev::SigningKey) -> Vec<u8> {
    ev::Envelope::sign(payload_type, &serde_json::to_vec(payload).unwrap(), key)
        .to_json()
        .into_bytes()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(
        Runtime::new(RuntimeConfig {
            data_dir: dir.path().join("data"),
        })
        .unwrap(),
    );
    let tmp = dir.path().join("work/tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let policy = Arc::new(
        Policy::parse(&format!(
            "host_id = \"bench-host\"\n[grants]\nwrite_dirs = [\"{}\"]\n",
            tmp.parent().unwrap().display()
        ))
        .unwrap(),
    );
    let publisher = ev::SigningKey::generate("bench-publisher").unwrap();
    let trust: ev::TrustPolicy = toml::from_str(&format!(
        "[[publishers]]\nkey = \"{}\"\ncomponents = [\"*\"]\nmax_risk = \"high\"\n",
        publisher.verifying_key().to_text()
    ))
    .unwrap();
    let release = |bytes: &[u8]| {
        let l = rt.load(bytes).unwrap();
        let r = ev::Release::of_runbook(l.manifest_json(), l.sha256());
        (
            r.version.clone(),
            r.sha256.clone(),
            r.sign(&publisher).to_json(),
        )
    };
    let v1 = runwarden_test_artifacts::bytes("trivial");
    let v2 = runwarden_test_artifacts::bytes("trivial-next");
    let (ver2, sha2, rel2) = release(&v2);
    let (ver1, sha1, rel1) = release(&v1);
    let control = ev::SigningKey::generate("runwarden-control").unwrap();
    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut base: Vec<_> = runwarden_guests::standard_runbooks()
        .map(|(_, b)| rt.load(b).unwrap())
        .collect();
    base.push(rt.load(&v1).unwrap());
    let clear_tmp = base
        .iter()
        .find(|l| l.manifest().name == "clear-tmp")
        .unwrap()
        .sha256()
        .to_string();
    let agent = Arc::new(
        io.block_on(Executor::open(
            rt.clone(),
            AgentConfig {
                tenant: "t".into(),
                policy,
                runbooks: base,
                publishers: Default::default(),
                trust: Some(trust),
                components: Some(dir.path().join("components")),
                key: ev::SigningKey::generate("bench-host").unwrap(),
                control_keys: vec![control.verifying_key()],
                log: io
                    .block_on(ev::Store::open(
                        &dir.path().join("host.db").display().to_string(),
                    ))
                    .unwrap(),
                journal: dir.path().join("agent-journal.db"),
            },
        ))
        .unwrap(),
    );
    let run = |agent: Arc<Executor>| {
        let now = now_ms();
        let job = RunJob {
            job: uuid(),
            incident: uuid(),
            tenant: "t".into(),
            host: "bench-host".into(),
            runs: vec![PlannedRun {
                invocation: uuid(),
                runbook: "clear-tmp".into(),
                sha256: clear_tmp.clone(),
                params: serde_json::json!({"dir": tmp, "older_than_hours": 24}),
            }],
            dry_run: false,
            provenance: Provenance::L1 {
                rule_id: "bench".into(),
                rule_sha256: "00".repeat(32),
            },
            verdicts: Vec::new(),
            issued_at_ms: now,
            expires_at_ms: now + 60_000,
        };
        let env = signed(JOB_PAYLOAD_TYPE, &job, &control);
        async move {
            let t = Instant::now();
            let r = agent.execute(&env, now_ms()).await.unwrap();
            assert!(r.refused.is_none(), "{r:?}");
            t.elapsed().as_secs_f64() * 1000.0
        }
    };
    let deploy = |i: usize| {
        let now = now_ms();
        let (action, version, sha, release, bytes) = match i % 2 {
            0 => (DeployAction::Deploy, &ver2, &sha2, &rel2, &v2),
            _ => (DeployAction::Rollback, &ver1, &sha1, &rel1, &v1),
        };
        let job = DeployJob {
            job: uuid(),
            deployment: uuid(),
            tenant: "t".into(),
            host: "bench-host".into(),
            requested_by: "bench".into(),
            action,
            name: "trivial".into(),
            version: version.clone(),
            sha256: sha.clone(),
            release: release.clone(),
            component: base64::engine::general_purpose::STANDARD.encode(bytes),
            size: 0,
            issued_at_ms: now,
            expires_at_ms: now + 60_000,
        };
        signed(DEPLOY_PAYLOAD_TYPE, &job, &control)
    };

    // Warm: the compile cache holds both versions, the runbook ran once.
    io.block_on(async {
        for i in 0..2 {
            let r = agent.execute(&deploy(i), now_ms()).await.unwrap();
            assert!(r.deployed.is_some(), "{r:?}");
        }
        run(agent.clone()).await;
    });

    let alone: Vec<f64> = io.block_on(async {
        let mut v = Vec::new();
        for _ in 0..RUNS {
            v.push(run(agent.clone()).await);
        }
        v
    });
    let deploys: Vec<f64> = io.block_on(async {
        let mut v = Vec::new();
        for env in (0..DEPLOYS).map(deploy) {
            let t = Instant::now();
            let r = agent.execute(&env, now_ms()).await.unwrap();
            assert!(r.deployed.is_some(), "{r:?}");
            v.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        v
    });
    let swapping = Arc::new(AtomicBool::new(true));
    // Signed ahead (each valid for a minute): more than the runs leave time for.
    let queued: Vec<Vec<u8>> = (0..2000).map(deploy).collect();
    let (during, swaps) = io.block_on(async {
        let (a, s) = (agent.clone(), swapping.clone());
        let deployer = tokio::spawn(async move {
            let mut n = 0;
            for env in queued {
                if !s.load(Ordering::Relaxed) {
                    break;
                }
                let r = a.execute(&env, now_ms()).await.unwrap();
                assert!(r.deployed.is_some(), "{r:?}");
                n += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            n
        });
        let mut v = Vec::new();
        for _ in 0..RUNS {
            v.push(run(agent.clone()).await);
        }
        swapping.store(false, Ordering::Relaxed);
        (v, deployer.await.unwrap())
    });
    println!(
        "deploy (verify, compile from cache, keep, swap, record): {}",
        quantiles(deploys)
    );
    println!(
        "runs of clear-tmp alone:                                  {}",
        quantiles(alone)
    );
    println!(
        "runs of clear-tmp while trivial is swapped ({swaps} swaps):      {}",
        quantiles(during)
    );
}

fn uuid() -> String {
    uuid::Uuid::now_v7().to_string()
}
