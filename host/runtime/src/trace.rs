//! The trace of one invocation: every host call, allowed or denied, in order.

use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One host call.
#[derive(Clone, Debug, Serialize)]
pub struct TraceEntry {
    /// Position in the trace, from 0.
    pub seq: u32,
    /// Interface (`services`, `exec`, `http`, `probe`, `secrets`, `log`, `filesystem`, `sockets`).
    pub interface: &'static str,
    /// Function name as in the WIT.
    pub function: &'static str,
    /// Arguments, secret values redacted.
    pub args: serde_json::Value,
    /// What the call returned (or the error), secret values redacted.
    pub result: serde_json::Value,
    /// Whether the grant allowed the call.
    pub allowed: bool,
    /// Whether the call was simulated because the run is a dry run.
    pub dry_run: bool,
    /// How long the call took, in microseconds.
    pub duration_us: u64,
}

/// A shared, append-only trace. Cloning shares it.
#[derive(Clone, Default)]
pub(crate) struct Trace {
    inner: Arc<Mutex<TraceInner>>,
}

/// Entries one invocation may record; the next host call after that traps (`output_limit`).
pub(crate) const MAX_ENTRIES: usize = 10_000;
/// Strings longer than this are cut in the trace (the call itself sees the whole string).
const MAX_STRING: usize = 1024;

#[derive(Default)]
struct TraceInner {
    entries: Vec<TraceEntry>,
    /// Set once MAX_ENTRIES is reached.
    exhausted: bool,
    /// (name, value) of secrets revealed so far; their values are scrubbed from the trace.
    secrets: Vec<(String, String)>,
}

/// A call being traced: created before the work, finished with its result.
pub(crate) struct Call {
    pub interface: &'static str,
    pub function: &'static str,
    pub args: serde_json::Value,
    pub dry_run: bool,
    started: Instant,
}

impl Call {
    pub fn new(interface: &'static str, function: &'static str, args: serde_json::Value) -> Call {
        Call {
            interface,
            function,
            args,
            dry_run: false,
            started: Instant::now(),
        }
    }
}

impl Trace {
    /// Record a finished call.
    pub fn record(&self, call: Call, allowed: bool, result: serde_json::Value) {
        let duration_us = call.started.elapsed().as_micros() as u64;
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.entries.len() >= MAX_ENTRIES {
            inner.exhausted = true;
            return;
        }
        let mut entry = TraceEntry {
            seq: inner.entries.len() as u32,
            interface: call.interface,
            function: call.function,
            args: call.args,
            result,
            allowed,
            dry_run: call.dry_run,
            duration_us,
        };
        redact_value(&mut entry.args, &inner.secrets);
        redact_value(&mut entry.result, &inner.secrets);
        truncate_value(&mut entry.args);
        truncate_value(&mut entry.result);
        inner.entries.push(entry);
    }

    /// Has the trace reached [`MAX_ENTRIES`]? Host calls then trap.
    pub fn exhausted(&self) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.exhausted || inner.entries.len() >= MAX_ENTRIES
    }

    /// Remember a secret value so it never appears in the trace or the outcome.
    ///
    /// Common encodings of the value (base64, percent-encoding) are scrubbed too, since a
    /// runbook may pass a secret on as a Basic-auth header or in a URL.
    pub fn reveal_secret(&self, name: &str, value: &str) {
        use base64::Engine;
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut forms = vec![
            value.to_string(),
            base64::engine::general_purpose::STANDARD.encode(value),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value),
            percent_encode(value),
        ];
        forms.dedup();
        for form in forms {
            if !inner.secrets.iter().any(|(_, v)| *v == form) {
                inner.secrets.push((name.to_string(), form));
            }
        }
    }

    /// Scrub revealed secret values out of `text`.
    pub fn redact(&self, text: &str) -> String {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        redact_str(text, &inner.secrets)
    }

    /// Scrub revealed secret values out of every string and key of `v`.
    pub fn redact_json(&self, v: &mut serde_json::Value) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        redact_value(v, &inner.secrets);
    }

    /// How many calls have been recorded.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .len()
    }

    /// The entries so far.
    pub fn entries(&self) -> Vec<TraceEntry> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .clone()
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Cut long strings so a guest cannot grow the trace (host memory) with huge arguments.
fn truncate_value(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) if s.len() > MAX_STRING => {
            let mut end = MAX_STRING;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            *s = format!("{}…[{} bytes]", &s[..end], s.len());
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(truncate_value),
        serde_json::Value::Object(o) => o.values_mut().for_each(truncate_value),
        _ => {}
    }
}

fn redact_str(text: &str, secrets: &[(String, String)]) -> String {
    let mut out = text.to_string();
    for (name, value) in secrets {
        // Very short values would scrub unrelated text; policy authors are told to use real secrets.
        if value.len() >= 3 && out.contains(value.as_str()) {
            out = out.replace(value.as_str(), &format!("[secret:{name}]"));
        }
    }
    out
}

fn redact_value(v: &mut serde_json::Value, secrets: &[(String, String)]) {
    if secrets.is_empty() {
        return;
    }
    match v {
        serde_json::Value::String(s) => *s = redact_str(s, secrets),
        serde_json::Value::Array(a) => a.iter_mut().for_each(|v| redact_value(v, secrets)),
        serde_json::Value::Object(o) => {
            // Keys are guest-chosen too (log fields, details): scrub them as well.
            *o = std::mem::take(o)
                .into_iter()
                .map(|(k, mut v)| {
                    redact_value(&mut v, secrets);
                    (redact_str(&k, secrets), v)
                })
                .collect();
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trace_is_bounded() {
        let t = Trace::default();
        t.record(
            Call::new("log", "log", serde_json::json!({"m": "x".repeat(1 << 20)})),
            true,
            serde_json::Value::Null,
        );
        assert!(t.entries()[0].args["m"].as_str().unwrap().len() < 2048);
        for _ in 1..MAX_ENTRIES {
            assert!(!t.exhausted());
            t.record(
                Call::new("log", "log", serde_json::json!({})),
                true,
                serde_json::Value::Null,
            );
        }
        assert!(t.exhausted());
        t.record(
            Call::new("log", "log", serde_json::json!({})),
            true,
            serde_json::Value::Null,
        );
        assert_eq!(t.len(), MAX_ENTRIES);
    }

    #[test]
    fn secret_values_are_scrubbed_everywhere() {
        let t = Trace::default();
        t.reveal_secret("db", "hunter22");
        t.record(
            Call::new(
                "exec",
                "run",
                serde_json::json!({"args": ["--password=hunter22"]}),
            ),
            true,
            serde_json::json!("ok hunter22"),
        );
        let e = &t.entries()[0];
        let text = serde_json::to_string(e).unwrap();
        assert!(!text.contains("hunter22"), "{text}");
        assert!(text.contains("[secret:db]"));
        assert_eq!(t.redact("x hunter22 y"), "x [secret:db] y");
        assert_eq!(t.redact("Basic aHVudGVyMjI="), "Basic [secret:db]");
        let mut v = serde_json::json!({"hunter22": ["a hunter22"], "k": {"n": "hunter22"}});
        t.redact_json(&mut v);
        assert!(!v.to_string().contains("hunter22"), "{v}");
    }
}
