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
async fn on_postgres(s: &super::pipeline::Setup, url: &str) -> Controller {
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
