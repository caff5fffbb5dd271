//! adv-memory: allocates until memory runs out. Mode `grow` keeps 1 MiB blocks (touched,
//! so they are real) and logs how many it holds after each; mode `huge` asks for 1 GiB at
//! once. Growing linear memory past the policy's `memory_bytes` must be refused, so the run
//! ends with status `out_of_memory` having held no more than the limit, and the host keeps
//! serving the next invocation.

use runwarden_sdk::prelude::*;

#[derive(serde::Deserialize)]
struct Params {
    /// `grow` or `huge`.
    mode: String,
}

struct Memory;

impl Runbook for Memory {
    type Params = Params;

    fn manifest() -> Manifest {
        Manifest::new("adv-memory", "0.1.0", "Allocate until memory runs out").params_schema(
            serde_json::json!({
                "type": "object", "required": ["mode"], "additionalProperties": false,
                "properties": {"mode": {"enum": ["grow", "huge"]}}
            }),
        )
    }

    fn run(p: Params) -> Result<Outcome, RunError> {
        if p.mode == "huge" {
            let v = vec![1u8; 1 << 30];
            return Ok(Outcome::failed(format!(
                "allocated {} bytes",
                std::hint::black_box(v).len()
            )));
        }
        let mut held: Vec<Vec<u8>> = Vec::new();
        // Bounded so a runtime without a memory limit still ends (at 4 GiB, wasm32's ceiling).
        for i in 1..=4096u32 {
            held.push(std::hint::black_box(vec![i as u8; 1 << 20]));
            log::log(log::Level::Debug, "holding", &[("mib", &i.to_string())]);
        }
        Ok(Outcome::failed(format!("held {} MiB", held.len())))
    }
}

runwarden_sdk::export_runbook!(Memory);
