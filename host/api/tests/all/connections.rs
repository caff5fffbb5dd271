//! Slow and idle clients, the connection cap, and bodies over the limit: the server
//! frees what a client holds without finishing its request, and answers every refusal
//! with the JSON error body.

use crate::Api;
use runwarden_api::ApiConfig;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config() -> ApiConfig {
    ApiConfig {
        max_connections: 4,
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        ..ApiConfig::default()
    }
}

fn addr(api: &Api) -> String {
    api.base.trim_start_matches("http://").to_string()
}

/// Everything the server sends until it closes the connection; panics if it keeps the
/// connection open longer than `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut out))
        .await
        .expect("the server closes the connection in time")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn unfinished_headers_are_dropped_and_the_cap_answers_503_meanwhile() {
    let api = Api::start(config()).await;
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr(&api)).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    // Let the server accept all four before the fifth arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A fifth connection while four are held: a JSON 503, then closed.
    let mut fifth = TcpStream::connect(addr(&api)).await.unwrap();
    let answer = read_until_closed(&mut fifth, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["code"], "overloaded", "{body}");

    // The slow ones are closed once the header timeout passes …
    for s in &mut slow {
        let rest = read_until_closed(s, Duration::from_secs(5)).await;
        assert!(!rest.contains("200 OK"), "{rest}");
    }
    drop(slow);
    // … which frees their places for everyone else.
    let mut ok = false;
    for _ in 0..50 {
        let r = api
            .client()
            .get(format!("{}/healthz", api.base))
            .send()
            .await;
        if r.is_ok_and(|r| r.status() == 200) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the server serves again once the slow clients are gone");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let api = Api::start(config()).await;
    let mut s = TcpStream::connect(addr(&api)).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // The answer arrives, and the connection then closes on its own after the idle limit.
    let all = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(all.starts_with("HTTP/1.1 200"), "{all}");
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408_as_json() {
    let api = Api::start(config()).await;
    let mut s = TcpStream::connect(addr(&api)).await.unwrap();
    let head = format!(
        "POST /v1/incidents HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"host\":",
        api.secret
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    assert!(body.contains("\"request_timeout\""), "{body}");
}

#[tokio::test]
async fn bodies_over_the_limit_get_the_json_error_on_every_route() {
    let api = Api::start(ApiConfig {
        max_body_bytes: 1024,
        ..config()
    })
    .await;
    let admin = api.token("clinic-a", runwarden_control::Scope::Admin).await;
    let big = vec![b' '; 4096];
    for (path, token) in [
        ("/v1/incidents", &api.secret),
        ("/v1/escalations/esc-x/approve", &api.secret),
        ("/v1/flywheel/candidates/fw-x/promote", &admin),
        ("/mcp", &api.secret),
    ] {
        let r = api
            .send(
                reqwest::Method::POST,
                path,
                Some(token.as_str()),
                Some(big.clone()),
            )
            .await;
        r.error(413, "payload_too_large");
    }
}
