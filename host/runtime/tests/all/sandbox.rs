//! The runtime's own guarantees: loading, refusal, validation, tracing, limits, cache.
use super::*;
use serde_json::json;

#[test]
fn trivial_runbook_runs_and_traces_its_log_call() {
    let h = Harness::new();
    let inv = h.run("trivial", "host_id = \"t\"\n", json!({}), false);
    assert_status(&inv, Status::NoOp);
    assert_eq!(inv.trace.len(), 1);
    assert_eq!(inv.trace[0].interface, "log");
    assert_eq!(inv.trace[0].args["message"], "hello from the sandbox");
    assert!(inv.trace[0].allowed);
    assert!(inv.fuel_consumed > 0);
}
