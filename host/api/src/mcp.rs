//! The MCP server: this host's runbook catalog as tools, over streamable HTTP at `/mcp`.
//!
//! Two protocol eras, told apart by the `MCP-Protocol-Version` header:
//! - 2025-11-25 (and the 2025-06-18 and 2025-03-26 handshakes): `initialize` starts a
//!   session (`Mcp-Session-Id`) that belongs to the token that started it and ends with
//!   DELETE or after an hour idle;
//! - 2026-07-28: stateless; every request carries its revision and the client's
//!   capabilities in `params._meta` (matching the routing headers), `server/discover`
//!   says what the server speaks, and results say `resultType` (and how long a tool list
//!   may be cached).
//!
//! Each POST carries one JSON-RPC message; requests are answered with one JSON body.
//! Every request needs a bearer token (`read` lists, `operate` calls), and a browser's
//! `Origin` must be one the operator allowed (DNS-rebinding defence).
//!
//! `tools/call` is [`Controller::agent_request`]: the same guardrails, approvals and
//! evidence as any incident. A tool's annotations say what it may do to the host.

use runwarden_control::{AgentRequest, AgentTool, Caller, Controller, IncidentRecord};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Handshake-era revisions this server speaks, newest first.
pub(crate) const PROTOCOL_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];
/// Stateless revisions this server speaks.
pub(crate) const MODERN_VERSIONS: &[&str] = &["2026-07-28"];

/// The routing headers of the stateless revision.
pub(crate) const METHOD_HEADER: &str = "mcp-method";
pub(crate) const NAME_HEADER: &str = "mcp-name";

const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CLIENT: &str = "io.modelcontextprotocol/clientInfo";
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
const META_SERVER: &str = "io.modelcontextprotocol/serverInfo";

/// What the request's headers say.
#[derive(Default)]
pub(crate) struct Headers {
    /// `Mcp-Session-Id`.
    pub session: Option<String>,
    /// `MCP-Protocol-Version`.
    pub version: Option<String>,
    /// `Mcp-Method`.
    pub method: Option<String>,
    /// `Mcp-Name`, decoded.
    pub name: Option<String>,
    /// A routing header appears more than once.
    pub repeated: bool,
}

/// Decode an `Mcp-Name` value: as is, or `=?base64?…?=` for names that are not plain
/// printable ASCII.
pub(crate) fn decode_header(v: &str) -> Option<String> {
    use base64::Engine;
    match v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        None => Some(v.to_string()),
    }
}

/// The header naming a session.
pub(crate) const SESSION_HEADER: &str = "mcp-session-id";
/// The header naming the revision in use.
pub(crate) const VERSION_HEADER: &str = "mcp-protocol-version";

/// Live sessions in all, and per token: a token that opens more loses its own oldest,
/// never another's.
const MAX_SESSIONS: usize = 4096;
const MAX_SESSIONS_PER_TOKEN: usize = 64;
const IDLE: Duration = Duration::from_secs(3600);

// JSON-RPC error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const INTERNAL_ERROR: i64 = -32603;
/// 2026-07-28: the routing headers and the body disagree.
const HEADER_MISMATCH: i64 = -32020;
/// 2026-07-28: a revision this server does not speak.
const UNSUPPORTED_VERSION: i64 = -32022;
/// Not a JSON-RPC code of its own: a session the server does not know (HTTP 404).
const SESSION_UNKNOWN: i64 = -32001;

struct Session {
    token_id: String,
    client: String,
    last_used: Instant,
}

/// Live sessions, by id.
#[derive(Default)]
pub(crate) struct Sessions(Mutex<HashMap<String, Session>>);

impl Sessions {
    /// A new session for `token_id`, or `None` when the server holds all it can.
    fn start(&self, token_id: &str, client: String) -> Option<String> {
        let id = runwarden_control::evidence::uuid_v4().replace('-', "");
        let now = Instant::now();
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| now.duration_since(s.last_used) < IDLE);
        let own = map.values().filter(|s| s.token_id == token_id).count();
        if own >= MAX_SESSIONS_PER_TOKEN
            && let Some(oldest) = map
                .iter()
                .filter(|(_, s)| s.token_id == token_id)
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        } else if map.len() >= MAX_SESSIONS {
            return None;
        }
        map.insert(
            id.clone(),
            Session {
                token_id: token_id.to_string(),
                client,
                last_used: now,
            },
        );
        Some(id)
    }

    /// The client of session `id`, if it is live and `caller`'s.
    fn touch(&self, id: &str, caller: &Caller) -> Option<String> {
        let now = Instant::now();
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let s = map.get_mut(id)?;
        if s.token_id != caller.token_id || now.duration_since(s.last_used) >= IDLE {
            return None;
        }
        s.last_used = now;
        Some(s.client.clone())
    }

    /// End session `id` if it is `caller`'s; whether it was.
    pub(crate) fn end(&self, id: &str, caller: &Caller) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(id) {
            Some(s) if s.token_id == caller.token_id => {
                map.remove(id);
                true
            }
            _ => false,
        }
    }
}

