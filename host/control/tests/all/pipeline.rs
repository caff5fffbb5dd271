//! The incident pipeline end to end inside one process: real rule component, real
//! runbooks in the sandbox, real SQLite, evidence verified.

use runwarden_control::planner::PlannerConfig;
use runwarden_control::planner::llm::LlmConfig;
use runwarden_control::{
    Caller, ControlConfig, ControlError, Controller, Decision, GuardrailConfig, HighRisk,
    HostConfig, Incident, IncidentStatus, Scope, SlaConfig,
};
use runwarden_runtime::{Policy, Runtime, RuntimeConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) struct Setup {
    _dir: tempfile::TempDir,
    pub(crate) root: PathBuf,
    pub(crate) rt: Arc<Runtime>,
}

pub(crate) fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    std::fs::create_dir_all(root.join("work/tmp")).unwrap();
    let rt = Arc::new(
        Runtime::new(RuntimeConfig {
            data_dir: root.join("data"),
        })
        .unwrap(),
    );
    Setup {
        _dir: dir,
        root,
        rt,
    }
}

pub(crate) fn policy(root: &Path) -> Policy {
    let units = root.join("units");
    let u = units.display();
    Policy::parse(&format!(
        r#"host_id = "clinic-demo-01"
[grants]
services = ["nginx.service"]
probe = true
write_dirs = ["{work}"]
[limits]
timeout_ms = 10000
[services]
backend = "command"
status = ["/bin/sh", "-c", "cat {u}/{{unit}} 2>/dev/null || echo inactive"]
start = ["/bin/sh", "-c", "mkdir -p {u} && echo active > {u}/{{unit}}"]
stop = ["/bin/sh", "-c", "mkdir -p {u} && echo inactive > {u}/{{unit}}"]
restart = ["/bin/sh", "-c", "mkdir -p {u} && echo active > {u}/{{unit}}"]
reload = ["/bin/sh", "-c", "true"]
"#,
        work = root.join("work").display()
    ))
    .unwrap()
}

pub(crate) fn rules(yaml: &str) -> Vec<u8> {
    let program =
        runwarden_control::rules::compile(&[("t.yaml".into(), yaml.into())], None).unwrap();
    runwarden_control::rules::embed(runwarden_guests::rule_engine(), &program.to_bytes()).unwrap()
}

pub(crate) fn standard_rules() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules/standard.yaml");
    rules(&std::fs::read_to_string(path).unwrap())
}

pub(crate) async fn controller(
    s: &Setup,
    guardrails: GuardrailConfig,
    rule_sets: Vec<Vec<u8>>,
) -> Controller {
    controller_with(s, guardrails, rule_sets, None, Default::default()).await
}

/// A controller with an L2 model (`llm`) or the offline planner (`None`).
pub(crate) async fn controller_with(
    s: &Setup,
    guardrails: GuardrailConfig,
    rule_sets: Vec<Vec<u8>>,
    llm: Option<LlmConfig>,
    planner: PlannerConfig,
) -> Controller {
    start(s, guardrails, rule_sets, llm, planner, Default::default())
        .await
        .unwrap()
}

/// A controller with escalation settings `sla` (webhooks among them), or why it would
/// not start.
pub(crate) async fn start(
    s: &Setup,
    guardrails: GuardrailConfig,
    rule_sets: Vec<Vec<u8>>,
    llm: Option<LlmConfig>,
    planner: PlannerConfig,
    sla: SlaConfig,
) -> Result<Controller, ControlError> {
    let (link, agent) = runwarden_bus::in_process("clinic-demo-01", 64);
    let host = HostConfig {
        tenant: "clinic-a".into(),
        policy: Arc::new(policy(&s.root)),
        labels: Default::default(),
        inventory: Default::default(),
    };
    let c = Controller::start(
        ControlConfig {
            database: s.root.join("rw.db").display().to_string(),
            data_dir: s.root.join("data"),
            hosts: vec![host],
            signer: runwarden_control::LogSigner::Host("clinic-demo-01".into()),
            guardrails,
            llm,
            planner,
            sla,
            dispatch: Arc::new(link),
            hand_up: false,
        },
        s.rt.clone(),
        standard_runbooks(),
        rule_sets,
    )
    .await?;
    attach_agent(s, &c, Arc::new(policy(&s.root)), agent).await;
    Ok(c)
}

