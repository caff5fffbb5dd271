//! Authentication, scopes, rate limits, and the error body of every rejection.

use crate::Api;
use reqwest::Method;
use runwarden_api::ApiConfig;
use runwarden_control::Scope;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn requests_without_a_live_token_are_401_with_a_challenge() {
    let api = Api::start(ApiConfig::default()).await;
    for path in [
        "/v1/incidents",
        "/v1/runbooks",
        "/v1/rules",
        "/v1/evidence/0",
        "/v1/evidence/checkpoint",
        "/metrics",
    ] {
        let r = api.send(Method::GET, path, None, None).await;
        r.error(401, "unauthorized");
        assert!(
            r.header("www-authenticate").unwrap().starts_with("Bearer"),
            "{path}"
        );
    }
    // Unknown, malformed, and not-bearer credentials.
    let unknown = format!("rw_{}", "0".repeat(64));
    let r = api.get("/v1/incidents", &unknown).await;
    r.error(401, "unauthorized");
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    api.get("/v1/incidents", "nonsense")
        .await
        .error(401, "unauthorized");
    let r = api
        .client()
        .get(format!("{}/v1/incidents", api.base))
        .header("authorization", format!("Basic {}", api.secret))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // No token may submit either, and nothing was accepted.
    api.send(
        Method::POST,
        "/v1/incidents",
        None,
        Some(api.disk_full().to_string().into_bytes()),
    )
    .await
    .error(401, "unauthorized");
    assert!(
        api.controller
            .incidents("clinic-a", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_read_token_reads_but_cannot_submit() {
    let api = Api::start(ApiConfig::default()).await;
    let read = api.token("clinic-a", Scope::Read).await;
    let msg = api
        .post("/v1/incidents", &read, &api.disk_full())
        .await
        .error(403, "forbidden");
    assert!(msg.contains("operate"), "{msg}");
    assert_eq!(api.get("/v1/incidents", &read).await.status, 200);
    let runbooks = api.get("/v1/runbooks", &read).await.json();
    assert!(
        runbooks["runbooks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "clear-tmp" && r["risk"] == "medium"),
        "{runbooks}"
    );
    let rules = api.get("/v1/rules", &read).await.json();
    assert_eq!(rules["rules"][0]["id"], "disk-full-tmp", "{rules}");
    assert_eq!(rules["rules"][0]["runbooks"], json!(["clear-tmp"]));
}

#[tokio::test]
async fn bad_requests_say_what_is_wrong() {
    let api = Api::start(ApiConfig::default()).await;
    let s = api.secret.clone();
    let post = |body: &'static str| {
        api.send(
            Method::POST,
            "/v1/incidents",
            Some(&s),
            Some(body.as_bytes().to_vec()),
        )
    };

    post("{not json").await.error(400, "invalid_incident");
    let msg = post(r#"{"host":"h","type":"disk-full","severity":"high","colour":"red"}"#)
        .await
        .error(400, "invalid_incident");
    assert!(msg.contains("colour"), "{msg}");
    let msg = post(r#"{"host":"h","type":"disk-full","severity":"dire"}"#)
        .await
        .error(400, "invalid_incident");
    assert!(msg.contains("dire"), "{msg}");
    let msg = post(r#"{"host":"bad host!","type":"disk-full","severity":"high"}"#)
        .await
        .error(400, "invalid_incident");
    assert!(msg.contains("host"), "{msg}");

    // Larger than the 64 KiB default.
    let mut big = api.disk_full();
    big["message"] = json!("x".repeat(100 * 1024));
    api.post("/v1/incidents", &s, &big)
        .await
        .error(413, "payload_too_large");

    // Query and path parameters.
    api.get("/v1/evidence/abc", &s)
        .await
        .error(400, "bad_request");
    api.get("/v1/evidence/-1", &s)
        .await
        .error(400, "bad_request");
    let msg = api
        .get("/v1/incidents?status=heal", &s)
        .await
        .error(400, "bad_request");
    assert!(msg.contains("healed"), "{msg}");
    api.get("/v1/incidents?limit=0", &s)
        .await
        .error(400, "bad_request");
    api.get("/v1/incidents?limit=501", &s)
        .await
        .error(400, "bad_request");
    assert_eq!(api.get("/v1/incidents?limit=500", &s).await.status, 200);
    api.get("/v1/incidents?limit=many", &s)
        .await
        .error(400, "bad_request");
    api.post("/v1/incidents?wait=maybe", &s, &api.disk_full())
        .await
        .error(400, "bad_request");

    // Routes and methods.
    api.get("/v1/nothing", &s).await.error(404, "not_found");
    api.send(Method::GET, "/v2/incidents", None, None)
        .await
        .error(404, "not_found");
    let r = api
        .send(Method::DELETE, "/v1/incidents", Some(&s), None)
        .await;
    r.error(405, "method_not_allowed");
    let allow = r.header("allow").unwrap();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    api.send(Method::POST, "/healthz", None, None)
        .await
        .error(405, "method_not_allowed");

    // None of it was accepted.
    assert!(
        api.controller
            .incidents("clinic-a", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A chunked body has no Content-Length: the limit must hold while reading it.
#[tokio::test]
async fn a_streamed_body_over_the_limit_is_413() {
    let api = Api::start(ApiConfig {
        max_body_bytes: 1024,
        ..ApiConfig::default()
    })
    .await;
    let addr = api.base.strip_prefix("http://").unwrap();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let chunk = "x".repeat(800);
    let request = format!(
        "POST /v1/incidents HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n0\r\n\r\n",
        api.secret,
        len = chunk.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"payload_too_large""#), "{answer}");
}

#[tokio::test]
async fn each_token_has_its_own_rate_limit() {
    let api = Api::start(ApiConfig {
        rate_per_sec: 1,
        burst: 3,
        ..ApiConfig::default()
    })
    .await;
    let a = api.token("clinic-a", Scope::Read).await;
    let b = api.token("clinic-a", Scope::Read).await;
    for _ in 0..3 {
        assert_eq!(api.get("/v1/runbooks", &a).await.status, 200);
    }
    let r = api.get("/v1/runbooks", &a).await;
    r.error(429, "rate_limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    // Another token of the same tenant is not affected.
    assert_eq!(api.get("/v1/runbooks", &b).await.status, 200);
}
