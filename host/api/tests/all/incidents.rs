//! Submitting incidents, reading what was decided and done, and the evidence of it.

use crate::Api;
use runwarden_api::ApiConfig;
use runwarden_control::Scope;
use serde_json::{Value, json};
use std::time::Duration;

const FINAL: &[&str] = &[
    "healed",
    "no-op",
    "failed",
    "escalated",
    "suppressed",
    "awaiting_approval",
];

#[tokio::test]
async fn an_incident_is_healed_by_l1_then_a_repeat_escalates_both_with_evidence() {
    let api = Api::start(ApiConfig::default()).await;
    let s = api.secret.clone();

    // First occurrence: the rule sends it to clear-tmp, every guardrail passes.
    let r = api
        .post("/v1/incidents?wait=true", &s, &api.disk_full())
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let first = r.json();
    assert!(
        ["healed", "no-op"].contains(&first["status"].as_str().unwrap()),
        "{first}"
    );
    assert_eq!(first["tier"], "L1");
    assert_eq!(first["tenant"], "clinic-a");
    assert_eq!(
        first["incident"]["tenant"], "clinic-a",
        "filled from the token"
    );
    assert_eq!(first["decision"]["rule_id"], "disk-full-tmp");
    assert_eq!(first["decision"]["actions"][0]["runbook"], "clear-tmp");
    assert_eq!(
        first["decision"]["actions"][0]["params"]["dir"],
        api.tmp.display().to_string()
    );
    let verdicts = first["guardrails"].as_array().unwrap();
    let names: Vec<&str> = verdicts
        .iter()
        .map(|v| v["guardrail"].as_str().unwrap())
        .collect();
    for g in [
        "repeat",
        "known_target",
        "cooldown",
        "circuit_breaker",
        "risk",
    ] {
        assert!(names.contains(&g), "{g} missing from {first}");
    }
    assert!(verdicts.iter().all(|v| v["verdict"] == "pass"), "{first}");
    assert_eq!(first["runs"][0]["runbook"], "clear-tmp");
    let evidence = first["evidence"].as_array().unwrap();
    assert!(!evidence.is_empty(), "{first}");
    assert_eq!(first["runs"][0]["evidence_index"], evidence[0]);

    // Its evidence: signed, the run's, provenance L1 with the rule.
    let idx = evidence[0].as_u64().unwrap();
    let r = api.get(&format!("/v1/evidence/{idx}"), &s).await;
    assert_eq!(r.status, 200);
    let rec = r.json();
    assert_eq!(rec["index"], idx);
    assert_eq!(rec["signature"], "valid");
    let predicate = &rec["statement"]["predicate"];
    assert_eq!(predicate["provenance"]["tier"], "L1");
    assert_eq!(predicate["provenance"]["rule_id"], "disk-full-tmp");
    assert_eq!(predicate["tenant"], "clinic-a");

    // The stored record is the one returned.
    let id = first["id"].as_str().unwrap();
    let r = api.get(&format!("/v1/incidents/{id}"), &s).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), first);

    // The same incident again: the repeat guardrail escalates to a human, with evidence.
    let r = api
        .post("/v1/incidents?wait=true", &s, &api.disk_full())
        .await;
    assert_eq!(r.status, 200);
    let second = r.json();
    assert_eq!(second["status"], "escalated", "{second}");
    assert_eq!(second["tier"], "L3");
    assert_eq!(second["decision"]["rule_id"], "disk-full-tmp");
    assert!(
        second["guardrails"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["guardrail"] == "repeat" && v["verdict"] == "escalate"),
        "{second}"
    );
    assert_eq!(second["runs"], json!([]), "nothing ran");
    let idx2 = second["evidence"][0]
        .as_u64()
        .expect("evidence of the escalation");
    let r = api.get(&format!("/v1/evidence/{idx2}"), &s).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["statement"]["predicate"]["tenant"], "clinic-a");

    // Listing: newest first, filter by status, limit.
    let list = api.get("/v1/incidents", &s).await.json();
    let ids: Vec<&Value> = list["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["id"])
        .collect();
    assert_eq!(ids, [&second["id"], &first["id"]]);
    let escalated = api.get("/v1/incidents?status=escalated", &s).await.json();
    assert_eq!(escalated["incidents"].as_array().unwrap().len(), 1);
    assert_eq!(escalated["incidents"][0]["id"], second["id"]);
    let one = api.get("/v1/incidents?limit=1", &s).await.json();
    assert_eq!(one["incidents"].as_array().unwrap().len(), 1);

    // A signed checkpoint covering every record.
    let r = api.get("/v1/evidence/checkpoint", &s).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let note = String::from_utf8(r.body.clone()).unwrap();
    let cp = runwarden_evidence::Checkpoint::parse(&note, &[api.controller.verifying_key()])
        .expect("the checkpoint is signed by the host key");
    assert_eq!(cp.origin, api.controller.origin());
    assert!(cp.size > idx2, "size {} does not cover {idx2}", cp.size);
}

