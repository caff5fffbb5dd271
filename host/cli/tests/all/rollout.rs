//! Deployments to a fleet over NATS: canaries catch a bad release and the rollout halts
//! with them rolled back; an agent that was down during a deployment converges when it
//! comes back, with the skew shown meanwhile; a rollback by host in one command; every
//! step on the record, the hosts' own steps mirrored at the server.

use super::fleet::{OperatorFleet, Proc};
use super::offline::submit;
use super::publish::{keygen, sign};
use super::{component, runwarden, stderr};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const HOSTS: [&str; 3] = ["clinic-ro-01", "clinic-ro-02", "clinic-ro-03"];

pub(super) fn json(o: &std::process::Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", String::from_utf8_lossy(&o.stdout), stderr(o)))
}

/// `runwarden deployments ID --json` until `done` says so (at most 120 s).
fn until(fleet: &OperatorFleet, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let o = runwarden(
            &fleet.data,
            &["--server", &fleet.url, "deployments", id, "--json"],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let d = json(&o);
        if done(&d) {
            return d;
        }
        assert!(Instant::now() < deadline, "{what} not within 120 s: {d}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn host_state<'a>(d: &'a Value, host: &str) -> &'a str {
    d["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == host)
        .and_then(|h| h["state"].as_str())
        .unwrap_or("absent")
}

fn incident(fleet: &OperatorFleet, host: &str, kind: &str) -> Value {
    submit(
        &fleet.data,
        &fleet.url,
        &format!(r#"{{"host":"{host}","type":"{kind}","severity":"low"}}"#),
    )
}

fn start_agent(fleet: &OperatorFleet, data: &Path, runbooks: &Path) -> Proc {
    fleet
        .agent_env(
            data,
            &[("RUNWARDEN_RUNBOOKS_DIR", runbooks.to_str().unwrap())],
        )
        .0
}

#[test]
fn canaries_halt_a_bad_release_a_returning_agent_converges_and_a_rollback_takes_one_command() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let signer = r.join("signer");
    let keys = r.join("keys");
    let acme = keygen(&signer, &keys, "acme-msp");
    let trust =
        format!("[[publishers]]\nkey = \"{acme}\"\ncomponents = [\"*\"]\nmax_risk = \"high\"\n");
    std::fs::write(r.join("trust.toml"), &trust).unwrap();
    // Every host (and the server's catalog) has trivial 0.1.0 of its own, signed.
    let runbooks = r.join("runbooks");
    std::fs::create_dir_all(&runbooks).unwrap();
    std::fs::copy(component("trivial"), runbooks.join("trivial.wasm")).unwrap();
    sign(
        &signer,
        &runbooks.join("trivial.wasm"),
        &keys.join("acme-msp.key"),
    );
    let next = r.join("trivial-next.wasm");
    std::fs::copy(component("trivial-next"), &next).unwrap();
    sign(&signer, &next, &keys.join("acme-msp.key"));
    // 0.3.0 is larger than a job carries inline: it reaches hosts by reference.
    let large = r.join("trivial-large.wasm");
    std::fs::copy(component("trivial-large"), &large).unwrap();
    assert!(std::fs::metadata(&large).unwrap().len() > 512 * 1024);
    sign(&signer, &large, &keys.join("acme-msp.key"));
    let rules = r.join("rules.yaml");
    std::fs::write(
        &rules,
        "rules:\n  - id: say-hello\n    match: {type: hello-needed}\n    action:\n      runbook: trivial\n      params: {}\n    cooldown: 0\n  - id: break-it\n    match: {type: broken-thing}\n    action:\n      runbook: trivial\n      params: {fail: true}\n    cooldown: 0\n",
    )
    .unwrap();
    let fleet = OperatorFleet::start_with(
        r,
        &format!(
            "rules = [\"{}\"]\nrunbooks_dir = \"{}\"\ntrust = \"{}\"\n[guardrails]\nrepeat_threshold = 1000\n",
            rules.display(),
            runbooks.display(),
            r.join("trust.toml").display()
        ),
    );
    let mut agents = Vec::new();
    let mut datas = Vec::new();
    for host in HOSTS {
        let data = fleet.enroll(r, host);
        // Each host pins the same publisher in its own trust policy.
        std::fs::write(data.join("trust.toml"), &trust).unwrap();
        agents.push(Some(start_agent(&fleet, &data, &runbooks)));
        datas.push(data);
    }
    let admin = |args: &[&str]| {
        let mut full = vec!["--server", fleet.url.as_str()];
        full.extend(args);
        runwarden(&fleet.data, &full)
    };
    assert!(
        admin(&["trust", "set", r.join("trust.toml").to_str().unwrap()])
            .status
            .success()
    );
    for c in [&next, &large] {
        let o = admin(&["runbook", "publish", c.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    for host in HOSTS {
        assert_eq!(incident(&fleet, host, "hello-needed")["status"], "no-op");
    }

    // A bad release with one canary: its runs fail there, the rollout halts, the canary
    // goes back, the others never get it.
    let o = admin(&[
        "deploy",
        "trivial@0.2.0",
        "--hosts",
        "*",
        "--canary",
        "30%",
        "--soak",
        "30",
        "--max-failure-rate",
        "0.2",
        "--no-wait",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bad = json(&o);
    let id = bad["id"].as_str().unwrap().to_string();
    assert_eq!(bad["state"], "canary", "{bad}");
    let d = until(&fleet, &id, "the canary deployed", |d| {
        host_state(d, HOSTS[0]) == "deployed"
    });
    assert_eq!(host_state(&d, HOSTS[1]), "held", "{d}");
    let broken = incident(&fleet, HOSTS[0], "broken-thing");
    assert_eq!(broken["status"], "failed", "{broken}");
    let halted = until(&fleet, &id, "halted", |d| d["state"] == "halted");
    assert!(
        halted["detail"].as_str().unwrap().contains("1 of 1 runs"),
        "{halted}"
    );
    let d = until(&fleet, &id, "the canary rolled back", |d| {
        host_state(d, HOSTS[0]) == "deployed"
            && d["hosts"][0]["detail"]
                .as_str()
                .unwrap_or("")
                .starts_with("record")
            && d["hosts"][0]["version"] == ""
    });
    assert_eq!(host_state(&d, HOSTS[1]), "halted", "{d}");
    assert_eq!(host_state(&d, HOSTS[2]), "halted", "{d}");
    assert_eq!(
        incident(&fleet, HOSTS[0], "hello-needed")["status"],
        "no-op"
    );

    // A host down during a deployment (of the large release): the others take it, the
    // skew shows, and it converges when its agent is back.
    agents[2] = None;
    let o = admin(&[
        "deploy",
        "trivial@0.3.0",
        "--hosts",
        "*",
        "--no-wait",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = json(&o)["id"].as_str().unwrap().to_string();
    until(&fleet, &id, "two hosts deployed", |d| {
        host_state(d, HOSTS[0]) == "deployed" && host_state(d, HOSTS[1]) == "deployed"
    });
    let o = admin(&["hosts", "list"]);
    let listing = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        listing.contains(
            "version skew: trivial runs 0.3.0 on clinic-ro-01 clinic-ro-02; its own on clinic-ro-03"
        ),
        "{listing}"
    );
    assert_eq!(
        incident(&fleet, HOSTS[0], "hello-needed")["status"],
        "healed"
    );
    agents[2] = Some(start_agent(&fleet, &datas[2], &runbooks));
    let done = until(&fleet, &id, "the returning host converged", |d| {
        d["state"] == "done"
    });
    assert_eq!(host_state(&done, HOSTS[2]), "deployed", "{done}");
    assert_eq!(
        incident(&fleet, HOSTS[2], "hello-needed")["status"],
        "healed"
    );

    // One command rolls a host back.
    let o = admin(&["rollback", "trivial", "--hosts", HOSTS[1], "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["state"], "done");
    assert_eq!(
        incident(&fleet, HOSTS[1], "hello-needed")["status"],
        "no-op"
    );
    assert_eq!(
        incident(&fleet, HOSTS[0], "hello-needed")["status"],
        "healed"
    );
    let hosts = json(&admin(&["hosts", "list", "--json"]));
    let versions: Vec<(String, String)> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["id"].as_str().unwrap().to_string(),
                h["components"][0]["version"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        [
            ("clinic-ro-01".to_string(), "0.3.0".to_string()),
            ("clinic-ro-02".to_string(), String::new()),
            ("clinic-ro-03".to_string(), "0.3.0".to_string()),
        ]
    );

    // A host that no longer trusts what it runs refuses it at its next start; its
    // heartbeat says so, and the control plane notes it.
    agents[2] = None;
    std::fs::write(
        datas[2].join("trust.toml"),
        trust.replace("components = [\"*\"]", "components = [\"something-else\"]"),
    )
    .unwrap();
    agents[2] = Some(start_agent(&fleet, &datas[2], &runbooks));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let hosts = json(&admin(&["hosts", "list", "--json"]));
        let c = hosts
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["id"] == HOSTS[2])
            .map(|h| h["components"][0].clone())
            .unwrap_or_default();
        if c["state"] == "refused" {
            assert_eq!(c["version"], "", "{c}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the refusal at start not noted in 120 s: {c}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The control plane's decisions are in its log.
    let o = admin(&["evidence", "list", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let decisions: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["runbook"] == "component:trivial")
        .map(|r| r["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        decisions,
        [
            "published",
            "published",
            "deploy",
            "deploy-halted",
            "deploy",
            "deploy-done",
            "rollback",
            "deploy-done"
        ]
    );
    drop(agents);
}
