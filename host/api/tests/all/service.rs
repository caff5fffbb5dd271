//! The unauthenticated service routes, and metrics.

use crate::{Api, HOST};
use reqwest::Method;
use runwarden_api::ApiConfig;
use runwarden_control::Scope;

#[tokio::test]
async fn health_openapi_and_metrics() {
    let api = Api::start(ApiConfig::default()).await;

    let r = api.send(Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"status": "ok"}));

    let r = api.send(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    assert!(doc["paths"]["/v1/incidents"]["post"].is_object());
    assert!(doc["paths"]["/v1/incidents"]["get"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(doc, runwarden_api::openapi_document());

    // Metrics need a token (scope read) and count the token's tenant's incidents by final
    // status (another tenant's counters: tenancy.rs).
    api.send(Method::GET, "/metrics", None, None)
        .await
        .error(401, "unauthorized");
    let read = api.token("clinic-a", Scope::Read).await;

    // The host and its inventory, for any reader of the tenant that owns it; not without
    // a token.
    api.send(Method::GET, "/v1/host", None, None)
        .await
        .error(401, "unauthorized");
    let host = api.get("/v1/host", &read).await.json();
    assert_eq!(host["host_id"], HOST);
    assert_eq!(host["inventory"]["platform"], std::env::consts::OS);
    assert!(host["inventory"]["services"].is_array(), "{host}");
    let before = String::from_utf8(api.get("/metrics", &read).await.body).unwrap();
    assert!(
        before.contains("# TYPE runwarden_incidents_total counter"),
        "{before}"
    );
    let rec = api
        .post("/v1/incidents?wait=true", &api.secret, &api.disk_full())
        .await
        .json();
    let r = api.get("/metrics", &read).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(r.body).unwrap();
    let line = format!(
        "runwarden_incidents_total{{status=\"{}\"}} 1",
        rec["status"].as_str().unwrap()
    );
    assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
}
