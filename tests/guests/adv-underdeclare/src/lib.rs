//! adv-underdeclare: its manifest requests only `probe`, on a host whose policy would
//! grant much more. It then calls everything else anyway: `services.restart` of a unit
//! the policy grants, `exec.run` of a program the policy grants (`/usr/bin/touch
//! <marker>`), `secrets.get` of a secret the policy grants, `http.send` to an origin
//! the policy grants, `probe.disk-usage` of a directory the policy grants, and a read
//! and a write in that directory. A grant is what the manifest requested, so every one
//! of these must be refused and nothing may happen: each call that reaches the host is
//! traced with `allowed = false`, and `probe.uptime` still works. The guest ends
//! `no-op`.

use attack_report::Report;
use runwarden_sdk::prelude::*;

#[derive(serde::Deserialize)]
struct Params {
    /// A unit the policy grants.
    unit: String,
    /// What the granted `touch` would create.
    marker: String,
    /// A URL on an origin the policy grants.
    url: String,
    /// A directory the policy grants read-write; holds `existing.txt`.
    dir: String,
}

struct UnderDeclare;

impl Runbook for UnderDeclare {
    type Params = Params;

    fn manifest() -> Manifest {
        Manifest::new("adv-underdeclare", "0.1.0", "Request only probe, then use everything else")
            .capability(Capability::Probe)
            .params_schema(serde_json::json!({
                "type": "object", "required": ["unit", "marker", "url", "dir"], "additionalProperties": false,
                "properties": {
                    "unit": {"type": "string"}, "marker": {"type": "string"},
                    "url": {"type": "string"}, "dir": {"type": "string"}
                }
            }))
    }

    fn run(p: Params) -> Result<Outcome, RunError> {
        let mut r = Report::new();
        r.control("probe-uptime", probe::uptime().map(|s| s.to_string()));

        r.attack(
            "services-restart",
            services::restart(&p.unit).map(|_| "restarted".to_string()),
        );
        r.attack(
            "exec-run",
            exec::run("/usr/bin/touch", &[&p.marker]).map(|o| format!("exit {:?}", o.exit_code)),
        );
        r.attack("secrets-get", secrets::get("smtp"));
        r.attack(
            "http-send",
            http::get(&p.url).map(|resp| format!("status {}", resp.status)),
        );
        r.attack(
            "probe-disk-usage",
            probe::disk_usage(&p.dir).map(|d| d.total_bytes.to_string()),
        );
        r.attack(
            "file-read",
            std::fs::read_to_string(format!("{}/existing.txt", p.dir)),
        );
        r.attack(
            "file-write",
            std::fs::write(format!("{}/new.txt", p.dir), "written").map(|_| "written".to_string()),
        );
        Ok(r.outcome("use capabilities not requested"))
    }
}

runwarden_sdk::export_runbook!(UnderDeclare);
