//! restart-service: restart a unit, then confirm it is active.

use runwarden_sdk::prelude::*;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// Unit to restart, e.g. `nginx.service`.
    unit: String,
    /// Restart even when the unit is already active.
    #[serde(default)]
    force: bool,
}

struct RestartService;

impl Runbook for RestartService {
    type Params = Params;

    fn manifest() -> Manifest {
        Manifest::new(
            "restart-service",
            env!("CARGO_PKG_VERSION"),
            "Restart a service unit that is down and confirm it came back active",
        )
        .risk(Risk::Medium)
        .capability(Capability::Service("{unit}".into()))
        .platform("linux")
        .params_schema(serde_json::json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["unit"],
            "properties": {
                "unit": {"type": "string", "minLength": 1, "maxLength": 256,
                         "description": "unit name, e.g. nginx.service"},
                "force": {"type": "boolean", "default": false,
                          "description": "restart even when the unit is already active"}
            }
        }))
    }

    fn run(p: Params) -> Result<Outcome, RunError> {
        let before = services::status(&p.unit)?;
        if before.active_state == "active" && !p.force {
            return Ok(Outcome::no_op(format!("{} is already active", p.unit))
                .details(serde_json::json!({"before": before.active_state})));
        }
        services::restart(&p.unit)?;
        let after = services::status(&p.unit)?;
        let details = serde_json::json!({
            "before": before.active_state,
            "after": after.active_state,
            "sub_state": after.sub_state,
        });
        if after.active_state == "active" || after.active_state == "activating" {
            Ok(Outcome::healed(format!(
                "restarted {} ({} → {})",
                p.unit, before.active_state, after.active_state
            ))
            .details(details))
        } else {
            Ok(Outcome::failed(format!(
                "{} is {} after restart",
                p.unit, after.active_state
            ))
            .details(details))
        }
    }
}

runwarden_sdk::export_runbook!(RestartService);
