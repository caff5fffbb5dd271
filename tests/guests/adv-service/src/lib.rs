//! adv-service: granted the unit named by its `unit` param, it tries to manage another
//! unit (`restart`, `stop`, `start`, `reload` and `status` of `ungranted.service`) and to
//! smuggle one past the unit check: a glob (`*`, `granted.servic?`), a path
//! (`../ungranted.service`), shell syntax (`granted.service; touch pwned`), two names in
//! one, and an option (`--all`). Every attempt must be refused before the service backend
//! runs: the ungranted unit's state never changes, each refusal is traced as `services`
//! calls with `allowed = false`, and `status` of the granted unit still works. The guest
//! ends `no-op`.

use attack_report::Report;
use runwarden_sdk::prelude::*;

#[derive(serde::Deserialize)]
struct Params {
    /// The granted unit.
    unit: String,
}

struct Service;

fn ok(r: Result<(), HostError>) -> Result<String, HostError> {
    r.map(|_| "done".to_string())
}

impl Runbook for Service {
    type Params = Params;

    fn manifest() -> Manifest {
        Manifest::new("adv-service", "0.1.0", "Try to manage units not granted")
            .risk(Risk::Medium)
            .capability(Capability::Service("{unit}".into()))
            .params_schema(serde_json::json!({
                "type": "object", "required": ["unit"], "additionalProperties": false,
                "properties": {"unit": {"type": "string"}}
            }))
    }

    fn run(p: Params) -> Result<Outcome, RunError> {
        let other = "ungranted.service";
        let mut r = Report::new();
        r.control(
            "status-granted",
            services::status(&p.unit).map(|s| s.active_state),
        );

        r.attack("restart", ok(services::restart(other)));
        r.attack("stop", ok(services::stop(other)));
        r.attack("start", ok(services::start(other)));
        r.attack("reload", ok(services::reload(other)));
        r.attack("status", services::status(other).map(|s| s.active_state));
        r.attack("glob-star", ok(services::restart("*")));
        let near = format!("{}?", &p.unit[..p.unit.len().saturating_sub(1)]);
        r.attack("glob-question", ok(services::restart(&near)));
        r.attack("path", ok(services::restart(&format!("../{other}"))));
        r.attack(
            "shell",
            ok(services::restart(&format!("{}; touch pwned", p.unit))),
        );
        r.attack(
            "two-names",
            ok(services::restart(&format!("{} {other}", p.unit))),
        );
        r.attack("option", ok(services::restart("--all")));
        Ok(r.outcome("manage units not granted"))
    }
}

runwarden_sdk::export_runbook!(Service);
