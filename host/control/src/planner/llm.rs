//! Model clients: OpenAI-compatible chat completions with `tools` (OpenAI, vLLM,
//! llama.cpp server, Ollama) and Anthropic Messages with `tool_use`.
//!
//! One request per attempt, each with a timeout. 429, 500, 502, 503, 504, timeouts and
//! connection errors are retried with doubling backoff (honouring `Retry-After` on 429
//! and 503, no single wait longer than 10 s); other answers are final. The key travels
//! only in its header: it is shown as `[redacted]`, and cut out of anything a server
//! sends back before that reaches an error.

use super::{ModelAnswer, PlanRequest, ToolCall, Usage};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Which wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// OpenAI-compatible chat completions.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

impl Provider {
    /// `openai` or `anthropic` (any case).
    pub fn parse(s: &str) -> Result<Provider, LlmError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "openai" => Ok(Provider::OpenAi),
            "anthropic" => Ok(Provider::Anthropic),
            _ => Err(LlmError::Config(format!(
                "unknown provider {s:?}: use \"openai\" (any OpenAI-compatible server) or \"anthropic\""
            ))),
        }
    }

    /// The name.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
        }
    }

    fn default_url(self) -> &'static str {
        match self {
            Provider::OpenAi => "https://api.openai.com/v1",
            Provider::Anthropic => "https://api.anthropic.com",
        }
    }

    /// The variable the provider's own tools read the key from.
    fn key_variable(self) -> &'static str {
        match self {
            Provider::OpenAi => "OPENAI_API_KEY",
            Provider::Anthropic => "ANTHROPIC_API_KEY",
        }
    }
}

/// An API key: shown as `[redacted]` by both `Debug` and `Display`.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wrap a key.
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How to reach the model.
#[derive(Clone, Debug)]
pub struct LlmConfig {
    /// Wire format.
    pub provider: Provider,
    /// Base URL: `…/v1` for OpenAI-compatible servers (we POST `{url}/chat/completions`),
    /// `https://api.anthropic.com` for Anthropic (we POST `{url}/v1/messages`). A trailing
    /// slash is fine.
    pub url: String,
    /// Model name.
    pub model: String,
    /// API key, if the server needs one (local servers usually do not).
    pub api_key: Option<ApiKey>,
    /// Per attempt, from sending the request to the last byte of the answer.
    pub timeout: Duration,
    /// Attempts in all (at least 1).
    pub max_attempts: u32,
    /// First backoff; doubles per retry.
    pub backoff: Duration,
    /// Most tokens the model may answer with.
    pub max_tokens: u32,
}

/// Longest single wait between attempts, whatever `Retry-After` says.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// How much of an error body an error keeps.
const BODY_SHOWN: usize = 300;

impl LlmConfig {
    /// From `RUNWARDEN_LLM_PROVIDER`, `RUNWARDEN_LLM_URL` (default per provider),
    /// `RUNWARDEN_LLM_MODEL` (required with a provider), and the key from
    /// `RUNWARDEN_LLM_API_KEY`, else `OPENAI_API_KEY` / `ANTHROPIC_API_KEY` by provider.
    /// `None` when no provider is set. `get` looks a variable up (the environment, or
    /// layered config); an empty value counts as unset. Other settings take defaults:
    /// 30 s per attempt, 3 attempts, 500 ms backoff, 1024 tokens.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<LlmConfig>, LlmError> {
        let get = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let Some(provider) = get("RUNWARDEN_LLM_PROVIDER") else {
            return Ok(None);
        };
        let provider = Provider::parse(&provider)?;
        let model = get("RUNWARDEN_LLM_MODEL").ok_or_else(|| {
            LlmError::Config(format!(
                "RUNWARDEN_LLM_PROVIDER is {} but no model is set: set RUNWARDEN_LLM_MODEL (or [llm] model)",
                provider.as_str()
            ))
        })?;
        let url = get("RUNWARDEN_LLM_URL").unwrap_or_else(|| provider.default_url().into());
        let api_key = get("RUNWARDEN_LLM_API_KEY")
            .or_else(|| get(provider.key_variable()))
            .map(ApiKey);
        Ok(Some(LlmConfig {
            provider,
            url,
            model,
            api_key,
            timeout: Duration::from_secs(30),
            max_attempts: 3,
            backoff: Duration::from_millis(500),
            max_tokens: 1024,
        }))
    }
}

