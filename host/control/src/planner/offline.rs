//! The offline planner, used when no LLM is configured: lexical retrieval over the
//! catalog's manifests and the tenant's past resolved incidents. It proposes a runbook
//! with a confidence like any planner; the pipeline acts only above the threshold.
//!
//! - History: past runs that healed (or found nothing to do) an incident of the same type
//!   and service are the strongest signal; their params are reused. Failures of the same
//!   runbook for the same signature count against it.
//! - Manifests: TF-IDF cosine between the incident's words (type, service, message,
//!   labels) and each runbook's name, summary and param descriptions. Required params are
//!   filled from the incident (a param named like a label or `service`/`unit`, an
//!   absolute path in the message for a path param) or the schema's default; a runbook
//!   whose params cannot be filled is not proposed.

use super::catalog::CatalogEntry;
use crate::incident::Incident;
use crate::store::RunRow;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};

/// What the offline planner proposes.
#[derive(Clone, Debug, PartialEq)]
pub enum Proposal {
    /// Run this runbook.
    Run {
        /// Runbook.
        runbook: String,
        /// Params.
        params: Value,
        /// 0–1.
        confidence: f64,
        /// Why, in one line.
        rationale: String,
    },
    /// Nothing fits.
    Escalate {
        /// Why.
        reason: String,
    },
}

const STOPWORDS: &[&str] = &[
    "the", "is", "are", "was", "on", "in", "of", "to", "and", "or", "for", "a", "an", "at", "by",
    "be", "it", "its", "this", "that", "with", "from", "as", "has", "have", "not", "no", "than",
    "then", "when", "which", "who", "all", "any", "more", "most", "less",
];

/// Lower-case words of two or more characters, without stop words; a trailing plural `s`
/// is dropped from longer words (`logs` → `log`).
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() >= 2)
        .map(|w| {
            let w = w.to_lowercase();
            if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") {
                w[..w.len() - 1].to_string()
            } else {
                w
            }
        })
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .collect()
}

fn incident_words(i: &Incident) -> Vec<String> {
    let mut text = format!(
        "{} {} {}",
        i.kind,
        i.service.as_deref().unwrap_or(""),
        i.message
    );
    for (k, v) in &i.labels {
        text.push(' ');
        text.push_str(k);
        text.push(' ');
        text.push_str(v);
    }
    words(&text)
}

fn runbook_words(e: &CatalogEntry) -> Vec<String> {
    let mut text = format!("{} {}", e.name, e.summary);
    if let Some(props) = e.params_schema.get("properties").and_then(Value::as_object) {
        for (name, p) in props {
            text.push(' ');
            text.push_str(name);
            if let Some(d) = p.get("description").and_then(Value::as_str) {
                text.push(' ');
                text.push_str(d);
            }
        }
    }
    words(&text)
}

/// TF-IDF vectors over a small corpus; cosine similarity.
struct Tfidf {
    idf: HashMap<String, f64>,
}

impl Tfidf {
    fn new(docs: &[Vec<String>]) -> Tfidf {
        let mut df: HashMap<&str, usize> = HashMap::new();
        for d in docs {
            for w in d.iter().map(String::as_str).collect::<HashSet<_>>() {
                *df.entry(w).or_default() += 1;
            }
        }
        let n = docs.len() as f64;
        Tfidf {
            idf: df
                .into_iter()
                .map(|(w, c)| (w.to_string(), (1.0 + n / c as f64).ln()))
                .collect(),
        }
    }

    fn vector(&self, doc: &[String]) -> BTreeMap<String, f64> {
        let mut v = BTreeMap::new();
        for w in doc {
            // Words no runbook uses carry no signal.
            if let Some(idf) = self.idf.get(w) {
                *v.entry(w.clone()).or_insert(0.0) += idf;
            }
        }
        v
    }

