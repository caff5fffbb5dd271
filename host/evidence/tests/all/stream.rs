//! Bundles of format 4, written and verified as a stream: records in chunks, a complete
//! log proved complete by its own leaves, a filtered one by proofs, and everything under
//! the exporter's seal — tampered with every way a chunked bundle invites.

use super::bundle::record;
use super::craft::{
    Members, NOT_REGULAR, ODD_NAMES, allocated_by, assert_refused, at, get, members, raw_member,
    refused, sparse_member, spliced, tar_of,
};
use runwarden_evidence::{
    BundleRecord, BundleWriter, Checkpoint, Envelope, Filter, Invocation, Manifest, MerkleTree,
    NewRecord, Provenance, SigningKey, Statement, Store, VerifyingKey, leaf_hash, rfc3339_ms,
    verify_bundle,
};

const CHUNK: u64 = 4096;

/// `n` records of a log signed by `key`, with the log's tree.
fn log(n: u64, key: &SigningKey) -> (Vec<String>, MerkleTree) {
    let envelopes: Vec<String> = (0..n)
        .map(|i| record(i, key, &format!("run {i}")))
        .collect();
    let tree = MerkleTree::new(envelopes.iter().map(|e| leaf_hash(e.as_bytes())).collect());
    (envelopes, tree)
}

/// A bundle of format 4 of the records of `log` that `keep` selects (all of them:
/// complete), sealed by `sealer`.
fn write(
    key: &SigningKey,
    log: &(Vec<String>, MerkleTree),
    keep: impl Fn(u64) -> bool,
    complete: bool,
    sealer: &SigningKey,
) -> Vec<u8> {
    write_in_layout(key, log, keep, complete, sealer, None)
}

/// [`write`], its report in `layout` (as the manifest says).
fn write_in_layout(
    key: &SigningKey,
    (envelopes, tree): &(Vec<String>, MerkleTree),
    keep: impl Fn(u64) -> bool,
    complete: bool,
    sealer: &SigningKey,
    layout: Option<u32>,
) -> Vec<u8> {
    let cp = Checkpoint {
        origin: "runwarden/host-1".into(),
        size: tree.size(),
        root: tree.root(),
    };
    let picked: Vec<u64> = (0..tree.size()).filter(|&i| keep(i)).collect();
    let manifest = Manifest {
        version: 4,
        origin: cp.origin.clone(),
        tree_size: cp.size,
        record_count: picked.len() as u64,
        complete,
        filter: if complete {
            serde_json::json!({})
        } else {
            serde_json::json!({"runbook": "restart-service"})
        },
        created_at: rfc3339_ms(1_700_000_000_000),
        members: Default::default(),
        segment: None,
        time_zone: None,
        report: layout,
    };
    let mut w = BundleWriter::start(
        Vec::new(),
        &manifest,
        &cp.sign(key).unwrap(),
        &[],
        &[key.verifying_key()],
    )
    .unwrap();
    for i in picked {
        w.push(&BundleRecord {
            index: i,
            envelope: envelopes[i as usize].clone(),
            proof: tree.inclusion_proof(i).unwrap(),
        })
        .unwrap();
    }
    w.finish(sealer).unwrap()
}

fn complete(n: u64) -> (Vec<u8>, SigningKey) {
    let key = SigningKey::generate("host-1").unwrap();
    let l = log(n, &key);
    (write(&key, &l, |_| true, true, &key), key)
}

fn hex_sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}

fn names(m: &Members) -> Vec<&str> {
    m.iter().map(|(n, _)| n.as_str()).collect()
}

