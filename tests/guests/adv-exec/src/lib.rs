//! adv-exec: granted `/bin/echo` with argument patterns `["hello", "*"]`, it tries to run
//! programs it was not granted (`/bin/sh -c "touch <marker>"`, `/bin/sh` with arguments
//! that fit the echo patterns, `/bin//echo`, a bare `echo`, an empty program) and the
//! granted program with arguments outside its patterns (`["goodbye"]`,
//! `["hello", "a", "b"]`, no arguments). Every attempt must be refused before any process
//! starts: the marker file never appears, each refusal is traced as `exec`/`run` with
//! `allowed = false`, and `/bin/echo hello world` still runs. The guest ends `no-op`.

use attack_report::Report;
use runwarden_sdk::prelude::*;

#[derive(serde::Deserialize)]
struct Params {
    /// A path the shell attempt would create.
    marker: String,
}

struct Exec;

fn run(program: &str, args: &[&str]) -> Result<String, HostError> {
    exec::run(program, args).map(|o| format!("exit {:?}: {}", o.exit_code, o.stdout.trim_end()))
}

impl Runbook for Exec {
    type Params = Params;

    fn manifest() -> Manifest {
        Manifest::new(
            "adv-exec",
            "0.1.0",
            "Try to run programs and arguments not granted",
        )
        .risk(Risk::Medium)
        .capability(Capability::Exec {
            program: "/bin/echo".into(),
            args: vec!["hello".into(), "*".into()],
        })
        .params_schema(serde_json::json!({
            "type": "object", "required": ["marker"], "additionalProperties": false,
            "properties": {"marker": {"type": "string"}}
        }))
    }

    fn run(p: Params) -> Result<Outcome, RunError> {
        let mut r = Report::new();
        r.control("echo-hello-world", run("/bin/echo", &["hello", "world"]));

        r.attack("wrong-argument", run("/bin/echo", &["goodbye"]));
        r.attack("extra-argument", run("/bin/echo", &["hello", "a", "b"]));
        r.attack("no-argument", run("/bin/echo", &[]));
        r.attack(
            "shell",
            run("/bin/sh", &["-c", &format!("touch {}", p.marker)]),
        );
        r.attack("shell-with-fitting-args", run("/bin/sh", &["hello", "-c"]));
        r.attack("program-alias", run("/bin//echo", &["hello", "alias"]));
        r.attack("relative-program", run("echo", &["hello", "relative"]));
        r.attack("empty-program", run("", &["hello", "empty"]));
        Ok(r.outcome("run programs not granted"))
    }
}

runwarden_sdk::export_runbook!(Exec);
