//! Evidence logs at audit scale (issue #14): records of the shapes the pipeline writes,
//! built with the same types, about 5 KB each, in the mix of a clinic fleet's year, and a
//! host's data directory filled with them. Deterministic: the same arguments give the same
//! records. One source for the benchmarks' examples (`fill_log`, `fill_fleet` in
//! runwarden-evidence) and the CLI's 50,000-record test.

use runwarden_evidence::{
    Invocation, NewRecord, Provenance, SigningKey, Statement, Store, rfc3339_ms,
};
use serde_json::{Value, json};
use std::path::Path;

/// The host whose log [`fill_log`] writes: its key is `signing-keys/bench-host.key`.
pub const HOST: &str = "bench-host";
/// The tenant [`fill_log`]'s records are made for.
pub const TENANT: &str = "clinic-bench";
/// 2025-12-01T00:00:00Z: the filled logs' records are spread over the year from it.
pub const YEAR_START_MS: u64 = 1_764_547_200_000;
/// A year, in milliseconds.
pub const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;
/// Appends in flight at once (the store commits them in batches).
const IN_FLIGHT: usize = 256;

/// What [`fill_log`] did.
#[derive(Debug, Clone, Copy)]
pub struct Filled {
    /// Their envelopes' bytes, together.
    pub envelope_bytes: u64,
    /// Records in the log now.
    pub size: u64,
}

/// Appends `records` records to the log of [`HOST`] in data directory `dir`, laid out as
/// `runwarden up` lays out its own: `dir/evidence.db`, and the key that signs the log,
/// `dir/signing-keys/bench-host.{key,pub}` (made if missing). Spread evenly over the year
/// from [`YEAR_START_MS`], each signed with the host key; a log already there is added
/// to. `progress` is told the count at every 100,000th record.
pub async fn fill_log(dir: &Path, records: u64, mut progress: impl FnMut(u64)) -> Filled {
    let keys = dir.join("signing-keys");
    std::fs::create_dir_all(&keys).expect("the data directory");
    let key_file = keys.join(format!("{HOST}.key"));
    if !key_file.exists() {
        runwarden_evidence::write_key_pair(&keys, HOST).expect("the host key");
    }
    let key = runwarden_evidence::read_signing_key(&key_file).expect("the host key");
    let store = Store::open_sqlite(&dir.join("evidence.db"))
        .await
        .expect("the evidence database");
    let held = store.size().await.expect("the log's size");
    let mut envelope_bytes = 0u64;
    let mut pending = tokio::task::JoinSet::new();
    for i in held..held + records {
        let at = YEAR_START_MS + (i - held) * (YEAR_MS / records.max(1));
        let record = record(&key, (HOST, TENANT), i, at);
        envelope_bytes += record.envelope.len() as u64;
        let s = store.clone();
        pending.spawn(async move { s.append(record).await });
        if pending.len() >= IN_FLIGHT {
            pending
                .join_next()
                .await
                .unwrap()
                .unwrap()
                .expect("appended");
        }
        if (i - held + 1) % 100_000 == 0 {
            progress(i - held + 1);
        }
    }
    while let Some(r) = pending.join_next().await {
        r.unwrap().expect("appended");
    }
    Filled {
        envelope_bytes,
        size: store.size().await.expect("the log's size"),
    }
}

/// A small deterministic generator (the same log for the same arguments).
fn mix(i: u64, salt: u64) -> u64 {
    let mut x = i
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(salt.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 29)
}

fn uuid(i: u64, salt: u64, at_ms: u64) -> String {
    let r = mix(i, salt);
    format!(
        "{:08x}-{:04x}-7{:03x}-8{:03x}-{:012x}",
        at_ms >> 16,
        at_ms & 0xffff,
        r & 0xfff,
        (r >> 12) & 0xfff,
        (r >> 24) & 0xffff_ffff_ffff
    )
}

fn call(seq: usize, interface: &str, function: &str, args: Value, result: Value) -> Value {
    json!({
        "allowed": true, "args": args, "dry_run": false, "duration_us": 900 + seq * 37,
        "function": function, "interface": interface, "result": result, "seq": seq,
    })
}

