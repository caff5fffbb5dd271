//! Segments of a log (the WORM archive's unit): each a bundle of format 4 that proves,
//! from signed data alone, that its records are exactly the log's leaves `from..to`, and
//! that chain into the whole log.

use super::bundle::record;
use super::craft::{assert_refused, get, members, tar_of};
use runwarden_evidence::{
    CompactTree, EMPTY_ROOT, Manifest, NewRecord, SigningKey, Store, export_segment, verify_bundle,
};

async fn filled(n: u64, key: &SigningKey) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("evidence.db"))
        .await
        .unwrap();
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..n {
        let (store, envelope) = (store.clone(), record(i, key, &format!("run {i}")));
        pending.spawn(async move {
            store
                .append(NewRecord {
                    envelope: envelope.into_bytes(),
                    invocation_id: format!("{i:032x}"),
                    host_id: "host-1".into(),
                    runbook: "restart-service".into(),
                    status: "failed".into(),
                    started_at_ms: 1_700_000_000_000 + i as i64,
                })
                .await
        });
        if pending.len() >= 128 {
            pending.join_next().await.unwrap().unwrap().unwrap();
        }
    }
    while let Some(r) = pending.join_next().await {
        r.unwrap().unwrap();
    }
    (dir, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_of_a_log_each_verify_and_chain_into_the_whole_log() {
    const N: u64 = 5_000;
    let key = SigningKey::generate("host-1").unwrap();
    let (_dir, store) = filled(N, &key).await;
    let trusted = [key.verifying_key()];
    let mut tree = CompactTree::new();
    let mut segments = Vec::new();
    // The middle one spans two chunks of records.
    for to in [1_000, 4_500, N] {
        let out = export_segment(
            &store,
            &key,
            "runwarden/host-1",
            vec![],
            &mut tree,
            to,
            Vec::new(),
        )
        .await
        .unwrap();
        assert_eq!(tree.size(), to, "the tree comes back at the segment's end");
        segments.push(out);
    }
    assert_eq!(tree.root(), store.root_at(N).await.unwrap());

    let mut previous: Option<runwarden_evidence::Verified> = None;
    for (bytes, (from, to)) in segments
        .iter()
        .zip([(0, 1_000), (1_000, 4_500), (4_500, N)])
    {
        let v = verify_bundle(bytes.as_slice(), &trusted, None).unwrap();
        assert_eq!((v.from, v.tree_size, v.records), (from, to, to - from));
        // Only the first, from record 0, is the whole log up to its checkpoint.
        assert_eq!(v.complete, from == 0);
        let expected_start = previous.as_ref().map_or(EMPTY_ROOT, |p| p.root);
        assert_eq!(
            v.from_root, expected_start,
            "segment {from}..{to} extends the one before"
        );
        let report = String::from_utf8(
            members(bytes)
                .into_iter()
                .find(|(n, _)| n == "report.html")
                .unwrap()
                .1,
        )
        .unwrap();
        if from > 0 {
            assert!(
                v.to_string()
                    .contains(&format!("segment from record {from}")),
                "{v}"
            );
            // Its report does not claim to be the whole log.
            assert!(
                report.contains(&format!("a segment of the log, its records {from} to {to}")),
                "{report}"
            );
            assert!(!report.contains("complete log up to the checkpoint"));
        } else {
            assert!(report.contains("complete log up to the checkpoint"));
        }
        previous = Some(v);
    }
    assert_eq!(previous.unwrap().root, store.root_at(N).await.unwrap());

    // No segment is empty, and none reaches past the log.
    let mut at_end = tree.clone();
    assert!(
        export_segment(
            &store,
            &key,
            "runwarden/host-1",
            vec![],
            &mut at_end,
            N,
            Vec::new()
        )
        .await
        .is_err()
    );
    let mut at_start = CompactTree::new();
    assert!(
        export_segment(
            &store,
            &key,
            "runwarden/host-1",
            vec![],
            &mut at_start,
            N + 1,
            Vec::new()
        )
        .await
        .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_whose_start_was_altered_is_refused() {
    let key = SigningKey::generate("host-1").unwrap();
    let (_dir, store) = filled(300, &key).await;
    let trusted = key.verifying_key();
    let mut tree = CompactTree::new();
    export_segment(
        &store,
        &key,
        "runwarden/host-1",
        vec![],
        &mut tree,
        100,
        Vec::new(),
    )
    .await
    .unwrap();
    let bytes = export_segment(
        &store,
        &key,
        "runwarden/host-1",
        vec![],
        &mut tree,
        300,
        Vec::new(),
    )
    .await
    .unwrap();
    verify_bundle(bytes.as_slice(), std::slice::from_ref(&trusted), None).unwrap();

    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut m = members(&bytes);
        let manifest = get(&mut m, "runwarden-bundle.json");
        let mut v: serde_json::Value = serde_json::from_slice(manifest).unwrap();
        f(&mut v);
        *manifest = serde_json::to_vec_pretty(&v).unwrap();
        tar_of(&m)
    };
    // Another frontier: the records no longer hash to the signed root.
    let forged = edit(&|v| v["segment"]["frontier"][0] = "00".repeat(32).into());
    assert_refused(&forged, &trusted, "do not hash to the checkpoint's root");
    // A frontier that does not fit the start.
    let short = edit(&|v| v["segment"]["frontier"] = serde_json::json!([]));
    assert_refused(&short, &trusted, "frontier does not fit");
    // Not a hash at all.
    let junk = edit(&|v| v["segment"]["frontier"][0] = "\u{1b}[31mred".into());
    assert_refused(&junk, &trusted, "not a hash");
    // Claimed to start later: the records are where other leaves should be.
    let moved = edit(&|v| v["segment"]["from"] = 101.into());
    assert_refused(&moved, &trusted, "segment");
    // A segment that says it was filtered.
    let filtered = edit(&|v| v["complete"] = false.into());
    assert_refused(&filtered, &trusted, "unfiltered");
    // A segment in an older format.
    let old = edit(&|v| v["version"] = 3.into());
    assert_refused(&old, &trusted, "format 4");
    let _: Manifest = serde_json::from_slice(&members(&bytes)[0].1).unwrap();
}
