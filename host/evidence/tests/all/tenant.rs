//! Tenant bundles: the control plane's records of one tenant and every log of the
//! tenant's hosts, in one file, under one statement the control plane signs.

use super::bundle::record_for;
use super::craft::{
    NOT_REGULAR, ODD_NAMES, allocated_by, at, get, members, raw_member, sparse_member, spliced,
    tar_of,
};
use runwarden_evidence::{
    Checkpoint, Filter, LogRole, LogSource, MerkleTree, NewRecord, Segment, SigningKey, Statement,
    Store, TenantLog, TenantStatement, TenantVerified, export_tenant, leaf_hash,
    verify_tenant_bundle, verify_tenant_bundle_since,
};

/// Record `i` signed by `key`, made for `tenant` on `host`.
fn envelope(key: &SigningKey, host: &str, tenant: &str, i: u64, status: &str) -> Vec<u8> {
    record_for(i, key, (host, tenant), status, "ok").into_bytes()
}

/// A control plane's database: `control` records of its own (alternately for "clinic"
/// and "other"), and the mirrored log of each of `hosts` (`per_host` records each).
async fn fleet(
    dir: &std::path::Path,
    control: u64,
    hosts: &[&str],
    per_host: u64,
) -> (Store, SigningKey, Vec<SigningKey>) {
    let store = Store::open(dir.join("server.db").to_str().unwrap())
        .await
        .unwrap();
    let key = SigningKey::generate("runwarden-control").unwrap();
    decide(&store, &key, 0..control).await;
    let hosts = mirror_hosts(&store, hosts, per_host).await;
    (store, key, hosts)
}

/// The control plane's records `range` of its own log: alternately for "clinic" and
/// "other".
async fn decide(store: &Store, key: &SigningKey, range: std::ops::Range<u64>) {
    for i in range {
        let tenant = if i % 2 == 0 { "clinic" } else { "other" };
        let status = if i % 3 == 0 {
            "escalated"
        } else {
            "suppressed"
        };
        let env = envelope(key, "-", tenant, i, status);
        store
            .append(NewRecord {
                envelope: env,
                invocation_id: format!("c{i}"),
                host_id: "-".into(),
                runbook: "restart-service".into(),
                status: status.into(),
                started_at_ms: 1_700_000_000_000 + i as i64 * 1000,
            })
            .await
            .unwrap();
    }
}

/// The mirrored log of each of `hosts`, `per_host` records each; their keys.
async fn mirror_hosts(store: &Store, hosts: &[&str], per_host: u64) -> Vec<SigningKey> {
    mirror_hosts_of(store, hosts, per_host, |_| "clinic").await
}

/// [`mirror_hosts`], record `i` made for tenant `tenant_of(i)`.
async fn mirror_hosts_of(
    store: &Store,
    hosts: &[&str],
    per_host: u64,
    tenant_of: impl Fn(u64) -> &'static str,
) -> Vec<SigningKey> {
    let mut keys = Vec::new();
    for host in hosts {
        let hk = SigningKey::generate(host).unwrap();
        let envelopes: Vec<Vec<u8>> = (0..per_host)
            .map(|i| envelope(&hk, host, tenant_of(i), i, "healed"))
            .collect();
        let tree = MerkleTree::new(envelopes.iter().map(|e| leaf_hash(e)).collect());
        let origin = format!("runwarden/{host}");
        let note = Checkpoint {
            origin: origin.clone(),
            size: per_host,
            root: tree.root(),
        }
        .sign(&hk)
        .unwrap();
        store
            .mirror(
                &hk.verifying_key(),
                &Segment {
                    origin,
                    first: 0,
                    envelopes,
                    checkpoint: note,
                },
            )
            .await
            .unwrap();
        keys.push(hk);
    }
    keys
}

/// Export tenant "clinic" of `store`: its share of the control log and `hosts`' logs
/// (and a host never mirrored, left out).
async fn export(
    store: &Store,
    key: &SigningKey,
    hosts: &[SigningKey],
) -> (Vec<u8>, TenantStatement) {
    export_of(store, "clinic", key, hosts).await
}

