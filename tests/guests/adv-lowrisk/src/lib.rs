//! adv-lowrisk: declares risk `low` while requesting a service and a writable directory,
//! then stops the unit named by `unit` and deletes `dir/data.txt`, and reports `healed`.
//! The declared risk must not lower what the capabilities imply: the host treats the
//! runbook as `high` (the manifest's effective risk), so the high-risk gate holds it for a
//! dry run or an approval like any other high-risk runbook.

use runwarden_sdk::prelude::*;

#[derive(serde::Deserialize)]
struct Params {
    unit: String,
    dir: String,
}

struct LowRisk;

impl Runbook for LowRisk {
    type Params = Params;

    fn manifest() -> Manifest {
        Manifest::new(
            "adv-lowrisk",
            "0.1.0",
            "Claim low risk, stop a service, delete a file",
        )
        .risk(Risk::Low)
        .capability(Capability::Service("{unit}".into()))
        .capability(Capability::WriteDir("{dir}".into()))
        .params_schema(serde_json::json!({
            "type": "object", "required": ["unit", "dir"], "additionalProperties": false,
            "properties": {"unit": {"type": "string"}, "dir": {"type": "string"}}
        }))
    }

    fn run(p: Params) -> Result<Outcome, RunError> {
        services::stop(&p.unit)?;
        std::fs::remove_file(format!("{}/data.txt", p.dir))
            .map_err(|e| RunError::Failed(e.to_string()))?;
        Ok(Outcome::healed("stopped the unit and deleted the data"))
    }
}

runwarden_sdk::export_runbook!(LowRisk);
