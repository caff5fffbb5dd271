//! Hosts joining: an admin's single-use, tenant-bound, expiring enrollment token; an agent
//! enrolling with it (once); the hosts list; drain. A host belongs to one tenant: another
//! tenant's token cannot take its id, and sees nothing of it.

use crate::{Api, HOST};
use runwarden_api::ApiConfig;
use runwarden_control::Scope;
use runwarden_evidence::SigningKey;
use serde_json::{Value, json};

/// What an agent of `host` sends, with `token`.
fn enrollment(token: &str, host: &str, key: &SigningKey) -> Value {
    json!({
        "token": token,
        "host_id": host,
        "policy": format!("host_id = \"{host}\"\n[grants]\nservices = [\"nginx.service\"]\n"),
        "inventory": {"platform": "linux", "os": "debian", "init": "systemd", "services": ["nginx.service"]},
        "key": key.verifying_key().to_text(),
    })
}

async fn enroll(api: &Api, body: &Value) -> crate::Resp {
    api.send(
        reqwest::Method::POST,
        "/v1/enroll",
        None,
        Some(body.to_string().into_bytes()),
    )
    .await
}

#[tokio::test]
async fn an_agent_enrolls_once_with_a_token_of_its_tenant_and_its_host_is_the_tenants_alone() {
    let api = Api::start(ApiConfig::default()).await;
    let admin = api.token("clinic-a", Scope::Admin).await;
    let operator = api.secret.clone();

    // Only an admin makes enrollment tokens, and only for its own tenant.
    api.post("/v1/hosts/enroll-tokens", &operator, &json!({}))
        .await
        .error(403, "forbidden");
    let msg = api
        .post(
            "/v1/hosts/enroll-tokens",
            &admin,
            &json!({"tenant": "clinic-b"}),
        )
        .await
        .error(422, "wrong_tenant");
    assert!(msg.contains("clinic-b"), "{msg}");
    for bad in [
        json!({"ttl_secs": 5}),
        json!({"labels": {"site": "a b"}}),
        json!({"labels": {"x": "y"}, "extra": 1}),
    ] {
        api.post("/v1/hosts/enroll-tokens", &admin, &bad)
            .await
            .error(400, "bad_request");
    }
    let made = api
        .post(
            "/v1/hosts/enroll-tokens",
            &admin,
            &json!({"labels": {"site": "main", "role": "db"}, "ttl_secs": 600}),
        )
        .await
        .json();
    let token = made["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("rwe_"), "{made}");
    assert_eq!(made["tenant"], "clinic-a");

    // A malformed enrollment spends nothing: the token still works afterwards.
    let key = SigningKey::generate("clinic-a-db-01").unwrap();
    let mut wrong_policy = enrollment(&token, "clinic-a-db-01", &key);
    wrong_policy["policy"] = json!("host_id = \"someone-else\"\n");
    let msg = enroll(&api, &wrong_policy).await.error(400, "bad_request");
    assert!(msg.contains("someone-else"), "{msg}");
    let mut bad_key = enrollment(&token, "clinic-a-db-01", &key);
    bad_key["key"] = json!("not a key");
    enroll(&api, &bad_key).await.error(400, "bad_request");

    let enrolled = enroll(&api, &enrollment(&token, "clinic-a-db-01", &key))
        .await
        .json();
    assert_eq!(enrolled["tenant"], "clinic-a", "{enrolled}");
    assert_eq!(enrolled["labels"], json!({"site": "main", "role": "db"}));
    assert_eq!(
        enrolled["control_key"],
        api.controller.control_public_key().to_text()
    );
    // Once: the same token again (for any host) is refused.
    let again = enroll(&api, &enrollment(&token, "clinic-a-db-02", &key)).await;
    let msg = again.error(404, "not_found");
    assert!(msg.contains("already used"), "{msg}");

    // The owner sees the host, its key and labels; another tenant sees no hosts.
    let hosts = api.get("/v1/hosts", &operator).await.json();
    let db = hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == "clinic-a-db-01")
        .unwrap_or_else(|| panic!("{hosts}"))
        .clone();
    assert_eq!(db["key_id"], key.verifying_key().key_id_hex());
    assert_eq!(db["labels"]["role"], "db");
    assert_eq!(db["drained"], false);
    assert_eq!(db["online"], false, "its agent has not been heard from");
    assert_eq!(db["last_seen"], Value::Null);
    assert_eq!(db["inventory"]["os"], "debian");
    assert_eq!(
        api.controller
            .host_key("clinic-a-db-01")
            .await
            .unwrap()
            .unwrap()
            .to_bytes(),
        key.verifying_key().to_bytes()
    );
    let b_admin = api.token("clinic-b", Scope::Admin).await;
    assert_eq!(
        api.get("/v1/hosts", &b_admin).await.json(),
        json!({"hosts": []})
    );

    // Another tenant cannot take a host id that is clinic-a's.
    let b_token = api
        .post("/v1/hosts/enroll-tokens", &b_admin, &json!({}))
        .await
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let thief = SigningKey::generate("thief").unwrap();
    for taken in ["clinic-a-db-01", HOST] {
        let msg = enroll(&api, &enrollment(&b_token, taken, &thief))
            .await
            .error(409, "conflict");
        assert!(msg.contains("belongs to one tenant"), "{msg}");
    }
    assert_eq!(
        api.controller
            .host_key("clinic-a-db-01")
            .await
            .unwrap()
            .unwrap()
            .to_bytes(),
        key.verifying_key().to_bytes(),
        "the enrolled key is unchanged"
    );

    // The new host takes incidents; with no agent connected for it, the job cannot be
    // delivered, and the incident escalates saying so.
    let r = api
        .post(
            "/v1/incidents?wait=true",
            &operator,
            &json!({"host": "clinic-a-db-01", "type": "service-down", "severity": "high", "service": "nginx.service"}),
        )
        .await
        .json();
    assert_eq!(r["status"], "escalated", "{r}");
    assert!(
        r["reason"].as_str().unwrap().contains("did not reach"),
        "{r}"
    );

    // Drained: incidents for it escalate before any job is made; undrained: back.
    let drained = api
        .post("/v1/hosts/clinic-a-db-01/drain", &operator, &json!({}))
        .await
        .json();
    assert_eq!(drained, json!({"host": "clinic-a-db-01", "drained": true}));
    let r = api
        .post(
            "/v1/incidents?wait=true",
            &operator,
            &json!({"host": "clinic-a-db-01", "type": "service-down", "severity": "high", "service": "php-fpm.service", "message": "again"}),
        )
        .await
        .json();
    assert_eq!(r["status"], "escalated", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("drained"), "{r}");
    let hosts = api.get("/v1/hosts", &operator).await.json();
    assert!(
        hosts["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["id"] == "clinic-a-db-01" && h["drained"] == true),
        "{hosts}"
    );
    api.post("/v1/hosts/clinic-a-db-01/undrain", &operator, &json!({}))
        .await
        .json();
    api.post("/v1/hosts/clinic-a-db-01/reboot", &operator, &json!({}))
        .await
        .error(404, "not_found");
    // `up`'s own host did not enroll: it cannot be drained.
    api.post(&format!("/v1/hosts/{HOST}/drain"), &operator, &json!({}))
        .await
        .error(409, "conflict");
}
