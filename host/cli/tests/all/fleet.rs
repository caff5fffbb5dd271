//! The fleet as an operator runs it, real processes over a real nats-server 2.15:
//! `runwarden server`, two hosts' `runwarden agent`s enrolled with single-use tokens, an
//! incident healed on the host it names (and only there), and each host's log mirrored
//! at the server under that host's own key.

use super::{runwarden, stderr};
use runwarden_testkit::Nats;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `runwarden` process, killed if the test ends first.
pub(super) struct Proc {
    pub(super) child: Option<Child>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Start `runwarden ARGS` with data dir `data`; returns it and its first stdout line that
/// starts with `ready` (within 2 minutes).
pub(super) fn spawn(data: &Path, args: &[&str], ready: &str) -> (Proc, String) {
    spawn_env(data, args, &[], ready)
}

/// [`spawn`] with more environment.
pub(super) fn spawn_env(
    data: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    ready: &str,
) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_runwarden"))
        .args(args)
        .env("RUNWARDEN_DATA_DIR", data)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let p = Proc {
        child: Some(child),
        lines: rx,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = p
            .lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("runwarden {args:?} did not print {ready:?}"));
        if line.starts_with(ready) {
            return (p, line);
        }
    }
}

/// A host with its own scratch "service manager" (a unit is a file saying active or
/// inactive) and its policy.
pub(super) fn host_policy(root: &Path, host: &str) -> PathBuf {
    host_policy_granting(root, host, "nginx.service")
}

/// [`host_policy`] granting the services `glob`.
pub(super) fn host_policy_granting(root: &Path, host: &str, glob: &str) -> PathBuf {
    let dir = root.join(host);
    std::fs::create_dir_all(dir.join("units")).unwrap();
    let units = dir.join("units").display().to_string();
    let p = dir.join("policy.toml");
    std::fs::write(
        &p,
        format!(
            r#"host_id = "{host}"
[grants]
services = ["{glob}"]
[services]
backend = "command"
status = ["/bin/sh", "-c", "cat {units}/{{unit}} 2>/dev/null || echo inactive"]
start = ["/bin/sh", "-c", "echo active > {units}/{{unit}}"]
stop = ["/bin/sh", "-c", "echo inactive > {units}/{{unit}}"]
restart = ["/bin/sh", "-c", "echo active > {units}/{{unit}}"]
reload = ["/bin/sh", "-c", "true"]
"#
        ),
    )
    .unwrap();
    p
}

pub(super) fn unit_state(root: &Path, host: &str) -> String {
    std::fs::read_to_string(root.join(host).join("units/nginx.service"))
        .unwrap_or_else(|_| "inactive".into())
        .trim()
        .to_string()
}