async fn export_of(
    store: &Store,
    tenant: &str,
    key: &SigningKey,
    hosts: &[SigningKey],
) -> (Vec<u8>, TenantStatement) {
    let filter = Filter {
        tenant: Some(tenant.into()),
        ..Default::default()
    };
    export_by(store, &filter, key, hosts).await
}

async fn export_by(
    store: &Store,
    filter: &Filter,
    key: &SigningKey,
    hosts: &[SigningKey],
) -> (Vec<u8>, TenantStatement) {
    let mut logs = vec![TenantLog {
        role: LogRole::Control,
        host: None,
        enrolled_at_ms: None,
        source: LogSource::TenantView,
    }];
    for h in hosts.iter().map(|h| h.name()).chain(["clinic-never-seen"]) {
        logs.push(TenantLog {
            role: LogRole::Host,
            host: Some(h.into()),
            enrolled_at_ms: Some(1_700_000_000_000),
            source: LogSource::Mirror(format!("runwarden/{h}")),
        });
    }
    let heard = std::sync::Mutex::new(Vec::new());
    let (out, st) = export_tenant(
        store,
        filter,
        &logs,
        key,
        None,
        vec![key.verifying_key()],
        Vec::new(),
        &|done, total| heard.lock().unwrap().push((done, total)),
    )
    .await
    .unwrap();
    let total: u64 = st.logs.iter().map(|l| l.records).sum();
    assert_eq!(heard.into_inner().unwrap().last(), Some(&(total, total)));
    (out, st)
}

fn verify(bytes: &[u8], key: &SigningKey) -> TenantVerified {
    verify_tenant_bundle(bytes, &[key.verifying_key()]).unwrap()
}

/// Each log's result: Ok(records) or the error's text.
fn results(v: &TenantVerified) -> Vec<Result<u64, String>> {
    v.logs
        .iter()
        .map(|(_, r)| r.as_ref().map(|v| v.records).map_err(|e| e.to_string()))
        .collect()
}

#[tokio::test]
async fn a_tenant_bundle_holds_each_log_in_its_own_directory_and_verifies_under_the_control_key() {
    let dir = tempfile::tempdir().unwrap();
    let (store, key, hosts) = fleet(dir.path(), 6, &["clinic-01", "clinic-02"], 5).await;
    let (bytes, st) = export(&store, &key, &hosts).await;
    assert_eq!(st.version, 2);
    let whose: Vec<_> = st
        .logs
        .iter()
        .map(|l| {
            (
                l.role,
                l.host.clone(),
                l.records,
                l.complete,
                l.member.as_str(),
            )
        })
        .collect();
    assert_eq!(
        whose,
        [
            (LogRole::Control, None, 3, true, "logs/00000-control/"),
            (
                LogRole::Host,
                Some("clinic-01".into()),
                5,
                true,
                "logs/00001-host/"
            ),
            (
                LogRole::Host,
                Some("clinic-02".into()),
                5,
                true,
                "logs/00002-host/"
            ),
        ],
        "the host never mirrored is left out"
    );
    let m = members(&bytes);
    let names: Vec<&str> = m.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[0], "tenant-bundle.dsse.json");
    assert_eq!(names[1], "logs/00000-control/runwarden-bundle.json");
    assert_eq!(names[names.len() - 2], "logs/00002-host/seal.dsse.json");
    assert_eq!(names.last(), Some(&"index.html"));
    let index = String::from_utf8(m.last().unwrap().1.clone()).unwrap();
    assert!(
        index.contains("Remediation evidence of tenant clinic"),
        "{index}"
    );
    assert!(
        index.contains("<a href=\"logs/00001-host/report.html\">report</a>"),
        "{index}"
    );
    assert!(
        names.contains(&"logs/00001-host/records/00000000.jsonl"),
        "{names:?}"
    );

    let v = verify(&bytes, &key);
    assert!(v.ok(), "{v}");
    assert_eq!(results(&v), [Ok(3), Ok(5), Ok(5)]);
    // Every log is whole: the control plane's as the tenant's view of its log (3 of its
    // 6 records, numbered 0..3, under a checkpoint of the view), the hosts' as they are.
    assert!(
        v.logs.iter().all(|(_, r)| r.as_ref().unwrap().complete),
        "{v}"
    );
    let control = &v.logs[0].1.as_ref().unwrap();
    assert_eq!(
        (control.origin.as_str(), control.tree_size),
        ("runwarden/runwarden-control/tenant/clinic", 3)
    );
    // Only the control plane's share of its own log: the other tenant's records are not
    // in it.
    let control = String::from_utf8(
        get(
            &mut members(&bytes),
            "logs/00000-control/records/00000000.jsonl",
        )
        .clone(),
    )
    .unwrap();
    let tenants: Vec<String> = control
        .lines()
        .map(|line| {
            let line: serde_json::Value = serde_json::from_str(line).unwrap();
            let env =
                runwarden_evidence::Envelope::from_json(&line["envelope"].to_string()).unwrap();
            Statement::from_envelope(&env).unwrap().predicate.tenant
        })
        .collect();
    assert_eq!(tenants, ["clinic"; 3]);

    // Trusting another key: nothing is believed.
    let other = SigningKey::generate("runwarden-control").unwrap();
    let e = verify_tenant_bundle(bytes.as_slice(), &[other.verifying_key()]).unwrap_err();
    assert!(
        e.to_string().contains("not signed by a key you trust"),
        "{e}"
    );
    // A host's key is not the control plane's either.
    let e = verify_tenant_bundle(bytes.as_slice(), &[hosts[0].verifying_key()]).unwrap_err();
    assert!(
        e.to_string().contains("not signed by a key you trust"),
        "{e}"
    );
}

