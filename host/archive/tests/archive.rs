//! The archive against a real S3 server with Object Lock (moto, started by the test):
//! written locked, read back, resumed after S3 failed mid-upload, idempotent, verified
//! straight from the bucket, and refused where it would not be WORM.

use runwarden_archive::s3::{Credentials, S3};
use runwarden_archive::{ArchiveError, Archiver, Target, verify_archive};
use runwarden_evidence::{
    Invocation, NewRecord, Provenance, SigningKey, Statement, Store, rfc3339_ms,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn credentials() -> Credentials {
    Credentials {
        access_key_id: "AKIAARCHIVETEST00001".into(),
        secret_access_key: "archive-test-secret".into(),
        session_token: None,
    }
}

fn envelope(i: u64, key: &SigningKey) -> String {
    Statement::new(
        "restart-service",
        "c73b7727a07ab051d5b3458b7d72c85ee2ff4b5c2c3e790e6ffa5ec3cabc3c9d",
        Invocation {
            publisher: None,
            invocation_id: format!("{i:032x}"),
            tenant: "clinic".into(),
            host_id: "host-1".into(),
            key_id: key.verifying_key().key_id_hex(),
            provenance: Provenance::Manual {
                operator: Some("ops".into()),
            },
            runbook_version: "0.1.0".into(),
            grant_digest: None,
            grant: None,
            params: serde_json::json!({"unit": "nginx.service"}),
            trace: serde_json::json!([]),
            outcome: serde_json::json!({"status": "healed", "summary": "restarted", "details": {}}),
            started_at: rfc3339_ms(1_790_000_000_000 + i),
            ended_at: rfc3339_ms(1_790_000_000_003 + i),
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
}

async fn append(store: &Store, key: &SigningKey, range: std::ops::Range<u64>) {
    for i in range {
        store
            .append(NewRecord {
                envelope: envelope(i, key).into_bytes(),
                invocation_id: format!("{i:032x}"),
                host_id: "host-1".into(),
                runbook: "restart-service".into(),
                status: "healed".into(),
                started_at_ms: 1_790_000_000_000 + i as i64,
            })
            .await
            .unwrap();
    }
}

/// A real S3 server with a bucket (with or without Object Lock), and a log of `n`
/// records signed by its host's key.
/// (Destructured, bind `_dir` to a name: `..` would drop the log's directory.)
struct Setup {
    moto: runwarden_testkit::Moto,
    s3: S3,
    _dir: tempfile::TempDir,
    store: Store,
    key: SigningKey,
}

async fn setup(bucket: &str, object_lock: bool, n: u64) -> Setup {
    let moto = runwarden_testkit::Moto::start();
    let s3 = S3::new(&moto.endpoint, "us-east-1", credentials()).unwrap();
    s3.create_bucket(bucket, object_lock).await.unwrap();
    let (dir, store) = log().await;
    let key = SigningKey::generate("host-1").unwrap();
    append(&store, &key, 0..n).await;
    Setup {
        moto,
        s3,
        _dir: dir,
        store,
        key,
    }
}

async fn log() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("evidence.db"))
        .await
        .unwrap();
    (dir, store)
}

/// Segments of 10 records, locked a day, retried at once.
fn archiver<'a>(s3: &'a S3, target: &'a Target) -> Archiver<'a> {
    Archiver {
        s3,
        target,
        retention_days: 1,
        segment_records: 10,
        backoff: Duration::from_millis(5),
    }
}

/// A loopback TCP proxy in front of the S3 server that, while `cut` is set, passes on
/// only the first bytes of each request and then drops the connection: an upload broken
/// off in the middle.
async fn proxy(upstream: u16, cut: Arc<AtomicBool>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let cut = cut.clone();
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let up = async {
                    let mut buf = vec![0u8; 16 << 10];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if cut.load(Ordering::SeqCst) {
                            let _ = sw.write_all(&buf[..n.min(300)]).await;
                            return;
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                let down = async {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                };
                // Either way ending ends the connection.
                tokio::select! {
                    _ = up => {}
                    _ = down => {}
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_broken_off_is_resumed_and_the_archive_verifies_from_record_zero() {
    let Setup {
        moto,
        s3: direct,
        store,
        key,
        _dir: _kept,
    } = setup("evidence", true, 95).await;
    let cut = Arc::new(AtomicBool::new(false));
    let port = proxy(moto.port, cut.clone()).await;
    let s3 = S3::new(
        &format!("http://127.0.0.1:{port}"),
        "us-east-1",
        credentials(),
    )
    .unwrap();

    let target: Target = "s3://evidence/clinic-a".parse().unwrap();
    let archiver = archiver(&s3, &target);
    let origin = "runwarden/host-1";
    let keys = vec![key.verifying_key()];

    // S3 breaks off every upload once 40 records are archived.
    let failed = archiver
        .archive_log(&store, &key, origin, keys.clone(), &|done, _| {
            if done >= 40 {
                cut.store(true, Ordering::SeqCst);
            }
        })
        .await
        .unwrap_err();
    assert!(matches!(failed, ArchiveError::S3(_)), "{failed}");
    // What was sealed before the break is there, whole. (moto keeps the part of an
    // upload it got — real S3 keeps nothing of it — so the next segment may be there too,
    // broken: the next run writes it again.)
    let listed = direct.list("evidence", "clinic-a/").await.unwrap();
    let names: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(
        names[..4],
        [
            "clinic-a/runwarden/host-1/00000000000000000000-00000000000000000010.bundle",
            "clinic-a/runwarden/host-1/00000000000000000010-00000000000000000020.bundle",
            "clinic-a/runwarden/host-1/00000000000000000020-00000000000000000030.bundle",
            "clinic-a/runwarden/host-1/00000000000000000030-00000000000000000040.bundle",
        ],
    );
    assert!(names.len() <= 5, "{names:?}");
    let broken_kept = names.len() == 5;

    // S3 is back: the next run goes on from record 40.
    cut.store(false, Ordering::SeqCst);
    let done = archiver
        .archive_log(&store, &key, origin, keys.clone(), &|_, _| {})
        .await
        .unwrap();
    assert_eq!(
        (done.written, done.records_written, done.archived),
        (6, 55, 95)
    );
    assert_eq!(done.rewritten.is_some(), broken_kept, "{done:?}");
    assert!(done.retain_until.is_some());
    // Again: nothing to do, nothing written twice.
    let again = archiver
        .archive_log(&store, &key, origin, keys.clone(), &|_, _| {})
        .await
        .unwrap();
    assert_eq!((again.written, again.archived), (0, 95));
    assert_eq!(
        direct.list("evidence", "clinic-a/").await.unwrap().len(),
        10
    );

    // Each segment is locked in COMPLIANCE mode; a locked version cannot be deleted.
    let first = &direct.list("evidence", "clinic-a/").await.unwrap()[0].key;
    let head = direct
        .head_object("evidence", first, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.lock_mode.as_deref(), Some("COMPLIANCE"));
    let version = head
        .version_id
        .clone()
        .expect("a lock bucket versions its objects");
    assert!(
        direct
            .delete_object("evidence", first, Some(&version))
            .await
            .is_err(),
        "a COMPLIANCE-locked version must not be deletable"
    );

    // Verified straight from the bucket, complete from record 0.
    let v = verify_archive(&s3, &target, "runwarden/host-1", &keys, &|_, _| {})
        .await
        .unwrap();
    assert_eq!((v.segments, v.records), (10, 95));
    assert_eq!(
        v.root,
        runwarden_evidence::hash_hex(&store.root_at(95).await.unwrap())
    );

    // New records: one more segment, chained on.
    append(&store, &key, 95..97).await;
    let more = archiver
        .archive_log(&store, &key, origin, keys.clone(), &|_, _| {})
        .await
        .unwrap();
    assert_eq!((more.written, more.archived), (1, 97));
    let v = verify_archive(&s3, &target, origin, &keys, &|_, _| {})
        .await
        .unwrap();
    assert_eq!((v.segments, v.records), (11, 97));

    // Another key does not verify the archive.
    let stranger = SigningKey::generate("host-1").unwrap().verifying_key();
    assert!(
        verify_archive(&s3, &target, "runwarden/host-1", &[stranger], &|_, _| {})
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_without_object_lock_is_refused_and_nothing_is_written() {
    let Setup {
        moto: _moto,
        s3,
        store,
        key,
        _dir: _kept,
    } = setup("plain", false, 3).await;
    let target: Target = "s3://plain/x".parse().unwrap();
    let archiver = archiver(&s3, &target);
    let e = archiver
        .archive_log(&store, &key, "runwarden/host-1", vec![], &|_, _| {})
        .await
        .unwrap_err();
    assert!(matches!(e, ArchiveError::NoObjectLock { .. }), "{e}");
    assert!(e.to_string().contains("Object Lock"), "{e}");
    assert!(s3.list("plain", "").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_altered_or_foreign_segment_in_the_archive_fails_verification() {
    let Setup {
        moto: _moto,
        s3,
        store,
        key,
        _dir: _kept,
    } = setup("evidence", true, 25).await;
    let target: Target = "s3://evidence/a".parse().unwrap();
    let archiver = archiver(&s3, &target);
    let keys = vec![key.verifying_key()];
    archiver
        .archive_log(&store, &key, "runwarden/host-1", keys.clone(), &|_, _| {})
        .await
        .unwrap();
    let listed = s3.list("evidence", "a/").await.unwrap();
    let second = listed[1].key.clone();
    let original = s3
        .get_object("evidence", &second, None, 1 << 30)
        .await
        .unwrap();

    // A new version of a segment (versioning keeps the locked one) with a byte changed.
    let mut altered = original.to_vec();
    let at = altered.len() / 2;
    altered[at] ^= 1;
    let far = 4_102_444_800_000; // 2100
    s3.put_object_locked("evidence", &second, altered.into(), far)
        .await
        .unwrap();
    let e = verify_archive(&s3, &target, "runwarden/host-1", &keys, &|_, _| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("00000000000000000010-00000000000000000020"),
        "{e}"
    );
    // Put back, the archive verifies again.
    s3.put_object_locked("evidence", &second, original.clone(), far)
        .await
        .unwrap();
    verify_archive(&s3, &target, "runwarden/host-1", &keys, &|_, _| {})
        .await
        .unwrap();

    // A segment of another log, signed by its own key, slipped into the gap after.
    let (_other_dir, other) = log().await;
    append(&other, &key, 0..30).await;
    let mut tree = runwarden_evidence::CompactTree::new();
    other.extend_tree(&mut tree, 25).await.unwrap();
    let foreign = runwarden_evidence::export_segment(
        &other,
        &key,
        "runwarden/host-1",
        vec![],
        &mut tree,
        30,
        Vec::new(),
    )
    .await
    .unwrap();
    s3.put_object_locked(
        "evidence",
        "a/runwarden/host-1/00000000000000000025-00000000000000000030.bundle",
        foreign.into(),
        far,
    )
    .await
    .unwrap();
    // Same records, same key: it continues the log exactly, so it verifies.
    verify_archive(&s3, &target, "runwarden/host-1", &keys, &|_, _| {})
        .await
        .unwrap();
    // Signed by the same key but continuing other records: its start is another tree's.
    let (_forked_dir, forked) = log().await;
    append(&forked, &key, 100..131).await;
    let mut at_30 = runwarden_evidence::CompactTree::new();
    forked.extend_tree(&mut at_30, 30).await.unwrap();
    let fork = runwarden_evidence::export_segment(
        &forked,
        &key,
        "runwarden/host-1",
        vec![],
        &mut at_30,
        31,
        Vec::new(),
    )
    .await
    .unwrap();
    s3.put_object_locked(
        "evidence",
        "a/runwarden/host-1/00000000000000000030-00000000000000000031.bundle",
        fork.into(),
        far,
    )
    .await
    .unwrap();
    let e = verify_archive(&s3, &target, "runwarden/host-1", &keys, &|_, _| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("00000000000000000030-00000000000000000031"),
        "{e}"
    );
    assert!(e.contains("does not continue"), "{e}");

    // The archiver does not go on from a chain that is not its log's.
    let e = archiver
        .archive_log(&store, &key, "runwarden/host-1", keys.clone(), &|_, _| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("another log"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_export_in_a_segments_place_is_refused_and_strays_are_left_out() {
    let Setup {
        moto: _moto,
        s3,
        store,
        key,
        _dir: _kept,
    } = setup("evidence", true, 25).await;
    let target: Target = "s3://evidence/f".parse().unwrap();
    let archiver = archiver(&s3, &target);
    let keys = vec![key.verifying_key()];
    archiver
        .archive_log(&store, &key, "runwarden/host-1", keys.clone(), &|_, _| {})
        .await
        .unwrap();
    let far = 4_102_444_800_000;
    // Something that is not on the chain from record 0 is not read, and counted.
    s3.put_object_locked(
        "evidence",
        "f/runwarden/host-1/00000000000000000040-00000000000000000041.bundle",
        bytes::Bytes::from_static(b"x"),
        far,
    )
    .await
    .unwrap();
    let v = verify_archive(&s3, &target, "runwarden/host-1", &keys, &|_, _| {})
        .await
        .unwrap();
    assert_eq!((v.segments, v.records, v.off_path), (3, 25, 1));
    // A filtered export signed by the log's key, put where it would stand for records
    // 0..25: it proves each record it holds, not that none is missing. Refused.
    let filter = runwarden_evidence::Filter {
        runbook: Some("restart-service".into()),
        ..Default::default()
    };
    let (filtered, _) = runwarden_evidence::export_stream(
        &store,
        &filter,
        &key,
        None,
        keys.clone(),
        Vec::new(),
        &|_, _| {},
    )
    .await
    .unwrap();
    s3.put_object_locked(
        "evidence",
        "f/runwarden/host-1/00000000000000000000-00000000000000000025.bundle",
        filtered.into(),
        far,
    )
    .await
    .unwrap();
    let e = verify_archive(&s3, &target, "runwarden/host-1", &keys, &|_, _| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("filtered export"), "{e}");
    // Two archivers at once leave overlapping segments: either chain is the log's.
    let (_d, other) = log().await;
    append(&other, &key, 0..25).await;
    let mut t = runwarden_evidence::CompactTree::new();
    other.extend_tree(&mut t, 10).await.unwrap();
    let overlap = runwarden_evidence::export_segment(
        &other,
        &key,
        "runwarden/host-1",
        vec![],
        &mut t,
        25,
        Vec::new(),
    )
    .await
    .unwrap();
    s3.put_object_locked(
        "evidence",
        "f/runwarden/host-1/00000000000000000010-00000000000000000025.bundle",
        overlap.into(),
        far,
    )
    .await
    .unwrap();
    let whole = runwarden_evidence::export_stream(
        &store,
        &Default::default(),
        &key,
        None,
        keys.clone(),
        Vec::new(),
        &|_, _| {},
    )
    .await
    .unwrap()
    .0;
    // (The filtered export's place now holds the complete log 0..25: also a proof.)
    s3.put_object_locked(
        "evidence",
        "f/runwarden/host-1/00000000000000000000-00000000000000000025.bundle",
        whole.into(),
        far,
    )
    .await
    .unwrap();
    let v = verify_archive(&s3, &target, "runwarden/host-1", &keys, &|_, _| {})
        .await
        .unwrap();
    assert_eq!(v.records, 25);
    append(&store, &key, 25..30).await;
    let more = archiver
        .archive_log(&store, &key, "runwarden/host-1", keys.clone(), &|_, _| {})
        .await
        .unwrap();
    assert_eq!((more.written, more.archived), (1, 30));
    let v = verify_archive(&s3, &target, "runwarden/host-1", &keys, &|_, _| {})
        .await
        .unwrap();
    assert_eq!(v.records, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_segment_left_broken_is_written_again_as_a_new_version() {
    let Setup {
        moto: _moto,
        s3,
        store,
        key,
        _dir: _kept,
    } = setup("evidence", true, 10).await;
    let target: Target = "s3://evidence/b".parse().unwrap();
    let archiver = archiver(&s3, &target);
    let keys = vec![key.verifying_key()];
    archiver
        .archive_log(&store, &key, "runwarden/host-1", keys.clone(), &|_, _| {})
        .await
        .unwrap();
    // Another prefix whose only segment is not this log's: never written over.
    s3.put_object_locked(
        "evidence",
        "c/runwarden/host-1/00000000000000000000-00000000000000000010.bundle",
        bytes::Bytes::from_static(b"not ours"),
        4_102_444_800_000,
    )
    .await
    .unwrap();
    let other_target: Target = "s3://evidence/c".parse().unwrap();
    let e = Archiver {
        target: &other_target,
        ..archiver
    }
    .archive_log(&store, &key, "runwarden/host-1", keys.clone(), &|_, _| {})
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("another log's archive"), "{e}");
    // The next segment's upload broken off, and what arrived kept, locked.
    let broken = "b/runwarden/host-1/00000000000000000010-00000000000000000020.bundle";
    s3.put_object_locked(
        "evidence",
        broken,
        bytes::Bytes::from_static(b"runwarden-bun"),
        4_102_444_800_000,
    )
    .await
    .unwrap();
    assert!(
        verify_archive(&s3, &target, "runwarden/host-1", &keys, &|_, _| {})
            .await
            .is_err()
    );
    append(&store, &key, 10..25).await;
    let done = archiver
        .archive_log(&store, &key, "runwarden/host-1", keys.clone(), &|_, _| {})
        .await
        .unwrap();
    assert_eq!(
        done.rewritten.as_deref(),
        Some(&*format!("s3://evidence/{broken}"))
    );
    assert_eq!((done.written, done.archived), (2, 25));
    let v = verify_archive(&s3, &target, "runwarden/host-1", &keys, &|_, _| {})
        .await
        .unwrap();
    assert_eq!((v.segments, v.records), (3, 25));
}

/// Deleting segments without a version id (allowed under COMPLIANCE: it only adds a
/// delete marker) neither shortens the archive as verification reads it nor makes the
/// archiver write them again: their locked versions are found and read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_hidden_behind_delete_markers_are_still_read_and_named() {
    let Setup {
        moto: _moto,
        s3,
        store,
        key,
        _dir: _kept,
    } = setup("evidence", true, 30).await;
    let target: Target = "s3://evidence/d".parse().unwrap();
    let archiver = archiver(&s3, &target);
    let keys = vec![key.verifying_key()];
    let origin = "runwarden/host-1";
    archiver
        .archive_log(&store, &key, origin, keys.clone(), &|_, _| {})
        .await
        .unwrap();
    let dir = "d/runwarden/host-1/";
    // The newest two segments deleted as a user without version ids would.
    for (from, to) in [(10, 20), (20, 30)] {
        let key = format!("{dir}{from:020}-{to:020}.bundle");
        s3.delete_object("evidence", &key, None).await.unwrap();
        assert!(
            s3.head_object("evidence", &key, None)
                .await
                .unwrap()
                .is_none()
        );
    }
    assert_eq!(s3.list("evidence", dir).await.unwrap().len(), 1);
    let versions = s3.list_versions("evidence", dir).await.unwrap();
    assert_eq!(
        versions.iter().filter(|v| v.delete_marker).count(),
        2,
        "{versions:?}"
    );
    let v = verify_archive(&s3, &target, origin, &keys, &|_, _| {})
        .await
        .unwrap();
    assert_eq!((v.segments, v.records, v.hidden), (3, 30, 2));
    // The archiver resumes after them: nothing written twice.
    append(&store, &key, 30..35).await;
    let done = archiver
        .archive_log(&store, &key, origin, keys.clone(), &|_, _| {})
        .await
        .unwrap();
    assert_eq!((done.written, done.archived, done.rewritten), (1, 35, None));
    let v = verify_archive(&s3, &target, origin, &keys, &|_, _| {})
        .await
        .unwrap();
    assert_eq!((v.segments, v.records, v.hidden), (4, 35, 2));
    // A log all of whose segments are hidden is still listed as archived.
    for (from, to) in [(0, 10), (30, 35)] {
        s3.delete_object(
            "evidence",
            &format!("{dir}{from:020}-{to:020}.bundle"),
            None,
        )
        .await
        .unwrap();
    }
    assert_eq!(
        runwarden_archive::archived_logs(&s3, &target)
            .await
            .unwrap(),
        vec![origin.to_string()]
    );
}
