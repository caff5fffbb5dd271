//! `runwarden up` as an operator runs it: zero configuration besides a data dir and a
//! policy for a scratch directory, the tour through `runwarden incident` and
//! `runwarden token`, and a clean stop on SIGTERM.

use super::{runwarden, stderr};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running `runwarden up`, killed if a test fails before stopping it.
pub(super) struct Up {
    child: Option<Child>,
    pub(super) url: String,
    pub(super) lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(super) fn start(data: &Path, policy: &Path) -> Up {
    start_with(data, policy, &[])
}

pub(super) fn start_with(data: &Path, policy: &Path, env: &[(&str, &str)]) -> Up {
    let child = Command::new(env!("CARGO_BIN_EXE_runwarden"))
        // From the repository root, as an operator following the README would.
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .args(["up", "--listen", "127.0.0.1:0", "--policy"])
        .arg(policy)
        .env("RUNWARDEN_DATA_DIR", data)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // From here the guard owns the child: a failing test still kills it.
    let mut up = Up {
        child: Some(child),
        url: String::new(),
        lines: rx,
    };
    let out = BufReader::new(up.child.as_mut().unwrap().stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = up
            .lines
            .recv_timeout(left)
            .expect("runwarden up prints its URL within 2 minutes");
        if let Some(rest) = line.strip_prefix("runwarden is up at ") {
            up.url = rest
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches('/')
                .to_string();
            return up;
        }
    }
}

pub(super) fn cli(data: &Path, up: &Up, args: &[&str]) -> Output {
    let mut full = args.to_vec();
    full.extend(["--server", &up.url]);
    runwarden(data, &full)
}

/// In `dir`: a data dir, a policy of host clinic-demo-01 granting a scratch directory
/// with a stale file in its tmp/, and a disk-full incident naming that tmp/.
pub(super) struct DiskFull {
    pub(super) data: std::path::PathBuf,
    pub(super) policy: std::path::PathBuf,
    pub(super) incident: std::path::PathBuf,
    pub(super) stale: std::path::PathBuf,
}

pub(super) fn disk_full(dir: &Path) -> DiskFull {
    let work = dir.join("work");
    std::fs::create_dir_all(work.join("tmp")).unwrap();
    let stale = work.join("tmp/stale.part");
    std::fs::write(&stale, "x").unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "host_id = \"clinic-demo-01\"\n[grants]\nwrite_dirs = [\"{}\"]\n",
            work.display()
        ),
    )
    .unwrap();
    let incident = dir.join("disk-full.json");
    std::fs::write(
        &incident,
        format!(
            r#"{{"host":"clinic-demo-01","type":"disk-full","severity":"high","labels":{{"dir":"{}"}}}}"#,
            work.join("tmp").display()
        ),
    )
    .unwrap();
    DiskFull {
        data: dir.join("data"),
        policy,
        incident,
        stale,
    }
}

