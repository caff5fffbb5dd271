//! The flywheel: repeated good L2 decisions become an L1 rule — proposed, replayed
//! against the stored incidents, deployed only when confirmed, recorded, and loaded
//! again at the next start.

use super::pipeline::{incident, log_verifies, setup};
use super::planner::{FakeModel, web_down, with_model};
use runwarden_control::{Caller, ControlError, Scope};
use serde_json::json;

fn admin() -> Caller {
    Caller {
        token_id: "tok_admin".into(),
        tenant: "clinic-a".into(),
        scope: Scope::Admin,
    }
}

fn choose(model: &FakeModel, runbook: &str, params: serde_json::Value) {
    model.tool_call(
        "select_runbook",
        json!({"runbook": runbook, "params": params, "confidence": 0.9,
               "rationale": format!("{runbook} fixes this")}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_good_l2_resolutions_become_an_l1_rule_after_replay_and_confirmation() {
    let s = setup();
    let model = FakeModel::default();
    for _ in 0..3 {
        choose(&model, "restart-service", json!({"unit": "nginx.service"}));
    }
    let tmp = s.root.join("work/tmp").display().to_string();
    choose(
        &model,
        "clear-tmp",
        json!({"dir": tmp, "older_than_hours": 24}),
    );
    let c = with_model(&s, &model).await;
    for i in 0..3 {
        let r = c
            .submit("clinic-a", web_down(&format!("upstream 502, #{i}")))
            .await
            .unwrap();
        assert!(matches!(r.status.as_str(), "healed" | "no-op"), "{r:?}");
        assert_eq!(r.tier, "L2");
        if i == 1 {
            let early = c.flywheel_candidates("clinic-a").await.unwrap();
            assert_eq!(early[0].state, "collecting", "{early:?}");
            assert!(early[0].why.contains("2 of 3"), "{}", early[0].why);
        }
    }
    let r = c
        .submit(
            "clinic-a",
            incident(
                r#"{"host":"clinic-demo-01","type":"tmp-filling","severity":"low","message":"tmp grows"}"#,
            ),
        )
        .await
        .unwrap();
    assert_eq!(r.tier, "L2", "{r:?}");

    let cands = c.flywheel_candidates("clinic-a").await.unwrap();
    let fw = cands[0].clone();
    assert_eq!(
        (
            fw.state.as_str(),
            fw.incident_type.as_str(),
            fw.service.as_str(),
            fw.runbook.as_str()
        ),
        ("candidate", "http-502", "nginx.service", "restart-service"),
        "{cands:?}"
    );
    assert_eq!((fw.successes, fw.failures), (3, 0));
    assert_eq!(fw.params, Some(json!({"unit": "nginx.service"})));
    assert_eq!(fw.history.len(), 3);
    assert!(fw.id.starts_with("fw-"));
    let other = cands
        .iter()
        .find(|c| c.incident_type == "tmp-filling")
        .unwrap();
    assert_eq!(other.state, "collecting");
    // Another tenant has no host here, so no candidates either.
    assert!(matches!(
        c.flywheel_candidates("clinic-b").await,
        Err(ControlError::NotFound(_))
    ));

    // Proposed: the rule, compiled, replayed; nothing deployed, nothing written.
    let p = c.flywheel_promote(&admin(), &fw.id, None).await.unwrap();
    assert!(!p.deployed && p.path.is_none() && p.evidence_index.is_none());
    assert!(p.yaml.contains("type: http-502"), "{}", p.yaml);
    assert!(p.yaml.contains("runbook: restart-service"), "{}", p.yaml);
    assert_eq!(p.rule_sha256.len(), 64);
    assert_eq!(
        (
            p.replay.incidents,
            p.replay.matched,
            p.replay.agreed,
            p.replay.differed
        ),
        (4, 3, 3, 0),
        "{:?}",
        p.replay
    );
    assert_eq!(p.replay.matches[0].would_run[0].runbook, "restart-service");
    assert_eq!(
        p.replay.matches[0].would_run[0].params,
        json!({"unit": "nginx.service"})
    );
    let rules_dir = s.root.join("data/rules");
    assert!(!rules_dir.join(format!("{}.yaml", fw.id)).exists());
    assert!(!c.rules().iter().any(|r| r.id == fw.id));

    // Confirmed: written, deployed, recorded with who promoted it.
    // Confirming something else than what was reviewed changes nothing.
    match c.flywheel_promote(&admin(), &fw.id, Some("0123abcd")).await {
        Err(ControlError::Conflict(m)) => assert!(m.contains("review it again"), "{m}"),
        other => panic!("confirmed an unreviewed rule: {other:?}"),
    }
    assert!(!c.rules().iter().any(|r| r.id == fw.id));
    let done = c
        .flywheel_promote(&admin(), &fw.id, Some(&p.rule_sha256))
        .await
        .unwrap();
    assert!(done.deployed);
    let written = std::fs::read_to_string(done.path.as_ref().unwrap()).unwrap();
    assert_eq!(written, done.yaml);
    let ev = c
        .evidence_record("clinic-a", done.evidence_index.unwrap())
        .await
        .unwrap()
        .unwrap()
        .to_string();
    for needle in [
        format!("rule:{}", fw.id),
        "promoted".to_string(),
        "token tok_admin".to_string(),
        done.rule_sha256.clone(),
    ] {
        assert!(ev.contains(&needle), "{needle} not in {ev}");
    }
    match c
        .flywheel_promote(&admin(), &fw.id, Some(&p.rule_sha256))
        .await
    {
        Err(ControlError::Conflict(m)) => assert!(m.contains("promoted"), "{m}"),
        other => panic!("promoted twice: {other:?}"),
    }

    // The next http-502 is L1, by the new rule: the model is not asked.
    let asked = model.seen.lock().unwrap().len();
    let r = c
        .submit("clinic-a", web_down("upstream 502 again"))
        .await
        .unwrap();
    assert_eq!(r.tier, "L1", "{r:?}");
    assert_eq!(r.decision.as_ref().unwrap().rule_id, fw.id);
    assert_eq!(model.seen.lock().unwrap().len(), asked);
    // It decides clinic-a's incidents only (another tenant cannot even submit one for
    // clinic-a's host).
    assert!(matches!(
        c.submit("clinic-b", web_down("upstream 502 at clinic b"))
            .await,
        Err(ControlError::NotFound(_))
    ));
    assert!(c.rules_for(Some("clinic-a")).iter().any(|r| r.id == fw.id));
    assert!(!c.rules_for(Some("clinic-b")).iter().any(|r| r.id == fw.id));
    assert!(
        s.root
            .join(format!("data/rules/clinic-a/{}.yaml", fw.id))
            .exists()
    );
    let now = c.flywheel_candidates("clinic-a").await.unwrap();
    assert_eq!(
        now.iter().find(|x| x.id == fw.id).unwrap().state,
        "promoted"
    );
    c.shutdown().await;

    // It is loaded again at the next start.
    let c = with_model(&s, &FakeModel::default()).await;
    assert!(c.rules_for(Some("clinic-a")).iter().any(|r| r.id == fw.id));
    assert!(!c.rules_for(Some("clinic-b")).iter().any(|r| r.id == fw.id));
    assert!(log_verifies(&c, &s.root.join("data")).await >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_and_second_opinions_disqualify_and_differing_params_become_placeholders() {
    let s = setup();
    let model = FakeModel::default();
    let work = s.root.join("work");
    for d in ["a", "b", "c"] {
        std::fs::create_dir_all(work.join(d)).unwrap();
    }
    let dir = |d: &str| work.join(d).display().to_string();
    // cache-full: three hosts' directories, each the incident's `dir` label.
    for d in ["a", "b", "c"] {
        choose(
            &model,
            "clear-tmp",
            json!({"dir": dir(d), "older_than_hours": 24}),
        );
    }
    // tmp-filling: two good runs, then one that fails (no such directory).
    choose(
        &model,
        "clear-tmp",
        json!({"dir": dir("a"), "older_than_hours": 1}),
    );
    choose(
        &model,
        "clear-tmp",
        json!({"dir": dir("a"), "older_than_hours": 1}),
    );
    choose(
        &model,
        "clear-tmp",
        json!({"dir": dir("missing"), "older_than_hours": 1}),
    );
    // logs-growing: two runbooks for one signature.
    choose(
        &model,
        "clear-tmp",
        json!({"dir": dir("b"), "older_than_hours": 1}),
    );
    choose(
        &model,
        "rotate-logs",
        json!({"dir": dir("b"), "pattern": "*.log"}),
    );
    choose(
        &model,
        "clear-tmp",
        json!({"dir": dir("b"), "older_than_hours": 1}),
    );
    let c = with_model(&s, &model).await;
    let submit = |kind: &str, labels: serde_json::Value| {
        incident(
            &json!({"host": "clinic-demo-01", "type": kind, "severity": "low",
                    "message": "disk grows", "labels": labels})
            .to_string(),
        )
    };
    for d in ["a", "b", "c"] {
        let r = c
            .submit("clinic-a", submit("cache-full", json!({"dir": dir(d)})))
            .await
            .unwrap();
        assert_eq!(r.tier, "L2", "{r:?}");
    }
    let mut statuses = Vec::new();
    for kind in ["tmp-filling"; 3].into_iter().chain(["logs-growing"; 3]) {
        let r = c.submit("clinic-a", submit(kind, json!({}))).await.unwrap();
        statuses.push(r.status);
    }
    assert_eq!(statuses[2], "failed", "{statuses:?}");

    let cands = c.flywheel_candidates("clinic-a").await.unwrap();
    let by = |k: &str| cands.iter().find(|c| c.incident_type == k).unwrap().clone();
    let cache = by("cache-full");
    assert_eq!(cache.state, "candidate", "{cache:?}");
    assert_eq!(
        cache.params,
        Some(json!({"dir": "{{labels.dir}}", "older_than_hours": 24}))
    );
    let tmp = by("tmp-filling");
    assert_eq!((tmp.state.as_str(), tmp.failures), ("disqualified", 1));
    assert!(tmp.why.contains("failed"), "{}", tmp.why);
    let logs = by("logs-growing");
    assert_eq!(logs.state, "disqualified");
    assert!(logs.why.contains("clear-tmp, rotate-logs"), "{}", logs.why);
    assert_eq!(cands[0].id, cache.id, "candidates come first");

    // The placeholder rule compiles and replays: it matches the three, with each one's dir.
    let p = c.flywheel_promote(&admin(), &cache.id, None).await.unwrap();
    assert_eq!(
        (p.replay.matched, p.replay.agreed),
        (3, 3),
        "{:?}",
        p.replay
    );
    let dirs: Vec<_> = p
        .replay
        .matches
        .iter()
        .map(|m| m.would_run[0].params["dir"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(dirs, [dir("c"), dir("b"), dir("a")], "newest first");

    // Refusals name what is wrong.
    match c.flywheel_promote(&admin(), &tmp.id, Some("x")).await {
        Err(ControlError::Conflict(m)) => assert!(m.contains("disqualified"), "{m}"),
        other => panic!("{other:?}"),
    }
    match c.flywheel_promote(&admin(), "fw-nope", None).await {
        Err(ControlError::NotFound(m)) => assert!(m.contains("flywheel candidates"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Another tenant cannot promote this tenant's candidate.
    let other = Caller {
        tenant: "clinic-b".into(),
        ..admin()
    };
    assert!(matches!(
        c.flywheel_promote(&other, &cache.id, Some("x")).await,
        Err(ControlError::NotFound(_))
    ));
}
