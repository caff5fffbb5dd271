//! `runwarden mcp`: the MCP server over stdio, for clients that start their servers as
//! programs. It relays each JSON-RPC line from stdin to the running service's `/mcp`
//! (with this token) and writes each answer to stdout as one line, so a stdio client
//! meets exactly the same tools, guardrails, approvals and evidence as an HTTP one.
//! Diagnostics go to stderr; stdout carries only protocol messages.

use crate::incident::{Client, ServerArgs};
use anyhow::Context;
use serde_json::{Value, json};
use std::path::Path;
use std::process::ExitCode;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Largest message accepted from stdin (the server's own limit applies too).
const MAX_LINE: usize = 1 << 20;

/// Relay stdin to the server's `/mcp` until stdin ends.
pub fn run(server: &ServerArgs, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let client = Client::new(server, data_dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(relay(client))
}

async fn relay(client: Client) -> anyhow::Result<ExitCode> {
    let url = format!("{}/mcp", client.base);
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut stdout = tokio::io::stdout();
    let mut session: Option<String> = None;
    let mut version: Option<String> = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut stdin)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
            .context("reading stdin")?;
        if n == 0 {
            break;
        }
        if line.len() > MAX_LINE && !line.ends_with(b"\n") {
            errln!("runwarden mcp: a message longer than {MAX_LINE} bytes was dropped");
            // Skip the rest of the line.
            let mut rest = Vec::new();
            stdin.read_until(b'\n', &mut rest).await.ok();
            let answer = error(&Value::Null, -32600, "the message is too long");
            write_line(&mut stdout, &answer).await?;
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let message = serde_json::from_str::<Value>(text).ok();
        let id = message
            .as_ref()
            .and_then(|v| v.get("id").cloned())
            .unwrap_or(Value::Null);
        // The stateless revision names itself in each message: its routing headers
        // come from the message, and it has no session.
        let modern = message.as_ref().and_then(|m| {
            let v = m["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"].as_str()?;
            Some((
                v.to_string(),
                m["method"].as_str().unwrap_or("").to_string(),
                m["params"]["name"].as_str().map(String::from),
            ))
        });
        let mut req = client
            .http
            .post(&url)
            .bearer_auth(&client.token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(text.to_string());
        match &modern {
            Some((v, method, name)) => {
                req = req
                    .header("mcp-protocol-version", v)
                    .header("mcp-method", method);
                if let Some(n) = name
                    .as_deref()
                    .filter(|n| n.bytes().all(|b| b.is_ascii_graphic()))
                {
                    req = req.header("mcp-name", n);
                }
            }
            None => {
                if let Some(s) = &session {
                    req = req.header("mcp-session-id", s);
                }
                if let Some(v) = &version {
                    req = req.header("mcp-protocol-version", v);
                }
            }
        }
        let answer = match req.send().await {
            Err(e) if e.is_builder() => {
                errln!("runwarden mcp: a message could not be sent: {e}");
                Some(error(
                    &id,
                    -32600,
                    "the message cannot be sent as an HTTP request (a header value from it is not valid)",
                ))
            }
            Err(e) => {
                errln!("runwarden mcp: cannot reach {url}: {e}");
                Some(error(
                    &id,
                    -32603,
                    &format!(
                        "runwarden is not reachable at {}: start `runwarden up`",
                        client.base
                    ),
                ))
            }
            Ok(resp) => {
                let status = resp.status();
                if let Some(s) = resp
                    .headers()
                    .get("mcp-session-id")
                    .and_then(|v| v.to_str().ok())
                {
                    session = Some(s.to_string());
                }
                let body = resp.bytes().await.unwrap_or_default();
                if status == reqwest::StatusCode::ACCEPTED {
                    None
                } else {
                    match serde_json::from_slice::<Value>(&body) {
                        Ok(v) if v.get("jsonrpc").is_some() => {
                            if let Some(p) = v["result"]["protocolVersion"].as_str() {
                                version = Some(p.to_string());
                            }
                            Some(v)
                        }
                        // The API's own error body (401, 403, 413, 429, …).
                        Ok(v) => {
                            let msg = v["error"]["message"]
                                .as_str()
                                .map(String::from)
                                .unwrap_or_else(|| v.to_string());
                            errln!("runwarden mcp: the server answered {status}: {msg}");
                            Some(error(
                                &id,
                                -32001,
                                &format!("runwarden answered {status}: {msg}"),
                            ))
                        }
                        Err(_) => {
                            errln!("runwarden mcp: the server answered {status}");
                            Some(error(&id, -32603, &format!("runwarden answered {status}")))
                        }
                    }
                }
            }
        };
        // Notifications get no answer, whatever the server said.
        let is_request = message
            .as_ref()
            .is_none_or(|v| v.get("id").is_some() || !v.is_object());
        if let Some(a) = answer.filter(|_| is_request) {
            write_line(&mut stdout, &a).await?;
        }
    }
    if let Some(s) = session {
        let _ = client
            .http
            .delete(&url)
            .bearer_auth(&client.token)
            .header("mcp-session-id", s)
            .send()
            .await;
    }
    Ok(ExitCode::SUCCESS)
}

fn error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

async fn write_line(out: &mut tokio::io::Stdout, v: &Value) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec(v).context("encoding an answer")?;
    bytes.push(b'\n');
    out.write_all(&bytes).await.context("writing stdout")?;
    out.flush().await.context("writing stdout")
}