#[tokio::test]
async fn a_bad_record_fails_its_own_log_naming_it_and_the_other_logs_still_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (store, key, hosts) = fleet(dir.path(), 4, &["clinic-01", "clinic-02"], 5).await;
    let (bytes, _) = export(&store, &key, &hosts).await;
    let mut m = members(&bytes);
    let chunk = get(&mut m, "logs/00001-host/records/00000000.jsonl");
    let text = String::from_utf8(chunk.clone()).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[2] = lines[2].replacen("\"sig\":\"", "\"sig\":\"AAAA", 1);
    *chunk = (lines.join("\n") + "\n").into_bytes();
    let v = verify(&tar_of(&m), &key);
    assert!(!v.ok());
    let r = results(&v);
    assert_eq!((&r[0], &r[2]), (&Ok(2), &Ok(5)), "{v}");
    let (_, bad) = &v.logs[1];
    let bad = bad.as_ref().unwrap_err();
    assert_eq!(bad.record, Some(2), "{bad}");
    assert!(format!("{v}").contains("FAILED  host clinic-01"), "{v}");
}

#[tokio::test]
async fn a_log_removed_replaced_moved_or_added_to_is_named_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, key, hosts) = fleet(dir.path(), 4, &["clinic-01", "clinic-02"], 5).await;
    let (bytes, _) = export(&store, &key, &hosts).await;
    let m = members(&bytes);

    // Removed: that log is named missing, the others verify.
    let removed: Vec<_> = m
        .iter()
        .filter(|(n, _)| !n.starts_with("logs/00001-host/"))
        .cloned()
        .collect();
    let v = verify(&tar_of(&removed), &key);
    let r = results(&v);
    assert!(
        r[1].as_ref()
            .unwrap_err()
            .contains("missing from the bundle (removed)"),
        "{v}"
    );
    assert_eq!((&r[0], &r[2]), (&Ok(2), &Ok(5)), "{v}");

    // Cut short (its seal and report gone): that log fails, the next still verifies.
    let cut: Vec<_> = m
        .iter()
        .filter(|(n, _)| {
            n != "logs/00001-host/seal.dsse.json" && n != "logs/00001-host/report.html"
        })
        .cloned()
        .collect();
    let v = verify(&tar_of(&cut), &key);
    let r = results(&v);
    assert!(r[1].is_err(), "{v}");
    assert_eq!(r[2], Ok(5), "{v}");

    // Replaced by another export of the same log (same records, a manifest made at another
    // time): its manifest is not the one the statement signed.
    let (again, _) = {
        std::thread::sleep(std::time::Duration::from_millis(5));
        export(&store, &key, &hosts).await
    };
    let again = members(&again);
    let swapped: Vec<_> = m
        .iter()
        .map(|(n, d)| match n.starts_with("logs/00002-host/") {
            true => again.iter().find(|(x, _)| x == n).unwrap().clone(),
            false => (n.clone(), d.clone()),
        })
        .collect();
    let v = verify(&tar_of(&swapped), &key);
    let r = results(&v);
    assert!(
        r[2].as_ref()
            .unwrap_err()
            .contains("not the one the statement signed"),
        "{v}"
    );
    assert_eq!(r[1], Ok(5));

    // A log's member moved into another's directory: refused by that log's seal.
    let mut moved = m.clone();
    let at = moved
        .iter()
        .position(|(n, _)| n == "logs/00001-host/report.html")
        .unwrap();
    moved[at].0 = "logs/00001-host/records/00000001.jsonl".into();
    let v = verify(&tar_of(&moved), &key);
    assert!(results(&v)[1].is_err(), "{v}");

    // A member no log of the statement holds, or a log's member after the next log, or
    // anything after the index page: the bundle is refused.
    let index = m.last().unwrap().clone();
    assert_eq!(index.0, "index.html");
    let body = &m[..m.len() - 1];
    let refused = |members: Vec<(String, Vec<u8>)>| {
        verify_tenant_bundle(tar_of(&members).as_slice(), &[key.verifying_key()])
            .unwrap_err()
            .to_string()
    };
    let e = refused(
        [
            body,
            &[("logs/99999-host/x".into(), b"x".to_vec()), index.clone()],
        ]
        .concat(),
    );
    assert!(e.contains("lists no log it belongs to"), "{e}");
    let e = refused([body, &[m[2].clone(), index.clone()]].concat());
    assert!(e.contains("its log came earlier"), "{e}");
    let e = refused([m.as_slice(), &[m[2].clone()]].concat());
    assert!(e.contains("comes after index.html"), "{e}");
    // The index page: made from the statement alone, altered or left out, refused.
    let e = refused(body.to_vec());
    assert!(e.contains("ends before index.html"), "{e}");
    let mut altered = index.clone();
    altered.1 = String::from_utf8(altered.1)
        .unwrap()
        .replace("yes", "no")
        .into_bytes();
    let e = refused([body, &[altered]].concat());
    assert!(
        e.contains("not the page of this bundle's signed statement"),
        "{e}"
    );
}

