//! An auditor's bundle, tampered with every way the issue lists: `evidence verify` must
//! fail, non-zero, naming the first bad record where there is one.

use super::*;
use std::io::Read;

pub(super) struct Bundle {
    pub(super) members: Vec<(String, Vec<u8>)>,
}

impl Bundle {
    pub(super) fn read(path: &Path) -> Bundle {
        let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
        let members = a
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().display().to_string();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (name, data)
            })
            .collect();
        Bundle { members }
    }

    /// Write it back, the manifest's declared member sizes edited to match (as a forger
    /// would), so each tampering reaches the check it is aimed at.
    pub(super) fn write(&self, path: &Path) {
        let mut members = self.members.clone();
        let sizes: serde_json::Map<String, serde_json::Value> = members
            .iter()
            .filter(|(n, _)| n != "runwarden-bundle.json")
            .map(|(n, d)| (n.clone(), d.len().into()))
            .collect();
        if let Some((_, m)) = members
            .iter_mut()
            .find(|(n, _)| n == "runwarden-bundle.json")
        {
            let mut v: serde_json::Value = serde_json::from_slice(m).unwrap();
            if v.get("members").is_some() {
                v["members"] = sizes.into();
                *m = serde_json::to_vec_pretty(&v).unwrap();
            }
        }
        Self::write_raw(&members, path);
    }

    /// Write `members` as they are.
    pub(super) fn write_raw(members: &[(String, Vec<u8>)], path: &Path) {
        let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data.as_slice()).unwrap();
        }
        b.finish().unwrap();
    }

    fn get(&mut self, name: &str) -> &mut Vec<u8> {
        &mut self.members.iter_mut().find(|(n, _)| n == name).unwrap().1
    }

    /// The member holding the records: a small bundle's one chunk.
    fn records(&mut self) -> &mut Vec<u8> {
        self.get(RECORDS)
    }

    pub(super) fn lines(&mut self) -> Vec<String> {
        String::from_utf8(self.records().clone())
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    pub(super) fn set_lines(&mut self, lines: &[String]) {
        *self.records() = format!("{}\n", lines.join("\n")).into_bytes();
    }
}

/// The records of a small bundle: its one chunk.
const RECORDS: &str = "records/00000000.jsonl";

/// The envelope of a records line, verbatim (`{"index":…,"envelope":{…}}`).
pub(super) fn envelope_of(line: &str) -> &str {
    let at = line.find(",\"envelope\":").unwrap() + ",\"envelope\":".len();
    &line[at..line.len() - 1]
}

/// The line with its envelope replaced.
fn with_envelope(line: &str, envelope: &str) -> String {
    let at = line.find(",\"envelope\":").unwrap() + ",\"envelope\":".len();
    format!("{}{envelope}}}", &line[..at])
}

