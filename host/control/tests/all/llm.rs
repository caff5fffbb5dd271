//! The model clients, for both providers, against a local server that speaks their wire
//! formats and records what it was sent: the documented requests, answers parsed or
//! refused with a reason, which failures are retried and how often, timeouts, and the
//! API key kept out of every error.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use runwarden_control::planner::llm::{ApiKey, LlmClient, LlmConfig, LlmError, Provider};
use runwarden_control::planner::{PlanRequest, ToolSpec};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Distinctive from its first characters, so that a leaked piece would be found.
const KEY: &str = "Zq7-sk-live-key-that-must-never-show-4c1d";

const BOTH: [Provider; 2] = [Provider::OpenAi, Provider::Anthropic];

/// One answer the server gives, in turn.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    delay: Duration,
}

fn reply(status: u16, body: impl Into<Vec<u8>>) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: body.into(),
        delay: Duration::ZERO,
    }
}

impl Reply {
    fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_string()));
        self
    }

    fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// A request as the server received it.
#[derive(Clone)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the client sends JSON")
    }
}

#[derive(Clone)]
struct Shared {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stopping: watch::Receiver<bool>,
}

/// A model server on 127.0.0.1:0 that answers every path (so a wrong one is recorded,
/// not refused) with the queued replies, and 599 once they run out.
struct ModelServer {
    addr: std::net::SocketAddr,
    shared: Shared,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ModelServer {
    async fn start(replies: Vec<Reply>) -> ModelServer {
        let (stop, stopping) = watch::channel(false);
        let shared = Shared {
            replies: Arc::new(Mutex::new(replies.into())),
            seen: Arc::default(),
            stopping,
        };
        let app = Router::new().fallback(answer).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut stopped = shared.stopping.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
                .unwrap();
        });
        ModelServer {
            addr,
            shared,
            stop,
            task,
        }
    }

    /// The base URL a user would configure; the OpenAI one with a trailing slash, which
    /// must be tolerated.
    fn url(&self, provider: Provider) -> String {
        match provider {
            Provider::OpenAi => format!("http://{}/v1/", self.addr),
            Provider::Anthropic => format!("http://{}", self.addr),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    async fn stop(mut self) {
        self.stop.send_replace(true);
        if tokio::time::timeout(Duration::from_secs(2), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
            panic!("the model server did not stop within 2 s");
        }
    }
}

async fn answer(State(s): State<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    s.seen.lock().unwrap().push(Seen {
        path: uri.path().to_string(),
        headers,
        body,
        at: Instant::now(),
    });
    let next = s.replies.lock().unwrap().pop_front();
    let Some(r) = next else {
        return Response::builder()
            .status(599)
            .body(Body::from("no reply queued"))
            .unwrap();
    };
    let mut stopping = s.stopping.clone();
    tokio::select! {
        _ = tokio::time::sleep(r.delay) => {}
        _ = stopping.wait_for(|s| *s) => {}
    }
    let mut resp = Response::builder().status(r.status);
    for (k, v) in r.headers {
        resp = resp.header(k, v);
    }
    resp.header("content-type", "application/json")
        .body(Body::from(r.body))
        .unwrap()
}

fn config(provider: Provider, server: &ModelServer) -> LlmConfig {
    LlmConfig {
        provider,
        url: server.url(provider),
        model: "m-1".into(),
        api_key: Some(ApiKey::new(KEY)),
        timeout: Duration::from_secs(2),
        max_attempts: 3,
        backoff: Duration::from_millis(10),
        max_tokens: 256,
    }
}

async fn complete(config: LlmConfig) -> Result<runwarden_control::planner::ModelAnswer, LlmError> {
    LlmClient::new(config).unwrap().complete(&request()).await
}

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {"runbook": {"type": "string", "enum": ["clear-tmp"]}, "confidence": {"type": "number"}},
        "required": ["runbook", "confidence"]
    })
}

fn request() -> PlanRequest {
    PlanRequest {
        system: "Choose one runbook.".into(),
        user: "disk full on web-1".into(),
        tools: vec![
            ToolSpec {
                name: "select_runbook".into(),
                description: "Run one runbook.".into(),
                input_schema: schema(),
            },
            ToolSpec {
                name: "escalate".into(),
                description: "Hand over to a human.".into(),
                input_schema: json!({"type": "object", "properties": {"reason": {"type": "string"}}}),
            },
        ],
    }
}

