//! adv-recursion: recurses without end. Mode `wasm-stack` uses small frames that live on
//! the WebAssembly stack, so the engine's stack limit is what stops it; mode
//! `shadow-stack` uses 4 KiB frames in linear memory, so the guest's own stack region
//! overflows. Either way the run must end with status `trapped` (`stack overflow` for the
//! WebAssembly stack) and the host keeps serving the next invocation.

use runwarden_sdk::prelude::*;

#[derive(serde::Deserialize)]
struct Params {
    /// `wasm-stack` or `shadow-stack`.
    mode: String,
    /// How deep to go; big enough never to finish.
    depth: u64,
}

struct Recursion;

/// Work after the call keeps it from becoming a loop.
#[inline(never)]
fn down(n: u64, acc: &mut u64) {
    *acc = acc.wrapping_mul(31).wrapping_add(n);
    if n != 0 {
        down(n - 1, acc);
    }
    *acc ^= n;
}

/// A 4 KiB array per frame, kept alive across the call.
#[inline(never)]
fn down_big(n: u64) -> u8 {
    let mut buf = [0u8; 4096];
    buf[(n % 4096) as usize] = n as u8;
    std::hint::black_box(&mut buf);
    if n == 0 {
        return buf[0];
    }
    down_big(n - 1) ^ buf[((n * 7) % 4096) as usize]
}

impl Runbook for Recursion {
    type Params = Params;

    fn manifest() -> Manifest {
        Manifest::new("adv-recursion", "0.1.0", "Recurse until the stack overflows").params_schema(serde_json::json!({
            "type": "object", "required": ["mode", "depth"], "additionalProperties": false,
            "properties": {"mode": {"enum": ["wasm-stack", "shadow-stack"]}, "depth": {"type": "integer", "minimum": 1}}
        }))
    }

    fn run(p: Params) -> Result<Outcome, RunError> {
        let result = if p.mode == "wasm-stack" {
            let mut acc = 0;
            down(p.depth, &mut acc);
            acc
        } else {
            down_big(p.depth) as u64
        };
        Ok(Outcome::failed(format!(
            "returned from depth {}: {result}",
            p.depth
        )))
    }
}

runwarden_sdk::export_runbook!(Recursion);
