use runwarden_proto::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// Each value serializes to exactly `wire`, parses back from it, and `as_str`, `Display`,
/// `FromStr` and `NAMES` agree.
fn pinned<T>(all: &[T], names: &[&str], wire: &[&str])
where
    T: Serialize
        + DeserializeOwned
        + Debug
        + PartialEq
        + Copy
        + std::fmt::Display
        + std::str::FromStr,
    <T as std::str::FromStr>::Err: Debug,
{
    assert_eq!(names, wire, "NAMES");
    assert_eq!(all.len(), wire.len());
    for (v, w) in all.iter().zip(wire) {
        assert_eq!(
            serde_json::to_value(v).unwrap(),
            serde_json::json!(w),
            "{v:?}"
        );
        assert_eq!(
            serde_json::from_value::<T>(serde_json::json!(w)).unwrap(),
            *v
        );
        assert_eq!(v.to_string(), *w);
        assert_eq!(w.parse::<T>().unwrap(), *v);
    }
}

#[test]
fn every_word_has_the_spelling_stored_records_use() {
    pinned(Tier::ALL, Tier::NAMES, &["L1", "L2", "L3"]);
    pinned(
        IncidentStatus::ALL,
        IncidentStatus::NAMES,
        &[
            "processing",
            "healed",
            "no-op",
            "failed",
            "escalated",
            "suppressed",
            "awaiting_approval",
            "handed-up",
        ],
    );
    pinned(
        HandedUpFor::ALL,
        HandedUpFor::NAMES,
        &["plan", "escalation", "approval"],
    );
    pinned(
        EscalationState::ALL,
        EscalationState::NAMES,
        &[
            "open",
            "acknowledged",
            "approved",
            "denied",
            "expired",
            "resolved",
        ],
    );
    pinned(
        Guardrail::ALL,
        Guardrail::NAMES,
        &[
            "rules",
            "planner",
            "repeat",
            "known_target",
            "cooldown",
            "circuit_breaker",
            "risk",
            "approval",
        ],
    );
    pinned(
        VerdictKind::ALL,
        VerdictKind::NAMES,
        &[
            "pass",
            "escalate",
            "suppress",
            "dry_run_first",
            "await_approval",
            "approved",
            "acknowledged",
            "denied",
            "resolved",
            "error",
        ],
    );
    pinned(
        RunStatus::ALL,
        RunStatus::NAMES,
        &[
            "healed",
            "no-op",
            "failed",
            "refused",
            "invalid_params",
            "timeout",
            "out_of_fuel",
            "out_of_memory",
            "trapped",
            "output_limit",
            "interrupted",
        ],
    );
    pinned(Scope::ALL, Scope::NAMES, &["read", "operate", "admin"]);
    pinned(
        Severity::ALL,
        Severity::NAMES,
        &["info", "low", "medium", "high", "critical"],
    );
    pinned(Risk::ALL, Risk::NAMES, &["low", "medium", "high"]);
}

#[test]
fn an_unknown_word_is_refused_naming_what_is_known() {
    let e = "healthy".parse::<IncidentStatus>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown incident status \"healthy\": expected one of processing, healed, no-op, failed, escalated, suppressed, awaiting_approval, handed-up"
    );
    assert!(
        serde_json::from_str::<Tier>("\"l1\"").is_err(),
        "spellings are exact"
    );
    assert!(serde_json::from_str::<EscalationState>("\"Open\"").is_err());
}

#[test]
fn words_compare_with_their_spelling_and_order_as_declared() {
    assert!(IncidentStatus::NoOp == "no-op");
    assert!("L3" == Tier::L3);
    assert!(Scope::Read < Scope::Operate && Scope::Operate < Scope::Admin);
    assert!(Severity::Info < Severity::Critical);
    assert!(EscalationState::Open.is_undecided() && !EscalationState::Expired.is_undecided());
    assert!(EscalationState::Acknowledged.breached(10, 11));
    assert!(!EscalationState::Acknowledged.breached(10, 10));
    assert!(!EscalationState::Resolved.breached(10, 11));
    assert!(RunStatus::NoOp.is_success() && !RunStatus::Timeout.is_success());
}