/// What to send back for one message.
pub(crate) struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The JSON-RPC response; `None` for a notification or a response (202).
    pub body: Option<Value>,
    /// A session started by `initialize`.
    pub session: Option<String>,
}

impl Reply {
    fn ok(id: &Value, result: Value) -> Reply {
        Reply {
            status: 200,
            body: Some(json!({"jsonrpc": "2.0", "id": id, "result": result})),
            session: None,
        }
    }

    pub(crate) fn error(status: u16, id: &Value, code: i64, message: impl Into<String>) -> Reply {
        Reply {
            status,
            body: Some(json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": {"code": code, "message": message.into()}
            })),
            session: None,
        }
    }

    fn accepted() -> Reply {
        Reply {
            status: 202,
            body: None,
            session: None,
        }
    }
}

/// Whether a browser page at `origin` may call: only origins the operator listed.
/// Requests without an `Origin` (not from a browser) pass this check.
pub(crate) fn origin_allowed(origin: Option<&str>, allowed: &[String]) -> bool {
    match origin {
        None => true,
        Some(o) => allowed.iter().any(|a| {
            a.trim_end_matches('/')
                .eq_ignore_ascii_case(o.trim_end_matches('/'))
        }),
    }
}

/// Handle one POSTed message from `caller`. `session` and `version` are the request's
/// `Mcp-Session-Id` and `MCP-Protocol-Version` headers.
pub(crate) async fn handle(
    controller: &Controller,
    sessions: &Sessions,
    caller: &Caller,
    headers: &Headers,
    raw: &[u8],
) -> Reply {
    let (session, version) = (headers.session.as_deref(), headers.version.as_deref());
    let msg: Value = match serde_json::from_slice(raw) {
        Ok(v) => v,
        Err(e) => {
            return Reply::error(
                400,
                &Value::Null,
                PARSE_ERROR,
                format!("the body is not JSON ({e}): send one JSON-RPC 2.0 message"),
            );
        }
    };
    let Some(obj) = msg.as_object() else {
        let what = if msg.is_array() {
            "batches are not part of MCP since 2025-06-18: send one message per request"
        } else {
            "send one JSON-RPC 2.0 message (an object)"
        };
        return Reply::error(400, &Value::Null, INVALID_REQUEST, what);
    };
    let id = obj.get("id").cloned().unwrap_or(Value::Null);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Reply::error(400, &id, INVALID_REQUEST, "\"jsonrpc\" must be \"2.0\"");
    }
    let Some(method) = obj.get("method").and_then(Value::as_str) else {
        // A response to a request of ours (we send none) or a malformed message.
        if obj.contains_key("result") || obj.contains_key("error") {
            return Reply::accepted();
        }
        return Reply::error(400, &id, INVALID_REQUEST, "a request needs a \"method\"");
    };
    if !obj.contains_key("id") {
        // Notifications (initialized, cancelled, …) need no answer.
        return Reply::accepted();
    }
    if !(id.is_string() || id.is_i64() || id.is_u64()) {
        return Reply::error(
            400,
            &Value::Null,
            INVALID_REQUEST,
            "a request's \"id\" must be a string or an integer",
        );
    }
    let params = obj.get("params").cloned().unwrap_or_else(|| json!({}));
    // A revision header that is not a handshake one: the stateless era.
    if let Some(v) = version
        && !PROTOCOL_VERSIONS.contains(&v)
    {
        return modern(controller, caller, headers, v, &id, method, &params, raw).await;
    }
    if method == "initialize" {
        return initialize(sessions, caller, &id, &params);
    }
    if !matches!(method, "ping" | "tools/list" | "tools/call") {
        return Reply::error(
            200,
            &id,
            METHOD_NOT_FOUND,
            format!(
                "method {method:?} is not served: this server offers ping, tools/list and tools/call"
            ),
        );
    }
    let Some(session) = session else {
        return Reply::error(
            400,
            &id,
            INVALID_REQUEST,
            "no Mcp-Session-Id header: send initialize first and then the session id it returned",
        );
    };
    let Some(client) = sessions.touch(session, caller) else {
        return Reply::error(
            404,
            &id,
            SESSION_UNKNOWN,
            "this session is unknown, expired or another token's: initialize a new one",
        );
    };
    match method {
        "ping" => Reply::ok(&id, json!({})),
        "tools/list" => list(controller, caller, &id).await,
        _ => call(controller, caller, &client, &id, &params, raw).await,
    }
}

