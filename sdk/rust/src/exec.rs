//! Allow-listed programs.
use crate::HostError;
use crate::bindings::runwarden::runbook::exec as raw;
pub use crate::bindings::runwarden::runbook::exec::Output;

/// Run `program` with `args` and wait for it (the host applies the invocation deadline).
pub fn run(program: &str, args: &[&str]) -> Result<Output, HostError> {
    run_with_timeout(program, args, None)
}

/// Run with an explicit timeout in milliseconds.
pub fn run_with_timeout(
    program: &str,
    args: &[&str],
    timeout_ms: Option<u32>,
) -> Result<Output, HostError> {
    raw::run(&raw::Command {
        program: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        timeout_ms,
    })
}
