//! YAML rule sets compiled into the rule engine component, loaded and evaluated in the
//! sandbox; the Rust example rule; what is not a rule component.

use runwarden_control::rules::{self, RunbookParams};
use runwarden_control::{Incident, Severity};
use runwarden_runtime::{Runtime, RuntimeConfig};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

fn component(name: &str) -> Vec<u8> {
    std::fs::read(runwarden_test_artifacts::component(name)).unwrap()
}

fn runtime(dir: &Path) -> Runtime {
    Runtime::new(RuntimeConfig {
        data_dir: dir.to_path_buf(),
    })
    .unwrap()
}

/// The standard runbooks' params, as `rules compile --runbooks` reads them.
fn catalog(rt: &Runtime) -> HashMap<String, RunbookParams> {
    [
        "clear-tmp",
        "rotate-logs",
        "restart-service",
        "renew-cert",
        "verify-health",
        "disk-cleanup",
        "clear-cache",
    ]
    .iter()
    .map(|n| {
        let l = rt.load(&component(n)).unwrap();
        (
            l.manifest().name.clone(),
            RunbookParams::from_schema(&l.manifest().params_schema),
        )
    })
    .collect()
}

fn standard() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules/standard.yaml");
    vec![(
        "rules/standard.yaml".into(),
        std::fs::read_to_string(path).unwrap(),
    )]
}

fn incident(json: &str) -> Incident {
    Incident::from_json(json.as_bytes()).unwrap()
}

fn eval(
    rt: &Runtime,
    set: &runwarden_runtime::RuleSet,
    i: &Incident,
) -> Option<runwarden_runtime::Decision> {
    let labels = BTreeMap::from([("role".to_string(), "web".to_string())]);
    rt.evaluate(
        set,
        &runwarden_control::rule_input(i, "inc-1", &labels, "2026-11-22T00:00:00Z"),
    )
    .unwrap()
}

