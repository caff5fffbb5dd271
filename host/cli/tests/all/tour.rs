//! The README tour's L2, approval and flywheel steps, as an operator runs them: the
//! bundled scripted model server (scripts/model-server, the OpenAI wire format) and the
//! demo configuration (examples/demo.toml), with `runwarden up` and the CLI.

use super::up::{cli, start_with};
use super::{runwarden, stderr};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The scripted model server, stopped when dropped.
struct ModelServer(Child, String);

impl Drop for ModelServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn model_server(answers: &Path) -> ModelServer {
    let mut child = Command::new("python3")
        .arg(repo().join("scripts/model-server"))
        .args(["--listen", "127.0.0.1:0", "--answers"])
        .arg(answers)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs scripts/model-server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("model server listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    ModelServer(child, url)
}

#[test]
fn tour_l2_with_the_bundled_model_then_an_approval_then_a_flywheel_promotion() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let work = d.path().join("work");
    let units = d.path().join("units");
    std::fs::create_dir_all(work.join("tmp")).unwrap();
    let u = units.display();
    let policy = d.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            r#"host_id = "clinic-demo-01"
[grants]
services = ["nginx.service"]
probe = true
write_dirs = ["{}"]
[services]
backend = "command"
status = ["/bin/sh", "-c", "cat {u}/{{unit}} 2>/dev/null || echo inactive"]
start = ["/bin/sh", "-c", "mkdir -p {u} && echo active > {u}/{{unit}}"]
stop = ["/bin/sh", "-c", "mkdir -p {u} && echo inactive > {u}/{{unit}}"]
restart = ["/bin/sh", "-c", "mkdir -p {u} && echo active > {u}/{{unit}}"]
reload = ["/bin/sh", "-c", "true"]
"#,
            work.display()
        ),
    )
    .unwrap();
    // The shipped answers, with the demo directory moved to this test's.
    let shipped = std::fs::read_to_string(repo().join("examples/model-answers.json")).unwrap();
    let answers = d.path().join("answers.json");
    std::fs::write(
        &answers,
        shipped.replace("/tmp/runwarden-demo", &work.display().to_string()),
    )
    .unwrap();
    let model = model_server(&answers);
    // The flywheel's publisher key, trusted for its rule set by the host and (below) the
    // tenant: promotions then reach the host as a signed rule set.
    let o = runwarden(&data, &["flywheel", "key"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let trust = d.path().join("trust.toml");
    std::fs::write(&trust, &o.stdout).unwrap();
    std::fs::copy(&trust, data.join("trust.toml")).unwrap();
    let config = repo().join("examples/demo.toml");
    let up = start_with(
        &data,
        &policy,
        &[
            ("RUNWARDEN_CONFIG", config.to_str().unwrap()),
            ("RUNWARDEN_LLM_PROVIDER", "openai"),
            ("RUNWARDEN_LLM_URL", &model.1),
            ("RUNWARDEN_LLM_MODEL", "scripted"),
        ],
    );
    let incident = |name: &str| {
        let text = std::fs::read_to_string(repo().join("examples/incidents").join(name))
            .unwrap()
            .replace("/tmp/runwarden-demo", &work.display().to_string());
        let p = d.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };

    // No rule knows http-502: the model chooses restart-service, validated, L2.
    let o = cli(
        &data,
        &up,
        &["incident", "submit", &incident("http-502.json")],
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}{}", stderr(&o));
    assert!(text.contains("healed (tier L2)"), "{text}");
    assert!(
        text.contains("planner openai scripted (confidence 0.90)"),
        "{text}"
    );
    assert!(text.contains("ran restart-service: healed"), "{text}");

    // The printer jam: the scripted model knows nothing, so it escalates.
    let o = cli(
        &data,
        &up,
        &["incident", "submit", &incident("unknown.json")],
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("escalated (tier L3)") && text.contains("no answer"),
        "{text}"
    );

    // Risky: disk-cleanup is high-risk, so it waits; the human approves; it runs as L3.
    let o = cli(
        &data,
        &up,
        &["incident", "submit", &incident("disk-critical.json")],
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("awaiting_approval (tier L3)"), "{text}");
    assert!(
        !text.contains("ran disk-cleanup"),
        "nothing ran yet: {text}"
    );
    let esc = text
        .split("escalation ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .unwrap()
        .to_string();
    // The token that submitted it (the admin token) cannot approve its own request: the
    // on-call human approves with a token of their own.
    let o = cli(
        &data,
        &up,
        &["escalation", "approve", &esc, "--note", "self-approval"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("409") && stderr(&o).contains("different token"),
        "{}",
        stderr(&o)
    );
    let o = runwarden(
        &data,
        &[
            "token", "create", "--tenant", "local", "--scope", "operate", "--name", "on-call",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let on_call = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let o = cli(
        &data,
        &up,
        &[
            "escalation",
            "approve",
            &esc,
            "--note",
            "on-call approves",
            "--token",
            &on_call,
        ],
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}{}", stderr(&o));
    assert!(text.contains(": approved"), "{text}");
    assert!(text.contains("ran disk-cleanup"), "{text}");
    assert!(
        text.contains("approved by token tok_") && text.contains("(operate scope, tenant local)"),
        "{text}"
    );
    // The approved run's signed record names the escalation it decided, its SLA deadline
    // and when it was decided: an auditor's bundle counts it by its SLA.
    let bundle = data.join("tour-bundle.tar");
    let o = cli(
        &data,
        &up,
        &["evidence", "export", "-o", bundle.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let run = super::report::records_of(&bundle)
        .into_iter()
        .find(|s| s["predicate"]["provenance"]["tier"] == "L3")
        .expect("the approved run is recorded");
    let approval = run["predicate"]["guardrails"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["guardrail"] == "approval")
        .cloned()
        .unwrap();
    assert_eq!(approval["escalation"]["id"], esc.as_str(), "{approval}");
    assert!(
        approval["escalation"]["decided_at"].as_str().unwrap()
            <= approval["escalation"]["sla_deadline"].as_str().unwrap(),
        "{approval}"
    );

    let o = cli(&data, &up, &["trust", "set", trust.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));

    // The flywheel: the demo proposes after one success.
    let o = cli(&data, &up, &["flywheel", "candidates", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let fw = &lines[0];
    assert_eq!(
        (&fw["incident_type"], &fw["runbook"], &fw["state"]),
        (
            &json!("http-502"),
            &json!("restart-service"),
            &json!("candidate")
        )
    );
    let id = fw["id"].as_str().unwrap();
    // Without a terminal and without --yes: shown, replayed, not deployed.
    let o = cli(&data, &up, &["flywheel", "promote", id]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(stderr(&o).contains("not deployed"), "{}", stderr(&o));
    assert!(
        text.contains("type: http-502") && text.contains("runbook: restart-service"),
        "{text}"
    );
    assert!(
        text.contains("replay against 3 stored incidents: matched 1, 1 resolved the same way"),
        "{text}"
    );
    assert!(!data.join(format!("rules/local/{id}.yaml")).exists());
    // Confirmed.
    let o = cli(&data, &up, &["flywheel", "promote", id, "--yes"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}{}", stderr(&o));
    assert!(text.contains(&format!("deployed {id}")), "{text}");
    assert!(
        text.contains("to the hosts: published as rule set flywheel 1.0.1"),
        "{text}"
    );
    assert!(data.join(format!("rules/local/{id}.yaml")).exists());
    // The same path as any rule set: signed, published, deployed, on the host's record.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let o = cli(&data, &up, &["deployments", "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let listed = String::from_utf8_lossy(&o.stdout).into_owned();
        let flywheel = listed
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|d| d["name"] == "flywheel")
            .unwrap_or_default();
        if flywheel["state"] == "done" {
            assert_eq!(flywheel["version"], "1.0.1", "{flywheel}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the flywheel's rule set not deployed in 60 s: {listed}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    // The next http-502 is matched by the new rule (L1); a repeat within 15 minutes, it
    // goes to a human rather than running again.
    let o = cli(
        &data,
        &up,
        &["incident", "submit", &incident("http-502.json")],
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(&format!("rule {id}")), "{text}");
    // The promotion is in the log, signed.
    let o = cli(&data, &up, &["evidence", "list"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!("rule:{id}")) && text.contains("promoted"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains(" flywheel ") && l.contains("deployed")),
        "{text}"
    );
}