/// A tool call answer as each provider documents it.
fn tool_answer(provider: Provider, input: &Value) -> Vec<u8> {
    let v = match provider {
        Provider::OpenAi => json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-test-0613",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {
                    "name": "select_runbook", "arguments": input.to_string()
                }}]
            }}],
            "usage": {"prompt_tokens": 321, "completion_tokens": 12, "total_tokens": 333}
        }),
        Provider::Anthropic => json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test-1",
            "stop_reason": "tool_use",
            "content": [
                {"type": "text", "text": "Clearing tmp."},
                {"type": "tool_use", "id": "toolu_1", "name": "select_runbook", "input": input}
            ],
            "usage": {"input_tokens": 321, "output_tokens": 12}
        }),
    };
    v.to_string().into_bytes()
}

fn text_answer(provider: Provider, text: &str) -> Vec<u8> {
    let v = match provider {
        Provider::OpenAi => json!({
            "model": "gpt-test-0613",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 300, "completion_tokens": 5}
        }),
        Provider::Anthropic => json!({
            "model": "claude-test-1", "stop_reason": "end_turn",
            "content": [{"type": "text", "text": text}],
            "usage": {"input_tokens": 300, "output_tokens": 5}
        }),
    };
    v.to_string().into_bytes()
}

fn input() -> Value {
    json!({"runbook": "clear-tmp", "confidence": 0.8})
}

#[tokio::test]
async fn a_tool_call_is_parsed_and_the_request_is_the_documented_one() {
    for provider in BOTH {
        let answer = tool_answer(provider, &input());
        let server = ModelServer::start(vec![reply(200, answer.clone())]).await;
        let a = complete(config(provider, &server)).await.unwrap();

        let tool = a.tool.expect("a tool call");
        assert_eq!(tool.name, "select_runbook");
        assert_eq!(tool.input, input());
        assert_eq!(
            (a.usage.input_tokens, a.usage.output_tokens),
            (321, 12),
            "{provider:?}"
        );
        assert_eq!(a.provider, provider.as_str());
        assert_eq!(a.attempts, 1);

        let seen = server.seen();
        assert_eq!(seen.len(), 1);
        let (h, body) = (&seen[0].headers, seen[0].json());
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(body["model"], "m-1");
        assert_eq!(body["max_tokens"], 256);
        assert_eq!(body["temperature"], 0);
        match provider {
            Provider::OpenAi => {
                assert_eq!(seen[0].path, "/v1/chat/completions");
                assert_eq!(h["authorization"], format!("Bearer {KEY}").as_str());
                assert!(h.get("x-api-key").is_none());
                assert_eq!(
                    body["messages"],
                    json!([
                        {"role": "system", "content": "Choose one runbook."},
                        {"role": "user", "content": "disk full on web-1"}
                    ])
                );
                assert_eq!(
                    body["tools"][0],
                    json!({"type": "function", "function": {
                        "name": "select_runbook", "description": "Run one runbook.", "parameters": schema()
                    }})
                );
                assert_eq!(body["tools"][1]["function"]["name"], "escalate");
                assert_eq!(body["tool_choice"], "required");
                assert_eq!(a.model, "gpt-test-0613", "the model as the server names it");
                assert_eq!(a.text, "", "content null is no text");
            }
            Provider::Anthropic => {
                assert_eq!(seen[0].path, "/v1/messages");
                assert_eq!(h["x-api-key"], KEY);
                assert_eq!(h["anthropic-version"], "2023-06-01");
                assert!(h.get("authorization").is_none());
                assert_eq!(body["system"], "Choose one runbook.");
                assert_eq!(
                    body["messages"],
                    json!([{"role": "user", "content": "disk full on web-1"}])
                );
                assert_eq!(
                    body["tools"][0],
                    json!({"name": "select_runbook", "description": "Run one runbook.", "input_schema": schema()})
                );
                assert_eq!(body["tools"][1]["name"], "escalate");
                assert_eq!(body["tool_choice"], json!({"type": "any"}));
                assert_eq!(a.model, "claude-test-1");
                assert_eq!(a.text, "Clearing tmp.");
            }
        }
        // What goes into the evidence is exactly what crossed the wire.
        assert_eq!(a.request_body, seen[0].body.to_vec());
        assert_eq!(a.response_body, answer);
        server.stop().await;
    }
}

