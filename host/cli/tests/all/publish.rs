//! `runwarden publisher keygen`, `runwarden runbook sign` and `runwarden runbook verify`:
//! a component is admitted only with its publisher's signature over these very bytes,
//! by a publisher the trust policy lets ship it.

use super::{component, runwarden, stderr};
use serde_json::Value;
use std::path::Path;

fn policy(dir: &Path, name: &str, key_file: &Path, components: &str, max_risk: &str) -> String {
    let key = std::fs::read_to_string(key_file).unwrap();
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "[[publishers]]\nkey = \"{}\"\ncomponents = {components}\nmax_risk = \"{max_risk}\"\n",
            key.trim()
        ),
    )
    .unwrap();
    p.display().to_string()
}

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `runwarden publisher keygen` of `name` into `dir`: the public key's text.
pub(super) fn keygen(data: &Path, dir: &Path, name: &str) -> String {
    let o = runwarden(
        data,
        &[
            "publisher",
            "keygen",
            "--out",
            dir.to_str().unwrap(),
            "--name",
            name,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out(&o).contains("[[publishers]]"), "{}", out(&o));
    std::fs::read_to_string(dir.join(format!("{name}.pub")))
        .unwrap()
        .trim()
        .to_string()
}

/// `runwarden runbook sign WASM --key KEY` (the release beside it); its stdout.
pub(super) fn sign(data: &Path, wasm: &Path, key: &Path) -> String {
    let o = runwarden(
        data,
        &[
            "runbook",
            "sign",
            wasm.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    out(&o)
}

/// Every record of the log in `data`'s evidence.db: its status and statement.
pub(super) fn log_statements(data: &Path) -> Vec<(String, runwarden_evidence::Statement)> {
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    io.block_on(async {
        let log = runwarden_evidence::Store::open(&data.join("evidence.db").display().to_string())
            .await
            .unwrap();
        log.range(0, 100_000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| {
                let env =
                    runwarden_evidence::Envelope::from_json(&String::from_utf8_lossy(&r.envelope))
                        .unwrap();
                (
                    r.status,
                    runwarden_evidence::Statement::from_envelope(&env).unwrap(),
                )
            })
            .collect()
    })
}

/// A publisher `acme-msp`'s keys in `dir/keys`, and the `trivial` component copied to
/// `dir/trivial.wasm` and signed by it (its release beside it). Returns (keys, component).
fn signed_trivial(dir: &Path, data: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let keys = dir.join("keys");
    keygen(data, &keys, "acme-msp");
    let wasm = dir.join("trivial.wasm");
    std::fs::copy(component("trivial"), &wasm).unwrap();
    let said = sign(data, &wasm, &keys.join("acme-msp.key"));
    assert!(said.contains("as publisher acme-msp"), "{said}");
    (keys, wasm)
}

#[test]
fn a_signed_component_is_admitted_and_every_wrong_one_is_refused_by_name() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let (keys, wasm) = signed_trivial(d.path(), &data);
    let public = keys.join("acme-msp.pub");
    let wasm_s = wasm.to_str().unwrap();
    let release = d.path().join("trivial.wasm.release.json");
    let env: Value = serde_json::from_str(&std::fs::read_to_string(&release).unwrap()).unwrap();
    assert_eq!(env["payloadType"], "application/vnd.in-toto+json");
    // What `runbook build` noted beside a component is signed into its release.
    std::fs::write(
        d.path().join("trivial.wasm.build.json"),
        r#"{"source_sha256": "5ca1ab1e", "toolchain": "rustc 1.95.0"}"#,
    )
    .unwrap();
    sign(&data, &wasm, &keys.join("acme-msp.key"));
    let env: Value = serde_json::from_str(&std::fs::read_to_string(&release).unwrap()).unwrap();
    use base64::Engine as _;
    let statement: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(env["payload"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        statement["predicate"]["built_from"]["source_sha256"], "5ca1ab1e",
        "{statement}"
    );

    let trusted = policy(d.path(), "trust.toml", &public, "[\"*\"]", "high");
    let o = runwarden(&data, &["runbook", "verify", wasm_s, "--trust", &trusted]);
    assert!(o.status.success(), "{}{}", out(&o), stderr(&o));
    assert!(
        out(&o).contains("signed by publisher acme-msp"),
        "{}",
        out(&o)
    );
    let o = runwarden(
        &data,
        &["runbook", "verify", wasm_s, "--trust", &trusted, "--json"],
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verified"], true, "{v}");
    let sha = v["sha256"].as_str().unwrap().to_string();

    // One byte changed: refused, the release's digest and the actual one named.
    let tampered = d.path().join("tampered.wasm");
    let mut bytes = std::fs::read(&wasm).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x20;
    std::fs::write(&tampered, &bytes).unwrap();
    let o = runwarden(
        &data,
        &[
            "runbook",
            "verify",
            tampered.to_str().unwrap(),
            "--trust",
            &trusted,
            "--release",
            release.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("REFUSED")
            && stderr(&o).contains("altered")
            && stderr(&o).contains(&sha),
        "{}",
        stderr(&o)
    );
    // Another publisher's key in the policy.
    keygen(&data, &keys, "other");
    let other = policy(
        d.path(),
        "other.toml",
        &keys.join("other.pub"),
        "[\"*\"]",
        "high",
    );
    let o = runwarden(&data, &["runbook", "verify", wasm_s, "--trust", &other]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not signed by a trusted publisher"),
        "{}",
        stderr(&o)
    );
    // The right publisher, not trusted with this name.
    let narrow = policy(d.path(), "narrow.toml", &public, "[\"restart-*\"]", "high");
    let o = runwarden(
        &data,
        &["runbook", "verify", wasm_s, "--trust", &narrow, "--json"],
    );
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verified"], false, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("may not publish \"trivial\""),
        "{v}"
    );
    // A release that lies about its component (another name, a lower risk) under the
    // right key: the policy would admit its words, the component does not match them.
    let key = runwarden_evidence::read_signing_key(&keys.join("acme-msp.key")).unwrap();
    let honest: Value = serde_json::from_slice(
        &runwarden_evidence::Envelope::from_json(&std::fs::read_to_string(&release).unwrap())
            .unwrap()
            .payload()
            .unwrap(),
    )
    .unwrap();
    for (field, value, says) in [
        ("name", "restart-x", "its release names restart-x"),
        ("kind", "rules", "it does not load as a rule set"),
    ] {
        let mut lie: runwarden_evidence::Release =
            serde_json::from_value(honest["predicate"].clone()).unwrap();
        match field {
            "name" => lie.name = value.into(),
            _ => lie.kind = runwarden_evidence::ComponentKind::Rules,
        }
        let lying = d.path().join("lying.release.json");
        std::fs::write(&lying, lie.sign(&key).to_json()).unwrap();
        let mut wide = std::fs::read_to_string(&trusted).unwrap();
        wide.push_str("rules = true\n");
        let wide_file = d.path().join("wide-rules.toml");
        std::fs::write(&wide_file, wide).unwrap();
        let o = runwarden(
            &data,
            &[
                "runbook",
                "verify",
                wasm_s,
                "--trust",
                wide_file.to_str().unwrap(),
                "--release",
                lying.to_str().unwrap(),
            ],
        );
        assert_eq!(o.status.code(), Some(1), "{field}");
        assert!(stderr(&o).contains(says), "{}", stderr(&o));
    }
    // A trust policy that does not parse names itself and what is wrong.
    let bad = d.path().join("bad.toml");
    for (text, says) in [
        (
            "[[publishers]]\nkey = \"not a key\"\ncomponents = []\nmax_risk = \"low\"\n",
            "publisher key",
        ),
        (
            "[[publishers]]\nkey = \"k\"\nmax_risk = \"extreme\"\n",
            "extreme",
        ),
    ] {
        std::fs::write(&bad, text).unwrap();
        let o = runwarden(
            &data,
            &[
                "runbook",
                "verify",
                wasm_s,
                "--trust",
                bad.to_str().unwrap(),
            ],
        );
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("bad.toml") && stderr(&o).contains(says),
            "{}",
            stderr(&o)
        );
    }
}

/// The registry of `runwarden up`: a tenant publishes only what its trust policy admits,
/// once; refusals and publications are records in the log.
#[test]
fn a_tenant_publishes_only_what_its_trust_policy_admits_and_each_step_is_recorded() {
    use super::up::{DiskFull, cli, disk_full, start};
    let d = tempfile::tempdir().unwrap();
    let DiskFull {
        data,
        policy: host_policy,
        ..
    } = disk_full(d.path());
    let (keys, wasm) = signed_trivial(d.path(), &data);
    let public = keys.join("acme-msp.pub");
    let wasm_s = wasm.to_str().unwrap();
    let up = start(&data, &host_policy);

    // No trust policy yet: nothing is published.
    let o = cli(&data, &up, &["runbook", "publish", wasm_s]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("has no trust policy"), "{}", stderr(&o));
    let o = cli(&data, &up, &["trust", "show"]);
    assert!(
        !o.status.success() && stderr(&o).contains("404"),
        "{}",
        stderr(&o)
    );
    // A policy that does not trust this publisher with this name.
    let narrow = policy(d.path(), "narrow.toml", &public, "[\"restart-*\"]", "high");
    let o = cli(&data, &up, &["trust", "set", &narrow]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out(&o).contains("restart-*"), "{}", out(&o));
    let o = cli(&data, &up, &["runbook", "publish", wasm_s]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("409") && stderr(&o).contains("may not publish \"trivial\""),
        "{}",
        stderr(&o)
    );
    // Trusted: published once; again, nothing new.
    let wide = policy(d.path(), "wide.toml", &public, "[\"*\"]", "high");
    assert!(cli(&data, &up, &["trust", "set", &wide]).status.success());
    let o = cli(&data, &up, &["runbook", "publish", wasm_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out(&o).starts_with("published trivial"), "{}", out(&o));
    let o = cli(&data, &up, &["runbook", "publish", wasm_s, "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["new"], false, "{v}");
    let sha = v["sha256"].as_str().unwrap().to_string();
    // Altered bytes under the same release: refused, nothing stored.
    let tampered = d.path().join("tampered.wasm");
    let mut bytes = std::fs::read(&wasm).unwrap();
    bytes.push(0);
    std::fs::write(&tampered, &bytes).unwrap();
    let release = format!("{wasm_s}.release.json");
    let o = cli(
        &data,
        &up,
        &[
            "runbook",
            "publish",
            tampered.to_str().unwrap(),
            "--release",
            &release,
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("altered"), "{}", stderr(&o));
    let o = cli(&data, &up, &["runbook", "published", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listed: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["sha256"], sha.as_str());
    assert_eq!(listed[0]["name"], "trivial");
    // An operate token cannot publish (admin only).
    let o = cli(
        &data,
        &up,
        &[
            "token", "create", "--tenant", "local", "--scope", "operate", "--name", "ops",
        ],
    );
    let operate = out(&o).trim().to_string();
    let o = cli(
        &data,
        &up,
        &["runbook", "publish", wasm_s, "--token", &operate],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("403"), "{}", stderr(&o));
    // Every step is in the control plane's log.
    let o = cli(&data, &up, &["evidence", "list", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let records: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let statuses: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| {
            r["runbook"]
                .as_str()
                .is_some_and(|n| n.starts_with("component:"))
        })
        .map(|r| {
            (
                r["runbook"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("component:?", "refused"),
            ("component:trust-policy", "trust-set"),
            ("component:?", "refused"),
            ("component:trust-policy", "trust-set"),
            ("component:trivial", "published"),
            ("component:?", "refused"),
        ],
        "{records:?}"
    );
}

/// Sign every component of `dir` as publisher `test-msp` (keys in `root/publisher`) and
/// write `root/trust.toml` trusting it for every name at any risk: what a runbooks
/// directory needs before `up`, a server or an agent loads anything from it. Returns the
/// trust policy's path.
pub(super) fn signed_dir(root: &Path, dir: &Path) -> std::path::PathBuf {
    let keys = root.join("publisher");
    let data = root.join("publisher-data");
    keygen(&data, &keys, "test-msp");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wasm") {
            sign(&data, &path, &keys.join("test-msp.key"));
        }
    }
    std::path::PathBuf::from(policy(
        root,
        "trust.toml",
        &keys.join("test-msp.pub"),
        "[\"*\"]",
        "high",
    ))
}

#[test]
fn up_loads_only_what_its_trust_policy_admits_records_each_refusal_and_names_the_publisher() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let (keys, signed) = signed_trivial(d.path(), &data);
    let dir = d.path().join("runbooks");
    std::fs::create_dir_all(&dir).unwrap();
    // Admitted: trivial, signed by acme-msp.
    std::fs::rename(&signed, dir.join("trivial.wasm")).unwrap();
    let release = d.path().join("trivial.wasm.release.json");
    std::fs::rename(&release, dir.join("trivial.wasm.release.json")).unwrap();
    // Unsigned: no release beside it.
    std::fs::copy(component("adv-lowrisk"), dir.join("adv-lowrisk.wasm")).unwrap();
    // Altered: other bytes beside trivial's release.
    std::fs::copy(component("adv-service"), dir.join("adv-service.wasm")).unwrap();
    std::fs::copy(
        dir.join("trivial.wasm.release.json"),
        dir.join("adv-service.wasm.release.json"),
    )
    .unwrap();
    // Untrusted: signed by a publisher the policy does not list.
    keygen(&data, &keys, "stranger");
    let limits = dir.join("adv-limits.wasm");
    std::fs::copy(component("adv-limits"), &limits).unwrap();
    sign(&data, &limits, &keys.join("stranger.key"));
    let trust = policy(
        d.path(),
        "trust.toml",
        &keys.join("acme-msp.pub"),
        "[\"*\"]",
        "high",
    );
    let acme = std::fs::read_to_string(keys.join("acme-msp.pub")).unwrap();
    let acme_id = runwarden_evidence::VerifyingKey::from_text(acme.trim())
        .unwrap()
        .key_id_hex();
    let rules = d.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "rules:\n  - id: say-hello\n    match: {type: hello-needed}\n    action:\n      runbook: trivial\n      params: {}\n    cooldown: 0\n",
    )
    .unwrap();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("runwarden.toml"),
        format!(
            "rules = [\"{}\"]\nrunbooks_dir = \"{}\"\ntrust = \"{trust}\"\n",
            rules.display(),
            dir.display()
        ),
    )
    .unwrap();
    let policy_file = d.path().join("policy.toml");
    std::fs::write(&policy_file, "host_id = \"clinic-trust-01\"\n").unwrap();
    let up = super::up::start(&data, &policy_file);

    // The admitted one runs, and its record names its publisher.
    let incident = d.path().join("hello.json");
    std::fs::write(
        &incident,
        r#"{"host":"clinic-trust-01","type":"hello-needed","severity":"low"}"#,
    )
    .unwrap();
    let o = super::up::cli(
        &data,
        &up,
        &["incident", "submit", incident.to_str().unwrap(), "--json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rec: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rec["tier"], "L1", "{rec}");
    assert_eq!(rec["status"], "no-op", "{rec}");

    let statements = log_statements(&data);
    let run = statements
        .iter()
        .find(|(_, s)| s.subject[0].name == "trivial")
        .expect("the run of trivial is in the log");
    assert_eq!(run.1.predicate.publisher.as_deref(), Some(acme_id.as_str()));
    // Each refusal is a signed record of the host, naming the component and why.
    let refusal = |name: &str| {
        let (status, s) = statements
            .iter()
            .find(|(_, s)| s.subject[0].name == name)
            .unwrap_or_else(|| panic!("no record of {name} refused"));
        assert_eq!(status, "refused");
        assert_eq!(s.predicate.publisher, None);
        s.predicate.outcome["summary"].as_str().unwrap().to_string()
    };
    let why = refusal("adv-lowrisk");
    assert!(why.contains("unsigned"), "{why}");
    let why = refusal("adv-service");
    assert!(why.contains("altered"), "{why}");
    let why = refusal("adv-limits");
    assert!(why.contains("not signed by a trusted publisher"), "{why}");
    // Refused components are not in the host's catalog.
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let catalog = io.block_on(async {
        reqwest::Client::new()
            .get(format!("{}/v1/runbooks", up.url))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(catalog.contains("\"trivial\""), "{catalog}");
    for refused in ["adv-lowrisk", "adv-service", "adv-limits"] {
        assert!(!catalog.contains(refused), "{refused} loaded: {catalog}");
    }
}