fn guardrails(host: &str) -> Value {
    json!([
        {"detail": "0 earlier within the window", "guardrail": "repeat", "verdict": "pass"},
        {"detail": "runbooks deployed; the host's policy grants what they touch", "guardrail": "known_target", "verdict": "pass"},
        {"detail": format!("none of its runbooks ran on {host} in the last 300 s"), "guardrail": "cooldown", "verdict": "pass"},
        {"detail": "0 automatic runs in the last minute (at most 30)", "guardrail": "circuit_breaker", "verdict": "pass"},
        {"detail": "no high-risk runbook", "guardrail": "risk", "verdict": "pass"},
    ])
}

/// Record `i` of a log of `host` (made for `tenant`), at `at_ms`, signed by `key`.
pub fn record(key: &SigningKey, (host, tenant): (&str, &str), i: u64, at_ms: u64) -> NewRecord {
    let host = host.to_string();
    let roll = mix(i, 1) % 100;
    let unit = [
        "nginx.service",
        "php8.2-fpm.service",
        "postgresql.service",
        "dicom-gw.service",
    ][(mix(i, 2) % 4) as usize];
    let l1 = |rule: &str| Provenance::L1 {
        rule_id: rule.into(),
        rule_sha256: format!("{:064x}", mix(7, 7) as u128 * 3),
    };
    let (runbook, provenance, params, trace, status, summary, dry_run): (
        &str,
        Provenance,
        Value,
        Vec<Value>,
        &str,
        String,
        bool,
    ) = match roll {
        // A rule restarts a service that went down.
        0..=44 => {
            let trace = vec![
                call(
                    0,
                    "services",
                    "status",
                    json!({"unit": unit}),
                    json!({"active_state": "inactive", "sub_state": "dead"}),
                ),
                call(1, "services", "restart", json!({"unit": unit}), json!("ok")),
                call(
                    2,
                    "services",
                    "status",
                    json!({"unit": unit}),
                    json!({"active_state": "active", "sub_state": "running"}),
                ),
            ];
            (
                "restart-service",
                l1("service-down-restart"),
                json!({"unit": unit, "force": false}),
                trace,
                "healed",
                format!("restarted {unit} (inactive → active)"),
                false,
            )
        }
        // A rule clears old files from a full temporary directory.
        45..=64 => {
            let files = 16 + (mix(i, 3) % 32) as usize;
            let mut trace = vec![call(
                0,
                "files",
                "list",
                json!({"dir": "/srv/app/tmp"}),
                json!(
                    (0..files)
                        .map(|f| format!("upload-{i}-{f}.part"))
                        .collect::<Vec<_>>()
                ),
            )];
            for f in 0..files {
                trace.push(call(1 + f, "files", "remove",
                    json!({"path": format!("/srv/app/tmp/upload-{i}-{f}.part"), "older_than_hours": 24}),
                    json!({"removed": true, "bytes": 40_960 + f * 512})));
            }
            (
                "clear-tmp",
                l1("tmp-full"),
                json!({"dir": "/srv/app/tmp", "older_than_hours": 24}),
                trace,
                "healed",
                format!("removed {files} files older than 24 h from /srv/app/tmp"),
                false,
            )
        }
        // A rule rotates a log that grew past its limit.
        65..=76 => {
            let trace = vec![
                call(
                    0,
                    "files",
                    "stat",
                    json!({"path": "/var/log/app/app.log"}),
                    json!({"bytes": 2_147_483_648u64}),
                ),
                call(
                    1,
                    "files",
                    "rename",
                    json!({"from": "/var/log/app/app.log", "to": "/var/log/app/app.log.1"}),
                    json!("ok"),
                ),
                call(2, "services", "reload", json!({"unit": unit}), json!("ok")),
            ];
            (
                "rotate-logs",
                l1("log-too-big"),
                json!({"path": "/var/log/app/app.log", "keep": 7}),
                trace,
                "healed",
                "rotated /var/log/app/app.log (2.0 GiB)".into(),
                false,
            )
        }
        // The planner chose, no rule matched.
        77..=84 => {
            let trace = vec![
                call(
                    0,
                    "services",
                    "status",
                    json!({"unit": unit}),
                    json!({"active_state": "failed", "sub_state": "failed"}),
                ),
                call(1, "services", "restart", json!({"unit": unit}), json!("ok")),
                call(
                    2,
                    "services",
                    "status",
                    json!({"unit": unit}),
                    json!({"active_state": "active", "sub_state": "running"}),
                ),
            ];
            let provenance = Provenance::L2 {
                provider: "openai".into(),
                model: "gpt-4.1-mini".into(),
                prompt_sha256: format!("{:064x}", mix(i, 4) as u128),
                response_sha256: format!("{:064x}", mix(i, 5) as u128),
                confidence: 0.82,
                rationale: format!(
                    "{unit} failed after the nightly update; a restart is the documented first step and the unit is granted to this host"
                ),
            };
            (
                "restart-service",
                provenance,
                json!({"unit": unit, "force": false}),
                trace,
                "healed",
                format!("restarted {unit} (failed → active)"),
                false,
            )
        }
        // A human approved it.
        85..=88 => {
            let trace = vec![call(
                0,
                "services",
                "restart",
                json!({"unit": unit}),
                json!("ok"),
            )];
            (
                "restart-service",
                Provenance::L3 {
                    approver: "tok_4f2a9c1e77d0 (tech@msp.example)".into(),
                },
                json!({"unit": unit, "force": true}),
                trace,
                "healed",
                format!("restarted {unit} after approval"),
                false,
            )
        }
        // A dry run: nothing changed.
        89..=92 => {
            let mut c = call(
                0,
                "services",
                "restart",
                json!({"unit": unit}),
                json!("simulated"),
            );
            c["dry_run"] = json!(true);
            (
                "restart-service",
                l1("service-down-restart"),
                json!({"unit": unit, "force": false}),
                vec![c],
                "healed",
                format!("would restart {unit}"),
                true,
            )
        }
        // It did not help.
        93..=95 => {
            let trace = vec![
                call(0, "services", "restart", json!({"unit": unit}), json!("ok")),
                call(
                    1,
                    "services",
                    "status",
                    json!({"unit": unit}),
                    json!({"active_state": "failed", "sub_state": "failed"}),
                ),
            ];
            (
                "restart-service",
                l1("service-down-restart"),
                json!({"unit": unit, "force": false}),
                trace,
                "failed",
                format!("{unit} failed again after the restart"),
                false,
            )
        }
        // The policy denied a call.
        96..=97 => {
            let mut c = call(
                0,
                "services",
                "restart",
                json!({"unit": "sshd.service"}),
                json!({"error": "denied: sshd.service is not granted to this host"}),
            );
            c["allowed"] = json!(false);
            (
                "restart-service",
                l1("service-down-restart"),
                json!({"unit": "sshd.service", "force": false}),
                vec![c],
                "denied",
                "the policy does not grant sshd.service".into(),
                false,
            )
        }
        // The agent was killed mid-run.
        _ => (
            "restart-service",
            Provenance::Undecided {
                reason: "the agent stopped while it ran; recorded at its next start, not run again"
                    .into(),
            },
            json!({"unit": unit, "force": false}),
            Vec::new(),
            "interrupted",
            "the run was cut off: the agent stopped before it ended".into(),
            false,
        ),
    };
    let invocation = uuid(i, 6, at_ms);
    let duration_us = 4_000 + mix(i, 8) % 40_000;
    let statement = Statement::new(
        runbook,
        &format!("{:064x}", mix(runbook.len() as u64, 9) as u128),
        Invocation {
            publisher: None,
            invocation_id: invocation.clone(),
            tenant: tenant.into(),
            host_id: host.clone(),
            key_id: key.verifying_key().key_id_hex(),
            provenance,
            runbook_version: "0.1.0".into(),
            grant_digest: Some(format!("{:064x}", mix(i % 50, 10) as u128)),
            grant: Some(json!({
                "exec": [], "http": [], "probe": false, "read_dirs": ["/var/log/app"], "secrets": [],
                "services": [unit], "write_dirs": ["/srv/app/tmp", "/var/log/app"],
            })),
            params,
            trace: Value::Array(trace),
            outcome: json!({"status": status, "summary": summary, "details": {"host": host}}),
            started_at: rfc3339_ms(at_ms),
            ended_at: rfc3339_ms(at_ms + duration_us / 1000),
            duration_us,
            fuel_consumed: 9_000 + mix(i, 11) % 20_000,
            dry_run,
            incident_id: Some(uuid(i, 12, at_ms)),
            guardrails: Some(guardrails(&host)),
        },
    );
    let envelope = statement.sign(key).expect("signed").to_json().into_bytes();
    NewRecord {
        envelope,
        invocation_id: invocation,
        host_id: host,
        runbook: runbook.into(),
        status: status.into(),
        started_at_ms: at_ms as i64,
    }
}
