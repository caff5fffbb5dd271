//! L1 rule sets: YAML in, one rule component out.
//!
//! ```yaml
//! rules:
//!   - id: tmp-full
//!     summary: clear old files from a full /tmp
//!     match:
//!       type: disk-full            # exact incident type
//!       min_severity: medium       # or `severity: high` for an exact level
//!       labels: {mount: /tmp}      # incident labels (values may be globs)
//!       host_labels: {role: "*"}   # the host's inventory labels
//!       service: "php*-fpm.service" # exact or glob
//!       message: "(?i)no space"    # regex over the message
//!     action: {runbook: clear-tmp, params: {dir: /tmp, older_than_hours: 24}}
//!     # or `actions:` — a list, run in order while each heals or finds nothing to do
//!     cooldown: 10m                # per (host, runbook); default: the host's
//!     dry_run: false
//! ```
//!
//! Params may use `{{field}}` placeholders filled from the incident: `id`, `tenant`,
//! `host`, `type`, `severity`, `service`, `message`, `occurred_at`, `labels.KEY`,
//! `host_labels.KEY`. A rule whose params name a field the incident lacks does not match
//! it. Rules are evaluated in file order, then rule order; the first match decides.

mod embed;

pub use embed::{EmbedError, embed, is_bare_engine};

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Version of the compiled rule set the engine reads.
const PROGRAM_VERSION: u32 = 1;
/// Regexes are compiled in the sandbox for every rule set instance: keep them small.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A compile error: which file, which rule, which field, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {}{field}{message}", rule.as_ref().map(|r| format!("rule {r}: ")).unwrap_or_default())]
pub struct CompileError {
    /// The rule set file.
    pub file: String,
    /// The rule's id (or position when it has none).
    pub rule: Option<String>,
    /// The field, with a trailing ": ", or empty.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// What the compiler needs to know about a deployed runbook to check a rule's action.
#[derive(Clone, Debug, Default)]
pub struct RunbookParams {
    /// Params the runbook requires.
    pub required: Vec<String>,
    /// The params it accepts, when it accepts no others (`additionalProperties: false`).
    pub allowed: Option<Vec<String>>,
}

impl RunbookParams {
    /// Read from a params JSON Schema.
    pub fn from_schema(schema: &serde_json::Value) -> RunbookParams {
        let names = |v: Option<&serde_json::Value>| -> Vec<String> {
            v.and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        RunbookParams {
            required: names(schema.get("required")),
            allowed: (schema.get("additionalProperties") == Some(&serde_json::Value::Bool(false)))
                .then(|| {
                    schema
                        .get("properties")
                        .and_then(|p| p.as_object())
                        .map(|p| p.keys().cloned().collect())
                        .unwrap_or_default()
                }),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileYaml {
    rules: Vec<RuleYaml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleYaml {
    id: String,
    #[serde(default)]
    summary: String,
    #[serde(rename = "match")]
    when: MatchYaml,
    action: Option<ActionYaml>,
    actions: Option<Vec<ActionYaml>>,
    #[serde(default)]
    dry_run: bool,
    cooldown: Option<serde_yaml::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MatchYaml {
    #[serde(rename = "type")]
    kind: Option<String>,
    severity: Option<String>,
    min_severity: Option<String>,
    service: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    host_labels: BTreeMap<String, String>,
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionYaml {
    runbook: String,
    #[serde(default)]
    params: Option<serde_json::Value>,
}

/// A compiled rule set, as the engine reads it (see `runbooks/rule-engine`).
#[derive(Serialize, Debug)]
pub struct Program {
    version: u32,
    rules: Vec<CompiledRule>,
}

#[derive(Serialize, Debug)]
struct CompiledRule {
    id: String,
    summary: String,
    kind: Option<String>,
    severity_at_least: Option<u8>,
    severity: Option<u8>,
    service: Option<String>,
    labels: Vec<(String, String)>,
    host_labels: Vec<(String, String)>,
    message: Option<String>,
    actions: Vec<CompiledAction>,
    dry_run: bool,
    cooldown_secs: Option<u32>,
}

#[derive(Serialize, Debug)]
struct CompiledAction {
    runbook: String,
    params: serde_json::Value,
}

impl Program {
    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether it holds no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The bytes embedded into the engine.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a program always serializes")
    }
}

/// Severity names in increasing order.
pub const SEVERITIES: [&str; 5] = ["info", "low", "medium", "high", "critical"];

const FIELDS: [&str; 9] = [
    "id",
    "tenant",
    "host",
    "type",
    "kind",
    "severity",
    "service",
    "message",
    "occurred_at",
];

/// A `match.service` pattern: a unit name in which `*` (any run) and `?` (any one
/// character) are the only wildcards the engine knows. Anything else (`[…]`, `{…}`,
/// spaces) would be compared literally and never match a unit, so it is refused.
fn check_service_glob(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() || pattern.len() > 256 {
        return Err("must be 1 to 256 characters".into());
    }
    if let Some(c) = pattern
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "@._:-\\*?".contains(*c)))
    {
        return Err(format!(
            "{pattern:?} is not a unit name or glob: {c:?} is not allowed \
             (letters, digits, @ . _ : - \\ and the wildcards * and ? only)"
        ));
    }
    Ok(())
}

/// Check every `{{field}}` in the strings of `v`.
fn check_placeholders(v: &serde_json::Value, path: &str) -> Result<(), (String, String)> {
    match v {
        serde_json::Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(start) = rest.find("{{") {
                let after = &rest[start + 2..];
                let end = after.find("}}").ok_or_else(|| {
                    (
                        path.to_string(),
                        format!("unclosed placeholder in {s:?}: write {{{{field}}}}"),
                    )
                })?;
                let name = after[..end].trim();
                let known = FIELDS.contains(&name)
                    || name.strip_prefix("labels.").is_some_and(|k| !k.is_empty())
                    || name
                        .strip_prefix("host_labels.")
                        .is_some_and(|k| !k.is_empty());
                if !known {
                    return Err((
                        path.to_string(),
                        format!(
                            "unknown placeholder {{{{{name}}}}}: use one of {}, labels.KEY, host_labels.KEY",
                            FIELDS.join(", ")
                        ),
                    ));
                }
                rest = &after[end + 2..];
            }
            Ok(())
        }
        serde_json::Value::Array(a) => a
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| check_placeholders(x, &format!("{path}[{i}]"))),
        serde_json::Value::Object(o) => o
            .iter()
            .try_for_each(|(k, x)| check_placeholders(x, &format!("{path}.{k}"))),
        _ => Ok(()),
    }
}

fn severity_rank(name: &str) -> Option<u8> {
    SEVERITIES.iter().position(|s| *s == name).map(|p| p as u8)
}

/// Parse a cooldown: whole seconds, or a number with `s`, `m` or `h`.
fn cooldown_secs(v: &serde_yaml::Value) -> Result<u32, String> {
    let bad = || format!("{v:?} is not a duration: write seconds (300) or 90s, 5m, 1h");
    let secs = match v {
        serde_yaml::Value::Number(n) => n.as_u64().ok_or_else(bad)?,
        serde_yaml::Value::String(s) => {
            let s = s.trim();
            let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
            let n: u64 = num.parse().map_err(|_| bad())?;
            n * match unit.trim() {
                "" | "s" => 1,
                "m" => 60,
                "h" => 3600,
                _ => return Err(bad()),
            }
        }
        _ => return Err(bad()),
    };
    if secs > 7 * 24 * 3600 {
        return Err(format!(
            "{secs} s is longer than a week: that is not a cooldown"
        ));
    }
    Ok(secs as u32)
}

/// Compile YAML rule sets (`(file name, text)`, evaluated in this order) into a
/// [`Program`]. With `catalog`, each action's runbook must be in it and its literal
/// params must fit the runbook's schema (names only: placeholders are filled later).
pub fn compile(
    sources: &[(String, String)],
    catalog: Option<&HashMap<String, RunbookParams>>,
) -> Result<Program, CompileError> {
    let mut rules = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for (file, text) in sources {
        let fail = |rule: Option<&str>, field: &str, message: String| CompileError {
            file: file.clone(),
            rule: rule.map(String::from),
            field: if field.is_empty() {
                String::new()
            } else {
                format!("{field}: ")
            },
            message,
        };
        let parsed: FileYaml = serde_yaml::from_str(text).map_err(|e| {
            fail(
                None,
                "",
                format!("{e} (see the rule format in rules/README.md)"),
            )
        })?;
        if parsed.rules.is_empty() {
            return Err(fail(None, "rules", "no rules: the list is empty".into()));
        }
        for r in parsed.rules {
            let id = r.id.trim().to_string();
            let rid = Some(id.as_str());
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(fail(
                    Some(&r.id),
                    "id",
                    "must be non-empty: letters, digits, '-', '_', '.'".into(),
                ));
            }
            if let Some(other) = seen.insert(id.clone(), file.clone()) {
                return Err(fail(
                    rid,
                    "id",
                    format!("duplicate: rule {id} is also defined in {other}"),
                ));
            }
            let m = &r.when;
            let rank = |field: &str, v: &Option<String>| -> Result<Option<u8>, CompileError> {
                v.as_ref()
                    .map(|s| {
                        severity_rank(s).ok_or_else(|| {
                            fail(
                                rid,
                                field,
                                format!(
                                    "unknown severity {s:?}: use one of {}",
                                    SEVERITIES.join(", ")
                                ),
                            )
                        })
                    })
                    .transpose()
            };
            let severity = rank("match.severity", &m.severity)?;
            let severity_at_least = rank("match.min_severity", &m.min_severity)?;
            if severity.is_some() && severity_at_least.is_some() {
                return Err(fail(
                    rid,
                    "match",
                    "give severity (exact) or min_severity (at least), not both".into(),
                ));
            }
            if m.kind.as_deref().is_some_and(|k| k.trim().is_empty()) {
                return Err(fail(rid, "match.type", "is empty".into()));
            }
            if let Some(svc) = &m.service {
                check_service_glob(svc).map_err(|e| fail(rid, "match.service", e))?;
            }
            if let Some(re) = &m.message {
                regex::RegexBuilder::new(re)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| {
                        fail(
                            rid,
                            "match.message",
                            format!(
                                "bad regex: {}",
                                e.to_string()
                                    .split_whitespace()
                                    .collect::<Vec<_>>()
                                    .join(" ")
                            ),
                        )
                    })?;
            }
            if m.kind.is_none()
                && m.severity.is_none()
                && m.min_severity.is_none()
                && m.service.is_none()
                && m.labels.is_empty()
                && m.host_labels.is_empty()
                && m.message.is_none()
            {
                return Err(fail(
                    rid,
                    "match",
                    "matches every incident: give at least a type".into(),
                ));
            }
            let actions = match (r.action, r.actions) {
                (Some(a), None) => vec![a],
                (None, Some(list)) if !list.is_empty() => list,
                (Some(_), Some(_)) => {
                    return Err(fail(
                        rid,
                        "action",
                        "give action or actions, not both".into(),
                    ));
                }
                _ => return Err(fail(rid, "action", "missing: what should run?".into())),
            };
            let mut compiled = Vec::new();
            for (n, a) in actions.into_iter().enumerate() {
                let field = if compiled.is_empty() && n == 0 {
                    "action".to_string()
                } else {
                    format!("actions[{n}]")
                };
                let params = a.params.unwrap_or_else(|| serde_json::json!({}));
                if !params.is_object() {
                    return Err(fail(
                        rid,
                        &format!("{field}.params"),
                        "must be a mapping".into(),
                    ));
                }
                check_placeholders(&params, &format!("{field}.params"))
                    .map_err(|(path, msg)| fail(rid, &path, msg))?;
                if let Some(catalog) = catalog {
                    let Some(info) = catalog.get(&a.runbook) else {
                        let mut known: Vec<&str> = catalog.keys().map(String::as_str).collect();
                        known.sort();
                        return Err(fail(
                            rid,
                            &format!("{field}.runbook"),
                            format!(
                                "unknown runbook {:?}: deployed are {}",
                                a.runbook,
                                known.join(", ")
                            ),
                        ));
                    };
                    let given: Vec<&String> = params
                        .as_object()
                        .map(|o| o.keys().collect())
                        .unwrap_or_default();
                    for req in &info.required {
                        if !given.contains(&req) {
                            return Err(fail(
                                rid,
                                &format!("{field}.params"),
                                format!("runbook {} requires param {req:?}", a.runbook),
                            ));
                        }
                    }
                    if let Some(allowed) = &info.allowed
                        && let Some(extra) = given.iter().find(|k| !allowed.contains(k))
                    {
                        return Err(fail(
                            rid,
                            &format!("{field}.params.{extra}"),
                            format!(
                                "runbook {} takes no param {extra:?} (it takes {})",
                                a.runbook,
                                allowed.join(", ")
                            ),
                        ));
                    }
                } else if a.runbook.trim().is_empty() {
                    return Err(fail(rid, &format!("{field}.runbook"), "is empty".into()));
                }
                compiled.push(CompiledAction {
                    runbook: a.runbook,
                    params,
                });
            }
            let cooldown_secs = r
                .cooldown
                .as_ref()
                .map(cooldown_secs)
                .transpose()
                .map_err(|e| fail(rid, "cooldown", e))?;
            rules.push(CompiledRule {
                id,
                summary: r.summary,
                kind: m.kind.clone(),
                severity_at_least,
                severity,
                service: m.service.clone(),
                labels: m.labels.clone().into_iter().collect(),
                host_labels: m.host_labels.clone().into_iter().collect(),
                message: m.message.clone(),
                actions: compiled,
                dry_run: r.dry_run,
                cooldown_secs,
            });
        }
    }
    Ok(Program {
        version: PROGRAM_VERSION,
        rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(yaml: &str) -> Result<Program, CompileError> {
        compile(&[("r.yaml".into(), yaml.into())], None)
    }

    #[test]
    fn errors_name_file_rule_and_field() {
        let e = one("rules:\n  - id: a\n    match: {type: x, message: '(unclosed'}\n    action: {runbook: r}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("r.yaml: rule a: match.message: bad regex"),
            "{e}"
        );
        for bad in ["nginx.[s]ervice", "php{7,8}-fpm.service", "a b.service", ""] {
            let e = one(&format!(
                "rules:\n  - id: a\n    match: {{type: x, service: '{bad}'}}\n    action: {{runbook: r}}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(e.contains("rule a: match.service: "), "{bad:?}: {e}");
        }
        let e = one(
            "rules:\n  - id: a\n    match: {type: x, severity: huge}\n    action: {runbook: r}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("rule a: match.severity: unknown severity \"huge\""),
            "{e}"
        );
        let e = one("rules:\n  - id: a\n    match: {type: x}\n    action: {runbook: r, params: {u: '{{nope}}'}}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rule a: action.params.u: unknown placeholder {{nope}}"),
            "{e}"
        );
        let e = one(
            "rules:\n  - id: a\n    match: {type: x, sevrity: high}\n    action: {runbook: r}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("r.yaml: ") && e.contains("unknown field `sevrity`"),
            "{e}"
        );
        let e = one("rules:\n  - id: a\n    match: {type: x}\n    action: {runbook: r}\n    cooldown: soon\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rule a: cooldown: "), "{e}");
        let e = one("rules:\n  - id: a\n    match: {}\n    action: {runbook: r}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("matches every incident"), "{e}");
    }

    #[test]
    fn catalog_checks_runbooks_and_params() {
        let mut catalog = HashMap::new();
        catalog.insert(
            "clear-tmp".to_string(),
            RunbookParams::from_schema(&serde_json::json!({
                "type": "object", "additionalProperties": false, "required": ["dir"],
                "properties": {"dir": {}, "older_than_hours": {}}
            })),
        );
        let src = |action: &str| {
            vec![(
                "r.yaml".to_string(),
                format!("rules:\n  - id: a\n    match: {{type: x}}\n    action: {action}\n"),
            )]
        };
        assert!(
            compile(
                &src("{runbook: clear-tmp, params: {dir: /tmp}}"),
                Some(&catalog)
            )
            .is_ok()
        );
        let e = compile(&src("{runbook: nope}"), Some(&catalog))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("action.runbook: unknown runbook \"nope\": deployed are clear-tmp"),
            "{e}"
        );
        let e = compile(&src("{runbook: clear-tmp}"), Some(&catalog))
            .unwrap_err()
            .to_string();
        assert!(e.contains("requires param \"dir\""), "{e}");
        let e = compile(
            &src("{runbook: clear-tmp, params: {dir: /tmp, x: 1}}"),
            Some(&catalog),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("action.params.x: runbook clear-tmp takes no param \"x\""),
            "{e}"
        );
    }

    #[test]
    fn duplicate_ids_across_files_are_refused() {
        let r = "rules:\n  - id: a\n    match: {type: x}\n    action: {runbook: r}\n";
        let e = compile(
            &[("one.yaml".into(), r.into()), ("two.yaml".into(), r.into())],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("two.yaml: rule a: id: duplicate: rule a is also defined in one.yaml"),
            "{e}"
        );
    }

    #[test]
    fn cooldowns() {
        let y = |v: &str| serde_yaml::from_str::<serde_yaml::Value>(v).unwrap();
        assert_eq!(cooldown_secs(&y("300")), Ok(300));
        assert_eq!(cooldown_secs(&y("5m")), Ok(300));
        assert_eq!(cooldown_secs(&y("1h")), Ok(3600));
        assert!(cooldown_secs(&y("-3")).is_err());
        assert!(cooldown_secs(&y("30d")).is_err());
    }
}
