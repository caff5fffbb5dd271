//! Write L1 rules in Rust against the `rule` world.
//!
//! A rule component is pure: it sees one incident and returns at most one decision —
//! which runbooks to run with which params. It imports nothing from the host. YAML rule
//! sets compiled by `runwarden rules compile` are the usual way to write rules; use this
//! when a rule needs logic YAML cannot express.
//!
//! ```ignore
//! use runwarden_sdk::rule::*;
//!
//! struct MyRules;
//!
//! impl Rules for MyRules {
//!     fn rules() -> Vec<RuleInfo> {
//!         vec![RuleInfo::new("nginx-down", "restart nginx when it is down", ["restart-service"])]
//!     }
//!     fn evaluate(i: &Incident) -> Option<Decision> {
//!         (i.kind == "service-down" && i.service.as_deref() == Some("nginx.service")).then(|| {
//!             Decision::run("nginx-down", "restart-service", serde_json::json!({"unit": "nginx.service"}))
//!         })
//!     }
//! }
//!
//! runwarden_sdk::export_rules!(MyRules);
//! ```

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "rule",
        pub_export_macro: true,
        export_macro_name: "__export_rule_world",
        default_bindings_module: "runwarden_sdk::rule::bindings",
    });
}

pub use bindings::runwarden::runbook::incident_types::{
    Action, Decision, Incident, RuleInfo, Severity,
};

/// A set of rules: what they are, and the first decision for an incident.
pub trait Rules {
    /// Every rule, in evaluation order.
    fn rules() -> Vec<RuleInfo>;

    /// The decision of the first rule that matches `incident`, if any.
    fn evaluate(incident: &Incident) -> Option<Decision>;
}

impl RuleInfo {
    /// A rule's listing: id, one-line summary, the runbooks it may choose.
    pub fn new<'a>(
        id: &str,
        summary: &str,
        runbooks: impl IntoIterator<Item = &'a str>,
    ) -> RuleInfo {
        RuleInfo {
            id: id.into(),
            summary: summary.into(),
            runbooks: runbooks.into_iter().map(String::from).collect(),
        }
    }
}

impl Decision {
    /// Rule `rule_id` decides to run one runbook with `params`.
    pub fn run(rule_id: &str, runbook: &str, params: serde_json::Value) -> Decision {
        Decision {
            rule_id: rule_id.into(),
            actions: vec![Action {
                runbook: runbook.into(),
                params: params.to_string(),
            }],
            dry_run: false,
            cooldown_secs: None,
        }
    }

    /// Then run another runbook when the previous one healed or found nothing to do.
    pub fn then(mut self, runbook: &str, params: serde_json::Value) -> Decision {
        self.actions.push(Action {
            runbook: runbook.into(),
            params: params.to_string(),
        });
        self
    }
}

impl Incident {
    /// The value of one of the incident's labels.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of one of the host's labels.
    pub fn host_label(&self, key: &str) -> Option<&str> {
        self.host_labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Export a [`Rules`] implementation as the component's `rules` interface.
#[macro_export]
macro_rules! export_rules {
    ($rules:ty) => {
        struct __RunwardenRules;
        impl $crate::rule::bindings::exports::runwarden::runbook::rules::Guest for __RunwardenRules {
            fn evaluate(
                incident: $crate::rule::Incident,
            ) -> ::std::option::Option<$crate::rule::Decision> {
                <$rules as $crate::rule::Rules>::evaluate(&incident)
            }
            fn list_rules() -> ::std::vec::Vec<$crate::rule::RuleInfo> {
                <$rules as $crate::rule::Rules>::rules()
            }
        }
        $crate::rule::bindings::__export_rule_world!(__RunwardenRules with_types_in $crate::rule::bindings);
    };
}