#[tokio::test]
async fn a_tenants_view_grows_append_only_and_holds_only_the_tenants_records() {
    let dir = tempfile::tempdir().unwrap();
    let (store, key, hosts) = fleet(dir.path(), 4, &["clinic-01"], 2).await;
    views_grow_append_only(&store, &key, &hosts).await;
}

#[tokio::test]
async fn a_tenants_view_in_postgres_is_the_same() {
    let pg = super::pg::Postgres::start();
    let store = Store::open(&pg.url).await.unwrap();
    let key = SigningKey::generate("runwarden-control").unwrap();
    decide(&store, &key, 0..4).await;
    let hosts = mirror_hosts(&store, &["clinic-01"], 2).await;
    views_grow_append_only(&store, &key, &hosts).await;
    // Two control planes on one database catching the views up at once: each record
    // lands in one view once.
    decide(&store, &key, 200..2196).await;
    let other = Store::open(&pg.url).await.unwrap();
    let (a, b) = tokio::join!(store.tenant_view("clinic"), other.tenant_view("other"));
    assert_eq!((a.unwrap(), b.unwrap()), (1002, 1002));
    assert_eq!(other.tenant_view("clinic").await.unwrap(), 1002);
}

/// What every backend must do with tenant views.
async fn views_grow_append_only(store: &Store, key: &SigningKey, hosts: &[SigningKey]) {
    let (first, st) = export(store, key, hosts).await;
    assert_eq!((st.logs[0].tree_size, st.logs[0].complete), (2, true));
    // More decisions, for both tenants: the view grows by the tenant's, and its new
    // checkpoint is proved consistent with the one exported before.
    decide(store, key, 100..104).await;
    let (second, st) = export(store, key, hosts).await;
    assert_eq!(st.logs[0].tree_size, 4);
    let v = verify(&second, key);
    assert!(v.ok(), "{v}");
    let mut m = members(&second);
    let proofs: serde_json::Value =
        serde_json::from_slice(get(&mut m, "logs/00000-control/consistency.json")).unwrap();
    assert_eq!(proofs[0]["old_size"], 2, "{proofs}");
    assert!(verify(&first, key).ok());
    // The auditor kept the view's checkpoint from the first bundle: the second is proved
    // an append-only extension of it, and the first, checked against the second's, is
    // named a rollback.
    let kept = |bundle: &[u8]| {
        String::from_utf8(get(&mut members(bundle), "logs/00000-control/checkpoint.txt").clone())
            .unwrap()
    };
    let trusted = [key.verifying_key()];
    let v = verify_tenant_bundle_since(second.as_slice(), &trusted, Some(&kept(&first))).unwrap();
    assert!(v.ok(), "{v}");
    assert_eq!(v.logs[0].1.as_ref().unwrap().consistent_with, Some(2));
    let v = verify_tenant_bundle_since(first.as_slice(), &trusted, Some(&kept(&second))).unwrap();
    let rolled = v.logs[0].1.as_ref().unwrap_err();
    assert!(
        rolled.message.contains("older than the one you trust"),
        "{v}"
    );
    let host_note =
        String::from_utf8(get(&mut members(&second), "logs/00001-host/checkpoint.txt").clone())
            .unwrap();
    let v = verify_tenant_bundle_since(second.as_slice(), &trusted, Some(&host_note)).unwrap();
    assert!(v.ok(), "{v}");
    assert_eq!(v.logs[1].1.as_ref().unwrap().consistent_with, Some(2));
    let foreign = host_note.replacen("runwarden/clinic-01", "runwarden/elsewhere", 1);
    let e = verify_tenant_bundle_since(second.as_slice(), &trusted, Some(&foreign)).unwrap_err();
    assert!(
        e.to_string().contains("which this bundle does not hold"),
        "{e}"
    );

    // Another tenant's view, of the same log: its records only.
    let (theirs, st) = export_of(store, "other", key, &[]).await;
    assert_eq!((st.logs.len(), st.logs[0].records), (1, 4), "{:?}", st.logs);
    let v = verify(&theirs, key);
    assert!(v.ok(), "{v}");

    // A record of another tenant put into this tenant's view (signed by the control
    // plane, a valid record of its log): named, before anything else is checked.
    let mut m = members(&second);
    let mut t = members(&theirs);
    let chunk = "logs/00000-control/records/00000000.jsonl";
    let foreign = String::from_utf8(get(&mut t, chunk).clone()).unwrap();
    let ours = String::from_utf8(get(&mut m, chunk).clone()).unwrap();
    let mut lines: Vec<&str> = ours.lines().collect();
    lines[1] = foreign.lines().nth(1).unwrap();
    *get(&mut m, chunk) = (lines.join("\n") + "\n").into_bytes();
    let v = verify(&tar_of(&m), key);
    let bad = v.logs[0].1.as_ref().unwrap_err();
    assert_eq!(bad.record, Some(1), "{v}");
    assert!(bad.message.contains("made for tenant \"other\""), "{v}");
    assert!(v.logs[1].1.is_ok(), "{v}");

    // A name that cannot be a tenant's is refused.
    let e = store.tenant_view("clinic/../other").await.unwrap_err();
    assert!(e.to_string().contains("a tenant is 1 to 128"), "{e}");
}

