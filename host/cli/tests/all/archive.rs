//! `runwarden evidence archive` and `evidence verify s3://…` against a real S3 server with
//! Object Lock (moto, started by the test), as an operator and an auditor run them.

use super::{component, runwarden, stderr, write_policy};
use runwarden_archive::s3::{Credentials, S3};
use std::path::Path;
use std::process::{Command, Output};

const KEY_ID: &str = "AKIACLITESTARCHIVE01";
const SECRET: &str = "cli-test-archive-secret-value";

fn with_s3(data: &Path, endpoint: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runwarden"))
        .args(args)
        .env("RUNWARDEN_DATA_DIR", data)
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_ENDPOINT_URL_S3", endpoint)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_REGION")
        .output()
        .expect("runwarden runs")
}

/// A real S3 server, a client of it, and a runtime to call it from a test.
fn s3() -> (runwarden_testkit::Moto, S3, tokio::runtime::Runtime) {
    let moto = runwarden_testkit::Moto::start();
    let s3 = S3::new(
        &moto.endpoint,
        "us-east-1",
        Credentials {
            access_key_id: KEY_ID.into(),
            secret_access_key: SECRET.into(),
            session_token: None,
        },
    )
    .unwrap();
    (moto, s3, tokio::runtime::Runtime::new().unwrap())
}