fn lines(data: &[u8]) -> Vec<String> {
    String::from_utf8(data.to_vec())
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn join(lines: &[String]) -> Vec<u8> {
    format!("{}\n", lines.join("\n")).into_bytes()
}

#[test]
fn a_complete_log_in_several_chunks_verifies_and_proves_itself_complete() {
    let n = 2 * CHUNK + 808;
    let (bytes, key) = complete(n);
    let trusted = [key.verifying_key()];
    let v = verify_bundle(bytes.as_slice(), &trusted, None).unwrap();
    assert_eq!((v.records, v.tree_size, v.complete), (n, n, true));
    let mut m = members(&bytes);
    assert_eq!(
        names(&m),
        [
            "runwarden-bundle.json",
            "checkpoint.txt",
            "consistency.json",
            &format!("keys/{}.pub", key.verifying_key().key_id_hex()),
            "records/00000000.jsonl",
            "records/00000001.jsonl",
            "records/00000002.jsonl",
            "report.html",
            "seal.dsse.json",
        ]
    );
    let chunk = lines(get(&mut m, "records/00000001.jsonl"));
    assert_eq!(chunk.len() as u64, CHUNK);
    assert!(
        chunk[0].starts_with("{\"index\":4096,\"envelope\":"),
        "a complete bundle's records carry no proofs: {}",
        &chunk[0][..40]
    );
    let report = String::from_utf8(get(&mut m, "report.html").clone()).unwrap();
    assert!(
        report.contains(&format!(
            "<tr><td>restart-service</td><td>{n}</td><td>0</td><td>0</td><td>{n}</td>"
        )) && report.contains("complete log up to the checkpoint"),
        "{report}"
    );
    // Summaries and the latest 1,000 records needing attention (here all: they failed).
    assert!(report.len() < 512 << 10, "{} bytes", report.len());
}

#[test]
fn a_filtered_export_carries_proofs_and_its_filter_under_the_seal() {
    let key = SigningKey::generate("host-1").unwrap();
    let l = log(50, &key);
    let bytes = write(&key, &l, |i| i % 3 == 0, false, &key);
    let trusted = [key.verifying_key()];
    let v = verify_bundle(bytes.as_slice(), &trusted, None).unwrap();
    assert_eq!((v.records, v.tree_size, v.complete), (17, 50, false));
    let mut m = members(&bytes);
    assert!(
        lines(get(&mut m, "records/00000000.jsonl"))[1].starts_with("{\"index\":3,\"proof\":\"")
    );

    // The filter it states is signed: edited, the bundle is refused.
    let manifest = String::from_utf8(get(&mut m, "runwarden-bundle.json").clone()).unwrap();
    *get(&mut m, "runwarden-bundle.json") = manifest
        .replace("restart-service", "rotate-logs")
        .into_bytes();
    assert_refused(
        &tar_of(&m),
        &trusted[0],
        "runwarden-bundle.json is not the one the seal signed",
    );
    // So is all of the manifest, even what reads the same.
    let mut m = members(&bytes);
    let manifest = String::from_utf8(get(&mut m, "runwarden-bundle.json").clone()).unwrap();
    *get(&mut m, "runwarden-bundle.json") = manifest.replace(": ", ":").into_bytes();
    assert_refused(
        &tar_of(&m),
        &trusted[0],
        "runwarden-bundle.json is not the one the seal signed",
    );

    // A record dropped, the count edited to match: the count, then the seal, object.
    let mut m = members(&bytes);
    let mut chunk = lines(get(&mut m, "records/00000000.jsonl"));
    chunk.remove(2);
    *get(&mut m, "records/00000000.jsonl") = join(&chunk);
    let manifest = String::from_utf8(get(&mut m, "runwarden-bundle.json").clone()).unwrap();
    *get(&mut m, "runwarden-bundle.json") = manifest
        .replace("\"record_count\": 17", "\"record_count\": 16")
        .into_bytes();
    assert_refused(
        &tar_of(&m),
        &trusted[0],
        "runwarden-bundle.json is not the one the seal signed",
    );

    // A line without its proof.
    let mut m = members(&bytes);
    let mut chunk = lines(get(&mut m, "records/00000000.jsonl"));
    let at = chunk[4].find(",\"envelope\"").unwrap();
    let start = chunk[4].find(",\"proof\"").unwrap();
    chunk[4] = format!("{}{}", &chunk[4][..start], &chunk[4][at..]);
    *get(&mut m, "records/00000000.jsonl") = join(&chunk);
    assert_refused(&tar_of(&m), &trusted[0], "record 12: no inclusion proof");
}

#[test]
fn chunks_swapped_dropped_split_or_added_are_refused() {
    let (bytes, key) = complete(2 * CHUNK + 10);
    let k = key.verifying_key();
    let original = members(&bytes);
    let at = |m: &Members, name: &str| m.iter().position(|(n, _)| n == name).unwrap();

    // The first two chunks' contents swapped.
    let mut m = original.clone();
    let (a, b) = (
        at(&m, "records/00000000.jsonl"),
        at(&m, "records/00000001.jsonl"),
    );
    let first = m[a].1.clone();
    m[a].1 = m[b].1.clone();
    m[b].1 = first;
    assert_refused(&tar_of(&m), &k, "record 0: missing from a complete bundle");

    // The middle chunk dropped, the last renumbered.
    let mut m = original.clone();
    m.remove(at(&m, "records/00000001.jsonl"));
    let last = at(&m, "records/00000002.jsonl");
    m[last].0 = "records/00000001.jsonl".into();
    assert_refused(
        &tar_of(&m),
        &k,
        "record 4096: missing from a complete bundle",
    );

    // A chunk out of its number's place.
    let mut m = original.clone();
    let (a, b) = (
        at(&m, "records/00000000.jsonl"),
        at(&m, "records/00000001.jsonl"),
    );
    m.swap(a, b);
    assert_refused(
        &tar_of(&m),
        &k,
        "\"records/00000001.jsonl\" refused: out of place",
    );

    // The first chunk split in two (every record still there, in order): a short chunk
    // that is not the last is refused.
    let mut m = original.clone();
    let a = at(&m, "records/00000000.jsonl");
    let chunk = lines(&m[a].1);
    m[a].1 = join(&chunk[..2000]);
    m.insert(
        a + 1,
        ("records/00000001.jsonl".into(), join(&chunk[2000..])),
    );
    for (n, member) in m.iter_mut().enumerate().skip(a + 2) {
        if member.0.starts_with("records/") {
            member.0 = format!("records/{:08}.jsonl", n - a);
        }
    }
    assert_refused(
        &tar_of(&m),
        &k,
        "holds 2000 records, fewer than 4096, and is not the last",
    );

    // A chunk of many tiny lines (what a chunk may hold is bounded by records, not bytes).
    let mut m = original.clone();
    let a = at(&m, "records/00000000.jsonl");
    m[a].1 = b"{}\n".repeat(100_000);
    assert_refused(
        &tar_of(&m),
        &k,
        "record 0: a chunk of 100000 lines: a chunk holds at most 4096 records",
    );

    // Anything after the seal.
    let mut m = original.clone();
    m.push(("records/00000003.jsonl".into(), b"{}\n".to_vec()));
    assert_refused(&tar_of(&m), &k, "it comes after seal.dsse.json");

    // Cut before the seal.
    let mut m = original.clone();
    m.pop();
    assert_refused(
        &tar_of(&m),
        &k,
        "truncated bundle: it ends before seal.dsse.json",
    );
}

#[test]
fn what_no_record_names_is_caught_by_the_report_root_or_seal() {
    let (bytes, key) = complete(20);
    let k = key.verifying_key();
    let original = members(&bytes);

    // The report edited.
    let mut m = original.clone();
    let report = String::from_utf8(get(&mut m, "report.html").clone()).unwrap();
    let lie = report
        .replace("Remediation evidence", "All healed")
        .into_bytes();
    *get(&mut m, "report.html") = lie.clone();
    assert_refused(
        &tar_of(&m),
        &k,
        "\"report.html\" is not the one the seal signed",
    );
    // … and sealed again by the exporter's own key: still not the records' report.
    let seal = Envelope::from_json(std::str::from_utf8(&m.last().unwrap().1).unwrap()).unwrap();
    let mut payload: serde_json::Value = serde_json::from_slice(&seal.payload().unwrap()).unwrap();
    for member in payload["members"].as_array_mut().unwrap() {
        if member["name"] == "report.html" {
            member["size"] = lie.len().into();
            member["sha256"] = hex_sha256(&lie).into();
        }
    }
    let resealed = Envelope::sign(
        runwarden_evidence::SEAL_PAYLOAD_TYPE,
        &serde_json::to_vec(&payload).unwrap(),
        &key,
    );
    m.last_mut().unwrap().1 = resealed.to_json().into_bytes();
    assert_refused(
        &tar_of(&m),
        &k,
        "report.html is not the report of the records in this bundle (forged by whoever sealed it)",
    );

    // A proof slipped into a complete bundle's line.
    let mut m = original.clone();
    let mut chunk = lines(get(&mut m, "records/00000000.jsonl"));
    chunk[5] = chunk[5].replacen(",\"envelope\"", ",\"proof\":\"\",\"envelope\"", 1);
    *get(&mut m, "records/00000000.jsonl") = join(&chunk);
    assert_refused(
        &tar_of(&m),
        &k,
        "record 5: an inclusion proof in a complete bundle",
    );

    // Record 7 replaced by another record the same key signed (a forger with the host's
    // key but not the log): signatures and order hold, the root does not.
    let mut m = original.clone();
    let mut chunk = lines(get(&mut m, "records/00000000.jsonl"));
    chunk[7] = format!(
        "{{\"index\":7,\"envelope\":{}}}",
        record(7, &key, "something else")
    );
    *get(&mut m, "records/00000000.jsonl") = join(&chunk);
    assert_refused(
        &tar_of(&m),
        &k,
        "the records do not hash to the checkpoint's root",
    );

    // Sealed by a key the auditor does not trust.
    let rogue = SigningKey::generate("host-1").unwrap();
    let l = log(20, &key);
    let resealed = write(&key, &l, |_| true, true, &rogue);
    assert_refused(
        &resealed,
        &k,
        "seal.dsse.json is not signed by the log's own key",
    );
    // … even one the auditor trusts too: the seal is the log's key's word.
    let v = verify_bundle(
        resealed.as_slice(),
        &[k.clone(), rogue.verifying_key()],
        None,
    );
    assert!(
        v.as_ref()
            .is_err_and(|e| e.to_string().contains("not signed by the log's own key")),
        "{v:?}"
    );

    // A seal whose payload is not a seal.
    let mut m = original.clone();
    let not_a_seal = Envelope::sign("application/vnd.in-toto+json", b"{}", &key);
    m.last_mut().unwrap().1 = not_a_seal.to_json().into_bytes();
    assert_refused(&tar_of(&m), &k, "not a bundle seal");
}

#[test]
fn an_empty_log_exports_and_verifies() {
    let (bytes, key) = complete(0);
    let v = verify_bundle(bytes.as_slice(), &[key.verifying_key()], None).unwrap();
    assert_eq!((v.records, v.tree_size, v.complete), (0, 0, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_exports_a_stream_that_verifies_complete_and_filtered() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("evidence.db"))
        .await
        .unwrap();
    let key = SigningKey::generate("host-1").unwrap();
    for i in 0..30u64 {
        let envelope = record(i, &key, &format!("run {i}"));
        store
            .append(NewRecord {
                envelope: envelope.into_bytes(),
                invocation_id: format!("{i:032x}"),
                host_id: "host-1".into(),
                runbook: if i % 2 == 0 {
                    "restart-service"
                } else {
                    "rotate-logs"
                }
                .into(),
                status: "failed".into(),
                started_at_ms: 1_700_000_000_000 + i as i64,
            })
            .await
            .unwrap();
    }
    let trusted: Vec<VerifyingKey> = vec![key.verifying_key()];
    let berlin = runwarden_evidence::TimeZone::load("Europe/Berlin").unwrap();
    let (bytes, manifest) = runwarden_evidence::export_stream(
        &store,
        &Default::default(),
        &key,
        Some(&berlin),
        trusted.clone(),
        Vec::new(),
        &|_, _| {},
    )
    .await
    .unwrap();
    assert_eq!((manifest.record_count, manifest.complete), (30, true));
    let v = verify_bundle(bytes.as_slice(), &trusted, None).unwrap();
    assert_eq!((v.records, v.tree_size, v.complete), (30, 30, true));
    // The report is in the clinic's time zone: 2023-11-14T22:13:20Z is 23:13 in Berlin.
    let report = String::from_utf8(get(&mut members(&bytes), "report.html").clone()).unwrap();
    assert!(report.contains("2023-11-14 23:13 CET"), "{report}");
    assert!(report.contains("By month (Europe/Berlin)"), "{report}");
    // The zone is under the seal: another zone in the manifest is refused.
    let mut m = members(&bytes);
    let manifest_bytes = get(&mut m, "runwarden-bundle.json");
    let mut v: serde_json::Value = serde_json::from_slice(manifest_bytes).unwrap();
    v["time_zone"] =
        serde_json::json!({"name": "America/New_York", "rule": "EST5EDT,M3.2.0,M11.1.0"});
    *manifest_bytes = serde_json::to_vec_pretty(&v).unwrap();
    assert_refused(&tar_of(&m), &trusted[0], "is not the one the seal signed");
    v["time_zone"] = serde_json::json!({"name": "Europe/Berlin", "rule": "not a rule,,"});
    *get(&mut m, "runwarden-bundle.json") = serde_json::to_vec_pretty(&v).unwrap();
    assert_refused(&tar_of(&m), &trusted[0], "time zone");

    // More records, then a filtered export: consistent with the first checkpoint.
    let first_note = {
        let mut m = members(&bytes);
        String::from_utf8(get(&mut m, "checkpoint.txt").clone()).unwrap()
    };
    for i in 30..40u64 {
        store
            .append(NewRecord {
                envelope: record(i, &key, "later").into_bytes(),
                invocation_id: format!("{i:032x}"),
                host_id: "host-1".into(),
                runbook: "rotate-logs".into(),
                status: "failed".into(),
                started_at_ms: 1_700_000_000_000 + i as i64,
            })
            .await
            .unwrap();
    }
    let filter = runwarden_evidence::Filter {
        runbook: Some("rotate-logs".into()),
        ..Default::default()
    };
    let (bytes, manifest) = runwarden_evidence::export_stream(
        &store,
        &filter,
        &key,
        None,
        trusted.clone(),
        Vec::new(),
        &|_, _| {},
    )
    .await
    .unwrap();
    assert_eq!((manifest.record_count, manifest.complete), (25, false));
    // Without a time zone, UTC as before.
    let report = String::from_utf8(get(&mut members(&bytes), "report.html").clone()).unwrap();
    assert!(
        report.contains("By month (UTC)") && report.contains("T22:"),
        "{report}"
    );
    let v = verify_bundle(bytes.as_slice(), &trusted, Some(&first_note)).unwrap();
    assert_eq!(
        (v.records, v.tree_size, v.complete, v.consistent_with),
        (25, 40, false, Some(30))
    );
}

#[test]
fn a_bundle_repacked_with_tar_and_its_directories_still_verifies() {
    let (bytes, key) = complete(5);
    // As `tar -cf … keys records …` packs what `tar -x` extracted: the directories too.
    let mut out = Vec::new();
    for (name, data) in members(&bytes) {
        for dir in ["keys/", "records/"] {
            if name.starts_with(dir) && !out.windows(dir.len()).any(|w| w == dir.as_bytes()) {
                raw_member(&mut out, dir.as_bytes(), tar::EntryType::Directory, 0, &[]);
            }
        }
        raw_member(
            &mut out,
            name.as_bytes(),
            tar::EntryType::Regular,
            data.len() as u64,
            &data,
        );
    }
    out.extend_from_slice(&[0; 1024]);
    let v = verify_bundle(out.as_slice(), &[key.verifying_key()], None).unwrap();
    assert_eq!(v.records, 5);
    // A directory of another name is not part of a bundle.
    let mut odd = Vec::new();
    raw_member(
        &mut odd,
        b"runwarden-bundle.json",
        tar::EntryType::Regular,
        members(&bytes)[0].1.len() as u64,
        &members(&bytes)[0].1,
    );
    raw_member(&mut odd, b"tmp/", tar::EntryType::Directory, 0, &[]);
    odd.extend_from_slice(&[0; 1024]);
    assert_refused(
        &odd,
        &key.verifying_key(),
        "\"tmp/\" refused: it is a directory",
    );
}

#[test]
fn links_devices_fifos_and_tar_extensions_are_refused() {
    let (bytes, key) = complete(3);
    let m = members(&bytes);
    let chunk = at(&m, "records/00000000.jsonl");
    for (ty, what) in NOT_REGULAR {
        let out = spliced(&m, chunk, |out| {
            raw_member(out, b"records/00000000.jsonl", ty, 0, &[])
        });
        assert_eq!(
            refused(&out, &key.verifying_key()),
            format!(
                "bundle member \"records/00000000.jsonl\" refused: it is {what}; a bundle holds only regular files; re-export the bundle"
            )
        );
    }
}

#[test]
fn a_path_that_leaves_the_bundle_or_hides_what_it_is_is_refused() {
    let (bytes, key) = complete(2);
    let k = key.verifying_key();
    let m = members(&bytes);
    for (name, shown, why) in ODD_NAMES {
        let out = spliced(&m, 1, |out| {
            raw_member(out, name, tar::EntryType::Regular, 2, b"{}")
        });
        assert_eq!(
            refused(&out, &k),
            format!("bundle member \"{shown}\" refused: {why}; re-export the bundle")
        );
    }
    // A ustar header whose name is plain and whose prefix field climbs out: read as the
    // one path they make, as `tar -x` reads it.
    let out = spliced(&m, 1, |out| {
        let mut h = tar::Header::new_ustar();
        h.as_ustar_mut().unwrap().prefix[..2].copy_from_slice(b"..");
        h.as_old_mut().name[..14].copy_from_slice(b"checkpoint.txt");
        h.set_mode(0o644);
        h.set_size(0);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
    });
    assert_eq!(
        refused(&out, &k),
        "bundle member \"../checkpoint.txt\" refused: path leaves the bundle; re-export the bundle"
    );
}

/// Each member's header is held to its kind's cap before a byte of it is read: a small
/// file whose last header claims one byte more is refused without allocating the claim.
#[test]
fn a_member_claiming_more_than_its_kind_may_hold_is_refused_before_it_is_read() {
    let (bytes, key) = complete(3);
    let k = key.verifying_key();
    let m = members(&bytes);
    let key_file = format!("keys/{}.pub", k.key_id_hex());
    // The seal: 16 KiB and 512 bytes for each member it lists (all but it and the manifest).
    let seal = (16 << 10) + 512 * (m.len() as u64 - 2);
    for (name, cap) in [
        ("checkpoint.txt", 64 << 10),
        ("consistency.json", 64 << 20),
        (key_file.as_str(), 4 << 10),
        ("records/00000000.jsonl", 32 << 20),
        ("report.html", 16 << 20),
        ("seal.dsse.json", seal),
    ] {
        let i = at(&m, name);
        let out = spliced(&m[..i], i, |out| {
            raw_member(
                out,
                name.as_bytes(),
                tar::EntryType::Regular,
                cap + 1,
                &m[i].1,
            )
        });
        assert!(out.len() < 64 << 10, "a small file: {}", out.len());
        let (result, allocated) =
            allocated_by(|| verify_bundle(out.as_slice(), std::slice::from_ref(&k), None));
        assert_eq!(
            result.unwrap_err().to_string(),
            format!(
                "bundle member \"{name}\" refused: it is {} bytes; at most {cap} may be here; re-export the bundle",
                cap + 1
            )
        );
        assert!(
            allocated < 1 << 20,
            "{name}: refusing it allocated {allocated} bytes"
        );
    }
    // The manifest, read before the format is known, is held to its own cap.
    let out = spliced(&m[..0], 0, |out| {
        raw_member(
            out,
            b"runwarden-bundle.json",
            tar::EntryType::Regular,
            (1 << 20) + 1,
            &m[0].1,
        )
    });
    assert_refused(
        &out,
        &k,
        "bundle member \"runwarden-bundle.json\" refused: it is 1048577 bytes but at most 1048576 are allowed",
    );
    // A chunk as a GNU sparse file expanding to 4 GiB.
    let chunk = at(&m, "records/00000000.jsonl");
    let out = spliced(&m[..chunk], chunk, |out| {
        sparse_member(out, b"records/00000000.jsonl", 4 << 30)
    });
    let (result, allocated) =
        allocated_by(|| verify_bundle(out.as_slice(), std::slice::from_ref(&k), None));
    assert_eq!(
        result.unwrap_err().to_string(),
        "bundle member \"records/00000000.jsonl\" refused: it is a sparse file; a bundle holds only regular files; re-export the bundle"
    );
    assert!(
        allocated < 1 << 20,
        "refusing it allocated {allocated} bytes"
    );
}

/// Records through a real store, exported to a file as a stream, verified from the file —
/// 3 chunks, every one checked, the log proved complete by its leaves, progress reaching
/// the end. The 50,000-record sibling of `scripts/bench-evidence` runs through the CLI
/// (`host/cli/tests/all/scale.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_export_and_verify_as_a_stream_in_chunks() {
    const N: u64 = 12_000;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("evidence.db"))
        .await
        .unwrap();
    let key = SigningKey::generate("host-1").unwrap();
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..N {
        let (store, envelope) = (store.clone(), record(i, &key, &format!("run {i}")));
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
        if pending.len() >= 256 {
            pending.join_next().await.unwrap().unwrap().unwrap();
        }
    }
    while let Some(r) = pending.join_next().await {
        r.unwrap().unwrap();
    }
    let path = dir.path().join("bundle.tar");
    let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let seen = std::sync::atomic::AtomicU64::new(0);
    let (_, manifest) = runwarden_evidence::export_stream(
        &store,
        &Default::default(),
        &key,
        None,
        vec![key.verifying_key()],
        file,
        &|done, total| {
            assert!(done <= total);
            seen.store(done, std::sync::atomic::Ordering::Relaxed);
        },
    )
    .await
    .unwrap();
    assert_eq!((manifest.record_count, manifest.complete), (N, true));
    assert_eq!(seen.into_inner(), N, "progress reached the end");
    let bundle = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
    let v = verify_bundle(bundle, &[key.verifying_key()], None).unwrap();
    assert_eq!((v.records, v.tree_size, v.complete), (N, N, true));
    let chunks = members(&std::fs::read(&path).unwrap())
        .iter()
        .filter(|(n, _)| n.starts_with("records/"))
        .count();
    assert_eq!(chunks as u64, N.div_ceil(CHUNK));
}

