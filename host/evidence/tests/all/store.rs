//! The durable log on both backends: dense unique indexes under concurrent appends,
//! persistence across reopen, filters, checkpoints, and refusal of a newer schema.

use super::pg::Postgres;
use runwarden_evidence::{Envelope, Error, Filter, NewRecord, SigningKey, Store, leaf_hash};
use std::collections::HashSet;

fn record(key: &SigningKey, i: usize) -> NewRecord {
    let payload = format!("{{\"n\":{i}}}");
    let env = Envelope::sign("application/vnd.in-toto+json", payload.as_bytes(), key);
    NewRecord {
        envelope: env.to_json().into_bytes(),
        invocation_id: format!("inv-{i}"),
        host_id: if i.is_multiple_of(2) {
            "even".into()
        } else {
            "odd".into()
        },
        runbook: "rb".into(),
        status: if i.is_multiple_of(3) {
            "healed".into()
        } else {
            "failed".into()
        },
        started_at_ms: 1_000 + i as i64,
    }
}

/// Many tasks append at once: every append gets its own index, the indexes are exactly
/// 0..n, and each stored leaf hash is the hash of the stored envelope.
async fn concurrent_appends(store: &Store) {
    let key = SigningKey::generate("host-a").unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = store.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..100 {
                got.push(store.append(record(&key, t * 100 + i)).await.unwrap());
            }
            got
        }));
    }
    let mut seen = HashSet::new();
    for t in tasks {
        for idx in t.await.unwrap() {
            assert!(seen.insert(idx), "index {idx} given twice");
        }
    }
    assert_eq!(seen.len(), 800);
    assert_eq!(*seen.iter().max().unwrap(), 799);
    assert_eq!(store.size().await.unwrap(), 800);
    let hashes = store.leaf_hashes(800).await.unwrap();
    for i in [0u64, 1, 417, 799] {
        let r = store.get(i).await.unwrap().unwrap();
        assert_eq!(r.index, i);
        assert_eq!(r.leaf_hash, leaf_hash(&r.envelope));
        assert_eq!(hashes[i as usize], r.leaf_hash);
    }
    assert!(store.get(800).await.unwrap().is_none());

    let f = Filter {
        host: Some("even".into()),
        status: Some("healed".into()),
        ..Filter::default()
    };
    let listed = store.list(&f).await.unwrap();
    assert_eq!(
        listed.len(),
        (0..800).filter(|i| i % 2 == 0 && i % 3 == 0).count()
    );
    assert!(listed.windows(2).all(|w| w[0].index < w[1].index));
    let f = Filter {
        since_ms: Some(1_100),
        until_ms: Some(1_110),
        ..Filter::default()
    };
    assert_eq!(store.list(&f).await.unwrap().len(), 10);

    store
        .put_checkpoint(800, &hashes[0], "note-800")
        .await
        .unwrap();
    store
        .put_checkpoint(100, &hashes[0], "note-100")
        .await
        .unwrap();
    assert_eq!(
        store.checkpoint_at_most(1000).await.unwrap(),
        Some((800, "note-800".into()))
    );
    assert_eq!(
        store.checkpoint_at_most(799).await.unwrap(),
        Some((100, "note-100".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_log_is_dense_durable_and_filterable() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("evidence.db");
    let store = Store::open(db.to_str().unwrap()).await.unwrap();
    concurrent_appends(&store).await;
    drop(store);
    let again = Store::open(db.to_str().unwrap()).await.unwrap();
    assert_eq!(
        again.size().await.unwrap(),
        800,
        "appends survive reopening"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_log_is_dense_durable_and_filterable() {
    let pg = Postgres::start();
    let store = Store::open(&pg.url).await.unwrap();
    concurrent_appends(&store).await;
    // A second store (another process, as far as the database knows) appends after it.
    let other = Store::open(&pg.url).await.unwrap();
    let key = SigningKey::generate("host-b").unwrap();
    assert_eq!(other.append(record(&key, 10_000)).await.unwrap(), 800);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("evidence.db");
    let store = Store::open(db.to_str().unwrap()).await.unwrap();
    drop(store);
    // Pretend a newer runwarden applied migration 9999.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) VALUES (9999, 'future', CURRENT_TIMESTAMP, 1, x'00', 0)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    match Store::open(db.to_str().unwrap()).await {
        Err(e @ Error::SchemaTooNew(9999)) => assert!(e.to_string().contains("upgrade runwarden")),
        Err(other) => panic!("expected SchemaTooNew, got {other}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_at_a_size_is_the_full_trees_whether_extended_or_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("evidence.db").to_str().unwrap())
        .await
        .unwrap();
    let key = SigningKey::generate("host-a").unwrap();
    let full = |n: u64| {
        let store = store.clone();
        async move { runwarden_evidence::MerkleTree::new(store.leaf_hashes(n).await.unwrap()).root() }
    };
    assert_eq!(
        store.root_at(0).await.unwrap(),
        runwarden_evidence::EMPTY_ROOT
    );
    let mut appended = 0;
    // Grown in uneven steps, each root is the whole tree's; then a smaller size again.
    for step in [1usize, 2, 5, 1, 13, 100] {
        for i in 0..step {
            store.append(record(&key, appended + i)).await.unwrap();
        }
        appended += step;
        let n = appended as u64;
        assert_eq!(store.root_at(n).await.unwrap(), full(n).await, "size {n}");
    }
    assert_eq!(store.root_at(7).await.unwrap(), full(7).await);
    assert_eq!(store.root_at(122).await.unwrap(), full(122).await);
    // Beyond what the log holds: an error, not a root.
    assert!(store.root_at(500).await.is_err());
}
