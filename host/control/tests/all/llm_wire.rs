//! The model clients against local servers that speak each provider's wire format:
//! requests as the providers document them, answers parsed, errors retried or not.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::post;
use runwarden_control::planner::llm::{ApiKey, LlmClient, LlmConfig, LlmError, Provider};
use runwarden_control::planner::{PlanRequest, ToolSpec};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "sk-test-5ecret-key-never-shown";

/// One queued answer: status, extra header, body, delay.
type Answer = (u16, Option<(&'static str, &'static str)>, String, Duration);

#[derive(Clone, Default)]
struct Server {
    answers: Arc<Mutex<Vec<Answer>>>,
    /// (path, headers, body) of every request.
    seen: Arc<Mutex<Vec<(String, HeaderMap, Value)>>>,
}

impl Server {
    fn push(&self, status: u16, body: Value) {
        self.answers
            .lock()
            .unwrap()
            .push((status, None, body.to_string(), Duration::ZERO));
    }

    async fn start(&self) -> String {
        async fn handle(
            State(s): State<Server>,
            uri: Uri,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> axum::response::Response {
            let parsed = serde_json::from_slice(&body).unwrap_or(Value::Null);
            s.seen
                .lock()
                .unwrap()
                .push((uri.path().to_string(), headers, parsed));
            let next = {
                let mut a = s.answers.lock().unwrap();
                if a.is_empty() {
                    None
                } else {
                    Some(a.remove(0))
                }
            };
            let Some((status, header, body, delay)) = next else {
                return (StatusCode::INTERNAL_SERVER_ERROR, "nothing queued").into_response();
            };
            tokio::time::sleep(delay).await;
            let mut resp = (StatusCode::from_u16(status).unwrap(), body).into_response();
            if let Some((k, v)) = header {
                resp.headers_mut().insert(k, v.parse().unwrap());
            }
            resp
        }
        let app = Router::new()
            .route("/v1/chat/completions", post(handle))
            .route("/v1/messages", post(handle))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        base
    }
}

fn config(provider: Provider, base: &str) -> LlmConfig {
    LlmConfig {
        provider,
        url: match provider {
            Provider::OpenAi => format!("{base}/v1/"),
            Provider::Anthropic => base.to_string(),
        },
        model: "m-1".into(),
        api_key: Some(ApiKey::new(KEY)),
        timeout: Duration::from_millis(300),
        max_attempts: 3,
        backoff: Duration::from_millis(5),
        max_tokens: 256,
    }
}

fn request() -> PlanRequest {
    PlanRequest {
        system: "choose".into(),
        user: "incident".into(),
        tools: vec![ToolSpec {
            name: "select_runbook".into(),
            description: "run one".into(),
            input_schema: json!({"type": "object", "properties": {"runbook": {"type": "string", "enum": ["clear-tmp"]}}}),
        }],
    }
}

fn anthropic_tool_use(input: Value) -> Value {
    json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test-1",
        "stop_reason": "tool_use",
        "content": [
            {"type": "text", "text": "Clearing tmp."},
            {"type": "tool_use", "id": "toolu_1", "name": "select_runbook", "input": input}
        ],
        "usage": {"input_tokens": 321, "output_tokens": 12}
    })
}

