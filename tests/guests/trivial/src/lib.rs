//! trivial: one traced host call (a log message), then a no-op outcome.

use runwarden_sdk::prelude::*;

struct Trivial;

impl Runbook for Trivial {
    type Params = serde_json::Value;

    fn manifest() -> Manifest {
        Manifest::new(
            "trivial",
            "0.1.0",
            "Log one message and report nothing to do",
        )
        .params_schema(serde_json::json!({"type": "object"}))
    }

    fn run(_: serde_json::Value) -> Result<Outcome, RunError> {
        log::info("hello from the sandbox");
        Ok(Outcome::no_op("nothing to do"))
    }
}

runwarden_sdk::export_runbook!(Trivial);
