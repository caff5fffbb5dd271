//! `runwarden deploy` and `runwarden rollback` on `runwarden up`: a published release is
//! checked again by the host's own trust policy, swapped in, kept across a restart and
//! rolled back in one command; what the host does not trust is refused there; every step
//! is a signed record.

use super::publish::{keygen, log_statements, sign};
use super::up::{cli, start};
use super::{component, stderr};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Copy test component `artifact` to `dir/file` and sign it with `keys/signer.key`.
fn signed(
    dir: &Path,
    data: &Path,
    artifact: &str,
    file: &str,
    keys: &Path,
    signer: &str,
) -> PathBuf {
    let wasm = dir.join(file);
    std::fs::copy(component(artifact), &wasm).unwrap();
    sign(data, &wasm, &keys.join(format!("{signer}.key")));
    wasm
}

fn trust_toml(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| {
            format!("[[publishers]]\nkey = \"{k}\"\ncomponents = [\"*\"]\nmax_risk = \"high\"\n")
        })
        .collect()
}

fn json(o: &std::process::Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", String::from_utf8_lossy(&o.stdout), stderr(o)))
}

#[test]
fn a_release_is_deployed_kept_across_a_restart_rolled_back_and_refused_where_untrusted() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let keys = d.path().join("keys");
    let acme = keygen(&data, &keys, "acme-msp");
    let other = keygen(&data, &keys, "other");
    // The host has trivial 0.1.0 of its own, signed; it trusts acme-msp only.
    let runbooks = d.path().join("runbooks");
    std::fs::create_dir_all(&runbooks).unwrap();
    signed(
        &runbooks,
        &data,
        "trivial",
        "trivial.wasm",
        &keys,
        "acme-msp",
    );
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("trust.toml"), trust_toml(&[&acme])).unwrap();
    let rules = d.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "rules:\n  - id: say-hello\n    match: {type: hello-needed}\n    action:\n      runbook: trivial\n      params: {}\n    cooldown: 0\n",
    )
    .unwrap();
    std::fs::write(
        data.join("runwarden.toml"),
        format!(
            "rules = [\"{}\"]\nrunbooks_dir = \"{}\"\n[guardrails]\nrepeat_threshold = 1000\n",
            rules.display(),
            runbooks.display()
        ),
    )
    .unwrap();
    let policy = d.path().join("policy.toml");
    std::fs::write(&policy, "host_id = \"clinic-deploy-01\"\n").unwrap();
    let mut up = start(&data, &policy);

    // The tenant trusts both publishers; its registry gets trivial 0.2.0 by acme-msp.
    let releases = d.path().join("releases");
    std::fs::create_dir_all(&releases).unwrap();
    let next = signed(
        &releases,
        &data,
        "trivial-next",
        "trivial-next.wasm",
        &keys,
        "acme-msp",
    );
    let stranger = signed(
        &releases,
        &data,
        "adv-lowrisk",
        "adv-lowrisk.wasm",
        &keys,
        "other",
    );
    let tenant_trust = d.path().join("tenant-trust.toml");
    std::fs::write(&tenant_trust, trust_toml(&[&acme, &other])).unwrap();
    assert!(
        cli(
            &data,
            &up,
            &["trust", "set", tenant_trust.to_str().unwrap()]
        )
        .status
        .success()
    );
    for wasm in [&next, &stranger] {
        let o = cli(&data, &up, &["runbook", "publish", wasm.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let incident = d.path().join("hello.json");
    std::fs::write(
        &incident,
        r#"{"host":"clinic-deploy-01","type":"hello-needed","severity":"low"}"#,
    )
    .unwrap();
    let hello = |up: &super::up::Up| {
        let o = cli(
            &data,
            up,
            &["incident", "submit", incident.to_str().unwrap(), "--json"],
        );
        assert!(
            o.status.success() || o.status.code() == Some(1),
            "{}",
            stderr(&o)
        );
        json(&o)
    };
    // Before: the host's own 0.1.0 (no-op).
    assert_eq!(hello(&up)["status"], "no-op");

    // Deploy 0.2.0: the host took it, and runs it.
    let o = cli(
        &data,
        &up,
        &[
            "deploy",
            "trivial@0.2.0",
            "--hosts",
            "*",
            "--json",
            "--wait-secs",
            "120",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let dep = json(&o);
    assert_eq!(dep["state"], "done", "{dep}");
    assert_eq!(dep["hosts"][0]["host"], "clinic-deploy-01", "{dep}");
    assert_eq!(dep["hosts"][0]["state"], "deployed", "{dep}");
    let sha2 = dep["hosts"][0]["sha256"].as_str().unwrap().to_string();
    let rec = hello(&up);
    assert_eq!(rec["status"], "healed", "{rec}");
    assert!(rec["reason"].as_str().unwrap().contains("0.2.0"), "{rec}");
    let o = cli(&data, &up, &["hosts", "list", "--json"]);
    let hosts = json(&o);
    let c = &hosts[0]["components"][0];
    assert_eq!(
        (
            c["name"].as_str(),
            c["version"].as_str(),
            c["state"].as_str()
        ),
        (Some("trivial"), Some("0.2.0"), Some("deployed")),
        "{hosts}"
    );

    // Kept across a restart: loaded again through the host's trust policy.
    drop(up);
    up = start(&data, &policy);
    assert_eq!(hello(&up)["status"], "healed");

    // What the host does not trust is refused there, whatever the tenant's policy says.
    let o = cli(
        &data,
        &up,
        &[
            "deploy",
            "adv-lowrisk@0.1.0",
            "--hosts",
            "clinic-deploy-01",
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let refused = json(&o);
    assert_eq!(refused["hosts"][0]["state"], "refused", "{refused}");
    assert!(
        refused["hosts"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("not signed by a trusted publisher"),
        "{refused}"
    );

    // Rolled back in one command: the host's own 0.1.0 runs again.
    let o = cli(
        &data,
        &up,
        &["rollback", "trivial", "--hosts", "*", "--json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let back = json(&o);
    assert_eq!(back["state"], "done", "{back}");
    assert_eq!(back["hosts"][0]["state"], "deployed", "{back}");
    assert_eq!(hello(&up)["status"], "no-op");
    // Nothing to roll back on a host that got nothing.
    let o = cli(
        &data,
        &up,
        &["rollback", "adv-lowrisk", "--hosts", "*", "--json"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));

    // Every step is a signed record: the host's swaps and refusal, each run under the
    // version that ran with its publisher, and the control plane's decisions.
    let acme_id = runwarden_evidence::VerifyingKey::from_text(&acme)
        .unwrap()
        .key_id_hex();
    let all: Vec<(String, String, String, runwarden_evidence::Statement)> = log_statements(&data)
        .into_iter()
        .map(|(status, s)| {
            let subject = s.subject[0].clone();
            let sha = subject.digest.get("sha256").cloned().unwrap_or_default();
            (status, subject.name, sha, s)
        })
        .collect();
    let host_steps: Vec<(&str, &str)> = all
        .iter()
        .filter(|(status, ..)| ["deployed", "rolled-back", "refused"].contains(&status.as_str()))
        .map(|(status, name, ..)| (status.as_str(), name.as_str()))
        .collect();
    assert_eq!(
        host_steps,
        [
            ("deployed", "trivial"),
            ("refused", "adv-lowrisk"),
            ("rolled-back", "trivial")
        ],
        "{all:?}"
    );
    let healed: Vec<_> = all
        .iter()
        .filter(|(status, name, ..)| status == "healed" && name == "trivial")
        .collect();
    assert_eq!(healed.len(), 2);
    for (_, _, sha, s) in healed {
        assert_eq!(sha, &sha2);
        assert_eq!(s.predicate.publisher.as_deref(), Some(acme_id.as_str()));
    }
    let decisions: Vec<&str> = all
        .iter()
        .filter(|(_, name, ..)| name == "component:trivial")
        .map(|(status, ..)| status.as_str())
        .collect();
    assert_eq!(
        decisions,
        [
            "published",
            "deploy",
            "deploy-done",
            "rollback",
            "deploy-done"
        ],
        "{all:?}"
    );
}
