//! Two control planes on one PostgreSQL (two `runwarden server` processes): an incident
//! one of them works on is never taken by the other for stalled, whether the other sweeps
//! or starts; once the first stops working on it (killed), exactly one other takes it,
//! concludes it and records that — nothing lost, nothing decided twice.

use super::pipeline::{policy, service_down, setup};
use runwarden_control::{
    ControlConfig, Controller, GuardrailConfig, HostConfig, IncidentStatus, SlaConfig,
};
use runwarden_testkit as pg;
use std::sync::Arc;
use std::time::Duration;

/// A control plane of host clinic-demo-01 on the PostgreSQL at `url`.
pub(crate) async fn on_postgres(s: &super::pipeline::Setup, url: &str) -> Controller {
    let (link, _agent) = runwarden_bus::in_process("clinic-demo-01", 64);
    Controller::start(
        ControlConfig {
            database: url.to_string(),
            data_dir: s.root.join("data"),
            hosts: vec![HostConfig {
                tenant: "clinic-a".into(),
                policy: Arc::new(policy(&s.root)),
                labels: Default::default(),
                inventory: Default::default(),
            }],
            signer: runwarden_control::LogSigner::Control,
            guardrails: GuardrailConfig::default(),
            llm: None,
            planner: Default::default(),
            sla: SlaConfig::default(),
            dispatch: Arc::new(link),
            hand_up: false,
        },
        s.rt.clone(),
        super::pipeline::standard_runbooks(),
        vec![super::pipeline::standard_rules()],
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_control_plane_takes_an_incident_only_once_the_first_stopped_renewing_it() {
    let db = pg::Postgres::start();
    let s = setup();
    let a = on_postgres(&s, &db.url).await;
    let b = on_postgres(&s, &db.url).await;
    // A acknowledged it and works on it.
    let rec = a.accept("clinic-a", service_down()).await.unwrap();
    let lease = Duration::from_secs(2);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        a.renew_leases().await.unwrap();
        assert_eq!(
            b.conclude_stalled(lease).await.unwrap(),
            0,
            "B leaves what A renews"
        );
    }
    // A third starting now leaves it too (its lease has not lapsed).
    let c = on_postgres(&s, &db.url).await;
    let still = b.incident("clinic-a", &rec.id).await.unwrap().unwrap();
    assert_eq!(still.status, IncidentStatus::Processing);

    // A is gone (as if killed): nobody renews. Once the lease lapsed, of B and C sweeping
    // at once exactly one takes it, escalates it and records that.
    drop(a);
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let (x, y) = tokio::join!(b.conclude_stalled(lease), c.conclude_stalled(lease));
    assert_eq!(x.unwrap() + y.unwrap(), 1, "taken once");
    let done = b.incident("clinic-a", &rec.id).await.unwrap().unwrap();
    assert_eq!(done.status, IncidentStatus::Escalated, "{done:?}");
    assert_eq!(done.evidence.len(), 1, "one record of the conclusion");
    assert_eq!(b.conclude_stalled(lease).await.unwrap(), 0);
    assert_eq!(c.conclude_stalled(lease).await.unwrap(), 0);
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_enrolled_or_drained_through_one_server_is_served_alike_by_the_other() {
    let db = pg::Postgres::start();
    let s = setup();
    let a = on_postgres(&s, &db.url).await;
    let b = on_postgres(&s, &db.url).await;
    let admin = runwarden_control::Caller {
        token_id: "tok_admin".into(),
        tenant: "clinic-a".into(),
        scope: runwarden_control::Scope::Admin,
    };
    // clinic-a-02 enrolls through A, after B started.
    let key = runwarden_evidence::SigningKey::generate("clinic-a-02").unwrap();
    let t = a
        .create_enrollment_token(&admin, None, Default::default(), None)
        .await
        .unwrap();
    a.enroll(runwarden_control::Enrollment {
        token: t.token,
        host_id: "clinic-a-02".into(),
        policy: "host_id = \"clinic-a-02\"\n[grants]\nservices = [\"nginx.service\", \"php-fpm.service\", \"redis.service\"]\n".into(),
        inventory: Default::default(),
        key: key.verifying_key().to_text(),
    })
    .await
    .unwrap();
    // Drained through A too. B, which never read it, takes an incident for it at once
    // (a host it does not know is read from the store) and sends it nothing: escalated.
    a.drain(&admin, "clinic-a-02", true).await.unwrap();
    let mut inc = service_down();
    inc.host = "clinic-a-02".into();
    let r = b.submit("clinic-a", inc.clone()).await.unwrap();
    assert_eq!(r.status, IncidentStatus::Escalated, "{r:?}");
    assert!(r.reason.contains("drained"), "{}", r.reason);
    assert_eq!(
        b.host_key("clinic-a-02").await.unwrap(),
        Some(key.verifying_key())
    );
    // Still clinic-a's alone.
    let err = b.accept("clinic-b", inc.clone()).await.unwrap_err();
    assert!(
        matches!(err, runwarden_control::ControlError::NotFound(_)),
        "{err:?}"
    );
    assert_eq!(
        b.sync_hosts().await.unwrap(),
        2,
        "clinic-demo-01 and clinic-a-02"
    );
    let views = b.host_views("clinic-a").await.unwrap();
    assert!(
        views.iter().any(|h| h.id == "clinic-a-02" && h.drained),
        "{views:?}"
    );
    // Undrained through B: A follows.
    b.drain(&admin, "clinic-a-02", false).await.unwrap();
    // A dispatches nothing to it until it synced (within HOST_SYNC_SECS in a server),
    // then it does (here the job finds no agent: escalated for that, not for a drain).
    inc.service = Some("php-fpm.service".into());
    let r = a.submit("clinic-a", inc.clone()).await.unwrap();
    assert!(r.reason.contains("drained"), "not synced yet: {}", r.reason);
    a.sync_hosts().await.unwrap();
    inc.service = Some("redis.service".into());
    let r = a.submit("clinic-a", inc.clone()).await.unwrap();
    assert!(!r.reason.contains("drained"), "{r:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooldown_holds_across_two_servers_on_one_postgres() {
    let db = pg::Postgres::start();
    let s = setup();
    let a = on_postgres(&s, &db.url).await;
    let b = on_postgres(&s, &db.url).await;
    // A admits a restart of nginx on clinic-demo-01 (its agent is not there: the run
    // does not happen, but the cooldown started when it was admitted).
    let first = a.submit("clinic-a", service_down()).await.unwrap();
    assert!(
        first
            .guardrails
            .iter()
            .any(|v| v.guardrail == runwarden_control::Guardrail::Cooldown
                && v.verdict == runwarden_control::VerdictKind::Pass),
        "{first:?}"
    );
    // B has seen no run of it, yet does not start it again within the cooldown.
    let second = b.submit("clinic-a", service_down()).await.unwrap();
    assert_eq!(second.status, IncidentStatus::Suppressed, "{second:?}");
    assert!(
        second.reason.contains("another server"),
        "{}",
        second.reason
    );
    let cooldown = second
        .guardrails
        .iter()
        .filter(|v| v.guardrail == runwarden_control::Guardrail::Cooldown)
        .collect::<Vec<_>>();
    assert_eq!(cooldown.len(), 1, "{cooldown:?}");
    assert_eq!(
        cooldown[0].verdict,
        runwarden_control::VerdictKind::Suppress
    );
    // Another tenant's cooldown is its own: the same host id and runbook for clinic-b
    // would be its own row (clinic-b has no host here, so it is refused before that).
    a.shutdown().await;
    b.shutdown().await;
}