async fn list(controller: &Controller, caller: &Caller, id: &Value) -> Reply {
    match controller.agent_tools(&caller.tenant).await {
        Ok(tools) => Reply::ok(
            id,
            json!({"tools": tools.iter().map(tool_json).collect::<Vec<_>>()}),
        ),
        Err(e) => internal(id, &e),
    }
}

fn server_info() -> Value {
    json!({
        "name": "runwarden",
        "title": "runwarden remediation runbooks",
        "version": env!("CARGO_PKG_VERSION"),
    })
}

const INSTRUCTIONS: &str = "Each tool runs one remediation runbook on this host. Pass \
    {\"params\": {...}, \"reason\": \"why\"}. Every call passes runwarden's guardrails \
    (cooldown, repeat, circuit breaker, risk) and is signed into the evidence log; \
    high-risk runbooks wait for a human's approval, and the result says so. dry_run: true \
    only reports what would be done.";

/// A request of the stateless revision (2026-07-28): checked against its routing
/// headers and its `_meta`, then served without a session.
#[allow(clippy::too_many_arguments)]
async fn modern(
    controller: &Controller,
    caller: &Caller,
    headers: &Headers,
    version: &str,
    id: &Value,
    method: &str,
    params: &Value,
    raw: &[u8],
) -> Reply {
    if headers.repeated {
        return Reply::error(
            400,
            id,
            HEADER_MISMATCH,
            "a routing header (MCP-Protocol-Version, Mcp-Method, Mcp-Name) is repeated",
        );
    }
    // An unknown revision first: a client of another era learns what to speak.
    if !MODERN_VERSIONS.contains(&version) {
        let supported: Vec<&str> = MODERN_VERSIONS
            .iter()
            .chain(PROTOCOL_VERSIONS)
            .copied()
            .collect();
        let mut reply = Reply::error(
            400,
            id,
            UNSUPPORTED_VERSION,
            format!(
                "protocol version {version:?} is not supported: use one of {}",
                supported.join(", ")
            ),
        );
        if let Some(b) = reply.body.as_mut() {
            b["error"]["data"] = json!({"supported": supported, "requested": version});
        }
        return reply;
    }
    let meta = params.get("_meta").and_then(Value::as_object);
    let Some(meta) = meta.filter(|m| {
        m.get(META_VERSION).is_some_and(Value::is_string)
            && m.get(META_CAPABILITIES).is_some_and(Value::is_object)
    }) else {
        return Reply::error(
            400,
            id,
            INVALID_PARAMS,
            format!(
                "a {version} request carries params._meta with {META_VERSION:?} (a string) and \
                 {META_CAPABILITIES:?} (an object)"
            ),
        );
    };
    let in_body = meta[META_VERSION].as_str().unwrap_or("");
    let name_mismatch = method == "tools/call"
        && headers
            .name
            .as_deref()
            .is_some_and(|n| Some(n) != params.get("name").and_then(Value::as_str));
    if in_body != version || headers.method.as_deref().is_some_and(|m| m != method) || name_mismatch
    {
        return Reply::error(
            400,
            id,
            HEADER_MISMATCH,
            "the MCP-Protocol-Version, Mcp-Method and Mcp-Name headers must match the body",
        );
    }
    let reply = match method {
        "server/discover" => Reply::ok(
            id,
            json!({
                "supportedVersions": MODERN_VERSIONS.iter().chain(PROTOCOL_VERSIONS).collect::<Vec<_>>(),
                "capabilities": {"tools": {"listChanged": false}},
                "instructions": INSTRUCTIONS,
                "ttlMs": 0,
                "cacheScope": "private",
            }),
        ),
        // The catalog depends on the token's tenant and on recent runs: not cached.
        "tools/list" => {
            let mut r = list(controller, caller, id).await;
            if let Some(result) = r.body.as_mut().and_then(|b| b.get_mut("result")) {
                result["ttlMs"] = json!(0);
                result["cacheScope"] = json!("private");
            }
            r
        }
        "tools/call" => {
            let client = client_name(meta.get(META_CLIENT));
            call(controller, caller, &client, id, params, raw).await
        }
        other => {
            return Reply::error(
                404,
                id,
                METHOD_NOT_FOUND,
                format!(
                    "method {other:?} is not served: this server offers server/discover, tools/list and tools/call"
                ),
            );
        }
    };
    complete(reply)
}

