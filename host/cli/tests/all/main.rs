//! The `runwarden` binary as users call it: arguments, output, exit codes.

mod archive;
mod burst;
mod deploy;
mod export;
mod fleet;
mod integrity;
mod mcp;
mod offline;
mod publish;
mod report;
mod rollout;
mod rulesets;
mod scale;
use runwarden_testkit as pg;
mod tamper;
mod tour;
mod up;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn runwarden(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runwarden"))
        .args(args)
        .env("RUNWARDEN_DATA_DIR", data)
        .output()
        .expect("runwarden runs")
}

fn component(name: &str) -> String {
    runwarden_test_artifacts::component(name)
        .display()
        .to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write_policy(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("policy.toml");
    std::fs::write(&p, format!("host_id = \"cli-test\"\n{extra}")).unwrap();
    p
}

#[test]
fn version_and_help_on_every_subcommand() {
    let d = tempfile::tempdir().unwrap();
    let v = runwarden(d.path(), &["--version"]);
    assert!(v.status.success());
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        format!("runwarden {}", env!("CARGO_PKG_VERSION"))
    );
    for args in [
        vec!["--help"],
        vec!["runbook", "--help"],
        vec!["runbook", "new", "--help"],
        vec!["runbook", "build", "--help"],
        vec!["runbook", "describe", "--help"],
        vec!["runbook", "run", "--help"],
        vec!["runbook", "sign", "--help"],
        vec!["runbook", "verify", "--help"],
        vec!["publisher", "keygen", "--help"],
        vec!["keys", "generate", "--help"],
        vec!["evidence", "list", "--help"],
        vec!["evidence", "show", "--help"],
    ] {
        let o = runwarden(d.path(), &args);
        assert!(o.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("Usage:"),
            "{args:?}"
        );
    }
}

#[test]
fn describe_prints_manifest_and_sha256() {
    let d = tempfile::tempdir().unwrap();
    let o = runwarden(
        d.path(),
        &[
            "runbook",
            "describe",
            &component("restart-service"),
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["name"], "restart-service");
    assert_eq!(v["risk"], "medium");
    assert_eq!(
        v["capabilities"][0],
        serde_json::json!({"kind": "service", "scope": "{unit}"})
    );
    assert_eq!(v["params_schema"]["required"][0], "unit");
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(
        std::fs::read(component("restart-service")).unwrap(),
    ));
    assert_eq!(v["sha256"], sha);

    let o = runwarden(
        d.path(),
        &["runbook", "describe", &component("restart-service")],
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&sha) && text.contains("risk:         medium"),
        "{text}"
    );
}

