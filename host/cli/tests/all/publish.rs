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

#[test]
fn a_signed_component_is_admitted_and_every_wrong_one_is_refused_by_name() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let keys = d.path().join("keys");
    let o = runwarden(
        &data,
        &[
            "publisher",
            "keygen",
            "--out",
            keys.to_str().unwrap(),
            "--name",
            "acme-msp",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out(&o).contains("[[publishers]]"), "{}", out(&o));
    let (private, public) = (keys.join("acme-msp.key"), keys.join("acme-msp.pub"));
    // The component, copied where its release is written beside it.
    let wasm = d.path().join("trivial.wasm");
    std::fs::copy(component("trivial"), &wasm).unwrap();
    let wasm_s = wasm.to_str().unwrap();
    let o = runwarden(
        &data,
        &[
            "runbook",
            "sign",
            wasm_s,
            "--key",
            private.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out(&o).contains("as publisher acme-msp"), "{}", out(&o));
    let release = d.path().join("trivial.wasm.release.json");
    let env: Value = serde_json::from_str(&std::fs::read_to_string(&release).unwrap()).unwrap();
    assert_eq!(env["payloadType"], "application/vnd.in-toto+json");

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
    let o = runwarden(
        &data,
        &[
            "publisher",
            "keygen",
            "--out",
            keys.to_str().unwrap(),
            "--name",
            "other",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
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
