//! The L1 rule engine component.
//!
//! `runwarden rules compile` takes this component, appends the compiled rule set (JSON)
//! to its linear memory image as a new data segment, and points [`RUNWARDEN_RULES_SLOT`]
//! at it. The resulting component's bytes — and so its SHA-256 — cover both this
//! evaluation logic and the rules. Built bare (nothing embedded) it holds no rules.
//!
//! The rule set format is internal to runwarden: the host's compiler writes it, this
//! engine reads it, both from the same commit.

use regex::Regex;
use runwarden_sdk::rule::{Action, Decision, Incident, RuleInfo, Rules, Severity};
use serde::Deserialize;
use std::sync::OnceLock;

/// Where the embedded rule set is: a magic the compiler searches for, then its address
/// and length in linear memory (little-endian u32s), both zero in a bare engine.
#[repr(C)]
pub struct Slot {
    magic: [u8; 16],
    ptr: u32,
    len: u32,
}

#[used]
#[unsafe(no_mangle)]
pub static RUNWARDEN_RULES_SLOT: Slot = Slot {
    magic: *b"runwarden-rules1",
    ptr: 0,
    len: 0,
};

/// A compiled rule set.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Program {
    version: u32,
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    id: String,
    summary: String,
    kind: Option<String>,
    severity_at_least: Option<u8>,
    severity: Option<u8>,
    service: Option<String>,
    labels: Vec<(String, String)>,
    host_labels: Vec<(String, String)>,
    message: Option<String>,
    actions: Vec<ActionTemplate>,
    dry_run: bool,
    cooldown_secs: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionTemplate {
    runbook: String,
    params: serde_json::Value,
}

struct Loaded {
    rules: Vec<Rule>,
    /// Each rule's message regex, compiled on its first use in this instance (compiling
    /// all of a large rule set's regexes up front would cost more than evaluating it
    /// for a long time).
    regexes: Vec<OnceLock<Option<Regex>>>,
}

fn embedded() -> &'static [u8] {
    // Read through a volatile load: the compiler must not fold the bare engine's zeros.
    let slot = unsafe { core::ptr::read_volatile(&raw const RUNWARDEN_RULES_SLOT) };
    if slot.len == 0 {
        return &[];
    }
    // SAFETY: the compiler wrote `len` bytes at `ptr` as an active data segment beyond
    // the heap's initial region and raised the memory's minimum to cover them.
    unsafe { core::slice::from_raw_parts(slot.ptr as usize as *const u8, slot.len as usize) }
}

fn loaded() -> &'static Loaded {
    static LOADED: OnceLock<Loaded> = OnceLock::new();
    LOADED.get_or_init(|| {
        let bytes = embedded();
        let program: Program = if bytes.is_empty() {
            Program {
                version: 1,
                rules: Vec::new(),
            }
        } else {
            // The compiler validated this; a failure means the bytes were altered.
            serde_json::from_slice(bytes).expect("embedded rule set is valid")
        };
        assert_eq!(program.version, 1, "rule set format version");
        let regexes = program.rules.iter().map(|_| OnceLock::new()).collect();
        Loaded {
            rules: program.rules,
            regexes,
        }
    })
}

fn rank(s: Severity) -> u8 {
    match s {
        Severity::Info => 0,
        Severity::Low => 1,
        Severity::Medium => 2,
        Severity::High => 3,
        Severity::Critical => 4,
    }
}

fn severity_name(s: Severity) -> &'static str {
    ["info", "low", "medium", "high", "critical"][rank(s) as usize]
}

/// `*` any run of characters, `?` any one character; everything else literal.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn has_all(have: &[(String, String)], want: &[(String, String)]) -> bool {
    want.iter()
        .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && glob(v, hv)))
}

fn matches(r: &Rule, re: &OnceLock<Option<Regex>>, i: &Incident) -> bool {
    r.kind.as_ref().is_none_or(|k| *k == i.kind)
        && r.severity_at_least.is_none_or(|s| rank(i.severity) >= s)
        && r.severity.is_none_or(|s| rank(i.severity) == s)
        && r.service
            .as_ref()
            .is_none_or(|s| i.service.as_ref().is_some_and(|have| glob(s, have)))
        && has_all(&i.labels, &r.labels)
        && has_all(&i.host_labels, &r.host_labels)
        && re
            .get_or_init(|| {
                r.message
                    .as_ref()
                    .map(|m| Regex::new(m).expect("rule regex was validated"))
            })
            .as_ref()
            .is_none_or(|re| re.is_match(&i.message))
}

/// The value of an incident field a template names, or none when the incident lacks it.
fn field<'a>(i: &'a Incident, name: &str) -> Option<&'a str> {
    let lookup = |list: &'a [(String, String)], key: &str| {
        list.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    };
    match name {
        "id" => Some(&i.id),
        "tenant" => Some(&i.tenant),
        "host" => Some(&i.host),
        "type" | "kind" => Some(&i.kind),
        "severity" => Some(severity_name(i.severity)),
        "service" => i.service.as_deref(),
        "message" => Some(&i.message),
        "occurred_at" => Some(&i.occurred_at),
        _ => {
            if let Some(k) = name.strip_prefix("labels.") {
                lookup(&i.labels, k)
            } else if let Some(k) = name.strip_prefix("host_labels.") {
                lookup(&i.host_labels, k)
            } else {
                None
            }
        }
    }
}

/// Fill `{{field}}` placeholders in every string of `v`.
fn fill(v: &serde_json::Value, i: &Incident) -> Option<serde_json::Value> {
    use serde_json::Value;
    Some(match v {
        Value::String(s) => {
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(start) = rest.find("{{") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 2..];
                let end = after.find("}}")?;
                out.push_str(field(i, after[..end].trim())?);
                rest = &after[end + 2..];
            }
            out.push_str(rest);
            Value::String(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| fill(x, i)).collect::<Option<_>>()?),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| Some((k.clone(), fill(x, i)?)))
                .collect::<Option<_>>()?,
        ),
        other => other.clone(),
    })
}

struct Engine;

impl Rules for Engine {
    fn rules() -> Vec<RuleInfo> {
        loaded()
            .rules
            .iter()
            .map(|r| RuleInfo {
                id: r.id.clone(),
                summary: r.summary.clone(),
                runbooks: r.actions.iter().map(|a| a.runbook.clone()).collect(),
            })
            .collect()
    }

    fn evaluate(i: &Incident) -> Option<Decision> {
        let l = loaded();
        l.rules.iter().zip(&l.regexes).find_map(|(r, re)| {
            if !matches(r, re, i) {
                return None;
            }
            // A rule whose params need a field this incident lacks does not match it.
            let actions = r
                .actions
                .iter()
                .map(|a| {
                    Some(Action {
                        runbook: a.runbook.clone(),
                        params: fill(&a.params, i)?.to_string(),
                    })
                })
                .collect::<Option<Vec<_>>>()?;
            Some(Decision {
                rule_id: r.id.clone(),
                actions,
                dry_run: r.dry_run,
                cooldown_secs: r.cooldown_secs,
            })
        })
    }
}

runwarden_sdk::export_rules!(Engine);

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        assert!(glob("php*-fpm.service", "php8.2-fpm.service"));
        assert!(glob("*", ""));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(!glob("nginx.service", "nginx.service2"));
        assert!(glob("*.service", "x.service"));
    }
}