#[test]
fn run_json_has_the_documented_fields_and_exit_codes_follow_status() {
    let d = tempfile::tempdir().unwrap();
    let policy = write_policy(d.path(), "");
    let o = runwarden(
        d.path(),
        &[
            "runbook",
            "run",
            &component("trivial"),
            "--policy",
            policy.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in [
        "invocation_id",
        "runbook",
        "sha256",
        "outcome",
        "trace",
        "duration_us",
        "fuel_consumed",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(v["outcome"]["status"], "no-op");
    assert_eq!(v["outcome"]["summary"], "nothing to do");
    let e = &v["trace"][0];
    for key in [
        "seq",
        "interface",
        "function",
        "args",
        "result",
        "allowed",
        "dry_run",
        "duration_us",
    ] {
        assert!(e.get(key).is_some(), "trace entry lacks {key}: {e}");
    }

    // Refused before instantiation: non-zero, and the missing grant is named.
    let o = runwarden(
        d.path(),
        &[
            "runbook",
            "run",
            &component("restart-service"),
            "--policy",
            policy.to_str().unwrap(),
            "--params",
            r#"{"unit":"nginx.service"}"#,
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("status: refused") && text.contains("service nginx.service"),
        "{text}"
    );

    // Invalid params: non-zero, and the problem named.
    let o = runwarden(
        d.path(),
        &[
            "runbook",
            "run",
            &component("restart-service"),
            "--policy",
            policy.to_str().unwrap(),
            "--params",
            r#"{"unit":7}"#,
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("invalid_params"));
}

#[test]
fn bad_input_gives_one_line_errors_and_exit_2() {
    let d = tempfile::tempdir().unwrap();
    let good = write_policy(d.path(), "");
    let bad_policy = d.path().join("bad.toml");
    std::fs::write(&bad_policy, "host_id = \"x\"\n[grants]\nprobes = true\n").unwrap();
    let not_wasm = d.path().join("x.wasm");
    std::fs::write(&not_wasm, "hello").unwrap();
    let trivial = component("trivial");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "runbook",
                "run",
                &trivial,
                "--policy",
                bad_policy.to_str().unwrap(),
            ],
            "unknown field `probes`",
        ),
        (
            vec![
                "runbook",
                "run",
                &trivial,
                "--policy",
                "/nonexistent/policy.toml",
            ],
            "cannot read",
        ),
        (
            vec![
                "runbook",
                "run",
                not_wasm.to_str().unwrap(),
                "--policy",
                good.to_str().unwrap(),
            ],
            "not a WebAssembly component",
        ),
        (
            vec![
                "runbook",
                "run",
                &trivial,
                "--policy",
                good.to_str().unwrap(),
                "--params",
                "{nope",
            ],
            "not valid JSON",
        ),
        (
            vec![
                "runbook",
                "run",
                &trivial,
                "--policy",
                good.to_str().unwrap(),
                "--params",
                "[1]",
            ],
            "must be a JSON object",
        ),
        (
            vec!["runbook", "describe", "/nonexistent.wasm"],
            "cannot read",
        ),
        (vec!["runbook", "new", "Bad_Name"], "lower-case"),
        (
            vec!["runbook", "build", d.path().to_str().unwrap()],
            "no Cargo.toml",
        ),
    ];
    for (args, expect) in cases {
        let o = runwarden(d.path(), &args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(expect),
            "{args:?}: {err:?} should mention {expect:?}"
        );
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: one line expected, got {err:?}"
        );
        assert!(!err.contains("panicked"));
    }
}

#[test]
fn new_scaffolds_a_runbook_that_builds_describes_and_runs() {
    let d = tempfile::tempdir().unwrap();
    let o = runwarden(
        d.path(),
        &[
            "runbook",
            "new",
            "check-disk",
            "--dir",
            d.path().to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let crate_dir = d.path().join("check-disk");
    assert!(crate_dir.join("src/lib.rs").is_file());

    // A target directory of its own: the build remaps this crate's directory, so its
    // compiler flags differ from the embedded guests' (sharing theirs would rebuild both).
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guests-scaffold");
    let o = Command::new(env!("CARGO_BIN_EXE_runwarden"))
        .args(["runbook", "build", crate_dir.to_str().unwrap()])
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let wasm = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(wasm.ends_with("check_disk.wasm"), "{wasm}");
    // What it was built from, beside it; no Cargo.lock yet: said, and not pinned.
    assert!(stderr(&o).contains("no Cargo.lock"), "{}", stderr(&o));
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{wasm}.build.json")).unwrap())
            .unwrap();
    assert_eq!(info["locked"], false, "{info}");
    assert_eq!(
        info["source_sha256"].as_str().map(str::len),
        Some(64),
        "{info}"
    );
    assert!(
        info["toolchain"].as_str().unwrap().starts_with("rustc "),
        "{info}"
    );

    let o = runwarden(d.path(), &["runbook", "describe", &wasm, "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["name"], "check-disk");

    let policy = write_policy(d.path(), "[grants]\nprobe = true\n");
    let o = runwarden(
        d.path(),
        &[
            "runbook",
            "run",
            &wasm,
            "--policy",
            policy.to_str().unwrap(),
            "--json",
            "--params",
            r#"{"min_free_percent": 0}"#,
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["outcome"]["status"], "no-op");
    assert_eq!(v["trace"][0]["function"], "disk-usage");

    // Without the probe grant the scaffold is refused, naming the grant.
    let policy = write_policy(d.path(), "");
    let o = runwarden(
        d.path(),
        &[
            "runbook",
            "run",
            &wasm,
            "--policy",
            policy.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("probe"));
}

#[test]
fn every_run_is_recorded_signed_and_provably_in_the_log() {
    let d = tempfile::tempdir().unwrap();
    let policy = write_policy(d.path(), "");
    let p = policy.to_str().unwrap();
    // A successful run, a refused one and an invalid-params one: all three recorded.
    let runs: [(&str, &str); 3] = [
        ("trivial", "{}"),
        ("restart-service", r#"{"unit":"nginx.service"}"#),
        ("restart-service", r#"{"unit":7}"#),
    ];
    for (i, (name, params)) in runs.iter().enumerate() {
        let o = runwarden(
            d.path(),
            &[
                "runbook",
                "run",
                &component(name),
                "--policy",
                p,
                "--params",
                params,
                "--json",
            ],
        );
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["evidence_index"], i as u64, "{v}");
    }
    let key = d.path().join("signing-keys/cli-test.key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the host key is private");

    let o = runwarden(d.path(), &["evidence", "list", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let statuses: Vec<_> = rows
        .iter()
        .map(|r| r["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, ["no-op", "refused", "invalid_params"]);
    let o = runwarden(
        d.path(),
        &["evidence", "list", "--json", "--status", "refused"],
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1);

    let o = runwarden(d.path(), &["evidence", "show", "1", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["signature"]
            .as_str()
            .unwrap()
            .starts_with("valid, signed by cli-test"),
        "{v}"
    );
    assert_eq!(v["inclusion_proof"]["verified"], true);
    assert_eq!(v["inclusion_proof"]["tree_size"], 3);
    let st = &v["statement"];
    assert_eq!(st["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(st["subject"][0]["name"], "restart-service");
    assert_eq!(st["predicate"]["provenance"]["tier"], "manual");
    assert_eq!(st["predicate"]["outcome"]["status"], "refused");
    assert_eq!(st["predicate"]["tenant"], "local");

    let o = runwarden(d.path(), &["evidence", "show", "9"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no record 9: the log has 3"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn keys_generate_writes_a_private_and_a_public_key() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("k");
    let o = runwarden(
        d.path(),
        &[
            "keys",
            "generate",
            "--out",
            out.to_str().unwrap(),
            "--name",
            "clinic-7",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let private = out.join("clinic-7.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&private).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let public = std::fs::read_to_string(out.join("clinic-7.pub")).unwrap();
    assert!(public.starts_with("clinic-7+"), "{public}");
    // Never overwrites.
    let o = runwarden(
        d.path(),
        &[
            "keys",
            "generate",
            "--out",
            out.to_str().unwrap(),
            "--name",
            "clinic-7",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("refusing to overwrite"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_evidence_log_can_live_in_postgresql() {
    let server = pg::Postgres::start();
    let d = tempfile::tempdir().unwrap();
    let policy = write_policy(d.path(), "");
    let p = policy.to_str().unwrap();
    let db = server.url.as_str();
    for (i, params) in [r#"{"unit":"nginx.service"}"#, r#"{"unit":"sshd.service"}"#]
        .iter()
        .enumerate()
    {
        let o = runwarden(
            d.path(),
            &[
                "runbook",
                "run",
                &component("restart-service"),
                "--policy",
                p,
                "--params",
                params,
                "--json",
                "--evidence-db",
                db,
            ],
        );
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["evidence_index"], i as u64, "{v} {}", stderr(&o));
    }
    // Nothing went to the default SQLite file.
    assert!(!d.path().join("evidence.db").exists());
    let o = runwarden(
        d.path(),
        &["evidence", "list", "--json", "--evidence-db", db],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 2);
    let bundle = d.path().join("pg-bundle.tar");
    let o = runwarden(
        d.path(),
        &[
            "evidence",
            "export",
            "-o",
            bundle.to_str().unwrap(),
            "--evidence-db",
            db,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let key = d.path().join("signing-keys/cli-test.pub");
    let o = runwarden(
        d.path(),
        &[
            "evidence",
            "verify",
            bundle.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.starts_with("verified 2 records") && out.contains("tree size 2"),
        "{out} {}",
        stderr(&o)
    );
}
