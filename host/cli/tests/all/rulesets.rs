//! An L1 rule set deployed like a runbook: compiled, signed by a publisher, published,
//! deployed to one host of a fleet over NATS — where the host's own control plane and the
//! server then decide that host's incidents with it, naming its sha256 — and rolled back
//! in one command.

use super::fleet::OperatorFleet;
use super::offline::submit;
use super::publish::{keygen, sign};
use super::rollout::json;
use super::{component, runwarden, stderr};
use serde_json::Value;

const HOST: &str = "clinic-rs-01";
const OTHER: &str = "clinic-rs-02";

#[test]
fn a_signed_rule_set_deployed_to_a_host_decides_its_incidents_there_and_at_the_server_until_rolled_back()
 {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let signer = r.join("signer");
    let keys = r.join("keys");
    let acme = keygen(&signer, &keys, "acme-msp");
    let trust = format!(
        "[[publishers]]\nkey = \"{acme}\"\ncomponents = [\"*\"]\nmax_risk = \"high\"\nrules = true\n"
    );
    std::fs::write(r.join("trust.toml"), &trust).unwrap();
    let runbooks = r.join("runbooks");
    std::fs::create_dir_all(&runbooks).unwrap();
    std::fs::copy(component("trivial"), runbooks.join("trivial.wasm")).unwrap();
    sign(
        &signer,
        &runbooks.join("trivial.wasm"),
        &keys.join("acme-msp.key"),
    );
    // The rule set: compiled, then signed under a name and version of its own.
    std::fs::write(
        r.join("clinic.yaml"),
        "rules:\n  - id: say-hello\n    match: {type: hello-needed}\n    action:\n      runbook: trivial\n      params: {}\n    cooldown: 0\n",
    )
    .unwrap();
    let rules = r.join("clinic-rules.wasm");
    let o = runwarden(
        &signer,
        &[
            "rules",
            "compile",
            r.join("clinic.yaml").to_str().unwrap(),
            "--out",
            rules.to_str().unwrap(),
            "--runbooks",
            runbooks.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // `runbook sign` knows a rule set when it sees one.
    let o = runwarden(
        &signer,
        &[
            "runbook",
            "sign",
            rules.to_str().unwrap(),
            "--key",
            keys.join("acme-msp.key").to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("runwarden rules sign"),
        "{}",
        stderr(&o)
    );
    let o = runwarden(
        &signer,
        &[
            "rules",
            "sign",
            rules.to_str().unwrap(),
            "--name",
            "clinic-rules",
            "--version",
            "1.0.0",
            "--key",
            keys.join("acme-msp.key").to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = runwarden(
        &signer,
        &[
            "runbook",
            "verify",
            rules.to_str().unwrap(),
            "--trust",
            r.join("trust.toml").to_str().unwrap(),
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let verified = json(&o);
    let sha = verified["sha256"].as_str().unwrap().to_string();

    let fleet = OperatorFleet::start_with(
        r,
        &format!(
            "runbooks_dir = \"{}\"\ntrust = \"{}\"\n[guardrails]\nrepeat_threshold = 1000\n",
            runbooks.display(),
            r.join("trust.toml").display()
        ),
    );
    let mut agents = Vec::new();
    let mut locals = Vec::new();
    let mut datas = Vec::new();
    for host in [HOST, OTHER] {
        let data = fleet.enroll(r, host);
        std::fs::write(data.join("trust.toml"), &trust).unwrap();
        // The same incident comes again and again here: no repeat escalation.
        std::fs::write(
            data.join("runwarden.toml"),
            "[guardrails]\nrepeat_threshold = 1000\n",
        )
        .unwrap();
        let (agent, local) = fleet.agent_env(
            &data,
            &[("RUNWARDEN_RUNBOOKS_DIR", runbooks.to_str().unwrap())],
        );
        agents.push(agent);
        locals.push(local);
        datas.push(data);
    }
    let admin = |args: &[&str]| {
        let mut full = vec!["--server", fleet.url.as_str()];
        full.extend(args);
        runwarden(&fleet.data, &full)
    };
    let hello =
        |host: &str| format!(r#"{{"host":"{host}","type":"hello-needed","severity":"low"}}"#);
    assert!(
        admin(&["trust", "set", r.join("trust.toml").to_str().unwrap()])
            .status
            .success()
    );
    let o = admin(&["runbook", "publish", rules.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Before: no rule matches anywhere.
    let before = submit(&fleet.data, &fleet.url, &hello(HOST));
    assert_ne!(before["tier"], "L1", "{before}");
    let local = submit(&datas[0], &locals[0], &hello(HOST));
    assert_eq!(local["status"], "handed-up", "{local}");

    // Deployed to one host: its incidents are decided by the rule set, on the host (its
    // own control plane, link or no link) and at the server, each naming its sha256.
    // Canaries judge runbook runs; a rule set's decisions are not counted: refused.
    let o = admin(&[
        "deploy",
        "clinic-rules@1.0.0",
        "--hosts",
        "*",
        "--canary",
        "50%",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is a rule set"), "{}", stderr(&o));
    let o = admin(&["deploy", "clinic-rules@1.0.0", "--hosts", HOST, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        json(&o)["state"],
        "done",
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    for (at, rec) in [
        ("server", submit(&fleet.data, &fleet.url, &hello(HOST))),
        ("host", submit(&datas[0], &locals[0], &hello(HOST))),
    ] {
        assert_eq!(rec["tier"], "L1", "{at}: {rec}");
        assert_eq!(rec["status"], "no-op", "{at}: {rec}");
        assert_eq!(rec["decision"]["rule_id"], "say-hello", "{at}: {rec}");
        assert_eq!(rec["decision"]["rule_sha256"], sha.as_str(), "{at}: {rec}");
    }
    // The other host did not get it.
    let other = submit(&fleet.data, &fleet.url, &hello(OTHER));
    assert_ne!(other["tier"], "L1", "{other}");
    let hosts = json(&admin(&["hosts", "list", "--json"]));
    let listed: Vec<String> = hosts
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|h| {
            let id = h["id"].as_str().unwrap().to_string();
            h["components"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |c| format!("{id} {} {}", c["name"], c["version"]))
        })
        .collect();
    assert_eq!(listed, [format!("{HOST} \"clinic-rules\" \"1.0.0\"")]);

    // One command takes it back: nothing decides those incidents at L1 again.
    let o = admin(&["rollback", "clinic-rules", "--hosts", HOST, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["state"], "done");
    let after = submit(&fleet.data, &fleet.url, &hello(HOST));
    assert_ne!(after["tier"], "L1", "{after}");
    let local = submit(&datas[0], &locals[0], &hello(HOST));
    assert_eq!(local["status"], "handed-up", "{local}");

    // The host's log holds the deployment and the rollback of the rule set.
    let o = runwarden(&datas[0], &["evidence", "list", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let steps: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["runbook"] == "clinic-rules")
        .map(|r| r["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(steps, ["deployed", "rolled-back"]);
    drop(agents);
}
