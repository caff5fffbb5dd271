//! trivial-large: version 0.3.0 of `trivial`, for deployment tests — it heals, and it
//! carries 720 KiB of ballast, so that it is larger than a deployment job carries inline
//! and reaches hosts by reference (the bus's blob store).

use runwarden_sdk::prelude::*;

struct TrivialLarge;

/// Ballast: a data segment of its own size in the component.
static BALLAST: [u8; 720 * 1024] = [0x5a; 720 * 1024];

impl Runbook for TrivialLarge {
    type Params = serde_json::Value;

    fn manifest() -> Manifest {
        Manifest::new(
            "trivial",
            "0.3.0",
            "Log one message and report healed (a large build)",
        )
        .params_schema(serde_json::json!({"type": "object"}))
    }

    fn run(_params: serde_json::Value) -> Result<Outcome, RunError> {
        // Read, so that the ballast stays in the component.
        if std::hint::black_box(&BALLAST)[0] != 0x5a {
            return Ok(Outcome::failed("the ballast changed"));
        }
        log::info("hello from the large version");
        Ok(Outcome::healed("healed by version 0.3.0"))
    }
}

runwarden_sdk::export_runbook!(TrivialLarge);