#[tokio::test]
async fn anthropic_messages_with_tool_use() {
    let s = Server::default();
    s.push(
        200,
        anthropic_tool_use(json!({"runbook": "clear-tmp", "confidence": 0.8})),
    );
    let base = s.start().await;
    let c = LlmClient::new(config(Provider::Anthropic, &base)).unwrap();
    let a = c.complete(&request()).await.unwrap();
    let tool = a.tool.unwrap();
    assert_eq!(tool.name, "select_runbook");
    assert_eq!(tool.input["runbook"], "clear-tmp");
    assert_eq!(a.text, "Clearing tmp.");
    assert_eq!((a.usage.input_tokens, a.usage.output_tokens), (321, 12));
    assert_eq!(
        (a.provider.as_str(), a.model.as_str(), a.attempts),
        ("anthropic", "claude-test-1", 1)
    );
    let seen = s.seen.lock().unwrap();
    let (path, headers, body) = &seen[0];
    assert_eq!(path, "/v1/messages");
    assert_eq!(headers["x-api-key"], KEY);
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    assert!(headers.get("authorization").is_none());
    assert_eq!(body["model"], "m-1");
    assert_eq!(body["max_tokens"], 256);
    assert_eq!(body["system"], "choose");
    assert_eq!(
        body["messages"][0],
        json!({"role": "user", "content": "incident"})
    );
    assert_eq!(body["tools"][0]["name"], "select_runbook");
    assert_eq!(
        body["tools"][0]["input_schema"]["properties"]["runbook"]["enum"][0],
        "clear-tmp"
    );
    assert_eq!(body["tool_choice"], json!({"type": "any"}));
    // The digests are of the exact bytes.
    assert_eq!(
        serde_json::from_slice::<Value>(&a.request_body).unwrap(),
        *body
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&a.response_body).unwrap()["id"],
        "msg_1"
    );
}

#[tokio::test]
async fn openai_chat_completions_with_a_key_and_without_a_tool() {
    let s = Server::default();
    s.push(
        200,
        json!({"model": "gpt-test", "choices": [{"index": 0, "finish_reason": "stop",
               "message": {"role": "assistant", "content": "Please restart nginx."}}]}),
    );
    let base = s.start().await;
    let c = LlmClient::new(config(Provider::OpenAi, &base)).unwrap();
    let a = c.complete(&request()).await.unwrap();
    assert!(
        a.tool.is_none(),
        "no tool call is not an error: the caller escalates"
    );
    assert_eq!(a.text, "Please restart nginx.");
    let seen = s.seen.lock().unwrap();
    let (path, headers, body) = &seen[0];
    assert_eq!(
        path, "/v1/chat/completions",
        "a trailing slash in the URL is tolerated"
    );
    assert_eq!(headers["authorization"], format!("Bearer {KEY}").as_str());
    assert_eq!(body["tool_choice"], "required");
    assert_eq!(body["tools"][0]["type"], "function");
    assert_eq!(body["tools"][0]["function"]["parameters"]["type"], "object");
    assert_eq!(body["messages"][0]["role"], "system");
}

