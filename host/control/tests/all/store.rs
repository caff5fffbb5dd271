//! The control-plane store against real databases: a log shorter than the evidence its
//! incidents name is refused at start; on PostgreSQL, any text the input allows is stored
//! (U+0000 included) and a write that fails fails only the request that made it; the
//! latest runs the planners read are kept current in memory and agree with the database.

use super::pipeline::{service_down, setup, standard_rules, start};
use runwarden_control::GuardrailConfig;
use runwarden_control::store::{
    ControlStore, DeploymentRow, IncidentRow, RECENT_RUNS, RunRow, Write,
};

use runwarden_testkit as pg;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_shorter_than_its_incidents_point_to_is_refused_at_start() {
    let s = setup();
    let c = start(
        &s,
        GuardrailConfig::default(),
        vec![standard_rules()],
        None,
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();
    let r = c.submit("clinic-a", service_down()).await.unwrap();
    assert!(!r.evidence.is_empty(), "{r:?}");
    let last = *r.evidence.iter().max().unwrap();
    drop(c);
    // The evidence log is lost with its kept checkpoint; the control state survives.
    for name in ["rw.db", "rw.db-wal", "rw.db-shm", "rw.db.checkpoint"] {
        let _ = std::fs::remove_file(s.root.join(name));
    }
    let err = match start(
        &s,
        GuardrailConfig::default(),
        vec![standard_rules()],
        None,
        Default::default(),
        Default::default(),
    )
    .await
    {
        Ok(_) => panic!("started on a log that lost the records its incidents name"),
        Err(e) => e.to_string(),
    };
    for want in [
        "has 0 records".to_string(),
        format!("names evidence record {last}"),
        "restore".into(),
        "rw-control.db".into(),
    ] {
        assert!(err.contains(&want), "{err:?} does not say {want:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_runs_are_read_once_then_kept_current_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rw.db");
    let store = ControlStore::open(db.to_str().unwrap()).await.unwrap();
    let ids = |runs: &[std::sync::Arc<RunRow>]| -> Vec<String> {
        runs.iter().map(|r| r.invocation_id.clone()).collect()
    };
    for n in 0..3 {
        store.write(vec![run("a", n, "x")]).await.unwrap();
    }
    store.write(vec![run("b", 0, "other")]).await.unwrap();
    assert_eq!(
        ids(&store.recent_runs("a", 10).await.unwrap()),
        ["inv-a-2", "inv-a-1", "inv-a-0"]
    );
    // Runs committed after the first read are seen, newest first, within the limit.
    for n in 3..6 {
        store.write(vec![run("a", n, "x")]).await.unwrap();
    }
    let kept = store.recent_runs("a", 4).await.unwrap();
    assert_eq!(ids(&kept), ["inv-a-5", "inv-a-4", "inv-a-3", "inv-a-2"]);
    // What is kept is what the database holds: a request past the kept number reads it.
    let stored = store
        .recent_runs("a", RECENT_RUNS as u32 + 1)
        .await
        .unwrap();
    assert_eq!(ids(&stored)[..4], ids(&kept)[..]);
    assert_eq!(stored.len(), 6);
    // Another tenant's runs are its own.
    assert_eq!(ids(&store.recent_runs("b", 10).await.unwrap()), ["inv-b-0"]);
    // A second process on the same file reads the same.
    drop(store);
    let again = ControlStore::open(db.to_str().unwrap()).await.unwrap();
    assert_eq!(ids(&again.recent_runs("a", 4).await.unwrap()), ids(&kept));
}

fn run(tenant: &str, n: usize, message: &str) -> Write {
    Write::Run(RunRow {
        invocation_id: format!("inv-{tenant}-{n}"),
        incident_id: format!("inc-{tenant}-{n}"),
        tenant: tenant.into(),
        host: "h".into(),
        runbook: "restart-service".into(),
        status: "healed".into(),
        summary: format!("summary with {message}"),
        tier: "L1".into(),
        dry_run: false,
        incident_type: "service-down".into(),
        service: "nginx.service".into(),
        message: message.into(),
        params: "{}".into(),
        at_ms: 1_000 + n as i64,
    })
}

fn incident(tenant: &str, n: usize, message: &str) -> Write {
    Write::Incident(IncidentRow {
        id: format!("inc-{tenant}-{n}"),
        tenant: tenant.into(),
        host: "h".into(),
        fingerprint: format!("fp-{n}"),
        status: "healed".into(),
        received_at_ms: 1_000 + n as i64,
        updated_at_ms: 1_000 + n as i64,
        // Params nest an `evidence` list of their own: only the record's own list counts.
        record: serde_json::json!({
            "decision": { "params": { "evidence": [999] } },
            "message": message,
            "evidence": [n],
        })
        .to_string(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_any_text_is_stored_and_a_failing_write_fails_only_its_request() {
    let pg = pg::Postgres::start();
    let store = ControlStore::open(&pg.url).await.unwrap();
    // A write PostgreSQL refuses: a trigger stands in for whatever one row can break.
    for stmt in [
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF NEW.message = 'poison' THEN RAISE EXCEPTION 'poisoned row'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON runs FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    ] {
        let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();
        sqlx::query(stmt).execute(&pool).await.unwrap();
    }
    let texts = [
        "a NUL \0 in the middle",
        "\0",
        "private use \u{E000} and \u{E000}0 and \u{E000}\0",
        "plain",
    ];
    // Every request is queued while the writer waits on a lock, so the poisoned one shares
    // a batch with others' (queued in the middle: whatever the writer took first, the
    // batch that holds it holds another tenant's request too).
    let locker = sqlx::PgPool::connect(&pg.url).await.unwrap();
    let mut lock = locker.begin().await.unwrap();
    sqlx::query("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let mut pending = Vec::new();
    let mut poison = None;
    for (n, text) in texts.iter().enumerate() {
        let tenant = format!("tenant-{n}");
        pending.push((
            tenant.clone(),
            store
                .queue(vec![incident(&tenant, n, text), run(&tenant, n, text)])
                .await
                .unwrap(),
        ));
        if n == 1 {
            poison = Some(
                store
                    .queue(vec![
                        incident("tenant-p", 9, "poison"),
                        run("tenant-p", 9, "poison"),
                    ])
                    .await
                    .unwrap(),
            );
        }
    }
    lock.rollback().await.unwrap();
    let poison = poison.unwrap();
    for (tenant, p) in pending {
        p.wait().await.unwrap_or_else(|e| panic!("{tenant}: {e}"));
    }
    let err = poison.wait().await.unwrap_err().to_string();
    assert!(err.contains("poisoned row"), "{err}");
    for (n, text) in texts.iter().enumerate() {
        let tenant = format!("tenant-{n}");
        let runs = store.recent_runs(&tenant, 10).await.unwrap();
        assert_eq!(runs.len(), 1, "{tenant}");
        assert_eq!(runs[0].message, *text);
        assert_eq!(runs[0].summary, format!("summary with {text}"));
        let rec = store
            .get_incident(&tenant, &format!("inc-{tenant}-{n}"))
            .await
            .unwrap()
            .expect("the incident is stored");
        let rec: serde_json::Value = serde_json::from_str(&rec).unwrap();
        assert_eq!(rec["message"], *text);
    }
    // The poisoned request left nothing behind: not its incident, not its run.
    assert!(store.recent_runs("tenant-p", 10).await.unwrap().is_empty());
    assert!(
        store
            .get_incident("tenant-p", "inc-tenant-p-9")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.max_evidence_index().await.unwrap(), Some(3));
}

/// The registry's rows on either database: a trust policy replaced in place, a component
/// stored once however often it is published, a release once per tenant, listed per
/// tenant and by name, and a component read only by a tenant that published it.
async fn registry_keeps_one_copy_and_each_tenant_its_own(store: &ControlStore) {
    use runwarden_control::store::ReleaseRow;
    store
        .put_trust_policy("a", "{\"publishers\":[]}", "token t1", 1)
        .await
        .unwrap();
    store
        .put_trust_policy("a", "{\"publishers\":[1]}", "token t2", 2)
        .await
        .unwrap();
    assert_eq!(
        store.trust_policy("a").await.unwrap().as_deref(),
        Some("{\"publishers\":[1]}")
    );
    assert_eq!(store.trust_policy("b").await.unwrap(), None);
    let row = |tenant: &str, sha: &str, name: &str, at: i64| ReleaseRow {
        tenant: tenant.into(),
        sha256: sha.into(),
        kind: "runbook".into(),
        name: name.into(),
        version: "1.0.0".into(),
        risk: "low".into(),
        publisher: "acme+00000000+AAAA".into(),
        envelope: "{}".into(),
        published_at_ms: at,
        published_by: "token t".into(),
    };
    let bytes = b"\0asm component".to_vec();
    assert!(
        store
            .put_release(&bytes, &row("a", "s1", "one", 10))
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_release(&bytes, &row("a", "s1", "one", 11))
            .await
            .unwrap()
    );
    assert!(
        store
            .put_release(&bytes, &row("b", "s1", "one", 12))
            .await
            .unwrap()
    );
    assert!(
        store
            .put_release(b"other", &row("a", "s2", "two", 13))
            .await
            .unwrap()
    );
    let names = |v: Vec<ReleaseRow>| v.into_iter().map(|r| r.sha256).collect::<Vec<_>>();
    assert_eq!(
        names(store.releases("a", None).await.unwrap()),
        ["s2", "s1"]
    );
    assert_eq!(
        names(store.releases("a", Some("one")).await.unwrap()),
        ["s1"]
    );
    assert_eq!(
        names(store.releases("c", None).await.unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        store.component("a", "s1").await.unwrap(),
        Some(bytes.clone())
    );
    assert_eq!(store.component("c", "s1").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = ControlStore::open(dir.path().join("c.db").to_str().unwrap())
        .await
        .unwrap();
    registry_keeps_one_copy_and_each_tenant_its_own(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_on_postgres() {
    let pg = pg::Postgres::start();
    let store = ControlStore::open(&pg.url).await.unwrap();
    registry_keeps_one_copy_and_each_tenant_its_own(&store).await;
}

/// Two control planes on one database (two stores, as two processes open it): only one
/// drives a deployment at a time; the other takes over once the holder's claim expired.
async fn one_process_drives_a_deployment_at_a_time(a: &ControlStore, b: &ControlStore) {
    let d = DeploymentRow {
        id: "dep-1".into(),
        tenant: "t".into(),
        name: "trivial".into(),
        version: "0.2.0".into(),
        sha256: "ab".repeat(32),
        action: "deploy".into(),
        selector: "*".into(),
        canary_percent: 0,
        soak_ms: 0,
        max_failure_rate: 0.2,
        state: "rolling".into(),
        detail: String::new(),
        created_at_ms: 1,
        created_by: "tok".into(),
        updated_at_ms: 1,
    };
    a.create_deployment(&d, &[]).await.unwrap();
    assert!(
        a.claim_deployment("dep-1", "A", 1_000, 31_000)
            .await
            .unwrap()
    );
    assert!(
        !b.claim_deployment("dep-1", "B", 2_000, 32_000)
            .await
            .unwrap(),
        "A holds it"
    );
    assert!(
        a.claim_deployment("dep-1", "A", 3_000, 33_000)
            .await
            .unwrap(),
        "A renews its own claim"
    );
    assert!(
        !b.claim_deployment("dep-1", "B", 32_999, 62_999)
            .await
            .unwrap(),
        "not expired yet"
    );
    assert!(
        b.claim_deployment("dep-1", "B", 33_001, 63_001)
            .await
            .unwrap(),
        "A's claim expired: B takes over"
    );
    assert!(
        !a.claim_deployment("dep-1", "A", 34_000, 64_000)
            .await
            .unwrap()
    );
    assert!(!a.claim_deployment("no-such", "A", 1, 2).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_claims_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let a = ControlStore::open(path.to_str().unwrap()).await.unwrap();
    let b = ControlStore::open(path.to_str().unwrap()).await.unwrap();
    one_process_drives_a_deployment_at_a_time(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_claims_on_postgres() {
    let pg = pg::Postgres::start();
    let a = ControlStore::open(&pg.url).await.unwrap();
    let b = ControlStore::open(&pg.url).await.unwrap();
    one_process_drives_a_deployment_at_a_time(&a, &b).await;
}