/// A stateless-revision result: `resultType` and the server's identity.
fn complete(mut reply: Reply) -> Reply {
    if let Some(result) = reply
        .body
        .as_mut()
        .and_then(|b| b.get_mut("result"))
        .and_then(Value::as_object_mut)
    {
        result.insert("resultType".into(), json!("complete"));
        result.insert("_meta".into(), json!({META_SERVER: server_info()}));
    }
    reply
}

/// `name/version` from a client's `Implementation`, cleaned of control characters.
fn client_name(info: Option<&Value>) -> String {
    let field = |k: &str| {
        info.and_then(|i| i.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_control())
            .take(100)
            .collect::<String>()
    };
    let (name, ver) = (field("name"), field("version"));
    match (name.is_empty(), ver.is_empty()) {
        (true, _) => "unnamed-client".to_string(),
        (false, true) => name,
        (false, false) => format!("{name}/{ver}"),
    }
}

fn internal(id: &Value, e: &dyn std::fmt::Display) -> Reply {
    eprintln!("runwarden-api: mcp: {e}");
    Reply::error(
        500,
        id,
        INTERNAL_ERROR,
        "internal error: it was logged on the server; retry later or tell the operator",
    )
}

fn initialize(sessions: &Sessions, caller: &Caller, id: &Value, params: &Value) -> Reply {
    let Some(requested) = params.get("protocolVersion").and_then(Value::as_str) else {
        return Reply::error(
            200,
            id,
            INVALID_PARAMS,
            "initialize needs params.protocolVersion",
        );
    };
    // The client's revision if we speak it, else our newest (the client decides).
    let version = PROTOCOL_VERSIONS
        .iter()
        .find(|v| **v == requested)
        .unwrap_or(&PROTOCOL_VERSIONS[0]);
    let client = client_name(params.get("clientInfo"));
    let Some(session) = sessions.start(&caller.token_id, client) else {
        return Reply::error(
            503,
            id,
            INTERNAL_ERROR,
            "this server holds as many MCP sessions as it can: retry later",
        );
    };
    let mut reply = Reply::ok(
        id,
        json!({
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": server_info(),
            "instructions": INSTRUCTIONS,
        }),
    );
    reply.session = Some(session);
    reply
}

/// A runbook as an MCP tool.
fn tool_json(t: &AgentTool) -> Value {
    let mut description = format!("{} (risk {}", t.summary, t.risk);
    if t.needs_approval {
        description.push_str("; high-risk: it may wait for a human's approval");
    }
    if t.failing_here {
        description.push_str("; its last run on this host failed");
    }
    description.push(')');
    json!({
        "name": t.name,
        "title": t.name,
        "description": description,
        "inputSchema": {
            "type": "object",
            "properties": {
                "params": t.params_schema,
                "reason": {
                    "type": "string",
                    "description": "Why it should run: recorded in the signed evidence.",
                    "minLength": 1,
                    "maxLength": runwarden_control::MAX_REASON,
                },
                "dry_run": {
                    "type": "boolean",
                    "default": false,
                    "description": "Only report what would be done.",
                },
                "severity": {
                    "type": "string",
                    "enum": ["critical", "high", "medium", "low", "info"],
                    "default": "medium",
                    "description": "How urgent: sets the deadline if a human must decide.",
                },
            },
            "required": ["reason"],
            "additionalProperties": false,
        },
        "annotations": {
            "title": t.name,
            "readOnlyHint": t.read_only,
            "destructiveHint": t.destructive,
            "idempotentHint": false,
            "openWorldHint": t.open_world,
        },
    })
}

/// A tool result that tells the model what was wrong.
fn tool_error(id: &Value, message: String) -> Reply {
    Reply::ok(
        id,
        json!({"content": [{"type": "text", "text": message}], "isError": true}),
    )
}