/// A bundle of format 4 as runwarden wrote it before bundles carried a time zone (session
/// 15), kept as bytes: every later runwarden must still verify it, its report included.
/// `RUNWARDEN_WRITE_FIXTURE=1` writes it anew (only when the old format itself changes).
#[test]
fn a_format_4_bundle_from_before_time_zones_still_verifies() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let (bundle, public) = (dir.join("format4-utc.tar"), dir.join("format4-utc.pub"));
    if std::env::var_os("RUNWARDEN_WRITE_FIXTURE").is_some() {
        let (bytes, key) = complete(5);
        std::fs::write(&bundle, bytes).unwrap();
        std::fs::write(&public, format!("{}\n", key.verifying_key().to_text())).unwrap();
    }
    let key = runwarden_evidence::read_verifying_key(&public).unwrap();
    let bytes = std::fs::read(&bundle).unwrap();
    let v = verify_bundle(bytes.as_slice(), &[key], None).unwrap();
    assert_eq!((v.records, v.tree_size, v.complete), (5, 5, true));
    let mut m = members(&bytes);
    let manifest: serde_json::Value =
        serde_json::from_slice(get(&mut m, "runwarden-bundle.json")).unwrap();
    assert!(manifest.get("time_zone").is_none(), "{manifest}");
    let report = String::from_utf8(get(&mut m, "report.html").clone()).unwrap();
    assert!(report.contains("By month (UTC)") && !report.contains("to a person"));
}