#[test]
fn a_tenant_bundle_of_format_1_still_verifies() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let key = runwarden_evidence::read_verifying_key(&dir.join("tenant-v1.pub")).unwrap();
    let bytes = std::fs::read(dir.join("tenant-v1.tar")).unwrap();
    let v = verify_tenant_bundle(bytes.as_slice(), &[key]).unwrap();
    assert!(v.ok(), "{v}");
    assert_eq!(v.statement.version, 1);
    assert_eq!(results(&v), [Ok(3), Ok(4), Ok(4)]);
}

#[tokio::test]
async fn a_filtered_tenant_bundle_proves_each_record_it_holds() {
    // Sizes that are no multiple of a page (1,024) or of a block of the proofs (64).
    let dir = tempfile::tempdir().unwrap();
    let (store, key, hosts) = fleet(dir.path(), 2 * 1024 + 150, &["clinic-01"], 1024 + 77).await;
    // Host records start 1 ms apart, the control plane's 1 s apart: from +700 ms keeps
    // host records 700.. and every control record but the first.
    let filter = Filter {
        tenant: Some("clinic".into()),
        since_ms: Some(1_700_000_000_700),
        ..Default::default()
    };
    let (bytes, st) = export_by(&store, &filter, &key, &hosts).await;
    let whose: Vec<_> = st
        .logs
        .iter()
        .map(|l| (l.records, l.tree_size, l.complete))
        .collect();
    assert_eq!(whose, [(1098, 1099, false), (401, 1101, false)]);
    let v = verify(&bytes, &key);
    assert!(v.ok(), "{v}");
    assert_eq!(results(&v), [Ok(1098), Ok(401)]);
}

