//! A tenant's evidence as an auditor gets it from a fleet, real processes over a real
//! nats-server: `evidence export --tenant T` at the server gives one bundle holding the
//! control plane's records of T and the log of every host T enrolled (as the server
//! mirrored it), under a statement signed by the control plane. `evidence verify` with
//! the control plane's public key alone checks every log under its enrolled host key and
//! names the first bad record of each log; another tenant's records and hosts are not in
//! it.

use super::fleet::OperatorFleet;
use super::offline::{caught_up, submit};
use super::tamper::{Bundle, envelope_of};
use super::{runwarden, stderr};
use serde_json::Value;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

fn export(fleet: &OperatorFleet, tenant: &str, out: &Path) {
    let o = runwarden(
        &fleet.data,
        &[
            "evidence",
            "export",
            "--tenant",
            tenant,
            "-o",
            out.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // --json: one object naming each log, and no progress line.
    let v: Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["tenant"], tenant, "{v}");
    let logs = v["logs"].as_array().unwrap();
    assert!(
        logs[0]["host"].is_null(),
        "the control plane's view first: {v}"
    );
    let sum: u64 = logs.iter().map(|l| l["records"].as_u64().unwrap()).sum();
    assert_eq!(v["records"].as_u64(), Some(sum), "{v}");
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
}

fn verify(bundle: &Path, key: &Path) -> Output {
    runwarden(
        bundle.parent().unwrap(),
        &[
            "evidence",
            "verify",
            bundle.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    )
}

/// The statement a tenant bundle's first member signs.
fn statement(bundle: &Bundle) -> Value {
    let (name, data) = &bundle.members[0];
    assert_eq!(name, "tenant-bundle.dsse.json");
    let env = runwarden_evidence::Envelope::from_json(std::str::from_utf8(data).unwrap()).unwrap();
    serde_json::from_slice(&env.payload().unwrap()).unwrap()
}

/// The one-log bundle held in directory `dir` of `outer`.
fn inner(outer: &Bundle, dir: &str) -> Bundle {
    let members = outer
        .members
        .iter()
        .filter_map(|(n, d)| Some((n.strip_prefix(dir)?.to_string(), d.clone())))
        .collect();
    Bundle { members }
}

/// The tenant every record of a one-log bundle was made for.
fn tenants_of(mut log: Bundle) -> Vec<String> {
    log.lines()
        .iter()
        .map(|line| {
            let env = runwarden_evidence::Envelope::from_json(envelope_of(line)).unwrap();
            runwarden_evidence::Statement::from_envelope(&env)
                .unwrap()
                .predicate
                .tenant
        })
        .collect()
}

#[test]
fn a_tenants_export_holds_the_control_log_and_each_of_its_hosts_logs_and_nothing_of_another_tenant()
{
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let fleet = OperatorFleet::start(r);
    // Tenant clinic-b's admin: a data dir whose admin token is clinic-b's.
    let b_admin = r.join("clinic-b-admin");
    std::fs::create_dir_all(&b_admin).unwrap();
    let made = runwarden(
        &fleet.data,
        &[
            "token", "create", "--tenant", "clinic-b", "--scope", "admin", "--name", "b",
        ],
    );
    assert!(made.status.success(), "{}", stderr(&made));
    std::fs::write(b_admin.join("admin-token"), &made.stdout).unwrap();

    let a1 = fleet.enroll(r, "clinic-a-01");
    let a2 = fleet.enroll(r, "clinic-a-02");
    let b1 = fleet.enroll_as(&b_admin, r, "clinic-b-01", "nginx.service");
    let _agents: Vec<_> = [&a1, &a2, &b1].map(|d| fleet.agent(d).0).into();

    // Each host heals one incident; one incident of each tenant escalates (the control
    // plane decides that alone, into its own log).
    for (admin, host) in [
        (&fleet.data, "clinic-a-01"),
        (&fleet.data, "clinic-a-02"),
        (&b_admin, "clinic-b-01"),
    ] {
        let rec = submit(
            admin,
            &fleet.url,
            &format!(
                r#"{{"host":"{host}","type":"service-down","severity":"high","service":"nginx.service"}}"#
            ),
        );
        assert_eq!(rec["status"], "healed", "{rec}");
        let rec = submit(
            admin,
            &fleet.url,
            &format!(r#"{{"host":"{host}","type":"fan-noise","severity":"low"}}"#),
        );
        assert_eq!(rec["status"], "escalated", "{rec}");
    }
    caught_up(&fleet, "clinic-a-01", 1);
    caught_up(&fleet, "clinic-a-02", 1);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = runwarden(
            &b_admin,
            &["--server", &fleet.url, "hosts", "list", "--json"],
        );
        let hosts: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if hosts[0]["mirrored_records"]
            .as_u64()
            .is_some_and(|n| n >= 1)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "clinic-b-01 not mirrored: {hosts}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    let out = r.join("audit");
    std::fs::create_dir_all(&out).unwrap();
    let control_pub = fleet.data.join("control-key/runwarden-control.pub");
    let a_bundle = out.join("local.tar");
    export(&fleet, "local", &a_bundle);

    // The auditor, with the control plane's public key only.
    let v = verify(&a_bundle, &control_pub);
    let said = String::from_utf8_lossy(&v.stdout).into_owned();
    assert!(v.status.success(), "{said}{}", stderr(&v));
    assert!(said.starts_with("tenant local: 3 log(s)"), "{said}");
    assert_eq!(said.matches("\n  ok ").count(), 3, "{said}");
    assert!(
        said.contains("host clinic-a-01: verified 1 records"),
        "{said}"
    );
    assert!(
        said.contains("host clinic-a-02: verified 1 records"),
        "{said}"
    );
    assert!(!said.contains("clinic-b"), "{said}");
    // Every log is whole, the control plane's as the tenant's view of its log: the
    // bundle holds every record of the tenant up to signed checkpoints.
    let strict = runwarden(
        a_bundle.parent().unwrap(),
        &[
            "evidence",
            "verify",
            a_bundle.to_str().unwrap(),
            "--key",
            control_pub.to_str().unwrap(),
            "--require-complete",
        ],
    );
    assert!(strict.status.success(), "{}", stderr(&strict));
    let as_json = runwarden(
        a_bundle.parent().unwrap(),
        &[
            "evidence",
            "verify",
            a_bundle.to_str().unwrap(),
            "--key",
            control_pub.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(as_json.status.success(), "{}", stderr(&as_json));
    let v: Value = serde_json::from_slice(&as_json.stdout).unwrap();
    assert_eq!(
        (&v["verified"], &v["tenant"]),
        (&Value::from(true), &Value::from("local")),
        "{v}"
    );
    let logs = v["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 3, "{v}");
    assert!(logs.iter().all(|l| l["verified"] == true), "{v}");
    assert_eq!(logs[0]["role"], "control", "{v}");
    assert_eq!(logs[0]["complete"], true, "{v}");

    // What it holds: the control plane's log (only tenant local's records of it), then
    // each host's complete log under the key it enrolled with.
    let bundle = Bundle::read(&a_bundle);
    let st = statement(&bundle);
    assert_eq!(st["tenant"], "local");
    let logs = st["logs"].as_array().unwrap();
    let roles: Vec<(&str, &str)> = logs
        .iter()
        .map(|l| {
            (
                l["role"].as_str().unwrap(),
                l["host"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("control", ""),
            ("host", "clinic-a-01"),
            ("host", "clinic-a-02")
        ]
    );
    assert!(logs.iter().all(|l| l["complete"] == true), "{logs:?}");
    assert_eq!(
        logs[0]["origin"],
        "runwarden/runwarden-control/tenant/local"
    );
    let host_pub =
        runwarden_evidence::read_verifying_key(&a2.join("signing-keys/clinic-a-02.pub")).unwrap();
    assert_eq!(logs[2]["key"], host_pub.to_text());
    let control = tenants_of(inner(&bundle, logs[0]["member"].as_str().unwrap()));
    assert!(
        !control.is_empty() && control.iter().all(|t| t == "local"),
        "{control:?}"
    );
    assert_eq!(
        logs[0]["tree_size"].as_u64().unwrap() as usize,
        control.len(),
        "the tenant's view holds its escalations, not clinic-b's: {logs:?}"
    );

    // Tenant clinic-b's bundle: its host only.
    let b_bundle = out.join("clinic-b.tar");
    export(&fleet, "clinic-b", &b_bundle);
    let v = verify(&b_bundle, &control_pub);
    let said = String::from_utf8_lossy(&v.stdout).into_owned();
    assert!(v.status.success(), "{said}{}", stderr(&v));
    assert!(
        said.contains("host clinic-b-01: verified 1 records"),
        "{said}"
    );
    assert!(!said.contains("clinic-a"), "{said}");

    // Another key is not the control plane's: nothing in the bundle is believed.
    let v = verify(&a_bundle, &a2.join("signing-keys/clinic-a-02.pub"));
    assert_eq!(v.status.code(), Some(1));
    assert!(
        stderr(&v).contains("not signed by a key you trust"),
        "{}",
        stderr(&v)
    );

    // A record of one host's log altered: that log fails, naming the record; the other
    // logs still verify.
    let member = logs[2]["member"].as_str().unwrap().to_string();
    let mut host_log = inner(&bundle, &member);
    let mut lines = host_log.lines();
    lines[0] = lines[0].replace("\"sig\":\"", "\"sig\":\"AAAA");
    host_log.set_lines(&lines);
    let chunk = format!("{member}records/00000000.jsonl");
    let mut forged = bundle.members.clone();
    forged.iter_mut().find(|(n, _)| *n == chunk).unwrap().1 = host_log
        .members
        .iter()
        .find(|(n, _)| n == "records/00000000.jsonl")
        .unwrap()
        .1
        .clone();
    let tampered = out.join("tampered.tar");
    Bundle::write_raw(&forged, &tampered);
    let v = verify(&tampered, &control_pub);
    let err = stderr(&v);
    assert_eq!(v.status.code(), Some(1), "{err}");
    assert!(err.contains("FAILED  host clinic-a-02"), "{err}");
    assert!(err.contains("record 0: "), "{err}");
    assert!(err.contains("ok      host clinic-a-01"), "{err}");
    assert!(err.contains("ok      control plane"), "{err}");

    // A host's log removed: named as missing.
    let removed: Vec<(String, Vec<u8>)> = bundle
        .members
        .iter()
        .filter(|(n, _)| !n.starts_with(&member))
        .cloned()
        .collect();
    Bundle::write_raw(&removed, &tampered);
    let v = verify(&tampered, &control_pub);
    let err = stderr(&v);
    assert_eq!(v.status.code(), Some(1), "{err}");
    assert!(err.contains("missing from the bundle (removed)"), "{err}");

    // A log's member again, after the next log: refused.
    let mut twice = bundle.members.clone();
    twice.insert(twice.len() - 1, bundle.members[1].clone());
    Bundle::write_raw(&twice, &tampered);
    let v = verify(&tampered, &control_pub);
    assert_eq!(v.status.code(), Some(1));
    assert!(
        stderr(&v).contains("its log came earlier"),
        "{}",
        stderr(&v)
    );

    // A member of no log the statement lists: refused.
    let mut extra = bundle.members.clone();
    extra.insert(extra.len() - 1, ("logs/99999-host/x".into(), b"x".to_vec()));
    Bundle::write_raw(&extra, &tampered);
    let v = verify(&tampered, &control_pub);
    assert_eq!(v.status.code(), Some(1));
    assert!(
        stderr(&v).contains("the signed statement lists no log it belongs to"),
        "{}",
        stderr(&v)
    );
}

#[test]
fn a_host_rebuilt_with_a_new_key_signs_a_new_log_and_the_tenants_export_holds_both() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    // The same incident three times: each must run (no cooldown, no repeat escalation).
    let fleet = OperatorFleet::start_with(
        r,
        "[guardrails]\ncooldown_secs = 0\nrepeat_threshold = 100\n",
    );
    let host = "clinic-re-01";
    let heal = || {
        let rec = submit(
            &fleet.data,
            &fleet.url,
            &format!(
                r#"{{"host":"{host}","type":"service-down","severity":"high","service":"nginx.service"}}"#
            ),
        );
        // Healed, or found healthy once it was (`no-op`): a run and its record either way.
        assert!(
            matches!(rec["status"].as_str(), Some("healed" | "no-op")),
            "{rec}"
        );
        assert_eq!(rec["runs"].as_array().map(Vec::len), Some(1), "{rec}");
    };
    let old = fleet.enroll(r, host);
    let old_key =
        runwarden_evidence::read_verifying_key(&old.join(format!("signing-keys/{host}.pub")))
            .unwrap();
    assert_eq!(old_key.name(), host);
    {
        let _agent = fleet.agent(&old);
        heal();
        caught_up(&fleet, host, 1);
    }

    // Whoever holds the old data directory (a disk that left the clinic) is on the bus
    // with its credentials, until the host enrolls again.
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let inbox = format!("_INBOX_{host}");
    let old_creds = old.join("nats.creds");
    let on_bus = |creds: &Path| {
        io.block_on(runwarden_bus::jetstream::connect_with(
            &fleet.nats.url,
            Some(creds),
            "copy-of-a-host",
            Some(&inbox),
        ))
    };
    let held = on_bus(&old_creds).expect("the host's credentials reach the bus");

    // The machine is rebuilt: a fresh data directory, so a new key, and a new token. The
    // control plane names the key, and the host's new log is its own.
    let new = fleet.enroll(&r.join("rebuilt"), host);

    // The old credentials are revoked at the NATS server: the connection held with them
    // is closed, and they connect no more; the new ones do.
    let deadline = Instant::now() + Duration::from_secs(30);
    while on_bus(&old_creds).is_ok() || runwarden_bus::jetstream::is_connected(&held) {
        assert!(
            Instant::now() < deadline,
            "the replaced credentials still reach the bus 30 s after the host enrolled again"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(on_bus(&new.join("nats.creds")).is_ok());
    let new_key =
        runwarden_evidence::read_verifying_key(&new.join(format!("signing-keys/{host}.pub")))
            .unwrap();
    assert_eq!(new_key.name(), format!("{host}~2"));
    assert_ne!(new_key.to_bytes(), old_key.to_bytes());
    let _agent = fleet.agent(&new);
    heal();
    heal();
    // The new log (2 records) is mirrored, not refused as a fork of the old one.
    assert_eq!(caught_up(&fleet, host, 2), 2);
    assert_eq!(fleet.host(host)["key_id"], new_key.key_id_hex());

    // The tenant's export holds both of the host's logs, each under its own key.
    let bundle = r.join("audit.tar");
    export(&fleet, "local", &bundle);
    let v = verify(
        &bundle,
        &fleet.data.join("control-key/runwarden-control.pub"),
    );
    let said = String::from_utf8_lossy(&v.stdout).into_owned();
    assert!(v.status.success(), "{said}{}", stderr(&v));
    assert!(said.starts_with("tenant local: 3 log(s)"), "{said}");
    let st = statement(&Bundle::read(&bundle));
    let hosts: Vec<(&str, &str, u64)> = st["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["role"] == "host")
        .map(|l| {
            (
                l["host"].as_str().unwrap(),
                l["key"].as_str().unwrap(),
                l["records"].as_u64().unwrap(),
            )
        })
        .collect();
    let (old_text, new_text) = (old_key.to_text(), new_key.to_text());
    assert_eq!(
        hosts,
        [(host, old_text.as_str(), 1), (host, new_text.as_str(), 2)]
    );
}
