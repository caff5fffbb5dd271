//! adv-loop: never finishes on its own. Mode `spin` loops forever without calling the
//! host; mode `sleep` blocks in a WASI clock wait (`std::thread::sleep`) for `sleep_ms`,
//! far past its deadline, then spins. A spin must end with status `timeout` when the
//! wall-clock deadline passes and with `out_of_fuel` when fuel runs out first; a sleep must
//! end with `timeout` at the deadline, not when the sleep ends. Either way the host keeps
//! serving the next invocation.

use runwarden_sdk::prelude::*;
use std::time::Duration;

#[derive(serde::Deserialize)]
struct Params {
    /// `spin` or `sleep`.
    mode: String,
    /// How long `sleep` blocks, in milliseconds.
    #[serde(default)]
    sleep_ms: u64,
}

struct Loop;

#[inline(never)]
fn spin() -> ! {
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

impl Runbook for Loop {
    type Params = Params;

    fn manifest() -> Manifest {
        Manifest::new("adv-loop", "0.1.0", "Never return").params_schema(serde_json::json!({
            "type": "object", "required": ["mode"], "additionalProperties": false,
            "properties": {"mode": {"enum": ["spin", "sleep"]}, "sleep_ms": {"type": "integer", "minimum": 0}}
        }))
    }

    fn run(p: Params) -> Result<Outcome, RunError> {
        if p.mode == "sleep" {
            std::thread::sleep(Duration::from_millis(p.sleep_ms));
        }
        spin()
    }
}

runwarden_sdk::export_runbook!(Loop);
