//! One signer per log, and other signers' logs mirrored beside it: a second key or origin
//! is refused, and a mirrored log's segments are taken only in order, under its key, with
//! the history they repeat unchanged — a gap (a record deleted from an agent's buffer) or a
//! fork (another history signed by the same key) is refused and nothing of it is stored.

use runwarden_evidence::{
    Checkpoint, Error, Invocation, MerkleTree, Provenance, Segment, SigningKey, Statement, Store,
    leaf_hash, rfc3339_ms,
};

/// A host's signed record number `i` (its summary `summary`).
fn envelope(key: &SigningKey, i: u64, summary: &str) -> Vec<u8> {
    Statement::new(
        "restart-service",
        "c73b7727a07ab051d5b3458b7d72c85ee2ff4b5c2c3e790e6ffa5ec3cabc3c9d",
        Invocation {
            publisher: None,
            invocation_id: format!("{i:032x}"),
            tenant: "clinic".into(),
            host_id: key.name().into(),
            key_id: key.verifying_key().key_id_hex(),
            provenance: Provenance::Manual { operator: None },
            runbook_version: "0.1.0".into(),
            grant_digest: None,
            grant: None,
            params: serde_json::json!({"unit": "nginx.service"}),
            trace: serde_json::json!([]),
            outcome: serde_json::json!({"status": "healed", "summary": summary, "details": {}}),
            started_at: rfc3339_ms(1_700_000_000_000 + i),
            ended_at: rfc3339_ms(1_700_000_000_003 + i),
            duration_us: 3000,
            fuel_consumed: 13_000,
            dry_run: false,
            incident_id: None,
            guardrails: None,
        },
    )
    .sign(key)
    .unwrap()
    .to_json()
    .into_bytes()
}

/// A host's log as its agent holds it: every envelope, in order.
struct HostLog {
    key: SigningKey,
    envelopes: Vec<Vec<u8>>,
}

impl HostLog {
    fn new(host: &str, n: u64) -> HostLog {
        let key = SigningKey::generate(host).unwrap();
        let envelopes = (0..n).map(|i| envelope(&key, i, "ok")).collect();
        HostLog { key, envelopes }
    }

    fn origin(&self) -> String {
        format!("runwarden/{}", self.key.name())
    }

    /// Records `from..to` with the log's signed checkpoint at `to`.
    fn segment(&self, from: u64, to: u64) -> Segment {
        let tree = MerkleTree::new(
            self.envelopes[..to as usize]
                .iter()
                .map(|e| leaf_hash(e))
                .collect(),
        );
        let note = Checkpoint {
            origin: self.origin(),
            size: to,
            root: tree.root(),
        }
        .sign(&self.key)
        .unwrap();
        Segment {
            origin: self.origin(),
            first: from,
            envelopes: self.envelopes[from as usize..to as usize].to_vec(),
            checkpoint: note,
        }
    }
}

async fn sqlite(dir: &tempfile::TempDir) -> Store {
    Store::open(dir.path().join("server.db").to_str().unwrap())
        .await
        .unwrap()
}

/// What every backend must do with mirrored segments.
async fn mirrors_in_order_and_refuses_gaps_and_forks(server: &Store) {
    let host = HostLog::new("clinic-a-01", 30);
    let key = host.key.verifying_key();

    // In order, in pieces, and again (a retry after a lost answer): each record once.
    assert_eq!(
        server
            .mirror(&key, &host.segment(0, 10))
            .await
            .unwrap()
            .added,
        10
    );
    assert_eq!(
        server
            .mirror(&key, &host.segment(10, 20))
            .await
            .unwrap()
            .size,
        20
    );
    let again = server.mirror(&key, &host.segment(5, 20)).await.unwrap();
    assert_eq!((again.added, again.size), (0, 20));

    // A gap: records 20..25 never arrive (deleted from the agent's buffer).
    match server.mirror(&key, &host.segment(25, 30)).await {
        Err(Error::LogGap { held, first, .. }) => assert_eq!((held, first), (20, 25)),
        other => panic!("a gap must be refused, got {other:?}"),
    }
    // Records the host sends without a checkpoint (its own copy lost one before them),
    // even when they continue what is held: it says so, and nothing is taken.
    for first in [15, 20] {
        let mut holed = host.segment(first, 25);
        holed.checkpoint.clear();
        match server.mirror(&key, &holed).await {
            Err(Error::SignerLogHole { held, first: f, .. }) => assert_eq!((held, f), (20, first)),
            other => panic!("records past a hole must be refused, got {other:?}"),
        }
    }
    assert_eq!(
        server
            .mirror_head(&host.origin())
            .await
            .unwrap()
            .unwrap()
            .size,
        20
    );

    // A fork: the same key signs another history from record 15 on.
    let mut forked = HostLog {
        key: clone_key(&host.key),
        envelopes: host.envelopes.clone(),
    };
    forked.envelopes[15] = envelope(&forked.key, 15, "rewritten");
    match server.mirror(&key, &forked.segment(10, 25)).await {
        Err(Error::LogFork { index, .. }) => assert_eq!(index, 15),
        other => panic!("a changed record must be refused as a fork, got {other:?}"),
    }
    // Extending from the held end with a history that differs before it: another root.
    match server.mirror(&key, &forked.segment(20, 25)).await {
        Err(Error::LogFork { .. }) => {}
        other => panic!("another root must be refused as a fork, got {other:?}"),
    }

    // Another key for the same origin, a record or a checkpoint not signed by the log's key.
    let impostor = SigningKey::generate("clinic-a-01").unwrap();
    let stolen_name = HostLog {
        key: clone_key(&impostor),
        envelopes: host.envelopes.clone(),
    };
    assert!(matches!(
        server
            .mirror(&impostor.verifying_key(), &stolen_name.segment(20, 25))
            .await,
        Err(Error::ForeignSigner { .. })
    ));
    let mut planted = host.segment(20, 25);
    planted.envelopes[2] = envelope(&impostor, 22, "planted");
    assert!(server.mirror(&key, &planted).await.is_err());
    let mut resigned = host.segment(20, 25);
    resigned.checkpoint = stolen_name.segment(20, 25).checkpoint;
    assert!(server.mirror(&key, &resigned).await.is_err());

    // Nothing of the refused segments was stored; the true continuation still fits.
    assert_eq!(
        server.mirrored_sizes().await.unwrap().get(&host.origin()),
        Some(&20)
    );
    assert_eq!(
        server
            .mirror_head(&host.origin())
            .await
            .unwrap()
            .unwrap()
            .size,
        20
    );
    assert_eq!(
        server
            .mirror(&key, &host.segment(20, 30))
            .await
            .unwrap()
            .size,
        30
    );
    let held = server
        .mirrored_records(&host.origin(), 0, u64::MAX)
        .await
        .unwrap();
    assert_eq!(held.len(), 30);
    assert!(
        held.iter()
            .zip(&host.envelopes)
            .enumerate()
            .all(|(i, (r, e))| r.index == i as u64 && &r.envelope == e)
    );
    assert_eq!(held[3].status, "healed");
    assert_eq!(held[3].host_id, "clinic-a-01");
    assert_eq!(held[3].started_at_ms, 1_700_000_000_003);
    assert_eq!(
        server.mirrored_origins().await.unwrap(),
        vec![host.origin()]
    );
}