#[tokio::test]
async fn malformed_answers_are_errors_that_name_what_is_wrong() {
    for (provider, body, needle) in [
        (Provider::OpenAi, "not json".to_string(), "not JSON"),
        (Provider::OpenAi, json!({"choices": []}).to_string(), "choices[0].message"),
        (
            Provider::OpenAi,
            json!({"choices": [{"message": {"tool_calls": [{"function": {"name": "select_runbook", "arguments": "[1,2]"}}]}}]}).to_string(),
            "not a JSON object",
        ),
        (
            Provider::OpenAi,
            json!({"choices": [{"message": {"tool_calls": [{"function": {"name": "select_runbook", "arguments": "{oops"}}]}}]}).to_string(),
            "not JSON",
        ),
        (Provider::Anthropic, json!({"type": "message"}).to_string(), "no content array"),
        (
            Provider::Anthropic,
            anthropic_tool_use(json!("a string")).to_string(),
            "not a JSON object",
        ),
    ] {
        let s = Server::default();
        s.answers.lock().unwrap().push((200, None, body, Duration::ZERO));
        let base = s.start().await;
        let err = LlmClient::new(config(provider, &base))
            .unwrap()
            .complete(&request())
            .await
            .unwrap_err();
        assert!(matches!(err, LlmError::Malformed(_)), "{err:?}");
        assert!(err.to_string().contains(needle), "{err}");
        assert_eq!(s.seen.lock().unwrap().len(), 1, "a malformed answer is not retried");
    }
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_client_errors_are_not() {
    // 429 with Retry-After: 0, then success.
    let s = Server::default();
    s.answers.lock().unwrap().push((
        429,
        Some(("retry-after", "0")),
        "slow down".into(),
        Duration::ZERO,
    ));
    s.push(200, anthropic_tool_use(json!({"runbook": "clear-tmp"})));
    let base = s.start().await;
    let a = LlmClient::new(config(Provider::Anthropic, &base))
        .unwrap()
        .complete(&request())
        .await
        .unwrap();
    assert_eq!(a.attempts, 2);

    // 500 three times: an error after three attempts, with the status and the body.
    let s = Server::default();
    for _ in 0..3 {
        s.push(500, json!({"error": "overloaded"}));
    }
    let base = s.start().await;
    let err = LlmClient::new(config(Provider::OpenAi, &base))
        .unwrap()
        .complete(&request())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::Status {
                status: 500,
                attempts: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("overloaded"), "{err}");

    // 400: the request is wrong, asking again will not help.
    let s = Server::default();
    s.push(400, json!({"error": {"message": "bad tool schema"}}));
    let base = s.start().await;
    let err = LlmClient::new(config(Provider::OpenAi, &base))
        .unwrap()
        .complete(&request())
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
}

#[tokio::test]
async fn a_slow_server_times_out_and_the_key_never_shows() {
    let s = Server::default();
    for _ in 0..2 {
        s.answers
            .lock()
            .unwrap()
            .push((200, None, "{}".into(), Duration::from_millis(2_000)));
    }
    let base = s.start().await;
    let mut cfg = config(Provider::OpenAi, &base);
    cfg.max_attempts = 2;
    let err = LlmClient::new(cfg.clone())
        .unwrap()
        .complete(&request())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::Timeout {
                after_ms: 300,
                attempts: 2
            }
        ),
        "{err:?}"
    );
    // A server that echoes the key back in an error: scrubbed.
    let s = Server::default();
    s.push(401, json!({"error": format!("invalid key {KEY}")}));
    let base = s.start().await;
    let err = LlmClient::new(config(Provider::OpenAi, &base))
        .unwrap()
        .complete(&request())
        .await
        .unwrap_err();
    for shown in [err.to_string(), format!("{err:?}"), format!("{cfg:?}")] {
        assert!(!shown.contains(KEY), "{shown}");
    }
    assert!(err.to_string().contains("[redacted]"), "{err}");
}

#[test]
fn configuration_from_the_environment() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    assert!(
        LlmConfig::from_env(env(&[])).unwrap().is_none(),
        "no provider: offline"
    );
    let c = LlmConfig::from_env(env(&[
        ("RUNWARDEN_LLM_PROVIDER", "anthropic"),
        ("RUNWARDEN_LLM_MODEL", "claude-x"),
        ("ANTHROPIC_API_KEY", "ak"),
        ("OPENAI_API_KEY", "ok"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(c.provider, Provider::Anthropic);
    assert_eq!(c.url, "https://api.anthropic.com");
    assert_eq!(format!("{:?}", c.api_key), "Some([redacted])");
    let c = LlmConfig::from_env(env(&[
        ("RUNWARDEN_LLM_PROVIDER", "openai"),
        ("RUNWARDEN_LLM_MODEL", "local"),
        ("RUNWARDEN_LLM_URL", "http://127.0.0.1:11434/v1"),
    ]))
    .unwrap()
    .unwrap();
    assert!(c.api_key.is_none(), "local servers need no key");
    let err = LlmConfig::from_env(env(&[("RUNWARDEN_LLM_PROVIDER", "gemini")])).unwrap_err();
    assert!(
        err.to_string().contains("unknown provider \"gemini\""),
        "{err}"
    );
    let err = LlmConfig::from_env(env(&[("RUNWARDEN_LLM_PROVIDER", "openai")])).unwrap_err();
    assert!(err.to_string().contains("RUNWARDEN_LLM_MODEL"), "{err}");
    let err = LlmClient::new(LlmConfig {
        url: "ftp://x".into(),
        ..c
    })
    .err()
    .unwrap();
    assert!(err.to_string().contains("http://"), "{err}");
}
