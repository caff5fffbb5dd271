//! adv-links: granted a directory read-only (`granted`), another read-write (`writable`), one
//! program with one argument pattern (`program`, `arg`) and one unit (`unit`), it runs the
//! steps its params list, in order, to steer the programs runbooks hand paths to (granted
//! commands and the service backend, which run with runwarden's rights and follow links)
//! out of the grants: symlinks through other links (`up -> ..`, then `x -> up/../../victim`),
//! symlinks whose target is absolute or passes through a link the host planted, renaming
//! and hard-linking links, hard links to non-files, opening FIFOs and sockets (which would
//! block or reach a daemon), and granted programs or units whose arguments pass through
//! links. Each step says whether the host must refuse it (`attack`) or allow it (`control`).
//! Every attack must be refused by the host and traced with `allowed = false` (a symlink's
//! target in the trace); the files outside the grants stay untouched; the guest ends `no-op`.

use attack_report::{Report, raw};
use runwarden_sdk::prelude::*;

#[derive(serde::Deserialize)]
struct Params {
    /// Granted read-only.
    #[allow(dead_code)]
    granted: String,
    /// Granted read-write.
    #[allow(dead_code)]
    writable: String,
    /// The granted program.
    #[allow(dead_code)]
    program: String,
    /// The granted program's one argument pattern.
    #[allow(dead_code)]
    arg: String,
    /// The granted unit.
    #[allow(dead_code)]
    unit: String,
    /// What to try, in order.
    steps: Vec<Step>,
}

#[derive(serde::Deserialize)]
struct Step {
    /// The name the attempt is reported under.
    name: String,
    /// `attack` (must be refused) or `control` (must work).
    expect: String,
    /// `symlink`, `rename`, `hardlink`, `read`, `write`, `open`, `exec` or `restart`.
    op: String,
    /// First operand: a path (link path for `symlink`), the argument for `exec`, the unit
    /// for `restart`.
    a: String,
    /// Second operand: the link target for `symlink`, the new path for `rename` and
    /// `hardlink`, the data for `write`.
    #[serde(default)]
    b: String,
}

struct Links;

fn done<E>(r: Result<(), E>) -> Result<String, E> {
    r.map(|()| "done".to_string())
}

fn step(s: &Step, program: &str) -> Result<String, Box<dyn attack_report::Failure>> {
    fn boxed<E: attack_report::Failure + 'static>(e: E) -> Box<dyn attack_report::Failure> {
        Box::new(e)
    }
    match s.op.as_str() {
        "symlink" => done(raw::symlink(&s.b, &s.a)).map_err(boxed),
        "rename" => done(std::fs::rename(&s.a, &s.b)).map_err(boxed),
        "hardlink" => done(std::fs::hard_link(&s.a, &s.b)).map_err(boxed),
        "read" => std::fs::read_to_string(&s.a).map_err(boxed),
        "write" => done(std::fs::write(&s.a, &s.b)).map_err(boxed),
        "open" => std::fs::File::open(&s.a)
            .map(|_| "opened".to_string())
            .map_err(boxed),
        "exec" => exec::run(program, &[s.a.as_str()])
            .map(|o| format!("exit {:?}: {}", o.exit_code, o.stdout.trim_end()))
            .map_err(boxed),
        "restart" => done(services::restart(&s.a)).map_err(boxed),
        other => Err(boxed(std::io::Error::other(format!("unknown op {other}")))),
    }
}

impl Runbook for Links {
    type Params = Params;

    fn manifest() -> Manifest {
        Manifest::new(
            "adv-links",
            "0.1.0",
            "Steer host programs out of the grants through links",
        )
        .risk(Risk::Medium)
        .capability(Capability::ReadDir("{granted}".into()))
        .capability(Capability::WriteDir("{writable}".into()))
        .capability(Capability::Exec {
            program: "{program}".into(),
            args: vec!["{arg}".into()],
        })
        .capability(Capability::Service("{unit}".into()))
        .params_schema(serde_json::json!({
            "type": "object",
            "required": ["granted", "writable", "program", "arg", "unit", "steps"],
            "additionalProperties": false,
            "properties": {
                "granted": {"type": "string"}, "writable": {"type": "string"},
                "program": {"type": "string"}, "arg": {"type": "string"},
                "unit": {"type": "string"},
                "steps": {"type": "array", "items": {
                    "type": "object", "required": ["name", "expect", "op", "a"],
                    "additionalProperties": false,
                    "properties": {
                        "name": {"type": "string"}, "expect": {"enum": ["attack", "control"]},
                        "op": {"type": "string"}, "a": {"type": "string"}, "b": {"type": "string"}
                    }
                }}
            }
        }))
    }

    fn run(p: Params) -> Result<Outcome, RunError> {
        let mut r = Report::new();
        for s in &p.steps {
            let got = step(s, &p.program);
            if s.expect == "control" {
                r.control(&s.name, got);
            } else {
                r.attack(&s.name, got);
            }
        }
        Ok(r.outcome("steer host programs through links"))
    }
}

runwarden_sdk::export_runbook!(Links);
