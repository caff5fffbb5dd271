//! An L1 rule written in Rust against the `rule` world — for logic a YAML rule cannot
//! express. Here: a database service that is down on a host labelled `role=db` is
//! restarted and then health-checked (at the incident's `health_url` label, when it has one), but only when the monitor did not report that the
//! disk is full (restarting a database on a full disk makes things worse; that incident
//! goes to a human instead).

use runwarden_sdk::rule::{Decision, Incident, RuleInfo, Rules, Severity};

struct DbRules;

const DATABASES: &[&str] = &["postgresql.service", "mariadb.service", "mysql.service"];

impl Rules for DbRules {
    fn rules() -> Vec<RuleInfo> {
        vec![RuleInfo::new(
            "db-down-restart",
            "restart a database that is down on a db host (not when its disk is full), then verify health",
            ["restart-service", "verify-health"],
        )]
    }

    fn evaluate(i: &Incident) -> Option<Decision> {
        let service = i.service.as_deref()?;
        let applies = i.kind == "service-down"
            && i.host_label("role") == Some("db")
            && DATABASES.contains(&service)
            && !i.message.to_ascii_lowercase().contains("no space left")
            && !matches!(i.severity, Severity::Info);
        if !applies {
            return None;
        }
        let restart = Decision::run(
            "db-down-restart",
            "restart-service",
            serde_json::json!({ "unit": service }),
        );
        // Health-check afterwards when the monitor said where.
        Some(match i.label("health_url") {
            Some(url) => restart.then("verify-health", serde_json::json!({ "url": url })),
            None => restart,
        })
    }
}

runwarden_sdk::export_rules!(DbRules);