/// A data dir with `n` recorded runs and a complete bundle of them.
fn setup(d: &Path, n: usize) -> (PathBuf, PathBuf) {
    let policy = write_policy(d, "");
    for _ in 0..n {
        let o = runwarden(
            d,
            &[
                "runbook",
                "run",
                &component("trivial"),
                "--policy",
                policy.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let bundle = d.join("bundle.tar");
    let o = runwarden(d, &["evidence", "export", "-o", bundle.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    (bundle, d.join("signing-keys/cli-test.pub"))
}

fn verify(d: &Path, bundle: &Path, key: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "evidence",
        "verify",
        bundle.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    runwarden(d, &args)
}

#[track_caller]
fn assert_fails(o: &Output, expect: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "verify must fail: {err}");
    assert!(err.contains(expect), "expected {expect:?} in {err:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
}

#[test]
fn an_untouched_bundle_verifies() {
    let d = tempfile::tempdir().unwrap();
    let (bundle, key) = setup(d.path(), 4);
    let o = verify(d.path(), &bundle, &key, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with("verified 4 records") && out.contains("tree size 4"),
        "{out}"
    );
    let report = String::from_utf8(Bundle::read(&bundle).get("report.html").clone()).unwrap();
    // Runs, then healed, no-op, failed, refused, interrupted, dry run, other.
    assert!(
        report.contains("<tr><td>trivial</td><td>4</td><td>0</td><td>4</td>")
            && report.contains("<tr><td>run by hand</td><td>4</td></tr>")
            && report.contains(
                "complete log up to the checkpoint: verification proves nothing was left out"
            ),
        "{report}"
    );
}

#[test]
fn require_complete_accepts_the_whole_log_and_refuses_a_filtered_export() {
    let d = tempfile::tempdir().unwrap();
    let (bundle, key) = setup(d.path(), 3);
    let o = verify(d.path(), &bundle, &key, &["--require-complete"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let filtered = d.path().join("filtered.tar");
    let o = runwarden(
        d.path(),
        &[
            "evidence",
            "export",
            "--runbook",
            "trivial",
            "-o",
            filtered.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = verify(d.path(), &filtered, &key, &[]);
    assert!(
        o.status.success(),
        "a filtered export verifies: {}",
        stderr(&o)
    );
    assert_fails(
        &verify(d.path(), &filtered, &key, &["--require-complete"]),
        "--require-complete: this is a filtered export (3 of the log's 3 records)",
    );

    // The same verdicts as one JSON object each, same exit status, nothing on stderr.
    let json = |bundle: &Path, extra: &[&str]| -> (Option<i32>, serde_json::Value) {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        let o = verify(d.path(), bundle, &key, &args);
        assert!(o.stderr.is_empty(), "{}", stderr(&o));
        (o.status.code(), serde_json::from_slice(&o.stdout).unwrap())
    };
    let (code, v) = json(&bundle, &["--require-complete"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        (
            &v["verified"],
            &v["records"],
            &v["tree_size"],
            &v["complete"]
        ),
        (&true.into(), &3.into(), &3.into(), &true.into()),
        "{v}"
    );
    assert_eq!(v["root"].as_str().map(str::len), Some(64), "{v}");
    let (code, v) = json(&filtered, &["--require-complete"]);
    assert_eq!(
        (code, &v["verified"], &v["complete"]),
        (Some(1), &false.into(), &false.into()),
        "{v}"
    );
    let mut b = Bundle::read(&bundle);
    let mut lines = b.lines();
    lines.remove(1);
    b.set_lines(&lines);
    let bad = d.path().join("bad.tar");
    b.write(&bad);
    let (code, v) = json(&bad, &[]);
    assert_eq!(
        (code, &v["verified"], &v["record"]),
        (Some(1), &false.into(), &1.into()),
        "{v}"
    );
    assert!(v["error"].as_str().unwrap().contains("missing"), "{v}");
}

#[test]
fn every_tampering_is_detected_and_the_record_named() {
    let d = tempfile::tempdir().unwrap();
    let (bundle, key) = setup(d.path(), 5);
    let bad = d.path().join("bad.tar");
    let tamper = |f: &dyn Fn(&mut Bundle)| {
        let mut b = Bundle::read(&bundle);
        f(&mut b);
        b.write(&bad);
        verify(d.path(), &bad, &key, &[])
    };

    // One flipped byte inside record 2's signed payload.
    let o = tamper(&|b| {
        let mut lines = b.lines();
        let env = envelope_of(&lines[2]).to_string();
        let at = env.find("\"payload\":\"").unwrap() + 20;
        let mut bytes = env.into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        lines[2] = with_envelope(&lines[2], std::str::from_utf8(&bytes).unwrap());
        b.set_lines(&lines);
    });
    assert_fails(&o, "record 2: ");

    // Record 3 deleted (and the manifest's count edited to match).
    let o = tamper(&|b| {
        let mut lines = b.lines();
        lines.remove(3);
        b.set_lines(&lines);
        let m = String::from_utf8(b.get("runwarden-bundle.json").clone()).unwrap();
        *b.get("runwarden-bundle.json") = m
            .replace("\"record_count\": 5", "\"record_count\": 4")
            .into_bytes();
    });
    assert_fails(&o, "record 3: missing");

    // Records 1 and 2 swapped.
    let o = tamper(&|b| {
        let mut lines = b.lines();
        lines.swap(1, 2);
        b.set_lines(&lines);
    });
    assert_fails(&o, "record 2: out of order");

    // The log truncated: the last two records dropped, the count edited to match.
    let o = tamper(&|b| {
        let mut lines = b.lines();
        lines.truncate(3);
        b.set_lines(&lines);
        let m = String::from_utf8(b.get("runwarden-bundle.json").clone()).unwrap();
        *b.get("runwarden-bundle.json") = m
            .replace("\"record_count\": 5", "\"record_count\": 3")
            .into_bytes();
    });
    assert_fails(&o, "record 3: missing");

    // Record 1 replaced by one signed with a key the auditor does not trust.
    let o = tamper(&|b| {
        let mut lines = b.lines();
        let env = runwarden_evidence::Envelope::from_json(envelope_of(&lines[1])).unwrap();
        let rogue = runwarden_evidence::SigningKey::generate("cli-test").unwrap();
        let forged =
            runwarden_evidence::Envelope::sign(&env.payload_type, &env.payload().unwrap(), &rogue);
        lines[1] = with_envelope(&lines[1], &forged.to_json());
        b.set_lines(&lines);
    });
    assert_fails(&o, "record 1: signature");

    // Record 3 carries record 4's signature: right key, wrong message.
    let o = tamper(&|b| {
        let mut lines = b.lines();
        let sig_of = |line: &str| -> runwarden_evidence::Envelope {
            runwarden_evidence::Envelope::from_json(envelope_of(line)).unwrap()
        };
        let four = sig_of(&lines[4]);
        let mut three = sig_of(&lines[3]);
        three.signatures = four.signatures.clone();
        lines[3] = with_envelope(&lines[3], &three.to_json());
        b.set_lines(&lines);
    });
    assert_fails(&o, "record 3: ");

    // The checkpoint's size, then its root, edited.
    for (what, edit) in [("size", 1usize), ("root", 2usize)] {
        let o = tamper(&|b| {
            let note = String::from_utf8(b.get("checkpoint.txt").clone()).unwrap();
            let mut lines: Vec<String> = note.split('\n').map(String::from).collect();
            lines[edit] = if edit == 1 {
                "6".into()
            } else {
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()
            };
            *b.get("checkpoint.txt") = lines.join("\n").into_bytes();
        });
        assert_fails(&o, "checkpoint");
        assert!(
            !stderr(&o).contains("record "),
            "{what}: the checkpoint is the problem, not a record"
        );
    }
}

#[test]
fn a_rolled_back_log_is_detected_against_a_checkpoint_the_auditor_kept() {
    let d = tempfile::tempdir().unwrap();
    let (exported, key) = setup(d.path(), 3);
    let old_bundle = d.path().join("old-bundle.tar");
    std::fs::copy(&exported, &old_bundle).unwrap();
    let old_cp = d.path().join("old-checkpoint.txt");
    std::fs::write(
        &old_cp,
        Bundle::read(&old_bundle).get("checkpoint.txt").clone(),
    )
    .unwrap();
    // Two more runs and a new bundle: consistent with the old checkpoint.
    let (new_bundle, _) = setup(d.path(), 2);
    let o = verify(
        d.path(),
        &new_bundle,
        &key,
        &["--since-checkpoint", old_cp.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("consistent with the earlier checkpoint of size 3")
    );
    // The auditor now holds the newer checkpoint; showing them the old bundle is a rollback.
    let new_cp = d.path().join("new-checkpoint.txt");
    std::fs::write(
        &new_cp,
        Bundle::read(&new_bundle).get("checkpoint.txt").clone(),
    )
    .unwrap();
    let o = verify(
        d.path(),
        &old_bundle,
        &key,
        &["--since-checkpoint", new_cp.to_str().unwrap()],
    );
    assert_fails(&o, "rolled back");
}

#[test]
fn bad_bundles_and_keys_give_one_line_errors() {
    let d = tempfile::tempdir().unwrap();
    let (bundle, key) = setup(d.path(), 2);
    // Truncated file.
    let bytes = std::fs::read(&bundle).unwrap();
    let cut = d.path().join("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let o = verify(d.path(), &cut, &key, &[]);
    assert_ne!(o.status.code(), Some(0));
    assert_eq!(stderr(&o).trim_end().lines().count(), 1, "{}", stderr(&o));
    // Unknown version.
    let mut b = Bundle::read(&bundle);
    let m = String::from_utf8(b.get("runwarden-bundle.json").clone()).unwrap();
    *b.get("runwarden-bundle.json") = m.replace("\"version\": 4", "\"version\": 7").into_bytes();
    let v7 = d.path().join("v7.tar");
    b.write(&v7);
    assert_fails(
        &verify(d.path(), &v7, &key, &[]),
        "unknown bundle version 7",
    );
    // A key file that is not a key.
    let not_key = d.path().join("x.pub");
    std::fs::write(&not_key, "hello").unwrap();
    let o = verify(d.path(), &bundle, &not_key, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("not a runwarden public key") || stderr(&o).contains("public key"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn extra_duplicate_and_sparse_members_are_refused_by_name() {
    let d = tempfile::tempdir().unwrap();
    let (bundle, key) = setup(d.path(), 2);
    let bad = d.path().join("bad.tar");
    let original = Bundle::read(&bundle);

    // The records twice: `tar -x` would extract the second over the first.
    let mut members = original.members.clone();
    let at = members.iter().position(|(n, _)| n == RECORDS).unwrap();
    let records = members[at].clone();
    members.insert(at + 1, records);
    Bundle::write_raw(&members, &bad);
    assert_fails(
        &verify(d.path(), &bad, &key, &[]),
        "bundle member \"records/00000000.jsonl\" refused: it appears twice; re-export the bundle",
    );

    // A member no bundle has.
    let mut members = original.members.clone();
    members.push(("run-me.sh".into(), b"#!/bin/sh\n".to_vec()));
    Bundle::write_raw(&members, &bad);
    assert_fails(
        &verify(d.path(), &bad, &key, &[]),
        "bundle member \"run-me.sh\" refused: not part of a runwarden bundle",
    );

    // The records as a GNU sparse file expanding to 4 GiB, in a file of a few KB.
    let mut out = Vec::new();
    {
        let mut b = tar::Builder::new(&mut out);
        let (name, data) = &original.members[0];
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_slice()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_path(RECORDS).unwrap();
        h.set_entry_type(tar::EntryType::GNUSparse);
        h.set_size(512);
        h.set_mode(0o644);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.set_real_size(4 << 30);
        gnu.sparse[0].set_offset((4 << 30) - 512);
        gnu.sparse[0].set_length(512);
        h.set_cksum();
        b.append(&h, &[b'x'; 512][..]).unwrap();
        b.finish().unwrap();
    }
    assert!(out.len() < 10_000);
    std::fs::write(&bad, &out).unwrap();
    assert_fails(
        &verify(d.path(), &bad, &key, &[]),
        "bundle member \"records/00000000.jsonl\" refused: it is a sparse file; a bundle holds only regular files",
    );

    // The report edited to say all is well: the seal does not cover it.
    let mut b = Bundle::read(&bundle);
    let report = String::from_utf8(b.get("report.html").clone()).unwrap();
    *b.get("report.html") = report
        .replace(
            "<td>2</td><td>0</td><td>2</td>",
            "<td>2</td><td>2</td><td>0</td>",
        )
        .into_bytes();
    b.write(&bad);
    assert_fails(
        &verify(d.path(), &bad, &key, &[]),
        "bundle member \"report.html\" is not the one the seal signed",
    );
}

#[test]
fn escape_sequences_in_a_bundle_cannot_rewrite_the_failed_line() {
    let d = tempfile::tempdir().unwrap();
    let (bundle, key) = setup(d.path(), 2);
    let bad = d.path().join("bad.tar");
    let check = |o: &Output, escaped: &str| {
        assert_fails(o, "verification FAILED: ");
        let err = stderr(o);
        assert!(err.contains(escaped), "expected {escaped:?} in {err:?}");
        assert!(
            !o.stderr.contains(&0x1b) && !o.stdout.contains(&0x1b),
            "a raw ESC reached the terminal: {err:?}"
        );
    };

    // In a member name: up one line, erase it.
    let mut b = Bundle::read(&bundle);
    b.members
        .insert(1, ("x\x1b[1A\x1b[2Kverified".into(), b"x".to_vec()));
    Bundle::write_raw(&b.members, &bad);
    check(
        &verify(d.path(), &bad, &key, &[]),
        "\"x\\x1b[1A\\x1b[2Kverified\" refused",
    );

    // In a record's field, which the parser's error quotes.
    let mut b = Bundle::read(&bundle);
    let mut lines = b.lines();
    let first = lines[0].clone();
    lines[0] = format!(
        "{},\"\\u001b[1A\\u001b[2Kverified\":1}}",
        &first[..first.len() - 1]
    );
    b.set_lines(&lines);
    b.write(&bad);
    check(
        &verify(d.path(), &bad, &key, &[]),
        "\\x1b[1A\\x1b[2Kverified",
    );
}

#[test]
fn evidence_list_and_show_escape_what_a_record_holds() {
    use runwarden_evidence::{Invocation, NewRecord, Provenance, Statement, Store};
    let d = tempfile::tempdir().unwrap();
    setup(d.path(), 1);
    let key =
        runwarden_evidence::read_signing_key(&d.path().join("signing-keys/cli-test.key")).unwrap();
    let evil = "x\x1b[1A\x1b[2Khealed\u{202e}";
    let escaped = "x\\x1b[1A\\x1b[2Khealed\\u{202e}";
    let envelope = Statement::new(
        evil,
        "c73b7727a07ab051d5b3458b7d72c85ee2ff4b5c2c3e790e6ffa5ec3cabc3c9d",
        Invocation {
            publisher: None,
            invocation_id: evil.into(),
            tenant: evil.into(),
            host_id: evil.into(),
            key_id: key.verifying_key().key_id_hex(),
            provenance: Provenance::Manual { operator: None },
            runbook_version: evil.into(),
            grant_digest: None,
            grant: None,
            params: serde_json::json!({}),
            trace: serde_json::json!([]),
            outcome: serde_json::json!({"status": evil, "summary": evil, "details": {}}),
            started_at: runwarden_evidence::rfc3339_ms(0),
            ended_at: runwarden_evidence::rfc3339_ms(1),
            duration_us: 1000,
            fuel_consumed: 1,
            dry_run: false,
            incident_id: None,
            guardrails: None,
        },
    )
    .sign(&key)
    .unwrap();
    let db = d.path().join("evidence.db");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = Store::open(db.to_str().unwrap()).await.unwrap();
            store
                .append(NewRecord {
                    envelope: envelope.to_json().into_bytes(),
                    invocation_id: evil.into(),
                    host_id: evil.into(),
                    runbook: evil.into(),
                    status: evil.into(),
                    started_at_ms: 0,
                })
                .await
                .unwrap();
        });
    for args in [&["evidence", "list"][..], &["evidence", "show", "1"]] {
        let o = runwarden(d.path(), args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains(escaped), "{args:?}: {out:?}");
        assert!(
            !out.contains('\x1b') && !out.contains('\u{202e}'),
            "{args:?}: raw controls reached the terminal: {out:?}"
        );
    }
}

#[test]
fn a_bundle_in_the_clinics_time_zone_verifies_and_a_bad_zone_is_named() {
    let d = tempfile::tempdir().unwrap();
    let (_, key) = setup(d.path(), 1);
    let bundle = d.path().join("berlin.tar");
    let o = runwarden(
        d.path(),
        &[
            "evidence",
            "export",
            "-o",
            bundle.to_str().unwrap(),
            "--time-zone",
            "Europe/Berlin",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = verify(d.path(), &bundle, &key, &["--require-complete"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut a = tar::Archive::new(std::fs::File::open(&bundle).unwrap());
    let report = a
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().to_str() == Some("report.html"))
        .map(|mut e| {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            s
        })
        .unwrap();
    assert!(report.contains("(Europe/Berlin)"), "{report}");
    assert!(
        report.contains(" CET") || report.contains(" CEST"),
        "{report}"
    );
    for zone in ["Europe/Berln", "../../etc/passwd"] {
        let o = runwarden(
            d.path(),
            &[
                "evidence",
                "export",
                "-o",
                d.path().join("x.tar").to_str().unwrap(),
                "--time-zone",
                zone,
            ],
        );
        assert_eq!(o.status.code(), Some(2), "{zone}");
        assert!(stderr(&o).contains("--time-zone"), "{}", stderr(&o));
        assert!(!d.path().join("x.tar").exists());
    }
}