/// `runwarden server` with data dir `data` on NATS at `nats`, with more `args`; it and
/// its URL.
pub(super) fn server(data: &Path, nats: &str, args: &[&str]) -> (Proc, String) {
    let mut all = vec!["server", "--nats", nats, "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let (server, line) = spawn(data, &all, "runwarden server is up at ");
    let url = line
        .trim_start_matches("runwarden server is up at ")
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    (server, url)
}

/// A control plane that is the NATS operator, and the nats-server it configured.
pub(super) struct OperatorFleet {
    pub(super) nats: Nats,
    pub(super) _server: Proc,
    pub(super) url: String,
    pub(super) data: PathBuf,
}

impl OperatorFleet {
    /// `runwarden server --init-nats` in `root/server`, nats-server with what it wrote,
    /// then `runwarden server`.
    pub(super) fn start(root: &Path) -> OperatorFleet {
        Self::start_with(root, "")
    }

    /// [`OperatorFleet::start`] with `config` as the server's `runwarden.toml`.
    pub(super) fn start_with(root: &Path, config: &str) -> OperatorFleet {
        Self::start_on(root, config, &[])
    }

    /// [`OperatorFleet::start_with`], the server also given `args`.
    pub(super) fn start_on(root: &Path, config: &str, args: &[&str]) -> OperatorFleet {
        let data = root.join("server");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("runwarden.toml"), config).unwrap();
        let init = runwarden(&data, &["server", "--init-nats"]);
        assert!(init.status.success(), "{}", stderr(&init));
        let conf = String::from_utf8(init.stdout).unwrap().trim().to_string();
        let nats = Nats::start_with_config(&std::fs::read_to_string(&conf).unwrap());
        let (server, url) = server(&data, &nats.url, args);
        OperatorFleet {
            nats,
            _server: server,
            url,
            data,
        }
    }

    /// Enroll `host` (policy from [`host_policy`]) with a fresh token; its data dir.
    pub(super) fn enroll(&self, root: &Path, host: &str) -> PathBuf {
        self.enroll_with(root, host, "nginx.service")
    }

    /// [`OperatorFleet::enroll`] with a policy granting the services `glob`.
    pub(super) fn enroll_with(&self, root: &Path, host: &str, glob: &str) -> PathBuf {
        self.enroll_as(&self.data, root, host, glob)
    }

    /// [`OperatorFleet::enroll_with`], the token made with the admin token of `admin`
    /// (a data dir whose `admin-token` is of the tenant the host joins).
    pub(super) fn enroll_as(&self, admin: &Path, root: &Path, host: &str, glob: &str) -> PathBuf {
        let token = runwarden(admin, &["--server", &self.url, "hosts", "enroll-token"]);
        assert!(token.status.success(), "{}", stderr(&token));
        let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
        let data = root.join(host).join("data");
        let policy = host_policy_granting(root, host, glob);
        let enrolled = runwarden(
            &data,
            &[
                "--server",
                &self.url,
                "agent",
                "enroll",
                "--token",
                &token,
                "--host-id",
                host,
                "--policy",
                policy.to_str().unwrap(),
            ],
        );
        assert!(enrolled.status.success(), "{}", stderr(&enrolled));
        data
    }

    /// `runwarden agent run` of the host enrolled in `data`; the agent and the URL of its
    /// local intake.
    pub(super) fn agent(&self, data: &Path) -> (Proc, String) {
        self.agent_env(data, &[])
    }

    /// [`OperatorFleet::agent`] with more environment.
    pub(super) fn agent_env(&self, data: &Path, env: &[(&str, &str)]) -> (Proc, String) {
        let (agent, line) = spawn_env(
            data,
            &[
                "agent",
                "run",
                "--nats",
                &self.nats.url,
                "--listen",
                "127.0.0.1:0",
            ],
            env,
            "runwarden agent of host",
        );
        let local = line
            .split("local intake at ")
            .nth(1)
            .and_then(|l| l.split('/').nth(2))
            .map(|addr| format!("http://{addr}"))
            .unwrap_or_else(|| panic!("no local intake in {line:?}"));
        (agent, local)
    }

    /// `runwarden hosts list --json` at the server: the host `id`.
    pub(super) fn host(&self, id: &str) -> Value {
        let out = runwarden(
            &self.data,
            &["--server", &self.url, "hosts", "list", "--json"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let hosts: Value = serde_json::from_slice(&out.stdout).unwrap();
        hosts
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no host {id} in {hosts}"))
    }
}

#[test]
fn a_fleet_heals_on_the_host_named_and_mirrors_each_hosts_log_under_its_key() {
    let root = tempfile::tempdir().unwrap();
    let server_data = root.path().join("server");
    // The control plane is the NATS operator: it writes the NATS server's configuration,
    // and each agent it enrolls gets credentials for its own host's subjects only.
    let init = runwarden(&server_data, &["server", "--init-nats"]);
    assert!(init.status.success(), "{}", stderr(&init));
    let conf = String::from_utf8(init.stdout).unwrap().trim().to_string();
    let nats = Nats::start_with_config(&std::fs::read_to_string(&conf).unwrap());
    let control_creds = server_data.join("nats/control.creds");
    let (_server, line) = spawn(
        &server_data,
        &["server", "--nats", &nats.url, "--listen", "127.0.0.1:0"],
        "runwarden server is up at ",
    );
    let url = line
        .trim_start_matches("runwarden server is up at ")
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();

    let mut agents = Vec::new();
    for (host, site) in [("clinic-a-01", "front"), ("clinic-a-02", "back")] {
        // An admin makes a single-use token; the host's agent enrolls with it.
        let token = runwarden(
            &server_data,
            &[
                "--server",
                &url,
                "hosts",
                "enroll-token",
                "--labels",
                &format!("site={site}"),
            ],
        );
        assert!(token.status.success(), "{}", stderr(&token));
        let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
        assert!(token.starts_with("rwe_"), "{token}");
        let data = root.path().join(host).join("data");
        let policy = host_policy(root.path(), host);
        let enrolled = runwarden(
            &data,
            &[
                "--server",
                &url,
                "agent",
                "enroll",
                "--token",
                &token,
                "--host-id",
                host,
                "--policy",
                policy.to_str().unwrap(),
            ],
        );
        assert!(enrolled.status.success(), "{}", stderr(&enrolled));
        // The token is spent.
        let other = host_policy(root.path(), "clinic-a-09");
        let again = runwarden(
            &root.path().join("elsewhere"),
            &[
                "--server",
                &url,
                "agent",
                "enroll",
                "--token",
                &token,
                "--host-id",
                "clinic-a-09",
                "--policy",
                other.to_str().unwrap(),
            ],
        );
        assert_eq!(again.status.code(), Some(2));
        assert!(
            stderr(&again).contains("already used"),
            "{}",
            stderr(&again)
        );
        let (agent, _) = spawn(
            &data,
            &[
                "agent",
                "run",
                "--nats",
                &nats.url,
                "--listen",
                "127.0.0.1:0",
            ],
            "runwarden agent of host",
        );
        agents.push((agent, data));
    }

    // An incident for the second host is healed there, and only there.
    let incident = root.path().join("incident.json");
    std::fs::write(
        &incident,
        r#"{"host":"clinic-a-02","type":"service-down","severity":"high","service":"nginx.service"}"#,
    )
    .unwrap();
    let out = runwarden(
        &server_data,
        &[
            "--server",
            &url,
            "incident",
            "submit",
            "--json",
            incident.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rec: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rec["status"], "healed", "{rec}");
    assert_eq!(rec["tier"], "L1");
    assert_eq!(unit_state(root.path(), "clinic-a-02"), "active");
    assert_eq!(unit_state(root.path(), "clinic-a-01"), "inactive");

    // A message on the bus is not enough to make a host act: a job for the first host
    // signed by another key than the control plane's is refused, and the refusal is a
    // record of that host's log (forwarded and mirrored like any).
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    io.block_on(async {
        let forger = runwarden_evidence::SigningKey::generate("runwarden-control").unwrap();
        let now = runwarden_agent::now_ms();
        let job = runwarden_proto::bus::RunJob {
            job: "01a2462d-0000-7000-8000-000000000001".into(),
            incident: "01a2462d-0000-7000-8000-000000000002".into(),
            tenant: "local".into(),
            host: "clinic-a-01".into(),
            runs: vec![runwarden_proto::bus::PlannedRun {
                invocation: "01a2462d-0000-7000-8000-000000000003".into(),
                runbook: "restart-service".into(),
                sha256: "00".repeat(32),
                params: serde_json::json!({"unit": "nginx.service"}),
            }],
            dry_run: false,
            provenance: runwarden_proto::bus::Provenance::L3 {
                approver: "mallory".into(),
            },
            verdicts: vec![],
            issued_at_ms: now,
            expires_at_ms: now + 60_000,
        };
        let signed = runwarden_evidence::Envelope::sign(
            runwarden_proto::bus::JOB_PAYLOAD_TYPE,
            &serde_json::to_vec(&job).unwrap(),
            &forger,
        )
        .to_json();
        // Without credentials nobody gets on the bus at all.
        assert!(
            runwarden_bus::jetstream::connect(&nats.url, None, "anonymous")
                .await
                .is_err()
        );
        // Whoever has the bus (here: the control plane's own NATS user) still cannot make
        // a host act without the control plane's key.
        let client = runwarden_bus::jetstream::connect(&nats.url, Some(&control_creds), "forger")
            .await
            .unwrap();
        client
            .publish("rw.v1.cmd.local.clinic-a-01", signed.into_bytes().into())
            .await
            .unwrap();
        client.flush().await.unwrap();
        let log =
            runwarden_evidence::Store::open(&agents[0].1.join("evidence.db").display().to_string())
                .await
                .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let records = log.range(0, 10).await.unwrap();
            if let Some(r) = records.first() {
                assert_eq!(r.status, "refused", "{r:?}");
                let text = String::from_utf8_lossy(&r.envelope);
                assert!(text.len() > 100, "{text}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the forged job was not refused in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert_eq!(
        unit_state(root.path(), "clinic-a-01"),
        "inactive",
        "nothing ran"
    );

    // A host's NATS user reaches its own subjects only: clinic-a-01 can publish its own
    // events, not clinic-a-02's (refused by the NATS server).
    io.block_on(async {
        let creds = agents[0].1.join("nats.creds");
        let mode = std::fs::metadata(&creds).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077,
            0,
            "the host's credentials are its own"
        );
        let own = runwarden_bus::jetstream::connect_with(
            &nats.url,
            Some(&creds),
            "clinic-a-01",
            Some("_INBOX_clinic-a-01"),
        )
        .await
        .unwrap();
        runwarden_bus::jetstream::publish_event(
            &own,
            "local",
            "clinic-a-01",
            "probe",
            "p-1",
            b"{}".to_vec(),
        )
        .await
        .expect("its own subject");
        let forged = tokio::time::timeout(
            Duration::from_secs(30),
            runwarden_bus::jetstream::publish_event(
                &own,
                "local",
                "clinic-a-02",
                "log",
                "p-2",
                b"{}".to_vec(),
            ),
        )
        .await;
        assert!(
            !matches!(forged, Ok(Ok(()))),
            "clinic-a-01 published as clinic-a-02: {forged:?}"
        );
        // Junk on its own subjects: refused and dropped by the server, which goes on
        // mirroring (checked below) — not JSON, a segment whose checkpoint and record are
        // not the host's, and a heartbeat that is not one.
        let bogus = serde_json::json!({
            "origin": "runwarden/clinic-a-01", "first": 0,
            "envelopes": ["{}"], "checkpoint": "runwarden/clinic-a-01\n1\nAAAA\n\n— x AAAA\n",
        });
        for (kind, id, payload) in [
            ("log", "junk-1", b"not json at all".to_vec()),
            ("log", "junk-2", bogus.to_string().into_bytes()),
            ("heartbeat", "junk-3", vec![0xff, 0xfe, 0]),
        ] {
            runwarden_bus::jetstream::publish_event(
                &own,
                "local",
                "clinic-a-01",
                kind,
                id,
                payload,
            )
            .await
            .expect("its own subject");
        }
    });

    // The operator's view: both hosts, their labels, heard from.
    let deadline = Instant::now() + Duration::from_secs(60);
    let hosts = loop {
        let out = runwarden(&server_data, &["--server", &url, "hosts", "list", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let hosts: Value = serde_json::from_slice(&out.stdout).unwrap();
        if hosts
            .as_array()
            .unwrap()
            .iter()
            .all(|h| !h["last_seen"].is_null())
        {
            break hosts;
        }
        assert!(Instant::now() < deadline, "no heartbeat in 60 s: {hosts}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let sites: Vec<&str> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["labels"]["site"].as_str().unwrap())
        .collect();
    assert_eq!(sites, ["front", "back"]);
    // The agents' version, and each host's log as it reports it and as the server holds
    // it: caught up once forwarded.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = runwarden(&server_data, &["--server", &url, "hosts", "list", "--json"]);
        let hosts: Value = serde_json::from_slice(&out.stdout).unwrap();
        let second = &hosts[1];
        assert_eq!(second["id"], "clinic-a-02");
        if second["version"] == env!("CARGO_PKG_VERSION")
            && second["log_records"] == 1
            && second["mirrored_records"] == 1
        {
            // Its newest record, and nothing waiting on it.
            assert_eq!(second["last_record"]["index"], 0, "{second}");
            assert_eq!(second["last_record"]["status"], "healed", "{second}");
            assert_eq!(
                second["last_record"]["runbook"], "restart-service",
                "{second}"
            );
            assert_eq!(second["queue_depth"], 0, "{second}");
            break;
        }
        assert!(Instant::now() < deadline, "not caught up in 60 s: {hosts}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The run's record is in the host's own log, signed by its key, and mirrored at the
    // server; the server's own log is the control plane's.
    io.block_on(async {
        let host_log =
            runwarden_evidence::Store::open(&agents[1].1.join("evidence.db").display().to_string())
                .await
                .unwrap();
        assert_eq!(host_log.size().await.unwrap(), 1);
        let host_key = runwarden_evidence::read_verifying_key(
            &agents[1].1.join("signing-keys/clinic-a-02.pub"),
        )
        .unwrap();
        let server_log =
            runwarden_evidence::Store::open(&server_data.join("evidence.db").display().to_string())
                .await
                .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mirrored = loop {
            let m = server_log
                .mirrored_records("runwarden/clinic-a-02", 0, 100)
                .await
                .unwrap();
            if !m.is_empty() {
                break m;
            }
            assert!(
                Instant::now() < deadline,
                "the host's log was not mirrored in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let env = runwarden_evidence::Envelope::from_json(
            std::str::from_utf8(&mirrored[0].envelope).unwrap(),
        )
        .unwrap();
        env.verify(std::slice::from_ref(&host_key))
            .expect("the mirrored record is signed by the host's key");
        assert_eq!(mirrored[0].status, "healed");
        assert_eq!(
            mirrored[0].envelope,
            host_log.get(0).await.unwrap().unwrap().envelope
        );
        let (origin, key) = server_log.identity().await.unwrap().unwrap();
        assert_eq!(origin, "runwarden/runwarden-control");
        assert_ne!(key.to_bytes(), host_key.to_bytes());
        // The first host ran nothing: its log holds the refusal of the forged job only.
        let first = server_log
            .mirrored_records("runwarden/clinic-a-01", 0, 100)
            .await
            .unwrap();
        assert!(
            first.iter().all(|r| r.status == "refused"),
            "nothing ran on the first host: {first:?}"
        );
    });
}

/// A server and one agent over NATS, with the slow `adv-limits` runbook deployed on both
/// and a rule that runs it for `slow-thing` incidents.
struct SlowFleet {
    _nats: Nats,
    root: tempfile::TempDir,
    server: Proc,
    url: String,
    agent_data: PathBuf,
    runbooks: PathBuf,
    trust: PathBuf,
}

fn slow_fleet(host: &str) -> SlowFleet {
    let nats = Nats::start_with_config("jetstream { sync_interval: always }\n");
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ro");
    let runbooks = root.path().join("runbooks");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&runbooks).unwrap();
    std::fs::copy(
        runwarden_test_artifacts::component("adv-limits"),
        runbooks.join("adv-limits.wasm"),
    )
    .unwrap();
    let secret = root.path().join("s");
    std::fs::write(&secret, "unused\n").unwrap();
    let policy = root.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "host_id = \"{host}\"\n[limits]\ntimeout_ms = 120000\n[grants]\nread_dirs = [\"{}\"]\nhttp = [\"http://127.0.0.1:1\"]\nsecrets = [\"s\"]\n[secrets]\ns = {{ file = \"{}\" }}\n",
            dir.display(),
            secret.display()
        ),
    )
    .unwrap();
    let rules = root.path().join("slow.yaml");
    std::fs::write(
        &rules,
        format!(
            "rules:\n  - id: slow\n    match: {{type: slow-thing}}\n    action:\n      runbook: adv-limits\n      params: {{mode: sleep-heal, sleep_ms: 60000, dir: \"{}\", origin: \"http://127.0.0.1:1\"}}\n    cooldown: 0\n",
            dir.display()
        ),
    )
    .unwrap();
    let server_data = root.path().join("server");
    std::fs::create_dir_all(&server_data).unwrap();
    std::fs::write(
        server_data.join("runwarden.toml"),
        format!("rules = [\"{}\"]\n", rules.display()),
    )
    .unwrap();
    let trust = super::publish::signed_dir(root.path(), &runbooks);
    let env = [
        ("RUNWARDEN_RUNBOOKS_DIR", runbooks.to_str().unwrap()),
        ("RUNWARDEN_TRUST", trust.to_str().unwrap()),
    ];
    let (server, line) = spawn_env(
        &server_data,
        &["server", "--nats", &nats.url, "--listen", "127.0.0.1:0"],
        &env,
        "runwarden server is up at ",
    );
    let url = line
        .trim_start_matches("runwarden server is up at ")
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let token = runwarden(&server_data, &["--server", &url, "hosts", "enroll-token"]);
    assert!(token.status.success(), "{}", stderr(&token));
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    let agent_data = root.path().join("agent");
    let enrolled = runwarden(
        &agent_data,
        &[
            "--server",
            &url,
            "agent",
            "enroll",
            "--token",
            &token,
            "--host-id",
            host,
            "--policy",
            policy.to_str().unwrap(),
        ],
    );
    assert!(enrolled.status.success(), "{}", stderr(&enrolled));
    SlowFleet {
        _nats: nats,
        root,
        server,
        url,
        agent_data,
        runbooks,
        trust,
    }
}

impl SlowFleet {
    fn agent(&self) -> Proc {
        let nats = self._nats.url.clone();
        spawn_env(
            &self.agent_data,
            &["agent", "run", "--nats", &nats, "--listen", "127.0.0.1:0"],
            &[
                ("RUNWARDEN_RUNBOOKS_DIR", self.runbooks.to_str().unwrap()),
                ("RUNWARDEN_TRUST", self.trust.to_str().unwrap()),
            ],
            "runwarden agent of host",
        )
        .0
    }

    fn server_data(&self) -> PathBuf {
        self.root.path().join("server")
    }
}

#[test]
fn an_agent_killed_mid_run_records_it_interrupted_at_restart_never_reruns_it_and_the_incident_escalates()
 {
    let f = slow_fleet("clinic-kill-02");
    let mut agent = f.agent();
    let incident = f.root.path().join("slow.json");
    std::fs::write(
        &incident,
        r#"{"host":"clinic-kill-02","type":"slow-thing","severity":"high"}"#,
    )
    .unwrap();
    let o = runwarden(
        &f.server_data(),
        &[
            "--server",
            &f.url,
            "incident",
            "submit",
            "--no-wait",
            "--json",
            incident.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let id = serde_json::from_slice::<Value>(&o.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The run is under way once the agent's journal noted it.
    let journal_wal = f.agent_data.join("agent-journal.db-wal");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&journal_wal).map_or(0, |m| m.len()) == 0 {
        assert!(Instant::now() < deadline, "the run never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut child = agent.child.take().unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let _agent = f.agent();

    // The job comes again (its delivery was never acked); the agent answers it from its
    // log — `interrupted` — and the server escalates the incident.
    let deadline = Instant::now() + Duration::from_secs(150);
    let rec = loop {
        let o = runwarden(
            &f.server_data(),
            &["--server", &f.url, "incident", "show", &id, "--json"],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let rec: Value = serde_json::from_slice(&o.stdout).unwrap();
        if rec["status"] != "processing" {
            break rec;
        }
        assert!(
            Instant::now() < deadline,
            "still processing after 150 s: {rec}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(rec["status"], "escalated", "{rec}");
    assert_eq!(rec["tier"], "L3", "{rec}");
    assert!(rec["reason"].as_str().unwrap().contains("cut off"), "{rec}");
    assert_eq!(rec["runs"][0]["status"], "interrupted", "{rec}");
    assert!(rec["escalation"].is_string(), "{rec}");

    // One record of the run in the host's log: `interrupted`; it never ran again.
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    io.block_on(async {
        let log = runwarden_evidence::Store::open(
            &f.agent_data.join("evidence.db").display().to_string(),
        )
        .await
        .unwrap();
        let records = log.range(0, 100).await.unwrap();
        let runs: Vec<_> = records
            .iter()
            .filter(|r| r.runbook == "adv-limits")
            .collect();
        assert_eq!(runs.len(), 1, "one record, no second run");
        assert_eq!(runs[0].status, "interrupted");
    });
    drop(f.server);
}