#[test]
fn the_report_links_each_record_it_lists_to_where_it_is_and_the_summaries_to_them() {
    let key = SigningKey::generate("host-1").unwrap();
    let log = log(CHUNK + 900, &key);
    let bytes = write_in_layout(&key, &log, |_| true, true, &key, Some(2));
    let v = verify_bundle(bytes.as_slice(), &[key.verifying_key()], None).unwrap();
    assert_eq!(v.records, CHUNK + 900);
    let mut m = members(&bytes);
    let report = String::from_utf8(get(&mut m, "report.html").clone()).unwrap();
    // Every record failed: the latest 1,000 are listed, each with its place in the bundle.
    assert_eq!(report.matches("<tr id=\"r").count(), 1000);
    let last_of_first = CHUNK - 1;
    assert!(
        report.contains(&format!(
            "<tr id=\"r{last_of_first}\"><td>{last_of_first}</td>"
        )),
        "{report}"
    );
    assert!(report.contains(&format!(
        "<a href=\"records/00000000.jsonl\">records/00000000.jsonl</a> line {CHUNK}</td></tr>"
    )));
    assert!(report.contains(
        "<a href=\"records/00000001.jsonl\">records/00000001.jsonl</a> line 1</td></tr>"
    ));
    // The line named is the record's.
    let second = lines(get(&mut m, "records/00000001.jsonl"));
    assert!(second[0].starts_with(&format!("{{\"index\":{CHUNK},")));
    // The host's and the runbook's summary rows link to their latest listed record.
    let latest = CHUNK + 899;
    assert_eq!(
        report
            .matches(&format!("<a href=\"#r{latest}\">record {latest}</a>"))
            .count(),
        2,
        "{report}"
    );
    // A bundle whose report was made before (no layout in its manifest) reads as it was.
    let old = write(&key, &log, |_| true, true, &key);
    let report = String::from_utf8(get(&mut members(&old), "report.html").clone()).unwrap();
    assert!(!report.contains("<a href"), "{report}");
    assert!(verify_bundle(old.as_slice(), &[key.verifying_key()], None).is_ok());
}

