//! `runwarden evidence archive` and `evidence verify s3://…` against a real S3 server with
//! Object Lock (moto, started by the test), as an operator and an auditor run them.

use super::{component, runwarden, stderr, write_policy};
use runwarden_archive::s3::{Credentials, S3};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// A loopback TCP proxy in front of the S3 server that counts the bytes uploaded through it
/// and, from the count [`HoldingProxy::hold_after`] sets, passes nothing more on and reads
/// nothing more from the client: a `runwarden` uploading through it is held in the middle
/// of a PUT, for as long as the test needs to kill it there. Released, it ends the held
/// upload towards the server (as the kernel ends a killed process's connections).
struct HoldingProxy {
    port: u16,
    state: std::sync::Arc<ProxyState>,
}

struct ProxyState {
    /// Bytes passed on to the server.
    up: std::sync::atomic::AtomicU64,
    /// Pass on no byte past this count.
    hold_at: std::sync::atomic::AtomicU64,
    held: std::sync::atomic::AtomicBool,
    released: std::sync::atomic::AtomicBool,
    /// Connections the server has not closed yet.
    open: std::sync::atomic::AtomicUsize,
}

impl HoldingProxy {
    fn start(upstream: u16) -> HoldingProxy {
        use std::io::{Read as _, Write as _};
        use std::net::{Shutdown, TcpListener, TcpStream};
        use std::sync::atomic::Ordering::SeqCst;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = std::sync::Arc::new(ProxyState {
            up: 0.into(),
            hold_at: u64::MAX.into(),
            held: false.into(),
            released: false.into(),
            open: 0.into(),
        });
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let (Ok(mut client), Ok(mut server)) =
                    (client, TcpStream::connect(("127.0.0.1", upstream)))
                else {
                    continue;
                };
                let state = shared.clone();
                state.open.fetch_add(1, SeqCst);
                std::thread::spawn(move || {
                    let (mut client_w, mut server_r) =
                        (client.try_clone().unwrap(), server.try_clone().unwrap());
                    // Down to the client until the server closes (errors towards a killed
                    // client ignored): then the server is done with the connection.
                    let down = std::thread::spawn(move || {
                        let mut buf = vec![0u8; 64 << 10];
                        while let Ok(n @ 1..) = server_r.read(&mut buf) {
                            let _ = client_w.write_all(&buf[..n]);
                        }
                        let _ = client_w.shutdown(Shutdown::Both);
                    });
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(n @ 1..) = client.read(&mut buf) {
                        let room = state
                            .hold_at
                            .load(SeqCst)
                            .saturating_sub(state.up.load(SeqCst));
                        let pass = n.min(usize::try_from(room).unwrap_or(usize::MAX));
                        if server.write_all(&buf[..pass]).is_err() {
                            break;
                        }
                        state.up.fetch_add(pass as u64, SeqCst);
                        if pass < n {
                            state.held.store(true, SeqCst);
                            while !state.released.load(SeqCst) {
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            break;
                        }
                    }
                    let _ = server.shutdown(Shutdown::Write);
                    let _ = down.join();
                    state.open.fetch_sub(1, SeqCst);
                });
            }
        });
        HoldingProxy { port, state }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Hold the upload under way once `more` bytes more have passed.
    fn hold_after(&self, more: u64) {
        use std::sync::atomic::Ordering::SeqCst;
        self.state
            .hold_at
            .store(self.state.up.load(SeqCst) + more, SeqCst);
    }

    fn held(&self) -> bool {
        self.state.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// End the held upload, and wait until the server has closed every connection.
    fn release_and_drain(&self, deadline: Instant) {
        use std::sync::atomic::Ordering::SeqCst;
        self.state.released.store(true, SeqCst);
        while self.state.open.load(SeqCst) > 0 {
            assert!(
                Instant::now() < deadline,
                "the S3 server kept {} connection(s) of the killed run open",
                self.state.open.load(SeqCst)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// `evidence archive` SIGKILLed in the middle of a PUT, with sealed segments already in
/// the bucket, then run again: it goes on from what the bucket holds (part of a segment,
/// had the server kept it, written again), writes only the records not yet sealed, and
/// the auditor verifies every record from the bucket. Segments are locked for the default
/// six years (2,192 days) when no --retention is given.
#[test]
fn an_archive_killed_mid_upload_resumes_and_writes_nothing_twice() {
    use runwarden_archive::SEGMENT_RECORDS;
    use runwarden_testkit::evidence::{HOST, fill_log};
    use std::os::unix::process::ExitStatusExt as _;

    // Four segments: three full and one of 1,000 records.
    const RECORDS: u64 = 3 * SEGMENT_RECORDS + 1000;
    const SIX_YEARS_MS: u64 = 2192 * 86_400_000;
    let (moto, s3, rt) = s3();
    rt.block_on(s3.create_bucket("crash-evidence", true))
        .unwrap();
    let d = tempfile::tempdir().unwrap();
    let filled = rt.block_on(fill_log(d.path(), RECORDS, |_| {}));
    assert_eq!(filled.size, RECORDS);
    let dir = format!("clinic/runwarden/{HOST}/");
    let to = "s3://crash-evidence/clinic";
    let proxy = HoldingProxy::start(moto.port);
    let started_ms = now_ms();

    let out = d.path().join("killed.out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_runwarden"))
        .args(["evidence", "archive", "--to", to, "--json"])
        .env("RUNWARDEN_DATA_DIR", d.path())
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_ENDPOINT_URL_S3", proxy.endpoint())
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_REGION")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(out.with_extension("err")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let still_running = |child: &mut std::process::Child, what: &str| {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the archive ended ({status}) before {what}: it was not caught mid-run; {}",
                std::fs::read_to_string(out.with_extension("err")).unwrap()
            );
        }
        assert!(Instant::now() < deadline, "no {what} in 60 s");
        std::thread::sleep(Duration::from_millis(5));
    };
    // A first segment sealed, then the upload under way held half a segment further on.
    let first = loop {
        let listed = rt.block_on(s3.list("crash-evidence", &dir)).unwrap();
        if let Some(first) = listed.into_iter().next() {
            break first;
        }
        still_running(&mut child, "a first segment in the bucket");
    };
    proxy.hold_after(first.size / 2);
    while !proxy.held() {
        still_running(&mut child, "an upload held by the proxy");
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "",
        "killed, it reported nothing"
    );
    proxy.release_and_drain(deadline);

    // What the killed run left: sealed segments from record 0, and perhaps part of the one
    // it was uploading (AWS keeps nothing of a PUT broken off; moto 5.2.5 answers 400 to
    // one cut short of its checksum and keeps nothing either, but a server that kept it
    // must see it written again).
    let trusted = [runwarden_evidence::read_verifying_key(
        &d.path().join(format!("signing-keys/{HOST}.pub")),
    )
    .unwrap()];
    let left = rt.block_on(s3.list("crash-evidence", &dir)).unwrap();
    let whole = left
        .iter()
        .take_while(|o| {
            let body = rt
                .block_on(s3.get_object(
                    "crash-evidence",
                    &o.key,
                    None,
                    runwarden_archive::MAX_SEGMENT_BYTES,
                ))
                .unwrap();
            runwarden_evidence::verify_bundle(body.as_ref(), &trusted, None).is_ok()
        })
        .count() as u64;
    assert!(whole >= 1, "{left:?}");
    assert!(left.len() as u64 - whole <= 1, "{left:?}");
    let sealed = whole * SEGMENT_RECORDS;
    assert!(
        sealed < RECORDS,
        "the killed run sealed every record: {left:?}"
    );
    let half_kept = (left.len() as u64 > whole).then(|| left.last().unwrap().key.clone());
    println!(
        "killed with {whole} sealed segment(s) in the bucket, {} more byte(s) held, part of the next kept: {half_kept:?}",
        first.size / 2
    );

    // Run again: the records not sealed, and only those.
    let o = with_s3(
        d.path(),
        &moto.endpoint,
        &["evidence", "archive", "--to", to, "--json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let done = json(&o);
    assert_eq!(done["archived"], RECORDS, "{done}");
    assert_eq!(done["records_written"], RECORDS - sealed, "{done}");
    assert_eq!(done["written"], 4 - whole, "{done}");
    assert_eq!(
        done["rewritten"],
        serde_json::to_value(
            half_kept
                .as_ref()
                .map(|k| format!("s3://crash-evidence/{k}"))
        )
        .unwrap(),
        "{done}"
    );
    let finished_ms = now_ms();

    // Nothing written twice: one version of each segment, two of one kept half-written.
    let versions = rt
        .block_on(s3.list_versions("crash-evidence", &dir))
        .unwrap();
    let mut keys: Vec<&str> = versions.iter().map(|v| v.key.as_str()).collect();
    keys.dedup();
    let bounds = [
        0,
        SEGMENT_RECORDS,
        2 * SEGMENT_RECORDS,
        3 * SEGMENT_RECORDS,
        RECORDS,
    ];
    let expected: Vec<String> = bounds
        .windows(2)
        .map(|w| format!("{dir}{:020}-{:020}.bundle", w[0], w[1]))
        .collect();
    assert_eq!(keys, expected);
    for key in &expected {
        let n = versions.iter().filter(|v| &v.key == key).count();
        let want = if half_kept.as_ref() == Some(key) {
            2
        } else {
            1
        };
        assert_eq!(n, want, "versions of {key}: {versions:?}");
    }

    // Locked for the default six years from when each was written: the first segment by
    // the killed run, the last by the run after it.
    for key in [&expected[0], &expected[3]] {
        let head = rt
            .block_on(s3.head_object("crash-evidence", key, None))
            .unwrap()
            .unwrap();
        assert_eq!(head.lock_mode.as_deref(), Some("COMPLIANCE"), "{key}");
        let until = head.retain_until.unwrap_or_default();
        let (earliest, latest) = (
            runwarden_evidence::rfc3339_ms(started_ms / 1000 * 1000 + SIX_YEARS_MS),
            runwarden_evidence::rfc3339_ms(finished_ms + SIX_YEARS_MS),
        );
        assert!(
            until.len() >= 19 && (&earliest[..19]..=&latest[..19]).contains(&&until[..19]),
            "{key} is retained until {until}, not 2,192 days after it was written ({earliest} to {latest})"
        );
    }

    // The auditor: every record, straight from the bucket.
    let auditor = tempfile::tempdir().unwrap();
    let o = with_s3(
        auditor.path(),
        &moto.endpoint,
        &[
            "evidence",
            "verify",
            to,
            "--key",
            d.path()
                .join(format!("signing-keys/{HOST}.pub"))
                .to_str()
                .unwrap(),
            "--require-complete",
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
    assert_eq!(v["verified"], true, "{v}");
    assert_eq!(
        (v["records"].clone(), v["segments"].clone()),
        (RECORDS.into(), 4.into()),
        "{v}"
    );
    assert_eq!(
        (v["off_path"].clone(), v["hidden"].clone()),
        (0.into(), 0.into()),
        "{v}"
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
