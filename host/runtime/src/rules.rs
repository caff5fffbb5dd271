//! L1 rule components (world `rule`): loaded like runbooks, but pure — linked with WASI
//! only (no runwarden host interface, no preopen, no environment), so a rule component
//! that asks for a host capability fails to load. One instance per rule set is kept and
//! reused across evaluations (a rule set compiles its regexes once); each evaluation
//! gets a fresh fuel and deadline budget, and an instance that traps is discarded.

use crate::error::{Error, Result};
use crate::grant::Grant;
use crate::host::HostState;
use crate::policy::Policy;
use crate::runtime::{Runtime, trap_message};
use crate::wasi;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::Store;

// Documented in wit/rule.wit; generated items the WIT leaves bare would otherwise warn.
#[allow(missing_docs)]
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "rule",
    });
}

pub use bindings::runwarden::runbook::incident_types::{
    Action, Decision, Incident, RuleInfo, Severity,
};
use bindings::{Rule, RulePre};

/// Fuel for one evaluation: far beyond a thousand rules' worth, far below a runaway loop.
const EVAL_FUEL: u64 = 500_000_000;
/// Wall-clock limit of one evaluation.
const EVAL_TIMEOUT: Duration = Duration::from_millis(1_000);
/// Linear memory a rule set may use.
const EVAL_MEMORY: u64 = 128 << 20;

/// A loaded rule component.
pub struct RuleSet {
    sha256: String,
    rules: Vec<RuleInfo>,
    pre: RulePre<HostState>,
    live: Mutex<Option<(Store<HostState>, Rule)>>,
    policy: Arc<Policy>,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("sha256", &self.sha256)
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl RuleSet {
    /// SHA-256 of the component's bytes (hex): what evidence names as the rule component.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The rules it holds, in evaluation order.
    pub fn rules(&self) -> &[RuleInfo] {
        &self.rules
    }

    /// What a rule set's signed release lists: `{"rules": [{"id", "summary",
    /// "runbooks"}, …]}` in evaluation order.
    pub fn manifest_json(&self) -> serde_json::Value {
        let rules: Vec<serde_json::Value> = self
            .rules
            .iter()
            .map(|r| serde_json::json!({"id": r.id, "summary": r.summary, "runbooks": r.runbooks}))
            .collect();
        serde_json::json!({ "rules": rules })
    }
}

impl Runtime {
    /// Load a rule component and list its rules.
    pub fn load_rules(&self, wasm: &[u8]) -> Result<Arc<RuleSet>> {
        let (component, sha256) = self.compile(wasm)?;
        let pre = self
            .rule_linker()
            .instantiate_pre(&component)
            .map_err(|e| Error::NotARule(format!("{e:#}")))?;
        let pre = RulePre::new(pre).map_err(|e| Error::NotARule(format!("{e:#}")))?;
        let policy = Arc::new(Policy::parse(&format!(
            "host_id = \"rules\"\n[limits]\ntimeout_ms = {}\nfuel = {EVAL_FUEL}\nmemory_bytes = {EVAL_MEMORY}\n",
            EVAL_TIMEOUT.as_millis()
        ))?);
        let set = RuleSet {
            sha256,
            rules: Vec::new(),
            pre,
            live: Mutex::new(None),
            policy,
        };
        let rules = self.with_instance(&set, |store, rule| {
            rule.runwarden_runbook_rules().call_list_rules(store)
        })?;
        Ok(Arc::new(RuleSet { rules, ..set }))
    }

    /// Evaluate `incident` against a rule set: the first matching rule's decision.
    pub fn evaluate(&self, set: &RuleSet, incident: &Incident) -> Result<Option<Decision>> {
        self.with_instance(set, |store, rule| {
            rule.runwarden_runbook_rules()
                .call_evaluate(store, incident)
        })
    }

    fn with_instance<T>(
        &self,
        set: &RuleSet,
        f: impl FnOnce(&mut Store<HostState>, &Rule) -> wasmtime::Result<T>,
    ) -> Result<T> {
        let mut live = set.live.lock().unwrap_or_else(|e| e.into_inner());
        if live.is_none() {
            let cx = self.context(
                set.policy.clone(),
                Grant::default(),
                true,
                // Rules never wait; the per-call epoch deadline is what bounds them.
                Instant::now() + Duration::from_secs(365 * 24 * 3600),
            );
            let wasi = wasi::context(
                &[],
                &[],
                &set.policy.grants,
                None,
                self.root(),
                true,
                &cx.output,
            )
            .map_err(Error::Setup)?;
            let mut store = self.store(wasi, cx, &set.policy.limits);
            let rule = set
                .pre
                .instantiate(&mut store)
                .map_err(|e| Error::NotARule(format!("instantiate: {e:#}")))?;
            *live = Some((store, rule));
        }
        let (store, rule) = live.as_mut().expect("instance set above");
        let limits = &set.policy.limits;
        let _ = store.set_fuel(limits.fuel);
        store.set_epoch_deadline(self.ticks(limits.timeout_ms));
        match f(store, rule) {
            Ok(v) => Ok(v),
            Err(e) => {
                // A trapped instance may hold broken state: start the next call afresh.
                *live = None;
                Err(Error::RuleTrapped(trap_message(&e)))
            }
        }
    }
}