/// A signed record of a person's decision on an escalation (its SLA deadline and when it
/// was decided, as the control plane's approval verdict names them), or of the record
/// that opened it when `decided_at` is `None`.
fn decision(i: u64, key: &SigningKey, deadline: u64, decided_at: Option<u64>) -> String {
    decision_by(i, key, deadline, decided_at, true)
}

/// [`decision`], its provenance a person's (tier L3) or not (what a host handing an
/// incident up could claim).
fn decision_by(
    i: u64,
    key: &SigningKey,
    deadline: u64,
    decided_at: Option<u64>,
    person: bool,
) -> String {
    let escalation = serde_json::json!({
        "id": format!("esc_{i:016x}"),
        "opened_at": rfc3339_ms(1_700_000_000_000),
        "sla_deadline": rfc3339_ms(deadline),
    });
    let (provenance, status, guardrails, details) = match decided_at {
        Some(at) => {
            let mut e = escalation;
            e["decided_at"] = rfc3339_ms(at).into();
            (
                match person {
                    true => Provenance::L3 {
                        approver: "token tok_ops (operate scope, tenant clinic)".into(),
                    },
                    false => Provenance::Undecided {
                        reason: "handed up".into(),
                    },
                },
                "declined",
                Some(serde_json::json!([
                    {"guardrail": "repeat", "verdict": "escalate", "detail": "3 in 10 min"},
                    {"guardrail": "approval", "verdict": "denied", "detail": "denied", "escalation": e},
                ])),
                serde_json::json!({}),
            )
        }
        None => (
            Provenance::Undecided {
                reason: "repeat".into(),
            },
            "escalated",
            None,
            serde_json::json!({ "escalation": escalation }),
        ),
    };
    Statement::new(
        "restart-service",
        "c73b7727a07ab051d5b3458b7d72c85ee2ff4b5c2c3e790e6ffa5ec3cabc3c9d",
        Invocation {
            publisher: None,
            invocation_id: format!("{i:032x}"),
            tenant: "clinic".into(),
            host_id: "host-1".into(),
            key_id: key.verifying_key().key_id_hex(),
            provenance,
            runbook_version: "0.1.0".into(),
            grant_digest: None,
            grant: None,
            params: serde_json::json!({}),
            trace: serde_json::json!([]),
            outcome: serde_json::json!({"status": status, "summary": "", "details": details}),
            started_at: rfc3339_ms(decided_at.unwrap_or(1_700_000_000_000)),
            ended_at: rfc3339_ms(decided_at.unwrap_or(1_700_000_000_000)),
            duration_us: 0,
            fuel_consumed: 0,
            dry_run: false,
            incident_id: Some(format!("inc-{i}")),
            guardrails,
        },
    )
    .sign(key)
    .unwrap()
    .to_json()
}

