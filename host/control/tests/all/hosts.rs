//! Enrolled hosts are stored: after a restart the control plane serves them again, each
//! still its tenant's alone.

use crate::pipeline::{controller, incident, setup, standard_rules};
use runwarden_control::{Caller, ControlError, Enrollment, GuardrailConfig, Scope};
use std::sync::Arc;

/// An admin of clinic-a.
fn admin() -> Caller {
    Caller {
        token_id: "tok_admin".into(),
        tenant: "clinic-a".into(),
        scope: Scope::Admin,
    }
}

/// Enroll `host` of clinic-a with `policy` and a new key; returns the key, named as the
/// control plane named it.
async fn enroll(
    c: &runwarden_control::Controller,
    host: &str,
    policy: &str,
) -> runwarden_evidence::SigningKey {
    let key = runwarden_evidence::SigningKey::generate(host).unwrap();
    enroll_key(c, host, policy, &key).await.unwrap()
}

/// Enroll `host` of clinic-a with `policy` and `key` (a new token each time).
async fn enroll_key(
    c: &runwarden_control::Controller,
    host: &str,
    policy: &str,
    key: &runwarden_evidence::SigningKey,
) -> Result<runwarden_evidence::SigningKey, ControlError> {
    let t = c
        .create_enrollment_token(&admin(), None, Default::default(), None)
        .await
        .unwrap();
    let enrolled = c
        .enroll(Enrollment {
            token: t.token,
            host_id: host.into(),
            policy: policy.into(),
            inventory: Default::default(),
            key: key.verifying_key().to_text(),
        })
        .await?;
    Ok(key.renamed(&enrolled.key_name).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolled_hosts_survive_a_restart_and_stay_their_tenants() {
    let s = setup();
    let admin = Caller {
        token_id: "tok_admin".into(),
        tenant: "clinic-a".into(),
        scope: Scope::Admin,
    };
    let key = runwarden_evidence::SigningKey::generate("clinic-a-02").unwrap();
    {
        let c = controller(&s, GuardrailConfig::default(), vec![standard_rules()]).await;
        let t = c
            .create_enrollment_token(
                &admin,
                None,
                [("site".to_string(), "annex".to_string())].into(),
                None,
            )
            .await
            .unwrap();
        c.enroll(Enrollment {
            token: t.token,
            host_id: "clinic-a-02".into(),
            policy: "host_id = \"clinic-a-02\"\n[grants]\nservices = [\"nginx.service\"]\n".into(),
            inventory: Default::default(),
            key: key.verifying_key().to_text(),
        })
        .await
        .unwrap();
        c.drain(&admin, "clinic-a-02", true).await.unwrap();
        c.shutdown().await;
    }
    let c = controller(&s, GuardrailConfig::default(), vec![standard_rules()]).await;
    let views = c.host_views("clinic-a").await.unwrap();
    let annex = views.iter().find(|h| h.id == "clinic-a-02").unwrap();
    assert_eq!(annex.labels["site"], "annex");
    assert!(annex.drained, "drain is remembered");
    assert_eq!(annex.key_id, key.verifying_key().key_id_hex());
    // Rules see the labels; an incident for it is the tenant's (drained: escalated).
    let r = c
        .submit(
            "clinic-a",
            incident(r#"{"host":"clinic-a-02","type":"service-down","severity":"high","service":"nginx.service"}"#),
        )
        .await
        .unwrap();
    assert_eq!(r.status, "escalated", "{r:?}");
    assert!(r.reason.contains("drained"), "{}", r.reason);
    // Another tenant has no such host.
    let mut theirs = incident(
        r#"{"host":"clinic-a-02","type":"service-down","severity":"high","service":"nginx.service"}"#,
    );
    theirs.tenant = String::new();
    assert!(matches!(
        c.submit("clinic-b", theirs).await,
        Err(ControlError::NotFound(_))
    ));
    assert!(c.host_views("clinic-b").await.unwrap().is_empty());
}

/// A record of the host whose key is `key` (named `HOST` or `HOST~N`), number `i`, signed
/// by its key.
fn record(key: &runwarden_evidence::SigningKey, i: u64) -> String {
    runwarden_evidence::Statement::new(
        "restart-service",
        &"ab".repeat(32),
        runwarden_evidence::Invocation {
            publisher: None,
            invocation_id: format!("{i:032x}"),
            tenant: "clinic-a".into(),
            host_id: key.name().split('~').next().unwrap().into(),
            key_id: key.verifying_key().key_id_hex(),
            provenance: runwarden_evidence::Provenance::Manual { operator: None },
            runbook_version: "0.1.0".into(),
            grant_digest: None,
            grant: None,
            params: serde_json::json!({}),
            trace: serde_json::json!([]),
            outcome: serde_json::json!({"status": "healed", "summary": "ok", "details": {}}),
            started_at: runwarden_evidence::rfc3339_ms(1_700_000_000_000 + i),
            ended_at: runwarden_evidence::rfc3339_ms(1_700_000_000_001 + i),
            duration_us: 1000,
            fuel_consumed: 1,
            dry_run: false,
            incident_id: None,
            guardrails: None,
        },
    )
    .sign(key)
    .unwrap()
    .to_json()
}

/// Records `from..to` of `all`, with `key`'s checkpoint at `to`.
fn segment(
    key: &runwarden_evidence::SigningKey,
    all: &[String],
    from: usize,
    to: usize,
) -> runwarden_proto::bus::LogSegment {
    let tree = runwarden_evidence::MerkleTree::new(
        all[..to]
            .iter()
            .map(|e| runwarden_evidence::leaf_hash(e.as_bytes()))
            .collect(),
    );
    let origin = format!("runwarden/{}", key.name());
    runwarden_proto::bus::LogSegment {
        checkpoint: runwarden_evidence::Checkpoint {
            origin: origin.clone(),
            size: to as u64,
            root: tree.root(),
        }
        .sign(key)
        .unwrap(),
        origin,
        first: from as u64,
        envelopes: all[from..to].to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_a_hosts_forwarded_log_is_refused_and_raised_once() {
    let s = setup();
    let c = controller(&s, GuardrailConfig::default(), vec![standard_rules()]).await;
    let key = enroll(&c, "clinic-a-03", "host_id = \"clinic-a-03\"\n").await;
    let all: Vec<String> = (0..8).map(|i| record(&key, i)).collect();
    assert_eq!(
        c.ingest_log("clinic-a-03", &segment(&key, &all, 0, 3))
            .await
            .unwrap()
            .size,
        3
    );
    // Records 3 and 4 never arrive.
    for _ in 0..2 {
        match c
            .ingest_log("clinic-a-03", &segment(&key, &all, 5, 8))
            .await
        {
            Err(ControlError::Conflict(why)) => assert!(why.contains("gap"), "{why}"),
            other => panic!("a gap must be refused, got {other:?}"),
        }
    }
    let raised: Vec<_> = c
        .incidents("clinic-a", None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.incident.kind == "evidence-gap")
        .collect();
    assert_eq!(raised.len(), 1, "raised once: {raised:?}");
    assert_eq!(raised[0].status, "escalated");
    assert_eq!(raised[0].incident.host, "clinic-a-03");
    assert!(
        raised[0].reason.contains("records 3..5 are missing"),
        "{}",
        raised[0].reason
    );
    // The rest, in order, is taken; an unknown host's log is not.
    assert_eq!(
        c.ingest_log("clinic-a-03", &segment(&key, &all, 3, 8))
            .await
            .unwrap()
            .size,
        8
    );
    assert!(matches!(
        c.ingest_log("nobody", &segment(&key, &all, 0, 3)).await,
        Err(ControlError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_enrolled_again_with_a_new_key_signs_a_new_log_and_its_old_log_stays() {
    let s = setup();
    let c = controller(&s, GuardrailConfig::default(), vec![standard_rules()]).await;
    enrolled_again(&c, &s.root.join("rw.db").display().to_string()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_enrolled_again_with_a_new_key_on_postgres() {
    let db = runwarden_testkit::Postgres::start();
    let s = setup();
    let c = crate::leases::on_postgres(&s, &db.url).await;
    enrolled_again(&c, &db.url).await;
    c.shutdown().await;
}

/// A host enrolled again with a new key (a rebuilt machine), on the database `database`:
/// the new key gets a name and a log of its own, the old log stays mirrored and listed.
async fn enrolled_again(c: &runwarden_control::Controller, database: &str) {
    // Each enrollment gets a new bus user, named here U1, U2, … in order.
    let minted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = minted.clone();
    c.set_credential_minter(Arc::new(move |_tenant: &str, host: &str| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        Ok(runwarden_control::MintedCredentials {
            creds: format!("creds of {host}"),
            user: format!("U{n}"),
        })
    }));
    let revoked_users = || async {
        let users = c.revoked_bus_users().await.unwrap();
        users.into_keys().collect::<Vec<_>>()
    };
    let host = "clinic-a-05";
    let policy = "host_id = \"clinic-a-05\"\n";
    let first = enroll(c, host, policy).await;
    assert!(
        revoked_users().await.is_empty(),
        "a first enrollment revokes nothing"
    );
    assert_eq!(first.name(), host, "a host's first key is named after it");
    let old: Vec<String> = (0..4).map(|i| record(&first, i)).collect();
    assert_eq!(
        c.ingest_log(host, &segment(&first, &old, 0, 3))
            .await
            .unwrap()
            .size,
        3
    );

    // The machine is rebuilt: a fresh data directory, a new key (sent under the host's
    // name, as an agent names a key it makes), a new token.
    let woken = c.bus_users_revoked();
    let woken = woken.notified();
    let second = enroll(c, host, policy).await;
    assert_eq!(second.name(), "clinic-a-05~2");
    // The old machine's bus user is revoked, and whoever pushes the bus account is woken.
    tokio::time::timeout(std::time::Duration::from_secs(5), woken)
        .await
        .expect("the pusher is woken");
    assert_eq!(revoked_users().await, ["U1"]);
    let view = c.host_views("clinic-a").await.unwrap();
    let view = view.iter().find(|h| h.id == host).unwrap();
    assert_eq!(view.key_id, second.verifying_key().key_id_hex());
    let new: Vec<String> = (0..2).map(|i| record(&second, 100 + i)).collect();
    assert_eq!(
        c.ingest_log(host, &segment(&second, &new, 0, 2))
            .await
            .unwrap()
            .size,
        2,
        "the new key's log is mirrored from its start, not refused as a fork of the old one"
    );
    // The old key's log stays as mirrored; more of it is refused, and says why.
    match c.ingest_log(host, &segment(&first, &old, 3, 4)).await {
        Err(ControlError::BadRequest(why)) => {
            assert!(why.contains("replaced"), "{why}")
        }
        other => panic!("a retired key's log must be refused, got {other:?}"),
    }
    let evidence = runwarden_evidence::Store::open(database).await.unwrap();
    let sizes = evidence.mirrored_sizes().await.unwrap();
    assert_eq!(sizes.get("runwarden/clinic-a-05"), Some(&3));
    assert_eq!(sizes.get("runwarden/clinic-a-05~2"), Some(&2));
    let store = runwarden_control::store::ControlStore::open(database)
        .await
        .unwrap();
    let keys: Vec<String> = store
        .tenant_host_keys("clinic-a")
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.host_id == host)
        .map(|k| k.key_name)
        .collect();
    assert_eq!(
        keys,
        ["clinic-a-05", "clinic-a-05~2"],
        "both kept, oldest first"
    );

    // The old machine's key again: it keeps its name, and is the host's key again.
    let back = enroll_key(c, host, policy, &first).await.unwrap();
    assert_eq!(back.name(), host);
    assert_eq!(
        c.ingest_log(host, &segment(&first, &old, 3, 4))
            .await
            .unwrap()
            .size,
        4
    );
    // A third key is the third name.
    assert_eq!(enroll(c, host, policy).await.name(), "clinic-a-05~3");
    // Every user but the latest is revoked; each revocation covers the second it was
    // made in.
    assert_eq!(revoked_users().await, ["U1", "U2", "U3"]);
    let now_s = runwarden_agent::now_ms() / 1000;
    for (user, at) in c.revoked_bus_users().await.unwrap() {
        assert!(
            at > 1_700_000_000 && at <= now_s + 1,
            "{user} revoked at {at}"
        );
    }

    // A key signs for one host: another host's key is refused, and so is the control
    // plane's log's name as a host id.
    let other = "host_id = \"clinic-a-06\"\n";
    match enroll_key(c, "clinic-a-06", other, &second).await {
        Err(ControlError::Conflict(why)) => assert!(why.contains("clinic-a-05"), "{why}"),
        x => panic!("another host's key must be refused, got {x:?}"),
    }
    let control = "host_id = \"runwarden-control\"\n";
    assert!(matches!(
        enroll_key(c, "runwarden-control", control, &first).await,
        Err(ControlError::BadRequest(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_host_gone_silent_gets_no_job_and_its_incident_escalates_at_once() {
    let s = setup();
    let c = controller(&s, GuardrailConfig::default(), vec![standard_rules()]).await;
    enroll(
        &c,
        "clinic-a-04",
        "host_id = \"clinic-a-04\"\n[grants]\nservices = [\"nginx.service\"]\n",
    )
    .await;
    // Its agent was last heard from two minutes ago.
    let store =
        runwarden_control::store::ControlStore::open(&s.root.join("rw.db").display().to_string())
            .await
            .unwrap();
    let two_minutes_ago = runwarden_agent::now_ms() - 120_000;
    store
        .touch_host("clinic-a-04", two_minutes_ago, Some("0.1.0"), Some(3))
        .await
        .unwrap();
    let r = c
        .submit(
            "clinic-a",
            incident(r#"{"host":"clinic-a-04","type":"service-down","severity":"high","service":"nginx.service"}"#),
        )
        .await
        .unwrap();
    assert_eq!(r.status, "escalated", "{r:?}");
    assert_eq!(r.tier, "L3");
    assert!(r.reason.contains("offline"), "{}", r.reason);
    assert!(r.runs.is_empty());
    assert!(
        !r.evidence.is_empty(),
        "the decision not to run is recorded"
    );
    let view = c.host_views("clinic-a").await.unwrap();
    let h = view.iter().find(|h| h.id == "clinic-a-04").unwrap();
    assert!(!h.online);
    assert_eq!(h.version.as_deref(), Some("0.1.0"));
    assert_eq!(h.log_records, Some(3));
}

/// The control plane of `host`'s agent (tenant clinic-a), which hands up what it cannot
/// finish at L1, in `s.root/agent-HOST`.
async fn agent_control_plane(
    s: &crate::pipeline::Setup,
    host: &str,
) -> runwarden_control::Controller {
    let dir = s.root.join(format!("agent-{host}"));
    let (link, _agent) = runwarden_bus::in_process(host, 8);
    let policy = runwarden_runtime::Policy::parse(&format!(
        "host_id = \"{host}\"\n[grants]\nservices = [\"nginx.service\"]\n"
    ))
    .unwrap();
    runwarden_control::Controller::start(
        runwarden_control::ControlConfig {
            database: dir.join("evidence.db").display().to_string(),
            data_dir: dir.clone(),
            hosts: vec![runwarden_control::HostConfig {
                tenant: "clinic-a".into(),
                policy: std::sync::Arc::new(policy),
                labels: Default::default(),
                inventory: Default::default(),
            }],
            signer: runwarden_control::LogSigner::Host(host.into()),
            guardrails: GuardrailConfig::default(),
            llm: None,
            planner: Default::default(),
            sla: Default::default(),
            dispatch: std::sync::Arc::new(link),
            hand_up: true,
        },
        s.rt.clone(),
        crate::pipeline::standard_runbooks(),
        vec![standard_rules()],
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_up_is_taken_only_from_the_host_and_tenant_it_names_and_only_once() {
    let s = setup();
    let c = controller(&s, GuardrailConfig::default(), vec![standard_rules()]).await;
    enroll(&c, "clinic-a-02", "host_id = \"clinic-a-02\"\n").await;
    // A host of another tenant.
    let b_admin = Caller {
        token_id: "tok_b".into(),
        tenant: "clinic-b".into(),
        scope: Scope::Admin,
    };
    let t = c
        .create_enrollment_token(&b_admin, None, Default::default(), None)
        .await
        .unwrap();
    c.enroll(Enrollment {
        token: t.token,
        host_id: "clinic-b-01".into(),
        policy: "host_id = \"clinic-b-01\"\n".into(),
        inventory: Default::default(),
        key: runwarden_evidence::SigningKey::generate("clinic-b-01")
            .unwrap()
            .verifying_key()
            .to_text(),
    })
    .await
    .unwrap();
    // clinic-a-02's own control plane hands up an incident no rule of it matches.
    let agent = agent_control_plane(&s, "clinic-a-02").await;
    let local = agent
        .submit(
            "clinic-a",
            incident(r#"{"host":"clinic-a-02","type":"fan-noise","severity":"low"}"#),
        )
        .await
        .unwrap();
    assert_eq!(
        local.status,
        runwarden_control::IncidentStatus::HandedUp,
        "{local:?}"
    );
    let up = agent
        .hand_ups(8)
        .await
        .unwrap()
        .pop()
        .expect("one to hand up");

    // Sent from another host's subject (another tenant's): refused, nothing made of it.
    let err = c.take_hand_up("clinic-b-01", up.clone()).await.unwrap_err();
    assert!(matches!(err, ControlError::BadRequest(_)), "{err:?}");
    // Rewritten to be clinic-b's, sent from clinic-a-02: refused.
    let mut forged = up.clone();
    forged.record.tenant = "clinic-b".into();
    let err = c.take_hand_up("clinic-a-02", forged).await.unwrap_err();
    assert!(matches!(err, ControlError::BadRequest(_)), "{err:?}");
    // Naming another host of the tenant: refused.
    let mut forged = up.clone();
    forged.record.incident.host = "clinic-demo-01".into();
    let err = c.take_hand_up("clinic-a-02", forged).await.unwrap_err();
    assert!(matches!(err, ControlError::BadRequest(_)), "{err:?}");
    // Not handed up (an agent cannot make the control plane record a heal it made up).
    let mut forged = up.clone();
    forged.record.status = runwarden_control::IncidentStatus::Healed;
    let err = c.take_hand_up("clinic-a-02", forged).await.unwrap_err();
    assert!(matches!(err, ControlError::BadRequest(_)), "{err:?}");
    // An id that is no id.
    let mut forged = up.clone();
    forged.record.id = "../../x".into();
    let err = c.take_hand_up("clinic-a-02", forged).await.unwrap_err();
    assert!(matches!(err, ControlError::BadRequest(_)), "{err:?}");
    // A host that did not enroll.
    let err = c
        .take_hand_up("clinic-zz-09", up.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, ControlError::NotFound(_)), "{err:?}");
    assert!(
        c.incident("clinic-a", &up.record.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        c.incident("clinic-b", &up.record.id)
            .await
            .unwrap()
            .is_none()
    );

    // The real one is taken, as the tenant's incident of that host, and decided here.
    let taken = c.take_hand_up("clinic-a-02", up.clone()).await.unwrap();
    assert_eq!(taken.id, up.record.id);
    assert_eq!(taken.incident.host, "clinic-a-02");
    assert_ne!(
        taken.status,
        runwarden_control::IncidentStatus::HandedUp,
        "{taken:?}"
    );
    // Sent again (the agent did not hear it was taken): the same answer, nothing new.
    let again = c.take_hand_up("clinic-a-02", up.clone()).await.unwrap();
    assert_eq!(again.id, taken.id);
    assert_eq!(again.status, taken.status);
    assert_eq!(
        c.incidents("clinic-a", None, 100)
            .await
            .unwrap()
            .iter()
            .filter(|r| r.id == taken.id)
            .count(),
        1
    );
    // Its id cannot be reused by another host to overwrite it.
    let mut other = up.clone();
    other.record.incident.host = "clinic-b-01".into();
    other.record.tenant = "clinic-b".into();
    let err = c.take_hand_up("clinic-b-01", other).await.unwrap_err();
    assert!(matches!(err, ControlError::Conflict(_)), "{err:?}");
    agent.shutdown().await;
    c.shutdown().await;
}