/// Why a completion failed. No variant ever holds the API key.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// Misconfigured.
    #[error("{0}")]
    Config(String),
    /// No answer in time, on any attempt.
    #[error(
        "no answer within {after_ms} ms ({attempts} attempt(s)): raise the timeout or check the model server"
    )]
    Timeout {
        /// Per-attempt timeout.
        after_ms: u64,
        /// Attempts made.
        attempts: u32,
    },
    /// The server answered with an error status.
    #[error("the model server answered {status} after {attempts} attempt(s): {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Attempts made.
        attempts: u32,
        /// The first 300 characters of its body.
        body: String,
    },
    /// A 2xx answer that is not what the wire format says; says what was wrong.
    #[error("malformed answer from the model server: {0}")]
    Malformed(String),
    /// The connection failed on every attempt.
    #[error("cannot reach the model server: {0}")]
    Transport(String),
}

/// A client for one configured model.
#[derive(Debug)]
pub struct LlmClient {
    config: LlmConfig,
    http: reqwest::Client,
    endpoint: String,
    /// Content type, version and key headers, built once; the key's is marked sensitive.
    headers: HeaderMap,
    /// OpenAI's reasoning models refuse `max_tokens` (they want `max_completion_tokens`)
    /// and any `temperature` but the default. Learned from the server's 400, then kept.
    completion_tokens: std::sync::atomic::AtomicBool,
    default_temperature: std::sync::atomic::AtomicBool,
}

/// How one attempt ended.
enum Attempt {
    /// A 2xx answer: its bytes, and the attempt's wall time in ms.
    Answered(Vec<u8>, u64),
    /// Worth asking again: the error should this be the last attempt, and the wait the
    /// server asked for.
    Retry(LlmError, Option<Duration>),
    /// Asking again will not help.
    Failed(LlmError),
}

impl LlmClient {
    /// Make a client (one connection pool, reused across calls).
    pub fn new(config: LlmConfig) -> Result<LlmClient, LlmError> {
        let base = config.url.trim().trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(LlmError::Config(format!(
                "model URL {base:?} must start with http:// or https://"
            )));
        }
        if config.model.trim().is_empty() {
            return Err(LlmError::Config(
                "the model name is empty: set RUNWARDEN_LLM_MODEL (or [llm] model)".into(),
            ));
        }
        let endpoint = match config.provider {
            Provider::OpenAi => format!("{base}/chat/completions"),
            Provider::Anthropic => format!("{base}/v1/messages"),
        };
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        if config.provider == Provider::Anthropic {
            headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        }
        if let Some(key) = &config.api_key {
            let (name, value) = match config.provider {
                Provider::OpenAi => ("authorization", format!("Bearer {}", key.0)),
                Provider::Anthropic => ("x-api-key", key.0.clone()),
            };
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                LlmError::Config(
                    "the API key holds characters an HTTP header cannot carry (a stray newline?)"
                        .into(),
                )
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| LlmError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(LlmClient {
            config,
            http,
            endpoint,
            headers,
            completion_tokens: Default::default(),
            default_temperature: Default::default(),
        })
    }

    /// The wire format.
    pub fn provider(&self) -> Provider {
        self.config.provider
    }

    /// The configured model.
    pub fn model(&self) -> &str {
        &self.config.model
    }