#[test]
fn the_report_counts_people_s_decisions_by_their_sla_from_the_signed_records() {
    let key = SigningKey::generate("host-1").unwrap();
    let hour = 3_600_000;
    let t0 = 1_700_000_000_000;
    let envelopes = vec![
        decision(0, &key, t0 + hour, None),
        decision(1, &key, t0 + hour, Some(t0 + hour / 2)),
        decision(2, &key, t0 + hour, Some(t0 + 2 * hour)),
        decision(3, &key, t0 + hour, Some(t0 + hour)),
        record(4, &key, "ran"),
        // Not a person's decision: whatever its verdicts claim, it is not counted.
        decision_by(5, &key, t0 + hour, Some(t0 + hour / 4), false),
    ];
    let tree = MerkleTree::new(envelopes.iter().map(|e| leaf_hash(e.as_bytes())).collect());
    let log = (envelopes, tree);
    let bytes = write_in_layout(&key, &log, |_| true, true, &key, Some(3));
    verify_bundle(bytes.as_slice(), &[key.verifying_key()], None).unwrap();
    let report = String::from_utf8(get(&mut members(&bytes), "report.html").clone()).unwrap();
    assert!(
        report.contains(
            "Escalations a person decided in these records: 3, within their SLA: 2 (66.7%), late: 1."
        ),
        "{report}"
    );
    // Each summary counts them: the deadline itself is kept, an hour past it is late.
    assert!(
        report.contains("<th>decided in SLA</th><th>decided late</th></tr>"),
        "{report}"
    );
    assert!(
        report.contains("<td>token tok_ops (operate scope, tenant clinic)</td><td>3</td>")
            && report.contains("<td>2</td><td>1</td></tr>"),
        "{report}"
    );
    // Layout 4 also counts, per summary row, the runs a person approved (three of the
    // person's decisions here) and the runs denied a call (none).
    let bytes = write_in_layout(&key, &log, |_| true, true, &key, Some(4));
    verify_bundle(bytes.as_slice(), &[key.verifying_key()], None).unwrap();
    let report = String::from_utf8(get(&mut members(&bytes), "report.html").clone()).unwrap();
    assert!(
        report.contains(
            "<th>decided late</th><th>denied a call</th><th>approved by a person</th></tr>"
        ) && report.contains("<td>2</td><td>1</td><td>0</td><td>3</td></tr>"),
        "{report}"
    );
    // A bundle written in layout 2 reads as it was made: no SLA columns, and it verifies.
    let old = write_in_layout(&key, &log, |_| true, true, &key, Some(2));
    verify_bundle(old.as_slice(), &[key.verifying_key()], None).unwrap();
    let report = String::from_utf8(get(&mut members(&old), "report.html").clone()).unwrap();
    assert!(!report.contains("SLA"), "{report}");
}