    fn cosine(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> f64 {
        let dot: f64 = a.iter().filter_map(|(w, x)| b.get(w).map(|y| x * y)).sum();
        let na = a.values().map(|x| x * x).sum::<f64>().sqrt();
        let nb = b.values().map(|x| x * x).sum::<f64>().sqrt();
        if na == 0.0 || nb == 0.0 {
            0.0
        } else {
            dot / (na * nb)
        }
    }
}

fn ok(status: &str) -> bool {
    matches!(status, "healed" | "no-op")
}

/// Fill `entry`'s params for `incident`: required params from the incident, then schema
/// defaults are left to the runtime. `None` when a required param cannot be filled.
fn fill_params(entry: &CatalogEntry, incident: &Incident) -> Option<Value> {
    let schema = &entry.params_schema;
    let props = schema.get("properties").and_then(Value::as_object);
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut params = Map::new();
    for name in required {
        let prop = props.and_then(|p| p.get(name));
        if prop.and_then(|p| p.get("default")).is_some() {
            continue;
        }
        let kind = prop.and_then(|p| p.get("type")).and_then(Value::as_str);
        let value = if let Some(v) = incident.labels.get(name) {
            Some(Value::String(v.clone()))
        } else if matches!(name, "service" | "unit") {
            incident.service.clone().map(Value::String)
        } else if kind == Some("string")
            && prop
                .and_then(|p| p.get("pattern"))
                .and_then(Value::as_str)
                .is_some_and(|p| p.starts_with("^/"))
        {
            // A path param: the first absolute path in the message.
            incident
                .message
                .split(|c: char| {
                    c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ';' | '(' | ')')
                })
                .find(|w| w.starts_with('/') && w.len() > 1)
                .map(|w| Value::String(w.trim_end_matches(['.', ':']).to_string()))
        } else {
            None
        };
        params.insert(name.to_string(), value?);
    }
    Some(Value::Object(params))
}

/// Choose for `incident` among `catalog`, given the tenant's `recent` runs (newest first).
pub fn choose(
    incident: &Incident,
    catalog: &[CatalogEntry],
    recent: &[std::sync::Arc<RunRow>],
) -> Proposal {
    if catalog.is_empty() {
        return Proposal::Escalate {
            reason: "no runbook in the catalog can run on this host".into(),
        };
    }
    let service = incident.service.as_deref().unwrap_or("");
    let in_catalog: HashMap<&str, &CatalogEntry> =
        catalog.iter().map(|e| (e.name.as_str(), e)).collect();

    // History: runs for the same incident type and service.
    let mut by_runbook: BTreeMap<&str, (u32, u32, Option<&RunRow>)> = BTreeMap::new();
    for r in recent.iter().filter(|r| {
        !r.dry_run
            && r.incident_type == incident.kind
            && r.service == service
            && in_catalog.contains_key(r.runbook.as_str())
    }) {
        let e = by_runbook.entry(r.runbook.as_str()).or_default();
        if ok(&r.status) {
            e.0 += 1;
            e.2.get_or_insert(r);
        } else {
            e.1 += 1;
        }
    }
    let best_history = by_runbook
        .iter()
        .filter(|(_, (s, f, _))| *s > 0 && *f == 0)
        .max_by_key(|(_, (s, _, _))| *s);
    if let Some((name, (successes, _, Some(last)))) = best_history {
        let entry = in_catalog[name];
        let mut confidence = 1.0 - 1.0 / (f64::from(*successes) + 2.0);
        if entry.failing_here {
            confidence *= 0.5;
        }
        if let Ok(params) = serde_json::from_str::<Value>(&last.params) {
            return Proposal::Run {
                runbook: name.to_string(),
                params,
                confidence,
                rationale: format!(
                    "{name} resolved {successes} earlier {} incident(s){} here without a failure",
                    incident.kind,
                    if service.is_empty() {
                        String::new()
                    } else {
                        format!(" of {service}")
                    }
                ),
            };
        }
    }

    // Manifests.
    let docs: Vec<Vec<String>> = catalog.iter().map(runbook_words).collect();
    let tfidf = Tfidf::new(&docs);
    let query = tfidf.vector(&incident_words(incident));
    let mut scored: Vec<(f64, &CatalogEntry)> = docs
        .iter()
        .zip(catalog)
        .map(|(d, e)| (Tfidf::cosine(&query, &tfidf.vector(d)), e))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
    let (top, entry) = scored[0];
    let second = scored.get(1).map_or(0.0, |s| s.0);
    if top <= 0.0 {
        return Proposal::Escalate {
            reason: "no runbook's manifest shares a word with the incident, and no past resolution matches".into(),
        };
    }
    // Confident only when the best match is itself strong (cosine) and clearly ahead of
    // the next one: words alone rarely clear the default threshold, history does.
    let mut confidence = (top * top / (top + second)).min(0.9);
    if entry.failing_here {
        confidence *= 0.5;
    }
    match fill_params(entry, incident) {
        Some(params) => Proposal::Run {
            runbook: entry.name.clone(),
            params,
            confidence,
            rationale: format!(
                "the incident's words match {}'s manifest best (similarity {top:.2}, next {second:.2})",
                entry.name
            ),
        },
        None => Proposal::Escalate {
            reason: format!(
                "{} matches best (similarity {top:.2}) but its required params cannot be taken from the incident",
                entry.name
            ),
        },
    }
}