#[tokio::test]
async fn an_answer_without_a_tool_call_is_text_not_an_error() {
    for provider in BOTH {
        let server =
            ModelServer::start(vec![reply(200, text_answer(provider, "Restart nginx?"))]).await;
        let a = complete(config(provider, &server)).await.unwrap();
        assert!(a.tool.is_none(), "{provider:?}: the caller escalates");
        assert_eq!(a.text, "Restart nginx?");
        assert_eq!(a.attempts, 1);
        server.stop().await;
    }
}

#[tokio::test]
async fn local_servers_need_no_key_and_get_no_auth_header() {
    for provider in BOTH {
        let server = ModelServer::start(vec![reply(200, tool_answer(provider, &input()))]).await;
        let c = LlmConfig {
            api_key: None,
            ..config(provider, &server)
        };
        assert!(complete(c).await.unwrap().tool.is_some());
        let h = &server.seen()[0].headers;
        assert!(h.get("authorization").is_none(), "{provider:?}");
        assert!(h.get("x-api-key").is_none(), "{provider:?}");
        server.stop().await;
    }
}

#[tokio::test]
async fn malformed_answers_name_what_is_wrong_and_are_not_retried() {
    let openai_args = |args: &str, finish: &str| {
        json!({"choices": [{"finish_reason": finish, "message": {"tool_calls": [
            {"type": "function", "function": {"name": "select_runbook", "arguments": args}}
        ]}}]})
        .to_string()
    };
    let cases = [
        (Provider::OpenAi, "<html>busy</html>".to_string(), "not JSON"),
        (Provider::Anthropic, "<html>busy</html>".to_string(), "not JSON"),
        (Provider::OpenAi, json!({"choices": []}).to_string(), "no choices[0].message"),
        (Provider::OpenAi, json!({"object": "list"}).to_string(), "no choices[0].message"),
        (
            Provider::OpenAi,
            json!({"choices": [{"message": {"tool_calls": [{"id": "call_1"}]}}]}).to_string(),
            "tool_calls[0] has no function",
        ),
        (
            Provider::OpenAi,
            json!({"choices": [{"message": {"tool_calls": [{"function": {"name": "select_runbook", "arguments": {"runbook": "clear-tmp"}}}]}}]}).to_string(),
            "arguments is not a string",
        ),
        (Provider::OpenAi, openai_args("[1, 2]", "tool_calls"), "not a JSON object"),
        (Provider::OpenAi, openai_args("\"clear-tmp\"", "tool_calls"), "not a JSON object"),
        (Provider::OpenAi, openai_args("{\"runbook\": \"cle", "tool_calls"), "not JSON"),
        (Provider::OpenAi, openai_args("{\"runbook\": \"cle", "length"), "raise it"),
        (Provider::Anthropic, json!({"type": "message"}).to_string(), "no content array"),
        (
            Provider::Anthropic,
            String::from_utf8(tool_answer(Provider::Anthropic, &json!(["clear-tmp"]))).unwrap(),
            "not a JSON object",
        ),
        (
            Provider::Anthropic,
            json!({"content": [{"type": "tool_use", "id": "toolu_1", "name": "select_runbook"}]}).to_string(),
            "has no input",
        ),
        (
            Provider::Anthropic,
            json!({"content": [{"type": "tool_use", "id": "toolu_1", "input": {}}]}).to_string(),
            "has no name",
        ),
    ];
    for (provider, body, needle) in cases {
        let server = ModelServer::start(vec![reply(200, body.clone())]).await;
        let err = complete(config(provider, &server)).await.unwrap_err();
        assert!(matches!(err, LlmError::Malformed(_)), "{body}: {err:?}");
        assert!(err.to_string().contains(needle), "{body}: {err}");
        assert_eq!(
            server.seen().len(),
            1,
            "{body}: a malformed answer is not retried"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn rate_limits_are_retried() {
    for provider in BOTH {
        let server = ModelServer::start(vec![
            reply(429, r#"{"error": "rate limited"}"#).header("retry-after", "0"),
            reply(200, tool_answer(provider, &input())),
        ])
        .await;
        let a = complete(config(provider, &server)).await.unwrap();
        assert_eq!(a.attempts, 2, "{provider:?}");
        assert!(a.tool.is_some());
        let seen = server.seen();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].body, seen[1].body, "the same request again");
        server.stop().await;
    }
}

#[tokio::test]
async fn retry_after_is_honoured_over_a_shorter_backoff() {
    let server = ModelServer::start(vec![
        reply(503, "overloaded").header("retry-after", "1"),
        reply(200, tool_answer(Provider::Anthropic, &input())),
    ])
    .await;
    let a = complete(config(Provider::Anthropic, &server))
        .await
        .unwrap();
    assert_eq!(a.attempts, 2);
    let seen = server.seen();
    let gap = seen[1].at - seen[0].at;
    assert!(
        gap >= Duration::from_secs(1),
        "waited {gap:?}, not the 1 s asked"
    );
    assert!(gap < Duration::from_secs(3), "waited {gap:?}");
    server.stop().await;
}

#[tokio::test]
async fn server_errors_are_retried_up_to_max_attempts() {
    for provider in BOTH {
        let server = ModelServer::start(
            (0..3)
                .map(|_| reply(500, r#"{"error": "internal: shard 7 down"}"#))
                .collect(),
        )
        .await;
        let err = complete(config(provider, &server)).await.unwrap_err();
        assert!(
            matches!(
                err,
                LlmError::Status {
                    status: 500,
                    attempts: 3,
                    ..
                }
            ),
            "{provider:?}: {err:?}"
        );
        assert!(err.to_string().contains("shard 7 down"), "{err}");
        assert_eq!(server.seen().len(), 3, "no fourth attempt");
        server.stop().await;
    }
    // 502 and 504 likewise, and an answer on the last attempt counts.
    let server = ModelServer::start(vec![
        reply(502, "bad gateway"),
        reply(504, "gateway timeout"),
        reply(200, tool_answer(Provider::OpenAi, &input())),
    ])
    .await;
    let a = complete(config(Provider::OpenAi, &server)).await.unwrap();
    assert_eq!(a.attempts, 3);
    server.stop().await;
}

#[tokio::test]
async fn reasoning_models_get_max_completion_tokens_and_the_default_temperature() {
    // OpenAI's answers to a reasoning model (o-series, gpt-5) sent max_tokens, then
    // temperature 0, as its API words them.
    let server = ModelServer::start(vec![
        reply(
            400,
            r#"{"error": {"message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.", "type": "invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter"}}"#,
        ),
        reply(
            400,
            r#"{"error": {"message": "Unsupported value: 'temperature' does not support 0 with this model. Only the default (1) value is supported.", "type": "invalid_request_error", "param": "temperature", "code": "unsupported_value"}}"#,
        ),
        reply(200, tool_answer(Provider::OpenAi, &input())),
        reply(200, tool_answer(Provider::OpenAi, &input())),
    ])
    .await;
    let client = LlmClient::new(config(Provider::OpenAi, &server)).unwrap();
    let answer = client.complete(&request()).await.unwrap();
    assert!(answer.tool.is_some());
    assert_eq!(answer.attempts, 3, "every request is counted");
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    let last = seen[2].json();
    assert_eq!(last["max_completion_tokens"], 256, "{last}");
    assert!(
        last.get("max_tokens").is_none() && last.get("temperature").is_none(),
        "{last}"
    );
    // What was learned is kept: the next request goes right at once.
    client.complete(&request()).await.unwrap();
    assert_eq!(server.seen().len(), 4);
    assert!(server.seen()[3].json().get("max_tokens").is_none());
    server.stop().await;

    // Other 400s are not retried, and local servers keep max_tokens and temperature 0.
    let server = ModelServer::start(vec![reply(
        400,
        r#"{"error": {"message": "Unsupported parameter: 'logit_bias'", "param": "logit_bias"}}"#,
    )])
    .await;
    let err = complete(config(Provider::OpenAi, &server))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::Status {
                status: 400,
                attempts: 1,
                ..
            }
        ),
        "{err:?}"
    );
    let sent = server.seen()[0].json();
    assert_eq!(
        (sent["max_tokens"].as_u64(), sent["temperature"].as_u64()),
        (Some(256), Some(0))
    );
    server.stop().await;
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    for (provider, status) in [
        (Provider::OpenAi, 400),
        (Provider::Anthropic, 400),
        (Provider::OpenAi, 404),
        (Provider::Anthropic, 401),
    ] {
        let server = ModelServer::start(vec![
            reply(
                status,
                r#"{"error": {"message": "tools.0: invalid schema"}}"#,
            ),
            reply(200, tool_answer(provider, &input())),
        ])
        .await;
        let err = complete(config(provider, &server)).await.unwrap_err();
        match &err {
            LlmError::Status {
                status: s,
                attempts: 1,
                body,
            } => {
                assert_eq!(*s, status);
                assert!(body.contains("invalid schema"), "{body}");
            }
            other => panic!("{provider:?} {status}: {other:?}"),
        }
        assert_eq!(server.seen().len(), 1, "{provider:?} {status}: asked once");
        server.stop().await;
    }
}

#[tokio::test]
async fn a_slow_server_times_out_on_every_attempt() {
    for provider in BOTH {
        let slow = || reply(200, tool_answer(provider, &input())).after(Duration::from_secs(5));
        let server = ModelServer::start(vec![slow(), slow()]).await;
        let c = LlmConfig {
            timeout: Duration::from_millis(200),
            max_attempts: 2,
            ..config(provider, &server)
        };
        let started = Instant::now();
        let err = complete(c).await.unwrap_err();
        assert!(
            matches!(
                err,
                LlmError::Timeout {
                    after_ms: 200,
                    attempts: 2
                }
            ),
            "{provider:?}: {err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(server.seen().len(), 2);
        server.stop().await;
    }
}

#[tokio::test]
async fn latency_is_that_of_the_attempt_that_answered() {
    let server = ModelServer::start(vec![
        reply(200, "{}").after(Duration::from_secs(5)),
        reply(200, tool_answer(Provider::OpenAi, &input())),
    ])
    .await;
    let c = LlmConfig {
        timeout: Duration::from_millis(300),
        ..config(Provider::OpenAi, &server)
    };
    let a = complete(c).await.unwrap();
    assert_eq!(a.attempts, 2);
    assert!(
        a.latency_ms < 300,
        "{} ms includes the timed-out attempt",
        a.latency_ms
    );
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_server_is_a_transport_error_after_every_attempt() {
    // A port that was just free: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for provider in BOTH {
        let c = LlmConfig {
            provider,
            url: format!("http://{addr}"),
            model: "m-1".into(),
            api_key: Some(ApiKey::new(KEY)),
            timeout: Duration::from_secs(1),
            max_attempts: 3,
            backoff: Duration::from_millis(10),
            max_tokens: 256,
        };
        let err = complete(c).await.unwrap_err();
        let LlmError::Transport(why) = &err else {
            panic!("{provider:?}: {err:?}");
        };
        assert!(why.contains(&addr.to_string()), "names the server: {why}");
        assert!(why.contains("3 attempt(s)"), "{why}");
        assert!(!format!("{err} {err:?}").contains(&KEY[..5]));
    }
}

#[tokio::test]
async fn the_key_never_shows_in_an_error() {
    let pad = "x".repeat(280);
    for provider in BOTH {
        let server = ModelServer::start(vec![
            // Servers that echo what they were sent: the key whole, and straddling the
            // 300 characters an error keeps of a body.
            reply(401, format!(r#"{{"error": "invalid key {KEY}"}}"#)),
            reply(403, format!("{pad}{KEY}")),
            reply(200, format!("not json, but your key is {KEY}")),
            reply(200, "{}").after(Duration::from_secs(5)),
        ])
        .await;
        let c = LlmConfig {
            timeout: Duration::from_millis(200),
            max_attempts: 1,
            ..config(provider, &server)
        };
        let client = LlmClient::new(c.clone()).unwrap();
        let mut shown = vec![format!("{c:?}"), format!("{client:?}")];
        for _ in 0..4 {
            let err = client.complete(&request()).await.unwrap_err();
            shown.push(err.to_string());
            shown.push(format!("{err:?}"));
        }
        assert!(shown[2].contains("[redacted]"), "{}", shown[2]);
        for s in &shown {
            assert!(!s.contains(&KEY[..5]), "{provider:?}: {s}");
        }
        server.stop().await;
    }
    let key = ApiKey::new(KEY);
    assert_eq!(format!("{key} {key:?}"), "[redacted] [redacted]");
}

#[tokio::test]
async fn configuration_from_the_environment() {
    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }
    assert!(
        LlmConfig::from_env(env(&[("OPENAI_API_KEY", "k")]))
            .unwrap()
            .is_none()
    );
    assert!(
        LlmConfig::from_env(env(&[("RUNWARDEN_LLM_PROVIDER", "")]))
            .unwrap()
            .is_none()
    );

    let c = LlmConfig::from_env(env(&[
        ("RUNWARDEN_LLM_PROVIDER", "anthropic"),
        ("RUNWARDEN_LLM_MODEL", "claude-x"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(
        (c.provider, c.url.as_str(), c.model.as_str()),
        (Provider::Anthropic, "https://api.anthropic.com", "claude-x")
    );
    assert_eq!(
        (c.timeout, c.max_attempts, c.backoff, c.max_tokens),
        (Duration::from_secs(30), 3, Duration::from_millis(500), 1024)
    );
    assert!(c.api_key.is_none());
    let c = LlmConfig::from_env(env(&[
        ("RUNWARDEN_LLM_PROVIDER", "OpenAI"),
        ("RUNWARDEN_LLM_MODEL", "gpt-x"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(
        (c.provider, c.url.as_str()),
        (Provider::OpenAi, "https://api.openai.com/v1")
    );

    // Which key is used shows on the wire: each provider's own variable, unless
    // RUNWARDEN_LLM_API_KEY is set (an empty one does not count).
    for (provider, extra, expected) in [
        (Provider::OpenAi, None, "key-openai"),
        (Provider::Anthropic, None, "key-anthropic"),
        (Provider::Anthropic, Some("key-runwarden"), "key-runwarden"),
        (Provider::OpenAi, Some(""), "key-openai"),
    ] {
        let server = ModelServer::start(vec![reply(200, tool_answer(provider, &input()))]).await;
        let url = server.url(provider);
        let mut vars = vec![
            ("RUNWARDEN_LLM_PROVIDER", provider.as_str()),
            ("RUNWARDEN_LLM_MODEL", "m-1"),
            ("RUNWARDEN_LLM_URL", url.as_str()),
            ("OPENAI_API_KEY", "key-openai"),
            ("ANTHROPIC_API_KEY", "key-anthropic"),
        ];
        if let Some(k) = extra {
            vars.push(("RUNWARDEN_LLM_API_KEY", k));
        }
        let c = LlmConfig::from_env(env(&vars)).unwrap().unwrap();
        complete(c).await.unwrap();
        let h = &server.seen()[0].headers;
        match provider {
            Provider::OpenAi => {
                assert_eq!(h["authorization"], format!("Bearer {expected}").as_str())
            }
            Provider::Anthropic => assert_eq!(h["x-api-key"], expected),
        }
        server.stop().await;
    }

    let err = LlmConfig::from_env(env(&[
        ("RUNWARDEN_LLM_PROVIDER", "gemini"),
        ("RUNWARDEN_LLM_MODEL", "g"),
    ]))
    .unwrap_err();
    assert!(matches!(err, LlmError::Config(_)));
    for needle in ["unknown provider \"gemini\"", "\"openai\"", "\"anthropic\""] {
        assert!(err.to_string().contains(needle), "{err}");
    }
    let err = LlmConfig::from_env(env(&[
        ("RUNWARDEN_LLM_PROVIDER", "openai"),
        ("RUNWARDEN_LLM_MODEL", " "),
    ]))
    .unwrap_err();
    assert!(err.to_string().contains("set RUNWARDEN_LLM_MODEL"), "{err}");
}

#[test]
fn a_client_refuses_bad_configuration_up_front() {
    let base = LlmConfig {
        provider: Provider::OpenAi,
        url: "http://127.0.0.1:1/v1".into(),
        model: "m-1".into(),
        api_key: None,
        timeout: Duration::from_secs(1),
        max_attempts: 3,
        backoff: Duration::from_millis(10),
        max_tokens: 256,
    };
    let refused = |c: LlmConfig| LlmClient::new(c).expect_err("refused").to_string();
    assert!(
        refused(LlmConfig {
            url: "api.openai.com/v1".into(),
            ..base.clone()
        })
        .contains("must start with http:// or https://")
    );
    assert!(
        refused(LlmConfig {
            model: String::new(),
            ..base.clone()
        })
        .contains("model name is empty")
    );
    let why = refused(LlmConfig {
        api_key: Some(ApiKey::new(format!("{KEY}\n"))),
        ..base.clone()
    });
    assert!(why.contains("API key") && !why.contains(&KEY[..5]), "{why}");
    assert_eq!(Provider::parse("anthropic").unwrap().as_str(), "anthropic");
}
