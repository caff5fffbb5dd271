//! A log that lost or changed records is refused at open: the SQLite `-wal` file deleted,
//! cut short or with flipped bytes, or a leaf altered, after a checkpoint covering the
//! lost records was signed. The checkpoint kept beside the database is what remembers it.

use runwarden_evidence::{
    Checkpoint, Envelope, Error, MerkleTree, NewRecord, SigningKey, Store, checkpoint_file_of,
};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

fn record(key: &SigningKey, i: usize) -> NewRecord {
    let env = Envelope::sign(
        "application/vnd.in-toto+json",
        format!("{{\"n\":{i}}}").as_bytes(),
        key,
    );
    NewRecord {
        envelope: env.to_json().into_bytes(),
        invocation_id: format!("inv-{i}"),
        host_id: "h".into(),
        runbook: "rb".into(),
        status: "healed".into(),
        started_at_ms: i as i64,
    }
}

/// Sign and store a checkpoint of the log as it is now; returns the note.
async fn checkpoint(store: &Store, key: &SigningKey) -> String {
    let size = store.size().await.unwrap();
    let cp = Checkpoint {
        origin: "runwarden/h".into(),
        size,
        root: MerkleTree::new(store.leaf_hashes(size).await.unwrap()).root(),
    };
    let note = cp.sign(key).unwrap();
    store.put_checkpoint(size, &cp.root, &note).await.unwrap();
    note
}

/// A log whose main file holds 60 records and whose `-wal` file holds 40 more and a
/// checkpoint of all 100, as a crash leaves it: returns the directory with `evidence.db`,
/// its `-wal` and its checkpoint file, copied while the writer still had them open.
async fn log_of_100_with_60_in_the_main_file(dir: &Path) -> PathBuf {
    let live = dir.join("live");
    std::fs::create_dir(&live).unwrap();
    let db = live.join("evidence.db");
    let store = Store::open(db.to_str().unwrap()).await.unwrap();
    let key = SigningKey::generate("h").unwrap();
    for i in 0..60 {
        store.append(record(&key, i)).await.unwrap();
    }
    checkpoint(&store, &key).await;
    // Move the first 60 into the main file; what follows stays in the WAL.
    let side = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(&side)
        .await
        .unwrap();
    assert_eq!(busy, 0, "the WAL checkpoint completed");
    side.close().await;
    for i in 60..100 {
        store.append(record(&key, i)).await.unwrap();
    }
    let note = checkpoint(&store, &key).await;
    let kept = checkpoint_file_of(&db);
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), note);
    assert_eq!(
        std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let crashed = dir.join("crashed");
    std::fs::create_dir(&crashed).unwrap();
    for name in ["evidence.db", "evidence.db-wal", "evidence.db.checkpoint"] {
        std::fs::copy(live.join(name), crashed.join(name)).unwrap();
    }
    drop(store);
    crashed
}

async fn open(dir: &Path) -> Result<Store, Error> {
    Store::open(dir.join("evidence.db").to_str().unwrap()).await
}

fn expect_refused(got: Result<Store, Error>, wanted: &[&str]) {
    let err = match got {
        Ok(_) => panic!("a log that lost records was opened"),
        Err(e) => e,
    };
    assert!(matches!(err, Error::LogIntegrity { .. }), "{err}");
    let msg = err.to_string();
    for w in wanted
        .iter()
        .chain(&["restore", "from a backup", "evidence.db.checkpoint"])
    {
        assert!(msg.contains(w), "{msg:?} does not say {w:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_with_its_wal_intact_opens_whole() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = log_of_100_with_60_in_the_main_file(dir.path()).await;
    let store = open(&crashed).await.unwrap();
    assert_eq!(store.size().await.unwrap(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_wal_is_refused_naming_both_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = log_of_100_with_60_in_the_main_file(dir.path()).await;
    std::fs::remove_file(crashed.join("evidence.db-wal")).unwrap();
    expect_refused(
        open(&crashed).await,
        &["the log has 60 records", "covers 100 records"],
    );
    // Refused again, and nothing was appended meanwhile: the kept checkpoint is untouched.
    expect_refused(open(&crashed).await, &["the log has 60 records"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_wal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = log_of_100_with_60_in_the_main_file(dir.path()).await;
    let wal = crashed.join("evidence.db-wal");
    let len = std::fs::metadata(&wal).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    expect_refused(open(&crashed).await, &["covers 100 records"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bytes_in_the_wal_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = log_of_100_with_60_in_the_main_file(dir.path()).await;
    let wal = crashed.join("evidence.db-wal");
    let mut bytes = std::fs::read(&wal).unwrap();
    // Inside the first frame's page (32-byte WAL header, 24-byte frame header): its
    // checksum fails, and SQLite ignores it and every frame after it.
    for b in &mut bytes[32 + 24 + 200..32 + 24 + 208] {
        *b ^= 0xff;
    }
    std::fs::write(&wal, bytes).unwrap();
    expect_refused(
        open(&crashed).await,
        &["the log has 60 records", "covers 100 records"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_leaf_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = log_of_100_with_60_in_the_main_file(dir.path()).await;
    let db = crashed.join("evidence.db");
    let side = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("UPDATE evidence_log SET leaf_hash = ? WHERE idx = 17")
        .bind(vec![7u8; 32])
        .execute(&side)
        .await
        .unwrap();
    side.close().await;
    expect_refused(open(&crashed).await, &["first 100 records", "Merkle root"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_without_a_kept_checkpoint_keeps_its_latest_one() {
    // A log from before checkpoints were kept outside the database: opening it keeps the
    // database's latest checkpoint, and losing records after that is then refused.
    let dir = tempfile::tempdir().unwrap();
    let crashed = log_of_100_with_60_in_the_main_file(dir.path()).await;
    let kept = crashed.join("evidence.db.checkpoint");
    std::fs::remove_file(&kept).unwrap();
    let store = open(&crashed).await.unwrap();
    assert_eq!(store.size().await.unwrap(), 100);
    assert!(std::fs::read_to_string(&kept).unwrap().contains("\n100\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_larger_checkpoint_replaces_the_kept_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("evidence.db");
    let store = Store::open(db.to_str().unwrap()).await.unwrap();
    let key = SigningKey::generate("h").unwrap();
    for i in 0..5 {
        store.append(record(&key, i)).await.unwrap();
    }
    let five = checkpoint(&store, &key).await;
    let root = MerkleTree::new(store.leaf_hashes(3).await.unwrap()).root();
    let three = Checkpoint {
        origin: "runwarden/h".into(),
        size: 3,
        root,
    }
    .sign(&key)
    .unwrap();
    store.put_checkpoint(3, &root, &three).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(checkpoint_file_of(&db)).unwrap(),
        five
    );
}
