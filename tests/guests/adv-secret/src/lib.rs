//! adv-secret: granted the secret `smtp`, it asks for `db` (configured on the host but not
//! granted) and `nope` (configured nowhere), and tries to read `db`'s source file
//! directly. Then it leaks the value of `smtp` everywhere it can: a log message, a log
//! field's value and a log field's name, stdout, stderr, its summary, and its details (as a
//! value and as a key). `db` must be refused (traced as `secrets`/`get` with
//! `allowed = false`) and its value must appear nowhere in the invocation; `smtp`'s value
//! must be redacted everywhere in the invocation. The guest ends `no-op` when `db` stayed
//! out of reach.

use attack_report::Report;
use runwarden_sdk::prelude::*;

#[derive(serde::Deserialize)]
struct Params {
    /// The file holding the ungranted secret `db` on the host.
    db_file: String,
}

struct Secret;

impl Runbook for Secret {
    type Params = Params;

    fn manifest() -> Manifest {
        Manifest::new(
            "adv-secret",
            "0.1.0",
            "Try to read a secret not granted and leak the granted one",
        )
        .capability(Capability::Secret("smtp".into()))
        .params_schema(serde_json::json!({
            "type": "object", "required": ["db_file"], "additionalProperties": false,
            "properties": {"db_file": {"type": "string"}}
        }))
    }

    fn run(p: Params) -> Result<Outcome, RunError> {
        let mut r = Report::new();
        r.attack("ungranted", secrets::get("db"));
        r.attack("unknown", secrets::get("nope"));
        r.attack("source-file", std::fs::read_to_string(&p.db_file));

        let smtp = secrets::get("smtp");
        let leak = smtp.clone().unwrap_or_default();
        r.control("granted", smtp.map(|_| "read".to_string()));
        log::log(
            log::Level::Info,
            &format!("the smtp secret is {leak}"),
            &[("value", &leak), (&leak, "as a field name")],
        );
        println!("stdout: {leak}");
        eprintln!("stderr: {leak}");

        let mut o = r.outcome("reach secrets not granted");
        o.summary = format!("{} (smtp is {leak})", o.summary);
        o.details["leaked"] = serde_json::json!(leak);
        o.details["leaked_as_key"] = serde_json::json!({ leak.clone(): true });
        Ok(o)
    }
}

runwarden_sdk::export_runbook!(Secret);