fn clone_key(k: &SigningKey) -> SigningKey {
    SigningKey::from_text(&k.to_text()).unwrap()
}

#[tokio::test]
async fn a_mirror_takes_a_log_in_order_and_refuses_gaps_forks_and_other_keys() {
    let dir = tempfile::tempdir().unwrap();
    mirrors_in_order_and_refuses_gaps_and_forks(&sqlite(&dir).await).await;
}

#[tokio::test]
async fn a_mirror_in_postgres_refuses_the_same() {
    let pg = super::pg::Postgres::start();
    let server = Store::open(&pg.url).await.unwrap();
    mirrors_in_order_and_refuses_gaps_and_forks(&server).await;
}

#[tokio::test]
async fn a_log_has_one_signer() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir).await;
    let host = SigningKey::generate("clinic-a-01").unwrap();
    let other = SigningKey::generate("clinic-a-02").unwrap();
    store
        .claim("runwarden/clinic-a-01", &host.verifying_key())
        .await
        .unwrap();
    // Again, after a restart: the same signer is welcome.
    drop(store);
    let store = sqlite(&dir).await;
    store
        .claim("runwarden/clinic-a-01", &host.verifying_key())
        .await
        .unwrap();
    for (origin, key) in [
        ("runwarden/clinic-a-02", &other),
        ("runwarden/clinic-a-01", &other),
        ("runwarden/elsewhere", &host),
    ] {
        let err = store.claim(origin, &key.verifying_key()).await.unwrap_err();
        assert!(
            matches!(err, Error::ForeignSigner { .. }),
            "{origin} by {}: {err}",
            key.name()
        );
        assert!(err.to_string().contains("one signer"), "{err}");
    }
    // A checkpoint by another key is not stored, whatever its origin says.
    let root = MerkleTree::new(Vec::new()).root();
    let note = Checkpoint {
        origin: "runwarden/clinic-a-01".into(),
        size: 0,
        root,
    }
    .sign(&other)
    .unwrap();
    assert!(matches!(
        store.put_checkpoint(0, &root, &note).await,
        Err(Error::ForeignSigner { .. })
    ));
    assert!(store.checkpoint_sizes().await.unwrap().is_empty());
    let note = Checkpoint {
        origin: "runwarden/clinic-a-01".into(),
        size: 0,
        root,
    }
    .sign(&host)
    .unwrap();
    store.put_checkpoint(0, &root, &note).await.unwrap();
}

#[tokio::test]
async fn a_log_checkpointed_by_one_key_cannot_be_claimed_by_another() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir).await;
    let host = SigningKey::generate("clinic-a-01").unwrap();
    // Written before logs were claimed (an older data directory): checkpoints only.
    let root = MerkleTree::new(Vec::new()).root();
    let note = Checkpoint {
        origin: "runwarden/clinic-a-01".into(),
        size: 0,
        root,
    }
    .sign(&host)
    .unwrap();
    store.put_checkpoint(0, &root, &note).await.unwrap();
    let control = SigningKey::generate("runwarden-control").unwrap();
    assert!(matches!(
        store
            .claim("runwarden/runwarden-control", &control.verifying_key())
            .await,
        Err(Error::ForeignSigner { .. })
    ));
    store
        .claim("runwarden/clinic-a-01", &host.verifying_key())
        .await
        .unwrap();
}