fn runs(d: &Path, n: usize) {
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
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

#[test]
fn an_operator_archives_and_an_auditor_verifies_straight_from_the_bucket() {
    let (moto, s3, rt) = s3();
    rt.block_on(async {
        s3.create_bucket("clinic-evidence", true).await.unwrap();
        s3.create_bucket("no-lock", false).await.unwrap();
    });
    let d = tempfile::tempdir().unwrap();
    runs(d.path(), 3);
    let e = &moto.endpoint;
    let archive = |extra: &[&str]| {
        let mut args = vec!["evidence", "archive", "--to", "s3://clinic-evidence/2026"];
        args.extend_from_slice(extra);
        with_s3(d.path(), e, &args)
    };

    let o = archive(&["--retention", "30d", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let first = json(&o);
    assert_eq!(first["written"], 1);
    assert_eq!(first["archived"], 3);
    assert_eq!(first["origin"], "runwarden/cli-test");
    assert!(!stderr(&o).contains(SECRET) && !String::from_utf8_lossy(&o.stdout).contains(SECRET));

    // A retry: nothing new, nothing written twice.
    let o = archive(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("up to date: 3 record(s)"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    runs(d.path(), 2);
    let o = archive(&["--retention", "30d", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        (json(&o)["written"].clone(), json(&o)["archived"].clone()),
        (1.into(), 5.into())
    );

    // The auditor: only the archive, the public key and read access.
    let auditor = tempfile::tempdir().unwrap();
    let key = d.path().join("signing-keys/cli-test.pub");
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "evidence",
            "verify",
            "s3://clinic-evidence/2026",
            "--key",
            key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        with_s3(auditor.path(), e, &args)
    };
    let o = verify(&["--require-complete"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("verified 5 records of runwarden/cli-test"),
        "{out}"
    );
    assert!(out.contains("2 sealed segments"), "{out}");
    let o = verify(&["--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(
        (v["verified"].clone(), v["records"].clone()),
        (true.into(), 5.into())
    );

    // A second host archives its own log beside the first: verified together, each on
    // its own key; with one key missing, the other log's verdict still stands and the
    // command fails naming the log it could not verify.
    let second = tempfile::tempdir().unwrap();
    let policy = second.path().join("policy.toml");
    std::fs::write(&policy, "host_id = \"cli-test-2\"\n").unwrap();
    let o = runwarden(
        second.path(),
        &[
            "runbook",
            "run",
            &component("trivial"),
            "--policy",
            policy.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = with_s3(
        second.path(),
        e,
        &["evidence", "archive", "--to", "s3://clinic-evidence/2026"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let key2 = second.path().join("signing-keys/cli-test-2.pub");
    let o = verify(&["--key", key2.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let both = json(&o);
    assert_eq!(both["verified"], true);
    let logs: Vec<&str> = both["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["origin"].as_str().unwrap())
        .collect();
    assert_eq!(logs, ["runwarden/cli-test", "runwarden/cli-test-2"]);
    let o = verify(&[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("verified 5 records of runwarden/cli-test ")
    );
    assert!(
        stderr(&o).contains("verification FAILED: runwarden/cli-test-2:"),
        "{}",
        stderr(&o)
    );

    // Another key: refused, one line.
    let stranger = auditor.path().join("keys");
    let o = runwarden(
        auditor.path(),
        &[
            "keys",
            "generate",
            "--out",
            stranger.to_str().unwrap(),
            "--name",
            "cli-test",
        ],
    );
    assert!(o.status.success());
    let o = with_s3(
        auditor.path(),
        e,
        &[
            "evidence",
            "verify",
            "s3://clinic-evidence/2026",
            "--key",
            stranger.join("cli-test.pub").to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("verification FAILED"),
        "{}",
        stderr(&o)
    );

    // A bucket without Object Lock: refused, and why.
    let o = with_s3(
        d.path(),
        e,
        &["evidence", "archive", "--to", "s3://no-lock/x"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("has no Object Lock"), "{}", stderr(&o));
    assert!(rt.block_on(s3.list("no-lock", "")).unwrap().is_empty());

    // No credentials: a clear error naming what is missing.
    let o = Command::new(env!("CARGO_BIN_EXE_runwarden"))
        .args(["evidence", "archive", "--to", "s3://clinic-evidence/2026"])
        .env("RUNWARDEN_DATA_DIR", d.path())
        .env("AWS_ENDPOINT_URL_S3", e)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("AWS_ACCESS_KEY_ID"), "{}", stderr(&o));

    // Bad addresses and retentions.
    for (args, expect) in [
        (vec!["--to", "clinic-evidence/2026"], "s3://BUCKET/PREFIX"),
        (
            vec!["--to", "s3://clinic-evidence/../x"],
            "s3://BUCKET/PREFIX",
        ),
        (
            vec!["--to", "s3://clinic-evidence/x", "--retention", "0d"],
            "retention",
        ),
    ] {
        let mut full = vec!["evidence", "archive"];
        full.extend(args);
        let o = with_s3(d.path(), e, &full);
        assert_ne!(o.status.code(), Some(0));
        assert!(stderr(&o).contains(expect), "{full:?}: {}", stderr(&o));
    }
}

#[test]
fn up_archives_on_a_schedule_set_in_its_config() {
    let (moto, s3, rt) = s3();
    rt.block_on(s3.create_bucket("up-archive", true)).unwrap();
    let d = tempfile::tempdir().unwrap();
    // Records already in the log before `up` starts are archived at its first run.
    runs(d.path(), 2);
    std::fs::write(
        d.path().join("runwarden.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\n[archive]\nto = \"s3://up-archive/p\"\nevery = \"5s\"\nretention = \"7d\"\nendpoint = \"{}\"\n",
            moto.endpoint
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_runwarden"))
        .args([
            "up",
            "--policy",
            d.path().join("policy.toml").to_str().unwrap(),
        ])
        .env("RUNWARDEN_DATA_DIR", d.path())
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env_remove("AWS_ENDPOINT_URL_S3")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let listed = loop {
        let listed = rt.block_on(s3.list("up-archive", "p/")).unwrap();
        if !listed.is_empty() || std::time::Instant::now() > deadline {
            break listed;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(listed.len(), 1, "up archived its log at start");
    assert!(
        listed[0]
            .key
            .starts_with("p/runwarden/cli-test/00000000000000000000-"),
        "{}",
        listed[0].key
    );
}

#[test]
fn in_a_fleet_an_agent_archives_its_hosts_log_on_its_schedule() {
    let (moto, s3, rt) = s3();
    rt.block_on(s3.create_bucket("fleet-archive", true))
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let fleet = super::fleet::OperatorFleet::start(root.path());
    let host = "clinic-arch-01";
    let data = fleet.enroll(root.path(), host);
    std::fs::write(
        data.join("runwarden.toml"),
        format!(
            "[archive]\nto = \"s3://fleet-archive/clinics\"\nevery = \"5s\"\nretention = \"7d\"\nendpoint = \"{}\"\n",
            moto.endpoint
        ),
    )
    .unwrap();
    let (_agent, local) = fleet.agent_env(
        &data,
        &[
            ("AWS_ACCESS_KEY_ID", KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
        ],
    );
    // A run on the host, signed into the host's own log.
    let healed = super::offline::submit(
        &data,
        &local,
        &format!(
            r#"{{"host":"{host}","type":"service-down","severity":"high","service":"nginx.service"}}"#
        ),
    );
    assert_eq!(healed["tier"], "L1", "{healed}");
    let dir = format!("clinics/runwarden/{host}/");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while rt
        .block_on(s3.list("fleet-archive", &dir))
        .unwrap()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent archived nothing of its log in 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    // An auditor verifies the host's log from the bucket with the host's public key.
    let key = data.join(format!("signing-keys/{host}.pub"));
    let auditor = tempfile::tempdir().unwrap();
    let o = with_s3(
        auditor.path(),
        &moto.endpoint,
        &[
            "evidence",
            "verify",
            "s3://fleet-archive/clinics",
            "--origin",
            &format!("runwarden/{host}"),
            "--key",
            key.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(
        o.status.success(),
        "{}{}",
        stderr(&o),
        String::from_utf8_lossy(&o.stdout)
    );
    let v = json(&o);
    assert_eq!(v["origin"], format!("runwarden/{host}").as_str());
    assert!(v["records"].as_u64().unwrap() >= 1, "{v}");
}