async fn call(
    controller: &Controller,
    caller: &Caller,
    client: &str,
    id: &Value,
    params: &Value,
    raw: &[u8],
) -> Reply {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Reply::error(200, id, INVALID_PARAMS, "tools/call needs params.name");
    };
    let args = params
        .get("arguments")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let Some(args) = args.as_object() else {
        return tool_error(
            id,
            "arguments must be an object: {\"params\": {...}, \"reason\": \"...\"}".into(),
        );
    };
    if let Some(k) = args
        .keys()
        .find(|k| !matches!(k.as_str(), "params" | "reason" | "dry_run" | "severity"))
    {
        return tool_error(
            id,
            format!(
                "unknown argument {k:?}: a tool takes params, reason, dry_run and severity (the runbook's own params go inside \"params\")"
            ),
        );
    }
    let reason = match args.get("reason") {
        Some(Value::String(s)) => s.clone(),
        _ => {
            return tool_error(
                id,
                "argument \"reason\" is missing or not a string: say why the runbook should run"
                    .into(),
            );
        }
    };
    let runbook_params = args.get("params").cloned().unwrap_or_else(|| json!({}));
    let dry_run = match args.get("dry_run") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return tool_error(id, "argument \"dry_run\" must be true or false".into()),
    };
    let severity = match args.get("severity") {
        None => runwarden_control::Severity::Medium,
        Some(v) => match serde_json::from_value(v.clone()) {
            Ok(s) => s,
            Err(_) => {
                return tool_error(
                    id,
                    "argument \"severity\" must be one of critical, high, medium, low, info".into(),
                );
            }
        },
    };
    let req = AgentRequest {
        runbook: name.to_string(),
        params: runbook_params,
        reason,
        dry_run,
        severity,
        client: client.to_string(),
        request_sha256: hex(&Sha256::digest(raw)),
    };
    match controller.agent_request(caller, req).await {
        Ok(rec) => Reply::ok(id, outcome(&rec)),
        Err(runwarden_control::ControlError::NotFound(m)) => {
            Reply::error(200, id, INVALID_PARAMS, format!("unknown tool: {m}"))
        }
        Err(runwarden_control::ControlError::Invalid(e)) => {
            tool_error(id, format!("{}: {}", e.field, e.message))
        }
        Err(e @ runwarden_control::ControlError::ShuttingDown) => tool_error(id, e.to_string()),
        Err(e) => internal(id, &e),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The result of a call: what happened, in words and as data.
fn outcome(rec: &IncidentRecord) -> Value {
    let runbook = rec
        .decision
        .as_ref()
        .and_then(|d| d.actions.first())
        .map_or("", |a| a.runbook.as_str());
    use runwarden_control::IncidentStatus as St;
    let text = match rec.status {
        St::Healed | St::NoOp => format!("{runbook} ran: {} ({}).", rec.reason, rec.status),
        St::Failed => format!("{runbook} failed: {}", rec.reason),
        St::AwaitingApproval => format!(
            "{runbook} waits for a human's approval: {}. Escalation {} — a person approves or denies it; do not retry.",
            rec.reason,
            rec.escalation.as_deref().unwrap_or("")
        ),
        St::Escalated => format!(
            "{runbook} did not run: {}. It went to a human as escalation {}.",
            rec.reason,
            rec.escalation.as_deref().unwrap_or("")
        ),
        St::Suppressed => format!("{runbook} did not run: {}", rec.reason),
        St::HandedUp => format!(
            "Not finished on this host: {}. The control plane decides it; do not retry.",
            rec.reason
        ),
        St::Processing => format!("{runbook}: {}: {}", rec.status, rec.reason),
    };
    let text = format!(
        "{text}\nIncident {} · evidence records {:?}",
        rec.id, rec.evidence
    );
    json!({
        "content": [{"type": "text", "text": text}],
        "structuredContent": {
            "incident_id": rec.id,
            "status": rec.status,
            "tier": rec.tier,
            "reason": rec.reason,
            "escalation": rec.escalation,
            "guardrails": rec.guardrails,
            "runs": rec.runs,
            "evidence": rec.evidence,
        },
        "isError": matches!(rec.status, St::Failed | St::Escalated),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_origins_pass_and_clients_without_one_do() {
        let allowed = vec!["http://127.0.0.1:8640".to_string()];
        assert!(origin_allowed(None, &allowed));
        assert!(origin_allowed(Some("http://127.0.0.1:8640"), &allowed));
        assert!(!origin_allowed(Some("http://evil.example"), &allowed));
        assert!(!origin_allowed(Some("http://127.0.0.1:8640"), &[]));
    }
}