#[tokio::test]
async fn without_wait_an_incident_is_accepted_and_polled_to_its_end() {
    let api = Api::start(ApiConfig::default()).await;
    let s = api.secret.clone();
    let r = api.post("/v1/incidents", &s, &api.disk_full()).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let accepted = r.json();
    assert_eq!(accepted["status"], "processing");
    let id = accepted["id"].as_str().unwrap();
    let location = r.header("location").unwrap().to_string();
    assert_eq!(location, format!("/v1/incidents/{id}"));

    let mut last = Value::Null;
    for _ in 0..100 {
        let r = api.get(&location, &s).await;
        assert_eq!(r.status, 200);
        last = r.json();
        if last["status"] != "processing" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        FINAL.contains(&last["status"].as_str().unwrap()),
        "still not done after 100 polls: {last}"
    );
    assert_eq!(last["decision"]["rule_id"], "disk-full-tmp");
    assert!(!last["evidence"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn tenants_see_only_their_own_incidents_and_evidence() {
    let api = Api::start(ApiConfig::default()).await;
    let a = api.secret.clone();
    let b = api.token("clinic-b", Scope::Operate).await;

    let rec = api
        .post("/v1/incidents?wait=true", &a, &api.disk_full())
        .await
        .json();
    let id = rec["id"].as_str().unwrap();
    let idx = rec["evidence"][0].as_u64().unwrap();

    // Another tenant's id answers exactly like an id that does not exist.
    let theirs = api.get(&format!("/v1/incidents/{id}"), &b).await;
    theirs.error(404, "not_found");
    let missing = api
        .get("/v1/incidents/00000000-0000-4000-8000-000000000000", &b)
        .await;
    missing.error(404, "not_found");
    api.get(&format!("/v1/evidence/{idx}"), &b)
        .await
        .error(404, "not_found");
    api.get("/v1/evidence/999999", &a)
        .await
        .error(404, "not_found");
    let list = api.get("/v1/incidents", &b).await.json();
    assert_eq!(list, json!({"incidents": []}));
    // A's view is unchanged.
    assert_eq!(
        api.get("/v1/incidents", &a).await.json()["incidents"][0]["id"],
        rec["id"]
    );

    // B cannot file an incident as A.
    let mut as_a = api.disk_full();
    as_a["tenant"] = json!("clinic-a");
    let msg = api
        .post("/v1/incidents", &b, &as_a)
        .await
        .error(422, "wrong_tenant");
    assert!(msg.contains("clinic-a"), "{msg}");
    // Naming one's own tenant is fine.
    let mut as_a = api.unplannable();
    as_a["tenant"] = json!("clinic-a");
    let r = api.post("/v1/incidents?wait=true", &a, &as_a).await;
    assert_eq!(r.status, 200);
    let escalated = r.json();
    assert_eq!(escalated["tenant"], "clinic-a");

    // Nothing fits: escalated, with an escalation only A sees.
    assert_eq!(escalated["status"], "escalated", "{escalated}");
    let esc_id = escalated["escalation"].as_str().unwrap();
    let esc = api
        .get(&format!("/v1/escalations/{esc_id}"), &a)
        .await
        .json();
    assert_eq!(esc["incident_id"], escalated["id"]);
    assert_eq!(
        (esc["state"].as_str(), esc["breached"].as_bool()),
        (Some("open"), Some(false))
    );
    api.get(&format!("/v1/escalations/{esc_id}"), &b)
        .await
        .error(404, "not_found");
    let open = api.get("/v1/escalations?state=open", &a).await.json();
    assert_eq!(open["escalations"][0]["id"], esc_id);
    assert_eq!(
        api.get("/v1/escalations", &b).await.json(),
        json!({"escalations": []})
    );
    let msg = api
        .get("/v1/escalations?state=pending", &a)
        .await
        .error(400, "bad_request");
    assert!(msg.contains("open, acknowledged"), "{msg}");

    let gauges = String::from_utf8(api.get("/metrics", &a).await.body).unwrap();
    assert!(
        gauges.contains("runwarden_escalations_open 1\n"),
        "{gauges}"
    );
    assert!(
        gauges.contains("runwarden_escalations_breached 0\n"),
        "{gauges}"
    );

    // Deciding needs scope operate, the tenant's own escalation, and a decision that
    // can be carried out: this one proposes nothing to run.
    let reader = api.token("clinic-a", Scope::Read).await;
    let note = json!({"note": "looked at it"});
    api.post(&format!("/v1/escalations/{esc_id}/approve"), &reader, &note)
        .await
        .error(403, "forbidden");
    api.post(&format!("/v1/escalations/{esc_id}/approve"), &b, &note)
        .await
        .error(404, "not_found");
    api.post(&format!("/v1/escalations/{esc_id}/escalate"), &a, &note)
        .await
        .error(404, "not_found");
    // Another token than the one that submitted it approves (see tenancy.rs).
    let a2 = api.token("clinic-a", Scope::Operate).await;
    let msg = api
        .post(&format!("/v1/escalations/{esc_id}/approve"), &a2, &note)
        .await
        .error(409, "conflict");
    assert!(msg.contains("proposes nothing to run"), "{msg}");
    let denied = api
        .post(&format!("/v1/escalations/{esc_id}/deny"), &a, &note)
        .await
        .json();
    assert_eq!(denied["escalation"]["state"], "denied", "{denied}");
    assert_eq!(denied["escalation"]["note"], "looked at it");
    assert_eq!(denied["incident"]["status"], "escalated");
    let gauges = String::from_utf8(api.get("/metrics", &a).await.body).unwrap();
    assert!(
        gauges.contains("runwarden_escalations_open 0\n"),
        "{gauges}"
    );
    let msg = api
        .post(&format!("/v1/escalations/{esc_id}/deny"), &a, &note)
        .await
        .error(409, "conflict");
    assert!(msg.contains("is denied"), "{msg}");

    // Fixed by hand: resolved, recorded, nothing run.
    let r = api.post("/v1/incidents?wait=true", &a, &as_a).await.json();
    let second = r["escalation"].as_str().unwrap().to_string();
    let resolved = api
        .post(
            &format!("/v1/escalations/{second}/resolve"),
            &a2,
            &json!({"note": "cleared by hand"}),
        )
        .await
        .json();
    assert_eq!(resolved["escalation"]["state"], "resolved", "{resolved}");
    assert!(
        resolved["incident"]["reason"]
            .as_str()
            .unwrap()
            .contains("; resolved by token"),
        "{resolved}"
    );
    assert_eq!(resolved["incident"]["runs"], json!([]));
}

#[tokio::test]
async fn shutdown_finishes_accepted_incidents_then_serve_returns() {
    let mut api = Api::start(ApiConfig::default()).await;
    let s = api.secret.clone();
    let r = api.post("/v1/incidents", &s, &api.disk_full()).await;
    assert_eq!(r.status, 202);
    let id = r.json()["id"].as_str().unwrap().to_string();

    api.stop().await.expect("serve returns Ok");

    // The incident accepted just before was carried to its end, its evidence written.
    let rec = api
        .controller
        .incident("clinic-a", &id)
        .await
        .unwrap()
        .unwrap();
    assert!(FINAL.contains(&rec.status.as_str()), "{rec:?}");
    assert!(!rec.evidence.is_empty());
    // The listener is closed, and the controller takes nothing more.
    assert!(
        reqwest::get(format!("{}/healthz", api.base)).await.is_err(),
        "still serving after shutdown"
    );
    let incident =
        runwarden_control::Incident::from_json(api.disk_full().to_string().as_bytes()).unwrap();
    assert!(matches!(
        api.controller.accept("clinic-a", incident).await,
        Err(runwarden_control::ControlError::ShuttingDown)
    ));
}