pub(crate) fn standard_runbooks() -> Vec<Vec<u8>> {
    runwarden_guests::standard_runbooks()
        .map(|(_, b)| b.to_vec())
        .collect()
}

/// `runwarden up`'s agent for `c`'s host, in this process, with the standard runbooks.
pub(crate) async fn attach_agent(
    s: &Setup,
    c: &Controller,
    policy: Arc<Policy>,
    link: runwarden_bus::AgentLink,
) {
    let (key, _) =
        runwarden_control::evidence::host_key(&s.root.join("data"), None, "clinic-demo-01")
            .unwrap();
    runwarden_agent::spawn_local(
        s.rt.clone(),
        runwarden_agent::AgentConfig {
            publishers: Default::default(),
            trust: None,
            components: None,
            tenant: "clinic-a".to_string(),
            policy,
            runbooks: Vec::new(),
            key,
            control_keys: vec![c.control_public_key()],
            log: c.evidence_log(),
            journal: s.root.join("data/agent-journal.db"),
        },
        &standard_runbooks(),
        link,
    )
    .await
    .unwrap();
}

pub(crate) fn incident(json: &str) -> Incident {
    Incident::from_json(json.as_bytes()).unwrap()
}

fn disk_full(root: &Path) -> Incident {
    incident(&format!(
        r#"{{"host":"clinic-demo-01","type":"disk-full","severity":"high","labels":{{"dir":"{}"}}}}"#,
        root.join("work/tmp").display()
    ))
}

pub(crate) fn service_down() -> Incident {
    incident(
        r#"{"host":"clinic-demo-01","type":"service-down","severity":"high","service":"nginx.service"}"#,
    )
}