#[tokio::test]
async fn a_host_log_holding_another_tenants_record_is_not_exported() {
    let dir = tempfile::tempdir().unwrap();
    let (store, key, _) = fleet(dir.path(), 2, &[], 0).await;
    let hosts = mirror_hosts_of(&store, &["clinic-01"], 5, |i| {
        if i == 3 { "other" } else { "clinic" }
    })
    .await;
    let filter = Filter {
        tenant: Some("clinic".into()),
        ..Default::default()
    };
    let logs = [TenantLog {
        role: LogRole::Host,
        host: Some("clinic-01".into()),
        enrolled_at_ms: None,
        source: LogSource::Mirror(format!("runwarden/{}", hosts[0].name())),
    }];
    let e = export_tenant(
        &store,
        &filter,
        &logs,
        &key,
        None,
        vec![],
        Vec::new(),
        &|_, _| {},
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("record 3 of runwarden/clinic-01 is made for tenant \"other\""),
        "{e}"
    );
}

/// What verifying a tenant bundle refuses as a whole.
#[track_caller]
fn refused_whole(bytes: &[u8], key: &SigningKey) -> String {
    match verify_tenant_bundle(bytes, &[key.verifying_key()]) {
        Ok(v) => panic!("verified, but must be refused: {v}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn links_devices_fifos_and_tar_extensions_are_refused_in_a_log_and_between_logs() {
    let dir = tempfile::tempdir().unwrap();
    let (store, key, hosts) = fleet(dir.path(), 4, &["clinic-01", "clinic-02"], 5).await;
    let (bytes, _) = export(&store, &key, &hosts).await;
    let m = members(&bytes);
    let chunk = at(&m, "logs/00001-host/records/00000000.jsonl");
    let next = at(&m, "logs/00002-host/runwarden-bundle.json");
    for (ty, what) in NOT_REGULAR {
        // In a host's log: that log fails, naming the member; the others still verify.
        let out = spliced(&m, chunk, |out| {
            raw_member(out, m[chunk].0.as_bytes(), ty, 0, &[])
        });
        let v = verify(&out, &key);
        assert_eq!(
            results(&v),
            [
                Ok(2),
                Err(format!(
                    "bundle member \"records/00000000.jsonl\" refused: it is {what}; a bundle holds only regular files; re-export the bundle"
                )),
                Ok(5)
            ]
        );
        // Where the next log starts: the bundle is refused.
        let out = spliced(&m, next, |out| {
            raw_member(out, m[next].0.as_bytes(), ty, 0, &[])
        });
        assert_eq!(
            refused_whole(&out, &key),
            format!(
                "bundle member \"logs/00002-host/runwarden-bundle.json\" refused: it is {what}; a tenant bundle holds only regular files; re-export the bundle"
            )
        );
    }
}

#[tokio::test]
async fn a_path_that_leaves_its_log_or_the_bundle_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, key, hosts) = fleet(dir.path(), 4, &["clinic-01"], 5).await;
    let (bytes, _) = export(&store, &key, &hosts).await;
    let m = members(&bytes);
    let checkpoint = at(&m, "logs/00001-host/checkpoint.txt");
    for (name, shown, why) in ODD_NAMES {
        // Under a host's log: what follows its directory is held to a bundle's names.
        let out = spliced(&m, checkpoint, |out| {
            let name = [b"logs/00001-host/", name].concat();
            raw_member(out, &name, tar::EntryType::Regular, 2, b"{}")
        });
        let v = verify(&out, &key);
        assert_eq!(
            results(&v),
            [
                Ok(2),
                Err(format!(
                    "bundle member \"{shown}\" refused: {why}; re-export the bundle"
                ))
            ]
        );
    }
    // Outside every log's directory: no log of the signed statement holds it.
    let index = at(&m, "index.html");
    for name in [
        "../index.html",
        "/index.html",
        "logs/../index.html",
        "logs/00001-host",
    ] {
        let out = spliced(&m, index, |out| {
            raw_member(out, name.as_bytes(), tar::EntryType::Regular, 2, b"{}")
        });
        assert_eq!(
            refused_whole(&out, &key),
            format!(
                "bundle member \"{name}\" refused: the signed statement lists no log it belongs to"
            )
        );
    }
}

