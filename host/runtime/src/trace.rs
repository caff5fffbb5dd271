//! The trace of one invocation: every host call, allowed or denied, in order.

use crate::redact::Redactor;
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
pub(crate) const MAX_STRING: usize = 1024;
/// Lists and objects longer than this keep their first items in the trace and a count of
/// the rest.
pub(crate) const MAX_ITEMS: usize = 16;
/// Nesting deeper than this is replaced by a marker.
const MAX_DEPTH: usize = 8;
/// Serialized bytes of arguments and results the whole trace keeps; past it, entries keep
/// who called what and whether it was allowed, and their arguments and result are elided.
pub(crate) const MAX_TRACE_BYTES: usize = 1 << 20;

#[derive(Default)]
struct TraceInner {
    entries: Vec<TraceEntry>,
    /// Set once MAX_ENTRIES is reached.
    exhausted: bool,
    /// Serialized bytes of the entries' arguments and results so far.
    bytes: usize,
    /// Secrets revealed so far; scrubbed from the trace, the outcome and the output.
    secrets: Redactor,
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
    /// A call with `args`, bounded right away (see [`bound`]).
    pub fn new(interface: &'static str, function: &'static str, args: serde_json::Value) -> Call {
        Call {
            interface,
            function,
            args: bound(args, 0),
            dry_run: false,
            started: Instant::now(),
        }
    }
}

/// A guest-supplied list of strings as a trace value: at most [`MAX_ITEMS`] items (the
/// last a count of the rest when there are more), each
/// pre-cut, built without copying the rest (a guest can pass 100 000 arguments).
pub(crate) fn strings<S: AsRef<str>>(items: &[S]) -> serde_json::Value {
    // One place is kept for the count, so that [`bound`] leaves the list as it is.
    let keep = if items.len() > MAX_ITEMS {
        MAX_ITEMS - 1
    } else {
        items.len()
    };
    let mut v: Vec<serde_json::Value> = items[..keep]
        .iter()
        .map(|s| serde_json::Value::String(precut(s.as_ref())))
        .collect();
    if items.len() > keep {
        v.push(serde_json::Value::String(format!(
            "…[{} more]",
            items.len() - keep
        )));
    }
    serde_json::Value::Array(v)
}

/// A guest-supplied string as a trace value, pre-cut without copying the rest.
pub(crate) fn text(s: &str) -> serde_json::Value {
    serde_json::Value::String(precut(s))
}

/// Strings are pre-cut generously before redaction (a secret straddling the final cut is
/// then dropped by [`Redactor::redact_and_cut`]); the final cut is [`MAX_STRING`].
fn precut(s: &str) -> String {
    let max = MAX_STRING * 4;
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    // Keep the original length visible for the final marker.
    format!("{}…[{} bytes]", &s[..end], s.len())
}

/// `v` with lists and objects cut to [`MAX_ITEMS`], strings pre-cut, and depth bounded.
fn bound(v: serde_json::Value, depth: usize) -> serde_json::Value {
    use serde_json::Value;
    if depth >= MAX_DEPTH {
        return match v {
            Value::Array(_) | Value::Object(_) => Value::String("…[nested too deep]".into()),
            v => v,
        };
    }
    match v {
        Value::String(s) if s.len() > MAX_STRING * 4 => Value::String(precut(&s)),
        Value::Array(a) => {
            let n = a.len();
            let mut out: Vec<Value> = a
                .into_iter()
                .take(MAX_ITEMS)
                .map(|v| bound(v, depth + 1))
                .collect();
            if n > MAX_ITEMS {
                out.push(Value::String(format!("…[{} more]", n - MAX_ITEMS)));
            }
            Value::Array(out)
        }
        Value::Object(o) => {
            let n = o.len();
            let mut out: serde_json::Map<String, Value> = o
                .into_iter()
                .take(MAX_ITEMS)
                .map(|(k, v)| (precut(&k), bound(v, depth + 1)))
                .collect();
            if n > MAX_ITEMS {
                out.insert(
                    "…".into(),
                    Value::String(format!("[{} more]", n - MAX_ITEMS)),
                );
            }
            Value::Object(out)
        }
        v => v,
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
        let mut args = call.args;
        let mut result = bound(result, 0);
        finish_value(&mut args, &inner.secrets);
        finish_value(&mut result, &inner.secrets);
        let size = args.to_string().len() + result.to_string().len();
        if inner.bytes + size > MAX_TRACE_BYTES {
            let note = serde_json::json!({ "elided": format!("{size} bytes: the trace's limit of {MAX_TRACE_BYTES} bytes was reached") });
            args = note;
            result = serde_json::Value::Null;
        } else {
            inner.bytes += size;
        }
        let entry = TraceEntry {
            seq: inner.entries.len() as u32,
            interface: call.interface,
            function: call.function,
            args,
            result,
            allowed,
            dry_run: call.dry_run,
            duration_us,
        };
        inner.entries.push(entry);
    }

    /// Has the trace reached [`MAX_ENTRIES`]? Host calls then trap.
    pub fn exhausted(&self) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.exhausted || inner.entries.len() >= MAX_ENTRIES
    }

    /// Remember a secret value so it never appears in the trace, the outcome or the
    /// output, in any spelling (see [`crate::redact`]).
    pub fn reveal_secret(&self, name: &str, value: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.secrets.add(name, value);
    }

    /// Scrub revealed secret values out of `text`.
    pub fn redact(&self, text: &str) -> String {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.secrets.redact(text)
    }

    /// Scrub revealed secrets out of `text` and cut it to `max` bytes without leaving a
    /// secret's first bytes at the cut.
    pub fn redact_cut(&self, text: &str, max: usize) -> String {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.secrets.redact_and_cut(text, max)
    }

    /// Scrub revealed secrets out of `text` that was cut short elsewhere (by the output
    /// limit, the deadline or a trap), dropping a secret's first bytes at its end.
    pub fn redact_tail(&self, text: &str) -> String {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.secrets.redact_cut(text)
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

/// Scrub secrets out of a bounded value, then cut its strings to [`MAX_STRING`] without
/// leaving a secret's first bytes at a cut.
fn finish_value(v: &mut serde_json::Value, secrets: &Redactor) {
    match v {
        serde_json::Value::String(s) => *s = secrets.redact_and_cut(s, MAX_STRING),
        serde_json::Value::Array(a) => a.iter_mut().for_each(|v| finish_value(v, secrets)),
        serde_json::Value::Object(o) => {
            *o = std::mem::take(o)
                .into_iter()
                .map(|(k, mut v)| {
                    finish_value(&mut v, secrets);
                    (secrets.redact_and_cut(&k, MAX_STRING), v)
                })
                .collect();
        }
        _ => {}
    }
}

fn redact_value(v: &mut serde_json::Value, secrets: &Redactor) {
    if secrets.is_empty() {
        return;
    }
    match v {
        serde_json::Value::String(s) => *s = secrets.redact(s),
        serde_json::Value::Array(a) => a.iter_mut().for_each(|v| redact_value(v, secrets)),
        serde_json::Value::Object(o) => {
            // Keys are guest-chosen too (log fields, details): scrub them as well.
            *o = std::mem::take(o)
                .into_iter()
                .map(|(k, mut v)| {
                    redact_value(&mut v, secrets);
                    (secrets.redact(&k), v)
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
