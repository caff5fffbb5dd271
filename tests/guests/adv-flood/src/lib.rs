//! adv-flood: writes `bytes` bytes of output in 1 KiB pieces to one channel: `log`
//! messages, `stdout` or `stderr`. Past the policy's `output_bytes` the run must end with
//! status `output_limit`, having kept no more than the limit (a log flood also leaves a
//! `log` trace entry with `allowed = false`), and the host keeps serving the next
//! invocation.

use runwarden_sdk::prelude::*;

#[derive(serde::Deserialize)]
struct Params {
    /// `log`, `stdout` or `stderr`.
    mode: String,
    /// Total bytes to write.
    bytes: u64,
}

struct Flood;

impl Runbook for Flood {
    type Params = Params;

    fn manifest() -> Manifest {
        Manifest::new("adv-flood", "0.1.0", "Flood the output").params_schema(serde_json::json!({
            "type": "object", "required": ["mode", "bytes"], "additionalProperties": false,
            "properties": {"mode": {"enum": ["log", "stdout", "stderr"]}, "bytes": {"type": "integer", "minimum": 0}}
        }))
    }

    fn run(p: Params) -> Result<Outcome, RunError> {
        let line = format!("{}\n", "x".repeat(1023));
        let mut written = 0u64;
        while written < p.bytes {
            match p.mode.as_str() {
                "log" => log::info(&line),
                "stdout" => print!("{line}"),
                _ => eprint!("{line}"),
            }
            written += line.len() as u64;
        }
        Ok(Outcome::failed(format!(
            "wrote {written} bytes to {}",
            p.mode
        )))
    }
}

runwarden_sdk::export_runbook!(Flood);