fn disk_critical() -> Incident {
    incident(r#"{"host":"clinic-demo-01","type":"disk-critical","severity":"critical"}"#)
}

/// Every record the log holds verifies as a complete bundle with the host's key.
pub(crate) async fn log_verifies(c: &Controller, data_dir: &Path) -> u64 {
    let contents = runwarden_evidence::export(
        c.evidence(),
        &runwarden_evidence::Filter::default(),
        &runwarden_control::evidence::host_key(data_dir, None, c.local_host().unwrap().id())
            .unwrap()
            .0,
        c.origin(),
        vec![],
    )
    .await
    .unwrap();
    let mut bytes = Vec::new();
    contents.write(&mut bytes).unwrap();
    runwarden_evidence::verify_bundle(bytes.as_slice(), &[c.verifying_key()], None)
        .unwrap()
        .records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_heals_then_the_repeat_escalates_and_everything_is_evidence() {
    let s = setup();
    std::fs::write(s.root.join("work/tmp/old.txt"), "x").unwrap();
    let c = controller(&s, GuardrailConfig::default(), vec![standard_rules()]).await;

    let r = c.submit("clinic-a", disk_full(&s.root)).await.unwrap();
    assert_eq!(r.tier, "L1");
    assert_eq!(r.decision.as_ref().unwrap().rule_id, "disk-full-tmp");
    assert!(matches!(r.status.as_str(), "healed" | "no-op"), "{r:?}");
    assert_eq!(r.runs.len(), 1);
    assert_eq!(r.runs[0].runbook, "clear-tmp");
    let names: Vec<&str> = r.guardrails.iter().map(|v| v.guardrail.as_str()).collect();
    assert_eq!(
        names,
        [
            "repeat",
            "known_target",
            "cooldown",
            "circuit_breaker",
            "risk"
        ]
    );
    assert!(r.guardrails.iter().all(|v| v.passed()));
    assert_eq!(r.evidence, [r.runs[0].evidence_index]);
    let rec = c
        .evidence_record("clinic-a", r.evidence[0])
        .await
        .unwrap()
        .unwrap();
    let p = &rec["statement"]["predicate"];
    assert_eq!(p["provenance"]["tier"], "L1");
    assert_eq!(p["provenance"]["rule_id"], "disk-full-tmp");
    assert_eq!(p["incident_id"], r.id.as_str());
    assert_eq!(p["guardrails"][0]["guardrail"], "repeat");
    // Another tenant sees nothing of it.
    assert!(
        c.evidence_record("clinic-b", r.evidence[0])
            .await
            .unwrap()
            .is_none()
    );
    assert!(c.incident("clinic-b", &r.id).await.unwrap().is_none());

    // The same fingerprint again within 15 minutes: escalated, and that is evidence too.
    let again = c.submit("clinic-a", disk_full(&s.root)).await.unwrap();
    assert_eq!(again.status, "escalated", "{again:?}");
    assert_eq!(again.tier, "L3");
    assert!(
        again.reason.starts_with("repeated incident"),
        "{}",
        again.reason
    );
    assert!(again.runs.is_empty());
    assert_eq!(again.evidence.len(), 1);
    let rec = c
        .evidence_record("clinic-a", again.evidence[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        rec["statement"]["predicate"]["outcome"]["status"],
        "escalated"
    );
    assert_eq!(rec["statement"]["subject"][0]["name"], "clear-tmp");

    // No rule for it, and nothing in the catalog the offline planner is sure of:
    // escalated, with the planner's record (tier L2, nothing run).
    let odd = c
        .submit(
            "clinic-a",
            incident(r#"{"host":"clinic-demo-01","type":"printer-jam","severity":"low"}"#),
        )
        .await
        .unwrap();
    assert_eq!(odd.status, "escalated");
    assert!(odd.runs.is_empty());
    let d = odd.decision.as_ref().unwrap();
    assert_eq!(d.tier, "L2");
    assert!(d.actions.is_empty());
    assert_eq!(d.planner.as_ref().unwrap().provider, "offline");
    let rec = c
        .evidence_record("clinic-a", odd.evidence[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec["statement"]["predicate"]["provenance"]["tier"], "L2");
    assert_eq!(rec["statement"]["subject"][0]["name"], "l2-planner");

    // Stored, listed newest first, and the whole log verifies.
    let list = c.incidents("clinic-a", None, 10).await.unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0].id, odd.id);
    assert_eq!(c.incident("clinic-a", &r.id).await.unwrap().unwrap(), r);
    assert_eq!(log_verifies(&c, &s.root.join("data")).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooldown_survives_a_restart_unknown_targets_escalate_and_unknown_hosts_are_not_found() {
    let s = setup();
    let guard = GuardrailConfig {
        repeat_threshold: 100,
        ..GuardrailConfig::default()
    };
    {
        let c = controller(&s, guard.clone(), vec![standard_rules()]).await;
        let r = c.submit("clinic-a", service_down()).await.unwrap();
        assert_eq!(r.status, "healed", "{r:?}");
        assert_eq!(r.runs[0].runbook, "restart-service");
        c.shutdown().await;
    }
    // A new process: the cooldown per (host, runbook) is remembered.
    let c = controller(&s, guard, vec![standard_rules()]).await;
    let r = c.submit("clinic-a", service_down()).await.unwrap();
    assert_eq!(r.status, "suppressed", "{r:?}");
    let cd = r
        .guardrails
        .iter()
        .find(|v| v.guardrail == "cooldown")
        .unwrap();
    assert_eq!(cd.verdict, "suppress");
    assert_eq!(r.evidence.len(), 1, "suppressed incidents leave evidence");

    // A unit the host's policy does not grant: unknown target, nothing runs.
    let r = c
        .submit("clinic-a", incident(r#"{"host":"clinic-demo-01","type":"service-down","severity":"high","service":"sshd.service"}"#))
        .await
        .unwrap();
    assert_eq!(r.status, "escalated");
    let kt = r
        .guardrails
        .iter()
        .find(|v| v.guardrail == "known_target")
        .unwrap();
    assert!(
        kt.detail.contains("does not grant service sshd.service"),
        "{kt:?}"
    );
    // A host the tenant has not enrolled: not found, and nothing is stored about it.
    let before = c.incidents("clinic-a", None, 1000).await.unwrap().len();
    match c
        .submit("clinic-a", incident(r#"{"host":"elsewhere","type":"service-down","severity":"high","service":"nginx.service"}"#))
        .await
    {
        Err(ControlError::NotFound(why)) => assert!(why.contains("no host \"elsewhere\""), "{why}"),
        other => panic!("an unknown host must be not found, got {other:?}"),
    }
    assert_eq!(
        c.incidents("clinic-a", None, 1000).await.unwrap().len(),
        before
    );
    // A body naming another tenant is refused outright.
    let mut other = service_down();
    other.tenant = "clinic-b".into();
    assert!(c.submit("clinic-a", other).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_breaker_and_high_risk_runbooks() {
    let s = setup();
    let yaml = format!(
        r#"
rules:
  - id: any-down
    match: {{type: service-down}}
    action: {{runbook: restart-service, params: {{unit: "{{{{service}}}}"}}}}
    cooldown: 0
  - id: big-cleanup
    match: {{type: disk-critical}}
    action: {{runbook: disk-cleanup, params: {{dir: "{}", target_free_percent: 1}}}}
"#,
        s.root.join("work").display()
    );
    let guard = GuardrailConfig {
        repeat_threshold: 100,
        breaker_max_per_minute: 2,
        high_risk: HighRisk::DryRunFirst,
        ..GuardrailConfig::default()
    };
    let c = controller(&s, guard, vec![rules(&yaml)]).await;
    // disk-cleanup is high-risk: a dry run now, the real run waits for approval. (A dry
    // run does not count towards the breaker.)
    let r = c.submit("clinic-a", disk_critical()).await.unwrap();
    assert_eq!(r.status, "awaiting_approval", "{r:?}");
    assert_eq!(r.runs.len(), 1);
    assert!(r.runs[0].dry_run);
    let risk = r.guardrails.iter().find(|v| v.guardrail == "risk").unwrap();
    assert_eq!(risk.verdict, "dry_run_first");

    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(c.submit("clinic-a", service_down()).await.unwrap().status);
    }
    assert_eq!(
        statuses[..2],
        [IncidentStatus::Healed, IncidentStatus::NoOp]
    );
    assert_eq!(
        statuses[2], "escalated",
        "the third run in a minute trips the breaker"
    );
    // Another tenant can neither trip nor be tripped by it: it cannot act on clinic-a's
    // host at all (the breaker's per-tenant count: guardrails' unit tests).
    assert!(matches!(
        c.submit("clinic-b", service_down()).await,
        Err(ControlError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_approval_policy_a_high_risk_runbook_runs_nothing_and_waits() {
    let s = setup();
    let work = s.root.join("work");
    std::fs::write(work.join("big.log"), vec![b'x'; 4096]).unwrap();
    let yaml = format!(
        r#"
rules:
  - id: big-cleanup
    match: {{type: disk-critical}}
    action: {{runbook: disk-cleanup, params: {{dir: "{}", target_free_percent: 1}}}}
"#,
        work.display()
    );
    let guard = GuardrailConfig {
        high_risk: HighRisk::Approval,
        ..GuardrailConfig::default()
    };
    let c = controller(&s, guard, vec![rules(&yaml)]).await;
    let r = c.submit("clinic-a", disk_critical()).await.unwrap();
    assert_eq!(r.status, "awaiting_approval", "{r:?}");
    assert_eq!(r.tier, "L3");
    assert!(r.runs.is_empty(), "nothing runs before a human approves");
    assert!(work.join("big.log").exists(), "nothing was deleted");
    let risk = r.guardrails.iter().find(|v| v.guardrail == "risk").unwrap();
    assert_eq!(risk.verdict, "await_approval");
    assert!(risk.detail.contains("disk-cleanup"), "{risk:?}");
    // The decision is in the log: what would have run, and why it did not.
    assert_eq!(r.evidence.len(), 1);
    let record = c
        .evidence_record("clinic-a", r.evidence[0])
        .await
        .unwrap()
        .unwrap();
    let text = record.to_string();
    assert!(
        text.contains("disk-cleanup") && text.contains("awaiting_approval"),
        "{text}"
    );
    assert_eq!(c.incident("clinic-a", &r.id).await.unwrap().unwrap(), r);
    // The same incident again while the first waits: a repeat, escalated; still nothing runs.
    let again = c.submit("clinic-a", disk_critical()).await.unwrap();
    assert_eq!(again.status, "escalated", "{again:?}");
    let repeat = again
        .guardrails
        .iter()
        .find(|v| v.guardrail == "repeat")
        .unwrap();
    assert_eq!(repeat.verdict, "escalate");
    assert!(again.runs.is_empty());
    assert!(work.join("big.log").exists());

    // Both wait for a human, with an escalation each; the first proposes disk-cleanup.
    let list = c.escalations("clinic-a", None, 10).await.unwrap();
    assert_eq!(list.len(), 2);
    let esc = c
        .escalation("clinic-a", r.escalation.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((esc.state.as_str(), esc.breached), ("open", false));
    assert_eq!(esc.incident_id, r.id);
    assert_eq!(esc.severity, "critical");
    assert_eq!(esc.proposal.as_ref().unwrap()["runbook"], "disk-cleanup");
    let created = runwarden_control::parse_rfc3339_ms(&esc.created_at).unwrap();
    let deadline = runwarden_control::parse_rfc3339_ms(&esc.sla_deadline).unwrap();
    assert_eq!(deadline - created, 15 * 60 * 1000, "critical: 15 minutes");
    assert!(
        esc.reason.contains("waits for a human's approval"),
        "{}",
        esc.reason
    );
    assert!(c.escalation("clinic-b", &esc.id).await.unwrap().is_none());
    assert!(
        c.escalations("clinic-b", None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // A human approves the first: it runs now, as the approver, and only once.
    let human = Caller {
        token_id: "tok_alice".into(),
        tenant: "clinic-a".into(),
        scope: Scope::Operate,
    };
    let (e, inc) = c
        .decide(&human, &esc.id, Decision::Approve, "checked the disk")
        .await
        .unwrap();
    assert_eq!(e.state, "approved");
    assert!(
        e.decided_by.contains("tok_alice") && e.note == "checked the disk",
        "{e:?}"
    );
    assert_eq!(inc.runs.len(), 1, "{inc:?}");
    assert_eq!(inc.runs[0].runbook, "disk-cleanup");
    assert!(!inc.runs[0].dry_run);
    assert!(matches!(inc.status.as_str(), "healed" | "no-op"), "{inc:?}");
    assert!(
        inc.reason.starts_with("approved by token tok_alice"),
        "{}",
        inc.reason
    );
    let rec = c
        .evidence_record("clinic-a", inc.runs[0].evidence_index)
        .await
        .unwrap()
        .unwrap();
    let prov = &rec["statement"]["predicate"]["provenance"];
    assert_eq!(prov["tier"], "L3", "{rec}");
    assert!(
        prov["approver"].as_str().unwrap().contains("tok_alice"),
        "{rec}"
    );
    assert_eq!(c.incident("clinic-a", &r.id).await.unwrap().unwrap(), inc);
    let again_approved = c.decide(&human, &esc.id, Decision::Approve, "").await;
    assert!(
        matches!(&again_approved, Err(ControlError::Conflict(m)) if m.contains("is approved")),
        "{again_approved:?}"
    );

    // The repeat is denied: nothing runs, and the denial is evidence too.
    let esc2 = again.escalation.as_deref().unwrap();
    let (e2, inc2) = c.decide(&human, esc2, Decision::Deny, "").await.unwrap();
    assert_eq!(e2.state, "denied");
    assert!(inc2.runs.is_empty());
    assert_eq!(inc2.evidence.len(), 2, "{inc2:?}");
    let rec = c
        .evidence_record("clinic-a", inc2.evidence[1])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec["statement"]["predicate"]["provenance"]["tier"], "L3");
    assert!(matches!(
        c.decide(&human, esc2, Decision::Approve, "").await,
        Err(ControlError::Conflict(_))
    ));
    // Another tenant's escalation, and one that does not exist: not found.
    let other = Caller {
        tenant: "clinic-b".into(),
        ..human.clone()
    };
    assert!(matches!(
        c.decide(&other, &esc.id, Decision::Deny, "").await,
        Err(ControlError::NotFound(_))
    ));
    assert!(matches!(
        c.decide(&human, "esc_nope", Decision::Approve, "").await,
        Err(ControlError::NotFound(_))
    ));
    assert_eq!(log_verifies(&c, &s.root.join("data")).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_see_the_host_inventory_as_labels() {
    let s = setup();
    // The default inventory knows the platform only; its init system is `unknown`.
    let yaml = r#"
rules:
  - id: on-this-platform
    match: {type: service-down, host_labels: {platform: "linux", init: "unknown"}}
    action: {runbook: restart-service, params: {unit: "{{service}}"}}
"#;
    let c = controller(&s, GuardrailConfig::default(), vec![rules(yaml)]).await;
    let r = c.submit("clinic-a", service_down()).await.unwrap();
    assert_eq!(r.tier, "L1", "{r:?}");
    assert_eq!(r.decision.unwrap().rule_id, "on-this-platform");
    assert_eq!(c.local_host().unwrap().inventory.platform, "linux");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_left_processing_by_a_crash_is_escalated_at_the_next_start() {
    let s = setup();
    let id = {
        let c = controller(&s, GuardrailConfig::default(), vec![standard_rules()]).await;
        // Accepted (stored as processing), never completed: the process dies here.
        let rec = c.accept("clinic-a", service_down()).await.unwrap();
        assert_eq!(
            c.incident("clinic-a", &rec.id)
                .await
                .unwrap()
                .unwrap()
                .status,
            "processing"
        );
        rec.id
    };
    let c = controller(&s, GuardrailConfig::default(), vec![standard_rules()]).await;
    let r = c.incident("clinic-a", &id).await.unwrap().unwrap();
    assert_eq!(r.status, "escalated", "{r:?}");
    assert_eq!(r.tier, "L3");
    assert!(
        r.reason.contains("stopped before it finished"),
        "{}",
        r.reason
    );
    assert!(r.runs.is_empty());
    assert_eq!(r.evidence.len(), 1, "the interruption is recorded");
    assert_eq!(log_verifies(&c, &s.root.join("data")).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_systemd_host_a_service_that_is_not_installed_is_not_acted_on() {
    let s = setup();
    // systemd manages the host (the default service backend); its unit files list nginx
    // and sshd. The policy would grant ghost.service too: the inventory says it is not there.
    let policy = Policy::parse(
        "host_id = \"clinic-demo-01\"\n[grants]\nservices = [\"nginx.service\", \"ghost.service\"]\n",
    )
    .unwrap();
    let inventory = runwarden_control::Inventory {
        init: "systemd".into(),
        services: vec!["nginx.service".into(), "sshd.service".into()],
        ..Default::default()
    };
    let policy = Arc::new(policy);
    let (link, agent) = runwarden_bus::in_process("clinic-demo-01", 64);
    let c = Controller::start(
        ControlConfig {
            database: s.root.join("rw.db").display().to_string(),
            data_dir: s.root.join("data"),
            hosts: vec![HostConfig {
                tenant: "clinic-a".into(),
                policy: policy.clone(),
                labels: Default::default(),
                inventory,
            }],
            signer: runwarden_control::LogSigner::Host("clinic-demo-01".into()),
            guardrails: GuardrailConfig::default(),
            llm: None,
            planner: Default::default(),
            sla: Default::default(),
            dispatch: Arc::new(link),
            hand_up: false,
        },
        s.rt.clone(),
        standard_runbooks(),
        vec![standard_rules()],
    )
    .await
    .unwrap();
    attach_agent(&s, &c, policy, agent).await;
    let r = c
        .submit(
            "clinic-a",
            incident(
                r#"{"host":"clinic-demo-01","type":"service-down","severity":"high","service":"ghost.service"}"#,
            ),
        )
        .await
        .unwrap();
    assert_eq!(r.status, "escalated", "{r:?}");
    assert!(
        r.reason.starts_with(
            "unknown target: service ghost.service is not installed on clinic-demo-01"
        ),
        "{}",
        r.reason
    );
    assert!(r.runs.is_empty());
    let v = r
        .guardrails
        .iter()
        .find(|v| v.guardrail == "known_target")
        .unwrap();
    assert_eq!(v.verdict, "escalate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_has_no_host_here_and_the_asker_does_not_approve() {
    let s = setup();
    let c = controller(&s, GuardrailConfig::default(), vec![standard_rules()]).await;
    assert_eq!(
        (c.local_host().unwrap().tenant.as_str(), c.owns("clinic-a")),
        ("clinic-a", true)
    );
    let b = Caller {
        token_id: "tok_b".into(),
        tenant: "clinic-b".into(),
        scope: Scope::Operate,
    };
    // Not through the API either: incidents, agent requests and the catalog of the host
    // are not found for another tenant, and nothing is written to the host's log.
    let size = c.evidence().size().await.unwrap();
    for host in ["clinic-demo-01", "no-such-host"] {
        let mut i = disk_full(&s.root);
        i.host = host.into();
        match c.submit_as(&b, i).await {
            Err(ControlError::NotFound(m)) => {
                assert!(
                    m.contains(&format!("no host {host:?} for tenant clinic-b")),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        c.agent_tools("clinic-b").await,
        Err(ControlError::NotFound(_))
    ));
    let req = runwarden_control::AgentRequest {
        runbook: "clear-tmp".into(),
        params: serde_json::json!({"dir": s.root.join("work/tmp").display().to_string()}),
        reason: "not my host".into(),
        dry_run: false,
        severity: runwarden_control::Severity::High,
        client: "test".into(),
        request_sha256: "00".repeat(32),
    };
    assert!(matches!(
        c.agent_request(&b, req).await,
        Err(ControlError::NotFound(_))
    ));
    assert_eq!(c.evidence().size().await.unwrap(), size, "nothing recorded");
    assert!(!c.metrics("clinic-b").contains("runwarden_incidents_total{"));

    // The owner's asker cannot approve its own repeat's escalation; another token can.
    let asker = Caller {
        token_id: "tok_asker".into(),
        tenant: "clinic-a".into(),
        scope: Scope::Admin,
    };
    let first = c.submit_as(&asker, disk_full(&s.root)).await.unwrap();
    assert_eq!(first.requested_by.as_deref(), Some("tok_asker"));
    let repeat = c.submit_as(&asker, disk_full(&s.root)).await.unwrap();
    let esc = repeat.escalation.clone().unwrap();
    for d in [Decision::Approve, Decision::Resolve] {
        match c.decide(&asker, &esc, d, "").await {
            Err(ControlError::Conflict(m)) => assert!(m.contains("itself"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    // B cannot decide it at all.
    assert!(matches!(
        c.decide(&b, &esc, Decision::Approve, "").await,
        Err(ControlError::NotFound(_))
    ));
    let human = Caller {
        token_id: "tok_human".into(),
        ..asker.clone()
    };
    let (e, _) = c.decide(&human, &esc, Decision::Approve, "").await.unwrap();
    assert_eq!(e.state, "approved");
    assert!(c.metrics("clinic-a").contains("runwarden_incidents_total{"));
}

/// A tmpfs of `mib` MiB mounted on a new temporary directory, unmounted when dropped.
/// `None` where this process may not mount (not root, or no mount namespace rights).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { dir })
    }

    /// Fill it to the last byte; returns the filler, whose removal frees the space.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.dir.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        for size in [1 << 20, 4096, 1] {
            let chunk = vec![0u8; size];
            // Bounded: the disk is at most a few hundred MiB.
            for _ in 0..(512 << 20) / size.max(4096) {
                if f.write_all(&chunk).and_then(|()| f.flush()).is_err() {
                    break;
                }
            }
        }
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_acknowledged_before_the_disk_filled_is_concluded_once_space_returns() {
    let Some(disk) = SmallDisk::mount(96) else {
        eprintln!("skipped: mounting a tmpfs needs root (CI runs as root)");
        return;
    };
    let root = disk.dir.path().to_path_buf();
    std::fs::create_dir_all(root.join("work/tmp")).unwrap();
    let rt = Arc::new(
        Runtime::new(RuntimeConfig {
            data_dir: root.join("data"),
        })
        .unwrap(),
    );
    let s = Setup {
        _dir: tempfile::tempdir().unwrap(),
        root: root.clone(),
        rt,
    };
    let c = controller(&s, GuardrailConfig::default(), vec![standard_rules()]).await;
    // Acknowledged (stored as processing) while there was space …
    let rec = c.accept("clinic-a", service_down()).await.unwrap();
    let filler = disk.fill();
    // … then handled once the disk is full: it cannot be recorded, so it fails as such.
    let err = c.complete(rec.clone()).await.unwrap_err();
    assert!(err.is_disk_full(), "{err}");
    let err = c.accept("clinic-a", service_down()).await.unwrap_err();
    assert!(err.is_disk_full(), "{err}");
    assert!(
        c.conclude_stalled(std::time::Duration::ZERO)
            .await
            .is_err_and(|e| e.is_disk_full()),
        "nothing can be concluded while the disk is full"
    );
    // Space returns: the acknowledged incident is concluded and recorded, without a restart.
    std::fs::remove_file(filler).unwrap();
    assert_eq!(
        c.conclude_stalled(std::time::Duration::ZERO).await.unwrap(),
        1
    );
    let r = c.incident("clinic-a", &rec.id).await.unwrap().unwrap();
    assert_eq!(r.status, "escalated", "{r:?}");
    assert!(r.reason.contains("a write failed"), "{}", r.reason);
    assert_eq!(r.evidence.len(), 1, "the conclusion is recorded");
    assert_eq!(
        c.conclude_stalled(std::time::Duration::ZERO).await.unwrap(),
        0,
        "once"
    );
    // An incident being worked on is never taken for a stalled one.
    let busy = c.accept("clinic-a", disk_full(&root)).await.unwrap();
    assert_eq!(
        c.conclude_stalled(std::time::Duration::ZERO).await.unwrap(),
        0
    );
    let done = c.complete(busy).await.unwrap();
    assert_ne!(done.status, "processing");
    assert!(log_verifies(&c, &root.join("data")).await >= 2);
    c.shutdown().await;
}
