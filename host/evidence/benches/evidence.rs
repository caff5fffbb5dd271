//! Evidence throughput (issue #3):
//! - `sign_append`: build and sign a record (in-toto statement, DSSE, Ed25519) and append it
//!   durably to SQLite, 64 appenders at once so commits are batched — records/s;
//! - `verify_bundle`: verify a 100,000-record bundle offline (every signature, every
//!   inclusion proof, the checkpoint) — records/s; also prints the bundle size per record.
//!
//! `cargo bench -p runwarden-evidence --bench evidence`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use runwarden_evidence::{
    Envelope, Filter, Invocation, NewRecord, Provenance, SigningKey, Statement, Store, export,
    rfc3339_ms, verify_bundle,
};
use std::time::Duration;

const BURST: u64 = 2_000;
const BUNDLE: u64 = 100_000;
/// Concurrent appenders: invocations finishing at once on a busy host.
const APPENDERS: u64 = 64;

/// A realistic record: a restart with two traced host calls.
fn record(i: u64, key: &SigningKey) -> Envelope {
    let call = |seq: u32, function: &str, result: serde_json::Value| {
        serde_json::json!({"seq": seq, "interface": "services", "function": function,
            "args": {"unit": "nginx.service"}, "result": result, "allowed": true, "dry_run": false, "duration_us": 1200})
    };
    Statement::new(
        "restart-service",
        "c73b7727a07ab051d5b3458b7d72c85ee2ff4b5c2c3e790e6ffa5ec3cabc3c9d",
        Invocation {
            publisher: None,
            invocation_id: format!("{i:032x}"),
            tenant: "clinic".into(),
            host_id: "host-1".into(),
            key_id: key.verifying_key().key_id_hex(),
            provenance: Provenance::Manual { operator: Some("ops".into()) },
            runbook_version: "0.1.0".into(),
            grant_digest: Some("5f78fbc7ea9f168398bf29baede33f915ebebc5c12dee88446b865f4630a7f3f".into()),
            grant: Some(serde_json::json!({"services": ["nginx.service"]})),
            params: serde_json::json!({"unit": "nginx.service"}),
            trace: serde_json::json!([call(0, "status", serde_json::json!({"active_state": "inactive"})), call(1, "restart", serde_json::json!("ok"))]),
            outcome: serde_json::json!({"status": "healed", "summary": "restarted nginx.service", "details": {}}),
            started_at: rfc3339_ms(i),
            ended_at: rfc3339_ms(i + 3),
            duration_us: 3000,
            fuel_consumed: 13_000,
            dry_run: false,
            incident_id: None,
            guardrails: None,
        },
    )
    .sign(key)
    .unwrap()
}

async fn append_burst(store: &Store, key: &SigningKey, base: u64) {
    let mut tasks = Vec::new();
    for t in 0..APPENDERS {
        let (store, key) = (store.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            for i in (t..BURST).step_by(APPENDERS as usize) {
                let n = base + i;
                let env = record(n, &key);
                store
                    .append(NewRecord {
                        envelope: env.to_json().into_bytes(),
                        invocation_id: format!("{n:032x}"),
                        host_id: "host-1".into(),
                        runbook: "restart-service".into(),
                        status: "healed".into(),
                        started_at_ms: n as i64,
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate("host-1").unwrap();

    let store = rt
        .block_on(Store::open(dir.path().join("append.db").to_str().unwrap()))
        .unwrap();
    let mut g = c.benchmark_group("evidence");
    g.throughput(Throughput::Elements(BURST));
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    let mut base = 0;
    g.bench_function("sign_append", |b| {
        b.iter(|| {
            rt.block_on(append_burst(&store, &key, base));
            base += BURST;
        })
    });

    // A 100,000-record log, exported once.
    let big = rt
        .block_on(Store::open(dir.path().join("big.db").to_str().unwrap()))
        .unwrap();
    for chunk in 0..BUNDLE / BURST {
        rt.block_on(append_burst(&big, &key, chunk * BURST));
    }
    let contents = rt
        .block_on(export(
            &big,
            &Filter::default(),
            &key,
            "runwarden/host-1",
            vec![],
        ))
        .unwrap();
    let mut bytes = Vec::new();
    contents.write(&mut bytes).unwrap();
    println!(
        "bundle of {BUNDLE} records: {} bytes, {} bytes per record",
        bytes.len(),
        bytes.len() as u64 / BUNDLE
    );
    let trusted = [key.verifying_key()];
    g.throughput(Throughput::Elements(BUNDLE));
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    g.bench_function("verify_bundle", |b| {
        b.iter(|| {
            let v = verify_bundle(bytes.as_slice(), &trusted, None).unwrap();
            assert_eq!(v.records, BUNDLE);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
