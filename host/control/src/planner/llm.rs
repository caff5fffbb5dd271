//! Model clients: OpenAI-compatible chat completions with `tools` (OpenAI, vLLM,
//! llama.cpp server, Ollama) and Anthropic Messages with `tool_use`. One request per
//! attempt with a timeout; 429, 5xx, timeouts and connection errors are retried with
//! doubling backoff (honouring `Retry-After`, capped); the key is never logged or echoed.

use super::{ModelAnswer, PlanRequest, ToolCall, Usage};
use serde_json::{Value, json};
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
    /// `openai` or `anthropic`.
    pub fn parse(s: &str) -> Result<Provider, LlmError> {
        match s {
            "openai" => Ok(Provider::OpenAi),
            "anthropic" => Ok(Provider::Anthropic),
            other => Err(LlmError::Config(format!(
                "unknown provider {other:?}: use \"openai\" (any OpenAI-compatible server) or \"anthropic\""
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
}

/// An API key: shown as `[redacted]` everywhere.
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

/// How to reach the model.
#[derive(Clone, Debug)]
pub struct LlmConfig {
    /// Wire format.
    pub provider: Provider,
    /// Base URL: `…/v1` for OpenAI-compatible servers (we POST `{url}/chat/completions`),
    /// `https://api.anthropic.com` for Anthropic (we POST `{url}/v1/messages`).
    pub url: String,
    /// Model name.
    pub model: String,
    /// API key, if the server needs one.
    pub api_key: Option<ApiKey>,
    /// Per attempt.
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

impl LlmConfig {
    /// From `RUNWARDEN_LLM_PROVIDER`, `RUNWARDEN_LLM_URL` (default per provider),
    /// `RUNWARDEN_LLM_MODEL` (required with a provider), and the key from
    /// `RUNWARDEN_LLM_API_KEY`, else `OPENAI_API_KEY` / `ANTHROPIC_API_KEY`. `None` when
    /// no provider is set. `get` looks a variable up (the environment, or layered config).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<LlmConfig>, LlmError> {
        let Some(provider) = get("RUNWARDEN_LLM_PROVIDER") else {
            return Ok(None);
        };
        let provider = Provider::parse(provider.trim())?;
        let model = get("RUNWARDEN_LLM_MODEL").ok_or_else(|| {
            LlmError::Config(format!(
                "RUNWARDEN_LLM_PROVIDER is {} but no model is set: set RUNWARDEN_LLM_MODEL (or [llm] model)",
                provider.as_str()
            ))
        })?;
        let url = get("RUNWARDEN_LLM_URL").unwrap_or_else(|| {
            match provider {
                Provider::OpenAi => "https://api.openai.com/v1",
                Provider::Anthropic => "https://api.anthropic.com",
            }
            .into()
        });
        let usual = match provider {
            Provider::OpenAi => "OPENAI_API_KEY",
            Provider::Anthropic => "ANTHROPIC_API_KEY",
        };
        let api_key = get("RUNWARDEN_LLM_API_KEY")
            .or_else(|| get(usual))
            .filter(|k| !k.is_empty())
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

/// Why a completion failed.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// Misconfigured.
    #[error("{0}")]
    Config(String),
    /// No answer in time.
    #[error("no answer within {after_ms} ms ({attempts} attempt(s))")]
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
        /// The start of its body.
        body: String,
    },
    /// The answer is not what the wire format says.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// The connection failed.
    #[error("cannot reach the model server: {0}")]
    Transport(String),
}

/// A client for one configured model.
pub struct LlmClient {
    config: LlmConfig,
    http: reqwest::Client,
    endpoint: String,
}

impl LlmClient {
    /// Make a client (one connection pool, reused).
    pub fn new(config: LlmConfig) -> Result<LlmClient, LlmError> {
        let base = config.url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(LlmError::Config(format!(
                "model URL {base:?} must start with http:// or https://"
            )));
        }
        if config.model.is_empty() {
            return Err(LlmError::Config("the model name is empty".into()));
        }
        let endpoint = match config.provider {
            Provider::OpenAi => format!("{base}/chat/completions"),
            Provider::Anthropic => format!("{base}/v1/messages"),
        };
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| LlmError::Config(format!("HTTP client: {e}")))?;
        Ok(LlmClient {
            config,
            http,
            endpoint,
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
            }),
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
    /// a tool call is not an error (`tool` is `None`): the caller escalates.
    pub async fn complete(&self, req: &PlanRequest) -> Result<ModelAnswer, LlmError> {
        let body = serde_json::to_vec(&self.body(req)).expect("a JSON value serializes");
        let c = &self.config;
        let attempts_max = c.max_attempts.max(1);
        let mut wait = c.backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut rq = self
                .http
                .post(&self.endpoint)
                .header("content-type", "application/json")
                .body(body.clone());
            rq = match (c.provider, &c.api_key) {
                (Provider::OpenAi, Some(k)) => {
                    rq.header("authorization", format!("Bearer {}", k.0))
                }
                (Provider::Anthropic, Some(k)) => rq.header("x-api-key", &k.0),
                (_, None) => rq,
            };
            if c.provider == Provider::Anthropic {
                rq = rq.header("anthropic-version", "2023-06-01");
            }
            let started = Instant::now();
            let retry = match rq.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let bytes = match resp.bytes().await {
                        Ok(b) => b.to_vec(),
                        Err(e) if e.is_timeout() => {
                            if attempt >= attempts_max {
                                return Err(self.timeout(attempt));
                            }
                            self.pause(&mut wait, None).await;
                            continue;
                        }
                        Err(e) => return Err(LlmError::Transport(self.scrub(&e.to_string()))),
                    };
                    if (200..300).contains(&status) {
                        let latency_ms = started.elapsed().as_millis() as u64;
                        return self.read(body, bytes, latency_ms, attempt);
                    }
                    let retriable = matches!(status, 429 | 500 | 502 | 503 | 504);
                    if !retriable || attempt >= attempts_max {
                        let text = String::from_utf8_lossy(&bytes);
                        return Err(LlmError::Status {
                            status,
                            attempts: attempt,
                            body: self.scrub(&super::catalog::cut(&text, 300)),
                        });
                    }
                    after
                }
                Err(e) if e.is_timeout() => {
                    if attempt >= attempts_max {
                        return Err(self.timeout(attempt));
                    }
                    None
                }
                Err(e) => {
                    if attempt >= attempts_max {
                        return Err(LlmError::Transport(self.scrub(&e.to_string())));
                    }
                    None
                }
            };
            self.pause(&mut wait, retry).await;
        }
    }

    async fn pause(&self, wait: &mut Duration, retry_after: Option<Duration>) {
        let d = retry_after.unwrap_or(*wait).min(MAX_WAIT);
        tokio::time::sleep(d).await;
        *wait = (*wait * 2).min(MAX_WAIT);
    }

    fn timeout(&self, attempts: u32) -> LlmError {
        LlmError::Timeout {
            after_ms: self.config.timeout.as_millis() as u64,
            attempts,
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
        let v: Value = serde_json::from_slice(&response_body)
            .map_err(|e| LlmError::Malformed(format!("the body is not JSON: {e}")))?;
        let model = v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(&self.config.model)
            .to_string();
        let (tool, text, usage) = match self.config.provider {
            Provider::OpenAi => {
                let msg = v
                    .pointer("/choices/0/message")
                    .ok_or_else(|| LlmError::Malformed("no choices[0].message".into()))?;
                let text = msg
                    .get("content")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let tool = match msg.pointer("/tool_calls/0/function") {
                    None => None,
                    Some(f) => {
                        let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
                            LlmError::Malformed("tool_calls[0].function has no name".into())
                        })?;
                        let args = f.get("arguments").and_then(Value::as_str).ok_or_else(|| {
                            LlmError::Malformed(
                                "tool_calls[0].function.arguments is not a string".into(),
                            )
                        })?;
                        let input: Value = serde_json::from_str(args).map_err(|e| {
                            LlmError::Malformed(format!("the tool arguments are not JSON: {e}"))
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
                (tool, text, usage)
            }
            Provider::Anthropic => {
                let content = v
                    .get("content")
                    .and_then(Value::as_array)
                    .ok_or_else(|| LlmError::Malformed("no content array".into()))?;
                let mut text = String::new();
                let mut tool = None;
                for block in content {
                    match block.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            text.push_str(block.get("text").and_then(Value::as_str).unwrap_or(""))
                        }
                        Some("tool_use") if tool.is_none() => {
                            let name =
                                block.get("name").and_then(Value::as_str).ok_or_else(|| {
                                    LlmError::Malformed("a tool_use block has no name".into())
                                })?;
                            tool = Some(ToolCall {
                                name: name.to_string(),
                                input: block.get("input").cloned().unwrap_or(Value::Null),
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
                (tool, text, usage)
            }
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
