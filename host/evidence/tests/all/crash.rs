//! Crash safety: a process appending a burst is killed with SIGKILL; after restart the log
//! is intact and every append that had been reported done is there.

use runwarden_evidence::{Envelope, MerkleTree, NewRecord, SigningKey, Store, leaf_hash};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "RUNWARDEN_CRASH_CHILD_DB";

/// The appender: 4 tasks append as fast as they can and print `done INDEX ID` for each
/// append the store reported durable. Bounded in count; normally killed long before.
fn child(db: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::open(db).await.unwrap();
        let key = SigningKey::generate("crash-host").unwrap();
        let mut tasks = Vec::new();
        for t in 0..4 {
            let (store, key) = (store.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..50_000 {
                    let id = format!("t{t}-{i}");
                    let env = Envelope::sign("application/vnd.in-toto+json", id.as_bytes(), &key);
                    let idx = store
                        .append(NewRecord {
                            envelope: env.to_json().into_bytes(),
                            invocation_id: id.clone(),
                            host_id: "crash-host".into(),
                            runbook: "burst".into(),
                            status: "healed".into(),
                            started_at_ms: 0,
                        })
                        .await
                        .unwrap();
                    println!("done {idx} {id}");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn appends_reported_done_survive_sigkill() {
    if let Ok(db) = std::env::var(CHILD_ENV) {
        child(&db);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("evidence.db");
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash::appends_reported_done_survive_sigkill",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reported = Vec::new();
    let started = Instant::now();
    let lines = BufReader::new(proc.stdout.take().unwrap()).lines();
    for line in lines {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("done ") {
            let (idx, id) = rest.split_once(' ').unwrap();
            reported.push((idx.parse::<u64>().unwrap(), id.to_string()));
        }
        if reported.len() >= 2_000 || started.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    proc.kill().unwrap(); // SIGKILL, mid-burst
    proc.wait().unwrap();
    assert!(
        reported.len() >= 100,
        "the child reported only {} appends",
        reported.len()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::open(db.to_str().unwrap()).await.unwrap();
        let size = store.size().await.unwrap();
        let max = reported.iter().map(|(i, _)| *i).max().unwrap();
        assert!(size > max, "size {size} but index {max} was reported done");
        for (idx, id) in &reported {
            let r = store
                .get(*idx)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("reported index {idx} is gone"));
            assert_eq!(&r.invocation_id, id, "index {idx} holds another record");
        }
        // The whole log is intact: dense, every leaf the hash of its envelope, every
        // envelope signed, and a tree over it that proves each record.
        let key_check = |env: &Envelope| env.signatures.len() == 1;
        let hashes = store.leaf_hashes(size).await.unwrap();
        for i in (0..size).step_by(97) {
            let r = store.get(i).await.unwrap().unwrap();
            assert_eq!(leaf_hash(&r.envelope), hashes[i as usize]);
            assert!(key_check(
                &Envelope::from_json(std::str::from_utf8(&r.envelope).unwrap()).unwrap()
            ));
        }
        let tree = MerkleTree::new(hashes.clone());
        for i in [0, size / 2, size - 1] {
            let proof = tree.inclusion_proof(i).unwrap();
            runwarden_evidence::verify_inclusion(
                &hashes[i as usize],
                i,
                size,
                &proof,
                &tree.root(),
            )
            .unwrap();
        }
        // And it keeps appending where it stopped.
        let key = SigningKey::generate("after").unwrap();
        let env = Envelope::sign("application/vnd.in-toto+json", b"after", &key);
        let idx = store
            .append(NewRecord {
                envelope: env.to_json().into_bytes(),
                invocation_id: "after-restart".into(),
                host_id: "h".into(),
                runbook: "r".into(),
                status: "healed".into(),
                started_at_ms: 0,
            })
            .await
            .unwrap();
        assert_eq!(idx, size);
    });
}