    fn body(&self, req: &PlanRequest) -> Value {
        let c = &self.config;
        match c.provider {
            Provider::OpenAi => json!({
                "model": c.model,
                "messages": [
                    {"role": "system", "content": req.system},
                    {"role": "user", "content": req.user}
                ],
                "tools": req.tools.iter().map(|t| json!({
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.input_schema}
                })).collect::<Vec<_>>(),
                "tool_choice": "required",
                "max_tokens": c.max_tokens,
                "temperature": 0
            })
            .as_object()
            .map(|o| {
                let mut o = o.clone();
                if self.completion_tokens.load(Ordering::Relaxed) {
                    o.remove("max_tokens");
                    o.insert("max_completion_tokens".into(), json!(c.max_tokens));
                }
                if self.default_temperature.load(Ordering::Relaxed) {
                    o.remove("temperature");
                }
                Value::Object(o)
            })
            .unwrap_or_default(),
            Provider::Anthropic => json!({
                "model": c.model,
                "max_tokens": c.max_tokens,
                "system": req.system,
                "messages": [{"role": "user", "content": req.user}],
                "tools": req.tools.iter().map(|t| json!({
                    "name": t.name, "description": t.description, "input_schema": t.input_schema
                })).collect::<Vec<_>>(),
                "tool_choice": {"type": "any"},
                "temperature": 0
            }),
        }
    }

    /// One completion in which the model must call one of `req.tools`. An answer without
    /// a tool call is not an error (`tool` is `None`, `text` says what the model wrote):
    /// the caller escalates.
    pub async fn complete(&self, req: &PlanRequest) -> Result<ModelAnswer, LlmError> {
        let mut body = serde_json::to_vec(&self.body(req)).expect("a JSON value serializes");
        let max = self.config.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            match self.attempt(&body, attempt).await {
                Attempt::Answered(bytes, latency_ms) => {
                    return self.read(body, bytes, latency_ms, attempt);
                }
                // A reasoning model named the parameter it refuses: send it its way, once
                // per parameter (the two flags bound this to two extra requests).
                Attempt::Failed(LlmError::Status {
                    status: 400,
                    body: refusal,
                    ..
                }) if self.adapt(&refusal) => {
                    body = serde_json::to_vec(&self.body(req)).expect("a JSON value serializes");
                    attempt += 1;
                }
                Attempt::Failed(e) => return Err(e),
                Attempt::Retry(e, _) if attempt >= max => return Err(e),
                Attempt::Retry(_, asked) => {
                    tokio::time::sleep(wait(self.config.backoff, attempt, asked, MAX_WAIT)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Whether an OpenAI 400 names `max_tokens` or `temperature` as unsupported and the
    /// request can change to suit it (not yet changed).
    fn adapt(&self, refusal: &str) -> bool {
        if self.config.provider != Provider::OpenAi || !refusal.contains("nsupported") {
            return false;
        }
        if refusal.contains("max_completion_tokens")
            && !self.completion_tokens.swap(true, Ordering::Relaxed)
        {
            return true;
        }
        refusal.contains("'temperature'") && !self.default_temperature.swap(true, Ordering::Relaxed)
    }

    /// Attempt number `attempt` (from 1), with its outcome's error already counting it.
    async fn attempt(&self, body: &[u8], attempt: u32) -> Attempt {
        let started = Instant::now();
        let sent = self
            .http
            .post(&self.endpoint)
            .headers(self.headers.clone())
            .body(body.to_vec())
            .send()
            .await;
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) => return self.failed_transfer(&e, attempt),
        };
        let status = resp.status().as_u16();
        let asked = retry_after(resp.headers());
        let bytes = match resp.bytes().await {
            Ok(b) => b.to_vec(),
            Err(e) => return self.failed_transfer(&e, attempt),
        };
        if (200..300).contains(&status) {
            let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            return Attempt::Answered(bytes, latency_ms);
        }
        // Scrub before cutting, so that a key straddling the cut cannot leave a piece.
        let text = self.scrub(&String::from_utf8_lossy(&bytes));
        let error = LlmError::Status {
            status,
            attempts: attempt,
            body: text.chars().take(BODY_SHOWN).collect(),
        };
        match status {
            429 | 503 => Attempt::Retry(error, asked),
            500 | 502 | 504 => Attempt::Retry(error, None),
            _ => Attempt::Failed(error),
        }
    }

    /// A request that got no complete answer: timeouts and connection errors are retried,
    /// a request that could not be built is not.
    fn failed_transfer(&self, e: &reqwest::Error, attempts: u32) -> Attempt {
        if e.is_timeout() {
            return Attempt::Retry(
                LlmError::Timeout {
                    after_ms: u64::try_from(self.config.timeout.as_millis()).unwrap_or(u64::MAX),
                    attempts,
                },
                None,
            );
        }
        let error =
            LlmError::Transport(format!("{} ({attempts} attempt(s))", self.scrub(&chain(e))));
        if e.is_builder() {
            Attempt::Failed(error)
        } else {
            Attempt::Retry(error, None)
        }
    }

    /// Text from outside, with the key cut out should a server echo it.
    fn scrub(&self, text: &str) -> String {
        match &self.config.api_key {
            Some(k) if !k.0.is_empty() => text.replace(&k.0, "[redacted]"),
            _ => text.to_string(),
        }
    }

    fn read(
        &self,
        request_body: Vec<u8>,
        response_body: Vec<u8>,
        latency_ms: u64,
        attempts: u32,
    ) -> Result<ModelAnswer, LlmError> {
        let v: Value = serde_json::from_slice(&response_body).map_err(|e| {
            let start = self.scrub(&String::from_utf8_lossy(&response_body));
            let start: String = start.chars().take(120).collect();
            LlmError::Malformed(format!("the body is not JSON ({e}); it starts {start:?}"))
        })?;
        let model = v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(&self.config.model)
            .to_string();
        let (tool, text, usage) = match self.config.provider {
            Provider::OpenAi => read_openai(&v)?,
            Provider::Anthropic => read_anthropic(&v)?,
        };
        if let Some(t) = &tool
            && !t.input.is_object()
        {
            return Err(LlmError::Malformed(format!(
                "the input of tool call {:?} is not a JSON object",
                t.name
            )));
        }
        Ok(ModelAnswer {
            provider: self.config.provider.as_str().into(),
            model,
            tool,
            text,
            request_body,
            response_body,
            usage,
            latency_ms,
            attempts,
        })
    }
}

/// `choices[0].message.{content, tool_calls[0].function}` and `usage`.
fn read_openai(v: &Value) -> Result<(Option<ToolCall>, String, Usage), LlmError> {
    let msg = v
        .pointer("/choices/0/message")
        .ok_or_else(|| LlmError::Malformed("no choices[0].message".into()))?;
    let text = msg
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let tool = match msg.pointer("/tool_calls/0") {
        None => None,
        Some(call) => {
            let f = call.get("function").ok_or_else(|| {
                LlmError::Malformed("choices[0].message.tool_calls[0] has no function".into())
            })?;
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| LlmError::Malformed("tool_calls[0].function has no name".into()))?;
            let args = f.get("arguments").and_then(Value::as_str).ok_or_else(|| {
                LlmError::Malformed("tool_calls[0].function.arguments is not a string".into())
            })?;
            let input: Value = serde_json::from_str(args).map_err(|e| {
                let cut = v
                    .pointer("/choices/0/finish_reason")
                    .and_then(Value::as_str)
                    == Some("length");
                LlmError::Malformed(format!(
                    "the arguments of tool call {name:?} are not JSON ({e}){}",
                    if cut {
                        ": the answer was cut at max_tokens, raise it"
                    } else {
                        ""
                    }
                ))
            })?;
            Some(ToolCall {
                name: name.to_string(),
                input,
            })
        }
    };
    let usage = Usage {
        input_tokens: v
            .pointer("/usage/prompt_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        output_tokens: v
            .pointer("/usage/completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    };
    Ok((tool, text, usage))
}

/// `content[]` (`text` blocks joined, the first `tool_use`) and `usage`.
fn read_anthropic(v: &Value) -> Result<(Option<ToolCall>, String, Usage), LlmError> {
    let content = v
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| LlmError::Malformed("no content array".into()))?;
    let mut text = String::new();
    let mut tool = None;
    for block in content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") if tool.is_none() => {
                let name = block
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| LlmError::Malformed("a tool_use block has no name".into()))?;
                let input = block.get("input").cloned().ok_or_else(|| {
                    LlmError::Malformed(format!("the tool_use block {name:?} has no input"))
                })?;
                tool = Some(ToolCall {
                    name: name.to_string(),
                    input,
                });
            }
            _ => {}
        }
    }
    let usage = Usage {
        input_tokens: v
            .pointer("/usage/input_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        output_tokens: v
            .pointer("/usage/output_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    };
    Ok((tool, text, usage))
}

/// `Retry-After` in seconds (the HTTP-date form is ignored: the backoff applies).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The wait after failed attempt number `attempt` (from 1): what the server asked for,
/// else `backoff` doubled per earlier retry; never more than `max`.
pub(crate) fn wait(
    backoff: Duration,
    attempt: u32,
    asked: Option<Duration>,
    max: Duration,
) -> Duration {
    let doubled = backoff.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    asked.unwrap_or(doubled).min(max)
}

/// An error with its sources: reqwest's own message alone hides the cause
/// ("error sending request" rather than "connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.ends_with(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_honour_the_server_and_are_capped() {
        let base = Duration::from_millis(500);
        assert_eq!(wait(base, 1, None, MAX_WAIT), Duration::from_millis(500));
        assert_eq!(wait(base, 2, None, MAX_WAIT), Duration::from_secs(1));
        assert_eq!(wait(base, 3, None, MAX_WAIT), Duration::from_secs(2));
        assert_eq!(
            wait(base, 40, None, MAX_WAIT),
            MAX_WAIT,
            "no overflow, capped"
        );
        assert_eq!(
            wait(base, 1, Some(Duration::ZERO), MAX_WAIT),
            Duration::ZERO
        );
        assert_eq!(
            wait(base, 1, Some(Duration::from_secs(3)), MAX_WAIT),
            Duration::from_secs(3)
        );
        assert_eq!(
            wait(base, 1, Some(Duration::from_secs(3600)), MAX_WAIT),
            MAX_WAIT
        );
    }

    #[test]
    fn retry_after_in_seconds_only() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static(" 7 "));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }
}
