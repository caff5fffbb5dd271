//! Enrolled hosts are stored: after a restart the control plane serves them again, each
//! still its tenant's alone.

use crate::pipeline::{controller, incident, setup, standard_rules};
use runwarden_control::{Caller, ControlError, Enrollment, GuardrailConfig, Scope};

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