#[test]
fn the_standard_rule_set_compiles_and_decides() {
    let d = tempfile::tempdir().unwrap();
    let rt = runtime(d.path());
    let program = rules::compile(&standard(), Some(&catalog(&rt))).unwrap();
    assert_eq!(program.len(), 5);
    let engine = component("rule-engine");
    let wasm = rules::embed(&engine, &program.to_bytes()).unwrap();
    // Deterministic: the same rules give the same bytes, so the same SHA-256.
    assert_eq!(wasm, rules::embed(&engine, &program.to_bytes()).unwrap());
    assert!(
        !rules::is_bare_engine(&wasm),
        "a compiled rule set cannot be compiled into again"
    );
    assert!(rules::embed(&wasm, b"{}").is_err());

    let set = rt.load_rules(&wasm).unwrap();
    let ids: Vec<&str> = set.rules().iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "disk-full-tmp",
            "disk-full-logs",
            "service-down-restart",
            "cert-expiring-renew",
            "health-check-failing"
        ]
    );
    assert_eq!(
        set.rules()[4].runbooks,
        ["restart-service", "verify-health"]
    );

    // Disk full in a tmp dir: clear-tmp with the dir from the incident, the rule's cooldown.
    let dec = eval(&rt, &set, &incident(
        r#"{"tenant":"t","host":"h","type":"disk-full","severity":"high","labels":{"dir":"/srv/app/tmp"}}"#,
    ))
    .expect("disk-full-tmp matches");
    assert_eq!(dec.rule_id, "disk-full-tmp");
    assert_eq!(dec.actions.len(), 1);
    assert_eq!(dec.actions[0].runbook, "clear-tmp");
    let params: serde_json::Value = serde_json::from_str(&dec.actions[0].params).unwrap();
    assert_eq!(
        params,
        serde_json::json!({"dir": "/srv/app/tmp", "older_than_hours": 24})
    );
    assert_eq!(dec.cooldown_secs, Some(600));
    assert!(!dec.dry_run);

    // Logs: the second rule.
    let dec = eval(&rt, &set, &incident(
        r#"{"tenant":"t","host":"h","type":"disk-full","severity":"low","labels":{"dir":"/var/log/app"}}"#,
    ))
    .unwrap();
    assert_eq!(dec.rule_id, "disk-full-logs");

    // A disk-full incident without a dir label: the template cannot be filled, no match.
    assert!(
        eval(
            &rt,
            &set,
            &incident(r#"{"tenant":"t","host":"h","type":"disk-full","severity":"high"}"#)
        )
        .is_none()
    );

    // Service down, but below the rule's minimum severity: no match; at medium: restart.
    let down = |sev: &str| {
        incident(&format!(
            r#"{{"tenant":"t","host":"h","type":"service-down","severity":"{sev}","service":"nginx.service"}}"#
        ))
    };
    assert!(eval(&rt, &set, &down("low")).is_none());
    let dec = eval(&rt, &set, &down("medium")).unwrap();
    assert_eq!(dec.actions[0].params, r#"{"unit":"nginx.service"}"#);

    // Health check: restart, then verify.
    let dec = eval(&rt, &set, &incident(
        r#"{"tenant":"t","host":"h","type":"health-check-failing","severity":"critical","service":"nginx.service","labels":{"health_url":"http://127.0.0.1:8080/health"}}"#,
    ))
    .unwrap();
    let runbooks: Vec<&str> = dec.actions.iter().map(|a| a.runbook.as_str()).collect();
    assert_eq!(runbooks, ["restart-service", "verify-health"]);
    assert_eq!(
        dec.actions[1].params,
        r#"{"url":"http://127.0.0.1:8080/health"}"#
    );

    // Unknown types match nothing.
    assert!(
        eval(
            &rt,
            &set,
            &incident(r#"{"tenant":"t","host":"h","type":"printer-jam","severity":"critical"}"#)
        )
        .is_none()
    );
    let _ = Severity::Info;
}

#[test]
fn message_regexes_host_labels_and_dry_run() {
    let d = tempfile::tempdir().unwrap();
    let rt = runtime(d.path());
    let yaml = r#"
rules:
  - id: db-disk
    match: {type: disk-full, host_labels: {role: "d*"}, message: "(?i)no space left"}
    action: {runbook: clear-tmp, params: {dir: "/db/tmp", note: "{{host_labels.role}} {{severity}}"}}
    dry_run: true
"#;
    let program = rules::compile(&[("x.yaml".into(), yaml.into())], None).unwrap();
    let set = rt
        .load_rules(&rules::embed(&component("rule-engine"), &program.to_bytes()).unwrap())
        .unwrap();
    let i = incident(
        r#"{"tenant":"t","host":"h","type":"disk-full","severity":"high","message":"write failed: No space left on device"}"#,
    );
    let db = BTreeMap::from([("role".to_string(), "db".to_string())]);
    let dec = rt
        .evaluate(
            &set,
            &runwarden_control::rule_input(&i, "1", &db, "2026-11-22T00:00:00Z"),
        )
        .unwrap()
        .unwrap();
    assert!(dec.dry_run);
    assert_eq!(
        dec.actions[0].params,
        r#"{"dir":"/db/tmp","note":"db high"}"#
    );
    // Another host role, or another message: no match.
    let web = BTreeMap::from([("role".to_string(), "web".to_string())]);
    assert!(
        rt.evaluate(&set, &runwarden_control::rule_input(&i, "1", &web, "x"))
            .unwrap()
            .is_none()
    );
    let mut other = i.clone();
    other.message = "disk at 91%".into();
    assert!(
        rt.evaluate(&set, &runwarden_control::rule_input(&other, "1", &db, "x"))
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_bare_engine_holds_no_rules_and_rust_rules_work() {
    let d = tempfile::tempdir().unwrap();
    let rt = runtime(d.path());
    let bare = rt.load_rules(&component("rule-engine")).unwrap();
    assert!(bare.rules().is_empty());
    let i = incident(
        r#"{"tenant":"t","host":"h","type":"service-down","severity":"high","service":"postgresql.service","labels":{"health_url":"http://127.0.0.1:5433/"}}"#,
    );
    assert!(eval(&rt, &bare, &i).is_none());

    let rust = rt.load_rules(&component("example-rust-rule")).unwrap();
    assert_eq!(rust.rules()[0].id, "db-down-restart");
    let db = BTreeMap::from([("role".to_string(), "db".to_string())]);
    let dec = rt
        .evaluate(&rust, &runwarden_control::rule_input(&i, "1", &db, "x"))
        .unwrap()
        .unwrap();
    let runbooks: Vec<&str> = dec.actions.iter().map(|a| a.runbook.as_str()).collect();
    assert_eq!(runbooks, ["restart-service", "verify-health"]);
    // Not on a web host.
    assert!(eval(&rt, &rust, &i).is_none());
}

#[test]
fn a_runbook_is_not_a_rule_component() {
    let d = tempfile::tempdir().unwrap();
    let rt = runtime(d.path());
    let e = rt
        .load_rules(&component("restart-service"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("not an L1 rule component"), "{e}");
}