/// A filtered export holds exactly the records its filter keeps, whichever way it finds
/// them (the log's indexes for a host, a runbook, a time or a status; each record's
/// statement for a tenant), with proofs that verify — across pages, in runs and gaps.
#[tokio::test]
async fn a_filtered_export_holds_exactly_the_records_its_filter_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("evidence.db"))
        .await
        .unwrap();
    filtered_exports_hold_what_their_filters_keep(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_export_from_postgres_holds_exactly_the_records_its_filter_keeps() {
    let pg = super::pg::Postgres::start();
    let store = Store::open(&pg.url).await.unwrap();
    filtered_exports_hold_what_their_filters_keep(&store).await;
}

async fn filtered_exports_hold_what_their_filters_keep(store: &Store) {
    let key = SigningKey::generate("host-1").unwrap();
    const N: u64 = 2_500;
    let t0 = 1_700_000_000_000i64;
    for i in 0..N {
        // Hosts in long runs, runbooks alternating, times out of order.
        let host = format!("h{}", (i / 700) % 3);
        let tenant = if i % 5 == 0 { "other" } else { "clinic" };
        let status = if i % 7 == 0 { "healed" } else { "failed" };
        let envelope = super::bundle::record_for(i, &key, (&host, tenant), status, "s");
        store
            .append(NewRecord {
                envelope: envelope.into_bytes(),
                invocation_id: format!("{i:032x}"),
                host_id: host,
                runbook: ["restart-service", "rotate-logs"][(i % 2) as usize].into(),
                status: status.into(),
                started_at_ms: t0 + ((i * 7919) % N) as i64,
            })
            .await
            .unwrap();
    }
    let trusted = vec![key.verifying_key()];
    let filters = [
        Filter {
            host: Some("h1".into()),
            ..Default::default()
        },
        Filter {
            runbook: Some("rotate-logs".into()),
            since_ms: Some(t0 + 1000),
            ..Default::default()
        },
        Filter {
            since_ms: Some(t0 + 600),
            until_ms: Some(t0 + 1900),
            ..Default::default()
        },
        Filter {
            status: Some("healed".into()),
            ..Default::default()
        },
        Filter {
            host: Some("h0".into()),
            tenant: Some("other".into()),
            ..Default::default()
        },
        Filter {
            host: Some("nobody".into()),
            ..Default::default()
        },
    ];
    for filter in filters {
        let expected: Vec<u64> = store
            .list(&filter)
            .await
            .unwrap()
            .iter()
            .map(|r| r.index)
            .collect();
        let (bytes, manifest) = runwarden_evidence::export_stream(
            store,
            &filter,
            &key,
            None,
            trusted.clone(),
            Vec::new(),
            &|_, _| {},
        )
        .await
        .unwrap();
        assert_eq!(manifest.record_count, expected.len() as u64, "{filter:?}");
        let v = verify_bundle(bytes.as_slice(), &trusted, None).unwrap();
        assert_eq!((v.records, v.complete), (expected.len() as u64, false));
        let held: Vec<u64> = members(&bytes)
            .iter()
            .filter(|(n, _)| n.starts_with("records/"))
            .flat_map(|(_, data)| lines(data))
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(&l).unwrap()["index"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(held, expected, "{filter:?}");
    }
}