#[test]
fn up_heals_at_l1_escalates_a_repeat_refuses_another_tenant_and_stops_cleanly() {
    let d = tempfile::tempdir().unwrap();
    let DiskFull {
        data,
        policy,
        incident,
        ..
    } = disk_full(d.path());
    let up = start(&data, &policy);
    let token = data.join("admin-token");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&token).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the admin token is private");

    let inc = incident.to_str().unwrap();

    // Heals at L1.
    let o = cli(&data, &up, &["incident", "submit", inc, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let first: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(first["tier"], "L1", "{first}");
    assert!(
        matches!(first["status"].as_str(), Some("healed" | "no-op")),
        "{first}"
    );
    assert_eq!(first["decision"]["rule_id"], "disk-full-tmp");

    // The repeat escalates (exit 1: not healed), in words on the terminal.
    let o = cli(&data, &up, &["incident", "submit", inc]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(": escalated (tier L3)") && text.contains("repeated incident"),
        "{text}"
    );
    // A human must decide it: an open escalation with a deadline (high: one hour).
    let esc = text
        .split("escalation ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .unwrap_or_else(|| panic!("no escalation in {text}"))
        .to_string();
    let o = cli(&data, &up, &["escalation", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listed = String::from_utf8_lossy(&o.stdout);
    assert!(
        listed.starts_with(&esc) && listed.contains("open"),
        "{listed}"
    );
    let o = cli(&data, &up, &["escalation", "show", &esc, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let shown: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (shown["state"].as_str(), shown["severity"].as_str()),
        (Some("open"), Some("high"))
    );

    // Denied by a human: nothing runs, the record says who.
    let o = cli(
        &data,
        &up,
        &["escalation", "deny", &esc, "--note", "a known glitch"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(": denied") && text.contains("a known glitch"),
        "{text}"
    );

    // Listed and shown.
    let o = cli(&data, &up, &["incident", "list", "--json"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 2);
    let id = first["id"].as_str().unwrap();
    let o = cli(&data, &up, &["incident", "show", id]);
    assert!(o.status.success(), "{}", stderr(&o));

    // A token of another tenant sees nothing of it.
    let o = runwarden(
        &data,
        &["token", "create", "--tenant", "clinic-b", "--scope", "read"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let other = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let o = cli(&data, &up, &["incident", "show", id, "--token", &other]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("404"), "{}", stderr(&o));
    // Revoked, it opens nothing (the server caches a lookup for at most 5 s).
    let o = runwarden(&data, &["token", "list"]);
    let listed = String::from_utf8_lossy(&o.stdout).to_string();
    let other_id = listed
        .lines()
        .find(|l| l.contains("clinic-b"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    assert!(!listed.contains(&other), "token list never shows secrets");
    // And a read token cannot submit.
    let o = cli(&data, &up, &["incident", "submit", inc, "--token", &other]);
    assert!(stderr(&o).contains("403"), "{}", stderr(&o));
    // Nor can an operate token of that tenant act on tenant local's host: 404, as if
    // there were no such host; its escalations cannot be approved either.
    let o = runwarden(
        &data,
        &[
            "token", "create", "--tenant", "clinic-b", "--scope", "operate",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let b_operate = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let o = cli(
        &data,
        &up,
        &["incident", "submit", inc, "--token", &b_operate],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("404") && stderr(&o).contains("no host"),
        "{}",
        stderr(&o)
    );
    let o = cli(
        &data,
        &up,
        &["escalation", "approve", &esc, "--token", &b_operate],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("404"), "{}", stderr(&o));
    let o = cli(&data, &up, &["incident", "list", "--json"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).lines().count(),
        2,
        "nothing new for tenant local"
    );
    let o = runwarden(&data, &["token", "revoke", &other_id]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::thread::sleep(Duration::from_millis(5200));
    let o = cli(&data, &up, &["incident", "list", "--token", &other]);
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));
    // A bad incident is refused before the network, naming the field.
    std::fs::write(&incident, r#"{"host":"h","type":"x","severity":"bad"}"#).unwrap();
    let o = cli(&data, &up, &["incident", "submit", inc]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown variant `bad`"),
        "{}",
        stderr(&o)
    );

    // SIGTERM: finishes, writes a last checkpoint, exits 0.
    let mut up = up;
    let mut child = up.child.take().unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "runwarden up did not stop within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let mut rest = Vec::new();
    while let Ok(l) = up.lines.recv_timeout(Duration::from_secs(5)) {
        rest.push(l);
    }
    assert!(
        rest.iter().any(|l| l.contains("runwarden stopped")),
        "{rest:?}"
    );
    // Everything it did is in the log and verifies.
    let bundle = d.path().join("b.tar");
    let o = runwarden(
        &data,
        &["evidence", "export", "-o", bundle.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let key = data.join("signing-keys/clinic-demo-01.pub");
    let o = runwarden(
        &data,
        &[
            "evidence",
            "verify",
            bundle.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // The heal, the escalated repeat, and its denial.
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(said.starts_with("verified 3 records"), "{said}");
}

/// A local OpenAI-compatible server that answers every completion with one tool call.
fn fake_model(answer: Value) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let body = serde_json::json!({
                "model": "fake-model-1",
                "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                    "role": "assistant", "content": null,
                    "tool_calls": [{"id": "c1", "type": "function", "function": {
                        "name": "select_runbook", "arguments": answer.to_string()}}]}}],
                "usage": {"prompt_tokens": 900, "completion_tokens": 30}
            })
            .to_string();
            let app = axum::Router::new().route(
                "/v1/chat/completions",
                axum::routing::post(move || {
                    let body = body.clone();
                    async move { body }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!(
        "http://{}/v1",
        rx.recv_timeout(Duration::from_secs(10)).unwrap()
    )
}

#[test]
fn up_asks_the_configured_model_when_no_rule_matches() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let work = d.path().join("work");
    std::fs::create_dir_all(work.join("tmp")).unwrap();
    let policy = d.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "host_id = \"clinic-demo-01\"\n[grants]\nwrite_dirs = [\"{}\"]\n",
            work.display()
        ),
    )
    .unwrap();
    let tmp = work.join("tmp").display().to_string();
    let url = fake_model(serde_json::json!({
        "runbook": "clear-tmp", "params": {"dir": tmp, "older_than_hours": 24},
        "confidence": 0.9, "rationale": "temporary files fill the disk"
    }));
    let up = start_with(
        &data,
        &policy,
        &[
            ("RUNWARDEN_LLM_PROVIDER", "openai"),
            ("RUNWARDEN_LLM_URL", &url),
            ("RUNWARDEN_LLM_MODEL", "fake-model"),
        ],
    );
    let said = up.lines.recv_timeout(Duration::from_secs(10)).unwrap();
    let said = [
        said,
        up.lines.recv_timeout(Duration::from_secs(10)).unwrap(),
        up.lines.recv_timeout(Duration::from_secs(10)).unwrap(),
    ]
    .join("\n");
    assert!(said.contains("L2 planner: openai fake-model"), "{said}");

    // No standard rule knows this incident type: the model chooses, validated, L2.
    let incident = d.path().join("tmp-filling.json");
    std::fs::write(
        &incident,
        r#"{"host":"clinic-demo-01","type":"tmp-filling","severity":"medium","message":"temporary files pile up"}"#,
    )
    .unwrap();
    let o = cli(
        &data,
        &up,
        &["incident", "submit", incident.to_str().unwrap()],
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}{}", stderr(&o));
    assert!(text.contains("(tier L2)"), "{text}");
    assert!(
        text.contains(
            "planner openai fake-model-1 (confidence 0.90): temporary files fill the disk"
        ),
        "{text}"
    );
    assert!(text.contains("ran clear-tmp"), "{text}");
}

#[test]
fn the_commented_example_configuration_is_valid() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let policy = d.path().join("policy.toml");
    std::fs::write(&policy, "host_id = \"clinic-demo-01\"\n").unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/runwarden.toml");
    let up = start_with(
        &data,
        &policy,
        &[("RUNWARDEN_CONFIG", example.to_str().unwrap())],
    );
    let o = cli(&data, &up, &["incident", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_config_error_names_the_place_and_never_echoes_the_line() {
    let d = tempfile::tempdir().unwrap();
    let config = d.path().join("runwarden.toml");
    // The quotes are missing: the line holds a Slack webhook URL, which is a secret.
    std::fs::write(
        &config,
        "[[escalations.webhooks]]\nname = \"ops\"\nurl = https://hooks.slack.com/services/T0/B0/SECRETPART\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_runwarden"))
        .args(["up", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("RUNWARDEN_DATA_DIR", d.path().join("data"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("line 3, column"), "{err}");
    assert!(
        !err.contains("SECRETPART") && !err.contains("hooks.slack"),
        "{err}"
    );
}

/// `kill -9` of `runwarden up` while a runbook runs (adv-limits sleeping 60 s): at the
/// next start the agent records the run `interrupted`, signed with the host key, the
/// incident is escalated to a human, and the run does not start again.
#[test]
fn a_run_cut_off_by_kill_9_is_recorded_interrupted_at_restart_and_not_run_again() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let dir = d.path().join("ro");
    let runbooks = d.path().join("runbooks");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&runbooks).unwrap();
    std::fs::copy(
        runwarden_test_artifacts::component("adv-limits"),
        runbooks.join("adv-limits.wasm"),
    )
    .unwrap();
    let secret = d.path().join("s");
    std::fs::write(&secret, "unused\n").unwrap();
    let policy = d.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "host_id = \"clinic-kill-01\"\n[limits]\ntimeout_ms = 120000\n[grants]\nread_dirs = [\"{}\"]\nhttp = [\"http://127.0.0.1:1\"]\nsecrets = [\"s\"]\n[secrets]\ns = {{ file = \"{}\" }}\n",
            dir.display(),
            secret.display()
        ),
    )
    .unwrap();
    let rules = d.path().join("slow.yaml");
    std::fs::write(
        &rules,
        format!(
            "rules:\n  - id: slow\n    match: {{type: slow-thing}}\n    action:\n      runbook: adv-limits\n      params: {{mode: sleep-heal, sleep_ms: 60000, dir: \"{}\", origin: \"http://127.0.0.1:1\"}}\n    cooldown: 0\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("runwarden.toml"),
        format!("rules = [\"{}\"]\n", rules.display()),
    )
    .unwrap();
    let trust = super::publish::signed_dir(d.path(), &runbooks);
    let env = [
        ("RUNWARDEN_RUNBOOKS_DIR", runbooks.to_str().unwrap()),
        ("RUNWARDEN_TRUST", trust.to_str().unwrap()),
    ];
    let mut up = start_with(&data, &policy, &env);
    let incident = d.path().join("slow.json");
    std::fs::write(
        &incident,
        r#"{"host":"clinic-kill-01","type":"slow-thing","severity":"high"}"#,
    )
    .unwrap();
    let o = cli(
        &data,
        &up,
        &[
            "incident",
            "submit",
            incident.to_str().unwrap(),
            "--no-wait",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let accepted: Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = accepted["id"].as_str().expect("an incident id").to_string();
    // The run is under way once the agent's journal has noted it (a write of its WAL):
    // wait for that, at most 60 s.
    let journal_wal = data.join("agent-journal.db-wal");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&journal_wal).map_or(0, |m| m.len()) == 0 {
        assert!(Instant::now() < deadline, "the run never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut child = up.child.take().unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let up = start_with(&data, &policy, &env);
    let o = cli(&data, &up, &["incident", "show", &id, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rec: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rec["status"], "escalated", "{rec}");
    assert_eq!(rec["tier"], "L3", "{rec}");
    let o = runwarden(&data, &["evidence", "list", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let records: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let runs: Vec<&Value> = records
        .iter()
        .filter(|r| r["runbook"] == "adv-limits")
        .collect();
    assert_eq!(
        runs.len(),
        1,
        "one record of the run, no second run: {records:?}"
    );
    assert_eq!(runs[0]["status"], "interrupted", "{records:?}");
    drop(up);
}

/// No ESC and no bidi override reaches the terminal raw.
#[track_caller]
fn assert_no_raw_controls(o: &Output, args: &[&str]) {
    for (what, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains('\x1b') && !text.contains('\u{202e}'),
            "{args:?}: raw controls on {what}: {text:?}"
        );
    }
}

/// An incident's free text, a guest's summary that quotes the incident's label, and a
/// person's note on its escalation all hold an escape sequence, a bidi override and a
/// newline: `incident` and `escalation` show each escaped, on one line; names that
/// cannot hold them are refused before the network.
#[test]
fn what_an_incident_a_guest_or_a_note_says_is_escaped_on_the_terminal() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    // A granted directory whose name switches the terminal to line drawing and reverses
    // the text after it (no glob characters: a dir param may not hold those).
    let work = d.path().join("w\x1b(0\u{202e}\nX");
    let shown = "w\\x1b(0\\u{202e}\\x0aX/tmp";
    std::fs::create_dir_all(work.join("tmp")).unwrap();
    std::fs::write(work.join("tmp/stale.part"), "x").unwrap();
    std::fs::File::options()
        .write(true)
        .open(work.join("tmp/stale.part"))
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(86_400))
        .unwrap();
    let policy = d.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "host_id = \"clinic-demo-01\"\n[grants]\nwrite_dirs = [{}]\n",
            serde_json::to_string(work.to_str().unwrap()).unwrap()
        ),
    )
    .unwrap();
    let message = "disk full\x1b[31m\u{202e}\nforged line";
    let incident = d.path().join("incident.json");
    std::fs::write(
        &incident,
        serde_json::json!({
            "host": "clinic-demo-01", "type": "disk-full", "severity": "high",
            "message": message, "labels": {"dir": work.join("tmp")},
        })
        .to_string(),
    )
    .unwrap();
    let up = start(&data, &policy);
    let run = |args: &[&str]| {
        let o = cli(&data, &up, args);
        assert_no_raw_controls(&o, args);
        o
    };
    let inc = incident.to_str().unwrap();

    // clear-tmp ran in the directory the label names; its summary quotes it, on one line.
    let ran = |o: &Output| {
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let line = format!("/{shown} (evidence record 0)");
        assert!(
            text.lines().any(|l| {
                l.starts_with("  ran clear-tmp: healed — removed 1 file(s)") && l.ends_with(&line)
            }),
            "{text}"
        );
        text
    };
    let o = run(&["incident", "submit", inc]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = ran(&o);
    let id = text
        .strip_prefix("incident ")
        .and_then(|t| t.split(':').next())
        .unwrap_or_else(|| panic!("no incident id in {text}"))
        .to_string();
    ran(&run(&["incident", "show", &id]));
    // As JSON: escaped inside its strings, and what was submitted reads back whole.
    let o = run(&["incident", "show", &id, "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["incident"]["message"], message);
    let o = run(&["incident", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    run(&["incident", "list", "--json"]);

    // The repeat escalates; a person declines it with a note of the same kind.
    let o = run(&["incident", "submit", inc]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let esc = text
        .split("escalation ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .unwrap_or_else(|| panic!("no escalation in {text}"))
        .to_string();
    let note = "known\x1b[31m\u{202e}\nforged line";
    for args in [
        &["escalation", "deny", &esc, "--note", note][..],
        &["escalation", "show", &esc],
    ] {
        let o = run(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.lines()
                .any(|l| l.ends_with(": known\\x1b[31m\\u{202e}\\x0aforged line")),
            "{args:?}: {text}"
        );
    }
    run(&["escalation", "list"]);

    // Names are refused outright, quoted escaped, before anything is sent.
    std::fs::write(
        &incident,
        serde_json::json!({"host": "clinic\x1b[31m\u{202e}", "type": "disk-full", "severity": "high"})
            .to_string(),
    )
    .unwrap();
    let o = run(&["incident", "submit", inc]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("invalid incident: host: \"clinic\\u{1b}[31m\\u{202e}\" may hold only"),
        "{}",
        stderr(&o)
    );
}
