//! Auditor bundles read strictly: only the members a bundle has, regular files, once each,
//! no larger than the manifest declares, checked on the header before anything is read; the
//! unsigned report must be the report of the verified records; and what the bundle says is
//! escaped before anyone prints it.

use super::craft::{
    Members, NOT_REGULAR, allocated_by, assert_refused, get, members, raw_member, refused,
    sparse_member, spliced, tar_of,
};
use runwarden_evidence::{
    BundleContents, BundleRecord, Checkpoint, Invocation, Manifest, MerkleTree, Provenance,
    SigningKey, Statement, VerifyingKey, leaf_hash, rfc3339_ms, verify_bundle,
};
use tar::EntryType;

/// A signed record of a run whose outcome summary is `summary`.
pub(super) fn record(i: u64, key: &SigningKey, summary: &str) -> String {
    record_for(i, key, ("host-1", "clinic"), "failed", summary)
}

/// A signed record of a run on `host` for `tenant`, its outcome `status` and `summary`.
pub(super) fn record_for(
    i: u64,
    key: &SigningKey,
    (host, tenant): (&str, &str),
    status: &str,
    summary: &str,
) -> String {
    Statement::new(
        "restart-service",
        "c73b7727a07ab051d5b3458b7d72c85ee2ff4b5c2c3e790e6ffa5ec3cabc3c9d",
        Invocation {
            publisher: None,
            invocation_id: format!("{i:032x}"),
            tenant: tenant.into(),
            host_id: host.into(),
            key_id: key.verifying_key().key_id_hex(),
            provenance: Provenance::Manual {
                operator: Some("ops".into()),
            },
            runbook_version: "0.1.0".into(),
            grant_digest: None,
            grant: None,
            params: serde_json::json!({"unit": "nginx.service"}),
            trace: serde_json::json!([]),
            outcome: serde_json::json!({"status": status, "summary": summary, "details": {}}),
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
}

/// A complete bundle of `n` records as its writer makes it, and the key that trusts it.
fn bundle_with(n: u64, summary: &str) -> (Vec<u8>, VerifyingKey) {
    let key = SigningKey::generate("host-1").unwrap();
    let envelopes: Vec<String> = (0..n).map(|i| record(i, &key, summary)).collect();
    let tree = MerkleTree::new(envelopes.iter().map(|e| leaf_hash(e.as_bytes())).collect());
    let cp = Checkpoint {
        origin: "runwarden/host-1".into(),
        size: n,
        root: tree.root(),
    };
    let contents = BundleContents {
        manifest: Manifest {
            version: runwarden_evidence::BUNDLE_VERSION,
            origin: cp.origin.clone(),
            tree_size: n,
            record_count: n,
            complete: true,
            filter: serde_json::json!({}),
            created_at: rfc3339_ms(1_700_000_000_000),
            members: Default::default(),
            segment: None,
            time_zone: None,
            report: None,
        },
        checkpoint_note: cp.sign(&key).unwrap(),
        records: envelopes
            .into_iter()
            .enumerate()
            .map(|(i, envelope)| BundleRecord {
                index: i as u64,
                proof: tree.inclusion_proof(i as u64).unwrap(),
                envelope,
            })
            .collect(),
        consistency: vec![],
        keys: vec![key.verifying_key()],
    };
    let mut bytes = Vec::new();
    contents.write(&mut bytes).unwrap();
    (bytes, key.verifying_key())
}

fn bundle(n: u64) -> (Vec<u8>, VerifyingKey) {
    bundle_with(n, "could not restart nginx.service")
}

/// Rewrite the manifest's declared sizes to the members' actual ones, as a forger would.
fn declare_actual_sizes(m: &mut Members) {
    let sizes: serde_json::Map<String, serde_json::Value> = m
        .iter()
        .filter(|(n, _)| n != "runwarden-bundle.json")
        .map(|(n, d)| (n.clone(), d.len().into()))
        .collect();
    let manifest = get(m, "runwarden-bundle.json");
    let mut v: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    v["members"] = sizes.into();
    *manifest = serde_json::to_vec_pretty(&v).unwrap();
}

#[test]
fn a_written_bundle_declares_its_members_and_verifies() {
    let (bytes, key) = bundle(3);
    let v = verify_bundle(bytes.as_slice(), std::slice::from_ref(&key), None).unwrap();
    assert_eq!((v.records, v.tree_size, v.complete), (3, 3, true));
    let mut m = members(&bytes);
    assert_eq!(m[0].0, "runwarden-bundle.json", "the manifest comes first");
    let manifest: Manifest = serde_json::from_slice(get(&mut m, "runwarden-bundle.json")).unwrap();
    assert_eq!(manifest.version, 3);
    let names: Vec<&str> = m[1..].iter().map(|(n, _)| n.as_str()).collect();
    let declared: Vec<&str> = manifest.members.keys().map(String::as_str).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(declared, sorted);
    for (name, data) in &m[1..] {
        assert_eq!(manifest.members[name], data.len() as u64, "{name}");
    }
    // Read back through the same strict reader, a bundle repacked member for member (as
    // `tar -cf` does) verifies, with the `keys/` directory entry tar adds.
    let mut out = Vec::new();
    let mut dir = false;
    for (name, data) in &m {
        if name.starts_with("keys/") && !std::mem::replace(&mut dir, true) {
            raw_member(&mut out, b"keys/", EntryType::Directory, 0, &[]);
        }
        raw_member(
            &mut out,
            name.as_bytes(),
            EntryType::Regular,
            data.len() as u64,
            data,
        );
    }
    out.extend_from_slice(&[0; 1024]);
    verify_bundle(out.as_slice(), &[key], None).unwrap();
}

#[test]
fn a_version_2_bundle_without_declared_sizes_still_verifies() {
    let (bytes, key) = bundle(4);
    let mut m = members(&bytes);
    let manifest = get(&mut m, "runwarden-bundle.json");
    let mut v: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    v["version"] = 2.into();
    v.as_object_mut().unwrap().remove("members");
    *manifest = serde_json::to_vec_pretty(&v).unwrap();
    let v2 = tar_of(&m);
    let v = verify_bundle(v2.as_slice(), std::slice::from_ref(&key), None).unwrap();
    assert_eq!(v.records, 4);

    // Its members are still capped by what its manifest states: 4 records' worth.
    let mut big = m.clone();
    get(&mut big, "records.jsonl").resize(4 * (16 << 20) + 1, b'\n');
    assert_refused(
        &tar_of(&big),
        &key,
        "bundle member \"records.jsonl\" refused: it is 67108865 bytes but at most 67108864 are allowed",
    );
    // A version 2 manifest that declares sizes is not one this code wrote.
    let manifest = get(&mut m, "runwarden-bundle.json");
    let mut v: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    v["members"] = serde_json::json!({"records.jsonl": 1});
    *manifest = serde_json::to_vec(&v).unwrap();
    assert_refused(&tar_of(&m), &key, "has no members field");
}

#[test]
fn a_sparse_member_claiming_4_gib_is_refused_before_anything_is_read() {
    let (bytes, key) = bundle(2);
    let m = members(&bytes);
    let mut out = Vec::new();
    raw_member(
        &mut out,
        m[0].0.as_bytes(),
        EntryType::Regular,
        m[0].1.len() as u64,
        &m[0].1,
    );
    // A GNU sparse member: 512 bytes stored, a map that expands it to 4 GiB of zeros.
    sparse_member(&mut out, b"records.jsonl", 4 << 30);
    out.extend_from_slice(&[0; 1024]);
    assert!(out.len() < 10_000, "a small file: {}", out.len());
    let (_, counted) = allocated_by(|| std::hint::black_box(vec![0u8; 4 << 20]));
    assert!(
        counted >= 4 << 20,
        "the allocation counter counts: {counted}"
    );

    let (result, bytes_allocated) =
        allocated_by(|| verify_bundle(out.as_slice(), std::slice::from_ref(&key), None));
    let msg = result.unwrap_err().to_string();
    assert_eq!(
        msg,
        "bundle member \"records.jsonl\" refused: it is a sparse file; a bundle holds only regular files; re-export the bundle"
    );
    assert!(
        bytes_allocated < 1 << 20,
        "refusing it allocated {bytes_allocated} bytes"
    );

    // A plain member whose header claims 4 GiB in the same small file: refused on the
    // header, against what the manifest declares, without reading it.
    let mut out = Vec::new();
    raw_member(
        &mut out,
        m[0].0.as_bytes(),
        EntryType::Regular,
        m[0].1.len() as u64,
        &m[0].1,
    );
    raw_member(
        &mut out,
        b"checkpoint.txt",
        EntryType::Regular,
        4 << 30,
        &m[1].1,
    );
    let (result, bytes_allocated) =
        allocated_by(|| verify_bundle(out.as_slice(), std::slice::from_ref(&key), None));
    let msg = result.unwrap_err().to_string();
    assert!(
        msg.starts_with(
            "bundle member \"checkpoint.txt\" refused: it is 4294967296 bytes but runwarden-bundle.json declares "
        ),
        "{msg}"
    );
    assert!(bytes_allocated < 1 << 20, "{bytes_allocated} bytes");
}

#[test]
fn a_duplicate_member_is_refused() {
    let (bytes, key) = bundle(3);
    let m = members(&bytes);
    // A second records.jsonl after the first, as `tar -x` would extract over it.
    let mut twice = m.clone();
    let records = m
        .iter()
        .find(|(n, _)| n == "records.jsonl")
        .unwrap()
        .clone();
    twice.push(records);
    assert_refused(
        &tar_of(&twice),
        &key,
        "bundle member \"records.jsonl\" refused: it appears twice",
    );
    let mut manifest_twice = m.clone();
    manifest_twice.push(m[0].clone());
    assert_refused(
        &tar_of(&manifest_twice),
        &key,
        "bundle member \"runwarden-bundle.json\" refused: it appears twice",
    );
}

#[test]
fn a_member_a_bundle_does_not_have_is_refused() {
    let (bytes, key) = bundle(2);
    for extra in [
        "notes.txt",
        "keys/00000000.pub.bak",
        "keys/ABCDEF01.pub",
        "./records.jsonl",
    ] {
        let mut m = members(&bytes);
        m.push((extra.into(), b"x".to_vec()));
        assert_refused(
            &tar_of(&m),
            &key,
            &format!("bundle member \"{extra}\" refused: not part of a runwarden bundle"),
        );
    }
    // Listed in the manifest does not make it part of a bundle.
    let mut m = members(&bytes);
    m.push(("notes.txt".into(), b"x".to_vec()));
    declare_actual_sizes(&mut m);
    assert_refused(
        &tar_of(&m),
        &key,
        "runwarden-bundle.json lists a member \"notes.txt\" that is not part of a runwarden bundle",
    );
    // A member a version 3 manifest does not list.
    let mut m = members(&bytes);
    let report = m.pop().unwrap();
    declare_actual_sizes(&mut m);
    m.push(report);
    assert_refused(
        &tar_of(&m),
        &key,
        "bundle member \"report.html\" refused: runwarden-bundle.json does not list it",
    );
}

#[test]
fn links_devices_fifos_and_tar_extensions_are_refused() {
    let (bytes, key) = bundle(2);
    let m = members(&bytes);
    for (ty, what) in NOT_REGULAR {
        let out = spliced(&m, 1, |out| raw_member(out, b"records.jsonl", ty, 0, &[]));
        assert_refused(
            &out,
            &key,
            &format!(
                "bundle member \"records.jsonl\" refused: it is {what}; a bundle holds only regular files"
            ),
        );
    }
}

#[test]
fn a_path_that_leaves_the_bundle_is_refused() {
    let (bytes, key) = bundle(2);
    for (name, why) in [
        ("../records.jsonl", "path leaves the bundle"),
        ("keys/../records.jsonl", "path leaves the bundle"),
        ("records/../x", "path leaves the bundle"),
        ("/records.jsonl", "absolute path"),
        ("C:records.jsonl", "absolute path"),
        ("keys\\00000000.pub", "its name holds a backslash"),
    ] {
        let mut m = members(&bytes);
        m.insert(1, (name.into(), b"{}".to_vec()));
        assert_eq!(
            refused(&tar_of(&m), &key),
            format!("bundle member \"{name}\" refused: {why}; re-export the bundle")
        );
    }
}

#[test]
fn a_member_larger_than_declared_or_over_the_total_cap_is_refused() {
    let (bytes, key) = bundle(3);
    let mut m = members(&bytes);
    let declared = get(&mut m, "records.jsonl").len();
    get(&mut m, "records.jsonl").extend_from_slice(b"\n\n");
    assert_refused(
        &tar_of(&m),
        &key,
        &format!(
            "bundle member \"records.jsonl\" refused: it is {} bytes but runwarden-bundle.json declares {declared}",
            declared + 2
        ),
    );

    // Declarations are capped too: per member, and all of them together.
    let declare = |sizes: serde_json::Value| {
        let mut m = members(&bytes);
        let manifest = get(&mut m, "runwarden-bundle.json");
        let mut v: serde_json::Value = serde_json::from_slice(manifest).unwrap();
        v["members"] = sizes;
        *manifest = serde_json::to_vec(&v).unwrap();
        tar_of(&m)
    };
    assert_refused(
        &declare(serde_json::json!({"checkpoint.txt": 1 << 20, "records.jsonl": 10})),
        &key,
        "runwarden-bundle.json declares member \"checkpoint.txt\" of 1048576 bytes, more than a bundle may hold",
    );
    assert_refused(
        &declare(serde_json::json!({
            "records.jsonl": 3u64 << 30, "report.html": 3u64 << 30, "consistency.json": 3u64 << 30,
        })),
        &key,
        "runwarden-bundle.json declares 9663676416 bytes of members, more than the 8589934592 a bundle may hold",
    );
}

#[test]
fn a_member_listed_but_absent_or_before_the_manifest_is_refused() {
    let (bytes, key) = bundle(2);
    let mut m = members(&bytes);
    m.retain(|(n, _)| n != "consistency.json");
    assert_refused(
        &tar_of(&m),
        &key,
        "bundle member \"consistency.json\" is listed in runwarden-bundle.json but missing",
    );
    let mut m = members(&bytes);
    m.swap(0, 1);
    assert_refused(
        &tar_of(&m),
        &key,
        "bundle member \"checkpoint.txt\" refused: it comes before runwarden-bundle.json, which must be the first member",
    );
}

#[test]
fn a_report_that_is_not_the_report_of_the_records_is_refused() {
    let (bytes, key) = bundle(3);
    let mut m = members(&bytes);
    let report = String::from_utf8(get(&mut m, "report.html").clone()).unwrap();
    assert!(report.contains("Outcomes: 3 failed."), "{report}");
    // The forger fixes up the declared size too.
    *get(&mut m, "report.html") = report
        .replace("Outcomes: 3 failed.", "Outcomes: 3 healed.")
        .into_bytes();
    declare_actual_sizes(&mut m);
    assert_refused(
        &tar_of(&m),
        &key,
        "report.html is not the report of the records in this bundle (altered or forged)",
    );
    // A key file beside it that is not the key it is named for.
    let mut m = members(&bytes);
    let at = m.iter().position(|(n, _)| n.starts_with("keys/")).unwrap();
    let other = SigningKey::generate("host-1").unwrap().verifying_key();
    m[at].1 = format!("{}\n", other.to_text()).into_bytes();
    declare_actual_sizes(&mut m);
    assert_refused(&tar_of(&m), &key, "it is not the public key its name says");
    // Without a report (and not listed) the records still verify: nothing unsigned to trust.
    let mut m = members(&bytes);
    m.retain(|(n, _)| n != "report.html");
    declare_actual_sizes(&mut m);
    verify_bundle(tar_of(&m).as_slice(), &[key], None).unwrap();
}

#[test]
fn what_a_bundle_says_is_escaped_in_errors() {
    let (bytes, key) = bundle(2);
    // A member name that would move up a line and erase it.
    let mut m = members(&bytes);
    m.insert(1, ("records.jsonl\x1b[1A\x1b[2K".into(), b"x".to_vec()));
    let msg = refused(&tar_of(&m), &key);
    assert!(
        msg.contains(
            "\"records.jsonl\\x1b[1A\\x1b[2K\" refused: its name holds control characters"
        ),
        "{msg}"
    );
    assert!(!msg.contains('\x1b'), "{msg:?}");
    // A record line whose unknown field (quoted in the parser's error) holds escapes and a
    // bidi override.
    let mut m = members(&bytes);
    let records = get(&mut m, "records.jsonl");
    let text = String::from_utf8(records.clone()).unwrap();
    let (first, rest) = text.split_once('\n').unwrap();
    *records = format!(
        "{},\"\\u001b[1A\\u001b[2K\\u202everified\":1}}\n{rest}",
        &first[..first.len() - 1]
    )
    .into_bytes();
    declare_actual_sizes(&mut m);
    let msg = refused(&tar_of(&m), &key);
    assert!(
        msg.contains("record 0: line 1 of records.jsonl is corrupt")
            && msg.contains("\\x1b[1A\\x1b[2K\\u{202e}verified"),
        "{msg}"
    );
    assert!(
        !msg.contains('\x1b') && !msg.contains('\u{202e}'),
        "{msg:?}"
    );
}

#[test]
fn a_manifest_naming_another_log_than_the_checkpoint_is_refused() {
    let (bytes, key) = bundle(2);
    let mut m = members(&bytes);
    let manifest = String::from_utf8(get(&mut m, "runwarden-bundle.json").clone()).unwrap();
    *get(&mut m, "runwarden-bundle.json") = manifest
        .replace("runwarden/host-1", "runwarden/host-2")
        .into_bytes();
    assert_refused(
        &tar_of(&m),
        &key,
        "the manifest says log \"runwarden/host-2\" but the signed checkpoint is of log \"runwarden/host-1\"",
    );
}

/// The README's tampering walk-through: a bundle extracted and repacked with GNU tar (which
/// adds the `keys/` directory) is read, and the record deleted from it is named.
#[test]
fn a_bundle_repacked_with_tar_is_read_and_the_deleted_record_named() {
    let (bytes, key) = bundle(3);
    let d = tempfile::tempdir().unwrap();
    let tar = |args: &[&str]| {
        let o = std::process::Command::new("tar")
            .args(args)
            .current_dir(d.path())
            .output()
            .expect("tar is installed");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    std::fs::write(d.path().join("bundle.tar"), &bytes).unwrap();
    std::fs::create_dir(d.path().join("t")).unwrap();
    tar(&["-xf", "bundle.tar", "-C", "t"]);
    let names = [
        "runwarden-bundle.json",
        "checkpoint.txt",
        "records.jsonl",
        "consistency.json",
        "keys",
        "report.html",
    ];
    let repack = |out: &str| {
        let mut args = vec!["-cf", out, "-C", "t"];
        args.extend(names);
        tar(&args);
        std::fs::read(d.path().join(out)).unwrap()
    };
    let same = repack("same.tar");
    let v = verify_bundle(same.as_slice(), std::slice::from_ref(&key), None).unwrap();
    assert_eq!(v.records, 3);

    let records = d.path().join("t/records.jsonl");
    let text = std::fs::read_to_string(&records).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(1);
    std::fs::write(&records, format!("{}\n", lines.join("\n"))).unwrap();
    assert_refused(
        &repack("tampered.tar"),
        &key,
        "record 1: missing from a complete bundle (removed)",
    );
}