/// The tenant bundle's own members are held to their caps on the header, like a log's:
/// a small file claiming 4 GiB is refused without allocating it.
#[tokio::test]
async fn a_member_claiming_more_than_it_may_hold_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let (store, key, hosts) = fleet(dir.path(), 4, &["clinic-01"], 5).await;
    let (bytes, _) = export(&store, &key, &hosts).await;
    let m = members(&bytes);
    let claim = |name: &str| {
        let i = at(&m, name);
        spliced(&m[..i], i, |out| {
            raw_member(
                out,
                name.as_bytes(),
                tar::EntryType::Regular,
                4 << 30,
                &m[i].1,
            )
        })
    };
    for (name, expect) in [
        (
            "tenant-bundle.dsse.json",
            "tenant-bundle.dsse.json is 4294967296 bytes, more than 16777216",
        ),
        (
            "logs/00001-host/runwarden-bundle.json",
            "bundle member \"logs/00001-host/runwarden-bundle.json\" is 4294967296 bytes, more than 1048576",
        ),
        (
            "index.html",
            "index.html is not the page of this bundle's signed statement (altered): do not rely on it",
        ),
    ] {
        let out = claim(name);
        assert!(out.len() < 1 << 20, "a small file: {}", out.len());
        let (result, allocated) =
            allocated_by(|| verify_tenant_bundle(out.as_slice(), &[key.verifying_key()]));
        assert_eq!(result.unwrap_err().to_string(), expect);
        assert!(
            allocated < 1 << 20,
            "{name}: refusing it allocated {allocated} bytes"
        );
    }
    // In a log, its own caps: the log is refused on the header, and the file ending where
    // the header says it goes on is named with that reason.
    let chunk = at(&m, "logs/00001-host/records/00000000.jsonl");
    let out = spliced(&m[..chunk], chunk, |out| {
        raw_member(
            out,
            m[chunk].0.as_bytes(),
            tar::EntryType::Regular,
            4 << 30,
            &m[chunk].1,
        )
    });
    let (result, allocated) =
        allocated_by(|| verify_tenant_bundle(out.as_slice(), &[key.verifying_key()]));
    let msg = result.unwrap_err().to_string();
    assert!(
        msg.starts_with("corrupt or truncated bundle (")
            && msg.ends_with(
                ") after its log \"logs/00001-host/\" failed: bundle member \"records/00000000.jsonl\" refused: it is 4294967296 bytes; at most 33554432 may be here; re-export the bundle"
            ),
        "{msg}"
    );
    assert!(
        allocated < 1 << 20,
        "refusing it allocated {allocated} bytes"
    );
    // A chunk as a GNU sparse file expanding to 4 GiB: that log fails, the rest is read.
    let out = spliced(&m, chunk, |out| {
        sparse_member(out, m[chunk].0.as_bytes(), 4 << 30)
    });
    let (result, allocated) =
        allocated_by(|| verify_tenant_bundle(out.as_slice(), &[key.verifying_key()]));
    assert_eq!(
        results(&result.unwrap()),
        [
            Ok(2),
            Err("bundle member \"records/00000000.jsonl\" refused: it is a sparse file; a bundle holds only regular files; re-export the bundle".into())
        ]
    );
    assert!(
        allocated < 1 << 20,
        "refusing it allocated {allocated} bytes"
    );
}
