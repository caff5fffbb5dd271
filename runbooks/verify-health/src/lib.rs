//! verify-health: check that an HTTP endpoint is healthy.
//!
//! Sends `GET url` up to `attempts` times, 500 ms apart, until one answer has
//! `expect_status` and (when given) a body containing `expect_body_contains`. It fixes
//! nothing: healthy is a no-op, unhealthy is failed, with every attempt in the details.
//! Redirects are not followed (the host never follows them), so expect the status the
//! URL itself answers. GET is read-only, so a dry run checks for real. Response bodies
//! are only searched, never copied into details or logs: they could hold patient data.

use runwarden_sdk::log::Level;
use runwarden_sdk::prelude::*;
use serde::Deserialize;
use serde_json::json;
use std::time::{Duration, Instant};

/// Pause between attempts; it counts against the invocation deadline.
const DELAY: Duration = Duration::from_millis(500);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    url: String,
    #[serde(default = "default_status")]
    expect_status: u16,
    #[serde(default)]
    expect_body_contains: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u32>,
    #[serde(default = "default_attempts")]
    attempts: u32,
}

fn default_status() -> u16 {
    200
}

fn default_attempts() -> u32 {
    3
}

struct VerifyHealth;

impl Runbook for VerifyHealth {
    type Params = Params;

    fn manifest() -> Manifest {
        Manifest::new(
            "verify-health",
            env!("CARGO_PKG_VERSION"),
            "Check that an HTTP endpoint answers the expected status and body, retrying a few times",
        )
        .risk(Risk::Low)
        .capability(Capability::Http("{url}".into()))
        .params_schema(json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["url"],
            "properties": {
                "url": {"type": "string", "pattern": "^https?://[^/?#@\\s]+(/\\S*)?$", "maxLength": 2048,
                        "description": "absolute http(s) URL to GET; its origin must be granted by the host policy"},
                "expect_status": {"type": "integer", "minimum": 100, "maximum": 599, "default": 200,
                                  "description": "HTTP status a healthy endpoint answers"},
                "expect_body_contains": {"type": "string", "minLength": 1, "maxLength": 1024,
                                         "description": "text the response body must contain (the body is read up to the policy's output limit)"},
                "timeout_ms": {"type": "integer", "minimum": 100, "maximum": 60000,
                               "description": "timeout of each attempt in milliseconds (default: what is left of the invocation deadline)"},
                "attempts": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3,
                             "description": "attempts before declaring the endpoint unhealthy, 500 ms apart"}
            }
        }))
    }

    fn run(p: Params) -> Result<Outcome, RunError> {
        let mut tries = Vec::new();
        for attempt in 1..=p.attempts {
            if attempt > 1 {
                std::thread::sleep(DELAY);
            }
            let started = Instant::now();
            let req = http::Request {
                method: "GET".into(),
                url: p.url.clone(),
                headers: vec![http::Header {
                    name: "user-agent".into(),
                    value: "runwarden-verify-health/0.1".into(),
                }],
                body: None,
                timeout_ms: p.timeout_ms,
            };
            let r = http::send(&req);
            let ms = started.elapsed().as_millis() as u64;
            let (healthy, entry) = match r {
                Ok(resp) => {
                    let body = String::from_utf8_lossy(&resp.body);
                    let status_ok = resp.status == p.expect_status;
                    let body_ok = p
                        .expect_body_contains
                        .as_deref()
                        .is_none_or(|needle| body.contains(needle));
                    let e = json!({"attempt": attempt, "status": resp.status, "ms": ms, "body_bytes": resp.body.len(),
                                       "status_ok": status_ok, "body_ok": body_ok, "truncated": resp.truncated});
                    (status_ok && body_ok, e)
                }
                Err(HostError::Denied(m)) => return Err(RunError::Denied(m)),
                Err(e) => (
                    false,
                    json!({"attempt": attempt, "ms": ms, "error": host_error(&e)}),
                ),
            };
            log::log(
                if healthy { Level::Info } else { Level::Warn },
                if healthy { "healthy" } else { "unhealthy" },
                &[
                    ("attempt", &attempt.to_string()),
                    ("result", &entry.to_string()),
                ],
            );
            tries.push(entry);
            if healthy {
                let details = json!({"url": p.url, "expect_status": p.expect_status,
                                     "expect_body_contains": p.expect_body_contains, "attempts": tries});
                return Ok(Outcome::no_op(format!(
                    "{} is healthy: {} on attempt {attempt} of {} ({ms} ms)",
                    p.url, p.expect_status, p.attempts
                ))
                .details(details));
            }
        }
        let last = tries.last().cloned().unwrap_or_default();
        let why = match (last.get("error"), last.get("status")) {
            (Some(e), _) => e.as_str().unwrap_or("error").to_string(),
            (None, Some(s)) if last["status_ok"] == json!(false) => {
                format!("status {s}, expected {}", p.expect_status)
            }
            _ => format!(
                "body does not contain {:?}",
                p.expect_body_contains.as_deref().unwrap_or("")
            ),
        };
        let details = json!({"url": p.url, "expect_status": p.expect_status,
                             "expect_body_contains": p.expect_body_contains, "attempts": tries});
        Ok(Outcome::failed(format!(
            "{} is unhealthy after {} attempt(s): {why}",
            p.url, p.attempts
        ))
        .details(details))
    }
}

fn host_error(e: &HostError) -> String {
    match e {
        HostError::Denied(m) => format!("denied: {m}"),
        HostError::NotFound(m) => format!("not found: {m}"),
        HostError::Timeout(m) => format!("timed out: {m}"),
        HostError::Invalid(m) => format!("invalid: {m}"),
        HostError::Failed(m) => m.clone(),
    }
}

runwarden_sdk::export_runbook!(VerifyHealth);