/// An incident record in the shape `runwarden up` stored before the vocabulary was typed
/// (the string fields of 963a521): it must still parse, and write back the same.
#[test]
fn a_record_stored_before_the_vocabulary_was_typed_still_reads_and_writes_the_same() {
    let stored = r#"{"id":"0193a3b2-7c1e-7000-8000-000000000001","tenant":"local","incident":{"tenant":"local","host":"clinic-1","type":"disk-full","severity":"high","service":"nginx","message":"95% used","labels":{"mount":"/var"}},"fingerprint":"4f2a","received_at":"2026-12-04T10:00:00.000Z","tier":"L3","status":"awaiting_approval","reason":"high risk: a human must approve","decision":{"tier":"L1","rule_id":"disk-full-clear","rule_sha256":"ab12","actions":[{"runbook":"clear-tmp","params":{"path":"/var/tmp"}}],"dry_run":false},"guardrails":[{"guardrail":"repeat","verdict":"pass","detail":"0 earlier within the window"},{"guardrail":"known_target","verdict":"pass","detail":"ok"},{"guardrail":"cooldown","verdict":"pass","detail":"ok"},{"guardrail":"circuit_breaker","verdict":"pass","detail":"ok"},{"guardrail":"risk","verdict":"dry_run_first","detail":"high"}],"runs":[{"runbook":"clear-tmp","status":"no-op","summary":"dry run","invocation_id":"0193a3b2-7c1e-7000-8000-000000000002","dry_run":true,"evidence_index":7}],"evidence":[7],"escalation":"esc_0123456789abcdef","requested_by":"tok_1"}"#;
    let rec: IncidentRecord = serde_json::from_str(stored).unwrap();
    assert_eq!(rec.tier, Tier::L3);
    assert_eq!(rec.status, IncidentStatus::AwaitingApproval);
    assert_eq!(rec.decision.as_ref().unwrap().tier, Tier::L1);
    assert_eq!(rec.guardrails[4].guardrail, Guardrail::Risk);
    assert_eq!(rec.guardrails[4].verdict, VerdictKind::DryRunFirst);
    assert!(rec.guardrails[..4].iter().all(Verdict::passed));
    assert_eq!(rec.runs[0].status, RunStatus::NoOp);
    assert_eq!(rec.incident.severity, Severity::High);
    let again: serde_json::Value = serde_json::to_value(&rec).unwrap();
    let before: serde_json::Value = serde_json::from_str(stored).unwrap();
    assert_eq!(again, before);
}

#[test]
fn a_job_and_its_report_have_a_fixed_shape_and_refuse_fields_they_do_not_know() {
    use runwarden_proto::bus::*;
    let job = RunJob {
        job: "job-1".into(),
        incident: "inc-1".into(),
        tenant: "clinic-a".into(),
        host: "srv-1".into(),
        runs: vec![PlannedRun {
            invocation: "inv-1".into(),
            runbook: "restart-service".into(),
            sha256: "ab".repeat(32),
            params: serde_json::json!({"service": "nginx"}),
        }],
        dry_run: false,
        provenance: Provenance::L1 {
            rule_id: "nginx-down".into(),
            rule_sha256: "cd".repeat(32),
        },
        verdicts: vec![Verdict::new(Guardrail::Cooldown, VerdictKind::Pass, "none")],
        issued_at_ms: 1,
        expires_at_ms: 2,
    };
    let v = serde_json::to_value(&job).unwrap();
    assert_eq!(v["provenance"]["tier"], "L1");
    assert_eq!(v["verdicts"][0]["guardrail"], "cooldown");
    assert_eq!(serde_json::from_value::<RunJob>(v.clone()).unwrap(), job);
    let mut extra = v;
    extra["run_as_root"] = serde_json::json!(true);
    let e = serde_json::from_value::<RunJob>(extra)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `run_as_root`"), "{e}");
    assert_eq!(job.provenance.tier(), Tier::L1);
    assert_eq!(
        command_subject("clinic-a", "srv-1"),
        "rw.v1.cmd.clinic-a.srv-1"
    );
    assert_eq!(
        event_subject("clinic-a", "srv-1", "run"),
        "rw.v1.evt.clinic-a.srv-1.run"
    );

    let report: RunReport = serde_json::from_str(
        r#"{"job":"job-1","incident":"inc-1","host":"srv-1","runs":[{"invocation":"inv-1","runbook":"restart-service","status":"healed","summary":"restarted","dry_run":false,"record":{"origin":"runwarden/srv-1","index":4,"leaf_hash":"00"}}]}"#,
    )
    .unwrap();
    assert_eq!(report.runs[0].status, RunStatus::Healed);
    assert_eq!(report.refused, None);
}

/// A heartbeat of an agent older than `components` still reads (nothing said about what
/// runs), a current one round-trips, and one out of bounds is not plausible.
#[test]
fn heartbeats_old_and_new() {
    use runwarden_proto::bus::{Heartbeat, RunningComponent};
    let old: Heartbeat =
        serde_json::from_str(r#"{"version":"0.1.0","forwarded":3,"log_size":7}"#).unwrap();
    assert_eq!((old.at_ms, old.components.is_none()), (0, true));
    assert!(old.is_plausible());
    let now = Heartbeat {
        version: "0.1.0".into(),
        forwarded: 3,
        log_size: Some(7),
        at_ms: 1_765_000_000_000,
        components: Some(vec![RunningComponent {
            name: "trivial".into(),
            version: "0.3.0".into(),
            sha256: "ab".repeat(32),
        }]),
    };
    let text = serde_json::to_string(&now).unwrap();
    assert_eq!(serde_json::from_str::<Heartbeat>(&text).unwrap(), now);
    assert!(now.is_plausible());
    for bad in [
        Heartbeat {
            version: "0.1.0\u{1b}[2J".into(),
            ..now.clone()
        },
        Heartbeat {
            components: Some(vec![RunningComponent {
                sha256: "not hex".into(),
                ..now.components.clone().unwrap()[0].clone()
            }]),
            ..now.clone()
        },
        Heartbeat {
            components: Some(vec![now.components.clone().unwrap()[0].clone(); 1025]),
            ..now.clone()
        },
    ] {
        assert!(!bad.is_plausible(), "{bad:?}");
    }
}
