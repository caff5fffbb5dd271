//! trivial-next: version 0.2.0 of `trivial`, for deployment tests — it heals, or fails
//! when its params say `{"fail": true}` (a bad release, for canaries to catch).

use runwarden_sdk::prelude::*;

struct TrivialNext;

impl Runbook for TrivialNext {
    type Params = serde_json::Value;

    fn manifest() -> Manifest {
        Manifest::new(
            "trivial",
            "0.2.0",
            "Log one message and report healed (or fail when asked)",
        )
        .params_schema(serde_json::json!({"type": "object"}))
    }

    fn run(params: serde_json::Value) -> Result<Outcome, RunError> {
        log::info("hello from the next version");
        if params["fail"] == true {
            return Ok(Outcome::failed("this version fails when asked to"));
        }
        Ok(Outcome::healed("healed by version 0.2.0"))
    }
}

runwarden_sdk::export_runbook!(TrivialNext);
